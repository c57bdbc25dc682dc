/*
 * eng_int.h - the engine's private header: the structures every part of
 * the engine shares, and the functions the parts call in each other. The
 * engine is one library (engine.h is its manual); its .c files are rooms
 * with one job each:
 *
 *   engine.c    open, close, sync, the list of open handles
 *   tiers.c     the one road to L2 and L3: breakers, counters, the lock
 *   nodes.c     the node table, attributes, paths and IDs
 *   resolve.c   names: lookups through the table, the filter and L3;
 *               the checks a new name must pass; empty directories
 *   filter.c    the negative-lookup filter and its builder thread
 *   changes.c   change records: the log, the queue, inode numbers,
 *               drafts (validated, hashed content) and publishing
 *   content.c   the read fall-through L1 -> L2 -> L3
 *   namespace.c lookup, setattr, mkdir, rmdir, unlink, rename
 *   files.c     open files and their working copies
 *   listing.c   readdir: the L3 index merged with pending changes
 *   dirsnap.c   cold walks: directory snapshots answer lookups, and
 *               siblings' content is read together
 *   xattrs.c    extended attributes
 *   items.c     items by ID (put, get, delete)
 *   flusher.c   persistence: the flusher, group commit, replay
 *   feed.c      the store's change feed: other writers' changes
 *   status.c    statfs, status JSON, metrics
 *
 * Nodes. The engine keeps a node for every entry that somebody holds: the
 * kernel (nlookup), open handles (opens), a child node (children), an
 * engine call in progress (holds), or the batch queue (dirty: a change not
 * yet committed in L3). A node with none of these is freed; its truth is
 * then the L3 row. All nodes are indexed by inode number; live (not
 * deleted) nodes also by (parent, name). Every node's parent is in the
 * table, so paths and IDs are computed without touching L3.
 *
 * Coherence rules (one mount):
 *   - a node in the name index is the truth for its (parent, name);
 *   - an L3 row whose ino has a node is stale when that node is dirty or
 *     deleted, or sits elsewhere: the node wins;
 *   - otherwise the L3 row is the truth.
 * gen counts committed batches; a reader that saw gen change while it read
 * L3 reads again, so it never mixes a pre-commit row with post-commit node
 * state.
 *
 * The lock. One mutex (e->lock) protects every field of struct eng below
 * it and every node; L1 and the breakers have their own locks; the stores
 * serialise themselves. Nothing that a disk, a network or the size of a
 * file can make slow runs under e->lock: calls to L2 and L3 go through
 * tier_enter()/tier_leave(), which drop it; content is validated and
 * hashed into a draft with the lock dropped; the log is synced (fdatasync)
 * by the group-commit thread, by eng_fsync() and by the flusher, all
 * without it. What runs under the lock is memory work and write(2) appends
 * to the log. Whoever drops the lock holds the nodes it keeps using
 * (holds), and checks again what it decided before (gen, the name index,
 * deleted).
 *
 * Content. A file's published content is an item: in L1 (pinned while not
 * yet persisted), and held by the node while the file is open or dirty. An
 * open for writing creates the node's working copy (struct wc), shared by
 * all handles; eng_flush()/eng_fsync() publish it as a new item.
 *
 * Changes. An engine call that changes entries builds a record of each
 * entry's new state (struct change, change.h) in a struct txn, appends all
 * of them to the write-ahead log in one write (txn_log), and only then
 * changes its nodes and queues the records (txn_queue). So a call that
 * fails has changed nothing: not the nodes, not the log, not (later) L3.
 *
 * Persistence. The group-commit thread fdatasyncs the log every
 * WAL_SYNC_MS. The flusher takes the whole queue when it is due and starts
 * a new log segment in the same locked step, so every record in older
 * segments is in the taken batch (or replaced by a newer record); it syncs
 * the old segment, applies the batch to L3 in one transaction, marks clean
 * the nodes whose latest change it carried, unpins their items and deletes
 * the older segments. committed_seq is the highest sequence number known
 * to be persisted; eng_fsync() waits for it, or, when L3 fails, for the log
 * to be synced. At eng_open() the log left by a crashed engine is replayed
 * into L3 before anything is served.
 */
#ifndef TIERFS_ENG_INT_H
#define TIERFS_ENG_INT_H

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "batch.h"
#include "breaker.h"
#include "cache.h"
#include "cuckoo.h"
#include "engine.h"
#include "id.h"
#include "l1.h"
#include "store.h"
#include "u64map.h"
#include "wal.h"

