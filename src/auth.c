/* auth.c - the users file and password checks.
 *
 * The file is read through textfile's fixed buffers into a fixed table;
 * a bad line refuses the whole file (with "path:line: message"), so a typo
 * can never leave a half-loaded table that lets the wrong person in.
 *
 * Passwords are checked with crypt_sha (SHA-crypt, $5$ and $6$, on
 * BearSSL's hashes) rather than libc's crypt(3): Debian's musl has no
 * crypt at all, and the static binary must not depend on one that does.
 * Those are the hashes "picomail passwd" and Linux's crypt(3) write; any
 * other scheme ($y$, $2b$, $1$, DES) never matches.
 */
#include "auth.h"

#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "base64.h"
#include "conf.h"
#include "crypt_sha.h"
#include "textfile.h"

#define USERS_LINE_MAX   512
#define USERS_MSG_MAX    256   /* a line's message, before "path:line: " */
/* Longer passwords are refused before hashing, as crypt_sha and musl's
 * SHA-crypt do: the cost grows with the length. */
#define AUTH_PASSWORD_MAX 256

static int users_fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int users_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL && errlen > 0) {
		va_start(ap, fmt);
		(void)vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

int users_name_ok(const char *name)
{
	const char *p;

	if (name == NULL || name[0] == '\0' || name[0] == '.' || strlen(name) > ADDR_USER_MAX) {
		return 0;
	}
	for (p = name; *p != '\0'; p++) {
		if (!(*p >= 'a' && *p <= 'z') && !(*p >= '0' && *p <= '9') &&
		    *p != '.' && *p != '_' && *p != '-') {
			return 0;
		}
	}
	return 1;
}

uint64_t users_quota(const struct users_table *t, int i, uint64_t global)
{
	if (t == NULL || i < 0 || (unsigned)i >= t->n) {
		return global;
	}
	return t->u[i].has_quota ? t->u[i].quota : global;
}

int users_find(const struct users_table *t, const char *name)
{
	unsigned i;

	if (t == NULL || name == NULL) {
		return -1;
	}
	for (i = 0; i < t->n && i < USERS_MAX; i++) {
		if (strcasecmp(t->u[i].name, name) == 0) {
			return (int)i;
		}
	}
	return -1;
}

/* A crypt(3) hash is printable ASCII without spaces or ':' (the field
 * separator); the empty hash is allowed and locks the account. */
static int users_hash_ok(const char *s)
{
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f || *s == ':') {
			return 0;
		}
	}
	return 1;
}

static int users_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r';
}

/* One line, "user:hash[:quota]", modified in place.  Returns 0 or -1 with
 * the message (without path:line) in err. */
static int users_line(struct users_table *t, char *line, char *err, size_t errlen)
{
	char *p, *name, *hash, *quota = NULL, *end;
	uint64_t q = 0;

	/* '#' never occurs in a crypt hash, so it can start a comment anywhere. */
	p = strchr(line, '#');
	if (p != NULL) {
		*p = '\0';
	}
	while (users_space(*line)) {
		line++;
	}
	end = line + strlen(line);
	while (end > line && users_space(end[-1])) {
		*--end = '\0';
	}
	if (*line == '\0') {
		return 0;
	}
	name = line;
	hash = strchr(line, ':');
	if (hash == NULL) {
		return users_fail(err, errlen, "missing ':' after the user name");
	}
	*hash++ = '\0';
	p = strchr(hash, ':');
	if (p != NULL) {
		*p = '\0';
		quota = p + 1;
		if (strchr(quota, ':') != NULL) {
			return users_fail(err, errlen, "too many fields (user:hash[:quota])");
		}
	}
	if (name[0] == '\0') {
		return users_fail(err, errlen, "missing user name");
	}
	if (strlen(name) > ADDR_USER_MAX) {
		return users_fail(err, errlen, "user name too long (max %d)", ADDR_USER_MAX);
	}
	if (!users_name_ok(name)) {
		return users_fail(err, errlen, "bad user name '%s' (a-z 0-9 . _ -)", name);
	}
	if (strlen(hash) > HASH_MAX) {
		return users_fail(err, errlen, "user '%s': hash too long (max %d)", name, HASH_MAX);
	}
	if (!users_hash_ok(hash)) {
		return users_fail(err, errlen, "user '%s': bad hash", name);
	}
	if (quota != NULL && quota[0] != '\0' && conf_parse_size(quota, &q) < 0) {
		return users_fail(err, errlen, "user '%s': bad quota '%s'", name, quota);
	}
	if (users_find(t, name) >= 0) {
		return users_fail(err, errlen, "duplicate user '%s'", name);
	}
	if (t->n >= USERS_MAX) {
		return users_fail(err, errlen, "too many users (max %d)", USERS_MAX);
	}
	memcpy(t->u[t->n].name, name, strlen(name) + 1);
	memcpy(t->u[t->n].hash, hash, strlen(hash) + 1);
	t->u[t->n].has_quota = quota != NULL && quota[0] != '\0';
	t->u[t->n].quota = q;
	t->n++;
	return 0;
}

