/*
 * engine.c - the engine's life: configuration defaults, eng_open() (the
 * log's lock, the stores, replay, the threads) and eng_close(), the list of
 * open handles, and eng_sync().
 */
#include <sys/file.h>

#include "eng_int.h"

void handle_link(struct eng *e, struct handle_link *h)
{
	h->prev = &e->handles;
	h->next = e->handles.next;
	e->handles.next->prev = h;
	e->handles.next = h;
}

void handle_unlink(struct handle_link *h)
{
	h->prev->next = h->next;
	h->next->prev = h->prev;
	h->prev = h->next = h;
}


void eng_config_init(struct eng_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->l1_max_bytes = 256u << 20;
	cfg->batch_flush_count = 1000;
	cfg->batch_flush_bytes = 1u << 20;
	cfg->batch_flush_ms = 100;
	cfg->max_item_bytes = 16u << 20;
	cfg->wal_max_bytes = 1ull << 30;
	cfg->force_uid = cfg->force_gid = -1;
	cfg->force_file_mode = cfg->force_dir_mode = -1;
}

/* Reads L3's counts into the statfs counters. */
static int count_store(struct eng *e, uint64_t *entries)
{
	uint64_t bytes;
	struct tier_call c;
	int r = tier_enter(e, &c, OP_L3_STATS, NULL, false);

	if (r == 0)
		r = e->l3->ops->stats(e->l3, entries, &bytes);
	r = tier_leave(e, &c, r);
	if (r < 0)
		return r;
	e->fs_entries = (int64_t)*entries;
	e->fs_bytes = (int64_t)bytes;
	return 0;
}

static int load_root(struct eng *e)
{
	struct store_row row;
	struct node *root;
	struct tier_call c;
	int r = tier_enter(e, &c, OP_L3_GET, NULL, false);

	if (r == 0)
		r = e->l3->ops->get(e->l3, STORE_ROOT_INO, &row);
	r = tier_leave(e, &c, r);

	if (r < 0)
		return r;
	root = node_add(e, NULL, STORE_ROOT_INO, "", &row.meta);
	store_row_release(&row);
	if (!root)
		return -ENOMEM;
	root->nlookup = 1; /* the kernel's implicit reference */
	return 0;
}

/* Creates the log directory and takes its lock: one engine per log. */
static int lock_wal_dir(struct eng *e, const char *dir)
{
	char path[4096 + 8];

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		int r = -errno;

		eng_logf(&e->cfg.log, LOG_ERR, "cannot create '%s': %s", dir,
			 strerror(errno));
		return r;
	}
	snprintf(path, sizeof(path), "%s/lock", dir);
	e->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (e->lock_fd < 0) {
		int r = -errno;

		eng_logf(&e->cfg.log, LOG_ERR, "cannot open '%s': %s", path,
			 strerror(errno));
		return r;
	}
	if (flock(e->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		eng_logf(&e->cfg.log, LOG_ERR,
			 "the store is in use: another tierfs holds '%s'",
			 path);
		return -EBUSY;
	}
	return 0;
}

int eng_open(const struct eng_config *cfg, struct eng **out)
{
	pthread_condattr_t ca;
	struct store_config stores = {
		.postgres = cfg->postgres,
		.sqlite_path = cfg->sqlite_path,
		.redis = cfg->redis,
		.redis_prefix = cfg->redis_prefix,
		.redis_optional = true,
		.must_exist = cfg->must_exist,
		.feed_keep_seconds = cfg->feed_keep_seconds,
		.feed_keep_records = cfg->feed_keep_records,
	};
	uint64_t entries, first;
	char wal_dir[4096];
	struct eng *e;
	int r;

	if (!(cfg->postgres ? cfg->wal_path : cfg->sqlite_path) ||
	    !cfg->batch_flush_count || !cfg->batch_flush_bytes ||
	    !cfg->max_item_bytes || cfg->max_item_bytes > (1u << 30) ||
	    !cfg->wal_max_bytes)
		return -EINVAL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->cfg = *cfg;
	if (!e->cfg.max_open_bytes)
		e->cfg.max_open_bytes =
			(uint64_t)e->cfg.max_item_bytes * 4 > (1ull << 30)
				? (uint64_t)e->cfg.max_item_bytes * 4
				: 1ull << 30;
	e->lock_fd = -1;
	e->handles.prev = e->handles.next = &e->handles;
	pthread_mutex_init(&e->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&e->flush_cond, &ca);
	pthread_cond_init(&e->commit_cond, &ca);
	pthread_cond_init(&e->sync_cond, &ca);
	pthread_cond_init(&e->ino_cond, &ca);
	pthread_cond_init(&e->dir_cond, &ca);
	pthread_condattr_destroy(&ca);
	breaker_init(&e->l2_breaker, L2_BREAKER_FAILS, L2_BREAKER_COOLDOWN_NS);
	breaker_init(&e->l3_breaker, L3_BREAKER_FAILS, L3_BREAKER_COOLDOWN_NS);
	u64map_init(&e->nodes);
	u64map_init(&e->feed_lost);
	u64map_init(&e->names);
	u64map_init(&e->too_big);
	u64map_init(&e->feed_names);
	u64map_init(&e->snaps);
	u64map_init(&e->snap_inos);
	batch_init(&e->batch, cfg->batch_flush_count, cfg->batch_flush_bytes,
		   (uint64_t)cfg->batch_flush_ms * 1000000);

	if (cfg->wal_path)
		snprintf(wal_dir, sizeof(wal_dir), "%s", cfg->wal_path);
	else
		snprintf(wal_dir, sizeof(wal_dir), "%s.tierfs-wal",
			 cfg->sqlite_path);
	e->l1 = l1_new(cfg->l1_max_bytes);
	e->wal_dir = strdup(wal_dir);
	if (!e->l1 || !e->wal_dir) {
		r = -ENOMEM;
		goto out_close;
	}
	r = lock_wal_dir(e, wal_dir);
	if (r < 0)
		goto out_close;
	r = wal_open(wal_dir, cfg->wal_max_bytes, &e->cfg.log,
		     &e->wal);
	if (r < 0)
		goto out_close;
	r = store_open(&stores, &e->cfg.log, &e->l3, &e->l2);
	if (r < 0)
		goto out_close;
	if (cfg->wrap_l3) {
		struct store *w = cfg->wrap_l3(e->l3, cfg->wrap_arg);

		if (!w) {
			r = -ENOMEM;
			goto out_close;
		}
		e->l3 = w;
	}
	r = replay_wal(e);
	if (r < 0)
		goto out_close;
	r = load_root(e);
	if (r < 0)
		goto out_close;
	/* A one-shot program skips the whole-store work (counting L3 and
	 * scanning it into the filter cost it more than its own calls) and
	 * follows no feed: it makes a call or two and closes. */
	if (!cfg->oneshot) {
		r = count_store(e, &entries);
		if (r < 0)
			goto out_close;
		/* the first block of inode numbers, while nothing waits */
		pthread_mutex_lock(&e->lock);
		r = ino_grant(e, 1, &first);
		if (r == 0)
			e->ino_next = first; /* not used yet */
		pthread_mutex_unlock(&e->lock);
		if (r < 0)
			goto out_close;
		/* the feed's head before the filter's scan: what commits
		 * after it reaches the filter through the feed */
		r = feed_start(e);
		if (r < 0)
			goto out_close;
		filter_start(e, entries);
	}
	r = -pthread_create(&e->flusher, NULL, flusher_main, e);
	if (r < 0)
		goto out_close;
	e->flusher_started = true;
	r = -pthread_create(&e->syncer, NULL, syncer_main, e);
	if (r < 0)
		goto out_close;
	e->syncer_started = true;
	*out = e;
	return 0;

out_close:
	eng_close(e);
	return r;
}

