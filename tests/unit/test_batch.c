/*
 * test_batch.c - unit tests of the batch queue (engine/batch.c).
 *
 * Thresholds (count, bytes, age, checked with explicit now_ns values, no
 * clock), the deadline, coalescing (one record per ino: the newest wins, a
 * delete beats a write, a metadata-only record inherits the content of the
 * record it replaces), batch_take() and batch_requeue(), and the byte
 * accounting. A sanitizer build checks that every record and item is freed
 * exactly once.
 *
 * Exit status: 0 passed, 1 failed.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "batch.h"
#include "check.h"

#define BIG ((size_t)1 << 40)
#define NEVER ((uint64_t)1 << 62)

static struct item *make_item(size_t size, char fill)
{
	struct item_meta m;
	char *buf = malloc(size ? size : 1);
	struct item *it;

	CHECK(buf != NULL);
	memset(buf, fill, size);
	memset(&m, 0, sizeof(m));
	m.kind = ITEM_BINARY;
	m.mode = S_IFREG | 0644;
	it = item_new_take("b", buf, size, &m);
	CHECK(it != NULL);
	return it;
}

/* A record that sets @ino to @name with @content (a new reference is
 * taken; NULL: metadata only) and mode @mode. */
static struct change *rec_set(uint64_t ino, uint64_t seq, const char *name,
			      struct item *content, uint32_t mode)
{
	struct item_meta m = {.kind = ITEM_BINARY, .mode = S_IFREG | mode};
	struct change *r;

	m.size = content ? item_size(content) : 0;
	r = change_new_put(ino, 1, name, &m, content);
	CHECK(r != NULL);
	r->seq = seq;
	return r;
}

static struct change *rec_del(uint64_t ino, uint64_t seq)
{
	struct change *r = change_new_del(ino);

	CHECK(r != NULL);
	r->seq = seq;
	return r;
}

/* The bytes a queue holding just @r counts (measured, not assumed). */
static size_t bytes_of(struct change *r)
{
	struct batch b;
	size_t n;

	batch_init(&b, BIG, BIG, NEVER);
	CHECK_EQ(batch_add(&b, r, 0), 0);
	n = batch_bytes(&b);
	batch_release(&b);
	return n;
}

static void free_taken(struct change **recs, ssize_t n)
{
	for (ssize_t i = 0; i < n; i++)
		change_free(recs[i]);
	free(recs);
}

/* Checks that an empty queue says so everywhere. */
static void check_empty(struct batch *b)
{
	CHECK_EQ(batch_count(b), 0);
	CHECK_EQ(batch_bytes(b), 0);
	CHECK(!batch_due(b, 0));
	CHECK(!batch_due(b, UINT64_MAX));
	CHECK(batch_deadline(b) == UINT64_MAX);
}

/* ---- thresholds ---- */

static void test_empty(void)
{
	struct batch b;
	struct change **recs = (struct change **)&b; /* not touched */

	batch_init(&b, 1, 1, 0); /* every threshold at its lowest */
	check_empty(&b);
	CHECK(batch_find(&b, 1) == NULL);
	CHECK_EQ(batch_take(&b, &recs), 0);
	check_empty(&b);
	batch_requeue(&b, NULL, 0, 5);
	check_empty(&b);
	batch_release(&b);
	batch_release(NULL);
	change_free(NULL);
}

static void test_count_threshold(void)
{
	struct batch b;

	batch_init(&b, 3, BIG, 1000);
	CHECK_EQ(batch_add(&b, rec_set(1, 1, "a", NULL, 0644), 100), 0);
	CHECK(!batch_due(&b, 100));
	CHECK_EQ(batch_add(&b, rec_set(2, 2, "b", NULL, 0644), 200), 0);
	CHECK(!batch_due(&b, 200));
	/* a second record of one ino is no new record */
	CHECK_EQ(batch_add(&b, rec_set(2, 3, "b", NULL, 0600), 300), 0);
	CHECK_EQ(batch_count(&b), 2);
	CHECK(!batch_due(&b, 300));
	CHECK_EQ(batch_add(&b, rec_del(3, 4), 400), 0);
	CHECK_EQ(batch_count(&b), 3);
	CHECK(batch_due(&b, 400)); /* max_count records */
	CHECK(batch_due(&b, 0));   /* whatever the time */
	batch_release(&b);

	/* max_count 1: due at the first record */
	batch_init(&b, 1, BIG, NEVER);
	CHECK(!batch_due(&b, 5));
	CHECK_EQ(batch_add(&b, rec_del(9, 1), 5), 0);
	CHECK(batch_due(&b, 5));
	batch_release(&b);
}

