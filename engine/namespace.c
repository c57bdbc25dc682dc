/*
 * namespace.c - the namespace operations: lookup, forget, getattr,
 * setattr, mkdir, rmdir, unlink, rename, and the node-level create, delete
 * and move they are made of.
 */
#include "eng_int.h"

/*
 * Creates a new entry @name of @kind in @dir (which the caller checked) and
 * returns it held. Files start as an empty published version 1.
 */
int node_create(struct eng *e, struct node *dir, const char *name,
		       enum item_kind kind, uint32_t mode, uint32_t uid,
		       uint32_t gid, bool explicit_dir, struct node **out)
{
	struct item_meta meta = {0};
	struct node *n;
	uint64_t ino;
	int r = 0;

	ino = next_ino(e, &r);
	if (!ino)
		return r;
	meta.kind = kind;
	meta.mode = (kind == ITEM_DIR ? S_IFDIR : S_IFREG) | (mode & 07777);
	meta.uid = uid;
	meta.gid = gid;
	meta.mtime_ns = meta.ctime_ns = now_ns();
	meta.version = kind == ITEM_DIR ? 1 : 0; /* files: publish makes 1 */
	meta.explicit_dir = explicit_dir;
	n = node_add(e, dir, ino, name, &meta);
	if (!n)
		return -ENOMEM;
	filter_add(e, dir->ino, name);
	n->holds++;
	if (kind == ITEM_DIR)
		r = mark_dirty(e, n, NULL);
	else
		r = publish(e, n, malloc(1), 0, n->meta.mtime_ns);
	if (r < 0) {
		/* undo: nothing was queued */
		name_del(e, n);
		n->deleted = true;
		node_put(e, n);
		return r;
	}
	*out = n;
	return 0;
}

/* Deletes @n (held by the caller): queues the deletion; open handles keep
 * reading the content; an implicit parent left empty goes too. */
int node_delete(struct eng *e, struct node *n)
{
	struct node *parent;
	int r;

	if (n->opens && !node_is_dir(n)) {
		/* handles opened before keep reading the published content */
		struct item *it;

		r = node_content(e, n, &it);
		if (r < 0)
			return r;
		if (n->deleted) {
			item_unref(it);
			return -ENOENT;
		}
		item_unref(n->item);
		n->item = it;
	}
	filter_del(e, n->parent, n->name);
	name_del(e, n);
	n->deleted = true;
	n->content_dirty = false;
	n->meta.ctime_ns = now_ns();
	l1_remove(e->l1, n->ino);
	if (!n->opens) {
		item_unref(n->item);
		n->item = NULL;
	}
	r = mark_dirty(e, n, NULL);
	if (r < 0)
		return r;
	parent = node_get(e, n->parent);
	if (parent && parent->ino != STORE_ROOT_INO &&
	    !parent->meta.explicit_dir && !parent->deleted) {
		parent->holds++;
		if (dir_empty(e, parent) == 1 && !parent->deleted)
			node_delete(e, parent);
		node_put(e, parent);
	}
	return 0;
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
	if (n)
		node_attr(e, n, out);
	else
		r = -ENOENT;
	pthread_mutex_unlock(&e->lock);
	return r;
}

int eng_setattr(struct eng *e, uint64_t ino, struct eng_file *f,
		const struct eng_setattr *sa, const struct eng_ctx *ctx,
		struct eng_attr *out)
{
	struct node *n;
	bool meta = false;
	int r = 0;

