/*
 * l3_sqlite_apply.c - apply() of the SQLite store: a batch of final states
 * of entries written in one transaction, with what store.h's "Sharing"
 * leaves to the moment of commit: each row's version, the namespace races
 * with other writers, the feed's records and their trimming.
 *
 * Everything runs on the writer inside BEGIN IMMEDIATE: no other
 * connection, of this process or of another, writes the file until COMMIT
 * (they wait in their busy handler), so what one pass reads is still true
 * in the next. The passes:
 *
 *   0. The plan. Each change's stored row (version, kind). Then the races:
 *      the rows holding a put's name or stem that the batch does not
 *      change are another writer's; a file or an empty directory among
 *      them is a victim (replaced), a directory with children drops the
 *      put. A deletion of a directory that keeps a child after the batch
 *      (a stored child the batch does not change, or a put into it) is
 *      dropped. A move of a directory below itself is dropped: the walk
 *      up from its new parent follows the parents the entries will have
 *      (a kept put's, else the stored row's; in batch order, each walk
 *      sees the moves dropped before it), so of two moves that close one
 *      cycle only the first is dropped. A dropped change leaves its stored
 *      row where it was, and that row may hold a name another put wants,
 *      or close a cycle with another move, so the plan is made again
 *      until a round drops nothing (at most one round per change; nearly
 *      always one). Then each put's version: max(its own, 1), at
 *      least the stored one (+ 1 when it carries content), at least each
 *      victim's + 1. A change with content that is what the row already
 *      holds (its version is the stored one, its hash the stored hash,
 *      not zero)
 *      does not count as new content: a batch applied again, after a
 *      commit whose answer was lost, leaves the versions as they are, so
 *      applying a change twice stays harmless.
 *   1. Every row a kept change names is removed (so final states never
 *      collide with the states they replace: renames, swaps), and so is
 *      every victim, with its content.
 *   2. The new rows and contents. A unique index that refuses one now is
 *      a collision inside the batch (two of its changes want one name, or
 *      one ino twice): -EEXIST, as before sharing; races cannot reach
 *      this pass.
 *   3. The feed: one record per victim (a deletion) and per change,
 *      dropped ones included, so that a writer learns from the feed that
 *      its change did not happen. Then trimming.
 *   4. The Merkle hashes (l3_sqlite_merkle.c), seeded with the old and
 *      new parents of the rows written and removed, victims' included.
 *
 * Races are logged (WARN) and counted in store.races after COMMIT only,
 * so that a batch that fails counts none.
 *
 * Trimming. Trimming removes a prefix of the feed: all records up to a
 * mark, which is the higher of "the newest feed_keep_records are kept"
 * (seq values are consecutive: AUTOINCREMENT takes them under the write
 * lock and a rollback gives them back) and "records older than
 * feed_keep_seconds go" (the records before the first one that is not
 * older; a clock that stepped back keeps some longer, never drops a newer
 * one before an older). Every batch pays for one probe of the feed's
 * oldest record; the DELETE runs only when the oldest is beyond a limit,
 * and removes what is beyond it, at most a batch's worth in the steady
 * state. The mark is kept in meta 'feed_trimmed' (only ever raised).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "l3_sqlite_int.h"
#include "u64map.h"

/* What the plan decided about one change. */
struct lsq_step {
	bool existed;	  /* the ino had a row */
	int kind;	  /* its kind, when it existed */
	uint64_t stored;  /* its version, when it existed */
	uint64_t from;	  /* its parent, when it existed */
	bool same;	  /* ... with the content hash the change carries */
	uint64_t version; /* the version to write (a put kept) */
	bool dropped;	  /* lost a race: not applied, only recorded */
	bool cycle;	  /* ... because it would have closed a cycle */
	uint64_t holder;  /* dropped put: the directory holding its name */
};

/* An entry a put replaces, with its content. */
struct lsq_victim {
	uint64_t ino;
	uint64_t parent;
	uint64_t version;
	size_t by; /* the index of the put that replaces it */
};

struct lsq_plan {
	struct change *const *changes;
	size_t n;
	struct lsq_step *steps;
	struct u64map live;    /* ino -> 1 + the index of a kept change */
	struct u64map parents; /* directory -> 1: a kept put goes into it */
	struct u64map seen;    /* victim ino -> 1 + its index in victims */
	struct lsq_victim *victims;
	size_t nvictims, cap;
};

