/*
 * fuzz_id.c - the path codec (engine/id.h) on arbitrary bytes.
 *
 * Input: byte 0 picks the kind (low 2 bits: ITEM_DIR, ITEM_JSON,
 * ITEM_BINARY, or an invalid kind) and is_dir (bit 2); byte 1 picks a small
 * output capacity; the rest is the ID, path or segment under test (NULs
 * included where a function takes a length).
 *
 * Besides "never crash, never write past @cap" (every output buffer is a
 * malloc() of exactly @cap bytes, so ASan sees one byte too many), the
 * invariants of id.h and id.c:
 *  - id_validate() returns 0, -EINVAL or -ENAMETOOLONG;
 *  - a valid ID converts to a path (unless it is a binary item named
 *    "*.json", -EINVAL) that converts back to the same ID and kind;
 *  - a path that converts to an ID gives a valid ID that converts back to
 *    the same path;
 *  - errors do not depend on the buffer size: a smaller @cap gives the same
 *    result, or -ERANGE where the large buffer succeeded;
 *  - id_segment_encode() then id_segment_decode() gives the bytes back, and
 *    a segment without a raw '.' that decodes is the encoding of what it
 *    decodes to (the encoding is canonical).
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "id.h"

static const enum item_kind kinds[4] = {ITEM_DIR, ITEM_JSON, ITEM_BINARY,
					(enum item_kind)7};

/* The result with a buffer of exactly @cap bytes agrees with @big, the
 * result with ample room (@want: its output). */
static void check_small_to_path(const char *id, enum item_kind kind, size_t cap,
				ssize_t big, const char *want)
{
	char *out = malloc(cap ? cap : 1);
	ssize_t r;

	FUZZ_CHECK(out);
	r = id_to_path(id, kind, out, cap);
	if (big < 0)
		FUZZ_CHECK(r == big);
	else if ((size_t)big >= cap)
		FUZZ_CHECK(r == -ERANGE);
	else
		FUZZ_CHECK(r == big && memcmp(out, want, (size_t)big + 1) == 0);
	free(out);
}

static void check_small_from_path(const char *path, bool is_dir, size_t cap,
				  ssize_t big, const char *want,
				  enum item_kind want_kind)
{
	char *out = malloc(cap ? cap : 1);
	enum item_kind k = (enum item_kind)99;
	ssize_t r;

	FUZZ_CHECK(out);
	r = id_from_path(path, is_dir, out, cap, &k);
	if (big < 0) {
		FUZZ_CHECK(r == big);
	} else if ((size_t)big >= cap) {
		FUZZ_CHECK(r == -ERANGE);
	} else {
		FUZZ_CHECK(r == big && memcmp(out, want, (size_t)big + 1) == 0);
		FUZZ_CHECK(k == want_kind);
	}
	free(out);
}

static void fuzz_id_to_path(const char *s, size_t len, enum item_kind kind,
			    size_t cap)
{
	static char path[ID_PATH_MAX + 16], back[ID_MAX + 16];
	enum item_kind k;
	int v = id_validate(s, len, kind);
	ssize_t r = id_to_path(s, kind, path, sizeof(path)), b;

	FUZZ_CHECK(v == 0 || v == -EINVAL || v == -ENAMETOOLONG);
	if (v == 0) {
		FUZZ_CHECK(r >= 0 || (r == -EINVAL && kind == ITEM_BINARY));
	} else {
		FUZZ_CHECK(r == v || (v == -ENAMETOOLONG && r == -EINVAL &&
				      kind == ITEM_BINARY));
	}
	if (r >= 0) {
		FUZZ_CHECK(r < ID_PATH_MAX && strlen(path) == (size_t)r);
		b = id_from_path(path, kind == ITEM_DIR, back, sizeof(back),
				 &k);
		FUZZ_CHECK(b == (ssize_t)len && memcmp(back, s, len + 1) == 0);
		FUZZ_CHECK(k == kind);
	}
	check_small_to_path(s, kind, cap, r, path);
}

static void fuzz_from_path(const char *s, bool is_dir, size_t cap)
{
	static char id[ID_MAX + 16], back[ID_PATH_MAX + 16];
	enum item_kind k = (enum item_kind)99;
	ssize_t r = id_from_path(s, is_dir, id, sizeof(id), &k), b;

	FUZZ_CHECK(r >= 0 || r == -EINVAL || r == -ENAMETOOLONG);
	if (r >= 0) {
		FUZZ_CHECK(r <= ID_MAX && strlen(id) == (size_t)r);
		FUZZ_CHECK(is_dir ? k == ITEM_DIR
				  : (k == ITEM_JSON || k == ITEM_BINARY));
		FUZZ_CHECK(id_validate(id, (size_t)r, k) == 0);
		b = id_to_path(id, k, back, sizeof(back));
		FUZZ_CHECK(b >= 0 && strcmp(back, s) == 0);
	}
	check_small_from_path(s, is_dir, cap, r, id, k);
}

static void fuzz_segments(const char *b, size_t len, size_t cap)
{
	size_t room = 3 * len + 1;
	char *enc = malloc(room), *dec = malloc(room), *small;
	ssize_t e, d, e2;

	FUZZ_CHECK(enc && dec);
	/* component -> segment -> component */
	e = id_segment_encode(b, len, enc, room);
	FUZZ_CHECK(e >= (ssize_t)len && (size_t)e < room);
	d = id_segment_decode(enc, (size_t)e, dec, room);
	FUZZ_CHECK(d == (ssize_t)len && memcmp(dec, b, len) == 0);
	/* segment -> component -> segment, when canonical */
	d = id_segment_decode(b, len, dec, room);
	FUZZ_CHECK(d == -EINVAL || (d >= 0 && (size_t)d <= len));
	if (d >= 0 && !memchr(b, '.', len)) {
		e2 = id_segment_encode(dec, (size_t)d, enc, room);
		FUZZ_CHECK(e2 == (ssize_t)len && memcmp(enc, b, len) == 0);
	}
	/* exact small buffers */
	small = malloc(cap ? cap : 1);
	FUZZ_CHECK(small);
	e2 = id_segment_encode(b, len, small, cap);
	FUZZ_CHECK(e2 == ((size_t)e < cap ? e : -ERANGE));
	e2 = id_segment_decode(b, len, small, cap);
	FUZZ_CHECK(e2 == (d < 0 || (size_t)d < cap ? d : -ERANGE));
	free(small);
	free(enc);
	free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum item_kind kind;
	bool is_dir;
	size_t cap, len;
	char *s;

	if (size < 2)
		return 0;
	kind = kinds[data[0] & 3];
	is_dir = data[0] & 4;
	cap = data[1];
	data += 2;
	size -= 2;

	/* raw bytes, NULs included */
	{
		int v = id_validate((const char *)data, size, kind);

		FUZZ_CHECK(v == 0 || v == -EINVAL || v == -ENAMETOOLONG);
		if (memchr(data, '\0', size))
			FUZZ_CHECK(v != 0);
	}
	fuzz_segments((const char *)data, size, cap);

	/* as a C string: up to the first NUL */
	s = malloc(size + 1);
	FUZZ_CHECK(s);
	memcpy(s, data, size);
	s[size] = '\0';
	len = strlen(s);
	fuzz_id_to_path(s, len, kind, cap);
	fuzz_from_path(s, is_dir, cap);
	/* around the limits: a cap near the length */
	fuzz_id_to_path(s, len, kind, len + (cap & 7));
	fuzz_from_path(s, is_dir, len + (cap & 7));
	free(s);
	return 0;
}
