/*
 * test_store.c - unit tests of what the store backends share
 * (engine/store.c, engine/store_row.c, engine/store_sql.c): the contract
 * check of an entry, of a change and of a batch; a row read back made a
 * store_row, as an L3 store and as a cache tier see it; the row written as
 * the SQL stores' columns, their meta rows' check and their ops' argument
 * ranges; the retry rule of store_run() (engine/store_conn.c), on a pool of
 * pretend connections. No server or file is needed.
 *
 * Exit status: 0 passed, 1 failed.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "store_conn.h"
#include "store_sql.h"

static char last_log[512];
static int nlogs;

static void log_fn(void *arg, int level, const char *msg)
{
	snprintf(last_log, sizeof(last_log), "%s", msg);
	nlogs++;
}

static const struct eng_log test_log = {.fn = log_fn, .arg = NULL};

static const struct store_backend l3 = {
	.log = &test_log,
	.name = "sql",
	.target = "t.db",
	.max_ino = INT64_MAX,
};

static const struct store_backend cache = {
	.log = &test_log,
	.name = "kv",
	.target = "host:1/0",
	.max_ino = UINT64_MAX,
	.cache = true,
};

static const uint8_t hash_a[ITEM_HASH_LEN] = {1, 2, 3};
static const uint8_t hash_b[ITEM_HASH_LEN] = {9, 8, 7};

/* A good file row: ino 5 in the root, named "f.json". */
static struct store_cols file_cols(void)
{
	return (struct store_cols){
		.ino = 5,
		.parent = STORE_ROOT_INO,
		.name = "f.json",
		.name_len = 6,
		.kind = ITEM_JSON,
		.size = 3,
		.hash = hash_a,
		.hash_len = ITEM_HASH_LEN,
		.version = 7,
		.mtime_ns = -1,
		.atime_ns = -3,
		.ctime_ns = 2,
		.mode = 0100644,
		.uid = 10,
		.gid = 20,
	};
}

/* Checks that @row holds the fields of @c that are copied as they are. */
static void check_row_is(const struct store_row *row,
			 const struct store_cols *c)
{
	CHECK_EQ(row->ino, c->ino);
	CHECK_EQ(row->parent, c->parent);
	CHECK_EQ(strlen(row->name), c->name_len);
	CHECK(memcmp(row->name, c->name, c->name_len) == 0);
	CHECK_EQ(row->meta.kind, c->kind);
	CHECK_EQ(row->meta.size, c->size);
	CHECK_EQ(row->meta.version, c->version);
	CHECK_EQ(row->meta.mtime_ns, c->mtime_ns);
	CHECK_EQ(row->meta.atime_ns, c->atime_ns);
	CHECK_EQ(row->meta.ctime_ns, c->ctime_ns);
	CHECK_EQ(row->meta.mode, c->mode);
	CHECK_EQ(row->meta.uid, c->uid);
	CHECK_EQ(row->meta.gid, c->gid);
	CHECK_EQ(row->meta.explicit_dir, c->explicit_dir);
}

static void test_entry_problem(void)
{
	const uint64_t max = INT64_MAX;

	CHECK(!store_entry_problem(5, 1, "a", 1, ITEM_BINARY, max));
	CHECK(!store_entry_problem(STORE_ROOT_INO, 0, "", 0, ITEM_DIR, max));
	CHECK_STREQ(store_entry_problem(0, 1, "a", 1, ITEM_DIR, max),
		    "bad inode number");
	CHECK_STREQ(store_entry_problem(max + 1, 1, "a", 1, ITEM_DIR, max),
		    "bad inode number");
	CHECK(!store_entry_problem(max + 1, 1, "a", 1, ITEM_DIR, UINT64_MAX));
	CHECK_STREQ(store_entry_problem(5, 1, "", 0, ITEM_DIR, max),
		    "empty name");
	CHECK_STREQ(store_entry_problem(5, 1, "a/b", 3, ITEM_DIR, max),
		    "name holds '/'");
	CHECK_STREQ(store_entry_problem(5, 1, "a\0b", 3, ITEM_DIR, max),
		    "name holds a NUL");
	CHECK_STREQ(store_entry_problem(5, max + 1, "a", 1, ITEM_DIR, max),
		    "bad parent");
	CHECK_STREQ(store_entry_problem(5, 1, "a", 1, 3, max), "bad kind");
	CHECK_STREQ(store_entry_problem(5, 1, "a", 1, -1, max), "bad kind");
	{
		char name[STORE_NAME_MAX + 1];

		memset(name, 'x', sizeof(name));
		CHECK(!store_entry_problem(5, 1, name, STORE_NAME_MAX,
					   ITEM_BINARY, max));
		CHECK_STREQ(store_entry_problem(5, 1, name, sizeof(name),
						ITEM_BINARY, max),
			    "name too long");
	}
}

