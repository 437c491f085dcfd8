/* test_addr.c - known answers for addr.c: RFC 5321 paths, addr_split, the
 * aliases file and alias expansion. */
#include "check.h"
#include "../../src/addr.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- paths */

#define PATH_NULL 1   /* null_ok */
#define PATH_PM   2   /* postmaster_ok */

static const struct {
	const char *in;
	int flags;
	enum addr_err err;
	const char *out;    /* when ADDR_OK */
	const char *rest;   /* when ADDR_OK */
} paths[] = {
	{ "<user@example.com>", 0, ADDR_OK, "user@example.com", "" },
	{ "<User.Name@Example.COM> SIZE=100", 0, ADDR_OK, "User.Name@example.com", " SIZE=100" },
	{ "   <a@b>", 0, ADDR_OK, "a@b", "" },
	{ "<a+tag@b.c>", 0, ADDR_OK, "a+tag@b.c", "" },
	{ "<a!#$&'*+-/=?^_`{|}~@b>", 0, ADDR_ROUTE, NULL, NULL },
	{ "<a#$&'*+-/=?^_`{|}~@b>", 0, ADDR_OK, "a#$&'*+-/=?^_`{|}~@b", "" },
	{ "<x@a-b.c-d.e>", 0, ADDR_OK, "x@a-b.c-d.e", "" },
	{ "<x@123.example>", 0, ADDR_OK, "x@123.example", "" },
	{ "<x@localhost>", 0, ADDR_OK, "x@localhost", "" },
	{ "<a@b>>", 0, ADDR_OK, "a@b", ">" },

	/* The null path. */
	{ "<>", PATH_NULL, ADDR_OK, "", "" },
	{ "<> SIZE=10 BODY=8BITMIME", PATH_NULL, ADDR_OK, "", " SIZE=10 BODY=8BITMIME" },
	{ "<>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "< >", PATH_NULL, ADDR_SYNTAX, NULL, NULL },

	/* Quoted local parts in canonical form (RFC 5321 4.1.2): no quotes
	 * where none are needed, else a backslash only before '"' and '\'. */
	{ "<\"john.doe\"@x.org>", 0, ADDR_OK, "john.doe@x.org", "" },
	{ "<\"bob\"@lan>", 0, ADDR_OK, "bob@lan", "" },
	{ "<\"Bob\"@LAN> SIZE=1", 0, ADDR_OK, "Bob@lan", " SIZE=1" },
	{ "<\"b\\ob\"@lan>", 0, ADDR_OK, "bob@lan", "" },
	{ "<\"\\b\\o\\b\"@lan>", 0, ADDR_OK, "bob@lan", "" },
	{ "<\"a+tag\"@x>", 0, ADDR_OK, "a+tag@x", "" },
	{ "<\"a#$&'*+-/=?^_`{|}~\"@x>", 0, ADDR_OK, "a#$&'*+-/=?^_`{|}~@x", "" },
	{ "<\"a\\\"b\"@x>", 0, ADDR_OK, "\"a\\\"b\"@x", "" },
	{ "<\"a\\\\b\"@x>", 0, ADDR_OK, "\"a\\\\b\"@x", "" },
	{ "<\"a@b\"@x.org>", 0, ADDR_ROUTE, NULL, NULL },
	{ "<\"a%b\"@x.org>", 0, ADDR_ROUTE, NULL, NULL },
	{ "<\"a!b\"@x.org>", 0, ADDR_ROUTE, NULL, NULL },
	{ "<\"john doe\"@x>", 0, ADDR_OK, "\"john doe\"@x", "" },
	{ "<\"a\\ b\"@x>", 0, ADDR_OK, "\"a b\"@x", "" },
	{ "<\"\"@x>", 0, ADDR_OK, "\"\"@x", "" },
	{ "<\".bob\"@x>", 0, ADDR_OK, "\".bob\"@x", "" },
	{ "<\"bob.\"@x>", 0, ADDR_OK, "\"bob.\"@x", "" },
	{ "<\"b..ob\"@x>", 0, ADDR_OK, "\"b..ob\"@x", "" },
	{ "<\".\"@x>", 0, ADDR_OK, "\".\"@x", "" },
	{ "<\"a(b)\"@x>", 0, ADDR_OK, "\"a(b)\"@x", "" },
	{ "<\"a,b;c:d[e]<f>\"@x>", 0, ADDR_OK, "\"a,b;c:d[e]<f>\"@x", "" },
	{ "<\"a\x01" "b\"@x>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<\"a\\\x01" "b\"@x>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<\"caf\xc3\xa9\"@x>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<\"a\tb\"@x>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<\"abc@x>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<\"abc\\", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<\"a\"b@x>", 0, ADDR_SYNTAX, NULL, NULL },

	/* Source routes, % hacks, bang paths. */
	{ "<@a,@b:user@c>", 0, ADDR_ROUTE, NULL, NULL },
	{ "<@a:user@c>", 0, ADDR_ROUTE, NULL, NULL },
	{ "<@a>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<@>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<@a,b:u@c>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<@a.:u@c>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<a%b@c>", 0, ADDR_ROUTE, NULL, NULL },
	{ "<a%b@c>", 0, ADDR_ROUTE, NULL, NULL },
	{ "<a!b@c>", 0, ADDR_ROUTE, NULL, NULL },
	{ "<host!user@c>", 0, ADDR_ROUTE, NULL, NULL },

	/* Address literals. */
	{ "<u@[1.2.3.4]>", 0, ADDR_OK, "u@[1.2.3.4]", "" },
	{ "<u@[IPv6:2001:DB8::1]>", 0, ADDR_OK, "u@[ipv6:2001:db8::1]", "" },
	{ "<u@[ipv6:::1]>", 0, ADDR_OK, "u@[ipv6:::1]", "" },
	{ "<u@[1.2.3]>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<u@[2001:db8::1]>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<u@[IPv6:1.2.3.4]>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<u@[foo:bar]>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<u@[1.2.3.4>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<u@[]>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<u@[1.2.3.4].x>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<u@[1.2.3.4 ]>", 0, ADDR_SYNTAX, NULL, NULL },

	/* Bad domains; a trailing dot is refused, not removed. */
	{ "<user@host.>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<user@host.example.>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<user@.host>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<user@a..b>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<user@-a.b>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<user@a-.b>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<user@a_b.c>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<user@>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<user@a@b>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<user@x y>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<user@ex\xc3\xa9.com>", 0, ADDR_SYNTAX, NULL, NULL },

	/* Bad local parts and framing. */
	{ "", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<", 0, ADDR_SYNTAX, NULL, NULL },
	{ "user@example.com", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<user@example.com", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<user@example.com SIZE=1", 0, ADDR_SYNTAX, NULL, NULL },
	{ "\t<a@b>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<us er@x>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "< user@x>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<user\x01@x>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<user\x7f@x>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<us\xc3\xa9r@x>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<.user@x>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<user.@x>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<us..er@x>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<@x>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<user(comment)@x>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<user>", 0, ADDR_SYNTAX, NULL, NULL },

	/* RCPT TO:<Postmaster>, RFC 5321 4.1.1.3. */
	{ "<Postmaster>", PATH_PM, ADDR_OK, "postmaster", "" },
	{ "<POSTMASTER> NOTIFY=NEVER", PATH_PM, ADDR_OK, "postmaster", " NOTIFY=NEVER" },
	{ "<Postmaster>", 0, ADDR_SYNTAX, NULL, NULL },
	{ "<postmaster >", PATH_PM, ADDR_SYNTAX, NULL, NULL },
	{ "<postmasters>", PATH_PM, ADDR_SYNTAX, NULL, NULL },
	{ "<\"postmaster\">", PATH_PM, ADDR_SYNTAX, NULL, NULL },
	{ "<root>", PATH_PM, ADDR_SYNTAX, NULL, NULL },
	{ "<Postmaster@LAN>", PATH_PM, ADDR_OK, "Postmaster@lan", "" },
};

static void test_paths(void)
{
	char out[ADDR_MAX + 1];
	const char *rest;
	unsigned i;
	enum addr_err e;

	for (i = 0; i < sizeof paths / sizeof paths[0]; i++) {
		check_row = paths[i].in;
		rest = NULL;
		memcpy(out, "untouched", 10);
		e = addr_parse_path(paths[i].in, out, &rest, paths[i].flags & PATH_NULL,
		                    (paths[i].flags & PATH_PM) != 0);
		CHECK_INT(e, paths[i].err);
		if (paths[i].err == ADDR_OK && e == ADDR_OK) {
			CHECK_STR(out, paths[i].out);
			CHECK_STR(rest, paths[i].rest);
		}
	}
	check_row = NULL;
	/* rest may be NULL. */
	CHECK_INT(addr_parse_path("<a@b>", out, NULL, 0, 0), ADDR_OK);
	CHECK_INT(addr_parse_path(NULL, out, NULL, 0, 0), ADDR_SYNTAX);
}

/* Builds "<" local "@" domain ">" with the given lengths: the domain is
 * labels of up to 63 'd's separated by dots. */
static void make_path(char *buf, size_t local, size_t domain, size_t label)
{
	size_t i, k = 0, n = 0;

	buf[k++] = '<';
	for (i = 0; i < local; i++) {
		buf[k++] = 'l';
	}
	buf[k++] = '@';
	for (i = 0; i < domain; i++) {
		if (n == label && i + 1 < domain) {
			buf[k++] = '.';
			n = 0;
			continue;
		}
		buf[k++] = 'd';
		n++;
	}
	buf[k++] = '>';
	buf[k] = '\0';
}

static const struct {
	size_t local, domain, label;
	enum addr_err err;
} lengths[] = {
	{ 64, 10, 63, ADDR_OK },
	{ 65, 10, 63, ADDR_TOO_LONG },
	{ 1, 63, 63, ADDR_OK },
	{ 1, 64, 64, ADDR_TOO_LONG },        /* one label of 64 */
	{ 1, 251, 63, ADDR_OK },             /* "<l@" + 251 + ">" = 255 */
	{ 1, 252, 63, ADDR_OK },             /* 256: the most RFC 5321 allows */
	{ 1, 253, 63, ADDR_TOO_LONG },       /* 257 */
	{ 64, 189, 63, ADDR_OK },            /* 64 + 189 + 3 = 256 */
	{ 64, 190, 63, ADDR_TOO_LONG },      /* 257 */
	{ 1, 300, 63, ADDR_TOO_LONG },       /* domain over 255 */
	{ 10000, 10, 63, ADDR_TOO_LONG },
	{ 1, 10000, 63, ADDR_TOO_LONG },
};

static void test_lengths(void)
{
	static char in[20100];
	char out[ADDR_MAX + 1];
	const char *rest;
	unsigned i;
	enum addr_err e;

	for (i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
		make_path(in, lengths[i].local, lengths[i].domain, lengths[i].label);
		check_row = in;
		e = addr_parse_path(in, out, &rest, 0, 0);
		CHECK_INT(e, lengths[i].err);
		if (e == ADDR_OK) {
			CHECK_INT(strlen(out), lengths[i].local + 1 + lengths[i].domain);
			CHECK_STR(rest, "");
		}
	}
	check_row = NULL;
}

/* The local part's limit of 64 octets applies to its canonical form:
 * "l...l" (66 octets as written) is the 64-octet l...l; a local part that
 * needs its quotes counts them.  And the canonical form parses to itself. */
static void test_quoted_lengths(void)
{
	static const struct {
		size_t n;
		char fill;
		enum addr_err err;
	} rows[] = {
		{ 64, 'l', ADDR_OK },
		{ 65, 'l', ADDR_TOO_LONG },
		{ 62, ' ', ADDR_OK },
		{ 63, ' ', ADDR_TOO_LONG },
	};
	char in[200], out[ADDR_MAX + 1], again[ADDR_MAX + 1], path[ADDR_MAX + 3];
	const char *rest;
	unsigned i;

	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		in[0] = '<';
		in[1] = '"';
		memset(in + 2, rows[i].fill, rows[i].n);
		memcpy(in + 2 + rows[i].n, "\"@x>", 5);
		check_row = in;
		CHECK_INT(addr_parse_path(in, out, &rest, 0, 0), rows[i].err);
		if (rows[i].err != ADDR_OK) {
			continue;
		}
		CHECK_INT(strlen(out), rows[i].n + 2 + (rows[i].fill == ' ' ? 2 : 0));
		snprintf(path, sizeof path, "<%s>", out);
		CHECK_INT(addr_parse_path(path, again, &rest, 0, 0), ADDR_OK);
		CHECK_STR(again, out);
	}
	check_row = NULL;
}

static void test_split(void)
{
	char local[ADDR_LOCAL_MAX + 1];
	char in[ADDR_LOCAL_MAX + 10];
	const char *d;

	d = addr_split("user@lan", local);
	CHECK_STR(d, "lan");
	CHECK_STR(local, "user");
	d = addr_split("\"a@b\"@x.org", local);
	CHECK_STR(d, "x.org");
	CHECK_STR(local, "\"a@b\"");
	d = addr_split("@lan", local);
	CHECK_STR(d, "lan");
	CHECK_STR(local, "");
	CHECK(addr_split("nouser", local) == NULL);
	CHECK(addr_split("", local) == NULL);
	CHECK(addr_split(NULL, local) == NULL);
	memset(in, 'a', ADDR_LOCAL_MAX);
	memcpy(in + ADDR_LOCAL_MAX, "@x", 3);
	CHECK_STR(addr_split(in, local), "x");
	CHECK_INT(strlen(local), ADDR_LOCAL_MAX);
	memset(in, 'a', ADDR_LOCAL_MAX + 1);
	memcpy(in + ADDR_LOCAL_MAX + 1, "@x", 3);
	CHECK(addr_split(in, local) == NULL);
}

/* -------------------------------------------------------- aliases lines */

static const struct {
	const char *line;
	const char *err;       /* NULL: accepted */
	const char *name;      /* the entry added, if any */
	const char *targets;
} alines[] = {
	{ "root: admin", NULL, "root", "admin" },
	{ "Postmaster:  Root ,  bob@Example.COM", NULL, "postmaster", "root,bob@example.com" },
	{ "staff: a, b # the team", NULL, "staff", "a,b" },
	{ "hash: a#b@x.org", NULL, "hash", "a#b@x.org" },
	{ "  indented : x\r\n", NULL, "indented", "x" },
	{ "MAILER-DAEMON: postmaster", NULL, "mailer-daemon", "postmaster" },
	{ "lit: u@[10.0.0.1]", NULL, "lit", "u@[10.0.0.1]" },
	{ "plus+tag: a_b.c-d", NULL, "plus+tag", "a_b.c-d" },
	{ "", NULL, NULL, NULL },
	{ "   ", NULL, NULL, NULL },
	{ "# comment: x", NULL, NULL, NULL },
	{ "   # comment", NULL, NULL, NULL },
	{ "x: |/usr/bin/prog", "alias 'x': program target '|/usr/bin/prog' is not supported", NULL, NULL },
	{ "x: a, |prog", "alias 'x': program target '|prog' is not supported", NULL, NULL },
	{ "x: /var/log/mail", "alias 'x': file target '/var/log/mail' is not supported", NULL, NULL },
	{ "x: :include:/etc/list", "alias 'x': include target ':include:/etc/list' is not supported",
	  NULL, NULL },
	{ "x: :INCLUDE:/etc/list", "alias 'x': include target ':INCLUDE:/etc/list' is not supported",
	  NULL, NULL },
	{ "x: \"|cmd arg\"", "alias 'x': quoted target \"|cmd arg\" is not supported", NULL, NULL },
	{ "x:", "alias 'x': no target", NULL, NULL },
	{ "x:   # nothing", "alias 'x': no target", NULL, NULL },
	{ "x: a,,b", "alias 'x': empty target", NULL, NULL },
	{ "x: a,", "alias 'x': empty target", NULL, NULL },
	{ "x a", "missing ':' after the alias name", NULL, NULL },
	{ ": a", "missing alias name", NULL, NULL },
	{ "../x: a", "bad alias name '../x'", NULL, NULL },
	{ ".x: a", "bad alias name '.x'", NULL, NULL },
	{ "a/b: c", "bad alias name 'a/b'", NULL, NULL },
	{ "a b: c", "bad alias name 'a b'", NULL, NULL },
	{ "x: ../etc", "alias 'x': bad target '../etc'", NULL, NULL },
	{ "x: a..b", "alias 'x': bad target 'a..b'", NULL, NULL },
	{ "x: .hidden", "alias 'x': bad target '.hidden'", NULL, NULL },
	{ "x: a b", "alias 'x': bad target 'a b'", NULL, NULL },
	{ "x: \\root", "alias 'x': bad target '\\root'", NULL, NULL },
	{ "x: @a:b@c", "alias 'x': target '@a:b@c' is a source route", NULL, NULL },
	{ "x: a%b@c", "alias 'x': target 'a%b@c' is a source route", NULL, NULL },
	{ "x: a!b@c", "alias 'x': target 'a!b@c' is a source route", NULL, NULL },
	{ "x: a@host.", "alias 'x': bad target 'a@host.'", NULL, NULL },
	{ "x: a@", "alias 'x': bad target 'a@'", NULL, NULL },
	{ "x: a\x01", "alias 'x': bad target 'a\x01'", NULL, NULL },
};

static void test_alias_lines(void)
{
	static struct alias_table t;
	char err[256];
	unsigned i;
	int rc;

	for (i = 0; i < sizeof alines / sizeof alines[0]; i++) {
		check_row = alines[i].line;
		memset(&t, 0, sizeof t);
		err[0] = '\0';
		rc = alias_line(&t, alines[i].line, err, sizeof err);
		if (alines[i].err != NULL) {
			CHECK_INT(rc, -1);
			CHECK_STR(err, alines[i].err);
			CHECK_INT(t.n, 0);
			CHECK_INT(t.used, 0);
			continue;
		}
		if (!CHECK_INT(rc, 0)) {
			printf("\terr: %s\n", err);
			continue;
		}
		if (alines[i].name == NULL) {
			CHECK_INT(t.n, 0);
			continue;
		}
		if (CHECK_INT(t.n, 1)) {
			CHECK_STR(t.e[0].name, alines[i].name);
			CHECK_STR(t.e[0].targets, alines[i].targets);
		}
	}
	check_row = NULL;
}

static void test_alias_limits(void)
{
	static struct alias_table t;
	static char line[ALIAS_ARENA];
	char err[256];
	unsigned i;
	size_t used = 0;
	int rc = 0;

	memset(&t, 0, sizeof t);
	CHECK_INT(alias_line(&t, "root: a", err, sizeof err), 0);
	CHECK_INT(alias_line(&t, "ROOT: b", err, sizeof err), -1);
	CHECK_STR(err, "duplicate alias 'root'");
	CHECK_INT(t.n, 1);

	/* ALIAS_MAX entries, then an error. */
	memset(&t, 0, sizeof t);
	for (i = 0; i < ALIAS_MAX && rc == 0; i++) {
		(void)snprintf(line, sizeof line, "a%u: t%u", i, i);
		rc = alias_line(&t, line, err, sizeof err);
	}
	CHECK_INT(rc, 0);
	CHECK_INT(t.n, ALIAS_MAX);
	CHECK_INT(alias_line(&t, "one-more: x", err, sizeof err), -1);
	CHECK_STR(err, "too many aliases (max 128)");

	/* The arena: long target lists until it is full; the line that does
	 * not fit leaves the table as it was. */
	memset(&t, 0, sizeof t);
	for (i = 0; i < 100; i++) {
		size_t k = (size_t)snprintf(line, sizeof line, "big%u: ", i);

		while (k < 2000) {
			memcpy(line + k, "abcdefghijklmnopqrstuvwxyz@example.org, ", 40);
			k += 40;
		}
		memcpy(line + k, "z", 2);
		used = t.used;
		rc = alias_line(&t, line, err, sizeof err);
		if (rc < 0) {
			break;
		}
	}
	CHECK_INT(rc, -1);
	CHECK_STR(err, "aliases file too large (max 16384 bytes)");
	CHECK_INT(t.used, used);
	CHECK(t.used <= ALIAS_ARENA);
	CHECK_INT(t.n, i);
	CHECK_INT(alias_line(&t, "small: x", err, sizeof err), 0);

	/* A long target is refused, not cut. */
	memset(&t, 0, sizeof t);
	memcpy(line, "x: ", 3);
	memset(line + 3, 'a', 300);
	line[303] = '\0';
	CHECK_INT(alias_line(&t, line, err, sizeof err), -1);
	CHECK_STR(err, "alias 'x': target too long");
	memset(line + 3, 'a', 65);
	memcpy(line + 68, "@x", 3);
	CHECK_INT(alias_line(&t, line, err, sizeof err), -1);
	CHECK_STR(err, "alias 'x': target too long");
	memset(line + 3, 'a', 65);
	line[68] = '\0';
	CHECK_INT(alias_line(&t, line, err, sizeof err), -1);
	CHECK_STR(err, "alias 'x': bad target "
	               "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'");
	memset(line, 'n', 65);
	memcpy(line + 65, ": x", 4);
	CHECK_INT(alias_line(&t, line, err, sizeof err), -1);
	CHECK_STR(err, "alias name too long (max 64)");
}

/* --------------------------------------------------------- aliases file */

static void write_str(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	size_t len = strlen(text);

	if (!CHECK(fd >= 0)) {
		return;
	}
	CHECK(write(fd, text, len) == (ssize_t)len);
	CHECK(close(fd) == 0);
}

static const struct {
	const char *text;
	const char *err;   /* NULL: loads */
	unsigned n;
} afiles[] = {
	{ "# aliases\n\nroot: admin\npostmaster: root\n", NULL, 2 },
	{ "staff: alice,\n  bob,\n\tcarol\nroot: alice\n", NULL, 2 },
	{ "staff: alice,\n# a comment inside\n\n  bob\n", NULL, 1 },
	{ "root: admin\r\nabuse: root\r\n", NULL, 2 },
	{ "root: admin", NULL, 1 },
	{ "", NULL, 0 },
	{ "root: a\nx: |prog\n", "a:2: alias 'x': program target '|prog' is not supported", 0 },
	{ "root: a\nx: b,\n  /dev/null\n", "a:2: alias 'x': file target '/dev/null' is not supported",
	  0 },
	{ "  bob\nroot: a\n", "a:1: continuation line without an alias", 0 },
	{ "root: a\nroot: b\n", "a:2: duplicate alias 'root'", 0 },
	{ "root a\n", "a:1: missing ':' after the alias name", 0 },
};

static void test_alias_files(void)
{
	static struct alias_table t;
	char err[256];
	unsigned i;
	int fd;

	for (i = 0; i < sizeof afiles / sizeof afiles[0]; i++) {
		check_row = afiles[i].text;
		write_str("a", afiles[i].text);
		err[0] = '\0';
		if (afiles[i].err == NULL) {
			if (!CHECK_INT(alias_load(&t, "a", err, sizeof err), 0)) {
				printf("\terr: %s\n", err);
			}
			CHECK_INT(t.n, afiles[i].n);
		} else {
			CHECK_INT(alias_load(&t, "a", err, sizeof err), -1);
			CHECK_STR(err, afiles[i].err);
			CHECK_INT(t.n, 0);
		}
	}
	check_row = NULL;

	/* Continuation lines join into one alias. */
	write_str("a", "staff: alice,\n  bob, carol@Example.org\n\tdave\nroot: alice\n");
	CHECK_INT(alias_load(&t, "a", err, sizeof err), -1);
	CHECK_STR(err, "a:1: alias 'staff': bad target 'carol@Example.org\tdave'");
	write_str("a", "staff: alice,\n  bob, carol@Example.org,\n\tdave\nroot: alice\n");
	CHECK_INT(alias_load(&t, "a", err, sizeof err), 0);
	CHECK_INT(t.n, 2);
	CHECK_STR(t.e[0].targets, "alice,bob,carol@example.org,dave");
	CHECK_STR(t.e[1].name, "root");

	/* A NUL byte in the file (strlen stops there, so write it by hand). */
	fd = open("a", O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0);
	CHECK(write(fd, "root: a\0b\n", 10) == 10);
	CHECK(close(fd) == 0);
	CHECK_INT(alias_load(&t, "a", err, sizeof err), -1);
	CHECK_STR(err, "a:1: NUL byte in line");

	/* A missing file is an empty table; a directory is an error. */
	CHECK_INT(alias_load(&t, "no-such-file", err, sizeof err), 0);
	CHECK_INT(t.n, 0);
	CHECK_INT(alias_load(&t, ".", err, sizeof err), -1);
	CHECK_STR(err, ".: Is a directory");
	CHECK_INT(alias_load(&t, "/dev/zero", err, sizeof err), -1);
	CHECK_STR(err, "/dev/zero:1: NUL byte in line");
}

static void test_alias_file_limits(void)
{
	static struct alias_table t;
	static char text[8192];
	char err[256];
	size_t k;

	/* A physical line of 1024 octets loads; 1025 does not. */
	k = (size_t)snprintf(text, sizeof text, "root: a\nx: b");
	memset(text + k, ' ', 1020);
	k += 1020;
	text[k++] = '\n';
	text[k] = '\0';
	CHECK_INT(k, 8 + 1024 + 1);
	write_str("a", text);
	CHECK_INT(alias_load(&t, "a", err, sizeof err), 0);
	text[k - 1] = ' ';
	text[k++] = '\n';
	text[k] = '\0';
	write_str("a", text);
	CHECK_INT(alias_load(&t, "a", err, sizeof err), -1);
	CHECK_STR(err, "a:2: line too long (max 1024)");

	/* Continuation lines past ALIAS_LINE_MAX octets in all. */
	k = (size_t)snprintf(text, sizeof text, "root: a\nx: b");
	while (k < 5000) {
		k += (size_t)snprintf(text + k, sizeof text - k, ",\n  %s", "abcdefghijklmnopqrstuvwxyz");
	}
	text[k++] = '\n';
	text[k] = '\0';
	write_str("a", text);
	CHECK_INT(alias_load(&t, "a", err, sizeof err), -1);
	CHECK_STR(err, "a:2: alias too long (max 4096 bytes)");
}

/* ------------------------------------------------------------ expansion */

static const char *const *users;   /* the users the test pretends exist */

static int is_user(const char *name)
{
	unsigned i;

	for (i = 0; users != NULL && users[i] != NULL; i++) {
		if (strcmp(users[i], name) == 0) {
			return 1;
		}
	}
	return 0;
}

static void load_aliases(struct alias_table *t, const char *const *lines)
{
	char err[256];
	unsigned i;

	memset(t, 0, sizeof *t);
	for (i = 0; lines[i] != NULL; i++) {
		if (!CHECK_INT(alias_line(t, lines[i], err, sizeof err), 0)) {
			printf("\t%s: %s\n", lines[i], err);
		}
	}
}

/* The targets of an expansion as one string "a,b,c@x" (remote ones marked
 * with a leading '>'), or "-1" / "0". */
static const char *expand(const struct alias_table *t, const char *local, const char *first,
                          const struct conf *c)
{
	static char buf[ADDR_EXPAND_MAX * (ADDR_MAX + 2) + 1];
	static struct addr_expansion x;
	size_t k = 0;
	unsigned i;
	int n;

	n = addr_expand(t, local, is_user, first, c, &x);
	if (n <= 0) {
		(void)snprintf(buf, sizeof buf, "%d", n);
		return buf;
	}
	if (!CHECK_INT(n, x.n)) {
		return "count mismatch";
	}
	buf[0] = '\0';
	for (i = 0; i < x.n; i++) {
		k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%s%s", i > 0 ? "," : "",
		                      x.remote[i] ? ">" : "", x.target[i]);
	}
	return buf;
}

static const char *const users1[] = { "alice", "bob", "carol", "dave", NULL };

static const char *const aliases1[] = {
	"admin: alice, bob",
	"staff: admin, carol, alice, Alice@LAN",
	"ext: someone@Example.COM, alice@lan, bob@LocalHost, eve@elsewhere.lan",
	"loop1: loop2",
	"loop2: loop3",
	"loop3: loop1",
	"selfloop: selfloop",
	"dave: dave, carol",
	"ghost: nobody",
	"mixed: nobody, carol",
	"d0: d1", "d1: d2", "d2: d3", "d3: d4", "d4: d5", "d5: d6", "d6: d7", "d7: alice",
	"e0: e1", "e1: e2", "e2: e3", "e3: e4", "e4: e5", "e5: e6", "e6: e7", "e7: e8", "e8: bob",
	"many: a0@x, a1@x, a2@x, a3@x, a4@x, a5@x, a6@x, a7@x, a8@x, a9@x, b0@x, b1@x, b2@x, "
	"b3@x, b4@x, b5@x, b6@x, b7@x, b8@x, b9@x, c0@x, c1@x, c2@x, c3@x, c4@x, c5@x, c6@x, "
	"c7@x, c8@x, c9@x, d0@x, d1@x",
	"toomany: many, alice",
	"dup: many, a0@X",
	"diamond: admin, staff, admin",
	NULL
};

static const struct {
	const char *local;
	const char *want;
} expansions1[] = {
	{ "alice", "alice" },
	{ "ALICE", "alice" },
	{ "unknown", "0" },
	{ "admin", "alice,bob" },
	{ "Admin", "alice,bob" },
	{ "staff", "alice,bob,carol" },
	{ "ext", ">someone@example.com,alice,bob,>eve@elsewhere.lan" },
	{ "loop1", "-1" },
	{ "loop2", "-1" },
	{ "selfloop", "0" },        /* refers to itself and is no user */
	{ "dave", "dave,carol" },   /* "name: name, ..." keeps the user */
	{ "ghost", "0" },
	{ "mixed", "carol" },
	{ "d0", "alice" },          /* 8 nested aliases */
	{ "e0", "-1" },             /* 9 */
	{ "toomany", "-1" },
	{ "diamond", "alice,bob,carol" },
	{ "../etc", "0" },
	{ ".alice", "0" },
	{ "a/b", "0" },
	{ "", "0" },
	{ "\"alice\"", "0" },
	/* Nobody here is "postmaster" or "root", no alias: the first user. */
	{ "postmaster", "alice" },
	{ "PostMaster", "alice" },
	{ "root", "0" },
};

static void test_expand(void)
{
	static struct alias_table t;
	static struct conf c;
	static struct addr_expansion x;
	char line[] = "domains lan localhost";
	char err[CONF_ERR_MAX];
	const char *got;
	unsigned i;

	conf_defaults(&c);
	CHECK_INT(conf_line(&c, line, err, sizeof err), 0);
	load_aliases(&t, aliases1);
	users = users1;
	for (i = 0; i < sizeof expansions1 / sizeof expansions1[0]; i++) {
		check_row = expansions1[i].local;
		CHECK_STR(expand(&t, expansions1[i].local, "alice", &c), expansions1[i].want);
	}
	check_row = NULL;

	/* 32 targets fit exactly, and duplicates do not count. */
	CHECK_INT(addr_expand(&t, "many", is_user, "alice", &c, &x), 32);
	CHECK_INT(x.remote[0], 1);
	CHECK_STR(x.target[31], "d1@x");
	got = expand(&t, "dup", "alice", &c);
	CHECK(strncmp(got, ">a0@x,", 6) == 0);
	CHECK_INT(addr_expand(&t, "dup", is_user, "alice", &c, &x), 32);

	/* Without a configuration every address is remote. */
	CHECK_STR(expand(&t, "ext", "alice", NULL),
	          ">someone@example.com,>alice@lan,>bob@localhost,>eve@elsewhere.lan");
	/* Without aliases, only users. */
	CHECK_STR(expand(NULL, "bob", "alice", &c), "bob");
	CHECK_STR(expand(NULL, "admin", "alice", &c), "0");
	CHECK_INT(addr_expand(&t, NULL, is_user, "alice", &c, &x), 0);
	CHECK_INT(addr_expand(&t, "alice", NULL, "alice", &c, &x), 0);
}

/* The postmaster rule: its alias, else the user, else root's expansion,
 * else the first user. */
static void test_postmaster(void)
{
	static struct alias_table t;
	static struct conf c;
	static const char *const with_pm[] = { "alice", "postmaster", "root", NULL };
	static const char *const with_root[] = { "alice", "root", NULL };
	static const char *const just_alice[] = { "alice", NULL };
	static const char *const nobody[] = { NULL };
	static const char *const a_pm[] = { "postmaster: bob, carol", "root: dave", NULL };
	static const char *const a_root[] = { "root: carol, dave@lan", NULL };
	static const char *const a_dead[] = { "postmaster: ghost", "root: carol", NULL };
	static const char *const a_loop[] = { "root: postmaster", NULL };
	static const char *const a_chain[] = { "abuse: postmaster", "root: carol", NULL };
	static const char *const none[] = { NULL };
	static const char *const users_all[] = { "alice", "bob", "carol", "dave", NULL };
	char line[] = "domains lan";
	char err[CONF_ERR_MAX];

	conf_defaults(&c);
	CHECK_INT(conf_line(&c, line, err, sizeof err), 0);

	users = users_all;
	load_aliases(&t, a_pm);
	CHECK_STR(expand(&t, "postmaster", "alice", &c), "bob,carol");
	load_aliases(&t, a_root);
	CHECK_STR(expand(&t, "postmaster", "alice", &c), "carol,dave");
	load_aliases(&t, a_dead);
	CHECK_STR(expand(&t, "postmaster", "alice", &c), "carol");
	load_aliases(&t, a_chain);
	CHECK_STR(expand(&t, "abuse", "alice", &c), "carol");
	load_aliases(&t, a_loop);
	CHECK_STR(expand(&t, "postmaster", "alice", &c), "-1");

	load_aliases(&t, none);
	users = with_pm;
	CHECK_STR(expand(&t, "postmaster", "alice", &c), "postmaster");
	users = with_root;
	CHECK_STR(expand(&t, "postmaster", "alice", &c), "root");
	users = just_alice;
	CHECK_STR(expand(&t, "postmaster", "alice", &c), "alice");
	CHECK_STR(expand(&t, "postmaster", "Alice", &c), "alice");
	CHECK_STR(expand(&t, "postmaster", "../x", &c), "0");
	users = nobody;
	CHECK_STR(expand(&t, "postmaster", NULL, &c), "0");
	CHECK_STR(expand(&t, "postmaster", "", &c), "0");
	users = NULL;
}

/* HELO/EHLO names: a domain or an address literal. */
static void test_helo(void)
{
	static const char *const good[] = {
		"mail.example.org", "localhost", "MAIL.Example.ORG", "host_1.lan", "a-b.c",
		"1.2.3.4", "[192.0.2.1]", "[IPv6:2001:db8::1]", "[ipv6:::1]",
		"[IPv6:::ffff:192.0.2.1]", "x",
	};
	static const char *const bad[] = {
		"", "-a.b", "a-.b", "a..b", ".a", "a.", "a b", "bad!name", "a/b", "../x",
		"[192.0.2.256]", "[192.0.2.1", "192.0.2.1]", "[]", "[IPv6:]", "[IPv6:zz::1]",
		"[2001:db8::1]", "[IPv6:192.0.2.1]", "$(reboot)", "a;b", "\xe9.org",
	};
	char longlabel[80], longname[300];
	size_t i;

	for (i = 0; i < sizeof good / sizeof good[0]; i++) {
		check_row = good[i];
		CHECK_INT(addr_helo_ok(good[i]), 1);
	}
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		check_row = bad[i];
		CHECK_INT(addr_helo_ok(bad[i]), 0);
	}
	check_row = "label lengths";
	memset(longlabel, 'a', 63);
	longlabel[63] = '\0';
	CHECK_INT(addr_helo_ok(longlabel), 1);
	longlabel[63] = 'a';
	longlabel[64] = '\0';
	CHECK_INT(addr_helo_ok(longlabel), 0);
	/* 4 labels of 63 and a dot each: 255 octets, over 253. */
	for (i = 0; i < 4; i++) {
		memset(longname + i * 64, 'b', 63);
		longname[i * 64 + 63] = '.';
	}
	longname[251] = '\0';   /* 251 octets: fits */
	CHECK_INT(addr_helo_ok(longname), 1);
	longname[251] = 'c';
	longname[252] = 'c';
	longname[253] = 'c';
	longname[254] = '\0';   /* 254 octets */
	CHECK_INT(addr_helo_ok(longname), 0);
	check_row = NULL;
}

int main(void)
{
	char dir[] = "/tmp/picomail-test-addr-XXXXXX";

	if (mkdtemp(dir) == NULL || chdir(dir) < 0) {
		perror("test_addr: temporary directory");
		return 2;
	}
	test_paths();
	test_lengths();
	test_quoted_lengths();
	test_split();
	test_alias_lines();
	test_alias_limits();
	test_alias_files();
	test_alias_file_limits();
	test_expand();
	test_postmaster();
	test_helo();
	(void)unlink("a");
	if (chdir("/") < 0 || rmdir(dir) < 0) {
		perror("test_addr: cleanup");
	}
	return check_done("test_addr");
}
