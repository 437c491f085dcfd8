/* log.h - syslog, or stderr in the foreground.
 *
 * Two kinds of line.  Events in a message's or a session's life are one
 * line each in a stable shape, an event word and then key=value fields
 * (log_kv): `received id=17A2.1 session=17a2 client=192.0.2.7 ...`.  A
 * value is written bare when it is printable ASCII without space, '"' or
 * '\'; otherwise in double quotes, with '"' as \" and '\' as \\, and any
 * byte outside printable ASCII as \xNN.  Everything else (start-up,
 * errors of the daemon itself) is free text (log_msg), escaped the same
 * way.  Either way, nothing a client or a server sent can start a line
 * of its own or reach a terminal as a control byte.
 */
#ifndef PICOMAIL_LOG_H
#define PICOMAIL_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <syslog.h>

#define LOG_LINE_MAX 1024

/* to_stderr: 1 for -f (and for the command-line tools), 0 for syslog. */
void log_open(const char *ident, int to_stderr);

/* Writes one line of text already escaped (log_escape, log_kv). */
void log_write(int prio, const char *text);

/* text into out (len bytes, NUL-terminated) with every byte outside
 * printable ASCII as \xNN and a backslash as \\. */
void log_escape(char *out, size_t len, const char *text);

/* One line at a syslog priority (LOG_ERR, LOG_WARNING, LOG_INFO...).  Bytes
 * outside printable ASCII (a newline too) are written \xNN, a backslash
 * \\: what a client sent can be logged as it is. */
void log_msg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* An event line being built: log_kv_start, fields, log_kv_end.  A field
 * that does not fit is left out, and the line says "truncated=yes". */
struct log_kv {
	char buf[LOG_LINE_MAX];
	size_t n;
	int cut;
};

void log_kv_start(struct log_kv *l, const char *event);

/* key=value, the value escaped and quoted as the header says; a NULL or
 * empty value is written "". */
void log_kv_str(struct log_kv *l, const char *key, const char *value);

/* key=<address>: the envelope address in angle brackets, as SMTP writes
 * it (<> for the null sender). */
void log_kv_addr(struct log_kv *l, const char *key, const char *addr);

void log_kv_u64(struct log_kv *l, const char *key, uint64_t v);

/* key=1.234s: a duration in milliseconds. */
void log_kv_ms(struct log_kv *l, const char *key, int64_t ms);

/* key=value with the value formatted first, then escaped. */
void log_kv_fmt(struct log_kv *l, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Writes the line at prio. */
void log_kv_end(struct log_kv *l, int prio);

/* The escaping of a value into out (len bytes, NUL-terminated): bare or
 * quoted as the header says.  Exposed for the unit tests. */
void log_value(char *out, size_t len, const char *value);

#endif
