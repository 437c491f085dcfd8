/* log.c - one line per event, to syslog or to stderr. */
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

static const char hex[] = "0123456789abcdef";

/* Copies text into out (len bytes, NUL-terminated), each byte outside
 * printable ASCII written as \xNN and a backslash as two: names and
 * replies that came from a client or a server cannot start a forged line
 * of their own (CR, LF) or talk to the terminal of whoever reads the log
 * (ESC, C1). */
static void log_escape(char *out, size_t len, const char *text)
{
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

/* Writes text, already escaped, as one line. */
static void log_line(int prio, const char *text)
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
	log_line(prio, line);
}

/* ---- event lines ------------------------------------------------------- */

static int bare(const char *v)
{
	if (*v == '\0') {
		return 0;
	}
	for (; *v != '\0'; v++) {
		unsigned char ch = (unsigned char)*v;

		if (ch <= 0x20 || ch >= 0x7f || ch == '"' || ch == '\\') {
			return 0;
		}
	}
	return 1;
}

void log_value(char *out, size_t len, const char *value)
{
	size_t o = 0;

	if (value == NULL) {
		value = "";
	}
	if (len < 3) {
		if (len > 0) {
			out[0] = '\0';
		}
		return;
	}
	if (bare(value)) {
		snprintf(out, len, "%s", value);
		return;
	}
	out[o++] = '"';
	for (; *value != '\0'; value++) {
		unsigned char ch = (unsigned char)*value;

		/* Room for this byte's form and the closing quote. */
		if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
			if (o + 2 >= len) {
				break;
			}
			out[o++] = (char)ch;
		} else if (ch == '"' || ch == '\\') {
			if (o + 3 >= len) {
				break;
			}
			out[o++] = '\\';
			out[o++] = (char)ch;
		} else {
			if (o + 5 >= len) {
				break;
			}
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[ch >> 4];
			out[o++] = hex[ch & 15];
		}
	}
	out[o++] = '"';
	out[o] = '\0';
}

/* Appends " key=value" (value already escaped), or marks the line cut. */
static void kv_put(struct log_kv *l, const char *key, const char *escaped)
{
	size_t k = strlen(key), v = strlen(escaped);

	/* Room kept for " truncated=yes". */
	if (l->cut || l->n + 1 + k + 1 + v + 15 >= sizeof l->buf) {
		l->cut = 1;
		return;
	}
	l->buf[l->n++] = ' ';
	memcpy(l->buf + l->n, key, k);
	l->n += k;
	l->buf[l->n++] = '=';
	memcpy(l->buf + l->n, escaped, v);
	l->n += v;
	l->buf[l->n] = '\0';
}

void log_kv_start(struct log_kv *l, const char *event)
{
	l->n = 0;
	l->cut = 0;
	l->buf[0] = '\0';
	log_escape(l->buf, 64, event);
	l->n = strlen(l->buf);
}

void log_kv_str(struct log_kv *l, const char *key, const char *value)
{
	char v[LOG_LINE_MAX / 2];

	log_value(v, sizeof v, value);
	kv_put(l, key, v);
}

void log_kv_addr(struct log_kv *l, const char *key, const char *addr)
{
	char a[LOG_LINE_MAX / 2];

	snprintf(a, sizeof a, "<%s>", addr != NULL ? addr : "");
	log_kv_str(l, key, a);
}

void log_kv_u64(struct log_kv *l, const char *key, uint64_t v)
{
	char b[24];

	snprintf(b, sizeof b, "%" PRIu64, v);
	kv_put(l, key, b);
}

void log_kv_ms(struct log_kv *l, const char *key, int64_t ms)
{
	char b[32];

	if (ms < 0) {
		ms = 0;
	}
	snprintf(b, sizeof b, "%" PRId64 ".%03ds", ms / 1000, (int)(ms % 1000));
	kv_put(l, key, b);
}

void log_kv_fmt(struct log_kv *l, const char *key, const char *fmt, ...)
{
	char text[LOG_LINE_MAX / 2];
	va_list ap;

	va_start(ap, fmt);
	if (vsnprintf(text, sizeof text, fmt, ap) < 0) {
		text[0] = '\0';
	}
	va_end(ap);
	log_kv_str(l, key, text);
}

void log_kv_end(struct log_kv *l, int prio)
{
	if (l->cut) {
		memcpy(l->buf + l->n, " truncated=yes", 15);
		l->n += 14;
	}
	log_line(prio, l->buf);
}
