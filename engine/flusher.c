/*
 * flusher.c - persistence: the flusher thread that applies the batch queue
 * to L3 (then L2) in one transaction, the group-commit thread that syncs the
 * log, waiting for a commit (fsync, sync), and the replay of the log at
 * open.
 */
#include "eng_int.h"

static void commit_done(struct eng *e, struct change **recs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct node *nd = node_get(e, recs[i]->ino);

		/* L3 changed under the snapshots of its directories */
		snap_forget(e, recs[i]->ino,
			    recs[i]->deleted ? 0 : recs[i]->parent);

		if (!nd || !nd->dirty || nd->dirty_seq != recs[i]->seq)
			continue; /* a newer change is queued */
		nd->dirty = false;
		nd->stamp = ++e->stamp;
		dirty_unlink(e, nd);
		if (nd->content_dirty) {
			l1_unpin(e->l1, nd->ino, nd->item);
			nd->content_dirty = false;
		}
		if (!nd->opens) {
			item_unref(nd->item);
			nd->item = NULL;
		}
		node_try_free(e, nd);
	}
}

/* Writes a committed batch and the Merkle hashes L3 computed into L2,
 * best effort (L3 is the truth; a stale L2 is found by version). */
static void l2_apply(struct eng *e, struct change **recs, size_t n,
		     struct store_dirhash *tree, size_t ntree)
{
	struct tier_call c;
	int r = tier_enter(e, &c, OP_L2_APPLY, NULL, false);

	if (r == 0)
		r = e->l2->ops->apply(e->l2, recs, n);
	if (tier_leave(e, &c, r) < 0 || !ntree)
		return;
	r = tier_enter(e, &c, OP_L2_PUT_TREE, NULL, false);
	if (r == 0)
		r = e->l2->ops->put_tree(e->l2, tree, ntree);
	tier_leave(e, &c, r);
}

