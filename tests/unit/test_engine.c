/*
 * test_engine.c - tests of the engine through its library API
 * (engine/engine.c over the SQLite L3), without FUSE.
 *
 * Every test opens an engine on its own SQLite file in a private mkdtemp()
 * directory (removed at exit) and checks what a user of the library relies
 * on: read-your-writes before any flush, JSON validation that keeps the
 * previous version, size limits, one name per directory entry, deletes that
 * beat pending writes (docs/design.md §12), a close that persists
 * everything, pinned items under a 1-byte L1, merged listings of pending
 * and persisted entries, renames, fsync and the status xattr, stable inode
 * numbers, and the implicit directories of eng_put()/eng_delete().
 *
 * Where a test asks "is it in L3?" it opens a second, independent store
 * connection on the same file (the database is in WAL mode), so the answer
 * does not come from the engine's memory.
 *
 * Nothing sleeps: waits are the engine's own (eng_fsync, eng_sync,
 * eng_close); a listing that could loop runs in a thread watched with a
 * deadline. Exit status: 0 passed, 1 failed, 77 skipped. TEST_VERBOSE=1
 * shows the engine's log lines.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw, RENAME_NOREPLACE */
#endif
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "engine.h"
#include "l3_sqlite.h"
#include "store.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

#define ROOT 1
#define HOUR_MS 3600000u
#define LISTING_DEADLINE_S 20

static char tmpdir[] = "/tmp/test_engine.XXXXXX";
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

/* ---- the log sink: counts errors, prints when TEST_VERBOSE ---- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_errors;
static char last_error[1024];

static void log_fn(void *arg, int level, const char *msg)
{
	pthread_mutex_lock(&log_lock);
	if (level <= LOG_ERR) {
		log_errors++;
		snprintf(last_error, sizeof(last_error), "%s", msg);
	}
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "log[%d]: %s\n", level, msg);
	pthread_mutex_unlock(&log_lock);
}

/* No error was logged since the last call. */
static void check_no_log_errors(void)
{
	pthread_mutex_lock(&log_lock);
	if (log_errors) {
		fprintf(stderr, "engine logged %d error(s), the last: %s\n",
			log_errors, last_error);
		check_fail_context();
		exit(1);
	}
	pthread_mutex_unlock(&log_lock);
}

/* ---- engine set-up ---- */

static const struct eng_ctx ctx = {.uid = 0, .gid = 0, .umask = 022};

static const char *db_path(const char *name)
{
	static char buf[8][512];
	static int next;
	char *p = buf[next++ % 8];

	snprintf(p, 512, "%s/%s.db", tmpdir, name);
	return p;
}

/* A configuration for database @name with every flush threshold out of
 * reach: nothing persists unless a test asks (fsync, sync, close). */
static struct eng_config lazy_cfg(const char *name)
{
	struct eng_config cfg;

	eng_config_init(&cfg);
	cfg.sqlite_path = db_path(name);
	cfg.batch_flush_ms = HOUR_MS;
	cfg.batch_flush_count = 1000000;
	cfg.batch_flush_bytes = (size_t)1 << 30;
	cfg.log.fn = log_fn;
	return cfg;
}

static struct eng *open_ok(const struct eng_config *cfg)
{
	struct eng *e = NULL;

	CHECK_EQ(eng_open(cfg, &e), 0);
	CHECK(e != NULL);
	return e;
}

static void close_ok(struct eng *e)
{
	CHECK_EQ(eng_close(e), 0);
	check_no_log_errors();
}

static struct eng *reopen(struct eng *e, const struct eng_config *cfg)
{
	close_ok(e);
	return open_ok(cfg);
}

/* ---- an independent look at L3 ---- */

static struct store *peek_open(const struct eng_config *cfg)
{
	struct store *s = NULL;

	CHECK_EQ(l3_sqlite_open(cfg->sqlite_path, &cfg->log, &s), 0);
	return s;
}

/* The ino of @name in @parent as L3 has it, or a negative errno. */
static long long l3_ino(const struct eng_config *cfg, uint64_t parent,
			const char *name)
{
	struct store *s = peek_open(cfg);
	struct store_row row;
	long long r = s->ops->lookup(s, parent, name, &row);

	if (r == 0) {
		r = (long long)row.ino;
		store_row_release(&row);
	}
	store_free(s);
	return r;
}

/* The content of @ino in L3 equals @data[0..len). */
static bool l3_content_is(const struct eng_config *cfg, uint64_t ino,
			  const void *data, size_t len)
{
	struct store *s = peek_open(cfg);
	void *buf = NULL;
	size_t blen = 0;
	int r = s->ops->read(s, ino, &buf, &blen);
	bool same = r == 0 && blen == len && (!len || !memcmp(buf, data, len));

	free(buf);
	store_free(s);
	return same;
}

/* ---- file helpers ---- */

/* Creates file @name in @parent with @len bytes of @data, publishes and
 * closes it. Returns the flush result (or the create error); *ino when
 * created. */
static int put_file(struct eng *e, uint64_t parent, const char *name,
		    const void *data, size_t len, uint64_t *ino)
{
	struct eng_attr a;
	struct eng_file *f = NULL;
	int r = eng_create(e, parent, name, 0644, O_WRONLY | O_CREAT | O_EXCL,
			   &ctx, &a, &f);

	if (r < 0)
		return r;
	CHECK(f != NULL);
	CHECK_EQ(a.kind,
		 strlen(name) > 5 && !strcmp(name + strlen(name) - 5, ".json")
			 ? ITEM_JSON
			 : ITEM_BINARY);
	if (ino)
		*ino = a.ino;
	if (len)
		CHECK_EQ(eng_write(e, f, data, len, 0), (long long)len);
	r = eng_flush(e, f);
	eng_release(e, f);
	return r;
}

static uint64_t put_file_ok(struct eng *e, uint64_t parent, const char *name,
			    const char *text)
{
	uint64_t ino = 0;

	CHECK_EQ(put_file(e, parent, name, text, strlen(text), &ino), 0);
	CHECK(ino > ROOT);
	return ino;
}

/* Replaces the content of @ino (O_TRUNC). Returns the flush result. */
static int rewrite(struct eng *e, uint64_t ino, const void *data, size_t len)
{
	struct eng_file *f = NULL;
	bool keep;
	int r = eng_file_open(e, ino, O_WRONLY | O_TRUNC, &f, &keep);

	if (r < 0)
		return r;
	if (len)
		CHECK_EQ(eng_write(e, f, data, len, 0), (long long)len);
	r = eng_flush(e, f);
	eng_release(e, f);
	return r;
}

/* Reads all of @ino into @buf (room for @cap bytes); returns the length. */
static ssize_t read_all(struct eng *e, uint64_t ino, void *buf, size_t cap)
{
	struct eng_file *f = NULL;
	size_t len = 0;
	bool keep;
	ssize_t r = eng_file_open(e, ino, O_RDONLY, &f, &keep);

	if (r < 0)
		return r;
	for (;;) {
		r = eng_read(e, f, (char *)buf + len, cap - len, (off_t)len);
		if (r <= 0)
			break;
		len += (size_t)r;
		if (len == cap)
			break;
	}
	eng_release(e, f);
	return r < 0 ? r : (ssize_t)len;
}

static void check_content(struct eng *e, uint64_t ino, const void *data,
			  size_t len)
{
	char *buf = malloc(len + 16);
	ssize_t r;

	CHECK(buf != NULL);
	r = read_all(e, ino, buf, len + 16);
	CHECK_EQ(r, (long long)len);
	CHECK(memcmp(buf, data, len) == 0);
	free(buf);
}

static void check_text(struct eng *e, uint64_t ino, const char *text)
{
	check_content(e, ino, text, strlen(text));
}

/* The ino of @name in @parent, or a negative errno. Takes a lookup
 * reference on success, which the engine may keep. */
static long long lookup(struct eng *e, uint64_t parent, const char *name)
{
	struct eng_attr a;
	int r = eng_lookup(e, parent, name, &a);

	return r < 0 ? r : (long long)a.ino;
}

static struct eng_attr lookup_attr(struct eng *e, uint64_t parent,
				   const char *name)
{
	struct eng_attr a;

	memset(&a, 0, sizeof(a));
	CHECK_EQ(eng_lookup(e, parent, name, &a), 0);
	return a;
}

static uint64_t lookup_ok(struct eng *e, uint64_t parent, const char *name)
{
	long long r = lookup(e, parent, name);

	if (r < 0)
		fprintf(stderr, "lookup of '%s' in %" PRIu64 ": %s\n", name,
			parent, strerror((int)-r));
	CHECK(r > ROOT);
	return (uint64_t)r;
}

static uint64_t mkdir_ok(struct eng *e, uint64_t parent, const char *name)
{
	struct eng_attr a;

	CHECK_EQ(eng_mkdir(e, parent, name, 0755, &ctx, &a), 0);
	CHECK_EQ(a.kind, ITEM_DIR);
	CHECK((a.mode & S_IFMT) == S_IFDIR);
	return a.ino;
}

/* The value of xattr @name of @ino as a string in @buf. */
static const char *xattr_str(struct eng *e, uint64_t ino, const char *name,
			     char *buf, size_t cap)
{
	ssize_t r = eng_getxattr(e, ino, name, buf, cap - 1);

	if (r < 0) {
		fprintf(stderr, "getxattr %s of %" PRIu64 ": %s\n", name, ino,
			strerror((int)-r));
		CHECK(r >= 0);
	}
	buf[r] = '\0';
	return buf;
}

static void check_item_bytes(struct eng *e, const char *id, enum item_kind kind,
			     const void *data, size_t len)
{
	struct item *it = NULL;

	CHECK_EQ(eng_get(e, id, kind, &it), 0);
	CHECK(it != NULL);
	CHECK_EQ(item_size(it), len);
	CHECK(memcmp(item_data(it), data, len) == 0);
	item_unref(it);
}

static void check_item(struct eng *e, const char *id, enum item_kind kind,
		       const char *text)
{
	check_item_bytes(e, id, kind, text, strlen(text));
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
	uint8_t h[ITEM_HASH_LEN];

	item_hash(data, len, h);
	item_hash_hex(h, out);
}

/* ---- listings ---- */

struct entry {
	char name[256];
	uint64_t ino;
	uint64_t next_off; /* listings: the cookie handed with the entry */
};

struct listing {
	struct entry *v;
	size_t n, cap;
	size_t stop_every; /* stop the walk after this many; 0: never */
	size_t this_call;  /* accepted in the current eng_readdir call */
	uint64_t next_off; /* cookie after the last accepted entry */
	bool plus;
	bool names; /* eng_readdir_names() */
	/* run the prefetches the calls reserve, each on a thread of its own
	 * while the listing goes on, as a mount does after its reply */
	bool prefetch;
	size_t prefetches; /* ... how many ran */
	pthread_t prefetcher;
	struct eng *e;
	struct eng_dir *d;
};

/* tierfs_tier_calls_total of L3's @op so far, from the metrics text. */
static unsigned long long l3_calls(struct eng *e, const char *op)
{
	char key[96], *text, *p;
	unsigned long long v = 0;
	size_t len;
	int kl;

	kl = snprintf(key, sizeof(key),
		      "tierfs_tier_calls_total{tier=\"l3\",op=\"%s\"} ", op);
	CHECK_EQ(eng_metrics_text(e, &text, &len), 0);
	p = memmem(text, len, key, (size_t)kl);
	CHECK(p != NULL);
	if (p)
		v = strtoull(p + kl, NULL, 10);
	free(text);
	return v;
}

