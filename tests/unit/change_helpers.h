/*
 * change_helpers.h - building the changes (struct change, change.h) that
 * the store and cache tests apply: a row without content, a row with
 * content (an item made by item_new()), a delete; and freeing a batch of
 * them. Each builder fails the test when memory runs out. store_helpers.h
 * includes it; test_l2_redis.c uses it alone.
 *
 * Header-only (each test is its own program); include it after check.h.
 */
#ifndef TIERFS_TEST_CHANGE_HELPERS_H
#define TIERFS_TEST_CHANGE_HELPERS_H

#include <stddef.h>
#include <stdint.h>

#include "change.h"
#include "check.h"

/* A new change that sets @ino to @parent, @name and @m (copied), keeping
 * the stored content. */
static inline struct change *change_of(uint64_t ino, uint64_t parent,
				       const char *name,
				       const struct item_meta *m)
{
	struct change *c = change_new_put(ino, parent, name, m, NULL);

	CHECK(c != NULL);
	return c;
}

/* change_of() with content: @len bytes at @data (copied into an item).
 * The change's meta is @m as given, whatever the content's size and
 * hash. */
static inline struct change *data_change_of(uint64_t ino, uint64_t parent,
					    const char *name,
					    const struct item_meta *m,
					    const void *data, size_t len)
{
	struct item *it = item_new("", data, len, m);
	struct change *c;

	CHECK(it != NULL);
	c = change_new_put(ino, parent, name, m, it);
	item_unref(it);
	CHECK(c != NULL);
	return c;
}

/* A new change that deletes @ino. */
static inline struct change *delete_of(uint64_t ino)
{
	struct change *c = change_new_del(ino);

	CHECK(c != NULL);
	return c;
}

/* Frees @c[0..n) and sets each to NULL. */
static inline void changes_free(struct change **c, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		change_free(c[i]);
		c[i] = NULL;
	}
}

#endif
