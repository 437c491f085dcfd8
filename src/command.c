/* command.c - what the command-line tools share: where the configuration
 * is, printing what came from outside, and talking to the daemon's unix
 * sockets without ever hanging on them. */
#include "command.h"
#include "io.h"
#include "queue.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

const char *cmd_conf_path(void)
{
	const char *p = getenv("PICOMAIL_CONF");

	return p != NULL && *p != '\0' ? p : CONF_DEFAULT_PATH;
}

/* Copies s for printing: control bytes become '?', so that text from the
 * message or from the daemon cannot rewrite the terminal. */
const char *cmd_printable(const char *s, size_t n, char *out, size_t outlen)
{
	size_t i;

	if (outlen == 0) {
		return "";
	}
	if (n >= outlen) {
		n = outlen - 1;
	}
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		out[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
	}
	out[n] = '\0';
	return out;
}

/* Copies a string, cut to fit. */
void cmd_copy_cut(char *dst, size_t len, const char *src)
{
	size_t n = strlen(src);

	if (n >= len) {
		n = len - 1;
	}
	memcpy(dst, src, n);
	dst[n] = '\0';
}

int cmd_errno_exit(int err)
{
	return err == EACCES || err == EPERM ? EX_NOPERM : EX_OSERR;
}

/* Connects a stream socket to a unix path without blocking: a daemon too
 * busy to accept is "not available now", never a hang.  -1 with errno. */
int cmd_unix_connect(const char *path)
{
	struct sockaddr_un sun;
	int fd, saved;

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof sun.sun_path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/* 1 when a failed connect means "no daemon there" rather than a fault. */
int cmd_daemon_down(int err)
{
	return err == ENOENT || err == ECONNREFUSED;
}

/* Waits for fd to be ready; 0, or -1 with ETIMEDOUT or poll's errno. */
int cmd_wait_fd(int fd, short events, int timeout_ms)
{
	struct pollfd p;
	int r;

	p.fd = fd;
	p.events = events;
	do {
		r = poll(&p, 1, timeout_ms);
	} while (r < 0 && errno == EINTR);
	if (r == 0) {
		errno = ETIMEDOUT;
		return -1;
	}
	return r < 0 ? -1 : 0;
}

/* Writes all of buf to a non-blocking socket, waiting at most the timeout
 * for each bit of progress.  0 or -1 with errno. */
int cmd_sock_write_all(int fd, const void *buf, size_t n)
{
	const unsigned char *p = buf;
	ssize_t r;

	while (n > 0) {
		r = io_send(fd, p, n);
		if (r < 0) {
			return -1;
		}
		if (r == 0) {
			if (cmd_wait_fd(fd, POLLOUT, CMD_TIMEOUT_MS) < 0) {
				return -1;
			}
			continue;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Writes all of buf to a blocking descriptor (stdout).  0 or -1. */
int cmd_fd_write_all(int fd, const void *buf, size_t n)
{
	const unsigned char *p = buf;
	ssize_t r;

	while (n > 0) {
		r = write(fd, p, n);
		if (r < 0 && errno == EINTR) {
			continue;
		}
		if (r <= 0) {
			return -1;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Sends one request line to the daemon's control socket and copies the
 * reply to out (-1: nowhere); its first line goes to first (may be NULL).
 * Returns 0, 1 when the daemon is not running, -1 on an error (printed). */
int cmd_control_request(const struct conf *c, const char *cmd, const char *request, int out,
                           char *first, size_t firstlen)
{
	static char buf[16384];
	size_t flen = 0;
	ssize_t n, i;
	int fd, done = 0;

	if (first != NULL && firstlen > 0) {
		first[0] = '\0';
	}
	fd = cmd_unix_connect(c->control);
	if (fd < 0) {
		if (cmd_daemon_down(errno)) {
			return 1;
		}
		fprintf(stderr, "%s: cannot reach the daemon at %s: %s\n", cmd, c->control,
		        strerror(errno));
		return -1;
	}
	if (cmd_sock_write_all(fd, request, strlen(request)) < 0) {
		fprintf(stderr, "%s: %s: %s\n", cmd, c->control, strerror(errno));
		close(fd);
		return -1;
	}
	while (!done) {
		n = io_recv(fd, buf, sizeof buf);
		if (n == 0) {
			if (cmd_wait_fd(fd, POLLIN, CMD_TIMEOUT_MS) < 0) {
				break;
			}
			continue;
		}
		if (n == -2) {
			done = 1;
			break;
		}
		if (n < 0) {
			break;
		}
		if (first != NULL) {
			/* The first line, for the caller to judge the answer. */
			for (i = 0; i < n && flen + 1 < firstlen; i++) {
				if (flen > 0 && first[flen - 1] == '\n') {
					break;
				}
				first[flen++] = buf[i];
			}
			first[flen] = '\0';
		}
		if (out >= 0 && cmd_fd_write_all(out, buf, (size_t)n) < 0) {
			fprintf(stderr, "%s: cannot write to stdout: %s\n", cmd, strerror(errno));
			close(fd);
			return -1;
		}
	}
	if (!done) {
		fprintf(stderr, "%s: %s: %s\n", cmd, c->control,
		        errno ? strerror(errno) : "connection lost");
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* A queue id names a file under env/ and msg/: letters, digits, '.', '-'
 * and '_' only, not starting with '.', so never "..", never a path. */
int cmd_queue_id_ok(const char *id)
{
	size_t i, n = strlen(id);

	if (n == 0 || n >= QUEUE_ID_MAX || id[0] == '.') {
		return 0;
	}
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)id[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      ch == '.' || ch == '-' || ch == '_')) {
			return 0;
		}
	}
	return strstr(id, "..") == NULL;
}

int cmd_spool_path(char *out, size_t len, const char *spool, const char *sub, const char *id)
{
	int n = snprintf(out, len, "%s/%s%s%s", spool, sub, id ? "/" : "", id ? id : "");

	if (n < 0 || (size_t)n >= len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* Finds -C FILE (or -CFILE) in argv[1..]; other arguments go to args
 * (compacted into argv) unless they are options.  -1 on an unknown option. */
int cmd_tool_options(int argc, char **argv, const char **conf, int *nargs)
{
	int i, n = 0;

	*conf = cmd_conf_path();
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-C") == 0 && i + 1 < argc) {
			*conf = argv[++i];
		} else if (strncmp(argv[i], "-C", 2) == 0 && argv[i][2] != '\0') {
			*conf = argv[i] + 2;
		} else if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "-bp") == 0) {
			continue;   /* mailq -v, sendmail's -bp spelled out */
		} else if (argv[i][0] == '-') {
			return -1;
		} else {
			argv[1 + n++] = argv[i];
		}
	}
	*nargs = n;
	return 0;
}

