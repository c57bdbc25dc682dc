/*
 * test_cuckoo.c - unit tests of the cuckoo filter (engine/cuckoo.c).
 *
 * The property that matters is "no false negatives": a key inserted and not
 * deleted since is always reported present, however full the table is. A
 * model test drives the filter with long random operation sequences from a
 * fixed-seed generator and keeps a reference multiset of keys (each copy
 * remembers whether its insert succeeded). After every operation the key it
 * touched is looked up and cuckoo_count() is compared with the model; every
 * 1000 operations every key in the model is looked up.
 *
 *  churn:    1,000,000 operations on one table whose target load sweeps
 *            between 20 % and 90 %: inserts of new keys, deletes of present
 *            keys, re-inserts of deleted keys, second copies of present keys,
 *            and groups of keys built to share a bucket, or a bucket and a
 *            fingerprint (duplicates in one bucket); no insert may fail; at
 *            the end every key is deleted and none may then be found;
 *  fill:     a fresh table is filled past 95 % load until an insert fails;
 *            it must then be overflowed, answer true for absent keys, keep
 *            every key, and delete every key whose insert succeeded (a
 *            failed insert must lose no fingerprint), through 100,000 more
 *            operations and a final drain;
 *  edges:    sizes and capacities, a one-bucket table, nine keys sharing a
 *            bucket pair and a fingerprint (only eight fit), an empty table;
 *  fp rate:  false positives over 1,000,000 absent keys at about 90 % load
 *            must stay below 0.5 %;
 *  key:      cuckoo_key() is XXH3 of (8 little-endian parent bytes, name),
 *            stable, and distinct over 100,000 different (parent, name).
 *
 * Crafted collisions rely on the layout cuckoo.c documents: the bucket index
 * is the hash's low bits (fewer than 32 here) and the fingerprint its top 16
 * bits, so keys that differ only in bits 32..47 share both. The edges phase
 * checks that assumption (the ninth such key must not fit).
 *
 * The seed is printed; TEST_CUCKOO_SEED in the environment overrides it.
 * Exit status: 0 passed, 1 failed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "check.h"
#include "cuckoo.h"

#define DEFAULT_SEED UINT64_C(0x20240611c0c0)
#define FULL_CHECK_EVERY 1000

#define CHURN_CAPACITY 15000
#define CHURN_OPS 1000000
#define CHURN_PERIOD 200000
#define CHURN_LOW 0.20
#define CHURN_HIGH 0.90

#define FILL_CAPACITY 30000
#define FILL_MIN_LOAD 0.95
#define AFTER_OVERFLOW_OPS 100000

#define FP_CAPACITY 100000
#define FP_LOAD 0.90
#define FP_PROBES 1000000
#define FP_MAX_RATE 0.005

#define KEY_PARENTS 250
#define KEY_NAMES 400 /* KEY_PARENTS * KEY_NAMES = 100,000 pairs */
#define KEY_LONG 300  /* names of length 0 .. KEY_LONG - 1 */

/* Bits that are neither the bucket index nor the fingerprint. */
#define FREE_BITS (UINT64_C(0xFFFF) << 32)
#define INDEX_BITS UINT64_C(0xFFFFFFFF)

static uint64_t rng_state;

