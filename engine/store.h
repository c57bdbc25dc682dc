/*
 * store.h - the interface of L3, the persistent tier that holds the truth:
 * SQLite (l3_sqlite.h) and PostgreSQL (l3_pg.h). The cache tier, L2, has
 * an interface of its own (cache.h); store_open() at the end of this file
 * opens both.
 *
 * A store keeps a tree of entries. Each entry is one row:
 *
 *     ino     stable inode number, allocated by the store (alloc_ino), never
 *             reused; the root directory is ino 1 (parent 0, name "")
 *     parent  the ino of the directory that holds the entry
 *     name    the directory entry name, 1..255 bytes, no '/' and no NUL
 *     meta    struct item_meta: kind, size, hash, version, times, mode,
 *             owner, explicit_dir, state tag, user xattrs
 *     content the file bytes (files only), kept apart from the row so that
 *             lookups and listings never read content
 *
 * Invariants a store enforces (the database does, with unique indexes):
 *   - (parent, name) is unique: one name per directory entry;
 *   - for files, (parent, stem) is unique, where stem is the name without
 *     ".json" for ITEM_JSON and the whole name for ITEM_BINARY: two files
 *     that would have the same item ID cannot both exist.
 * A store does not check that a parent exists or is a directory; the engine
 * keeps the tree well formed.
 *
 * Listings are paged by keyset, in one of two orders: by name bytes (memcmp
 * order, shorter first on a tie; "children of P with name > AFTER, first
 * LIMIT") for the engine's own walks, and by inode number for readdir.
 *
 * Writes arrive only as batches through apply(): a list of final states of
 * entries (struct change, change.h), applied all or nothing in one
 * transaction. A change either deletes an entry (and its content) or sets
 * the entry's row to the given parent/name/meta, creating it when absent;
 * content is replaced only when the change carries an item (its bytes
 * become the content). Because a batch carries final states, the order of
 * the changes within it does not matter: a store first removes every
 * changed row, then writes the new rows, so renames that swap names never
 * collide.
 *
 * Backends embed struct store first and fill in ops (each is implemented
 * unless marked optional); the engine never sees a backend type. All
 * functions return 0 (or a count) on success and a negative errno on
 * failure:
 *   -ENOENT  no such entry            -EEXIST  a unique index refused a change
 *   -EINVAL  a change breaks the contract, or a value or constraint of the
 *            database refuses it (an encoding, a check): that change will
 *            never be taken, whatever else the batch holds
 *   -EIO     the backend failed (its own message went to the log)
 *   -EUCLEAN an entry read back breaks the contract (corrupt; logged and
 *            counted in store.corrupt); list() skips such rows
 *   -ENOSPC  the backend's disk is full -ENOMEM out of memory
 *   -EACCES, -EROFS  the database refuses every write (permission, read-only)
 *   -EAGAIN  busy or unreachable for now; the caller may retry
 * apply()'s -EEXIST and -EINVAL are about the batch's changes (the engine
 * sets aside the change that causes them); the others are about the store.
 *
 * Sharing. Many writers (mounts on many hosts, programs) may apply batches
 * to one store at once; each opened struct store is one writer, named by
 * its origin (a random nonzero number chosen by store_open()). apply()
 * therefore decides, at commit, what no writer could know in advance:
 *
 *   Versions. A change that carries content gets the version
 *   max(its own, the stored row's + 1); one that does not keeps
 *   max(its own, the stored row's). A new row keeps its own (at least 1).
 *   So an entry's version only grows, and two writers that both started
 *   from version 3 end at 4 and 5, never both at 4. list(), get() and the
 *   feed return the stored version.
 *
 *   Namespace races. A change whose (parent, name) or (parent, stem) is
 *   held by another entry that the batch does not change:
 *     - replaces that entry when it is a file or an empty directory (it
 *       is deleted, with its content: two creates of one name end as one
 *       entry, the later); the new row's version is then at least the
 *       replaced one's + 1;
 *     - is dropped when that entry is a directory that has children (the
 *       change is not applied; the rest of the batch is).
 *   A deletion of a directory that has children the batch does not move
 *   or delete (they were added by another writer) is dropped. A change
 *   that moves a directory below itself is dropped: its new parent is,
 *   after the batch, one of its descendants (two writers that move x
 *   into y and y into x would detach both from the root as a cycle). The
 *   parents followed up from the new parent are those the entries will
 *   have: a kept change's, else the stored row's. A batch never closes a
 *   cycle by itself, so one entry it does not change, moved by another
 *   writer, is always part of it; when a batch has two moves in one cycle
 *   only the first, in batch order, is dropped. A dropped change leaves
 *   its entry where it is stored, which can take a name or close a cycle
 *   that another change of the batch then meets: the races are decided
 *   again until nothing more is dropped. Every dropped or replaced change
 *   is logged (WARN, to the store's log) and counted in store.races; none
 *   makes the batch fail.
 *
 *   The change feed. In the batch's own transaction, every change the
 *   batch applies (replacements and drops included: a replaced entry is a
 *   deletion) is recorded as a feed record with a sequence number: strictly
 *   increasing, and in commit order (a record with a higher sequence is
 *   never visible before one with a lower sequence). Records older than
 *   store_config.feed_keep_seconds, or beyond the newest
 *   feed_keep_records, are trimmed (by apply(), in passing).
 *
 * Thread-safety: every op may be called from any thread concurrently; a
 * backend serialises access to its connections itself. All ops block.
 */
