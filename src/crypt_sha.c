/* crypt_sha.c - Ulrich Drepper's SHA-crypt, as specified in
 * "Unix crypt using SHA-256 and SHA-512" (the text glibc and musl follow). */
#include "crypt_sha.h"

#include <bearssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SALT_MAX       16
#define ROUNDS_DEFAULT 5000
#define ROUNDS_MIN     1000
#define ROUNDS_MAX     999999999UL
#define KEY_MAX        256   /* longer keys are refused: bounded work */

static const char b64[] = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* The byte triples of the final encoding, per digest (the spec's order). */
static const unsigned char order256[10][3] = {
	{ 0, 10, 20 }, { 21, 1, 11 }, { 12, 22, 2 }, { 3, 13, 23 }, { 24, 4, 14 },
	{ 15, 25, 5 }, { 6, 16, 26 }, { 27, 7, 17 }, { 18, 28, 8 }, { 9, 19, 29 },
};
static const unsigned char order512[21][3] = {
	{ 0, 21, 42 }, { 22, 43, 1 }, { 44, 2, 23 }, { 3, 24, 45 }, { 25, 46, 4 },
	{ 47, 5, 26 }, { 6, 27, 48 }, { 28, 49, 7 }, { 50, 8, 29 }, { 9, 30, 51 },
	{ 31, 52, 10 }, { 53, 11, 32 }, { 12, 33, 54 }, { 34, 55, 13 }, { 56, 14, 35 },
	{ 15, 36, 57 }, { 37, 58, 16 }, { 59, 17, 38 }, { 18, 39, 60 }, { 40, 61, 19 },
	{ 62, 20, 41 },
};

struct hasher {
	const br_hash_class *cls;
	br_hash_compat_context ctx;
	size_t len;           /* digest length */
};

static void h_init(struct hasher *h)
{
	h->cls->init(&h->ctx.vtable);
}

static void h_add(struct hasher *h, const void *p, size_t n)
{
	h->cls->update(&h->ctx.vtable, p, n);
}

static void h_out(struct hasher *h, unsigned char *out)
{
	h->cls->out(&h->ctx.vtable, out);
}

/* Adds n bytes of the repeated digest d. */
static void add_repeated(struct hasher *h, const unsigned char *d, size_t n)
{
	for (; n > h->len; n -= h->len) {
		h_add(h, d, h->len);
	}
	h_add(h, d, n);
}

static char *put64(char *p, unsigned w, int n)
{
	while (n-- > 0) {
		*p++ = b64[w & 0x3f];
		w >>= 6;
	}
	return p;
}

/* Reads "rounds=N$" if present; returns the salt start, or NULL if bad. */
static const char *parse_rounds(const char *s, unsigned long *rounds, int *custom)
{
	char *end;

	*rounds = ROUNDS_DEFAULT;
	*custom = 0;
	if (strncmp(s, "rounds=", 7) != 0) {
		return s;
	}
	if (s[7] < '0' || s[7] > '9') {
		return NULL;
	}
	*rounds = strtoul(s + 7, &end, 10);
	if (*end != '$') {
		return NULL;
	}
	if (*rounds < ROUNDS_MIN) {
		*rounds = ROUNDS_MIN;
	}
	if (*rounds > ROUNDS_MAX) {
		*rounds = ROUNDS_MAX;
	}
	*custom = 1;
	return end + 1;
}

int crypt_sha(const char *key, const char *setting, char *out, size_t outlen)
{
	unsigned char a[64], b[64], dp[64], ds[64], p[KEY_MAX], sb[SALT_MAX];
	struct hasher h;
	const char *salt;
	size_t klen = strlen(key), slen, i, n;
	unsigned long rounds, r;
	int custom, id;
	char *o;

	if (strncmp(setting, "$5$", 3) == 0) {
		h.cls = &br_sha256_vtable;
		h.len = 32;
		id = 5;
	} else if (strncmp(setting, "$6$", 3) == 0) {
		h.cls = &br_sha512_vtable;
		h.len = 64;
		id = 6;
	} else {
		return -1;
	}
	if (klen > KEY_MAX) {
		return -1;
	}
	salt = parse_rounds(setting + 3, &rounds, &custom);
	if (salt == NULL) {
		return -1;
	}
	slen = strcspn(salt, "$");
	if (slen > SALT_MAX) {
		slen = SALT_MAX;
	}
	memcpy(sb, salt, slen);

	/* B = H(key salt key) */
	h_init(&h);
	h_add(&h, key, klen);
	h_add(&h, sb, slen);
	h_add(&h, key, klen);
	h_out(&h, b);

	/* A = H(key salt B-repeated-to-klen, then B or key per bit of klen) */
	h_init(&h);
	h_add(&h, key, klen);
	h_add(&h, sb, slen);
	add_repeated(&h, b, klen);
	for (n = klen; n > 0; n >>= 1) {
		if (n & 1) {
			h_add(&h, b, h.len);
		} else {
			h_add(&h, key, klen);
		}
	}
	h_out(&h, a);

	/* P: H(key repeated klen times), repeated to klen bytes */
	h_init(&h);
	for (i = 0; i < klen; i++) {
		h_add(&h, key, klen);
	}
	h_out(&h, dp);
	for (i = 0; i < klen; i++) {
		p[i] = dp[i % h.len];
	}

	/* S: H(salt repeated 16 + A[0] times), repeated to slen bytes */
	h_init(&h);
	for (i = 0; i < 16u + a[0]; i++) {
		h_add(&h, sb, slen);
	}
	h_out(&h, ds);

	for (r = 0; r < rounds; r++) {
		h_init(&h);
		if (r & 1) {
			h_add(&h, p, klen);
		} else {
			h_add(&h, a, h.len);
		}
		if (r % 3 != 0) {
			h_add(&h, ds, slen);
		}
		if (r % 7 != 0) {
			h_add(&h, p, klen);
		}
		if (r & 1) {
			h_add(&h, a, h.len);
		} else {
			h_add(&h, p, klen);
		}
		h_out(&h, a);
	}

	if (outlen < CRYPT_SHA_MAX) {
		return -1;
	}
	if (custom) {
		n = (size_t)snprintf(out, outlen, "$%d$rounds=%lu$%.*s$", id, rounds, (int)slen, salt);
	} else {
		n = (size_t)snprintf(out, outlen, "$%d$%.*s$", id, (int)slen, salt);
	}
	o = out + n;
	if (id == 5) {
		for (i = 0; i < 10; i++) {
			o = put64(o, ((unsigned)a[order256[i][0]] << 16) |
			             ((unsigned)a[order256[i][1]] << 8) | a[order256[i][2]], 4);
		}
		o = put64(o, ((unsigned)a[31] << 8) | a[30], 3);
	} else {
		for (i = 0; i < 21; i++) {
			o = put64(o, ((unsigned)a[order512[i][0]] << 16) |
			             ((unsigned)a[order512[i][1]] << 8) | a[order512[i][2]], 4);
		}
		o = put64(o, a[63], 2);
	}
	*o = '\0';
	/* The key's traces do not outlive the call. */
	memset(p, 0, sizeof p);
	memset(dp, 0, sizeof dp);
	memset(b, 0, sizeof b);
	return 0;
}
