/*
 * changes.c - changes and publishing: every change becomes a record in the
 * write-ahead log and the batch queue; publishing turns bytes into the next
 * version of a file; inode numbers come from L3 in blocks; writers wait
 * while too much waits to be persisted.
 */
#include "eng_int.h"

/*
 * Queues @n's current state (or its deletion) as the newest change, after
 * appending it to the write-ahead log; @content is the new content to
 * persist with it, or NULL. When the log refuses the record, the change is
 * still queued (memory and L3 stay consistent) and the log's error is
 * returned: the change is then not crash-safe, and the caller says so.
 */
int mark_dirty(struct eng *e, struct node *n, struct item *content)
{
	struct batch_rec *rec = calloc(1, sizeof(*rec));
	bool was_empty = batch_count(&e->batch) == 0;
	int r, wr;

	if (!rec)
		goto out_nomem;
	rec->ino = n->ino;
	rec->deleted = n->deleted;
	if (!n->deleted) {
		rec->parent = n->parent;
		rec->name = strdup(n->name);
		if (!rec->name || item_meta_copy(&rec->meta, &n->meta) < 0)
			goto out_nomem;
		rec->item = item_ref(content);
	}
	rec->seq = ++e->change_seq;
	wr = wal_append(e->wal, rec);
	if (wr < 0) {
		eng_logf(&e->cfg.log, LOG_ERR,
			 "change of inode %llu is not crash-safe: cannot "
			 "append to the write-ahead log: %s",
			 (unsigned long long)n->ino, strerror(-wr));
		e->wal_lost_seq = rec->seq;
	} else {
		e->wal_dirty = true;
		e->wal_fresh = false;
	}
	r = batch_add(&e->batch, rec, mono_ns());
	if (r < 0)
		goto out_err;
	n->dirty_seq = e->change_seq;
	if (!n->dirty) {
		n->dirty = true;
		n->dprev = NULL;
		n->dnext = e->dirty_head;
		if (e->dirty_head)
			e->dirty_head->dprev = n;
		e->dirty_head = n;
	}
	if (was_empty || batch_due(&e->batch, mono_ns()))
		pthread_cond_signal(&e->flush_cond);
	return wr;

out_nomem:
	batch_rec_free(rec);
	r = -ENOMEM;
out_err:
	eng_logf(&e->cfg.log, LOG_ERR,
		 "cannot queue change of inode %llu: out of memory",
		 (unsigned long long)n->ino);
	return r;
}

/* Makes @it the published content of @n: L1 (pinned), node, queue. */
static int set_content(struct eng *e, struct node *n, struct item *it)
{
	const struct item_meta *m = item_meta(it);
	int r = l1_put(e->l1, n->ino, it, true);

	if (r < 0)
		return r;
	item_unref(n->item);
	n->item = item_ref(it);
	n->content_dirty = true;
	n->meta.size = m->size;
	memcpy(n->meta.hash, m->hash, ITEM_HASH_LEN);
	n->meta.version = m->version;
	n->meta.mtime_ns = m->mtime_ns;
	n->meta.ctime_ns = m->ctime_ns;
	n->meta.kind = m->kind;
	return mark_dirty(e, n, it);
}

/*
 * Validates and publishes @len bytes (stolen, from malloc) as the next
 * version of file @n with modification time @mtime. -EINVAL (not JSON),
 * -EFBIG, -ENOMEM; on error @data is freed and nothing changes.
 */
int publish(struct eng *e, struct node *n, void *data, size_t len,
		   int64_t mtime)
{
	char id[ID_MAX + 1];
	struct item_meta meta;
	struct item *it;
	int r;

	if (len > e->cfg.max_item_bytes) {
		r = -EFBIG;
		goto out_free;
	}
	if (n->meta.kind == ITEM_JSON && !item_json_valid(data, len)) {
		r = -EINVAL;
		goto out_free;
	}
	if (wal_bytes(e->wal) + len + 4096 > e->cfg.wal_max_bytes) {
		eng_logf(&e->cfg.log, LOG_ERR,
			 "write refused: the write-ahead log holds %llu bytes "
			 "not yet persisted to %s (wal_max_bytes %llu)",
			 (unsigned long long)wal_bytes(e->wal),
			 e->l3->ops->name,
			 (unsigned long long)e->cfg.wal_max_bytes);
		r = -ENOSPC;
		goto out_free;
	}
	if (node_id(e, n, id, sizeof(id)) < 0)
		id[0] = '\0';
	meta = n->meta; /* shallow: item_new_take() deep-copies */
	meta.version++;
	meta.mtime_ns = mtime;
	meta.ctime_ns = now_ns();
	it = item_new_take(id, data, len, &meta);
	if (!it)
		return -ENOMEM;
	r = set_content(e, n, it);
	item_unref(it);
	return r;

out_free:
	free(data);
	return r;
}

uint64_t next_ino(struct eng *e, int *err)
{
	if (e->ino_next == e->ino_end) {
		uint64_t first = e->ino_spare;
		int r = 0;

		/* the flusher normally reserved the next block already, so
		 * creates go on while L3 is briefly unreachable */
		if (!first)
			r = L3_READ(e, e->l3->ops->alloc_ino(e->l3, INO_BLOCK,
							     &first));
		if (r < 0) {
			*err = r;
			return 0;
		}
		e->ino_spare = 0;
		e->ino_next = first;
		e->ino_end = first + INO_BLOCK;
	}
	return e->ino_next++;
}

/* Reserves the next block of inode numbers once half of the current one is
 * used. Called by the flusher with the lock held; drops it for the I/O. */
void reserve_inos(struct eng *e)
{
	uint64_t first;
	int r;

	if (e->ino_spare || e->ino_end - e->ino_next > INO_BLOCK / 2)
		return;
	pthread_mutex_unlock(&e->lock);
	r = e->l3->ops->alloc_ino(e->l3, INO_BLOCK, &first);
	pthread_mutex_lock(&e->lock);
	if (r == 0 && !e->ino_spare)
		e->ino_spare = first;
}

/* Publishes @f's working copy if it holds changes. Lock held. */
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
