/*
 * items.c - items by ID, the library view: put, get, delete and lookup walk
 * the directories of an ID from the root; listing walks the tree below a
 * prefix depth-first through directory handles, so that it pages through
 * L3 and merges pending changes exactly as readdir does.
 */
#include "eng_int.h"

/* An ID taken apart: its path split in place into directory components
 * and the file name. */
struct id_path {
	char path[ID_PATH_MAX];
	char *comps[ID_MAX / 2 + 1];
	size_t ndirs; /* comps[0..ndirs) are directories */
	const char *name;
};

static int id_path_split(const char *id, enum item_kind kind,
			 struct id_path *p)
{
	ssize_t len = id_to_path(id, kind, p->path, sizeof(p->path));
	char *comp, *slash;

	if (len < 0)
		return (int)len;
	p->ndirs = 0;
	for (comp = p->path; (slash = strchr(comp, '/')); comp = slash + 1) {
		*slash = '\0';
		p->comps[p->ndirs++] = comp;
	}
	p->name = comp;
	return 0;
}

/*
 * Walks the directories of @p from the root as far as they exist and
 * returns the deepest one held (*dirp) and how many exist (*found).
 * -ENOTDIR when a component is a file. May drop the lock.
 */
static int walk_dirs(struct eng *e, const struct id_path *p,
		     struct node **dirp, size_t *found)
{
	struct node *dir = node_get(e, STORE_ROOT_INO), *next;
	size_t i;
	int r = 0;

	dir->holds++;
	for (i = 0; i < p->ndirs; i++) {
		r = resolve(e, dir, p->comps[i], &next);
		if (r == -ENOENT) {
			r = 0;
			break;
		}
		if (r == 0 && !node_is_dir(next)) {
			node_put(e, next);
			r = -ENOTDIR;
		}
		if (r < 0)
			break;
		node_put(e, dir);
		dir = next;
	}
	if (r < 0) {
		node_put(e, dir);
		return r;
	}
	*dirp = dir;
	*found = i;
	return 0;
}

/* Finds the file of @p, all of whose directories must exist. */
static int walk_file(struct eng *e, const struct id_path *p, struct node **out)
{
	struct node *dir;
	size_t found;
	int r = walk_dirs(e, p, &dir, &found);

	if (r < 0)
		return r;
	r = found < p->ndirs ? -ENOENT : resolve(e, dir, p->name, out);
	node_put(e, dir);
	if (r == 0 && node_is_dir(*out)) {
		node_put(e, *out);
		r = -EISDIR;
	}
	return r;
}

/*
 * Creates the file of @p (with the directories it lacks) holding @d, or
 * publishes @d as its next version. The checks may drop the lock: they run
 * again when a batch committed meanwhile or the first missing name got
 * taken.
 */
static int put_locked(struct eng *e, const struct id_path *p,
		      enum item_kind kind, struct draft *d)
{
	struct node *dir, *n;
	const char *first;
	uint64_t gen, ino;
	size_t found;
	int r;

	for (;;) {
		gen = e->gen;
		r = walk_dirs(e, p, &dir, &found);
		if (r < 0)
			return r;
		if (found == p->ndirs) {
			r = resolve(e, dir, p->name, &n);
			if (r == 0) {
				r = node_is_dir(n) ? -EISDIR
						   : publish(e, n, d, now_ns(),
							     NULL);
				node_put(e, n);
				break;
			}
			if (r == -ENOENT)
				r = check_stem(e, dir, p->name, kind, NULL,
					       NULL);
			if (r < 0)
				break;
		}
		r = ino_grant(e, p->ndirs - found + 1, &ino);
		if (r < 0)
			break;
		first = found < p->ndirs ? p->comps[found] : p->name;
		if (gen == e->gen && !dir->deleted &&
		    !name_find(e, dir->ino, first)) {
			r = node_create(e, dir, p->comps + found,
					p->ndirs - found, p->name, kind, 0644,
					getuid(), getgid(), true, ino, d, &n);
			if (r == 0)
				node_put(e, n);
			break;
		}
		node_put(e, dir);
	}
	node_put(e, dir);
	return r;
}

