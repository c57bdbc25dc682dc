/*
 * l3_pg.c - the PostgreSQL L3 store: the tree of entries in a database that
 * several mounts, on several hosts, may share.
 *
 * It keeps exactly the contract and the semantics of l3_sqlite.c; only the
 * engine underneath differs.
 *
 * Schema (schema version 2), in the first schema of the search_path:
 *
 *     CREATE TABLE tierfs_meta (
 *             key        text PRIMARY KEY,
 *             value      bigint,            -- numeric settings
 *             text_value text               -- textual settings
 *     );
 *         'format'         text_value 'tierfs'   marks the tables as ours
 *         'schema_version' value 2               refused when newer
 *         'next_ino'       value 2..             lowest ino never handed out
 *
 *     CREATE TABLE entries (
 *             ino          bigint PRIMARY KEY,
 *             parent       bigint NOT NULL,     -- 0 for the root only
 *             name         bytea NOT NULL,      -- '' for the root only
 *             stem         bytea,               -- NULL for directories
 *             kind         smallint NOT NULL,   -- enum item_kind
 *             size         bigint NOT NULL,
 *             hash         bytea,               -- 32 bytes, NULL when zero
 *             version      bigint NOT NULL,
 *             mtime_ns     bigint NOT NULL,
 *             ctime_ns     bigint NOT NULL,
 *             mode         integer NOT NULL,
 *             uid          bigint NOT NULL,
 *             gid          bigint NOT NULL,
 *             explicit_dir boolean NOT NULL,
 *             state        text,                -- NULL when none or empty
 *             xattrs       bytea,               -- NULL when empty
 *             merkle       bytea,               -- 32 bytes, directories
 *             CONSTRAINT entries_parent_name UNIQUE (parent, name)
 *     );
 *     CREATE UNIQUE INDEX entries_parent_stem ON entries (parent, stem)
 *             WHERE stem IS NOT NULL;
 *
 *     CREATE TABLE contents (
 *             ino  bigint PRIMARY KEY,      -- entries.ino of a file
 *             data bytea NOT NULL
 *     );
 *
 * Names and stems are bytea: PostgreSQL compares bytea with memcmp() and
 * puts the shorter first on a tie, with no collation involved, so the
 * (parent, name) index gives the listing order and serves lookups and
 * keyset-paged listings ("parent = $1 AND name > $2 ORDER BY name LIMIT $3")
 * without a sort. Stems and content are as in l3_sqlite.c: the partial
 * unique index on (parent, stem) refuses two files of one item ID, content
 * lives in its own table so lookups and listings never read it, and a file
 * without a content row has empty content. The root row (ino 1, parent 0,
 * name '', a directory with mode 0755 owned by the process that created the
 * schema, explicit) is written with the schema.
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
 * Creation and migrations. l3_pg_open() runs one transaction that first
 * takes a transaction-level advisory lock (LPG_LOCK_CLASS, LPG_LOCK_SCHEMA),
 * so that mounts starting together queue up instead of racing; then it
 * creates the tables, the meta rows and the root row when tierfs_meta does
 * not exist (refusing with -EINVAL when entries or contents exist without
 * it: someone else's tables), or checks the format and the schema version:
 * a newer version is refused with -EINVAL, the current one is used as is,
 * and an older one is upgraded one version at a time, under the same lock
 * and in the same transaction (all or nothing), each step setting
 * schema_version. Mounts that open together wait on the lock, and then see
 * the new version. The one step so far, 1 to 2 (lpg_migrate_2), adds the
 * merkle column and computes it for every directory under the root, deepest
 * first, one UPDATE per depth, and logs how many at INFO level. A mount of
 * an older build that is already running when another migrates keeps
 * writing without updating merkle: upgrade all mounts together.
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
 * Connections. Up to LPG_POOL_MAX PGconn in a pool (pool.h): a thread takes
 * one for one operation and gives it back, waiting at most LPG_POOL_WAIT_S
 * for one when all are busy. A connection that fails (bad status, or a
 * connection error from a statement) is closed and its slot freed; the next
 * use opens a new one. An operation that failed that way on a connection
 * that had been idle in the pool (the server may have restarted meanwhile)
 * is run once more on a freshly opened connection; every operation is safe
 * to repeat (apply() writes final states, a lost inode range is never
 * reused). Connections use libpq's conninfo as given (a URI or key=value
 * words; PG* variables and ~/.pgpass apply), with fallback_application_name
 * 'tierfs' and, unless the conninfo or PGCONNECT_TIMEOUT sets one,
 * connect_timeout=5; client_encoding is set to the server's, so text (the
 * state tag) is never converted.
 *
 * Statements. Every connection prepares the statements of lpg_stmts once
 * (PQprepare) and runs them with PQexecPrepared: get, lookup, list, read,
 * fetch, has_children, stats, alloc_ino and the six of apply(). All
 * parameters and results use the binary format: integers in network byte
 * order, bytea as raw bytes (so content round-trips byte for byte, NULs
 * included, with no escaping), booleans as one byte, text as its bytes,
 * arrays in array_recv's format (lpg_arr). Transaction control and the
 * schema work at open use PQexec, in the text format; the migration runs
 * the statement it shares with apply() by its text (PQexecParams), as the
 * connection setting up the schema has not prepared any yet.
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
 *
 * libpq and SQLSTATE codes become negative errno values in lpg_errno() only,
 * which also logs the server's message. Logs name the server as
 * 'host:port/dbname' and never show the conninfo, which may hold a
 * password; libpq's reason for refusing a conninfo is not logged either,
 * as it may quote the password.
 *
 * apply() and lookup() refuse what the store.h contract rules out exactly as
 * l3_sqlite.c does: apply() returns -EINVAL and logs, lookup() answers
 * -ENOENT.
 */
#include <endian.h>
#include <errno.h>
#include <stdatomic.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "l3_pg.h"
#include "merkle.h"
#include "pool.h"

#define LPG_SCHEMA_VERSION 2
#define LPG_FORMAT "tierfs"
#define LPG_FIRST_INO 2
#define LPG_POOL_MAX 4
#define LPG_POOL_WAIT_S 30 /* how long a thread waits for a connection */
#define LPG_CONNECT_TIMEOUT "5"
#define LPG_APPLY_TRIES 8      /* runs of one batch that meets conflicts */
#define LPG_OPTIMISTIC_TRIES 2 /* then the exclusive write lock */
#define LPG_CHUNK_ROWS 1000    /* rows per statement */
#define LPG_CHUNK_BYTES (16u << 20)
#define LPG_BIG_CONTENT (256u << 10)
#define LPG_LOCK_CLASS 0x74696572 /* "tier": the advisory lock's first key */
#define LPG_LOCK_SCHEMA 1 /* second key: creating or migrating the schema */
#define LPG_LOCK_WRITE 2  /* second key: apply() */
/* How far up S_TOUCHED walks from a directory: only a cycle of parents (a
 * corrupt tree) gets this far; it would otherwise walk forever. */
#define LPG_MAX_DEPTH 65536

/* Type OIDs of the binary parameters (pg_type.h is a server header). */
#define LPG_BOOLOID 16
#define LPG_BYTEAOID 17
#define LPG_INT8OID 20
#define LPG_INT2OID 21
#define LPG_INT4OID 23
#define LPG_TEXTOID 25
#define LPG_BOOLARRAYOID 1000
#define LPG_BYTEAARRAYOID 1001
#define LPG_INT2ARRAYOID 1005
#define LPG_INT4ARRAYOID 1007
#define LPG_TEXTARRAYOID 1009
#define LPG_INT8ARRAYOID 1016

_Static_assert(ITEM_DIR == 0 && STORE_ROOT_INO == 1,
	       "the statements spell these out");
_Static_assert(MERKLE_TYPE_DIR == 0x64 && MERKLE_TYPE_FILE == 0x66 &&
		       MERKLE_LEN == 32 && ITEM_HASH_LEN == MERKLE_LEN,
	       "LPG_MERKLE_OF_D spells these out");

static const char lpg_schema_sql[] =
	"CREATE TABLE tierfs_meta ("
	" key text PRIMARY KEY,"
	" value bigint,"
	" text_value text"
	");"
	"CREATE TABLE entries ("
	" ino bigint PRIMARY KEY,"
	" parent bigint NOT NULL,"
	" name bytea NOT NULL,"
	" stem bytea,"
	" kind smallint NOT NULL,"
	" size bigint NOT NULL,"
	" hash bytea,"
	" version bigint NOT NULL,"
	" mtime_ns bigint NOT NULL,"
	" ctime_ns bigint NOT NULL,"
	" mode integer NOT NULL,"
	" uid bigint NOT NULL,"
	" gid bigint NOT NULL,"
	" explicit_dir boolean NOT NULL,"
	" state text,"
	" xattrs bytea,"
	" merkle bytea,"
	" CONSTRAINT entries_parent_name UNIQUE (parent, name)"
	");"
	"CREATE UNIQUE INDEX entries_parent_stem ON entries (parent, stem)"
	" WHERE stem IS NOT NULL;"
	"CREATE TABLE contents ("
	" ino bigint PRIMARY KEY,"
	" data bytea NOT NULL"
	");";

