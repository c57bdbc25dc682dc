/*
 * store_feed_cases.h - the cases of store.h's "Sharing" contract that
 * every L3 backend must pass alike: versions assigned at commit, namespace
 * races resolved at commit, and the change feed (feed_read, feed_head,
 * feed_wait).
 *
 * Each case_feed_*() takes two stores @a and @b opened on the SAME empty
 * database (only the root): two writers, as two mounts or a mount and a
 * program. It borrows them (the caller frees them) and fails the test on
 * the first wrong answer. A case may change the stores' feed_keep_*
 * fields; it does not reset them.
 *
 * What the cases rely on beyond store.h: sequence numbers increase but may
 * have gaps (none is assumed); the records of one batch may come in any
 * order among themselves; a change a race drops is recorded too, and its
 * record reads the entry as it now is; a feed record of an entry that is
 * gone has gone set, and its row is not looked at.
 *
 * Header-only (each test is its own program); include it after
 * store_helpers.h, and link with pthread.
 */
#ifndef TIERFS_TEST_STORE_FEED_CASES_H
#define TIERFS_TEST_STORE_FEED_CASES_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "merkle.h"
#include "store.h"
#include "store_helpers.h"

/* ---- helpers ---- */

/* The version stored for @ino, as get() reads it through @s. */
static inline uint64_t feed_version(struct store *s, uint64_t ino)
{
	struct store_row r;
	uint64_t v;

	CHECK_EQ(s->ops->get(s, ino, &r), 0);
	v = r.meta.version;
	store_row_release(&r);
	return v;
}

static inline uint64_t feed_races(struct store *s)
{
	return atomic_load(&s->races);
}

static inline uint64_t feed_head_of(struct store *s)
{
	uint64_t seq = UINT64_MAX;

	CHECK_EQ(s->ops->feed_head(s, &seq), 0);
	CHECK(seq != UINT64_MAX);
	return seq;
}

/* Releases the rows of @recs[0..n). */
static inline void feed_release(struct store_feed *recs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!recs[i].gone)
			store_row_release(&recs[i].row);
}

/* Reads every record of @s above @after into @recs (room for @cap, more
 * than there are), in pages of @page, checking that sequence numbers
 * increase, that a row that is there is the record's entry, and that the
 * read ends at the head. Returns how many. */
static inline size_t feed_all(struct store *s, uint64_t after,
			      struct store_feed *recs, size_t cap, size_t page)
{
	size_t n = 0, want;
	int got;

	for (;;) {
		want = cap - n < page ? cap - n : page;
		CHECK(want > 0);
		got = s->ops->feed_read(s, after, &recs[n], want);
		CHECK(got >= 0 && (size_t)got <= want);
		if (got == 0)
			break;
		for (int i = 0; i < got; i++) {
			struct store_feed *r = &recs[n + (size_t)i];

			CHECK(r->seq > after);
			after = r->seq;
			CHECK(r->origin != 0);
			if (!r->gone)
				CHECK_EQ(r->row.ino, r->ino);
		}
		n += (size_t)got;
	}
	CHECK_EQ(feed_head_of(s), n ? recs[n - 1].seq : after);
	return n;
}

/* The first record of @recs[0..n) about @ino from @origin, or NULL. */
static inline const struct store_feed *feed_find(const struct store_feed *recs,
						 size_t n, uint64_t ino,
						 uint64_t origin)
{
	for (size_t i = 0; i < n; i++)
		if (recs[i].ino == ino && recs[i].origin == origin)
			return &recs[i];
	return NULL;
}

/* Recomputes the Merkle hash of directory @dir from its children as @s
 * lists them (merkle.h), checks it against the one @s stores, does the
 * same below, and returns it in @out. */
static inline void feed_check_merkle(struct store *s, uint64_t dir,
				     uint8_t out[MERKLE_LEN])
{
	struct store_row rows[16], self;
	char after[STORE_NAME_MAX + 1] = "";
	struct merkle *m = merkle_begin();
	int n;

	CHECK(m != NULL);
	while ((n = s->ops->list(s, dir, after, rows, 16)) > 0) {
		for (int i = 0; i < n; i++) {
			uint8_t h[MERKLE_LEN];
			bool is_dir = rows[i].meta.kind == ITEM_DIR;

			if (is_dir)
				feed_check_merkle(s, rows[i].ino, h);
			else
				memcpy(h, rows[i].merkle, MERKLE_LEN);
			merkle_add_child(m, rows[i].name, strlen(rows[i].name),
					 is_dir, h);
		}
		snprintf(after, sizeof(after), "%s", rows[n - 1].name);
		for (int i = 0; i < n; i++)
			store_row_release(&rows[i]);
	}
	CHECK_EQ(n, 0);
	merkle_end(m, out);
	CHECK_EQ(s->ops->get(s, dir, &self), 0);
	CHECK(memcmp(self.merkle, out, MERKLE_LEN) == 0);
	store_row_release(&self);
}

/* feed_check_merkle() of the whole tree, through both writers. */
static inline void feed_check_tree(struct store *a, struct store *b)
{
	uint8_t ha[MERKLE_LEN], hb[MERKLE_LEN];

	feed_check_merkle(a, STORE_ROOT_INO, ha);
	feed_check_merkle(b, STORE_ROOT_INO, hb);
	CHECK(memcmp(ha, hb, MERKLE_LEN) == 0);
}

/* ---- versions at commit ---- */

/* Two writers that start from one stored version end at distinct,
 * increasing versions; a change without content keeps the stored version
 * unless it brings a higher one; a new row keeps its own, at least 1. */
