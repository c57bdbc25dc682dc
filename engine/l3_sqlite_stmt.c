/*
 * l3_sqlite_stmt.c - the SQLite store's prepared statements: the SQL of
 * those of a reader connection and of those of the writer. Each connection
 * prepares the statements of its role once, when it opens (persistent
 * statements); they are reset and their bindings cleared after each use.
 *
 * Row queries return the columns of STORE_SQL_ROW_COLS (store_sql.h),
 * which lsq_row_decode() (l3_sqlite.c) reads.
 */
#include "l3_sqlite_int.h"

/* The escaped length (id.c) of the segment of the row prefixed @t. */
#define LSQ_SEG_LEN(t)                                                        \
	"(length(coalesce(" t "stem, " t "name)) + 2 * ("                     \
	"length(coalesce(" t "stem, " t "name)) - length(CAST(replace("       \
	"replace(coalesce(" t "stem, " t "name), X'2E', X''), X'25', X'')"    \
	" AS BLOB))))"

const char *const lsq_reader_sql[R_NSTMT] = {
	[R_GET] = "SELECT " STORE_SQL_ROW_COLS " FROM entries WHERE ino = ?1",
	[R_LOOKUP] = ("SELECT " STORE_SQL_ROW_COLS " FROM entries"
		      " WHERE parent = ?1 AND name = ?2"),
	[R_LIST] = ("SELECT " STORE_SQL_ROW_COLS " FROM entries"
		    " WHERE parent = ?1 AND name > ?2 ORDER BY name LIMIT ?3"),
	[R_LIST_INO] = ("SELECT " STORE_SQL_ROW_COLS " FROM entries"
			" WHERE parent = ?1 AND ino > ?2 ORDER BY ino"
			" LIMIT ?3"),
	[R_LIST_INO_NAMES] = ("SELECT " STORE_SQL_NAME_COLS " FROM entries"
			      " WHERE parent = ?1 AND ino > ?2 ORDER BY ino"
			      " LIMIT ?3"),
	[R_READ] =
		("SELECT c.data FROM entries AS e"
		 " LEFT JOIN contents AS c ON c.ino = e.ino WHERE e.ino = ?1"),
	/* ?1: the inos, as a JSON array */
	[R_READ_MANY] =
		("SELECT e.ino, c.data FROM entries AS e"
		 " LEFT JOIN contents AS c ON c.ino = e.ino"
		 " WHERE e.ino IN (SELECT value FROM json_each(?1))"),
	[R_HAS_CHILDREN] = "SELECT 1 FROM entries WHERE parent = ?1 LIMIT 1",
	/* ?3: the inos left out, as a JSON array */
	[R_SUBDIRS] = ("SELECT count(*) FROM entries"
		       " WHERE parent = ?1 AND kind = ?2 AND ino NOT IN"
		       " (SELECT value FROM json_each(?3))"),
	/* the escaped length of a segment: its bytes, plus two per '.' and
	 * '%' (id.h); a file's segment is its stem, a directory's its name */
	[R_LONGEST] =
		("WITH RECURSIVE x(ino) AS (SELECT value FROM json_each(?3)),"
		 " d(ino, kind, len) AS ("
		 "  SELECT ino, kind, " LSQ_SEG_LEN("") " FROM entries"
		 "  WHERE parent = ?1 AND ino NOT IN x"
		 "  UNION ALL"
		 "  SELECT e.ino, e.kind, d.len + 1 + " LSQ_SEG_LEN("e.") ""
		 "  FROM entries AS e JOIN d ON e.parent = d.ino"
		 "  WHERE d.kind = ?2 AND e.ino NOT IN x)"
		 " SELECT coalesce(max(len), 0) FROM d"),
	[R_STATS] = ("SELECT count(*),"
		     " coalesce(sum(CASE WHEN kind <> ?2 THEN size END), 0)"
		     " FROM entries WHERE ino <> ?1"),
	[R_SCAN] = ("SELECT ino, parent, name FROM entries"
		    " WHERE ino > ?1 AND ino <> ?2 ORDER BY ino LIMIT ?3"),
	/* feed_read() reads the trimmed mark and the records in one
	 * snapshot */
	[R_BEGIN] = "BEGIN",
	[R_COMMIT] = "COMMIT",
	[R_FEED_TRIMMED] = "SELECT value FROM meta WHERE key = 'feed_trimmed'",
	/* the entry's columns first, as lsq_row_decode() reads them; all
	 * NULL when the entry is gone */
	[R_FEED_READ] = ("SELECT " STORE_SQL_ROW_COLS_E ", f.seq, f.origin,"
			 " f.ino FROM feed AS f"
			 " LEFT JOIN entries AS e ON e.ino = f.ino"
			 " WHERE f.seq > ?1 ORDER BY f.seq LIMIT ?2"),
	[R_FEED_HEAD] = ("SELECT max(coalesce((SELECT max(seq) FROM feed), 0),"
			 " coalesce((SELECT value FROM meta"
			 " WHERE key = 'feed_trimmed'), 0))"),
	[R_DATA_VERSION] = "PRAGMA data_version",
};

