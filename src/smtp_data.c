/* smtp_data.c - the DATA byte state machine. */
#include "smtp_data.h"

void smtp_data_init(struct smtp_data *d)
{
	/* The CRLF that ended the DATA command starts the first line, so a
	 * lone "." line right away is an empty message (RFC 5321 4.1.1.4). */
	d->state = DATA_BOL;
	d->flags = 0;
	d->octets = 0;
}

size_t smtp_data_feed(struct smtp_data *d, const unsigned char *in, size_t n,
                      unsigned char *out, size_t *outlen)
{
	size_t i, o = 0;
	unsigned char ch;

	for (i = 0; i < n && d->state != DATA_END; i++) {
		ch = in[i];
		d->octets++;
		if (ch == '\0') {
			d->flags |= DATA_NUL;
		}
		switch (d->state) {
		case DATA_BOL:
			if (ch == '.') {
				d->state = DATA_DOT;
			} else if (ch == '\r') {
				d->state = DATA_CR;
			} else if (ch == '\n') {
				/* A bare LF never starts a line: "\n.\n" is text. */
				d->flags |= DATA_BARE_LF;
				out[o++] = ch;
				d->state = DATA_TEXT;
			} else {
				out[o++] = ch;
				d->state = DATA_TEXT;
			}
			break;
		case DATA_TEXT:
			if (ch == '\r') {
				d->state = DATA_CR;
			} else {
				if (ch == '\n') {
					d->flags |= DATA_BARE_LF;
				}
				out[o++] = ch;
			}
			break;
		case DATA_CR:
			if (ch == '\n') {
				out[o++] = '\n';
				d->state = DATA_BOL;
			} else if (ch == '\r') {
				d->flags |= DATA_BARE_CR;   /* this CR may still end a line */
			} else {
				d->flags |= DATA_BARE_CR;
				out[o++] = ch;
				d->state = DATA_TEXT;
			}
			break;
		case DATA_DOT:
			if (ch == '\r') {
				d->state = DATA_DOTCR;
			} else {
				/* Stuffed line: the first dot goes (4.5.2), and is no
				 * part of the message's size (RFC 1870 section 3). */
				d->octets--;
				if (ch == '\n') {
					d->flags |= DATA_BARE_LF;
				}
				out[o++] = ch;
				d->state = DATA_TEXT;
			}
			break;
		case DATA_DOTCR:
			if (ch == '\n') {
				d->state = DATA_END;
				d->octets -= 3;   /* ".\r\n" is not message */
			} else if (ch == '\r') {
				d->flags |= DATA_BARE_CR;
				d->state = DATA_CR;
			} else {
				d->flags |= DATA_BARE_CR;
				out[o++] = ch;
				d->state = DATA_TEXT;
			}
			break;
		case DATA_END:
			break;
		}
	}
	*outlen = o;
	return i;
}
