/* fuzz_smtp_data.c - the DATA reader (src/smtp_data.c): dot-stuffing, the
 * end of data, bare CR, bare LF and NUL.
 *
 * Input: a byte choosing the chunk size, then the bytes after DATA.  The
 * reader is fed twice, in one piece and in chunks, and must agree with
 * itself: same output, same flags, same octets, the end found at the
 * same place.  Each call must consume all its bytes unless it reached the
 * end, never write more than it read, and must find the end exactly
 * where the first <CRLF>.<CRLF> is (the DATA command's CRLF counts as the
 * first CRLF).  Output never holds CR unless the message was flagged, and
 * an unflagged message's octets are its RFC 1870 size: the stored octets
 * plus one CR for each LF. */
#include "fuzz.h"
#include "smtp_data.h"

#include <stdlib.h>
#include <string.h>

#define IN_MAX 65536

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Where the end of data is by the RFC's definition: just past the first
 * ".\r\n" that follows "\r\n" (or starts the data), or 0 if none. */
static size_t expected_end(const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i + 3 <= n; i++) {
		if ((i == 0 || (i >= 2 && p[i - 2] == '\r' && p[i - 1] == '\n')) && p[i] == '.' &&
		    p[i + 1] == '\r' && p[i + 2] == '\n') {
			return i + 3;
		}
	}
	return 0;
}

/* The LFs in p[0..n): each was a CRLF on the wire. */
static size_t lines(const unsigned char *p, size_t n)
{
	size_t i, k = 0;

	for (i = 0; i < n; i++) {
		k += p[i] == '\n';
	}
	return k;
}

/* Feeds in[0..n) in pieces of chunk; returns the bytes consumed. */
static size_t feed(struct smtp_data *d, const uint8_t *in, size_t n, size_t chunk,
                   unsigned char *out, size_t *outlen)
{
	size_t off = 0, used, o;

	*outlen = 0;
	smtp_data_init(d);
	while (off < n && d->state != DATA_END) {
		size_t want = n - off < chunk ? n - off : chunk;

		used = smtp_data_feed(d, in + off, want, out + *outlen, &o);
		if (used > want || o > used) {
			fuzz_fail("consumed %zu of %zu, wrote %zu", used, want, o);
		}
		if (used < want && d->state != DATA_END) {
			fuzz_fail("stopped after %zu of %zu bytes before the end", used, want);
		}
		off += used;
		*outlen += o;
	}
	return off;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned char out1[IN_MAX], out2[IN_MAX];
	struct smtp_data d1, d2;
	size_t chunk, used1, used2, len1, len2, end;

	if (size < 1 || size - 1 > IN_MAX) {
		return 0;
	}
	chunk = (size_t)data[0] % 64 + 1;
	data++;
	size--;
	used1 = feed(&d1, data, size, size == 0 ? 1 : size, out1, &len1);
	used2 = feed(&d2, data, size, chunk, out2, &len2);
	if (used1 != used2 || len1 != len2 || memcmp(out1, out2, len1) != 0 ||
	    d1.flags != d2.flags || d1.octets != d2.octets || d1.state != d2.state) {
		fuzz_fail("whole and chunked feeds differ (chunk %zu)", chunk);
	}
	end = expected_end(data, size);
	if (end != 0 ? (d1.state != DATA_END || used1 != end) : d1.state == DATA_END) {
		fuzz_fail("end of data at %zu, expected at %zu", used1, end);
	}
	if (d1.state == DATA_END && d1.octets > used1 - 3) {
		fuzz_fail("octets %llu for %zu bytes before the dot", (unsigned long long)d1.octets,
		          used1 - 3);
	}
	if (d1.state == DATA_END && d1.flags == 0 && d1.octets != len1 + lines(out1, len1)) {
		fuzz_fail("octets %llu for %zu stored octets", (unsigned long long)d1.octets, len1);
	}
	if (d1.flags == 0 && memchr(out1, '\r', len1) != NULL) {
		fuzz_fail("a CR in the output of an unflagged message");
	}
	if (d1.flags == 0 && memchr(data, 0, used1) != NULL) {
		fuzz_fail("a NUL in the input, not flagged");
	}
	return 0;
}
