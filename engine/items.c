/*
 * items.c - items by ID, the library view: put, get and delete walk the
 * directories of an ID from the root.
 */
#include "eng_int.h"

/*
 * Walks the directories of ID @id (of @kind) from the root, creating missing
 * ones as implicit directories when @create, and returns the last
 * directory held (*dirp) and the file name in @name.
 */
static int walk_id(struct eng *e, const char *id, enum item_kind kind,
		   bool create, struct node **dirp, char *name)
{
	char path[ID_PATH_MAX];
	ssize_t len = id_to_path(id, kind, path, sizeof(path));
	struct node *dir, *next;
	char *comp, *slash;
	int r;

	if (len < 0)
		return (int)len;
	dir = node_get(e, STORE_ROOT_INO);
	dir->holds++;
	for (comp = path; (slash = strchr(comp, '/')); comp = slash + 1) {
		*slash = '\0';
		r = resolve(e, dir, comp, &next);
		if (r == -ENOENT && create)
			r = node_create(e, dir, comp, ITEM_DIR, 0755, getuid(),
					getgid(), false, &next);
		if (r == 0 && !node_is_dir(next)) {
			node_put(e, next);
			r = -ENOTDIR;
		}
		node_put(e, dir);
		if (r < 0)
			return r;
		dir = next;
	}
	strcpy(name, comp);
	*dirp = dir;
	return 0;
}

int eng_put(struct eng *e, const char *id, enum item_kind kind,
	    const void *data, size_t len)
{
	char name[ID_NAME_MAX + 1];
	struct node *dir, *n;
	void *copy;
	int r;

	if (kind == ITEM_DIR)
		return -EINVAL;
	if (len > e->cfg.max_item_bytes)
		return -EFBIG;
	if (kind == ITEM_JSON && !item_json_valid(data, len))
		return -EINVAL;
	pthread_mutex_lock(&e->lock);
	r = walk_id(e, id, kind, true, &dir, name);
	if (r < 0)
		goto out_unlock;
	r = resolve(e, dir, name, &n);
	if (r == -ENOENT) {
		r = check_stem(e, dir, name, kind, NULL, NULL);
		if (r == 0)
			r = node_create(e, dir, name, kind, 0644, getuid(),
					getgid(), true, &n);
	}
	if (r < 0)
		goto out_put_dir;
	if (node_is_dir(n)) {
		r = -EISDIR;
		goto out_put;
	}
	copy = malloc(len ? len : 1);
	if (!copy) {
		r = -ENOMEM;
		goto out_put;
	}
	memcpy(copy, data, len);
	r = publish(e, n, copy, len, now_ns());
out_put:
	node_put(e, n);
out_put_dir:
	node_put(e, dir);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

int eng_get(struct eng *e, const char *id, enum item_kind kind,
	    struct item **out)
{
	char name[ID_NAME_MAX + 1];
	struct node *dir, *n;
	int r;

	if (kind == ITEM_DIR)
		return -EINVAL;
	pthread_mutex_lock(&e->lock);
	r = walk_id(e, id, kind, false, &dir, name);
	if (r < 0)
		goto out_unlock;
	r = resolve(e, dir, name, &n);
	if (r == 0) {
		r = node_is_dir(n) ? -EISDIR : node_content(e, n, out);
		node_put(e, n);
	}
	node_put(e, dir);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

int eng_delete(struct eng *e, const char *id, enum item_kind kind)
{
	char name[ID_NAME_MAX + 1];
	struct node *dir, *n;
	int r;

	if (kind == ITEM_DIR)
		return -EINVAL;
	pthread_mutex_lock(&e->lock);
	r = walk_id(e, id, kind, false, &dir, name);
	if (r < 0)
		goto out_unlock;
	r = resolve(e, dir, name, &n);
	if (r == 0) {
		r = node_is_dir(n) ? -EISDIR : node_delete(e, n);
		node_put(e, n);
	}
	node_put(e, dir);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}
