/* conn.c - bounded buffered I/O for one connection. */
#include "conn.h"
#include "io.h"
#include "log.h"
#include "loop.h"
#include "tls.h"

#include <poll.h>

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

/* Marks the connection failed with BearSSL's error. */
static void tls_failed(struct conn *c, br_ssl_engine_context *eng)
{
	c->tls_error = br_ssl_engine_last_error(eng);
	c->err = c->tls_error == BR_ERR_OK ? EPIPE : EPROTO;
}

/* Sends the engine's pending records.  1 if the socket is full, 0 when
 * nothing is left, -1 on error. */
static int tls_send_records(struct conn *c, br_ssl_engine_context *eng)
{
	unsigned char *buf;
	size_t len;
	ssize_t n;

	while (br_ssl_engine_current_state(eng) & BR_SSL_SENDREC) {
		buf = br_ssl_engine_sendrec_buf(eng, &len);
		n = io_send(c->fd, buf, len);
		if (n < 0) {
			c->err = errno ? errno : EIO;
			return -1;
		}
		if (n == 0) {
			return 1;
		}
		br_ssl_engine_sendrec_ack(eng, (size_t)n);
	}
	return 0;
}

/* conn_fill through TLS: moves decrypted bytes into c->in, reading records
 * from the socket while the engine asks for them. */
static int tls_fill(struct conn *c)
{
	br_ssl_engine_context *eng = tls_engine(c->tls);
	unsigned state;
	unsigned char *buf;
	size_t len, room;
	ssize_t n;
	int total = 0;

	for (;;) {
		state = br_ssl_engine_current_state(eng);
		if (state & BR_SSL_CLOSED) {
			tls_failed(c, eng);
			return total > 0 ? total : -1;
		}
		if (state & BR_SSL_RECVAPP) {
			room = sizeof c->in - c->in_len;
			if (room == 0) {
				return total;
			}
			buf = br_ssl_engine_recvapp_buf(eng, &len);
			if (len > room) {
				len = room;
			}
			memcpy(c->in + c->in_len, buf, len);
			c->in_len += len;
			br_ssl_engine_recvapp_ack(eng, len);
			total += (int)len;
			continue;
		}
		/* Handshake answers must go out before more records come in. */
		if (state & BR_SSL_SENDREC) {
			int r = tls_send_records(c, eng);

			if (r < 0) {
				return -1;
			}
			if (r == 1) {
				return total;
			}
			continue;
		}
		if (!(state & BR_SSL_RECVREC)) {
			return total;
		}
		buf = br_ssl_engine_recvrec_buf(eng, &len);
		n = io_recv(c->fd, buf, len);
		if (n == -2) {
			c->eof = 1;
			return total > 0 ? total : -1;
		}
		if (n < 0) {
			c->err = errno ? errno : EIO;
			return -1;
		}
		if (n == 0) {
			return total;
		}
		br_ssl_engine_recvrec_ack(eng, (size_t)n);
	}
}

/* conn_flush through TLS: hands c->out to the engine and its records to
 * the socket. */
static int tls_flush(struct conn *c)
{
	br_ssl_engine_context *eng = tls_engine(c->tls);
	unsigned state;
	unsigned char *buf;
	size_t len, pending;
	int r;

	for (;;) {
		state = br_ssl_engine_current_state(eng);
		if (state & BR_SSL_CLOSED) {
			tls_failed(c, eng);
			return -1;
		}
		r = tls_send_records(c, eng);
		if (r != 0) {
			return r;
		}
		pending = c->out_len - c->out_off;
		if (pending == 0) {
			c->out_off = c->out_len = 0;
			return 0;
		}
		if (!(br_ssl_engine_current_state(eng) & BR_SSL_SENDAPP)) {
			if (c->eof) {
				c->err = EPIPE;   /* gone before the handshake ended */
				return -1;
			}
			return 1;   /* still in the handshake: output waits */
		}
		buf = br_ssl_engine_sendapp_buf(eng, &len);
		if (len > pending) {
			len = pending;
		}
		memcpy(buf, c->out + c->out_off, len);
		c->out_off += len;
		br_ssl_engine_sendapp_ack(eng, len);
		br_ssl_engine_flush(eng, 0);
	}
}

