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

#define LPG_SCHEMA_VERSION 6
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
/* How far up S_TOUCHED and S_CYCLES walk from a directory: only a cycle of
 * parents (a corrupt tree) gets this far; it would otherwise walk forever. */
#define LPG_MAX_DEPTH 65536
/* The channel apply() notifies and feed_wait() listens on. */
#define LPG_FEED_CHANNEL "tierfs_feed"

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
	E_ATIME,
	E_N,
};

#define LPG_MAX_PARAMS E_N

enum lpg_stmt {
	S_GET,
	S_LOOKUP,
	S_LIST,
	S_LIST_INO,
	S_LIST_INO_NAMES,
	S_READ,
	S_FETCH,
	S_READ_MANY,
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
	S_HOLDERS,
	S_BUSY_DIRS,
	S_CYCLES,
	S_FEED_ADD,
	S_FEED_TRIM,
	S_FEED_READ,
	S_FEED_HEAD,
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

	/* feed_wait()'s own connection, which LISTENs (NULL while down);
	 * used only by the one thread that calls feed_wait() */
	struct lpg_conn *listen;
	/* When a batch of this store last trimmed the feed (CLOCK_MONOTONIC,
	 * ms; 0: never): see l3_pg_feed.c. */
	atomic_int_least64_t trimmed_ms;
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
/* Fills @out from row @row of @res, whose first columns are those of
 * STORE_SQL_ROW_COLS (binary); -EUCLEAN (logged, counted) when it breaks
 * the contract. */
int lpg_row_decode(const struct lpg *q, const PGresult *res, int row,
		   struct store_row *out);

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

/* ---- l3_pg_race.c ---- */

/* What apply() makes of a batch's namespace races (l3_pg_race.c), decided
 * anew in each run of its transaction. */
struct lpg_plan {
	bool *dropped;	 /* by change: not applied */
	bool *cycle;	 /* by change: dropped, as it closed a cycle */
	uint64_t *floor; /* by change: its lowest version (0: none) */
	/* which change replaces which entry: one pair per (change, entry) */
	struct lpg_pair {
		uint64_t holder;
		size_t change;
	} * pairs;
	size_t npairs, cap;
	bool oom;
	struct lpg_inos replaced; /* the entries replaced, sorted */
	size_t ndropped;
};

/* -EEXIST (logged at debug level) when two changes of @changes that are not
 * deletions write one (parent, name) or, both files, one (parent, stem):
 * within one batch that is a mistake, not a race. */
int lpg_check_names(const struct lpg *q, struct change *const *changes,
		    size_t n);
/* Sizes @p for @n changes; -ENOMEM. */
int lpg_plan_init(struct lpg_plan *p, size_t n);
void lpg_plan_release(struct lpg_plan *p);
/* Inside apply()'s transaction, before any row is written: decides which
 * changes of @changes are dropped and which entries they replace (see
 * l3_pg_race.c), into @p. */
int lpg_plan_races(const struct lpg *q, struct lpg_conn *c,
		   struct change *const *changes, size_t n, struct lpg_arr *a,
		   struct lpg_plan *p);
/* Logs (WARN) and counts in store.races what @p decided, once the batch
 * is committed: each change dropped, each entry replaced (once, however
 * many changes replace it). Sorts @p's pairs. */
void lpg_plan_report(struct lpg *q, struct change *const *changes, size_t n,
		     struct lpg_plan *p);

/* ---- l3_pg_feed.c ---- */

/* Inside apply()'s transaction, after the rows are written: records @inos
 * (@n, in order) in the feed under q->base.origin, and trims the feed when
 * it is due; *trimmed is set when it did. */
int lpg_feed_add(const struct lpg *q, struct lpg_conn *c, const uint64_t *inos,
		 size_t n, struct lpg_arr *a, bool *trimmed);
/* Notes that a committed batch trimmed the feed. */
void lpg_feed_trimmed(struct lpg *q);
int lpg_feed_read(struct store *s, uint64_t after, struct store_feed *recs,
		  size_t limit);
int lpg_feed_head(struct store *s, uint64_t *seq);
int lpg_feed_wait(struct store *s, uint64_t after, int timeout_ms);
/* Closes feed_wait()'s connection. Accepts a store without one. */
void lpg_feed_close(struct lpg *q);

#endif
