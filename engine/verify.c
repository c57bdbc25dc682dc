/*
 * verify.c - the L2-against-L3 comparison of verify.h.
 *
 * The walk keeps a FIFO of directories still to visit (inode, path); a
 * directory's children are listed from L3 in pages of VERIFY_PAGE, files
 * compared at once and subdirectories queued. Without quick, it also
 * records the kind of every inode it meets, for the orphan pass. Memory is
 * one page of rows, the queue (at most every directory of the tree) and,
 * without quick, 16 bytes or so per entry of the tree.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "u64map.h"
#include "verify.h"

#define VERIFY_PAGE 512
#define VERIFY_PROGRESS_EVERY 256 /* entries between progress calls */

struct vdir {
	uint64_t ino;
	char *path;
	bool listed; /* merkle is L3's hash, from the parent's listing */
	uint8_t merkle[ITEM_HASH_LEN];
};

struct vrun {
	struct store *l3;
	struct cache *l2;
	const struct verify_opts *o;
	struct verify_progress p;
	struct vdir *queue;
	size_t head, len, cap;
	uint64_t next_progress;
	struct u64map seen;    /* ino -> SEEN_FILE / SEEN_DIR (full walk) */
	struct u64map orphans; /* ino -> ORPHAN_* bits met in L2's keys */
};

#define SEEN_FILE ((void *)1)
#define SEEN_DIR ((void *)2)
#define ORPHAN_ITEM 1u
#define ORPHAN_TREE 2u

const char *verify_what_name(enum verify_what what)
{
	switch (what) {
	case VERIFY_TREE_MISSING:
		return "missing tree hash";
	case VERIFY_TREE_DIFFERS:
		return "tree hash differs";
	case VERIFY_ITEM_MISSING:
		return "missing item";
	case VERIFY_ITEM_STALE:
		return "stale item";
	case VERIFY_ITEM_CORRUPT:
		return "corrupt item";
	case VERIFY_ORPHAN_ITEM:
		return "orphan item";
	case VERIFY_ORPHAN_TREE:
		return "orphan tree hash";
	}
	return "?";
}

static void progress(struct vrun *v, bool force)
{
	uint64_t seen = v->p.dirs + v->p.files;

	if (!v->o->progress || (!force && seen < v->next_progress))
		return;
	v->next_progress = seen + VERIFY_PROGRESS_EVERY;
	v->o->progress(v->o->arg, &v->p);
}

/* "PARENT/NAME" in a new string ("/NAME" under the root), or NULL. */
static char *join_path(const char *parent, const char *name)
{
	char *path;

	if (asprintf(&path, "%s/%s", parent[1] ? parent : "", name) < 0)
		return NULL;
	return path;
}

/* Queues directory @row (NULL: the root) found under @parent_path. */
static int enqueue(struct vrun *v, const struct store_row *row,
		   const char *parent_path)
{
	struct vdir *d;

	if (v->len == v->cap) {
		/* reuse the consumed front before growing */
		if (v->head > 0) {
			memmove(v->queue, v->queue + v->head,
				(v->len - v->head) * sizeof(*v->queue));
			v->len -= v->head;
			v->head = 0;
		}
		if (v->len == v->cap) {
			size_t cap = v->cap ? 2 * v->cap : 64;
			struct vdir *q = realloc(v->queue, cap * sizeof(*q));

			if (!q)
				return -ENOMEM;
			v->queue = q;
			v->cap = cap;
		}
	}
	d = &v->queue[v->len];
	memset(d, 0, sizeof(*d));
	if (row) {
		d->ino = row->ino;
		d->listed = true;
		memcpy(d->merkle, row->merkle, ITEM_HASH_LEN);
		d->path = join_path(parent_path, row->name);
	} else {
		d->ino = STORE_ROOT_INO;
		d->path = strdup("/");
	}
	if (!d->path)
		return -ENOMEM;
	v->len++;
	return 0;
}

static void report(struct vrun *v, enum verify_what what, const char *path,
		   uint64_t ino, const char *detail, bool repaired)
{
	struct verify_finding f = {what, path, ino, detail, repaired};

	v->p.findings++;
	if (repaired)
		v->p.repaired++;
	if (v->o->report)
		v->o->report(v->o->arg, &f);
}

