/* unixuser.h - the names of local user and group ids, from /etc/passwd
 * and /etc/group, without the C library's getpwuid (which allocates, and
 * may consult NSS): the daemon asks while running, for the log and for
 * local submission. */
#ifndef PICOMAIL_UNIXUSER_H
#define PICOMAIL_UNIXUSER_H

#include <pwd.h>
#include <stddef.h>
#include <sys/types.h>

#define UNIXUSER_NAME_MAX 32

/* The login name of uid into out (len bytes): 0, or -1 when /etc/passwd
 * has no such uid or cannot be read. */
int unixuser_name(uid_t uid, char *out, size_t len);

/* The uid of a login name into *uid: 0, or -1 when there is none. */
int unixuser_uid(const char *name, uid_t *uid);

/* The user called name, as getpwnam finds it in /etc/passwd, into *pw:
 * pw_name is name itself, pw_uid and pw_gid are filled, the other strings
 * are empty.  0, or -1 when there is none.  Unlike getpwnam it allocates
 * nothing, and it brings none of the C library's NSS and nscd code into
 * the binary. */
int unixuser_passwd(const char *name, struct passwd *pw);

/* "root", or "uid:1234" when the uid has no name: for the log. */
void unixuser_label(uid_t uid, char *out, size_t len);

/* The same for a group, from /etc/group: "mail", or "gid:8". */
void unixgroup_label(gid_t gid, char *out, size_t len);

#endif
