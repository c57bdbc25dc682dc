/*
 * cursors.h - directory cursors for a mount whose kernel opens no
 * directory (see ops.c): readdir then comes without a handle, so the
 * engine handles that page through a directory are kept here between
 * calls, a few at most, by inode number and the offset the next call of
 * that listing comes with. The kernel reads a listing it caches from the
 * start in order, so the next call finds the handle where the last one
 * left it, with the rows it read ahead, even while other listings of the
 * directory take theirs; a call that finds none (a new listing, or a
 * handle evicted or left elsewhere) gets a new one, which resumes exactly
 * after the entry the offset names (offsets are inode numbers), and
 * leaves the others to their listings.
 *
 * A handle is taken out while a call uses it, so no two calls share one.
 * Thread-safety: every function may be called from any thread (one mutex).
 */
#ifndef TIERFS_CURSORS_H
#define TIERFS_CURSORS_H

#include <pthread.h>
#include <stdint.h>

#include "engine.h"

#define TFS_CURSORS 16

struct tfs_cursors {
	pthread_mutex_t lock;
	struct tfs_cursor {
		uint64_t ino;
		uint64_t off;	   /* where the handle stands */
		struct eng_dir *d; /* NULL: a free slot */
		uint64_t used;	   /* when put back last (a clock) */
	} slot[TFS_CURSORS];
	uint64_t clock;
};

void tfs_cursors_init(struct tfs_cursors *c);
/* Takes the handle of directory @ino standing at readdir offset @off out
 * of the table: NULL when none. */
struct eng_dir *tfs_cursor_take(struct tfs_cursors *c, uint64_t ino,
				uint64_t off);
/* Puts handle @d of directory @ino, standing at @off (the offset of the
 * last entry the call handed out), back; returns a handle that no longer
 * fits (the least recently used), for the caller to release, or NULL. */
struct eng_dir *tfs_cursor_put(struct tfs_cursors *c, uint64_t ino,
			       uint64_t off, struct eng_dir *d);
/* Releases every handle (before the engine closes). */
void tfs_cursors_release(struct tfs_cursors *c, struct eng *e);

#endif
