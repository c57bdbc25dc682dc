/*
 * test_l3_pg.c - unit tests of the PostgreSQL L3 store (engine/l3_pg.c).
 *
 * The same checks as test_l3_sqlite.c, run against the server whose libpq
 * URI is in TIERFS_TEST_POSTGRES (scripts/pg-test-server.sh starts one),
 * plus what only a shared server has: mounts that create the schema
 * together, disjoint inode ranges under concurrency, writers racing on the
 * same rows, lost connections, and a 2000-row batch (its throughput is
 * printed, never asserted).
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
#include "l3_pg.h"

static const char *uri;	 /* TIERFS_TEST_POSTGRES */
static char secret[128]; /* the URI's password, "" when none */
static PGconn *admin;	 /* a plain connection for setup and checks */

/* ---- the log sink: keeps the last line, prints when TEST_VERBOSE ---- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_log[1024];
static int nlogs;
static int secret_leaks;	 /* lines that showed a password */
static const char *extra_secret; /* another password being tried */

static void log_fn(void *arg, int level, const char *msg)
{
	pthread_mutex_lock(&log_lock);
	snprintf(last_log, sizeof(last_log), "%s", msg);
	nlogs++;
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

static void reset_schema(void)
{
	admin_exec("DROP TABLE IF EXISTS entries, contents, tierfs_meta");
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

static void check_content(struct store *s, uint64_t ino, const void *want,
			  size_t len)
{
	void *data = (void *)1;
	size_t got = 12345;

	CHECK_EQ(s->ops->read(s, ino, &data, &got), 0);
	CHECK_EQ(got, len);
	if (len)
		CHECK(data && memcmp(data, want, len) == 0);
	else
		CHECK(data == NULL);
	free(data);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
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

	/* the exact column types the schema promises */
	CHECK_EQ(admin_int(
			 "SELECT count(*) FROM information_schema.columns"
			 " WHERE table_name = 'entries' AND"
			 " ((column_name IN ('name', 'stem', 'hash', 'xattrs')"
			 "   AND data_type = 'bytea') OR"
			 " (column_name = 'kind' AND data_type = 'smallint')"
			 " OR (column_name = 'mode' AND data_type = 'integer')"
			 " OR (column_name = 'explicit_dir'"
			 "     AND data_type = 'boolean')"
			 " OR (column_name = 'state' AND data_type = 'text')"
			 " OR (column_name IN ('ino', 'parent', 'size',"
			 "     'version', 'mtime_ns', 'ctime_ns', 'uid', 'gid')"
			 "     AND data_type = 'bigint'))"),
		 16);
}

static void test_listing(void)
{
	struct store *s = open_fresh();
	char longname[STORE_NAME_MAX + 1];
	const char *names[] = {
		"a.json",		    /* JSON, stem "a", beside dir "a" */
		"ab",			    /* "a" is a prefix */
		"A",			    /* sorts before "a" */
		"a.b",			    /* '.' sorts before 'j' and 'b' */
		"a.jso",		    /* a prefix of "a.json" */
		"b",			    /* a plain name */
		"a b",			    /* a space */
		"\x80x",		    /* bytes >= 0x80 sort last */
		"\xc3\xa9",		    /* UTF-8 e-acute */
		"\xe6\x97\xa5\xe6\x9c\xac", /* UTF-8 CJK */
		"\xff",			    /* the highest byte */
		"\xff\xfe",		    /* ... and a longer name after it */
		longname,		    /* STORE_NAME_MAX bytes */
	};
	const size_t nnames = sizeof(names) / sizeof(names[0]);
	const char *want[16];
	struct store_row rows[16];
	uint64_t dir_a, sub;
	size_t nwant = 0;
	int n;

	memset(longname, 'z', STORE_NAME_MAX);
	longname[STORE_NAME_MAX] = '\0';

	/* "a" is a directory so that it can stand beside "a.json" */
	dir_a = put_dir(s, new_ino(s), STORE_ROOT_INO, "a");
	want[nwant++] = "a";
	for (size_t i = 0; i < nnames; i++) {
		enum item_kind kind = strcmp(names[i], "a.json") == 0
					      ? ITEM_JSON
					      : ITEM_BINARY;

		put_file(s, new_ino(s), STORE_ROOT_INO, names[i], kind, "{}",
			 2);
		want[nwant++] = names[i];
	}
	/* children of another directory stay out of the root's listing */
	sub = put_dir(s, new_ino(s), dir_a, "a");
	put_file(s, new_ino(s), dir_a, "zz", ITEM_BINARY, "", 0);
	put_file(s, new_ino(s), sub, "deep", ITEM_BINARY, "", 0);

	qsort(want, nwant, sizeof(want[0]), cmp_names);
	/* spot-check the order the test expects of strcmp */
	CHECK(strcmp(want[0], "A") == 0);
	CHECK(strcmp(want[1], "a") == 0);
	CHECK(strcmp(want[2], "a b") == 0);
	CHECK(strcmp(want[3], "a.b") == 0);
	CHECK(strcmp(want[4], "a.jso") == 0);
	CHECK(strcmp(want[5], "a.json") == 0);
	CHECK(strcmp(want[6], "ab") == 0);
	CHECK(strcmp(want[nwant - 2], "\xff") == 0);
	CHECK(strcmp(want[nwant - 1], "\xff\xfe") == 0);

	for (size_t page = 1; page <= 16; page++)
		check_listing(s, STORE_ROOT_INO, page, want, nwant);

	/* paging from a name that is not there starts at the next one */
	n = s->ops->list(s, STORE_ROOT_INO, "a.c", rows, 2);
	CHECK_EQ(n, 2);
	CHECK(strcmp(rows[0].name, "a.jso") == 0);
	CHECK(strcmp(rows[1].name, "a.json") == 0);
	store_row_release(&rows[0]);
	store_row_release(&rows[1]);
	CHECK_EQ(s->ops->list(s, STORE_ROOT_INO, "\xff\xfe", rows, 4), 0);
	CHECK_EQ(s->ops->list(s, STORE_ROOT_INO, "", rows, 0), 0);
	n = s->ops->list(s, STORE_ROOT_INO, NULL, rows, 1);
	CHECK_EQ(n, 1);
	CHECK(strcmp(rows[0].name, "A") == 0);
	store_row_release(&rows[0]);

	/* the subdirectory lists only its own children */
	n = s->ops->list(s, dir_a, "", rows, 16);
	CHECK_EQ(n, 2);
	CHECK(strcmp(rows[0].name, "a") == 0 && rows[0].ino == sub);
	CHECK(strcmp(rows[1].name, "zz") == 0);
	store_row_release(&rows[0]);
	store_row_release(&rows[1]);

	/* lookups are exact: a prefix of a name is another name */
	CHECK(lookup_ino(s, STORE_ROOT_INO, "a.js") == -ENOENT);
	CHECK(lookup_ino(s, STORE_ROOT_INO, "a.jso") > 0);
	CHECK(lookup_ino(s, STORE_ROOT_INO, "\xc3") == -ENOENT);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "a"), dir_a);
	CHECK_EQ(lookup_ino(s, dir_a, "a"), sub);

	CHECK_EQ(s->ops->has_children(s, STORE_ROOT_INO), 1);
	CHECK_EQ(s->ops->has_children(s, dir_a), 1);
	CHECK_EQ(s->ops->has_children(s, sub), 1);
	CHECK_EQ(s->ops->has_children(s, lookup_ino(s, sub, "deep")), 0);
	CHECK_EQ(s->ops->has_children(s, 123456), 0);
	store_free(s);
}

