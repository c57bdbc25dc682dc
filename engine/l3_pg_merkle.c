/*
 * l3_pg_merkle.c - the Merkle hashes of the PostgreSQL store's directories:
 * apply()'s Merkle step, and the recomputation by levels that it shares
 * with the migration to schema version 2.
 *
 * Merkle hashes (merkle.h). A directory's merkle column holds its subtree's
 * hash; a file's Merkle hash is its content hash, the hash column, so files
 * leave merkle NULL. get(), lookup(), list() and fetch() report one or the
 * other as store_row.merkle (all zero when NULL: a file without a hash, or
 * a directory no batch has touched in a corrupt tree). The server computes
 * a directory's hash from its children's rows with its own sha256() and an
 * ordered string_agg() (LPG_MERKLE_OF_D: merkle.h's definition in SQL), so
 * no child row crosses the network; a file whose hash is NULL counts as 32
 * zero bytes, as store_row reports it. The root of an empty tree has
 * sha256 of no bytes.
 *
 * The Merkle step. The directories a batch touches are the old parents of
 * its changed and deleted rows (as the DELETE removes them), the new parents
 * of the rows it writes and the directories it writes (a rewritten row has
 * no merkle yet). S_TOUCHED keeps those that still exist, adds all their
 * ancestors with one recursive walk up, and gives each the length of the
 * longest walk that reached it, its level: a directory is above all its
 * descendants in the set. S_MERKLE then recomputes one level at a time,
 * lowest first, so each directory hashes children that are already up to
 * date; the RETURNING rows are apply()'s report, the root put last. That is
 * 1 + (levels) statements: a batch in one directory at depth k adds k + 2
 * (at depth 3, 0.7 ms a batch over loopback). The work is O(children) per
 * directory touched: the hash of a directory is one SHA-256 over all its
 * children, so adding one file to a directory of 110,000 rehashes them all
 * (about 55 ms on PostgreSQL 15, half of it sorting: its ordered aggregates
 * sort even when the index could give the order). A walk up that does not
 * end (parents that form a cycle: a corrupt tree) stops after LPG_MAX_DEPTH
 * steps and fails the batch with -EIO.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "l3_pg_int.h"

int lpg_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

void lpg_inos_add(struct lpg_inos *s, uint64_t ino)
{
	if (s->oom)
		return;
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		uint64_t *v = realloc(s->v, cap * sizeof(*v));

		if (!v) {
			s->oom = true;
			return;
		}
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n++] = ino;
}

/* Sorts and deduplicates @s; -ENOMEM when an add failed. */
int lpg_inos_finish(struct lpg_inos *s)
{
	size_t m = 0;

	if (s->oom)
		return -ENOMEM;
	if (s->n)
		qsort(s->v, s->n, sizeof(*s->v), lpg_cmp_u64);
	for (size_t i = 0; i < s->n; i++)
		if (m == 0 || s->v[i] != s->v[m - 1])
			s->v[m++] = s->v[i];
	s->n = m;
	return 0;
}

void lpg_inos_release(struct lpg_inos *s)
{
	free(s->v);
	memset(s, 0, sizeof(*s));
}

static int lpg_tree_add(struct lpg_tree *t, uint64_t ino, const char *hash)
{
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		struct store_dirhash *v = realloc(t->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		t->v = v;
		t->cap = cap;
	}
	t->v[t->n].ino = ino;
	memcpy(t->v[t->n].merkle, hash, ITEM_HASH_LEN);
	t->n++;
	return 0;
}

void lpg_tree_release(struct lpg_tree *t)
{
	free(t->v);
	memset(t, 0, sizeof(*t));
}

/*
 * Recomputes, with S_MERKLE, the directories listed in @order: a result of
 * two int8 columns, ino and level, sorted by level so that a directory comes
 * after its descendants; one statement per level (per LPG_CHUNK_ROWS
 * directories of a level: those of one level are never each other's
 * ancestors). Appends each directory's new hash to @tree when given and
 * adds the number recomputed to *count (may be NULL).
 */
int lpg_merkle_levels(const struct lpg *q, struct lpg_conn *c,
		      const PGresult *order, struct lpg_arr *a,
		      struct lpg_tree *tree, uint64_t *count)
{
	int rows = PQntuples(order), i = 0, err = 0;

