/* log.c - where lines go: syslog, or stderr with an ISO 8601 time.
 *
 * syslog is spoken here rather than through syslog(3): musl's brings
 * strftime and its locale tables (4-5 KB) for a timestamp written in three
 * lines below.  Its protocol is the one musl's speaks: one datagram a line
 * on the unix socket /dev/log, "<facility|priority>Mmm dd hh:mm:ss
 * ident[pid]: text\n", connected at log_open and connected again once when
 * a send finds the log daemon gone (it restarted). */
#include "log.h"
#include "date.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int log_stderr = 1;
static const char *log_ident = "picomail";
static int log_pid;   /* set at log_open: after a fork, log_open is called again */
static int syslog_fd = -1;

/* The log daemon's socket; the test build takes another from
 * PICOMAIL_SYSLOG, so that the tests can read what the daemon sends. */
static const char *syslog_path(void)
{
#ifdef PICOMAIL_TEST
	const char *p = getenv("PICOMAIL_SYSLOG");

	if (p != NULL && p[0] != '\0') {
		return p;
	}
#endif
	return "/dev/log";
}

static void syslog_connect(void)
{
	struct sockaddr_un sun;
	const char *path = syslog_path();

	if (syslog_fd < 0) {
		syslog_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (syslog_fd < 0) {
			return;
		}
	}
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	if (strlen(path) < sizeof sun.sun_path) {
		memcpy(sun.sun_path, path, strlen(path) + 1);
	}
	/* No log daemon yet: each line tries again (syslog_send). */
	(void)connect(syslog_fd, (struct sockaddr *)&sun, sizeof sun);
}

void log_open(const char *ident, int to_stderr)
{
	log_ident = ident;
	log_pid = (int)getpid();
	log_stderr = to_stderr;
	if (!to_stderr) {
		syslog_connect();
	}
}

/* One line to syslog, facility mail.  Lost, as syslog(3) loses it, when
 * there is no log daemon. */
static void syslog_send(int prio, const char *text)
{
	char buf[LOG_LINE_MAX + 128];
	struct tm tm;
	time_t t = time(NULL);
	int n;

	if (localtime_r(&t, &tm) == NULL) {
		memset(&tm, 0, sizeof tm);
	}
	n = snprintf(buf, sizeof buf - 1, "<%d>%s %2d %02d:%02d:%02d %s[%d]: %s",
	             LOG_MAIL | (prio & LOG_PRIMASK), date_month(tm.tm_mon), tm.tm_mday, tm.tm_hour,
	             tm.tm_min, tm.tm_sec, log_ident, log_pid ? log_pid : (int)getpid(), text);
	if (n < 0) {
		return;
	}
	if ((size_t)n > sizeof buf - 2) {
		n = (int)(sizeof buf - 2);
	}
	buf[n++] = '\n';
	if (syslog_fd < 0) {
		syslog_connect();
	}
	if (send(syslog_fd, buf, (size_t)n, MSG_NOSIGNAL) < 0 &&
	    (errno == ECONNREFUSED || errno == ECONNRESET || errno == ENOTCONN || errno == EPIPE)) {
		syslog_connect();
		(void)send(syslog_fd, buf, (size_t)n, MSG_NOSIGNAL);
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
	time_t t;
	long off;
	char sign = '+';

	clock_gettime(CLOCK_REALTIME, &ts);
	t = ts.tv_sec;
	if (localtime_r(&t, &tm) == NULL) {
		return snprintf(out, len, "%lld", (long long)t);
	}
	off = tm.tm_gmtoff / 60;
	if (off < 0) {
		sign = '-';
		off = -off;
	}
	return snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03d%c%02ld:%02ld",
	                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	                tm.tm_sec, (int)(ts.tv_nsec / 1000000), sign, off / 60, off % 60);
}

void log_write(int prio, const char *text)
{
	char line[LOG_LINE_MAX + 128], when[96];
	int n;

	if (!log_stderr) {
		syslog_send(prio, text);
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