static inline void case_feed_versions(struct store *a, struct store *b)
{
	struct item_meta m = meta_of(ITEM_BINARY, 1);
	uint64_t f, g, h;

	CHECK(a->origin != 0 && b->origin != 0 && a->origin != b->origin);
	f = put_file(a, new_ino(a), STORE_ROOT_INO, "v", ITEM_BINARY, "1", 1);
	CHECK_EQ(feed_version(a, f), 1);
	CHECK_EQ(feed_version(b, f), 1);

	/* both read version 1 and publish version 2 */
	m.version = 2;
	CHECK_EQ(apply_one(a,
			   data_change_of(f, STORE_ROOT_INO, "v", &m, "A", 1)),
		 0);
	CHECK_EQ(feed_version(a, f), 2);
	CHECK_EQ(apply_one(b,
			   data_change_of(f, STORE_ROOT_INO, "v", &m, "B", 1)),
		 0);
	CHECK_EQ(feed_version(a, f), 3);
	CHECK_EQ(feed_version(b, f), 3);
	check_content(a, f, "B", 1);

	/* metadata only (a chmod, a rename): the stored version stays */
	m.version = 2;
	m.mode = S_IFREG | 0600;
	CHECK_EQ(apply_one(a, change_of(f, STORE_ROOT_INO, "v2", &m)), 0);
	CHECK_EQ(feed_version(b, f), 3);
	CHECK_EQ(lookup_ino(b, STORE_ROOT_INO, "v2"), f);
	check_content(b, f, "B", 1);
	/* ... unless the change brings a higher one */
	m.version = 9;
	CHECK_EQ(apply_one(b, change_of(f, STORE_ROOT_INO, "v2", &m)), 0);
	CHECK_EQ(feed_version(a, f), 9);
	/* content: its own when higher, else the stored one + 1 */
	m.version = 20;
	CHECK_EQ(apply_one(a,
			   data_change_of(f, STORE_ROOT_INO, "v2", &m, "C", 1)),
		 0);
	CHECK_EQ(feed_version(b, f), 20);
	m.version = 1;
	CHECK_EQ(apply_one(b,
			   data_change_of(f, STORE_ROOT_INO, "v2", &m, "D", 1)),
		 0);
	CHECK_EQ(feed_version(a, f), 21);

	/* a new row keeps its own version, at least 1 */
	g = new_ino(b);
	m.version = 0;
	CHECK_EQ(apply_one(b, change_of(g, STORE_ROOT_INO, "g", &m)), 0);
	CHECK_EQ(feed_version(a, g), 1);
	h = new_ino(a);
	m.version = 7;
	CHECK_EQ(apply_one(a,
			   data_change_of(h, STORE_ROOT_INO, "h", &m, "h", 1)),
		 0);
	CHECK_EQ(feed_version(b, h), 7);

	/* list() returns the stored versions too */
	{
		struct store_row rows[4];
		int n = b->ops->list(b, STORE_ROOT_INO, "", rows, 4);

		CHECK_EQ(n, 3);
		for (int i = 0; i < n; i++) {
			CHECK_EQ(rows[i].meta.version, rows[i].ino == f	  ? 21
						       : rows[i].ino == g ? 1
									  : 7);
			store_row_release(&rows[i]);
		}
	}
	CHECK_EQ(feed_races(a), 0);
	CHECK_EQ(feed_races(b), 0);
}

/* ---- namespace races ---- */

/* Two writers create one name: one entry is left, the later, with a
 * version above the one it replaced; the same through a stem. */
static inline void case_feed_same_name(struct store *a, struct store *b)
{
	struct item_meta m = meta_of(ITEM_BINARY, 1);
	struct item_meta mj = meta_of(ITEM_JSON, 2);
	struct store_feed recs[16];
	const struct store_feed *r;
	uint64_t x, y, s1, s2, t1, t2, h0, entries, bytes;
	void *data;
	size_t len, n;

	h0 = feed_head_of(a);
	x = put_file(a, new_ino(a), STORE_ROOT_INO, "twin", ITEM_BINARY, "A",
		     1);
	m.version = 4;
	CHECK_EQ(apply_one(a, data_change_of(x, STORE_ROOT_INO, "twin", &m, "A",
					     1)),
		 0);
	CHECK_EQ(feed_version(a, x), 4);

	/* b has not seen x: it creates "twin" too */
	y = new_ino(b);
	m.version = 1;
	CHECK_EQ(apply_one(b, data_change_of(y, STORE_ROOT_INO, "twin", &m, "B",
					     1)),
		 0);
	CHECK_EQ(feed_races(b), 1);
	CHECK_EQ(feed_races(a), 0);
	CHECK_EQ(lookup_ino(a, STORE_ROOT_INO, "twin"), y);
	CHECK_EQ(a->ops->get(a, x, &(struct store_row){0}), -ENOENT);
	CHECK_EQ(a->ops->read(a, x, &data, &len), -ENOENT);
	check_content(a, y, "B", 1);
	CHECK(feed_version(a, y) >= 5);

	/* binary "s" and JSON "s.json" are one item: the later stays */
	s1 = put_file(a, new_ino(a), STORE_ROOT_INO, "s", ITEM_BINARY, "s", 1);
	s2 = new_ino(b);
	CHECK_EQ(apply_one(b, data_change_of(s2, STORE_ROOT_INO, "s.json", &mj,
					     "{}", 2)),
		 0);
	CHECK_EQ(feed_races(b), 2);
	CHECK_EQ(lookup_ino(a, STORE_ROOT_INO, "s"), -ENOENT);
	CHECK_EQ(lookup_ino(a, STORE_ROOT_INO, "s.json"), s2);
	CHECK_EQ(a->ops->get(a, s1, &(struct store_row){0}), -ENOENT);
	CHECK(feed_version(a, s2) >= 2);

	/* a rename onto a name another writer has just taken */
	t1 = put_file(a, new_ino(a), STORE_ROOT_INO, "t", ITEM_BINARY, "t", 1);
	t2 = put_file(b, new_ino(b), STORE_ROOT_INO, "t0", ITEM_BINARY, "u", 1);
	m = meta_of(ITEM_BINARY, 1);
	CHECK_EQ(apply_one(b, change_of(t2, STORE_ROOT_INO, "t", &m)), 0);
	CHECK_EQ(feed_races(b), 3);
	CHECK_EQ(lookup_ino(a, STORE_ROOT_INO, "t"), t2);
	CHECK_EQ(lookup_ino(a, STORE_ROOT_INO, "t0"), -ENOENT);
	CHECK_EQ(a->ops->get(a, t1, &(struct store_row){0}), -ENOENT);
	check_content(a, t2, "u", 1);
	CHECK(feed_version(a, t2) >= 2);

	CHECK_EQ(a->ops->stats(a, &entries, &bytes), 0);
	CHECK_EQ(entries, 3);

	/* the feed tells the replaced entries' deletions, from b */
	n = feed_all(a, h0, recs, 16, 16);
	CHECK(n >= 9);
	r = feed_find(recs, n, x, b->origin);
	CHECK(r && r->gone);
	r = feed_find(recs, n, s1, b->origin);
	CHECK(r && r->gone);
	r = feed_find(recs, n, t1, b->origin);
	CHECK(r && r->gone);
	r = feed_find(recs, n, y, b->origin);
	CHECK(r && !r->gone);
	CHECK_EQ(r->row.meta.version, feed_version(a, y));
	feed_release(recs, n);
	CHECK_EQ(feed_races(a), 0);
	feed_check_tree(a, b);
}

