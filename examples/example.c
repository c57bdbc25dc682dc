/*
 * example.c - the tierfs engine used as a library, without FUSE.
 *
 *   build/examples/tierfs-example STORE.db
 *
 * Puts a JSON item and a binary item by ID, reads them back, prints their
 * hashes, deletes one, and closes the engine (which persists everything).
 * The same store can then be mounted: user.1 is the file user/1.json.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "engine.h"

static void log_stderr(void *arg, int level, const char *msg)
{
	fprintf(stderr, "engine: %s\n", msg);
}

int main(int argc, char **argv)
{
	static const char doc[] = "{\"name\": \"ada\", \"langs\": [\"c\"]}";
	static const char blob[] = {'b', 'i', 'n', '\0', 'a', 'r', 'y'};
	struct eng_config cfg;
	struct item *it;
	struct eng *e;
	char hex[65];
	int r;

	if (argc != 2) {
		fprintf(stderr, "usage: %s STORE.db\n", argv[0]);
		return 2;
	}
	eng_config_init(&cfg);
	cfg.sqlite_path = argv[1];
	cfg.log.fn = log_stderr;
	r = eng_open(&cfg, &e);
	if (r < 0) {
		fprintf(stderr, "cannot open '%s': %s\n", argv[1],
			strerror(-r));
		return 1;
	}
	r = eng_put(e, "user.1", ITEM_JSON, doc, strlen(doc));
	if (r == 0)
		r = eng_put(e, "blobs.raw%2Ebin", ITEM_BINARY, blob,
			    sizeof(blob));
	if (r == 0)
		r = eng_put(e, "tmp.scratch", ITEM_BINARY, "x", 1);
	if (r == 0)
		r = eng_get(e, "user.1", ITEM_JSON, &it);
	if (r == 0) {
		item_hash_hex(item_meta(it)->hash, hex);
		printf("user.1: %zu bytes, sha256 %s\n", item_size(it), hex);
		item_unref(it);
		r = eng_delete(e, "tmp.scratch", ITEM_BINARY);
	}
	if (r == 0 && eng_get(e, "tmp.scratch", ITEM_BINARY, &it) != -ENOENT)
		r = -EIO;
	if (r < 0)
		fprintf(stderr, "example failed: %s\n", strerror(-r));
	if (eng_close(e) < 0 && r == 0)
		r = -EIO;
	return r < 0 ? 1 : 0;
}
