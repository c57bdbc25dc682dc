/*
 * status_cmd.c - `tierfs status [--json] MOUNTPOINT`.
 *
 * Reads the control file .tierfs/status of a mounted tierfs (JSON, rendered
 * by the engine) and prints it for people. Exit status 0 when the mount is
 * healthy, 1 when it is degraded (a tier is down), 2 when MOUNTPOINT is not
 * a tierfs mount or the arguments are wrong.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "status_cmd.h"

static json_int_t num(json_t *o, const char *a, const char *b)
{
	return json_integer_value(json_object_get(json_object_get(o, a), b));
}

/* The races L3 settled against this mount's batches, the last ones
 * listed. */
static void print_races(json_t *races)
{
	json_t *recent = json_object_get(races, "recent"), *r;
	size_t i;

	if (json_integer_value(json_object_get(races, "count")) == 0)
		return;
	printf("  races with other writers, settled by L3: %lld; the last:\n",
	       (long long)json_integer_value(json_object_get(races, "count")));
	json_array_foreach(recent, i, r)
		printf("    inode %lld ('%s' in directory %lld): %s\n",
		       (long long)json_integer_value(json_object_get(r, "ino")),
		       json_string_value(json_object_get(r, "name")),
		       (long long)json_integer_value(
			       json_object_get(r, "parent")),
		       json_string_value(json_object_get(r, "what")));
}

int tfs_status_cmd(int argc, char **argv)
{
	const char *mnt = NULL;
	json_error_t err;
	char path[4096];
	bool raw = false;
	json_t *j, *l2;
	int rc;
	const char *state;

	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			raw = true;
		} else if (!mnt) {
			mnt = argv[i];
		} else {
			mnt = NULL; /* too many */
			break;
		}
	}
	if (!mnt) {
		fprintf(stderr, "usage: tierfs status [--json] MOUNTPOINT\n");
		return 2;
	}
	snprintf(path, sizeof(path), "%s/.tierfs/status", mnt);
	j = json_load_file(path, 0, &err);
	if (!j) {
		fprintf(stderr,
			"tierfs: '%s' is not a tierfs mount (cannot read "
			"'%s': %s)\n",
			mnt, path, err.text);
		return 2;
	}
	state = json_string_value(json_object_get(j, "state"));
	if (raw) {
		json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		putchar('\n');
	} else {
		json_t *l3 = json_object_get(j, "l3");
		const char *last =
			json_string_value(json_object_get(l3, "last_error"));
		json_int_t hits = num(j, "l1", "hits"),
			   misses = num(j, "l1", "misses");

		printf("tierfs at %s: %s\n", mnt, state ? state : "?");
		printf("  L3 %s: %s%s%s\n",
		       json_string_value(json_object_get(l3, "backend")),
		       json_is_true(json_object_get(l3, "up")) ? "up" : "DOWN",
		       last ? ", last error: " : "", last ? last : "");
		l2 = json_object_get(j, "l2");
		if (json_is_object(l2))
			printf("  L2 %s: %s\n",
			       json_string_value(
				       json_object_get(l2, "backend")),
			       json_is_true(json_object_get(l2, "up"))
				       ? "up"
				       : "DOWN");
		else
			printf("  L2: none\n");
		printf("  queue: %lld changes, %lld bytes not yet in L3\n",
		       (long long)num(j, "queue", "changes"),
		       (long long)num(j, "queue", "bytes"));
		printf("  write-ahead log: %lld of %lld bytes\n",
		       (long long)num(j, "wal", "bytes"),
		       (long long)num(j, "wal", "max_bytes"));
		printf("  L1: %lld bytes in %lld items (%lld pinned), hit rate "
		       "%.1f %%\n",
		       (long long)num(j, "l1", "bytes"),
		       (long long)num(j, "l1", "items"),
		       (long long)num(j, "l1", "pinned_bytes"),
		       hits + misses
			       ? 100.0 * (double)hits / (double)(hits + misses)
			       : 100.0);
		if (num(j, "quarantine", "changes") > 0)
			printf("  quarantine: %lld changes L3 refused, set "
			       "aside in %s\n",
			       (long long)num(j, "quarantine", "changes"),
			       json_string_value(json_object_get(
				       json_object_get(j, "quarantine"),
				       "file")));
		printf("  negative-lookup filter: %s, %lld names\n",
		       json_is_true(json_object_get(
			       json_object_get(j, "filter"), "trusted"))
			       ? "trusted"
			       : "building",
		       (long long)num(j, "filter", "names"));
		printf("  change feed: at record %lld; %lld changes of other "
		       "writers applied\n",
		       (long long)num(j, "feed", "seq"),
		       (long long)num(j, "feed", "applied"));
		print_races(json_object_get(j, "races"));
	}
	rc = state && strcmp(state, "ok") == 0 ? 0 : 1;
	json_decref(j); /* @state points into it */
	return rc;
}
