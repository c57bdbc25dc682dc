/*
 * items_cmd.c - `tierfs put|get|rm|ls|stat`: items by ID from the shell.
 *
 *   tierfs put [--binary] STORE_OPTIONS ID [FILE]    (FILE "-" or none: stdin)
 *   tierfs get [--binary] STORE_OPTIONS ID
 *   tierfs rm [--binary] STORE_OPTIONS ID
 *   tierfs ls STORE_OPTIONS [PREFIX]
 *   tierfs stat [--binary] [--json] STORE_OPTIONS ID
 *
 * Each call opens the engine (engine.h) on the store the same options and
 * environment variables name for a mount (options.c parses them), makes one
 * or two calls and closes it, so IDs, implicit directories, validation,
 * the size limit and hashing are those of a mount. An ID names a JSON item
 * unless --binary is given. The engine is opened with oneshot (no filter
 * scan, no count of the store) and must_exist, except for put, which
 * creates a SQLite store as a mount would.
 *
 * The engine's write-ahead log and its lock belong to one engine, so each
 * call makes a private log directory, "tierfs-cli.XXXXXX" under $TMPDIR
 * (/tmp), or under -o wal_path=DIR when that is given, and removes it after
 * closing. A running mount of the same store keeps its own log; SQLite's
 * locking (busy timeout) or PostgreSQL's transactions order the two
 * writers. put and rm return 0 only when eng_sync() of the one-shot engine
 * says L3 committed the change and L3 set none aside; after a failure the
 * change is not acknowledged, and the log that holds it is removed all the
 * same: nobody replays a private log. A call killed meanwhile (kill -9)
 * acknowledged nothing either, and leaves its directory behind.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "id.h"
#include "items_cmd.h"
#include "options.h"

enum icmd_verb { IC_PUT, IC_GET, IC_RM, IC_LS, IC_STAT };

static const char *const icmd_names[] = {"put", "get", "rm", "ls", "stat"};

struct icmd {
	enum icmd_verb verb;
	const char *name; /* "put", ... */
	bool binary;
	bool json; /* stat --json */
	const char *pos[2];
	int npos;
	struct tfs_options o;
	char wal_dir[4096]; /* the private log, once made */
};

bool tfs_items_cmd_is(const char *word)
{
	for (size_t i = 0; i < sizeof(icmd_names) / sizeof(*icmd_names); i++)
		if (strcmp(word, icmd_names[i]) == 0)
			return true;
	return false;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: tierfs put [--binary] STORE_OPTIONS ID [FILE]   write "
		"an item (stdin\n"
		"                                                     when "
		"FILE is - or absent)\n"
		"       tierfs get [--binary] STORE_OPTIONS ID         its "
		"content on stdout\n"
		"       tierfs rm [--binary] STORE_OPTIONS ID          remove "
		"it\n"
		"       tierfs ls STORE_OPTIONS [PREFIX]               the IDs "
		"under PREFIX\n"
		"       tierfs stat [--binary] [--json] STORE_OPTIONS ID\n"
		"                                                     version, "
		"hash, size, ...\n"
		"An ID names a JSON item unless --binary is given. PREFIX is "
		"an ID naming a\n"
		"directory: `ls user` lists user.1, user.sub.2, ... (not user "
		"itself).\n"
		"STORE_OPTIONS as for mounting: --sqlite=FILE or "
		"--postgres=URI, --redis=URL,\n"
		"  -o redis_prefix=P,max_item_bytes=N,wal_path=DIR,... (or "
		"TIERFS_SQLITE,\n"
		"  TIERFS_POSTGRES, TIERFS_REDIS); wal_path is where the "
		"call's private log goes.\n"
		"Exit status: 0 done, 1 no such item, or the change was "
		"refused or not\n"
		"committed, 2 usage, bad ID or store errors\n");
}

static void icmd_log(void *arg, int level, const char *msg)
{
	const struct icmd *c = arg;

	if (level <= LOG_WARNING)
		fprintf(stderr, "tierfs %s: %s\n", c->name, msg);
}

/* Splits argv into flags, store options (handed to tfs_options_parse())
 * and positional arguments. Returns -1 after a message, 1 for --help. */