/* --- directories --- */

/*
 * Compares directory @d's mirrored hash with L3's: the hash its parent's
 * listing gave, then (on a mismatch, or for the root) L3's row read again.
 * Returns 1 when they agree, 0 after a finding (reported, and repaired if
 * asked), or a negative errno.
 */
static int check_dir(struct vrun *v, const struct vdir *d)
{
	uint64_t ino = d->ino;
	uint8_t mirror[ITEM_HASH_LEN];
	struct store_dirhash want;
	struct store_row row;
	enum verify_what what;
	const char *detail;
	bool repaired = false;
	int r = 0;

	want.ino = ino;
	memcpy(want.merkle, d->merkle, ITEM_HASH_LEN);
	for (int attempt = 0; attempt < 2; attempt++) {
		/* L3 first: a mount commits there first, then mirrors */
		if (attempt == 1 || !d->listed) {
			r = v->l3->ops->get(v->l3, ino, &row);
			if (r == -ENOENT)
				return 1; /* removed meanwhile */
			if (r < 0)
				return r;
			memcpy(want.merkle, row.merkle, ITEM_HASH_LEN);
			store_row_release(&row);
		}
		r = v->l2->ops->get_tree(v->l2, ino, mirror);
		if (r == 0 && memcmp(mirror, want.merkle, ITEM_HASH_LEN) == 0)
			return 1;
		if (r < 0 && r != -ENOENT && r != -EBADMSG)
			return r;
	}
	what = r == -ENOENT ? VERIFY_TREE_MISSING : VERIFY_TREE_DIFFERS;
	detail = r == -ENOENT	 ? "redis has no hash for it"
		 : r == -EBADMSG ? "redis holds no valid hash"
				 : "redis holds another hash";
	if (v->o->repair) {
		r = v->l2->ops->put_tree(v->l2, &want, 1);
		if (r < 0)
			return r;
		repaired = true;
	}
	report(v, what, d->path, ino, detail, repaired);
	return 0;
}

/* --- files --- */