/* A row that holds a put's name or stem. */
struct lsq_holder {
	uint64_t ino;
	uint64_t parent;
	uint64_t version;
	int kind;
};

static uint64_t lsq_next_version(uint64_t v)
{
	return v < (uint64_t)INT64_MAX ? v + 1 : v;
}

static void lsq_plan_release(struct lsq_plan *p)
{
	u64map_release(&p->live);
	u64map_release(&p->parents);
	u64map_release(&p->seen);
	free(p->victims);
	free(p->steps);
}

/* Whether the batch changes @ino (a change of it that is kept). */
static bool lsq_plan_changes(const struct lsq_plan *p, uint64_t ino)
{
	return u64map_get(&p->live, ino) != NULL;
}

/* Reads the stored version and kind of every change's ino. */
static int lsq_plan_stored(struct lsq *q, struct lsq_plan *p)
{
	sqlite3_stmt *st = q->writer->stmt[W_GET_STORED];

	for (size_t i = 0; i < p->n; i++) {
		struct lsq_step *sp = &p->steps[i];
		int rc = sqlite3_bind_int64(st, 1,
					    (sqlite3_int64)p->changes[i]->ino);

		if (rc == SQLITE_OK)
			rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			sqlite3_int64 v = sqlite3_column_int64(st, 0);

			const void *h = sqlite3_column_blob(st, 2);
			int hlen = sqlite3_column_bytes(st, 2);
			const uint8_t *mine = p->changes[i]->meta.hash;

			sp->existed = true;
			sp->stored = v > 0 ? (uint64_t)v : 0;
			sp->kind = sqlite3_column_int(st, 1);
			sp->from = (uint64_t)sqlite3_column_int64(st, 3);
			/* a zero hash (NULL) is not known: never the same */
			sp->same = h && hlen == ITEM_HASH_LEN &&
				   !memcmp(h, mine, ITEM_HASH_LEN);
			rc = SQLITE_DONE;
		}
		lsq_done(st);
		if (rc != SQLITE_DONE)
			return lsq_errno(q, q->writer->db, rc,
					 "read a changed entry");
	}
	return 0;
}

/* Rebuilds the maps of the changes kept and of the directories their puts
 * go into. */
static int lsq_plan_maps(struct lsq_plan *p)
{
	int err = 0;

	u64map_release(&p->live);
	u64map_release(&p->parents);
	u64map_init(&p->live);
	u64map_init(&p->parents);
	for (size_t i = 0; i < p->n && !err; i++) {
		const struct change *ch = p->changes[i];

		if (p->steps[i].dropped)
			continue;
		err = u64map_put(&p->live, ch->ino, (void *)(uintptr_t)(i + 1));
		if (!err && !ch->deleted && ch->parent) /* 0: the root's */
			err = u64map_put(&p->parents, ch->parent,
					 (void *)(uintptr_t)1);
	}
	return err;
}

/* Whether directory @dir keeps a child after the batch: a kept put goes
 * into it, or a stored child is not changed by the batch. Returns 1, 0 or
 * a negative errno. Reads at most one child more than the batch changes. */
static int lsq_keeps_children(struct lsq *q, const struct lsq_plan *p,
			      uint64_t dir)
{
	sqlite3_stmt *st = q->writer->stmt[W_CHILD_INOS];
	int rc, ret = 0;

	if (u64map_get(&p->parents, dir))
		return 1;
	rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)dir);
	while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		uint64_t child = (uint64_t)sqlite3_column_int64(st, 0);

		rc = SQLITE_OK;
		if (!lsq_plan_changes(p, child)) {
			ret = 1;
			rc = SQLITE_DONE;
			break;
		}
	}
	if (rc != SQLITE_DONE)
		ret = lsq_errno(q, q->writer->db, rc, "look for children");
	lsq_done(st);
	return ret;
}

/* Reads into @out (room for 2: one per unique index) the rows other than
 * the change's own that hold the name or the stem of put @ch. */
static int lsq_holders(struct lsq *q, const struct change *ch,
		       struct lsq_holder out[2], size_t *nout)
{
	sqlite3_stmt *st = q->writer->stmt[W_CONFLICTS];
	struct store_cols c =
		store_cols_of(ch->ino, ch->parent, ch->name, &ch->meta);
	int rc;

