/* fuzz_addr.c - RFC 5321 paths and aliases (src/addr.c): the argument of
 * MAIL FROM and RCPT TO, and the aliases file with its expansion.
 *
 * Input: a selector byte, then the text.
 *   0..3  addr_parse_path (bit 0: null_ok, bit 1: postmaster_ok).  A path
 *         it accepts must be "local@domain" within ADDR_MAX, with no byte
 *         that could break a reply, an envelope line or a path on disk
 *         (outside a quoted local part, which keeps its quotes), and
 *         addr_split must take it apart again.  The local part is
 *         canonical: quoted only when it is no dot-string, and the path
 *         written out parses to itself (what the relay sends is what was
 *         accepted).
 *   4     alias_load of the text as an aliases file, then addr_expand of
 *         every alias name, "postmaster", "root" and "*": no expansion may
 *         give more than ADDR_EXPAND_MAX targets, and every local target
 *         must be a name safe as a directory. */
#include "addr.h"
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEXT_MAX 8192

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct conf conf;

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char line[] = "domains fuzz.test localhost", err[CONF_ERR_MAX];

	(void)argc;
	(void)argv;
	conf_defaults(&conf);
	if (conf_line(&conf, line, err, sizeof err) < 0) {
		fuzz_fail("%s", err);
	}
	return 0;
}

/* A path given back in canonical form parses to the same string. */
static void canonical(const char *out)
{
	char path[ADDR_MAX + 3], again[ADDR_MAX + 1];
	const char *rest = NULL, *at;

	snprintf(path, sizeof path, "<%s>", out);
	if (addr_parse_path(path, again, &rest, 0, 0) != ADDR_OK || strcmp(again, out) != 0 ||
	    rest == NULL || *rest != '\0') {
		fuzz_fail("path '%s' does not parse to itself", out);
	}
	if (out[0] != '"') {
		return;
	}
	/* Without its quotes, a quoted local part must not parse. */
	at = strrchr(out, '@');
	if (at == NULL || at - out < 2 || at[-1] != '"') {
		fuzz_fail("path '%s' has a bad quoted local part", out);
	}
	snprintf(path, sizeof path, "<%.*s%s>", (int)(at - 1 - (out + 1)), out + 1, at);
	if (addr_parse_path(path, again, &rest, 0, 0) == ADDR_OK) {
		fuzz_fail("path '%s' is quoted though it needs no quotes", out);
	}
}

static void path(const char *text, unsigned mode)
{
	char out[ADDR_MAX + 1], local[ADDR_LOCAL_MAX + 1];
	const char *rest = NULL, *domain;
	size_t len, i;
	int quoted;

	memset(out, 0x55, sizeof out);
	if (addr_parse_path(text, out, &rest, mode & 1, mode & 2) != ADDR_OK) {
		return;
	}
	len = strnlen(out, sizeof out);
	if (len == sizeof out) {
		fuzz_fail("the path is not terminated within ADDR_MAX");
	}
	if (rest == NULL || rest < text || rest > text + strlen(text)) {
		fuzz_fail("rest points outside the argument");
	}
	if (len == 0) {
		if (!(mode & 1)) {
			fuzz_fail("<> accepted without null_ok");
		}
		return;
	}
	if (strcmp(out, "postmaster") == 0) {
		return;
	}
	quoted = out[0] == '"';
	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)out[i];

		if (ch < ' ' || ch >= 0x7f || (!quoted && (ch == ' ' || ch == '<' || ch == '>'))) {
			fuzz_fail("path '%s' holds byte 0x%02x", out, ch);
		}
	}
	domain = addr_split(out, local);
	if (domain == NULL || domain[0] == '\0' || strchr(domain, '/') != NULL ||
	    strstr(domain, "..") != NULL || domain[strlen(domain) - 1] == '.') {
		fuzz_fail("path '%s' has no sound domain", out);
	}
	/* '/' is atext (RFC 5322 3.2.3): a local part only becomes a path
	 * after the user and alias name checks, which refuse it. */
	if (local[0] == '\0' || (!quoted && (local[0] == '.' || strstr(local, "..") != NULL))) {
		fuzz_fail("path '%s' has a bad local part", out);
	}
	canonical(out);
}

static int is_user(const char *name)
{
	return strcmp(name, "alice") == 0 || strcmp(name, "bob") == 0 ||
	       strcmp(name, "postmaster") == 0;
}

static void expand(const struct alias_table *t, const char *name)
{
	static struct addr_expansion x;
	unsigned i;
	int n = addr_expand(t, name, is_user, "alice", &conf, &x);

	if (n > ADDR_EXPAND_MAX || (n >= 0 && (unsigned)n != x.n)) {
		fuzz_fail("expansion of '%s' gave %d (n %u)", name, n, x.n);
	}
	for (i = 0; n > 0 && i < x.n; i++) {
		const char *tg = x.target[i];

		if (strnlen(tg, sizeof x.target[i]) == sizeof x.target[i] || tg[0] == '\0') {
			fuzz_fail("target %u of '%s' is empty or not terminated", i, name);
		}
		if (!x.remote[i] && (tg[0] == '.' || strchr(tg, '/') != NULL || strchr(tg, '@') != NULL)) {
			fuzz_fail("local target '%s' of '%s' is not a safe name", tg, name);
		}
		if (!x.remote[i] && !is_user(tg)) {
			fuzz_fail("local target '%s' of '%s' is no user", tg, name);
		}
	}
}

static void aliases(const uint8_t *text, size_t n)
{
	static struct alias_table t;
	char p[64], err[CONF_ERR_MAX];
	unsigned i;

	fuzz_memfile(text, n, p, sizeof p);
	if (alias_load(&t, p, err, sizeof err) < 0) {
		if (t.n != 0 || err[0] == '\0') {
			fuzz_fail("a refused aliases file left %u aliases, or no message", t.n);
		}
		return;
	}
	if (t.n > ALIAS_MAX || t.used > ALIAS_ARENA) {
		fuzz_fail("%u aliases in %zu bytes", t.n, t.used);
	}
	for (i = 0; i < t.n; i++) {
		expand(&t, t.e[i].name);
	}
	expand(&t, "postmaster");
	expand(&t, "root");
	expand(&t, "*");
	expand(&t, "nobody");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char text[TEXT_MAX + 1];

	if (size < 1 || size - 1 > TEXT_MAX) {
		return 0;
	}
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	if (data[0] % 5 < 4) {
		path(text, data[0] % 5);
	} else {
		aliases(data + 1, size - 1);
	}
	return 0;
}