/* One line of the file for textfile_read; the file's end needs nothing
 * more. */
static int users_file_line(void *ctx, char *line, unsigned *lineno, char *msg, size_t msglen)
{
	(void)lineno;
	if (line == NULL) {
		return 0;
	}
	return users_line(ctx, line, msg, msglen);
}

/* A missing users file is an empty table. */
static const struct textfile_opts users_file = { USERS_LINE_MAX, USERS_MSG_MAX, 1 };
_Static_assert(USERS_LINE_MAX <= TEXTFILE_LINE_MAX && USERS_MSG_MAX <= TEXTFILE_MSG_MAX,
               "users_file fits textfile's buffers");

int users_load(struct users_table *t, const char *path, char *err, size_t errlen)
{
	/* Only the count: entries past it are never read, and a table
	 * nobody fills stays out of the RSS. */
	t->n = 0;
	if (textfile_read(path, &users_file, users_file_line, t, err, errlen) < 0) {
		t->n = 0;   /* no half table */
		return -1;
	}
	return 0;
}

/* Compares two strings in time that depends only on their lengths, which
 * are public (fixed by the hash method). */
static int auth_equal(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), i;
	unsigned char diff = 0;

	if (la != lb) {
		return 0;
	}
	for (i = 0; i < la; i++) {
		diff |= (unsigned char)(a[i] ^ b[i]);
	}
	return diff == 0;
}

int users_check(const struct users_table *t, const char *name, const char *password)
{
	/* Unknown and locked users still pay for one hash, so that the time
	 * taken does not tell which names exist. */
	static const char dummy[] = "$6$picomail.dummy$";
	char got[CRYPT_SHA_MAX];
	const char *hash = dummy;
	int i, usable = 0;

	if (password == NULL || strlen(password) > AUTH_PASSWORD_MAX) {
		return 0;
	}
	i = users_find(t, name);
	if (i >= 0) {
		hash = t->u[i].hash;
		usable = hash[0] != '\0' && hash[0] != '*' && hash[0] != '!';
		if (!usable) {
			hash = dummy;
		}
	}
	if (crypt_sha(password, hash, got, sizeof got) < 0) {
		return 0;
	}
	return usable && auth_equal(got, hash);
}