static void test_bytes_threshold(void)
{
	struct item *it = make_item(1000, 'x');
	struct item *small = make_item(10, 's');
	size_t one = bytes_of(rec_set(1, 1, "file", it, 0644));
	size_t tiny = bytes_of(rec_set(2, 1, "f", small, 0644));
	struct batch b;

	/* bytes count content, names and xattrs */
	CHECK(one >= 1000 + 4);
	CHECK(tiny < one);

	/* exactly max_bytes: due; one byte short of it: not due */
	batch_init(&b, BIG, one, NEVER);
	CHECK_EQ(batch_add(&b, rec_set(1, 1, "file", it, 0644), 0), 0);
	CHECK_EQ(batch_bytes(&b), one);
	CHECK(batch_due(&b, 0));
	batch_release(&b);

	batch_init(&b, BIG, one + 1, NEVER);
	CHECK_EQ(batch_add(&b, rec_set(1, 1, "file", it, 0644), 0), 0);
	CHECK(!batch_due(&b, 0));
	/* a second record takes it over */
	CHECK_EQ(batch_add(&b, rec_set(2, 2, "f", small, 0644), 0), 0);
	CHECK_EQ(batch_bytes(&b), one + tiny);
	CHECK(batch_due(&b, 0));
	batch_release(&b);

	/* a name and xattrs count too */
	{
		struct change *r = rec_set(3, 1, "file", it, 0644);
		char longname[200];
		size_t with;

		memset(longname, 'n', sizeof(longname) - 1);
		longname[sizeof(longname) - 1] = '\0';
		free(r->name);
		r->name = strdup(longname);
		CHECK(r->name != NULL);
		CHECK_EQ(
			item_xattr_set(&r->meta, "user.k", "0123456789", 10, 0),
			0);
		with = bytes_of(r);
		CHECK(with >= one + 195 + 10);
	}
	item_unref(it);
	item_unref(small);
}

static void test_age_threshold(void)
{
	struct batch b;
	struct change **recs;
	ssize_t n;

	batch_init(&b, BIG, BIG, 1000);
	CHECK(batch_deadline(&b) == UINT64_MAX);
	CHECK_EQ(batch_add(&b, rec_del(1, 1), 5000), 0);
	CHECK_EQ(batch_deadline(&b), 6000);
	CHECK(!batch_due(&b, 5000));
	CHECK(!batch_due(&b, 5999));
	CHECK(batch_due(&b, 6000)); /* now >= oldest + max_age */
	CHECK(batch_due(&b, 7000));
	/* later records and replacements do not move the oldest */
	CHECK_EQ(batch_add(&b, rec_del(2, 2), 5500), 0);
	CHECK_EQ(batch_add(&b, rec_set(1, 3, "x", NULL, 0644), 5900), 0);
	CHECK_EQ(batch_deadline(&b), 6000);
	CHECK(!batch_due(&b, 5999));
	CHECK(batch_due(&b, 6000));

	/* after a take the age counts from the next first record */
	n = batch_take(&b, &recs);
	CHECK_EQ(n, 2);
	free_taken(recs, n);
	check_empty(&b);
	CHECK_EQ(batch_add(&b, rec_del(3, 4), 9000), 0);
	CHECK_EQ(batch_deadline(&b), 10000);
	CHECK(!batch_due(&b, 9999));
	CHECK(batch_due(&b, 10000));
	batch_release(&b);

	/* max_age 0: due at once */
	batch_init(&b, BIG, BIG, 0);
	CHECK_EQ(batch_add(&b, rec_del(1, 1), 77), 0);
	CHECK_EQ(batch_deadline(&b), 77);
	CHECK(batch_due(&b, 77));
	batch_release(&b);
}

