/* unixuser.c - user and group ids and names through /etc/passwd and
 * /etc/group. */
#include "unixuser.h"
#include "textfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PASSWD_PATH "/etc/passwd"
#define GROUP_PATH  "/etc/group"

/* One lookup: by id (name NULL: the name goes to out), or by name (the
 * id goes to id, and in /etc/passwd the group id to gid). */
struct lookup {
	const char *name;
	unsigned long id;
	char *out;
	size_t len;
	int found;
	int want_gid;        /* by name in /etc/passwd: the gid too */
	unsigned long gid;
};

/* "name:x:id:...", as /etc/passwd and /etc/group both start: the first
 * matching line wins, as for getpwuid and getpwnam. */
static int id_line(void *ctx, char *line, unsigned *lineno, char *msg, size_t msglen)
{
	struct lookup *k = ctx;
	char *name, *idp, *end;
	unsigned long id;

	(void)lineno;
	(void)msg;
	(void)msglen;
	if (line == NULL || k->found || line[0] == '#') {
		return 0;
	}
	name = line;
	idp = strchr(line, ':');
	if (idp == NULL || (idp = strchr(idp + 1, ':')) == NULL) {
		return 0;
	}
	*strchr(name, ':') = '\0';
	idp++;
	errno = 0;
	id = strtoul(idp, &end, 10);
	if (errno != 0 || end == idp || *end != ':' || name[0] == '\0') {
		return 0;
	}
	if (k->name != NULL) {
		if (strcmp(name, k->name) != 0) {
			return 0;
		}
		if (k->want_gid) {
			/* The fourth field; a line without a number there is
			 * skipped, as the C library skips it. */
			idp = end + 1;
			errno = 0;
			k->gid = strtoul(idp, &end, 10);
			if (errno != 0 || end == idp || *end != ':') {
				return 0;
			}
		}
		k->id = id;
		k->found = 1;
		return 0;
	}
	if (id == k->id && strlen(name) < k->len) {
		memcpy(k->out, name, strlen(name) + 1);
		k->found = 1;
	}
	return 0;
}

static int lookup(const char *path, struct lookup *k)
{
	static const struct textfile_opts opts = { TEXTFILE_LINE_MAX, 64, 0 };
	char err[128];

	return textfile_read(path, &opts, id_line, k, err, sizeof err) < 0 || !k->found ? -1 : 0;
}

int unixuser_name(uid_t uid, char *out, size_t len)
{
	struct lookup k = { NULL, uid, out, len, 0, 0, 0 };

	return len == 0 ? -1 : lookup(PASSWD_PATH, &k);
}

int unixuser_uid(const char *name, uid_t *uid)
{
	struct lookup k = { name, 0, NULL, 0, 0, 0, 0 };

	if (lookup(PASSWD_PATH, &k) < 0) {
		return -1;
	}
	*uid = (uid_t)k.id;
	return 0;
}

int unixuser_passwd(const char *name, struct passwd *pw)
{
	struct lookup k = { name, 0, NULL, 0, 0, 1, 0 };

	if (lookup(PASSWD_PATH, &k) < 0) {
		return -1;
	}
	memset(pw, 0, sizeof *pw);
	pw->pw_name = (char *)name;
	pw->pw_passwd = (char *)"";
	pw->pw_uid = (uid_t)k.id;
	pw->pw_gid = (gid_t)k.gid;
	pw->pw_gecos = (char *)"";
	pw->pw_dir = (char *)"";
	pw->pw_shell = (char *)"";
	return 0;
}

void unixuser_label(uid_t uid, char *out, size_t len)
{
	if (unixuser_name(uid, out, len) < 0) {
		snprintf(out, len, "uid:%lu", (unsigned long)uid);
	}
}

void unixgroup_label(gid_t gid, char *out, size_t len)
{
	struct lookup k = { NULL, gid, out, len, 0, 0, 0 };

	if (len == 0 || lookup(GROUP_PATH, &k) < 0) {
		snprintf(out, len, "gid:%lu", (unsigned long)gid);
	}
}
