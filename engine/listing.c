/*
 * listing.c - directory handles and readdir: the L3 index paged by name,
 * merged with the changes not yet persisted.
 */
#include "eng_int.h"

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

int eng_readdir(struct eng *e, struct eng_dir *d, uint64_t off, bool plus,
		eng_dir_fn fn, void *arg)
{
	char after[STORE_NAME_MAX + 1];
	int64_t subdirs[LIST_PAGE];
	struct store_row *rows;
	int recounts = 0;
	struct node **pend = NULL;
	size_t npend = 0;
	struct tier_call c;
	uint64_t skip = 0;
	int r = 0;

	rows = calloc(LIST_PAGE, sizeof(*rows));
	if (!rows)
		return -ENOMEM;
	pthread_mutex_lock(&e->lock);
	if (off != d->pos) {
		/* a seek: start over and skip @off entries */
		d->pos = 0;
		d->cursor[0] = '\0';
		skip = off;
	}
	/* @after pages through L3; d->cursor is the last entry consumed. A
	 * page whose rows are all overridden consumes nothing but still
	 * moves @after on. */
	snprintf(after, sizeof(after), "%s", d->cursor);
	for (;;) {
		int nrows, i = 0;
		size_t ip = 0;
		bool full;

		nrows = tier_enter(e, &c, OP_L3_LIST, d->n, true);
		if (nrows == 0)
			nrows = e->l3->ops->list(e->l3, d->n->ino, after, rows,
						 LIST_PAGE);
		nrows = tier_leave(e, &c, nrows);
		if (nrows < 0) {
			r = nrows;
			break;
		}
		for (i = 0; i < nrows; i++)
			subdirs[i] = -1;
		if (tier_stale(e, &c) ||
		    (plus && recounts < COUNT_PAGE_TRIES &&
		     count_page(e, d, rows, nrows, subdirs) && ++recounts)) {
			for (i = 0; i < nrows; i++)
				store_row_release(&rows[i]);
			continue;
		}
		i = 0;
		full = nrows == LIST_PAGE;
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
		for (i = 0; i < nrows; i++)
			store_row_release(&rows[i]);
		if (r || !full)
			break;
	}
	pthread_mutex_unlock(&e->lock);
	free(pend);
	free(rows);
	return r < 0 ? r : 0;
}