/* A writer removes a directory that another has just put a file in: the
 * removal is dropped, the rest of its batch applied. */
static inline void case_feed_rmdir_race(struct store *a, struct store *b)
{
	struct item_meta m = meta_of(ITEM_BINARY, 0);
	struct store_feed recs[16];
	const struct store_feed *r;
	struct change *c[3];
	uint64_t d, f, other, h0, e, g;
	size_t n;

	d = put_dir(a, new_ino(a), STORE_ROOT_INO, "d");
	f = put_file(b, new_ino(b), d, "f", ITEM_BINARY, "f", 1);
	h0 = feed_head_of(a);
	other = new_ino(a);
	c[0] = delete_of(d);
	c[1] = change_of(other, STORE_ROOT_INO, "other", &m);
	CHECK_EQ(apply_changes(a, c, 2), 0);
	CHECK_EQ(feed_races(a), 1);
	CHECK_EQ(feed_races(b), 0);
	CHECK_EQ(lookup_ino(b, STORE_ROOT_INO, "d"), d);
	CHECK_EQ(lookup_ino(b, d, "f"), f);
	CHECK_EQ(lookup_ino(b, STORE_ROOT_INO, "other"), other);
	check_content(b, f, "f", 1);

	/* the dropped removal is in the feed: d as it is now */
	n = feed_all(b, h0, recs, 16, 16);
	r = feed_find(recs, n, d, a->origin);
	CHECK(r && !r->gone);
	CHECK_EQ(r->row.meta.kind, ITEM_DIR);
	r = feed_find(recs, n, other, a->origin);
	CHECK(r && !r->gone);
	feed_release(recs, n);

	/* removing a directory with the children the batch removes or moves
	 * out is no race */
	e = put_dir(a, new_ino(a), STORE_ROOT_INO, "e");
	g = put_file(b, new_ino(b), e, "g", ITEM_BINARY, "g", 1);
	c[0] = delete_of(d);
	c[1] = delete_of(f);
	c[2] = change_of(g, STORE_ROOT_INO, "g", &m);
	CHECK_EQ(apply_changes(a, c, 3), 0);
	c[0] = delete_of(e);
	CHECK_EQ(apply_changes(a, c, 1), 0);
	CHECK_EQ(feed_races(a), 1);
	CHECK_EQ(lookup_ino(b, STORE_ROOT_INO, "d"), -ENOENT);
	CHECK_EQ(lookup_ino(b, STORE_ROOT_INO, "e"), -ENOENT);
	CHECK_EQ(lookup_ino(b, STORE_ROOT_INO, "g"), g);
	feed_check_tree(a, b);
}

/* An empty directory is replaced by another writer's file or directory of
 * the same name. */
static inline void case_feed_replace_empty_dir(struct store *a, struct store *b)
{
	struct item_meta md = meta_of(ITEM_DIR, 0);
	uint64_t e, f, e2, d2;
	struct store_row r;

	md.version = 3;
	e = new_ino(a);
	CHECK_EQ(apply_one(a, change_of(e, STORE_ROOT_INO, "e", &md)), 0);
	f = put_file(b, new_ino(b), STORE_ROOT_INO, "e", ITEM_BINARY, "f", 1);
	CHECK_EQ(feed_races(b), 1);
	CHECK_EQ(a->ops->get(a, e, &r), -ENOENT);
	CHECK_EQ(a->ops->lookup(a, STORE_ROOT_INO, "e", &r), 0);
	CHECK_EQ(r.ino, f);
	CHECK_EQ(r.meta.kind, ITEM_BINARY);
	CHECK(r.meta.version >= 4);
	store_row_release(&r);
	check_content(a, f, "f", 1);

	/* a directory for a directory */
	e2 = put_dir(a, new_ino(a), STORE_ROOT_INO, "e2");
	d2 = put_dir(b, new_ino(b), STORE_ROOT_INO, "e2");
	CHECK_EQ(feed_races(b), 2);
	CHECK_EQ(lookup_ino(a, STORE_ROOT_INO, "e2"), d2);
	CHECK_EQ(a->ops->get(a, e2, &r), -ENOENT);
	CHECK(feed_version(a, d2) >= 2);
	put_file(b, new_ino(b), d2, "in", ITEM_BINARY, "in", 2);
	CHECK_EQ(feed_races(a), 0);
	feed_check_tree(a, b);
}

