/*
 * test_u64map.c - unit tests of the u64 -> pointer hash map
 * (engine/u64map.c).
 *
 * A model test: random put/get/del operations from a fixed-seed xorshift
 * generator, each checked against a reference array, first with keys from
 * a small range (so the table is dense, probe runs are long and deletions
 * shift members back, wrapping around the table's end), then with large
 * random keys. Every so often the whole map is compared with the model and
 * walked with u64map_next(), which must visit every key exactly once.
 * The seed is printed; TEST_U64MAP_SEED in the environment overrides it.
 *
 * Exit status: 0 passed, 1 failed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "u64map.h"

#define OPS 100000
#define FULL_CHECK_EVERY 997
#define NVALS 4096

static uint64_t rng_state;

/* xorshift64* (Vigna) */
static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(2685821657736338717);
}

static size_t rnd(size_t n)
{
	return (size_t)((rng() >> 11) % n);
}

/* Values are addresses in this array: distinct, non-NULL. */
static char vals[NVALS];

static void *rnd_val(void)
{
	return &vals[rnd(NVALS)];
}

/*
 * The model: keys[i] maps to model[i] (NULL when absent). @nkeys keys, all
 * distinct and non-zero.
 */
struct model {
	const uint64_t *keys;
	void **vals;
	size_t nkeys;
	size_t len;
	size_t *by_key; /* indexes of keys in key order, for lookups */
};

static const struct model *sort_model;

static int cmp_index(const void *a, const void *b)
{
	uint64_t x = sort_model->keys[*(const size_t *)a];
	uint64_t y = sort_model->keys[*(const size_t *)b];

	return x < y ? -1 : x > y;
}

/* Builds md->by_key; the keys must be distinct. */
static void model_index(struct model *md)
{
	md->by_key = malloc(md->nkeys * sizeof(*md->by_key));
	CHECK(md->by_key != NULL);
	for (size_t i = 0; i < md->nkeys; i++)
		md->by_key[i] = i;
	sort_model = md;
	qsort(md->by_key, md->nkeys, sizeof(*md->by_key), cmp_index);
	for (size_t i = 1; i < md->nkeys; i++)
		CHECK(md->keys[md->by_key[i - 1]] < md->keys[md->by_key[i]]);
}