static int icmd_parse(struct icmd *c, int argc, char **argv,
		      struct fuse_args *args)
{
	bool opts_done = false;
	int max_pos = c->verb == IC_PUT ? 2 : 1;

	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];

		if (!opts_done && strcmp(a, "--") == 0) {
			opts_done = true;
		} else if (!opts_done &&
			   (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)) {
			return 1;
		} else if (!opts_done && strcmp(a, "--binary") == 0 &&
			   c->verb != IC_LS) {
			c->binary = true;
		} else if (!opts_done && strcmp(a, "--json") == 0 &&
			   c->verb == IC_STAT) {
			c->json = true;
		} else if (!opts_done && strcmp(a, "-o") == 0) {
			if (i + 1 == argc) {
				fprintf(stderr, "tierfs %s: -o needs a value\n",
					c->name);
				return -1;
			}
			if (fuse_opt_add_arg(args, a) < 0 ||
			    fuse_opt_add_arg(args, argv[++i]) < 0)
				return -1;
		} else if (!opts_done && a[0] == '-' && a[1]) {
			if (fuse_opt_add_arg(args, a) < 0)
				return -1;
		} else if (c->npos < max_pos) {
			c->pos[c->npos++] = a;
		} else {
			fprintf(stderr, "tierfs %s: too many arguments: '%s'\n",
				c->name, a);
			return -1;
		}
	}
	if (c->npos == 0 && c->verb != IC_LS) {
		fprintf(stderr, "tierfs %s: no ID given\n", c->name);
		return -1;
	}
	return 0;
}

/* Makes the private log directory. */
static int make_wal_dir(struct icmd *c)
{
	const char *parent = c->o.wal_path && !c->o.default_wal
				     ? c->o.wal_path
				     : getenv("TMPDIR");

	if (!parent || !*parent)
		parent = "/tmp";
	if (snprintf(c->wal_dir, sizeof(c->wal_dir), "%s/tierfs-cli.XXXXXX",
		     parent) >= (int)sizeof(c->wal_dir) ||
	    !mkdtemp(c->wal_dir)) {
		fprintf(stderr,
			"tierfs %s: cannot make a log directory in '%s': %s\n",
			c->name, parent, strerror(errno));
		c->wal_dir[0] = '\0';
		return -1;
	}
	return 0;
}

/* Removes the private log directory and what the engine left in it (its
 * lock, segments, quarantine.log: plain files only). */
static void remove_wal_dir(struct icmd *c)
{
	struct dirent *de;
	DIR *d;

	if (!c->wal_dir[0])
		return;
	d = opendir(c->wal_dir);
	if (d) {
		while ((de = readdir(d)))
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				unlinkat(dirfd(d), de->d_name, 0);
		closedir(d);
	}
	if (rmdir(c->wal_dir) < 0)
		fprintf(stderr, "tierfs %s: cannot remove '%s': %s\n", c->name,
			c->wal_dir, strerror(errno));
	c->wal_dir[0] = '\0';
}

static const char *kind_word(enum item_kind k)
{
	return k == ITEM_JSON ? "json" : k == ITEM_BINARY ? "binary" : "dir";
}

/* Checks ID @id of the command's kind before any store is opened. */
static int check_id(struct icmd *c, const char *id)
{
	char path[ID_PATH_MAX];
	ssize_t r = id_to_path(id, c->binary ? ITEM_BINARY : ITEM_JSON, path,
			       sizeof(path));

	if (r >= 0)
		return 0;
	if (r == -EINVAL && c->binary &&
	    id_validate(id, strlen(id), ITEM_BINARY) == 0)
		fprintf(stderr,
			"tierfs %s: bad ID '%s': a binary item's last "
			"segment cannot end in .json\n",
			c->name, id);
	else
		fprintf(stderr, "tierfs %s: bad ID '%s': %s\n", c->name, id,
			r == -ENAMETOOLONG
				? "too long (a segment over 255 "
				  "bytes, or over 4095 in all)"
				: "empty segment, control byte, '/' "
				  "or a '%' not starting %2E or %25");
	return -1;
}

/*
 * Reads all of @path ("-" or NULL: stdin) into a new buffer, refusing more
 * than @max bytes. Returns 0 with *buf (caller frees) and *len, or 1 (the
 * content is too big: the message said so), or -1 (an I/O error, said).
 */
