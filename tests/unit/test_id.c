/*
 * test_id.c - unit tests for the ID/path codec (engine/id.c).
 *
 * First table tests of the examples and refusals of docs/design.md §2,
 * then a round-trip property test: random paths and random IDs from a
 * fixed-seed xorshift generator, each checked against an oracle written
 * here (what the answer must be, error or result) and then round-tripped.
 * The seed is printed; TEST_ID_SEED in the environment overrides it.
 *
 * Exits 0 when every check passes, 1 at the first failure.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "id.h"

#define ROUNDS 20000
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static unsigned long checks;
static char context[512]; /* what is being tested, printed on failure */
static int case_line;	  /* the table case being tested, or 0 */

#define NO_KIND ((enum item_kind)99) /* not a kind: "not written" */

#define CHECK(cond)                                                            \
	do {                                                                   \
		checks++;                                                      \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
				__LINE__, #cond);                              \
			if (case_line)                                         \
				fprintf(stderr, "  in the case at line %d\n",  \
					case_line);                            \
			if (context[0])                                        \
				fprintf(stderr, "  while testing %s\n",        \
					context);                              \
			exit(1);                                               \
		}                                                              \
	} while (0)

/* Sets the failure context to @what followed by @s[0..len), quoted, with
 * bytes outside printable ASCII shown as \xNN. */
static void set_context(const char *what, const char *s, size_t len)
{
	size_t i, n;

	n = (size_t)snprintf(context, sizeof(context), "%s \"", what);
	for (i = 0; i < len && n + 8 < sizeof(context); i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
			context[n++] = (char)c;
		else
			n += (size_t)snprintf(context + n, sizeof(context) - n,
					      "\\x%02x", c);
	}
	snprintf(context + n, sizeof(context) - n, "%s\"",
		 i < len ? "..." : "");
}

static void set_context_str(const char *what, const char *s)
{
	set_context(what, s, strlen(s));
}

/* Fills @buf with @n copies of @c and a NUL; returns @buf. */
static char *fill(char *buf, char c, size_t n)
{
	memset(buf, c, n);
	buf[n] = '\0';
	return buf;
}

/* ---- table tests ---------------------------------------------------- */

/*
 * The helpers below check one case each; their macro names record the line
 * of the case, printed with a failure.
 */
#define PATH_OK(...) (case_line = __LINE__, path_ok(__VA_ARGS__), case_line = 0)
#define PATH_ERR(...)                                                          \
	(case_line = __LINE__, path_err(__VA_ARGS__), case_line = 0)
#define ID_ERR2(...) (case_line = __LINE__, id_err2(__VA_ARGS__), case_line = 0)
#define ID_ERR(...) (case_line = __LINE__, id_err(__VA_ARGS__), case_line = 0)
#define ID_ERR_ALL(...)                                                        \
	(case_line = __LINE__, id_err_all(__VA_ARGS__), case_line = 0)

/* @path (a dir when @is_dir) and @id of @kind map to each other. */
static void path_ok(const char *path, bool is_dir, const char *id,
		    enum item_kind kind)
{
	char buf[ID_PATH_MAX + 8];
	enum item_kind k = NO_KIND;
	size_t idlen = strlen(id), plen = strlen(path);
	ssize_t r;

	set_context_str("path", path);
	r = id_from_path(path, is_dir, buf, sizeof(buf), &k);
	CHECK(r == (ssize_t)idlen);
	CHECK(strcmp(buf, id) == 0);
	CHECK(k == kind);
	/* exact fit, one byte short, no kind wanted */
	CHECK(id_from_path(path, is_dir, buf, idlen + 1, NULL) ==
	      (ssize_t)idlen);
	CHECK(strcmp(buf, id) == 0);
	CHECK(id_from_path(path, is_dir, buf, idlen, &k) == -ERANGE);

	set_context_str("id", id);
	CHECK(id_validate(id, idlen, kind) == 0);
	r = id_to_path(id, kind, buf, sizeof(buf));
	CHECK(r == (ssize_t)plen);
	CHECK(strcmp(buf, path) == 0);
	CHECK(id_to_path(id, kind, buf, plen + 1) == (ssize_t)plen);
	CHECK(strcmp(buf, path) == 0);
	CHECK(id_to_path(id, kind, buf, plen) == -ERANGE);
	context[0] = '\0';
}

/* id_from_path() refuses @path with @err and leaves *kind alone. */
static void path_err(const char *path, bool is_dir, int err)
{
	char buf[ID_PATH_MAX + 8];
	enum item_kind k = NO_KIND;

	set_context_str("path", path);
	CHECK(id_from_path(path, is_dir, buf, sizeof(buf), &k) == -err);
	CHECK(k == NO_KIND);
	context[0] = '\0';
}

