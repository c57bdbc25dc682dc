/*
 * l3_pg.h - the PostgreSQL L3 store (libpq).
 *
 * The ground truth when --postgres is given. Many writers on many hosts
 * share one database (store.h, "Sharing"; docs/design.md §7): disjoint
 * inode ranges, races settled at commit, the change feed with NOTIFY. The
 * schema, its migrations, the connection pool and the statements are
 * described at the top of l3_pg.c, the feed in l3_pg_feed.c.
 *
 * Thread-safety: the returned store may be used from any number of threads.
 */
#ifndef TIERFS_L3_PG_H
#define TIERFS_L3_PG_H

#include "store.h"

/*
 * Connects to @conninfo (a libpq URI or key=value string; libpq's PG*
 * environment variables and ~/.pgpass apply as usual), creates or migrates
 * the schema and the root directory, and returns the store in *out.
 * Returns 0, or -EINVAL (bad conninfo, a schema from a newer version, or
 * tables of the same names that are not tierfs's),
 * -EACCES (authentication or permission refused), -EAGAIN (the server is
 * unreachable), -EIO, -ENOMEM; the reason goes to @log without the
 * password. Blocks.
 */
int l3_pg_open(const char *conninfo, const struct eng_log *log,
	       struct store **out);

#endif
