/*
 * l3_pg_int.h - what the pieces of the PostgreSQL L3 store share (the list
 * of them is at the top of l3_pg.c): its limits, the numbers of its
 * statements and columns, the store and connection structs, and the
 * functions one piece calls in another. Private to l3_pg*.c: the engine
 * sees only l3_pg.h.
 */
#ifndef TIERFS_L3_PG_INT_H
#define TIERFS_L3_PG_INT_H

#include <endian.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <libpq-fe.h>

#include "l3_pg.h"
#include "pool.h"
#include "store_conn.h"
#include "store_sql.h"

#define LPG_SCHEMA_VERSION 2
#define LPG_POOL_MAX 4
#define LPG_POOL_WAIT_S 30 /* how long a thread waits for a connection */
#define LPG_CONNECT_TIMEOUT "5"
#define LPG_QUERY_RUNS 2       /* runs of one statement: store_run() */
#define LPG_APPLY_TRIES 8      /* runs of one batch that meets conflicts */
#define LPG_OPTIMISTIC_TRIES 2 /* then the exclusive write lock */
#define LPG_CHUNK_ROWS 1000    /* rows per statement */
#define LPG_CHUNK_BYTES (16u << 20)
#define LPG_BIG_CONTENT (256u << 10)
#define LPG_LOCK_CLASS 0x74696572 /* "tier": the advisory lock's first key */
#define LPG_LOCK_SCHEMA 1 /* second key: creating or migrating the schema */
#define LPG_LOCK_WRITE 2  /* second key: apply() */
/* How far up S_TOUCHED walks from a directory: only a cycle of parents (a
 * corrupt tree) gets this far; it would otherwise walk forever. */
#define LPG_MAX_DEPTH 65536

/* Type OIDs of the binary parameters (pg_type.h is a server header). */
#define LPG_BOOLOID 16
#define LPG_BYTEAOID 17
#define LPG_INT8OID 20
#define LPG_INT2OID 21
#define LPG_INT4OID 23
#define LPG_TEXTOID 25
#define LPG_BOOLARRAYOID 1000
#define LPG_BYTEAARRAYOID 1001
#define LPG_INT2ARRAYOID 1005
#define LPG_INT4ARRAYOID 1007
#define LPG_TEXTARRAYOID 1009
#define LPG_INT8ARRAYOID 1016

/* The columns of an entries row as apply() writes them (E_* are the
 * parameters of S_INS_ENTRIES, one array each). */
enum lpg_ecol {
	E_INO,
	E_PARENT,
	E_NAME,
	E_STEM,
	E_KIND,
	E_SIZE,
	E_HASH,
	E_VERSION,
	E_MTIME,
	E_CTIME,
	E_MODE,
	E_UID,
	E_GID,
	E_EXPLICIT,
	E_STATE,
	E_XATTRS,
	E_N,
};

#define LPG_MAX_PARAMS E_N

enum lpg_stmt {
	S_GET,
	S_LOOKUP,
	S_LIST,
	S_READ,
	S_FETCH,
	S_HAS_CHILDREN,
	S_SUBDIRS,
	S_LONGEST,
	S_STATS,
	S_ALLOC,
	S_NEXT_INO,
	S_SCAN,
	S_DEL_ENTRIES,
	S_DEL_CONTENTS,
	S_INS_ENTRIES,
	S_PUT_CONTENTS,
	S_PUT_CONTENT,
	S_TOUCHED,
	S_MERKLE,
	S_N,
};

struct lpg_stmt_def {
	const char *name;
	const char *sql;
	int nparams;
	Oid types[LPG_MAX_PARAMS];
};

/* Every statement, by enum lpg_stmt (l3_pg_stmt.c). */
extern const struct lpg_stmt_def lpg_stmts[S_N];

struct lpg_conn {
	struct pool_conn pool; /* first; .reused: it had been idle */
	PGconn *pg;
	bool broken;   /* a connection error: close it, never reuse it */
	bool conflict; /* the last error was a conflict worth a new try */
	bool prepared; /* lpg_stmts are prepared: not while opening */
};

struct lpg {
	struct store base;	 /* first: the engine sees only this */
	struct store_backend sb; /* for store_row.h: "postgres", target */
	char *conninfo;	  /* as given: may hold a password, never logged */
	bool add_timeout; /* pass connect_timeout=LPG_CONNECT_TIMEOUT */
	char target[256]; /* "host:port/dbname" for logs */
	/* An outage is logged once: set by the first failed connect, cleared
	 * (and "connected again" logged) by the next successful one. */
	atomic_bool down_logged;

	struct pool *pool; /* of struct lpg_conn; NULL until made */
};

static inline struct lpg *lpg_of(struct store *s)
{
	return (struct lpg *)s;
}

/* ---- binary values (network byte order) ---- */

static inline void lpg_put64(char out[8], int64_t v)
{
	uint64_t be = htobe64((uint64_t)v);

	memcpy(out, &be, 8);
}

static inline int64_t lpg_get64(const char *p)
{
	uint64_t be;

	memcpy(&be, p, 8);
	return (int64_t)be64toh(be);
}

static inline int32_t lpg_get32(const char *p)
{
	uint32_t be;

	memcpy(&be, p, 4);
	return (int32_t)be32toh(be);
}

static inline int16_t lpg_get16(const char *p)
{
	uint16_t be;

	memcpy(&be, p, 2);
	return (int16_t)be16toh(be);
}

/* ---- l3_pg_array.c ---- */

