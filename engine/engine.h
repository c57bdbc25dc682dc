/*
 * engine.h - the tierfs engine: a tree of items over tiered storage.
 *
 * This is the manual of the library that fs/ (and any other program) uses.
 * The engine knows nothing about FUSE: it speaks of inode numbers, names,
 * attributes and bytes.
 *
 * Model. The engine keeps a tree of entries (files and directories) whose
 * ground truth is the L3 store. Each entry has a stable inode number
 * allocated from L3. In memory the engine keeps a node for every entry that
 * a caller holds (lookup counts, open files) or that has changes not yet
 * persisted ("dirty"). Changes (create, publish, chmod, rename, unlink, ...)
 * are first appended to the local write-ahead log (all records of one call
 * in one write), then take effect in memory, so this process sees them
 * immediately, and are queued in the batch queue; the flusher thread persists the queue in
 * one L3 transaction when it holds batch_flush_count entries,
 * batch_flush_bytes bytes, or is batch_flush_ms old, on eng_fsync() and on
 * eng_close(). A delete always beats a pending write of the same entry.
 *
 * Files and working copies. All open handles of one file share one working
 * copy. Opening for writing starts it from the current content (empty with
 * O_TRUNC). A version is *published* at eng_flush() and eng_fsync(): the
 * working copy is validated (JSON files must hold valid JSON or be empty; at
 * most max_item_bytes), hashed, turned into a new immutable item with the
 * next version number, cached in L1 (pinned until persisted) and queued. A
 * publish that fails validation returns -EINVAL and leaves the previous
 * published version in place (the working copy is dropped when the last
 * handle closes).
 *
 * Errors: every int function returns >= 0 on success and a negative errno on
 * failure, and a call that fails has changed nothing: not the engine's
 * memory, not the log, not (later) L3. -ENOSPC from any call that changes
 * something means the log is full (wal_max_bytes, while L3 cannot take its
 * contents) or its disk is. Output parameters are written only on success
 * (eng_getxattr() and eng_listxattr() with a too-small buffer return
 * -ERANGE and may have written part of it).
 *
 * Thread-safety: every function may be called from any thread at once,
 * except that eng_close() must be the last call. A struct eng_file is used
 * by the caller like a file descriptor: concurrent calls on one handle are
 * allowed. Calls may block on L3 and Redis (lookups and reads of what
 * memory does not hold) and on write(2) to the log; they hold the engine's
 * lock only for memory work, so a slow tier stalls only the calls that
 * wait for it. None waits for the flusher except eng_fsync(), eng_sync(),
 * eng_close(), eng_getxattr() of a directory's user.tierfs.merkle, and
 * eng_flush()/eng_fsync() while more changed bytes than the high-water mark
 * wait to be persisted (backpressure).
 */
#ifndef TIERFS_ENGINE_H
#define TIERFS_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "item.h"
#include "log.h"

/* The key prefix in Redis when eng_config.redis_prefix is NULL (the same
 * as store.h's STORE_REDIS_PREFIX). */
#define ENG_REDIS_PREFIX "tierfs:"

struct eng;
struct store;
struct eng_file;
struct eng_dir;

/* What the kernel should forget (eng_config.inval). */
enum eng_inval_kind {
	ENG_INVAL_ENTRY,  /* the name @name in directory @parent */
	ENG_INVAL_INODE,  /* inode @ino's attributes; with @data its content */
	ENG_INVAL_DELETE, /* entry @ino, named @name in @parent, is gone */
};

struct eng_inval {
	enum eng_inval_kind kind;
	uint64_t parent;
	uint64_t ino;
	bool data;
	char name[256];
};

struct eng_config {
	/* L3: a PostgreSQL conninfo (URI or key=value; libpq's PG* variables
	 * and ~/.pgpass apply), or else the path of a SQLite database (its
	 * directory must exist). */
	const char *postgres;
	const char *sqlite_path;

	/* L2 (optional): redis://[:password@]host:port[/db], and the prefix
	 * of every key tierfs writes there (default "tierfs:"). */
	const char *redis;
	const char *redis_prefix;

	/* The write-ahead log directory (created when absent; its parent must
	 * exist). Only one engine may use it at a time (-EBUSY). Required
	 * with postgres; defaults to "<sqlite_path>.tierfs-wal" with SQLite. */
	const char *wal_path;
	uint64_t wal_max_bytes; /* default 1 GiB: then writes get -ENOSPC */

