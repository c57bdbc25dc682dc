/*
 * log.h - how the engine reports events.
 *
 * The engine never prints. Every module that has something to say calls
 * eng_logf() with the log sink it was given in its configuration; the sink
 * decides where the line goes (stderr, syslog, a test buffer). A NULL sink or
 * a sink with a NULL function drops the message.
 *
 * Messages are lowercase, have no final full stop, say what failed and then
 * why, and quote names: "cannot open 'x.db': permission denied".
 *
 * Thread-safety: eng_logf() may be called from any thread; the sink function
 * must be thread-safe.
 */
#ifndef TIERFS_LOG_H
#define TIERFS_LOG_H

#include <syslog.h> /* LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG */

struct eng_log {
	/* Receives one formatted line without a trailing newline. */
	void (*fn)(void *arg, int level, const char *msg);
	void *arg;
};

/* Formats and hands one line to the sink. Never fails; long lines are cut. */
void eng_logf(const struct eng_log *log, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
