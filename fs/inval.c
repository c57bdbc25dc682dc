/*
 * inval.c - telling the kernel to forget what it caches when another
 * writer sharing the store changed an entry (the engine's feed thread calls
 * tfs_inval() through eng_config.inval). The kernel is only told while the
 * session is mounted: tfs_inval_live() switches that on after the mount and
 * off before the unmount, under the same lock, so no notification reaches a
 * session being torn down.
 */
#include <errno.h>
#include <string.h>

#include "inval.h"

void tfs_inval_live(struct tfs *t, bool live)
{
	pthread_mutex_lock(&t->inval_lock);
	t->live = live;
	pthread_mutex_unlock(&t->inval_lock);
}

void tfs_inval(void *arg, const struct eng_inval *iv)
{
	struct tfs *t = arg;
	int r = 0;

	pthread_mutex_lock(&t->inval_lock);
	if (!t->live) {
		pthread_mutex_unlock(&t->inval_lock);
		return;
	}
	switch (iv->kind) {
	case ENG_INVAL_ENTRY:
		r = fuse_lowlevel_notify_inval_entry(t->se, iv->parent,
						     iv->name,
						     strlen(iv->name));
		break;
	case ENG_INVAL_INODE:
		/* a negative offset: the attributes only */
		r = fuse_lowlevel_notify_inval_inode(t->se, iv->ino,
						     iv->data ? 0 : -1, 0);
		break;
	case ENG_INVAL_DELETE:
		r = fuse_lowlevel_notify_delete(t->se, iv->parent, iv->ino,
						iv->name, strlen(iv->name));
		break;
	}
	pthread_mutex_unlock(&t->inval_lock);
	/* -ENOENT: the kernel had nothing cached; other failures only leave
	 * the kernel's timeouts to bound what it shows */
	(void)r;
}
