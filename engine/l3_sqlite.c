/*
 * l3_sqlite.c - the embedded L3 store: the tree of entries in one SQLite file.
 *
 * Schema (schema version 1):
 *
 *     CREATE TABLE meta (
 *             key   TEXT PRIMARY KEY,
 *             value                      -- no affinity: stored as given
 *     ) WITHOUT ROWID;
 *         'format'         = 'tierfs'   marks the file as ours
 *         'schema_version' = 1          refused when newer than this build
 *         'next_ino'       = 2..        lowest inode number never handed out
 *
 *     CREATE TABLE entries (
 *             ino          INTEGER PRIMARY KEY,  -- the rowid
 *             parent       INTEGER NOT NULL,     -- 0 for the root only
 *             name         BLOB NOT NULL,        -- '' for the root only
 *             stem         BLOB,                 -- NULL for directories
 *             kind         INTEGER NOT NULL,     -- enum item_kind
 *             size         INTEGER NOT NULL,
 *             hash         BLOB,                 -- 32 bytes, NULL when zero
 *             version      INTEGER NOT NULL,
 *             mtime_ns     INTEGER NOT NULL,
 *             ctime_ns     INTEGER NOT NULL,
 *             mode         INTEGER NOT NULL,
 *             uid          INTEGER NOT NULL,
 *             gid          INTEGER NOT NULL,
 *             explicit_dir INTEGER NOT NULL,
 *             state        TEXT,                 -- NULL when none or empty
 *             xattrs       BLOB                  -- NULL when empty
 *     );
 *     CREATE UNIQUE INDEX entries_parent_name ON entries (parent, name);
 *     CREATE UNIQUE INDEX entries_parent_stem ON entries (parent, stem)
 *             WHERE stem IS NOT NULL;
 *
 *     CREATE TABLE contents (
 *             ino  INTEGER PRIMARY KEY,          -- entries.ino of a file
 *             data BLOB NOT NULL
 *     );
 *
 * Names and stems are always bound as BLOBs, so the default BINARY collation
 * compares them with memcmp() (shorter first on a tie): that is the listing
 * order, and the (parent, name) index serves lookups and keyset-paged
 * listings without a sort. The stem of a file is its name without ".json"
 * for ITEM_JSON and the whole name for ITEM_BINARY; the partial index on
 * (parent, stem) refuses a second file with the same item ID. Content lives
 * in its own table so that lookups and listings never read it. A file
 * without a content row has empty content.
 *
 * Connection discipline. The file is in WAL mode. One writer connection,
 * guarded by write_lock, runs every write (apply, alloc_ino) inside BEGIN
 * IMMEDIATE ... COMMIT with synchronous=FULL, so a committed batch survives
 * power loss. Up to LSQ_READERS reader connections (query_only) are opened
 * on demand and kept in a pool (pool.h); a thread takes one for one
 * operation and gives it back, waiting (at most LSQ_POOL_WAIT_S) when all
 * are busy; a reader is never dropped. Each connection is used by one
 * thread at a time, so connections are opened with SQLITE_OPEN_NOMUTEX. Every
 * connection has busy_timeout 5000 ms (other processes may share the file)
 * and foreign_keys off, and prepares its statements once at open; they are
 * reset and their bindings cleared after each use, so that no read snapshot
 * outlives an operation.
 *
 * SQLite result codes become negative errno values in lsq_errno() only,
 * which also logs SQLite's message.
 *
 * apply() and lookup() also refuse what the store.h contract rules out:
 * a name that is empty (except for the root, ino 1), longer than
 * STORE_NAME_MAX or holding a '/', an ino of 0 or above INT64_MAX, or a
 * NULL meta: apply() returns -EINVAL and logs; lookup() answers -ENOENT.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "l3_sqlite.h"
#include "pool.h"

#define LSQ_SCHEMA_VERSION 1
#define LSQ_FORMAT "tierfs"
#define LSQ_FIRST_INO 2
#define LSQ_READERS 4
#define LSQ_BUSY_TIMEOUT_MS 5000
#define LSQ_POOL_WAIT_S 30 /* how long a reader waits for a free connection */

