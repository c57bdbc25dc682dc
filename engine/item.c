/*
 * item.c - immutable, reference-counted items and their metadata.
 *
 * An item owns one malloc()ed block for its content and a deep copy of its
 * metadata; the reference count is the only field that changes after
 * item_new() returns, and it changes atomically. The content hash is
 * computed here, once, with OpenSSL's SHA-256, over exactly the stored bytes.
 *
 * The user xattr blob format is documented in item.h.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#include <jansson.h>
#include <openssl/sha.h>

#include "item.h"

#define XATTR_NAME_MAX_LEN 255
#define XATTR_VALUE_MAX_LEN 65536
#define XATTR_HDR 6 /* u16 name_len + u32 value_len */

struct item {
	atomic_uint refs;
	char *id;
	void *data;
	size_t len;
	struct item_meta meta;
};

void item_hash(const void *data, size_t len, uint8_t out[ITEM_HASH_LEN])
{
	SHA256(data ? data : (const void *)"", len, out);
}

bool item_hash_is_zero(const uint8_t hash[ITEM_HASH_LEN])
{
	for (size_t i = 0; i < ITEM_HASH_LEN; i++)
		if (hash[i])
			return false;
	return true;
}

void item_hash_hex(const uint8_t hash[ITEM_HASH_LEN], char out[65])
{
	static const char hex[] = "0123456789abcdef";

	for (int i = 0; i < ITEM_HASH_LEN; i++) {
		out[2 * i] = hex[hash[i] >> 4];
		out[2 * i + 1] = hex[hash[i] & 15];
	}
	out[64] = '\0';
}

bool item_json_valid(const void *data, size_t len)
{
	json_error_t err;
	json_t *j;

	if (len == 0)
		return true;
	/* Any top-level value; the whole buffer must be one text. */
	j = json_loadb(data, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
	if (!j)
		return false;
	json_decref(j);
	return true;
}

int item_meta_copy(struct item_meta *dst, const struct item_meta *src)
{
	*dst = *src;
	dst->state = NULL;
	dst->xattrs = NULL;
	if (src->state) {
		dst->state = strdup(src->state);
		if (!dst->state)
			goto out_nomem;
	}
	if (src->xattrs && src->xattrs_len) {
		dst->xattrs = malloc(src->xattrs_len);
		if (!dst->xattrs)
			goto out_nomem;
		memcpy(dst->xattrs, src->xattrs, src->xattrs_len);
	} else {
		dst->xattrs_len = 0;
	}
	return 0;

out_nomem:
	item_meta_release(dst);
	return -ENOMEM;
}

void item_meta_release(struct item_meta *m)
{
	if (!m)
		return;
	free(m->state);
	free(m->xattrs);
	m->state = NULL;
	m->xattrs = NULL;
	m->xattrs_len = 0;
}

struct item *item_new_take(const char *id, void *data, size_t len,
			   const struct item_meta *meta)
{
	struct item_meta m = *meta; /* shallow: item_new_hashed copies */

	item_hash(data, len, m.hash);
	return item_new_hashed(id, data, len, &m);
}

struct item *item_new_hashed(const char *id, void *data, size_t len,
			     const struct item_meta *meta)
{
	struct item *it = calloc(1, sizeof(*it));

	if (!it)
		goto out_free_data;
	atomic_init(&it->refs, 1);
	it->id = strdup(id ? id : "");
	if (!it->id)
		goto out_free_item;
	if (item_meta_copy(&it->meta, meta) < 0)
		goto out_free_id;
	it->data = data;
	it->len = len;
	it->meta.size = len;
	return it;

out_free_id:
	free(it->id);
out_free_item:
	free(it);
out_free_data:
	free(data);
	return NULL;
}

struct item *item_new(const char *id, const void *data, size_t len,
		      const struct item_meta *meta)
{
	void *copy = malloc(len ? len : 1);

	if (!copy)
		return NULL;
	if (len)
		memcpy(copy, data, len);
	return item_new_take(id, copy, len, meta);
}

struct item *item_ref(struct item *it)
{
	if (it)
		atomic_fetch_add_explicit(&it->refs, 1, memory_order_relaxed);
	return it;
}

void item_unref(struct item *it)
{
	if (!it)
		return;
	if (atomic_fetch_sub_explicit(&it->refs, 1, memory_order_acq_rel) != 1)
		return;
	item_meta_release(&it->meta);
	free(it->data);
	free(it->id);
	free(it);
}

const char *item_id(const struct item *it)
{
	return it->id;
}

const void *item_data(const struct item *it)
{
	return it->data;
}

size_t item_size(const struct item *it)
{
	return it->len;
}

const struct item_meta *item_meta(const struct item *it)
{
	return &it->meta;
}

/* --- user xattr blob --- */

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v & 0xff;
	p[1] = v >> 8;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (v >> (8 * i)) & 0xff;
}

