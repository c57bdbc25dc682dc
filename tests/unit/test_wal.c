/*
 * test_wal.c - unit tests of the write-ahead log (engine/wal.c).
 *
 * Round trips of every record field through append, close, open and replay;
 * rotation and wal_drop_before(); the byte bound; a write that fails half
 * way (RLIMIT_FSIZE) leaves nothing behind; records replay refuses are
 * refused by append. The torn-tail test cuts a segment of 40 records at
 * every byte offset and checks that replay yields exactly the records the
 * prefix holds whole; a byte flipped anywhere in a record ends replay just
 * before it; garbage yields nothing; other files in the directory are left
 * alone. Records in the layout of older builds (no atime_ns) still replay,
 * with atime_ns = mtime_ns, and append again in the current layout.
 *
 * Every log lives in a private mkdtemp() directory (under $TMPDIR, default
 * /tmp), removed at exit. Exit status: 0 passed, 1 failed, 77 skipped. Set
 * TEST_VERBOSE=1 to see the log lines.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <grp.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>

#include "batch.h"
#include "check.h"
#include "wal.h"

#define BIG ((uint64_t)1 << 40)
#define HDR 12 /* record header bytes */
#define SEG_FMT "wal-%016llx.log"

static char tmpdir[256];
static bool tmpdir_made;
static unsigned dir_seq;

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

/* ---- log sink: counts lines by level ---- */

struct sink {
	int warnings, errors;
	char last[1024];
};

static bool verbose;

static void sink_fn(void *arg, int level, const char *msg)
{
	struct sink *s = arg;

	if (level <= LOG_ERR)
		s->errors++;
	else if (level == LOG_WARNING)
		s->warnings++;
	snprintf(s->last, sizeof(s->last), "%s", msg);
	if (verbose)
		fprintf(stderr, "  log %d: %s\n", level, msg);
}

static struct sink sink;
static const struct eng_log test_log = {.fn = sink_fn, .arg = &sink};

static void sink_reset(void)
{
	memset(&sink, 0, sizeof(sink));
}

/* ---- random data ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	uint64_t x = rng_state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	rng_state = x;
	return x;
}

static void rnd_fill(void *buf, size_t len)
{
	uint8_t *p = buf;

	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)rnd();
}

/* A malloc()ed string of @len random bytes without NUL. */
static char *rnd_str(size_t len)
{
	char *s = malloc(len + 1);

	CHECK(s != NULL);
	for (size_t i = 0; i < len; i++)
		s[i] = (char)(1 + rnd() % 255);
	s[len] = '\0';
	return s;
}

/* ---- files and directories ---- */

/* A new empty directory under tmpdir (its path in @buf). */
static void new_dir(char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/d%u", tmpdir, dir_seq++);
	CHECK(mkdir(buf, 0700) == 0);
}

/* Removes every entry of @dir (files only: the tests make no subdirs). */
static void empty_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[1024];

	CHECK(d != NULL);
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		CHECK(unlink(path) == 0);
	}
	closedir(d);
}

/* Number of entries of @dir that are segments. */
static int count_segs(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	CHECK(d != NULL);
	while ((de = readdir(d)))
		n += !strncmp(de->d_name, "wal-", 4) &&
		     strlen(de->d_name) == 24;
	closedir(d);
	return n;
}

static bool seg_exists(const char *dir, int64_t num)
{
	char path[1024];
	struct stat st;

	snprintf(path, sizeof(path), "%s/" SEG_FMT, dir,
		 (unsigned long long)num);
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static off_t file_size(const char *path)
{
	struct stat st;

	CHECK(stat(path, &st) == 0);
	return st.st_size;
}

static void seg_path(char *buf, size_t cap, const char *dir, int64_t num)
{
	snprintf(buf, cap, "%s/" SEG_FMT, dir, (unsigned long long)num);
}

/* Reads the whole file at @path into a new buffer. */
static uint8_t *read_file(const char *path, size_t *len)
{
	off_t size = file_size(path);
	uint8_t *buf = malloc(size ? (size_t)size : 1);
	FILE *f = fopen(path, "rb");

	CHECK(buf != NULL && f != NULL);
	CHECK(fread(buf, 1, (size_t)size, f) == (size_t)size);
	fclose(f);
	*len = (size_t)size;
	return buf;
}

static void write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	CHECK(fd >= 0);
	CHECK(len == 0 || write(fd, buf, len) == (ssize_t)len);
	CHECK(close(fd) == 0);
}

/* ---- records ---- */

static struct change *rec_new(uint64_t ino, uint64_t seq)
{
	struct change *r = calloc(1, sizeof(*r));

	CHECK(r != NULL);
	r->ino = ino;
	r->seq = seq;
	return r;
}

/* Gives @r content @data (copied) with item ID @id; sets size and hash. */
static void rec_content(struct change *r, const char *id, const void *data,
			size_t len)
{
	r->item = item_new(id, data, len, &r->meta);
	CHECK(r->item != NULL);
	r->meta.size = len;
	memcpy(r->meta.hash, item_meta(r->item)->hash, ITEM_HASH_LEN);
}

static void rec_xattr(struct change *r, const char *name, const void *value,
		      size_t len)
{
	CHECK_EQ(item_xattr_set(&r->meta, name, value, len, 0), 0);
}

/* A random record: ~1/6 deletions, the rest with random names, metadata,
 * state, xattrs and (half of them) up to @max_content content bytes. */
static struct change *rec_random(uint64_t seq, size_t max_content)
{
	struct change *r = rec_new(1 + rnd() % 1000, seq);
	struct item_meta *m = &r->meta;

