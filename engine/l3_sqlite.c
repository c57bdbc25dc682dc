/*
 * l3_sqlite.c - the embedded L3 store: the tree of entries in one SQLite file.
 *
 * The store is in several files (l3_sqlite_int.h declares what they
 * share):
 *
 *     l3_sqlite.c         the store ops, and opening
 *     l3_sqlite_apply.c   apply(): versions and namespace races decided
 *                         at commit, the feed's records and trimming
 *     l3_sqlite_feed.c    reading and waiting for the change feed
 *     l3_sqlite_merkle.c  the Merkle hashes of directories, and what they
 *                         cost
 *     l3_sqlite_schema.c  the schema: creation, checks and migrations
 *     l3_sqlite_stmt.c    the prepared statements
 *     l3_sqlite_conn.c    connections, the reader pool, errors as errno
 *                         values
 *
 * Each opens with what it implements. What it shares with the other stores
 * is in store_row.c (the checks of rows read back and of changes) and
 * store_sql.c (with l3_pg: the row as columns, the root directory, the meta
 * rows).
 *
 * apply() and lookup() also refuse what the store.h contract rules out:
 * a name that is empty (except for the root, ino 1), longer than
 * STORE_NAME_MAX or holding a '/', or an ino of 0 or above INT64_MAX:
 * apply() returns -EINVAL and logs; lookup() answers -ENOENT.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "l3_sqlite_int.h"

/* ---- rows ---- */

/* Binds the entry row of @ino to W_INS_ENTRY; @name and @m must outlive the
 * step. Returns an SQLite result code. */
int lsq_bind_entry(sqlite3_stmt *st, uint64_t ino, uint64_t parent,
		   const char *name, const struct item_meta *m)
{
	struct store_cols r = store_cols_of(ino, parent, name, m);
	int rc;

	/* A non-NULL pointer with length 0 binds an empty blob, not NULL:
	 * the root's name is the empty blob. */
	rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)r.ino);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, (sqlite3_int64)r.parent);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob(st, 3, r.name, (int)r.name_len,
				       SQLITE_STATIC);
	if (rc == SQLITE_OK && r.stem)
		rc = sqlite3_bind_blob(st, 4, r.stem, (int)r.stem_len,
				       SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 5, r.kind);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 6, (sqlite3_int64)r.size);
	if (rc == SQLITE_OK && r.hash)
		rc = sqlite3_bind_blob(st, 7, r.hash, (int)r.hash_len,
				       SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 8, (sqlite3_int64)r.version);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 9, r.mtime_ns);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 10, r.ctime_ns);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 11, r.mode);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 12, r.uid);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 13, r.gid);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 14, r.explicit_dir ? 1 : 0);
	if (rc == SQLITE_OK && r.state)
		rc = sqlite3_bind_text(st, 15, r.state, (int)r.state_len,
				       SQLITE_STATIC);
	if (rc == SQLITE_OK && r.xattrs)
		rc = sqlite3_bind_blob64(st, 16, r.xattrs, r.xattrs_len,
					 SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 17, r.atime_ns);
	/* Unbound parameters (stem, hash, state, xattrs) are NULL. */
	return rc;
}

/* Points *p at column @col of the current row of @st, NULL only when the
 * value is NULL ("" when it is empty), and *len at its length; -ENOMEM
 * when SQLite could not make the value. */
static int lsq_value(sqlite3_stmt *st, int col, const void **p, size_t *len)
{
	*p = NULL;
	*len = 0;
	if (sqlite3_column_type(st, col) == SQLITE_NULL)
		return 0;
	*p = sqlite3_column_blob(st, col);
	*len = (size_t)sqlite3_column_bytes(st, col);
	if (!*p && *len)
		return -ENOMEM;
	if (!*p)
		*p = "";
	return 0;
}

/* Fills @out from the current row of @st (columns STORE_SQL_ROW_COLS); the
 * meaning of the values is store_row_decode()'s to check. A directory's
 * merkle is NULL only in a row that no maintenance reached (a cycle left
 * alone by the migration): reported as zero, "not known". */
