/*
 * test_faults.c - fault injection under the engine: L3 (a real SQLite store
 * behind the test wrapper of store_wrap.h) fails the k-th call of one kind
 * with one class of error, while a fixed workload runs through the engine
 * API; afterwards nothing the engine acknowledged may be lost and nothing it
 * refused may be there.
 *
 * The workload (workload() below) makes directories, creates and rewrites
 * files (flush, fsync, flush then fsync, O_TRUNC, appends, a truncation
 * through a writer handle), puts, gets and deletes items by ID (implicit
 * directories made and taken along), renames (across directories, binary
 * to JSON, over an existing file, a directory with its children, a
 * directory over an empty one, RENAME_NOREPLACE; refused: into its own
 * subtree, over a directory whose children are only in L3), unlinks (one
 * of an open file, read on through its handle), rmdirs (one refused with
 * ENOTEMPTY, its children only in L3), chmods, sets mtimes, truncates,
 * sets user xattrs and the state tag, syncs, lists directories (plain and
 * plus), reads files and xattrs, reads the root's Merkle hash, and in the
 * middle closes the engine and opens it again (the "remount": the log is
 * replayed with the fault still armed; a failed open is tried once more,
 * then the rest of the workload is skipped). Every call's result is
 * compared with a model of the tree (path -> kind, content, mode, version,
 * xattrs, mtime; absent paths):
 *   - before any fault fired, every result is exactly the model's;
 *   - afterwards a call may also fail with the injected errno or EIO (a
 *     refusal: the model does not change), but a success must be the
 *     model's (right content, listing, xattr; no success where the model
 *     says the call must fail), and any other errno is a bug;
 *   - eng_fsync() of a dirty handle publishes, then waits for L3: when it
 *     fails, the version getattr shows tells whether the publish happened
 *     (then the change is acknowledged: readers saw it) or not;
 *   - eng_release() reports dropped changes exactly when the last publish
 *     of the working copy was refused;
 *   - after every step, statfs counts the model's entries and bytes (a
 *     refused change counted nothing).
 * Then the fault is lifted, eng_close() must persist everything (0), and
 * an engine opened without any fault (which replays the log) must show the
 * model exactly: every directory's listing, every entry's kind, mode, size,
 * version, content, xattrs (listed and read) and known mtime, and statfs
 * must count the model's entries (no orphan rows).
 *
 * The matrix: every kind of L3 call the engine makes (get, lookup, list,
 * read, alloc_ino, apply, stats, scan) x every class of error (EAGAIN:
 * unreachable or busy; EIO; ENOMEM; EACCES and EROFS: refusals; ENOSPC;
 * EEXIST: a constraint) x one-shot (only call k fails) and sticky (call k
 * and all later ones, until lifted) x every k from 1 to N, where N is how
 * many calls of that kind a clean run of the workload makes (counted by
 * the wrapper; the clean run is made twice and must count the same). For
 * apply and alloc_ino a third mode, "lost", lets call k reach the store and
 * then reports EAGAIN or EIO (the reply lost after the store acted). No k is
 * sampled: the whole matrix runs (FAULTS_SAMPLE=1 samples first, middle and
 * last k only; that is the default under ThreadSanitizer, where the matrix
 * takes minutes: FAULTS_FULL=1 runs it whole there). Apply runs the matrix a second time "eager": the flusher
 * persists every change on its own at once (batch_flush_count 1) and each
 * step first waits until it has, or L3 failed it; a failed batch is then
 * retried in the background, with back-off, while later steps run (so
 * which call is the k-th depends on timing: k is 1, 2, 3 and 8 more spread
 * up to N, and a fault that never fires is no error there).
 *
 * Each case runs in a forked child (under alarm() to catch a hang), so a
 * crash, an ASan report or a leak (LeakSanitizer checks at the child's
 * exit) is charged to its case; four run at a time, in /dev/shm when there
 * is one ($TMPDIR when set). Cases that fail for a known reason are listed
 * in known_failures: apply:EEXIST:sticky (the quarantine of changes L3
 * refuses for good loses acknowledged changes). FAULTS_CASE=op:err:mode:k[:eager]
 * (e.g. apply:EACCES:sticky:3) runs one case in-process, for a debugger;
 * FAULTS_OP=op runs the cases of that op only.
 * TEST_VERBOSE=1 shows the engine's log lines. Exit status: 0 passed, 1
 * failed, 77 skipped.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "check.h"
#include "engine.h"
#include "id.h"
#include "store.h"
#include "store_wrap.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

#define ROOT 1
#define UMASK 022
#define DEADLINE_S 30
#define CASE_ALARM_S 120 /* a case that takes longer hangs */
#define JOBS 4

/* Under ThreadSanitizer (slow, and there for races, not for the matrix) k
 * is sampled unless FAULTS_FULL is set. */
#if defined(__SANITIZE_THREAD__)
#define SAMPLE_BY_DEFAULT true
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SAMPLE_BY_DEFAULT true
#endif
#endif
#ifndef SAMPLE_BY_DEFAULT
#define SAMPLE_BY_DEFAULT false
#endif
/* The exit status of a case whose results differ from the model (a crash,
 * a sanitizer report, a harness check exit otherwise). */
#define EXIT_MODEL 3

/* UBSan reports fail the case instead of scrolling by. */
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void)
{
	return "halt_on_error=1:print_stacktrace=1";
}

static char tmpdir[256];
static bool tmpdir_made;

static int rm_one(const char *path, const struct stat *sb, int type,
		  struct FTW *ftw)
{
	return remove(path);
}

