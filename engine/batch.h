/*
 * batch.h - the batch queue: pending changes waiting to be persisted.
 *
 * Holds at most one record per entry (keyed by inode number): a struct
 * change (change.h), the entry's final state or its deletion. A newer
 * record replaces an older one, so a delete beats any pending write of the
 * same entry, and a burst of writes to one file persists once. A record
 * that keeps the stored content (item NULL) and replaces one that carried
 * new content inherits that content: "write, then chmod" persists both.
 *
 * The queue says when it is due: when it holds max_count records, or
 * max_bytes bytes (content, names and xattrs, plus 64 per record), or its
 * oldest record is max_age_ns old. batch_take() hands every record over at
 * once: a batch is applied whole, because records of one batch may depend
 * on each other (a rename that frees a name another record takes).
 *
 * Thread-safety: none; the engine calls it under its lock.
 */
#ifndef TIERFS_BATCH_H
#define TIERFS_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "change.h"
#include "u64map.h"

struct batch {
	struct u64map recs; /* ino -> struct change * */
	size_t max_count, max_bytes;
	uint64_t max_age_ns;
	size_t bytes;	    /* sum of rec_bytes() over recs */
	uint64_t oldest_ns; /* when the first record since the last take came */
};

void batch_init(struct batch *b, size_t max_count, size_t max_bytes,
		uint64_t max_age_ns);
/* Frees every record. Accepts NULL. */
void batch_release(struct batch *b);

/* Queues @r (stolen), replacing any record of the same ino. @now_ns is the
 * monotonic time. Returns 0 or -ENOMEM (then @r is freed). */
int batch_add(struct batch *b, struct change *r, uint64_t now_ns);

/* The queued record of @ino, or NULL. */
const struct change *batch_find(const struct batch *b, uint64_t ino);

size_t batch_count(const struct batch *b);
size_t batch_bytes(const struct batch *b);

/* true when the queue is non-empty and a threshold is reached. */
bool batch_due(const struct batch *b, uint64_t now_ns);
/* The monotonic time at which the age threshold fires, or UINT64_MAX when
 * empty. */
uint64_t batch_deadline(const struct batch *b);

/* Moves every record into a new array (*out, caller frees it with free()
 * after freeing the records with change_free()) and returns the count; 0
 * when empty. Returns -ENOMEM and leaves the queue as it was when the array
 * cannot be made. */
ssize_t batch_take(struct batch *b, struct change ***out);

/* Gives back records of a batch that could not be persisted (stolen): each
 * is re-queued unless a newer record of its ino arrived meanwhile, in which
 * case it is freed (its content passes to the newer record if that one has
 * none and is not a delete). Returns how many records were dropped because
 * memory ran out (the caller keeps them in its log then). */
size_t batch_requeue(struct batch *b, struct change **recs, size_t n,
		     uint64_t now_ns);

#endif
