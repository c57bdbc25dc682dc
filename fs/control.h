/*
 * control.h - the hidden control directory ".tierfs/" in the mount root.
 *
 * ".tierfs/status" (JSON) and ".tierfs/metrics" (Prometheus text) are
 * rendered by the engine. The directory is absent from the root's listing,
 * so walkers and backup tools never see it, but it can be opened by path.
 * A file's size is the exact length of a rendering at that moment: each
 * lookup/getattr renders it to measure it, and each read renders it again
 * (direct I/O, so a later size change never truncates a read). On a
 * read-only mount the kernel sends no open (so no direct I/O either) and
 * reads through its page cache: there a stat takes a snapshot (unless the
 * last is younger than 100 ms) whose time is the file's mtime, so the
 * kernel, which stats the file at every read(2) (attribute timeout 0),
 * drops its pages when the snapshot changes; reads serve the snapshot.
 * The name ".tierfs" in the root is reserved: it cannot be created,
 * removed or renamed over (EEXIST / EPERM).
 *
 * The control inodes sit far above any inode number L3 hands out.
 */
#ifndef TIERFS_CONTROL_H
#define TIERFS_CONTROL_H

#include <stdbool.h>

#include "ops.h"

#define TFS_CTL_NAME ".tierfs"
#define TFS_CTL_DIR_INO 0x7ffffffffff00001ull
#define TFS_CTL_STATUS_INO 0x7ffffffffff00002ull
#define TFS_CTL_METRICS_INO 0x7ffffffffff00003ull

/* true for the control directory and its files. */
bool tfs_ctl_ino(fuse_ino_t ino);
/* true when @parent/@name is the reserved control name. */
bool tfs_ctl_reserved(fuse_ino_t parent, const char *name);

/* Looks up @name in @parent when that is a control entry: returns 0 and
 * fills @ep, -ENOENT for an unknown name inside the control directory, or 1
 * when @parent/@name is not a control entry at all (ask the engine). */
int tfs_ctl_lookup(struct tfs *t, fuse_ino_t parent, const char *name,
		   struct fuse_entry_param *ep);
/* stat of a control inode: 0 or -ENOENT. */
int tfs_ctl_stat(struct tfs *t, fuse_ino_t ino, struct stat *st);

/* Renders control file @ino into a new malloc()ed buffer (*buf, *len).
 * A read-write mount renders once per open (tfs_ctl_open()); a no-open
 * mount serves snapshots (tfs_ctl_read()). */
int tfs_ctl_render(struct tfs *t, fuse_ino_t ino, char **buf, size_t *len);

/* What a read of control file @ino serves on a no-open mount, where reads
 * come without a handle: the snapshot the last stat took (a new malloc()ed
 * buffer). */
int tfs_ctl_read(struct tfs *t, fuse_ino_t ino, char **buf, size_t *len);
/* One rendering of control file @ino for an open handle, so that a reader
 * reading in several calls gets one text (it grows as the mount works:
 * pieces of two renderings would not fit together). NULL and *err set on
 * failure. */
struct tfs_ctl_text {
	char *buf;
	size_t len;
};
struct tfs_ctl_text *tfs_ctl_open(struct tfs *t, fuse_ino_t ino, int *err);
void tfs_ctl_close(struct tfs_ctl_text *x);
/* Frees the snapshots (at exit). */
void tfs_ctl_release(struct tfs *t);

/* Fills @buf (room for @size) with the control directory's entries from
 * @off on, as fuse_add_direntry() (or, with @plus, fuse_add_direntry_plus()
 * without lookup counts) does; returns the bytes used. */
size_t tfs_ctl_readdir(fuse_req_t req, char *buf, size_t size, off_t off,
		       bool plus);

#endif
