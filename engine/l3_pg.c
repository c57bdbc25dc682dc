/*
 * l3_pg.c - the PostgreSQL L3 store: the tree of entries in a database that
 * several mounts, on several hosts, may share.
 *
 * It keeps exactly the contract and the semantics of l3_sqlite.c; only the
 * engine underneath differs.
 *
 * The store is in several files (l3_pg_int.h declares what they share):
 *
 *     l3_pg.c         the store ops that read, alloc_ino, and opening
 *     l3_pg_apply.c   apply(): the batch transaction, and how concurrent
 *                     batches are kept apart
 *     l3_pg_race.c    apply()'s namespace races: names another writer
 *                     holds
 *     l3_pg_merkle.c  the Merkle hashes of directories
 *     l3_pg_feed.c    the change feed: its records, feed_read, feed_head
 *                     and feed_wait
 *     l3_pg_schema.c  the schema: creation, checks and migrations
 *     l3_pg_stmt.c    the prepared statements
 *     l3_pg_conn.c    connections, their pool, errors as errno values
 *     l3_pg_array.c   the binary arrays the batch statements take
 *
 * Each opens with what it implements. What it shares with the other stores
 * is in store_row.c (the checks of rows read back and of changes),
 * store_sql.c (with l3_sqlite: the row as columns, the root directory, the
 * meta rows) and store_conn.c (with l2_redis: when an operation runs
 * again).
 *
 * Inode numbers. alloc_ino() runs one statement in its own (autocommit)
 * transaction:
 *     UPDATE tierfs_meta SET value = value + $count WHERE key = 'next_ino'
 *             RETURNING value - $count
 * The row lock makes concurrent allocators on every mount queue up and each
 * one re-reads the committed counter, so ranges are disjoint and consecutive
 * for any $count. A sequence could not do this: nextval() hands out one
 * number (or a fixed INCREMENT BY block) at a time, and setval(nextval() + n)
 * races between mounts. A range whose reply is lost is never handed out
 * again; inode numbers are never reused, so that loses nothing.
 *
 * apply() and lookup() refuse what the store.h contract rules out exactly as
 * l3_sqlite.c does: apply() returns -EINVAL and logs, lookup() answers
 * -ENOENT.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "l3_pg_int.h"

/* ---- rows ---- */

/* Points *p at column @col of row @row when it is not NULL and is @len
 * bytes long (any length when @len < 0); false otherwise. */
bool lpg_field(const PGresult *res, int row, int col, int len, const char **p)
{
	if (PQgetisnull(res, row, col))
		return false;
	if (len >= 0 && PQgetlength(res, row, col) != len)
		return false;
	*p = PQgetvalue(res, row, col);
	return true;
}

/* Points *p at column @col of row @row, NULL when the value is NULL, and
 * *len at its length. */
static void lpg_value(const PGresult *res, int row, int col, const void **p,
		      size_t *len)
{
	*p = PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
	*len = *p ? (size_t)PQgetlength(res, row, col) : 0;
}

/* Fills @out from row @row of @res (columns STORE_SQL_ROW_COLS first, binary):
 * reads the values of their binary types, then store_row_decode() checks
 * what they mean. */
int lpg_row_decode(const struct lpg *q, const PGresult *res, int row,
		   struct store_row *out)
{
	/* the columns of a fixed width, all NOT NULL */
	static const struct {
		int col, len;
		const char *why;
	} fixed[] = {
		{STORE_COL_INO, 8, "bad inode number"},
		{STORE_COL_PARENT, 8, "bad parent"},
		{STORE_COL_KIND, 2, "bad kind"},
		{STORE_COL_SIZE, 8, "bad size"},
		{STORE_COL_VERSION, 8, "bad version"},
		{STORE_COL_MTIME, 8, "bad mtime"},
		{STORE_COL_ATIME, 8, "bad atime"},
		{STORE_COL_CTIME, 8, "bad ctime"},
		{STORE_COL_MODE, 4, "bad mode"},
		{STORE_COL_UID, 8, "bad uid"},
		{STORE_COL_GID, 8, "bad gid"},
		{STORE_COL_EXPLICIT, 1, "bad explicit_dir"},
	};
	const char *v[STORE_COL_N];
	struct store_cols c = {0};

