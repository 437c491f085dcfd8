/* auth.h - the users file and password checks.
 *
 * The users file has "user:crypt-hash[:quota]" a line (the quota, a size
 * like "50M", overrides the configuration's; "0" is none; empty or absent
 * means the configuration's); '#' starts a comment.  It is loaded at
 * start-up, on SIGHUP and when the daemon sees the file change, into a
 * fixed table.
 */
#ifndef PICOMAIL_AUTH_H
#define PICOMAIL_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include "addr.h"

#define USERS_MAX  64
#define HASH_MAX   128

struct users_table {
	unsigned n;
	struct {
		char name[ADDR_USER_MAX + 1];
		char hash[HASH_MAX + 1];
		int has_quota;       /* 1: quota below overrides the configuration's */
		uint64_t quota;      /* octets, 0: none */
	} u[USERS_MAX];
};

/* Loads the users file.  A missing file is an empty table.  Returns 0 or
 * -1 with "path:line: message" in err.  A name must be [a-z0-9._-], not
 * starting with '.', so that it is safe as a directory name. */
int users_load(struct users_table *t, const char *path, char *err, size_t errlen);

/* Index of the user, or -1.  Case-insensitive, as local parts usually are
 * on a small box. */
int users_find(const struct users_table *t, const char *name);

/* The quota of user i in octets (0: none): its own, else global. */
uint64_t users_quota(const struct users_table *t, int i, uint64_t global);

/* 1 if name is a safe user name (see users_load). */
int users_name_ok(const char *name);

/* 1 if password matches the user's crypt(3) hash. */
int users_check(const struct users_table *t, const char *name, const char *password);

/* SASL PLAIN (RFC 4616): decodes the base64 response and splits it into
 * the authentication identity and the password (an authorization identity,
 * if given, must equal it).  0, or -1 for a malformed response. */
int auth_plain_decode(const char *b64, char *user, size_t userlen, char *pass, size_t passlen);

/* Failed-login throttling per client address (shared by POP3 and SMTP
 * AUTH).  auth_throttle_failed counts a failure and returns how long, in
 * milliseconds, to wait before answering it: 200 ms doubling per
 * consecutive failure, up to 10 s.  A success forgets the address. */
unsigned auth_throttle_failed(const struct sockaddr_storage *peer, int64_t now);
void auth_throttle_success(const struct sockaddr_storage *peer);

/* One login attempt from peer, for SMTP AUTH and POP3 alike: the user's
 * index in t when the password matches (the address's failures
 * forgotten), else -1 with *delay the milliseconds to wait before
 * answering (the failure counted). */
int auth_login(const struct users_table *t, const struct sockaddr_storage *peer,
               const char *name, const char *password, int64_t now, unsigned *delay);

#endif
