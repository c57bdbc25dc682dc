/*
 * test_merkle.c - unit tests of the Merkle hash (engine/merkle.c).
 *
 * Golden vectors: trees built here through the API must hash to the values
 * below, which were computed independently of merkle.c with Python's
 * hashlib from the definition in merkle.h:
 *
 *   import hashlib
 *   H = lambda b: hashlib.sha256(b).digest()
 *   def node(children):  # [(name bytes, 'd' or 'f', 32-byte hash)]
 *       assert [c[0] for c in children] == sorted(c[0] for c in children)
 *       return H(b"".join(n + b"\0" + t.encode() + h
 *                         for n, t, h in children))
 *   empty = H(b"")
 *   print(empty.hex())                                   # EMPTY
 *   print(node([(b"empty", "f", H(b""))]).hex())         # ONE_EMPTY_FILE
 *   print(node([(b"empty", "d", empty)]).hex())          # ONE_EMPTY_DIR
 *   print(node([(b"a", "f", H(b"A")),                    # PREFIXES
 *               (b"a.json", "f", H(b"{}")),
 *               (b"ab", "d", empty),
 *               (b"\x80", "f", H(b"\x80")),
 *               (b"\xc3\xa9", "f", H(b"\xc3\xa9"))]).hex())
 *   x = node([(b"y", "f", H(b"hi"))])
 *   print(node([(b"x", "d", x),                          # X_BESIDE_X_JSON
 *               (b"x.json", "f", H(b'{"x":1}'))]).hex())
 *   print(H(b"abc").hex())                               # ABC
 *
 * Then the order of children (merkle_name_cmp: bytes unsigned, a prefix
 * first, lengths honoured rather than NULs), and content fed to
 * merkle_update() in random pieces against the same content in one piece.
 * The seed is printed; TEST_MERKLE_SEED in the environment overrides it.
 *
 * Exit status: 0 passed, 1 failed.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "merkle.h"

#define EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define ONE_EMPTY_FILE                                                         \
	"4292d9111a708545cc771db3909675a9f0390ca33f5f0378360917beaf033c74"
#define ONE_EMPTY_DIR                                                          \
	"503a808de824d1213560bafbc9dcad92d171481d973f31301ec61cf4f8da29c2"
#define PREFIXES                                                               \
	"f843e3eacf99852fea9a3e08426355f308e5961d343bb1e9eaf5977fc90a91ab"
#define X_BESIDE_X_JSON                                                        \
	"aa567e65417df6227f1e0e06da26edc613e5ae85a794d0224a5826acd79602c4"
#define ABC "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static uint64_t rng_state;

/* xorshift64* (Vigna) */
static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(2685821657736338717);
}

/* Writes @h as 64 lowercase hex digits and a NUL to @out. */
static void hex(const uint8_t h[MERKLE_LEN], char out[2 * MERKLE_LEN + 1])
{
	for (int i = 0; i < MERKLE_LEN; i++)
		snprintf(out + 2 * i, 3, "%02x", h[i]);
}

#define CHECK_HASH(h, want)                                                    \
	do {                                                                   \
		char got_hex_[2 * MERKLE_LEN + 1];                             \
		hex(h, got_hex_);                                              \
		CHECK_STREQ(got_hex_, want);                                   \
	} while (0)

/* The leaf hash of a file holding the NUL-terminated string @content. */
static void leaf(const char *content, uint8_t out[MERKLE_LEN])
{
	struct merkle *m = merkle_begin();

	CHECK(m);
	merkle_update(m, content, strlen(content));
	merkle_end(m, out);
}

/* One child of a directory under test. */
struct child {
	const char *name;
	bool is_dir;
	uint8_t hash[MERKLE_LEN];
};

static int child_cmp(const void *a, const void *b)
{
	const struct child *x = a, *y = b;

	return merkle_name_cmp(x->name, strlen(x->name), y->name,
			       strlen(y->name));
}

/* The node hash of a directory holding @c[0..n), which it sorts first
 * with merkle_name_cmp(). */
