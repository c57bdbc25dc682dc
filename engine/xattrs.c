/*
 * xattrs.c - extended attributes: the synthetic user.tierfs.* names, the
 * stored user.* names, and the foreign namespaces answered in place.
 */
#include <sys/xattr.h>

#include "eng_int.h"

static bool has_prefix(const char *s, const char *p)
{
	return strncmp(s, p, strlen(p)) == 0;
}

/* Copies @len bytes of value into @buf (@size 0: measure only). */
static ssize_t xattr_out(const void *val, size_t len, void *buf, size_t size)
{
	if (size == 0)
		return (ssize_t)len;
	if (len > size)
		return -ERANGE;
	memcpy(buf, val, len);
	return (ssize_t)len;
}

/*
 * user.tierfs.tiers: where the version this mount sees is held now, as
 * "l1,l2,l3" (any subset). L1 and L3 are known here (L3 holds it once its
 * content is committed); L2 is asked, with the lock dropped.
 */
static ssize_t tiers_xattr(struct eng *e, struct node *n, void *buf,
			   size_t size)
{
	uint64_t version = n->meta.version;
	bool in_l1, in_l2 = false, in_l3;
	struct item *it = l1_get(e->l1, n->ino);
	char val[16];
	int len;

	in_l1 = (it && item_meta(it)->version == version) ||
		(n->item && item_meta(n->item)->version == version);
	item_unref(it);
	in_l3 = !n->deleted && !n->content_dirty;
	if (in_l3 && l2_usable(e)) {
		struct store_row row;
		struct tier_call c;
		int r = tier_enter(e, &c, OP_L2_GET, n, true);

		if (r == 0)
			r = e->l2->ops->get(e->l2, n->ino, &row);
		r = tier_leave(e, &c, r);
		if (r == 0) {
			in_l2 = row.meta.version == version &&
				n->meta.version == version;
			store_row_release(&row);
		}
	}
	len = snprintf(val, sizeof(val), "%s%s%s%s%s", in_l1 ? "l1" : "",
		       in_l1 && (in_l2 || in_l3) ? "," : "", in_l2 ? "l2" : "",
		       in_l2 && in_l3 ? "," : "", in_l3 ? "l3" : "");
	return xattr_out(val, (size_t)len, buf, size);
}

/*
 * user.tierfs.merkle: a file's Merkle hash is its content hash; a
 * directory's is its subtree's hash as L3 holds it. So that the value
 * covers what readers of the mount see, this mount's pending changes are
 * committed first (as by sync); during an L3 outage the read fails with
 * EIO instead of answering a hash that leaves them out.
 */
static ssize_t merkle_xattr(struct eng *e, struct node *n, void *buf,
			    size_t size)
{
	struct store_row row;
	char val[65];
	int r;

	if (!node_is_dir(n)) {
		item_hash_hex(n->meta.hash, val);
		return xattr_out(val, 64, buf, size);
	}
	n->holds++;
	r = wait_committed(e, e->change_seq);
	if (r == 0 && n->deleted)
		r = -ENOENT;
	else if (r == 0 && e->l3_failing)
		r = -EIO; /* the log holds changes L3 has not got */
	n->holds--;
	if (r == 0) {
		struct tier_call c;

		r = tier_enter(e, &c, OP_L3_GET, n, true);
		if (r == 0)
			r = e->l3->ops->get(e->l3, n->ino, &row);
		r = tier_leave(e, &c, r);
	}
	if (r < 0)
		return r;
	item_hash_hex(row.merkle, val);
	store_row_release(&row);
	return xattr_out(val, 64, buf, size);
}

/* true for the read-only user.tierfs.* names the engine computes. */
static bool computed_name(const char *name)
{
	static const char *const names[] = {"id",     "hash",  "version",
					    "status", "tiers", "merkle"};

	for (size_t i = 0; i < sizeof(names) / sizeof(*names); i++)
		if (strcmp(name + strlen(TFS_XATTR), names[i]) == 0)
			return true;
	return false;
}

static ssize_t synthetic_xattr(struct eng *e, struct node *n, const char *name,
			       void *buf, size_t size)
{
	char val[ID_MAX + 1];
	const char *key = name + strlen(TFS_XATTR);
	bool file = !node_is_dir(n);

	if (strcmp(key, "id") == 0) {
		ssize_t len = node_id(e, n, val, sizeof(val));

		if (len < 0)
			return len == -ENOENT ? -ENODATA : len;
		return xattr_out(val, (size_t)len, buf, size);
	}
	if (file && strcmp(key, "hash") == 0) {
		item_hash_hex(n->meta.hash, val);
		return xattr_out(val, 64, buf, size);
	}
	if (file && strcmp(key, "version") == 0) {
		int len = snprintf(val, sizeof(val), "%llu",
				   (unsigned long long)n->meta.version);
		return xattr_out(val, (size_t)len, buf, size);
	}
	if (file && strcmp(key, "status") == 0) {
		const char *s = n->deleted ? "missing"
				: n->dirty ? "pending"
					   : "synced";

		return xattr_out(s, strlen(s), buf, size);
	}
	if (file && strcmp(key, "tiers") == 0)
		return tiers_xattr(e, n, buf, size);
	if (strcmp(key, "merkle") == 0)
		return merkle_xattr(e, n, buf, size);
	if (strcmp(key, "state") == 0 && n->meta.state)
		return xattr_out(n->meta.state, strlen(n->meta.state), buf,
				 size);
	return -ENODATA;
}