/* ---- coalescing ---- */

static void test_coalesce_writes(void)
{
	struct item *a = make_item(100, 'a'), *bb = make_item(300, 'b');
	const struct change *r;
	struct batch b;
	size_t want = bytes_of(rec_set(7, 2, "f", bb, 0644));
	struct change **recs;
	ssize_t n;

	batch_init(&b, BIG, BIG, NEVER);
	CHECK_EQ(batch_add(&b, rec_set(7, 1, "f", a, 0644), 0), 0);
	CHECK_EQ(batch_add(&b, rec_set(7, 2, "f", bb, 0644), 1), 0);
	CHECK_EQ(batch_count(&b), 1);
	r = batch_find(&b, 7);
	CHECK(r != NULL);
	CHECK_EQ(r->seq, 2);
	CHECK(r->item == bb);
	/* the replaced record's bytes are gone */
	CHECK_EQ(batch_bytes(&b), want);

	n = batch_take(&b, &recs);
	CHECK_EQ(n, 1);
	CHECK_EQ(recs[0]->ino, 7);
	CHECK_EQ(recs[0]->seq, 2);
	CHECK(recs[0]->item == bb);
	CHECK(!recs[0]->deleted);
	free_taken(recs, n);
	check_empty(&b);
	batch_release(&b);
	/* the queue dropped its references: ours are the last */
	CHECK(memcmp(item_data(a), "aaaa", 4) == 0);
	item_unref(a);
	item_unref(bb);
}

static void test_delete_beats_write(void)
{
	struct item *a = make_item(500, 'a');
	const struct change *r;
	struct batch b;
	struct change **recs;
	size_t want = bytes_of(rec_del(7, 2));
	ssize_t n;

	batch_init(&b, BIG, BIG, NEVER);
	CHECK_EQ(batch_add(&b, rec_set(7, 1, "f", a, 0644), 0), 0);
	CHECK_EQ(batch_add(&b, rec_set(7, 2, "f", NULL, 0600), 0), 0);
	CHECK_EQ(batch_add(&b, rec_del(7, 3), 0), 0);
	CHECK_EQ(batch_count(&b), 1);
	r = batch_find(&b, 7);
	CHECK(r != NULL);
	CHECK(r->deleted);
	CHECK_EQ(r->seq, 3);
	CHECK(r->item == NULL);
	CHECK_EQ(batch_bytes(&b), want);
	CHECK(want < 500);

	n = batch_take(&b, &recs);
	CHECK_EQ(n, 1);
	CHECK(recs[0]->deleted);
	CHECK(recs[0]->item == NULL);
	CHECK_EQ(recs[0]->seq, 3);
	free_taken(recs, n);
	check_empty(&b);
	batch_release(&b);
	item_unref(a);
}