static void test_names_refused(void)
{
	struct store *s = open_fresh();
	struct item_meta m = meta_of(ITEM_BINARY, 0);
	char toolong[STORE_NAME_MAX + 2];
	struct store_change c[2];
	uint64_t ino = new_ino(s);

	memset(toolong, 'x', sizeof(toolong) - 1);
	toolong[sizeof(toolong) - 1] = '\0';

	c[0] = change_of(new_ino(s), STORE_ROOT_INO, "fine", &m);
	c[1] = change_of(ino, STORE_ROOT_INO, "a/b", &m);
	CHECK_EQ(store_apply(s, c, 2), -EINVAL);
	c[1] = change_of(ino, STORE_ROOT_INO, toolong, &m);
	CHECK_EQ(store_apply(s, c, 2), -EINVAL);
	c[1] = change_of(ino, STORE_ROOT_INO, "", &m);
	CHECK_EQ(store_apply(s, c, 2), -EINVAL);
	c[1] = change_of(0, STORE_ROOT_INO, "zero", &m);
	CHECK_EQ(store_apply(s, c, 2), -EINVAL);
	c[1] = change_of(ino, STORE_ROOT_INO, "nometa", NULL);
	CHECK_EQ(store_apply(s, c, 2), -EINVAL);
	c[1] = change_of(1ULL << 63, STORE_ROOT_INO, "huge", &m);
	CHECK_EQ(store_apply(s, c, 2), -EINVAL);
	CHECK(lookup_ino(s, STORE_ROOT_INO, "fine") == -ENOENT);
	CHECK(lookup_ino(s, STORE_ROOT_INO, toolong) == -ENOENT);

	/* 255 bytes is the limit, inclusive */
	toolong[STORE_NAME_MAX] = '\0';
	put_file(s, ino, STORE_ROOT_INO, toolong, ITEM_BINARY, "x", 1);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, toolong), ino);

	/* the root's own row may be rewritten (chmod of the mount root) */
	m = meta_of(ITEM_DIR, 0);
	m.mode = S_IFDIR | 0700;
	c[0] = change_of(STORE_ROOT_INO, 0, "", &m);
	CHECK_EQ(store_apply(s, c, 1), 0);
	CHECK_EQ(lookup_ino(s, 0, ""), STORE_ROOT_INO);
	{
		struct store_row r;

		CHECK_EQ(s->ops->get(s, STORE_ROOT_INO, &r), 0);
		CHECK_EQ(r.meta.mode, S_IFDIR | 0700);
		CHECK_EQ(r.name[0], '\0');
		store_row_release(&r);
	}
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
	struct item_meta m, mm[3];
	struct store_change c, cc[3];
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
	c = change_of(f_nodata, STORE_ROOT_INO, "nodata", &m);
	CHECK_EQ(store_apply(s, &c, 1), 0);

	check_content(s, f_nul, nuls, sizeof(nuls));
	check_content(s, f_big, big, big_len);
	check_content(s, f_empty, NULL, 0);
	check_content(s, f_nodata, NULL, 0);
	check_content(s, dir, NULL, 0);
	CHECK_EQ(s->ops->read(s, 424242, &data, &len), -ENOENT);

	/* a metadata-only change keeps the content */
	m = meta_of(ITEM_BINARY, sizeof(nuls));
	m.version = 2;
	c = change_of(f_nul, STORE_ROOT_INO, "nuls", &m);
	CHECK_EQ(store_apply(s, &c, 1), 0);
	check_content(s, f_nul, nuls, sizeof(nuls));

	/* has_data replaces it, also with empty content */
	m = meta_of(ITEM_BINARY, 3);
	c = change_of(f_big, STORE_ROOT_INO, "big", &m);
	c.has_data = true;
	c.data = "xyz";
	c.len = 3;
	CHECK_EQ(store_apply(s, &c, 1), 0);
	check_content(s, f_big, "xyz", 3);
	c.data = NULL;
	c.len = 0;
	CHECK_EQ(store_apply(s, &c, 1), 0);
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
		mm[i] = meta_of(ITEM_BINARY, i == 1 ? mid_len : 2);
		cc[i] = change_of(mix[i], STORE_ROOT_INO, mix_names[i], &mm[i]);
		cc[i].has_data = true;
		cc[i].data = i == 1 ? (const void *)mid : (const void *)"\0m";
		cc[i].len = i == 1 ? mid_len : 2;
	}
	CHECK_EQ(store_apply(s, cc, 3), 0);
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
	struct item_meta mf = meta_of(ITEM_BINARY, 3);
	struct item_meta mj = meta_of(ITEM_JSON, 2);
	struct item_meta md = meta_of(ITEM_DIR, 0);
	struct store_change c[3];
	uint64_t d1, d2, f, p, q, r, child;

	d1 = put_dir(s, new_ino(s), STORE_ROOT_INO, "d1");
	d2 = put_dir(s, new_ino(s), STORE_ROOT_INO, "d2");
	f = put_file(s, new_ino(s), STORE_ROOT_INO, "old", ITEM_BINARY, "abc",
		     3);
	child = put_file(s, new_ino(s), d1, "child", ITEM_BINARY, "c", 1);

	/* rename a file into another directory: same ino, content kept */
	c[0] = change_of(f, d2, "new", &mf);
	CHECK_EQ(store_apply(s, c, 1), 0);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "old"), -ENOENT);
	CHECK_EQ(lookup_ino(s, d2, "new"), f);
	check_content(s, f, "abc", 3);

	/* rename a directory: its subtree moves with it */
	c[0] = change_of(d1, d2, "moved", &md);
	CHECK_EQ(store_apply(s, c, 1), 0);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "d1"), -ENOENT);
	CHECK_EQ(lookup_ino(s, d2, "moved"), d1);
	CHECK_EQ(lookup_ino(s, d1, "child"), child);

	/* a swap of two names in one batch */
	p = put_file(s, new_ino(s), STORE_ROOT_INO, "p", ITEM_BINARY, "P", 1);
	q = put_file(s, new_ino(s), STORE_ROOT_INO, "q", ITEM_BINARY, "Q", 1);
	c[0] = change_of(p, STORE_ROOT_INO, "q", &mf);
	c[1] = change_of(q, STORE_ROOT_INO, "p", &mf);
	CHECK_EQ(store_apply(s, c, 2), 0);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "q"), p);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "p"), q);
	check_content(s, p, "P", 1);

	/* a rotation of three JSON items, stems included */
	p = put_file(s, new_ino(s), d2, "1.json", ITEM_JSON, "{}", 2);
	q = put_file(s, new_ino(s), d2, "2.json", ITEM_JSON, "{}", 2);
	r = put_file(s, new_ino(s), d2, "3.json", ITEM_JSON, "{}", 2);
	c[0] = change_of(p, d2, "2.json", &mj);
	c[1] = change_of(q, d2, "3.json", &mj);
	c[2] = change_of(r, d2, "1.json", &mj);
	CHECK_EQ(store_apply(s, c, 3), 0);
	CHECK_EQ(lookup_ino(s, d2, "1.json"), r);
	CHECK_EQ(lookup_ino(s, d2, "2.json"), p);
	CHECK_EQ(lookup_ino(s, d2, "3.json"), q);

	/* rename over an existing name: the batch deletes the target */
	c[0] = delete_of(r);
	c[1] = change_of(p, d2, "1.json", &mj);
	CHECK_EQ(store_apply(s, c, 2), 0);
	CHECK_EQ(lookup_ino(s, d2, "1.json"), p);
	CHECK_EQ(lookup_ino(s, d2, "2.json"), -ENOENT);
	CHECK_EQ(s->ops->get(s, r, &(struct store_row){0}), -ENOENT);
	store_free(s);
}

