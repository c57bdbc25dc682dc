/*
 * store_helpers.h - helpers shared by the store tests (test_l3_sqlite.c,
 * test_l3_pg.c): building metadata and changes, writing entries, looking
 * them up, checking content, comparing metadata, checking a paged listing,
 * and the cases both backends must pass alike (case_*: listing, names
 * refused, renames and swaps, all-or-nothing batches, stems, deletes,
 * scan, stats, golden Merkle hashes). Each test program calls a case through a
 * short wrapper that opens its own kind of store.
 *
 * Header-only (each test is its own program); include it after check.h.
 * Everything is static inline, so a program need not use every helper.
 */
#ifndef TIERFS_TEST_STORE_HELPERS_H
#define TIERFS_TEST_STORE_HELPERS_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "change_helpers.h"
#include "check.h"
#include "store.h"

static inline uint64_t new_ino(struct store *s)
{
	uint64_t ino = 0;

	CHECK_EQ(s->ops->alloc_ino(s, 1, &ino), 0);
	CHECK(ino >= 2);
	return ino;
}

static inline struct item_meta meta_of(enum item_kind kind, uint64_t size)
{
	struct item_meta m;

	memset(&m, 0, sizeof(m));
	m.kind = kind;
	m.size = size;
	m.version = 1;
	m.mtime_ns = 1700000000123456789LL;
	m.atime_ns = 1600000000555555555LL;
	m.ctime_ns = 1700000000987654321LL;
	m.mode = kind == ITEM_DIR ? S_IFDIR | 0755 : S_IFREG | 0644;
	m.uid = 1000;
	m.gid = 1000;
	m.explicit_dir = kind == ITEM_DIR;
	return m;
}

/* Applies the @n changes @c[0..n) and frees them (each set to NULL);
 * returns what apply() did. */
static inline int apply_changes(struct store *s, struct change **c, size_t n)
{
	int err = store_apply(s, c, n);

	changes_free(c, n);
	return err;
}

/* apply_changes() of one change. */
static inline int apply_one(struct store *s, struct change *c)
{
	return apply_changes(s, &c, 1);
}

/* Creates (or overwrites) directory @name in @parent. */
static inline uint64_t put_dir(struct store *s, uint64_t ino, uint64_t parent,
			       const char *name)
{
	struct item_meta m = meta_of(ITEM_DIR, 0);

	CHECK_EQ(apply_one(s, change_of(ino, parent, name, &m)), 0);
	return ino;
}

/* Creates (or overwrites) file @name with content @data. */
static inline uint64_t put_file(struct store *s, uint64_t ino, uint64_t parent,
				const char *name, enum item_kind kind,
				const void *data, size_t len)
{
	struct item_meta m = meta_of(kind, len);

	CHECK_EQ(apply_one(s, data_change_of(ino, parent, name, &m, data, len)),
		 0);
	return ino;
}

/* A change that writes file @name with content @data, filling *@m with
 * meta_of() and the content's hash, as the engine does: a store takes a
 * file's Merkle hash from meta.hash. */
static inline struct change *hashed_change_of(uint64_t ino, uint64_t parent,
					      const char *name,
					      struct item_meta *m,
					      enum item_kind kind,
					      const void *data, size_t len)
{
	*m = meta_of(kind, len);
	item_hash(len ? data : "", len, m->hash);
	return data_change_of(ino, parent, name, m, data, len);
}

/* Returns the ino of @name in @parent, or a negative errno. */
static inline long long lookup_ino(struct store *s, uint64_t parent,
				   const char *name)
{
	struct store_row r;
	int err = s->ops->lookup(s, parent, name, &r);

	if (err)
		return err;
	CHECK_EQ(r.parent, parent);
	CHECK(strcmp(r.name, name) == 0);
	store_row_release(&r);
	return (long long)r.ino;
}

/* Checks that file @ino holds exactly @len bytes @want (no buffer when
 * @len is 0). */
static inline void check_content(struct store *s, uint64_t ino,
				 const void *want, size_t len)
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

/* read_many(): the contents of many files in one call, byte for byte (NULs,
 * empty, no content row), missing inos left out, the bound refused. */