static int listing_fn(void *arg, const char *name, const struct eng_attr *a,
		      uint64_t next_off);

static void *prefetch_main(void *arg)
{
	struct listing *l = arg;

	eng_readdir_prefetch(l->e, l->d);
	return NULL;
}

/* One eng_readdir() (or eng_readdir_names()) call on @d from l->next_off
 * into @l; a prefetch it reserved runs on a new thread. */
static void readdir_call(struct eng *e, struct eng_dir *d, struct listing *l)
{
	bool pf = false, *ppf = l->prefetch ? &pf : NULL;

	l->this_call = 0;
	if (l->names)
		CHECK_EQ(eng_readdir_names(e, d, l->next_off, listing_fn, l,
					   ppf),
			 0);
	else
		CHECK_EQ(eng_readdir(e, d, l->next_off, l->plus, listing_fn, l,
				     ppf),
			 0);
	if (!pf)
		return;
	/* the last one ended before this call could reserve another */
	if (l->prefetches)
		CHECK_EQ(pthread_join(l->prefetcher, NULL), 0);
	l->e = e;
	l->d = d;
	CHECK_EQ(pthread_create(&l->prefetcher, NULL, prefetch_main, l), 0);
	l->prefetches++;
}

static void *close_main(void *arg)
{
	struct listing *l = arg;

	eng_releasedir(l->e, l->d);
	return NULL;
}

/* Closes @d, which waits for a prefetch still running. */
static void listing_close(struct eng *e, struct eng_dir *d, struct listing *l)
{
	eng_releasedir(e, d);
	if (l->prefetches)
		CHECK_EQ(pthread_join(l->prefetcher, NULL), 0);
}

static int listing_fn(void *arg, const char *name, const struct eng_attr *a,
		      uint64_t next_off)
{
	struct listing *l = arg;

	if (l->stop_every && l->this_call == l->stop_every)
		return 1;
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 256;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		CHECK(l->v != NULL);
	}
	CHECK(strlen(name) < sizeof(l->v[0].name));
	CHECK(a->ino > ROOT);
	snprintf(l->v[l->n].name, sizeof(l->v[0].name), "%s", name);
	l->v[l->n].ino = a->ino;
	l->v[l->n].next_off = next_off;
	l->n++;
	l->this_call++;
	l->next_off = next_off;
	return 0;
}

/* Lists directory @ino, @stop_every entries per eng_readdir() call (0:
 * all in one call), into @l. */
static void list_dir(struct eng *e, uint64_t ino, size_t stop_every, bool plus,
		     struct listing *l)
{
	struct eng_dir *d = NULL;
	size_t calls = 0;
	bool names = l->names, prefetch = l->prefetch;

	memset(l, 0, sizeof(*l));
	l->stop_every = stop_every;
	l->plus = plus;
	l->names = names;
	l->prefetch = prefetch;
	CHECK_EQ(eng_opendir(e, ino, &d), 0);
	for (;;) {
		size_t before = l->n;

		readdir_call(e, d, l);
		calls++;
		CHECK(calls < 100000); /* no endless paging */
		if (!stop_every || l->n == before)
			break;
		if (l->this_call < stop_every)
			break; /* the walk ended before the stop */
	}
	listing_close(e, d, l);
	if (plus)
		for (size_t i = 0; i < l->n; i++)
			eng_forget(e, l->v[i].ino, 1);
}

static int cmp_entry(const void *a, const void *b)
{
	uint64_t x = ((const struct entry *)a)->ino;
	uint64_t y = ((const struct entry *)b)->ino;

	return (x > y) - (x < y);
}

/* A model of a directory: its entries in any order. */
struct dirmodel {
	struct entry *v;
	size_t n, cap;
};

static void model_add(struct dirmodel *m, const char *name, uint64_t ino)
{
	if (m->n == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 256;
		m->v = realloc(m->v, m->cap * sizeof(*m->v));
		CHECK(m->v != NULL);
	}
	snprintf(m->v[m->n].name, sizeof(m->v[0].name), "%s", name);
	m->v[m->n].ino = ino;
	m->n++;
}

static struct entry *model_find(struct dirmodel *m, const char *name)
{
	for (size_t i = 0; i < m->n; i++)
		if (!strcmp(m->v[i].name, name))
			return &m->v[i];
	return NULL;
}

static void model_del(struct dirmodel *m, const char *name)
{
	struct entry *p = model_find(m, name);

	CHECK(p != NULL);
	*p = m->v[--m->n];
}

/* The listing is the model: every name once, in inode order, right inos,
 * each entry's cookie its inode number. */
static void check_listing(const struct listing *l, struct dirmodel *m,
			  const char *what)
{
	snprintf(check_context, sizeof(check_context), "listing %s", what);
	if (m->n)
		qsort(m->v, m->n, sizeof(*m->v), cmp_entry);
	for (size_t i = 0; i < l->n && i < m->n; i++) {
		if (strcmp(l->v[i].name, m->v[i].name) != 0 ||
		    l->v[i].ino != m->v[i].ino) {
			fprintf(stderr,
				"entry %zu is '%s' (ino %" PRIu64
				"), want '%s' (ino %" PRIu64 ")\n",
				i, l->v[i].name, l->v[i].ino, m->v[i].name,
				m->v[i].ino);
			CHECK(!"listing differs from the model");
		}
		if (i)
			CHECK(l->v[i - 1].ino < l->v[i].ino);
		CHECK_EQ(l->v[i].next_off, l->v[i].ino);
	}
	if (l->n != m->n)
		fprintf(stderr, "listed %zu entries, want %zu\n", l->n, m->n);
	CHECK_EQ(l->n, m->n);
	check_context[0] = '\0';
}

/*
 * Runs list_dir() in a thread and waits for it with a deadline: a listing
 * that never ends fails the test instead of hanging it.
 */
struct list_job {
	struct eng *e;
	uint64_t ino;
	size_t stop_every;
	bool plus;
	struct listing *l;
	bool done;
	pthread_mutex_t lock;
	pthread_cond_t cond;
};

static void *list_job_main(void *arg)
{
	struct list_job *j = arg;

	list_dir(j->e, j->ino, j->stop_every, j->plus, j->l);
	pthread_mutex_lock(&j->lock);
	j->done = true;
	pthread_cond_signal(&j->cond);
	pthread_mutex_unlock(&j->lock);
	return NULL;
}

static void list_dir_deadline(struct eng *e, uint64_t ino, size_t stop_every,
			      bool plus, struct listing *l, const char *what)
{
	struct list_job j = {.e = e,
			     .ino = ino,
			     .stop_every = stop_every,
			     .plus = plus,
			     .l = l};

	/* l->names is the caller's choice (list_dir keeps it) */
	pthread_condattr_t ca;
	struct timespec ts;
	pthread_t t;
	int r = 0;

	pthread_mutex_init(&j.lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&j.cond, &ca);
	pthread_condattr_destroy(&ca);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += LISTING_DEADLINE_S;
	CHECK_EQ(pthread_create(&t, NULL, list_job_main, &j), 0);
	pthread_mutex_lock(&j.lock);
	while (!j.done && r == 0)
		r = pthread_cond_timedwait(&j.cond, &j.lock, &ts);
	if (!j.done) {
		fprintf(stderr,
			"%s:%d: listing %s did not end within %d s: "
			"eng_readdir() loops\n",
			__FILE__, __LINE__, what, LISTING_DEADLINE_S);
		cleanup();
		_exit(1); /* the thread is stuck inside the engine */
	}
	pthread_mutex_unlock(&j.lock);
	CHECK_EQ(pthread_join(t, NULL), 0);
	pthread_cond_destroy(&j.cond);
	pthread_mutex_destroy(&j.lock);
}

/* Collects entries into @l until the walk ends. */
static void read_from(struct eng *e, struct eng_dir *d, uint64_t off,
		      struct listing *l)
{
	memset(l, 0, sizeof(*l));
	CHECK_EQ(eng_readdir(e, d, off, false, listing_fn, l, NULL), 0);
}

/*
 * Seeks: after a full walk, a readdir from the cookie of entry k lists the
 * entries from k on, on the same handle and on a new one (the model must
 * be sorted, as check_listing() leaves it).
 */
static void check_seek(struct eng *e, uint64_t ino, struct dirmodel *m,
		       const char *what)
{
	struct eng_dir *d = NULL;
	struct listing all, from;
	size_t ks[] = {0,   1,	 2,   127,	128,	  129,
		       255, 256, 257, m->n / 2, m->n - 1, m->n};

	snprintf(check_context, sizeof(check_context), "seeks in %s", what);
	CHECK_EQ(eng_opendir(e, ino, &d), 0);
	read_from(e, d, 0, &all);
	CHECK_EQ(all.n, m->n);
	for (size_t i = 0; i < sizeof(ks) / sizeof(ks[0]); i++) {
		size_t k = ks[i];
		struct eng_dir *fresh = NULL;

		if (k > m->n)
			continue;
		if (i % 2)
			CHECK_EQ(eng_opendir(e, ino, &fresh), 0);
		read_from(e, fresh ? fresh : d, k ? all.v[k - 1].next_off : 0,
			  &from);
		eng_releasedir(e, fresh);
		snprintf(check_context, sizeof(check_context),
			 "seek to entry %zu of %zu in %s", k, m->n, what);
		CHECK_EQ(from.n, m->n - k);
		for (size_t j = 0; j < from.n; j++) {
			CHECK_STREQ(from.v[j].name, m->v[k + j].name);
			CHECK_EQ(from.v[j].ino, m->v[k + j].ino);
		}
		free(from.v);
	}
	eng_releasedir(e, d);
	free(all.v);
	check_context[0] = '\0';
}

/* Lists @ino in several ways and checks each against the model. */
static void check_dir(struct eng *e, uint64_t ino, struct dirmodel *m,
		      const char *what)
{
	static const size_t pages[] = {0, 1, 7, 127, 128, 129, 300, 1000};
	char desc[200];
	struct listing l;

	for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
		/* plain, plus, names only, in turn */
		bool plus = i % 3 == 1, names = i % 3 == 2;

		snprintf(desc, sizeof(desc), "%s, %zu per call%s", what,
			 pages[i], plus ? ", plus" : names ? ", names" : "");
		snprintf(check_context, sizeof(check_context), "listing %s",
			 desc);
		memset(&l, 0, sizeof(l));
		l.names = names;
		list_dir_deadline(e, ino, pages[i], plus, &l, desc);
		check_listing(&l, m, desc);
		free(l.v);
	}
	check_seek(e, ino, m, what);
}

/* ====================================================================== */