int lsq_row_decode(const struct lsq *q, sqlite3_stmt *st, struct store_row *out)
{
	struct store_cols c = {
		.ino = (uint64_t)sqlite3_column_int64(st, STORE_COL_INO),
		.parent = (uint64_t)sqlite3_column_int64(st, STORE_COL_PARENT),
		.kind = sqlite3_column_int(st, STORE_COL_KIND),
		.size = (uint64_t)sqlite3_column_int64(st, STORE_COL_SIZE),
		.version =
			(uint64_t)sqlite3_column_int64(st, STORE_COL_VERSION),
		.mtime_ns = sqlite3_column_int64(st, STORE_COL_MTIME),
		.atime_ns = sqlite3_column_int64(st, STORE_COL_ATIME),
		.ctime_ns = sqlite3_column_int64(st, STORE_COL_CTIME),
		.mode = (uint32_t)sqlite3_column_int64(st, STORE_COL_MODE),
		.uid = (uint32_t)sqlite3_column_int64(st, STORE_COL_UID),
		.gid = (uint32_t)sqlite3_column_int64(st, STORE_COL_GID),
		.explicit_dir = sqlite3_column_int(st, STORE_COL_EXPLICIT) != 0,
	};
	int err;

	err = lsq_value(st, STORE_COL_NAME, &c.name, &c.name_len);
	if (!err)
		err = lsq_value(st, STORE_COL_HASH, &c.hash, &c.hash_len);
	if (!err)
		err = lsq_value(st, STORE_COL_STATE, &c.state, &c.state_len);
	if (!err)
		err = lsq_value(st, STORE_COL_XATTRS, &c.xattrs, &c.xattrs_len);
	if (!err)
		err = lsq_value(st, STORE_COL_MERKLE, &c.merkle, &c.merkle_len);
	if (err)
		return err;
	if (!c.name)
		return store_corrupt(&q->sb, c.ino, "bad name");
	return store_row_decode(&q->sb, &c, out);
}

/* ---- store ops ---- */

static void lsq_free(struct store *s)
{
	struct lsq *q = lsq_of(s);

	if (!q)
		return;
	pool_free(q->readers); /* every reader is idle by now */
	lsq_conn_close(q->waiter);
	lsq_conn_close(q->writer);
	if (q->write_lock_ready)
		pthread_mutex_destroy(&q->write_lock);
	free(q->path);
	free(q);
}

/* Runs R_GET (by @ino) or R_LOOKUP (by @parent and @name) on a reader and
 * decodes the one row into @out; -ENOENT when there is none. */
static int lsq_get_row(struct lsq *q, enum lsq_rstmt which, uint64_t parent,
		       const char *name, size_t name_len, uint64_t ino,
		       struct store_row *out, const char *what)
{
	struct lsq_conn *c;
	sqlite3_stmt *st;
	int rc, err;

	err = lsq_reader_get(q, &c);
	if (err)
		return err;
	st = c->stmt[which];
	if (which == R_GET) {
		rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)ino);
	} else {
		rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)parent);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_blob(st, 2, name, (int)name_len,
					       SQLITE_STATIC);
	}
	if (rc != SQLITE_OK) {
		err = lsq_errno(q, c->db, rc, what);
		goto out_put;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		err = lsq_row_decode(q, st, out);
	else if (rc == SQLITE_DONE)
		err = -ENOENT;
	else
		err = lsq_errno(q, c->db, rc, what);
out_put:
	lsq_done(st);
	lsq_reader_put(q, c);
	return err;
}

static int lsq_get(struct store *s, uint64_t ino, struct store_row *out)
{
	if (ino == 0 || ino > INT64_MAX)
		return -ENOENT;
	return lsq_get_row(lsq_of(s), R_GET, 0, NULL, 0, ino, out,
			   "read an entry");
}

static int lsq_lookup(struct store *s, uint64_t parent, const char *name,
		      struct store_row *out)
{
	size_t len = name ? strlen(name) : 0;

	if (!name || len > STORE_NAME_MAX || parent > INT64_MAX)
		return -ENOENT;
	return lsq_get_row(lsq_of(s), R_LOOKUP, parent, name, len, 0, out,
			   "look up an entry");
}

