/*
 * handles.h - the table behind fi->fh: open files and directories by
 * number, never by raw pointer.
 *
 * A handle number is (generation << 32) | (slot + 1): a slot freed by a
 * release gets a new generation when reused, so a request that comes with
 * a number the table never gave out, or one already released, finds
 * nothing (the caller answers EBADF) instead of following a stale pointer.
 * 0 is never a handle (the control files use it).
 *
 * Thread-safety: every function may be called from any thread (one mutex).
 */
#ifndef TIERFS_HANDLES_H
#define TIERFS_HANDLES_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tfs_handle_slot;

struct tfs_handles {
	pthread_mutex_t lock;
	struct tfs_handle_slot *slots; /* protected by lock */
	size_t nslots, cap;
	size_t free_head; /* a free slot + 1, or 0; protected by lock */
};

void tfs_handles_init(struct tfs_handles *h);
/* Frees the table (not what its slots point at). Accepts NULL. */
void tfs_handles_release(struct tfs_handles *h);

/* Gives @ptr (borrowed; a file when !@dir) a handle number: > 0, or 0 when
 * memory runs out. */
uint64_t tfs_handle_add(struct tfs_handles *h, void *ptr, bool dir);
/* What handle @fh of the kind @dir points at, or NULL when it is not one. */
void *tfs_handle_get(struct tfs_handles *h, uint64_t fh, bool dir);
/* Takes handle @fh out of the table and returns what it pointed at, or NULL
 * when it is not a live handle of the kind @dir. */
void *tfs_handle_remove(struct tfs_handles *h, uint64_t fh, bool dir);

#endif
