/*
 * feed.c - following the store's change feed: what other writers (mounts
 * elsewhere, programs) committed reaches this engine's node table, L1, the
 * negative-lookup filter and, through eng_config.inval, the kernel.
 *
 * One thread reads the feed in sequence order from the last record it
 * applied: it waits in feed_wait() (a notification or a poll only wakes
 * it; it reads at least every FEED_WAIT_MS anyway), reads a page without
 * the lock, applies it under the lock, then tells the kernel what to drop
 * with the lock released. Each record names an entry and carries its row
 * as it is now (or "gone"):
 *
 *   - a name that exists goes into the filter, so it is never denied
 *     (once: filter_add_feed());
 *   - a node this engine keeps for the entry takes the row: its metadata,
 *     its place (a move; the new parent's chain is read from L3 first
 *     when the table lacks it) or its deletion. A node with a change not
 *     yet committed here keeps its own state: that change commits later
 *     and wins, as the last committed change does;
 *   - L1's copy of the content is dropped unless it is the only copy;
 *   - the subdirectory counts (nlink) of the directories involved are
 *     read again when next asked for;
 *   - the kernel forgets the entry's old and new names and the inode's
 *     attributes, and its cached pages when the content changed; and the
 *     listings of the directories the entry left or joined, and of a
 *     directory whose own record came (its times change with its
 *     entries: the record of an entry gone that this engine kept no node
 *     for does not say where it was) - even when that directory has a
 *     change of its own not yet committed, which otherwise keeps the
 *     record from applying (inval_listing()).
 *
 * Records of this engine's own batches change nothing but the version the
 * store assigned at commit (store.h: it may be above the one this engine
 * proposed) - unless the store resolved a race against them (a dropped
 * rmdir, a create that replaced another entry): then the record differs
 * from the node and is applied like another writer's. No page is applied
 * while this engine's flusher is between L3's apply() and marking its
 * nodes clean (e->flushing): the page may hold that batch's records.
 *
 * A record whose place is in the table but cannot take the node (it would
 * hold the node below itself, as when this engine's own move of a parent
 * there is not yet committed, or dropped; or a node with a change of its
 * own holds the name) leaves the node unnamed and lost (e->feed_lost):
 * after each page its row is read again and applied (retry_lost()).
 *
 * Every applied page bumps gen, so a reader that read L3 before the change
 * committed and adds its node after the page was applied reads again
 * (tier_stale()); a reader whose node was added before is corrected by the
 * record itself. The other way round, a node whose state was read from L3,
 * or committed by this engine, while the page was read (node.stamp is
 * above the stamp noted before the read) may be newer than the record or
 * older: its row is read again instead (refresh_one()).
 *
 * When the feed has been trimmed past this engine's position (-ESTALE: it
 * was cut off longer than the store keeps records), it cannot know what
 * changed: it re-reads the row of every node it keeps, drops L1's
 * unpinned content, asks the kernel to forget every inode it knows and
 * every name its directories hold now (the kernel may cache one as
 * absent), and rebuilds the filter.
 */
#include "eng_int.h"

#define FEED_PAGE 256
#define FEED_WAIT_MS 100
#define FEED_CHAIN_MAX 2048 /* ancestors read for one move, at most */

struct inval_list {
	struct eng_inval *v;
	size_t n, cap;
};

static void inval_push(struct inval_list *l, enum eng_inval_kind kind,
		       uint64_t parent, uint64_t ino, const char *name,
		       bool data)
{
	struct eng_inval *iv;

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct eng_inval *v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return; /* the kernel's timeouts still bound it */
		l->v = v;
		l->cap = cap;
	}
	iv = &l->v[l->n++];
	memset(iv, 0, sizeof(*iv));
	iv->kind = kind;
	iv->parent = parent;
	iv->ino = ino;
	iv->data = data;
	if (name)
		snprintf(iv->name, sizeof(iv->name), "%s", name);
}