#define INO_BLOCK 1024 /* inode numbers reserved from L3 at a time */
#define LIST_PAGE 128  /* rows read from L3 per listing query */
/* Rows a directory handle reads ahead at most: a long listing's queries
 * grow from LIST_PAGE to this many rows (424 bytes each: 434 KB). A long
 * listing also holds as many again, read in the background
 * (eng_readdir_prefetch()). */
#define LIST_AHEAD 1024
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 5000
#define STOP_RETRIES 5 /* failed flushes tolerated while closing */
#define WAL_SYNC_MS 50 /* group commit interval of the log */
/* Writers wait while more than max(DIRTY_HIGH_MIN, batch_flush_bytes *
 * DIRTY_HIGH_FACTOR) changed bytes wait to be persisted. */
#define DIRTY_HIGH_MIN (64u << 20)
#define DIRTY_HIGH_FACTOR 64
#define L3_BREAKER_FAILS 3
#define L3_BREAKER_COOLDOWN_NS (2 * 1000000000ull)
#define L2_BREAKER_FAILS 3
#define L2_BREAKER_COOLDOWN_NS (2 * 1000000000ull)

#define TFS_XATTR "user.tierfs."
#define QUARANTINE_RECENT 8 /* set-aside changes status lists */

/* A change L3 refused for good, as status shows it. */
struct quarantined {
	uint64_t ino;
	uint64_t seq; /* the change's sequence number */
	bool deleted;
	char name[64]; /* cut */
	int error;
};

/* Every kind of call the engine makes to a tier (tiers.c names them). */
enum tier_op {
	OP_L3_GET,
	OP_L3_LOOKUP,
	OP_L3_LIST,
	OP_L3_READ,
	OP_L3_READ_MANY,
	OP_L3_ALLOC_INO,
	OP_L3_APPLY,
	OP_L3_STATS,
	OP_L3_SCAN,
	OP_L3_FEED, /* feed_read() and feed_head(); not feed_wait() */
	OP_L3_SUBDIRS,
	OP_L3_ID_LEN,
	OP_L2_GET,
	OP_L2_FETCH,
	OP_L2_FETCH_MANY,
	OP_L2_APPLY,
	OP_L2_PUT_TREE,
	OP_COUNT
};

/* Calls of one kind: count, failures (ENOENT is an answer, not a failure)
 * and total time. Atomic: updated without the engine lock. */
struct tier_stat {
	atomic_uint_least64_t calls, errors, ns;
};

struct wc {
	char *buf;
	size_t len, cap;
	bool dirty;	  /* holds changes not yet published */
	bool loaded;	  /* buf holds the content (else reload it) */
	int failed;	  /* a write failed (-EFBIG): never publish this copy */
	int64_t mtime_ns; /* time of the last write */
	unsigned writers; /* handles open for writing */
	uint64_t writes;  /* changes so far: a publish clears dirty only if
			     none came while it ran */
	bool trunc_only;  /* its only change is a truncation (O_TRUNC,
			     ftruncate) no write has followed: a flush does
			     not publish it, release and fsync do */
};

struct node {
	uint64_t ino;
	uint64_t parent; /* 0 for the root */
	char *name;
	struct item_meta meta; /* published metadata */
	uint64_t nlookup;
	unsigned opens;
	unsigned holds;
	unsigned children;
	bool deleted;
	bool dirty;
	bool content_dirty; /* item not yet persisted: pinned in L1 */
	bool refused;	    /* L3 refused its last change for good */
	bool subdirs_known; /* a directory: subdirs is counted */
	uint64_t subdirs;   /* its subdirectories, once counted */
	uint64_t dirty_seq;
	struct item *item; /* held while open or content_dirty, else NULL */
	struct wc *wc;
	uint64_t cache_version;	    /* content version at the last open */
	uint64_t stamp;	/* e->stamp when its state last came from L3 or
			   was committed: newer than a feed read begun
			   before it (feed.c) */
	struct node *hnext;	    /* name index chain */
	struct node *dprev, *dnext; /* dirty list */
};

/* Open handles are linked into the engine, so that eng_close() frees the
 * ones the caller never released (the kernel drops pending RELEASEs when
 * a mount goes away). Protected by e->lock. */