/* id_to_path() refuses @id of @kind with @err, and id_validate() says
 * @verr (they differ only for a binary item named "*.json"). */
static void id_err2(const char *id, enum item_kind kind, int err, int verr)
{
	char buf[ID_PATH_MAX + 8];

	set_context_str("id", id);
	CHECK(id_validate(id, strlen(id), kind) == -verr);
	CHECK(id_to_path(id, kind, buf, sizeof(buf)) == -err);
	context[0] = '\0';
}

static void id_err(const char *id, enum item_kind kind, int err)
{
	id_err2(id, kind, err, err);
}

/* Refused whatever the kind. */
static void id_err_all(const char *id, int err)
{
	id_err(id, ITEM_DIR, err);
	id_err(id, ITEM_JSON, err);
	id_err(id, ITEM_BINARY, err);
}

static void test_examples(void)
{
	PATH_OK("user/123.json", false, "user.123", ITEM_JSON);
	PATH_OK("user/notes.v2.txt", false, "user.notes%2Ev2%2Etxt",
		ITEM_BINARY);
	PATH_OK("100%/a%b.json", false, "100%25.a%25b", ITEM_JSON);
	PATH_OK("%", false, "%25", ITEM_BINARY);
	PATH_OK("%2E", false, "%252E", ITEM_BINARY);
	PATH_OK("a/b", true, "a.b", ITEM_DIR);
	PATH_OK("a/b/c", true, "a.b.c", ITEM_DIR);
	PATH_OK("a", true, "a", ITEM_DIR);
	PATH_OK("a", false, "a", ITEM_BINARY);

	/* a JSON item and a directory of one name: same ID, two kinds */
	PATH_OK("a/x.json", false, "a.x", ITEM_JSON);
	PATH_OK("a/x", true, "a.x", ITEM_DIR);
	PATH_OK("user.json", false, "user", ITEM_JSON);
	PATH_OK("user", true, "user", ITEM_DIR);
	/* a directory named *.json is no JSON item */
	PATH_OK("a/x.json", true, "a.x%2Ejson", ITEM_DIR);
	PATH_OK("x.json/y.json", false, "x%2Ejson.y", ITEM_JSON);

	/* JSON names whose stems are dots: ordinary file names */
	PATH_OK("..json", false, "%2E", ITEM_JSON);
	PATH_OK("...json", false, "%2E%2E", ITEM_JSON);
	PATH_OK(".json.json", false, "%2Ejson", ITEM_JSON);
	PATH_OK("x.JSON", false, "x%2EJSON", ITEM_BINARY);
	PATH_OK("json", false, "json", ITEM_BINARY);

	/* names tools make on their own (docs/design.md §2.7) */
	PATH_OK("d/.x.json.swp", false, "d.%2Ex%2Ejson%2Eswp", ITEM_BINARY);
	PATH_OK("d/x.json~", false, "d.x%2Ejson~", ITEM_BINARY);
	PATH_OK("d/4913", false, "d.4913", ITEM_BINARY);
	PATH_OK("d/.x.json.AbC123", false, "d.%2Ex%2Ejson%2EAbC123",
		ITEM_BINARY);
	PATH_OK("d/sedXXXXXX", false, "d.sedXXXXXX", ITEM_BINARY);
	PATH_OK(".hidden", true, "%2Ehidden", ITEM_DIR);

	/* UTF-8 and other high bytes pass as they are */
	PATH_OK("\xc3\xa9t\xc3\xa9/\xe2\x82\xac.json", false,
		"\xc3\xa9t\xc3\xa9.\xe2\x82\xac", ITEM_JSON);
	PATH_OK("\xff\x80.\xf0\x9d\x84\x9e", false,
		"\xff\x80%2E\xf0\x9d\x84\x9e", ITEM_BINARY);
	PATH_OK("a b/ ~!", false, "a b. ~!", ITEM_BINARY);
}