static void test_all_or_nothing(void)
{
	struct store *s = open_fresh();
	struct item_meta m1 = meta_of(ITEM_BINARY, 7);
	struct item_meta m2 = meta_of(ITEM_BINARY, 5);
	struct item_meta mn = meta_of(ITEM_BINARY, 5);
	struct store_change c[4];
	struct store_row row;
	uint64_t k1, k2, fresh, fresh2, entries, bytes;

	k1 = put_file(s, new_ino(s), STORE_ROOT_INO, "keep1", ITEM_BINARY,
		      "one", 3);
	k2 = put_file(s, new_ino(s), STORE_ROOT_INO, "keep2", ITEM_BINARY,
		      "two", 3);
	fresh = new_ino(s);
	fresh2 = new_ino(s);

	/* a create, an update with content, and a rename onto a name that
	 * the batch keeps: the last one fails, so none of them happens */
	m1.version = 9;
	c[0] = change_of(fresh, STORE_ROOT_INO, "fresh", &mn);
	c[0].has_data = true;
	c[0].data = "fresh";
	c[0].len = 5;
	c[1] = change_of(k1, STORE_ROOT_INO, "keep1", &m1);
	c[1].has_data = true;
	c[1].data = "changed";
	c[1].len = 7;
	c[2] = change_of(k2, STORE_ROOT_INO, "keep1", &m2);
	CHECK_EQ(store_apply(s, c, 3), -EEXIST);

	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "fresh"), -ENOENT);
	CHECK_EQ(s->ops->get(s, fresh, &row), -ENOENT);
	CHECK_EQ(s->ops->read(s, fresh, &(void *){NULL}, &(size_t){0}),
		 -ENOENT);
	CHECK_EQ(s->ops->get(s, k1, &row), 0);
	CHECK_EQ(row.meta.version, 1);
	CHECK_EQ(row.meta.size, 3);
	store_row_release(&row);
	check_content(s, k1, "one", 3);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "keep1"), k1);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "keep2"), k2);

	/* two new entries of one name */
	c[0] = change_of(fresh, STORE_ROOT_INO, "twin", &mn);
	c[1] = change_of(fresh2, STORE_ROOT_INO, "twin", &mn);
	CHECK_EQ(store_apply(s, c, 2), -EEXIST);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "twin"), -ENOENT);

	/* a delete and a create that collides: the delete is undone too */
	c[0] = delete_of(k2);
	c[1] = change_of(fresh, STORE_ROOT_INO, "keep1", &mn);
	CHECK_EQ(store_apply(s, c, 2), -EEXIST);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "keep2"), k2);
	check_content(s, k2, "two", 3);

	/* the same ino twice in one batch is refused */
	c[0] = change_of(fresh, STORE_ROOT_INO, "x1", &mn);
	c[1] = change_of(fresh, STORE_ROOT_INO, "x2", &mn);
	CHECK_EQ(store_apply(s, c, 2), -EEXIST);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "x1"), -ENOENT);

	CHECK_EQ(s->ops->stats(s, &entries, &bytes), 0);
	CHECK_EQ(entries, 2);
	CHECK_EQ(bytes, 6);

	/* the store is usable after a failed batch */
	c[0] = change_of(fresh, STORE_ROOT_INO, "fresh", &mn);
	c[0].has_data = true;
	c[0].data = "fresh";
	c[0].len = 5;
	CHECK_EQ(store_apply(s, c, 1), 0);
	check_content(s, fresh, "fresh", 5);
	store_free(s);
}