#ifndef TIERFS_STORE_H
#define TIERFS_STORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "change.h"
#include "item.h"
#include "log.h"

#define STORE_ROOT_INO 1
#define STORE_NAME_MAX 255

struct store_row {
	uint64_t ino;
	uint64_t parent;
	char name[STORE_NAME_MAX + 1]; /* NUL-terminated */
	struct item_meta meta; /* owned: release with store_row_release */
	/* The entry's Merkle hash (merkle.h) as the store holds it: for a
	 * directory its subtree hash, for a file its content hash; all zero
	 * when not known (and in the rows a cache returns, cache.h). */
	uint8_t merkle[ITEM_HASH_LEN];
};

/* The content of one file, as read_many() returns it. */
struct store_blob {
	uint64_t ino;
	void *data; /* owned, malloc()ed (free()); NULL when len is 0 */
	size_t len;
};
/* The most inos one read_many() call takes. */
#define STORE_READ_MANY_MAX 256

/* The name of an entry and where it sits: what scan() returns. */
struct store_key {
	uint64_t ino;
	uint64_t parent;
	char name[STORE_NAME_MAX + 1]; /* NUL-terminated */
};

/* A directory's Merkle hash: what apply() reports and put_tree() mirrors. */
struct store_dirhash {
	uint64_t ino;
	uint8_t merkle[ITEM_HASH_LEN];
};

/* The kinds of namespace race apply() settles (see "Sharing"). */
enum store_race_kind {
	STORE_RACE_REPLACED,  /* the change replaced another writer's entry */
	STORE_RACE_NAME_HELD, /* dropped: its name is a non-empty directory */
	STORE_RACE_RMDIR,     /* dropped: the directory gained entries */
	STORE_RACE_CYCLE,     /* dropped: the move would close a cycle */
};

/* One race, as store_races_recent() lists it. */
struct store_race {
	enum store_race_kind kind;
	uint64_t ino;	 /* the entry the batch's change is about */
	uint64_t parent; /* the directory it names */
	uint64_t other;	 /* the other writer's entry (replaced, holder) */
	char name[64];	 /* the change's name, cut */
};
#define STORE_RACES_RECENT 8

