/*
 * test_items.c - items by ID (items.c) and the one-shot engine:
 *  - eng_lookup_id() finds an item of either kind, takes a lookup
 *    reference, and reports the errors of a bad or missing ID;
 *  - eng_list_ids() lists exactly the items under a prefix (a dot
 *    boundary, at any depth), in the documented depth-first name order,
 *    across more than one listing page, with pending changes merged in,
 *    and stops when the callback says so;
 *  - an engine opened with oneshot makes no whole-store call at open (no
 *    count, no scan, no inode reservation), never trusts a filter, still
 *    finds every name through L3, reserves inode numbers one create at a
 *    time, and its eng_sync() returns an L3 failure instead of settling
 *    for the log;
 *  - must_exist refuses a SQLite file that does not exist.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "engine.h"
#include "store_wrap.h"

#define NBIG 300 /* more than two listing pages */

static char dir[] = "/tmp/tierfs-test-items-XXXXXX";
static char db[256];
static struct wrap_state wst;

static struct eng *open_engine(bool oneshot)
{
	struct eng_config cfg;
	struct eng *e = NULL;

	eng_config_init(&cfg);
	cfg.sqlite_path = db;
	cfg.oneshot = oneshot;
	cfg.wrap_l3 = store_wrap_l3;
	cfg.wrap_arg = &wst;
	CHECK_EQ(eng_open(&cfg, &e), 0);
	return e;
}

/* The listing as one string, "id\n" per item. */
struct collected {
	char *buf;
	size_t len, count, stop_after;
};

static int collect(void *arg, const char *id, const struct eng_attr *a)
{
	struct collected *c = arg;
	size_t n = strlen(id);

	CHECK(a->kind == ITEM_JSON || a->kind == ITEM_BINARY);
	c->buf = realloc(c->buf, c->len + n + 2);
	CHECK(c->buf);
	memcpy(c->buf + c->len, id, n);
	c->len += n;
	c->buf[c->len++] = '\n';
	c->buf[c->len] = '\0';
	c->count++;
	return c->stop_after && c->count == c->stop_after ? 42 : 0;
}

static char *list(struct eng *e, const char *prefix, int want_r)
{
	struct collected c = {0};

	CHECK_EQ(eng_list_ids(e, prefix, collect, &c), want_r);
	return c.buf ? c.buf : strdup("");
}

static void check_list(struct eng *e, const char *prefix, const char *want)
{
	char *got = list(e, prefix, 0);

	if (strcmp(got, want) != 0) {
		fprintf(stderr, "list '%s':\n%s\nwant:\n%s\n", prefix, got,
			want);
		CHECK(!"listing differs");
	}
	free(got);
}

static void put(struct eng *e, const char *id, enum item_kind kind,
		const char *data)
{
	snprintf(check_context, sizeof(check_context), "put %s", id);
	CHECK_EQ(eng_put(e, id, kind, data, strlen(data)), 0);
	check_context[0] = '\0';
}

static void test_lookup_id(struct eng *e)
{
	struct eng_attr a, b;
	char hex[65];

	CHECK_EQ(eng_lookup_id(e, "user.1", ITEM_JSON, &a), 0);
	CHECK_EQ(a.kind, ITEM_JSON);
	CHECK_EQ(a.size, 7);
	CHECK_EQ(a.version, 1);
	CHECK_EQ(eng_getxattr(e, a.ino, "user.tierfs.hash", hex, 64), 64);
	CHECK_EQ(eng_getattr(e, a.ino, &b), 0);
	CHECK_EQ(b.ino, a.ino);
	eng_forget(e, a.ino, 1);

	CHECK_EQ(eng_lookup_id(e, "user.sub.deep.4", ITEM_BINARY, &a), 0);
	CHECK_EQ(a.kind, ITEM_BINARY);
	eng_forget(e, a.ino, 1);

	/* the other kind, a directory's path, a file in the way, bad IDs */
	CHECK_EQ(eng_lookup_id(e, "user.1", ITEM_BINARY, &a), -ENOENT);
	CHECK_EQ(eng_lookup_id(e, "user.nope", ITEM_JSON, &a), -ENOENT);
	CHECK_EQ(eng_lookup_id(e, "nodir.x", ITEM_JSON, &a), -ENOENT);
	CHECK_EQ(eng_lookup_id(e, "user.sub", ITEM_BINARY, &a), -EISDIR);
	CHECK_EQ(eng_lookup_id(e, "user.sub.deep.4.x", ITEM_JSON, &a),
		 -ENOTDIR);
	CHECK_EQ(eng_lookup_id(e, "user..1", ITEM_JSON, &a), -EINVAL);
	CHECK_EQ(eng_lookup_id(e, "", ITEM_JSON, &a), -EINVAL);
	CHECK_EQ(eng_lookup_id(e, "user.1", ITEM_DIR, &a), -EINVAL);
}

