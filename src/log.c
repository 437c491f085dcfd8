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

/* Copies text into out (len bytes, NUL-terminated), each byte outside
 * printable ASCII written as \xNN and a backslash as two: names and
 * replies that came from a client or a server cannot start a forged line
 * of their own (CR, LF) or talk to the terminal of whoever reads the log
 * (ESC, C1). */
static void log_escape(char *out, size_t len, const char *text)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (; *text != '\0'; text++) {
		unsigned char ch = (unsigned char)*text;

		if (ch >= 0x20 && ch < 0x7f && ch != '\\') {
			if (o + 1 >= len) {
				break;
			}
			out[o++] = (char)ch;
			continue;
		}
		if (o + 4 >= len) {
			break;
		}
		out[o++] = '\\';
		if (ch == '\\') {
			out[o++] = '\\';
			continue;
		}
		out[o++] = 'x';
		out[o++] = hex[ch >> 4];
		out[o++] = hex[ch & 15];
	}
	out[o] = '\0';
}

void log_msg(int prio, const char *fmt, ...)
{
	char text[1024], line[1024];
	va_list ap;
	int n, m;
	struct timespec ts;

	va_start(ap, fmt);
	m = vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	if (m < 0) {
		return;
	}
	if (!log_stderr) {
		log_escape(line, sizeof line, text);
		syslog(prio, "%s", line);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	n = snprintf(line, sizeof line, "%lld.%03ld %s[%d]: %s: ", (long long)ts.tv_sec,
	             ts.tv_nsec / 1000000, log_ident, log_pid ? log_pid : (int)getpid(), prio_name(prio));
	if (n < 0 || (size_t)n >= sizeof line - 2) {
		return;
	}
	/* Room is kept for the newline. */
	log_escape(line + n, sizeof line - 1 - (size_t)n, text);
	n += (int)strlen(line + n);
	line[n++] = '\n';
	/* One write per line so lines from the daemon never interleave. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		return;
	}
}
