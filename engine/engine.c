/*
 * engine.c - the tierfs engine: the in-memory tree over L1 and L3, the
 * working copies of open files, and the flusher.
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
#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <sys/file.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <jansson.h>
#include <time.h>
#include <unistd.h>

#include "batch.h"
#include "breaker.h"
#include "cuckoo.h"
#include "engine.h"
#include "id.h"
#include "l1.h"
#include "l2_redis.h"
#include "l3_pg.h"
#include "l3_sqlite.h"
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

/* --- open handles --- */

static void handle_link(struct eng *e, struct handle_link *h)
{
	h->prev = &e->handles;
	h->next = e->handles.next;
	e->handles.next->prev = h;
	e->handles.next = h;
}

static void handle_unlink(struct handle_link *h)
{
	h->prev->next = h->next;
	h->next->prev = h->prev;
	h->prev = h->next = h;
}

/* --- time --- */

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec;
}

static struct timespec mono_ts(uint64_t ns)
{
	struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000),
			      .tv_nsec = (long)(ns % 1000000000)};
	return ts;
}

static void tier_note(struct tier_stat *st, uint64_t t0, int r)
{
	atomic_fetch_add_explicit(&st->calls, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&st->ns, mono_ns() - t0,
				  memory_order_relaxed);
	if (r < 0 && r != -ENOENT)
		atomic_fetch_add_explicit(&st->errors, 1, memory_order_relaxed);
}

/* true when a read may go to L3 now: the breaker is closed (or lets a
 * trial through). While it is open, reads fail with EIO at once instead of
 * waiting for a connect timeout each. */
static bool l3_allowed(struct eng *e)
{
	return breaker_allow(&e->l3_breaker, mono_ns());
}

/*
 * Feeds the outcome of an L3 read to the breaker and returns the errno the
 * caller sees: an unreachable or busy L3 (-EAGAIN from the store) is an I/O
 * error for the file's user, who cannot be helped by retrying at once
 * (DESIGN.md section 5).
 */
static int l3_outcome(struct eng *e, int r)
{
	if (r != -EAGAIN) {
		if (breaker_success(&e->l3_breaker))
			eng_logf(&e->cfg.log, LOG_WARNING,
				 "%s answers again: reads go to it again",
				 e->l3->ops->name);
		return r;
	}
	if (breaker_failure(&e->l3_breaker, mono_ns()))
		eng_logf(&e->cfg.log, LOG_WARNING,
			 "%s is unreachable: reads of what no other tier "
			 "holds fail with EIO until it answers (tried again "
			 "every 2 s); writes go on into the write-ahead log",
			 e->l3->ops->name);
	return -EIO;
}

/* An L3 read, gated by the breaker: X is the store call. */
#define L3_READ(e, X) (l3_allowed(e) ? l3_outcome((e), (X)) : -EIO)

/* true for L3 failures that may go away by themselves (unreachable, busy,
 * an I/O error); false for refusals someone must fix (permission denied,
 * read-only, disk full, a constraint). */
static bool l3_error_retryable(int r)
{
	return r == -EAGAIN || r == -EIO || r == -ENOMEM || r == -ETIMEDOUT;
}

/* --- the node table --- */

static uint64_t name_key(uint64_t parent, const char *name)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (int i = 0; i < 8; i++) {
		h ^= (parent >> (8 * i)) & 0xff;
		h *= 0x100000001b3ull;
	}
	for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
		h ^= *p;
		h *= 0x100000001b3ull;
	}
	return h ? h : 1;
}

static struct node *name_find(struct eng *e, uint64_t parent, const char *name)
{
	struct node *n = u64map_get(&e->names, name_key(parent, name));

	for (; n; n = n->hnext)
		if (n->parent == parent && strcmp(n->name, name) == 0)
			return n;
	return NULL;
}

static int name_add(struct eng *e, struct node *n)
{
	uint64_t k = name_key(n->parent, n->name);

	n->hnext = u64map_get(&e->names, k);
	return u64map_put(&e->names, k, n);
}

static void name_del(struct eng *e, struct node *n)
{
	uint64_t k = name_key(n->parent, n->name);
	struct node *head = u64map_get(&e->names, k), **pp;

	for (pp = &head; *pp; pp = &(*pp)->hnext) {
		if (*pp == n) {
			*pp = n->hnext;
			break;
		}
	}
	n->hnext = NULL;
	if (head)
		u64map_put(&e->names, k, head);
	else
		u64map_del(&e->names, k);
}

static struct node *node_get(struct eng *e, uint64_t ino)
{
	return u64map_get(&e->nodes, ino);
}

static bool node_is_dir(const struct node *n)
{
	return n->meta.kind == ITEM_DIR;
}

static void dirty_unlink(struct eng *e, struct node *n)
{
	if (n->dprev)
		n->dprev->dnext = n->dnext;
	else
		e->dirty_head = n->dnext;
	if (n->dnext)
		n->dnext->dprev = n->dprev;
	n->dprev = n->dnext = NULL;
}

static void wc_free(struct wc *w)
{
	if (!w)
		return;
	free(w->buf);
	free(w);
}

static void node_destroy(struct node *n)
{
	item_meta_release(&n->meta);
	item_unref(n->item);
	wc_free(n->wc);
	free(n->name);
	free(n);
}

/* Frees @n when nothing holds it any more; then maybe its parent. */
static void node_try_free(struct eng *e, struct node *n)
{
	while (n && n->nlookup == 0 && n->opens == 0 && n->holds == 0 &&
	       n->children == 0 && !n->dirty && n->ino != STORE_ROOT_INO) {
		struct node *parent = node_get(e, n->parent);

		u64map_del(&e->nodes, n->ino);
		if (!n->deleted)
			name_del(e, n);
		node_destroy(n);
		if (!parent)
			break;
		parent->children--;
		n = parent;
	}
}

static void node_put(struct eng *e, struct node *n)
{
	if (!n)
		return;
	n->holds--;
	node_try_free(e, n);
}

/* Makes a node for @row's entry (taking its meta) under parent @dir. */
static struct node *node_add(struct eng *e, struct node *dir, uint64_t ino,
			     const char *name, struct item_meta *meta)
{
	struct node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->name = strdup(name);
	if (!n->name)
		goto out_free;
	n->ino = ino;
	n->parent = dir ? dir->ino : 0;
	if (u64map_put(&e->nodes, ino, n) < 0)
		goto out_free;
	if (name_add(e, n) < 0) {
		u64map_del(&e->nodes, ino);
		goto out_free;
	}
	n->meta = *meta; /* stolen */
	memset(meta, 0, sizeof(*meta));
	if (dir)
		dir->children++;
	return n;

out_free:
	free(n->name);
	free(n);
	return NULL;
}

static void node_attr(const struct eng *e, const struct node *n,
		      struct eng_attr *a)
{
	const struct eng_config *c = &e->cfg;
	bool dir = node_is_dir(n);

	memset(a, 0, sizeof(*a));
	a->ino = n->ino;
	a->kind = n->meta.kind;
	a->size = n->meta.size;
	a->mtime_ns = n->meta.mtime_ns;
	a->ctime_ns = n->meta.ctime_ns;
	if (n->wc && n->wc->loaded) {
		a->size = n->wc->len;
		if (n->wc->dirty)
			a->mtime_ns = n->wc->mtime_ns;
	}
	a->mode = n->meta.mode;
	if (dir && c->force_dir_mode >= 0)
		a->mode = S_IFDIR | (uint32_t)c->force_dir_mode;
	if (!dir && c->force_file_mode >= 0)
		a->mode = S_IFREG | (uint32_t)c->force_file_mode;
	a->nlink = n->deleted ? 0 : 1; /* 1 for dirs: "not counted" */
	a->uid = c->force_uid >= 0 ? (uint32_t)c->force_uid : n->meta.uid;
	a->gid = c->force_gid >= 0 ? (uint32_t)c->force_gid : n->meta.gid;
	a->version = n->meta.version;
}

/* --- paths and IDs --- */

/* Writes the path of @n relative to the root ("" for the root). */
static ssize_t node_path(struct eng *e, const struct node *n, char *buf,
			 size_t cap)
{
	const struct node *chain[ID_MAX];
	size_t depth = 0, len = 0;

	for (; n && n->ino != STORE_ROOT_INO; n = node_get(e, n->parent)) {
		if (depth == ID_MAX)
			return -ENAMETOOLONG;
		chain[depth++] = n;
	}
	if (!n)
		return -ENOENT; /* a deleted ancestor */
	buf[0] = '\0';
	while (depth--) {
		size_t l = strlen(chain[depth]->name);

		if (len + l + 2 > cap)
			return -ENAMETOOLONG;
		if (len)
			buf[len++] = '/';
		memcpy(buf + len, chain[depth]->name, l + 1);
		len += l;
	}
	return (ssize_t)len;
}

/* Writes the ID of @n ("" for the root). */
static ssize_t node_id(struct eng *e, const struct node *n, char *buf,
		       size_t cap)
{
	char path[ID_PATH_MAX];
	ssize_t r = node_path(e, n, path, sizeof(path));

	if (r <= 0) {
		if (r == 0)
			buf[0] = '\0';
		return r;
	}
	return id_from_path(path, node_is_dir(n), buf, cap, NULL);
}

/* Checks that @name is a valid name for a new entry of @kind in @dir and
 * that the resulting ID is valid. */
static int check_new_name(struct eng *e, struct node *dir, const char *name,
			  enum item_kind kind)
{
	char path[ID_PATH_MAX + ID_NAME_MAX + 2], id[ID_MAX + 1];
	ssize_t len;
	int r = id_check_name(name, strlen(name));

	if (r < 0)
		return r;
	len = node_path(e, dir, path, ID_PATH_MAX);
	if (len < 0)
		return (int)len;
	snprintf(path + len, sizeof(path) - (size_t)len, "%s%s", len ? "/" : "",
		 name);
	len = id_from_path(path, kind == ITEM_DIR, id, sizeof(id), NULL);
	if (len == -ERANGE)
		return -ENAMETOOLONG;
	return len < 0 ? (int)len : 0;
}

/* --- the negative-lookup filter --- */

static void filter_add(struct eng *e, uint64_t parent, const char *name)
{
	if (!e->filter)
		return;
	if (cuckoo_insert(e->filter, cuckoo_key(parent, name, strlen(name))) <
		    0 &&
	    !e->filter_full_logged) {
		e->filter_full_logged = true;
		eng_logf(&e->cfg.log, LOG_WARNING,
			 "the negative-lookup filter is full: lookups of "
			 "absent names query %s until the next mount",
			 e->l3->ops->name);
	}
}

static void filter_del(struct eng *e, uint64_t parent, const char *name)
{
	if (e->filter && e->filter_trusted)
		cuckoo_delete(e->filter,
			      cuckoo_key(parent, name, strlen(name)));
}

/* true when the filter proves that @dir has no entry @name. */
static bool filter_absent(struct eng *e, uint64_t dir, const char *name)
{
	if (!e->filter || !e->filter_trusted ||
	    cuckoo_contains(e->filter, cuckoo_key(dir, name, strlen(name))))
		return false;
	e->filter_negatives++;
	return true;
}

#define SCAN_PAGE 1024

/* The builder thread: scans every entry of L3 into the filter, a page at a
 * time (the lock is taken per page only), then marks it trusted. */
static void *builder_main(void *arg)
{
	struct eng *e = arg;
	struct store_key *keys = calloc(SCAN_PAGE, sizeof(*keys));
	uint64_t after = 0, total = 0, t0 = mono_ns();
	int n = 0;

	if (!keys)
		return NULL;
	for (;;) {
		n = e->l3->ops->scan(e->l3, after, keys, SCAN_PAGE);
		if (n <= 0)
			break;
		pthread_mutex_lock(&e->lock);
		for (int i = 0; i < n; i++)
			filter_add(e, keys[i].parent, keys[i].name);
		bool stop = e->stopping;
		pthread_mutex_unlock(&e->lock);
		if (stop) {
			n = 0;
			goto out;
		}
		after = keys[n - 1].ino;
		total += (uint64_t)n;
		if (total % (100 * SCAN_PAGE) == 0)
			eng_logf(&e->cfg.log, LOG_INFO,
				 "negative-lookup filter: %llu names read",
				 (unsigned long long)total);
	}
	if (n < 0) {
		eng_logf(&e->cfg.log, LOG_WARNING,
			 "cannot build the negative-lookup filter: %s: lookups "
			 "of absent names query %s",
			 strerror(-n), e->l3->ops->name);
		goto out;
	}
	pthread_mutex_lock(&e->lock);
	e->filter_trusted = true;
	pthread_mutex_unlock(&e->lock);
	if (mono_ns() - t0 > 1000000000ull || total >= 100 * SCAN_PAGE)
		eng_logf(&e->cfg.log, LOG_INFO,
			 "negative-lookup filter ready: %llu names in %.1f s",
			 (unsigned long long)total,
			 (double)(mono_ns() - t0) / 1e9);
out:
	free(keys);
	return NULL;
}

