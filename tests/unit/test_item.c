/*
 * test_item.c - unit tests of items, their metadata and the user xattr blob
 * (engine/item.c).
 *
 * Content is copied byte for byte (NUL bytes included) and hashed with
 * SHA-256 (checked against the FIPS 180-2 vectors); references are counted
 * atomically (a sanitizer build catches a leak or a double free); JSON is
 * accepted exactly when it is one RFC 8259 text; item_meta_copy() is deep;
 * the xattr blob follows the layout and the XATTR_CREATE/XATTR_REPLACE rules
 * of item.h.
 *
 * Exit status: 0 passed, 1 failed.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "check.h"
#include "item.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static const char sha_empty[] =
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
static const char sha_abc[] =
	"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
/* "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq" */
static const char sha_448[] =
	"248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";

static struct item_meta file_meta(enum item_kind kind)
{
	struct item_meta m;

	memset(&m, 0, sizeof(m));
	m.kind = kind;
	m.version = 3;
	m.mtime_ns = 1700000000123456789LL;
	m.ctime_ns = 1700000000987654321LL;
	m.mode = S_IFREG | 0640;
	m.uid = 1000;
	m.gid = 1001;
	return m;
}

static void hex_of(const void *data, size_t len, char out[65])
{
	uint8_t h[ITEM_HASH_LEN];

	item_hash(data, len, h);
	item_hash_hex(h, out);
}

/* ---- hashing ---- */

static void test_hash_vectors(void)
{
	const char *s448 =
		"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	char hex[65];

	memset(hex, 'x', sizeof(hex));
	hex_of("", 0, hex);
	CHECK_STREQ(hex, sha_empty);
	hex_of(NULL, 0, hex); /* no content at all hashes as empty */
	CHECK_STREQ(hex, sha_empty);
	hex_of("abc", 3, hex);
	CHECK_STREQ(hex, sha_abc);
	hex_of(s448, strlen(s448), hex);
	CHECK_STREQ(hex, sha_448);
	CHECK_EQ(strlen(hex), 64);
}

/* ---- items ---- */

static void test_new_copies(void)
{
	char data[] = {'a', '\0', 'b', '\0', '\0', 'c'}; /* NULs inside */
	char id[] = "user.123";
	char expect_hex[65], hex[65];
	struct item_meta m = file_meta(ITEM_BINARY);
	struct item *it;

	m.size = 999;			      /* ignored: computed */
	memset(m.hash, 0xab, sizeof(m.hash)); /* ignored: computed */
	m.state = strdup("draft");
	CHECK(m.state != NULL);
	CHECK_EQ(item_xattr_set(&m, "user.k", "v", 1, 0), 0);

	it = item_new(id, data, sizeof(data), &m);
	CHECK(it != NULL);
	/* the caller's buffers change: the item must not */
	memset(data, 'Z', sizeof(data));
	id[0] = 'X';
	m.state[0] = 'X';
	((char *)m.xattrs)[m.xattrs_len - 1] = 'X';

	CHECK_EQ(item_size(it), 6);
	CHECK(memcmp(item_data(it), "a\0b\0\0c", 6) == 0);
	CHECK(item_data(it) != (const void *)data);
	CHECK_STREQ(item_id(it), "user.123");
	CHECK_EQ(item_meta(it)->size, 6);
	CHECK_EQ(item_meta(it)->kind, ITEM_BINARY);
	CHECK_EQ(item_meta(it)->version, 3);
	CHECK_EQ(item_meta(it)->mtime_ns, 1700000000123456789LL);
	CHECK_EQ(item_meta(it)->ctime_ns, 1700000000987654321LL);
	CHECK_EQ(item_meta(it)->mode, S_IFREG | 0640);
	CHECK_EQ(item_meta(it)->uid, 1000);
	CHECK_EQ(item_meta(it)->gid, 1001);
	CHECK_STREQ(item_meta(it)->state, "draft");
	CHECK(item_meta(it)->state != m.state);
	{
		const void *v;

		CHECK_EQ(item_xattr_get(item_meta(it), "user.k", &v), 1);
		CHECK(memcmp(v, "v", 1) == 0);
	}
	hex_of("a\0b\0\0c", 6, expect_hex);
	item_hash_hex(item_meta(it)->hash, hex);
	CHECK_STREQ(hex, expect_hex);
	item_meta_release(&m);
	item_unref(it);

	/* known vectors through an item */
	m = file_meta(ITEM_JSON);
	it = item_new("e", "", 0, &m);
	CHECK(it != NULL);
	CHECK_EQ(item_size(it), 0);
	CHECK_EQ(item_meta(it)->size, 0);
	item_hash_hex(item_meta(it)->hash, hex);
	CHECK_STREQ(hex, sha_empty);
	item_unref(it);

	it = item_new("a", "abc", 3, &m);
	CHECK(it != NULL);
	item_hash_hex(item_meta(it)->hash, hex);
	CHECK_STREQ(hex, sha_abc);
	CHECK_EQ(item_meta(it)->size, 3);
	item_unref(it);
}