int conn_fill(struct conn *c)
{
	ssize_t n;

	if (c->err || c->eof) {
		return -1;
	}
	compact(c);
	if (c->tls != NULL) {
		return tls_fill(c);
	}
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

int conn_line_ready(const struct conn *c)
{
	return memchr(c->in + c->in_off, '\n', c->in_len - c->in_off) != NULL;
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

int conn_vline(struct conn *c, const char *fmt, va_list ap)
{
	char buf[512];
	int n = vsnprintf(buf, sizeof buf - 2, fmt, ap), cut = 0;

	if (n < 0) {
		return -1;
	}
	/* RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with CRLF. */
	if ((size_t)n > sizeof buf - 3) {
		n = (int)(sizeof buf - 3);
		cut = 1;
	}
	buf[n++] = '\r';
	buf[n++] = '\n';
	conn_put(c, buf, (size_t)n);
	return cut ? -1 : 0;
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

	if (c->err) {
		return -1;
	}
	if (c->tls != NULL) {
		return tls_flush(c);
	}
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
	if (c->tls_next != NULL) {
		/* The go-ahead is out: from here on, TLS. */
		c->tls = c->tls_next;
		c->tls_next = NULL;
		return tls_flush(c);
	}
	return 0;
}

void conn_close(struct conn *c)
{
	if (c->tls != NULL) {
		br_ssl_engine_context *eng = tls_engine(c->tls);

		/* A polite close_notify, if the socket takes it now. */
		if (!(br_ssl_engine_current_state(eng) & BR_SSL_CLOSED) && c->err == 0) {
			br_ssl_engine_close(eng);
			(void)tls_send_records(c, eng);
		}
		tls_release(c->tls);
		c->tls = NULL;
	}
	if (c->tls_next != NULL) {
		tls_release(c->tls_next);
		c->tls_next = NULL;
	}
	if (c->fd >= 0) {
		(void)io_close(c->fd);
		c->fd = -1;
	}
	/* Sticky: whatever still holds the object reads and writes nothing
	 * more, and never touches a descriptor number reused since. */
	if (c->err == 0) {
		c->err = ENOTCONN;
	}
}

void conn_starttls(struct conn *c, struct tls *t)
{
	conn_drop_input(c);
	c->tls_next = t;
}

void conn_tls_now(struct conn *c, struct tls *t)
{
	c->tls = t;
}

int conn_tls_ready(const struct conn *c)
{
	return c->tls != NULL && (br_ssl_engine_current_state(tls_engine(c->tls)) &
	                          (BR_SSL_SENDAPP | BR_SSL_RECVAPP)) != 0;
}

int conn_more(const struct conn *c)
{
	/* conn_fill compacts: room is whatever is not unread. */
	if (c->tls == NULL || c->in_len - c->in_off == sizeof c->in) {
		return 0;
	}
	return (br_ssl_engine_current_state(tls_engine(c->tls)) & BR_SSL_RECVAPP) != 0;
}

short conn_poll_events(const struct conn *c, int want_input)
{
	br_ssl_engine_context *eng;
	unsigned state;
	short ev = 0;

	/* After the peer's end of file, POLLIN would only say so again. */
	if (c->eof) {
		want_input = 0;
	}
	if (c->tls == NULL) {
		if (c->out_off < c->out_len) {
			ev |= POLLOUT;
		}
		return ev | (want_input ? POLLIN : 0);
	}
	eng = tls_engine(c->tls);
	state = br_ssl_engine_current_state(eng);
	if (state & BR_SSL_SENDREC) {
		ev |= POLLOUT;
	}
	/* The handshake reads records whatever the session wants. */
	if ((state & BR_SSL_RECVREC) && !c->eof && (want_input || !(state & BR_SSL_SENDAPP))) {
		ev |= POLLIN;
	}
	return ev;
}

void conn_log_end(struct log_kv *l, const struct conn *c, int64_t started, const char *end_why)
{
	log_kv_ms(l, "duration", loop_now() - started);
	log_kv_str(l, "end", end_why != NULL ? end_why : "closed");
	if (c->tls_error != 0) {
		log_kv_str(l, "error", tls_error_text(c->tls_error));
	} else if (c->err != 0 && c->err != ENOTCONN) {
		log_kv_str(l, "error", strerror(c->err));
	}
	log_kv_end(l, LOG_INFO);
}
