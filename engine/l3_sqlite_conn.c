/*
 * l3_sqlite_conn.c - the SQLite store's connections: opening them with
 * their settings, the pool of readers, running statements, and the one
 * mapping of SQLite result codes to errno values.
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
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "l3_sqlite_int.h"

/*
 * The one place where SQLite result codes become errno values. Logs
 * SQLite's message for @db (or the generic text of @rc when @db is NULL)
 * with @what, the action that failed. A refused constraint is an expected
 * answer for the engine, so it is logged at debug level only.
 */
int lsq_errno(const struct lsq *q, sqlite3 *db, int rc, const char *what)
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
	case SQLITE_TOOBIG:
	case SQLITE_MISMATCH:
	case SQLITE_RANGE:
		err = -EINVAL; /* a value this change carries is refused */
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
void lsq_done(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

/* Steps @st, which must not return rows, then resets it. */
int lsq_run(const struct lsq *q, sqlite3 *db, sqlite3_stmt *st,
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
int lsq_exec(const struct lsq *q, sqlite3 *db, const char *sql,
	     const char *what)
{
	int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : lsq_errno(q, db, rc, what);
}

/* Runs a one-row, one-column query on @db and returns the value's type
 * (SQLITE_INTEGER, SQLITE_TEXT, ...; SQLITE_NULL when there is no row) and
 * fills *ival and, for text, @buf. Returns a negative errno on failure. */
int lsq_query1(const struct lsq *q, sqlite3 *db, const char *sql,
	       sqlite3_int64 *ival, char *buf, size_t bufsz, const char *what)
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

void lsq_conn_close(struct lsq_conn *c)
{
	if (!c)
		return;
	for (int i = 0; i < LSQ_MAX_NSTMT; i++)
		sqlite3_finalize(c->stmt[i]);
	sqlite3_close_v2(c->db);
	free(c);
}

/* Opens a connection to q->path with the settings every role shares. */
int lsq_conn_open(const struct lsq *q, enum lsq_role role,
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
int lsq_conn_prepare(const struct lsq *q, struct lsq_conn *c,
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

/* ---- the reader pool ---- */

int lsq_reader_new(const struct lsq *q, struct lsq_conn **out)
{
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
	*out = c;
	return 0;
}

/* pool_ops.open: a reader connection with its statements prepared. */
static int lsq_reader_open(void *ctx, struct pool_conn **out)
{
	struct lsq_conn *c;
	int err;

	err = lsq_reader_new(ctx, &c);
	if (err)
		return err;
	*out = &c->pool;
	return 0;
}

/* pool_ops.close */
static void lsq_reader_close(void *ctx, struct pool_conn *c)
{
	lsq_conn_close((struct lsq_conn *)c);
}

const struct pool_ops lsq_reader_ops = {
	.open = lsq_reader_open,
	.close = lsq_reader_close,
};

/* Takes a reader for one operation (pool_get()); -EAGAIN, logged, when none
 * came free within LSQ_POOL_WAIT_S. */
int lsq_reader_get(struct lsq *q, struct lsq_conn **out)
{
	struct pool_conn *c;
	int err;

	err = store_pool_get(&q->sb, q->readers, false, "reader connection",
			     LSQ_POOL_WAIT_S, &c);
	if (!err)
		*out = (struct lsq_conn *)c;
	return err;
}

void lsq_reader_put(struct lsq *q, struct lsq_conn *c)
{
	pool_put(q->readers, &c->pool);
}