/*
 * Directory @dir's entries changed: the kernel must not list it from its
 * cache as it was. Without @drop its attributes are invalidated: the
 * kernel reads them again at the next listing and, as the directory's
 * mtime changed with its entries (applied from its own record), drops the
 * cached listing then. With @drop its pages, which hold the cached
 * listing, are dropped at once: for a directory whose record this engine
 * does not apply (a change of its own is pending), whose mtime therefore
 * does not change here. A drop that comes while the kernel is filling its
 * cache from a listing leaves that directory uncached (the kernel then
 * lists it from tierfs every time) until it forgets the inode, so it is
 * kept for that case. Once per directory per page.
 */
static void inval_listing(struct inval_list *l, uint64_t dir, bool drop)
{
	for (size_t i = 0; i < l->n; i++) {
		if (l->v[i].kind == ENG_INVAL_INODE && l->v[i].ino == dir) {
			l->v[i].data |= drop;
			return;
		}
	}
	inval_push(l, ENG_INVAL_INODE, 0, dir, NULL, drop);
}

/* Tells the kernel, without the lock. */
static void inval_send(struct eng *e, struct inval_list *l)
{
	if (e->cfg.inval)
		for (size_t i = 0; i < l->n; i++)
			e->cfg.inval(e->cfg.inval_arg, &l->v[i]);
	l->n = 0;
}

/* A node whose state is this engine's own until its change commits. */
static bool node_pending(const struct node *n)
{
	return n->dirty || n->content_dirty || (n->wc && n->wc->dirty);
}

/* The rows of directory @ino and its ancestors up to the root (the root
 * excluded), nearest first, read from L3 without the lock. */
static int read_chain(struct eng *e, uint64_t ino, struct store_row **out,
		      size_t *nout)
{
	struct store_row *rows = NULL;
	size_t n = 0, cap = 0;
	int r = 0;

	while (ino != STORE_ROOT_INO) {
		struct tier_call c;

		if (n == FEED_CHAIN_MAX) {
			r = -ELOOP;
			break;
		}
		if (n == cap) {
			struct store_row *v;

			cap = cap ? cap * 2 : 8;
			v = realloc(rows, cap * sizeof(*rows));
			if (!v) {
				r = -ENOMEM;
				break;
			}
			rows = v;
		}
		r = tier_enter(e, &c, OP_L3_GET, NULL, false);
		if (r == 0)
			r = e->l3->ops->get(e->l3, ino, &rows[n]);
		r = tier_leave(e, &c, r);
		if (r < 0)
			break;
		if (rows[n].meta.kind != ITEM_DIR) {
			store_row_release(&rows[n]);
			r = -ENOTDIR;
			break;
		}
		ino = rows[n++].parent;
	}
	if (r < 0) {
		while (n)
			store_row_release(&rows[--n]);
		free(rows);
		return r;
	}
	*out = rows;
	*nout = n;
	return 0;
}

/* Makes sure directory @ino is in the table, adding the missing part of
 * its chain from @chain (nearest first). Returns the node or NULL. */
static struct node *chain_attach(struct eng *e, uint64_t ino,
				 struct store_row *chain, size_t n)
{
	struct node *dir = node_get(e, ino);
	size_t top;

	if (dir)
		return dir->deleted || !node_is_dir(dir) ? NULL : dir;
	/* the nearest ancestor the table has */
	for (top = 0; top < n; top++)
		if (node_get(e, chain[top].parent))
			break;
	if (top == n)
		return NULL;
	for (size_t i = top + 1; i-- > 0;) {
		struct node *p = node_get(e, chain[i].parent), *d;

		if (!p || p->deleted || !node_is_dir(p))
			return NULL;
		d = node_get(e, chain[i].ino);
		if (d) { /* one of ours, somewhere else: not ours to move */
			if (d->parent != p->ino || d->deleted)
				return NULL;
			continue;
		}
		if (name_find(e, p->ino, chain[i].name))
			return NULL; /* the table holds another there */
		d = node_add(e, p, chain[i].ino, chain[i].name,
			     &chain[i].meta);
		if (!d)
			return NULL;
	}
	return node_get(e, ino);
}

