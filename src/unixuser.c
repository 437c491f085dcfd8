/* unixuser.c - uid to login name through /etc/passwd. */
#include "unixuser.h"
#include "textfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PASSWD_PATH "/etc/passwd"
#define GROUP_PATH  "/etc/group"

struct lookup {
	uid_t uid;
	char *out;
	size_t len;
	int found;
};

/* "name:x:id:...", as /etc/passwd and /etc/group both start: the first
 * line with this id wins, as for getpwuid and getgrgid. */
static int passwd_line(void *ctx, char *line, unsigned *lineno, char *msg, size_t msglen)
{
	struct lookup *k = ctx;
	char *name, *uidp, *end;
	unsigned long uid;

	(void)lineno;
	(void)msg;
	(void)msglen;
	if (line == NULL || k->found || line[0] == '#') {
		return 0;
	}
	name = line;
	uidp = strchr(line, ':');
	if (uidp == NULL || (uidp = strchr(uidp + 1, ':')) == NULL) {
		return 0;
	}
	*strchr(name, ':') = '\0';
	uidp++;
	errno = 0;
	uid = strtoul(uidp, &end, 10);
	if (errno != 0 || end == uidp || *end != ':' || uid != (unsigned long)k->uid ||
	    name[0] == '\0' || strlen(name) >= k->len) {
		return 0;
	}
	memcpy(k->out, name, strlen(name) + 1);
	k->found = 1;
	return 0;
}

static int lookup_name(const char *path, unsigned long id, char *out, size_t len)
{
	static const struct textfile_opts opts = { TEXTFILE_LINE_MAX, 64, 0 };
	struct lookup k = { (uid_t)id, out, len, 0 };
	char err[128];

	if (len == 0 || textfile_read(path, &opts, passwd_line, &k, err, sizeof err) < 0 ||
	    !k.found) {
		return -1;
	}
	return 0;
}

int unixuser_name(uid_t uid, char *out, size_t len)
{
	return lookup_name(PASSWD_PATH, uid, out, len);
}

void unixuser_label(uid_t uid, char *out, size_t len)
{
	if (unixuser_name(uid, out, len) < 0) {
		snprintf(out, len, "uid:%lu", (unsigned long)uid);
	}
}

void unixgroup_label(gid_t gid, char *out, size_t len)
{
	if (lookup_name(GROUP_PATH, gid, out, len) < 0) {
		snprintf(out, len, "gid:%lu", (unsigned long)gid);
	}
}
