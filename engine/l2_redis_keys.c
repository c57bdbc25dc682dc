/*
 * l2_redis_keys.c - what the Redis cache stores, byte for byte: the names
 * of its keys, and the metadata blob of an entry.
 *
 * Key layout. Every key starts with the caller's prefix P (e.g. "tierfs:"),
 * so that several trees can share one Redis database:
 *
 *     P "e:" INO   a hash, INO in decimal, with exactly two fields:
 *                  "m"  the entry's metadata blob (below)
 *                  "d"  the content, byte for byte (NULs included; "" when
 *                       empty)
 *     P "t:" INO   a string: the Merkle hash (merkle.h) of directory INO as
 *                  L3 last committed it, 64 lowercase hex digits -- the
 *                  mirror of L3's tree that `tierfs verify` compares
 *     P "_:" ...   reserved for internal keys; this version writes none
 *
 * Entry keys ("e:"), tree keys ("t:") and internal keys ("_:") can never
 * share a name. An
 * entry key holds both fields or does not exist: get() reads "m", read()
 * reads "d", fetch() reads both with one HMGET and treats a hash that lacks
 * either as absent. No key has a TTL.
 *
 * Metadata blob, format 2 (integers little endian):
 *
 *     off  size  field
 *       0     1  format         2
 *       1     8  size           content length
 *       9    32  hash           SHA-256 of the content (zero for dirs)
 *      41     1  kind           enum item_kind
 *      42     1  flags          bit 0 explicit_dir, bit 1 state present
 *      43     8  version
 *      51     8  parent
 *      59     8  mtime_ns       signed
 *      67     8  atime_ns       signed
 *      75     8  ctime_ns       signed
 *      83     4  mode
 *      87     4  uid
 *      91     4  gid
 *      95     2  name length, then the name (0..255 bytes, no NUL or '/')
 *       .     4  state length, then the state tag (no NUL); with flag bit 1
 *                clear the length is 0 and the tag is NULL, so a NULL tag
 *                and "" stay apart
 *       .     4  xattrs length, then the user xattr blob (item.h), opaque
 *
 * and nothing after it. Bytes 0..40 (format, size, hash) name the content
 * that the metadata describes. A blob of another format reads as absent:
 * one of a newer tierfs sharing the server, or of format 1, which builds
 * before atime was kept wrote (format 2 without atime_ns). Such an entry
 * is a miss, filled again from L3 on its next read; `tierfs verify
 * --repair` rewrites them all. A blob that does not decode, or a fetched
 * "d" whose length is not the blob's size, is corrupt: -EUCLEAN, logged.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "l2_redis_int.h"

/* Writes P "e:" INO into @buf (room for L2R_PREFIX_MAX + 32) and returns
 * its length. */
size_t l2r_key(const struct l2r *r, uint64_t ino, char *buf)
{
	return (size_t)snprintf(buf, L2R_PREFIX_MAX + 32, "%se:%llu", r->prefix,
				(unsigned long long)ino);
}

/* Writes P "t:" INO, a directory's mirrored Merkle hash, like l2r_key. */
size_t l2r_tree_key(const struct l2r *r, uint64_t ino, char *buf)
{
	return (size_t)snprintf(buf, L2R_PREFIX_MAX + 32, "%st:%llu", r->prefix,
				(unsigned long long)ino);
}

static uint8_t *l2r_put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		*p++ = (uint8_t)(v >> (8 * i));
	return p;
}

