/*
 * items_cmd.h - `tierfs put|get|rm|ls|stat`: items by ID from the shell,
 * through the engine library, on the store a mount would use.
 */
#ifndef TIERFS_ITEMS_CMD_H
#define TIERFS_ITEMS_CMD_H

#include <stdbool.h>

/* true when @word (argv[1]) names one of these commands. */
bool tfs_items_cmd_is(const char *word);

/* Runs `tierfs CMD ARGS...` (argv[1] is CMD). Returns the process exit
 * status: 0 done, 1 the item is missing or the change was refused or not
 * committed, 2 a usage error, a bad ID, or a store that cannot be opened. */
int tfs_items_cmd(int argc, char **argv);

#endif
