/*
 * l3_sqlite_int.h - what the pieces of the SQLite L3 store share (the list
 * of them is at the top of l3_sqlite.c): its limits, the numbers of its
 * statements, the store and connection structs, and the functions one
 * piece calls in another. Private to l3_sqlite*.c: the engine sees only
 * l3_sqlite.h.
 */
#ifndef TIERFS_L3_SQLITE_INT_H
#define TIERFS_L3_SQLITE_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <sqlite3.h>

#include "l3_sqlite.h"
#include "merkle.h"
#include "pool.h"
#include "store_conn.h"
#include "store_sql.h"

#define LSQ_SCHEMA_VERSION 5
#define LSQ_READERS 4
#define LSQ_BUSY_TIMEOUT_MS 5000
#define LSQ_POOL_WAIT_S 30 /* how long a reader waits for a free connection */
/* The deepest directory the Merkle maintenance follows: far below any tree
 * the engine builds (node_path() stops at ID_MAX levels), so a parent chain
 * longer than this is a cycle or a corrupt row. */
#define LSQ_MAX_DEPTH 4096
/* How often feed_wait() looks at the file's data_version. */
#define LSQ_WAIT_POLL_MS 10

/* Statements of a reader connection. */
enum lsq_rstmt {
	R_GET,
	R_LOOKUP,
	R_LIST,
	R_LIST_INO,
	R_LIST_INO_NAMES,
	R_READ,
	R_READ_MANY,
	R_HAS_CHILDREN,
	R_SUBDIRS,
	R_LONGEST,
	R_STATS,
	R_SCAN,
	R_BEGIN,
	R_COMMIT,
	R_FEED_TRIMMED,
	R_FEED_READ,
	R_FEED_HEAD,
	R_DATA_VERSION,
	R_NSTMT,
};

/* Statements of the writer connection. */
enum lsq_wstmt {
	W_BEGIN,
	W_COMMIT,
	W_ROLLBACK,
	W_DEL_ENTRY,
	W_DEL_CONTENT,
	W_INS_ENTRY,
	W_PUT_CONTENT,
	W_GET_NEXT_INO,
	W_SET_NEXT_INO,
	W_GET_PARENT,
	W_CHILDREN,
	W_SET_MERKLE,
	W_GET_STORED,
	W_CONFLICTS,
	W_CHILD_INOS,
	W_FEED_ADD,
	W_FEED_OLDEST,
	W_FEED_FIRST_AFTER,
	W_FEED_TRIM,
	W_FEED_SET_TRIMMED,
	W_NSTMT,
};

/* The SQL of each statement, by enum lsq_rstmt and enum lsq_wstmt
 * (l3_sqlite_stmt.c). */
extern const char *const lsq_reader_sql[R_NSTMT];
extern const char *const lsq_writer_sql[W_NSTMT];

#define LSQ_MAX_NSTMT                                                          \
	((int)R_NSTMT > (int)W_NSTMT ? (int)R_NSTMT : (int)W_NSTMT)

enum lsq_role {
	LSQ_WRITER,
	LSQ_READER,
};

struct lsq_conn {
	struct pool_conn pool; /* first: a reader is linked by lsq.readers */
	sqlite3 *db;
	sqlite3_stmt *stmt[LSQ_MAX_NSTMT];
};

struct lsq {
	struct store base;	 /* first: the engine sees only this */
	struct store_backend sb; /* for store_row.h: "sqlite", the path */
	char *path;

	pthread_mutex_t write_lock;
	bool write_lock_ready;
	struct lsq_conn *writer; /* protected by write_lock */

	struct pool *readers; /* of struct lsq_conn; NULL until made */

	/* feed_wait()'s own connection, made at its first call: its
	 * data_version moves with every commit of any other connection,
	 * this store's writer included. Used by one thread at a time (the
	 * contract of feed_wait()), so it has no lock. */
	struct lsq_conn *waiter;
	sqlite3_int64 waiter_version; /* its data_version when last read */
};

static inline struct lsq *lsq_of(struct store *s)
{
	return (struct lsq *)s;
}

/* ---- l3_sqlite_conn.c ---- */

extern const struct pool_ops lsq_reader_ops;

/* Maps SQLite result code @rc to a negative errno and logs SQLite's
 * message with @what (see l3_sqlite_conn.c). */
