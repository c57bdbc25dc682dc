/*
 * l3_pg_apply.c - apply() of the PostgreSQL store: a batch of changes as
 * one transaction, run again when it meets a concurrent one.
 *
 * apply() runs one transaction:
 *     BEGIN ISOLATION LEVEL REPEATABLE READ;
 *     SELECT pg_advisory_xact_lock_shared(LPG_LOCK_CLASS, LPG_LOCK_WRITE)
 *     S_BUSY_DIRS, S_HOLDERS,   the namespace races (l3_pg_race.c): which
 *     S_CYCLES                  changes are dropped, which entries replaced
 *     DELETE FROM entries  WHERE ino = ANY($1)   every changed ino and
 *             RETURNING ino, parent, version     every replaced one
 *     DELETE FROM contents WHERE ino = ANY($1)   deleted and replaced inos
 *     INSERT INTO entries SELECT * FROM unnest($1, ..., $16)   new rows
 *     INSERT INTO contents SELECT * FROM unnest($1, $2)
 *             ON CONFLICT (ino) DO UPDATE SET data = EXCLUDED.data
 *     WITH RECURSIVE up ... SELECT ino, level   (S_TOUCHED)
 *     UPDATE entries AS d SET merkle = ... WHERE d.ino = ANY($1)
 *             RETURNING ino, merkle          (S_MERKLE, once per level)
 *     UPDATE feed_head ...; INSERT INTO feed ...   (S_FEED_ADD, and
 *             S_FEED_TRIM when due: l3_pg_feed.c)
 *     NOTIFY tierfs_feed; COMMIT
 * each with up to LPG_CHUNK_ROWS rows (and about LPG_CHUNK_BYTES bytes) per
 * statement; content larger than LPG_BIG_CONTENT goes in a statement of its
 * own, passed without a copy. Two changes that write one ino, or one name,
 * are refused with -EEXIST before anything is sent, as SQLite's primary
 * key and unique indexes would. A failed statement rolls the transaction
 * back.
 *
 * Versions are assigned here, at commit (see "Sharing" in store.h): the
 * DELETE returns the stored version of each changed row, and the row
 * written gets max(its own, stored + 1) when the change carries content,
 * max(its own, stored) when not, its own (at least 1) when new, and in
 * every case at least the version + 1 of an entry it replaces.
 *
 * Concurrent batches (other threads, other mounts) must behave as if run
 * one after the other, as under SQLite's single writer. Under READ
 * COMMITTED they would not: a DELETE that waits for a concurrent writer of
 * the same ino skips the row that writer inserts, so a delete is lost or
 * the INSERT collides on the primary key. Under REPEATABLE READ such a
 * transaction fails instead (40001, or 23505 on a primary key, which after
 * the duplicate check only a race can cause): lpg_errno() marks it a
 * conflict and apply() runs the batch again with a fresh snapshot. So that
 * two writers that keep hitting the same rows cannot starve each other, a
 * batch that met LPG_OPTIMISTIC_TRIES conflicts runs next in READ COMMITTED
 * under the exclusive form of the write lock: it waits for the batches in
 * flight, keeps new ones out, and its statements see everything committed
 * before, so it cannot conflict with another tierfs writer. At most
 * LPG_APPLY_TRIES runs, then -EAGAIN.
 *
 * The Merkle step stays correct under this: every batch that changes what a
 * directory's hash reads (its children's rows, a child directory's merkle)
 * also UPDATEs that directory's row, so two batches that would hash one
 * directory from different snapshots write the same row, and the later one
 * fails with 40001 and runs again on a snapshot that holds the other's
 * hashes. What it costs: every batch updates the root's row, so any two
 * batches that overlap in time conflict (in tierfs, batches of different
 * mounts: a mount applies one at a time), even when they touch different
 * rows: they no longer commit in parallel. The second waits on the root's
 * row lock until the first commits, throws its run away (its DELETE, INSERT
 * and rehashing) and runs again; one that keeps losing takes the exclusive
 * lock on its third run. Measured with 4 writers on 2 stores, each in its
 * own directory, 100 batches of 10 creates each: 118 ms before the Merkle
 * step, 773 ms with it (547 ms when every batch takes the exclusive lock at
 * once). Writers that lock shared directories in different orders can also
 * deadlock; the server then cancels one after deadlock_timeout (1 s by
 * default) with 40P01, and it runs again the same way.
 *
 * Namespace races under this. Names are checked on the snapshot
 * (l3_pg_race.c); what a snapshot cannot show is a row another writer
 * commits after it was taken. Two writers that create one name at once:
 * the second INSERT waits on the first's uncommitted index entry, and once
 * the first commits fails with 23505 on entries_parent_name (or _stem):
 * lpg_errno() calls that a conflict too (a batch never collides with
 * itself, and a name the snapshot shows held is replaced or dropped before
 * the INSERT), so the batch runs again on a snapshot that holds the
 * other's row, and replaces it. A writer that puts a child into a
 * directory another deletes or replaces updates that directory's row (its
 * Merkle hash), so one of the two fails with 40001 and runs again, and
 * then sees the child. The run under the exclusive write lock, in READ
 * COMMITTED, has no concurrent tierfs writer: every statement sees all
 * that is committed. The feed adds one more row that every batch updates
 * (feed_head): it changes nothing in this, as batches already commit one
 * at a time at the root's row (l3_pg_feed.c). A batch that writes a
 * row into a directory its snapshot cannot see (created by a batch that
 * commits meanwhile) would skip that directory; the engine never sends one
 * before the batch that creates the directory has committed.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "l3_pg_int.h"

/* What a change may not hold here, beyond the store.h contract (see
 * store_check_changes()). */