static const char lsq_schema_sql[] =
	"CREATE TABLE meta ("
	" key TEXT PRIMARY KEY,"
	" value"
	") WITHOUT ROWID;"
	"CREATE TABLE entries ("
	" ino INTEGER PRIMARY KEY,"
	" parent INTEGER NOT NULL,"
	" name BLOB NOT NULL,"
	" stem BLOB,"
	" kind INTEGER NOT NULL,"
	" size INTEGER NOT NULL,"
	" hash BLOB,"
	" version INTEGER NOT NULL,"
	" mtime_ns INTEGER NOT NULL,"
	" ctime_ns INTEGER NOT NULL,"
	" mode INTEGER NOT NULL,"
	" uid INTEGER NOT NULL,"
	" gid INTEGER NOT NULL,"
	" explicit_dir INTEGER NOT NULL,"
	" state TEXT,"
	" xattrs BLOB"
	");"
	"CREATE UNIQUE INDEX entries_parent_name ON entries (parent, name);"
	"CREATE UNIQUE INDEX entries_parent_stem ON entries (parent, stem)"
	" WHERE stem IS NOT NULL;"
	"CREATE TABLE contents ("
	" ino INTEGER PRIMARY KEY,"
	" data BLOB NOT NULL"
	");";

/* The columns every row query returns, in the order lsq_row_decode reads. */
#define LSQ_ROW_COLS                                                           \
	"ino, parent, name, kind, size, hash, version, mtime_ns, ctime_ns,"    \
	" mode, uid, gid, explicit_dir, state, xattrs"

enum lsq_col {
	COL_INO,
	COL_PARENT,
	COL_NAME,
	COL_KIND,
	COL_SIZE,
	COL_HASH,
	COL_VERSION,
	COL_MTIME,
	COL_CTIME,
	COL_MODE,
	COL_UID,
	COL_GID,
	COL_EXPLICIT,
	COL_STATE,
	COL_XATTRS,
};

/* Statements of a reader connection. */
enum lsq_rstmt {
	R_GET,
	R_LOOKUP,
	R_LIST,
	R_READ,
	R_HAS_CHILDREN,
	R_STATS,
	R_SCAN,
	R_NSTMT,
};

static const char *const lsq_reader_sql[R_NSTMT] = {
	[R_GET] = "SELECT " LSQ_ROW_COLS " FROM entries WHERE ino = ?1",
	[R_LOOKUP] = ("SELECT " LSQ_ROW_COLS " FROM entries"
		      " WHERE parent = ?1 AND name = ?2"),
	[R_LIST] = ("SELECT " LSQ_ROW_COLS " FROM entries"
		    " WHERE parent = ?1 AND name > ?2 ORDER BY name LIMIT ?3"),
	[R_READ] =
		("SELECT c.data FROM entries AS e"
		 " LEFT JOIN contents AS c ON c.ino = e.ino WHERE e.ino = ?1"),
	[R_HAS_CHILDREN] = "SELECT 1 FROM entries WHERE parent = ?1 LIMIT 1",
	[R_STATS] = ("SELECT count(*),"
		     " coalesce(sum(CASE WHEN kind <> ?2 THEN size END), 0)"
		     " FROM entries WHERE ino <> ?1"),
	[R_SCAN] = ("SELECT ino, parent, name FROM entries"
		    " WHERE ino > ?1 AND ino <> ?2 ORDER BY ino LIMIT ?3"),
};

/* Statements of the writer connection. */
enum lsq_wstmt {
	W_BEGIN,
	W_COMMIT,
	W_ROLLBACK,
	W_DEL_ENTRY,
	W_DEL_CONTENT,
	W_INS_ENTRY,
	W_PUT_CONTENT,
	W_GET_NEXT_INO,
	W_SET_NEXT_INO,
	W_NSTMT,
};

static const char *const lsq_writer_sql[W_NSTMT] = {
	[W_BEGIN] = "BEGIN IMMEDIATE",
	[W_COMMIT] = "COMMIT",
	[W_ROLLBACK] = "ROLLBACK",
	[W_DEL_ENTRY] = "DELETE FROM entries WHERE ino = ?1",
	[W_DEL_CONTENT] = "DELETE FROM contents WHERE ino = ?1",
	[W_INS_ENTRY] = ("INSERT INTO entries (ino, parent, name, stem, kind,"
			 " size, hash, version, mtime_ns, ctime_ns, mode, uid,"
			 " gid, explicit_dir, state, xattrs) VALUES (?1, ?2,"
			 " ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,"
			 " ?15, ?16)"),
	[W_PUT_CONTENT] = ("INSERT OR REPLACE INTO contents (ino, data)"
			   " VALUES (?1, ?2)"),
	[W_GET_NEXT_INO] = "SELECT value FROM meta WHERE key = 'next_ino'",
	[W_SET_NEXT_INO] = "UPDATE meta SET value = ?1 WHERE key = 'next_ino'",
};

