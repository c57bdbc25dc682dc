/*
 * l3_pg_conn.c - the PostgreSQL store's connections: opening them, their
 * pool, running statements on them, and the one mapping of libpq failures
 * to errno values.
 *
 * Up to LPG_POOL_MAX PGconn in a pool (pool.h): a thread takes one for one
 * operation and gives it back, waiting at most LPG_POOL_WAIT_S for one when
 * all are busy. A connection that fails (bad status, or a connection error
 * from a statement) is closed and its slot freed; the next use opens a new
 * one. An operation that failed that way on a connection that had been
 * idle in the pool (the server may have restarted meanwhile) is run once
 * more on a freshly opened connection (store_run(), store_conn.h); every
 * operation is safe to repeat (apply() writes final states, a lost inode
 * range is never reused). Connections use libpq's conninfo as given (a URI
 * or key=value words; PG* variables and ~/.pgpass apply), with
 * fallback_application_name 'tierfs' and, unless the conninfo or
 * PGCONNECT_TIMEOUT sets one, connect_timeout=5; client_encoding is set to
 * the server's, so text (the state tag) is never converted.
 *
 * The conninfo is checked without connecting by lpg_parse(), which also
 * derives the name logs use for the server.
 *
 * libpq and SQLSTATE codes become negative errno values in lpg_errno() only,
 * which also logs the server's message. Logs name the server as
 * 'host:port/dbname' and never show the conninfo, which may hold a
 * password; libpq's reason for refusing a conninfo is not logged either,
 * as it may quote the password.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "l3_pg_int.h"

/* Every parameter and every result column in the binary format. */
static const int lpg_binary[LPG_MAX_PARAMS] = {1, 1, 1, 1, 1, 1, 1, 1, 1,
					       1, 1, 1, 1, 1, 1, 1, 1};
/* A parameter left out above would be 0, text: list one 1 for each. */
_Static_assert(LPG_MAX_PARAMS == 17, "lpg_binary has a 1 per parameter");

/* ---- errors ---- */

/* Copies @msg into @buf on one line: each run of white space becomes one
 * space, and none is left at either end. */
static const char *lpg_one_line(const char *msg, char *buf, size_t size)
{
	size_t n = 0;

	for (; *msg && n + 1 < size; msg++) {
		bool space = *msg == ' ' || *msg == '\n' || *msg == '\r' ||
			     *msg == '\t';

		if (!space)
			buf[n++] = *msg;
		else if (n && buf[n - 1] != ' ')
			buf[n++] = ' ';
	}
	while (n && buf[n - 1] == ' ')
		n--;
	buf[n] = '\0';
	return buf;
}

static bool lpg_has(const char *msg, const char *word)
{
	return strstr(msg, word) != NULL;
}

/*
 * The one place where libpq failures become errno values. @res is the
 * failed result (NULL when there is none: a failed connection, or no memory
 * for a result), @pg the connection it came from (NULL when none could be
 * made); @c, when given, is marked broken (close it) or conflicting (try the
 * transaction again). Logs the server's message with @what, the action that
 * failed. Expected answers (a refused unique key, a conflict that is tried
 * again) are logged at debug level only.
 *
 * With a SQLSTATE (a server error) the class decides. A connection that
 * failed has none, nor a PGresult (libpq keeps the server's code to itself),
 * so its message is matched against libpq's and the server's wording for
 * refused logins; anything else there (refused, unreachable, starting up,
 * too many clients) is worth trying again later: -EAGAIN.
 */
int lpg_errno(const struct lpg *q, PGconn *pg, const PGresult *res,
	      struct lpg_conn *c, const char *what)
{
	const char *code =
		res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg =
		res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	bool lost = !pg || PQstatus(pg) != CONNECTION_OK;
	int level = LOG_ERR;
	char line[512];
	int err = -EIO;

	if (!msg || !msg[0])
		msg = res ? PQresultErrorMessage(res) : NULL;
	if ((!msg || !msg[0]) && pg)
		msg = PQerrorMessage(pg);
	if (!msg || !msg[0])
		msg = pg ? "unknown error" : "out of memory";