static bool same_bytes(const void *a, size_t alen, const void *b, size_t blen)
{
	return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/*
 * Compares L2's row of a file with L3's (@want); writes what differs into
 * @why. Returns true when they agree.
 */
static bool same_meta(const struct store_row *got,
		      const struct store_row *want, char *why, size_t cap)
{
	const struct item_meta *g = &got->meta, *w = &want->meta;

	if (g->version != w->version) {
		snprintf(why, cap, "version %llu, L3 has %llu",
			 (unsigned long long)g->version,
			 (unsigned long long)w->version);
		return false;
	}
	if (g->size != w->size || memcmp(g->hash, w->hash, ITEM_HASH_LEN)) {
		snprintf(why, cap, "content hash differs from L3's");
		return false;
	}
	if (got->parent != want->parent || strcmp(got->name, want->name)) {
		snprintf(why, cap, "name or directory differs from L3's");
		return false;
	}
	if (g->kind != w->kind || g->mode != w->mode || g->uid != w->uid ||
	    g->gid != w->gid || g->mtime_ns != w->mtime_ns ||
	    g->atime_ns != w->atime_ns || g->ctime_ns != w->ctime_ns ||
	    /* L3 keeps an empty tag as none; Redis keeps it apart */
	    strcmp(g->state ? g->state : "", w->state ? w->state : "") ||
	    !same_bytes(g->xattrs, g->xattrs_len, w->xattrs, w->xattrs_len)) {
		snprintf(why, cap, "metadata differs from L3's");
		return false;
	}
	return true;
}

/*
 * Compares L2's entry of file @want (an L3 row) with it. Returns 1 when it
 * agrees, or 0 with @what and @why set.
 */
static int compare_file(struct vrun *v, const struct store_row *want,
			enum verify_what *what, char *why, size_t cap)
{
	uint8_t hash[ITEM_HASH_LEN];
	struct store_row got;
	void *data = NULL;
	size_t len = 0;
	bool same;
	int r;

	r = v->l2->ops->fetch(v->l2, want->ino, &got, &data, &len);
	if (r == -ENOENT) {
		*what = VERIFY_ITEM_MISSING;
		snprintf(why, cap, "redis has no entry for it");
		return 0;
	}
	if (r == -EUCLEAN) { /* l2_redis: the entry does not decode */
		*what = VERIFY_ITEM_CORRUPT;
		snprintf(why, cap, "redis's entry does not decode");
		return 0;
	}
	if (r < 0)
		return r;
	same = same_meta(&got, want, why, cap);
	store_row_release(&got);
	if (!same) {
		free(data);
		*what = VERIFY_ITEM_STALE;
		return 0;
	}
	item_hash(data, len, hash);
	free(data);
	if (memcmp(hash, want->meta.hash, ITEM_HASH_LEN) != 0) {
		*what = VERIFY_ITEM_CORRUPT;
		snprintf(why, cap, "redis's content does not match its hash");
		return 0;
	}
	return 1;
}

/* Rewrites L2's entry of file @row from L3. Returns 0, -EAGAIN when L3's
 * content is no longer @row's (changed meanwhile), or an error. */
static int repair_file(struct vrun *v, const struct store_row *row)
{
	uint8_t hash[ITEM_HASH_LEN];
	struct change *ch;
	struct item *it;
	void *data = NULL;
	size_t len = 0;
	int r;

	r = v->l3->ops->read(v->l3, row->ino, &data, &len);
	if (r < 0)
		return r;
	item_hash(data, len, hash);
	if (memcmp(hash, row->meta.hash, ITEM_HASH_LEN) != 0) {
		free(data);
		return -EAGAIN;
	}
	/* the hash is the one just checked; @data is stolen */
	it = item_new_hashed("", data, len, &row->meta);
	ch = it ? change_new_put(row->ino, row->parent, row->name, &row->meta,
				 it)
		: NULL;
	item_unref(it);
	if (!ch)
		return -ENOMEM;
	r = v->l2->ops->apply(v->l2, &ch, 1);
	change_free(ch);
	return r;
}

static int check_file(struct vrun *v, const struct store_row *listed,
		      const char *dir_path)
{
	char *path;
	enum verify_what what = VERIFY_ITEM_MISSING;
	struct store_row row;
	bool repaired = false;
	char why[96];
	int r;

	r = compare_file(v, listed, &what, why, sizeof(why));
	if (r != 0)
		return r < 0 ? r : 0;
	/* a second look, with L3's row read again (see verify.h) */
	for (int attempt = 0;; attempt++) {
		r = v->l3->ops->get(v->l3, listed->ino, &row);
		if (r == -ENOENT)
			return 0; /* deleted meanwhile */
		if (r < 0)
			return r;
		r = compare_file(v, &row, &what, why, sizeof(why));
		if (r == 0 && v->o->repair) {
			r = repair_file(v, &row);
			if (r == -EAGAIN && attempt < 3) {
				store_row_release(&row);
				continue; /* L3 moved on: compare again */
			}
			if (r == 0)
				repaired = true;
			if (r == -EAGAIN)
				r = 0; /* still moving: report it unrepaired */
		} else if (r != 0) {
			store_row_release(&row);
			return r < 0 ? r : 0;
		}
		store_row_release(&row);
		break;
	}
	if (r < 0)
		return r;
	path = join_path(dir_path, listed->name);
	if (!path)
		return -ENOMEM;
	report(v, what, path, listed->ino, why, repaired);
	free(path);
	return 0;
}

/* --- the walk --- */

static int visit(struct vrun *v, const struct vdir *d)
{
	struct store_row *rows = calloc(VERIFY_PAGE, sizeof(*rows));
	char after[STORE_NAME_MAX + 1] = "";
	int r, n;

	if (!rows)
		return -ENOMEM;
	r = check_dir(v, d);
	v->p.dirs++;
	if (r == 1 && v->o->quick) {
		r = 0;
		goto out;
	}
	while (r >= 0) {
		n = v->l3->ops->list(v->l3, d->ino, after, rows, VERIFY_PAGE);
		if (n <= 0) {
			r = n;
			break;
		}
		for (int i = 0; i < n; i++) {
			if (r >= 0 && !v->o->quick)
				r = u64map_put(&v->seen, rows[i].ino,
					       rows[i].meta.kind == ITEM_DIR
						       ? SEEN_DIR
						       : SEEN_FILE);
			if (r >= 0 && rows[i].meta.kind == ITEM_DIR) {
				r = enqueue(v, &rows[i], d->path);
			} else if (r >= 0) {
				r = check_file(v, &rows[i], d->path);
				v->p.files++;
				progress(v, false);
			}
		}
		snprintf(after, sizeof(after), "%s", rows[n - 1].name);
		for (int i = 0; i < n; i++)
			store_row_release(&rows[i]);
		if (n < VERIFY_PAGE)
			break;
	}
out:
	free(rows);
	return r < 0 ? r : 0;
}

/* each_cached()'s callback: notes keys whose inode the walk did not meet
 * as the right kind. */
static int note_orphan(void *arg, uint64_t ino, bool tree)
{
	struct vrun *v = arg;
	void *seen = u64map_get(&v->seen, ino);
	uintptr_t bits = (uintptr_t)u64map_get(&v->orphans, ino);

	if (seen == (tree ? SEEN_DIR : SEEN_FILE))
		return 0;
	bits |= tree ? ORPHAN_TREE : ORPHAN_ITEM;
	return u64map_put(&v->orphans, ino, (void *)bits);
}

/* Reports (and with repair, deletes) one orphan, after checking that L3
 * has not got the entry meanwhile (a live mount's new file or directory). */
static int check_orphan(struct vrun *v, uint64_t ino, bool tree)
{
	struct store_row row;
	bool repaired = false;
	int r = v->l3->ops->get(v->l3, ino, &row);

	if (r == 0) {
		bool dir = row.meta.kind == ITEM_DIR;

		store_row_release(&row);
		if (dir == tree)
			return 0; /* created after the walk passed */
	} else if (r != -ENOENT) {
		return r;
	}
	if (v->o->repair) {
		r = v->l2->ops->drop_cached(v->l2, ino, tree);
		if (r < 0)
			return r;
		repaired = true;
	}
	report(v, tree ? VERIFY_ORPHAN_TREE : VERIFY_ORPHAN_ITEM,
	       "(not in L3)", ino,
	       tree ? "redis holds a hash of no directory of L3's tree"
		    : "redis holds an entry of no file of L3's tree",
	       repaired);
	return 0;
}

static int orphans(struct vrun *v)
{
	uint64_t ino;
	void *val;
	int r;

	r = v->l2->ops->each_cached(v->l2, note_orphan, v);
	for (size_t pos = 0; r >= 0 && u64map_next(&v->orphans, &pos, &ino,
						   &val);) {
		uintptr_t bits = (uintptr_t)val;

		if (bits & ORPHAN_ITEM)
			r = check_orphan(v, ino, false);
		if (r >= 0 && (bits & ORPHAN_TREE))
			r = check_orphan(v, ino, true);
	}
	return r;
}

int verify_run(struct store *l3, struct cache *l2, const struct verify_opts *o,
	       struct verify_progress *out)
{
	struct vrun v = {.l3 = l3, .l2 = l2, .o = o};
	uint64_t entries, bytes;
	int r;

	if (l3->ops->stats(l3, &entries, &bytes) == 0)
		v.p.total = entries + 1; /* and the root */
	u64map_init(&v.seen);
	u64map_init(&v.orphans);
	r = enqueue(&v, NULL, NULL);
	if (r == 0 && !o->quick)
		r = u64map_put(&v.seen, STORE_ROOT_INO, SEEN_DIR);
	while (r == 0 && v.head < v.len) {
		struct vdir d = v.queue[v.head++];

		r = visit(&v, &d);
		free(d.path);
		progress(&v, false);
	}
	if (r == 0 && !o->quick)
		r = orphans(&v);
	while (v.head < v.len)
		free(v.queue[v.head++].path);
	free(v.queue);
	u64map_release(&v.seen);
	u64map_release(&v.orphans);
	progress(&v, true);
	if (out)
		*out = v.p;
	return r;
}