int eng_put(struct eng *e, const char *id, enum item_kind kind,
	    const void *data, size_t len)
{
	struct id_path *p;
	struct draft d;
	void *copy;
	int r;

	if (kind == ITEM_DIR)
		return -EINVAL;
	if (len > e->cfg.max_item_bytes)
		return -EFBIG;
	copy = malloc(len ? len : 1);
	p = malloc(sizeof(*p));
	if (!copy || !p) {
		free(copy);
		free(p);
		return -ENOMEM;
	}
	memcpy(copy, data, len);
	r = draft_make(&d, copy, len, kind, e->cfg.max_item_bytes);
	if (r == 0)
		r = id_path_split(id, kind, p);
	if (r == 0) {
		pthread_mutex_lock(&e->lock);
		r = put_locked(e, p, kind, &d);
		pthread_mutex_unlock(&e->lock);
	}
	draft_release(&d);
	free(p);
	return r;
}

/* Finds the file of ID @id and runs @op on its node under e->lock; returns
 * what @op returns, or the error of finding the file. */
static int file_op(struct eng *e, const char *id, enum item_kind kind,
		   int (*op)(struct eng *e, struct node *n, void *arg),
		   void *arg)
{
	struct id_path *p;
	struct node *n;
	int r;

	if (kind == ITEM_DIR)
		return -EINVAL;
	p = malloc(sizeof(*p));
	if (!p)
		return -ENOMEM;
	r = id_path_split(id, kind, p);
	if (r == 0) {
		pthread_mutex_lock(&e->lock);
		r = walk_file(e, p, &n);
		if (r == 0) {
			r = op(e, n, arg);
			node_put(e, n);
		}
		pthread_mutex_unlock(&e->lock);
	}
	free(p);
	return r;
}

/* file_op's @op of eng_get(): @arg is a struct item ** */
static int file_get(struct eng *e, struct node *n, void *arg)
{
	return node_content(e, n, arg);
}

/* file_op's @op of eng_delete() */
static int file_delete(struct eng *e, struct node *n, void *arg)
{
	(void)arg;
	return node_delete(e, n);
}

/* file_op's @op of eng_lookup_id(): @arg is a struct eng_attr * */
static int file_lookup(struct eng *e, struct node *n, void *arg)
{
	n->nlookup++;
	node_attr(e, n, arg);
	return 0;
}

int eng_get(struct eng *e, const char *id, enum item_kind kind,
	    struct item **out)
{
	return file_op(e, id, kind, file_get, out);
}

int eng_delete(struct eng *e, const char *id, enum item_kind kind)
{
	return file_op(e, id, kind, file_delete, NULL);
}

int eng_lookup_id(struct eng *e, const char *id, enum item_kind kind,
		  struct eng_attr *out)
{
	return file_op(e, id, kind, file_lookup, out);
}

/*
 * Listing. One directory handle per level of the walk, and one page of
 * entries shared by all levels: a page ends after its first directory, so
 * the walk hands out the page's files, then descends into that directory
 * (which reuses the page) and, back, reads on from the handle's cursor.
 * Memory is a page plus a handle per level; each readdir call pages
 * through L3 from the entry it stopped at.
 */
struct list_entry {
	char name[STORE_NAME_MAX + 1];
	struct eng_attr attr;
};

struct list_walk {
	struct eng *e;
	eng_id_fn fn;
	void *arg;
	char id[ID_MAX + 1];
	struct list_entry page[LIST_PAGE];
	size_t n;	   /* entries in page */
	uint64_t next_off; /* readdir cookie after the last one */
};

/* The readdir callback: takes entries until the page is full or holds a
 * directory (its last entry then). */
static int list_collect(void *arg, const char *name,
			const struct eng_attr *attr, uint64_t next_off)
{
	struct list_walk *w = arg;
	struct list_entry *le;

	if (w->n == LIST_PAGE ||
	    (w->n && w->page[w->n - 1].attr.kind == ITEM_DIR))
		return 1;
	le = &w->page[w->n++];
	snprintf(le->name, sizeof(le->name), "%s", name);
	le->attr = *attr;
	w->next_off = next_off;
	return 0;
}

/* Appends to w->id (holding @len bytes) the segment of entry @le. Returns
 * the new length, or -ENAMETOOLONG when the ID would pass ID_MAX (an entry
 * under a renamed directory: no ID names it). */