/* A directory with children is never replaced: the change that would is
 * dropped, the rest of its batch applied. */
static inline void case_feed_dir_with_children(struct store *a, struct store *b)
{
	struct item_meta m = meta_of(ITEM_BINARY, 1);
	struct item_meta md = meta_of(ITEM_DIR, 0);
	struct change *c[2];
	uint64_t full, child, n1, n2, n3;
	struct store_row r;

	full = put_dir(a, new_ino(a), STORE_ROOT_INO, "full");
	child = put_file(a, new_ino(a), full, "c", ITEM_BINARY, "c", 1);

	n1 = new_ino(b);
	n2 = new_ino(b);
	c[0] = data_change_of(n1, STORE_ROOT_INO, "full", &m, "1", 1);
	c[1] = data_change_of(n2, STORE_ROOT_INO, "other", &m, "2", 1);
	CHECK_EQ(apply_changes(b, c, 2), 0);
	CHECK_EQ(feed_races(b), 1);
	CHECK_EQ(lookup_ino(a, STORE_ROOT_INO, "full"), full);
	CHECK_EQ(lookup_ino(a, full, "c"), child);
	CHECK_EQ(a->ops->get(a, n1, &r), -ENOENT);
	CHECK_EQ(lookup_ino(a, STORE_ROOT_INO, "other"), n2);
	check_content(a, n2, "2", 1);

	/* nor by a directory */
	n3 = new_ino(b);
	c[0] = change_of(n3, STORE_ROOT_INO, "full", &md);
	CHECK_EQ(apply_changes(b, c, 1), 0);
	CHECK_EQ(feed_races(b), 2);
	CHECK_EQ(lookup_ino(a, STORE_ROOT_INO, "full"), full);
	CHECK_EQ(a->ops->get(a, n3, &r), -ENOENT);

	/* a rename onto it is dropped: the entry stays where it was, as it
	 * was */
	m.version = 5;
	c[0] = change_of(n2, STORE_ROOT_INO, "full", &m);
	CHECK_EQ(apply_changes(b, c, 1), 0);
	CHECK_EQ(feed_races(b), 3);
	CHECK_EQ(lookup_ino(a, STORE_ROOT_INO, "other"), n2);
	CHECK_EQ(feed_version(a, n2), 1);
	check_content(a, n2, "2", 1);
	CHECK_EQ(lookup_ino(a, STORE_ROOT_INO, "full"), full);
	CHECK_EQ(feed_races(a), 0);
	feed_check_tree(a, b);
}

/* How many entries are reachable from directory @dir (itself excluded),
 * as @s lists them. */
static inline uint64_t feed_reachable(struct store *s, uint64_t dir)
{
	struct store_row rows[16];
	char after[STORE_NAME_MAX + 1] = "";
	uint64_t count = 0;
	int n;

	while ((n = s->ops->list(s, dir, after, rows, 16)) > 0) {
		for (int i = 0; i < n; i++) {
			count++;
			if (rows[i].meta.kind == ITEM_DIR)
				count += feed_reachable(s, rows[i].ino);
		}
		snprintf(after, sizeof(after), "%s", rows[n - 1].name);
		for (int i = 0; i < n; i++)
			store_row_release(&rows[i]);
	}
	CHECK_EQ(n, 0);
	return count;
}

/* Every entry @s holds is reachable from the root: no cycle detached
 * any. */
static inline void feed_check_reachable(struct store *s)
{
	uint64_t entries, bytes;

	CHECK_EQ(s->ops->stats(s, &entries, &bytes), 0);
	CHECK_EQ(feed_reachable(s, STORE_ROOT_INO), entries);
}

/* The start of case_feed_move_cycle(): a makes x and y (each with a file)
 * and moves x into y; returns b's batch, made from the view before the
 * move: y moved into x, and a new file "other" (@c, room for 2). */
static inline void feed_cycle_setup(struct store *a, struct store *b,
				    uint64_t *x, uint64_t *y, uint64_t *other,
				    struct change **c)
{
	struct item_meta md = meta_of(ITEM_DIR, 0);
	struct item_meta mf = meta_of(ITEM_BINARY, 1);
	struct change *ca[2];

	*x = put_dir(a, new_ino(a), STORE_ROOT_INO, "x");
	*y = put_dir(a, new_ino(a), STORE_ROOT_INO, "y");
	put_file(a, new_ino(a), *x, "fx", ITEM_BINARY, "x", 1);
	put_file(a, new_ino(a), *y, "fy", ITEM_BINARY, "y", 1);
	/* a: x -> y/x (and y's times, as the engine touches it) */
	ca[0] = change_of(*x, *y, "x", &md);
	ca[1] = change_of(*y, STORE_ROOT_INO, "y", &md);
	CHECK_EQ(apply_changes(a, ca, 2), 0);
	*other = new_ino(b);
	c[0] = change_of(*y, *x, "y", &md);
	c[1] = data_change_of(*other, STORE_ROOT_INO, "other", &mf, "o", 1);
}

