/* main.c - the multi-call binary: "picomail SUBCOMMAND" or, BusyBox
 * style, the name it is called by (sendmail, mailq). */
#include "conf.h"
#include "crypt_sha.h"
#include "auth.h"
#include "daemon.h"
#include "log.h"
#include "oauth.h"
#include "oauth_login.h"
#include "ctlcmd.h"
#include "sendmail.h"
#include "smtp_client.h"
#include "runas.h"
#include "tls.h"
#include "unixuser.h"
#include "users_admin.h"
#include "version.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define EX_USAGE       64
#define EX_UNAVAILABLE 69

static void usage(void)
{
	fprintf(stderr,
	        "usage: picomail serve [-C FILE] [-f]   run the daemon (-f: foreground)\n"
	        "       picomail check [-C FILE]        validate the configuration\n"
	        "       picomail status [-C FILE]       show the running daemon's counters\n"
	        "       picomail passwd                 read a password, print a crypt(3) hash\n"
	        "       picomail passwd USER [-C FILE]  change a user's password in the users file\n"
	        "       picomail useradd USER [-C FILE] add a user (password on stdin or asked)\n"
	        "       picomail userdel USER [-C FILE] remove a user (the Maildir stays)\n"
	        "       picomail users [-C FILE]        list users: messages, bytes, quota\n"
	        "       picomail sendmail [flags] [rcpt...]  submit a message (also as sendmail)\n"
	        "       picomail mailq [-C FILE]        list the queue (also as mailq)\n"
	        "       picomail queue flush|delete ID  act on the queue\n"
	        "       picomail oauth login [-C FILE]  sign the smarthost's OAuth2 account in\n"
	        "       picomail version\n");
}

/* Finds -C FILE (and -f) anywhere in argv; the configuration path is
 * -C, else $PICOMAIL_CONF, else the default.  -1 on a bad option. */
static int options(int argc, char **argv, const char **conf, int *foreground)
{
	int i;

	*conf = getenv("PICOMAIL_CONF");
	if (*conf == NULL || **conf == '\0') {
		*conf = CONF_DEFAULT_PATH;
	}
	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "-C") == 0 && i + 1 < argc) {
			*conf = argv[++i];
		} else if (strncmp(argv[i], "-C", 2) == 0 && argv[i][2] != '\0') {
			*conf = argv[i] + 2;
		} else if (strcmp(argv[i], "-f") == 0 && foreground != NULL) {
			*foreground = 1;
		} else {
			fprintf(stderr, "picomail: unexpected argument '%s'\n", argv[i]);
			return -1;
		}
	}
	return 0;
}

static void runas_printed(void *ctx, int fatal, const char *text)
{
	(void)ctx;
	(void)fatal;
	fprintf(stderr, "%s\n", text);
}

/* The files and directories as run_as will meet them, checked by a child
 * that has become run_as.  1 when any problem was found. */
static int check_as_runas(const struct conf *c, const char *path)
{
	char err[CONF_ERR_MAX];
	struct passwd runas, *pw = &runas;
	pid_t pid;
	int st;

	if (c->run_as[0] == '\0') {
		return 0;
	}
	if (unixuser_passwd(c->run_as, &runas) < 0) {
		fprintf(stderr, "%s: run_as user '%s' does not exist; add it or change run_as in %s\n",
		        path, c->run_as, path);
		return 1;
	}
	if (geteuid() != 0) {
		if (geteuid() != pw->pw_uid) {
			fprintf(stderr, "picomail check: not root, so the files were not checked as "
			        "run_as %s\n", c->run_as);
			return 0;
		}
		return runas_check(c, path, pw, runas_printed, NULL) > 0;
	}
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "picomail check: fork: %s\n", strerror(errno));
		return 1;
	}
	if (pid == 0) {
		if (runas_become(pw, err, sizeof err) < 0) {
			fprintf(stderr, "%s\n", err);
			_exit(1);
		}
		_exit(runas_check(c, path, pw, runas_printed, NULL) > 0);
	}
	if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st)) {
		return 1;
	}
	return WEXITSTATUS(st) != 0;
}

static int cmd_check(const char *path)
{
	static struct conf c;
	static struct users_table u;
	static struct alias_table a;
	char err[CONF_ERR_MAX];

	/* The TLS material and the smarthost's files as serve loads them, so
	 * that what check passes, serve does not refuse. */
	if (conf_load(&c, path, err, sizeof err) < 0 || users_load(&u, c.users, err, sizeof err) < 0 ||
	    alias_load(&a, c.aliases, err, sizeof err) < 0 || tls_check(&c, err, sizeof err) < 0 ||
	    smtp_client_init(&c, err, sizeof err) < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (oauth_enabled() && oauth_why()[0] != '\0') {
		fprintf(stderr, "warning: %s; relayed mail waits until then\n", oauth_why());
	}
	if (check_as_runas(&c, path)) {
		return 1;
	}
	printf("%s: ok (%u listeners, %u users, %u aliases)\n", path, c.nlisten, u.n, a.n);
	return 0;
}

/* "picomail passwd" alone: prints a hash for the users file. */
static int cmd_passwd(void)
{
	char pw[256], hash[CRYPT_SHA_MAX];
	int r;

	if (users_admin_read_password(pw, sizeof pw, 0) < 0) {
		return 1;
	}
	r = users_admin_hash(pw, hash, sizeof hash);
	memset(pw, 0, sizeof pw);
	if (r < 0) {
		return 1;
	}
	printf("%s\n", hash);
	return 0;
}

int main(int argc, char **argv)
{
	const char *name = strrchr(argv[0], '/'), *conf;
	const char *cmd;
	int foreground = 0;

	name = name ? name + 1 : argv[0];
	if (strcmp(name, "sendmail") == 0) {
		return sendmail_main(argc, argv);
	}
	if (strcmp(name, "mailq") == 0) {
		return mailq_main(argc, argv);
	}
	if (argc < 2) {
		usage();
		return EX_USAGE;
	}
	cmd = argv[1];
	if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
		printf("picomail %s\n", PICOMAIL_VERSION);
		return 0;
	}
	if (strcmp(cmd, "passwd") == 0 && argc == 2) {
		return cmd_passwd();
	}
	if (strcmp(cmd, "passwd") == 0 || strcmp(cmd, "useradd") == 0 ||
	    strcmp(cmd, "userdel") == 0 || strcmp(cmd, "users") == 0) {
		return users_admin_main(cmd, argc - 2, argv + 2);
	}
	if (strcmp(cmd, "serve") == 0) {
		if (options(argc - 2, argv + 2, &conf, &foreground) < 0) {
			return EX_USAGE;
		}
		return daemon_serve(conf, foreground);
	}
	if (strcmp(cmd, "check") == 0 || strcmp(cmd, "status") == 0) {
		if (options(argc - 2, argv + 2, &conf, NULL) < 0) {
			return EX_USAGE;
		}
		return strcmp(cmd, "check") == 0 ? cmd_check(conf) : ctlcmd_status(conf);
	}
	if (strcmp(cmd, "sendmail") == 0) {
		return sendmail_main(argc - 1, argv + 1);
	}
	if (strcmp(cmd, "mailq") == 0) {
		return mailq_main(argc - 1, argv + 1);
	}
	if (strcmp(cmd, "queue") == 0) {
		return queue_main(argc - 1, argv + 1);
	}
	if (strcmp(cmd, "oauth") == 0) {
		return oauth_login_main(argc - 1, argv + 1);
	}
	usage();
	return EX_USAGE;
}