	/* The change feed this engine's batches write (store_config): kept
	 * at least this long, at most this many records; 0: the defaults
	 * (one hour, 1,000,000). */
	uint32_t feed_keep_seconds;
	uint64_t feed_keep_records;

	size_t l1_max_bytes; /* content bytes cached in L1; default 256 MiB */
	size_t batch_flush_count; /* default 1000 */
	size_t batch_flush_bytes; /* default 1 MiB */
	uint32_t batch_flush_ms;  /* default 100 */
	size_t max_item_bytes;	  /* default 16 MiB */
	/* Bytes the working copies of files open for writing may hold
	 * together; past it, the open, write or truncation that needs more
	 * gets -ENOSPC. 0 (the default): max(1 GiB, 4 * max_item_bytes). */
	uint64_t max_open_bytes;

	/* Ownership and modes forced on every entry when set (>= 0). */
	int64_t force_uid, force_gid;
	int32_t force_file_mode, force_dir_mode; /* permission bits */

	struct eng_log log;

	/* Called (optional) when another writer sharing the store changed
	 * an entry this engine may have shown, so that the kernel forgets
	 * what it caches (struct eng_inval). Called from the engine's own
	 * feed thread, with no engine lock held; it may block briefly. */
	void (*inval)(void *arg, const struct eng_inval *iv);
	void *inval_arg;
	/* For one-shot programs (tierfs put, get, rm, ls, stat) that make a
	 * call or two and close: no negative-lookup filter is built (so
	 * opening does not scan L3, and every absent name is asked of L3),
	 * L3 is not counted (eng_statfs() then reports this engine's own
	 * changes only), inode numbers are reserved from L3 as each create
	 * needs them rather than by the block, and eng_sync() and eng_fsync()
	 * return 0 only once L3 has committed: a synced log does not stand in
	 * for L3, since such a program's log is private and nobody replays
	 * it. */
	bool oneshot;
	/* A SQLite file that does not exist is -ENOENT instead of created. */
	bool must_exist;

	/* For tests and tools: when set, called once with the opened L3
	 * store; the engine uses (and frees) the store it returns, which
	 * may wrap @l3 (to count or fail calls). NULL: -ENOMEM. */
	struct store *(*wrap_l3)(struct store *l3, void *arg);
	void *wrap_arg;
};

/* Fills @cfg with the defaults (no forced owner/modes, no log). */
void eng_config_init(struct eng_config *cfg);

struct eng_attr {
	uint64_t ino;
	enum item_kind kind;
	uint64_t size;
	uint32_t mode; /* S_IFREG/S_IFDIR | permission bits */
	uint32_t nlink;
	uint32_t uid, gid;
	int64_t mtime_ns, atime_ns, ctime_ns;
	uint64_t version;
};

/* What eng_setattr() changes: the fields whose flag is set. */
struct eng_setattr {
	bool set_mode, set_uid, set_gid, set_size, set_mtime, set_atime,
		set_ctime;
	uint32_t mode;
	uint32_t uid, gid;
	uint64_t size;
	int64_t mtime_ns; /* the caller resolves UTIME_NOW */
	int64_t atime_ns; /* likewise; nothing else changes atime */
	int64_t ctime_ns;
};

/* The caller's identity, for new entries and ctime. */
struct eng_ctx {
	uint32_t uid, gid;
	uint32_t umask;
};

/* Opens the engine: takes the write-ahead log's lock (-EBUSY when another
 * engine holds it), opens L3 and, when configured, Redis (an unreachable
 * Redis is logged and the engine runs without L2), replays the log into L3
 * (every change a crashed engine acknowledged), reserves a block of inode
 * numbers, starts the flusher, the group-commit thread and the builder of
 * the negative-lookup filter (see oneshot for what it skips). Returns 0 and
 * *out, or -EINVAL (bad config), -EBUSY, or the stores' and the log's
 * errors. Blocks. */
int eng_open(const struct eng_config *cfg, struct eng **out);

/* Persists every pending change, waits for it, stops the flusher, frees the
 * engine. Returns 0, or the error of the last failed flush: the changes it
 * could not persist stay in the synced log and are persisted by the next
 * eng_open() (the caller should report it). Accepts NULL. */
int eng_close(struct eng *e);

/*
 * Namespace. @parent is a directory inode, @name one path component.
 * Lookups and creations return the entry's attributes and take one lookup
 * reference on it, which eng_forget() drops (as FUSE's lookup/forget do).
 * Errors: -ENOENT, -ENOTDIR, -EINVAL (bad name), -ENAMETOOLONG, -EEXIST
 * (name taken, or another file has the same item ID), -EIO (L3 failed),
 * -ENOSPC (the log is full), -ENOMEM.
 */