	*nout = 0;
	rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)c.parent);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob(st, 2, c.name, (int)c.name_len,
				       SQLITE_STATIC);
	if (rc == SQLITE_OK && c.stem)
		rc = sqlite3_bind_blob(st, 3, c.stem, (int)c.stem_len,
				       SQLITE_STATIC);
	while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct lsq_holder h = {
			.ino = (uint64_t)sqlite3_column_int64(st, 0),
			.kind = sqlite3_column_int(st, 1),
			.version = (uint64_t)sqlite3_column_int64(st, 2),
			.parent = (uint64_t)sqlite3_column_int64(st, 3),
		};

		rc = SQLITE_OK;
		if (h.ino != ch->ino && *nout < 2)
			out[(*nout)++] = h;
	}
	lsq_done(st);
	if (rc != SQLITE_DONE)
		return lsq_errno(q, q->writer->db, rc, "look up a name");
	return 0;
}

static int lsq_plan_victim(struct lsq_plan *p, const struct lsq_holder *h,
			   size_t by)
{
	if (u64map_get(&p->seen, h->ino))
		return 0; /* two puts of the batch collide: pass 2 says so */
	if (p->nvictims == p->cap) {
		size_t cap = p->cap ? 2 * p->cap : 8;
		struct lsq_victim *v =
			reallocarray(p->victims, cap, sizeof(*v));

		if (!v)
			return -ENOMEM;
		p->victims = v;
		p->cap = cap;
	}
	p->victims[p->nvictims++] = (struct lsq_victim){
		.ino = h->ino,
		.parent = h->parent,
		.version = h->version,
		.by = by,
	};
	return u64map_put(&p->seen, h->ino, (void *)(uintptr_t)p->nvictims);
}

/* Whether put @i, a move of a directory, puts it below itself: walks up
 * from its new parent through the parents the entries will have after the
 * batch (a kept put's, else the stored row's) until the root, an entry
 * that will not exist, or the entry itself. Returns 1, 0 or a negative
 * errno. A chain longer than LSQ_MAX_DEPTH is not this move's doing (a
 * cycle among stored rows, which only a hand edit makes): 0. */
static int lsq_closes_cycle(struct lsq *q, const struct lsq_plan *p, size_t i)
{
	const struct change *ch = p->changes[i];
	uint64_t at = ch->parent, parent;
	int kind, found;

	for (int depth = 0; depth < LSQ_MAX_DEPTH; depth++) {
		void *v = u64map_get(&p->live, at);

		if (at == ch->ino)
			return 1;
		if (at == STORE_ROOT_INO)
			return 0;
		if (v && !p->steps[(uintptr_t)v - 1].dropped) {
			const struct change *up = p->changes[(uintptr_t)v - 1];

			if (up->deleted)
				return 0;
			at = up->parent;
			continue;
		}
		found = lsq_get_parent(q, at, &parent, &kind);
		if (found <= 0)
			return found;
		at = parent;
	}
	return 0;
}

/* The cycles of a round: drops each move of a directory that would put it
 * below itself, in batch order, each walk seeing the drops before it. Sets
 * *dropped when it dropped a change. */
static int lsq_plan_cycles(struct lsq *q, struct lsq_plan *p, bool *dropped)
{
	for (size_t i = 0; i < p->n; i++) {
		const struct change *ch = p->changes[i];
		struct lsq_step *sp = &p->steps[i];
		int closes;

		/* only a move can close one: a new directory has no stored
		 * entries below it, and a cycle needs a changed parent */
		if (sp->dropped || ch->deleted || ch->meta.kind != ITEM_DIR ||
		    !sp->existed || sp->from == ch->parent)
			continue;
		closes = lsq_closes_cycle(q, p, i);
		if (closes < 0)
			return closes;
		if (closes) {
			sp->dropped = true;
			sp->cycle = true;
			*dropped = true;
		}
	}
	return 0;
}

/* One round of the races (see the top of this file): drops what loses
 * and lists the victims. Sets *dropped when it dropped a change. */
