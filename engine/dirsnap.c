/*
 * dirsnap.c - cold walks: directory snapshots and sibling prefetch.
 *
 * A lookup that misses the node table would cost one L3 query per name;
 * a walk of a directory after a remount (stat or read every file) would
 * then cost one query per entry, and one more per file for its content.
 *
 * Snapshots. Instead, a lookup that misses the node table in directory D
 * reads a page of D's children with the listing op (store.h list()) and
 * keeps it as D's snapshot: the rows of the names in a range (lo, hi],
 * answered from memory by the lookups that follow, found or absent. D
 * keeps one range. The first load starts at D's first name and reads
 * SNAP_PAGE_MAX rows, so a directory of up to that many entries is read
 * whole in one query. A name after a range that starts at D's first name
 * grows the range by the next SNAP_PAGE_MAX names, as often as needed,
 * until the range holds SNAP_GROW_BYTES: walkers look names up in the
 * order readdir gave them, which is inode order, not name order (GNU tar
 * reads a whole directory, then stats each entry), so a directory of tens
 * of thousands of entries is read whole, a page per query, whatever order
 * its names come in. Past that, a name outside the range loads a new
 * range that starts at that name, replacing the old one; its size follows
 * how many lookups the old range answered (twice that, from SNAP_PAGE_MIN
 * up to SNAP_PAGE_MAX): a walk in name order reads big pages, lookups
 * scattered over a huge directory read small ones, near the cost of the
 * single lookups they replace. All snapshots together hold at most
 * SNAP_BYTES (the least recently used go first).
 *
 * A page whose listing skipped corrupt rows (store.h: list() leaves them
 * out, counted in store.corrupt) answers only the names it holds: an
 * absent one is asked of L3, whose lookup reports a corrupt row as such.
 *
 * A lookup answered from a snapshot makes a node as an L3 lookup does;
 * the node table keeps its precedence: a name with a node is answered by
 * the node, and a row whose entry has a node elsewhere (moved, deleted
 * here and not yet committed) is not shown.
 *
 * Staying current. A snapshot is what L3 held when it was read; what
 * changes its directory after that forgets it:
 *   - this engine's batches, once committed (commit_done(): the parent of
 *     each change, and the directory whose snapshot holds its entry);
 *   - the change feed's records of other writers (the new parent, and the
 *     snapshot that holds the entry: a deletion names no parent), and a
 *     feed reset (all of them).
 * Each forgetting bumps e->snap_epoch; a load that saw the epoch or gen
 * move while it read L3 (the lock is dropped then) is thrown away, so a
 * page read before a change is never installed after the change was
 * applied. So a snapshot lags L3 exactly as the node table does: until the
 * feed brings another writer's change.
 *
 * Prefetch. When a file's content is not in memory, the content of the
 * files listed after it in its directory's snapshot (wrapping around) is
 * read with it, at most PREFETCH_MAX files and PREFETCH_BYTES, and no more
 * than a sixteenth of L1's bound: from Redis in one pipeline (cache.h
 * fetch_many()) when it is configured, and what Redis lacks from L3 in
 * one query (store.h read_many(); then written to Redis in one pipeline,
 * as a single read fills it); all of it goes into L1, so that the next
 * opens hit L1. Each file's bytes are
 * checked against the snapshot's hash before they are cached; a file with
 * a node that changed, is not persisted or holds newer content is left
 * out. Nothing is prefetched while unpersisted content pins half of L1.
 */
#include "eng_int.h"

#define SNAP_PAGE_MAX 1000
#define SNAP_PAGE_MIN 64
#define SNAP_BYTES (16u << 20)
#define SNAP_GROW_BYTES (SNAP_BYTES / 2)
#define PREFETCH_MAX 128
#define PREFETCH_BYTES (8u << 20)

struct snap_ent {
	uint64_t ino;
	char *name; /* into the snapshot's names */
	struct item_meta meta;
	bool too_big; /* over max_item_bytes: not shown (row_too_big()) */
};

struct dirsnap {
	uint64_t dir;
	char lo[STORE_NAME_MAX + 1]; /* names after this one ("": all) */
	char hi[STORE_NAME_MAX + 1]; /* up to this one, unless to_end */
	bool to_end;
	/* the listing skipped corrupt rows: a name it lacks may be one of
	 * them, which L3's lookup answers (-EUCLEAN), not "absent" */
	bool holey;
	struct snap_ent *ents; /* in name order */
	size_t n;
	char *names;
	size_t names_len;
	size_t bytes;
	uint64_t hits;	 /* lookups it answered */
	uint64_t serial; /* e->snap_serial when made */
	struct dirsnap *prev, *next; /* most recently used first */
};

