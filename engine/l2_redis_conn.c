/*
 * l2_redis_conn.c - the Redis cache's connections: the URL, connecting, the
 * pool of contexts, running commands and pipelines on them (once more on a
 * new context when a pooled one went stale), SIGPIPE, and the one mapping
 * of failures to errno values.
 *
 * URL and prefix. redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]: PORT
 * defaults to 6379 and DB to 0; USER and PASSWORD may hold %XX escapes
 * (an empty password means none); an IPv6 HOST goes in brackets; a query
 * string, rediss:// (TLS) and anything else are refused with -EINVAL. The
 * key prefix is at most L2R_PREFIX_MAX bytes; NULL means "".
 *
 * Connections. Up to L2R_POOL_MAX redisContexts in a pool (pool.h): a
 * thread takes one for one operation and gives it back, waiting at most
 * L2R_POOL_WAIT_S for one when all are busy. A context connects with
 * redisConnectWithTimeout (L2R_TIMEOUT_S), gets the same timeout for every
 * command (redisSetTimeout) and TCP keepalive, then sends AUTH (when the URL
 * has a password; with a user name too, for Redis 6 ACLs) and SELECT (when
 * the database is not 0). l2_redis_open() connects the first context, PINGs
 * and checks the eviction policy (CONFIG GET; errors are ignored, as CONFIG
 * may be disabled): with maxmemory set and a policy other than noeviction
 * it logs a warning.
 *
 * Failure rules. After any error on a context -- a NULL reply, c->err set,
 * a reply of a type the command cannot return, or an error reply that
 * concerns the connection (NOAUTH, WRONGPASS: its login; READONLY: a
 * failover may have moved the master) -- the context is freed and its slot
 * released; the next operation connects again. An operation that failed so
 * on a context that had waited in the pool (the server restarted, or killed
 * the connection) runs once more on a new context (store_run(),
 * store_conn.h); every operation is safe to repeat, as apply() writes final
 * states. Failures become errno values in l2r_errno() only, which also
 * logs Redis's (or hiredis's) message:
 *
 *     connection errors (refused, reset, timeout, EOF)        -EAGAIN
 *     LOADING, BUSY, MASTERDOWN, TRYAGAIN (busy for now)      -EAGAIN
 *     NOAUTH, WRONGPASS, NOPERM, a refused AUTH               -EACCES
 *     OOM (maxmemory reached with noeviction)                 -ENOSPC
 *     READONLY (a replica)                                    -EROFS
 *     a database index out of range (SELECT)                  -EINVAL
 *     hiredis out of memory                                   -ENOMEM
 *     anything else (WRONGTYPE, a protocol error, ...)        -EIO
 *
 * hiredis 0.14 writes with write(), which raises SIGPIPE on a connection
 * the server has reset; every operation blocks SIGPIPE in its own thread
 * while it talks to Redis and discards one it raised (l2r_nopipe_begin),
 * so a lost connection is an error, never a dead process.
 *
 * Logs name the server as 'host:port/db' only. The password is kept (for
 * reconnecting) in memory that is wiped when the cache is freed, and never
 * appears in a log line; a URL that does not parse is not quoted either.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "l2_redis_int.h"

/* ---- errors ---- */

static bool l2r_starts(const char *msg, size_t len, const char *word)
{
	size_t n = strlen(word);

	return len >= n && memcmp(msg, word, n) == 0 &&
	       (len == n || msg[n] == ' ' || msg[n] == '\n');
}

static bool l2r_has(const char *msg, size_t len, const char *text)
{
	return memmem(msg, len, text, strlen(text)) != NULL;
}

/*
 * The one place where hiredis and Redis failures become errno values. @c is
 * the connection the failure came from (NULL or with a NULL context when
 * none could be allocated) and @reply what the command returned: NULL when
 * hiredis failed (then c->ctx->err says why), an error reply, or a reply of
 * a type the command cannot return. Marks @c broken when the context must
 * not be used again (see the top of the file) and logs the message with
 * @what, the action that failed.
 */
