/*
 * id.c - item IDs and the path codec (docs/design.md §2).
 *
 * Maps relative paths ("user/notes.v2.txt") to item IDs
 * ("user.notes%2Ev2%2Etxt") and back. A component becomes a segment by
 * escaping '.' as "%2E" and '%' as "%25", and nothing else, so the encoding
 * is canonical: each component has exactly one segment and each valid
 * segment exactly one component. That lets us test the decoded bytes on the
 * segment itself: a segment decodes to "." exactly when it is "%2E", and a
 * component ends in ".json" exactly when its segment ends in "%2Ejson".
 *
 * Invariant: the two directions are inverse on everything they accept.
 * id_from_path() only builds IDs that id_to_path() accepts, and
 * id_to_path() only builds paths that id_from_path() accepts. To keep the
 * second half, id_validate() holds every component an ID names to the rules
 * of id_check_name(): besides what id.h lists, a segment that names a
 * directory or a binary file may not decode to "." or ".." (the path would
 * leave its directory) nor to ".json" (refused as a name). A JSON item's
 * last segment may be "%2E": its file is "..json", an ordinary name.
 *
 * Errors do not depend on byte order or buffer size: -EINVAL wins over
 * -ENAMETOOLONG, which wins over -ERANGE.
 *
 * Pure functions: no allocation, no global state, thread-safe.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "id.h"

#define JSON_SUFFIX ".json"
#define JSON_SUFFIX_LEN (sizeof(JSON_SUFFIX) - 1)
#define JSON_SUFFIX_SEG "%2Ejson" /* JSON_SUFFIX, encoded */

/* Bytes that may stand in neither a name nor an ID: NUL, controls, '/'. */
static bool bad_byte(unsigned char c)
{
	return c < 0x20 || c == 0x7f || c == '/';
}

/* true when @s[0..len) is the string @lit */
static bool equals(const char *s, size_t len, const char *lit)
{
	return len == strlen(lit) && memcmp(s, lit, len) == 0;
}

static bool ends_with(const char *s, size_t len, const char *suffix)
{
	size_t n = strlen(suffix);

	return len >= n && memcmp(s + len - n, suffix, n) == 0;
}

/* "*.json" with a non-empty stem */
static bool json_name(const char *name, size_t len)
{
	return len > JSON_SUFFIX_LEN && ends_with(name, len, JSON_SUFFIX);
}

static bool valid_kind(enum item_kind kind)
{
	return kind == ITEM_DIR || kind == ITEM_JSON || kind == ITEM_BINARY;
}

int id_check_name(const char *name, size_t len)
{
	size_t i;

	if (len == 0)
		return -EINVAL;
	for (i = 0; i < len; i++)
		if (bad_byte((unsigned char)name[i]))
			return -EINVAL;
	if (equals(name, len, ".") || equals(name, len, "..") ||
	    equals(name, len, JSON_SUFFIX))
		return -EINVAL;
	if (len > ID_NAME_MAX)
		return -ENAMETOOLONG;
	return 0;
}

enum item_kind id_name_kind(const char *name)
{
	return json_name(name, strlen(name)) ? ITEM_JSON : ITEM_BINARY;
}

size_t id_stem_len(const char *name, size_t len)
{
	return json_name(name, len) ? len - JSON_SUFFIX_LEN : len;
}

/* Length of the segment for component @comp[0..len), without the NUL. */
static size_t encoded_len(const char *comp, size_t len)
{
	size_t i, n = len;

	for (i = 0; i < len; i++)
		if (comp[i] == '.' || comp[i] == '%')
			n += 2;
	return n;
}

/* Writes the segment for @comp[0..len) at @out, which has room for it (see
 * encoded_len()); no NUL. Returns the number of bytes written. */
static size_t encode(const char *comp, size_t len, char *out)
{
	size_t i, n = 0;

	for (i = 0; i < len; i++) {
		if (comp[i] == '.' || comp[i] == '%') {
			out[n++] = '%';
			out[n++] = '2';
			out[n++] = comp[i] == '.' ? 'E' : '5';
		} else {
			out[n++] = comp[i];
		}
	}
	return n;
}

ssize_t id_segment_encode(const char *comp, size_t len, char *out, size_t cap)
{
	size_t n;

	if (len > SSIZE_MAX / 3) /* the result would not fit a ssize_t */
		return -ERANGE;
	n = encoded_len(comp, len);
	if (n >= cap)
		return -ERANGE;
	encode(comp, len, out);
	out[n] = '\0';
	return (ssize_t)n;
}

/* true when @s[0..len) starts with "%2E" or "%25" */
static bool canonical_escape(const char *s, size_t len)
{
	return len >= 3 && s[0] == '%' && s[1] == '2' &&
	       (s[2] == 'E' || s[2] == '5');
}

/* Decoded length of segment @seg[0..len), or -EINVAL when a '%' does not
 * start a canonical escape. */
static ssize_t decoded_len(const char *seg, size_t len)
{
	size_t i = 0, n = 0;

	while (i < len) {
		if (seg[i] == '%') {
			if (!canonical_escape(seg + i, len - i))
				return -EINVAL;
			i += 3;
		} else {
			i++;
		}
		n++;
	}
	return (ssize_t)n;
}