	pthread_mutex_lock(&e->lock);
	n = node_get(e, ino);
	if (!n) {
		r = -ENOENT;
		goto out_unlock;
	}
	n->holds++;
	if (sa->set_size) {
		r = setattr_size(e, n, f, sa->size);
		if (r < 0)
			goto out_put;
	}
	if (sa->set_mode) {
		n->meta.mode = (n->meta.mode & S_IFMT) | (sa->mode & 07777);
		meta = true;
	}
	if (sa->set_uid) {
		n->meta.uid = sa->uid;
		meta = true;
	}
	if (sa->set_gid) {
		n->meta.gid = sa->gid;
		meta = true;
	}
	if (sa->set_mtime) {
		n->meta.mtime_ns = sa->mtime_ns;
		if (n->wc)
			n->wc->mtime_ns = sa->mtime_ns;
		meta = true;
	}
	if (meta) {
		n->meta.ctime_ns = sa->set_ctime ? sa->ctime_ns : now_ns();
		if (!n->deleted)
			r = mark_dirty(e, n, NULL);
	}
	if (r == 0)
		node_attr(e, n, out);
out_put:
	node_put(e, n);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

int eng_mkdir(struct eng *e, uint64_t parent, const char *name, uint32_t mode,
	      const struct eng_ctx *ctx, struct eng_attr *out)
{
	struct node *dir, *n;
	int r;

	pthread_mutex_lock(&e->lock);
	r = check_new_entry(e, parent, name, ITEM_DIR, &dir);
	if (r < 0)
		goto out_unlock;
	r = node_create(e, dir, name, ITEM_DIR, mode & ~ctx->umask, ctx->uid,
			ctx->gid, true, &n);
	if (r < 0)
		goto out_unlock;
	n->nlookup++;
	node_attr(e, n, out);
	node_put(e, n);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

int eng_rmdir(struct eng *e, uint64_t parent, const char *name)
{
	struct node *n;
	int r;

	pthread_mutex_lock(&e->lock);
	r = resolve_at(e, parent, name, &n);
	if (r < 0)
		goto out_unlock;
	if (!node_is_dir(n)) {
		r = -ENOTDIR;
		goto out_put;
	}
	r = dir_empty(e, n);
	if (r == 0)
		r = -ENOTEMPTY;
	if (r < 0)
		goto out_put;
	r = n->deleted ? -ENOENT : node_delete(e, n);
out_put:
	node_put(e, n);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

int eng_unlink(struct eng *e, uint64_t parent, const char *name)
{
	struct node *n;
	int r;

	pthread_mutex_lock(&e->lock);
	r = resolve_at(e, parent, name, &n);
	if (r < 0)
		goto out_unlock;
	r = node_is_dir(n) ? -EISDIR : node_delete(e, n);
	node_put(e, n);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
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

/* Moves @n to @dir/@name. */
static int node_move(struct eng *e, struct node *n, struct node *dir,
		     const char *name)
{
	char *nm = strdup(name);
	struct node *old_parent = node_get(e, n->parent);

	if (!nm)
		return -ENOMEM;
	filter_del(e, n->parent, n->name);
	name_del(e, n);
	free(n->name);
	n->name = nm;
	n->parent = dir->ino;
	dir->children++;
	filter_add(e, dir->ino, name);
	if (name_add(e, n) < 0)
		return -ENOMEM;
	n->meta.ctime_ns = now_ns();
	if (old_parent) {
		old_parent->children--;
		node_try_free(e, old_parent);
	}
	return mark_dirty(e, n, NULL);
}

int eng_rename(struct eng *e, uint64_t parent, const char *name,
	       uint64_t newparent, const char *newname, unsigned flags)
{
	struct node *dir, *ndir, *n = NULL, *t = NULL;
	enum item_kind kind;
	int r;

	if (flags & ~(unsigned)RENAME_NOREPLACE)
		return -EINVAL;
	pthread_mutex_lock(&e->lock);
	r = get_dir(e, parent, &dir);
	if (r == 0)
		r = get_dir(e, newparent, &ndir);
	if (r < 0)
		goto out_unlock;
	r = resolve(e, dir, name, &n);
	if (r < 0)
		goto out_unlock;
	kind = node_is_dir(n) ? ITEM_DIR : id_name_kind(newname);
	r = check_new_name(e, ndir, newname, kind);
	if (r < 0)
		goto out_put;
	r = resolve(e, ndir, newname, &t);
	if (r == -ENOENT) {
		t = NULL;
		r = 0;
	}
	if (r < 0)
		goto out_put;
	if (t == n) {
		r = 0;
		goto out_put;
	}
	if (t && (flags & RENAME_NOREPLACE)) {
		r = -EEXIST;
		goto out_put;
	}
	if (node_is_dir(n)) {
		if (is_within(e, ndir, n)) {
			r = -EINVAL;
			goto out_put;
		}
		if (t && !node_is_dir(t)) {
			r = -ENOTDIR;
			goto out_put;
		}
		if (t) {
			r = dir_empty(e, t);
			if (r == 0)
				r = -ENOTEMPTY;
			if (r < 0)
				goto out_put;
		}
	} else {
		if (t && node_is_dir(t)) {
			r = -EISDIR;
			goto out_put;
		}
		r = check_stem(e, ndir, newname, kind, n, t);
		if (r < 0)
			goto out_put;
		if (kind == ITEM_JSON && n->meta.kind != ITEM_JSON) {
			struct item *it;

			r = node_content(e, n, &it);
			if (r < 0)
				goto out_put;
			if (!item_json_valid(item_data(it), item_size(it)))
				r = -EINVAL;
			item_unref(it);
			if (r < 0)
				goto out_put;
		}
	}
	/* The lock may have been dropped: check nothing went away. */
	if (n->deleted || ndir->deleted || (t && t->deleted) ||
	    name_find(e, ndir->ino, newname) != t) {
		r = -EAGAIN;
		goto out_put;
	}
	if (t) {
		r = node_delete(e, t);
		if (r < 0)
			goto out_put;
	}
	n->meta.kind = kind;
	r = node_move(e, n, ndir, newname);
out_put:
	node_put(e, t);
	node_put(e, n);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}
