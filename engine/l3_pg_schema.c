/*
 * l3_pg_schema.c - the PostgreSQL store's tables: creating them with the
 * root directory, checking that existing ones are ours and of a version
 * this build reads, and migrating older versions.
 *
 * Schema (schema version 6), in the first schema of the search_path:
 *
 *     CREATE TABLE tierfs_meta (
 *             key        text PRIMARY KEY,
 *             value      bigint,            -- numeric settings
 *             text_value text               -- textual settings
 *     );
 *         'format'         text_value 'tierfs'   marks the tables as ours
 *         'schema_version' value 6               refused when newer
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
 *                     INCLUDE (ino, kind),
 *             atime_ns     bigint NOT NULL
 *     );
 *     CREATE UNIQUE INDEX entries_parent_stem ON entries (parent, stem)
 *             WHERE stem IS NOT NULL;
 *     CREATE INDEX entries_parent_ino ON entries (parent, ino)
 *             INCLUDE (name, kind);
 *
 *     CREATE TABLE contents (
 *             ino  bigint PRIMARY KEY,      -- entries.ino of a file
 *             data bytea NOT NULL
 *     );
 *
 *     CREATE TABLE feed_head (              -- one row, id 1
 *             id      smallint PRIMARY KEY CHECK (id = 1),
 *             seq     bigint NOT NULL,      -- highest sequence handed out
 *             trimmed bigint NOT NULL       -- highest sequence trimmed
 *     );
 *     CREATE TABLE feed (                   -- the change feed
 *             seq    bigint PRIMARY KEY,    -- trimmed < seq <= head's seq
 *             origin bigint NOT NULL,       -- store.origin of the writer
 *             ino    bigint NOT NULL,       -- the entry changed
 *             at     timestamptz NOT NULL   -- when recorded (trimming)
 *     );
 *
 * Names and stems are bytea: PostgreSQL compares bytea with memcmp() and
 * puts the shorter first on a tie, with no collation involved, so the
 * (parent, name) index serves lookups and the engine's keyset-paged walks
 * in name order ("parent = $1 AND name > $2 ORDER BY name LIMIT $3")
 * without a sort. It also carries ino and kind (INCLUDE: stored in its
 * leaf entries, not part of the key or of the uniqueness), so that counting
 * a directory's subdirectories reads the index alone. It is the
 * constraint's own index rather than a second one beside it, and the
 * constraint keeps its name, which lpg_errno() reads from a 23505.
 * Readdir lists in inode number order (store_ops.list_by_ino: its offsets
 * are inode numbers), from the (parent, ino) index, which carries name and
 * kind so that a listing of names (ino, parent, name, kind) is an
 * index-only scan: it reads a table page only for rows on pages the
 * visibility map does not mark all-visible, those written since
 * (auto)vacuum last passed. Autovacuum comes after 1,000 + 20% of the
 * table's rows are inserted, so after a bulk fill up to a fifth of the
 * rows can wait for it; in inode order those rows are on neighbouring
 * pages, and reading a million-row directory cost about the same with or
 * without a VACUUM (docs/scaling.md), so tierfs leaves vacuuming to the
 * server.
 * Stems and content are as in l3_sqlite.c: the partial
 * unique index on (parent, stem) refuses two files of one item ID, content
 * lives in its own table so lookups and listings never read it, and a file
 * without a content row has empty content. The root row (ino 1, parent 0,
 * name '', a directory with mode 0755 owned by the process that created the
 * schema, explicit) is written with the schema. The feed tables and their
 * use are described in l3_pg_feed.c; feed_head starts at (1, 0, 0).
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
 * the new version. The steps (lpg_steps[]), each logging one INFO line:
 *   - 1 to 2 (lpg_migrate_2) adds the merkle column and computes it for
 *     every directory under the root, deepest first, one UPDATE per depth;
 *   - 2 to 3 (lpg_migrate_3) adds the atime_ns column, set to each row's
 *     mtime_ns (what version 2 showed as atime), then makes it NOT NULL;
 *   - 3 to 4 (lpg_migrate_4) creates the feed tables, empty, with the head
 *     at 0 (a mount of an older build never records its batches there, so
 *     the other mounts never hear of them);
 *   - 4 to 5 (lpg_migrate_5) rebuilds the (parent, name) constraint's
 *     index with INCLUDE (ino, kind): one ALTER TABLE that drops and adds
 *     the constraint, so it holds the table's ACCESS EXCLUSIVE lock while
 *     the index is built (1 to 3.3 s for 1,000,002 entries on a
 *     loaded 2-vCPU VM). INCLUDE needs PostgreSQL 11 or later; a mount
 *     of version 4's build that is already running goes on as before
 *     (the constraint keeps its name and its columns);
 *   - 5 to 6 (lpg_migrate_6) creates the (parent, ino) index, in the
 *     same way holding off writes to entries while it builds. A mount of
 *     version 5's build that is already running goes on listing by name.
 * A step adds its columns where a new schema has them too (atime_ns last),
 * so a migrated schema is the same as a new one. Times are nanoseconds
 * since the epoch, negative before it. A mount of an older build that is
 * already running when another migrates keeps writing without the new
 * columns' upkeep (no merkle hashes; an INSERT without atime_ns fails):
 * upgrade all mounts together.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "l3_pg_int.h"

/* The change feed's tables, as made by a new schema and by the step to 4. */
static const char lpg_feed_sql[] =
	"CREATE TABLE feed_head ("
	" id smallint PRIMARY KEY CHECK (id = 1),"
	" seq bigint NOT NULL,"
	" trimmed bigint NOT NULL"
	");"
	"INSERT INTO feed_head (id, seq, trimmed) VALUES (1, 0, 0);"
	"CREATE TABLE feed ("
	" seq bigint PRIMARY KEY,"
	" origin bigint NOT NULL,"
	" ino bigint NOT NULL,"
	" at timestamptz NOT NULL"
	");";

