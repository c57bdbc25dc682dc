/*
 * l2_redis.h - L2: a Redis cache of item metadata and content (hiredis).
 *
 * Implements the cache of cache.h: every op of struct cache_ops. The key
 * layout, the connection pool and the failure rules are described at the
 * top of l2_redis.c.
 *
 * Thread-safety: the returned cache may be used from any number of
 * threads.
 */
#ifndef TIERFS_L2_REDIS_H
#define TIERFS_L2_REDIS_H

#include "cache.h"

/*
 * Parses @url (redis://[:password@]host:port[/db]) and connects to it. Keys
 * live under @prefix (e.g. "tierfs:"). Returns 0 and *out, or -EINVAL (bad
 * URL, a prefix that is too long, or a database index the server does not
 * have), -EACCES (AUTH refused), -EAGAIN (unreachable or busy), -EIO (any
 * other error), -ENOMEM; the reason goes to @log without the password.
 * Blocks: each step (connect, AUTH, SELECT, PING, CONFIG GET) waits at most
 * the command timeout.
 */
int l2_redis_open(const char *url, const char *prefix,
		  const struct eng_log *log, struct cache **out);

#endif
