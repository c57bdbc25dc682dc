/*
 * l3_pg_stmt.c - the PostgreSQL store's prepared statements: their SQL and
 * the types of their parameters, by enum lpg_stmt.
 *
 * Every connection prepares the statements of lpg_stmts once (PQprepare)
 * and runs them with PQexecPrepared: get, lookup, list, read, fetch,
 * has_children, stats, scan, alloc_ino (and the counter it reads when it
 * fails), those of apply() and those of the change feed. All parameters and
 * results use the binary format: integers in network byte order, bytea as raw
 * bytes (so content round-trips byte for byte, NULs included, with no
 * escaping), booleans as one byte, text as its bytes, arrays in array_recv's
 * format (lpg_arr). Transaction control and the schema work at open use PQexec,
 * in the text format; the migration runs the statement it shares with apply()
 * by its text (PQexecParams), as the connection setting up the schema has not
 * prepared any yet.
 *
 * Row queries return the columns of STORE_SQL_ROW_COLS (store_sql.h),
 * which lpg_row_decode() (l3_pg.c) reads.
 */
#include "l3_pg_int.h"
#include "merkle.h"

/* The escaped length (id.c) of the segment of the row prefixed @t. */
#define LPG_SEG_LEN(t)                                                        \
	"(octet_length(coalesce(" t "stem, " t "name))::bigint + 2 * ("       \
	"length(encode(coalesce(" t "stem, " t "name), 'escape')) - "         \
	"length(replace(replace(encode(coalesce(" t "stem, " t "name),"       \
	" 'escape'), '.', ''), '%', ''))))"

_Static_assert(ITEM_DIR == 0 && STORE_ROOT_INO == 1,
	       "the statements spell these out");
_Static_assert(MERKLE_TYPE_DIR == 0x64 && MERKLE_TYPE_FILE == 0x66 &&
		       MERKLE_LEN == 32 && ITEM_HASH_LEN == MERKLE_LEN,
	       "LPG_MERKLE_OF_D spells these out");

/*
 * The Merkle hash (merkle.h) of the directory row "d", from its children's
 * rows as they stand: for each child in name order (bytea order is memcmp
 * order, shorter first), name | 0x00 | 'd' or 'f' | the child's hash (a
 * directory's merkle, a file's hash; 32 zero bytes when NULL, as store_row
 * reports an unknown hash), all hashed by the server, so no child row
 * crosses the network. No children: SHA-256 of no bytes. decode() rather
 * than '\x..' literals keeps it independent of standard_conforming_strings.
 */
#define LPG_MERKLE_OF_D                                                        \
	"sha256(coalesce((SELECT string_agg(c.name"                            \
	" || CASE WHEN c.kind = 0 THEN decode('0064', 'hex')"                  \
	" ELSE decode('0066', 'hex') END"                                      \
	" || coalesce(CASE WHEN c.kind = 0 THEN c.merkle ELSE c.hash END,"     \
	" decode(repeat('00', 32), 'hex')), ''::bytea ORDER BY c.name)"        \
	" FROM entries AS c WHERE c.parent = d.ino), ''::bytea))"

