/*
 * wal.c - the local write-ahead log (contract and record layout: wal.h).
 *
 * The log is one directory of segment files named "wal-%016llx.log" after
 * their number (16 lowercase hex digits); any other entry of the directory
 * is ignored. wal_open() lists the segments already there (they are only
 * read by wal_replay() and deleted by wal_drop_before(), never written) and
 * creates a new one numbered one past the highest; wal_rotate() creates the
 * next. Only the newest segment, the current one, is appended to.
 *
 * A record is a 12-byte header (u32 magic "TFW2", u32 body_len, u32 CRC-32
 * of the body, zlib's crc32()) and the body whose layout wal.h gives, all
 * integers little endian, records back to back without padding. A record
 * is written with one writev() when it can be (the content bytes go out
 * from the item without a copy), looping on short writes and EINTR.
 *
 * What replay accepts is exactly what append writes: wal_append() refuses
 * (-EINVAL) a record that replay would reject (a name longer than 255
 * bytes, a state of 0xffff bytes or more, a malformed xattr blob, ...), so
 * a record that was appended whole is always replayed. Replay also accepts
 * the layout of older builds ("TFW1", without atime_ns: wal.h), which
 * append never writes.
 *
 * Invariants:
 *  - segs[] lists the segments of the directory in number order with their
 *    sizes; the last one is the current segment, open as fd; bytes is the
 *    sum of the sizes. Segments numbered below first_new existed at open.
 *  - appends never follow garbage: a failed write is truncated away before
 *    the error returns. While that truncate keeps failing (torn), appends
 *    and rotations fail with -EIO: no record ever follows garbage, so
 *    replay can stop at the first bad record and still lose nothing that
 *    was appended whole.
 *  - the directory is fsynced after the first segment is created; after a
 *    rotation or a deletion, by the next wal_sync() or wal_seal()
 *    (dir_dirty), so that neither runs under the engine's lock.
 *
 * wal_close() does not sync: the engine calls wal_sync() first when the
 * closed log must survive power loss.
 */
#include <assert.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <libgen.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include <zlib.h>

#include "wal.h"

#define WAL_HDR_LEN 12
#define WAL_NAME_MAX 255       /* bytes in an entry name (STORE_NAME_MAX) */
#define WAL_STATE_NULL 0xffff  /* state_len of a NULL state */
#define WAL_XATTR_NAME_MAX 255 /* see item.h */
#define WAL_XATTR_VALUE_MAX 65536
#define WAL_XATTR_HDR 6	    /* u16 name_len + u32 value_len */
#define WAL_SEG_NAME_LEN 24 /* "wal-" + 16 hex digits + ".log" */
#define WAL_QUARANTINE "quarantine.log" /* see wal_quarantine() */

/* Body bytes that do not depend on the record's strings and blobs... */
#define WAL_BODY_FIXED                                                         \
	(8 + 8 + 1 + 8 + 2 + 4 + 8 + ITEM_HASH_LEN + 8 + 8 + 8 + 8 + 4 + 4 +   \
	 4 + 1 + 2 + 4 + 1)
/* ... and in the layout without atime_ns (WAL_MAGIC_V1). */
#define WAL_BODY_FIXED_V1 (WAL_BODY_FIXED - 8)
/* ... and what has_data adds besides the id and content bytes. */
#define WAL_BODY_DATA_FIXED (4 + 8)

struct wal_seg {
	int64_t num;
	uint64_t size;
};

struct wal {
	char *dir;
	int dirfd;
	/* The current segment; written under the caller's lock by
	 * wal_rotate(), read without it by wal_sync(). */
	atomic_int fd;
	uint64_t max_bytes;
	uint64_t bytes;	      /* sum of segs[].size */
	struct wal_seg *segs; /* by number; the last one is current */
	size_t nsegs, cap;
	int64_t first_new; /* the segment wal_open() created */
	bool torn;	   /* the current segment ends with garbage */
	/* The segment wal_rotate() left, not yet synced (-1 when none): only
	 * the rotating thread touches it. */
	int unsealed_fd;
	/* A segment was created or deleted since the directory was synced. */
	atomic_bool dir_dirty;
	struct eng_log log;
};

/* --- little endian encoding --- */

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v & 0xff;
	p[1] = v >> 8;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (v >> (8 * i)) & 0xff;
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (v >> (8 * i)) & 0xff;
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* A cursor writing into a buffer sized beforehand. */
struct wr {
	uint8_t *p;
};