/* Moves clean node @n to (@dir, @name), out of the way of a clean node
 * that holds the name here (its own record moves or deletes it). */
static bool node_place(struct eng *e, struct node *n, struct node *dir,
		       const char *name)
{
	struct node *other = name_find(e, dir->ino, name);

	if (other == n && !n->deleted)
		return true;
	if (other) {
		if (node_pending(other))
			return false; /* ours wins once it commits */
		node_unname(e, other);
	}
	for (struct node *a = dir; a; a = node_get(e, a->parent))
		if (a == n)
			return false; /* it would hold itself */
	if (node_rename(e, n, dir, name) < 0)
		return false;
	n->deleted = false;
	return true;
}

/* Directory @ino's subdirectory count (nlink) must be read again. */
static void count_forget(struct eng *e, uint64_t ino)
{
	struct node *d = node_get(e, ino);

	if (d)
		d->subdirs_known = false;
}

/* Notes whether node @ino is lost: a record placed it nowhere, as its
 * place could not take it (see e->feed_lost). */
static void lost_note(struct eng *e, uint64_t ino, bool lost)
{
	if (!lost)
		u64map_del(&e->feed_lost, ino);
	else if (!u64map_get(&e->feed_lost, ino) &&
		 u64map_put(&e->feed_lost, ino, (void *)(uintptr_t)1) < 0)
		eng_logf(&e->cfg.log, LOG_WARNING,
			 "out of memory: inode %llu stays hidden until it is "
			 "looked up again",
			 (unsigned long long)ino);
}

/* Applies one record of another writer to node @n (clean). Notes the
 * node lost (lost_note()) when its place is known but cannot take it. */
static void apply_to_node(struct eng *e, struct node *n,
			  struct store_feed *f, struct inval_list *inv)
{
	struct node *dir;
	bool content = false, lost = false, listing;

	count_forget(e, n->ino);
	count_forget(e, n->parent);
	if (!f->gone)
		count_forget(e, f->row.parent);
	if (f->gone) {
		if (!n->deleted) {
			inval_push(inv, ENG_INVAL_DELETE, n->parent, n->ino,
				   n->name, false);
			inval_listing(inv, n->parent, false);
			filter_del(e, n->parent, n->name);
			node_unname(e, n);
		}
		l1_remove(e->l1, n->ino);
		return;
	}
	dir = node_get(e, f->row.parent);
	if (n->deleted || n->parent != f->row.parent ||
	    strcmp(n->name, f->row.name) != 0) {
		if (!n->deleted) {
			inval_push(inv, ENG_INVAL_ENTRY, n->parent, 0, n->name,
				   false);
			inval_listing(inv, n->parent, false);
		}
		if (dir)
			inval_listing(inv, dir->ino, false);
		if (dir && node_place(e, n, dir, f->row.name)) {
			inval_push(inv, ENG_INVAL_ENTRY, dir->ino, 0,
				   f->row.name, false);
		} else {
			/* it went where this engine cannot follow: forget
			 * its name here. A place the table has but that
			 * cannot take it now (it would hold a node below
			 * itself, until this engine's own move there is
			 * dropped or committed; or a node with a change of
			 * its own holds the name) is tried again after
			 * each page */
			if (!n->deleted)
				node_unname(e, n);
			lost = dir != NULL;
		}
	}
	lost_note(e, n->ino, lost);
	listing = n->meta.kind == ITEM_DIR;
	if (n->meta.kind != ITEM_DIR &&
	    (memcmp(n->meta.hash, f->row.meta.hash, ITEM_HASH_LEN) != 0 ||
	     n->meta.size != f->row.meta.size ||
	     n->meta.kind != f->row.meta.kind))
		content = true;
	item_meta_release(&n->meta);
	n->meta = f->row.meta; /* stolen */
	memset(&f->row.meta, 0, sizeof(f->row.meta));
	if (content) {
		l1_remove(e->l1, n->ino);
		if (n->item) {
			item_unref(n->item);
			n->item = NULL;
		}
		if (n->wc)
			n->wc->loaded = false; /* reload before the next write */
	}
	/* a directory's own record (its times change with its entries) drops
	 * its cached listing too: the record of an entry this engine keeps no
	 * node for says, when the entry is gone, not where it was */
	if (listing)
		inval_listing(inv, n->ino, false);
	else
		inval_push(inv, ENG_INVAL_INODE, 0, n->ino, NULL, content);
	n->stamp = ++e->stamp;
}

