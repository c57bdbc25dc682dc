/*
 * content.c - the read fall-through: a file's content from the node, L1,
 * L2 (Redis) or L3, filling the tiers above on the way back.
 */
#include "eng_int.h"

/*
 * Reads the content of clean file @n from L2: returns it as a new item when
 * Redis holds the version @n has, else NULL. Drops and retakes e->lock.
 */
static struct item *l2_content(struct eng *e, struct node *n)
{
	uint64_t version = n->meta.version;
	struct store_row row;
	struct item *it = NULL;
	char id[ID_MAX + 1];
	void *data = NULL;
	size_t len = 0;
	uint64_t t0;
	int r;

	n->holds++;
	pthread_mutex_unlock(&e->lock);
	t0 = mono_ns();
	r = e->l2->ops->fetch(e->l2, n->ino, &row, &data, &len);
	tier_note(&e->st_l2_fetch, t0, r);
	pthread_mutex_lock(&e->lock);
	n->holds--;
	l2_outcome(e, r);
	if (r < 0)
		return NULL;
	if (row.meta.version == version && n->meta.version == version &&
	    !n->deleted) {
		if (node_id(e, n, id, sizeof(id)) < 0)
			id[0] = '\0';
		it = item_new_take(id, data, len, &n->meta);
		data = NULL;
		/* item_new_take hashed the bytes Redis gave: content that
		 * does not match the metadata (a corrupted key) is dropped,
		 * and the read falls through to L3, which rewrites it */
		if (it && memcmp(item_meta(it)->hash, n->meta.hash,
				 ITEM_HASH_LEN) != 0) {
			eng_logf(&e->cfg.log, LOG_WARNING,
				 "redis holds corrupt content for inode %llu: "
				 "reading it from %s",
				 (unsigned long long)n->ino, e->l3->ops->name);
			item_unref(it);
			it = NULL;
		}
	}
	free(data);
	store_row_release(&row);
	return it;
}

/* Writes @it, the committed content of @n, into L2 (read-through fill).
 * Drops and retakes e->lock. */
static void l2_fill(struct eng *e, struct node *n, struct item *it)
{
	struct item_meta meta;
	struct store_change ch = {0};
	char *name = strdup(n->name);
	uint64_t t0;
	int r;

	if (!name || item_meta_copy(&meta, &n->meta) < 0) {
		free(name);
		return;
	}
	ch.ino = n->ino;
	ch.parent = n->parent;
	ch.name = name;
	ch.meta = &meta;
	ch.has_data = true;
	ch.data = item_data(it);
	ch.len = item_size(it);
	pthread_mutex_unlock(&e->lock);
	t0 = mono_ns();
	r = store_apply(e->l2, &ch, 1);
	tier_note(&e->st_l2_apply, t0, r);
	l2_outcome(e, r);
	pthread_mutex_lock(&e->lock);
	item_meta_release(&meta);
	free(name);
}

/* Returns @it, the current content of @n, after keeping a reference in
 * the node while @n is open, so that reads through open handles do not
 * fetch it again when L1 evicts it. */
static struct item *hold_open(struct node *n, struct item *it)
{
	if (n->opens && n->item != it) {
		item_unref(n->item);
		n->item = item_ref(it);
	}
	return it;
}

/*
 * Returns a new reference to the current content of file @n (held by the
 * caller; held by @n too while it is open). Looks in the node, L1, L2,
 * then L3, filling the tiers above on the way back. May drop and retake
 * e->lock.
 */
int node_content(struct eng *e, struct node *n, struct item **out)
{
	struct item *it;
	void *data;
	size_t len;
	uint64_t version;
	char id[ID_MAX + 1];
	uint64_t t0;
	int r;

	for (;;) {
		if (n->item && item_meta(n->item)->version == n->meta.version) {
			*out = item_ref(n->item);
			return 0;
		}
		it = l1_get(e->l1, n->ino);
		if (it && item_meta(it)->version == n->meta.version) {
			*out = hold_open(n, it);
			return 0;
		}
		item_unref(it);
		if (n->deleted || n->content_dirty)
			return -EIO; /* content should be in memory: a bug */
		if (l2_usable(e)) {
			it = l2_content(e, n);
			if (it) {
				l1_put(e->l1, n->ino, it, false);
				*out = hold_open(n, it);
				return 0;
			}
			if (n->deleted || n->content_dirty)
				continue; /* changed while the lock was out */
		}
		version = n->meta.version;
		n->holds++;
		pthread_mutex_unlock(&e->lock);
		t0 = mono_ns();
		r = L3_READ(e, e->l3->ops->read(e->l3, n->ino, &data, &len));
		tier_note(&e->st_l3_read, t0, r);
		pthread_mutex_lock(&e->lock);
		n->holds--;
		if (r < 0)
			return r == -ENOENT ? -EIO : r;
		if (n->meta.version != version || n->deleted) {
			free(data);
			continue; /* published or deleted meanwhile */
		}
		if (node_id(e, n, id, sizeof(id)) < 0)
			id[0] = '\0';
		it = item_new_take(id, data, len, &n->meta);
		if (!it)
			return -ENOMEM;
		l1_put(e->l1, n->ino, it, false); /* a full cache is no error */
		if (l2_usable(e)) {
			n->holds++;
			l2_fill(e, n, it);
			n->holds--;
		}
		*out = hold_open(n, it);
		return 0;
	}
}