/* Sizes the filter for the store and starts its builder. A store that
 * cannot scan, or no memory, leaves the engine without a filter. */
static void filter_start(struct eng *e)
{
	uint64_t entries = 0, bytes = 0;
	size_t cap;

	if (!e->l3->ops->scan)
		return;
	if (e->l3->ops->stats(e->l3, &entries, &bytes) < 0)
		entries = 0;
	cap = entries * 2 + (1u << 20); /* room to grow before a remount */
	e->filter = cuckoo_new(cap);
	if (!e->filter)
		return;
	if (pthread_create(&e->builder, NULL, builder_main, e) == 0)
		e->builder_started = true;
}

void eng_get_counters(struct eng *e, struct eng_counters *out)
{
	pthread_mutex_lock(&e->lock);
	out->l3_lookups = e->l3_lookups;
	out->filter_negatives = e->filter_negatives;
	out->filter_trusted = e->filter_trusted;
	out->filter_names = e->filter ? cuckoo_count(e->filter) : 0;
	pthread_mutex_unlock(&e->lock);
}

/* --- resolving names --- */

/*
 * Finds the entry @name in directory @dir and returns it held (*out; drop
 * with node_put). May drop and retake e->lock. -ENOENT, -ENOTDIR, -EIO.
 */
static int resolve(struct eng *e, struct node *dir, const char *name,
		   struct node **out)
{
	struct store_row row;
	struct node *n;
	uint64_t gen, t0;
	bool maybe;
	int r;

	if (!node_is_dir(dir))
		return -ENOTDIR;
	for (;;) {
		if (dir->deleted)
			return -ENOENT;
		n = name_find(e, dir->ino, name);
		if (n) {
			n->holds++;
			*out = n;
			return 0;
		}
		if (strlen(name) > STORE_NAME_MAX ||
		    filter_absent(e, dir->ino, name))
			return -ENOENT;
		maybe = e->filter_trusted; /* the filter said "maybe" */
		e->l3_lookups++;
		gen = e->gen;
		dir->holds++;
		pthread_mutex_unlock(&e->lock);
		t0 = mono_ns();
		r = L3_READ(e, e->l3->ops->lookup(e->l3, dir->ino, name, &row));
		tier_note(&e->st_l3_lookup, t0, r);
		pthread_mutex_lock(&e->lock);
		dir->holds--;
		if (r < 0 && r != -ENOENT)
			return r;
		n = name_find(e, dir->ino, name);
		if (n || gen != e->gen) {
			if (r == 0)
				store_row_release(&row);
			continue;
		}
		if (r == -ENOENT) {
			e->filter_false_positives += maybe;
			return -ENOENT;
		}
		if (node_get(e, row.ino) || dir->deleted) {
			/* the node table says it moved or went away */
			store_row_release(&row);
			return -ENOENT;
		}
		n = node_add(e, dir, row.ino, row.name, &row.meta);
		store_row_release(&row);
		if (!n)
			return -ENOMEM;
		n->holds++;
		*out = n;
		return 0;
	}
}

/* The directory node of inode @ino, which the caller holds a reference on
 * (lookup, open). -ENOENT when unknown or deleted, -ENOTDIR. */
static int get_dir(struct eng *e, uint64_t ino, struct node **out)
{
	struct node *n = node_get(e, ino);

	if (!n || n->deleted)
		return -ENOENT;
	if (!node_is_dir(n))
		return -ENOTDIR;
	*out = n;
	return 0;
}

/* resolve() in the directory of inode @parent (held by the caller). */
static int resolve_at(struct eng *e, uint64_t parent, const char *name,
		      struct node **out)
{
	struct node *dir;
	int r = get_dir(e, parent, &dir);

	return r < 0 ? r : resolve(e, dir, name, out);
}

/*
 * -EEXIST when another file in @dir would have the same item ID as a file
 * named @name: "x" (binary) and "x.json" (JSON) name the same item "x".
 * @ignore and @ignore2 (may be NULL) are nodes that do not count.
 */
static int check_stem(struct eng *e, struct node *dir, const char *name,
		      enum item_kind kind, const struct node *ignore,
		      const struct node *ignore2)
{
	char sib[STORE_NAME_MAX + 8];
	size_t len = strlen(name);
	struct node *n;
	int r;

	if (kind == ITEM_DIR)
		return 0;
	if (kind == ITEM_JSON) {
		memcpy(sib, name, len - 5);
		sib[len - 5] = '\0';
	} else {
		if (len + 5 > STORE_NAME_MAX)
			return 0;
		snprintf(sib, sizeof(sib), "%s.json", name);
	}
	r = resolve(e, dir, sib, &n);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	r = (!node_is_dir(n) && n != ignore && n != ignore2) ? -EEXIST : 0;
	node_put(e, n);
	return r;
}

/* --- changes and the batch queue --- */

/*
 * Queues @n's current state (or its deletion) as the newest change, after
 * appending it to the write-ahead log; @content is the new content to
 * persist with it, or NULL. When the log refuses the record, the change is
 * still queued (memory and L3 stay consistent) and the log's error is
 * returned: the change is then not crash-safe, and the caller says so.
 */
static int mark_dirty(struct eng *e, struct node *n, struct item *content)
{
	struct batch_rec *rec = calloc(1, sizeof(*rec));
	bool was_empty = batch_count(&e->batch) == 0;
	int r, wr;

	if (!rec)
		goto out_nomem;
	rec->ino = n->ino;
	rec->deleted = n->deleted;
	if (!n->deleted) {
		rec->parent = n->parent;
		rec->name = strdup(n->name);
		if (!rec->name || item_meta_copy(&rec->meta, &n->meta) < 0)
			goto out_nomem;
		rec->item = item_ref(content);
	}
	rec->seq = ++e->change_seq;
	wr = wal_append(e->wal, rec);
	if (wr < 0) {
		eng_logf(&e->cfg.log, LOG_ERR,
			 "change of inode %llu is not crash-safe: cannot "
			 "append to the write-ahead log: %s",
			 (unsigned long long)n->ino, strerror(-wr));
		e->wal_lost_seq = rec->seq;
	} else {
		e->wal_dirty = true;
		e->wal_fresh = false;
	}
	r = batch_add(&e->batch, rec, mono_ns());
	if (r < 0)
		goto out_err;
	n->dirty_seq = e->change_seq;
	if (!n->dirty) {
		n->dirty = true;
		n->dprev = NULL;
		n->dnext = e->dirty_head;
		if (e->dirty_head)
			e->dirty_head->dprev = n;
		e->dirty_head = n;
	}
	if (was_empty || batch_due(&e->batch, mono_ns()))
		pthread_cond_signal(&e->flush_cond);
	return wr;

out_nomem:
	batch_rec_free(rec);
	r = -ENOMEM;
out_err:
	eng_logf(&e->cfg.log, LOG_ERR,
		 "cannot queue change of inode %llu: out of memory",
		 (unsigned long long)n->ino);
	return r;
}

/* Makes @it the published content of @n: L1 (pinned), node, queue. */
static int set_content(struct eng *e, struct node *n, struct item *it)
{
	const struct item_meta *m = item_meta(it);
	int r = l1_put(e->l1, n->ino, it, true);

	if (r < 0)
		return r;
	item_unref(n->item);
	n->item = item_ref(it);
	n->content_dirty = true;
	n->meta.size = m->size;
	memcpy(n->meta.hash, m->hash, ITEM_HASH_LEN);
	n->meta.version = m->version;
	n->meta.mtime_ns = m->mtime_ns;
	n->meta.ctime_ns = m->ctime_ns;
	n->meta.kind = m->kind;
	return mark_dirty(e, n, it);
}

/*
 * Validates and publishes @len bytes (stolen, from malloc) as the next
 * version of file @n with modification time @mtime. -EINVAL (not JSON),
 * -EFBIG, -ENOMEM; on error @data is freed and nothing changes.
 */
static int publish(struct eng *e, struct node *n, void *data, size_t len,
		   int64_t mtime)
{
	char id[ID_MAX + 1];
	struct item_meta meta;
	struct item *it;
	int r;

	if (len > e->cfg.max_item_bytes) {
		r = -EFBIG;
		goto out_free;
	}
	if (n->meta.kind == ITEM_JSON && !item_json_valid(data, len)) {
		r = -EINVAL;
		goto out_free;
	}
	if (wal_bytes(e->wal) + len + 4096 > e->cfg.wal_max_bytes) {
		eng_logf(&e->cfg.log, LOG_ERR,
			 "write refused: the write-ahead log holds %llu bytes "
			 "not yet persisted to %s (wal_max_bytes %llu)",
			 (unsigned long long)wal_bytes(e->wal),
			 e->l3->ops->name,
			 (unsigned long long)e->cfg.wal_max_bytes);
		r = -ENOSPC;
		goto out_free;
	}
	if (node_id(e, n, id, sizeof(id)) < 0)
		id[0] = '\0';
	meta = n->meta; /* shallow: item_new_take() deep-copies */
	meta.version++;
	meta.mtime_ns = mtime;
	meta.ctime_ns = now_ns();
	it = item_new_take(id, data, len, &meta);
	if (!it)
		return -ENOMEM;
	r = set_content(e, n, it);
	item_unref(it);
	return r;

out_free:
	free(data);
	return r;
}

/* Notes a failed L2 call; says so once when it takes Redis out of use. */
static void l2_failed(struct eng *e, int r)
{
	if (breaker_failure(&e->l2_breaker, mono_ns()))
		eng_logf(&e->cfg.log, LOG_WARNING,
			 "redis is unavailable (%s): serving from L1 and %s, "
			 "refilling redis as items are read once it is back",
			 strerror(-r), e->l3->ops->name);
}

/* Notes the outcome of an L2 call: a miss is a healthy answer. */
static void l2_outcome(struct eng *e, int r)
{
	if (r >= 0 || r == -ENOENT) {
		if (breaker_success(&e->l2_breaker))
			eng_logf(&e->cfg.log, LOG_WARNING,
				 "redis answers again: using it as L2");
	} else {
		l2_failed(e, r);
	}
}

static bool l2_usable(struct eng *e)
{
	return e->l2 && breaker_allow(&e->l2_breaker, mono_ns());
}

/*
 * Reads the content of clean file @n from L2: returns it as a new item when
 * Redis holds the version @n has, else NULL. Drops and retakes e->lock.
 */
static struct item *l2_content(struct eng *e, struct node *n)
{
	uint64_t version = n->meta.version;
	struct store_row row;
	struct item *it = NULL;
	char id[ID_MAX + 1];
	void *data = NULL;
	size_t len = 0;
	uint64_t t0;
	int r;

	n->holds++;
	pthread_mutex_unlock(&e->lock);
	t0 = mono_ns();
	r = e->l2->ops->fetch(e->l2, n->ino, &row, &data, &len);
	tier_note(&e->st_l2_fetch, t0, r);
	pthread_mutex_lock(&e->lock);
	n->holds--;
	l2_outcome(e, r);
	if (r < 0)
		return NULL;
	if (row.meta.version == version && n->meta.version == version &&
	    !n->deleted) {
		if (node_id(e, n, id, sizeof(id)) < 0)
			id[0] = '\0';
		it = item_new_take(id, data, len, &n->meta);
		data = NULL;
		/* item_new_take hashed the bytes Redis gave: content that
		 * does not match the metadata (a corrupted key) is dropped,
		 * and the read falls through to L3, which rewrites it */
		if (it && memcmp(item_meta(it)->hash, n->meta.hash,
				 ITEM_HASH_LEN) != 0) {
			eng_logf(&e->cfg.log, LOG_WARNING,
				 "redis holds corrupt content for inode %llu: "
				 "reading it from %s",
				 (unsigned long long)n->ino, e->l3->ops->name);
			item_unref(it);
			it = NULL;
		}
	}
	free(data);
	store_row_release(&row);
	return it;
}