struct handle_link {
	struct handle_link *prev, *next;
	/* frees what the handle owns besides itself (NULL: nothing) */
	void (*release)(struct handle_link *h);
};

struct eng_file {
	struct handle_link link; /* first */
	struct node *n;
	bool writer;
};

struct eng_dir {
	struct handle_link link; /* first */
	struct node *n;
	uint64_t cursor; /* inode number of the last consumed entry, or 0 */
	/* Rows read ahead from L3 in inode order (listing.c): used only while
	 * e->gen is still @ahead_gen, i.e. while nothing was persisted or
	 * applied from the feed since they were read. */
	struct store_row *ahead;
	int nahead, ahead_cap; /* rows held; room (grows to LIST_AHEAD) */
	bool ahead_more;       /* L3 may hold rows after the last one */
	bool ahead_names;      /* names and types only: no attributes */
	uint64_t ahead_gen;
	uint64_t ahead_epoch;  /* bumped whenever the ahead rows change */
	/* The rows after the ahead ones, read by eng_readdir_prefetch() while
	 * the caller hands the last call's entries on: they continue the
	 * ahead rows of @next_epoch, read at @next_gen. @prefetch: a prefetch
	 * is due or running (eng_releasedir() waits for it; nnext stays 0). */
	struct store_row *next;
	int nnext, next_cap;
	bool next_more, next_names, prefetch;
	uint64_t next_gen, next_epoch;
};

struct eng {
	struct eng_config cfg;
	struct store *l3;
	struct cache *l2; /* NULL without Redis */
	struct breaker l2_breaker;
	struct breaker l3_breaker; /* for reads; the flusher backs off */
	struct l1 *l1;
	struct wal *wal;
	int lock_fd; /* flock()ed: one engine per log */
	pthread_t flusher;
	bool flusher_started;
	pthread_t syncer;
	bool syncer_started;
	struct tier_stat tier_stats[OP_COUNT];

	pthread_mutex_t lock;
	pthread_cond_t flush_cond;  /* wakes the flusher */
	pthread_cond_t commit_cond; /* wakes eng_fsync() waiters */
	struct u64map nodes;	    /* ino -> node */
	struct u64map names;	    /* name_key() -> node chain */
	struct node *dirty_head;
	struct batch batch;
	uint64_t change_seq;
	uint64_t committed_seq;
	uint64_t gen;
	uint64_t fail_count;
	int last_error;
	/* The flusher is applying a batch, from before L3's apply() until
	 * the nodes are marked clean (commit_done()); commit_cond is
	 * broadcast when it ends. The feed applies no page meanwhile: the
	 * page may hold the batch's own records, which a node still dirty
	 * would pass over. */
	bool flushing;
	bool flush_now;
	bool stopping;
	bool wal_dirty;	       /* appended since the last wal_sync() */
	uint64_t wal_lost_seq; /* last change whose log segment failed to sync */
	bool wal_fresh;	       /* nothing appended since the last rotation */
	bool wal_keep;	       /* the queue lost records: keep every segment */
	int64_t wal_seg;       /* the segment appends go to, once known */
	bool l3_failing;       /* the last flush failed (logged once) */
	uint64_t retry_at;     /* monotonic ns of the next flush attempt then */
	pthread_cond_t sync_cond; /* wakes the group-commit thread */
	uint64_t dirty_dirs; /* directory nodes that turned dirty or moved */
	uint64_t ino_next, ino_end;
	uint64_t ino_spare;	    /* first of a reserved block, or 0 */
	bool ino_allocating;	    /* a block is being reserved from L3 */
	pthread_cond_t ino_cond;    /* ... and was (or failed to be) */
	pthread_cond_t dir_cond;    /* a directory handle's prefetch ended */
	struct handle_link handles; /* open files and dirs (list head) */
	/* bytes the working copies hold (their capacity), at most
	 * cfg.max_open_bytes; open_full_logged: a refusal was logged since
	 * the last working copy that fitted */
	uint64_t open_bytes;
	bool open_full_logged;
	/* statfs: L3's counts at open plus this engine's changes since */
	int64_t fs_entries, fs_bytes;
	char *wal_dir; /* the log directory (quarantine.log is there) */
	uint64_t quarantined; /* changes set aside since open */
	uint64_t corrupt_rows; /* L3 rows the engine refused to show */
	struct u64map too_big; /* ino -> 1: files over max_item_bytes met */
	struct quarantined quarantine[QUARANTINE_RECENT]; /* the last ones */