static inline void case_read_many(struct store *s)
{
	static const char nuls[] = {'a', 0, 'b', 0, 0, 'c', 0};
	struct store_blob out[STORE_READ_MANY_MAX];
	uint64_t inos[STORE_READ_MANY_MAX + 1];
	uint64_t dir = put_dir(s, new_ino(s), STORE_ROOT_INO, "many");
	uint64_t f_nul, f_empty, f_nodata, missing;
	struct item_meta m = meta_of(ITEM_BINARY, 0);
	char name[32], want[32];
	size_t nfiles = 200, seen = 0;
	int got;

	/* 200 files f000..f199 holding "content <i>" */
	for (size_t i = 0; i < nfiles; i++) {
		snprintf(name, sizeof(name), "f%03zu", i);
		snprintf(want, sizeof(want), "content %zu", i);
		inos[i] = put_file(s, new_ino(s), dir, name, ITEM_BINARY, want,
				   strlen(want));
	}
	got = s->ops->read_many(s, inos, nfiles, out);
	CHECK_EQ(got, (int)nfiles);
	for (int k = 0; k < got; k++) {
		size_t i;

		for (i = 0; i < nfiles && inos[i] != out[k].ino; i++)
			;
		CHECK(i < nfiles);
		snprintf(want, sizeof(want), "content %zu", i);
		CHECK_EQ(out[k].len, strlen(want));
		CHECK(memcmp(out[k].data, want, out[k].len) == 0);
		free(out[k].data);
	}

	/* NULs, empty content, no content row, a missing ino, a directory */
	f_nul = put_file(s, new_ino(s), dir, "nuls", ITEM_BINARY, nuls,
			 sizeof(nuls));
	f_empty = put_file(s, new_ino(s), dir, "empty.json", ITEM_JSON, NULL,
			   0);
	f_nodata = new_ino(s);
	CHECK_EQ(apply_one(s, change_of(f_nodata, dir, "nodata", &m)), 0);
	missing = new_ino(s); /* reserved, never created */
	inos[0] = f_nul;
	inos[1] = missing;
	inos[2] = f_empty;
	inos[3] = f_nodata;
	inos[4] = dir;
	got = s->ops->read_many(s, inos, 5, out);
	CHECK_EQ(got, 4);
	for (int k = 0; k < got; k++) {
		CHECK(out[k].ino != missing);
		if (out[k].ino == f_nul) {
			CHECK_EQ(out[k].len, sizeof(nuls));
			CHECK(memcmp(out[k].data, nuls, sizeof(nuls)) == 0);
			seen++;
		} else {
			CHECK_EQ(out[k].len, 0);
			CHECK(out[k].data == NULL);
		}
		free(out[k].data);
	}
	CHECK_EQ(seen, 1);

	/* nothing asked, nothing read; beyond the bound: refused */
	CHECK_EQ(s->ops->read_many(s, inos, 0, out), 0);
	for (size_t i = 0; i <= STORE_READ_MANY_MAX; i++)
		inos[i] = f_nul;
	CHECK_EQ(s->ops->read_many(s, inos, STORE_READ_MANY_MAX + 1, out),
		 -EINVAL);
	/* a deleted file is gone from it too */
	CHECK_EQ(apply_one(s, delete_of(f_nul)), 0);
	CHECK_EQ(s->ops->read_many(s, &f_nul, 1, out), 0);
}

/* Whether @a and @b are the same metadata: a NULL and an empty state are
 * the same, and so are NULL and empty xattrs. */
static inline bool meta_equal(const struct item_meta *a,
			      const struct item_meta *b)
{
	size_t alen = a->xattrs ? a->xattrs_len : 0;
	size_t blen = b->xattrs ? b->xattrs_len : 0;
	const char *as = a->state && a->state[0] ? a->state : NULL;
	const char *bs = b->state && b->state[0] ? b->state : NULL;

	return a->kind == b->kind && a->size == b->size &&
	       memcmp(a->hash, b->hash, ITEM_HASH_LEN) == 0 &&
	       a->version == b->version && a->mtime_ns == b->mtime_ns &&
	       a->atime_ns == b->atime_ns &&
	       a->ctime_ns == b->ctime_ns && a->mode == b->mode &&
	       a->uid == b->uid && a->gid == b->gid &&
	       a->explicit_dir == b->explicit_dir &&
	       (as == bs || (as && bs && strcmp(as, bs) == 0)) &&
	       alen == blen &&
	       (!alen || memcmp(a->xattrs, b->xattrs, alen) == 0);
}

