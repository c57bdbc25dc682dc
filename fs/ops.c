/*
 * ops.c - the FUSE low-level operations of tierfs.
 *
 * Each operation translates the request into one engine call and replies:
 * no caching, retries or policy live here (docs/design.md §11.6). Inode
 * numbers are the engine's own, so they are stable across remounts; FUSE's
 * root inode (1) is the engine's root. The kernel's caches are configured with
 * entry_timeout/attr_timeout, and negative lookups are cached as long as
 * positive ones; directory listings are cached until a change drops them.
 * No opendir reaches tierfs (tfs_init()): directories are listed by inode
 * number and offset, through a few cursors (cursors.h). On a read-only
 * mount no open reaches it either: files are read by inode number and
 * their pages stay cached across opens.
 *
 * Unsupported operations answer as docs/design.md §3.7 records: link,
 * symlink and mknod give EPERM; readlink gives EINVAL (there are no links).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include "control.h"
#include "handles.h"
#include "killpriv.h"
#include "ops.h"

static struct tfs *req_tfs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* The open file or directory behind fi->fh, or NULL (answer EBADF). */
static struct eng_file *file_of(fuse_req_t req, struct fuse_file_info *fi)
{
	return tfs_handle_get(&req_tfs(req)->handles, fi->fh, false);
}

static struct eng_dir *dir_of(fuse_req_t req, struct fuse_file_info *fi)
{
	return tfs_handle_get(&req_tfs(req)->handles, fi->fh, true);
}

/* @ns nanoseconds since the epoch as a timespec: tv_nsec in 0..999999999,
 * so a time before 1970 has a negative tv_sec rounded down. */
static struct timespec ns_ts(int64_t ns)
{
	struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000),
			      .tv_nsec = (long)(ns % 1000000000)};

	if (ts.tv_nsec < 0) {
		ts.tv_sec--;
		ts.tv_nsec += 1000000000;
	}
	return ts;
}

static void attr_to_stat(const struct eng_attr *a, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = a->ino;
	st->st_mode = a->mode;
	st->st_nlink = a->nlink;
	st->st_uid = a->uid;
	st->st_gid = a->gid;
	st->st_size = (off_t)a->size;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)((a->size + 511) / 512);
	st->st_mtim = ns_ts(a->mtime_ns);
	st->st_atim = ns_ts(a->atime_ns);
	st->st_ctim = ns_ts(a->ctime_ns);
}

static void fill_entry(struct tfs *t, const struct eng_attr *a,
		       struct fuse_entry_param *ep)
{
	memset(ep, 0, sizeof(*ep));
	ep->ino = a->ino;
	ep->generation = 1; /* inode numbers are never reused */
	attr_to_stat(a, &ep->attr);
	ep->attr_timeout = t->attr_timeout;
	ep->entry_timeout = t->entry_timeout;
}

static void get_ctx(fuse_req_t req, struct eng_ctx *ctx)
{
	const struct fuse_ctx *fc = fuse_req_ctx(req);

	ctx->uid = fc->uid;
	ctx->gid = fc->gid;
	ctx->umask = 0; /* the kernel applied it already */
}

static void reply_entry_or_err(fuse_req_t req, int r, const struct eng_attr *a)
{
	struct fuse_entry_param ep;

	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	fill_entry(req_tfs(req), a, &ep);
	fuse_reply_entry(req, &ep);
}

/* true when the caller of @req is in group @gid or is root, who may keep
 * S_ISGID (the kernel's in_group_or_capable). */
static bool in_group_or_root(fuse_req_t req, uint32_t gid)
{
	const struct fuse_ctx *fc = fuse_req_ctx(req);
	gid_t groups[64];
	int n;

	if (fc->uid == 0 || fc->gid == gid)
		return true;
	n = fuse_req_getgroups(req, 64, groups);
	for (int i = 0; i < n && i < 64; i++)
		if (groups[i] == gid)
			return true;
	return false;
}

/* The set-ID bits of a file of @mode and group @gid that a write,
 * truncation or chown the kernel asked to clear them for (killpriv.c)
 * clears: S_ISUID; S_ISGID when the group may execute, or when the caller
 * is not in the group (as the kernel does for a local filesystem). */
