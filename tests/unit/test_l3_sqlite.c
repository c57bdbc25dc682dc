/*
 * test_l3_sqlite.c - unit tests of the SQLite L3 store (engine/l3_sqlite.c).
 *
 * Every test opens its own database file in a private mkdtemp() directory,
 * which is removed at exit. Exit status: 0 passed, 1 failed, 77 skipped.
 * Set TEST_VERBOSE=1 to see the store's log lines.
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

#include "check.h"
#include "store_helpers.h"

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

static void log_fn(void *arg, int level, const char *msg)
{
	pthread_mutex_lock(&log_lock);
	snprintf(last_log, sizeof(last_log), "%s", msg);
	nlogs++;
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

static void check_content(struct store *s, uint64_t ino, const void *want,
			  size_t len)
{
	void *data = (void *)1;
	size_t got = 12345;

	CHECK_EQ(s->ops->read(s, ino, &data, &got), 0);
	CHECK_EQ(got, len);
	if (len)
		CHECK(data && memcmp(data, want, len) == 0);
	free(data);
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

static void test_listing(void)
{
	struct store *s = open_ok("list.db");
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
	struct store *s = open_ok("names.db");
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

static void test_content(void)
{
	static const char nuls[] = {'a', 0, 'b', 0, 0, 'c', 0};
	struct store *s = open_ok("content.db");
	struct item_meta m;
	struct store_change c;
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
	struct store *s = open_ok("atomic.db");
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

	CHECK_EQ(s->ops->stats(s, &entries, &bytes), 0);
	CHECK_EQ(entries, 2);
	CHECK_EQ(bytes, 6);

	/* the writer is usable after a failed batch */
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
	struct store *s = open_ok("stem.db");
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

static long long content_rows(const char *path, uint64_t ino)
{
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
	struct item_meta m = meta_of(ITEM_BINARY, 4);
	struct store_change c[2];
	struct store_row row;
	uint64_t d, f, g, entries, bytes;
	void *data;
	size_t len;

	d = put_dir(s, new_ino(s), STORE_ROOT_INO, "d");
	f = put_file(s, new_ino(s), d, "f", ITEM_BINARY, "data", 4);
	g = put_file(s, new_ino(s), d, "g", ITEM_BINARY, "more", 4);
	CHECK_EQ(content_rows(db_path("delete.db"), f), 1);

	c[0] = delete_of(f);
	CHECK_EQ(store_apply(s, c, 1), 0);
	CHECK_EQ(s->ops->get(s, f, &row), -ENOENT);
	CHECK_EQ(lookup_ino(s, d, "f"), -ENOENT);
	CHECK_EQ(s->ops->read(s, f, &data, &len), -ENOENT);
	CHECK_EQ(content_rows(db_path("delete.db"), f), 0);
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
	struct store *s = open_ok("meta.db");
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
	struct store *s = open_ok("scan.db");
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
	struct store *s = open_ok("stats.db");
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

/* The statements must use the (parent, name) index and never sort. */
static void test_query_plans(void)
{
	static const char *const queries[] = {
		("SELECT * FROM entries WHERE parent = ?1 AND name > ?2"
		 " ORDER BY name LIMIT ?3"),
		"SELECT * FROM entries WHERE parent = ?1 AND name = ?2",
		"SELECT 1 FROM entries WHERE parent = ?1 LIMIT 1",
	};
	struct store *s = open_ok("plan.db");
	sqlite3 *db = NULL;

	store_free(s);
	CHECK_EQ(sqlite3_open(db_path("plan.db"), &db), SQLITE_OK);
	for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++) {
		char sql[256];
		sqlite3_stmt *st = NULL;
		bool indexed = false, sorted = false;

		snprintf(sql, sizeof(sql), "EXPLAIN QUERY PLAN %s", queries[i]);
		CHECK_EQ(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
		while (sqlite3_step(st) == SQLITE_ROW) {
			const char *d =
				(const char *)sqlite3_column_text(st, 3);

			if (d && strstr(d, "entries_parent_name"))
				indexed = true;
			if (d && strstr(d, "TEMP B-TREE"))
				sorted = true;
		}
		sqlite3_finalize(st);
		CHECK(indexed);
		CHECK(!sorted);
	}
	sqlite3_close(db);
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
	struct store_change c;
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
	printf("ok\n");
	return 0;
}