	if (!code) {
		if (!pg || (!res && !lost)) {
			err = -ENOMEM;
		} else if (!lost) {
			err = -EIO; /* a client-side failure on a good link */
		} else if (PQconnectionNeedsPassword(pg) ||
			   lpg_has(msg, "authentication failed") ||
			   lpg_has(msg, "no pg_hba.conf entry") ||
			   lpg_has(msg, "permission denied") ||
			   (lpg_has(msg, "role \"") &&
			    lpg_has(msg, "does not exist"))) {
			err = -EACCES;
		} else if (lpg_has(msg, "database \"") &&
			   lpg_has(msg, "does not exist")) {
			err = -EINVAL;
		} else {
			err = -EAGAIN;
			level = LOG_WARNING;
		}
	} else if (strcmp(code, "23505") == 0) {
		const char *key =
			PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);

		if (key && (strcmp(key, "entries_pkey") == 0 ||
			    strcmp(key, "contents_pkey") == 0 ||
			    strcmp(key, "entries_parent_name") == 0 ||
			    strcmp(key, "entries_parent_stem") == 0)) {
			/* duplicates are refused before SQL, and names held
			 * by others are replaced (l3_pg_race.c): a writer
			 * that committed after this snapshot, a race */
			err = -EAGAIN;
			if (c)
				c->conflict = true;
		} else {
			err = -EEXIST;
		}
		level = LOG_DEBUG;
	} else if (strcmp(code, "40001") == 0 || strcmp(code, "40P01") == 0) {
		err = -EAGAIN;
		level = LOG_DEBUG;
		if (c)
			c->conflict = true;
	} else if (strncmp(code, "08", 2) == 0 || strcmp(code, "57P01") == 0 ||
		   strcmp(code, "57P02") == 0 || strcmp(code, "57P03") == 0) {
		err = -EAGAIN;
		level = LOG_WARNING;
		if (c)
			c->broken = true;
	} else if (strcmp(code, "53100") == 0) {
		err = -ENOSPC;
	} else if (strcmp(code, "25006") == 0) {
		err = -EROFS;
	} else if (strcmp(code, "42501") == 0) {
		err = -EACCES;
	} else if (strncmp(code, "22", 2) == 0) {
		/* a data exception: a value this change carries (an encoding
		 * the database refuses, a number out of range) */
		err = -EINVAL;
	} else if (strncmp(code, "23", 2) == 0) {
		/* another integrity constraint (check, not null, foreign
		 * key): this change breaks it */
		err = -EINVAL;
	}
	if (lost && c)
		c->broken = true;
	if (err == -EAGAIN && level == LOG_WARNING && !code &&
	    atomic_exchange(&((struct lpg *)q)->down_logged, true))
		level = LOG_DEBUG; /* the outage was logged already */

	eng_logf(&q->base.log, level, "postgres '%s': cannot %s: %s%s%s",
		 q->target, what, lpg_one_line(msg, line, sizeof(line)),
		 code ? " / SQLSTATE " : "", code ? code : "");
	return err;
}

/* ---- connections ---- */

/* libpq's notice processor: what the server says outside a result (a
 * NOTICE, or the FATAL of a connection it ends while the connection is
 * idle, as feed_wait()'s reads) goes to the store's log at debug level,
 * never to stderr; a failure it causes is logged where it is met. */
static void lpg_notice(void *arg, const char *msg)
{
	const struct lpg *q = arg;
	char line[512];

	eng_logf(&q->base.log, LOG_DEBUG, "postgres '%s': the server says: %s",
		 q->target, lpg_one_line(msg, line, sizeof(line)));
}

void lpg_conn_close(struct lpg_conn *c)
{
	if (!c)
		return;
	PQfinish(c->pg);
	free(c);
}

int lpg_result(const struct lpg *q, struct lpg_conn *c, PGresult *res,
	       PGresult **out, const char *what)
{
	ExecStatusType st = PQresultStatus(res);
	int err;

	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
		if (out)
			*out = res;
		else
			PQclear(res);
		return 0;
	}
	err = lpg_errno(q, c->pg, res, c, what);
	PQclear(res);
	return err;
}