/* Fills @out from the current row of a listing of names
 * (STORE_SQL_NAME_COLS), checked as lsq_row_decode() checks whole rows. */
static int lsq_name_row_decode(const struct lsq *q, sqlite3_stmt *st,
			       struct store_row *out)
{
	struct store_cols c = {
		.ino = (uint64_t)sqlite3_column_int64(st, STORE_NCOL_INO),
		.parent = (uint64_t)sqlite3_column_int64(st, STORE_NCOL_PARENT),
		.kind = sqlite3_column_int(st, STORE_NCOL_KIND),
	};
	int err = lsq_value(st, STORE_NCOL_NAME, &c.name, &c.name_len);

	if (err)
		return err;
	c.mode = STORE_NAME_MODE(c.kind);
	if (!c.name)
		return store_corrupt(&q->sb, c.ino, "bad name");
	return store_row_decode(&q->sb, &c, out);
}

/* list() and list_by_ino(): reader statement @which, rows decoded by
 * @decode, the keyset after the name @after or, when @after is NULL, after
 * the inode number @after_ino. */
static int lsq_list_rows(struct store *s, enum lsq_rstmt which,
			 int (*decode)(const struct lsq *q, sqlite3_stmt *st,
				       struct store_row *out),
			 uint64_t parent, const char *after, uint64_t after_ino,
			 struct store_row *rows, size_t limit)
{
	struct lsq *q = lsq_of(s);
	struct lsq_conn *c;
	sqlite3_stmt *st;
	size_t n = 0, after_len = 0;
	bool by_ino = !after;
	int rc, err;

	if (by_ino &&
	    (!store_scan_page(after_ino, &limit) || parent > STORE_SQL_MAX_INO))
		return 0;
	if (!by_ino && !store_list_page(parent, &after, &after_len, &limit))
		return 0;
	err = lsq_reader_get(q, &c);
	if (err)
		return err;
	st = c->stmt[which];
	rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)parent);
	if (rc == SQLITE_OK && by_ino)
		rc = sqlite3_bind_int64(st, 2, (sqlite3_int64)after_ino);
	else if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob(st, 2, after, (int)after_len,
				       SQLITE_STATIC);
	/* no LIMIT (-1): rows are stepped lazily, and a corrupt row, skipped,
	 * leaves room for the next one */
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 3, -1);
	if (rc != SQLITE_OK) {
		err = lsq_errno(q, c->db, rc, "list a directory");
		goto out_put;
	}
	while (n < limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		err = decode(q, st, &rows[n]);
		if (err == -EUCLEAN)
			continue; /* logged and counted: the rest still lists */
		if (err)
			goto out_release;
		n++;
	}
	if (n < limit && rc != SQLITE_DONE) {
		err = lsq_errno(q, c->db, rc, "list a directory");
		goto out_release;
	}
	err = (int)n;
	goto out_put;

out_release:
	while (n)
		store_row_release(&rows[--n]);
out_put:
	lsq_done(st);
	lsq_reader_put(q, c);
	return err;
}

static int lsq_list(struct store *s, uint64_t parent, const char *after,
		    struct store_row *rows, size_t limit)
{
	return lsq_list_rows(s, R_LIST, lsq_row_decode, parent,
			     after ? after : "", 0, rows, limit);
}

static int lsq_list_by_ino(struct store *s, uint64_t parent, uint64_t after,
			   bool names, struct store_row *rows, size_t limit)
{
	if (names)
		return lsq_list_rows(s, R_LIST_INO_NAMES, lsq_name_row_decode,
				     parent, NULL, after, rows, limit);
	return lsq_list_rows(s, R_LIST_INO, lsq_row_decode, parent, NULL, after,
			     rows, limit);
}

