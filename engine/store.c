/*
 * store.c - what every store shares: the check of a change against the
 * contract of store.h (the entry itself is checked by store_entry_problem(),
 * in store_row.c, which checks rows read back too), and the stem of a name.
 */
#include <stdint.h>
#include <string.h>

#include "store.h"
#include "store_row.h"

const char *store_change_problem(const struct change *ch, uint64_t max_ino)
{
	if (ch->ino == 0 || ch->ino > max_ino)
		return "bad inode number";
	if (ch->deleted)
		return NULL;
	if (!ch->name)
		return "no name";
	/* a name longer than STORE_NAME_MAX is cut one byte after it */
	return store_entry_problem(ch->ino, ch->parent, ch->name,
				   strnlen(ch->name, STORE_NAME_MAX + 1),
				   (int)ch->meta.kind, max_ino);
}

size_t store_stem_len(const char *name, size_t len, enum item_kind kind)
{
	if (kind == ITEM_JSON && len >= 5 &&
	    memcmp(name + len - 5, ".json", 5) == 0)
		return len - 5;
	return len;
}