static int lsq_plan_round(struct lsq *q, struct lsq_plan *p, bool *dropped)
{
	struct lsq_holder held[2];
	size_t nheld;
	int err, keeps;

	*dropped = false;
	p->nvictims = 0;
	u64map_release(&p->seen);
	u64map_init(&p->seen);
	err = lsq_plan_maps(p);
	if (err)
		return err;
	for (size_t i = 0; i < p->n; i++) {
		const struct change *ch = p->changes[i];
		struct lsq_step *sp = &p->steps[i];

		if (sp->dropped)
			continue;
		if (ch->deleted) {
			if (!sp->existed || sp->kind != ITEM_DIR)
				continue;
			keeps = lsq_keeps_children(q, p, ch->ino);
			if (keeps < 0)
				return keeps;
			if (keeps) {
				sp->dropped = true;
				*dropped = true;
			}
			continue;
		}
		err = lsq_holders(q, ch, held, &nheld);
		if (err)
			return err;
		for (size_t j = 0; j < nheld && !sp->dropped; j++) {
			if (lsq_plan_changes(p, held[j].ino))
				continue; /* the batch's own: pass 2 */
			keeps = held[j].kind == ITEM_DIR
					? lsq_keeps_children(q, p, held[j].ino)
					: 0;
			if (keeps < 0)
				return keeps;
			if (keeps) {
				sp->dropped = true;
				sp->holder = held[j].ino;
				*dropped = true;
			}
		}
		for (size_t j = 0; j < nheld && !sp->dropped; j++) {
			if (lsq_plan_changes(p, held[j].ino))
				continue;
			err = lsq_plan_victim(p, &held[j], i);
			if (err)
				return err;
		}
	}
	return lsq_plan_cycles(q, p, dropped);
}

/* true when the plan drops a change. */
static bool lsq_plan_drops(const struct lsq_plan *p)
{
	for (size_t i = 0; i < p->n; i++)
		if (p->steps[i].dropped)
			return true;
	return false;
}

/* Pass 0 (see the top of this file). */
static int lsq_plan_make(struct lsq *q, struct lsq_plan *p)
{
	bool again = true;
	int err;

	err = lsq_plan_stored(q, p);
	for (size_t round = 0; !err && again; round++)
		err = lsq_plan_round(q, p, &again);
	if (err)
		return err;
	/* the maps of the last round are those of the plan */
	for (size_t i = 0; i < p->n; i++) {
		const struct change *ch = p->changes[i];
		struct lsq_step *sp = &p->steps[i];
		uint64_t v = ch->meta.version ? ch->meta.version : 1;

		if (sp->dropped || ch->deleted)
			continue;
		if (sp->existed) {
			bool replay =
				sp->same && ch->meta.version == sp->stored;
			uint64_t floor = ch->item && !replay
						 ? lsq_next_version(sp->stored)
						 : sp->stored;

			if (floor > v)
				v = floor;
		}
		sp->version = v;
	}
	for (size_t k = 0; k < p->nvictims; k++) {
		struct lsq_step *sp = &p->steps[p->victims[k].by];
		uint64_t floor = lsq_next_version(p->victims[k].version);

		if (floor > sp->version)
			sp->version = floor;
	}
	return 0;
}

/* After COMMIT: logs each race of the plan and counts it. */
static void lsq_plan_report(struct lsq *q, const struct lsq_plan *p)
{
	for (size_t k = 0; k < p->nvictims; k++)
		store_race(&q->base, q->path, STORE_RACE_REPLACED,
			   p->changes[p->victims[k].by], p->victims[k].ino);
	for (size_t i = 0; i < p->n; i++) {
		const struct change *ch = p->changes[i];
		const struct lsq_step *sp = &p->steps[i];

		if (sp->dropped)
			store_race(&q->base, q->path,
				   ch->deleted ? STORE_RACE_RMDIR
				   : sp->cycle ? STORE_RACE_CYCLE
					       : STORE_RACE_NAME_HELD,
				   ch, sp->holder);
	}
}

/* ---- the writes ---- */

/* Deletes row @ino and adds its old parent, if it was there, to @seeds. */
static int lsq_delete_entry(struct lsq *q, uint64_t ino, uint64_t *seeds,
			    size_t *nseeds)
{
	sqlite3_stmt *st = q->writer->stmt[W_DEL_ENTRY];
	int rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)ino);

	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		seeds[(*nseeds)++] = (uint64_t)sqlite3_column_int64(st, 0);
		/* RETURNING has done its work in the first step: this
		 * only ends the statement */
		rc = sqlite3_step(st);
	}
	lsq_done(st);
	if (rc != SQLITE_DONE)
		return lsq_errno(q, q->writer->db, rc, "delete an entry");
	return 0;
}