static void test_read_your_writes(void)
{
	struct eng_config cfg = lazy_cfg("ryw");
	struct eng *e = open_ok(&cfg);
	struct eng_file *f = NULL, *g = NULL;
	struct eng_attr a, b;
	const char *v1 = "{\"x\":1}", *v2 = "[1,2,3]";
	char bin[] = {'b', '\0', 'i', '\0', 'n'};
	char buf[64], st[32];
	uint64_t ino, bino;
	bool keep;

	CHECK_EQ(eng_create(e, ROOT, "a.json", 0644, O_RDWR | O_CREAT, &ctx, &a,
			    &f),
		 0);
	ino = a.ino;
	CHECK_EQ(a.kind, ITEM_JSON);
	CHECK_EQ(a.size, 0);
	CHECK_EQ(eng_write(e, f, v1, strlen(v1), 0), (long long)strlen(v1));
	/* the writer, another handle and getattr see the working copy */
	CHECK_EQ(eng_read(e, f, buf, sizeof(buf), 0), (long long)strlen(v1));
	CHECK(memcmp(buf, v1, strlen(v1)) == 0);
	CHECK_EQ(eng_file_open(e, ino, O_RDONLY, &g, &keep), 0);
	CHECK_EQ(eng_read(e, g, buf, sizeof(buf), 0), (long long)strlen(v1));
	CHECK(memcmp(buf, v1, strlen(v1)) == 0);
	CHECK_EQ(eng_getattr(e, ino, &b), 0);
	CHECK_EQ(b.size, strlen(v1));
	eng_release(e, g);
	/* published: visible to new opens, by name and by ID */
	CHECK_EQ(eng_flush(e, f), 0);
	CHECK(!eng_release(e, f));
	a = lookup_attr(e, ROOT, "a.json");
	CHECK_EQ(a.ino, ino);
	CHECK_EQ(a.size, strlen(v1));
	check_text(e, ino, v1);
	check_item(e, "a", ITEM_JSON, v1);
	CHECK_STREQ(xattr_str(e, ino, "user.tierfs.status", st, sizeof(st)),
		    "pending");
	/* nothing reached L3 */
	CHECK_EQ(l3_ino(&cfg, ROOT, "a.json"), -ENOENT);

	/* a second version replaces the first at once */
	CHECK_EQ(rewrite(e, ino, v2, strlen(v2)), 0);
	check_text(e, ino, v2);
	check_item(e, "a", ITEM_JSON, v2);
	CHECK_EQ(lookup_attr(e, ROOT, "a.json").size, strlen(v2));
	CHECK(lookup_attr(e, ROOT, "a.json").version > a.version);

	/* binary bytes, NULs included; eng_put items too */
	CHECK_EQ(put_file(e, ROOT, "b.bin", bin, sizeof(bin), &bino), 0);
	check_content(e, bino, bin, sizeof(bin));
	CHECK_EQ(eng_put(e, "c", ITEM_BINARY, bin, sizeof(bin)), 0);
	check_content(e, lookup_ok(e, ROOT, "c"), bin, sizeof(bin));
	CHECK_EQ(eng_put(e, "d", ITEM_JSON, v1, strlen(v1)), 0);
	check_text(e, lookup_ok(e, ROOT, "d.json"), v1);
	check_item(e, "d", ITEM_JSON, v1);
	CHECK_EQ(eng_put(e, "d", ITEM_JSON, v2, strlen(v2)), 0);
	check_item(e, "d", ITEM_JSON, v2);

	/* and all of it after a close (nothing was due) */
	e = reopen(e, &cfg);
	check_text(e, lookup_ok(e, ROOT, "a.json"), v2);
	check_content(e, lookup_ok(e, ROOT, "b.bin"), bin, sizeof(bin));
	check_item_bytes(e, "c", ITEM_BINARY, bin, sizeof(bin));
	check_item(e, "d", ITEM_JSON, v2);
	close_ok(e);
}

static void test_invalid_json(void)
{
	struct eng_config cfg = lazy_cfg("json");
	struct eng *e = open_ok(&cfg);
	const char *good = "{\"v\":1}", *bad = "{\"v\":";
	struct eng_file *f = NULL;
	struct eng_attr a;
	uint64_t ino, eino, fino;
	bool keep;

	ino = put_file_ok(e, ROOT, "c.json", good);
	/* a publish of invalid JSON fails and keeps the old version */
	CHECK_EQ(eng_file_open(e, ino, O_WRONLY | O_TRUNC, &f, &keep), 0);
	CHECK_EQ(eng_write(e, f, bad, strlen(bad), 0), (long long)strlen(bad));
	CHECK_EQ(eng_flush(e, f), -EINVAL);
	CHECK_EQ(eng_fsync(e, f), -EINVAL);
	CHECK(eng_release(e, f)); /* unpublished changes were dropped */
	check_text(e, ino, good);
	CHECK_EQ(lookup_attr(e, ROOT, "c.json").size, strlen(good));
	check_item(e, "c", ITEM_JSON, good);
	/* trailing garbage, two texts */
	CHECK_EQ(rewrite(e, ino, "{} x", 4), -EINVAL);
	CHECK_EQ(rewrite(e, ino, "{}{}", 4), -EINVAL);
	CHECK_EQ(rewrite(e, ino, "\"\xff\"", 3), -EINVAL);
	check_text(e, ino, good);
	/* the library path refuses it the same way */
	CHECK_EQ(eng_put(e, "c", ITEM_JSON, bad, strlen(bad)), -EINVAL);
	check_item(e, "c", ITEM_JSON, good);
	/* empty is valid */
	CHECK_EQ(put_file(e, ROOT, "empty.json", "", 0, NULL), 0);
	/* a new file whose first publish fails stays empty */
	CHECK_EQ(put_file(e, ROOT, "new.json", "nope", 4, &fino), -EINVAL);
	check_text(e, fino, "");
	/* a binary file is not checked, but moving it onto a .json name is */
	eino = put_file_ok(e, ROOT, "e.txt", "not json");
	CHECK_EQ(eng_rename(e, ROOT, "e.txt", ROOT, "e.json", 0), -EINVAL);
	CHECK_EQ(lookup(e, ROOT, "e.json"), -ENOENT);
	check_text(e, lookup_ok(e, ROOT, "e.txt"), "not json");
	CHECK_EQ(eng_rename(e, ROOT, "e.txt", ROOT, "f.txt", 0), 0);
	CHECK_EQ(rewrite(e, eino, "[true]", 6), 0);
	CHECK_EQ(eng_rename(e, ROOT, "f.txt", ROOT, "f.json", 0), 0);
	a = lookup_attr(e, ROOT, "f.json");
	CHECK_EQ(a.ino, eino);
	CHECK_EQ(a.kind, ITEM_JSON);
	check_item(e, "f", ITEM_JSON, "[true]");

	e = reopen(e, &cfg);
	check_text(e, lookup_ok(e, ROOT, "c.json"), good);
	check_text(e, lookup_ok(e, ROOT, "new.json"), "");
	check_item(e, "f", ITEM_JSON, "[true]");
	close_ok(e);
}

static void test_efbig(void)
{
	struct eng_config cfg = lazy_cfg("efbig");
	struct eng_setattr sa = {.set_size = true, .size = 101};
	char data[128];
	struct eng_file *f = NULL;
	struct eng_attr a;
	struct eng *e;
	uint64_t ino;
	bool keep;

	cfg.max_item_bytes = 100;
	e = open_ok(&cfg);
	memset(data, 'z', sizeof(data));
	CHECK_EQ(eng_create(e, ROOT, "big", 0644, O_WRONLY | O_CREAT, &ctx, &a,
			    &f),
		 0);
	ino = a.ino;
	CHECK_EQ(eng_write(e, f, data, 100, 0), 100);
	CHECK_EQ(eng_write(e, f, data, 1, 99), 1);
	CHECK_EQ(eng_flush(e, f), 0); /* exactly the limit */
	eng_release(e, f);
	check_content(e, ino, data, 100);

	/* one byte past it: the write fails, and (engine.h) the working copy
	 * is never published: every later flush fails, the version stays */
	memset(data, 'y', 50);
	CHECK_EQ(eng_file_open(e, ino, O_WRONLY, &f, &keep), 0);
	CHECK_EQ(eng_write(e, f, data, 50, 0), 50);
	CHECK_EQ(eng_write(e, f, data, 1, 100), -EFBIG);
	CHECK_EQ(eng_write(e, f, data, 101, 0), -EFBIG);
	CHECK_EQ(eng_flush(e, f), -EFBIG);
	CHECK_EQ(eng_fsync(e, f), -EFBIG);
	CHECK(eng_release(e, f)); /* unpublished changes were dropped */
	memset(data, 'z', sizeof(data));
	check_content(e, ino, data, 100);
	/* a new handle starts afresh */
	CHECK_EQ(eng_file_open(e, ino, O_WRONLY | O_TRUNC, &f, &keep), 0);
	CHECK_EQ(eng_write(e, f, data, 100, 0), 100);
	CHECK_EQ(eng_flush(e, f), 0);
	eng_release(e, f);
	check_content(e, ino, data, 100);
	CHECK_EQ(eng_setattr(e, ino, NULL, &sa, &ctx, &a), -EFBIG);
	check_content(e, ino, data, 100);
	CHECK_EQ(eng_put(e, "p", ITEM_BINARY, data, 101), -EFBIG);
	CHECK_EQ(lookup(e, ROOT, "p"), -ENOENT);
	CHECK_EQ(eng_put(e, "p", ITEM_BINARY, data, 100), 0);
	CHECK_EQ(eng_put(e, "p", ITEM_BINARY, data, 101), -EFBIG);
	check_item_bytes(e, "p", ITEM_BINARY, data, 100);
	close_ok(e);
}

static void test_names(void)
{
	struct eng_config cfg = lazy_cfg("names");
	struct eng *e = open_ok(&cfg);
	struct dirmodel m = {0};
	struct eng_attr a;
	uint64_t dino, xino, yino, djino;

	xino = put_file_ok(e, ROOT, "x", "binary x");
	CHECK_EQ(put_file(e, ROOT, "x.json", "{}", 2, NULL), -EEXIST);
	CHECK_EQ(eng_put(e, "x", ITEM_JSON, "{}", 2), -EEXIST);
	CHECK_EQ(eng_mkdir(e, ROOT, "x", 0755, &ctx, &a), -EEXIST);
	yino = put_file_ok(e, ROOT, "y.json", "{\"y\":1}");
	CHECK_EQ(put_file(e, ROOT, "y", "b", 1, NULL), -EEXIST);
	CHECK_EQ(eng_put(e, "y", ITEM_BINARY, "b", 1), -EEXIST);
	/* a JSON file beside the directory of the same stem is fine */
	dino = mkdir_ok(e, ROOT, "d");
	djino = put_file_ok(e, ROOT, "d.json", "{\"d\":1}");
	CHECK_EQ(put_file(e, ROOT, "d", "b", 1, NULL), -EEXIST);
	CHECK_EQ(eng_mkdir(e, ROOT, "d", 0755, &ctx, &a), -EEXIST);
	/* and the other way round */
	put_file_ok(e, ROOT, "k.json", "{}");
	mkdir_ok(e, ROOT, "k");
	/* a rename may not make a duplicate either */
	put_file_ok(e, ROOT, "z", "z");
	CHECK_EQ(eng_rename(e, ROOT, "z", ROOT, "y", 0), -EEXIST);
	/* "z" is not JSON either, but the stem is checked before the content
	 * is (eng_rename: check_stem, then item_json_valid) */
	CHECK_EQ(eng_rename(e, ROOT, "z", ROOT, "x.json", 0), -EEXIST);
	CHECK_EQ(eng_rename(e, ROOT, "z", ROOT, "x", RENAME_NOREPLACE),
		 -EEXIST);
	CHECK_EQ(eng_rename(e, ROOT, "z", ROOT, "d", 0), -EISDIR);
	CHECK_EQ(lookup(e, ROOT, "y"), -ENOENT);

	model_add(&m, "x", xino);
	model_add(&m, "y.json", yino);
	model_add(&m, "d", dino);
	model_add(&m, "d.json", djino);
	model_add(&m, "k.json", lookup_ok(e, ROOT, "k.json"));
	model_add(&m, "k", lookup_ok(e, ROOT, "k"));
	model_add(&m, "z", lookup_ok(e, ROOT, "z"));
	check_dir(e, ROOT, &m, "root, pending");

	/* the same refusals against entries that are only in L3 */
	e = reopen(e, &cfg);
	CHECK_EQ(put_file(e, ROOT, "x.json", "{}", 2, NULL), -EEXIST);
	CHECK_EQ(put_file(e, ROOT, "y", "b", 1, NULL), -EEXIST);
	CHECK_EQ(eng_put(e, "x", ITEM_JSON, "{}", 2), -EEXIST);
	CHECK_EQ(eng_rename(e, ROOT, "z", ROOT, "y", 0), -EEXIST);
	CHECK_EQ(eng_mkdir(e, ROOT, "x", 0755, &ctx, &a), -EEXIST);
	check_dir(e, ROOT, &m, "root, persisted");
	CHECK_EQ(lookup_ok(e, ROOT, "d"), dino);
	CHECK_EQ(lookup_ok(e, ROOT, "d.json"), djino);
	close_ok(e);
	free(m.v);
}

