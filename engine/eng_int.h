/*
 * eng_int.h - the engine's private header: the structures every room of
 * the engine shares, and the functions they call in each other.
 *
 *
 * Nodes. The engine keeps a node for every entry that somebody holds: the
 * kernel (nlookup), open handles (opens), a child node (children), an
 * engine call in progress (holds), or the batch queue (dirty: a change not
 * yet committed in L3). A node with none of these is freed; its truth is
 * then the L3 row. All nodes are indexed by inode number; live (not
 * deleted) nodes also by (parent, name). Every node's parent is in the
 * table, so paths and IDs are computed without touching L3.
 *
 * Coherence rules (one mount; other mounts are a later issue):
 *   - a node in the name index is the truth for its (parent, name);
 *   - an L3 row whose ino has a node is stale when that node is dirty or
 *     deleted, or sits elsewhere: the node wins;
 *   - otherwise the L3 row is the truth.
 * L3 is read with the engine lock dropped. gen counts committed batches; a
 * reader that saw gen change while it read L3 reads again, so it never
 * mixes a pre-commit row with post-commit node state.
 *
 * Content. A file's published content is an item: in L1 (pinned while not
 * yet persisted), and held by the node while the file is open or dirty. An
 * open for writing creates the node's working copy (struct wc), shared by
 * all handles; eng_flush()/eng_fsync() publish it as a new item.
 *
 * Persistence. Each change builds a batch record (the node's final state)
 * under a new sequence number, appends it to the write-ahead log (so a
 * crash of the process loses nothing acknowledged) and queues it. The
 * group-commit thread fdatasyncs the log every WAL_SYNC_MS. The flusher
 * takes the whole queue when it is due and rotates the log in the same
 * locked step, so every record in older segments is in the taken batch (or
 * replaced by a newer record); it applies the batch to L3 in one
 * transaction, marks clean the nodes whose latest change it carried, unpins
 * their items and deletes the older segments. committed_seq is the highest
 * sequence number known to be persisted; eng_fsync() waits for it, or, when
 * L3 fails, for the log to be synced. At eng_open() the log left by a
 * crashed engine is replayed into L3 before anything is served.
 *
 * Locking: one mutex (e->lock) protects every field of struct eng below it
 * and every node; L1 has its own lock; the store serialises itself.
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
#include "cuckoo.h"
#include "engine.h"
#include "id.h"
#include "l1.h"
#include "store.h"
#include "u64map.h"
#include "wal.h"

#define INO_BLOCK 1024 /* inode numbers reserved from L3 at a time */
#define LIST_PAGE 128  /* rows read from L3 per listing query */
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
/* Room the log keeps beyond wal_max_bytes for metadata-only changes, so
 * that the bound refuses new content (checked before anything changes)
 * rather than a rename half-way. */
#define WAL_META_SLACK (4u << 20)

#define TFS_XATTR "user.tierfs."

/* Calls to one tier: count, failures (ENOENT is an answer, not a failure)
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
	uint64_t dirty_seq;
	struct item *item; /* held while open or content_dirty, else NULL */
	struct wc *wc;
	uint64_t cache_version;	    /* content version at the last open */
	struct node *hnext;	    /* name index chain */
	struct node *dprev, *dnext; /* dirty list */
};

/* Open handles are linked into the engine, so that eng_close() frees the
 * ones the caller never released (the kernel drops pending RELEASEs when
 * a mount goes away). Protected by e->lock. */
struct handle_link {
	struct handle_link *prev, *next;
};

struct eng_file {
	struct handle_link link; /* first */
	struct node *n;
	bool writer;
};

struct eng_dir {
	struct handle_link link; /* first */
	struct node *n;
	char cursor[STORE_NAME_MAX + 1]; /* name of the last consumed entry */
	uint64_t pos;			 /* entries consumed */
};