static void rm_tree(const char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static pid_t main_pid;

static void cleanup(void)
{
	if (tmpdir_made && getpid() == main_pid)
		rm_tree(tmpdir);
}

static void log_fn(void *arg, int level, const char *msg)
{
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "log[%d]: %s\n", level, msg);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the model ---- */

#define PATH_LEN 64
#define DATA_LEN 64
#define MAX_ENT 32
#define MAX_XA 4

struct xa {
	char name[32];
	char val[16];
};

struct ment {
	char path[PATH_LEN];
	enum item_kind kind;
	bool implicit; /* a directory eng_put() made */
	char data[DATA_LEN];
	size_t len;
	uint32_t mode; /* permission bits */
	uint64_t version;
	struct xa xa[MAX_XA];
	int nxa;
	bool mtime_known;
	int64_t mtime_ns;
};

struct model {
	struct ment e[MAX_ENT];
	int n;
};

static const char *base_of(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

static void parent_of(const char *path, char out[PATH_LEN])
{
	const char *s = strrchr(path, '/');
	size_t n = s ? (size_t)(s - path) : 0;

	memcpy(out, path, n);
	out[n] = '\0';
}

static struct ment *m_find(struct model *m, const char *path)
{
	for (int i = 0; i < m->n; i++)
		if (strcmp(m->e[i].path, path) == 0)
			return &m->e[i];
	return NULL;
}

static bool m_exists(struct model *m, const char *path)
{
	return !path[0] || m_find(m, path);
}

static bool m_is_dir(struct model *m, const char *path)
{
	struct ment *x = m_find(m, path);

	return !path[0] || (x && x->kind == ITEM_DIR);
}

static bool m_has_children(struct model *m, const char *path)
{
	char p[PATH_LEN];

	for (int i = 0; i < m->n; i++) {
		parent_of(m->e[i].path, p);
		if (strcmp(p, path) == 0)
			return true;
	}
	return false;
}

static struct ment *m_add(struct model *m, const char *path,
			  enum item_kind kind, uint32_t mode, bool implicit)
{
	struct ment *x;

	CHECK(m->n < MAX_ENT);
	x = &m->e[m->n++];
	memset(x, 0, sizeof(*x));
	snprintf(x->path, sizeof(x->path), "%s", path);
	x->kind = kind;
	x->mode = mode & 07777;
	x->implicit = implicit;
	x->version = 1;
	return x;
}

static void m_remove(struct model *m, struct ment *x)
{
	*x = m->e[--m->n];
}

/* Deletes @path and the implicit directories above it left empty. */
static void m_delete(struct model *m, const char *path)
{
	char p[PATH_LEN], up[PATH_LEN];
	struct ment *x;

	parent_of(path, p);
	m_remove(m, m_find(m, path));
	while (p[0] && (x = m_find(m, p)) && x->implicit &&
	       !m_has_children(m, p)) {
		m_remove(m, x);
		parent_of(p, up);
		memcpy(p, up, sizeof(p));
	}
}

static void m_set_data(struct ment *x, const char *data, size_t len)
{
	CHECK(len <= DATA_LEN);
	memcpy(x->data, data, len);
	x->len = len;
}

static void m_set_xattr(struct ment *x, const char *name, const char *val)
{
	int i;

	for (i = 0; i < x->nxa; i++)
		if (strcmp(x->xa[i].name, name) == 0)
			break;
	if (i == x->nxa) {
		CHECK(x->nxa < MAX_XA);
		x->nxa++;
	}
	snprintf(x->xa[i].name, sizeof(x->xa[i].name), "%s", name);
	snprintf(x->xa[i].val, sizeof(x->xa[i].val), "%s", val);
}

static const char *m_xattr(struct ment *x, const char *name)
{
	for (int i = 0; x && i < x->nxa; i++)
		if (strcmp(x->xa[i].name, name) == 0)
			return x->xa[i].val;
	return NULL;
}

/* What check_stem() refuses: another file with the same item ID. */
static bool m_stem_conflict(struct model *m, const char *dir, const char *name,
			    enum item_kind kind, const struct ment *ignore,
			    const struct ment *ignore2)
{
	char sib[PATH_LEN];
	size_t len = strlen(name);
	struct ment *x;

	if (kind == ITEM_DIR)
		return false;
	if (kind == ITEM_JSON)
		snprintf(sib, sizeof(sib), "%s%s%.*s", dir, dir[0] ? "/" : "",
			 (int)(len - 5), name);
	else
		snprintf(sib, sizeof(sib), "%s%s%s.json", dir,
			 dir[0] ? "/" : "", name);
	x = m_find(m, sib);
	return x && x->kind != ITEM_DIR && x != ignore && x != ignore2;
}

/* -ENOENT or -ENOTDIR when looking up every component of @path fails. */
static int m_walk(struct model *m, const char *path)
{
	char p[PATH_LEN];

	for (size_t i = 0; path[i]; i++) {
		if (path[i] != '/')
			continue;
		memcpy(p, path, i);
		p[i] = '\0';
		if (!m_exists(m, p))
			return -ENOENT;
		if (!m_is_dir(m, p))
			return -ENOTDIR;
	}
	return m_exists(m, path) ? 0 : -ENOENT;
}

/* ---- one run of the workload ---- */

struct run {
	char label[96]; /* the case */
	char dir[PATH_MAX];
	char db[PATH_MAX];
	struct eng_config cfg;
	struct wrap_state st;
	struct eng *e;
	struct model m;
	int step;
	const char *what;
	int refused; /* calls the fault made fail */
	bool eager;  /* the flusher persists each change on its own */
};

static const struct eng_ctx ctx = {.uid = 0, .gid = 0, .umask = UMASK};

static void fail(struct run *R, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));
static void fail(struct run *R, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "FAIL [%s] step %d (%s): ", R->label, R->step,
		R->what ? R->what : "-");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	/* the engine's threads end, and what it holds is freed, so that a
	 * sanitizer reports only what is wrong */
	if (R->e) {
		eng_close(R->e);
		R->e = NULL;
	}
	exit(EXIT_MODEL);
}

#define CHECK_RUN(R, cond)                                                     \
	do {                                                                   \
		if (!(cond))                                                   \
			fail(R, "%s:%d: check failed: %s", __FILE__, __LINE__, \
			     #cond);                                           \
	} while (0)

static const char *err_name(long r)
{
	static char buf[8][48];
	static int next;
	char *b = buf[next++ % 8];

	if (r >= 0)
		snprintf(b, 48, "%ld", r);
	else
		snprintf(b, 48, "-%s", strerrorname_np((int)-r)
					     ? strerrorname_np((int)-r)
					     : "?");
	return b;
}

/*
 * Checks result @r of a call whose model result is @want (>= 0: success,
 * that value). Returns true when the call succeeded as the model says.
 * Before any fault fired the result must be @want; after, the call may also
 * fail with the injected errno or EIO (a refusal).
 */
static bool expect(struct run *R, long r, long want)
{
	int err = R->st.fault.err;

	if (r == want)
		return want >= 0;
	if (atomic_load(&R->st.injected) == 0)
		fail(R, "returned %s, want %s (no fault fired yet)",
		     err_name(r), err_name(want));
	if (r >= 0)
		fail(R, "returned %s, want %s", err_name(r), err_name(want));
	if (r != -err && r != -EIO)
		fail(R, "returned %s: want %s, or the fault's %s or -EIO",
		     err_name(r), err_name(want), err_name(-err));
	R->refused++;
	if (getenv("FAULTS_CASE"))
		printf("  step %d (%s): %s (the model: %s)\n", R->step, R->what,
		       err_name(r), err_name(want));
	return false;
}

/* Waits until the filter builder of a just opened engine has scanned L3
 * (scans before: @before) and, when the scan went through, trusts it: then
 * lookups no longer depend on its timing. */
static void wait_builder(struct run *R, struct eng *e, struct wrap_state *st,
			 uint64_t before)
{
	struct timespec pause = {0, 200000};
	double end = now_s() + DEADLINE_S;
	struct eng_counters c;

	while (atomic_load(&st->scans_ended) == before) {
		if (now_s() > end)
			fail(R, "the filter builder never finished");
		nanosleep(&pause, NULL); /* polling a condition */
	}
	if (atomic_load(&st->scan_last) < 0)
		return; /* failed: never trusted */
	for (;;) {
		eng_get_counters(e, &c);
		if (c.filter_trusted)
			return;
		if (now_s() > end)
			fail(R, "the filter is never trusted");
		nanosleep(&pause, NULL);
	}
}

/* Opens R->e (the fault armed); a failed open is tried once more (a
 * one-shot fault is spent by then). R->e stays NULL when both fail. */
static void r_open(struct run *R)
{
	R->what = "eng_open";
	for (int tries = 0; tries < 2; tries++) {
		uint64_t before = atomic_load(&R->st.scans_ended);
		int r = eng_open(&R->cfg, &R->e);

		if (r == 0) {
			wait_builder(R, R->e, &R->st, before);
			return;
		}
		R->e = NULL;
		expect(R, r, 0);
	}
}

/*
 * Eager runs: before a step, waits until the flusher has persisted every
 * change so far, or L3 failed it (then it retries in the background, with
 * back-off, while the next steps run). So each step's changes are a batch
 * of their own and the fault's k picks one.
 */
static void settle(struct run *R)
{
	struct timespec pause = {0, 100000};
	double end = now_s() + DEADLINE_S;

	for (;;) {
		json_int_t pending = -1;
		int up = -1;
		json_t *j;
		char *text;
		size_t len;

		CHECK_EQ(eng_status_json(R->e, &text, &len), 0);
		j = json_loadb(text, len, 0, NULL);
		free(text);
		CHECK(j);
		CHECK(json_unpack(j, "{s:{s:I}, s:{s:b}}", "queue",
				  "not_persisted", &pending, "l3", "up",
				  &up) == 0);
		json_decref(j);
		if (pending == 0 || !up)
			return;
		if (now_s() > end)
			fail(R, "the flusher never caught up");
		nanosleep(&pause, NULL); /* polling a condition */
	}
}

/* statfs counts what the model holds: a refused change did not count. */
static void check_statfs(struct run *R, struct eng *e)
{
	struct eng_stats sf;
	uint64_t bytes = 0;

	for (int i = 0; i < R->m.n; i++)
		bytes += R->m.e[i].len;
	CHECK_RUN(R, eng_statfs(e, &sf) == 0);
	if (sf.entries != (uint64_t)R->m.n || sf.bytes != bytes)
		fail(R, "statfs counts %llu entries, %llu bytes; the tree has "
			"%d, %llu",
		     (unsigned long long)sf.entries,
		     (unsigned long long)sf.bytes, R->m.n,
		     (unsigned long long)bytes);
}

static void step_start(struct run *R, const char *what)
{
	if (R->e)
		check_statfs(R, R->e); /* after the step before */
	if (R->eager && R->e)
		settle(R);
	R->step++;
	R->what = what;
}

/* ---- path walks: a lookup per component, forgotten afterwards ---- */

struct walk {
	uint64_t ino[8];
	int n;
};

static uint64_t walk_ino(const struct walk *w)
{
	return w->n ? w->ino[w->n - 1] : ROOT;
}

static void unwalk(struct run *R, struct walk *w)
{
	while (w->n)
		eng_forget(R->e, w->ino[--w->n], 1);
}

static int walk(struct run *R, const char *path, struct walk *w,
		struct eng_attr *out)
{
	char buf[PATH_LEN], *save = NULL;
	struct eng_attr a;
	int r;

	w->n = 0;
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *c = strtok_r(buf, "/", &save); c;
	     c = strtok_r(NULL, "/", &save)) {
		r = eng_lookup(R->e, walk_ino(w), c, &a);
		if (r < 0) {
			unwalk(R, w);
			return r;
		}
		CHECK(w->n < 8);
		w->ino[w->n++] = a.ino;
		if (out)
			*out = a;
	}
	if (!w->n && out)
		CHECK_EQ(eng_getattr(R->e, ROOT, out), 0);
	return 0;
}