/* docs/design.md §12: a delete while a write is pending must not bring
 * the item back. */
static void test_delete_beats_pending_write(void)
{
	struct eng_config cfg = lazy_cfg("resurrect");
	struct eng *e = open_ok(&cfg);
	struct eng_file *f = NULL;
	struct item *it = NULL;
	uint64_t ino;
	bool keep;
	char buf[32];

	/* 1: created and deleted, never persisted */
	put_file_ok(e, ROOT, "r1.json", "{\"a\":1}");
	CHECK_EQ(eng_unlink(e, ROOT, "r1.json"), 0);
	CHECK_EQ(lookup(e, ROOT, "r1.json"), -ENOENT);

	/* 2: persisted, then a pending write, then the delete */
	ino = put_file_ok(e, ROOT, "r2.json", "{\"v\":1}");
	CHECK_EQ(eng_sync(e), 0);
	CHECK_EQ(l3_ino(&cfg, ROOT, "r2.json"), (long long)ino);
	CHECK_EQ(rewrite(e, ino, "{\"v\":2}", 7), 0);
	CHECK_EQ(eng_unlink(e, ROOT, "r2.json"), 0);
	CHECK_EQ(lookup(e, ROOT, "r2.json"), -ENOENT);

	/* 3: persisted, open, deleted, then written and published through
	 * the open handle */
	ino = put_file_ok(e, ROOT, "r3", "old");
	CHECK_EQ(eng_sync(e), 0);
	CHECK_EQ(eng_file_open(e, ino, O_RDWR, &f, &keep), 0);
	CHECK_EQ(eng_unlink(e, ROOT, "r3"), 0);
	CHECK_EQ(eng_write(e, f, "new!", 4, 0), 4);
	CHECK_EQ(eng_flush(e, f), 0);
	CHECK_EQ(eng_read(e, f, buf, sizeof(buf), 0), 4); /* still readable */
	CHECK(memcmp(buf, "new!", 4) == 0);
	CHECK_EQ(eng_fsync(e, f), 0);
	eng_release(e, f);
	CHECK_EQ(lookup(e, ROOT, "r3"), -ENOENT);
	CHECK_EQ(l3_ino(&cfg, ROOT, "r3"), -ENOENT);

	/* 4: by ID, never persisted */
	CHECK_EQ(eng_put(e, "r4", ITEM_JSON, "[4]", 3), 0);
	CHECK_EQ(eng_delete(e, "r4", ITEM_JSON), 0);
	CHECK_EQ(eng_get(e, "r4", ITEM_JSON, &it), -ENOENT);
	CHECK_EQ(eng_delete(e, "r4", ITEM_JSON), -ENOENT);

	/* 5: by ID, persisted, then a pending put, then the delete */
	CHECK_EQ(eng_put(e, "r5", ITEM_BINARY, "5", 1), 0);
	CHECK_EQ(eng_sync(e), 0);
	CHECK_EQ(eng_put(e, "r5", ITEM_BINARY, "55", 2), 0);
	CHECK_EQ(eng_delete(e, "r5", ITEM_BINARY), 0);
	CHECK_EQ(eng_get(e, "r5", ITEM_BINARY, &it), -ENOENT);

	/* 6: a pending write held open while the delete is persisted, then
	 * published (fsync) after it */
	ino = put_file_ok(e, ROOT, "r6", "six");
	CHECK_EQ(eng_file_open(e, ino, O_WRONLY, &f, &keep), 0);
	CHECK_EQ(eng_write(e, f, "SIX", 3, 0), 3);
	CHECK_EQ(eng_unlink(e, ROOT, "r6"), 0);
	CHECK_EQ(eng_sync(e), 0);
	CHECK_EQ(eng_fsync(e, f), 0);
	eng_release(e, f);
	CHECK_EQ(l3_ino(&cfg, ROOT, "r6"), -ENOENT);

	e = reopen(e, &cfg);
	CHECK_EQ(lookup(e, ROOT, "r1.json"), -ENOENT);
	CHECK_EQ(lookup(e, ROOT, "r2.json"), -ENOENT);
	CHECK_EQ(lookup(e, ROOT, "r3"), -ENOENT);
	CHECK_EQ(lookup(e, ROOT, "r6"), -ENOENT);
	CHECK_EQ(eng_get(e, "r4", ITEM_JSON, &it), -ENOENT);
	CHECK_EQ(eng_get(e, "r5", ITEM_BINARY, &it), -ENOENT);
	{
		struct dirmodel m = {0};

		check_dir(e, ROOT, &m, "root after deletes");
	}
	close_ok(e);
}

static void test_close_persists(void)
{
	enum { N = 200 };
	struct eng_config cfg = lazy_cfg("close");
	struct eng_config plain;
	struct eng *e = open_ok(&cfg);
	struct eng_setattr sa = {.set_mode = true, .mode = 0600};
	struct eng_attr a;
	char name[32], text[64], val[32];
	uint64_t dir, inos[N];

	dir = mkdir_ok(e, ROOT, "keep");
	mkdir_ok(e, dir, "empty");
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "f%03d%s", i,
			 i % 2 ? ".json" : ".txt");
		snprintf(text, sizeof(text), "{\"i\":%d}", i);
		inos[i] = put_file_ok(e, dir, name, text);
	}
	CHECK_EQ(eng_setxattr(e, inos[0], "user.color", "blue", 4, 0), 0);
	CHECK_EQ(eng_setattr(e, inos[1], NULL, &sa, &ctx, &a), 0);
	CHECK_EQ(eng_rename(e, dir, "f002.txt", ROOT, "moved.txt", 0), 0);
	CHECK_EQ(eng_put(e, "lib.item", ITEM_JSON, "true", 4), 0);
	CHECK_EQ(l3_ino(&cfg, ROOT, "keep"), -ENOENT); /* nothing was due */

	close_ok(e); /* must persist all of it */
	CHECK(l3_ino(&cfg, ROOT, "keep") > ROOT);
	CHECK(l3_content_is(&cfg, inos[3], "{\"i\":3}", 7));

	eng_config_init(&plain);
	plain.sqlite_path = cfg.sqlite_path;
	plain.log = cfg.log;
	e = open_ok(&plain);
	CHECK_EQ(lookup_ok(e, ROOT, "keep"), dir);
	CHECK(lookup(e, dir, "empty") > ROOT);
	for (int i = 0; i < N; i++) {
		if (i == 2)
			continue;
		snprintf(name, sizeof(name), "f%03d%s", i,
			 i % 2 ? ".json" : ".txt");
		snprintf(text, sizeof(text), "{\"i\":%d}", i);
		CHECK_EQ(lookup_ok(e, dir, name), inos[i]);
		check_text(e, inos[i], text);
	}
	CHECK_EQ(lookup(e, dir, "f002.txt"), -ENOENT);
	CHECK_EQ(lookup_ok(e, ROOT, "moved.txt"), inos[2]);
	check_text(e, inos[2], "{\"i\":2}");
	CHECK_STREQ(xattr_str(e, inos[0], "user.color", val, sizeof(val)),
		    "blue");
	CHECK_EQ(lookup_attr(e, dir, "f001.json").mode & 07777, 0600);
	check_item(e, "lib.item", ITEM_JSON, "true");
	close_ok(e);
}

static void test_tiny_l1(void)
{
	enum { N = 40, SIZE = 1000 };
	struct eng_config cfg = lazy_cfg("tinyl1");
	struct eng *e;
	char data[SIZE], id[16];
	uint64_t inos[N];

	cfg.l1_max_bytes = 1;
	e = open_ok(&cfg);
	for (int i = 0; i < N; i++) {
		char name[16];

		memset(data, 'a' + i % 26, SIZE);
		snprintf(name, sizeof(name), "f%02d", i);
		CHECK_EQ(put_file(e, ROOT, name, data, SIZE, &inos[i]), 0);
		snprintf(id, sizeof(id), "i%02d", i);
		CHECK_EQ(eng_put(e, id, ITEM_BINARY, data, SIZE), 0);
	}
	/* every pending version is still readable */
	for (int i = 0; i < N; i++) {
		memset(data, 'a' + i % 26, SIZE);
		check_content(e, inos[i], data, SIZE);
		snprintf(id, sizeof(id), "i%02d", i);
		{
			struct item *it = NULL;

			CHECK_EQ(eng_get(e, id, ITEM_BINARY, &it), 0);
			CHECK_EQ(item_size(it), SIZE);
			CHECK(memcmp(item_data(it), data, SIZE) == 0);
			item_unref(it);
		}
	}
	/* newer versions too */
	for (int i = 0; i < N; i += 2) {
		memset(data, 'A' + i % 26, SIZE);
		CHECK_EQ(rewrite(e, inos[i], data, SIZE), 0);
	}
	for (int i = 0; i < N; i++) {
		memset(data, (i % 2 ? 'a' : 'A') + i % 26, SIZE);
		check_content(e, inos[i], data, SIZE);
	}
	/* persisted and unpinned, they come back from L3 */
	CHECK_EQ(eng_sync(e), 0);
	for (int i = 0; i < N; i++) {
		memset(data, (i % 2 ? 'a' : 'A') + i % 26, SIZE);
		check_content(e, inos[i], data, SIZE);
	}
	e = reopen(e, &cfg);
	for (int i = 0; i < N; i++) {
		char name[16];

		memset(data, (i % 2 ? 'a' : 'A') + i % 26, SIZE);
		snprintf(name, sizeof(name), "f%02d", i);
		CHECK_EQ(lookup_ok(e, ROOT, name), inos[i]);
		check_content(e, inos[i], data, SIZE);
	}
	close_ok(e);
}

/* An open file keeps its content: reads through the handle do not fetch
 * it from L3 again when L1 (too small to hold it) evicts it. */