/* The index of readdir's listings, as made by a new schema and by the step
 * to 6. */
#define LPG_PARENT_INO_SQL                                                     \
	"CREATE INDEX entries_parent_ino ON entries (parent, ino)"             \
	" INCLUDE (name, kind)"

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
	" INCLUDE (ino, kind),"
	" atime_ns bigint NOT NULL"
	");"
	"CREATE UNIQUE INDEX entries_parent_stem ON entries (parent, stem)"
	" WHERE stem IS NOT NULL;"
	LPG_PARENT_INO_SQL ";"
	"CREATE TABLE contents ("
	" ino bigint PRIMARY KEY,"
	" data bytea NOT NULL"
	");";

/* Creates the tables, the meta rows and the root directory, owned by the
 * calling process. Runs inside the opening transaction. */
static int lpg_create(struct lpg *q, struct lpg_conn *c)
{
	struct item_meta root;
	char sql[512];
	int err;

	err = lpg_simple(q, c, lpg_schema_sql, NULL, "create the schema");
	if (!err)
		err = lpg_simple(q, c, lpg_feed_sql, NULL, "create the feed");
	if (err)
		return err;
	store_root_meta(&root);
	snprintf(sql, sizeof(sql),
		 "INSERT INTO tierfs_meta (key, value, text_value) VALUES"
		 " ('format', NULL, '%s'), ('schema_version', %d, NULL),"
		 " ('next_ino', %d, NULL);"
		 "INSERT INTO entries (ino, parent, name, stem, kind, size,"
		 " hash, version, mtime_ns, ctime_ns, mode, uid, gid,"
		 " explicit_dir, state, xattrs, merkle, atime_ns) VALUES"
		 " (%d, 0, ''::bytea, NULL, %d, 0, NULL, %llu, %lld, %lld,"
		 " %u, %u, %u, true, NULL, NULL, sha256(''::bytea), %lld)",
		 STORE_SQL_FORMAT, LPG_SCHEMA_VERSION, STORE_SQL_FIRST_INO,
		 STORE_ROOT_INO, (int)root.kind,
		 (unsigned long long)root.version, (long long)root.mtime_ns,
		 (long long)root.ctime_ns, root.mode, root.uid, root.gid,
		 (long long)root.atime_ns);
	return lpg_simple(q, c, sql, NULL, "create the root directory");
}

/*
 * The end of every migration step: sets schema_version to @version and
 * logs the step, with @what it did, at INFO. Runs inside the opening
 * transaction, under the schema lock.
 */
static int lpg_migrated(struct lpg *q, struct lpg_conn *c, int version,
			const char *what)
{
	char sql[96];
	int err;

	snprintf(sql, sizeof(sql),
		 "UPDATE tierfs_meta SET value = %d"
		 " WHERE key = 'schema_version'",
		 version);
	err = lpg_simple(q, c, sql, NULL, "set the schema version");
	if (!err)
		eng_logf(&q->base.log, LOG_INFO,
			 "postgres '%s': migrated the schema from version %d "
			 "to %d: %s",
			 q->target, version - 1, version, what);
	return err;
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
	char what[64];
	int err;

	err = lpg_simple(q, c, "ALTER TABLE entries ADD COLUMN merkle bytea",
			 NULL, "add the merkle column");
	if (err)
		return err;
	/* Top-down from the root, which cannot loop: a row has one parent,
	 * and the root's (0) is no row. Directories that are not under the
	 * root (a corrupt tree) keep NULL until a batch touches them. */
	err = lpg_result(
		q, c,
		PQexecParams(c->pg, depths_sql, 0, NULL, NULL, NULL, NULL, 1),
		&order, "read the directory tree");
	if (err)
		return err;
	err = lpg_merkle_levels(q, c, order, &a, NULL, &count);
	PQclear(order);
	lpg_arr_release(&a);
	if (err)
		return err;
	snprintf(what, sizeof(what),
		 "merkle hashes of %llu directories computed",
		 (unsigned long long)count);
	return lpg_migrated(q, c, 2, what);
}

