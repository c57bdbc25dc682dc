/*
 * fill.c - puts N small binary items into one directory of a store through
 * the engine (engine.h), for tests/bench/scale.py: a million entries made
 * by one process instead of a million `tierfs put` calls or a million
 * creates through a mount.
 *
 *   fill (--sqlite=FILE | --postgres=URI) [--redis=URL [--redis-prefix=P]]
 *        --wal=DIR [--dir=NAME] [--count=N] [--first=K] [--batch=B] [--json]
 *
 * Items are NAME.<K>, NAME.<K+1>, ... with the number zero-padded to 7
 * digits (the files NAME/0000001, ...), each holding its number and a
 * newline. With --json they are NAME.item<K> with 6 digits (the files
 * NAME/item000001.json, ...), each holding the JSON document that the
 * writers of scale.py and bench.py write into the file of that name, so
 * that their rows are the same. Every B items (default 10,000) it waits with eng_sync() until L3
 * has committed them, so the engine's pending changes and its log stay
 * bounded; the engine's flusher commits them in batches of B changes too
 * (batch_flush_count), since each batch rehashes the whole directory
 * (its Merkle hash reads every child): with 1,000 changes a batch, a
 * million entries took the SQLite store 204 s instead of 2.3 s for
 * 100,000, quadratic in the directory's size. The
 * engine is opened as a mount opens it (with the negative-lookup filter,
 * inode numbers reserved by the block): one-shot mode would ask L3 for
 * every new name and every inode number. Exits 0 when every item was
 * committed, 1 on a failed put or sync, 2 on usage errors.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine.h"

static void fill_log(void *arg, int level, const char *msg)
{
	(void)arg;
	if (level <= LOG_WARNING)
		fprintf(stderr, "fill: %s\n", msg);
}

static int usage(void)
{
	fprintf(stderr,
		"usage: fill (--sqlite=FILE | --postgres=URI) [--redis=URL "
		"[--redis-prefix=P]] --wal=DIR\n"
		"            [--dir=NAME] [--count=N] [--first=K] "
		"[--batch=B] [--json]\n");
	return 2;
}

static bool opt(const char *arg, const char *name, const char **val)
{
	size_t l = strlen(name);

	if (strncmp(arg, name, l) != 0 || arg[l] != '=')
		return false;
	*val = arg + l + 1;
	return true;
}

static bool number(const char *s, unsigned long long *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 10);
	return errno == 0 && end != s && *end == '\0';
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	unsigned long long count = 1000000, first = 1, batch = 10000;
	const char *dir = "big", *v;
	struct eng_config cfg;
	bool json = false;
	struct eng *e;
	double t0;
	int r, ret = 0;

	eng_config_init(&cfg);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (opt(a, "--sqlite", &v))
			cfg.sqlite_path = v;
		else if (opt(a, "--postgres", &v))
			cfg.postgres = v;
		else if (opt(a, "--redis", &v))
			cfg.redis = v;
		else if (opt(a, "--redis-prefix", &v))
			cfg.redis_prefix = v;
		else if (opt(a, "--wal", &v))
			cfg.wal_path = v;
		else if (opt(a, "--dir", &v))
			dir = v;
		else if (opt(a, "--count", &v)) {
			if (!number(v, &count))
				return usage();
		} else if (opt(a, "--first", &v)) {
			if (!number(v, &first))
				return usage();
		} else if (opt(a, "--batch", &v)) {
			if (!number(v, &batch) || batch == 0)
				return usage();
		} else if (strcmp(a, "--json") == 0) {
			json = true;
		} else {
			fprintf(stderr, "fill: unknown argument '%s'\n", a);
			return usage();
		}
	}
	if (!cfg.sqlite_path == !cfg.postgres || !cfg.wal_path)
		return usage();
	cfg.log.fn = fill_log;
	cfg.batch_flush_count = (size_t)batch;
	cfg.batch_flush_bytes = 256u << 20;
	cfg.batch_flush_ms = 60000; /* eng_sync() flushes */
	r = eng_open(&cfg, &e);
	if (r < 0) {
		fprintf(stderr, "fill: cannot open the store: %s\n",
			strerror(-r));
		return 1;
	}
	t0 = now();
	for (unsigned long long i = 0; i < count && ret == 0; i++) {
		unsigned long long k = first + i;
		char id[300], data[160];
		int len;

		if (json) {
			/* Python's {k * 0.5} is k/2 with ".0" or ".5" */
			snprintf(id, sizeof(id), "%s.item%06llu", dir, k);
			len = snprintf(data, sizeof(data),
				       "{\"id\": %llu, \"name\": \"item-%llu\", "
				       "\"rev\": 0, \"tags\": [\"bench\", \"tierfs\"], "
				       "\"value\": %llu.%c}\n",
				       k, k, k / 2, k % 2 ? '5' : '0');
		} else {
			snprintf(id, sizeof(id), "%s.%07llu", dir, k);
			len = snprintf(data, sizeof(data), "%llu\n", k);
		}
		r = eng_put(e, id, json ? ITEM_JSON : ITEM_BINARY, data,
			    (size_t)len);
		if (r < 0) {
			fprintf(stderr, "fill: put %s: %s\n", id,
				strerror(-r));
			ret = 1;
		} else if ((i + 1) % batch == 0 || i + 1 == count) {
			r = eng_sync(e);
			if (r < 0) {
				fprintf(stderr, "fill: sync after %s: %s\n",
					id, strerror(-r));
				ret = 1;
			}
		}
	}
	r = eng_close(e);
	if (r < 0 && ret == 0) {
		fprintf(stderr, "fill: closing the store: %s\n", strerror(-r));
		ret = 1;
	}
	if (ret == 0)
		printf("%llu items in %.1f s\n", count, now() - t0);
	return ret;
}