/* What test_list() expects under "user": depth first, in inode order,
 * which here is the order main() made them in (sub/ came with user.sub.3,
 * after 2.json and before x.json). */
static const char user_list[] = "user.1\n"
				"user.2\n"
				"user.sub.3\n"
				"user.sub.deep.4\n"
				"user.x\n";

static void test_list(struct eng *e)
{
	struct collected c = {0};
	char *all, *big, want[64];
	size_t n = 0;

	check_list(e, "user", user_list);
	check_list(e, "user.sub", "user.sub.3\nuser.sub.deep.4\n");
	check_list(e, "a", "a.b%2Ec\n");
	/* the whole store: the root's entries in the order they were made
	 * (user/, user.json, username.json, a/, big/ with its items made
	 * from the last name to the first) */
	all = list(e, "", 0);
	CHECK(strncmp(all,
		      "user.1\nuser.2\nuser.sub.3\nuser.sub.deep.4\n"
		      "user.x\nuser\nusername.5\na.b%2Ec\nbig.0299\n",
		      81) == 0);
	big = strstr(all, "big.0000\n");
	CHECK(big && big[9] == '\0');
	for (char *p = all; *p; p++)
		n += *p == '\n';
	CHECK_EQ(n, NBIG + 8);
	free(all);
	/* paging: 300 entries in one directory, all in order */
	big = list(e, "big", 0);
	for (int i = 0; i < NBIG; i++) {
		snprintf(want, sizeof(want), "big.%04d\n", NBIG - 1 - i);
		CHECK(strncmp(big + (size_t)i * 9, want, 9) == 0);
	}
	CHECK_EQ(strlen(big), NBIG * 9);
	free(big);

	/* no such directory, a file in the way, bad prefixes */
	free(list(e, "nothing", -ENOENT));
	free(list(e, "username.5", -ENOENT)); /* a JSON item, no dir */
	free(list(e, "user.sub.deep.4", -ENOTDIR));
	free(list(e, "user.", -EINVAL));
	free(list(e, ".user", -EINVAL));

	/* the callback stops the walk */
	c.stop_after = 3;
	CHECK_EQ(eng_list_ids(e, "", collect, &c), 42);
	CHECK_EQ(c.count, 3);
	free(c.buf);
}