/* The columns every row query returns, in the order lpg_row_decode reads. */
#define LPG_ROW_COLS                                                           \
	"ino, parent, name, kind, size, hash, version, mtime_ns, ctime_ns,"    \
	" mode, uid, gid, explicit_dir, state, xattrs, merkle"

/* The same, qualified, for a join of entries AS e. */
#define LPG_ROW_COLS_E                                                         \
	"e.ino, e.parent, e.name, e.kind, e.size, e.hash, e.version,"          \
	" e.mtime_ns, e.ctime_ns, e.mode, e.uid, e.gid, e.explicit_dir,"       \
	" e.state, e.xattrs, e.merkle"

enum lpg_col {
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
	COL_N,
};

/* The columns of an entries row as apply() writes them (E_* are the
 * parameters of S_INS_ENTRIES, one array each). */
enum lpg_ecol {
	E_INO,
	E_PARENT,
	E_NAME,
	E_STEM,
	E_KIND,
	E_SIZE,
	E_HASH,
	E_VERSION,
	E_MTIME,
	E_CTIME,
	E_MODE,
	E_UID,
	E_GID,
	E_EXPLICIT,
	E_STATE,
	E_XATTRS,
	E_N,
};

#define LPG_MAX_PARAMS E_N

enum lpg_stmt {
	S_GET,
	S_LOOKUP,
	S_LIST,
	S_READ,
	S_FETCH,
	S_HAS_CHILDREN,
	S_STATS,
	S_ALLOC,
	S_SCAN,
	S_DEL_ENTRIES,
	S_DEL_CONTENTS,
	S_INS_ENTRIES,
	S_PUT_CONTENTS,
	S_PUT_CONTENT,
	S_TOUCHED,
	S_MERKLE,
	S_N,
};

/*
 * The Merkle hash (merkle.h) of the directory row "d", from its children's
 * rows as they stand: for each child in name order (bytea order is memcmp
 * order, shorter first), name | 0x00 | 'd' or 'f' | the child's hash (a
 * directory's merkle, a file's hash; 32 zero bytes when NULL, as store_row
 * reports an unknown hash), all hashed by the server, so no child row
 * crosses the network. No children: SHA-256 of no bytes. decode() rather
 * than '\x..' literals keeps it independent of standard_conforming_strings.
 */
#define LPG_MERKLE_OF_D                                                        \
	"sha256(coalesce((SELECT string_agg(c.name"                            \
	" || CASE WHEN c.kind = 0 THEN decode('0064', 'hex')"                  \
	" ELSE decode('0066', 'hex') END"                                      \
	" || coalesce(CASE WHEN c.kind = 0 THEN c.merkle ELSE c.hash END,"     \
	" decode(repeat('00', 32), 'hex')), ''::bytea ORDER BY c.name)"        \
	" FROM entries AS c WHERE c.parent = d.ino), ''::bytea))"

struct lpg_stmt_def {
	const char *name;
	const char *sql;
	int nparams;
	Oid types[LPG_MAX_PARAMS];
};

static const struct lpg_stmt_def lpg_stmts[S_N] = {
	[S_GET] = {"lpg_get",
		   "SELECT " LPG_ROW_COLS " FROM entries WHERE ino = $1",
		   1,
		   {LPG_INT8OID}},
	[S_LOOKUP] = {"lpg_lookup",
		      "SELECT " LPG_ROW_COLS " FROM entries"
		      " WHERE parent = $1 AND name = $2",
		      2,
		      {LPG_INT8OID, LPG_BYTEAOID}},
	[S_LIST] = {"lpg_list",
		    "SELECT " LPG_ROW_COLS " FROM entries"
		    " WHERE parent = $1 AND name > $2 ORDER BY name LIMIT $3",
		    3,
		    {LPG_INT8OID, LPG_BYTEAOID, LPG_INT8OID}},
	[S_READ] =
		{"lpg_read",
		 "SELECT c.data FROM entries AS e"
		 " LEFT JOIN contents AS c ON c.ino = e.ino WHERE e.ino = $1",
		 1,
		 {LPG_INT8OID}},
	[S_FETCH] =
		{"lpg_fetch",
		 "SELECT " LPG_ROW_COLS_E ", c.data FROM entries AS e"
		 " LEFT JOIN contents AS c ON c.ino = e.ino WHERE e.ino = $1",
		 1,
		 {LPG_INT8OID}},
	[S_HAS_CHILDREN] = {"lpg_has_children",
			    "SELECT 1 FROM entries WHERE parent = $1 LIMIT 1",
			    1,
			    {LPG_INT8OID}},
	[S_STATS] = {"lpg_stats",
		     "SELECT count(*),"
		     " coalesce(sum(size) FILTER (WHERE kind <> 0), 0)::bigint"
		     " FROM entries WHERE ino <> 1",
		     0,
		     {0}},
	[S_ALLOC] = {"lpg_alloc",
		     "UPDATE tierfs_meta SET value = value + $1"
		     " WHERE key = 'next_ino' AND value >= 2"
		     " AND value <= 9223372036854775807 - $1"
		     " RETURNING value - $1",
		     1,
		     {LPG_INT8OID}},
	[S_SCAN] = {"lpg_scan",
		    "SELECT ino, parent, name FROM entries"
		    " WHERE ino > $1 AND ino <> 1 ORDER BY ino LIMIT $2",
		    2,
		    {LPG_INT8OID, LPG_INT8OID}},
	[S_DEL_ENTRIES] = {"lpg_del_entries",
			   "WITH d AS (DELETE FROM entries WHERE ino = ANY($1)"
			   " RETURNING parent) SELECT DISTINCT parent FROM d",
			   1,
			   {LPG_INT8ARRAYOID}},
	[S_DEL_CONTENTS] = {"lpg_del_contents",
			    "DELETE FROM contents WHERE ino = ANY($1)",
			    1,
			    {LPG_INT8ARRAYOID}},
	[S_INS_ENTRIES] =
		{"lpg_ins_entries",
		 "INSERT INTO entries (ino, parent, name, stem, kind,"
		 " size, hash, version, mtime_ns, ctime_ns, mode, uid,"
		 " gid, explicit_dir, state, xattrs)"
		 " SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7,"
		 " $8, $9, $10, $11, $12, $13, $14, $15, $16)",
		 E_N,
		 {
			 [E_INO] = LPG_INT8ARRAYOID,
			 [E_PARENT] = LPG_INT8ARRAYOID,
			 [E_NAME] = LPG_BYTEAARRAYOID,
			 [E_STEM] = LPG_BYTEAARRAYOID,
			 [E_KIND] = LPG_INT2ARRAYOID,
			 [E_SIZE] = LPG_INT8ARRAYOID,
			 [E_HASH] = LPG_BYTEAARRAYOID,
			 [E_VERSION] = LPG_INT8ARRAYOID,
			 [E_MTIME] = LPG_INT8ARRAYOID,
			 [E_CTIME] = LPG_INT8ARRAYOID,
			 [E_MODE] = LPG_INT4ARRAYOID,
			 [E_UID] = LPG_INT8ARRAYOID,
			 [E_GID] = LPG_INT8ARRAYOID,
			 [E_EXPLICIT] = LPG_BOOLARRAYOID,
			 [E_STATE] = LPG_TEXTARRAYOID,
			 [E_XATTRS] = LPG_BYTEAARRAYOID,
		 }},
	[S_PUT_CONTENTS] =
		{"lpg_put_contents",
		 "INSERT INTO contents (ino, data)"
		 " SELECT * FROM unnest($1, $2)"
		 " ON CONFLICT (ino) DO UPDATE SET data = EXCLUDED.data",
		 2,
		 {LPG_INT8ARRAYOID, LPG_BYTEAARRAYOID}},
	[S_PUT_CONTENT] =
		{"lpg_put_content",
		 "INSERT INTO contents (ino, data) VALUES ($1, $2)"
		 " ON CONFLICT (ino) DO UPDATE SET data = EXCLUDED.data",
		 2,
		 {LPG_INT8OID, LPG_BYTEAOID}},
	/* The directories of $1 that exist and all their ancestors, each
	 * with its level: the longest walk up from a directory of $1 to it.
	 * A directory's level is above that of each of its descendants in
	 * the set, so updating level by level, lowest first, is bottom-up.
	 * UNION drops the walks that meet at the same level. */
	[S_TOUCHED] = {"lpg_touched",
		       "WITH RECURSIVE up (ino, parent, level) AS ("
		       " SELECT ino, parent, 0 FROM entries"
		       " WHERE ino = ANY($1) AND kind = 0"
		       " UNION"
		       " SELECT e.ino, e.parent, u.level + 1 FROM up AS u"
		       " JOIN entries AS e ON e.ino = u.parent"
		       " WHERE e.kind = 0 AND u.level < $2)"
		       " SELECT ino, max(level)::bigint AS level FROM up"
		       " GROUP BY ino ORDER BY level, ino",
		       2,
		       {LPG_INT8ARRAYOID, LPG_INT8OID}},
	[S_MERKLE] = {"lpg_merkle",
		      "UPDATE entries AS d SET merkle = " LPG_MERKLE_OF_D
		      " WHERE d.ino = ANY($1) AND d.kind = 0"
		      " RETURNING d.ino, d.merkle",
		      1,
		      {LPG_INT8ARRAYOID}},
};