int l2r_errno(const struct l2r *r, struct l2r_conn *c, const redisReply *reply,
	      const char *what)
{
	redisContext *ctx = c ? c->ctx : NULL;
	bool drop = true;
	int level = LOG_ERR;
	const char *msg;
	size_t len;
	int err;

	if (!ctx) {
		msg = "out of memory";
		err = -ENOMEM;
	} else if (ctx->err) {
		char buf[64];
		/* hiredis words a socket timeout as strerror(EAGAIN) */
		const char *timed_out = strerror_r(EAGAIN, buf, sizeof(buf));

		msg = ctx->errstr[0] ? ctx->errstr : "connection error";
		if (ctx->err == REDIS_ERR_IO && strcmp(msg, timed_out) == 0)
			msg = "no answer in time (timed out)";
		switch (ctx->err) {
		case REDIS_ERR_OOM:
			err = -ENOMEM;
			break;
		case REDIS_ERR_PROTOCOL:
			err = -EIO;
			break;
		default: /* REDIS_ERR_IO, REDIS_ERR_EOF, REDIS_ERR_OTHER */
			err = -EAGAIN;
			level = LOG_WARNING;
			break;
		}
	} else if (!reply) {
		msg = "no reply";
		err = -EIO;
	} else if (reply->type != REDIS_REPLY_ERROR) {
		msg = "unexpected reply type";
		err = -EIO;
	} else {
		msg = reply->str ? reply->str : "";
		len = reply->str ? reply->len : 0;
		drop = false;
		if (l2r_starts(msg, len, "NOAUTH") ||
		    l2r_starts(msg, len, "WRONGPASS")) {
			err = -EACCES;
			drop = true;
		} else if (l2r_starts(msg, len, "NOPERM") ||
			   l2r_starts(msg, len, "ERR invalid password") ||
			   (l2r_starts(msg, len, "ERR") &&
			    (l2r_has(msg, len, "AUTH") &&
			     l2r_has(msg, len, "password")))) {
			/* an ACL refusal; Redis < 6 "invalid password";
			 * "AUTH <password> called without any password
			 * configured" (a password the server does not use) */
			err = -EACCES;
		} else if (l2r_starts(msg, len, "OOM")) {
			err = -ENOSPC;
		} else if (l2r_starts(msg, len, "READONLY")) {
			err = -EROFS;
			drop = true;
		} else if (l2r_starts(msg, len, "LOADING") ||
			   l2r_starts(msg, len, "BUSY") ||
			   l2r_starts(msg, len, "MASTERDOWN") ||
			   l2r_starts(msg, len, "TRYAGAIN")) {
			err = -EAGAIN;
			level = LOG_WARNING;
		} else if (l2r_has(msg, len, "DB index")) {
			err = -EINVAL;
		} else {
			err = -EIO;
		}
		eng_logf(&r->base.log, level, "redis '%s': cannot %s: %.*s",
			 r->target, what,
			 (int)(len < L2R_ERRMSG_MAX ? len : L2R_ERRMSG_MAX),
			 msg);
		goto out;
	}
	eng_logf(&r->base.log, level, "redis '%s': cannot %s: %s", r->target,
		 what, msg);
out:
	if (c && drop)
		c->broken = true;
	return err;
}

/* Checks that @reply is one of the types in @types (a mask of
 * 1 << REDIS_REPLY_*); otherwise maps it with l2r_errno(). */
static int l2r_check(const struct l2r *r, struct l2r_conn *c,
		     const redisReply *reply, unsigned int types,
		     const char *what)
{
	if (reply && !(c->ctx && c->ctx->err) && reply->type >= 0 &&
	    reply->type < 32 && (types & (1u << reply->type)))
		return 0;
	return l2r_errno(r, c, reply, what);
}

/* ---- SIGPIPE ---- */

static void l2r_pipe_set(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGPIPE);
}

/* Blocks SIGPIPE in the calling thread until l2r_nopipe_end(). */
void l2r_nopipe_begin(struct l2r_nopipe *np)
{
	sigset_t set, pending;

	l2r_pipe_set(&set);
	sigemptyset(&pending);
	sigpending(&pending);
	np->was_pending = sigismember(&pending, SIGPIPE) == 1;
	pthread_sigmask(SIG_BLOCK, &set, &np->old);
}

/* Discards a SIGPIPE that our writes raised, then restores the mask. */
void l2r_nopipe_end(const struct l2r_nopipe *np)
{
	const struct timespec zero = {0, 0};
	sigset_t set, pending;
	int saved = errno;

	l2r_pipe_set(&set);
	sigemptyset(&pending);
	if (!np->was_pending && sigpending(&pending) == 0 &&
	    sigismember(&pending, SIGPIPE) == 1)
		while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
			;
	pthread_sigmask(SIG_SETMASK, &np->old, NULL);
	errno = saved;
}

/* ---- the pool ---- */

void l2r_conn_close(struct l2r_conn *c)
{
	if (!c)
		return;
	if (c->ctx)
		redisFree(c->ctx);
	free(c);
}

