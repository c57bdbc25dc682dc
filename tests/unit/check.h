/*
 * check.h - the unit tests' tiny assertion kit.
 *
 * CHECK(cond) fails the test when @cond is false: it prints the file, the
 * line and the expression to stderr and exits with status 1. CHECK_EQ(a, b)
 * does the same for two integer expressions and prints both values. Every
 * failure also prints check_context when a test has set it (what was being
 * tested: a seed, an operation number).
 *
 * A test program exits 0 when it passes, 1 when it fails, 77 when skipped.
 */
#ifndef TIERFS_TEST_CHECK_H
#define TIERFS_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define TEST_SKIP 77

/* What is being tested, printed with a failure; tests snprintf() into it. */
static char check_context[256] __attribute__((unused));

static void check_fail_context(void) __attribute__((unused));
static void check_fail_context(void)
{
	if (check_context[0])
		fprintf(stderr, "  while testing %s\n", check_context);
}

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
				__LINE__, #cond);                              \
			check_fail_context();                                  \
			exit(1);                                               \
		}                                                              \
	} while (0)

/* Checks that integer expression @expr equals @want, printing both if not. */
#define CHECK_EQ(expr, want)                                                   \
	do {                                                                   \
		long long got_ = (long long)(expr);                            \
		long long want_ = (long long)(want);                           \
		if (got_ != want_) {                                           \
			fprintf(stderr, "%s:%d: %s is %lld, want %s = %lld\n", \
				__FILE__, __LINE__, #expr, got_, #want,        \
				want_);                                        \
			check_fail_context();                                  \
			exit(1);                                               \
		}                                                              \
	} while (0)

/* Checks that NUL-terminated strings @got and @want are equal. */
#define CHECK_STREQ(got, want)                                                 \
	do {                                                                   \
		const char *got_ = (got), *want_ = (want);                     \
		if (!got_ || !want_ || strcmp(got_, want_) != 0) {             \
			fprintf(stderr, "%s:%d: %s is \"%s\", want \"%s\"\n",  \
				__FILE__, __LINE__, #got,                      \
				got_ ? got_ : "(null)",                        \
				want_ ? want_ : "(null)");                     \
			check_fail_context();                                  \
			exit(1);                                               \
		}                                                              \
	} while (0)

#endif