static void node(struct child *c, size_t n, uint8_t out[MERKLE_LEN])
{
	struct merkle *m = merkle_begin();

	CHECK(m);
	qsort(c, n, sizeof(*c), child_cmp);
	for (size_t i = 0; i < n; i++)
		merkle_add_child(m, c[i].name, strlen(c[i].name), c[i].is_dir,
				 c[i].hash);
	merkle_end(m, out);
}

static void test_empty(void)
{
	uint8_t h[MERKLE_LEN];
	struct merkle *m;

	snprintf(check_context, sizeof(check_context), "the empty hashes");
	merkle_empty(h);
	CHECK_HASH(h, EMPTY);
	/* an empty directory: no children */
	m = merkle_begin();
	CHECK(m);
	merkle_end(m, h);
	CHECK_HASH(h, EMPTY);
	/* an empty file: updates of no bytes */
	m = merkle_begin();
	CHECK(m);
	merkle_update(m, "", 0);
	merkle_end(m, h);
	CHECK_HASH(h, EMPTY);
	/* the NULLs the header allows */
	merkle_end(NULL, h);
	CHECK_HASH(h, EMPTY); /* untouched */
	merkle_abort(NULL);
	m = merkle_begin();
	CHECK(m);
	merkle_update(m, "abandoned", 9);
	merkle_abort(m);
}

static void test_one_empty_file(void)
{
	struct child c[1] = {{.name = "empty"}};
	uint8_t h[MERKLE_LEN];

	snprintf(check_context, sizeof(check_context),
		 "a directory holding "
		 "one empty file");
	leaf("", c[0].hash);
	node(c, ARRAY_SIZE(c), h);
	CHECK_HASH(h, ONE_EMPTY_FILE);
	/* the same name as an empty directory: the type byte differs */
	c[0].is_dir = true;
	node(c, ARRAY_SIZE(c), h);
	CHECK_HASH(h, ONE_EMPTY_DIR);
}

/* Children whose names are prefixes of each other, and names with bytes
 * >= 0x80 (which sort after ASCII: unsigned bytes), fed in every rotation
 * of their order: node() sorts them, and the hash must not change. */
static void test_prefixes(void)
{
	static const char *const names[] = {"a", "a.json", "ab", "\x80",
					    "\xc3\xa9"};
	static const char *const contents[] = {"A", "{}", NULL, "\x80",
					       "\xc3\xa9"};
	const size_t n = ARRAY_SIZE(names);
	struct child c[ARRAY_SIZE(names)];
	uint8_t h[MERKLE_LEN];

	for (size_t rot = 0; rot < n; rot++) {
		snprintf(check_context, sizeof(check_context),
			 "prefix names, rotated by %zu", rot);
		for (size_t i = 0; i < n; i++) {
			size_t k = (i + rot) % n;

			memset(&c[i], 0, sizeof(c[i]));
			c[i].name = names[k];
			c[i].is_dir = !contents[k];
			if (contents[k])
				leaf(contents[k], c[i].hash);
			else
				merkle_empty(c[i].hash);
		}
		node(c, n, h);
		CHECK_HASH(h, PREFIXES);
		for (size_t i = 0; i < n; i++)
			CHECK_STREQ(c[i].name, names[i]);
	}
}

/* A JSON item "x.json" beside a directory "x": two children. */
static void test_x_beside_x_json(void)
{
	struct child y[1] = {{.name = "y"}};
	struct child c[2] = {{.name = "x.json"}, {.name = "x", .is_dir = true}};
	uint8_t h[MERKLE_LEN];

	snprintf(check_context, sizeof(check_context), "x beside x.json");
	leaf("hi", y[0].hash);
	node(y, 1, c[1].hash);
	leaf("{\"x\":1}", c[0].hash);
	node(c, 2, h);
	CHECK_HASH(h, X_BESIDE_X_JSON);
	CHECK_STREQ(c[0].name, "x");
}

static int sign(int v)
{
	return v < 0 ? -1 : v > 0;
}

