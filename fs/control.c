/*
 * control.c - the hidden ".tierfs/" control directory (see control.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "control.h"

static const struct {
	const char *name;
	fuse_ino_t ino;
} ctl_files[] = {
	{"status", TFS_CTL_STATUS_INO},
	{"metrics", TFS_CTL_METRICS_INO},
};

#define N_CTL_FILES (sizeof(ctl_files) / sizeof(ctl_files[0]))

bool tfs_ctl_ino(fuse_ino_t ino)
{
	return ino >= TFS_CTL_DIR_INO && ino <= TFS_CTL_METRICS_INO;
}

bool tfs_ctl_reserved(fuse_ino_t parent, const char *name)
{
	return parent == FUSE_ROOT_ID && strcmp(name, TFS_CTL_NAME) == 0;
}

int tfs_ctl_render(struct tfs *t, fuse_ino_t ino, char **buf, size_t *len)
{
	if (ino == TFS_CTL_STATUS_INO)
		return eng_status_json(t->eng, buf, len);
	if (ino == TFS_CTL_METRICS_INO)
		return eng_metrics_text(t->eng, buf, len);
	return -ENOENT;
}

/* A snapshot younger than this is what a stat reports on a no-open mount:
 * the read() calls of one reader (each of which stats the file first)
 * follow each other more closely than that. */
#define CTL_SNAP_NS 100000000LL

static int64_t ts_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec;
}

/*
 * On a no-open mount: control file @ino's snapshot, taken anew when there
 * is none or (with @refresh) it is older than CTL_SNAP_NS. Copies its
 * length and time to *@len and *@at, and with @buf its bytes into a new
 * malloc()ed buffer. Returns 0 or a negative errno.
 */
static int ctl_snap(struct tfs *t, fuse_ino_t ino, bool refresh, char **buf,
		    size_t *len, struct timespec *at)
{
	struct tfs_ctl_snap *s = &t->ctl_snap[ino - TFS_CTL_STATUS_INO];
	struct timespec now;
	int r = 0;

	clock_gettime(CLOCK_REALTIME, &now);
	pthread_mutex_lock(&t->ctl_lock);
	if (!s->buf ||
	    (refresh && (ts_ns(&now) - ts_ns(&s->at) >= CTL_SNAP_NS ||
			 ts_ns(&now) < ts_ns(&s->at)))) {
		char *nb;
		size_t nlen;

		r = tfs_ctl_render(t, ino, &nb, &nlen);
		if (r < 0)
			goto out_unlock;
		free(s->buf);
		s->buf = nb;
		s->len = nlen;
		/* not the last one's time: the kernel drops its pages */
		if (ts_ns(&now) <= ts_ns(&s->at)) {
			now = s->at;
			if (++now.tv_nsec == 1000000000) {
				now.tv_sec++;
				now.tv_nsec = 0;
			}
		}
		s->at = now;
	}
	*len = s->len;
	*at = s->at;
	if (buf) {
		*buf = malloc(s->len ? s->len : 1);
		if (!*buf)
			r = -ENOMEM;
		else
			memcpy(*buf, s->buf, s->len);
	}
out_unlock:
	pthread_mutex_unlock(&t->ctl_lock);
	return r;
}

int tfs_ctl_read(struct tfs *t, fuse_ino_t ino, char **buf, size_t *len)
{
	struct timespec at;

	if (ino != TFS_CTL_STATUS_INO && ino != TFS_CTL_METRICS_INO)
		return -ENOENT;
	return ctl_snap(t, ino, false, buf, len, &at);
}

struct tfs_ctl_text *tfs_ctl_open(struct tfs *t, fuse_ino_t ino, int *err)
{
	struct tfs_ctl_text *x = calloc(1, sizeof(*x));

	if (!x) {
		*err = -ENOMEM;
		return NULL;
	}
	*err = tfs_ctl_render(t, ino, &x->buf, &x->len);
	if (*err < 0) {
		free(x);
		return NULL;
	}
	return x;
}

void tfs_ctl_close(struct tfs_ctl_text *x)
{
	if (x) {
		free(x->buf);
		free(x);
	}
}

void tfs_ctl_release(struct tfs *t)
{
	for (size_t i = 0; i < sizeof(t->ctl_snap) / sizeof(t->ctl_snap[0]);
	     i++) {
		free(t->ctl_snap[i].buf);
		t->ctl_snap[i].buf = NULL;
	}
}

int tfs_ctl_stat(struct tfs *t, fuse_ino_t ino, struct stat *st)
{
	struct timespec now;

	if (!tfs_ctl_ino(ino))
		return -ENOENT;
	clock_gettime(CLOCK_REALTIME, &now);
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_mtim = st->st_ctim = st->st_atim = now;
	st->st_blksize = 4096;
	if (ino == TFS_CTL_DIR_INO) {
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 1;
		return 0;
	}
	char *buf;
	size_t len;
	int r;

	if (t->no_open) {
		r = ctl_snap(t, ino, true, NULL, &len, &now);
		st->st_mtim = st->st_ctim = st->st_atim = now;
	} else {
		r = tfs_ctl_render(t, ino, &buf, &len);
		if (r == 0)
			free(buf);
	}
	if (r < 0)
		return r;
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	st->st_size = (off_t)len;
	st->st_blocks = (blkcnt_t)((len + 511) / 512);
	return 0;
}

int tfs_ctl_lookup(struct tfs *t, fuse_ino_t parent, const char *name,
		   struct fuse_entry_param *ep)
{
	fuse_ino_t ino = 0;
	int r;

	if (tfs_ctl_reserved(parent, name)) {
		ino = TFS_CTL_DIR_INO;
	} else if (parent == TFS_CTL_DIR_INO) {
		for (size_t i = 0; i < N_CTL_FILES; i++)
			if (strcmp(name, ctl_files[i].name) == 0)
				ino = ctl_files[i].ino;
		if (!ino)
			return -ENOENT;
	} else {
		return 1;
	}
	memset(ep, 0, sizeof(*ep));
	r = tfs_ctl_stat(t, ino, &ep->attr);
	if (r < 0)
		return r;
	ep->ino = ino;
	ep->generation = 1;
	/* no caching: every stat measures the current rendering */
	ep->attr_timeout = 0;
	ep->entry_timeout = t->entry_timeout;
	return 0;
}

size_t tfs_ctl_readdir(fuse_req_t req, char *buf, size_t size, off_t off,
		       bool plus)
{
	size_t used = 0;

	for (size_t i = (size_t)off; i < N_CTL_FILES + 2; i++) {
		struct stat st = {.st_mode = S_IFREG};
		const char *name;
		size_t need;

		if (i == 0) {
			name = ".";
			st.st_ino = TFS_CTL_DIR_INO;
			st.st_mode = S_IFDIR;
		} else if (i == 1) {
			name = "..";
			st.st_ino = FUSE_ROOT_ID;
			st.st_mode = S_IFDIR;
		} else {
			name = ctl_files[i - 2].name;
			st.st_ino = ctl_files[i - 2].ino;
		}
		if (plus) {
			/* ino 0: attributes only, no lookup count taken */
			struct fuse_entry_param ep = {.attr = st};

			need = fuse_add_direntry_plus(req, buf + used,
						      size - used, name, &ep,
						      (off_t)(i + 1));
		} else {
			need = fuse_add_direntry(req, buf + used, size - used,
						 name, &st, (off_t)(i + 1));
		}
		if (need > size - used)
			break;
		used += need;
	}
	return used;
}
