/*
 * l2_redis.c - L2: a Redis cache of entry metadata and content (hiredis).
 *
 * A cache tier in the sense of store.h: get, fetch, read, apply and the
 * cache-only ops (put_tree, get_tree, each_cached, drop_cached) work;
 * lookup, list, has_children, alloc_ino and stats answer -ENOTSUP. Redis may
 * lose an entry or hold a stale one at any time (eviction, a restart, a
 * write that failed, another mount's older write landing last): callers
 * compare versions with L3, which is the truth. Written for hiredis 0.14
 * (blocking API, no TLS) and Redis 4.0 or newer (HSET with several fields).
 *
 * Key layout. Every key starts with the caller's prefix P (e.g. "tierfs:"),
 * so that several trees can share one Redis database:
 *
 *     P "e:" INO   a hash, INO in decimal, with exactly two fields:
 *                  "m"  the entry's metadata blob (below)
 *                  "d"  the content, byte for byte (NULs included; "" when
 *                       empty)
 *     P "t:" INO   a string: the Merkle hash (merkle.h) of directory INO as
 *                  L3 last committed it, 64 lowercase hex digits -- the
 *                  mirror of L3's tree that `tierfs verify` compares
 *     P "_:" ...   reserved for internal keys; this version writes none
 *
 * Entry keys ("e:"), tree keys ("t:") and internal keys ("_:") can never
 * share a name. An
 * entry key holds both fields or does not exist: get() reads "m", read()
 * reads "d", fetch() reads both with one HMGET and treats a hash that lacks
 * either as absent. No key has a TTL.
 *
 * Metadata blob, format 1 (integers little endian):
 *
 *     off  size  field
 *       0     1  format         1
 *       1     8  size           content length
 *       9    32  hash           SHA-256 of the content (zero for dirs)
 *      41     1  kind           enum item_kind
 *      42     1  flags          bit 0 explicit_dir, bit 1 state present
 *      43     8  version
 *      51     8  parent
 *      59     8  mtime_ns       signed
 *      67     8  ctime_ns       signed
 *      75     4  mode
 *      79     4  uid
 *      83     4  gid
 *      87     2  name length, then the name (0..255 bytes, no NUL or '/')
 *       .     4  state length, then the state tag (no NUL); with flag bit 1
 *                clear the length is 0 and the tag is NULL, so a NULL tag
 *                and "" stay apart
 *       .     4  xattrs length, then the user xattr blob (item.h), opaque
 *
 * and nothing after it. Bytes 0..40 (format, size, hash) name the content
 * that the metadata describes. A blob of another format (a newer tierfs
 * sharing the server) reads as absent; a blob that does not decode, or a
 * fetched "d" whose length is not the blob's size, is corrupt: -EIO, logged.
 *
 * Writes. apply() sends its batch as one pipeline: every command is
 * appended with redisAppendCommandArgv (binary safe: explicit lengths, no
 * format strings), then the replies are read, all of them, even after an
 * error reply, so that the connection stays in step; apply() returns the
 * first error. Per change:
 *
 *     deleted            DEL P e:INO P t:INO
 *     with content       HSET P e:INO m BLOB d DATA
 *     metadata only      EVAL l2r_meta_script 1 P e:INO BLOB
 *
 * The script sets "m" only when the hash has "d" and its old "m" names the
 * same content (bytes 0..40 equal); otherwise it deletes the key. So a
 * metadata-only change (rename, chmod, an xattr) keeps cached content that
 * is still right, never leaves a half entry and never pairs new metadata
 * with content of another version. The engine sends directories as
 * metadata-only changes, so directories are not cached here, and such a
 * change sends no command at all; their Merkle
 * hashes are, by put_tree(): one pipeline of SET P t:INO HEX, sent after
 * the batch's changes (get_tree() reads one back). EVAL (rather
 * than EVALSHA) needs no script to be loaded on a server that restarted;
 * Redis compiles the script once and caches it by its SHA anyway. Replies
 * are read after every L2R_CHUNK_BYTES of queued arguments and at the end,
 * so that a batch of big items never sits whole in hiredis's output buffer;
 * a batch of small ones (2,000 changes of a few hundred bytes) is one round
 * trip. The batch is best effort, not a transaction: a change that fails
 * does not undo the others. Writes carry no version check: when two mounts
 * write one entry, the last batch to arrive wins, even if it is older;
 * readers compare versions with L3, so a stale entry costs a miss, never a
 * wrong answer.
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
 * the connection) runs once more on a new context; every operation is safe
 * to repeat, as apply() writes final states. Failures become errno values
 * in l2r_errno() only, which also logs Redis's (or hiredis's) message:
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
 * reconnecting) in memory that is wiped when the store is freed, and never
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

#include <hiredis/hiredis.h>

#include "l2_redis.h"
#include "pool.h"

#define L2R_POOL_MAX 4
#define L2R_POOL_WAIT_S 10 /* how long a thread waits for a context */
#define L2R_TIMEOUT_S 1	   /* connect, and each command's socket I/O */
#define L2R_DEFAULT_PORT 6379
#define L2R_PREFIX_MAX 256 /* bytes of key prefix */
#define L2R_HOST_MAX 255
#define L2R_CHUNK_BYTES (8u << 20) /* queued before reading replies */
#define L2R_ERRMSG_MAX 200	   /* bytes of a server message we log */