int lsq_errno(const struct lsq *q, sqlite3 *db, int rc, const char *what);
/* Makes @st ready for its next use. */
void lsq_done(sqlite3_stmt *st);
/* Steps @st, which must not return rows, then resets it. */
int lsq_run(const struct lsq *q, sqlite3 *db, sqlite3_stmt *st,
	    const char *what);
/* Runs one-off SQL (no rows) on @db: opening and schema work only. */
int lsq_exec(const struct lsq *q, sqlite3 *db, const char *sql,
	     const char *what);
/* Runs a one-row, one-column query on @db (see l3_sqlite_conn.c). */
int lsq_query1(const struct lsq *q, sqlite3 *db, const char *sql,
	       sqlite3_int64 *ival, char *buf, size_t bufsz, const char *what);
void lsq_conn_close(struct lsq_conn *c);
/* Opens a connection to q->path with the settings every role shares. */
int lsq_conn_open(const struct lsq *q, enum lsq_role role,
		  struct lsq_conn **out);
/* Prepares the statements of @role on @c (once per connection). */
int lsq_conn_prepare(const struct lsq *q, struct lsq_conn *c,
		     enum lsq_role role);
/* Opens a reader connection with its statements prepared (*out: new,
 * closed with lsq_conn_close()): the pool's readers and feed_wait()'s. */
int lsq_reader_new(const struct lsq *q, struct lsq_conn **out);
/* Takes a reader for one operation; -EAGAIN, logged, when none came free
 * within LSQ_POOL_WAIT_S. */
int lsq_reader_get(struct lsq *q, struct lsq_conn **out);
void lsq_reader_put(struct lsq *q, struct lsq_conn *c);

/* ---- l3_sqlite.c ---- */

/* Ends the writer's transaction after a failure; keeps the first error. */
void lsq_rollback(struct lsq *q);
/* Runs writer statement @which with ?1 bound to @ino. */
int lsq_run_ino(struct lsq *q, enum lsq_wstmt which, uint64_t ino,
		const char *what);
/* Fills @out from the current row of @st, whose first columns are
 * STORE_SQL_ROW_COLS; -EUCLEAN (logged, counted) when it is corrupt. */
int lsq_row_decode(const struct lsq *q, sqlite3_stmt *st,
		   struct store_row *out);
/* Binds the entry row of @ino to W_INS_ENTRY; @name and @m must outlive the
 * step. Returns an SQLite result code. */
int lsq_bind_entry(sqlite3_stmt *st, uint64_t ino, uint64_t parent,
		   const char *name, const struct item_meta *m);

/* ---- l3_sqlite_apply.c ---- */

/* The store op apply() (see l3_sqlite_apply.c). */
int lsq_apply(struct store *s, struct change *const *changes, size_t n,
	      struct store_dirhash **tree, size_t *ntree);

/* ---- l3_sqlite_feed.c ---- */

/* The store ops of the change feed (see l3_sqlite_feed.c). */
int lsq_feed_read(struct store *s, uint64_t after, struct store_feed *recs,
		  size_t limit);
int lsq_feed_head(struct store *s, uint64_t *seq);
int lsq_feed_wait(struct store *s, uint64_t after, int timeout_ms);

/* ---- l3_sqlite_merkle.c ---- */

/* Recomputes the Merkle hash of directory @ino from its children's rows
 * and writes it to its row and to @out; on the writer, in its
 * transaction. */
int lsq_dir_hash(struct lsq *q, uint64_t ino, uint8_t out[MERKLE_LEN]);
/* Reads the parent and kind of row @ino on the writer. Returns 1, or 0 when
 * there is no such row, or a negative errno. */
int lsq_get_parent(struct lsq *q, uint64_t ino, uint64_t *parent, int *kind);
/* apply()'s Merkle half: recomputes directories @seeds and their ancestors,
 * bottom-up (see l3_sqlite_merkle.c). */
int lsq_merkle_update(struct lsq *q, const uint64_t *seeds, size_t n,
		      struct store_dirhash **tree, size_t *ntree);

/* ---- l3_sqlite_schema.c ---- */

/* Checks, creates or migrates the schema, prepares the writer's
 * statements and switches the file to WAL (see l3_sqlite_schema.c). */
int lsq_setup(struct lsq *q);

#endif