static const char *lpg_limits(const struct change *ch)
{
	return ch->item && item_size(ch->item) > INT32_MAX ? "content too large"
							   : NULL;
}

/* -EEXIST when two changes of @changes write the same ino (SQLite's primary
 * key refuses the second), 0 when none do. */
static int lpg_check_duplicates(const struct lpg *q,
				struct change *const *changes, size_t n)
{
	uint64_t *inos = malloc(n * sizeof(*inos));
	size_t m = 0;
	int err = 0;

	if (!inos)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		if (!changes[i]->deleted)
			inos[m++] = changes[i]->ino;
	qsort(inos, m, sizeof(*inos), lpg_cmp_u64);
	for (size_t i = 1; i < m; i++) {
		if (inos[i] == inos[i - 1]) {
			eng_logf(&q->base.log, LOG_DEBUG,
				 "postgres '%s': cannot apply a batch: inode "
				 "%llu is written twice",
				 q->target, (unsigned long long)inos[i]);
			err = -EEXIST;
			break;
		}
	}
	free(inos);
	return err;
}

/* An entry's row as S_DEL_ENTRIES deleted it: its version and content
 * hash (zero when none). */
struct lpg_old {
	uint64_t ino;
	uint64_t version;
	uint8_t hash[ITEM_HASH_LEN];
};

/* The rows S_DEL_ENTRIES deleted, sorted by ino once all are in. */
struct lpg_olds {
	struct lpg_old *v;
	size_t n, cap;
};

static int lpg_cmp_old(const void *a, const void *b)
{
	const struct lpg_old *x = a, *y = b;

	return x->ino < y->ino ? -1 : x->ino > y->ino;
}

