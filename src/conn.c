/* conn.c - bounded buffered I/O for one connection. */
#include "conn.h"
#include "io.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void conn_init(struct conn *c, int fd, const struct sockaddr *peer, socklen_t len)
{
	/* Only the header: the buffers stay untouched until used. */
	memset(c, 0, offsetof(struct conn, out));
	c->fd = fd;
	if (len > sizeof c->peer) {
		len = sizeof c->peer;
	}
	memcpy(&c->peer, peer, len);
	if (peer->sa_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, c->peer_ip,
		          sizeof c->peer_ip);
	} else if (peer->sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr, c->peer_ip,
		          sizeof c->peer_ip);
	} else {
		snprintf(c->peer_ip, sizeof c->peer_ip, "local");
	}
}

static void compact(struct conn *c)
{
	if (c->in_off == 0) {
		return;
	}
	memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
	c->in_len -= c->in_off;
	c->in_off = 0;
}

int conn_fill(struct conn *c)
{
	ssize_t n;

	if (c->err || c->eof) {
		return -1;
	}
	compact(c);
	if (c->in_len == sizeof c->in) {
		return 0;
	}
	n = io_recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
	if (n == -2) {
		c->eof = 1;
		return -1;
	}
	if (n < 0) {
		c->err = errno ? errno : EIO;
		return -1;
	}
	c->in_len += (size_t)n;
	return (int)n;
}

enum conn_line_result conn_line(struct conn *c, char **line, size_t *len, size_t max)
{
	unsigned char *start = c->in + c->in_off, *lf;
	size_t avail = c->in_len - c->in_off, n;

	lf = memchr(start, '\n', avail);
	if (lf == NULL) {
		/* No end of line within the bound: drop what came, and keep
		 * dropping until the line ends, then say so once. */
		if (avail > max + 1 || (c->discarding && avail > 0)) {
			c->discarding = 1;
			c->in_off = c->in_len = 0;
		}
		return CONN_LINE_NONE;
	}
	n = (size_t)(lf - start);
	c->in_off += n + 1;
	if (c->discarding) {
		c->discarding = 0;
		return CONN_LINE_TOO_LONG;
	}
	if (n > 0 && start[n - 1] == '\r') {
		n--;
	}
	if (n > max) {
		return CONN_LINE_TOO_LONG;
	}
	start[n] = '\0';
	*line = (char *)start;
	*len = n;
	return CONN_LINE_OK;
}

size_t conn_unread(const struct conn *c)
{
	return c->in_len - c->in_off;
}

void conn_drop_input(struct conn *c)
{
	c->in_off = c->in_len = 0;
	c->discarding = 0;
}

void conn_put(struct conn *c, const void *buf, size_t n)
{
	if (c->err) {
		return;
	}
	if (c->out_off > 0 && c->out_len + n > sizeof c->out) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	if (n > sizeof c->out - c->out_len) {
		c->err = ENOBUFS;
		return;
	}
	memcpy(c->out + c->out_len, buf, n);
	c->out_len += n;
}

void conn_printf(struct conn *c, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof buf) {
		c->err = ENOBUFS;
		return;
	}
	conn_put(c, buf, (size_t)n);
}

size_t conn_room(const struct conn *c)
{
	return sizeof c->out - (c->out_len - c->out_off);
}

int conn_flush(struct conn *c)
{
	ssize_t n;

	while (c->out_off < c->out_len) {
		if (c->err) {
			return -1;
		}
		n = io_send(c->fd, c->out + c->out_off, c->out_len - c->out_off);
		if (n < 0) {
			c->err = errno ? errno : EIO;
			return -1;
		}
		if (n == 0) {
			return 1;
		}
		c->out_off += (size_t)n;
	}
	c->out_off = c->out_len = 0;
	return 0;
}

void conn_close(struct conn *c)
{
	if (c->fd >= 0) {
		(void)io_close(c->fd);
		c->fd = -1;
	}
}
