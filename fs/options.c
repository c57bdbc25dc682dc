/*
 * options.c - parses tierfs's command line and -o options into the engine
 * configuration. Every option listed in tfs_usage() is parsed here and does
 * what the README says; values are checked strictly (a number with trailing
 * garbage is an error).
 */
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "options.h"

enum {
	KEY_HELP,
	KEY_SQLITE,
	KEY_POSTGRES,
	KEY_REDIS,
	KEY_REDIS_PREFIX,
	KEY_L1_MAX_BYTES,
	KEY_BATCH_COUNT,
	KEY_BATCH_BYTES,
	KEY_BATCH_MS,
	KEY_MAX_ITEM,
	KEY_ENTRY_TIMEOUT,
	KEY_ATTR_TIMEOUT,
	KEY_UID,
	KEY_GID,
	KEY_FILE_MODE,
	KEY_DIR_MODE,
	KEY_WAL_PATH,
	KEY_WAL_MAX,
	KEY_FEED_SECONDS,
	KEY_FEED_RECORDS,
	KEY_MAX_OPEN,
	KEY_RO,
	KEY_RW,
	KEY_NOT_YET,
};

static const struct fuse_opt tfs_opts[] = {
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("--sqlite=", KEY_SQLITE),
	FUSE_OPT_KEY("sqlite=", KEY_SQLITE),
	FUSE_OPT_KEY("l1_max_bytes=", KEY_L1_MAX_BYTES),
	FUSE_OPT_KEY("batch_flush_count=", KEY_BATCH_COUNT),
	FUSE_OPT_KEY("batch_flush_bytes=", KEY_BATCH_BYTES),
	FUSE_OPT_KEY("batch_flush_ms=", KEY_BATCH_MS),
	FUSE_OPT_KEY("max_item_bytes=", KEY_MAX_ITEM),
	FUSE_OPT_KEY("max_open_bytes=", KEY_MAX_OPEN),
	FUSE_OPT_KEY("entry_timeout=", KEY_ENTRY_TIMEOUT),
	FUSE_OPT_KEY("attr_timeout=", KEY_ATTR_TIMEOUT),
	FUSE_OPT_KEY("uid=", KEY_UID),
	FUSE_OPT_KEY("gid=", KEY_GID),
	FUSE_OPT_KEY("file_mode=", KEY_FILE_MODE),
	FUSE_OPT_KEY("dir_mode=", KEY_DIR_MODE),
	/* the store, Redis and log options; --config (a JSON file of options)
	 * is not built yet and is refused by name (docs/design.md §9) */
	FUSE_OPT_KEY("--postgres=", KEY_POSTGRES),
	FUSE_OPT_KEY("postgres=", KEY_POSTGRES),
	FUSE_OPT_KEY("--redis=", KEY_REDIS),
	FUSE_OPT_KEY("redis=", KEY_REDIS),
	FUSE_OPT_KEY("--config=", KEY_NOT_YET),
	FUSE_OPT_KEY("wal_path=", KEY_WAL_PATH),
	FUSE_OPT_KEY("wal_max_bytes=", KEY_WAL_MAX),
	FUSE_OPT_KEY("feed_keep_seconds=", KEY_FEED_SECONDS),
	FUSE_OPT_KEY("feed_keep_records=", KEY_FEED_RECORDS),
	FUSE_OPT_KEY("redis_prefix=", KEY_REDIS_PREFIX),
	/* mount options that tierfs notes and passes on to the kernel */
	FUSE_OPT_KEY("ro", KEY_RO),
	FUSE_OPT_KEY("rw", KEY_RW),
	FUSE_OPT_END,
};

/*
 * Options an /etc/fstab line may carry that mean nothing to tierfs, accepted
 * and dropped: mount(8) and mount.fuse3 remove most of them before tierfs
 * runs, but not the atime ones (tierfs always mounts noatime: only
 * utimensat sets atime), and other callers remove none. Also every "x-*"
 * and "comment=*".
 */
static const char *const fstab_only_opts[] = {
	"defaults",    "auto",		"noauto",   "nofail",
	"_netdev",     "user",		"nouser",   "users",
	"owner",       "group",		"relatime", "norelatime",
	"strictatime", "nostrictatime", "lazytime", "nolazytime",
	"diratime",    "nodiratime",	NULL,
};

