/*
 * test_l3_sqlite.c - unit tests of the SQLite L3 store (engine/l3_sqlite.c).
 *
 * Every test opens its own database file in a private mkdtemp() directory,
 * which is removed at exit. The cases it runs alike with test_l3_pg.c are
 * in store_helpers.h. Exit status: 0 passed, 1 failed, 77 skipped.
 * Set TEST_VERBOSE=1 to see the store's log lines. The Merkle property test
 * takes its seed from TEST_SEED and its number of batches from TEST_BATCHES
 * (default 2,000); a failure prints both.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw */
#endif
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "l3_sqlite.h"
#include "merkle.h"

#include "check.h"
#include "store_helpers.h"
#include "store_feed_cases.h"

/* The schema version this build writes (LSQ_SCHEMA_VERSION). */
#define LSQ_TEST_SCHEMA 5

static char tmpdir[] = "/tmp/test_l3_sqlite.XXXXXX";
static bool tmpdir_made;

static int rm_one(const char *path, const struct stat *sb, int type,
		  struct FTW *ftw)
{
	return remove(path);
}

static void cleanup(void)
{
	if (tmpdir_made)
		nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- the log sink: keeps the last line, prints when TEST_VERBOSE ---- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_log[1024];
static int nlogs;
static int nwarnings;		 /* LOG_WARNING lines */
static int nmigrated;		  /* LOG_INFO lines about a migration */
static char migrated_lines[2048]; /* all of them, one a line */

static void log_fn(void *arg, int level, const char *msg)
{
	pthread_mutex_lock(&log_lock);
	snprintf(last_log, sizeof(last_log), "%s", msg);
	nlogs++;
	if (level == LOG_WARNING)
		nwarnings++;
	if (level == LOG_INFO && strstr(msg, "migrated")) {
		size_t used = strlen(migrated_lines);

		snprintf(migrated_lines + used, sizeof(migrated_lines) - used,
			 "%s\n", msg);
		nmigrated++;
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
	nwarnings = 0;
	nmigrated = 0;
	migrated_lines[0] = '\0';
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

/* ---- helpers ---- */

static char *db_path(const char *name)
{
	static char buf[4][256];
	static int next;
	char *p = buf[next++ % 4];

	snprintf(p, 256, "%s/%s", tmpdir, name);
	return p;
}

static struct store *open_ok(const char *name)
{
	struct store *s = NULL;

	CHECK_EQ(l3_sqlite_open(db_path(name), &test_log, &s), 0);
	CHECK(s != NULL);
	CHECK(strcmp(s->ops->name, "sqlite") == 0);
	return s;
}

static void test_open_creates_root(void)
{
	struct store *s = open_ok("root.db");
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
}

static void test_read_many(void)
{
	struct store *s = open_ok("readmany.db");

	case_read_many(s);
	store_free(s);
}

static void test_listing(void)
{
	struct store *s = open_ok("list.db");

	case_listing(s);
	store_free(s);
}

static void test_names_refused(void)
{
	struct store *s = open_ok("names.db");

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

static void test_content(void)
{
	static const char nuls[] = {'a', 0, 'b', 0, 0, 'c', 0};
	struct store *s = open_ok("content.db");
	struct item_meta m;
	size_t big_len = 1 << 20;
	unsigned char *big = malloc(big_len);
	uint64_t f_nul, f_big, f_empty, f_nodata, dir;
	uint64_t entries, bytes;
	void *data;
	size_t len;

	CHECK(big);
	for (size_t i = 0; i < big_len; i++)
		big[i] = (unsigned char)(i % 7 == 0 ? 0 : rng());
	big[big_len - 1] = 0;

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
	put_file(s, f_big, STORE_ROOT_INO, "big", ITEM_BINARY, big, big_len);
	check_content(s, f_big, big, big_len);

	CHECK_EQ(s->ops->stats(s, &entries, &bytes), 0);
	CHECK_EQ(entries, 5);
	CHECK_EQ(bytes, sizeof(nuls) + big_len);
	store_free(s);

	/* the content survives a reopen byte for byte */
	s = open_ok("content.db");
	check_content(s, f_big, big, big_len);
	check_content(s, f_nul, nuls, sizeof(nuls));
	store_free(s);
	free(big);
}

static void test_rename_and_swap(void)
{
	struct store *s = open_ok("rename.db");

	case_rename_and_swap(s);
	store_free(s);
}

static void test_all_or_nothing(void)
{
	struct store *s = open_ok("atomic.db");

	case_all_or_nothing(s);
	store_free(s);
}

static void test_stems(void)
{
	struct store *s = open_ok("stem.db");

	case_stems(s);
	store_free(s);
}

/* A content_rows_fn for case_delete(); @arg is the database's path. */
static long long content_rows(void *arg, uint64_t ino)
{
	const char *path = arg;
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	long long n = -1;

	CHECK_EQ(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
		 SQLITE_OK);
	CHECK_EQ(sqlite3_prepare_v2(db,
				    "SELECT count(*) FROM contents"
				    " WHERE ino = ?1",
				    -1, &st, NULL),
		 SQLITE_OK);
	sqlite3_bind_int64(st, 1, (sqlite3_int64)ino);
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n;
}

static void test_delete(void)
{
	struct store *s = open_ok("delete.db");

	case_delete(s, content_rows, db_path("delete.db"));
	store_free(s);
}

static void test_meta_roundtrip(void)
{
	/* one xattr "user.abc" = 00 ff 80: u16 name_len, u32 value_len,
	 * name, value */
	static const char xattrs[] = "\x08\x00\x03\x00\x00\x00user.abc"
				     "\x00\xff\x80";
	struct store *s = open_ok("meta.db");
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
	struct store *s = open_ok("scan.db");

	case_scan(s);
	case_counts(s);
	store_free(s);
}

static void test_stats(void)
{
	struct store *s = open_ok("stats.db");

	case_stats(s);
	store_free(s);
}

static void test_reopen(void)
{
	struct store *s = open_ok("reopen.db");
	struct store *t;
	struct store_row root1, root2;
	uint64_t d, f, first = 0, again = 0, other = 0;

	CHECK_EQ(s->ops->get(s, STORE_ROOT_INO, &root1), 0);
	d = put_dir(s, new_ino(s), STORE_ROOT_INO, "dir");
	f = put_file(s, new_ino(s), d, "f.json", ITEM_JSON, "[1,2]", 5);
	CHECK_EQ(s->ops->alloc_ino(s, 100, &first), 0);
	CHECK(first > f);
	store_free(s);

	s = open_ok("reopen.db");
	CHECK_EQ(s->ops->get(s, STORE_ROOT_INO, &root2), 0);
	CHECK(meta_equal(&root1.meta, &root2.meta)); /* not made again */
	store_row_release(&root1);
	store_row_release(&root2);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "dir"), d);
	CHECK_EQ(lookup_ino(s, d, "f.json"), f);
	check_content(s, f, "[1,2]", 5);
	CHECK_EQ(s->ops->alloc_ino(s, 1, &again), 0);
	CHECK_EQ(again, first + 100);

	/* a second store on the same file (another mount) shares the
	 * counter and sees committed batches */
	t = open_ok("reopen.db");
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

static void raw_exec(const char *path, const char *sql)
{
	sqlite3 *db = NULL;

	CHECK_EQ(sqlite3_open(path, &db), SQLITE_OK);
	CHECK_EQ(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

static void test_refuse(void)
{
	struct store *s = NULL;
	char sql[64] = "";
	FILE *fp;

	/* someone else's database is left alone */
	raw_exec(db_path("foreign.db"), "CREATE TABLE foo (x); "
					"INSERT INTO foo VALUES (1)");
	log_reset();
	CHECK_EQ(l3_sqlite_open(db_path("foreign.db"), &test_log, &s), -EINVAL);
	CHECK(s == NULL);
	CHECK(log_has("not a tierfs database"));
	{
		sqlite3 *db = NULL;
		sqlite3_stmt *st = NULL;

		CHECK_EQ(sqlite3_open(db_path("foreign.db"), &db), SQLITE_OK);
		CHECK_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st,
					    NULL),
			 SQLITE_OK);
		CHECK_EQ(sqlite3_step(st), SQLITE_ROW);
		snprintf(sql, sizeof(sql), "%s", sqlite3_column_text(st, 0));
		sqlite3_finalize(st);
		sqlite3_close(db);
		CHECK(strcmp(sql, "delete") == 0);
	}

	/* a table called meta is not enough */
	raw_exec(db_path("meta-only.db"), "CREATE TABLE meta (key, value)");
	log_reset();
	CHECK_EQ(l3_sqlite_open(db_path("meta-only.db"), &test_log, &s),
		 -EINVAL);
	CHECK(log_has("not a tierfs database"));

	/* a newer schema */
	s = open_ok("newer.db");
	store_free(s);
	s = NULL;
	raw_exec(db_path("newer.db"),
		 "UPDATE meta SET value = 99 WHERE key = 'schema_version'");
	log_reset();
	CHECK_EQ(l3_sqlite_open(db_path("newer.db"), &test_log, &s), -EINVAL);
	CHECK(log_has("newer"));

	/* not SQLite at all */
	fp = fopen(db_path("garbage.db"), "w");
	CHECK(fp);
	for (int i = 0; i < 200; i++)
		fputs("this is not a database file, honestly\n", fp);
	fclose(fp);
	log_reset();
	CHECK_EQ(l3_sqlite_open(db_path("garbage.db"), &test_log, &s), -EINVAL);
	CHECK(nlogs > 0);

	/* a missing directory */
	log_reset();
	CHECK_EQ(l3_sqlite_open(db_path("no/such/dir.db"), &test_log, &s),
		 -ENOENT);
	CHECK(nlogs > 0);
	CHECK(s == NULL);

	/* an empty file is an empty database: it becomes ours */
	fp = fopen(db_path("empty.db"), "w");
	CHECK(fp);
	fclose(fp);
	s = open_ok("empty.db");
	CHECK_EQ(lookup_ino(s, 0, ""), STORE_ROOT_INO);
	store_free(s);

	/* a NULL log is allowed */
	s = NULL;
	CHECK_EQ(l3_sqlite_open(db_path("nolog.db"), NULL, &s), 0);
	store_free(s);
}

/* The statements of the database at @path must use an index on (parent,
 * name) and never sort: the listing, the lookup and the child test use the
 * unique one; the Merkle scan of a directory reads only the covering one. */
static void check_query_plans(const char *path)
{
	static const struct {
		const char *sql;
		const char *index;
	} queries[] = {
		{("SELECT * FROM entries WHERE parent = ?1 AND name > ?2"
		  " ORDER BY name LIMIT ?3"),
		 "INDEX entries_parent_name "},
		{"SELECT * FROM entries WHERE parent = ?1 AND name = ?2",
		 "INDEX entries_parent_name "},
		{"SELECT 1 FROM entries WHERE parent = ?1 LIMIT 1",
		 "INDEX entries_parent_"},
		{("SELECT name, kind, hash, merkle, ino FROM entries"
		  " WHERE parent = ?1 ORDER BY name"),
		 "COVERING INDEX entries_children "},
		{("SELECT * FROM entries WHERE parent = ?1 AND ino > ?2"
		  " ORDER BY ino LIMIT ?3"),
		 "INDEX entries_parent_ino "},
		{("SELECT ino, parent, name, kind FROM entries"
		  " WHERE parent = ?1 AND ino > ?2 ORDER BY ino LIMIT ?3"),
		 "INDEX entries_parent_ino "},
	};
	sqlite3 *db = NULL;

	CHECK_EQ(sqlite3_open(path, &db), SQLITE_OK);
	for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
		char sql[256];
		sqlite3_stmt *st = NULL;
		bool indexed = false, sorted = false;

		snprintf(sql, sizeof(sql), "EXPLAIN QUERY PLAN %s",
			 queries[i].sql);
		CHECK_EQ(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
		while (sqlite3_step(st) == SQLITE_ROW) {
			const char *d =
				(const char *)sqlite3_column_text(st, 3);

			if (d && strstr(d, queries[i].index))
				indexed = true;
			if (d && strstr(d, "TEMP B-TREE"))
				sorted = true;
		}
		sqlite3_finalize(st);
		snprintf(check_context, sizeof(check_context),
			 "the plan of %s in '%s'", queries[i].sql, path);
		CHECK(indexed);
		CHECK(!sorted);
	}
	check_context[0] = '\0';
	sqlite3_close(db);
}

static void test_query_plans(void)
{
	store_free(open_ok("plan.db"));
	check_query_plans(db_path("plan.db"));
}

/* ---- Merkle trees ---- */

static void hex_of(const uint8_t h[MERKLE_LEN], char out[2 * MERKLE_LEN + 1])
{
	for (int i = 0; i < MERKLE_LEN; i++)
		snprintf(out + 2 * i, 3, "%02x", h[i]);
}

static bool hash_zero(const uint8_t h[MERKLE_LEN])
{
	for (int i = 0; i < MERKLE_LEN; i++)
		if (h[i])
			return false;
	return true;
}

static bool hash_is(const uint8_t h[MERKLE_LEN], const char *hex)
{
	char got[2 * MERKLE_LEN + 1];

	hex_of(h, got);
	if (strcmp(got, hex) == 0)
		return true;
	fprintf(stderr, "hash %s, want %s\n", got, hex);
	return false;
}

/* Creates (or overwrites) file @name with content @data and its hash. */
static uint64_t put_hashed(struct store *s, uint64_t ino, uint64_t parent,
			   const char *name, enum item_kind kind,
			   const void *data, size_t len)
{
	struct item_meta m;

	CHECK_EQ(apply_one(s, hashed_change_of(ino, parent, name, &m, kind,
					       data, len)),
		 0);
	return ino;
}

/* The Merkle hash of every directory, as tree_check() computed it. */
struct tree_dir {
	uint64_t ino;
	uint64_t parent;
	uint8_t merkle[MERKLE_LEN];
};

struct tree_seen {
	struct tree_dir dirs[256];
	size_t ndirs;
	size_t nentries; /* rows seen below the root */
};

static const struct tree_dir *tree_find(const struct tree_seen *t, uint64_t ino)
{
	for (size_t i = 0; i < t->ndirs; i++)
		if (t->dirs[i].ino == ino)
			return &t->dirs[i];
	return NULL;
}

/* Returns the merkle column of @ino as get() reports it. */
static void stored_merkle(struct store *s, uint64_t ino,
			  uint8_t out[MERKLE_LEN])
{
	struct store_row r;

	CHECK_EQ(s->ops->get(s, ino, &r), 0);
	memcpy(out, r.merkle, MERKLE_LEN);
	store_row_release(&r);
}

/*
 * Recomputes the Merkle hash of directory @ino from scratch, by merkle.c over
 * list() (in pages of 7, to cross page boundaries) and the content of each
 * file (read()), into @out; checks on the way that every row's merkle as
 * list(), lookup() and get() report it equals the recomputed hash, that a
 * file's hash is its content's, and that list() returns names in
 * merkle_name_cmp() order. Records each directory in @t.
 */
static void tree_check_dir(struct store *s, uint64_t ino, uint64_t parent,
			   struct tree_seen *t, int depth,
			   uint8_t out[MERKLE_LEN])
{
	struct store_row rows[7], r;
	char after[STORE_NAME_MAX + 1] = "";
	struct merkle *m = merkle_begin();
	uint8_t h[MERKLE_LEN];
	int n;

	CHECK(m);
	CHECK(depth < 32);
	for (;;) {
		n = s->ops->list(s, ino, after, rows, 7);
		CHECK(n >= 0);
		if (n == 0)
			break;
		for (int i = 0; i < n; i++) {
			struct store_row *c = &rows[i];
			bool is_dir = c->meta.kind == ITEM_DIR;
			void *data = NULL;
			size_t len = 0;

			CHECK_EQ(c->parent, ino);
			CHECK(merkle_name_cmp(after, strlen(after), c->name,
					      strlen(c->name)) < 0);
			snprintf(after, sizeof(after), "%s", c->name);
			if (is_dir) {
				tree_check_dir(s, c->ino, ino, t, depth + 1, h);
			} else {
				struct merkle *f = merkle_begin();

				CHECK(f);
				CHECK_EQ(s->ops->read(s, c->ino, &data, &len),
					 0);
				merkle_update(f, data, len);
				merkle_end(f, h);
				free(data);
				CHECK(memcmp(h, c->meta.hash, MERKLE_LEN) == 0);
			}
			CHECK(memcmp(c->merkle, h, MERKLE_LEN) == 0);
			CHECK_EQ(s->ops->lookup(s, ino, c->name, &r), 0);
			CHECK(memcmp(r.merkle, h, MERKLE_LEN) == 0);
			store_row_release(&r);
			merkle_add_child(m, c->name, strlen(c->name), is_dir,
					 h);
			t->nentries++;
		}
		for (int i = 0; i < n; i++)
			store_row_release(&rows[i]);
	}
	merkle_end(m, out);
	stored_merkle(s, ino, h);
	CHECK(memcmp(h, out, MERKLE_LEN) == 0);
	CHECK(t->ndirs < sizeof(t->dirs) / sizeof(t->dirs[0]));
	t->dirs[t->ndirs].ino = ino;
	t->dirs[t->ndirs].parent = parent;
	memcpy(t->dirs[t->ndirs].merkle, out, MERKLE_LEN);
	t->ndirs++;
}

/* Checks the whole tree (tree_check_dir() from the root), and that it holds
 * every row of the store: none is out of the root's reach. */
static void tree_check(struct store *s, struct tree_seen *t)
{
	uint64_t entries = 0, bytes = 0;
	uint8_t root[MERKLE_LEN];

	t->ndirs = 0;
	t->nentries = 0;
	tree_check_dir(s, STORE_ROOT_INO, 0, t, 0, root);
	CHECK_EQ(s->ops->stats(s, &entries, &bytes), 0);
	CHECK_EQ(entries, t->nentries);
}

/* Checks that @t and @u hold the same directories with the same hashes. */
static void tree_same(const struct tree_seen *t, const struct tree_seen *u)
{
	CHECK_EQ(t->ndirs, u->ndirs);
	for (size_t i = 0; i < t->ndirs; i++) {
		const struct tree_dir *d = tree_find(u, t->dirs[i].ino);

		CHECK(d);
		CHECK(memcmp(d->merkle, t->dirs[i].merkle, MERKLE_LEN) == 0);
	}
}

/* A hand-made tree whose hashes Python's hashlib computed independently. */
static void test_merkle_golden(void)
{
	/* SHA-256 of nothing: an empty directory */
	static const char empty[] = "e3b0c44298fc1c149afbf4c8996fb924"
				    "27ae41e4649b934ca495991b7852b855";
	/*
	 * Recheck with:
	 * python3 -c 'import hashlib as H;s=lambda b:H.sha256(b).digest();
	 * n=lambda k:s(b"".join(a+b"\0"+t+h for a,t,h in sorted(k)));
	 * a=n([(b"b.json",b"f",s(b"{}"))]);print(a.hex());
	 * print(n([(b"a",b"d",a),(b"e",b"d",n([])),
	 * (b"x",b"d",n([(b"y",b"f",s(b"hello"))])),
	 * (b"x.json",b"f",s(b"[]")),(b"\xc3\xa9",b"f",s(b"")),
	 * (b"ab",b"f",s(b"\x00\xff"))]).hex())'
	 * (one line; Python sorts bytes as memcmp does, shorter first)
	 */
	static const char want_a[] = "6267a39ffd8376828432869b81d1d6e4"
				     "9f3a661529cd8b151f42029ce2eb9924";
	static const char want_root[] = "90fdb95d6ade6fcd5515fc9870fc84a7"
					"fdf750b76184459eb6c764d6ce421d7e";
	struct store *s = open_ok("golden.db");
	struct tree_seen *t = calloc(1, sizeof(*t));
	uint8_t h[MERKLE_LEN];
	uint64_t a, e, x;

	CHECK(t);
	stored_merkle(s, STORE_ROOT_INO, h);
	CHECK(hash_is(h, empty));

	/* created in an order that is not the name order */
	put_hashed(s, new_ino(s), STORE_ROOT_INO, "x.json", ITEM_JSON, "[]", 2);
	e = put_dir(s, new_ino(s), STORE_ROOT_INO, "e");
	put_hashed(s, new_ino(s), STORE_ROOT_INO, "\xc3\xa9", ITEM_BINARY, "",
		   0);
	a = put_dir(s, new_ino(s), STORE_ROOT_INO, "a");
	x = put_dir(s, new_ino(s), STORE_ROOT_INO, "x"); /* beside x.json */
	put_hashed(s, new_ino(s), a, "b.json", ITEM_JSON, "{}", 2);
	put_hashed(s, new_ino(s), x, "y", ITEM_BINARY, "hello", 5);
	put_hashed(s, new_ino(s), STORE_ROOT_INO, "ab", ITEM_BINARY, "\0\xff",
		   2);

	stored_merkle(s, e, h);
	CHECK(hash_is(h, empty));
	stored_merkle(s, a, h);
	CHECK(hash_is(h, want_a));
	stored_merkle(s, STORE_ROOT_INO, h);
	CHECK(hash_is(h, want_root));
	tree_check(s, t);
	store_free(s);

	/* the hashes are stored, not computed at open */
	s = open_ok("golden.db");
	stored_merkle(s, STORE_ROOT_INO, h);
	CHECK(hash_is(h, want_root));
	store_free(s);
	free(t);
}

/* The fixed tree of store_helpers.h, which test_l3_pg.c checks alike. */
static void test_golden_merkle(void)
{
	struct store *s = open_ok("golden-shared.db");

	case_golden_merkle(s);
	store_free(s);
}

/* ---- the property test: a model of the tree, random batches ---- */

#define MODEL_MAX 320	  /* entries, the root included */
#define MODEL_DIRS_MAX 48 /* directories, the root included */
#define MODEL_DEPTH_MAX 7 /* levels of directories below the root */
#define MODEL_DATA_MAX 40

struct ment {
	uint64_t ino;
	uint64_t parent;
	char name[24];
	enum item_kind kind;
	unsigned char data[MODEL_DATA_MAX];
	size_t len;
	uint32_t mode;
	uint64_t version;
	bool alive;
	/* this batch: */
	bool touched;
	bool existed;	     /* the row was there before the batch */
	uint64_t old_parent; /* its parent then */
	bool has_data;	     /* content to send */
};

struct model {
	struct ment e[MODEL_MAX];
	uint64_t next_ino;
	/* what the sequence has covered, checked at the end */
	int creates, content_changes, meta_changes, renames, moves, dir_moves;
	int mkdirs, deletes, rmdirs, max_depth;
};

/* Names that sort in every tricky way: prefixes of each other, a JSON item
 * "x.json" beside "x" (a directory or a binary file), bytes >= 0x80. */
static const char *const model_names[] = {
	"a",	    "a.json", "ab",	"a b",		 "a.jso", "A",
	"x",	    "x.json", "\x80",	"\x80\x80",	 "\xff",  "\xff\xfe",
	"\xc3\xa9", "b",      "b.json", "\xc3\xa9.json",
};

static size_t model_nnames(void)
{
	return sizeof(model_names) / sizeof(model_names[0]);
}

static bool name_is_json(const char *name)
{
	size_t len = strlen(name);

	return len > 5 && strcmp(name + len - 5, ".json") == 0;
}

/* The part of a file's name that must be unique in its directory. */
static size_t stem_len(const char *name, enum item_kind kind)
{
	return kind == ITEM_JSON ? strlen(name) - 5 : strlen(name);
}

static int model_depth(const struct model *md, const struct ment *x);

static struct ment *model_get(struct model *md, uint64_t ino)
{
	for (size_t i = 0; i < MODEL_MAX; i++)
		if (md->e[i].alive && md->e[i].ino == ino)
			return &md->e[i];
	return NULL;
}

/* Would entry @name of @kind in @parent clash with a live entry other than
 * @self (by name, or by stem between two files)? */
static bool model_clash(const struct model *md, uint64_t parent,
			const char *name, enum item_kind kind, uint64_t self)
{
	for (size_t i = 0; i < MODEL_MAX; i++) {
		const struct ment *o = &md->e[i];

		if (!o->alive || o->ino == self || o->parent != parent ||
		    o->ino == STORE_ROOT_INO)
			continue;
		if (strcmp(o->name, name) == 0)
			return true;
		if (kind != ITEM_DIR && o->kind != ITEM_DIR &&
		    stem_len(o->name, o->kind) == stem_len(name, kind) &&
		    memcmp(o->name, name, stem_len(name, kind)) == 0)
			return true;
	}
	return false;
}

/* Picks a random live entry matching @want (-1: any kind but the root; -2:
 * any directory, the root included); NULL when none. */
static struct ment *model_pick(struct model *md, int want)
{
	size_t cand[MODEL_MAX], n = 0;

	for (size_t i = 0; i < MODEL_MAX; i++) {
		const struct ment *x = &md->e[i];

		if (!x->alive)
			continue;
		if (want == -2 ? x->kind == ITEM_DIR
			       : x->ino != STORE_ROOT_INO &&
					 (want == -1 || (int)x->kind == want))
			cand[n++] = i;
	}
	return n ? &md->e[cand[rng() % n]] : NULL;
}

static int model_depth(const struct model *md, const struct ment *x)
{
	int d = 0;

	while (x->ino != STORE_ROOT_INO) {
		x = model_get((struct model *)md, x->parent);
		CHECK(x);
		d++;
	}
	return d;
}

/* Is @ino @dir or below it? */
static bool model_below(struct model *md, uint64_t ino, uint64_t dir);

/* How many levels of directories @x holds below it. */
static int model_height(struct model *md, const struct ment *x)
{
	int base = model_depth(md, x), h = 0;

	for (size_t i = 0; i < MODEL_MAX; i++) {
		const struct ment *y = &md->e[i];

		if (y->alive && y->kind == ITEM_DIR && y != x &&
		    model_below(md, y->ino, x->ino) &&
		    model_depth(md, y) - base > h)
			h = model_depth(md, y) - base;
	}
	return h;
}

/* Is @ino @dir or below it? */
static bool model_below(struct model *md, uint64_t ino, uint64_t dir)
{
	for (;;) {
		struct ment *x;

		if (ino == dir)
			return true;
		if (ino == STORE_ROOT_INO)
			return false;
		x = model_get(md, ino);
		CHECK(x);
		ino = x->parent;
	}
}

static size_t model_count(const struct model *md, bool dirs_only)
{
	size_t n = 0;

	for (size_t i = 0; i < MODEL_MAX; i++)
		if (md->e[i].alive && (!dirs_only || md->e[i].kind == ITEM_DIR))
			n++;
	return n;
}

/* Records the state of @x before the batch changes it the first time. */
static void model_touch(struct ment *x)
{
	if (x->touched)
		return;
	x->touched = true;
	x->existed = x->alive;
	x->old_parent = x->parent;
}

/* A random name for an entry of @kind (JSON: one ending ".json"), sometimes
 * with a digit added to widen the pool. */
static void model_name(char *out, size_t size, enum item_kind kind)
{
	for (;;) {
		const char *base = model_names[rng() % model_nnames()];

		if (rng() % 4 == 0)
			snprintf(out, size, "%s%d", base, (int)(rng() % 3));
		else
			snprintf(out, size, "%s", base);
		if (kind == ITEM_DIR ||
		    (kind == ITEM_JSON) == name_is_json(out))
			return;
	}
}

static void model_content(struct ment *x)
{
	if (x->kind == ITEM_JSON) {
		x->len = (size_t)snprintf((char *)x->data, sizeof(x->data),
					  "{\"k\":%u}", (unsigned)(rng() % 50));
		if (rng() % 8 == 0)
			x->len = 0; /* an empty JSON item */
	} else {
		x->len = rng() % (MODEL_DATA_MAX + 1);
		for (size_t i = 0; i < x->len; i++)
			x->data[i] = (unsigned char)rng();
	}
	x->has_data = true;
}

/* A fresh slot: neither alive nor part of this batch. */
static struct ment *model_slot(struct model *md)
{
	for (size_t i = 0; i < MODEL_MAX; i++)
		if (!md->e[i].alive && !md->e[i].touched)
			return &md->e[i];
	return NULL;
}

/* Makes a new entry of @kind in a random directory; false when the dice
 * found no free name or slot. */
static bool model_create(struct model *md, enum item_kind kind)
{
	struct ment *x = model_slot(md), *p;
	char name[24];

	if (!x || (kind == ITEM_DIR && model_count(md, true) >= MODEL_DIRS_MAX))
		return false;
	p = model_pick(md, -2);
	if (kind == ITEM_DIR && model_depth(md, p) >= MODEL_DEPTH_MAX)
		return false;
	model_name(name, sizeof(name), kind);
	if (model_clash(md, p->ino, name, kind, 0))
		return false;
	memset(x, 0, sizeof(*x));
	model_touch(x); /* existed = false */
	x->ino = md->next_ino++;
	x->parent = p->ino;
	snprintf(x->name, sizeof(x->name), "%s", name);
	x->kind = kind;
	x->mode = kind == ITEM_DIR ? S_IFDIR | 0755 : S_IFREG | 0644;
	x->version = 1;
	x->alive = true;
	if (kind != ITEM_DIR)
		model_content(x);
	if (kind == ITEM_DIR) {
		md->mkdirs++;
		if (model_depth(md, x) > md->max_depth)
			md->max_depth = model_depth(md, x);
	} else {
		md->creates++;
	}
	return true;
}

/* Renames a random entry, within its directory or into another one. */
static bool model_rename(struct model *md)
{
	struct ment *x = model_pick(md, -1), *p;
	enum item_kind kind;
	char name[24];

	if (!x)
		return false;
	p = rng() % 2 ? model_get(md, x->parent) : model_pick(md, -2);
	if (x->kind == ITEM_DIR && model_below(md, p->ino, x->ino))
		return false; /* not into itself */
	if (x->kind == ITEM_DIR &&
	    model_depth(md, p) + 1 + model_height(md, x) > MODEL_DEPTH_MAX)
		return false;
	/* a file's kind follows its name, as in the engine */
	kind = x->kind == ITEM_DIR ? ITEM_DIR
	       : rng() % 2	   ? ITEM_JSON
				   : ITEM_BINARY;
	model_name(name, sizeof(name), kind);
	if (model_clash(md, p->ino, name, kind, x->ino))
		return false;
	model_touch(x);
	if (p->ino != x->parent) {
		md->moves++;
		if (x->kind == ITEM_DIR)
			md->dir_moves++;
	}
	md->renames++;
	x->parent = p->ino;
	x->kind = kind;
	snprintf(x->name, sizeof(x->name), "%s", name);
	return true;
}

/* Deletes a random file, or a random empty directory. */
static bool model_delete(struct model *md, bool dir)
{
	size_t cand[MODEL_MAX], n = 0;
	struct ment *x;

	for (size_t i = 1; i < MODEL_MAX; i++) {
		bool empty = true;

		x = &md->e[i];
		if (!x->alive || (x->kind == ITEM_DIR) != dir)
			continue;
		for (size_t j = 1; j < MODEL_MAX && dir && empty; j++)
			empty = !md->e[j].alive || md->e[j].parent != x->ino;
		if (empty)
			cand[n++] = i;
	}
	if (!n)
		return false;
	x = &md->e[cand[rng() % n]];
	model_touch(x);
	x->alive = false;
	if (dir)
		md->rmdirs++;
	else
		md->deletes++;
	return true;
}

/* One random change to the model. */
static void model_step(struct model *md)
{
	size_t live = model_count(md, false);
	unsigned r = (unsigned)(rng() % 100);
	struct ment *x;

	if (live > MODEL_MAX / 2 && r < 35 && rng() % 2)
		r += 57; /* half full: more deletes than creates */
	if (r < 25) {
		model_create(md, rng() % 2 ? ITEM_JSON : ITEM_BINARY);
	} else if (r < 35) {
		model_create(md, ITEM_DIR);
	} else if (r < 48) {
		x = model_pick(md, rng() % 2 ? ITEM_JSON : ITEM_BINARY);
		if (x) {
			model_touch(x);
			model_content(x);
			x->version++;
			md->content_changes++;
		}
	} else if (r < 58) {
		/* metadata only: the root too (a chmod of the mount) */
		x = rng() % 10 ? model_pick(md, -1) : &md->e[0];
		if (x) {
			model_touch(x);
			x->mode ^= 0022;
			x->version++;
			md->meta_changes++;
		}
	} else if (r < 78) {
		model_rename(md);
	} else if (r < 92) {
		model_delete(md, false);
	} else {
		model_delete(md, true);
	}
}

/* The directories whose hash the batch must recompute: the old parent of
 * each changed row that existed, the new parent of each live one, each
 * changed live directory, and all their ancestors. Sets want[ino-index]. */
static size_t model_expected(struct model *md, uint64_t *want, size_t cap)
{
	size_t n = 0;

	for (size_t i = 0; i < MODEL_MAX; i++) {
		const struct ment *x = &md->e[i];
		uint64_t seeds[3];
		size_t ns = 0;

		if (!x->touched)
			continue;
		if (x->existed && x->ino != STORE_ROOT_INO)
			seeds[ns++] = x->old_parent;
		if (x->alive && x->ino != STORE_ROOT_INO)
			seeds[ns++] = x->parent;
		if (x->alive && x->kind == ITEM_DIR)
			seeds[ns++] = x->ino;
		for (size_t j = 0; j < ns; j++) {
			struct ment *d = model_get(md, seeds[j]);

			/* up to the root, or to one already wanted */
			while (d) {
				bool have = false;

				for (size_t k = 0; k < n && !have; k++)
					have = want[k] == d->ino;
				if (have)
					break;
				CHECK(n < cap);
				want[n++] = d->ino;
				d = d->ino == STORE_ROOT_INO
					    ? NULL
					    : model_get(md, d->parent);
			}
		}
	}
	return n;
}

/* Checks apply()'s report against the trees before and after the batch and
 * the set the model expects. */
static void check_report(const struct tree_seen *before,
			 const struct tree_seen *after,
			 const struct store_dirhash *tree, size_t ntree,
			 const uint64_t *want, size_t nwant)
{
	/* none when the batch only made and removed an entry of its own */
	CHECK_EQ(ntree, nwant);
	CHECK((tree != NULL) == (ntree > 0));
	if (ntree)
		CHECK_EQ(tree[ntree - 1].ino, STORE_ROOT_INO);
	for (size_t i = 0; i < ntree; i++) {
		const struct tree_dir *d = tree_find(after, tree[i].ino);
		bool wanted = false;

		CHECK(d);
		CHECK(memcmp(d->merkle, tree[i].merkle, MERKLE_LEN) == 0);
		for (size_t j = 0; j < nwant; j++)
			wanted = wanted || want[j] == tree[i].ino;
		CHECK(wanted);
		/* once each, and bottom-up: a directory's parent is not
		 * before it */
		for (size_t j = 0; j < i; j++) {
			CHECK(tree[j].ino != tree[i].ino);
			CHECK(tree[j].ino != d->parent);
		}
	}
	/* every directory whose hash changed (or that is new) is there */
	for (size_t i = 0; i < after->ndirs; i++) {
		const struct tree_dir *d = &after->dirs[i];
		const struct tree_dir *b = tree_find(before, d->ino);
		bool found = false;

		if (b && memcmp(b->merkle, d->merkle, MERKLE_LEN) == 0)
			continue;
		for (size_t j = 0; j < ntree && !found; j++)
			found = tree[j].ino == d->ino;
		CHECK(found);
	}
}

static void test_merkle_property(void)
{
	const char *env = getenv("TEST_SEED");
	const char *envn = getenv("TEST_BATCHES");
	uint64_t seed = env ? strtoull(env, NULL, 0) : 20261125;
	int batches = envn ? atoi(envn) : 2000;
	struct store *s = open_ok("property.db");
	struct model *md = calloc(1, sizeof(*md));
	struct tree_seen *before = calloc(1, sizeof(*before));
	struct tree_seen *after = calloc(1, sizeof(*after));
	struct change *ch[MODEL_MAX];
	struct item_meta m;
	uint64_t want[MODEL_DIRS_MAX];
	uint64_t saved_rng = rng_state;

	CHECK(md && before && after);
	rng_state = seed ? seed : 1;
	CHECK_EQ(s->ops->alloc_ino(s, 1000000, &md->next_ino), 0);
	md->e[0] = (struct ment){.ino = STORE_ROOT_INO,
				 .kind = ITEM_DIR,
				 .mode = S_IFDIR | 0755,
				 .version = 1,
				 .alive = true};
	tree_check(s, before);

	for (int b = 0; b < batches; b++) {
		int nops = 1 + (int)(rng() % 20);
		struct store_dirhash *tree = (void *)1;
		size_t ntree = 12345, nch = 0, nwant;
		struct tree_seen *tmp;
		const char *name;

		snprintf(check_context, sizeof(check_context),
			 "the merkle property test, seed %llu, batch %d",
			 (unsigned long long)seed, b);
		for (int i = 0; i < nops; i++)
			model_step(md);

		for (size_t i = 0; i < MODEL_MAX; i++) {
			struct ment *x = &md->e[i];

			if (!x->touched)
				continue;
			if (!x->alive) {
				ch[nch++] = delete_of(x->ino);
				continue;
			}
			m = meta_of(x->kind, x->len);
			m.mode = x->mode;
			m.version = x->version;
			if (x->kind != ITEM_DIR)
				item_hash(x->len ? x->data : (void *)"", x->len,
					  m.hash);
			name = x->ino == STORE_ROOT_INO ? "" : x->name;
			ch[nch++] = x->has_data
					    ? data_change_of(x->ino, x->parent,
							     name, &m, x->data,
							     x->len)
					    : change_of(x->ino, x->parent, name,
							&m);
		}
		if (nch == 0)
			continue; /* the dice changed nothing */
		nwant = model_expected(md, want, MODEL_DIRS_MAX);

		CHECK_EQ(s->ops->apply(s, ch, nch, &tree, &ntree), 0);
		changes_free(ch, nch);
		tree_check(s, after);
		CHECK_EQ(after->ndirs, model_count(md, true));
		CHECK_EQ(after->nentries + 1, model_count(md, false));
		check_report(before, after, tree, ntree, want, nwant);
		free(tree);

		for (size_t i = 0; i < MODEL_MAX; i++) {
			md->e[i].touched = false;
			md->e[i].has_data = false;
		}
		tmp = before;
		before = after;
		after = tmp;
	}
	check_context[0] = '\0';

	if (getenv("TEST_VERBOSE"))
		fprintf(stderr,
			"creates %d content %d meta %d renames %d moves %d "
			"dir_moves %d mkdirs %d rmdirs %d deletes %d depth %d "
			"live %zu dirs %zu\n",
			md->creates, md->content_changes, md->meta_changes,
			md->renames, md->moves, md->dir_moves, md->mkdirs,
			md->rmdirs, md->deletes, md->max_depth,
			model_count(md, false), model_count(md, true));
	/* the sequence covered what it is meant to */
	CHECK(md->creates > 100 && md->content_changes > 100);
	CHECK(md->meta_changes > 100 && md->renames > 100);
	CHECK(md->moves > 50 && md->dir_moves > 10);
	CHECK(md->mkdirs > 20 && md->rmdirs > 10 && md->deletes > 100);
	CHECK(md->max_depth >= 4);

	/* and the hashes survive a reopen */
	store_free(s);
	s = open_ok("property.db");
	tree_check(s, after);
	tree_same(before, after);
	store_free(s);

	/* the migration from version 1 hashes this tree the same: turn the
	 * file back into version 1 by hand, then open it */
	raw_exec(db_path("property.db"),
		 "DROP INDEX entries_children;"
		 "DROP INDEX entries_parent_ino;"
		 "ALTER TABLE entries DROP COLUMN merkle;"
		 "DROP TABLE feed;"
		 "DELETE FROM meta WHERE key = 'feed_trimmed';"
		 "ALTER TABLE entries DROP COLUMN atime_ns;"
		 "UPDATE meta SET value = 1 WHERE key = 'schema_version'");
	log_reset();
	s = open_ok("property.db");
	CHECK_EQ(nmigrated, 4);
	tree_check(s, after);
	tree_same(before, after);
	store_free(s);
	free(md);
	free(before);
	free(after);
	rng_state = saved_rng;
}

/* A batch that fails changes no hash and reports none; so does one whose
 * only change, a move that would make a cycle, is dropped (store.h), or
 * one deeper than the store follows. */
static void test_merkle_failed_batch(void)
{
	struct store *s = open_ok("merkle-fail.db");
	struct tree_seen *before = calloc(1, sizeof(*before));
	struct tree_seen *after = calloc(1, sizeof(*after));
	struct item_meta mf = meta_of(ITEM_BINARY, 3);
	struct item_meta mf2 = meta_of(ITEM_BINARY, 3);
	struct item_meta md = meta_of(ITEM_DIR, 0);
	struct change *c[4];
	struct store_dirhash *tree;
	uint64_t d1, d2, d3, f1, f2, fresh;
	size_t ntree;

	CHECK(before && after);
	d1 = put_dir(s, new_ino(s), STORE_ROOT_INO, "d1");
	d2 = put_dir(s, new_ino(s), d1, "d2");
	f1 = put_hashed(s, new_ino(s), d1, "f1", ITEM_BINARY, "one", 3);
	f2 = put_hashed(s, new_ino(s), STORE_ROOT_INO, "f2", ITEM_BINARY, "two",
			3);
	fresh = new_ino(s);
	tree_check(s, before);

	/* a create deep down, new content, a move across directories, and
	 * a create that clashes with the first one (a clash with an entry
	 * the batch does not change would be a race, resolved): every hash
	 * on the way would change, none does */
	item_hash("new", 3, mf.hash);
	item_hash("two", 3, mf2.hash);
	c[0] = data_change_of(fresh, d2, "fresh", &mf, "new", 3);
	c[1] = data_change_of(f1, d1, "f1", &mf, "new", 3);
	c[2] = change_of(f2, d2, "f2", &mf2);
	c[3] = change_of(new_ino(s), d2, "fresh", &mf);
	tree = (void *)1;
	ntree = 99;
	CHECK_EQ(s->ops->apply(s, c, 4, &tree, &ntree), -EEXIST);
	CHECK(tree == NULL);
	CHECK_EQ(ntree, 0);
	tree_check(s, after);
	tree_same(before, after);

	/* a refused change (-EINVAL) reports none either */
	change_free(c[3]);
	c[3] = change_of(new_ino(s), STORE_ROOT_INO, "a/b", &mf);
	tree = (void *)1;
	ntree = 99;
	CHECK_EQ(s->ops->apply(s, c, 4, &tree, &ntree), -EINVAL);
	CHECK(tree == NULL);
	CHECK_EQ(ntree, 0);

	/* moving d1 into its own child d2 would make a cycle: dropped */
	change_free(c[0]);
	c[0] = change_of(d1, d2, "d1", &md);
	tree = (void *)1;
	ntree = 99;
	log_reset();
	CHECK_EQ(s->ops->apply(s, c, 1, &tree, &ntree), 0);
	CHECK(log_has("cycle"));
	CHECK_EQ(atomic_load(&s->races), 1);
	CHECK(tree == NULL);
	CHECK_EQ(ntree, 0);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "d1"), d1);
	tree_check(s, after);
	tree_same(before, after);

	/* the content change and the move with a new directory go through
	 * and report d2 (deepest), d1 and d3 (in inode order), the root */
	d3 = new_ino(s);
	change_free(c[3]);
	c[3] = change_of(d3, STORE_ROOT_INO, "d3", &md);
	CHECK_EQ(s->ops->apply(s, c + 1, 3, &tree, &ntree), 0);
	CHECK(tree != NULL);
	CHECK_EQ(ntree, 4);
	CHECK_EQ(tree[0].ino, d2);
	CHECK_EQ(tree[1].ino, d1);
	CHECK_EQ(tree[2].ino, d3);
	CHECK_EQ(tree[3].ino, STORE_ROOT_INO);
	free(tree);
	tree_check(s, after);

	/* deleting what is not there touches no directory: no report */
	change_free(c[0]);
	c[0] = delete_of(987654);
	tree = (void *)1;
	ntree = 99;
	CHECK_EQ(s->ops->apply(s, c, 1, &tree, &ntree), 0);
	CHECK(tree == NULL);
	CHECK_EQ(ntree, 0);
	tree_check(s, before);
	tree_same(before, after);
	changes_free(c, 4);
	store_free(s);
	free(before);
	free(after);
}

/* A parent chain longer than the store follows (LSQ_MAX_DEPTH, 4096) is
 * refused like a cycle; a deep one below it is fine. */
static void test_merkle_depth(void)
{
	const size_t deep = 1000, too_deep = 5000;
	struct store *s = open_ok("merkle-depth.db");
	struct change **c = calloc(too_deep, sizeof(*c));
	struct item_meta md = meta_of(ITEM_DIR, 0);
	struct store_dirhash *tree;
	uint8_t root0[MERKLE_LEN], h[MERKLE_LEN];
	uint64_t first = 0;
	size_t ntree;

	CHECK(c);
	stored_merkle(s, STORE_ROOT_INO, root0);
	CHECK_EQ(s->ops->alloc_ino(s, too_deep, &first), 0);
	/* names are all "d": the order of the changes does not matter */
	for (size_t i = 0; i < too_deep; i++)
		c[i] = change_of(first + i, i ? first + i - 1 : STORE_ROOT_INO,
				 "d", &md);
	log_reset();
	CHECK_EQ(s->ops->apply(s, c, too_deep, &tree, &ntree), -EIO);
	CHECK(log_has("levels deep"));
	CHECK(tree == NULL && ntree == 0);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "d"), -ENOENT);
	stored_merkle(s, STORE_ROOT_INO, h);
	CHECK(memcmp(h, root0, MERKLE_LEN) == 0);

	CHECK_EQ(s->ops->apply(s, c, deep, &tree, &ntree), 0);
	CHECK_EQ(ntree, deep + 1);
	CHECK_EQ(tree[0].ino, first + deep - 1);
	CHECK_EQ(tree[deep].ino, STORE_ROOT_INO);
	/* each level: SHA-256("d" 00 'd' <the level below>) */
	merkle_empty(h);
	for (size_t i = 0; i <= deep; i++) {
		struct merkle *m;

		CHECK(memcmp(tree[i].merkle, h, MERKLE_LEN) == 0);
		m = merkle_begin();
		CHECK(m);
		merkle_add_child(m, "d", 1, true, h);
		merkle_end(m, h);
	}
	free(tree);
	changes_free(c, too_deep);
	free(c);
	store_free(s);
}

