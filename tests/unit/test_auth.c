/* test_auth.c - known answers for auth.c: user names, the users file and
 * its "file:line: message" errors, password checks against hashes that the
 * system's crypt(3) makes here. */
#include "check.h"
#include "../../src/auth.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define AUTH_LONG 256   /* the longest password auth.c hashes */

static const struct {
	const char *name;
	int ok;
} names[] = {
	{ "alice", 1 },
	{ "a.b_c-d", 1 },
	{ "9", 1 },
	{ "mail2", 1 },
	{ "-x", 1 },        /* safe as a directory name; the header's rule */
	{ "a..b", 1 },      /* likewise: only a leading '.' is refused */
	{ "abcdefghijklmnopqrstuvwxyz012345", 1 },    /* 32 */
	{ "abcdefghijklmnopqrstuvwxyz0123456", 0 },   /* 33 */
	{ ".x", 0 },
	{ "..", 0 },
	{ ".", 0 },
	{ "", 0 },
	{ "Alice", 0 },
	{ "a/b", 0 },
	{ "a b", 0 },
	{ "a@b", 0 },
	{ "a:b", 0 },
	{ "a+b", 0 },
	{ "\xc3\xa9", 0 },
	{ "a\n", 0 },
};

static void test_names(void)
{
	unsigned i;

	for (i = 0; i < sizeof names / sizeof names[0]; i++) {
		check_row = names[i].name;
		CHECK_INT(users_name_ok(names[i].name), names[i].ok);
	}
	check_row = NULL;
	CHECK_INT(users_name_ok(NULL), 0);
}

static void write_data(const char *path, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	if (!CHECK(fd >= 0)) {
		return;
	}
	CHECK(write(fd, data, len) == (ssize_t)len);
	CHECK(close(fd) == 0);
}

static void write_str(const char *path, const char *text)
{
	write_data(path, text, strlen(text));
}

/* crypt(3) of password with setting, copied (crypt's buffer is static). */
static void make_hash(char *out, size_t size, const char *password, const char *setting)
{
	const char *h = crypt(password, setting);

	if (!CHECK(h != NULL && h[0] == '$' && strlen(h) < size)) {
		out[0] = '\0';
		return;
	}
	memcpy(out, h, strlen(h) + 1);
}

static void test_check(void)
{
	static struct users_table t;
	static char text[2048], longpw[300];
	char h6[HASH_MAX + 1], h5[HASH_MAX + 1], hlock[HASH_MAX + 1], err[256];

	make_hash(h6, sizeof h6, "secret", "$6$saltsaltsalt$");
	make_hash(h5, sizeof h5, "hunter2", "$5$abcdefgh$");
	make_hash(hlock, sizeof hlock, "locked", "$6$anothersalt$");
	CHECK(strncmp(h6, "$6$saltsaltsalt$", 16) == 0);
	CHECK(strncmp(h5, "$5$abcdefgh$", 12) == 0);
	(void)snprintf(text, sizeof text,
	               "# users\n"
	               "\n"
	               "alice:%s\n"
	               "bob:%s:100M\n"
	               "carol:\n"
	               "dave:*\n"
	               "eve:!%s\n"
	               "  frank:%s   # same password as alice\r\n"
	               "gina:%s:\n",
	               h6, h5, hlock, h6, h5);
	write_str("u", text);
	if (!CHECK_INT(users_load(&t, "u", err, sizeof err), 0)) {
		printf("\terr: %s\n", err);
		return;
	}
	CHECK_INT(t.n, 7);
	CHECK_INT(users_find(&t, "alice"), 0);
	CHECK_INT(users_find(&t, "ALICE"), 0);
	CHECK_INT(users_find(&t, "bob"), 1);
	CHECK_INT(users_find(&t, "frank"), 5);
	CHECK_INT(users_find(&t, "gina"), 6);
	CHECK_INT(users_find(&t, "zoe"), -1);
	CHECK_INT(users_find(&t, ""), -1);
	CHECK_INT(users_find(&t, NULL), -1);
	CHECK_INT(users_find(NULL, "alice"), -1);
	CHECK_STR(t.u[0].hash, h6);
	CHECK_STR(t.u[2].hash, "");
	CHECK_STR(t.u[5].hash, h6);

	CHECK_INT(users_check(&t, "alice", "secret"), 1);
	CHECK_INT(users_check(&t, "Alice", "secret"), 1);
	CHECK_INT(users_check(&t, "alice", "Secret"), 0);
	CHECK_INT(users_check(&t, "alice", "secret "), 0);
	CHECK_INT(users_check(&t, "alice", ""), 0);
	CHECK_INT(users_check(&t, "alice", NULL), 0);
	CHECK_INT(users_check(&t, "bob", "hunter2"), 1);
	CHECK_INT(users_check(&t, "bob", "secret"), 0);
	CHECK_INT(users_check(&t, "frank", "secret"), 1);
	CHECK_INT(users_check(&t, "gina", "hunter2"), 1);
	/* Empty, "*" and "!..." hashes never match, whatever the password. */
	CHECK_INT(users_check(&t, "carol", ""), 0);
	CHECK_INT(users_check(&t, "carol", "x"), 0);
	CHECK_INT(users_check(&t, "dave", "*"), 0);
	CHECK_INT(users_check(&t, "dave", ""), 0);
	CHECK_INT(users_check(&t, "eve", "locked"), 0);
	CHECK_INT(users_check(&t, "zoe", "secret"), 0);
	CHECK_INT(users_check(&t, NULL, "secret"), 0);
	CHECK_INT(users_check(NULL, "alice", "secret"), 0);
	/* Very long passwords are refused before crypt(3). */
	memset(longpw, 'p', sizeof longpw - 1);
	CHECK_INT(users_check(&t, "alice", longpw), 0);
}

