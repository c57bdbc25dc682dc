/*
 * hash_cmd.c - `tierfs hash [--progress] PATH...`: the Merkle hash of
 * engine/merkle.h, computed over a tree on any filesystem, so that a copy,
 * a backup or a restore can be compared with a tierfs tree.
 *
 * The walk is iterative: a stack of levels, one per directory from PATH
 * down to the one being read. A level holds its directory's names (read in
 * full, then sorted with merkle_name_cmp(): raw bytes, never the locale),
 * the index of the next child and the running hash of the children done.
 * An ancestor's names stay held because its remaining children are still to
 * come; nothing else of the tree is, so memory grows with the directories
 * on the current path, not with the tree.
 *
 * Every entry is reached by fstatat(AT_SYMLINK_NOFOLLOW) and openat(...,
 * O_NOFOLLOW) relative to its parent's descriptor, never by a path: depth
 * is not bounded by PATH_MAX and no link is followed. Only the deepest
 * HC_KEEP_FDS levels keep their descriptors open; climbing back to a level
 * whose descriptor was closed reopens it as ".." of the child just done and
 * checks that it is the same directory (st_dev, st_ino), so a tree of any
 * depth needs a bounded number of descriptors. (Reopening only happens from
 * a child the walk has descended through, so search permission on it is
 * already proven.)
 *
 * Only regular files and directories can be in a tierfs tree: anything else
 * below PATH makes its hash meaningless, so it is an error for that PATH.
 * PATH itself is resolved as given, like sha256sum's operands.
 *
 * Output lines are sha256sum's: "<hex>  PATH\n"; a PATH holding a
 * backslash, newline or carriage return is escaped and the line starts
 * with a backslash, as coreutils does.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hash_cmd.h"
#include "merkle.h"

#define HC_IO_SIZE (1024 * 1024) /* one read() of a file's content */
#define HC_KEEP_FDS 16		 /* directory descriptors kept open */

/* One name of a directory: @len bytes at @off in its level's buffer,
 * followed there by a NUL for the *at() calls. */
struct hc_name {
	size_t off;
	size_t len;
};

/* One directory being hashed. */
struct hc_level {
	int fd;	   /* open, or -1 while closed (reopened as "..") */
	dev_t dev; /* what it is, to check a reopened descriptor */
	ino_t ino;
	char *buf;	       /* the names, NUL-terminated, back to back */
	struct hc_name *names; /* sorted by merkle_name_cmp() */
	size_t n;	       /* number of names */
	size_t next;	       /* the next child to hash; the one being hashed
				* (or just failed) is next - 1 */
	struct merkle *m;      /* the children hashed so far */
};

/* The state of one run: the walk of the current PATH and the progress of
 * the whole run. */
struct hc_walk {
	const char *root;    /* the current PATH, as given */
	struct hc_level *lv; /* lv[0] is PATH, lv[depth - 1] the deepest */
	size_t depth;
	size_t cap;
	uint8_t *io;	      /* HC_IO_SIZE bytes */
	bool progress;	      /* report progress on stderr */
	bool tty;	      /* stderr is a terminal: rewrite one line */
	int shown;	      /* length of the progress line on the terminal,
			       * 0 when there is none */
	uint64_t files;	      /* regular files hashed, all PATHs */
	uint64_t bytes;	      /* their bytes */
	struct timespec last; /* when progress was last reported */
};

static void hc_usage(FILE *f)
{
	fprintf(f,
		"usage: tierfs hash [--progress] PATH...\n"
		"\n"
		"Prints the Merkle hash of each PATH, a directory tree or a "
		"regular file, one\n"
		"line each as sha256sum does. Only names, kinds and contents "
		"count; modes,\n"
		"owners, times and extended attributes do not. A symbolic "
		"link, device, fifo\n"
		"or socket below PATH is an error: tierfs holds none.\n"
		"\n"
		"    --progress   report progress on stderr even when it is "
		"not a terminal\n"
		"    --help       print this and exit\n"
		"\n"
		"Exit status: 0 when every PATH was hashed, 1 when one was "
		"not, 2 on a usage\n"
		"error.\n");
}

