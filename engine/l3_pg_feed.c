/*
 * l3_pg_feed.c - the change feed of the PostgreSQL store (see "Sharing" in
 * store.h): the records apply() writes, their trimming, and the ops that
 * read them (feed_read, feed_head) and wait for them (feed_wait).
 *
 * Tables (l3_pg_schema.c): feed (seq, origin, ino, at), one row per
 * record, and feed_head, one row: seq, the highest sequence number handed
 * out, and trimmed, the highest one trimmed. The records held are always
 * exactly those above trimmed and up to seq: trimming cuts a prefix.
 *
 * Commit order. In its transaction, after the rows are written, apply()
 * takes its sequence numbers with
 *     UPDATE feed_head SET seq = seq + n ... RETURNING seq      (S_FEED_ADD)
 * and inserts its records with them. The row lock that UPDATE takes is
 * held until the transaction ends, so a second batch's UPDATE waits until
 * the first has committed (or rolled back) and then reads the committed
 * counter: sequence numbers are handed out in the order the batches
 * commit, and PostgreSQL makes a transaction visible before it releases
 * its locks, so when a record is visible every record below it is too. A
 * SEQUENCE would not do: nextval() is not transactional, a batch that took
 * a number may commit after one that took a higher number, and a reader
 * that had read up to the higher one would never see the lower one. The
 * cost is none beyond what apply() pays already: every batch updates the
 * root directory's row (its Merkle hash), so batches commit one at a time
 * anyway (l3_pg_apply.c); the feed's lock is taken last, just before
 * COMMIT, and held only for that. Under REPEATABLE READ the waiting batch
 * then fails with 40001 and runs again, as it would at the root's row.
 * apply() also runs NOTIFY tierfs_feed in the transaction; PostgreSQL
 * delivers it at commit, to listeners only.
 *
 * Trimming. A batch trims (S_FEED_TRIM, in its transaction, under the same
 * row lock) when the feed holds more than feed_keep_records plus a
 * sixteenth (so that a full feed is not trimmed at every batch), or when
 * this store last trimmed more than a quarter of feed_keep_seconds ago
 * (or never). It deletes the records older than feed_keep_seconds (by
 * clock_timestamp() at insertion) and those beyond the newest
 * feed_keep_records, as one prefix, and raises feed_head.trimmed.
 * feed_read() compares its @after with trimmed in the same statement
 * (one snapshot) as it reads the records: -ESTALE when after < trimmed.
 *
 * Reading. feed_read() joins the records with entries: each record comes
 * with its entry's current row, or gone when there is none; a row that
 * breaks the contract is logged and counted as corrupt, and reported gone.
 *
 * Waiting. feed_wait() has a connection of its own, outside the pool (a
 * LISTEN belongs to its session, and a pooled connection is lent to any
 * thread): opened at the first call, LISTEN tierfs_feed, then kept. Each
 * call drops the notifications already queued, reads feed_head on it (1 at
 * once when it is above @after: the LISTEN was in place before that read,
 * so nothing committed after it can be missed), then waits with poll() on
 * its socket until a notification comes (1) or the time is up (0). A lost
 * connection is closed and -EAGAIN returned; the next call opens a new
 * one, listens again and reads feed_head, which covers whatever was
 * committed meanwhile.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "l3_pg_int.h"

static int64_t lpg_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- in apply() ---- */

/* Whether a batch that leaves the feed at @head, trimmed up to @trimmed,
 * should trim it (see the top of this file). */
static bool lpg_trim_due(const struct lpg *q, uint64_t head, uint64_t trimmed)
{
	uint64_t keep = q->base.feed_keep_records;
	int64_t last = atomic_load(&((struct lpg *)q)->trimmed_ms);

	if (head - trimmed > keep + keep / 16)
		return true;
	return last == 0 ||
	       lpg_now_ms() - last >= (int64_t)q->base.feed_keep_seconds * 250;
}

static int lpg_feed_trim(const struct lpg *q, struct lpg_conn *c)
{
	char b_secs[8], b_keep[8];
	const char *values[2] = {b_secs, b_keep};
	const int lengths[2] = {8, 8};
	uint64_t keep = q->base.feed_keep_records;

	lpg_put64(b_secs, (int64_t)q->base.feed_keep_seconds);
	lpg_put64(b_keep, keep > INT64_MAX ? INT64_MAX : (int64_t)keep);
	return lpg_exec(q, c, S_FEED_TRIM, values, lengths, NULL,
			"trim the feed");
}

