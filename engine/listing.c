/*
 * listing.c - directory handles and readdir: the L3 index paged by inode
 * number, merged with the changes not yet persisted.
 *
 * A listing runs in inode number order, and an entry's offset (cookie) is
 * its inode number: numbers are never reused and an entry keeps its number
 * when renamed, so a listing resumed from any offset, on any handle, goes
 * on exactly after the entry that handed out the offset, whatever was
 * added, removed or renamed meanwhile. A mount therefore needs no
 * per-open state for directories.
 *
 * Pages are keyset pages (the rows numbered after the last one shown), so
 * a listing costs the same at its millionth entry as at its first, and its
 * memory is bounded: each handle keeps the rows it read ahead, LIST_PAGE
 * for its first query and twice as many for each next one up to
 * LIST_AHEAD, so that a long listing makes one L3 query for several
 * readdir calls (a readdir call takes about a hundred names). Read-ahead
 * rows serve only while nothing was persisted or taken from the feed
 * since they were read (e->gen); the changes not yet persisted are merged
 * at every call, as they were with a fresh page.
 *
 * A long listing also reads its next rows in the background: a readdir
 * call that leaves the handle holding at least two pages, with more to
 * come, reserves a prefetch, which the caller runs with
 * eng_readdir_prefetch() once it has handed the entries on (the mount
 * replies first). The next query then overlaps with the kernel's and the
 * reader's work on the rows already read, instead of following it.
 */
#include "eng_int.h"

static void rows_release(struct store_row *rows, int *n)
{
	for (int i = 0; i < *n; i++)
		store_row_release(&rows[i]);
	*n = 0;
}

/* Drops the rows read ahead, and the prefetched ones that followed them
 * (a prefetch running meanwhile will find its rows stale). */
static void ahead_drop(struct eng_dir *d)
{
	rows_release(d->ahead, &d->nahead);
	rows_release(d->next, &d->nnext);
	d->ahead_more = false;
	d->ahead_epoch++;
}

static void dir_release(struct handle_link *h)
{
	struct eng_dir *d = (struct eng_dir *)h;

	ahead_drop(d);
	free(d->ahead);
	free(d->next);
	d->ahead = d->next = NULL;
	d->ahead_cap = d->next_cap = 0;
}

int eng_opendir(struct eng *e, uint64_t ino, struct eng_dir **dp)
{
	struct eng_dir *d;
	struct node *n;
	int r;

	pthread_mutex_lock(&e->lock);
	r = get_dir(e, ino, &n);
	if (r < 0)
		goto out_unlock;
	d = calloc(1, sizeof(*d));
	if (!d) {
		r = -ENOMEM;
		goto out_unlock;
	}
	d->n = n;
	d->link.release = dir_release;
	n->opens++;
	e->dir_handles++;
	handle_link(e, &d->link);
	*dp = d;
out_unlock:
	pthread_mutex_unlock(&e->lock);
	return r;
}

void eng_releasedir(struct eng *e, struct eng_dir *d)
{
	if (!d)
		return;
	pthread_mutex_lock(&e->lock);
	while (d->prefetch) /* its reader runs it after its reply */
		pthread_cond_wait(&e->dir_cond, &e->lock);
	handle_unlink(&d->link);
	e->dir_handles--;
	d->n->opens--;
	node_try_free(e, d->n);
	pthread_mutex_unlock(&e->lock);
	dir_release(&d->link);
	free(d);
}

static int cmp_node_inos(const void *a, const void *b)
{
	uint64_t x = (*(struct node *const *)a)->ino;
	uint64_t y = (*(struct node *const *)b)->ino;

	return (x > y) - (x < y);
}

/* Collects, sorted by inode number, the dirty live children of @dir
 * numbered after @after. */
static int pending_children(struct eng *e, struct node *dir, uint64_t after,
			    struct node ***out, size_t *nout)
{
	size_t n = 0, cap = 0;
	struct node **arr = NULL;

	for (struct node *d = e->dirty_head; d; d = d->dnext) {
		if (d->deleted || d->parent != dir->ino || d->ino <= after)
			continue;
		if (n == cap) {
			struct node **na;

			cap = cap ? cap * 2 : 16;
			na = realloc(arr, cap * sizeof(*na));
			if (!na) {
				free(arr);
				return -ENOMEM;
			}
			arr = na;
		}
		arr[n++] = d;
	}
	if (n)
		qsort(arr, n, sizeof(*arr), cmp_node_inos);
	*out = arr;
	*nout = n;
	return 0;
}