static void wr_u8(struct wr *c, uint8_t v)
{
	*c->p++ = v;
}

static void wr_u16(struct wr *c, uint16_t v)
{
	put16(c->p, v);
	c->p += 2;
}

static void wr_u32(struct wr *c, uint32_t v)
{
	put32(c->p, v);
	c->p += 4;
}

static void wr_u64(struct wr *c, uint64_t v)
{
	put64(c->p, v);
	c->p += 8;
}

static void wr_bytes(struct wr *c, const void *p, size_t len)
{
	if (len)
		memcpy(c->p, p, len);
	c->p += len;
}

/* A bounded cursor over a record body; any overrun sets bad. */
struct rd {
	const uint8_t *p;
	size_t left;
	bool bad;
};

static const uint8_t *rd_take(struct rd *c, uint64_t n)
{
	const uint8_t *p = c->p;

	if (c->bad || n > c->left) {
		c->bad = true;
		return NULL;
	}
	c->p += n;
	c->left -= n;
	return p;
}

static uint8_t rd_u8(struct rd *c)
{
	const uint8_t *p = rd_take(c, 1);

	return p ? p[0] : 0;
}

static uint16_t rd_u16(struct rd *c)
{
	const uint8_t *p = rd_take(c, 2);

	return p ? get16(p) : 0;
}

static uint32_t rd_u32(struct rd *c)
{
	const uint8_t *p = rd_take(c, 4);

	return p ? get32(p) : 0;
}

static uint64_t rd_u64(struct rd *c)
{
	const uint8_t *p = rd_take(c, 8);

	return p ? get64(p) : 0;
}

/* --- record validation, shared by append and replay --- */

/* true when the @len bytes at @b are a well-formed xattr blob (item.h). */
static bool xattrs_valid(const uint8_t *b, size_t len)
{
	size_t off = 0;

	while (off < len) {
		size_t kl, vl;

		if (len - off < WAL_XATTR_HDR)
			return false;
		kl = get16(b + off);
		vl = get32(b + off + 2);
		if (kl == 0 || kl > WAL_XATTR_NAME_MAX ||
		    vl > WAL_XATTR_VALUE_MAX ||
		    kl + vl > len - off - WAL_XATTR_HDR ||
		    memchr(b + off + WAL_XATTR_HDR, '\0', kl))
			return false;
		off += WAL_XATTR_HDR + kl + vl;
	}
	return true;
}

/*
 * The name rule: 1..255 bytes without NUL; an empty name stands for the NULL
 * name of a deletion, and for the root's "" (parent 0) otherwise.
 */
static bool name_valid(bool deleted, uint64_t parent, const char *name,
		       size_t len)
{
	if (len > WAL_NAME_MAX || (name && memchr(name, '\0', len)))
		return false;
	return len > 0 || deleted || parent == 0;
}

/* --- encoding --- */

/*
 * Encodes @rec into a new buffer (*out, *out_len bytes): the header and the
 * whole body except the content bytes, which follow it (*data, *data_len);
 * the header's CRC covers both. Returns 0, -EINVAL (not encodable) or
 * -ENOMEM.
 */
