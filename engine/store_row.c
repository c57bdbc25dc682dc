/*
 * store_row.c - the checks of rows and changes that every store backend
 * shares (store_row.h): an entry against the contract of store.h, a row
 * read back made a store_row, a batch's changes checked before apply().
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store_row.h"

const char *store_entry_problem(uint64_t ino, uint64_t parent, const void *name,
				size_t len, int kind, uint64_t max_ino)
{
	if (ino == 0 || ino > max_ino)
		return "bad inode number";
	if (len > STORE_NAME_MAX)
		return "name too long";
	if (len == 0 && ino != STORE_ROOT_INO)
		return "empty name";
	if (len && memchr(name, '/', len))
		return "name holds '/'";
	if (len && memchr(name, '\0', len))
		return "name holds a NUL";
	for (size_t i = 0; i < len; i++)
		if (((const unsigned char *)name)[i] < 0x20 ||
		    ((const unsigned char *)name)[i] == 0x7f)
			return "name holds a control byte";
	if ((len == 1 || len == 2) && !memcmp(name, "..", len))
		return "name is . or ..";
	if (parent > max_ino)
		return "bad parent";
	if (kind != ITEM_DIR && kind != ITEM_JSON && kind != ITEM_BINARY)
		return "bad kind";
	return NULL;
}

int store_corrupt(const struct store_backend *b, uint64_t ino, const char *why)
{
	if (b->corrupt)
		atomic_fetch_add_explicit(b->corrupt, 1, memory_order_relaxed);
	eng_logf(b->log, LOG_ERR, "%s '%s': corrupt entry %llu: %s", b->name,
		 b->target, (unsigned long long)ino, why);
	return -EUCLEAN;
}

int store_data_dup(const void *p, size_t len, void **data, size_t *out_len)
{
	void *buf = NULL;

	if (len) {
		buf = malloc(len);
		if (!buf)
			return -ENOMEM;
		memcpy(buf, p, len);
	}
	*data = buf;
	*out_len = len;
	return 0;
}

/* Why the fields of @c other than the entry's place and kind are corrupt,
 * or NULL. */
static const char *store_cols_problem(const struct store_backend *b,
				      const struct store_cols *c)
{
	if (c->hash && c->hash_len != ITEM_HASH_LEN)
		return "bad hash";
	if (!b->cache && c->kind == ITEM_DIR && c->merkle &&
	    c->merkle_len != ITEM_HASH_LEN)
		return "bad merkle hash";
	if (c->state && c->state_len && memchr(c->state, '\0', c->state_len))
		return "bad state tag";
	if ((c->kind == ITEM_DIR) != S_ISDIR(c->mode) ||
	    (c->kind != ITEM_DIR && !S_ISREG(c->mode)))
		return "kind and mode disagree";
	return NULL;
}

int store_row_decode(const struct store_backend *b, const struct store_cols *c,
		     struct store_row *out)
{
	struct store_row r;
	const char *why;
	int err;

	why = store_entry_problem(c->ino, c->parent, c->name, c->name_len,
				  c->kind, b->max_ino);
	if (!why)
		why = store_cols_problem(b, c);
	if (why)
		return store_corrupt(b, c->ino, why);

	memset(&r, 0, sizeof(r));
	r.ino = c->ino;
	r.parent = c->parent;
	if (c->name_len)
		memcpy(r.name, c->name, c->name_len);
	r.name[c->name_len] = '\0';
	r.meta.kind = (enum item_kind)c->kind;
	r.meta.size = c->size;
	if (c->hash)
		memcpy(r.meta.hash, c->hash, ITEM_HASH_LEN);
	r.meta.version = c->version;
	r.meta.mtime_ns = c->mtime_ns;
	r.meta.atime_ns = c->atime_ns;
	r.meta.ctime_ns = c->ctime_ns;
	r.meta.mode = c->mode;
	r.meta.uid = c->uid;
	r.meta.gid = c->gid;
	r.meta.explicit_dir = c->explicit_dir;

	/* A file's Merkle hash is its content hash; a directory's has its own
	 * column, all zero while not known. A cache tier knows neither. */
	if (!b->cache && c->kind != ITEM_DIR)
		memcpy(r.merkle, r.meta.hash, ITEM_HASH_LEN);
	else if (!b->cache && c->merkle)
		memcpy(r.merkle, c->merkle, ITEM_HASH_LEN);

	if (c->state && (c->state_len || b->cache)) {
		r.meta.state = strndup(c->state, c->state_len);
		if (!r.meta.state)
			return -ENOMEM;
	}
	if (c->xattrs && c->xattrs_len) {
		err = store_data_dup(c->xattrs, c->xattrs_len, &r.meta.xattrs,
				     &r.meta.xattrs_len);
		if (err) {
			item_meta_release(&r.meta);
			return err;
		}
	}
	*out = r;
	return 0;
}

int store_check_changes(const struct store_backend *b,
			struct change *const *changes, size_t n,
			const char *(*limits)(const struct change *ch))
{
	for (size_t i = 0; i < n; i++) {
		const struct change *ch = changes[i];
		const char *why = store_change_problem(ch, b->max_ino);

		if (!why && !ch->deleted && limits)
			why = limits(ch);
		if (!why)
			continue;
		eng_logf(b->log, LOG_ERR,
			 "%s '%s': cannot apply change to inode %llu: %s",
			 b->name, b->target, (unsigned long long)ch->ino, why);
		return -EINVAL;
	}
	return 0;
}
