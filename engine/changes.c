/*
 * changes.c - how an engine call changes entries.
 *
 * Every change is a record of an entry's new state (or its deletion). An
 * engine call collects the records of everything it changes in a struct
 * txn, appends them to the write-ahead log in one write (txn_log) and only
 * then applies them to its nodes and queues them for the flusher
 * (txn_queue). An error from the log therefore leaves everything as it
 * was: the nodes, the log (a partial write is cut away) and the queue.
 *
 * Content arrives as a draft: bytes validated (JSON files must hold one
 * JSON text or nothing; at most max_item_bytes) and hashed with the engine
 * lock dropped. publish() turns a draft into the next version of a file
 * under the lock without touching its bytes again.
 *
 * Inode numbers come from L3 in blocks of INO_BLOCK; the flusher reserves
 * the next block in the background once half of the current one is used,
 * so creates go on while L3 is briefly away.
 */
#include "eng_int.h"

void txn_init(struct txn *t)
{
	memset(t, 0, sizeof(*t));
}

void txn_release(struct txn *t)
{
	for (size_t i = 0; i < t->n; i++)
		change_free(t->recs[i]);
	free(t->recs);
	txn_init(t);
}

static int txn_add(struct txn *t, struct change *rec)
{
	if (t->n == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 4;
		struct change **recs = realloc(t->recs, cap * sizeof(*recs));

		if (!recs) {
			change_free(rec);
			return -ENOMEM;
		}
		t->recs = recs;
		t->cap = cap;
	}
	t->recs[t->n++] = rec;
	return 0;
}

int txn_put(struct txn *t, uint64_t ino, uint64_t parent, const char *name,
	    const struct item_meta *meta, struct item *content)
{
	struct change *rec = change_new_put(ino, parent, name, meta, content);

	return rec ? txn_add(t, rec) : -ENOMEM;
}

int txn_del(struct txn *t, uint64_t ino)
{
	struct change *rec = change_new_del(ino);

	return rec ? txn_add(t, rec) : -ENOMEM;
}

int txn_log(struct eng *e, struct txn *t)
{
	uint64_t seq = e->change_seq;
	int r;

	for (size_t i = 0; i < t->n; i++)
		t->recs[i]->seq = ++e->change_seq;
	r = wal_append_all(e->wal, t->recs, t->n);
	if (r < 0) {
		e->change_seq = seq; /* the lock was held: nobody took one */
		if (r == -ENOSPC)
			eng_logf(&e->cfg.log, LOG_ERR,
				 "change refused: the write-ahead log holds "
				 "%llu bytes not yet persisted to %s "
				 "(wal_max_bytes %llu), or its disk is full",
				 (unsigned long long)wal_bytes(e->wal),
				 e->l3->ops->name,
				 (unsigned long long)e->cfg.wal_max_bytes);
		else
			eng_logf(&e->cfg.log, LOG_ERR,
				 "change refused: cannot append to the "
				 "write-ahead log: %s",
				 strerror(-r));
		return r;
	}
	e->wal_dirty = true;
	e->wal_fresh = false;
	return 0;
}

void txn_queue(struct eng *e, struct txn *t, size_t i, struct node *n)
{
	struct change *rec = t->recs[i];
	bool was_empty = batch_count(&e->batch) == 0;
	uint64_t seq = rec->seq, ino = rec->ino;

	t->recs[i] = NULL;
	if (batch_add(&e->batch, rec, mono_ns()) < 0) {
		/* it is in the log: the next mount persists it */
		eng_logf(&e->cfg.log, LOG_ERR,
			 "cannot queue the change of inode %llu: out of "
			 "memory; it is persisted when the store is next "
			 "mounted",
			 (unsigned long long)ino);
		return;
	}
	if (n) {
		n->dirty_seq = seq;
		n->refused = false;
		if (!n->dirty) {
			if (node_is_dir(n))
				e->dirty_dirs++; /* counts read meanwhile: stale */
			n->dirty = true;
			n->dprev = NULL;
			n->dnext = e->dirty_head;
			if (e->dirty_head)
				e->dirty_head->dprev = n;
			e->dirty_head = n;
		}
	}
	if (was_empty || batch_due(&e->batch, mono_ns()))
		pthread_cond_signal(&e->flush_cond);
}

/* --- drafts and publishing --- */

int draft_make(struct draft *d, void *data, size_t len, enum item_kind kind,
	       size_t max)
{
	memset(d, 0, sizeof(*d));
	if (len > max) {
		free(data);
		return -EFBIG;
	}
	if (kind == ITEM_JSON && !item_json_valid(data, len)) {
		free(data);
		return -EINVAL;
	}
	item_hash(data, len, d->hash);
	d->data = data;
	d->len = len;
	d->kind = kind;
	return 0;
}

int draft_make_unlocked(struct eng *e, struct node *n, void *data, size_t len,
			struct draft *d)
{
	for (;;) {
		enum item_kind kind = n->meta.kind;
		int r;

		n->holds++;
		pthread_mutex_unlock(&e->lock);
		r = draft_make(d, data, len, kind, e->cfg.max_item_bytes);
		pthread_mutex_lock(&e->lock);
		n->holds--;
		if (r < 0 || n->meta.kind == kind)
			return r;
		/* renamed to or from ".json" meanwhile: validate again */
		data = d->data;
		d->data = NULL;
	}
}