static int rec_encode(const struct change *rec, uint8_t **out, size_t *out_len,
		      const void **data, size_t *data_len)
{
	const struct item_meta *m = &rec->meta;
	size_t name_len = rec->name ? strlen(rec->name) : 0;
	size_t state_len = m->state ? strlen(m->state) : 0;
	size_t xattrs_len = m->xattrs ? m->xattrs_len : 0;
	const char *id = rec->item ? item_id(rec->item) : NULL;
	size_t id_len = id ? strlen(id) : 0;
	size_t dlen = rec->item ? item_size(rec->item) : 0;
	uint64_t body_len;
	struct wr c;
	uint8_t *buf;
	uLong crc;

	if (!name_valid(rec->deleted, rec->parent, rec->name, name_len) ||
	    state_len >= WAL_STATE_NULL || xattrs_len > UINT32_MAX ||
	    !xattrs_valid(m->xattrs, xattrs_len) ||
	    (unsigned)m->kind > ITEM_BINARY || id_len > UINT32_MAX)
		return -EINVAL;
	body_len = WAL_BODY_FIXED + name_len + state_len + xattrs_len;
	if (rec->item)
		body_len += WAL_BODY_DATA_FIXED + id_len + (uint64_t)dlen;
	if (body_len > UINT32_MAX)
		return -EINVAL;

	*out_len = WAL_HDR_LEN + (size_t)(body_len - dlen);
	buf = malloc(*out_len);
	if (!buf)
		return -ENOMEM;
	c.p = buf + WAL_HDR_LEN;
	wr_u64(&c, rec->seq);
	wr_u64(&c, rec->ino);
	wr_u8(&c, rec->deleted);
	wr_u64(&c, rec->parent);
	wr_u16(&c, (uint16_t)name_len);
	wr_bytes(&c, rec->name, name_len);
	wr_u32(&c, (uint32_t)m->kind);
	wr_u64(&c, m->size);
	wr_bytes(&c, m->hash, ITEM_HASH_LEN);
	wr_u64(&c, m->version);
	wr_u64(&c, (uint64_t)m->mtime_ns);
	wr_u64(&c, (uint64_t)m->atime_ns);
	wr_u64(&c, (uint64_t)m->ctime_ns);
	wr_u32(&c, m->mode);
	wr_u32(&c, m->uid);
	wr_u32(&c, m->gid);
	wr_u8(&c, m->explicit_dir);
	wr_u16(&c, m->state ? (uint16_t)state_len : WAL_STATE_NULL);
	wr_bytes(&c, m->state, state_len);
	wr_u32(&c, (uint32_t)xattrs_len);
	wr_bytes(&c, m->xattrs, xattrs_len);
	wr_u8(&c, rec->item != NULL);
	if (rec->item) {
		wr_u32(&c, (uint32_t)id_len);
		wr_bytes(&c, id, id_len);
		wr_u64(&c, dlen);
	}
	assert(c.p == buf + *out_len);

	crc = crc32(0L, Z_NULL, 0);
	crc = crc32_z(crc, buf + WAL_HDR_LEN, *out_len - WAL_HDR_LEN);
	if (dlen)
		crc = crc32_z(crc, item_data(rec->item), dlen);
	put32(buf, WAL_MAGIC);
	put32(buf + 4, (uint32_t)body_len);
	put32(buf + 8, (uint32_t)crc);
	*out = buf;
	*data = rec->item ? item_data(rec->item) : NULL;
	*data_len = dlen;
	return 0;
}

/* --- decoding --- */

/* A copy of @len bytes at @p with a NUL after them, or NULL. */
static char *dup_str(const uint8_t *p, size_t len)
{
	char *s = malloc(len + 1);

	if (s) {
		if (len)
			memcpy(s, p, len);
		s[len] = '\0';
	}
	return s;
}

/*
 * Decodes the @len bytes at @body, of the layout @magic names, into a new
 * record (*out). Returns 0, -EBADMSG (an unknown magic, or the body does
 * not parse exactly) or -ENOMEM.
 */
static int rec_decode(uint32_t magic, const uint8_t *body, size_t len,
		      struct change **out)
{
	struct rd c = {.p = body, .left = len};
	struct change *rec;
	const uint8_t *name, *hash, *state = NULL, *xattrs, *id = NULL;
	const uint8_t *data = NULL;
	uint32_t kind, xattrs_len, id_len = 0;
	uint16_t name_len, state_len;
	uint8_t deleted, explicit_dir, has_data;
	uint64_t data_len = 0;
	struct item_meta *m;
	char *id_str;

	if (magic != WAL_MAGIC && magic != WAL_MAGIC_V1)
		return -EBADMSG;
	rec = calloc(1, sizeof(*rec));
	if (!rec)
		return -ENOMEM;
	m = &rec->meta;
	rec->seq = rd_u64(&c);
	rec->ino = rd_u64(&c);
	deleted = rd_u8(&c);
	rec->parent = rd_u64(&c);
	name_len = rd_u16(&c);
	name = rd_take(&c, name_len);
	kind = rd_u32(&c);
	m->size = rd_u64(&c);
	hash = rd_take(&c, ITEM_HASH_LEN);
	m->version = rd_u64(&c);
	m->mtime_ns = (int64_t)rd_u64(&c);
	/* the old layout kept no atime: its builds showed mtime */
	m->atime_ns = magic == WAL_MAGIC_V1 ? m->mtime_ns : (int64_t)rd_u64(&c);
	m->ctime_ns = (int64_t)rd_u64(&c);
	m->mode = rd_u32(&c);
	m->uid = rd_u32(&c);
	m->gid = rd_u32(&c);
	explicit_dir = rd_u8(&c);
	state_len = rd_u16(&c);
	if (state_len != WAL_STATE_NULL)
		state = rd_take(&c, state_len);
	xattrs_len = rd_u32(&c);
	xattrs = rd_take(&c, xattrs_len);
	has_data = rd_u8(&c);
	if (has_data) {
		id_len = rd_u32(&c);
		id = rd_take(&c, id_len);
		data_len = rd_u64(&c);
		data = rd_take(&c, data_len);
	}
	if (c.bad || c.left || deleted > 1 || explicit_dir > 1 ||
	    has_data > 1 || kind > ITEM_BINARY ||
	    !name_valid(deleted, rec->parent, (const char *)name, name_len) ||
	    (state && memchr(state, '\0', state_len)) ||
	    !xattrs_valid(xattrs, xattrs_len) ||
	    (id && memchr(id, '\0', id_len))) {
		free(rec);
		return -EBADMSG;
	}

