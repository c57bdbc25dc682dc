/*
 * resolve.c - finding entries by name: the node table first, then the
 * filter, then an L3 lookup that adds a node; the checks a new name must
 * pass (a valid ID, free, no other file with the same item ID); whether a
 * directory is empty.
 */
#include "eng_int.h"

/* Checks that @name is a valid name for a new entry of @kind in @dir and
 * that the resulting ID is valid. */
int check_new_name(struct eng *e, struct node *dir, const char *name,
		   enum item_kind kind)
{
	char path[ID_PATH_MAX + ID_NAME_MAX + 2], id[ID_MAX + 1];
	ssize_t len;
	int r = id_check_name(name, strlen(name));

	if (r < 0)
		return r;
	len = node_path(e, dir, path, ID_PATH_MAX);
	if (len < 0)
		return (int)len;
	snprintf(path + len, sizeof(path) - (size_t)len, "%s%s", len ? "/" : "",
		 name);
	len = id_from_path(path, kind == ITEM_DIR, id, sizeof(id), NULL);
	if (len == -ERANGE)
		return -ENAMETOOLONG;
	return len < 0 ? (int)len : 0;
}


/*
 * Finds the entry @name in directory @dir and returns it held (*out; drop
 * with node_put). May drop and retake e->lock. -ENOENT, -ENOTDIR, -EIO.
 */
int resolve(struct eng *e, struct node *dir, const char *name,
	    struct node **out)
{
	struct store_row row;
	struct tier_call c;
	struct node *n;
	int r, loads = 0;
	bool maybe;

	if (!node_is_dir(dir))
		return -ENOTDIR;
	for (;;) {
		if (dir->deleted)
			return -ENOENT;
		n = name_find(e, dir->ino, name);
		if (n) {
			n->holds++;
			*out = n;
			return 0;
		}
		if (strlen(name) > STORE_NAME_MAX)
			return -ENAMETOOLONG;
		if (filter_absent(e, dir->ino, name))
			return -ENOENT;
		maybe = e->filter_trusted; /* the filter said "maybe" */
		/* a page of the directory answers this name and its
		 * siblings' (dirsnap.c) */
		r = snap_resolve(e, dir, name, &loads, out);
		if (r == 2)
			continue; /* loaded with the lock dropped */
		if (r <= 0)
			return r;
		e->l3_lookups++;
		r = tier_enter(e, &c, OP_L3_LOOKUP, dir, true);
		if (r == 0)
			r = e->l3->ops->lookup(e->l3, dir->ino, name, &row);
		r = tier_leave(e, &c, r);
		if (r < 0 && r != -ENOENT)
			return r;
		n = name_find(e, dir->ino, name);
		if (n || tier_stale(e, &c)) {
			if (r == 0)
				store_row_release(&row);
			continue;
		}
		if (r == -ENOENT) {
			e->filter_false_positives += maybe;
			return -ENOENT;
		}
		if (node_get(e, row.ino) || dir->deleted) {
			/* the node table says it moved or went away */
			store_row_release(&row);
			return -ENOENT;
		}
		if (row_too_big(e, &row)) {
			store_row_release(&row);
			return -EUCLEAN; /* as a corrupt row: not shown */
		}
		n = node_add(e, dir, row.ino, row.name, &row.meta);
		store_row_release(&row);
		if (!n)
			return -ENOMEM;
		n->holds++;
		*out = n;
		return 0;
	}
}

/* The directory node of inode @ino, which the caller holds a reference on
 * (lookup, open). -ENOENT when unknown or deleted, -ENOTDIR. */
bool row_too_big(struct eng *e, const struct store_row *row)
{
	if (row->meta.kind == ITEM_DIR ||
	    row->meta.size <= e->cfg.max_item_bytes)
		return false;
	/* every listing meets it again: say so once per entry */
	if (u64map_get(&e->too_big, row->ino) ||
	    u64map_put(&e->too_big, row->ino, (void *)1) < 0)
		return true;
	e->corrupt_rows++;
	eng_logf(&e->cfg.log, LOG_ERR,
		 "%s holds entry %llu ('%s') of %llu bytes, more than "
		 "max_item_bytes: not shown",
		 e->l3->ops->name, (unsigned long long)row->ino, row->name,
		 (unsigned long long)row->meta.size);
	return true;
}

int get_dir(struct eng *e, uint64_t ino, struct node **out)
{
	struct node *n = node_get(e, ino);

	if (!n || n->deleted)
		return -ENOENT;
	if (!node_is_dir(n))
		return -ENOTDIR;
	*out = n;
	return 0;
}

/* resolve() in the directory of inode @parent (held by the caller). */
int resolve_at(struct eng *e, uint64_t parent, const char *name,
	       struct node **out)
{
	struct node *dir;
	int r = get_dir(e, parent, &dir);

	return r < 0 ? r : resolve(e, dir, name, out);
}

/*
 * -EEXIST when another file in @dir would have the same item ID as a file
 * named @name: "x" (binary) and "x.json" (JSON) name the same item "x".
 * @ignore and @ignore2 (may be NULL) are nodes that do not count.
 */
int check_stem(struct eng *e, struct node *dir, const char *name,
	       enum item_kind kind, const struct node *ignore,
	       const struct node *ignore2)
{
	char sib[STORE_NAME_MAX + 8];
	size_t len = strlen(name);
	struct node *n;
	int r;

	if (kind == ITEM_DIR)
		return 0;
	if (kind == ITEM_JSON) {
		memcpy(sib, name, len - 5);
		sib[len - 5] = '\0';
	} else {
		if (len + 5 > STORE_NAME_MAX)
			return 0;
		snprintf(sib, sizeof(sib), "%s.json", name);
	}
	r = resolve(e, dir, sib, &n);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	r = (!node_is_dir(n) && n != ignore && n != ignore2) ? -EEXIST : 0;
	node_put(e, n);
	return r;
}

