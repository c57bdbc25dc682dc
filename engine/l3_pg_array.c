/*
 * l3_pg_array.c - one-dimensional arrays in array_recv's binary format: the
 * parameters of the PostgreSQL store's batch statements (unnest($1, ...),
 * ANY($1)), built row by row.
 *
 * Format (integers in network byte order):
 *     int32 ndim = 1, int32 has_nulls, Oid element type,
 *     int32 length, int32 lower bound = 1,
 *     then per element: int32 byte length (-1 for NULL), the bytes.
 * lpg_arr_start() writes the header with has_nulls and length 0;
 * lpg_arr_finish() fills them in and hands the array out as a statement's
 * parameter. A failed allocation, or an element over INT32_MAX bytes, sets
 * oom: later appends do nothing and lpg_arr_finish() returns -ENOMEM, so a
 * caller checks once per array. The buffer is kept from one array to the
 * next (lpg_arr_release() frees it).
 */
#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "l3_pg_int.h"

#define LPG_ARR_HEADER 20

void lpg_arr_release(struct lpg_arr *a)
{
	free(a->p);
	memset(a, 0, sizeof(*a));
}

static void lpg_arr_append(struct lpg_arr *a, const void *p, size_t len)
{
	if (a->oom)
		return;
	if (len > a->cap - a->len) {
		size_t cap = a->cap ? a->cap : 256;
		char *np;

		while (cap - a->len < len) {
			if (cap > SIZE_MAX / 2) {
				a->oom = true;
				return;
			}
			cap *= 2;
		}
		np = realloc(a->p, cap);
		if (!np) {
			a->oom = true;
			return;
		}
		a->p = np;
		a->cap = cap;
	}
	if (len)
		memcpy(a->p + a->len, p, len);
	a->len += len;
}

static void lpg_arr_u32(struct lpg_arr *a, uint32_t v)
{
	uint32_t be = htobe32(v);

	lpg_arr_append(a, &be, 4);
}

/* Empties @a for a new array of @elem (a type OID). */
void lpg_arr_start(struct lpg_arr *a, Oid elem)
{
	a->len = 0;
	a->n = 0;
	a->has_null = false;
	lpg_arr_u32(a, 1);    /* ndim */
	lpg_arr_u32(a, 0);    /* has_nulls, set by lpg_arr_finish */
	lpg_arr_u32(a, elem); /* element type */
	lpg_arr_u32(a, 0);    /* length, set by lpg_arr_finish */
	lpg_arr_u32(a, 1);    /* lower bound */
}

void lpg_arr_bytes(struct lpg_arr *a, const void *p, size_t len)
{
	if (len > INT32_MAX) {
		a->oom = true;
		return;
	}
	lpg_arr_u32(a, (uint32_t)len);
	lpg_arr_append(a, p, len);
	a->n++;
}

void lpg_arr_null(struct lpg_arr *a)
{
	lpg_arr_u32(a, UINT32_MAX); /* -1 */
	a->has_null = true;
	a->n++;
}

void lpg_arr_opt(struct lpg_arr *a, const void *p, size_t len)
{
	if (p)
		lpg_arr_bytes(a, p, len);
	else
		lpg_arr_null(a);
}

void lpg_arr_i64(struct lpg_arr *a, int64_t v)
{
	char b[8];

	lpg_put64(b, v);
	lpg_arr_bytes(a, b, 8);
}

void lpg_arr_i32(struct lpg_arr *a, int32_t v)
{
	uint32_t be = htobe32((uint32_t)v);

	lpg_arr_bytes(a, &be, 4);
}

void lpg_arr_i16(struct lpg_arr *a, int16_t v)
{
	uint16_t be = htobe16((uint16_t)v);

	lpg_arr_bytes(a, &be, 2);
}

void lpg_arr_bool(struct lpg_arr *a, bool v)
{
	char b = v ? 1 : 0;

	lpg_arr_bytes(a, &b, 1);
}

int lpg_arr_finish(struct lpg_arr *a, const char **value, int *length)
{
	uint32_t be;

	if (a->oom || a->len < LPG_ARR_HEADER)
		return -ENOMEM;
	be = htobe32(a->has_null ? 1 : 0);
	memcpy(a->p + 4, &be, 4);
	be = htobe32(a->n);
	memcpy(a->p + 12, &be, 4);
	*value = a->p;
	*length = (int)a->len;
	return 0;
}