static void test_id_refusals(void)
{
	char big[ID_MAX + 64], seg[1024], buf[ID_PATH_MAX];
	size_t i;

	ID_ERR_ALL("", EINVAL);
	ID_ERR_ALL(".", EINVAL);
	ID_ERR_ALL(".a", EINVAL);
	ID_ERR_ALL("a.", EINVAL);
	ID_ERR_ALL("a..b", EINVAL);
	ID_ERR_ALL("a...b", EINVAL);

	/* escapes: uppercase "%2E" and "%25" only */
	ID_ERR_ALL("a%2eb", EINVAL);
	ID_ERR_ALL("a%41", EINVAL);
	ID_ERR_ALL("a%", EINVAL);
	ID_ERR_ALL("a%2", EINVAL);
	ID_ERR_ALL("%25%", EINVAL);
	ID_ERR_ALL("a%.b", EINVAL);
	ID_ERR_ALL("a%2.b", EINVAL);
	ID_ERR_ALL("%%2E", EINVAL);
	ID_ERR_ALL("%20", EINVAL);

	/* bytes */
	ID_ERR_ALL("a\x01", EINVAL);
	ID_ERR_ALL("a\tb", EINVAL);
	ID_ERR_ALL("\x1f", EINVAL);
	ID_ERR_ALL("a\x7f", EINVAL);
	ID_ERR_ALL("a/b", EINVAL);
	ID_ERR_ALL("/a", EINVAL);
	CHECK(id_validate("a\0b", 3, ITEM_BINARY) == -EINVAL);
	CHECK(id_validate("ab", 2, (enum item_kind)7) == -EINVAL);
	CHECK(id_to_path("ab", (enum item_kind)7, buf, sizeof(buf)) == -EINVAL);
	CHECK(id_validate("ab\0", 2, ITEM_BINARY) == 0); /* @len counts */

	/* a segment naming a dir or binary: not ".", ".." nor ".json" */
	ID_ERR("%2E", ITEM_DIR, EINVAL);
	ID_ERR("%2E", ITEM_BINARY, EINVAL);
	ID_ERR("%2E%2E", ITEM_DIR, EINVAL);
	ID_ERR("%2E%2E", ITEM_BINARY, EINVAL);
	ID_ERR_ALL("a.%2E%2E.b", EINVAL);
	ID_ERR_ALL("%2E.b", EINVAL);
	ID_ERR_ALL("%2Ejson.b", EINVAL);
	ID_ERR("%2Ejson", ITEM_DIR, EINVAL);
	ID_ERR("%2Ejson", ITEM_BINARY, EINVAL);
	PATH_OK("%2E%2E%2E/x", false, "%252E%252E%252E.x", ITEM_BINARY);

	/* a binary item named *.json would show as a JSON file */
	ID_ERR2("x%2Ejson", ITEM_BINARY, EINVAL, 0);
	ID_ERR2("a.b%2Ejson", ITEM_BINARY, EINVAL, 0);
	ID_ERR2("a.%2E%2Ejson", ITEM_BINARY, EINVAL, 0);
	PATH_OK("x.json.json", false, "x%2Ejson", ITEM_JSON);
	PATH_OK("x.json", true, "x%2Ejson", ITEM_DIR);
	PATH_OK("x.jsonx", false, "x%2Ejsonx", ITEM_BINARY);

	/* ID length: ID_MAX bytes, not one more */
	for (i = 0; i < ID_MAX + 1; i++)
		big[i] = (i % 100 == 99) ? '.' : 'a';
	big[ID_MAX] = '\0';
	set_context_str("ID_MAX-byte id", big);
	CHECK(id_validate(big, ID_MAX, ITEM_JSON) == 0);
	CHECK(id_to_path(big, ITEM_JSON, buf, sizeof(buf)) == ID_MAX + 5);
	big[ID_MAX] = 'a';
	big[ID_MAX + 1] = '\0';
	ID_ERR_ALL(big, ENAMETOOLONG);
	/* -EINVAL wins over -ENAMETOOLONG */
	big[ID_MAX] = '\x01';
	ID_ERR_ALL(big, EINVAL);
	big[ID_MAX] = '.';
	ID_ERR_ALL(big, EINVAL);
	/* 1025 bytes ending in "a%2Ejson": too long and a binary *.json */
	memcpy(big + ID_MAX - 7, "a%2Ejson", 9);
	ID_ERR2(big, ITEM_BINARY, EINVAL, ENAMETOOLONG);

	/* decoded segment: 255 bytes, not 256 */
	ID_ERR_ALL(fill(seg, 'a', 256), ENAMETOOLONG);
	PATH_OK(fill(seg, 'a', 255), true, seg, ITEM_DIR);
	PATH_OK(seg, false, seg, ITEM_BINARY);
	/* counted decoded: 1 + 254 escapes is 763 bytes but a 255-byte name */
	seg[0] = 'a';
	for (i = 0; i < 254; i++)
		memcpy(seg + 1 + 3 * i, "%2E", 4);
	CHECK(id_validate(seg, strlen(seg), ITEM_DIR) == 0);
	CHECK(id_to_path(seg, ITEM_DIR, buf, sizeof(buf)) == 255);
	CHECK(buf[0] == 'a' && buf[1] == '.' && buf[254] == '.');
	strcat(seg, "%25");
	ID_ERR(seg, ITEM_DIR, ENAMETOOLONG);
	ID_ERR(seg, ITEM_BINARY, ENAMETOOLONG);

	/* a JSON last segment carries 5 more bytes: 250 + 5 fits, 251 not */
	fill(seg, 'j', 251);
	ID_ERR(seg, ITEM_JSON, ENAMETOOLONG);
	CHECK(id_validate(seg, 251, ITEM_DIR) == 0);
	CHECK(id_validate(seg, 251, ITEM_BINARY) == 0);
	memcpy(big, seg, 252);
	strcat(big, ".x"); /* not last: names a directory */
	CHECK(id_validate(big, strlen(big), ITEM_JSON) == 0);
	fill(seg, 'j', 250);
	CHECK(id_validate(seg, 250, ITEM_JSON) == 0);
	CHECK(id_to_path(seg, ITEM_JSON, buf, sizeof(buf)) == 255);
	CHECK(strcmp(buf + 250, ".json") == 0);
	CHECK(id_from_path(buf, false, big, sizeof(big), NULL) == 250);
	CHECK(strcmp(big, seg) == 0);
	context[0] = '\0';
}