/* Two writers move two directories into each other: x into y, then, from
 * a view that still has x at the root, y into x. Together they would
 * detach both from the root: the later move is dropped, the rest of its
 * batch applied. Then a batch that moves several directories, and a move
 * dropped that keeps a name another change of the batch wanted. */
static inline void case_feed_move_cycle(struct store *a, struct store *b)
{
	struct item_meta md = meta_of(ITEM_DIR, 0);
	struct item_meta mf = meta_of(ITEM_BINARY, 1);
	struct store_feed recs[32];
	const struct store_feed *r;
	struct change *c[2];
	uint64_t x, y, other, h0, p, q, rr, m, nn, f;
	size_t n;

	h0 = feed_head_of(a);
	feed_cycle_setup(a, b, &x, &y, &other, c);
	CHECK_EQ(apply_changes(b, c, 2), 0);
	CHECK_EQ(feed_races(b), 1);
	CHECK_EQ(feed_races(a), 0);
	CHECK_EQ(lookup_ino(a, STORE_ROOT_INO, "y"), y);
	CHECK_EQ(lookup_ino(a, y, "x"), x);
	CHECK_EQ(lookup_ino(a, x, "y"), -ENOENT);
	CHECK_EQ(lookup_ino(a, STORE_ROOT_INO, "x"), -ENOENT);
	CHECK_EQ(lookup_ino(a, STORE_ROOT_INO, "other"), other);
	check_content(a, other, "o", 1);
	feed_check_reachable(a);
	feed_check_tree(a, b);

	/* the dropped move is in the feed, from b: y as it stands */
	n = feed_all(a, h0, recs, 32, 32);
	r = feed_find(recs, n, y, b->origin);
	CHECK(r && !r->gone);
	CHECK_EQ(r->row.parent, STORE_ROOT_INO);
	CHECK_STREQ(r->row.name, "y");
	r = feed_find(recs, n, other, b->origin);
	CHECK(r && !r->gone);
	r = feed_find(recs, n, x, a->origin);
	CHECK(r && !r->gone);
	CHECK_EQ(r->row.parent, y);
	feed_release(recs, n);

	/* a batch of b that moves p into q and r into p, from a view where
	 * q and r are at the root; a has moved q into r meanwhile. Both
	 * moves close the cycle p -> q -> r -> p (r's step is the batch's
	 * own): only the first, p's, is dropped, and then r's closes none */
	p = put_dir(a, new_ino(a), STORE_ROOT_INO, "p");
	q = put_dir(a, new_ino(a), STORE_ROOT_INO, "q");
	rr = put_dir(a, new_ino(a), STORE_ROOT_INO, "r");
	CHECK_EQ(apply_one(a, change_of(q, rr, "q", &md)), 0);
	c[0] = change_of(p, q, "p", &md);
	c[1] = change_of(rr, p, "r", &md);
	CHECK_EQ(apply_changes(b, c, 2), 0);
	CHECK_EQ(feed_races(b), 2);
	CHECK_EQ(lookup_ino(a, STORE_ROOT_INO, "p"), p);
	CHECK_EQ(lookup_ino(a, p, "r"), rr);
	CHECK_EQ(lookup_ino(a, rr, "q"), q);
	CHECK_EQ(lookup_ino(a, q, "p"), -ENOENT);
	feed_check_reachable(b);
	feed_check_tree(a, b);

	/* a move dropped keeps its name: b moves m into n and makes a file
	 * "m" where m was; a has moved n into m. The move closes a cycle,
	 * and then m, which has a child, holds the name the file wants */
	m = put_dir(a, new_ino(a), STORE_ROOT_INO, "m");
	nn = put_dir(a, new_ino(a), STORE_ROOT_INO, "n");
	put_file(a, new_ino(a), m, "in-m", ITEM_BINARY, "m", 1);
	CHECK_EQ(apply_one(a, change_of(nn, m, "n", &md)), 0);
	f = new_ino(b);
	c[0] = change_of(m, nn, "m", &md);
	c[1] = data_change_of(f, STORE_ROOT_INO, "m", &mf, "f", 1);
	CHECK_EQ(apply_changes(b, c, 2), 0);
	CHECK_EQ(feed_races(b), 4);
	CHECK_EQ(lookup_ino(a, STORE_ROOT_INO, "m"), m);
	CHECK_EQ(lookup_ino(a, m, "n"), nn);
	CHECK_EQ(a->ops->get(a, f, &(struct store_row){0}), -ENOENT);
	CHECK_EQ(feed_races(a), 0);
	feed_check_reachable(a);
	feed_check_tree(a, b);
}

/* While strict, a move that closes a cycle fails the batch with -EEXIST,
 * and nothing of it is applied, recorded or counted. */
static inline void case_feed_move_cycle_strict(struct store *a,
					       struct store *b)
{
	struct change *c[2];
	uint64_t x, y, other, h;

	feed_cycle_setup(a, b, &x, &y, &other, c);
	h = feed_head_of(a);
	b->strict = true;
	CHECK_EQ(store_apply(b, c, 2), -EEXIST);
	b->strict = false;
	CHECK_EQ(feed_races(b), 0);
	CHECK_EQ(feed_head_of(b), h);
	CHECK_EQ(lookup_ino(a, STORE_ROOT_INO, "other"), -ENOENT);
	CHECK_EQ(lookup_ino(a, STORE_ROOT_INO, "y"), y);
	CHECK_EQ(lookup_ino(a, y, "x"), x);
	/* the same batch, not strict: the move is dropped */
	CHECK_EQ(apply_changes(b, c, 2), 0);
	CHECK_EQ(feed_races(b), 1);
	CHECK_EQ(lookup_ino(a, STORE_ROOT_INO, "other"), other);
	CHECK_EQ(lookup_ino(a, x, "y"), -ENOENT);
	feed_check_reachable(a);
	feed_check_tree(a, b);
}