static ssize_t list_id_append(struct list_walk *w, size_t len,
			      const struct list_entry *le)
{
	size_t nlen = strlen(le->name);
	ssize_t seg;

	if (le->attr.kind != ITEM_DIR)
		nlen = id_stem_len(le->name, nlen);
	if (len + 1 >= sizeof(w->id))
		return -ENAMETOOLONG;
	if (len)
		w->id[len++] = '.';
	seg = id_segment_encode(le->name, nlen, w->id + len,
				sizeof(w->id) - len);
	if (seg < 0)
		return -ENAMETOOLONG;
	return (ssize_t)len + seg;
}

/* Lists the items under directory @ino (looked up by the caller), whose
 * ID prefix is w->id[0..len). */
static int list_dir(struct list_walk *w, uint64_t ino, size_t len)
{
	struct eng_dir *d;
	struct eng_attr a;
	uint64_t off = 0;
	ssize_t idlen;
	int r = eng_opendir(w->e, ino, &d);

	if (r < 0)
		return r;
	for (;;) {
		struct list_entry *last;

		w->n = 0;
		r = eng_readdir(w->e, d, off, false, list_collect, w, NULL);
		if (r < 0 || w->n == 0)
			break;
		off = w->next_off;
		for (size_t i = 0; i < w->n && r == 0; i++) {
			if (w->page[i].attr.kind == ITEM_DIR)
				continue;
			idlen = list_id_append(w, len, &w->page[i]);
			if (idlen < 0)
				continue;
			w->id[idlen] = '\0';
			r = w->fn(w->arg, w->id, &w->page[i].attr);
		}
		last = &w->page[w->n - 1];
		if (r != 0)
			break;
		if (last->attr.kind != ITEM_DIR) {
			if (w->n < LIST_PAGE)
				break; /* readdir reached the end */
			continue;
		}
		idlen = list_id_append(w, len, last);
		if (idlen < 0)
			continue;
		r = eng_lookup(w->e, ino, last->name, &a);
		if (r == -ENOENT || (r == 0 && a.kind != ITEM_DIR)) {
			/* removed or replaced since the listing */
			if (r == 0)
				eng_forget(w->e, a.ino, 1);
			r = 0;
			continue;
		}
		if (r < 0)
			break;
		r = list_dir(w, a.ino, (size_t)idlen);
		eng_forget(w->e, a.ino, 1);
		if (r != 0)
			break;
	}
	eng_releasedir(w->e, d);
	w->id[len] = '\0';
	return r;
}

int eng_list_ids(struct eng *e, const char *prefix, eng_id_fn fn, void *arg)
{
	uint64_t ino = STORE_ROOT_INO;
	struct list_walk *w;
	struct id_path *p;
	size_t len = strlen(prefix);
	int r = 0;

	if (len) {
		r = id_validate(prefix, len, ITEM_DIR);
		if (r < 0)
			return r;
	}
	w = malloc(sizeof(*w));
	p = malloc(sizeof(*p));
	if (!w || !p) {
		r = -ENOMEM;
		goto out_free;
	}
	w->e = e;
	w->fn = fn;
	w->arg = arg;
	memcpy(w->id, prefix, len + 1);
	/* the prefix's directory, a lookup reference held on each step */
	if (len)
		r = id_path_split(prefix, ITEM_DIR, p);
	for (size_t i = 0; len && r == 0 && i <= p->ndirs; i++) {
		const char *comp = i < p->ndirs ? p->comps[i] : p->name;
		struct eng_attr a;

		r = eng_lookup(e, ino, comp, &a);
		if (ino != STORE_ROOT_INO)
			eng_forget(e, ino, 1);
		ino = STORE_ROOT_INO;
		if (r == 0 && a.kind != ITEM_DIR) {
			eng_forget(e, a.ino, 1);
			r = -ENOTDIR;
		}
		if (r == 0)
			ino = a.ino;
	}
	if (r == 0)
		r = list_dir(w, ino, len);
	if (ino != STORE_ROOT_INO)
		eng_forget(e, ino, 1);
out_free:
	free(p);
	free(w);
	return r;
}