static void test_new_take(void)
{
	struct item_meta m = file_meta(ITEM_BINARY);
	char *buf = malloc(3);
	struct item *it;
	char hex[65];

	CHECK(buf != NULL);
	memcpy(buf, "abc", 3);
	it = item_new_take("t", buf, 3, &m); /* stolen: freed with the item */
	CHECK(it != NULL);
	CHECK(item_data(it) == (const void *)buf);
	CHECK_EQ(item_size(it), 3);
	item_hash_hex(item_meta(it)->hash, hex);
	CHECK_STREQ(hex, sha_abc);
	item_unref(it);
}

static void test_refcount(void)
{
	struct item_meta m = file_meta(ITEM_BINARY);
	struct item *it = item_new("r", "xyz", 3, &m);

	CHECK(it != NULL);
	CHECK(item_ref(it) == it);
	CHECK(item_ref(it) == it);
	item_unref(it);
	item_unref(it);
	/* still alive: one reference left */
	CHECK(memcmp(item_data(it), "xyz", 3) == 0);
	item_unref(it); /* the last one frees (ASan: no leak, no reuse) */

	CHECK(item_ref(NULL) == NULL);
	item_unref(NULL);
}

#define RC_THREADS 4
#define RC_ROUNDS 100000

static void *rc_worker(void *arg)
{
	struct item *it = arg;

	for (int i = 0; i < RC_ROUNDS; i++) {
		struct item *r = item_ref(it);

		CHECK(r == it);
		CHECK(((const char *)item_data(r))[0] == 'q');
		item_unref(r);
	}
	item_unref(it); /* each thread was given one reference */
	return NULL;
}

/* Concurrent ref/unref must neither free early nor leak. */
static void test_refcount_threads(void)
{
	struct item_meta m = file_meta(ITEM_BINARY);
	struct item *it = item_new("c", "q", 1, &m);
	pthread_t t[RC_THREADS];

	CHECK(it != NULL);
	for (int i = 0; i < RC_THREADS; i++) {
		item_ref(it);
		CHECK_EQ(pthread_create(&t[i], NULL, rc_worker, it), 0);
	}
	for (int i = 0; i < RC_THREADS; i++)
		CHECK_EQ(pthread_join(t[i], NULL), 0);
	CHECK(((const char *)item_data(it))[0] == 'q');
	item_unref(it);
}

/* ---- JSON ---- */

struct json_case {
	const char *text;
	size_t len; /* 0: strlen(text) */
	bool valid;
};