static inline int cmp_names(const void *a, const void *b)
{
	/* strcmp compares as unsigned char: memcmp order, shorter first */
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Checks the pages of list_by_ino() of @parent (of @page rows) against
 * @want (sorted): every name once, in rising inode numbers, each with the
 * inode number list() gave it (@inos, in @want's order); the listing of
 * names holds the same rows with the inode number, parent, name, kind
 * and mode of the whole rows and nothing else. */
static inline void check_listing_by_ino(struct store *s, uint64_t parent,
					size_t page, const char **want,
					const uint64_t *inos, size_t nwant)
{
	static const uint8_t zero[ITEM_HASH_LEN];
	struct store_row rows[16], names[16];
	uint64_t after = 0;
	size_t seen = 0;
	int n;

	for (;;) {
		n = s->ops->list_by_ino(s, parent, after, false, rows, page);
		CHECK(n >= 0 && (size_t)n <= page);
		CHECK_EQ(s->ops->list_by_ino(s, parent, after, true, names,
					     page),
			 n);
		if (n == 0)
			break;
		for (int i = 0; i < n; i++) {
			const char *key = rows[i].name, **w;

			CHECK(rows[i].ino > after);
			after = rows[i].ino;
			w = bsearch(&key, want, nwant, sizeof(*want),
				    cmp_names);
			CHECK(w != NULL);
			CHECK_EQ(inos[w - want], rows[i].ino);
			CHECK_EQ(rows[i].parent, parent);
			CHECK(strcmp(names[i].name, rows[i].name) == 0);
			CHECK_EQ(names[i].ino, rows[i].ino);
			CHECK_EQ(names[i].parent, parent);
			CHECK_EQ(names[i].meta.kind, rows[i].meta.kind);
			CHECK_EQ(names[i].meta.mode,
				 rows[i].meta.mode & (uint32_t)S_IFMT);
			CHECK_EQ(names[i].meta.version, 0);
			CHECK_EQ(names[i].meta.size, 0);
			CHECK(memcmp(names[i].meta.hash, zero, sizeof(zero)) ==
			      0);
			CHECK(!names[i].meta.state && !names[i].meta.xattrs);
			seen++;
		}
		for (int i = 0; i < n; i++) {
			store_row_release(&rows[i]);
			store_row_release(&names[i]);
		}
	}
	CHECK_EQ(seen, nwant);
}

/* Lists all children of @parent in pages of @page and checks them against
 * @want (sorted), and each row's ino against a lookup of its name; then
 * the same children in inode order (check_listing_by_ino()). */
static inline void check_listing(struct store *s, uint64_t parent, size_t page,
				 const char **want, size_t nwant)
{
	struct store_row rows[16];
	char after[STORE_NAME_MAX + 1] = "";
	uint64_t *inos = calloc(nwant ? nwant : 1, sizeof(*inos));
	size_t seen = 0;
	int n;

	CHECK(page <= 16);
	CHECK(inos != NULL);
	for (;;) {
		n = s->ops->list(s, parent, after, rows, page);
		CHECK(n >= 0 && (size_t)n <= page);
		if (n == 0)
			break;
		for (int i = 0; i < n; i++) {
			CHECK(seen < nwant);
			CHECK(strcmp(rows[i].name, want[seen]) == 0);
			CHECK_EQ(rows[i].parent, parent);
			CHECK_EQ(lookup_ino(s, parent, rows[i].name),
				 rows[i].ino);
			inos[seen++] = rows[i].ino;
		}
		snprintf(after, sizeof(after), "%s", rows[n - 1].name);
		for (int i = 0; i < n; i++)
			store_row_release(&rows[i]);
	}
	CHECK_EQ(seen, nwant);
	check_listing_by_ino(s, parent, page, want, inos, nwant);
	free(inos);
}

/* ---- cases run by both backends ----
 *
 * Each takes a store opened on an empty database (only the root), borrows
 * it (the caller frees it) and fails the test on the first wrong answer.
 */

static inline void case_listing(struct store *s)
{
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
}

/* Applies a good change of @fine with @bad after it: the batch is
 * refused whole. */
static inline void check_refused(struct store *s, uint64_t fine,
				 struct change *bad)
{
	struct item_meta m = meta_of(ITEM_BINARY, 0);
	struct change *c[2] = {change_of(fine, STORE_ROOT_INO, "fine", &m),
			       bad};

	CHECK_EQ(apply_changes(s, c, 2), -EINVAL);
}

static inline void case_names_refused(struct store *s)
{
	struct item_meta m = meta_of(ITEM_BINARY, 0);
	char toolong[STORE_NAME_MAX + 2];
	struct change *c[1], *noname;
	uint64_t fine = new_ino(s), ino = new_ino(s);

	memset(toolong, 'x', sizeof(toolong) - 1);
	toolong[sizeof(toolong) - 1] = '\0';

	check_refused(s, fine, change_of(ino, STORE_ROOT_INO, "a/b", &m));
	check_refused(s, fine, change_of(ino, STORE_ROOT_INO, toolong, &m));
	check_refused(s, fine, change_of(ino, STORE_ROOT_INO, "", &m));
	check_refused(s, fine, change_of(0, STORE_ROOT_INO, "zero", &m));
	noname = change_of(ino, STORE_ROOT_INO, "noname", &m);
	free(noname->name);
	noname->name = NULL;
	check_refused(s, fine, noname);
	check_refused(s, fine,
		      change_of(1ULL << 63, STORE_ROOT_INO, "huge", &m));
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
	CHECK_EQ(apply_changes(s, c, 1), 0);
	CHECK_EQ(lookup_ino(s, 0, ""), STORE_ROOT_INO);
	{
		struct store_row r;

		CHECK_EQ(s->ops->get(s, STORE_ROOT_INO, &r), 0);
		CHECK_EQ(r.meta.mode, S_IFDIR | 0700);
		CHECK_EQ(r.name[0], '\0');
		store_row_release(&r);
	}
}

static inline void case_rename_and_swap(struct store *s)
{
	struct item_meta mf = meta_of(ITEM_BINARY, 3);
	struct item_meta mj = meta_of(ITEM_JSON, 2);
	struct item_meta md = meta_of(ITEM_DIR, 0);
	struct change *c[3];
	uint64_t d1, d2, f, p, q, r, child;

	d1 = put_dir(s, new_ino(s), STORE_ROOT_INO, "d1");
	d2 = put_dir(s, new_ino(s), STORE_ROOT_INO, "d2");
	f = put_file(s, new_ino(s), STORE_ROOT_INO, "old", ITEM_BINARY, "abc",
		     3);
	child = put_file(s, new_ino(s), d1, "child", ITEM_BINARY, "c", 1);

	/* rename a file into another directory: same ino, content kept */
	c[0] = change_of(f, d2, "new", &mf);
	CHECK_EQ(apply_changes(s, c, 1), 0);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "old"), -ENOENT);
	CHECK_EQ(lookup_ino(s, d2, "new"), f);
	check_content(s, f, "abc", 3);

	/* rename a directory: its subtree moves with it */
	c[0] = change_of(d1, d2, "moved", &md);
	CHECK_EQ(apply_changes(s, c, 1), 0);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "d1"), -ENOENT);
	CHECK_EQ(lookup_ino(s, d2, "moved"), d1);
	CHECK_EQ(lookup_ino(s, d1, "child"), child);

	/* a swap of two names in one batch */
	p = put_file(s, new_ino(s), STORE_ROOT_INO, "p", ITEM_BINARY, "P", 1);
	q = put_file(s, new_ino(s), STORE_ROOT_INO, "q", ITEM_BINARY, "Q", 1);
	c[0] = change_of(p, STORE_ROOT_INO, "q", &mf);
	c[1] = change_of(q, STORE_ROOT_INO, "p", &mf);
	CHECK_EQ(apply_changes(s, c, 2), 0);
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
	CHECK_EQ(apply_changes(s, c, 3), 0);
	CHECK_EQ(lookup_ino(s, d2, "1.json"), r);
	CHECK_EQ(lookup_ino(s, d2, "2.json"), p);
	CHECK_EQ(lookup_ino(s, d2, "3.json"), q);

	/* rename over an existing name: the batch deletes the target */
	c[0] = delete_of(r);
	c[1] = change_of(p, d2, "1.json", &mj);
	CHECK_EQ(apply_changes(s, c, 2), 0);
	CHECK_EQ(lookup_ino(s, d2, "1.json"), p);
	CHECK_EQ(lookup_ino(s, d2, "2.json"), -ENOENT);
	CHECK_EQ(s->ops->get(s, r, &(struct store_row){0}), -ENOENT);
}

