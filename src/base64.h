/* base64.h - RFC 4648 base64, for SASL (RFC 4954, RFC 5034). */
#ifndef PICOMAIL_BASE64_H
#define PICOMAIL_BASE64_H

#include <stddef.h>

/* Decodes len characters of in into out (room for outlen bytes).  Padding
 * is required where the length needs it; no spaces.  Returns the decoded
 * length, or -1 for bad input or no room. */
long base64_decode(const char *in, size_t len, unsigned char *out, size_t outlen);

/* Encodes n bytes into out (room for 4 * ((n + 2) / 3) + 1); returns the
 * length written, without the NUL it adds; -1 if no room. */
long base64_encode(const unsigned char *in, size_t n, char *out, size_t outlen);

#endif