	if (rnd() % 6 == 0) {
		r->deleted = true;
		return r;
	}
	r->parent = 1 + rnd() % 50;
	r->name = rnd_str(1 + rnd() % 40);
	m->kind = (enum item_kind)(rnd() % 3);
	m->size = rnd();
	rnd_fill(m->hash, ITEM_HASH_LEN);
	m->version = rnd();
	m->mtime_ns = (int64_t)rnd();
	m->atime_ns = (int64_t)rnd();
	m->ctime_ns = (int64_t)rnd();
	m->mode = (uint32_t)rnd();
	m->uid = (uint32_t)rnd();
	m->gid = (uint32_t)rnd();
	m->explicit_dir = rnd() & 1;
	if (rnd() % 3 == 0)
		m->state = rnd_str(rnd() % 20);
	for (unsigned n = rnd() % 4, i = 0; i < n; i++) {
		char name[32], value[64];

		snprintf(name, sizeof(name), "user.x%u", i);
		rnd_fill(value, sizeof(value));
		rec_xattr(r, name, value, rnd() % sizeof(value));
	}
	if (m->kind != ITEM_DIR && rnd() % 2) {
		size_t len = max_content ? rnd() % max_content : 0;
		char *data = malloc(len + 1), *id = rnd_str(1 + rnd() % 30);

		CHECK(data != NULL);
		rnd_fill(data, len);
		rec_content(r, id, data, len);
		free(data);
		free(id);
	}
	return r;
}

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Checks that @got is a faithful copy of @want, field by field. */
static void rec_check(const struct change *got, const struct change *want)
{
	const struct item_meta *g = &got->meta, *w = &want->meta;

	CHECK_EQ(got->ino, want->ino);
	CHECK_EQ(got->seq, want->seq);
	CHECK_EQ(got->deleted, want->deleted);
	CHECK_EQ(got->parent, want->parent);
	CHECK(str_eq(got->name, want->name));
	CHECK_EQ(g->kind, w->kind);
	CHECK_EQ(g->size, w->size);
	CHECK(memcmp(g->hash, w->hash, ITEM_HASH_LEN) == 0);
	CHECK_EQ(g->version, w->version);
	CHECK_EQ(g->mtime_ns, w->mtime_ns);
	CHECK_EQ(g->atime_ns, w->atime_ns);
	CHECK_EQ(g->ctime_ns, w->ctime_ns);
	CHECK_EQ(g->mode, w->mode);
	CHECK_EQ(g->uid, w->uid);
	CHECK_EQ(g->gid, w->gid);
	CHECK_EQ(g->explicit_dir, w->explicit_dir);
	CHECK(str_eq(g->state, w->state));
	CHECK_EQ(g->xattrs_len, w->xattrs_len);
	CHECK(g->xattrs_len == 0 ||
	      memcmp(g->xattrs, w->xattrs, g->xattrs_len) == 0);
	CHECK_EQ(got->item != NULL, want->item != NULL);
	if (want->item) {
		size_t len = item_size(want->item);

		CHECK_STREQ(item_id(got->item), item_id(want->item));
		CHECK_EQ(item_size(got->item), len);
		CHECK(len == 0 || memcmp(item_data(got->item),
					 item_data(want->item), len) == 0);
		CHECK(memcmp(item_meta(got->item)->hash,
			     item_meta(want->item)->hash, ITEM_HASH_LEN) == 0);
		CHECK_EQ(item_meta(got->item)->kind, w->kind);
	}
}

/* What a replay delivered. */
struct got {
	struct change **recs;
	size_t n, cap;
	int fail_at; /* fail with -EPERM at this record (1-based), or 0 */
};

static int collect(void *arg, struct change *rec)
{
	struct got *g = arg;

	if (g->n == g->cap) {
		g->cap = g->cap ? 2 * g->cap : 16;
		g->recs = realloc(g->recs, g->cap * sizeof(*g->recs));
		CHECK(g->recs != NULL);
	}
	g->recs[g->n++] = rec;
	return g->fail_at && (int)g->n == g->fail_at ? -EPERM : 0;
}

static void got_release(struct got *g)
{
	for (size_t i = 0; i < g->n; i++)
		change_free(g->recs[i]);
	free(g->recs);
	memset(g, 0, sizeof(*g));
}

/* Opens @dir, replays it and checks it yields exactly @want[0..@n), then
 * closes. Returns the warnings logged. */
static int replay_check(const char *dir, struct change **want, size_t n)
{
	struct got g = {0};
	struct wal *w;
	int r;

	sink_reset();
	CHECK_EQ(wal_open(dir, BIG, &test_log, &w), 0);
	r = wal_replay(w, collect, &g);
	CHECK_EQ(r, n);
	CHECK_EQ(g.n, n);
	for (size_t i = 0; i < n; i++)
		rec_check(g.recs[i], want[i]);
	got_release(&g);
	wal_close(w);
	CHECK_EQ(sink.errors, 0);
	return sink.warnings;
}

static void recs_free(struct change **recs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		change_free(recs[i]);
}

/* ---- tests ---- */