static void test_open_file_keeps_content(void)
{
	enum { SIZE = 1 << 20, CHUNK = 128 << 10 };
	struct eng_config cfg = lazy_cfg("openkeeps");
	char *data = malloc(SIZE), *buf = malloc(CHUNK);
	struct eng_file *f;
	unsigned long long before;
	uint64_t ino;
	bool keep;
	struct eng *e;

	for (int i = 0; i < SIZE; i++)
		data[i] = (char)(i * 7);
	cfg.l1_max_bytes = 1000;
	e = open_ok(&cfg);
	CHECK_EQ(put_file(e, ROOT, "big.bin", data, SIZE, &ino), 0);
	e = reopen(e, &cfg);
	CHECK_EQ(lookup_ok(e, ROOT, "big.bin"), ino);
	before = l3_calls(e, "read"); /* the open fetches it (see open_node()) */
	CHECK_EQ(eng_file_open(e, ino, O_RDONLY, &f, &keep), 0);
	for (int off = 0; off < SIZE; off += CHUNK) {
		CHECK_EQ(eng_read(e, f, buf, CHUNK, off), CHUNK);
		CHECK(memcmp(buf, data + off, CHUNK) == 0);
	}
	CHECK_EQ(l3_calls(e, "read") - before, 1);
	eng_release(e, f);
	close_ok(e);
	free(data);
	free(buf);
}

/* 1000 entries, half persisted and half pending, with deletes and renames
 * of both kinds, listed in every paging. */
static void test_readdir_merge(void)
{
	enum { N = 1000 };
	struct eng_config cfg = lazy_cfg("readdir");
	struct eng *e = open_ok(&cfg);
	struct dirmodel m = {0};
	struct eng_file *f = NULL;
	struct eng_attr a;
	char name[32], st[32];
	uint64_t dir, out, ino, a_ino, b_ino;

	dir = mkdir_ok(e, ROOT, "big");
	out = mkdir_ok(e, ROOT, "other");
	/* the even names, persisted: the last one through eng_fsync */
	for (int i = 0; i < N; i += 2) {
		snprintf(name, sizeof(name), "n%04d", i);
		if (i < N - 2) {
			ino = put_file_ok(e, dir, name, name);
		} else {
			CHECK_EQ(eng_create(e, dir, name, 0644,
					    O_WRONLY | O_CREAT, &ctx, &a, &f),
				 0);
			ino = a.ino;
			CHECK_EQ(eng_write(e, f, name, strlen(name), 0),
				 (long long)strlen(name));
			CHECK_EQ(eng_fsync(e, f), 0);
			eng_release(e, f);
		}
		model_add(&m, name, ino);
	}
	CHECK(l3_ino(&cfg, dir, "n0000") > ROOT);
	CHECK(l3_ino(&cfg, dir, "n0998") > ROOT);
	CHECK_STREQ(
		xattr_str(e, m.v[0].ino, "user.tierfs.status", st, sizeof(st)),
		"synced");
	/* the odd names, pending */
	for (int i = 1; i < N; i += 2) {
		snprintf(name, sizeof(name), "n%04d", i);
		model_add(&m, name, put_file_ok(e, dir, name, name));
	}
	CHECK_EQ(l3_ino(&cfg, dir, "n0001"), -ENOENT);
	check_dir(e, dir, &m, "1000 entries");

	/* deletes: persisted and pending ones */
	for (int i = 10; i <= 100; i += 10) {
		snprintf(name, sizeof(name), "n%04d", i);
		CHECK_EQ(eng_unlink(e, dir, name), 0);
		model_del(&m, name);
		snprintf(name, sizeof(name), "n%04d", i + 1);
		CHECK_EQ(eng_unlink(e, dir, name), 0);
		model_del(&m, name);
	}
	/* renames within the directory: to the front, the end, between */
	{
		static const char *const moves[][2] = {
			{"n0200", "a0200"},  {"n0202", "z0202"},
			{"n0204", "n0204b"}, {"n0301", "a0301"},
			{"n0303", "zz0303"}, {"n0305", "n0305a"},
		};

		for (size_t i = 0; i < sizeof(moves) / sizeof(moves[0]); i++) {
			struct entry *p = model_find(&m, moves[i][0]);

			CHECK(p != NULL);
			CHECK_EQ(eng_rename(e, dir, moves[i][0], dir,
					    moves[i][1], 0),
				 0);
			snprintf(p->name, sizeof(p->name), "%s", moves[i][1]);
		}
	}
	/* renames out of and into the directory */
	CHECK_EQ(eng_rename(e, dir, "n0400", out, "n0400", 0), 0);
	model_del(&m, "n0400");
	CHECK_EQ(eng_rename(e, dir, "n0401", out, "n0401", 0), 0);
	model_del(&m, "n0401");
	ino = put_file_ok(e, out, "incoming", "in");
	CHECK_EQ(eng_rename(e, out, "incoming", dir, "n0500a", 0), 0);
	model_add(&m, "n0500a", ino);
	/* a swap of a persisted and a pending entry through a temp name */
	a_ino = lookup_ok(e, dir, "n0600");
	b_ino = lookup_ok(e, dir, "n0601");
	CHECK_EQ(eng_rename(e, dir, "n0600", dir, "swap.tmp", 0), 0);
	CHECK_EQ(eng_rename(e, dir, "n0601", dir, "n0600", 0), 0);
	CHECK_EQ(eng_rename(e, dir, "swap.tmp", dir, "n0601", 0), 0);
	model_find(&m, "n0600")->ino = b_ino;
	model_find(&m, "n0601")->ino = a_ino;
	/* a replacing rename: persisted over pending and back */
	CHECK_EQ(eng_rename(e, dir, "n0700", dir, "n0701", 0), 0);
	model_find(&m, "n0701")->ino = model_find(&m, "n0700")->ino;
	model_del(&m, "n0700");
	CHECK_EQ(eng_rename(e, dir, "n0703", dir, "n0702", 0), 0);
	model_find(&m, "n0702")->ino = model_find(&m, "n0703")->ino;
	model_del(&m, "n0703");
	/* a persisted file rewritten, one chmod-ed: pending, same name */
	CHECK_EQ(rewrite(e, lookup_ok(e, dir, "n0800"), "x", 1), 0);
	{
		struct eng_setattr sa = {.set_mode = true, .mode = 0600};

		CHECK_EQ(eng_setattr(e, lookup_ok(e, dir, "n0802"), NULL, &sa,
				     &ctx, &a),
			 0);
	}
	check_dir(e, dir, &m, "after changes");

	CHECK_EQ(eng_sync(e), 0);
	check_dir(e, dir, &m, "after sync");
	e = reopen(e, &cfg);
	CHECK_EQ(lookup_ok(e, ROOT, "big"), dir); /* the kernel's lookup */
	check_dir(e, dir, &m, "after reopen");
	check_text(e, lookup_ok(e, dir, "n0600"), "n0601");
	check_text(e, lookup_ok(e, dir, "n0601"), "n0600");
	check_text(e, lookup_ok(e, dir, "n0800"), "x");
	close_ok(e);
	free(m.v);
}

/* A run of more than one listing page (LIST_PAGE is 128 in engine.c) of
 * persisted entries that all have pending changes. */
static void test_readdir_dirty_run(void)
{
	enum { N = 300, RUN = 150 };
	struct eng_config cfg = lazy_cfg("dirtyrun");
	struct eng *e = open_ok(&cfg);
	struct dirmodel m = {0};
	struct eng_setattr sa = {.set_mode = true, .mode = 0600};
	struct eng_attr a;
	char name[32];
	uint64_t dir, inos[N];

	dir = mkdir_ok(e, ROOT, "run");
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "r%04d", i);
		inos[i] = put_file_ok(e, dir, name, name);
	}
	CHECK_EQ(eng_sync(e), 0);
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "r%04d", i);
		model_add(&m, name, inos[i]);
	}
	check_dir(e, dir, &m, "persisted run");

	/* chmod the first RUN entries: pending metadata, same names */
	for (int i = 0; i < RUN; i++)
		CHECK_EQ(eng_setattr(e, inos[i], NULL, &sa, &ctx, &a), 0);
	check_dir(e, dir, &m, "run of chmods");
	CHECK_EQ(eng_sync(e), 0);

	/* rewrite them: pending content */
	for (int i = 0; i < RUN; i++)
		CHECK_EQ(rewrite(e, inos[i], "new", 3), 0);
	check_dir(e, dir, &m, "run of rewrites");
	CHECK_EQ(eng_sync(e), 0);

	/* delete them: pending deletes */
	for (int i = 0; i < RUN; i++) {
		snprintf(name, sizeof(name), "r%04d", i);
		CHECK_EQ(eng_unlink(e, dir, name), 0);
		model_del(&m, name);
	}
	check_dir(e, dir, &m, "run of deletes");
	e = reopen(e, &cfg);
	CHECK_EQ(lookup_ok(e, ROOT, "run"), dir);
	check_dir(e, dir, &m, "run after reopen");
	close_ok(e);
	free(m.v);
}

/*
 * A listing longer than the rows a handle reads ahead (LIST_AHEAD, 1024),
 * 100 entries per call, with entries created and deleted in the middle of
 * it, before and after its position, pending or persisted (the read-ahead
 * rows are then older than L3): every name once, in inode order; the
 * untouched names and the new ones (numbered after every other, so ahead
 * of the position whatever their names) listed, those deleted ahead of
 * it not; the plus and names-only walks alike, with and without
 * prefetches (which run on their own threads, while the changes are made).
 */
static void check_changing_listing(struct eng *e, uint64_t dir, bool persist,
				   int mode, bool prefetch, const char *what)
{
	enum { N = 3000, STOP = 100, AT = 1000 };
	struct eng_dir *d = NULL;
	struct listing l = {.stop_every = STOP, .plus = mode == 1,
			    .names = mode == 2, .prefetch = prefetch};
	char name[32];
	size_t calls = 0;
	bool changed = false;

	snprintf(check_context, sizeof(check_context), "%s", what);
	CHECK_EQ(eng_opendir(e, dir, &d), 0);
	for (;;) {
		size_t before = l.n;

		if (l.n >= AT && !changed) {
			/* behind the position: gone or new, either way not
			 * listed again; ahead: deleted or new, and a run of
			 * deletes longer than a page */
			for (int i = 100; i < 200; i++) {
				snprintf(name, sizeof(name), "r%05d", i);
				CHECK_EQ(eng_unlink(e, dir, name), 0);
			}
			for (int i = 1100; i < 1400; i++) {
				snprintf(name, sizeof(name), "r%05d", i);
				CHECK_EQ(eng_unlink(e, dir, name), 0);
			}
			for (int i = 2500; i < 2600; i++) {
				snprintf(name, sizeof(name), "r%05d", i);
				CHECK_EQ(eng_unlink(e, dir, name), 0);
			}
			put_file_ok(e, dir, "r00050a", "new");
			put_file_ok(e, dir, "r01200a", "new");
			put_file_ok(e, dir, "r02999a", "new");
			if (persist)
				CHECK_EQ(eng_sync(e), 0);
			changed = true;
		}
		readdir_call(e, d, &l);
		CHECK(++calls < 1000);
		if (l.n == before || l.this_call < STOP)
			break;
	}
	listing_close(e, d, &l);
	CHECK(changed);
	CHECK(!prefetch || l.prefetches > 0);
	for (size_t i = 1; i < l.n; i++)
		if (l.v[i - 1].ino >= l.v[i].ino) {
			fprintf(stderr, "'%s' listed after '%s'\n",
				l.v[i].name, l.v[i - 1].name);
			CHECK(!"listing out of order or repeated");
		}
	/* the untouched names, the deleted ones behind and the new ones
	 * (the deletes ahead fall among the rows read ahead at the change,
	 * 896 to 1919, and beyond them): 3000 - 400 deleted ahead + 3 new,
	 * the last three */
	for (int i = 0; i < N; i++) {
		bool want = (i < 1100 || i >= 1400) && (i < 2500 || i >= 2600);
		bool found = false;

		snprintf(name, sizeof(name), "r%05d", i);
		for (size_t j = 0; j < l.n && !found; j++)
			found = strcmp(l.v[j].name, name) == 0;
		if (found != want)
			fprintf(stderr, "%s: %s\n", name,
				want ? "missing" : "listed after its delete");
		CHECK_EQ(found, want);
	}
	CHECK_EQ(l.n, (size_t)(N - 400 + 3));
	CHECK_STREQ(l.v[l.n - 3].name, "r00050a");
	CHECK_STREQ(l.v[l.n - 2].name, "r01200a");
	CHECK_STREQ(l.v[l.n - 1].name, "r02999a");
	for (size_t j = 0; j < l.n; j++) {
		if (l.plus)
			eng_forget(e, l.v[j].ino, 1);
	}
	lookup_ok(e, dir, "r01200a");
	free(l.v);
	check_context[0] = '\0';
}

