/* scanner.c - the content scanner hook: spawn, watch, reap. */
#include "scanner.h"
#include "conf.h"
#include "log.h"
#include "pool.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <string.h>
#include <sys/wait.h>

struct scan {
	pid_t pid;              /* 0: the slot is free */
	scanner_done_fn done;   /* NULL: cancelled, reaped without a report */
	void *ctx;
};

/* The child's exit status when it could not set up or exec: a temporary
 * failure, like any status but 0 and 1 (EX_OSERR of sysexits.h). */
#define SCANNER_EXIT_SETUP 71

static struct scan *scans;
static unsigned nscans, running;

int scanner_init(unsigned n)
{
	scans = pool_zalloc(sizeof *scans * n);
	if (scans == NULL) {
		return -1;
	}
	nscans = n;
	return 0;
}

unsigned scanner_running(void)
{
	return running;
}

unsigned scanner_size(void)
{
	return nscans;
}

/* cmdline split at its spaces into buf and argv (the words were checked
 * by the configuration: at most CONF_SCANNER_ARGS - 1 of them). */
static void split(const char *cmdline, char *buf, size_t len, char **argv)
{
	unsigned n = 0;
	char *p;

	memcpy(buf, cmdline, strnlen(cmdline, len - 1));
	buf[strnlen(cmdline, len - 1)] = '\0';
	for (p = buf; *p != '\0' && n < CONF_SCANNER_ARGS - 1;) {
		argv[n++] = p;
		p = strchr(p, ' ');
		if (p == NULL) {
			break;
		}
		*p++ = '\0';
	}
	argv[n] = NULL;
}

/* In the child: the message on stdin (or /dev/null), stdout to out (or
 * /dev/null), the signals
 * the daemon catches or ignores back to their defaults, nothing blocked,
 * and a process group of its own so that a kill reaches whatever it
 * started.  Never returns. */
static void child(const char *cmdline, const char *path, int out)
{
	static const int sigs[] = { SIGPIPE, SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR1 };
	char buf[CONF_PATH_MAX];
	char *argv[CONF_SCANNER_ARGS];
	sigset_t none;
	unsigned i;
	int fd;

	(void)setpgid(0, 0);
	for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
		(void)signal(sigs[i], SIG_DFL);
	}
	sigemptyset(&none);
	(void)sigprocmask(SIG_SETMASK, &none, NULL);
	fd = open(path != NULL ? path : "/dev/null", O_RDONLY);
	if (fd < 0 || dup2(fd, 0) < 0) {
		_exit(SCANNER_EXIT_SETUP);
	}
	if (fd != 0) {
		(void)close(fd);
	}
	fd = out >= 0 ? out : open("/dev/null", O_WRONLY);
	if (fd < 0 || dup2(fd, 1) < 0) {
		_exit(SCANNER_EXIT_SETUP);
	}
	if (fd != 1) {
		(void)close(fd);
	}
	split(cmdline, buf, sizeof buf, argv);
	execv(argv[0], argv);
	_exit(SCANNER_EXIT_SETUP);
}

/* fork, not posix_spawn: its file actions allocate, and the daemon
 * allocates nothing once running.  The daemon is small, so copying its
 * page tables costs little. */
static int spawn(const char *cmdline, const char *path, int out, pid_t *pid)
{
	*pid = fork();
	if (*pid < 0) {
		return errno;
	}
	if (*pid == 0) {
		child(cmdline, path, out);
	}
	return 0;
}

int scanner_start(const char *cmdline, const char *path, scanner_done_fn done, void *ctx)
{
	return scanner_run(cmdline, path, -1, done, ctx);
}

int scanner_run(const char *cmdline, const char *path, int out, scanner_done_fn done, void *ctx)
{
	unsigned i;
	pid_t pid;
	int e;

	for (i = 0; i < nscans && scans[i].pid != 0; i++) {
	}
	if (i == nscans) {
		errno = EAGAIN;
		return -1;
	}
	e = spawn(cmdline, path, out, &pid);
	if (e != 0) {
		errno = e;
		return -1;
	}
	scans[i].pid = pid;
	scans[i].done = done;
	scans[i].ctx = ctx;
	running++;
	return (int)i;
}

void scanner_cancel(int handle)
{
	struct scan *s;

	if (handle < 0 || (unsigned)handle >= nscans || scans[handle].pid == 0) {
		return;
	}
	s = &scans[handle];
	/* The group first (what the scanner started), then the child itself
	 * in case it has not yet made the group. */
	(void)kill(-s->pid, SIGKILL);
	(void)kill(s->pid, SIGKILL);
	s->done = NULL;
}

void scanner_reap(void)
{
	scanner_done_fn done;
	void *ctx;
	unsigned i;
	pid_t pid;
	int st;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		for (i = 0; i < nscans && scans[i].pid != pid; i++) {
		}
		if (i == nscans) {
			continue;
		}
		done = scans[i].done;
		ctx = scans[i].ctx;
		scans[i].pid = 0;
		scans[i].done = NULL;
		running--;
		if (done != NULL) {
			done(ctx, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		}
	}
}
