/*
 * loop.c - the FUSE session loop: one reader at a time, handed on only when
 * a request takes long.
 *
 * libfuse's multithreaded loop keeps every idle worker blocked in read(2)
 * on the device, and the kernel gives each request to the worker that has
 * waited longest: a sequential caller's every request wakes another thread
 * (measured in docs/benchmarks.md: passthrough_ll runs 1.3-1.6x faster
 * single-threaded). A single-threaded loop would stop every request behind
 * one that waits (an fsync, a cold read, L3 away).
 *
 * Here one worker at a time holds the right to read. It reads a request
 * and handles it itself, then reads the next, so a sequential caller is
 * served by one thread that finds its next request already queued. A
 * watcher (the thread that called tfs_loop) looks every WATCH_MS: a request
 * it finds still being handled that was already being handled at its last
 * look has taken between one and two periods, and the right to read passes
 * to an idle worker (started if none, up to max_threads). The slow worker
 * goes on with its request and then waits to read again. Requests that
 * wait for each other (a handler waiting on the kernel, which waits for a
 * reply to another request) are thus served after at most two periods.
 *
 * Workers block every signal; the watcher receives them (libfuse's
 * handlers end the session) and stops the workers: a worker is cancelled
 * only inside read(2), never while it handles a request.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loop.h"

#define WATCH_MS 2     /* how often the watcher looks */
#define QUIET_LOOKS 50 /* idle looks before it looks every QUIET_MS */
#define QUIET_MS 100

struct worker {
	pthread_t thread;
	struct loop *l;
	struct worker *next;
};

struct loop {
	struct fuse_session *se;
	pthread_mutex_t lock;
	pthread_cond_t idle_cond;  /* workers waiting for the right to read */
	pthread_cond_t watch_cond; /* the watcher, when quiet */
	struct worker *workers;
	unsigned nworkers, nidle, max_threads;
	struct worker *reader;	 /* holds the right to read, or NULL */
	struct worker *handling; /* the reader handling a request, or NULL */
	uint64_t seq;		 /* requests handled so far */
	bool quiet;		 /* the watcher looks every QUIET_MS */
	int error;		 /* a read error that ended the loop */
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct loop *l = w->l;
	struct fuse_buf fbuf = {.mem = NULL};
	int res;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	pthread_mutex_lock(&l->lock);
	while (!fuse_session_exited(l->se)) {
		if (l->reader && l->reader != w) {
			l->nidle++;
			pthread_cond_wait(&l->idle_cond, &l->lock);
			l->nidle--;
			continue;
		}
		l->reader = w;
		pthread_mutex_unlock(&l->lock);
		pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
		res = fuse_session_receive_buf(l->se, &fbuf);
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
		pthread_mutex_lock(&l->lock);
		if (res == -EINTR || res == -EAGAIN)
			continue;
		if (res <= 0) {
			if (res < 0 && !fuse_session_exited(l->se))
				l->error = res;
			fuse_session_exit(l->se);
			break;
		}
		l->handling = w;
		if (l->quiet) {
			l->quiet = false;
			pthread_cond_signal(&l->watch_cond);
		}
		pthread_mutex_unlock(&l->lock);
		fuse_session_process_buf(l->se, &fbuf);
		pthread_mutex_lock(&l->lock);
		l->seq++;
		if (l->handling == w)
			l->handling = NULL;
		/* demoted: another worker reads now; wait for the right */
	}
	if (l->reader == w)
		l->reader = NULL;
	pthread_cond_broadcast(&l->idle_cond);
	pthread_cond_signal(&l->watch_cond);
	pthread_mutex_unlock(&l->lock);
	free(fbuf.mem);
	return NULL;
}

/* Starts a worker (lock held): 0 or -errno. Workers block every signal. */
static int start_worker(struct loop *l)
{
	struct worker *w = calloc(1, sizeof(*w));
	sigset_t all, old;
	int r;

	if (!w)
		return -ENOMEM;
	w->l = l;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	r = pthread_create(&w->thread, NULL, worker_main, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0) {
		free(w);
		return -r;
	}
	w->next = l->workers;
	l->workers = w;
	l->nworkers++;
	return 0;
}

static struct timespec after_ms(unsigned ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_nsec += (long)ms * 1000000L;
	ts.tv_sec += ts.tv_nsec / 1000000000L;
	ts.tv_nsec %= 1000000000L;
	return ts;
}

/* The watcher (lock held): passes the right to read on from a request
 * that has been handled since the last look. */
static void watch(struct loop *l)
{
	struct worker *last_handling = NULL;
	uint64_t last_seq = 0;
	unsigned idle_looks = 0;

	while (!fuse_session_exited(l->se)) {
		struct timespec ts;

		if (l->handling && l->handling == last_handling &&
		    l->seq == last_seq && l->reader == l->handling) {
			/* the same request since the last look */
			l->reader = NULL;
			if (l->nidle)
				pthread_cond_signal(&l->idle_cond);
			else if (l->nworkers < l->max_threads)
				start_worker(l); /* else: the next to finish */
		}
		last_handling = l->handling;
		last_seq = l->seq;
		idle_looks = l->handling ? 0 : idle_looks + 1;
		if (idle_looks >= QUIET_LOOKS) {
			l->quiet = true;
			ts = after_ms(QUIET_MS);
		} else {
			ts = after_ms(WATCH_MS);
		}
		pthread_cond_timedwait(&l->watch_cond, &l->lock, &ts);
	}
}

int tfs_loop(struct fuse_session *se, unsigned max_threads)
{
	struct loop l = {.se = se, .max_threads = max_threads ? max_threads : 1};
	pthread_condattr_t ca;
	int r;

	pthread_mutex_init(&l.lock, NULL);
	pthread_cond_init(&l.idle_cond, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l.watch_cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_lock(&l.lock);
	r = start_worker(&l);
	if (r == 0)
		watch(&l);
	pthread_cond_broadcast(&l.idle_cond); /* the idle ones see the end */
	pthread_mutex_unlock(&l.lock);
	/* the session ended: stop readers blocked in read(2), then wait */
	for (struct worker *w = l.workers; w; w = w->next)
		pthread_cancel(w->thread);
	while (l.workers) {
		struct worker *w = l.workers;

		l.workers = w->next;
		pthread_join(w->thread, NULL);
		free(w);
	}
	pthread_cond_destroy(&l.watch_cond);
	pthread_cond_destroy(&l.idle_cond);
	pthread_mutex_destroy(&l.lock);
	fuse_session_reset(se);
	if (r < 0)
		return r;
	return l.error < 0 ? l.error : 0;
}