static uint64_t l2r_get_le(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* The length of the blob of @name and @m. */
size_t l2r_blob_len(const char *name, const struct item_meta *m)
{
	return L2R_HDR_LEN + strlen(name) + 4 +
	       (m->state ? strlen(m->state) : 0) + 4 +
	       (m->xattrs ? m->xattrs_len : 0);
}

/* Encodes the blob of an entry into @buf, which has room for
 * l2r_blob_len() bytes. */
void l2r_blob_encode(uint64_t parent, const char *name,
		     const struct item_meta *m, uint8_t *buf)
{
	size_t name_len = strlen(name);
	size_t state_len = m->state ? strlen(m->state) : 0;
	size_t xattrs_len = m->xattrs ? m->xattrs_len : 0;
	uint8_t flags = 0;
	uint8_t *p = buf;

	if (m->explicit_dir)
		flags |= L2R_FLAG_EXPLICIT;
	if (m->state)
		flags |= L2R_FLAG_STATE;
	*p++ = L2R_FORMAT;
	p = l2r_put_le(p, m->size, 8);
	memcpy(p, m->hash, ITEM_HASH_LEN);
	p += ITEM_HASH_LEN;
	*p++ = (uint8_t)m->kind;
	*p++ = flags;
	p = l2r_put_le(p, m->version, 8);
	p = l2r_put_le(p, parent, 8);
	p = l2r_put_le(p, (uint64_t)m->mtime_ns, 8);
	p = l2r_put_le(p, (uint64_t)m->atime_ns, 8);
	p = l2r_put_le(p, (uint64_t)m->ctime_ns, 8);
	p = l2r_put_le(p, m->mode, 4);
	p = l2r_put_le(p, m->uid, 4);
	p = l2r_put_le(p, m->gid, 4);
	p = l2r_put_le(p, name_len, 2);
	memcpy(p, name, name_len);
	p += name_len;
	p = l2r_put_le(p, state_len, 4);
	if (state_len)
		memcpy(p, m->state, state_len);
	p += state_len;
	p = l2r_put_le(p, xattrs_len, 4);
	if (xattrs_len)
		memcpy(p, m->xattrs, xattrs_len);
}

/* Takes @n bytes from the blob cursor; NULL when fewer are left. */
static const uint8_t *l2r_take(const uint8_t **p, size_t *left, size_t n)
{
	const uint8_t *at = *p;

	if (*left < n)
		return NULL;
	*p += n;
	*left -= n;
	return at;
}

/* Decodes the blob of entry @ino into @out: 0, -ENOENT (another format),
 * -EUCLEAN (corrupt, logged) or -ENOMEM. */
int l2r_blob_decode(const struct l2r *r, uint64_t ino, const void *blob,
		    size_t len, struct store_row *out)
{
	const uint8_t *p = blob, *f;
	struct store_cols c = {.ino = ino};
	size_t left = len;
	uint8_t flags;

	if (len < 1)
		return store_corrupt(&r->sb, ino, "empty metadata");
	if (p[0] != L2R_FORMAT) {
		eng_logf(&r->base.log, LOG_DEBUG,
			 "redis '%s': entry %llu has metadata format %u, not "
			 "%u: treated as absent",
			 r->target, (unsigned long long)ino, p[0], L2R_FORMAT);
		return -ENOENT;
	}
	f = l2r_take(&p, &left, L2R_HDR_LEN);
	if (!f)
		return store_corrupt(&r->sb, ino, "short metadata");

	c.size = l2r_get_le(f + 1, 8);
	c.hash = f + 9;
	c.hash_len = ITEM_HASH_LEN;
	c.kind = f[41];
	flags = f[42];
	if (flags & ~(L2R_FLAG_EXPLICIT | L2R_FLAG_STATE))
		return store_corrupt(&r->sb, ino, "bad flags");
	c.explicit_dir = flags & L2R_FLAG_EXPLICIT;
	c.version = l2r_get_le(f + 43, 8);
	c.parent = l2r_get_le(f + 51, 8);
	c.mtime_ns = (int64_t)l2r_get_le(f + 59, 8);
	c.atime_ns = (int64_t)l2r_get_le(f + 67, 8);
	c.ctime_ns = (int64_t)l2r_get_le(f + 75, 8);
	c.mode = (uint32_t)l2r_get_le(f + 83, 4);
	c.uid = (uint32_t)l2r_get_le(f + 87, 4);
	c.gid = (uint32_t)l2r_get_le(f + 91, 4);

	c.name_len = (size_t)l2r_get_le(f + 95, 2);
	c.name = l2r_take(&p, &left, c.name_len);
	if (!c.name)
		return store_corrupt(&r->sb, ino, "bad name");

	f = l2r_take(&p, &left, 4);
	c.state_len = f ? (size_t)l2r_get_le(f, 4) : 0;
	if (!f || !(c.state = l2r_take(&p, &left, c.state_len)) ||
	    (c.state_len && !(flags & L2R_FLAG_STATE)))
		return store_corrupt(&r->sb, ino, "bad state tag");
	if (!(flags & L2R_FLAG_STATE))
		c.state = NULL;

	f = l2r_take(&p, &left, 4);
	c.xattrs_len = f ? (size_t)l2r_get_le(f, 4) : 0;
	if (!f || !(c.xattrs = l2r_take(&p, &left, c.xattrs_len)) || left != 0)
		return store_corrupt(&r->sb, ino, "bad xattrs");
	return store_row_decode(&r->sb, &c, out);
}

/* Writes into @buf (room for 2 * L2R_PREFIX_MAX + 8) the SCAN pattern of
 * every "e:" and "t:" key: the prefix, its glob characters escaped, then
 * "[et]:*". Returns its length. */
size_t l2r_match(const struct l2r *r, char *buf)
{
	char *p = buf;

	for (const char *q = r->prefix; *q; q++) {
		if (strchr("*?[]\\", *q))
			*p++ = '\\';
		*p++ = *q;
	}
	memcpy(p, "[et]:*", 7);
	return (size_t)(p - buf) + 6;
}

/* Parses key @k as P "e:" INO or P "t:" INO; false for anything else. */
bool l2r_parse_key(const struct l2r *r, const redisReply *k, uint64_t *ino,
		   bool *tree)
{
	size_t plen = strlen(r->prefix);
	uint64_t v = 0;

	if (k->type != REDIS_REPLY_STRING || k->len <= plen + 2 ||
	    k->len > plen + 22 || memcmp(k->str, r->prefix, plen) != 0 ||
	    (k->str[plen] != 'e' && k->str[plen] != 't') ||
	    k->str[plen + 1] != ':')
		return false;
	for (size_t i = plen + 2; i < k->len; i++) {
		if (k->str[i] < '0' || k->str[i] > '9' ||
		    v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(k->str[i] - '0');
	}
	if (v == 0)
		return false;
	*ino = v;
	*tree = k->str[plen] == 't';
	return true;
}
