/*
 * l3_pg_race.c - the namespace races of apply(): what a batch does when a
 * name it writes is held by an entry that another writer made, decided at
 * commit inside the batch's transaction (see "Sharing" in store.h).
 *
 * Before any row is written, lpg_plan_races() asks two questions of the
 * transaction's snapshot, with the inos of the batch's changes left out as
 * "the batch's own" (their rows are removed before the new ones go in):
 *
 *   S_BUSY_DIRS  which entries the batch deletes still have a child that
 *                the batch neither moves nor deletes: such a deletion is
 *                dropped (the directory stays, with what another writer
 *                put in it);
 *   S_HOLDERS    which entries, not the batch's own, hold the (parent,
 *                name) or (parent, stem) of a change that writes a row:
 *                one that is a directory with a child not the batch's own
 *                makes the change dropped; any other (a file, an empty
 *                directory) is replaced: deleted with its content, and the
 *                change's version becomes at least its version + 1
 *                (the statement returns every holder and the batch's own
 *                are left out here; whether a holder directory keeps a
 *                child is S_BUSY_DIRS's question, asked only when one is
 *                found);
 *   S_CYCLES     which changes move a directory below itself: the walk up
 *                from its new parent follows each entry's parent after the
 *                batch (a kept change's, else the stored row's). Asked
 *                once a round drops nothing else, of the batches that put
 *                a directory (nearly all: a create touches its parent); the
 *                first such move in batch order is dropped.
 *
 * A dropped change keeps its row where it was, so the row may now hold a
 * name another change writes, or close a cycle with another move: while a
 * round drops something, the rounds run again with fewer inos left out (at most one round more than there
 * are changes; nearly always one). A dropped change is still recorded in
 * the feed, so that a reader fetches the entry as it really stands.
 *
 * Two changes of one batch that write one name are not a race but a
 * mistake, refused with -EEXIST before anything is sent
 * (lpg_check_names()), as a unique index would refuse them. So a unique
 * violation on a name or a stem during apply() can only come from a
 * writer that committed after the snapshot was taken: l3_pg_conn.c calls
 * it a conflict, and the batch runs again on a fresh snapshot, where this
 * module sees the other writer's row (l3_pg_apply.c).
 *
 * What a run decides is logged (WARN) and counted in store.races, one for
 * each change dropped and one for each entry replaced (a directory "a"
 * and a JSON "a.json" both replace another writer's file "a": one race),
 * only once its transaction commits (lpg_plan_report()): a run that is
 * rolled back and run again decides anew.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "l3_pg_int.h"

/* ---- names written twice in one batch ---- */

struct lpg_key {
	uint64_t parent;
	const char *p;
	size_t len;
};

static int lpg_cmp_key(const void *a, const void *b)
{
	const struct lpg_key *x = a, *y = b;

	if (x->parent != y->parent)
		return x->parent < y->parent ? -1 : 1;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return memcmp(x->p, y->p, x->len);
}

/* Whether two keys of @k (@n of them) are equal. */
static bool lpg_keys_repeat(struct lpg_key *k, size_t n)
{
	if (n > 1)
		qsort(k, n, sizeof(*k), lpg_cmp_key);
	for (size_t i = 1; i < n; i++)
		if (lpg_cmp_key(&k[i - 1], &k[i]) == 0)
			return true;
	return false;
}

int lpg_check_names(const struct lpg *q, struct change *const *changes,
		    size_t n)
{
	struct lpg_key *names = malloc(2 * n * sizeof(*names));
	struct lpg_key *stems = names + n;
	size_t nn = 0, ns = 0;
	int err = 0;

	if (!names)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const struct change *ch = changes[i];
		size_t len;

		if (ch->deleted)
			continue;
		len = strlen(ch->name);
		names[nn++] = (struct lpg_key){ch->parent, ch->name, len};
		if (ch->meta.kind != ITEM_DIR)
			stems[ns++] = (struct lpg_key){
				ch->parent, ch->name,
				store_stem_len(ch->name, len, ch->meta.kind)};
	}
	if (lpg_keys_repeat(names, nn) || lpg_keys_repeat(stems, ns)) {
		eng_logf(&q->base.log, LOG_DEBUG,
			 "postgres '%s': cannot apply a batch: two of its "
			 "changes write one name",
			 q->target);
		err = -EEXIST;
	}
	free(names);
	return err;
}

/* ---- the plan ---- */

int lpg_plan_init(struct lpg_plan *p, size_t n)
{
	memset(p, 0, sizeof(*p));
	p->dropped = calloc(n ? n : 1, sizeof(*p->dropped));
	p->cycle = calloc(n ? n : 1, sizeof(*p->cycle));
	p->floor = calloc(n ? n : 1, sizeof(*p->floor));
	if (p->dropped && p->cycle && p->floor)
		return 0;
	lpg_plan_release(p);
	return -ENOMEM;
}

