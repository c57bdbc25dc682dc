/*
 * store_sql.h - what the two L3 stores, SQLite (l3_sqlite*.c) and
 * PostgreSQL (l3_pg*.c), share beyond store_row.h: an entry's row as the
 * columns of their entries table, the root directory and the meta rows
 * they create, the check of those meta rows, and the ranges of their ops'
 * arguments.
 *
 * Both keep inode numbers in signed 64-bit columns: STORE_SQL_MAX_INO is
 * the largest. Their entries table has the columns of struct store_cols
 * (store_row.h) and, per the store.h contract, a unique (parent, stem) index
 * where stem is NULL for a directory; a zero hash, an absent or empty state
 * tag and no xattrs are NULL. Their meta rows are 'format' = STORE_SQL_FORMAT
 * (the database is ours), 'schema_version' (1 or more; each store refuses
 * one newer than it reads) and 'next_ino' (STORE_SQL_FIRST_INO at first:
 * the root is 1).
 *
 * Thread-safety: every function here is reentrant.
 */
#ifndef TIERFS_STORE_SQL_H
#define TIERFS_STORE_SQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "store_row.h"

#define STORE_SQL_MAX_INO ((uint64_t)INT64_MAX)
#define STORE_SQL_FORMAT "tierfs"
#define STORE_SQL_FIRST_INO 2

/* The columns every row query of the L3 stores returns, in the order of
 * enum store_sql_col, which their decoders read; _E names them in a join
 * of entries AS e. */
#define STORE_SQL_ROW_COLS                                                     \
	"ino, parent, name, kind, size, hash, version, mtime_ns, atime_ns,"    \
	" ctime_ns, mode, uid, gid, explicit_dir, state, xattrs, merkle"
#define STORE_SQL_ROW_COLS_E                                                   \
	"e.ino, e.parent, e.name, e.kind, e.size, e.hash, e.version,"          \
	" e.mtime_ns, e.atime_ns, e.ctime_ns, e.mode, e.uid, e.gid,"           \
	" e.explicit_dir, e.state, e.xattrs, e.merkle"

/* The columns of a listing of names (store_ops.list_by_ino with names), in
 * the order of enum store_sql_name_col: all in PostgreSQL's (parent, ino)
 * index, so that it reads the index alone. */
#define STORE_SQL_NAME_COLS "ino, parent, name, kind"

enum store_sql_name_col {
	STORE_NCOL_INO,
	STORE_NCOL_PARENT,
	STORE_NCOL_NAME,
	STORE_NCOL_KIND,
	STORE_NCOL_N,
};

/* The mode a listing of names reports for @kind: its file type alone. */
#define STORE_NAME_MODE(kind) ((kind) == ITEM_DIR ? S_IFDIR : S_IFREG)

enum store_sql_col {
	STORE_COL_INO,
	STORE_COL_PARENT,
	STORE_COL_NAME,
	STORE_COL_KIND,
	STORE_COL_SIZE,
	STORE_COL_HASH,
	STORE_COL_VERSION,
	STORE_COL_MTIME,
	STORE_COL_ATIME,
	STORE_COL_CTIME,
	STORE_COL_MODE,
	STORE_COL_UID,
	STORE_COL_GID,
	STORE_COL_EXPLICIT,
	STORE_COL_STATE,
	STORE_COL_XATTRS,
	STORE_COL_MERKLE,
	STORE_COL_N,
};

/* The columns of the row of entry @ino (in directory @parent, named @name,
 * with @m) as the L3 stores write it: see the top of this file. Borrows
 * @name and @m; merkle is left NULL (apply() computes it). */
struct store_cols store_cols_of(uint64_t ino, uint64_t parent, const char *name,
				const struct item_meta *m);

/* Fills @m (overwritten, owning nothing) with the metadata of a new root
 * directory: made now, by the calling process, mode 0755, explicit,
 * version 1. */
void store_root_meta(struct item_meta *m);

/*
 * Checks the meta rows an L3 store found in its database: @format (NULL
 * when absent or not text) must be STORE_SQL_FORMAT and @version (read only
 * when @have_version) between 1 and @supported. Returns 0, or -EINVAL after
 * logging "cannot open: not a tierfs database" or that the schema version
 * is newer than this build supports.
 */
int store_schema_check(const struct store_backend *b, const char *format,
		       bool have_version, long long version, int supported);

/*
 * The page that list() asks its database for. Returns false when there is
 * none to ask for (no room, or a @parent no row can have); otherwise sets
 * *after to "" when it is NULL, *after_len to its bytes that matter (cut at
 * STORE_NAME_MAX + 1: no name lies between the cut and the whole of a
 * longer one) and cuts *limit to INT_MAX (list() returns an int).
 */
bool store_list_page(uint64_t parent, const char **after, size_t *after_len,
		     size_t *limit);

/* The same for scan(): false when there is nothing after @after to ask
 * for; otherwise cuts *limit to INT_MAX. */
bool store_scan_page(uint64_t after, size_t *limit);

/* Fills scan()'s key @k; a name longer than STORE_NAME_MAX is cut. */
void store_key_fill(struct store_key *k, uint64_t ino, uint64_t parent,
		    const void *name, size_t len);

#endif
