/*
 * store_open.c - opening the stores a configuration names: L3 (PostgreSQL
 * when a conninfo is given, else the SQLite file) and, when a Redis URL is
 * given, the L2 cache. The mount, `tierfs verify` and the library all open
 * their stores here, so they agree on what a set of options means.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "l2_redis.h"
#include "l3_pg.h"
#include "l3_sqlite.h"
#include "store.h"

int store_open(const struct store_config *c, const struct eng_log *log,
	       struct store **l3, struct cache **l2)
{
	struct store *s3 = NULL;
	struct cache *s2 = NULL;
	int r;

	if (!c->postgres && !c->sqlite_path)
		return -EINVAL;
	if (!c->postgres && c->must_exist && access(c->sqlite_path, F_OK) < 0) {
		r = -errno;
		eng_logf(log, LOG_ERR, "cannot open '%s': %s", c->sqlite_path,
			 strerror(errno));
		return r;
	}
	if (c->postgres)
		r = l3_pg_open(c->postgres, log, &s3);
	else
		r = l3_sqlite_open(c->sqlite_path, log, &s3);
	if (r < 0)
		return r;
	if (c->feed_keep_seconds)
		s3->feed_keep_seconds = c->feed_keep_seconds;
	if (c->feed_keep_records)
		s3->feed_keep_records = c->feed_keep_records;
	if (c->redis) {
		r = l2_redis_open(c->redis,
				  c->redis_prefix ? c->redis_prefix
						  : STORE_REDIS_PREFIX,
				  log, &s2);
		if (r == -EAGAIN && c->redis_optional) {
			eng_logf(log, LOG_WARNING,
				 "redis is unreachable: going on without L2 "
				 "(remount to use it)");
			r = 0;
		}
		if (r < 0) {
			store_free(s3);
			return r;
		}
	}
	*l3 = s3;
	*l2 = s2;
	return 0;
}
