/*
 * test_l2_redis.c - unit tests of the Redis L2 cache (engine/l2_redis.c).
 *
 * Runs against the server in TIERFS_TEST_REDIS (a redis:// URL, as printed
 * by scripts/redis-test-server.sh start DIR); skips (exit 77) when it is
 * unset. Every run writes under its own random key prefix. Some tests
 * change the server's state: one kills every normal client connection
 * (CLIENT KILL TYPE normal) to test reconnecting, so point it at a private
 * server. The tests of passwords, eviction warnings, OOM and read-only
 * replicas start a second private server with the script (found through
 * TIERFS_REDIS_SCRIPT, else next to this source file, else under ./scripts)
 * and are skipped with a message when it is not found.
 *
 * Exit status: 0 passed, 1 failed, 77 skipped. Set TEST_VERBOSE=1 to see
 * the cache's log lines.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "change_helpers.h"
#include "check.h"
#include "l2_redis.h"
#include "l2_redis_int.h" /* the blob, for entries of another format */

/* ---- the log sink: keeps every line, prints when TEST_VERBOSE ---- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char *log_all; /* every line of the run, '\n'-separated */
static size_t log_all_len;
static size_t log_mark; /* where the current test's lines start */

static void log_fn(void *arg, int level, const char *msg)
{
	size_t n = strlen(msg);
	char *p;

	pthread_mutex_lock(&log_lock);
	p = realloc(log_all, log_all_len + n + 2);
	CHECK(p != NULL);
	log_all = p;
	memcpy(log_all + log_all_len, msg, n);
	log_all_len += n;
	log_all[log_all_len++] = '\n';
	log_all[log_all_len] = '\0';
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "log[%d]: %s\n", level, msg);
	pthread_mutex_unlock(&log_lock);
}

static const struct eng_log test_log = {.fn = log_fn, .arg = NULL};

static void log_reset(void)
{
	pthread_mutex_lock(&log_lock);
	log_mark = log_all_len;
	pthread_mutex_unlock(&log_lock);
}

/* Whether a line logged since log_reset() holds @word. */
static bool log_has(const char *word)
{
	bool found;

	pthread_mutex_lock(&log_lock);
	found = log_all && strstr(log_all + log_mark, word) != NULL;
	pthread_mutex_unlock(&log_lock);
	return found;
}

/* Whether any line of the whole run holds @word. */
static bool log_ever_has(const char *word)
{
	bool found;

	pthread_mutex_lock(&log_lock);
	found = log_all && strstr(log_all, word) != NULL;
	pthread_mutex_unlock(&log_lock);
	return found;
}

/* ---- helpers ---- */

static const char *url; /* TIERFS_TEST_REDIS */
static char prefix[64]; /* "tierfs-test:<random>:" */
static char host[256];
static int port;
static char password[128]; /* of the main server, "" when none */
static long long dbsize_at_start;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Splits a URL as the script prints it: redis://[:PW@]HOST:PORT[/DB]. */
static void split_url(const char *u, char *h, size_t hsize, int *p, char *pw,
		      size_t pwsize)
{
	const char *s, *at, *colon;

	CHECK(strncmp(u, "redis://", 8) == 0);
	s = u + 8;
	pw[0] = '\0';
	at = strrchr(s, '@');
	if (at) {
		CHECK(*s == ':');
		snprintf(pw, pwsize, "%.*s", (int)(at - s - 1), s + 1);
		s = at + 1;
	}
	colon = strchr(s, ':');
	CHECK(colon != NULL);
	snprintf(h, hsize, "%.*s", (int)(colon - s), s);
	*p = atoi(colon + 1);
	CHECK(*p > 0);
}

/* A raw hiredis connection, to look at what the cache wrote. */
static redisContext *raw_connect(const char *h, int p, const char *pw)
{
	struct timeval tv = {2, 0};
	redisContext *c = redisConnectWithTimeout(h, p, tv);
	redisReply *rep;

	CHECK(c != NULL && !c->err);
	if (pw && pw[0]) {
		rep = redisCommand(c, "AUTH %s", pw);
		CHECK(rep && rep->type == REDIS_REPLY_STATUS);
		freeReplyObject(rep);
	}
	return c;
}

/* Runs a raw command and returns its integer reply. */
static long long raw_int(redisContext *c, const char *fmt, ...)
{
	redisReply *rep;
	long long v;
	va_list ap;

	va_start(ap, fmt);
	rep = redisvCommand(c, fmt, ap);
	va_end(ap);
	CHECK(rep != NULL);
	if (rep->type != REDIS_REPLY_INTEGER)
		fprintf(stderr, "raw command '%s' answered type %d: %s\n", fmt,
			rep->type,
			rep->type == REDIS_REPLY_ERROR ? rep->str : "");
	CHECK(rep->type == REDIS_REPLY_INTEGER);
	v = rep->integer;
	freeReplyObject(rep);
	return v;
}

/* Runs a raw command that must answer +OK (or any status). */
static void raw_ok(redisContext *c, const char *fmt, ...)
{
	redisReply *rep;
	va_list ap;

	va_start(ap, fmt);
	rep = redisvCommand(c, fmt, ap);
	va_end(ap);
	CHECK(rep != NULL);
	if (rep->type != REDIS_REPLY_STATUS)
		fprintf(stderr, "raw command '%s' answered type %d: %s\n", fmt,
			rep->type,
			rep->type == REDIS_REPLY_ERROR ? rep->str : "");
	CHECK(rep->type == REDIS_REPLY_STATUS);
	freeReplyObject(rep);
}

static redisContext *raw_main(void)
{
	return raw_connect(host, port, password);
}

static char *key_of(uint64_t ino)
{
	static char buf[4][128];
	static int next;
	char *p = buf[next++ % 4];

	snprintf(p, 128, "%se:%llu", prefix, (unsigned long long)ino);
	return p;
}

static struct cache *open_ok(void)
{
	struct cache *s = NULL;

	CHECK_EQ(l2_redis_open(url, prefix, &test_log, &s), 0);
	CHECK(s != NULL);
	CHECK_STREQ(s->ops->name, "redis");
	return s;
}

static uint64_t next_ino = 1000;

static uint64_t new_ino(void)
{
	return __atomic_fetch_add(&next_ino, 1, __ATOMIC_RELAXED);
}

/* Metadata of a file holding @len bytes at @data (hash and size set). */
static struct item_meta meta_of(enum item_kind kind, const void *data,
				size_t len)
{
	struct item_meta m;

	memset(&m, 0, sizeof(m));
	m.kind = kind;
	m.size = len;
	if (kind != ITEM_DIR)
		item_hash(len ? data : "", len, m.hash);
	m.version = 1;
	m.mtime_ns = 1700000000123456789LL;
	m.atime_ns = 1600000000555555555LL;
	m.ctime_ns = 1700000000987654321LL;
	m.mode = kind == ITEM_DIR ? S_IFDIR | 0755 : S_IFREG | 0644;
	m.uid = 1000;
	m.gid = 1000;
	m.explicit_dir = kind == ITEM_DIR;
	return m;
}

/* Applies the @n changes @ch[0..n) and frees them (each set to NULL);
 * returns what apply() did. */
static int apply_all(struct cache *s, struct change **ch, size_t n)
{
	int err = s->ops->apply(s, ch, n);

	changes_free(ch, n);
	return err;
}

static void check_meta_eq(const struct item_meta *got,
			  const struct item_meta *want)
{
	CHECK_EQ(got->kind, want->kind);
	CHECK_EQ(got->size, want->size);
	CHECK(memcmp(got->hash, want->hash, ITEM_HASH_LEN) == 0);
	CHECK(got->version == want->version);
	CHECK_EQ(got->mtime_ns, want->mtime_ns);
	CHECK_EQ(got->atime_ns, want->atime_ns);
	CHECK_EQ(got->ctime_ns, want->ctime_ns);
	CHECK_EQ(got->mode, want->mode);
	CHECK_EQ(got->uid, want->uid);
	CHECK_EQ(got->gid, want->gid);
	CHECK_EQ(got->explicit_dir, want->explicit_dir);
	CHECK_EQ(got->state == NULL, want->state == NULL);
	if (want->state)
		CHECK_STREQ(got->state, want->state);
	CHECK_EQ(got->xattrs_len, want->xattrs ? want->xattrs_len : 0);
	if (want->xattrs && want->xattrs_len)
		CHECK(memcmp(got->xattrs, want->xattrs, want->xattrs_len) == 0);
	else
		CHECK(got->xattrs == NULL);
}

