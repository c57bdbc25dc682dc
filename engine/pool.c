/*
 * pool.c - a bounded pool of connections (see pool.h).
 *
 * Invariants, under lock: nconns counts every connection that exists or is
 * being opened (idle, taken, or a slot reserved by a pool_get() that opens
 * without the lock), and never exceeds max; idle links the ones given back,
 * through pool_conn.next_idle. Opening and closing happen without the lock:
 * a slot is reserved first (nconns++) and released (nconns--, signal) when
 * the open fails or the connection is dropped. Every change that may let a
 * waiter proceed (a connection idle, a slot free) signals cond once; each
 * waiter takes at most one, so one wake-up per change is enough.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "pool.h"

struct pool {
	const struct pool_ops *ops;
	void *ctx;
	unsigned int max;
	unsigned int wait_ms;

	pthread_mutex_t lock;
	pthread_cond_t cond;	/* signalled when a slot or a conn frees */
	struct pool_conn *idle; /* protected by lock */
	unsigned int nconns;	/* open or opening; protected by lock */
	unsigned int waiting;	/* in pool_get()'s wait; protected by lock */
};

int pool_new(const struct pool_ops *ops, void *ctx, unsigned int max,
	     unsigned int wait_ms, struct pool **out)
{
	pthread_condattr_t ca;
	struct pool *p;
	int err;

	if (max == 0)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->ops = ops;
	p->ctx = ctx;
	p->max = max;
	p->wait_ms = wait_ms;

	err = -pthread_mutex_init(&p->lock, NULL);
	if (err)
		goto out_free;
	err = -pthread_condattr_init(&ca);
	if (err)
		goto out_destroy_lock;
	err = -pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (!err)
		err = -pthread_cond_init(&p->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (err)
		goto out_destroy_lock;
	*out = p;
	return 0;

out_destroy_lock:
	pthread_mutex_destroy(&p->lock);
out_free:
	free(p);
	return err;
}

void pool_free(struct pool *p)
{
	struct pool_conn *c, *next;

	if (!p)
		return;
	for (c = p->idle; c; c = next) {
		next = c->next_idle;
		p->ops->close(p->ctx, c);
	}
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

int pool_get(struct pool *p, bool fresh, struct pool_conn **out)
{
	struct pool_conn *c = NULL, *victim = NULL;
	struct timespec deadline;
	bool timed_out;
	int err;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += p->wait_ms / 1000;
	deadline.tv_nsec += (long)(p->wait_ms % 1000) * 1000000;
	if (deadline.tv_nsec >= 1000000000) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000;
	}

	pthread_mutex_lock(&p->lock);
	for (;;) {
		if (p->idle && !fresh) {
			c = p->idle;
			p->idle = c->next_idle;
			pthread_mutex_unlock(&p->lock);
			c->next_idle = NULL;
			c->reused = true;
			*out = c;
			return 0;
		}
		if (p->nconns < p->max) {
			p->nconns++; /* reserve a slot, open without the lock */
			break;
		}
		if (p->idle) { /* fresh, and the pool is full */
			victim = p->idle;
			p->idle = victim->next_idle;
			break; /* its slot becomes ours */
		}
		p->waiting++;
		timed_out = pthread_cond_timedwait(&p->cond, &p->lock,
						   &deadline) == ETIMEDOUT;
		p->waiting--;
		if (timed_out && !p->idle && p->nconns >= p->max) {
			pthread_mutex_unlock(&p->lock);
			return -ETIMEDOUT;
		}
	}
	pthread_mutex_unlock(&p->lock);
	if (victim)
		p->ops->close(p->ctx, victim);

	err = p->ops->open(p->ctx, &c);
	if (err) {
		pthread_mutex_lock(&p->lock);
		p->nconns--;
		pthread_cond_signal(&p->cond);
		pthread_mutex_unlock(&p->lock);
		return err;
	}
	c->next_idle = NULL;
	c->reused = false;
	*out = c;
	return 0;
}

void pool_put(struct pool *p, struct pool_conn *c)
{
	pthread_mutex_lock(&p->lock);
	c->next_idle = p->idle;
	p->idle = c;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

void pool_drop(struct pool *p, struct pool_conn *c)
{
	p->ops->close(p->ctx, c);
	pthread_mutex_lock(&p->lock);
	p->nconns--;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

int pool_adopt(struct pool *p, struct pool_conn *c)
{
	int err = 0;

	pthread_mutex_lock(&p->lock);
	if (p->nconns < p->max) {
		p->nconns++;
		c->next_idle = NULL;
		c->reused = false;
	} else {
		err = -EBUSY;
	}
	pthread_mutex_unlock(&p->lock);
	return err;
}

unsigned int pool_waiting(struct pool *p)
{
	unsigned int n;

	pthread_mutex_lock(&p->lock);
	n = p->waiting;
	pthread_mutex_unlock(&p->lock);
	return n;
}