/* Every field survives append, close, open, replay. */
static void test_round_trip(void)
{
	struct change *recs[12];
	size_t n = 0, big = 1 << 20;
	char dir[512], path[1024], *buf;
	struct wal *w;
	uint64_t before;

	new_dir(dir, sizeof(dir));
	strcat(dir, "/wal"); /* wal_open() creates it */

	/* a deletion: no name, no meta */
	recs[n++] = rec_new(7, 1);
	recs[n - 1]->deleted = true;

	/* the root: parent 0, name "", a dir with state and xattrs */
	recs[n] = rec_new(1, 2);
	recs[n]->name = strdup("");
	recs[n]->meta.kind = ITEM_DIR;
	recs[n]->meta.mode = S_IFDIR | 0755;
	recs[n]->meta.explicit_dir = true;
	recs[n]->meta.state = strdup("archived");
	rec_xattr(recs[n], "user.a", "1", 1);
	rec_xattr(recs[n], "user.empty", "", 0);
	rec_xattr(recs[n], "user.bin", "x\0y\0", 4);
	n++;

	/* content with NUL bytes, state NULL, no xattrs */
	recs[n] = rec_new(8, 3);
	recs[n]->parent = 1;
	recs[n]->name = strdup("nul.bin");
	recs[n]->meta.kind = ITEM_BINARY;
	recs[n]->meta.mode = S_IFREG | 0600;
	recs[n]->meta.version = 4;
	rec_content(recs[n], "dir/nul.bin", "a\0b\0\0c", 6);
	n++;

	/* a 1 MiB payload and extreme metadata values */
	recs[n] = rec_new(UINT64_MAX, UINT64_MAX);
	recs[n]->parent = UINT64_MAX - 1;
	recs[n]->name = rnd_str(255);
	recs[n]->meta.kind = ITEM_BINARY;
	recs[n]->meta.version = UINT64_MAX;
	recs[n]->meta.mtime_ns = INT64_MIN;
	recs[n]->meta.ctime_ns = -1;
	recs[n]->meta.mode = UINT32_MAX;
	recs[n]->meta.uid = UINT32_MAX;
	recs[n]->meta.gid = 0;
	recs[n]->meta.state = strdup(""); /* empty, not NULL */
	buf = malloc(big);
	CHECK(buf != NULL);
	rnd_fill(buf, big);
	rec_content(recs[n], "big", buf, big);
	free(buf);
	n++;

	/* empty content, empty item ID */
	recs[n] = rec_new(9, 5);
	recs[n]->parent = 3;
	recs[n]->name = strdup("empty.json");
	recs[n]->meta.kind = ITEM_JSON;
	rec_content(recs[n], "", "", 0);
	n++;

	/* metadata only, size and hash kept as given (not recomputed) */
	recs[n] = rec_new(10, 6);
	recs[n]->parent = 3;
	recs[n]->name = strdup("meta-only");
	recs[n]->meta.kind = ITEM_BINARY;
	recs[n]->meta.size = 12345;
	memset(recs[n]->meta.hash, 0xab, ITEM_HASH_LEN);
	n++;

	/* a deletion that still carries a name */
	recs[n] = rec_new(11, 7);
	recs[n]->deleted = true;
	recs[n]->name = strdup("gone");
	n++;

	CHECK_EQ(wal_open(dir, BIG, &test_log, &w), 0);
	CHECK_EQ(wal_bytes(w), 0);
	for (size_t i = 0; i < n; i++) {
		before = wal_bytes(w);
		CHECK_EQ(wal_append(w, recs[i]), 0);
		CHECK(wal_bytes(w) > before);
	}
	CHECK_EQ(wal_sync(w), 0);
	seg_path(path, sizeof(path), dir, 1);
	CHECK_EQ(file_size(path), wal_bytes(w));
	before = wal_bytes(w);
	wal_close(w);

	/* the new log counts the old segment and replays it */
	sink_reset();
	CHECK_EQ(wal_open(dir, BIG, &test_log, &w), 0);
	CHECK_EQ(wal_bytes(w), before);
	CHECK(seg_exists(dir, 2));
	wal_close(w);
	CHECK_EQ(replay_check(dir, recs, n), 0);
	/* replaying twice gives the same */
	CHECK_EQ(replay_check(dir, recs, n), 0);

	/* the directory was made 0700 */
	{
		struct stat st;

		CHECK(stat(dir, &st) == 0);
		CHECK_EQ(st.st_mode & 0777, 0700);
	}
	recs_free(recs, n);
}

/* Records that replay would refuse are refused by append, and nothing is
 * written. */
static void test_refused(void)
{
	struct change *r;
	char dir[512];
	struct wal *w;
	uint8_t blob[8];

	new_dir(dir, sizeof(dir));
	CHECK_EQ(wal_open(dir, BIG, &test_log, &w), 0);

	r = rec_new(2, 1);
	r->parent = 1;
	r->name = rnd_str(256); /* too long */
	CHECK_EQ(wal_append(w, r), -EINVAL);
	free(r->name);
	r->name = strdup(""); /* empty, not the root */
	CHECK_EQ(wal_append(w, r), -EINVAL);
	free(r->name);
	r->name = NULL; /* no name, not a deletion */
	CHECK_EQ(wal_append(w, r), -EINVAL);
	r->name = strdup("ok");
	r->meta.state = rnd_str(0xffff); /* state_len 0xffff means NULL */
	CHECK_EQ(wal_append(w, r), -EINVAL);
	free(r->meta.state);
	r->meta.state = rnd_str(0xfffe); /* the longest state */
	CHECK_EQ(wal_append(w, r), 0);
	free(r->meta.state);
	r->meta.state = NULL;
	r->meta.kind = (enum item_kind)3;
	CHECK_EQ(wal_append(w, r), -EINVAL);
	r->meta.kind = ITEM_BINARY;
	/* a blob whose record runs past its end */
	blob[0] = 1, blob[1] = 0, blob[2] = 9, blob[3] = blob[4] = blob[5] = 0;
	blob[6] = 'a', blob[7] = 'b';
	r->meta.xattrs = malloc(sizeof(blob));
	CHECK(r->meta.xattrs != NULL);
	memcpy(r->meta.xattrs, blob, sizeof(blob));
	r->meta.xattrs_len = sizeof(blob);
	CHECK_EQ(wal_append(w, r), -EINVAL);
	((uint8_t *)r->meta.xattrs)[2] = 1; /* exact: name "a", value "b" */
	CHECK_EQ(wal_append(w, r), 0);
	wal_close(w);

	/* exactly the two accepted records come back */
	{
		struct got g = {0};

		sink_reset();
		CHECK_EQ(wal_open(dir, BIG, &test_log, &w), 0);
		CHECK_EQ(wal_replay(w, collect, &g), 2);
		CHECK_EQ(g.recs[0]->meta.state ? strlen(g.recs[0]->meta.state)
					       : 0,
			 0xfffe);
		CHECK_EQ(g.recs[1]->meta.xattrs_len, sizeof(blob));
		CHECK_EQ(sink.warnings, 0);
		got_release(&g);
		wal_close(w);
	}
	change_free(r);
}

