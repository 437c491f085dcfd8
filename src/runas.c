/* runas.c - the files and directories run_as must reach, checked as it. */
#include "runas.h"
#include "unixuser.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TEXT_MAX 640

struct check {
	const struct passwd *pw;
	runas_report_fn report;
	void *ctx;
	unsigned problems;
};

static void say(struct check *k, int fatal, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void say(struct check *k, int fatal, const char *fmt, ...)
{
	char text[TEXT_MAX];
	va_list ap;

	va_start(ap, fmt);
	if (vsnprintf(text, sizeof text, fmt, ap) < 0) {
		text[0] = '\0';
	}
	va_end(ap);
	k->problems++;
	k->report(k->ctx, fatal, text);
}

/* "root:mail 0640" for path, or "" when stat fails. */
static void owner_mode(const char *path, char *out, size_t len)
{
	char user[UNIXUSER_NAME_MAX + 16], group[UNIXUSER_NAME_MAX + 16];
	struct stat st;

	if (stat(path, &st) < 0) {
		snprintf(out, len, "?");
		return;
	}
	unixuser_label(st.st_uid, user, sizeof user);
	unixgroup_label(st.st_gid, group, sizeof group);
	snprintf(out, len, "%s:%s %04o", user, group, (unsigned)(st.st_mode & 07777));
}

/* The first directory on the way to path (path itself too, with self)
 * that this user cannot search, into dir; 0 if there is one. */
static int blocked_dir(const char *path, int self, char *dir, size_t len)
{
	size_t i, n = strlen(path);

	if (n >= len) {
		return -1;
	}
	for (i = 1; i <= n; i++) {
		if (i < n && path[i] != '/') {
			continue;
		}
		if (i == n && !self) {
			break;
		}
		memcpy(dir, path, i);
		dir[i] = '\0';
		if (access(dir, X_OK) < 0 && errno != ENOENT) {
			return 0;
		}
		if (access(dir, F_OK) < 0) {
			return -1;   /* the rest does not exist yet: the daemon makes it */
		}
	}
	return -1;
}

/* A directory on the way that the user cannot enter. */
static void cannot_enter(struct check *k, int fatal, const char *dir, const char *why)
{
	char om[UNIXUSER_NAME_MAX * 2 + 40], group[UNIXUSER_NAME_MAX + 16];

	owner_mode(dir, om, sizeof om);
	unixgroup_label(k->pw->pw_gid, group, sizeof group);
	say(k, fatal, "run_as %s cannot enter %s (%s), on the way to %s; fix: chgrp %s %s && "
	    "chmod g+x %s (or chmod o+x %s)", k->pw->pw_name, dir, om, why, group, dir, dir, dir);
}

/* A file the daemon reads again as run_as: a reload would fail. */
static void readable(struct check *k, const char *key, const char *path)
{
	char dir[CONF_PATH_MAX], om[UNIXUSER_NAME_MAX * 2 + 40], group[UNIXUSER_NAME_MAX + 16];
	int fd;

	if (path[0] == '\0') {
		return;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		close(fd);
		return;
	}
	if (errno == ENOENT) {
		return;   /* missing: reported by the loaders, or allowed (aliases) */
	}
	if (blocked_dir(path, 0, dir, sizeof dir) == 0) {
		cannot_enter(k, 0, dir, path);
		return;
	}
	owner_mode(path, om, sizeof om);
	unixgroup_label(k->pw->pw_gid, group, sizeof group);
	say(k, 0, "run_as %s cannot read %s %s (%s): the daemon reads it again as %s on a reload; "
	    "fix: chgrp %s %s && chmod g+r %s", k->pw->pw_name, key, path, om, k->pw->pw_name, group,
	    path, path);
}

/* A directory the daemon works in: the way to it must be open. */
static void reachable(struct check *k, const char *key, const char *path)
{
	char dir[CONF_PATH_MAX];

	if (blocked_dir(path, 0, dir, sizeof dir) == 0) {
		cannot_enter(k, 1, dir, path);
	}
	(void)key;
}

/* A program the daemon runs (the scanner, the token command). */
static void runnable(struct check *k, const char *key, const char *cmdline)
{
	char prog[CONF_PATH_MAX];

	if (cmdline[0] == '\0') {
		return;
	}
	/* The program is the first word. */
	snprintf(prog, sizeof prog, "%.*s", (int)strcspn(cmdline, " "), cmdline);
	if (access(prog, X_OK) < 0 && errno != ENOENT) {
		say(k, 0, "run_as %s cannot run the %s %s: %s", k->pw->pw_name, key, prog,
		    strerror(errno));
	}
}

/* The smarthost_oauth file holds secrets the daemon rewrites as run_as
 * when the provider rotates the refresh token: run_as's own, 0600, in a
 * directory where run_as may put the new file. */
static void oauth_writable(struct check *k, const struct conf *c)
{
	const char *path = c->smarthost_oauth;
	char dir[CONF_PATH_MAX], om[UNIXUSER_NAME_MAX * 2 + 40];
	struct stat st;
	const char *slash = strrchr(path, '/');

	if (path[0] == '\0') {
		return;
	}
	if (stat(path, &st) < 0) {
		if (errno != ENOENT && blocked_dir(path, 0, dir, sizeof dir) == 0) {
			cannot_enter(k, 0, dir, path);
		}
		return;   /* missing: the loader says so */
	}
	owner_mode(path, om, sizeof om);
	if (st.st_uid != k->pw->pw_uid) {
		say(k, 0, "smarthost_oauth %s (%s) holds secrets only the daemon (%s) and root may "
		    "read, and the daemon rewrites it; fix: chown %s %s && chmod 600 %s", path, om,
		    k->pw->pw_name, k->pw->pw_name, path, path);
	}
	if (c->smarthost_token_command[0] != '\0' || slash == NULL) {
		return;   /* no refresh grant: nothing is written */
	}
	snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
	if (access(dir, W_OK | X_OK) < 0) {
		owner_mode(dir, om, sizeof om);
		say(k, 0, "run_as %s cannot create files in %s (%s), where a rotated refresh token of "
		    "smarthost_oauth is written (a new file, renamed over the old); fix: give the "
		    "file a directory of %s's own, e.g. mkdir -m 700 %s/oauth.d && chown %s %s/oauth.d "
		    "&& mv %s %s/oauth.d/", k->pw->pw_name, dir, om, k->pw->pw_name, dir,
		    k->pw->pw_name, dir, path, dir);
	}
}

unsigned runas_check(const struct conf *c, const char *conf_path, const struct passwd *pw,
                     runas_report_fn report, void *ctx)
{
	struct check k = { pw, report, ctx, 0 };

	reachable(&k, "spool", c->spool);
	reachable(&k, "maildir_root", c->maildir_root);
	readable(&k, "configuration", conf_path);
	readable(&k, "users", c->users);
	readable(&k, "aliases", c->aliases);
	readable(&k, "tls_cert", c->tls_cert);
	readable(&k, "tls_key", c->tls_key);
	readable(&k, "ca_file", c->ca_file);
	readable(&k, "smarthost_auth", c->smarthost_auth);
	oauth_writable(&k, c);
	runnable(&k, "scanner", c->scanner);
	runnable(&k, "token command", c->smarthost_token_command);
	return k.problems;
}

int runas_become(const struct passwd *pw, char *err, size_t errlen)
{
	if (pw->pw_uid == 0) {
		/* Dropping "to root" would keep every privilege. */
		snprintf(err, errlen, "run_as %s is root: name an unprivileged user", pw->pw_name);
		return -1;
	}
	if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
		snprintf(err, errlen, "cannot become %s: %s", pw->pw_name, strerror(errno));
		return -1;
	}
	if (setuid(0) == 0 || geteuid() == 0) {
		snprintf(err, errlen, "could still regain root after dropping to %s", pw->pw_name);
		return -1;
	}
	return 0;
}
