/*
 * l2_redis.c - L2: a Redis cache of entry metadata and content (hiredis).
 *
 * The cache of cache.h: get, fetch, apply, put_tree, get_tree, each_cached
 * and drop_cached. Redis may lose an entry or hold a stale one at any time
 * (eviction, a restart, a write that failed, another mount's older write
 * landing last): callers compare versions with L3, which is the truth. Written
 * for hiredis 0.14 (blocking API, no TLS) and Redis 4.0 or newer (HSET with
 * several fields).
 *
 * The cache is in several files (l2_redis_int.h declares what they share):
 *
 *     l2_redis.c       the cache ops, and opening
 *     l2_redis_keys.c  the key layout and the metadata blob
 *     l2_redis_conn.c  the URL, connections, their pool, failures as errno
 *                      values
 *
 * Each opens with what it implements. What it shares with the other stores
 * is in store_row.c (the checks of rows read back and of changes) and
 * store_conn.c (with l3_pg: when an operation runs again).
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
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "l2_redis_int.h"

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

/* ---- cache ops ---- */

static void l2r_free(struct cache *c)
{
	struct l2r *r = l2r_of(c);

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

static int l2r_get(struct cache *c, uint64_t ino, struct store_row *out)
{
	struct l2r *r = l2r_of(c);
	redisReply *reply;
	int err = l2r_hget(r, ino, "m", "read an entry", &reply);

	if (err)
		return err;
	err = l2r_blob_decode(r, ino, reply->str, reply->len, out);
	freeReplyObject(reply);
	return err;
}

/* Decodes @reply, HMGET's answer of entry @ino's "m" and "d", into *row
 * and a new copy of the content. -ENOENT, -EUCLEAN, -ENOMEM. */
static int l2r_fetch_reply(const struct l2r *r, uint64_t ino,
			   const redisReply *reply, struct store_row *row,
			   void **data, size_t *len)
{
	const redisReply *m, *d;
	struct store_row tmp;
	int err;

	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
		return store_corrupt(&r->sb, ino,
				     "HMGET answered a wrong count");
	}
	m = reply->element[0];
	d = reply->element[1];
	if (m->type == REDIS_REPLY_NIL || d->type == REDIS_REPLY_NIL)
		return -ENOENT;
	if (m->type != REDIS_REPLY_STRING || d->type != REDIS_REPLY_STRING)
		return store_corrupt(&r->sb, ino,
				     "HMGET answered a wrong type");
	err = l2r_blob_decode(r, ino, m->str, m->len, &tmp);
	if (err)
		return err;
	if (tmp.meta.size != d->len) {
		store_row_release(&tmp);
		return store_corrupt(&r->sb, ino,
				     "content length is not the size");
	}
	err = store_data_dup(d->str, d->len, data, len);
	if (err) {
		store_row_release(&tmp);
		return err;
	}
	*row = tmp;
	return 0;
}

static int l2r_fetch(struct cache *c, uint64_t ino, struct store_row *row,
		     void **data, size_t *len)
{
	struct l2r *r = l2r_of(c);
	char key[L2R_PREFIX_MAX + 32];
	const char *argv[4] = {"HMGET", key, "m", "d"};
	size_t lens[4] = {5, 0, 1, 1};
	redisReply *reply;
	int err;

	lens[1] = l2r_key(r, ino, key);
	err = l2r_command(r, 4, argv, lens, L2R_T(REDIS_REPLY_ARRAY), &reply,
			  "fetch an entry");
	if (err)
		return err;
	err = l2r_fetch_reply(r, ino, reply, row, data, len);
	freeReplyObject(reply);
	return err;
}

/* What fetch_many() asks of its pipeline. */
struct l2r_fetches {
	const uint64_t *inos;
	struct store_row *rows;
	struct store_blob *out;
	size_t n;
};

/* Forgets what a pipeline filled of @f (run again on a new context). */
static void l2r_fetches_clear(struct l2r_fetches *f, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (f->out[i].ino) {
			store_row_release(&f->rows[i]);
			free(f->out[i].data);
		}
		memset(&f->out[i], 0, sizeof(f->out[i]));
	}
}

