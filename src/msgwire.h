/* msgwire.h - a stored message as POP3 sends it (RFC 1939 3, 11): a byte
 * state machine from the file's bytes to lines ending in CRLF, with
 * dot-stuffing, and for TOP the header and the first body lines only.
 *
 * Files may come from other programs (migrated mail, other delivery
 * agents), so the line ends are whatever the file holds:
 *   - a line ends at LF, and any CRs right before the LF belong to that
 *     line end: LF, CRLF and CR CR LF (a CRLF file converted again) are
 *     each one line end;
 *   - a CR (or a run of CRs) followed by anything but LF ends a line too,
 *     so the wire never holds a bare CR: a client that splits lines at CR
 *     finds the same lines, and no dot line inside a message;
 *   - a last line without a line end gets one;
 * and every line end is sent as one CRLF.  A line starting with '.' gets
 * one more (RFC 1939 3).
 *
 * The size of a message (LIST, STAT, RETR's +OK) is msgwire's octets
 * after the whole file: the octets sent, without the stuffing dots and
 * the final ".\r\n".  Counting and sending share this machine, so they
 * cannot disagree.
 */
#ifndef PICOMAIL_MSGWIRE_H
#define PICOMAIL_MSGWIRE_H

#include <stddef.h>
#include <stdint.h>

struct msgwire {
	int bol;            /* at the start of a line */
	int cr;             /* CRs seen whose line end is not sent yet */
	int in_headers;     /* before the blank line that ends the header */
	long lines_left;    /* TOP: body lines still to send; -1: all (RETR) */
	int done;           /* TOP: every line asked for is out */
	int stuff;          /* 1: dot-stuffing (POP3, the default); 0: none (IMAP) */
	uint64_t octets;    /* message octets out so far (no stuffing dots) */
};

/* Starts a message: lines -1 for all of it (RETR), else TOP's count. */
void msgwire_init(struct msgwire *w, long lines);

/* Converts up to n bytes of in, writing to out, which must have room for
 * 2 * n + 2 bytes.  Returns the bytes consumed: all of them, or fewer once
 * w->done (the rest is not sent).  *outlen gets the bytes written. */
size_t msgwire_feed(struct msgwire *w, const unsigned char *in, size_t n, unsigned char *out,
                    size_t *outlen);

/* At the end of the file: the line end still owed (a last line without
 * one, or CRs at the very end) into out (room for 2 bytes); returns its
 * length.  Nothing once w->done. */
size_t msgwire_end(struct msgwire *w, unsigned char *out);

#endif