/* Writes @it, the committed content of @n, into L2 (read-through fill).
 * Drops and retakes e->lock. */
static void l2_fill(struct eng *e, struct node *n, struct item *it)
{
	struct item_meta meta;
	struct store_change ch = {0};
	char *name = strdup(n->name);
	uint64_t t0;
	int r;

	if (!name || item_meta_copy(&meta, &n->meta) < 0) {
		free(name);
		return;
	}
	ch.ino = n->ino;
	ch.parent = n->parent;
	ch.name = name;
	ch.meta = &meta;
	ch.has_data = true;
	ch.data = item_data(it);
	ch.len = item_size(it);
	pthread_mutex_unlock(&e->lock);
	t0 = mono_ns();
	r = store_apply(e->l2, &ch, 1);
	tier_note(&e->st_l2_apply, t0, r);
	l2_outcome(e, r);
	pthread_mutex_lock(&e->lock);
	item_meta_release(&meta);
	free(name);
}

/* Returns @it, the current content of @n, after keeping a reference in
 * the node while @n is open, so that reads through open handles do not
 * fetch it again when L1 evicts it. */
static struct item *hold_open(struct node *n, struct item *it)
{
	if (n->opens && n->item != it) {
		item_unref(n->item);
		n->item = item_ref(it);
	}
	return it;
}

/*
 * Returns a new reference to the current content of file @n (held by the
 * caller; held by @n too while it is open). Looks in the node, L1, L2,
 * then L3, filling the tiers above on the way back. May drop and retake
 * e->lock.
 */
static int node_content(struct eng *e, struct node *n, struct item **out)
{
	struct item *it;
	void *data;
	size_t len;
	uint64_t version;
	char id[ID_MAX + 1];
	uint64_t t0;
	int r;

	for (;;) {
		if (n->item && item_meta(n->item)->version == n->meta.version) {
			*out = item_ref(n->item);
			return 0;
		}
		it = l1_get(e->l1, n->ino);
		if (it && item_meta(it)->version == n->meta.version) {
			*out = hold_open(n, it);
			return 0;
		}
		item_unref(it);
		if (n->deleted || n->content_dirty)
			return -EIO; /* content should be in memory: a bug */
		if (l2_usable(e)) {
			it = l2_content(e, n);
			if (it) {
				l1_put(e->l1, n->ino, it, false);
				*out = hold_open(n, it);
				return 0;
			}
			if (n->deleted || n->content_dirty)
				continue; /* changed while the lock was out */
		}
		version = n->meta.version;
		n->holds++;
		pthread_mutex_unlock(&e->lock);
		t0 = mono_ns();
		r = L3_READ(e, e->l3->ops->read(e->l3, n->ino, &data, &len));
		tier_note(&e->st_l3_read, t0, r);
		pthread_mutex_lock(&e->lock);
		n->holds--;
		if (r < 0)
			return r == -ENOENT ? -EIO : r;
		if (n->meta.version != version || n->deleted) {
			free(data);
			continue; /* published or deleted meanwhile */
		}
		if (node_id(e, n, id, sizeof(id)) < 0)
			id[0] = '\0';
		it = item_new_take(id, data, len, &n->meta);
		if (!it)
			return -ENOMEM;
		l1_put(e->l1, n->ino, it, false); /* a full cache is no error */
		if (l2_usable(e)) {
			n->holds++;
			l2_fill(e, n, it);
			n->holds--;
		}
		*out = hold_open(n, it);
		return 0;
	}
}

/* Loads the current content into @n's working copy if it is not there. */
static int wc_load(struct eng *e, struct node *n)
{
	struct item *it;
	struct wc *w;
	int r;

	if (n->wc->loaded)
		return 0;
	r = node_content(e, n, &it);
	if (r < 0)
		return r;
	w = n->wc; /* the lock was dropped, but a writer handle keeps it */
	if (!w->loaded) {
		size_t len = item_size(it);
		char *buf = malloc(len ? len : 1);

		if (!buf) {
			item_unref(it);
			return -ENOMEM;
		}
		memcpy(buf, item_data(it), len);
		free(w->buf);
		w->buf = buf;
		w->len = w->cap = len;
		w->loaded = true;
		w->dirty = false;
	}
	item_unref(it);
	return 0;
}

static uint64_t next_ino(struct eng *e, int *err)
{
	if (e->ino_next == e->ino_end) {
		uint64_t first = e->ino_spare;
		int r = 0;

		/* the flusher normally reserved the next block already, so
		 * creates go on while L3 is briefly unreachable */
		if (!first)
			r = L3_READ(e, e->l3->ops->alloc_ino(e->l3, INO_BLOCK,
							     &first));
		if (r < 0) {
			*err = r;
			return 0;
		}
		e->ino_spare = 0;
		e->ino_next = first;
		e->ino_end = first + INO_BLOCK;
	}
	return e->ino_next++;
}

/* Reserves the next block of inode numbers once half of the current one is
 * used. Called by the flusher with the lock held; drops it for the I/O. */
static void reserve_inos(struct eng *e)
{
	uint64_t first;
	int r;

	if (e->ino_spare || e->ino_end - e->ino_next > INO_BLOCK / 2)
		return;
	pthread_mutex_unlock(&e->lock);
	r = e->l3->ops->alloc_ino(e->l3, INO_BLOCK, &first);
	pthread_mutex_lock(&e->lock);
	if (r == 0 && !e->ino_spare)
		e->ino_spare = first;
}

/*
 * Creates a new entry @name of @kind in @dir (which the caller checked) and
 * returns it held. Files start as an empty published version 1.
 */
static int node_create(struct eng *e, struct node *dir, const char *name,
		       enum item_kind kind, uint32_t mode, uint32_t uid,
		       uint32_t gid, bool explicit_dir, struct node **out)
{
	struct item_meta meta = {0};
	struct node *n;
	uint64_t ino;
	int r = 0;

	ino = next_ino(e, &r);
	if (!ino)
		return r;
	meta.kind = kind;
	meta.mode = (kind == ITEM_DIR ? S_IFDIR : S_IFREG) | (mode & 07777);
	meta.uid = uid;
	meta.gid = gid;
	meta.mtime_ns = meta.ctime_ns = now_ns();
	meta.version = kind == ITEM_DIR ? 1 : 0; /* files: publish makes 1 */
	meta.explicit_dir = explicit_dir;
	n = node_add(e, dir, ino, name, &meta);
	if (!n)
		return -ENOMEM;
	filter_add(e, dir->ino, name);
	n->holds++;
	if (kind == ITEM_DIR)
		r = mark_dirty(e, n, NULL);
	else
		r = publish(e, n, malloc(1), 0, n->meta.mtime_ns);
	if (r < 0) {
		/* undo: nothing was queued */
		name_del(e, n);
		n->deleted = true;
		node_put(e, n);
		return r;
	}
	*out = n;
	return 0;
}

static int dir_empty(struct eng *e, struct node *dir);

/* Deletes @n (held by the caller): queues the deletion; open handles keep
 * reading the content; an implicit parent left empty goes too. */
static int node_delete(struct eng *e, struct node *n)
{
	struct node *parent;
	int r;

	if (n->opens && !node_is_dir(n)) {
		/* handles opened before keep reading the published content */
		struct item *it;

		r = node_content(e, n, &it);
		if (r < 0)
			return r;
		if (n->deleted) {
			item_unref(it);
			return -ENOENT;
		}
		item_unref(n->item);
		n->item = it;
	}
	filter_del(e, n->parent, n->name);
	name_del(e, n);
	n->deleted = true;
	n->content_dirty = false;
	n->meta.ctime_ns = now_ns();
	l1_remove(e->l1, n->ino);
	if (!n->opens) {
		item_unref(n->item);
		n->item = NULL;
	}
	r = mark_dirty(e, n, NULL);
	if (r < 0)
		return r;
	parent = node_get(e, n->parent);
	if (parent && parent->ino != STORE_ROOT_INO &&
	    !parent->meta.explicit_dir && !parent->deleted) {
		parent->holds++;
		if (dir_empty(e, parent) == 1 && !parent->deleted)
			node_delete(e, parent);
		node_put(e, parent);
	}
	return 0;
}

/*
 * 1 when directory @dir has no children (pending ones included), 0 when it
 * has, or a negative errno. May drop the lock.
 */
static int dir_empty(struct eng *e, struct node *dir)
{
	struct store_row *rows;
	char cursor[STORE_NAME_MAX + 1] = "";
	uint64_t gen, t0;
	int r;

	rows = calloc(LIST_PAGE, sizeof(*rows));
	if (!rows)
		return -ENOMEM;
restart:
	for (struct node *d = e->dirty_head; d; d = d->dnext) {
		if (!d->deleted && d->parent == dir->ino) {
			r = 0;
			goto out;
		}
	}
	for (;;) {
		gen = e->gen;
		dir->holds++;
		pthread_mutex_unlock(&e->lock);
		t0 = mono_ns();
		r = L3_READ(e, e->l3->ops->list(e->l3, dir->ino, cursor, rows,
						LIST_PAGE));
		tier_note(&e->st_l3_list, t0, r);
		pthread_mutex_lock(&e->lock);
		dir->holds--;
		if (r < 0)
			goto out;
		if (gen != e->gen) {
			for (int i = 0; i < r; i++)
				store_row_release(&rows[i]);
			cursor[0] = '\0';
			goto restart;
		}
		int nrows = r;
		r = -1;
		for (int i = 0; i < nrows; i++) {
			struct node *m = node_get(e, rows[i].ino);

			if (r && (!m || (!m->deleted && m->parent == dir->ino)))
				r = 0; /* a child that is still there */
		}
		if (nrows)
			strcpy(cursor, rows[nrows - 1].name);
		for (int i = 0; i < nrows; i++)
			store_row_release(&rows[i]);
		if (r == 0)
			goto out;
		if (nrows < LIST_PAGE) {
			r = 1;
			goto out;
		}
	}
out:
	free(rows);
	return r;
}

/* --- the flusher --- */

static void commit_done(struct eng *e, struct batch_rec **recs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct node *nd = node_get(e, recs[i]->ino);

		if (!nd || !nd->dirty || nd->dirty_seq != recs[i]->seq)
			continue; /* a newer change is queued */
		nd->dirty = false;
		dirty_unlink(e, nd);
		if (nd->content_dirty) {
			l1_unpin(e->l1, nd->ino, nd->item);
			nd->content_dirty = false;
		}
		if (!nd->opens) {
			item_unref(nd->item);
			nd->item = NULL;
		}
		node_try_free(e, nd);
	}
}

static int apply_batch(struct store *st, struct batch_rec **recs, size_t n,
		       struct store_dirhash **tree, size_t *ntree)
{
	struct store_change *ch = calloc(n ? n : 1, sizeof(*ch));
	int r;

	if (!ch)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		ch[i].ino = recs[i]->ino;
		ch[i].deleted = recs[i]->deleted;
		ch[i].parent = recs[i]->parent;
		ch[i].name = recs[i]->name;
		ch[i].meta = &recs[i]->meta;
		if (recs[i]->item) {
			ch[i].has_data = true;
			ch[i].data = item_data(recs[i]->item);
			ch[i].len = item_size(recs[i]->item);
		}
	}
	r = st->ops->apply(st, ch, n, tree, ntree);
	free(ch);
	return r;
}