/* Every parameter and every result column in the binary format. */
static const int lpg_binary[LPG_MAX_PARAMS] = {1, 1, 1, 1, 1, 1, 1, 1,
					       1, 1, 1, 1, 1, 1, 1, 1};

struct lpg_conn {
	struct pool_conn pool; /* first; .reused: it had been idle */
	PGconn *pg;
	bool broken;   /* a connection error: close it, never reuse it */
	bool conflict; /* the last error was a conflict worth a new try */
	bool prepared; /* lpg_stmts are prepared: not while opening */
};

struct lpg {
	struct store base; /* first: the engine sees only this */
	char *conninfo;	   /* as given: may hold a password, never logged */
	bool add_timeout;  /* pass connect_timeout=LPG_CONNECT_TIMEOUT */
	char target[256];  /* "host:port/dbname" for logs */
	/* An outage is logged once: set by the first failed connect, cleared
	 * (and "connected again" logged) by the next successful one. */
	atomic_bool down_logged;

	struct pool *pool; /* of struct lpg_conn; NULL until made */
};

static struct lpg *lpg_of(struct store *s)
{
	return (struct lpg *)s;
}

/* ---- errors ---- */

/* Copies @msg into @buf on one line: each run of white space becomes one
 * space, and none is left at either end. */
static const char *lpg_one_line(const char *msg, char *buf, size_t size)
{
	size_t n = 0;

	for (; *msg && n + 1 < size; msg++) {
		bool space = *msg == ' ' || *msg == '\n' || *msg == '\r' ||
			     *msg == '\t';

		if (!space)
			buf[n++] = *msg;
		else if (n && buf[n - 1] != ' ')
			buf[n++] = ' ';
	}
	while (n && buf[n - 1] == ' ')
		n--;
	buf[n] = '\0';
	return buf;
}

static bool lpg_has(const char *msg, const char *word)
{
	return strstr(msg, word) != NULL;
}

/*
 * The one place where libpq failures become errno values. @res is the
 * failed result (NULL when there is none: a failed connection, or no memory
 * for a result), @pg the connection it came from (NULL when none could be
 * made); @c, when given, is marked broken (close it) or conflicting (try the
 * transaction again). Logs the server's message with @what, the action that
 * failed. Expected answers (a refused unique key, a conflict that is tried
 * again) are logged at debug level only.
 *
 * With a SQLSTATE (a server error) the class decides. A connection that
 * failed has none, nor a PGresult (libpq keeps the server's code to itself),
 * so its message is matched against libpq's and the server's wording for
 * refused logins; anything else there (refused, unreachable, starting up,
 * too many clients) is worth trying again later: -EAGAIN.
 */
static int lpg_errno(const struct lpg *q, PGconn *pg, const PGresult *res,
		     struct lpg_conn *c, const char *what)
{
	const char *code =
		res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg =
		res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	bool lost = !pg || PQstatus(pg) != CONNECTION_OK;
	int level = LOG_ERR;
	char line[512];
	int err = -EIO;

	if (!msg || !msg[0])
		msg = res ? PQresultErrorMessage(res) : NULL;
	if ((!msg || !msg[0]) && pg)
		msg = PQerrorMessage(pg);
	if (!msg || !msg[0])
		msg = pg ? "unknown error" : "out of memory";

	if (!code) {
		if (!pg || (!res && !lost)) {
			err = -ENOMEM;
		} else if (!lost) {
			err = -EIO; /* a client-side failure on a good link */
		} else if (PQconnectionNeedsPassword(pg) ||
			   lpg_has(msg, "authentication failed") ||
			   lpg_has(msg, "no pg_hba.conf entry") ||
			   lpg_has(msg, "permission denied") ||
			   (lpg_has(msg, "role \"") &&
			    lpg_has(msg, "does not exist"))) {
			err = -EACCES;
		} else if (lpg_has(msg, "database \"") &&
			   lpg_has(msg, "does not exist")) {
			err = -EINVAL;
		} else {
			err = -EAGAIN;
			level = LOG_WARNING;
		}
	} else if (strcmp(code, "23505") == 0) {
		const char *key =
			PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);

		if (key && (strcmp(key, "entries_pkey") == 0 ||
			    strcmp(key, "contents_pkey") == 0)) {
			/* duplicates are refused before SQL: a race */
			err = -EAGAIN;
			if (c)
				c->conflict = true;
		} else {
			err = -EEXIST;
		}
		level = LOG_DEBUG;
	} else if (strcmp(code, "40001") == 0 || strcmp(code, "40P01") == 0) {
		err = -EAGAIN;
		level = LOG_DEBUG;
		if (c)
			c->conflict = true;
	} else if (strncmp(code, "08", 2) == 0 || strcmp(code, "57P01") == 0 ||
		   strcmp(code, "57P02") == 0 || strcmp(code, "57P03") == 0) {
		err = -EAGAIN;
		level = LOG_WARNING;
		if (c)
			c->broken = true;
	} else if (strcmp(code, "53100") == 0) {
		err = -ENOSPC;
	} else if (strcmp(code, "25006") == 0) {
		err = -EROFS;
	} else if (strcmp(code, "42501") == 0) {
		err = -EACCES;
	} else if (strcmp(code, "22021") == 0 || strcmp(code, "22P05") == 0) {
		err = -EINVAL; /* a state tag the database encoding refuses */
	}
	if (lost && c)
		c->broken = true;
	if (err == -EAGAIN && level == LOG_WARNING && !code &&
	    atomic_exchange(&((struct lpg *)q)->down_logged, true))
		level = LOG_DEBUG; /* the outage was logged already */

	eng_logf(&q->base.log, level, "postgres '%s': cannot %s: %s%s%s",
		 q->target, what, lpg_one_line(msg, line, sizeof(line)),
		 code ? " / SQLSTATE " : "", code ? code : "");
	return err;
}

/* ---- binary values ---- */

static void lpg_put64(char out[8], int64_t v)
{
	uint64_t be = htobe64((uint64_t)v);

	memcpy(out, &be, 8);
}

static int64_t lpg_get64(const char *p)
{
	uint64_t be;

	memcpy(&be, p, 8);
	return (int64_t)be64toh(be);
}

static int32_t lpg_get32(const char *p)
{
	uint32_t be;

	memcpy(&be, p, 4);
	return (int32_t)be32toh(be);
}

static int16_t lpg_get16(const char *p)
{
	uint16_t be;

	memcpy(&be, p, 2);
	return (int16_t)be16toh(be);
}

/*
 * A one-dimensional array in array_recv's binary format, built row by row:
 *     int32 ndim = 1, int32 has_nulls, Oid element type,
 *     int32 length, int32 lower bound = 1,
 *     then per element: int32 byte length (-1 for NULL), the bytes.
 */
struct lpg_arr {
	char *p;
	size_t len, cap;
	uint32_t n;
	bool has_null;
	bool oom;
};

#define LPG_ARR_HEADER 20

static void lpg_arr_release(struct lpg_arr *a)
{
	free(a->p);
	memset(a, 0, sizeof(*a));
}

static void lpg_arr_append(struct lpg_arr *a, const void *p, size_t len)
{
	if (a->oom)
		return;
	if (len > a->cap - a->len) {
		size_t cap = a->cap ? a->cap : 256;
		char *np;

		while (cap - a->len < len) {
			if (cap > SIZE_MAX / 2) {
				a->oom = true;
				return;
			}
			cap *= 2;
		}
		np = realloc(a->p, cap);
		if (!np) {
			a->oom = true;
			return;
		}
		a->p = np;
		a->cap = cap;
	}
	if (len)
		memcpy(a->p + a->len, p, len);
	a->len += len;
}