/* Checks get and fetch of @ino against what was written. */
static void check_entry(struct cache *s, uint64_t ino, uint64_t parent,
			const char *name, const struct item_meta *m,
			const void *data, size_t len)
{
	struct store_row row;
	void *got = (void *)1;
	size_t got_len = 1;

	memset(&row, 0, sizeof(row));
	CHECK_EQ(s->ops->get(s, ino, &row), 0);
	CHECK(row.ino == ino);
	CHECK(row.parent == parent);
	CHECK_STREQ(row.name, name);
	check_meta_eq(&row.meta, m);
	store_row_release(&row);

	memset(&row, 0, sizeof(row));
	CHECK_EQ(s->ops->fetch(s, ino, &row, &got, &got_len), 0);
	CHECK(row.ino == ino);
	CHECK(row.parent == parent);
	CHECK_STREQ(row.name, name);
	check_meta_eq(&row.meta, m);
	CHECK_EQ(got_len, len);
	if (len)
		CHECK(memcmp(got, data, len) == 0);
	else
		CHECK(got == NULL);
	free(got);
	store_row_release(&row);
}

static void check_absent(struct cache *s, uint64_t ino)
{
	struct store_row row;
	void *data = NULL;
	size_t len = 0;

	CHECK_EQ(s->ops->get(s, ino, &row), -ENOENT);
	CHECK_EQ(s->ops->fetch(s, ino, &row, &data, &len), -ENOENT);
}

static void *random_bytes(size_t len)
{
	unsigned char *p = malloc(len ? len : 1);
	size_t off = 0;

	CHECK(p != NULL);
	while (off < len) {
		ssize_t n = getrandom(p + off, len - off, 0);

		CHECK(n > 0);
		off += (size_t)n;
	}
	return p;
}

/* ---- the tests ---- */

static void test_round_trip(void)
{
	static const char small[] = "a\0b\0\0c\0";
	size_t big_len = 1u << 20;
	unsigned char *big = random_bytes(big_len);
	uint64_t ino_small = new_ino(), ino_big = new_ino(),
		 ino_empty = new_ino(), ino_json = new_ino();
	const char *json = "{\"a\": [1, 2.50, \"x\"]}\n";
	struct item_meta m_small, m_big, m_empty, m_json;
	struct change *ch[4];
	struct cache *s = open_ok();

	big[0] = 0;
	big[big_len / 2] = 0;
	big[big_len - 1] = 0;
	m_small = meta_of(ITEM_BINARY, small, sizeof(small));
	m_big = meta_of(ITEM_BINARY, big, big_len);
	m_empty = meta_of(ITEM_BINARY, NULL, 0);
	m_json = meta_of(ITEM_JSON, json, strlen(json));
	ch[0] = data_change_of(ino_small, 1, "small.bin", &m_small, small,
			       sizeof(small));
	ch[1] = data_change_of(ino_big, 1, "big", &m_big, big, big_len);
	ch[2] = data_change_of(ino_empty, 1, "empty", &m_empty, NULL, 0);
	ch[3] = data_change_of(ino_json, 1, "doc.json", &m_json, json,
			       strlen(json));
	CHECK_EQ(apply_all(s, ch, 4), 0);

	check_entry(s, ino_small, 1, "small.bin", &m_small, small,
		    sizeof(small));
	check_entry(s, ino_big, 1, "big", &m_big, big, big_len);
	check_entry(s, ino_empty, 1, "empty", &m_empty, NULL, 0);
	check_entry(s, ino_json, 1, "doc.json", &m_json, json, strlen(json));

	/* An overwrite replaces both fields. */
	m_small.version = 2;
	m_big.size = big_len / 3;
	item_hash(big, big_len / 3, m_big.hash);
	ch[0] = data_change_of(ino_small, 7, "renamed", &m_big, big,
			       big_len / 3);
	CHECK_EQ(apply_all(s, ch, 1), 0);
	check_entry(s, ino_small, 7, "renamed", &m_big, big, big_len / 3);

	/* Never written: absent everywhere. */
	check_absent(s, new_ino());
	free(big);
	cache_free(s);
}

/* fetch_many(): many entries in one pipeline, each as fetch() reads it;
 * absent ones marked, not failed. */
static void test_fetch_many(void)
{
	enum { N = 150 };
	uint64_t inos[STORE_READ_MANY_MAX + 1];
	struct store_row rows[STORE_READ_MANY_MAX + 1];
	struct store_blob out[STORE_READ_MANY_MAX + 1];
	struct item_meta m[N];
	struct change *ch[N];
	char name[32], data[N][32];
	struct cache *s = open_ok();
	int found = 0;

	for (int i = 0; i < N; i++) {
		inos[i] = new_ino();
		snprintf(name, sizeof(name), "f%03d", i);
		snprintf(data[i], sizeof(data[i]), "content %d", i);
		m[i] = meta_of(ITEM_BINARY, data[i], strlen(data[i]));
		ch[i] = data_change_of(inos[i], 1, name, &m[i], data[i],
				       strlen(data[i]));
	}
	CHECK_EQ(apply_all(s, ch, N), 0);
	inos[N] = new_ino(); /* never written */
	CHECK_EQ(s->ops->fetch_many(s, inos, N + 1, rows, out), N);
	for (int i = 0; i <= N; i++) {
		if (i == N) {
			CHECK(out[i].ino == 0);
			continue;
		}
		CHECK(out[i].ino == inos[i]);
		CHECK(rows[i].ino == inos[i]);
		snprintf(name, sizeof(name), "f%03d", i);
		CHECK_STREQ(rows[i].name, name);
		check_meta_eq(&rows[i].meta, &m[i]);
		CHECK_EQ(out[i].len, strlen(data[i]));
		CHECK(memcmp(out[i].data, data[i], out[i].len) == 0);
		found++;
		free(out[i].data);
		store_row_release(&rows[i]);
	}
	CHECK_EQ(found, N);
	CHECK_EQ(s->ops->fetch_many(s, inos, 0, rows, out), 0);
	CHECK_EQ(s->ops->fetch_many(s, inos, STORE_READ_MANY_MAX + 1, rows,
				    out),
		 -EINVAL);
	cache_free(s);
}

static void test_meta_fields(void)
{
	struct cache *s = open_ok();
	struct item_meta m[6];
	struct change *ch[6];
	uint64_t ino[6];
	char long_name[STORE_NAME_MAX + 1];
	static const char xval[] = "v\0with\0nuls";

	memset(long_name, 'n', STORE_NAME_MAX);
	long_name[STORE_NAME_MAX] = '\0';
	for (int i = 0; i < 6; i++) {
		ino[i] = new_ino();
		m[i] = meta_of(ITEM_BINARY, "x", 1);
	}
	/* 0: a NULL state tag; 1: a set one; 2: "" stays "" (not NULL) */
	m[1].state = "draft:42";
	m[2].state = "";
	/* 3: xattrs (values with NULs), extreme numbers */
	CHECK_EQ(item_xattr_set(&m[3], "user.one", "1", 1, 0), 0);
	CHECK_EQ(item_xattr_set(&m[3], "user.two", xval, sizeof(xval), 0), 0);
	m[3].mtime_ns = -1234567890123LL;
	m[3].atime_ns = INT64_MAX;
	m[3].ctime_ns = INT64_MIN;
	m[3].version = UINT64_MAX;
	m[3].uid = UINT32_MAX;
	m[3].gid = 0;
	m[3].mode = S_IFREG | 07777;
	/* 4: a directory, explicit, with empty content */
	m[4] = meta_of(ITEM_DIR, NULL, 0);
	/* 5: an implicit directory with a long name */
	m[5] = meta_of(ITEM_DIR, NULL, 0);
	m[5].explicit_dir = false;

	ch[0] = data_change_of(ino[0], 1, "s0", &m[0], "x", 1);
	ch[1] = data_change_of(ino[1], 1, "s1", &m[1], "x", 1);
	ch[2] = data_change_of(ino[2], 1, "s2", &m[2], "x", 1);
	ch[3] = data_change_of(ino[3], UINT64_MAX - 1, "x", &m[3], "x", 1);
	ch[4] = data_change_of(ino[4], 1, "dir", &m[4], NULL, 0);
	ch[5] = data_change_of(ino[5], ino[4], long_name, &m[5], NULL, 0);
	CHECK_EQ(apply_all(s, ch, 6), 0);

	check_entry(s, ino[0], 1, "s0", &m[0], "x", 1);
	check_entry(s, ino[1], 1, "s1", &m[1], "x", 1);
	check_entry(s, ino[2], 1, "s2", &m[2], "x", 1);
	check_entry(s, ino[3], UINT64_MAX - 1, "x", &m[3], "x", 1);
	check_entry(s, ino[4], 1, "dir", &m[4], NULL, 0);
	check_entry(s, ino[5], ino[4], long_name, &m[5], NULL, 0);

	/* The root: ino 1, parent 0, empty name. */
	ch[0] = data_change_of(STORE_ROOT_INO, 0, "", &m[4], NULL, 0);
	CHECK_EQ(apply_all(s, ch, 1), 0);
	check_entry(s, STORE_ROOT_INO, 0, "", &m[4], NULL, 0);
	for (int i = 0; i < 6; i++)
		ch[i] = delete_of(ino[i]);
	CHECK_EQ(apply_all(s, ch, 6), 0);
	ch[0] = delete_of(STORE_ROOT_INO);
	CHECK_EQ(apply_all(s, ch, 1), 0);
	item_meta_release(&m[3]);
	cache_free(s);
}

