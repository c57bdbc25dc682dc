/*
 * change.h - one change to one entry: its final state, or its deletion.
 *
 * The one type a change travels as, from the engine to the stores: an
 * engine call builds one for each entry it changes (changes.c), the
 * write-ahead log writes it and gives it back at replay (wal.h), the batch
 * queue coalesces it (batch.h), and the flusher hands the queue's changes
 * to L3's apply() (store.h) and then to the cache's (cache.h).
 *
 * A change either deletes entry ino (its row and its content) or sets the
 * entry's row to parent, name and meta, creating it when absent. With
 * item, the entry's content becomes the item's bytes; without (NULL), the
 * stored content is kept, as for a rename, a chmod or an xattr.
 *
 * Ownership: a change owns its name, its meta (embedded) and a reference
 * to its item; change_free() releases them. Items are immutable, so the
 * change shares its content with L1 and open files without a copy.
 *
 * Thread-safety: none. A change is used by one thread at a time; the
 * engine passes it between threads through the queue, under its lock.
 */
#ifndef TIERFS_CHANGE_H
#define TIERFS_CHANGE_H

#include <stdbool.h>
#include <stdint.h>

#include "item.h"

struct change {
	uint64_t ino;
	uint64_t seq;	       /* the engine's change counter when logged */
	bool deleted;	       /* true: remove the entry and its content */
	uint64_t parent;       /* the rest is unused when deleted */
	char *name;	       /* owned; NULL when deleted */
	struct item_meta meta; /* owned */
	struct item *item;     /* owned reference: new content, or NULL */
};

/*
 * A new change that sets entry @ino to @parent, @name and @meta (both
 * copied) with content @content (borrowed: the change takes its own
 * reference; NULL keeps the stored content); seq is 0. NULL when memory
 * runs out.
 */
struct change *change_new_put(uint64_t ino, uint64_t parent, const char *name,
			      const struct item_meta *meta,
			      struct item *content);

/* A new change that deletes entry @ino (seq 0), or NULL when memory runs
 * out. */
struct change *change_new_del(uint64_t ino);

/* Frees @ch and everything it owns. Accepts NULL. */
void change_free(struct change *ch);

#endif
