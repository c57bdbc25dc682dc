/*
 * merkle.h - the Merkle hash of a tree of files and directories.
 *
 * The one definition every part of tierfs uses (the SQLite store in C, the
 * PostgreSQL store in SQL, `tierfs hash DIR` over any filesystem, `tierfs
 * verify`); docs/merkle.md states it for people:
 *
 *   leaf(file)  = SHA-256 of the file's content bytes (an empty file hashes
 *                 to SHA-256 of no bytes, e3b0c442...b855)
 *   node(dir)   = SHA-256 of the concatenation, over the directory's
 *                 children sorted by name bytes (memcmp order, a name that
 *                 is a prefix of another sorts first), of
 *                     name bytes | 0x00 | type | hash
 *                 where type is one byte, 'd' (0x64) for a directory or
 *                 'f' (0x66) for a file, and hash is the child's 32-byte
 *                 binary Merkle hash (leaf or node)
 *   an empty directory hashes to SHA-256 of no bytes.
 *
 * Only names, kinds and content count: modes, owners, times, xattrs and
 * item state tags do not, so a restored backup compares equal to the live
 * tree. Names never hold NUL, so the 0x00 separator makes the encoding
 * unambiguous. A JSON item "x.json" and a directory "x" are two children
 * with different names; so are a binary item "x" and a directory "x" in
 * different directories.
 */
#ifndef TIERFS_MERKLE_H
#define TIERFS_MERKLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MERKLE_LEN 32
#define MERKLE_TYPE_DIR 'd'
#define MERKLE_TYPE_FILE 'f'

/* A running SHA-256: one directory's children, or one file's content. */
struct merkle;

/* Starts a hash. Returns NULL when out of memory. */
struct merkle *merkle_begin(void);

/* Feeds raw bytes (a file's content, in pieces). */
void merkle_update(struct merkle *m, const void *data, size_t len);

/* Feeds one child of a directory: the caller feeds children in
 * merkle_name_cmp() order. @is_dir picks the type byte. */
void merkle_add_child(struct merkle *m, const char *name, size_t name_len,
		      bool is_dir, const uint8_t hash[MERKLE_LEN]);

/* Writes the hash to @out and frees @m. Accepts NULL @m: writes nothing. */
void merkle_end(struct merkle *m, uint8_t out[MERKLE_LEN]);

/* Frees @m without a result (an abandoned walk). Accepts NULL. */
void merkle_abort(struct merkle *m);

/* The order of children: memcmp() over the common length, then the
 * shorter name first. Returns <0, 0 or >0. */
int merkle_name_cmp(const char *a, size_t alen, const char *b, size_t blen);

/* SHA-256 of no bytes: an empty directory's and an empty file's hash. */
void merkle_empty(uint8_t out[MERKLE_LEN]);

#endif
