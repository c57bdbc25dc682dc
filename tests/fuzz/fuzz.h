/*
 * fuzz.h - what the libFuzzer targets of tests/fuzz/ share.
 *
 * FUZZ_CHECK(cond) aborts with the file, line and expression when an
 * invariant does not hold: libFuzzer reports the abort as a crash and saves
 * the input (crash-*), like a sanitizer report. It writes on file
 * descriptor 2, not through stdio's stderr, which a harness may silence.
 */
#ifndef TIERFS_FUZZ_H
#define TIERFS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define FUZZ_CHECK(cond)                                                       \
	do {                                                                   \
		if (!(cond)) {                                                 \
			dprintf(STDERR_FILENO,                                 \
				"%s:%d: invariant broken: %s\n", __FILE__,     \
				__LINE__, #cond);                              \
			abort();                                               \
		}                                                              \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#endif