/* ---- the feed ---- */

/* Records come in sequence order, batch by batch, with their writer's
 * origin and the entries' current rows; deleted entries are gone. */
static inline void case_feed_order(struct store *a, struct store *b)
{
	struct item_meta m = meta_of(ITEM_BINARY, 1);
	struct item_meta md = meta_of(ITEM_DIR, 0);
	struct store_feed recs[16], page[2];
	struct change *c[2];
	uint64_t h0, d, f, g, seq;
	size_t n;
	int got;

	h0 = feed_head_of(a);
	CHECK_EQ(feed_head_of(b), h0);
	d = new_ino(a);
	f = new_ino(a);
	c[0] = change_of(d, STORE_ROOT_INO, "d", &md);
	c[1] = data_change_of(f, STORE_ROOT_INO, "f", &m, "f1", 2);
	CHECK_EQ(apply_changes(a, c, 2), 0);
	g = new_ino(b);
	m.version = 2;
	c[0] = data_change_of(g, d, "g", &m, "g", 1);
	c[1] = data_change_of(f, STORE_ROOT_INO, "f", &m, "f2", 2);
	CHECK_EQ(apply_changes(b, c, 2), 0);
	c[0] = delete_of(g);
	CHECK_EQ(apply_changes(a, c, 1), 0);

	n = feed_all(b, h0, recs, 16, 16);
	CHECK_EQ(n, 5);
	/* batch 1, from a: d and f, in either order */
	CHECK_EQ(recs[0].origin, a->origin);
	CHECK_EQ(recs[1].origin, a->origin);
	CHECK(feed_find(recs, 2, d, a->origin) != NULL);
	CHECK(feed_find(recs, 2, f, a->origin) != NULL);
	/* batch 2, from b: g and f */
	CHECK_EQ(recs[2].origin, b->origin);
	CHECK_EQ(recs[3].origin, b->origin);
	CHECK(feed_find(recs + 2, 2, g, b->origin) != NULL);
	CHECK(feed_find(recs + 2, 2, f, b->origin) != NULL);
	/* batch 3, from a: g's deletion */
	CHECK_EQ(recs[4].origin, a->origin);
	CHECK_EQ(recs[4].ino, g);
	for (size_t i = 0; i < n; i++) {
		if (recs[i].ino == g) {
			CHECK(recs[i].gone); /* deleted since */
			continue;
		}
		CHECK(!recs[i].gone);
		if (recs[i].ino == d) {
			CHECK_EQ(recs[i].row.meta.kind, ITEM_DIR);
			CHECK_EQ(recs[i].row.parent, STORE_ROOT_INO);
			CHECK_STREQ(recs[i].row.name, "d");
		} else {
			/* the current row, even in the older record */
			CHECK_EQ(recs[i].ino, f);
			CHECK_EQ(recs[i].row.meta.version, 2);
			CHECK_STREQ(recs[i].row.name, "f");
			CHECK_EQ(recs[i].row.meta.size, 1);
		}
	}
	/* a reads the same records */
	{
		struct store_feed again[16];
		size_t m2 = feed_all(a, h0, again, 16, 1);

		CHECK_EQ(m2, n);
		for (size_t i = 0; i < n; i++) {
			CHECK_EQ(again[i].seq, recs[i].seq);
			CHECK_EQ(again[i].origin, recs[i].origin);
			CHECK_EQ(again[i].ino, recs[i].ino);
			CHECK_EQ(again[i].gone, recs[i].gone);
		}
		feed_release(again, m2);
	}
	/* pages: from the middle, by two */
	seq = recs[1].seq;
	got = a->ops->feed_read(a, seq, page, 2);
	CHECK_EQ(got, 2);
	CHECK_EQ(page[0].seq, recs[2].seq);
	CHECK_EQ(page[1].seq, recs[3].seq);
	feed_release(page, 2);
	CHECK_EQ(a->ops->feed_read(a, recs[4].seq, page, 2), 0);
	CHECK_EQ(a->ops->feed_read(a, recs[3].seq, page, 0), 0);
	CHECK_EQ(feed_head_of(a), recs[4].seq);
	CHECK_EQ(feed_head_of(b), recs[4].seq);
	feed_release(recs, n);
}

/* The head: 0 on a new database, then the last record's sequence. */
static inline void case_feed_head(struct store *a, struct store *b)
{
	struct store_feed recs[4];
	uint64_t h1, h2;

	CHECK_EQ(feed_head_of(a), 0);
	CHECK_EQ(feed_head_of(b), 0);
	CHECK_EQ(a->ops->feed_read(a, 0, recs, 4), 0);

	put_dir(a, new_ino(a), STORE_ROOT_INO, "one");
	h1 = feed_head_of(b);
	CHECK(h1 > 0);
	CHECK_EQ(feed_head_of(a), h1);
	CHECK_EQ(b->ops->feed_read(b, 0, recs, 4), 1);
	CHECK_EQ(recs[0].seq, h1);
	CHECK_EQ(recs[0].origin, a->origin);
	feed_release(recs, 1);

	/* a deletion of what is not there is a change applied all the same */
	CHECK_EQ(apply_one(b, delete_of(987654)), 0);
	h2 = feed_head_of(a);
	CHECK(h2 > h1);
	CHECK_EQ(a->ops->feed_read(a, h1, recs, 4), 1);
	CHECK(recs[0].gone);
	CHECK_EQ(recs[0].ino, 987654);
	CHECK_EQ(recs[0].origin, b->origin);
	/* an empty batch records nothing */
	CHECK_EQ(store_apply(a, NULL, 0), 0);
	CHECK_EQ(feed_head_of(b), h2);
}