	rec->deleted = deleted;
	m->kind = (enum item_kind)kind;
	memcpy(m->hash, hash, ITEM_HASH_LEN);
	m->explicit_dir = explicit_dir;
	if (name_len || !deleted) {
		rec->name = dup_str(name, name_len);
		if (!rec->name)
			goto out_nomem;
	}
	if (state) {
		m->state = dup_str(state, state_len);
		if (!m->state)
			goto out_nomem;
	}
	if (xattrs_len) {
		m->xattrs = malloc(xattrs_len);
		if (!m->xattrs)
			goto out_nomem;
		memcpy(m->xattrs, xattrs, xattrs_len);
		m->xattrs_len = xattrs_len;
	}
	if (has_data) {
		void *copy = malloc(data_len ? data_len : 1);

		id_str = dup_str(id, id_len);
		if (!copy || !id_str) {
			free(copy);
			free(id_str);
			goto out_nomem;
		}
		if (data_len)
			memcpy(copy, data, data_len);
		rec->item = item_new_take(id_str, copy, data_len, m);
		free(id_str);
		if (!rec->item)
			goto out_nomem;
	}
	*out = rec;
	return 0;

out_nomem:
	change_free(rec);
	return -ENOMEM;
}

int wal_record_decode(uint32_t magic, const void *body, size_t len,
		      struct change **out)
{
	return rec_decode(magic, body, len, out);
}

/* --- files --- */

static void seg_name(char buf[WAL_SEG_NAME_LEN + 1], int64_t num)
{
	snprintf(buf, WAL_SEG_NAME_LEN + 1, "wal-%016llx.log",
		 (unsigned long long)num);
}

/* true when @name is a segment's name; its number goes to *num. Only the
 * exact form seg_name() writes counts. */
static bool seg_parse(const char *name, int64_t *num)
{
	char canon[WAL_SEG_NAME_LEN + 1];
	unsigned long long v;
	char *end;

	if (strlen(name) != WAL_SEG_NAME_LEN || strncmp(name, "wal-", 4) ||
	    !isxdigit((unsigned char)name[4]))
		return false;
	errno = 0;
	v = strtoull(name + 4, &end, 16);
	if (errno || end != name + 20 || v > INT64_MAX)
		return false;
	seg_name(canon, (int64_t)v);
	if (strcmp(canon, name) != 0)
		return false;
	*num = (int64_t)v;
	return true;
}