int lpg_feed_add(const struct lpg *q, struct lpg_conn *c, const uint64_t *inos,
		 size_t n, struct lpg_arr *a, bool *trimmed)
{
	char b_origin[8];
	const char *values[2] = {NULL, b_origin};
	int lengths[2] = {0, 8};
	uint64_t head = 0, cut = 0;
	size_t i = 0;
	int err;

	*trimmed = false;
	lpg_put64(b_origin, (int64_t)q->base.origin);
	while (i < n) {
		PGresult *res;
		const char *ph, *pt;

		lpg_arr_start(a, LPG_INT8OID);
		for (; i < n && a->n < LPG_CHUNK_ROWS; i++)
			lpg_arr_i64(a, (int64_t)inos[i]);
		err = lpg_arr_finish(a, &values[0], &lengths[0]);
		if (!err)
			err = lpg_exec(q, c, S_FEED_ADD, values, lengths, &res,
				       "record changes in the feed");
		if (err)
			return err;
		if (PQntuples(res) != 1 || !lpg_field(res, 0, 0, 8, &ph) ||
		    !lpg_field(res, 0, 1, 8, &pt)) {
			PQclear(res);
			return store_corrupt(&q->sb, 0, "bad feed head");
		}
		head = (uint64_t)lpg_get64(ph);
		cut = (uint64_t)lpg_get64(pt);
		PQclear(res);
	}
	if (!lpg_trim_due(q, head, cut))
		return 0;
	err = lpg_feed_trim(q, c);
	if (!err)
		*trimmed = true;
	return err;
}

void lpg_feed_trimmed(struct lpg *q)
{
	int64_t now = lpg_now_ms();

	atomic_store(&q->trimmed_ms, now ? now : 1);
}

/* ---- reading ---- */

/* The columns S_FEED_READ adds after those of the row. */
enum {
	F_TRIMMED = STORE_COL_N,
	F_SEQ,
	F_ORIGIN,
	F_INO,
	F_N,
};

/* Fills @rec from row @r of S_FEED_READ's @res. */
static int lpg_feed_rec(const struct lpg *q, const PGresult *res, int r,
			struct store_feed *rec)
{
	const char *ps, *po, *pi;
	int err;

	if (!lpg_field(res, r, F_SEQ, 8, &ps) ||
	    !lpg_field(res, r, F_ORIGIN, 8, &po) ||
	    !lpg_field(res, r, F_INO, 8, &pi))
		return store_corrupt(&q->sb, 0, "bad feed record");
	memset(rec, 0, sizeof(*rec));
	rec->seq = (uint64_t)lpg_get64(ps);
	rec->origin = (uint64_t)lpg_get64(po);
	rec->ino = (uint64_t)lpg_get64(pi);
	rec->gone = true;
	if (PQgetisnull(res, r, STORE_COL_INO))
		return 0;
	err = lpg_row_decode(q, res, r, &rec->row);
	if (err == 0)
		rec->gone = false;
	else if (err == -EUCLEAN) /* logged and counted: reported gone */
		memset(&rec->row, 0, sizeof(rec->row));
	else
		return err;
	return 0;
}

int lpg_feed_read(struct store *s, uint64_t after, struct store_feed *recs,
		  size_t limit)
{
	struct lpg *q = lpg_of(s);
	char b_after[8], b_limit[8];
	const char *values[2] = {b_after, b_limit};
	const int lengths[2] = {8, 8};
	PGresult *res;
	const char *pt;
	size_t n = 0;
	int rows, err;

	if (after > INT64_MAX)
		return 0;
	if (limit > INT_MAX)
		limit = INT_MAX;
	lpg_put64(b_after, (int64_t)after);
	lpg_put64(b_limit, (int64_t)limit);
	err = lpg_query(q, S_FEED_READ, values, lengths, &res, "read the feed");
	if (err)
		return err;
	rows = PQntuples(res);
	if (rows < 1 || PQnfields(res) != F_N ||
	    !lpg_field(res, 0, F_TRIMMED, 8, &pt)) {
		err = store_corrupt(&q->sb, 0, "bad feed head");
		goto out_clear;
	}
	if (after < (uint64_t)lpg_get64(pt)) {
		err = -ESTALE;
		goto out_clear;
	}
	for (int r = 0; r < rows && n < limit; r++) {
		if (PQgetisnull(res, r, F_SEQ))
			break; /* the row that says there is none */
		err = lpg_feed_rec(q, res, r, &recs[n]);
		if (err)
			goto out_release;
		n++;
	}
	err = (int)n;
	goto out_clear;

out_release:
	while (n)
		store_row_release(&recs[--n].row);
out_clear:
	PQclear(res);
	return err;
}

