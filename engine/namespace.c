/*
 * namespace.c - the namespace operations: lookup, forget, getattr,
 * setattr, mkdir, rmdir, unlink, rename, and the node-level create and
 * delete they are made of.
 *
 * Each operation first checks everything that may fail (names, the tree,
 * L3 lookups, content to validate), which may drop the engine lock; then it
 * checks again, in memory, that nothing it relied on moved meanwhile (or
 * starts over); then it logs every record of the change in one write
 * (txn_log) and only after that changes its nodes. An error therefore
 * changes nothing.
 *
 * Implicit directories (made by eng_put() for an ID's prefix, not by
 * mkdir) go away with their last entry: a delete takes the implicit
 * parents it leaves empty along, in the same logged change.
 */
#include "eng_int.h"

/* The metadata of a new entry. */
static struct item_meta new_meta(enum item_kind kind, uint32_t mode,
				 uint32_t uid, uint32_t gid, bool explicit_dir)
{
	struct item_meta m = {0};

	m.kind = kind;
	m.mode = (kind == ITEM_DIR ? S_IFDIR : S_IFREG) | (mode & 07777);
	m.uid = uid;
	m.gid = gid;
	m.mtime_ns = m.atime_ns = m.ctime_ns = now_ns();
	m.version = 1;
	m.explicit_dir = explicit_dir;
	return m;
}

/*
 * A directory whose entries a call adds, removes or renames: its mtime and
 * ctime become the call's time, in a record logged with the call's others
 * (as on any filesystem; tools compare them).
 */
struct dir_touch {
	struct node *dir;
	struct item_meta m; /* the new metadata, while set */
	size_t rec;	    /* its record in the txn */
	bool set;
};

/* Adds the touch of @dir (may be NULL or deleted: nothing) to @t. */
static int touch_add(struct txn *t, struct dir_touch *dt, struct node *dir,
		     int64_t now)
{
	int r;

	dt->dir = dir;
	dt->set = false;
	if (!dir || dir->deleted)
		return 0;
	if (item_meta_copy(&dt->m, &dir->meta) < 0)
		return -ENOMEM;
	dt->m.mtime_ns = dt->m.ctime_ns = now;
	dt->rec = t->n;
	r = txn_put(t, dir->ino, dir->parent, dir->name, &dt->m, NULL);
	if (r < 0)
		item_meta_release(&dt->m);
	else
		dt->set = true;
	return r;
}

/* After the txn is logged: the directory takes its new times. */
static void touch_apply(struct eng *e, struct txn *t, struct dir_touch *dt)
{
	if (!dt->set)
		return;
	item_meta_release(&dt->dir->meta);
	dt->dir->meta = dt->m;
	dt->set = false;
	txn_queue(e, t, dt->rec, dt->dir);
}

static void touch_release(struct dir_touch *dt)
{
	if (dt->set)
		item_meta_release(&dt->m);
	dt->set = false;
}