static void lru_unlink(struct eng *e, struct dirsnap *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		e->snap_head = s->next;
	if (s->next)
		s->next->prev = s->prev;
	else
		e->snap_tail = s->prev;
	s->prev = s->next = NULL;
}

static void lru_push(struct eng *e, struct dirsnap *s)
{
	s->next = e->snap_head;
	if (e->snap_head)
		e->snap_head->prev = s;
	e->snap_head = s;
	if (!e->snap_tail)
		e->snap_tail = s;
}

static void snap_free(struct eng *e, struct dirsnap *s)
{
	lru_unlink(e, s);
	u64map_del(&e->snaps, s->dir);
	for (size_t i = 0; i < s->n; i++) {
		if ((uintptr_t)u64map_get(&e->snap_inos, s->ents[i].ino) ==
		    s->dir)
			u64map_del(&e->snap_inos, s->ents[i].ino);
		item_meta_release(&s->ents[i].meta);
	}
	e->snap_bytes -= s->bytes;
	free(s->ents);
	free(s->names);
	free(s);
}

static void forget_dir(struct eng *e, uint64_t dir)
{
	struct dirsnap *s = dir ? u64map_get(&e->snaps, dir) : NULL;

	if (s)
		snap_free(e, s);
}

void snap_forget(struct eng *e, uint64_t ino, uint64_t parent)
{
	e->snap_epoch++;
	if (!e->snap_head)
		return;
	forget_dir(e, parent);
	forget_dir(e, (uintptr_t)u64map_get(&e->snap_inos, ino));
	forget_dir(e, ino); /* a directory's own page: its row changed
			       (a child came or went, or it was removed) */
}

void snap_forget_all(struct eng *e)
{
	e->snap_epoch++;
	while (e->snap_head)
		snap_free(e, e->snap_head);
}

static bool covers(const struct dirsnap *s, const char *name)
{
	return strcmp(name, s->lo) > 0 &&
	       (s->to_end || strcmp(name, s->hi) <= 0);
}

/* The index of @name in @s, or of where it would go (*found false). */
static size_t find(const struct dirsnap *s, const char *name, bool *found)
{
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(s->ents[mid].name, name);

		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

/* The greatest name that sorts before @name (store.h order: bytes, the
 * shorter first), so that a listing after it starts at @name. */
static void name_before(const char *name, char out[STORE_NAME_MAX + 1])
{
	size_t len = strlen(name);
	unsigned char last = (unsigned char)name[len - 1];

	memcpy(out, name, len - 1);
	if (last == 1) {
		out[len - 1] = '\0';
		return;
	}
	out[len - 1] = (char)(last - 1);
	memset(out + len, 0xff, STORE_NAME_MAX - len);
	out[STORE_NAME_MAX] = '\0';
}

/* Appends @nrows rows (their meta stolen), which sort after @s's last
 * name, to @s; @limit rows were asked for, so fewer reach the end. The
 * bytes are counted in @s and e->snap_bytes. On -ENOMEM @s may hold some
 * of the rows: the caller frees it. */
static int add_rows(struct eng *e, struct dirsnap *s, struct store_row *rows,
		    size_t nrows, size_t limit)
{
	size_t names = 0, off = s->names_len, added;
	struct snap_ent *ents;
	uintptr_t old;
	char *buf;

	for (size_t i = 0; i < nrows; i++)
		names += strlen(rows[i].name) + 1;
	ents = realloc(s->ents,
		       (s->n + nrows ? s->n + nrows : 1) * sizeof(*ents));
	if (!ents)
		return -ENOMEM;
	s->ents = ents;
	old = (uintptr_t)s->names;
	buf = realloc(s->names, off + names ? off + names : 1);
	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < s->n; i++) /* the buffer may have moved */
		s->ents[i].name = buf + ((uintptr_t)s->ents[i].name - old);
	s->names = buf;
	s->names_len = off + names;
	s->to_end = nrows < limit;
	if (nrows)
		snprintf(s->hi, sizeof(s->hi), "%s", rows[nrows - 1].name);
	added = nrows * sizeof(*s->ents) + names;
	s->bytes += added;
	e->snap_bytes += added;
	for (size_t i = 0; i < nrows; i++) {
		struct snap_ent *x = &s->ents[s->n++];
		size_t len = strlen(rows[i].name) + 1;
		uint64_t other;

		memcpy(s->names + off, rows[i].name, len);
		x->name = s->names + off;
		off += len;
		x->ino = rows[i].ino;
		x->too_big = row_too_big(e, &rows[i]);
		x->meta = rows[i].meta;
		memset(&rows[i].meta, 0, sizeof(rows[i].meta));
		/* an entry in two snapshots: the other one is older */
		other = (uintptr_t)u64map_get(&e->snap_inos, x->ino);
		if (other && other != s->dir)
			forget_dir(e, other);
		s->bytes += x->meta.xattrs_len;
		e->snap_bytes += x->meta.xattrs_len;
		if (u64map_put(&e->snap_inos, x->ino,
			       (void *)(uintptr_t)s->dir) < 0)
			return -ENOMEM; /* a feed record could not find it */
	}
	return 0;
}