static uint32_t setid_to_kill(fuse_req_t req, uint32_t mode, uint32_t gid)
{
	uint32_t kill = mode & S_ISUID;

	if ((mode & S_ISGID) &&
	    ((mode & S_IXGRP) || !in_group_or_root(req, gid)))
		kill |= S_ISGID;
	return S_ISREG(mode) ? kill : 0;
}

/* For a write or an O_TRUNC open that asks for it, clears the set-ID bits
 * of file @ino: 0 or a negative errno. */
static int kill_suidgid(fuse_req_t req, fuse_ino_t ino)
{
	struct eng_setattr sa = {.set_mode = true};
	struct eng *e = req_tfs(req)->eng;
	struct eng_attr a;
	struct eng_ctx ctx;
	uint32_t kill;
	int r;

	if (!tfs_kill_suidgid())
		return 0;
	r = eng_getattr(e, ino, &a);
	if (r < 0)
		return r;
	kill = setid_to_kill(req, a.mode, a.gid);
	if (!kill)
		return 0;
	sa.mode = a.mode & ~kill;
	get_ctx(req, &ctx);
	return eng_setattr(e, ino, NULL, &sa, &ctx, &a);
}

static void tfs_init(void *userdata, struct fuse_conn_info *conn)
{
	struct tfs *t = userdata;

	/* open(O_TRUNC) must not publish an empty version before the
	 * writes: the truncation happens in the working copy. */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	/* Read-only: the first open answers ENOSYS, after which the kernel
	 * sends no open, flush or release, keeps file pages across opens
	 * and reads with fh 0 (by inode). The change feed drops the pages of
	 * what other writers change; a changed mtime or size (seen at the
	 * attribute timeout) drops them too. */
	t->no_open = t->read_only && (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT);
	/* Any mount: the first opendir answers ENOSYS; no opendir or
	 * releasedir follows, listings are cached (the kernel's default
	 * then) and readdir comes with fh 0 (cursors.h). A listing's offsets
	 * are inode numbers, from which any handle resumes exactly, so no
	 * per-open state is needed. */
	t->no_opendir = conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT;
	/* (libfuse's default) the kernel reads a directory's attributes again
	 * before it lists it from its cache, and a file's before a read from
	 * its cache, when they were invalidated: a changed mtime then drops
	 * the cached listing or pages (the change feed invalidates what other
	 * writers change; on a no-open mount the control files rely on it) */
	if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
		conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
	/* killpriv.c reads every request's kill flags: with splice, libfuse
	 * would move WRITEs past it */
	conn->want &= ~FUSE_CAP_SPLICE_READ;
}

static void tfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct tfs *t = req_tfs(req);
	struct fuse_entry_param cep;
	struct eng_attr a;
	int r = tfs_ctl_lookup(t, parent, name, &cep);

	if (r <= 0) {
		if (r < 0)
			fuse_reply_err(req, -r);
		else
			fuse_reply_entry(req, &cep);
		return;
	}
	r = eng_lookup(t->eng, parent, name, &a);
	if (r == -ENOENT) {
		struct fuse_entry_param ep = {
			.ino = 0, .entry_timeout = t->entry_timeout};
		fuse_reply_entry(req, &ep); /* a cached negative entry */
		return;
	}
	reply_entry_or_err(req, r, &a);
}

static void tfs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	if (!tfs_ctl_ino(ino))
		eng_forget(req_tfs(req)->eng, ino, nlookup);
	fuse_reply_none(req);
}

static void tfs_forget_multi(fuse_req_t req, size_t count,
			     struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		if (!tfs_ctl_ino(forgets[i].ino))
			eng_forget(req_tfs(req)->eng, forgets[i].ino,
				   forgets[i].nlookup);
	fuse_reply_none(req);
}