/* Runs one command that must answer with a type in @types, then frees the
 * reply. */
static int l2r_simple(const struct l2r *r, struct l2r_conn *c, int argc,
		      const char **argv, const size_t *lens, unsigned int types,
		      const char *what)
{
	redisReply *reply = redisCommandArgv(c->ctx, argc, argv, lens);
	int err = l2r_check(r, c, reply, types, what);

	if (reply)
		freeReplyObject(reply);
	return err;
}

/* Connects a new context: timeouts, keepalive, AUTH and SELECT. */
int l2r_conn_open(const struct l2r *r, struct l2r_conn **out)
{
	const struct timeval tv = {.tv_sec = L2R_TIMEOUT_S, .tv_usec = 0};
	struct l2r_conn *c;
	char dbtext[16];
	int err;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->ctx = redisConnectWithTimeout(r->host, r->port, tv);
	if (!c->ctx || c->ctx->err) {
		err = l2r_errno(r, c, NULL, "connect");
		goto out_close;
	}
	if (redisSetTimeout(c->ctx, tv) != REDIS_OK ||
	    redisEnableKeepAlive(c->ctx) != REDIS_OK) {
		err = l2r_errno(r, c, NULL, "set socket options");
		goto out_close;
	}
	if (r->password) {
		const char *argv[3] = {"AUTH"};
		size_t lens[3] = {4};
		int argc = 1;

		if (r->user) {
			argv[argc] = r->user;
			lens[argc++] = strlen(r->user);
		}
		argv[argc] = r->password;
		lens[argc++] = r->password_len;
		err = l2r_simple(r, c, argc, argv, lens,
				 L2R_T(REDIS_REPLY_STATUS),
				 "log in (authentication)");
		if (err)
			goto out_close;
	}
	if (r->db) {
		const char *argv[2] = {"SELECT", dbtext};
		size_t lens[2] = {6, 0};

		lens[1] = (size_t)snprintf(dbtext, sizeof(dbtext), "%d", r->db);
		err = l2r_simple(r, c, 2, argv, lens, L2R_T(REDIS_REPLY_STATUS),
				 "select the database");
		if (err)
			goto out_close;
	}
	*out = c;
	return 0;

out_close:
	l2r_conn_close(c);
	return err;
}

/* pool_ops.open */
static int l2r_pool_open(void *ctx, struct pool_conn **out)
{
	struct l2r_conn *c;
	int err;

	err = l2r_conn_open(ctx, &c);
	if (!err)
		*out = &c->pool;
	return err;
}

/* pool_ops.close */
static void l2r_pool_close(void *ctx, struct pool_conn *c)
{
	l2r_conn_close((struct l2r_conn *)c);
}

const struct pool_ops l2r_pool_ops = {
	.open = l2r_pool_open,
	.close = l2r_pool_close,
};

/* Gives @c back, or frees it when it failed. */
void l2r_conn_put(struct l2r *r, struct l2r_conn *c)
{
	if (!c->broken && c->ctx && !c->ctx->err)
		pool_put(r->pool, &c->pool);
	else
		pool_drop(r->pool, &c->pool);
}

/* store_run_ops.get: a context for one run (pool_get(): a new one with
 * @fresh); -EAGAIN, logged, when none came free within L2R_POOL_WAIT_S. */
static int l2r_run_get(void *be, bool fresh, struct pool_conn **out)
{
	struct l2r *r = be;

	return store_pool_get(&r->sb, r->pool, fresh, "connection",
			      L2R_POOL_WAIT_S, out);
}

/* store_run_ops.put */
static void l2r_run_put(void *be, struct pool_conn *c)
{
	l2r_conn_put(be, (struct l2r_conn *)c);
}

/* store_run_ops.failed: the context was lost when it must not be used
 * again and the failure was its link's (-EAGAIN); Redis has no conflicts. */
static void l2r_run_failed(const struct pool_conn *c, int err, bool *lost,
			   bool *conflict)
{
	*lost = ((const struct l2r_conn *)c)->broken && err == -EAGAIN;
}

static const struct store_run_ops l2r_run_ops = {
	.get = l2r_run_get,
	.put = l2r_run_put,
	.failed = l2r_run_failed,
};

/* Runs @fn on a pooled context with SIGPIPE blocked, once more on a new
 * context when the pooled one had gone stale (store_run()). */
static int l2r_run(struct l2r *r, store_run_fn fn, void *arg)
{
	struct l2r_nopipe np;
	int err;

	l2r_nopipe_begin(&np);
	err = store_run(r, &l2r_run_ops, L2R_RUNS, fn, arg);
	l2r_nopipe_end(&np);
	return err;
}

