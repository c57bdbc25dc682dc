/*
 * pool.h - a bounded pool of connections to one server or file.
 *
 * The backends (l3_sqlite's readers, l3_pg, l2_redis) each talk to their
 * server over connections that one thread uses at a time. A pool keeps up
 * to @max of them: a thread takes one for one operation (pool_get) and
 * gives it back (pool_put), or drops it when it failed (pool_drop), which
 * frees its slot so that the next caller opens a new one. Connections are
 * opened lazily, by the thread that needs one, without the pool's lock
 * held; when all @max exist and none is idle, pool_get() waits on a
 * condition variable with a CLOCK_MONOTONIC deadline.
 *
 * A connection is the backend's own struct with a struct pool_conn as its
 * FIRST member, so that the pool can link it and the backend can cast the
 * struct pool_conn * it gets back to its own type. The pool opens and
 * closes connections only through the struct pool_ops it was given.
 *
 *     struct my_conn {
 *             struct pool_conn pool; // first
 *             redisContext *ctx;
 *     };
 *
 * The pool never logs and never retries: the backend decides what a
 * failure means, when a connection is broken, and whether an operation is
 * run once more (pool_conn.reused tells it whether the connection had been
 * waiting idle, and pool_get(..., true, ...) gets a newly opened one).
 *
 * Thread-safety: pool_get(), pool_put(), pool_drop(), pool_adopt() and
 * pool_waiting() may be called concurrently from any number of threads (one
 * mutex per pool). pool_new() and pool_free() may not run concurrently with
 * anything else on the same pool. The ops callbacks are called without the
 * pool's lock, possibly from several threads at once.
 */
#ifndef TIERFS_POOL_H
#define TIERFS_POOL_H

#include <stdbool.h>

/*
 * The pool's part of a connection: the first member of the backend's
 * connection struct. The pool writes it; the backend only reads reused.
 */
struct pool_conn {
	/* true when pool_get() took it from the idle list, false when it was
	 * opened (or adopted) for this use. */
	bool reused;
	struct pool_conn *next_idle; /* the pool's; protected by its lock */
};

/* How a pool opens and closes the backend's connections. */
struct pool_ops {
	/*
	 * Opens a new connection with @ctx (pool_new()'s) and stores it in
	 * *out (the pool then owns it): 0, or a negative errno, passed on by
	 * pool_get() as it is, that should not be -ETIMEDOUT (which
	 * pool_get() uses for its own deadline). On failure nothing is left
	 * open. May block; called without the pool's lock.
	 */
	int (*open)(void *ctx, struct pool_conn **out);
	/* Closes @c (never NULL) and frees it. Called without the lock. */
	void (*close)(void *ctx, struct pool_conn *c);
};

struct pool;

/*
 * Creates an empty pool of at most @max connections, opened and closed
 * with @ops and @ctx (both borrowed: they must outlive the pool), whose
 * pool_get() waits at most @wait_ms for one to come free. Returns 0 with
 * the pool (new: pool_free() it) in *out; -EINVAL when @max is 0; -ENOMEM;
 * or another negative errno when the mutex or condition variable cannot be
 * made. *out is written only on success. Opens nothing; does not block.
 */
int pool_new(const struct pool_ops *ops, void *ctx, unsigned int max,
	     unsigned int wait_ms, struct pool **out);

/*
 * Closes every idle connection (ops->close) and frees @p. Every connection
 * taken must have been given back (pool_put or pool_drop) first: one still
 * out is neither closed nor freed. Accepts NULL.
 */
void pool_free(struct pool *p);

/*
 * Takes a connection for the caller's exclusive use, to be given back with
 * pool_put() or pool_drop():
 *   - unless @fresh, an idle one (reused = true);
 *   - else, while fewer than max exist, a new one opened with ops->open
 *     (reused = false);
 *   - else, with @fresh and an idle one, that idle one is closed and a new
 *     one opened in its slot (to retry on a new connection when the idle
 *     ones may all be stale);
 *   - else waits for one of the above, until wait_ms after the call.
 * Returns 0 with the connection in *out; -ETIMEDOUT when the deadline
 * passed first; or the error of ops->open (the slot is then freed again
 * and nothing is left open). *out is written only on success. Blocks.
 */
int pool_get(struct pool *p, bool fresh, struct pool_conn **out);

/* Gives @c, taken from @p and still good, back to the idle list and wakes
 * one waiter. Never fails; blocks on nothing but the pool's lock. */
void pool_put(struct pool *p, struct pool_conn *c);

/* Closes @c, taken from @p, instead of giving it back (it failed and must
 * not be used again): ops->close, without the lock, then frees its slot and
 * wakes one waiter, who may then open a new one. Never fails. */
void pool_drop(struct pool *p, struct pool_conn *c);

/*
 * Counts @c, a connection the caller opened itself, as one of @p's, taken
 * by the caller (reused = false): give it back with pool_put() or
 * pool_drop(). For the first connection of a backend, which sets things up
 * before the pool is used. Returns 0, or -EBUSY when @p already holds max
 * connections (then nothing changes and @c stays the caller's).
 */
int pool_adopt(struct pool *p, struct pool_conn *c);

/* How many callers of pool_get() are waiting for a connection now (for
 * tests and status; stale as soon as it returns). Never fails. */
unsigned int pool_waiting(struct pool *p);

#endif