/* true when clean node @n already is what record @f says. */
static bool node_matches(const struct node *n, const struct store_feed *f)
{
	if (f->gone)
		return n->deleted;
	return !n->deleted && n->parent == f->row.parent &&
	       strcmp(n->name, f->row.name) == 0 &&
	       n->meta.kind == f->row.meta.kind &&
	       memcmp(n->meta.hash, f->row.meta.hash, ITEM_HASH_LEN) == 0;
}

/* Applies record @f under the lock; true when it changed what the engine
 * shows. */
static bool apply_record(struct eng *e, struct store_feed *f,
			 uint64_t stamp, bool *recheck, struct inval_list *inv)
{
	struct node *n = node_get(e, f->ino);
	bool own = f->origin == e->l3->origin;

	/* a name L3 holds is never denied: add it unless this node already
	 * has it (own changes added theirs when they were made) */
	if (!f->gone && (!n || n->deleted || n->parent != f->row.parent ||
			 strcmp(n->name, f->row.name) != 0))
		filter_add_feed(e, f->row.parent, f->row.name);
	if (n && node_pending(n)) {
		e->feed_kept += !own;
		/* its own change commits later and wins; but the record may
		 * be the touch of a directory whose entries changed, and the
		 * kernel's listing of it must show them */
		if (!own && node_is_dir(n))
			inval_listing(inv, n->ino, true);
		return false;
	}
	if (own && (!n || node_matches(n, f))) {
		/* ours as we made it: only the version the store chose is
		 * news (a node-less entry is read from L3 when looked up) */
		if (n && !f->gone && f->row.meta.version > n->meta.version)
			n->meta.version = f->row.meta.version;
		return false;
	}
	if (n && n->stamp > stamp) {
		/* its state was read from L3, or committed, while @f was
		 * read: which is newer is unknown, so read it again. A
		 * record of this engine's own that differs from its node is
		 * either older than a later commit of its own (nothing to
		 * do) or what L3 made of it in a race (a dropped move): the
		 * latter only once L3 has settled a race for this engine,
		 * so a store nobody else writes is not read here */
		*recheck = !own || atomic_load(&e->l3->races) > 0;
		return false;
	}
	/* ours as the store changed it: a race dropped our change (a move
	 * that would close a cycle, an rmdir of a directory another writer
	 * filled) or replaced another entry: the record says where the
	 * entry really is; or another writer's */
	e->feed_applied += !own;
	if (!n) {
		struct node *dir;

		l1_remove(e->l1, f->ino);
		if (f->gone)
			return true;
		count_forget(e, f->row.parent);
		/* the kernel may remember the name as absent, and list the
		 * directory without it */
		dir = node_get(e, f->row.parent);
		if (dir && !dir->deleted) {
			inval_push(inv, ENG_INVAL_ENTRY, dir->ino, 0,
				   f->row.name, false);
			inval_listing(inv, dir->ino, false);
		}
		return true;
	}
	apply_to_node(e, n, f, inv);
	return true;
}

