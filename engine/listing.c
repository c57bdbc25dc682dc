/*
 * listing.c - directory handles and readdir: the L3 index paged by name,
 * merged with the changes not yet persisted.
 *
 * Pages are keyset pages (the rows named after the last one shown), so a
 * listing costs the same at its millionth entry as at its first, and its
 * memory is bounded: each handle keeps the rows it read ahead, LIST_PAGE
 * for its first query and twice as many for each next one up to
 * LIST_AHEAD, so that a long listing makes one L3 query for several
 * readdir calls (a readdir call takes about a hundred names). Read-ahead
 * rows serve only while nothing was persisted or taken from the feed
 * since they were read (e->gen); the changes not yet persisted are merged
 * at every call, as they were with a fresh page.
 */
#include "eng_int.h"

static void ahead_drop(struct eng_dir *d)
{
	for (int i = 0; i < d->nahead; i++)
		store_row_release(&d->ahead[i]);
	d->nahead = 0;
	d->ahead_more = false;
}

static void dir_release(struct handle_link *h)
{
	struct eng_dir *d = (struct eng_dir *)h;

	ahead_drop(d);
	free(d->ahead);
	d->ahead = NULL;
	d->ahead_cap = 0;
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
	handle_unlink(&d->link);
	d->n->opens--;
	node_try_free(e, d->n);
	pthread_mutex_unlock(&e->lock);
	dir_release(&d->link);
	free(d);
}

static int cmp_node_names(const void *a, const void *b)
{
	return strcmp((*(struct node *const *)a)->name,
		      (*(struct node *const *)b)->name);
}

/* Collects, sorted, the dirty live children of @dir named after @after. */
static int pending_children(struct eng *e, struct node *dir, const char *after,
			    struct node ***out, size_t *nout)
{
	size_t n = 0, cap = 0;
	struct node **arr = NULL;