static void test_delete(void)
{
	struct cache *s = open_ok();
	struct item_meta m = meta_of(ITEM_BINARY, "abc", 3);
	uint64_t a = new_ino(), b = new_ino();
	struct change *ch[3];
	redisContext *raw = raw_main();

	ch[0] = data_change_of(a, 1, "a", &m, "abc", 3);
	ch[1] = data_change_of(b, 1, "b", &m, "abc", 3);
	CHECK_EQ(apply_all(s, ch, 2), 0);
	CHECK_EQ(raw_int(raw, "EXISTS %s", key_of(a)), 1);

	ch[0] = delete_of(a);
	ch[1] = delete_of(new_ino()); /* never written: fine */
	CHECK_EQ(apply_all(s, ch, 2), 0);
	check_absent(s, a);
	CHECK_EQ(raw_int(raw, "EXISTS %s", key_of(a)), 0);
	check_entry(s, b, 1, "b", &m, "abc", 3);

	/* In one batch, a delete and a write of other entries. */
	ch[0] = delete_of(b);
	ch[1] = data_change_of(a, 1, "a", &m, "abc", 3);
	CHECK_EQ(apply_all(s, ch, 2), 0);
	check_absent(s, b);
	check_entry(s, a, 1, "a", &m, "abc", 3);
	ch[0] = delete_of(a);
	CHECK_EQ(apply_all(s, ch, 1), 0);
	redisFree(raw);
	cache_free(s);
}

static void test_meta_only(void)
{
	struct cache *s = open_ok();
	static const char data[] = "content\0v1";
	struct item_meta m = meta_of(ITEM_BINARY, data, sizeof(data));
	struct item_meta m2, m3;
	uint64_t ino = new_ino(), absent = new_ino(), dir = new_ino();
	struct change *ch;
	redisContext *raw = raw_main();

	/* An existing entry: "m" changes, "d" stays. */
	ch = data_change_of(ino, 1, "f", &m, data, sizeof(data));
	CHECK_EQ(apply_all(s, &ch, 1), 0);
	m2 = m;
	m2.mode = S_IFREG | 0600;
	m2.ctime_ns += 5;
	m2.state = "tagged";
	ch = change_of(ino, 9, "g", &m2);
	CHECK_EQ(apply_all(s, &ch, 1), 0);
	check_entry(s, ino, 9, "g", &m2, data, sizeof(data));
	CHECK_EQ(raw_int(raw, "HLEN %s", key_of(ino)), 2);

	/* An absent entry: nothing is written, no half entry. */
	ch = change_of(absent, 1, "h", &m);
	CHECK_EQ(apply_all(s, &ch, 1), 0);
	CHECK_EQ(raw_int(raw, "EXISTS %s", key_of(absent)), 0);
	check_absent(s, absent);

	/* Metadata of other content (a newer version whose content this
	 * batch does not carry): the stale pair is dropped. */
	m3 = m2;
	m3.version = 2;
	m3.size = 3;
	item_hash("new", 3, m3.hash);
	ch = change_of(ino, 9, "g", &m3);
	CHECK_EQ(apply_all(s, &ch, 1), 0);
	CHECK_EQ(raw_int(raw, "EXISTS %s", key_of(ino)), 0);
	check_absent(s, ino);

	/* A directory sent without content (as the engine does): not
	 * cached, and no command sent for it. */
	m3 = meta_of(ITEM_DIR, NULL, 0);
	ch = change_of(dir, 1, "d", &m3);
	raw_ok(raw, "CONFIG RESETSTAT");
	CHECK_EQ(apply_all(s, &ch, 1), 0);
	{
		redisReply *rep = redisCommand(raw, "INFO commandstats");

		CHECK(rep && rep->type == REDIS_REPLY_STRING);
		CHECK(rep && !strstr(rep->str, "cmdstat_eval:"));
		CHECK(rep && !strstr(rep->str, "cmdstat_del:"));
		freeReplyObject(rep);
	}
	CHECK_EQ(raw_int(raw, "EXISTS %s", key_of(dir)), 0);
	redisFree(raw);
	cache_free(s);
}

/* The mirror of L3's Merkle tree: put_tree, get_tree, a deleted directory
 * takes its hash along, a value that is not a hash is refused. */
static void test_tree(void)
{
	struct cache *s = open_ok();
	uint64_t d1 = new_ino(), d2 = new_ino();
	struct store_dirhash dirs[2] = {{.ino = d1}, {.ino = d2}};
	redisContext *raw = raw_main();
	uint8_t got[ITEM_HASH_LEN];
	char tkey[128], hex[65];
	struct change *ch;

	item_hash("one", 3, dirs[0].merkle);
	item_hash("two", 3, dirs[1].merkle);
	CHECK_EQ(s->ops->get_tree(s, d1, got), -ENOENT);
	CHECK_EQ(s->ops->put_tree(s, dirs, 2), 0);
	CHECK_EQ(s->ops->put_tree(s, dirs, 0), 0);
	CHECK_EQ(s->ops->get_tree(s, d1, got), 0);
	CHECK(memcmp(got, dirs[0].merkle, ITEM_HASH_LEN) == 0);
	CHECK_EQ(s->ops->get_tree(s, d2, got), 0);
	CHECK(memcmp(got, dirs[1].merkle, ITEM_HASH_LEN) == 0);

	/* stored as readable hex under P t:INO */
	snprintf(tkey, sizeof(tkey), "%st:%llu", prefix,
		 (unsigned long long)d1);
	item_hash_hex(dirs[0].merkle, hex);
	{
		redisReply *rep = redisCommand(raw, "GET %s", tkey);

		CHECK(rep && rep->type == REDIS_REPLY_STRING);
		CHECK(rep && strcmp(rep->str, hex) == 0);
		freeReplyObject(rep);
	}

	/* a deleted directory loses its mirrored hash */
	ch = delete_of(d1);
	CHECK_EQ(apply_all(s, &ch, 1), 0);
	CHECK_EQ(raw_int(raw, "EXISTS %s", tkey), 0);
	CHECK_EQ(s->ops->get_tree(s, d1, got), -ENOENT);

	/* garbage (someone's redis-cli) is refused, not decoded */
	raw_ok(raw, "SET %s %s", tkey, "not-a-hash");
	CHECK_EQ(s->ops->get_tree(s, d1, got), -EBADMSG);
	hex[10] = 'x';
	raw_ok(raw, "SET %s %s", tkey, hex);
	CHECK_EQ(s->ops->get_tree(s, d1, got), -EBADMSG);
	raw_int(raw, "DEL %s", tkey);
	snprintf(tkey, sizeof(tkey), "%st:%llu", prefix,
		 (unsigned long long)d2);
	raw_int(raw, "DEL %s", tkey);
	redisFree(raw);
	cache_free(s);
}

struct seen_keys {
	uint64_t ino[8];
	bool tree[8];
	int n;
};

static int collect_key(void *arg, uint64_t ino, bool tree)
{
	struct seen_keys *k = arg;

	CHECK(k->n < 8);
	if (k->n < 8) {
		k->ino[k->n] = ino;
		k->tree[k->n++] = tree;
	}
	return 0;
}

