/*
 * store_helpers.h - helpers shared by the store tests (test_l3_sqlite.c,
 * test_l3_pg.c): building metadata and changes, writing entries, looking
 * them up, comparing metadata, checking a paged listing.
 *
 * Header-only (each test is its own program); include it after check.h.
 */
#ifndef TIERFS_TEST_STORE_HELPERS_H
#define TIERFS_TEST_STORE_HELPERS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "store.h"

static uint64_t new_ino(struct store *s)
{
	uint64_t ino = 0;

	CHECK_EQ(s->ops->alloc_ino(s, 1, &ino), 0);
	CHECK(ino >= 2);
	return ino;
}

static struct item_meta meta_of(enum item_kind kind, uint64_t size)
{
	struct item_meta m;

	memset(&m, 0, sizeof(m));
	m.kind = kind;
	m.size = size;
	m.version = 1;
	m.mtime_ns = 1700000000123456789LL;
	m.ctime_ns = 1700000000987654321LL;
	m.mode = kind == ITEM_DIR ? S_IFDIR | 0755 : S_IFREG | 0644;
	m.uid = 1000;
	m.gid = 1000;
	m.explicit_dir = kind == ITEM_DIR;
	return m;
}

static struct store_change change_of(uint64_t ino, uint64_t parent,
				     const char *name,
				     const struct item_meta *m)
{
	struct store_change c;

	memset(&c, 0, sizeof(c));
	c.ino = ino;
	c.parent = parent;
	c.name = name;
	c.meta = m;
	return c;
}

static struct store_change delete_of(uint64_t ino)
{
	struct store_change c;

	memset(&c, 0, sizeof(c));
	c.ino = ino;
	c.deleted = true;
	return c;
}

/* Creates (or overwrites) directory @name in @parent. */
static uint64_t put_dir(struct store *s, uint64_t ino, uint64_t parent,
			const char *name)
{
	struct item_meta m = meta_of(ITEM_DIR, 0);
	struct store_change c = change_of(ino, parent, name, &m);

	CHECK_EQ(store_apply(s, &c, 1), 0);
	return ino;
}

/* Creates (or overwrites) file @name with content @data. */
static uint64_t put_file(struct store *s, uint64_t ino, uint64_t parent,
			 const char *name, enum item_kind kind,
			 const void *data, size_t len)
{
	struct item_meta m = meta_of(kind, len);
	struct store_change c = change_of(ino, parent, name, &m);

	c.has_data = true;
	c.data = data;
	c.len = len;
	CHECK_EQ(store_apply(s, &c, 1), 0);
	return ino;
}

/* Returns the ino of @name in @parent, or a negative errno. */
static long long lookup_ino(struct store *s, uint64_t parent, const char *name)
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

/* Checks that file @ino holds exactly @len bytes @want. */
static bool meta_equal(const struct item_meta *a, const struct item_meta *b)
{
	size_t alen = a->xattrs ? a->xattrs_len : 0;
	size_t blen = b->xattrs ? b->xattrs_len : 0;
	const char *as = a->state && a->state[0] ? a->state : NULL;
	const char *bs = b->state && b->state[0] ? b->state : NULL;

	return a->kind == b->kind && a->size == b->size &&
	       memcmp(a->hash, b->hash, ITEM_HASH_LEN) == 0 &&
	       a->version == b->version && a->mtime_ns == b->mtime_ns &&
	       a->ctime_ns == b->ctime_ns && a->mode == b->mode &&
	       a->uid == b->uid && a->gid == b->gid &&
	       a->explicit_dir == b->explicit_dir &&
	       (as == bs || (as && bs && strcmp(as, bs) == 0)) &&
	       alen == blen &&
	       (!alen || memcmp(a->xattrs, b->xattrs, alen) == 0);
}

static int cmp_names(const void *a, const void *b)
{
	/* strcmp compares as unsigned char: memcmp order, shorter first */
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Lists all children of @parent in pages of @page and checks them against
 * @want (sorted), and each row's ino against a lookup of its name. */
static void check_listing(struct store *s, uint64_t parent, size_t page,
			  const char **want, size_t nwant)
{
	struct store_row rows[16];
	char after[STORE_NAME_MAX + 1] = "";
	size_t seen = 0;
	int n;

	CHECK(page <= 16);
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
			seen++;
		}
		snprintf(after, sizeof(after), "%s", rows[n - 1].name);
		for (int i = 0; i < n; i++)
			store_row_release(&rows[i]);
	}
	CHECK_EQ(seen, nwant);
}

#endif