	if (PQnfields(res) < STORE_COL_N)
		return store_corrupt(&q->sb, 0, "bad column count");
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		if (!lpg_field(res, row, fixed[i].col, fixed[i].len,
			       &v[fixed[i].col]))
			return store_corrupt(
				&q->sb,
				i ? (uint64_t)lpg_get64(v[STORE_COL_INO]) : 0,
				fixed[i].why);
	c.ino = (uint64_t)lpg_get64(v[STORE_COL_INO]);
	c.parent = (uint64_t)lpg_get64(v[STORE_COL_PARENT]);
	c.kind = lpg_get16(v[STORE_COL_KIND]);
	c.size = (uint64_t)lpg_get64(v[STORE_COL_SIZE]);
	c.version = (uint64_t)lpg_get64(v[STORE_COL_VERSION]);
	c.mtime_ns = lpg_get64(v[STORE_COL_MTIME]);
	c.atime_ns = lpg_get64(v[STORE_COL_ATIME]);
	c.ctime_ns = lpg_get64(v[STORE_COL_CTIME]);
	c.mode = (uint32_t)lpg_get32(v[STORE_COL_MODE]);
	c.uid = (uint32_t)lpg_get64(v[STORE_COL_UID]);
	c.gid = (uint32_t)lpg_get64(v[STORE_COL_GID]);
	c.explicit_dir = *v[STORE_COL_EXPLICIT] != 0;
	lpg_value(res, row, STORE_COL_NAME, &c.name, &c.name_len);
	if (!c.name)
		return store_corrupt(&q->sb, c.ino, "bad name");
	lpg_value(res, row, STORE_COL_HASH, &c.hash, &c.hash_len);
	lpg_value(res, row, STORE_COL_STATE, &c.state, &c.state_len);
	lpg_value(res, row, STORE_COL_XATTRS, &c.xattrs, &c.xattrs_len);
	lpg_value(res, row, STORE_COL_MERKLE, &c.merkle, &c.merkle_len);
	return store_row_decode(&q->sb, &c, out);
}

/* ---- store ops ---- */

static void lpg_free(struct store *s)
{
	struct lpg *q = lpg_of(s);

	if (!q)
		return;
	/* Every connection is idle by now: the caller has stopped using s. */
	pool_free(q->pool);
	lpg_feed_close(q);
	if (q->conninfo) /* it may hold a password */
		explicit_bzero(q->conninfo, strlen(q->conninfo));
	free(q->conninfo);
	free(q);
}

/* Runs S_GET or S_LOOKUP and decodes the one row into @out; -ENOENT when
 * there is none. */
static int lpg_get_row(struct lpg *q, enum lpg_stmt which,
		       const char *const *values, const int *lengths,
		       struct store_row *out, const char *what)
{
	PGresult *res;
	int err;

	err = lpg_query(q, which, values, lengths, &res, what);
	if (err)
		return err;
	if (PQntuples(res) == 0)
		err = -ENOENT;
	else
		err = lpg_row_decode(q, res, 0, out);
	PQclear(res);
	return err;
}

static int lpg_get(struct store *s, uint64_t ino, struct store_row *out)
{
	char b_ino[8];
	const char *values[1] = {b_ino};
	const int lengths[1] = {8};

	if (ino == 0 || ino > INT64_MAX)
		return -ENOENT;
	lpg_put64(b_ino, (int64_t)ino);
	return lpg_get_row(lpg_of(s), S_GET, values, lengths, out,
			   "read an entry");
}

static int lpg_lookup(struct store *s, uint64_t parent, const char *name,
		      struct store_row *out)
{
	size_t len = name ? strlen(name) : 0;
	char b_parent[8];
	/* A non-NULL pointer with length 0 is the empty bytea, not NULL. */
	const char *values[2] = {b_parent, name};
	const int lengths[2] = {8, (int)len};

	if (!name || len > STORE_NAME_MAX || parent > INT64_MAX)
		return -ENOENT;
	lpg_put64(b_parent, (int64_t)parent);
	return lpg_get_row(lpg_of(s), S_LOOKUP, values, lengths, out,
			   "look up an entry");
}

/* A copy of the name of row @row of @res (its raw bytes), or NULL: whole
 * rows and rows of names have it in the same column. */
_Static_assert((int)STORE_COL_NAME == (int)STORE_NCOL_NAME, "name column");

static char *lpg_last_name(PGresult *res, int row, size_t *len)
{
	const void *name;
	char *copy;

	lpg_value(res, row, STORE_COL_NAME, &name, len);
	copy = malloc(*len ? *len : 1);
	if (copy && *len)
		memcpy(copy, name, *len);
	return copy;
}

