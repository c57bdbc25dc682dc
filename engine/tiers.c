/*
 * tiers.c - calls to the tiers: the circuit breakers of L2 and L3 and the
 * per-operation counters that status and metrics report.
 */
#include "eng_int.h"

void tier_note(struct tier_stat *st, uint64_t t0, int r)
{
	atomic_fetch_add_explicit(&st->calls, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&st->ns, mono_ns() - t0,
				  memory_order_relaxed);
	if (r < 0 && r != -ENOENT)
		atomic_fetch_add_explicit(&st->errors, 1, memory_order_relaxed);
}

/* true when a read may go to L3 now: the breaker is closed (or lets a
 * trial through). While it is open, reads fail with EIO at once instead of
 * waiting for a connect timeout each. */
bool l3_allowed(struct eng *e)
{
	return breaker_allow(&e->l3_breaker, mono_ns());
}

/*
 * Feeds the outcome of an L3 read to the breaker and returns the errno the
 * caller sees: an unreachable or busy L3 (-EAGAIN from the store) is an I/O
 * error for the file's user, who cannot be helped by retrying at once
 * (DESIGN.md section 5).
 */
int l3_outcome(struct eng *e, int r)
{
	if (r != -EAGAIN) {
		if (breaker_success(&e->l3_breaker))
			eng_logf(&e->cfg.log, LOG_WARNING,
				 "%s answers again: reads go to it again",
				 e->l3->ops->name);
		return r;
	}
	if (breaker_failure(&e->l3_breaker, mono_ns()))
		eng_logf(&e->cfg.log, LOG_WARNING,
			 "%s is unreachable: reads of what no other tier "
			 "holds fail with EIO until it answers (tried again "
			 "every 2 s); writes go on into the write-ahead log",
			 e->l3->ops->name);
	return -EIO;
}


/* true for L3 failures that may go away by themselves (unreachable, busy,
 * an I/O error); false for refusals someone must fix (permission denied,
 * read-only, disk full, a constraint). */
bool l3_error_retryable(int r)
{
	return r == -EAGAIN || r == -EIO || r == -ENOMEM || r == -ETIMEDOUT;
}

/* Notes a failed L2 call; says so once when it takes Redis out of use. */
static void l2_failed(struct eng *e, int r)
{
	if (breaker_failure(&e->l2_breaker, mono_ns()))
		eng_logf(&e->cfg.log, LOG_WARNING,
			 "redis is unavailable (%s): serving from L1 and %s, "
			 "refilling redis as items are read once it is back",
			 strerror(-r), e->l3->ops->name);
}

/* Notes the outcome of an L2 call: a miss is a healthy answer. */
void l2_outcome(struct eng *e, int r)
{
	if (r >= 0 || r == -ENOENT) {
		if (breaker_success(&e->l2_breaker))
			eng_logf(&e->cfg.log, LOG_WARNING,
				 "redis answers again: using it as L2");
	} else {
		l2_failed(e, r);
	}
}

bool l2_usable(struct eng *e)
{
	return e->l2 && breaker_allow(&e->l2_breaker, mono_ns());
}
