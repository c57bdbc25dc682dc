/*
 * l3_sqlite_schema.c - the SQLite store's tables: creating them with the
 * root directory in an empty file, checking that an existing file is ours
 * and of a version this build reads, and migrating older versions.
 *
 * Schema (schema version 5):
 *
 *     CREATE TABLE meta (
 *             key   TEXT PRIMARY KEY,
 *             value                      -- no affinity: stored as given
 *     ) WITHOUT ROWID;
 *         'format'         = 'tierfs'   marks the file as ours
 *         'schema_version' = 5          refused when newer than this build
 *         'next_ino'       = 2..        lowest inode number never handed out
 *         'feed_trimmed'   = 0..        highest feed sequence ever trimmed
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
 *             merkle       BLOB,                 -- directories: 32 bytes
 *             atime_ns     INTEGER NOT NULL DEFAULT 0
 *     );
 *     CREATE UNIQUE INDEX entries_parent_name ON entries (parent, name);
 *     CREATE UNIQUE INDEX entries_parent_stem ON entries (parent, stem)
 *             WHERE stem IS NOT NULL;
 *     CREATE INDEX entries_children ON entries
 *             (parent, name, kind, hash, merkle);  -- covers the Merkle scan
 *     CREATE INDEX entries_parent_ino ON entries (parent, ino);  -- readdir
 *
 *     CREATE TABLE contents (
 *             ino  INTEGER PRIMARY KEY,          -- entries.ino of a file
 *             data BLOB NOT NULL
 *     );
 *
 *     CREATE TABLE feed (
 *             seq     INTEGER PRIMARY KEY AUTOINCREMENT,
 *             origin  INTEGER NOT NULL,  -- store.origin of the writer
 *             ino     INTEGER NOT NULL,  -- the entry changed
 *             time_ns INTEGER NOT NULL   -- CLOCK_REALTIME at apply()
 *     );
 *
 * Names and stems are always bound as BLOBs, so the default BINARY collation
 * compares them with memcmp() (shorter first on a tie): that is the order
 * of the engine's walks by name, and the (parent, name) index serves
 * lookups and keyset-paged walks without a sort. Readdir lists in inode
 * number order (its offsets are inode numbers), from the (parent, ino)
 * index. The stem of a file is its name without ".json"
 * for ITEM_JSON and the whole name for ITEM_BINARY; the partial index on
 * (parent, stem) refuses a second file with the same item ID. Content lives
 * in its own table so that lookups and listings never read it. A file
 * without a content row has empty content. Times are nanoseconds since the
 * epoch, negative before it. atime_ns comes last and has a DEFAULT only
 * because ALTER TABLE cannot add a NOT NULL column without one: every
 * insert names it, and a new file is made with the same columns as a
 * migrated one.
 *
 * The change feed (store.h, "Sharing"). apply() adds one feed row per
 * change of its batch (a change a race dropped included) and one per entry
 * a race replaced, in its own transaction. SQLite runs one write
 * transaction at a time on a file, so the order of commits is the order of
 * seq, and AUTOINCREMENT never hands out a seq again, not even one trimmed
 * or rolled back: a reader that has seen seq N has seen every record below
 * it. A record holds no state: feed_read() joins it with entries, so it
 * reads the entry as it is now (gone when there is no row). apply() trims
 * a prefix of the table, never a middle part (l3_sqlite_apply.c) and
 * raises 'feed_trimmed' to the last seq it removed, so a reader asking for
 * records above a seq below the mark learns (-ESTALE) that some are lost;
 * the mark also keeps the head from going back when the table is empty.
 *
 * Schema versions. Opening an older file migrates it in the writer's
 * opening transaction (BEGIN IMMEDIATE, under which nothing else can
 * write), one step per version (lsq_steps[]), oldest first; then
 * schema_version becomes LSQ_SCHEMA_VERSION and each step logs one INFO
 * line. Either all of that commits or none of it. A step has two parts:
 * its schema change runs before the writer's statements are prepared
 * (they name every column of the current version), its row work, if
 * any, after. The steps:
 *   - to 2: version 1 had neither the merkle column nor entries_children.
 *     ALTER TABLE adds the column, CREATE INDEX makes the index; then a
 *     recursive CTE numbers every directory by its depth (from the root,
 *     or from an orphan directory whose parent is missing), and each is
 *     hashed deepest first. Directories in a cycle are left NULL with a
 *     warning.
 *   - to 3: version 2 kept no atime. ALTER TABLE adds atime_ns, and every
 *     row's atime_ns is set to its mtime_ns (what version 2 showed as
 *     atime).
 *   - to 4: the feed table and 'feed_trimmed'; an older build refuses the
 *     file, and one already running would apply batches that leave no
 *     feed records.
 *   - to 5: the (parent, ino) index, from which readdir lists in inode
 *     number order; one already running goes on listing by name.
 * A build of an older version refuses the migrated file; one that already
 * had it open would go on writing without the new columns' upkeep (no
 * hashes, or atime_ns 0), so stop old mounts before the first open by this
 * build.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "l3_sqlite_int.h"

#define LSQ_FEED_SQL                                                           \
	"CREATE TABLE feed ("                                                  \
	" seq INTEGER PRIMARY KEY AUTOINCREMENT,"                              \
	" origin INTEGER NOT NULL,"                                            \
	" ino INTEGER NOT NULL,"                                               \
	" time_ns INTEGER NOT NULL"                                            \
	");"

/* The index of readdir's listings (in inode number order: ino is the
 * rowid, so the index leads straight to the rows, in the table's order). */