void lpg_plan_release(struct lpg_plan *p)
{
	free(p->dropped);
	free(p->cycle);
	free(p->floor);
	free(p->pairs);
	lpg_inos_release(&p->replaced);
	memset(p, 0, sizeof(*p));
}

/* Finishes @a as the inos of the changes not dropped (the batch's own). */
static int lpg_own_inos(struct change *const *changes, size_t n,
			const struct lpg_plan *p, struct lpg_arr *a,
			const char **value, int *length)
{
	lpg_arr_start(a, LPG_INT8OID);
	for (size_t i = 0; i < n; i++)
		if (!p->dropped[i])
			lpg_arr_i64(a, (int64_t)changes[i]->ino);
	return lpg_arr_finish(a, value, length);
}

static bool lpg_has(const uint64_t *v, size_t n, uint64_t ino)
{
	return n && bsearch(&ino, v, n, sizeof(*v), lpg_cmp_u64);
}

/* Which of the directories @cand are busy: they have a child that is not
 * among the batch's own (S_BUSY_DIRS, asked LPG_CHUNK_ROWS at a time);
 * into @busy, sorted. @a holds two arrays. */
static int lpg_busy(const struct lpg *q, struct lpg_conn *c,
		    struct change *const *changes, size_t n,
		    const struct lpg_plan *p, const struct lpg_inos *cand,
		    struct lpg_arr *a, struct lpg_inos *busy)
{
	const char *values[2];
	int lengths[2];
	size_t i = 0;
	int err = 0;

	if (!cand->n)
		return 0;
	err = lpg_own_inos(changes, n, p, &a[1], &values[1], &lengths[1]);
	while (i < cand->n && !err) {
		PGresult *res = NULL;

		lpg_arr_start(&a[0], LPG_INT8OID);
		for (; i < cand->n && a[0].n < LPG_CHUNK_ROWS; i++)
			lpg_arr_i64(&a[0], (int64_t)cand->v[i]);
		err = lpg_arr_finish(&a[0], &values[0], &lengths[0]);
		if (!err)
			err = lpg_exec(q, c, S_BUSY_DIRS, values, lengths, &res,
				       "look for entries in directories");
		for (int r = 0; !err && r < PQntuples(res); r++) {
			const char *pi;

			if (!lpg_field(res, r, 0, 8, &pi))
				err = store_corrupt(&q->sb, 0,
						    "bad directory answer");
			else
				lpg_inos_add(busy, (uint64_t)lpg_get64(pi));
		}
		PQclear(res);
	}
	return err ? err : lpg_inos_finish(busy);
}

/* Drops the deletions of directories that keep a child (lpg_busy());
 * *more is set when one was dropped. @a holds two arrays. */
static int lpg_busy_dirs(const struct lpg *q, struct lpg_conn *c,
			 struct change *const *changes, size_t n,
			 struct lpg_arr *a, struct lpg_plan *p, bool *more)
{
	struct lpg_inos cand = {0}, busy = {0};
	int err;

	for (size_t k = 0; k < n; k++)
		if (changes[k]->deleted && !p->dropped[k])
			lpg_inos_add(&cand, changes[k]->ino);
	err = lpg_inos_finish(&cand);
	if (!err)
		err = lpg_busy(q, c, changes, n, p, &cand, a, &busy);
	for (size_t k = 0; k < n && !err; k++) {
		if (changes[k]->deleted && !p->dropped[k] &&
		    lpg_has(busy.v, busy.n, changes[k]->ino)) {
			p->dropped[k] = true;
			p->ndropped++;
			*more = true;
		}
	}
	lpg_inos_release(&busy);
	lpg_inos_release(&cand);
	return err;
}

/* An entry S_HOLDERS found holding the name or stem of change @k. */
struct lpg_holder {
	size_t k;
	uint64_t ino, version;
	bool dir;
};

/* Takes holder @h, which is not the batch's own: the change is dropped
 * when it is a directory that keeps a child (@busy), else it replaces it. */
static int lpg_holder(const struct lpg_holder *h, bool busy,
		      struct lpg_plan *p, bool *more)
{
	if (busy) {
		if (!p->dropped[h->k]) {
			p->dropped[h->k] = true;
			p->ndropped++;
			*more = true;
		}
		return 0;
	}
	if (h->version + 1 > p->floor[h->k])
		p->floor[h->k] = h->version + 1;
	lpg_inos_add(&p->replaced, h->ino);
	if (p->npairs == p->cap && !p->oom) {
		size_t cap = p->cap ? p->cap * 2 : 16;
		struct lpg_pair *v = realloc(p->pairs, cap * sizeof(*v));

		if (v) {
			p->pairs = v;
			p->cap = cap;
		} else {
			p->oom = true;
		}
	}
	if (p->oom)
		return -ENOMEM;
	p->pairs[p->npairs++] = (struct lpg_pair){h->ino, h->k};
	return 0;
}