	if (PQnfields(order) != 2)
		return store_corrupt(&q->sb, 0, "bad directory levels");
	while (i < rows && !err) {
		const char *values[1];
		int lengths[1];
		PGresult *res = NULL;
		const char *pi, *pl;
		int64_t level;

		if (!lpg_field(order, i, 1, 8, &pl))
			return store_corrupt(&q->sb, 0, "bad directory level");
		level = lpg_get64(pl);
		lpg_arr_start(a, LPG_INT8OID);
		for (; i < rows && a->n < LPG_CHUNK_ROWS; i++) {
			if (!lpg_field(order, i, 0, 8, &pi) ||
			    !lpg_field(order, i, 1, 8, &pl))
				return store_corrupt(&q->sb, 0,
						     "bad directory level");
			if (lpg_get64(pl) != level)
				break;
			lpg_arr_i64(a, lpg_get64(pi));
		}
		err = lpg_arr_finish(a, &values[0], &lengths[0]);
		if (err)
			return err;
		err = lpg_exec(q, c, S_MERKLE, values, lengths, &res,
			       "update merkle hashes");
		if (err)
			return err;
		for (int r = 0; r < PQntuples(res) && !err; r++) {
			const char *ino, *hash;

			if (!lpg_field(res, r, 0, 8, &ino) ||
			    !lpg_field(res, r, 1, ITEM_HASH_LEN, &hash))
				err = store_corrupt(&q->sb, 0,
						    "bad merkle hash");
			else if (tree)
				err = lpg_tree_add(
					tree, (uint64_t)lpg_get64(ino), hash);
		}
		if (count)
			*count += (uint64_t)PQntuples(res);
		PQclear(res);
	}
	return err;
}

/*
 * The Merkle step of apply(), inside its transaction, after the rows are
 * written: @touched holds the old parents of the changed rows (from
 * S_DEL_ENTRIES); adds the new parents and the directories written, finds
 * which of them exist and all their ancestors (S_TOUCHED), and recomputes
 * them bottom-up. Fills @tree (when given) with their new hashes, the root
 * last. -EIO when the parents form a cycle.
 */
int lpg_merkle_apply(const struct lpg *q, struct lpg_conn *c,
		     struct change *const *changes, size_t n,
		     struct lpg_inos *touched, struct lpg_arr *a,
		     struct lpg_tree *tree)
{
	char b_max[8];
	const char *values[2] = {NULL, b_max};
	int lengths[2] = {0, 8};
	PGresult *order = NULL;
	const char *p;
	int rows, err;

	for (size_t i = 0; i < n; i++) {
		if (changes[i]->deleted)
			continue;
		lpg_inos_add(touched, changes[i]->parent);
		if (changes[i]->meta.kind == ITEM_DIR)
			lpg_inos_add(touched, changes[i]->ino);
	}
	err = lpg_inos_finish(touched);
	if (err || touched->n == 0)
		return err;
	lpg_arr_start(a, LPG_INT8OID);
	for (size_t i = 0; i < touched->n; i++)
		lpg_arr_i64(a, (int64_t)touched->v[i]);
	err = lpg_arr_finish(a, &values[0], &lengths[0]);
	if (err)
		return err;
	lpg_put64(b_max, LPG_MAX_DEPTH);
	err = lpg_exec(q, c, S_TOUCHED, values, lengths, &order,
		       "find the directories to rehash");
	if (err)
		return err;
	rows = PQntuples(order);
	if (rows && lpg_field(order, rows - 1, 1, 8, &p) &&
	    lpg_get64(p) >= LPG_MAX_DEPTH) {
		eng_logf(&q->base.log, LOG_ERR,
			 "postgres '%s': cannot apply a batch: the parents of "
			 "a directory form a cycle",
			 q->target);
		err = -EIO;
	}
	if (!err)
		err = lpg_merkle_levels(q, c, order, a, tree, NULL);
	PQclear(order);
	if (err || !tree)
		return err;
	/* The root has the highest level, but a corrupt tree may hold a
	 * detached directory as high: put the root last. */
	for (size_t i = 0; i + 1 < tree->n; i++) {
		if (tree->v[i].ino == STORE_ROOT_INO) {
			struct store_dirhash root = tree->v[i];

			memmove(&tree->v[i], &tree->v[i + 1],
				(tree->n - i - 1) * sizeof(tree->v[0]));
			tree->v[tree->n - 1] = root;
			break;
		}
	}
	return 0;
}