/*
 * The moves in @recs[0..n) whose destination directory the table lacks
 * for a node it keeps: their chains are read from L3 (without the lock)
 * and attached before the records are applied. Lock held on entry and
 * exit; it is dropped meanwhile.
 */
static void attach_destinations(struct eng *e, struct store_feed *recs,
				size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct store_feed *f = &recs[i];
		struct node *m = node_get(e, f->ino);
		struct store_row *chain;
		uint64_t parent;
		size_t len;
		int r;

		/* (a record of this engine's own goes where its node knows,
		 * or is placed later: retry_lost()) */
		if (f->gone || f->origin == e->l3->origin || !m ||
		    node_pending(m) || node_get(e, f->row.parent))
			continue;
		parent = f->row.parent;
		m->holds++;
		pthread_mutex_unlock(&e->lock);
		r = read_chain(e, parent, &chain, &len);
		pthread_mutex_lock(&e->lock);
		if (r == 0) {
			chain_attach(e, parent, chain, len);
			for (size_t k = 0; k < len; k++)
				store_row_release(&chain[k]);
			free(chain);
		}
		node_put(e, m);
	}
}

/* Forgets what the engine caches after a gap in the feed. Lock held. */
static void feed_reset(struct eng *e, struct inval_list *inv)
{
	size_t pos = 0;
	uint64_t key;
	void *val;

	e->feed_resets++;
	eng_logf(&e->cfg.log, LOG_WARNING,
		 "the change feed of %s was trimmed past this mount's "
		 "position: re-reading every entry it caches",
		 e->l3->ops->name);
	while (u64map_next(&e->nodes, &pos, &key, &val)) {
		struct node *n = val;

		if (!node_pending(n)) {
			l1_remove(e->l1, n->ino);
			if (n->wc)
				n->wc->loaded = false;
		}
		inval_push(inv, ENG_INVAL_INODE, 0, n->ino, NULL, true);
	}
	filter_restart(e);
}

/*
 * Reads the row of clean node @ino from L3 again and applies it, unless the
 * node's state was established again meanwhile (then that state is at
 * least as new as the row: what came after reaches it through the feed).
 * Lock held; dropped meanwhile.
 */
static void refresh_one(struct eng *e, uint64_t ino, struct inval_list *inv)
{
	struct store_feed f = {.ino = ino};
	struct node *m = node_get(e, ino);
	uint64_t stamp = e->stamp;
	struct tier_call c;
	int r;

	if (!m || node_pending(m))
		return;
	r = tier_enter(e, &c, OP_L3_GET, m, true);
	if (r == 0)
		r = e->l3->ops->get(e->l3, ino, &f.row);
	r = tier_leave(e, &c, r);
	if (r < 0 && r != -ENOENT)
		return;
	f.gone = r == -ENOENT;
	m = node_get(e, ino);
	if (m && !node_pending(m) && m->stamp <= stamp)
		apply_to_node(e, m, &f, inv);
	if (!f.gone)
		store_row_release(&f.row);
}

bool feed_gone(struct eng *e, struct node *n)
{
	struct store_feed f = {.ino = n->ino, .gone = true};
	struct inval_list inv = {0};

	if (n->deleted || node_pending(n) || n->refused)
		return false;
	eng_logf(&e->cfg.log, LOG_INFO,
		 "inode %llu ('%s') is gone from %s: another writer removed it",
		 (unsigned long long)n->ino, n->name, e->l3->ops->name);
	snap_forget(e, n->ino, 0);
	apply_to_node(e, n, &f, &inv);
	free(inv.v); /* not sent: see feed_gone()'s caller */
	return true;
}

/* Tries again to place the lost nodes (e->feed_lost) from their rows:
 * after a page, the move that kept one from its place may have been
 * applied or dropped. A node with a change of its own leaves the set: its
 * change decides. Lock held; dropped meanwhile. */