/* Finds the entries that hold the names of the changes not dropped
 * (S_HOLDERS), leaves out the batch's own, and replaces the others or
 * drops the change (lpg_holder()); *more is set when one was dropped. @a
 * holds three arrays. */
static int lpg_holders(const struct lpg *q, struct lpg_conn *c,
		       struct change *const *changes, size_t n,
		       struct lpg_arr *a, struct lpg_plan *p, bool *more)
{
	size_t *pos = malloc((n < LPG_CHUNK_ROWS ? n : LPG_CHUNK_ROWS) *
			     sizeof(*pos));
	uint64_t *own = malloc((n ? n : 1) * sizeof(*own));
	struct lpg_holder *held = NULL;
	struct lpg_inos busy = {0}, dirs = {0};
	size_t i = 0, nown = 0, nheld = 0, cap = 0;
	int err = 0;

	if (!pos || !own) {
		err = -ENOMEM;
		goto out;
	}
	for (size_t k = 0; k < n; k++)
		if (!p->dropped[k])
			own[nown++] = changes[k]->ino;
	qsort(own, nown, sizeof(*own), lpg_cmp_u64);
	while (i < n && !err) {
		const char *values[3];
		int lengths[3];
		PGresult *res = NULL;
		uint32_t m;

		lpg_arr_start(&a[0], LPG_INT8OID);
		lpg_arr_start(&a[1], LPG_BYTEAOID);
		lpg_arr_start(&a[2], LPG_BYTEAOID);
		for (; i < n && a[0].n < LPG_CHUNK_ROWS; i++) {
			const struct change *ch = changes[i];
			struct store_cols r;

			if (ch->deleted || p->dropped[i])
				continue;
			r = store_cols_of(ch->ino, ch->parent, ch->name,
					  &ch->meta);
			pos[a[0].n] = i;
			lpg_arr_i64(&a[0], (int64_t)r.parent);
			lpg_arr_bytes(&a[1], r.name, r.name_len);
			lpg_arr_opt(&a[2], r.stem, r.stem_len);
		}
		m = a[0].n;
		if (m == 0)
			break;
		for (int k = 0; k < 3 && !err; k++)
			err = lpg_arr_finish(&a[k], &values[k], &lengths[k]);
		if (!err)
			err = lpg_exec(q, c, S_HOLDERS, values, lengths, &res,
				       "look for the holders of names");
		for (int r = 0; !err && r < PQntuples(res); r++) {
			const char *pi, *pino, *pkind, *pver;
			int64_t at;
			uint64_t ino;

			if (!lpg_field(res, r, 0, 8, &pi) ||
			    (at = lpg_get64(pi)) < 1 || at > (int64_t)m ||
			    !lpg_field(res, r, 1, 8, &pino) ||
			    !lpg_field(res, r, 2, 2, &pkind) ||
			    !lpg_field(res, r, 3, 8, &pver)) {
				err = store_corrupt(&q->sb, 0,
						    "bad name holder");
				break;
			}
			ino = (uint64_t)lpg_get64(pino);
			if (lpg_has(own, nown, ino))
				continue; /* the batch's own */
			if (nheld == cap) {
				struct lpg_holder *v;

				cap = cap ? cap * 2 : 16;
				v = realloc(held, cap * sizeof(*v));
				if (!v) {
					err = -ENOMEM;
					break;
				}
				held = v;
			}
			held[nheld] = (struct lpg_holder){
				.k = pos[at - 1],
				.ino = ino,
				.version = (uint64_t)lpg_get64(pver),
				.dir = lpg_get16(pkind) == ITEM_DIR};
			nheld++;
		}
		PQclear(res);
	}
	for (size_t h = 0; h < nheld; h++)
		if (held[h].dir)
			lpg_inos_add(&dirs, held[h].ino);
	if (!err)
		err = lpg_inos_finish(&dirs);
	if (!err)
		err = lpg_busy(q, c, changes, n, p, &dirs, a, &busy);
	for (size_t h = 0; h < nheld && !err; h++)
		err = lpg_holder(&held[h],
				 held[h].dir &&
					 lpg_has(busy.v, busy.n, held[h].ino),
				 p, more);
out:
	lpg_inos_release(&busy);
	lpg_inos_release(&dirs);
	free(held);
	free(own);
	free(pos);
	return err;
}