static inline void case_all_or_nothing(struct store *s)
{
	struct item_meta m1 = meta_of(ITEM_BINARY, 7);
	struct item_meta m2 = meta_of(ITEM_BINARY, 5);
	struct item_meta mn = meta_of(ITEM_BINARY, 5);
	struct change *c[4];
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
	c[0] = data_change_of(fresh, STORE_ROOT_INO, "fresh", &mn, "fresh", 5);
	c[1] = data_change_of(k1, STORE_ROOT_INO, "keep1", &m1, "changed", 7);
	c[2] = change_of(k2, STORE_ROOT_INO, "keep1", &m2);
	CHECK_EQ(apply_changes(s, c, 3), -EEXIST);

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
	CHECK_EQ(apply_changes(s, c, 2), -EEXIST);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "twin"), -ENOENT);

	/* a delete and two creates that collide: the delete is undone too
	 * (a create onto a name the batch does not change is a race, which
	 * replaces the entry: store_feed_cases.h) */
	c[0] = delete_of(k2);
	c[1] = change_of(fresh, STORE_ROOT_INO, "twin", &mn);
	c[2] = change_of(fresh2, STORE_ROOT_INO, "twin", &mn);
	CHECK_EQ(apply_changes(s, c, 3), -EEXIST);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "keep2"), k2);
	check_content(s, k2, "two", 3);

	/* the same ino twice in one batch is refused */
	c[0] = change_of(fresh, STORE_ROOT_INO, "x1", &mn);
	c[1] = change_of(fresh, STORE_ROOT_INO, "x2", &mn);
	CHECK_EQ(apply_changes(s, c, 2), -EEXIST);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "x1"), -ENOENT);

	CHECK_EQ(s->ops->stats(s, &entries, &bytes), 0);
	CHECK_EQ(entries, 2);
	CHECK_EQ(bytes, 6);

	/* the store is usable after a failed batch */
	c[0] = data_change_of(fresh, STORE_ROOT_INO, "fresh", &mn, "fresh", 5);
	CHECK_EQ(apply_changes(s, c, 1), 0);
	check_content(s, fresh, "fresh", 5);
}