/* One command, for l2r_command(). */
struct l2r_cmd {
	int argc;
	const char **argv;
	const size_t *lens;
	unsigned int types;
	const char *what;
	redisReply *reply;
};

static int l2r_command_run(void *be, struct pool_conn *c, void *arg,
			   const struct store_run_state *st)
{
	struct l2r_conn *rc = (struct l2r_conn *)c;
	struct l2r_cmd *a = arg;
	redisReply *reply;
	int err;

	reply = redisCommandArgv(rc->ctx, a->argc, a->argv, a->lens);
	err = l2r_check(be, rc, reply, a->types, a->what);
	if (err && reply) {
		freeReplyObject(reply);
		reply = NULL;
	}
	a->reply = reply;
	return err;
}

int l2r_command(struct l2r *r, int argc, const char **argv, const size_t *lens,
		unsigned int types, redisReply **out, const char *what)
{
	struct l2r_cmd a = {argc, argv, lens, types, what, NULL};
	int err = l2r_run(r, l2r_command_run, &a);

	if (!err)
		*out = a.reply;
	return err;
}

/* One pipeline, for l2r_pipelined(). */
struct l2r_pipe {
	l2r_pipe_fn fn;
	const void *items;
	size_t n;
};

static int l2r_pipe_run(void *be, struct pool_conn *c, void *arg,
			const struct store_run_state *st)
{
	const struct l2r_pipe *a = arg;

	return a->fn(be, (struct l2r_conn *)c, a->items, a->n);
}

int l2r_pipelined(struct l2r *r, l2r_pipe_fn fn, const void *items, size_t n)
{
	struct l2r_pipe a = {fn, items, n};

	return l2r_run(r, l2r_pipe_run, &a);
}

int l2r_hex(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Percent-decodes @len bytes at @s into a new string (*out, with its length
 * in *out_len). Returns 0, -EINVAL (a bad escape or a NUL) or -ENOMEM. */
static int l2r_unescape(const char *s, size_t len, char **out, size_t *out_len)
{
	char *buf = malloc(len + 1);
	size_t n = 0;

	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < len; i++) {
		int hi, lo;

		if (s[i] != '%') {
			buf[n++] = s[i];
			continue;
		}
		hi = i + 2 < len ? l2r_hex(s[i + 1]) : -1;
		lo = hi >= 0 ? l2r_hex(s[i + 2]) : -1;
		if (lo < 0 || (hi == 0 && lo == 0)) {
			explicit_bzero(buf, len + 1);
			free(buf);
			return -EINVAL;
		}
		buf[n++] = (char)(hi << 4 | lo);
		i += 2;
	}
	buf[n] = '\0';
	*out = buf;
	*out_len = n;
	return 0;
}

/* Parses a decimal number of 1..9 digits at *p into *v; advances *p. */
static bool l2r_number(const char **p, int *v)
{
	const char *s = *p;
	int n = 0, digits = 0;

	while (*s >= '0' && *s <= '9' && digits < 10) {
		n = n * 10 + (*s++ - '0');
		digits++;
	}
	if (digits == 0 || digits > 9)
		return false;
	*p = s;
	*v = n;
	return true;
}

/*
 * Parses redis://[[user]:password@]host[:port][/db] into @r. The password
 * (and user) may be percent-encoded; an IPv6 host goes in brackets. Sets
 * *why and returns -EINVAL when the URL does not parse (the URL itself is
 * never quoted: it may hold a password), or -ENOMEM.
 */