static void tfs_getattr(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	struct tfs *t = req_tfs(req);
	struct eng_attr a;
	struct stat st;
	int r;

	if (tfs_ctl_ino(ino)) {
		r = tfs_ctl_stat(t, ino, &st);
		if (r < 0)
			fuse_reply_err(req, -r);
		else
			fuse_reply_attr(req, &st, 0);
		return;
	}
	r = eng_getattr(t->eng, ino, &a);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	attr_to_stat(&a, &st);
	fuse_reply_attr(req, &st, t->attr_timeout);
}

/* @ts in nanoseconds since the epoch. The engine keeps times as int64_t
 * nanoseconds (years 1677 to 2262): a time beyond is clamped to the nearest
 * it can keep, as the kernel clamps times to what a filesystem keeps. */
static int64_t ts_ns(const struct timespec *ts)
{
	int64_t ns;

	if (__builtin_mul_overflow((int64_t)ts->tv_sec, (int64_t)1000000000,
				   &ns) ||
	    __builtin_add_overflow(ns, (int64_t)ts->tv_nsec, &ns))
		return ts->tv_sec < 0 ? INT64_MIN : INT64_MAX;
	return ns;
}

static void tfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
			int to_set, struct fuse_file_info *fi)
{
	struct tfs *t = req_tfs(req);
	struct eng_setattr sa = {0};
	struct eng_attr a;
	struct eng_ctx ctx;
	struct timespec now;
	struct stat st;
	int r;

	if (tfs_ctl_ino(ino)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	get_ctx(req, &ctx);
	clock_gettime(CLOCK_REALTIME, &now);
	sa.set_mode = to_set & FUSE_SET_ATTR_MODE;
	sa.mode = attr->st_mode;
	sa.set_uid = to_set & FUSE_SET_ATTR_UID;
	sa.uid = attr->st_uid;
	sa.set_gid = to_set & FUSE_SET_ATTR_GID;
	sa.gid = attr->st_gid;
	sa.set_size = to_set & FUSE_SET_ATTR_SIZE;
	sa.size = (uint64_t)attr->st_size;
	sa.set_mtime = to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW);
	sa.mtime_ns = (to_set & FUSE_SET_ATTR_MTIME_NOW)
			      ? ts_ns(&now)
			      : ts_ns(&attr->st_mtim);
	sa.set_atime = to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW);
	sa.atime_ns = (to_set & FUSE_SET_ATTR_ATIME_NOW)
			      ? ts_ns(&now)
			      : ts_ns(&attr->st_atim);
	sa.set_ctime = to_set & FUSE_SET_ATTR_CTIME;
	sa.ctime_ns = ts_ns(&attr->st_ctim);
	if (tfs_kill_suidgid() && !sa.set_mode) {
		/* a chown, or a truncation by a caller without CAP_FSETID */
		r = eng_getattr(t->eng, ino, &a);
		if (r < 0) {
			fuse_reply_err(req, -r);
			return;
		}
		sa.mode = a.mode & ~setid_to_kill(req, a.mode, a.gid);
		sa.set_mode = sa.mode != a.mode;
	}
	/* a size change through an open file applies to its working copy */
	r = eng_setattr(t->eng, ino, fi ? file_of(req, fi) : NULL, &sa, &ctx,
			&a);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	attr_to_stat(&a, &st);
	fuse_reply_attr(req, &st, t->attr_timeout);
}

static void tfs_readlink(fuse_req_t req, fuse_ino_t ino)
{
	fuse_reply_err(req, EINVAL);
}

static void tfs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, dev_t rdev)
{
	fuse_reply_err(req, EPERM);
}

static void tfs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
			const char *name)
{
	fuse_reply_err(req, EPERM);
}

static void tfs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		     const char *newname)
{
	fuse_reply_err(req, EPERM);
}

static void tfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode)
{
	struct eng_ctx ctx;
	struct eng_attr a;
	int r;

	if (tfs_ctl_reserved(parent, name) || tfs_ctl_ino(parent)) {
		fuse_reply_err(req, tfs_ctl_ino(parent) ? EPERM : EEXIST);
		return;
	}
	get_ctx(req, &ctx);
	r = eng_mkdir(req_tfs(req)->eng, parent, name, mode, &ctx, &a);
	reply_entry_or_err(req, r, &a);
}

