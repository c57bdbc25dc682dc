/*
 * wal.h - the local write-ahead log: changes made durable before L3.
 *
 * Every change the engine queues (a struct change, change.h: an entry's
 * final state or its deletion, with new content if any) is appended here
 * first, so a daemon crash loses nothing that close() returned. The log
 * lives in one directory as numbered segment files ("wal-%016llx.log");
 * appends go to the newest. The engine rotates to a new segment each time
 * the flusher takes a batch: every record in older segments is then in that
 * batch (or replaced by a newer record), so once the batch is committed in
 * L3 the older segments are deleted (wal_drop_before()).
 *
 * Record format (little endian), one after another in a segment:
 *
 *     u32 magic 0x54465732 ("TFW2", WAL_MAGIC)
 *     u32 body_len          bytes of body that follow the header
 *     u32 crc32             CRC-32 of the body (zlib's crc32())
 *     body:
 *       u64 seq, u64 ino, u8 deleted,
 *       u64 parent, u16 name_len, name,
 *       u32 kind, u64 size, 32 bytes hash, u64 version,
 *       i64 mtime_ns, i64 atime_ns, i64 ctime_ns, u32 mode, u32 uid,
 *       u32 gid, u8 explicit_dir, u16 state_len (0xffff = NULL), state,
 *       u32 xattrs_len, xattrs,
 *       u8 has_data, [u32 id_len, id, u64 data_len, data]
 *
 * Old records. The magic names the body's layout. Builds before atime was
 * kept wrote magic 0x54465731 ("TFW1", WAL_MAGIC_V1) and a body without
 * atime_ns; replay still reads them, with atime_ns = mtime_ns (what those
 * builds showed), so a log left by such a build replays after an upgrade.
 * Appends always write the current layout, and a segment may hold both.
 *
 * Torn tails: a crash can leave a partial or corrupt record at the end of a
 * segment. Replay stops at the first record whose header or checksum is
 * bad and ignores the rest of the log from there, later segments included
 * (and logs it); replay never fails because of the content of a segment.
 * What replay yields is therefore always a prefix of what was appended.
 *
 * Durability: wal_append() writes (write(2)) before it returns, so the record
 * survives a crash of the process; wal_sync() makes everything appended so
 * far to the current segment survive power loss (fdatasync). A rotation
 * leaves the old segment unsynced until wal_seal(), so that the caller can
 * switch segments under its lock and sync outside it.
 *
 * Bound: the log refuses appends (-ENOSPC) once its segments would hold more
 * than max_bytes; the caller reports it.
 *
 * Thread-safety: none for appends, wal_rotate(), wal_drop_before() and
 * wal_bytes(): the engine calls them under its lock. wal_sync() may be called
 * from any thread without that lock, concurrently with them. wal_seal() is
 * called without the lock by the thread that rotates, never concurrently
 * with wal_rotate().
 */
#ifndef TIERFS_WAL_H
#define TIERFS_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "change.h"
#include "log.h"

#define WAL_MAGIC 0x54465732u	 /* "TFW2": the current record layout */
#define WAL_MAGIC_V1 0x54465731u /* "TFW1": the layout without atime_ns */

struct wal;

/*
 * Opens (creating when absent, mode 0700) the log directory @dir with bound
 * @max_bytes. Existing segments are kept for wal_replay(); new appends go to
 * a fresh segment numbered after them. Returns 0 and *out, or -EACCES,
 * -ENOENT (the parent is missing), -EIO, -ENOMEM; the reason goes to @log.
 */
int wal_open(const char *dir, uint64_t max_bytes, const struct eng_log *log,
	     struct wal **out);

/* Closes the log (does not delete anything). Accepts NULL. */
void wal_close(struct wal *w);

/*
 * Reads every record of the segments that existed at wal_open(), oldest
 * first, and calls @fn with each (the record is stolen by @fn, which frees
 * it with change_free()). Returns the number of records, or a negative
 * errno when a segment cannot be read at all (-EIO), memory runs out
 * (-ENOMEM) or @fn fails (its value).
 */
int wal_replay(struct wal *w, int (*fn)(void *arg, struct change *rec),
	       void *arg);

/*
 * Appends @rec (not stolen). Returns 0, -ENOSPC (the bound would be passed,
 * or the disk is full), -EINVAL (a record replay would refuse), -ENOMEM,
 * -EIO.
 */
int wal_append(struct wal *w, const struct change *rec);

/*
 * Appends @n records (not stolen) all or nothing: after an error none of
 * them is in the log (a partial write is cut away). Errors as wal_append().
 */
int wal_append_all(struct wal *w, struct change *const *recs, size_t n);

/* fdatasyncs the current segment (and the directory when a segment came or
 * went since it was last synced). Returns 0 or -EIO. */
int wal_sync(struct wal *w);

/*
 * Starts a new segment for the appends that follow and returns its number
 * (> 0), or a negative errno (then appends go on to the old segment). Does
 * not sync: the old segment waits for wal_seal() (a rotation that finds one
 * still waiting seals it first).
 */
int64_t wal_rotate(struct wal *w);

/* fdatasyncs and closes the segment the last rotation left, and syncs the
 * directory. Returns 0 (also when there is nothing to seal) or -EIO. */
int wal_seal(struct wal *w);

/* Deletes every segment numbered below @segment (all replayed segments
 * included); the next wal_sync() or wal_seal() syncs the directory. Returns
 * 0 or -EIO. */
int wal_drop_before(struct wal *w, int64_t segment);

/*
 * Sets @n records (not stolen) aside for good: appends them, in the record
 * format above, to "quarantine.log" in the log directory (never replayed,
 * never deleted by tierfs; for people to inspect) and syncs it. Returns 0,
 * or -EIO, -EACCES, -ENOSPC (then the caller keeps its log segments).
 * Without the caller's lock is fine: it touches nothing appends use.
 */
int wal_quarantine(struct wal *w, struct change *const *recs, size_t n);

/* Bytes held by all segments. */
uint64_t wal_bytes(const struct wal *w);

/*
 * Decodes one record body of the layout @magic names (WAL_MAGIC or
 * WAL_MAGIC_V1): the body_len bytes that follow a record's 12-byte header
 * (the header's length and checksum are not looked at). What wal_replay()
 * runs on each record whose header and checksum are good, public for the
 * tests and the fuzzer (tests/fuzz/fuzz_wal.c). On success *out is a new
 * change (free it with change_free()) that wal_append() writes back as
 * exactly these bytes when @magic is WAL_MAGIC (a WAL_MAGIC_V1 body comes
 * back in the current layout, its mtime_ns repeated as atime_ns). Returns
 * 0, -EBADMSG (an unknown magic, or the body does not parse exactly) or
 * -ENOMEM.
 */
int wal_record_decode(uint32_t magic, const void *body, size_t len,
		      struct change **out);

#endif