/* splitmix64: any seed, 0 included, is fine */
static uint64_t rnd64(void)
{
	uint64_t z = (rng_state += UINT64_C(0x9E3779B97F4A7C15));

	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

static size_t rnd(size_t n)
{
	return (size_t)((rnd64() >> 11) % n);
}

static void *grow(void *p, size_t *cap, size_t need, size_t size)
{
	if (need <= *cap)
		return p;
	*cap = *cap ? *cap * 2 : 1024;
	if (*cap < need)
		*cap = need;
	p = realloc(p, *cap * size);
	CHECK(p != NULL);
	return p;
}

/* About how many slots @f has: cuckoo_capacity() is 95 % of them. */
static double slots_of(const struct cuckoo *f)
{
	return (double)cuckoo_capacity(f) / 0.95;
}

/* One live copy of a key in the reference multiset. */
struct copy {
	size_t id;
	bool stored; /* its cuckoo_insert() returned 0 */
};

/*
 * The model. keys[id] is a key hash, mult[id] the number of its live copies
 * (0 .. 2); copies[] lists the live copies, deleted[] the ids with none.
 * stored counts the copies whose insert succeeded: cuckoo_count() must
 * equal it.
 */
struct model {
	struct cuckoo *f;
	const char *phase;
	uint64_t seed;
	size_t ops;
	bool may_fail; /* inserts may fail with -ENOSPC */
	size_t failures;
	size_t stored_at_first_failure;

	uint64_t *keys;
	unsigned char *mult;
	size_t nkeys, keys_cap, mult_cap;
	struct copy *copies;
	size_t ncopies, copies_cap;
	size_t *deleted;
	size_t ndeleted, deleted_cap;
	size_t stored;
};

static void model_init(struct model *m, size_t capacity, const char *phase,
		       uint64_t seed)
{
	memset(m, 0, sizeof(*m));
	m->f = cuckoo_new(capacity);
	CHECK(m->f != NULL);
	m->phase = phase;
	m->seed = seed;
	snprintf(check_context, sizeof(check_context), "seed 0x%" PRIx64 " %s",
		 seed, phase);
}

static void model_release(struct model *m)
{
	cuckoo_free(m->f);
	free(m->keys);
	free(m->mult);
	free(m->copies);
	free(m->deleted);
}

static void full_check(const struct model *m)
{
	for (size_t c = 0; c < m->ncopies; c++)
		CHECK(cuckoo_contains(m->f, m->keys[m->copies[c].id]));
}

/* The checks made after every operation; @id is the key it touched. */
static void after_op(struct model *m, size_t id)
{
	m->ops++;
	snprintf(check_context, sizeof(check_context),
		 "seed 0x%" PRIx64 " %s op %zu key 0x%016" PRIx64, m->seed,
		 m->phase, m->ops, m->keys[id]);
	if (m->mult[id])
		CHECK(cuckoo_contains(m->f, m->keys[id]));
	CHECK_EQ(cuckoo_count(m->f), m->stored);
	if (cuckoo_overflowed(m->f))
		CHECK(cuckoo_contains(m->f, rnd64()));
	if (m->ops % FULL_CHECK_EVERY == 0)
		full_check(m);
}

static size_t add_key(struct model *m, uint64_t key)
{
	m->keys = grow(m->keys, &m->keys_cap, m->nkeys + 1, sizeof(*m->keys));
	m->mult = grow(m->mult, &m->mult_cap, m->nkeys + 1, sizeof(*m->mult));
	m->keys[m->nkeys] = key;
	m->mult[m->nkeys] = 0;
	return m->nkeys++;
}

static void do_insert(struct model *m, size_t id)
{
	int rc = cuckoo_insert(m->f, m->keys[id]);
	struct copy *c;

	if (rc) {
		CHECK(m->may_fail);
		CHECK_EQ(rc, -ENOSPC);
		CHECK(cuckoo_overflowed(m->f));
		if (!m->failures++)
			m->stored_at_first_failure = m->stored;
	} else {
		m->stored++;
	}
	m->copies = grow(m->copies, &m->copies_cap, m->ncopies + 1,
			 sizeof(*m->copies));
	c = &m->copies[m->ncopies++];
	c->id = id;
	c->stored = rc == 0;
	m->mult[id]++;
	after_op(m, id);
}

static void op_insert_new(struct model *m, uint64_t key)
{
	do_insert(m, add_key(m, key));
}

/* A key deleted before comes back. */
static void op_reinsert(struct model *m)
{
	size_t i, id;

	if (!m->ndeleted) {
		op_insert_new(m, rnd64());
		return;
	}
	i = rnd(m->ndeleted);
	id = m->deleted[i];
	m->deleted[i] = m->deleted[--m->ndeleted];
	do_insert(m, id);
}

/* A second copy of a present key (the filter is a multiset). */
static void op_insert_dup(struct model *m)
{
	size_t id;

	if (!m->ncopies) {
		op_insert_new(m, rnd64());
		return;
	}
	id = m->copies[rnd(m->ncopies)].id;
	if (m->mult[id] >= 2)
		op_insert_new(m, rnd64());
	else
		do_insert(m, id);
}

/*
 * Two or three new keys sharing the bucket index and, if @same_fp, the
 * fingerprint too. At most 3 keys * 2 copies of one (bucket, fingerprint)
 * pair exist, fewer than the 8 slots of its two buckets.
 */
static void op_insert_group(struct model *m, bool same_fp)
{
	uint64_t base = rnd64();
	size_t n = 2 + rnd(2);

	for (size_t k = 0; k < n; k++) {
		uint64_t r = rnd64();

		if (same_fp)
			op_insert_new(m, (base & ~FREE_BITS) | (r & FREE_BITS));
		else
			op_insert_new(m,
				      (base & INDEX_BITS) | (r & ~INDEX_BITS));
	}
}

/* Deletes one copy of a present key (the filter only if it was stored). */
static void op_delete(struct model *m)
{
	size_t i, id;
	bool stored;

	if (!m->ncopies) {
		op_insert_new(m, rnd64());
		return;
	}
	i = rnd(m->ncopies);
	id = m->copies[i].id;
	stored = m->copies[i].stored;
	m->copies[i] = m->copies[--m->ncopies];
	m->mult[id]--;
	if (stored) {
		CHECK_EQ(cuckoo_delete(m->f, m->keys[id]), 0);
		m->stored--;
	}
	if (!m->mult[id]) {
		m->deleted = grow(m->deleted, &m->deleted_cap, m->ndeleted + 1,
				  sizeof(*m->deleted));
		m->deleted[m->ndeleted++] = id;
	}
	after_op(m, id);
}

/*
 * One random operation, inserting more often while below @target load.
 * Without @crafted, only inserts of new or deleted keys and deletes.
 */
static void random_op(struct model *m, double target, bool crafted)
{
	double load = (double)m->ncopies / slots_of(m->f);
	size_t r = rnd(100);

	if (load < target ? r >= 70 : r >= 30) {
		op_delete(m);
		return;
	}
	r = rnd(crafted ? 100 : 75);
	if (r < 50)
		op_insert_new(m, rnd64());
	else if (r < 75)
		op_reinsert(m);
	else if (r < 80)
		op_insert_dup(m);
	else if (r < 90)
		op_insert_group(m, true);
	else
		op_insert_group(m, false);
}

/* Deletes every copy; each stored one must be in the filter. */
static void drain(struct model *m)
{
	while (m->ncopies)
		op_delete(m);
	CHECK_EQ(cuckoo_count(m->f), 0);
	full_check(m);
}

static void test_churn(uint64_t seed)
{
	struct model m;
	size_t max_count = 0;

	model_init(&m, CHURN_CAPACITY, "churn", seed);
	while (m.ops < CHURN_OPS) {
		/* a triangle wave between CHURN_LOW and CHURN_HIGH */
		double t = (double)(m.ops % CHURN_PERIOD) / CHURN_PERIOD;
		double tri = t < 0.5 ? 2 * t : 2 - 2 * t;

		random_op(&m, CHURN_LOW + (CHURN_HIGH - CHURN_LOW) * tri, true);
		if (cuckoo_count(m.f) > max_count)
			max_count = cuckoo_count(m.f);
	}
	full_check(&m);
	CHECK(!cuckoo_overflowed(m.f));
	CHECK((double)max_count > 0.85 * slots_of(m.f));
	printf("churn: %zu ops, %zu keys, peak load %.1f %%\n", m.ops, m.nkeys,
	       100.0 * (double)max_count / slots_of(m.f));

	drain(&m);
	/* An empty table holds no fingerprint: every key is absent now. */
	for (size_t id = 0; id < m.nkeys; id++)
		CHECK(!cuckoo_contains(m.f, m.keys[id]));
	model_release(&m);
}

static void test_fill(uint64_t seed)
{
	struct model m;
	size_t end;
	double first;

	model_init(&m, FILL_CAPACITY, "fill", seed);
	m.may_fail = true;
	/*
	 * Random keys reach 95 % load without a failure (about 96.5 % is
	 * typical for 4-slot buckets and 500 kicks) ...
	 */
	while (!m.failures && (double)m.ncopies < FILL_MIN_LOAD * slots_of(m.f))
		random_op(&m, 2.0, false);
	CHECK_EQ(m.failures, 0);
	/* ... then crafted collisions too, until an insert fails. */
	while (!m.failures)
		random_op(&m, 2.0, true);
	first = (double)m.stored_at_first_failure / slots_of(m.f);
	CHECK(first > FILL_MIN_LOAD);
	full_check(&m);

	/* Absent keys are all "present" now. */
	for (int k = 0; k < 10000; k++)
		CHECK(cuckoo_contains(m.f, rnd64()));

	/* Beyond capacity, then churn on the full table. */
	end = m.ops + AFTER_OVERFLOW_OPS;
	while (m.ops < end) {
		bool beyond = m.ops < end - AFTER_OVERFLOW_OPS / 2;

		random_op(&m, beyond ? 1.2 : 0.97, true);
	}
	CHECK(m.failures > 1);
	printf("fill: first failure at load %.2f %% (capacity %zu), "
	       "%zu failed inserts in %zu ops\n",
	       100.0 * first, cuckoo_capacity(m.f), m.failures, m.ops);

	drain(&m);
	CHECK(cuckoo_overflowed(m.f));
	CHECK(cuckoo_contains(m.f, rnd64()));
	model_release(&m);
}

static void test_edges(uint64_t seed)
{
	static const size_t sizes[] = {0,  1,	3,    4,     5,	     19,
				       20, 100, 1000, 15000, 1000000};
	struct cuckoo *f;
	uint64_t base;
	int rc;

	snprintf(check_context, sizeof(check_context),
		 "seed 0x%" PRIx64 " edges", seed);
	cuckoo_free(NULL);
	errno = 0;
	CHECK(cuckoo_new(SIZE_MAX) == NULL);
	CHECK_EQ(errno, ENOMEM);

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct cuckoo *g;

		f = cuckoo_new(sizes[i]);
		CHECK(f != NULL);
		CHECK(cuckoo_capacity(f) >= sizes[i]);
		/* at most twice the rounded-up size, plus a minimal table */
		CHECK(cuckoo_capacity(f) <= 2 * sizes[i] + 4);
		CHECK_EQ(cuckoo_count(f), 0);
		CHECK(!cuckoo_overflowed(f));
		g = cuckoo_new(cuckoo_capacity(f));
		CHECK(g != NULL);
		CHECK_EQ(cuckoo_capacity(g), cuckoo_capacity(f));
		cuckoo_free(g);
		cuckoo_free(f);
	}

	/* An empty table contains nothing; deleting from it is a caller bug. */
	f = cuckoo_new(1000);
	CHECK(f != NULL);
	for (int k = 0; k < 10000; k++)
		CHECK(!cuckoo_contains(f, rnd64()));
	CHECK_EQ(cuckoo_delete(f, rnd64()), -ENOENT);

	/*
	 * Nine keys with one bucket index and one fingerprint: eight fill
	 * both buckets, the ninth cannot fit however it relocates. The
	 * failure must keep the eight.
	 */
	base = rnd64() & ~FREE_BITS;
	for (uint64_t k = 1; k <= 8; k++) {
		CHECK_EQ(cuckoo_insert(f, base | k << 32), 0);
		CHECK(!cuckoo_overflowed(f));
	}
	CHECK_EQ(cuckoo_count(f), 8);
	CHECK_EQ(cuckoo_insert(f, base | UINT64_C(9) << 32), -ENOSPC);
	CHECK(cuckoo_overflowed(f));
	CHECK_EQ(cuckoo_count(f), 8);
	for (uint64_t k = 1; k <= 8; k++)
		CHECK_EQ(cuckoo_delete(f, base | k << 32), 0);
	CHECK_EQ(cuckoo_delete(f, base | UINT64_C(9) << 32), -ENOENT);
	CHECK_EQ(cuckoo_count(f), 0);
	CHECK(cuckoo_overflowed(f));
	CHECK(cuckoo_contains(f, base));
	/* The table still works after overflowing. */
	CHECK_EQ(cuckoo_insert(f, base), 0);
	CHECK_EQ(cuckoo_delete(f, base), 0);
	cuckoo_free(f);

	/*
	 * With two buckets or more a key's two buckets differ, whatever its
	 * fingerprint: eight copies of one key fit in a two-bucket table.
	 */
	for (uint64_t fp = 1; fp <= 64; fp++) {
		f = cuckoo_new(5);
		CHECK(f != NULL);
		for (int k = 0; k < 8; k++)
			CHECK_EQ(cuckoo_insert(f, fp << 48), 0);
		CHECK_EQ(cuckoo_insert(f, fp << 48), -ENOSPC);
		cuckoo_free(f);
	}

	/* One bucket: both candidates are the same four slots. */
	f = cuckoo_new(0);
	CHECK(f != NULL);
	CHECK_EQ(cuckoo_capacity(f), 3);
	for (uint64_t k = 1; k <= 4; k++)
		CHECK_EQ(cuckoo_insert(f, k << 48), 0);
	rc = cuckoo_insert(f, UINT64_C(5) << 48);
	CHECK_EQ(rc, -ENOSPC);
	CHECK_EQ(cuckoo_count(f), 4);
	for (uint64_t k = 1; k <= 4; k++)
		CHECK_EQ(cuckoo_delete(f, k << 48), 0);
	CHECK_EQ(cuckoo_delete(f, UINT64_C(5) << 48), -ENOENT);
	cuckoo_free(f);

	/* Fingerprint 0 is mapped away from "empty": such keys are stored. */
	f = cuckoo_new(100);
	CHECK(f != NULL);
	for (uint64_t k = 0; k < 20; k++)
		CHECK_EQ(cuckoo_insert(f, k), 0);
	for (uint64_t k = 0; k < 20; k++)
		CHECK(cuckoo_contains(f, k));
	CHECK_EQ(cuckoo_count(f), 20);
	for (uint64_t k = 0; k < 20; k++)
		CHECK_EQ(cuckoo_delete(f, k), 0);
	CHECK_EQ(cuckoo_count(f), 0);
	cuckoo_free(f);
	printf("edges: ok\n");
}

