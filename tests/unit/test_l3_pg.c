/*
 * test_l3_pg.c - unit tests of the PostgreSQL L3 store (engine/l3_pg.c).
 *
 * The same checks as test_l3_sqlite.c (the cases both run alike are in
 * store_helpers.h), run against the server whose libpq URI is in
 * TIERFS_TEST_POSTGRES (scripts/pg-test-server.sh starts one),
 * plus what only a shared server has: mounts that create the schema
 * together, disjoint inode ranges under concurrency, writers racing on the
 * same rows, lost connections, and a 2000-row batch (its throughput is
 * printed, never asserted), and the Merkle hashes apply() keeps: a seeded
 * random property test against merkle.c, a golden hash from Python, failed
 * batches, and the migration of a version-1 schema. Then the sharing
 * contract of store.h: the cases of store_feed_cases.h on two stores of one
 * database, and what only a server shows: sequence numbers in commit order
 * under concurrent writers (a reader never sees a gap filled later), two
 * threads that create one name at once, feed_wait() woken by NOTIFY and
 * surviving its connection's loss, and the migration from version 2.
 *
 * Every test starts from a clean schema: the tables are dropped through a
 * plain libpq connection first. The password of the URI must never reach
 * the store's log. Exit status: 0 passed, 1 failed, 77 skipped (no
 * TIERFS_TEST_POSTGRES). Set TEST_VERBOSE=1 to see the store's log lines.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "check.h"
#include "store_helpers.h"
#include "store_feed_cases.h"
#include "l3_pg.h"
#include "l3_pg_int.h" /* lpg_stmts: the plan of list_names */
#include "merkle.h"

static const char *uri;	 /* TIERFS_TEST_POSTGRES */
static char secret[128]; /* the URI's password, "" when none */
static PGconn *admin;	 /* a plain connection for setup and checks */

/* ---- the log sink: keeps the last line, prints when TEST_VERBOSE ---- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_log[1024];
static int nlogs;
static int secret_leaks;	 /* lines that showed a password */
static const char *extra_secret; /* another password being tried */
static const char *count_word;	 /* log lines holding it are counted */
static int count_hits;

static void log_fn(void *arg, int level, const char *msg)
{
	pthread_mutex_lock(&log_lock);
	snprintf(last_log, sizeof(last_log), "%s", msg);
	nlogs++;
	if (count_word && strstr(msg, count_word))
		count_hits++;
	if ((secret[0] && strstr(msg, secret)) ||
	    (extra_secret && strstr(msg, extra_secret))) {
		fprintf(stderr, "password in a log line: %s\n", msg);
		secret_leaks++;
	}
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "log[%d]: %s\n", level, msg);
	pthread_mutex_unlock(&log_lock);
}

static const struct eng_log test_log = {.fn = log_fn, .arg = NULL};

static void log_reset(void)
{
	pthread_mutex_lock(&log_lock);
	last_log[0] = '\0';
	nlogs = 0;
	pthread_mutex_unlock(&log_lock);
}

static bool log_has(const char *word)
{
	bool found;

	pthread_mutex_lock(&log_lock);
	found = strstr(last_log, word) != NULL;
	pthread_mutex_unlock(&log_lock);
	return found;
}

/* ---- the admin connection ---- */

static void quiet_notice(void *arg, const char *msg)
{
}

/* Runs @sql on the admin connection; fails the test on an error. */
static void admin_exec(const char *sql)
{
	PGresult *res = PQexec(admin, sql);
	ExecStatusType st = PQresultStatus(res);

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		fprintf(stderr, "admin: %s: %s", sql, PQerrorMessage(admin));
		exit(1);
	}
	PQclear(res);
}

/* Runs a query that answers one integer (text format). */
static long long admin_int(const char *sql)
{
	PGresult *res = PQexec(admin, sql);
	long long v;

	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
	    PQgetisnull(res, 0, 0)) {
		fprintf(stderr, "admin: %s: %s", sql, PQerrorMessage(admin));
		exit(1);
	}
	v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return v;
}

/* Runs a query that answers one text value; returns a malloc()ed copy. */
static char *admin_text(const char *sql)
{
	PGresult *res = PQexec(admin, sql);
	char *v;

	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		fprintf(stderr, "admin: %s: %s", sql, PQerrorMessage(admin));
		exit(1);
	}
	v = strdup(PQgetisnull(res, 0, 0) ? "(null)" : PQgetvalue(res, 0, 0));
	CHECK(v);
	PQclear(res);
	return v;
}

static void reset_schema(void)
{
	admin_exec("DROP TABLE IF EXISTS entries, contents, tierfs_meta, feed,"
		   " feed_head");
}

/* ---- helpers ---- */

static struct store *open_ok(void)
{
	struct store *s = NULL;

	CHECK_EQ(l3_pg_open(uri, &test_log, &s), 0);
	CHECK(s != NULL);
	CHECK(strcmp(s->ops->name, "postgres") == 0);
	return s;
}

/* A store on a clean schema. */
static struct store *open_fresh(void)
{
	reset_schema();
	return open_ok();
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The server drops every connection of the stores under test (a restart):
 * waits until none is left. */
static void drop_connections(void)
{
	double deadline;

	admin_exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
		   " WHERE application_name = 'tierfs'");
	deadline = now_s() + 10;
	while (admin_int("SELECT count(*) FROM pg_stat_activity"
			 " WHERE application_name = 'tierfs'") > 0)
		CHECK(now_s() < deadline);
}

/* The (parent, name) uniqueness of entries: the constraint
 * entries_parent_name and its own index of that name, which carries ino
 * and kind (schema version 5) or not (before), and no other index on
 * (parent, name) beside it: entries has its primary key, this, the
 * (parent, stem) index and (from version 6) the (parent, ino) one. */
static void check_parent_name_index(bool covering)
{
	char *def;

	CHECK_EQ(admin_int("SELECT count(*) FROM pg_constraint"
			   " WHERE conname = 'entries_parent_name'"
			   " AND contype = 'u'"
			   " AND conrelid = 'entries'::regclass"
			   " AND conindid = 'entries_parent_name'::regclass"),
		 1);
	CHECK_EQ(admin_int("SELECT count(*) FROM pg_index"
			   " WHERE indrelid = 'entries'::regclass"
			   " AND indexrelid::regclass::text"
			   " <> 'entries_parent_ino'"),
		 3);
	def = admin_text("SELECT pg_get_indexdef("
			 "'entries_parent_name'::regclass)");
	if (covering)
		CHECK(strstr(def, "UNIQUE INDEX entries_parent_name ON ") &&
		      strstr(def, " (parent, name) INCLUDE (ino, kind)"));
	else
		CHECK(strstr(def, "UNIQUE INDEX entries_parent_name ON ") &&
		      strstr(def, " (parent, name)") &&
		      !strstr(def, "INCLUDE"));
	free(def);
}

/* The (parent, ino) index of listings: there with name and kind in its
 * leaves (schema version 6), or not there (before). */
static void check_parent_ino_index(bool there)
{
	char *def;

	if (!there) {
		CHECK_EQ(admin_int("SELECT count(*) FROM pg_class"
				   " WHERE relname = 'entries_parent_ino'"),
			 0);
		return;
	}
	def = admin_text("SELECT pg_get_indexdef("
			 "'entries_parent_ino'::regclass)");
	CHECK(strstr(def, "INDEX entries_parent_ino ON ") &&
	      strstr(def, " (parent, ino) INCLUDE (name, kind)"));
	free(def);
}

/* ---- tests ---- */

static void test_open_creates_root(void)
{
	struct store *s = open_fresh();
	struct store_row r;
	uint64_t entries = 99, bytes = 99, ino = 0;
	void *data = NULL;
	size_t len = 1;

	CHECK_EQ(s->ops->get(s, STORE_ROOT_INO, &r), 0);
	CHECK_EQ(r.ino, STORE_ROOT_INO);
	CHECK_EQ(r.parent, 0);
	CHECK_EQ(r.name[0], '\0');
	CHECK_EQ(r.meta.kind, ITEM_DIR);
	CHECK_EQ(r.meta.mode, S_IFDIR | 0755);
	CHECK_EQ(r.meta.uid, geteuid());
	CHECK_EQ(r.meta.gid, getegid());
	CHECK(r.meta.explicit_dir);
	CHECK(r.meta.mtime_ns > 1600000000LL * 1000000000);
	CHECK_EQ(r.meta.atime_ns, r.meta.mtime_ns);
	CHECK(r.meta.ctime_ns > 1600000000LL * 1000000000);
	CHECK(r.meta.state == NULL);
	CHECK(r.meta.xattrs == NULL && r.meta.xattrs_len == 0);
	{
		/* an empty tree: the root hashes no bytes */
		uint8_t empty[MERKLE_LEN];

		merkle_empty(empty);
		CHECK(memcmp(r.merkle, empty, MERKLE_LEN) == 0);
	}
	store_row_release(&r);

	/* the root is the child "" of 0, never a child of itself */
	CHECK_EQ(lookup_ino(s, 0, ""), STORE_ROOT_INO);
	CHECK_EQ(s->ops->has_children(s, STORE_ROOT_INO), 0);
	CHECK_EQ(s->ops->list(s, STORE_ROOT_INO, "", &r, 1), 0);
	CHECK_EQ(s->ops->stats(s, &entries, &bytes), 0);
	CHECK_EQ(entries, 0);
	CHECK_EQ(bytes, 0);
	CHECK_EQ(s->ops->read(s, STORE_ROOT_INO, &data, &len), 0);
	CHECK_EQ(len, 0);
	free(data);

	CHECK_EQ(s->ops->alloc_ino(s, 1, &ino), 0);
	CHECK_EQ(ino, 2);
	CHECK_EQ(s->ops->alloc_ino(s, 10, &ino), 0);
	CHECK_EQ(ino, 3);
	CHECK_EQ(s->ops->alloc_ino(s, 1, &ino), 0);
	CHECK_EQ(ino, 13);
	CHECK_EQ(s->ops->alloc_ino(s, 0, &ino), -EINVAL);
	CHECK_EQ(ino, 13);

	CHECK_EQ(s->ops->get(s, 999, &r), -ENOENT);
	CHECK_EQ(s->ops->lookup(s, STORE_ROOT_INO, "nope", &r), -ENOENT);
	CHECK_EQ(s->ops->read(s, 999, &data, &len), -ENOENT);
	CHECK_EQ(store_apply(s, NULL, 0), 0);
	store_free(s);
	store_free(NULL);

	/* the exact column types the schema promises */
	CHECK_EQ(admin_int(
			 "SELECT count(*) FROM information_schema.columns"
			 " WHERE table_name = 'entries' AND"
			 " ((column_name IN ('name', 'stem', 'hash', 'xattrs',"
			 "   'merkle') AND data_type = 'bytea') OR"
			 " (column_name = 'kind' AND data_type = 'smallint')"
			 " OR (column_name = 'mode' AND data_type = 'integer')"
			 " OR (column_name = 'explicit_dir'"
			 "     AND data_type = 'boolean')"
			 " OR (column_name = 'state' AND data_type = 'text')"
			 " OR (column_name IN ('ino', 'parent', 'size',"
			 "     'version', 'mtime_ns', 'atime_ns', 'ctime_ns', 'uid',"
			 "     'gid') AND data_type = 'bigint'))"),
		 18);
	CHECK_EQ(admin_int("SELECT value FROM tierfs_meta"
			   " WHERE key = 'schema_version'"),
		 6);
	/* the (parent, name) constraint's index carries ino and kind */
	check_parent_name_index(true);
	check_parent_ino_index(true);
	/* the feed: empty, its head at 0 */
	CHECK_EQ(admin_int("SELECT count(*) FROM feed"), 0);
	CHECK_EQ(admin_int("SELECT seq + trimmed FROM feed_head WHERE id = 1"),
		 0);
}

/* A counter with no room left: -ENOSPC, and nothing handed out; a counter
 * that is not there: -EIO. */
static void test_alloc_exhausted(void)
{
	struct store *s = open_fresh();
	uint64_t ino = 0;

	admin_exec("UPDATE tierfs_meta SET value = 9223372036854775800"
		   " WHERE key = 'next_ino'");
	CHECK_EQ(s->ops->alloc_ino(s, 8, &ino), -ENOSPC);
	CHECK_EQ(ino, 0);
	CHECK_EQ(s->ops->alloc_ino(s, 7, &ino), 0);
	CHECK_EQ(ino, 9223372036854775800ULL);
	CHECK_EQ(s->ops->alloc_ino(s, 1, &ino), -ENOSPC);
	admin_exec("DELETE FROM tierfs_meta WHERE key = 'next_ino'");
	CHECK_EQ(s->ops->alloc_ino(s, 1, &ino), -EIO);
	store_free(s);
}

static void test_read_many(void)
{
	struct store *s = open_fresh();

	case_read_many(s);
	store_free(s);
}

static void test_listing(void)
{
	struct store *s = open_fresh();

	case_listing(s);
	store_free(s);
}

static void test_names_refused(void)
{
	struct store *s = open_fresh();

	case_names_refused(s);
	store_free(s);
}

static uint64_t rng_state = 88172645463325252ULL;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static unsigned char *random_bytes(size_t len)
{
	unsigned char *p = malloc(len);

	CHECK(p);
	for (size_t i = 0; i < len; i++)
		p[i] = (unsigned char)(i % 7 == 0 ? 0 : rng());
	p[len - 1] = 0;
	return p;
}

