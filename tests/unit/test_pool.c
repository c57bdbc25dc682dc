/*
 * test_pool.c - the connection pool, with fake connections.
 *
 * A fake connection is a counter: fake_open() counts it as live (and keeps
 * the peak), fake_close() as closed, and can be told to fail the next
 * opens. The tests check lazy opening up to the limit, reuse, the wait and
 * its deadline, fresh connections, dropping, adoption, closing at free, and
 * 8 threads sharing a pool of 3 without ever holding more than 3 or one
 * connection twice.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "check.h"
#include "pool.h"

struct fake_conn {
	struct pool_conn pool; /* first */
	int id;
	atomic_int users; /* threads holding it: never more than one */
};

struct fake {
	atomic_int live;   /* open now */
	atomic_int peak;   /* most live at once */
	atomic_int opened; /* ever */
	atomic_int closed; /* ever */
	atomic_int fail;   /* opens still to fail */
	int fail_err;	   /* with this errno */
};

static int fake_open(void *ctx, struct pool_conn **out)
{
	struct fake *f = ctx;
	struct fake_conn *c;
	int live, peak;

	if (atomic_load(&f->fail) > 0) {
		atomic_fetch_sub(&f->fail, 1);
		return f->fail_err;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->id = atomic_fetch_add(&f->opened, 1) + 1;
	live = atomic_fetch_add(&f->live, 1) + 1;
	peak = atomic_load(&f->peak);
	while (live > peak &&
	       !atomic_compare_exchange_weak(&f->peak, &peak, live))
		;
	*out = &c->pool;
	return 0;
}

static void fake_close(void *ctx, struct pool_conn *pc)
{
	struct fake *f = ctx;
	struct fake_conn *c = (struct fake_conn *)pc;

	CHECK_EQ(atomic_load(&c->users), 0);
	atomic_fetch_sub(&f->live, 1);
	atomic_fetch_add(&f->closed, 1);
	free(c);
}

static const struct pool_ops fake_ops = {
	.open = fake_open,
	.close = fake_close,
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct fake_conn *get(struct pool *p, bool fresh)
{
	struct pool_conn *c = NULL;

	CHECK_EQ(pool_get(p, fresh, &c), 0);
	CHECK(c != NULL);
	return (struct fake_conn *)c;
}

/* Opens only when asked, up to the limit; then waits until the deadline. */
static void test_lazy_and_deadline(void)
{
	struct fake f = {0};
	struct fake_conn *c[3];
	struct pool_conn *none = NULL;
	struct pool *p;
	uint64_t t0, waited;

	snprintf(check_context, sizeof(check_context), "lazy and deadline");
	CHECK_EQ(pool_new(&fake_ops, &f, 3, 100, &p), 0);
	CHECK_EQ(f.opened, 0);
	for (int i = 0; i < 3; i++) {
		c[i] = get(p, false);
		CHECK(!c[i]->pool.reused);
		CHECK_EQ(f.opened, i + 1);
	}
	CHECK(c[0] != c[1] && c[1] != c[2] && c[0] != c[2]);

	t0 = now_ms();
	CHECK_EQ(pool_get(p, false, &none), -ETIMEDOUT);
	waited = now_ms() - t0;
	CHECK(none == NULL);
	CHECK(waited >= 100);
	CHECK(waited < 5000);
	/* a fresh one cannot push a taken one out either */
	CHECK_EQ(pool_get(p, true, &none), -ETIMEDOUT);
	CHECK(none == NULL);
	CHECK_EQ(f.opened, 3);
	CHECK_EQ(f.live, 3);

	for (int i = 0; i < 3; i++)
		pool_put(p, &c[i]->pool);
	CHECK_EQ(f.closed, 0);
	pool_free(p);
	CHECK_EQ(f.closed, 3);
	CHECK_EQ(f.live, 0);
}

/* A connection given back is handed out again, marked reused. */
static void test_reuse(void)
{
	struct fake f = {0};
	struct fake_conn *a, *b;
	struct pool *p;

	snprintf(check_context, sizeof(check_context), "reuse");
	CHECK_EQ(pool_new(&fake_ops, &f, 2, 100, &p), 0);
	a = get(p, false);
	pool_put(p, &a->pool);
	b = get(p, false);
	CHECK(b == a);
	CHECK(b->pool.reused);
	CHECK_EQ(f.opened, 1);
	/* the idle one first, a new one only when none is idle */
	a = get(p, false);
	CHECK(a != b);
	CHECK(!a->pool.reused);
	CHECK_EQ(f.opened, 2);
	pool_put(p, &a->pool);
	pool_put(p, &b->pool);
	pool_free(p);
	CHECK_EQ(f.closed, 2);
	CHECK_EQ(f.live, 0);
}

/* @fresh opens a new connection: in a free slot, or in an idle one's. */
static void test_fresh(void)
{
	struct fake f = {0};
	struct fake_conn *a, *b, *c, *d;
	struct pool *p;

	snprintf(check_context, sizeof(check_context), "fresh");
	CHECK_EQ(pool_new(&fake_ops, &f, 2, 100, &p), 0);
	a = get(p, false);
	pool_put(p, &a->pool);
	/* a slot is free: a new one, the idle one stays */
	b = get(p, true);
	CHECK(b != a);
	CHECK(!b->pool.reused);
	CHECK_EQ(f.opened, 2);
	CHECK_EQ(f.closed, 0);
	/* full, one idle: that one is closed, a new one takes its slot */
	c = get(p, true);
	CHECK(!c->pool.reused);
	CHECK_EQ(f.opened, 3);
	CHECK_EQ(f.closed, 1);
	CHECK_EQ(f.live, 2);
	/* full, none idle: it waits like any other */
	CHECK_EQ(pool_get(p, true, &(struct pool_conn *){NULL}), -ETIMEDOUT);
	pool_put(p, &b->pool);
	d = get(p, false);
	CHECK(d == b && d->pool.reused);
	pool_put(p, &c->pool);
	pool_put(p, &d->pool);
	pool_free(p);
	CHECK_EQ(f.closed, 3);
	CHECK_EQ(f.live, 0);
}

/* A dropped connection is closed at once and its slot opens a new one. */
static void test_drop(void)
{
	struct fake f = {0};
	struct fake_conn *a, *b;
	struct pool *p;

	snprintf(check_context, sizeof(check_context), "drop");
	CHECK_EQ(pool_new(&fake_ops, &f, 1, 100, &p), 0);
	a = get(p, false);
	pool_drop(p, &a->pool);
	CHECK_EQ(f.closed, 1);
	CHECK_EQ(f.live, 0);
	b = get(p, false);
	CHECK(!b->pool.reused);
	CHECK_EQ(b->id, 2);
	CHECK_EQ(f.opened, 2);
	pool_put(p, &b->pool);
	pool_free(p);
	CHECK_EQ(f.closed, 2);
	CHECK_EQ(f.live, 0);
}

/* A failed open returns its error and frees its slot again. */
static void test_open_fails(void)
{
	struct fake f = {0};
	struct pool_conn *none = NULL;
	struct fake_conn *a;
	struct pool *p;

	snprintf(check_context, sizeof(check_context), "open fails");
	CHECK_EQ(pool_new(&fake_ops, &f, 1, 100, &p), 0);
	f.fail_err = -ECONNREFUSED;
	f.fail = 2;
	CHECK_EQ(pool_get(p, false, &none), -ECONNREFUSED);
	CHECK_EQ(pool_get(p, true, &none), -ECONNREFUSED);
	CHECK(none == NULL);
	a = get(p, false); /* the one slot is free: no -ETIMEDOUT */
	CHECK(!a->pool.reused);
	CHECK_EQ(f.opened, 1);
	pool_put(p, &a->pool);
	/* fresh over an idle one whose replacement fails: both gone */
	f.fail = 1;
	CHECK_EQ(pool_get(p, true, &none), -ECONNREFUSED);
	CHECK_EQ(f.closed, 1);
	CHECK_EQ(f.live, 0);
	a = get(p, false);
	pool_put(p, &a->pool);
	pool_free(p);
	CHECK_EQ(f.live, 0);
}

/* A connection opened by the caller counts against the limit. */
static void test_adopt(void)
{
	struct fake f = {0};
	struct pool_conn *x, *y, *z;
	struct pool *p;

	snprintf(check_context, sizeof(check_context), "adopt");
	CHECK_EQ(pool_new(&fake_ops, &f, 2, 100, &p), 0);
	CHECK_EQ(fake_open(&f, &x), 0);
	CHECK_EQ(fake_open(&f, &y), 0);
	CHECK_EQ(fake_open(&f, &z), 0);
	CHECK_EQ(pool_adopt(p, x), 0);
	CHECK(!x->reused);
	CHECK_EQ(pool_adopt(p, y), 0);
	CHECK_EQ(pool_adopt(p, z), -EBUSY);
	fake_close(&f, z);
	pool_put(p, x);
	pool_drop(p, y);
	CHECK(get(p, false) == (struct fake_conn *)x);
	CHECK(x->reused);
	pool_put(p, x);
	pool_free(p);
	CHECK_EQ(f.opened, 3);
	CHECK_EQ(f.closed, 3);
	CHECK_EQ(f.live, 0);
}

struct waiter {
	struct pool *p;
	pthread_t thread;
	int err;
	struct pool_conn *c;
	uint64_t waited_ms;
};

static void *waiter_main(void *arg)
{
	struct waiter *w = arg;
	uint64_t t0 = now_ms();

	w->err = pool_get(w->p, false, &w->c);
	w->waited_ms = now_ms() - t0;
	return NULL;
}

#define WAKE_MS 5000

/* Waits (at most 10 s) until @n callers wait in pool_get() on @p. */
static void wait_for_waiters(struct pool *p, unsigned int n)
{
	uint64_t deadline = now_ms() + 10000;

	while (pool_waiting(p) != n) {
		CHECK(now_ms() < deadline);
		sched_yield();
	}
}

/* A thread waiting on a full pool is woken by the connection given back,
 * or by the slot a dropped one frees: without the wake-up it would wait
 * out its deadline (WAKE_MS) before it looks again. */
static void test_waiter_woken(void)
{
	struct fake f = {0};
	struct waiter w = {0};
	struct fake_conn *a;
	struct pool *p;

	snprintf(check_context, sizeof(check_context), "waiter woken by put");
	CHECK_EQ(pool_new(&fake_ops, &f, 1, WAKE_MS, &p), 0);
	w.p = p;
	a = get(p, false);
	CHECK_EQ(pool_waiting(p), 0);
	CHECK_EQ(pthread_create(&w.thread, NULL, waiter_main, &w), 0);
	wait_for_waiters(p, 1);
	pool_put(p, &a->pool);
	CHECK_EQ(pthread_join(w.thread, NULL), 0);
	CHECK_EQ(w.err, 0);
	CHECK(w.waited_ms < WAKE_MS);
	CHECK(w.c == &a->pool && w.c->reused);
	CHECK_EQ(f.opened, 1);

	snprintf(check_context, sizeof(check_context), "waiter woken by drop");
	w.c = NULL;
	CHECK_EQ(pthread_create(&w.thread, NULL, waiter_main, &w), 0);
	wait_for_waiters(p, 1);
	pool_drop(p, &a->pool);
	CHECK_EQ(pthread_join(w.thread, NULL), 0);
	CHECK_EQ(w.err, 0);
	CHECK(w.waited_ms < WAKE_MS);
	CHECK(w.c != NULL && !w.c->reused);
	CHECK_EQ(f.opened, 2);
	CHECK_EQ(f.peak, 1);
	CHECK_EQ(pool_waiting(p), 0);
	pool_put(p, w.c);
	pool_free(p);
	CHECK_EQ(f.live, 0);
}

#define NTHREADS 8
#define NCONNS 3
#define ROUNDS 3000

struct worker {
	struct pool *p;
	atomic_int *in_use;
	atomic_int *in_use_peak;
	unsigned int seed;
	int errors;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	for (int i = 0; i < ROUNDS; i++) {
		unsigned int dice = (unsigned int)rand_r(&w->seed) % 16;
		struct pool_conn *pc;
		struct fake_conn *c;
		int n, peak;

		if (pool_get(w->p, dice == 0, &pc) != 0) {
			w->errors++;
			continue;
		}
		c = (struct fake_conn *)pc;
		if (atomic_fetch_add(&c->users, 1) != 0)
			w->errors++; /* handed to two threads at once */
		n = atomic_fetch_add(w->in_use, 1) + 1;
		peak = atomic_load(w->in_use_peak);
		while (n > peak &&
		       !atomic_compare_exchange_weak(w->in_use_peak, &peak, n))
			;
		if (dice == 1)
			sched_yield();
		atomic_fetch_sub(w->in_use, 1);
		atomic_fetch_sub(&c->users, 1);
		if (dice == 2)
			pool_drop(w->p, pc); /* "broken" */
		else
			pool_put(w->p, pc);
	}
	return NULL;
}

/* 8 threads share 3 connections: never more than 3 exist or are held. */
static void test_threads(void)
{
	struct fake f = {0};
	struct worker w[NTHREADS];
	pthread_t t[NTHREADS];
	atomic_int in_use = 0, in_use_peak = 0;
	struct pool *p;

	snprintf(check_context, sizeof(check_context), "8 threads");
	CHECK_EQ(pool_new(&fake_ops, &f, NCONNS, 30000, &p), 0);
	for (int i = 0; i < NTHREADS; i++) {
		w[i] = (struct worker){.p = p,
				       .in_use = &in_use,
				       .in_use_peak = &in_use_peak,
				       .seed = (unsigned int)i + 1};
		CHECK_EQ(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < NTHREADS; i++) {
		CHECK_EQ(pthread_join(t[i], NULL), 0);
		CHECK_EQ(w[i].errors, 0);
	}
	CHECK(f.peak >= 1 && f.peak <= NCONNS);
	CHECK(in_use_peak >= 1 && in_use_peak <= NCONNS);
	CHECK(f.opened > NCONNS); /* drops and fresh gets opened new ones */
	CHECK(f.live <= NCONNS);
	pool_free(p);
	CHECK_EQ(f.live, 0);
	CHECK_EQ(f.closed, f.opened);
}

int main(void)
{
	struct pool *none = NULL;

	pool_free(NULL);
	CHECK_EQ(pool_new(&fake_ops, NULL, 0, 100, &none), -EINVAL);
	CHECK(none == NULL);
	test_lazy_and_deadline();
	test_reuse();
	test_fresh();
	test_drop();
	test_open_fails();
	test_adopt();
	test_waiter_woken();
	test_threads();
	printf("ok\n");
	return 0;
}