/* One record of the change feed, as feed_read() returns it. */
struct store_feed {
	uint64_t seq;	 /* its sequence number */
	uint64_t origin; /* the writer whose batch recorded it */
	uint64_t ino;	 /* the entry it is about */
	bool gone;	 /* the entry no longer exists (row is unset) */
	/* The entry's row as it is now, when it still exists (owned: release
	 * with store_row_release(); may already be newer than the change: a
	 * reader that applies records in order ends at the current state). */
	struct store_row row;
};

struct store;

struct store_ops {
	const char *name; /* "sqlite", "postgres" */

	/* Closes connections and frees the store. Accepts a half-built one. */
	void (*free)(struct store *s);

	/* Reads the row of @ino into @out (caller releases it). -ENOENT. */
	int (*get)(struct store *s, uint64_t ino, struct store_row *out);

	/* Reads the row named @name in directory @parent. -ENOENT. */
	int (*lookup)(struct store *s, uint64_t parent, const char *name,
		      struct store_row *out);

	/* Fills @rows (room for @limit) with the children of @parent whose
	 * names sort after @after ("" for the first page), in name order.
	 * Returns how many were filled (0 at the end); the caller releases
	 * each row. */
	int (*list)(struct store *s, uint64_t parent, const char *after,
		    struct store_row *rows, size_t limit);

	/* Fills @rows (room for @limit) with the children of @parent whose
	 * inode numbers are above @after (0 for the first page), in inode
	 * number order: the order of readdir, whose offsets are inode
	 * numbers. An entry keeps its number when renamed and a number is
	 * never reused, so a listing resumed from any offset neither skips
	 * nor repeats an entry that stayed. With @names, only ino, parent,
	 * name, meta.kind and the file type in meta.mode (S_IFDIR or
	 * S_IFREG, no permission bits) are filled in, the rest zero, for a
	 * readdir that shows names and types only. Returns as list() does. */
	int (*list_by_ino)(struct store *s, uint64_t parent, uint64_t after,
			   bool names, struct store_row *rows, size_t limit);

	/* Reads the content of file @ino into a new malloc()ed buffer (*data,
	 * caller frees; may be NULL when *len is 0). -ENOENT. */
	int (*read)(struct store *s, uint64_t ino, void **data, size_t *len);

	/* Reads the content of the entries @inos[0..n) (at most
	 * STORE_READ_MANY_MAX, distinct) in one query, as read() does each:
	 * fills @out (room for @n) with those that exist, in no particular
	 * order, and returns how many (an ino without an entry is left out;
	 * an entry without content has len 0). The caller frees each
	 * out[i].data. On error nothing is left allocated. -EINVAL when @n
	 * is above STORE_READ_MANY_MAX. */
	int (*read_many)(struct store *s, const uint64_t *inos, size_t n,
			 struct store_blob *out);

	/* Returns 1 when directory @parent has at least one child, else 0. */
	int (*has_children)(struct store *s, uint64_t parent);

	/* Reserves @count consecutive fresh inode numbers and sets *first to
	 * the lowest; every mount sharing the store gets disjoint ranges. */
	int (*alloc_ino)(struct store *s, uint64_t count, uint64_t *first);

	/* Applies the @n changes @changes[0..n) (borrowed) in one
	 * transaction (see the top of this file). On failure nothing is
	 * applied. In the same transaction, the store recomputes the Merkle
	 * hash (merkle.h) of every directory the batch touched and of each of
	 * their ancestors, bottom-up: a directory whose children changed (a
	 * child added, removed, renamed in or out, or given new content), a
	 * directory whose own row changed, and every directory above them up
	 * to the root. When @tree is not NULL, it sets *tree to a malloc()ed
	 * array of those directories' new hashes (the root last) and *ntree
	 * to its length (caller frees *tree; NULL and 0 when none). */
	int (*apply)(struct store *s, struct change *const *changes, size_t n,
		     struct store_dirhash **tree, size_t *ntree);