/* Starts step @what: walks to @path. true when it is there, as the model
 * says; false when not (as the model says, or refused by the fault). */
static bool begin(struct run *R, const char *what, const char *path,
		  struct walk *w, struct eng_attr *a)
{
	step_start(R, what);
	if (!R->e)
		return false;
	return expect(R, walk(R, path, w, a), m_walk(&R->m, path));
}

/* Compares attributes @a of entry @x with the model. */
static void check_attr(struct run *R, const struct eng_attr *a,
		       const struct ment *x)
{
	if (a->kind != x->kind)
		fail(R, "%s: kind %d, want %d", x->path, a->kind, x->kind);
	if ((a->mode & 07777) != x->mode ||
	    (a->mode & S_IFMT) != (x->kind == ITEM_DIR ? S_IFDIR : S_IFREG))
		fail(R, "%s: mode %o, want %o", x->path, a->mode, x->mode);
	if (x->kind == ITEM_DIR)
		return;
	if (a->size != x->len)
		fail(R, "%s: size %llu, want %zu", x->path,
		     (unsigned long long)a->size, x->len);
	if (a->version != x->version)
		fail(R, "%s: version %llu, want %llu", x->path,
		     (unsigned long long)a->version,
		     (unsigned long long)x->version);
	if (x->mtime_known && a->mtime_ns != x->mtime_ns)
		fail(R, "%s: mtime %lld, want %lld", x->path,
		     (long long)a->mtime_ns, (long long)x->mtime_ns);
}

static void check_data(struct run *R, const struct ment *x, const void *data,
		       size_t len)
{
	if (len != x->len || memcmp(data, x->data, len) != 0)
		fail(R, "%s: content \"%.*s\", want \"%.*s\"", x->path,
		     (int)len, (const char *)data, (int)x->len, x->data);
}

/* ---- the steps ---- */

static void st_mkdir(struct run *R, const char *path, uint32_t mode)
{
	char par[PATH_LEN];
	struct eng_attr a;
	struct walk w;
	int r;

	parent_of(path, par);
	if (!begin(R, "mkdir", par, &w, NULL))
		return;
	r = eng_mkdir(R->e, walk_ino(&w), base_of(path), mode, &ctx, &a);
	if (expect(R, r, m_exists(&R->m, path) ? -EEXIST : 0)) {
		struct ment *x = m_add(&R->m, path, ITEM_DIR, mode & ~UMASK,
				       false);

		check_attr(R, &a, x);
		eng_forget(R->e, a.ino, 1);
	}
	unwalk(R, &w);
}

/* Creates @path and, with @data, writes, flushes and releases it. */
static void st_create(struct run *R, const char *path, const char *data)
{
	const char *name = base_of(path);
	enum item_kind kind = id_name_kind(name);
	char par[PATH_LEN];
	struct eng_file *f;
	struct eng_attr a;
	bool acked = true;
	struct ment *x;
	struct walk w;
	int r, want;

	parent_of(path, par);
	if (!begin(R, "create", par, &w, NULL))
		return;
	want = m_exists(&R->m, path) ||
			       m_stem_conflict(&R->m, par, name, kind, NULL,
					       NULL)
		       ? -EEXIST
		       : 0;
	r = eng_create(R->e, walk_ino(&w), name, 0644, O_WRONLY, &ctx, &a,
		       &f);
	if (!expect(R, r, want)) {
		unwalk(R, &w);
		return;
	}
	x = m_add(&R->m, path, kind, 0644 & ~UMASK, false);
	check_attr(R, &a, x);
	if (data) {
		size_t len = strlen(data);

		R->what = "create: write";
		if (expect(R, eng_write(R->e, f, data, len, 0), (long)len)) {
			R->what = "create: flush";
			acked = expect(R, eng_flush(R->e, f), 0);
			if (acked) {
				m_set_data(x, data, len);
				x->version++;
			}
		} else {
			acked = false;
		}
	}
	R->what = "create: release";
	CHECK_RUN(R, eng_release(R->e, f) == !acked);
	eng_forget(R->e, a.ino, 1);
	unwalk(R, &w);
}

enum rewrite_how { RW_FLUSH, RW_FSYNC, RW_FLUSH_FSYNC, RW_APPEND };

/* Opens existing file @path for writing (O_TRUNC, or to append), writes
 * @data, publishes it as @how says and releases it. */
static void st_rewrite(struct run *R, const char *path, const char *data,
		       enum rewrite_how how)
{
	static const char *const names[] = {"rewrite+flush", "rewrite+fsync",
					    "rewrite+flush+fsync",
					    "append+flush"};
	size_t len = strlen(data);
	struct eng_attr a;
	struct eng_file *f;
	bool acked, keep;
	struct ment *x;
	struct walk w;
	off_t off;
	int r;