	/* The negative-lookup filter over (parent, name) of every entry. It
	 * always gets this engine's inserts; deletes only once trusted (a
	 * delete of a key the builder has not inserted yet could remove
	 * another key's fingerprint). Trusted when the builder has scanned
	 * all of L3: then "absent" needs no L3 query. */
	struct cuckoo *filter;
	bool filter_trusted;
	bool filter_full_logged;
	pthread_t builder;
	bool builder_started;
	uint64_t l3_lookups, filter_negatives;
	uint64_t filter_false_positives; /* "maybe", then L3 said absent */
	uint64_t batches, batch_recs, last_batch;
	uint64_t filter_epoch; /* a builder that saw another one rescans */
	struct u64map feed_names; /* keys filter_add_feed() added */
	bool builder_running;

	/* The change feed (feed.c): the last record applied, and counts. */
	uint64_t stamp; /* counts node states established (node.stamp) */
	uint64_t feed_seq;
	pthread_t feed_thread;
	bool feed_started;
	uint64_t feed_applied; /* other writers' records applied */
	uint64_t feed_kept;    /* ... to a node with a change of its own */
	uint64_t feed_resets;  /* gaps: everything cached was re-read */
	/* ino -> 1: nodes a record (or their row) could not place where it
	 * says (the place would hold a node below itself, or the name is a
	 * node with a change of its own): unnamed until a later page lets
	 * them be placed (feed.c) */
	struct u64map feed_lost;

	/* Directory snapshots (dirsnap.c): dir ino -> struct dirsnap, the
	 * entries they hold (ino -> dir ino), most recently used first. */
	struct u64map snaps, snap_inos;
	struct dirsnap *snap_head, *snap_tail;
	size_t snap_bytes;
	uint64_t snap_epoch;  /* bumped by every forgetting */
	uint64_t snap_serial; /* snapshots made */
	uint64_t snap_loads, snap_hits, snap_negatives;
	uint64_t prefetch_batches, prefetched;
	/* listings' rows read in the background, and those used */
	uint64_t list_prefetches, list_prefetches_used;
	uint64_t dir_handles; /* open directory handles (listing.c) */
};

/* --- time --- */

static inline int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec;
}

static inline struct timespec mono_ts(uint64_t ns)
{
	struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000),
			      .tv_nsec = (long)(ns % 1000000000)};
	return ts;
}

/* --- engine.c --- */

void handle_link(struct eng *e, struct handle_link *h);
void handle_unlink(struct handle_link *h);

/* --- tiers.c: the one road to the tiers --- */

/*
 * One call to a tier, bracketed by tier_enter() and tier_leave():
 *
 *	struct tier_call c;
 *	r = tier_enter(e, &c, OP_L3_LOOKUP, dir, true);
 *	if (r == 0)
 *		r = e->l3->ops->lookup(e->l3, ...);
 *	r = tier_leave(e, &c, r);
 *
 * tier_enter() asks the tier's breaker (an open L3 breaker refuses with
 * -EIO at once, an open L2 breaker with -EAGAIN; the flusher's applies are
 * not refused: it backs off by itself), holds @hold (may be NULL) and,
 * when @locked (the caller holds e->lock), notes gen and drops e->lock.
 * tier_leave() is called whether or not tier_enter() refused: it counts
 * the call, feeds its outcome to the breaker, retakes e->lock (when
 * @locked), releases the hold and returns the errno for the caller: an L3
 * that is unreachable (-EAGAIN) is -EIO for a reader. tier_stale() tells
 * whether a batch committed meanwhile, so that what the call read may
 * already be older than the node table (only for a call made @locked).
 */
struct tier_call {
	enum tier_op op;
	struct node *hold;
	bool locked;
	bool refused;
	uint64_t gen;
	uint64_t t0;
};
int tier_enter(struct eng *e, struct tier_call *c, enum tier_op op,
	       struct node *hold, bool locked);
int tier_leave(struct eng *e, struct tier_call *c, int r);
static inline bool tier_stale(const struct eng *e, const struct tier_call *c)
{
	return e->gen != c->gen;
}
/* true while Redis is configured and its breaker lets calls through. */
bool l2_usable(struct eng *e);
/* true for L3 failures that may go away by themselves. */
bool l3_error_retryable(int r);
/* The name and tier of @op, for metrics. */
const char *tier_op_name(enum tier_op op, const char **tier);