static void test_stems(void)
{
	struct store *s = open_fresh();
	struct item_meta mb = meta_of(ITEM_BINARY, 0);
	struct item_meta mj = meta_of(ITEM_JSON, 0);
	struct item_meta md = meta_of(ITEM_DIR, 0);
	struct store_change c[2];
	uint64_t bin_x, d_other, jx, dz, jz, jy, by;

	bin_x = put_file(s, new_ino(s), STORE_ROOT_INO, "x", ITEM_BINARY, "b",
			 1);
	/* binary "x" and JSON "x.json" would both be the item "x" */
	c[0] = change_of(new_ino(s), STORE_ROOT_INO, "x.json", &mj);
	CHECK_EQ(store_apply(s, c, 1), -EEXIST);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "x.json"), -ENOENT);

	/* the same in one batch, in either order */
	jy = new_ino(s);
	by = new_ino(s);
	c[0] = change_of(jy, STORE_ROOT_INO, "y.json", &mj);
	c[1] = change_of(by, STORE_ROOT_INO, "y", &mb);
	CHECK_EQ(store_apply(s, c, 2), -EEXIST);
	c[0] = change_of(by, STORE_ROOT_INO, "y", &mb);
	c[1] = change_of(jy, STORE_ROOT_INO, "y.json", &mj);
	CHECK_EQ(store_apply(s, c, 2), -EEXIST);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "y"), -ENOENT);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "y.json"), -ENOENT);

	/* in another directory the same stem is fine */
	d_other = put_dir(s, new_ino(s), STORE_ROOT_INO, "other");
	jx = new_ino(s);
	c[0] = change_of(jx, d_other, "x.json", &mj);
	CHECK_EQ(store_apply(s, c, 1), 0);

	/* JSON "z.json" beside directory "z", created in either order */
	dz = put_dir(s, new_ino(s), STORE_ROOT_INO, "z");
	jz = new_ino(s);
	c[0] = change_of(jz, STORE_ROOT_INO, "z.json", &mj);
	CHECK_EQ(store_apply(s, c, 1), 0);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "z"), dz);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "z.json"), jz);
	c[0] = change_of(new_ino(s), d_other, "x", &md);
	CHECK_EQ(store_apply(s, c, 1), 0);

	/* but not directory "z.json" beside JSON "z.json" (one name) */
	c[0] = change_of(new_ino(s), STORE_ROOT_INO, "z.json", &md);
	CHECK_EQ(store_apply(s, c, 1), -EEXIST);
	/* nor binary "x" beside directory "x" */
	c[0] = change_of(new_ino(s), d_other, "x", &mb);
	CHECK_EQ(store_apply(s, c, 1), -EEXIST);

	/* replacing binary "x" by JSON "x.json" in one batch is fine */
	jx = new_ino(s);
	c[0] = delete_of(bin_x);
	c[1] = change_of(jx, STORE_ROOT_INO, "x.json", &mj);
	CHECK_EQ(store_apply(s, c, 2), 0);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "x"), -ENOENT);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "x.json"), jx);

	/* and renaming the JSON item to a binary name with its stem too */
	c[0] = change_of(jx, STORE_ROOT_INO, "x", &mb);
	CHECK_EQ(store_apply(s, c, 1), 0);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "x"), jx);
	store_free(s);
}