static void test_content(void)
{
	static const char nuls[] = {'a', 0, 'b', 0, 0, 'c', 0};
	struct store *s = open_fresh();
	struct item_meta m, mm;
	struct change *cc[3];
	size_t big_len = 1 << 20, huge_len = 16 << 20, mid_len = 300 << 10;
	unsigned char *big = random_bytes(big_len);
	unsigned char *huge = random_bytes(huge_len);
	unsigned char *mid = random_bytes(mid_len);
	uint64_t f_nul, f_big, f_huge, f_empty, f_nodata, dir, mix[3];
	uint64_t entries, bytes;
	void *data;
	size_t len;

	f_nul = put_file(s, new_ino(s), STORE_ROOT_INO, "nuls", ITEM_BINARY,
			 nuls, sizeof(nuls));
	f_big = put_file(s, new_ino(s), STORE_ROOT_INO, "big", ITEM_BINARY, big,
			 big_len);
	f_empty = put_file(s, new_ino(s), STORE_ROOT_INO, "empty.json",
			   ITEM_JSON, NULL, 0);
	dir = put_dir(s, new_ino(s), STORE_ROOT_INO, "dir");
	m = meta_of(ITEM_BINARY, 0);
	f_nodata = new_ino(s);
	CHECK_EQ(
		apply_one(s, change_of(f_nodata, STORE_ROOT_INO, "nodata", &m)),
		0);

	check_content(s, f_nul, nuls, sizeof(nuls));
	check_content(s, f_big, big, big_len);
	check_content(s, f_empty, NULL, 0);
	check_content(s, f_nodata, NULL, 0);
	check_content(s, dir, NULL, 0);
	CHECK_EQ(s->ops->read(s, 424242, &data, &len), -ENOENT);

	/* a metadata-only change keeps the content */
	m = meta_of(ITEM_BINARY, sizeof(nuls));
	m.version = 2;
	CHECK_EQ(apply_one(s, change_of(f_nul, STORE_ROOT_INO, "nuls", &m)), 0);
	check_content(s, f_nul, nuls, sizeof(nuls));

	/* an item replaces it, also with empty content */
	m = meta_of(ITEM_BINARY, 3);
	CHECK_EQ(apply_one(s, data_change_of(f_big, STORE_ROOT_INO, "big", &m,
					     "xyz", 3)),
		 0);
	check_content(s, f_big, "xyz", 3);
	CHECK_EQ(apply_one(s, data_change_of(f_big, STORE_ROOT_INO, "big", &m,
					     NULL, 0)),
		 0);
	check_content(s, f_big, NULL, 0);
	CHECK_EQ(admin_int("SELECT count(*) FROM contents"
			   " WHERE length(data) = 0"),
		 2); /* "empty.json" and "big" */
	put_file(s, f_big, STORE_ROOT_INO, "big", ITEM_BINARY, big, big_len);
	check_content(s, f_big, big, big_len);

	/* fetch: the row and its content in one statement */
	CHECK(s->ops->fetch != NULL);
	{
		struct store_row row;

		data = NULL;
		CHECK_EQ(s->ops->fetch(s, f_nul, &row, &data, &len), 0);
		CHECK_EQ(row.ino, f_nul);
		CHECK(strcmp(row.name, "nuls") == 0);
		CHECK_EQ(row.meta.version, 2);
		CHECK_EQ(len, sizeof(nuls));
		CHECK(data && memcmp(data, nuls, len) == 0);
		store_row_release(&row);
		free(data);
		CHECK_EQ(s->ops->fetch(s, dir, &row, &data, &len), 0);
		CHECK_EQ(row.meta.kind, ITEM_DIR);
		CHECK(data == NULL && len == 0);
		store_row_release(&row);
		CHECK_EQ(s->ops->fetch(s, 424242, &row, &data, &len), -ENOENT);
	}

	/* 16 MiB, the default max_item_bytes */
	f_huge = put_file(s, new_ino(s), STORE_ROOT_INO, "huge", ITEM_BINARY,
			  huge, huge_len);
	check_content(s, f_huge, huge, huge_len);
	{
		struct store_row row;

		CHECK_EQ(s->ops->fetch(s, f_huge, &row, &data, &len), 0);
		CHECK_EQ(row.meta.size, huge_len);
		CHECK_EQ(len, huge_len);
		CHECK(memcmp(data, huge, huge_len) == 0);
		store_row_release(&row);
		free(data);
	}

	/* small and big content mixed in one batch */
	for (int i = 0; i < 3; i++) {
		static const char *const mix_names[] = {"m0", "m1", "m2"};

		mix[i] = new_ino(s);
		mm = meta_of(ITEM_BINARY, i == 1 ? mid_len : 2);
		cc[i] = data_change_of(
			mix[i], STORE_ROOT_INO, mix_names[i], &mm,
			i == 1 ? (const void *)mid : (const void *)"\0m",
			i == 1 ? mid_len : 2);
	}
	CHECK_EQ(apply_changes(s, cc, 3), 0);
	check_content(s, mix[0], "\0m", 2);
	check_content(s, mix[1], mid, mid_len);
	check_content(s, mix[2], "\0m", 2);

	CHECK_EQ(s->ops->stats(s, &entries, &bytes), 0);
	CHECK_EQ(entries, 9);
	CHECK_EQ(bytes, sizeof(nuls) + big_len + huge_len + mid_len + 4);
	store_free(s);

	/* the content survives a reopen byte for byte */
	s = open_ok();
	check_content(s, f_big, big, big_len);
	check_content(s, f_huge, huge, huge_len);
	check_content(s, f_nul, nuls, sizeof(nuls));
	store_free(s);
	free(big);
	free(huge);
	free(mid);
}

static void test_rename_and_swap(void)
{
	struct store *s = open_fresh();

	case_rename_and_swap(s);
	store_free(s);
}

static void test_all_or_nothing(void)
{
	struct store *s = open_fresh();

	case_all_or_nothing(s);
	store_free(s);
}

static void test_stems(void)
{
	struct store *s = open_fresh();

	case_stems(s);
	store_free(s);
}

/* A content_rows_fn for case_delete(); @arg is unused. */
static long long content_rows(void *arg, uint64_t ino)
{
	char sql[128];

	(void)arg;

	snprintf(sql, sizeof(sql),
		 "SELECT count(*) FROM contents WHERE ino = %llu",
		 (unsigned long long)ino);
	return admin_int(sql);
}

static void test_delete(void)
{
	struct store *s = open_fresh();

	case_delete(s, content_rows, NULL);
	store_free(s);
}

static void test_meta_roundtrip(void)
{
	/* one xattr "user.abc" = 00 ff 80: u16 name_len, u32 value_len,
	 * name, value */
	static const char xattrs[] = "\x08\x00\x03\x00\x00\x00user.abc"
				     "\x00\xff\x80";
	struct store *s = open_fresh();
	struct item_meta m = meta_of(ITEM_JSON, 1234567890123ULL);
	struct item_meta back;
	struct store_row row, rows[4];
	uint64_t f, d;
	int n;

	for (int i = 0; i < ITEM_HASH_LEN; i++)
		m.hash[i] = (uint8_t)(0xa0 + i);
	m.version = 1ULL << 40;
	m.mtime_ns = -1234567890123LL; /* before the epoch */
	m.atime_ns = INT64_MIN;
	m.ctime_ns = INT64_MAX;
	m.mode = S_IFREG | 04751;
	m.uid = 4000000000U;
	m.gid = 65534;
	m.explicit_dir = false;
	m.state = "reviewed \xc3\xa9";
	m.xattrs = (void *)xattrs;
	m.xattrs_len = sizeof(xattrs) - 1; /* not the final NUL */

	f = new_ino(s);
	CHECK_EQ(apply_one(s, change_of(f, STORE_ROOT_INO, "m.json", &m)), 0);

	CHECK_EQ(s->ops->get(s, f, &row), 0);
	CHECK(meta_equal(&row.meta, &m));
	CHECK(row.meta.state != m.state && row.meta.xattrs != m.xattrs);
	CHECK(strcmp(row.name, "m.json") == 0);
	store_row_release(&row);
	CHECK(row.meta.state == NULL && row.meta.xattrs == NULL);

	CHECK_EQ(s->ops->lookup(s, STORE_ROOT_INO, "m.json", &row), 0);
	CHECK(meta_equal(&row.meta, &m));
	CHECK_EQ(row.ino, f);
	store_row_release(&row);

	n = s->ops->list(s, STORE_ROOT_INO, "", rows, 4);
	CHECK_EQ(n, 1);
	CHECK(meta_equal(&rows[0].meta, &m));
	store_row_release(&rows[0]);

	/* the stem of a JSON file is its name without ".json" */
	CHECK_EQ(admin_int(
			 "SELECT count(*) FROM entries"
			 " WHERE stem = 'm'::bytea AND name = 'm.json'::bytea"),
		 1);

	/* NULL and empty state/xattrs come back NULL; a zero hash is zero */
	m.state = "";
	m.xattrs = NULL;
	m.xattrs_len = 0;
	memset(m.hash, 0, sizeof(m.hash));
	m.explicit_dir = true;
	CHECK_EQ(apply_one(s, change_of(f, STORE_ROOT_INO, "m.json", &m)), 0);
	CHECK_EQ(s->ops->get(s, f, &row), 0);
	CHECK(row.meta.state == NULL);
	CHECK(row.meta.xattrs == NULL && row.meta.xattrs_len == 0);
	CHECK(meta_equal(&row.meta, &m));
	store_row_release(&row);
	CHECK_EQ(admin_int("SELECT count(*) FROM entries WHERE hash IS NULL"
			   " AND state IS NULL AND xattrs IS NULL"),
		 2); /* the file and the root */

	/* a directory's meta, and a deep copy of a row's meta */
	m = meta_of(ITEM_DIR, 0);
	m.state = "s";
	m.explicit_dir = false;
	d = new_ino(s);
	CHECK_EQ(apply_one(s, change_of(d, STORE_ROOT_INO, "dir", &m)), 0);
	CHECK_EQ(s->ops->get(s, d, &row), 0);
	CHECK(meta_equal(&row.meta, &m));
	CHECK_EQ(item_meta_copy(&back, &row.meta), 0);
	store_row_release(&row);
	CHECK(meta_equal(&back, &m));
	item_meta_release(&back);
	store_free(s);
}

static void test_scan(void)
{
	struct store *s = open_fresh();

	case_scan(s);
	case_counts(s);
	store_free(s);
}

static void test_stats(void)
{
	struct store *s = open_fresh();

	case_stats(s);
	store_free(s);
}

static void test_reopen(void)
{
	struct store *s = open_fresh();
	struct store *t;
	struct store_row root1, root2;
	uint64_t d, f, first = 0, again = 0, other = 0;

	CHECK_EQ(s->ops->get(s, STORE_ROOT_INO, &root1), 0);
	d = put_dir(s, new_ino(s), STORE_ROOT_INO, "dir");
	f = put_file(s, new_ino(s), d, "f.json", ITEM_JSON, "[1,2]", 5);
	CHECK_EQ(s->ops->alloc_ino(s, 100, &first), 0);
	CHECK(first > f);
	store_free(s);

	s = open_ok();
	CHECK_EQ(s->ops->get(s, STORE_ROOT_INO, &root2), 0);
	CHECK(meta_equal(&root1.meta, &root2.meta)); /* not made again */
	store_row_release(&root1);
	store_row_release(&root2);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "dir"), d);
	CHECK_EQ(lookup_ino(s, d, "f.json"), f);
	check_content(s, f, "[1,2]", 5);
	CHECK_EQ(s->ops->alloc_ino(s, 1, &again), 0);
	CHECK_EQ(again, first + 100);

	/* a second store on the same database (another mount) shares the
	 * counter and sees committed batches */
	t = open_ok();
	CHECK_EQ(t->ops->alloc_ino(t, 5, &other), 0);
	CHECK_EQ(other, again + 1);
	CHECK_EQ(s->ops->alloc_ino(s, 1, &again), 0);
	CHECK_EQ(again, other + 5);
	put_file(t, other, d, "from-t", ITEM_BINARY, "t", 1);
	CHECK_EQ(lookup_ino(s, d, "from-t"), other);
	check_content(s, other, "t", 1);
	store_free(t);
	store_free(s);
}

/* Expects l3_pg_open(@conninfo) to fail with @want, with a log line. */
static void open_fails(const char *conninfo, int want, const char *word)
{
	struct store *s = (struct store *)1;

	log_reset();
	CHECK_EQ(l3_pg_open(conninfo, &test_log, &s), want);
	CHECK(s == (struct store *)1); /* untouched on failure */
	CHECK(nlogs > 0);
	if (word)
		CHECK(log_has(word));
}

/* Builds a URI to the test server with user @user, password @pass and
 * database @db. */
static void uri_with(char *buf, size_t size, const char *user, const char *pass,
		     const char *db)
{
	const char *host = "127.0.0.1", *port = "5432";
	PQconninfoOption *opts = PQconninfoParse(uri, NULL);

	CHECK(opts);
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		if (o->val && strcmp(o->keyword, "host") == 0)
			host = o->val;
		if (o->val && strcmp(o->keyword, "port") == 0)
			port = o->val;
	}
	snprintf(buf, size, "host=%s port=%s user=%s password=%s dbname=%s",
		 host, port, user, pass, db);
	PQconninfoFree(opts);
}

static void test_refuse(void)
{
	struct store *s = NULL;
	char ci[512];

	/* a newer schema */
	s = open_fresh();
	store_free(s);
	admin_exec("UPDATE tierfs_meta SET value = 99"
		   " WHERE key = 'schema_version'");
	open_fails(uri, -EINVAL, "newer");

	/* someone else's format */
	admin_exec("UPDATE tierfs_meta SET value = 1"
		   " WHERE key = 'schema_version'");
	admin_exec("UPDATE tierfs_meta SET text_value = 'other'"
		   " WHERE key = 'format'");
	open_fails(uri, -EINVAL, "not a tierfs database");

	/* someone else's tables are left alone */
	reset_schema();
	admin_exec("CREATE TABLE entries (x integer)");
	open_fails(uri, -EINVAL, "not a tierfs database");
	CHECK_EQ(admin_int("SELECT count(*) FROM information_schema.columns"
			   " WHERE table_name = 'entries'"),
		 1);
	CHECK_EQ(admin_int("SELECT count(*) FROM pg_tables"
			   " WHERE tablename = 'tierfs_meta'"),
		 0);

	/* an empty tierfs_meta is not enough */
	reset_schema();
	admin_exec("CREATE TABLE tierfs_meta (key text PRIMARY KEY,"
		   " value bigint, text_value text)");
	open_fails(uri, -EINVAL, "not a tierfs database");
	reset_schema();

	/* bad connection strings: libpq's reason may quote the password */
	extra_secret = "p4ss-w0rd";
	open_fails("postgresql://tierfs:%ZZp4ss-w0rd@127.0.0.1/tierfs", -EINVAL,
		   "not a valid");
	open_fails("host=127.0.0.1 password='p4ss-w0rd", -EINVAL,
		   "not a valid");
	open_fails("host=127.0.0.1 p4ss-w0rd", -EINVAL, "not a valid");

	/* a wrong password, a missing database, a closed port */
	uri_with(ci, sizeof(ci), "tierfs", "p4ss-w0rd", "tierfs");
	open_fails(ci, -EACCES, "cannot connect");
	CHECK(log_has("127.0.0.1:"));
	uri_with(ci, sizeof(ci), "no_such_role", "p4ss-w0rd", "tierfs");
	open_fails(ci, -EACCES, "cannot connect");
	extra_secret = NULL;
	if (secret[0]) {
		uri_with(ci, sizeof(ci), "tierfs", secret, "no_such_db");
		open_fails(ci, -EINVAL, "no_such_db");
	}
	open_fails("postgresql://tierfs@127.0.0.1:1/tierfs?connect_timeout=2",
		   -EAGAIN, "127.0.0.1:1/tierfs");
	open_fails(NULL, -EINVAL, NULL);

	/* a NULL log is allowed */
	s = NULL;
	CHECK_EQ(l3_pg_open(uri, NULL, &s), 0);
	CHECK_EQ(lookup_ino(s, 0, ""), STORE_ROOT_INO);
	store_free(s);
}

