/*
 * l2_redis.h - L2: a Redis cache of item metadata and content (hiredis).
 *
 * Implements struct store_ops as a cache tier (see store.h): get, fetch and
 * apply. The key layout, the connection pool and the failure rules are
 * described at the top of l2_redis.c.
 *
 * Thread-safety: the returned store may be used from any number of threads.
 */
#ifndef TIERFS_L2_REDIS_H
#define TIERFS_L2_REDIS_H

#include "store.h"

/*
 * Parses @url (redis://[:password@]host:port[/db]) and connects to it. Keys
 * live under @prefix (e.g. "tierfs:"). Returns 0 and *out, or -EINVAL (bad
 * URL), -EACCES (AUTH refused), -EAGAIN (unreachable), -ENOMEM; the reason
 * goes to @log without the password. Blocks at most the connect timeout.
 */
int l2_redis_open(const char *url, const char *prefix,
		  const struct eng_log *log, struct store **out);

#endif