int node_create(struct eng *e, struct node *dir, char *const *dirs,
		size_t ndirs, const char *name, enum item_kind kind,
		uint32_t mode, uint32_t uid, uint32_t gid, bool explicit_dir,
		uint64_t ino, struct draft *d, struct node **out)
{
	struct draft empty = {0};
	struct dir_touch touch = {0};
	struct node **nodes = calloc(ndirs + 1, sizeof(*nodes));
	struct item *it = NULL;
	struct item_meta m;
	char id[ID_MAX + 1];
	size_t added = 0;
	struct txn t;
	int r = -ENOMEM;

	txn_init(&t);
	if (!d && kind != ITEM_DIR) {
		d = &empty;
		r = draft_make(d, malloc(1), 0, kind, e->cfg.max_item_bytes);
		if (r < 0)
			goto out_free;
		r = -ENOMEM;
	}
	if (!nodes)
		goto out_free;
	for (; added <= ndirs; added++) {
		struct node *parent = added ? nodes[added - 1] : dir;
		bool last = added == ndirs;

		m = last ? new_meta(kind, mode, uid, gid, explicit_dir)
			 : new_meta(ITEM_DIR, 0755, uid, gid, false);
		if (last && d) {
			m.size = d->len;
			memcpy(m.hash, d->hash, ITEM_HASH_LEN);
		}
		nodes[added] = node_add(e, parent, ino + added,
					last ? name : dirs[added], &m);
		if (!nodes[added])
			goto out_unadd;
		nodes[added]->subdirs_known = true; /* new: none */
	}
	if (d) {
		node_item_id(e, nodes[ndirs], id);
		it = item_new_hashed(id, d->data, d->len, &nodes[ndirs]->meta);
		d->data = NULL;
		if (!it)
			goto out_unadd;
	}
	for (size_t i = 0; i <= ndirs; i++) {
		struct node *n = nodes[i];

		r = txn_put(&t, n->ino, n->parent, n->name, &n->meta,
			    i == ndirs ? it : NULL);
		if (r < 0)
			goto out_unadd;
	}
	r = touch_add(&t, &touch, dir, nodes[0]->meta.ctime_ns);
	if (r == 0)
		r = txn_log(e, &t);
	if (r < 0)
		goto out_unadd;
	for (size_t i = 0; i <= ndirs; i++) {
		filter_add(e, nodes[i]->parent, nodes[i]->name);
		txn_queue(e, &t, i, nodes[i]);
		if (node_is_dir(nodes[i]))
			subdirs_add(e, nodes[i]->parent, 1);
	}
	touch_apply(e, &t, &touch);
	e->fs_entries += (int64_t)ndirs + 1;
	if (it) {
		struct node *n = nodes[ndirs];

		/* a full L1 is no error: the node holds it until persisted */
		l1_put(e->l1, n->ino, it, true);
		n->item = it;
		n->content_dirty = true;
		e->fs_bytes += (int64_t)n->meta.size;
		it = NULL;
	}
	nodes[ndirs]->holds++;
	*out = nodes[ndirs];
	goto out_free;

out_unadd:
	while (added--)
		node_unadd(e, nodes[added]);
out_free:
	touch_release(&touch);
	item_unref(it);
	if (d)
		draft_release(d);
	txn_release(&t);
	free(nodes);
	return r;
}

void node_delete_apply(struct eng *e, struct node *n, int64_t now)
{
	if (node_is_dir(n))
		subdirs_add(e, n->parent, -1);
	filter_del(e, n->parent, n->name);
	node_unname(e, n);
	n->content_dirty = false;
	n->meta.ctime_ns = now;
	l1_remove(e->l1, n->ino);
	if (!n->opens) {
		item_unref(n->item);
		n->item = NULL;
	}
	e->fs_entries--;
	e->fs_bytes -= (int64_t)n->meta.size;
}

/* true when a dirty live node other than @ignore sits in @dir. */
static bool has_pending_child(struct eng *e, struct node *dir,
			      const struct node *ignore)
{
	for (struct node *d = e->dirty_head; d; d = d->dnext)
		if (!d->deleted && d->parent == dir->ino && d != ignore)
			return true;
	return false;
}

/* The implicit directories a delete empties, nearest first, each held. */
struct chain {
	struct node **n;
	size_t len, cap;
};

static void chain_put(struct eng *e, struct chain *c)
{
	while (c->len)
		node_put(e, c->n[--c->len]);
}

/*
 * Collects into @c the implicit directories above @n that deleting @n
 * leaves empty. May drop the lock. -ENOMEM, or the error of a listing
 * (-EIO: then whether a parent is left empty is unknown, and the delete
 * fails rather than leave it behind); then @c holds what it found.
 */
static int empty_parents(struct eng *e, struct node *n, struct chain *c)
{
	struct node *last = n, *p;
	int r;

	while ((p = node_get(e, last->parent)) && p->ino != STORE_ROOT_INO &&
	       !p->meta.explicit_dir && !p->deleted) {
		if (c->len == c->cap) {
			size_t cap = c->cap ? 2 * c->cap : 8;
			struct node **grown = realloc(c->n, cap * sizeof(*grown));

			if (!grown)
				return -ENOMEM;
			c->n = grown;
			c->cap = cap;
		}
		p->holds++;
		r = dir_empty(e, p, last);
		if (r != 1) {
			node_put(e, p);
			if (r < 0)
				return r;
			break;
		}
		c->n[c->len++] = p;
		last = p;
	}
	return 0;
}

/* true when the chain empty_parents() found still holds, in memory. */
static bool chain_holds(struct eng *e, struct node *n, const struct chain *c)
{
	struct node *last = n;

	if (n->deleted)
		return false;
	for (size_t i = 0; i < c->len; i++) {
		if (c->n[i]->deleted || c->n[i]->ino != last->parent ||
		    has_pending_child(e, c->n[i], last))
			return false;
		last = c->n[i];
	}
	return true;
}

/* Deletes @n (held by the caller): logs and queues the deletion, with the
 * implicit parents it leaves empty; open handles keep reading the content.
 */
