/*
 * u64map.h - a hash map from non-zero 64-bit keys to pointers.
 *
 * Open addressing with linear probing and backward-shift deletion (no
 * tombstones), grown at 50 % load. Key 0 is reserved for empty slots.
 *
 * Thread-safety: none; the owner serialises access.
 */
#ifndef TIERFS_U64MAP_H
#define TIERFS_U64MAP_H

#include <stddef.h>
#include <stdint.h>

struct u64map {
	uint64_t *keys;
	void **vals;
	size_t cap; /* a power of two, or 0 */
	size_t len;
};

void u64map_init(struct u64map *m);
/* Frees the table (not the values). Accepts NULL. */
void u64map_release(struct u64map *m);
/* The value of @key, or NULL. */
void *u64map_get(const struct u64map *m, uint64_t key);
/* Sets @key to @val (non-NULL), replacing any value. 0, -EINVAL (key 0 or
 * a NULL @val) or -ENOMEM. */
int u64map_put(struct u64map *m, uint64_t key, void *val);
/* Removes @key and returns its value, or NULL when absent. */
void *u64map_del(struct u64map *m, uint64_t key);

/* Iteration: for (size_t i = 0; u64map_next(m, &i, &k, &v);) ...
 * The map must not change during iteration. */
int u64map_next(const struct u64map *m, size_t *pos, uint64_t *key, void **val);

#endif
