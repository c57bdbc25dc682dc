/*
 * hash_cmd.h - `tierfs hash [--progress] PATH...`: prints the Merkle hash
 * (engine/merkle.h) of trees and files on any filesystem.
 */
#ifndef TIERFS_HASH_CMD_H
#define TIERFS_HASH_CMD_H

/* Hashes each PATH of argv[2..] (argv[1] is "hash") and prints one line
 * per PATH on stdout, as sha256sum does: 64 lowercase hex digits, two
 * spaces, PATH. A PATH that cannot be hashed (a symbolic link, device,
 * fifo or socket below it, or an error reading it) gets a message on
 * stderr and no line, and the next PATH is hashed. Progress goes to stderr
 * when it is a terminal or with --progress. Blocks until done; uses no
 * threads. Returns the process exit status: 0 when every PATH was hashed,
 * 1 when one was not (or stdout could not be written), 2 on a usage error
 * (0 for --help). */
int tfs_hash_cmd(int argc, char **argv);

#endif