/* Fills @out from row @row of a listing of names (STORE_SQL_NAME_COLS,
 * binary), checked as lpg_row_decode() checks whole rows. */
static int lpg_name_row_decode(const struct lpg *q, const PGresult *res,
			       int row, struct store_row *out)
{
	const char *ino, *parent, *kind;
	struct store_cols c = {0};

	if (PQnfields(res) < STORE_NCOL_N)
		return store_corrupt(&q->sb, 0, "bad column count");
	if (!lpg_field(res, row, STORE_NCOL_INO, 8, &ino))
		return store_corrupt(&q->sb, 0, "bad inode number");
	c.ino = (uint64_t)lpg_get64(ino);
	if (!lpg_field(res, row, STORE_NCOL_PARENT, 8, &parent))
		return store_corrupt(&q->sb, c.ino, "bad parent");
	if (!lpg_field(res, row, STORE_NCOL_KIND, 2, &kind))
		return store_corrupt(&q->sb, c.ino, "bad kind");
	c.parent = (uint64_t)lpg_get64(parent);
	c.kind = lpg_get16(kind);
	c.mode = STORE_NAME_MODE(c.kind);
	lpg_value(res, row, STORE_NCOL_NAME, &c.name, &c.name_len);
	if (!c.name)
		return store_corrupt(&q->sb, c.ino, "bad name");
	return store_row_decode(&q->sb, &c, out);
}

/* list() and list_by_ino(): statement @which, rows decoded by @decode, the
 * keyset after the name @after or, when @after is NULL, after the inode
 * number @after_ino. */
static int lpg_list_rows(struct store *s, enum lpg_stmt which,
			 int (*decode)(const struct lpg *q, const PGresult *res,
				       int row, struct store_row *out),
			 uint64_t parent, const char *after, uint64_t after_ino,
			 struct store_row *rows, size_t limit)
{
	struct lpg *q = lpg_of(s);
	char b_parent[8], b_ino[8], b_limit[8];
	const char *values[3] = {b_parent, b_ino, b_limit};
	int lengths[3] = {8, 8, 8};
	PGresult *res;
	char *cursor = NULL;
	size_t after_len = 0, n = 0;
	bool by_ino = !after;
	int got, err;

	if (by_ino &&
	    (!store_scan_page(after_ino, &limit) || parent > STORE_SQL_MAX_INO))
		return 0;
	if (!by_ino && !store_list_page(parent, &after, &after_len, &limit))
		return 0;
	lpg_put64(b_parent, (int64_t)parent);
	lpg_put64(b_limit, (int64_t)limit);
	lpg_put64(b_ino, (int64_t)after_ino);
	if (!by_ino) {
		values[1] = after;
		lengths[1] = (int)after_len;
	}
	/* a corrupt row is skipped (logged and counted): the page is then
	 * filled from after the last row read, corrupt or not */
	for (;;) {
		err = lpg_query(q, which, values, lengths, &res,
				"list a directory");
		if (err)
			goto out_release;
		got = PQntuples(res);
		if ((size_t)got > limit) {
			err = store_corrupt(&q->sb, 0,
					    "too many rows in a listing");
			goto out_clear;
		}
		for (int i = 0; i < got && n < limit; i++) {
			err = decode(q, res, i, &rows[n]);
			if (err == 0)
				n++;
			else if (err != -EUCLEAN)
				goto out_clear;
		}
		if (n == limit || (size_t)got < limit || got == 0)
			break;
		if (by_ino) { /* the raw ino of the last row read */
			const char *ino =
				PQgetvalue(res, got - 1, STORE_COL_INO);

			if (PQgetlength(res, got - 1, STORE_COL_INO) != 8) {
				err = store_corrupt(&q->sb, 0, "bad ino");
				goto out_clear;
			}
			memcpy(b_ino, ino, 8);
			PQclear(res);
			continue;
		}
		free(cursor); /* the raw name of the last row read */
		cursor = lpg_last_name(res, got - 1, &after_len);
		PQclear(res);
		if (!cursor) {
			err = -ENOMEM;
			goto out_release;
		}
		values[1] = cursor;
		lengths[1] = (int)after_len;
	}
	err = (int)n;
	goto out_clear;

out_clear:
	PQclear(res);
	if (err >= 0)
		goto out;
out_release:
	while (n)
		store_row_release(&rows[--n]);
out:
	free(cursor);
	return err;
}

