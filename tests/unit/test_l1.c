/*
 * test_l1.c - unit tests of the L1 item cache (engine/l1.c).
 *
 * The bound (unpinned bytes <= max after every put), pinning (never
 * evicted, whatever flows through; evictable once unpinned; a stale unpin
 * leaves a newer version pinned), the refusal of unpinned items larger than
 * the bound, LRU order, byte accounting on replace and remove, a random
 * model workload and a multi-threaded smoke test. Each test item carries
 * its key in its content, so a get that returns the wrong item is caught.
 * The seed is printed; TEST_L1_SEED in the environment overrides it.
 *
 * Exit status: 0 passed, 1 failed.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "l1.h"

static uint64_t seed;

/* xorshift64* (Vigna), state passed in so that threads have their own */
static uint64_t rng(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * UINT64_C(2685821657736338717);
}

static size_t rnd(uint64_t *s, size_t n)
{
	return (size_t)((rng(s) >> 11) % n);
}

/* A new item of @size bytes whose content starts with @key (when it fits)
 * and then repeats @fill. */
static struct item *make_item(uint64_t key, size_t size, unsigned char fill)
{
	struct item_meta m;
	unsigned char *buf = malloc(size ? size : 1);
	struct item *it;

	CHECK(buf != NULL);
	memset(buf, fill, size);
	if (size >= sizeof(key))
		memcpy(buf, &key, sizeof(key));
	memset(&m, 0, sizeof(m));
	m.kind = ITEM_BINARY;
	m.mode = S_IFREG | 0644;
	it = item_new_take("t", buf, size, &m);
	CHECK(it != NULL);
	return it;
}

/* true when @it is an item made for @key (the check needs 8 bytes). */
static bool item_is_for(const struct item *it, uint64_t key)
{
	uint64_t k;

	if (item_size(it) < sizeof(k))
		return true;
	memcpy(&k, item_data(it), sizeof(k));
	return k == key;
}

static struct l1_stats stats(struct l1 *c)
{
	struct l1_stats s;

	memset(&s, 0xff, sizeof(s));
	l1_get_stats(c, &s);
	return s;
}

static void check_bound(struct l1 *c, size_t max)
{
	struct l1_stats s = stats(c);

	CHECK(s.pinned_bytes <= s.bytes);
	CHECK(s.bytes - s.pinned_bytes <= max);
}

/* l1_get(@key) is @want (NULL: a miss); drops the reference it got. */
static void check_get(struct l1 *c, uint64_t key, const struct item *want)
{
	struct item *got = l1_get(c, key);

	CHECK(got == want);
	item_unref(got);
}

/* ---- small deterministic tests ---- */

static void test_empty(void)
{
	struct l1 *c = l1_new(1000);
	struct l1_stats s;

	CHECK(c != NULL);
	s = stats(c);
	CHECK_EQ(s.bytes, 0);
	CHECK_EQ(s.pinned_bytes, 0);
	CHECK_EQ(s.count, 0);
	CHECK_EQ(s.hits, 0);
	CHECK_EQ(s.misses, 0);
	CHECK_EQ(s.evictions, 0);
	check_get(c, 1, NULL);
	s = stats(c);
	CHECK_EQ(s.misses, 1);
	l1_remove(c, 1);      /* absent: nothing happens */
	l1_unpin(c, 1, NULL); /* absent: nothing happens */
	l1_free(c);
	l1_free(NULL);
}

