/*
 * handles.c - the handle table of handles.h: a growing array of slots with
 * a free list threaded through the free slots (next), and a generation per
 * slot that changes each time the slot is freed.
 */
#include <stdlib.h>

#include "handles.h"

struct tfs_handle_slot {
	void *ptr;     /* NULL when free */
	uint32_t gen;  /* bumped at each free */
	bool dir;      /* a directory handle */
	size_t next;   /* when free: the next free slot + 1, or 0 */
};

void tfs_handles_init(struct tfs_handles *h)
{
	pthread_mutex_init(&h->lock, NULL);
	h->slots = NULL;
	h->nslots = h->cap = 0;
	h->free_head = 0;
}

void tfs_handles_release(struct tfs_handles *h)
{
	if (!h)
		return;
	free(h->slots);
	h->slots = NULL;
	pthread_mutex_destroy(&h->lock);
}

uint64_t tfs_handle_add(struct tfs_handles *h, void *ptr, bool dir)
{
	struct tfs_handle_slot *s;
	uint64_t fh = 0;
	size_t i;

	pthread_mutex_lock(&h->lock);
	if (h->free_head) {
		i = h->free_head - 1;
		h->free_head = h->slots[i].next;
	} else {
		if (h->nslots == h->cap) {
			size_t cap = h->cap ? 2 * h->cap : 64;

			s = realloc(h->slots, cap * sizeof(*s));
			if (!s || cap > UINT32_MAX)
				goto out_unlock;
			h->slots = s;
			h->cap = cap;
		}
		i = h->nslots++;
		h->slots[i].gen = 1;
	}
	s = &h->slots[i];
	s->ptr = ptr;
	s->dir = dir;
	s->next = 0;
	fh = (uint64_t)s->gen << 32 | (uint64_t)(i + 1);
out_unlock:
	pthread_mutex_unlock(&h->lock);
	return fh;
}

/* The live slot @fh names, of kind @dir, or NULL. Lock held. */
static struct tfs_handle_slot *slot_of(struct tfs_handles *h, uint64_t fh,
				       bool dir)
{
	size_t i = (size_t)(fh & UINT32_MAX);
	struct tfs_handle_slot *s;

	if (i == 0 || i > h->nslots)
		return NULL;
	s = &h->slots[i - 1];
	if (!s->ptr || s->gen != (uint32_t)(fh >> 32) || s->dir != dir)
		return NULL;
	return s;
}

void *tfs_handle_get(struct tfs_handles *h, uint64_t fh, bool dir)
{
	struct tfs_handle_slot *s;
	void *ptr;

	pthread_mutex_lock(&h->lock);
	s = slot_of(h, fh, dir);
	ptr = s ? s->ptr : NULL;
	pthread_mutex_unlock(&h->lock);
	return ptr;
}

void *tfs_handle_remove(struct tfs_handles *h, uint64_t fh, bool dir)
{
	struct tfs_handle_slot *s;
	void *ptr = NULL;

	pthread_mutex_lock(&h->lock);
	s = slot_of(h, fh, dir);
	if (s) {
		ptr = s->ptr;
		s->ptr = NULL;
		s->gen = s->gen == UINT32_MAX ? 1 : s->gen + 1;
		s->next = h->free_head;
		h->free_head = (size_t)(s - h->slots) + 1;
	}
	pthread_mutex_unlock(&h->lock);
	return ptr;
}
