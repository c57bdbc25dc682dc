/*
 * l1.h - L1: the in-process item cache, bounded in bytes.
 *
 * Maps a key (the entry's inode number) to an item. Unpinned items are kept
 * in least-recently-used order and evicted once the content bytes of the
 * unpinned items exceed the bound. Pinned items - versions not yet
 * persisted - are never evicted: they are the only copy besides the
 * write-ahead log. Pinned bytes do not count toward the bound: the cache
 * holds up to the bound of unpinned content plus every pinned item, and the
 * engine's backpressure keeps the pinned bytes in check.
 *
 * Thread-safety: all functions may be called concurrently (one mutex).
 */
#ifndef TIERFS_L1_H
#define TIERFS_L1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "item.h"

struct l1;

struct l1_stats {
	size_t bytes;	     /* content bytes cached */
	size_t pinned_bytes; /* of which pinned */
	size_t count;
	uint64_t hits, misses, evictions;
};

/* A cache of at most @max_bytes unpinned content. NULL when out of memory. */
struct l1 *l1_new(size_t max_bytes);
/* Drops every reference and frees the cache. Accepts NULL. */
void l1_free(struct l1 *c);

/* Returns a new reference to the item under @key, or NULL (a miss). */
struct item *l1_get(struct l1 *c, uint64_t key);

/* true when @key holds an item of @version; counts nothing and leaves the
 * order of eviction as it is (a look, not a use). */
bool l1_holds(struct l1 *c, uint64_t key, uint64_t version);

/*
 * Caches @it under @key (taking its own reference), replacing any item
 * there. A pinned item stays until unpinned. An unpinned item larger than
 * the bound is not cached. Evicts as needed. Returns 0 or -ENOMEM.
 */
int l1_put(struct l1 *c, uint64_t key, struct item *it, bool pinned);

/* Unpins @key if it still holds @it (a newer version stays pinned). */
void l1_unpin(struct l1 *c, uint64_t key, const struct item *it);

/* Removes @key, pinned or not. */
void l1_remove(struct l1 *c, uint64_t key);

void l1_get_stats(struct l1 *c, struct l1_stats *out);

#endif
