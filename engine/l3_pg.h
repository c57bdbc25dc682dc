/*
 * l3_pg.h - the PostgreSQL L3 store (libpq).
 *
 * The ground truth when --postgres is given; several mounts on several hosts
 * may share one database. The schema, its migrations, the connection pool and
 * the statements are described at the top of l3_pg.c.
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
 * Returns 0, or -EINVAL (bad conninfo, or a schema from a newer version),
 * -EACCES (authentication or permission refused), -EAGAIN (the server is
 * unreachable), -EIO, -ENOMEM; the reason goes to @log without the
 * password. Blocks.
 */
int l3_pg_open(const char *conninfo, const struct eng_log *log,
	       struct store **out);

#endif
