/*
 * store.c - what every store shares: the check of a change against the
 * contract of store.h, and the stem of a name.
 */
#include <stdint.h>
#include <string.h>

#include "store.h"

const char *store_change_problem(const struct store_change *ch,
				 uint64_t max_ino)
{
	size_t len;

	if (ch->ino == 0 || ch->ino > max_ino)
		return "bad inode number";
	if (ch->deleted)
		return NULL;
	if (!ch->name)
		return "no name";
	len = strnlen(ch->name, STORE_NAME_MAX + 1);
	if (len > STORE_NAME_MAX)
		return "name too long";
	if (len == 0 && ch->ino != STORE_ROOT_INO)
		return "empty name";
	if (memchr(ch->name, '/', len))
		return "name holds '/'";
	if (ch->parent > max_ino)
		return "bad parent";
	if (!ch->meta)
		return "no metadata";
	if (ch->meta->kind != ITEM_DIR && ch->meta->kind != ITEM_JSON &&
	    ch->meta->kind != ITEM_BINARY)
		return "bad kind";
	if (ch->has_data && ch->len && !ch->data)
		return "no data";
	return NULL;
}

size_t store_stem_len(const char *name, size_t len, enum item_kind kind)
{
	if (kind == ITEM_JSON && len >= 5 &&
	    memcmp(name + len - 5, ".json", 5) == 0)
		return len - 5;
	return len;
}