static void test_replace_and_remove(void)
{
	struct l1 *c = l1_new(1000);
	struct item *a = make_item(1, 100, 'a');
	struct item *b = make_item(1, 30, 'b');
	struct item *p = make_item(2, 200, 'p');
	struct l1_stats s;

	CHECK_EQ(l1_put(c, 1, a, false), 0);
	s = stats(c);
	CHECK_EQ(s.bytes, 100);
	CHECK_EQ(s.count, 1);
	check_get(c, 1, a);
	CHECK_EQ(stats(c).hits, 1);

	/* replacing a key adjusts bytes */
	CHECK_EQ(l1_put(c, 1, b, false), 0);
	s = stats(c);
	CHECK_EQ(s.bytes, 30);
	CHECK_EQ(s.count, 1);
	check_get(c, 1, b);

	/* the same item again changes nothing */
	CHECK_EQ(l1_put(c, 1, b, false), 0);
	CHECK_EQ(stats(c).bytes, 30);

	/* pinned, then replaced by an unpinned version */
	CHECK_EQ(l1_put(c, 2, p, true), 0);
	s = stats(c);
	CHECK_EQ(s.bytes, 230);
	CHECK_EQ(s.pinned_bytes, 200);
	CHECK_EQ(s.count, 2);
	CHECK_EQ(l1_put(c, 2, a, false), 0);
	s = stats(c);
	CHECK_EQ(s.bytes, 130);
	CHECK_EQ(s.pinned_bytes, 0);
	/* an unpinned version replaced by a pinned one */
	CHECK_EQ(l1_put(c, 2, p, true), 0);
	s = stats(c);
	CHECK_EQ(s.bytes, 230);
	CHECK_EQ(s.pinned_bytes, 200);

	/* remove, pinned or not */
	l1_remove(c, 2);
	s = stats(c);
	CHECK_EQ(s.bytes, 30);
	CHECK_EQ(s.pinned_bytes, 0);
	CHECK_EQ(s.count, 1);
	check_get(c, 2, NULL);
	l1_remove(c, 1);
	s = stats(c);
	CHECK_EQ(s.bytes, 0);
	CHECK_EQ(s.count, 0);
	check_get(c, 1, NULL);

	/* the cache held its own references: ours are still good */
	CHECK(item_is_for(a, 1) && item_is_for(p, 2));
	CHECK_EQ(item_size(a), 100);
	item_unref(a);
	item_unref(b);
	item_unref(p);
	l1_free(c);
}

static void test_too_big(void)
{
	struct l1 *c = l1_new(100);
	struct item *fits = make_item(1, 100, 'f');
	struct item *big = make_item(1, 101, 'b');
	struct item *small = make_item(2, 10, 's');
	struct l1_stats s;

	/* exactly the bound: cached */
	CHECK_EQ(l1_put(c, 1, fits, false), 0);
	check_get(c, 1, fits);
	CHECK_EQ(stats(c).bytes, 100);

	/* one byte more, unpinned: not cached, and the key must not keep
	 * serving the version it replaced */
	CHECK_EQ(l1_put(c, 1, big, false), 0);
	check_get(c, 1, NULL);
	s = stats(c);
	CHECK_EQ(s.bytes, 0);
	CHECK_EQ(s.count, 0);

	/* a too-big unpinned item does not push out what is there */
	CHECK_EQ(l1_put(c, 2, small, false), 0);
	CHECK_EQ(l1_put(c, 3, big, false), 0);
	check_get(c, 3, NULL);
	check_get(c, 2, small);
	CHECK_EQ(stats(c).bytes, 10);

	/* pinned, it is cached whatever its size, and bounds the rest */
	CHECK_EQ(l1_put(c, 3, big, true), 0);
	check_get(c, 3, big);
	s = stats(c);
	CHECK_EQ(s.pinned_bytes, 101);
	CHECK_EQ(s.bytes, 111);
	check_bound(c, 100);
	/* unpinned now, it is over the bound by itself: it goes (LRU order
	 * may take the older small entry first) */
	l1_unpin(c, 3, big);
	check_bound(c, 100);
	check_get(c, 3, NULL);
	CHECK_EQ(stats(c).pinned_bytes, 0);

	item_unref(fits);
	item_unref(big);
	item_unref(small);
	l1_free(c);
}