/* The exact schema of version 1 (git show 0a19b64:engine/l3_sqlite.c). */
static const char v1_schema_sql[] =
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
	");"
	"INSERT INTO meta (key, value) VALUES ('format', 'tierfs'),"
	" ('schema_version', 1), ('next_ino', 100);";

/* Writes one row as a version-1 store did: names and stems as blobs, the
 * hash of a file's content (NULL for a directory), content when @data. */
static void v1_put(sqlite3 *db, uint64_t ino, uint64_t parent, const char *name,
		   enum item_kind kind, const char *data, size_t len)
{
	sqlite3_stmt *st = NULL;
	uint8_t hash[MERKLE_LEN];
	size_t nlen = strlen(name), slen = nlen;

	if (kind == ITEM_JSON)
		slen -= 5;
	CHECK_EQ(sqlite3_prepare_v2(
			 db,
			 "INSERT INTO entries (ino, parent, name, stem, kind,"
			 " size, hash, version, mtime_ns, ctime_ns, mode, uid,"
			 " gid, explicit_dir) VALUES (?1, ?2, ?3, ?4, ?5, ?6,"
			 " ?7, 1, 1, 1, ?8, 0, 0, 1)",
			 -1, &st, NULL),
		 SQLITE_OK);
	sqlite3_bind_int64(st, 1, (sqlite3_int64)ino);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)parent);
	sqlite3_bind_blob(st, 3, name, (int)nlen, SQLITE_STATIC);
	if (kind != ITEM_DIR) {
		item_hash(len ? data : "", len, hash);
		sqlite3_bind_blob(st, 4, name, (int)slen, SQLITE_STATIC);
		sqlite3_bind_blob(st, 7, hash, MERKLE_LEN, SQLITE_STATIC);
	}
	sqlite3_bind_int(st, 5, (int)kind);
	sqlite3_bind_int64(st, 6, (sqlite3_int64)len);
	sqlite3_bind_int(st, 8,
			 kind == ITEM_DIR ? S_IFDIR | 0755 : S_IFREG | 0644);
	CHECK_EQ(sqlite3_step(st), SQLITE_DONE);
	sqlite3_finalize(st);
	if (!data)
		return;
	CHECK_EQ(sqlite3_prepare_v2(db,
				    "INSERT INTO contents (ino, data)"
				    " VALUES (?1, ?2)",
				    -1, &st, NULL),
		 SQLITE_OK);
	sqlite3_bind_int64(st, 1, (sqlite3_int64)ino);
	sqlite3_bind_blob(st, 2, len ? data : "", (int)len, SQLITE_STATIC);
	CHECK_EQ(sqlite3_step(st), SQLITE_DONE);
	sqlite3_finalize(st);
}