static int lpg_list(struct store *s, uint64_t parent, const char *after,
		    struct store_row *rows, size_t limit)
{
	return lpg_list_rows(s, S_LIST, lpg_row_decode, parent,
			     after ? after : "", 0, rows, limit);
}

static int lpg_list_by_ino(struct store *s, uint64_t parent, uint64_t after,
			   bool names, struct store_row *rows, size_t limit)
{
	if (names)
		return lpg_list_rows(s, S_LIST_INO_NAMES, lpg_name_row_decode,
				     parent, NULL, after, rows, limit);
	return lpg_list_rows(s, S_LIST_INO, lpg_row_decode, parent, NULL, after,
			     rows, limit);
}

/* Reads the content of @ino (S_READ) or, when @row is given, its row and
 * its content in one statement (S_FETCH); see read and fetch in store.h. */
static int lpg_content(struct lpg *q, uint64_t ino, struct store_row *row,
		       void **data, size_t *len)
{
	enum lpg_stmt which = row ? S_FETCH : S_READ;
	int col = row ? STORE_COL_N : 0; /* the data column */
	char b_ino[8];
	const char *values[1] = {b_ino};
	const int lengths[1] = {8};
	PGresult *res;
	void *buf = NULL;
	size_t n = 0;
	int err;

	if (ino == 0 || ino > INT64_MAX)
		return -ENOENT;
	lpg_put64(b_ino, (int64_t)ino);
	err = lpg_query(q, which, values, lengths, &res, "read content");
	if (err)
		return err;
	if (PQntuples(res) == 0) {
		err = -ENOENT;
		goto out_clear;
	}
	/* No content row (a directory, or a file never given content): 0. */
	if (!PQgetisnull(res, 0, col)) {
		err = store_data_dup(PQgetvalue(res, 0, col),
				     (size_t)PQgetlength(res, 0, col), &buf,
				     &n);
		if (err)
			goto out_clear;
	}
	if (row) {
		err = lpg_row_decode(q, res, 0, row);
		if (err) {
			free(buf);
			goto out_clear;
		}
	}
	*data = buf;
	*len = n;
	err = 0;
out_clear:
	PQclear(res);
	return err;
}

static int lpg_read(struct store *s, uint64_t ino, void **data, size_t *len)
{
	return lpg_content(lpg_of(s), ino, NULL, data, len);
}

static int lpg_fetch(struct store *s, uint64_t ino, struct store_row *row,
		     void **data, size_t *len)
{
	return lpg_content(lpg_of(s), ino, row, data, len);
}

static int lpg_read_many(struct store *s, const uint64_t *inos, size_t n,
			 struct store_blob *out)
{
	struct lpg *q = lpg_of(s);
	struct lpg_arr a = {0};
	const char *values[1] = {NULL};
	int lengths[1] = {0};
	PGresult *res;
	const char *p;
	int err, rows, k = 0;

	if (n > STORE_READ_MANY_MAX)
		return -EINVAL;
	if (n == 0)
		return 0;
	lpg_arr_start(&a, LPG_INT8OID);
	for (size_t i = 0; i < n; i++)
		lpg_arr_i64(&a, inos[i] > INT64_MAX ? 0 : (int64_t)inos[i]);
	err = lpg_arr_finish(&a, &values[0], &lengths[0]);
	if (!err)
		err = lpg_query(q, S_READ_MANY, values, lengths, &res,
				"read contents");
	lpg_arr_release(&a);
	if (err)
		return err;
	rows = PQntuples(res);
	if ((size_t)rows > n) {
		err = store_corrupt(&q->sb, 0, "read_many returned stray rows");
		goto out_clear;
	}
	for (k = 0; k < rows; k++) {
		if (!lpg_field(res, k, 0, 8, &p) || lpg_get64(p) <= 0) {
			err = store_corrupt(&q->sb, 0, "bad ino");
			goto out_release;
		}
		out[k].ino = (uint64_t)lpg_get64(p);
		out[k].data = NULL;
		out[k].len = 0;
		/* no content row (a directory, or a file never given
		 * content): 0 bytes */
		if (PQgetisnull(res, k, 1))
			continue;
		err = store_data_dup(PQgetvalue(res, k, 1),
				     (size_t)PQgetlength(res, k, 1),
				     &out[k].data, &out[k].len);
		if (err)
			goto out_release;
	}
	err = rows;
	goto out_clear;

out_release:
	while (k)
		free(out[--k].data);
out_clear:
	PQclear(res);
	return err;
}