static long long content_rows(uint64_t ino)
{
	char sql[128];

	snprintf(sql, sizeof(sql),
		 "SELECT count(*) FROM contents WHERE ino = %llu",
		 (unsigned long long)ino);
	return admin_int(sql);
}

static void test_delete(void)
{
	struct store *s = open_fresh();
	struct item_meta m = meta_of(ITEM_BINARY, 4);
	struct store_change c[2];
	struct store_row row;
	uint64_t d, f, g, entries, bytes;
	void *data;
	size_t len;

	d = put_dir(s, new_ino(s), STORE_ROOT_INO, "d");
	f = put_file(s, new_ino(s), d, "f", ITEM_BINARY, "data", 4);
	g = put_file(s, new_ino(s), d, "g", ITEM_BINARY, "more", 4);
	CHECK_EQ(content_rows(f), 1);

	c[0] = delete_of(f);
	CHECK_EQ(store_apply(s, c, 1), 0);
	CHECK_EQ(s->ops->get(s, f, &row), -ENOENT);
	CHECK_EQ(lookup_ino(s, d, "f"), -ENOENT);
	CHECK_EQ(s->ops->read(s, f, &data, &len), -ENOENT);
	CHECK_EQ(content_rows(f), 0);
	check_content(s, g, "more", 4);

	/* a row written again without data does not bring content back */
	c[0] = change_of(f, d, "f", &m);
	CHECK_EQ(store_apply(s, c, 1), 0);
	check_content(s, f, NULL, 0);

	/* deleting what is not there is not an error */
	c[0] = delete_of(987654);
	CHECK_EQ(store_apply(s, c, 1), 0);

	c[0] = delete_of(f);
	c[1] = delete_of(g);
	CHECK_EQ(store_apply(s, c, 2), 0);
	CHECK_EQ(content_rows(g), 0);
	CHECK_EQ(s->ops->has_children(s, d), 0);
	CHECK_EQ(s->ops->stats(s, &entries, &bytes), 0);
	CHECK_EQ(entries, 1);
	CHECK_EQ(bytes, 0);
	c[0] = delete_of(d);
	CHECK_EQ(store_apply(s, c, 1), 0);
	CHECK_EQ(s->ops->has_children(s, STORE_ROOT_INO), 0);
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
	struct store_change c;
	struct store_row row, rows[4];
	uint64_t f;
	int n;

	for (int i = 0; i < ITEM_HASH_LEN; i++)
		m.hash[i] = (uint8_t)(0xa0 + i);
	m.version = 1ULL << 40;
	m.mtime_ns = -1234567890123LL; /* before the epoch */
	m.ctime_ns = INT64_MAX;
	m.mode = S_IFREG | 04751;
	m.uid = 4000000000U;
	m.gid = 65534;
	m.explicit_dir = false;
	m.state = "reviewed \xc3\xa9";
	m.xattrs = (void *)xattrs;
	m.xattrs_len = sizeof(xattrs) - 1; /* not the final NUL */

	f = new_ino(s);
	c = change_of(f, STORE_ROOT_INO, "m.json", &m);
	CHECK_EQ(store_apply(s, &c, 1), 0);

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
	CHECK_EQ(store_apply(s, &c, 1), 0);
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
	c = change_of(new_ino(s), STORE_ROOT_INO, "dir", &m);
	CHECK_EQ(store_apply(s, &c, 1), 0);
	CHECK_EQ(s->ops->get(s, c.ino, &row), 0);
	CHECK(meta_equal(&row.meta, &m));
	CHECK_EQ(item_meta_copy(&back, &row.meta), 0);
	store_row_release(&row);
	CHECK(meta_equal(&back, &m));
	item_meta_release(&back);
	store_free(s);
}