int eng_lookup(struct eng *e, uint64_t parent, const char *name,
	       struct eng_attr *out);
void eng_forget(struct eng *e, uint64_t ino, uint64_t nlookup);
int eng_getattr(struct eng *e, uint64_t ino, struct eng_attr *out);
/* @f may be NULL; with it a size change applies to the open working copy
 * and is published at flush; without it a size change publishes at once.
 * -EFBIG beyond max_item_bytes, -EISDIR for a dir's size. */
int eng_setattr(struct eng *e, uint64_t ino, struct eng_file *f,
		const struct eng_setattr *sa, const struct eng_ctx *ctx,
		struct eng_attr *out);
int eng_mkdir(struct eng *e, uint64_t parent, const char *name, uint32_t mode,
	      const struct eng_ctx *ctx, struct eng_attr *out);
/* -ENOTEMPTY when the directory has children. */
int eng_rmdir(struct eng *e, uint64_t parent, const char *name);
/* -EISDIR for a directory. Open handles keep reading the old content. */
int eng_unlink(struct eng *e, uint64_t parent, const char *name);
/* @flags: 0 or RENAME_NOREPLACE (-EEXIST); RENAME_EXCHANGE gives -EINVAL.
 * Replaces a target file, or an empty target directory (-ENOTEMPTY,
 * -EISDIR, -ENOTDIR as rename(2)). Moving a file onto a ".json" name
 * validates its content (-EINVAL). -EINVAL also for moving a directory into
 * its own subtree. -EAGAIN when other calls kept moving the entries the
 * rename checked (after many tries). */
int eng_rename(struct eng *e, uint64_t parent, const char *name,
	       uint64_t newparent, const char *newname, unsigned flags);

/*
 * Files. eng_create() makes a new empty file and opens it; eng_file_open()
 * opens an existing one. @flags are open(2) flags (O_ACCMODE matters, and
 * O_TRUNC for eng_file_open()). Without O_EXCL, eng_create() of a name
 * that exists by now (another writer made it after the caller looked) opens
 * that file instead, as open(2) would (-EISDIR for a directory). A handle
 * is closed by
 * eng_release(). *keep_cache tells whether the caller's page cache of this
 * file may be kept (the content has not changed since the last open).
 */
int eng_create(struct eng *e, uint64_t parent, const char *name, uint32_t mode,
	       int flags, const struct eng_ctx *ctx, struct eng_attr *out,
	       struct eng_file **f);
int eng_file_open(struct eng *e, uint64_t ino, int flags, struct eng_file **f,
		  bool *keep_cache);
/* Reads up to @size bytes at @off into @buf; returns the count (0 at EOF). */
ssize_t eng_read(struct eng *e, struct eng_file *f, void *buf, size_t size,
		 off_t off);
/* Reads file @ino without a handle, as eng_read() through a handle opened
 * at this moment would (for a caller that keeps no per-open state, as a
 * read-only mount whose kernel sends no open). @ino must be held (a lookup
 * reference): -ENOENT otherwise; -EISDIR for a directory. Unlike a handle,
 * which keeps the content it read when another writer removes the file,
 * this reads what L1 still holds of a removed file, else fails with -EIO. */
ssize_t eng_read_ino(struct eng *e, uint64_t ino, void *buf, size_t size,
		     off_t off);
/* Writes into the working copy; returns @size, or -EFBIG, -EBADF (not open
 * for writing), -EINVAL (negative offset), -ENOMEM, -EIO (the current
 * content could not be loaded). After an -EFBIG the working copy is never
 * published: every later flush of it fails with -EFBIG and the previous
 * version stays. */
ssize_t eng_write(struct eng *e, struct eng_file *f, const void *buf,
		  size_t size, off_t off);
/* Publishes the working copy if it changed (see the top), except a
 * truncation (O_TRUNC, a size change through a writer handle) that no write
 * has followed: eng_fsync() or the last eng_release() publishes that.
 * -EINVAL, -EFBIG, -ENOSPC, -EIO, -ENOMEM: then the previous version stays.
 */
int eng_flush(struct eng *e, struct eng_file *f);
/* Publishes, then waits until the file is committed in L3; while L3 is
 * unreachable, until the log holding it is synced to disk instead. When L3
 * refuses the change (permission, read-only, full), returns that error
 * (an error from before the call is not returned until the flusher's next
 * attempt has failed too); when it refused the file's last change for good and it was set aside
 * (quarantine), -EIO. */