static int lpg_has_children(struct store *s, uint64_t parent)
{
	struct lpg *q = lpg_of(s);
	char b_parent[8];
	const char *values[1] = {b_parent};
	const int lengths[1] = {8};
	PGresult *res;
	int err;

	if (parent > INT64_MAX)
		return 0;
	lpg_put64(b_parent, (int64_t)parent);
	err = lpg_query(q, S_HAS_CHILDREN, values, lengths, &res,
			"look for children");
	if (err)
		return err;
	err = PQntuples(res) > 0 ? 1 : 0;
	PQclear(res);
	return err;
}

/* Runs @which on (@ino, @except as an array) and sets *out to the one
 * integer it returns. */
static int lpg_count_query(struct store *s, enum lpg_stmt which, uint64_t ino,
			   const uint64_t *except, size_t nexcept,
			   uint64_t *out, const char *what)
{
	struct lpg *q = lpg_of(s);
	struct lpg_arr a = {0};
	char b_ino[8];
	const char *values[2] = {b_ino, NULL};
	int lengths[2] = {8, 0};
	const char *p;
	PGresult *res;
	int err;

	if (ino > INT64_MAX) {
		*out = 0;
		return 0;
	}
	lpg_put64(b_ino, (int64_t)ino);
	lpg_arr_start(&a, LPG_INT8OID);
	for (size_t i = 0; i < nexcept; i++)
		lpg_arr_i64(&a, (int64_t)except[i]);
	err = lpg_arr_finish(&a, &values[1], &lengths[1]);
	if (!err)
		err = lpg_query(q, which, values, lengths, &res, what);
	lpg_arr_release(&a);
	if (err)
		return err;
	if (PQntuples(res) == 1 && lpg_field(res, 0, 0, 8, &p)) {
		int64_t v = lpg_get64(p);

		*out = v > 0 ? (uint64_t)v : 0;
	} else {
		err = store_corrupt(&q->sb, 0, "bad count");
	}
	PQclear(res);
	return err;
}

static int lpg_count_subdirs(struct store *s, uint64_t parent,
			     const uint64_t *except, size_t nexcept,
			     uint64_t *count)
{
	return lpg_count_query(s, S_SUBDIRS, parent, except, nexcept, count,
			       "count subdirectories");
}

static int lpg_longest_id_below(struct store *s, uint64_t dir,
				const uint64_t *except, size_t nexcept,
				uint64_t *len)
{
	return lpg_count_query(s, S_LONGEST, dir, except, nexcept, len,
			       "measure the IDs below a directory");
}

static int lpg_stats(struct store *s, uint64_t *entries, uint64_t *bytes)
{
	struct lpg *q = lpg_of(s);
	PGresult *res;
	const char *p0, *p1;
	int err;

	err = lpg_query(q, S_STATS, NULL, NULL, &res, "count entries");
	if (err)
		return err;
	if (PQntuples(res) == 1 && lpg_field(res, 0, 0, 8, &p0) &&
	    lpg_field(res, 0, 1, 8, &p1)) {
		*entries = (uint64_t)lpg_get64(p0);
		*bytes = (uint64_t)lpg_get64(p1);
	} else {
		err = store_corrupt(&q->sb, 0, "bad counts");
	}
	PQclear(res);
	return err;
}

static int lpg_scan(struct store *s, uint64_t after, struct store_key *keys,
		    size_t limit)
{
	struct lpg *q = lpg_of(s);
	char b_after[8], b_limit[8];
	const char *values[2] = {b_after, b_limit};
	const int lengths[2] = {8, 8};
	PGresult *res;
	int err, n, i;

	if (!store_scan_page(after, &limit))
		return 0;
	lpg_put64(b_after, (int64_t)after);
	lpg_put64(b_limit, (int64_t)limit);
	err = lpg_query(q, S_SCAN, values, lengths, &res, "scan the entries");
	if (err)
		return err;
	n = PQntuples(res);
	for (i = 0; i < n && i < (int)limit; i++) {
		const char *pi, *pp, *name;

		if (!lpg_field(res, i, 0, 8, &pi) ||
		    !lpg_field(res, i, 1, 8, &pp) ||
		    !lpg_field(res, i, 2, -1, &name)) {
			err = store_corrupt(&q->sb, 0, "bad scan row");
			break;
		}
		store_key_fill(&keys[i], (uint64_t)lpg_get64(pi),
			       (uint64_t)lpg_get64(pp), name,
			       (size_t)PQgetlength(res, i, 2));
	}
	if (!err)
		err = i;
	PQclear(res);
	return err;
}

