/*
 * store_wrap.h - a store wrapper for the engine tests: installed through
 * eng_config.wrap_l3 around the real L3 store the engine opened, it counts
 * every call the engine makes of each kind and fails the calls a fault plan
 * names.
 *
 *	static struct wrap_state st;   (zeroed: counts only)
 *	st.fault = (struct wrap_fault){.op = W_APPLY, .err = EAGAIN, .k = 1,
 *				       .sticky = true};
 *	cfg.wrap_l3 = store_wrap_l3;
 *	cfg.wrap_arg = &st;
 *
 * The counters and the plan live in the caller's struct wrap_state, not in
 * the wrapper, so one plan spans every store it wraps: an engine closed and
 * opened again keeps counting (the k-th call is the k-th since the state was
 * zeroed). A fault fails call k of its op (one-shot), or call k and every
 * later one (sticky), with -err, until wrap_lift() lifts it. By default the
 * failing call never reaches the store (a refusal, a dropped connection);
 * with @after it does, and then reports the error (a reply lost after the
 * store acted). has_children(), count_subdirs() and longest_id_below()
 * are passed through uncounted (the fault plan does not reach them);
 * fetch() is not offered; the feed's ops are passed through uncounted and
 * unfailed; read_many() is passed through unfailed and counted apart
 * (read_many).
 *
 * refuse_apply, when set, may refuse a batch the plan let through, as a
 * database constraint would (after the fault plan, before the store).
 *
 * scan() also records how the engine's filter builder ended: it stops at the
 * first scan() that returns 0 or an error (scans_ended, scan_last), so a
 * test can wait for it before counting lookups.
 *
 * Thread-safety: the counters are atomic; the plan is set while no engine
 * runs, lifted at any time.
 */
#ifndef TIERFS_TEST_STORE_WRAP_H
#define TIERFS_TEST_STORE_WRAP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "store.h"

/* The kinds of calls, named as in the engine's metrics (tiers.c). */
enum wrap_op {
	W_GET,
	W_LOOKUP,
	W_LIST,
	W_READ,
	W_ALLOC_INO,
	W_APPLY,
	W_STATS,
	W_SCAN,
	W_COUNT
};

static const char *const wrap_op_names[W_COUNT]
	__attribute__((unused)) = {
		"get",	     "lookup", "list",	"read",
		"alloc_ino", "apply",  "stats", "scan",
};

struct wrap_fault {
	int op;	    /* enum wrap_op */
	int err;    /* positive errno to fail with; 0: no fault */
	uint64_t k; /* the first call that fails, from 1 */
	bool sticky; /* call k and all later ones fail until lifted */
	bool after;  /* the call reaches the store, then reports -err */
};

struct wrap_state {
	struct wrap_fault fault;
	/* Optional: an errno (> 0) to refuse a batch with, as a database
	 * constraint would, or 0 to apply it (asked after the fault plan). */
	int (*refuse_apply)(struct change *const *changes, size_t n);
	atomic_bool lifted;
	atomic_ullong calls[W_COUNT];
	atomic_ullong injected;	   /* calls failed by the plan */
	atomic_ullong scans_ended; /* scan() calls that returned <= 0 */
	atomic_ullong read_many;   /* read_many() calls (never failed) */
	atomic_int scan_last;	   /* what the last of those returned */
};

struct store_wrap {
	struct store s; /* first */
	struct store *inner;
	struct wrap_state *st;
};

static inline struct store_wrap *store_wrap_of(struct store *s)
{
	return (struct store_wrap *)s;
}

/* Lifts the fault: every later call reaches the store and its answer is
 * returned. */
static inline void wrap_lift(struct wrap_state *st)
{
	atomic_store(&st->lifted, true);
}

/* Counts a call of @op; returns the errno the plan fails it with (< 0), or
 * 0. */
static inline int wrap_fault_hit(struct wrap_state *st, int op)
{
	uint64_t n = atomic_fetch_add(&st->calls[op], 1) + 1;
	const struct wrap_fault *f = &st->fault;

	if (!f->err || f->op != op || atomic_load(&st->lifted))
		return 0;
	if (n == f->k || (f->sticky && n > f->k)) {
		atomic_fetch_add(&st->injected, 1);
		return -f->err;
	}
	return 0;
}