/* The listing of names (the statement list_by_ino runs for names, by its
 * text) of directory @dir, which holds @n entries, once vacuumed: an
 * index-only scan of entries_parent_ino that reads no row from the table
 * (Heap Fetches: 0),
 * with no sort. Sequential and bitmap scans are off, as the planner would
 * rather read a small table whole. */
static void check_list_names_plan(uint64_t dir, int n)
{
	char sql[1024], rows[64];
	PGresult *res;
	bool only = false, no_fetch = false, sorted = false, all = false;

	admin_exec("VACUUM (ANALYZE) entries");
	snprintf(sql, sizeof(sql),
		 "PREPARE tierfs_test_names (bigint, bigint, bigint) AS %s",
		 lpg_stmts[S_LIST_INO_NAMES].sql);
	admin_exec(sql);
	admin_exec("SET enable_seqscan = off; SET enable_bitmapscan = off");
	snprintf(sql, sizeof(sql),
		 "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)"
		 " EXECUTE tierfs_test_names (%llu, 0, 1024)",
		 (unsigned long long)dir);
	res = PQexec(admin, sql);
	CHECK_EQ(PQresultStatus(res), PGRES_TUPLES_OK);
	snprintf(rows, sizeof(rows), "(actual rows=%d ", n);
	for (int r = 0; r < PQntuples(res); r++) {
		const char *d = PQgetvalue(res, r, 0);

		if (strstr(d, "Index Only Scan using entries_parent_ino"))
			only = true;
		if (strstr(d, "Index Only Scan") && strstr(d, rows))
			all = true;
		if (strstr(d, "Heap Fetches: 0"))
			no_fetch = true;
		if (strstr(d, "Sort"))
			sorted = true;
		if (getenv("TEST_VERBOSE"))
			fprintf(stderr, "names plan: %s\n", d);
	}
	PQclear(res);
	CHECK(only);
	CHECK(all);
	CHECK(no_fetch);
	CHECK(!sorted);
	admin_exec("DEALLOCATE tierfs_test_names;"
		   " RESET enable_seqscan; RESET enable_bitmapscan");
}

/* The statements must be able to use their index and never sort: bytea
 * needs no collation. Lookups and walks by name use the (parent, name)
 * index, listings in inode order the (parent, ino) one, and the listing
 * of names reads the index alone. */
static void test_query_plans(void)
{
	static const char *const queries[] = {
		("SELECT * FROM entries WHERE parent = 1 AND name > 'a'::bytea"
		 " ORDER BY name LIMIT 10"),
		"SELECT * FROM entries WHERE parent = 1 AND name = 'a'::bytea",
		"SELECT 1 FROM entries WHERE parent = 1 LIMIT 1",
		("SELECT * FROM entries WHERE parent = 1 AND ino > 5"
		 " ORDER BY ino LIMIT 10"),
	};
	/* the index each query must use */
	static const char *const indexes[] = {
		"entries_parent_name",
		"entries_parent_name",
		"entries_parent_",
		"entries_parent_ino",
	};
	struct store *s = open_fresh();

	for (int i = 0; i < 50; i++) {
		char name[16];

		snprintf(name, sizeof(name), "f%02d", i);
		put_file(s, new_ino(s), STORE_ROOT_INO, name, ITEM_BINARY, "",
			 0);
	}
	store_free(s);
	admin_exec("ANALYZE entries");
	admin_exec("SET enable_seqscan = off");
	for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
		char sql[256];
		PGresult *res;
		bool indexed = false, sorted = false;

		snprintf(sql, sizeof(sql), "EXPLAIN (COSTS OFF) %s",
			 queries[i]);
		res = PQexec(admin, sql);
		CHECK_EQ(PQresultStatus(res), PGRES_TUPLES_OK);
		for (int r = 0; r < PQntuples(res); r++) {
			const char *d = PQgetvalue(res, r, 0);

			if (strstr(d, indexes[i]))
				indexed = true;
			if (strstr(d, "Sort"))
				sorted = true;
		}
		PQclear(res);
		CHECK(indexed);
		CHECK(!sorted);
	}
	admin_exec("RESET enable_seqscan");
	check_list_names_plan(STORE_ROOT_INO, 50);
}

/* ---- concurrency: more threads than pooled connections ---- */

struct reader_arg {
	struct store *s;
	uint64_t dir;
	int errors;
};

static void *reader_main(void *p)
{
	struct reader_arg *a = p;
	struct store_row rows[8];
	struct store_row row;
	void *data;
	size_t len;

	for (int i = 0; i < 100; i++) {
		int n, err;

		if (a->s->ops->get(a->s, STORE_ROOT_INO, &row) == 0)
			store_row_release(&row);
		else
			a->errors++;
		n = a->s->ops->list(a->s, a->dir, "", rows, 8);
		if (n < 0)
			a->errors++;
		for (int j = 0; j < n; j++) {
			err = a->s->ops->read(a->s, rows[j].ino, &data, &len);
			if (err == 0)
				free(data);
			else if (err != -ENOENT) /* deleted since listed */
				a->errors++;
			store_row_release(&rows[j]);
		}
		err = a->s->ops->lookup(a->s, a->dir, "toggle", &row);
		if (err == 0)
			store_row_release(&row);
		else if (err != -ENOENT)
			a->errors++;
		if (a->s->ops->has_children(a->s, a->dir) < 0)
			a->errors++;
	}
	return NULL;
}

/* Reads from 8 threads while this one applies; returns when all are done. */
static void run_readers(struct store *s, uint64_t d, uint64_t t)
{
	struct reader_arg args[8];
	pthread_t th[8];
	struct item_meta m = meta_of(ITEM_BINARY, 3);
	struct change *c;

	for (int i = 0; i < 8; i++) {
		args[i] = (struct reader_arg){.s = s, .dir = d};
		CHECK_EQ(pthread_create(&th[i], NULL, reader_main, &args[i]),
			 0);
	}
	for (int i = 0; i < 100; i++) {
		if (i % 2 == 0)
			c = data_change_of(t, d, "toggle", &m, "abc", 3);
		else
			c = delete_of(t);
		CHECK_EQ(apply_one(s, c), 0);
	}
	for (int i = 0; i < 8; i++) {
		CHECK_EQ(pthread_join(th[i], NULL), 0);
		CHECK_EQ(args[i].errors, 0);
	}
}

static void test_threads(void)
{
	struct store *s = open_fresh();
	uint64_t d, t;

	d = put_dir(s, new_ino(s), STORE_ROOT_INO, "d");
	for (int i = 0; i < 5; i++) {
		char name[16];

		snprintf(name, sizeof(name), "f%d", i);
		put_file(s, new_ino(s), d, name, ITEM_BINARY, "abc", 3);
	}
	t = new_ino(s);
	run_readers(s, d, t);
	CHECK(admin_int("SELECT count(*) FROM pg_stat_activity"
			" WHERE application_name = 'tierfs'") <= 4);
	store_free(s);
}

/* ---- several mounts on one database ---- */

#define NSTORES 4
#define NALLOCS 100

static pthread_barrier_t barrier;

struct mount_arg {
	struct store *s;
	int err;
	uint64_t first[NALLOCS], count[NALLOCS];
};

static void *open_main(void *p)
{
	struct mount_arg *a = p;

	pthread_barrier_wait(&barrier);
	a->err = l3_pg_open(uri, &test_log, &a->s);
	return NULL;
}

static void *alloc_main(void *p)
{
	struct mount_arg *a = p;

	pthread_barrier_wait(&barrier);
	for (int i = 0; i < NALLOCS && !a->err; i++) {
		a->count[i] = 1 + (uint64_t)i % 7 * 100;
		a->err = a->s->ops->alloc_ino(a->s, a->count[i], &a->first[i]);
	}
	return NULL;
}

struct range {
	uint64_t first, count;
};

static int cmp_range(const void *a, const void *b)
{
	const struct range *x = a, *y = b;

	return x->first < y->first ? -1 : x->first > y->first;
}

static void test_mounts(void)
{
	static struct mount_arg args[NSTORES];
	static struct range ranges[NSTORES * NALLOCS];
	pthread_t th[NSTORES];
	size_t n = 0;

	/* mounts that start together on an empty database: one creates
	 * the schema, the others wait for it and use it */
	reset_schema();
	CHECK_EQ(pthread_barrier_init(&barrier, NULL, NSTORES), 0);
	for (int i = 0; i < NSTORES; i++)
		CHECK_EQ(pthread_create(&th[i], NULL, open_main, &args[i]), 0);
	for (int i = 0; i < NSTORES; i++) {
		CHECK_EQ(pthread_join(th[i], NULL), 0);
		CHECK_EQ(args[i].err, 0);
	}
	CHECK_EQ(admin_int("SELECT count(*) FROM entries"), 1);
	CHECK_EQ(admin_int("SELECT count(*) FROM tierfs_meta"), 3);

	/* allocations that race get disjoint ranges */
	for (int i = 0; i < NSTORES; i++)
		CHECK_EQ(pthread_create(&th[i], NULL, alloc_main, &args[i]), 0);
	for (int i = 0; i < NSTORES; i++) {
		CHECK_EQ(pthread_join(th[i], NULL), 0);
		CHECK_EQ(args[i].err, 0);
		for (int j = 0; j < NALLOCS; j++)
			ranges[n++] = (struct range){args[i].first[j],
						     args[i].count[j]};
	}
	CHECK_EQ(pthread_barrier_destroy(&barrier), 0);
	qsort(ranges, n, sizeof(ranges[0]), cmp_range);
	CHECK_EQ(ranges[0].first, 2);
	for (size_t i = 1; i < n; i++) /* disjoint, and no gap either */
		CHECK_EQ(ranges[i].first,
			 ranges[i - 1].first + ranges[i - 1].count);
	for (int i = 0; i < NSTORES; i++)
		store_free(args[i].s);
}

/* Two mounts rewrite the same rows at once: the last commit wins whole,
 * row and content together, and no batch fails for a race. */

#define NRACE 20

struct writer_arg {
	struct store *s;
	uint64_t *inos;
	uint64_t dir;
	int id;
	int errors, eagain;
};

static void *writer_main(void *p)
{
	struct writer_arg *a = p;
	struct item_meta m;
	struct change *c[NRACE];
	char data[32];
	char names[16];

	for (int round = 0; round < 30; round++) {
		int err;

		for (int i = 0; i < NRACE; i++) {
			/* writer 1 also swaps names pairwise every round */
			int k = a->id == 1 && round % 2 ? i ^ 1 : i;
			int len;

			len = snprintf(data, sizeof(data), "v%d",
				       a->id * 1000 + round);
			m = meta_of(ITEM_BINARY, (uint64_t)len);
			m.version = (uint64_t)(a->id * 1000 + round);
			snprintf(names, sizeof(names), "f%02d", k);
			c[i] = data_change_of(a->inos[i], a->dir, names, &m,
					      data, (size_t)len);
		}
		err = apply_changes(a->s, c, NRACE);
		if (err == -EAGAIN)
			a->eagain++;
		else if (err)
			a->errors++;
	}
	return NULL;
}

static void test_racing_writers(void)
{
	struct store *s = open_fresh();
	struct store *t = open_ok();
	struct writer_arg args[2];
	uint64_t inos[NRACE], d;
	struct store_row rows[NRACE + 1];
	pthread_t th[2];
	int n;

	d = put_dir(s, new_ino(s), STORE_ROOT_INO, "race");
	for (int i = 0; i < NRACE; i++) {
		char name[16];

		snprintf(name, sizeof(name), "f%02d", i);
		inos[i] =
			put_file(s, new_ino(s), d, name, ITEM_BINARY, "v0", 2);
	}
	for (int i = 0; i < 2; i++) {
		args[i] = (struct writer_arg){
			.s = i ? t : s, .inos = inos, .dir = d, .id = i + 1};
		CHECK_EQ(pthread_create(&th[i], NULL, writer_main, &args[i]),
			 0);
	}
	for (int i = 0; i < 2; i++) {
		CHECK_EQ(pthread_join(th[i], NULL), 0);
		CHECK_EQ(args[i].errors, 0);
		/* conflicts are retried until the batch gets through */
		CHECK_EQ(args[i].eagain, 0);
	}

	/* every ino once, every name once, each row with content that one
	 * writer wrote ("vN"), and a version at least the N it brought (a
	 * batch with content gets above the stored one, store.h) */
	n = s->ops->list(s, d, "", rows, NRACE + 1);
	CHECK_EQ(n, NRACE);
	for (int i = 0; i < n; i++) {
		char *data = NULL;
		size_t len = 0;
		unsigned long long v = 0;
		char tail;

		CHECK_EQ(s->ops->read(s, rows[i].ino, (void **)&data, &len), 0);
		CHECK(len > 1 && len < 16 && data[0] == 'v');
		data = realloc(data, len + 1);
		CHECK(data);
		data[len] = '\0';
		CHECK_EQ(sscanf(data + 1, "%llu%c", &v, &tail), 1);
		CHECK(v >= 1000);
		CHECK(rows[i].meta.version >= v);
		free(data);
		if (i)
			CHECK(strcmp(rows[i - 1].name, rows[i].name) < 0);
		store_row_release(&rows[i]);
	}
	store_free(t);
	store_free(s);
}

/* ---- lost connections ---- */

static void test_reconnect(void)
{
	struct store *s = open_fresh();
	struct item_meta m = meta_of(ITEM_BINARY, 1);
	struct store_row row;
	uint64_t d, t, f, ino = 0;

	d = put_dir(s, new_ino(s), STORE_ROOT_INO, "d");
	t = new_ino(s);
	run_readers(s, d, t); /* fills the pool */
	CHECK(admin_int("SELECT count(*) FROM pg_stat_activity"
			" WHERE application_name = 'tierfs'") > 1);

	/* the server drops every connection of the store (a restart) */
	drop_connections();

	/* each operation finds a dead connection and tries a new one */
	log_reset();
	CHECK_EQ(s->ops->get(s, STORE_ROOT_INO, &row), 0);
	store_row_release(&row);
	CHECK(nlogs > 0); /* the lost connection was noticed */
	f = new_ino(s);
	CHECK_EQ(apply_one(s, data_change_of(f, d, "after", &m, "x", 1)), 0);
	CHECK_EQ(s->ops->alloc_ino(s, 3, &ino), 0);
	CHECK_EQ(lookup_ino(s, d, "after"), f);
	check_content(s, f, "x", 1);
	run_readers(s, d, t);
	store_free(s);
}

/* ---- a batch of 2000 rows ---- */

#define NBATCH 2000