static void test_lru(void)
{
	struct l1 *c = l1_new(300);
	struct item *a = make_item(1, 100, 'a');
	struct item *b = make_item(2, 100, 'b');
	struct item *d = make_item(3, 100, 'c');
	struct item *e = make_item(4, 100, 'd');
	struct item *f = make_item(5, 100, 'e');
	struct l1_stats s;

	CHECK_EQ(l1_put(c, 1, a, false), 0);
	CHECK_EQ(l1_put(c, 2, b, false), 0);
	CHECK_EQ(l1_put(c, 3, d, false), 0);
	CHECK_EQ(stats(c).evictions, 0);
	/* touch the oldest: now 2 is the least recently used */
	check_get(c, 1, a);
	CHECK_EQ(l1_put(c, 4, e, false), 0);
	s = stats(c);
	CHECK_EQ(s.evictions, 1);
	CHECK_EQ(s.bytes, 300);
	CHECK_EQ(s.count, 3);
	/* look without disturbing the order more than needed: 2 is gone */
	check_get(c, 2, NULL);
	/* order now (old -> new): 3, 1, 4. A replace counts as a use. */
	CHECK_EQ(l1_put(c, 3, d, false), 0);
	/* order: 1, 4, 3; the next put evicts 1 */
	CHECK_EQ(l1_put(c, 5, f, false), 0);
	check_get(c, 1, NULL);
	check_get(c, 3, d);
	check_get(c, 4, e);
	check_get(c, 5, f);
	s = stats(c);
	CHECK_EQ(s.evictions, 2);
	CHECK_EQ(s.count, 3);

	/* a pinned entry is out of the LRU game: it stays, others rotate */
	CHECK_EQ(l1_put(c, 1, a, true), 0);
	CHECK_EQ(l1_put(c, 2, b, false), 0);
	check_bound(c, 300);
	check_get(c, 1, a);
	check_get(c, 2, b);

	item_unref(a);
	item_unref(b);
	item_unref(d);
	item_unref(e);
	item_unref(f);
	l1_free(c);
}

static void test_pinned_survive(void)
{
	enum { NPIN = 5, FLOOD = 20000 };
	const size_t max = 1000;
	struct l1 *c = l1_new(max);
	struct item *pinned[NPIN];
	struct l1_stats s;
	uint64_t evictions;

	for (int i = 0; i < NPIN; i++) {
		pinned[i] = make_item(1000 + i, 500, 'p');
		CHECK_EQ(l1_put(c, 1000 + i, pinned[i], true), 0);
	}
	s = stats(c);
	CHECK_EQ(s.pinned_bytes, NPIN * 500);
	CHECK(s.bytes > max); /* pinned bytes exceed the bound: allowed */

	/* lots of unpinned data through the cache, gets in between */
	for (int i = 0; i < FLOOD; i++) {
		uint64_t key = 1 + (uint64_t)(i % 200);
		struct item *it = make_item(key, 1 + (size_t)(i % 300), 'u');

		CHECK_EQ(l1_put(c, key, it, false), 0);
		item_unref(it);
		check_bound(c, max);
		if (i % 1000 == 0)
			for (int j = 0; j < NPIN; j++)
				check_get(c, 1000 + j, pinned[j]);
	}
	for (int j = 0; j < NPIN; j++)
		check_get(c, 1000 + j, pinned[j]);
	s = stats(c);
	CHECK_EQ(s.pinned_bytes, NPIN * 500);
	CHECK(s.evictions > 0);
	evictions = s.evictions;

	/* unpinned, they are ordinary entries: the bound applies again */
	for (int j = 0; j < NPIN; j++) {
		l1_unpin(c, 1000 + j, pinned[j]);
		check_bound(c, max);
	}
	s = stats(c);
	CHECK_EQ(s.pinned_bytes, 0);
	CHECK(s.bytes <= max);
	CHECK(s.evictions >= evictions + NPIN - 2); /* 2 x 500 fit at most */
	/* and fresh data pushes every one of them out */
	for (int i = 0; i < 40; i++) {
		struct item *it = make_item(5000 + i, 100, 'n');

		CHECK_EQ(l1_put(c, 5000 + i, it, false), 0);
		item_unref(it);
	}
	for (int j = 0; j < NPIN; j++)
		check_get(c, 1000 + j, NULL);
	check_bound(c, max);

	/* unpin twice, or with an item never cached: harmless */
	l1_unpin(c, 1000, pinned[0]);
	l1_unpin(c, 5039, pinned[1]);
	check_bound(c, max);
	CHECK_EQ(stats(c).pinned_bytes, 0);

	for (int j = 0; j < NPIN; j++)
		item_unref(pinned[j]);
	l1_free(c);
}