static inline void case_stems(struct store *s)
{
	struct item_meta mb = meta_of(ITEM_BINARY, 0);
	struct item_meta mj = meta_of(ITEM_JSON, 0);
	struct item_meta md = meta_of(ITEM_DIR, 0);
	struct change *c[2];
	uint64_t bin_x, d_other, jx, dz, jz, jy, by, dx;

	bin_x = put_file(s, new_ino(s), STORE_ROOT_INO, "x", ITEM_BINARY, "b",
			 1);
	/* binary "x" and JSON "x.json" would both be the item "x" (here both
	 * in the batch: an entry the batch does not change would be replaced,
	 * a race, store_feed_cases.h) */
	c[0] = change_of(bin_x, STORE_ROOT_INO, "x", &mb);
	c[1] = change_of(new_ino(s), STORE_ROOT_INO, "x.json", &mj);
	CHECK_EQ(apply_changes(s, c, 2), -EEXIST);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "x.json"), -ENOENT);

	/* the same in one batch, in either order */
	jy = new_ino(s);
	by = new_ino(s);
	c[0] = change_of(jy, STORE_ROOT_INO, "y.json", &mj);
	c[1] = change_of(by, STORE_ROOT_INO, "y", &mb);
	CHECK_EQ(apply_changes(s, c, 2), -EEXIST);
	c[0] = change_of(by, STORE_ROOT_INO, "y", &mb);
	c[1] = change_of(jy, STORE_ROOT_INO, "y.json", &mj);
	CHECK_EQ(apply_changes(s, c, 2), -EEXIST);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "y"), -ENOENT);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "y.json"), -ENOENT);

	/* in another directory the same stem is fine */
	d_other = put_dir(s, new_ino(s), STORE_ROOT_INO, "other");
	jx = new_ino(s);
	c[0] = change_of(jx, d_other, "x.json", &mj);
	CHECK_EQ(apply_changes(s, c, 1), 0);

	/* JSON "z.json" beside directory "z", created in either order */
	dz = put_dir(s, new_ino(s), STORE_ROOT_INO, "z");
	jz = new_ino(s);
	c[0] = change_of(jz, STORE_ROOT_INO, "z.json", &mj);
	CHECK_EQ(apply_changes(s, c, 1), 0);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "z"), dz);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "z.json"), jz);
	dx = new_ino(s);
	c[0] = change_of(dx, d_other, "x", &md);
	CHECK_EQ(apply_changes(s, c, 1), 0);

	/* but not directory "z.json" beside JSON "z.json" (one name) */
	c[0] = change_of(jz, STORE_ROOT_INO, "z.json", &mj);
	c[1] = change_of(new_ino(s), STORE_ROOT_INO, "z.json", &md);
	CHECK_EQ(apply_changes(s, c, 2), -EEXIST);
	/* nor binary "x" beside directory "x" */
	c[0] = change_of(dx, d_other, "x", &md);
	c[1] = change_of(new_ino(s), d_other, "x", &mb);
	CHECK_EQ(apply_changes(s, c, 2), -EEXIST);
	CHECK_EQ(lookup_ino(s, d_other, "x"), dx);

	/* replacing binary "x" by JSON "x.json" in one batch is fine */
	jx = new_ino(s);
	c[0] = delete_of(bin_x);
	c[1] = change_of(jx, STORE_ROOT_INO, "x.json", &mj);
	CHECK_EQ(apply_changes(s, c, 2), 0);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "x"), -ENOENT);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "x.json"), jx);

	/* and renaming the JSON item to a binary name with its stem too */
	c[0] = change_of(jx, STORE_ROOT_INO, "x", &mb);
	CHECK_EQ(apply_changes(s, c, 1), 0);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "x"), jx);
}

/* Returns how many content rows the database holds for @ino, -1 if it
 * cannot tell; @arg is what the test passed to case_delete(). */
typedef long long (*content_rows_fn)(void *arg, uint64_t ino);

static inline void case_delete(struct store *s, content_rows_fn content_rows,
			       void *arg)
{
	struct item_meta m = meta_of(ITEM_BINARY, 4);
	struct change *c[2];
	struct store_row row;
	uint64_t d, f, g, entries, bytes;
	void *data;
	size_t len;

	d = put_dir(s, new_ino(s), STORE_ROOT_INO, "d");
	f = put_file(s, new_ino(s), d, "f", ITEM_BINARY, "data", 4);
	g = put_file(s, new_ino(s), d, "g", ITEM_BINARY, "more", 4);
	CHECK_EQ(content_rows(arg, f), 1);

	c[0] = delete_of(f);
	CHECK_EQ(apply_changes(s, c, 1), 0);
	CHECK_EQ(s->ops->get(s, f, &row), -ENOENT);
	CHECK_EQ(lookup_ino(s, d, "f"), -ENOENT);
	CHECK_EQ(s->ops->read(s, f, &data, &len), -ENOENT);
	CHECK_EQ(content_rows(arg, f), 0);
	check_content(s, g, "more", 4);

	/* a row written again without data does not bring content back */
	c[0] = change_of(f, d, "f", &m);
	CHECK_EQ(apply_changes(s, c, 1), 0);
	check_content(s, f, NULL, 0);

	/* deleting what is not there is not an error */
	c[0] = delete_of(987654);
	CHECK_EQ(apply_changes(s, c, 1), 0);

	c[0] = delete_of(f);
	c[1] = delete_of(g);
	CHECK_EQ(apply_changes(s, c, 2), 0);
	CHECK_EQ(content_rows(arg, g), 0);
	CHECK_EQ(s->ops->has_children(s, d), 0);
	CHECK_EQ(s->ops->stats(s, &entries, &bytes), 0);
	CHECK_EQ(entries, 1);
	CHECK_EQ(bytes, 0);
	c[0] = delete_of(d);
	CHECK_EQ(apply_changes(s, c, 1), 0);
	CHECK_EQ(s->ops->has_children(s, STORE_ROOT_INO), 0);
}