static void tfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (tfs_ctl_reserved(parent, name) || tfs_ctl_ino(parent)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	fuse_reply_err(req, -eng_unlink(req_tfs(req)->eng, parent, name));
}

static void tfs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (tfs_ctl_reserved(parent, name) || tfs_ctl_ino(parent)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	fuse_reply_err(req, -eng_rmdir(req_tfs(req)->eng, parent, name));
}

static void tfs_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		       fuse_ino_t newparent, const char *newname,
		       unsigned int flags)
{
	if (tfs_ctl_reserved(parent, name) || tfs_ctl_ino(parent) ||
	    tfs_ctl_reserved(newparent, newname) || tfs_ctl_ino(newparent)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	fuse_reply_err(req, -eng_rename(req_tfs(req)->eng, parent, name,
					newparent, newname, flags));
}

static void tfs_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		       mode_t mode, struct fuse_file_info *fi)
{
	struct tfs *t = req_tfs(req);
	struct fuse_entry_param ep;
	struct eng_file *f;
	struct eng_ctx ctx;
	struct eng_attr a;
	int r;

	if (tfs_ctl_reserved(parent, name) || tfs_ctl_ino(parent)) {
		fuse_reply_err(req, tfs_ctl_ino(parent) ? EPERM : EEXIST);
		return;
	}
	get_ctx(req, &ctx);
	r = eng_create(t->eng, parent, name, mode, fi->flags, &ctx, &a, &f);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	fi->fh = tfs_handle_add(&t->handles, f, false);
	if (!fi->fh) {
		eng_release(t->eng, f);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fill_entry(t, &a, &ep);
	if (fuse_reply_create(req, &ep, fi) != 0) { /* the caller went away */
		tfs_handle_remove(&t->handles, fi->fh, false);
		eng_release(t->eng, f);
	}
}

static void tfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct tfs *t = req_tfs(req);
	struct eng_file *f;
	bool keep;
	int r;

	if (t->no_open) {
		/* no per-open state: success, and the kernel stops asking */
		fuse_reply_err(req, ENOSYS);
		return;
	}
	if (tfs_ctl_ino(ino)) {
		if ((fi->flags & O_ACCMODE) != O_RDONLY ||
		    (fi->flags & O_TRUNC)) {
			fuse_reply_err(req, EACCES);
			return;
		}
		struct tfs_ctl_text *x = tfs_ctl_open(t, ino, &r);

		if (!x) {
			fuse_reply_err(req, -r);
			return;
		}
		fi->fh = (uint64_t)(uintptr_t)x;
		fi->direct_io = 1; /* each open renders anew */
		fi->noflush = 1;
		if (fuse_reply_open(req, fi) != 0)
			tfs_ctl_close(x);
		return;
	}
	r = eng_file_open(t->eng, ino, fi->flags, &f, &keep);
	if (r == 0 && (r = kill_suidgid(req, ino)) < 0)
		eng_release(t->eng, f);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	fi->fh = tfs_handle_add(&t->handles, f, false);
	if (!fi->fh) {
		eng_release(t->eng, f);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fi->keep_cache = keep;
	/* a close of a read-only open publishes nothing: no FLUSH for it
	 * (the kernel still sends RELEASE). O_RDONLY|O_TRUNC truncates,
	 * which its flush checks. */
	fi->noflush = (fi->flags & O_ACCMODE) == O_RDONLY &&
		      !(fi->flags & O_TRUNC);
	if (fuse_reply_open(req, fi) != 0) {
		tfs_handle_remove(&t->handles, fi->fh, false);
		eng_release(t->eng, f);
	}
}

static void tfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct tfs *t = req_tfs(req);
	struct eng_file *f = NULL;
	char *buf;
	ssize_t r;

	if (tfs_ctl_ino(ino)) {
		struct tfs_ctl_text *x = (struct tfs_ctl_text *)(uintptr_t)fi->fh;
		const char *src;
		size_t len, n = 0;
		int cr = 0;

		if (x) { /* this open's rendering */
			src = x->buf;
			len = x->len;
			buf = NULL;
		} else { /* a no-open mount */
			cr = tfs_ctl_read(t, ino, &buf, &len);
			src = buf;
		}
		if (cr < 0) {
			fuse_reply_err(req, -cr);
			return;
		}
		if ((size_t)off < len)
			n = len - (size_t)off < size ? len - (size_t)off : size;
		if (x && n) {
			/* a copy: once the reply is out the reader may close,
			 * and the release frees the rendering */
			buf = malloc(n);
			if (!buf) {
				fuse_reply_err(req, ENOMEM);
				return;
			}
			memcpy(buf, src + off, n);
			src = buf;
			off = 0;
		}
		fuse_reply_buf(req, n ? src + off : NULL, n);
		free(buf);
		return;
	}
	if (!t->no_open) {
		f = file_of(req, fi);
		if (!f) {
			fuse_reply_err(req, EBADF);
			return;
		}
	}
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	r = f ? eng_read(t->eng, f, buf, size, off)
	      : eng_read_ino(t->eng, ino, buf, size, off);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_buf(req, buf, (size_t)r);
	free(buf);
}