const char *const lsq_writer_sql[W_NSTMT] = {
	[W_BEGIN] = "BEGIN IMMEDIATE",
	[W_COMMIT] = "COMMIT",
	[W_ROLLBACK] = "ROLLBACK",
	[W_DEL_ENTRY] = "DELETE FROM entries WHERE ino = ?1 RETURNING parent",
	[W_DEL_CONTENT] = "DELETE FROM contents WHERE ino = ?1",
	[W_INS_ENTRY] = ("INSERT INTO entries (ino, parent, name, stem, kind,"
			 " size, hash, version, mtime_ns, ctime_ns, mode, uid,"
			 " gid, explicit_dir, state, xattrs, atime_ns) VALUES"
			 " (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,"
			 " ?13, ?14, ?15, ?16, ?17)"),
	[W_PUT_CONTENT] = ("INSERT OR REPLACE INTO contents (ino, data)"
			   " VALUES (?1, ?2)"),
	[W_GET_NEXT_INO] = "SELECT value FROM meta WHERE key = 'next_ino'",
	[W_SET_NEXT_INO] = "UPDATE meta SET value = ?1 WHERE key = 'next_ino'",
	[W_GET_PARENT] = "SELECT parent, kind FROM entries WHERE ino = ?1",
	[W_CHILDREN] = ("SELECT name, kind, hash, merkle, ino FROM entries"
			" WHERE parent = ?1 ORDER BY name"),
	[W_SET_MERKLE] = "UPDATE entries SET merkle = ?2 WHERE ino = ?1",
	[W_GET_STORED] = ("SELECT version, kind, hash, parent FROM entries"
			  " WHERE ino = ?1"),
	/* the rows holding the name ?2 or, for a file, the stem ?3 (NULL
	 * for a directory) in directory ?1: one probe of each unique index */
	[W_CONFLICTS] = ("SELECT ino, kind, version, parent FROM entries"
			 " WHERE parent = ?1 AND name = ?2"
			 " UNION SELECT ino, kind, version, parent FROM entries"
			 " WHERE parent = ?1 AND stem = ?3"),
	[W_CHILD_INOS] = "SELECT ino FROM entries WHERE parent = ?1",
	[W_FEED_ADD] = ("INSERT INTO feed (origin, ino, time_ns)"
			" VALUES (?1, ?2, ?3)"),
	[W_FEED_OLDEST] = "SELECT seq, time_ns FROM feed ORDER BY seq LIMIT 1",
	[W_FEED_FIRST_AFTER] = ("SELECT seq FROM feed WHERE time_ns >= ?1"
				" ORDER BY seq LIMIT 1"),
	[W_FEED_TRIM] = "DELETE FROM feed WHERE seq <= ?1",
	[W_FEED_SET_TRIMMED] = ("UPDATE meta SET value = max(value, ?1)"
				" WHERE key = 'feed_trimmed'"),
};