	if (!begin(R, names[how], path, &w, &a))
		return;
	x = m_find(&R->m, path);
	check_attr(R, &a, x);
	r = eng_file_open(R->e, a.ino,
			  O_WRONLY | (how == RW_APPEND ? 0 : O_TRUNC), &f,
			  &keep);
	if (!expect(R, r, 0)) {
		unwalk(R, &w);
		return;
	}
	off = how == RW_APPEND ? (off_t)x->len : 0;
	acked = expect(R, eng_write(R->e, f, data, len, off), (long)len);
	if (acked && how != RW_FSYNC) {
		acked = expect(R, eng_flush(R->e, f), 0);
		if (how == RW_FLUSH_FSYNC) /* durability only: no change */
			expect(R, eng_fsync(R->e, f), 0);
	} else if (acked) {
		r = eng_fsync(R->e, f);
		if (!expect(R, r, 0)) {
			/* published, then L3 failed, or not published? */
			struct eng_attr now;

			CHECK_RUN(R, eng_getattr(R->e, a.ino, &now) == 0);
			if (now.version != x->version &&
			    now.version != x->version + 1)
				fail(R, "version %llu after a failed fsync",
				     (unsigned long long)now.version);
			acked = now.version == x->version + 1;
		}
	}
	if (acked) {
		char buf[DATA_LEN];

		CHECK(off + len <= DATA_LEN);
		memcpy(buf, x->data, (size_t)off);
		memcpy(buf + off, data, len);
		m_set_data(x, buf, (size_t)off + len);
		x->version++;
		x->mtime_known = false;
	}
	R->what = "rewrite: release";
	CHECK_RUN(R, eng_release(R->e, f) == !acked);
	if (acked) {
		CHECK_RUN(R, eng_getattr(R->e, a.ino, &a) == 0);
		check_attr(R, &a, x);
	}
	unwalk(R, &w);
}

static void st_put(struct run *R, const char *id, enum item_kind kind,
		   const char *data)
{
	char path[PATH_LEN], p[PATH_LEN];
	struct ment *x;
	int r;

	step_start(R, "put");
	if (!R->e)
		return;
	CHECK(id_to_path(id, kind, path, sizeof(path)) > 0);
	r = eng_put(R->e, id, kind, data, strlen(data));
	if (!expect(R, r, 0))
		return;
	x = m_find(&R->m, path);
	if (x) {
		x->version++;
		x->mtime_known = false;
	} else {
		for (size_t i = 0; path[i]; i++) {
			if (path[i] != '/')
				continue;
			memcpy(p, path, i);
			p[i] = '\0';
			if (!m_find(&R->m, p))
				m_add(&R->m, p, ITEM_DIR, 0755, true);
		}
		x = m_add(&R->m, path, kind, 0644, false);
	}
	m_set_data(x, data, strlen(data));
}

static void st_get(struct run *R, const char *id, enum item_kind kind)
{
	char path[PATH_LEN];
	struct item *it;
	struct ment *x;
	int r;

	step_start(R, "get");
	if (!R->e)
		return;
	CHECK(id_to_path(id, kind, path, sizeof(path)) > 0);
	x = m_find(&R->m, path);
	r = eng_get(R->e, id, kind, &it);
	if (!expect(R, r, x ? 0 : -ENOENT))
		return;
	check_data(R, x, item_data(it), item_size(it));
	item_unref(it);
}

static void st_read(struct run *R, const char *path)
{
	char buf[DATA_LEN + 16];
	struct eng_attr a;
	struct eng_file *f;
	struct ment *x;
	struct walk w;
	ssize_t n;
	bool keep;

	if (!begin(R, "read", path, &w, &a))
		return;
	x = m_find(&R->m, path);
	check_attr(R, &a, x);
	if (expect(R, eng_file_open(R->e, a.ino, O_RDONLY, &f, &keep), 0)) {
		n = eng_read(R->e, f, buf, sizeof(buf), 0);
		if (expect(R, n, (long)x->len))
			check_data(R, x, buf, (size_t)n);
		CHECK_RUN(R, !eng_release(R->e, f));
	}
	unwalk(R, &w);
}

enum setattr_what { SA_MODE, SA_MTIME, SA_SIZE };

static void st_setattr(struct run *R, const char *path, enum setattr_what what,
		       uint64_t v)
{
	static const char *const names[] = {"chmod", "set mtime", "truncate"};
	struct eng_setattr sa = {0};
	struct eng_attr a;
	struct ment *x;
	struct walk w;

	if (!begin(R, names[what], path, &w, NULL))
		return;
	x = m_find(&R->m, path);
	sa.set_mode = what == SA_MODE;
	sa.set_mtime = what == SA_MTIME;
	sa.set_size = what == SA_SIZE;
	sa.mode = (uint32_t)v;
	sa.mtime_ns = (int64_t)v;
	sa.size = v;
	if (expect(R, eng_setattr(R->e, walk_ino(&w), NULL, &sa, &ctx, &a),
		   0)) {
		if (what == SA_MODE) {
			x->mode = (uint32_t)v & 07777;
		} else if (what == SA_MTIME) {
			x->mtime_known = true;
			x->mtime_ns = (int64_t)v;
		} else {
			char buf[DATA_LEN] = {0};

			memcpy(buf, x->data, x->len < v ? x->len : v);
			m_set_data(x, buf, v);
			x->version++;
			x->mtime_known = false;
		}
		check_attr(R, &a, x);
	}
	unwalk(R, &w);
}

static void st_setxattr(struct run *R, const char *path, const char *name,
			const char *val)
{
	struct walk w;
	int r;

	if (!begin(R, "setxattr", path, &w, NULL))
		return;
	r = eng_setxattr(R->e, walk_ino(&w), name, val, strlen(val), 0);
	if (expect(R, r, 0))
		m_set_xattr(m_find(&R->m, path), name, val);
	unwalk(R, &w);
}

static void st_getxattr(struct run *R, const char *path, const char *name)
{
	struct ment *x;
	const char *val;
	char buf[64];
	struct walk w;
	ssize_t n;

	if (!begin(R, "getxattr", path, &w, NULL))
		return;
	x = m_find(&R->m, path);
	val = m_xattr(x, name);
	n = eng_getxattr(R->e, walk_ino(&w), name, buf, sizeof(buf));
	if (expect(R, n, val ? (long)strlen(val) : -ENODATA) &&
	    memcmp(buf, val, (size_t)n) != 0)
		fail(R, "%s %s is \"%.*s\", want \"%s\"", path, name, (int)n,
		     buf, val);
	unwalk(R, &w);
}

/* The root's Merkle hash: waits for pending changes to be committed. */
static void st_merkle(struct run *R)
{
	char buf[80];
	struct walk w;

	if (!begin(R, "merkle", "", &w, NULL))
		return;
	expect(R, eng_getxattr(R->e, ROOT, "user.tierfs.merkle", buf,
			       sizeof(buf)),
	       64);
}

static void m_rename(struct model *m, const char *from, const char *to)
{
	size_t fl = strlen(from);
	struct ment *t = m_find(m, to);

	if (t)
		m_remove(m, t);
	for (int i = 0; i < m->n; i++) {
		struct ment *x = &m->e[i];
		char np[PATH_LEN];

		if (strcmp(x->path, from) == 0) {
			snprintf(x->path, sizeof(x->path), "%s", to);
			if (x->kind != ITEM_DIR)
				x->kind = id_name_kind(base_of(to));
		} else if (strncmp(x->path, from, fl) == 0 &&
			   x->path[fl] == '/') {
			snprintf(np, sizeof(np), "%s%s", to, x->path + fl);
			snprintf(x->path, sizeof(x->path), "%s", np);
		}
	}
}

static int want_rename(struct model *m, const char *from, const char *to,
		       unsigned flags)
{
	struct ment *s = m_find(m, from), *t = m_find(m, to);
	char tp[PATH_LEN];
	enum item_kind kind;
	size_t fl = strlen(from);

	if (!s)
		return -ENOENT;
	if (s == t)
		return 0;
	parent_of(to, tp);
	kind = s->kind == ITEM_DIR ? ITEM_DIR : id_name_kind(base_of(to));
	if (t && (flags & RENAME_NOREPLACE))
		return -EEXIST;
	if (s->kind == ITEM_DIR) {
		if (strncmp(to, from, fl) == 0 && to[fl] == '/')
			return -EINVAL;
		if (t && t->kind != ITEM_DIR)
			return -ENOTDIR;
		if (t && m_has_children(m, to))
			return -ENOTEMPTY;
		return 0;
	}
	if (t && t->kind == ITEM_DIR)
		return -EISDIR;
	if (m_stem_conflict(m, tp, base_of(to), kind, s, t))
		return -EEXIST;
	if (kind == ITEM_JSON && s->kind != ITEM_JSON &&
	    !item_json_valid(s->data, s->len))
		return -EINVAL;
	return 0;
}

