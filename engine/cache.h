/*
 * cache.h - the interface of the cache tier (L2): Redis (l2_redis.h).
 *
 * A cache keeps copies of what L3 (store.h) holds, keyed by inode number:
 *
 *     an entry      a file's row (struct store_row, its merkle all zero)
 *                   and its content, kept and dropped together
 *     a mirrored    the Merkle hash (merkle.h) L3 last committed for a
 *     hash          directory, as apply() of store.h reported it
 *
 * Directories' rows and name lookups are not cached.
 *
 * The contract: a cache may lose an entry or hold a stale one at any time
 * (eviction, a restart, a write that failed, another mount's older write
 * landing last), and it never holds the only copy of anything. So a caller
 * never takes an answer on its own: it compares an entry's version, and the
 * hash of its content, with L3's metadata, and a mirrored hash with L3's,
 * and goes to L3 when they differ or the cache fails. Writes are best
 * effort: a change the cache does not take costs a later miss, never a
 * wrong answer.
 *
 * Backends embed struct cache first and fill in ops; the engine never sees
 * a backend type. Every op is implemented. All return 0 on success and a
 * negative errno on failure:
 *   -ENOENT  nothing cached for it    -EIO  a corrupt entry, or the
 *   -EAGAIN  busy or unreachable            backend failed (logged)
 *   -ENOMEM  out of memory            -EINVAL  a change the contract of
 *                                              store.h refuses
 * and what the backend's server refuses with (-ENOSPC, -EROFS, ...).
 *
 * Thread-safety: every op may be called from any thread concurrently; a
 * backend serialises access to its connections itself. All ops block.
 */
#ifndef TIERFS_CACHE_H
#define TIERFS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "change.h"
#include "item.h"
#include "log.h"
#include "store.h"

struct cache;

struct cache_ops {
	const char *name; /* "redis" */

	/* Closes connections and frees @c. Accepts a half-built one. */
	void (*free)(struct cache *c);

	/* Reads the row of the entry of @ino into @out (caller releases it).
	 * -ENOENT. */
	int (*get)(struct cache *c, uint64_t ino, struct store_row *out);

	/* Reads the row of the entry of file @ino and its content together,
	 * in one round trip, so that the caller can check that the content
	 * is of the version it expects: *data is a new malloc()ed buffer
	 * (caller frees; NULL when *len is 0). -ENOENT. */
	int (*fetch)(struct cache *c, uint64_t ino, struct store_row *row,
		     void **data, size_t *len);

	/* fetch() of the files @inos[0..n) (at most STORE_READ_MANY_MAX) in
	 * one round trip: for each i, fills @rows[i] and @out[i] as fetch()
	 * would, or sets out[i].ino to 0 when nothing usable is cached for
	 * @inos[i] (absent or corrupt: counted as fetch() does). Returns how
	 * many were found; the caller releases those rows and frees their
	 * data. On error nothing is left allocated. -EINVAL above the bound.
	 */
	int (*fetch_many)(struct cache *c, const uint64_t *inos, size_t n,
			  struct store_row *rows, struct store_blob *out);

	/* Writes the final states of the @n changes @changes[0..n)
	 * (borrowed), best effort and not as a transaction: a change that
	 * fails does not undo the others, and the first error is returned.
	 * A change with an item caches the entry with that content; one
	 * without keeps the cached content only while it is the content the
	 * new row names (its size and hash), else drops the entry (a
	 * directory's row without an item is not cached at all); a delete
	 * drops the entry and the mirrored hash. A batch any change of which
	 * breaks the contract of store.h is refused whole (-EINVAL). */
	int (*apply)(struct cache *c, struct change *const *changes, size_t n);

	/* The mirror of L3's Merkle tree: put_tree() records the hashes of
	 * @n directories; get_tree() reads one directory's hash into @out
	 * (-ENOENT when the mirror has none, -EBADMSG when what it holds is
	 * not a hash). */
	int (*put_tree)(struct cache *c, const struct store_dirhash *dirs,
			size_t n);
	int (*get_tree)(struct cache *c, uint64_t ino,
			uint8_t out[ITEM_HASH_LEN]);

	/* For finding what the cache holds of entries L3 no longer has.
	 * each_cached() calls @fn for every inode the cache holds an entry
	 * of (@tree false) or a mirrored hash of (@tree true), in no
	 * particular order, possibly more than once; it stops and returns
	 * @fn's value when that is not 0. drop_cached() removes just that
	 * one (absent is no error). */
	int (*each_cached)(struct cache *c,
			   int (*fn)(void *arg, uint64_t ino, bool tree),
			   void *arg);
	int (*drop_cached)(struct cache *c, uint64_t ino, bool tree);
};

struct cache {
	const struct cache_ops *ops;
	struct eng_log log;
	/* entries read that broke the contract (ignored: read from L3) */
	atomic_uint_least64_t corrupt;
};

/* Destructor that accepts NULL. */
static inline void cache_free(struct cache *c)
{
	if (c)
		c->ops->free(c);
}

#endif