static int is_fstab_only(const char *opt)
{
	if (strncmp(opt, "x-", 2) == 0 || strncmp(opt, "comment=", 8) == 0)
		return 1;
	for (int i = 0; fstab_only_opts[i]; i++)
		if (strcmp(opt, fstab_only_opts[i]) == 0)
			return 1;
	return 0;
}

struct parse_state {
	struct tfs_options *o;
	char *store; /* the first positional argument, when two are given */
	char *mountpoint;
	int positional;
	int failed;
};

void tfs_usage(const char *prog)
{
	printf("usage: %s [OPTIONS] [STORE] MOUNTPOINT\n"
	       "       tierfs status [--json] MOUNTPOINT     a mount's state\n"
	       "       tierfs hash [--progress] PATH...      Merkle hash of "
	       "any tree\n"
	       "       tierfs verify [--repair] [--quick] [--progress] "
	       "STORE_OPTIONS\n"
	       "                                             compare Redis "
	       "with L3 (--help)\n"
	       "       tierfs put [--binary] STORE_OPTIONS ID [FILE]\n"
	       "                                             write an item "
	       "(FILE or stdin); exit\n"
	       "                                             0 once L3 "
	       "committed it\n"
	       "       tierfs get [--binary] STORE_OPTIONS ID\n"
	       "                                             an item's content "
	       "on stdout\n"
	       "       tierfs rm [--binary] STORE_OPTIONS ID remove an item\n"
	       "       tierfs ls STORE_OPTIONS [PREFIX]      the IDs under "
	       "PREFIX, one a line\n"
	       "       tierfs stat [--binary] [--json] STORE_OPTIONS ID\n"
	       "                                             version, hash, "
	       "size, kind, status\n"
	       "                                             (put, get, rm, "
	       "ls, stat: --help)\n"
	       "\n"
	       "store:\n"
	       "    --sqlite=FILE, -o sqlite=FILE   L3 SQLite database "
	       "(env TIERFS_SQLITE;\n"
	       "                                    default "
	       "$XDG_DATA_HOME/tierfs/tierfs.db)\n"
	       "    --postgres=URI, -o postgres=URI L3 PostgreSQL (env "
	       "TIERFS_POSTGRES; libpq's\n"
	       "                                    PG* variables and "
	       "~/.pgpass apply)\n"
	       "    --redis=URL, -o redis=URL       L2 Redis cache, "
	       "redis://[:password@]host:port[/db]\n"
	       "                                    (env TIERFS_REDIS)\n"
	       "    STORE                           sqlite:FILE or FILE, "
	       "as mount.fuse3 passes it\n"
	       "\n"
	       "tierfs -o options:\n"
	       "    l1_max_bytes=N        L1 cache bound in bytes (268435456)\n"
	       "    batch_flush_count=N   flush after N changes (1000)\n"
	       "    batch_flush_bytes=N   flush after N bytes (1048576)\n"
	       "    batch_flush_ms=N      flush changes N ms old (100)\n"
	       "    max_item_bytes=N      largest file in bytes (16777216)\n"
	       "    max_open_bytes=N      content files open for writing may "
	       "hold,\n"
	       "                          then ENOSPC (max(1 GiB, 4 x "
	       "max_item_bytes))\n"
	       "    entry_timeout=S       kernel name cache, seconds (300)\n"
	       "    attr_timeout=S        kernel attribute cache, seconds (300)\n"
	       "    ro                    read-only (EROFS); files are read "
	       "with no\n"
	       "                          per-open work and pages kept "
	       "across opens\n"
	       "    uid=N, gid=N          show every entry as owned by N\n"
	       "    file_mode=OCT         show every file with mode OCT\n"
	       "    dir_mode=OCT          show every directory with mode OCT\n"
	       "    wal_path=DIR          write-ahead log (FILE.tierfs-wal, "
	       "or\n"
	       "                          $XDG_STATE_HOME/tierfs/wal-HASH "
	       "with PostgreSQL)\n"
	       "    wal_max_bytes=N       log bound, then ENOSPC (1073741824)\n"
	       "    feed_keep_seconds=S   change feed kept at least (3600)\n"
	       "    feed_keep_records=N   change feed kept at most (1000000)\n"
	       "    redis_prefix=P        prefix of every Redis key (tierfs:)\n"
	       "\n"
	       "/etc/fstab options that mean nothing to tierfs (defaults, "
	       "auto, noauto,\n"
	       "nofail, _netdev, user, users, nouser, owner, group, x-*, "
	       "comment=*, and the\n"
	       "atime ones: relatime, strictatime, lazytime, ...) are accepted "
	       "and ignored.\n"
	       "\n"
	       "FUSE options:\n",
	       prog);
	fuse_cmdline_help();
	fuse_lowlevel_help();
}