	/* Counts files and directories (*entries) and content bytes (*bytes).
	 */
	int (*stats)(struct store *s, uint64_t *entries, uint64_t *bytes);

	/* Fills @keys (room for @limit) with the entries whose ino is above
	 * @after, in ino order, the root excluded: the whole tree is walked
	 * by calling again with the last ino returned. Returns how many were
	 * filled (0 at the end). */
	int (*scan)(struct store *s, uint64_t after, struct store_key *keys,
		    size_t limit);

	/* Counts the subdirectories of @parent into *count, leaving out
	 * the entries whose ino is one of @except[0..nexcept) (any order).
	 * Reads the index of @parent's children once. */
	int (*count_subdirs)(struct store *s, uint64_t parent,
			     const uint64_t *except, size_t nexcept,
			     uint64_t *count);

	/* Sets *len to the length in bytes of the longest item ID (id.h)
	 * below directory @dir, relative to @dir's own ID: the escaped
	 * segments from @dir down, joined by '.' (a JSON file's last one is
	 * its stem). Entries in @except[0..nexcept) are neither counted nor
	 * descended into. 0 when nothing is below. Walks the subtree. */
	int (*longest_id_below)(struct store *s, uint64_t dir,
				const uint64_t *except, size_t nexcept,
				uint64_t *len);

	/* Optional (NULL when absent): reads the row of file @ino and its
	 * content together, in one round trip, so that the caller can check
	 * that the content is of the version it expects. -ENOENT. */
	int (*fetch)(struct store *s, uint64_t ino, struct store_row *row,
		     void **data, size_t *len);

	/* The change feed (see "Sharing" above). */

	/* Fills @recs (room for @limit) with the feed records whose sequence
	 * is above @after, in sequence order, and returns how many (0: none
	 * yet); the caller releases each record's row. -ESTALE when records
	 * above @after have been trimmed already: the caller cannot tell what
	 * changed and must forget everything it caches, then go on from
	 * feed_head(). */
	int (*feed_read)(struct store *s, uint64_t after,
			 struct store_feed *recs, size_t limit);

	/* Sets *seq to the highest sequence number committed (0: none). */
	int (*feed_head)(struct store *s, uint64_t *seq);

	/* Waits until the feed may hold records above @after, or @timeout_ms
	 * have passed: returns 1 (look), 0 (timed out) or a negative errno
	 * (-EAGAIN: the store is unreachable; wait and call again). It may
	 * return 1 spuriously; nothing may depend on it waking: a caller
	 * reads the feed at least once per timeout. PostgreSQL listens for a
	 * notification that apply() sends; SQLite polls the file's
	 * data_version. Called by one thread at a time. */
	int (*feed_wait)(struct store *s, uint64_t after, int timeout_ms);
};

struct store {
	const struct store_ops *ops;
	struct eng_log log;
	/* This writer's name in the feed: random and nonzero, chosen by the
	 * backend's open (store_base_init()). */
	uint64_t origin;
	/* How long and how many feed records apply() keeps (never 0): the
	 * defaults from the backend's open, store_config's from store_open().
	 */
	uint32_t feed_keep_seconds;
	uint64_t feed_keep_records;
	/* rows read back that broke the contract (skipped in listings) */
	atomic_uint_least64_t corrupt;
	/* changes apply() dropped or replaced in a namespace race, and the
	 * last STORE_RACES_RECENT of them (store_race()) */
	atomic_uint_least64_t races;
	pthread_mutex_t race_lock;
	struct store_race race_recent[STORE_RACES_RECENT];
	/* While set, apply() resolves no race: a batch that would drop a
	 * change (one that closes a cycle too) or replace an entry it does
	 * not change is refused with -EEXIST instead, as it was before stores were shared. The engine
	 * sets it while it bisects a refused batch (quarantine.c): a part
	 * that lacks its partner (the move that frees a name, the move that
	 * empties a directory) must fail there, not replace or drop. Only
	 * the thread that applies reads or writes it. */
	bool strict;
};

