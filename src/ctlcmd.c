/* ctlcmd.c - the commands that ask the running daemon through its control
 * socket (picomail status, mailq, picomail queue flush|delete), and what
 * root and run_as may do on the spool files themselves when it is down. */
#include "ctlcmd.h"
#include "command.h"
#include "conf.h"
#include "io.h"
#include "log.h"
#include "queue.h"
#include "unixuser.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ mailq */

/* The daemon is down: reads the envelopes themselves, in the daemon's
 * format (queue_list): "id size age-in-seconds <sender>", then each pending
 * recipient "    <addr> (last error)", so that scripts read one format.
 * queue_env_read wants the final "end" record, so an envelope being
 * rewritten right now is skipped, never half-printed. */
static int mailq_spool(const struct conf *c)
{
	static struct queue_env env;
	char path[CONF_PATH_MAX + QUEUE_ID_MAX + 16], a[ADDR_MAX + 1], w[QUEUE_WHY_MAX];
	unsigned long count = 0;
	struct dirent *de;
	struct stat st;
	unsigned i;
	DIR *d;

	if (cmd_spool_path(path, sizeof path, c->spool, "env", NULL) < 0) {
		fprintf(stderr, "mailq: %s: %s\n", c->spool, strerror(errno));
		return EX_OSERR;
	}
	d = opendir(path);
	if (d == NULL && (errno == EACCES || errno == EPERM)) {
		fprintf(stderr, "mailq: the daemon is not running, and only root and run_as read the "
		        "queue without it\n");
		return EX_NOPERM;
	}
	if (d == NULL && errno != ENOENT) {
		fprintf(stderr, "mailq: %s: %s\n", path, strerror(errno));
		return cmd_errno_exit(errno);
	}
	while (d != NULL && (de = readdir(d)) != NULL) {
		if (!cmd_queue_id_ok(de->d_name) || queue_env_read(c->spool, de->d_name, &env) < 0) {
			continue;   /* ".", "..", an envelope being written or just removed */
		}
		if (cmd_spool_path(path, sizeof path, c->spool, "msg", de->d_name) < 0 ||
		    stat(path, &st) < 0) {
			st.st_size = -1;
		}
		printf("%s %lld %lld <%s>\n", de->d_name, (long long)st.st_size,
		       (long long)((int64_t)time(NULL) - env.arrival),
		       cmd_printable(env.sender, strnlen(env.sender, sizeof env.sender), a, sizeof a));
		for (i = 0; i < env.nrcpt && i < QUEUE_RCPT_MAX; i++) {
			const struct queue_rcpt *r = &env.rcpt[i];

			if (r->state != 'P') {
				continue;   /* delivered or bounced: no longer queued */
			}
			cmd_printable(r->addr, strnlen(r->addr, sizeof r->addr), a, sizeof a);
			cmd_printable(r->why, strnlen(r->why, sizeof r->why), w, sizeof w);
			printf("    <%s>%s%s%s\n", a, w[0] ? " (" : "", w, w[0] ? ")" : "");
		}
		count++;
	}
	if (d != NULL) {
		closedir(d);
	}
	if (count == 0) {
		printf("Mail queue is empty\n");
	}
	return fflush(stdout) == 0 ? EX_OK : EX_IOERR;
}

int ctlcmd_mailq(const char *path)
{
	static struct conf c;
	char err[CONF_ERR_MAX];
	int r;

	if (conf_load(&c, path, err, sizeof err) < 0) {
		fprintf(stderr, "mailq: %s\n", err);
		return EX_CONFIG;
	}
	r = cmd_control_request(&c, "mailq", "mailq\n", STDOUT_FILENO, NULL, 0);
	if (r == 0) {
		return EX_OK;
	}
	if (r < 0) {
		return EX_UNAVAILABLE;
	}
	return mailq_spool(&c);
}

int mailq_main(int argc, char **argv)
{
	const char *conf;
	int n;

	if (cmd_tool_options(argc, argv, &conf, &n) < 0 || n != 0) {
		fprintf(stderr, "usage: mailq [-C FILE]\n");
		return EX_USAGE;
	}
	signal(SIGPIPE, SIG_IGN);
	log_open("mailq", 1);
	if (io_fault_init() < 0) {
		fprintf(stderr, "mailq: bad PICOMAIL_FAULT\n");
		return EX_USAGE;
	}
	return ctlcmd_mailq(conf);
}

/* ------------------------------------------------------------ queue flush|delete */

int ctlcmd_flush(const char *path)
{
	static struct conf c;
	char err[CONF_ERR_MAX], first[128];
	int r;

	if (conf_load(&c, path, err, sizeof err) < 0) {
		fprintf(stderr, "picomail: %s\n", err);
		return EX_CONFIG;
	}
	r = cmd_control_request(&c, "picomail", "flush\n", STDOUT_FILENO, first, sizeof first);
	if (r == 0) {
		return strncmp(first, "not allowed", 11) == 0 ? EX_NOPERM : EX_OK;
	}
	if (r > 0) {
		/* Nothing is lost: the daemon runs the whole queue when it
		 * starts.  But no flush happened, so not 0. */
		fprintf(stderr, "picomail: the daemon is not running; the queue runs when it starts\n");
		return EX_TEMPFAIL;
	}
	return EX_UNAVAILABLE;
}