/* Writes the row of kept put @ch with @version, and its content when it
 * carries an item. */
static int lsq_write_entry(struct lsq *q, const struct change *ch,
			   uint64_t version)
{
	struct lsq_conn *w = q->writer;
	struct item_meta m = ch->meta; /* borrows its pointers */
	sqlite3_stmt *st = w->stmt[W_INS_ENTRY];
	size_t len;
	int rc, err;

	m.version = version;
	rc = lsq_bind_entry(st, ch->ino, ch->parent, ch->name, &m);
	if (rc != SQLITE_OK) {
		lsq_done(st);
		return lsq_errno(q, w->db, rc, "bind an entry");
	}
	err = lsq_run(q, w->db, st, "write an entry");
	if (err || !ch->item)
		return err;
	len = item_size(ch->item);
	st = w->stmt[W_PUT_CONTENT];
	rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)ch->ino);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob64(st, 2, len ? item_data(ch->item) : "",
					 len, SQLITE_STATIC);
	if (rc != SQLITE_OK) {
		lsq_done(st);
		return lsq_errno(q, w->db, rc, "bind content");
	}
	return lsq_run(q, w->db, st, "write content");
}

/* Adds a feed record of @ino; sets *seq to its sequence number. */
static int lsq_feed_add(struct lsq *q, uint64_t ino, int64_t now_ns,
			sqlite3_int64 *seq)
{
	sqlite3_stmt *st = q->writer->stmt[W_FEED_ADD];
	int rc, err;

	rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)q->base.origin);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, (sqlite3_int64)ino);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 3, now_ns);
	if (rc != SQLITE_OK) {
		lsq_done(st);
		return lsq_errno(q, q->writer->db, rc, "bind a feed record");
	}
	err = lsq_run(q, q->writer->db, st, "add a feed record");
	if (!err)
		*seq = sqlite3_last_insert_rowid(q->writer->db);
	return err;
}

/* Trims the feed after a batch whose last record is @last (see the top of
 * this file). */
static int lsq_feed_trim(struct lsq *q, sqlite3_int64 last, int64_t now_ns)
{
	sqlite3 *db = q->writer->db;
	sqlite3_stmt *st = q->writer->stmt[W_FEED_OLDEST];
	sqlite3_int64 oldest, oldest_ns, mark = 0;
	sqlite3_int64 keep = q->base.feed_keep_records > (uint64_t)INT64_MAX
				     ? INT64_MAX
				     : (sqlite3_int64)q->base.feed_keep_records;
	int64_t cutoff =
		now_ns - (int64_t)q->base.feed_keep_seconds * 1000000000;
	int rc, err;

	if (keep < 1)
		keep = 1;
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		lsq_done(st);
		return rc == SQLITE_DONE
			       ? 0
			       : lsq_errno(q, db, rc, "read the feed's oldest");
	}
	oldest = sqlite3_column_int64(st, 0);
	oldest_ns = sqlite3_column_int64(st, 1);
	lsq_done(st);

	if (last - oldest >= keep)
		mark = last - keep;
	if (oldest_ns < cutoff) {
		sqlite3_int64 first = last + 1;

		st = q->writer->stmt[W_FEED_FIRST_AFTER];
		rc = sqlite3_bind_int64(st, 1, cutoff);
		if (rc == SQLITE_OK)
			rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			first = sqlite3_column_int64(st, 0);
			rc = SQLITE_DONE;
		}
		lsq_done(st);
		if (rc != SQLITE_DONE)
			return lsq_errno(q, db, rc, "read the feed's times");
		if (first - 1 > mark)
			mark = first - 1;
	}
	if (mark < oldest)
		return 0;
	err = lsq_run_ino(q, W_FEED_TRIM, (uint64_t)mark, "trim the feed");
	if (!err)
		err = lsq_run_ino(q, W_FEED_SET_TRIMMED, (uint64_t)mark,
				  "mark the feed trimmed");
	return err;
}