static int lsq_read(struct store *s, uint64_t ino, void **data, size_t *len)
{
	struct lsq *q = lsq_of(s);
	struct lsq_conn *c;
	sqlite3_stmt *st;
	const void *p;
	size_t n;
	int rc, err;

	if (ino == 0 || ino > INT64_MAX)
		return -ENOENT;
	err = lsq_reader_get(q, &c);
	if (err)
		return err;
	st = c->stmt[R_READ];
	rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)ino);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		err = -ENOENT;
		goto out_put;
	}
	if (rc != SQLITE_ROW) {
		err = lsq_errno(q, c->db, rc, "read content");
		goto out_put;
	}
	/* No content row (a directory, or a file never given content): 0. */
	err = lsq_value(st, 0, &p, &n);
	if (!err)
		err = store_data_dup(p, n, data, len);
out_put:
	lsq_done(st);
	lsq_reader_put(q, c);
	return err;
}

static char *lsq_json_inos(const uint64_t *inos, size_t n);

static int lsq_read_many(struct store *s, const uint64_t *inos, size_t n,
			 struct store_blob *out)
{
	struct lsq *q = lsq_of(s);
	struct lsq_conn *c;
	sqlite3_stmt *st;
	size_t k = 0;
	char *json;
	int rc, err;

	if (n > STORE_READ_MANY_MAX)
		return -EINVAL;
	if (n == 0)
		return 0;
	json = lsq_json_inos(inos, n);
	if (!json)
		return -ENOMEM;
	err = lsq_reader_get(q, &c);
	if (err) {
		free(json);
		return err;
	}
	st = c->stmt[R_READ_MANY];
	rc = sqlite3_bind_text(st, 1, json, -1, SQLITE_STATIC);
	while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		sqlite3_int64 ino = sqlite3_column_int64(st, 0);
		const void *p;
		size_t len;

		if (k == n || ino <= 0) { /* more rows than asked: corrupt */
			err = store_corrupt(&q->sb, (uint64_t)ino,
					    "read_many returned a stray row");
			goto out_release;
		}
		err = lsq_value(st, 1, &p, &len);
		if (!err)
			err = store_data_dup(p, len, &out[k].data, &out[k].len);
		if (err)
			goto out_release;
		out[k++].ino = (uint64_t)ino;
		rc = SQLITE_OK;
	}
	if (rc != SQLITE_DONE) {
		err = lsq_errno(q, c->db, rc, "read contents");
		goto out_release;
	}
	err = (int)k;
	goto out_put;

out_release:
	while (k)
		free(out[--k].data);
out_put:
	lsq_done(st);
	lsq_reader_put(q, c);
	free(json);
	return err;
}

static int lsq_has_children(struct store *s, uint64_t parent)
{
	struct lsq *q = lsq_of(s);
	struct lsq_conn *c;
	sqlite3_stmt *st;
	int rc, err;

	if (parent > INT64_MAX)
		return 0;
	err = lsq_reader_get(q, &c);
	if (err)
		return err;
	st = c->stmt[R_HAS_CHILDREN];
	rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)parent);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		err = 1;
	else if (rc == SQLITE_DONE)
		err = 0;
	else
		err = lsq_errno(q, c->db, rc, "look for children");
	lsq_done(st);
	lsq_reader_put(q, c);
	return err;
}

/* @inos[0..n) as a JSON array of integers (new, caller frees). */
static char *lsq_json_inos(const uint64_t *inos, size_t n)
{
	char *json = malloc(n * 21 + 3), *p = json;

	if (!json)
		return NULL;
	*p++ = '[';
	for (size_t i = 0; i < n; i++)
		p += sprintf(p, "%s%llu", i ? "," : "",
			     (unsigned long long)inos[i]);
	strcpy(p, "]");
	return json;
}

/* Runs reader statement @which on (@ino, ITEM_DIR, @except as JSON) and
 * sets *out to the one integer it returns. */
