/* conn.h - one client connection: a bounded input buffer with a line
 * reader, an output buffer, and the sticky error that ends it.
 *
 * Nothing here blocks: conn_fill reads what the socket has, conn_flush
 * writes what the socket takes.  The TLS layer (later) slots in under these
 * two calls; sessions above never see the socket.
 */
#ifndef PICOMAIL_CONN_H
#define PICOMAIL_CONN_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define CONN_IN_SIZE  4096
#define CONN_OUT_SIZE 4096
#define CONN_PEER_MAX 64     /* "[2001:db8::1]" and the like */

enum conn_line_result {
	CONN_LINE_NONE,      /* no complete line yet */
	CONN_LINE_OK,        /* *line (NUL-terminated, no CR/LF), *len */
	CONN_LINE_TOO_LONG,  /* an over-long line was read and dropped */
};

struct tls;
struct log_kv;

struct conn {
	int fd;
	struct tls *tls;      /* TLS in force (handshake or established) */
	struct tls *tls_next; /* TLS to start once the output is sent (STARTTLS) */
	int tls_error;        /* BearSSL's error when the engine failed */
	int err;              /* sticky: once set, no more I/O */
	int eof;              /* the peer closed its side */
	int discarding;       /* dropping the rest of an over-long line */
	size_t in_off, in_len;
	size_t out_off, out_len;
	struct sockaddr_storage peer;
	char peer_ip[CONN_PEER_MAX];   /* "1.2.3.4" or "2001:db8::1" */
	/* out before in: an idle session's greeting shares the page of the
	 * header, so each idle connection costs a page less of RSS. */
	unsigned char out[CONN_OUT_SIZE];
	unsigned char in[CONN_IN_SIZE];
};

/* Prepares c for a new accepted socket. */
void conn_init(struct conn *c, int fd, const struct sockaddr *peer, socklen_t len);

/* Reads what the socket has.  >0 bytes read, 0 nothing new (or no room),
 * -1 on end of file or error (c->eof or c->err set). */
int conn_fill(struct conn *c);

/* Takes the next line of at most max bytes (without CR LF) from the input.
 * A trailing CR is removed; the line is NUL-terminated in place, so a NUL
 * inside shows as strlen(line) != len. */
enum conn_line_result conn_line(struct conn *c, char **line, size_t *len, size_t max);

/* Bytes buffered and not yet consumed. */
size_t conn_unread(const struct conn *c);

/* 1 when a whole line (up to its LF) is buffered and not yet taken. */
int conn_line_ready(const struct conn *c);

/* Drops everything buffered (after STARTTLS: no plaintext leftovers). */
void conn_drop_input(struct conn *c);

/* Appends a formatted reply; sets the sticky error if it does not fit. */
void conn_printf(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends one protocol line (at most 510 octets, then CR LF) made from
 * fmt; a longer one is cut.  Returns 0, or -1 when it was cut. */
int conn_vline(struct conn *c, const char *fmt, va_list ap);

/* Appends raw bytes; sets the sticky error if they do not fit. */
void conn_put(struct conn *c, const void *buf, size_t n);

/* Room left in the output buffer. */
size_t conn_room(const struct conn *c);

/* Writes buffered output.  0 all sent, 1 some left (wait for POLLOUT),
 * -1 on error. */
int conn_flush(struct conn *c);

/* Closes the socket and gives back the TLS slot. */
void conn_close(struct conn *c);

/* STARTTLS/STLS: TLS starts as soon as the pending output (the reply that
 * says go ahead) has been sent.  Input buffered now is dropped, so no
 * plaintext pipelined after the command crosses into TLS. */
void conn_starttls(struct conn *c, struct tls *t);

/* Implicit TLS (ports 465, 995): TLS from the first byte. */
void conn_tls_now(struct conn *c, struct tls *t);

/* 1 once the TLS handshake is over (application data can flow). */
int conn_tls_ready(const struct conn *c);

/* 1 when decrypted bytes wait in the TLS engine for room in c->in. */
int conn_more(const struct conn *c);

/* Ends a session's "disconnect" line, the same for every protocol: its
 * duration since started (loop_now() ms), how it ended (end_why, NULL for
 * a client that closed), and what failed on the connection, if anything. */
void conn_log_end(struct log_kv *l, const struct conn *c, int64_t started, const char *end_why);

/* The poll events the connection needs: POLLOUT while records or output
 * wait for the socket, POLLIN when the session wants input (want_input) or
 * the TLS handshake needs the peer's records. */
short conn_poll_events(const struct conn *c, int want_input);

#endif