static void test_big_batch(void)
{
	static struct item_meta m[NBATCH];
	static struct change *c[NBATCH];
	static char names[NBATCH][16];
	static char data[NBATCH][100];
	struct store *s = open_fresh();
	struct store_row rows[16];
	char after[STORE_NAME_MAX + 1] = "";
	uint64_t first = 0, d, entries, bytes;
	double t0, t1, t2;
	char *name;
	int n, seen = 0;

	d = put_dir(s, new_ino(s), STORE_ROOT_INO, "many");
	CHECK_EQ(s->ops->alloc_ino(s, NBATCH, &first), 0);
	for (int i = 0; i < NBATCH; i++) {
		snprintf(names[i], sizeof(names[i]), "f%05d", i);
		memset(data[i], 'a' + i % 26, sizeof(data[i]));
		data[i][0] = '\0';
		m[i] = meta_of(i % 2 ? ITEM_BINARY : ITEM_JSON,
			       sizeof(data[i]));
		if (i % 2 == 0)
			strcat(names[i], ".json");
		m[i].hash[0] = (uint8_t)i;
		m[i].state = i % 3 ? NULL : "tag";
		c[i] = data_change_of(first + (uint64_t)i, d, names[i], &m[i],
				      data[i], sizeof(data[i]));
	}

	/* the last row collides: none of the 2000 is written (its name
	 * borrowed for that one apply) */
	name = c[NBATCH - 1]->name;
	c[NBATCH - 1]->name = names[0];
	CHECK_EQ(store_apply(s, c, NBATCH), -EEXIST);
	CHECK_EQ(s->ops->has_children(s, d), 0);
	CHECK_EQ(admin_int("SELECT count(*) FROM contents"), 0);
	c[NBATCH - 1]->name = name;

	t0 = now_s();
	CHECK_EQ(store_apply(s, c, NBATCH), 0);
	t1 = now_s();
	/* a metadata-only rewrite of every row (a rename, chmod, touch) */
	for (int i = 0; i < NBATCH; i++) {
		m[i].version = 2;
		c[i]->meta.version = 2;
		item_unref(c[i]->item);
		c[i]->item = NULL;
	}
	CHECK_EQ(apply_changes(s, c, NBATCH), 0);
	t2 = now_s();
	printf("apply: %d rows with 100-byte content in one batch: %.1f ms, "
	       "%.0f rows/s\n",
	       NBATCH, (t1 - t0) * 1e3, NBATCH / (t1 - t0));
	printf("apply: %d metadata-only rows in one batch: %.1f ms, "
	       "%.0f rows/s\n",
	       NBATCH, (t2 - t1) * 1e3, NBATCH / (t2 - t1));

	for (;;) {
		n = s->ops->list(s, d, after, rows, 16);
		CHECK(n >= 0);
		if (n == 0)
			break;
		for (int i = 0; i < n; i++) {
			CHECK(strcmp(rows[i].name, names[seen]) == 0);
			CHECK_EQ(rows[i].ino, first + (uint64_t)seen);
			CHECK(meta_equal(&rows[i].meta, &m[seen]));
			seen++;
		}
		snprintf(after, sizeof(after), "%s", rows[n - 1].name);
		for (int i = 0; i < n; i++)
			store_row_release(&rows[i]);
	}
	CHECK_EQ(seen, NBATCH);
	check_content(s, first + 1234, data[1234], sizeof(data[1234]));
	CHECK_EQ(s->ops->stats(s, &entries, &bytes), 0);
	CHECK_EQ(entries, NBATCH + 1);
	CHECK_EQ(bytes, NBATCH * sizeof(data[0]));

	/* and all of them deleted in one batch */
	for (int i = 0; i < NBATCH; i++)
		c[i] = delete_of(first + (uint64_t)i);
	CHECK_EQ(apply_changes(s, c, NBATCH), 0);
	CHECK_EQ(s->ops->has_children(s, d), 0);
	CHECK_EQ(admin_int("SELECT count(*) FROM contents"), 0);
	store_free(s);
}

/* ---- Merkle hashes ---- */

static void sha256_of(const void *data, size_t len, uint8_t out[MERKLE_LEN])
{
	struct merkle *m = merkle_begin();

	CHECK(m);
	merkle_update(m, data, len);
	merkle_end(m, out);
}

static void hex_to(const char *hex, uint8_t out[MERKLE_LEN])
{
	CHECK_EQ(strlen(hex), 2 * MERKLE_LEN);
	for (size_t i = 0; i < MERKLE_LEN; i++) {
		unsigned int b;

		CHECK(sscanf(hex + 2 * i, "%2x", &b) == 1);
		out[i] = (uint8_t)b;
	}
}

/* The index of @ino in apply()'s report; fails when it is not there. */
static size_t tree_pos(const struct store_dirhash *tree, size_t ntree,
		       uint64_t ino)
{
	for (size_t i = 0; i < ntree; i++)
		if (tree[i].ino == ino)
			return i;
	CHECK(!"the directory is in the report");
	return 0;
}

/* Every directory's stored merkle, "ino:hex,..." in ino order (malloc). */
static char *merkle_snapshot(void)
{
	return admin_text("SELECT string_agg(ino || ':' ||"
			  " coalesce(encode(merkle, 'hex'), 'null'), ','"
			  " ORDER BY ino) FROM entries WHERE kind = 0");
}

/*
 * Recomputes the Merkle hash of directory @dir from scratch with merkle.c,
 * from list() alone, into @out; checks on the way that each subdirectory's
 * stored merkle (row.merkle) equals its recomputation and that each file's
 * row.merkle is its hash. Returns the number of directories below @dir.
 */
static size_t merkle_recompute(struct store *s, uint64_t dir,
			       uint8_t out[MERKLE_LEN])
{
	struct store_row rows[32];
	char after[STORE_NAME_MAX + 1] = "";
	struct merkle *m = merkle_begin();
	size_t dirs = 0;
	int n;

	CHECK(m);
	do {
		n = s->ops->list(s, dir, after, rows, 32);
		CHECK(n >= 0);
		for (int i = 0; i < n; i++) {
			bool is_dir = rows[i].meta.kind == ITEM_DIR;
			uint8_t h[MERKLE_LEN];

			if (is_dir) {
				dirs += 1 + merkle_recompute(s, rows[i].ino, h);
				CHECK(memcmp(rows[i].merkle, h, MERKLE_LEN) ==
				      0);
			} else {
				CHECK(memcmp(rows[i].merkle, rows[i].meta.hash,
					     MERKLE_LEN) == 0);
				memcpy(h, rows[i].merkle, MERKLE_LEN);
			}
			merkle_add_child(m, rows[i].name, strlen(rows[i].name),
					 is_dir, h);
		}
		if (n)
			snprintf(after, sizeof(after), "%s", rows[n - 1].name);
		for (int i = 0; i < n; i++)
			store_row_release(&rows[i]);
	} while (n == 32);
	merkle_end(m, out);
	return dirs;
}

/* Checks the whole tree's stored hashes against merkle_recompute(). */
static void check_merkle_tree(struct store *s, uint8_t root[MERKLE_LEN])
{
	struct store_row r;

	merkle_recompute(s, STORE_ROOT_INO, root);
	CHECK_EQ(s->ops->get(s, STORE_ROOT_INO, &r), 0);
	CHECK(memcmp(r.merkle, root, MERKLE_LEN) == 0);
	store_row_release(&r);
}

/*
 * A small tree in one batch, whose root hash Python's hashlib computed on
 * its own (merkle.h's definition, written again):
 *
 * python3 -c 'import hashlib as h;H=lambda b:h.sha256(b).digest();D=lambda
 * k:H(b"".join(n+b"\0"+t+x for n,t,x in sorted(k)));a=D([(b"b",b"f",H(b"\0
 * \1")),(b"c",b"d",D([]))]);print(a.hex());print(D([(b"a",b"d",a),(b"a.json
 * ",b"f",H(b"{}")),(b"ab",b"f",H(b"hello")),(b"x",b"d",D([])),(b"x.json",b"
 * f",H(b"[1]")),(b"\xc3\xa9",b"f",H(b""))]).hex())'
 *
 * (one line, without the comment's line breaks and asterisks)
 */
static void test_merkle_golden(void)
{
	static const char golden_a[] = "8f31d27df70201fbd81f8ae74e8a1758"
				       "853d20ab46ac595d44f234953aa952b1";
	static const char golden_root[] = "7a6830a3f1949b5dbdf16f940abc744d"
					  "49b134148174af56a3d04cf300bcdef7";
	struct store *s = open_fresh();
	struct item_meta m[9];
	struct change *c[9];
	struct store_dirhash *tree = NULL;
	size_t ntree = 0;
	uint8_t want_a[MERKLE_LEN], want_root[MERKLE_LEN], empty[MERKLE_LEN];
	uint8_t got[MERKLE_LEN], h[MERKLE_LEN];
	uint64_t first = 0, a, x, cdir;
	struct store_row r;
	void *data;
	size_t len;

	hex_to(golden_a, want_a);
	hex_to(golden_root, want_root);
	merkle_empty(empty);
	CHECK_EQ(s->ops->alloc_ino(s, 9, &first), 0);
	a = first;
	cdir = first + 1;
	x = first + 2;
	m[0] = meta_of(ITEM_DIR, 0);
	m[1] = meta_of(ITEM_DIR, 0);
	m[2] = meta_of(ITEM_DIR, 0);
	/* files before the directories that hold them: order is free */
	c[0] = hashed_change_of(first + 3, a, "b", &m[3], ITEM_BINARY, "\0\1",
				2);
	c[1] = change_of(cdir, a, "c", &m[1]);
	c[2] = change_of(a, STORE_ROOT_INO, "a", &m[0]);
	c[3] = hashed_change_of(first + 4, STORE_ROOT_INO, "a.json", &m[4],
				ITEM_JSON, "{}", 2);
	c[4] = hashed_change_of(first + 5, STORE_ROOT_INO, "ab", &m[5],
				ITEM_BINARY, "hello", 5);
	c[5] = change_of(x, STORE_ROOT_INO, "x", &m[2]);
	c[6] = hashed_change_of(first + 6, STORE_ROOT_INO, "x.json", &m[6],
				ITEM_JSON, "[1]", 3);
	c[7] = hashed_change_of(first + 7, STORE_ROOT_INO, "\xc3\xa9", &m[7],
				ITEM_BINARY, "", 0);
	CHECK_EQ(s->ops->apply(s, c, 8, &tree, &ntree), 0);
	changes_free(c, 8);

	/* the report: the four directories, deepest before their parents,
	 * the root last with the golden hash */
	CHECK_EQ(ntree, 4);
	CHECK(tree != NULL);
	CHECK_EQ(tree[3].ino, STORE_ROOT_INO);
	CHECK(memcmp(tree[3].merkle, want_root, MERKLE_LEN) == 0);
	/* a, x and cdir each once before the root, cdir before its parent
	 * (how x sits among them, store.h leaves open) */
	CHECK(tree_pos(tree, ntree, cdir) < tree_pos(tree, ntree, a));
	CHECK(tree_pos(tree, ntree, x) < 3 &&
	      tree_pos(tree, ntree, x) != tree_pos(tree, ntree, a) &&
	      tree_pos(tree, ntree, x) != tree_pos(tree, ntree, cdir));
	CHECK(memcmp(tree[tree_pos(tree, ntree, a)].merkle, want_a,
		     MERKLE_LEN) == 0);
	CHECK(memcmp(tree[tree_pos(tree, ntree, x)].merkle, empty,
		     MERKLE_LEN) == 0);
	CHECK(memcmp(tree[tree_pos(tree, ntree, cdir)].merkle, empty,
		     MERKLE_LEN) == 0);
	free(tree);

	/* what get, lookup, list and fetch report */
	check_merkle_tree(s, got);
	CHECK(memcmp(got, want_root, MERKLE_LEN) == 0);
	CHECK_EQ(s->ops->lookup(s, STORE_ROOT_INO, "a", &r), 0);
	CHECK(memcmp(r.merkle, want_a, MERKLE_LEN) == 0);
	store_row_release(&r);
	CHECK_EQ(s->ops->get(s, x, &r), 0);
	CHECK(memcmp(r.merkle, empty, MERKLE_LEN) == 0);
	store_row_release(&r);
	sha256_of("hello", 5, h);
	CHECK_EQ(s->ops->fetch(s, first + 5, &r, &data, &len), 0);
	CHECK(memcmp(r.merkle, h, MERKLE_LEN) == 0);
	store_row_release(&r);
	free(data);
	CHECK_EQ(s->ops->fetch(s, a, &r, &data, &len), 0);
	CHECK(memcmp(r.merkle, want_a, MERKLE_LEN) == 0);
	store_row_release(&r);
	free(data);

	/* a file whose hash is unknown (zero) counts as 32 zero bytes, as
	 * its row reports it; deleting it gives the golden hash back */
	m[8] = meta_of(ITEM_BINARY, 0);
	c[0] = change_of(first + 8, STORE_ROOT_INO, "nohash", &m[8]);
	CHECK_EQ(s->ops->apply(s, c, 1, &tree, &ntree), 0);
	changes_free(c, 1);
	CHECK_EQ(ntree, 1);
	CHECK_EQ(tree[0].ino, STORE_ROOT_INO);
	check_merkle_tree(s, got);
	CHECK(memcmp(got, tree[0].merkle, MERKLE_LEN) == 0);
	CHECK(memcmp(got, want_root, MERKLE_LEN) != 0);
	free(tree);
	c[0] = delete_of(first + 8);
	CHECK_EQ(s->ops->apply(s, c, 1, &tree, &ntree), 0);
	changes_free(c, 1);
	CHECK_EQ(ntree, 1);
	CHECK(memcmp(tree[0].merkle, want_root, MERKLE_LEN) == 0);
	free(tree);

	/* a batch that changes no row (it deletes an ino that is not
	 * there) touches no directory and reports none */
	tree = (struct store_dirhash *)1;
	ntree = 7;
	c[0] = delete_of(first + 8);
	CHECK_EQ(s->ops->apply(s, c, 1, &tree, &ntree), 0);
	changes_free(c, 1);
	CHECK(tree == NULL && ntree == 0);
	store_free(s);
}

/* The fixed tree of store_helpers.h, which test_l3_sqlite.c checks alike. */
static void test_golden_merkle(void)
{
	struct store *s = open_fresh();

	case_golden_merkle(s);
	store_free(s);
}

/* A batch that fails leaves every hash as it was and reports none: refused
 * before SQL (one name twice, one ino twice), and at COMMIT, after the
 * Merkle step ran (a deferred trigger refuses it). */