#define L2R_FORMAT 1
#define L2R_OFF_KIND 41 /* bytes before it: format, size, hash */
#define L2R_HDR_LEN 89	/* fixed part, up to and including the name length */
#define L2R_FLAG_EXPLICIT 0x01
#define L2R_FLAG_STATE 0x02

/* See the top of the file. KEYS[1] the entry key, ARGV[1] the new blob. */
static const char l2r_meta_script[] =
	"local old = redis.call('HGET', KEYS[1], 'm')\n"
	"if old and string.sub(old, 1, 41) == string.sub(ARGV[1], 1, 41)\n"
	"   and redis.call('HEXISTS', KEYS[1], 'd') == 1 then\n"
	"  redis.call('HSET', KEYS[1], 'm', ARGV[1])\n"
	"  return 1\n"
	"end\n"
	"redis.call('DEL', KEYS[1])\n"
	"return 0\n";

_Static_assert(L2R_OFF_KIND == 1 + 8 + ITEM_HASH_LEN,
	       "l2r_meta_script compares bytes 1..41 (Lua counts from 1)");

struct l2r_conn {
	struct pool_conn pool; /* first; .reused: it had waited idle */
	redisContext *ctx;
	bool broken; /* an error: free it, never reuse it */
};

struct l2r {
	struct store base;	     /* first: the engine sees only this */
	char host[L2R_HOST_MAX + 1]; /* without IPv6 brackets */
	int port;
	int db;
	char *user;	/* NULL unless the URL names one */
	char *password; /* NULL when none; never logged */
	size_t password_len;
	char prefix[L2R_PREFIX_MAX + 1];
	char target[L2R_HOST_MAX + 32]; /* "host:port/db" for logs */

	struct pool *pool; /* of struct l2r_conn; NULL until made */
};

static struct l2r *l2r_of(struct store *s)
{
	return (struct l2r *)s;
}

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
static int l2r_errno(const struct l2r *r, struct l2r_conn *c,
		     const redisReply *reply, const char *what)
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

#define L2R_T(type) (1u << (type))

/* ---- SIGPIPE ---- */

struct l2r_nopipe {
	sigset_t old;	  /* the thread's mask before */
	bool was_pending; /* a SIGPIPE was pending before: not ours */
};

static void l2r_pipe_set(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGPIPE);
}

/* Blocks SIGPIPE in the calling thread until l2r_nopipe_end(). */
static void l2r_nopipe_begin(struct l2r_nopipe *np)
{
	sigset_t set, pending;

	l2r_pipe_set(&set);
	sigemptyset(&pending);
	sigpending(&pending);
	np->was_pending = sigismember(&pending, SIGPIPE) == 1;
	pthread_sigmask(SIG_BLOCK, &set, &np->old);
}

/* Discards a SIGPIPE that our writes raised, then restores the mask. */
static void l2r_nopipe_end(const struct l2r_nopipe *np)
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

static void l2r_conn_close(struct l2r_conn *c)
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
static int l2r_conn_open(const struct l2r *r, struct l2r_conn **out)
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

static const struct pool_ops l2r_pool_ops = {
	.open = l2r_pool_open,
	.close = l2r_pool_close,
};

/* Takes a context for one operation (pool_get(): a new one with @fresh);
 * -EAGAIN, logged, when none came free within L2R_POOL_WAIT_S. */
static int l2r_conn_get(struct l2r *r, bool fresh, struct l2r_conn **out)
{
	struct pool_conn *c;
	int err;

	err = pool_get(r->pool, fresh, &c);
	if (err == -ETIMEDOUT) {
		eng_logf(&r->base.log, LOG_WARNING,
			 "redis '%s': no connection free after %d s", r->target,
			 L2R_POOL_WAIT_S);
		return -EAGAIN;
	}
	if (!err)
		*out = (struct l2r_conn *)c;
	return err;
}

/* Gives @c back, or frees it when it failed. */
static void l2r_conn_put(struct l2r *r, struct l2r_conn *c)
{
	if (!c->broken && c->ctx && !c->ctx->err)
		pool_put(r->pool, &c->pool);
	else
		pool_drop(r->pool, &c->pool);
}

/* Whether an operation that failed on @c with @err should run once more on
 * a new context: @c was lost after waiting in the pool. */
static bool l2r_again(const struct l2r_conn *c, bool fresh, int err)
{
	return !fresh && c->pool.reused && c->broken && err == -EAGAIN;
}

