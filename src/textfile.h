/* textfile.h - a small text file read line by line through fixed buffers.
 *
 * The configuration, users and aliases files are all read this way.  A
 * NUL byte or a line longer than the caller's limit is an error at once
 * (so that even /dev/zero ends), never a silent split; the last line need
 * not end in LF.  Errors read "path:line: message" or "path: strerror".
 * No malloc: the buffers are on the stack, bounded by the constants below.
 */
#ifndef PICOMAIL_TEXTFILE_H
#define PICOMAIL_TEXTFILE_H

#include <stddef.h>

#define TEXTFILE_LINE_MAX 1024   /* the largest line_max a caller may ask for */
#define TEXTFILE_MSG_MAX  320    /* the largest msg_max a caller may ask for */

/* Parses one line: NUL-terminated, without its LF (a CR stays), and the
 * callback's to modify.  Called once more with line NULL after the last
 * line, so that a caller joining lines can finish.  *lineno is the line's
 * number from 1 (at the end, the last line's plus one).  Returns 0, or -1
 * with the message (no path:line) in msg; a callback reporting an earlier
 * line (the first of a joined one) sets *lineno to it. */
typedef int (*textfile_line_fn)(void *ctx, char *line, unsigned *lineno, char *msg,
                                size_t msglen);

struct textfile_opts {
	size_t line_max;   /* longest line without its LF, 1..TEXTFILE_LINE_MAX */
	size_t msg_max;    /* room for a callback's message, 1..TEXTFILE_MSG_MAX */
	int missing_ok;    /* 1: a missing file (ENOENT) reads as empty, fn never called */
};

/* Reads the file at path and hands each line to fn(ctx, ...), stopping at
 * the first error.  Returns 0, or -1 with "path:line: message" or
 * "path: strerror" in err. */
int textfile_read(const char *path, const struct textfile_opts *o, textfile_line_fn fn,
                  void *ctx, char *err, size_t errlen);

#endif