static void test_json(void)
{
	static const struct json_case cases[] = {
		/* objects and arrays */
		{"{}", 0, true},
		{"{\"a\":1,\"b\":[true,false,null],\"c\":{\"d\":\"e\"}}", 0,
		 true},
		{"[]", 0, true},
		{"[1, 2.5, -3e10, \"x\"]", 0, true},
		{" \t\r\n{ \"a\" : 1 } \n", 0, true},
		/* any top-level value */
		{"1", 0, true},
		{"-0.5e-3", 0, true},
		{"\"str\"", 0, true},
		{"true", 0, true},
		{"false", 0, true},
		{"null", 0, true},
		/* UTF-8 and escapes */
		{"\"\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e\"", 0, true},
		{"\"\\u00e9\\ud834\\udd1e\\n\"", 0, true},
		{"\"a\\u0000b\"", 0, true}, /* an escaped NUL is JSON */
		/* not JSON */
		{"{", 0, false},
		{"}", 0, false},
		{"{\"a\":}", 0, false},
		{"{'a':1}", 0, false},
		{"[1,]", 0, false},
		{"{\"a\":1,}", 0, false},
		{"tru", 0, false},
		{"nul", 0, false},
		{"01", 0, false},
		{"NaN", 0, false},
		{"\"unterminated", 0, false},
		{" ", 0, false}, /* whitespace only: no value */
		{"\n\n", 0, false},
		/* trailing garbage, two texts */
		{"{} x", 0, false},
		{"{}}", 0, false},
		{"[1]]", 0, false},
		{"{}{}", 0, false},
		{"{} {}", 0, false},
		{"1 2", 0, false},
		{"[] []", 0, false},
		{"\"a\" \"b\"", 0, false},
		{"{}\0", 3, false},	 /* a raw NUL after the text */
		{"\"a\0b\"", 5, false},	 /* a raw NUL inside a string */
		{"\"a\x01\"", 0, false}, /* a raw control byte */
		/* invalid UTF-8 */
		{"\"\xff\"", 0, false},
		{"\"\x80\"", 0, false},		/* a lone continuation byte */
		{"\"\xc3\"", 0, false},		/* cut sequence */
		{"\"\xc3\x28\"", 0, false},	/* bad continuation */
		{"\"\xc0\xaf\"", 0, false},	/* overlong '/' */
		{"\"\xe0\x80\xaf\"", 0, false}, /* overlong, 3 bytes */
		{"\"\xed\xa0\x80\"", 0, false}, /* a UTF-16 surrogate */
		{"\"\xf4\x90\x80\x80\"", 0, false}, /* above U+10FFFF */
		{"{\"\xfe\":1}", 0, false},	    /* in a key */
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		const struct json_case *c = &cases[i];
		size_t len = c->len ? c->len : strlen(c->text);

		snprintf(check_context, sizeof(check_context),
			 "json case %zu: %.60s (len %zu, want %s)", i, c->text,
			 len, c->valid ? "valid" : "invalid");
		CHECK(item_json_valid(c->text, len) == c->valid);
	}
	check_context[0] = '\0';

	/* empty content is valid (a new, empty .json file) */
	CHECK(item_json_valid("", 0));
	CHECK(item_json_valid(NULL, 0));
	CHECK(item_json_valid("garbage", 0));
	/* the length counts, not a NUL terminator */
	CHECK(item_json_valid("{}garbage", 2));
	CHECK(!item_json_valid("{}", 1));
	CHECK(item_json_valid("[1]", 3));
	CHECK(!item_json_valid("[1] ]", 5));
}

/* ---- metadata ---- */

static void test_meta_copy(void)
{
	struct item_meta src = file_meta(ITEM_JSON), dst, empty, cp;
	const void *v;

	memset(src.hash, 0x5a, sizeof(src.hash));
	src.size = 42;
	src.explicit_dir = true;
	src.state = strdup("published");
	CHECK(src.state != NULL);
	CHECK_EQ(item_xattr_set(&src, "user.a", "1", 1, 0), 0);
	CHECK_EQ(item_xattr_set(&src, "user.b", "two", 3, 0), 0);

	memset(&dst, 0xff, sizeof(dst)); /* overwritten, not released */
	CHECK_EQ(item_meta_copy(&dst, &src), 0);
	CHECK_EQ(dst.kind, ITEM_JSON);
	CHECK_EQ(dst.size, 42);
	CHECK(memcmp(dst.hash, src.hash, ITEM_HASH_LEN) == 0);
	CHECK_EQ(dst.version, 3);
	CHECK_EQ(dst.mtime_ns, src.mtime_ns);
	CHECK_EQ(dst.ctime_ns, src.ctime_ns);
	CHECK_EQ(dst.mode, src.mode);
	CHECK_EQ(dst.uid, 1000);
	CHECK_EQ(dst.gid, 1001);
	CHECK(dst.explicit_dir);
	CHECK(dst.state != src.state);
	CHECK_STREQ(dst.state, "published");
	CHECK(dst.xattrs != src.xattrs);
	CHECK_EQ(dst.xattrs_len, src.xattrs_len);
	CHECK(memcmp(dst.xattrs, src.xattrs, src.xattrs_len) == 0);

	/* changing and freeing the source leaves the copy alone */
	src.state[0] = 'X';
	CHECK_EQ(item_xattr_set(&src, "user.a", "changed", 7, 0), 0);
	CHECK_EQ(item_xattr_remove(&src, "user.b"), 0);
	item_meta_release(&src);
	CHECK(src.state == NULL && src.xattrs == NULL);
	CHECK_EQ(src.xattrs_len, 0);
	CHECK_STREQ(dst.state, "published");
	CHECK_EQ(item_xattr_get(&dst, "user.a", &v), 1);
	CHECK(memcmp(v, "1", 1) == 0);
	CHECK_EQ(item_xattr_get(&dst, "user.b", &v), 3);
	CHECK(memcmp(v, "two", 3) == 0);

	/* and the copy's changes do not reach a copy of it */
	CHECK_EQ(item_meta_copy(&cp, &dst), 0);
	CHECK_EQ(item_xattr_set(&dst, "user.c", "3", 1, 0), 0);
	CHECK_EQ(item_xattr_get(&cp, "user.c", &v), -ENODATA);
	item_meta_release(&cp);
	item_meta_release(&dst);

	/* no owned fields */
	memset(&empty, 0, sizeof(empty));
	empty.kind = ITEM_DIR;
	memset(&cp, 0xff, sizeof(cp));
	CHECK_EQ(item_meta_copy(&cp, &empty), 0);
	CHECK(cp.state == NULL);
	CHECK(cp.xattrs == NULL);
	CHECK_EQ(cp.xattrs_len, 0);
	CHECK_EQ(cp.kind, ITEM_DIR);
	item_meta_release(&cp);
	item_meta_release(&cp); /* twice is fine: the fields are NULL */
	item_meta_release(NULL);
}