#define LSQ_MAX_NSTMT                                                          \
	((int)R_NSTMT > (int)W_NSTMT ? (int)R_NSTMT : (int)W_NSTMT)

enum lsq_role {
	LSQ_WRITER,
	LSQ_READER,
};

struct lsq_conn {
	struct pool_conn pool; /* first: a reader is linked by lsq.readers */
	sqlite3 *db;
	sqlite3_stmt *stmt[LSQ_MAX_NSTMT];
};

struct lsq {
	struct store base; /* first: the engine sees only this */
	char *path;

	pthread_mutex_t write_lock;
	bool write_lock_ready;
	struct lsq_conn *writer; /* protected by write_lock */

	struct pool *readers; /* of struct lsq_conn; NULL until made */
};

static struct lsq *lsq_of(struct store *s)
{
	return (struct lsq *)s;
}

/*
 * The one place where SQLite result codes become errno values. Logs
 * SQLite's message for @db (or the generic text of @rc when @db is NULL)
 * with @what, the action that failed. A refused constraint is an expected
 * answer for the engine, so it is logged at debug level only.
 */
static int lsq_errno(const struct lsq *q, sqlite3 *db, int rc, const char *what)
{
	int level = LOG_ERR;
	int err;

	switch (rc & 0xff) {
	case SQLITE_CONSTRAINT:
		err = -EEXIST;
		level = LOG_DEBUG;
		break;
	case SQLITE_FULL:
		err = -ENOSPC;
		break;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		err = -EAGAIN;
		level = LOG_WARNING;
		break;
	case SQLITE_NOMEM:
		err = -ENOMEM;
		break;
	case SQLITE_CANTOPEN:
		if (db && (sqlite3_system_errno(db) == ENOENT ||
			   sqlite3_system_errno(db) == ENOTDIR))
			err = -ENOENT;
		else
			err = -EACCES;
		break;
	case SQLITE_PERM:
	case SQLITE_READONLY:
	case SQLITE_AUTH:
		err = -EACCES;
		break;
	case SQLITE_NOTADB:
		/* l3_sqlite_open(): "not a tierfs database" */
		err = -EINVAL;
		break;
	case SQLITE_IOERR:
		err = rc == SQLITE_IOERR_NOMEM ? -ENOMEM : -EIO;
		break;
	default:
		err = -EIO;
		break;
	}
	eng_logf(&q->base.log, level, "sqlite '%s': cannot %s: %s", q->path,
		 what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
	return err;
}

/* Makes @st ready for its next use. */
static void lsq_done(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

/* Steps @st, which must not return rows, then resets it. */
static int lsq_run(const struct lsq *q, sqlite3 *db, sqlite3_stmt *st,
		   const char *what)
{
	int rc = sqlite3_step(st);
	int err = 0;

	if (rc != SQLITE_DONE)
		err = lsq_errno(q, db, rc == SQLITE_ROW ? SQLITE_MISUSE : rc,
				what);
	lsq_done(st);
	return err;
}

/* Runs one-off SQL (no rows) on @db: opening and schema work only. */
static int lsq_exec(const struct lsq *q, sqlite3 *db, const char *sql,
		    const char *what)
{
	int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : lsq_errno(q, db, rc, what);
}

/* Runs a one-row, one-column query on @db and returns the value's type
 * (SQLITE_INTEGER, SQLITE_TEXT, ...; SQLITE_NULL when there is no row) and
 * fills *ival and, for text, @buf. Returns a negative errno on failure. */
static int lsq_query1(const struct lsq *q, sqlite3 *db, const char *sql,
		      sqlite3_int64 *ival, char *buf, size_t bufsz,
		      const char *what)
{
	sqlite3_stmt *st = NULL;
	int type = SQLITE_NULL;
	int rc;

	rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return lsq_errno(q, db, rc, what);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		type = sqlite3_column_type(st, 0);
		*ival = sqlite3_column_int64(st, 0);
		if (buf && bufsz) {
			const unsigned char *t = sqlite3_column_text(st, 0);

			snprintf(buf, bufsz, "%s", t ? (const char *)t : "");
		}
	} else if (rc != SQLITE_DONE) {
		type = lsq_errno(q, db, rc, what);
	}
	sqlite3_finalize(st);
	return type;
}

static void lsq_conn_close(struct lsq_conn *c)
{
	if (!c)
		return;
	for (int i = 0; i < LSQ_MAX_NSTMT; i++)
		sqlite3_finalize(c->stmt[i]);
	sqlite3_close_v2(c->db);
	free(c);
}

/* Opens a connection to q->path with the settings every role shares. */
static int lsq_conn_open(const struct lsq *q, enum lsq_role role,
			 struct lsq_conn **out)
{
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
	struct lsq_conn *c;
	int rc, err;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	if (role == LSQ_WRITER)
		flags |= SQLITE_OPEN_CREATE;
	rc = sqlite3_open_v2(q->path, &c->db, flags, NULL);
	if (rc != SQLITE_OK) {
		err = lsq_errno(q, c->db, rc, "open the database");
		goto out_close;
	}
	sqlite3_extended_result_codes(c->db, 1);
	if (sqlite3_db_readonly(c->db, "main") == 1) {
		eng_logf(&q->base.log, LOG_ERR,
			 "sqlite '%s': cannot open for writing: read-only file",
			 q->path);
		err = -EACCES;
		goto out_close;
	}
	rc = sqlite3_busy_timeout(c->db, LSQ_BUSY_TIMEOUT_MS);
	if (rc != SQLITE_OK) {
		err = lsq_errno(q, c->db, rc, "set the busy timeout");
		goto out_close;
	}
	err = lsq_exec(q, c->db, "PRAGMA foreign_keys = OFF",
		       "turn foreign keys off");
	if (err)
		goto out_close;
	if (role == LSQ_WRITER)
		err = lsq_exec(q, c->db, "PRAGMA synchronous = FULL",
			       "set synchronous=FULL");
	else
		err = lsq_exec(q, c->db, "PRAGMA query_only = ON",
			       "make a reader connection query-only");
	if (err)
		goto out_close;
	*out = c;
	return 0;

out_close:
	lsq_conn_close(c);
	return err;
}

/* Prepares the statements of @role on @c (once per connection). */
static int lsq_conn_prepare(const struct lsq *q, struct lsq_conn *c,
			    enum lsq_role role)
{
	const char *const *sql =
		role == LSQ_WRITER ? lsq_writer_sql : lsq_reader_sql;
	size_t n = role == LSQ_WRITER ? W_NSTMT : R_NSTMT;

	for (size_t i = 0; i < n; i++) {
		int rc = sqlite3_prepare_v3(c->db, sql[i], -1,
					    SQLITE_PREPARE_PERSISTENT,
					    &c->stmt[i], NULL);

		if (rc != SQLITE_OK)
			return lsq_errno(q, c->db, rc, "prepare a statement");
	}
	return 0;
}

/* ---- rows ---- */

static bool lsq_hash_is_zero(const uint8_t hash[ITEM_HASH_LEN])
{
	for (size_t i = 0; i < ITEM_HASH_LEN; i++)
		if (hash[i])
			return false;
	return true;
}

/* Binds the entry row of @ino to W_INS_ENTRY; @name and @m must outlive the
 * step. Returns an SQLite result code. */
static int lsq_bind_entry(sqlite3_stmt *st, uint64_t ino, uint64_t parent,
			  const char *name, const struct item_meta *m)
{
	size_t len = strlen(name);
	size_t stem_len = len;
	int rc;

	if (m->kind == ITEM_JSON && len >= 5 &&
	    memcmp(name + len - 5, ".json", 5) == 0)
		stem_len = len - 5;

	/* A non-NULL pointer with length 0 binds an empty blob, not NULL:
	 * the root's name is the empty blob. */
	rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)ino);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, (sqlite3_int64)parent);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob(st, 3, name, (int)len, SQLITE_STATIC);
	if (rc == SQLITE_OK && m->kind != ITEM_DIR)
		rc = sqlite3_bind_blob(st, 4, name, (int)stem_len,
				       SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 5, (int)m->kind);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 6, (sqlite3_int64)m->size);
	if (rc == SQLITE_OK && !lsq_hash_is_zero(m->hash))
		rc = sqlite3_bind_blob(st, 7, m->hash, ITEM_HASH_LEN,
				       SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 8, (sqlite3_int64)m->version);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 9, m->mtime_ns);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 10, m->ctime_ns);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 11, m->mode);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 12, m->uid);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 13, m->gid);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 14, m->explicit_dir ? 1 : 0);
	if (rc == SQLITE_OK && m->state && m->state[0])
		rc = sqlite3_bind_text(st, 15, m->state, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK && m->xattrs && m->xattrs_len)
		rc = sqlite3_bind_blob64(st, 16, m->xattrs, m->xattrs_len,
					 SQLITE_STATIC);
	/* Unbound parameters (stem, hash, state, xattrs) are NULL. */
	return rc;
}