/* Converts an errno of opening or creating to one wal_open() may return. */
static int open_errno(int e)
{
	switch (e) {
	case ENOENT:
		return -ENOENT;
	case EACCES:
	case EPERM:
	case EROFS:
		return -EACCES;
	case ENOMEM:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

static int sync_dir(struct wal *w)
{
	if (fsync(w->dirfd) < 0 && errno != EINVAL) {
		eng_logf(&w->log, LOG_ERR, "cannot sync wal directory '%s': %s",
			 w->dir, strerror(errno));
		return -EIO;
	}
	return 0;
}

/* Syncs the directory holding @dir, best effort: makes a new @dir last. */
static void sync_parent(const char *dir)
{
	char *copy = strdup(dir);
	int fd;

	if (!copy)
		return;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	free(copy);
}

static int segs_reserve(struct wal *w)
{
	struct wal_seg *s;
	size_t cap;

	if (w->nsegs < w->cap)
		return 0;
	cap = w->cap ? 2 * w->cap : 8;
	s = realloc(w->segs, cap * sizeof(*s));
	if (!s)
		return -ENOMEM;
	w->segs = s;
	w->cap = cap;
	return 0;
}

static int seg_cmp(const void *a, const void *b)
{
	const struct wal_seg *x = a, *y = b;

	return (x->num > y->num) - (x->num < y->num);
}

/* Fills segs[] with the segments in the directory. */
static int segs_list(struct wal *w)
{
	struct dirent *de;
	struct stat st;
	int64_t num;
	DIR *d;
	int fd, r = 0;

	fd = openat(w->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d = fdopendir(fd))) {
		r = open_errno(errno);
		eng_logf(&w->log, LOG_ERR, "cannot list wal directory '%s': %s",
			 w->dir, strerror(errno));
		if (fd >= 0)
			close(fd);
		return r;
	}
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno) {
				r = -EIO;
				eng_logf(&w->log, LOG_ERR,
					 "cannot list wal directory '%s': %s",
					 w->dir, strerror(errno));
			}
			break;
		}
		if (!seg_parse(de->d_name, &num))
			continue;
		if (fstatat(w->dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW)) {
			if (errno == ENOENT)
				continue;
			r = -EIO;
			eng_logf(&w->log, LOG_ERR,
				 "cannot stat wal segment '%s/%s': %s", w->dir,
				 de->d_name, strerror(errno));
			break;
		}
		if (!S_ISREG(st.st_mode))
			continue;
		r = segs_reserve(w);
		if (r < 0)
			break;
		w->segs[w->nsegs].num = num;
		w->segs[w->nsegs].size = (uint64_t)st.st_size;
		w->nsegs++;
		w->bytes += (uint64_t)st.st_size;
	}
	closedir(d);
	if (r == 0 && w->nsegs)
		qsort(w->segs, w->nsegs, sizeof(*w->segs), seg_cmp);
	return r;
}

/* Creates segment @num (empty), adds it to segs[] and returns its fd, or a
 * negative errno (then nothing changed). With @sync the directory is synced
 * at once; otherwise the next wal_sync() or wal_seal() does it. */
static int seg_create(struct wal *w, int64_t num, bool sync)
{
	char name[WAL_SEG_NAME_LEN + 1];
	int fd, r;

	r = segs_reserve(w);
	if (r < 0)
		return r;
	seg_name(name, num);
	fd = openat(w->dirfd, name,
		    O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = open_errno(errno);
		eng_logf(&w->log, LOG_ERR,
			 "cannot create wal segment '%s/%s': %s", w->dir, name,
			 strerror(errno));
		return r;
	}
	r = sync ? sync_dir(w) : 0;
	if (r < 0) {
		unlinkat(w->dirfd, name, 0);
		close(fd);
		return r;
	}
	if (!sync)
		atomic_store(&w->dir_dirty, true);
	w->segs[w->nsegs].num = num;
	w->segs[w->nsegs].size = 0;
	w->nsegs++;
	return fd;
}

static struct wal_seg *seg_cur(struct wal *w)
{
	return &w->segs[w->nsegs - 1];
}

/* Cuts the current segment back to its last whole record. */
static int seg_untear(struct wal *w)
{
	struct wal_seg *cur = seg_cur(w);
	char name[WAL_SEG_NAME_LEN + 1];
	int e;

	if (ftruncate(atomic_load(&w->fd), (off_t)cur->size) == 0) {
		w->torn = false;
		return 0;
	}
	e = errno;
	seg_name(name, cur->num);
	eng_logf(&w->log, LOG_ERR,
		 "cannot truncate wal segment '%s/%s' after a failed write: %s",
		 w->dir, name, strerror(e));
	w->torn = true;
	return -EIO;
}

/* --- public API --- */

int wal_open(const char *dir, uint64_t max_bytes, const struct eng_log *log,
	     struct wal **out)
{
	struct wal *w = calloc(1, sizeof(*w));
	bool created = false;
	int r, fd;

