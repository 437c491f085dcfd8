/* log.h - syslog, or stderr in the foreground.  Callers put the session id
 * ("s=1a2b3c4d") and the message id ("m=...") in each line. */
#ifndef PICOMAIL_LOG_H
#define PICOMAIL_LOG_H

#include <syslog.h>

/* to_stderr: 1 for -f (and for the command-line tools), 0 for syslog. */
void log_open(const char *ident, int to_stderr);

/* One line at a syslog priority (LOG_ERR, LOG_WARNING, LOG_INFO...).  Bytes
 * outside printable ASCII (a newline too) are written \xNN, a backslash
 * \\: what a client sent can be logged as it is. */
void log_msg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