static void retry_lost(struct eng *e, struct inval_list *inv)
{
	uint64_t *inos;
	size_t n = 0, pos = 0;
	uint64_t key;
	void *val;

	if (!e->feed_lost.len)
		return;
	inos = malloc(e->feed_lost.len * sizeof(*inos));
	if (!inos)
		return;
	while (u64map_next(&e->feed_lost, &pos, &key, &val))
		inos[n++] = key;
	for (size_t i = 0; i < n; i++) {
		struct node *m = node_get(e, inos[i]);

		if (!m || node_pending(m))
			lost_note(e, inos[i], false);
		else
			refresh_one(e, inos[i], inv);
	}
	free(inos);
}

/* Re-reads the row of every clean node (after feed_reset()). */
static void refresh_nodes(struct eng *e, struct inval_list *inv)
{
	uint64_t *inos = NULL;
	size_t n = 0, pos = 0;
	uint64_t key;
	void *val;

	inos = malloc((e->nodes.len + 1) * sizeof(*inos));
	if (!inos)
		return;
	while (u64map_next(&e->nodes, &pos, &key, &val))
		if (key != STORE_ROOT_INO)
			inos[n++] = key;
	for (size_t i = 0; i < n; i++)
		refresh_one(e, inos[i], inv);
	free(inos);
}

/*
 * After a gap the kernel may still hold a negative entry (for up to
 * entry_timeout) for a name another writer made meanwhile, and no record
 * says which: it is told to forget every name that each directory this
 * engine keeps holds in L3 now (a directory the engine does not keep has
 * no entries in the kernel). One listing per kept directory: a gap is
 * rare. Lock held; dropped meanwhile.
 */
static void forget_names(struct eng *e, struct inval_list *inv)
{
	struct store_row *rows = calloc(FEED_PAGE, sizeof(*rows));
	uint64_t *dirs = malloc((e->nodes.len + 1) * sizeof(*dirs));
	size_t n = 0, pos = 0;
	uint64_t key;
	void *val;

	if (!rows || !dirs)
		goto out_free;
	while (u64map_next(&e->nodes, &pos, &key, &val)) {
		const struct node *d = val;

		if (d->meta.kind == ITEM_DIR && !d->deleted)
			dirs[n++] = key;
	}
	for (size_t i = 0; i < n; i++) {
		char after[STORE_NAME_MAX + 1] = "";
		int r;

		do {
			struct node *d = node_get(e, dirs[i]);
			struct tier_call c;

			if (!d)
				break;
			r = tier_enter(e, &c, OP_L3_LIST, d, true);
			if (r == 0)
				r = e->l3->ops->list(e->l3, dirs[i], after, rows,
						     FEED_PAGE);
			r = tier_leave(e, &c, r);
			for (int k = 0; k < r; k++) {
				inval_push(inv, ENG_INVAL_ENTRY, dirs[i], 0,
					   rows[k].name, false);
				memcpy(after, rows[k].name, sizeof(after));
				store_row_release(&rows[k]);
			}
		} while (r == FEED_PAGE);
	}
out_free:
	free(rows);
	free(dirs);
}

