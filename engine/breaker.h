/*
 * breaker.h - a circuit breaker for one backend.
 *
 * Closed: every call is allowed. After @threshold consecutive failures the
 * breaker opens: calls are refused for @cooldown_ns, so a dead backend costs
 * nothing (no connect timeout per request). Then it is half-open: one trial
 * call is let through (the next ones wait for its outcome by being refused
 * for another cool-down); a success closes the breaker, a failure opens it
 * again.
 *
 * Thread-safety: all functions may be called concurrently (one mutex).
 */
#ifndef TIERFS_BREAKER_H
#define TIERFS_BREAKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct breaker {
	pthread_mutex_t lock;
	unsigned threshold; /* set by breaker_init(), then read-only */
	uint64_t cooldown_ns;
	/* The rest is protected by lock. */
	unsigned fails;	     /* consecutive failures */
	uint64_t open_until; /* monotonic ns; 0 when closed */
	uint64_t opened;     /* times it opened, for tests */
};

void breaker_init(struct breaker *b, unsigned threshold, uint64_t cooldown_ns);
void breaker_release(struct breaker *b);

/* true when a call may go to the backend at monotonic time @now_ns. */
bool breaker_allow(struct breaker *b, uint64_t now_ns);
/* Reports the outcome of an allowed call. breaker_failure() returns true
 * when this failure opened the breaker (log it once, then stay quiet);
 * breaker_success() returns true when this success closed it. */
bool breaker_success(struct breaker *b);
bool breaker_failure(struct breaker *b, uint64_t now_ns);
/* true while open (refusing calls). */
bool breaker_is_open(struct breaker *b, uint64_t now_ns);

#endif
