/* submitter.c - local users on the submit socket and in the maildrop. */
#include "submitter.h"

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

/* Trusted: root, run_as, and the names of trusted_users.  Looked up in
 * /etc/passwd each time (a submission is no hot path, and a reload or an
 * edit of the password file then needs nothing more). */
static int is_trusted(uid_t uid, const struct conf *c)
{
	uid_t u;
	unsigned i;

	if (uid == 0) {
		return 1;
	}
	if (c->run_as[0] != '\0' && unixuser_uid(c->run_as, &u) == 0 && u == uid) {
		return 1;
	}
	for (i = 0; i < c->ntrusted_users; i++) {
		if (unixuser_uid(c->trusted_users[i], &u) == 0 && u == uid) {
			return 1;
		}
	}
	return 0;
}

void submitter_by_uid(uid_t uid, const struct conf *c, struct submitter *out)
{
	const char *p;

	memset(out, 0, sizeof *out);
	out->known = 1;
	out->uid = (uint32_t)uid;
	out->trusted = is_trusted(uid, c);
	if (unixuser_name(uid, out->name, sizeof out->name) < 0) {
		snprintf(out->name, sizeof out->name, "uid%lu", (unsigned long)uid);
	}
	/* A name that would not make an address gets the numeric form. */
	for (p = out->name; *p != '\0'; p++) {
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      *p == '.' || *p == '_' || *p == '-')) {
			snprintf(out->name, sizeof out->name, "uid%lu", (unsigned long)uid);
			break;
		}
	}
	if (snprintf(out->address, sizeof out->address, "%s@%s", out->name,
	             conf_qualify_domain(c)) >= (int)sizeof out->address) {
		out->address[0] = '\0';
	}
}

void submitter_of(int fd, const struct conf *c, struct submitter *out)
{
	struct ucred cred;
	socklen_t len = sizeof cred;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || len != sizeof cred) {
		memset(out, 0, sizeof *out);
		return;
	}
	submitter_by_uid(cred.uid, c, out);
}

int submitter_sender(const struct submitter *s, const char *claimed, char *out, size_t len)
{
	if (s->trusted) {
		snprintf(out, len, "%s", claimed);
		return 0;
	}
	snprintf(out, len, "%s", s->address);
	return strcmp(claimed, s->address) != 0;
}