/*
 * Schema version 2 to 3: adds entries.atime_ns, set to each row's mtime_ns,
 * then NOT NULL (as a new schema has it), and sets schema_version. Runs
 * inside the opening transaction, under the schema lock.
 */
static int lpg_migrate_3(struct lpg *q, struct lpg_conn *c)
{
	PGresult *res = NULL;
	const char *rows;
	char what[64];
	int err;

	err = lpg_simple(q, c, "ALTER TABLE entries ADD COLUMN atime_ns bigint",
			 NULL, "add the atime_ns column");
	if (!err)
		err = lpg_simple(q, c, "UPDATE entries SET atime_ns = mtime_ns",
				 &res, "set atime_ns");
	if (err)
		return err;
	rows = PQcmdTuples(res);
	snprintf(what, sizeof(what), "atime set to mtime in %s entries",
		 rows[0] ? rows : "0");
	PQclear(res);
	err = lpg_simple(q, c,
			 "ALTER TABLE entries ALTER COLUMN atime_ns SET NOT NULL",
			 NULL, "make atime_ns NOT NULL");
	return err ? err : lpg_migrated(q, c, 3, what);
}

/*
 * Schema version 3 to 4: creates the feed tables (lpg_feed_sql) and sets
 * schema_version. Runs inside the opening transaction, under the schema
 * lock.
 */
static int lpg_migrate_4(struct lpg *q, struct lpg_conn *c)
{
	int err;

	err = lpg_simple(q, c, lpg_feed_sql, NULL, "create the feed");
	return err ? err : lpg_migrated(q, c, 4, "the change feed");
}

/*
 * Schema version 4 to 5: the (parent, name) constraint's index with
 * INCLUDE (ino, kind), as a new schema has it, and schema_version. Runs
 * inside the opening transaction, under the schema lock. Dropping and
 * adding the constraint in one ALTER TABLE builds the new index once; the
 * rows were unique under the old one, so the new one cannot fail on them.
 */
static int lpg_migrate_5(struct lpg *q, struct lpg_conn *c)
{
	int err;

	err = lpg_simple(q, c,
			 "ALTER TABLE entries"
			 " DROP CONSTRAINT entries_parent_name,"
			 " ADD CONSTRAINT entries_parent_name"
			 " UNIQUE (parent, name) INCLUDE (ino, kind)",
			 NULL, "rebuild the (parent, name) index");
	return err ? err
		   : lpg_migrated(q, c, 5,
				  "the (parent, name) index includes ino and "
				  "kind");
}

/*
 * Schema version 5 to 6: the (parent, ino) index of readdir's listings,
 * and schema_version. Runs inside the opening transaction, under the
 * schema lock (CREATE INDEX holds off writes to entries while it builds).
 */
static int lpg_migrate_6(struct lpg *q, struct lpg_conn *c)
{
	int err;

	err = lpg_simple(q, c, LPG_PARENT_INO_SQL, NULL,
			 "create the (parent, ino) index");
	return err ? err
		   : lpg_migrated(q, c, 6, "the (parent, ino) index of listings");
}

/*
 * The migration chain: lpg_steps[i] turns schema version i + 1 into
 * i + 2, and sets schema_version. To add version N: the step here, the
 * new tables or columns in lpg_schema_sql (a new schema is the same as a
 * migrated one), LPG_SCHEMA_VERSION = N.
 */
static int (*const lpg_steps[])(struct lpg *q, struct lpg_conn *c) = {
	lpg_migrate_2,
	lpg_migrate_3,
	lpg_migrate_4,
	lpg_migrate_5,
	lpg_migrate_6,
};

_Static_assert(sizeof(lpg_steps) / sizeof(lpg_steps[0]) ==
		       LPG_SCHEMA_VERSION - 1,
	       "one migration step per schema version after 1");

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
	err = store_schema_check(&q->sb, format, have_version, version,
				 LPG_SCHEMA_VERSION);
	PQclear(res);
	/* One step per version, each from the one before. */
	for (long long v = version; !err && v < LPG_SCHEMA_VERSION; v++)
		err = lpg_steps[v - 1](q, c);
	return err;
}

/* Under the schema lock, checks the tables or creates them with the root
 * directory, in one transaction. */
int lpg_setup(struct lpg *q, struct lpg_conn *c)
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
		err = store_corrupt(&q->sb, 0, "bad catalog answer");
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
