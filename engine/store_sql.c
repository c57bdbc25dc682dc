/*
 * store_sql.c - what the SQLite and PostgreSQL stores share (store_sql.h):
 * the row as columns, the root directory, the meta rows' check and the
 * ranges of the ops' arguments.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store_sql.h"

struct store_cols store_cols_of(uint64_t ino, uint64_t parent, const char *name,
				const struct item_meta *m)
{
	struct store_cols c = {
		.ino = ino,
		.parent = parent,
		.name = name,
		.name_len = strlen(name),
		.kind = (int)m->kind,
		.size = m->size,
		.version = m->version,
		.mtime_ns = m->mtime_ns,
		.atime_ns = m->atime_ns,
		.ctime_ns = m->ctime_ns,
		.mode = m->mode,
		.uid = m->uid,
		.gid = m->gid,
		.explicit_dir = m->explicit_dir,
	};

	if (m->kind != ITEM_DIR) {
		c.stem = name;
		c.stem_len = store_stem_len(name, c.name_len, m->kind);
	}
	if (!item_hash_is_zero(m->hash)) {
		c.hash = m->hash;
		c.hash_len = ITEM_HASH_LEN;
	}
	if (m->state && m->state[0]) {
		c.state = m->state;
		c.state_len = strlen(m->state);
	}
	if (m->xattrs && m->xattrs_len) {
		c.xattrs = m->xattrs;
		c.xattrs_len = m->xattrs_len;
	}
	return c;
}

void store_root_meta(struct item_meta *m)
{
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	memset(m, 0, sizeof(*m));
	m->kind = ITEM_DIR;
	m->version = 1;
	m->mtime_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
	m->atime_ns = m->mtime_ns;
	m->ctime_ns = m->mtime_ns;
	m->mode = S_IFDIR | 0755;
	m->uid = (uint32_t)geteuid();
	m->gid = (uint32_t)getegid();
	m->explicit_dir = true;
}

int store_schema_check(const struct store_backend *b, const char *format,
		       bool have_version, long long version, int supported)
{
	if (!format || strcmp(format, STORE_SQL_FORMAT) != 0 || !have_version ||
	    version < 1) {
		eng_logf(b->log, LOG_ERR,
			 "%s '%s': cannot open: not a tierfs database", b->name,
			 b->target);
		return -EINVAL;
	}
	if (version > supported) {
		eng_logf(b->log, LOG_ERR,
			 "%s '%s': cannot open: schema version %lld is newer "
			 "than this build supports (%d)",
			 b->name, b->target, version, supported);
		return -EINVAL;
	}
	return 0;
}

bool store_list_page(uint64_t parent, const char **after, size_t *after_len,
		     size_t *limit)
{
	if (!*after)
		*after = "";
	if (*limit == 0 || parent > STORE_SQL_MAX_INO)
		return false;
	if (*limit > INT_MAX)
		*limit = INT_MAX;
	*after_len = strnlen(*after, STORE_NAME_MAX + 1);
	return true;
}

bool store_scan_page(uint64_t after, size_t *limit)
{
	if (*limit == 0 || after >= STORE_SQL_MAX_INO)
		return false;
	if (*limit > INT_MAX)
		*limit = INT_MAX;
	return true;
}

void store_key_fill(struct store_key *k, uint64_t ino, uint64_t parent,
		    const void *name, size_t len)
{
	if (len > STORE_NAME_MAX)
		len = STORE_NAME_MAX;
	k->ino = ino;
	k->parent = parent;
	if (len)
		memcpy(k->name, name, len);
	k->name[len] = '\0';
}