const struct lpg_stmt_def lpg_stmts[S_N] = {
	[S_GET] = {"lpg_get",
		   "SELECT " STORE_SQL_ROW_COLS " FROM entries WHERE ino = $1",
		   1,
		   {LPG_INT8OID}},
	[S_LOOKUP] = {"lpg_lookup",
		      "SELECT " STORE_SQL_ROW_COLS " FROM entries"
		      " WHERE parent = $1 AND name = $2",
		      2,
		      {LPG_INT8OID, LPG_BYTEAOID}},
	[S_LIST] = {"lpg_list",
		    "SELECT " STORE_SQL_ROW_COLS " FROM entries"
		    " WHERE parent = $1 AND name > $2 ORDER BY name LIMIT $3",
		    3,
		    {LPG_INT8OID, LPG_BYTEAOID, LPG_INT8OID}},
	[S_LIST_INO] = {"lpg_list_ino",
			"SELECT " STORE_SQL_ROW_COLS " FROM entries"
			" WHERE parent = $1 AND ino > $2 ORDER BY ino"
			" LIMIT $3",
			3,
			{LPG_INT8OID, LPG_INT8OID, LPG_INT8OID}},
	[S_LIST_INO_NAMES] = {"lpg_list_ino_names",
			      "SELECT " STORE_SQL_NAME_COLS " FROM entries"
			      " WHERE parent = $1 AND ino > $2 ORDER BY ino"
			      " LIMIT $3",
			      3,
			      {LPG_INT8OID, LPG_INT8OID, LPG_INT8OID}},
	[S_READ] =
		{"lpg_read",
		 "SELECT c.data FROM entries AS e"
		 " LEFT JOIN contents AS c ON c.ino = e.ino WHERE e.ino = $1",
		 1,
		 {LPG_INT8OID}},
	[S_FETCH] =
		{"lpg_fetch",
		 "SELECT " STORE_SQL_ROW_COLS_E ", c.data FROM entries AS e"
		 " LEFT JOIN contents AS c ON c.ino = e.ino WHERE e.ino = $1",
		 1,
		 {LPG_INT8OID}},
	/* $1: the inos */
	[S_READ_MANY] =
		{"lpg_read_many",
		 "SELECT e.ino, c.data FROM entries AS e"
		 " LEFT JOIN contents AS c ON c.ino = e.ino"
		 " WHERE e.ino = ANY($1)",
		 1,
		 {LPG_INT8ARRAYOID}},
	[S_HAS_CHILDREN] = {"lpg_has_children",
			    "SELECT 1 FROM entries WHERE parent = $1 LIMIT 1",
			    1,
			    {LPG_INT8OID}},
	/* $2: the inos left out */
	[S_SUBDIRS] = {"lpg_subdirs",
		       "SELECT count(*) FROM entries"
		       " WHERE parent = $1 AND kind = 0 AND ino <> ALL($2)",
		       2,
		       {LPG_INT8OID, LPG_INT8ARRAYOID}},
	/* the escaped length of a segment: its bytes, plus two per '.' and
	 * '%' (id.h), which encode(.., 'escape') keeps as they are; a file's
	 * segment is its stem, a directory's its name */
	[S_LONGEST] = {"lpg_longest",
		       "WITH RECURSIVE d(ino, kind, len) AS ("
		       "  SELECT ino, kind, " LPG_SEG_LEN("") " FROM entries"
		       "  WHERE parent = $1 AND ino <> ALL($2)"
		       "  UNION ALL"
		       "  SELECT e.ino, e.kind, d.len + 1 + " LPG_SEG_LEN("e.")
		       "  FROM entries AS e JOIN d ON e.parent = d.ino"
		       "  WHERE d.kind = 0 AND e.ino <> ALL($2))"
		       " SELECT coalesce(max(len), 0)::bigint FROM d",
		       2,
		       {LPG_INT8OID, LPG_INT8ARRAYOID}},
	[S_STATS] = {"lpg_stats",
		     "SELECT count(*),"
		     " coalesce(sum(size) FILTER (WHERE kind <> 0), 0)::bigint"
		     " FROM entries WHERE ino <> 1",
		     0,
		     {0}},
	[S_ALLOC] = {"lpg_alloc",
		     "UPDATE tierfs_meta SET value = value + $1"
		     " WHERE key = 'next_ino' AND value >= 2"
		     " AND value <= 9223372036854775807 - $1"
		     " RETURNING value - $1",
		     1,
		     {LPG_INT8OID}},
	/* The counter, read when S_ALLOC found no row: there, it has no
	 * room left; not there, it is missing or bad. */
	[S_NEXT_INO] = {"lpg_next_ino",
			"SELECT value FROM tierfs_meta"
			" WHERE key = 'next_ino' AND value >= 2",
			0,
			{0}},
	[S_SCAN] = {"lpg_scan",
		    "SELECT ino, parent, name FROM entries"
		    " WHERE ino > $1 AND ino <> 1 ORDER BY ino LIMIT $2",
		    2,
		    {LPG_INT8OID, LPG_INT8OID}},
	/* the rows deleted: their parents (the directories to rehash) and
	 * versions (what a rewritten row's version starts from) */
	[S_DEL_ENTRIES] = {"lpg_del_entries",
			   "DELETE FROM entries WHERE ino = ANY($1)"
			   " RETURNING ino, parent, version, hash",
			   1,
			   {LPG_INT8ARRAYOID}},
	[S_DEL_CONTENTS] = {"lpg_del_contents",
			    "DELETE FROM contents WHERE ino = ANY($1)",
			    1,
			    {LPG_INT8ARRAYOID}},
	[S_INS_ENTRIES] =
		{"lpg_ins_entries",
		 "INSERT INTO entries (ino, parent, name, stem, kind,"
		 " size, hash, version, mtime_ns, ctime_ns, mode, uid,"
		 " gid, explicit_dir, state, xattrs, atime_ns)"
		 " SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7,"
		 " $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
		 E_N,
		 {
			 [E_INO] = LPG_INT8ARRAYOID,
			 [E_PARENT] = LPG_INT8ARRAYOID,
			 [E_NAME] = LPG_BYTEAARRAYOID,
			 [E_STEM] = LPG_BYTEAARRAYOID,
			 [E_KIND] = LPG_INT2ARRAYOID,
			 [E_SIZE] = LPG_INT8ARRAYOID,
			 [E_HASH] = LPG_BYTEAARRAYOID,
			 [E_VERSION] = LPG_INT8ARRAYOID,
			 [E_MTIME] = LPG_INT8ARRAYOID,
			 [E_CTIME] = LPG_INT8ARRAYOID,
			 [E_MODE] = LPG_INT4ARRAYOID,
			 [E_UID] = LPG_INT8ARRAYOID,
			 [E_GID] = LPG_INT8ARRAYOID,
			 [E_EXPLICIT] = LPG_BOOLARRAYOID,
			 [E_STATE] = LPG_TEXTARRAYOID,
			 [E_XATTRS] = LPG_BYTEAARRAYOID,
			 [E_ATIME] = LPG_INT8ARRAYOID,
		 }},
	[S_PUT_CONTENTS] =
		{"lpg_put_contents",
		 "INSERT INTO contents (ino, data)"
		 " SELECT * FROM unnest($1, $2)"
		 " ON CONFLICT (ino) DO UPDATE SET data = EXCLUDED.data",
		 2,
		 {LPG_INT8ARRAYOID, LPG_BYTEAARRAYOID}},
	[S_PUT_CONTENT] =
		{"lpg_put_content",
		 "INSERT INTO contents (ino, data) VALUES ($1, $2)"
		 " ON CONFLICT (ino) DO UPDATE SET data = EXCLUDED.data",
		 2,
		 {LPG_INT8OID, LPG_BYTEAOID}},
	/* The directories of $1 that exist and all their ancestors, each
	 * with its level: the longest walk up from a directory of $1 to it.
	 * A directory's level is above that of each of its descendants in
	 * the set, so updating level by level, lowest first, is bottom-up.
	 * UNION drops the walks that meet at the same level. */
	[S_TOUCHED] = {"lpg_touched",
		       "WITH RECURSIVE up (ino, parent, level) AS ("
		       " SELECT ino, parent, 0 FROM entries"
		       " WHERE ino = ANY($1) AND kind = 0"
		       " UNION"
		       " SELECT e.ino, e.parent, u.level + 1 FROM up AS u"
		       " JOIN entries AS e ON e.ino = u.parent"
		       " WHERE e.kind = 0 AND u.level < $2)"
		       " SELECT ino, max(level)::bigint AS level FROM up"
		       " GROUP BY ino ORDER BY level, ino",
		       2,
		       {LPG_INT8ARRAYOID, LPG_INT8OID}},
	[S_MERKLE] = {"lpg_merkle",
		      "UPDATE entries AS d SET merkle = " LPG_MERKLE_OF_D
		      " WHERE d.ino = ANY($1) AND d.kind = 0"
		      " RETURNING d.ino, d.merkle",
		      1,
		      {LPG_INT8ARRAYOID}},
	/* Every entry that holds the (parent, name) or (parent, stem) of
	 * the changes $1..$3 (by position i, from 1): ino, kind, version.
	 * The batch's own entries are among them; the caller leaves those
	 * out (l3_pg_race.c), so the statement does not carry the batch's
	 * inos: sent with each chunk and planned with the values in place
	 * (PostgreSQL's first five runs of a prepared statement), 20,000 of
	 * them made it cost 15 ms per chunk of 1,000 names instead of 2. */
	[S_HOLDERS] = {"lpg_holders",
		       "SELECT u.i, e.ino, e.kind, e.version"
		       " FROM unnest($1, $2, $3) WITH ORDINALITY"
		       " AS u (parent, name, stem, i)"
		       " CROSS JOIN LATERAL ("
		       " SELECT x.ino, x.kind, x.version FROM entries AS x"
		       " WHERE x.parent = u.parent AND x.name = u.name"
		       " UNION ALL SELECT x.ino, x.kind, x.version"
		       " FROM entries AS x"
		       " WHERE x.parent = u.parent AND x.stem = u.stem) AS e",
		       3,
		       {LPG_INT8ARRAYOID, LPG_BYTEAARRAYOID,
			LPG_BYTEAARRAYOID}},
	/* The entries of $1 that have a child not among $2. NOT IN a
	 * subquery is a hashed subplan, built at its first use; <> ALL($2)
	 * compares each child with every element unless the plan was made
	 * with the values in place (then PostgreSQL 15 hashes the array),
	 * and after five runs PostgreSQL may keep a plan made without them:
	 * rm -r of a directory of 20,000 files in one batch took 0.9 s that
	 * way, 10 ms with this. $2 holds no NULL: NOT IN means <> ALL. */
	[S_BUSY_DIRS] = {"lpg_busy_dirs",
			 "SELECT d FROM unnest($1) AS d WHERE EXISTS ("
			 "SELECT 1 FROM entries AS k WHERE k.parent = d"
			 " AND k.ino NOT IN (SELECT unnest($2)))",
			 2,
			 {LPG_INT8ARRAYOID, LPG_INT8ARRAYOID}},
	/* Of the directory puts $1 (inos) with their new parents $2 (0 for
	 * a deletion: the chain ends there), by position i from 1, those
	 * that move a stored directory below itself: the walk up from the
	 * new parent takes each entry's parent after the batch (the put's,
	 * else the stored row's) until the root, a missing entry, the moved
	 * directory itself, or $3 steps. */
	[S_CYCLES] = {"lpg_cycles",
		      "WITH RECURSIVE b (ino, parent, i) AS ("
		      " SELECT * FROM unnest($1, $2) WITH ORDINALITY),"
		      " up (i, start, at, depth) AS ("
		      " SELECT b.i, b.ino, b.parent, 1 FROM b"
		      " JOIN entries AS e ON e.ino = b.ino"
		      " WHERE e.kind = 0 AND b.parent <> 0"
		      " AND e.parent <> b.parent"
		      " UNION ALL"
		      " SELECT u.i, u.start, COALESCE("
		      "(SELECT b.parent FROM b WHERE b.ino = u.at LIMIT 1),"
		      " (SELECT e.parent FROM entries AS e WHERE e.ino = u.at)),"
		      " u.depth + 1 FROM up AS u"
		      " WHERE u.at <> u.start AND u.at <> 1 AND u.depth < $3)"
		      " SELECT DISTINCT i FROM up WHERE at = start ORDER BY i",
		      3,
		      {LPG_INT8ARRAYOID, LPG_INT8ARRAYOID, LPG_INT8OID}},
	/* Records the inos $1, in order, under origin $2: takes the next
	 * sequence numbers from feed_head, whose row lock it keeps until
	 * the transaction ends (see l3_pg_feed.c). Returns the new head and
	 * the highest sequence number trimmed. */
	[S_FEED_ADD] = {"lpg_feed_add",
			"WITH h AS (UPDATE feed_head"
			" SET seq = seq + cardinality($1) WHERE id = 1"
			" RETURNING seq, trimmed),"
			" r AS (INSERT INTO feed (seq, origin, ino, at)"
			" SELECT h.seq - cardinality($1) + u.i, $2, u.ino,"
			" clock_timestamp() FROM h,"
			" unnest($1) WITH ORDINALITY AS u (ino, i))"
			" SELECT seq, trimmed FROM h",
			2,
			{LPG_INT8ARRAYOID, LPG_INT8OID}},
	/* Trims the records older than $1 seconds and those beyond the
	 * newest $2, always a prefix of the feed (the oldest sequence
	 * numbers), and raises feed_head.trimmed to the last one cut. The
	 * oldest record still young enough is found from the low end of
	 * the primary key: it reads about as many rows as it deletes. */
	[S_FEED_TRIM] = {"lpg_feed_trim",
			 "WITH h AS (SELECT seq FROM feed_head WHERE id = 1),"
			 " c AS (SELECT greatest(coalesce((SELECT f.seq - 1"
			 " FROM feed AS f WHERE f.at >= clock_timestamp()"
			 " - $1 * interval '1 second'"
			 " ORDER BY f.seq LIMIT 1), h.seq), h.seq - $2) AS cut"
			 " FROM h),"
			 " d AS (DELETE FROM feed"
			 " WHERE seq <= (SELECT cut FROM c))"
			 " UPDATE feed_head"
			 " SET trimmed = greatest(trimmed, (SELECT cut FROM c))"
			 " WHERE id = 1 RETURNING trimmed",
			 2,
			 {LPG_INT8OID, LPG_INT8OID}},
	/* The records above $1, at most $2, each with its entry's row as
	 * it is now (NULL columns when gone), in sequence order; then the
	 * highest sequence number trimmed. In one statement, so one
	 * snapshot: what is trimmed and what is read agree. A row with no
	 * record (LEFT JOIN) answers when there is none. */
	[S_FEED_READ] = {"lpg_feed_read",
			 "SELECT " STORE_SQL_ROW_COLS_E ","
			 " h.trimmed, f.seq, f.origin, f.ino"
			 " FROM feed_head AS h LEFT JOIN LATERAL ("
			 " SELECT * FROM feed WHERE seq > $1"
			 " ORDER BY seq LIMIT $2) AS f ON true"
			 " LEFT JOIN entries AS e ON e.ino = f.ino"
			 " WHERE h.id = 1 ORDER BY f.seq",
			 2,
			 {LPG_INT8OID, LPG_INT8OID}},
	[S_FEED_HEAD] = {"lpg_feed_head",
			 "SELECT seq FROM feed_head WHERE id = 1",
			 0,
			 {0}},
};