/*
 * Finds @name in the blob: returns the offset of its record and sets *rec_len
 * to the record's total length, or -ENODATA. A malformed blob ends the walk.
 */
static ssize_t xattr_find(const struct item_meta *m, const char *name,
			  size_t *rec_len)
{
	const uint8_t *b = m->xattrs;
	size_t nlen = strlen(name), off = 0;

	while (b && off + XATTR_HDR <= m->xattrs_len) {
		size_t kl = get16(b + off), vl = get32(b + off + 2);
		size_t total = XATTR_HDR + kl + vl;

		if (total > m->xattrs_len - off)
			break;
		if (kl == nlen && memcmp(b + off + XATTR_HDR, name, kl) == 0) {
			*rec_len = total;
			return (ssize_t)off;
		}
		off += total;
	}
	return -ENODATA;
}

int item_xattr_get(const struct item_meta *m, const char *name,
		   const void **value)
{
	size_t rec_len;
	ssize_t off = xattr_find(m, name, &rec_len);
	const uint8_t *b = m->xattrs;

	if (off < 0)
		return (int)off;
	*value = b + off + XATTR_HDR + get16(b + off);
	return (int)get32(b + off + 2);
}

int item_xattr_remove(struct item_meta *m, const char *name)
{
	size_t rec_len;
	ssize_t off = xattr_find(m, name, &rec_len);
	uint8_t *b = m->xattrs;

	if (off < 0)
		return (int)off;
	memmove(b + off, b + off + rec_len, m->xattrs_len - off - rec_len);
	m->xattrs_len -= rec_len;
	if (m->xattrs_len == 0) {
		free(m->xattrs);
		m->xattrs = NULL;
	}
	return 0;
}

int item_xattr_set(struct item_meta *m, const char *name, const void *value,
		   size_t len, int flags)
{
	size_t nlen = strlen(name), rec_len, new_len;
	ssize_t off = xattr_find(m, name, &rec_len);
	uint8_t *nb, *p;

	if (nlen == 0 || nlen > XATTR_NAME_MAX_LEN || len > XATTR_VALUE_MAX_LEN)
		return -ERANGE;
	if (off >= 0 && (flags & XATTR_CREATE))
		return -EEXIST;
	if (off < 0 && (flags & XATTR_REPLACE))
		return -ENODATA;
	/* Build the new blob: old records minus @name, then the new record. */
	new_len = m->xattrs_len - (off >= 0 ? rec_len : 0) + XATTR_HDR + nlen +
		  len;
	nb = malloc(new_len);
	if (!nb)
		return -ENOMEM;
	p = nb;
	if (off >= 0) {
		memcpy(p, m->xattrs, (size_t)off);
		p += off;
		memcpy(p, (uint8_t *)m->xattrs + off + rec_len,
		       m->xattrs_len - off - rec_len);
		p += m->xattrs_len - off - rec_len;
	} else if (m->xattrs_len) {
		memcpy(p, m->xattrs, m->xattrs_len);
		p += m->xattrs_len;
	}
	put16(p, (uint16_t)nlen);
	put32(p + 2, (uint32_t)len);
	memcpy(p + XATTR_HDR, name, nlen);
	if (len)
		memcpy(p + XATTR_HDR + nlen, value, len);
	free(m->xattrs);
	m->xattrs = nb;
	m->xattrs_len = new_len;
	return 0;
}

int item_xattr_foreach(const struct item_meta *m,
		       int (*fn)(void *arg, const char *name), void *arg)
{
	const uint8_t *b = m->xattrs;
	size_t off = 0;
	char name[XATTR_NAME_MAX_LEN + 1];

	while (b && off + XATTR_HDR <= m->xattrs_len) {
		size_t kl = get16(b + off), vl = get32(b + off + 2);
		int r;

		if (XATTR_HDR + kl + vl > m->xattrs_len - off ||
		    kl > XATTR_NAME_MAX_LEN)
			break;
		memcpy(name, b + off + XATTR_HDR, kl);
		name[kl] = '\0';
		r = fn(arg, name);
		if (r)
			return r;
		off += XATTR_HDR + kl + vl;
	}
	return 0;
}