static void test_merkle_failed_batch(void)
{
	struct store *s = open_fresh();
	struct item_meta m[3];
	struct change *c[3];
	struct store_dirhash *tree;
	size_t ntree;
	uint64_t d, sub;
	char *before, *after;
	uint8_t root[MERKLE_LEN];

	d = put_dir(s, new_ino(s), STORE_ROOT_INO, "d");
	sub = put_dir(s, new_ino(s), d, "sub");
	c[0] = hashed_change_of(new_ino(s), sub, "f", &m[0], ITEM_BINARY, "f",
				1);
	CHECK_EQ(apply_changes(s, c, 1), 0);
	check_merkle_tree(s, root);
	before = merkle_snapshot();

	/* a new file deep down, and another of the same name */
	c[0] = hashed_change_of(new_ino(s), sub, "g", &m[0], ITEM_BINARY, "g",
				1);
	c[1] = hashed_change_of(new_ino(s), sub, "g", &m[1], ITEM_BINARY, "x",
				1);
	tree = (struct store_dirhash *)1;
	ntree = 7;
	CHECK_EQ(s->ops->apply(s, c, 2, &tree, &ntree), -EEXIST);
	CHECK(tree == NULL && ntree == 0);
	after = merkle_snapshot();
	CHECK_STREQ(after, before);
	free(after);

	/* one ino written twice */
	change_free(c[1]);
	c[1] = c[0];
	tree = (struct store_dirhash *)1;
	ntree = 7;
	CHECK_EQ(s->ops->apply(s, c, 2, &tree, &ntree), -EEXIST);
	CHECK(tree == NULL && ntree == 0);

	/* refused at COMMIT, after the hashes were updated in the batch */
	admin_exec("CREATE OR REPLACE FUNCTION tierfs_test_refuse()"
		   " RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
		   " IF NEW.name = convert_to('refused', 'UTF8') THEN"
		   " RAISE EXCEPTION 'refused by the test'"
		   " USING ERRCODE = 'unique_violation'; END IF;"
		   " RETURN NULL; END $$");
	admin_exec("CREATE CONSTRAINT TRIGGER tierfs_test_refuse"
		   " AFTER INSERT ON entries DEFERRABLE INITIALLY DEFERRED"
		   " FOR EACH ROW EXECUTE FUNCTION tierfs_test_refuse()");
	c[1] = hashed_change_of(new_ino(s), d, "refused", &m[1], ITEM_BINARY,
				"r", 1);
	m[2] = meta_of(ITEM_DIR, 0);
	c[2] = change_of(new_ino(s), STORE_ROOT_INO, "newdir", &m[2]);
	tree = (struct store_dirhash *)1;
	ntree = 7;
	CHECK_EQ(s->ops->apply(s, c, 3, &tree, &ntree), -EEXIST);
	CHECK(tree == NULL && ntree == 0);
	after = merkle_snapshot();
	CHECK_STREQ(after, before);
	free(after);
	CHECK_EQ(lookup_ino(s, sub, "g"), -ENOENT);
	check_merkle_tree(s, root);

	/* the same batch without the refused row goes through */
	change_free(c[1]);
	c[1] = c[2];
	CHECK_EQ(s->ops->apply(s, c, 2, &tree, &ntree), 0);
	CHECK_EQ(ntree, 4); /* sub, d, newdir, root */
	CHECK_EQ(tree[3].ino, STORE_ROOT_INO);
	CHECK(tree_pos(tree, ntree, sub) < tree_pos(tree, ntree, d));
	free(tree);
	change_free(c[0]);
	change_free(c[2]); /* c[1] too */
	after = merkle_snapshot();
	CHECK(strcmp(after, before) != 0);
	free(after);
	free(before);
	check_merkle_tree(s, root);

	/* parents that form a cycle (a corrupt tree): the walk up stops and
	 * the batch fails, with nothing written */
	admin_exec("DROP FUNCTION IF EXISTS tierfs_test_refuse() CASCADE");
	before = merkle_snapshot();
	{
		uint64_t p = put_dir(s, new_ino(s), STORE_ROOT_INO, "p");
		uint64_t q = put_dir(s, new_ino(s), p, "q");
		char sql[128];
		double t0;

		free(before);
		before = merkle_snapshot();
		snprintf(sql, sizeof(sql),
			 "UPDATE entries SET parent = %llu WHERE ino = %llu",
			 (unsigned long long)q, (unsigned long long)p);
		admin_exec(sql);
		c[0] = hashed_change_of(new_ino(s), q, "f", &m[0], ITEM_BINARY,
					"f", 1);
		tree = (struct store_dirhash *)1;
		ntree = 7;
		log_reset();
		t0 = now_s();
		CHECK_EQ(s->ops->apply(s, c, 1, &tree, &ntree), -EIO);
		CHECK(now_s() - t0 < 30);
		CHECK(tree == NULL && ntree == 0);
		CHECK(log_has("cycle"));
		CHECK_EQ(lookup_ino(s, q, "f"), -ENOENT);
		changes_free(c, 1);
	}
	after = merkle_snapshot();
	CHECK_STREQ(after, before);
	free(after);
	free(before);
	store_free(s);
}

/* Writers on two mounts, each in its own directory or two in one: every
 * batch rehashes the root, so batches that overlap conflict and run again;
 * none may fail, and the hashes must end up right. */

#define NMERKLE_WRITERS 4
#define NMERKLE_ROUNDS 40

struct mwriter_arg {
	struct store *s;
	uint64_t dir, first; /* NMERKLE_ROUNDS inos from first */
	int id, errors;
};

static void *mwriter_main(void *p)
{
	struct mwriter_arg *a = p;

	pthread_barrier_wait(&barrier);
	for (int round = 0; round < NMERKLE_ROUNDS; round++) {
		struct item_meta m;
		struct change *c[2];
		char name[32], data[32];
		size_t n = 0;
		int len;

		len = snprintf(data, sizeof(data), "w%d r%d", a->id, round);
		snprintf(name, sizeof(name), "w%d-%02d", a->id, round);
		c[n++] = hashed_change_of(a->first + (uint64_t)round, a->dir,
					  name, &m, ITEM_BINARY, data,
					  (size_t)len);
		if (round % 3 == 2) /* and drop one written before */
			c[n++] = delete_of(a->first + (uint64_t)round - 2);
		if (apply_changes(a->s, c, n) != 0)
			a->errors++;
	}
	return NULL;
}

static void test_merkle_concurrent(void)
{
	struct store *s = open_fresh();
	struct store *t = open_ok();
	struct mwriter_arg args[NMERKLE_WRITERS];
	pthread_t th[NMERKLE_WRITERS];
	uint8_t root[MERKLE_LEN];
	uint64_t d[3], first = 0;
	double t0;

	d[0] = put_dir(s, new_ino(s), STORE_ROOT_INO, "d0");
	d[1] = put_dir(s, new_ino(s), STORE_ROOT_INO, "d1");
	d[2] = put_dir(s, new_ino(s), d[1], "d2");
	CHECK_EQ(s->ops->alloc_ino(s, NMERKLE_WRITERS * NMERKLE_ROUNDS, &first),
		 0);
	CHECK_EQ(pthread_barrier_init(&barrier, NULL, NMERKLE_WRITERS), 0);
	t0 = now_s();
	for (int i = 0; i < NMERKLE_WRITERS; i++) {
		/* writers 0 and 3 share d0; 1 and 2 are in d1 and below it */
		args[i] = (struct mwriter_arg){
			.s = i % 2 ? t : s,
			.dir = d[i % 3],
			.first = first + (uint64_t)i * NMERKLE_ROUNDS,
			.id = i,
		};
		CHECK_EQ(pthread_create(&th[i], NULL, mwriter_main, &args[i]),
			 0);
	}
	for (int i = 0; i < NMERKLE_WRITERS; i++) {
		CHECK_EQ(pthread_join(th[i], NULL), 0);
		CHECK_EQ(args[i].errors, 0);
	}
	CHECK_EQ(pthread_barrier_destroy(&barrier), 0);
	printf("merkle: %d writers on 2 mounts, %d batches each: %.1f ms\n",
	       NMERKLE_WRITERS, NMERKLE_ROUNDS, (now_s() - t0) * 1e3);
	check_merkle_tree(s, root);
	check_merkle_tree(t, root);
	store_free(t);
	store_free(s);
}

/* ---- migration ---- */

/* The version-1 schema, exactly as 0a19b64 created it (lpg_schema_sql, then
 * lpg_create's rows with fixed times and owner), and a few rows. */
static void make_v1_schema(void)
{
	reset_schema();
	admin_exec("CREATE TABLE tierfs_meta ("
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
		   " CONSTRAINT entries_parent_name UNIQUE (parent, name)"
		   ");"
		   "CREATE UNIQUE INDEX entries_parent_stem ON entries"
		   " (parent, stem) WHERE stem IS NOT NULL;"
		   "CREATE TABLE contents ("
		   " ino bigint PRIMARY KEY,"
		   " data bytea NOT NULL"
		   ");");
	admin_exec("INSERT INTO tierfs_meta (key, value, text_value) VALUES"
		   " ('format', NULL, 'tierfs'), ('schema_version', 1, NULL),"
		   " ('next_ino', 11, NULL);"
		   "INSERT INTO entries (ino, parent, name, stem, kind, size,"
		   " hash, version, mtime_ns, ctime_ns, mode, uid, gid,"
		   " explicit_dir, state, xattrs) VALUES (1, 0, ''::bytea,"
		   " NULL, 0, 0, NULL, 1, 1700000000000000000,"
		   " 1700000000000000000, 16877, 1000, 1000, true,"
		   " NULL, NULL)");
	/* a/ (b, c/), a.json, nohash (a NULL hash), x/y/z/\xff */
	admin_exec("INSERT INTO entries (ino, parent, name, stem, kind, size,"
		   " hash, version, mtime_ns, ctime_ns, mode, uid, gid,"
		   " explicit_dir, state, xattrs)"
		   " SELECT ino, parent, decode(name, 'hex'),"
		   " CASE WHEN kind = 0 THEN NULL"
		   " ELSE decode(stem, 'hex') END, kind, size,"
		   " CASE WHEN data IS NULL THEN NULL"
		   " ELSE sha256(decode(data, 'hex')) END, 1, 1, 1,"
		   " CASE WHEN kind = 0 THEN 16877 ELSE 33188 END, 0, 0,"
		   " kind = 0, NULL, NULL FROM (VALUES"
		   " (2, 1, '61', '', 0, 0, NULL),"
		   " (3, 1, '612e6a736f6e', '61', 1, 2, '7b7d'),"
		   " (4, 2, '62', '62', 2, 2, '0001'),"
		   " (5, 2, '63', '', 0, 0, NULL),"
		   " (6, 1, '6e6f68617368', '6e6f68617368', 2, 0, NULL),"
		   " (7, 1, '78', '', 0, 0, NULL),"
		   " (8, 7, '79', '', 0, 0, NULL),"
		   " (9, 8, '7a', '', 0, 0, NULL),"
		   " (10, 9, 'ff', 'ff', 2, 1, 'ff'))"
		   " AS v (ino, parent, name, stem, kind, size, data)");
	admin_exec("INSERT INTO contents (ino, data) VALUES"
		   " (3, decode('7b7d', 'hex')), (4, decode('0001', 'hex')),"
		   " (10, decode('ff', 'hex'))");
}

static void test_migration(void)
{
	static struct mount_arg args[NSTORES];
	pthread_t th[NSTORES];
	struct store *s;
	uint8_t root[MERKLE_LEN], again[MERKLE_LEN], h[MERKLE_LEN];
	struct store_row r;
	char *before, *after;

	/* one open migrates, and says so once */
	make_v1_schema();
	count_word = "migrated the schema from version 1 to 2: merkle hashes "
		     "of 6 directories";
	count_hits = 0;
	s = open_ok();
	CHECK_EQ(count_hits, 1);
	CHECK_EQ(admin_int("SELECT value FROM tierfs_meta"
			   " WHERE key = 'schema_version'"),
		 6);
	CHECK_EQ(admin_int("SELECT count(*) FROM entries"
			   " WHERE atime_ns IS DISTINCT FROM mtime_ns"),
		 0);
	CHECK_EQ(admin_int("SELECT count(*) FROM entries"
			   " WHERE (kind = 0) = (merkle IS NULL)"),
		 0); /* every directory has one, no file has */
	check_merkle_tree(s, root);
	/* a row of a file keeps its hash; NULL reads as zero */
	sha256_of("\xff", 1, h);
	CHECK_EQ(s->ops->get(s, 10, &r), 0);
	CHECK(memcmp(r.merkle, h, MERKLE_LEN) == 0);
	store_row_release(&r);
	CHECK_EQ(s->ops->get(s, 6, &r), 0);
	memset(h, 0, sizeof(h));
	CHECK(memcmp(r.merkle, h, MERKLE_LEN) == 0);
	store_row_release(&r);
	merkle_empty(h);
	CHECK_EQ(s->ops->get(s, 5, &r), 0); /* a/c is empty */
	CHECK(memcmp(r.merkle, h, MERKLE_LEN) == 0);
	store_row_release(&r);
	store_free(s);

	/* reopening is a no-op */
	before = merkle_snapshot();
	count_word = "migrated";
	count_hits = 0;
	s = open_ok();
	CHECK_EQ(count_hits, 0);
	after = merkle_snapshot();
	CHECK_STREQ(after, before);
	free(after);
	free(before);
	check_merkle_tree(s, again);
	CHECK(memcmp(again, root, MERKLE_LEN) == 0);
	/* and batches keep the hashes */
	put_file(s, new_ino(s), 9, "new", ITEM_BINARY, "n", 1);
	check_merkle_tree(s, again);
	CHECK(memcmp(again, root, MERKLE_LEN) != 0);
	store_free(s);

	/* mounts that open a version-1 schema together: one migrates */
	make_v1_schema();
	count_word = "migrated the schema from version 1 to 2";
	count_hits = 0;
	CHECK_EQ(pthread_barrier_init(&barrier, NULL, NSTORES), 0);
	for (int i = 0; i < NSTORES; i++)
		CHECK_EQ(pthread_create(&th[i], NULL, open_main, &args[i]), 0);
	for (int i = 0; i < NSTORES; i++) {
		CHECK_EQ(pthread_join(th[i], NULL), 0);
		CHECK_EQ(args[i].err, 0);
	}
	CHECK_EQ(pthread_barrier_destroy(&barrier), 0);
	CHECK_EQ(count_hits, 1);
	check_merkle_tree(args[0].s, again);
	CHECK(memcmp(again, root, MERKLE_LEN) == 0);
	for (int i = 0; i < NSTORES; i++)
		store_free(args[i].s);

	/* a migration that fails leaves version 1 as it was */
	make_v1_schema();
	admin_exec("CREATE OR REPLACE FUNCTION tierfs_test_refuse()"
		   " RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
		   " RAISE EXCEPTION 'refused by the test'; END $$");
	admin_exec("CREATE TRIGGER tierfs_test_refuse BEFORE UPDATE ON entries"
		   " FOR EACH ROW EXECUTE FUNCTION tierfs_test_refuse()");
	count_hits = 0;
	open_fails(uri, -EIO, "refused by the test");
	CHECK_EQ(count_hits, 0);
	CHECK_EQ(admin_int("SELECT value FROM tierfs_meta"
			   " WHERE key = 'schema_version'"),
		 1);
	CHECK_EQ(admin_int("SELECT count(*) FROM information_schema.columns"
			   " WHERE table_name = 'entries'"
			   " AND column_name = 'merkle'"),
		 0);
	count_word = NULL;
	reset_schema();
	admin_exec("DROP FUNCTION IF EXISTS tierfs_test_refuse() CASCADE");
}