/* scan() walks every entry but the root, in ino order, in pages. */
static void test_scan(void)
{
	struct store *s = open_ok();
	struct store_key keys[3];
	uint64_t d, f[5], after = 0, seen = 0;
	char name[16];
	int n;

	d = put_dir(s, new_ino(s), STORE_ROOT_INO, "sd");
	for (int i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "f\xc3\xa9%d", i);
		f[i] = put_file(s, new_ino(s), d, name, ITEM_BINARY, "x", 1);
	}
	while ((n = s->ops->scan(s, after, keys, 3)) > 0) {
		for (int i = 0; i < n; i++) {
			CHECK(keys[i].ino > after);
			after = keys[i].ino;
			if (keys[i].ino == d) {
				CHECK_EQ(keys[i].parent, STORE_ROOT_INO);
				CHECK(strcmp(keys[i].name, "sd") == 0);
			}
			for (int j = 0; j < 5; j++) {
				if (keys[i].ino != f[j])
					continue;
				snprintf(name, sizeof(name), "f\xc3\xa9%d", j);
				CHECK_EQ(keys[i].parent, d);
				CHECK(strcmp(keys[i].name, name) == 0);
			}
			CHECK(keys[i].ino != STORE_ROOT_INO);
			seen++;
		}
	}
	CHECK_EQ(n, 0);
	CHECK(seen >= 6);
	CHECK_EQ(s->ops->scan(s, after, keys, 3), 0);
	store_free(s);
}