int node_delete(struct eng *e, struct node *n)
{
	struct dir_touch touch = {0};
	struct chain c = {0};
	int64_t now = now_ns();
	struct txn t;
	uint64_t gen;
	int r;

	txn_init(&t);
	for (;;) {
		if (n->deleted) {
			r = -ENOENT;
			goto out;
		}
		if (n->opens && !node_is_dir(n)) {
			/* handles opened before keep reading the published
			 * content: keep it in the node */
			struct item *it;

			r = node_content(e, n, &it);
			if (r < 0)
				goto out;
			item_unref(n->item);
			n->item = it;
		}
		gen = e->gen;
		r = empty_parents(e, n, &c);
		if (r < 0)
			goto out;
		if (gen == e->gen && chain_holds(e, n, &c))
			break;
		chain_put(e, &c); /* moved meanwhile: again */
	}
	r = txn_del(&t, n->ino);
	for (size_t i = 0; r == 0 && i < c.len; i++)
		r = txn_del(&t, c.n[i]->ino);
	if (r == 0) /* the directory that keeps existing */
		r = touch_add(&t, &touch,
			      node_get(e, (c.len ? c.n[c.len - 1] : n)->parent),
			      now);
	if (r == 0)
		r = txn_log(e, &t);
	if (r < 0)
		goto out;
	node_delete_apply(e, n, now);
	txn_queue(e, &t, 0, n);
	for (size_t i = 0; i < c.len; i++) {
		node_delete_apply(e, c.n[i], now);
		txn_queue(e, &t, i + 1, c.n[i]);
	}
	touch_apply(e, &t, &touch);
out:
	touch_release(&touch);
	chain_put(e, &c);
	free(c.n);
	txn_release(&t);
	return r;
}

int eng_lookup(struct eng *e, uint64_t parent, const char *name,
	       struct eng_attr *out)
{
	struct node *n;
	int r;

	pthread_mutex_lock(&e->lock);
	r = resolve_at(e, parent, name, &n);
	if (r < 0)
		goto out_unlock;
	n->nlookup++;
	dir_count(e, n); /* on failure, nlink shows 1: not counted */
	node_attr(e, n, out);
	node_put(e, n);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

void eng_forget(struct eng *e, uint64_t ino, uint64_t nlookup)
{
	struct node *n;

	pthread_mutex_lock(&e->lock);
	n = node_get(e, ino);
	if (n && ino != STORE_ROOT_INO) {
		n->nlookup = nlookup > n->nlookup ? 0 : n->nlookup - nlookup;
		node_try_free(e, n);
	}
	pthread_mutex_unlock(&e->lock);
}

int eng_getattr(struct eng *e, uint64_t ino, struct eng_attr *out)
{
	struct node *n;
	int r = 0;

	pthread_mutex_lock(&e->lock);
	n = node_get(e, ino);
	if (n) {
		n->holds++;
		dir_count(e, n); /* on failure, nlink shows 1: not counted */
		node_attr(e, n, out);
		node_put(e, n);
	} else {
		r = -ENOENT;
	}
	pthread_mutex_unlock(&e->lock);
	return r;
}

int eng_setattr(struct eng *e, uint64_t ino, struct eng_file *f,
		const struct eng_setattr *sa, const struct eng_ctx *ctx,
		struct eng_attr *out)
{
	/* a size change is a metadata change too: it sets ctime now, also
	 * when it goes to a working copy that is published later */
	bool changed = sa->set_mode || sa->set_uid || sa->set_gid ||
		       sa->set_mtime || sa->set_atime || sa->set_size;
	struct item_meta m;
	struct node *n;
	int r = 0;

	pthread_mutex_lock(&e->lock);
	n = node_get(e, ino);
	if (!n) {
		r = -ENOENT;
		goto out_unlock;
	}
	n->holds++;
	if (item_meta_copy(&m, &n->meta) < 0) {
		r = -ENOMEM;
		goto out_put;
	}
	if (sa->set_mode)
		m.mode = (m.mode & S_IFMT) | (sa->mode & 07777);
	if (sa->set_uid)
		m.uid = sa->uid;
	if (sa->set_gid)
		m.gid = sa->gid;
	if (sa->set_mtime)
		m.mtime_ns = sa->mtime_ns;
	if (sa->set_atime)
		m.atime_ns = sa->atime_ns;
	m.ctime_ns = sa->set_ctime ? sa->ctime_ns : now_ns();
	if (sa->set_size)
		r = setattr_size(e, n, f, sa->size, changed ? &m : NULL,
				 sa->set_mtime ? sa->mtime_ns : now_ns());
	else if (changed)
		r = meta_change(e, n, &m);
	if (r == 0 && sa->set_mtime && n->wc)
		n->wc->mtime_ns = sa->mtime_ns;
	if (r == 0) {
		dir_count(e, n); /* on failure, nlink shows 1: not counted */
		node_attr(e, n, out);
	}
	item_meta_release(&m);
out_put:
	node_put(e, n);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

int create_entry(struct eng *e, uint64_t parent, const char *name,
		 enum item_kind kind, uint32_t mode, const struct eng_ctx *ctx,
		 struct node **out)
{
	struct node *dir;
	uint64_t ino;
	int r = ino_grant(e, 1, &ino);