/*
 * Consumes one entry: hands it to @fn and, with @plus, takes a lookup
 * reference. Returns 1 when @fn stopped before the entry, 0 when consumed,
 * or a negative errno.
 */
static int consume(struct eng *e, struct eng_dir *d, struct node *n,
		   struct store_row *row, const int64_t *subdirs, bool plus,
		   eng_dir_fn fn, void *arg)
{
	const char *name = n ? n->name : row->name;
	uint64_t ino = n ? n->ino : row->ino;
	struct eng_attr a;

	if (n) {
		node_attr(e, n, &a);
	} else {
		struct node tmp = {.ino = row->ino, .meta = row->meta};

		tmp.subdirs_known = *subdirs >= 0;
		tmp.subdirs = (uint64_t)*subdirs;
		node_attr(e, &tmp, &a);
	}
	if (fn(arg, name, &a, ino))
		return 1;
	if (plus && !n) {
		n = node_add(e, d->n, row->ino, row->name, &row->meta);
		if (!n)
			return -ENOMEM;
		n->subdirs_known = *subdirs >= 0;
		n->subdirs = (uint64_t)*subdirs;
	}
	if (plus)
		n->nlookup++;
	d->cursor = ino;
	return 0;
}

/* true when the node table overrides L3 row @row (its entry changed). */
static bool row_overridden(struct eng *e, const struct store_row *row)
{
	struct node *m = node_get(e, row->ino);

	return (m && (m->dirty || m->deleted)) || row_too_big(e, row);
}

/*
 * For readdirplus: counts the subdirectories of the directories a page
 * shows (nlink), into @subdirs[i] for row i without a node (-1: unknown),
 * and into the nodes of the others, the dirty children of @d included.
 * Drops the lock: returns 1 when what the page relied on changed meanwhile
 * (read the page again). An L3 failure leaves the counts unknown (nlink 1).
 */
static int count_page(struct eng *e, struct eng_dir *d,
		      const struct store_row *rows, int nrows,
		      int64_t *subdirs)
{
	uint64_t gen = e->gen, marks = e->dirty_dirs, count;
	struct node *n;
	int r = 0;

	for (int i = 0; i < nrows && r == 0; i++) {
		subdirs[i] = -1;
		if (rows[i].meta.kind != ITEM_DIR ||
		    row_overridden(e, &rows[i]))
			continue;
		n = node_get(e, rows[i].ino);
		if (n) {
			n->holds++;
			r = dir_count(e, n);
			node_put(e, n);
		} else {
			r = subdirs_of(e, rows[i].ino, d->n, &count);
			if (r == 0)
				subdirs[i] = (int64_t)count;
		}
	}
	for (bool more = r == 0; more;) { /* the pending ones */
		more = false;
		for (n = e->dirty_head; n; n = n->dnext) {
			if (n->deleted || n->parent != d->n->ino ||
			    !node_is_dir(n) || n->subdirs_known)
				continue;
			n->holds++;
			more = dir_count(e, n) == 0;
			node_put(e, n);
			break; /* the list may have changed: walk again */
		}
	}
	return gen != e->gen || marks != e->dirty_dirs;
}

/* pages read again for counts lost to concurrent changes; then the
 * page is shown with what it has (nlink 1 where unknown) */
#define COUNT_PAGE_TRIES 8

/* true when the prefetched rows continue the ahead ones and still serve
 * a caller that wants attributes unless @names */
static bool next_follows(const struct eng *e, const struct eng_dir *d,
			 bool names)
{
	return d->nnext && d->next_epoch == d->ahead_epoch &&
	       d->next_gen == e->gen && (names || !d->next_names);
}

/* Makes the prefetched rows the ahead ones. */
static void next_take(struct eng_dir *d)
{
	struct store_row *rows = d->ahead;
	int cap = d->ahead_cap;

	rows_release(d->ahead, &d->nahead);
	d->ahead = d->next;
	d->ahead_cap = d->next_cap;
	d->nahead = d->nnext;
	d->ahead_more = d->next_more;
	d->ahead_names = d->next_names;
	d->ahead_gen = d->next_gen;
	d->ahead_epoch++;
	d->next = rows;
	d->next_cap = cap;
	d->nnext = 0;
}

