/*
 * l3_sqlite_merkle.c - the Merkle hashes of the SQLite store's directories:
 * apply()'s third pass, and the hash of one directory that the migration
 * and the creation of the root use too.
 *
 * Merkle hashes (merkle.h). A directory's row holds its subtree hash in
 * merkle; a file's Merkle hash is its hash column (NULL: zero), and its
 * merkle is NULL. get(), lookup() and list() report them in row.merkle.
 * apply() keeps them true in the batch's own transaction, after writing
 * the rows (a third pass): the directories the batch touched are the old
 * parent of every changed or deleted row (DELETE ... RETURNING parent, in
 * pass 1), the new parent of every written row, and every written row that
 * is a directory (its row was replaced, so its merkle is NULL until
 * recomputed); their ancestors up to the root are added by following
 * parent links (a touched directory that is gone, or is not a directory,
 * adds nothing). A parent chain that loops or is longer than LSQ_MAX_DEPTH
 * is logged and fails the batch with -EIO. Each of these directories is
 * recomputed from its children's rows in name order (entries_children:
 * BINARY order of blobs is merkle_name_cmp() order), deepest first,
 * so that each child directory's merkle is final when its parent reads it;
 * the report apply() returns lists them in that order, the root last.
 *
 * The cost: a directory is rehashed by reading all its children, so every
 * batch reads every child of every directory on the path from what it
 * touched up to the root, the root's children included, however small the
 * batch: a batch costs O(the sizes of those directories), not O(batch).
 * Measured on an AMD EPYC VM (SHA-NI), ext4, synchronous=FULL: the mean of
 * 10 apply() calls into a directory, or the root, that already holds
 * 100,000 files (made by 10 batches of 10,000), each call reporting its
 * tree; the two cases cost the same:
 *
 *                                  1000 creates   1 create
 *     no Merkle hashes (v1)          2.3 ms         0.7 ms
 *     Merkle, (parent, name) only   27 ms          25 ms
 *     Merkle, entries_children      21 ms          18 ms
 *
 * Nearly all of it is the rescan of the big directory: stepping through
 * 110,000 entries of entries_children takes SQLite 16.5 ms, and hashing
 * 100,000 children takes 4-5 ms of SHA-256. Through entries_parent_name
 * the same scan takes 23 ms, as each child costs a table lookup by rowid:
 * hence entries_children. It cannot replace entries_parent_name (a unique
 * index on all five columns would not keep names unique), so it is a third
 * index, and every row written pays for it: a batch of a new directory and
 * 1000 creates in it took 4.1 ms with it against 3.5 ms without (2.5 ms in
 * version 1), and the file of the 100,000 files of 32 bytes grew from 18.0
 * to 24.8 MiB (names and hashes are stored twice). A child scanned is ~65
 * ns cheaper with it, a row written ~0.6 us dearer, so it wins when a batch
 * rescans more than ~10 children per row it writes: every small batch into
 * a directory of more than a few hundred entries, which is where the Merkle
 * work costs anything. Where it loses, the loss is a fraction of a
 * millisecond, so it stays. Migrating a version-1 file of 100,000 files
 * (the column, the index, the hashes) took 100 ms.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "l3_sqlite_int.h"
#include "u64map.h"

/* ---- the Merkle maintenance ---- */

/*
 * Recomputes the Merkle hash of directory @ino from its children's rows,
 * read in name order from the covering index entries_children, and writes
 * it to the row's merkle column and to @out. Runs on the writer, inside
 * its transaction.
 * A child file contributes its hash column (NULL: the zero hash, as get()
 * reports it); a child directory its merkle column, which must be there:
 * callers recompute the deepest directories first.
 */