static int stop_at_first(void *arg, uint64_t ino, bool tree)
{
	return -ECANCELED;
}

/* each_cached lists exactly this prefix's "e:" and "t:" keys, with glob
 * characters in the prefix taken literally; drop_cached removes one. */
static void test_each_cached(void)
{
	char gprefix[128], key[160];
	struct cache *s = NULL;
	struct item_meta m = meta_of(ITEM_BINARY, "x", 1);
	struct store_dirhash d = {.ino = 77};
	struct change *ch = data_change_of(55, 1, "f", &m, "x", 1);
	redisContext *raw = raw_main();
	struct seen_keys k = {0};

	snprintf(gprefix, sizeof(gprefix), "%sg*l[o]b?:", prefix);
	CHECK_EQ(l2_redis_open(url, gprefix, &test_log, &s), 0);
	CHECK_EQ(s->ops->each_cached(s, collect_key, &k), 0);
	CHECK_EQ(k.n, 0);
	CHECK_EQ(apply_all(s, &ch, 1), 0);
	CHECK_EQ(s->ops->put_tree(s, &d, 1), 0);
	/* keys the unescaped pattern would match, and other key kinds */
	snprintf(key, sizeof(key), "%sgXlob?:e:56", prefix);
	raw_ok(raw, "SET %s x", key);
	snprintf(key, sizeof(key), "%se:57", gprefix);
	raw_ok(raw, "SET %s x", key);
	snprintf(key, sizeof(key), "%s_:58", gprefix);
	raw_ok(raw, "SET %s x", key);
	snprintf(key, sizeof(key), "%se:12x", gprefix);
	raw_ok(raw, "SET %s x", key);

	/* exactly entries 55 and 57 and tree hash 77, each once, in the
	 * order SCAN happens to give (each_cached() promises none) */
	CHECK_EQ(s->ops->each_cached(s, collect_key, &k), 0);
	CHECK_EQ(k.n, 3);
	{
		unsigned found = 0; /* bit 0: e:55, bit 1: e:57, bit 2: t:77 */

		for (int i = 0; i < k.n; i++) {
			unsigned bit = k.ino[i] == 55 && !k.tree[i]   ? 1u
				       : k.ino[i] == 57 && !k.tree[i] ? 2u
				       : k.ino[i] == 77 && k.tree[i]  ? 4u
								      : 0u;

			CHECK(bit != 0 && !(found & bit));
			found |= bit;
		}
		CHECK_EQ(found, 7);
	}
	CHECK_EQ(s->ops->each_cached(s, stop_at_first, NULL), -ECANCELED);

	CHECK_EQ(s->ops->drop_cached(s, 55, true), 0); /* absent: no error */
	CHECK_EQ(s->ops->drop_cached(s, 77, true), 0);
	CHECK_EQ(s->ops->drop_cached(s, 57, false), 0);
	k.n = 0;
	CHECK_EQ(s->ops->each_cached(s, collect_key, &k), 0);
	CHECK_EQ(k.n, 1);
	CHECK(k.ino[0] == 55 && !k.tree[0]);

	CHECK_EQ(s->ops->drop_cached(s, 55, false), 0);
	snprintf(key, sizeof(key), "%sgXlob?:e:56", prefix);
	raw_int(raw, "DEL %s", key);
	snprintf(key, sizeof(key), "%s_:58", gprefix);
	raw_int(raw, "DEL %s", key);
	snprintf(key, sizeof(key), "%se:12x", gprefix);
	raw_int(raw, "DEL %s", key);
	redisFree(raw);
	cache_free(s);
}

static void test_batch(void)
{
	enum { N = 2000, LEN = 256, ROUNDS = 5 };
	struct cache *s = open_ok();
	struct change **ch = calloc(N, sizeof(*ch));
	struct item_meta *m = calloc(N, sizeof(*m));
	char(*names)[32] = calloc(N, 32);
	unsigned char *data = random_bytes((size_t)N * LEN);
	uint64_t first = new_ino();
	double best = 1e9, t0, t;

	CHECK(ch && m && names);
	for (int i = 1; i < N; i++)
		(void)new_ino();
	for (int i = 0; i < N; i++) {
		snprintf(names[i], 32, "item-%d", i);
		m[i] = meta_of(ITEM_BINARY, data + (size_t)i * LEN, LEN);
		ch[i] = data_change_of(first + (uint64_t)i, 1, names[i], &m[i],
				       data + (size_t)i * LEN, LEN);
	}
	for (int r = 0; r < ROUNDS; r++) {
		t0 = now_s();
		CHECK_EQ(s->ops->apply(s, ch, N), 0);
		t = now_s() - t0;
		if (t < best)
			best = t;
	}
	printf("  apply: batch of %d changes (%d B each) in one pipeline: "
	       "%.1f ms, %.0f changes/s (best of %d)\n",
	       N, LEN, best * 1e3, N / best, ROUNDS);

	t0 = now_s();
	for (int i = 0; i < N; i++) {
		struct store_row row;

		CHECK_EQ(s->ops->get(s, first + (uint64_t)i, &row), 0);
		CHECK_STREQ(row.name, names[i]);
		CHECK(row.meta.size == LEN);
		store_row_release(&row);
	}
	t = now_s() - t0;
	printf("  get: %d one at a time: %.1f ms, %.0f gets/s\n", N, t * 1e3,
	       N / t);
	for (int i = 0; i < N; i += 97)
		check_entry(s, first + (uint64_t)i, 1, names[i], &m[i],
			    data + (size_t)i * LEN, LEN);

	/* A mixed batch: deletes, metadata-only changes and writes. */
	for (int i = 0; i < N; i++) {
		if (i % 3 == 2)
			continue; /* the write again */
		change_free(ch[i]);
		if (i % 3 == 0) {
			ch[i] = delete_of(first + (uint64_t)i);
		} else {
			m[i].mode = S_IFREG | 0640;
			ch[i] = change_of(first + (uint64_t)i, 2, names[i],
					  &m[i]);
		}
	}
	CHECK_EQ(apply_all(s, ch, N), 0);
	for (int i = 0; i < N; i += 7) {
		if (i % 3 == 0)
			check_absent(s, first + (uint64_t)i);
		else
			check_entry(s, first + (uint64_t)i, i % 3 == 1 ? 2 : 1,
				    names[i], &m[i], data + (size_t)i * LEN,
				    LEN);
	}
	for (int i = 0; i < N; i++)
		ch[i] = delete_of(first + (uint64_t)i);
	CHECK_EQ(apply_all(s, ch, N), 0);
	free(data);
	free(names);
	free(m);
	free(ch);
	cache_free(s);
}

/* More content than one chunk of the pipeline, and a 16 MiB item. */
static void test_big_batch(void)
{
	enum { N = 20 };
	size_t len = 1u << 20, huge_len = 16u << 20;
	struct cache *s = open_ok();
	unsigned char *data = random_bytes(N * len);
	unsigned char *huge = random_bytes(huge_len);
	struct item_meta m[N + 1];
	struct change *ch[N + 1];
	uint64_t first = new_ino();
	double t0, t;

	for (int i = 1; i <= N; i++)
		(void)new_ino();
	for (int i = 0; i < N; i++) {
		m[i] = meta_of(ITEM_BINARY, data + i * len, len);
		ch[i] = data_change_of(first + (uint64_t)i, 1, "big", &m[i],
				       data + i * len, len);
	}
	m[N] = meta_of(ITEM_BINARY, huge, huge_len);
	ch[N] = data_change_of(first + N, 1, "huge", &m[N], huge, huge_len);
	t0 = now_s();
	CHECK_EQ(apply_all(s, ch, N + 1), 0);
	t = now_s() - t0;
	printf("  apply: %d x 1 MiB + 16 MiB in one call: %.0f ms, "
	       "%.0f MiB/s\n",
	       N, t * 1e3, (N + 16) / t);
	for (int i = 0; i < N; i++)
		check_entry(s, first + (uint64_t)i, 1, "big", &m[i],
			    data + i * len, len);
	check_entry(s, first + N, 1, "huge", &m[N], huge, huge_len);
	for (int i = 0; i <= N; i++)
		ch[i] = delete_of(first + (uint64_t)i);
	CHECK_EQ(apply_all(s, ch, N + 1), 0);
	free(data);
	free(huge);
	cache_free(s);
}