static void test_readdir_read_ahead(void)
{
	struct eng_config cfg = lazy_cfg("ahead");
	struct eng *e = open_ok(&cfg);
	char name[32], what[80];

	for (int v = 0; v < 12; v++) {
		bool persist = v % 2, prefetch = v >= 6;
		int mode = v % 6 / 2;
		uint64_t dir;

		snprintf(name, sizeof(name), "d%d", v);
		dir = mkdir_ok(e, ROOT, name);
		for (int i = 0; i < 3000; i++) {
			snprintf(name, sizeof(name), "r%05d", i);
			put_file_ok(e, dir, name, "x");
		}
		CHECK_EQ(eng_sync(e), 0);
		snprintf(what, sizeof(what), "changing listing, %s, %s%s",
			 persist ? "persisted" : "pending",
			 mode == 0 ? "plain" : mode == 1 ? "plus" : "names",
			 prefetch ? ", prefetched" : "");
		check_changing_listing(e, dir, persist, mode, prefetch, what);
	}
	close_ok(e);
}

/*
 * A listing resumed from a cookie on a new handle, after changes on both
 * sides of it, goes on exactly after the entry that handed the cookie out:
 * removals and renames behind it shift nothing (a count would skip as
 * many entries as were removed), entries removed ahead are not listed, one
 * renamed ahead is listed once under its new name where it stood, and a
 * new one comes last. The changes pending, then persisted.
 */
static void test_readdir_resume_exact(void)
{
	enum { N = 600, AT = 250 };
	struct eng_config cfg = lazy_cfg("resume");
	struct eng *e = open_ok(&cfg);
	char name[32], what[32];

	for (int v = 0; v < 2; v++) {
		struct listing first = {.stop_every = AT}, rest;
		struct eng_dir *d = NULL;
		uint64_t dir, inos[N];
		size_t k = 0;

		snprintf(what, sizeof(what), "resume%d", v);
		snprintf(check_context, sizeof(check_context), "%s", what);
		dir = mkdir_ok(e, ROOT, what);
		for (int i = 0; i < N; i++) {
			snprintf(name, sizeof(name), "f%04d", i);
			inos[i] = put_file_ok(e, dir, name, "x");
		}
		CHECK_EQ(eng_sync(e), 0);
		CHECK_EQ(eng_opendir(e, dir, &d), 0);
		readdir_call(e, d, &first);
		eng_releasedir(e, d);
		CHECK_EQ(first.n, (size_t)AT);
		CHECK_EQ(first.next_off, inos[AT - 1]);
		for (int i = 0; i < 100; i++) { /* behind */
			snprintf(name, sizeof(name), "f%04d", 2 * i + 20);
			CHECK_EQ(eng_unlink(e, dir, name), 0);
		}
		CHECK_EQ(eng_rename(e, dir, "f0010", dir, "a-renamed", 0), 0);
		for (int i = 300; i < 350; i++) { /* ahead */
			snprintf(name, sizeof(name), "f%04d", i);
			CHECK_EQ(eng_unlink(e, dir, name), 0);
		}
		CHECK_EQ(eng_rename(e, dir, "f0400", dir, "0-renamed", 0), 0);
		put_file_ok(e, dir, "new", "n");
		if (v)
			CHECK_EQ(eng_sync(e), 0);
		CHECK_EQ(eng_opendir(e, dir, &d), 0);
		read_from(e, d, first.next_off, &rest);
		eng_releasedir(e, d);
		for (int i = AT; i < N; i++) {
			if (i >= 300 && i < 350)
				continue;
			if (i == 400)
				snprintf(name, sizeof(name), "0-renamed");
			else
				snprintf(name, sizeof(name), "f%04d", i);
			CHECK(k < rest.n);
			CHECK_STREQ(rest.v[k].name, name);
			CHECK_EQ(rest.v[k].ino, inos[i]);
			k++;
		}
		CHECK(k < rest.n);
		CHECK_STREQ(rest.v[k].name, "new");
		CHECK_EQ(rest.n, k + 1);
		free(first.v);
		free(rest.v);
	}
	check_context[0] = '\0';
	close_ok(e);
}

/*
 * An unchanged listing makes as many L3 queries with prefetches as
 * without (every prefetched row is used, none read twice), and lists the
 * same entries. A handle closed on another thread while its prefetch runs
 * waits for it: the closer usually starts while the prefetch queries L3
 * without e->lock, where freeing the handle would show under ASan.
 */
static void test_readdir_prefetch(void)
{
	struct eng_config cfg = lazy_cfg("prefetch");
	struct eng *e = open_ok(&cfg);
	struct listing plain = {0}, pre = {.prefetch = true};
	unsigned long long q0, q1, q2;
	struct eng_dir *d = NULL;
	char name[32];
	uint64_t dir;
	bool pf = false;

	dir = mkdir_ok(e, ROOT, "big");
	for (int i = 0; i < 5000; i++) {
		snprintf(name, sizeof(name), "p%05d", i);
		put_file_ok(e, dir, name, "x");
	}
	CHECK_EQ(eng_sync(e), 0);
	q0 = l3_calls(e, "list");
	list_dir(e, dir, 100, false, &plain);
	q1 = l3_calls(e, "list");
	list_dir(e, dir, 100, false, &pre);
	q2 = l3_calls(e, "list");
	CHECK_EQ(plain.n, (size_t)5000);
	CHECK_EQ(pre.n, plain.n);
	for (size_t i = 0; i < pre.n; i++)
		CHECK(strcmp(pre.v[i].name, plain.v[i].name) == 0);
	CHECK(pre.prefetches >= 3);
	CHECK_EQ(q2 - q1, q1 - q0);

	/* reserved, then closed on another thread before it runs */
	CHECK_EQ(eng_opendir(e, dir, &d), 0);
	pre.n = 0;
	pre.stop_every = 300;
	for (pre.next_off = 0; !pf; pre.next_off = pre.v[pre.n - 1].next_off) {
		pre.this_call = 0;
		CHECK_EQ(eng_readdir(e, d, pre.next_off, false, listing_fn,
				     &pre, &pf),
			 0);
		CHECK(pre.this_call == 300);
	}
	pre.e = e;
	pre.d = d;
	{
		pthread_t closer;

		CHECK_EQ(pthread_create(&closer, NULL, close_main, &pre), 0);
		eng_readdir_prefetch(e, d);
		CHECK_EQ(pthread_join(closer, NULL), 0);
	}
	free(plain.v);
	free(pre.v);
	close_ok(e);
}

static void test_rename_swap(void)
{
	struct eng_config cfg = lazy_cfg("swap");
	struct eng *e = open_ok(&cfg);
	const char *va = "{\"v\":\"a\"}", *vb = "{\"v\":\"b\"}";
	const char *vc = "{\"v\":\"c\"}", *vd = "{\"v\":\"d\"}";
	uint64_t ia, ib, ic, id;

	/* persisted pair */
	ia = put_file_ok(e, ROOT, "a.json", va);
	ib = put_file_ok(e, ROOT, "b.json", vb);
	CHECK_EQ(eng_sync(e), 0);
	/* pending pair */
	ic = put_file_ok(e, ROOT, "c.json", vc);
	id = put_file_ok(e, ROOT, "d.json", vd);

	CHECK_EQ(eng_rename(e, ROOT, "a.json", ROOT, "a.json.tmp", 0), 0);
	CHECK_EQ(eng_rename(e, ROOT, "b.json", ROOT, "a.json", 0), 0);
	CHECK_EQ(eng_rename(e, ROOT, "a.json.tmp", ROOT, "b.json", 0), 0);
	CHECK_EQ(eng_rename(e, ROOT, "c.json", ROOT, "tmp", 0), 0);
	CHECK_EQ(eng_rename(e, ROOT, "d.json", ROOT, "c.json", 0), 0);
	CHECK_EQ(eng_rename(e, ROOT, "tmp", ROOT, "d.json", 0), 0);

	/* at once */
	CHECK_EQ(lookup_ok(e, ROOT, "a.json"), ib);
	CHECK_EQ(lookup_ok(e, ROOT, "b.json"), ia);
	CHECK_EQ(lookup_ok(e, ROOT, "c.json"), id);
	CHECK_EQ(lookup_ok(e, ROOT, "d.json"), ic);
	CHECK_EQ(lookup(e, ROOT, "a.json.tmp"), -ENOENT);
	CHECK_EQ(lookup(e, ROOT, "tmp"), -ENOENT);
	check_item(e, "a", ITEM_JSON, vb);
	check_item(e, "b", ITEM_JSON, va);
	check_item(e, "c", ITEM_JSON, vd);
	check_item(e, "d", ITEM_JSON, vc);

	/* in L3, in one batch */
	CHECK_EQ(eng_sync(e), 0);
	check_no_log_errors();
	CHECK_EQ(l3_ino(&cfg, ROOT, "a.json"), (long long)ib);
	CHECK_EQ(l3_ino(&cfg, ROOT, "b.json"), (long long)ia);
	CHECK_EQ(l3_ino(&cfg, ROOT, "c.json"), (long long)id);
	CHECK_EQ(l3_ino(&cfg, ROOT, "d.json"), (long long)ic);
	CHECK_EQ(l3_ino(&cfg, ROOT, "tmp"), -ENOENT);

	/* and the swap back, all persisted, then close */
	CHECK_EQ(eng_rename(e, ROOT, "a.json", ROOT, "x", 0), 0);
	CHECK_EQ(eng_rename(e, ROOT, "b.json", ROOT, "a.json", 0), 0);
	CHECK_EQ(eng_rename(e, ROOT, "x", ROOT, "b.json", 0), 0);
	e = reopen(e, &cfg);
	CHECK_EQ(lookup_ok(e, ROOT, "a.json"), ia);
	CHECK_EQ(lookup_ok(e, ROOT, "b.json"), ib);
	CHECK_EQ(lookup_ok(e, ROOT, "c.json"), id);
	CHECK_EQ(lookup_ok(e, ROOT, "d.json"), ic);
	CHECK_EQ(lookup(e, ROOT, "x"), -ENOENT);
	check_item(e, "a", ITEM_JSON, va);
	check_item(e, "b", ITEM_JSON, vb);
	check_item(e, "c", ITEM_JSON, vd);
	check_item(e, "d", ITEM_JSON, vc);
	close_ok(e);
}