int lsq_dir_hash(struct lsq *q, uint64_t ino, uint8_t out[MERKLE_LEN])
{
	static const uint8_t zero[MERKLE_LEN];
	sqlite3 *db = q->writer->db;
	sqlite3_stmt *st = q->writer->stmt[W_CHILDREN];
	struct merkle *m;
	int rc, err = 0;

	m = merkle_begin();
	if (!m)
		return -ENOMEM;
	rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)ino);
	while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		bool is_dir = sqlite3_column_int(st, 1) == ITEM_DIR;
		int col = is_dir ? 3 : 2;
		const void *name = sqlite3_column_blob(st, 0);
		int len = sqlite3_column_bytes(st, 0);
		const void *hash = sqlite3_column_blob(st, col);
		int hlen = sqlite3_column_bytes(st, col);

		if (len && !name) {
			err = -ENOMEM;
			goto out_abort;
		}
		if (!is_dir && sqlite3_column_type(st, col) == SQLITE_NULL) {
			hash = zero;
			hlen = MERKLE_LEN;
		}
		if (hlen != MERKLE_LEN || !hash) {
			/* a row put there by hand: listings skip it, so
			 * does the hash (logged, counted) */
			store_corrupt(&q->sb,
				      (uint64_t)sqlite3_column_int64(st, 4),
				      is_dir ? "bad merkle hash" : "bad hash");
			rc = SQLITE_OK;
			continue;
		}
		merkle_add_child(m, name, (size_t)len, is_dir, hash);
		rc = SQLITE_OK;
	}
	if (rc != SQLITE_DONE) {
		err = lsq_errno(q, db, rc, "read a directory's children");
		goto out_abort;
	}
	lsq_done(st);
	merkle_end(m, out);

	st = q->writer->stmt[W_SET_MERKLE];
	rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)ino);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob(st, 2, out, MERKLE_LEN, SQLITE_STATIC);
	if (rc != SQLITE_OK) {
		lsq_done(st);
		return lsq_errno(q, db, rc, "bind a merkle hash");
	}
	return lsq_run(q, db, st, "write a merkle hash");

out_abort:
	lsq_done(st);
	merkle_abort(m);
	return err;
}

/* One directory that a batch's Merkle work recomputes. */
struct lsq_dir {
	uint64_t ino;
	int depth; /* levels below the top of its parent chain; -1 while the
		    * chain is being walked */
};

/* The directories a batch touched and their ancestors, each once. */
struct lsq_dirset {
	struct u64map index; /* ino -> 1 + its position in dirs */
	struct lsq_dir *dirs;
	size_t n, cap;
};

static void lsq_dirset_release(struct lsq_dirset *set)
{
	u64map_release(&set->index);
	free(set->dirs);
}

static struct lsq_dir *lsq_dirset_find(const struct lsq_dirset *set,
				       uint64_t ino)
{
	uintptr_t pos = (uintptr_t)u64map_get(&set->index, ino);

	return pos ? &set->dirs[pos - 1] : NULL;
}

static int lsq_dirset_add(struct lsq_dirset *set, uint64_t ino)
{
	if (set->n == set->cap) {
		size_t cap = set->cap ? 2 * set->cap : 16;
		struct lsq_dir *d = reallocarray(set->dirs, cap, sizeof(*d));

		if (!d)
			return -ENOMEM;
		set->dirs = d;
		set->cap = cap;
	}
	set->dirs[set->n] = (struct lsq_dir){.ino = ino, .depth = -1};
	set->n++;
	return u64map_put(&set->index, ino, (void *)(uintptr_t)set->n);
}

int lsq_get_parent(struct lsq *q, uint64_t ino, uint64_t *parent,
			  int *kind)
{
	sqlite3_stmt *st = q->writer->stmt[W_GET_PARENT];
	int rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)ino);
	int ret = 0;

	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*parent = (uint64_t)sqlite3_column_int64(st, 0);
		*kind = sqlite3_column_int(st, 1);
		ret = 1;
	} else if (rc != SQLITE_DONE) {
		ret = lsq_errno(q, q->writer->db, rc, "read a parent");
	}
	lsq_done(st);
	return ret;
}

