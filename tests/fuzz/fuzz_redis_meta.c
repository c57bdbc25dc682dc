/*
 * fuzz_redis_meta.c - the Redis metadata blob decoder, l2r_blob_decode()
 * (engine/l2_redis_keys.c, declared in the private l2_redis_int.h), on
 * arbitrary bytes: the input is the blob a server returned for field "m".
 *
 * Invariants besides "never crash or leak":
 *  - it returns 0, -ENOENT (another format: byte 0 is not L2R_FORMAT, as
 *    in the format 1 of older builds) or -EUCLEAN (corrupt);
 *  - a blob that decodes re-encodes (l2r_blob_encode()) to exactly the
 *    same bytes: the format has one spelling of each entry;
 *  - the row it gives keeps the contract of store.h (the checks of
 *    store_row_decode()), and its xattr blob, which the format keeps
 *    opaque, can be walked by item.h's functions as the engine would.
 * Each input is decoded as entry 1 (the root, whose name is empty) and as
 * entry 2.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "l2_redis_int.h"

static struct l2r r;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* What l2_redis_open() sets up before any decode; no log sink. */
	r.sb = (struct store_backend){.log = &r.base.log,
				      .name = "redis",
				      .target = r.target,
				      .max_ino = UINT64_MAX,
				      .cache = true};
	strcpy(r.target, "fuzz:6379/0");
	return 0;
}

struct walk {
	const struct item_meta *m;
	size_t n;
};

/* What listxattr then getxattr do with the blob. */
static int walk_name(void *arg, const char *name)
{
	struct walk *w = arg;
	const void *v;

	w->n++;
	FUZZ_CHECK(strlen(name) <= 255);
	item_xattr_get(w->m, name, &v);
	return 0;
}

static void check_row(uint64_t ino, const uint8_t *data, size_t size,
		      struct store_row *row)
{
	const struct item_meta *m = &row->meta;
	struct walk w = {.m = &row->meta};
	const void *v;
	uint8_t *buf;
	size_t len;

	FUZZ_CHECK(row->ino == ino);
	FUZZ_CHECK(m->kind == ITEM_DIR || m->kind == ITEM_JSON ||
		   m->kind == ITEM_BINARY);
	FUZZ_CHECK(strlen(row->name) <= STORE_NAME_MAX);
	FUZZ_CHECK(ino == STORE_ROOT_INO || row->name[0]);
	FUZZ_CHECK(!strchr(row->name, '/'));

	len = l2r_blob_len(row->name, m);
	FUZZ_CHECK(len == size);
	buf = malloc(len);
	FUZZ_CHECK(buf);
	l2r_blob_encode(row->parent, row->name, m, buf);
	FUZZ_CHECK(memcmp(buf, data, size) == 0);
	free(buf);

	item_xattr_foreach(m, walk_name, &w);
	item_xattr_get(m, "user.a", &v);
	if (row->name[0])
		item_xattr_get(m, row->name, &v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	for (uint64_t ino = 1; ino <= 2; ino++) {
		struct store_row row;
		int e = l2r_blob_decode(&r, ino, data, size, &row);

		FUZZ_CHECK(e == 0 || e == -ENOENT || e == -EUCLEAN);
		if (e == -ENOENT)
			FUZZ_CHECK(size > 0 && data[0] != L2R_FORMAT);
		if (e == 0) {
			check_row(ino, data, size, &row);
			store_row_release(&row);
		}
	}
	return 0;
}
