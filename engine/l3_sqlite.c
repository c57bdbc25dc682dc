/*
 * l3_sqlite.c - the embedded L3 store: the tree of entries in one SQLite file.
 *
 * Schema (schema version 2):
 *
 *     CREATE TABLE meta (
 *             key   TEXT PRIMARY KEY,
 *             value                      -- no affinity: stored as given
 *     ) WITHOUT ROWID;
 *         'format'         = 'tierfs'   marks the file as ours
 *         'schema_version' = 2          refused when newer than this build
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
 *             xattrs       BLOB,                 -- NULL when empty
 *             merkle       BLOB                  -- directories: 32 bytes
 *     );
 *     CREATE UNIQUE INDEX entries_parent_name ON entries (parent, name);
 *     CREATE UNIQUE INDEX entries_parent_stem ON entries (parent, stem)
 *             WHERE stem IS NOT NULL;
 *     CREATE INDEX entries_children ON entries
 *             (parent, name, kind, hash, merkle);  -- covers the Merkle scan
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
 *
 * Schema versions. Version 1 had neither the merkle column nor
 * entries_children. Opening a version-1 file migrates it in the writer's
 * opening transaction (BEGIN IMMEDIATE, under which nothing else can
 * write): ALTER TABLE adds the column, CREATE INDEX makes the index, a
 * recursive CTE numbers every directory by its depth (from the root, or
 * from an orphan directory whose parent is missing), and each is hashed
 * deepest first; then schema_version becomes 2 and one INFO line is
 * logged. Either all of that commits or none of it. Directories in a
 * cycle are left NULL with a warning. A version-1 build refuses the
 * migrated file; one that already had it open would go on writing without
 * hashes, so stop old mounts before the first open by this build.
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
#include "merkle.h"
#include "pool.h"
#include "u64map.h"

#define LSQ_SCHEMA_VERSION 2
#define LSQ_FORMAT "tierfs"
#define LSQ_FIRST_INO 2
#define LSQ_READERS 4
#define LSQ_BUSY_TIMEOUT_MS 5000
#define LSQ_POOL_WAIT_S 30 /* how long a reader waits for a free connection */
/* The deepest directory the Merkle maintenance follows: far below any tree
 * the engine builds (node_path() stops at ID_MAX levels), so a parent chain
 * longer than this is a cycle or a corrupt row. */
#define LSQ_MAX_DEPTH 4096

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
	" xattrs BLOB,"
	" merkle BLOB"
	");"
	"CREATE UNIQUE INDEX entries_parent_name ON entries (parent, name);"
	"CREATE UNIQUE INDEX entries_parent_stem ON entries (parent, stem)"
	" WHERE stem IS NOT NULL;"
	"CREATE INDEX entries_children ON entries"
	" (parent, name, kind, hash, merkle);"
	"CREATE TABLE contents ("
	" ino INTEGER PRIMARY KEY,"
	" data BLOB NOT NULL"
	");";

/* The columns every row query returns, in the order lsq_row_decode reads. */
#define LSQ_ROW_COLS                                                           \
	"ino, parent, name, kind, size, hash, version, mtime_ns, ctime_ns,"    \
	" mode, uid, gid, explicit_dir, state, xattrs, merkle"

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
	COL_MERKLE,
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
	W_GET_PARENT,
	W_CHILDREN,
	W_SET_MERKLE,
	W_NSTMT,
};