/* Rotation makes new segments; wal_drop_before() deletes exactly the older
 * ones; replay goes oldest first across segments. */
static void test_rotation(void)
{
	struct change *recs[30];
	char dir[512], path[1024], other[1024];
	int64_t s2, s3, s;
	struct wal *w;
	uint64_t bytes1;
	struct got g = {0};

	for (size_t i = 0; i < 30; i++)
		recs[i] = rec_random(i + 1, 300);
	new_dir(dir, sizeof(dir));

	CHECK_EQ(wal_open(dir, BIG, &test_log, &w), 0);
	for (size_t i = 0; i < 10; i++)
		CHECK_EQ(wal_append(w, recs[i]), 0);
	bytes1 = wal_bytes(w);
	s2 = wal_rotate(w);
	CHECK_EQ(s2, 2);
	CHECK_EQ(wal_bytes(w), bytes1);
	for (size_t i = 10; i < 20; i++)
		CHECK_EQ(wal_append(w, recs[i]), 0);
	s3 = wal_rotate(w);
	CHECK_EQ(s3, 3);
	for (size_t i = 20; i < 30; i++)
		CHECK_EQ(wal_append(w, recs[i]), 0);
	CHECK_EQ(count_segs(dir), 3);
	seg_path(path, sizeof(path), dir, 1);
	CHECK_EQ(file_size(path), bytes1);

	/* a number below every segment deletes nothing */
	CHECK_EQ(wal_drop_before(w, 1), 0);
	CHECK_EQ(count_segs(dir), 3);
	/* dropping below 2 deletes segment 1 only */
	CHECK_EQ(wal_drop_before(w, s2), 0);
	CHECK(!seg_exists(dir, 1));
	CHECK(seg_exists(dir, 2) && seg_exists(dir, 3));
	seg_path(path, sizeof(path), dir, 2);
	seg_path(other, sizeof(other), dir, 3);
	CHECK_EQ(wal_bytes(w), file_size(path) + file_size(other));
	wal_close(w);

	/* a new session replays 2 then 3 (records 10..29), in order */
	sink_reset();
	CHECK_EQ(wal_open(dir, BIG, &test_log, &w), 0);
	CHECK(seg_exists(dir, 4));
	CHECK_EQ(wal_replay(w, collect, &g), 20);
	for (size_t i = 0; i < 20; i++)
		rec_check(g.recs[i], recs[10 + i]);
	got_release(&g);

	/* appends after the replay go to segment 4, a rotation makes 5, and
	 * dropping below 5 leaves only 5, even the replayed segments go */
	CHECK_EQ(wal_append(w, recs[0]), 0);
	s = wal_rotate(w);
	CHECK_EQ(s, 5);
	CHECK_EQ(wal_drop_before(w, s), 0);
	CHECK_EQ(count_segs(dir), 1);
	CHECK(seg_exists(dir, 5));
	CHECK_EQ(wal_bytes(w), 0);

	/* the current segment is never dropped */
	CHECK_EQ(wal_append(w, recs[1]), 0);
	CHECK_EQ(wal_drop_before(w, INT64_MAX), 0);
	CHECK(seg_exists(dir, 5));
	seg_path(path, sizeof(path), dir, 5);
	CHECK_EQ(wal_bytes(w), file_size(path));
	CHECK(wal_bytes(w) > 0);
	wal_close(w);
	CHECK_EQ(sink.errors, 0);

	/* a failing callback stops the replay with its error */
	CHECK_EQ(wal_open(dir, BIG, &test_log, &w), 0);
	g.fail_at = 1;
	CHECK_EQ(wal_replay(w, collect, &g), -EPERM);
	CHECK_EQ(g.n, 1);
	got_release(&g);
	wal_close(w);
	recs_free(recs, 30);
}

/* The bound: an append that would pass max_bytes gets -ENOSPC and leaves
 * nothing; space comes back when old segments are dropped. */
static void test_bound(void)
{
	struct change *recs[8];
	char dir[512], path[1024];
	uint64_t one, max;
	struct wal *w;
	struct change *big;
	char *data;

	new_dir(dir, sizeof(dir));
	seg_path(path, sizeof(path), dir, 1);
	for (size_t i = 0; i < 8; i++) {
		recs[i] = rec_new(100 + i, i + 1);
		recs[i]->parent = 1;
		recs[i]->name = strdup("same-size");
	}
	/* measure one record */
	CHECK_EQ(wal_open(dir, BIG, &test_log, &w), 0);
	CHECK_EQ(wal_append(w, recs[0]), 0);
	one = wal_bytes(w);
	wal_close(w);
	empty_dir(dir);

	/* room for exactly 3 records */
	max = 3 * one;
	CHECK_EQ(wal_open(dir, max, &test_log, &w), 0);
	for (size_t i = 0; i < 3; i++)
		CHECK_EQ(wal_append(w, recs[i]), 0);
	CHECK_EQ(wal_bytes(w), max);
	CHECK_EQ(wal_append(w, recs[3]), -ENOSPC);
	CHECK_EQ(wal_bytes(w), max);
	CHECK_EQ(file_size(path), max);

	/* a record bigger than the whole bound */
	big = rec_new(200, 99);
	big->parent = 1;
	big->name = strdup("big");
	data = calloc(1, 4096);
	CHECK(data != NULL);
	rec_content(big, "big", data, 4096);
	free(data);
	wal_close(w);

	/* reopened: the 3 old records count, so nothing fits */
	CHECK_EQ(wal_open(dir, max, &test_log, &w), 0);
	CHECK_EQ(wal_bytes(w), max);
	CHECK_EQ(wal_append(w, recs[3]), -ENOSPC);
	seg_path(path, sizeof(path), dir, 2);
	CHECK_EQ(file_size(path), 0);
	/* dropping the replayed segment frees the room */
	CHECK_EQ(wal_drop_before(w, 2), 0);
	CHECK_EQ(wal_bytes(w), 0);
	CHECK_EQ(wal_append(w, big), -ENOSPC); /* never fits */
	CHECK_EQ(file_size(path), 0);
	CHECK_EQ(wal_append(w, recs[3]), 0);
	CHECK_EQ(wal_append(w, recs[4]), 0);
	CHECK_EQ(wal_append(w, recs[5]), 0);
	CHECK_EQ(wal_append(w, recs[6]), -ENOSPC);
	CHECK_EQ(file_size(path), max);
	wal_close(w);
	CHECK_EQ(replay_check(dir, recs + 3, 3), 0);

	recs_free(recs, 8);
	change_free(big);
}

