/*
 * tiers.c - the one road to the tiers.
 *
 * Every call the engine makes to L2 (Redis) or L3 (PostgreSQL, SQLite) is
 * bracketed by tier_enter() and tier_leave() (eng_int.h shows the shape),
 * so that each one, wherever it is made:
 *   - asks the tier's circuit breaker first: while L3's is open, reads fail
 *     with EIO at once instead of waiting for a connect timeout each; while
 *     L2's is open, Redis is skipped;
 *   - runs without the engine lock, holding the node it works for;
 *   - is counted (calls, failures, seconds) per kind of call, for
 *     .tierfs/metrics;
 *   - feeds its outcome to the breaker, which says once when a tier goes
 *     away and once when it is back.
 * The caller then checks what the dropped lock may have changed
 * (tier_stale(), the node's deleted flag, the name index).
 */
#include "eng_int.h"

static const struct {
	const char *tier, *name;
} op_names[OP_COUNT] = {
	[OP_L3_GET] = {"l3", "get"},
	[OP_L3_LOOKUP] = {"l3", "lookup"},
	[OP_L3_LIST] = {"l3", "list"},
	[OP_L3_READ] = {"l3", "read"},
	[OP_L3_READ_MANY] = {"l3", "read_many"},
	[OP_L3_ALLOC_INO] = {"l3", "alloc_ino"},
	[OP_L3_APPLY] = {"l3", "apply"},
	[OP_L3_STATS] = {"l3", "stats"},
	[OP_L3_SCAN] = {"l3", "scan"},
	[OP_L3_FEED] = {"l3", "feed"},
	[OP_L3_SUBDIRS] = {"l3", "count_subdirs"},
	[OP_L3_ID_LEN] = {"l3", "longest_id_below"},
	[OP_L2_GET] = {"l2", "get"},
	[OP_L2_FETCH] = {"l2", "fetch"},
	[OP_L2_FETCH_MANY] = {"l2", "fetch_many"},
	[OP_L2_APPLY] = {"l2", "apply"},
	[OP_L2_PUT_TREE] = {"l2", "put_tree"},
};

const char *tier_op_name(enum tier_op op, const char **tier)
{
	*tier = op_names[op].tier;
	return op_names[op].name;
}

static bool op_is_l2(enum tier_op op)
{
	return op >= OP_L2_GET;
}

bool l2_usable(struct eng *e)
{
	return e->l2 && breaker_allow(&e->l2_breaker, mono_ns());
}

bool l3_error_retryable(int r)
{
	return r == -EAGAIN || r == -EIO || r == -ENOMEM || r == -ETIMEDOUT;
}

int tier_enter(struct eng *e, struct tier_call *c, enum tier_op op,
	       struct node *hold, bool locked)
{
	c->op = op;
	c->hold = hold;
	c->locked = locked;
	/* gen is read under e->lock only: a caller without the lock (the
	 * filter's builder) would race with the flusher's commits */
	c->gen = locked ? e->gen : 0;
	c->refused = false;
	if (op_is_l2(op))
		c->refused = !l2_usable(e);
	else if (op != OP_L3_APPLY)
		c->refused = !breaker_allow(&e->l3_breaker, mono_ns());
	if (c->refused)
		return op_is_l2(op) ? -EAGAIN : -EIO;
	if (hold)
		hold->holds++;
	if (locked)
		pthread_mutex_unlock(&e->lock);
	c->t0 = mono_ns();
	return 0;
}

/* Feeds an L3 outcome to its breaker: only "unreachable or busy" (-EAGAIN)
 * counts as a failure; anything else means L3 answered. */
static void l3_outcome(struct eng *e, int r)
{
	if (r != -EAGAIN) {
		if (breaker_success(&e->l3_breaker))
			eng_logf(&e->cfg.log, LOG_WARNING,
				 "%s answers again: reads go to it again",
				 e->l3->ops->name);
		return;
	}
	if (breaker_failure(&e->l3_breaker, mono_ns()))
		eng_logf(&e->cfg.log, LOG_WARNING,
			 "%s is unreachable: reads of what no other tier "
			 "holds fail with EIO until it answers (tried again "
			 "every 2 s); writes go on into the write-ahead log",
			 e->l3->ops->name);
}

/* Feeds an L2 outcome to its breaker: a miss is a healthy answer. */
static void l2_outcome(struct eng *e, int r)
{
	if (r >= 0 || r == -ENOENT) {
		if (breaker_success(&e->l2_breaker))
			eng_logf(&e->cfg.log, LOG_WARNING,
				 "redis answers again: using it as L2");
	} else if (breaker_failure(&e->l2_breaker, mono_ns())) {
		eng_logf(&e->cfg.log, LOG_WARNING,
			 "redis is unavailable (%s): serving from L1 and %s, "
			 "refilling redis as items are read once it is back",
			 strerror(-r), e->l3->ops->name);
	}
}

int tier_leave(struct eng *e, struct tier_call *c, int r)
{
	struct tier_stat *st = &e->tier_stats[c->op];

	if (c->refused)
		return r;
	atomic_fetch_add_explicit(&st->calls, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&st->ns, mono_ns() - c->t0,
				  memory_order_relaxed);
	if (r < 0 && r != -ENOENT)
		atomic_fetch_add_explicit(&st->errors, 1, memory_order_relaxed);
	if (op_is_l2(c->op))
		l2_outcome(e, r);
	else
		l3_outcome(e, r);
	if (c->locked)
		pthread_mutex_lock(&e->lock);
	if (c->hold)
		c->hold->holds--;
	/* a reader cannot be helped by retrying at once: L3 unreachable or
	 * busy is an I/O error for the file's user */
	if (r == -EAGAIN && !op_is_l2(c->op) && c->op != OP_L3_APPLY)
		return -EIO;
	return r;
}
