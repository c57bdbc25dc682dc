/*
 * l3_sqlite_feed.c - the SQLite store's change feed as its readers see it:
 * feed_read(), feed_head() and feed_wait(). apply() writes and trims the
 * feed (l3_sqlite_apply.c); the table is described in l3_sqlite_schema.c.
 *
 * feed_read() runs on a reader inside one read transaction, so that the
 * trimmed mark it checks and the records it returns are of one snapshot:
 * a trim that commits in between cannot take records from under it
 * unnoticed. Each record is joined with its entry's current row.
 *
 * feed_wait() polls. SQLite has no way to tell one connection that another
 * committed (the writer may be in another process), but "PRAGMA
 * data_version" on a connection changes whenever any other connection has
 * committed to the file, and reading it costs a look at the WAL index in
 * shared memory: no I/O. feed_wait() keeps a connection of its own for
 * that (a reader of the pool would see its number move for reasons of its
 * own history, and this store's writer would never see its own commits),
 * reads the head when the number moved, and otherwise sleeps
 * LSQ_WAIT_POLL_MS on CLOCK_MONOTONIC, up to the deadline. So a commit is
 * seen within about 10 ms, at the price of 100 cheap wake-ups a second
 * while a caller waits.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <time.h>

#include "l3_sqlite_int.h"

/* The columns of R_FEED_READ after the entry's. */
enum {
	LSQ_FEED_SEQ = STORE_COL_N,
	LSQ_FEED_ORIGIN,
	LSQ_FEED_INO,
};

/* Reads the one integer of one-row statement @st (0 when NULL or no row)
 * into *val, and resets @st. */
static int lsq_step_int(const struct lsq *q, sqlite3 *db, sqlite3_stmt *st,
			sqlite3_int64 *val, const char *what)
{
	int rc = sqlite3_step(st);

	*val = 0;
	if (rc == SQLITE_ROW) {
		*val = sqlite3_column_int64(st, 0);
		rc = SQLITE_DONE;
	}
	lsq_done(st);
	return rc == SQLITE_DONE ? 0 : lsq_errno(q, db, rc, what);
}

/* Fills @rec from the current row of R_FEED_READ: a row that does not
 * decode (logged and counted) is reported gone. */
static int lsq_feed_decode(const struct lsq *q, sqlite3_stmt *st,
			   struct store_feed *rec)
{
	int err;

	memset(rec, 0, sizeof(*rec));
	rec->seq = (uint64_t)sqlite3_column_int64(st, LSQ_FEED_SEQ);
	rec->origin = (uint64_t)sqlite3_column_int64(st, LSQ_FEED_ORIGIN);
	rec->ino = (uint64_t)sqlite3_column_int64(st, LSQ_FEED_INO);
	if (sqlite3_column_type(st, STORE_COL_INO) == SQLITE_NULL) {
		rec->gone = true;
		return 0;
	}
	err = lsq_row_decode(q, st, &rec->row);
	if (err == -EUCLEAN) {
		memset(&rec->row, 0, sizeof(rec->row));
		rec->gone = true;
		err = 0;
	}
	return err;
}

int lsq_feed_read(struct store *s, uint64_t after, struct store_feed *recs,
		  size_t limit)
{
	struct lsq *q = lsq_of(s);
	struct lsq_conn *c;
	sqlite3_stmt *st;
	sqlite3_int64 mark;
	size_t n = 0;
	int rc, err;

	if (limit == 0 || after >= (uint64_t)INT64_MAX)
		return 0;
	if (limit > INT_MAX)
		limit = INT_MAX;
	err = lsq_reader_get(q, &c);
	if (err)
		return err;
	err = lsq_run(q, c->db, c->stmt[R_BEGIN], "begin reading the feed");
	if (err)
		goto out_put;
	err = lsq_step_int(q, c->db, c->stmt[R_FEED_TRIMMED], &mark,
			   "read the feed's trimmed mark");
	if (err)
		goto out_end;
	if (mark > 0 && after < (uint64_t)mark) {
		err = -ESTALE;
		goto out_end;
	}

	st = c->stmt[R_FEED_READ];
	rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)after);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, (sqlite3_int64)limit);
	while (rc == SQLITE_OK && n < limit &&
	       (rc = sqlite3_step(st)) == SQLITE_ROW) {
		err = lsq_feed_decode(q, st, &recs[n]);
		if (err)
			break;
		n++;
		rc = SQLITE_OK;
	}
	if (!err && rc != SQLITE_OK && rc != SQLITE_DONE)
		err = lsq_errno(q, c->db, rc, "read the feed");
	lsq_done(st);
	if (err) {
		while (n)
			store_row_release(&recs[--n].row);
		goto out_end;
	}
	err = (int)n;

out_end:
	/* a read transaction: ending it cannot lose anything */
	if (!sqlite3_get_autocommit(c->db))
		lsq_run(q, c->db, c->stmt[R_COMMIT], "end reading the feed");
out_put:
	lsq_reader_put(q, c);
	return err;
}

int lsq_feed_head(struct store *s, uint64_t *seq)
{
	struct lsq *q = lsq_of(s);
	struct lsq_conn *c;
	sqlite3_int64 head;
	int err;

	err = lsq_reader_get(q, &c);
	if (err)
		return err;
	err = lsq_step_int(q, c->db, c->stmt[R_FEED_HEAD], &head,
			   "read the feed's head");
	lsq_reader_put(q, c);
	if (!err)
		*seq = head > 0 ? (uint64_t)head : 0;
	return err;
}

static int64_t lsq_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int lsq_feed_wait(struct store *s, uint64_t after, int timeout_ms)
{
	struct lsq *q = lsq_of(s);
	int64_t deadline, now, wake;
	sqlite3_int64 version, head;
	bool first = true;
	struct timespec ts;
	int err;

	deadline = lsq_mono_ns() +
		   (int64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000;
	if (!q->waiter) {
		err = lsq_reader_new(q, &q->waiter); /* see the top of this file */
		if (err)
			return err;
	}
	for (;;) {
		err = lsq_step_int(q, q->waiter->db,
				   q->waiter->stmt[R_DATA_VERSION], &version,
				   "read the data version");
		if (err)
			return err;
		if (first || version != q->waiter_version) {
			/* the number first, then the head: a commit in
			 * between moves the number again */
			q->waiter_version = version;
			first = false;
			err = lsq_step_int(q, q->waiter->db,
					   q->waiter->stmt[R_FEED_HEAD], &head,
					   "read the feed's head");
			if (err)
				return err;
			if (head > 0 && (uint64_t)head > after)
				return 1;
		}
		now = lsq_mono_ns();
		if (now >= deadline)
			return 0;
		wake = now + LSQ_WAIT_POLL_MS * 1000000;
		if (wake > deadline)
			wake = deadline;
		ts.tv_sec = wake / 1000000000;
		ts.tv_nsec = wake % 1000000000;
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts,
				       NULL) == EINTR)
			;
	}
}