int auth_plain_decode(const char *b64, char *user, size_t userlen, char *pass, size_t passlen)
{
	unsigned char buf[3 * 256 / 4 + 4];
	const unsigned char *authz, *authc, *pw, *end;
	size_t len = strlen(b64), n;
	long got;

	if (len > 256 || userlen == 0 || passlen == 0) {
		return -1;
	}
	got = base64_decode(b64, len, buf, sizeof buf);
	if (got < 0) {
		return -1;
	}
	/* authzid NUL authcid NUL passwd (RFC 4616 2) */
	end = buf + got;
	authz = buf;
	authc = memchr(authz, '\0', (size_t)(end - authz));
	if (authc == NULL) {
		return -1;
	}
	authc++;
	pw = memchr(authc, '\0', (size_t)(end - authc));
	if (pw == NULL) {
		return -1;
	}
	pw++;
	if (memchr(pw, '\0', (size_t)(end - pw)) != NULL) {
		return -1;
	}
	n = (size_t)(pw - 1 - authc);
	if (n == 0 || n >= userlen || (size_t)(end - pw) >= passlen) {
		return -1;
	}
	if (authc - 1 > authz && ((size_t)(authc - 1 - authz) != n || memcmp(authz, authc, n) != 0)) {
		return -1;   /* acting as someone else is not offered */
	}
	memcpy(user, authc, n);
	user[n] = '\0';
	memcpy(pass, pw, (size_t)(end - pw));
	pass[end - pw] = '\0';
	memset(buf, 0, sizeof buf);
	return 0;
}

#define THROTTLE_SLOTS   64
#define THROTTLE_BASE_MS 200
#define THROTTLE_MAX_MS  10000
#define THROTTLE_FORGET  (10 * 60 * 1000)   /* ms without a failure */

static struct {
	unsigned char addr[16];
	int family;
	unsigned failures;
	int64_t last;
} throttle[THROTTLE_SLOTS];

/* The address bytes of a peer (IPv4 in the first 4). */
static int peer_key(const struct sockaddr_storage *peer, unsigned char key[16])
{
	memset(key, 0, 16);
	if (peer->ss_family == AF_INET) {
		memcpy(key, &((const struct sockaddr_in *)peer)->sin_addr, 4);
		return AF_INET;
	}
	if (peer->ss_family == AF_INET6) {
		memcpy(key, &((const struct sockaddr_in6 *)peer)->sin6_addr, 16);
		return AF_INET6;
	}
	return 0;
}

static int throttle_find(const unsigned char key[16], int family)
{
	unsigned i;

	for (i = 0; i < THROTTLE_SLOTS; i++) {
		if (throttle[i].failures > 0 && throttle[i].family == family &&
		    memcmp(throttle[i].addr, key, 16) == 0) {
			return (int)i;
		}
	}
	return -1;
}

unsigned auth_throttle_failed(const struct sockaddr_storage *peer, int64_t now)
{
	unsigned char key[16];
	int family = peer_key(peer, key), i = throttle_find(key, family);
	unsigned j, n;

	if (i >= 0 && now - throttle[i].last > THROTTLE_FORGET) {
		throttle[i].failures = 0;
	}
	if (i < 0 || throttle[i].failures == 0) {
		/* A free slot, else the one idle longest. */
		for (i = 0, j = 0; j < THROTTLE_SLOTS; j++) {
			if (throttle[j].failures == 0) {
				i = (int)j;
				break;
			}
			if (throttle[j].last < throttle[i].last) {
				i = (int)j;
			}
		}
		memcpy(throttle[i].addr, key, 16);
		throttle[i].family = family;
		throttle[i].failures = 0;
	}
	n = ++throttle[i].failures;
	throttle[i].last = now;
	if (n > 16) {
		return THROTTLE_MAX_MS;
	}
	n = THROTTLE_BASE_MS << (n - 1);
	return n > THROTTLE_MAX_MS ? THROTTLE_MAX_MS : n;
}

void auth_throttle_success(const struct sockaddr_storage *peer)
{
	unsigned char key[16];
	int family = peer_key(peer, key), i = throttle_find(key, family);

	if (i >= 0) {
		throttle[i].failures = 0;
	}
}

int auth_login(const struct users_table *t, const struct sockaddr_storage *peer,
               const char *name, const char *password, int64_t now, unsigned *delay)
{
	if (!users_check(t, name, password)) {
		*delay = auth_throttle_failed(peer, now);
		return -1;
	}
	auth_throttle_success(peer);
	return users_find(t, name);
}