/* A write that fails half way (the file size limit cuts it) is truncated
 * away: the next record follows the last whole one. */
static void test_failed_write(void)
{
	struct change *recs[3];
	char dir[512], path[1024], *data;
	struct rlimit old, lim;
	struct wal *w;
	off_t size;

	if (getrlimit(RLIMIT_FSIZE, &old) < 0)
		return;
	new_dir(dir, sizeof(dir));
	seg_path(path, sizeof(path), dir, 1);
	data = malloc(10000);
	CHECK(data != NULL);
	for (size_t i = 0; i < 3; i++) {
		recs[i] = rec_new(300 + i, i + 1);
		recs[i]->parent = 1;
		recs[i]->name = strdup("f");
		rnd_fill(data, 10000);
		rec_content(recs[i], "f", data, 10000);
	}
	free(data);

	CHECK_EQ(wal_open(dir, BIG, &test_log, &w), 0);
	CHECK_EQ(wal_append(w, recs[0]), 0);
	size = file_size(path);

	signal(SIGXFSZ, SIG_IGN);
	lim = old;
	lim.rlim_cur = (rlim_t)size + 5000; /* half the next record */
	CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
	sink_reset();
	CHECK_EQ(wal_append(w, recs[1]), -EIO);
	CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
	signal(SIGXFSZ, SIG_DFL);
	CHECK_EQ(sink.errors, 1);
	CHECK_EQ(file_size(path), size);
	CHECK_EQ(wal_bytes(w), size);

	CHECK_EQ(wal_append(w, recs[2]), 0);
	wal_close(w);
	{
		struct change *want[2] = {recs[0], recs[2]};

		CHECK_EQ(replay_check(dir, want, 2), 0);
	}
	recs_free(recs, 3);
}

#define CUT_RECS 40

/* Writes @n records into a fresh log; returns its directory's segment 1
 * bytes and each record's end offset in @ends. */
static uint8_t *write_segment(struct change **recs, size_t n, uint64_t *ends,
			      size_t *len)
{
	char dir[512], path[1024];
	struct wal *w;
	uint8_t *buf;

	new_dir(dir, sizeof(dir));
	CHECK_EQ(wal_open(dir, BIG, &test_log, &w), 0);
	for (size_t i = 0; i < n; i++) {
		CHECK_EQ(wal_append(w, recs[i]), 0);
		ends[i] = wal_bytes(w);
	}
	wal_close(w);
	seg_path(path, sizeof(path), dir, 1);
	buf = read_file(path, len);
	CHECK_EQ(*len, ends[n - 1]);
	return buf;
}

/* Puts @len bytes at @buf in @dir (emptied first) as segment 1, replays and
 * checks it yields exactly @want[0..@k); returns the warnings logged. */
static int replay_bytes(const char *dir, const void *buf, size_t len,
			struct change **want, size_t k)
{
	char path[1024];

	empty_dir(dir);
	seg_path(path, sizeof(path), dir, 1);
	write_file(path, buf, len);
	return replay_check(dir, want, k);
}

/* The torn-tail test: every prefix of a segment replays to the records it
 * holds whole, with a warning exactly when it ends inside a record. */
