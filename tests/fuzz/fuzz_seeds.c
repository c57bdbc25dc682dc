/*
 * fuzz_seeds.c - writes the seed corpora of tests/fuzz/corpus/.
 *
 *   fuzz_seeds DIR     writes DIR/<target>/<name> for every target
 *
 * The binary seeds come from the engine itself: WAL segments written by
 * wal_append() (then copied, cut or damaged), Redis metadata blobs by
 * l2r_blob_encode(). The text seeds (IDs, paths, JSON, command lines) are
 * listed here too so that one program makes the whole corpus. The seeds
 * are committed; rerun this after a format change (scripts/fuzz.sh
 * --seeds). Seeds named "v1-*" (fuzz_wal) and "format-1" (fuzz_redis_meta)
 * are not made here: they are what the build before atime_ns wrote, kept
 * as committed, because no encoder of this build writes those layouts.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "id.h"
#include "l2_redis_int.h"
#include "wal.h"

static const char *out_dir;

static void write_seed(const char *target, const char *name, const void *p,
		       size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", out_dir, target);
	mkdir(out_dir, 0755);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%s/%s", out_dir, target, name);
	f = fopen(path, "wb");
	FUZZ_CHECK(f);
	FUZZ_CHECK(len == 0 || fwrite(p, 1, len, f) == len);
	FUZZ_CHECK(fclose(f) == 0);
}

/* A seed with one prefix byte (the target's mode or flags) before @p. */
static void write_seed1(const char *target, const char *name, uint8_t first,
			const void *p, size_t len)
{
	uint8_t *b = malloc(len + 1);

	FUZZ_CHECK(b);
	b[0] = first;
	if (len)
		memcpy(b + 1, p, len);
	write_seed(target, name, b, len + 1);
	free(b);
}

/* --- fuzz_id: kind/is_dir byte, cap byte, then the string --- */

static void id_seed(const char *name, uint8_t kind_dir, uint8_t cap,
		    const char *s)
{
	size_t len = strlen(s);
	uint8_t *b = malloc(len + 2);

	FUZZ_CHECK(b);
	b[0] = kind_dir;
	b[1] = cap;
	memcpy(b + 2, s, len);
	write_seed("fuzz_id", name, b, len + 2);
	free(b);
}

static void id_seeds(void)
{
	id_seed("json-id", ITEM_JSON, 200, "user.123");
	id_seed("binary-id", ITEM_BINARY, 200, "user.notes%2Ev2%2Etxt");
	id_seed("dir-id", ITEM_DIR, 3, "a.b.c");
	id_seed("json-path", 0, 200, "user/123.json");
	id_seed("dir-path", 4, 200, "user/docs.d/x%y");
	id_seed("binary-path", ITEM_BINARY, 9, "notes.v2.txt");
	id_seed("dotjson", ITEM_JSON, 50, "%2E");
	id_seed("bad-escape", ITEM_BINARY, 50, "a%2Fb");
	id_seed("bad-dots", ITEM_DIR, 50, "a..b");
	id_seed("binary-json", ITEM_BINARY, 50, "a.b%2Ejson");
	id_seed("utf8", ITEM_JSON, 80, "caf\xc3\xa9.\xe2\x82\xac");
	id_seed("invalid-kind", 3, 50, "a.b");
}

/* --- fuzz_json: the bytes --- */

static void json_seeds(void)
{
	static const char *const seeds[][2] = {
		{"object", "{\"a\": 1, \"b\": [true, false, null]}"},
		{"array", "[1, -2.5e10, \"x\", {}]"},
		{"string-escapes", "\"\\u00e9\\n\\ud83d\\ude00\""},
		{"number", "1234567890123"},
		{"nul-escape", "{\"k\": \"a\\u0000b\"}"},
		{"nested", "[[[[[[[[[[{\"a\":[]}]]]]]]]]]]"},
		{"trailing", "{\"a\":1} x"},
		{"unterminated", "{\"a\": [1, 2"},
		{"bad-utf8", "\"\xc3\x28\""},
		{"big-int", "123456789012345678901234567890"},
	};

	for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++)
		write_seed("fuzz_json", seeds[i][0], seeds[i][1],
			   strlen(seeds[i][1]));
	write_seed("fuzz_json", "empty", "", 0);
}

/* --- fuzz_wal: flags byte, then segment bytes made by wal_append() --- */

static struct item_meta file_meta(enum item_kind kind)
{
	struct item_meta m = {.kind = kind,
			      .version = 3,
			      .mtime_ns = 1700000000123456789,
			      .atime_ns = -86400500000000,
			      .ctime_ns = 1700000000987654321,
			      .mode = 0100644,
			      .uid = 1000,
			      .gid = 1000};
	return m;
}