/* Past the kept records, feed_read() answers -ESTALE; the newest are
 * kept. */
static inline void case_feed_stale(struct store *a, struct store *b)
{
	enum { NBATCH = 200, KEEP = 3 };
	uint64_t heads[NBATCH];
	struct store_feed recs[8];
	struct item_meta m = meta_of(ITEM_BINARY, 1);
	uint64_t f;
	int got;

	a->feed_keep_records = KEEP;
	b->feed_keep_records = KEEP;
	f = put_file(a, new_ino(a), STORE_ROOT_INO, "f", ITEM_BINARY, "0", 1);
	for (int i = 0; i < NBATCH; i++) {
		struct store *s = i % 2 ? b : a;
		char byte = (char)('0' + i % 10);

		m.version = (uint64_t)i + 2;
		CHECK_EQ(apply_one(s, data_change_of(f, STORE_ROOT_INO, "f", &m,
						     &byte, 1)),
			 0);
		heads[i] = feed_head_of(s);
		CHECK(i == 0 || heads[i] > heads[i - 1]);
	}
	CHECK_EQ(a->ops->feed_read(a, 0, recs, 8), -ESTALE);
	CHECK_EQ(b->ops->feed_read(b, heads[0], recs, 8), -ESTALE);
	/* the newest KEEP records are all there */
	got = b->ops->feed_read(b, heads[NBATCH - KEEP - 1], recs, 8);
	CHECK_EQ(got, KEEP);
	for (int i = 0; i < KEEP; i++) {
		CHECK_EQ(recs[i].seq, heads[NBATCH - KEEP + i]);
		CHECK_EQ(recs[i].origin,
			 (NBATCH - KEEP + i) % 2 ? b->origin : a->origin);
		CHECK(!recs[i].gone);
		CHECK_EQ(recs[i].row.meta.version, NBATCH + 1);
	}
	feed_release(recs, (size_t)got);
	/* going on from the head works */
	CHECK_EQ(a->ops->feed_read(a, feed_head_of(a), recs, 8), 0);
}

struct feed_waiter {
	struct store *s;
	uint64_t after;
	int timeout_ms;
	int ret;
};

static inline void *feed_wait_main(void *p)
{
	struct feed_waiter *w = p;

	w->ret = w->s->ops->feed_wait(w->s, w->after, w->timeout_ms);
	return NULL;
}

static inline double feed_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* feed_wait() returns 1 once another writer (or its own) applies, and 0
 * when its time is up. */
static inline void case_feed_wait(struct store *a, struct store *b)
{
	struct feed_waiter w;
	pthread_t th;
	uint64_t h;
	double t0;

	put_dir(a, new_ino(a), STORE_ROOT_INO, "w");
	h = feed_head_of(a);
	/* nothing new: it times out, not much later than asked */
	t0 = feed_now_s();
	CHECK_EQ(a->ops->feed_wait(a, h, 50), 0);
	CHECK(feed_now_s() - t0 >= 0.045);
	CHECK(feed_now_s() - t0 < 5);
	/* records above @after are there already */
	CHECK_EQ(a->ops->feed_wait(a, h - 1, 10000), 1);

	/* another writer applies while it waits */
	w = (struct feed_waiter){.s = a, .after = h, .timeout_ms = 20000};
	t0 = feed_now_s();
	CHECK_EQ(pthread_create(&th, NULL, feed_wait_main, &w), 0);
	put_dir(b, new_ino(b), STORE_ROOT_INO, "w2");
	CHECK_EQ(pthread_join(th, NULL), 0);
	CHECK_EQ(w.ret, 1);
	CHECK(feed_now_s() - t0 < 15);
	CHECK(feed_head_of(a) > h);

	/* its own writer's batch wakes it as well */
	h = feed_head_of(a);
	w = (struct feed_waiter){.s = a, .after = h, .timeout_ms = 20000};
	t0 = feed_now_s();
	CHECK_EQ(pthread_create(&th, NULL, feed_wait_main, &w), 0);
	put_dir(a, new_ino(a), STORE_ROOT_INO, "w3");
	CHECK_EQ(pthread_join(th, NULL), 0);
	CHECK_EQ(w.ret, 1);
	CHECK(feed_now_s() - t0 < 15);

	/* and b, waiting, sees a */
	h = feed_head_of(b);
	CHECK_EQ(b->ops->feed_wait(b, h, 20), 0);
	put_dir(a, new_ino(a), STORE_ROOT_INO, "w4");
	CHECK_EQ(b->ops->feed_wait(b, h, 20000), 1);
}

/*
 * The golden tree of case_golden_merkle() (store_helpers.h), batch 1,
 * applied by @a over entries @b made first in its way: a file "a" where a
 * makes directory "a", an empty directory "b" where a makes file "b", a
 * JSON "ab.json" whose stem is a's binary "ab", and a file "\xff.json"
 * where a makes "\xff.json" too. All four are replaced, and the hashes
 * are the golden ones, as if b had never written.
 */