static void test_change_problem(void)
{
	struct item_meta m = {.kind = ITEM_BINARY};
	struct change *ch = change_new_put(5, 1, "a", &m, NULL);
	char name[STORE_NAME_MAX + 2], *keep;

	CHECK(ch != NULL);
	CHECK(!store_change_problem(ch, INT64_MAX));
	keep = ch->name;
	ch->name = NULL;
	CHECK_STREQ(store_change_problem(ch, INT64_MAX), "no name");
	ch->deleted = true; /* a delete needs an ino only */
	CHECK(!store_change_problem(ch, INT64_MAX));
	ch->deleted = false;
	memset(name, 'x', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	ch->name = name;
	CHECK_STREQ(store_change_problem(ch, INT64_MAX), "name too long");
	ch->name = keep;
	ch->meta.kind = (enum item_kind)7;
	CHECK_STREQ(store_change_problem(ch, INT64_MAX), "bad kind");
	ch->meta.kind = ITEM_DIR;
	CHECK(!store_change_problem(ch, INT64_MAX));
	ch->ino = 0;
	CHECK_STREQ(store_change_problem(ch, INT64_MAX), "bad inode number");
	change_free(ch);
	change_free(NULL);
}

/* What a backend below allows: no file named "big". */
static const char *no_big(const struct change *ch)
{
	return strcmp(ch->name, "big") == 0 ? "too big here" : NULL;
}

static void test_check_changes(void)
{
	struct item_meta m = {.kind = ITEM_BINARY};
	struct change *ch[3] = {
		change_new_put(5, 1, "a", &m, NULL),
		change_new_del(6),
		change_new_put(7, 1, "big", &m, NULL),
	};

	for (int i = 0; i < 3; i++)
		CHECK(ch[i] != NULL);
	CHECK_EQ(store_check_changes(&l3, ch, 0, no_big), 0);
	CHECK_EQ(store_check_changes(&l3, ch, 2, no_big), 0);
	nlogs = 0;
	CHECK_EQ(store_check_changes(&l3, ch, 3, no_big), -EINVAL);
	CHECK_EQ(nlogs, 1);
	CHECK_STREQ(last_log,
		    "sql 't.db': cannot apply change to inode 7: too big here");
	CHECK_EQ(store_check_changes(&l3, ch, 3, NULL), 0);
	ch[0]->ino = (uint64_t)INT64_MAX + 1;
	CHECK_EQ(store_check_changes(&l3, ch, 1, NULL), -EINVAL);
	CHECK_STREQ(last_log, "sql 't.db': cannot apply change to inode "
			      "9223372036854775808: bad inode number");
	CHECK_EQ(store_check_changes(&cache, ch, 1, NULL), 0);
	for (int i = 0; i < 3; i++)
		change_free(ch[i]);
}

/* Decodes @c with @b, which must find it corrupt because of @why. */
static void check_corrupt(const struct store_backend *b,
			  const struct store_cols *c, const char *why)
{
	struct store_row row;
	char want[512];

	snprintf(want, sizeof(want), "%s '%s': corrupt entry %llu: %s", b->name,
		 b->target, (unsigned long long)c->ino, why);
	last_log[0] = '\0';
	CHECK_EQ(store_row_decode(b, c, &row), -EUCLEAN);
	CHECK_STREQ(last_log, want);
}

static void test_row_decode(void)
{
	struct store_cols c = file_cols();
	struct store_row row;

	/* A file in L3: its Merkle hash is its content hash; no state. */
	CHECK_EQ(store_row_decode(&l3, &c, &row), 0);
	check_row_is(&row, &c);
	CHECK_EQ(row.meta.kind, ITEM_JSON);
	CHECK(memcmp(row.meta.hash, hash_a, ITEM_HASH_LEN) == 0);
	CHECK(memcmp(row.merkle, hash_a, ITEM_HASH_LEN) == 0);
	CHECK(!row.meta.state);
	CHECK(!row.meta.xattrs);
	store_row_release(&row);

	/* The same in a cache: no Merkle hash. */
	CHECK_EQ(store_row_decode(&cache, &c, &row), 0);
	CHECK(item_hash_is_zero(row.merkle));
	store_row_release(&row);

	/* An empty state tag is none in L3, "" in a cache; xattrs copied. */
	c.state = "";
	c.xattrs = "\1\0\1\0\0\0ab";
	c.xattrs_len = 8;
	CHECK_EQ(store_row_decode(&l3, &c, &row), 0);
	CHECK(!row.meta.state);
	CHECK_EQ(row.meta.xattrs_len, 8);
	CHECK(memcmp(row.meta.xattrs, c.xattrs, 8) == 0);
	store_row_release(&row);
	CHECK_EQ(store_row_decode(&cache, &c, &row), 0);
	CHECK_STREQ(row.meta.state, "");
	store_row_release(&row);
	c.state = "done!";
	c.state_len = 4;
	CHECK_EQ(store_row_decode(&l3, &c, &row), 0);
	CHECK_STREQ(row.meta.state, "done");
	store_row_release(&row);

	/* A directory: its own Merkle hash, zero while not known; a file's
	 * merkle column means nothing. */
	c = file_cols();
	c.kind = ITEM_DIR;
	c.mode = S_IFDIR | 0755;
	c.hash = NULL;
	c.merkle = hash_b;
	c.merkle_len = ITEM_HASH_LEN;
	CHECK_EQ(store_row_decode(&l3, &c, &row), 0);
	CHECK(item_hash_is_zero(row.meta.hash));
	CHECK(memcmp(row.merkle, hash_b, ITEM_HASH_LEN) == 0);
	store_row_release(&row);
	c.merkle = NULL;
	CHECK_EQ(store_row_decode(&l3, &c, &row), 0);
	CHECK(item_hash_is_zero(row.merkle));
	store_row_release(&row);
	c = file_cols();
	c.merkle = "short";
	c.merkle_len = 5;
	CHECK_EQ(store_row_decode(&l3, &c, &row), 0);
	store_row_release(&row);

	/* The root: empty name, parent 0. */
	c = file_cols();
	c.ino = STORE_ROOT_INO;
	c.parent = 0;
	c.name = "";
	c.name_len = 0;
	c.kind = ITEM_DIR;
	c.mode = S_IFDIR | 0755;
	CHECK_EQ(store_row_decode(&l3, &c, &row), 0);
	CHECK_STREQ(row.name, "");
	store_row_release(&row);

	/* What is corrupt. */
	c = file_cols();
	c.ino = 0;
	check_corrupt(&l3, &c, "bad inode number");
	c = file_cols();
	c.parent = (uint64_t)INT64_MAX + 1;
	check_corrupt(&l3, &c, "bad parent");
	c = file_cols();
	c.name = "a/b";
	c.name_len = 3;
	check_corrupt(&cache, &c, "name holds '/'");
	c.name = "a\0b";
	check_corrupt(&l3, &c, "name holds a NUL");
	c.name_len = 0;
	check_corrupt(&l3, &c, "empty name");
	c = file_cols();
	c.name_len = STORE_NAME_MAX + 1;
	c.name = calloc(1, c.name_len);
	CHECK(c.name);
	check_corrupt(&l3, &c, "name too long");
	free((void *)c.name);
	c = file_cols();
	c.kind = 7;
	check_corrupt(&l3, &c, "bad kind");
	c = file_cols();
	c.hash_len = ITEM_HASH_LEN - 1;
	check_corrupt(&cache, &c, "bad hash");
	c = file_cols();
	c.kind = ITEM_DIR;
	c.mode = S_IFDIR | 0755;
	c.merkle = hash_b;
	c.merkle_len = 0;
	check_corrupt(&l3, &c, "bad merkle hash");
	c = file_cols();
	c.state = "a\0b";
	c.state_len = 3;
	check_corrupt(&l3, &c, "bad state tag");
	check_corrupt(&cache, &c, "bad state tag");
	CHECK_EQ(store_corrupt(&l3, 0, "why"), -EUCLEAN);
	CHECK_STREQ(last_log, "sql 't.db': corrupt entry 0: why");
}

static void test_data_dup(void)
{
	void *data = (void *)1;
	size_t len = 1;

	CHECK_EQ(store_data_dup(NULL, 0, &data, &len), 0);
	CHECK(!data);
	CHECK_EQ(len, 0);
	CHECK_EQ(store_data_dup("a\0b", 3, &data, &len), 0);
	CHECK_EQ(len, 3);
	CHECK(memcmp(data, "a\0b", 3) == 0);
	free(data);
}

static void test_cols_of(void)
{
	struct item_meta m = {.kind = ITEM_JSON,
			      .size = 3,
			      .version = 4,
			      .mtime_ns = -5,
			      .atime_ns = -55,
			      .ctime_ns = 6,
			      .mode = 0100600,
			      .uid = 7,
			      .gid = 8,
			      .state = ""};
	struct store_cols c = store_cols_of(9, 1, "x.json", &m);
	struct store_row row;

	/* What the SQL stores write NULL: a zero hash, an empty state, no
	 * xattrs; a JSON file's stem has no ".json". */
	CHECK_EQ(c.ino, 9);
	CHECK_EQ(c.parent, 1);
	CHECK_EQ(c.name_len, 6);
	CHECK(c.stem == c.name);
	CHECK_EQ(c.stem_len, 1);
	CHECK(!c.hash);
	CHECK(!c.state);
	CHECK(!c.xattrs);
	CHECK(!c.merkle);
	/* Read back, the same entry. */
	CHECK_EQ(store_row_decode(&l3, &c, &row), 0);
	check_row_is(&row, &c);
	CHECK_STREQ(row.name, "x.json");
	CHECK_EQ(row.meta.mode, 0100600);
	CHECK(!row.meta.state);
	store_row_release(&row);

	memcpy(m.hash, hash_a, ITEM_HASH_LEN);
	m.state = "s";
	m.xattrs = "\1\0\0\0\0\0a";
	m.xattrs_len = 7;
	m.kind = ITEM_BINARY;
	c = store_cols_of(9, 1, "x.json", &m);
	CHECK_EQ(c.stem_len, 6);
	CHECK(c.hash == m.hash);
	CHECK_EQ(c.hash_len, ITEM_HASH_LEN);
	CHECK_EQ(c.state_len, 1);
	CHECK_EQ(c.xattrs_len, 7);
	m.kind = ITEM_DIR;
	c = store_cols_of(9, 1, "d", &m);
	CHECK(!c.stem);

	store_root_meta(&m);
	CHECK_EQ(m.kind, ITEM_DIR);
	CHECK_EQ(m.version, 1);
	CHECK(m.explicit_dir);
	CHECK(!m.state && !m.xattrs);
	c = store_cols_of(STORE_ROOT_INO, 0, "", &m);
	CHECK(c.name && c.name_len == 0);
	CHECK_EQ(store_row_decode(&l3, &c, &row), 0);
	store_row_release(&row);
}

static void test_schema_check(void)
{
	CHECK_EQ(store_schema_check(&l3, STORE_SQL_FORMAT, true, 1, 2), 0);
	CHECK_EQ(store_schema_check(&l3, STORE_SQL_FORMAT, true, 2, 2), 0);
	last_log[0] = '\0';
	CHECK_EQ(store_schema_check(&l3, STORE_SQL_FORMAT, true, 3, 2),
		 -EINVAL);
	CHECK_STREQ(last_log, "sql 't.db': cannot open: schema version 3 is "
			      "newer than this build supports (2)");
	CHECK_EQ(store_schema_check(&l3, NULL, true, 1, 2), -EINVAL);
	CHECK_STREQ(last_log, "sql 't.db': cannot open: not a tierfs database");
	CHECK_EQ(store_schema_check(&l3, "other", true, 1, 2), -EINVAL);
	CHECK_EQ(store_schema_check(&l3, STORE_SQL_FORMAT, false, 1, 2),
		 -EINVAL);
	CHECK_EQ(store_schema_check(&l3, STORE_SQL_FORMAT, true, 0, 2),
		 -EINVAL);
}

static void test_pages(void)
{
	char long_name[STORE_NAME_MAX + 10];
	const char *after = NULL;
	size_t after_len = 99, limit = 10;
	struct store_key k;

	CHECK(store_list_page(1, &after, &after_len, &limit));
	CHECK_STREQ(after, "");
	CHECK_EQ(after_len, 0);
	CHECK_EQ(limit, 10);
	memset(long_name, 'x', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	after = long_name;
	limit = (size_t)INT_MAX + 1;
	CHECK(store_list_page(1, &after, &after_len, &limit));
	CHECK_EQ(after_len, STORE_NAME_MAX + 1);
	CHECK_EQ(limit, INT_MAX);
	limit = 0;
	CHECK(!store_list_page(1, &after, &after_len, &limit));
	limit = 1;
	CHECK(!store_list_page(STORE_SQL_MAX_INO + 1, &after, &after_len,
			       &limit));

	CHECK(store_scan_page(0, &limit));
	CHECK(!store_scan_page(STORE_SQL_MAX_INO, &limit));
	limit = 0;
	CHECK(!store_scan_page(0, &limit));

	store_key_fill(&k, 3, 1, "ab", 2);
	CHECK_EQ(k.ino, 3);
	CHECK_EQ(k.parent, 1);
	CHECK_STREQ(k.name, "ab");
	store_key_fill(&k, 3, 1, long_name, sizeof(long_name) - 1);
	CHECK_EQ(strlen(k.name), STORE_NAME_MAX);
	store_key_fill(&k, 3, 1, NULL, 0);
	CHECK_STREQ(k.name, "");
}

/* ---- store_run() on pretend connections ---- */

struct fake_conn {
	struct pool_conn pool; /* first */
	bool lost, conflict;
};

static int fake_open(void *ctx, struct pool_conn **out)
{
	struct fake_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	*out = &c->pool;
	return 0;
}

static void fake_close(void *ctx, struct pool_conn *c)
{
	free(c);
}

static const struct pool_ops fake_pool_ops = {
	.open = fake_open,
	.close = fake_close,
};

static struct pool *fake_pool;

static int fake_get(void *be, bool fresh, struct pool_conn **out)
{
	int err = store_pool_get(be, fake_pool, fresh, "pretend connection", 0,
				 out);

	if (!err) {
		struct fake_conn *c = (struct fake_conn *)*out;

		c->lost = c->conflict = false;
	}
	return err;
}

static void fake_put(void *be, struct pool_conn *c)
{
	if (((struct fake_conn *)c)->lost)
		pool_drop(fake_pool, c);
	else
		pool_put(fake_pool, c);
}

static void fake_failed(const struct pool_conn *pc, int err, bool *lost,
			bool *conflict)
{
	const struct fake_conn *c = (const struct fake_conn *)pc;

	*lost = c->lost;
	*conflict = c->conflict;
}

static const struct store_run_ops fake_run_ops = {
	.get = fake_get,
	.put = fake_put,
	.failed = fake_failed,
};

/* What each run does: 'o' succeeds, 'l' loses its connection, 'c' meets a
 * conflict, 'e' fails otherwise; what each run saw is recorded. */
struct plan {
	const char *runs;
	int n;
	bool fresh[16], reused[16];
	unsigned int conflicts[16];
};

static int plan_run(void *be, struct pool_conn *pc, void *arg,
		    const struct store_run_state *st)
{
	struct fake_conn *c = (struct fake_conn *)pc;
	struct plan *p = arg;
	char what = p->runs[p->n];

	CHECK(what);
	CHECK_EQ(st->runs, p->n);
	p->fresh[p->n] = st->fresh;
	p->reused[p->n] = pc->reused;
	p->conflicts[p->n] = st->conflicts;
	p->n++;
	c->lost = what == 'l';
	c->conflict = what == 'c';
	return what == 'o' ? 0 : what == 'e' ? -EIO : -EAGAIN;
}

/* Runs @runs with at most @max runs, on a pool whose one connection has
 * waited idle when @idle; returns store_run()'s result, and the plan. */
static int run_plan(const char *runs, unsigned int max, bool idle,
		    struct plan *p)
{
	int err;

	memset(p, 0, sizeof(*p));
	p->runs = runs;
	CHECK_EQ(pool_new(&fake_pool_ops, NULL, 1, 10, &fake_pool), 0);
	if (idle) {
		struct pool_conn *c;

		CHECK_EQ(pool_get(fake_pool, false, &c), 0);
		pool_put(fake_pool, c);
	}
	err = store_run((void *)&l3, &fake_run_ops, max, plan_run, p);
	pool_free(fake_pool);
	fake_pool = NULL;
	return err;
}

static void test_run(void)
{
	struct plan p;

	CHECK_EQ(run_plan("o", 2, true, &p), 0);
	CHECK_EQ(p.n, 1);
	CHECK(p.reused[0] && !p.fresh[0]);

	/* a lost connection that had waited idle: once more on a new one */
	CHECK_EQ(run_plan("lo", 2, true, &p), 0);
	CHECK_EQ(p.n, 2);
	CHECK(p.reused[0] && !p.reused[1]);
	CHECK(!p.fresh[0] && p.fresh[1]);
	/* ... once only */
	CHECK_EQ(run_plan("ll", 8, true, &p), -EAGAIN);
	CHECK_EQ(p.n, 2);
	/* a new connection that is lost: the server is not there */
	CHECK_EQ(run_plan("l", 8, false, &p), -EAGAIN);
	CHECK_EQ(p.n, 1);
	/* any other failure is final */
	CHECK_EQ(run_plan("e", 8, true, &p), -EIO);
	CHECK_EQ(p.n, 1);

	/* conflicts run again, counted, up to max runs */
	CHECK_EQ(run_plan("ccco", 8, true, &p), 0);
	CHECK_EQ(p.n, 4);
	CHECK_EQ(p.conflicts[3], 3);
	CHECK(!p.fresh[3]);
	CHECK_EQ(run_plan("cccccccc", 3, true, &p), -EAGAIN);
	CHECK_EQ(p.n, 3);
	CHECK_EQ(run_plan("clco", 8, true, &p), 0);
	CHECK_EQ(p.n, 4);
	CHECK(p.fresh[2] && p.fresh[3]);
	CHECK_EQ(p.conflicts[3], 2);

	/* no connection free in time */
	{
		struct pool_conn *c, *c2;

		CHECK_EQ(pool_new(&fake_pool_ops, NULL, 1, 10, &fake_pool), 0);
		CHECK_EQ(pool_get(fake_pool, false, &c), 0);
		last_log[0] = '\0';
		CHECK_EQ(store_pool_get(&l3, fake_pool, false, "thing", 7, &c2),
			 -EAGAIN);
		CHECK_STREQ(last_log, "sql 't.db': no thing free after 7 s");
		memset(&p, 0, sizeof(p));
		p.runs = "o";
		CHECK_EQ(store_run((void *)&l3, &fake_run_ops, 2, plan_run, &p),
			 -EAGAIN);
		CHECK_EQ(p.n, 0);
		pool_put(fake_pool, c);
		pool_free(fake_pool);
		fake_pool = NULL;
	}
}

int main(void)
{
	test_entry_problem();
	test_change_problem();
	test_check_changes();
	test_row_decode();
	test_data_dup();
	test_cols_of();
	test_schema_check();
	test_pages();
	test_run();
	printf("test_store: ok\n");
	return 0;
}