/* Logs a row that does not decode and returns -EIO. */
static int lsq_corrupt(const struct lsq *q, sqlite3_int64 ino, const char *why)
{
	eng_logf(&q->base.log, LOG_ERR, "sqlite '%s': corrupt entry %lld: %s",
		 q->path, (long long)ino, why);
	return -EIO;
}

/* Fills @out from the current row of @st (columns LSQ_ROW_COLS). */
static int lsq_row_decode(const struct lsq *q, sqlite3_stmt *st,
			  struct store_row *out)
{
	struct store_row r;
	sqlite3_int64 ino = sqlite3_column_int64(st, COL_INO);
	const void *p;
	int kind, n;

	memset(&r, 0, sizeof(r));
	r.ino = (uint64_t)ino;
	r.parent = (uint64_t)sqlite3_column_int64(st, COL_PARENT);

	p = sqlite3_column_blob(st, COL_NAME);
	n = sqlite3_column_bytes(st, COL_NAME);
	if (n > STORE_NAME_MAX || (n && memchr(p, '\0', (size_t)n)))
		return lsq_corrupt(q, ino, "bad name");
	if (n)
		memcpy(r.name, p, (size_t)n);
	r.name[n] = '\0';

	kind = sqlite3_column_int(st, COL_KIND);
	if (kind != ITEM_DIR && kind != ITEM_JSON && kind != ITEM_BINARY)
		return lsq_corrupt(q, ino, "bad kind");
	r.meta.kind = (enum item_kind)kind;
	r.meta.size = (uint64_t)sqlite3_column_int64(st, COL_SIZE);