static void st_rename(struct run *R, const char *from, const char *to,
		      unsigned flags)
{
	char fp[PATH_LEN], tp[PATH_LEN];
	struct walk w1, w2;
	int r;

	parent_of(from, fp);
	parent_of(to, tp);
	if (!begin(R, "rename", fp, &w1, NULL))
		return;
	r = walk(R, tp, &w2, NULL);
	if (expect(R, r, m_walk(&R->m, tp))) {
		r = eng_rename(R->e, walk_ino(&w1), base_of(from),
			       walk_ino(&w2), base_of(to), flags);
		if (expect(R, r, want_rename(&R->m, from, to, flags)))
			m_rename(&R->m, from, to);
		unwalk(R, &w2);
	}
	unwalk(R, &w1);
}

static void st_remove(struct run *R, const char *path, bool dir)
{
	struct ment *x = m_find(&R->m, path);
	char par[PATH_LEN];
	struct walk w;
	int r, want;

	parent_of(path, par);
	if (!begin(R, dir ? "rmdir" : "unlink", par, &w, NULL))
		return;
	if (!x)
		want = -ENOENT;
	else if (dir)
		want = x->kind != ITEM_DIR		 ? -ENOTDIR
		       : m_has_children(&R->m, path) ? -ENOTEMPTY
						     : 0;
	else
		want = x->kind == ITEM_DIR ? -EISDIR : 0;
	r = dir ? eng_rmdir(R->e, walk_ino(&w), base_of(path))
		: eng_unlink(R->e, walk_ino(&w), base_of(path));
	if (expect(R, r, want))
		m_delete(&R->m, path);
	unwalk(R, &w);
}

static void st_sync(struct run *R)
{
	step_start(R, "sync");
	if (R->e)
		expect(R, eng_sync(R->e), 0);
}

static void st_delete(struct run *R, const char *id, enum item_kind kind)
{
	char path[PATH_LEN];
	int r;

	step_start(R, "delete");
	if (!R->e)
		return;
	CHECK(id_to_path(id, kind, path, sizeof(path)) > 0);
	r = eng_delete(R->e, id, kind);
	if (expect(R, r, m_find(&R->m, path) ? 0 : -ENOENT))
		m_delete(&R->m, path);
}

/* Opens file @path for reading, unlinks it, reads the old content through
 * the handle (unlinking an open file keeps its content for the handle). */
static void st_unlink_open(struct run *R, const char *path)
{
	char buf[DATA_LEN + 16];
	struct ment old, *x;
	struct eng_attr a;
	struct eng_file *f;
	struct walk w;
	ssize_t n;
	bool keep;
	int r;

	if (!begin(R, "unlink an open file", path, &w, &a))
		return;
	x = m_find(&R->m, path);
	old = *x;
	check_attr(R, &a, x);
	if (expect(R, eng_file_open(R->e, a.ino, O_RDONLY, &f, &keep), 0)) {
		r = eng_unlink(R->e, w.n > 1 ? w.ino[w.n - 2] : ROOT,
			       base_of(path));
		if (expect(R, r, 0))
			m_delete(&R->m, path);
		n = eng_read(R->e, f, buf, sizeof(buf), 0);
		if (expect(R, n, (long)old.len))
			check_data(R, &old, buf, (size_t)n);
		CHECK_RUN(R, !eng_release(R->e, f));
	}
	unwalk(R, &w);
}

/* Opens file @path for writing and changes its size through the handle:
 * the last release publishes the truncation. */
static void st_ftruncate(struct run *R, const char *path, uint64_t size)
{
	struct eng_setattr sa = {.set_size = true, .size = size};
	struct eng_attr a, b;
	struct eng_file *f;
	struct ment *x;
	struct walk w;
	bool keep;

	if (!begin(R, "ftruncate", path, &w, &a))
		return;
	x = m_find(&R->m, path);
	if (expect(R, eng_file_open(R->e, a.ino, O_WRONLY, &f, &keep), 0)) {
		bool acked = expect(
			R, eng_setattr(R->e, a.ino, f, &sa, &ctx, &b), 0);

		CHECK_RUN(R, !eng_release(R->e, f));
		if (acked) {
			char buf[DATA_LEN] = {0};

			memcpy(buf, x->data, x->len < size ? x->len : size);
			m_set_data(x, buf, size);
			x->version++;
			x->mtime_known = false;
		}
		CHECK_RUN(R, eng_getattr(R->e, a.ino, &b) == 0);
		check_attr(R, &b, x);
	}
	unwalk(R, &w);
}

/* ---- listings ---- */

#define MAX_LIST 32

struct listing {
	char names[MAX_LIST][PATH_LEN];
	struct eng_attr attrs[MAX_LIST];
	int n;
};

static int list_fn(void *arg, const char *name, const struct eng_attr *a,
		   uint64_t next_off)
{
	struct listing *l = arg;

	if (l->n == MAX_LIST)
		return 1;
	snprintf(l->names[l->n], PATH_LEN, "%s", name);
	l->attrs[l->n++] = *a;
	return 0;
}

/* Compares the listing @l of directory @path with the model's children
 * (and their attributes). */
static void check_listing(struct run *R, const char *path,
			  const struct listing *l)
{
	char p[PATH_LEN], full[PATH_LEN];
	int want = 0;

	for (int i = 0; i < R->m.n; i++) {
		parent_of(R->m.e[i].path, p);
		want += strcmp(p, path) == 0;
	}
	for (int i = 0; i < l->n; i++) {
		struct ment *x;

		snprintf(full, sizeof(full), "%s%s%s", path, path[0] ? "/" : "",
			 l->names[i]);
		x = m_find(&R->m, full);
		if (!x)
			fail(R, "listing of '%s' shows '%s', which must not "
				"exist",
			     path, l->names[i]);
		check_attr(R, &l->attrs[i], x);
		if (i && l->attrs[i - 1].ino >= l->attrs[i].ino)
			fail(R, "listing of '%s' is out of order", path);
	}
	if (l->n != want) {
		for (int i = 0; i < R->m.n; i++)
			fprintf(stderr, "  model: %s\n", R->m.e[i].path);
		for (int i = 0; i < l->n; i++)
			fprintf(stderr, "  listed: %s\n", l->names[i]);
		fail(R, "listing of '%s' has %d entries, want %d", path, l->n,
		     want);
	}
}

static void st_readdir(struct run *R, const char *path)
{
	struct listing *l;
	struct eng_dir *d;
	struct walk w;

	if (!begin(R, "readdir", path, &w, NULL))
		return;
	l = calloc(1, sizeof(*l));
	CHECK(l);
	CHECK_RUN(R, eng_opendir(R->e, walk_ino(&w), &d) == 0);
	if (expect(R, eng_readdir(R->e, d, 0, false, list_fn, l, NULL), 0))
		check_listing(R, path, l);
	eng_releasedir(R->e, d);
	free(l);
	unwalk(R, &w);
}

/* readdir with lookups taken (readdirplus), forgotten afterwards. */
static void st_readdir_plus(struct run *R, const char *path)
{
	struct listing *l;
	struct eng_dir *d;
	struct walk w;

	if (!begin(R, "readdirplus", path, &w, NULL))
		return;
	l = calloc(1, sizeof(*l));
	CHECK(l);
	CHECK_RUN(R, eng_opendir(R->e, walk_ino(&w), &d) == 0);
	/* an error may come after some entries took their lookups */
	if (expect(R, eng_readdir(R->e, d, 0, true, list_fn, l, NULL), 0))
		check_listing(R, path, l);
	for (int i = 0; i < l->n; i++)
		eng_forget(R->e, l->attrs[i].ino, 1);
	eng_releasedir(R->e, d);
	free(l);
	unwalk(R, &w);
}