static const char *const lsq_writer_sql[W_NSTMT] = {
	[W_BEGIN] = "BEGIN IMMEDIATE",
	[W_COMMIT] = "COMMIT",
	[W_ROLLBACK] = "ROLLBACK",
	[W_DEL_ENTRY] = "DELETE FROM entries WHERE ino = ?1 RETURNING parent",
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
	[W_GET_PARENT] = "SELECT parent, kind FROM entries WHERE ino = ?1",
	[W_CHILDREN] = ("SELECT name, kind, hash, merkle, ino FROM entries"
			" WHERE parent = ?1 ORDER BY name"),
	[W_SET_MERKLE] = "UPDATE entries SET merkle = ?2 WHERE ino = ?1",
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

/* Binds the entry row of @ino to W_INS_ENTRY; @name and @m must outlive the
 * step. Returns an SQLite result code. */
static int lsq_bind_entry(sqlite3_stmt *st, uint64_t ino, uint64_t parent,
			  const char *name, const struct item_meta *m)
{
	size_t len = strlen(name);
	size_t stem_len = store_stem_len(name, len, m->kind);
	int rc;

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
	if (rc == SQLITE_OK && !item_hash_is_zero(m->hash))
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
	/* A file's Merkle hash is its content hash; a directory's has its own
	 * column, NULL (reported as zero, "not known") only in a row that no
	 * maintenance reached (a cycle left alone by the migration). */
	if (r.meta.kind != ITEM_DIR) {
		memcpy(r.merkle, r.meta.hash, ITEM_HASH_LEN);
	} else if (sqlite3_column_type(st, COL_MERKLE) != SQLITE_NULL) {
		p = sqlite3_column_blob(st, COL_MERKLE);
		if (sqlite3_column_bytes(st, COL_MERKLE) != ITEM_HASH_LEN)
			return lsq_corrupt(q, ino, "bad merkle hash");
		memcpy(r.merkle, p, ITEM_HASH_LEN);
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
static int lsq_dir_hash(struct lsq *q, uint64_t ino, uint8_t out[MERKLE_LEN])
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
			err = lsq_corrupt(q, sqlite3_column_int64(st, 4),
					  is_dir ? "bad merkle hash"
						 : "bad hash");
			goto out_abort;
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

/* Reads the parent and kind of row @ino on the writer. Returns 1, or 0 when
 * there is no such row, or a negative errno. */
static int lsq_get_parent(struct lsq *q, uint64_t ino, uint64_t *parent,
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
static int lsq_merkle_update(struct lsq *q, const uint64_t *seeds, size_t n,
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

/* Checks one change against the store.h contract; -EINVAL when it fails. */
static int lsq_check_change(const struct lsq *q, const struct store_change *ch)
{
	const char *why = store_change_problem(ch, INT64_MAX);

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
	struct store_dirhash *report = NULL;
	size_t nreport = 0, nseeds = 0;
	uint64_t *seeds;
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
	/* the directories whose Merkle hash the batch touches: each change's
	 * old parent, new parent and, for a directory, itself */
	seeds = reallocarray(NULL, n, 3 * sizeof(*seeds));
	if (!seeds)
		return -ENOMEM;

	pthread_mutex_lock(&q->write_lock);
	w = q->writer;
	err = lsq_run(q, w->db, w->stmt[W_BEGIN], "begin a batch");
	if (err)
		goto out_unlock;

	/* Pass 1: remove every changed row, so that final states never
	 * collide with the states they replace (renames, swaps). */
	for (i = 0; i < n; i++) {
		const struct store_change *ch = &changes[i];

		err = lsq_delete_entry(q, ch->ino, seeds, &nseeds);
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
		seeds[nseeds++] = ch->parent;
		if (ch->meta->kind == ITEM_DIR)
			seeds[nseeds++] = ch->ino; /* its merkle was reset */
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

	/* Pass 3: the Merkle hashes, in the same transaction. */
	err = lsq_merkle_update(q, seeds, nseeds, tree ? &report : NULL,
				&nreport);
	if (err)
		goto out_rollback;

	err = lsq_run(q, w->db, w->stmt[W_COMMIT], "commit a batch");
	if (err)
		goto out_rollback;
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
	free(report);
	free(seeds);
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
	uint8_t hash[MERKLE_LEN];
	int rc, err;

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
	err = lsq_run(q, q->writer->db, st, "create the root directory");
	if (err)
		return err;
	return lsq_dir_hash(q, STORE_ROOT_INO, hash); /* of no children */
}

/* Checks that an existing database is ours, of a version this build reads,
 * and sets *version to its schema version. */
static int lsq_check(struct lsq *q, sqlite3_int64 *version)
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
	*version = v;
	return 0;

out_foreign:
	eng_logf(&q->base.log, LOG_ERR,
		 "sqlite '%s': cannot open: not a tierfs database", q->path);
	return -EINVAL;
}

/* The schema change from version 1: the column and the index, before the
 * writer's statements (which name them) are prepared. */
static const char lsq_v1_to_v2_sql[] =
	"ALTER TABLE entries ADD COLUMN merkle BLOB;"
	"CREATE INDEX entries_children ON entries"
	" (parent, name, kind, hash, merkle);";

/*
 * The rest of the migration from schema version 1, once the column is there
 * and the writer's statements are prepared: computes the Merkle hash of
 * every directory, bottom-up, and records version 2; sets *ndirs to how
 * many. A recursive CTE numbers the directories by depth below the top of
 * their chain, as apply() finds it (the root, or a directory whose parent is
 * missing or not a directory); they are read into memory before any is
 * written, and written deepest first, so that each directory's children are
 * done when it is. Directories that no chain reaches (a cycle) or that lie
 * deeper than LSQ_MAX_DEPTH are left NULL, with a warning: the old file was
 * already broken there, and an apply() that reaches them fails with -EIO.
 */
static int lsq_migrate_v1(struct lsq *q, size_t *ndirs)
{
	static const char dirs_sql[] =
		"WITH RECURSIVE tree (ino, depth) AS ("
		" SELECT d.ino, 0 FROM entries AS d WHERE d.kind = ?2"
		"  AND NOT EXISTS (SELECT 1 FROM entries AS p"
		"   WHERE p.ino = d.parent AND p.kind = ?2)"
		" UNION ALL"
		" SELECT e.ino, t.depth + 1 FROM tree AS t"
		"  JOIN entries AS e ON e.parent = t.ino"
		"  WHERE e.kind = ?2 AND t.depth < ?1"
		") SELECT ino FROM tree ORDER BY depth DESC";
	sqlite3 *db = q->writer->db;
	sqlite3_stmt *st = NULL;
	uint64_t *inos = NULL;
	size_t n = 0, cap = 0;
	uint8_t hash[MERKLE_LEN];
	sqlite3_int64 unhashed = 0;
	char sql[128];
	int rc, err = 0;

	rc = sqlite3_prepare_v2(db, dirs_sql, -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 1, LSQ_MAX_DEPTH);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 2, ITEM_DIR);
	while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n == cap) {
			uint64_t *p;

			cap = cap ? 2 * cap : 1024;
			p = reallocarray(inos, cap, sizeof(*inos));
			if (!p) {
				err = -ENOMEM;
				goto out_free;
			}
			inos = p;
		}
		inos[n++] = (uint64_t)sqlite3_column_int64(st, 0);
		rc = SQLITE_OK;
	}
	if (rc != SQLITE_DONE) {
		err = lsq_errno(q, db, rc, "list the directories to migrate");
		goto out_free;
	}
	sqlite3_finalize(st);
	st = NULL;

	for (size_t i = 0; i < n; i++) {
		err = lsq_dir_hash(q, inos[i], hash);
		if (err)
			goto out_free;
	}
	snprintf(sql, sizeof(sql),
		 "SELECT count(*) FROM entries WHERE kind = %d"
		 " AND merkle IS NULL",
		 ITEM_DIR);
	rc = lsq_query1(q, db, sql, &unhashed, NULL, 0,
			"count the directories left out");
	if (rc < 0) {
		err = rc;
		goto out_free;
	}
	if (unhashed)
		eng_logf(&q->base.log, LOG_WARNING,
			 "sqlite '%s': %lld directories are in a cycle or more "
			 "than %d levels deep: they have no merkle hash",
			 q->path, (long long)unhashed, LSQ_MAX_DEPTH);
	snprintf(sql, sizeof(sql),
		 "UPDATE meta SET value = %d WHERE key = 'schema_version'",
		 LSQ_SCHEMA_VERSION);
	err = lsq_exec(q, db, sql, "write the schema version");
	if (!err)
		*ndirs = n;
out_free:
	sqlite3_finalize(st);
	free(inos);
	return err;
}

/* Under the write lock, checks the schema (or creates it with the root
 * directory in an empty file, or migrates it from version 1) and prepares
 * the writer's statements, in one transaction; then switches the file to
 * WAL, last, so that a foreign file is never changed. */
static int lsq_setup(struct lsq *q)
{
	sqlite3 *db = q->writer->db;
	sqlite3_int64 nobjects = 0, unused, version = LSQ_SCHEMA_VERSION;
	size_t ndirs = 0;
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
	err = nobjects == 0 ? lsq_create(q) : lsq_check(q, &version);
	if (!err && version == 1)
		err = lsq_exec(q, db, lsq_v1_to_v2_sql,
			       "migrate the schema to version 2");
	if (!err)
		err = lsq_conn_prepare(q, q->writer, LSQ_WRITER);
	if (!err && nobjects == 0)
		err = lsq_create_root(q);
	if (!err && version == 1)
		err = lsq_migrate_v1(q, &ndirs);
	if (!err)
		err = lsq_exec(q, db, "COMMIT", "commit the schema");
	if (err)
		goto out_rollback;
	if (version == 1)
		eng_logf(&q->base.log, LOG_INFO,
			 "sqlite '%s': migrated schema version 1 to %d: "
			 "merkle hashes computed, directories: %zu",
			 q->path, LSQ_SCHEMA_VERSION, ndirs);

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