static void store_wrap_free(struct store *s)
{
	store_free(store_wrap_of(s)->inner);
	free(s);
}

static int store_wrap_get(struct store *s, uint64_t ino, struct store_row *out)
{
	struct store_wrap *w = store_wrap_of(s);
	int f = wrap_fault_hit(w->st, W_GET), r;

	if (f && !w->st->fault.after)
		return f;
	r = w->inner->ops->get(w->inner, ino, out);
	if (f && r == 0)
		store_row_release(out);
	return f ? f : r;
}

static int store_wrap_lookup(struct store *s, uint64_t parent,
			     const char *name, struct store_row *out)
{
	struct store_wrap *w = store_wrap_of(s);
	int f = wrap_fault_hit(w->st, W_LOOKUP), r;

	if (f && !w->st->fault.after)
		return f;
	r = w->inner->ops->lookup(w->inner, parent, name, out);
	if (f && r == 0)
		store_row_release(out);
	return f ? f : r;
}

static int store_wrap_list(struct store *s, uint64_t parent, const char *after,
			   struct store_row *rows, size_t limit)
{
	struct store_wrap *w = store_wrap_of(s);
	int f = wrap_fault_hit(w->st, W_LIST), r;

	if (f && !w->st->fault.after)
		return f;
	r = w->inner->ops->list(w->inner, parent, after, rows, limit);
	for (int i = 0; f && i < r; i++)
		store_row_release(&rows[i]);
	return f ? f : r;
}

/* counted and failed as "list": both are listings */
static int store_wrap_list_by_ino(struct store *s, uint64_t parent,
				  uint64_t after, bool names,
				  struct store_row *rows, size_t limit)
{
	struct store_wrap *w = store_wrap_of(s);
	int f = wrap_fault_hit(w->st, W_LIST), r;

	if (f && !w->st->fault.after)
		return f;
	r = w->inner->ops->list_by_ino(w->inner, parent, after, names, rows,
				       limit);
	for (int i = 0; f && i < r; i++)
		store_row_release(&rows[i]);
	return f ? f : r;
}

static int store_wrap_read(struct store *s, uint64_t ino, void **data,
			   size_t *len)
{
	struct store_wrap *w = store_wrap_of(s);
	int f = wrap_fault_hit(w->st, W_READ), r;

	if (f && !w->st->fault.after)
		return f;
	r = w->inner->ops->read(w->inner, ino, data, len);
	if (f && r == 0) {
		free(*data);
		*data = NULL;
	}
	return f ? f : r;
}

static int store_wrap_read_many(struct store *s, const uint64_t *inos,
				size_t n, struct store_blob *out)
{
	struct store_wrap *w = store_wrap_of(s);

	atomic_fetch_add(&w->st->read_many, 1);
	return w->inner->ops->read_many(w->inner, inos, n, out);
}

static int store_wrap_has_children(struct store *s, uint64_t parent)
{
	struct store_wrap *w = store_wrap_of(s);

	return w->inner->ops->has_children(w->inner, parent);
}

static int store_wrap_count_subdirs(struct store *s, uint64_t parent,
				    const uint64_t *except, size_t nexcept,
				    uint64_t *count)
{
	struct store_wrap *w = store_wrap_of(s);

	return w->inner->ops->count_subdirs(w->inner, parent, except, nexcept,
					    count);
}

static int store_wrap_longest_id_below(struct store *s, uint64_t dir,
				       const uint64_t *except, size_t nexcept,
				       uint64_t *len)
{
	struct store_wrap *w = store_wrap_of(s);

	return w->inner->ops->longest_id_below(w->inner, dir, except, nexcept,
					       len);
}

static int store_wrap_alloc_ino(struct store *s, uint64_t count,
				uint64_t *first)
{
	struct store_wrap *w = store_wrap_of(s);
	int f = wrap_fault_hit(w->st, W_ALLOC_INO), r;
	uint64_t got;

	if (f && !w->st->fault.after)
		return f;
	r = w->inner->ops->alloc_ino(w->inner, count, f ? &got : first);
	return f ? f : r;
}

