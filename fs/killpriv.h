/*
 * killpriv.h - tierfs clears set-ID bits itself (FUSE_HANDLE_KILLPRIV_V2),
 * so the kernel asks no security.capability before writes (killpriv.c).
 */
#ifndef TIERFS_KILLPRIV_H
#define TIERFS_KILLPRIV_H

#include <stdbool.h>

#include "ops.h"

/* Routes @se's device I/O through killpriv.c, which offers the kernel
 * FUSE_HANDLE_KILLPRIV_V2 at INIT. Call after fuse_session_mount(). 0 or
 * what fuse_session_custom_io() returned. */
int tfs_killpriv_setup(struct fuse_session *se);

/* true when the request this thread is handling asks the filesystem to
 * clear S_ISUID and S_ISGID (when group-executable): a write, truncation
 * or O_TRUNC open by a caller without CAP_FSETID, or a chown. */
bool tfs_kill_suidgid(void);

#endif