/* Erases the progress line from the terminal, before other output. */
static void hc_clear_line(struct hc_walk *w)
{
	if (!w->shown)
		return;
	fprintf(stderr, "\r%*s\r", w->shown, "");
	w->shown = 0;
}

/* Reports progress when it is on and a second has passed since the last
 * report, or always with @final (which ends the terminal's line). */
static void hc_progress(struct hc_walk *w, bool final)
{
	struct timespec now;
	char line[128];
	int n;

	if (!w->progress)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (!final && (now.tv_sec - w->last.tv_sec) * 1000000000L +
				      (now.tv_nsec - w->last.tv_nsec) <
			      1000000000L)
		return;
	w->last = now;
	n = snprintf(line, sizeof(line), "tierfs hash: %llu files, %llu MiB",
		     (unsigned long long)w->files,
		     (unsigned long long)(w->bytes >> 20));
	if (!w->tty) {
		fprintf(stderr, "%s\n", line);
		return;
	}
	/* pad over a longer line shown before */
	fprintf(stderr, "\r%s%*s", line, w->shown > n ? w->shown - n : 0, "");
	if (final) {
		fputc('\n', stderr);
		w->shown = 0;
	} else {
		w->shown = n;
	}
}

/* The name of the child of @l being hashed. */
static const struct hc_name *hc_current(const struct hc_level *l)
{
	return &l->names[l->next - 1];
}

/* Prints "tierfs hash: PATH/c1/.../ck: MESSAGE" to stderr, where ci is the
 * child being hashed in level i - 1 (@levels of them), and returns @err. */
static int hc_fail(struct hc_walk *w, size_t levels, int err, const char *fmt,
		   ...) __attribute__((format(printf, 4, 5)));
