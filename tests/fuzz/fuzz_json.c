/*
 * fuzz_json.c - item_json_valid() (engine/item.h) on arbitrary bytes.
 *
 * It must never crash, and it must agree with other ways of asking jansson
 * the same question:
 *  - JSON allows whitespace around the text: the input padded with spaces
 *    and a newline is valid exactly when the input is (empty input aside:
 *    it is valid as an empty file, padding alone is not JSON);
 *  - without a NUL byte, json_loads() on the same text agrees;
 *  - a valid text, dumped by jansson and parsed again, is valid and equal
 *    to the first parse (what tierfs stores can be read back).
 *
 * jansson is the system library, built without coverage, so libFuzzer
 * would see every input take the same path. The target feeds it extra
 * counters instead (libFuzzer's __libfuzzer_extra_counters section): one
 * for each error jansson reports (by its message) and for each shape of
 * valid text (the types met, by depth), so that inputs reaching new parser
 * states are kept.
 */
#include <string.h>

#include <jansson.h>

#include "fuzz.h"
#include "item.h"

#define FLAGS (JSON_DECODE_ANY | JSON_ALLOW_NUL)
#define NCOUNTERS 4096

__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t
	counters[NCOUNTERS];

static void hit(uint32_t h)
{
	counters[h % NCOUNTERS] = 1;
}

/* FNV-1a of an error message up to what quotes the input (" near '...'",
 * a byte's value, an escape), so that one kind of error is one counter. */
static uint32_t hash_error(const char *s)
{
	const char *end = strstr(s, " near");
	uint32_t h = 2166136261u;

	for (; *s && s != end && !(*s >= '0' && *s <= '9') && *s != '\\'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

/* Counts the types of @j's values by depth (capped). */
static void walk(json_t *j, unsigned depth)
{
	const char *key;
	json_t *v;
	size_t i;

	hit(depth * 8 + json_typeof(j));
	if (depth > 60)
		return;
	if (json_is_array(j)) {
		hit(2048 + (json_array_size(j) < 8 ? json_array_size(j) : 8));
		json_array_foreach(j, i, v) walk(v, depth + 1);
	} else if (json_is_object(j)) {
		hit(2064 + (json_object_size(j) < 8 ? json_object_size(j) : 8));
		json_object_foreach(j, key, v) walk(v, depth + 1);
	} else if (json_is_string(j)) {
		hit(2080 +
		    (json_string_length(j) < 16 ? json_string_length(j) : 16));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bool valid = item_json_valid(data, size);
	json_error_t err;
	json_t *j, *j2;
	char *buf;

	if (size == 0) {
		FUZZ_CHECK(valid);
		return 0;
	}

	buf = malloc(size + 3);
	FUZZ_CHECK(buf);
	buf[0] = ' ';
	memcpy(buf + 1, data, size);
	buf[size + 1] = '\n';
	buf[size + 2] = '\0';
	FUZZ_CHECK(item_json_valid(buf, size + 2) == valid);
	if (!memchr(data, '\0', size)) {
		j = json_loads(buf, FLAGS, &err);
		FUZZ_CHECK((j != NULL) == valid);
		json_decref(j);
	}
	free(buf);

	j = json_loadb((const char *)data, size, FLAGS, &err);
	FUZZ_CHECK((j != NULL) == valid);
	if (!valid) {
		hit(hash_error(err.text));
		return 0;
	}
	walk(j, 0);
	buf = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
	FUZZ_CHECK(buf);
	FUZZ_CHECK(item_json_valid(buf, strlen(buf)));
	j2 = json_loads(buf, FLAGS, &err);
	FUZZ_CHECK(j2 && json_equal(j, j2));
	json_decref(j2);
	json_decref(j);
	free(buf);
	return 0;
}