int lpg_simple(const struct lpg *q, struct lpg_conn *c, const char *sql,
	       PGresult **out, const char *what)
{
	return lpg_result(q, c, PQexec(c->pg, sql), out, what);
}

/* Runs statement @which on @c with binary parameters and results, prepared
 * or, before lpg_conn_prepare() (opening, migrating), by its text; *out gets
 * the result when @out is given (caller PQclear()s it). */
int lpg_exec(const struct lpg *q, struct lpg_conn *c, enum lpg_stmt which,
	     const char *const *values, const int *lengths, PGresult **out,
	     const char *what)
{
	const struct lpg_stmt_def *d = &lpg_stmts[which];
	PGresult *res;

	if (c->prepared)
		res = PQexecPrepared(c->pg, d->name, d->nparams, values,
				     lengths, lpg_binary, 1);
	else
		res = PQexecParams(c->pg, d->sql, d->nparams, d->types, values,
				   lengths, lpg_binary, 1);
	return lpg_result(q, c, res, out, what);
}

int lpg_conn_prepare(const struct lpg *q, struct lpg_conn *c)
{
	for (int i = 0; i < S_N; i++) {
		const struct lpg_stmt_def *d = &lpg_stmts[i];
		int err = lpg_result(
			q, c,
			PQprepare(c->pg, d->name, d->sql, d->nparams, d->types),
			NULL, "prepare a statement");

		if (err)
			return err;
	}
	c->prepared = true;
	return 0;
}

/* Opens a connection; prepares its statements when @prepare (the schema
 * must exist by then). */
int lpg_conn_open(const struct lpg *q, bool prepare, struct lpg_conn **out)
{
	const char *keys[4], *vals[4];
	struct lpg_conn *c;
	int i = 0, err;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	/* Later words override earlier ones: the conninfo comes last. */
	keys[i] = "fallback_application_name";
	vals[i++] = "tierfs";
	if (q->add_timeout) {
		keys[i] = "connect_timeout";
		vals[i++] = LPG_CONNECT_TIMEOUT;
	}
	keys[i] = "dbname";
	vals[i++] = q->conninfo;
	keys[i] = NULL;
	vals[i] = NULL;
	c->pg = PQconnectdbParams(keys, vals, 1);
	if (!c->pg || PQstatus(c->pg) != CONNECTION_OK) {
		err = lpg_errno(q, c->pg, NULL, NULL, "connect");
		goto out_close;
	}
	PQsetNoticeProcessor(c->pg, lpg_notice, (void *)q);
	/* No conversion of text: the server's encoding on both sides. */
	err = lpg_simple(q, c,
			 "SELECT set_config('client_encoding',"
			 " current_setting('server_encoding'), false)",
			 NULL, "set the client encoding");
	if (err)
		goto out_close;
	if (prepare) {
		err = lpg_conn_prepare(q, c);
		if (err)
			goto out_close;
	}
	if (atomic_exchange(&((struct lpg *)q)->down_logged, false))
		eng_logf(&q->base.log, LOG_WARNING,
			 "postgres '%s': connected again", q->target);
	*out = c;
	return 0;

out_close:
	lpg_conn_close(c);
	return err;
}

/* pool_ops.open: a connection with its statements prepared. */
static int lpg_pool_open(void *ctx, struct pool_conn **out)
{
	struct lpg_conn *c;
	int err;

	err = lpg_conn_open(ctx, true, &c);
	if (!err)
		*out = &c->pool;
	return err;
}

/* pool_ops.close */
static void lpg_pool_close(void *ctx, struct pool_conn *c)
{
	lpg_conn_close((struct lpg_conn *)c);
}

const struct pool_ops lpg_pool_ops = {
	.open = lpg_pool_open,
	.close = lpg_pool_close,
};

/* store_run_ops.get: a connection for one run (pool_get(): a new one with
 * @fresh); -EAGAIN, logged, when none came free within LPG_POOL_WAIT_S. */