static void test_fsync_status(void)
{
	struct eng_config cfg = lazy_cfg("fsync");
	struct eng *e = open_ok(&cfg);
	const char *v1 = "{\"s\":1}", *v2 = "{\"s\":22}";
	struct eng_file *f = NULL;
	struct eng_attr a;
	char st[32], hex[65], want[65], ver[32];
	uint64_t ino, v;

	CHECK_EQ(eng_create(e, ROOT, "s.json", 0644, O_RDWR | O_CREAT, &ctx, &a,
			    &f),
		 0);
	ino = a.ino;
	CHECK_EQ(eng_write(e, f, v1, strlen(v1), 0), (long long)strlen(v1));
	CHECK_EQ(eng_flush(e, f), 0);
	CHECK_STREQ(xattr_str(e, ino, "user.tierfs.status", st, sizeof(st)),
		    "pending");
	CHECK_EQ(l3_ino(&cfg, ROOT, "s.json"), -ENOENT);
	CHECK_EQ(eng_fsync(e, f), 0);
	CHECK_STREQ(xattr_str(e, ino, "user.tierfs.status", st, sizeof(st)),
		    "synced");
	/* really in L3, with this content */
	CHECK_EQ(l3_ino(&cfg, ROOT, "s.json"), (long long)ino);
	CHECK(l3_content_is(&cfg, ino, v1, strlen(v1)));
	sha256_hex(v1, strlen(v1), want);
	CHECK_STREQ(xattr_str(e, ino, "user.tierfs.hash", hex, sizeof(hex)),
		    want);
	v = strtoull(xattr_str(e, ino, "user.tierfs.version", ver, sizeof(ver)),
		     NULL, 10);
	CHECK(v >= 1);
	/* measuring and a short buffer */
	CHECK_EQ(eng_getxattr(e, ino, "user.tierfs.status", NULL, 0), 6);
	CHECK_EQ(eng_getxattr(e, ino, "user.tierfs.status", st, 3), -ERANGE);

	/* a second version: pending, then synced by fsync (a write
	 * through the handle, published by fsync itself) */
	CHECK_EQ(eng_write(e, f, v2, strlen(v2), 0), (long long)strlen(v2));
	CHECK_EQ(eng_fsync(e, f), 0);
	CHECK_STREQ(xattr_str(e, ino, "user.tierfs.status", st, sizeof(st)),
		    "synced");
	CHECK(l3_content_is(&cfg, ino, v2, strlen(v2)));
	sha256_hex(v2, strlen(v2), want);
	CHECK_STREQ(xattr_str(e, ino, "user.tierfs.hash", hex, sizeof(hex)),
		    want);
	CHECK(strtoull(xattr_str(e, ino, "user.tierfs.version", ver,
				 sizeof(ver)),
		       NULL, 10) > v);
	/* a metadata change makes it pending again; fsync syncs it */
	CHECK_EQ(eng_setxattr(e, ino, "user.k", "v", 1, 0), 0);
	CHECK_STREQ(xattr_str(e, ino, "user.tierfs.status", st, sizeof(st)),
		    "pending");
	CHECK_EQ(eng_fsync(e, f), 0);
	CHECK_STREQ(xattr_str(e, ino, "user.tierfs.status", st, sizeof(st)),
		    "synced");
	CHECK(!eng_release(e, f));
	close_ok(e);
}

static void test_inodes_stable(void)
{
	struct eng_config cfg = lazy_cfg("inodes");
	struct eng *e = open_ok(&cfg);
	uint64_t d1, f1, top, a, ab, abc, fresh;
	struct eng_attr at;

	d1 = mkdir_ok(e, ROOT, "d1");
	f1 = put_file_ok(e, d1, "f.json", "{}");
	top = put_file_ok(e, ROOT, "top.bin", "top");
	CHECK_EQ(eng_put(e, "a.b.c", ITEM_JSON, "1", 1), 0);
	a = lookup_ok(e, ROOT, "a");
	ab = lookup_ok(e, a, "b");
	abc = lookup_ok(e, ab, "c.json");
	CHECK(d1 != f1 && f1 != top && top != a && a != ab && ab != abc);

	e = reopen(e, &cfg);
	CHECK_EQ(lookup_ok(e, ROOT, "d1"), d1);
	CHECK_EQ(lookup_ok(e, d1, "f.json"), f1);
	CHECK_EQ(lookup_ok(e, ROOT, "top.bin"), top);
	CHECK_EQ(lookup_ok(e, ROOT, "a"), a);
	CHECK_EQ(lookup_ok(e, a, "b"), ab);
	CHECK_EQ(lookup_ok(e, ab, "c.json"), abc);
	CHECK_EQ(eng_getattr(e, f1, &at), 0);
	CHECK_EQ(at.ino, f1);

	/* a rewrite and a move keep the number; new entries get fresh ones */
	CHECK_EQ(rewrite(e, top, "TOP", 3), 0);
	CHECK_EQ(eng_rename(e, ROOT, "top.bin", d1, "top2.bin", 0), 0);
	fresh = put_file_ok(e, ROOT, "fresh", "f");
	CHECK(fresh != d1 && fresh != f1 && fresh != top && fresh != a &&
	      fresh != ab && fresh != abc);
	e = reopen(e, &cfg);
	CHECK_EQ(lookup_ok(e, ROOT, "d1"), d1);
	CHECK_EQ(lookup_ok(e, d1, "top2.bin"), top);
	check_text(e, top, "TOP");
	CHECK_EQ(lookup_ok(e, ROOT, "fresh"), fresh);
	CHECK_EQ(lookup(e, ROOT, "top.bin"), -ENOENT);
	close_ok(e);
}

/* atime: a new entry's is its creation time, as its mtime; only setattr
 * sets it (to the nanosecond, before 1970 too); a write, chmod, xattr or
 * rename keeps it, and so does a reopen (L3). */
static void test_atime(void)
{
	struct eng_config cfg = lazy_cfg("atime");
	struct eng *e = open_ok(&cfg);
	struct eng_setattr sa = {0};
	struct eng_attr at, was;
	uint64_t d, f;

	CHECK_EQ(eng_mkdir(e, ROOT, "d", 0755, &ctx, &at), 0);
	d = at.ino;
	CHECK_EQ(at.atime_ns, at.mtime_ns);
	CHECK_EQ(at.ctime_ns, at.mtime_ns);
	f = put_file_ok(e, d, "f.bin", "x");
	CHECK_EQ(eng_getattr(e, d, &was), 0);
	CHECK_EQ(was.atime_ns, at.atime_ns); /* a new child moves mtime only */
	CHECK(was.mtime_ns >= at.mtime_ns);

	/* touch -a -d @-86400.5: atime alone, ctime moves */
	CHECK_EQ(eng_getattr(e, f, &was), 0);
	sa.set_atime = true;
	sa.atime_ns = -86400500000000LL;
	CHECK_EQ(eng_setattr(e, f, NULL, &sa, &ctx, &at), 0);
	CHECK_EQ(at.atime_ns, -86400500000000LL);
	CHECK_EQ(at.mtime_ns, was.mtime_ns);
	CHECK(at.ctime_ns >= was.ctime_ns);
	/* both, as utimensat sets them: 2200-01-01, and 1 ns */
	sa.set_mtime = true;
	sa.mtime_ns = 7258118400123456789LL;
	sa.atime_ns = 1;
	CHECK_EQ(eng_setattr(e, f, NULL, &sa, &ctx, &at), 0);
	CHECK_EQ(at.atime_ns, 1);
	CHECK_EQ(at.mtime_ns, 7258118400123456789LL);

	/* what keeps it */
	CHECK_EQ(rewrite(e, f, "yy", 2), 0);
	sa = (struct eng_setattr){.set_mode = true, .mode = 0600};
	CHECK_EQ(eng_setattr(e, f, NULL, &sa, &ctx, &at), 0);
	CHECK_EQ(eng_setxattr(e, f, "user.x", "v", 1, 0), 0);
	CHECK_EQ(eng_rename(e, d, "f.bin", ROOT, "g.bin", 0), 0);
	CHECK_EQ(eng_getattr(e, f, &at), 0);
	CHECK_EQ(at.atime_ns, 1);
	CHECK(at.mtime_ns != 7258118400123456789LL); /* the write moved it */

	e = reopen(e, &cfg);
	CHECK_EQ(lookup_ok(e, ROOT, "g.bin"), f);
	CHECK_EQ(eng_getattr(e, f, &at), 0);
	CHECK_EQ(at.atime_ns, 1);
	CHECK_EQ(at.mode & 07777, 0600);
	CHECK_EQ(lookup_ok(e, ROOT, "d"), d);
	CHECK_EQ(eng_getattr(e, d, &at), 0);
	CHECK(at.atime_ns > 0 && at.atime_ns <= at.mtime_ns);
	close_ok(e);
}