static void test_stale_unpin(void)
{
	const size_t max = 100;
	struct l1 *c = l1_new(max);
	struct item *v1 = make_item(7, 60, '1');
	struct item *v2 = make_item(7, 80, '2');
	struct l1_stats s;

	CHECK_EQ(l1_put(c, 7, v1, true), 0);
	CHECK_EQ(l1_put(c, 7, v2, true), 0); /* a newer version, pinned */
	s = stats(c);
	CHECK_EQ(s.pinned_bytes, 80);
	CHECK_EQ(s.bytes, 80);
	/* the flusher persisted v1 and unpins it: v2 must stay pinned */
	l1_unpin(c, 7, v1);
	s = stats(c);
	CHECK_EQ(s.pinned_bytes, 80);
	/* so it survives a flood */
	for (int i = 0; i < 100; i++) {
		struct item *it = make_item(100 + i, 50, 'f');

		CHECK_EQ(l1_put(c, 100 + i, it, false), 0);
		item_unref(it);
		check_get(c, 7, v2);
	}
	/* unpinning the current version works */
	l1_unpin(c, 7, v2);
	CHECK_EQ(stats(c).pinned_bytes, 0);
	check_bound(c, max);

	/* a stale unpin after the key went unpinned-and-replaced: v1 was
	 * never there; the current unpinned v2 is not disturbed */
	CHECK_EQ(l1_put(c, 7, v2, false), 0);
	l1_unpin(c, 7, v1);
	s = stats(c);
	CHECK_EQ(s.pinned_bytes, 0);
	check_get(c, 7, v2);

	item_unref(v1);
	item_unref(v2);
	l1_free(c);
}

/* ---- random model workload ---- */

#define MODEL_KEYS 64

struct model_key {
	struct item *it; /* our reference to the last put, or NULL */
	bool pinned;	 /* the last put pinned it and no unpin since */
	bool removed;	 /* removed since the last put */
};

static void test_model(void)
{
	const size_t max = 2000;
	struct l1 *c = l1_new(max);
	struct model_key keys[MODEL_KEYS + 1];
	uint64_t s = seed ^ 0x11;
	unsigned long nput = 0, nget = 0, nhit = 0, nunpin = 0, nrm = 0;

	memset(keys, 0, sizeof(keys));
	for (int op = 0; op < 50000; op++) {
		uint64_t key = 1 + rnd(&s, MODEL_KEYS);
		struct model_key *k = &keys[key];
		size_t what = rnd(&s, 100);
		size_t pinned_bytes = 0;
		struct l1_stats st;

		snprintf(check_context, sizeof(check_context),
			 "model op %d key %" PRIu64, op, key);
		if (what < 40) {
			bool pin = rnd(&s, 100) < 15;
			size_t size = rnd(&s, 10) == 0 ? 2000 + rnd(&s, 200)
						       : rnd(&s, 400);
			struct item *it = make_item(key, size, 'm');

			CHECK_EQ(l1_put(c, key, it, pin), 0);
			item_unref(k->it);
			k->it = it;
			k->pinned = pin;
			k->removed = false;
			nput++;
		} else if (what < 80) {
			struct item *got = l1_get(c, key);

			/* never a stale or a foreign version */
			if (got) {
				CHECK(got == k->it);
				CHECK(!k->removed);
				CHECK(item_is_for(got, key));
				nhit++;
			}
			/* pinned: always there */
			if (k->pinned)
				CHECK(got == k->it && got != NULL);
			item_unref(got);
			nget++;
		} else if (what < 92) {
			/* unpin, sometimes with a stale pointer */
			if (k->it && rnd(&s, 4) == 0) {
				struct item *stale = make_item(key, 5, 'x');

				l1_unpin(c, key, stale);
				item_unref(stale);
			} else if (k->it) {
				l1_unpin(c, key, k->it);
				k->pinned = false;
			}
			nunpin++;
		} else {
			l1_remove(c, key);
			k->pinned = false;
			k->removed = true;
			nrm++;
		}
		for (int i = 1; i <= MODEL_KEYS; i++)
			if (keys[i].pinned)
				pinned_bytes += item_size(keys[i].it);
		st = stats(c);
		CHECK_EQ(st.pinned_bytes, pinned_bytes);
		CHECK(st.bytes >= st.pinned_bytes);
		CHECK(st.bytes - st.pinned_bytes <= max);
	}
	check_context[0] = '\0';
	printf("test_l1: model: %lu puts, %lu gets (%lu hits), %lu unpins, "
	       "%lu removes, %" PRIu64 " evictions\n",
	       nput, nget, nhit, nunpin, nrm, stats(c).evictions);
	CHECK(nhit > nget / 10 && stats(c).evictions > 100);

	/* bytes and count agree with what gets return */
	{
		size_t bytes = 0, count = 0;
		struct l1_stats st;

		for (int i = 1; i <= MODEL_KEYS; i++) {
			struct item *got = l1_get(c, (uint64_t)i);

			if (got) {
				bytes += item_size(got);
				count++;
			}
			item_unref(got);
		}
		st = stats(c);
		CHECK_EQ(st.bytes, bytes);
		CHECK_EQ(st.count, count);
	}
	l1_free(c); /* frees pinned entries too */
	for (int i = 1; i <= MODEL_KEYS; i++)
		item_unref(keys[i].it);
}