	if (!w)
		return -ENOMEM;
	w->dirfd = -1;
	w->unsealed_fd = -1;
	atomic_init(&w->fd, -1);
	atomic_init(&w->dir_dirty, false);
	w->max_bytes = max_bytes;
	if (log)
		w->log = *log;
	w->dir = strdup(dir);
	if (!w->dir) {
		r = -ENOMEM;
		goto out_close;
	}
	if (mkdir(dir, 0700) == 0) {
		created = true;
	} else if (errno != EEXIST) {
		r = open_errno(errno);
		eng_logf(&w->log, LOG_ERR,
			 "cannot create wal directory '%s': %s", dir,
			 strerror(errno));
		goto out_close;
	}
	w->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (w->dirfd < 0) {
		r = open_errno(errno);
		eng_logf(&w->log, LOG_ERR, "cannot open wal directory '%s': %s",
			 dir, strerror(errno));
		goto out_close;
	}
	if (created)
		sync_parent(dir);
	r = segs_list(w);
	if (r < 0)
		goto out_close;
	if (w->nsegs && seg_cur(w)->num == INT64_MAX) {
		r = -EIO;
		eng_logf(&w->log, LOG_ERR,
			 "cannot open wal in '%s': segment numbers used up",
			 dir);
		goto out_close;
	}
	w->first_new = w->nsegs ? seg_cur(w)->num + 1 : 1;
	fd = seg_create(w, w->first_new, true);
	if (fd < 0) {
		r = fd;
		goto out_close;
	}
	atomic_store(&w->fd, fd);
	*out = w;
	return 0;

out_close:
	wal_close(w);
	return r;
}

void wal_close(struct wal *w)
{
	int fd;

	if (!w)
		return;
	fd = atomic_load(&w->fd);
	if (fd >= 0)
		close(fd);
	if (w->unsealed_fd >= 0)
		close(w->unsealed_fd);
	if (w->dirfd >= 0)
		close(w->dirfd);
	free(w->segs);
	free(w->dir);
	free(w);
}

/* Reads up to @len bytes; returns how many (fewer only at end of file) or a
 * negative errno. */