void *flusher_main(void *arg)
{
	struct eng *e = arg;
	uint64_t backoff_ms = 0;
	int stop_failures = 0;
	struct store_dirhash *tree;
	size_t ntree;

	pthread_mutex_lock(&e->lock);
	for (;;) {
		struct change **recs;
		uint64_t snapshot, now = mono_ns();
		struct tier_call c;
		bool sealed, filed = false;
		size_t nq;
		int64_t seg;
		ssize_t n;
		int r, why;

		if (!e->stopping && !e->l3_failing)
			ino_refill(e);
		if (e->l3_failing && !e->stopping && now < e->retry_at) {
			/* back off: wake-ups do not bring the retry forward */
			struct timespec ts = mono_ts(e->retry_at);

			pthread_cond_timedwait(&e->flush_cond, &e->lock, &ts);
			continue;
		}
		if (batch_count(&e->batch) == 0) {
			if (e->flush_now) {
				e->committed_seq = e->change_seq;
				e->flush_now = false;
				pthread_cond_broadcast(&e->commit_cond);
			}
			if (e->stopping)
				break;
			pthread_cond_wait(&e->flush_cond, &e->lock);
			continue;
		}
		if (!e->stopping && !e->flush_now &&
		    !batch_due(&e->batch, now)) {
			struct timespec ts = mono_ts(batch_deadline(&e->batch));

			pthread_cond_timedwait(&e->flush_cond, &e->lock, &ts);
			continue;
		}
		e->flush_now = false;
		n = batch_take(&e->batch, &recs);
		if (n < 0) {
			struct timespec ts = mono_ts(now + 100000000);

			pthread_cond_timedwait(&e->flush_cond, &e->lock, &ts);
			continue;
		}
		/* Every record in the segments before @seg is in this batch
		 * or replaced by a newer queued one. */
		seg = e->wal_fresh ? e->wal_seg : wal_rotate(e->wal);
		if (seg < 0)
			eng_logf(&e->cfg.log, LOG_ERR,
				 "cannot rotate the write-ahead log: %s",
				 strerror((int)-seg));
		if (seg > 0) {
			/* a retry during an outage reuses the empty segment
			 * instead of making one per attempt */
			e->wal_seg = seg;
			e->wal_fresh = true;
		}
		snapshot = e->change_seq;
		e->flushing = true;
		pthread_mutex_unlock(&e->lock);
		/* the segment the batch's records are in must be on disk
		 * before they count as durable while L3 is away */
		sealed = wal_seal(e->wal) == 0;
		tree = NULL;
		ntree = 0;
		r = tier_enter(e, &c, OP_L3_APPLY, NULL, false);
		if (r == 0)
			r = e->l3->ops->apply(e->l3, recs, (size_t)n, &tree,
					      &ntree);
		r = tier_leave(e, &c, r);
		nq = 0;
		why = r;
		if (refused_for_good(r)) { /* set aside what L3 will not take */
			free(tree);
			r = apply_isolating(e, recs, (size_t)n, &nq, &tree,
					    &ntree);
			filed = r == 0 && nq &&
				wal_quarantine(e->wal, recs + n - nq, nq) == 0;
		}
		if (r == 0 && (size_t)n > nq) /* L3 first: it is the truth */
			l2_apply(e, recs, (size_t)n - nq, tree, ntree);
		free(tree);
		pthread_mutex_lock(&e->lock);
		/* the lock is kept until the nodes are marked clean */
		e->flushing = false;
		pthread_cond_broadcast(&e->commit_cond);
		if (!sealed && e->wal_lost_seq < snapshot)
			e->wal_lost_seq = snapshot;
		if (r == 0) {
			if (nq)
				quarantine_note(e, recs + n - nq, nq, why,
						filed);
			commit_done(e, recs, (size_t)n);
			for (ssize_t i = 0; i < n; i++)
				change_free(recs[i]);
			free(recs);
			e->committed_seq = snapshot;
			e->gen++;
			e->batches++;
			e->batch_recs += (uint64_t)n;
			e->last_batch = (uint64_t)n;
			backoff_ms = 0;
			if (seg > 0 && !e->wal_keep)
				wal_drop_before(e->wal, seg);
			if (e->l3_failing) {
				e->l3_failing = false;
				eng_logf(&e->cfg.log, LOG_WARNING,
					 "%s is back: persisted %zd changes",
					 e->l3->ops->name, n);
			}
			pthread_cond_broadcast(&e->commit_cond);
			continue;
		}
		if (!e->l3_failing)
			eng_logf(&e->cfg.log, LOG_ERR,
				 "cannot persist a batch of %zd changes to %s: "
				 "%s (%s); keeping them in the write-ahead log "
				 "and retrying",
				 n, e->l3->ops->name, strerror(-r),
				 l3_error_retryable(r)
					 ? "temporary"
					 : "refused: fsync reports it until it "
					   "is fixed");
		e->l3_failing = true;
		if (batch_requeue(&e->batch, recs, (size_t)n, mono_ns())) {
			/* out of memory: only the log still has them, so no
			 * segment is deleted until the next open replays it */
			eng_logf(&e->cfg.log, LOG_ERR,
				 "out of memory: changes that wait for %s are "
				 "kept only in the write-ahead log until the "
				 "next mount",
				 e->l3->ops->name);
			e->wal_keep = true;
		}
		free(recs);
		e->fail_count++;
		e->last_error = r;
		pthread_cond_broadcast(&e->commit_cond);
		if (e->stopping && ++stop_failures >= STOP_RETRIES) {
			pthread_mutex_unlock(&e->lock);
			r = wal_sync(e->wal);
			pthread_mutex_lock(&e->lock);
			eng_logf(
				&e->cfg.log, LOG_ERR,
				"%zu changes were not persisted to %s: %s",
				batch_count(&e->batch), e->l3->ops->name,
				r == 0 ? "they stay in the write-ahead log and "
					 "are persisted at the next mount"
				       : "and the write-ahead log cannot be "
					 "synced");
			batch_release(&e->batch);
			batch_init(&e->batch, e->cfg.batch_flush_count,
				   e->cfg.batch_flush_bytes,
				   (uint64_t)e->cfg.batch_flush_ms * 1000000);
			break;
		}
		backoff_ms = backoff_ms ? backoff_ms * 2 : BACKOFF_MIN_MS;
		if (backoff_ms > BACKOFF_MAX_MS)
			backoff_ms = BACKOFF_MAX_MS;
		e->retry_at = mono_ns() + backoff_ms * 1000000;
	}
	pthread_mutex_unlock(&e->lock);
	return NULL;
}

/*
 * Makes every change up to @seq durable: asks the flusher to persist it in
 * L3 and waits; when a flush fails meanwhile (L3 unreachable), syncs the
 * write-ahead log instead, which makes the changes durable on this host.
 * Returns 0, or the error of the failed flush when the log cannot cover it.
 * A refusal seen before this call may be fixed by now: it is returned only
 * once the flusher's next attempt (after its back-off) failed too. A
 * one-shot engine's log covers nothing: nobody replays it.
 */