/* scan() walks every entry but the root, in ino order, in pages: on a
 * fresh store, the directory and its 5 files, each once. */
/* count_subdirs() counts only directories, only @parent's, and leaves out
 * the inos asked; longest_id_below() measures escaped IDs ('.' and '%'
 * take 3 bytes, a JSON file's segment is its stem) and skips the subtrees
 * asked. */
static inline void case_counts(struct store *s)
{
	uint64_t top = put_dir(s, new_ino(s), STORE_ROOT_INO, "top");
	uint64_t d1 = put_dir(s, new_ino(s), top, "d1");
	uint64_t d2 = put_dir(s, new_ino(s), top, "a.b%c"); /* 9 escaped */
	uint64_t deep = put_dir(s, new_ino(s), d2, "deep");
	uint64_t except[2], v;

	put_file(s, new_ino(s), top, "f.json", ITEM_JSON, "1", 1);
	put_dir(s, new_ino(s), d1, "x");
	put_file(s, new_ino(s), deep, "leaf.v1.json", ITEM_JSON, "2", 1);
	CHECK_EQ(s->ops->count_subdirs(s, top, NULL, 0, &v), 0);
	CHECK_EQ(v, 2);
	except[0] = d1;
	except[1] = 999999;
	CHECK_EQ(s->ops->count_subdirs(s, top, except, 2, &v), 0);
	CHECK_EQ(v, 1);
	CHECK_EQ(s->ops->count_subdirs(s, deep, NULL, 0, &v), 0);
	CHECK_EQ(v, 0);
	/* a%2Eb%25c.deep.leaf%2Ev1 */
	CHECK_EQ(s->ops->longest_id_below(s, top, NULL, 0, &v), 0);
	CHECK_EQ(v, 9 + 1 + 4 + 1 + 9);
	except[0] = deep;
	CHECK_EQ(s->ops->longest_id_below(s, top, except, 1, &v), 0);
	CHECK_EQ(v, 9); /* a%2Eb%25c */
	CHECK_EQ(s->ops->longest_id_below(s, deep, NULL, 0, &v), 0);
	CHECK_EQ(v, 9);
	CHECK_EQ(s->ops->longest_id_below(s, d1, NULL, 0, &v), 0);
	CHECK_EQ(v, 1);
	CHECK_EQ(s->ops->longest_id_below(s, 123456, NULL, 0, &v), 0);
	CHECK_EQ(v, 0);
}

static inline void case_scan(struct store *s)
{
	struct store_key keys[3];
	uint64_t d, f[5], after = 0, seen = 0;
	unsigned found = 0; /* bit j: f[j], bit 5: d */
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
				found |= 1u << 5;
			}
			for (int j = 0; j < 5; j++) {
				if (keys[i].ino != f[j])
					continue;
				snprintf(name, sizeof(name), "f\xc3\xa9%d", j);
				CHECK_EQ(keys[i].parent, d);
				CHECK(strcmp(keys[i].name, name) == 0);
				found |= 1u << j;
			}
			CHECK(keys[i].ino != STORE_ROOT_INO);
			seen++;
		}
	}
	CHECK_EQ(n, 0);
	CHECK_EQ(seen, 6);
	CHECK_EQ(found, 0x3f);
	CHECK_EQ(s->ops->scan(s, after, keys, 3), 0);
}

static inline void case_stats(struct store *s)
{
	struct item_meta m = meta_of(ITEM_BINARY, 1000);
	struct change *c;
	uint64_t d1, d2, f3, entries = 0, bytes = 0;

	d1 = put_dir(s, new_ino(s), STORE_ROOT_INO, "d1");
	d2 = put_dir(s, new_ino(s), d1, "d2");
	put_file(s, new_ino(s), d1, "ten", ITEM_BINARY, "0123456789", 10);
	put_file(s, new_ino(s), d2, "zero.json", ITEM_JSON, "", 0);
	/* sizes come from the rows, not from content */
	f3 = new_ino(s);
	c = change_of(f3, d2, "k", &m);
	CHECK_EQ(apply_changes(s, &c, 1), 0);

	CHECK_EQ(s->ops->stats(s, &entries, &bytes), 0);
	CHECK_EQ(entries, 5);
	CHECK_EQ(bytes, 1010);

	c = delete_of(f3);
	CHECK_EQ(apply_changes(s, &c, 1), 0);
	CHECK_EQ(s->ops->stats(s, &entries, &bytes), 0);
	CHECK_EQ(entries, 4);
	CHECK_EQ(bytes, 10);
}

/* ---- golden Merkle hashes ---- */

/* Checks that @h is the hash whose lowercase hex is @hex. */
static inline void check_merkle_hex(const uint8_t h[ITEM_HASH_LEN],
				    const char *hex)
{
	char got[2 * ITEM_HASH_LEN + 1];

	item_hash_hex(h, got);
	CHECK_STREQ(got, hex);
}

/* Checks the merkle of @ino as get() reports it. */
static inline void check_stored_merkle(struct store *s, uint64_t ino,
				       const char *hex)
{
	struct store_row r;

	CHECK_EQ(s->ops->get(s, ino, &r), 0);
	check_merkle_hex(r.merkle, hex);
	store_row_release(&r);
}

