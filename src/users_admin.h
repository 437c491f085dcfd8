/* users_admin.h - the users file from the command line: picomail passwd
 * USER, useradd USER, userdel USER and users.
 *
 * Every change rewrites the file atomically (users_admin_rewrite): a
 * temporary beside it with every other line kept byte for byte, fsync,
 * the original's mode and owner, rename over it, fsync the directory.  The
 * running daemon notices the new file by itself (daemon.c users_watch).
 */
#ifndef PICOMAIL_USERS_ADMIN_H
#define PICOMAIL_USERS_ADMIN_H

#include <stddef.h>

#define USERS_ADMIN_FILE_MAX (256 * 1024)   /* the largest users file rewritten */

enum users_edit { USERS_EDIT_PASSWD, USERS_EDIT_ADD, USERS_EDIT_DEL };

/* Reads a password: one line of standard input, or, on a terminal, asked
 * without echo (twice, and both must match, when confirm is set).  0, or
 * -1 with a message printed. */
int users_admin_read_password(char *buf, size_t len, int confirm);

/* A SHA-512 crypt hash of pw with a fresh random salt.  0 or -1. */
int users_admin_hash(const char *pw, char *out, size_t len);

/* Rewrites the users file at path: PASSWD replaces user's hash (keeping
 * its quota field and comment), ADD appends "user:hash", DEL drops user's
 * line; every other byte is kept.  A missing file is empty (ADD creates it,
 * mode 0600).  0, or -1 with the message in err. */
int users_admin_rewrite(const char *path, enum users_edit op, const char *user,
                        const char *hash, char *err, size_t errlen);

/* The subcommands: cmd is "passwd", "useradd", "userdel" or "users",
 * argv its arguments (USER, -C FILE).  Returns the exit status. */
int users_admin_main(const char *cmd, int argc, char **argv);

#endif