static void test_stats(void)
{
	struct store *s = open_fresh();
	struct item_meta m = meta_of(ITEM_BINARY, 1000);
	struct store_change c;
	uint64_t d1, d2, f3, entries = 0, bytes = 0;

	d1 = put_dir(s, new_ino(s), STORE_ROOT_INO, "d1");
	d2 = put_dir(s, new_ino(s), d1, "d2");
	put_file(s, new_ino(s), d1, "ten", ITEM_BINARY, "0123456789", 10);
	put_file(s, new_ino(s), d2, "zero.json", ITEM_JSON, "", 0);
	/* sizes come from the rows, not from content */
	f3 = new_ino(s);
	c = change_of(f3, d2, "k", &m);
	CHECK_EQ(store_apply(s, &c, 1), 0);

	CHECK_EQ(s->ops->stats(s, &entries, &bytes), 0);
	CHECK_EQ(entries, 5);
	CHECK_EQ(bytes, 1010);

	c = delete_of(f3);
	CHECK_EQ(store_apply(s, &c, 1), 0);
	CHECK_EQ(s->ops->stats(s, &entries, &bytes), 0);
	CHECK_EQ(entries, 4);
	CHECK_EQ(bytes, 10);
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

/* The statements must be able to use the (parent, name) index and never
 * sort: bytea needs no collation. */
static void test_query_plans(void)
{
	static const char *const queries[] = {
		("SELECT * FROM entries WHERE parent = 1 AND name > 'a'::bytea"
		 " ORDER BY name LIMIT 10"),
		"SELECT * FROM entries WHERE parent = 1 AND name = 'a'::bytea",
		"SELECT 1 FROM entries WHERE parent = 1 LIMIT 1",
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

			if (strstr(d, "entries_parent_name"))
				indexed = true;
			if (strstr(d, "Sort"))
				sorted = true;
		}
		PQclear(res);
		CHECK(indexed);
		CHECK(!sorted);
	}
	admin_exec("RESET enable_seqscan");
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
	struct store_change c;

	for (int i = 0; i < 8; i++) {
		args[i] = (struct reader_arg){.s = s, .dir = d};
		CHECK_EQ(pthread_create(&th[i], NULL, reader_main, &args[i]),
			 0);
	}
	for (int i = 0; i < 100; i++) {
		if (i % 2 == 0) {
			c = change_of(t, d, "toggle", &m);
			c.has_data = true;
			c.data = "abc";
			c.len = 3;
		} else {
			c = delete_of(t);
		}
		CHECK_EQ(store_apply(s, &c, 1), 0);
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
	struct item_meta m[NRACE];
	struct store_change c[NRACE];
	char data[NRACE][32];
	char names[NRACE][16];

	for (int round = 0; round < 30; round++) {
		int err;

		for (int i = 0; i < NRACE; i++) {
			/* writer 1 also swaps names pairwise every round */
			int k = a->id == 1 && round % 2 ? i ^ 1 : i;
			int len;

			len = snprintf(data[i], sizeof(data[i]), "v%d",
				       a->id * 1000 + round);
			m[i] = meta_of(ITEM_BINARY, (uint64_t)len);
			m[i].version = (uint64_t)(a->id * 1000 + round);
			snprintf(names[i], sizeof(names[i]), "f%02d", k);
			c[i] = change_of(a->inos[i], a->dir, names[i], &m[i]);
			c[i].has_data = true;
			c[i].data = data[i];
			c[i].len = (size_t)len;
		}
		err = store_apply(a->s, c, NRACE);
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

	/* every ino once, every name once, each row with its own content */
	n = s->ops->list(s, d, "", rows, NRACE + 1);
	CHECK_EQ(n, NRACE);
	for (int i = 0; i < n; i++) {
		char want[32];
		int len = snprintf(want, sizeof(want), "v%llu",
				   (unsigned long long)rows[i].meta.version);

		CHECK(rows[i].meta.version >= 1000);
		check_content(s, rows[i].ino, want, (size_t)len);
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
	struct store_change c;
	struct store_row row;
	uint64_t d, t, ino = 0;
	double deadline;

	d = put_dir(s, new_ino(s), STORE_ROOT_INO, "d");
	t = new_ino(s);
	run_readers(s, d, t); /* fills the pool */
	CHECK(admin_int("SELECT count(*) FROM pg_stat_activity"
			" WHERE application_name = 'tierfs'") > 1);

	/* the server drops every connection of the store (a restart) */
	admin_exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
		   " WHERE application_name = 'tierfs'");
	deadline = now_s() + 10;
	while (admin_int("SELECT count(*) FROM pg_stat_activity"
			 " WHERE application_name = 'tierfs'") > 0)
		CHECK(now_s() < deadline);

	/* each operation finds a dead connection and tries a new one */
	log_reset();
	CHECK_EQ(s->ops->get(s, STORE_ROOT_INO, &row), 0);
	store_row_release(&row);
	CHECK(nlogs > 0); /* the lost connection was noticed */
	c = change_of(new_ino(s), d, "after", &m);
	c.has_data = true;
	c.data = "x";
	c.len = 1;
	CHECK_EQ(store_apply(s, &c, 1), 0);
	CHECK_EQ(s->ops->alloc_ino(s, 3, &ino), 0);
	CHECK_EQ(lookup_ino(s, d, "after"), c.ino);
	check_content(s, c.ino, "x", 1);
	run_readers(s, d, t);
	store_free(s);
}

/* ---- a batch of 2000 rows ---- */

#define NBATCH 2000

static void test_big_batch(void)
{
	static struct item_meta m[NBATCH];
	static struct store_change c[NBATCH];
	static char names[NBATCH][16];
	static char data[NBATCH][100];
	struct store *s = open_fresh();
	struct store_row rows[16];
	char after[STORE_NAME_MAX + 1] = "";
	uint64_t first = 0, d, entries, bytes;
	double t0, t1, t2;
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
		c[i] = change_of(first + (uint64_t)i, d, names[i], &m[i]);
		c[i].has_data = true;
		c[i].data = data[i];
		c[i].len = sizeof(data[i]);
	}

	/* the last row collides: none of the 2000 is written */
	c[NBATCH - 1].name = names[0];
	CHECK_EQ(store_apply(s, c, NBATCH), -EEXIST);
	CHECK_EQ(s->ops->has_children(s, d), 0);
	CHECK_EQ(admin_int("SELECT count(*) FROM contents"), 0);
	c[NBATCH - 1].name = names[NBATCH - 1];

	t0 = now_s();
	CHECK_EQ(store_apply(s, c, NBATCH), 0);
	t1 = now_s();
	/* a metadata-only rewrite of every row (a rename, chmod, touch) */
	for (int i = 0; i < NBATCH; i++) {
		m[i].version = 2;
		c[i].has_data = false;
	}
	CHECK_EQ(store_apply(s, c, NBATCH), 0);
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
	CHECK_EQ(store_apply(s, c, NBATCH), 0);
	CHECK_EQ(s->ops->has_children(s, d), 0);
	CHECK_EQ(admin_int("SELECT count(*) FROM contents"), 0);
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
	test_listing();
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
	CHECK_EQ(secret_leaks, 0);

	reset_schema();
	PQfinish(admin);
	printf("ok\n");
	return 0;
}