static int read_input(struct icmd *c, const char *path, size_t max, char **buf,
		      size_t *len)
{
	bool use_stdin = !path || strcmp(path, "-") == 0;
	int fd = use_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
	size_t n = 0, cap = 0;
	char *b = NULL;
	int r = -1;

	if (fd < 0) {
		fprintf(stderr, "tierfs %s: cannot open '%s': %s\n", c->name,
			path, strerror(errno));
		return -1;
	}
	for (;;) {
		ssize_t got;

		if (n == cap) {
			/* up to one byte past the limit, to see it passed */
			size_t ncap = cap ? cap * 2 : 65536;
			char *nb;

			if (ncap > max + 1)
				ncap = max + 1;
			if (ncap <= cap) {
				fprintf(stderr,
					"tierfs %s: the content is larger "
					"than max_item_bytes (%zu): nothing "
					"written\n",
					c->name, max);
				r = 1;
				goto out;
			}
			nb = realloc(b, ncap);
			if (!nb) {
				fprintf(stderr, "tierfs %s: out of memory\n",
					c->name);
				goto out;
			}
			b = nb;
			cap = ncap;
		}
		got = read(fd, b + n, cap - n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			fprintf(stderr, "tierfs %s: cannot read '%s': %s\n",
				c->name, use_stdin ? "stdin" : path,
				strerror(errno));
			goto out;
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	*buf = b;
	*len = n;
	b = NULL;
	r = 0;
out:
	free(b);
	if (!use_stdin)
		close(fd);
	return r;
}

/* Reports that @id of the command's kind is missing (exit 1), naming the
 * item of the other kind when there is one. */
static int report_missing(struct icmd *c, struct eng *e, const char *id, int r)
{
	enum item_kind other = c->binary ? ITEM_JSON : ITEM_BINARY;
	struct eng_attr a;

	if (r == -EISDIR) {
		fprintf(stderr,
			"tierfs %s: no %s item '%s': a directory has its "
			"path (see tierfs ls %s)\n",
			c->name, c->binary ? "binary" : "JSON", id, id);
		return 1;
	}
	if (eng_lookup_id(e, id, other, &a) == 0) {
		eng_forget(e, a.ino, 1);
		fprintf(stderr,
			"tierfs %s: no %s item '%s' (there is a %s item '%s'%s)"
			"\n",
			c->name, c->binary ? "binary" : "JSON", id,
			kind_word(other), id,
			c->binary ? ": leave out --binary" : ": add --binary");
		return 1;
	}
	fprintf(stderr, "tierfs %s: no %s item '%s'\n", c->name,
		c->binary ? "binary" : "JSON", id);
	return 1;
}

/* Waits until the changes made are committed in L3 and none was set
 * aside. Returns the exit status. */
static int commit(struct icmd *c, struct eng *e, const char *id)
{
	struct eng_counters cnt;
	int r = eng_sync(e);

	if (r < 0) {
		fprintf(stderr,
			"tierfs %s: '%s' was not committed: %s (nothing is "
			"acknowledged; see the lines above)\n",
			c->name, id, strerror(-r));
		return 1;
	}
	eng_get_counters(e, &cnt);
	if (cnt.quarantined) {
		fprintf(stderr,
			"tierfs %s: the store refused the change of '%s' "
			"(see the lines above)\n",
			c->name, id);
		return 1;
	}
	return 0;
}

static int do_put(struct icmd *c, struct eng *e, const char *data, size_t len)
{
	enum item_kind kind = c->binary ? ITEM_BINARY : ITEM_JSON;
	const char *id = c->pos[0];
	int r = eng_put(e, id, kind, data, len);

	switch (r) {
	case 0:
		return commit(c, e, id);
	case -EEXIST:
		fprintf(stderr,
			"tierfs put: '%s': a %s item with this ID exists: "
			"remove it first\n",
			id, c->binary ? "JSON" : "binary");
		return 1;
	case -EISDIR:
		fprintf(stderr,
			"tierfs put: '%s': a directory has this item's path\n",
			id);
		return 1;
	case -ENOTDIR:
		fprintf(stderr,
			"tierfs put: '%s': a binary item is in the way of its "
			"directories\n",
			id);
		return 1;
	default:
		fprintf(stderr, "tierfs put: cannot write '%s': %s\n", id,
			strerror(-r));
		return 1;
	}
}

static int do_get(struct icmd *c, struct eng *e)
{
	const char *id = c->pos[0];
	struct item *it;
	int r = eng_get(e, id, c->binary ? ITEM_BINARY : ITEM_JSON, &it);
	size_t len;

	if (r == -ENOENT || r == -ENOTDIR || r == -EISDIR)
		return report_missing(c, e, id, r);
	if (r < 0) {
		fprintf(stderr, "tierfs get: cannot read '%s': %s\n", id,
			strerror(-r));
		return 1;
	}
	len = item_size(it);
	/* an empty item may have no data pointer */
	r = (!len || fwrite(item_data(it), 1, len, stdout) == len) &&
			    fflush(stdout) == 0
		    ? 0
		    : 1;
	item_unref(it);
	if (r && errno != EPIPE)
		fprintf(stderr, "tierfs get: cannot write to stdout: %s\n",
			strerror(errno));
	return r;
}

static int do_rm(struct icmd *c, struct eng *e)
{
	const char *id = c->pos[0];
	int r = eng_delete(e, id, c->binary ? ITEM_BINARY : ITEM_JSON);

	if (r == -ENOENT || r == -ENOTDIR || r == -EISDIR)
		return report_missing(c, e, id, r);
	if (r < 0) {
		fprintf(stderr, "tierfs rm: cannot remove '%s': %s\n", id,
			strerror(-r));
		return 1;
	}
	return commit(c, e, id);
}

static int print_id(void *arg, const char *id, const struct eng_attr *a)
{
	(void)arg;
	(void)a;
	if (fputs(id, stdout) == EOF || putchar('\n') == EOF)
		return errno ? -errno : -EIO;
	return 0;
}

static int do_ls(struct icmd *c, struct eng *e)
{
	const char *prefix = c->npos ? c->pos[0] : "";
	int r = eng_list_ids(e, prefix, print_id, NULL);

	/* no directory there: no items under it */
	if (r == -ENOENT || r == -ENOTDIR)
		r = 0;
	if (r == 0 && fflush(stdout) != 0)
		r = -errno;
	if (r == -EPIPE)
		return 1; /* the reader went away (| head): say nothing */
	if (r == -EINVAL || r == -ENAMETOOLONG) {
		fprintf(stderr, "tierfs ls: bad prefix '%s': %s\n", prefix,
			"an ID naming a directory (user, user.sub; no "
			"leading, trailing or doubled dot)");
		return 2;
	}
	if (r < 0) {
		fprintf(stderr, "tierfs ls: cannot list '%s': %s\n", prefix,
			strerror(-r));
		return 1;
	}
	return 0;
}

/* A computed xattr of @ino as a string ("" when it cannot be read). */
static void xattr_str(struct eng *e, uint64_t ino, const char *name, char *buf,
		      size_t cap)
{
	ssize_t n = eng_getxattr(e, ino, name, buf, cap - 1);

	buf[n > 0 ? n : 0] = '\0';
}

static int do_stat(struct icmd *c, struct eng *e)
{
	const char *id = c->pos[0];
	char hash[65], status[32], tiers[32], mtime[64];
	struct eng_attr a;
	struct tm tm;
	time_t secs;
	int r = eng_lookup_id(e, id, c->binary ? ITEM_BINARY : ITEM_JSON, &a);

	if (r == -ENOENT || r == -ENOTDIR || r == -EISDIR)
		return report_missing(c, e, id, r);
	if (r < 0) {
		fprintf(stderr, "tierfs stat: cannot look up '%s': %s\n", id,
			strerror(-r));
		return 1;
	}
	xattr_str(e, a.ino, "user.tierfs.hash", hash, sizeof(hash));
	xattr_str(e, a.ino, "user.tierfs.status", status, sizeof(status));
	xattr_str(e, a.ino, "user.tierfs.tiers", tiers, sizeof(tiers));
	eng_forget(e, a.ino, 1);
	/* floor division: a time before 1970 keeps a positive fraction */
	secs = (time_t)(a.mtime_ns / 1000000000 -
			(a.mtime_ns % 1000000000 < 0));
	gmtime_r(&secs, &tm);
	snprintf(mtime + strftime(mtime, 32, "%Y-%m-%dT%H:%M:%S", &tm), 32,
		 ".%09lldZ",
		 (long long)(a.mtime_ns - (int64_t)secs * 1000000000));
	if (c->json) {
		json_t *j = json_pack(
			"{s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:I, s:I}",
			"id", id, "kind", kind_word(a.kind), "version",
			(json_int_t)a.version, "size", (json_int_t)a.size,
			"hash", hash, "status", status, "tiers", tiers, "mtime",
			mtime, "mtime_ns", (json_int_t)a.mtime_ns, "inode",
			(json_int_t)a.ino);

		r = j ? json_dumpf(j, stdout,
				   JSON_INDENT(2) | JSON_PRESERVE_ORDER)
		      : -1;
		json_decref(j);
		if (r == 0)
			putchar('\n');
	} else {
		printf("id: %s\nkind: %s\nversion: %llu\nsize: %llu\n"
		       "hash: %s\nstatus: %s\ntiers: %s\nmtime: %s\n"
		       "mtime_ns: %lld\ninode: %llu\n",
		       id, kind_word(a.kind), (unsigned long long)a.version,
		       (unsigned long long)a.size, hash, status, tiers, mtime,
		       (long long)a.mtime_ns, (unsigned long long)a.ino);
	}
	if (r < 0 || fflush(stdout) != 0) {
		fprintf(stderr, "tierfs stat: cannot write to stdout\n");
		return 1;
	}
	return 0;
}

int tfs_items_cmd(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct icmd c = {0};
	struct eng *e = NULL;
	bool parsed = false;
	char *data = NULL;
	size_t len = 0;
	int r, ret = 2;

	for (size_t i = 0; i < sizeof(icmd_names) / sizeof(*icmd_names); i++)
		if (strcmp(argv[1], icmd_names[i]) == 0)
			c.verb = (enum icmd_verb)i;
	c.name = icmd_names[c.verb];
	/* a reader that goes away (tierfs ls | head) must not kill the
	 * call before it closes the engine and removes its log: writes
	 * fail with EPIPE instead */
	signal(SIGPIPE, SIG_IGN);
	if (fuse_opt_add_arg(&args, "tierfs") < 0)
		goto out;
	r = icmd_parse(&c, argc, argv, &args);
	for (int i = 2; i < argc; i++)
		tfs_mask_secrets(argv[i]);
	if (r != 0) {
		usage(r > 0 ? stdout : stderr);
		ret = r > 0 ? 0 : 2;
		goto out;
	}
	if (tfs_options_parse(&args, &c.o) < 0)
		goto out;
	parsed = true;
	if (args.argc > 1) {
		fprintf(stderr, "tierfs %s: unknown option '%s'\n", c.name,
			args.argv[args.argc - 1]);
		goto out;
	}
	if (c.verb != IC_LS && check_id(&c, c.pos[0]) < 0)
		goto out;
	if (c.verb == IC_PUT) {
		/* refused content never reaches the engine */
		r = read_input(&c, c.pos[1], c.o.eng.max_item_bytes, &data,
			       &len);
		if (r != 0) {
			ret = r > 0 ? 1 : 2;
			goto out;
		}
		if (!c.binary && !item_json_valid(data, len)) {
			fprintf(stderr,
				"tierfs put: '%s': not valid JSON (use "
				"--binary for other bytes): nothing written\n",
				c.pos[0]);
			ret = 1;
			goto out;
		}
	}

	if (make_wal_dir(&c) < 0)
		goto out;
	c.o.eng.oneshot = true;
	c.o.eng.must_exist = c.verb != IC_PUT;
	c.o.eng.wal_path = c.wal_dir;
	c.o.eng.log.fn = icmd_log;
	c.o.eng.log.arg = &c;
	r = eng_open(&c.o.eng, &e);
	if (r < 0) {
		fprintf(stderr, "tierfs %s: cannot open the store: %s\n",
			c.name, strerror(-r));
		goto out;
	}
	switch (c.verb) {
	case IC_PUT:
		ret = do_put(&c, e, data, len);
		break;
	case IC_GET:
		ret = do_get(&c, e);
		break;
	case IC_RM:
		ret = do_rm(&c, e);
		break;
	case IC_LS:
		ret = do_ls(&c, e);
		break;
	case IC_STAT:
		ret = do_stat(&c, e);
		break;
	}
	r = eng_close(e);
	if (r < 0 && ret == 0) {
		fprintf(stderr, "tierfs %s: closing the store failed: %s\n",
			c.name, strerror(-r));
		ret = 1;
	}
out:
	remove_wal_dir(&c);
	free(data);
	if (parsed)
		tfs_options_release(&c.o);
	fuse_opt_free_args(&args);
	return ret;
}