/* ---- sharing: the feed, races, versions ---- */

/* Runs a case of store_feed_cases.h on two stores of one fresh database. */
static void feed_case(void (*fn)(struct store *, struct store *))
{
	struct store *a = open_fresh();
	struct store *b = open_ok();

	fn(a, b);
	store_free(b);
	store_free(a);
}

static void test_feed_cases(void)
{
	feed_case(case_feed_versions);
	feed_case(case_feed_same_name);
	feed_case(case_feed_rmdir_race);
	feed_case(case_feed_replace_empty_dir);
	feed_case(case_feed_dir_with_children);
	feed_case(case_feed_order);
	feed_case(case_feed_head);
	feed_case(case_feed_stale);
	feed_case(case_feed_wait);
	feed_case(case_feed_merkle_races);
	feed_case(case_feed_replay);
	feed_case(case_feed_move_cycle);
	feed_case(case_feed_move_cycle_strict);
}

#define NORDER_WRITERS 3
#define NORDER_BATCHES 60

struct order_writer {
	struct store *s;
	uint64_t dir;
	int id, errors;
};

static atomic_bool order_done;

static void *order_writer_main(void *p)
{
	struct order_writer *w = p;

	for (int i = 0; i < NORDER_BATCHES; i++) {
		struct item_meta m = meta_of(ITEM_BINARY, 1);
		struct change *c[3];
		char name[32];
		size_t n = 1 + (size_t)i % 3;

		for (size_t k = 0; k < n; k++) {
			snprintf(name, sizeof(name), "w%d-%d-%zu", w->id, i, k);
			c[k] = data_change_of(new_ino(w->s), w->dir, name, &m,
					      "x", 1);
		}
		if (apply_changes(w->s, c, n) != 0)
			w->errors++;
	}
	return NULL;
}

/*
 * Writers on three stores apply batches at once, in one directory (so they
 * conflict) while a reader on a fourth polls the feed: every record it
 * reads comes right after the one before (sequence numbers have no gaps
 * here: they are taken under a row lock and given back on rollback), so a
 * number it skipped would be one committed later below its position. At
 * the end, the feed read from 0 is the same list.
 */
static void test_feed_commit_order(void)
{
	struct store *w[NORDER_WRITERS], *r;
	struct order_writer args[NORDER_WRITERS];
	pthread_t th[NORDER_WRITERS];
	static struct store_feed recs[64];
	static uint64_t seen[NORDER_WRITERS * NORDER_BATCHES * 3 + 1];
	size_t nseen = 0, total = 0;
	uint64_t after, after0, d;
	int got;

	r = open_fresh();
	d = put_dir(r, new_ino(r), STORE_ROOT_INO, "order");
	after = after0 = feed_head_of(r);
	for (int i = 0; i < NORDER_WRITERS; i++) {
		w[i] = open_ok();
		args[i] = (struct order_writer){.s = w[i], .dir = d, .id = i};
	}
	for (int i = 0; i < NORDER_BATCHES; i++)
		total += 1 + (size_t)i % 3;
	total *= NORDER_WRITERS;
	atomic_store(&order_done, false);
	for (int i = 0; i < NORDER_WRITERS; i++)
		CHECK_EQ(pthread_create(&th[i], NULL, order_writer_main,
					&args[i]),
			 0);
	while (nseen < total) {
		got = r->ops->feed_read(r, after, recs, 64);
		CHECK(got >= 0);
		for (int i = 0; i < got; i++) {
			CHECK_EQ(recs[i].seq, after + 1);
			after = recs[i].seq;
			seen[nseen++] = after;
		}
		feed_release(recs, (size_t)got);
		if (got == 0)
			CHECK(r->ops->feed_wait(r, after, 1000) >= 0);
	}
	for (int i = 0; i < NORDER_WRITERS; i++) {
		CHECK_EQ(pthread_join(th[i], NULL), 0);
		CHECK_EQ(args[i].errors, 0);
	}
	CHECK_EQ(nseen, total);
	CHECK_EQ(feed_head_of(r), after);
	/* read again from the start, it is the same list */
	after = after0;
	for (size_t i = 0; i < nseen;) {
		got = w[0]->ops->feed_read(w[0], after, recs, 64);
		CHECK(got > 0);
		for (int k = 0; k < got; k++, i++)
			CHECK_EQ(recs[k].seq, seen[i]);
		after = recs[got - 1].seq;
		feed_release(recs, (size_t)got);
	}
	CHECK_EQ(admin_int("SELECT count(*) FROM feed"), (long long)total + 1);
	CHECK_EQ(admin_int("SELECT count(DISTINCT origin) FROM feed"),
		 NORDER_WRITERS + 1);
	for (int i = 0; i < NORDER_WRITERS; i++)
		store_free(w[i]);
	store_free(r);
}

#define NSAME_ROUNDS 25

struct same_writer {
	struct store *s;
	uint64_t ino[NSAME_ROUNDS];
	int errors;
};

static void *same_writer_main(void *p)
{
	struct same_writer *w = p;

	for (int i = 0; i < NSAME_ROUNDS; i++) {
		struct item_meta m = meta_of(ITEM_BINARY, 1);
		char name[16];

		snprintf(name, sizeof(name), "same%02d", i);
		pthread_barrier_wait(&barrier);
		if (apply_one(w->s, data_change_of(w->ino[i], STORE_ROOT_INO,
						   name, &m, "s", 1)) != 0)
			w->errors++;
	}
	return NULL;
}

/* Two threads, on two stores, create one name at once, round after round:
 * both batches succeed, one entry is left, and each round is one race. */
static void test_feed_same_name_threads(void)
{
	struct store *a = open_fresh(), *b = open_ok();
	struct same_writer w[2] = {{.s = a}, {.s = b}};
	pthread_t th[2];

	for (int i = 0; i < NSAME_ROUNDS; i++) {
		w[0].ino[i] = new_ino(a);
		w[1].ino[i] = new_ino(b);
	}
	CHECK_EQ(pthread_barrier_init(&barrier, NULL, 2), 0);
	for (int i = 0; i < 2; i++)
		CHECK_EQ(pthread_create(&th[i], NULL, same_writer_main, &w[i]),
			 0);
	for (int i = 0; i < 2; i++) {
		CHECK_EQ(pthread_join(th[i], NULL), 0);
		CHECK_EQ(w[i].errors, 0);
	}
	CHECK_EQ(pthread_barrier_destroy(&barrier), 0);
	for (int i = 0; i < NSAME_ROUNDS; i++) {
		char name[16];
		long long ino;
		struct store_row r;

		snprintf(name, sizeof(name), "same%02d", i);
		ino = lookup_ino(a, STORE_ROOT_INO, name);
		CHECK(ino == (long long)w[0].ino[i] ||
		      ino == (long long)w[1].ino[i]);
		/* the other is gone, content and all */
		CHECK_EQ(a->ops->get(a,
				     ino == (long long)w[0].ino[i]
					     ? w[1].ino[i]
					     : w[0].ino[i],
				     &r),
			 -ENOENT);
		CHECK_EQ(feed_version(a, (uint64_t)ino), 2);
	}
	CHECK_EQ(atomic_load(&a->races) + atomic_load(&b->races), NSAME_ROUNDS);
	CHECK_EQ(admin_int("SELECT count(*) FROM entries"), NSAME_ROUNDS + 1);
	CHECK_EQ(admin_int("SELECT count(*) FROM contents"), NSAME_ROUNDS);
	feed_check_tree(a, b);
	store_free(b);
	store_free(a);
}

/* Waits until feed_wait()'s connection has read the head since @mark (an
 * admin clock_timestamp()) and is idle: it is listening, and about to
 * poll, so that what is applied next can only wake it by NOTIFY. */
static void wait_listener_idle(const char *mark)
{
	char sql[512];
	double deadline = now_s() + 10;

	snprintf(sql, sizeof(sql),
		 "SELECT count(*) FROM pg_stat_activity"
		 " WHERE application_name = 'tierfs' AND state = 'idle'"
		 " AND query = 'SELECT seq FROM feed_head WHERE id = 1'"
		 " AND state_change > '%s'::timestamptz",
		 mark);
	while (admin_int(sql) < 1)
		CHECK(now_s() < deadline);
}

/* Applies a batch through @b while @a waits in another thread; returns
 * how long after the apply the wait returned, in seconds. */
static double wake_after_apply(struct store *a, struct store *b,
			       const char *name)
{
	struct feed_waiter w = {.s = a, .timeout_ms = 20000};
	pthread_t th;
	char *mark;
	double t;

	w.after = (uint64_t)admin_int("SELECT seq FROM feed_head");
	mark = admin_text("SELECT clock_timestamp()::text");
	CHECK_EQ(pthread_create(&th, NULL, feed_wait_main, &w), 0);
	wait_listener_idle(mark);
	free(mark);
	put_dir(b, new_ino(b), STORE_ROOT_INO, name);
	t = now_s();
	CHECK_EQ(pthread_join(th, NULL), 0);
	CHECK_EQ(w.ret, 1);
	return now_s() - t;
}

/* NOTIFY wakes feed_wait() soon after another store's batch commits; its
 * connection lost (as in a restart), feed_wait() says -EAGAIN, then
 * connects and listens again. */
static void test_feed_wait_listen(void)
{
	struct store *a = open_fresh(), *b = open_ok();
	uint64_t h;
	double dt;

	put_dir(a, new_ino(a), STORE_ROOT_INO, "w");
	h = feed_head_of(a);
	CHECK_EQ(a->ops->feed_wait(a, h, 10), 0);
	dt = wake_after_apply(a, b, "w1");
	CHECK(dt < 2);
	printf("feed_wait: woken %.1f ms after another store's apply\n",
	       dt * 1e3);

	/* the server drops every connection of both stores */
	drop_connections();
	h = feed_head_of(a);
	CHECK_EQ(a->ops->feed_wait(a, h, 5000), -EAGAIN);
	/* the next call connects again, and LISTENs again */
	dt = wake_after_apply(a, b, "w2");
	CHECK(dt < 2);
	/* while the server cannot be reached, records are not lost: the
	 * head read at reconnection shows them */
	admin_exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
		   " WHERE application_name = 'tierfs'");
	h = feed_head_of(a);
	put_dir(b, new_ino(b), STORE_ROOT_INO, "w3");
	{
		int r = a->ops->feed_wait(a, h, 5000);

		if (r == -EAGAIN)
			r = a->ops->feed_wait(a, h, 5000);
		CHECK_EQ(r, 1);
	}
	store_free(b);
	store_free(a);
}

/* A version-2 schema (as 188c1f6 left it) is migrated to version 6 (4:
 * the feed tables, empty); a migration that fails leaves version 2. */
static void test_feed_migration(void)
{
	struct store *s;
	uint64_t f;

	/* version 2: what the migration of version 1 made, without the
	 * feed */
	make_v1_schema();
	count_word = NULL;
	s = open_ok();
	store_free(s);
	admin_exec("DROP TABLE feed, feed_head;"
		   "DROP INDEX entries_parent_ino;"
		   "ALTER TABLE entries DROP COLUMN atime_ns;"
		   "UPDATE tierfs_meta SET value = 2"
		   " WHERE key = 'schema_version'");

	/* a migration that fails (a table named feed is in the way) */
	admin_exec("CREATE TABLE feed (x int)");
	open_fails(uri, -EIO, "feed");
	CHECK_EQ(admin_int("SELECT value FROM tierfs_meta"
			   " WHERE key = 'schema_version'"),
		 2);
	CHECK_EQ(admin_int("SELECT count(*) FROM information_schema.tables"
			   " WHERE table_name = 'feed_head'"),
		 0);
	admin_exec("DROP TABLE feed");

	count_word = "migrated the schema from version 3 to 4";
	count_hits = 0;
	s = open_ok();
	CHECK_EQ(count_hits, 1);
	CHECK_EQ(admin_int("SELECT value FROM tierfs_meta"
			   " WHERE key = 'schema_version'"),
		 6);
	CHECK_EQ(feed_head_of(s), 0);
	CHECK_EQ(lookup_ino(s, 9, "\xff"), 10); /* the rows are kept */
	f = put_file(s, new_ino(s), 9, "new", ITEM_BINARY, "n", 1);
	CHECK_EQ(feed_head_of(s), 1);
	store_free(s);
	/* reopening is a no-op */
	count_word = "migrated";
	count_hits = 0;
	s = open_ok();
	CHECK_EQ(count_hits, 0);
	CHECK_EQ(lookup_ino(s, 9, "new"), (long long)f);
	CHECK_EQ(feed_head_of(s), 1);
	store_free(s);
	count_word = NULL;
}

/* The columns of entries: name, type, nullable, default, in table order. */
static char *entries_columns(void)
{
	PGresult *res;
	char *out;

	res = PQexec(admin,
		     "SELECT string_agg(column_name || ' ' || data_type || ' '"
		     " || is_nullable || ' ' || coalesce(column_default, '-'),"
		     " ', ' ORDER BY ordinal_position)"
		     " FROM information_schema.columns"
		     " WHERE table_name = 'entries'"
		     " AND table_schema = current_schema()");
	CHECK_EQ(PQresultStatus(res), PGRES_TUPLES_OK);
	CHECK_EQ(PQntuples(res), 1);
	out = strdup(PQgetvalue(res, 0, 0));
	CHECK(out);
	PQclear(res);
	return out;
}

/* A version-2 schema (version 1's with the merkle column, as the step to 2
 * left it) migrates to 3: atime_ns is each row's mtime_ns, and the table
 * is the same as a new one's. */
