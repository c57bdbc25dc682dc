/*
 * store_conn.c - taking a pooled connection for one operation, and the one
 * retry rule of the backends that talk over the network (store_conn.h).
 */
#include <errno.h>

#include "store_conn.h"

int store_pool_get(const struct store_backend *b, struct pool *p, bool fresh,
		   const char *what, unsigned int wait_s,
		   struct pool_conn **out)
{
	int err = pool_get(p, fresh, out);

	if (err != -ETIMEDOUT)
		return err;
	eng_logf(b->log, LOG_WARNING, "%s '%s': no %s free after %u s", b->name,
		 b->target, what, wait_s);
	return -EAGAIN;
}

int store_run(void *be, const struct store_run_ops *ops, unsigned int max_runs,
	      store_run_fn fn, void *arg)
{
	struct store_run_state st = {0};

	for (;;) {
		bool lost = false, conflict = false, again;
		struct pool_conn *c;
		int err;

		err = ops->get(be, st.fresh, &c);
		if (err)
			return err;
		err = fn(be, c, arg, &st);
		if (err)
			ops->failed(c, err, &lost, &conflict);
		/* read before put(), which may free c */
		again = conflict || (lost && c->reused && !st.fresh);
		ops->put(be, c);
		st.runs++;
		if (conflict)
			st.conflicts++;
		if (lost)
			st.fresh = true;
		if (!err || !again || st.runs >= max_runs)
			return err;
	}
}
