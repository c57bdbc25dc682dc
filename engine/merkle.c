/*
 * merkle.c - the Merkle hash defined in merkle.h, over OpenSSL's EVP
 * SHA-256 (the low-level SHA256_* calls are deprecated in OpenSSL 3).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "merkle.h"

struct merkle {
	EVP_MD_CTX *ctx;
};

struct merkle *merkle_begin(void)
{
	struct merkle *m = malloc(sizeof(*m));

	if (!m)
		return NULL;
	m->ctx = EVP_MD_CTX_new();
	if (!m->ctx || EVP_DigestInit_ex(m->ctx, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(m->ctx);
		free(m);
		return NULL;
	}
	return m;
}

void merkle_update(struct merkle *m, const void *data, size_t len)
{
	if (len)
		EVP_DigestUpdate(m->ctx, data, len);
}

void merkle_add_child(struct merkle *m, const char *name, size_t name_len,
		      bool is_dir, const uint8_t hash[MERKLE_LEN])
{
	uint8_t sep[2] = {0, is_dir ? MERKLE_TYPE_DIR : MERKLE_TYPE_FILE};

	merkle_update(m, name, name_len);
	merkle_update(m, sep, sizeof(sep));
	merkle_update(m, hash, MERKLE_LEN);
}

void merkle_end(struct merkle *m, uint8_t out[MERKLE_LEN])
{
	unsigned int len = MERKLE_LEN;

	if (!m)
		return;
	EVP_DigestFinal_ex(m->ctx, out, &len);
	merkle_abort(m);
}

void merkle_abort(struct merkle *m)
{
	if (!m)
		return;
	EVP_MD_CTX_free(m->ctx);
	free(m);
}

int merkle_name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

void merkle_empty(uint8_t out[MERKLE_LEN])
{
	SHA256((const unsigned char *)"", 0, out);
}