/*
 * Adds directory @seed and its ancestors to @set, each with its depth below
 * the top of its chain: the root, or a directory whose parent is missing or
 * not a directory (an orphan, which the store does not forbid). Stops early
 * at a directory already in the set. A @seed that is missing (deleted by the
 * batch) or is not a directory adds nothing. A chain that comes back to
 * itself or is longer than LSQ_MAX_DEPTH is logged and fails with -EIO.
 */
static int lsq_dirset_walk(struct lsq *q, struct lsq_dirset *set, uint64_t seed)
{
	size_t first = set->n; /* the chain walked is dirs[first..n) */
	uint64_t ino = seed, parent = 0;
	struct lsq_dir *d;
	int kind = 0, found, err, depth = 0;

	for (;;) {
		d = lsq_dirset_find(set, ino);
		if (d) {
			if (d->depth < 0)
				goto out_cycle;
			depth = d->depth + 1;
			break;
		}
		found = lsq_get_parent(q, ino, &parent, &kind);
		if (found < 0)
			return found;
		if (!found || kind != ITEM_DIR)
			break;
		if (set->n - first >= LSQ_MAX_DEPTH)
			goto out_cycle;
		err = lsq_dirset_add(set, ino);
		if (err)
			return err;
		if (ino == STORE_ROOT_INO || parent == 0)
			break;
		ino = parent;
	}
	if ((size_t)depth + (set->n - first) > LSQ_MAX_DEPTH)
		goto out_cycle;
	for (size_t i = set->n; i-- > first; depth++)
		set->dirs[i].depth = depth;
	return 0;

out_cycle:
	eng_logf(&q->base.log, LOG_ERR,
		 "sqlite '%s': cannot update merkle hashes: the parents of "
		 "inode %llu are a cycle or more than %d levels deep",
		 q->path, (unsigned long long)seed, LSQ_MAX_DEPTH);
	return -EIO;
}

/* Deepest first, so that a directory comes after all its subdirectories;
 * the root last; inode order for the rest (a stable report). */
static int lsq_dir_cmp(const void *pa, const void *pb)
{
	const struct lsq_dir *a = pa, *b = pb;

	if (a->depth != b->depth)
		return a->depth > b->depth ? -1 : 1;
	if ((a->ino == STORE_ROOT_INO) != (b->ino == STORE_ROOT_INO))
		return a->ino == STORE_ROOT_INO ? 1 : -1;
	return a->ino < b->ino ? -1 : a->ino > b->ino;
}

/*
 * The Merkle half of apply(), inside its transaction and after its rows are
 * written: recomputes directories @seeds[0..n) (duplicates, deleted ones and
 * files allowed) and all their ancestors, bottom-up. When @tree is not NULL,
 * sets *tree to a new array of their hashes, the root last, and *ntree to
 * its length (NULL and 0 when none); on failure, writes neither.
 */
int lsq_merkle_update(struct lsq *q, const uint64_t *seeds, size_t n,
		      struct store_dirhash **tree, size_t *ntree)
{
	struct lsq_dirset set = {0};
	struct store_dirhash *out = NULL;
	uint8_t hash[MERKLE_LEN];
	int err = 0;

	u64map_init(&set.index);
	for (size_t i = 0; i < n && !err; i++)
		err = lsq_dirset_walk(q, &set, seeds[i]);
	if (err)
		goto out_release;
	if (!set.n)
		goto out_report; /* only deletes of absent rows */
	qsort(set.dirs, set.n, sizeof(*set.dirs), lsq_dir_cmp);
	if (tree) {
		out = calloc(set.n, sizeof(*out));
		if (!out) {
			err = -ENOMEM;
			goto out_release;
		}
	}
	for (size_t i = 0; i < set.n; i++) {
		err = lsq_dir_hash(q, set.dirs[i].ino, hash);
		if (err)
			goto out_release;
		if (out) {
			out[i].ino = set.dirs[i].ino;
			memcpy(out[i].merkle, hash, MERKLE_LEN);
		}
	}
out_report:
	if (tree) {
		*tree = out;
		*ntree = set.n;
		out = NULL;
	}
out_release:
	free(out);
	lsq_dirset_release(&set);
	return err;
}
