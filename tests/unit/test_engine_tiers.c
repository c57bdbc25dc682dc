/*
 * test_engine_tiers.c - the engine's road to L3, seen from a store wrapper
 * (eng_config.wrap_l3, store_wrap.h) around a real SQLite store:
 *
 *  - every call the engine makes to L3 is counted in its metrics: after a
 *    workload that uses every kind of call, each tierfs_tier_calls_total
 *    of L3 equals the number of calls the wrapper saw of that kind;
 *  - an engine call that fails has changed nothing: with L3 refusing every
 *    batch (the wrapper fails apply with -EAGAIN, as an unreachable server
 *    does) and a small wal_max_bytes, the log fills; then create, mkdir,
 *    rename, setattr, setxattr and put fail with -ENOSPC, the engine still
 *    shows the old state, and after a reopen on a working L3 (which
 *    replays the log) the failed changes are absent and the earlier ones
 *    present;
 *  - a change L3 sets aside for good makes the eng_sync() that waited for
 *    it fail with -EIO; a refusal (EACCES) fails fsync and sync until it is
 *    fixed, and not after;
 *  - a listing whose prefetch failed reads the rows itself, or fails with
 *    EIO while L3 does and goes on once it answers, listing every name
 *    once.
 *
 * Waits are deadlines on conditions, never sleeps as synchronisation.
 * Exit status: 0 passed, 1 failed, 77 skipped. TEST_VERBOSE=1 shows the
 * engine's log lines.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "check.h"
#include "engine.h"
#include "store.h"
#include "store_wrap.h"

#define ROOT 1
#define DEADLINE_S 30

static char tmpdir[] = "/tmp/test_engine_tiers.XXXXXX";
static bool tmpdir_made;

static int rm_one(const char *path, const struct stat *sb, int type,
		  struct FTW *ftw)
{
	return remove(path);
}

static void cleanup(void)
{
	if (tmpdir_made)
		nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void log_fn(void *arg, int level, const char *msg)
{
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "log[%d]: %s\n", level, msg);
}

/* ---- the wrapper (store_wrap.h) ---- */

/* Poison: as a database constraint would, refuse every batch that puts an
 * entry named "poison...". */
static int poison_refuses(struct change *const *ch, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!ch[i]->deleted && strncmp(ch[i]->name, "poison", 6) == 0)
			return EINVAL;
	return 0;
}

/* The wrapper's counters and plan for the engine cfg_for() configures:
 * zeroed by each cfg_for(). */
static struct wrap_state wst;

/* ---- helpers ---- */

static const struct eng_ctx ctx = {.uid = 0, .gid = 0, .umask = 022};

static struct eng_config cfg_for(const char *name, int fail_apply)
{
	static char path[512];
	struct eng_config cfg;

	memset(&wst, 0, sizeof(wst));
	wst.refuse_apply = poison_refuses;
	if (fail_apply) /* every batch */
		wst.fault = (struct wrap_fault){
			.op = W_APPLY, .err = fail_apply, .k = 1, .sticky = true};