static void test_invalid_changes(void)
{
	struct cache *s = open_ok();
	struct item_meta m = meta_of(ITEM_BINARY, "x", 1);
	uint64_t ino = new_ino();
	struct change *ch[2], *bad[5];
	redisContext *raw = raw_main();

	bad[0] = data_change_of(0, 1, "zero", &m, "x", 1);
	bad[1] = data_change_of(new_ino(), 1, "a/b", &m, "x", 1);
	bad[2] = data_change_of(new_ino(), 1, "", &m, "x", 1);
	bad[3] = data_change_of(new_ino(), 1, "noname", &m, "x", 1);
	free(bad[3]->name);
	bad[3]->name = NULL;
	bad[4] = data_change_of(new_ino(), 1, "x", &m, "x", 1);
	bad[4]->meta.kind = (enum item_kind)7;
	for (int i = 0; i < 5; i++) {
		ch[0] = data_change_of(ino, 1, "ok", &m, "x", 1);
		ch[1] = bad[i];
		CHECK_EQ(apply_all(s, ch, 2), -EINVAL);
	}
	/* nothing of a refused batch was sent */
	CHECK_EQ(raw_int(raw, "EXISTS %s", key_of(ino)), 0);
	CHECK_EQ(apply_all(s, ch, 0), 0);
	redisFree(raw);
	cache_free(s);
}

/* An error reply in the middle of a pipeline: the other changes land, the
 * first error is returned and the connection stays usable. */
static void test_error_in_batch(void)
{
	struct cache *s = open_ok();
	struct item_meta m = meta_of(ITEM_BINARY, "abc", 3);
	uint64_t a = new_ino(), bad = new_ino(), bad2 = new_ino(),
		 b = new_ino();
	struct change *ch[4];
	redisContext *raw = raw_main();

	raw_ok(raw, "SET %s not-a-hash", key_of(bad));
	raw_ok(raw, "SET %s not-a-hash", key_of(bad2));
	ch[0] = data_change_of(a, 1, "a", &m, "abc", 3);
	ch[1] = data_change_of(bad, 1, "bad", &m, "abc", 3);
	ch[2] = change_of(bad2, 1, "bad2", &m); /* the script fails */
	ch[3] = data_change_of(b, 1, "b", &m, "abc", 3);
	log_reset();
	for (int i = 0; i < 3; i++) /* always on the same, reused context */
		CHECK_EQ(s->ops->apply(s, ch, 4), -EIO);
	changes_free(ch, 4);
	CHECK(log_has("WRONGTYPE"));
	CHECK(log_has("2 of 4 changes"));
	check_entry(s, a, 1, "a", &m, "abc", 3);
	check_entry(s, b, 1, "b", &m, "abc", 3);
	CHECK_EQ(raw_int(raw, "DEL %s %s", key_of(bad), key_of(bad2)), 2);
	ch[0] = delete_of(a);
	ch[1] = delete_of(b);
	CHECK_EQ(apply_all(s, ch, 2), 0);
	redisFree(raw);
	cache_free(s);
}

/* What the cache makes of entries it did not write. */
static void test_foreign_entries(void)
{
	struct cache *s = open_ok();
	struct item_meta m = meta_of(ITEM_BINARY, "abcd", 4);
	uint64_t ino = new_ino();
	struct change *ch = data_change_of(ino, 1, "f", &m, "abcd", 4);
	redisContext *raw = raw_main();
	struct store_row row;
	void *data;
	size_t len;

	/* Content whose length is not the metadata's size. */
	CHECK_EQ(apply_all(s, &ch, 1), 0);
	CHECK_EQ(raw_int(raw, "HSET %s d abc", key_of(ino)), 0);
	log_reset();
	CHECK_EQ(s->ops->fetch(s, ino, &row, &data, &len), -EUCLEAN);
	CHECK(log_has("corrupt entry"));

	/* A hash with "m" only: fetch sees no entry, and a metadata-only
	 * change does not keep the half entry. */
	CHECK_EQ(raw_int(raw, "HDEL %s d", key_of(ino)), 1);
	CHECK_EQ(s->ops->fetch(s, ino, &row, &data, &len), -ENOENT);
	ch = change_of(ino, 1, "f", &m);
	CHECK_EQ(apply_all(s, &ch, 1), 0);
	CHECK_EQ(raw_int(raw, "EXISTS %s", key_of(ino)), 0);
	ch = data_change_of(ino, 1, "f", &m, "abcd", 4);
	CHECK_EQ(apply_all(s, &ch, 1), 0);
	CHECK_EQ(raw_int(raw, "HDEL %s d", key_of(ino)), 1);

	/* A truncated blob, and trailing bytes. */
	CHECK_EQ(raw_int(raw, "HSET %s m %b", key_of(ino), "\x02garbage",
			 (size_t)8),
		 0);
	CHECK_EQ(s->ops->get(s, ino, &row), -EUCLEAN);

	/* Another format: absent. A newer one... */
	CHECK_EQ(raw_int(raw, "HSET %s m %b d abcd", key_of(ino),
			 "\x03whatever", (size_t)9),
		 1);
	CHECK_EQ(s->ops->get(s, ino, &row), -ENOENT);
	CHECK_EQ(s->ops->fetch(s, ino, &row, &data, &len), -ENOENT);
	/* ... or format 1, which builds before atime was kept wrote: the
	 * blob of a good entry, without atime_ns (bytes 67..74) */
	{
		size_t blen = l2r_blob_len("f", &m);
		uint8_t *b = malloc(blen);

		CHECK(b != NULL);
		l2r_blob_encode(1, "f", &m, b);
		CHECK_EQ(b[0], 2);
		b[0] = 1;
		memmove(b + 67, b + 75, blen - 75);
		CHECK_EQ(raw_int(raw, "HSET %s m %b d abcd", key_of(ino), b,
				 blen - 8),
			 0);
		CHECK_EQ(s->ops->get(s, ino, &row), -ENOENT);
		CHECK_EQ(s->ops->fetch(s, ino, &row, &data, &len), -ENOENT);
		/* the same blob in format 2 is the entry */
		l2r_blob_encode(1, "f", &m, b);
		CHECK_EQ(raw_int(raw, "HSET %s m %b", key_of(ino), b, blen), 0);
		CHECK_EQ(s->ops->get(s, ino, &row), 0);
		check_meta_eq(&row.meta, &m);
		store_row_release(&row);
		free(b);
	}

	/* A key of another type. */
	raw_ok(raw, "SET %s x", key_of(ino));
	log_reset();
	CHECK_EQ(s->ops->get(s, ino, &row), -EIO);
	CHECK(log_has("WRONGTYPE"));
	/* ... and the context still works */
	CHECK_EQ(raw_int(raw, "DEL %s", key_of(ino)), 1);
	check_absent(s, ino);
	redisFree(raw);
	cache_free(s);
}

static void test_bad_urls(void)
{
	static const char *const bad[] = {
		"",
		"http://127.0.0.1:6379",
		"rediss://127.0.0.1:6379",
		"redis://",
		"redis://:6379",
		"redis://127.0.0.1:",
		"redis://127.0.0.1:0",
		"redis://127.0.0.1:65536",
		"redis://127.0.0.1:12x",
		"redis://127.0.0.1:6379/abc",
		"redis://127.0.0.1:6379/1/2",
		"redis://127.0.0.1:6379?timeout=1",
		"redis://[::1:6379",
		"redis://pw-without-colon-Sekr1t@127.0.0.1",
		"redis://:bad%zzescape-Sekr1t@127.0.0.1",
		"redis://:nul%00-Sekr1t@127.0.0.1",
		"redis://:Sekr1t@",
		"redis://ho st:6379",
	};
	struct cache *s = (struct cache *)1;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(check_context, sizeof(check_context), "url '%s'",
			 bad[i]);
		log_reset();
		CHECK_EQ(l2_redis_open(bad[i], prefix, &test_log, &s), -EINVAL);
		CHECK(s == (struct cache *)1);
		CHECK(log_has("cannot parse the URL"));
	}
	check_context[0] = '\0';
	CHECK_EQ(l2_redis_open(NULL, prefix, &test_log, &s), -EINVAL);
	{
		char long_prefix[400];

		memset(long_prefix, 'p', sizeof(long_prefix) - 1);
		long_prefix[sizeof(long_prefix) - 1] = '\0';
		CHECK_EQ(l2_redis_open(url, long_prefix, &test_log, &s),
			 -EINVAL);
	}
	CHECK(!log_ever_has("Sekr1t"));
}

