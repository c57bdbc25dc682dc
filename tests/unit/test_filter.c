/*
 * test_filter.c - the engine's negative-lookup filter, through the engine:
 * built at open from L3, trusted when complete, kept current by this
 * engine's creates, renames and deletes; lookups of absent names then need
 * (almost) no L3 query, and an existing name is never reported absent.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "engine.h"

#define NFILES 100000 /* the store size */
#define NMISSING 10000

static char dir[] = "/tmp/tierfs-test-filter-XXXXXX";
static char db[256];

static struct eng *open_engine(void)
{
	struct eng_config cfg;
	struct eng *e = NULL;

	eng_config_init(&cfg);
	cfg.sqlite_path = db;
	CHECK_EQ(eng_open(&cfg, &e), 0);
	return e;
}

/* Waits (with a deadline) until the filter is built and trusted. */
static void wait_trusted(struct eng *e)
{
	struct eng_counters c;
	struct timespec ts = {0, 1000000};

	for (int i = 0; i < 30000; i++) {
		eng_get_counters(e, &c);
		if (c.filter_trusted)
			return;
		nanosleep(&ts, NULL);
	}
	CHECK(!"the filter was not trusted within 30 s");
}

static void create(struct eng *e, uint64_t parent, const char *name)
{
	struct eng_ctx ctx = {.uid = 0, .gid = 0, .umask = 022};
	struct eng_attr a;
	struct eng_file *f;

	CHECK_EQ(eng_create(e, parent, name, 0644, O_WRONLY, &ctx, &a, &f), 0);
	eng_release(e, f);
	eng_forget(e, a.ino, 1);
}

static int lookup(struct eng *e, uint64_t parent, const char *name)
{
	struct eng_attr a;
	int r = eng_lookup(e, parent, name, &a);

	if (r == 0)
		eng_forget(e, a.ino, 1);
	return r;
}

int main(void)
{
	struct eng_counters before, after;
	struct eng_ctx ctx = {0};
	struct eng_attr d;
	struct eng *e;
	char name[64];
	uint64_t queries;

	if (!mkdtemp(dir))
		return 1;
	snprintf(db, sizeof(db), "%s/store.db", dir);

	e = open_engine();
	CHECK_EQ(eng_mkdir(e, 1, "d", 0755, &ctx, &d), 0);
	for (int i = 0; i < NFILES; i++) {
		snprintf(name, sizeof(name), "f%06d.bin", i);
		create(e, d.ino, name);
	}
	CHECK_EQ(eng_close(e), 0);

	e = open_engine();
	CHECK_EQ(eng_lookup(e, 1, "d", &d), 0);
	wait_trusted(e);

	/* absent names: the filter answers, L3 is (almost) never asked */
	eng_get_counters(e, &before);
	for (int i = 0; i < NMISSING; i++) {
		snprintf(name, sizeof(name), "missing-%d.json", i);
		CHECK_EQ(lookup(e, d.ino, name), -ENOENT);
	}
	eng_get_counters(e, &after);
	queries = after.l3_lookups - before.l3_lookups;
	printf("%d lookups of absent names: %llu L3 queries, %llu answered by "
	       "the filter\n",
	       NMISSING, (unsigned long long)queries,
	       (unsigned long long)(after.filter_negatives -
				    before.filter_negatives));
	CHECK(queries <= NMISSING / 100); /* false positives only */

	/* every existing name is found (no false negative) */
	for (int i = 0; i < NFILES; i++) {
		snprintf(name, sizeof(name), "f%06d.bin", i);
		CHECK_EQ(lookup(e, d.ino, name), 0);
	}
	/* this engine's changes keep it current */
	create(e, d.ino, "new.bin");
	CHECK_EQ(eng_rename(e, d.ino, "f000000.bin", d.ino, "moved.bin", 0), 0);
	CHECK_EQ(eng_unlink(e, d.ino, "f000001.bin"), 0);
	CHECK_EQ(eng_sync(e), 0);
	CHECK_EQ(eng_close(e), 0);

	e = open_engine();
	CHECK_EQ(eng_lookup(e, 1, "d", &d), 0);
	CHECK_EQ(lookup(e, d.ino, "new.bin"), 0); /* before trust: via L3 */
	/* batches committed while the builder still scans L3 (under
	 * ThreadSanitizer: the builder and the flusher share nothing
	 * unlocked) */
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "during-build-%d.bin", i);
		create(e, d.ino, name);
		CHECK_EQ(eng_sync(e), 0);
	}
	eng_get_counters(e, &after);
	printf("20 batches committed %s the filter was built\n",
	       after.filter_trusted ? "(partly) while" : "while");
	wait_trusted(e);
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "during-build-%d.bin", i);
		CHECK_EQ(lookup(e, d.ino, name), 0);
	}
	CHECK_EQ(lookup(e, d.ino, "moved.bin"), 0);
	CHECK_EQ(lookup(e, d.ino, "f000000.bin"), -ENOENT);
	CHECK_EQ(lookup(e, d.ino, "f000001.bin"), -ENOENT);
	create(e, d.ino, "after-trust.bin");
	CHECK_EQ(lookup(e, d.ino, "after-trust.bin"), 0);
	CHECK_EQ(eng_unlink(e, d.ino, "after-trust.bin"), 0);
	CHECK_EQ(lookup(e, d.ino, "after-trust.bin"), -ENOENT);
	for (int i = 2; i < NFILES; i++) {
		snprintf(name, sizeof(name), "f%06d.bin", i);
		CHECK_EQ(lookup(e, d.ino, name), 0);
	}
	CHECK_EQ(eng_close(e), 0);

	snprintf(name, sizeof(name), "rm -rf '%s'", dir);
	CHECK_EQ(system(name), 0);
	printf("ok\n");
	return 0;
}
