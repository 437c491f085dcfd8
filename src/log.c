/* log.c - where lines go: syslog, or stderr with an ISO 8601 time. */
#include "log.h"

#include <inttypes.h>
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
	case LOG_CRIT: return "critical";
	case LOG_ERR: return "error";
	case LOG_WARNING: return "warning";
	case LOG_NOTICE: return "notice";
	case LOG_DEBUG: return "debug";
	default: return "info";
	}
}

/* "2026-12-06T20:22:17.123+01:00": ISO 8601, local time, for a person
 * reading the foreground log. */
static int iso_time(char *out, size_t len)
{
	struct timespec ts;
	struct tm tm;
	char zone[8];
	time_t t;

	clock_gettime(CLOCK_REALTIME, &ts);
	t = ts.tv_sec;
	if (localtime_r(&t, &tm) == NULL || strftime(zone, sizeof zone, "%z", &tm) != 5) {
		return snprintf(out, len, "%lld", (long long)t);
	}
	return snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03d%.3s:%.2s",
	                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	                tm.tm_sec, (int)(ts.tv_nsec / 1000000), zone, zone + 3);
}

void log_write(int prio, const char *text)
{
	char line[LOG_LINE_MAX + 128], when[96];
	int n;

	if (!log_stderr) {
		syslog(prio, "%s", text);
		return;
	}
	(void)iso_time(when, sizeof when);
	n = snprintf(line, sizeof line - 1, "%s %s[%d]: %s: %s", when, log_ident,
	             log_pid ? log_pid : (int)getpid(), prio_name(prio), text);
	if (n < 0) {
		return;
	}
	if ((size_t)n > sizeof line - 2) {
		n = (int)(sizeof line - 2);
	}
	line[n++] = '\n';
	/* One write per line so lines from the daemon never interleave. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		return;
	}
}

void log_msg(int prio, const char *fmt, ...)
{
	char text[LOG_LINE_MAX], line[LOG_LINE_MAX];
	va_list ap;
	int m;

	va_start(ap, fmt);
	m = vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	if (m < 0) {
		return;
	}
	log_escape(line, sizeof line, text);
	log_write(prio, line);
}