int eng_fsync(struct eng *e, struct eng_file *f);
/* Closes a handle; the last one publishes a truncation no write followed
 * (see eng_flush()) and drops the working copy. Returns true when that
 * dropped changes that were never published (a failed flush): callers that
 * cache content (the kernel) must drop their copy. Never fails (a failed
 * publish of a truncation is logged). */
bool eng_release(struct eng *e, struct eng_file *f);

/*
 * Directories. A directory handle pages through the L3 index merged with
 * pending changes, in inode number order. @off is 0 for the start or a
 * cookie that an earlier entry returned, on this handle or any other of
 * the directory: an entry's cookie is its inode number, so a listing
 * resumes exactly after it whatever changed meanwhile. @fn is called for
 * each entry in turn (with its attributes and its cookie, the offset of
 * the next one) until it returns non-zero,
 * which stops the walk before that entry is consumed. With @plus, every
 * entry handed to @fn for which @fn returns 0 has taken a lookup reference.
 * "." and ".." are the caller's business.
 *
 * @prefetch (may be NULL: never) is set when the call reserved a read of
 * the listing's next rows from L3 in the background: the caller must then
 * call eng_readdir_prefetch(), once, before its next readdir call on @d,
 * best after handing the entries on (a mount replies first), so that the
 * query overlaps with the reader's work. Until it did, eng_releasedir()
 * of @d waits, and another thread's readdir call that needs those rows
 * waits for them.
 */
typedef int (*eng_dir_fn)(void *arg, const char *name,
			  const struct eng_attr *attr, uint64_t next_off);
int eng_opendir(struct eng *e, uint64_t ino, struct eng_dir **d);
int eng_readdir(struct eng *e, struct eng_dir *d, uint64_t off, bool plus,
		eng_dir_fn fn, void *arg, bool *prefetch);
/* eng_readdir() without @plus for a caller that needs names and types
 * only: the attributes handed to @fn carry the inode number, the kind and
 * the file type in mode (permission bits only when forced by
 * force_*_mode), nlink 1 for a directory, the rest zero. The store reads
 * less per entry (a plain readdir of a large directory). */
int eng_readdir_names(struct eng *e, struct eng_dir *d, uint64_t off,
		      eng_dir_fn fn, void *arg, bool *prefetch);
/* Runs the prefetch a readdir call reserved (see above). An L3 failure
 * is left for the readdir call that needs the rows. */
void eng_readdir_prefetch(struct eng *e, struct eng_dir *d);
void eng_releasedir(struct eng *e, struct eng_dir *d);

/*
 * Extended attributes (docs/design.md §4). user.tierfs.{id,hash,version,
 * status,tiers,merkle,state} are computed (state is settable; reading a
 * directory's merkle first waits, like eng_sync(), for this engine's
 * pending changes to be committed, then reads L3); other user.* names are
 * stored with the entry; security.*, system.* and trusted.* give -ENODATA
 * (get, remove), -ENOTSUP (set) and are never listed. eng_getxattr()
 * returns the value length; with @size 0 it only measures; -ERANGE when
 * @size is too small. eng_listxattr() works the same way on the
 * NUL-separated name list (the computed names are listed only on the root,
 * user.tierfs.state wherever one is set). eng_setxattr(): -EINVAL for a
 * state tag that is not UTF-8 or holds NUL, -E2BIG past ENG_STATE_MAX or a
 * value past 64 KiB, -ENOSPC when the entry's xattrs would pass
 * ENG_XATTRS_MAX, -EPERM for a user.tierfs.* name that is not computed.
 */
/* Limits on what one entry holds: its state tag (UTF-8 text without NUL)
 * and all its user xattrs together (names, values and 6 bytes each). */
#define ENG_STATE_MAX 4096
#define ENG_XATTRS_MAX (128u << 10)

ssize_t eng_getxattr(struct eng *e, uint64_t ino, const char *name, void *buf,
		     size_t size);
int eng_setxattr(struct eng *e, uint64_t ino, const char *name,
		 const void *value, size_t size, int flags);
ssize_t eng_listxattr(struct eng *e, uint64_t ino, char *buf, size_t size);
int eng_removexattr(struct eng *e, uint64_t ino, const char *name);

