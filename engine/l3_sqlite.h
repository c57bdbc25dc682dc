/*
 * l3_sqlite.h - the embedded L3 store: one SQLite file.
 *
 * The default ground truth when no PostgreSQL is configured. The schema, the
 * journal mode and the connection discipline are described at the top of
 * l3_sqlite.c.
 *
 * Thread-safety: the returned store may be used from any number of threads.
 */
#ifndef TIERFS_L3_SQLITE_H
#define TIERFS_L3_SQLITE_H

#include "store.h"

/*
 * Opens (creating when absent, with its schema and root directory) the SQLite
 * database at @path and returns it as a store in *out. The parent directory
 * of @path must exist. Returns 0, or -EINVAL (not a tierfs database, or a
 * schema from a newer version), -EACCES, -ENOENT, -EAGAIN (another process
 * held the file's write lock past the busy timeout), -EIO, -ENOMEM; the
 * reason goes to @log. Blocks.
 */
int l3_sqlite_open(const char *path, const struct eng_log *log,
		   struct store **out);

#endif