static void test_path_refusals(void)
{
	char name[600], path[8192];
	size_t i;

	PATH_ERR("", false, EINVAL);
	PATH_ERR("", true, EINVAL);
	PATH_ERR("/", true, EINVAL);
	PATH_ERR("/a", false, EINVAL);
	PATH_ERR("a/", true, EINVAL);
	PATH_ERR("a//b", false, EINVAL);
	PATH_ERR(".", true, EINVAL);
	PATH_ERR("..", true, EINVAL);
	PATH_ERR("a/./b", false, EINVAL);
	PATH_ERR("a/../b", false, EINVAL);
	PATH_ERR("a/..", true, EINVAL);
	PATH_ERR(".json", false, EINVAL);
	PATH_ERR(".json", true, EINVAL);
	PATH_ERR("a/.json", false, EINVAL);
	PATH_ERR(".json/a", false, EINVAL);
	PATH_ERR("a\x01/b", false, EINVAL);
	PATH_ERR("a/b\x7f", false, EINVAL);

	/* a component of 255 bytes, not 256 */
	fill(name, 'n', 255);
	PATH_OK(name, false, name, ITEM_BINARY);
	PATH_OK(name, true, name, ITEM_DIR);
	memcpy(name + 250, ".json", 6);
	fill(path, 'n', 250);
	PATH_OK(name, false, path, ITEM_JSON);
	fill(name, 'n', 256);
	PATH_ERR(name, false, ENAMETOOLONG);
	PATH_ERR(name, true, ENAMETOOLONG);
	memcpy(name + 251, ".json", 6);
	PATH_ERR(name, false, ENAMETOOLONG);
	snprintf(path, sizeof(path), "a/%s/b", name);
	PATH_ERR(path, true, ENAMETOOLONG);
	/* -EINVAL wins over -ENAMETOOLONG */
	snprintf(path, sizeof(path), "%s/..", name);
	PATH_ERR(path, true, EINVAL);

	/* valid names, but the ID would pass ID_MAX bytes once escaped: a
	 * 255-byte name of dots is a 763-byte segment */
	name[0] = 'a';
	for (i = 1; i < 255; i++)
		name[i] = '.';
	name[255] = '\0';
	snprintf(path, sizeof(path), "%s/b", name); /* 763 + 2 bytes */
	CHECK(id_from_path(path, false, name + 256, 1, NULL) == -ERANGE);
	snprintf(path, sizeof(path), "%s/%s/%s/%s/%s/%s", name, name, name, name,
		 name, name); /* 6 * 763 + 5 = 4583 bytes, the path 1541 */
	PATH_ERR(path, true, ENAMETOOLONG);
	{
		char id[ID_MAX + 1];
		char *p = path;
		size_t idlen = 763;
		ssize_t r;

		p += sprintf(p, "%s", name);
		while (ID_MAX - idlen > 101) { /* "/" + 100 bytes each */
			p += sprintf(p, "/%s", fill(name + 256, 'z', 100));
			idlen += 101;
		}
		*p++ = '/';
		fill(p, 'z', ID_MAX - idlen - 1); /* exactly ID_MAX bytes */
		set_context_str("ID_MAX-byte id from", path);
		r = id_from_path(path, true, id, sizeof(id), NULL);
		CHECK(r == ID_MAX);
		strcat(p, "z");
		CHECK(id_from_path(path, true, id, sizeof(id), NULL) ==
		      -ENAMETOOLONG);
		context[0] = '\0';
	}
}