/* ---- threads ---- */

#define TH_THREADS 4
#define TH_OPS 40000
#define TH_KEYS 128

struct worker {
	struct l1 *c;
	uint64_t seed;
	struct item *last[TH_KEYS + 1]; /* our last put per key */
	unsigned long puts, hits;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	uint64_t s = w->seed;

	for (int op = 0; op < TH_OPS; op++) {
		uint64_t key = 1 + rnd(&s, TH_KEYS);
		size_t what = rnd(&s, 100);

		if (what < 35) {
			struct item *it = make_item(key, 8 + rnd(&s, 600), 'w');

			CHECK_EQ(l1_put(w->c, key, it, rnd(&s, 4) == 0), 0);
			item_unref(w->last[key]);
			w->last[key] = it;
			w->puts++;
		} else if (what < 75) {
			struct item *got = l1_get(w->c, key);

			if (got) {
				CHECK(item_is_for(got, key));
				w->hits++;
			}
			item_unref(got);
		} else if (what < 95) {
			if (w->last[key])
				l1_unpin(w->c, key, w->last[key]);
		} else {
			l1_remove(w->c, key);
		}
	}
	return NULL;
}

static void test_threads(void)
{
	const size_t max = 8192;
	struct l1 *c = l1_new(max);
	struct worker *w = calloc(TH_THREADS, sizeof(*w));
	pthread_t t[TH_THREADS];
	unsigned long puts = 0, hits = 0;
	size_t bytes = 0, count = 0;
	struct l1_stats st;

	CHECK(c != NULL && w != NULL);
	for (int i = 0; i < TH_THREADS; i++) {
		w[i].c = c;
		w[i].seed = seed + (uint64_t)i * 0x9E3779B97F4A7C15ull;
		if (!w[i].seed)
			w[i].seed = 1;
		CHECK_EQ(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < TH_THREADS; i++) {
		CHECK_EQ(pthread_join(t[i], NULL), 0);
		puts += w[i].puts;
		hits += w[i].hits;
	}
	st = stats(c);
	CHECK(st.pinned_bytes <= st.bytes);
	CHECK(st.bytes - st.pinned_bytes <= max);
	/* bytes and count agree with the entries gets find */
	for (uint64_t key = 1; key <= TH_KEYS; key++) {
		struct item *got = l1_get(c, key);

		if (got) {
			CHECK(item_is_for(got, key));
			bytes += item_size(got);
			count++;
		}
		item_unref(got);
	}
	st = stats(c);
	CHECK_EQ(st.bytes, bytes);
	CHECK_EQ(st.count, count);
	/* unpin whatever is cached: nothing stays pinned, the bound holds */
	for (uint64_t key = 1; key <= TH_KEYS; key++) {
		struct item *got = l1_get(c, key);

		if (got)
			l1_unpin(c, key, got);
		item_unref(got);
	}
	st = stats(c);
	CHECK_EQ(st.pinned_bytes, 0);
	CHECK(st.bytes <= max);
	printf("test_l1: threads: %lu puts, %lu hits, %zu left\n", puts, hits,
	       (size_t)st.count);
	l1_free(c);
	for (int i = 0; i < TH_THREADS; i++)
		for (int k = 0; k <= TH_KEYS; k++)
			item_unref(w[i].last[k]);
	free(w);
}

int main(void)
{
	const char *env = getenv("TEST_L1_SEED");

	seed = UINT64_C(0x7469657266730011);
	if (env && *env)
		seed = strtoull(env, NULL, 0);
	if (!seed)
		seed = 1;
	printf("test_l1: seed 0x%016" PRIx64 "\n", seed);
	fflush(stdout);

	test_empty();
	test_replace_and_remove();
	test_too_big();
	test_lru();
	test_pinned_survive();
	test_stale_unpin();
	test_model();
	test_threads();
	printf("test_l1: ok\n");
	return 0;
}