static void tfs_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		      size_t size, off_t off, struct fuse_file_info *fi)
{
	struct eng_file *f = file_of(req, fi);
	ssize_t r = f ? kill_suidgid(req, ino) : -EBADF;

	/* the bits go first, as the kernel clears them before a write */
	if (r == 0)
		r = eng_write(req_tfs(req)->eng, f, buf, size, off);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_write(req, (size_t)r);
}

static void tfs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct eng_file *f;

	if (req_tfs(req)->no_open) {
		fuse_reply_err(req, ENOSYS); /* nothing to publish: no more */
		return;
	}
	if (tfs_ctl_ino(ino)) {
		fuse_reply_err(req, 0);
		return;
	}
	f = file_of(req, fi);

	fuse_reply_err(req, f ? -eng_flush(req_tfs(req)->eng, f) : EBADF);
}

static void tfs_release(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	struct tfs *t = req_tfs(req);
	struct eng_file *f;

	fuse_reply_err(req, 0);
	if (tfs_ctl_ino(ino)) {
		tfs_ctl_close((struct tfs_ctl_text *)(uintptr_t)fi->fh);
		return;
	}
	if (t->no_open)
		return; /* nothing was kept per open */
	f = tfs_handle_remove(&t->handles, fi->fh, false);
	if (f && eng_release(t->eng, f))
		/* unpublished bytes are in the kernel's page cache */
		fuse_lowlevel_notify_inval_inode(t->se, ino, 0, 0);
}

static void tfs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		      struct fuse_file_info *fi)
{
	struct eng_file *f;

	if (req_tfs(req)->no_open) {
		fuse_reply_err(req, ENOSYS); /* nothing to persist: no more */
		return;
	}
	if (tfs_ctl_ino(ino)) {
		fuse_reply_err(req, 0);
		return;
	}
	f = file_of(req, fi);
	fuse_reply_err(req, f ? -eng_fsync(req_tfs(req)->eng, f) : EBADF);
}

