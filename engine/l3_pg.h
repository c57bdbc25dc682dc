/*
 * l3_pg.h - the PostgreSQL L3 store (libpq).
 *
 * The ground truth when --postgres is given. The store itself is safe to
 * share between processes and hosts (disjoint inode ranges, batches that
 * behave as if run one after another), but the engine does not yet tell a
 * mount about another's changes, so several mounts on one database are not
 * supported (docs/design.md §7). The schema, its migrations, the connection
 * pool and the statements are described at the top of l3_pg.c.
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