/* Whether something accepts TCP connections on @addr (an IPv4 or IPv6
 * literal) port @p now: what an open of a URL there can answer depends on
 * it. */
static bool tcp_listens(const char *addr, int p)
{
	struct sockaddr_in6 sa6 = {.sin6_family = AF_INET6};
	struct sockaddr_in sa4 = {.sin_family = AF_INET};
	bool v6 = strchr(addr, ':') != NULL;
	int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	if (fd < 0)
		return false; /* no IPv6 here: nothing can listen on it */
	if (v6) {
		sa6.sin6_port = htons((uint16_t)p);
		CHECK(inet_pton(AF_INET6, addr, &sa6.sin6_addr) == 1);
		ok = connect(fd, (struct sockaddr *)&sa6, sizeof(sa6)) == 0;
	} else {
		sa4.sin_port = htons((uint16_t)p);
		CHECK(inet_pton(AF_INET, addr, &sa4.sin_addr) == 1);
		ok = connect(fd, (struct sockaddr *)&sa4, sizeof(sa4)) == 0;
	}
	close(fd);
	return ok;
}

/* URLs that parse: the log names what was understood. */
static void test_good_urls(void)
{
	struct cache *s = NULL;
	char u[256];
	int err;

	/* no port: 6379. Whether a server listens there is this host's
	 * business, so the test looks first: with nothing there the open
	 * must fail with -EAGAIN (connection refused). A server there may
	 * take us, want a password or not speak Redis at all, so then only
	 * the log line is checked. */
	log_reset();
	err = l2_redis_open("redis://127.0.0.1", prefix, &test_log, &s);
	if (!tcp_listens("127.0.0.1", 6379))
		CHECK_EQ(err, -EAGAIN);
	CHECK(log_has("redis '127.0.0.1:6379/0'"));
	if (!err)
		cache_free(s);

	/* an empty path is database 0; the test server's own URL works
	 * with it */
	snprintf(u, sizeof(u), "%s/", url);
	CHECK_EQ(l2_redis_open(u, prefix, &test_log, &s), 0);
	cache_free(s);

	/* IPv6 in brackets. scripts/redis-test-server.sh binds 127.0.0.1
	 * only, so nothing answers on [::1] (or there is no IPv6): -EAGAIN.
	 * A TIERFS_TEST_REDIS server that also listens on [::1] takes the
	 * URL, which carries no password: 0, or -EACCES when it wants one. */
	snprintf(u, sizeof(u), "redis://[::1]:%d/5", port);
	log_reset();
	err = l2_redis_open(u, prefix, &test_log, &s);
	if (!tcp_listens("::1", port))
		CHECK_EQ(err, -EAGAIN);
	else
		CHECK_EQ(err, password[0] ? -EACCES : 0);
	snprintf(u, sizeof(u), "redis '[::1]:%d/5'", port);
	CHECK(log_has(u));
	if (!err)
		cache_free(s);
}