/*
 * Runs one command on a pooled context (once more on a new one, see
 * l2r_again). On success returns 0 with the reply, of a type in @types, in
 * *out (the caller frees it with freeReplyObject()).
 */
static int l2r_command(struct l2r *r, int argc, const char **argv,
		       const size_t *lens, unsigned int types, redisReply **out,
		       const char *what)
{
	struct l2r_nopipe np;
	bool fresh = false;
	struct l2r_conn *c;
	int err;

	l2r_nopipe_begin(&np);
	for (;;) {
		redisReply *reply;
		bool again;

		err = l2r_conn_get(r, fresh, &c);
		if (err)
			break;
		reply = redisCommandArgv(c->ctx, argc, argv, lens);
		err = l2r_check(r, c, reply, types, what);
		if (!err) {
			l2r_conn_put(r, c);
			*out = reply;
			break;
		}
		if (reply)
			freeReplyObject(reply);
		again = l2r_again(c, fresh, err);
		l2r_conn_put(r, c);
		if (!again)
			break;
		fresh = true;
	}
	l2r_nopipe_end(&np);
	return err;
}

/* ---- keys and blobs ---- */

/* Writes P "e:" INO into @buf (room for L2R_PREFIX_MAX + 32) and returns
 * its length. */
static size_t l2r_key(const struct l2r *r, uint64_t ino, char *buf)
{
	return (size_t)snprintf(buf, L2R_PREFIX_MAX + 32, "%se:%llu", r->prefix,
				(unsigned long long)ino);
}

/* Writes P "t:" INO, a directory's mirrored Merkle hash, like l2r_key. */
static size_t l2r_tree_key(const struct l2r *r, uint64_t ino, char *buf)
{
	return (size_t)snprintf(buf, L2R_PREFIX_MAX + 32, "%st:%llu", r->prefix,
				(unsigned long long)ino);
}

static uint8_t *l2r_put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		*p++ = (uint8_t)(v >> (8 * i));
	return p;
}