static void test_fp_rate(uint64_t seed)
{
	struct cuckoo *f = cuckoo_new(FP_CAPACITY);
	size_t n, hits = 0;
	uint64_t *keys;
	double load, rate;

	snprintf(check_context, sizeof(check_context),
		 "seed 0x%" PRIx64 " fp rate", seed);
	CHECK(f != NULL);
	n = (size_t)(FP_LOAD * slots_of(f));
	keys = malloc(n * sizeof(*keys));
	CHECK(keys != NULL);
	for (size_t i = 0; i < n; i++) {
		keys[i] = rnd64();
		CHECK_EQ(cuckoo_insert(f, keys[i]), 0);
	}
	for (size_t i = 0; i < n; i++)
		CHECK(cuckoo_contains(f, keys[i]));
	load = (double)cuckoo_count(f) / slots_of(f);
	/* Fresh random keys: equal to an inserted one with odds ~1e-8. */
	for (size_t i = 0; i < FP_PROBES; i++)
		hits += cuckoo_contains(f, rnd64());
	rate = (double)hits / FP_PROBES;
	printf("fp rate: %zu of %d absent keys at load %.1f %% = %.4f %% "
	       "(theory %.4f %%, limit %.1f %%)\n",
	       hits, FP_PROBES, 100.0 * load, 100.0 * rate,
	       100.0 * 2 * 4 * load / 65535, 100.0 * FP_MAX_RATE);
	CHECK(rate < FP_MAX_RATE);
	free(keys);
	cuckoo_free(f);
}