/* Closes the engine (the fault still armed) and opens it again. */
static void st_remount(struct run *R)
{
	step_start(R, "remount: eng_close");
	if (!R->e)
		return;
	expect(R, eng_close(R->e), 0);
	R->e = NULL;
	r_open(R);
}

/* ---- the workload ---- */

static void workload(struct run *R)
{
	r_open(R);
	st_mkdir(R, "d", 0755);
	st_mkdir(R, "d/sub", 0750);
	st_create(R, "d/f1.txt", "hello");
	st_create(R, "d/j.json", "{\"a\":1}");
	st_create(R, "d/raw", "[3]");
	st_put(R, "p.q.r", ITEM_JSON, "{\"r\":1}");
	st_put(R, "p.q.s", ITEM_BINARY, "S1");
	st_setxattr(R, "d/f1.txt", "user.color", "red");
	st_setattr(R, "d/f1.txt", SA_MODE, 0600);
	st_setattr(R, "d/f1.txt", SA_MTIME, 1234567890123456789ull);
	st_setxattr(R, "d", "user.tierfs.state", "hot");
	st_rewrite(R, "d/j.json", "{\"a\":2}", RW_FLUSH_FSYNC);
	st_sync(R);
	/* the nodes are gone: what follows looks up and reads from L3 */
	st_readdir(R, "");
	st_readdir(R, "d");
	st_get(R, "p.q.r", ITEM_JSON);
	st_read(R, "d/f1.txt");
	st_getxattr(R, "d/f1.txt", "user.color");
	st_getxattr(R, "d", "user.tierfs.state");
	st_rewrite(R, "d/f1.txt", " world", RW_APPEND);
	st_rename(R, "d/raw", "d/sub/raw2.json", 0);
	st_rename(R, "d/f1.txt", "d/sub/f2.txt", 0);
	st_remove(R, "p/q/s", false);
	st_put(R, "p.q.r", ITEM_JSON, "{\"r\":2}");
	st_rewrite(R, "d/j.json", "[1,2]", RW_FSYNC);
	st_mkdir(R, "d/e1", 0755);
	st_mkdir(R, "d/e2", 0700);
	st_sync(R);
	st_rename(R, "d/e1", "d/e2", 0);
	st_remove(R, "d/sub", true); /* ENOTEMPTY: its children are in L3 */
	st_rename(R, "d/e2", "d/sub", 0); /* ENOTEMPTY too */
	st_setattr(R, "d/sub/f2.txt", SA_SIZE, 5);
	st_setxattr(R, "d/sub/f2.txt", "user.color", "blue");
	st_remount(R);
	st_readdir(R, "d/sub");
	st_read(R, "d/sub/raw2.json");
	st_remove(R, "p/q/r.json", false); /* takes p/q and p along */
	st_remove(R, "d/e2", true);
	st_rename(R, "d/j.json", "d/k.json", RENAME_NOREPLACE);
	st_rename(R, "d/sub/f2.txt", "d/k.json", RENAME_NOREPLACE); /* EEXIST */
	st_merkle(R);
	st_create(R, "d/late.txt", "late");
	st_setattr(R, "d/k.json", SA_MODE, 0640);
	st_get(R, "p.q.r", ITEM_JSON); /* gone */
	st_readdir(R, "");
	st_readdir(R, "d");
	st_put(R, "x.y.z", ITEM_BINARY, "Z");
	st_sync(R);
	st_readdir_plus(R, "d");
	st_unlink_open(R, "d/k.json");
	st_ftruncate(R, "d/sub/f2.txt", 2);
	st_create(R, "d/new.txt", "new");
	st_sync(R);
	st_rename(R, "d/new.txt", "d/late.txt", 0); /* replaces it */
	st_rename(R, "d", "d/sub/x", 0);	    /* EINVAL */
	st_rename(R, "d/sub", "top", 0);	    /* with its children */
	st_delete(R, "x.y.z", ITEM_BINARY);	    /* takes x.y and x along */
	st_readdir(R, "");
	st_readdir(R, "top");
}

/* ---- the check after a clean reopen ---- */

static void verify_entry(struct run *R, struct eng *e, uint64_t ino,
			 struct ment *x)
{
	char names[512], val[64];
	struct eng_file *f;
	ssize_t n;
	bool keep;
	int want = 0;

	if (x && x->kind != ITEM_DIR) {
		char buf[DATA_LEN + 16];

		CHECK_RUN(R, eng_file_open(e, ino, O_RDONLY, &f, &keep) == 0);
		n = eng_read(e, f, buf, sizeof(buf), 0);
		if (n < 0)
			fail(R, "reading %s: %s", x->path, err_name(n));
		check_data(R, x, buf, (size_t)n);
		eng_release(e, f);
	}
	/* the stored xattrs: exactly the model's */
	n = eng_listxattr(e, ino, names, sizeof(names));
	if (n < 0)
		fail(R, "listxattr: %s", err_name(n));
	for (char *p = names; p < names + n; p += strlen(p) + 1) {
		const char *v;
		ssize_t l;

		if (ino == ROOT && (strcmp(p, "user.tierfs.id") == 0 ||
				    strcmp(p, "user.tierfs.merkle") == 0))
			continue;
		v = m_xattr(x, p);
		if (!v)
			fail(R, "'%s' has xattr %s, which must not exist",
			     x ? x->path : "", p);
		l = eng_getxattr(e, ino, p, val, sizeof(val));
		if (l != (ssize_t)strlen(v) || memcmp(val, v, (size_t)l) != 0)
			fail(R, "'%s' xattr %s is \"%.*s\", want \"%s\"",
			     x->path, p, l > 0 ? (int)l : 0, val, v);
		want++;
	}
	if (want != (x ? x->nxa : 0))
		fail(R, "'%s' lists %d xattrs, want %d", x ? x->path : "",
		     want, x ? x->nxa : 0);
}

/* Checks directory @path (inode @ino) and everything below it. */
static void verify_dir(struct run *R, struct eng *e, const char *path,
		       uint64_t ino)
{
	struct listing *l = calloc(1, sizeof(*l));
	struct eng_dir *d;

	CHECK(l);
	CHECK_RUN(R, eng_opendir(e, ino, &d) == 0);
	CHECK_RUN(R, eng_readdir(e, d, 0, false, list_fn, l, NULL) == 0);
	eng_releasedir(e, d);
	check_listing(R, path, l);
	for (int i = 0; i < l->n; i++) {
		char full[PATH_LEN];
		struct eng_attr a;
		struct ment *x;

		snprintf(full, sizeof(full), "%s%s%s", path, path[0] ? "/" : "",
			 l->names[i]);
		x = m_find(&R->m, full);
		CHECK_RUN(R, eng_lookup(e, ino, l->names[i], &a) == 0);
		check_attr(R, &a, x);
		verify_entry(R, e, a.ino, x);
		if (x->kind == ITEM_DIR)
			verify_dir(R, e, full, a.ino);
		eng_forget(e, a.ino, 1);
	}
	free(l);
}

static void verify(struct run *R)
{
	struct wrap_state *clean = calloc(1, sizeof(*clean));
	struct eng_config cfg = R->cfg;
	struct eng *e;
	int r;

	CHECK(clean);
	R->step++;
	R->what = "verify: eng_close";
	wrap_lift(&R->st);
	if (R->e) {
		check_statfs(R, R->e);
		r = eng_close(R->e);
		R->e = NULL;
		if (r != 0)
			fail(R, "eng_close with L3 working again: %s",
			     err_name(r));
	}
	R->what = "verify: reopen without a fault";
	cfg.wrap_arg = clean;
	r = eng_open(&cfg, &e);
	if (r != 0)
		fail(R, "eng_open: %s", err_name(r));
	R->e = e; /* fail() closes it */
	wait_builder(R, e, clean, 0);
	R->what = "verify: the tree";
	verify_entry(R, e, ROOT, NULL);
	verify_dir(R, e, "", ROOT);
	check_statfs(R, e);
	R->what = "verify: eng_close";
	R->e = NULL;
	r = eng_close(e);
	if (r != 0)
		fail(R, "eng_close: %s", err_name(r));
	free(clean);
}