	if (sqlite3_column_type(st, COL_HASH) != SQLITE_NULL) {
		p = sqlite3_column_blob(st, COL_HASH);
		if (sqlite3_column_bytes(st, COL_HASH) != ITEM_HASH_LEN)
			return lsq_corrupt(q, ino, "bad hash");
		memcpy(r.meta.hash, p, ITEM_HASH_LEN);
	}
	r.meta.version = (uint64_t)sqlite3_column_int64(st, COL_VERSION);
	r.meta.mtime_ns = sqlite3_column_int64(st, COL_MTIME);
	r.meta.ctime_ns = sqlite3_column_int64(st, COL_CTIME);
	r.meta.mode = (uint32_t)sqlite3_column_int64(st, COL_MODE);
	r.meta.uid = (uint32_t)sqlite3_column_int64(st, COL_UID);
	r.meta.gid = (uint32_t)sqlite3_column_int64(st, COL_GID);
	r.meta.explicit_dir = sqlite3_column_int(st, COL_EXPLICIT) != 0;

	if (sqlite3_column_type(st, COL_STATE) != SQLITE_NULL) {
		p = sqlite3_column_text(st, COL_STATE);
		n = sqlite3_column_bytes(st, COL_STATE);
		if (!p)
			return -ENOMEM;
		if (n) {
			r.meta.state = strndup(p, (size_t)n);
			if (!r.meta.state)
				return -ENOMEM;
		}
	}
	if (sqlite3_column_type(st, COL_XATTRS) != SQLITE_NULL) {
		p = sqlite3_column_blob(st, COL_XATTRS);
		n = sqlite3_column_bytes(st, COL_XATTRS);
		if (n) {
			if (!p)
				goto out_nomem;
			r.meta.xattrs = malloc((size_t)n);
			if (!r.meta.xattrs)
				goto out_nomem;
			memcpy(r.meta.xattrs, p, (size_t)n);
			r.meta.xattrs_len = (size_t)n;
		}
	}
	*out = r;
	return 0;

out_nomem:
	item_meta_release(&r.meta);
	return -ENOMEM;
}

/* ---- the reader pool ---- */

/* pool_ops.open: a reader connection with its statements prepared. */
static int lsq_reader_open(void *ctx, struct pool_conn **out)
{
	const struct lsq *q = ctx;
	struct lsq_conn *c;
	int err;

	err = lsq_conn_open(q, LSQ_READER, &c);
	if (err)
		return err;
	err = lsq_conn_prepare(q, c, LSQ_READER);
	if (err) {
		lsq_conn_close(c);
		return err;
	}
	*out = &c->pool;
	return 0;
}

/* pool_ops.close */
static void lsq_reader_close(void *ctx, struct pool_conn *c)
{
	lsq_conn_close((struct lsq_conn *)c);
}

static const struct pool_ops lsq_reader_ops = {
	.open = lsq_reader_open,
	.close = lsq_reader_close,
};

