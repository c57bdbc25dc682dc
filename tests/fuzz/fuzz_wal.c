/*
 * fuzz_wal.c - the write-ahead log's reading path (engine/wal.c): the
 * record decoder, wal_record_decode(), and the whole of replay, wal_open()
 * then wal_replay() on segment files made from the input.
 *
 * Input: byte 0 holds flags, the rest is the log's bytes (records in the
 * format of wal.h, or anything else).
 *   bit 0    fix the CRC of every framed record before writing, so that
 *            mutated bodies reach the decoder through replay too
 *   bits 1-7 start a new segment after framed record 0..6
 * A framed record is a 12-byte header with a magic (the current layout's,
 * WAL_MAGIC, or the old one's, WAL_MAGIC_V1) whose body fits in what is
 * left; the walk over the input stops at the first that is not, and the
 * bytes from there (the tail) go to the last segment.
 *
 * Invariants (wal.h: "what replay yields is always a prefix of what was
 * appended", and wal.c: "what replay accepts is exactly what append
 * writes"):
 *  - replay yields exactly the framed records before the first one whose
 *    checksum is wrong or whose body does not decode, across segments;
 *  - each record replay yields, appended again with wal_append() (to the
 *    segment wal_open() made), gives back its bytes: the new segment is
 *    byte for byte that prefix of the input, except that an old-layout
 *    record comes back in the current layout: magic WAL_MAGIC, its
 *    mtime_ns repeated as atime_ns right after it, length and CRC to match.
 * Every framed body, and the whole input, also goes through
 * wal_record_decode() alone (the input with both magics).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "fuzz.h"
#include "wal.h"

#define HDR 12
#define MTIME_END 87 /* wal.h: body bytes up to mtime_ns, plus the name's */
#define MAX_SPLITS 7

static char dir[256];

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static bool is_magic(uint32_t m)
{
	return m == WAL_MAGIC || m == WAL_MAGIC_V1;
}

/* Appends to @out (at *len) the record whose framed bytes are @rec (@len
 * body bytes after the header) as wal_append() writes it: as it is in the
 * current layout; an old-layout one (which decoded, so is long enough)
 * with atime_ns = mtime_ns added after mtime_ns. */
static void expect_append(uint8_t *out, size_t *len, const uint8_t *rec,
			  uint32_t body_len)
{
	const uint8_t *body = rec + HDR;
	uint8_t *o = out + *len, *nb = o + HDR;
	size_t at;

	if (get32(rec) == WAL_MAGIC) {
		memcpy(o, rec, HDR + body_len);
		*len += HDR + body_len;
		return;
	}
	at = MTIME_END + ((size_t)body[25] | (size_t)body[26] << 8);
	FUZZ_CHECK(at <= body_len);
	memcpy(nb, body, at);
	memcpy(nb + at, body + at - 8, 8);
	memcpy(nb + at + 8, body + at, body_len - at);
	put32(o, WAL_MAGIC);
	put32(o + 4, body_len + 8);
	put32(o + 8, (uint32_t)crc32_z(crc32(0L, Z_NULL, 0), nb, body_len + 8));
	*len += HDR + body_len + 8;
}

/* Removes every file of the scratch directory. */
static void empty_dir(void)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	FUZZ_CHECK(d);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			FUZZ_CHECK(unlinkat(dirfd(d), de->d_name, 0) == 0);
	closedir(d);
}

static void cleanup(void)
{
	empty_dir();
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";

	/* tmpfs when there is one: every input writes and syncs files */
	if (access("/dev/shm", W_OK) == 0)
		base = "/dev/shm";
	snprintf(dir, sizeof(dir), "%s/tierfs-fuzz-wal.XXXXXX", base);
	FUZZ_CHECK(mkdtemp(dir));
	atexit(cleanup);
	return 0;
}

static void write_seg(int num, const uint8_t *p, size_t len)
{
	char path[300];
	int fd;

	snprintf(path, sizeof(path), "%s/wal-%016x.log", dir, num);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FUZZ_CHECK(fd >= 0);
	FUZZ_CHECK(len == 0 || write(fd, p, len) == (ssize_t)len);
	close(fd);
}

static size_t read_seg(int num, uint8_t *buf, size_t cap)
{
	char path[300];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/wal-%016x.log", dir, num);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	FUZZ_CHECK(fd >= 0);
	n = read(fd, buf, cap);
	FUZZ_CHECK(n >= 0 && (size_t)n < cap);
	close(fd);
	return (size_t)n;
}

struct replay {
	struct wal *w;
	int count;
};

static int on_record(void *arg, struct change *rec)
{
	struct replay *rp = arg;

	rp->count++;
	FUZZ_CHECK(wal_append(rp->w, rec) == 0);
	change_free(rec);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t ends[MAX_SPLITS + 1], off = 0, n, got, want_len = 0;
	int nframed = 0, expected = 0, nsegs = 0, r;
	bool broken = false;
	struct replay rp = {0};
	struct change *rec;
	uint8_t flags, *buf, *back, *want;

	if (size < 1)
		return 0;
	flags = data[0];
	n = size - 1;
	buf = malloc(n + 1);
	FUZZ_CHECK(buf);
	memcpy(buf, data + 1, n);

	/* what appending the replayed records gives back: each record at
	 * most 8 bytes longer, and a record has at least HDR bytes */
	want = malloc(n + 8 * (n / HDR) + 1);
	FUZZ_CHECK(want);

	/* the decoder alone, on the whole input */
	if (wal_record_decode(WAL_MAGIC, buf, n, &rec) == 0)
		change_free(rec);
	if (wal_record_decode(WAL_MAGIC_V1, buf, n, &rec) == 0)
		change_free(rec);

	/* walk the framed records */
	while (n - off >= HDR && is_magic(get32(buf + off)) &&
	       get32(buf + off + 4) <= n - off - HDR) {
		uint8_t *body = buf + off + HDR;
		uint32_t len = get32(buf + off + 4);
		uint32_t crc =
			(uint32_t)crc32_z(crc32(0L, Z_NULL, 0), body, len);
		bool ok;

		if (flags & 1)
			put32(buf + off + 8, crc);
		r = wal_record_decode(get32(buf + off), body, len, &rec);
		FUZZ_CHECK(r == 0 || r == -EBADMSG);
		if (r == 0)
			change_free(rec);
		ok = r == 0 && get32(buf + off + 8) == crc;
		if (!broken && ok) {
			expected++;
			expect_append(want, &want_len, buf + off, len);
		} else {
			broken = true;
		}
		off += HDR + len;
		if (nframed < MAX_SPLITS && (flags & (2u << nframed)))
			ends[nsegs++] = off;
		nframed++;
	}
	ends[nsegs++] = n;

	/* the segments, then replay */
	for (int i = 0; i < nsegs; i++) {
		size_t start = i ? ends[i - 1] : 0;

		write_seg(i + 1, buf + start, ends[i] - start);
	}
	r = wal_open(dir, UINT64_MAX >> 2, NULL, &rp.w);
	FUZZ_CHECK(r == 0);
	r = wal_replay(rp.w, on_record, &rp);
	FUZZ_CHECK(r == rp.count);
	FUZZ_CHECK(r == expected);
	wal_close(rp.w);

	/* what was appended again is the replayed prefix, byte for byte
	 * (old-layout records in the current layout) */
	back = malloc(want_len + 1);
	FUZZ_CHECK(back);
	got = read_seg(nsegs + 1, back, want_len + 1);
	FUZZ_CHECK(got == want_len && memcmp(back, want, want_len) == 0);
	free(back);

	empty_dir();
	free(want);
	free(buf);
	return 0;
}
