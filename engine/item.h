/*
 * item.h - items: the immutable, reference-counted values the engine stores.
 *
 * An item is one published version of a file: its ID, its kind, its content
 * bytes and the metadata that was current when the version was built. Once
 * item_new() returns, nothing in the item changes; the cache (L1), the batch
 * queue and open files each hold their own reference, taken with item_ref()
 * and dropped with item_unref(). The last unref frees it.
 *
 * struct item_meta is the plain metadata of a file or directory (what stat
 * and getxattr need, never the content). It owns two heap fields, state and
 * xattrs; copy it with item_meta_copy() and free those with
 * item_meta_release().
 *
 * User xattrs are kept as one self-describing blob so that every tier can
 * store them as a single column. Blob format (all integers little endian):
 *
 *     repeated { u16 name_len; u32 value_len; name bytes; value bytes }
 *
 * with names unique, in the order they were last set. An empty blob (len 0)
 * means no xattrs.
 *
 * Thread-safety: items are immutable, so any thread may read an item it holds
 * a reference to; item_ref()/item_unref() are atomic. item_meta values are
 * plain data owned by whoever embeds them.
 */
#ifndef TIERFS_ITEM_H
#define TIERFS_ITEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ITEM_HASH_LEN 32 /* SHA-256 */

enum item_kind {
	ITEM_DIR = 0, /* a directory: no content */
	ITEM_JSON =
		1, /* a file named "*.json": content is valid JSON or empty */
	ITEM_BINARY = 2, /* any other regular file: bytes stored as they are */
};

struct item_meta {
	enum item_kind kind;
	uint64_t size;		     /* content length in bytes; 0 for dirs */
	uint8_t hash[ITEM_HASH_LEN]; /* SHA-256 of the content; zero for dirs */
	uint64_t version;	     /* 1 for the first published version */
	int64_t mtime_ns;	     /* ns since the epoch; negative before */
	int64_t atime_ns;	     /* only utimensat sets it (noatime) */
	int64_t ctime_ns;
	uint32_t mode; /* S_IFREG/S_IFDIR plus permission bits */
	uint32_t uid;
	uint32_t gid;
	bool explicit_dir; /* dir made by mkdir: persists while empty */
	char *state;	   /* caller-defined state tag, owned, or NULL */
	void *xattrs;	   /* user xattr blob (see above), owned, or NULL */
	size_t xattrs_len;
};

struct item;

/*
 * Builds a new item of @kind holding a copy of @len bytes at @data, with the
 * given @id (copied) and metadata (deep-copied; its size and hash fields are
 * ignored and computed from the content). Returns NULL when memory runs out.
 * Does not validate JSON: see item_json_valid().
 */
struct item *item_new(const char *id, const void *data, size_t len,
		      const struct item_meta *meta);

/* Like item_new() but steals @data, which must come from malloc(). On failure
 * @data is freed. */
struct item *item_new_take(const char *id, void *data, size_t len,
			   const struct item_meta *meta);

/* Like item_new_take() but trusts @meta->hash to be the SHA-256 of the
 * content (the caller computed it, e.g. outside a lock): no hashing. */
struct item *item_new_hashed(const char *id, void *data, size_t len,
			     const struct item_meta *meta);

/* Takes a reference; returns @it. Accepts NULL. */
struct item *item_ref(struct item *it);
/* Drops a reference; frees the item with the last one. Accepts NULL. */
void item_unref(struct item *it);

/* Accessors: borrowed pointers, valid while the caller holds a reference. */
const char *item_id(const struct item *it);
const void *item_data(const struct item *it);
size_t item_size(const struct item *it);
const struct item_meta *item_meta(const struct item *it);

/* true when @len bytes at @data are one RFC 8259 JSON text (jansson decides,
 * any top-level value accepted), or when @len is 0. */
bool item_json_valid(const void *data, size_t len);

/* SHA-256 of @len bytes at @data into @out. */
void item_hash(const void *data, size_t len, uint8_t out[ITEM_HASH_LEN]);

/* True when @hash is all zero (a directory's, or none known). */
bool item_hash_is_zero(const uint8_t hash[ITEM_HASH_LEN]);
/* Lowercase hex of @hash into @out (65 bytes with the NUL). */
void item_hash_hex(const uint8_t hash[ITEM_HASH_LEN], char out[65]);

/* Deep copy of @src into @dst (which is overwritten, not released).
 * Returns 0 or -ENOMEM (then @dst holds no owned memory). */
int item_meta_copy(struct item_meta *dst, const struct item_meta *src);
/* Frees the owned fields of @m and sets them to NULL. Accepts NULL. */
void item_meta_release(struct item_meta *m);

/* User xattr blob operations. Names are NUL-terminated strings of 1..255
 * bytes; values are byte strings of at most 64 KiB. */

/* Finds @name: on success points @value at the bytes inside the blob and
 * returns their length (>= 0); -ENODATA when absent. */
int item_xattr_get(const struct item_meta *m, const char *name,
		   const void **value);
/* Sets @name to @value in @m's blob (replacing any old value). @flags takes
 * XATTR_CREATE (-EEXIST when present) or XATTR_REPLACE (-ENODATA when
 * absent). Returns 0, -ENOMEM, -ERANGE (name or value too long), -EEXIST or
 * -ENODATA; on error @m is unchanged. */
int item_xattr_set(struct item_meta *m, const char *name, const void *value,
		   size_t len, int flags);
/* Removes @name; 0 or -ENODATA. */
int item_xattr_remove(struct item_meta *m, const char *name);
/* Calls @fn for each name in order; stops and returns the first non-zero
 * value @fn returns, else 0. */
int item_xattr_foreach(const struct item_meta *m,
		       int (*fn)(void *arg, const char *name), void *arg);

#endif