/* ---- cases ---- */

enum mode { M_ONE_SHOT, M_STICKY, M_LOST, M_COUNT };
static const char *const mode_names[M_COUNT] = {"one-shot", "sticky", "lost"};

static const int errs[] = {EAGAIN, EIO, ENOMEM, EACCES, EROFS, ENOSPC, EEXIST};
#define NERRS (int)(sizeof(errs) / sizeof(*errs))

struct fcase {
	int op;	 /* enum wrap_op, or -1: no fault */
	int err; /* positive errno */
	enum mode mode;
	uint64_t k;
	bool eager; /* the flusher persists on its own, every few ms */
};

/* Cases known to fail, with the reason. A known failure that passes fails
 * the test (so the list stays true), except where timing decides whether
 * the fault fires at a change the model checks (@may_pass). Only the model
 * check may fail in them: a crash, a sanitizer report or a hang fails the
 * test. */
struct known {
	int op, err;
	enum mode mode;
	uint64_t k; /* 0: every k */
	bool eager;
	bool may_pass;
	const char *why;
};
#define QUARANTINE_WHY                                                         \
	"an apply L3 refuses with EEXIST is taken as a refusal for good: "    \
	"bisected, and each change it keeps refusing is set aside in "        \
	"quarantine.log (engine/quarantine.c): acknowledged changes are "     \
	"set aside there (eng_fsync() of such a file, and the eng_sync() "   \
	"that waited for it, say EIO), and deletes are undone"
static const struct known known_failures[] = {
	{W_APPLY, EEXIST, M_STICKY, 0, false, false, QUARANTINE_WHY},
	{W_APPLY, EEXIST, M_STICKY, 0, true, true, QUARANTINE_WHY},
	{-1, 0, 0, 0, false, false, NULL},
};

static const struct known *known_failure(const struct fcase *c)
{
	for (size_t i = 0; known_failures[i].why; i++) {
		const struct known *kf = &known_failures[i];

		if (kf->op == c->op && kf->err == c->err &&
		    kf->mode == c->mode && (!kf->k || kf->k == c->k) &&
		    kf->eager == c->eager)
			return kf;
	}
	return NULL;
}

static void case_label(const struct fcase *c, char *buf, size_t cap)
{
	if (c->op < 0)
		snprintf(buf, cap, "clean%s", c->eager ? ":eager" : "");
	else
		snprintf(buf, cap, "%s:%s:%s:%llu%s", wrap_op_names[c->op],
			 strerrorname_np(c->err), mode_names[c->mode],
			 (unsigned long long)c->k, c->eager ? ":eager" : "");
}

/* Runs case @c in directory @dir; returns the clean run's call counts in
 * @calls. Exits 1 on a failed check. */
static void run_case(const struct fcase *c, const char *dir,
		     uint64_t calls[W_COUNT])
{
	struct run *R = calloc(1, sizeof(*R));

	CHECK(R);
	case_label(c, R->label, sizeof(R->label));
	snprintf(R->dir, sizeof(R->dir), "%s", dir);
	snprintf(R->db, sizeof(R->db), "%s/s.db", dir);
	if (c->op >= 0)
		R->st.fault = (struct wrap_fault){.op = c->op,
						  .err = c->err,
						  .k = c->k,
						  .sticky = c->mode == M_STICKY,
						  .after = c->mode == M_LOST};
	eng_config_init(&R->cfg);
	R->cfg.sqlite_path = R->db;
	/* nothing persists unless asked; eager: every change at once */
	R->cfg.batch_flush_ms = c->eager ? 1 : 3600000;
	R->cfg.batch_flush_count = c->eager ? 1 : 1000000;
	R->cfg.batch_flush_bytes = (size_t)1 << 30;
	R->cfg.l1_max_bytes = 1; /* committed content is read from L3 */
	R->cfg.log.fn = log_fn;
	R->cfg.wrap_l3 = store_wrap_l3;
	R->cfg.wrap_arg = &R->st;
	R->eager = c->eager;
	workload(R);
	for (int op = 0; op < W_COUNT; op++)
		calls[op] = atomic_load(&R->st.calls[op]);
	if (c->op < 0 && R->refused)
		fail(R, "a call failed without a fault");
	if (c->op >= 0 && !c->eager && atomic_load(&R->st.injected) == 0)
		fail(R, "the fault never fired"); /* eager: timing decides */
	if (getenv("FAULTS_CASE"))
		printf("%s: the fault fired %llu times, %d calls failed, the "
		       "model has %d entries\n",
		       R->label, (unsigned long long)atomic_load(&R->st.injected),
		       R->refused, R->m.n);
	verify(R);
	free(R);
}

/* ---- running cases in children ---- */

struct job {
	pid_t pid;
	struct fcase c;
	char dir[PATH_MAX];
	int fd; /* the clean run's counts come back through it */
};

static int next_dir;

static void job_start(struct job *j, const struct fcase *c)
{
	int fds[2];

	j->c = *c;
	snprintf(j->dir, sizeof(j->dir), "%s/case-%d", tmpdir, next_dir++);
	CHECK(mkdir(j->dir, 0700) == 0);
	CHECK(pipe(fds) == 0);
	fflush(NULL);
	j->pid = fork();
	CHECK(j->pid >= 0);
	if (j->pid == 0) {
		uint64_t calls[W_COUNT];

		close(fds[0]);
		alarm(CASE_ALARM_S);
		run_case(c, j->dir, calls);
		if (write(fds[1], calls, sizeof(calls)) != sizeof(calls))
			exit(1);
		exit(0);
	}
	close(fds[1]);
	j->fd = fds[0];
}

/* Waits for job @j; returns 0 when it passed (and its counts in @calls,
 * may be NULL), else a description of how it failed in @how and
 * EXIT_MODEL when only the model check failed, or 1. */
static int job_wait(struct job *j, uint64_t *calls, char *how, size_t cap)
{
	uint64_t got[W_COUNT];
	ssize_t n = read(j->fd, got, sizeof(got));
	int status;

	close(j->fd);
	CHECK(waitpid(j->pid, &status, 0) == j->pid);
	rm_tree(j->dir);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
	    n == sizeof(got)) {
		if (calls)
			memcpy(calls, got, sizeof(got));
		return 0;
	}
	if (WIFSIGNALED(status))
		snprintf(how, cap, "%s", WTERMSIG(status) == SIGALRM
						 ? "hang"
						 : strsignal(WTERMSIG(status)));
	else
		snprintf(how, cap, "exit %d%s", WEXITSTATUS(status),
			 WEXITSTATUS(status) == EXIT_MODEL ? " (model check)"
							   : "");
	return WIFEXITED(status) && WEXITSTATUS(status) == EXIT_MODEL
		       ? EXIT_MODEL
		       : 1;
}

