/*
 * files.c - open files and their working copies: create, open, read, write,
 * flush, fsync, release, and size changes.
 *
 * The working copies together hold at most cfg.max_open_bytes (counted by
 * their buffers' capacity in e->open_bytes): a call that would need more
 * (an open for writing that loads the content, a write or a truncation
 * that grows a copy) fails with -ENOSPC and changes nothing, so what the
 * copy held before, acknowledged writes included, stays. A copy shrinks
 * only when its last writer closes.
 */
#include "eng_int.h"

void wc_free(struct wc *w)
{
	if (!w)
		return;
	free(w->buf);
	free(w);
}

void wc_drop(struct eng *e, struct node *n)
{
	if (!n->wc)
		return;
	e->open_bytes -= n->wc->cap;
	wc_free(n->wc);
	n->wc = NULL;
}

/* true when @w may hold @cap bytes instead of its present capacity. */
static bool wc_fits(const struct eng *e, const struct wc *w, size_t cap)
{
	return e->open_bytes - w->cap + cap <= e->cfg.max_open_bytes;
}

/* 0 when @w may hold @cap bytes, -ENOSPC (logged once until a copy fits
 * again) when max_open_bytes forbids. */
static int wc_budget(struct eng *e, const struct wc *w, size_t cap)
{
	if (wc_fits(e, w, cap)) {
		e->open_full_logged = false;
		return 0;
	}
	if (!e->open_full_logged)
		eng_logf(&e->cfg.log, LOG_WARNING,
			 "a write is refused: open files would hold more than "
			 "max_open_bytes (%llu) of unpublished content",
			 (unsigned long long)e->cfg.max_open_bytes);
	e->open_full_logged = true;
	return -ENOSPC;
}

/* Loads the current content into @n's working copy if it is not there.
 * The lock may be dropped meanwhile: a caller without a writer handle of
 * its own finds n->wc gone when the last writer closed (returns 0). */
static int wc_load(struct eng *e, struct node *n)
{
	struct item *it;
	struct wc *w;
	int r;

	if (n->wc->loaded)
		return 0;
	r = node_content(e, n, &it);
	if (r < 0)
		return r;
	w = n->wc;
	if (w && !w->loaded) {
		size_t len = item_size(it);
		char *buf;

		r = wc_budget(e, w, len);
		if (r < 0) {
			item_unref(it);
			return r;
		}
		buf = malloc(len ? len : 1);
		if (!buf) {
			item_unref(it);
			return -ENOMEM;
		}
		memcpy(buf, item_data(it), len);
		free(w->buf);
		e->open_bytes += len - w->cap;
		w->buf = buf;
		w->len = w->cap = len;
		w->loaded = true;
		w->dirty = false;
	}
	item_unref(it);
	return 0;
}

/* Resizes working copy @w (loaded) to @size, zero-filling; -ENOSPC
 * (max_open_bytes), -ENOMEM: then @w is unchanged. */
static int wc_resize(struct eng *e, struct wc *w, size_t size)
{
	if (size > w->cap) {
		size_t cap = w->cap ? w->cap : 4096;
		char *nb;
		int r;

		while (cap < size)
			cap *= 2;
		if (!wc_fits(e, w, cap)) /* then no room to spare */
			cap = size;
		r = wc_budget(e, w, cap);
		if (r < 0)
			return r;
		nb = realloc(w->buf, cap);
		if (!nb)
			return -ENOMEM;
		e->open_bytes += cap - w->cap;
		w->buf = nb;
		w->cap = cap;
	}
	if (size > w->len)
		memset(w->buf + w->len, 0, size - w->len);
	w->len = size;
	return 0;
}

/* A copy of @len bytes at @src cut or zero-extended to @size (*out). */
static int resized_copy(const void *src, size_t len, size_t size, char **out)
{
	char *buf = calloc(1, size ? size : 1);

	if (!buf)
		return -ENOMEM;
	memcpy(buf, src, len < size ? len : size);
	*out = buf;
	return 0;
}

/* A size change through the caller's own writer handle: the working copy
 * changes now and is published at flush; @meta (may be NULL) is logged
 * now. */
static int setattr_size_wc(struct eng *e, struct node *n, uint64_t size,
			   struct item_meta *meta)
{
	struct wc *w = n->wc, old;
	int r = wc_load(e, n);