static void *flusher_main(void *arg)
{
	struct eng *e = arg;
	uint64_t backoff_ms = 0;
	int stop_failures = 0;
	struct store_dirhash *tree;
	size_t ntree;

	pthread_mutex_lock(&e->lock);
	for (;;) {
		struct batch_rec **recs;
		uint64_t snapshot, t0, now = mono_ns();
		int64_t seg;
		ssize_t n;
		int r, r2;

		if (!e->stopping && !e->l3_failing)
			reserve_inos(e);
		if (e->l3_failing && !e->stopping && now < e->retry_at) {
			/* back off: wake-ups do not bring the retry forward */
			struct timespec ts = mono_ts(e->retry_at);

			pthread_cond_timedwait(&e->flush_cond, &e->lock, &ts);
			continue;
		}
		if (batch_count(&e->batch) == 0) {
			if (e->flush_now) {
				e->committed_seq = e->change_seq;
				e->flush_now = false;
				pthread_cond_broadcast(&e->commit_cond);
			}
			if (e->stopping)
				break;
			pthread_cond_wait(&e->flush_cond, &e->lock);
			continue;
		}
		if (!e->stopping && !e->flush_now &&
		    !batch_due(&e->batch, now)) {
			struct timespec ts = mono_ts(batch_deadline(&e->batch));

			pthread_cond_timedwait(&e->flush_cond, &e->lock, &ts);
			continue;
		}
		e->flush_now = false;
		n = batch_take(&e->batch, &recs);
		if (n < 0) {
			struct timespec ts = mono_ts(now + 100000000);

			pthread_cond_timedwait(&e->flush_cond, &e->lock, &ts);
			continue;
		}
		/* Every record in the segments before @seg is in this batch
		 * or replaced by a newer queued one. */
		seg = e->wal_fresh ? e->wal_seg : wal_rotate(e->wal);
		if (seg < 0)
			eng_logf(&e->cfg.log, LOG_ERR,
				 "cannot rotate the write-ahead log: %s",
				 strerror((int)-seg));
		if (seg > 0) {
			/* a retry during an outage reuses the empty segment
			 * instead of making one per attempt */
			e->wal_seg = seg;
			e->wal_fresh = true;
		}
		snapshot = e->change_seq;
		pthread_mutex_unlock(&e->lock);
		t0 = mono_ns();
		r = apply_batch(e->l3, recs, (size_t)n, &tree, &ntree);
		tier_note(&e->st_l3_apply, t0, r);
		if (r == 0 && l2_usable(e)) { /* L3 first: it is the truth */
			t0 = mono_ns();
			r2 = apply_batch(e->l2, recs, (size_t)n, NULL, NULL);
			if (r2 == 0 && ntree && e->l2->ops->put_tree)
				r2 = e->l2->ops->put_tree(e->l2, tree, ntree);
			tier_note(&e->st_l2_apply, t0, r2);
			l2_outcome(e, r2);
		}
		free(tree);
		pthread_mutex_lock(&e->lock);
		if (r == 0) {
			commit_done(e, recs, (size_t)n);
			for (ssize_t i = 0; i < n; i++)
				batch_rec_free(recs[i]);
			free(recs);
			e->committed_seq = snapshot;
			e->gen++;
			e->batches++;
			e->batch_recs += (uint64_t)n;
			e->last_batch = (uint64_t)n;
			backoff_ms = 0;
			if (seg > 0)
				wal_drop_before(e->wal, seg);
			l3_outcome(e, 0); /* L3 answers: reads may go */
			if (e->l3_failing) {
				e->l3_failing = false;
				eng_logf(&e->cfg.log, LOG_WARNING,
					 "%s is back: persisted %zd changes",
					 e->l3->ops->name, n);
			}
			pthread_cond_broadcast(&e->commit_cond);
			continue;
		}
		if (!e->l3_failing)
			eng_logf(&e->cfg.log, LOG_ERR,
				 "cannot persist a batch of %zd changes to %s: "
				 "%s (%s); keeping them in the write-ahead log "
				 "and retrying",
				 n, e->l3->ops->name, strerror(-r),
				 l3_error_retryable(r)
					 ? "temporary"
					 : "refused: fsync reports it until it "
					   "is fixed");
		e->l3_failing = true;
		batch_requeue(&e->batch, recs, (size_t)n, mono_ns());
		free(recs);
		e->fail_count++;
		e->last_error = r;
		pthread_cond_broadcast(&e->commit_cond);
		if (e->stopping && ++stop_failures >= STOP_RETRIES) {
			r = wal_sync(e->wal);
			eng_logf(
				&e->cfg.log, LOG_ERR,
				"%zu changes were not persisted to %s: %s",
				batch_count(&e->batch), e->l3->ops->name,
				r == 0 ? "they stay in the write-ahead log and "
					 "are persisted at the next mount"
				       : "and the write-ahead log cannot be "
					 "synced");
			batch_release(&e->batch);
			batch_init(&e->batch, e->cfg.batch_flush_count,
				   e->cfg.batch_flush_bytes,
				   (uint64_t)e->cfg.batch_flush_ms * 1000000);
			break;
		}
		backoff_ms = backoff_ms ? backoff_ms * 2 : BACKOFF_MIN_MS;
		if (backoff_ms > BACKOFF_MAX_MS)
			backoff_ms = BACKOFF_MAX_MS;
		e->retry_at = mono_ns() + backoff_ms * 1000000;
	}
	pthread_mutex_unlock(&e->lock);
	return NULL;
}

/*
 * Makes every change up to @seq durable: asks the flusher to persist it in
 * L3 and waits; when a flush fails meanwhile (L3 unreachable), syncs the
 * write-ahead log instead, which makes the changes durable on this host.
 * Returns 0, or the error of the failed flush when the log cannot cover it.
 */
static int wait_committed(struct eng *e, uint64_t seq)
{
	uint64_t fails = e->fail_count;

	while (e->committed_seq < seq) {
		/* during a known outage, do not wait for the next retry */
		if (e->l3_failing || e->fail_count != fails) {
			int r = e->last_error ? e->last_error : -EIO;

			/* L3 unreachable or failing for now: the synced log
			 * makes the change durable here. L3 refusing it
			 * (permission, read-only, full, a constraint) needs
			 * someone to act: say so to the caller. */
			if (!l3_error_retryable(r) || seq <= e->wal_lost_seq ||
			    wal_sync(e->wal) < 0)
				return r;
			return 0;
		}
		e->flush_now = true;
		pthread_cond_signal(&e->flush_cond);
		pthread_cond_wait(&e->commit_cond, &e->lock);
	}
	return 0;
}

/* The group-commit thread: fdatasyncs the log every WAL_SYNC_MS when
 * something was appended, and once more when the engine stops. */
static void *syncer_main(void *arg)
{
	struct eng *e = arg;

	pthread_mutex_lock(&e->lock);
	for (;;) {
		struct timespec ts =
			mono_ts(mono_ns() + WAL_SYNC_MS * 1000000ull);
		bool stop = e->stopping;

		if (e->wal_dirty) {
			int r;

			e->wal_dirty = false;
			pthread_mutex_unlock(&e->lock);
			r = wal_sync(e->wal);
			pthread_mutex_lock(&e->lock);
			if (r < 0)
				eng_logf(&e->cfg.log, LOG_ERR,
					 "cannot sync the write-ahead log: %s",
					 strerror(-r));
		}
		if (stop)
			break;
		pthread_cond_timedwait(&e->sync_cond, &e->lock, &ts);
	}
	pthread_mutex_unlock(&e->lock);
	return NULL;
}

/* --- lifecycle --- */

void eng_config_init(struct eng_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->l1_max_bytes = 256u << 20;
	cfg->batch_flush_count = 1000;
	cfg->batch_flush_bytes = 1u << 20;
	cfg->batch_flush_ms = 100;
	cfg->max_item_bytes = 16u << 20;
	cfg->wal_max_bytes = 1ull << 30;
	cfg->force_uid = cfg->force_gid = -1;
	cfg->force_file_mode = cfg->force_dir_mode = -1;
}

static int load_root(struct eng *e)
{
	struct store_row row;
	struct node *root;
	int r = e->l3->ops->get(e->l3, STORE_ROOT_INO, &row);

	if (r < 0)
		return r;
	root = node_add(e, NULL, STORE_ROOT_INO, "", &row.meta);
	store_row_release(&row);
	if (!root)
		return -ENOMEM;
	root->nlookup = 1; /* the kernel's implicit reference */
	return 0;
}

/* Creates the log directory and takes its lock: one engine per log. */
static int lock_wal_dir(struct eng *e, const char *dir)
{
	char path[4096 + 8];

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		int r = -errno;

		eng_logf(&e->cfg.log, LOG_ERR, "cannot create '%s': %s", dir,
			 strerror(errno));
		return r;
	}
	snprintf(path, sizeof(path), "%s/lock", dir);
	e->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (e->lock_fd < 0) {
		int r = -errno;

		eng_logf(&e->cfg.log, LOG_ERR, "cannot open '%s': %s", path,
			 strerror(errno));
		return r;
	}
	if (flock(e->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		eng_logf(&e->cfg.log, LOG_ERR,
			 "the store is in use: another tierfs holds '%s'",
			 path);
		return -EBUSY;
	}
	return 0;
}

static int replay_one(void *arg, struct batch_rec *rec)
{
	return batch_add(arg, rec, 0);
}

/* Applies what a crashed engine left in the log to L3, then drops it. */
static int replay_wal(struct eng *e)
{
	struct batch pending;
	struct batch_rec **recs = NULL;
	ssize_t n;
	int64_t seg;
	int r;

	batch_init(&pending, SIZE_MAX, SIZE_MAX, UINT64_MAX);
	r = wal_replay(e->wal, replay_one, &pending);
	if (r < 0)
		goto out;
	n = batch_take(&pending, &recs);
	if (n < 0) {
		r = (int)n;
		goto out;
	}
	if (n > 0) {
		eng_logf(&e->cfg.log, LOG_INFO,
			 "replaying %zd changes from the write-ahead log into "
			 "%s",
			 n, e->l3->ops->name);
		r = apply_batch(e->l3, recs, (size_t)n, NULL, NULL);
		for (ssize_t i = 0; i < n; i++)
			batch_rec_free(recs[i]);
		free(recs);
		if (r < 0) {
			eng_logf(
				&e->cfg.log, LOG_ERR,
				"cannot replay the write-ahead log into %s: %s",
				e->l3->ops->name, strerror(-r));
			goto out;
		}
	}
	seg = wal_rotate(e->wal);
	r = seg < 0 ? (int)seg : wal_drop_before(e->wal, seg);
out:
	batch_release(&pending);
	return r;
}

int eng_open(const struct eng_config *cfg, struct eng **out)
{
	pthread_condattr_t ca;
	char wal_dir[4096];
	struct eng *e;
	int r;

	if (!(cfg->postgres ? cfg->wal_path : cfg->sqlite_path) ||
	    !cfg->batch_flush_count || !cfg->batch_flush_bytes ||
	    !cfg->max_item_bytes || cfg->max_item_bytes > (1u << 30) ||
	    !cfg->wal_max_bytes)
		return -EINVAL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->cfg = *cfg;
	e->lock_fd = -1;
	e->handles.prev = e->handles.next = &e->handles;
	pthread_mutex_init(&e->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&e->flush_cond, &ca);
	pthread_cond_init(&e->commit_cond, &ca);
	pthread_cond_init(&e->sync_cond, &ca);
	pthread_condattr_destroy(&ca);
	breaker_init(&e->l2_breaker, L2_BREAKER_FAILS, L2_BREAKER_COOLDOWN_NS);
	breaker_init(&e->l3_breaker, L3_BREAKER_FAILS, L3_BREAKER_COOLDOWN_NS);
	u64map_init(&e->nodes);
	u64map_init(&e->names);
	batch_init(&e->batch, cfg->batch_flush_count, cfg->batch_flush_bytes,
		   (uint64_t)cfg->batch_flush_ms * 1000000);

	if (cfg->wal_path)
		snprintf(wal_dir, sizeof(wal_dir), "%s", cfg->wal_path);
	else
		snprintf(wal_dir, sizeof(wal_dir), "%s.tierfs-wal",
			 cfg->sqlite_path);
	e->l1 = l1_new(cfg->l1_max_bytes);
	if (!e->l1) {
		r = -ENOMEM;
		goto out_close;
	}
	r = lock_wal_dir(e, wal_dir);
	if (r < 0)
		goto out_close;
	r = wal_open(wal_dir, cfg->wal_max_bytes + WAL_META_SLACK, &e->cfg.log,
		     &e->wal);
	if (r < 0)
		goto out_close;
	if (cfg->postgres)
		r = l3_pg_open(cfg->postgres, &e->cfg.log, &e->l3);
	else
		r = l3_sqlite_open(cfg->sqlite_path, &e->cfg.log, &e->l3);
	if (r < 0)
		goto out_close;
	if (cfg->redis) {
		r = l2_redis_open(cfg->redis,
				  cfg->redis_prefix ? cfg->redis_prefix
						    : ENG_REDIS_PREFIX,
				  &e->cfg.log, &e->l2);
		if (r == -EAGAIN) {
			eng_logf(&e->cfg.log, LOG_WARNING,
				 "redis is unreachable: mounting without L2 "
				 "(remount to use it)");
			r = 0;
		}
		if (r < 0)
			goto out_close;
	}
	r = replay_wal(e);
	if (r < 0)
		goto out_close;
	r = load_root(e);
	if (r < 0)
		goto out_close;
	filter_start(e);
	r = -pthread_create(&e->flusher, NULL, flusher_main, e);
	if (r < 0)
		goto out_close;
	e->flusher_started = true;
	r = -pthread_create(&e->syncer, NULL, syncer_main, e);
	if (r < 0)
		goto out_close;
	e->syncer_started = true;
	*out = e;
	return 0;

out_close:
	eng_close(e);
	return r;
}