static void test_names(void)
{
	char name[300];

	CHECK(id_check_name("", 0) == -EINVAL);
	CHECK(id_check_name(".", 1) == -EINVAL);
	CHECK(id_check_name("..", 2) == -EINVAL);
	CHECK(id_check_name(".json", 5) == -EINVAL);
	CHECK(id_check_name("...", 3) == 0);
	CHECK(id_check_name(".a", 2) == 0);
	CHECK(id_check_name("..json", 6) == 0);
	CHECK(id_check_name("x.json", 6) == 0);
	CHECK(id_check_name("a/b", 3) == -EINVAL);
	CHECK(id_check_name("a\0b", 3) == -EINVAL);
	CHECK(id_check_name("a\nb", 3) == -EINVAL);
	CHECK(id_check_name("\x7f", 1) == -EINVAL);
	CHECK(id_check_name("\xc3\xa9", 2) == 0);
	CHECK(id_check_name("%", 1) == 0);
	CHECK(id_check_name("a.b", 1) == 0); /* only @len bytes count */
	CHECK(id_check_name(fill(name, 'n', 255), 255) == 0);
	CHECK(id_check_name(fill(name, 'n', 256), 256) == -ENAMETOOLONG);
	name[10] = '/';
	CHECK(id_check_name(name, 256) == -EINVAL);

	CHECK(id_name_kind("x.json") == ITEM_JSON);
	CHECK(id_name_kind("..json") == ITEM_JSON);
	CHECK(id_name_kind(".json") == ITEM_BINARY);
	CHECK(id_name_kind("json") == ITEM_BINARY);
	CHECK(id_name_kind("x.JSON") == ITEM_BINARY);
	CHECK(id_name_kind("x.json~") == ITEM_BINARY);
	CHECK(id_name_kind("x.jso") == ITEM_BINARY);
	CHECK(id_name_kind("") == ITEM_BINARY);

	CHECK(id_stem_len("x.json", 6) == 1);
	CHECK(id_stem_len("notes.v2.json", 13) == 8);
	CHECK(id_stem_len(".json", 5) == 5);
	CHECK(id_stem_len("abc", 3) == 3);
	CHECK(id_stem_len("x.json", 5) == 5); /* "x.jso" */
	CHECK(id_stem_len("", 0) == 0);
}

static void test_segments(void)
{
	char out[64];

	CHECK(id_segment_encode("a.b%c", 5, out, sizeof(out)) == 9);
	CHECK(strcmp(out, "a%2Eb%25c") == 0);
	CHECK(id_segment_encode("a.b%c", 5, out, 10) == 9);
	CHECK(id_segment_encode("a.b%c", 5, out, 9) == -ERANGE);
	CHECK(id_segment_encode("", 0, out, 1) == 0 && out[0] == '\0');
	CHECK(id_segment_encode("", 0, out, 0) == -ERANGE);
	CHECK(id_segment_encode("a\0b", 3, out, sizeof(out)) == 3);
	CHECK(memcmp(out, "a\0b", 4) == 0);

	CHECK(id_segment_decode("a%2Eb%25c", 9, out, sizeof(out)) == 5);
	CHECK(strcmp(out, "a.b%c") == 0);
	CHECK(id_segment_decode("a%2Eb%25c", 9, out, 6) == 5);
	CHECK(id_segment_decode("a%2Eb%25c", 9, out, 5) == -ERANGE);
	CHECK(id_segment_decode("%252E", 5, out, sizeof(out)) == 3);
	CHECK(strcmp(out, "%2E") == 0);
	CHECK(id_segment_decode("a%2E", 3, out, sizeof(out)) == -EINVAL);
	CHECK(id_segment_decode("%2e", 3, out, sizeof(out)) == -EINVAL);
	CHECK(id_segment_decode("%41", 3, out, sizeof(out)) == -EINVAL);
	CHECK(id_segment_decode("a%", 2, out, sizeof(out)) == -EINVAL);
	CHECK(id_segment_decode("%%2E", 4, out, sizeof(out)) == -EINVAL);
	/* -EINVAL wins over -ERANGE */
	CHECK(id_segment_decode("abc%", 4, out, 1) == -EINVAL);
	CHECK(id_segment_decode("", 0, out, 1) == 0 && out[0] == '\0');
}