/* The bytes add_rows() counts for @nrows rows, but their xattrs. */
static size_t rows_bytes(const struct store_row *rows, size_t nrows)
{
	size_t bytes = nrows * sizeof(struct snap_ent);

	for (size_t i = 0; i < nrows; i++)
		bytes += strlen(rows[i].name) + 1;
	return bytes;
}

/* Makes room for @bytes more in the snapshots, dropping the least
 * recently used ones but @keep. */
static void make_room(struct eng *e, size_t bytes, const struct dirsnap *keep)
{
	while (e->snap_tail && e->snap_tail != keep &&
	       e->snap_bytes + bytes > SNAP_BYTES)
		snap_free(e, e->snap_tail);
}

/* Makes a snapshot of @nrows rows (their meta stolen) read after @lo
 * with @limit; installs it in place of @dir's. -ENOMEM. */
static int install(struct eng *e, uint64_t dir, const char *lo,
		   struct store_row *rows, size_t nrows, size_t limit,
		   bool holey)
{
	struct dirsnap *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->dir = dir;
	s->holey = holey;
	s->serial = ++e->snap_serial;
	snprintf(s->lo, sizeof(s->lo), "%s", lo);
	s->bytes = sizeof(*s);
	forget_dir(e, dir);
	make_room(e, sizeof(*s) + rows_bytes(rows, nrows), NULL);
	if (u64map_put(&e->snaps, dir, s) < 0) {
		free(s);
		return -ENOMEM;
	}
	e->snap_bytes += s->bytes;
	lru_push(e, s);
	if (add_rows(e, s, rows, nrows, limit) < 0) {
		snap_free(e, s);
		return -ENOMEM;
	}
	return 0;
}

/* Reads up to @limit of @dir's children named after @lo into @rows
 * (drops the lock), as a snapshot's page: returns what list() did, and
 * whether a concurrent change may make the rows older than what was
 * applied meanwhile (*stale, with e->snap_epoch as it was at @epoch), or
 * corrupt rows were skipped (*holey). */
static int read_page(struct eng *e, struct node *dir, const char *lo,
		     struct store_row *rows, size_t limit, uint64_t epoch,
		     bool *stale, bool *holey)
{
	uint64_t corrupt = atomic_load(&e->l3->corrupt);
	struct tier_call c;
	int r;

	e->snap_loads++;
	r = tier_enter(e, &c, OP_L3_LIST, dir, true);
	if (r == 0)
		r = e->l3->ops->list(e->l3, dir->ino, lo, rows, limit);
	r = tier_leave(e, &c, r);
	*stale = tier_stale(e, &c) || e->snap_epoch != epoch || dir->deleted;
	*holey = atomic_load(&e->l3->corrupt) != corrupt;
	return r;
}

/* Reads the page of @dir's children that answers @name (after @old's
 * range when @old is set) and installs it. Drops the lock. 0, or a
 * negative errno (then nothing was installed). */
static int load(struct eng *e, struct node *dir, const char *name,
		struct dirsnap *old)
{
	char lo[STORE_NAME_MAX + 1] = "";
	uint64_t epoch = e->snap_epoch;
	struct store_row *rows;
	size_t limit = SNAP_PAGE_MAX;
	bool stale, holey;
	int r;