/* Reads the one segment of @dir. */
static uint8_t *read_segment(const char *dir, size_t *len)
{
	char path[4096];
	struct stat st;
	uint8_t *b;
	int fd;

	snprintf(path, sizeof(path), "%s/wal-%016x.log", dir, 1);
	fd = open(path, O_RDONLY);
	FUZZ_CHECK(fd >= 0 && fstat(fd, &st) == 0);
	*len = (size_t)st.st_size;
	b = malloc(*len + 1);
	FUZZ_CHECK(b && read(fd, b, *len) == (ssize_t)*len);
	close(fd);
	unlink(path);
	rmdir(dir);
	return b;
}

/* Appends @n changes to a new log and returns its segment's bytes. */
static uint8_t *segment_of(struct change **recs, size_t n, size_t *len)
{
	char dir[] = "/tmp/tierfs-fuzz-seeds.XXXXXX";
	struct wal *w;

	FUZZ_CHECK(mkdtemp(dir));
	rmdir(dir); /* wal_open() makes it */
	FUZZ_CHECK(wal_open(dir, 1 << 30, NULL, &w) == 0);
	for (size_t i = 0; i < n; i++)
		FUZZ_CHECK(wal_append(w, recs[i]) == 0);
	wal_close(w);
	return read_segment(dir, len);
}

static void wal_seeds(void)
{
	struct item_meta m = file_meta(ITEM_JSON), d = file_meta(ITEM_DIR);
	struct change *recs[4];
	struct item *json, *bin;
	uint8_t *seg;
	size_t len;

	json = item_new("user.1", "{\"a\":1}", 7, &m);
	m.kind = ITEM_BINARY;
	bin = item_new("notes%2Etxt", "\x00\x01\x02 binary", 10, &m);
	m.kind = ITEM_JSON;
	FUZZ_CHECK(json && bin);

	recs[0] = change_new_put(12, 2, "1.json", &m, json);
	recs[0]->seq = 7;
	d.mode = 040755;
	d.explicit_dir = true;
	d.state = strdup("published");
	FUZZ_CHECK(d.state);
	FUZZ_CHECK(item_xattr_set(&d, "user.color", "blue", 4, 0) == 0);
	recs[1] = change_new_put(2, 1, "user", &d, NULL);
	recs[1]->seq = 8;
	recs[2] = change_new_del(13);
	recs[2]->seq = 9;
	m.kind = ITEM_BINARY;
	recs[3] = change_new_put(14, 1, "notes.txt", &m, bin);
	recs[3]->seq = 10;
	for (int i = 0; i < 4; i++)
		FUZZ_CHECK(recs[i]);

	seg = segment_of(recs, 1, &len);
	write_seed1("fuzz_wal", "put-json", 0, seg, len);
	write_seed1("fuzz_wal", "put-json-fixcrc", 1, seg, len);
	/* the body alone, for the decoder */
	write_seed1("fuzz_wal", "body-only", 0, seg + 12, len - 12);
	free(seg);

	seg = segment_of(recs + 1, 1, &len);
	write_seed1("fuzz_wal", "dir-state-xattr", 1, seg, len);
	free(seg);

	seg = segment_of(recs + 2, 1, &len);
	write_seed1("fuzz_wal", "delete", 1, seg, len);
	free(seg);

	seg = segment_of(recs, 4, &len);
	write_seed1("fuzz_wal", "four", 0, seg, len);
	write_seed1("fuzz_wal", "four-split", 1 | 2 | 8, seg, len);
	write_seed1("fuzz_wal", "four-torn", 0, seg, len - 5);
	seg[len - 3] ^= 0x40;
	write_seed1("fuzz_wal", "four-badcrc", 0 | 4, seg, len);
	free(seg);

	write_seed1("fuzz_wal", "garbage", 1, "TFW2garbage", 11);
	for (int i = 0; i < 4; i++)
		change_free(recs[i]);
	item_meta_release(&d);
	item_unref(json);
	item_unref(bin);
}

/* --- fuzz_redis_meta: blobs made by l2r_blob_encode() --- */

static void blob_seed(const char *name, uint64_t parent, const char *ename,
		      const struct item_meta *m)
{
	size_t len = l2r_blob_len(ename, m);
	uint8_t *b = malloc(len);

	FUZZ_CHECK(b);
	l2r_blob_encode(parent, ename, m, b);
	write_seed("fuzz_redis_meta", name, b, len);
	if (!strcmp(name, "file-state-xattrs")) {
		b[0] = L2R_FORMAT + 1; /* a newer format */
		write_seed("fuzz_redis_meta", "format-newer", b, len);
		b[0] = L2R_FORMAT;
		write_seed("fuzz_redis_meta", "short", b, len - 3);
	}
	free(b);
}