/* The name with index @j (of KEY_NAMES); returns its length. */
static size_t key_name(size_t j, char *name)
{
	if (j < KEY_LONG) {
		/* lengths 0 .. 299, past NAME_MAX */
		memset(name, 'x', j);
		return j;
	}
	/* length 3 with an embedded NUL: "n\0" then one varying byte */
	name[0] = 'n';
	name[1] = '\0';
	name[2] = (char)(j - KEY_LONG);
	return 3;
}

static uint64_t key_parent(size_t k)
{
	/* small numbers, and numbers that differ only in the top byte */
	return (k & 1) ? (uint64_t)k << 56 : (uint64_t)k;
}

/* The contract, spelled out: XXH3 of 8 little-endian parent bytes + name. */
static uint64_t reference_key(uint64_t parent, const char *name, size_t len)
{
	unsigned char buf[8 + KEY_LONG];

	for (int b = 0; b < 8; b++)
		buf[b] = (unsigned char)(parent >> (8 * b));
	memcpy(buf + 8, name, len);
	return XXH3_64bits(buf, 8 + len);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

static void test_key(uint64_t seed)
{
	size_t n = (size_t)KEY_PARENTS * KEY_NAMES;
	uint64_t *h = malloc(n * sizeof(*h));
	char name[KEY_LONG];

	snprintf(check_context, sizeof(check_context),
		 "seed 0x%" PRIx64 " cuckoo_key", seed);
	CHECK(h != NULL);
	for (size_t k = 0; k < KEY_PARENTS; k++) {
		for (size_t j = 0; j < KEY_NAMES; j++) {
			size_t len = key_name(j, name);
			uint64_t p = key_parent(k);

			h[k * KEY_NAMES + j] = cuckoo_key(p, name, len);
			CHECK(h[k * KEY_NAMES + j] ==
			      reference_key(p, name, len));
		}
	}
	/* stable: the same input again gives the same hash */
	for (size_t i = 0; i < n; i++) {
		size_t k = i / KEY_NAMES, j = i % KEY_NAMES;
		size_t len = key_name(j, name);

		CHECK(cuckoo_key(key_parent(k), name, len) == h[i]);
	}
	/* pinned, so a change of layout or of hash function is noticed */
	CHECK(cuckoo_key(1, "hello", 5) == UINT64_C(0x2f9639afef7cace3));
	CHECK(cuckoo_key(0, NULL, 0) == reference_key(0, "", 0));
	/* distinct pairs, distinct hashes */
	qsort(h, n, sizeof(*h), cmp_u64);
	for (size_t i = 1; i < n; i++)
		CHECK(h[i] != h[i - 1]);
	printf("cuckoo_key: %zu distinct pairs, distinct stable hashes\n", n);
	free(h);
}

int main(void)
{
	const char *env = getenv("TEST_CUCKOO_SEED");
	uint64_t seed = env ? strtoull(env, NULL, 0) : DEFAULT_SEED;

	printf("test_cuckoo: seed 0x%" PRIx64 "\n", seed);
	fflush(stdout);
	rng_state = seed;
	test_edges(seed);
	test_key(seed);
	test_churn(seed);
	test_fill(seed);
	test_fp_rate(seed);
	printf("test_cuckoo: passed\n");
	return 0;
}
