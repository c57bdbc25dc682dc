/*
 * ops.h - the FUSE low-level operations table of tierfs and the state it
 * needs. fs/ talks to the engine only; it never touches a database.
 */
#ifndef TIERFS_OPS_H
#define TIERFS_OPS_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#include "cursors.h"
#include "engine.h"
#include "handles.h"

struct tfs {
	struct eng *eng;
	struct fuse_session *se;
	struct tfs_handles handles; /* fi->fh of open files and dirs */
	double entry_timeout; /* seconds */
	double attr_timeout;
	/* kernel notifications (inval.c): allowed while live */
	pthread_mutex_t inval_lock;
	bool live;
	bool read_only; /* mounted -o ro */
	/* read-only and the kernel can: no open of a file reaches tierfs
	 * (set at init, before any other request), so files are read by
	 * inode number */
	bool no_open;
	/* the kernel can: no opendir reaches tierfs (set at init), so
	 * directories are listed through the cursors */
	bool no_opendir;
	struct tfs_cursors cursors;
	/* on a no-open mount, the control files' renderings that stat reports
	 * and reads serve (control.c), indexed by inode - TFS_CTL_STATUS_INO */
	pthread_mutex_t ctl_lock;
	struct tfs_ctl_snap {
		char *buf;
		size_t len;
		struct timespec at; /* when rendered: the file's mtime */
	} ctl_snap[2];
};

extern const struct fuse_lowlevel_ops tfs_ops;

#endif
