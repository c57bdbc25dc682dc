/*
 * l3_pg_apply.c - apply() of the PostgreSQL store: a batch of changes as
 * one transaction, run again when it meets a concurrent one.
 *
 * apply() runs one transaction:
 *     BEGIN ISOLATION LEVEL REPEATABLE READ;
 *     SELECT pg_advisory_xact_lock_shared(LPG_LOCK_CLASS, LPG_LOCK_WRITE)
 *     DELETE FROM entries  WHERE ino = ANY($1)   every changed ino
 *             RETURNING parent                   (distinct: old parents)
 *     DELETE FROM contents WHERE ino = ANY($1)   every deleted ino
 *     INSERT INTO entries SELECT * FROM unnest($1, ..., $16)   new rows
 *     INSERT INTO contents SELECT * FROM unnest($1, $2)
 *             ON CONFLICT (ino) DO UPDATE SET data = EXCLUDED.data
 *     WITH RECURSIVE up ... SELECT ino, level   (S_TOUCHED)
 *     UPDATE entries AS d SET merkle = ... WHERE d.ino = ANY($1)
 *             RETURNING ino, merkle          (S_MERKLE, once per level)
 *     COMMIT
 * each with up to LPG_CHUNK_ROWS rows (and about LPG_CHUNK_BYTES bytes) per
 * statement; content larger than LPG_BIG_CONTENT goes in a statement of its
 * own, passed without a copy. Two changes that write one ino are refused
 * with -EEXIST before anything is sent, as SQLite's primary key would. A
 * failed statement rolls the transaction back.
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
 * default) with 40P01, and it runs again the same way. A batch that writes a
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

/* Deletes the rows (from S_DEL_ENTRIES or S_DEL_CONTENTS) of the inos of
 * @changes, of the deleted ones only when @deleted_only. S_DEL_ENTRIES adds
 * the parents of the deleted rows to @parents. */
static int lpg_delete_rows(const struct lpg *q, struct lpg_conn *c,
			   enum lpg_stmt which, struct change *const *changes,
			   size_t n, bool deleted_only, struct lpg_arr *a,
			   struct lpg_inos *parents)
{
	size_t i = 0;
	int err;

	while (i < n) {
		const char *values[1];
		int lengths[1];
		PGresult *res = NULL;

		lpg_arr_start(a, LPG_INT8OID);
		for (; i < n && a->n < LPG_CHUNK_ROWS; i++)
			if (!deleted_only || changes[i]->deleted)
				lpg_arr_i64(a, (int64_t)changes[i]->ino);
		if (a->n == 0)
			break;
		err = lpg_arr_finish(a, &values[0], &lengths[0]);
		if (err)
			return err;
		err = lpg_exec(q, c, which, values, lengths,
			       parents ? &res : NULL,
			       which == S_DEL_ENTRIES ? "delete entries"
						      : "delete content");
		if (err)
			return err;
		for (int r = 0; parents && r < PQntuples(res); r++) {
			const char *p;

			if (lpg_field(res, r, 0, 8, &p))
				lpg_inos_add(parents, (uint64_t)lpg_get64(p));
		}
		PQclear(res);
		res = NULL;
	}
	return 0;
}

static void lpg_entry_append(struct lpg_arr *a, const struct change *ch)
{
	struct store_cols r =
		store_cols_of(ch->ino, ch->parent, ch->name, &ch->meta);

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

/* Writes the new rows of every change that is not a delete. */
static int lpg_insert_entries(const struct lpg *q, struct lpg_conn *c,
			      struct change *const *changes, size_t n,
			      struct lpg_arr *a)
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
			lpg_entry_append(a, changes[i]);
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

/* Runs one batch as one transaction on @c, optimistic or under the
 * @exclusive write lock (see the top of this file), with its Merkle step;
 * rolls back on failure. On success @tree (when given) holds the hashes of
 * the directories recomputed; on failure it is left empty. */
static int lpg_apply_once(const struct lpg *q, struct lpg_conn *c,
			  struct change *const *changes, size_t n,
			  struct lpg_arr *a, bool exclusive,
			  struct lpg_tree *tree)
{
	struct lpg_inos touched = {0};
	PGresult *res = NULL;
	char sql[128];
	int err;

	snprintf(sql, sizeof(sql),
		 exclusive ? "BEGIN; SELECT pg_advisory_xact_lock(%d, %d)"
			   : "BEGIN ISOLATION LEVEL REPEATABLE READ;"
			     " SELECT pg_advisory_xact_lock_shared(%d, %d)",
		 LPG_LOCK_CLASS, LPG_LOCK_WRITE);
	err = lpg_simple(q, c, sql, NULL, "begin a batch");
	if (err)
		goto out_rollback;
	/* Pass 1: remove every changed row, so that final states never
	 * collide with the states they replace (renames, swaps). */
	err = lpg_delete_rows(q, c, S_DEL_ENTRIES, changes, n, false, a,
			      &touched);
	if (!err)
		err = lpg_delete_rows(q, c, S_DEL_CONTENTS, changes, n, true, a,
				      NULL);
	/* Pass 2: write the new rows and content. */
	if (!err)
		err = lpg_insert_entries(q, c, changes, n, a);
	if (!err)
		err = lpg_put_contents(q, c, changes, n, a);
	/* Pass 3: the Merkle hashes of the directories touched, bottom-up. */
	if (!err)
		err = lpg_merkle_apply(q, c, changes, n, &touched, a, tree);
	lpg_inos_release(&touched);
	if (!err)
		err = lpg_simple(q, c, "COMMIT", &res, "commit a batch");
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

/* A batch, for lpg_apply_run(). */
struct lpg_batch {
	struct change *const *changes;
	size_t n;
	struct lpg_arr *a;
	struct lpg_tree *tree;
};

/* One run of a batch (store_run()): optimistic until it met
 * LPG_OPTIMISTIC_TRIES conflicts, then under the exclusive write lock. */
static int lpg_apply_run(void *be, struct pool_conn *c, void *arg,
			 const struct store_run_state *st)
{
	const struct lpg_batch *b = arg;

	return lpg_apply_once(be, (struct lpg_conn *)c, b->changes, b->n, b->a,
			      st->conflicts >= LPG_OPTIMISTIC_TRIES, b->tree);
}

int lpg_apply(struct store *s, struct change *const *changes, size_t n,
	      struct store_dirhash **tree, size_t *ntree)
{
	struct lpg *q = lpg_of(s);
	struct lpg_arr a[E_N];
	struct lpg_tree t = {0};
	struct lpg_batch b = {changes, n, a, tree ? &t : NULL};
	int err;

	store_tree_none(tree, ntree);

	err = store_check_changes(&q->sb, changes, n, lpg_limits);
	if (err || n == 0)
		return err;
	err = lpg_check_duplicates(q, changes, n);
	if (err)
		return err;

	memset(a, 0, sizeof(a));
	err = store_run(q, &lpg_run_ops, LPG_APPLY_TRIES, lpg_apply_run, &b);
	for (int k = 0; k < E_N; k++)
		lpg_arr_release(&a[k]);
	if (!err && tree && t.n) {
		*tree = t.v;
		*ntree = t.n;
	} else {
		lpg_tree_release(&t);
	}
	return err;
}