	if (old) {
		limit = old->hits * 2;
		limit = limit < SNAP_PAGE_MIN	? SNAP_PAGE_MIN
			: limit > SNAP_PAGE_MAX ? SNAP_PAGE_MAX
						: limit;
		name_before(name, lo);
	}
	rows = calloc(limit, sizeof(*rows));
	if (!rows)
		return -ENOMEM;
	r = read_page(e, dir, lo, rows, limit, epoch, &stale, &holey);
	if (r >= 0) {
		size_t n = (size_t)r;

		if (stale)
			r = -EAGAIN; /* may be older than what was applied */
		else
			r = install(e, dir->ino, lo, rows, n, limit, holey);
		for (size_t i = 0; i < n; i++)
			store_row_release(&rows[i]);
	}
	free(rows);
	return r;
}

/* true when @s should grow to answer @name: it holds @dir's first names
 * on, @name comes after them, and it has room (see the top of the file) */
static bool grows(const struct dirsnap *s, const char *name)
{
	return !s->lo[0] && !s->to_end && s->bytes < SNAP_GROW_BYTES &&
	       strcmp(name, s->hi) > 0;
}

/* Reads the page of @dir's children after @s's last name and appends it
 * to @s. Drops the lock. 0, or a negative errno (then @s is unchanged,
 * or gone). */
static int grow(struct eng *e, struct node *dir, struct dirsnap *s)
{
	char lo[STORE_NAME_MAX + 1];
	uint64_t epoch = e->snap_epoch, serial = s->serial;
	struct store_row *rows;
	bool stale, holey;
	int r;

	rows = calloc(SNAP_PAGE_MAX, sizeof(*rows));
	if (!rows)
		return -ENOMEM;
	snprintf(lo, sizeof(lo), "%s", s->hi);
	r = read_page(e, dir, lo, rows, SNAP_PAGE_MAX, epoch, &stale, &holey);
	if (r >= 0) {
		size_t n = (size_t)r;

		/* @s may have been forgotten or dropped meanwhile */
		s = u64map_get(&e->snaps, dir->ino);
		if (stale || !s || s->serial != serial ||
		    strcmp(s->hi, lo) != 0 /* another grow came first */) {
			r = -EAGAIN; /* may be older than what was applied */
		} else {
			lru_unlink(e, s);
			lru_push(e, s);
			make_room(e, rows_bytes(rows, n), s);
			s->holey |= holey;
			r = add_rows(e, s, rows, n, SNAP_PAGE_MAX);
			if (r < 0)
				snap_free(e, s);
		}
		for (size_t i = 0; i < n; i++)
			store_row_release(&rows[i]);
	}
	free(rows);
	return r;
}

int snap_resolve(struct eng *e, struct node *dir, const char *name,
		 int *loads, struct node **out)
{
	struct dirsnap *s = u64map_get(&e->snaps, dir->ino);
	struct item_meta m;
	struct snap_ent *x;
	struct node *n;
	bool found;
	size_t i;

	/* without the feed nothing would tell a snapshot that another
	 * writer changed the directory (a one-shot engine): L3 each time */
	if (!name[0] || !e->feed_started)
		return 1;
	if (s && grows(s, name)) /* the next page, as many times as needed */
		return grow(e, dir, s) == 0 ? 2 : 1;
	if (!s || !covers(s, name)) {
		/* the first load reads from the start: a second one, from
		 * @name, when the directory is bigger than a page */
		if (*loads >= 2 || (*loads == 1 && !s))
			return 1;
		(*loads)++;
		return load(e, dir, name, s) == 0 ? 2 : 1;
	}
	s->hits++;
	lru_unlink(e, s);
	lru_push(e, s);
	i = find(s, name, &found);
	if (!found && s->holey)
		return 1; /* maybe a corrupt row: L3's lookup says */
	if (!found) {
		e->snap_negatives++;
		return -ENOENT;
	}
	x = &s->ents[i];
	if (node_get(e, x->ino))
		return -ENOENT; /* the node table says it moved or went away */
	if (x->too_big)
		return -EUCLEAN; /* as a corrupt row: not shown */
	if (item_meta_copy(&m, &x->meta) < 0)
		return -ENOMEM;
	n = node_add(e, dir, x->ino, x->name, &m);
	if (!n) {
		item_meta_release(&m);
		return -ENOMEM;
	}
	e->snap_hits++;
	n->holds++;
	*out = n;
	return 0;
}

/* A sibling worth prefetching: a file of the snapshot, not in L1, whose
 * node (if any) is clean, closed and at the snapshot's version. */