/* ---- property test -------------------------------------------------- */

static uint64_t rng_state;

/* xorshift64* (Vigna) */
static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(2685821657736338717);
}

/* uniform enough in [0, n) */
static size_t rnd(size_t n)
{
	return (size_t)((rng() >> 11) % n);
}

/* true with probability @pct percent */
static bool chance(unsigned pct)
{
	return rnd(100) < pct;
}

/* A length for a component or segment: mostly short, some near the
 * 255-byte limit, some over it. */
static size_t rnd_len(void)
{
	size_t r = rnd(100);

	if (r < 60)
		return 1 + rnd(12);
	if (r < 85)
		return 13 + rnd(90);
	if (r < 95)
		return 200 + rnd(56);
	return 250 + rnd(11);
}

/* Component pieces: bytes as they stand in a name (valid ones). The
 * multibyte ones are UTF-8 for e-acute, the euro sign, the G clef (4 bytes)
 * and two CJK characters, then two bytes that are no UTF-8 at all. */
/* clang-format off */
static const char *const name_pieces[] = {
	"a", "b", "Z", "0", "9", "-", "_", " ", "~", "+", ".", ".", "%", "%",
	"..", "json", ".json", "js", "on", "%2E", "%25", "2E", "25", "E",
	"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9d\x84\x9e",
	"\xe4\xb8\xad\xe6\x96\x87", "\xff", "\x80",
};
/* clang-format on */

/* Whole components that hit the edges of the name rules. */
/* clang-format off */
static const char *const special_names[] = {
	".", "..", ".json", "x.json", "..json", "...json", ".json.json",
	"...", ".x", "x.", "%", "json",
};
/* clang-format on */

struct counts {
	unsigned long ok, json, einval, toolong, collision, dual;
};

/* Builds one random component at @out (no NUL); returns its length. */
static size_t rnd_component(char *out)
{
	size_t target, n = 0, plen;
	const char *p;

	if (chance(2))
		return 0; /* empty: leading, trailing or doubled '/' */
	if (chance(6)) {
		p = special_names[rnd(ARRAY_SIZE(special_names))];
		n = strlen(p);
		memcpy(out, p, n);
		return n;
	}
	target = rnd_len();
	while (n < target) {
		p = name_pieces[rnd(ARRAY_SIZE(name_pieces))];
		plen = strlen(p);
		memcpy(out + n, p, plen);
		n += plen;
	}
	n = target; /* may cut a UTF-8 sequence: bytes are bytes */
	if (chance(1))
		out[rnd(n)] = chance(50) ? '\x01' : '\x7f';
	if (chance(15)) { /* end in ".json" */
		if (n > 250 && !chance(20))
			n = 250;
		memcpy(out + n, ".json", 5);
		n += 5;
	}
	return n;
}

/* The oracle's own encoder: '.' and '%' escaped, nothing else. */
static size_t oracle_encode(const char *s, size_t len, char *out)
{
	size_t i, n = 0;

	for (i = 0; i < len; i++) {
		if (s[i] == '.')
			n += (size_t)sprintf(out + n, "%%2E");
		else if (s[i] == '%')
			n += (size_t)sprintf(out + n, "%%25");
		else
			out[n++] = s[i];
	}
	return n;
}

static bool oracle_bad_name(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || (len == 1 && s[0] == '.') ||
	    (len == 2 && memcmp(s, "..", 2) == 0) ||
	    (len == 5 && memcmp(s, ".json", 5) == 0))
		return true;
	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f || s[i] == '/')
			return true;
	return false;
}

static bool oracle_json_name(const char *s, size_t len)
{
	return len > 5 && memcmp(s + len - 5, ".json", 5) == 0;
}

/* Checks that @path and @id of @kind map to each other, both ways. */
static void round_trip(const char *path, size_t plen, bool is_dir,
		       const char *id, size_t idlen, enum item_kind kind)
{
	char buf[8192];
	enum item_kind k = NO_KIND;

	CHECK(id_from_path(path, is_dir, buf, sizeof(buf), &k) ==
	      (ssize_t)idlen);
	CHECK(memcmp(buf, id, idlen + 1) == 0);
	CHECK(k == kind);
	CHECK(id_from_path(path, is_dir, buf, idlen, NULL) == -ERANGE);
	CHECK(id_validate(id, idlen, kind) == 0);
	CHECK(id_to_path(id, kind, buf, sizeof(buf)) == (ssize_t)plen);
	CHECK(memcmp(buf, path, plen + 1) == 0);
	CHECK(id_to_path(id, kind, buf, plen) == -ERANGE);
	CHECK(id_to_path(id, kind, buf, plen + 1) == (ssize_t)plen);
}