static void test_migration_3(void)
{
	struct store *s;
	struct store_row r;
	struct item_meta m = meta_of(ITEM_BINARY, 0);
	char *fresh, *migrated;
	uint64_t f;

	reset_schema();
	s = open_fresh();
	store_free(s);
	fresh = entries_columns();
	CHECK(strstr(fresh, "merkle bytea YES -, atime_ns bigint NO -") !=
	      NULL);

	make_v1_schema();
	admin_exec("ALTER TABLE entries ADD COLUMN merkle bytea;"
		   "UPDATE entries SET merkle = sha256(''::bytea)"
		   " WHERE kind = 0;"
		   "UPDATE entries SET mtime_ns = -86400500000000 WHERE ino = 4;"
		   "UPDATE entries SET mtime_ns = 7258118400123456789"
		   " WHERE ino = 10;"
		   "UPDATE tierfs_meta SET value = 2"
		   " WHERE key = 'schema_version'");
	count_word = "migrated";
	count_hits = 0;
	s = open_ok();
	CHECK_EQ(count_hits, 4); /* to 3, to 4, to 5, then to 6 */
	CHECK_EQ(admin_int("SELECT value FROM tierfs_meta"
			   " WHERE key = 'schema_version'"),
		 6);
	migrated = entries_columns();
	CHECK_STREQ(migrated, fresh);
	CHECK_EQ(s->ops->get(s, 4, &r), 0);
	CHECK_EQ(r.meta.atime_ns, -86400500000000LL);
	store_row_release(&r);
	CHECK_EQ(s->ops->get(s, 10, &r), 0);
	CHECK_EQ(r.meta.atime_ns, 7258118400123456789LL);
	store_row_release(&r);
	m.atime_ns = -1;
	f = new_ino(s);
	CHECK_EQ(apply_one(s, change_of(f, STORE_ROOT_INO, "f", &m)), 0);
	CHECK_EQ(s->ops->get(s, f, &r), 0);
	CHECK(meta_equal(&r.meta, &m));
	store_row_release(&r);
	store_free(s);
	count_hits = 0;
	s = open_ok(); /* reopening migrates nothing */
	CHECK_EQ(count_hits, 0);
	store_free(s);

	/* a step to 3 that fails leaves version 2 as it was */
	make_v1_schema();
	admin_exec("ALTER TABLE entries ADD COLUMN merkle bytea;"
		   "UPDATE tierfs_meta SET value = 2"
		   " WHERE key = 'schema_version'");
	admin_exec("CREATE OR REPLACE FUNCTION tierfs_test_refuse()"
		   " RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
		   " RAISE EXCEPTION 'refused by the test'; END $$");
	admin_exec("CREATE TRIGGER tierfs_test_refuse BEFORE UPDATE ON entries"
		   " FOR EACH ROW EXECUTE FUNCTION tierfs_test_refuse()");
	open_fails(uri, -EIO, "refused by the test");
	CHECK_EQ(count_hits, 0);
	CHECK_EQ(admin_int("SELECT value FROM tierfs_meta"
			   " WHERE key = 'schema_version'"),
		 2);
	CHECK_EQ(admin_int("SELECT count(*) FROM information_schema.columns"
			   " WHERE table_name = 'entries'"
			   " AND column_name = 'atime_ns'"),
		 0);
	count_word = NULL;
	reset_schema();
	admin_exec("DROP FUNCTION IF EXISTS tierfs_test_refuse() CASCADE");
	free(fresh);
	free(migrated);
}

/* The schema version tierfs_meta holds. */
static long long schema_version(void)
{
	return admin_int("SELECT value FROM tierfs_meta"
			 " WHERE key = 'schema_version'");
}

/* The schema as the steps from version 1 leave it, with the definition of
 * index @index as a new schema makes it (caller frees). */
static char *migrated_from_v1(const char *index)
{
	char sql[160];
	char *fresh;

	reset_schema();
	store_free(open_fresh());
	snprintf(sql, sizeof(sql), "SELECT pg_get_indexdef('%s'::regclass)",
		 index);
	fresh = admin_text(sql);
	make_v1_schema();
	count_word = NULL;
	store_free(open_ok());
	return fresh;
}

/* An open that fails on @word, of a step of @version, leaves @version and
 * logs no migration. */
static void migration_fails(const char *word, long long version)
{
	count_word = "migrated";
	count_hits = 0;
	open_fails(uri, -EIO, word);
	CHECK_EQ(count_hits, 0);
	CHECK_EQ(schema_version(), version);
}

/* An open logs @line once and leaves the schema at the current version;
 * index @index is then defined as @fresh. */
static struct store *migrates_once(const char *line, const char *index,
				   const char *fresh)
{
	char sql[160], *def;
	struct store *s;

	count_word = line;
	count_hits = 0;
	s = open_ok();
	CHECK_EQ(count_hits, 1);
	CHECK_EQ(schema_version(), 6);
	snprintf(sql, sizeof(sql), "SELECT pg_get_indexdef('%s'::regclass)",
		 index);
	def = admin_text(sql);
	CHECK_STREQ(def, fresh);
	free(def);
	return s;
}

/* Reopening migrates nothing. */
static void reopens_quietly(void)
{
	count_word = "migrated";
	count_hits = 0;
	store_free(open_ok());
	CHECK_EQ(count_hits, 0);
	count_word = NULL;
}

/* A version-4 schema (the (parent, name) index without INCLUDE, as
 * 6e5bea8 made it) migrates to 5 (and on to 6): the index carries ino and
 * kind, the constraint keeps its name and refuses duplicates, and the rows
 * are kept. A step to 5 that fails leaves version 4 and its index as they
 * were. */
static void test_migration_5(void)
{
	static const char *want_a[] = {"b", "c", "d"};
	char *fresh = migrated_from_v1("entries_parent_name");
	struct store *s;
	PGresult *res;
	uint64_t f;

	/* version 4: with the constraint as version 4 declared it */
	admin_exec("ALTER TABLE entries DROP CONSTRAINT entries_parent_name,"
		   " ADD CONSTRAINT entries_parent_name UNIQUE (parent, name);"
		   "DROP INDEX entries_parent_ino;"
		   "UPDATE tierfs_meta SET value = 4"
		   " WHERE key = 'schema_version'");
	check_parent_name_index(false);

	/* a step that fails (a foreign key depends on the constraint) */
	admin_exec("CREATE TABLE tierfs_test_ref (parent bigint, name bytea,"
		   " FOREIGN KEY (parent, name)"
		   " REFERENCES entries (parent, name))");
	migration_fails("entries_parent_name", 4);
	check_parent_name_index(false);
	admin_exec("DROP TABLE tierfs_test_ref");

	s = migrates_once("migrated the schema from version 4 to 5: the "
			  "(parent, name) index includes ino and kind",
			  "entries_parent_name", fresh);
	check_parent_name_index(true);
	/* the rows are kept: a/ holds b and c/, x/y/z/ holds \xff */
	CHECK_EQ(lookup_ino(s, 9, "\xff"), 10);
	CHECK_EQ(lookup_ino(s, 2, "b"), 4);
	f = put_file(s, new_ino(s), 2, "d", ITEM_BINARY, "d", 1);
	CHECK_EQ(lookup_ino(s, 2, "d"), (long long)f);
	check_listing(s, 2, 2, want_a, 3);
	store_free(s);
	/* the constraint still refuses a second (parent, name) */
	res = PQexec(admin,
		     "INSERT INTO entries (ino, parent, name, stem, kind, size,"
		     " hash, version, mtime_ns, ctime_ns, mode, uid, gid,"
		     " explicit_dir, atime_ns) VALUES (1000, 2, 'b'::bytea,"
		     " NULL, 0, 0, NULL, 1, 1, 1, 16877, 0, 0, true, 1)");
	CHECK_EQ(PQresultStatus(res), PGRES_FATAL_ERROR);
	CHECK_STREQ(PQresultErrorField(res, PG_DIAG_SQLSTATE), "23505");
	CHECK_STREQ(PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME),
		    "entries_parent_name");
	PQclear(res);
	reopens_quietly();
	free(fresh);
}

/* A version-5 schema (without the (parent, ino) index, as 038ca6c made
 * it) migrates to 6: the index is made as a new schema has it, the rows
 * are kept, they list in inode order, and the listing of names reads the
 * index alone. A step to 6 that fails leaves version 5 as it was. */
static void test_migration_6(void)
{
	static const char *want_a[] = {"b", "c", "d"};
	char *fresh = migrated_from_v1("entries_parent_ino");
	struct store *s;
	uint64_t f;

	/* version 5: without the index */
	admin_exec("DROP INDEX entries_parent_ino;"
		   "UPDATE tierfs_meta SET value = 5"
		   " WHERE key = 'schema_version'");
	check_parent_ino_index(false);

	/* a step that fails (a table of the index's name is in the way) */
	admin_exec("CREATE TABLE entries_parent_ino (x int)");
	migration_fails("entries_parent_ino", 5);
	admin_exec("DROP TABLE entries_parent_ino");
	check_parent_ino_index(false);

	s = migrates_once("migrated the schema from version 5 to 6: the "
			  "(parent, ino) index of listings",
			  "entries_parent_ino", fresh);
	check_parent_ino_index(true);
	/* the rows are kept: a/ holds b and c/, x/y/z/ holds \xff */
	CHECK_EQ(lookup_ino(s, 9, "\xff"), 10);
	f = put_file(s, new_ino(s), 2, "d", ITEM_BINARY, "d", 1);
	CHECK_EQ(lookup_ino(s, 2, "d"), (long long)f);
	check_listing(s, 2, 2, want_a, 3);
	store_free(s);
	/* the listing of a/ reads the index alone */
	check_list_names_plan(2, 3);
	reopens_quietly();
	free(fresh);
}

/* ---- the property test ---- */

#define PROP_BATCHES 1000
#define PROP_MAX_NODES 8192
#define PROP_MAX_LIVE 250 /* then it deletes more than it creates */
#define PROP_MAX_DEPTH 6
#define PROP_MAX_CHANGES 20

/* The test's own model of the tree: what each ino should be. Node 0 is the
 * root; node i > 0 has ino prop_base + i - 1. */
struct pnode {
	uint64_t parent; /* an ino */
	char name[32];
	enum item_kind kind;
	bool alive;
	uint8_t hash[MERKLE_LEN];
	uint64_t size, version;
	uint32_t mode;
};

static struct pnode pn[PROP_MAX_NODES];
static size_t npn;
static uint64_t prop_base;

static uint64_t pn_ino(size_t i)
{
	return i ? prop_base + i - 1 : STORE_ROOT_INO;
}

static size_t pn_index(uint64_t ino)
{
	if (ino == STORE_ROOT_INO)
		return 0;
	CHECK(ino >= prop_base && ino - prop_base + 1 < npn);
	return (size_t)(ino - prop_base + 1);
}

static size_t rnd(size_t n)
{
	return (size_t)(rng() % n);
}

/* The item-ID stem of a file name (store.h); NULL for directories. */
static size_t pn_stem_len(const char *name, enum item_kind kind)
{
	size_t len = strlen(name);

	if (kind == ITEM_JSON && len >= 5 &&
	    strcmp(name + len - 5, ".json") == 0)
		return len - 5;
	return len;
}

/* Would @name (of @kind) in @parent collide with a live entry other than
 * node @self, by name or, between files, by stem? */
static bool pn_collides(uint64_t parent, const char *name, enum item_kind kind,
			size_t self)
{
	size_t stem = pn_stem_len(name, kind);

	for (size_t j = 1; j < npn; j++) {
		const struct pnode *o = &pn[j];

		if (j == self || !o->alive || o->parent != parent)
			continue;
		if (strcmp(o->name, name) == 0)
			return true;
		if (kind != ITEM_DIR && o->kind != ITEM_DIR &&
		    pn_stem_len(o->name, o->kind) == stem &&
		    memcmp(o->name, name, stem) == 0)
			return true;
	}
	return false;
}

static size_t pn_depth(size_t i)
{
	size_t d = 0;

	while (i) {
		i = pn_index(pn[i].parent);
		d++;
	}
	return d;
}

/* Is node @i node @anc or below it? */
static bool pn_under(size_t i, size_t anc)
{
	for (;;) {
		if (i == anc)
			return true;
		if (i == 0)
			return false;
		i = pn_index(pn[i].parent);
	}
}

static bool pn_has_children(size_t i)
{
	for (size_t j = 1; j < npn; j++)
		if (pn[j].alive && pn[j].parent == pn_ino(i))
			return true;
	return false;
}

/* A random live node, not changed in this batch (@busy), that @want
 * accepts; returns false when there is none. */
static bool pn_pick(const bool *busy, bool (*want)(size_t), size_t *out)
{
	static size_t cand[PROP_MAX_NODES];
	size_t n = 0;

	for (size_t i = 0; i < npn; i++)
		if (pn[i].alive && !busy[i] && want(i))
			cand[n++] = i;
	if (!n)
		return false;
	*out = cand[rnd(n)];
	return true;
}

static bool want_file(size_t i)
{
	return pn[i].kind != ITEM_DIR;
}

static bool want_dir(size_t i)
{
	return pn[i].kind == ITEM_DIR;
}

static bool want_shallow_dir(size_t i)
{
	return pn[i].kind == ITEM_DIR && pn_depth(i) < PROP_MAX_DEPTH;
}

static bool want_any(size_t i)
{
	(void)i;
	return true;
}

static bool want_movable(size_t i)
{
	return i != 0;
}

static bool want_empty_dir(size_t i)
{
	return i != 0 && pn[i].kind == ITEM_DIR && !pn_has_children(i);
}

/* A random live directory: any one, not only those outside this batch. */
static size_t pn_random_dir(bool shallow)
{
	static const bool none[PROP_MAX_NODES];
	size_t d = 0;

	CHECK(pn_pick(none, shallow ? want_shallow_dir : want_dir, &d));
	return d;
}

/* Names that sort in the tricky places: prefixes ("a", "a.b", "a.jso",
 * "ab"), "x" beside "x.json", bytes >= 0x80 (bytea, unsigned order). */
static const char *const prop_names[] = {
	"a",  "ab",  "a.b",  "a.jso",	 "a.json",   "x",    "b",
	"A",  "z z", "\x80", "\x80\x80", "\xc3\xa9", "\xff", "\xff\xfe",
	"n0", "n1",  "n2",   "n3",	 "n4",	     "n5",   "n6",
};

/* A name for a @kind in @parent that collides with nothing (@self may keep
 * its own); false when ten tries found none. */
static bool pn_name(uint64_t parent, enum item_kind kind, size_t self,
		    char out[32])
{
	const size_t nnames = sizeof(prop_names) / sizeof(prop_names[0]);

	for (int t = 0; t < 10; t++) {
		snprintf(out, 32, "%s%s", prop_names[rnd(nnames)],
			 kind == ITEM_JSON ? ".json" : "");
		if (!pn_collides(parent, out, kind, self))
			return true;
	}
	return false;
}

/* New random content for file node @i in @buf: sets its size and hash;
 * rarely (@allow_unknown) no content and an unknown (zero) hash. */
static size_t pn_content(size_t i, char buf[64], bool allow_unknown)
{
	size_t len;

	if (pn[i].kind == ITEM_JSON) {
		len = rnd(8) ? (size_t)snprintf(buf, 64, "{\"k\":%llu}",
						(unsigned long long)rnd(1000))
			     : 0;
	} else {
		len = rnd(49);
		for (size_t k = 0; k < len; k++)
			buf[k] = (char)rng();
	}
	pn[i].size = len;
	if (allow_unknown && pn[i].kind == ITEM_BINARY && rnd(20) == 0) {
		memset(pn[i].hash, 0, MERKLE_LEN);
		return SIZE_MAX;
	}
	sha256_of(buf, len, pn[i].hash);
	return len;
}

enum prop_op {
	OP_CREATE,
	OP_MKDIR,
	OP_CONTENT,
	OP_META,
	OP_RENAME,
	OP_MOVE,
	OP_DELETE,
	OP_RMDIR,
	OP_N,
};

static const char *const prop_op_names[OP_N] = {
	"create", "mkdir", "content", "meta",
	"rename", "move",  "delete",  "rmdir",
};

