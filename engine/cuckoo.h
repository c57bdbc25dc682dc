/*
 * cuckoo.h - a cuckoo filter over 64-bit key hashes (negative lookups).
 *
 * Answers "is this key possibly present?" for the names L3 holds, so that a
 * lookup of a name that does not exist (tools stat many) needs no L3 query.
 * A filter is *trusted* once it holds every key that exists: then
 * cuckoo_contains() == false proves absence. It never produces a false
 * negative for a key that was inserted and not deleted since; false
 * positives (about 2 * bucket_size / 2^fingerprint_bits) only cost a query.
 *
 * Design (Fan et al., "Cuckoo Filter: Practically Better Than Bloom"):
 * buckets of 4 slots holding 16-bit fingerprints (0 = empty slot), two
 * candidate buckets per key (i1 = hash mod n, i2 = i1 XOR hash(fingerprint)),
 * up to 500 relocations per insert. Deletion removes one copy of the
 * fingerprint from one of the two buckets, so a key inserted twice must be
 * deleted twice. The engine may insert a name twice (a create while the
 * filter is being built from L3 can meet the builder's copy); the copy a
 * delete leaves behind is only a false positive.
 *
 * Defects a cuckoo filter easily has, and this one must not (docs/design.md
 * §5.3 and §12):
 *  - an insert that fails (table full) must not lose a key: on failure the
 *    filter becomes *overflowed* and cuckoo_contains() answers true for
 *    every key from then on (never a false negative); the owner rebuilds a
 *    larger filter;
 *  - an insert is never skipped because the key "seems present" (a false
 *    positive): insert always stores a fingerprint;
 *  - deleting a key that was never inserted could remove another key's
 *    fingerprint: callers only delete keys they inserted, and the filter
 *    offers no "delete if present" shortcut.
 *
 * Thread-safety: none; the owner serialises access.
 */
#ifndef TIERFS_CUCKOO_H
#define TIERFS_CUCKOO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cuckoo;

/* A filter with room for about @capacity keys at 95 % load. NULL on ENOMEM. */
struct cuckoo *cuckoo_new(size_t capacity);
void cuckoo_free(struct cuckoo *f);

/* Inserts the key with 64-bit hash @h. Returns 0, or -ENOSPC when the
 * table is full (the filter is then overflowed, see above). */
int cuckoo_insert(struct cuckoo *f, uint64_t h);
/* false only when the key is certainly absent. */
bool cuckoo_contains(const struct cuckoo *f, uint64_t h);
/* Removes one copy of a key inserted before. Returns 0, or -ENOENT when no
 * copy of its fingerprint is in either bucket (a caller bug). */
int cuckoo_delete(struct cuckoo *f, uint64_t h);

size_t cuckoo_count(const struct cuckoo *f);
size_t cuckoo_capacity(const struct cuckoo *f);
bool cuckoo_overflowed(const struct cuckoo *f);

/* The 64-bit hash of (parent, name) that the engine stores: XXH3 of the
 * parent's 8 bytes followed by the name's bytes. */
uint64_t cuckoo_key(uint64_t parent, const char *name, size_t len);

#endif