#define LSQ_PARENT_INO_SQL                                                     \
	"CREATE INDEX entries_parent_ino ON entries (parent, ino);"

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
	" merkle BLOB,"
	" atime_ns INTEGER NOT NULL DEFAULT 0"
	");"
	"CREATE UNIQUE INDEX entries_parent_name ON entries (parent, name);"
	"CREATE UNIQUE INDEX entries_parent_stem ON entries (parent, stem)"
	" WHERE stem IS NOT NULL;"
	"CREATE INDEX entries_children ON entries"
	" (parent, name, kind, hash, merkle);"
	LSQ_PARENT_INO_SQL
	"CREATE TABLE contents ("
	" ino INTEGER PRIMARY KEY,"
	" data BLOB NOT NULL"
	");"
	LSQ_FEED_SQL;

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
		 " ('schema_version', %d), ('next_ino', %d),"
		 " ('feed_trimmed', 0)",
		 STORE_SQL_FORMAT, LSQ_SCHEMA_VERSION, STORE_SQL_FIRST_INO);
	return lsq_exec(q, q->writer->db, sql, "write the schema version");
}

/* Writes the root directory row, owned by the calling process. Runs inside
 * the opening transaction, after the writer's statements are prepared. */
static int lsq_create_root(struct lsq *q)
{
	sqlite3_stmt *st = q->writer->stmt[W_INS_ENTRY];
	struct item_meta root;
	uint8_t hash[MERKLE_LEN];
	int rc, err;

	store_root_meta(&root);
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
	bool have_format = false, have_version = false;
	int type, err;

	type = lsq_query1(q, db,
			  "SELECT count(*) FROM sqlite_master WHERE"
			  " type = 'table' AND name = 'meta'",
			  &v, NULL, 0, "read the schema");
	if (type < 0)
		return type;
	if (v) {
		type = lsq_query1(
			q, db, "SELECT value FROM meta WHERE key = 'format'",
			&v, format, sizeof(format), "read the format");
		if (type < 0)
			return type;
		have_format = type == SQLITE_TEXT;
		type = lsq_query1(
			q, db,
			"SELECT value FROM meta WHERE key = 'schema_version'",
			&v, NULL, 0, "read the schema version");
		if (type < 0)
			return type;
		have_version = type == SQLITE_INTEGER;
	}
	err = store_schema_check(&q->sb, have_format ? format : NULL,
				 have_version, v, LSQ_SCHEMA_VERSION);
	if (!err)
		*version = v;
	return err;
}

/* Step to version 2, its schema part: the column and the index. */
static int lsq_to_v2_schema(struct lsq *q, char *note, size_t len)
{
	(void)note;
	(void)len;
	return lsq_exec(q, q->writer->db,
			"ALTER TABLE entries ADD COLUMN merkle BLOB;"
			"CREATE INDEX entries_children ON entries"
			" (parent, name, kind, hash, merkle);",
			"migrate the schema to version 2");
}

/*
 * Step to version 2, its row part, once the column is there and the
 * writer's statements are prepared: computes the Merkle hash of every
 * directory, bottom-up, and notes how many. A recursive CTE numbers the
 * directories by depth below the top of their chain, as apply() finds it
 * (the root, or a directory whose parent is missing or not a directory);
 * they are read into memory before any is written, and written deepest
 * first, so that each directory's children are done when it is.
 * Directories that no chain reaches (a cycle) or that lie deeper than
 * LSQ_MAX_DEPTH are left NULL, with a warning: the old file was already
 * broken there, and an apply() that reaches them fails with -EIO.
 */
static int lsq_to_v2_rows(struct lsq *q, char *note, size_t len)
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
	snprintf(note, len, "merkle hashes computed, directories: %zu", n);
out_free:
	sqlite3_finalize(st);
	free(inos);
	return err;
}

/* Step to version 3: the atime_ns column, set to each row's mtime_ns. */
static int lsq_to_v3(struct lsq *q, char *note, size_t len)
{
	sqlite3 *db = q->writer->db;
	int err;

	err = lsq_exec(q, db,
		       "ALTER TABLE entries ADD COLUMN"
		       " atime_ns INTEGER NOT NULL DEFAULT 0;"
		       "UPDATE entries SET atime_ns = mtime_ns;",
		       "migrate the schema to version 3");
	if (!err)
		snprintf(note, len, "atime set to mtime, entries: %lld",
			 (long long)sqlite3_changes64(db));
	return err;
}