static void test_meta_inherits_content(void)
{
	struct item *a = make_item(200, 'a'), *c = make_item(50, 'c');
	const struct change *r;
	struct batch b;
	struct change **recs;
	ssize_t n;

	batch_init(&b, BIG, BIG, NEVER);
	/* write, then chmod: both persist */
	CHECK_EQ(batch_add(&b, rec_set(7, 1, "f", a, 0644), 0), 0);
	CHECK_EQ(batch_add(&b, rec_set(7, 2, "f", NULL, 0600), 0), 0);
	r = batch_find(&b, 7);
	CHECK(r != NULL);
	CHECK_EQ(r->seq, 2);
	CHECK(r->item == a);
	CHECK_EQ(r->meta.mode, S_IFREG | 0600);
	/* the inherited content is counted once */
	CHECK_EQ(batch_bytes(&b), bytes_of(rec_set(7, 2, "f", a, 0600)));
	/* and again: a rename (new name, no content) keeps it */
	CHECK_EQ(batch_add(&b, rec_set(7, 3, "g", NULL, 0600), 0), 0);
	r = batch_find(&b, 7);
	CHECK(r->item == a);
	CHECK_STREQ(r->name, "g");
	CHECK_EQ(r->seq, 3);
	/* new content replaces the inherited one */
	CHECK_EQ(batch_add(&b, rec_set(7, 4, "g", c, 0600), 0), 0);
	r = batch_find(&b, 7);
	CHECK(r->item == c);
	CHECK_EQ(batch_count(&b), 1);

	/* other inos are untouched */
	CHECK_EQ(batch_add(&b, rec_set(8, 5, "h", NULL, 0644), 0), 0);
	CHECK(batch_find(&b, 8)->item == NULL);
	CHECK(batch_find(&b, 7)->item == c);

	n = batch_take(&b, &recs);
	CHECK_EQ(n, 2);
	for (ssize_t i = 0; i < n; i++) {
		if (recs[i]->ino == 7)
			CHECK(recs[i]->item == c && recs[i]->seq == 4);
		else
			CHECK(recs[i]->ino == 8 && recs[i]->item == NULL);
	}
	free_taken(recs, n);
	batch_release(&b);
	item_unref(a);
	item_unref(c);
}

/* ---- take ---- */

static void test_take_all(void)
{
	enum { N = 500 };
	struct item *it = make_item(10, 'i');
	struct batch b;
	struct change **recs;
	bool seen[N + 1] = {false};
	ssize_t n;

	batch_init(&b, BIG, BIG, NEVER);
	for (uint64_t ino = 1; ino <= N; ino++) {
		struct change *r =
			ino % 3 == 0 ? rec_del(ino, ino)
				     : rec_set(ino, ino, "n",
					       ino % 3 == 1 ? it : NULL, 0644);

		CHECK_EQ(batch_add(&b, r, ino), 0);
	}
	CHECK_EQ(batch_count(&b), N);
	CHECK(batch_bytes(&b) > 0);
	n = batch_take(&b, &recs);
	CHECK_EQ(n, N);
	for (ssize_t i = 0; i < n; i++) {
		uint64_t ino = recs[i]->ino;

		CHECK(ino >= 1 && ino <= N);
		CHECK(!seen[ino]);
		seen[ino] = true;
		CHECK_EQ(recs[i]->seq, ino);
		CHECK(recs[i]->deleted == (ino % 3 == 0));
		CHECK(recs[i]->item == (ino % 3 == 1 ? it : NULL));
	}
	check_empty(&b);
	for (uint64_t ino = 1; ino <= N; ino++)
		CHECK(batch_find(&b, ino) == NULL);
	free_taken(recs, n);

	/* the queue works again after a take */
	CHECK_EQ(batch_add(&b, rec_set(1, 600, "again", it, 0644), 1), 0);
	CHECK_EQ(batch_count(&b), 1);
	CHECK(batch_find(&b, 1)->seq == 600);
	batch_release(&b);
	item_unref(it);
}

/* ---- requeue ---- */