/* The one int8 of the one row of @res in *seq. */
static int lpg_head_of(const struct lpg *q, const PGresult *res, int format,
		       uint64_t *seq)
{
	const char *p;

	if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0))
		return store_corrupt(&q->sb, 0, "bad feed head");
	p = PQgetvalue(res, 0, 0);
	if (format) {
		if (PQgetlength(res, 0, 0) != 8)
			return store_corrupt(&q->sb, 0, "bad feed head");
		*seq = (uint64_t)lpg_get64(p);
	} else {
		*seq = strtoull(p, NULL, 10);
	}
	return 0;
}

int lpg_feed_head(struct store *s, uint64_t *seq)
{
	struct lpg *q = lpg_of(s);
	PGresult *res;
	uint64_t v = 0;
	int err;

	err = lpg_query(q, S_FEED_HEAD, NULL, NULL, &res, "read the feed head");
	if (err)
		return err;
	err = lpg_head_of(q, res, 1, &v);
	PQclear(res);
	if (!err)
		*seq = v;
	return err;
}

/* ---- waiting ---- */

void lpg_feed_close(struct lpg *q)
{
	lpg_conn_close(q->listen);
	q->listen = NULL;
}

/* Opens feed_wait()'s connection and listens on it. -EAGAIN (or what
 * lpg_errno() made of the failure) while the server cannot be reached. */
static int lpg_listen(struct lpg *q)
{
	struct lpg_conn *c;
	int err;

	err = lpg_conn_open(q, false, &c);
	if (err)
		return err;
	err = lpg_simple(q, c, "LISTEN " LPG_FEED_CHANNEL, NULL,
			 "listen for the feed");
	if (err) {
		lpg_conn_close(c);
		return err;
	}
	q->listen = c;
	return 0;
}

/* Drops the notifications queued on @c; returns how many. */
static int lpg_drain(PGconn *pg)
{
	PGnotify *nf;
	int n = 0;

	while ((nf = PQnotifies(pg))) {
		PQfreemem(nf);
		n++;
	}
	return n;
}

/* feed_wait()'s connection failed: closes it. */
static int lpg_wait_lost(struct lpg *q)
{
	int err = lpg_errno(q, q->listen->pg, NULL, q->listen,
			    "wait for the feed");

	lpg_feed_close(q);
	return err == -ENOMEM || err == -EIO ? -EAGAIN : err;
}

int lpg_feed_wait(struct store *s, uint64_t after, int timeout_ms)
{
	struct lpg *q = lpg_of(s);
	PGresult *res;
	uint64_t head = 0;
	int64_t deadline;
	int err;

	if (!q->listen) {
		err = lpg_listen(q);
		if (err)
			return err;
	}
	if (!PQconsumeInput(q->listen->pg))
		return lpg_wait_lost(q);
	lpg_drain(q->listen->pg);
	err = lpg_simple(q, q->listen, "SELECT seq FROM feed_head WHERE id = 1",
			 &res, "read the feed head");
	if (err) {
		if (q->listen->broken)
			lpg_feed_close(q);
		return err;
	}
	err = lpg_head_of(q, res, 0, &head);
	PQclear(res);
	if (err)
		return err;
	if (head > after || lpg_drain(q->listen->pg))
		return 1;

	deadline = lpg_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	for (;;) {
		struct pollfd pfd = {.fd = PQsocket(q->listen->pg),
				     .events = POLLIN};
		int64_t left = deadline - lpg_now_ms();
		int r;

		if (left <= 0)
			return 0;
		if (pfd.fd < 0)
			return lpg_wait_lost(q);
		r = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return 0;
		if (!PQconsumeInput(q->listen->pg) ||
		    PQstatus(q->listen->pg) != CONNECTION_OK)
			return lpg_wait_lost(q);
		if (lpg_drain(q->listen->pg))
			return 1;
	}
}