/* --- nodes.c --- */

struct node *name_find(struct eng *e, uint64_t parent, const char *name);
struct node *node_get(struct eng *e, uint64_t ino);
bool node_is_dir(const struct node *n);
void dirty_unlink(struct eng *e, struct node *n);
void node_destroy(struct node *n);
/* Frees @n when nothing holds it any more; then maybe its parent. */
void node_try_free(struct eng *e, struct node *n);
/* Drops a hold taken by resolve() & co; accepts NULL. */
void node_put(struct eng *e, struct node *n);
/* Makes a node for entry @ino named @name under @dir (NULL for the root),
 * stealing @meta. NULL when out of memory (then @meta is untouched). */
struct node *node_add(struct eng *e, struct node *dir, uint64_t ino,
		      const char *name, struct item_meta *meta);
/* Undoes node_add() of a node nobody has seen yet. */
void node_unadd(struct eng *e, struct node *n);
/* Moves live node @n to (@dir, @name) in the table; -ENOMEM. */
int node_rename(struct eng *e, struct node *n, struct node *dir,
		const char *name);
/* Takes live node @n out of the name index: it is deleted. */
void node_unname(struct eng *e, struct node *n);
void node_attr(const struct eng *e, const struct node *n, struct eng_attr *a);
ssize_t node_path(struct eng *e, const struct node *n, char *buf, size_t cap);
ssize_t node_id(struct eng *e, const struct node *n, char *buf, size_t cap);
/* The ID an item built from @n's content carries ("" when unknown). */
void node_item_id(struct eng *e, const struct node *n, char id[ID_MAX + 1]);

/* --- resolve.c --- */

/*
 * Subdirectory counts (nlink = 2 + subdirectories). A directory node counts
 * them once, from L3 (store count_subdirs(), leaving out the rows of dirty
 * directories, whose nodes are the truth) plus the live dirty directories
 * in it, and then keeps the count current through this engine's changes
 * (subdirs_add()). A count read while a batch committed, or while another
 * directory turned dirty (e->dirty_dirs), is read again.
 *
 * subdirs_of() counts the subdirectories of @ino (holding @hold, may be
 * NULL, while the lock is dropped); dir_count() fills in @dir's count when
 * unknown. Both may drop the lock; on an L3 error the count stays unknown.
 */
int subdirs_of(struct eng *e, uint64_t ino, struct node *hold,
	       uint64_t *count);
int dir_count(struct eng *e, struct node *dir);
/* Moves the known count of directory @ino (if it has a node) by @delta. */
void subdirs_add(struct eng *e, uint64_t ino, int delta);
/* The inos of the dirty nodes (@dirs_only: of directories), deleted ones
 * too (new array in *out, caller frees; NULL when none): the L3 rows they
 * override. */
int dirty_inos(struct eng *e, bool dirs_only, uint64_t **out, size_t *n);

/* Finds @name in @dir and returns it held. May drop the lock. */
int resolve(struct eng *e, struct node *dir, const char *name,
	    struct node **out);
/* true for an L3 row of a file larger than max_item_bytes: not shown, as a
 * corrupt row (logged and counted once per entry). */
bool row_too_big(struct eng *e, const struct store_row *row);
/* The live directory node @ino (held by the caller). -ENOENT, -ENOTDIR. */
int get_dir(struct eng *e, uint64_t ino, struct node **out);
int resolve_at(struct eng *e, uint64_t parent, const char *name,
	       struct node **out);
int check_new_name(struct eng *e, struct node *dir, const char *name,
		   enum item_kind kind);
int check_stem(struct eng *e, struct node *dir, const char *name,
	       enum item_kind kind, const struct node *ignore,
	       const struct node *ignore2);
/* 1 when @dir has no children but @ignore (may be NULL), 0 when it has,
 * or a negative errno. May drop the lock. */
int dir_empty(struct eng *e, struct node *dir, const struct node *ignore);
int check_new_entry(struct eng *e, uint64_t parent, const char *name,
		    enum item_kind kind, struct node **dirp);

/* --- filter.c --- */