static int parse_u64(const char *key, const char *s, int base, uint64_t max,
		     uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, base);
	if (errno || end == s || *end || *s == '-' || v > max) {
		fprintf(stderr, "tierfs: bad value '%s' for option '%s'\n", s,
			key);
		return -1;
	}
	*out = v;
	return 0;
}

static int parse_seconds(const char *key, const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= 0) || v > 1e6) {
		fprintf(stderr, "tierfs: bad value '%s' for option '%s'\n", s,
			key);
		return -1;
	}
	*out = v;
	return 0;
}

static int set_string(char **dst, const char *s)
{
	free(*dst);
	*dst = strdup(s);
	return *dst ? 0 : -1;
}

static int opt_proc(void *data, const char *arg, int key,
		    struct fuse_args *outargs)
{
	struct parse_state *st = data;
	struct tfs_options *o = st->o;
	struct eng_config *c = &o->eng;
	const char *val = strchr(arg, '=');
	uint64_t v = 0;
	int r = 0;

	val = val ? val + 1 : "";
	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		/* MOUNTPOINT, or STORE MOUNTPOINT: keep the last for libfuse */
		st->positional++;
		if (st->positional == 1)
			return set_string(&st->mountpoint, arg) ? -1 : 0;
		if (st->positional == 2) {
			free(st->store);
			st->store = st->mountpoint;
			st->mountpoint = strdup(arg);
			return st->mountpoint ? 0 : -1;
		}
		fprintf(stderr, "tierfs: too many arguments: '%s'\n", arg);
		st->failed = 1;
		return -1;
	case KEY_HELP:
		o->show_help = 1;
		return 1; /* libfuse prints its part too */
	case KEY_SQLITE:
		r = set_string(&o->sqlite_path, val);
		break;
	case KEY_POSTGRES:
		r = set_string(&o->postgres, val);
		break;
	case KEY_REDIS:
		r = set_string(&o->redis, val);
		break;
	case KEY_REDIS_PREFIX:
		r = set_string(&o->redis_prefix, val);
		break;
	case KEY_L1_MAX_BYTES:
		r = parse_u64("l1_max_bytes", val, 10, SIZE_MAX, &v);
		c->l1_max_bytes = v;
		break;
	case KEY_BATCH_COUNT:
		r = parse_u64("batch_flush_count", val, 10, 10000000, &v);
		if (r == 0 && v == 0)
			r = parse_u64("batch_flush_count", "x", 10, 0, &v);
		c->batch_flush_count = v;
		break;
	case KEY_BATCH_BYTES:
		r = parse_u64("batch_flush_bytes", val, 10, SIZE_MAX, &v);
		if (r == 0 && v == 0)
			r = parse_u64("batch_flush_bytes", "x", 10, 0, &v);
		c->batch_flush_bytes = v;
		break;
	case KEY_BATCH_MS:
		r = parse_u64("batch_flush_ms", val, 10, 3600000, &v);
		c->batch_flush_ms = (uint32_t)v;
		break;
	case KEY_MAX_ITEM:
		r = parse_u64("max_item_bytes", val, 10, 1u << 30, &v);
		if (r == 0 && v == 0)
			r = parse_u64("max_item_bytes", "x", 10, 0, &v);
		c->max_item_bytes = v;
		break;
	case KEY_MAX_OPEN:
		r = parse_u64("max_open_bytes", val, 10, UINT64_MAX >> 2, &v);
		if (r == 0 && v == 0)
			r = parse_u64("max_open_bytes", "x", 10, 0, &v);
		c->max_open_bytes = v;
		break;
	case KEY_ENTRY_TIMEOUT:
		r = parse_seconds("entry_timeout", val, &o->entry_timeout);
		break;
	case KEY_ATTR_TIMEOUT:
		r = parse_seconds("attr_timeout", val, &o->attr_timeout);
		break;
	case KEY_UID:
		r = parse_u64("uid", val, 10, UINT32_MAX - 1, &v);
		c->force_uid = (int64_t)v;
		break;
	case KEY_GID:
		r = parse_u64("gid", val, 10, UINT32_MAX - 1, &v);
		c->force_gid = (int64_t)v;
		break;
	case KEY_FILE_MODE:
		r = parse_u64("file_mode", val, 8, 07777, &v);
		c->force_file_mode = (int32_t)v;
		break;
	case KEY_DIR_MODE:
		r = parse_u64("dir_mode", val, 8, 07777, &v);
		c->force_dir_mode = (int32_t)v;
		break;
	case KEY_WAL_PATH:
		r = set_string(&o->wal_path, val);
		break;
	case KEY_WAL_MAX:
		r = parse_u64("wal_max_bytes", val, 10, UINT64_MAX >> 2, &v);
		if (r == 0 && v == 0)
			r = parse_u64("wal_max_bytes", "x", 10, 0, &v);
		c->wal_max_bytes = v;
		break;
	case KEY_FEED_SECONDS:
		r = parse_u64("feed_keep_seconds", val, 10, UINT32_MAX, &v);
		if (r == 0 && v == 0)
			r = parse_u64("feed_keep_seconds", "x", 10, 0, &v);
		c->feed_keep_seconds = (uint32_t)v;
		break;
	case KEY_FEED_RECORDS:
		r = parse_u64("feed_keep_records", val, 10, INT64_MAX, &v);
		if (r == 0 && v == 0)
			r = parse_u64("feed_keep_records", "x", 10, 0, &v);
		c->feed_keep_records = v;
		break;
	case KEY_RO:
	case KEY_RW:
		/* the last one given wins, as for mount(8) */
		o->read_only = key == KEY_RO;
		return 1; /* the kernel mounts it read-only, or not */
	case KEY_NOT_YET:
		fprintf(stderr,
			"tierfs: option '%.*s' is not supported by this "
			"version: give the options on the command line\n",
			(int)(val - arg - 1), arg);
		r = -1;
		break;
	default:
		if (key == FUSE_OPT_KEY_OPT && is_fstab_only(arg))
			return 0; /* dropped */
		return 1; /* a FUSE or mount option: libfuse checks it */
	}
	if (r < 0)
		st->failed = 1;
	return r < 0 ? -1 : 0;
}