ssize_t eng_getxattr(struct eng *e, uint64_t ino, const char *name, void *buf,
		     size_t size)
{
	struct node *n;
	const void *val;
	ssize_t r;

	/* no labels, no ACLs: "not supported", which ls remembers per
	 * filesystem (it stops asking), where "no such attribute" costs
	 * every ls -l two round trips per entry */
	if (!has_prefix(name, "user."))
		return -ENOTSUP;
	pthread_mutex_lock(&e->lock);
	n = node_get(e, ino);
	if (!n)
		r = -ENOENT;
	else if (has_prefix(name, TFS_XATTR))
		r = synthetic_xattr(e, n, name, buf, size);
	else {
		r = item_xattr_get(&n->meta, name, &val);
		if (r >= 0)
			r = xattr_out(val, (size_t)r, buf, size);
	}
	pthread_mutex_unlock(&e->lock);
	return r;
}

/* true when @len bytes at @p are well-formed UTF-8 (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF). */
static bool utf8_valid(const unsigned char *p, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned char c = p[i];
		size_t n;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (len - i - 1 < n)
			return false;
		for (size_t k = 1; k <= n; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (p[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n + 1;
	}
	return true;
}

/*
 * Sets or removes (@value NULL) the state tag in @m. A tag is text that
 * every store holds as it is: UTF-8 without NUL (-EINVAL otherwise;
 * PostgreSQL refuses other bytes in text), at most ENG_STATE_MAX bytes
 * (-E2BIG).
 */
static int state_set(struct item_meta *m, const void *value, size_t size,
		     int flags)
{
	char *s;

	if (!value) {
		if (!m->state)
			return -ENODATA;
		free(m->state);
		m->state = NULL;
		return 0;
	}
	if (memchr(value, '\0', size) || !utf8_valid(value, size))
		return -EINVAL;
	if (size > ENG_STATE_MAX)
		return -E2BIG;
	if ((flags & XATTR_CREATE) && m->state)
		return -EEXIST;
	if ((flags & XATTR_REPLACE) && !m->state)
		return -ENODATA;
	s = strndup(value, size);
	if (!s)
		return -ENOMEM;
	free(m->state);
	m->state = s;
	return 0;
}

/*
 * Sets (@value not NULL) or removes user xattr @name of inode @ino: the
 * change is made on a copy of the metadata, logged, and only then becomes
 * the node's.
 */
static int xattr_change(struct eng *e, uint64_t ino, const char *name,
			const void *value, size_t size, int flags)
{
	struct item_meta m;
	struct node *n;
	int r;

	pthread_mutex_lock(&e->lock);
	n = node_get(e, ino);
	if (!n || n->deleted) {
		r = -ENOENT;
		goto out_unlock;
	}
	if (has_prefix(name, TFS_XATTR) &&
	    strcmp(name, TFS_XATTR "state") != 0) {
		/* read-only: a restore writing one back is no error; a name
		 * tierfs does not compute would be dropped: refused */
		r = value && computed_name(name) ? 0 : -EPERM;
		goto out_unlock;
	}
	r = item_meta_copy(&m, &n->meta);
	if (r < 0)
		goto out_unlock;
	if (strcmp(name, TFS_XATTR "state") == 0)
		r = state_set(&m, value, size, flags);
	else if (value)
		r = item_xattr_set(&m, name, value, size, flags);
	else
		r = item_xattr_remove(&m, name);
	if (r == -ERANGE && value)
		r = size > 65536 ? -E2BIG : -ERANGE;
	if (r == 0 && m.xattrs_len > ENG_XATTRS_MAX)
		r = -ENOSPC; /* no room left for this entry's xattrs */
	if (r == 0) {
		m.ctime_ns = now_ns();
		r = meta_change(e, n, &m);
	}
	item_meta_release(&m);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

int eng_setxattr(struct eng *e, uint64_t ino, const char *name,
		 const void *value, size_t size, int flags)
{
	if (!has_prefix(name, "user."))
		return -ENOTSUP;
	return xattr_change(e, ino, name, value ? value : "", size, flags);
}

struct list_ctx {
	char *buf;
	size_t size, len;
	bool overflow;
};

static int list_add(void *arg, const char *name)
{
	struct list_ctx *c = arg;
	size_t l = strlen(name) + 1;

	if (c->size && c->len + l <= c->size)
		memcpy(c->buf + c->len, name, l);
	else if (c->size)
		c->overflow = true;
	c->len += l;
	return 0;
}

ssize_t eng_listxattr(struct eng *e, uint64_t ino, char *buf, size_t size)
{
	static const char *const root_names[] = {TFS_XATTR "id",
						 TFS_XATTR "merkle"};
	struct list_ctx c = {.buf = buf, .size = size};
	struct node *n;
	ssize_t r;

	pthread_mutex_lock(&e->lock);
	n = node_get(e, ino);
	if (!n) {
		r = -ENOENT;
		goto out_unlock;
	}
	if (ino == STORE_ROOT_INO)
		for (size_t i = 0; i < sizeof(root_names) / sizeof(*root_names);
		     i++)
			list_add(&c, root_names[i]);
	if (n->meta.state)
		list_add(&c, TFS_XATTR "state");
	item_xattr_foreach(&n->meta, list_add, &c);
	r = c.overflow ? -ERANGE : (ssize_t)c.len;
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

int eng_removexattr(struct eng *e, uint64_t ino, const char *name)
{
	if (!has_prefix(name, "user."))
		return -ENOTSUP;
	return xattr_change(e, ino, name, NULL, 0, 0);
}
