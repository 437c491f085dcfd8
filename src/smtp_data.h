/* smtp_data.h - the DATA reader: a byte state machine (RFC 5321 4.1.1.4,
 * 4.5.2).
 *
 * The end of data is only <CRLF>.<CRLF>.  A bare CR, a bare LF or a NUL
 * anywhere marks the message bad (it is refused whole, never split), and
 * the reader goes on to the real end.  Output has LF line ends and the
 * leading dot of stuffed lines removed; it is never longer than the input.
 */
#ifndef PICOMAIL_SMTP_DATA_H
#define PICOMAIL_SMTP_DATA_H

#include <stddef.h>
#include <stdint.h>

enum smtp_data_state {
	DATA_BOL,     /* at the start of a line (after CRLF) */
	DATA_TEXT,    /* inside a line */
	DATA_CR,      /* after a CR */
	DATA_DOT,     /* after a dot at the start of a line */
	DATA_DOTCR,   /* after ".\r" at the start of a line */
	DATA_END,     /* <CRLF>.<CRLF> seen */
};

#define DATA_BARE_CR 1u
#define DATA_BARE_LF 2u
#define DATA_NUL     4u

struct smtp_data {
	enum smtp_data_state state;
	unsigned flags;       /* DATA_BARE_CR | DATA_BARE_LF | DATA_NUL */
	/* The message size of RFC 1870 section 3, which MAIL's SIZE= declares
	 * and max_message_size bounds: the octets received after the 354,
	 * CRLF line ends included, the stuffing dots and the final ".\r\n"
	 * excluded.  For a message without flags it is the output's length
	 * plus one for each LF (stored LF, sent CRLF). */
	uint64_t octets;
};

void smtp_data_init(struct smtp_data *d);

/* Feeds up to n bytes of in, writing message bytes to out (room for n).
 * Returns the bytes consumed: all of them, or fewer when the end of data
 * was reached (the rest belongs to the next command).  *outlen gets the
 * bytes written. */
size_t smtp_data_feed(struct smtp_data *d, const unsigned char *in, size_t n,
                      unsigned char *out, size_t *outlen);

#endif