void filter_add(struct eng *e, uint64_t parent, const char *name);
void filter_del(struct eng *e, uint64_t parent, const char *name);
bool filter_absent(struct eng *e, uint64_t dir, const char *name);
/* Sizes the filter for @entries and starts its builder. */
void filter_start(struct eng *e, uint64_t entries);
/*
 * filter_add() for a name the change feed brings. A record comes for every
 * change of an entry (a file rewritten, a directory whose mtime each new
 * child sets), and each insert of a name stores one more fingerprint: a
 * name met again and again would fill its buckets and overflow the filter.
 * So the names the feed added are remembered (their 64-bit keys, the
 * filter's own identity of a name; at most FEED_NAMES_MAX, then forgotten
 * all at once: a name then costs one more fingerprint) and added once;
 * filter_del() forgets a name there too, so that a name deleted here and
 * made again elsewhere is added again.
 */
#define FEED_NAMES_MAX 65536
void filter_add_feed(struct eng *e, uint64_t parent, const char *name);
/* Distrusts the filter until a new scan of L3 completes (names may have
 * been missed). Lock held. */
void filter_restart(struct eng *e);

/* --- feed.c --- */

/* Notes the feed's head and starts following it (nothing to follow: 0). */
int feed_start(struct eng *e);
/* Joins the feed thread (e->stopping set). */
void feed_stop(struct eng *e);
/* L3 holds no row for clean node @n: forgets it as a record saying so
 * would, but tells the kernel nothing (the caller answers a request, and
 * the kernel looks the name up again after ESTALE). false, forgetting
 * nothing, when the row is missing because L3 refused this engine's own
 * change (the mount shows it until it is read again). Lock held. */
bool feed_gone(struct eng *e, struct node *n);

/* --- dirsnap.c --- */

struct dirsnap;
/* Answers a lookup of @name in @dir that missed the node table from
 * @dir's snapshot, loading one when it does not cover @name (*loads
 * counts the loads of this lookup, at most two, besides the pages that
 * grow a snapshot from the directory's start): 0 and the node held in
 * *out, -ENOENT, another negative errno, 2 (loaded: look again from the
 * node table, as the lock was dropped) or 1 (not answered: look up L3). */
int snap_resolve(struct eng *e, struct node *dir, const char *name,
		 int *loads, struct node **out);
/* Forgets the snapshots entry @ino (now in directory @parent; 0 when
 * deleted) may be in: it changed. */
void snap_forget(struct eng *e, uint64_t ino, uint64_t parent);
void snap_forget_all(struct eng *e);
/* Reads the content of clean file @n together with that of siblings its
 * directory's snapshot lists, into L1. Returns 1 when it read (look in L1
 * again), 0 when it did not. Drops the lock. */
int snap_prefetch(struct eng *e, struct node *n);

/* --- changes.c --- */

/* The records of one engine call, logged all or nothing. */
struct txn {
	struct change **recs;
	size_t n, cap;
};
void txn_init(struct txn *t);
/* Frees the records not yet queued. */
void txn_release(struct txn *t);
/* Adds the new state of entry @ino (copied; @content referenced, or NULL to
 * keep the stored content). Returns 0 or -ENOMEM. */
int txn_put(struct txn *t, uint64_t ino, uint64_t parent, const char *name,
	    const struct item_meta *meta, struct item *content);
/* Adds the deletion of entry @ino. */
int txn_del(struct txn *t, uint64_t ino);
/* Appends every record to the log in one write, under new sequence
 * numbers. On error nothing was logged (-ENOSPC: the log is full, or its
 * disk; -EIO; -ENOMEM); the caller then changes nothing. */
int txn_log(struct eng *e, struct txn *t);
/* Queues logged record @i as node @n's newest change (@n's state already
 * is the record's). */
void txn_queue(struct eng *e, struct txn *t, size_t i, struct node *n);

/* Content validated and hashed for a file of some kind, ready to become
 * an item under the lock without further work on its bytes. */
struct draft {
	void *data; /* owned, malloc()ed */
	size_t len;
	enum item_kind kind; /* what it was validated for */
	uint8_t hash[ITEM_HASH_LEN];
};
/* Validates @len bytes at @data (stolen) for @kind and hashes them.
 * -EFBIG beyond @max, -EINVAL for bad JSON; then @data is freed. Pure: no
 * lock needed. */
int draft_make(struct draft *d, void *data, size_t len, enum item_kind kind,
	       size_t max);