/* ---- xattr blob ---- */

struct names {
	char list[16][300];
	int n;
	int stop_at; /* return 7 from the call with this index, or -1 */
};

static int collect(void *arg, const char *name)
{
	struct names *c = arg;

	CHECK(c->n < 16);
	snprintf(c->list[c->n], sizeof(c->list[0]), "%s", name);
	if (c->n++ == c->stop_at)
		return 7;
	return 0;
}

static struct names names_of(const struct item_meta *m)
{
	struct names c;

	memset(&c, 0, sizeof(c));
	c.stop_at = -1;
	CHECK_EQ(item_xattr_foreach(m, collect, &c), 0);
	return c;
}

/* Saves @m's blob to compare after a refused change. */
struct blob_copy {
	uint8_t bytes[1024];
	size_t len;
};

static struct blob_copy save_blob(const struct item_meta *m)
{
	struct blob_copy b;

	CHECK(m->xattrs_len <= sizeof(b.bytes));
	b.len = m->xattrs_len;
	if (b.len)
		memcpy(b.bytes, m->xattrs, b.len);
	return b;
}

static void check_blob_same(const struct item_meta *m,
			    const struct blob_copy *b)
{
	CHECK_EQ(m->xattrs_len, b->len);
	if (b->len)
		CHECK(memcmp(m->xattrs, b->bytes, b->len) == 0);
}