/*
 * Masks in @s the URI passwords that @orig (the same string, unmasked)
 * holds: "scheme://user:PASSWORD@host". The authority ends at '/', '?',
 * '#' or whitespace (RFC 3986; ',' may be in a password); the password
 * ends at its last '@', as l2r_parse_url() reads it. Every "://" is looked
 * at, also one inside the authority of an earlier one.
 */
static void mask_uri_passwords(char *s, const char *orig)
{
	for (const char *p = strstr(orig, "://"); p; p = strstr(p, "://")) {
		const char *auth = p + 3, *end = auth, *at = NULL, *colon;

		for (; *end && !strchr("/?#", *end) &&
		       !isspace((unsigned char)*end);
		     end++)
			if (*end == '@')
				at = end;
		colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
		if (colon)
			memset(s + (colon + 1 - orig), '*',
			       (size_t)(at - colon - 1));
		p = auth;
	}
}

/*
 * Masks in @s the values of the "password" keys that @orig holds (also
 * of keys ending in it, as sslpassword): in a URI query ("?password=X&"
 * or "&password=X#") up to '&', '#' or whitespace; otherwise as libpq
 * reads a key=value string: whitespace around '=', then a quoted value
 * ('x y', \' and \\ inside) or a value up to whitespace in which a
 * backslash escapes the next byte. Every "password" followed by '=' is
 * taken as a key, also one inside another value: where the real key is
 * depends on how the whole string parses, so each is masked on its own.
 */
