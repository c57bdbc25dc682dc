/*
 * verify_cmd.h - `tierfs verify`: compares Redis with L3, repairs drift.
 */
#ifndef TIERFS_VERIFY_CMD_H
#define TIERFS_VERIFY_CMD_H

/* Runs `tierfs verify ARGS...` (argv[1] is "verify"). Returns the process
 * exit status: 0 in step, 1 drift found, 2 on errors. */
int tfs_verify_cmd(int argc, char **argv);

#endif
