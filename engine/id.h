/*
 * id.h - item IDs and the path codec (docs/design.md §2).
 *
 * An ID is a sequence of segments joined by '.'; a path is a sequence of
 * components joined by '/'. A component becomes a segment by percent-escaping
 * exactly two bytes, '.' -> "%2E" and '%' -> "%25" (uppercase hex); a segment
 * becomes a component by decoding exactly those two escapes. A regular file
 * whose name ends in ".json" (with at least one byte before it) is a JSON
 * item whose last segment is the name without ".json"; any other file is a
 * binary item named as it is. Directories are ID prefixes.
 *
 *     user/123.json          <-> user.123            (ITEM_JSON)
 *     user/notes.v2.txt      <-> user.notes%2Ev2%2Etxt (ITEM_BINARY)
 *
 * Valid IDs: 1..ID_MAX bytes, no NUL, no '/', no control byte (< 0x20 or
 * 0x7f), no empty segment (no leading, trailing or doubled '.'), every '%'
 * starts "%2E" or "%25", and every decoded segment is 1..255 bytes counting
 * the ".json" suffix its file name will carry. Bytes >= 0x80 are taken as
 * they are (UTF-8 agnostic).
 *
 * Valid names (path components): 1..255 bytes, no '/', no NUL, no control
 * byte, not "." or "..", and a JSON name needs a non-empty stem (".json"
 * alone is refused).
 *
 * Refused collisions: a binary item whose decoded last segment ends in
 * ".json" would show as a JSON file, so id_to_path() refuses it (-EINVAL).
 *
 * All functions are pure, thread-safe and never allocate. Output buffers are
 * NUL-terminated on success; on failure their content is unspecified.
 */
#ifndef TIERFS_ID_H
#define TIERFS_ID_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "item.h"

/* An ID is at most 4095 bytes, as a Linux path is; the path built from a
 * valid ID is never longer than the ID plus ".json" (escapes only shrink). */
#define ID_MAX 4095	 /* bytes in an ID */
#define ID_NAME_MAX 255	 /* bytes in a path component */
#define ID_PATH_MAX 4104 /* bytes in a path built from a valid ID, NUL too */

/* Checks a path component. Returns 0, -EINVAL or -ENAMETOOLONG (> 255). */
int id_check_name(const char *name, size_t len);

/* ITEM_JSON when @name (NUL-terminated) ends in ".json" after a non-empty
 * stem, else ITEM_BINARY. */
enum item_kind id_name_kind(const char *name);

/* Length of the stem of file @name: without ".json" for JSON names. */
size_t id_stem_len(const char *name, size_t len);

/* Escapes component bytes @comp[0..len) into @out (room for @cap bytes).
 * Returns the segment length, or -ERANGE when @cap is too small. */
ssize_t id_segment_encode(const char *comp, size_t len, char *out, size_t cap);

/* Decodes segment @seg[0..len) into @out. Returns the component length, or
 * -EINVAL (a '%' not starting a canonical escape), -ERANGE. */
ssize_t id_segment_decode(const char *seg, size_t len, char *out, size_t cap);

/* Checks an ID. Returns 0, -EINVAL, or -ENAMETOOLONG (longer than ID_MAX, or
 * a decoded segment longer than 255 bytes with its suffix). @kind says what
 * the last segment names (ITEM_JSON adds 5 bytes of ".json" to it). */
int id_validate(const char *id, size_t len, enum item_kind kind);

/*
 * Turns a relative path ("user/123.json", no leading or trailing '/') into
 * its ID in @out. @is_dir says the path names a directory (then no ".json"
 * rule applies). Sets *kind (ITEM_DIR, ITEM_JSON or ITEM_BINARY) when @kind
 * is not NULL. Returns the ID length, or -EINVAL (bad component, empty path),
 * -ENAMETOOLONG (component > 255 bytes or ID > ID_MAX), -ERANGE (@cap).
 */
ssize_t id_from_path(const char *path, bool is_dir, char *out, size_t cap,
		     enum item_kind *kind);

/*
 * Turns ID @id of @kind into its relative path in @out ("user/123.json").
 * Returns the path length, or -EINVAL (invalid ID, or a binary item whose
 * last segment decodes to a name ending in ".json"), -ENAMETOOLONG, -ERANGE.
 */
ssize_t id_to_path(const char *id, enum item_kind kind, char *out, size_t cap);

#endif