int eng_close(struct eng *e)
{
	size_t pos = 0;
	uint64_t key;
	void *val;
	int r = 0;

	if (!e)
		return 0;
	pthread_mutex_lock(&e->lock);
	e->stopping = true;
	pthread_cond_signal(&e->flush_cond);
	pthread_mutex_unlock(&e->lock);
	if (e->flusher_started) {
		pthread_join(e->flusher, NULL);
		if (e->committed_seq < e->change_seq)
			r = e->last_error ? e->last_error : -EIO;
	}
	if (e->builder_started)
		pthread_join(e->builder, NULL);
	if (e->syncer_started) {
		pthread_mutex_lock(&e->lock);
		pthread_cond_signal(&e->sync_cond);
		pthread_mutex_unlock(&e->lock);
		pthread_join(e->syncer, NULL);
	}
	/* handles nobody released (only the handles: nodes go below) */
	while (e->handles.next && e->handles.next != &e->handles) {
		struct handle_link *h = e->handles.next;

		handle_unlink(h);
		free(h); /* the link is the first member of both kinds */
	}
	while (u64map_next(&e->nodes, &pos, &key, &val))
		node_destroy(val);
	u64map_release(&e->nodes);
	u64map_release(&e->names);
	batch_release(&e->batch);
	l1_free(e->l1);
	cuckoo_free(e->filter);
	store_free(e->l3);
	store_free(e->l2);
	breaker_release(&e->l2_breaker);
	breaker_release(&e->l3_breaker);
	wal_close(e->wal);
	if (e->lock_fd >= 0)
		close(e->lock_fd); /* releases the lock */
	pthread_cond_destroy(&e->flush_cond);
	pthread_cond_destroy(&e->commit_cond);
	pthread_cond_destroy(&e->sync_cond);
	pthread_mutex_destroy(&e->lock);
	free(e);
	return r;
}

/* --- namespace --- */

int eng_lookup(struct eng *e, uint64_t parent, const char *name,
	       struct eng_attr *out)
{
	struct node *n;
	int r;

	pthread_mutex_lock(&e->lock);
	r = resolve_at(e, parent, name, &n);
	if (r < 0)
		goto out_unlock;
	n->nlookup++;
	node_attr(e, n, out);
	node_put(e, n);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

void eng_forget(struct eng *e, uint64_t ino, uint64_t nlookup)
{
	struct node *n;

	pthread_mutex_lock(&e->lock);
	n = node_get(e, ino);
	if (n && ino != STORE_ROOT_INO) {
		n->nlookup = nlookup > n->nlookup ? 0 : n->nlookup - nlookup;
		node_try_free(e, n);
	}
	pthread_mutex_unlock(&e->lock);
}

int eng_getattr(struct eng *e, uint64_t ino, struct eng_attr *out)
{
	struct node *n;
	int r = 0;

	pthread_mutex_lock(&e->lock);
	n = node_get(e, ino);
	if (n)
		node_attr(e, n, out);
	else
		r = -ENOENT;
	pthread_mutex_unlock(&e->lock);
	return r;
}

/* Resizes the working copy of @n (loaded) to @size, zero-filling. */
static int wc_resize(struct wc *w, size_t size)
{
	if (size > w->cap) {
		size_t cap = w->cap ? w->cap : 4096;
		char *nb;

		while (cap < size)
			cap *= 2;
		nb = realloc(w->buf, cap);
		if (!nb)
			return -ENOMEM;
		w->buf = nb;
		w->cap = cap;
	}
	if (size > w->len)
		memset(w->buf + w->len, 0, size - w->len);
	w->len = size;
	return 0;
}

static int setattr_size(struct eng *e, struct node *n, struct eng_file *f,
			uint64_t size)
{
	struct item *it;
	char *buf;
	int r;

	if (node_is_dir(n))
		return -EISDIR;
	if (size > e->cfg.max_item_bytes)
		return -EFBIG;
	if (n->wc) {
		r = wc_load(e, n);
		if (r < 0)
			return r;
		r = wc_resize(n->wc, size);
		if (r < 0)
			return r;
		n->wc->dirty = true;
		n->wc->mtime_ns = now_ns();
		if (f && f->writer)
			return 0; /* published at flush */
		/* truncate(2) by path while others write: publish now */
		buf = malloc(size ? size : 1);
		if (!buf)
			return -ENOMEM;
		if (size)
			memcpy(buf, n->wc->buf, size);
		r = publish(e, n, buf, size, n->wc->mtime_ns);
		if (r == 0)
			n->wc->dirty = false;
		return r;
	}
	r = node_content(e, n, &it);
	if (r < 0)
		return r;
	buf = calloc(1, size ? size : 1);
	if (!buf) {
		item_unref(it);
		return -ENOMEM;
	}
	memcpy(buf, item_data(it), item_size(it) < size ? item_size(it) : size);
	item_unref(it);
	if (n->deleted)
		free(buf);
	else
		return publish(e, n, buf, size, now_ns());
	return -ENOENT;
}

int eng_setattr(struct eng *e, uint64_t ino, struct eng_file *f,
		const struct eng_setattr *sa, const struct eng_ctx *ctx,
		struct eng_attr *out)
{
	struct node *n;
	bool meta = false;
	int r = 0;

	pthread_mutex_lock(&e->lock);
	n = node_get(e, ino);
	if (!n) {
		r = -ENOENT;
		goto out_unlock;
	}
	n->holds++;
	if (sa->set_size) {
		r = setattr_size(e, n, f, sa->size);
		if (r < 0)
			goto out_put;
	}
	if (sa->set_mode) {
		n->meta.mode = (n->meta.mode & S_IFMT) | (sa->mode & 07777);
		meta = true;
	}
	if (sa->set_uid) {
		n->meta.uid = sa->uid;
		meta = true;
	}
	if (sa->set_gid) {
		n->meta.gid = sa->gid;
		meta = true;
	}
	if (sa->set_mtime) {
		n->meta.mtime_ns = sa->mtime_ns;
		if (n->wc)
			n->wc->mtime_ns = sa->mtime_ns;
		meta = true;
	}
	if (meta) {
		n->meta.ctime_ns = sa->set_ctime ? sa->ctime_ns : now_ns();
		if (!n->deleted)
			r = mark_dirty(e, n, NULL);
	}
	if (r == 0)
		node_attr(e, n, out);
out_put:
	node_put(e, n);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

/*
 * Checks that a new entry @name of @kind may be made in directory @parent:
 * a valid name and ID, not taken, and (for a file) no other file with the
 * same item ID. Returns 0 and the directory in *dirp, or a negative errno.
 */
static int check_new_entry(struct eng *e, uint64_t parent, const char *name,
			   enum item_kind kind, struct node **dirp)
{
	struct node *dir, *n;
	int r = get_dir(e, parent, &dir);