/* Whole-store numbers for statfs: L3's counts when the engine opened plus
 * this engine's own changes since (no query per call; changes other
 * programs make to the store show at the next open). */
struct eng_stats {
	uint64_t entries;
	uint64_t bytes;
};
int eng_statfs(struct eng *e, struct eng_stats *out);

/* Counters of this engine since it opened (for status, metrics, tests). */
struct eng_counters {
	uint64_t l3_lookups;	   /* name lookups that queried L3 */
	uint64_t filter_negatives; /* lookups the filter answered "absent" */
	bool filter_trusted;	   /* the negative-lookup filter is complete */
	uint64_t filter_names;	   /* names in the filter */
	uint64_t quarantined;	   /* changes L3 refused for good, set aside */
	uint64_t dir_loads;	   /* directory pages read for lookups */
	uint64_t dir_hits;	   /* lookups those snapshots answered */
	uint64_t prefetched;	   /* files read ahead into L1 */
};
void eng_get_counters(struct eng *e, struct eng_counters *out);

/*
 * The engine's state for people and monitors, rendered into a new malloc()ed
 * buffer (*out, caller frees; *len bytes, not NUL-terminated):
 * eng_status_json() gives one JSON object (state, tier health, queue depth,
 * write-ahead log size, pressure, L1, filter); eng_metrics_text() gives the
 * Prometheus text format (operations and latencies per tier, batch sizes,
 * queue depth, log bytes, L1 bytes and hit rate, filter checks and false
 * positives, errors). Neither contains a secret. Returns 0 or -ENOMEM.
 */
int eng_status_json(struct eng *e, char **out, size_t *len);
int eng_metrics_text(struct eng *e, char **out, size_t *len);

/* Persists everything pending and waits (syncfs), as eng_fsync() does for
 * one file: while L3 is unreachable, until the log is synced instead (not
 * with oneshot: then the error of the failed flush); returns L3's refusal
 * (permission, read-only, full) as the error, and -EIO when L3 refused for
 * good a change this call waited for and it was set aside (quarantine). */
int eng_sync(struct eng *e);

/*
 * Items by ID (the library view, docs/design.md §10). IDs are as in id.h.
 * eng_put() creates or replaces the item (creating the directories of its
 * prefix as needed) and publishes it like a close; eng_get() returns a new
 * reference to the current item; eng_delete() removes it (-ENOENT).
 */
int eng_put(struct eng *e, const char *id, enum item_kind kind,
	    const void *data, size_t len);
int eng_get(struct eng *e, const char *id, enum item_kind kind,
	    struct item **out);
int eng_delete(struct eng *e, const char *id, enum item_kind kind);

/* Finds the item @id of @kind and returns its attributes, taking one
 * lookup reference on it as eng_lookup() does (drop it with
 * eng_forget(e, out->ino, 1)), so that eng_getattr() and eng_getxattr()
 * (user.tierfs.hash, .status, .tiers) can be asked about it. -ENOENT,
 * -EISDIR (a directory has the item's path), -ENOTDIR (a file is in the
 * way), -EINVAL and -ENAMETOOLONG (a bad ID), -EIO, -ENOMEM. */
int eng_lookup_id(struct eng *e, const char *id, enum item_kind kind,
		  struct eng_attr *out);

/*
 * Calls @fn with the ID and attributes of every item under @prefix: ""
 * lists every item; otherwise @prefix is an ID naming a directory, and the
 * items at any depth below it are listed ("user" gives user.1 and
 * user.sub.2, not the item user itself nor username.3). The walk is depth
 * first, each directory's entries in inode number order (the order of
 * readdir: roughly the order they were made in), and a directory's items
 * come where the directory comes: one state of the store always gives one
 * order. It reads L3 a listing page at a time through directory handles,
 * so memory grows with the depth of the tree, not with its size, and
 * pending changes are merged in as readdir does; an item created, moved or
 * removed during the walk may or may not be listed. Items whose ID would
 * pass ID_MAX (below a directory renamed deep) have no ID and are skipped.
 * @fn runs without the engine's lock (it may call the engine); a non-zero
 * return stops the walk and is returned. -ENOENT when @prefix names no
 * directory, -ENOTDIR when a file is in its way, -EINVAL and
 * -ENAMETOOLONG for a bad prefix, -EIO, -ENOMEM.
 */
typedef int (*eng_id_fn)(void *arg, const char *id,
			 const struct eng_attr *attr);
int eng_list_ids(struct eng *e, const char *prefix, eng_id_fn fn, void *arg);

#endif
