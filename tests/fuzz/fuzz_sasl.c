/* fuzz_sasl.c - SASL and base64 (src/base64.c, src/auth.c): what a client
 * sends after AUTH, and the users file.
 *
 * Input: a selector byte, then the text.
 *   0  base64_decode into buffers of every size around the decoded length;
 *      a decoded input must encode back to itself (strict base64 has one
 *      spelling per value), and no buffer may be overrun.
 *   1  base64_encode of the bytes, which must decode back to them.
 *   2  auth_plain_decode with buffers of several sizes: the names and
 *      password it gives must fit, be terminated and hold no NUL.
 *   3  users_load of the text as a users file, then lookups and
 *      password checks against what it loaded. */
#include "auth.h"
#include "base64.h"
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#define TEXT_MAX 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void decode(const char *in, size_t len)
{
	unsigned char *out;
	char *again;
	long n, full = base64_decode(in, len, NULL, 0), m;
	size_t room;

	/* Room 0 never writes, so NULL is a fair buffer: only a length 0
	 * input decodes into it. */
	if (full > 0) {
		fuzz_fail("decoded %ld bytes into no room", full);
	}
	out = malloc(len + 1);
	n = base64_decode(in, len, out, len);
	if (n > (long)len) {
		fuzz_fail("decoded %ld bytes from %zu", n, len);
	}
	if (n >= 0) {
		/* Exactly n bytes of room must do, and n - 1 must not. */
		for (room = n > 0 ? (size_t)n - 1 : 0; room <= (size_t)n; room++) {
			unsigned char *tight = malloc(room ? room : 1);

			m = base64_decode(in, len, tight, room);
			if ((room < (size_t)n && m >= 0) || (room == (size_t)n && m != n)) {
				fuzz_fail("decode into %zu bytes gave %ld (needs %ld)", room, m, n);
			}
			free(tight);
		}
		again = malloc(4 * ((size_t)n + 2) / 3 + 2);
		if (base64_encode(out, (size_t)n, again, 4 * ((size_t)n + 2) / 3 + 2) != (long)len ||
		    memcmp(again, in, len) != 0) {
			fuzz_fail("base64 '%.*s' does not encode back to itself", (int)len, in);
		}
		free(again);
	}
	free(out);
}

static void encode(const uint8_t *in, size_t n)
{
	size_t need = 4 * ((n + 2) / 3) + 1;
	char *text = malloc(need);
	unsigned char *back = malloc(n + 1);
	long len;

	if (base64_encode(in, n, text, need - 1) != -1) {
		fuzz_fail("encode with one byte too few did not fail");
	}
	len = base64_encode(in, n, text, need);
	if (len != (long)need - 1 || text[len] != '\0') {
		fuzz_fail("encoded %zu bytes to %ld characters", n, len);
	}
	if (base64_decode(text, (size_t)len, back, n) != (long)n || memcmp(back, in, n) != 0) {
		fuzz_fail("encoding of %zu bytes does not decode back", n);
	}
	free(text);
	free(back);
}

static void check_field(const char *what, const char *s, size_t room)
{
	if (strnlen(s, room) == room) {
		fuzz_fail("%s not terminated within its %zu bytes", what, room);
	}
}

static void plain(const char *b64)
{
	static const size_t userlens[] = { 1, 2, 8, ADDR_USER_MAX + 1, 300 };
	static const size_t passlens[] = { 1, 3, 64, 257, 300 };
	unsigned i;

	for (i = 0; i < sizeof userlens / sizeof userlens[0]; i++) {
		/* Heap buffers of the exact size: ASan sees any overrun. */
		char *user = malloc(userlens[i]), *pass = malloc(passlens[i]);

		if (auth_plain_decode(b64, user, userlens[i], pass, passlens[i]) == 0) {
			check_field("the user", user, userlens[i]);
			check_field("the password", pass, passlens[i]);
			if (user[0] == '\0') {
				fuzz_fail("PLAIN gave an empty user name");
			}
		}
		free(user);
		free(pass);
	}
}

static void users(const uint8_t *text, size_t n)
{
	static struct users_table t;
	char path[64], err[CONF_ERR_MAX];
	unsigned i;

	fuzz_memfile(text, n, path, sizeof path);
	if (users_load(&t, path, err, sizeof err) < 0) {
		if (t.n != 0 || err[0] == '\0') {
			fuzz_fail("a refused users file left %u users, or no message", t.n);
		}
		return;
	}
	if (t.n > USERS_MAX) {
		fuzz_fail("%u users", t.n);
	}
	for (i = 0; i < t.n; i++) {
		check_field("a user name", t.u[i].name, sizeof t.u[i].name);
		check_field("a hash", t.u[i].hash, sizeof t.u[i].hash);
		if (!users_name_ok(t.u[i].name) || users_find(&t, t.u[i].name) != (int)i) {
			fuzz_fail("user %u '%s' is not a good, unique name", i, t.u[i].name);
		}
		(void)users_quota(&t, (int)i, 1000);
		/* The real SHA-crypt parses the hash's setting, but only the
		 * cheapest (1000 rounds) is tried: the default 5000, or a file
		 * asking for a billion, would stall the run. */
		if ((strncmp(t.u[i].hash, "$5$rounds=1000$", 15) == 0 ||
		     strncmp(t.u[i].hash, "$6$rounds=1000$", 15) == 0) && i < 2) {
			(void)users_check(&t, t.u[i].name, "password");
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char text[TEXT_MAX + 1];

	if (size < 1 || size - 1 > TEXT_MAX) {
		return 0;
	}
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	switch (data[0] % 4) {
	case 0:
		decode(text, size - 1);
		break;
	case 1:
		encode(data + 1, size - 1);
		break;
	case 2:
		plain(text);
		break;
	default:
		users(data + 1, size - 1);
		break;
	}
	return 0;
}