static void test_xattr_basic(void)
{
	struct item_meta m = file_meta(ITEM_BINARY);
	const void *v = NULL;
	struct names c;
	struct blob_copy saved;

	/* empty blob */
	CHECK_EQ(item_xattr_get(&m, "user.a", &v), -ENODATA);
	CHECK_EQ(item_xattr_remove(&m, "user.a"), -ENODATA);
	c = names_of(&m);
	CHECK_EQ(c.n, 0);
	CHECK_EQ(item_xattr_set(&m, "user.a", "x", 1, XATTR_REPLACE), -ENODATA);
	CHECK_EQ(m.xattrs_len, 0);

	/* set, get */
	CHECK_EQ(item_xattr_set(&m, "user.a", "alpha", 5, 0), 0);
	CHECK_EQ(item_xattr_get(&m, "user.a", &v), 5);
	CHECK(memcmp(v, "alpha", 5) == 0);
	CHECK_EQ(item_xattr_get(&m, "user.b", &v), -ENODATA);
	CHECK_EQ(item_xattr_get(&m, "user.", &v), -ENODATA); /* a prefix */
	CHECK_EQ(item_xattr_get(&m, "user.aa", &v), -ENODATA);

	/* the documented layout: u16 name_len, u32 value_len (LE), name,
	 * value */
	CHECK_EQ(m.xattrs_len, 6 + 6 + 5);
	{
		const uint8_t *b = m.xattrs;

		CHECK(b[0] == 6 && b[1] == 0);
		CHECK(b[2] == 5 && b[3] == 0 && b[4] == 0 && b[5] == 0);
		CHECK(memcmp(b + 6, "user.a", 6) == 0);
		CHECK(memcmp(b + 12, "alpha", 5) == 0);
	}

	/* XATTR_CREATE on an existing name: refused, nothing changes */
	saved = save_blob(&m);
	CHECK_EQ(item_xattr_set(&m, "user.a", "new", 3, XATTR_CREATE), -EEXIST);
	check_blob_same(&m, &saved);
	/* XATTR_REPLACE on an absent name: refused, nothing changes */
	CHECK_EQ(item_xattr_set(&m, "user.zz", "new", 3, XATTR_REPLACE),
		 -ENODATA);
	check_blob_same(&m, &saved);
	/* XATTR_CREATE on a new name, XATTR_REPLACE on an existing one */
	CHECK_EQ(item_xattr_set(&m, "user.b", "beta", 4, XATTR_CREATE), 0);
	CHECK_EQ(item_xattr_set(&m, "user.a", "ALPHA!", 6, XATTR_REPLACE), 0);
	CHECK_EQ(item_xattr_get(&m, "user.a", &v), 6);
	CHECK(memcmp(v, "ALPHA!", 6) == 0);
	/* a set moves the name last: the blob keeps the order of last sets */
	c = names_of(&m);
	CHECK_EQ(c.n, 2);
	CHECK_STREQ(c.list[0], "user.b");
	CHECK_STREQ(c.list[1], "user.a");
	CHECK_EQ(item_xattr_get(&m, "user.b", &v), 4);
	CHECK(memcmp(v, "beta", 4) == 0);
	/* flags 0 replaces too */
	CHECK_EQ(item_xattr_set(&m, "user.b", "b2", 2, 0), 0);
	CHECK_EQ(item_xattr_get(&m, "user.b", &v), 2);
	CHECK(memcmp(v, "b2", 2) == 0);
	/* names stay unique: two records in the blob, in the order they
	 * were last set (item.h): user.a ("ALPHA!"), then user.b ("b2") */
	c = names_of(&m);
	CHECK_EQ(c.n, 2);
	CHECK_STREQ(c.list[0], "user.a");
	CHECK_STREQ(c.list[1], "user.b");
	CHECK_EQ(m.xattrs_len, (6 + 6 + 6) + (6 + 6 + 2));

	/* binary values with NUL bytes, and empty values */
	CHECK_EQ(item_xattr_set(&m, "user.bin", "\0\1\0\2", 4, 0), 0);
	CHECK_EQ(item_xattr_get(&m, "user.bin", &v), 4);
	CHECK(memcmp(v, "\0\1\0\2", 4) == 0);
	CHECK_EQ(item_xattr_set(&m, "user.empty", "", 0, 0), 0);
	CHECK_EQ(item_xattr_get(&m, "user.empty", &v), 0);
	CHECK_EQ(item_xattr_set(&m, "user.empty", "", 0, XATTR_CREATE),
		 -EEXIST);

	/* remove one in the middle; the others are intact */
	CHECK_EQ(item_xattr_remove(&m, "user.b"), 0);
	CHECK_EQ(item_xattr_remove(&m, "user.b"), -ENODATA);
	CHECK_EQ(item_xattr_get(&m, "user.b", &v), -ENODATA);
	CHECK_EQ(item_xattr_get(&m, "user.a", &v), 6);
	CHECK(memcmp(v, "ALPHA!", 6) == 0);
	CHECK_EQ(item_xattr_get(&m, "user.bin", &v), 4);
	CHECK(memcmp(v, "\0\1\0\2", 4) == 0);
	CHECK_EQ(item_xattr_get(&m, "user.empty", &v), 0);
	c = names_of(&m);
	CHECK_EQ(c.n, 3);

	/* remove everything: an empty blob */
	CHECK_EQ(item_xattr_remove(&m, "user.a"), 0);
	CHECK_EQ(item_xattr_remove(&m, "user.bin"), 0);
	CHECK_EQ(item_xattr_remove(&m, "user.empty"), 0);
	CHECK_EQ(m.xattrs_len, 0);
	c = names_of(&m);
	CHECK_EQ(c.n, 0);
	CHECK_EQ(item_xattr_get(&m, "user.a", &v), -ENODATA);
	item_meta_release(&m);
}