static void *feed_main(void *arg)
{
	struct eng *e = arg;
	struct store_feed *recs = calloc(FEED_PAGE, sizeof(*recs));
	uint64_t *recheck = calloc(FEED_PAGE, sizeof(*recheck));
	struct inval_list inv = {0};
	bool stop = false;
	int failing = 0;

	if (!recs || !recheck) {
		free(recs);
		free(recheck);
		return NULL;
	}
	while (!stop) {
		uint64_t after, stamp = 0;
		int r;

		pthread_mutex_lock(&e->lock);
		after = e->feed_seq;
		stop = e->stopping;
		pthread_mutex_unlock(&e->lock);
		if (stop)
			break;
		r = e->l3->ops->feed_wait(e->l3, after, FEED_WAIT_MS);
		if (r == 0)
			r = 1; /* read anyway: nothing depends on a wake-up */
		if (r > 0) {
			struct tier_call c;

			pthread_mutex_lock(&e->lock);
			stamp = e->stamp; /* node states older than the read */
			pthread_mutex_unlock(&e->lock);
			r = tier_enter(e, &c, OP_L3_FEED, NULL, false);
			if (r == 0)
				r = e->l3->ops->feed_read(e->l3, after, recs,
							  FEED_PAGE);
			r = tier_leave(e, &c, r);
		}
		if (r < 0 && r != -ESTALE) {
			if (!failing++)
				eng_logf(&e->cfg.log, LOG_WARNING,
					 "cannot read the change feed of %s: "
					 "%s (retrying)",
					 e->l3->ops->name, strerror(-r));
			struct timespec ts = {0, FEED_WAIT_MS * 1000000L};

			nanosleep(&ts, NULL);
			continue;
		}
		if (failing) {
			eng_logf(&e->cfg.log, LOG_INFO,
				 "reading the change feed of %s again",
				 e->l3->ops->name);
			failing = 0;
		}
		pthread_mutex_lock(&e->lock);
		/* a batch of this engine's in flight: its own records may be
		 * in the page, to be applied to clean nodes */
		while (e->flushing && !e->stopping)
			pthread_cond_wait(&e->commit_cond, &e->lock);
		if (r == -ESTALE) {
			uint64_t head = 0;

			struct tier_call c;

			r = tier_enter(e, &c, OP_L3_FEED, NULL, true);
			if (r == 0)
				r = e->l3->ops->feed_head(e->l3, &head);
			r = tier_leave(e, &c, r);
			if (r == 0) {
				feed_reset(e, &inv);
				snap_forget_all(e);
				e->feed_seq = head;
				e->gen++;
				refresh_nodes(e, &inv);
				forget_names(e, &inv);
			}
		} else if (r > 0) {
			size_t n = (size_t)r, nre = 0;
			bool changed = false;

			attach_destinations(e, recs, n);
			for (size_t i = 0; i < n; i++) {
				bool again = false;

				/* what a snapshot read of it showed changed
				 * (this engine's own batches forgot theirs at
				 * commit, races included: same directories) */
				if (recs[i].origin != e->l3->origin)
					snap_forget(e, recs[i].ino,
						    recs[i].gone
							    ? 0
							    : recs[i].row.parent);
				changed |= apply_record(e, &recs[i], stamp,
							&again, &inv);
				if (again) /* rows are no longer needed */
					recheck[nre++] = recs[i].ino;
			}
			if (recs[n - 1].seq > e->feed_seq)
				e->feed_seq = recs[n - 1].seq;
			if (changed)
				e->gen++;
			for (size_t i = 0; i < n; i++)
				if (!recs[i].gone)
					store_row_release(&recs[i].row);
			for (size_t i = 0; i < nre; i++)
				refresh_one(e, recheck[i], &inv);
			retry_lost(e, &inv);
		}
		stop = e->stopping;
		pthread_mutex_unlock(&e->lock);
		inval_send(e, &inv);
	}
	free(inv.v);
	free(recs);
	free(recheck);
	return NULL;
}

int feed_start(struct eng *e)
{
	const struct store_ops *o = e->l3->ops;
	uint64_t head = 0;
	int r;

	if (!o->feed_read || !o->feed_head || !o->feed_wait)
		return 0; /* a store nobody else writes */
	r = o->feed_head(e->l3, &head);
	if (r < 0) {
		eng_logf(&e->cfg.log, LOG_ERR,
			 "cannot read the change feed of %s: %s", o->name,
			 strerror(-r));
		return r;
	}
	e->feed_seq = head;
	r = -pthread_create(&e->feed_thread, NULL, feed_main, e);
	if (r == 0)
		e->feed_started = true;
	return r;
}

void feed_stop(struct eng *e)
{
	if (e->feed_started) {
		pthread_join(e->feed_thread, NULL);
		e->feed_started = false;
	}
}
