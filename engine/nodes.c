/*
 * nodes.c - the node table: nodes indexed by inode number and, while live,
 * by (parent, name); their reference counts and freeing; attributes; paths
 * and item IDs computed from the table.
 */
#include "eng_int.h"

static uint64_t name_key(uint64_t parent, const char *name)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (int i = 0; i < 8; i++) {
		h ^= (parent >> (8 * i)) & 0xff;
		h *= 0x100000001b3ull;
	}
	for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
		h ^= *p;
		h *= 0x100000001b3ull;
	}
	return h ? h : 1;
}

struct node *name_find(struct eng *e, uint64_t parent, const char *name)
{
	struct node *n = u64map_get(&e->names, name_key(parent, name));

	for (; n; n = n->hnext)
		if (n->parent == parent && strcmp(n->name, name) == 0)
			return n;
	return NULL;
}

static int name_add(struct eng *e, struct node *n)
{
	uint64_t k = name_key(n->parent, n->name);

	n->hnext = u64map_get(&e->names, k);
	return u64map_put(&e->names, k, n);
}

static void name_del(struct eng *e, struct node *n)
{
	uint64_t k = name_key(n->parent, n->name);
	struct node *head = u64map_get(&e->names, k), **pp;

	for (pp = &head; *pp; pp = &(*pp)->hnext) {
		if (*pp == n) {
			*pp = n->hnext;
			break;
		}
	}
	n->hnext = NULL;
	if (head)
		u64map_put(&e->names, k, head);
	else
		u64map_del(&e->names, k);
}

struct node *node_get(struct eng *e, uint64_t ino)
{
	return u64map_get(&e->nodes, ino);
}

bool node_is_dir(const struct node *n)
{
	return n->meta.kind == ITEM_DIR;
}

void dirty_unlink(struct eng *e, struct node *n)
{
	if (n->dprev)
		n->dprev->dnext = n->dnext;
	else
		e->dirty_head = n->dnext;
	if (n->dnext)
		n->dnext->dprev = n->dprev;
	n->dprev = n->dnext = NULL;
}

void node_destroy(struct node *n)
{
	item_meta_release(&n->meta);
	item_unref(n->item);
	wc_free(n->wc);
	free(n->name);
	free(n);
}

/* Frees @n when nothing holds it any more; then maybe its parent. */
void node_try_free(struct eng *e, struct node *n)
{
	while (n && n->nlookup == 0 && n->opens == 0 && n->holds == 0 &&
	       n->children == 0 && !n->dirty && n->ino != STORE_ROOT_INO) {
		struct node *parent = node_get(e, n->parent);

		u64map_del(&e->nodes, n->ino);
		if (!n->deleted)
			name_del(e, n);
		node_destroy(n);
		if (!parent)
			break;
		parent->children--;
		n = parent;
	}
}

void node_put(struct eng *e, struct node *n)
{
	if (!n)
		return;
	n->holds--;
	node_try_free(e, n);
}

/* Makes a node for @row's entry (taking its meta) under parent @dir. */
struct node *node_add(struct eng *e, struct node *dir, uint64_t ino,
			     const char *name, struct item_meta *meta)
{
	struct node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->name = strdup(name);
	if (!n->name)
		goto out_free;
	n->ino = ino;
	n->parent = dir ? dir->ino : 0;
	if (u64map_put(&e->nodes, ino, n) < 0)
		goto out_free;
	if (name_add(e, n) < 0) {
		u64map_del(&e->nodes, ino);
		goto out_free;
	}
	n->meta = *meta; /* stolen */
	memset(meta, 0, sizeof(*meta));
	n->stamp = ++e->stamp;
	if (dir)
		dir->children++;
	return n;

out_free:
	free(n->name);
	free(n);
	return NULL;
}

void node_unadd(struct eng *e, struct node *n)
{
	struct node *dir = node_get(e, n->parent);

	name_del(e, n);
	u64map_del(&e->nodes, n->ino);
	if (dir)
		dir->children--;
	node_destroy(n);
}

int node_rename(struct eng *e, struct node *n, struct node *dir,
		const char *name)
{
	struct node *old_parent = node_get(e, n->parent);
	char *nm = strdup(name);

	if (!nm)
		return -ENOMEM;
	name_del(e, n);
	free(n->name);
	n->name = nm;
	n->parent = dir->ino;
	dir->children++;
	if (name_add(e, n) < 0)
		return -ENOMEM;
	if (old_parent) {
		old_parent->children--;
		node_try_free(e, old_parent);
	}
	return 0;
}

void node_unname(struct eng *e, struct node *n)
{
	name_del(e, n);
	n->deleted = true;
}

void node_attr(const struct eng *e, const struct node *n,
		      struct eng_attr *a)
{
	const struct eng_config *c = &e->cfg;
	bool dir = node_is_dir(n);

	memset(a, 0, sizeof(*a));
	a->ino = n->ino;
	a->kind = n->meta.kind;
	a->size = n->meta.size;
	a->mtime_ns = n->meta.mtime_ns;
	a->atime_ns = n->meta.atime_ns;
	a->ctime_ns = n->meta.ctime_ns;
	if (n->wc && n->wc->loaded) {
		a->size = n->wc->len;
		if (n->wc->dirty)
			a->mtime_ns = n->wc->mtime_ns;
	}
	a->mode = n->meta.mode;
	if (dir && c->force_dir_mode >= 0)
		a->mode = S_IFDIR | (uint32_t)c->force_dir_mode;
	if (!dir && c->force_file_mode >= 0)
		a->mode = S_IFREG | (uint32_t)c->force_file_mode;
	/* a directory not counted (L3 failed) shows 1: "not counted" */
	a->nlink = n->deleted		    ? 0
		   : dir && n->subdirs_known ? (uint32_t)(2 + n->subdirs)
					     : 1;
	a->uid = c->force_uid >= 0 ? (uint32_t)c->force_uid : n->meta.uid;
	a->gid = c->force_gid >= 0 ? (uint32_t)c->force_gid : n->meta.gid;
	a->version = n->meta.version;
}


/* Writes the path of @n relative to the root ("" for the root). */
ssize_t node_path(struct eng *e, const struct node *n, char *buf,
			 size_t cap)
{
	const struct node *chain[ID_MAX];
	size_t depth = 0, len = 0;

	for (; n && n->ino != STORE_ROOT_INO; n = node_get(e, n->parent)) {
		if (depth == ID_MAX)
			return -ENAMETOOLONG;
		chain[depth++] = n;
	}
	if (!n)
		return -ENOENT; /* a deleted ancestor */
	buf[0] = '\0';
	while (depth--) {
		size_t l = strlen(chain[depth]->name);

		if (len + l + 2 > cap)
			return -ENAMETOOLONG;
		if (len)
			buf[len++] = '/';
		memcpy(buf + len, chain[depth]->name, l + 1);
		len += l;
	}
	return (ssize_t)len;
}

/* Writes the ID of @n ("" for the root). */
void node_item_id(struct eng *e, const struct node *n, char id[ID_MAX + 1])
{
	if (node_id(e, n, id, ID_MAX + 1) < 0)
		id[0] = '\0';
}

ssize_t node_id(struct eng *e, const struct node *n, char *buf,
		       size_t cap)
{
	char path[ID_PATH_MAX];
	ssize_t r = node_path(e, n, path, sizeof(path));

	if (r <= 0) {
		if (r == 0)
			buf[0] = '\0';
		return r;
	}
	return id_from_path(path, node_is_dir(n), buf, cap, NULL);
}
