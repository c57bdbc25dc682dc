/*
 * l2_redis_int.h - what the pieces of the Redis L2 cache share (the list of
 * them is at the top of l2_redis.c): its limits, the cache and connection
 * structs, and the functions one piece calls in another. Private to
 * l2_redis*.c: the engine sees only l2_redis.h.
 */
#ifndef TIERFS_L2_REDIS_INT_H
#define TIERFS_L2_REDIS_INT_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "l2_redis.h"
#include "pool.h"
#include "store_conn.h"
#include "store_row.h"

#define L2R_POOL_MAX 4
#define L2R_POOL_WAIT_S 10 /* how long a thread waits for a context */
#define L2R_RUNS 2	   /* runs of one operation: store_run() */
#define L2R_TIMEOUT_S 1	   /* connect, and each command's socket I/O */
#define L2R_DEFAULT_PORT 6379
#define L2R_PREFIX_MAX 256 /* bytes of key prefix */
#define L2R_HOST_MAX 255
#define L2R_CHUNK_BYTES (8u << 20) /* queued before reading replies */
#define L2R_ERRMSG_MAX 200	   /* bytes of a server message we log */

#define L2R_FORMAT 2
#define L2R_OFF_KIND 41 /* bytes before it: format, size, hash */
#define L2R_HDR_LEN 97	/* fixed part, up to and including the name length */
#define L2R_FLAG_EXPLICIT 0x01
#define L2R_FLAG_STATE 0x02

struct l2r_conn {
	struct pool_conn pool; /* first; .reused: it had waited idle */
	redisContext *ctx;
	bool broken; /* an error: free it, never reuse it */
};

struct l2r {
	struct cache base;	     /* first: the engine sees only this */
	struct store_backend sb;     /* for store_row.h: "redis", target */
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

static inline struct l2r *l2r_of(struct cache *c)
{
	return (struct l2r *)c;
}

/* A mask of reply types, for l2r_command() and its kin. */
#define L2R_T(type) (1u << (type))

/* ---- l2_redis_conn.c ---- */

struct l2r_nopipe {
	sigset_t old;	  /* the thread's mask before */
	bool was_pending; /* a SIGPIPE was pending before: not ours */
};

extern const struct pool_ops l2r_pool_ops;

/* Maps a hiredis or Redis failure to a negative errno, marks @c broken
 * when it must not be used again, and logs with @what (see
 * l2_redis_conn.c). */
int l2r_errno(const struct l2r *r, struct l2r_conn *c, const redisReply *reply,
	      const char *what);
/* Blocks SIGPIPE in the calling thread until l2r_nopipe_end(). */
void l2r_nopipe_begin(struct l2r_nopipe *np);
/* Discards a SIGPIPE that our writes raised, then restores the mask. */
void l2r_nopipe_end(const struct l2r_nopipe *np);
void l2r_conn_close(struct l2r_conn *c);
/* Connects a new context: timeouts, keepalive, AUTH and SELECT. */
int l2r_conn_open(const struct l2r *r, struct l2r_conn **out);
/* Gives @c back, or frees it when it failed. */
void l2r_conn_put(struct l2r *r, struct l2r_conn *c);
/* Runs one command on a pooled context, once more on a new context when
 * the pooled one had gone stale (store_run()). On success returns 0 with
 * the reply, of a type in @types, in *out (the caller frees it with
 * freeReplyObject()). */
int l2r_command(struct l2r *r, int argc, const char **argv, const size_t *lens,
		unsigned int types, redisReply **out, const char *what);

/* A pipeline of @n @items sent and answered on one context by @fn. */
typedef int (*l2r_pipe_fn)(const struct l2r *r, struct l2r_conn *c,
			   const void *items, size_t n);

/* Runs @fn on a pooled context, once more on a new one like l2r_command():
 * the pipelines write final states, so they are safe to repeat. Returns
 * @fn's result. */
int l2r_pipelined(struct l2r *r, l2r_pipe_fn fn, const void *items, size_t n);
/* The value of hex digit @ch, or -1. */
int l2r_hex(int ch);
/* Parses @url into @r (see l2_redis_conn.c); -EINVAL with *why. */
int l2r_parse_url(struct l2r *r, const char *url, const char **why);
/* PINGs on a new context and warns when the server evicts keys. */
int l2r_check_server(const struct l2r *r, struct l2r_conn *c);

/* ---- l2_redis_keys.c ---- */

/* Writes P "e:" INO into @buf (room for L2R_PREFIX_MAX + 32) and returns
 * its length. */
size_t l2r_key(const struct l2r *r, uint64_t ino, char *buf);
/* Writes P "t:" INO, a directory's mirrored Merkle hash, like l2r_key. */
size_t l2r_tree_key(const struct l2r *r, uint64_t ino, char *buf);
/* The length of the blob of @name and @m. */
size_t l2r_blob_len(const char *name, const struct item_meta *m);
/* Encodes the blob of an entry into @buf, which has room for
 * l2r_blob_len() bytes. */
void l2r_blob_encode(uint64_t parent, const char *name,
		     const struct item_meta *m, uint8_t *buf);
/* Decodes the blob of entry @ino into @out: 0, -ENOENT (another format),
 * -EUCLEAN (corrupt, logged and counted) or -ENOMEM. */
int l2r_blob_decode(const struct l2r *r, uint64_t ino, const void *blob,
		    size_t len, struct store_row *out);
/* Writes into @buf (room for 2 * L2R_PREFIX_MAX + 8) the SCAN pattern of
 * every "e:" and "t:" key; returns its length. */
size_t l2r_match(const struct l2r *r, char *buf);
/* Parses key @k as P "e:" INO or P "t:" INO; false for anything else. */
bool l2r_parse_key(const struct l2r *r, const redisReply *k, uint64_t *ino,
		   bool *tree);

#endif
