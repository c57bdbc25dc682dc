/*
 * items.c - items by ID, the library view: put, get and delete walk the
 * directories of an ID from the root.
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

/* Finds the file of ID @id and reads it (*out: a new reference) or, with
 * @out NULL, deletes it. */
static int file_op(struct eng *e, const char *id, enum item_kind kind,
		   struct item **out)
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
			r = out ? node_content(e, n, out) : node_delete(e, n);
			node_put(e, n);
		}
		pthread_mutex_unlock(&e->lock);
	}
	free(p);
	return r;
}

int eng_get(struct eng *e, const char *id, enum item_kind kind,
	    struct item **out)
{
	return file_op(e, id, kind, out);
}

int eng_delete(struct eng *e, const char *id, enum item_kind kind)
{
	return file_op(e, id, kind, NULL);
}