	if (r < 0)
		return r;
	old = *w;
	r = wc_resize(e, w, size);
	if (r < 0)
		return r;
	if (meta) {
		r = meta_change(e, n, meta);
		if (r < 0) { /* undo: a shrink kept the bytes, a grow zeroed */
			w->len = old.len;
			return r;
		}
	}
	w->trunc_only = !old.dirty || old.trunc_only;
	w->dirty = true;
	w->writes++;
	w->mtime_ns = now_ns();
	return 0;
}

int setattr_size(struct eng *e, struct node *n, struct eng_file *f,
		 uint64_t size, struct item_meta *meta, int64_t mtime)
{
	struct draft d;
	uint64_t writes = 0;
	struct item *it;
	char *buf;
	int r;

	if (node_is_dir(n))
		return -EISDIR;
	if (size > e->cfg.max_item_bytes)
		return -EFBIG;
	if (f && f->writer)
		return setattr_size_wc(e, n, size, meta);
	/* truncate(2) by path: publish now, from the working copy of other
	 * writers when there is one */
	for (;;) {
		if (n->wc && !n->wc->loaded) {
			r = wc_load(e, n);
			if (r < 0)
				return r;
			continue;
		}
		if (n->wc) {
			r = resized_copy(n->wc->buf, n->wc->len, size, &buf);
			writes = n->wc->writes;
			break;
		}
		r = node_content(e, n, &it);
		if (r < 0)
			return r;
		if (n->wc) { /* a writer came meanwhile: use its copy */
			item_unref(it);
			continue;
		}
		r = resized_copy(item_data(it), item_size(it), size, &buf);
		item_unref(it);
		break;
	}
	if (r < 0)
		return r;
	r = draft_make_unlocked(e, n, buf, size, &d);
	if (r < 0)
		return r;
	if (n->deleted) {
		draft_release(&d);
		return -ENOENT;
	}
	r = publish(e, n, &d, mtime, meta);
	if (r == 0 && n->wc && n->wc->loaded) {
		/* the other writers see the truncation too */
		r = wc_resize(e, n->wc, size);
		if (r == 0 && n->wc->writes == writes)
			n->wc->dirty = false;
		r = 0; /* published: a working copy that cannot shrink is
			  published whole at its flush */
	}
	return r;
}

static struct eng_file *file_new(struct eng *e, struct node *n, int flags,
				 int *err)
{
	struct eng_file *f = calloc(1, sizeof(*f));

	if (!f) {
		*err = -ENOMEM;
		return NULL;
	}
	f->n = n;
	/* O_RDONLY|O_TRUNC truncates too (as local filesystems do) */
	f->writer = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
	if (f->writer && !n->wc) {
		n->wc = calloc(1, sizeof(*n->wc));
		if (!n->wc) {
			free(f);
			*err = -ENOMEM;
			return NULL;
		}
	}
	n->opens++;
	if (f->writer) {
		n->wc->writers++;
		if (flags & O_TRUNC) {
			n->wc->loaded = true;
			n->wc->len = 0;
			n->wc->dirty = true;
			n->wc->trunc_only = true;
			n->wc->writes++;
			n->wc->mtime_ns = now_ns();
		}
	}
	handle_link(e, &f->link);
	return f;
}

/* Opens file @n (held, lock held) for @flags: eng_file_open() past the
 * lookup. On error the lock is still held and nothing is open. */
static int open_node(struct eng *e, struct node *n, int flags,
		     struct eng_file **fp, bool *keep_cache)
{
	struct eng_file *f;
	int r = 0;

	if (node_is_dir(n))
		return -EISDIR;
	f = file_new(e, n, flags, &r);
	if (!f)
		return r;
	if (f->writer && !n->wc->loaded) {
		r = wc_load(e, n);
	} else if (!f->writer && n->cache_version != n->meta.version) {
		/* the kernel will read: fetch the content now, so that a
		 * file another writer removed fails here (ESTALE makes the
		 * kernel look the name up again), not in the read */
		struct item *it;

		r = node_content(e, n, &it);
		if (r == 0)
			item_unref(it);
	}
	if (r < 0) {
		pthread_mutex_unlock(&e->lock);
		eng_release(e, f);
		pthread_mutex_lock(&e->lock);
		return r;
	}
	*keep_cache = n->cache_version == n->meta.version;
	n->cache_version = n->meta.version;
	*fp = f;
	return 0;
}

