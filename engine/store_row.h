/*
 * store_row.h - what the store backends (l3_sqlite, l3_pg, l2_redis) share
 * about the entries they keep: how they name themselves in logs, the checks
 * a row read back from a database or a cache passes before the engine sees
 * it, and the check of a batch's changes.
 *
 * A row read back is checked against the same contract as a change written
 * (store.h): a bad inode number, name, parent or kind, a hash or Merkle hash
 * that is not ITEM_HASH_LEN bytes, or a state tag holding a NUL make the
 * entry corrupt: -EUCLEAN, logged as "NAME 'TARGET': corrupt entry INO: WHY".
 * So a backend decodes only its own format (column types, blob layout) and
 * leaves the meaning of the fields to store_row_decode().
 *
 * Thread-safety: every function here is reentrant; a struct store_backend
 * is read-only once its backend has opened.
 */
#ifndef TIERFS_STORE_ROW_H
#define TIERFS_STORE_ROW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* A backend as the shared helpers see it, filled in when it opens. */
struct store_backend {
	const struct eng_log *log;
	const char *name;   /* "postgres", "sqlite", "redis": starts each log */
	const char *target; /* its server or file, for logs (no password) */
	uint64_t max_ino;   /* the largest inode number it can keep */
	bool cache;	    /* a cache tier (L2), not L3: see store_cols */
	atomic_uint_least64_t *corrupt; /* counts store_corrupt() calls */
};

/*
 * An entry's row as a backend holds it, field by field, before any check:
 * the pointers borrow from the backend's result. A NULL pointer is an
 * absent value (an SQL NULL); an empty one is a pointer with length 0.
 *
 * How the two tiers differ, which store_row_decode() follows: in L3 a
 * file's Merkle hash is its content hash and an empty state tag is none
 * (the SQL stores write NULL for both); a cache tier keeps "" apart from
 * none and does not know Merkle hashes (store_row.merkle stays zero).
 */
struct store_cols {
	uint64_t ino;
	uint64_t parent;
	const void *name; /* name_len bytes, not NUL-terminated */
	size_t name_len;
	const void *stem; /* written only (store_cols_of): NULL for a dir */
	size_t stem_len;
	int kind; /* enum item_kind, unchecked */
	uint64_t size;
	const void *hash; /* NULL: none (all zero) */
	size_t hash_len;
	uint64_t version;
	int64_t mtime_ns;
	int64_t atime_ns;
	int64_t ctime_ns;
	uint32_t mode;
	uint32_t uid;
	uint32_t gid;
	bool explicit_dir;
	const void *state; /* NULL: none */
	size_t state_len;
	const void *xattrs; /* NULL or 0 bytes: none */
	size_t xattrs_len;
	const void *merkle; /* a directory's; NULL: not known */
	size_t merkle_len;
};

/* Why an entry (@ino in directory @parent, named by @len bytes at @name,
 * of @kind) breaks the contract of store.h, or NULL when it keeps it:
 * inode numbers above @max_ino are refused too. store_change_problem()
 * checks a change with it, store_row_decode() a row. */
const char *store_entry_problem(uint64_t ino, uint64_t parent, const void *name,
				size_t len, int kind, uint64_t max_ino);

/* Logs that entry @ino (0 when not known) of @b does not decode, and why,
 * counts it, and returns -EUCLEAN (the errno of a corrupt structure). */
int store_corrupt(const struct store_backend *b, uint64_t ino, const char *why);

/*
 * Checks the row @c that backend @b read back and makes it a store_row in
 * *out (the caller releases it). Returns 0, -EUCLEAN when it is corrupt
 * (logged, see the top of this file) or -ENOMEM; *out is written only on
 * success.
 */
int store_row_decode(const struct store_backend *b, const struct store_cols *c,
		     struct store_row *out);

/*
 * Checks the @n changes of a batch for apply(): store_change_problem(),
 * then @limits (may be NULL), a backend's own limits, on each change that
 * is not a delete: NULL when it can keep the change, else why not. The
 * first change refused is logged and fails the batch with -EINVAL;
 * otherwise 0.
 */
int store_check_changes(const struct store_backend *b,
			struct change *const *changes, size_t n,
			const char *(*limits)(const struct change *ch));

/* Copies @len bytes at @p into a new buffer in *data (NULL when @len is 0;
 * the caller frees it) and sets *out_len. 0 or -ENOMEM. */
int store_data_dup(const void *p, size_t len, void **data, size_t *out_len);

#endif