static int hc_fail(struct hc_walk *w, size_t levels, int err, const char *fmt,
		   ...)
{
	size_t rlen = strlen(w->root);
	va_list ap;

	hc_clear_line(w);
	fprintf(stderr, "tierfs hash: %s", w->root);
	for (size_t k = 0; k < levels; k++) {
		const struct hc_name *nm = hc_current(&w->lv[k]);

		if (k > 0 || (rlen && w->root[rlen - 1] != '/'))
			fputc('/', stderr);
		fwrite(w->lv[k].buf + nm->off, 1, nm->len, stderr);
	}
	fputs(": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return err;
}

/* What a file of mode @mode is, for the message refusing it. */
static const char *hc_kind(mode_t mode)
{
	if (S_ISLNK(mode))
		return "a symbolic link";
	if (S_ISCHR(mode))
		return "a character device";
	if (S_ISBLK(mode))
		return "a block device";
	if (S_ISFIFO(mode))
		return "a fifo";
	if (S_ISSOCK(mode))
		return "a socket";
	return "a file of an unknown type";
}

static int hc_name_cmp(const void *a, const void *b, void *buf)
{
	const struct hc_name *x = a, *y = b;
	const char *names = buf;

	return merkle_name_cmp(names + x->off, x->len, names + y->off, y->len);
}

/* Reads the names of @l's directory (but "." and "..") into @l, sorted.
 * Returns 0, or -ENOMEM, -EMFILE or readdir()'s errno; @l keeps what it
 * read either way, for hc_level_release(). */
static int hc_read_names(struct hc_level *l)
{
	size_t len = 0, cap = 0, ncap = 0;
	struct dirent *de;
	int fd, r = 0;
	DIR *d;

	/* a DIR owns its descriptor and a buffer: read through a duplicate
	 * and keep only @l->fd for the *at() calls */
	fd = fcntl(l->fd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		r = -errno;
		close(fd);
		return r;
	}
	for (;;) {
		size_t nlen;

		errno = 0;
		de = readdir(d);
		if (!de) {
			r = -errno;
			break;
		}
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		nlen = strlen(de->d_name);
		if (len + nlen + 1 > cap) {
			size_t ncap_b = cap ? 2 * cap : 4096;
			char *p;

			while (len + nlen + 1 > ncap_b)
				ncap_b *= 2;
			p = realloc(l->buf, ncap_b);
			if (!p) {
				r = -ENOMEM;
				break;
			}
			l->buf = p;
			cap = ncap_b;
		}
		if (l->n == ncap) {
			size_t c = ncap ? 2 * ncap : 64;
			struct hc_name *p = realloc(l->names, c * sizeof(*p));

			if (!p) {
				r = -ENOMEM;
				break;
			}
			l->names = p;
			ncap = c;
		}
		memcpy(l->buf + len, de->d_name, nlen + 1);
		l->names[l->n].off = len;
		l->names[l->n].len = nlen;
		l->n++;
		len += nlen + 1;
	}
	closedir(d);
	if (r == 0 && l->n > 1)
		qsort_r(l->names, l->n, sizeof(*l->names), hc_name_cmp, l->buf);
	return r;
}

/* Closes and frees what @l holds. Accepts a half-built level. */
static void hc_level_release(struct hc_level *l)
{
	if (l->fd >= 0)
		close(l->fd);
	free(l->buf);
	free(l->names);
	merkle_abort(l->m);
	memset(l, 0, sizeof(*l));
	l->fd = -1;
}

/* Releases every level of the walk (after an error). */
static void hc_unwind(struct hc_walk *w)
{
	while (w->depth > 0)
		hc_level_release(&w->lv[--w->depth]);
}

/* Checks that open @fd is file @dev:@ino, of type @type (S_IFREG or
 * S_IFDIR): nothing replaced it between a stat and the open. */
static bool hc_same(int fd, dev_t dev, ino_t ino, mode_t type)
{
	struct stat now;

	return fstat(fd, &now) == 0 && (now.st_mode & S_IFMT) == type &&
	       now.st_dev == dev && now.st_ino == ino;
}

/* Hashes the content of the regular file open at @fd into @out. Returns 0
 * or read()'s negative errno, or -ENOMEM. */
static int hc_hash_file(struct hc_walk *w, int fd, uint8_t out[MERKLE_LEN])
{
	struct merkle *m = merkle_begin();

	if (!m)
		return -ENOMEM;
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL); /* a hint only */
	for (;;) {
		ssize_t n = read(fd, w->io, HC_IO_SIZE);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int r = -errno;

			merkle_abort(m);
			return r;
		}
		if (n == 0)
			break;
		merkle_update(m, w->io, (size_t)n);
		w->bytes += (uint64_t)n;
		hc_progress(w, false);
	}
	merkle_end(m, out);
	w->files++;
	hc_progress(w, false);
	return 0;
}

/* Pushes a level for the directory open at @fd (stolen), which @st
 * describes, and reads its names. On error, the message is printed and
 * the level stays on the stack for hc_unwind(). */
static int hc_push(struct hc_walk *w, int fd, const struct stat *st)
{
	struct hc_level *l;
	int r;

	if (w->depth == w->cap) {
		size_t cap = w->cap ? 2 * w->cap : 16;
		struct hc_level *p = realloc(w->lv, cap * sizeof(*p));

		if (!p) {
			close(fd);
			return hc_fail(w, w->depth, -ENOMEM, "%s",
				       strerror(ENOMEM));
		}
		w->lv = p;
		w->cap = cap;
	}
	l = &w->lv[w->depth++];
	memset(l, 0, sizeof(*l));
	l->fd = fd;
	l->dev = st->st_dev;
	l->ino = st->st_ino;
	l->m = merkle_begin();
	if (!l->m)
		return hc_fail(w, w->depth - 1, -ENOMEM, "%s",
			       strerror(ENOMEM));
	r = hc_read_names(l);
	if (r < 0)
		return hc_fail(w, w->depth - 1, r,
			       "cannot read the directory: %s", strerror(-r));
	/* a bounded number of descriptors, whatever the depth */
	if (w->depth > HC_KEEP_FDS) {
		struct hc_level *old = &w->lv[w->depth - 1 - HC_KEEP_FDS];

		if (old->fd >= 0) {
			close(old->fd);
			old->fd = -1;
		}
	}
	return 0;
}

