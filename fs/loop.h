/*
 * loop.h - the FUSE session loop: one reader at a time, handed on when a
 * request takes long (loop.c).
 */
#ifndef TIERFS_LOOP_H
#define TIERFS_LOOP_H

#include "ops.h"

/* workers when -o max_threads is not given (libfuse's default) */
#define LOOP_MAX_THREADS 10

/* Serves @se until it ends (unmount, or a signal libfuse's handlers
 * caught) with up to @max_threads workers. 0, or a negative errno of
 * reading the device or of starting the first worker. */
int tfs_loop(struct fuse_session *se, unsigned max_threads);

#endif
