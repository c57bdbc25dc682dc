/*
 * quarantine.c - no poison: a change that L3 refuses for good never blocks
 * the others.
 *
 * L3 applies a batch all or nothing. When it refuses a batch because of a
 * change it carries (-EEXIST: a unique index; -EINVAL: a value, an
 * encoding or a constraint the database refuses: see store.h), retrying
 * would refuse it forever and everything queued behind it would wait. So
 * the batch is bisected: each half is applied on its own, a half L3 takes
 * is committed, a half it refuses is split again, down to single changes
 * (the suspects). A change may be refused only because a partner in the
 * same batch is missing (two renames that swap names, a name freed by a
 * move in the other half), so the suspects are then tried together, then
 * each left out in turn, and only the ones L3 still refuses are set aside.
 * The parts are applied strictly (store.h): a store shared with other
 * writers would otherwise resolve a part's missing partner as a race (a
 * create replacing the entry that the missing move would have freed the
 * name of). A race with another writer met while bisecting is therefore
 * refused like a poison, and its change set aside too.
 * Applying a change twice is harmless (a change is a final state), so
 * parts that committed before a later part failed for another reason
 * (L3 went away) are simply applied again with the whole batch.
 *
 * A change set aside is appended to quarantine.log beside the log
 * (wal_quarantine()), logged, counted in the metrics and listed by
 * `tierfs status`; its node is marked clean, so the mount shows it until
 * the entry is read from L3 again. Replay at open uses the same path, so a
 * store always mounts.
 *
 * Everything here runs without the engine lock, like the flusher's own
 * apply, except quarantine_note().
 */
#include "eng_int.h"

bool refused_for_good(int r)
{
	return r == -EEXIST || r == -EINVAL;
}

/* Merkle reports of the parts that committed, concatenated. */
struct treebuf {
	struct store_dirhash *v;
	size_t n;
};

/* Applies @n changes as one transaction, with the tier's accounting. */
static int part_apply(struct eng *e, struct change **recs, size_t n,
		      struct treebuf *tb)
{
	struct store_dirhash *tree = NULL, *grown;
	struct tier_call c;
	size_t ntree = 0;
	int r = tier_enter(e, &c, OP_L3_APPLY, NULL, false);

	if (r == 0)
		r = e->l3->ops->apply(e->l3, recs, n, &tree, &ntree);
	r = tier_leave(e, &c, r);
	if (r == 0 && ntree) {
		grown = realloc(tb->v, (tb->n + ntree) * sizeof(*grown));
		if (grown) { /* else the mirror just misses them: verify */
			memcpy(grown + tb->n, tree, ntree * sizeof(*tree));
			tb->v = grown;
			tb->n += ntree;
		}
	}
	free(tree);
	return r;
}

/* Bisects @recs, whose apply L3 refused for good: commits what it takes and
 * adds the single changes it refuses to @sus (room for the whole batch). */
static int bisect(struct eng *e, struct change **recs, size_t n,
		  struct change **sus, size_t *nsus, struct treebuf *tb)
{
	size_t half = n / 2;
	int r;

	if (n == 1) {
		sus[(*nsus)++] = recs[0];
		return 0;
	}
	for (int side = 0; side < 2; side++) {
		struct change **part = side ? recs + half : recs;
		size_t len = side ? n - half : half;

		r = part_apply(e, part, len, tb);
		if (r < 0 && !refused_for_good(r))
			return r;
		if (r < 0) {
			r = bisect(e, part, len, sus, nsus, tb);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

/* Tries the suspects together, then each left out in turn; marks in @out
 * the ones L3 still refuses. */
static int judge(struct eng *e, struct change **sus, size_t n, bool *out,
		 struct treebuf *tb)
{
	struct change **rest;
	size_t k;
	int r = part_apply(e, sus, n, tb);

	memset(out, 0, n * sizeof(*out));
	if (r == 0 || !refused_for_good(r))
		return r;
	rest = calloc(n, sizeof(*rest));
	if (!rest)
		return -ENOMEM;
	for (size_t skip = 0; n > 1 && skip < n; skip++) {
		k = 0;
		for (size_t i = 0; i < n; i++)
			if (i != skip)
				rest[k++] = sus[i];
		r = part_apply(e, rest, k, tb);
		if (r == 0) { /* all but that one go */
			out[skip] = true;
			goto out_free;
		}
		if (!refused_for_good(r))
			goto out_free;
	}
	r = 0;
	for (size_t i = 0; i < n && r == 0; i++) {
		r = part_apply(e, &sus[i], 1, tb);
		out[i] = refused_for_good(r);
		if (out[i])
			r = 0;
	}
out_free:
	free(rest);
	return r;
}

int apply_isolating(struct eng *e, struct change **recs, size_t n, size_t *nq,
		    struct store_dirhash **tree, size_t *ntree)
{
	struct change **sus = calloc(n, sizeof(*sus));
	bool *bad = calloc(n, sizeof(*bad));
	struct treebuf tb = {0};
	size_t nsus = 0, k = 0;
	int r = -ENOMEM;

	*nq = 0;
	if (!sus || !bad)
		goto out;
	e->l3->strict = true; /* a part without its partner fails */
	r = bisect(e, recs, n, sus, &nsus, &tb);
	if (r == 0 && nsus)
		r = judge(e, sus, nsus, bad, &tb);
	e->l3->strict = false;
	if (r < 0)
		goto out;
	/* the refused ones to the end, in order */
	for (size_t i = 0; i < nsus; i++)
		if (bad[i])
			sus[k++] = sus[i];
	*nq = k;
	for (size_t i = 0, w = 0; i < n; i++) {
		bool refused = false;

		for (size_t j = 0; j < k && !refused; j++)
			refused = recs[i] == sus[j];
		if (!refused)
			recs[w++] = recs[i];
	}
	memcpy(recs + n - k, sus, k * sizeof(*sus));
	*tree = tb.v;
	*ntree = tb.n;
	tb.v = NULL;
out:
	free(tb.v);
	free(sus);
	free(bad);
	return r;
}

void quarantine_note(struct eng *e, struct change **recs, size_t n, int why,
		     bool filed)
{
	for (size_t i = 0; i < n; i++) {
		struct change *ch = recs[i];
		struct node *nd;
		struct quarantined *q =
			&e->quarantine[e->quarantined % QUARANTINE_RECENT];

		eng_logf(&e->cfg.log, LOG_ERR,
			 "%s refuses the change of inode %llu ('%s'): %s; set "
			 "aside in %s/quarantine.log, the other changes go on",
			 e->l3->ops->name, (unsigned long long)ch->ino,
			 ch->deleted ? "(a delete)" : ch->name, strerror(-why),
			 e->wal_dir);
		q->ino = ch->ino;
		q->seq = ch->seq;
		q->deleted = ch->deleted;
		snprintf(q->name, sizeof(q->name), "%s",
			 ch->deleted ? "" : ch->name);
		q->error = why;
		e->quarantined++;
		nd = node_get(e, ch->ino);
		if (nd && nd->dirty && nd->dirty_seq == ch->seq)
			nd->refused = true; /* fsync says so */
	}
	if (!filed) /* the log keeps them: the next open tries again */
		e->wal_keep = true;
}
