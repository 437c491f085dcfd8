/* log.c - one line per event, to syslog or to stderr. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int log_stderr = 1;
static const char *log_ident = "picomail";
static int log_pid;   /* set at log_open: after a fork, log_open is called again */

void log_open(const char *ident, int to_stderr)
{
	log_ident = ident;
	log_pid = (int)getpid();
	log_stderr = to_stderr;
	if (!to_stderr) {
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
	}
}

static const char *prio_name(int prio)
{
	switch (prio) {
	case LOG_ERR: return "error";
	case LOG_WARNING: return "warning";
	case LOG_NOTICE: return "notice";
	case LOG_DEBUG: return "debug";
	default: return "info";
	}
}

void log_msg(int prio, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n, m;
	struct timespec ts;

	va_start(ap, fmt);
	if (!log_stderr) {
		vsyslog(prio, fmt, ap);
		va_end(ap);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	n = snprintf(line, sizeof line, "%lld.%03ld %s[%d]: %s: ", (long long)ts.tv_sec,
	             ts.tv_nsec / 1000000, log_ident, log_pid ? log_pid : (int)getpid(), prio_name(prio));
	if (n < 0) {
		va_end(ap);
		return;
	}
	m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
	va_end(ap);
	if (m < 0) {
		return;
	}
	n += m;
	if ((size_t)n >= sizeof line - 1) {
		n = sizeof line - 2;   /* truncated: keep the newline */
	}
	line[n++] = '\n';
	/* One write per line so lines from the daemon never interleave. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		return;
	}
}
