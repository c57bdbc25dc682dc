/*
 * options.h - the tierfs command line (docs/design.md §9, README.md).
 *
 *   tierfs [OPTIONS] MOUNTPOINT
 *   tierfs [OPTIONS] STORE MOUNTPOINT     (as mount.fuse3 calls it)
 *
 * Store options, each also an -o option and an environment variable:
 * --postgres=URI (-o postgres=URI, TIERFS_POSTGRES), --sqlite=FILE (-o
 * sqlite=FILE, TIERFS_SQLITE) and --redis=URL (-o redis=URL,
 * TIERFS_REDIS). Tuning comes as -o options (see tfs_usage()). Options that
 * only mean something in /etc/fstab are dropped; any other option this file
 * does not know is left in the argument list for libfuse, which refuses
 * the ones it does not know either.
 */
#ifndef TIERFS_OPTIONS_H
#define TIERFS_OPTIONS_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <stdbool.h>

#include "engine.h"

struct tfs_options {
	struct eng_config eng;
	char *sqlite_path;    /* owned */
	char *postgres;	      /* owned conninfo, or NULL */
	char *redis;	      /* owned URL, or NULL */
	char *redis_prefix;   /* owned, or NULL for the default */
	char *wal_path;	      /* owned, or NULL for the default */
	double entry_timeout; /* seconds */
	double attr_timeout;
	int show_help;
	bool read_only; /* -o ro: the kernel refuses every change (EROFS) */
	bool default_store; /* no store was named: the default SQLite file */
	bool default_wal;   /* wal_path was not given: the PostgreSQL default */
};

/*
 * Parses and removes tierfs's own options from @args into @o (initialised
 * here). Resolves the store: --postgres, else --sqlite, then STORE, then
 * TIERFS_POSTGRES (unless a SQLite file was named), then TIERFS_SQLITE,
 * then the default file, whose directory is created; giving both
 * --postgres and --sqlite is an error. With PostgreSQL and no wal_path,
 * the log goes under $XDG_STATE_HOME/tierfs/. Returns 0, or -1 after
 * printing what is wrong to stderr.
 */
int tfs_options_parse(struct fuse_args *args, struct tfs_options *o);
void tfs_options_release(struct tfs_options *o);

/* Overwrites in place, with '*', every password in @s: the one in a URI
 * ("scheme://user:PASSWORD@host"), in a URI query ("?password=PASSWORD")
 * and in a libpq key=value string ("password=PASSWORD", read as libpq
 * reads it). Used on argv so that ps never shows one, and before a
 * conninfo is hashed or printed. */
void tfs_mask_secrets(char *s);
void tfs_usage(const char *prog);

#endif