int wait_committed(struct eng *e, uint64_t seq)
{
	uint64_t fails = e->fail_count;
	int sync;

	while (e->committed_seq < seq) {
		/* during a known outage, do not wait for the next retry
		 * (one-shot: do, since the log does not count) */
		if ((e->l3_failing && !e->cfg.oneshot) ||
		    e->fail_count != fails) {
			int r = e->last_error ? e->last_error : -EIO;
			bool fresh = e->fail_count != fails;

			/* L3 unreachable or failing for now: the synced log
			 * makes the change durable here. L3 refusing it
			 * (permission, read-only, full, a constraint) needs
			 * someone to act: say so to the caller, once an
			 * attempt made during this call was refused. */
			if (l3_error_retryable(r) && seq > e->wal_lost_seq &&
			    !e->cfg.oneshot) {
				pthread_mutex_unlock(&e->lock);
				sync = wal_sync(e->wal);
				pthread_mutex_lock(&e->lock);
				return sync < 0 ? r : 0;
			}
			if (fresh || e->stopping)
				return r;
			/* stale: wait for the flusher's next attempt */
		}
		e->flush_now = true;
		pthread_cond_signal(&e->flush_cond);
		pthread_cond_wait(&e->commit_cond, &e->lock);
	}
	return 0;
}

/* The group-commit thread: fdatasyncs the log every WAL_SYNC_MS when
 * something was appended, and once more when the engine stops. */
void *syncer_main(void *arg)
{
	struct eng *e = arg;

	pthread_mutex_lock(&e->lock);
	for (;;) {
		struct timespec ts =
			mono_ts(mono_ns() + WAL_SYNC_MS * 1000000ull);
		bool stop = e->stopping;

		if (e->wal_dirty) {
			int r;

			e->wal_dirty = false;
			pthread_mutex_unlock(&e->lock);
			r = wal_sync(e->wal);
			pthread_mutex_lock(&e->lock);
			if (r < 0)
				eng_logf(&e->cfg.log, LOG_ERR,
					 "cannot sync the write-ahead log: %s",
					 strerror(-r));
		}
		if (stop)
			break;
		pthread_cond_timedwait(&e->sync_cond, &e->lock, &ts);
	}
	pthread_mutex_unlock(&e->lock);
	return NULL;
}

static int replay_one(void *arg, struct change *rec)
{
	return batch_add(arg, rec, 0);
}

/* Applies what a crashed engine left in the log to L3, then drops it. A
 * change L3 refuses for good is set aside, so the store always mounts. */
int replay_wal(struct eng *e)
{
	struct store_dirhash *tree = NULL;
	struct change **recs = NULL;
	struct batch pending;
	struct tier_call c;
	size_t nq = 0, ntree = 0;
	bool filed = false;
	ssize_t n;
	int64_t seg;
	int r, why;

	batch_init(&pending, SIZE_MAX, SIZE_MAX, UINT64_MAX);
	r = wal_replay(e->wal, replay_one, &pending);
	if (r < 0)
		goto out;
	n = batch_take(&pending, &recs);
	if (n < 0) {
		r = (int)n;
		goto out;
	}
	if (n > 0) {
		eng_logf(&e->cfg.log, LOG_INFO,
			 "replaying %zd changes from the write-ahead log into "
			 "%s",
			 n, e->l3->ops->name);
		r = tier_enter(e, &c, OP_L3_APPLY, NULL, false);
		if (r == 0)
			r = store_apply(e->l3, recs, (size_t)n);
		r = tier_leave(e, &c, r);
		why = r;
		if (refused_for_good(r)) {
			r = apply_isolating(e, recs, (size_t)n, &nq, &tree,
					    &ntree);
			free(tree);
			filed = r == 0 && nq &&
				wal_quarantine(e->wal, recs + n - nq, nq) == 0;
			if (r == 0 && nq)
				quarantine_note(e, recs + n - nq, nq, why,
						filed);
		}
		for (ssize_t i = 0; i < n; i++)
			change_free(recs[i]);
		free(recs);
		if (r < 0) {
			eng_logf(
				&e->cfg.log, LOG_ERR,
				"cannot replay the write-ahead log into %s: %s",
				e->l3->ops->name, strerror(-r));
			goto out;
		}
	}
	seg = wal_rotate(e->wal);
	r = seg < 0 ? (int)seg : wal_seal(e->wal);
	if (r == 0 && !e->wal_keep)
		r = wal_drop_before(e->wal, seg);
out:
	batch_release(&pending);
	return r;
}