/* With the daemon down, the command deleted the message itself: the line
 * the daemon would have written goes to syslog from here. */
static void log_deleted(const char *id)
{
	char who[UNIXUSER_NAME_MAX + 16];
	struct log_kv l;

	unixuser_label(getuid(), who, sizeof who);
	log_open("picomail", 0);
	log_kv_start(&l, "deleted");
	log_kv_str(&l, "id", id);
	log_kv_str(&l, "by", who);
	log_kv_str(&l, "daemon", "down");
	log_kv_end(&l, LOG_NOTICE);
	log_open("picomail", 1);
}

static int queue_delete_run(const char *path, const char *id)
{
	static struct conf c;
	char err[CONF_ERR_MAX], req[QUEUE_ID_MAX + 16], first[256];
	char envp[CONF_PATH_MAX + QUEUE_ID_MAX + 16], msgp[CONF_PATH_MAX + QUEUE_ID_MAX + 16];
	struct stat st;
	int r, had_env, had_msg;

	if (!cmd_queue_id_ok(id)) {
		fprintf(stderr, "picomail: '%s' is not a queue id\n", cmd_printable(id, strlen(id), err,
		                                                               sizeof err));
		return EX_USAGE;
	}
	if (conf_load(&c, path, err, sizeof err) < 0) {
		fprintf(stderr, "picomail: %s\n", err);
		return EX_CONFIG;
	}
	snprintf(req, sizeof req, "delete %s\n", id);
	r = cmd_control_request(&c, "picomail", req, STDOUT_FILENO, first, sizeof first);
	if (r == 0) {
		if (strncmp(first, "deleted", 7) == 0) {
			return EX_OK;
		}
		if (strncmp(first, "no such", 7) == 0) {
			return EX_NOINPUT;
		}
		if (strncmp(first, "busy", 4) == 0) {
			return EX_TEMPFAIL;   /* being delivered right now */
		}
		if (strncmp(first, "not allowed", 11) == 0) {
			return EX_NOPERM;     /* another user's */
		}
		return EX_SOFTWARE;
	}
	if (r < 0) {
		return EX_UNAVAILABLE;
	}
	/* The daemon is down: nobody else writes the queue. */
	if (cmd_spool_path(envp, sizeof envp, c.spool, "env", id) < 0 ||
	    cmd_spool_path(msgp, sizeof msgp, c.spool, "msg", id) < 0) {
		fprintf(stderr, "picomail: %s: %s\n", c.spool, strerror(errno));
		return EX_OSERR;
	}
	had_env = lstat(envp, &st) == 0;
	if (!had_env && (errno == EACCES || errno == EPERM)) {
		fprintf(stderr, "picomail: the daemon is not running, and only root and run_as edit "
		        "the queue without it\n");
		return EX_NOPERM;
	}
	had_msg = lstat(msgp, &st) == 0;
	if (!had_env && !had_msg) {
		printf("no such message %s\n", id);
		return EX_NOINPUT;
	}
	queue_remove(c.spool, id);
	if (lstat(envp, &st) == 0 || lstat(msgp, &st) == 0) {
		fprintf(stderr, "picomail: cannot remove %s from %s (permissions?)\n", id, c.spool);
		return EX_NOPERM;
	}
	printf("deleted %s\n", id);
	log_deleted(id);
	return EX_OK;
}

int queue_main(int argc, char **argv)
{
	const char *conf;
	int n;

	if (cmd_tool_options(argc, argv, &conf, &n) == 0) {
		signal(SIGPIPE, SIG_IGN);
		log_open("picomail", 1);
		if (io_fault_init() < 0) {
			fprintf(stderr, "picomail: bad PICOMAIL_FAULT\n");
			return EX_USAGE;
		}
		if (n == 1 && strcmp(argv[1], "flush") == 0) {
			return ctlcmd_flush(conf);
		}
		if (n == 2 && strcmp(argv[1], "delete") == 0) {
			return queue_delete_run(conf, argv[2]);
		}
	}
	fprintf(stderr, "usage: picomail queue flush [-C FILE]\n"
	                "       picomail queue delete ID [-C FILE]\n");
	return EX_USAGE;
}


/* ------------------------------------------------------------ status */

int ctlcmd_status(const char *path)
{
	static struct conf c;
	char err[CONF_ERR_MAX];
	int r;

	if (conf_load(&c, path, err, sizeof err) < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	r = cmd_control_request(&c, "picomail", "status\n", STDOUT_FILENO, NULL, 0);
	if (r > 0) {
		fprintf(stderr, "picomail: the daemon is not running (nothing at %s)\n", c.control);
	}
	return r == 0 ? 0 : 1;
}