static void test_requeue(void)
{
	struct item *a = make_item(100, 'a'), *bi = make_item(200, 'b');
	struct item *c = make_item(300, 'c'), *d = make_item(400, 'd');
	const struct change *r;
	struct batch b;
	struct change **recs, **again;
	size_t bytes_before, bytes_alone;
	ssize_t n, m;

	batch_init(&b, BIG, BIG, 1000);
	CHECK_EQ(batch_add(&b, rec_set(1, 1, "one", a, 0644), 10), 0);
	CHECK_EQ(batch_add(&b, rec_set(2, 2, "two", bi, 0644), 10), 0);
	CHECK_EQ(batch_add(&b, rec_del(3, 3), 10), 0);
	CHECK_EQ(batch_add(&b, rec_set(4, 4, "four", d, 0644), 10), 0);
	CHECK_EQ(batch_add(&b, rec_set(5, 5, "five", NULL, 0644), 10), 0);
	bytes_before = batch_bytes(&b);
	n = batch_take(&b, &recs);
	CHECK_EQ(n, 5);
	check_empty(&b);

	/* while the batch was out: newer changes of inos 1, 2 and 4 */
	CHECK_EQ(batch_add(&b, rec_set(1, 6, "one", NULL, 0600), 20), 0);
	CHECK_EQ(batch_add(&b, rec_set(2, 7, "two", c, 0644), 20), 0);
	CHECK_EQ(batch_add(&b, rec_del(4, 8), 20), 0);
	/* the batch failed: give it back */
	batch_requeue(&b, recs, (size_t)n, 30);
	free(recs);

	CHECK_EQ(batch_count(&b), 5);
	/* ino 1: the newer meta-only record wins and inherits the content */
	r = batch_find(&b, 1);
	CHECK(r != NULL);
	CHECK_EQ(r->seq, 6);
	CHECK_EQ(r->meta.mode, S_IFREG | 0600);
	CHECK(r->item == a);
	/* ino 2: the newer content wins */
	r = batch_find(&b, 2);
	CHECK_EQ(r->seq, 7);
	CHECK(r->item == c);
	/* ino 3: back as it was */
	r = batch_find(&b, 3);
	CHECK(r != NULL && r->deleted && r->seq == 3);
	/* ino 4: the newer delete wins and carries no content */
	r = batch_find(&b, 4);
	CHECK(r != NULL && r->deleted && r->seq == 8);
	CHECK(r->item == NULL);
	/* ino 5: back as it was */
	r = batch_find(&b, 5);
	CHECK(r != NULL && !r->deleted && r->seq == 5 && r->item == NULL);
	/* back in the queue, the records are due again in time */
	CHECK(batch_deadline(&b) != UINT64_MAX);
	CHECK(batch_due(&b, 30 + 1000));

	/* bytes: what the five final records count on their own */
	{
		struct batch alone;

		batch_init(&alone, BIG, BIG, NEVER);
		CHECK_EQ(batch_add(&alone, rec_set(1, 6, "one", a, 0600), 0),
			 0);
		CHECK_EQ(batch_add(&alone, rec_set(2, 7, "two", c, 0644), 0),
			 0);
		CHECK_EQ(batch_add(&alone, rec_del(3, 3), 0), 0);
		CHECK_EQ(batch_add(&alone, rec_del(4, 8), 0), 0);
		CHECK_EQ(
			batch_add(&alone, rec_set(5, 5, "five", NULL, 0644), 0),
			0);
		bytes_alone = batch_bytes(&alone);
		batch_release(&alone);
	}
	CHECK_EQ(batch_bytes(&b), bytes_alone);
	CHECK(bytes_before > 0);

	/* take again: everything, and the bytes go back to 0 */
	m = batch_take(&b, &again);
	CHECK_EQ(m, 5);
	check_empty(&b);
	free_taken(again, m);

	/* a requeue into an empty queue restores every record */
	CHECK_EQ(batch_add(&b, rec_set(9, 10, "nine", d, 0644), 40), 0);
	n = batch_take(&b, &recs);
	CHECK_EQ(n, 1);
	batch_requeue(&b, recs, 1, 50);
	free(recs);
	CHECK_EQ(batch_count(&b), 1);
	CHECK(batch_find(&b, 9)->item == d);
	CHECK_EQ(batch_bytes(&b), bytes_of(rec_set(9, 10, "nine", d, 0644)));
	CHECK(batch_due(&b, 50 + 1000));
	batch_release(&b);

	item_unref(a);
	item_unref(bi);
	item_unref(c);
	item_unref(d);
}

int main(void)
{
	test_empty();
	test_count_threshold();
	test_bytes_threshold();
	test_age_threshold();
	test_coalesce_writes();
	test_delete_beats_write();
	test_meta_inherits_content();
	test_take_all();
	test_requeue();
	printf("test_batch: ok\n");
	return 0;
}