/* Takes a reader for one operation (pool_get()); -EAGAIN, logged, when none
 * came free within LSQ_POOL_WAIT_S. */
static int lsq_reader_get(struct lsq *q, struct lsq_conn **out)
{
	struct pool_conn *c;
	int err;

	err = pool_get(q->readers, false, &c);
	if (err == -ETIMEDOUT) {
		eng_logf(&q->base.log, LOG_WARNING,
			 "sqlite '%s': no reader connection free after %d s",
			 q->path, LSQ_POOL_WAIT_S);
		return -EAGAIN;
	}
	if (!err)
		*out = (struct lsq_conn *)c;
	return err;
}

static void lsq_reader_put(struct lsq *q, struct lsq_conn *c)
{
	pool_put(q->readers, &c->pool);
}

/* ---- store ops ---- */

static void lsq_free(struct store *s)
{
	struct lsq *q = lsq_of(s);

	if (!q)
		return;
	pool_free(q->readers); /* every reader is idle by now */
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

static int lsq_list(struct store *s, uint64_t parent, const char *after,
		    struct store_row *rows, size_t limit)
{
	struct lsq *q = lsq_of(s);
	struct lsq_conn *c;
	sqlite3_stmt *st;
	size_t n = 0;
	int rc, err;

	if (!after)
		after = "";
	if (limit == 0 || parent > INT64_MAX)
		return 0;
	if (limit > INT_MAX)
		limit = INT_MAX; /* the return value is an int */

	err = lsq_reader_get(q, &c);
	if (err)
		return err;
	st = c->stmt[R_LIST];
	rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)parent);
	if (rc == SQLITE_OK)
		/* Cut at STORE_NAME_MAX + 1 bytes: no stored name lies
		 * between the cut and the whole of a longer @after. */
		rc = sqlite3_bind_blob(st, 2, after,
				       (int)strnlen(after, STORE_NAME_MAX + 1),
				       SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 3, (sqlite3_int64)limit);
	if (rc != SQLITE_OK) {
		err = lsq_errno(q, c->db, rc, "list a directory");
		goto out_put;
	}
	while (n < limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		err = lsq_row_decode(q, st, &rows[n]);
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

static int lsq_read(struct store *s, uint64_t ino, void **data, size_t *len)
{
	struct lsq *q = lsq_of(s);
	struct lsq_conn *c;
	sqlite3_stmt *st;
	void *buf = NULL;
	int rc, err, n;

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
	n = 0;
	if (sqlite3_column_type(st, 0) != SQLITE_NULL) {
		const void *p = sqlite3_column_blob(st, 0);

		n = sqlite3_column_bytes(st, 0);
		if (n) {
			if (!p) {
				err = -ENOMEM;
				goto out_put;
			}
			buf = malloc((size_t)n);
			if (!buf) {
				err = -ENOMEM;
				goto out_put;
			}
			memcpy(buf, p, (size_t)n);
		}
	}
	*data = buf;
	*len = (size_t)n;
	err = 0;
out_put:
	lsq_done(st);
	lsq_reader_put(q, c);
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

	if (limit == 0 || after >= INT64_MAX)
		return 0;
	if (limit > INT_MAX)
		limit = INT_MAX;
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
		int len = sqlite3_column_bytes(st, 2);
		const void *name = sqlite3_column_blob(st, 2);

		keys[n].ino = (uint64_t)sqlite3_column_int64(st, 0);
		keys[n].parent = (uint64_t)sqlite3_column_int64(st, 1);
		if (len > STORE_NAME_MAX)
			len = STORE_NAME_MAX;
		if (len > 0)
			memcpy(keys[n].name, name, (size_t)len);
		keys[n].name[len > 0 ? len : 0] = '\0';
		n++;
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
static void lsq_rollback(struct lsq *q)
{
	if (!sqlite3_get_autocommit(q->writer->db))
		lsq_run(q, q->writer->db, q->writer->stmt[W_ROLLBACK],
			"roll back");
}

/* Runs writer statement @which with ?1 bound to @ino. */
static int lsq_run_ino(struct lsq *q, enum lsq_wstmt which, uint64_t ino,
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

/* Checks one change against the store.h contract; -EINVAL when it fails. */
static int lsq_check_change(const struct lsq *q, const struct store_change *ch)
{
	const char *why = NULL;
	size_t len;

	if (ch->ino == 0 || ch->ino > INT64_MAX) {
		why = "bad inode number";
	} else if (!ch->deleted) {
		len = ch->name ? strnlen(ch->name, STORE_NAME_MAX + 1) : 0;
		if (!ch->name)
			why = "no name";
		else if (len > STORE_NAME_MAX)
			why = "name too long";
		else if (len == 0 && ch->ino != STORE_ROOT_INO)
			why = "empty name";
		else if (memchr(ch->name, '/', len))
			why = "name holds '/'";
		else if (ch->parent > INT64_MAX)
			why = "bad parent";
		else if (!ch->meta)
			why = "no metadata";
		else if (ch->meta->kind != ITEM_DIR &&
			 ch->meta->kind != ITEM_JSON &&
			 ch->meta->kind != ITEM_BINARY)
			why = "bad kind";
		else if (ch->has_data && ch->len && !ch->data)
			why = "no data";
	}
	if (!why)
		return 0;
	eng_logf(&q->base.log, LOG_ERR,
		 "sqlite '%s': cannot apply change to inode %llu: %s", q->path,
		 (unsigned long long)ch->ino, why);
	return -EINVAL;
}

static int lsq_apply(struct store *s, const struct store_change *changes,
		     size_t n, struct store_dirhash **tree, size_t *ntree)
{
	struct lsq *q = lsq_of(s);
	struct lsq_conn *w;
	sqlite3_stmt *st;
	int rc, err = 0;
	size_t i;

	store_tree_none(tree, ntree);

	for (i = 0; i < n; i++) {
		err = lsq_check_change(q, &changes[i]);
		if (err)
			return err;
	}
	if (n == 0)
		return 0;

	pthread_mutex_lock(&q->write_lock);
	w = q->writer;
	err = lsq_run(q, w->db, w->stmt[W_BEGIN], "begin a batch");
	if (err)
		goto out_unlock;

	/* Pass 1: remove every changed row, so that final states never
	 * collide with the states they replace (renames, swaps). */
	for (i = 0; i < n; i++) {
		const struct store_change *ch = &changes[i];

		err = lsq_run_ino(q, W_DEL_ENTRY, ch->ino, "delete an entry");
		if (!err && ch->deleted)
			err = lsq_run_ino(q, W_DEL_CONTENT, ch->ino,
					  "delete content");
		if (err)
			goto out_rollback;
	}

	/* Pass 2: write the new rows and content. */
	for (i = 0; i < n; i++) {
		const struct store_change *ch = &changes[i];

		if (ch->deleted)
			continue;
		st = w->stmt[W_INS_ENTRY];
		rc = lsq_bind_entry(st, ch->ino, ch->parent, ch->name,
				    ch->meta);
		if (rc != SQLITE_OK) {
			lsq_done(st);
			err = lsq_errno(q, w->db, rc, "bind an entry");
			goto out_rollback;
		}
		err = lsq_run(q, w->db, st, "write an entry");
		if (err)
			goto out_rollback;
		if (!ch->has_data)
			continue;
		st = w->stmt[W_PUT_CONTENT];
		rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)ch->ino);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_blob64(st, 2, ch->len ? ch->data : "",
						 ch->len, SQLITE_STATIC);
		if (rc != SQLITE_OK) {
			lsq_done(st);
			err = lsq_errno(q, w->db, rc, "bind content");
			goto out_rollback;
		}
		err = lsq_run(q, w->db, st, "write content");
		if (err)
			goto out_rollback;
	}

	err = lsq_run(q, w->db, w->stmt[W_COMMIT], "commit a batch");
	if (err)
		goto out_rollback;
	goto out_unlock;

out_rollback:
	lsq_rollback(q);
out_unlock:
	pthread_mutex_unlock(&q->write_lock);
	return err;
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
	if (next < LSQ_FIRST_INO) {
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
	.read = lsq_read,
	.has_children = lsq_has_children,
	.alloc_ino = lsq_alloc_ino,
	.apply = lsq_apply,
	.stats = lsq_stats,
	.scan = lsq_scan,
};

/* ---- opening ---- */

/* Creates the tables and the meta rows in an empty database. Runs inside
 * the writer's opening transaction. */
static int lsq_create(struct lsq *q)
{
	char sql[160];
	int err;

	err = lsq_exec(q, q->writer->db, lsq_schema_sql, "create the schema");
	if (err)
		return err;
	snprintf(sql, sizeof(sql),
		 "INSERT INTO meta (key, value) VALUES ('format', '%s'),"
		 " ('schema_version', %d), ('next_ino', %d)",
		 LSQ_FORMAT, LSQ_SCHEMA_VERSION, LSQ_FIRST_INO);
	return lsq_exec(q, q->writer->db, sql, "write the schema version");
}

/* Writes the root directory row, owned by the calling process. Runs inside
 * the opening transaction, after the writer's statements are prepared. */
static int lsq_create_root(struct lsq *q)
{
	sqlite3_stmt *st = q->writer->stmt[W_INS_ENTRY];
	struct item_meta root;
	struct timespec now;
	int rc;

	clock_gettime(CLOCK_REALTIME, &now);
	memset(&root, 0, sizeof(root));
	root.kind = ITEM_DIR;
	root.version = 1;
	root.mtime_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
	root.ctime_ns = root.mtime_ns;
	root.mode = S_IFDIR | 0755;
	root.uid = (uint32_t)geteuid();
	root.gid = (uint32_t)getegid();
	root.explicit_dir = true;
	rc = lsq_bind_entry(st, STORE_ROOT_INO, 0, "", &root);
	if (rc != SQLITE_OK) {
		lsq_done(st);
		return lsq_errno(q, q->writer->db, rc,
				 "bind the root directory");
	}
	return lsq_run(q, q->writer->db, st, "create the root directory");
}

/* Checks that an existing database is ours, of a version this build reads. */
static int lsq_check(struct lsq *q)
{
	sqlite3 *db = q->writer->db;
	sqlite3_int64 v = 0;
	char format[32] = "";
	int type;

	type = lsq_query1(q, db,
			  "SELECT count(*) FROM sqlite_master WHERE"
			  " type = 'table' AND name = 'meta'",
			  &v, NULL, 0, "read the schema");
	if (type < 0)
		return type;
	if (v == 0)
		goto out_foreign;
	type = lsq_query1(q, db, "SELECT value FROM meta WHERE key = 'format'",
			  &v, format, sizeof(format), "read the format");
	if (type < 0)
		return type;
	if (type != SQLITE_TEXT || strcmp(format, LSQ_FORMAT) != 0)
		goto out_foreign;
	type = lsq_query1(q, db,
			  "SELECT value FROM meta WHERE key = 'schema_version'",
			  &v, NULL, 0, "read the schema version");
	if (type < 0)
		return type;
	if (type != SQLITE_INTEGER || v < 1)
		goto out_foreign;
	if (v > LSQ_SCHEMA_VERSION) {
		eng_logf(&q->base.log, LOG_ERR,
			 "sqlite '%s': cannot open: schema version %lld is "
			 "newer than this build supports (%d)",
			 q->path, (long long)v, LSQ_SCHEMA_VERSION);
		return -EINVAL;
	}
	return 0;

out_foreign:
	eng_logf(&q->base.log, LOG_ERR,
		 "sqlite '%s': cannot open: not a tierfs database", q->path);
	return -EINVAL;
}

/* Under the write lock, checks the schema (or creates it with the root
 * directory in an empty file) and prepares the writer's statements; then
 * switches the file to WAL, last, so that a foreign file is never changed. */
static int lsq_setup(struct lsq *q)
{
	sqlite3 *db = q->writer->db;
	sqlite3_int64 nobjects = 0, unused;
	char mode[16] = "";
	int err, type;

	err = lsq_exec(q, db, "BEGIN IMMEDIATE", "begin opening");
	if (err)
		return err;
	type = lsq_query1(q, db, "SELECT count(*) FROM sqlite_master",
			  &nobjects, NULL, 0, "read the schema");
	if (type < 0) {
		err = type;
		goto out_rollback;
	}
	err = nobjects == 0 ? lsq_create(q) : lsq_check(q);
	if (!err)
		err = lsq_conn_prepare(q, q->writer, LSQ_WRITER);
	if (!err && nobjects == 0)
		err = lsq_create_root(q);
	if (!err)
		err = lsq_exec(q, db, "COMMIT", "commit the schema");
	if (err)
		goto out_rollback;

	type = lsq_query1(q, db, "PRAGMA journal_mode = WAL", &unused, mode,
			  sizeof(mode), "switch to WAL");
	if (type < 0)
		return type;
	if (strcmp(mode, "wal") != 0)
		eng_logf(&q->base.log, LOG_WARNING,
			 "sqlite '%s': journal mode is '%s', not 'wal'",
			 q->path, mode);
	return 0;

out_rollback:
	if (!sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return err;
}

int l3_sqlite_open(const char *path, const struct eng_log *log,
		   struct store **out)
{
	struct lsq *q;
	int err;

	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->base.ops = &lsq_ops;
	if (log)
		q->base.log = *log;
	q->path = strdup(path);
	if (!q->path) {
		err = -ENOMEM;
		goto out_free;
	}
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