/* Frees the owned parts of @row. Accepts NULL. */
static inline void store_row_release(struct store_row *row)
{
	if (row)
		item_meta_release(&row->meta);
}

/* Why change @ch breaks the contract at the top of this file ("bad inode
 * number", "name too long", ...), or NULL when it keeps it; inode numbers
 * (its own and its parent's) above @max_ino are refused too (INT64_MAX
 * for SQL stores). Every store's apply(), and the cache's (cache.h),
 * refuses such a change with -EINVAL (and logs the reason); a backend adds
 * its own limits after. */
const char *store_change_problem(const struct change *ch, uint64_t max_ino);

/* The length of the stem of a file named @name (@len bytes) of @kind, the
 * key of the (parent, stem) index: without ".json" for ITEM_JSON, the
 * whole name otherwise. */
size_t store_stem_len(const char *name, size_t len, enum item_kind kind);

/* Sets apply()'s Merkle report to "none" (@tree may be NULL). */
static inline void store_tree_none(struct store_dirhash **tree, size_t *ntree)
{
	if (tree) {
		*tree = NULL;
		*ntree = 0;
	}
}

/* apply() without the Merkle report. */
static inline int store_apply(struct store *s, struct change *const *changes,
			      size_t n)
{
	return s->ops->apply(s, changes, n, NULL, NULL);
}

/* Destructor that accepts NULL. */
static inline void store_free(struct store *s)
{
	if (s)
		s->ops->free(s);
}

/* What every backend's open does to its struct store: a fresh origin
 * (random, nonzero, below 2^63), the feed's default limits, the race
 * lock. */
void store_base_init(struct store *s);

/* After a commit: logs race @kind of change @ch (@other: the other
 * writer's entry; @target names the store in the line), counts it in
 * s->races and keeps it among the recent ones. */
void store_race(struct store *s, const char *target,
		enum store_race_kind kind, const struct change *ch,
		uint64_t other);
/* What race @kind did, in words. */
const char *store_race_what(enum store_race_kind kind);
/* Copies the most recent races (newest first, at most @max) to @out and
 * sets *total to how many there were since open. Returns how many. */
size_t store_races_recent(struct store *s, struct store_race *out,
			  size_t max, uint64_t *total);

/* The key prefix in Redis when store_config.redis_prefix is NULL. */
#define STORE_REDIS_PREFIX "tierfs:"

/* The stores a configuration names. */
struct store_config {
	const char *postgres;	 /* a libpq conninfo, or NULL for SQLite */
	const char *sqlite_path; /* the SQLite file, when no postgres */
	bool must_exist;	 /* a missing SQLite file is -ENOENT, not made */
	const char *redis;	 /* redis://..., or NULL for no L2 */
	const char *redis_prefix; /* NULL: STORE_REDIS_PREFIX */
	bool redis_optional; /* an unreachable Redis: warn, go on without */
	/* Feed records are kept for at least this long (0: the default, one
	 * hour) and at most this many (0: the default, 1,000,000). */
	uint32_t feed_keep_seconds;
	uint64_t feed_keep_records;
};

#define STORE_FEED_KEEP_SECONDS 3600
#define STORE_FEED_KEEP_RECORDS 1000000

struct cache;

/*
 * Opens L3 (*l3: PostgreSQL when @c->postgres, else SQLite) and, when
 * @c->redis is set, the L2 cache (*l2, cache.h; NULL without Redis, or when
 * it is optional and unreachable). Returns 0, -EINVAL (neither store named), or
 * the errors of l3_pg_open(), l3_sqlite_open() and l2_redis_open() (then
 * nothing is left open); reasons go to @log. Blocks.
 */
int store_open(const struct store_config *c, const struct eng_log *log,
	       struct store **l3, struct cache **l2);

#endif