/* draft_make() for file @n with e->lock dropped meanwhile (holds @n);
 * again when @n's kind changed while it was out. */
int draft_make_unlocked(struct eng *e, struct node *n, void *data, size_t len,
			struct draft *d);
void draft_release(struct draft *d);
/* Publishes @d (stolen) as the next version of file @n, modified at
 * @mtime, with metadata @meta (NULL: @n's own): logs it, then makes it
 * @n's content (L1, pinned). -ENOSPC, -EIO, -ENOMEM; then nothing changed.
 */
int publish(struct eng *e, struct node *n, struct draft *d, int64_t mtime,
	    const struct item_meta *meta);
/* Logs and applies a metadata change of live node @n: @meta (stolen on
 * success) becomes its metadata. On error nothing changed and @meta is
 * still the caller's. */
int meta_change(struct eng *e, struct node *n, struct item_meta *meta);
/* Sets aside @count inode numbers for one call (*first, consecutive). May
 * drop the lock to reserve a block from L3 (with oneshot, just @count), so
 * call it before the checks that the lock protects. */
int ino_grant(struct eng *e, uint64_t count, uint64_t *first);
/* Reserves the next block in the background once half of the current one
 * is used (the flusher calls it; drops the lock). */
void ino_refill(struct eng *e);
void backpressure(struct eng *e);

/* --- content.c --- */

int node_content(struct eng *e, struct node *n, struct item **out);

/* --- namespace.c --- */

/*
 * Creates, as one logged change, the implicit directories @dirs[0..ndirs)
 * (each inside the one before, the first inside @dir) and entry @name of
 * @kind inside the last, under inode numbers @ino onward (ndirs + 1 of
 * them, from ino_grant()). A file starts as version 1 holding @d (stolen;
 * NULL: empty). Returns the new entry held. On error nothing changed (and
 * @d is released).
 */
int node_create(struct eng *e, struct node *dir, char *const *dirs,
		size_t ndirs, const char *name, enum item_kind kind,
		uint32_t mode, uint32_t uid, uint32_t gid, bool explicit_dir,
		uint64_t ino, struct draft *d, struct node **out);
/* Creates entry @name of @kind in directory @parent for the caller @ctx
 * (a new inode number, the checks, node_create()); returns it held. */
int create_entry(struct eng *e, uint64_t parent, const char *name,
		 enum item_kind kind, uint32_t mode, const struct eng_ctx *ctx,
		 struct node **out);
/* Deletes @n (held) and the implicit directories it leaves empty. */
int node_delete(struct eng *e, struct node *n);
/* The part of a deletion that cannot fail: @n leaves the namespace (its
 * ctime @now). */
void node_delete_apply(struct eng *e, struct node *n, int64_t now);

/* --- files.c --- */

void wc_free(struct wc *w);
/* Frees @n's working copy, giving back its bytes to max_open_bytes. */
void wc_drop(struct eng *e, struct node *n);
/* Changes the size of file @n (through writer handle @f, may be NULL) and,
 * with @meta (may be NULL), its metadata, in one change; a size change
 * without a writer handle publishes at once, modified at @mtime. */
int setattr_size(struct eng *e, struct node *n, struct eng_file *f,
		 uint64_t size, struct item_meta *meta, int64_t mtime);

/* --- quarantine.c --- */

/* true for apply() errors about a change the batch carries (store.h). */
bool refused_for_good(int r);
/* After L3 refused @recs for good: commits what it takes in parts and
 * moves the changes it refuses to the end of @recs (*nq of them). Without
 * the lock. 0, or a negative errno (L3 failed otherwise: retry them all).
 * *tree and *ntree: the parts' Merkle reports (caller frees *tree). */
int apply_isolating(struct eng *e, struct change **recs, size_t n, size_t *nq,
		    struct store_dirhash **tree, size_t *ntree);
/* Logs and counts @n set-aside changes (refused with @why); without
 * @filed (quarantine.log could not be written) the log keeps its
 * segments. Lock held (or no other thread yet). */
void quarantine_note(struct eng *e, struct change **recs, size_t n, int why,
		     bool filed);

/* --- flusher.c --- */

void *flusher_main(void *arg);
int wait_committed(struct eng *e, uint64_t seq);
void *syncer_main(void *arg);
int replay_wal(struct eng *e);

#endif
