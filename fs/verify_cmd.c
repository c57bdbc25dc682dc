/*
 * verify_cmd.c - `tierfs verify [--repair] [--quick] [--progress] STORES`.
 *
 * Opens the L3 store and Redis named by the same options and environment
 * variables a mount takes (--postgres or --sqlite, --redis, -o
 * redis_prefix=...), compares them with verify_run() (engine/verify.h) and
 * prints one line per finding on stdout, then a summary. It talks to the
 * servers directly, so it runs with or without a mount; see verify.h for
 * what a live mount's writes meanwhile do to the report.
 *
 * Exit status: 0 when Redis is in step with L3, 1 when drift was found
 * (with --repair: found and repaired), 2 on a usage error or when a store
 * cannot be opened or fails during the walk.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "store.h"
#include "options.h"
#include "verify.h"
#include "verify_cmd.h"

struct vcmd {
	bool progress;
	bool tty;
	time_t last;
};

static void vcmd_log(void *arg, int level, const char *msg)
{
	if (level <= LOG_WARNING)
		fprintf(stderr, "tierfs verify: %s\n", msg);
}

static void vcmd_report(void *arg, const struct verify_finding *f)
{
	struct vcmd *c = arg;

	if (c->progress && c->tty)
		fputs("\r\033[K", stderr); /* clear the progress line */
	printf("%s: %s (inode %llu): %s%s\n", verify_what_name(f->what),
	       f->path, (unsigned long long)f->ino, f->detail,
	       f->repaired ? "; repaired" : "");
	fflush(stdout);
}

static void vcmd_progress(void *arg, const struct verify_progress *p)
{
	struct vcmd *c = arg;
	time_t now = time(NULL);

	if (!c->progress || now == c->last)
		return;
	c->last = now;
	fprintf(stderr, "%stierfs verify: %llu of %llu entries, %llu findings%s",
		c->tty ? "\r\033[K" : "",
		(unsigned long long)(p->dirs + p->files),
		(unsigned long long)p->total,
		(unsigned long long)p->findings, c->tty ? "" : "\n");
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: tierfs verify [--repair] [--quick] [--progress] "
		"STORE_OPTIONS\n"
		"Compares the Redis mirror with L3 (the truth), from the root "
		"down.\n"
		"  --repair     rewrite what differs in Redis from L3\n"
		"  --quick      skip subtrees whose mirrored Merkle hash "
		"equals L3's\n"
		"  --progress   report progress on stderr (always on a "
		"terminal)\n"
		"STORE_OPTIONS as for mounting: --postgres=CONNINFO or "
		"--sqlite=FILE,\n"
		"  --redis=URL, -o redis_prefix=PREFIX (or TIERFS_POSTGRES, "
		"TIERFS_REDIS)\n"
		"Exit status: 0 in step, 1 drift found (repaired with "
		"--repair), 2 error\n");
}

int tfs_verify_cmd(int argc, char **argv)
{
	struct verify_opts vo = {0};
	struct vcmd c = {0};
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct eng_log log = {vcmd_log, NULL};
	struct store *l3 = NULL;
	struct cache *l2 = NULL;
	struct store_config stores = {0};
	struct verify_progress p = {0};
	struct tfs_options o;
	bool parsed = false;
	int r, ret = 2;

	if (fuse_opt_add_arg(&args, "tierfs") < 0)
		return 2;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--repair") == 0) {
			vo.repair = true;
		} else if (strcmp(argv[i], "--quick") == 0) {
			vo.quick = true;
		} else if (strcmp(argv[i], "--progress") == 0) {
			c.progress = true;
		} else if (strcmp(argv[i], "--help") == 0 ||
			   strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			ret = 0;
			goto out;
		} else if (fuse_opt_add_arg(&args, argv[i]) < 0) {
			goto out;
		}
	}
	for (int i = 2; i < argc; i++)
		tfs_mask_secrets(argv[i]);
	if (tfs_options_parse(&args, &o) < 0)
		goto out;
	parsed = true;
	if (args.argc > 1) {
		fprintf(stderr, "tierfs verify: unknown argument '%s'\n",
			args.argv[1]);
		usage(stderr);
		goto out;
	}
	if (o.default_store) {
		/* comparing Redis with an unrelated default store would
		 * report drift that is not there (and --repair act on it) */
		fprintf(stderr, "tierfs verify: name the store Redis caches: "
				"--sqlite=FILE or --postgres=URI (or "
				"TIERFS_SQLITE, TIERFS_POSTGRES)\n");
		goto out;
	}
	if (!o.redis) {
		fprintf(stderr, "tierfs verify: no Redis to compare: give "
				"--redis=URL (or TIERFS_REDIS)\n");
		goto out;
	}
	c.tty = isatty(STDERR_FILENO);
	c.progress = c.progress || c.tty;

	/* must_exist: opening would create an empty store: there is none */
	stores.postgres = o.postgres;
	stores.sqlite_path = o.sqlite_path;
	stores.must_exist = true;
	stores.redis = o.redis;
	stores.redis_prefix = o.redis_prefix;
	r = store_open(&stores, &log, &l3, &l2);
	if (r < 0) {
		fprintf(stderr, "tierfs verify: cannot open the stores: %s\n",
			strerror(-r));
		goto out;
	}

	vo.report = vcmd_report;
	vo.progress = vcmd_progress;
	vo.arg = &c;
	r = verify_run(l3, l2, &vo, &p);
	if (c.progress && c.tty)
		fputs("\r\033[K", stderr);
	printf("checked %llu directories and %llu files%s: %llu findings, "
	       "%llu repaired\n",
	       (unsigned long long)p.dirs, (unsigned long long)p.files,
	       vo.quick ? " (quick)" : "", (unsigned long long)p.findings,
	       (unsigned long long)p.repaired);
	if (r < 0) {
		fprintf(stderr, "tierfs verify: stopped: %s\n", strerror(-r));
		goto out;
	}
	ret = p.findings ? 1 : 0;
out:
	cache_free(l2);
	store_free(l3);
	if (parsed)
		tfs_options_release(&o);
	fuse_opt_free_args(&args);
	return ret;
}