static int lpg_olds_add(struct lpg_olds *o, uint64_t ino, uint64_t version,
			const char *hash)
{
	if (o->n == o->cap) {
		size_t cap = o->cap ? o->cap * 2 : 64;
		struct lpg_old *v = realloc(o->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		o->v = v;
		o->cap = cap;
	}
	o->v[o->n] = (struct lpg_old){.ino = ino, .version = version};
	if (hash)
		memcpy(o->v[o->n].hash, hash, ITEM_HASH_LEN);
	o->n++;
	return 0;
}

/* The stored version of @ino before the batch, or NULL when it had no
 * row. */
static const struct lpg_old *lpg_olds_find(const struct lpg_olds *o,
					   uint64_t ino)
{
	struct lpg_old key = {.ino = ino};

	return o->n ? bsearch(&key, o->v, o->n, sizeof(*o->v), lpg_cmp_old)
		    : NULL;
}

/* Deletes the rows (S_DEL_ENTRIES or S_DEL_CONTENTS) of the @n inos
 * @inos. S_DEL_ENTRIES adds the parents of the deleted rows to @parents
 * and their versions to @olds. */
static int lpg_delete_rows(const struct lpg *q, struct lpg_conn *c,
			   enum lpg_stmt which, const uint64_t *inos, size_t n,
			   struct lpg_arr *a, struct lpg_inos *parents,
			   struct lpg_olds *olds)
{
	size_t i = 0;
	int err;

	while (i < n) {
		const char *values[1];
		int lengths[1];
		PGresult *res = NULL;

		lpg_arr_start(a, LPG_INT8OID);
		for (; i < n && a->n < LPG_CHUNK_ROWS; i++)
			lpg_arr_i64(a, (int64_t)inos[i]);
		err = lpg_arr_finish(a, &values[0], &lengths[0]);
		if (err)
			return err;
		err = lpg_exec(q, c, which, values, lengths,
			       parents ? &res : NULL,
			       which == S_DEL_ENTRIES ? "delete entries"
						      : "delete content");
		if (err)
			return err;
		for (int r = 0; parents && r < PQntuples(res) && !err; r++) {
			const char *pi, *pp, *pv, *ph = NULL;

			if (!lpg_field(res, r, 0, 8, &pi) ||
			    !lpg_field(res, r, 1, 8, &pp) ||
			    !lpg_field(res, r, 2, 8, &pv) ||
			    (!lpg_field(res, r, 3, ITEM_HASH_LEN, &ph) &&
			     !PQgetisnull(res, r, 3))) {
				err = store_corrupt(&q->sb, 0,
						    "bad deleted row");
				break;
			}
			lpg_inos_add(parents, (uint64_t)lpg_get64(pp));
			err = lpg_olds_add(olds, (uint64_t)lpg_get64(pi),
					   (uint64_t)lpg_get64(pv), ph);
		}
		PQclear(res);
		if (err)
			return err;
	}
	if (olds && olds->n > 1)
		qsort(olds->v, olds->n, sizeof(*olds->v), lpg_cmp_old);
	return 0;
}

/*
 * The version a change's row gets (see "Sharing" in store.h): with
 * content, above the stored one; without, at least the stored one; a new
 * row keeps its own, at least 1; and at least @floor, which is above the
 * version of an entry it replaces. Content that is what the row already
 * holds (its version the stored one, its hash the stored hash, not zero)
 * is not new: a batch applied again after a commit whose answer was lost
 * leaves the versions as they are, so applying a change twice stays
 * harmless.
 */
static uint64_t lpg_version(const struct change *ch, const struct lpg_old *old,
			    uint64_t floor)
{
	uint64_t v = ch->meta.version ? ch->meta.version : 1;
	bool replay = old && ch->item && old->version == v &&
		      !item_hash_is_zero(old->hash) &&
		      memcmp(old->hash, ch->meta.hash, ITEM_HASH_LEN) == 0;

	if (old && ch->item && !replay && old->version + 1 > v)
		v = old->version + 1;
	else if (old && old->version > v)
		v = old->version;
	if (floor > v)
		v = floor;
	return v > INT64_MAX ? INT64_MAX : v;
}

static void lpg_entry_append(struct lpg_arr *a, const struct change *ch,
			     uint64_t version)
{
	struct store_cols r =
		store_cols_of(ch->ino, ch->parent, ch->name, &ch->meta);

	r.version = version;

	lpg_arr_i64(&a[E_INO], (int64_t)r.ino);
	lpg_arr_i64(&a[E_PARENT], (int64_t)r.parent);
	lpg_arr_bytes(&a[E_NAME], r.name, r.name_len);
	lpg_arr_opt(&a[E_STEM], r.stem, r.stem_len);
	lpg_arr_i16(&a[E_KIND], (int16_t)r.kind);
	lpg_arr_i64(&a[E_SIZE], (int64_t)r.size);
	lpg_arr_opt(&a[E_HASH], r.hash, r.hash_len);
	lpg_arr_i64(&a[E_VERSION], (int64_t)r.version);
	lpg_arr_i64(&a[E_MTIME], r.mtime_ns);
	lpg_arr_i64(&a[E_CTIME], r.ctime_ns);
	lpg_arr_i32(&a[E_MODE], (int32_t)r.mode);
	lpg_arr_i64(&a[E_UID], r.uid);
	lpg_arr_i64(&a[E_GID], r.gid);
	lpg_arr_bool(&a[E_EXPLICIT], r.explicit_dir);
	lpg_arr_opt(&a[E_STATE], r.state, r.state_len);
	lpg_arr_opt(&a[E_XATTRS], r.xattrs, r.xattrs_len);
	lpg_arr_i64(&a[E_ATIME], r.atime_ns);
}

static const Oid lpg_entry_elem[E_N] = {
	[E_INO] = LPG_INT8OID,	 [E_PARENT] = LPG_INT8OID,
	[E_NAME] = LPG_BYTEAOID, [E_STEM] = LPG_BYTEAOID,
	[E_KIND] = LPG_INT2OID,	 [E_SIZE] = LPG_INT8OID,
	[E_HASH] = LPG_BYTEAOID, [E_VERSION] = LPG_INT8OID,
	[E_MTIME] = LPG_INT8OID, [E_CTIME] = LPG_INT8OID,
	[E_MODE] = LPG_INT4OID,	 [E_UID] = LPG_INT8OID,
	[E_GID] = LPG_INT8OID,	 [E_EXPLICIT] = LPG_BOOLOID,
	[E_STATE] = LPG_TEXTOID, [E_XATTRS] = LPG_BYTEAOID,
	[E_ATIME] = LPG_INT8OID,
};

/* Runs S_INS_ENTRIES on the arrays @a once they are finished. */
static int lpg_insert_chunk(const struct lpg *q, struct lpg_conn *c,
			    struct lpg_arr *a)
{
	const char *values[E_N];
	int lengths[E_N];
	int err;

	for (int k = 0; k < E_N; k++) {
		err = lpg_arr_finish(&a[k], &values[k], &lengths[k]);
		if (err)
			return err;
	}
	return lpg_exec(q, c, S_INS_ENTRIES, values, lengths, NULL,
			"write entries");
}

/* Writes the new rows of every change that is not a delete, with the
 * versions lpg_version() gives from @olds and @floor (by change). */
static int lpg_insert_entries(const struct lpg *q, struct lpg_conn *c,
			      struct change *const *changes, size_t n,
			      const struct lpg_olds *olds,
			      const uint64_t *floor, struct lpg_arr *a)
{
	size_t i = 0, bytes;
	int err;

	while (i < n) {
		for (int k = 0; k < E_N; k++)
			lpg_arr_start(&a[k], lpg_entry_elem[k]);
		bytes = 0;
		for (; i < n && a[E_INO].n < LPG_CHUNK_ROWS &&
		       bytes < LPG_CHUNK_BYTES;
		     i++) {
			if (changes[i]->deleted)
				continue;
			lpg_entry_append(
				a, changes[i],
				lpg_version(
					changes[i],
					lpg_olds_find(olds, changes[i]->ino),
					floor[i]));
			bytes += 64 + strlen(changes[i]->name) +
				 changes[i]->meta.xattrs_len;
		}
		if (a[E_INO].n == 0)
			break;
		err = lpg_insert_chunk(q, c, a);
		if (err)
			return err;
	}
	return 0;
}

/* Writes the content of every change that has data: small ones in arrays
 * through S_PUT_CONTENTS, big ones one by one through S_PUT_CONTENT. */
static int lpg_put_contents(const struct lpg *q, struct lpg_conn *c,
			    struct change *const *changes, size_t n,
			    struct lpg_arr *a)
{
	const char *values[2];
	int lengths[2];
	size_t i = 0;
	int err;

	while (i < n) {
		lpg_arr_start(&a[0], LPG_INT8OID);
		lpg_arr_start(&a[1], LPG_BYTEAOID);
		for (; i < n && a[0].n < LPG_CHUNK_ROWS &&
		       a[1].len < LPG_CHUNK_BYTES;
		     i++) {
			const struct change *ch = changes[i];
			size_t len;
			char b_ino[8];

			if (ch->deleted || !ch->item)
				continue;
			len = item_size(ch->item);
			if (len <= LPG_BIG_CONTENT) {
				lpg_arr_i64(&a[0], (int64_t)ch->ino);
				lpg_arr_bytes(&a[1],
					      len ? item_data(ch->item) : "",
					      len);
				continue;
			}
			lpg_put64(b_ino, (int64_t)ch->ino);
			values[0] = b_ino;
			lengths[0] = 8;
			values[1] = item_data(ch->item);
			lengths[1] = (int)len;
			err = lpg_exec(q, c, S_PUT_CONTENT, values, lengths,
				       NULL, "write content");
			if (err)
				return err;
		}
		if (a[0].n == 0)
			continue; /* only big ones, or none, so far */
		err = lpg_arr_finish(&a[0], &values[0], &lengths[0]);
		if (!err)
			err = lpg_arr_finish(&a[1], &values[1], &lengths[1]);
		if (err)
			return err;
		err = lpg_exec(q, c, S_PUT_CONTENTS, values, lengths, NULL,
			       "write content");
		if (err)
			return err;
	}
	return 0;
}

/* A batch, for lpg_apply_run(), with what a run makes of it: the plan
 * (dropped changes, replaced entries), the changes it applies (@kept, with
 * their version floors) and what goes in the feed. */
struct lpg_batch {
	struct change *const *changes;
	size_t n;
	struct lpg_arr *a; /* E_N arrays */
	struct lpg_tree *tree;
	struct lpg_plan plan;
	struct change **kept;
	uint64_t *kfloor;
	size_t nkept;
	uint64_t *inos; /* rows to delete, then the feed's inos */
	bool trimmed;	/* the last run trimmed the feed */
};

/* Fills b->kept from the plan; b->inos with the inos whose rows go
 * (@content_only: only those whose content goes too: deletions and
 * replaced entries); returns how many. */
static size_t lpg_doomed(struct lpg_batch *b, bool content_only)
{
	size_t m = 0;

	b->nkept = 0;
	for (size_t i = 0; i < b->n; i++) {
		if (b->plan.dropped[i])
			continue;
		b->kept[b->nkept] = b->changes[i];
		b->kfloor[b->nkept++] = b->plan.floor[i];
		if (!content_only || b->changes[i]->deleted)
			b->inos[m++] = b->changes[i]->ino;
	}
	for (size_t i = 0; i < b->plan.replaced.n; i++)
		b->inos[m++] = b->plan.replaced.v[i];
	return m;
}

/* Fills b->inos with what the feed records, in order: the replaced
 * entries (deleted), then every change of the batch, dropped ones too (a
 * reader then fetches the entry as it stands); returns how many. */
static size_t lpg_feed_inos(struct lpg_batch *b)
{
	size_t m = 0;

	for (size_t i = 0; i < b->plan.replaced.n; i++)
		b->inos[m++] = b->plan.replaced.v[i];
	for (size_t i = 0; i < b->n; i++)
		b->inos[m++] = b->changes[i]->ino;
	return m;
}

/* Runs one batch as one transaction on @c, optimistic or under the
 * @exclusive write lock (see the top of this file): its namespace races,
 * rows, Merkle step and feed records; rolls back on failure. On success
 * b->tree (when given) holds the hashes of the directories recomputed; on
 * failure it is left empty. */
static int lpg_apply_once(const struct lpg *q, struct lpg_conn *c,
			  struct lpg_batch *b, bool exclusive)
{
	struct lpg_inos touched = {0};
	struct lpg_olds olds = {0};
	struct lpg_tree *tree = b->tree;
	struct lpg_arr *a = b->a;
	PGresult *res = NULL;
	char sql[128];
	size_t m;
	int err;

	b->trimmed = false;
	snprintf(sql, sizeof(sql),
		 exclusive ? "BEGIN; SELECT pg_advisory_xact_lock(%d, %d)"
			   : "BEGIN ISOLATION LEVEL REPEATABLE READ;"
			     " SELECT pg_advisory_xact_lock_shared(%d, %d)",
		 LPG_LOCK_CLASS, LPG_LOCK_WRITE);
	err = lpg_simple(q, c, sql, NULL, "begin a batch");
	if (err)
		goto out_rollback;
	/* Pass 0: the namespace races, decided on what is committed. */
	err = lpg_plan_races(q, c, b->changes, b->n, a, &b->plan);
	if (!err && q->base.strict &&
	    (b->plan.ndropped || b->plan.replaced.n))
		err = -EEXIST; /* store.h: no races resolved */
	/* Pass 1: remove every changed row and every replaced one, so that
	 * final states never collide with the states they replace (renames,
	 * swaps). */
	if (!err) {
		m = lpg_doomed(b, false);
		err = lpg_delete_rows(q, c, S_DEL_ENTRIES, b->inos, m, a,
				      &touched, &olds);
	}
	if (!err) {
		m = lpg_doomed(b, true);
		err = lpg_delete_rows(q, c, S_DEL_CONTENTS, b->inos, m, a, NULL,
				      NULL);
	}
	/* Pass 2: write the new rows and content. */
	if (!err)
		err = lpg_insert_entries(q, c, b->kept, b->nkept, &olds,
					 b->kfloor, a);
	if (!err)
		err = lpg_put_contents(q, c, b->kept, b->nkept, a);
	/* Pass 3: the Merkle hashes of the directories touched, bottom-up. */
	if (!err)
		err = lpg_merkle_apply(q, c, b->kept, b->nkept, &touched, a,
				       tree);
	lpg_inos_release(&touched);
	free(olds.v);
	/* Pass 4: the feed, last: its row lock is held until COMMIT. */
	if (!err)
		err = lpg_feed_add(q, c, b->inos, lpg_feed_inos(b), a,
				   &b->trimmed);
	if (!err)
		err = lpg_simple(q, c, "NOTIFY " LPG_FEED_CHANNEL "; COMMIT",
				 &res, "commit a batch");
	if (!err) {
		/* COMMIT of a failed transaction answers ROLLBACK */
		if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
			eng_logf(&q->base.log, LOG_ERR,
				 "postgres '%s': cannot commit a batch: "
				 "the transaction was rolled back",
				 q->target);
			err = -EIO;
		}
		PQclear(res);
		if (err && tree)
			lpg_tree_release(tree);
		return err;
	}
out_rollback:
	if (!c->broken && PQtransactionStatus(c->pg) != PQTRANS_IDLE)
		lpg_simple(q, c, "ROLLBACK", NULL, "roll back");
	if (tree)
		lpg_tree_release(tree);
	return err;
}

