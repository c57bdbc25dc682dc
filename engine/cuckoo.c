/*
 * cuckoo.c - a cuckoo filter over 64-bit key hashes (negative lookups).
 *
 * Layout: nbuckets (a power of two, at least capacity / 4 / 0.95) buckets of
 * SLOTS 16-bit fingerprints, stored flat in @slots; 0 marks an empty slot.
 * A key hash h maps to
 *   fingerprint  fp = h >> 48, with 0 mapped to 1 (0 means "empty"),
 *   first bucket i1 = h & (nbuckets - 1),
 *   other bucket i2 = i1 ^ off(fp), where off(fp) is XXH3 of fp's 2
 *                     little-endian bytes masked to nbuckets - 1, or 1
 *                     instead of 0 when there are two buckets or more.
 * The index uses the low bits and the fingerprint the top 16 bits, which do
 * not overlap because nbuckets is capped at 2^48. i2 is computed from i1 and
 * fp alone and i1 == i2 ^ off(fp), so a fingerprint can move between its two
 * buckets without knowing its key; the two are distinct (8 slots) except in
 * a one-bucket table.
 *
 * Invariants:
 *  - the table holds exactly one fingerprint per successful insert not yet
 *    deleted, in one of its two buckets, and @count is the number of
 *    non-empty slots;
 *  - an insert that fails (-ENOSPC) undoes its relocations, so the table is
 *    exactly as before the call: the key whose insert failed is the only one
 *    not stored, and @overflowed (sticky) makes cuckoo_contains() answer
 *    true for every key, so that key is not hidden either;
 *  - insert never looks for an existing copy: equal fingerprints are stored
 *    once per insert (at most 2 * SLOTS copies of one (bucket, fingerprint)
 *    pair fit; the next such insert fails).
 *
 * Relocation picks the victim slot with a xorshift64 generator kept in the
 * filter and seeded with a constant, so a filter's behaviour depends only on
 * its sequence of calls.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "cuckoo.h"

#define SLOTS 4
#define MAX_KICKS 500
#define RNG_SEED UINT64_C(0x9E3779B97F4A7C15)
/* The index must not reach the fingerprint's bits (the top 16). */
#define MAX_BUCKETS (UINT64_C(1) << 48)

struct cuckoo {
	uint16_t *slots; /* nbuckets * SLOTS fingerprints, 0 = empty */
	size_t mask;	 /* nbuckets - 1 */
	size_t count;	 /* non-empty slots */
	uint64_t rng;	 /* xorshift64 state, never 0 */
	bool overflowed; /* an insert failed: contains() is always true */
};

static uint16_t fingerprint(uint64_t h)
{
	uint16_t fp = (uint16_t)(h >> 48);

	return fp ? fp : 1;
}

static size_t alt_index(const struct cuckoo *f, size_t i, uint16_t fp)
{
	unsigned char le[2] = {(unsigned char)fp, (unsigned char)(fp >> 8)};
	size_t off = (size_t)XXH3_64bits(le, sizeof(le)) & f->mask;

	/* Offset 0 would leave the key one bucket: use 1 (0 if only one). */
	return i ^ (off ? off : (f->mask & 1));
}

static uint64_t rng_next(struct cuckoo *f)
{
	uint64_t x = f->rng;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	f->rng = x;
	return x;
}

/* Stores @fp in an empty slot of bucket @i; false when the bucket is full. */
static bool bucket_put(struct cuckoo *f, size_t i, uint16_t fp)
{
	uint16_t *b = &f->slots[i * SLOTS];

	for (int s = 0; s < SLOTS; s++) {
		if (!b[s]) {
			b[s] = fp;
			return true;
		}
	}
	return false;
}

static bool bucket_has(const struct cuckoo *f, size_t i, uint16_t fp)
{
	const uint16_t *b = &f->slots[i * SLOTS];

	for (int s = 0; s < SLOTS; s++)
		if (b[s] == fp)
			return true;
	return false;
}

/* Empties one slot of bucket @i holding @fp; false when there is none. */
static bool bucket_remove(struct cuckoo *f, size_t i, uint16_t fp)
{
	uint16_t *b = &f->slots[i * SLOTS];

	for (int s = 0; s < SLOTS; s++) {
		if (b[s] == fp) {
			b[s] = 0;
			return true;
		}
	}
	return false;
}

struct cuckoo *cuckoo_new(size_t capacity)
{
	/* ceil(capacity / 4 / 0.95) = ceil(capacity * 5 / 19), overflow-free */
	size_t need = capacity / 19 * 5 + ((capacity % 19) * 5 + 18) / 19;
	size_t nbuckets = 1;
	struct cuckoo *f;