/* One HMGET per ino, queued together, then their replies in order. */
static int l2r_fetch_pipeline(const struct l2r *r, struct l2r_conn *c,
			      const void *items, size_t n)
{
	/* the outputs travel in the (const) items of l2r_pipelined() */
	struct l2r_fetches *f = (struct l2r_fetches *)items;
	size_t nfetch = f->n, found = 0;

	(void)n;
	l2r_fetches_clear(f, nfetch);
	for (size_t i = 0; i < nfetch; i++) {
		char key[L2R_PREFIX_MAX + 32];
		const char *argv[4] = {"HMGET", key, "m", "d"};
		size_t lens[4] = {5, 0, 1, 1};

		lens[1] = l2r_key(r, f->inos[i], key);
		if (redisAppendCommandArgv(c->ctx, 4, argv, lens) != REDIS_OK) {
			c->broken = true; /* a half-queued pipeline */
			return l2r_errno(r, c, NULL, "queue a fetch");
		}
	}
	for (size_t i = 0; i < nfetch; i++) {
		void *v = NULL;
		int err;

		if (redisGetReply(c->ctx, &v) != REDIS_OK) {
			l2r_fetches_clear(f, nfetch);
			return l2r_errno(r, c, NULL, "fetch entries");
		}
		err = l2r_fetch_reply(r, f->inos[i], v, &f->rows[i],
				      &f->out[i].data, &f->out[i].len);
		freeReplyObject(v);
		if (err == -ENOMEM) {
			l2r_fetches_clear(f, nfetch);
			c->broken = true; /* replies left unread */
			return err;
		}
		if (err == 0) {
			f->out[i].ino = f->inos[i];
			found++;
		} else {
			f->out[i].len = 0;
		}
	}
	return (int)found;
}

static int l2r_fetch_many(struct cache *c, const uint64_t *inos, size_t n,
			  struct store_row *rows, struct store_blob *out)
{
	struct l2r_fetches f = {inos, rows, out, n};

	if (n > STORE_READ_MANY_MAX)
		return -EINVAL;
	if (n == 0)
		return 0;
	memset(out, 0, n * sizeof(*out));
	return l2r_pipelined(l2r_of(c), l2r_fetch_pipeline, &f, 1);
}

/* What a change may not hold here, beyond the store.h contract (see
 * store_check_changes()): the blob's lengths are 32 bits. */
static const char *l2r_limits(const struct change *ch)
{
	if (ch->meta.state && strnlen(ch->meta.state, UINT32_MAX) >= UINT32_MAX)
		return "state tag too long";
	if (ch->meta.xattrs && ch->meta.xattrs_len > UINT32_MAX)
		return "xattrs too long";
	return NULL;
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
		      const struct change *ch, struct l2r_buf *blob,
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
		size_t blob_len = l2r_blob_len(ch->name, &ch->meta);

		if (l2r_buf_reserve(blob, blob_len))
			return -ENOMEM;
		l2r_blob_encode(ch->parent, ch->name, &ch->meta, blob->p);
		if (ch->item) {
			size_t len = item_size(ch->item);

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
			argv[5] = len ? (const char *)item_data(ch->item) : "";
			lens[5] = len;
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
	struct change *const *changes = items;
	struct l2r_buf blob = {NULL, 0};
	size_t next = 0, queued = 0, nread = 0, bytes = 0, nfailed = 0;
	int first = 0, err = 0;

	while (next < n || nread < queued) {
		/* Queue changes until a chunk's worth of content. */
		while (next < n && bytes < L2R_CHUNK_BYTES) {
			const struct change *ch = changes[next++];
			size_t b;

			/* a directory's metadata: nothing of it is cached
			 * (the script would only delete an absent key) */
			if (!ch->deleted && !ch->item &&
			    ch->meta.kind == ITEM_DIR)
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

static int l2r_apply(struct cache *c, struct change *const *changes, size_t n)
{
	struct l2r *r = l2r_of(c);
	int err;

	err = store_check_changes(&r->sb, changes, n, l2r_limits);
	if (err || n == 0)
		return err;

	return l2r_pipelined(r, l2r_pipeline, changes, n);
}

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

static int l2r_put_tree(struct cache *c, const struct store_dirhash *dirs,
			size_t n)
{
	if (n == 0)
		return 0;
	return l2r_pipelined(l2r_of(c), l2r_tree_pipeline, dirs, n);
}

/* Reads the mirrored hash of directory @ino: -ENOENT when there is none,
 * -EBADMSG (logged) when the value is not 64 hex digits. */
static int l2r_get_tree(struct cache *c, uint64_t ino,
			uint8_t out[ITEM_HASH_LEN])
{
	struct l2r *r = l2r_of(c);
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

static int l2r_each_cached(struct cache *c,
			   int (*fn)(void *arg, uint64_t ino, bool tree),
			   void *arg)
{
	struct l2r *r = l2r_of(c);
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

static int l2r_drop_cached(struct cache *c, uint64_t ino, bool tree)
{
	struct l2r *r = l2r_of(c);
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

static const struct cache_ops l2r_ops = {
	.name = "redis",
	.free = l2r_free,
	.get = l2r_get,
	.fetch = l2r_fetch,
	.fetch_many = l2r_fetch_many,
	.apply = l2r_apply,
	.put_tree = l2r_put_tree,
	.get_tree = l2r_get_tree,
	.each_cached = l2r_each_cached,
	.drop_cached = l2r_drop_cached,
};

int l2_redis_open(const char *url, const char *prefix,
		  const struct eng_log *log, struct cache **out)
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
	r->sb = (struct store_backend){.log = &r->base.log,
				       .name = "redis",
				       .target = r->target,
				       .max_ino = UINT64_MAX,
				       .cache = true,
				       .corrupt = &r->base.corrupt};
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