/* rows the next query of a listing that holds @held rows reads: one page
 * first (or after a change), then twice as many each time, up to
 * LIST_AHEAD */
static int next_want(int held)
{
	int want = held ? held * 2 : LIST_PAGE;

	return want < LIST_AHEAD ? want : LIST_AHEAD;
}

/*
 * Reads up to @want rows of @d's directory numbered after @after from L3
 * into @rows (names only with @names), dropping e->lock meanwhile. Returns the
 * rows read, with *gen the generation they are good for, -ESTALE when a
 * batch committed meanwhile (the rows may be older than the node table;
 * none are kept), or another negative errno.
 */
static int list_query(struct eng *e, struct eng_dir *d, bool names,
		      uint64_t after, struct store_row *rows, int want,
		      uint64_t *gen)
{
	struct tier_call c;
	int n;

	memset(rows, 0, (size_t)want * sizeof(*rows));
	n = tier_enter(e, &c, OP_L3_LIST, d->n, true);
	if (n == 0)
		n = e->l3->ops->list_by_ino(e->l3, d->n->ino, after, names,
					    rows, want);
	n = tier_leave(e, &c, n);
	if (n >= 0 && tier_stale(e, &c)) {
		rows_release(rows, &n);
		return -ESTALE;
	}
	*gen = c.gen;
	return n;
}

/*
 * Points *page at up to LIST_PAGE rows of @d's directory numbered after
 * @after, in inode order: from the rows read ahead while they are still
 * good, then from the prefetched ones that follow them, else from a new
 * L3 query (which replaces them). *full tells that more rows may follow
 * the page. Returns the rows in the page (0 at the end) or a negative
 * errno. The rows stay the handle's. May wait, without e->lock, for the
 * handle's prefetch.
 */
static int dir_page(struct eng *e, struct eng_dir *d, uint64_t after,
		    bool names, struct store_row **page, bool *full)
{
	int lo, hi, n, want;
	uint64_t gen;
	bool grow;

	for (;;) {
		grow = d->nahead && d->ahead_gen == e->gen;
		if (!grow || (!names && d->ahead_names))
			break;
		lo = 0;
		hi = d->nahead;
		while (lo < hi) { /* the first row numbered after @after */
			int mid = lo + (hi - lo) / 2;

			if (d->ahead[mid].ino <= after)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo < d->nahead || !d->ahead_more) {
			n = d->nahead - lo < LIST_PAGE ? d->nahead - lo
						       : LIST_PAGE;
			*page = d->ahead + lo;
			*full = lo + n < d->nahead || d->ahead_more;
			return n;
		}
		/* all consumed: the prefetched rows continue them */
		if (d->prefetch) {
			pthread_cond_wait(&e->dir_cond, &e->lock);
		} else if (next_follows(e, d, names)) {
			next_take(d);
			e->list_prefetches_used++;
		} else {
			break;
		}
	}
	want = next_want(grow ? d->nahead : 0);
	ahead_drop(d);
	if (want > d->ahead_cap) {
		struct store_row *na = realloc(d->ahead, (size_t)want *
							       sizeof(*na));

		if (!na)
			return -ENOMEM;
		d->ahead = na;
		d->ahead_cap = want;
	}
	do {
		n = list_query(e, d, names, after, d->ahead, want, &gen);
		if (n < 0 && n != -ESTALE)
			return n;
	} while (n < 0);
	d->nahead = n;
	d->ahead_more = n == want;
	d->ahead_names = names;
	d->ahead_gen = gen;
	*page = d->ahead;
	*full = n > LIST_PAGE || d->ahead_more;
	return n < LIST_PAGE ? n : LIST_PAGE;
}

/* true when @d's listing is long enough, and its next rows unread, for a
 * prefetch */
static bool prefetch_due(const struct eng *e, const struct eng_dir *d)
{
	return !d->prefetch && d->nahead >= 2 * LIST_PAGE && d->ahead_more &&
	       d->ahead_gen == e->gen &&
	       !(d->nnext && d->next_epoch == d->ahead_epoch);
}