	if (r < 0)
		return r;
	r = check_new_name(e, dir, name, kind);
	if (r < 0)
		return r;
	r = resolve(e, dir, name, &n);
	if (r == 0) {
		node_put(e, n);
		return -EEXIST;
	}
	if (r != -ENOENT)
		return r;
	r = check_stem(e, dir, name, kind, NULL, NULL);
	if (r < 0)
		return r;
	*dirp = dir;
	return 0;
}

int eng_mkdir(struct eng *e, uint64_t parent, const char *name, uint32_t mode,
	      const struct eng_ctx *ctx, struct eng_attr *out)
{
	struct node *dir, *n;
	int r;

	pthread_mutex_lock(&e->lock);
	r = check_new_entry(e, parent, name, ITEM_DIR, &dir);
	if (r < 0)
		goto out_unlock;
	r = node_create(e, dir, name, ITEM_DIR, mode & ~ctx->umask, ctx->uid,
			ctx->gid, true, &n);
	if (r < 0)
		goto out_unlock;
	n->nlookup++;
	node_attr(e, n, out);
	node_put(e, n);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

int eng_rmdir(struct eng *e, uint64_t parent, const char *name)
{
	struct node *n;
	int r;

	pthread_mutex_lock(&e->lock);
	r = resolve_at(e, parent, name, &n);
	if (r < 0)
		goto out_unlock;
	if (!node_is_dir(n)) {
		r = -ENOTDIR;
		goto out_put;
	}
	r = dir_empty(e, n);
	if (r == 0)
		r = -ENOTEMPTY;
	if (r < 0)
		goto out_put;
	r = n->deleted ? -ENOENT : node_delete(e, n);
out_put:
	node_put(e, n);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

int eng_unlink(struct eng *e, uint64_t parent, const char *name)
{
	struct node *n;
	int r;

	pthread_mutex_lock(&e->lock);
	r = resolve_at(e, parent, name, &n);
	if (r < 0)
		goto out_unlock;
	r = node_is_dir(n) ? -EISDIR : node_delete(e, n);
	node_put(e, n);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

/* true when @dir is @n or lies below it. */
static bool is_within(struct eng *e, const struct node *dir,
		      const struct node *n)
{
	for (; dir; dir = node_get(e, dir->parent))
		if (dir == n)
			return true;
	return false;
}

/* Moves @n to @dir/@name. */
static int node_move(struct eng *e, struct node *n, struct node *dir,
		     const char *name)
{
	char *nm = strdup(name);
	struct node *old_parent = node_get(e, n->parent);

	if (!nm)
		return -ENOMEM;
	filter_del(e, n->parent, n->name);
	name_del(e, n);
	free(n->name);
	n->name = nm;
	n->parent = dir->ino;
	dir->children++;
	filter_add(e, dir->ino, name);
	if (name_add(e, n) < 0)
		return -ENOMEM;
	n->meta.ctime_ns = now_ns();
	if (old_parent) {
		old_parent->children--;
		node_try_free(e, old_parent);
	}
	return mark_dirty(e, n, NULL);
}

int eng_rename(struct eng *e, uint64_t parent, const char *name,
	       uint64_t newparent, const char *newname, unsigned flags)
{
	struct node *dir, *ndir, *n = NULL, *t = NULL;
	enum item_kind kind;
	int r;

	if (flags & ~(unsigned)RENAME_NOREPLACE)
		return -EINVAL;
	pthread_mutex_lock(&e->lock);
	r = get_dir(e, parent, &dir);
	if (r == 0)
		r = get_dir(e, newparent, &ndir);
	if (r < 0)
		goto out_unlock;
	r = resolve(e, dir, name, &n);
	if (r < 0)
		goto out_unlock;
	kind = node_is_dir(n) ? ITEM_DIR : id_name_kind(newname);
	r = check_new_name(e, ndir, newname, kind);
	if (r < 0)
		goto out_put;
	r = resolve(e, ndir, newname, &t);
	if (r == -ENOENT) {
		t = NULL;
		r = 0;
	}
	if (r < 0)
		goto out_put;
	if (t == n) {
		r = 0;
		goto out_put;
	}
	if (t && (flags & RENAME_NOREPLACE)) {
		r = -EEXIST;
		goto out_put;
	}
	if (node_is_dir(n)) {
		if (is_within(e, ndir, n)) {
			r = -EINVAL;
			goto out_put;
		}
		if (t && !node_is_dir(t)) {
			r = -ENOTDIR;
			goto out_put;
		}
		if (t) {
			r = dir_empty(e, t);
			if (r == 0)
				r = -ENOTEMPTY;
			if (r < 0)
				goto out_put;
		}
	} else {
		if (t && node_is_dir(t)) {
			r = -EISDIR;
			goto out_put;
		}
		r = check_stem(e, ndir, newname, kind, n, t);
		if (r < 0)
			goto out_put;
		if (kind == ITEM_JSON && n->meta.kind != ITEM_JSON) {
			struct item *it;

			r = node_content(e, n, &it);
			if (r < 0)
				goto out_put;
			if (!item_json_valid(item_data(it), item_size(it)))
				r = -EINVAL;
			item_unref(it);
			if (r < 0)
				goto out_put;
		}
	}
	/* The lock may have been dropped: check nothing went away. */
	if (n->deleted || ndir->deleted || (t && t->deleted) ||
	    name_find(e, ndir->ino, newname) != t) {
		r = -EAGAIN;
		goto out_put;
	}
	if (t) {
		r = node_delete(e, t);
		if (r < 0)
			goto out_put;
	}
	n->meta.kind = kind;
	r = node_move(e, n, ndir, newname);
out_put:
	node_put(e, t);
	node_put(e, n);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

/* --- files --- */

static struct eng_file *file_new(struct eng *e, struct node *n, int flags,
				 int *err)
{
	struct eng_file *f = calloc(1, sizeof(*f));

	if (!f) {
		*err = -ENOMEM;
		return NULL;
	}
	f->n = n;
	f->writer = (flags & O_ACCMODE) != O_RDONLY;
	if (f->writer && !n->wc) {
		n->wc = calloc(1, sizeof(*n->wc));
		if (!n->wc) {
			free(f);
			*err = -ENOMEM;
			return NULL;
		}
	}
	n->opens++;
	if (f->writer) {
		n->wc->writers++;
		if (flags & O_TRUNC) {
			n->wc->loaded = true;
			n->wc->len = 0;
			n->wc->dirty = true;
			n->wc->mtime_ns = now_ns();
		}
	}
	handle_link(e, &f->link);
	return f;
}

int eng_create(struct eng *e, uint64_t parent, const char *name, uint32_t mode,
	       int flags, const struct eng_ctx *ctx, struct eng_attr *out,
	       struct eng_file **fp)
{
	struct node *dir, *n;
	enum item_kind kind = id_name_kind(name);
	struct eng_file *f;
	int r;

	pthread_mutex_lock(&e->lock);
	r = check_new_entry(e, parent, name, kind, &dir);
	if (r < 0)
		goto out_unlock;
	r = node_create(e, dir, name, kind, mode & ~ctx->umask, ctx->uid,
			ctx->gid, true, &n);
	if (r < 0)
		goto out_unlock;
	f = file_new(e, n, flags & ~O_TRUNC, &r);
	if (f) {
		if (f->writer) /* a new file: its content is the empty wc */
			n->wc->loaded = true;
		n->cache_version = n->meta.version;
		n->nlookup++;
		node_attr(e, n, out);
		*fp = f;
	}
	node_put(e, n);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

int eng_file_open(struct eng *e, uint64_t ino, int flags, struct eng_file **fp,
		  bool *keep_cache)
{
	struct eng_file *f;
	struct node *n;
	int r = 0;

	pthread_mutex_lock(&e->lock);
	n = node_get(e, ino);
	if (!n) {
		r = -ENOENT;
		goto out_unlock;
	}
	if (node_is_dir(n)) {
		r = -EISDIR;
		goto out_unlock;
	}
	f = file_new(e, n, flags, &r);
	if (!f)
		goto out_unlock;
	if (f->writer && !n->wc->loaded) {
		r = wc_load(e, n);
		if (r < 0) {
			pthread_mutex_unlock(&e->lock);
			eng_release(e, f);
			return r;
		}
	}
	*keep_cache = n->cache_version == n->meta.version;
	n->cache_version = n->meta.version;
	*fp = f;
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

ssize_t eng_read(struct eng *e, struct eng_file *f, void *buf, size_t size,
		 off_t off)
{
	struct node *n = f->n;
	struct item *it;
	const char *src;
	size_t len;
	ssize_t r;

	if (off < 0)
		return -EINVAL;
	pthread_mutex_lock(&e->lock);
	if (n->wc && n->wc->loaded) {
		src = n->wc->buf;
		len = n->wc->len;
		it = NULL;
	} else {
		r = node_content(e, n, &it);
		if (r < 0)
			goto out_unlock;
		src = item_data(it);
		len = item_size(it);
	}
	r = 0;
	if ((size_t)off < len) {
		r = (ssize_t)(len - (size_t)off < size ? len - (size_t)off
						       : size);
		memcpy(buf, src + off, (size_t)r);
	}
	item_unref(it);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

ssize_t eng_write(struct eng *e, struct eng_file *f, const void *buf,
		  size_t size, off_t off)
{
	struct node *n = f->n;
	size_t end;
	ssize_t r;

	if (!f->writer)
		return -EBADF;
	if (off < 0)
		return -EINVAL;
	end = (size_t)off + size;
	pthread_mutex_lock(&e->lock);
	if (end > e->cfg.max_item_bytes) {
		/* a truncated item must not be published in its place */
		n->wc->failed = -EFBIG;
		n->wc->dirty = true;
		r = -EFBIG;
		goto out_unlock;
	}
	r = wc_load(e, n);
	if (r < 0)
		goto out_unlock;
	if (end > n->wc->len) {
		r = wc_resize(n->wc, end);
		if (r < 0)
			goto out_unlock;
	}
	if (size)
		memcpy(n->wc->buf + off, buf, size);
	n->wc->dirty = true;
	n->wc->mtime_ns = now_ns();
	r = (ssize_t)size;
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

/* Publishes @f's working copy if it holds changes. Lock held. */
/*
 * Makes a writer wait while more than the high-water mark of changed bytes
 * waits to be persisted (reads never wait). While L3 is failing, writers
 * are not held: the write-ahead log takes them up to wal_max_bytes.
 */
static void backpressure(struct eng *e)
{
	size_t high = e->cfg.batch_flush_bytes * DIRTY_HIGH_FACTOR;

	if (high < DIRTY_HIGH_MIN)
		high = DIRTY_HIGH_MIN;
	while (batch_bytes(&e->batch) > high && !e->l3_failing &&
	       !e->stopping) {
		e->flush_now = true;
		pthread_cond_signal(&e->flush_cond);
		pthread_cond_wait(&e->commit_cond, &e->lock);
	}
}

static int flush_locked(struct eng *e, struct eng_file *f)
{
	struct wc *w = f->n->wc;
	char *buf;

	if (!f->writer || !w || !w->dirty)
		return 0;
	if (w->failed)
		return w->failed;
	backpressure(e);
	w = f->n->wc;
	if (f->n->deleted || !w || !w->dirty)
		return 0; /* nobody can see it any more, or published */
	buf = malloc(w->len ? w->len : 1);
	if (!buf)
		return -ENOMEM;
	if (w->len)
		memcpy(buf, w->buf, w->len);
	int r = publish(e, f->n, buf, w->len, w->mtime_ns);
	if (r == 0)
		w->dirty = false;
	return r;
}

int eng_flush(struct eng *e, struct eng_file *f)
{
	int r;

	pthread_mutex_lock(&e->lock);
	r = flush_locked(e, f);
	pthread_mutex_unlock(&e->lock);
	return r;
}

int eng_fsync(struct eng *e, struct eng_file *f)
{
	int r;

	pthread_mutex_lock(&e->lock);
	r = flush_locked(e, f);
	if (r == 0 && f->n->dirty)
		r = wait_committed(e, f->n->dirty_seq);
	pthread_mutex_unlock(&e->lock);
	return r;
}

bool eng_release(struct eng *e, struct eng_file *f)
{
	bool dropped = false;
	struct node *n;

	if (!f)
		return false;
	n = f->n;
	pthread_mutex_lock(&e->lock);
	handle_unlink(&f->link);
	n->opens--;
	if (f->writer && --n->wc->writers == 0) {
		if (n->wc->dirty && !n->deleted) {
			/* an unpublished change is dropped */
			n->cache_version = 0;
			dropped = true;
		}
		wc_free(n->wc);
		n->wc = NULL;
	}
	if (!n->opens && !n->content_dirty) {
		item_unref(n->item);
		n->item = NULL;
	}
	node_try_free(e, n);
	pthread_mutex_unlock(&e->lock);
	free(f);
	return dropped;
}

/* --- directories --- */

int eng_opendir(struct eng *e, uint64_t ino, struct eng_dir **dp)
{
	struct eng_dir *d;
	struct node *n;
	int r;

	pthread_mutex_lock(&e->lock);
	r = get_dir(e, ino, &n);
	if (r < 0)
		goto out_unlock;
	d = calloc(1, sizeof(*d));
	if (!d) {
		r = -ENOMEM;
		goto out_unlock;
	}
	d->n = n;
	n->opens++;
	handle_link(e, &d->link);
	*dp = d;
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

void eng_releasedir(struct eng *e, struct eng_dir *d)
{
	if (!d)
		return;
	pthread_mutex_lock(&e->lock);
	handle_unlink(&d->link);
	d->n->opens--;
	node_try_free(e, d->n);
	pthread_mutex_unlock(&e->lock);
	free(d);
}

static int cmp_node_names(const void *a, const void *b)
{
	return strcmp((*(struct node *const *)a)->name,
		      (*(struct node *const *)b)->name);
}

/* Collects, sorted, the dirty live children of @dir named after @after. */
static int pending_children(struct eng *e, struct node *dir, const char *after,
			    struct node ***out, size_t *nout)
{
	size_t n = 0, cap = 0;
	struct node **arr = NULL;

	for (struct node *d = e->dirty_head; d; d = d->dnext) {
		if (d->deleted || d->parent != dir->ino ||
		    strcmp(d->name, after) <= 0)
			continue;
		if (n == cap) {
			struct node **na;

			cap = cap ? cap * 2 : 16;
			na = realloc(arr, cap * sizeof(*na));
			if (!na) {
				free(arr);
				return -ENOMEM;
			}
			arr = na;
		}
		arr[n++] = d;
	}
	if (n)
		qsort(arr, n, sizeof(*arr), cmp_node_names);
	*out = arr;
	*nout = n;
	return 0;
}

/*
 * Consumes one entry: skips it while *skip is non-zero (a seek), else hands
 * it to @fn and, with @plus, takes a lookup reference. Returns 1 when @fn
 * stopped before the entry, 0 when consumed, or a negative errno.
 */
static int consume(struct eng *e, struct eng_dir *d, struct node *n,
		   struct store_row *row, bool plus, uint64_t *skip,
		   eng_dir_fn fn, void *arg)
{
	const char *name = n ? n->name : row->name;
	struct eng_attr a;

	if (*skip) {
		(*skip)--;
	} else {
		if (n) {
			node_attr(e, n, &a);
		} else {
			struct node tmp = {.ino = row->ino, .meta = row->meta};

			node_attr(e, &tmp, &a);
		}
		if (fn(arg, name, &a, d->pos + 1))
			return 1;
		if (plus) {
			if (!n) {
				n = node_add(e, d->n, row->ino, row->name,
					     &row->meta);
				if (!n)
					return -ENOMEM;
				name = n->name;
			}
			n->nlookup++;
		}
	}
	d->pos++;
	snprintf(d->cursor, sizeof(d->cursor), "%s", name);
	return 0;
}

/* true when the node table overrides L3 row @row (its entry changed). */
static bool row_overridden(struct eng *e, const struct store_row *row)
{
	struct node *m = node_get(e, row->ino);

	return m && (m->dirty || m->deleted);
}

int eng_readdir(struct eng *e, struct eng_dir *d, uint64_t off, bool plus,
		eng_dir_fn fn, void *arg)
{
	char after[STORE_NAME_MAX + 1];
	struct store_row *rows;
	struct node **pend = NULL;
	size_t npend = 0;
	uint64_t skip = 0, gen, t0;
	int r = 0;

	rows = calloc(LIST_PAGE, sizeof(*rows));
	if (!rows)
		return -ENOMEM;
	pthread_mutex_lock(&e->lock);
	if (off != d->pos) {
		/* a seek: start over and skip @off entries */
		d->pos = 0;
		d->cursor[0] = '\0';
		skip = off;
	}
	/* @after pages through L3; d->cursor is the last entry consumed. A
	 * page whose rows are all overridden consumes nothing but still
	 * moves @after on. */
	snprintf(after, sizeof(after), "%s", d->cursor);
	for (;;) {
		int nrows, i = 0;
		size_t ip = 0;
		bool full;

		gen = e->gen;
		d->n->holds++;
		pthread_mutex_unlock(&e->lock);
		t0 = mono_ns();
		nrows = L3_READ(e, e->l3->ops->list(e->l3, d->n->ino, after,
						    rows, LIST_PAGE));
		tier_note(&e->st_l3_list, t0, nrows);
		pthread_mutex_lock(&e->lock);
		d->n->holds--;
		if (nrows < 0) {
			r = nrows;
			break;
		}
		if (gen != e->gen) {
			for (i = 0; i < nrows; i++)
				store_row_release(&rows[i]);
			continue;
		}
		full = nrows == LIST_PAGE;
		free(pend);
		pend = NULL;
		r = pending_children(e, d->n, d->cursor, &pend, &npend);
		if (r < 0)
			break;
		/* merge the rows the node table does not override with the
		 * pending children; with a full page, only pending names
		 * before its last row (the rest come with the next page) */
		while (r == 0) {
			bool have_row, have_pend;

			while (i < nrows && row_overridden(e, &rows[i]))
				i++;
			have_row = i < nrows;
			have_pend = ip < npend &&
				    (!full || strcmp(pend[ip]->name,
						     rows[nrows - 1].name) < 0);
			if (!have_row && !have_pend)
				break;
			if (have_pend &&
			    (!have_row ||
			     strcmp(pend[ip]->name, rows[i].name) < 0)) {
				r = consume(e, d, pend[ip], NULL, plus, &skip,
					    fn, arg);
				ip += r == 0;
			} else {
				r = consume(e, d, node_get(e, rows[i].ino),
					    &rows[i], plus, &skip, fn, arg);
				i += r == 0;
			}
		}
		if (nrows)
			snprintf(after, sizeof(after), "%s",
				 rows[nrows - 1].name);
		for (i = 0; i < nrows; i++)
			store_row_release(&rows[i]);
		if (r || !full)
			break;
	}
	pthread_mutex_unlock(&e->lock);
	free(pend);
	free(rows);
	return r < 0 ? r : 0;
}

/* --- xattrs --- */

static bool has_prefix(const char *s, const char *p)
{
	return strncmp(s, p, strlen(p)) == 0;
}

static bool foreign_ns(const char *name)
{
	return has_prefix(name, "security.") || has_prefix(name, "system.") ||
	       has_prefix(name, "trusted.");
}

/* Copies @len bytes of value into @buf (@size 0: measure only). */
static ssize_t xattr_out(const void *val, size_t len, void *buf, size_t size)
{
	if (size == 0)
		return (ssize_t)len;
	if (len > size)
		return -ERANGE;
	memcpy(buf, val, len);
	return (ssize_t)len;
}

/*
 * user.tierfs.tiers: where the version this mount sees is held now, as
 * "l1,l2,l3" (any subset). L1 and L3 are known here (L3 holds it once its
 * content is committed); L2 is asked, with the lock dropped.
 */
static ssize_t tiers_xattr(struct eng *e, struct node *n, void *buf,
			   size_t size)
{
	uint64_t version = n->meta.version;
	bool in_l1, in_l2 = false, in_l3;
	struct item *it = l1_get(e->l1, n->ino);
	char val[16];
	int len;

	in_l1 = (it && item_meta(it)->version == version) ||
		(n->item && item_meta(n->item)->version == version);
	item_unref(it);
	in_l3 = !n->deleted && !n->content_dirty;
	if (in_l3 && l2_usable(e)) {
		struct store_row row;
		int r;

		n->holds++;
		pthread_mutex_unlock(&e->lock);
		r = e->l2->ops->get(e->l2, n->ino, &row);
		pthread_mutex_lock(&e->lock);
		n->holds--;
		l2_outcome(e, r);
		if (r == 0) {
			in_l2 = row.meta.version == version &&
				n->meta.version == version;
			store_row_release(&row);
		}
	}
	len = snprintf(val, sizeof(val), "%s%s%s%s%s", in_l1 ? "l1" : "",
		       in_l1 && (in_l2 || in_l3) ? "," : "", in_l2 ? "l2" : "",
		       in_l2 && in_l3 ? "," : "", in_l3 ? "l3" : "");
	return xattr_out(val, (size_t)len, buf, size);
}

/*
 * user.tierfs.merkle: a file's Merkle hash is its content hash; a
 * directory's is its subtree's hash as L3 holds it. So that the value
 * covers what readers of the mount see, this mount's pending changes are
 * committed first (as by sync); during an L3 outage the read fails with
 * EIO instead of answering a hash that leaves them out.
 */
static ssize_t merkle_xattr(struct eng *e, struct node *n, void *buf,
			    size_t size)
{
	struct store_row row;
	char val[65];
	int r;

	if (!node_is_dir(n)) {
		item_hash_hex(n->meta.hash, val);
		return xattr_out(val, 64, buf, size);
	}
	n->holds++;
	r = wait_committed(e, e->change_seq);
	if (r == 0 && n->deleted)
		r = -ENOENT;
	else if (r == 0 && e->l3_failing)
		r = -EIO; /* the log holds changes L3 has not got */
	if (r == 0) {
		pthread_mutex_unlock(&e->lock);
		r = L3_READ(e, e->l3->ops->get(e->l3, n->ino, &row));
		pthread_mutex_lock(&e->lock);
	}
	n->holds--;
	if (r < 0)
		return r;
	item_hash_hex(row.merkle, val);
	store_row_release(&row);
	return xattr_out(val, 64, buf, size);
}

static ssize_t synthetic_xattr(struct eng *e, struct node *n, const char *name,
			       void *buf, size_t size)
{
	char val[ID_MAX + 1];
	const char *key = name + strlen(TFS_XATTR);
	bool file = !node_is_dir(n);

	if (strcmp(key, "id") == 0) {
		ssize_t len = node_id(e, n, val, sizeof(val));

		if (len < 0)
			return len == -ENOENT ? -ENODATA : len;
		return xattr_out(val, (size_t)len, buf, size);
	}
	if (file && strcmp(key, "hash") == 0) {
		item_hash_hex(n->meta.hash, val);
		return xattr_out(val, 64, buf, size);
	}
	if (file && strcmp(key, "version") == 0) {
		int len = snprintf(val, sizeof(val), "%llu",
				   (unsigned long long)n->meta.version);
		return xattr_out(val, (size_t)len, buf, size);
	}
	if (file && strcmp(key, "status") == 0) {
		const char *s = n->deleted ? "missing"
				: n->dirty ? "pending"
					   : "synced";

		return xattr_out(s, strlen(s), buf, size);
	}
	if (file && strcmp(key, "tiers") == 0)
		return tiers_xattr(e, n, buf, size);
	if (strcmp(key, "merkle") == 0)
		return merkle_xattr(e, n, buf, size);
	if (strcmp(key, "state") == 0 && n->meta.state)
		return xattr_out(n->meta.state, strlen(n->meta.state), buf,
				 size);
	return -ENODATA;
}

ssize_t eng_getxattr(struct eng *e, uint64_t ino, const char *name, void *buf,
		     size_t size)
{
	struct node *n;
	const void *val;
	ssize_t r;

	if (foreign_ns(name))
		return -ENODATA;
	if (!has_prefix(name, "user."))
		return -ENOTSUP;
	pthread_mutex_lock(&e->lock);
	n = node_get(e, ino);
	if (!n)
		r = -ENOENT;
	else if (has_prefix(name, TFS_XATTR))
		r = synthetic_xattr(e, n, name, buf, size);
	else {
		r = item_xattr_get(&n->meta, name, &val);
		if (r >= 0)
			r = xattr_out(val, (size_t)r, buf, size);
	}
	pthread_mutex_unlock(&e->lock);
	return r;
}

int eng_setxattr(struct eng *e, uint64_t ino, const char *name,
		 const void *value, size_t size, int flags)
{
	struct node *n;
	int r = 0;

	if (foreign_ns(name) || !has_prefix(name, "user."))
		return -ENOTSUP;
	pthread_mutex_lock(&e->lock);
	n = node_get(e, ino);
	if (!n || n->deleted) {
		r = -ENOENT;
	} else if (strcmp(name, TFS_XATTR "state") == 0) {
		char *s = strndup(value, size);

		if (!s || memchr(value, '\0', size)) {
			free(s);
			r = s ? -EINVAL : -ENOMEM;
		} else if ((flags & XATTR_CREATE) && n->meta.state) {
			free(s);
			r = -EEXIST;
		} else if ((flags & XATTR_REPLACE) && !n->meta.state) {
			free(s);
			r = -ENODATA;
		} else {
			free(n->meta.state);
			n->meta.state = s;
		}
	} else if (has_prefix(name, TFS_XATTR)) {
		goto out_unlock; /* read-only: a restore writing it back is ok
				  */
	} else {
		r = item_xattr_set(&n->meta, name, value, size, flags);
		if (r == -ERANGE)
			r = size > 65536 ? -E2BIG : -ERANGE;
	}
	if (r == 0) {
		n->meta.ctime_ns = now_ns();
		r = mark_dirty(e, n, NULL);
	}
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

struct list_ctx {
	char *buf;
	size_t size, len;
	bool overflow;
};

static int list_add(void *arg, const char *name)
{
	struct list_ctx *c = arg;
	size_t l = strlen(name) + 1;

	if (c->size && c->len + l <= c->size)
		memcpy(c->buf + c->len, name, l);
	else if (c->size)
		c->overflow = true;
	c->len += l;
	return 0;
}

ssize_t eng_listxattr(struct eng *e, uint64_t ino, char *buf, size_t size)
{
	static const char *const root_names[] = {TFS_XATTR "id",
						 TFS_XATTR "merkle"};
	struct list_ctx c = {.buf = buf, .size = size};
	struct node *n;
	ssize_t r;

	pthread_mutex_lock(&e->lock);
	n = node_get(e, ino);
	if (!n) {
		r = -ENOENT;
		goto out_unlock;
	}
	if (ino == STORE_ROOT_INO)
		for (size_t i = 0; i < sizeof(root_names) / sizeof(*root_names);
		     i++)
			list_add(&c, root_names[i]);
	if (n->meta.state)
		list_add(&c, TFS_XATTR "state");
	item_xattr_foreach(&n->meta, list_add, &c);
	r = c.overflow ? -ERANGE : (ssize_t)c.len;
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

int eng_removexattr(struct eng *e, uint64_t ino, const char *name)
{
	struct node *n;
	int r;

	if (foreign_ns(name))
		return -ENODATA;
	if (!has_prefix(name, "user."))
		return -ENOTSUP;
	pthread_mutex_lock(&e->lock);
	n = node_get(e, ino);
	if (!n || n->deleted) {
		r = -ENOENT;
	} else if (strcmp(name, TFS_XATTR "state") == 0) {
		r = n->meta.state ? 0 : -ENODATA;
		free(n->meta.state);
		n->meta.state = NULL;
	} else if (has_prefix(name, TFS_XATTR)) {
		r = -EPERM;
	} else {
		r = item_xattr_remove(&n->meta, name);
	}
	if (r == 0) {
		n->meta.ctime_ns = now_ns();
		r = mark_dirty(e, n, NULL);
	}
	pthread_mutex_unlock(&e->lock);
	return r;
}

/* --- whole store --- */

int eng_statfs(struct eng *e, struct eng_stats *out)
{
	uint64_t entries, bytes;
	int r = L3_READ(e, e->l3->ops->stats(e->l3, &entries, &bytes));

	if (r < 0)
		return r;
	out->entries = entries;
	out->bytes = bytes;
	return 0;
}

int eng_sync(struct eng *e)
{
	int r;

	pthread_mutex_lock(&e->lock);
	r = wait_committed(e, e->change_seq);
	pthread_mutex_unlock(&e->lock);
	return r;
}

/* --- items by ID --- */

/*
 * Walks the directories of ID @id (of @kind) from the root, creating missing
 * ones as implicit directories when @create, and returns the last
 * directory held (*dirp) and the file name in @name.
 */
static int walk_id(struct eng *e, const char *id, enum item_kind kind,
		   bool create, struct node **dirp, char *name)
{
	char path[ID_PATH_MAX];
	ssize_t len = id_to_path(id, kind, path, sizeof(path));
	struct node *dir, *next;
	char *comp, *slash;
	int r;

	if (len < 0)
		return (int)len;
	dir = node_get(e, STORE_ROOT_INO);
	dir->holds++;
	for (comp = path; (slash = strchr(comp, '/')); comp = slash + 1) {
		*slash = '\0';
		r = resolve(e, dir, comp, &next);
		if (r == -ENOENT && create)
			r = node_create(e, dir, comp, ITEM_DIR, 0755, getuid(),
					getgid(), false, &next);
		if (r == 0 && !node_is_dir(next)) {
			node_put(e, next);
			r = -ENOTDIR;
		}
		node_put(e, dir);
		if (r < 0)
			return r;
		dir = next;
	}
	strcpy(name, comp);
	*dirp = dir;
	return 0;
}

int eng_put(struct eng *e, const char *id, enum item_kind kind,
	    const void *data, size_t len)
{
	char name[ID_NAME_MAX + 1];
	struct node *dir, *n;
	void *copy;
	int r;

	if (kind == ITEM_DIR)
		return -EINVAL;
	if (len > e->cfg.max_item_bytes)
		return -EFBIG;
	if (kind == ITEM_JSON && !item_json_valid(data, len))
		return -EINVAL;
	pthread_mutex_lock(&e->lock);
	r = walk_id(e, id, kind, true, &dir, name);
	if (r < 0)
		goto out_unlock;
	r = resolve(e, dir, name, &n);
	if (r == -ENOENT) {
		r = check_stem(e, dir, name, kind, NULL, NULL);
		if (r == 0)
			r = node_create(e, dir, name, kind, 0644, getuid(),
					getgid(), true, &n);
	}
	if (r < 0)
		goto out_put_dir;
	if (node_is_dir(n)) {
		r = -EISDIR;
		goto out_put;
	}
	copy = malloc(len ? len : 1);
	if (!copy) {
		r = -ENOMEM;
		goto out_put;
	}
	memcpy(copy, data, len);
	r = publish(e, n, copy, len, now_ns());
out_put:
	node_put(e, n);
out_put_dir:
	node_put(e, dir);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

int eng_get(struct eng *e, const char *id, enum item_kind kind,
	    struct item **out)
{
	char name[ID_NAME_MAX + 1];
	struct node *dir, *n;
	int r;

	if (kind == ITEM_DIR)
		return -EINVAL;
	pthread_mutex_lock(&e->lock);
	r = walk_id(e, id, kind, false, &dir, name);
	if (r < 0)
		goto out_unlock;
	r = resolve(e, dir, name, &n);
	if (r == 0) {
		r = node_is_dir(n) ? -EISDIR : node_content(e, n, out);
		node_put(e, n);
	}
	node_put(e, dir);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

int eng_delete(struct eng *e, const char *id, enum item_kind kind)
{
	char name[ID_NAME_MAX + 1];
	struct node *dir, *n;
	int r;

	if (kind == ITEM_DIR)
		return -EINVAL;
	pthread_mutex_lock(&e->lock);
	r = walk_id(e, id, kind, false, &dir, name);
	if (r < 0)
		goto out_unlock;
	r = resolve(e, dir, name, &n);
	if (r == 0) {
		r = node_is_dir(n) ? -EISDIR : node_delete(e, n);
		node_put(e, n);
	}
	node_put(e, dir);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

/* --- status and metrics --- */

static uint64_t ld(atomic_uint_least64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

int eng_status_json(struct eng *e, char **out, size_t *len)
{
	struct l1_stats l1s;
	uint64_t now = mono_ns();
	bool l3_down, l2_down;
	json_t *j;
	char *text;

	l1_get_stats(e->l1, &l1s);
	pthread_mutex_lock(&e->lock);
	l3_down = e->l3_failing || breaker_is_open(&e->l3_breaker, now);
	l2_down = e->l2 && breaker_is_open(&e->l2_breaker, now);
	j = json_pack(
		"{s:s, s:{s:s, s:b, s:s?}, s:o, s:{s:I, s:I, s:I}, "
		"s:{s:I, s:I}, s:{s:I, s:I}, s:{s:I, s:I, s:I, s:I, s:I}, "
		"s:{s:b, s:I}}",
		"state", l3_down || l2_down ? "degraded" : "ok", "l3",
		"backend", e->l3->ops->name, "up", !l3_down, "last_error",
		e->l3_failing ? strerror(-e->last_error) : NULL, "l2",
		e->l2 ? json_pack("{s:s, s:b}", "backend", e->l2->ops->name,
				  "up", !l2_down)
		      : json_null(),
		"queue", "changes", (json_int_t)batch_count(&e->batch), "bytes",
		(json_int_t)batch_bytes(&e->batch), "not_persisted",
		(json_int_t)(e->change_seq - e->committed_seq), "wal", "bytes",
		(json_int_t)wal_bytes(e->wal), "max_bytes",
		(json_int_t)e->cfg.wal_max_bytes, "pressure", "dirty_bytes",
		(json_int_t)batch_bytes(&e->batch), "high_water",
		(json_int_t)(e->cfg.batch_flush_bytes * DIRTY_HIGH_FACTOR >
					     DIRTY_HIGH_MIN
				     ? e->cfg.batch_flush_bytes *
					       DIRTY_HIGH_FACTOR
				     : DIRTY_HIGH_MIN),
		"l1", "bytes", (json_int_t)l1s.bytes, "pinned_bytes",
		(json_int_t)l1s.pinned_bytes, "items", (json_int_t)l1s.count,
		"hits", (json_int_t)l1s.hits, "misses", (json_int_t)l1s.misses,
		"filter", "trusted", e->filter_trusted, "names",
		(json_int_t)(e->filter ? cuckoo_count(e->filter) : 0));
	pthread_mutex_unlock(&e->lock);
	if (!j)
		return -ENOMEM;
	text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(j);
	if (!text)
		return -ENOMEM;
	*len = strlen(text);
	text[*len] = '\n'; /* json_dumps ends with the NUL we overwrite */
	*len += 1;
	*out = text;
	return 0;
}

static void metric(FILE *f, const char *name, const char *type,
		   const char *help)
{
	fprintf(f, "# HELP tierfs_%s %s\n# TYPE tierfs_%s %s\n", name, help,
		name, type);
}

static void tier_metrics(FILE *f, const char *tier, const char *op,
			 struct tier_stat *st)
{
	fprintf(f, "tierfs_tier_calls_total{tier=\"%s\",op=\"%s\"} %llu\n",
		tier, op, (unsigned long long)ld(&st->calls));
	fprintf(f, "tierfs_tier_errors_total{tier=\"%s\",op=\"%s\"} %llu\n",
		tier, op, (unsigned long long)ld(&st->errors));
	fprintf(f, "tierfs_tier_seconds_total{tier=\"%s\",op=\"%s\"} %.6f\n",
		tier, op, (double)ld(&st->ns) / 1e9);
}

int eng_metrics_text(struct eng *e, char **out, size_t *len)
{
	struct l1_stats l1s;
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);

	if (!f)
		return -ENOMEM;
	l1_get_stats(e->l1, &l1s);
	metric(f, "tier_calls_total", "counter", "calls to a tier, by op");
	metric(f, "tier_errors_total", "counter", "failed calls to a tier");
	metric(f, "tier_seconds_total", "counter", "time spent in a tier");
	tier_metrics(f, "l3", "lookup", &e->st_l3_lookup);
	tier_metrics(f, "l3", "read", &e->st_l3_read);
	tier_metrics(f, "l3", "list", &e->st_l3_list);
	tier_metrics(f, "l3", "apply", &e->st_l3_apply);
	tier_metrics(f, "l2", "fetch", &e->st_l2_fetch);
	tier_metrics(f, "l2", "apply", &e->st_l2_apply);
	pthread_mutex_lock(&e->lock);
	metric(f, "batches_total", "counter", "batches persisted to L3");
	fprintf(f, "tierfs_batches_total %llu\n",
		(unsigned long long)e->batches);
	metric(f, "batch_records_total", "counter", "changes in those batches");
	fprintf(f, "tierfs_batch_records_total %llu\n",
		(unsigned long long)e->batch_recs);
	metric(f, "batch_last_records", "gauge", "changes in the last batch");
	fprintf(f, "tierfs_batch_last_records %llu\n",
		(unsigned long long)e->last_batch);
	metric(f, "queue_changes", "gauge", "changes waiting for L3");
	fprintf(f, "tierfs_queue_changes %zu\n", batch_count(&e->batch));
	metric(f, "queue_bytes", "gauge", "bytes waiting for L3");
	fprintf(f, "tierfs_queue_bytes %zu\n", batch_bytes(&e->batch));
	metric(f, "wal_bytes", "gauge", "bytes in the write-ahead log");
	fprintf(f, "tierfs_wal_bytes %llu\n",
		(unsigned long long)wal_bytes(e->wal));
	metric(f, "flush_failures_total", "counter", "failed batch writes");
	fprintf(f, "tierfs_flush_failures_total %llu\n",
		(unsigned long long)e->fail_count);
	metric(f, "l3_up", "gauge", "1 while L3 answers");
	fprintf(f, "tierfs_l3_up %d\n",
		!(e->l3_failing || breaker_is_open(&e->l3_breaker, mono_ns())));
	if (e->l2) {
		metric(f, "l2_up", "gauge", "1 while L2 answers");
		fprintf(f, "tierfs_l2_up %d\n",
			!breaker_is_open(&e->l2_breaker, mono_ns()));
	}
	metric(f, "filter_checks_total", "counter",
	       "lookups that asked the negative-lookup filter");
	fprintf(f, "tierfs_filter_checks_total %llu\n",
		(unsigned long long)(e->filter_negatives +
				     (e->filter_trusted ? e->l3_lookups : 0)));
	metric(f, "filter_negatives_total", "counter",
	       "lookups the filter answered absent (no L3 query)");
	fprintf(f, "tierfs_filter_negatives_total %llu\n",
		(unsigned long long)e->filter_negatives);
	metric(f, "filter_false_positives_total", "counter",
	       "filter said maybe, L3 said absent");
	fprintf(f, "tierfs_filter_false_positives_total %llu\n",
		(unsigned long long)e->filter_false_positives);
	metric(f, "filter_names", "gauge", "names in the filter");
	fprintf(f, "tierfs_filter_names %zu\n",
		e->filter ? cuckoo_count(e->filter) : 0);
	pthread_mutex_unlock(&e->lock);
	metric(f, "l1_bytes", "gauge", "content bytes in L1");
	fprintf(f, "tierfs_l1_bytes %zu\n", l1s.bytes);
	metric(f, "l1_pinned_bytes", "gauge", "L1 bytes not yet persisted");
	fprintf(f, "tierfs_l1_pinned_bytes %zu\n", l1s.pinned_bytes);
	metric(f, "l1_items", "gauge", "items in L1");
	fprintf(f, "tierfs_l1_items %zu\n", l1s.count);
	metric(f, "l1_hits_total", "counter", "L1 hits");
	fprintf(f, "tierfs_l1_hits_total %llu\n", (unsigned long long)l1s.hits);
	metric(f, "l1_misses_total", "counter", "L1 misses");
	fprintf(f, "tierfs_l1_misses_total %llu\n",
		(unsigned long long)l1s.misses);
	metric(f, "l1_evictions_total", "counter", "L1 evictions");
	fprintf(f, "tierfs_l1_evictions_total %llu\n",
		(unsigned long long)l1s.evictions);
	if (fclose(f) != 0) {
		free(buf);
		return -ENOMEM;
	}
	*out = buf;
	*len = size;
	return 0;
}
