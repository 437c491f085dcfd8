/* log_kv.c - the shape of a line: escaping, and event lines built from
 * key=value fields (log.h).  Where lines go is log.c's. */
#include "log.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char hex[] = "0123456789abcdef";

/* Copies text into out (len bytes, NUL-terminated), each byte outside
 * printable ASCII written as \xNN and a backslash as two: names and
 * replies that came from a client or a server cannot start a forged line
 * of their own (CR, LF) or talk to the terminal of whoever reads the log
 * (ESC, C1). */
void log_escape(char *out, size_t len, const char *text)
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
	log_write(prio, l->buf);
}