static int store_wrap_apply(struct store *s, struct change *const *changes,
			    size_t n, struct store_dirhash **tree,
			    size_t *ntree)
{
	struct store_wrap *w = store_wrap_of(s);
	int f = wrap_fault_hit(w->st, W_APPLY), r;

	if (f && !w->st->fault.after) {
		store_tree_none(tree, ntree);
		return f;
	}
	if (!f && w->st->refuse_apply &&
	    (r = w->st->refuse_apply(changes, n)) != 0) {
		store_tree_none(tree, ntree);
		return -r;
	}
	w->inner->strict = s->strict;
	r = w->inner->ops->apply(w->inner, changes, n, tree, ntree);
	if (f) {
		if (r == 0 && tree)
			free(*tree);
		store_tree_none(tree, ntree);
		return f;
	}
	return r;
}

static int store_wrap_stats(struct store *s, uint64_t *entries,
			    uint64_t *bytes)
{
	struct store_wrap *w = store_wrap_of(s);
	int f = wrap_fault_hit(w->st, W_STATS), r;
	uint64_t e, b;

	if (f && !w->st->fault.after)
		return f;
	r = w->inner->ops->stats(w->inner, f ? &e : entries, f ? &b : bytes);
	return f ? f : r;
}

static int store_wrap_scan(struct store *s, uint64_t after,
			   struct store_key *keys, size_t limit)
{
	struct store_wrap *w = store_wrap_of(s);
	int f = wrap_fault_hit(w->st, W_SCAN), r;

	if (f && !w->st->fault.after)
		r = f;
	else {
		r = w->inner->ops->scan(w->inner, after, keys, limit);
		if (f)
			r = f;
	}
	if (r <= 0) {
		atomic_store(&w->st->scan_last, r);
		atomic_fetch_add(&w->st->scans_ended, 1);
	}
	return r;
}

static int store_wrap_feed_read(struct store *s, uint64_t after,
				struct store_feed *recs, size_t limit)
{
	struct store_wrap *w = store_wrap_of(s);

	return w->inner->ops->feed_read(w->inner, after, recs, limit);
}

static int store_wrap_feed_head(struct store *s, uint64_t *seq)
{
	struct store_wrap *w = store_wrap_of(s);

	return w->inner->ops->feed_head(w->inner, seq);
}

static int store_wrap_feed_wait(struct store *s, uint64_t after,
				int timeout_ms)
{
	struct store_wrap *w = store_wrap_of(s);

	return w->inner->ops->feed_wait(w->inner, after, timeout_ms);
}

static const struct store_ops store_wrap_ops = {
	.name = "wrapped",
	.free = store_wrap_free,
	.get = store_wrap_get,
	.lookup = store_wrap_lookup,
	.list = store_wrap_list,
	.list_by_ino = store_wrap_list_by_ino,
	.read = store_wrap_read,
	.read_many = store_wrap_read_many,
	.has_children = store_wrap_has_children,
	.count_subdirs = store_wrap_count_subdirs,
	.longest_id_below = store_wrap_longest_id_below,
	.alloc_ino = store_wrap_alloc_ino,
	.apply = store_wrap_apply,
	.stats = store_wrap_stats,
	.scan = store_wrap_scan,
	.feed_read = store_wrap_feed_read,
	.feed_head = store_wrap_feed_head,
	.feed_wait = store_wrap_feed_wait,
};


/* eng_config.wrap_l3: wraps @l3 with the plan and counters of @arg (a
 * struct wrap_state). */
static struct store *store_wrap_l3(struct store *l3, void *arg)
	__attribute__((unused));
static struct store *store_wrap_l3(struct store *l3, void *arg)
{
	struct store_wrap *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	store_base_init(&w->s);
	w->s.ops = &store_wrap_ops;
	w->s.log = l3->log;
	w->s.origin = l3->origin;
	w->s.feed_keep_seconds = l3->feed_keep_seconds;
	w->s.feed_keep_records = l3->feed_keep_records;
	w->inner = l3;
	w->st = arg;
	return &w->s;
}

#endif