/*
 * A create without O_EXCL whose name another writer made meanwhile (the
 * kernel looked the name up before the change feed brought it): opens
 * that file, as open(2) without O_EXCL does with an existing one. -EEXIST
 * when the name is not there (a stem taken: another item of that ID).
 */
static int create_existing(struct eng *e, uint64_t parent, const char *name,
			   int flags, struct eng_attr *out,
			   struct eng_file **fp)
{
	struct node *n;
	bool keep;
	int r = resolve_at(e, parent, name, &n);

	if (r == -ENOENT)
		return -EEXIST;
	if (r < 0)
		return r;
	r = open_node(e, n, flags, fp, &keep);
	if (r == 0) {
		n->nlookup++;
		node_attr(e, n, out);
	}
	node_put(e, n);
	return r;
}

int eng_create(struct eng *e, uint64_t parent, const char *name, uint32_t mode,
	       int flags, const struct eng_ctx *ctx, struct eng_attr *out,
	       struct eng_file **fp)
{
	struct eng_file *f;
	struct node *n;
	int r;

	pthread_mutex_lock(&e->lock);
	r = create_entry(e, parent, name, id_name_kind(name), mode, ctx, &n);
	if (r == -EEXIST && !(flags & O_EXCL)) {
		r = create_existing(e, parent, name, flags, out, fp);
		goto out_unlock;
	}
	if (r < 0)
		goto out_unlock;
	f = file_new(e, n, flags & ~O_TRUNC, &r);
	if (f) {
		if (f->writer) /* a new file: its content is the empty wc */
			n->wc->loaded = true;
		n->cache_version = n->meta.version;
		n->nlookup++;
		node_attr(e, n, out);
		*fp = f;
	}
	node_put(e, n);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

int eng_file_open(struct eng *e, uint64_t ino, int flags, struct eng_file **fp,
		  bool *keep_cache)
{
	struct node *n;
	int r;

	pthread_mutex_lock(&e->lock);
	n = node_get(e, ino);
	r = n ? open_node(e, n, flags, fp, keep_cache) : -ENOENT;
	pthread_mutex_unlock(&e->lock);
	return r;
}

/* Reads file @n (held, lock held; dropped meanwhile when its content is
 * fetched): the working copy when one is loaded, else the content. */
static ssize_t read_node(struct eng *e, struct node *n, void *buf, size_t size,
			 off_t off)
{
	struct item *it = NULL;
	const char *src;
	size_t len;
	ssize_t r;

	if (n->wc && n->wc->loaded) {
		src = n->wc->buf;
		len = n->wc->len;
	} else {
		r = node_content(e, n, &it);
		if (r < 0)
			return r;
		src = item_data(it);
		len = item_size(it);
	}
	r = 0;
	if ((size_t)off < len) {
		r = (ssize_t)(len - (size_t)off < size ? len - (size_t)off
						       : size);
		memcpy(buf, src + off, (size_t)r);
	}
	item_unref(it);
	return r;
}

ssize_t eng_read(struct eng *e, struct eng_file *f, void *buf, size_t size,
		 off_t off)
{
	ssize_t r;

	if (off < 0)
		return -EINVAL;
	pthread_mutex_lock(&e->lock);
	r = read_node(e, f->n, buf, size, off);
	pthread_mutex_unlock(&e->lock);
	return r;
}

ssize_t eng_read_ino(struct eng *e, uint64_t ino, void *buf, size_t size,
		     off_t off)
{
	struct node *n;
	ssize_t r;

	if (off < 0)
		return -EINVAL;
	pthread_mutex_lock(&e->lock);
	n = node_get(e, ino);
	if (!n) {
		r = -ENOENT;
	} else if (node_is_dir(n)) {
		r = -EISDIR;
	} else {
		n->holds++; /* the lock may be dropped while it is fetched */
		r = read_node(e, n, buf, size, off);
		node_put(e, n);
	}
	pthread_mutex_unlock(&e->lock);
	return r;
}

ssize_t eng_write(struct eng *e, struct eng_file *f, const void *buf,
		  size_t size, off_t off)
{
	struct node *n = f->n;
	size_t end;
	ssize_t r;

	if (!f->writer)
		return -EBADF;
	if (off < 0)
		return -EINVAL;
	end = (size_t)off + size;
	pthread_mutex_lock(&e->lock);
	if (end > e->cfg.max_item_bytes) {
		/* a truncated item must not be published in its place */
		n->wc->failed = -EFBIG;
		n->wc->dirty = true;
		r = -EFBIG;
		goto out_unlock;
	}
	r = wc_load(e, n);
	if (r < 0)
		goto out_unlock;
	if (end > n->wc->len) {
		r = wc_resize(e, n->wc, end);
		if (r < 0)
			goto out_unlock;
	}
	if (size)
		memcpy(n->wc->buf + off, buf, size);
	n->wc->dirty = true;
	n->wc->trunc_only = false;
	n->wc->writes++;
	n->wc->mtime_ns = now_ns();
	r = (ssize_t)size;
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

/*
 * Publishes @f's working copy if it holds changes: a snapshot of it is
 * validated and hashed with the lock dropped. At a flush (@at_flush) a
 * truncation no write has followed is only validated, not published: a
 * shell's `> file` opens with O_TRUNC and closes a dup of the descriptor
 * before it writes, and that close must not publish an empty version; it
 * is published at release or fsync, if no write comes. A truncation that
 * makes invalid JSON (truncate -s 3 x.json) still fails its close.
 */
static int flush_locked(struct eng *e, struct eng_file *f, bool at_flush)
{
	struct node *n = f->n;
	struct wc *w = n->wc;
	bool validate_only;
	struct draft d;
	uint64_t writes;
	int64_t mtime;
	char *buf;
	int r;

	if (!f->writer || !w || !w->dirty)
		return 0;
	if (w->failed)
		return w->failed;
	if (!(at_flush && w->trunc_only))
		backpressure(e);
	w = n->wc; /* our writer handle keeps it */
	if (n->deleted || !w->dirty)
		return 0; /* nobody can see it any more, or published */
	buf = malloc(w->len ? w->len : 1);
	if (!buf)
		return -ENOMEM;
	if (w->len)
		memcpy(buf, w->buf, w->len);
	writes = w->writes;
	mtime = w->mtime_ns;
	validate_only = at_flush && w->trunc_only;
	r = draft_make_unlocked(e, n, buf, w->len, &d);
	if (r < 0)
		return r;
	if (validate_only || n->deleted ||
	    (!w->dirty && w->writes == writes)) {
		draft_release(&d); /* gone, or another flush published it */
		return 0;
	}
	r = publish(e, n, &d, mtime, NULL);
	if (r == 0 && w->writes == writes)
		w->dirty = false;
	return r;
}

int eng_flush(struct eng *e, struct eng_file *f)
{
	int r;

	pthread_mutex_lock(&e->lock);
	r = flush_locked(e, f, true);
	pthread_mutex_unlock(&e->lock);
	return r;
}

int eng_fsync(struct eng *e, struct eng_file *f)
{
	int r;

	pthread_mutex_lock(&e->lock);
	r = flush_locked(e, f, false);
	if (r == 0 && f->n->dirty)
		r = wait_committed(e, f->n->dirty_seq);
	if (r == 0 && f->n->refused)
		r = -EIO; /* set aside: not durable anywhere but quarantine */
	pthread_mutex_unlock(&e->lock);
	return r;
}

bool eng_release(struct eng *e, struct eng_file *f)
{
	bool dropped = false;
	struct node *n;

	if (!f)
		return false;
	n = f->n;
	pthread_mutex_lock(&e->lock);
	if (f->writer && n->wc->writers == 1 && n->wc->dirty &&
	    n->wc->trunc_only && !n->deleted) {
		/* a truncation nothing followed: published now */
		int r = flush_locked(e, f, false);

		/* a refused truncation failed its flush already */
		if (r < 0)
			eng_logf(&e->cfg.log, r == -EINVAL ? LOG_INFO : LOG_ERR,
				 "cannot publish the truncation of inode "
				 "%llu at its last close: %s",
				 (unsigned long long)n->ino, strerror(-r));
	}
	handle_unlink(&f->link);
	n->opens--;
	if (f->writer && --n->wc->writers == 0) {
		if (n->wc->dirty && !n->deleted) {
			/* an unpublished change is dropped */
			n->cache_version = 0;
			dropped = true;
		}
		wc_drop(e, n);
	}
	if (!n->opens && !n->content_dirty) {
		item_unref(n->item);
		n->item = NULL;
	}
	node_try_free(e, n);
	pthread_mutex_unlock(&e->lock);
	free(f);
	return dropped;
}