	if (r == 0)
		r = check_new_entry(e, parent, name, kind, &dir);
	if (r == 0)
		r = node_create(e, dir, NULL, 0, name, kind,
				mode & ~ctx->umask, ctx->uid, ctx->gid, true,
				ino, NULL, out);
	return r;
}

int eng_mkdir(struct eng *e, uint64_t parent, const char *name, uint32_t mode,
	      const struct eng_ctx *ctx, struct eng_attr *out)
{
	struct node *n;
	int r;

	pthread_mutex_lock(&e->lock);
	r = create_entry(e, parent, name, ITEM_DIR, mode, ctx, &n);
	if (r == 0) {
		n->nlookup++;
		node_attr(e, n, out);
		node_put(e, n);
	}
	pthread_mutex_unlock(&e->lock);
	return r;
}

/* rmdir (@dir) or unlink of @parent/@name. */
static int remove_entry(struct eng *e, uint64_t parent, const char *name,
			bool dir)
{
	struct node *n;
	int r;

	pthread_mutex_lock(&e->lock);
	r = resolve_at(e, parent, name, &n);
	if (r < 0)
		goto out_unlock;
	if (node_is_dir(n) != dir)
		r = dir ? -ENOTDIR : -EISDIR;
	else if (dir && (r = dir_empty(e, n, NULL)) == 0)
		r = -ENOTEMPTY;
	if (r >= 0)
		r = node_delete(e, n);
	node_put(e, n);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

int eng_rmdir(struct eng *e, uint64_t parent, const char *name)
{
	return remove_entry(e, parent, name, true);
}

int eng_unlink(struct eng *e, uint64_t parent, const char *name)
{
	return remove_entry(e, parent, name, false);
}


/* 0 when the content of file @n is valid JSON, -EINVAL when not; the
 * content is parsed with the lock dropped. *version is the version that
 * was checked. */
static int check_json_content(struct eng *e, struct node *n,
			      uint64_t *version)
{
	struct item *it;
	bool valid;
	int r = node_content(e, n, &it);

	if (r < 0)
		return r;
	*version = item_meta(it)->version;
	n->holds++;
	pthread_mutex_unlock(&e->lock);
	valid = item_json_valid(item_data(it), item_size(it));
	item_unref(it);
	pthread_mutex_lock(&e->lock);
	n->holds--;
	return valid ? 0 : -EINVAL;
}

/* true when @dir is @n or lies below it. */
static bool is_within(struct eng *e, const struct node *dir,
		      const struct node *n)
{
	for (; dir; dir = node_get(e, dir->parent))
		if (dir == n)
			return true;
	return false;
}

/* The length of the longest ID below directory @n in L3 (relative to @n's
 * ID, store.h), leaving out the rows of dirty nodes; 0 when none. May drop
 * the lock (holds @n). While L3 cannot answer (-EIO), renames go on as
 * other changes do: L3's rows count as none, and a log line says so. */
static int l3_longest_below(struct eng *e, struct node *n, uint64_t *len)
{
	uint64_t *except;
	struct tier_call c;
	size_t nexcept;
	int r = dirty_inos(e, false, &except, &nexcept);

	if (r < 0)
		return r;
	r = tier_enter(e, &c, OP_L3_ID_LEN, n, true);
	if (r == 0)
		r = e->l3->ops->longest_id_below(e->l3, n->ino, except, nexcept,
						 len);
	r = tier_leave(e, &c, r);
	free(except);
	if (r == -EIO) {
		eng_logf(&e->cfg.log, LOG_WARNING,
			 "cannot measure the IDs below '%s' in %s: the rename "
			 "goes on without that check",
			 n->name, e->l3->ops->name);
		*len = 0;
		r = 0;
	}
	return r;
}

#define ID_LEN_TRIES 100 /* walks lost to concurrent changes, then -EAGAIN */

/*
 * The length of the longest ID below directory @n, relative to @n's own
 * (@n_len bytes, 0 for the root): L3's rows below @n and below each dirty
 * directory under it, and the dirty entries under it as the node table
 * has them. May drop the lock; reads again when a batch committed, or a
 * directory turned dirty or moved, meanwhile.
 */
static int longest_below(struct eng *e, struct node *n, size_t n_len,
			 uint64_t *out)
{
	char id[ID_MAX + 1];

	for (int tries = 0; tries < ID_LEN_TRIES; tries++) {
		uint64_t gen = e->gen, marks = e->dirty_dirs, best, l3;
		struct node **dirs = NULL;
		size_t ndirs = 0, cap = 0;
		int r = 0;

		/* the dirty directories below @n, held */
		for (struct node *d = e->dirty_head; d && r == 0;
		     d = d->dnext) {
			if (d->deleted || d == n || !node_is_dir(d) ||
			    !is_within(e, d, n))
				continue;
			if (ndirs == cap) {
				struct node **grown;

				cap = cap ? 2 * cap : 8;
				grown = realloc(dirs, cap * sizeof(*grown));
				if (!grown) {
					r = -ENOMEM;
					break;
				}
				dirs = grown;
			}
			d->holds++;
			dirs[ndirs++] = d;
		}
		if (r == 0)
			r = l3_longest_below(e, n, &best);
		for (size_t i = 0; i < ndirs; i++) {
			ssize_t len;

			if (r == 0 && !dirs[i]->deleted &&
			    is_within(e, dirs[i], n)) {
				r = l3_longest_below(e, dirs[i], &l3);
				len = node_id(e, dirs[i], id, sizeof(id));
				if (r == 0 && len < 0)
					r = (int)len;
				if (r == 0 && l3 &&
				    (uint64_t)len - n_len + l3 > best)
					best = (uint64_t)len - n_len + l3;
			}
			node_put(e, dirs[i]);
		}
		free(dirs);
		if (r < 0)
			return r;
		if (gen != e->gen || marks != e->dirty_dirs)
			continue;
		/* the dirty entries below @n, where the node table has them */
		for (struct node *d = e->dirty_head; d; d = d->dnext) {
			ssize_t len;

			if (d->deleted || d == n || !is_within(e, d, n))
				continue;
			len = node_id(e, d, id, sizeof(id));
			if (len < 0)
				return (int)len;
			if ((uint64_t)len - n_len - (n_len ? 1 : 0) > best)
				best = (uint64_t)len - n_len - (n_len ? 1 : 0);
		}
		*out = best;
		return 0;
	}
	return -EAGAIN;
}

/* -ENAMETOOLONG when moving directory @n to @ndir/@newname would give an
 * entry below it an ID longer than ID_MAX. Only a move that makes @n's own
 * ID longer is checked, at the cost of a walk of its subtree in L3. May
 * drop the lock. */
static int check_ids_below(struct eng *e, struct node *n, struct node *ndir,
			   const char *newname)
{
	char id[ID_MAX + 1], seg[ID_MAX + 1];
	ssize_t old_len = node_id(e, n, id, sizeof(id));
	ssize_t dir_len = node_id(e, ndir, id, sizeof(id));
	ssize_t seg_len = id_segment_encode(newname, strlen(newname), seg,
					    sizeof(seg));
	uint64_t below = 0, new_len;
	int r;

	if (old_len < 0 || dir_len < 0 || seg_len < 0)
		return old_len < 0 ? (int)old_len
		       : dir_len < 0 ? (int)dir_len
				     : -ENAMETOOLONG;
	new_len = (uint64_t)dir_len + (dir_len ? 1 : 0) + (uint64_t)seg_len;
	if (new_len <= (uint64_t)old_len)
		return 0;
	r = longest_below(e, n, (size_t)old_len, &below);
	if (r < 0)
		return r;
	return below && new_len + 1 + below > ID_MAX ? -ENAMETOOLONG : 0;
}

/*
 * The checks of a rename of @n (in @dir) to @ndir/@newname, with target @t
 * (NULL when the name is free); may drop the lock. *kind is the moved
 * entry's kind at its new name; *checked the version whose content was
 * validated as JSON (0 when none was).
 */
static int rename_checks(struct eng *e, struct node *n, struct node *ndir,
			 const char *newname, struct node *t, unsigned flags,
			 enum item_kind kind, uint64_t *checked)
{
	int r;

	*checked = 0;
	if (t && (flags & RENAME_NOREPLACE))
		return -EEXIST;
	if (node_is_dir(n)) {
		if (is_within(e, ndir, n))
			return -EINVAL;
		r = check_ids_below(e, n, ndir, newname);
		if (r < 0)
			return r;
		if (t && !node_is_dir(t))
			return -ENOTDIR;
		if (t) {
			r = dir_empty(e, t, NULL);
			return r == 0 ? -ENOTEMPTY : r < 0 ? r : 0;
		}
		return 0;
	}
	if (t && node_is_dir(t))
		return -EISDIR;
	r = check_stem(e, ndir, newname, kind, n, t);
	if (r == 0 && kind == ITEM_JSON && n->meta.kind != ITEM_JSON)
		r = check_json_content(e, n, checked);
	return r;
}

#define RENAME_TRIES 100 /* rounds of checks lost to concurrent changes */

int eng_rename(struct eng *e, uint64_t parent, const char *name,
	       uint64_t newparent, const char *newname, unsigned flags)
{
	struct node *dir, *ndir, *n = NULL, *t = NULL;
	struct dir_touch touch[2] = {{0}};
	enum item_kind kind;
	struct item_meta m;
	int64_t now;
	uint64_t checked;
	struct txn t_;
	int r, tries = 0;

	if (flags & ~(unsigned)RENAME_NOREPLACE)
		return -EINVAL;
	txn_init(&t_);
	pthread_mutex_lock(&e->lock);
again:
	r = get_dir(e, parent, &dir);
	if (r == 0)
		r = get_dir(e, newparent, &ndir);
	if (r == 0)
		r = resolve(e, dir, name, &n);
	if (r < 0)
		goto out_unlock;
	kind = node_is_dir(n) ? ITEM_DIR : id_name_kind(newname);
	r = check_new_name(e, ndir, newname, kind);
	if (r == 0)
		r = resolve(e, ndir, newname, &t);
	if (r == -ENOENT) {
		t = NULL;
		r = 0;
	}
	if (r < 0 || t == n)
		goto out_put;
	r = rename_checks(e, n, ndir, newname, t, flags, kind, &checked);
	if (r < 0)
		goto out_put;
	/* The lock may have been dropped: check nothing moved meanwhile. */
	if (n->deleted || dir->deleted || ndir->deleted ||
	    (t && t->deleted) || n->parent != dir->ino ||
	    strcmp(n->name, name) != 0 ||
	    name_find(e, ndir->ino, newname) != t ||
	    (checked && checked != n->meta.version)) {
		node_put(e, t);
		node_put(e, n);
		n = t = NULL;
		if (++tries < RENAME_TRIES)
			goto again;
		r = -EAGAIN;
		goto out_unlock;
	}
	if (item_meta_copy(&m, &n->meta) < 0) {
		r = -ENOMEM;
		goto out_put;
	}
	now = now_ns();
	m.kind = kind;
	m.ctime_ns = now;
	r = t ? txn_del(&t_, t->ino) : 0;
	if (r == 0)
		r = txn_put(&t_, n->ino, ndir->ino, newname, &m, NULL);
	if (r == 0)
		r = touch_add(&t_, &touch[0], dir, now);
	if (r == 0 && ndir != dir)
		r = touch_add(&t_, &touch[1], ndir, now);
	if (r == 0)
		r = txn_log(e, &t_);
	if (r == 0 && t) {
		node_delete_apply(e, t, now);
		txn_queue(e, &t_, 0, t);
	}
	if (r == 0) {
		if (node_is_dir(n)) {
			e->dirty_dirs++; /* ID lengths read meanwhile: stale */
			if (dir != ndir) {
				subdirs_add(e, dir->ino, -1);
				subdirs_add(e, ndir->ino, 1);
			}
		}
		filter_del(e, n->parent, n->name);
		r = node_rename(e, n, ndir, newname);
		filter_add(e, ndir->ino, newname);
		item_meta_release(&n->meta);
		n->meta = m;
		memset(&m, 0, sizeof(m));
		txn_queue(e, &t_, t ? 1 : 0, n);
		touch_apply(e, &t_, &touch[0]);
		touch_apply(e, &t_, &touch[1]);
	}
	touch_release(&touch[0]);
	touch_release(&touch[1]);
	item_meta_release(&m);
out_put:
	node_put(e, t);
	node_put(e, n);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	txn_release(&t_);
	return r;
}