static bool wanted(struct eng *e, const struct snap_ent *x, size_t room)
{
	struct node *n;

	if (x->meta.kind == ITEM_DIR || x->meta.size > room || x->too_big)
		return false;
	n = node_get(e, x->ino);
	if (n && (n->deleted || n->dirty || n->content_dirty || n->item ||
		  n->meta.version != x->meta.version))
		return false;
	return !l1_holds(e->l1, x->ino, x->meta.version);
}

/* The ID of entry @name in directory @dir ("" when it has none). */
static void child_id(struct eng *e, struct node *dir, const char *name,
		     char id[ID_MAX + 1])
{
	char path[ID_PATH_MAX + STORE_NAME_MAX + 2];
	ssize_t len = dir ? node_path(e, dir, path, ID_PATH_MAX) : -ENOENT;

	id[0] = '\0';
	if (len < 0)
		return;
	snprintf(path + len, sizeof(path) - (size_t)len, "%s%s",
		 len ? "/" : "", name);
	if (id_from_path(path, false, id, ID_MAX + 1, NULL) < 0)
		id[0] = '\0';
}

/* Caches blob @b, the content of candidate @i, in L1 when it is still
 * the content of the version the snapshot or the node names. Returns the
 * new item (a reference for the caller), or NULL. */
static struct item *prefetch_one(struct eng *e, struct node *n,
				 struct dirsnap *s, const size_t *idx,
				 size_t i, struct store_blob *b,
				 const uint8_t hash[ITEM_HASH_LEN],
				 const char **name, uint64_t *parent)
{
	struct node *sib = i == 0 ? n : node_get(e, b->ino);
	const struct item_meta *want;
	char id[ID_MAX + 1];
	struct item_meta m;
	struct item *it;

	if (sib) {
		/* a node: its metadata is the truth */
		if (sib->deleted || sib->dirty || sib->content_dirty ||
		    (i && sib->item))
			return NULL;
		want = &sib->meta;
		*name = sib->name;
		*parent = sib->parent;
		node_item_id(e, sib, id);
	} else {
		if (!s)
			return NULL; /* forgotten meanwhile: nothing vouches */
		want = &s->ents[idx[i]].meta;
		*name = s->ents[idx[i]].name;
		*parent = n->parent;
		child_id(e, node_get(e, n->parent), *name, id);
	}
	if (want->kind == ITEM_DIR || b->len != want->size ||
	    memcmp(hash, want->hash, ITEM_HASH_LEN) != 0)
		return NULL; /* not that version's bytes */
	if (i && l1_holds(e->l1, b->ino, want->version))
		return NULL;
	m = *want; /* shallow: copied by item_new_hashed */
	it = item_new_hashed(id, b->data, b->len, &m);
	b->data = NULL;
	if (!it)
		return NULL;
	l1_put(e->l1, b->ino, it, false); /* a full cache is no error */
	e->prefetched++;
	return it;
}

/* Reads what it can of the @k files @inos from L2 into @blobs (compacted,
 * each with its hash in @hashes) and lists the others in @missing (*nmiss
 * of them). Returns how many blobs. Drops the lock. */
static size_t fetch_l2(struct eng *e, struct node *n, const uint64_t *inos,
		       size_t k, struct store_blob *blobs,
		       uint8_t (*hashes)[ITEM_HASH_LEN], uint64_t *missing,
		       size_t *nmiss)
{
	struct store_row *rows = calloc(k, sizeof(*rows));
	struct tier_call c;
	size_t got = 0;
	int r;

	*nmiss = 0;
	r = rows ? tier_enter(e, &c, OP_L2_FETCH_MANY, n, true) : -ENOMEM;
	if (r == 0) {
		r = e->l2->ops->fetch_many(e->l2, inos, k, rows, blobs);
		for (size_t i = 0; r > 0 && i < k; i++) /* without the lock */
			if (blobs[i].ino)
				item_hash(blobs[i].data, blobs[i].len,
					  hashes[i]);
	}
	if (rows)
		r = tier_leave(e, &c, r);
	for (size_t i = 0; i < k; i++) {
		if (r > 0 && blobs[i].ino) {
			store_row_release(&rows[i]);
			blobs[got] = blobs[i];
			memcpy(hashes[got], hashes[i], ITEM_HASH_LEN);
			got++;
		} else {
			missing[(*nmiss)++] = inos[i];
		}
	}
	free(rows);
	return got;
}