/*
 * 1 when directory @dir has no children (pending ones included) other than
 * @ignore (may be NULL), 0 when it has, or a negative errno. May drop the
 * lock.
 */
int dir_empty(struct eng *e, struct node *dir, const struct node *ignore)
{
	char cursor[STORE_NAME_MAX + 1] = "";
	struct store_row *rows;
	struct tier_call c;
	int r, nrows;

	rows = calloc(LIST_PAGE, sizeof(*rows));
	if (!rows)
		return -ENOMEM;
restart:
	for (struct node *d = e->dirty_head; d; d = d->dnext) {
		if (!d->deleted && d->parent == dir->ino && d != ignore) {
			r = 0;
			goto out;
		}
	}
	for (;;) {
		r = tier_enter(e, &c, OP_L3_LIST, dir, true);
		if (r == 0)
			r = e->l3->ops->list(e->l3, dir->ino, cursor, rows,
					     LIST_PAGE);
		r = tier_leave(e, &c, r);
		if (r < 0)
			goto out;
		nrows = r;
		if (tier_stale(e, &c)) {
			for (int i = 0; i < nrows; i++)
				store_row_release(&rows[i]);
			cursor[0] = '\0';
			goto restart;
		}
		r = -1;
		for (int i = 0; i < nrows; i++) {
			struct node *m = node_get(e, rows[i].ino);

			/* a row without a node is a child (@ignore has one) */
			if (r && (!m || (m != ignore && !m->deleted &&
					 m->parent == dir->ino)))
				r = 0; /* a child that is still there */
		}
		if (nrows)
			strcpy(cursor, rows[nrows - 1].name);
		for (int i = 0; i < nrows; i++)
			store_row_release(&rows[i]);
		if (r == 0)
			goto out;
		if (nrows < LIST_PAGE) {
			r = 1;
			goto out;
		}
	}
out:
	free(rows);
	return r;
}

/*
 * Checks that a new entry @name of @kind may be made in directory @parent:
 * a valid name and ID, not taken, and (for a file) no other file with the
 * same item ID. Returns 0 and the directory in *dirp, or a negative errno.
 */
int check_new_entry(struct eng *e, uint64_t parent, const char *name,
		    enum item_kind kind, struct node **dirp)
{
	struct node *dir, *n;
	uint64_t gen;
	int r;

	do {
		gen = e->gen;
		r = get_dir(e, parent, &dir);
		if (r < 0)
			return r;
		r = check_new_name(e, dir, name, kind);
		if (r < 0)
			return r;
		r = resolve(e, dir, name, &n);
		if (r == 0) {
			node_put(e, n);
			return -EEXIST;
		}
		if (r != -ENOENT)
			return r;
		r = check_stem(e, dir, name, kind, NULL, NULL);
		if (r < 0)
			return r;
		/* the stem check may have dropped the lock: the name may
		 * have been taken here, or committed and forgotten */
	} while (gen != e->gen || dir->deleted || name_find(e, dir->ino, name));
	*dirp = dir;
	return 0;
}

int dirty_inos(struct eng *e, bool dirs_only, uint64_t **out, size_t *n)
{
	uint64_t *a = NULL;
	size_t k = 0, cap = 0;

	for (struct node *d = e->dirty_head; d; d = d->dnext) {
		if (dirs_only && !node_is_dir(d))
			continue;
		if (k == cap) {
			uint64_t *grown;

			cap = cap ? 2 * cap : 16;
			grown = realloc(a, cap * sizeof(*a));
			if (!grown) {
				free(a);
				return -ENOMEM;
			}
			a = grown;
		}
		a[k++] = d->ino;
	}
	*out = a;
	*n = k;
	return 0;
}

#define COUNT_TRIES 100 /* counts lost to concurrent changes, then -EAGAIN */

int subdirs_of(struct eng *e, uint64_t ino, struct node *hold,
	       uint64_t *count)
{
	for (int tries = 0; tries < COUNT_TRIES; tries++) {
		uint64_t marks = e->dirty_dirs, *except, got = 0;
		struct tier_call c;
		size_t n;
		int r = dirty_inos(e, true, &except, &n);

		if (r < 0)
			return r;
		r = tier_enter(e, &c, OP_L3_SUBDIRS, hold, true);
		if (r == 0)
			r = e->l3->ops->count_subdirs(e->l3, ino, except, n,
						      &got);
		r = tier_leave(e, &c, r);
		free(except);
		if (r < 0)
			return r;
		if (tier_stale(e, &c) || e->dirty_dirs != marks)
			continue;
		for (struct node *d = e->dirty_head; d; d = d->dnext)
			if (!d->deleted && node_is_dir(d) && d->parent == ino)
				got++;
		*count = got;
		return 0;
	}
	return -EAGAIN;
}

int dir_count(struct eng *e, struct node *dir)
{
	uint64_t count;
	int r;

	if (!node_is_dir(dir) || dir->subdirs_known || dir->deleted)
		return 0;
	r = subdirs_of(e, dir->ino, dir, &count);
	if (r == 0 && !dir->subdirs_known) {
		dir->subdirs = count;
		dir->subdirs_known = true;
	}
	return r;
}

void subdirs_add(struct eng *e, uint64_t ino, int delta)
{
	struct node *d = node_get(e, ino);

	if (!d || !d->subdirs_known)
		return;
	if (delta < 0 && d->subdirs < (uint64_t)-delta)
		d->subdirs = 0;
	else
		d->subdirs += (uint64_t)(int64_t)delta;
}