ssize_t id_segment_decode(const char *seg, size_t len, char *out, size_t cap)
{
	ssize_t n = decoded_len(seg, len);
	size_t i = 0, o = 0;

	if (n < 0)
		return n;
	if ((size_t)n >= cap)
		return -ERANGE;
	while (i < len) {
		if (seg[i] == '%') {
			out[o++] = seg[i + 2] == 'E' ? '.' : '%';
			i += 3;
		} else {
			out[o++] = seg[i++];
		}
	}
	out[o] = '\0';
	return n;
}

/*
 * Checks segment @seg[0..len) of an ID (it holds no '.'), where @names is
 * the kind of what it names: ITEM_DIR for all but the last segment.
 * Returns 0, -EINVAL or -ENAMETOOLONG.
 */
static int check_segment(const char *seg, size_t len, enum item_kind names)
{
	ssize_t n;
	size_t i;

	if (len == 0)
		return -EINVAL;
	for (i = 0; i < len; i++)
		if (bad_byte((unsigned char)seg[i]))
			return -EINVAL;
	n = decoded_len(seg, len);
	if (n < 0)
		return (int)n;
	/* The name rules, tested on the canonical encoding (see the top).
	 * A JSON item's file name is never ".", ".." or ".json". */
	if (names != ITEM_JSON &&
	    (equals(seg, len, "%2E") || equals(seg, len, "%2E%2E") ||
	     equals(seg, len, JSON_SUFFIX_SEG)))
		return -EINVAL;
	if (names == ITEM_JSON)
		n += JSON_SUFFIX_LEN;
	if (n > ID_NAME_MAX)
		return -ENAMETOOLONG;
	return 0;
}

int id_validate(const char *id, size_t len, enum item_kind kind)
{
	bool too_long = len > ID_MAX;
	size_t start, end;
	int ret;

	if (len == 0 || !valid_kind(kind))
		return -EINVAL;
	for (start = 0; start <= len; start = end + 1) {
		const char *dot = memchr(id + start, '.', len - start);

		end = dot ? (size_t)(dot - id) : len;
		ret = check_segment(id + start, end - start,
				    end == len ? kind : ITEM_DIR);
		if (ret == -EINVAL)
			return ret;
		if (ret < 0)
			too_long = true;
	}
	return too_long ? -ENAMETOOLONG : 0;
}

ssize_t id_from_path(const char *path, bool is_dir, char *out, size_t cap,
		     enum item_kind *kind)
{
	enum item_kind k = is_dir ? ITEM_DIR : ITEM_BINARY;
	size_t len = strlen(path), start, end, clen, n = 0;
	bool too_long = false;
	int ret;

	if (len == 0)
		return -EINVAL;

	/* First pass: check every component and measure the ID. */
	for (start = 0; start <= len; start = end + 1) {
		const char *slash = memchr(path + start, '/', len - start);

		end = slash ? (size_t)(slash - path) : len;
		clen = end - start;
		ret = id_check_name(path + start, clen);
		if (ret == -EINVAL)
			return ret;
		if (ret < 0) {
			too_long = true;
			continue;
		}
		if (end == len && !is_dir && json_name(path + start, clen)) {
			clen -= JSON_SUFFIX_LEN;
			k = ITEM_JSON;
		}
		n += (start > 0) + encoded_len(path + start, clen);
	}
	if (too_long || n > ID_MAX)
		return -ENAMETOOLONG;
	if (n >= cap)
		return -ERANGE;

	/* Second pass: write it. */
	n = 0;
	for (start = 0; start <= len; start = end + 1) {
		const char *slash = memchr(path + start, '/', len - start);

		end = slash ? (size_t)(slash - path) : len;
		clen = end - start;
		if (end == len && k == ITEM_JSON)
			clen -= JSON_SUFFIX_LEN;
		if (start > 0)
			out[n++] = '.';
		n += encode(path + start, clen, out + n);
	}
	out[n] = '\0';
	if (kind)
		*kind = k;
	return (ssize_t)n;
}

ssize_t id_to_path(const char *id, enum item_kind kind, char *out, size_t cap)
{
	size_t len = strlen(id), last = len, i, n;
	int ret = id_validate(id, len, kind);

	if (ret == -EINVAL)
		return ret;
	while (last > 0 && id[last - 1] != '.')
		last--;
	/* A binary file named "*.json" would read back as a JSON item. */
	if (kind == ITEM_BINARY &&
	    ends_with(id + last, len - last, JSON_SUFFIX_SEG))
		return -EINVAL;
	if (ret < 0)
		return ret;

	/* Each '.' becomes a '/' and each 3-byte escape one byte. */
	n = len;
	for (i = 0; i < len; i++)
		if (id[i] == '%')
			n -= 2;
	if (kind == ITEM_JSON)
		n += JSON_SUFFIX_LEN;
	if (n >= cap)
		return -ERANGE;

	n = 0;
	for (i = 0; i < len; i++) {
		if (id[i] == '.') {
			out[n++] = '/';
		} else if (id[i] == '%') {
			out[n++] = id[i + 2] == 'E' ? '.' : '%';
			i += 2;
		} else {
			out[n++] = id[i];
		}
	}
	if (kind == ITEM_JSON) {
		memcpy(out + n, JSON_SUFFIX, JSON_SUFFIX_LEN);
		n += JSON_SUFFIX_LEN;
	}
	out[n] = '\0';
	return (ssize_t)n;
}