int main(void)
{
	struct eng_counters cnt;
	struct eng_attr a;
	struct item *it;
	struct eng *e;
	char id[64];
	unsigned long long before[W_COUNT];

	if (!mkdtemp(dir))
		return 1;
	snprintf(db, sizeof(db), "%s/store.db", dir);

	/* must_exist: nothing is made */
	{
		struct eng_config cfg;

		eng_config_init(&cfg);
		cfg.sqlite_path = db;
		cfg.must_exist = true;
		cfg.oneshot = true;
		CHECK_EQ(eng_open(&cfg, &e), -ENOENT);
		CHECK(access(db, F_OK) < 0);
	}

	/* a mount-like engine fills the store; listings merge pending
	 * changes before anything is committed */
	e = open_engine(false);
	put(e, "user.1", ITEM_JSON, "{\"a\":1}");
	put(e, "user.2", ITEM_JSON, "[2]");
	put(e, "user.sub.3", ITEM_JSON, "3");
	put(e, "user.sub.deep.4", ITEM_BINARY, "four\n");
	put(e, "user.x", ITEM_JSON, "\"x\"");
	put(e, "user", ITEM_JSON, "{}");
	put(e, "username.5", ITEM_JSON, "5");
	put(e, "a.b%2Ec", ITEM_BINARY, "c");
	for (int i = NBIG - 1; i >= 0; i--) {
		snprintf(id, sizeof(id), "big.%04d", i);
		put(e, id, ITEM_BINARY, "");
	}
	check_list(e, "user", user_list);
	test_lookup_id(e);
	CHECK_EQ(eng_close(e), 0);

	/* a one-shot engine: no count, scan or reservation at open */
	for (int op = 0; op < W_COUNT; op++)
		before[op] = wst.calls[op];
	e = open_engine(true);
	CHECK_EQ(wst.calls[W_STATS], before[W_STATS]);
	CHECK_EQ(wst.calls[W_SCAN], before[W_SCAN]);
	CHECK_EQ(wst.calls[W_ALLOC_INO], before[W_ALLOC_INO]);
	CHECK_EQ(wst.calls[W_APPLY], before[W_APPLY]);
	test_list(e);
	test_lookup_id(e);
	/* absent names go to L3, every time */
	for (int op = 0; op < W_COUNT; op++)
		before[op] = wst.calls[op];
	for (int i = 0; i < 10; i++)
		CHECK_EQ(eng_get(e, "absent", ITEM_JSON, &it), -ENOENT);
	CHECK_EQ(wst.calls[W_LOOKUP] - before[W_LOOKUP], 10);
	eng_get_counters(e, &cnt);
	CHECK(!cnt.filter_trusted);
	CHECK_EQ(cnt.filter_names, 0);
	CHECK_EQ(cnt.quarantined, 0);
	/* a new item with two new directories: one reservation of three
	 * inode numbers, no block */
	put(e, "new.dir.item", ITEM_JSON, "{}");
	CHECK_EQ(wst.calls[W_ALLOC_INO] - before[W_ALLOC_INO], 1);
	CHECK_EQ(eng_lookup_id(e, "new.dir.item", ITEM_JSON, &a), 0);
	eng_forget(e, a.ino, 1);
	/* a second put: the next version */
	put(e, "user.1", ITEM_JSON, "{\"a\":2}");
	CHECK_EQ(eng_lookup_id(e, "user.1", ITEM_JSON, &a), 0);
	CHECK_EQ(a.version, 2);
	eng_forget(e, a.ino, 1);
	CHECK_EQ(eng_sync(e), 0);

	/* L3 fails every apply: oneshot sync reports it (a mount's sync
	 * would return 0 once the log is synced) */
	wst.fault = (struct wrap_fault){
		.op = W_APPLY, .err = EAGAIN, .k = 1, .sticky = true};
	wst.calls[W_APPLY] = 0;
	put(e, "user.2", ITEM_JSON, "[3]");
	CHECK(eng_sync(e) < 0);
	wrap_lift(&wst);
	CHECK_EQ(eng_sync(e), 0);
	CHECK_EQ(eng_close(e), 0);

	/* what the one-shot engine wrote is there */
	e = open_engine(true);
	CHECK_EQ(eng_get(e, "user.2", ITEM_JSON, &it), 0);
	CHECK_EQ(item_size(it), 3);
	CHECK(memcmp(item_data(it), "[3]", 3) == 0);
	item_unref(it);
	check_list(e, "new", "new.dir.item\n");
	CHECK_EQ(eng_close(e), 0);
	printf("items: lookup, listing and one-shot engine ok\n");
	return 0;
}