static int parse_case(const char *s, struct fcase *c)
{
	char op[16], err[16], mode[16];
	unsigned long long k;

	if (sscanf(s, "%15[^:]:%15[^:]:%15[^:]:%llu", op, err, mode, &k) != 4)
		return -1;
	c->eager = strstr(s, ":eager") != NULL;
	c->op = -1;
	for (int i = 0; i < W_COUNT; i++)
		if (strcmp(op, wrap_op_names[i]) == 0)
			c->op = i;
	c->err = 0;
	for (int i = 0; i < NERRS; i++)
		if (strcmp(err, strerrorname_np(errs[i])) == 0)
			c->err = errs[i];
	c->mode = M_COUNT;
	for (int i = 0; i < M_COUNT; i++)
		if (strcmp(mode, mode_names[i]) == 0)
			c->mode = i;
	c->k = k;
	return c->op < 0 || !c->err || c->mode == M_COUNT || !k ? -1 : 0;
}

/* The k of the eager cases: 1, 2, 3 and 8 spread up to @n (which call
 * the flusher makes when depends on timing: all of them buy nothing). */
static bool eager_k(uint64_t k, uint64_t n)
{
	if (k <= 3 || k == n)
		return true;
	for (uint64_t i = 1; i < 8; i++)
		if (k == 3 + i * (n - 3) / 8)
			return true;
	return false;
}

/* The errnos of "lost" mode: a reply lost after the store acted. */
static bool lost_applies(int op, int err)
{
	return (op == W_APPLY || op == W_ALLOC_INO) &&
	       (err == EAGAIN || err == EIO);
}

int main(void)
{
	static struct fcase cases[20000];
	struct job jobs[JOBS] = {0};
	uint64_t counts[W_COUNT], again[W_COUNT], eager_counts[W_COUNT];
	int ncases = 0, failed = 0, xfail = 0, xpass = 0, running = 0;
	int per_op[W_COUNT + 1] = {0}, fails_op[W_COUNT + 1] = {0};
	bool sample = getenv("FAULTS_SAMPLE")  ? true
		      : getenv("FAULTS_FULL") ? false
					      : SAMPLE_BY_DEFAULT;
	const char *one = getenv("FAULTS_CASE");
	const char *only_op = getenv("FAULTS_OP");
	struct fcase clean = {.op = -1}, eager_clean = {.op = -1};
	double t0 = now_s();
	char how[64], label[96];

	main_pid = getpid();
	/* the runs fsync a lot: in memory when /dev/shm is there */
	snprintf(tmpdir, sizeof(tmpdir), "%s/test_faults.XXXXXX",
		 getenv("TMPDIR")		? getenv("TMPDIR")
		 : access("/dev/shm", W_OK) == 0 ? "/dev/shm"
						 : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return TEST_SKIP;
	}
	tmpdir_made = true;
	atexit(cleanup);

	if (one) {
		struct fcase c;
		char dir[PATH_MAX];

		if (parse_case(one, &c) < 0) {
			fprintf(stderr, "FAULTS_CASE: op:err:mode:k, e.g. "
					"apply:EACCES:sticky:3\n");
			return 1;
		}
		snprintf(dir, sizeof(dir), "%s/one", tmpdir);
		CHECK(mkdir(dir, 0700) == 0);
		run_case(&c, dir, counts);
		printf("test_faults: case %s ok\n", one);
		return 0;
	}

	/* N per op: a clean run, twice (the counts must not depend on
	 * timing) */
	job_start(&jobs[0], &clean);
	if (job_wait(&jobs[0], counts, how, sizeof(how))) {
		fprintf(stderr, "the clean run failed: %s\n", how);
		return 1;
	}
	job_start(&jobs[0], &clean);
	if (job_wait(&jobs[0], again, how, sizeof(how))) {
		fprintf(stderr, "the second clean run failed: %s\n", how);
		return 1;
	}
	eager_clean.eager = true;
	job_start(&jobs[0], &eager_clean);
	if (job_wait(&jobs[0], eager_counts, how, sizeof(how))) {
		fprintf(stderr, "the eager clean run failed: %s\n", how);
		return 1;
	}
	jobs[0].pid = 0;
	printf("calls of a clean run:");
	for (int op = 0; op < W_COUNT; op++) {
		printf(" %s %llu", wrap_op_names[op],
		       (unsigned long long)counts[op]);
		CHECK_EQ(again[op], counts[op]);
		/* the workload makes every kind; but a lookup that misses
		 * the node table reads a page of its directory instead
		 * (dirsnap.c): L3's lookup is only the fallback */
		CHECK(counts[op] > 0 || op == W_LOOKUP);
	}
	printf("; eager, apply %llu\n",
	       (unsigned long long)eager_counts[W_APPLY]);

	for (int op = 0; op <= W_COUNT; op++) {
		/* W_COUNT: apply again, eager */
		bool eager = op == W_COUNT;
		int fop = eager ? W_APPLY : op;

		if (only_op && strcmp(only_op, wrap_op_names[fop]) != 0)
			continue;
		for (int ei = 0; ei < NERRS; ei++) {
			for (int mode = 0; mode < M_COUNT; mode++) {
				uint64_t n = eager ? eager_counts[fop]
						   : counts[fop];

				if (mode == M_LOST &&
				    !lost_applies(fop, errs[ei]))
					continue;
				for (uint64_t k = 1; k <= n; k++) {
					if (sample && k != 1 && k != n &&
					    k != (n + 1) / 2)
						continue;
					if (eager && !eager_k(k, n))
						continue;
					CHECK(ncases < (int)(sizeof(cases) /
							     sizeof(*cases)));
					cases[ncases++] = (struct fcase){
						fop, errs[ei], mode, k, eager};
					per_op[op]++;
				}
			}
		}
	}

	/* JOBS at a time */
	for (int next = 0; next < ncases || running;) {
		int slot = -1;

		if (next < ncases && running < JOBS) {
			for (int i = 0; i < JOBS; i++)
				if (!jobs[i].pid)
					slot = i;
			job_start(&jobs[slot], &cases[next++]);
			running++;
			continue;
		}
		siginfo_t info = {0};

		CHECK(waitid(P_ALL, 0, &info, WEXITED | WNOWAIT) == 0);
		for (int i = 0; i < JOBS; i++) {
			struct job *j = &jobs[i];
			const struct known *kf;
			int bad;

			if (!j->pid || j->pid != info.si_pid)
				continue;
			bad = job_wait(j, NULL, how, sizeof(how));
			j->pid = 0;
			running--;
			kf = known_failure(&j->c);
			case_label(&j->c, label, sizeof(label));
			/* a known failure is a model check's: a crash, a
			 * sanitizer report or a hang still fails */
			if (bad == EXIT_MODEL && kf) {
				xfail++;
				printf("known failure %s: %s\n", label, how);
			} else if (bad) {
				failed++;
				fails_op[j->c.eager ? W_COUNT : j->c.op]++;
				printf("FAILED %s: %s\n", label, how);
			} else if (kf && !kf->may_pass) {
				xpass++;
				printf("known failure %s passes: update "
				       "known_failures\n",
				       label);
			}
		}
	}

	printf("matrix: %d cases (%s k):", ncases, sample ? "sampled" : "every");
	for (int op = 0; op <= W_COUNT; op++)
		printf(" %s %d", op < W_COUNT ? wrap_op_names[op] : "eager-apply",
		       per_op[op]);
	printf("\nfailed: %d (", failed);
	for (int op = 0; op <= W_COUNT; op++)
		printf("%s%s %d", op ? ", " : "",
		       op < W_COUNT ? wrap_op_names[op] : "eager-apply",
		       fails_op[op]);
	printf("), known failures: %d, in %.1f s\n", xfail, now_s() - t0);
	for (size_t i = 0; xfail && known_failures[i].why; i++)
		if (!i || known_failures[i].why != known_failures[i - 1].why)
			printf("known failures of %s:%s:%s: %s\n",
			       wrap_op_names[known_failures[i].op],
			       strerrorname_np(known_failures[i].err),
			       mode_names[known_failures[i].mode],
			       known_failures[i].why);
	if (failed || xpass)
		return 1;
	printf("test_faults: ok\n");
	return 0;
}