static void prop_path(struct counts *c)
{
	char path[8192], id[8192], buf[8192];
	size_t ncomp = 1 + rnd(chance(80) ? 3 : 8), i, plen = 0, idlen = 0;
	size_t start = 0, clen = 0;
	bool is_dir = chance(40), bad = false, too_long = false;
	enum item_kind kind = is_dir ? ITEM_DIR : ITEM_BINARY, k;
	ssize_t r;

	for (i = 0; i < ncomp; i++) {
		if (i > 0)
			path[plen++] = '/';
		start = plen;
		clen = rnd_component(path + plen);
		plen += clen;
		if (oracle_bad_name(path + start, clen))
			bad = true;
		if (clen > 255)
			too_long = true;
	}
	path[plen] = '\0';

	/* the expected ID */
	for (i = 0; i < plen; i = start + clen + 1) {
		const char *slash = memchr(path + i, '/', plen - i);

		start = i;
		clen = slash ? (size_t)(slash - path) - start : plen - start;
		if (i > 0)
			id[idlen++] = '.';
		if (start + clen == plen && !is_dir &&
		    oracle_json_name(path + start, clen)) {
			kind = ITEM_JSON;
			clen -= 5;
			idlen += oracle_encode(path + start, clen, id + idlen);
			clen += 5;
		} else {
			idlen += oracle_encode(path + start, clen, id + idlen);
		}
	}
	id[idlen] = '\0';
	if (idlen > ID_MAX)
		too_long = true;

	set_context("path", path, plen);
	k = NO_KIND;
	r = id_from_path(path, is_dir, buf, sizeof(buf), &k);
	if (bad) {
		CHECK(r == -EINVAL);
		c->einval++;
	} else if (too_long) {
		CHECK(r == -ENAMETOOLONG);
		c->toolong++;
	} else {
		CHECK(r >= 0);
		round_trip(path, plen, is_dir, id, idlen, kind);
		c->ok++;
		if (kind == ITEM_JSON) {
			/* the directory of the same name: same ID, a dir */
			c->json++;
			path[plen - 5] = '\0';
			set_context("dir", path, plen - 5);
			if (!oracle_bad_name(path + start, clen - 5)) {
				round_trip(path, plen - 5, true, id, idlen,
					   ITEM_DIR);
				c->dual++;
			}
		}
	}
	if (r < 0)
		CHECK(k == NO_KIND);
}

/* ID tokens: an encoded form and what it decodes to. */
struct token {
	const char *enc, *dec;
};

/* clang-format off */
static const struct token id_tokens[] = {
	{"a", "a"}, {"b", "b"}, {"Z", "Z"}, {"0", "0"}, {"-", "-"},
	{"_", "_"}, {" ", " "}, {"~", "~"}, {"%2E", "."}, {"%2E", "."},
	{"%25", "%"}, {"%25", "%"}, {"json", "json"}, {"%2Ejson", ".json"},
	{"2E", "2E"}, {"25", "25"}, {"E", "E"},
	{"\xc3\xa9", "\xc3\xa9"}, {"\xe2\x82\xac", "\xe2\x82\xac"},
	{"\xf0\x9d\x84\x9e", "\xf0\x9d\x84\x9e"}, {"\xff", "\xff"},
};
/* clang-format on */

/* Invalid anywhere in a segment, whatever follows. */
/* clang-format off */
static const char *const bad_tokens[] = {
	"%2e", "%41", "%20", "%%", "/", "\x01", "\x1f", "\x7f",
};
/* clang-format on */

/* Invalid at the end of a segment (before '.' or the end of the ID). */
static const char *const bad_tails[] = {"%", "%2", "%E"};

/* Whole segments that hit the edges of the name rules. */
/* clang-format off */
static const struct token special_segments[] = {
	{"%2E", "."}, {"%2E%2E", ".."}, {"%2Ejson", ".json"},
	{"x%2Ejson", "x.json"}, {"%2E%2Ejson", "..json"}, {"json", "json"},
};
/* clang-format on */

