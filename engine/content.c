/*
 * content.c - the read fall-through: a file's content comes from the node
 * (while open or not yet persisted), L1, L2 (Redis) or L3, and fills the
 * tiers above on the way back.
 *
 * Content read from Redis is hashed (with the lock dropped) and used only
 * when it is the version the node has and its hash is the metadata's: a
 * stale or corrupted key is skipped and the read falls through to L3,
 * which rewrites the key.
 */
#include "eng_int.h"

/*
 * Reads the content of clean file @n from L2: returns it as a new item when
 * Redis holds the version @n has, with the right hash; else NULL. Drops and
 * retakes e->lock.
 */
static struct item *l2_content(struct eng *e, struct node *n)
{
	uint64_t version = n->meta.version;
	uint8_t hash[ITEM_HASH_LEN];
	struct store_row row;
	struct item_meta m;
	struct item *it = NULL;
	char id[ID_MAX + 1];
	struct tier_call c;
	void *data = NULL;
	size_t len = 0;
	int r;

	r = tier_enter(e, &c, OP_L2_FETCH, n, true);
	if (r == 0) {
		r = e->l2->ops->fetch(e->l2, n->ino, &row, &data, &len);
		if (r == 0) /* still without the lock */
			item_hash(data, len, hash);
	}
	r = tier_leave(e, &c, r);
	if (r < 0)
		return NULL;
	if (row.meta.version == version && n->meta.version == version &&
	    !n->deleted) {
		if (memcmp(hash, n->meta.hash, ITEM_HASH_LEN) == 0) {
			node_item_id(e, n, id);
			m = n->meta; /* shallow: copied by item_new_hashed */
			it = item_new_hashed(id, data, len, &m);
			data = NULL;
		} else {
			eng_logf(&e->cfg.log, LOG_WARNING,
				 "redis holds corrupt content for inode %llu: "
				 "reading it from %s",
				 (unsigned long long)n->ino, e->l3->ops->name);
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
	struct change *ch;
	struct tier_call c;
	int r;

	ch = change_new_put(n->ino, n->parent, n->name, &n->meta, it);
	if (!ch)
		return;
	r = tier_enter(e, &c, OP_L2_APPLY, n, true);
	if (r == 0)
		r = e->l2->ops->apply(e->l2, &ch, 1);
	tier_leave(e, &c, r);
	change_free(ch);
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
 * Content L3 read for clean file @n did not match its metadata (version
 * @version): @n may only be behind L3, another writer's change committed
 * and not yet brought by the change feed (a node made from a directory
 * snapshot or a lookup just before it). Reads @n's row: when it is newer
 * and still in @n's place, @n takes it (as the feed would) and 1 is
 * returned (read again); else 0 (the content is corrupt). Drops the lock.
 */
static int catch_up(struct eng *e, struct node *n, uint64_t version)
{
	struct store_row row;
	struct tier_call c;
	int r;

	r = tier_enter(e, &c, OP_L3_GET, n, true);
	if (r == 0)
		r = e->l3->ops->get(e->l3, n->ino, &row);
	r = tier_leave(e, &c, r);
	if (r < 0)
		return 0;
	r = 0;
	if (n->meta.version == version && !n->deleted && !n->dirty &&
	    !n->content_dirty && !n->wc && row.meta.version > version &&
	    row.meta.kind == n->meta.kind && row.parent == n->parent &&
	    strcmp(row.name, n->name) == 0 && !row_too_big(e, &row)) {
		item_meta_release(&n->meta);
		n->meta = row.meta; /* stolen */
		memset(&row.meta, 0, sizeof(row.meta));
		n->stamp = ++e->stamp;
		r = 1;
	}
	store_row_release(&row);
	return r;
}

/*
 * Returns a new reference to the current content of file @n (held by the
 * caller; held by @n too while it is open). Looks in the node, L1, L2,
 * then L3, filling the tiers above on the way back. May drop and retake
 * e->lock.
 */
int node_content(struct eng *e, struct node *n, struct item **out)
{
	uint8_t hash[ITEM_HASH_LEN];
	struct tier_call c;
	struct item_meta m;
	char id[ID_MAX + 1];
	struct item *it;
	uint64_t version;
	void *data;
	bool prefetched = false, caught_up = false;
	size_t len;
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
		if (n->deleted)
			return -ESTALE; /* another writer removed it */
		if (n->content_dirty)
			return -EIO; /* content should be in memory: a bug */
		if (!prefetched && !n->dirty) {
			/* with the siblings the directory's snapshot lists */
			prefetched = true;
			if (snap_prefetch(e, n))
				continue;
		}
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
		r = tier_enter(e, &c, OP_L3_READ, n, true);
		if (r == 0) {
			r = e->l3->ops->read(e->l3, n->ino, &data, &len);
			if (r == 0) /* still without the lock */
				item_hash(data, len, hash);
		}
		r = tier_leave(e, &c, r);
		if (r == -ENOENT) {
			if (n->deleted)
				return -ESTALE;
			if (n->meta.version != version)
				continue; /* published meanwhile */
			/* no row for a clean entry: another writer removed
			 * it, and the feed has not said so yet */
			return feed_gone(e, n) ? -ESTALE : -EIO;
		}
		if (r < 0)
			return r;
		if (n->meta.version != version || n->deleted) {
			free(data);
			continue; /* published or deleted meanwhile */
		}
		if (len != n->meta.size ||
		    memcmp(hash, n->meta.hash, ITEM_HASH_LEN) != 0) {
			free(data);
			if (!caught_up) {
				caught_up = true;
				if (catch_up(e, n, version) ||
				    n->meta.version != version || n->deleted)
					continue; /* it was behind: again */
			}
			/* the same version: the content is corrupt */
			e->corrupt_rows++;
			eng_logf(&e->cfg.log, LOG_ERR,
				 "%s holds content for inode %llu that is not "
				 "what its entry says (%zu bytes, %s hash)",
				 e->l3->ops->name, (unsigned long long)n->ino,
				 len, len == n->meta.size ? "another" : "a");
			return -EIO;
		}
		node_item_id(e, n, id);
		m = n->meta; /* shallow: copied by item_new_hashed */
		memcpy(m.hash, hash, ITEM_HASH_LEN);
		it = item_new_hashed(id, data, len, &m);
		if (!it)
			return -ENOMEM;
		l1_put(e->l1, n->ino, it, false); /* a full cache is no error */
		if (l2_usable(e))
			l2_fill(e, n, it);
		*out = hold_open(n, it);
		return 0;
	}
}
