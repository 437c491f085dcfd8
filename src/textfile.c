/* textfile.c - a small text file read line by line through fixed buffers.
 *
 * Bytes go one at a time into a bounded line buffer; LF hands the line to
 * the caller's parser, NUL and overflow fail at once.  The reading is the
 * same for every file, the parsing is each caller's.
 */
#include "textfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define TEXTFILE_READ_BUF 2048

struct textfile_reader {
	const char *path;
	const struct textfile_opts *o;
	textfile_line_fn fn;
	void *ctx;
	char line[TEXTFILE_LINE_MAX + 1];
	size_t len;
	unsigned lineno;   /* of the last complete line */
};

/* The one place errors take their form: "path:line: msg", or "path: msg"
 * for line 0 (the file as a whole).  Returns -1. */
static int textfile_fail(const char *path, unsigned line, const char *msg, char *err,
                         size_t errlen)
{
	if (err == NULL || errlen == 0) {
		return -1;
	}
	if (line == 0) {
		(void)snprintf(err, errlen, "%s: %s", path, msg);
	} else {
		(void)snprintf(err, errlen, "%s:%u: %s", path, line, msg);
	}
	return -1;
}

/* Hands the buffered line to the parser, or with end set tells it the file
 * is over; its message gets the path and line in front. */
static int textfile_call(struct textfile_reader *r, int end, char *err, size_t errlen)
{
	char msg[TEXTFILE_MSG_MAX];
	char *line = NULL;
	unsigned at;

	if (!end) {
		r->lineno++;
		r->line[r->len] = '\0';
		r->len = 0;
		line = r->line;
	}
	/* At the end, the line after the last: never 0, which means no line. */
	at = end ? r->lineno + 1 : r->lineno;
	msg[0] = '\0';   /* a parser that fails without a word still reports its line */
	if (r->fn(r->ctx, line, &at, msg, r->o->msg_max) < 0) {
		return textfile_fail(r->path, at, msg, err, errlen);
	}
	return 0;
}

/* One byte of the file.  A NUL or an over-long line is reported at once,
 * so that even a file like /dev/zero ends. */
static int textfile_byte(struct textfile_reader *r, char ch, char *err, size_t errlen)
{
	char msg[48];

	if (ch == '\n') {
		return textfile_call(r, 0, err, errlen);
	}
	if (ch == '\0') {
		return textfile_fail(r->path, r->lineno + 1, "NUL byte in line", err, errlen);
	}
	if (r->len == r->o->line_max) {
		(void)snprintf(msg, sizeof msg, "line too long (max %zu)", r->o->line_max);
		return textfile_fail(r->path, r->lineno + 1, msg, err, errlen);
	}
	r->line[r->len++] = ch;
	return 0;
}

int textfile_read(const char *path, const struct textfile_opts *o, textfile_line_fn fn,
                  void *ctx, char *err, size_t errlen)
{
	struct textfile_reader r;
	char buf[TEXTFILE_READ_BUF];
	ssize_t got, i;
	int fd, rc = 0;

	/* Limits past the buffers are the caller's mistake: refuse, never
	 * overrun. */
	if (o == NULL || fn == NULL || o->line_max == 0 || o->line_max > TEXTFILE_LINE_MAX ||
	    o->msg_max == 0 || o->msg_max > TEXTFILE_MSG_MAX) {
		return textfile_fail(path, 0, strerror(EINVAL), err, errlen);
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT && o->missing_ok) {
		return 0;
	}
	if (fd < 0) {
		return textfile_fail(path, 0, strerror(errno), err, errlen);
	}
	r.path = path;
	r.o = o;
	r.fn = fn;
	r.ctx = ctx;
	r.len = 0;
	r.lineno = 0;
	while (rc == 0) {
		got = read(fd, buf, sizeof buf);
		if (got < 0 && errno == EINTR) {
			continue;
		}
		if (got < 0) {
			rc = textfile_fail(path, 0, strerror(errno), err, errlen);
			break;
		}
		if (got == 0) {
			/* A file need not end in LF. */
			if (r.len > 0) {
				rc = textfile_call(&r, 0, err, errlen);
			}
			if (rc == 0) {
				rc = textfile_call(&r, 1, err, errlen);
			}
			break;
		}
		for (i = 0; i < got && rc == 0; i++) {
			rc = textfile_byte(&r, buf[i], err, errlen);
		}
	}
	if (close(fd) < 0 && rc == 0) {
		rc = textfile_fail(path, 0, strerror(errno), err, errlen);
	}
	return rc;
}
