/* addr.h - RFC 5321 paths, the local/remote decision, aliases.
 *
 * Paths are parsed from the bytes of a MAIL/RCPT argument into a plain
 * "local@domain" string.  Aliases come from an /etc/aliases style file
 * ("name: target, target") loaded at start-up and on SIGHUP into a fixed
 * table; expansion never allocates.
 */
#ifndef PICOMAIL_ADDR_H
#define PICOMAIL_ADDR_H

#include <stddef.h>
#include "conf.h"

#define ADDR_MAX        256    /* RFC 5321 4.5.3.1.3: a path is at most 256 octets */
#define ADDR_LOCAL_MAX  64     /* RFC 5321 4.5.3.1.1 */
#define ADDR_USER_MAX   32     /* a local user name, as on Linux */
#define ALIAS_MAX       128    /* entries in the aliases file */
#define ALIAS_ARENA     16384  /* bytes for all names and targets */
#define ALIAS_DEPTH     8      /* nested aliases followed before giving up */
#define ADDR_EXPAND_MAX 32     /* final targets of one recipient */

enum addr_err {
	ADDR_OK = 0,
	ADDR_SYNTAX,      /* not a path: 501 5.1.3 (MAIL: 5.1.7) */
	ADDR_TOO_LONG,    /* 501 5.1.3 */
	ADDR_ROUTE,       /* source route, '%' or '!' in the local part: 553 5.7.1 */
};

/* Parses the path at the start of s (after "FROM:" or "TO:", spaces
 * allowed before '<').  "<>" gives an empty string when null_ok is set.
 * Writes "local@domain" (domain lower-cased, no trailing dot) to out
 * (ADDR_MAX+1 bytes); *rest points after '>' (to the ESMTP parameters).
 * The local part is canonical (RFC 5321 4.1.2): a quoted string that needs
 * no quotes loses them ("bob" is bob), one that does is quoted with a
 * backslash only before '"' and '\'.
 * A bare "Postmaster" (RCPT only) is accepted when postmaster_ok is set. */
enum addr_err addr_parse_path(const char *s, char *out, const char **rest,
                              int null_ok, int postmaster_ok);

/* Splits "local@domain": returns a pointer to the domain inside a, and
 * copies the local part to local (ADDR_LOCAL_MAX+1 bytes).  NULL if there
 * is no '@'. */
const char *addr_split(const char *a, char *local);

/* The alias table. */
struct alias_table {
	unsigned n;
	size_t used;   /* beside n: a small table dirties only its first pages */
	struct { const char *name; const char *targets; } e[ALIAS_MAX];
	char arena[ALIAS_ARENA];
};

/* Loads the aliases file into *t.  A missing file is an empty table.
 * Returns 0, or -1 with "path:line: message" in err. */
int alias_load(struct alias_table *t, const char *path, char *err, size_t errlen);

/* Parses one aliases line into *t; -1 with the message in err. */
int alias_line(struct alias_table *t, const char *line, char *err, size_t errlen);

/* Result of expanding one local name. */
struct addr_expansion {
	unsigned n;
	char target[ADDR_EXPAND_MAX][ADDR_MAX + 1]; /* "user" (local) or "x@remote" */
	int remote[ADDR_EXPAND_MAX];                 /* 1 for a remote address */
};

/* Callback telling whether a name is a local user (the users file). */
typedef int (*addr_user_fn)(const char *name);

/* Expands the local part of a local-domain recipient through the aliases,
 * recursively, de-duplicated.  A name with no alias is itself if it is a
 * user.  "postmaster" always resolves: its alias, else the user, else
 * "root"'s expansion, else the first user (first_user).  Returns the number
 * of targets, 0 for an unknown name, -1 for a loop or too many targets. */
int addr_expand(const struct alias_table *t, const char *local, addr_user_fn is_user,
                const char *first_user, const struct conf *c, struct addr_expansion *x);

/* 1 if name is what HELO/EHLO may give (RFC 5321 4.1.1.1): a domain
 * (letters, digits, '-' and, as hosts send them, '_'; labels of 1 to 63
 * octets, 253 at most in all) or an address literal ("[192.0.2.1]",
 * "[IPv6:2001:db8::1]"). */
int addr_helo_ok(const char *name);

#endif
