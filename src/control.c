/* control.c - the control socket, one connection at a time on the loop. */
#include "control.h"
#include "inforce.h"
#include "stats.h"
#include "io.h"
#include "log.h"
#include "loop.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define COMMAND_MS 2000    /* a client (picomail status...) writes its line at once */
#define ANSWER_MS  5000    /* and reads its answer as it comes */

enum control_state { C_IDLE, C_READ, C_WRITE };

static struct {
	enum control_state state;
	int listen_fd, listen_slot;
	int fd, slot;
	control_answer_fn answer;
	struct submitter who;
	char cmd[CONTROL_CMD_MAX];
	size_t cmd_len;
	size_t out_len, out_off;
} ctl;

/* Apart from ctl, and left zero: in .bss, out of the binary's size and of
 * the RSS until an answer is written. */
static char out[CONTROL_ANSWER_MAX];

static void connection_io(void *ctx, int revents);

static void close_connection(void)
{
	if (ctl.slot >= 0) {
		loop_del(ctl.slot);
		ctl.slot = -1;
	}
	if (ctl.fd >= 0) {
		(void)io_close(ctl.fd);
		ctl.fd = -1;
	}
	ctl.state = C_IDLE;
	/* The next client in the listen queue. */
	loop_events(ctl.listen_slot, POLLIN);
}

/* A whole line came (or the client closed its side): the answer. */
static void answer(void)
{
	ctl.cmd[ctl.cmd_len] = '\0';
	ctl.cmd[strcspn(ctl.cmd, "\r\n")] = '\0';
	ctl.out_len = ctl.answer(ctl.cmd, &ctl.who, out, sizeof out);
	ctl.out_off = 0;
	ctl.state = C_WRITE;
	loop_events(ctl.slot, POLLOUT);
	loop_deadline(ctl.slot, loop_now() + ANSWER_MS);
}

static void read_command(void)
{
	ssize_t n = io_recv(ctl.fd, ctl.cmd + ctl.cmd_len, sizeof ctl.cmd - 1 - ctl.cmd_len);

	if (n == 0) {
		return;   /* nothing yet */
	}
	if (n == -1) {
		close_connection();
		return;
	}
	if (n > 0) {
		ctl.cmd_len += (size_t)n;
	}
	/* A line, a full buffer or the client's end of file: the command. */
	if (n == -2 || memchr(ctl.cmd, '\n', ctl.cmd_len) != NULL ||
	    ctl.cmd_len == sizeof ctl.cmd - 1) {
		answer();
	}
}

static void write_answer(void)
{
	ssize_t n;

	while (ctl.out_off < ctl.out_len) {
		n = io_send(ctl.fd, out + ctl.out_off, ctl.out_len - ctl.out_off);
		if (n < 0) {
			close_connection();
			return;
		}
		if (n == 0) {
			return;   /* the socket is full: POLLOUT again */
		}
		ctl.out_off += (size_t)n;
	}
	close_connection();
}

static void connection_io(void *ctx, int revents)
{
	(void)ctx;
	if (revents & LOOP_TIMEOUT) {
		close_connection();   /* too slow to ask, or to read its answer */
		return;
	}
	if (ctl.state == C_READ) {
		read_command();
	} else if (ctl.state == C_WRITE) {
		write_answer();
	}
}

static void listener_io(void *ctx, int revents)
{
	int fd;

	(void)ctx;
	(void)revents;
	if (ctl.state != C_IDLE) {
		loop_events(ctl.listen_slot, 0);   /* one at a time: the rest wait */
		return;
	}
	fd = accept4(ctl.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		return;
	}
	ctl.slot = loop_add(fd, POLLIN, connection_io, NULL);
	if (ctl.slot < 0) {
		(void)io_close(fd);
		return;
	}
	ctl.fd = fd;
	ctl.cmd_len = 0;
	ctl.state = C_READ;
	submitter_of(fd, inforce_conf(), &ctl.who);
	loop_deadline(ctl.slot, loop_now() + COMMAND_MS);
	loop_events(ctl.listen_slot, 0);
}

int control_start(int fd, control_answer_fn fn)
{
	ctl.fd = -1;
	ctl.slot = -1;
	ctl.listen_fd = fd;
	ctl.answer = fn;
	ctl.listen_slot = loop_add(fd, POLLIN, listener_io, NULL);
	return ctl.listen_slot < 0 ? -1 : 0;
}