/* A port where nothing listens, and an address that does not answer. */
static void test_unreachable(void)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	struct cache *s = NULL;
	char u[128];
	double t0, t;
	int fd, free_port;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(fd >= 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	CHECK(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
	free_port = ntohs(sa.sin_port);
	close(fd);

	snprintf(u, sizeof(u), "redis://:Sekr1t-unreach@127.0.0.1:%d/2",
		 free_port);
	log_reset();
	t0 = now_s();
	CHECK_EQ(l2_redis_open(u, prefix, &test_log, &s), -EAGAIN);
	t = now_s() - t0;
	CHECK(t < 2.0);
	CHECK(log_has("127.0.0.1:"));
	CHECK(!log_has("Sekr1t"));

	/* TEST-NET-1 (RFC 5737): never routed, so the connect times out (or
	 * fails at once where there is no route). */
	t0 = now_s();
	CHECK_EQ(l2_redis_open("redis://192.0.2.1:6379", prefix, &test_log, &s),
		 -EAGAIN);
	t = now_s() - t0;
	printf("  unreachable: refused port -EAGAIN at once, 192.0.2.1 "
	       "-EAGAIN after %.2f s\n",
	       t);
	CHECK(t < 2.5);

	/* A port that accepts connections (the kernel's backlog) but never
	 * answers: the command timeout ends the PING. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(fd >= 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sl = sizeof(sa);
	CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	CHECK(listen(fd, 8) == 0);
	CHECK(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
	snprintf(u, sizeof(u), "redis://127.0.0.1:%d", ntohs(sa.sin_port));
	log_reset();
	t0 = now_s();
	CHECK_EQ(l2_redis_open(u, prefix, &test_log, &s), -EAGAIN);
	t = now_s() - t0;
	close(fd);
	printf("  unreachable: a silent server -EAGAIN after %.2f s\n", t);
	CHECK(t > 0.5 && t < 2.5);
	CHECK(log_has("cannot ping"));
}

/* Gets run by several threads at once, to fill the pool. */
struct getter {
	struct cache *s;
	uint64_t ino;
	int n;
	int failures;
};

static void *getter_main(void *arg)
{
	struct getter *g = arg;

	for (int i = 0; i < g->n; i++) {
		struct store_row row;
		int err = g->s->ops->get(g->s, g->ino, &row);

		if (err)
			g->failures++;
		else
			store_row_release(&row);
	}
	return NULL;
}

static void run_getters(struct cache *s, uint64_t ino, int nthreads, int n)
{
	pthread_t t[16];
	struct getter g[16];

	for (int i = 0; i < nthreads; i++) {
		g[i] = (struct getter){.s = s, .ino = ino, .n = n};
		CHECK(pthread_create(&t[i], NULL, getter_main, &g[i]) == 0);
	}
	for (int i = 0; i < nthreads; i++) {
		CHECK(pthread_join(t[i], NULL) == 0);
		CHECK_EQ(g[i].failures, 0);
	}
}

static void test_reconnect(void)
{
	struct cache *s = open_ok();
	size_t big_len = 4u << 20;
	unsigned char *big = random_bytes(big_len);
	struct item_meta m = meta_of(ITEM_BINARY, "abc", 3);
	struct item_meta mb = meta_of(ITEM_BINARY, big, big_len);
	uint64_t ino = new_ino(), ino_big = new_ino();
	struct change *ch = data_change_of(ino, 1, "a", &m, "abc", 3);
	redisContext *raw = raw_main();
	long long killed;

	CHECK_EQ(apply_all(s, &ch, 1), 0);
	/* several contexts in the pool */
	run_getters(s, ino, 8, 200);

	for (int round = 0; round < 3; round++) {
		snprintf(check_context, sizeof(check_context),
			 "reconnect round %d", round);
		killed = raw_int(raw, "CLIENT KILL TYPE normal");
		CHECK(killed >= 1);
		log_reset();
		/* every next call succeeds: lost idle contexts are
		 * replaced, and SIGPIPE (default action: exit) never
		 * reaches the process */
		if (round == 0) {
			check_entry(s, ino, 1, "a", &m, "abc", 3);
		} else if (round == 1) {
			ch = data_change_of(ino_big, 1, "big", &mb, big,
					    big_len);
			for (int i = 0; i < 4; i++)
				CHECK_EQ(s->ops->apply(s, &ch, 1), 0);
			change_free(ch);
			check_entry(s, ino_big, 1, "big", &mb, big, big_len);
		} else {
			run_getters(s, ino, 8, 50);
		}
		CHECK(log_has("cannot")); /* the lost context was noticed */
	}
	check_context[0] = '\0';
	ch = delete_of(ino);
	CHECK_EQ(apply_all(s, &ch, 1), 0);
	ch = delete_of(ino_big);
	CHECK_EQ(apply_all(s, &ch, 1), 0);
	free(big);
	redisFree(raw);
	cache_free(s);
}

/* Writers and readers on many threads, more than the pool holds. */
struct worker {
	struct cache *s;
	uint64_t first;
	int n;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	char name[32], content[64];

	for (int i = 0; i < w->n; i++) {
		uint64_t ino = w->first + (uint64_t)i;
		size_t len = (size_t)snprintf(content, sizeof(content),
					      "content of %llu",
					      (unsigned long long)ino);
		struct item_meta m = meta_of(ITEM_BINARY, content, len);
		struct change *ch;
		struct store_row row;
		void *data;
		size_t got;

		snprintf(name, sizeof(name), "w%llu", (unsigned long long)ino);
		ch = data_change_of(ino, 1, name, &m, content, len);
		CHECK_EQ(apply_all(w->s, &ch, 1), 0);
		CHECK_EQ(w->s->ops->fetch(w->s, ino, &row, &data, &got), 0);
		CHECK_EQ(got, len);
		CHECK(memcmp(data, content, len) == 0);
		CHECK_STREQ(row.name, name);
		free(data);
		store_row_release(&row);
		ch = delete_of(ino);
		CHECK_EQ(apply_all(w->s, &ch, 1), 0);
	}
	return NULL;
}

static void test_threads(void)
{
	enum { T = 12, N = 200 };
	struct cache *s = open_ok();
	pthread_t t[T];
	struct worker w[T];
	uint64_t first = new_ino();

	for (int i = 1; i < T * N; i++)
		(void)new_ino();
	for (int i = 0; i < T; i++) {
		w[i] = (struct worker){
			.s = s, .first = first + (uint64_t)i * N, .n = N};
		CHECK(pthread_create(&t[i], NULL, worker_main, &w[i]) == 0);
	}
	for (int i = 0; i < T; i++)
		CHECK(pthread_join(t[i], NULL) == 0);
	cache_free(s);
}

/* Only keys under this run's prefix, all entry hashes of "m" and "d". */
static void test_key_layout(void)
{
	redisContext *raw = raw_main();
	char cursor[32] = "0";
	size_t plen = strlen(prefix);
	long long mine = 0, foreign = 0;
	struct cache *s = open_ok();
	struct item_meta m = meta_of(ITEM_BINARY, "k", 1);
	uint64_t ino = new_ino();
	struct change *ch = data_change_of(ino, 1, "k", &m, "k", 1);

	CHECK_EQ(apply_all(s, &ch, 1), 0); /* at least one key */
	do {
		redisReply *rep =
			redisCommand(raw, "SCAN %s COUNT 1000", cursor);

		CHECK(rep && rep->type == REDIS_REPLY_ARRAY &&
		      rep->elements == 2);
		snprintf(cursor, sizeof(cursor), "%s", rep->element[0]->str);
		for (size_t i = 0; i < rep->element[1]->elements; i++) {
			const redisReply *k = rep->element[1]->element[i];
			redisReply *fields;
			const char *rest;
			char *end;

			if (k->len < plen || memcmp(k->str, prefix, plen)) {
				CHECK(memmem(k->str, k->len, prefix + 12,
					     plen - 13) == NULL);
				foreign++;
				continue;
			}
			mine++;
			snprintf(check_context, sizeof(check_context),
				 "key '%.*s'", (int)k->len, k->str);
			rest = k->str + plen;
			CHECK(strncmp(rest, "e:", 2) == 0);
			CHECK(rest[2] >= '1' && rest[2] <= '9');
			strtoull(rest + 2, &end, 10);
			CHECK(end == k->str + k->len);
			fields = redisCommand(raw, "HKEYS %b", k->str, k->len);
			CHECK(fields && fields->type == REDIS_REPLY_ARRAY);
			CHECK_EQ(fields->elements, 2);
			CHECK((strcmp(fields->element[0]->str, "m") == 0 &&
			       strcmp(fields->element[1]->str, "d") == 0) ||
			      (strcmp(fields->element[0]->str, "d") == 0 &&
			       strcmp(fields->element[1]->str, "m") == 0));
			freeReplyObject(fields);
		}
		freeReplyObject(rep);
	} while (strcmp(cursor, "0") != 0);
	check_context[0] = '\0';
	CHECK(mine >= 1);
	printf("  key layout: %lld keys under '%s', %lld others\n", mine,
	       prefix, foreign);
	if (dbsize_at_start == 0)
		CHECK_EQ(foreign, 0);
	else
		printf("  key layout: the database was not empty at start: "
		       "others not checked\n");
	ch = delete_of(ino);
	CHECK_EQ(apply_all(s, &ch, 1), 0);
	redisFree(raw);
	cache_free(s);
}

/* ---- tests on a second, private server ---- */

#define SRV_DIR_TEMPLATE "/tmp/test_l2_redis.XXXXXX"
static char srv_dir[] = SRV_DIR_TEMPLATE;
static bool srv_dir_made, srv_running;
static char srv_script[4096];

static int rm_one(const char *path, const struct stat *sb, int type,
		  struct FTW *ftw)
{
	return remove(path);
}

static void srv_stop(void)
{
	char cmd[8192];

	if (srv_running) {
		snprintf(cmd, sizeof(cmd), "'%s' stop '%s'", srv_script,
			 srv_dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot stop the test server\n");
		srv_running = false;
	}
	if (srv_dir_made) {
		nftw(srv_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
		srv_dir_made = false;
	}
}

static bool find_script(void)
{
	const char *env = getenv("TIERFS_REDIS_SCRIPT");
	const char *slash = strrchr(__FILE__, '/');

	if (env) {
		snprintf(srv_script, sizeof(srv_script), "%s", env);
		return access(srv_script, X_OK) == 0;
	}
	/* __FILE__ is tests/unit/test_l2_redis.c, as the compiler saw it */
	snprintf(srv_script, sizeof(srv_script),
		 "%.*s%s../../scripts/redis-test-server.sh",
		 slash ? (int)(slash - __FILE__) : 0, __FILE__,
		 slash ? "/" : "");
	if (access(srv_script, X_OK) == 0)
		return true;
	snprintf(srv_script, sizeof(srv_script),
		 "scripts/redis-test-server.sh");
	return access(srv_script, X_OK) == 0;
}

/* Starts the second server with @args; returns its URL in @out. */
static bool srv_start(const char *args, char *out, size_t size)
{
	char cmd[8192];
	FILE *f;
	size_t n;

	if (!find_script())
		return false;
	CHECK(!srv_running && !srv_dir_made);
	memcpy(srv_dir, SRV_DIR_TEMPLATE, sizeof(srv_dir));
	CHECK(mkdtemp(srv_dir) != NULL);
	srv_dir_made = true;
	snprintf(cmd, sizeof(cmd), "'%s' start '%s' %s", srv_script, srv_dir,
		 args);
	f = popen(cmd, "r");
	CHECK(f != NULL);
	if (!fgets(out, (int)size, f))
		out[0] = '\0';
	srv_running = pclose(f) == 0 && out[0];
	n = strlen(out);
	while (n && (out[n - 1] == '\n' || out[n - 1] == '\r'))
		out[--n] = '\0';
	CHECK(srv_running);
	return true;
}

static void with_url(char *dst, size_t size, const char *fmt, int p)
{
	snprintf(dst, size, fmt, p);
}

static void test_private_server(void)
{
	static const char pw[] = "Sekr1t-p@ss/w:rd";
	static const char pw_url[] = "Sekr1t-p%40ss%2Fw%3Ard";
	char u[512], h[256], got_pw[128];
	struct item_meta m = meta_of(ITEM_BINARY, "abc", 3);
	uint64_t ino = new_ino();
	struct change *ch = data_change_of(ino, 1, "a", &m, "abc", 3);
	struct cache *s = NULL, *s2 = NULL;
	struct store_row row;
	redisContext *raw;
	double t0, t;
	int p;

	if (!srv_start("--requirepass 'Sekr1t-p@ss/w:rd'", u, sizeof(u))) {
		printf("  SKIP passwords, eviction warning, OOM, READONLY: "
		       "no scripts/redis-test-server.sh (set "
		       "TIERFS_REDIS_SCRIPT)\n");
		change_free(ch);
		return;
	}
	split_url(u, h, sizeof(h), &p, got_pw, sizeof(got_pw));
	CHECK_STREQ(got_pw, pw_url);
	raw = raw_connect(h, p, pw);

	/* The right password, then the wrong one, then none. */
	CHECK_EQ(l2_redis_open(u, prefix, &test_log, &s), 0);
	CHECK_EQ(s->ops->apply(s, &ch, 1), 0);
	check_entry(s, ino, 1, "a", &m, "abc", 3);
	log_reset();
	with_url(u, sizeof(u), "redis://:Sekr1t-wrong@127.0.0.1:%d", p);
	CHECK_EQ(l2_redis_open(u, prefix, &test_log, &s2), -EACCES);
	CHECK(log_has("WRONGPASS"));
	with_url(u, sizeof(u), "redis://127.0.0.1:%d", p);
	CHECK_EQ(l2_redis_open(u, prefix, &test_log, &s2), -EACCES);
	CHECK(log_has("NOAUTH"));
	/* a user name with the password (Redis 6 ACL: "default") */
	with_url(u, sizeof(u),
		 "redis://default:Sekr1t-p%%40ss%%2Fw%%3Ard@127.0.0.1:%d/0", p);
	CHECK_EQ(l2_redis_open(u, prefix, &test_log, &s2), 0);
	cache_free(s2);
	s2 = NULL;

	/* A database number: keys land there. */
	with_url(u, sizeof(u),
		 "redis://:Sekr1t-p%%40ss%%2Fw%%3Ard@127.0.0.1:%d/3", p);
	CHECK_EQ(l2_redis_open(u, prefix, &test_log, &s2), 0);
	CHECK_EQ(s2->ops->apply(s2, &ch, 1), 0);
	raw_ok(raw, "SELECT 3");
	CHECK_EQ(raw_int(raw, "EXISTS %s", key_of(ino)), 1);
	CHECK_EQ(raw_int(raw, "DEL %s", key_of(ino)), 1);
	raw_ok(raw, "SELECT 0");
	cache_free(s2);
	s2 = NULL;
	with_url(u, sizeof(u),
		 "redis://:Sekr1t-p%%40ss%%2Fw%%3Ard@127.0.0.1:%d/999", p);
	log_reset();
	CHECK_EQ(l2_redis_open(u, prefix, &test_log, &s2), -EINVAL);
	CHECK(log_has("DB index"));

	/* The eviction warning: only with maxmemory and an evicting
	 * policy. */
	with_url(u, sizeof(u),
		 "redis://:Sekr1t-p%%40ss%%2Fw%%3Ard@127.0.0.1:%d", p);
	log_reset();
	CHECK_EQ(l2_redis_open(u, prefix, &test_log, &s2), 0);
	cache_free(s2);
	CHECK(!log_has("evicts"));
	raw_ok(raw, "CONFIG SET maxmemory-policy allkeys-lru");
	log_reset();
	CHECK_EQ(l2_redis_open(u, prefix, &test_log, &s2), 0);
	cache_free(s2);
	CHECK(!log_has("evicts")); /* maxmemory 0: no limit */
	raw_ok(raw, "CONFIG SET maxmemory 100mb");
	log_reset();
	CHECK_EQ(l2_redis_open(u, prefix, &test_log, &s2), 0);
	cache_free(s2);
	CHECK(log_has("evicts keys under memory pressure"));
	CHECK(log_has("policy 'allkeys-lru'"));
	CHECK(log_has("tierfs never relies on Redis alone"));

	/* OOM: maxmemory reached with noeviction. */
	raw_ok(raw, "CONFIG SET maxmemory-policy noeviction");
	raw_ok(raw, "CONFIG SET maxmemory 1");
	log_reset();
	CHECK_EQ(s->ops->apply(s, &ch, 1), -ENOSPC);
	CHECK(log_has("OOM"));
	CHECK_EQ(s->ops->get(s, ino, &row), 0); /* reads still work */
	store_row_release(&row);
	raw_ok(raw, "CONFIG SET maxmemory 0");
	CHECK_EQ(s->ops->apply(s, &ch, 1), 0);

	/* A read-only replica. */
	raw_ok(raw, "REPLICAOF 127.0.0.1 1");
	log_reset();
	CHECK_EQ(s->ops->apply(s, &ch, 1), -EROFS);
	CHECK(log_has("READONLY"));
	check_entry(s, ino, 1, "a", &m, "abc", 3);
	raw_ok(raw, "REPLICAOF NO ONE");
	CHECK_EQ(s->ops->apply(s, &ch, 1), 0);

	/* The server goes away: -EAGAIN, quickly, and no crash. */
	redisFree(raw);
	srv_stop();
	t0 = now_s();
	CHECK_EQ(s->ops->get(s, ino, &row), -EAGAIN);
	CHECK_EQ(s->ops->apply(s, &ch, 1), -EAGAIN);
	t = now_s() - t0;
	CHECK(t < 2.5);
	cache_free(s);

	/* A password the server does not use is refused too. */
	snprintf(u, sizeof(u), "redis://:Sekr1t-unused@%s:%d", host, port);
	if (!password[0]) {
		log_reset();
		CHECK_EQ(l2_redis_open(u, prefix, &test_log, &s2), -EACCES);
	}
	CHECK(!log_ever_has("Sekr1t"));

	/* A server with CONFIG disabled: the eviction check is skipped. */
	if (!srv_start("--rename-command CONFIG ''", u, sizeof(u))) {
		change_free(ch);
		return;
	}
	log_reset();
	CHECK_EQ(l2_redis_open(u, prefix, &test_log, &s), 0);
	CHECK(log_has("cannot read 'maxmemory-policy'"));
	CHECK_EQ(s->ops->apply(s, &ch, 1), 0);
	check_entry(s, ino, 1, "a", &m, "abc", 3);
	change_free(ch);
	cache_free(s);
	srv_stop();
}

/* Deletes every key of this run (best effort: also runs at exit after a
 * failure, so it must not CHECK). */
static void cleanup_keys(void)
{
	struct timeval tv = {2, 0};
	char cursor[32] = "0", match[80];
	redisContext *c;
	redisReply *rep;

	if (!prefix[0])
		return;
	c = redisConnectWithTimeout(host, port, tv);
	if (!c || c->err)
		goto out;
	if (password[0]) {
		rep = redisCommand(c, "AUTH %s", password);
		if (!rep)
			goto out;
		freeReplyObject(rep);
	}
	snprintf(match, sizeof(match), "%s*", prefix);
	do {
		rep = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor,
				   match);
		if (!rep || rep->type != REDIS_REPLY_ARRAY ||
		    rep->elements != 2) {
			if (rep)
				freeReplyObject(rep);
			goto out;
		}
		snprintf(cursor, sizeof(cursor), "%s", rep->element[0]->str);
		for (size_t i = 0; i < rep->element[1]->elements; i++) {
			const redisReply *k = rep->element[1]->element[i];
			redisReply *del =
				redisCommand(c, "DEL %b", k->str, k->len);

			if (del)
				freeReplyObject(del);
		}
		freeReplyObject(rep);
	} while (strcmp(cursor, "0") != 0);
out:
	if (c)
		redisFree(c);
	prefix[0] = '\0';
}

/* ---- main ---- */

#define RUN(test)                                                              \
	do {                                                                   \
		log_reset();                                                   \
		printf("%s\n", #test);                                         \
		fflush(stdout);                                                \
		test();                                                        \
	} while (0)

int main(void)
{
	uint64_t rnd;
	redisContext *raw;
	redisReply *rep;

	url = getenv("TIERFS_TEST_REDIS");
	if (!url || !url[0]) {
		printf("SKIP: TIERFS_TEST_REDIS is not set (a redis:// URL; "
		       "see scripts/redis-test-server.sh)\n");
		return TEST_SKIP;
	}
	atexit(srv_stop);
	CHECK(getrandom(&rnd, sizeof(rnd), 0) == sizeof(rnd));
	snprintf(prefix, sizeof(prefix),
		 "tierfs-test:%016llx:", (unsigned long long)rnd);
	split_url(url, host, sizeof(host), &port, password, sizeof(password));
	atexit(cleanup_keys);
	raw = raw_main();
	rep = redisCommand(raw, "DBSIZE");
	CHECK(rep && rep->type == REDIS_REPLY_INTEGER);
	dbsize_at_start = rep->integer;
	freeReplyObject(rep);
	redisFree(raw);
	printf("redis %s:%d, prefix '%s'\n", host, port, prefix);

	RUN(test_round_trip);
	RUN(test_fetch_many);
	RUN(test_meta_fields);
	RUN(test_delete);
	RUN(test_meta_only);
	RUN(test_tree);
	RUN(test_each_cached);
	RUN(test_batch);
	RUN(test_big_batch);
	RUN(test_invalid_changes);
	RUN(test_error_in_batch);
	RUN(test_foreign_entries);
	RUN(test_bad_urls);
	RUN(test_good_urls);
	RUN(test_unreachable);
	RUN(test_threads);
	RUN(test_reconnect);
	RUN(test_key_layout);
	RUN(test_private_server);

	cleanup_keys();
	CHECK(!log_ever_has("Sekr1t"));
	if (password[0])
		CHECK(!log_ever_has(password));
	free(log_all);
	printf("all l2_redis tests passed\n");
	return 0;
}