struct eng {
	struct eng_config cfg;
	struct store *l3;
	struct store *l2; /* NULL without Redis */
	struct breaker l2_breaker;
	struct breaker l3_breaker; /* for reads; the flusher backs off */
	struct l1 *l1;
	struct wal *wal;
	int lock_fd; /* flock()ed: one engine per log */
	pthread_t flusher;
	bool flusher_started;
	pthread_t syncer;
	bool syncer_started;

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
	bool flush_now;
	bool stopping;
	bool wal_dirty;	       /* appended since the last wal_sync() */
	uint64_t wal_lost_seq; /* last change the log refused */
	bool wal_fresh;	       /* nothing appended since the last rotation */
	int64_t wal_seg;       /* the segment appends go to, once known */
	bool l3_failing;       /* the last flush failed (logged once) */
	uint64_t retry_at;     /* monotonic ns of the next flush attempt then */
	pthread_cond_t sync_cond; /* wakes the group-commit thread */
	uint64_t ino_next, ino_end;
	uint64_t ino_spare;	    /* first of a reserved block, or 0 */
	struct handle_link handles; /* open files and dirs (list head) */

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
	struct tier_stat st_l3_lookup, st_l3_read, st_l3_list, st_l3_apply;
	struct tier_stat st_l2_fetch, st_l2_apply;
};



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

#define L3_READ(e, X) (l3_allowed(e) ? l3_outcome((e), (X)) : -EIO)

/* engine.c */
void handle_link(struct eng *e, struct handle_link *h);
void handle_unlink(struct handle_link *h);

/* tiers.c */
void tier_note(struct tier_stat *st, uint64_t t0, int r);
bool l3_allowed(struct eng *e);
int l3_outcome(struct eng *e, int r);
bool l3_error_retryable(int r);
void l2_outcome(struct eng *e, int r);
bool l2_usable(struct eng *e);

/* nodes.c */
struct node *name_find(struct eng *e, uint64_t parent, const char *name);
int name_add(struct eng *e, struct node *n);
void name_del(struct eng *e, struct node *n);
struct node *node_get(struct eng *e, uint64_t ino);
bool node_is_dir(const struct node *n);
void dirty_unlink(struct eng *e, struct node *n);
void node_destroy(struct node *n);
void node_try_free(struct eng *e, struct node *n);
void node_put(struct eng *e, struct node *n);
struct node *node_add(struct eng *e, struct node *dir, uint64_t ino, const char *name, struct item_meta *meta);
void node_attr(const struct eng *e, const struct node *n, struct eng_attr *a);
ssize_t node_path(struct eng *e, const struct node *n, char *buf, size_t cap);
ssize_t node_id(struct eng *e, const struct node *n, char *buf, size_t cap);

/* files.c */
void wc_free(struct wc *w);
int setattr_size(struct eng *e, struct node *n, struct eng_file *f, uint64_t size);

/* resolve.c */
int check_new_name(struct eng *e, struct node *dir, const char *name, enum item_kind kind);
int resolve(struct eng *e, struct node *dir, const char *name, struct node **out);
int get_dir(struct eng *e, uint64_t ino, struct node **out);
int resolve_at(struct eng *e, uint64_t parent, const char *name, struct node **out);
int check_stem(struct eng *e, struct node *dir, const char *name, enum item_kind kind, const struct node *ignore, const struct node *ignore2);
int dir_empty(struct eng *e, struct node *dir);
int check_new_entry(struct eng *e, uint64_t parent, const char *name, enum item_kind kind, struct node **dirp);

/* filter.c */
void filter_add(struct eng *e, uint64_t parent, const char *name);
void filter_del(struct eng *e, uint64_t parent, const char *name);
bool filter_absent(struct eng *e, uint64_t dir, const char *name);
void filter_start(struct eng *e);

/* changes.c */
int mark_dirty(struct eng *e, struct node *n, struct item *content);
int publish(struct eng *e, struct node *n, void *data, size_t len, int64_t mtime);
uint64_t next_ino(struct eng *e, int *err);
void reserve_inos(struct eng *e);
void backpressure(struct eng *e);

/* content.c */
int node_content(struct eng *e, struct node *n, struct item **out);

/* namespace.c */
int node_create(struct eng *e, struct node *dir, const char *name, enum item_kind kind, uint32_t mode, uint32_t uid, uint32_t gid, bool explicit_dir, struct node **out);
int node_delete(struct eng *e, struct node *n);

/* flusher.c */
void *flusher_main(void *arg);
int wait_committed(struct eng *e, uint64_t seq);
void *syncer_main(void *arg);
int replay_wal(struct eng *e);

#endif