static void test_cut_everywhere(void)
{
	struct change *recs[CUT_RECS];
	uint64_t ends[CUT_RECS];
	char dir[512];
	uint8_t *seg;
	size_t len, k = 0;
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (size_t i = 0; i < CUT_RECS; i++)
		recs[i] = rec_random(1000 + i, 300);
	seg = write_segment(recs, CUT_RECS, ends, &len);
	new_dir(dir, sizeof(dir));
	for (size_t cut = 0; cut <= len; cut++) {
		bool boundary;

		while (k < CUT_RECS && ends[k] <= cut)
			k++;
		boundary = cut == (k ? ends[k - 1] : 0);
		snprintf(check_context, sizeof(check_context),
			 "cut at %zu of %zu (%zu records whole)", cut, len, k);
		CHECK_EQ(replay_bytes(dir, seg, cut, recs, k), !boundary);
	}
	check_context[0] = '\0';
	CHECK_EQ(k, CUT_RECS);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("  %zu cuts of a %zu-byte segment in %.1f s\n", len + 1, len,
	       (double)(t1.tv_sec - t0.tv_sec) +
		       (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	free(seg);
	recs_free(recs, CUT_RECS);
}

/* A byte changed anywhere in a record (header or body) ends replay just
 * before it, though whole valid records follow. */
static void test_flip(void)
{
	struct change *recs[CUT_RECS];
	uint64_t ends[CUT_RECS];
	char dir[512];
	uint8_t *seg;
	size_t len, mid = CUT_RECS / 2;

	for (size_t i = 0; i < CUT_RECS; i++)
		recs[i] = rec_random(2000 + i, 300);
	seg = write_segment(recs, CUT_RECS, ends, &len);
	new_dir(dir, sizeof(dir));
	for (size_t off = ends[mid - 1]; off < ends[mid]; off++) {
		snprintf(check_context, sizeof(check_context),
			 "byte %zu of record %zu flipped", off, mid);
		seg[off] ^= 0x5a;
		CHECK_EQ(replay_bytes(dir, seg, len, recs, mid), 1);
		seg[off] ^= 0x5a;
	}
	check_context[0] = '\0';
	/* unchanged, all of it */
	CHECK_EQ(replay_bytes(dir, seg, len, recs, CUT_RECS), 0);
	free(seg);
	recs_free(recs, CUT_RECS);
}

/* A body with a good checksum must still parse exactly. */
static void test_malformed_body(void)
{
	struct change *recs[3];
	uint64_t ends[3];
	char dir[512];
	uint8_t *seg, *bad, *body;
	size_t len, body_len, kind_off;
	uLong crc;

	for (size_t i = 0; i < 3; i++) {
		recs[i] = rec_new(50 + i, i + 1);
		recs[i]->parent = 1;
		recs[i]->name = strdup("abc");
		recs[i]->meta.kind = ITEM_BINARY;
	}
	seg = write_segment(recs, 3, ends, &len);
	new_dir(dir, sizeof(dir));
	body = seg + ends[0] + HDR;
	body_len = ends[1] - ends[0] - HDR;

	/* kind out of range, checksum fixed */
	kind_off = 8 + 8 + 1 + 8 + 2 + 3;
	CHECK_EQ(body[kind_off], ITEM_BINARY);
	body[kind_off] = 3;
	crc = crc32(0L, body, (uInt)body_len);
	for (int i = 0; i < 4; i++)
		body[-4 + i] = (uint8_t)(crc >> (8 * i));
	CHECK_EQ(replay_bytes(dir, seg, len, recs, 1), 1);
	body[kind_off] = ITEM_BINARY;
	crc = crc32(0L, body, (uInt)body_len);
	for (int i = 0; i < 4; i++)
		body[-4 + i] = (uint8_t)(crc >> (8 * i));
	CHECK_EQ(replay_bytes(dir, seg, len, recs, 3), 0);

	/* one byte too many in the body (length and checksum agree) */
	bad = malloc(ends[1] + 1);
	CHECK(bad != NULL);
	memcpy(bad, seg, ends[1]);
	bad[ends[1]] = 0;
	body = bad + ends[0] + HDR;
	body_len++;
	for (int i = 0; i < 4; i++)
		body[-8 + i] = (uint8_t)(body_len >> (8 * i));
	crc = crc32(0L, body, (uInt)body_len);
	for (int i = 0; i < 4; i++)
		body[-4 + i] = (uint8_t)(crc >> (8 * i));
	CHECK_EQ(replay_bytes(dir, bad, ends[1] + 1, recs, 1), 1);

	/* the deleted flag not 0 or 1 */
	memcpy(bad, seg, ends[1]);
	body = bad + ends[0] + HDR;
	body_len--;
	body[16] = 2;
	crc = crc32(0L, body, (uInt)body_len);
	for (int i = 0; i < 4; i++)
		body[-4 + i] = (uint8_t)(crc >> (8 * i));
	CHECK_EQ(replay_bytes(dir, bad, ends[1], recs, 1), 1);

	free(bad);
	free(seg);
	recs_free(recs, 3);
}

/* Random bytes named as a segment: no records, no crash; the same with a
 * good magic and length in front. */
static void test_garbage(void)
{
	char dir[512];
	uint8_t *buf;
	size_t len = 64 * 1024;

	new_dir(dir, sizeof(dir));
	buf = malloc(len);
	CHECK(buf != NULL);
	for (int round = 0; round < 20; round++) {
		rnd_fill(buf, len);
		CHECK_EQ(replay_bytes(dir, buf, len, NULL, 0), 1);
		/* magic "TFW2" (or "TFW1") and a length that fits */
		buf[0] = round % 2 ? 0x31 : 0x32;
		buf[1] = 0x57, buf[2] = 0x46, buf[3] = 0x54;
		buf[4] = 0x00, buf[5] = 0x01, buf[6] = 0x00, buf[7] = 0x00;
		CHECK_EQ(replay_bytes(dir, buf, len, NULL, 0), 1);
		CHECK_EQ(replay_bytes(dir, buf, (size_t)(round + 1), NULL, 0),
			 1);
	}
	/* an empty segment is fine and says nothing */
	CHECK_EQ(replay_bytes(dir, buf, 0, NULL, 0), 0);
	free(buf);
}

/* A segment the build before atime_ns wrote: one record (magic "TFW1")
 * putting 1.json, ino 12 in directory 2, content {"a":1} as item user.1. */
static const uint8_t v1_segment[] = {
	  0x31, 0x57, 0x46, 0x54, 0x92, 0x00, 0x00, 0x00, 0x0e, 0x13, 0xa4, 0xb7,
	  0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x00,
	  0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	  0x00, 0x06, 0x00, 0x31, 0x2e, 0x6a, 0x73, 0x6f, 0x6e, 0x01, 0x00, 0x00,
	  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	  0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	  0x00, 0x15, 0xcd, 0x85, 0x3d, 0xfe, 0x9c, 0x97, 0x17, 0xb1, 0x68, 0x08,
	  0x71, 0xfe, 0x9c, 0x97, 0x17, 0xa4, 0x81, 0x00, 0x00, 0xe8, 0x03, 0x00,
	  0x00, 0xe8, 0x03, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00,
	  0x01, 0x06, 0x00, 0x00, 0x00, 0x75, 0x73, 0x65, 0x72, 0x2e, 0x31, 0x07,
	  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7b, 0x22, 0x61, 0x22, 0x3a,
	  0x31, 0x7d
};

/* The record @rec as the build before atime_ns wrote it: the current
 * layout's bytes (from wal_append()) without atime_ns, magic "TFW1". Sets
 * *len to its length. */
static uint8_t *v1_record(const struct change *rec, size_t *len)
{
	uint64_t end;
	uint8_t *cur = write_segment((struct change **)&rec, 1, &end, len);
	uint8_t *old, *body;
	size_t name_len = (size_t)cur[HDR + 25] | (size_t)cur[HDR + 26] << 8;
	size_t at = HDR + 79 + name_len + 8; /* after mtime_ns */
	uLong crc;

	old = malloc(*len - 8);
	CHECK(old != NULL);
	memcpy(old, cur, at);
	memcpy(old + at, cur + at + 8, *len - at - 8);
	*len -= 8;
	body = old + HDR;
	crc = crc32(0L, body, (uInt)(*len - HDR));
	for (int i = 0; i < 4; i++) {
		old[i] = (uint8_t)(WAL_MAGIC_V1 >> (8 * i));
		old[4 + i] = (uint8_t)((*len - HDR) >> (8 * i));
		old[8 + i] = (uint8_t)(crc >> (8 * i));
	}
	free(cur);
	return old;
}

/* Logs of the build before atime_ns replay: atime_ns is mtime_ns, every
 * other field as written; appended again, a record takes the current
 * layout. */
static void test_old_layout(void)
{
	struct change *recs[24], *want[24], *rec;
	struct got g = {0};
	struct wal *w;
	uint8_t *seg = NULL, *one;
	size_t len = 0, n, reclen;
	char dir[512], path[1024];

	/* the real thing, from the old build */
	new_dir(dir, sizeof(dir));
	seg_path(path, sizeof(path), dir, 1);
	write_file(path, v1_segment, sizeof(v1_segment));
	sink_reset();
	CHECK_EQ(wal_open(dir, BIG, &test_log, &w), 0);
	CHECK_EQ(wal_replay(w, collect, &g), 1);
	CHECK_EQ(sink.warnings, 0);
	rec = g.recs[0];
	CHECK_EQ(rec->seq, 7);
	CHECK_EQ(rec->ino, 12);
	CHECK_EQ(rec->parent, 2);
	CHECK_STREQ(rec->name, "1.json");
	CHECK_EQ(rec->meta.kind, ITEM_JSON);
	CHECK_EQ(rec->meta.version, 3);
	CHECK_EQ(rec->meta.mtime_ns, 1700000000123456789LL);
	CHECK_EQ(rec->meta.atime_ns, 1700000000123456789LL);
	CHECK_EQ(rec->meta.ctime_ns, 1700000000987654321LL);
	CHECK_EQ(rec->meta.mode, 0100644);
	CHECK_EQ(rec->meta.uid, 1000);
	CHECK(rec->item != NULL);
	CHECK_STREQ(item_id(rec->item), "user.1");
	CHECK_EQ(item_size(rec->item), 7);
	CHECK(memcmp(item_data(rec->item), "{\"a\":1}", 7) == 0);
	/* appended again: the current layout, 8 bytes longer */
	CHECK_EQ(wal_append(w, rec), 0);
	CHECK_EQ(wal_bytes(w), 2 * sizeof(v1_segment) + 8);
	got_release(&g);
	wal_close(w);
	seg_path(path, sizeof(path), dir, 2);
	one = read_file(path, &reclen);
	CHECK_EQ(reclen, sizeof(v1_segment) + 8);
	CHECK_EQ(one[0], 0x32); /* "TFW2" */
	free(one);
	one = malloc(sizeof(v1_segment));
	CHECK(one != NULL);
	memcpy(one, v1_segment, sizeof(v1_segment));
	CHECK_EQ(wal_record_decode(WAL_MAGIC_V1, one + HDR,
				   sizeof(v1_segment) - HDR, &rec),
		 0);
	change_free(rec);
	/* the same body read as the current layout is 8 bytes short */
	CHECK_EQ(wal_record_decode(WAL_MAGIC, one + HDR,
				   sizeof(v1_segment) - HDR, &rec),
		 -EBADMSG);
	CHECK_EQ(wal_record_decode(0x54465733u, one + HDR,
				   sizeof(v1_segment) - HDR, &rec),
		 -EBADMSG);
	free(one);

	/* random records, old and current layouts mixed in one segment (an
	 * upgrade that crashed again before the log drained) */
	n = sizeof(recs) / sizeof(recs[0]);
	for (size_t i = 0; i < n; i++) {
		recs[i] = rec_random(i + 1, 300);
		want[i] = recs[i];
		if (i % 3 == 2) {
			one = write_segment(&recs[i], 1, (uint64_t[1]){0},
					    &reclen);
		} else {
			/* what replay of the old layout yields */
			one = v1_record(recs[i], &reclen);
			want[i]->meta.atime_ns = want[i]->meta.mtime_ns;
		}
		seg = realloc(seg, len + reclen);
		CHECK(seg != NULL);
		memcpy(seg + len, one, reclen);
		len += reclen;
		free(one);
	}
	CHECK_EQ(replay_bytes(dir, seg, len, want, n), 0);
	/* cut inside the last record: the others still replay */
	CHECK_EQ(replay_bytes(dir, seg, len - 1, want, n - 1), 1);
	free(seg);
	recs_free(recs, n);
}

/* Files that are not segments are ignored and left alone. */
static void test_other_files(void)
{
	static const char *const others[] = {
		"notes.txt",
		"wal-1.log",
		"wal-000000000000000G.log",
		"wal-00000000000000AA.log", /* uppercase: not our name */
		"WAL-0000000000000001.log",
		"wal-0000000000000001.log.tmp",
		"wal-0000000000000009.lo",
	};
	size_t nothers = sizeof(others) / sizeof(*others);
	struct change *recs[5];
	char dir[512], path[1024];
	struct wal *w;
	struct got g = {0};

	for (size_t i = 0; i < 5; i++)
		recs[i] = rec_random(3000 + i, 100);
	new_dir(dir, sizeof(dir));
	for (size_t i = 0; i < nothers; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, others[i]);
		write_file(path, "junk", 4);
	}
	/* a directory with a segment's name is not a segment either */
	snprintf(path, sizeof(path), "%s/" SEG_FMT, dir, 0x30ull);
	CHECK(mkdir(path, 0700) == 0);

	CHECK_EQ(wal_open(dir, BIG, &test_log, &w), 0);
	CHECK(seg_exists(dir, 1));
	for (size_t i = 0; i < 5; i++)
		CHECK_EQ(wal_append(w, recs[i]), 0);
	wal_close(w);

	sink_reset();
	CHECK_EQ(wal_open(dir, BIG, &test_log, &w), 0);
	CHECK(seg_exists(dir, 2));
	CHECK_EQ(wal_bytes(w), file_size(strcat(strcpy(path, dir),
						"/wal-0000000000000001.log")));
	CHECK_EQ(wal_replay(w, collect, &g), 5);
	for (size_t i = 0; i < 5; i++)
		rec_check(g.recs[i], recs[i]);
	got_release(&g);
	CHECK_EQ(wal_drop_before(w, INT64_MAX), 0);
	wal_close(w);
	CHECK_EQ(sink.warnings + sink.errors, 0);
	for (size_t i = 0; i < nothers; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, others[i]);
		CHECK_EQ(file_size(path), 4);
	}
	snprintf(path, sizeof(path), "%s/" SEG_FMT, dir, 0x30ull);
	CHECK(rmdir(path) == 0);
	CHECK(!seg_exists(dir, 1) && seg_exists(dir, 2));
	recs_free(recs, 5);
}