	snprintf(path, sizeof(path), "%s/%s.db", tmpdir, name);
	eng_config_init(&cfg);
	cfg.sqlite_path = path;
	cfg.batch_flush_ms = 3600000; /* nothing persists unless asked */
	cfg.batch_flush_count = 1000000;
	cfg.batch_flush_bytes = (size_t)1 << 30;
	cfg.l1_max_bytes = 1; /* reads of committed files go to L3 */
	cfg.log.fn = log_fn;
	cfg.wrap_l3 = store_wrap_l3;
	cfg.wrap_arg = &wst;
	return cfg;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits until the negative-lookup filter has scanned all of L3. */
static void wait_filter(struct eng *e)
{
	struct eng_counters c;
	double end = now_s() + DEADLINE_S;
	struct timespec pause = {0, 1000000};

	for (;;) {
		eng_get_counters(e, &c);
		if (c.filter_trusted)
			return;
		CHECK(now_s() < end);
		nanosleep(&pause, NULL); /* polling a condition, not a sync */
	}
}

/* tierfs_tier_calls_total of L3's @op in @e's metrics. */
static unsigned long long metric_calls(struct eng *e, const char *op)
{
	char *text, *p, key[128];
	unsigned long long v = ~0ull;
	size_t len;

	CHECK_EQ(eng_metrics_text(e, &text, &len), 0);
	snprintf(key, sizeof(key),
		 "\ntierfs_tier_calls_total{tier=\"l3\",op=\"%s\"} ", op);
	p = memmem(text, len, key, strlen(key));
	if (p)
		v = strtoull(p + strlen(key), NULL, 10);
	free(text);
	CHECK(v != ~0ull);
	return v;
}

static int list_count_fn(void *arg, const char *name,
			 const struct eng_attr *a, uint64_t next_off)
{
	(*(int *)arg)++;
	return 0;
}

static int count_entries(struct eng *e, uint64_t dir)
{
	struct eng_dir *d;
	int n = 0;

	CHECK_EQ(eng_opendir(e, dir, &d), 0);
	CHECK_EQ(eng_readdir(e, d, 0, false, list_count_fn, &n, NULL), 0);
	eng_releasedir(e, d);
	return n;
}

/* ---- a listing's prefetch when L3 fails ---- */

struct names {
	char (*v)[16];
	size_t n, stop; /* stop: accept this many per readdir call */
	size_t call;	/* accepted in this call */
	uint64_t next_off;
};

static int names_fn(void *arg, const char *name, const struct eng_attr *a,
		    uint64_t next_off)
{
	struct names *l = arg;

	if (l->call == l->stop)
		return 1;
	CHECK(l->n < 4000);
	snprintf(l->v[l->n++], sizeof(l->v[0]), "%s", name);
	l->call++;
	l->next_off = next_off;
	return 0;
}

/* One readdir call of @d from l->next_off, with the prefetch it reserves
 * run at once; returns the call's result. */
static int names_call(struct eng *e, struct eng_dir *d, struct names *l)
{
	bool pf = false;
	int r;

	l->call = 0;
	r = eng_readdir_names(e, d, l->next_off, names_fn, l, &pf);
	if (pf)
		eng_readdir_prefetch(e, d);
	return r;
}

/*
 * The first prefetch of a listing of 3,000 entries (its third L3 list
 * call) fails: once, and the next readdir call reads those rows itself;
 * or on until lifted, and the readdir call that needs the rows fails with
 * EIO, then goes on from where it was once L3 answers. Either way every
 * name is listed once, in order.
 */
static void test_prefetch_failures(void)
{
	for (int sticky = 0; sticky < 2; sticky++) {
		struct eng_config cfg = cfg_for(sticky ? "pf-sticky" : "pf-once",
						0);
		struct names l = {.stop = 100};
		struct eng_dir *d;
		struct eng_attr a;
		unsigned long long lookups;
		bool failed = false;
		struct eng *e;
		char id[32];
		int r;

		CHECK_EQ(eng_open(&cfg, &e), 0);
		for (int i = 0; i < 3000; i++) {
			snprintf(id, sizeof(id), "big.p%05d", i);
			CHECK_EQ(eng_put(e, id, ITEM_BINARY, "x", 1), 0);
		}
		CHECK_EQ(eng_close(e), 0);
		/* how many list calls a fresh engine's lookup of big makes (a
		 * page of the root), so that the plan, set with no engine
		 * running, can name the listing's third */
		CHECK_EQ(eng_open(&cfg, &e), 0);
		lookups = atomic_load(&wst.calls[W_LIST]);
		CHECK_EQ(eng_lookup(e, ROOT, "big", &a), 0);
		eng_forget(e, a.ino, 1);
		lookups = atomic_load(&wst.calls[W_LIST]) - lookups;
		CHECK_EQ(eng_close(e), 0);
		wst.fault = (struct wrap_fault){
			.op = W_LIST,
			.err = EIO,
			.k = atomic_load(&wst.calls[W_LIST]) + lookups + 3,
			.sticky = sticky};
		CHECK_EQ(eng_open(&cfg, &e), 0);
		CHECK_EQ(eng_lookup(e, ROOT, "big", &a), 0);
		l.v = calloc(4000, sizeof(*l.v));
		CHECK(l.v != NULL);
		CHECK_EQ(eng_opendir(e, a.ino, &d), 0);
		for (int calls = 0; calls < 100; calls++) {
			size_t before = l.n;

			r = names_call(e, d, &l);
			if (r == -EIO && sticky && !failed) {
				/* the rows the prefetch lost; the entries
				 * handed out before them stay consumed (a
				 * mount replies with them) */
				failed = true;
				wrap_lift(&wst);
				continue;
			}
			CHECK_EQ(r, 0);
			if (l.n == before)
				break;
		}
		eng_releasedir(e, d);
		CHECK_EQ(failed, (bool)sticky);
		CHECK(atomic_load(&wst.injected) >= 1);
		CHECK_EQ(l.n, (size_t)3000);
		for (size_t i = 0; i < l.n; i++) {
			snprintf(id, sizeof(id), "p%05zu", i);
			CHECK(strcmp(l.v[i], id) == 0);
		}
		free(l.v);
		eng_forget(e, a.ino, 1);
		CHECK_EQ(eng_close(e), 0);
	}
}

/* ---- inode blocks under concurrent creates ---- */

enum { PUT_THREADS = 8, PUTS_EACH = 1000 };

struct put_job {
	struct eng *e;
	int k;
};

static void *put_main(void *arg)
{
	struct put_job *j = arg;
	char id[64];

	for (int i = 0; i < PUTS_EACH; i++) {
		snprintf(id, sizeof(id), "t%d.i%05d", j->k, i);
		CHECK_EQ(eng_put(j->e, id, ITEM_BINARY, "x", 1), 0);
	}
	return NULL;
}

/* Creators that use up the block of inode numbers together reserve one
 * more block from L3 between them, not one each (each is a commit; the
 * others were dropped). */
static void test_inode_blocks_shared(void)
{
	struct eng_config cfg = cfg_for("inos", 0);
	struct put_job jobs[PUT_THREADS];
	pthread_t t[PUT_THREADS];
	unsigned long long before, calls, need;
	struct eng *e;

	CHECK_EQ(eng_open(&cfg, &e), 0);
	wait_filter(e);
	before = atomic_load(&wst.calls[W_ALLOC_INO]);
	for (int k = 0; k < PUT_THREADS; k++) {
		jobs[k] = (struct put_job){.e = e, .k = k};
		CHECK_EQ(pthread_create(&t[k], NULL, put_main, &jobs[k]), 0);
	}
	for (int k = 0; k < PUT_THREADS; k++)
		CHECK_EQ(pthread_join(t[k], NULL), 0);
	calls = atomic_load(&wst.calls[W_ALLOC_INO]) - before;
	/* the files and their directories, from blocks of 1024 (INO_BLOCK),
	 * and the flusher's spare block, if it ran meanwhile */
	need = (PUT_THREADS * (PUTS_EACH + 1) + 1023) / 1024;
	if (calls > need + 2)
		fprintf(stderr, "%llu blocks reserved for %d inodes\n", calls,
			PUT_THREADS * (PUTS_EACH + 1));
	CHECK(calls <= need + 2);
	CHECK_EQ(eng_sync(e), 0);
	CHECK_EQ(eng_close(e), 0);
}

/* ---- every call is counted ---- */

static void test_metrics_count_every_call(void)
{
	struct eng_config cfg = cfg_for("counts", 0);
	struct eng_attr a, root;
	struct eng_file *f;
	struct item *it;
	char val[80];
	struct eng *e;

	CHECK_EQ(eng_open(&cfg, &e), 0);
	wait_filter(e);
	CHECK_EQ(eng_put(e, "a.b.c", ITEM_JSON, "{\"c\":1}", 7), 0);
	CHECK_EQ(eng_mkdir(e, ROOT, "d", 0755, &ctx, &a), 0);
	CHECK_EQ(eng_create(e, ROOT, "f.json", 0644, O_WRONLY, &ctx, &a, &f),
		 0);
	CHECK_EQ(eng_write(e, f, "[1]", 3, 0), 3);
	CHECK_EQ(eng_flush(e, f), 0);
	eng_release(e, f);
	CHECK_EQ(eng_sync(e), 0);
	/* the nodes of a, b and c are gone: this looks them up and reads */
	CHECK_EQ(eng_get(e, "a.b.c", ITEM_JSON, &it), 0);
	CHECK_EQ(item_size(it), 7);
	item_unref(it);
	CHECK_EQ(eng_lookup(e, ROOT, "absent", &a), -ENOENT);
	CHECK_EQ(count_entries(e, ROOT), 3); /* a, d, f.json */
	CHECK_EQ(eng_rename(e, ROOT, "f.json", ROOT, "g.json", 0), 0);
	CHECK_EQ(eng_rmdir(e, ROOT, "d"), 0);
	CHECK_EQ(eng_getattr(e, ROOT, &root), 0);
	CHECK(eng_getxattr(e, ROOT, "user.tierfs.merkle", val, sizeof(val)) ==
	      64);

	for (int op = 0; op < W_COUNT; op++) {
		snprintf(check_context, sizeof(check_context), "l3 op %s",
			 wrap_op_names[op]);
		/* the workload used it (a lookup that misses the node
		 * table reads a page of its directory instead: dirsnap.c) */
		CHECK(wst.calls[op] > 0 || op == W_LOOKUP);
		CHECK_EQ(metric_calls(e, wrap_op_names[op]), wst.calls[op]);
	}
	check_context[0] = '\0';
	CHECK_EQ(eng_close(e), 0);
}

/* ---- a cold walk: one query per directory, not one per entry ---- */

#define WALK_FILES 100

static void test_cold_walk(void)
{
	struct eng_config cfg = cfg_for("walk", 0);
	unsigned long long before[W_COUNT], many;
	struct eng_counters cnt;
	struct eng_attr a, d;
	struct eng_file *f;
	char name[32], want[64], buf[64];
	struct eng *e;

	bool keep;

	cfg.l1_max_bytes = 64 << 20;
	CHECK_EQ(eng_open(&cfg, &e), 0);
	CHECK_EQ(eng_mkdir(e, ROOT, "d", 0755, &ctx, &d), 0);
	for (int i = 0; i < WALK_FILES; i++) {
		snprintf(name, sizeof(name), "f%03d", i);
		snprintf(want, sizeof(want), "content of file %d", i);
		CHECK_EQ(eng_create(e, d.ino, name, 0644, O_WRONLY, &ctx, &a,
				    &f),
			 0);
		CHECK_EQ(eng_write(e, f, want, strlen(want), 0),
			 (ssize_t)strlen(want));
		CHECK_EQ(eng_flush(e, f), 0);
		eng_release(e, f);
		eng_forget(e, a.ino, 1);
	}
	eng_forget(e, d.ino, 1);
	CHECK_EQ(eng_sync(e), 0);
	CHECK_EQ(eng_close(e), 0);

	/* a new engine: no node, nothing in L1 */
	CHECK_EQ(eng_open(&cfg, &e), 0);
	for (int op = 0; op < W_COUNT; op++)
		before[op] = wst.calls[op];
	many = wst.read_many;
	CHECK_EQ(eng_lookup(e, ROOT, "d", &d), 0);
	for (int i = 0; i < WALK_FILES; i++) { /* stat every file */
		snprintf(name, sizeof(name), "f%03d", (i * 37) % WALK_FILES);
		CHECK_EQ(eng_lookup(e, d.ino, name, &a), 0);
		CHECK_EQ(a.size, strlen("content of file ") +
					 (size_t)snprintf(buf, sizeof(buf), "%d",
							  (i * 37) % WALK_FILES));
	}
	CHECK_EQ(eng_lookup(e, d.ino, "absent", &a), -ENOENT);
	for (int i = 0; i < WALK_FILES; i++) { /* read every file */
		snprintf(name, sizeof(name), "f%03d", i);
		snprintf(want, sizeof(want), "content of file %d", i);
		CHECK_EQ(eng_lookup(e, d.ino, name, &a), 0);
		CHECK_EQ(eng_file_open(e, a.ino, O_RDONLY, &f, &keep), 0);
		CHECK_EQ(eng_read(e, f, buf, sizeof(buf), 0),
			 (ssize_t)strlen(want));
		CHECK(memcmp(buf, want, strlen(want)) == 0);
		eng_release(e, f);
	}
	/* the root's page and d's page; no lookup; one read of many */
	CHECK_EQ(wst.calls[W_LOOKUP] - before[W_LOOKUP], 0);
	CHECK_EQ(wst.calls[W_LIST] - before[W_LIST], 2);
	CHECK_EQ(wst.calls[W_READ] - before[W_READ], 0);
	CHECK_EQ(wst.read_many - many, 1);
	CHECK_EQ(metric_calls(e, "read_many"), 1);
	eng_get_counters(e, &cnt);
	CHECK_EQ(cnt.dir_loads, 2);
	/* d and each file (the filter may answer "absent"); then nodes */
	CHECK(cnt.dir_hits >= WALK_FILES + 1);
	CHECK_EQ(cnt.prefetched, WALK_FILES);
	CHECK_EQ(eng_close(e), 0);
}

/*
 * A snapshot grows from its directory's first page when a lookup asks for
 * a later name (dirsnap.c). 2,500 entries: the lookup of a name on the
 * third page makes the second page's query, which fails with EIO, once or
 * until lifted. The lookup is then answered by L3's lookup, right; the
 * snapshot stays as it was, and grows again (two pages) once L3 lists.
 */
static void test_snapshot_growth_failure(void)
{
	for (int sticky = 0; sticky < 2; sticky++) {
		struct eng_config cfg = cfg_for(sticky ? "grow-sticky" : "grow-once",
						0);
		unsigned long long lists, lookups;
		struct eng_counters cnt;
		struct eng_attr d, a;
		struct eng *e;
		char id[32];

		CHECK_EQ(eng_open(&cfg, &e), 0);
		for (int i = 0; i < 2500; i++) {
			snprintf(id, sizeof(id), "g.f%05d", i);
			CHECK_EQ(eng_put(e, id, ITEM_BINARY, "x", 1), 0);
		}
		CHECK_EQ(eng_close(e), 0);

		CHECK_EQ(eng_open(&cfg, &e), 0);
		CHECK_EQ(eng_lookup(e, ROOT, "g", &d), 0);
		CHECK_EQ(eng_lookup(e, d.ino, "f00010", &a), 0); /* page 1 */
		eng_forget(e, a.ino, 1);
		lists = atomic_load(&wst.calls[W_LIST]);
		lookups = atomic_load(&wst.calls[W_LOOKUP]);
		wst.fault = (struct wrap_fault){
			.op = W_LIST, .err = EIO, .k = lists + 1, .sticky = sticky};
		CHECK_EQ(eng_lookup(e, d.ino, "f02200", &a), 0);
		CHECK_EQ(a.size, 1);
		eng_forget(e, a.ino, 1);
		CHECK_EQ(atomic_load(&wst.injected), 1);
		CHECK_EQ(atomic_load(&wst.calls[W_LOOKUP]) - lookups, 1);
		wrap_lift(&wst);
		/* grows by the two pages after the first */
		eng_get_counters(e, &cnt);
		lists = cnt.dir_loads;
		CHECK_EQ(eng_lookup(e, d.ino, "f02300", &a), 0);
		eng_forget(e, a.ino, 1);
		eng_get_counters(e, &cnt);
		CHECK_EQ(cnt.dir_loads - lists, 2);
		CHECK_EQ(atomic_load(&wst.calls[W_LOOKUP]) - lookups, 1);
		eng_forget(e, d.ino, 1);
		CHECK_EQ(eng_close(e), 0);
	}
}

/* ---- a failed call changes nothing ---- */

#define NAME_LEN 12 /* every name below has this many bytes */

static void test_failed_changes_leave_nothing(void)
{
	struct eng_config cfg = cfg_for("full", EAGAIN);
	struct eng_setattr sa = {0};
	struct eng_attr a, before, after;
	struct eng_file *f = NULL;
	char name[NAME_LEN + 1], val[16];
	struct item *it;
	struct eng *e;
	int made = 0, r;

	cfg.wal_max_bytes = 16384;
	CHECK_EQ(eng_open(&cfg, &e), 0);
	/* L3 refuses every batch: the log only fills */
	for (;;) {
		snprintf(name, sizeof(name), "dir-%08d", made);
		r = eng_mkdir(e, ROOT, name, 0755, &ctx, &a);
		if (r < 0)
			break;
		made++;
		CHECK(made < 10000);
	}
	CHECK_EQ(r, -ENOSPC);
	CHECK(made > 10);
	CHECK_EQ(eng_lookup(e, ROOT, name, &a), -ENOENT);
	/* a mkdir logs two records (the entry, its parent's new times): fill
	 * what is left with one-record changes (a chmod of a directory of a
	 * name as long), until not even one fits */
	CHECK_EQ(eng_lookup(e, ROOT, "dir-00000001", &a), 0);
	sa.set_mode = true;
	for (int i = 0;; i++) {
		sa.mode = i % 2 ? 0700 : 0750;
		r = eng_setattr(e, a.ino, NULL, &sa, &ctx, &after);
		if (r < 0)
			break;
		CHECK(i < 10000);
	}
	CHECK_EQ(r, -ENOSPC);
	sa.set_mode = false;

	/* records at least as large as a chmod's: all refused */
	CHECK_EQ(eng_create(e, ROOT, "file-0000000", 0644, O_WRONLY, &ctx, &a,
			    &f),
		 -ENOSPC);
	CHECK_EQ(eng_lookup(e, ROOT, "file-0000000", &a), -ENOENT);
	CHECK_EQ(eng_put(e, "item-0000000", ITEM_BINARY, "x", 1), -ENOSPC);
	CHECK_EQ(eng_lookup(e, ROOT, "item-0000000", &a), -ENOENT);
	CHECK_EQ(eng_rename(e, ROOT, "dir-00000000", ROOT, "ren-00000000", 0),
		 -ENOSPC);
	CHECK_EQ(eng_lookup(e, ROOT, "ren-00000000", &a), -ENOENT);
	CHECK_EQ(eng_lookup(e, ROOT, "dir-00000000", &before), 0);
	sa.set_mode = true;
	sa.mode = 0700;
	CHECK_EQ(eng_setattr(e, before.ino, NULL, &sa, &ctx, &a), -ENOSPC);
	sa.set_mode = false;
	sa.set_mtime = true;
	sa.mtime_ns = 86400LL * 1000000000;
	CHECK_EQ(eng_setattr(e, before.ino, NULL, &sa, &ctx, &a), -ENOSPC);
	sa.set_mtime = false;
	sa.set_atime = true; /* touch -a */
	sa.atime_ns = 86400LL * 1000000000;
	CHECK_EQ(eng_setattr(e, before.ino, NULL, &sa, &ctx, &a), -ENOSPC);
	sa.set_atime = false;
	CHECK_EQ(eng_setxattr(e, before.ino, "user.x", "value", 5, 0),
		 -ENOSPC);
	CHECK_EQ(eng_setxattr(e, before.ino, "user.tierfs.state", "s", 1, 0),
		 -ENOSPC);
	CHECK_EQ(eng_getattr(e, before.ino, &after), 0);
	CHECK_EQ(after.mode, before.mode);
	CHECK_EQ(after.mtime_ns, before.mtime_ns);
	CHECK_EQ(after.atime_ns, before.atime_ns);
	CHECK_EQ(after.ctime_ns, before.ctime_ns);
	CHECK_EQ(eng_getxattr(e, before.ino, "user.x", val, sizeof(val)),
		 -ENODATA);
	CHECK_EQ(eng_getxattr(e, before.ino, "user.tierfs.state", val,
			      sizeof(val)),
		 -ENODATA);
	CHECK_EQ(count_entries(e, ROOT), made);
	/* the engine cannot persist while L3 refuses: closing says so */
	CHECK(eng_close(e) < 0);

	/* L3 works again: the reopen replays the log */
	cfg = cfg_for("full", 0);
	cfg.wal_max_bytes = 16384;
	CHECK_EQ(eng_open(&cfg, &e), 0);
	CHECK_EQ(count_entries(e, ROOT), made);
	CHECK_EQ(eng_lookup(e, ROOT, "dir-00000000", &after), 0);
	CHECK_EQ(after.ino, before.ino);
	CHECK_EQ(after.mode, before.mode);
	CHECK_EQ(after.mtime_ns, before.mtime_ns);
	CHECK_EQ(eng_getxattr(e, after.ino, "user.x", val, sizeof(val)),
		 -ENODATA);
	CHECK_EQ(eng_getxattr(e, after.ino, "user.tierfs.state", val,
			      sizeof(val)),
		 -ENODATA);
	CHECK_EQ(eng_lookup(e, ROOT, "ren-00000000", &a), -ENOENT);
	CHECK_EQ(eng_lookup(e, ROOT, "file-0000000", &a), -ENOENT);
	CHECK_EQ(eng_get(e, "item-0000000", ITEM_BINARY, &it), -ENOENT);
	snprintf(name, sizeof(name), "dir-%08d", made);
	CHECK_EQ(eng_lookup(e, ROOT, name, &a), -ENOENT);
	CHECK_EQ(eng_close(e), 0);
}

/* ---- no poison: a change L3 refuses for good is set aside ---- */

static bool exists(struct eng *e, const char *name, struct eng_attr *a)
{
	return eng_lookup(e, ROOT, name, a) == 0;
}

static unsigned long long quarantined(struct eng *e)
{
	json_t *j, *q;
	char *text;
	size_t len;
	long long v;

	CHECK_EQ(eng_status_json(e, &text, &len), 0);
	j = json_loadb(text, len, 0, NULL);
	free(text);
	CHECK(j != NULL);
	q = json_object_get(json_object_get(j, "quarantine"), "changes");
	CHECK(json_is_integer(q));
	v = json_integer_value(q);
	json_decref(j);
	return (unsigned long long)v;
}

static void put_ok(struct eng *e, const char *name, const char *data)
{
	struct eng_file *f;
	struct eng_attr a;

	CHECK_EQ(eng_create(e, ROOT, name, 0644, O_WRONLY, &ctx, &a, &f), 0);
	CHECK_EQ(eng_write(e, f, data, strlen(data), 0), (long long)strlen(data));
	CHECK_EQ(eng_flush(e, f), 0);
	eng_release(e, f);
}

static void test_poison_is_set_aside(void)
{
	struct eng_config cfg = cfg_for("poison", 0);
	char path[600];
	struct eng_attr a;
	struct item *it;
	struct stat st;
	struct eng *e;

	CHECK_EQ(eng_open(&cfg, &e), 0);
	put_ok(e, "x.json", "1");
	CHECK_EQ(eng_sync(e), 0);
	/* one batch: a poisoned create among a move that frees a name and a
	 * create that takes it (they only go together), and plain creates */
	put_ok(e, "a.json", "2");
	CHECK_EQ(eng_rename(e, ROOT, "x.json", ROOT, "z.json", 0), 0);
	put_ok(e, "x.json", "3");
	put_ok(e, "poison.json", "4");
	put_ok(e, "b.json", "5");
	/* the sync waited for the poisoned change: set aside, not durable */
	CHECK_EQ(eng_sync(e), -EIO);
	CHECK_EQ(quarantined(e), 1);
	CHECK_EQ(eng_sync(e), 0); /* nothing waits: the poison is aside */
	snprintf(path, sizeof(path), "%s.tierfs-wal/quarantine.log",
		 cfg.sqlite_path);
	CHECK_EQ(stat(path, &st), 0);
	CHECK(st.st_size > 0);
	/* more changes go through */
	put_ok(e, "c.json", "6");
	CHECK_EQ(eng_sync(e), 0);
	CHECK_EQ(eng_close(e), 0);

	cfg = cfg_for("poison", 0);
	CHECK_EQ(eng_open(&cfg, &e), 0);
	for (const char *const *n = (const char *const[]){"a.json", "z.json",
							  "x.json", "b.json",
							  "c.json", NULL};
	     *n; n++) {
		snprintf(check_context, sizeof(check_context), "%s", *n);
		CHECK(exists(e, *n, &a));
	}
	check_context[0] = '\0';
	CHECK(!exists(e, "poison.json", &a));
	CHECK_EQ(eng_get(e, "z", ITEM_JSON, &it), 0);
	CHECK(item_size(it) == 1 && *(const char *)item_data(it) == '1');
	item_unref(it);
	CHECK_EQ(eng_get(e, "x", ITEM_JSON, &it), 0);
	CHECK(item_size(it) == 1 && *(const char *)item_data(it) == '3');
	item_unref(it);
	CHECK_EQ(quarantined(e), 0); /* counted since open */
	CHECK_EQ(eng_close(e), 0);
}

/* A refusal of L3 (EACCES) is returned by fsync and sync while it lasts;
 * once fixed, the next fsync or sync waits for the flusher's next attempt
 * instead of returning the error an earlier attempt met. */
static void test_refusal_ends(void)
{
	struct eng_config cfg = cfg_for("refusal", EACCES);
	struct eng_file *f;
	struct eng_attr a;
	struct eng *e;

	CHECK_EQ(eng_open(&cfg, &e), 0);
	CHECK_EQ(eng_create(e, ROOT, "r.json", 0644, O_WRONLY, &ctx, &a, &f),
		 0);
	CHECK_EQ(eng_write(e, f, "1", 1, 0), 1);
	CHECK_EQ(eng_fsync(e, f), -EACCES);
	CHECK_EQ(eng_sync(e), -EACCES);
	wrap_lift(&wst);
	CHECK_EQ(eng_write(e, f, "2", 1, 0), 1);
	CHECK_EQ(eng_fsync(e, f), 0);
	CHECK_EQ(eng_sync(e), 0);
	eng_release(e, f);
	CHECK_EQ(eng_close(e), 0);
}

/* Replay at open sets a poisoned change aside too: the store mounts. */
static void test_poison_in_the_log_still_mounts(void)
{
	struct eng_config cfg = cfg_for("poison-log", EAGAIN);
	struct eng_attr a;
	struct eng *e;

	CHECK_EQ(eng_open(&cfg, &e), 0);
	put_ok(e, "p.json", "1");
	put_ok(e, "poison.json", "2");
	put_ok(e, "q.json", "3");
	CHECK(eng_close(e) < 0); /* L3 away: all of it stays in the log */

	cfg = cfg_for("poison-log", 0);
	CHECK_EQ(eng_open(&cfg, &e), 0);
	CHECK_EQ(quarantined(e), 1);
	CHECK(exists(e, "p.json", &a));
	CHECK(exists(e, "q.json", &a));
	CHECK(!exists(e, "poison.json", &a));
	CHECK_EQ(eng_close(e), 0);
	/* and the log no longer holds it */
	CHECK_EQ(eng_open(&cfg, &e), 0);
	CHECK_EQ(quarantined(e), 0);
	CHECK_EQ(eng_close(e), 0);
}

int main(void)
{
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return TEST_SKIP;
	}
	tmpdir_made = true;
	atexit(cleanup);

	test_metrics_count_every_call();
	test_cold_walk();
	test_snapshot_growth_failure();
	test_inode_blocks_shared();
	test_failed_changes_leave_nothing();
	test_poison_is_set_aside();
	test_refusal_ends();
	test_poison_in_the_log_still_mounts();
	test_prefetch_failures();
	printf("test_engine_tiers: ok\n");
	return 0;
}