static void mask_key_passwords(char *s, const char *orig)
{
	const char *p, *v, *end;

	for (p = strstr(orig, "password"); p;
	     p = strstr(p + strlen("password"), "password")) {
		bool query = p > orig && (p[-1] == '?' || p[-1] == '&');

		v = p + strlen("password");
		while (isspace((unsigned char)*v))
			v++;
		if (*v != '=')
			continue;
		v++;
		if (query) {
			for (end = v; *end && !strchr("&#", *end) &&
				      !isspace((unsigned char)*end);
			     end++)
				;
		} else {
			while (isspace((unsigned char)*v))
				v++;
			end = v;
			if (*end == '\'') {
				for (end++; *end && *end != '\''; end++)
					if (*end == '\\' && end[1])
						end++;
				if (*end)
					end++;
			} else {
				for (; *end && !isspace((unsigned char)*end);
				     end++)
					if (*end == '\\' && end[1])
						end++;
			}
		}
		memset(s + (v - orig), '*', (size_t)(end - v));
	}
}

void tfs_mask_secrets(char *s)
{
	/* Both passes read the string as it was given, so that neither is
	 * misled by the other's '*'s (a masked quote or backslash, a
	 * masked "password" key). */
	char *orig = strdup(s);

	mask_uri_passwords(s, orig ? orig : s);
	mask_key_passwords(s, orig ? orig : s);
	free(orig);
}

/* Makes $XDG_<kind>_HOME/tierfs (or ~/.local/<fallback>/tierfs) and writes
 * its path into @dir. */
static int xdg_dir(const char *env, const char *fallback, char *dir, size_t cap)
{
	const char *xdg = getenv(env), *home = getenv("HOME");

	if (xdg && *xdg)
		snprintf(dir, cap, "%s/tierfs", xdg);
	else if (home && *home)
		snprintf(dir, cap, "%s/.local/%s/tierfs", home, fallback);
	else
		return -1;
	/* mkdir -p */
	for (char *p = dir + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			mkdir(dir, 0755);
			*p = '/';
		}
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "tierfs: cannot create '%s': %s\n", dir,
			strerror(errno));
		return -1;
	}
	return 0;
}

/* $XDG_DATA_HOME/tierfs/tierfs.db, creating the directory. */
static char *default_db(void)
{
	char dir[4096], *path;

	if (xdg_dir("XDG_DATA_HOME", "share", dir, sizeof(dir)) < 0 ||
	    asprintf(&path, "%s/tierfs.db", dir) < 0)
		return NULL;
	return path;
}

/* $XDG_STATE_HOME/tierfs/wal-HASH, HASH naming the database (password
 * masked), so that each store gets its own log on this host. */
static char *default_pg_wal(const char *conninfo)
{
	uint8_t hash[ITEM_HASH_LEN];
	char dir[4096], hex[65], *masked, *path;

	if (xdg_dir("XDG_STATE_HOME", "state", dir, sizeof(dir)) < 0)
		return NULL;
	masked = strdup(conninfo);
	if (!masked)
		return NULL;
	tfs_mask_secrets(masked);
	item_hash(masked, strlen(masked), hash);
	free(masked);
	item_hash_hex(hash, hex);
	if (asprintf(&path, "%s/wal-%.16s", dir, hex) < 0)
		return NULL;
	return path;
}

/* Makes *@path (malloc()ed, may be NULL) absolute against the working
 * directory, and canonical (symlinks resolved) when it exists, so that two
 * spellings of one store derive one default log directory, whose lock
 * then refuses the second mount. Returns 0 or -1 with errno set. */
static int make_absolute(char **path)
{
	char *cwd, *abs;

	if (!*path || **path == '\0')
		return 0;
	abs = realpath(*path, NULL);
	if (abs) {
		free(*path);
		*path = abs;
		return 0;
	}
	if (**path == '/')
		return 0;
	cwd = getcwd(NULL, 0);
	if (!cwd)
		return -1;
	if (asprintf(&abs, "%s/%s", cwd, *path) < 0) {
		free(cwd);
		return -1;
	}
	free(cwd);
	free(*path);
	*path = abs;
	return 0;
}