static int lpg_conn_get(void *be, bool fresh, struct pool_conn **out)
{
	struct lpg *q = be;
	int err;

	err = store_pool_get(&q->sb, q->pool, fresh, "connection",
			     LPG_POOL_WAIT_S, out);
	if (!err)
		((struct lpg_conn *)*out)->conflict = false;
	return err;
}

/* store_run_ops.put: gives @c back, or closes it when it failed or is not
 * idle. */
static void lpg_conn_put(void *be, struct pool_conn *pc)
{
	struct lpg *q = be;
	struct lpg_conn *c = (struct lpg_conn *)pc;

	if (!c->broken && PQstatus(c->pg) == CONNECTION_OK &&
	    PQtransactionStatus(c->pg) == PQTRANS_IDLE)
		pool_put(q->pool, &c->pool);
	else
		pool_drop(q->pool, &c->pool);
}

/* store_run_ops.failed: what lpg_errno() marked on the connection. */
static void lpg_conn_failed(const struct pool_conn *pc, int err, bool *lost,
			    bool *conflict)
{
	const struct lpg_conn *c = (const struct lpg_conn *)pc;

	*lost = c->broken;
	*conflict = c->conflict;
}

const struct store_run_ops lpg_run_ops = {
	.get = lpg_conn_get,
	.put = lpg_conn_put,
	.failed = lpg_conn_failed,
};

/* One statement, for lpg_query(). */
struct lpg_query {
	enum lpg_stmt which;
	const char *const *values;
	const int *lengths;
	PGresult *res;
	const char *what;
};

static int lpg_query_run(void *be, struct pool_conn *c, void *arg,
			 const struct store_run_state *st)
{
	struct lpg_query *a = arg;

	return lpg_exec(be, (struct lpg_conn *)c, a->which, a->values,
			a->lengths, &a->res, a->what);
}

int lpg_query(struct lpg *q, enum lpg_stmt which, const char *const *values,
	      const int *lengths, PGresult **res, const char *what)
{
	struct lpg_query a = {which, values, lengths, NULL, what};
	int err = store_run(q, &lpg_run_ops, LPG_QUERY_RUNS, lpg_query_run, &a);

	if (!err)
		*res = a.res;
	return err;
}

/*
 * Checks @conninfo without connecting and fills q->target with its host,
 * port and database (from PG* variables when it names none) and
 * q->add_timeout. libpq's complaint about a bad conninfo is not logged: it
 * may quote the password.
 */
int lpg_parse(struct lpg *q, const char *conninfo)
{
	const char *host = NULL, *port = NULL, *db = NULL, *user = NULL;
	bool has_timeout = getenv("PGCONNECT_TIMEOUT") != NULL;
	PQconninfoOption *opts;
	char *errmsg = NULL;

	opts = PQconninfoParse(conninfo, &errmsg);
	if (!opts) {
		if (!errmsg)
			return -ENOMEM;
		PQfreemem(errmsg);
		snprintf(q->target, sizeof(q->target), "?");
		eng_logf(&q->base.log, LOG_ERR,
			 "postgres: cannot open: the connection string is not "
			 "a valid libpq URI or key=value list");
		return -EINVAL;
	}
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		if (!o->val || !o->val[0])
			continue;
		if (strcmp(o->keyword, "host") == 0)
			host = o->val;
		else if (strcmp(o->keyword, "hostaddr") == 0 && !host)
			host = o->val;
		else if (strcmp(o->keyword, "port") == 0)
			port = o->val;
		else if (strcmp(o->keyword, "dbname") == 0)
			db = o->val;
		else if (strcmp(o->keyword, "user") == 0)
			user = o->val;
		else if (strcmp(o->keyword, "connect_timeout") == 0)
			has_timeout = true;
	}
	if (!host)
		host = getenv("PGHOST");
	if (!port)
		port = getenv("PGPORT");
	if (!db)
		db = getenv("PGDATABASE");
	if (!db)
		db = user ? user : getenv("PGUSER");
	snprintf(q->target, sizeof(q->target), "%s:%s/%s",
		 host ? host : "localhost", port ? port : "5432",
		 db ? db : "(default)");
	q->add_timeout = !has_timeout;
	PQconninfoFree(opts);
	return 0;
}