/* The model index of @key, or md->nkeys when the model has no such key. */
static size_t model_find(const struct model *md, uint64_t key)
{
	size_t lo = 0, hi = md->nkeys;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		uint64_t k = md->keys[md->by_key[mid]];

		if (k == key)
			return md->by_key[mid];
		if (k < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return md->nkeys;
}

/* Compares the whole map with the model and walks it. */
static void full_check(const struct u64map *m, const struct model *md)
{
	uint8_t *seen = calloc(md->nkeys, 1);
	size_t pos = 0, visited = 0;
	uint64_t k;
	void *v;

	CHECK(seen != NULL);
	CHECK_EQ(m->len, md->len);
	CHECK(m->cap == 0 || (m->cap & (m->cap - 1)) == 0);
	CHECK(m->len * 2 <= m->cap || m->cap == 0);
	for (size_t i = 0; i < md->nkeys; i++)
		CHECK(u64map_get(m, md->keys[i]) == md->vals[i]);
	while (u64map_next(m, &pos, &k, &v)) {
		size_t i = model_find(md, k);

		CHECK(i < md->nkeys);	    /* a key the model knows */
		CHECK(md->vals[i] != NULL); /* and holds */
		CHECK(v == md->vals[i]);
		CHECK(!seen[i]); /* visited once */
		seen[i] = 1;
		visited++;
		CHECK(visited <= md->len); /* no endless walk */
	}
	CHECK_EQ(visited, md->len);
	free(seen);
}

/* Runs @ops random operations over the model's keys. */
static void run_model(struct u64map *m, struct model *md, size_t ops,
		      const char *phase)
{
	unsigned long puts = 0, replaces = 0, dels = 0, misses = 0;

	for (size_t op = 0; op < ops; op++) {
		size_t i = rnd(md->nkeys);
		uint64_t key = md->keys[i];
		unsigned what = (unsigned)rnd(100);

		snprintf(check_context, sizeof(check_context),
			 "%s op %zu key 0x%" PRIx64, phase, op, key);
		if (what < 45) {
			void *v = rnd_val();

			CHECK_EQ(u64map_put(m, key, v), 0);
			if (md->vals[i])
				replaces++;
			else
				md->len++;
			md->vals[i] = v;
			puts++;
		} else if (what < 85) {
			void *got = u64map_del(m, key);

			CHECK(got == md->vals[i]);
			if (got) {
				md->vals[i] = NULL;
				md->len--;
				dels++;
			} else {
				misses++;
			}
			CHECK(u64map_get(m, key) == NULL);
		} else {
			CHECK(u64map_get(m, key) == md->vals[i]);
		}
		CHECK_EQ(m->len, md->len);
		if (op % FULL_CHECK_EVERY == 0)
			full_check(m, md);
	}
	full_check(m, md);
	check_context[0] = '\0';
	printf("test_u64map: %s: %lu puts (%lu replaced), %lu deletes, %lu "
	       "deletes of absent keys, %zu left, cap %zu\n",
	       phase, puts, replaces, dels, misses, md->len, m->cap);
	CHECK(dels > ops / 10 && replaces > ops / 20 && misses > ops / 100);
}

/* Deletes every key; the map must end empty. */
static void drain(struct u64map *m, struct model *md)
{
	size_t pos = 0;
	uint64_t k;
	void *v;

	for (size_t i = 0; i < md->nkeys; i++) {
		void *got = u64map_del(m, md->keys[i]);

		CHECK(got == md->vals[i]);
		if (got)
			md->len--;
		md->vals[i] = NULL;
		CHECK_EQ(m->len, md->len);
	}
	CHECK_EQ(m->len, 0);
	CHECK(!u64map_next(m, &pos, &k, &v));
	full_check(m, md);
}

static void test_empty(void)
{
	struct u64map m;
	size_t pos = 0;
	uint64_t k = 0;
	void *v = NULL;

	u64map_init(&m);
	CHECK_EQ(m.len, 0);
	CHECK(u64map_get(&m, 1) == NULL);
	CHECK(u64map_get(&m, UINT64_MAX) == NULL);
	CHECK(u64map_del(&m, 1) == NULL);
	CHECK(!u64map_next(&m, &pos, &k, &v));
	u64map_release(&m);
	u64map_release(NULL);

	/* one key, replaced, deleted */
	u64map_init(&m);
	CHECK_EQ(u64map_put(&m, 42, &vals[1]), 0);
	CHECK(u64map_get(&m, 42) == &vals[1]);
	CHECK(u64map_get(&m, 43) == NULL);
	CHECK_EQ(u64map_put(&m, 42, &vals[2]), 0);
	CHECK_EQ(m.len, 1);
	CHECK(u64map_get(&m, 42) == &vals[2]);
	pos = 0;
	CHECK(u64map_next(&m, &pos, &k, &v));
	CHECK_EQ(k, 42);
	CHECK(v == &vals[2]);
	CHECK(!u64map_next(&m, &pos, &k, &v));
	CHECK(u64map_del(&m, 42) == &vals[2]);
	CHECK(u64map_del(&m, 42) == NULL);
	CHECK_EQ(m.len, 0);
	/* the extreme key */
	CHECK_EQ(u64map_put(&m, UINT64_MAX, &vals[3]), 0);
	CHECK(u64map_get(&m, UINT64_MAX) == &vals[3]);
	CHECK(u64map_del(&m, UINT64_MAX) == &vals[3]);
	u64map_release(&m);
}

/* Keys 1..n in order, then deleted in order and in reverse: sequential
 * inode numbers are what the engine stores. */
static void test_sequential(void)
{
	enum { N = 5000 };
	struct u64map m;

	u64map_init(&m);
	for (uint64_t k = 1; k <= N; k++)
		CHECK_EQ(u64map_put(&m, k, &vals[k % NVALS]), 0);
	CHECK_EQ(m.len, N);
	for (uint64_t k = 1; k <= N; k++)
		CHECK(u64map_get(&m, k) == &vals[k % NVALS]);
	CHECK(u64map_get(&m, N + 1) == NULL);
	/* delete the odd keys, check the even ones survive every shift */
	for (uint64_t k = 1; k <= N; k += 2)
		CHECK(u64map_del(&m, k) == &vals[k % NVALS]);
	for (uint64_t k = 1; k <= N; k++)
		CHECK(u64map_get(&m, k) == (k % 2 ? NULL : &vals[k % NVALS]));
	for (uint64_t k = N; k >= 1; k--)
		if (k % 2 == 0)
			CHECK(u64map_del(&m, k) == &vals[k % NVALS]);
	CHECK_EQ(m.len, 0);
	u64map_release(&m);
}

static void test_dense(void)
{
	enum { NKEYS = 300 };
	static uint64_t keys[NKEYS];
	static void *mvals[NKEYS];
	struct model md = {keys, mvals, NKEYS, 0, NULL};
	struct u64map m;

	for (size_t i = 0; i < NKEYS; i++)
		keys[i] = i + 1;
	model_index(&md);
	u64map_init(&m);
	run_model(&m, &md, OPS, "small keys");
	drain(&m, &md);
	/* the emptied table is reused */
	run_model(&m, &md, OPS / 4, "small keys again");
	u64map_release(&m);
	free(md.by_key);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void test_sparse(void)
{
	enum { NKEYS = 2000 };
	static uint64_t keys[NKEYS], sorted[NKEYS];
	static void *mvals[NKEYS];
	struct model md = {keys, mvals, NKEYS, 0, NULL};
	struct u64map m;
	bool distinct;

	do {
		for (size_t i = 0; i < NKEYS; i++) {
			do
				keys[i] = rng();
			while (!keys[i]);
		}
		/* a few keys that differ only in high or low bits */
		keys[0] = UINT64_MAX;
		keys[1] = UINT64_C(1) << 63;
		keys[2] = (UINT64_C(1) << 63) | 1;
		keys[3] = UINT64_C(1) << 32;
		keys[4] = (UINT64_C(1) << 32) + 1;
		memcpy(sorted, keys, sizeof(keys));
		qsort(sorted, NKEYS, sizeof(sorted[0]), cmp_u64);
		distinct = true;
		for (size_t i = 1; i < NKEYS; i++)
			if (sorted[i] == sorted[i - 1])
				distinct = false;
	} while (!distinct);
	model_index(&md);
	u64map_init(&m);
	run_model(&m, &md, OPS, "large keys");
	drain(&m, &md);
	u64map_release(&m);
	free(md.by_key);
}

/*
 * Many tiny tables (16 or 32 slots) with a handful of random keys: probe
 * runs that wrap around the end of the table are common there, and so are
 * deletions that must shift a wrapped member back across the end.
 */
static void test_tiny_tables(void)
{
	enum { ROUNDS = 3000, MAXKEYS = 15, TINY_OPS = 60 };
	uint64_t keys[MAXKEYS];
	void *mvals[MAXKEYS];
	unsigned long dels = 0;

	for (int round = 0; round < ROUNDS; round++) {
		size_t nkeys = 4 + rnd(MAXKEYS - 3);
		struct model md = {keys, mvals, nkeys, 0, NULL};
		struct u64map m;
		bool distinct;

		do {
			distinct = true;
			for (size_t i = 0; i < nkeys; i++) {
				do
					keys[i] = rng();
				while (!keys[i]);
				for (size_t j = 0; j < i; j++)
					if (keys[j] == keys[i])
						distinct = false;
			}
		} while (!distinct);
		memset(mvals, 0, sizeof(mvals));
		model_index(&md);
		u64map_init(&m);
		for (int op = 0; op < TINY_OPS; op++) {
			size_t i = rnd(nkeys);

			snprintf(check_context, sizeof(check_context),
				 "tiny table round %d op %d key 0x%" PRIx64,
				 round, op, keys[i]);
			if (rnd(100) < 55) {
				void *v = rnd_val();

				CHECK_EQ(u64map_put(&m, keys[i], v), 0);
				if (!mvals[i])
					md.len++;
				mvals[i] = v;
			} else {
				CHECK(u64map_del(&m, keys[i]) == mvals[i]);
				if (mvals[i]) {
					md.len--;
					dels++;
				}
				mvals[i] = NULL;
			}
			full_check(&m, &md);
		}
		drain(&m, &md);
		u64map_release(&m);
		free(md.by_key);
	}
	check_context[0] = '\0';
	printf("test_u64map: tiny tables: %d rounds, %lu deletes\n", ROUNDS,
	       dels);
}

int main(void)
{
	uint64_t seed = UINT64_C(0x7469657266730004);
	const char *env = getenv("TEST_U64MAP_SEED");

	if (env && *env)
		seed = strtoull(env, NULL, 0);
	printf("test_u64map: seed 0x%016" PRIx64 "\n", seed);
	fflush(stdout);
	rng_state = seed ? seed : 1;

	test_empty();
	test_sequential();
	test_dense();
	test_sparse();
	test_tiny_tables();
	printf("test_u64map: ok\n");
	return 0;
}