static void test_put_implicit_dirs(void)
{
	struct eng_config cfg = lazy_cfg("implicit");
	struct eng *e = open_ok(&cfg);
	struct item *it = NULL;
	struct eng_attr at;
	uint64_t a, ab, p, k;

	/* eng_put creates the directories of the prefix */
	CHECK_EQ(eng_put(e, "a.b.c", ITEM_JSON, "{\"c\":3}", 7), 0);
	at = lookup_attr(e, ROOT, "a");
	a = at.ino;
	CHECK_EQ(at.kind, ITEM_DIR);
	CHECK((at.mode & S_IFMT) == S_IFDIR);
	at = lookup_attr(e, a, "b");
	ab = at.ino;
	CHECK_EQ(at.kind, ITEM_DIR);
	at = lookup_attr(e, ab, "c.json");
	CHECK_EQ(at.kind, ITEM_JSON);
	CHECK_EQ(at.size, 7);
	check_text(e, at.ino, "{\"c\":3}");
	check_item(e, "a.b.c", ITEM_JSON, "{\"c\":3}");

	/* eng_delete removes the implicit directories it leaves empty */
	CHECK_EQ(eng_delete(e, "a.b.c", ITEM_JSON), 0);
	CHECK_EQ(eng_get(e, "a.b.c", ITEM_JSON, &it), -ENOENT);
	CHECK_EQ(lookup(e, ROOT, "a"), -ENOENT);
	/* a's node is kept (looked up above) but deleted: no directory */
	CHECK_EQ(lookup(e, a, "b"), -ENOENT);
	CHECK_EQ(eng_delete(e, "a.b.c", ITEM_JSON), -ENOENT);

	/* but not an explicit one */
	p = mkdir_ok(e, ROOT, "p");
	CHECK_EQ(eng_put(e, "p.q.r", ITEM_BINARY, "r", 1), 0);
	CHECK(lookup(e, p, "q") > ROOT);
	CHECK_EQ(eng_delete(e, "p.q.r", ITEM_BINARY), 0);
	CHECK_EQ(lookup(e, p, "q"), -ENOENT);
	CHECK_EQ(lookup_ok(e, ROOT, "p"), p);

	/* nor one that still holds something */
	CHECK_EQ(eng_put(e, "k.l.m", ITEM_JSON, "1", 1), 0);
	CHECK_EQ(eng_put(e, "k.n", ITEM_JSON, "2", 1), 0);
	k = lookup_ok(e, ROOT, "k");
	CHECK_EQ(eng_delete(e, "k.l.m", ITEM_JSON), 0);
	CHECK_EQ(lookup(e, k, "l"), -ENOENT);
	CHECK_EQ(lookup_ok(e, ROOT, "k"), k);
	check_item(e, "k.n", ITEM_JSON, "2");

	/* a JSON item and the directory of the same name live side by
	 * side; deleting the inner item leaves the file */
	CHECK_EQ(eng_put(e, "u", ITEM_JSON, "\"u\"", 3), 0);
	CHECK_EQ(eng_put(e, "u.v", ITEM_JSON, "\"v\"", 3), 0);
	CHECK_EQ(lookup_attr(e, ROOT, "u").kind, ITEM_DIR);
	CHECK_EQ(lookup_attr(e, ROOT, "u.json").kind, ITEM_JSON);
	CHECK_EQ(eng_delete(e, "u.v", ITEM_JSON), 0);
	CHECK_EQ(lookup(e, ROOT, "u"), -ENOENT);
	check_item(e, "u", ITEM_JSON, "\"u\"");

	/* the same after the directories were persisted */
	CHECK_EQ(eng_put(e, "s.t.u", ITEM_JSON, "[]", 2), 0);
	CHECK_EQ(eng_put(e, "p.w.x", ITEM_JSON, "[]", 2), 0);
	CHECK_EQ(eng_sync(e), 0);
	CHECK(l3_ino(&cfg, ROOT, "s") > ROOT);
	CHECK_EQ(eng_delete(e, "s.t.u", ITEM_JSON), 0);
	CHECK_EQ(eng_delete(e, "p.w.x", ITEM_JSON), 0);
	CHECK_EQ(lookup(e, ROOT, "s"), -ENOENT);
	CHECK_EQ(lookup(e, p, "w"), -ENOENT);
	CHECK_EQ(eng_sync(e), 0);
	CHECK_EQ(l3_ino(&cfg, ROOT, "s"), -ENOENT);
	CHECK_EQ(l3_ino(&cfg, p, "w"), -ENOENT);

	e = reopen(e, &cfg);
	CHECK_EQ(lookup(e, ROOT, "a"), -ENOENT);
	CHECK_EQ(lookup(e, ROOT, "s"), -ENOENT);
	CHECK_EQ(lookup(e, ROOT, "u"), -ENOENT);
	CHECK_EQ(lookup_ok(e, ROOT, "p"), p);
	CHECK_EQ(lookup(e, p, "q"), -ENOENT);
	CHECK_EQ(lookup(e, p, "w"), -ENOENT);
	CHECK_EQ(lookup_ok(e, ROOT, "k"), k);
	CHECK_EQ(lookup(e, k, "l"), -ENOENT);
	check_item(e, "k.n", ITEM_JSON, "2");
	check_item(e, "u", ITEM_JSON, "\"u\"");
	{
		struct dirmodel m = {0};

		model_add(&m, "p", p);
		model_add(&m, "k", k);
		model_add(&m, "u.json", lookup_ok(e, ROOT, "u.json"));
		check_dir(e, ROOT, &m, "root after implicit deletes");
		free(m.v);
	}
	close_ok(e);
}

/* Directory renames move the subtree; rmdir refuses non-empty dirs. */
static uint32_t nlink_of(struct eng *e, uint64_t ino)
{
	struct eng_attr a;

	CHECK_EQ(eng_getattr(e, ino, &a), 0);
	return a.nlink;
}

/* A directory's nlink is 2 + its subdirectories, implicit ones too: kept
 * through puts and deletes, and counted again from L3 after a reopen. */
static void test_nlink_implicit_dirs(void)
{
	struct eng_config cfg = lazy_cfg("nlink");
	struct eng *e = open_ok(&cfg);
	uint64_t u;

	CHECK_EQ(nlink_of(e, ROOT), 2);
	CHECK_EQ(eng_put(e, "user.1", ITEM_JSON, "1", 1), 0);
	CHECK_EQ(nlink_of(e, ROOT), 3); /* user/ */
	u = lookup_attr(e, ROOT, "user").ino;
	CHECK_EQ(nlink_of(e, u), 2);
	CHECK_EQ(eng_put(e, "user.a.b.c", ITEM_JSON, "2", 1), 0);
	CHECK_EQ(nlink_of(e, u), 3); /* user/a/ */
	CHECK_EQ(lookup_attr(e, lookup_attr(e, u, "a").ino, "b").nlink, 2);
	CHECK_EQ(lookup_attr(e, u, "a").nlink, 3);
	CHECK_EQ(eng_sync(e), 0);
	CHECK_EQ(eng_close(e), 0);

	e = open_ok(&cfg); /* counted from L3 */
	CHECK_EQ(nlink_of(e, ROOT), 3);
	u = lookup_attr(e, ROOT, "user").ino;
	CHECK_EQ(nlink_of(e, u), 3);
	/* the delete takes user/a/b/ and user/a/ along */
	CHECK_EQ(eng_delete(e, "user.a.b.c", ITEM_JSON), 0);
	CHECK_EQ(nlink_of(e, u), 2);
	CHECK_EQ(eng_delete(e, "user.1", ITEM_JSON), 0);
	CHECK_EQ(nlink_of(e, ROOT), 2);
	CHECK_EQ(eng_close(e), 0);
}

static void test_dirs(void)
{
	struct eng_config cfg = lazy_cfg("dirs");
	struct eng *e = open_ok(&cfg);
	uint64_t m1, sub, f, g;

	m1 = mkdir_ok(e, ROOT, "m1");
	sub = mkdir_ok(e, m1, "sub");
	f = put_file_ok(e, sub, "f.json", "{\"f\":1}");
	CHECK_EQ(eng_sync(e), 0);
	g = put_file_ok(e, m1, "g", "pending");

	CHECK_EQ(eng_rmdir(e, ROOT, "m1"), -ENOTEMPTY);
	CHECK_EQ(eng_rmdir(e, m1, "sub"), -ENOTEMPTY);
	CHECK_EQ(eng_rmdir(e, m1, "g"), -ENOTDIR);
	CHECK_EQ(eng_unlink(e, ROOT, "m1"), -EISDIR);
	CHECK_EQ(eng_rename(e, ROOT, "m1", sub, "inside", 0), -EINVAL);
	CHECK_EQ(eng_rename(e, ROOT, "m1", ROOT, "m2", 0), 0);
	CHECK_EQ(lookup(e, ROOT, "m1"), -ENOENT);
	CHECK_EQ(lookup_ok(e, ROOT, "m2"), m1);
	CHECK_EQ(lookup_ok(e, m1, "sub"), sub);
	CHECK_EQ(lookup_ok(e, sub, "f.json"), f);
	check_item(e, "m2.sub.f", ITEM_JSON, "{\"f\":1}");
	check_item(e, "m2.g", ITEM_BINARY, "pending");

	e = reopen(e, &cfg);
	CHECK_EQ(lookup(e, ROOT, "m1"), -ENOENT);
	CHECK_EQ(lookup_ok(e, ROOT, "m2"), m1);
	CHECK_EQ(lookup_ok(e, m1, "sub"), sub);
	CHECK_EQ(lookup_ok(e, sub, "f.json"), f);
	CHECK_EQ(lookup_ok(e, m1, "g"), g);
	check_text(e, f, "{\"f\":1}");
	/* children only in L3 still make it non-empty */
	CHECK_EQ(eng_rmdir(e, m1, "sub"), -ENOTEMPTY);
	CHECK_EQ(eng_unlink(e, sub, "f.json"), 0);
	CHECK_EQ(eng_rmdir(e, m1, "sub"), 0);
	CHECK_EQ(lookup(e, m1, "sub"), -ENOENT);
	/* the explicit dir stays after its last file goes */
	CHECK_EQ(eng_unlink(e, m1, "g"), 0);
	CHECK_EQ(lookup_ok(e, ROOT, "m2"), m1);
	e = reopen(e, &cfg);
	CHECK_EQ(lookup_ok(e, ROOT, "m2"), m1);
	CHECK_EQ(lookup(e, m1, "sub"), -ENOENT);
	CHECK_EQ(lookup(e, m1, "g"), -ENOENT);
	CHECK_EQ(eng_rmdir(e, ROOT, "m2"), 0);
	e = reopen(e, &cfg);
	CHECK_EQ(lookup(e, ROOT, "m2"), -ENOENT);
	close_ok(e);
}

/* A create of a name that exists by now (made by another writer after the
 * kernel looked) opens that file unless O_EXCL says otherwise; a directory
 * there is EISDIR; O_TRUNC empties the file. */
static void test_create_existing(void)
{
	struct eng_config cfg = lazy_cfg("create-existing");
	struct eng *e = open_ok(&cfg);
	struct eng_file *f = NULL;
	struct eng_attr a;
	const char *v = "{\"by\":\"other\"}";
	char buf[64];

	CHECK_EQ(eng_put(e, "c.x", ITEM_JSON, v, strlen(v)), 0);
	CHECK_EQ(eng_create(e, ROOT, "c", 0644, O_RDWR | O_CREAT | O_EXCL,
			    &ctx, &a, &f),
		 -EEXIST);
	CHECK_EQ(eng_create(e, ROOT, "c", 0644, O_RDWR | O_CREAT, &ctx, &a, &f),
		 -EISDIR);
	a.ino = 0;
	CHECK_EQ(eng_create(e, lookup_attr(e, ROOT, "c").ino, "x.json", 0644,
			    O_RDONLY | O_CREAT, &ctx, &a, &f),
		 0);
	CHECK_EQ(a.size, strlen(v));
	CHECK_EQ(eng_read(e, f, buf, sizeof(buf), 0), (long long)strlen(v));
	CHECK(memcmp(buf, v, strlen(v)) == 0);
	eng_release(e, f);
	eng_forget(e, a.ino, 1);
	CHECK_EQ(eng_create(e, lookup_attr(e, ROOT, "c").ino, "x.json", 0644,
			    O_WRONLY | O_CREAT | O_TRUNC, &ctx, &a, &f),
		 0);
	CHECK_EQ(eng_write(e, f, "[]", 2, 0), 2);
	CHECK_EQ(eng_flush(e, f), 0);
	eng_release(e, f);
	eng_forget(e, a.ino, 1);
	check_item(e, "c.x", ITEM_JSON, "[]");
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

	test_read_your_writes();
	test_create_existing();
	test_invalid_json();
	test_efbig();
	test_names();
	test_delete_beats_pending_write();
	test_close_persists();
	test_tiny_l1();
	test_open_file_keeps_content();
	test_readdir_merge();
	test_rename_swap();
	test_fsync_status();
	test_inodes_stable();
	test_atime();
	test_put_implicit_dirs();
	test_dirs();
	test_nlink_implicit_dirs();
	test_readdir_read_ahead();
	test_readdir_prefetch();
	test_readdir_resume_exact();
	test_readdir_dirty_run(); /* last: a failure here ends the process */
	printf("test_engine: ok\n");
	return 0;
}