static inline void case_feed_merkle_races(struct store *a, struct store *b)
{
	static const char bin_x[] = {0x00, 0x01, 0x02, (char)0xfe, (char)0xff};
	struct item_meta md = meta_of(ITEM_DIR, 0), mf[9];
	struct change *c[14];
	struct store_dirhash *tree = NULL;
	size_t ntree = 0, n = 0;
	uint64_t dir_a, empty, dir_B, deep, deeper, b_ino, x;

	put_file(b, new_ino(b), STORE_ROOT_INO, "a", ITEM_BINARY, "a", 1);
	put_dir(b, new_ino(b), STORE_ROOT_INO, "b");
	put_file(b, new_ino(b), STORE_ROOT_INO, "ab.json", ITEM_JSON, "{}", 2);
	put_file(b, new_ino(b), STORE_ROOT_INO, "\xff.json", ITEM_JSON, "[]",
		 2);

	dir_a = new_ino(a);
	empty = new_ino(a);
	dir_B = new_ino(a);
	deep = new_ino(a);
	deeper = new_ino(a);
	b_ino = new_ino(a);
	x = new_ino(a);
	c[n++] = hashed_change_of(new_ino(a), deeper, "leaf.json", &mf[0],
				  ITEM_JSON, "{\"depth\":3}", 11);
	c[n++] = hashed_change_of(b_ino, STORE_ROOT_INO, "b", &mf[1],
				  ITEM_BINARY, "", 0);
	c[n++] = change_of(deeper, deep, "deeper", &md);
	c[n++] = hashed_change_of(new_ino(a), STORE_ROOT_INO, "\xff.json",
				  &mf[2], ITEM_JSON, "[1,2,3]", 7);
	c[n++] = change_of(dir_a, STORE_ROOT_INO, "a", &md);
	c[n++] = hashed_change_of(x, dir_a, "x", &mf[3], ITEM_BINARY, bin_x,
				  sizeof(bin_x));
	c[n++] = hashed_change_of(new_ino(a), STORE_ROOT_INO,
				  "\xc3\xa9t\xc3\xa9", &mf[4], ITEM_BINARY,
				  "summer", 6);
	c[n++] = change_of(deep, dir_B, "deep", &md);
	c[n++] = hashed_change_of(new_ino(a), STORE_ROOT_INO, "ab", &mf[5],
				  ITEM_BINARY, "a\0b", 3);
	c[n++] = change_of(empty, dir_a, "empty", &md);
	c[n++] = hashed_change_of(new_ino(a), deep, "mid", &mf[6], ITEM_BINARY,
				  "middle", 6);
	c[n++] = hashed_change_of(new_ino(a), STORE_ROOT_INO, "a.json", &mf[7],
				  ITEM_JSON, "{\"id\":\"a\"}", 10);
	c[n++] = change_of(dir_B, STORE_ROOT_INO, "B", &md);
	c[n++] = hashed_change_of(new_ino(a), dir_a, "y.json", &mf[8],
				  ITEM_JSON, "{\"y\":[1,2]}", 11);
	CHECK_EQ(a->ops->apply(a, c, n, &tree, &ntree), 0);
	changes_free(c, n);
	CHECK_EQ(feed_races(a), 4);
	CHECK_EQ(feed_races(b), 0);

	CHECK(tree != NULL && ntree >= 1);
	CHECK_EQ(tree[ntree - 1].ino, STORE_ROOT_INO);
	check_merkle_hex(tree[ntree - 1].merkle, GOLDEN_ROOT_1);
	free(tree);
	check_stored_merkle(b, STORE_ROOT_INO, GOLDEN_ROOT_1);
	check_stored_merkle(b, dir_a, GOLDEN_A_1);
	check_stored_merkle(b, deep, GOLDEN_DEEP);
	CHECK_EQ(lookup_ino(b, STORE_ROOT_INO, "ab.json"), -ENOENT);
	feed_check_tree(a, b);

	/* b, not knowing, removes "b" (now a's file) and the directory it
	 * made as "a": the file goes, the directory (a's, with children)
	 * stays */
	{
		struct change *d[1];

		d[0] = delete_of(b_ino);
		CHECK_EQ(apply_changes(b, d, 1), 0);
		d[0] = delete_of(dir_a);
		CHECK_EQ(apply_changes(b, d, 1), 0);
		CHECK_EQ(feed_races(b), 1);
		CHECK_EQ(lookup_ino(a, STORE_ROOT_INO, "a"), dir_a);
		CHECK_EQ(lookup_ino(a, STORE_ROOT_INO, "b"), -ENOENT);
		check_stored_merkle(a, dir_a, GOLDEN_A_1);
		feed_check_tree(a, b);
	}
}

/* A change with content applied again (a commit whose answer was lost)
 * keeps the version; the same version with other content is new. */
static inline void case_feed_replay(struct store *a, struct store *b)
{
	struct item_meta m;
	uint64_t f = new_ino(a);

	CHECK_EQ(apply_one(a, hashed_change_of(f, STORE_ROOT_INO, "f", &m,
					       ITEM_BINARY, "one", 3)),
		 0);
	CHECK_EQ(apply_one(a, hashed_change_of(f, STORE_ROOT_INO, "f", &m,
					       ITEM_BINARY, "one", 3)),
		 0);
	CHECK_EQ(feed_version(a, f), 1);
	CHECK_EQ(apply_one(b, hashed_change_of(f, STORE_ROOT_INO, "f", &m,
					       ITEM_BINARY, "two", 3)),
		 0);
	CHECK_EQ(feed_version(a, f), 2);
	check_content(a, f, "two", 3);
}

#endif