int tfs_options_parse(struct fuse_args *args, struct tfs_options *o)
{
	struct parse_state st = {.o = o};
	const char *env = getenv("TIERFS_SQLITE");
	int r = -1;

	memset(o, 0, sizeof(*o));
	eng_config_init(&o->eng);
	/* long: the change feed tells the kernel what other writers change */
	o->entry_timeout = 300.0;
	o->attr_timeout = 300.0;
	if (fuse_opt_parse(args, &st, tfs_opts, opt_proc) < 0 || st.failed)
		goto out;
	if (st.mountpoint && fuse_opt_add_arg(args, st.mountpoint) < 0)
		goto out;
	if (o->show_help) {
		r = 0;
		goto out;
	}
	if (!o->redis && getenv("TIERFS_REDIS") && *getenv("TIERFS_REDIS"))
		o->redis = strdup(getenv("TIERFS_REDIS"));
	o->eng.redis = o->redis;
	o->eng.redis_prefix = o->redis_prefix;
	if (!o->postgres && !o->sqlite_path && getenv("TIERFS_POSTGRES") &&
	    *getenv("TIERFS_POSTGRES") && !st.store)
		o->postgres = strdup(getenv("TIERFS_POSTGRES"));
	if (o->postgres && o->sqlite_path) {
		fprintf(stderr,
			"tierfs: give --postgres or --sqlite, not both\n");
		goto out;
	}
	if (o->postgres) {
		if (!o->wal_path) {
			o->wal_path = default_pg_wal(o->postgres);
			o->default_wal = true;
		}
		if (!o->wal_path) {
			fprintf(stderr, "tierfs: no log directory: give "
					"-o wal_path=DIR\n");
			goto out;
		}
		o->eng.postgres = o->postgres;
		o->eng.wal_path = o->wal_path;
		r = 0;
		goto out;
	}
	if (!o->sqlite_path && st.store) {
		const char *s = st.store;
		struct stat sb;

		if (strncmp(s, "sqlite:", 7) == 0) {
			s += 7;
		} else if (!strchr(s, '/') && stat(s, &sb) != 0) {
			/* a mistyped command ("tierfs stats MNT") must not
			 * mount a new, empty store over MNT */
			fprintf(stderr,
				"tierfs: '%s' is neither a command nor an "
				"existing file; to make a new SQLite store "
				"there, give sqlite:%s or ./%s (tierfs --help)\n",
				s, s, s);
			goto out;
		}
		if (strstr(s, "://")) {
			tfs_mask_secrets(st.store);
			fprintf(stderr,
				"tierfs: store '%s' is not a SQLite file: give "
				"a PostgreSQL store as -o postgres=URI\n",
				st.store);
			goto out;
		}
		o->sqlite_path = strdup(s);
	}
	if (!o->sqlite_path && env && *env)
		o->sqlite_path = strdup(env);
	if (!o->sqlite_path) {
		o->sqlite_path = default_db();
		o->default_store = true;
	}
	if (!o->sqlite_path) {
		fprintf(stderr, "tierfs: no store: give --sqlite=FILE\n");
		goto out;
	}
	o->eng.sqlite_path = o->sqlite_path;
	o->eng.wal_path = o->wal_path;
	r = 0;
out:
	/* a daemon leaves its working directory: relative paths go first */
	if (r == 0 && (make_absolute(&o->sqlite_path) < 0 ||
		       make_absolute(&o->wal_path) < 0)) {
		fprintf(stderr, "tierfs: cannot resolve a relative path: %s\n",
			strerror(errno));
		r = -1;
	}
	o->eng.sqlite_path = o->sqlite_path;
	o->eng.wal_path = o->wal_path;
	free(st.store);
	free(st.mountpoint);
	return r;
}

/* Frees *@s after overwriting it: it may hold a password. */
static void free_secret(char **s)
{
	if (*s)
		explicit_bzero(*s, strlen(*s));
	free(*s);
	*s = NULL;
}

void tfs_options_release(struct tfs_options *o)
{
	free(o->sqlite_path);
	free_secret(&o->postgres);
	free_secret(&o->redis);
	free(o->redis_prefix);
	free(o->wal_path);
	o->sqlite_path = NULL;
	o->redis_prefix = NULL;
	o->wal_path = NULL;
}