static void tfs_opendir(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	struct eng_dir *d;
	int r;

	if (req_tfs(req)->no_opendir) {
		/* no per-open state: success, and the kernel stops asking */
		fuse_reply_err(req, ENOSYS);
		return;
	}
	if (ino == TFS_CTL_DIR_INO) {
		fi->fh = 0;
		fuse_reply_open(req, fi);
		return;
	}
	r = eng_opendir(req_tfs(req)->eng, ino, &d);

	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	fi->fh = tfs_handle_add(&req_tfs(req)->handles, d, true);
	if (!fi->fh) {
		eng_releasedir(req_tfs(req)->eng, d);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* the kernel keeps the listing across opens: it drops it itself
	 * when this mount adds, removes or renames an entry in the
	 * directory (and when its mtime changes), and the change feed
	 * drops it for other writers' changes (inval.c) */
	fi->cache_readdir = 1;
	fi->keep_cache = 1;
	if (fuse_reply_open(req, fi) != 0) {
		tfs_handle_remove(&req_tfs(req)->handles, fi->fh, true);
		eng_releasedir(req_tfs(req)->eng, d);
	}
}

struct dirbuf {
	fuse_req_t req;
	struct tfs *t;
	char *buf;
	size_t size, len;
	bool plus;
	off_t last; /* offset of the last entry added (or the call's) */
};

/* The engine's cookies are inode numbers (at least 2); "." and ".." come
 * first here, at offsets 1 and 2. */
#define DOT_ENTRIES 2

static int dirbuf_add(void *arg, const char *name, const struct eng_attr *a,
		      uint64_t next_off)
{
	struct dirbuf *db = arg;
	off_t off = (off_t)(next_off + DOT_ENTRIES);
	size_t need;

	if (db->plus) {
		struct fuse_entry_param ep;

		fill_entry(db->t, a, &ep);
		need = fuse_add_direntry_plus(db->req, db->buf + db->len,
					      db->size - db->len, name, &ep,
					      off);
	} else {
		struct stat st = {.st_ino = a->ino, .st_mode = a->mode};

		need = fuse_add_direntry(db->req, db->buf + db->len,
					 db->size - db->len, name, &st, off);
	}
	if (need > db->size - db->len)
		return 1; /* full: this entry waits for the next call */
	db->len += need;
	db->last = off;
	return 0;
}

static bool add_dot(struct dirbuf *db, const char *name, fuse_ino_t ino,
		    off_t off)
{
	size_t need;

	if (db->plus) {
		struct fuse_entry_param ep = {0};

		ep.attr.st_ino = ino;
		ep.attr.st_mode = S_IFDIR;
		need = fuse_add_direntry_plus(db->req, db->buf + db->len,
					      db->size - db->len, name, &ep,
					      off);
	} else {
		struct stat st = {.st_ino = ino, .st_mode = S_IFDIR};

		need = fuse_add_direntry(db->req, db->buf + db->len,
					 db->size - db->len, name, &st, off);
	}
	if (need > db->size - db->len)
		return false;
	db->len += need;
	db->last = off;
	return true;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi, bool plus)
{
	struct dirbuf db = {.req = req,
			    .t = req_tfs(req),
			    .size = size,
			    .plus = plus,
			    .last = off};
	struct eng_dir *d;
	bool prefetch = false;
	int r = 0;

	db.buf = malloc(size ? size : 1);
	if (!db.buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (ino == TFS_CTL_DIR_INO) {
		fuse_reply_buf(req, db.buf,
			       tfs_ctl_readdir(req, db.buf, size, off, plus));
		free(db.buf);
		return;
	}
	if (db.t->no_opendir) {
		d = tfs_cursor_take(&db.t->cursors, ino, (uint64_t)off);
		if (!d) {
			r = eng_opendir(db.t->eng, ino, &d);
			if (r < 0)
				goto out_reply;
		}
	} else {
		d = dir_of(req, fi);
		if (!d) {
			r = -EBADF;
			goto out_reply;
		}
	}
	if ((off >= 1 || add_dot(&db, ".", ino, 1)) &&
	    (off >= 2 || add_dot(&db, "..", ino, 2))) {
		uint64_t pos = off > DOT_ENTRIES ? (uint64_t)off - DOT_ENTRIES
						 : 0;

		/* a plain readdir shows names, inode numbers and types only */
		if (plus)
			r = eng_readdir(db.t->eng, d, pos, true, dirbuf_add,
					&db, &prefetch);
		else
			r = eng_readdir_names(db.t->eng, d, pos, dirbuf_add,
					      &db, &prefetch);
	}
	/* the handle waits for the listing's next call, unless this one
	 * showed nothing (the end, or an error): a call that comes back to
	 * this offset anyway resumes as exactly on a new handle */
	if (db.t->no_opendir && db.len == 0 && !prefetch)
		eng_releasedir(db.t->eng, d);
	else if (db.t->no_opendir)
		eng_releasedir(db.t->eng,
			       tfs_cursor_put(&db.t->cursors, ino,
					      (uint64_t)db.last, d));
out_reply:
	if (r < 0 && db.len == 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_buf(req, db.buf, db.len);
	free(db.buf);
	/* the next rows come from L3 while the kernel takes these (the
	 * handle stays until then, even if closed or evicted meanwhile) */
	if (prefetch)
		eng_readdir_prefetch(db.t->eng, d);
}

static void tfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, false);
}

static void tfs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			    off_t off, struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, true);
}