/* The system's crypt(3) and our SHA-crypt must agree: hashes made by the
 * one are checked by users_check, across salts, rounds and key lengths
 * (around the digest sizes, where the algorithm changes its steps). */
static const struct {
	const char *password;
	const char *setting;
} agree[] = {
	{ "secret", "$6$saltsaltsalt$" },
	{ "secret", "$5$saltsaltsalt$" },
	{ "", "$6$emptypw$" },
	{ "a", "$5$x$" },
	{ "caf\xc3\xa9 \xe2\x82\xac", "$6$utf8$" },
	{ "0123456789abcdef0123456789abcdef", "$5$len32$" },
	{ "0123456789abcdef0123456789abcdef!", "$5$len33$" },
	{ "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "$6$len64$" },
	{ "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef!", "$6$len65$" },
	{ "secret", "$6$rounds=1000$roundsalt$" },
	{ "secret", "$5$rounds=1234$roundsalt$" },
	{ "secret", "$6$rounds=5000$explicit$" },
	{ "secret", "$6$0123456789abcdefXYZ$" },   /* salt cut at 16 */
	{ "secret", "$6$./AZaz09$" },
};

static void test_agree(void)
{
	static struct users_table t;
	static char text[512], longpw[AUTH_LONG + 2];
	char h[HASH_MAX + 1], err[256];
	unsigned i;

	for (i = 0; i < sizeof agree / sizeof agree[0]; i++) {
		check_row = agree[i].setting;
		make_hash(h, sizeof h, agree[i].password, agree[i].setting);
		(void)snprintf(text, sizeof text, "u:%s\n", h);
		write_str("u", text);
		if (!CHECK_INT(users_load(&t, "u", err, sizeof err), 0)) {
			continue;
		}
		CHECK_INT(users_check(&t, "u", agree[i].password), 1);
		CHECK_INT(users_check(&t, "u", "wrong"), 0);
	}
	check_row = NULL;

	/* 256 octets is the longest password that can match. */
	memset(longpw, 'p', AUTH_LONG);
	longpw[AUTH_LONG] = '\0';
	make_hash(h, sizeof h, longpw, "$6$long$");
	(void)snprintf(text, sizeof text, "u:%s\n", h);
	write_str("u", text);
	CHECK_INT(users_load(&t, "u", err, sizeof err), 0);
	CHECK_INT(users_check(&t, "u", longpw), 1);
	longpw[AUTH_LONG] = 'p';
	longpw[AUTH_LONG + 1] = '\0';
	CHECK_INT(users_check(&t, "u", longpw), 0);
}

/* A user whose hash crypt(3) cannot use never matches. */
static void test_bad_hash(void)
{
	static struct users_table t;
	char err[256];

	write_str("u", "odd:$9$nonsense$abc\nshort:ab\n"
	               "yes:$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7\n"
	               "md5:$1$saltsalt$qjXMvbEw8oaL.CzflDugX/\n"
	               "bad:$6$rounds=x$salt$abc\n");
	CHECK_INT(users_load(&t, "u", err, sizeof err), 0);
	CHECK_INT(users_check(&t, "odd", "abc"), 0);
	CHECK_INT(users_check(&t, "odd", "$9$nonsense$abc"), 0);
	CHECK_INT(users_check(&t, "short", "ab"), 0);
	/* Schemes other than $5$ and $6$ are not supported: never a match. */
	CHECK_INT(users_check(&t, "yes", "password"), 0);
	CHECK_INT(users_check(&t, "md5", "password"), 0);
	CHECK_INT(users_check(&t, "bad", "abc"), 0);
}

static const struct {
	const char *text;
	const char *err;
} bad_files[] = {
	{ "alice:x\nalice:y\n", "u:2: duplicate user 'alice'" },
	{ "alice:x\n\n# c\nbob:y\nALICE:z\n", "u:5: bad user name 'ALICE' (a-z 0-9 . _ -)" },
	{ "Alice:x\n", "u:1: bad user name 'Alice' (a-z 0-9 . _ -)" },
	{ ".x:y\n", "u:1: bad user name '.x' (a-z 0-9 . _ -)" },
	{ "a/b:y\n", "u:1: bad user name 'a/b' (a-z 0-9 . _ -)" },
	{ "a b:y\n", "u:1: bad user name 'a b' (a-z 0-9 . _ -)" },
	{ "alice\n", "u:1: missing ':' after the user name" },
	{ ":hash\n", "u:1: missing user name" },
	{ "a:b:c:d\n", "u:1: too many fields (user:hash[:quota])" },
	{ "a:b:10Q\n", "u:1: user 'a': bad quota '10Q'" },
	{ "a:has space\n", "u:1: user 'a': bad hash" },
	{ "a:\x01\n", "u:1: user 'a': bad hash" },
	{ "abcdefghijklmnopqrstuvwxyz0123456:x\n", "u:1: user name too long (max 32)" },
	{ "ok:x\nb:" "0123456789012345678901234567890123456789012345678901234567890123456789"
	  "012345678901234567890123456789012345678901234567890123456789\n",
	  "u:2: user 'b': hash too long (max 128)" },
};

static void test_bad_files(void)
{
	static struct users_table t;
	static char text[USERS_MAX * 16 + 1024];
	char err[256];
	unsigned i;
	size_t k = 0;

	for (i = 0; i < sizeof bad_files / sizeof bad_files[0]; i++) {
		check_row = bad_files[i].text;
		write_str("u", bad_files[i].text);
		err[0] = '\0';
		CHECK_INT(users_load(&t, "u", err, sizeof err), -1);
		CHECK_STR(err, bad_files[i].err);
		CHECK_INT(t.n, 0);   /* never half a table */
	}
	check_row = NULL;

	/* A hash of exactly HASH_MAX octets fits. */
	k = (size_t)snprintf(text, sizeof text, "a:");
	memset(text + k, 'h', HASH_MAX);
	text[k + HASH_MAX] = '\0';
	write_str("u", text);
	CHECK_INT(users_load(&t, "u", err, sizeof err), 0);
	CHECK_INT(strlen(t.u[0].hash), HASH_MAX);

	/* USERS_MAX users load; one more is an error on its line. */
	k = 0;
	for (i = 0; i < USERS_MAX; i++) {
		k += (size_t)snprintf(text + k, sizeof text - k, "u%u:x\n", i);
	}
	write_str("u", text);
	CHECK_INT(users_load(&t, "u", err, sizeof err), 0);
	CHECK_INT(t.n, USERS_MAX);
	(void)snprintf(text + k, sizeof text - k, "last:x\n");
	write_str("u", text);
	CHECK_INT(users_load(&t, "u", err, sizeof err), -1);
	CHECK_STR(err, "u:65: too many users (max 64)");

	/* Line limits and NUL bytes. */
	memset(text, ' ', 600);
	memcpy(text, "a:x", 3);
	memcpy(text + 600, "\n", 2);
	write_str("u", text);
	CHECK_INT(users_load(&t, "u", err, sizeof err), -1);
	CHECK_STR(err, "u:1: line too long (max 512)");
	write_data("u", "a:x\nb:y\0z\n", 10);
	CHECK_INT(users_load(&t, "u", err, sizeof err), -1);
	CHECK_STR(err, "u:2: NUL byte in line");

	/* No final LF is fine; a missing file is an empty table. */
	write_str("u", "a:x");
	CHECK_INT(users_load(&t, "u", err, sizeof err), 0);
	CHECK_INT(t.n, 1);
	CHECK_INT(users_load(&t, "no-such-file", err, sizeof err), 0);
	CHECK_INT(t.n, 0);
	CHECK_INT(users_load(&t, ".", err, sizeof err), -1);
	CHECK_STR(err, ".: Is a directory");
	CHECK_INT(users_load(&t, "/dev/zero", err, sizeof err), -1);
	CHECK_STR(err, "/dev/zero:1: NUL byte in line");
}

/* The third field: a user's own quota, "0" for none, empty or absent for
 * the configuration's. */
static void test_quota_field(void)
{
	static struct users_table t;
	char err[256];

	write_str("u", "a:h\nb:h:50M\nc:h:0\nd:h:\ne:h:8K # comment\n");
	if (!CHECK_INT(users_load(&t, "u", err, sizeof err), 0)) {
		return;
	}
	CHECK_INT((int)(users_quota(&t, users_find(&t, "a"), 1000) == 1000), 1);
	CHECK_INT((int)(users_quota(&t, users_find(&t, "b"), 1000) == 50ull * 1024 * 1024), 1);
	CHECK_INT((int)(users_quota(&t, users_find(&t, "c"), 1000) == 0), 1);
	CHECK_INT((int)(users_quota(&t, users_find(&t, "d"), 1000) == 1000), 1);
	CHECK_INT((int)(users_quota(&t, users_find(&t, "e"), 0) == 8192), 1);
	CHECK_INT((int)(users_quota(&t, users_find(&t, "nobody"), 7) == 7), 1);
}

int main(void)
{
	char dir[] = "/tmp/picomail-test-auth-XXXXXX";

	if (mkdtemp(dir) == NULL || chdir(dir) < 0) {
		perror("test_auth: temporary directory");
		return 2;
	}
	test_names();
	test_check();
	test_agree();
	test_bad_hash();
	test_bad_files();
	test_quota_field();
	(void)unlink("u");
	if (chdir("/") < 0 || rmdir(dir) < 0) {
		perror("test_auth: cleanup");
	}
	return check_done("test_auth");
}