/* The index of directory @ino in apply()'s report; fails when absent. */
static inline size_t report_index(const struct store_dirhash *tree,
				  size_t ntree, uint64_t ino)
{
	for (size_t i = 0; i < ntree; i++)
		if (tree[i].ino == ino)
			return i;
	CHECK(!"the directory is in apply()'s report");
	return 0;
}

/*
 * The golden values of case_golden_merkle(), computed apart from tierfs by
 * tests/unit/golden_merkle.py: it builds the same tree as real files and
 * directories and hashes it with the Python reference of docs/merkle.md
 * (hashlib, and Python's bytes order for the names), then makes the second
 * batch's changes with os.rename, os.remove and a rewrite and hashes
 * again. Recompute with `python3 tests/unit/golden_merkle.py`; it prints
 * each constant by name. A change to the tree here needs the same change
 * there.
 */
#define GOLDEN_ROOT_1                                                          \
	"1626b366457758e9df23af0ab7619ce43296b0fbf25505cff2e451e219990590"
#define GOLDEN_A_1                                                             \
	"bd07832ba7eb1510424dc472ecaf74980f0ee272195e7f2704f1ee37e3ebb582"
#define GOLDEN_DEEP                                                            \
	"e89312f82c34cdbbb7c03880c468218a227f93bb36cf361eebe7df104fc36686"
#define GOLDEN_ROOT_2                                                          \
	"001c15e98f0fa5bb99a668c07bbdcae5607a6285ff0753118ed0dfb6ea306398"
#define GOLDEN_A_2                                                             \
	"66dc10e7df88c9849b8378037d1d3982db3cc77377443f29bfe4bf1d4c06eedd"
/* SHA-256 of no bytes: an empty directory's and an empty file's hash */
#define GOLDEN_EMPTY                                                           \
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/*
 * One fixed tree, written by apply() in one batch, and its hashes checked
 * against values Python computed (above): the root's, the subdirectory
 * "a"'s and "B/deep"'s, as apply() reports them and as get() and lookup()
 * read them. The tree (d: directory, f: file with its content):
 *
 *     B/                   d  sorts first: 'B' is 0x42, 'a' 0x61
 *       deep/              d
 *         deeper/          d  three levels below the root
 *           leaf.json      f  {"depth":3}
 *         mid              f  middle
 *     a/                   d  beside files "a.json" and "ab": one prefix
 *       empty/             d  explicit, and stays empty
 *       x                  f  00 01 02 fe ff
 *       y.json             f  {"y":[1,2]}
 *     a.json               f  {"id":"a"}     after "a": a prefix first
 *     ab                   f  61 00 62
 *     b                    f  (empty)        'b' is 0x62: after "ab"
 *     \xc3\xa9t\xc3\xa9    f  summer         UTF-8 "ete": after ASCII
 *     \xff.json            f  [1,2,3]        the highest byte: last
 *
 * Then a second batch: the directory B/deep moves to a/Deep (a rename
 * into another directory, with its subtree), the empty file b is deleted,
 * and a/x gets new content ("changed", version 2). The moved directory
 * keeps its hash, B left empty hashes no bytes, and the root and "a" get
 * the second pair of golden values.
 */