void draft_release(struct draft *d)
{
	free(d->data);
	d->data = NULL;
}

int publish(struct eng *e, struct node *n, struct draft *d, int64_t mtime,
	    const struct item_meta *meta)
{
	char id[ID_MAX + 1];
	struct item_meta m;
	struct item *it;
	struct txn t;
	int r;

	if (item_meta_copy(&m, meta ? meta : &n->meta) < 0) {
		draft_release(d);
		return -ENOMEM;
	}
	m.kind = n->meta.kind;
	m.version = n->meta.version + 1;
	m.mtime_ns = mtime;
	m.ctime_ns = now_ns();
	m.size = d->len;
	memcpy(m.hash, d->hash, ITEM_HASH_LEN);
	node_item_id(e, n, id);
	it = item_new_hashed(id, d->data, d->len, &m);
	d->data = NULL; /* stolen, freed on failure */
	txn_init(&t);
	r = it ? txn_put(&t, n->ino, n->parent, n->name, &m, it) : -ENOMEM;
	if (r == 0)
		r = txn_log(e, &t);
	if (r < 0) {
		item_unref(it);
		item_meta_release(&m);
		txn_release(&t);
		return r;
	}
	/* a full L1 is no error: the node holds the item until persisted */
	l1_put(e->l1, n->ino, it, true);
	item_unref(n->item);
	n->item = it; /* our reference */
	n->content_dirty = true;
	e->fs_bytes += (int64_t)m.size - (int64_t)n->meta.size;
	item_meta_release(&n->meta);
	n->meta = m;
	txn_queue(e, &t, 0, n);
	txn_release(&t);
	return 0;
}

int meta_change(struct eng *e, struct node *n, struct item_meta *meta)
{
	struct txn t;
	int r = 0;

	txn_init(&t);
	if (!n->deleted) { /* an unlinked open file changes in memory only */
		r = txn_put(&t, n->ino, n->parent, n->name, meta, NULL);
		if (r == 0)
			r = txn_log(e, &t);
	}
	if (r == 0) {
		item_meta_release(&n->meta);
		n->meta = *meta;
		memset(meta, 0, sizeof(*meta));
		if (t.n)
			txn_queue(e, &t, 0, n);
	}
	txn_release(&t);
	return r;
}

/* --- inode numbers --- */

/* Reserves @count fresh inode numbers from L3 with the lock dropped. */
static int ino_alloc(struct eng *e, uint64_t count, uint64_t *first)
{
	struct tier_call c;
	int r = tier_enter(e, &c, OP_L3_ALLOC_INO, NULL, true);

	if (r == 0)
		r = e->l3->ops->alloc_ino(e->l3, count, first);
	return tier_leave(e, &c, r);
}

int ino_grant(struct eng *e, uint64_t count, uint64_t *first)
{
	uint64_t blk;
	int r;

	/* a one-shot engine makes a create or two: a block would be wasted */
	if (e->cfg.oneshot)
		return ino_alloc(e, count, first);
	for (;;) {
		if (e->ino_end - e->ino_next >= count) {
			*first = e->ino_next;
			e->ino_next += count;
			return 0;
		}
		if (e->ino_spare && count <= INO_BLOCK) {
			e->ino_next = e->ino_spare;
			e->ino_end = e->ino_spare + INO_BLOCK;
			e->ino_spare = 0;
			continue;
		}
		if (count > INO_BLOCK) /* a range of its own */
			return ino_alloc(e, count, first);
		if (e->ino_allocating) {
			/* one block at a time: creators that ran out together
			 * (8 writers) wait for it instead of each reserving a
			 * block of its own from L3 and dropping it */
			pthread_cond_wait(&e->ino_cond, &e->lock);
			continue;
		}
		e->ino_allocating = true;
		r = ino_alloc(e, INO_BLOCK, &blk);
		e->ino_allocating = false;
		pthread_cond_broadcast(&e->ino_cond);
		if (r < 0)
			return r;
		if (e->ino_end - e->ino_next >= count) {
			/* refilled by another call meanwhile */
			if (!e->ino_spare)
				e->ino_spare = blk;
			continue;
		}
		e->ino_next = blk;
		e->ino_end = blk + INO_BLOCK;
	}
}

void ino_refill(struct eng *e)
{
	uint64_t first;

	if (e->cfg.oneshot || e->ino_spare || e->ino_allocating ||
	    e->ino_end - e->ino_next > INO_BLOCK / 2)
		return;
	e->ino_allocating = true;
	if (ino_alloc(e, INO_BLOCK, &first) == 0 && !e->ino_spare)
		e->ino_spare = first;
	e->ino_allocating = false;
	pthread_cond_broadcast(&e->ino_cond);
}

/*
 * Makes a writer wait while more than the high-water mark of changed bytes
 * waits to be persisted (reads never wait). While L3 is failing, writers
 * are not held: the write-ahead log takes them up to wal_max_bytes.
 */
void backpressure(struct eng *e)
{
	size_t high = e->cfg.batch_flush_bytes * DIRTY_HIGH_FACTOR;

	if (high < DIRTY_HIGH_MIN)
		high = DIRTY_HIGH_MIN;
	while (batch_bytes(&e->batch) > high && !e->l3_failing &&
	       !e->stopping) {
		e->flush_now = true;
		pthread_cond_signal(&e->flush_cond);
		pthread_cond_wait(&e->commit_cond, &e->lock);
	}
}