/* How often each is tried: the tree grows to PROP_MAX_LIVE entries. */
static const int prop_op_weights[OP_N] = {
	[OP_CREATE] = 4, [OP_MKDIR] = 2, [OP_CONTENT] = 2, [OP_META] = 1,
	[OP_RENAME] = 1, [OP_MOVE] = 2,	 [OP_DELETE] = 2,  [OP_RMDIR] = 1,
};

static enum prop_op prop_random_op(void)
{
	int total = 0, r;

	for (int k = 0; k < OP_N; k++)
		total += prop_op_weights[k];
	r = (int)rnd((size_t)total);
	for (int k = 0; k < OP_N; k++) {
		if (r < prop_op_weights[k])
			return (enum prop_op)k;
		r -= prop_op_weights[k];
	}
	return OP_CREATE;
}

struct prop_batch {
	struct change *c[PROP_MAX_CHANGES];
	char data[PROP_MAX_CHANGES][64];
	size_t n;
	bool busy[PROP_MAX_NODES]; /* changed in this batch */
	bool hit[PROP_MAX_NODES];  /* directories it touches */
	int ops[OP_N];
	bool dir_moved;
};

/* Tries one random operation on the model; on success appends the final
 * state of the node it changed to @b, and marks the directories it touches
 * (old parent, new parent, the node when a directory). */
static void prop_op(struct prop_batch *b)
{
	size_t live = 0, i = 0, len = 0;
	enum prop_op op;
	bool deleted = false, has_data = false;
	struct item_meta m;
	uint64_t old_parent = 0;
	bool existed = true;

	for (size_t j = 0; j < npn; j++)
		live += pn[j].alive;
	op = prop_random_op();
	if (live > PROP_MAX_LIVE && (op == OP_CREATE || op == OP_MKDIR))
		op = rnd(2) ? OP_DELETE : OP_RMDIR;

	switch (op) {
	case OP_CREATE:
	case OP_MKDIR: {
		size_t d = pn_random_dir(op == OP_MKDIR);
		enum item_kind kind = op == OP_MKDIR ? ITEM_DIR
				      : rnd(2)	     ? ITEM_JSON
						     : ITEM_BINARY;
		char name[32];

		CHECK(npn < PROP_MAX_NODES);
		if (!pn_name(pn_ino(d), kind, SIZE_MAX, name))
			return;
		i = npn++;
		memset(&pn[i], 0, sizeof(pn[i]));
		pn[i] = (struct pnode){.parent = pn_ino(d),
				       .kind = kind,
				       .alive = true,
				       .version = 1,
				       .mode = kind == ITEM_DIR
						       ? S_IFDIR | 0755
						       : S_IFREG | 0644};
		memcpy(pn[i].name, name, sizeof(name));
		existed = false;
		if (kind != ITEM_DIR) {
			len = pn_content(i, b->data[b->n], true);
			has_data = len != SIZE_MAX;
		}
		break;
	}
	case OP_CONTENT:
		if (!pn_pick(b->busy, want_file, &i))
			return;
		len = pn_content(i, b->data[b->n], false);
		has_data = true;
		pn[i].version++;
		break;
	case OP_META:
		if (!pn_pick(b->busy, want_any, &i))
			return; /* the root too: chmod of the mount root */
		pn[i].version++;
		pn[i].mode ^= 0022;
		break;
	case OP_RENAME:
	case OP_MOVE: {
		size_t d;
		char name[32];

		if (!pn_pick(b->busy, want_movable, &i))
			return;
		d = op == OP_RENAME ? pn_index(pn[i].parent)
				    : pn_random_dir(false);
		if (pn[i].kind == ITEM_DIR &&
		    (pn_under(d, i) || pn_depth(d) >= PROP_MAX_DEPTH))
			return; /* not into itself, nor too deep */
		if (!pn_name(pn_ino(d), pn[i].kind, i, name))
			return;
		old_parent = pn[i].parent;
		pn[i].parent = pn_ino(d);
		memcpy(pn[i].name, name, sizeof(name));
		if (pn[i].kind == ITEM_DIR && old_parent != pn[i].parent)
			b->dir_moved = true;
		break;
	}
	case OP_DELETE:
		if (!pn_pick(b->busy, want_file, &i))
			return;
		deleted = true;
		break;
	case OP_RMDIR:
		if (!pn_pick(b->busy, want_empty_dir, &i))
			return;
		deleted = true;
		break;
	default:
		return;
	}

	if (existed && op != OP_RENAME && op != OP_MOVE)
		old_parent = pn[i].parent;
	if (existed && i != 0)
		b->hit[pn_index(old_parent)] = true;
	b->busy[i] = true;
	b->ops[op]++;
	if (deleted) {
		pn[i].alive = false;
		b->c[b->n++] = delete_of(pn_ino(i));
		return;
	}
	if (i != 0)
		b->hit[pn_index(pn[i].parent)] = true;
	if (pn[i].kind == ITEM_DIR)
		b->hit[i] = true;
	m = meta_of(pn[i].kind, pn[i].size);
	memcpy(m.hash, pn[i].hash, MERKLE_LEN);
	m.version = pn[i].version;
	m.mode = pn[i].mode;
	if (has_data)
		b->c[b->n] = data_change_of(pn_ino(i), i ? pn[i].parent : 0,
					    i ? pn[i].name : "", &m,
					    b->data[b->n], len);
	else
		b->c[b->n] = change_of(pn_ino(i), i ? pn[i].parent : 0,
				       i ? pn[i].name : "", &m);
	b->n++;
}

/* Hashes of every live directory: recomputed from list() by merkle.c,
 * checked against each stored merkle and against the model on the way. */
static uint8_t prop_hash[PROP_MAX_NODES][MERKLE_LEN];
static bool prop_known[PROP_MAX_NODES];

static void prop_walk(struct store *s, size_t dir, uint8_t out[MERKLE_LEN],
		      size_t *children)
{
	struct store_row rows[16];
	char after[STORE_NAME_MAX + 1] = "";
	struct merkle *m = merkle_begin();
	size_t seen = 0;
	int n;

	CHECK(m);
	do {
		n = s->ops->list(s, pn_ino(dir), after, rows, 16);
		CHECK(n >= 0);
		for (int k = 0; k < n; k++) {
			size_t i = pn_index(rows[k].ino);
			bool is_dir = rows[k].meta.kind == ITEM_DIR;
			uint8_t h[MERKLE_LEN];

			/* the store holds what the model says */
			CHECK(pn[i].alive);
			CHECK_EQ(pn[i].parent, pn_ino(dir));
			CHECK_STREQ(rows[k].name, pn[i].name);
			CHECK_EQ(rows[k].meta.kind, pn[i].kind);
			CHECK_EQ(rows[k].meta.version, pn[i].version);
			if (is_dir) {
				prop_walk(s, i, h, children);
				CHECK(memcmp(rows[k].merkle, h, MERKLE_LEN) ==
				      0);
			} else {
				CHECK(memcmp(rows[k].meta.hash, pn[i].hash,
					     MERKLE_LEN) == 0);
				CHECK(memcmp(rows[k].merkle, pn[i].hash,
					     MERKLE_LEN) == 0);
				memcpy(h, rows[k].merkle, MERKLE_LEN);
			}
			merkle_add_child(m, rows[k].name, strlen(rows[k].name),
					 is_dir, h);
			seen++;
		}
		if (n)
			snprintf(after, sizeof(after), "%s", rows[n - 1].name);
		for (int k = 0; k < n; k++)
			store_row_release(&rows[k]);
	} while (n == 16);
	merkle_end(m, out);
	memcpy(prop_hash[dir], out, MERKLE_LEN);
	*children += seen;
}

/* After batch @b: every stored hash is right, and the report is exactly
 * the directories the batch touched and their ancestors, each with its
 * new hash, the root last; it holds each directory whose hash changed. */
static void prop_check(struct store *s, const struct prop_batch *b,
		       const struct store_dirhash *tree, size_t ntree)
{
	static bool want[PROP_MAX_NODES], got[PROP_MAX_NODES];
	static uint8_t old[PROP_MAX_NODES][MERKLE_LEN];
	static bool old_known[PROP_MAX_NODES];
	uint8_t root[MERKLE_LEN];
	size_t children = 0, live = 0, nwant = 0;
	struct store_row r;

	memcpy(old, prop_hash, sizeof(old));
	memcpy(old_known, prop_known, sizeof(old_known));
	memset(prop_known, 0, sizeof(prop_known));

	prop_walk(s, 0, root, &children);
	for (size_t i = 1; i < npn; i++)
		live += pn[i].alive;
	CHECK_EQ(children, live); /* no more rows than the model has */
	CHECK_EQ(s->ops->get(s, STORE_ROOT_INO, &r), 0);
	CHECK(memcmp(r.merkle, root, MERKLE_LEN) == 0);
	CHECK_EQ(r.meta.version, pn[0].version);
	store_row_release(&r);
	for (size_t i = 0; i < npn; i++)
		prop_known[i] = pn[i].alive && pn[i].kind == ITEM_DIR;

	/* the directories touched that still exist, and their ancestors */
	memset(want, 0, sizeof(want));
	for (size_t i = 0; i < npn; i++) {
		if (!b->hit[i] || !pn[i].alive)
			continue;
		for (size_t a = i;; a = pn_index(pn[a].parent)) {
			want[a] = true;
			if (a == 0)
				break;
		}
	}
	for (size_t i = 0; i < npn; i++)
		nwant += want[i];

	memset(got, 0, sizeof(got));
	CHECK_EQ(ntree, nwant);
	CHECK((tree == NULL) == (ntree == 0));
	for (size_t k = 0; k < ntree; k++) {
		size_t i = pn_index(tree[k].ino);

		CHECK(want[i]);
		CHECK(!got[i]);
		got[i] = true;
		CHECK(memcmp(tree[k].merkle, prop_hash[i], MERKLE_LEN) == 0);
	}
	if (ntree)
		CHECK_EQ(tree[ntree - 1].ino, STORE_ROOT_INO);
	/* (implied by the above, and what a mirror of the tree needs) */
	for (size_t i = 0; i < npn; i++)
		if (prop_known[i] &&
		    (!old_known[i] ||
		     memcmp(old[i], prop_hash[i], MERKLE_LEN) != 0))
			CHECK(got[i]);
}

/* Seeded random batches of every kind of change; TEST_SEED picks another
 * sequence. */
static void test_merkle_property(void)
{
	static struct prop_batch b;
	const char *env = getenv("TEST_SEED");
	uint64_t seed = env ? strtoull(env, NULL, 0) : 0x6d65726b6c65ULL;
	struct store *s = open_fresh();
	struct store_dirhash *tree;
	size_t ntree, max_depth = 0, reported = 0;
	int ops[OP_N] = {0}, moves = 0;
	uint8_t root[MERKLE_LEN];
	double t0 = now_s();

	rng_state = seed ? seed : 1;
	npn = 1;
	memset(&pn[0], 0, sizeof(pn[0]));
	pn[0].kind = ITEM_DIR;
	pn[0].alive = true;
	pn[0].version = 1;
	pn[0].mode = S_IFDIR | 0755;
	CHECK_EQ(s->ops->alloc_ino(s, PROP_MAX_NODES, &prop_base), 0);
	memset(prop_known, 0, sizeof(prop_known));
	check_merkle_tree(s, root);
	merkle_empty(prop_hash[0]);
	CHECK(memcmp(root, prop_hash[0], MERKLE_LEN) == 0);
	prop_known[0] = true;

	for (int batch = 0; batch < PROP_BATCHES; batch++) {
		size_t want_n = 1 + rnd(PROP_MAX_CHANGES);

		snprintf(check_context, sizeof(check_context),
			 "batch %d of seed 0x%llx", batch,
			 (unsigned long long)seed);
		memset(&b, 0, sizeof(b));
		for (int t = 0; t < 100 && b.n < want_n; t++)
			prop_op(&b);
		CHECK(b.n > 0);
		tree = (struct store_dirhash *)1;
		ntree = 7;
		CHECK_EQ(s->ops->apply(s, b.c, b.n, &tree, &ntree), 0);
		changes_free(b.c, b.n);
		prop_check(s, &b, tree, ntree);
		free(tree);
		for (int k = 0; k < OP_N; k++)
			ops[k] += b.ops[k];
		moves += b.dir_moved;
		reported += ntree;
		for (size_t i = 0; i < npn; i++)
			if (pn[i].alive && pn_depth(i) > max_depth)
				max_depth = pn_depth(i);
	}
	check_context[0] = '\0';
	/* the sequence did exercise every kind of change */
	for (int k = 0; k < OP_N; k++) {
		snprintf(check_context, sizeof(check_context), "%s",
			 prop_op_names[k]);
		CHECK(ops[k] >= 100);
	}
	check_context[0] = '\0';
	CHECK(moves >= 20);
	CHECK(max_depth >= 5);
	printf("merkle: %d random batches (seed 0x%llx), %zu directories "
	       "reported, checked in %.1f s\n",
	       PROP_BATCHES, (unsigned long long)seed, reported, now_s() - t0);
	store_free(s);
}

int main(void)
{
	PQconninfoOption *opts;

	uri = getenv("TIERFS_TEST_POSTGRES");
	if (!uri || !uri[0]) {
		fprintf(stderr, "skipped: TIERFS_TEST_POSTGRES is not set\n");
		return TEST_SKIP;
	}
	opts = PQconninfoParse(uri, NULL);
	CHECK(opts);
	for (PQconninfoOption *o = opts; o->keyword; o++)
		if (o->val && strcmp(o->keyword, "password") == 0)
			snprintf(secret, sizeof(secret), "%s", o->val);
	PQconninfoFree(opts);

	admin = PQconnectdb(uri);
	if (PQstatus(admin) != CONNECTION_OK) {
		fprintf(stderr, "cannot connect to TIERFS_TEST_POSTGRES: %s",
			PQerrorMessage(admin));
		PQfinish(admin);
		return 1;
	}
	PQsetNoticeProcessor(admin, quiet_notice, NULL);

	test_open_creates_root();
	test_alloc_exhausted();
	test_listing();
	test_read_many();
	test_names_refused();
	test_content();
	test_rename_and_swap();
	test_all_or_nothing();
	test_stems();
	test_delete();
	test_meta_roundtrip();
	test_stats();
	test_scan();
	test_reopen();
	test_refuse();
	test_query_plans();
	test_threads();
	test_mounts();
	test_racing_writers();
	test_reconnect();
	test_big_batch();
	test_merkle_golden();
	test_golden_merkle();
	test_merkle_failed_batch();
	test_merkle_concurrent();
	test_migration();
	test_migration_3();
	test_migration_5();
	test_migration_6();
	test_merkle_property();
	test_feed_cases();
	test_feed_commit_order();
	test_feed_same_name_threads();
	test_feed_wait_listen();
	test_feed_migration();
	CHECK_EQ(secret_leaks, 0);

	reset_schema();
	PQfinish(admin);
	printf("ok\n");
	return 0;
}