static uint64_t l2r_get_le(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* The length of the blob of @name and @m. */
static size_t l2r_blob_len(const char *name, const struct item_meta *m)
{
	return L2R_HDR_LEN + strlen(name) + 4 +
	       (m->state ? strlen(m->state) : 0) + 4 +
	       (m->xattrs ? m->xattrs_len : 0);
}

/* Encodes the blob of an entry into @buf, which has room for
 * l2r_blob_len() bytes. */
static void l2r_blob_encode(uint64_t parent, const char *name,
			    const struct item_meta *m, uint8_t *buf)
{
	size_t name_len = strlen(name);
	size_t state_len = m->state ? strlen(m->state) : 0;
	size_t xattrs_len = m->xattrs ? m->xattrs_len : 0;
	uint8_t flags = 0;
	uint8_t *p = buf;

	if (m->explicit_dir)
		flags |= L2R_FLAG_EXPLICIT;
	if (m->state)
		flags |= L2R_FLAG_STATE;
	*p++ = L2R_FORMAT;
	p = l2r_put_le(p, m->size, 8);
	memcpy(p, m->hash, ITEM_HASH_LEN);
	p += ITEM_HASH_LEN;
	*p++ = (uint8_t)m->kind;
	*p++ = flags;
	p = l2r_put_le(p, m->version, 8);
	p = l2r_put_le(p, parent, 8);
	p = l2r_put_le(p, (uint64_t)m->mtime_ns, 8);
	p = l2r_put_le(p, (uint64_t)m->ctime_ns, 8);
	p = l2r_put_le(p, m->mode, 4);
	p = l2r_put_le(p, m->uid, 4);
	p = l2r_put_le(p, m->gid, 4);
	p = l2r_put_le(p, name_len, 2);
	memcpy(p, name, name_len);
	p += name_len;
	p = l2r_put_le(p, state_len, 4);
	if (state_len)
		memcpy(p, m->state, state_len);
	p += state_len;
	p = l2r_put_le(p, xattrs_len, 4);
	if (xattrs_len)
		memcpy(p, m->xattrs, xattrs_len);
}

/* Logs an entry that does not decode and returns -EIO. */
static int l2r_corrupt(const struct l2r *r, uint64_t ino, const char *why)
{
	eng_logf(&r->base.log, LOG_ERR, "redis '%s': corrupt entry %llu: %s",
		 r->target, (unsigned long long)ino, why);
	return -EIO;
}

/* Takes @n bytes from the blob cursor; NULL when fewer are left. */
static const uint8_t *l2r_take(const uint8_t **p, size_t *left, size_t n)
{
	const uint8_t *at = *p;

	if (*left < n)
		return NULL;
	*p += n;
	*left -= n;
	return at;
}

/* Decodes the blob of entry @ino into @out: 0, -ENOENT (another format),
 * -EIO (corrupt, logged) or -ENOMEM. */
static int l2r_blob_decode(const struct l2r *r, uint64_t ino, const void *blob,
			   size_t len, struct store_row *out)
{
	const uint8_t *p = blob, *f;
	size_t left = len, n;
	struct store_row row;
	uint8_t flags;

	if (len < 1)
		return l2r_corrupt(r, ino, "empty metadata");
	if (p[0] != L2R_FORMAT) {
		eng_logf(&r->base.log, LOG_DEBUG,
			 "redis '%s': entry %llu has metadata format %u, not "
			 "%u: treated as absent",
			 r->target, (unsigned long long)ino, p[0], L2R_FORMAT);
		return -ENOENT;
	}
	f = l2r_take(&p, &left, L2R_HDR_LEN);
	if (!f)
		return l2r_corrupt(r, ino, "short metadata");

	memset(&row, 0, sizeof(row));
	row.ino = ino;
	row.meta.size = l2r_get_le(f + 1, 8);
	memcpy(row.meta.hash, f + 9, ITEM_HASH_LEN);
	if (f[41] != ITEM_DIR && f[41] != ITEM_JSON && f[41] != ITEM_BINARY)
		return l2r_corrupt(r, ino, "bad kind");
	row.meta.kind = (enum item_kind)f[41];
	flags = f[42];
	if (flags & ~(L2R_FLAG_EXPLICIT | L2R_FLAG_STATE))
		return l2r_corrupt(r, ino, "bad flags");
	row.meta.explicit_dir = flags & L2R_FLAG_EXPLICIT;
	row.meta.version = l2r_get_le(f + 43, 8);
	row.parent = l2r_get_le(f + 51, 8);
	row.meta.mtime_ns = (int64_t)l2r_get_le(f + 59, 8);
	row.meta.ctime_ns = (int64_t)l2r_get_le(f + 67, 8);
	row.meta.mode = (uint32_t)l2r_get_le(f + 75, 4);
	row.meta.uid = (uint32_t)l2r_get_le(f + 79, 4);
	row.meta.gid = (uint32_t)l2r_get_le(f + 83, 4);

	n = (size_t)l2r_get_le(f + 87, 2);
	f = l2r_take(&p, &left, n);
	if (!f || n > STORE_NAME_MAX || memchr(f, '\0', n) || memchr(f, '/', n))
		return l2r_corrupt(r, ino, "bad name");
	memcpy(row.name, f, n);
	row.name[n] = '\0';

	f = l2r_take(&p, &left, 4);
	n = f ? (size_t)l2r_get_le(f, 4) : 0;
	if (!f || !(f = l2r_take(&p, &left, n)) || memchr(f, '\0', n) ||
	    (n && !(flags & L2R_FLAG_STATE)))
		return l2r_corrupt(r, ino, "bad state tag");
	if (flags & L2R_FLAG_STATE) {
		row.meta.state = strndup((const char *)f, n);
		if (!row.meta.state)
			return -ENOMEM;
	}

	f = l2r_take(&p, &left, 4);
	n = f ? (size_t)l2r_get_le(f, 4) : 0;
	if (!f || !(f = l2r_take(&p, &left, n)) || left != 0) {
		item_meta_release(&row.meta);
		return l2r_corrupt(r, ino, "bad xattrs");
	}
	if (n) {
		row.meta.xattrs = malloc(n);
		if (!row.meta.xattrs) {
			item_meta_release(&row.meta);
			return -ENOMEM;
		}
		memcpy(row.meta.xattrs, f, n);
		row.meta.xattrs_len = n;
	}
	*out = row;
	return 0;
}

/* Copies a bulk reply's bytes into a new buffer (NULL when empty). */
static int l2r_dup_data(const redisReply *reply, void **data, size_t *len)
{
	void *buf = NULL;

	if (reply->len) {
		buf = malloc(reply->len);
		if (!buf)
			return -ENOMEM;
		memcpy(buf, reply->str, reply->len);
	}
	*data = buf;
	*len = reply->len;
	return 0;
}

/* ---- store ops ---- */

static void l2r_free(struct store *s)
{
	struct l2r *r = l2r_of(s);

	if (!r)
		return;
	pool_free(r->pool);
	if (r->password) {
		explicit_bzero(r->password, r->password_len);
		free(r->password);
	}
	free(r->user);
	free(r);
}

/* HGET of one @field of entry @ino: the reply in *out (caller frees), or
 * -ENOENT when the field is absent. */
static int l2r_hget(struct l2r *r, uint64_t ino, const char *field,
		    const char *what, redisReply **out)
{
	char key[L2R_PREFIX_MAX + 32];
	const char *argv[3] = {"HGET", key, field};
	size_t lens[3] = {4, 0, strlen(field)};
	redisReply *reply;
	int err;

	lens[1] = l2r_key(r, ino, key);
	err = l2r_command(r, 3, argv, lens,
			  L2R_T(REDIS_REPLY_STRING) | L2R_T(REDIS_REPLY_NIL),
			  &reply, what);
	if (err)
		return err;
	if (reply->type == REDIS_REPLY_NIL) {
		freeReplyObject(reply);
		return -ENOENT;
	}
	*out = reply;
	return 0;
}

static int l2r_get(struct store *s, uint64_t ino, struct store_row *out)
{
	struct l2r *r = l2r_of(s);
	redisReply *reply;
	int err = l2r_hget(r, ino, "m", "read an entry", &reply);

	if (err)
		return err;
	err = l2r_blob_decode(r, ino, reply->str, reply->len, out);
	freeReplyObject(reply);
	return err;
}

static int l2r_fetch(struct store *s, uint64_t ino, struct store_row *row,
		     void **data, size_t *len)
{
	struct l2r *r = l2r_of(s);
	char key[L2R_PREFIX_MAX + 32];
	const char *argv[4] = {"HMGET", key, "m", "d"};
	size_t lens[4] = {5, 0, 1, 1};
	const redisReply *m, *d;
	struct store_row tmp;
	redisReply *reply;
	int err;

	lens[1] = l2r_key(r, ino, key);
	err = l2r_command(r, 4, argv, lens, L2R_T(REDIS_REPLY_ARRAY), &reply,
			  "fetch an entry");
	if (err)
		return err;
	if (reply->elements != 2) {
		err = l2r_corrupt(r, ino, "HMGET answered a wrong count");
		goto out_free;
	}
	m = reply->element[0];
	d = reply->element[1];
	if (m->type == REDIS_REPLY_NIL || d->type == REDIS_REPLY_NIL) {
		err = -ENOENT;
		goto out_free;
	}
	if (m->type != REDIS_REPLY_STRING || d->type != REDIS_REPLY_STRING) {
		err = l2r_corrupt(r, ino, "HMGET answered a wrong type");
		goto out_free;
	}
	err = l2r_blob_decode(r, ino, m->str, m->len, &tmp);
	if (err)
		goto out_free;
	if (tmp.meta.size != d->len) {
		store_row_release(&tmp);
		err = l2r_corrupt(r, ino, "content length is not the size");
		goto out_free;
	}
	err = l2r_dup_data(d, data, len);
	if (err) {
		store_row_release(&tmp);
		goto out_free;
	}
	*row = tmp;
out_free:
	freeReplyObject(reply);
	return err;
}

static int l2r_read(struct store *s, uint64_t ino, void **data, size_t *len)
{
	redisReply *reply;
	int err = l2r_hget(l2r_of(s), ino, "d", "read content", &reply);

	if (err)
		return err;
	err = l2r_dup_data(reply, data, len);
	freeReplyObject(reply);
	return err;
}

/* Checks one change against the store.h contract; -EINVAL when it fails. */
static int l2r_check_change(const struct l2r *r, const struct store_change *ch)
{
	const char *why = store_change_problem(ch, UINT64_MAX);

	if (!why && !ch->deleted && ch->meta->state &&
	    strnlen(ch->meta->state, UINT32_MAX) >= UINT32_MAX)
		why = "state tag too long";
	else if (!why && !ch->deleted && ch->meta->xattrs &&
		 ch->meta->xattrs_len > UINT32_MAX)
		why = "xattrs too long";
	if (!why)
		return 0;
	eng_logf(&r->base.log, LOG_ERR,
		 "redis '%s': cannot apply change to inode %llu: %s", r->target,
		 (unsigned long long)ch->ino, why);
	return -EINVAL;
}

/* A growable buffer for one blob at a time. */
struct l2r_buf {
	uint8_t *p;
	size_t cap;
};

static int l2r_buf_reserve(struct l2r_buf *b, size_t n)
{
	uint8_t *p;

	if (n <= b->cap)
		return 0;
	p = realloc(b->p, n);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = n;
	return 0;
}

/* Appends the command of change @ch to @c's output buffer; *bytes gets the
 * length of its arguments. */
static int l2r_append(const struct l2r *r, struct l2r_conn *c,
		      const struct store_change *ch, struct l2r_buf *blob,
		      size_t *bytes)
{
	char key[L2R_PREFIX_MAX + 32], tkey[L2R_PREFIX_MAX + 32];
	const char *argv[6];
	size_t lens[6];
	size_t key_len = l2r_key(r, ch->ino, key);
	int argc, rc;

	*bytes = 0;
	if (ch->deleted) {
		argv[0] = "DEL";
		lens[0] = 3;
		argv[1] = key;
		lens[1] = key_len;
		argv[2] = tkey;
		lens[2] = l2r_tree_key(r, ch->ino, tkey);
		argc = 3;
	} else {
		size_t blob_len = l2r_blob_len(ch->name, ch->meta);

		if (l2r_buf_reserve(blob, blob_len))
			return -ENOMEM;
		l2r_blob_encode(ch->parent, ch->name, ch->meta, blob->p);
		if (ch->has_data) {
			argv[0] = "HSET";
			lens[0] = 4;
			argv[1] = key;
			lens[1] = key_len;
			argv[2] = "m";
			lens[2] = 1;
			argv[3] = (const char *)blob->p;
			lens[3] = blob_len;
			argv[4] = "d";
			lens[4] = 1;
			/* never a NULL pointer, even for no bytes */
			argv[5] = ch->len ? (const char *)ch->data : "";
			lens[5] = ch->len;
			argc = 6;
		} else {
			argv[0] = "EVAL";
			lens[0] = 4;
			argv[1] = l2r_meta_script;
			lens[1] = sizeof(l2r_meta_script) - 1;
			argv[2] = "1";
			lens[2] = 1;
			argv[3] = key;
			lens[3] = key_len;
			argv[4] = (const char *)blob->p;
			lens[4] = blob_len;
			argc = 5;
		}
	}
	for (int i = 0; i < argc; i++)
		*bytes += lens[i];
	rc = redisAppendCommandArgv(c->ctx, argc, argv, lens);
	if (rc != REDIS_OK)
		return l2r_errno(r, c, NULL, "queue a change");
	return 0;
}

/*
 * Sends @n changes down @c as one pipeline (see the top of the file) and
 * reads every reply. Returns the first error; a context error stops at
 * once (the context is then broken and freed by the caller).
 */
static int l2r_pipeline(const struct l2r *r, struct l2r_conn *c,
			const void *items, size_t n)
{
	const struct store_change *changes = items;
	struct l2r_buf blob = {NULL, 0};
	size_t next = 0, queued = 0, nread = 0, bytes = 0, nfailed = 0;
	int first = 0, err = 0;

	while (next < n || nread < queued) {
		/* Queue changes until a chunk's worth of content. */
		while (next < n && bytes < L2R_CHUNK_BYTES) {
			const struct store_change *ch = &changes[next++];
			size_t b;

			/* a directory's metadata: nothing of it is cached
			 * (the script would only delete an absent key) */
			if (!ch->deleted && !ch->has_data &&
			    ch->meta->kind == ITEM_DIR)
				continue;
			err = l2r_append(r, c, ch, &blob, &b);
			if (err) {
				c->broken = true; /* a half-queued pipeline */
				goto out;
			}
			queued++;
			bytes += b;
		}
		/* Read the replies of what is queued (this sends it). */
		for (; nread < queued; nread++) {
			void *v = NULL;
			redisReply *reply;

			if (redisGetReply(c->ctx, &v) != REDIS_OK) {
				err = l2r_errno(r, c, NULL, "write a batch");
				goto out;
			}
			reply = v;
			if (reply->type != REDIS_REPLY_INTEGER) {
				nfailed++;
				if (!first)
					first = l2r_errno(r, c, reply,
							  "write a batch");
			}
			freeReplyObject(reply);
		}
		bytes = 0;
	}
	if (nfailed > 1)
		eng_logf(&r->base.log, LOG_ERR,
			 "redis '%s': %zu of %zu changes of a batch failed",
			 r->target, nfailed, n);
	err = first;
out:
	free(blob.p);
	return err;
}

/* A pipeline of @n @items sent and answered on one context by @fn. */
typedef int (*l2r_pipe_fn)(const struct l2r *r, struct l2r_conn *c,
			   const void *items, size_t n);

/*
 * Runs @fn on a pooled context, once more on a new one when the pooled one
 * had gone stale (l2r_again): the pipelines write final states, so they
 * are safe to repeat. Returns @fn's result.
 */
static int l2r_pipelined(struct l2r *r, l2r_pipe_fn fn, const void *items,
			 size_t n)
{
	struct l2r_nopipe np;
	bool fresh = false;
	struct l2r_conn *c;
	int err;

	l2r_nopipe_begin(&np);
	for (;;) {
		bool again;

		err = l2r_conn_get(r, fresh, &c);
		if (err)
			break;
		err = fn(r, c, items, n);
		again = err && l2r_again(c, fresh, err);
		l2r_conn_put(r, c);
		if (!again)
			break;
		fresh = true;
	}
	l2r_nopipe_end(&np);
	return err;
}

static int l2r_apply(struct store *s, const struct store_change *changes,
		     size_t n, struct store_dirhash **tree, size_t *ntree)
{
	struct l2r *r = l2r_of(s);
	int err;

	store_tree_none(tree, ntree);

	for (size_t i = 0; i < n; i++) {
		err = l2r_check_change(r, &changes[i]);
		if (err)
			return err;
	}
	if (n == 0)
		return 0;

	return l2r_pipelined(r, l2r_pipeline, changes, n);
}

static int l2r_hex(int ch);

/* Sends SET P t:INO HEX for each of @n hashes down @c and reads every
 * reply; returns the first error. */
static int l2r_tree_pipeline(const struct l2r *r, struct l2r_conn *c,
			     const void *items, size_t n)
{
	const struct store_dirhash *dirs = items;
	int first = 0;

	for (size_t i = 0; i < n; i++) {
		char key[L2R_PREFIX_MAX + 32], hex[2 * ITEM_HASH_LEN + 1];
		const char *argv[3] = {"SET", key, hex};
		size_t lens[3] = {3, 0, 2 * ITEM_HASH_LEN};

		lens[1] = l2r_tree_key(r, dirs[i].ino, key);
		item_hash_hex(dirs[i].merkle, hex);
		if (redisAppendCommandArgv(c->ctx, 3, argv, lens) != REDIS_OK) {
			c->broken = true; /* a half-queued pipeline */
			return l2r_errno(r, c, NULL, "queue a tree hash");
		}
	}
	for (size_t i = 0; i < n; i++) {
		void *v = NULL;
		redisReply *reply;

		if (redisGetReply(c->ctx, &v) != REDIS_OK)
			return l2r_errno(r, c, NULL, "write tree hashes");
		reply = v;
		if (reply->type != REDIS_REPLY_STATUS && !first)
			first = l2r_errno(r, c, reply, "write tree hashes");
		freeReplyObject(reply);
	}
	return first;
}

static int l2r_put_tree(struct store *s, const struct store_dirhash *dirs,
			size_t n)
{
	if (n == 0)
		return 0;
	return l2r_pipelined(l2r_of(s), l2r_tree_pipeline, dirs, n);
}

/* Reads the mirrored hash of directory @ino: -ENOENT when there is none,
 * -EBADMSG (logged) when the value is not 64 hex digits. */
static int l2r_get_tree(struct store *s, uint64_t ino,
			uint8_t out[ITEM_HASH_LEN])
{
	struct l2r *r = l2r_of(s);
	char key[L2R_PREFIX_MAX + 32];
	const char *argv[2] = {"GET", key};
	size_t lens[2] = {3, 0};
	redisReply *reply;
	int err;

	lens[1] = l2r_tree_key(r, ino, key);
	err = l2r_command(r, 2, argv, lens,
			  L2R_T(REDIS_REPLY_STRING) | L2R_T(REDIS_REPLY_NIL),
			  &reply, "read a tree hash");
	if (err)
		return err;
	if (reply->type == REDIS_REPLY_NIL) {
		err = -ENOENT;
	} else if (reply->len != 2 * ITEM_HASH_LEN) {
		err = -EBADMSG;
	} else {
		for (int i = 0; i < ITEM_HASH_LEN && !err; i++) {
			int hi = l2r_hex(reply->str[2 * i]);
			int lo = l2r_hex(reply->str[2 * i + 1]);

			if (hi < 0 || lo < 0)
				err = -EBADMSG;
			else
				out[i] = (uint8_t)(hi << 4 | lo);
		}
	}
	if (err == -EBADMSG)
		eng_logf(&r->base.log, LOG_WARNING,
			 "redis '%s': tree hash of directory %llu is not a "
			 "hash",
			 r->target, (unsigned long long)ino);
	freeReplyObject(reply);
	return err;
}

/* Writes into @buf (room for 2 * L2R_PREFIX_MAX + 8) the SCAN pattern of
 * every "e:" and "t:" key: the prefix, its glob characters escaped, then
 * "[et]:*". Returns its length. */
static size_t l2r_match(const struct l2r *r, char *buf)
{
	char *p = buf;

	for (const char *q = r->prefix; *q; q++) {
		if (strchr("*?[]\\", *q))
			*p++ = '\\';
		*p++ = *q;
	}
	memcpy(p, "[et]:*", 7);
	return (size_t)(p - buf) + 6;
}

/* Parses key @k as P "e:" INO or P "t:" INO; false for anything else. */
static bool l2r_parse_key(const struct l2r *r, const redisReply *k,
			  uint64_t *ino, bool *tree)
{
	size_t plen = strlen(r->prefix);
	uint64_t v = 0;

	if (k->type != REDIS_REPLY_STRING || k->len <= plen + 2 ||
	    k->len > plen + 22 || memcmp(k->str, r->prefix, plen) != 0 ||
	    (k->str[plen] != 'e' && k->str[plen] != 't') ||
	    k->str[plen + 1] != ':')
		return false;
	for (size_t i = plen + 2; i < k->len; i++) {
		if (k->str[i] < '0' || k->str[i] > '9' ||
		    v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(k->str[i] - '0');
	}
	if (v == 0)
		return false;
	*ino = v;
	*tree = k->str[plen] == 't';
	return true;
}

static int l2r_each_cached(struct store *s,
			   int (*fn)(void *arg, uint64_t ino, bool tree),
			   void *arg)
{
	struct l2r *r = l2r_of(s);
	char pattern[2 * L2R_PREFIX_MAX + 8], cursor[32] = "0";
	const char *argv[6] = {"SCAN", cursor, "MATCH", pattern, "COUNT",
			       "1000"};
	size_t lens[6] = {4, 1, 5, 0, 5, 4};
	int err = 0;

	lens[3] = l2r_match(r, pattern);
	do {
		const redisReply *next, *keys;
		redisReply *reply;

		lens[1] = strlen(cursor);
		err = l2r_command(r, 6, argv, lens, L2R_T(REDIS_REPLY_ARRAY),
				  &reply, "list keys");
		if (err)
			return err;
		next = reply->elements == 2 ? reply->element[0] : NULL;
		keys = reply->elements == 2 ? reply->element[1] : NULL;
		if (!next || next->type != REDIS_REPLY_STRING ||
		    next->len >= sizeof(cursor) ||
		    keys->type != REDIS_REPLY_ARRAY) {
			freeReplyObject(reply);
			eng_logf(&r->base.log, LOG_ERR,
				 "redis '%s': SCAN answered in a wrong shape",
				 r->target);
			return -EIO;
		}
		memcpy(cursor, next->str, next->len);
		cursor[next->len] = '\0';
		for (size_t i = 0; i < keys->elements && !err; i++) {
			uint64_t ino;
			bool tree;

			if (l2r_parse_key(r, keys->element[i], &ino, &tree))
				err = fn(arg, ino, tree);
		}
		freeReplyObject(reply);
	} while (!err && strcmp(cursor, "0") != 0);
	return err;
}

static int l2r_drop_cached(struct store *s, uint64_t ino, bool tree)
{
	struct l2r *r = l2r_of(s);
	char key[L2R_PREFIX_MAX + 32];
	const char *argv[2] = {"DEL", key};
	size_t lens[2] = {3, 0};
	redisReply *reply;
	int err;

	lens[1] = tree ? l2r_tree_key(r, ino, key) : l2r_key(r, ino, key);
	err = l2r_command(r, 2, argv, lens, L2R_T(REDIS_REPLY_INTEGER), &reply,
			  "delete a key");
	if (!err)
		freeReplyObject(reply);
	return err;
}

static int l2r_lookup(struct store *s, uint64_t parent, const char *name,
		      struct store_row *out)
{
	return -ENOTSUP;
}

static int l2r_list(struct store *s, uint64_t parent, const char *after,
		    struct store_row *rows, size_t limit)
{
	return -ENOTSUP;
}

static int l2r_has_children(struct store *s, uint64_t parent)
{
	return -ENOTSUP;
}

static int l2r_alloc_ino(struct store *s, uint64_t count, uint64_t *first)
{
	return -ENOTSUP;
}

static int l2r_stats(struct store *s, uint64_t *entries, uint64_t *bytes)
{
	return -ENOTSUP;
}

static const struct store_ops l2r_ops = {
	.name = "redis",
	.free = l2r_free,
	.get = l2r_get,
	.lookup = l2r_lookup,
	.list = l2r_list,
	.read = l2r_read,
	.has_children = l2r_has_children,
	.alloc_ino = l2r_alloc_ino,
	.apply = l2r_apply,
	.stats = l2r_stats,
	.fetch = l2r_fetch,
	.put_tree = l2r_put_tree,
	.get_tree = l2r_get_tree,
	.each_cached = l2r_each_cached,
	.drop_cached = l2r_drop_cached,
};

/* ---- opening ---- */

static int l2r_hex(int ch)
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
static int l2r_parse_url(struct l2r *r, const char *url, const char **why)
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
static int l2r_check_server(const struct l2r *r, struct l2r_conn *c)
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

int l2_redis_open(const char *url, const char *prefix,
		  const struct eng_log *log, struct store **out)
{
	struct l2r_conn *c = NULL;
	struct l2r_nopipe np;
	const char *why;
	struct l2r *r;
	int err;

	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->base.ops = &l2r_ops;
	if (log)
		r->base.log = *log;
	if (!prefix)
		prefix = "";
	if (strlen(prefix) > L2R_PREFIX_MAX) {
		eng_logf(&r->base.log, LOG_ERR,
			 "redis: cannot open: key prefix longer than %d bytes",
			 L2R_PREFIX_MAX);
		err = -EINVAL;
		goto out_free;
	}
	strcpy(r->prefix, prefix);
	err = l2r_parse_url(r, url, &why);
	if (err) {
		if (why)
			eng_logf(&r->base.log, LOG_ERR,
				 "redis: cannot parse the URL: %s", why);
		goto out_free;
	}

	err = pool_new(&l2r_pool_ops, r, L2R_POOL_MAX, L2R_POOL_WAIT_S * 1000,
		       &r->pool);
	if (err)
		goto out_free;

	/* The first context checks the server, then joins the pool. */
	l2r_nopipe_begin(&np);
	err = l2r_conn_open(r, &c);
	if (!err)
		err = l2r_check_server(r, c);
	l2r_nopipe_end(&np);
	if (!err)
		err = pool_adopt(r->pool, &c->pool);
	if (err) {
		l2r_conn_close(c);
		goto out_free;
	}
	l2r_conn_put(r, c);
	eng_logf(&r->base.log, LOG_INFO, "redis '%s': connected", r->target);
	*out = &r->base;
	return 0;

out_free:
	l2r_free(&r->base);
	return err;
}