/* Pass 3: the batch's records, then trimming. */
static int lsq_feed_write(struct lsq *q, const struct lsq_plan *p)
{
	struct timespec now;
	sqlite3_int64 seq = 0;
	int64_t now_ns;
	int err = 0;

	clock_gettime(CLOCK_REALTIME, &now);
	now_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
	for (size_t k = 0; k < p->nvictims && !err; k++)
		err = lsq_feed_add(q, p->victims[k].ino, now_ns, &seq);
	for (size_t i = 0; i < p->n && !err; i++)
		err = lsq_feed_add(q, p->changes[i]->ino, now_ns, &seq);
	if (!err)
		err = lsq_feed_trim(q, seq, now_ns);
	return err;
}

int lsq_apply(struct store *s, struct change *const *changes, size_t n,
	      struct store_dirhash **tree, size_t *ntree)
{
	struct lsq *q = lsq_of(s);
	struct store_dirhash *report = NULL;
	struct lsq_plan plan = {.changes = changes, .n = n};
	size_t nreport = 0, nseeds = 0;
	uint64_t *seeds = NULL;
	struct lsq_conn *w;
	int err = 0;
	size_t i;

	store_tree_none(tree, ntree);

	err = store_check_changes(&q->sb, changes, n, NULL);
	if (err || n == 0)
		return err;
	u64map_init(&plan.live);
	u64map_init(&plan.parents);
	u64map_init(&plan.seen);
	plan.steps = calloc(n, sizeof(*plan.steps));
	if (!plan.steps) {
		err = -ENOMEM;
		goto out_release;
	}

	pthread_mutex_lock(&q->write_lock);
	w = q->writer;
	err = lsq_run(q, w->db, w->stmt[W_BEGIN], "begin a batch");
	if (err)
		goto out_unlock;

	err = lsq_plan_make(q, &plan);
	if (!err && q->base.strict && (plan.nvictims || lsq_plan_drops(&plan)))
		err = -EEXIST; /* store.h: no races resolved */
	if (err)
		goto out_rollback;
	/* the directories whose Merkle hash the batch touches: each change's
	 * old parent, new parent and, for a directory, itself; each
	 * victim's parent */
	seeds = reallocarray(NULL, 3 * n + plan.nvictims, sizeof(*seeds));
	if (!seeds) {
		err = -ENOMEM;
		goto out_rollback;
	}

	/* Pass 1: remove every row the batch changes, and the victims. */
	for (i = 0; i < n; i++) {
		const struct change *ch = changes[i];

		if (plan.steps[i].dropped)
			continue;
		err = lsq_delete_entry(q, ch->ino, seeds, &nseeds);
		if (!err && ch->deleted)
			err = lsq_run_ino(q, W_DEL_CONTENT, ch->ino,
					  "delete content");
		if (err)
			goto out_rollback;
	}
	for (i = 0; i < plan.nvictims; i++) {
		uint64_t ino = plan.victims[i].ino;

		err = lsq_delete_entry(q, ino, seeds, &nseeds);
		if (!err)
			err = lsq_run_ino(q, W_DEL_CONTENT, ino,
					  "delete content");
		if (err)
			goto out_rollback;
	}

	/* Pass 2: write the new rows and content. */
	for (i = 0; i < n; i++) {
		const struct change *ch = changes[i];

		if (ch->deleted || plan.steps[i].dropped)
			continue;
		err = lsq_write_entry(q, ch, plan.steps[i].version);
		if (err)
			goto out_rollback;
		seeds[nseeds++] = ch->parent;
		if (ch->meta.kind == ITEM_DIR)
			seeds[nseeds++] = ch->ino; /* its merkle was reset */
	}

	/* Pass 3: the feed. */
	err = lsq_feed_write(q, &plan);
	if (err)
		goto out_rollback;

	/* Pass 4: the Merkle hashes, in the same transaction. */
	err = lsq_merkle_update(q, seeds, nseeds, tree ? &report : NULL,
				&nreport);
	if (err)
		goto out_rollback;

	err = lsq_run(q, w->db, w->stmt[W_COMMIT], "commit a batch");
	if (err)
		goto out_rollback;
	lsq_plan_report(q, &plan);
	if (tree) {
		*tree = report;
		*ntree = nreport;
		report = NULL;
	}
	goto out_unlock;

out_rollback:
	lsq_rollback(q);
out_unlock:
	pthread_mutex_unlock(&q->write_lock);
out_release:
	lsq_plan_release(&plan);
	free(report);
	free(seeds);
	return err;
}