	for (struct node *d = e->dirty_head; d; d = d->dnext) {
		if (d->deleted || d->parent != dir->ino ||
		    strcmp(d->name, after) <= 0)
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
		qsort(arr, n, sizeof(*arr), cmp_node_names);
	*out = arr;
	*nout = n;
	return 0;
}

/*
 * Consumes one entry: skips it while *skip is non-zero (a seek), else hands
 * it to @fn and, with @plus, takes a lookup reference. Returns 1 when @fn
 * stopped before the entry, 0 when consumed, or a negative errno.
 */
static int consume(struct eng *e, struct eng_dir *d, struct node *n,
		   struct store_row *row, const int64_t *subdirs, bool plus,
		   uint64_t *skip, eng_dir_fn fn, void *arg)
{
	const char *name = n ? n->name : row->name;
	struct eng_attr a;

	if (*skip) {
		(*skip)--;
	} else {
		if (n) {
			node_attr(e, n, &a);
		} else {
			struct node tmp = {.ino = row->ino, .meta = row->meta};

			tmp.subdirs_known = *subdirs >= 0;
			tmp.subdirs = (uint64_t)*subdirs;
			node_attr(e, &tmp, &a);
		}
		if (fn(arg, name, &a, d->pos + 1))
			return 1;
		if (plus) {
			if (!n) {
				n = node_add(e, d->n, row->ino, row->name,
					     &row->meta);
				if (!n)
					return -ENOMEM;
				name = n->name;
				n->subdirs_known = *subdirs >= 0;
				n->subdirs = (uint64_t)*subdirs;
			}
			n->nlookup++;
		}
	}
	d->pos++;
	snprintf(d->cursor, sizeof(d->cursor), "%s", name);
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

/*
 * Points *page at up to LIST_PAGE rows of @d's directory named after
 * @after, in name order: from the rows read ahead while they are still
 * good, else from a new L3 query (which replaces them). *full tells that
 * more rows may follow the page. Returns the rows in the page (0 at the
 * end) or a negative errno. The rows stay the handle's.
 */
static int dir_page(struct eng *e, struct eng_dir *d, const char *after,
		    bool names, struct store_row **page, bool *full)
{
	struct tier_call c;
	int lo, hi, n, want;
	bool grow;

	names = names && e->l3->ops->list_names;
	grow = d->nahead && d->ahead_gen == e->gen;
	if (grow && (names || !d->ahead_names)) {
		lo = 0;
		hi = d->nahead;
		while (lo < hi) { /* the first row named after @after */
			int mid = lo + (hi - lo) / 2;

			if (strcmp(d->ahead[mid].name, after) <= 0)
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
	}
	/* the first query of a listing (or after a change) reads one page;
	 * each next one twice as many rows, up to LIST_AHEAD */
	want = grow ? d->nahead * 2 : LIST_PAGE;
	if (want > LIST_AHEAD)
		want = LIST_AHEAD;
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
		memset(d->ahead, 0, (size_t)want * sizeof(*d->ahead));
		n = tier_enter(e, &c, OP_L3_LIST, d->n, true);
		if (n == 0 && names)
			n = e->l3->ops->list_names(e->l3, d->n->ino, after,
						   d->ahead, want);
		else if (n == 0)
			n = e->l3->ops->list(e->l3, d->n->ino, after, d->ahead,
					     want);
		n = tier_leave(e, &c, n);
		if (n < 0)
			return n;
		if (tier_stale(e, &c)) { /* older than the node table */
			for (int i = 0; i < n; i++)
				store_row_release(&d->ahead[i]);
			n = -1;
		}
	} while (n < 0);
	d->nahead = n;
	d->ahead_more = n == want;
	d->ahead_names = names;
	d->ahead_gen = e->gen;
	*page = d->ahead;
	*full = n > LIST_PAGE || d->ahead_more;
	return n < LIST_PAGE ? n : LIST_PAGE;
}

static int readdir_walk(struct eng *e, struct eng_dir *d, uint64_t off,
			bool plus, bool names, eng_dir_fn fn, void *arg)
{
	char after[STORE_NAME_MAX + 1];
	int64_t subdirs[LIST_PAGE];
	int recounts = 0;
	struct node **pend = NULL;
	size_t npend = 0;
	uint64_t skip = 0;
	int r = 0;

	pthread_mutex_lock(&e->lock);
	if (off != d->pos) {
		/* a seek: start over and skip @off entries */
		d->pos = 0;
		d->cursor[0] = '\0';
		skip = off;
		ahead_drop(d); /* consumed rows gave their meta to nodes */
	}
	/* @after pages through L3; d->cursor is the last entry consumed. A
	 * page whose rows are all overridden consumes nothing but still
	 * moves @after on. */
	snprintf(after, sizeof(after), "%s", d->cursor);
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
		 * pending children; with a full page, only pending names
		 * before its last row (the rest come with the next page) */
		while (r == 0) {
			bool have_row, have_pend;

			while (i < nrows && row_overridden(e, &rows[i]))
				i++;
			have_row = i < nrows;
			have_pend = ip < npend &&
				    (!full || strcmp(pend[ip]->name,
						     rows[nrows - 1].name) < 0);
			if (!have_row && !have_pend)
				break;
			if (have_pend &&
			    (!have_row ||
			     strcmp(pend[ip]->name, rows[i].name) < 0)) {
				r = consume(e, d, pend[ip], NULL, NULL, plus,
					    &skip, fn, arg);
				ip += r == 0;
			} else {
				r = consume(e, d, node_get(e, rows[i].ino),
					    &rows[i], &subdirs[i], plus, &skip,
					    fn, arg);
				i += r == 0;
			}
		}
		if (nrows)
			snprintf(after, sizeof(after), "%s",
				 rows[nrows - 1].name);
		if (r || !full)
			break;
	}
	pthread_mutex_unlock(&e->lock);
	free(pend);
	return r < 0 ? r : 0;
}

int eng_readdir(struct eng *e, struct eng_dir *d, uint64_t off, bool plus,
		eng_dir_fn fn, void *arg)
{
	return readdir_walk(e, d, off, plus, false, fn, arg);
}

int eng_readdir_names(struct eng *e, struct eng_dir *d, uint64_t off,
		      eng_dir_fn fn, void *arg)
{
	return readdir_walk(e, d, off, false, true, fn, arg);
}
