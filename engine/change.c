/*
 * change.c - making and freeing changes (see change.h).
 *
 * A change is one calloc()ed block with its name and its meta's state and
 * xattrs on the heap beside it; a half-built change is freed like a whole
 * one.
 */
#include <stdlib.h>
#include <string.h>

#include "change.h"

struct change *change_new_put(uint64_t ino, uint64_t parent, const char *name,
			      const struct item_meta *meta,
			      struct item *content)
{
	struct change *ch = calloc(1, sizeof(*ch));

	if (!ch)
		return NULL;
	ch->ino = ino;
	ch->parent = parent;
	ch->name = strdup(name);
	if (!ch->name || item_meta_copy(&ch->meta, meta) < 0) {
		change_free(ch);
		return NULL;
	}
	ch->item = item_ref(content);
	return ch;
}

struct change *change_new_del(uint64_t ino)
{
	struct change *ch = calloc(1, sizeof(*ch));

	if (ch) {
		ch->ino = ino;
		ch->deleted = true;
	}
	return ch;
}

void change_free(struct change *ch)
{
	if (ch) {
		free(ch->name);
		item_meta_release(&ch->meta);
		item_unref(ch->item);
		free(ch);
	}
}