static int lpg_alloc_ino(struct store *s, uint64_t count, uint64_t *first)
{
	struct lpg *q = lpg_of(s);
	char b_count[8];
	const char *values[1] = {b_count};
	const int lengths[1] = {8};
	PGresult *res, *why;
	const char *p;
	int err;

	if (count == 0 || count > INT64_MAX)
		return -EINVAL;
	lpg_put64(b_count, (int64_t)count);
	err = lpg_query(q, S_ALLOC, values, lengths, &res, "allocate inodes");
	if (err)
		return err;
	if (PQntuples(res) == 1 && lpg_field(res, 0, 0, 8, &p) &&
	    lpg_get64(p) >= STORE_SQL_FIRST_INO) {
		*first = (uint64_t)lpg_get64(p);
		PQclear(res);
		return 0;
	}
	PQclear(res);
	/* No row: the counter is missing or bad, or the range is exhausted. */
	err = lpg_query(q, S_NEXT_INO, NULL, NULL, &why,
			"read the inode counter");
	if (err)
		return err;
	if (PQntuples(why) == 1) {
		eng_logf(
			&q->base.log, LOG_ERR,
			"postgres '%s': cannot allocate %llu inodes: none left",
			q->target, (unsigned long long)count);
		err = -ENOSPC;
	} else {
		eng_logf(&q->base.log, LOG_ERR,
			 "postgres '%s': cannot allocate inodes: bad counter",
			 q->target);
		err = -EIO;
	}
	PQclear(why);
	return err;
}

static const struct store_ops lpg_ops = {
	.name = "postgres",
	.free = lpg_free,
	.get = lpg_get,
	.lookup = lpg_lookup,
	.list = lpg_list,
	.list_by_ino = lpg_list_by_ino,
	.read = lpg_read,
	.read_many = lpg_read_many,
	.has_children = lpg_has_children,
	.count_subdirs = lpg_count_subdirs,
	.longest_id_below = lpg_longest_id_below,
	.alloc_ino = lpg_alloc_ino,
	.apply = lpg_apply,
	.stats = lpg_stats,
	.scan = lpg_scan,
	.fetch = lpg_fetch,
	.feed_read = lpg_feed_read,
	.feed_head = lpg_feed_head,
	.feed_wait = lpg_feed_wait,
};

int l3_pg_open(const char *conninfo, const struct eng_log *log,
	       struct store **out)
{
	struct lpg_conn *c = NULL;
	struct lpg *q;
	int err;

	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->base.ops = &lpg_ops;
	store_base_init(&q->base);
	if (log)
		q->base.log = *log;
	q->sb = (struct store_backend){.log = &q->base.log,
				       .name = "postgres",
				       .target = q->target,
				       .max_ino = STORE_SQL_MAX_INO,
				       .corrupt = &q->base.corrupt};
	if (!conninfo) {
		eng_logf(&q->base.log, LOG_ERR,
			 "postgres: cannot open: no connection string");
		err = -EINVAL;
		goto out_free;
	}
	err = lpg_parse(q, conninfo);
	if (err)
		goto out_free;
	q->conninfo = strdup(conninfo);
	if (!q->conninfo) {
		err = -ENOMEM;
		goto out_free;
	}
	if (!PQisthreadsafe()) {
		eng_logf(&q->base.log, LOG_ERR,
			 "postgres '%s': cannot open: libpq is built without "
			 "thread support",
			 q->target);
		err = -EIO;
		goto out_free;
	}

	err = pool_new(&lpg_pool_ops, q, LPG_POOL_MAX, LPG_POOL_WAIT_S * 1000,
		       &q->pool);
	if (err)
		goto out_free;

	/* The first connection sets up the schema, then joins the pool. */
	err = lpg_conn_open(q, false, &c);
	if (err)
		goto out_free;
	err = lpg_setup(q, c);
	if (!err)
		err = lpg_conn_prepare(q, c);
	if (!err)
		err = pool_adopt(q->pool, &c->pool);
	if (err)
		goto out_close;
	pool_put(q->pool, &c->pool);
	*out = &q->base;
	return 0;

out_close:
	lpg_conn_close(c);
out_free:
	lpg_free(&q->base);
	return err;
}
