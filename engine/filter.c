/*
 * filter.c - the negative-lookup filter: a cuckoo filter over (parent,
 * name) of every entry, filled by a builder thread that scans L3 once, and
 * trusted to answer "absent" once the scan is complete.
 */
#include "eng_int.h"

void filter_add(struct eng *e, uint64_t parent, const char *name)
{
	if (!e->filter)
		return;
	if (cuckoo_insert(e->filter, cuckoo_key(parent, name, strlen(name))) <
		    0 &&
	    !e->filter_full_logged) {
		e->filter_full_logged = true;
		eng_logf(&e->cfg.log, LOG_WARNING,
			 "the negative-lookup filter is full: lookups of "
			 "absent names query %s until the next mount",
			 e->l3->ops->name);
	}
}

void filter_del(struct eng *e, uint64_t parent, const char *name)
{
	uint64_t key = cuckoo_key(parent, name, strlen(name));

	u64map_del(&e->feed_names, key);
	if (e->filter && e->filter_trusted)
		cuckoo_delete(e->filter, key);
}

void filter_add_feed(struct eng *e, uint64_t parent, const char *name)
{
	uint64_t key = cuckoo_key(parent, name, strlen(name));

	if (!e->filter || u64map_get(&e->feed_names, key))
		return;
	if (e->feed_names.len >= FEED_NAMES_MAX) {
		u64map_release(&e->feed_names);
		u64map_init(&e->feed_names);
	}
	/* out of memory for the key: added all the same (a duplicate costs
	 * room only) */
	u64map_put(&e->feed_names, key, (void *)1);
	filter_add(e, parent, name);
}

/* true when the filter proves that @dir has no entry @name. */
bool filter_absent(struct eng *e, uint64_t dir, const char *name)
{
	if (!e->filter || !e->filter_trusted ||
	    cuckoo_contains(e->filter, cuckoo_key(dir, name, strlen(name))))
		return false;
	e->filter_negatives++;
	return true;
}

#define SCAN_PAGE 1024

/* The builder thread: scans every entry of L3 into the filter, a page at a
 * time (the lock is taken per page only), then marks it trusted. */
static void *builder_main(void *arg)
{
	struct eng *e = arg;
	struct store_key *keys = calloc(SCAN_PAGE, sizeof(*keys));
	uint64_t after = 0, total = 0, t0 = mono_ns(), epoch;
	int n = 0;

	pthread_mutex_lock(&e->lock);
	epoch = e->filter_epoch;
	pthread_mutex_unlock(&e->lock);
	if (!keys)
		goto out;
scan:
	for (;;) {
		struct tier_call c;

		n = tier_enter(e, &c, OP_L3_SCAN, NULL, false);
		if (n == 0)
			n = e->l3->ops->scan(e->l3, after, keys, SCAN_PAGE);
		n = tier_leave(e, &c, n);
		if (n <= 0)
			break;
		pthread_mutex_lock(&e->lock);
		for (int i = 0; i < n; i++)
			filter_add(e, keys[i].parent, keys[i].name);
		bool stop = e->stopping;
		pthread_mutex_unlock(&e->lock);
		if (stop) {
			n = 0;
			goto out;
		}
		after = keys[n - 1].ino;
		total += (uint64_t)n;
		if (total % (100 * SCAN_PAGE) == 0)
			eng_logf(&e->cfg.log, LOG_INFO,
				 "negative-lookup filter: %llu names read",
				 (unsigned long long)total);
	}
	if (n < 0) {
		eng_logf(&e->cfg.log, LOG_WARNING,
			 "cannot build the negative-lookup filter: %s: lookups "
			 "of absent names query %s",
			 strerror(-n), e->l3->ops->name);
		goto out;
	}
	pthread_mutex_lock(&e->lock);
	if (epoch != e->filter_epoch) {
		/* names may have been missed meanwhile: scan again */
		epoch = e->filter_epoch;
		pthread_mutex_unlock(&e->lock);
		after = 0;
		goto scan;
	}
	e->filter_trusted = true;
	pthread_mutex_unlock(&e->lock);
	if (mono_ns() - t0 > 1000000000ull || total >= 100 * SCAN_PAGE)
		eng_logf(&e->cfg.log, LOG_INFO,
			 "negative-lookup filter ready: %llu names in %.1f s",
			 (unsigned long long)total,
			 (double)(mono_ns() - t0) / 1e9);
out:
	free(keys);
	pthread_mutex_lock(&e->lock);
	e->builder_running = false;
	pthread_mutex_unlock(&e->lock);
	return NULL;
}

/* Sizes the filter for a store of @entries and starts its builder. A
 * store that cannot scan, or no memory, leaves the engine without a
 * filter. */
void filter_start(struct eng *e, uint64_t entries)
{
	size_t cap;

	if (!e->l3->ops->scan)
		return;
	cap = entries * 2 + (1u << 20); /* room to grow before a remount */
	e->filter = cuckoo_new(cap);
	if (!e->filter)
		return;
	e->builder_running = true;
	if (pthread_create(&e->builder, NULL, builder_main, e) == 0)
		e->builder_started = true;
	else
		e->builder_running = false;
}

void filter_restart(struct eng *e)
{
	if (!e->filter)
		return;
	e->filter_trusted = false;
	e->filter_epoch++;
	if (e->builder_running || e->stopping)
		return; /* it sees the new epoch before it trusts the filter */
	if (e->builder_started) {
		pthread_join(e->builder, NULL); /* it has returned */
		e->builder_started = false;
	}
	e->builder_running = true;
	if (pthread_create(&e->builder, NULL, builder_main, e) == 0)
		e->builder_started = true;
	else
		e->builder_running = false;
}

void eng_get_counters(struct eng *e, struct eng_counters *out)
{
	pthread_mutex_lock(&e->lock);
	out->l3_lookups = e->l3_lookups;
	out->filter_negatives = e->filter_negatives;
	out->filter_trusted = e->filter_trusted;
	out->filter_names = e->filter ? cuckoo_count(e->filter) : 0;
	out->quarantined = e->quarantined;
	out->dir_loads = e->snap_loads;
	out->dir_hits = e->snap_hits + e->snap_negatives;
	out->prefetched = e->prefetched;
	pthread_mutex_unlock(&e->lock);
}
