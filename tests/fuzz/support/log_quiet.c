/* log_quiet.c - log.c for the harnesses: every line is formatted (so a
 * bad argument still shows under the sanitizers) and dropped, since a
 * million sessions would otherwise flood stderr or syslog.  With FUZZ_LOG
 * set in the environment, the lines go to stderr (to follow one input).
 * The shape of lines (log_kv.c) is the daemon's own. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void log_open(const char *ident, int to_stderr)
{
	(void)ident;
	(void)to_stderr;
}

void log_write(int prio, const char *text)
{
	static int show = -1;

	if (show < 0) {
		show = getenv("FUZZ_LOG") != NULL;
	}
	if (show) {
		fprintf(stderr, "log %d: %s\n", prio, text);
	}
}

void log_msg(int prio, const char *fmt, ...)
{
	char line[1024], escaped[1024];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	log_escape(escaped, sizeof escaped, line);
	log_write(prio, escaped);
}