/* wal_open() makes the directory but not its parent. */
static void test_open_errors(void)
{
	char dir[512];
	struct wal *w = NULL;

	snprintf(dir, sizeof(dir), "%s/missing/wal", tmpdir);
	sink_reset();
	CHECK_EQ(wal_open(dir, BIG, &test_log, &w), -ENOENT);
	CHECK(w == NULL);
	CHECK_EQ(sink.errors, 1);
	wal_close(NULL);

	/* A directory it may not write: as root (who may write anywhere),
	 * the check runs in a child that became 'nobody' (65534). */
	new_dir(dir, sizeof(dir));
	if (geteuid() != 0) {
		CHECK(chmod(dir, 0500) == 0);
		CHECK_EQ(wal_open(dir, BIG, &test_log, &w), -EACCES);
	} else {
		pid_t pid;
		int status = -1, r;

		CHECK(chmod(tmpdir, 0711) == 0 && chmod(dir, 0555) == 0);
		pid = fork();
		if (pid == 0) {
			if (setgroups(0, NULL) ||
			    setresgid(65534, 65534, 65534) ||
			    setresuid(65534, 65534, 65534))
				_exit(2);
			r = wal_open(dir, BIG, &test_log, &w);
			_exit(r == -EACCES ? 0 : 1);
		}
		CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		CHECK(chmod(tmpdir, 0700) == 0);
	}
	CHECK(chmod(dir, 0700) == 0);
}

