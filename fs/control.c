/*
 * control.c - the hidden ".tierfs/" control directory (see control.h).
 */
#include <errno.h>
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
	int r = tfs_ctl_render(t, ino, &buf, &len);

	if (r < 0)
		return r;
	free(buf);
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