/* Drops the first move, in batch order, of a directory below itself
 * (S_CYCLES), and sets *more; the next round looks again with that move
 * dropped, so of two moves that close one cycle only the first is. @a
 * holds two arrays. */
static int lpg_cycles(const struct lpg *q, struct lpg_conn *c,
		      struct change *const *changes, size_t n,
		      struct lpg_arr *a, struct lpg_plan *p, bool *more)
{
	const char *values[3];
	int lengths[3];
	char b_max[8];
	size_t *pos, m = 0;
	bool moves = false;
	PGresult *res = NULL;
	const char *pi;
	int64_t at;
	int err;

	/* a move has a kept put of a directory that is not the root */
	for (size_t i = 0; i < n && !moves; i++)
		moves = !p->dropped[i] && !changes[i]->deleted &&
			changes[i]->meta.kind == ITEM_DIR &&
			changes[i]->parent != 0;
	if (!moves)
		return 0;
	pos = malloc(n * sizeof(*pos));
	if (!pos)
		return -ENOMEM;
	lpg_arr_start(&a[0], LPG_INT8OID);
	lpg_arr_start(&a[1], LPG_INT8OID);
	for (size_t i = 0; i < n; i++) {
		const struct change *ch = changes[i];

		if (p->dropped[i] ||
		    (!ch->deleted && ch->meta.kind != ITEM_DIR))
			continue;
		pos[m++] = i;
		lpg_arr_i64(&a[0], (int64_t)ch->ino);
		lpg_arr_i64(&a[1], ch->deleted ? 0 : (int64_t)ch->parent);
	}
	err = lpg_arr_finish(&a[0], &values[0], &lengths[0]);
	if (!err)
		err = lpg_arr_finish(&a[1], &values[1], &lengths[1]);
	lpg_put64(b_max, LPG_MAX_DEPTH);
	values[2] = b_max;
	lengths[2] = 8;
	if (!err)
		err = lpg_exec(q, c, S_CYCLES, values, lengths, &res,
			       "look for moves that close a cycle");
	if (!err && PQntuples(res) > 0) {
		if (!lpg_field(res, 0, 0, 8, &pi) || (at = lpg_get64(pi)) < 1 ||
		    at > (int64_t)m) {
			err = store_corrupt(&q->sb, 0, "bad cycle answer");
		} else {
			p->dropped[pos[at - 1]] = true;
			p->cycle[pos[at - 1]] = true;
			p->ndropped++;
			*more = true;
		}
	}
	PQclear(res);
	free(pos);
	return err;
}

int lpg_plan_races(const struct lpg *q, struct lpg_conn *c,
		   struct change *const *changes, size_t n, struct lpg_arr *a,
		   struct lpg_plan *p)
{
	bool more = true;
	int err = 0;

	memset(p->dropped, 0, n * sizeof(*p->dropped));
	memset(p->cycle, 0, n * sizeof(*p->cycle));
	p->ndropped = 0;
	/* each round but the last drops a change: at most n + 1 rounds */
	while (more && !err) {
		more = false;
		memset(p->floor, 0, n * sizeof(*p->floor));
		p->npairs = 0;
		p->replaced.n = 0;
		err = lpg_busy_dirs(q, c, changes, n, a, p, &more);
		if (!err)
			err = lpg_holders(q, c, changes, n, a, p, &more);
		if (!err && !more)
			err = lpg_cycles(q, c, changes, n, a, p, &more);
	}
	if (!err)
		err = lpg_inos_finish(&p->replaced);
	return err;
}

static int lpg_cmp_pair(const void *a, const void *b)
{
	const struct lpg_pair *x = a, *y = b;

	if (x->holder != y->holder)
		return x->holder < y->holder ? -1 : 1;
	return x->change < y->change ? -1 : x->change > y->change;
}

void lpg_plan_report(struct lpg *q, struct change *const *changes, size_t n,
		     struct lpg_plan *p)
{
	for (size_t i = 0; i < n; i++)
		if (p->dropped[i])
			store_race(&q->base, q->target,
				   changes[i]->deleted ? STORE_RACE_RMDIR
				   : p->cycle[i]       ? STORE_RACE_CYCLE
						       : STORE_RACE_NAME_HELD,
				   changes[i], 0);
	/* one race per entry replaced, however many changes replace it (by
	 * name and by stem) */
	if (p->npairs > 1)
		qsort(p->pairs, p->npairs, sizeof(*p->pairs), lpg_cmp_pair);
	for (size_t i = 0; i < p->npairs; i++) {
		if (i && p->pairs[i].holder == p->pairs[i - 1].holder)
			continue;
		store_race(&q->base, q->target, STORE_RACE_REPLACED,
			   changes[p->pairs[i].change], p->pairs[i].holder);
	}
}
