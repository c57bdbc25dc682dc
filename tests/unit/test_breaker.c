/*
 * test_breaker.c - the circuit breaker's states, with explicit times.
 */
#include <stdio.h>

#include "breaker.h"
#include "check.h"

#define MS 1000000ull

int main(void)
{
	struct breaker b;
	uint64_t t = 1000 * MS;

	breaker_init(&b, 3, 500 * MS);
	/* closed: failures below the threshold keep it closed */
	CHECK(breaker_allow(&b, t));
	CHECK(!breaker_failure(&b, t));
	CHECK(!breaker_failure(&b, t));
	CHECK(breaker_allow(&b, t));
	/* a success resets the count; it closed nothing */
	CHECK(!breaker_success(&b));
	CHECK(!breaker_failure(&b, t));
	CHECK(!breaker_failure(&b, t));
	CHECK(breaker_allow(&b, t));
	/* the third consecutive failure opens it, once */
	CHECK(breaker_failure(&b, t));
	CHECK(breaker_is_open(&b, t));
	CHECK(!breaker_allow(&b, t + 499 * MS));
	/* half-open: exactly one trial passes after the cool-down */
	CHECK(breaker_allow(&b, t + 500 * MS));
	CHECK(!breaker_allow(&b, t + 501 * MS));
	/* the trial fails: open again, not reported as a new opening */
	CHECK(!breaker_failure(&b, t + 502 * MS));
	CHECK(!breaker_allow(&b, t + 900 * MS));
	CHECK(breaker_allow(&b, t + 1002 * MS));
	/* the trial succeeds: closed (reported once), every call allowed */
	CHECK(breaker_success(&b));
	CHECK(!breaker_success(&b));
	CHECK(!breaker_is_open(&b, t + 1003 * MS));
	CHECK(breaker_allow(&b, t + 1003 * MS));
	CHECK(breaker_allow(&b, t + 1003 * MS));
	CHECK_EQ(b.opened, 1);
	breaker_release(&b);
	printf("ok\n");
	return 0;
}