int eng_close(struct eng *e)
{
	size_t pos = 0;
	uint64_t key;
	void *val;
	int r = 0;

	if (!e)
		return 0;
	pthread_mutex_lock(&e->lock);
	e->stopping = true;
	pthread_cond_signal(&e->flush_cond);
	pthread_mutex_unlock(&e->lock);
	feed_stop(e);
	if (e->flusher_started) {
		pthread_join(e->flusher, NULL);
		if (e->committed_seq < e->change_seq)
			r = e->last_error ? e->last_error : -EIO;
	}
	if (e->builder_started)
		pthread_join(e->builder, NULL);
	if (e->syncer_started) {
		pthread_mutex_lock(&e->lock);
		pthread_cond_signal(&e->sync_cond);
		pthread_mutex_unlock(&e->lock);
		pthread_join(e->syncer, NULL);
	}
	/* handles nobody released (only the handles: nodes go below) */
	while (e->handles.next && e->handles.next != &e->handles) {
		struct handle_link *h = e->handles.next;

		handle_unlink(h);
		if (h->release)
			h->release(h);
		free(h); /* the link is the first member of both kinds */
	}
	snap_forget_all(e);
	u64map_release(&e->snaps);
	u64map_release(&e->snap_inos);
	while (u64map_next(&e->nodes, &pos, &key, &val))
		node_destroy(val);
	u64map_release(&e->nodes);
	u64map_release(&e->feed_lost);
	u64map_release(&e->names);
	u64map_release(&e->too_big);
	u64map_release(&e->feed_names);
	batch_release(&e->batch);
	l1_free(e->l1);
	cuckoo_free(e->filter);
	store_free(e->l3);
	cache_free(e->l2);
	breaker_release(&e->l2_breaker);
	breaker_release(&e->l3_breaker);
	wal_close(e->wal);
	free(e->wal_dir);
	if (e->lock_fd >= 0)
		close(e->lock_fd); /* releases the lock */
	pthread_cond_destroy(&e->flush_cond);
	pthread_cond_destroy(&e->commit_cond);
	pthread_cond_destroy(&e->sync_cond);
	pthread_cond_destroy(&e->ino_cond);
	pthread_cond_destroy(&e->dir_cond);
	pthread_mutex_destroy(&e->lock);
	free(e);
	return r;
}

/* true when a change numbered in (@from, @upto] was set aside since
 * e->quarantined was @before (also when too many were to tell). */
static bool quarantined_since(const struct eng *e, uint64_t before,
			      uint64_t from, uint64_t upto)
{
	if (e->quarantined - before > QUARANTINE_RECENT)
		return true;
	for (uint64_t i = before; i < e->quarantined; i++) {
		const struct quarantined *q =
			&e->quarantine[i % QUARANTINE_RECENT];

		if (q->seq > from && q->seq <= upto)
			return true;
	}
	return false;
}

int eng_sync(struct eng *e)
{
	uint64_t from, upto, before;
	int r;

	pthread_mutex_lock(&e->lock);
	from = e->committed_seq;
	upto = e->change_seq;
	before = e->quarantined;
	r = wait_committed(e, upto);
	if (r == 0 && quarantined_since(e, before, from, upto))
		r = -EIO; /* set aside: not durable anywhere but quarantine */
	pthread_mutex_unlock(&e->lock);
	return r;
}