static void redis_seeds(void)
{
	struct item_meta m = file_meta(ITEM_DIR);

	m.mode = 040755;
	blob_seed("root", 0, "", &m);
	m.explicit_dir = true;
	blob_seed("dir", 1, "user", &m);
	m = file_meta(ITEM_JSON);
	m.size = 7;
	item_hash("{\"a\":1}", 7, m.hash);
	blob_seed("json", 2, "1.json", &m);
	m.kind = ITEM_BINARY;
	m.state = strdup("draft");
	FUZZ_CHECK(m.state);
	FUZZ_CHECK(item_xattr_set(&m, "user.a", "1", 1, 0) == 0);
	FUZZ_CHECK(item_xattr_set(&m, "user.bb", "", 0, 0) == 0);
	blob_seed("file-state-xattrs", 2, "notes.txt", &m);
	free(m.state);
	m.state = strdup("");
	blob_seed("empty-state", 2, "x", &m);
	item_meta_release(&m);
}

/* --- fuzz_options: mode byte, then NUL-separated parts --- */

static void opt_seed(const char *name, uint8_t mode, const char *const *parts,
		     size_t n)
{
	char buf[4096];
	size_t len = 0;

	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(parts[i]);

		FUZZ_CHECK(len + l + 1 < sizeof(buf));
		memcpy(buf + len, parts[i], l);
		len += l;
		if (i + 1 < n)
			buf[len++] = '\0';
	}
	write_seed1("fuzz_options", name, mode, buf, len);
}

#define OPT_SEED(name, mode, ...)                                              \
	do {                                                                   \
		static const char *const p[] = {__VA_ARGS__};                  \
		opt_seed(name, mode, p, sizeof(p) / sizeof(p[0]));             \
	} while (0)

static void options_seeds(void)
{
	OPT_SEED("sqlite", 0, "--sqlite=/tmp/x.db", "-f", "/mnt");
	OPT_SEED("mount-fuse3", 0 | 1 << 2, "sqlite:rel/x.db", "/mnt", "-o",
		 "rw,noatime,x-systemd.automount,_netdev,uid=5");
	OPT_SEED("postgres", 0, "--postgres=postgresql://u:pw@h:5432/db",
		 "--redis=redis://:secret@127.0.0.1:6379/2", "-o",
		 "redis_prefix=t:,wal_path=/tmp/w", "/mnt");
	OPT_SEED("tuning", 0, "-o",
		 "l1_max_bytes=1048576,batch_flush_count=10,"
		 "batch_flush_bytes=4096,batch_flush_ms=5,max_item_bytes=1024,"
		 "entry_timeout=0.5,attr_timeout=2,file_mode=0640,dir_mode=750,"
		 "gid=7,wal_max_bytes=99",
		 "/mnt");
	OPT_SEED("bad", 0 | 2 << 2, "--sqlite=a", "--postgres=b", "-o",
		 "batch_flush_count=0x1", "--config=c.json", "a", "b", "c");
	OPT_SEED("help", 0, "--help");
	OPT_SEED("uri", 1, "--postgres=", "postgresql", "user", "p%40ss:w;rd",
		 "host:5432/db?sslmode=require");
	OPT_SEED("uri-redis", 1 | 1 << 2, "-o redis=", "", "", "secret",
		 "h:1/0,redis_prefix=x");
	OPT_SEED("conninfo", 2, "host=h port=5432 user=u", "", " ", "s3cr et",
		 "connect_timeout=10");
	OPT_SEED("conninfo-quoted", 2 | 1 << 2, "dbname=x", " ", "", "it's",
		 "sslmode=disable");
	OPT_SEED("query", 3, "--postgres=", "sslmode=require", "pa;ss",
		 "application_name=t");
	/* passwords tfs_mask_secrets() left (partly) visible before the
	 * fuzzer found them: ',' and escaped whitespace in a libpq value,
	 * whitespace other than ' ' and '\t' around '=', ',' in a URI
	 * password or query value, a query value starting with a quote, a
	 * "://" inside an earlier authority, a key inside another value */
	OPT_SEED("regress-conninfo-comma", 2, "host=h", "", "", "pa,ss",
		 "dbname=d");
	OPT_SEED("regress-conninfo-escaped-space", 2, "host=h", "", "",
		 "s3cr et", "dbname=d");
	OPT_SEED("regress-conninfo-newline", 2, "host=h", " ", "", "pw", "");
	OPT_SEED("regress-uri-comma", 1, "--postgres=", "postgresql", "u",
		 "a,b", "h/db");
	OPT_SEED("regress-uri-overlap", 1,
		 "redis=redis://h:6379;postgres=", "postgresql", "u", "pw",
		 "h/db");
	OPT_SEED("regress-query-comma", 3, "--postgres=", "sslmode=require",
		 "p,w", "x");
	OPT_SEED("regress-query-quote", 3, "", "", "'':d:", "");
	OPT_SEED("regress-key-in-value", 2, "t.=password=", "\x06\x06", "", "0",
		 "");
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	out_dir = argv[1];
	id_seeds();
	json_seeds();
	wal_seeds();
	redis_seeds();
	options_seeds();
	return 0;
}
