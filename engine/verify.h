/*
 * verify.h - compares the Redis mirror (L2) with L3 and repairs it.
 *
 * L3 is the truth. L2, a cache (cache.h), holds, for each file, its
 * metadata and content ("e:" keys) and, for each directory, the Merkle hash
 * L3 last committed for it ("t:" keys, see l2_redis.c and merkle.h).
 * verify_run() walks L3's tree from the root down, breadth first, and compares:
 *
 *   each directory: the mirrored hash with L3's            TREE_*
 *   each file: L2's entry with L3's row and content        ITEM_*
 *
 * With quick set, a directory whose mirrored hash equals L3's is taken as
 * in step and its subtree is skipped: that costs one read per directory on
 * the way down to the drift, but it trusts the mirror, so an "e:" key lost
 * or changed behind tierfs's back (eviction, redis-cli) below a directory
 * whose hash was kept is not seen. Without quick (the default) every
 * file's entry is read and its content hashed.
 *
 * A finding is checked a second time, with L3 and L2 read again, before it
 * is reported, so that a change a live mount commits meanwhile (L3 first,
 * then L2) is not reported as drift. A run over a store that is being
 * written can still report a change that lands between the two reads;
 * a quiet store gives an exact report.
 *
 * Then, without quick, L2's keys are walked (each_cached) for orphans: an
 * entry or a mirrored hash of an inode that is not a file, or not a
 * directory, in L3's tree (left behind by deletes Redis missed). Readers
 * never reach them, as they look entries up by L3's inode numbers, but
 * they hold memory. They are reported with the path "(not in L3)".
 *
 * With repair set, each finding is fixed as it is found: a file's entry is
 * rewritten in L2 from L3's row and content, a directory's hash from L3's,
 * and an orphan is deleted.
 */
#ifndef TIERFS_VERIFY_H
#define TIERFS_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

#include "cache.h"
#include "store.h"

enum verify_what {
	VERIFY_TREE_MISSING, /* the directory has no mirrored hash */
	VERIFY_TREE_DIFFERS, /* the mirrored hash is not L3's (or no hash) */
	VERIFY_ITEM_MISSING, /* L2 has no entry for the file */
	VERIFY_ITEM_STALE,   /* L2's metadata is not L3's */
	VERIFY_ITEM_CORRUPT, /* L2's entry does not decode, or its content
				does not match the hash */
	VERIFY_ORPHAN_ITEM,  /* L2 has an entry L3's tree has no file for */
	VERIFY_ORPHAN_TREE,  /* L2 has a hash L3's tree has no directory for */
};

struct verify_finding {
	enum verify_what what;
	const char *path; /* "/" for the root, "/a/b.json" below it */
	uint64_t ino;
	const char *detail; /* one short phrase, e.g. "version 3, L3 has 5" */
	bool repaired;
};

struct verify_progress {
	uint64_t dirs, files; /* compared so far */
	uint64_t total;	      /* entries in L3 (files + dirs), 0 if unknown */
	uint64_t findings, repaired;
};

struct verify_opts {
	bool repair;
	bool quick;
	/* Called for each finding, and for progress after every few hundred
	 * entries; either may be NULL. */
	void (*report)(void *arg, const struct verify_finding *f);
	void (*progress)(void *arg, const struct verify_progress *p);
	void *arg;
};

/* Runs the comparison; *out (may be NULL) gets the final counts. Returns 0
 * when the walk completed (findings or not), or the negative errno of a
 * tier that failed; a failed repair is a failure. */
int verify_run(struct store *l3, struct cache *l2, const struct verify_opts *o,
	       struct verify_progress *out);

/* "missing tree hash", "tree hash differs", ... for messages. */
const char *verify_what_name(enum verify_what what);

#endif
