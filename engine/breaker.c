/*
 * breaker.c - per-backend circuit breaker (see breaker.h).
 *
 * Invariant: open_until != 0 exactly while the breaker is open or half-open;
 * in half-open state (now >= open_until) the first caller to ask moves
 * open_until one cool-down ahead, so only it gets through.
 */
#include "breaker.h"

void breaker_init(struct breaker *b, unsigned threshold, uint64_t cooldown_ns)
{
	pthread_mutex_init(&b->lock, NULL);
	b->threshold = threshold ? threshold : 1;
	b->cooldown_ns = cooldown_ns;
	b->fails = 0;
	b->open_until = 0;
	b->opened = 0;
}

void breaker_release(struct breaker *b)
{
	if (b)
		pthread_mutex_destroy(&b->lock);
}

bool breaker_allow(struct breaker *b, uint64_t now_ns)
{
	bool ok = true;

	pthread_mutex_lock(&b->lock);
	if (b->open_until) {
		if (now_ns < b->open_until)
			ok = false;
		else
			b->open_until = now_ns + b->cooldown_ns; /* one trial */
	}
	pthread_mutex_unlock(&b->lock);
	return ok;
}

bool breaker_success(struct breaker *b)
{
	bool closed;

	pthread_mutex_lock(&b->lock);
	closed = b->open_until != 0;
	b->fails = 0;
	b->open_until = 0;
	pthread_mutex_unlock(&b->lock);
	return closed;
}

bool breaker_failure(struct breaker *b, uint64_t now_ns)
{
	bool opened = false;

	pthread_mutex_lock(&b->lock);
	if (++b->fails >= b->threshold) {
		opened = b->open_until == 0;
		if (opened)
			b->opened++;
		b->open_until = now_ns + b->cooldown_ns;
	}
	pthread_mutex_unlock(&b->lock);
	return opened;
}

bool breaker_is_open(struct breaker *b, uint64_t now_ns)
{
	bool open;

	pthread_mutex_lock(&b->lock);
	open = b->open_until && now_ns < b->open_until;
	pthread_mutex_unlock(&b->lock);
	return open;
}