static inline void case_golden_merkle(struct store *s)
{
	static const char bin_x[] = {0x00, 0x01, 0x02, (char)0xfe, (char)0xff};
	struct item_meta md = meta_of(ITEM_DIR, 0), mf[9], mx;
	struct change *c[14];
	struct store_dirhash *tree = NULL;
	size_t ntree = 0, n = 0;
	struct store_row r;
	uint64_t a, empty, dir_B, deep, deeper, b, x;

	/* a fresh store: the root is an empty directory */
	check_stored_merkle(s, STORE_ROOT_INO, GOLDEN_EMPTY);
	snprintf(check_context, sizeof(check_context),
		 "the golden Merkle tree, batch 1");

	a = new_ino(s);
	empty = new_ino(s);
	dir_B = new_ino(s);
	deep = new_ino(s);
	deeper = new_ino(s);
	b = new_ino(s);
	x = new_ino(s);
	/* in no useful order: files before the directories that hold them,
	 * children before parents, names not sorted */
	c[n++] = hashed_change_of(new_ino(s), deeper, "leaf.json", &mf[0],
				  ITEM_JSON, "{\"depth\":3}", 11);
	c[n++] = hashed_change_of(b, STORE_ROOT_INO, "b", &mf[1], ITEM_BINARY,
				  "", 0);
	c[n++] = change_of(deeper, deep, "deeper", &md);
	c[n++] = hashed_change_of(new_ino(s), STORE_ROOT_INO, "\xff.json",
				  &mf[2], ITEM_JSON, "[1,2,3]", 7);
	c[n++] = change_of(a, STORE_ROOT_INO, "a", &md);
	c[n++] = hashed_change_of(x, a, "x", &mf[3], ITEM_BINARY, bin_x,
				  sizeof(bin_x));
	c[n++] = hashed_change_of(new_ino(s), STORE_ROOT_INO,
				  "\xc3\xa9t\xc3\xa9", &mf[4], ITEM_BINARY,
				  "summer", 6);
	c[n++] = change_of(deep, dir_B, "deep", &md);
	c[n++] = hashed_change_of(new_ino(s), STORE_ROOT_INO, "ab", &mf[5],
				  ITEM_BINARY, "a\0b", 3);
	c[n++] = change_of(empty, a, "empty", &md);
	c[n++] = hashed_change_of(new_ino(s), deep, "mid", &mf[6], ITEM_BINARY,
				  "middle", 6);
	c[n++] = hashed_change_of(new_ino(s), STORE_ROOT_INO, "a.json", &mf[7],
				  ITEM_JSON, "{\"id\":\"a\"}", 10);
	c[n++] = change_of(dir_B, STORE_ROOT_INO, "B", &md);
	c[n++] = hashed_change_of(new_ino(s), a, "y.json", &mf[8], ITEM_JSON,
				  "{\"y\":[1,2]}", 11);
	CHECK_EQ(n, sizeof(c) / sizeof(c[0]));
	CHECK_EQ(s->ops->apply(s, c, n, &tree, &ntree), 0);
	changes_free(c, n);

	/* the report: all six directories, each before its parent (bottom
	 * up), the root last */
	CHECK_EQ(ntree, 6);
	CHECK(tree != NULL);
	CHECK_EQ(tree[5].ino, STORE_ROOT_INO);
	check_merkle_hex(tree[5].merkle, GOLDEN_ROOT_1);
	check_merkle_hex(tree[report_index(tree, ntree, a)].merkle, GOLDEN_A_1);
	check_merkle_hex(tree[report_index(tree, ntree, deep)].merkle,
			 GOLDEN_DEEP);
	check_merkle_hex(tree[report_index(tree, ntree, empty)].merkle,
			 GOLDEN_EMPTY);
	CHECK(report_index(tree, ntree, deeper) <
	      report_index(tree, ntree, deep));
	CHECK(report_index(tree, ntree, deep) <
	      report_index(tree, ntree, dir_B));
	CHECK(report_index(tree, ntree, empty) < report_index(tree, ntree, a));
	free(tree);

	/* what the store holds */
	check_stored_merkle(s, STORE_ROOT_INO, GOLDEN_ROOT_1);
	check_stored_merkle(s, a, GOLDEN_A_1);
	check_stored_merkle(s, deep, GOLDEN_DEEP);
	check_stored_merkle(s, empty, GOLDEN_EMPTY);
	check_stored_merkle(s, b, GOLDEN_EMPTY); /* the empty file */
	CHECK_EQ(s->ops->lookup(s, STORE_ROOT_INO, "a", &r), 0);
	check_merkle_hex(r.merkle, GOLDEN_A_1);
	store_row_release(&r);
	check_content(s, x, bin_x, sizeof(bin_x));

	/* batch 2: a rename, a delete, a content change */
	snprintf(check_context, sizeof(check_context),
		 "the golden Merkle tree, batch 2");
	n = 0;
	c[n++] = change_of(deep, a, "Deep", &md);
	c[n++] = delete_of(b);
	c[n++] = hashed_change_of(x, a, "x", &mx, ITEM_BINARY, "changed", 7);
	c[n - 1]->meta.version = 2;
	CHECK_EQ(s->ops->apply(s, c, n, &tree, &ntree), 0);
	changes_free(c, n);

	/* touched: the moved directory, its old and new parents (a also for
	 * x), and the root (b's parent), the root last */
	CHECK_EQ(ntree, 4);
	CHECK(tree != NULL);
	CHECK_EQ(tree[3].ino, STORE_ROOT_INO);
	check_merkle_hex(tree[3].merkle, GOLDEN_ROOT_2);
	check_merkle_hex(tree[report_index(tree, ntree, a)].merkle, GOLDEN_A_2);
	check_merkle_hex(tree[report_index(tree, ntree, deep)].merkle,
			 GOLDEN_DEEP);
	check_merkle_hex(tree[report_index(tree, ntree, dir_B)].merkle,
			 GOLDEN_EMPTY);
	CHECK(report_index(tree, ntree, deep) < report_index(tree, ntree, a));
	free(tree);

	check_stored_merkle(s, STORE_ROOT_INO, GOLDEN_ROOT_2);
	check_stored_merkle(s, a, GOLDEN_A_2);
	check_stored_merkle(s, deep, GOLDEN_DEEP);
	check_stored_merkle(s, dir_B, GOLDEN_EMPTY);
	CHECK_EQ(lookup_ino(s, a, "Deep"), deep);
	CHECK_EQ(lookup_ino(s, deep, "deeper"), deeper);
	CHECK_EQ(lookup_ino(s, dir_B, "deep"), -ENOENT);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "b"), -ENOENT);
	CHECK_EQ(lookup_ino(s, STORE_ROOT_INO, "B"), dir_B);
	check_content(s, x, "changed", 7);
	check_context[0] = '\0';
}

#endif
