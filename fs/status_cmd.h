/*
 * status_cmd.h - `tierfs status MOUNTPOINT`: prints a mount's state.
 */
#ifndef TIERFS_STATUS_CMD_H
#define TIERFS_STATUS_CMD_H

/* Reads MOUNTPOINT/.tierfs/status and prints it readably (--json: as it
 * is). Returns the process exit status: 0, 1 when the mount is degraded,
 * 2 on usage errors or when MOUNTPOINT is not a tierfs mount. */
int tfs_status_cmd(int argc, char **argv);

#endif
