/*
 * batch.c - the coalescing queue of pending changes (see batch.h).
 *
 * Invariants: recs holds one record per ino; bytes is the sum of
 * rec_bytes() over them; oldest_ns is meaningful only while recs is
 * non-empty.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "batch.h"

static size_t rec_bytes(const struct change *r)
{
	size_t n = 64; /* the row itself */

	if (r->name)
		n += strlen(r->name);
	n += r->meta.xattrs_len;
	if (r->item)
		n += item_size(r->item);
	return n;
}

void batch_init(struct batch *b, size_t max_count, size_t max_bytes,
		uint64_t max_age_ns)
{
	u64map_init(&b->recs);
	b->max_count = max_count;
	b->max_bytes = max_bytes;
	b->max_age_ns = max_age_ns;
	b->bytes = 0;
	b->oldest_ns = 0;
}

void batch_release(struct batch *b)
{
	size_t pos = 0;
	uint64_t key;
	void *val;

	if (!b)
		return;
	while (u64map_next(&b->recs, &pos, &key, &val))
		change_free(val);
	u64map_release(&b->recs);
	b->bytes = 0;
}

/* Lets @newer take over @older's content when it has none of its own. */
static void inherit(struct change *newer, struct change *older)
{
	if (!newer->deleted && !newer->item && older->item) {
		newer->item = older->item;
		older->item = NULL;
	}
}

int batch_add(struct batch *b, struct change *r, uint64_t now_ns)
{
	struct change *old = u64map_get(&b->recs, r->ino);
	int ret;

	if (old) {
		b->bytes -= rec_bytes(old);
		inherit(r, old);
	}
	ret = u64map_put(&b->recs, r->ino, r);
	if (ret < 0) {
		/* The old record is still in the map: keep it, drop @r. */
		if (old) {
			inherit(old, r);
			b->bytes += rec_bytes(old);
		}
		change_free(r);
		return ret;
	}
	if (!old && b->recs.len == 1)
		b->oldest_ns = now_ns;
	b->bytes += rec_bytes(r);
	change_free(old);
	return 0;
}

const struct change *batch_find(const struct batch *b, uint64_t ino)
{
	return u64map_get(&b->recs, ino);
}

size_t batch_count(const struct batch *b)
{
	return b->recs.len;
}

size_t batch_bytes(const struct batch *b)
{
	return b->bytes;
}

uint64_t batch_deadline(const struct batch *b)
{
	if (!b->recs.len)
		return UINT64_MAX;
	return b->oldest_ns + b->max_age_ns;
}

bool batch_due(const struct batch *b, uint64_t now_ns)
{
	if (!b->recs.len)
		return false;
	return b->recs.len >= b->max_count || b->bytes >= b->max_bytes ||
	       now_ns >= batch_deadline(b);
}

ssize_t batch_take(struct batch *b, struct change ***out)
{
	struct change **arr;
	size_t pos = 0, n = 0;
	uint64_t key;
	void *val;

	if (!b->recs.len) {
		*out = NULL;
		return 0;
	}
	arr = malloc(b->recs.len * sizeof(*arr));
	if (!arr)
		return -ENOMEM;
	while (u64map_next(&b->recs, &pos, &key, &val))
		arr[n++] = val;
	u64map_release(&b->recs);
	b->bytes = 0;
	*out = arr;
	return (ssize_t)n;
}

size_t batch_requeue(struct batch *b, struct change **recs, size_t n,
		     uint64_t now_ns)
{
	size_t dropped = 0;

	for (size_t i = 0; i < n; i++) {
		struct change *r = recs[i];
		struct change *newer = u64map_get(&b->recs, r->ino);

		if (newer) {
			b->bytes -= rec_bytes(newer);
			inherit(newer, r);
			b->bytes += rec_bytes(newer);
			change_free(r);
			continue;
		}
		if (u64map_put(&b->recs, r->ino, r) < 0) {
			change_free(r); /* out of memory: cannot keep it */
			dropped++;
			continue;
		}
		if (b->recs.len == 1)
			b->oldest_ns = now_ns;
		b->bytes += rec_bytes(r);
	}
	return dropped;
}
