/*
 * inval.h - kernel cache invalidation for changes made by other writers.
 */
#ifndef TIERFS_INVAL_H
#define TIERFS_INVAL_H

#include <stdbool.h>

#include "ops.h"

/* eng_config.inval: @arg is the struct tfs. */
void tfs_inval(void *arg, const struct eng_inval *iv);
/* Lets notifications reach the kernel (after the mount) or stops them
 * (before the unmount). */
void tfs_inval_live(struct tfs *t, bool live);

#endif
