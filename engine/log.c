/*
 * log.c - formats engine log lines and hands them to the configured sink.
 */
#include <stdarg.h>
#include <stdio.h>

#include "log.h"

void eng_logf(const struct eng_log *log, int level, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	if (!log || !log->fn)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log->fn(log->arg, level, buf);
}