static void test_name_cmp(void)
{
	static const struct {
		const char *a;
		size_t alen;
		const char *b;
		size_t blen;
		int want;
	} cases[] = {
		{"a", 1, "a", 1, 0},
		{"", 0, "", 0, 0},
		{"", 0, "a", 1, -1},
		{"a", 1, "ab", 2, -1}, /* a prefix sorts first */
		{"ab", 2, "a", 1, 1},
		{"a", 1, "a.json", 6, -1},
		{"a.json", 6, "ab", 2, -1}, /* '.' < 'b' */
		{"x", 1, "x.json", 6, -1},
		{"B", 1, "a", 1, -1},	       /* bytes, not case folding */
		{"z", 1, "\x80", 1, -1},       /* unsigned: 0x80 > 'z' */
		{"\x7f", 1, "\x80", 1, -1},    /* not signed char */
		{"\xff", 1, "\xc3\xa9", 2, 1}, /* bytes, not code points */
		{"\xc3\xa9", 2, "f", 1, 1},    /* not a locale's collation */
		{"ab", 1, "ac", 1, 0},	       /* only the given lengths */
		{"abc", 2, "ab", 2, 0},
		{"abc", 3, "ab", 2, 1},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		snprintf(check_context, sizeof(check_context),
			 "merkle_name_cmp case %zu", i);
		CHECK_EQ(sign(merkle_name_cmp(cases[i].a, cases[i].alen,
					      cases[i].b, cases[i].blen)),
			 cases[i].want);
		CHECK_EQ(sign(merkle_name_cmp(cases[i].b, cases[i].blen,
					      cases[i].a, cases[i].alen)),
			 -cases[i].want);
	}
}

/* merkle_update() in pieces equals one piece: the known vector "abc",
 * then random content cut at random places (pieces of 0 bytes too). */
static void test_update_pieces(void)
{
	const size_t len = 3 * 1024 * 1024 + 17;
	uint8_t one[MERKLE_LEN], pieces[MERKLE_LEN];
	uint8_t *data = malloc(len);
	struct merkle *m;

	CHECK(data);
	snprintf(check_context, sizeof(check_context), "\"abc\" in pieces");
	m = merkle_begin();
	CHECK(m);
	merkle_update(m, "a", 1);
	merkle_update(m, "", 0);
	merkle_update(m, "bc", 2);
	merkle_end(m, pieces);
	CHECK_HASH(pieces, ABC);

	for (size_t i = 0; i < len; i++)
		data[i] = (uint8_t)rng();
	m = merkle_begin();
	CHECK(m);
	merkle_update(m, data, len);
	merkle_end(m, one);
	for (int round = 0; round < 20; round++) {
		size_t off = 0;

		snprintf(check_context, sizeof(check_context),
			 "%zu random bytes in random pieces, round %d", len,
			 round);
		m = merkle_begin();
		CHECK(m);
		while (off < len) {
			/* mostly small pieces, sometimes large, some empty */
			size_t max = rng() % 8 == 0 ? 1024 * 1024 : 300;
			size_t piece = (size_t)(rng() % (max + 1));

			if (piece > len - off)
				piece = len - off;
			merkle_update(m, data + off, piece);
			off += piece;
		}
		merkle_end(m, pieces);
		CHECK(memcmp(one, pieces, MERKLE_LEN) == 0);
	}
	/* and a change of one byte shows */
	data[len / 2] ^= 1;
	m = merkle_begin();
	CHECK(m);
	merkle_update(m, data, len);
	merkle_end(m, pieces);
	CHECK(memcmp(one, pieces, MERKLE_LEN) != 0);
	free(data);
}

int main(void)
{
	uint64_t seed = UINT64_C(0x746965726673000d);
	const char *env = getenv("TEST_MERKLE_SEED");

	if (env && *env)
		seed = strtoull(env, NULL, 0);
	printf("test_merkle: seed 0x%016" PRIx64 "\n", seed);
	fflush(stdout);
	rng_state = seed ? seed : 1;

	test_empty();
	test_one_empty_file();
	test_prefixes();
	test_x_beside_x_json();
	test_name_cmp();
	test_update_pieces();
	printf("test_merkle: ok\n");
	return 0;
}
