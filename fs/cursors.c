/*
 * cursors.c - directory cursors of a mount that opens no directory (see
 * cursors.h).
 */
#include <stddef.h>

#include "cursors.h"

void tfs_cursors_init(struct tfs_cursors *c)
{
	pthread_mutex_init(&c->lock, NULL);
	for (size_t i = 0; i < TFS_CURSORS; i++)
		c->slot[i].d = NULL;
	c->clock = 0;
}

struct eng_dir *tfs_cursor_take(struct tfs_cursors *c, uint64_t ino,
				uint64_t off)
{
	struct eng_dir *d = NULL;

	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < TFS_CURSORS; i++) {
		if (c->slot[i].d && c->slot[i].ino == ino &&
		    c->slot[i].off == off) {
			d = c->slot[i].d;
			c->slot[i].d = NULL;
			break;
		}
	}
	pthread_mutex_unlock(&c->lock);
	return d;
}

struct eng_dir *tfs_cursor_put(struct tfs_cursors *c, uint64_t ino,
			       uint64_t off, struct eng_dir *d)
{
	struct tfs_cursor *s = NULL;
	struct eng_dir *out = NULL;

	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < TFS_CURSORS; i++) {
		struct tfs_cursor *t = &c->slot[i];

		if (!t->d) {
			s = t;
			break;
		}
		if (!s || t->used < s->used)
			s = t;
	}
	out = s->d;
	s->ino = ino;
	s->off = off;
	s->d = d;
	s->used = ++c->clock;
	pthread_mutex_unlock(&c->lock);
	return out;
}

void tfs_cursors_release(struct tfs_cursors *c, struct eng *e)
{
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < TFS_CURSORS; i++) {
		eng_releasedir(e, c->slot[i].d);
		c->slot[i].d = NULL;
	}
	pthread_mutex_unlock(&c->lock);
}