/* Step to version 4: the change feed. */
static int lsq_to_v4(struct lsq *q, char *note, size_t len)
{
	int err = lsq_exec(q, q->writer->db,
			   LSQ_FEED_SQL "INSERT INTO meta (key, value)"
					" VALUES ('feed_trimmed', 0);",
			   "migrate the schema to version 4");

	if (!err)
		snprintf(note, len, "change feed added");
	return err;
}

/* Step to version 5: the (parent, ino) index of readdir's listings. */
static int lsq_to_v5(struct lsq *q, char *note, size_t len)
{
	int err = lsq_exec(q, q->writer->db, LSQ_PARENT_INO_SQL,
			   "migrate the schema to version 5");

	if (!err)
		snprintf(note, len, "the (parent, ino) index of listings");
	return err;
}

/*
 * The migration chain: lsq_steps[i] turns version i + 1 into i + 2. A
 * step's @schema changes tables and indexes and runs before the writer's
 * statements are prepared; its @rows (NULL: none) runs after, with them.
 * Each writes what it did into @note, for its INFO line. To add version
 * N: the step here, the new tables or columns in lsq_schema_sql (so that
 * a new file is the same as a migrated one), LSQ_SCHEMA_VERSION = N.
 */
static const struct lsq_step {
	int (*schema)(struct lsq *q, char *note, size_t len);
	int (*rows)(struct lsq *q, char *note, size_t len);
} lsq_steps[] = {
	{lsq_to_v2_schema, lsq_to_v2_rows},
	{lsq_to_v3, NULL},
	{lsq_to_v4, NULL},
	{lsq_to_v5, NULL},
};

#define LSQ_NSTEPS (sizeof(lsq_steps) / sizeof(lsq_steps[0]))
_Static_assert(LSQ_NSTEPS == LSQ_SCHEMA_VERSION - 1,
	       "one migration step per schema version after 1");
#define LSQ_NOTE_LEN 96

/* Runs the part @rows (else @schema) of every step from @version up. */
static int lsq_migrate(struct lsq *q, sqlite3_int64 version, bool rows,
		       char notes[][LSQ_NOTE_LEN])
{
	for (size_t i = (size_t)version - 1; i < LSQ_NSTEPS; i++) {
		int (*fn)(struct lsq *, char *, size_t) =
			rows ? lsq_steps[i].rows : lsq_steps[i].schema;
		int err = fn ? fn(q, notes[i], LSQ_NOTE_LEN) : 0;

		if (err)
			return err;
	}
	return 0;
}

/* Under the write lock, checks the schema (or creates it with the root
 * directory in an empty file, or migrates an older version) and prepares
 * the writer's statements, in one transaction; then switches the file to
 * WAL, last, so that a foreign file is never changed. */
int lsq_setup(struct lsq *q)
{
	sqlite3 *db = q->writer->db;
	sqlite3_int64 nobjects = 0, unused, version = LSQ_SCHEMA_VERSION;
	char notes[LSQ_NSTEPS][LSQ_NOTE_LEN] = {{0}};
	char mode[16] = "", sql[96];
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
	if (!err)
		err = lsq_migrate(q, version, false, notes);
	if (!err)
		err = lsq_conn_prepare(q, q->writer, LSQ_WRITER);
	if (!err && nobjects == 0)
		err = lsq_create_root(q);
	if (!err)
		err = lsq_migrate(q, version, true, notes);
	if (!err && version < LSQ_SCHEMA_VERSION) {
		snprintf(sql, sizeof(sql),
			 "UPDATE meta SET value = %d"
			 " WHERE key = 'schema_version'",
			 LSQ_SCHEMA_VERSION);
		err = lsq_exec(q, db, sql, "write the schema version");
	}
	if (!err)
		err = lsq_exec(q, db, "COMMIT", "commit the schema");
	if (err)
		goto out_rollback;
	for (sqlite3_int64 v = version; v < LSQ_SCHEMA_VERSION; v++)
		eng_logf(&q->base.log, LOG_INFO,
			 "sqlite '%s': migrated schema version %lld to %lld: %s",
			 q->path, (long long)v, (long long)v + 1,
			 notes[v - 1]);

	/* Switching needs the file to itself, and SQLite gives up at once
	 * (SQLITE_BUSY, no busy handler) where waiting could deadlock: this
	 * connection reading while another mount, opening the same new file
	 * at the same moment, holds the write lock. So it is tried again,
	 * for as long as the busy timeout, before the error counts. */
	for (int waited = 0; waited < LSQ_BUSY_TIMEOUT_MS; waited += 10) {
		struct timespec ts = {0, 10 * 1000000L};
		int rc = sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL,
				      NULL, NULL);

		if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
			break;
		nanosleep(&ts, NULL);
	}
	/* what it is now, with the usual error when that fails */
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