static void lpg_arr_u32(struct lpg_arr *a, uint32_t v)
{
	uint32_t be = htobe32(v);

	lpg_arr_append(a, &be, 4);
}

/* Empties @a for a new array of @elem (a type OID). */
static void lpg_arr_start(struct lpg_arr *a, Oid elem)
{
	a->len = 0;
	a->n = 0;
	a->has_null = false;
	lpg_arr_u32(a, 1);    /* ndim */
	lpg_arr_u32(a, 0);    /* has_nulls, set by lpg_arr_finish */
	lpg_arr_u32(a, elem); /* element type */
	lpg_arr_u32(a, 0);    /* length, set by lpg_arr_finish */
	lpg_arr_u32(a, 1);    /* lower bound */
}

static void lpg_arr_bytes(struct lpg_arr *a, const void *p, size_t len)
{
	if (len > INT32_MAX) {
		a->oom = true;
		return;
	}
	lpg_arr_u32(a, (uint32_t)len);
	lpg_arr_append(a, p, len);
	a->n++;
}

static void lpg_arr_null(struct lpg_arr *a)
{
	lpg_arr_u32(a, UINT32_MAX); /* -1 */
	a->has_null = true;
	a->n++;
}

static void lpg_arr_i64(struct lpg_arr *a, int64_t v)
{
	char b[8];

	lpg_put64(b, v);
	lpg_arr_bytes(a, b, 8);
}

static void lpg_arr_i32(struct lpg_arr *a, int32_t v)
{
	uint32_t be = htobe32((uint32_t)v);

	lpg_arr_bytes(a, &be, 4);
}

static void lpg_arr_i16(struct lpg_arr *a, int16_t v)
{
	uint16_t be = htobe16((uint16_t)v);

	lpg_arr_bytes(a, &be, 2);
}

static void lpg_arr_bool(struct lpg_arr *a, bool v)
{
	char b = v ? 1 : 0;

	lpg_arr_bytes(a, &b, 1);
}

/* Completes the header; -ENOMEM when an append failed. */
static int lpg_arr_finish(struct lpg_arr *a)
{
	uint32_t be;

	if (a->oom || a->len < LPG_ARR_HEADER)
		return -ENOMEM;
	be = htobe32(a->has_null ? 1 : 0);
	memcpy(a->p + 4, &be, 4);
	be = htobe32(a->n);
	memcpy(a->p + 12, &be, 4);
	return 0;
}

/* ---- connections ---- */

static void lpg_conn_close(struct lpg_conn *c)
{
	if (!c)
		return;
	PQfinish(c->pg);
	free(c);
}

/* Runs @sql (no parameters, text results) on @c; *out gets the result when
 * @out is given (caller PQclear()s it). */
static int lpg_simple(const struct lpg *q, struct lpg_conn *c, const char *sql,
		      PGresult **out, const char *what)
{
	PGresult *res = PQexec(c->pg, sql);
	ExecStatusType st = PQresultStatus(res);
	int err;

	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
		if (out)
			*out = res;
		else
			PQclear(res);
		return 0;
	}
	err = lpg_errno(q, c->pg, res, c, what);
	PQclear(res);
	return err;
}

/* Runs statement @which on @c with binary parameters and results, prepared
 * or, before lpg_conn_prepare() (opening, migrating), by its text; *out gets
 * the result when @out is given (caller PQclear()s it). */
static int lpg_exec(const struct lpg *q, struct lpg_conn *c,
		    enum lpg_stmt which, const char *const *values,
		    const int *lengths, PGresult **out, const char *what)
{
	const struct lpg_stmt_def *d = &lpg_stmts[which];
	PGresult *res;
	ExecStatusType st;
	int err;

	if (c->prepared)
		res = PQexecPrepared(c->pg, d->name, d->nparams, values,
				     lengths, lpg_binary, 1);
	else
		res = PQexecParams(c->pg, d->sql, d->nparams, d->types, values,
				   lengths, lpg_binary, 1);
	st = PQresultStatus(res);
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
		if (out)
			*out = res;
		else
			PQclear(res);
		return 0;
	}
	err = lpg_errno(q, c->pg, res, c, what);
	PQclear(res);
	return err;
}

static int lpg_conn_prepare(const struct lpg *q, struct lpg_conn *c)
{
	for (int i = 0; i < S_N; i++) {
		const struct lpg_stmt_def *d = &lpg_stmts[i];
		PGresult *res =
			PQprepare(c->pg, d->name, d->sql, d->nparams, d->types);
		int err = 0;

		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			err = lpg_errno(q, c->pg, res, c,
					"prepare a statement");
		PQclear(res);
		if (err)
			return err;
	}
	c->prepared = true;
	return 0;
}

/* Opens a connection; prepares its statements when @prepare (the schema
 * must exist by then). */
static int lpg_conn_open(const struct lpg *q, bool prepare,
			 struct lpg_conn **out)
{
	const char *keys[4], *vals[4];
	struct lpg_conn *c;
	int i = 0, err;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	/* Later words override earlier ones: the conninfo comes last. */
	keys[i] = "fallback_application_name";
	vals[i++] = "tierfs";
	if (q->add_timeout) {
		keys[i] = "connect_timeout";
		vals[i++] = LPG_CONNECT_TIMEOUT;
	}
	keys[i] = "dbname";
	vals[i++] = q->conninfo;
	keys[i] = NULL;
	vals[i] = NULL;
	c->pg = PQconnectdbParams(keys, vals, 1);
	if (!c->pg || PQstatus(c->pg) != CONNECTION_OK) {
		err = lpg_errno(q, c->pg, NULL, NULL, "connect");
		goto out_close;
	}
	/* No conversion of text: the server's encoding on both sides. */
	err = lpg_simple(q, c,
			 "SELECT set_config('client_encoding',"
			 " current_setting('server_encoding'), false)",
			 NULL, "set the client encoding");
	if (err)
		goto out_close;
	if (prepare) {
		err = lpg_conn_prepare(q, c);
		if (err)
			goto out_close;
	}
	if (atomic_exchange(&((struct lpg *)q)->down_logged, false))
		eng_logf(&q->base.log, LOG_WARNING,
			 "postgres '%s': connected again", q->target);
	*out = c;
	return 0;

out_close:
	lpg_conn_close(c);
	return err;
}

/* pool_ops.open: a connection with its statements prepared. */
static int lpg_pool_open(void *ctx, struct pool_conn **out)
{
	struct lpg_conn *c;
	int err;

	err = lpg_conn_open(ctx, true, &c);
	if (!err)
		*out = &c->pool;
	return err;
}

/* pool_ops.close */
static void lpg_pool_close(void *ctx, struct pool_conn *c)
{
	lpg_conn_close((struct lpg_conn *)c);
}

static const struct pool_ops lpg_pool_ops = {
	.open = lpg_pool_open,
	.close = lpg_pool_close,
};

/* Takes a connection for one operation (pool_get(): a new one with @fresh);
 * -EAGAIN, logged, when none came free within LPG_POOL_WAIT_S. */
static int lpg_conn_get(struct lpg *q, bool fresh, struct lpg_conn **out)
{
	struct pool_conn *pc;
	struct lpg_conn *c;
	int err;

	err = pool_get(q->pool, fresh, &pc);
	if (err == -ETIMEDOUT) {
		eng_logf(&q->base.log, LOG_WARNING,
			 "postgres '%s': no connection free after %d s",
			 q->target, LPG_POOL_WAIT_S);
		return -EAGAIN;
	}
	if (err)
		return err;
	c = (struct lpg_conn *)pc;
	c->conflict = false;
	*out = c;
	return 0;
}

/* Gives @c back, or closes it when it failed or is not idle. */
static void lpg_conn_put(struct lpg *q, struct lpg_conn *c)
{
	if (!c->broken && PQstatus(c->pg) == CONNECTION_OK &&
	    PQtransactionStatus(c->pg) == PQTRANS_IDLE)
		pool_put(q->pool, &c->pool);
	else
		pool_drop(q->pool, &c->pool);
}

/*
 * Runs one statement on a pooled connection, once more on a fresh one when
 * a connection that had been idle turns out to be lost. On success returns
 * 0 with the result in *res and the connection in *cp: the caller
 * PQclear()s the one and lpg_conn_put()s the other.
 */
static int lpg_query(struct lpg *q, enum lpg_stmt which,
		     const char *const *values, const int *lengths,
		     struct lpg_conn **cp, PGresult **res, const char *what)
{
	bool fresh = false;
	struct lpg_conn *c;
	int err;

	for (;;) {
		bool again;

		err = lpg_conn_get(q, fresh, &c);
		if (err)
			return err;
		err = lpg_exec(q, c, which, values, lengths, res, what);
		if (!err) {
			*cp = c;
			return 0;
		}
		again = !fresh && c->broken && c->pool.reused;
		lpg_conn_put(q, c);
		if (!again)
			return err;
		fresh = true;
	}
}