int l2r_parse_url(struct l2r *r, const char *url, const char **why)
{
	const char *p, *at, *host, *host_end;
	size_t host_len;
	int err;

	*why = NULL;
	if (!url) {
		*why = "no URL";
		return -EINVAL;
	}
	if (strncmp(url, "rediss://", 9) == 0) {
		*why = "TLS (rediss://) is not supported";
		return -EINVAL;
	}
	if (strncmp(url, "redis://", 8) != 0) {
		*why = "not a redis:// URL";
		return -EINVAL;
	}
	p = url + 8;

	/* The host, port and db hold no '@': the last one ends userinfo. */
	at = strrchr(p, '@');
	if (at) {
		const char *colon = memchr(p, ':', (size_t)(at - p));
		size_t ignored;

		if (!colon) {
			*why = "no ':' before the password";
			return -EINVAL;
		}
		if (colon > p) {
			err = l2r_unescape(p, (size_t)(colon - p), &r->user,
					   &ignored);
			if (err) {
				*why = "bad %-escape in the user name";
				return err;
			}
		}
		err = l2r_unescape(colon + 1, (size_t)(at - colon - 1),
				   &r->password, &r->password_len);
		if (err) {
			*why = "bad %-escape in the password";
			return err;
		}
		if (r->password_len == 0) { /* "redis://:@host": none */
			free(r->password);
			r->password = NULL;
		}
		p = at + 1;
	}

	if (*p == '[') {
		host = p + 1;
		host_end = strchr(host, ']');
		if (!host_end) {
			*why = "no ']' after the IPv6 address";
			return -EINVAL;
		}
		p = host_end + 1;
	} else {
		host = p;
		host_end = host + strcspn(host, ":/?#");
		p = host_end;
	}
	host_len = (size_t)(host_end - host);
	if (host_len == 0 || host_len > L2R_HOST_MAX) {
		*why = host_len ? "host name too long" : "no host";
		return -EINVAL;
	}
	for (size_t i = 0; i < host_len; i++) {
		unsigned char ch = (unsigned char)host[i];

		if (ch <= ' ' || ch == 0x7f || ch == '[' || ch == ']' ||
		    ch == '%') {
			*why = "bad character in the host";
			return -EINVAL;
		}
	}
	memcpy(r->host, host, host_len);
	r->host[host_len] = '\0';

	r->port = L2R_DEFAULT_PORT;
	if (*p == ':') {
		p++;
		if (!l2r_number(&p, &r->port) || r->port < 1 ||
		    r->port > 65535) {
			*why = "bad port";
			return -EINVAL;
		}
	}
	r->db = 0;
	if (*p == '/') {
		p++;
		if (*p && !l2r_number(&p, &r->db)) {
			*why = "bad database number";
			return -EINVAL;
		}
	}
	if (*p) {
		*why = "unexpected text after the host, port and database";
		return -EINVAL;
	}
	snprintf(r->target, sizeof(r->target), "%s%s%s:%d/%d",
		 strchr(r->host, ':') ? "[" : "", r->host,
		 strchr(r->host, ':') ? "]" : "", r->port, r->db);
	return 0;
}

/* Reads "CONFIG GET @name" into @buf; false when it cannot (CONFIG may be
 * disabled or renamed), after logging why at debug level. A connection
 * failure is an error: returns it in *err. */
static bool l2r_config_get(const struct l2r *r, struct l2r_conn *c,
			   const char *name, char *buf, size_t size, int *err)
{
	const char *argv[3] = {"CONFIG", "GET", name};
	size_t lens[3] = {6, 3, strlen(name)};
	redisReply *reply = redisCommandArgv(c->ctx, 3, argv, lens);
	bool ok = false;

	*err = 0;
	if (!reply) {
		*err = l2r_errno(r, c, NULL, "read the configuration");
		return false;
	}
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
	    reply->element[1]->type == REDIS_REPLY_STRING) {
		snprintf(buf, size, "%.*s", (int)reply->element[1]->len,
			 reply->element[1]->str);
		ok = true;
	} else {
		eng_logf(&r->base.log, LOG_DEBUG,
			 "redis '%s': cannot read '%s': %.*s", r->target, name,
			 reply->type == REDIS_REPLY_ERROR ? (int)reply->len : 0,
			 reply->type == REDIS_REPLY_ERROR ? reply->str : "");
	}
	freeReplyObject(reply);
	return ok;
}

/* PINGs on a new context and warns when the server evicts keys. */
int l2r_check_server(const struct l2r *r, struct l2r_conn *c)
{
	const char *argv[1] = {"PING"};
	size_t lens[1] = {4};
	char policy[64], maxmemory[32];
	int err;

	err = l2r_simple(r, c, 1, argv, lens, L2R_T(REDIS_REPLY_STATUS),
			 "ping");
	if (err)
		return err;
	if (!l2r_config_get(r, c, "maxmemory-policy", policy, sizeof(policy),
			    &err) ||
	    !l2r_config_get(r, c, "maxmemory", maxmemory, sizeof(maxmemory),
			    &err))
		return err;
	if (strcmp(maxmemory, "0") != 0 && strcmp(policy, "noeviction") != 0)
		eng_logf(&r->base.log, LOG_WARNING,
			 "redis '%s' evicts keys under memory pressure "
			 "(maxmemory %s bytes, policy '%s'): fine for a cache, "
			 "and tierfs never relies on Redis alone",
			 r->target, maxmemory, policy);
	return 0;
}