/*
 * A one-dimensional array in array_recv's binary format, built row by row:
 *     int32 ndim = 1, int32 has_nulls, Oid element type,
 *     int32 length, int32 lower bound = 1,
 *     then per element: int32 byte length (-1 for NULL), the bytes.
 */
struct lpg_arr {
	char *p;
	size_t len, cap;
	uint32_t n;
	bool has_null;
	bool oom;
};

void lpg_arr_release(struct lpg_arr *a);
/* Empties @a for a new array of @elem (a type OID). */
void lpg_arr_start(struct lpg_arr *a, Oid elem);
void lpg_arr_bytes(struct lpg_arr *a, const void *p, size_t len);
void lpg_arr_null(struct lpg_arr *a);
/* Appends @len bytes at @p, or NULL when @p is NULL. */
void lpg_arr_opt(struct lpg_arr *a, const void *p, size_t len);
void lpg_arr_i64(struct lpg_arr *a, int64_t v);
void lpg_arr_i32(struct lpg_arr *a, int32_t v);
void lpg_arr_i16(struct lpg_arr *a, int16_t v);
void lpg_arr_bool(struct lpg_arr *a, bool v);
/* Completes the header and points *value and *length at the array, a
 * statement's parameter; -ENOMEM when an append failed. */
int lpg_arr_finish(struct lpg_arr *a, const char **value, int *length);

/* ---- l3_pg_conn.c ---- */

extern const struct pool_ops lpg_pool_ops;

/* Maps a libpq failure to a negative errno, marks @c broken or conflicting
 * and logs the server's message with @what (see l3_pg_conn.c). */
int lpg_errno(const struct lpg *q, PGconn *pg, const PGresult *res,
	      struct lpg_conn *c, const char *what);
void lpg_conn_close(struct lpg_conn *c);
/* Takes the result @res of a command on @c: when it succeeded, hands it to
 * *out when @out is given (the caller PQclear()s it), else frees it, and
 * returns 0; when it failed, frees it and returns lpg_errno()'s answer. */
int lpg_result(const struct lpg *q, struct lpg_conn *c, PGresult *res,
	       PGresult **out, const char *what);
/* Runs @sql (no parameters, text results) on @c; *out gets the result when
 * @out is given (caller PQclear()s it). */
int lpg_simple(const struct lpg *q, struct lpg_conn *c, const char *sql,
	       PGresult **out, const char *what);
/* Runs statement @which on @c with binary parameters and results; *out
 * gets the result when @out is given (caller PQclear()s it). */
int lpg_exec(const struct lpg *q, struct lpg_conn *c, enum lpg_stmt which,
	     const char *const *values, const int *lengths, PGresult **out,
	     const char *what);
int lpg_conn_prepare(const struct lpg *q, struct lpg_conn *c);
/* Opens a connection; prepares its statements when @prepare. */
int lpg_conn_open(const struct lpg *q, bool prepare, struct lpg_conn **out);
/* How store_run() takes and gives back the pool's connections. */
extern const struct store_run_ops lpg_run_ops;
/* Runs one statement on a pooled connection, once more on a new one when
 * the pooled one was lost (store_run()); on success the result in *res,
 * for the caller to PQclear(). */
int lpg_query(struct lpg *q, enum lpg_stmt which, const char *const *values,
	      const int *lengths, PGresult **res, const char *what);
/* Checks @conninfo and fills q->target and q->add_timeout. */
int lpg_parse(struct lpg *q, const char *conninfo);

/* ---- l3_pg.c ---- */

/* Points *p at column @col of row @row when it is not NULL and is @len
 * bytes long (any length when @len < 0); false otherwise. */
bool lpg_field(const PGresult *res, int row, int col, int len, const char **p);

/* ---- l3_pg_merkle.c ---- */

int lpg_cmp_u64(const void *a, const void *b);

/* A growable set of inode numbers (sorted and deduplicated on demand). */
struct lpg_inos {
	uint64_t *v;
	size_t n, cap;
	bool oom;
};

void lpg_inos_add(struct lpg_inos *s, uint64_t ino);
/* Sorts and deduplicates @s; -ENOMEM when an add failed. */
int lpg_inos_finish(struct lpg_inos *s);
void lpg_inos_release(struct lpg_inos *s);

/* The directories one run of the Merkle step recomputed, in order. */
struct lpg_tree {
	struct store_dirhash *v;
	size_t n, cap;
};

void lpg_tree_release(struct lpg_tree *t);
/* Recomputes the directories of @order, level by level (see
 * l3_pg_merkle.c). */
int lpg_merkle_levels(const struct lpg *q, struct lpg_conn *c,
		      const PGresult *order, struct lpg_arr *a,
		      struct lpg_tree *tree, uint64_t *count);
/* apply()'s Merkle step, inside its transaction (see l3_pg_merkle.c). */
int lpg_merkle_apply(const struct lpg *q, struct lpg_conn *c,
		     struct change *const *changes, size_t n,
		     struct lpg_inos *touched, struct lpg_arr *a,
		     struct lpg_tree *tree);

/* ---- l3_pg_schema.c ---- */

/* Under the schema lock, checks the tables or creates them with the root
 * directory, in one transaction. */
int lpg_setup(struct lpg *q, struct lpg_conn *c);

/* ---- l3_pg_apply.c ---- */

int lpg_apply(struct store *s, struct change *const *changes, size_t n,
	      struct store_dirhash **tree, size_t *ntree);

#endif