/* ---- rows ---- */

/* Logs a row that does not decode and returns -EIO. */
static int lpg_corrupt(const struct lpg *q, int64_t ino, const char *why)
{
	eng_logf(&q->base.log, LOG_ERR, "postgres '%s': corrupt entry %lld: %s",
		 q->target, (long long)ino, why);
	return -EIO;
}

/* Points *p at column @col of row @row when it is not NULL and is @len
 * bytes long (any length when @len < 0); false otherwise. */
static bool lpg_field(const PGresult *res, int row, int col, int len,
		      const char **p)
{
	if (PQgetisnull(res, row, col))
		return false;
	if (len >= 0 && PQgetlength(res, row, col) != len)
		return false;
	*p = PQgetvalue(res, row, col);
	return true;
}

/* Fills @out from row @row of @res (columns LPG_ROW_COLS first, binary). */
static int lpg_row_decode(const struct lpg *q, const PGresult *res, int row,
			  struct store_row *out)
{
	struct store_row r;
	const char *p;
	int64_t ino;
	int kind, n;

	if (PQnfields(res) < COL_N)
		return lpg_corrupt(q, 0, "bad column count");
	if (!lpg_field(res, row, COL_INO, 8, &p))
		return lpg_corrupt(q, 0, "bad inode number");
	ino = lpg_get64(p);
	memset(&r, 0, sizeof(r));
	r.ino = (uint64_t)ino;
	if (!lpg_field(res, row, COL_PARENT, 8, &p))
		return lpg_corrupt(q, ino, "bad parent");
	r.parent = (uint64_t)lpg_get64(p);

	if (!lpg_field(res, row, COL_NAME, -1, &p))
		return lpg_corrupt(q, ino, "bad name");
	n = PQgetlength(res, row, COL_NAME);
	if (n > STORE_NAME_MAX || (n && memchr(p, '\0', (size_t)n)))
		return lpg_corrupt(q, ino, "bad name");
	if (n)
		memcpy(r.name, p, (size_t)n);
	r.name[n] = '\0';

	if (!lpg_field(res, row, COL_KIND, 2, &p))
		return lpg_corrupt(q, ino, "bad kind");
	kind = lpg_get16(p);
	if (kind != ITEM_DIR && kind != ITEM_JSON && kind != ITEM_BINARY)
		return lpg_corrupt(q, ino, "bad kind");
	r.meta.kind = (enum item_kind)kind;
	if (!lpg_field(res, row, COL_SIZE, 8, &p))
		return lpg_corrupt(q, ino, "bad size");
	r.meta.size = (uint64_t)lpg_get64(p);

	if (!PQgetisnull(res, row, COL_HASH)) {
		if (!lpg_field(res, row, COL_HASH, ITEM_HASH_LEN, &p))
			return lpg_corrupt(q, ino, "bad hash");
		memcpy(r.meta.hash, p, ITEM_HASH_LEN);
	}
	if (!lpg_field(res, row, COL_VERSION, 8, &p))
		return lpg_corrupt(q, ino, "bad version");
	r.meta.version = (uint64_t)lpg_get64(p);
	if (!lpg_field(res, row, COL_MTIME, 8, &p))
		return lpg_corrupt(q, ino, "bad mtime");
	r.meta.mtime_ns = lpg_get64(p);
	if (!lpg_field(res, row, COL_CTIME, 8, &p))
		return lpg_corrupt(q, ino, "bad ctime");
	r.meta.ctime_ns = lpg_get64(p);
	if (!lpg_field(res, row, COL_MODE, 4, &p))
		return lpg_corrupt(q, ino, "bad mode");
	r.meta.mode = (uint32_t)lpg_get32(p);
	if (!lpg_field(res, row, COL_UID, 8, &p))
		return lpg_corrupt(q, ino, "bad uid");
	r.meta.uid = (uint32_t)lpg_get64(p);
	if (!lpg_field(res, row, COL_GID, 8, &p))
		return lpg_corrupt(q, ino, "bad gid");
	r.meta.gid = (uint32_t)lpg_get64(p);
	if (!lpg_field(res, row, COL_EXPLICIT, 1, &p))
		return lpg_corrupt(q, ino, "bad explicit_dir");
	r.meta.explicit_dir = *p != 0;

	if (!PQgetisnull(res, row, COL_STATE)) {
		p = PQgetvalue(res, row, COL_STATE);
		n = PQgetlength(res, row, COL_STATE);
		if (n) {
			r.meta.state = strndup(p, (size_t)n);
			if (!r.meta.state)
				return -ENOMEM;
		}
	}
	if (!PQgetisnull(res, row, COL_XATTRS)) {
		p = PQgetvalue(res, row, COL_XATTRS);
		n = PQgetlength(res, row, COL_XATTRS);
		if (n) {
			r.meta.xattrs = malloc((size_t)n);
			if (!r.meta.xattrs)
				goto out_nomem;
			memcpy(r.meta.xattrs, p, (size_t)n);
			r.meta.xattrs_len = (size_t)n;
		}
	}
	/* A file's Merkle hash is its content hash; a directory's is its
	 * merkle column, all zero while unknown (NULL). */
	if (r.meta.kind != ITEM_DIR) {
		memcpy(r.merkle, r.meta.hash, ITEM_HASH_LEN);
	} else if (!PQgetisnull(res, row, COL_MERKLE)) {
		if (!lpg_field(res, row, COL_MERKLE, ITEM_HASH_LEN, &p)) {
			item_meta_release(&r.meta);
			return lpg_corrupt(q, ino, "bad merkle hash");
		}
		memcpy(r.merkle, p, ITEM_HASH_LEN);
	}
	*out = r;
	return 0;

out_nomem:
	item_meta_release(&r.meta);
	return -ENOMEM;
}

/* ---- store ops ---- */

static void lpg_free(struct store *s)
{
	struct lpg *q = lpg_of(s);

	if (!q)
		return;
	/* Every connection is idle by now: the caller has stopped using s. */
	pool_free(q->pool);
	free(q->conninfo);
	free(q);
}

/* Runs S_GET or S_LOOKUP and decodes the one row into @out; -ENOENT when
 * there is none. */
static int lpg_get_row(struct lpg *q, enum lpg_stmt which,
		       const char *const *values, const int *lengths,
		       struct store_row *out, const char *what)
{
	struct lpg_conn *c;
	PGresult *res;
	int err;

	err = lpg_query(q, which, values, lengths, &c, &res, what);
	if (err)
		return err;
	if (PQntuples(res) == 0)
		err = -ENOENT;
	else
		err = lpg_row_decode(q, res, 0, out);
	PQclear(res);
	lpg_conn_put(q, c);
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

static int lpg_list(struct store *s, uint64_t parent, const char *after,
		    struct store_row *rows, size_t limit)
{
	struct lpg *q = lpg_of(s);
	char b_parent[8], b_limit[8];
	const char *values[3] = {b_parent, NULL, b_limit};
	int lengths[3] = {8, 0, 8};
	struct lpg_conn *c;
	PGresult *res;
	int n = 0, err;

	if (!after)
		after = "";
	if (limit == 0 || parent > INT64_MAX)
		return 0;
	if (limit > INT_MAX)
		limit = INT_MAX; /* the return value is an int */

