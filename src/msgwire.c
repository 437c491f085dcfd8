/* msgwire.c - a stored message as POP3 sends it. */
#include "msgwire.h"

void msgwire_init(struct msgwire *w, long lines)
{
	w->bol = 1;
	w->cr = 0;
	w->in_headers = 1;
	w->lines_left = lines;
	w->done = 0;
	w->stuff = 1;
	w->octets = 0;
}

/* Sends one line end as CRLF and counts the line it ends: an empty line
 * in the header is the blank line that ends it; after it, TOP counts
 * body lines and is done after the last one asked for. */
static size_t line_end(struct msgwire *w, unsigned char *out)
{
	if (w->in_headers && w->bol) {
		w->in_headers = 0;
	} else if (!w->in_headers && w->lines_left > 0) {
		w->lines_left--;
	}
	out[0] = '\r';
	out[1] = '\n';
	w->octets += 2;
	w->bol = 1;
	w->cr = 0;
	if (!w->in_headers && w->lines_left == 0) {
		w->done = 1;
	}
	return 2;
}

size_t msgwire_feed(struct msgwire *w, const unsigned char *in, size_t n, unsigned char *out,
                    size_t *outlen)
{
	size_t i, o = 0;
	unsigned char ch;

	for (i = 0; i < n && !w->done; i++) {
		ch = in[i];
		if (ch == '\r') {
			w->cr = 1;   /* a line end, whether a LF follows or not */
			continue;
		}
		if (ch == '\n') {
			o += line_end(w, out + o);
			continue;
		}
		if (w->cr) {
			o += line_end(w, out + o);
			if (w->done) {
				break;   /* ch starts a line TOP does not send */
			}
		}
		if (w->bol && ch == '.' && w->stuff) {
			out[o++] = '.';   /* stuffing: sent, not counted */
		}
		out[o++] = ch;
		w->octets++;
		w->bol = 0;
	}
	*outlen = o;
	return i;
}

size_t msgwire_end(struct msgwire *w, unsigned char *out)
{
	if (w->done || (w->bol && !w->cr)) {
		return 0;
	}
	return line_end(w, out);
}