/* Ends the deepest level: its hash becomes a child of its parent, or
 * @out when it is PATH itself. */
static int hc_pop(struct hc_walk *w, uint8_t out[MERKLE_LEN])
{
	struct hc_level *top = &w->lv[w->depth - 1], *up;
	const struct hc_name *nm;
	uint8_t h[MERKLE_LEN];

	merkle_end(top->m, h);
	top->m = NULL;
	if (w->depth == 1) {
		memcpy(out, h, MERKLE_LEN);
		hc_level_release(top);
		w->depth = 0;
		return 0;
	}
	up = top - 1;
	if (up->fd < 0) {
		int fd = openat(top->fd, "..",
				O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if (fd < 0)
			return hc_fail(w, w->depth - 1, -errno,
				       "cannot open its parent again: %s",
				       strerror(errno));
		if (!hc_same(fd, up->dev, up->ino, S_IFDIR)) {
			close(fd);
			return hc_fail(w, w->depth - 1, -ESTALE,
				       "moved while being hashed");
		}
		up->fd = fd;
	}
	nm = hc_current(up);
	merkle_add_child(up->m, up->buf + nm->off, nm->len, true, h);
	hc_level_release(top);
	w->depth--;
	return 0;
}

/* Hashes the next child of the deepest level: a file at once, a
 * directory by pushing a level for it. */
static int hc_step(struct hc_walk *w)
{
	struct hc_level *top = &w->lv[w->depth - 1];
	const struct hc_name *nm = &top->names[top->next++];
	const char *name = top->buf + nm->off;
	uint8_t h[MERKLE_LEN];
	struct stat st;
	int fd, r;

	if (fstatat(top->fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return hc_fail(w, w->depth, -errno, "cannot stat: %s",
			       strerror(errno));
	if (S_ISDIR(st.st_mode)) {
		fd = openat(top->fd, name,
			    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return hc_fail(w, w->depth, -errno, "cannot open: %s",
				       strerror(errno));
		if (!hc_same(fd, st.st_dev, st.st_ino, S_IFDIR)) {
			close(fd);
			return hc_fail(w, w->depth, -ESTALE,
				       "changed while being hashed");
		}
		return hc_push(w, fd, &st); /* @top may have moved */
	}
	if (!S_ISREG(st.st_mode))
		return hc_fail(w, w->depth, -EINVAL,
			       "%s: tierfs holds only regular files and "
			       "directories",
			       hc_kind(st.st_mode));
	/* O_NONBLOCK: a fifo swapped in after the fstatat() cannot block
	 * the open; hc_same() then refuses it */
	fd = openat(top->fd, name,
		    O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return hc_fail(w, w->depth, -errno, "cannot open: %s",
			       strerror(errno));
	if (!hc_same(fd, st.st_dev, st.st_ino, S_IFREG)) {
		close(fd);
		return hc_fail(w, w->depth, -ESTALE,
			       "changed while being hashed");
	}
	fcntl(fd, F_SETFL, 0); /* plain blocking reads from here */
	r = hc_hash_file(w, fd, h);
	close(fd);
	if (r < 0)
		return hc_fail(w, w->depth, r, "cannot read: %s", strerror(-r));
	merkle_add_child(top->m, name, nm->len, false, h);
	return 0;
}

/* Hashes @path into @out. Returns 0, or a negative errno after printing
 * why to stderr. */
static int hc_hash_path(struct hc_walk *w, const char *path,
			uint8_t out[MERKLE_LEN])
{
	struct stat st;
	int fd, r;

	w->root = path;
	if (stat(path, &st) < 0)
		return hc_fail(w, 0, -errno, "%s", strerror(errno));
	if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
		return hc_fail(w, 0, -EINVAL,
			       "%s: tierfs holds only regular files and "
			       "directories",
			       hc_kind(st.st_mode));
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return hc_fail(w, 0, -errno, "cannot open: %s",
			       strerror(errno));
	if (!hc_same(fd, st.st_dev, st.st_ino, st.st_mode & S_IFMT)) {
		close(fd);
		return hc_fail(w, 0, -ESTALE, "changed while being hashed");
	}
	if (S_ISREG(st.st_mode)) {
		fcntl(fd, F_SETFL, 0);
		r = hc_hash_file(w, fd, out);
		close(fd);
		if (r < 0)
			return hc_fail(w, 0, r, "cannot read: %s",
				       strerror(-r));
		return 0;
	}
	r = hc_push(w, fd, &st);
	while (r == 0 && w->depth > 0) {
		struct hc_level *top = &w->lv[w->depth - 1];

		r = top->next < top->n ? hc_step(w) : hc_pop(w, out);
	}
	hc_unwind(w);
	return r;
}

/* Prints sha256sum's line for @path. */
static void hc_print(struct hc_walk *w, const uint8_t h[MERKLE_LEN],
		     const char *path)
{
	bool escape = strpbrk(path, "\\\n\r") != NULL;

	hc_clear_line(w);
	if (escape)
		putchar('\\');
	for (int i = 0; i < MERKLE_LEN; i++)
		printf("%02x", h[i]);
	fputs("  ", stdout);
	for (const char *p = path; *p; p++) {
		if (escape && *p == '\\')
			fputs("\\\\", stdout);
		else if (escape && *p == '\n')
			fputs("\\n", stdout);
		else if (escape && *p == '\r')
			fputs("\\r", stdout);
		else
			putchar(*p);
	}
	putchar('\n');
	if (w->tty)
		fflush(stdout); /* before the next progress line */
}

/* Whether argv's @a is a PATH, once options ended or not. */
static bool hc_is_path(const char *a, bool opts_done)
{
	return opts_done || a[0] != '-' || a[1] == '\0';
}

int tfs_hash_cmd(int argc, char **argv)
{
	struct hc_walk w = {0};
	bool opts_done = false;
	int npaths = 0, ret = 0;

	for (int i = 2; i < argc; i++) {
		if (hc_is_path(argv[i], opts_done)) {
			npaths++;
		} else if (strcmp(argv[i], "--") == 0) {
			opts_done = true;
		} else if (strcmp(argv[i], "--progress") == 0) {
			w.progress = true;
		} else if (strcmp(argv[i], "--help") == 0 ||
			   strcmp(argv[i], "-h") == 0) {
			hc_usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "tierfs hash: unknown option '%s'\n",
				argv[i]);
			hc_usage(stderr);
			return 2;
		}
	}
	if (!npaths) {
		fprintf(stderr, "tierfs hash: no PATH\n");
		hc_usage(stderr);
		return 2;
	}
	w.tty = isatty(STDERR_FILENO);
	w.progress = w.progress || w.tty;
	clock_gettime(CLOCK_MONOTONIC, &w.last);
	w.io = malloc(HC_IO_SIZE);
	if (!w.io) {
		fprintf(stderr, "tierfs hash: %s\n", strerror(ENOMEM));
		return 1;
	}

	opts_done = false;
	for (int i = 2; i < argc; i++) {
		uint8_t h[MERKLE_LEN];

		if (!hc_is_path(argv[i], opts_done)) {
			opts_done = opts_done || strcmp(argv[i], "--") == 0;
			continue;
		}
		if (hc_hash_path(&w, argv[i], h) < 0)
			ret = 1;
		else
			hc_print(&w, h, argv[i]);
	}
	hc_progress(&w, true);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "tierfs hash: cannot write the hashes: %s\n",
			strerror(errno));
		ret = 1;
	}
	free(w.io);
	free(w.lv);
	return ret;
}