static void tfs_releasedir(fuse_req_t req, fuse_ino_t ino,
			   struct fuse_file_info *fi)
{
	if (ino == TFS_CTL_DIR_INO || req_tfs(req)->no_opendir) {
		fuse_reply_err(req, 0);
		return;
	}
	eng_releasedir(req_tfs(req)->eng,
		       tfs_handle_remove(&req_tfs(req)->handles, fi->fh, true));
	fuse_reply_err(req, 0);
}

static void tfs_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			 struct fuse_file_info *fi)
{
	fuse_reply_err(req, -eng_sync(req_tfs(req)->eng));
}

static void tfs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct tfs *t = req_tfs(req);
	struct eng_stats s;
	struct statvfs sv = {0};
	int r = eng_statfs(t->eng, &s);

	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	/* Capacity is the store's business; report what is used and a
	 * large free figure so that tools do not refuse to write. */
	sv.f_bsize = 4096;
	sv.f_frsize = 4096;
	sv.f_blocks = (s.bytes + 4095) / 4096 + (1ull << 28);
	sv.f_bfree = sv.f_bavail = 1ull << 28;
	sv.f_files = s.entries + (1ull << 32);
	sv.f_ffree = sv.f_favail = 1ull << 32;
	sv.f_namemax = 255;
	fuse_reply_statfs(req, &sv);
}

static void tfs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			 const char *value, size_t size, int flags)
{
	if (tfs_ctl_ino(ino)) {
		fuse_reply_err(req, ENOTSUP);
		return;
	}
	fuse_reply_err(req, -eng_setxattr(req_tfs(req)->eng, ino, name, value,
					  size, flags));
}

static void tfs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			 size_t size)
{
	char *buf;
	ssize_t r;

	if (tfs_ctl_ino(ino)) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	buf = size ? malloc(size) : NULL;
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	r = eng_getxattr(req_tfs(req)->eng, ino, name, buf, size);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)r);
	else
		fuse_reply_buf(req, buf, (size_t)r);
	free(buf);
}

static void tfs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	char *buf;
	ssize_t r;

	if (tfs_ctl_ino(ino)) {
		if (size == 0)
			fuse_reply_xattr(req, 0);
		else
			fuse_reply_buf(req, NULL, 0);
		return;
	}
	buf = size ? malloc(size) : NULL;
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	r = eng_listxattr(req_tfs(req)->eng, ino, buf, size);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)r);
	else
		fuse_reply_buf(req, buf, (size_t)r);
	free(buf);
}

static void tfs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	if (tfs_ctl_ino(ino)) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	fuse_reply_err(req, -eng_removexattr(req_tfs(req)->eng, ino, name));
}

const struct fuse_lowlevel_ops tfs_ops = {
	.init = tfs_init,
	.lookup = tfs_lookup,
	.forget = tfs_forget,
	.forget_multi = tfs_forget_multi,
	.getattr = tfs_getattr,
	.setattr = tfs_setattr,
	.readlink = tfs_readlink,
	.mknod = tfs_mknod,
	.mkdir = tfs_mkdir,
	.unlink = tfs_unlink,
	.rmdir = tfs_rmdir,
	.symlink = tfs_symlink,
	.rename = tfs_rename,
	.link = tfs_link,
	.open = tfs_open,
	.read = tfs_read,
	.write = tfs_write,
	.flush = tfs_flush,
	.release = tfs_release,
	.fsync = tfs_fsync,
	.opendir = tfs_opendir,
	.readdir = tfs_readdir,
	.readdirplus = tfs_readdirplus,
	.releasedir = tfs_releasedir,
	.fsyncdir = tfs_fsyncdir,
	.statfs = tfs_statfs,
	.setxattr = tfs_setxattr,
	.getxattr = tfs_getxattr,
	.listxattr = tfs_listxattr,
	.removexattr = tfs_removexattr,
	.create = tfs_create,
};
