/*
 * store_conn.h - what the store backends that talk over pooled connections
 * (pool.h) share: taking a connection for one operation, and running an
 * operation again after a failure that another run may mend.
 *
 * The retry rule (store_run()). Every operation of these backends is safe
 * to repeat: reads read, and writes write final states (apply()) or hand
 * out ranges that are never reused (alloc_ino()). So after a failed run:
 *   - a run that lost its connection (its link failed) is run once more,
 *     on a newly opened connection, when that connection had waited idle
 *     in the pool: the server may have restarted or dropped it meanwhile,
 *     and a new connection answers whether the server is there now;
 *   - a run that met a conflict with a concurrent one (PostgreSQL's
 *     serialization failures and deadlocks) is run again as it is;
 * each at most @max_runs runs in all. Any other failure is final. There is
 * no pause between runs: a lost connection is tried again at once and only
 * once, and a conflict has already waited for the other writer.
 *
 * Thread-safety: as the pool's; store_run() blocks while its runs do.
 */
#ifndef TIERFS_STORE_CONN_H
#define TIERFS_STORE_CONN_H

#include <stdbool.h>

#include "pool.h"
#include "store_row.h"

/*
 * Takes a connection from @p for one operation of @b (pool_get(): a newly
 * opened one with @fresh). Returns 0 with it in *out, the error of opening
 * one, or -EAGAIN after logging "no @what free after @wait_s s" when none
 * came free in time (@wait_s being the pool's wait).
 */
int store_pool_get(const struct store_backend *b, struct pool *p, bool fresh,
		   const char *what, unsigned int wait_s,
		   struct pool_conn **out);

/* How store_run() takes a backend's connections and learns why a run
 * failed. @be is the backend, as given to store_run(). */
struct store_run_ops {
	/* Takes a connection for one run (a newly opened one with @fresh),
	 * logging why when it cannot. */
	int (*get)(void *be, bool fresh, struct pool_conn **out);
	/* Gives @c back to the pool, or drops it when it failed. */
	void (*put)(void *be, struct pool_conn *c);
	/* After a run failed with @err on @c: sets *lost when @c's link
	 * failed, *conflict when the run met a concurrent one (both are
	 * false on entry). */
	void (*failed)(const struct pool_conn *c, int err, bool *lost,
		       bool *conflict);
};

/* What a run may know of the runs before it. */
struct store_run_state {
	unsigned int runs;	/* runs before this one */
	unsigned int conflicts; /* how many of them met a conflict */
	bool fresh;		/* this run's connection is newly opened */
};

/* One run of an operation on connection @c; 0 or a negative errno. */
typedef int (*store_run_fn)(void *be, struct pool_conn *c, void *arg,
			    const struct store_run_state *st);

/* Runs @fn(@be, c, @arg, ...) on a connection of @be taken with @ops, and
 * again by the rule at the top of this file. Returns the last run's
 * result, or ops->get's error. */
int store_run(void *be, const struct store_run_ops *ops, unsigned int max_runs,
	      store_run_fn fn, void *arg);

#endif