void eng_readdir_prefetch(struct eng *e, struct eng_dir *d)
{
	uint64_t after, epoch, gen;
	int n, want;
	bool names;

	pthread_mutex_lock(&e->lock);
	/* a readdir call since the reservation may have made it moot */
	if (!d->prefetch || !d->nahead || !d->ahead_more ||
	    d->ahead_gen != e->gen)
		goto out;
	rows_release(d->next, &d->nnext);
	want = next_want(d->nahead);
	if (want > d->next_cap) {
		struct store_row *na = realloc(d->next, (size_t)want *
							      sizeof(*na));

		if (!na)
			goto out; /* the next readdir call queries itself */
		d->next = na;
		d->next_cap = want;
	}
	after = d->ahead[d->nahead - 1].ino;
	names = d->ahead_names;
	epoch = d->ahead_epoch;
	/* without e->lock, d->next is this call's alone: nnext stays 0 and
	 * nothing swaps or frees the buffer while d->prefetch is set */
	n = list_query(e, d, names, after, d->next, want, &gen);
	if (n > 0 && epoch != d->ahead_epoch) {
		rows_release(d->next, &n); /* the ahead rows changed */
	} else if (n > 0) {
		e->list_prefetches++;
		d->nnext = n;
		d->next_more = n == want;
		d->next_names = names;
		d->next_gen = gen;
		d->next_epoch = epoch;
	}
out:
	d->prefetch = false;
	pthread_cond_broadcast(&e->dir_cond);
	pthread_mutex_unlock(&e->lock);
}

static int readdir_walk(struct eng *e, struct eng_dir *d, uint64_t off,
			bool plus, bool names, eng_dir_fn fn, void *arg,
			bool *prefetch)
{
	int64_t subdirs[LIST_PAGE];
	int recounts = 0;
	struct node **pend = NULL;
	size_t npend = 0;
	uint64_t after;
	int r = 0;

	pthread_mutex_lock(&e->lock);
	if (off != d->cursor) {
		/* a seek: go on after the entry numbered @off */
		d->cursor = off;
		ahead_drop(d); /* consumed rows gave their meta to nodes */
	}
	/* @after pages through L3; d->cursor is the last entry consumed. A
	 * page whose rows are all overridden consumes nothing but still
	 * moves @after on. */
	after = d->cursor;
	for (;;) {
		struct store_row *rows;
		int nrows, i = 0;
		size_t ip = 0;
		bool full;

		nrows = dir_page(e, d, after, names, &rows, &full);
		if (nrows < 0) {
			r = nrows;
			break;
		}
		for (i = 0; i < nrows; i++)
			subdirs[i] = -1;
		if (plus && recounts < COUNT_PAGE_TRIES &&
		    count_page(e, d, rows, nrows, subdirs) && ++recounts) {
			ahead_drop(d);
			continue;
		}
		i = 0;
		free(pend);
		pend = NULL;
		r = pending_children(e, d->n, d->cursor, &pend, &npend);
		if (r < 0)
			break;
		/* merge the rows the node table does not override with the
		 * pending children; with a full page, only pending ones
		 * numbered before its last row (the rest come with the next
		 * page) */
		while (r == 0) {
			bool have_row, have_pend;

			while (i < nrows && row_overridden(e, &rows[i]))
				i++;
			have_row = i < nrows;
			have_pend =
				ip < npend &&
				(!full || pend[ip]->ino < rows[nrows - 1].ino);
			if (!have_row && !have_pend)
				break;
			if (have_pend &&
			    (!have_row || pend[ip]->ino < rows[i].ino)) {
				r = consume(e, d, pend[ip], NULL, NULL, plus,
					    fn, arg);
				ip += r == 0;
			} else {
				r = consume(e, d, node_get(e, rows[i].ino),
					    &rows[i], &subdirs[i], plus, fn,
					    arg);
				i += r == 0;
			}
		}
		if (nrows)
			after = rows[nrows - 1].ino;
		if (r || !full)
			break;
	}
	if (prefetch) {
		*prefetch = r >= 0 && prefetch_due(e, d);
		if (*prefetch)
			d->prefetch = true;
	}
	pthread_mutex_unlock(&e->lock);
	free(pend);
	return r < 0 ? r : 0;
}

int eng_readdir(struct eng *e, struct eng_dir *d, uint64_t off, bool plus,
		eng_dir_fn fn, void *arg, bool *prefetch)
{
	return readdir_walk(e, d, off, plus, false, fn, arg, prefetch);
}

int eng_readdir_names(struct eng *e, struct eng_dir *d, uint64_t off,
		      eng_dir_fn fn, void *arg, bool *prefetch)
{
	return readdir_walk(e, d, off, false, true, fn, arg, prefetch);
}