/* Damage in one segment ends replay there: the segments after it are not
 * read either, so what replay yields is a prefix of what was appended. */
static void test_prefix_across_segments(void)
{
	struct change *recs[20];
	char dir[512], path[1024];
	struct got g = {0};
	uint64_t first;
	struct wal *w;
	FILE *f;
	int c;

	for (size_t i = 0; i < 20; i++)
		recs[i] = rec_random(5000 + i, 200);
	new_dir(dir, sizeof(dir));
	CHECK_EQ(wal_open(dir, BIG, &test_log, &w), 0);
	for (size_t i = 0; i < 5; i++)
		CHECK_EQ(wal_append(w, recs[i]), 0);
	first = wal_bytes(w);
	for (size_t i = 5; i < 10; i++)
		CHECK_EQ(wal_append(w, recs[i]), 0);
	CHECK_EQ(wal_rotate(w), 2);
	for (size_t i = 10; i < 20; i++)
		CHECK_EQ(wal_append(w, recs[i]), 0);
	CHECK_EQ(wal_seal(w), 0);
	wal_close(w);

	/* one byte of record 5 (segment 1) goes bad */
	seg_path(path, sizeof(path), dir, 1);
	f = fopen(path, "r+b");
	CHECK(f != NULL);
	CHECK_EQ(fseek(f, (long)first + 20, SEEK_SET), 0);
	c = fgetc(f);
	CHECK(c != EOF);
	CHECK_EQ(fseek(f, (long)first + 20, SEEK_SET), 0);
	CHECK(fputc(c ^ 0x5a, f) != EOF);
	CHECK_EQ(fclose(f), 0);

	sink_reset();
	CHECK_EQ(wal_open(dir, BIG, &test_log, &w), 0);
	CHECK_EQ(wal_replay(w, collect, &g), 5);
	for (size_t i = 0; i < 5; i++)
		rec_check(g.recs[i], recs[i]);
	got_release(&g);
	wal_close(w);
	recs_free(recs, 20);
}

int main(void)
{
	const char *base = getenv("TMPDIR");

	verbose = getenv("TEST_VERBOSE") != NULL;
	snprintf(tmpdir, sizeof(tmpdir), "%s/test_wal.XXXXXX",
		 base && *base ? base : "/tmp");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return TEST_SKIP;
	}
	tmpdir_made = true;
	atexit(cleanup);

	test_round_trip();
	printf("ok round trip\n");
	test_refused();
	printf("ok refused records\n");
	test_rotation();
	printf("ok rotation and drop\n");
	test_bound();
	printf("ok bound\n");
	test_failed_write();
	printf("ok failed write truncated\n");
	test_cut_everywhere();
	printf("ok cut at every offset\n");
	test_flip();
	printf("ok flipped bytes\n");
	test_malformed_body();
	printf("ok malformed bodies\n");
	test_garbage();
	test_old_layout();
	printf("ok garbage\n");
	test_prefix_across_segments();
	printf("ok damage ends replay across segments\n");
	test_other_files();
	printf("ok other files ignored\n");
	test_open_errors();
	printf("ok open errors\n");
	return 0;
}