static int lsq_count_query(struct store *s, int which, uint64_t ino,
			   const uint64_t *except, size_t nexcept,
			   uint64_t *out, const char *what)
{
	struct lsq *q = lsq_of(s);
	char *json = lsq_json_inos(except, nexcept);
	struct lsq_conn *c;
	sqlite3_stmt *st;
	int rc, err;

	if (!json)
		return -ENOMEM;
	if (ino > INT64_MAX) {
		free(json);
		*out = 0;
		return 0;
	}
	err = lsq_reader_get(q, &c);
	if (err) {
		free(json);
		return err;
	}
	st = c->stmt[which];
	rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)ino);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 2, ITEM_DIR);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 3, json, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		sqlite3_int64 v = sqlite3_column_int64(st, 0);

		*out = v > 0 ? (uint64_t)v : 0;
		err = 0;
	} else {
		err = lsq_errno(q, c->db, rc, what);
	}
	lsq_done(st);
	lsq_reader_put(q, c);
	free(json);
	return err;
}

static int lsq_count_subdirs(struct store *s, uint64_t parent,
			     const uint64_t *except, size_t nexcept,
			     uint64_t *count)
{
	return lsq_count_query(s, R_SUBDIRS, parent, except, nexcept, count,
			       "count subdirectories");
}

static int lsq_longest_id_below(struct store *s, uint64_t dir,
				const uint64_t *except, size_t nexcept,
				uint64_t *len)
{
	return lsq_count_query(s, R_LONGEST, dir, except, nexcept, len,
			       "measure the IDs below a directory");
}

static int lsq_stats(struct store *s, uint64_t *entries, uint64_t *bytes)
{
	struct lsq *q = lsq_of(s);
	struct lsq_conn *c;
	sqlite3_stmt *st;
	int rc, err;

	err = lsq_reader_get(q, &c);
	if (err)
		return err;
	st = c->stmt[R_STATS];
	rc = sqlite3_bind_int64(st, 1, STORE_ROOT_INO);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 2, ITEM_DIR);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*entries = (uint64_t)sqlite3_column_int64(st, 0);
		*bytes = (uint64_t)sqlite3_column_int64(st, 1);
		err = 0;
	} else {
		err = lsq_errno(q, c->db,
				rc == SQLITE_DONE ? SQLITE_MISUSE : rc,
				"count entries");
	}
	lsq_done(st);
	lsq_reader_put(q, c);
	return err;
}

static int lsq_scan(struct store *s, uint64_t after, struct store_key *keys,
		    size_t limit)
{
	struct lsq *q = lsq_of(s);
	struct lsq_conn *c;
	sqlite3_stmt *st;
	size_t n = 0;
	int rc, err;

	if (!store_scan_page(after, &limit))
		return 0;
	err = lsq_reader_get(q, &c);
	if (err)
		return err;
	st = c->stmt[R_SCAN];
	rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)after);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, STORE_ROOT_INO);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 3, (sqlite3_int64)limit);
	while (rc == SQLITE_OK && n < limit &&
	       (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const void *name;
		size_t len;

		if (lsq_value(st, 2, &name, &len)) {
			rc = SQLITE_NOMEM;
			break;
		}
		store_key_fill(
			&keys[n++], (uint64_t)sqlite3_column_int64(st, 0),
			(uint64_t)sqlite3_column_int64(st, 1), name, len);
		rc = SQLITE_OK;
	}
	if (rc != SQLITE_OK && rc != SQLITE_DONE)
		err = lsq_errno(q, c->db, rc, "scan the entries");
	else
		err = (int)n;
	lsq_done(st);
	lsq_reader_put(q, c);
	return err;
}

/* Ends the writer's transaction after a failure; keeps the first error. */
void lsq_rollback(struct lsq *q)
{
	if (!sqlite3_get_autocommit(q->writer->db))
		lsq_run(q, q->writer->db, q->writer->stmt[W_ROLLBACK],
			"roll back");
}

/* Runs writer statement @which with ?1 bound to @ino. */
int lsq_run_ino(struct lsq *q, enum lsq_wstmt which, uint64_t ino,
		const char *what)
{
	sqlite3_stmt *st = q->writer->stmt[which];
	int rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)ino);

	if (rc != SQLITE_OK) {
		lsq_done(st);
		return lsq_errno(q, q->writer->db, rc, what);
	}
	return lsq_run(q, q->writer->db, st, what);
}