static void prop_id(struct counts *c)
{
	static const enum item_kind kinds[] = {ITEM_DIR, ITEM_JSON,
					       ITEM_BINARY};
	char id[8192], path[8192], buf[8192];
	size_t nseg = 1 + rnd(chance(80) ? 3 : 8), i, idlen = 0, plen = 0;
	size_t dstart = 0, dlen = 0, target;
	enum item_kind kind = kinds[rnd(3)], names;
	bool bad = false, too_long = false, collision = false;
	const struct token *t;
	ssize_t r;
	int v;

	for (i = 0; i < nseg; i++) {
		bool last = i == nseg - 1;

		names = last ? kind : ITEM_DIR;
		if (i > 0) {
			id[idlen++] = '.';
			path[plen++] = '/';
		}
		dstart = plen;
		if (chance(2)) {
			bad = true; /* empty segment */
			continue;
		}
		if (chance(5)) {
			t = &special_segments[rnd(
				ARRAY_SIZE(special_segments))];
			idlen += (size_t)sprintf(id + idlen, "%s", t->enc);
			plen += (size_t)sprintf(path + plen, "%s", t->dec);
		} else {
			target = rnd_len();
			while (plen - dstart < target) {
				t = &id_tokens[rnd(ARRAY_SIZE(id_tokens))];
				idlen += (size_t)sprintf(id + idlen, "%s",
							 t->enc);
				plen += (size_t)sprintf(path + plen, "%s",
							t->dec);
			}
			if (chance(2)) {
				bad = true;
				idlen += (size_t)sprintf(
					id + idlen, "%s",
					bad_tokens[rnd(
						ARRAY_SIZE(bad_tokens))]);
			}
			if (chance(2)) {
				bad = true;
				idlen += (size_t)sprintf(
					id + idlen, "%s",
					bad_tails[rnd(ARRAY_SIZE(bad_tails))]);
			}
		}
		dlen = plen - dstart;
		if (names != ITEM_JSON && oracle_bad_name(path + dstart, dlen))
			bad = true;
		if (dlen + (names == ITEM_JSON ? 5 : 0) > 255)
			too_long = true;
		if (last && kind == ITEM_BINARY &&
		    oracle_json_name(path + dstart, dlen))
			collision = true;
	}
	if (kind == ITEM_JSON)
		plen += (size_t)sprintf(path + plen, ".json");
	id[idlen] = '\0';
	path[plen] = '\0';
	if (idlen > ID_MAX)
		too_long = true;

	set_context("id", id, idlen);
	v = id_validate(id, idlen, kind);
	r = id_to_path(id, kind, buf, sizeof(buf));
	if (bad) {
		CHECK(v == -EINVAL);
		CHECK(r == -EINVAL);
		c->einval++;
	} else if (collision) {
		CHECK(v == (too_long ? -ENAMETOOLONG : 0));
		CHECK(r == -EINVAL);
		c->collision++;
	} else if (too_long) {
		CHECK(v == -ENAMETOOLONG);
		CHECK(r == -ENAMETOOLONG);
		c->toolong++;
	} else {
		CHECK(v == 0);
		CHECK(r >= 0);
		round_trip(path, plen, kind == ITEM_DIR, id, idlen, kind);
		c->ok++;
		if (kind == ITEM_JSON)
			c->json++;
	}
}

static void test_round_trip(uint64_t seed)
{
	struct counts p = {0}, d = {0};
	int i;

	rng_state = seed ? seed : 1;
	for (i = 0; i < ROUNDS; i++) {
		prop_path(&p);
		prop_id(&d);
	}
	context[0] = '\0';
	printf("test_id: paths: %lu round-tripped (%lu json, %lu also as "
	       "dirs), %lu EINVAL, %lu ENAMETOOLONG\n",
	       p.ok, p.json, p.dual, p.einval, p.toolong);
	printf("test_id: ids: %lu round-tripped (%lu json), %lu EINVAL, %lu "
	       "ENAMETOOLONG, %lu binary *.json\n",
	       d.ok, d.json, d.einval, d.toolong, d.collision);
	/* the generators must reach every outcome, valid ones mostly */
	CHECK(p.ok > ROUNDS / 2 && d.ok > ROUNDS / 3);
	CHECK(p.json > 100 && p.dual > 100 && d.json > 100);
	CHECK(p.einval > 100 && p.toolong > 100);
	CHECK(d.einval > 100 && d.toolong > 100 && d.collision > 10);
}

int main(void)
{
	uint64_t seed = UINT64_C(0x7469657266730002);
	const char *env = getenv("TEST_ID_SEED");

	if (env && *env)
		seed = strtoull(env, NULL, 0);
	printf("test_id: seed 0x%016" PRIx64 "\n", seed);
	fflush(stdout);

	test_names();
	test_segments();
	test_examples();
	test_id_refusals();
	test_path_refusals();
	test_round_trip(seed);

	printf("test_id: ok, %lu checks\n", checks);
	return 0;
}