static ssize_t read_full(int fd, void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = read(fd, (char *)buf + done, len - done);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

/*
 * Replays segment @num: hands each valid record to @fn and counts it in
 * *count, up to the end or the first invalid record. Returns 0 (read to
 * its end), 1 (stopped at an invalid record), -EIO, -ENOMEM or what @fn
 * failed with.
 */
static int seg_replay(struct wal *w, int64_t num,
		      int (*fn)(void *arg, struct change *rec), void *arg,
		      int *count)
{
	char name[WAL_SEG_NAME_LEN + 1];
	const char *why = NULL;
	uint8_t hdr[WAL_HDR_LEN], *body = NULL;
	uint64_t size, off = 0;
	struct stat st;
	int fd, r = 0;

	seg_name(name, num);
	fd = openat(w->dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		eng_logf(&w->log, LOG_ERR,
			 "cannot read wal segment '%s/%s': %s", w->dir, name,
			 strerror(errno));
		r = -EIO;
		goto out_close;
	}
	size = (uint64_t)st.st_size;
	while (off < size) {
		struct change *rec;
		uint32_t magic, body_len;
		ssize_t n;

		n = read_full(fd, hdr, sizeof(hdr));
		if (n < 0) {
			r = (int)n;
			goto out_read_err;
		}
		if ((size_t)n < sizeof(hdr)) {
			why = "truncated header";
			break;
		}
		magic = get32(hdr);
		body_len = get32(hdr + 4);
		if (magic != WAL_MAGIC && magic != WAL_MAGIC_V1) {
			why = "bad magic";
			break;
		}
		if (body_len < (magic == WAL_MAGIC ? WAL_BODY_FIXED
						   : WAL_BODY_FIXED_V1)) {
			why = "bad length";
			break;
		}
		if (body_len > size - off - sizeof(hdr)) {
			why = "truncated record";
			break;
		}
		body = malloc(body_len);
		if (!body) {
			r = -ENOMEM;
			goto out_close;
		}
		n = read_full(fd, body, body_len);
		if (n < 0) {
			r = (int)n;
			goto out_read_err;
		}
		if ((size_t)n < body_len) {
			why = "truncated record";
			break;
		}
		if (crc32_z(crc32(0L, Z_NULL, 0), body, body_len) !=
		    get32(hdr + 8)) {
			why = "bad checksum";
			break;
		}
		r = rec_decode(magic, body, body_len, &rec);
		if (r == -EBADMSG) {
			r = 0;
			why = "malformed body";
			break;
		}
		if (r < 0)
			goto out_close;
		free(body);
		body = NULL;
		off += sizeof(hdr) + body_len;
		(*count)++;
		r = fn(arg, rec);
		if (r < 0)
			goto out_close;
		r = 0;
	}
	if (why) {
		eng_logf(&w->log, LOG_WARNING,
			 "ignoring the rest of wal segment '%s/%s' from offset "
			 "%" PRIu64 ": %s",
			 w->dir, name, off, why);
		r = 1;
	}
	goto out_close;

out_read_err:
	eng_logf(&w->log, LOG_ERR, "cannot read wal segment '%s/%s': %s",
		 w->dir, name, strerror(-r));
	r = -EIO;
out_close:
	free(body);
	if (fd >= 0)
		close(fd);
	return r;
}

int wal_replay(struct wal *w, int (*fn)(void *arg, struct change *rec),
	       void *arg)
{
	int count = 0;

	/* By index: @fn may append, which can move segs[]. What replay yields
	 * is a prefix of what was appended: after an invalid record, later
	 * segments are not read either (appends never follow garbage, and a
	 * rotation waits until garbage is cut away). */
	for (size_t i = 0; i < w->nsegs && w->segs[i].num < w->first_new; i++) {
		int r = seg_replay(w, w->segs[i].num, fn, arg, &count);

		if (r < 0)
			return r;
		if (r > 0) {
			if (i + 1 < w->nsegs &&
			    w->segs[i + 1].num < w->first_new)
				eng_logf(&w->log, LOG_WARNING,
					 "ignoring the wal segments after it "
					 "in '%s': what they hold came after "
					 "the damage",
					 w->dir);
			break;
		}
	}
	return count;
}

/* Writes @iovcnt buffers whole, looping on short writes and EINTR. Returns
 * 0 or a negative errno. */
static int write_all(int fd, struct iovec *iov, int iovcnt)
{
	for (;;) {
		ssize_t n;

		while (iovcnt > 0 && iov->iov_len == 0) {
			iov++;
			iovcnt--;
		}
		if (iovcnt == 0)
			return 0;
		n = writev(fd, iov, iovcnt < IOV_MAX ? iovcnt : IOV_MAX);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		while (n > 0) {
			size_t step = (size_t)n < iov->iov_len ? (size_t)n
							       : iov->iov_len;

			iov->iov_base = (char *)iov->iov_base + step;
			iov->iov_len -= step;
			n -= (ssize_t)step;
			if (iov->iov_len == 0) {
				iov++;
				iovcnt--;
			}
		}
	}
}

/* One encoded record: its head (owned) and its content bytes (borrowed). */
struct enc {
	uint8_t *head;
	size_t head_len;
	const void *data;
	size_t data_len;
};

int wal_append_all(struct wal *w, struct change *const *recs, size_t n)
{
	struct wal_seg *cur = seg_cur(w);
	char name[WAL_SEG_NAME_LEN + 1];
	struct iovec *iov = NULL;
	struct enc *enc;
	uint64_t total = 0;
	size_t done = 0;
	int r = 0;

	if (w->torn && seg_untear(w) < 0)
		return -EIO;
	if (n == 0)
		return 0;
	enc = calloc(n, sizeof(*enc));
	if (!enc)
		return -ENOMEM;
	for (; done < n; done++) {
		struct enc *x = &enc[done];

		r = rec_encode(recs[done], &x->head, &x->head_len, &x->data,
			       &x->data_len);
		if (r < 0)
			goto out_free;
		total += (uint64_t)x->head_len + x->data_len;
	}
	if (w->bytes > w->max_bytes || total > w->max_bytes - w->bytes) {
		r = -ENOSPC;
		goto out_free;
	}
	iov = calloc(2 * n, sizeof(*iov));
	if (!iov) {
		r = -ENOMEM;
		goto out_free;
	}
	for (size_t i = 0; i < n; i++) {
		iov[2 * i].iov_base = enc[i].head;
		iov[2 * i].iov_len = enc[i].head_len;
		iov[2 * i + 1].iov_base = (void *)enc[i].data;
		iov[2 * i + 1].iov_len = enc[i].data_len;
	}
	r = write_all(atomic_load(&w->fd), iov, (int)(2 * n));
	if (r < 0) {
		seg_name(name, cur->num);
		eng_logf(&w->log, LOG_ERR,
			 "cannot append to wal segment '%s/%s': %s", w->dir,
			 name, strerror(-r));
		r = r == -ENOSPC || r == -EDQUOT ? -ENOSPC : -EIO;
		/* Never leave part of a record (or of a group) behind. */
		seg_untear(w);
		goto out_free;
	}
	cur->size += total;
	w->bytes += total;

out_free:
	for (size_t i = 0; i < done; i++)
		free(enc[i].head);
	free(enc);
	free(iov);
	return r;
}

int wal_append(struct wal *w, const struct change *rec)
{
	struct change *one = (struct change *)rec;

	return wal_append_all(w, &one, 1);
}

/* Syncs the directory when a segment came or went since it was synced. */
static int sync_dir_if_dirty(struct wal *w)
{
	if (!atomic_exchange(&w->dir_dirty, false))
		return 0;
	if (sync_dir(w) < 0) {
		atomic_store(&w->dir_dirty, true);
		return -EIO;
	}
	return 0;
}

int wal_sync(struct wal *w)
{
	int fd = atomic_load(&w->fd);

	if (fdatasync(fd) < 0) {
		/* A rotation closed @fd meanwhile: that segment is sealed by
		 * the rotating thread, the new one was empty then. */
		if (errno != EBADF || atomic_load(&w->fd) == fd) {
			eng_logf(&w->log, LOG_ERR,
				 "cannot sync the wal segment in '%s': %s",
				 w->dir, strerror(errno));
			return -EIO;
		}
	}
	return sync_dir_if_dirty(w);
}

int wal_seal(struct wal *w)
{
	int fd = w->unsealed_fd, r = 0;

	if (fd >= 0) {
		w->unsealed_fd = -1;
		if (fdatasync(fd) < 0) {
			eng_logf(&w->log, LOG_ERR,
				 "cannot sync a full wal segment in '%s': %s",
				 w->dir, strerror(errno));
			r = -EIO;
		}
		close(fd);
	}
	if (sync_dir_if_dirty(w) < 0)
		r = -EIO;
	return r;
}

int64_t wal_rotate(struct wal *w)
{
	int64_t num = seg_cur(w)->num;
	int old = atomic_load(&w->fd), fd;

	if (num == INT64_MAX)
		return -EOVERFLOW;
	/* a segment left by an earlier rotation nobody sealed: now */
	if (w->unsealed_fd >= 0 && wal_seal(w) < 0)
		return -EIO;
	/* Garbage left at the end of a segment would end replay there, before
	 * the records of the next one: no rotation until it is cut away. */
	if (w->torn && seg_untear(w) < 0)
		return -EIO;
	fd = seg_create(w, num + 1, false);
	if (fd < 0)
		return fd;
	atomic_store(&w->fd, fd);
	w->unsealed_fd = old;
	w->torn = false;
	return num + 1;
}

int wal_drop_before(struct wal *w, int64_t segment)
{
	char name[WAL_SEG_NAME_LEN + 1];
	size_t keep = 0;
	bool dropped = false;
	int r = 0;

	/* The current segment (the last) is never dropped. */
	for (size_t i = 0; i < w->nsegs; i++) {
		struct wal_seg s = w->segs[i];

		if (s.num < segment && i + 1 < w->nsegs) {
			seg_name(name, s.num);
			if (unlinkat(w->dirfd, name, 0) == 0 ||
			    errno == ENOENT) {
				/* gone either way */
				w->bytes -= s.size;
				dropped = true;
				continue;
			}
			eng_logf(&w->log, LOG_ERR,
				 "cannot delete wal segment '%s/%s': %s",
				 w->dir, name, strerror(errno));
			r = -EIO;
		}
		w->segs[keep++] = s;
	}
	w->nsegs = keep;
	if (dropped)
		atomic_store(&w->dir_dirty, true);
	return r;
}

uint64_t wal_bytes(const struct wal *w)
{
	return w->bytes;
}

int wal_quarantine(struct wal *w, struct change *const *recs, size_t n)
{
	struct iovec iov[2];
	int fd, r = 0;

	fd = openat(w->dirfd, WAL_QUARANTINE,
		    O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = open_errno(errno);
		goto out_log;
	}
	for (size_t i = 0; i < n && r == 0; i++) {
		uint8_t *head;

		r = rec_encode(recs[i], &head, &iov[0].iov_len,
			       (const void **)&iov[1].iov_base,
			       &iov[1].iov_len);
		if (r < 0)
			break; /* a record replay would refuse: keep going */
		iov[0].iov_base = head;
		r = write_all(fd, iov, 2);
		free(head);
	}
	if (r == 0 && fdatasync(fd) < 0)
		r = -EIO;
	close(fd);
	if (r == 0)
		r = sync_dir(w);
out_log:
	if (r < 0)
		eng_logf(&w->log, LOG_ERR, "cannot write '%s/%s': %s", w->dir,
			 WAL_QUARANTINE, strerror(-r));
	return r;
}