static int lsq_alloc_ino(struct store *s, uint64_t count, uint64_t *first)
{
	struct lsq *q = lsq_of(s);
	struct lsq_conn *w;
	sqlite3_stmt *st;
	sqlite3_int64 next = 0;
	int rc, err;

	if (count == 0 || count > INT64_MAX)
		return -EINVAL;

	pthread_mutex_lock(&q->write_lock);
	w = q->writer;
	err = lsq_run(q, w->db, w->stmt[W_BEGIN], "begin inode allocation");
	if (err)
		goto out_unlock;

	st = w->stmt[W_GET_NEXT_INO];
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_INTEGER)
		next = sqlite3_column_int64(st, 0);
	else if (rc == SQLITE_ROW || rc == SQLITE_DONE)
		next = -1;
	else
		err = lsq_errno(q, w->db, rc, "read the inode counter");
	lsq_done(st);
	if (err)
		goto out_rollback;
	if (next < STORE_SQL_FIRST_INO) {
		eng_logf(&q->base.log, LOG_ERR,
			 "sqlite '%s': cannot allocate inodes: bad counter",
			 q->path);
		err = -EIO;
		goto out_rollback;
	}
	if ((uint64_t)next > (uint64_t)INT64_MAX - count) {
		eng_logf(&q->base.log, LOG_ERR,
			 "sqlite '%s': cannot allocate inodes: none left",
			 q->path);
		err = -ENOSPC;
		goto out_rollback;
	}

	err = lsq_run_ino(q, W_SET_NEXT_INO, (uint64_t)next + count,
			  "advance the inode counter");
	if (err)
		goto out_rollback;
	err = lsq_run(q, w->db, w->stmt[W_COMMIT], "commit inode allocation");
	if (err)
		goto out_rollback;
	*first = (uint64_t)next;
	goto out_unlock;

out_rollback:
	lsq_rollback(q);
out_unlock:
	pthread_mutex_unlock(&q->write_lock);
	return err;
}

static const struct store_ops lsq_ops = {
	.name = "sqlite",
	.free = lsq_free,
	.get = lsq_get,
	.lookup = lsq_lookup,
	.list = lsq_list,
	.list_by_ino = lsq_list_by_ino,
	.read = lsq_read,
	.read_many = lsq_read_many,
	.has_children = lsq_has_children,
	.count_subdirs = lsq_count_subdirs,
	.longest_id_below = lsq_longest_id_below,
	.alloc_ino = lsq_alloc_ino,
	.apply = lsq_apply,
	.stats = lsq_stats,
	.scan = lsq_scan,
	.feed_read = lsq_feed_read,
	.feed_head = lsq_feed_head,
	.feed_wait = lsq_feed_wait,
};

int l3_sqlite_open(const char *path, const struct eng_log *log,
		   struct store **out)
{
	struct lsq *q;
	int err;

	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->base.ops = &lsq_ops;
	store_base_init(&q->base);
	if (log)
		q->base.log = *log;
	q->path = strdup(path);
	if (!q->path) {
		err = -ENOMEM;
		goto out_free;
	}
	q->sb = (struct store_backend){.log = &q->base.log,
				       .name = "sqlite",
				       .target = q->path,
				       .max_ino = STORE_SQL_MAX_INO,
				       .corrupt = &q->base.corrupt};
	if (!sqlite3_threadsafe()) {
		eng_logf(&q->base.log, LOG_ERR,
			 "sqlite '%s': cannot open: libsqlite3 is built "
			 "without thread support",
			 path);
		err = -EIO;
		goto out_free;
	}

	err = -pthread_mutex_init(&q->write_lock, NULL);
	if (err)
		goto out_free;
	q->write_lock_ready = true;
	err = pool_new(&lsq_reader_ops, q, LSQ_READERS, LSQ_POOL_WAIT_S * 1000,
		       &q->readers);
	if (err)
		goto out_free;

	err = lsq_conn_open(q, LSQ_WRITER, &q->writer);
	if (err)
		goto out_free;
	err = lsq_setup(q);
	if (err)
		goto out_free;
	*out = &q->base;
	return 0;

out_free:
	lsq_free(&q->base);
	return err;
}