	lpg_put64(b_parent, (int64_t)parent);
	/* Cut at STORE_NAME_MAX + 1 bytes: no stored name lies between the
	 * cut and the whole of a longer @after. */
	values[1] = after;
	lengths[1] = (int)strnlen(after, STORE_NAME_MAX + 1);
	lpg_put64(b_limit, (int64_t)limit);
	err = lpg_query(q, S_LIST, values, lengths, &c, &res,
			"list a directory");
	if (err)
		return err;
	if ((size_t)PQntuples(res) > limit) {
		err = lpg_corrupt(q, 0, "too many rows in a listing");
		goto out_clear;
	}
	for (n = 0; n < PQntuples(res); n++) {
		err = lpg_row_decode(q, res, n, &rows[n]);
		if (err)
			goto out_release;
	}
	err = n;
	goto out_clear;

out_release:
	while (n)
		store_row_release(&rows[--n]);
out_clear:
	PQclear(res);
	lpg_conn_put(q, c);
	return err;
}

/* Reads the content of @ino (S_READ) or, when @row is given, its row and
 * its content in one statement (S_FETCH); see read and fetch in store.h. */
static int lpg_content(struct lpg *q, uint64_t ino, struct store_row *row,
		       void **data, size_t *len)
{
	enum lpg_stmt which = row ? S_FETCH : S_READ;
	int col = row ? COL_N : 0; /* the data column */
	char b_ino[8];
	const char *values[1] = {b_ino};
	const int lengths[1] = {8};
	struct lpg_conn *c;
	PGresult *res;
	void *buf = NULL;
	int err, n = 0;

	if (ino == 0 || ino > INT64_MAX)
		return -ENOENT;
	lpg_put64(b_ino, (int64_t)ino);
	err = lpg_query(q, which, values, lengths, &c, &res, "read content");
	if (err)
		return err;
	if (PQntuples(res) == 0) {
		err = -ENOENT;
		goto out_clear;
	}
	/* No content row (a directory, or a file never given content): 0. */
	if (!PQgetisnull(res, 0, col)) {
		n = PQgetlength(res, 0, col);
		if (n) {
			buf = malloc((size_t)n);
			if (!buf) {
				err = -ENOMEM;
				goto out_clear;
			}
			memcpy(buf, PQgetvalue(res, 0, col), (size_t)n);
		}
	}
	if (row) {
		err = lpg_row_decode(q, res, 0, row);
		if (err) {
			free(buf);
			goto out_clear;
		}
	}
	*data = buf;
	*len = (size_t)n;
	err = 0;
out_clear:
	PQclear(res);
	lpg_conn_put(q, c);
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

static int lpg_has_children(struct store *s, uint64_t parent)
{
	struct lpg *q = lpg_of(s);
	char b_parent[8];
	const char *values[1] = {b_parent};
	const int lengths[1] = {8};
	struct lpg_conn *c;
	PGresult *res;
	int err;

	if (parent > INT64_MAX)
		return 0;
	lpg_put64(b_parent, (int64_t)parent);
	err = lpg_query(q, S_HAS_CHILDREN, values, lengths, &c, &res,
			"look for children");
	if (err)
		return err;
	err = PQntuples(res) > 0 ? 1 : 0;
	PQclear(res);
	lpg_conn_put(q, c);
	return err;
}

static int lpg_stats(struct store *s, uint64_t *entries, uint64_t *bytes)
{
	struct lpg *q = lpg_of(s);
	struct lpg_conn *c;
	PGresult *res;
	const char *p0, *p1;
	int err;

	err = lpg_query(q, S_STATS, NULL, NULL, &c, &res, "count entries");
	if (err)
		return err;
	if (PQntuples(res) == 1 && lpg_field(res, 0, 0, 8, &p0) &&
	    lpg_field(res, 0, 1, 8, &p1)) {
		*entries = (uint64_t)lpg_get64(p0);
		*bytes = (uint64_t)lpg_get64(p1);
	} else {
		err = lpg_corrupt(q, 0, "bad counts");
	}
	PQclear(res);
	lpg_conn_put(q, c);
	return err;
}

static int lpg_scan(struct store *s, uint64_t after, struct store_key *keys,
		    size_t limit)
{
	struct lpg *q = lpg_of(s);
	char b_after[8], b_limit[8];
	const char *values[2] = {b_after, b_limit};
	const int lengths[2] = {8, 8};
	struct lpg_conn *c;
	PGresult *res;
	int err, n, i;

	if (limit == 0 || after >= INT64_MAX)
		return 0;
	if (limit > INT_MAX)
		limit = INT_MAX;
	lpg_put64(b_after, (int64_t)after);
	lpg_put64(b_limit, (int64_t)limit);
	err = lpg_query(q, S_SCAN, values, lengths, &c, &res,
			"scan the entries");
	if (err)
		return err;
	n = PQntuples(res);
	for (i = 0; i < n && i < (int)limit; i++) {
		const char *pi, *pp, *name;
		int len;

		if (!lpg_field(res, i, 0, 8, &pi) ||
		    !lpg_field(res, i, 1, 8, &pp) ||
		    !lpg_field(res, i, 2, -1, &name)) {
			err = lpg_corrupt(q, 0, "bad scan row");
			break;
		}
		len = PQgetlength(res, i, 2);
		if (len > STORE_NAME_MAX)
			len = STORE_NAME_MAX;
		keys[i].ino = (uint64_t)lpg_get64(pi);
		keys[i].parent = (uint64_t)lpg_get64(pp);
		memcpy(keys[i].name, name, (size_t)len);
		keys[i].name[len] = '\0';
	}
	if (!err)
		err = i;
	PQclear(res);
	lpg_conn_put(q, c);
	return err;
}

static int lpg_alloc_ino(struct store *s, uint64_t count, uint64_t *first)
{
	struct lpg *q = lpg_of(s);
	char b_count[8];
	const char *values[1] = {b_count};
	const int lengths[1] = {8};
	struct lpg_conn *c;
	PGresult *res, *why = NULL;
	const char *p;
	int err;

	if (count == 0 || count > INT64_MAX)
		return -EINVAL;
	lpg_put64(b_count, (int64_t)count);
	err = lpg_query(q, S_ALLOC, values, lengths, &c, &res,
			"allocate inodes");
	if (err)
		return err;
	if (PQntuples(res) == 1 && lpg_field(res, 0, 0, 8, &p) &&
	    lpg_get64(p) >= LPG_FIRST_INO) {
		*first = (uint64_t)lpg_get64(p);
		goto out_clear;
	}
	/* No row: the counter is missing or bad, or the range is exhausted. */
	err = lpg_simple(q, c,
			 "SELECT value FROM tierfs_meta WHERE key = 'next_ino'"
			 " AND value >= 2",
			 &why, "read the inode counter");
	if (!err && PQntuples(why) == 1) {
		eng_logf(
			&q->base.log, LOG_ERR,
			"postgres '%s': cannot allocate %llu inodes: none left",
			q->target, (unsigned long long)count);
		err = -ENOSPC;
	} else if (!err) {
		eng_logf(&q->base.log, LOG_ERR,
			 "postgres '%s': cannot allocate inodes: bad counter",
			 q->target);
		err = -EIO;
	}
	PQclear(why);
out_clear:
	PQclear(res);
	lpg_conn_put(q, c);
	return err;
}

/* Checks one change against the store.h contract; -EINVAL when it fails. */
static int lpg_check_change(const struct lpg *q, const struct store_change *ch)
{
	const char *why = store_change_problem(ch, INT64_MAX);

	if (!why && !ch->deleted && ch->has_data && ch->len > INT32_MAX)
		why = "content too large";
	if (!why)
		return 0;
	eng_logf(&q->base.log, LOG_ERR,
		 "postgres '%s': cannot apply change to inode %llu: %s",
		 q->target, (unsigned long long)ch->ino, why);
	return -EINVAL;
}

static int lpg_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* -EEXIST when two changes of @changes write the same ino (SQLite's primary
 * key refuses the second), 0 when none do. */
static int lpg_check_duplicates(const struct lpg *q,
				const struct store_change *changes, size_t n)
{
	uint64_t *inos = malloc(n * sizeof(*inos));
	size_t m = 0;
	int err = 0;

	if (!inos)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		if (!changes[i].deleted)
			inos[m++] = changes[i].ino;
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

/* ---- Merkle hashes ---- */

/* A growable set of inode numbers (sorted and deduplicated on demand). */
struct lpg_inos {
	uint64_t *v;
	size_t n, cap;
	bool oom;
};

static void lpg_inos_add(struct lpg_inos *s, uint64_t ino)
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
static int lpg_inos_finish(struct lpg_inos *s)
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

static void lpg_inos_release(struct lpg_inos *s)
{
	free(s->v);
	memset(s, 0, sizeof(*s));
}

/* The directories one run of the Merkle step recomputed, in order. */
struct lpg_tree {
	struct store_dirhash *v;
	size_t n, cap;
};

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

static void lpg_tree_release(struct lpg_tree *t)
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
static int lpg_merkle_levels(const struct lpg *q, struct lpg_conn *c,
			     const PGresult *order, struct lpg_arr *a,
			     struct lpg_tree *tree, uint64_t *count)
{
	int rows = PQntuples(order), i = 0, err = 0;

	if (PQnfields(order) != 2)
		return lpg_corrupt(q, 0, "bad directory levels");
	while (i < rows && !err) {
		const char *values[1];
		int lengths[1];
		PGresult *res = NULL;
		const char *pi, *pl;
		int64_t level;

		if (!lpg_field(order, i, 1, 8, &pl))
			return lpg_corrupt(q, 0, "bad directory level");
		level = lpg_get64(pl);
		lpg_arr_start(a, LPG_INT8OID);
		for (; i < rows && a->n < LPG_CHUNK_ROWS; i++) {
			if (!lpg_field(order, i, 0, 8, &pi) ||
			    !lpg_field(order, i, 1, 8, &pl))
				return lpg_corrupt(q, 0, "bad directory level");
			if (lpg_get64(pl) != level)
				break;
			lpg_arr_i64(a, lpg_get64(pi));
		}
		err = lpg_arr_finish(a);
		if (err)
			return err;
		values[0] = a->p;
		lengths[0] = (int)a->len;
		err = lpg_exec(q, c, S_MERKLE, values, lengths, &res,
			       "update merkle hashes");
		if (err)
			return err;
		for (int r = 0; r < PQntuples(res) && !err; r++) {
			const char *ino, *hash;

			if (!lpg_field(res, r, 0, 8, &ino) ||
			    !lpg_field(res, r, 1, ITEM_HASH_LEN, &hash))
				err = lpg_corrupt(q, 0, "bad merkle hash");
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
static int lpg_merkle_apply(const struct lpg *q, struct lpg_conn *c,
			    const struct store_change *changes, size_t n,
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
		if (changes[i].deleted)
			continue;
		lpg_inos_add(touched, changes[i].parent);
		if (changes[i].meta->kind == ITEM_DIR)
			lpg_inos_add(touched, changes[i].ino);
	}
	err = lpg_inos_finish(touched);
	if (err || touched->n == 0)
		return err;
	lpg_arr_start(a, LPG_INT8OID);
	for (size_t i = 0; i < touched->n; i++)
		lpg_arr_i64(a, (int64_t)touched->v[i]);
	err = lpg_arr_finish(a);
	if (err)
		return err;
	values[0] = a->p;
	lengths[0] = (int)a->len;
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

/* Deletes the rows (from S_DEL_ENTRIES or S_DEL_CONTENTS) of the inos of
 * @changes, of the deleted ones only when @deleted_only. S_DEL_ENTRIES adds
 * the parents of the deleted rows to @parents. */
static int lpg_delete_rows(const struct lpg *q, struct lpg_conn *c,
			   enum lpg_stmt which,
			   const struct store_change *changes, size_t n,
			   bool deleted_only, struct lpg_arr *a,
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
			if (!deleted_only || changes[i].deleted)
				lpg_arr_i64(a, (int64_t)changes[i].ino);
		if (a->n == 0)
			break;
		err = lpg_arr_finish(a);
		if (err)
			return err;
		values[0] = a->p;
		lengths[0] = (int)a->len;
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

static void lpg_entry_append(struct lpg_arr *a, const struct store_change *ch)
{
	const struct item_meta *m = ch->meta;
	size_t len = strlen(ch->name);
	size_t stem_len = store_stem_len(ch->name, len, m->kind);

	lpg_arr_i64(&a[E_INO], (int64_t)ch->ino);
	lpg_arr_i64(&a[E_PARENT], (int64_t)ch->parent);
	lpg_arr_bytes(&a[E_NAME], ch->name, len);
	if (m->kind != ITEM_DIR)
		lpg_arr_bytes(&a[E_STEM], ch->name, stem_len);
	else
		lpg_arr_null(&a[E_STEM]);
	lpg_arr_i16(&a[E_KIND], (int16_t)m->kind);
	lpg_arr_i64(&a[E_SIZE], (int64_t)m->size);
	if (!item_hash_is_zero(m->hash))
		lpg_arr_bytes(&a[E_HASH], m->hash, ITEM_HASH_LEN);
	else
		lpg_arr_null(&a[E_HASH]);
	lpg_arr_i64(&a[E_VERSION], (int64_t)m->version);
	lpg_arr_i64(&a[E_MTIME], m->mtime_ns);
	lpg_arr_i64(&a[E_CTIME], m->ctime_ns);
	lpg_arr_i32(&a[E_MODE], (int32_t)m->mode);
	lpg_arr_i64(&a[E_UID], m->uid);
	lpg_arr_i64(&a[E_GID], m->gid);
	lpg_arr_bool(&a[E_EXPLICIT], m->explicit_dir);
	if (m->state && m->state[0])
		lpg_arr_bytes(&a[E_STATE], m->state, strlen(m->state));
	else
		lpg_arr_null(&a[E_STATE]);
	if (m->xattrs && m->xattrs_len)
		lpg_arr_bytes(&a[E_XATTRS], m->xattrs, m->xattrs_len);
	else
		lpg_arr_null(&a[E_XATTRS]);
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
};

/* Runs S_INS_ENTRIES on the arrays @a once they are finished. */
static int lpg_insert_chunk(const struct lpg *q, struct lpg_conn *c,
			    struct lpg_arr *a)
{
	const char *values[E_N];
	int lengths[E_N];
	int err;

	for (int k = 0; k < E_N; k++) {
		err = lpg_arr_finish(&a[k]);
		if (err)
			return err;
		values[k] = a[k].p;
		lengths[k] = (int)a[k].len;
	}
	return lpg_exec(q, c, S_INS_ENTRIES, values, lengths, NULL,
			"write entries");
}

/* Writes the new rows of every change that is not a delete. */
static int lpg_insert_entries(const struct lpg *q, struct lpg_conn *c,
			      const struct store_change *changes, size_t n,
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
			if (changes[i].deleted)
				continue;
			lpg_entry_append(a, &changes[i]);
			bytes += 64 + strlen(changes[i].name) +
				 changes[i].meta->xattrs_len;
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
			    const struct store_change *changes, size_t n,
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
			const struct store_change *ch = &changes[i];
			char b_ino[8];

			if (ch->deleted || !ch->has_data)
				continue;
			if (ch->len <= LPG_BIG_CONTENT) {
				lpg_arr_i64(&a[0], (int64_t)ch->ino);
				lpg_arr_bytes(&a[1], ch->len ? ch->data : "",
					      ch->len);
				continue;
			}
			lpg_put64(b_ino, (int64_t)ch->ino);
			values[0] = b_ino;
			lengths[0] = 8;
			values[1] = ch->data;
			lengths[1] = (int)ch->len;
			err = lpg_exec(q, c, S_PUT_CONTENT, values, lengths,
				       NULL, "write content");
			if (err)
				return err;
		}
		if (a[0].n == 0)
			continue; /* only big ones, or none, so far */
		err = lpg_arr_finish(&a[0]);
		if (!err)
			err = lpg_arr_finish(&a[1]);
		if (err)
			return err;
		values[0] = a[0].p;
		lengths[0] = (int)a[0].len;
		values[1] = a[1].p;
		lengths[1] = (int)a[1].len;
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
			  const struct store_change *changes, size_t n,
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

static int lpg_apply(struct store *s, const struct store_change *changes,
		     size_t n, struct store_dirhash **tree, size_t *ntree)
{
	struct lpg *q = lpg_of(s);
	struct lpg_arr a[E_N];
	struct lpg_tree t = {0};
	bool fresh = false;
	struct lpg_conn *c;
	int conflicts = 0, err = 0;

	store_tree_none(tree, ntree);

	for (size_t i = 0; i < n; i++) {
		err = lpg_check_change(q, &changes[i]);
		if (err)
			return err;
	}
	if (n == 0)
		return 0;
	err = lpg_check_duplicates(q, changes, n);
	if (err)
		return err;

	memset(a, 0, sizeof(a));
	for (int tries = 0; tries < LPG_APPLY_TRIES; tries++) {
		bool again;

		err = lpg_conn_get(q, fresh, &c);
		if (err)
			break;
		err = lpg_apply_once(q, c, changes, n, a,
				     conflicts >= LPG_OPTIMISTIC_TRIES,
				     tree ? &t : NULL);
		/* a conflict: once more with a new snapshot; a lost link
		 * that had been idle: once more on a new connection */
		again = err && (c->conflict ||
				(c->broken && c->pool.reused && !fresh));
		if (c->conflict)
			conflicts++;
		if (c->broken)
			fresh = true;
		lpg_conn_put(q, c);
		if (!again)
			break;
	}
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

static const struct store_ops lpg_ops = {
	.name = "postgres",
	.free = lpg_free,
	.get = lpg_get,
	.lookup = lpg_lookup,
	.list = lpg_list,
	.read = lpg_read,
	.has_children = lpg_has_children,
	.alloc_ino = lpg_alloc_ino,
	.apply = lpg_apply,
	.stats = lpg_stats,
	.scan = lpg_scan,
	.fetch = lpg_fetch,
};

/* ---- opening ---- */

/* Creates the tables, the meta rows and the root directory, owned by the
 * calling process. Runs inside the opening transaction. */
static int lpg_create(struct lpg *q, struct lpg_conn *c)
{
	struct timespec now;
	char sql[512];
	int64_t ns;
	int err;

	err = lpg_simple(q, c, lpg_schema_sql, NULL, "create the schema");
	if (err)
		return err;
	clock_gettime(CLOCK_REALTIME, &now);
	ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
	snprintf(sql, sizeof(sql),
		 "INSERT INTO tierfs_meta (key, value, text_value) VALUES"
		 " ('format', NULL, '%s'), ('schema_version', %d, NULL),"
		 " ('next_ino', %d, NULL);"
		 "INSERT INTO entries (ino, parent, name, stem, kind, size,"
		 " hash, version, mtime_ns, ctime_ns, mode, uid, gid,"
		 " explicit_dir, state, xattrs, merkle) VALUES (%d, 0,"
		 " ''::bytea, NULL, %d, 0, NULL, 1, %lld, %lld, %d, %lld,"
		 " %lld, true, NULL, NULL, sha256(''::bytea))",
		 LPG_FORMAT, LPG_SCHEMA_VERSION, LPG_FIRST_INO, STORE_ROOT_INO,
		 ITEM_DIR, (long long)ns, (long long)ns, S_IFDIR | 0755,
		 (long long)geteuid(), (long long)getegid());
	return lpg_simple(q, c, sql, NULL, "create the root directory");
}

/*
 * Schema version 1 to 2: adds entries.merkle and computes it for every
 * directory under the root, deepest first (one S_MERKLE per depth), then
 * sets schema_version. Runs inside the opening transaction, under the
 * schema lock, so it is all or nothing and runs once.
 */
static int lpg_migrate_2(struct lpg *q, struct lpg_conn *c)
{
	static const char depths_sql[] =
		"WITH RECURSIVE down (ino, depth) AS ("
		" SELECT ino, 0 FROM entries WHERE ino = 1 AND kind = 0"
		" UNION ALL"
		" SELECT e.ino, d.depth + 1 FROM down AS d"
		" JOIN entries AS e ON e.parent = d.ino WHERE e.kind = 0)"
		" SELECT ino, -depth::bigint AS level FROM down"
		" ORDER BY level, ino";
	struct lpg_arr a = {0};
	PGresult *order;
	uint64_t count = 0;
	int err;

	err = lpg_simple(q, c, "ALTER TABLE entries ADD COLUMN merkle bytea",
			 NULL, "add the merkle column");
	if (err)
		return err;
	/* Top-down from the root, which cannot loop: a row has one parent,
	 * and the root's (0) is no row. Directories that are not under the
	 * root (a corrupt tree) keep NULL until a batch touches them. */
	order = PQexecParams(c->pg, depths_sql, 0, NULL, NULL, NULL, NULL, 1);
	if (PQresultStatus(order) != PGRES_TUPLES_OK) {
		err = lpg_errno(q, c->pg, order, c, "read the directory tree");
		PQclear(order);
		return err;
	}
	err = lpg_merkle_levels(q, c, order, &a, NULL, &count);
	PQclear(order);
	lpg_arr_release(&a);
	if (!err)
		err = lpg_simple(q, c,
				 "UPDATE tierfs_meta SET value = 2"
				 " WHERE key = 'schema_version'",
				 NULL, "set the schema version");
	if (!err)
		eng_logf(&q->base.log, LOG_INFO,
			 "postgres '%s': migrated the schema from version 1 "
			 "to 2: merkle hashes of %llu directories computed",
			 q->target, (unsigned long long)count);
	return err;
}

/* Checks that existing tables are ours, of a version this build reads, and
 * migrates an older version. */
static int lpg_check(struct lpg *q, struct lpg_conn *c)
{
	PGresult *res = NULL;
	const char *format = NULL;
	long long version = 0;
	bool have_version = false;
	int err;

	err = lpg_simple(q, c,
			 "SELECT key, value, text_value FROM tierfs_meta"
			 " WHERE key IN ('format', 'schema_version')",
			 &res, "read the schema version");
	if (err)
		return err;
	for (int i = 0; i < PQntuples(res); i++) {
		const char *key = PQgetvalue(res, i, 0);

		if (strcmp(key, "format") == 0 && !PQgetisnull(res, i, 2)) {
			format = PQgetvalue(res, i, 2);
		} else if (strcmp(key, "schema_version") == 0 &&
			   !PQgetisnull(res, i, 1)) {
			version = strtoll(PQgetvalue(res, i, 1), NULL, 10);
			have_version = true;
		}
	}
	if (!format || strcmp(format, LPG_FORMAT) != 0 || !have_version ||
	    version < 1) {
		eng_logf(&q->base.log, LOG_ERR,
			 "postgres '%s': cannot open: not a tierfs database",
			 q->target);
		err = -EINVAL;
	} else if (version > LPG_SCHEMA_VERSION) {
		eng_logf(&q->base.log, LOG_ERR,
			 "postgres '%s': cannot open: schema version %lld is "
			 "newer than this build supports (%d)",
			 q->target, version, LPG_SCHEMA_VERSION);
		err = -EINVAL;
	}
	PQclear(res);
	/* One step per version, each from the one before. */
	if (!err && version < 2)
		err = lpg_migrate_2(q, c);
	return err;
}

/* Under the schema lock, checks the tables or creates them with the root
 * directory, in one transaction. */
static int lpg_setup(struct lpg *q, struct lpg_conn *c)
{
	PGresult *res = NULL;
	char sql[128];
	bool meta, entries, contents;
	int err;

	err = lpg_simple(q, c, "BEGIN", NULL, "begin opening");
	if (err)
		return err;
	snprintf(sql, sizeof(sql), "SELECT pg_advisory_xact_lock(%d, %d)",
		 LPG_LOCK_CLASS, LPG_LOCK_SCHEMA);
	err = lpg_simple(q, c, sql, NULL, "lock the schema");
	if (err)
		goto out_rollback;
	err = lpg_simple(q, c,
			 "SELECT to_regclass('tierfs_meta') IS NOT NULL,"
			 " to_regclass('entries') IS NOT NULL,"
			 " to_regclass('contents') IS NOT NULL",
			 &res, "read the schema");
	if (err)
		goto out_rollback;
	if (PQntuples(res) != 1 || PQnfields(res) != 3) {
		PQclear(res);
		err = lpg_corrupt(q, 0, "bad catalog answer");
		goto out_rollback;
	}
	meta = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	entries = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
	contents = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
	PQclear(res);

	if (meta) {
		err = lpg_check(q, c);
	} else if (entries || contents) {
		eng_logf(&q->base.log, LOG_ERR,
			 "postgres '%s': cannot open: not a tierfs database "
			 "(table '%s' exists without 'tierfs_meta')",
			 q->target, entries ? "entries" : "contents");
		err = -EINVAL;
	} else {
		err = lpg_create(q, c);
	}
	if (!err)
		err = lpg_simple(q, c, "COMMIT", NULL, "commit the schema");
	if (!err)
		return 0;

out_rollback:
	if (!c->broken && PQtransactionStatus(c->pg) != PQTRANS_IDLE)
		lpg_simple(q, c, "ROLLBACK", NULL, "roll back");
	return err;
}

/*
 * Checks @conninfo without connecting and fills q->target with its host,
 * port and database (from PG* variables when it names none) and
 * q->add_timeout. libpq's complaint about a bad conninfo is not logged: it
 * may quote the password.
 */
static int lpg_parse(struct lpg *q, const char *conninfo)
{
	const char *host = NULL, *port = NULL, *db = NULL, *user = NULL;
	bool has_timeout = getenv("PGCONNECT_TIMEOUT") != NULL;
	PQconninfoOption *opts;
	char *errmsg = NULL;

	opts = PQconninfoParse(conninfo, &errmsg);
	if (!opts) {
		if (!errmsg)
			return -ENOMEM;
		PQfreemem(errmsg);
		snprintf(q->target, sizeof(q->target), "?");
		eng_logf(&q->base.log, LOG_ERR,
			 "postgres: cannot open: the connection string is not "
			 "a valid libpq URI or key=value list");
		return -EINVAL;
	}
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		if (!o->val || !o->val[0])
			continue;
		if (strcmp(o->keyword, "host") == 0)
			host = o->val;
		else if (strcmp(o->keyword, "hostaddr") == 0 && !host)
			host = o->val;
		else if (strcmp(o->keyword, "port") == 0)
			port = o->val;
		else if (strcmp(o->keyword, "dbname") == 0)
			db = o->val;
		else if (strcmp(o->keyword, "user") == 0)
			user = o->val;
		else if (strcmp(o->keyword, "connect_timeout") == 0)
			has_timeout = true;
	}
	if (!host)
		host = getenv("PGHOST");
	if (!port)
		port = getenv("PGPORT");
	if (!db)
		db = getenv("PGDATABASE");
	if (!db)
		db = user ? user : getenv("PGUSER");
	snprintf(q->target, sizeof(q->target), "%s:%s/%s",
		 host ? host : "localhost", port ? port : "5432",
		 db ? db : "(default)");
	q->add_timeout = !has_timeout;
	PQconninfoFree(opts);
	return 0;
}

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
	if (log)
		q->base.log = *log;
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