	while (nbuckets < need) {
		if ((uint64_t)nbuckets >= MAX_BUCKETS ||
		    nbuckets > SIZE_MAX / 2 / SLOTS / sizeof(uint16_t)) {
			errno = ENOMEM;
			return NULL;
		}
		nbuckets <<= 1;
	}
	f = malloc(sizeof(*f));
	if (!f)
		return NULL;
	f->slots = calloc(nbuckets * SLOTS, sizeof(*f->slots));
	if (!f->slots) {
		free(f);
		return NULL;
	}
	f->mask = nbuckets - 1;
	f->count = 0;
	f->rng = RNG_SEED;
	f->overflowed = false;
	return f;
}

void cuckoo_free(struct cuckoo *f)
{
	if (!f)
		return;
	free(f->slots);
	free(f);
}

int cuckoo_insert(struct cuckoo *f, uint64_t h)
{
	uint16_t fp = fingerprint(h);
	size_t i1 = (size_t)h & f->mask;
	size_t i2 = alt_index(f, i1, fp);
	size_t path[MAX_KICKS]; /* slots swapped, to undo a failed insert */
	size_t i;

	if (bucket_put(f, i1, fp) || bucket_put(f, i2, fp))
		goto out_stored;

	/* Both full: evict a random resident to its other bucket, repeat. */
	i = (rng_next(f) & 1) ? i1 : i2;
	for (int k = 0; k < MAX_KICKS; k++) {
		size_t pos = i * SLOTS + (size_t)(rng_next(f) % SLOTS);
		uint16_t victim = f->slots[pos];

		f->slots[pos] = fp;
		fp = victim;
		path[k] = pos;
		i = alt_index(f, i, fp);
		if (bucket_put(f, i, fp))
			goto out_stored;
	}

	/*
	 * Table full. Swap the evictions back in reverse order: each resident
	 * returns to its slot and @fp ends up as the new key's fingerprint
	 * again, which is not stored; overflowed covers that key.
	 */
	for (int k = MAX_KICKS; k-- > 0;) {
		uint16_t back = f->slots[path[k]];

		f->slots[path[k]] = fp;
		fp = back;
	}
	f->overflowed = true;
	return -ENOSPC;

out_stored:
	f->count++;
	return 0;
}

bool cuckoo_contains(const struct cuckoo *f, uint64_t h)
{
	uint16_t fp = fingerprint(h);
	size_t i1 = (size_t)h & f->mask;

	if (f->overflowed)
		return true;
	return bucket_has(f, i1, fp) || bucket_has(f, alt_index(f, i1, fp), fp);
}

int cuckoo_delete(struct cuckoo *f, uint64_t h)
{
	uint16_t fp = fingerprint(h);
	size_t i1 = (size_t)h & f->mask;

	if (!bucket_remove(f, i1, fp) &&
	    !bucket_remove(f, alt_index(f, i1, fp), fp))
		return -ENOENT;
	f->count--;
	return 0;
}

size_t cuckoo_count(const struct cuckoo *f)
{
	return f->count;
}

/*
 * The number of keys the table holds at 95 % load, in the unit of
 * cuckoo_new()'s argument: at least what was asked for (nbuckets is rounded
 * up to a power of two), and cuckoo_new(cuckoo_capacity(f)) builds a table
 * of the same size.
 */
size_t cuckoo_capacity(const struct cuckoo *f)
{
	size_t slots = (f->mask + 1) * SLOTS;

	return slots / 20 * 19 + slots % 20 * 19 / 20;
}

bool cuckoo_overflowed(const struct cuckoo *f)
{
	return f->overflowed;
}

uint64_t cuckoo_key(uint64_t parent, const char *name, size_t len)
{
	unsigned char buf[8 + NAME_MAX];
	XXH3_state_t *st;
	uint64_t h;

	for (int b = 0; b < 8; b++)
		buf[b] = (unsigned char)(parent >> (8 * b));
	if (len <= NAME_MAX) {
		if (len)
			memcpy(buf + 8, name, len);
		return XXH3_64bits(buf, 8 + len);
	}

	/*
	 * Longer than any name the kernel passes. The streaming state must
	 * come from the library (its layout is private to the shared
	 * library); no other value would be safe to return, since a wrong
	 * hash here would be a false negative later.
	 */
	st = XXH3_createState();
	if (!st)
		abort();
	XXH3_64bits_reset(st);
	XXH3_64bits_update(st, buf, 8);
	XXH3_64bits_update(st, name, len);
	h = XXH3_64bits_digest(st);
	XXH3_freeState(st);
	return h;
}