/* One run of a batch (store_run()): optimistic until it met
 * LPG_OPTIMISTIC_TRIES conflicts, then under the exclusive write lock. */
static int lpg_apply_run(void *be, struct pool_conn *c, void *arg,
			 const struct store_run_state *st)
{
	return lpg_apply_once(be, (struct lpg_conn *)c, arg,
			      st->conflicts >= LPG_OPTIMISTIC_TRIES);
}

int lpg_apply(struct store *s, struct change *const *changes, size_t n,
	      struct store_dirhash **tree, size_t *ntree)
{
	struct lpg *q = lpg_of(s);
	struct lpg_arr a[E_N];
	struct lpg_tree t = {0};
	struct lpg_batch b = {
		.changes = changes, .n = n, .a = a, .tree = tree ? &t : NULL};
	int err;

	store_tree_none(tree, ntree);

	err = store_check_changes(&q->sb, changes, n, lpg_limits);
	if (err || n == 0)
		return err;
	err = lpg_check_duplicates(q, changes, n);
	if (!err)
		err = lpg_check_names(q, changes, n);
	if (err)
		return err;

	memset(a, 0, sizeof(a));
	err = lpg_plan_init(&b.plan, n);
	if (err)
		return err;
	b.kept = malloc(n * sizeof(*b.kept));
	b.kfloor = malloc(n * sizeof(*b.kfloor));
	/* rows to delete, and feed records: at most 3n (each change, and
	 * two entries it replaces: one by name, one by stem) */
	b.inos = malloc(3 * n * sizeof(*b.inos));
	if (b.kept && b.kfloor && b.inos)
		err = store_run(q, &lpg_run_ops, LPG_APPLY_TRIES, lpg_apply_run,
				&b);
	else
		err = -ENOMEM;
	if (!err) {
		lpg_plan_report(q, changes, n, &b.plan);
		if (b.trimmed)
			lpg_feed_trimmed(q);
	}
	for (int k = 0; k < E_N; k++)
		lpg_arr_release(&a[k]);
	lpg_plan_release(&b.plan);
	free(b.kept);
	free(b.kfloor);
	free(b.inos);
	if (!err && tree && t.n) {
		*tree = t.v;
		*ntree = t.n;
	} else {
		lpg_tree_release(&t);
	}
	return err;
}