/* Reads one integer with SQL on a connection of its own. */
static long long raw_int(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	long long v = -1;

	CHECK_EQ(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
		 SQLITE_OK);
	CHECK_EQ(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

static void test_merkle_migration(void)
{
	const char *path = db_path("v1.db");
	struct tree_seen *t = calloc(1, sizeof(*t));
	struct tree_seen *u = calloc(1, sizeof(*u));
	struct store *s;
	sqlite3 *db = NULL;
	uint8_t h[MERKLE_LEN];

	CHECK(t && u);
	CHECK_EQ(sqlite3_open(path, &db), SQLITE_OK);
	CHECK_EQ(sqlite3_exec(db, v1_schema_sql, NULL, NULL, NULL), SQLITE_OK);
	v1_put(db, 1, 0, "", ITEM_DIR, NULL, 0);
	/* inserted parents last: the migration must not rely on ino order */
	v1_put(db, 5, 4, "leaf.json", ITEM_JSON, "{}", 2);
	v1_put(db, 4, 3, "deeper", ITEM_DIR, NULL, 0);
	v1_put(db, 6, 3, "x", ITEM_BINARY, "bytes", 5);
	v1_put(db, 3, 2, "deep", ITEM_DIR, NULL, 0);
	v1_put(db, 7, 2, "\x80", ITEM_BINARY, NULL, 0); /* no content row */
	v1_put(db, 2, 1, "a", ITEM_DIR, NULL, 0);
	v1_put(db, 8, 1, "x", ITEM_DIR, NULL, 0); /* empty */
	v1_put(db, 9, 1, "x.json", ITEM_JSON, "[1]", 3);
	v1_put(db, 10, 1, "ab", ITEM_BINARY, "\xff", 1);
	v1_put(db, 11, 1, "a.json", ITEM_JSON, "", 0);
	sqlite3_close(db);

	log_reset();
	s = open_ok("v1.db");
	CHECK_EQ(nmigrated, 4); /* to 2, to 3, to 4, then to 5 */
	CHECK(strstr(migrated_lines, "version 1 to 2: merkle hashes computed, "
				     "directories: 5\n") != NULL);
	CHECK(strstr(migrated_lines, "version 2 to 3: atime set to mtime, "
				     "entries: 11\n") != NULL);
	CHECK(strstr(migrated_lines, "version 3 to 4: change feed added\n") !=
	      NULL);
	CHECK(strstr(migrated_lines, "version 4 to 5: the (parent, ino) index "
				     "of listings\n") != NULL);
	CHECK_EQ(raw_int(path, "SELECT value FROM meta"
			       " WHERE key = 'schema_version'"),
		 LSQ_TEST_SCHEMA);
	CHECK_EQ(raw_int(path, "SELECT count(*) FROM entries"
			       " WHERE atime_ns IS NOT mtime_ns"),
		 0);
	CHECK_EQ(raw_int(path, "SELECT count(*) FROM entries WHERE"
			       " kind = 0 AND length(merkle) = 32"),
		 5);
	tree_check(s, t);
	CHECK_EQ(t->ndirs, 5);
	store_free(s);
	check_query_plans(path); /* the migration made the index */

	/* reopening migrates nothing and changes nothing */
	log_reset();
	s = open_ok("v1.db");
	CHECK_EQ(nmigrated, 0);
	tree_check(s, u);
	tree_same(t, u);
	CHECK_EQ(raw_int(path, "SELECT value FROM meta"
			       " WHERE key = 'schema_version'"),
		 LSQ_TEST_SCHEMA);

	/* and the migrated store keeps its hashes up to date */
	put_hashed(s, new_ino(s), 4, "new", ITEM_BINARY, "n", 1);
	tree_check(s, u);
	CHECK(memcmp(tree_find(u, 4)->merkle, tree_find(t, 4)->merkle,
		     MERKLE_LEN) != 0);
	store_free(s);

	/* a version-1 file with a cycle (directories 20 and 21, each the
	 * other's parent) opens with a warning; a batch into it fails */
	path = db_path("v1-cycle.db");
	CHECK_EQ(sqlite3_open(path, &db), SQLITE_OK);
	CHECK_EQ(sqlite3_exec(db, v1_schema_sql, NULL, NULL, NULL), SQLITE_OK);
	v1_put(db, 1, 0, "", ITEM_DIR, NULL, 0);
	v1_put(db, 2, 1, "ok", ITEM_DIR, NULL, 0);
	v1_put(db, 20, 21, "c20", ITEM_DIR, NULL, 0);
	v1_put(db, 21, 20, "c21", ITEM_DIR, NULL, 0);
	v1_put(db, 22, 20, "f", ITEM_BINARY, "f", 1);
	/* an orphan: its parent 30 is gone; it is hashed all the same */
	v1_put(db, 31, 30, "orphan", ITEM_DIR, NULL, 0);
	v1_put(db, 32, 31, "f", ITEM_BINARY, "f", 1);
	sqlite3_close(db);
	log_reset();
	s = open_ok("v1-cycle.db");
	CHECK_EQ(nmigrated, 4);
	CHECK(strstr(migrated_lines, "directories: 3\n") != NULL);
	CHECK_EQ(nwarnings, 1);
	stored_merkle(s, 20, h);
	CHECK(hash_zero(h));
	stored_merkle(s, 31, h);
	CHECK(!hash_zero(h));
	{
		struct item_meta m = meta_of(ITEM_BINARY, 0);
		struct change *c[2];
		struct store_dirhash *tree;
		size_t ntree;

		c[0] = change_of(new_ino(s), 21, "g", &m);
		log_reset();
		CHECK_EQ(apply_changes(s, c, 1), -EIO);
		CHECK(log_has("cycle"));
		CHECK_EQ(lookup_ino(s, 21, "g"), -ENOENT);

		/* the orphan is the top of its own chain, as deep as the
		 * root, and still reported before it */
		c[0] = change_of(new_ino(s), STORE_ROOT_INO, "g", &m);
		c[1] = change_of(new_ino(s), 31, "g", &m);
		CHECK_EQ(s->ops->apply(s, c, 2, &tree, &ntree), 0);
		changes_free(c, 2);
		CHECK_EQ(ntree, 2);
		CHECK_EQ(tree[0].ino, 31);
		CHECK_EQ(tree[1].ino, STORE_ROOT_INO);
		stored_merkle(s, 31, h);
		CHECK(memcmp(tree[0].merkle, h, MERKLE_LEN) == 0);
		free(tree);
	}
	store_free(s);
	free(t);
	free(u);
}

/* ---- sharing: two writers on one file ---- */

/* Runs a case of store_feed_cases.h on two stores opened on one new file
 * @name: two writers, as two mounts. */
static void run_pair(const char *name,
		     void (*fn)(struct store *a, struct store *b))
{
	struct store *a = open_ok(name);
	struct store *b = open_ok(name);

	fn(a, b);
	store_free(b);
	store_free(a);
}

static void test_feed_cases(void)
{
	run_pair("feed-versions.db", case_feed_versions);
	run_pair("feed-same-name.db", case_feed_same_name);
	run_pair("feed-rmdir.db", case_feed_rmdir_race);
	run_pair("feed-empty-dir.db", case_feed_replace_empty_dir);
	run_pair("feed-children.db", case_feed_dir_with_children);
	run_pair("feed-order.db", case_feed_order);
	run_pair("feed-head.db", case_feed_head);
	run_pair("feed-stale.db", case_feed_stale);
	run_pair("feed-wait.db", case_feed_wait);
	run_pair("feed-merkle.db", case_feed_merkle_races);
	run_pair("feed-replay.db", case_feed_replay);
	run_pair("feed-cycle.db", case_feed_move_cycle);
	run_pair("feed-cycle-strict.db", case_feed_move_cycle_strict);
}

/* A version-2 file (as the build before the feed made it) migrates to
 * version 4 at open: the feed table and its mark are added, nothing else
 * changes, and the next open migrates nothing. */
static void test_feed_migration(void)
{
	const char *path = db_path("v2.db");
	struct store *s = open_ok("v2.db");
	struct store_feed recs[4];
	uint64_t d, f;

	d = put_dir(s, new_ino(s), STORE_ROOT_INO, "d");
	f = put_file(s, new_ino(s), d, "f", ITEM_BINARY, "f", 1);
	store_free(s);
	/* what a version-2 file lacks */
	raw_exec(path,
		 "DROP TABLE feed;"
		 "DROP INDEX entries_parent_ino;"
		 "DELETE FROM meta WHERE key = 'feed_trimmed';"
		 "DELETE FROM sqlite_sequence;"
		 "ALTER TABLE entries DROP COLUMN atime_ns;"
		 "UPDATE meta SET value = 2 WHERE key = 'schema_version'");
	CHECK_EQ(raw_int(path, "SELECT count(*) FROM sqlite_master"
			       " WHERE name = 'feed'"),
		 0);

	log_reset();
	s = open_ok("v2.db");
	CHECK_EQ(nmigrated, 3);
	CHECK(strstr(migrated_lines, "version 3 to 4") != NULL);
	CHECK_EQ(raw_int(path, "SELECT value FROM meta"
			       " WHERE key = 'schema_version'"),
		 LSQ_TEST_SCHEMA);
	CHECK_EQ(raw_int(path, "SELECT value FROM meta"
			       " WHERE key = 'feed_trimmed'"),
		 0);
	CHECK_EQ(feed_head_of(s), 0);
	CHECK_EQ(lookup_ino(s, d, "f"), f);
	check_content(s, f, "f", 1);
	put_file(s, f, d, "f", ITEM_BINARY, "g", 1);
	CHECK_EQ(s->ops->feed_read(s, 0, recs, 4), 1);
	CHECK_EQ(recs[0].ino, f);
	CHECK_EQ(recs[0].row.meta.version, 2);
	feed_release(recs, 1);
	store_free(s);

	log_reset();
	s = open_ok("v2.db");
	CHECK_EQ(nmigrated, 0);
	CHECK_EQ(feed_head_of(s), 1);
	store_free(s);
}

/* A version-4 file (as 038ca6c made it: no (parent, ino) index) migrates
 * to version 5 at open: the index is made, the rows are kept and list in
 * inode order, and the next open migrates nothing. A step that fails (a
 * table of the index's name is in the way) leaves version 4. */
static void test_listing_migration(void)
{
	static const char *want[] = {"a", "b", "c"};
	const char *path = db_path("v4.db");
	struct store *s = open_ok("v4.db");
	uint64_t d;

	d = put_dir(s, new_ino(s), STORE_ROOT_INO, "d");
	put_file(s, new_ino(s), d, "c", ITEM_BINARY, "c", 1);
	put_file(s, new_ino(s), d, "a", ITEM_BINARY, "a", 1);
	store_free(s);
	raw_exec(path, "DROP INDEX entries_parent_ino;"
		       "UPDATE meta SET value = 4"
		       " WHERE key = 'schema_version';"
		       "CREATE TABLE entries_parent_ino (x);");
	log_reset();
	s = NULL;
	CHECK(l3_sqlite_open(path, &test_log, &s) < 0);
	CHECK(log_has("entries_parent_ino"));
	CHECK_EQ(raw_int(path, "SELECT value FROM meta"
			       " WHERE key = 'schema_version'"),
		 4);
	raw_exec(path, "DROP TABLE entries_parent_ino");

	log_reset();
	s = open_ok("v4.db");
	CHECK_EQ(nmigrated, 1);
	CHECK(strstr(migrated_lines, "version 4 to 5: the (parent, ino) index "
				     "of listings\n") != NULL);
	CHECK_EQ(raw_int(path, "SELECT value FROM meta"
			       " WHERE key = 'schema_version'"),
		 LSQ_TEST_SCHEMA);
	put_file(s, new_ino(s), d, "b", ITEM_BINARY, "b", 1);
	check_listing(s, d, 2, want, 3);
	store_free(s);
	check_query_plans(path);

	log_reset();
	s = open_ok("v4.db");
	CHECK_EQ(nmigrated, 0);
	store_free(s);
}

/* Trimming by age: records older than feed_keep_seconds go, a prefix at a
 * time, and the mark keeps the head when the table is left empty. */
static void test_feed_trim_age(void)
{
	const char *path = db_path("trim-age.db");
	struct store *s = open_ok("trim-age.db");
	struct store_feed recs[8];
	uint64_t f, head;

	f = put_file(s, new_ino(s), STORE_ROOT_INO, "f", ITEM_BINARY, "0", 1);
	for (int i = 0; i < 4; i++)
		put_file(s, f, STORE_ROOT_INO, "f", ITEM_BINARY, "1", 1);
	head = feed_head_of(s);
	CHECK_EQ(head, 5);
	/* records 1..3 are two hours old */
	raw_exec(path, "UPDATE feed SET time_ns = time_ns - 7200000000000"
		       " WHERE seq <= 3");
	put_file(s, f, STORE_ROOT_INO, "f", ITEM_BINARY, "2", 1);
	CHECK_EQ(raw_int(path, "SELECT min(seq) FROM feed"), 4);
	CHECK_EQ(raw_int(path, "SELECT value FROM meta"
			       " WHERE key = 'feed_trimmed'"),
		 3);
	CHECK_EQ(s->ops->feed_read(s, 2, recs, 8), -ESTALE);
	CHECK_EQ(s->ops->feed_read(s, 3, recs, 8), 3);
	feed_release(recs, 3);

	/* an empty table: the head stays where it was */
	raw_exec(path, "DELETE FROM feed;"
		       "UPDATE meta SET value = 6 WHERE key = 'feed_trimmed'");
	CHECK_EQ(feed_head_of(s), 6);
	CHECK_EQ(s->ops->feed_read(s, 6, recs, 8), 0);
	CHECK_EQ(s->ops->feed_read(s, 5, recs, 8), -ESTALE);
	put_file(s, f, STORE_ROOT_INO, "f", ITEM_BINARY, "3", 1);
	CHECK_EQ(feed_head_of(s), 7);
	store_free(s);
}

/* feed_wait() polls data_version: a commit by a connection of another
 * kind (another process, say) that adds records wakes it; one that leaves
 * the feed alone (an inode allocation) does not end the wait. */
static void test_feed_data_version(void)
{
	const char *path = db_path("dv.db");
	struct store *a = open_ok("dv.db");
	struct store *b = open_ok("dv.db");
	struct feed_waiter w;
	pthread_t th;
	uint64_t h, ino;
	double t0;

	put_dir(a, new_ino(a), STORE_ROOT_INO, "d");
	h = feed_head_of(a);
	CHECK_EQ(a->ops->feed_wait(a, h, 10), 0); /* makes its connection */

	w = (struct feed_waiter){.s = a, .after = h, .timeout_ms = 300};
	t0 = feed_now_s();
	CHECK_EQ(pthread_create(&th, NULL, feed_wait_main, &w), 0);
	for (int i = 0; i < 5; i++)
		CHECK_EQ(b->ops->alloc_ino(b, 1, &ino), 0);
	CHECK_EQ(pthread_join(th, NULL), 0);
	CHECK_EQ(w.ret, 0);
	CHECK(feed_now_s() - t0 >= 0.29);

	w = (struct feed_waiter){.s = a, .after = h, .timeout_ms = 20000};
	t0 = feed_now_s();
	CHECK_EQ(pthread_create(&th, NULL, feed_wait_main, &w), 0);
	raw_exec(path, "INSERT INTO feed (origin, ino, time_ns)"
		       " VALUES (42, 12345, 0)");
	CHECK_EQ(pthread_join(th, NULL), 0);
	CHECK_EQ(w.ret, 1);
	CHECK(feed_now_s() - t0 < 15);
	CHECK_EQ(feed_head_of(b), h + 1);
	store_free(b);
	store_free(a);
}

/* Two writers on one file, each applying from its own thread: every batch
 * commits (each waits for the other's write lock), the inode ranges are
 * disjoint, and the feed holds every record once, each writer's in its
 * order. */
struct applier {
	struct store *s;
	const char *dir;
	uint64_t first[100]; /* the ranges alloc_ino() gave */
	int errors;
};

enum { APPLIER_BATCHES = 100, APPLIER_FILES = 4 };

static void *applier_main(void *p)
{
	struct applier *ap = p;
	struct item_meta m = meta_of(ITEM_BINARY, 1);
	struct item_meta md = meta_of(ITEM_DIR, 0);
	struct change *c[APPLIER_FILES];
	uint64_t dir = 0;

	if (ap->s->ops->alloc_ino(ap->s, 1, &dir) ||
	    apply_one(ap->s, change_of(dir, STORE_ROOT_INO, ap->dir, &md)))
		ap->errors++;
	for (int b = 0; b < APPLIER_BATCHES; b++) {
		uint64_t first = 0;

		if (ap->s->ops->alloc_ino(ap->s, APPLIER_FILES, &first)) {
			ap->errors++;
			continue;
		}
		ap->first[b] = first;
		for (int i = 0; i < APPLIER_FILES; i++) {
			char name[32];

			snprintf(name, sizeof(name), "f%d-%d", b, i);
			c[i] = data_change_of(first + (uint64_t)i, dir, name,
					      &m, "x", 1);
		}
		if (apply_changes(ap->s, c, APPLIER_FILES))
			ap->errors++;
	}
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void test_feed_two_appliers(void)
{
	enum { N = 2 * (APPLIER_BATCHES * APPLIER_FILES + 1) };
	struct applier ap[2] = {{.dir = "one"}, {.dir = "two"}};
	struct store_feed *recs = calloc(N + 1, sizeof(*recs));
	uint64_t firsts[2 * APPLIER_BATCHES], last_ino[2] = {0, 0}, entries,
					      bytes;
	pthread_t th[2];
	size_t n;

	CHECK(recs != NULL);
	ap[0].s = open_ok("appliers.db");
	ap[1].s = open_ok("appliers.db");
	for (int i = 0; i < 2; i++)
		CHECK_EQ(pthread_create(&th[i], NULL, applier_main, &ap[i]), 0);
	for (int i = 0; i < 2; i++) {
		CHECK_EQ(pthread_join(th[i], NULL), 0);
		CHECK_EQ(ap[i].errors, 0);
	}
	/* disjoint ranges of APPLIER_FILES */
	for (int i = 0; i < 2; i++)
		memcpy(firsts + i * APPLIER_BATCHES, ap[i].first,
		       sizeof(ap[i].first));
	qsort(firsts, 2 * APPLIER_BATCHES, sizeof(firsts[0]), cmp_u64);
	for (int i = 1; i < 2 * APPLIER_BATCHES; i++)
		CHECK(firsts[i] >= firsts[i - 1] + APPLIER_FILES);

	CHECK_EQ(ap[0].s->ops->stats(ap[0].s, &entries, &bytes), 0);
	CHECK_EQ(entries, N);
	n = feed_all(ap[1].s, 0, recs, N + 1, 64);
	CHECK_EQ(n, N);
	for (size_t i = 0; i < n; i++) {
		int w = recs[i].origin == ap[0].s->origin ? 0 : 1;

		CHECK(w == 0 || recs[i].origin == ap[1].s->origin);
		CHECK(!recs[i].gone);
		/* each writer's files come in the order it made them */
		if (recs[i].row.meta.kind != ITEM_DIR) {
			CHECK(recs[i].ino > last_ino[w]);
			last_ino[w] = recs[i].ino;
		}
	}
	feed_release(recs, n);
	free(recs);
	feed_check_tree(ap[0].s, ap[1].s);
	store_free(ap[1].s);
	store_free(ap[0].s);
}

/* Reads one text value with SQL on a connection of its own, into @buf. */
static void raw_text(const char *path, const char *sql, char *buf, size_t len)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;

	buf[0] = '\0';
	CHECK_EQ(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
		 SQLITE_OK);
	CHECK_EQ(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
		snprintf(buf, len, "%s", sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	sqlite3_close(db);
}

/* The columns of entries as SQLite keeps them: name, type, not null,
 * default, in table order. */
#define ENTRIES_COLS_SQL                                                       \
	"SELECT group_concat(name || ' ' || type || ' ' || \"notnull\" || ' '" \
	" || coalesce(dflt_value, '-'), ', ') FROM pragma_table_info('entries')"

/* A version-2 file (version 1's schema with what the step to 2 added, as a
 * version-2 build made it) migrates to 3: atime_ns is each row's mtime_ns,
 * and the table is the same as in a new file. */
static void test_atime_migration(void)
{
	const char *path = db_path("v2-atime.db");
	char fresh[1024], migrated[1024];
	struct item_meta m = meta_of(ITEM_BINARY, 0);
	struct store_row r;
	struct store *s;
	sqlite3 *db = NULL;
	uint64_t f;

	s = open_ok("v3-new.db");
	store_free(s);
	raw_text(db_path("v3-new.db"), ENTRIES_COLS_SQL, fresh, sizeof(fresh));
	CHECK(strstr(fresh, "merkle BLOB 0 -, atime_ns INTEGER 1 0") != NULL);

	CHECK_EQ(sqlite3_open(path, &db), SQLITE_OK);
	CHECK_EQ(sqlite3_exec(db, v1_schema_sql, NULL, NULL, NULL), SQLITE_OK);
	CHECK_EQ(sqlite3_exec(db,
			      "ALTER TABLE entries ADD COLUMN merkle BLOB;"
			      "CREATE INDEX entries_children ON entries"
			      " (parent, name, kind, hash, merkle);"
			      "UPDATE meta SET value = 2"
			      " WHERE key = 'schema_version'",
			      NULL, NULL, NULL),
		 SQLITE_OK);
	v1_put(db, 1, 0, "", ITEM_DIR, NULL, 0);
	v1_put(db, 2, 1, "old", ITEM_BINARY, "o", 1);
	v1_put(db, 3, 1, "new", ITEM_BINARY, "n", 1);
	v1_put(db, 4, 1, "d", ITEM_DIR, NULL, 0);
	CHECK_EQ(sqlite3_exec(db,
			      "UPDATE entries SET mtime_ns = -86400500000000"
			      " WHERE ino = 2;"
			      "UPDATE entries SET mtime_ns = 7258118400123456789"
			      " WHERE ino = 3;"
			      "UPDATE entries SET merkle = zeroblob(32)"
			      " WHERE kind = 0",
			      NULL, NULL, NULL),
		 SQLITE_OK);
	sqlite3_close(db);

	log_reset();
	s = open_ok("v2-atime.db");
	CHECK_EQ(nmigrated, 3);
	CHECK(strstr(migrated_lines, "migrated schema version 2 to 3: atime "
				     "set to mtime, entries: 4\n") != NULL);
	CHECK_EQ(raw_int(path, "SELECT value FROM meta"
			       " WHERE key = 'schema_version'"),
		 LSQ_TEST_SCHEMA);
	raw_text(path, ENTRIES_COLS_SQL, migrated, sizeof(migrated));
	CHECK_STREQ(migrated, fresh);
	CHECK_EQ(s->ops->get(s, 2, &r), 0);
	CHECK_EQ(r.meta.mtime_ns, -86400500000000LL);
	CHECK_EQ(r.meta.atime_ns, -86400500000000LL);
	store_row_release(&r);
	CHECK_EQ(s->ops->get(s, 3, &r), 0);
	CHECK_EQ(r.meta.atime_ns, 7258118400123456789LL);
	store_row_release(&r);

	/* new rows keep their own atime */
	m.atime_ns = -1;
	f = new_ino(s);
	CHECK_EQ(apply_one(s, change_of(f, 4, "f", &m)), 0);
	CHECK_EQ(s->ops->get(s, f, &r), 0);
	CHECK(meta_equal(&r.meta, &m));
	store_row_release(&r);
	store_free(s);

	/* reopening migrates nothing */
	log_reset();
	s = open_ok("v2-atime.db");
	CHECK_EQ(nmigrated, 0);
	CHECK_EQ(s->ops->get(s, f, &r), 0);
	CHECK_EQ(r.meta.atime_ns, -1);
	store_row_release(&r);
	store_free(s);
}

/* ---- concurrency: more threads than reader connections ---- */

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

	for (int i = 0; i < 300; i++) {
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

static void test_threads(void)
{
	struct store *s = open_ok("threads.db");
	struct reader_arg args[8];
	pthread_t th[8];
	struct item_meta m = meta_of(ITEM_BINARY, 3);
	struct change *c;
	uint64_t d, t;

	d = put_dir(s, new_ino(s), STORE_ROOT_INO, "d");
	for (int i = 0; i < 5; i++) {
		char name[16];

		snprintf(name, sizeof(name), "f%d", i);
		put_file(s, new_ino(s), d, name, ITEM_BINARY, "abc", 3);
	}
	t = new_ino(s);
	for (int i = 0; i < 8; i++) {
		args[i] = (struct reader_arg){.s = s, .dir = d};
		CHECK_EQ(pthread_create(&th[i], NULL, reader_main, &args[i]),
			 0);
	}
	for (int i = 0; i < 200; i++) {
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
	store_free(s);
}

int main(void)
{
	if (!sqlite3_threadsafe()) {
		fprintf(stderr, "skipped: libsqlite3 without threads\n");
		return 77;
	}
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	tmpdir_made = true;
	atexit(cleanup);

	test_open_creates_root();
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
	test_merkle_golden();
	test_golden_merkle();
	test_merkle_failed_batch();
	test_merkle_depth();
	test_merkle_migration();
	test_atime_migration();
	test_merkle_property();
	test_feed_cases();
	test_feed_migration();
	test_listing_migration();
	test_feed_trim_age();
	test_feed_data_version();
	test_feed_two_appliers();
	printf("ok\n");
	return 0;
}
