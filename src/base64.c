/* base64.c - strict base64: a byte that is not of the alphabet, bad
 * padding or a stray bit is an error, so each input has one meaning. */
#include "base64.h"

static const char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int value(unsigned char ch)
{
	if (ch >= 'A' && ch <= 'Z') {
		return ch - 'A';
	}
	if (ch >= 'a' && ch <= 'z') {
		return ch - 'a' + 26;
	}
	if (ch >= '0' && ch <= '9') {
		return ch - '0' + 52;
	}
	if (ch == '+') {
		return 62;
	}
	if (ch == '/') {
		return 63;
	}
	return -1;
}

long base64_decode(const char *in, size_t len, unsigned char *out, size_t outlen)
{
	size_t i, o = 0, pad = 0;
	unsigned long acc;
	int v[4], k;

	if (len % 4 != 0) {
		return -1;
	}
	for (i = 0; i < len; i += 4) {
		for (k = 0; k < 4; k++) {
			unsigned char ch = (unsigned char)in[i + (size_t)k];

			if (ch == '=' && i + 4 == len && k >= 2) {
				v[k] = 0;
				pad++;
				continue;
			}
			if (pad > 0) {
				return -1;   /* data after '=' */
			}
			v[k] = value(ch);
			if (v[k] < 0) {
				return -1;
			}
		}
		acc = ((unsigned long)v[0] << 18) | ((unsigned long)v[1] << 12) |
		      ((unsigned long)v[2] << 6) | (unsigned long)v[3];
		if ((pad == 1 && (acc & 0xff)) || (pad == 2 && (acc & 0xffff))) {
			return -1;   /* stray bits under the padding */
		}
		if (o + 3 - pad > outlen) {
			return -1;
		}
		out[o++] = (unsigned char)(acc >> 16);
		if (pad < 2) {
			out[o++] = (unsigned char)(acc >> 8);
		}
		if (pad < 1) {
			out[o++] = (unsigned char)acc;
		}
	}
	return (long)o;
}

long base64_encode(const unsigned char *in, size_t n, char *out, size_t outlen)
{
	size_t i, o = 0;
	unsigned long acc;

	if (outlen < 4 * ((n + 2) / 3) + 1) {
		return -1;
	}
	for (i = 0; i < n; i += 3) {
		acc = (unsigned long)in[i] << 16;
		if (i + 1 < n) {
			acc |= (unsigned long)in[i + 1] << 8;
		}
		if (i + 2 < n) {
			acc |= in[i + 2];
		}
		out[o++] = alphabet[(acc >> 18) & 63];
		out[o++] = alphabet[(acc >> 12) & 63];
		out[o++] = i + 1 < n ? alphabet[(acc >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? alphabet[acc & 63] : '=';
	}
	out[o] = '\0';
	return (long)o;
}