static void test_xattr_order_and_foreach(void)
{
	static const char *const order[] = {"user.z", "user.a", "user.m",
					    "user.b", "user.y"};
	struct item_meta m = file_meta(ITEM_BINARY);
	struct names c;

	for (size_t i = 0; i < ARRAY_SIZE(order); i++)
		CHECK_EQ(item_xattr_set(&m, order[i], order[i],
					strlen(order[i]), XATTR_CREATE),
			 0);
	c = names_of(&m);
	CHECK_EQ(c.n, (int)ARRAY_SIZE(order));
	for (size_t i = 0; i < ARRAY_SIZE(order); i++)
		CHECK_STREQ(c.list[i], order[i]); /* insertion order */

	/* a non-zero return stops the walk and is returned */
	memset(&c, 0, sizeof(c));
	c.stop_at = 2;
	CHECK_EQ(item_xattr_foreach(&m, collect, &c), 7);
	CHECK_EQ(c.n, 3);
	CHECK_STREQ(c.list[2], "user.m");

	/* removing keeps the others in order */
	CHECK_EQ(item_xattr_remove(&m, "user.a"), 0);
	c = names_of(&m);
	CHECK_EQ(c.n, 4);
	CHECK_STREQ(c.list[0], "user.z");
	CHECK_STREQ(c.list[1], "user.m");
	CHECK_STREQ(c.list[2], "user.b");
	CHECK_STREQ(c.list[3], "user.y");
	item_meta_release(&m);
}

static void test_xattr_limits(void)
{
	struct item_meta m = file_meta(ITEM_BINARY);
	char name[300];
	const void *v;
	struct blob_copy saved;
	size_t big = 65536;
	char *val = malloc(big + 1);

	CHECK(val != NULL);
	memset(val, 'v', big + 1);
	CHECK_EQ(item_xattr_set(&m, "user.keep", "k", 1, 0), 0);
	saved = save_blob(&m);

	/* a 255-byte name is fine, a 256-byte one is -ERANGE */
	memset(name, 'n', 255);
	memcpy(name, "user.", 5);
	name[255] = '\0';
	CHECK_EQ(item_xattr_set(&m, name, "1", 1, 0), 0);
	CHECK_EQ(item_xattr_get(&m, name, &v), 1);
	CHECK_EQ(item_xattr_remove(&m, name), 0);
	check_blob_same(&m, &saved);
	memset(name, 'n', 256);
	memcpy(name, "user.", 5);
	name[256] = '\0';
	CHECK_EQ(item_xattr_set(&m, name, "1", 1, 0), -ERANGE);
	CHECK_EQ(item_xattr_set(&m, name, "1", 1, XATTR_CREATE), -ERANGE);
	check_blob_same(&m, &saved);
	CHECK_EQ(item_xattr_get(&m, name, &v), -ENODATA);

	/* a 64 KiB value is fine, one byte more is -ERANGE */
	CHECK_EQ(item_xattr_set(&m, "user.big", val, big, 0), 0);
	CHECK_EQ(item_xattr_get(&m, "user.big", &v), (long long)big);
	CHECK(memcmp(v, val, big) == 0);
	CHECK_EQ(item_xattr_remove(&m, "user.big"), 0);
	check_blob_same(&m, &saved);
	CHECK_EQ(item_xattr_set(&m, "user.big", val, big + 1, 0), -ERANGE);
	check_blob_same(&m, &saved);
	/* replacing an existing value with a too long one changes nothing */
	CHECK_EQ(item_xattr_set(&m, "user.keep", val, big + 1, 0), -ERANGE);
	check_blob_same(&m, &saved);

	free(val);
	item_meta_release(&m);
}

int main(void)
{
	test_hash_vectors();
	test_new_copies();
	test_new_take();
	test_refcount();
	test_refcount_threads();
	test_json();
	test_meta_copy();
	test_xattr_basic();
	test_xattr_order_and_foreach();
	test_xattr_limits();
	printf("test_item: ok\n");
	return 0;
}
