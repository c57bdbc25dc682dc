/*
 * l1.c - byte-bounded LRU item cache with pinning.
 *
 * One mutex protects a hash map (key -> entry) and an intrusive LRU list of
 * the unpinned entries (most recent at the head). Pinned entries are off the
 * list, so eviction, which takes from the tail, can never reach them.
 * Invariant: bytes == sum of item sizes of all entries; pinned_bytes the
 * same over pinned entries; after every put, bytes - pinned_bytes <= max or
 * the list is empty.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "l1.h"
#include "u64map.h"

struct l1_entry {
	uint64_t key;
	struct item *item;
	bool pinned;
	struct l1_entry *prev, *next; /* LRU links, unpinned entries only */
};

struct l1 {
	pthread_mutex_t lock;
	struct u64map map;     /* protected by lock */
	struct l1_entry *head; /* most recently used; protected by lock */
	struct l1_entry *tail;
	size_t max_bytes;
	size_t bytes, pinned_bytes;
	uint64_t hits, misses, evictions;
};

struct l1 *l1_new(size_t max_bytes)
{
	struct l1 *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	pthread_mutex_init(&c->lock, NULL);
	u64map_init(&c->map);
	c->max_bytes = max_bytes;
	return c;
}

static void lru_unlink(struct l1 *c, struct l1_entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		c->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_push_head(struct l1 *c, struct l1_entry *e)
{
	e->prev = NULL;
	e->next = c->head;
	if (c->head)
		c->head->prev = e;
	c->head = e;
	if (!c->tail)
		c->tail = e;
}

/* Unlinks @e from everything and frees it. Caller holds the lock. */
static void entry_drop(struct l1 *c, struct l1_entry *e)
{
	size_t sz = item_size(e->item);

	u64map_del(&c->map, e->key);
	if (e->pinned)
		c->pinned_bytes -= sz;
	else
		lru_unlink(c, e);
	c->bytes -= sz;
	item_unref(e->item);
	free(e);
}

static void evict(struct l1 *c)
{
	while (c->tail && c->bytes - c->pinned_bytes > c->max_bytes) {
		entry_drop(c, c->tail);
		c->evictions++;
	}
}

void l1_free(struct l1 *c)
{
	size_t pos = 0;
	uint64_t key;
	void *val;

	if (!c)
		return;
	while (u64map_next(&c->map, &pos, &key, &val)) {
		struct l1_entry *e = val;

		item_unref(e->item);
		free(e);
	}
	u64map_release(&c->map);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

struct item *l1_get(struct l1 *c, uint64_t key)
{
	struct l1_entry *e;
	struct item *it = NULL;

	pthread_mutex_lock(&c->lock);
	e = u64map_get(&c->map, key);
	if (e) {
		it = item_ref(e->item);
		if (!e->pinned) {
			lru_unlink(c, e);
			lru_push_head(c, e);
		}
		c->hits++;
	} else {
		c->misses++;
	}
	pthread_mutex_unlock(&c->lock);
	return it;
}

bool l1_holds(struct l1 *c, uint64_t key, uint64_t version)
{
	struct l1_entry *e;
	bool r;

	pthread_mutex_lock(&c->lock);
	e = u64map_get(&c->map, key);
	r = e && item_meta(e->item)->version == version;
	pthread_mutex_unlock(&c->lock);
	return r;
}

int l1_put(struct l1 *c, uint64_t key, struct item *it, bool pinned)
{
	struct l1_entry *e, *old;
	int r = 0;

	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->key = key;
	e->item = item_ref(it);
	e->pinned = pinned;

	pthread_mutex_lock(&c->lock);
	old = u64map_get(&c->map, key);
	if (old)
		entry_drop(c, old);
	if (!pinned && item_size(it) > c->max_bytes)
		goto out_unlock_free; /* would evict everything else */
	r = u64map_put(&c->map, key, e);
	if (r < 0)
		goto out_unlock_free;
	c->bytes += item_size(it);
	if (pinned)
		c->pinned_bytes += item_size(it);
	else
		lru_push_head(c, e);
	evict(c);
	pthread_mutex_unlock(&c->lock);
	return 0;

out_unlock_free:
	pthread_mutex_unlock(&c->lock);
	item_unref(e->item);
	free(e);
	return r;
}

void l1_unpin(struct l1 *c, uint64_t key, const struct item *it)
{
	struct l1_entry *e;

	pthread_mutex_lock(&c->lock);
	e = u64map_get(&c->map, key);
	if (e && e->pinned && e->item == it) {
		e->pinned = false;
		c->pinned_bytes -= item_size(e->item);
		lru_push_head(c, e);
		evict(c);
	}
	pthread_mutex_unlock(&c->lock);
}

void l1_remove(struct l1 *c, uint64_t key)
{
	struct l1_entry *e;

	pthread_mutex_lock(&c->lock);
	e = u64map_get(&c->map, key);
	if (e)
		entry_drop(c, e);
	pthread_mutex_unlock(&c->lock);
}

void l1_get_stats(struct l1 *c, struct l1_stats *out)
{
	pthread_mutex_lock(&c->lock);
	out->bytes = c->bytes;
	out->pinned_bytes = c->pinned_bytes;
	out->count = c->map.len;
	out->hits = c->hits;
	out->misses = c->misses;
	out->evictions = c->evictions;
	pthread_mutex_unlock(&c->lock);
}