/* Writes the files read from L3 into L2 as well (read-through fill), best
 * effort, in one pipeline. Drops the lock. */
static void fill_l2(struct eng *e, struct node *n, struct change **chs,
		    size_t nch)
{
	struct tier_call c;
	int r;

	if (!nch)
		return;
	r = tier_enter(e, &c, OP_L2_APPLY, n, true);
	if (r == 0)
		r = e->l2->ops->apply(e->l2, chs, nch);
	tier_leave(e, &c, r);
}

int snap_prefetch(struct eng *e, struct node *n)
{
	struct dirsnap *s = u64map_get(&e->snaps, n->parent);
	size_t budget = e->cfg.l1_max_bytes / 16, k = 0, start, got = 0;
	size_t nmiss = 0, l3_first, nch = 0;
	uint64_t inos[PREFETCH_MAX], missing[PREFETCH_MAX], serial;
	struct change *chs[PREFETCH_MAX];
	size_t idx[PREFETCH_MAX];
	uint8_t (*hashes)[ITEM_HASH_LEN];
	struct store_blob *blobs;
	struct l1_stats st;
	struct tier_call c;
	bool found, l2;
	int r;

	if (!s || !e->l3->ops->read_many || n->deleted)
		return 0;
	l1_get_stats(e->l1, &st);
	if (st.pinned_bytes >= e->cfg.l1_max_bytes / 2)
		return 0; /* L1 is under pressure: no reading ahead */
	if (budget > PREFETCH_BYTES)
		budget = PREFETCH_BYTES;
	if (n->meta.size > budget)
		return 0;
	inos[k] = n->ino;
	idx[k++] = 0;
	budget -= n->meta.size;
	start = find(s, n->name, &found);
	for (size_t j = 0; j < s->n && k < PREFETCH_MAX; j++) {
		size_t at = (start + j) % s->n;
		const struct snap_ent *x = &s->ents[at];

		if (x->ino == n->ino || !wanted(e, x, budget))
			continue;
		inos[k] = x->ino;
		idx[k++] = at;
		budget -= x->meta.size;
	}
	if (k == 1)
		return 0; /* nothing to read ahead: a single read does */
	blobs = calloc(k, sizeof(*blobs));
	hashes = calloc(k, sizeof(*hashes));
	if (!blobs || !hashes) {
		free(blobs);
		free(hashes);
		return 0;
	}
	serial = s->serial;
	e->prefetch_batches++;
	/* Redis first (when it holds them), then L3 for the rest */
	l2 = l2_usable(e) && e->l2->ops->fetch_many;
	if (l2) {
		got = fetch_l2(e, n, inos, k, blobs, hashes, missing, &nmiss);
	} else {
		memcpy(missing, inos, k * sizeof(*inos));
		nmiss = k;
	}
	l3_first = got; /* blobs from here on came from L3 */
	if (nmiss) {
		r = tier_enter(e, &c, OP_L3_READ_MANY, n, true);
		if (r == 0) {
			r = e->l3->ops->read_many(e->l3, missing, nmiss,
						  blobs + got);
			for (int b = 0; b < r; b++) /* still without the lock */
				item_hash(blobs[got + b].data,
					  blobs[got + b].len, hashes[got + b]);
		}
		r = tier_leave(e, &c, r);
		if (r > 0)
			got += (size_t)r;
	}
	/* the snapshot's rows still stand for L3 only if nothing was
	 * forgotten or replaced meanwhile */
	s = u64map_get(&e->snaps, n->parent);
	if (s && s->serial != serial)
		s = NULL;
	for (size_t b = 0; b < got; b++) {
		const char *name = NULL;
		uint64_t parent = 0;
		struct item *it;
		size_t i;

		for (i = 0; i < k && inos[i] != blobs[b].ino; i++)
			;
		it = i < k ? prefetch_one(e, n, s, idx, i, &blobs[b],
					  hashes[b], &name, &parent)
			   : NULL;
		if (it && l2 && b >= l3_first) {
			chs[nch] = change_new_put(blobs[b].ino, parent, name,
						  item_meta(it), it);
			if (chs[nch])
				nch++;
		}
		item_unref(it);
		free(blobs[b].data);
	}
	free(blobs);
	free(hashes);
	if (l2)
		fill_l2(e, n, chs, nch);
	for (size_t i = 0; i < nch; i++)
		change_free(chs[i]);
	return got > 0;
}
