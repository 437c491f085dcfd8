/* https.c - one HTTPS POST on the loop: resolve, connect, verified TLS,
 * the request out, the response in through http.c. */
#include "https.h"
#include "conf.h"
#include "conn.h"
#include "dns.h"
#include "io.h"
#include "loop.h"
#include "tls.h"
#include "version.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

enum { S_IDLE, S_RESOLVE, S_CONNECT, S_EXCHANGE };

static struct {
	int state;
	int dns, slot;
	unsigned naddr, addr_i;
	struct sockaddr_storage addr[DNS_ADDR_MAX];
	char host[HTTP_HOST_MAX];
	uint16_t port;
	size_t req_len, req_off;
	int64_t deadline;
	https_done_fn done;
	void *ctx;
	char last[320];           /* the last address's failure, for the reason */
} hc;   /* S_IDLE; the descriptors are set by https_post */

static int64_t timeout_ms = HTTPS_MS;
static char req[HTTPS_REQ_MAX];
static struct conn conn;
static struct http_resp resp;

void https_set_timeout(int64_t ms)
{
	timeout_ms = ms;
}

static void reset(void)
{
	if (hc.dns >= 0) {
		dns_cancel(hc.dns);
		hc.dns = -1;
	}
	if (hc.slot >= 0) {
		loop_del(hc.slot);
		hc.slot = -1;
	}
	if (conn.fd >= 0) {
		conn_close(&conn);
		conn.fd = -1;
	}
	/* They held secrets: the request's tokens, the answer's. */
	memset(req, 0, hc.req_len);
	memset(conn.out, 0, sizeof conn.out);
	memset(conn.in, 0, sizeof conn.in);
	hc.state = S_IDLE;
}

void https_cancel(void)
{
	if (hc.state != S_IDLE) {
		reset();
	}
}

/* The end: the response, or why there is none. */
static void end(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void end(const char *fmt, ...)
{
	char why[200];
	https_done_fn done = hc.done;
	void *ctx = hc.ctx;
	va_list ap;

	if (fmt != NULL) {
		va_start(ap, fmt);
		vsnprintf(why, sizeof why, fmt, ap);
		va_end(ap);
	}
	reset();
	done(ctx, fmt == NULL ? &resp : NULL, fmt == NULL ? NULL : why);
	if (fmt == NULL) {
		memset(resp.body, 0, resp.body_len);   /* tokens */
	}
}

static void io(void *ctx, int revents);
static void try_address(void);

static void next_address(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* This address failed before the request went out: the next one. */
static void next_address(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(hc.last, sizeof hc.last, fmt, ap);
	va_end(ap);
	if (hc.slot >= 0) {
		loop_del(hc.slot);
		hc.slot = -1;
	}
	if (conn.fd >= 0) {
		conn_close(&conn);
		conn.fd = -1;
	}
	hc.addr_i++;
	try_address();
}

static void try_address(void)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, one = 1;

	if (hc.addr_i >= hc.naddr) {
		end("%s", hc.last);
		return;
	}
	ss = hc.addr[hc.addr_i];
	if (ss.ss_family == AF_INET6) {
		((struct sockaddr_in6 *)&ss)->sin6_port = htons(hc.port);
		len = sizeof(struct sockaddr_in6);
	} else {
		((struct sockaddr_in *)&ss)->sin_port = htons(hc.port);
		len = sizeof(struct sockaddr_in);
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		end("socket: %s", strerror(errno));
		return;
	}
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	conn_init(&conn, fd, (struct sockaddr *)&ss, len);
	if (connect(fd, (struct sockaddr *)&ss, len) < 0 && errno != EINPROGRESS) {
		next_address("connect to %s port %u: %s", conn.peer_ip, hc.port, strerror(errno));
		return;
	}
	hc.slot = loop_add(fd, POLLOUT, io, NULL);
	if (hc.slot < 0) {
		end("no loop slot free");
		return;
	}
	loop_deadline(hc.slot, hc.deadline);
	hc.state = S_CONNECT;
}

static void resolved(void *ctx, const struct dns_result *r)
{
	unsigned i;

	(void)ctx;
	hc.dns = -1;
	if (r->status != DNS_OK || r->naddr == 0) {
		end("cannot find the address of %s%s", hc.host,
		    r->status == DNS_TEMPFAIL ? " (DNS timeout)" : "");
		return;
	}
	hc.naddr = r->naddr > DNS_ADDR_MAX ? DNS_ADDR_MAX : r->naddr;
	for (i = 0; i < hc.naddr; i++) {
		hc.addr[i] = r->addr[i];
	}
	hc.addr_i = 0;
	try_address();
}

/* The TCP connection is up: TLS from the first byte, verified. */
static int connected(void)
{
	struct tls *t;
	int err = 0;
	socklen_t len = sizeof err;

	if (getsockopt(conn.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
		next_address("connect to %s port %u: %s", conn.peer_ip, hc.port,
		             strerror(err ? err : errno));
		return -1;
	}
	t = tls_client_take(hc.host, 1);
	if (t == NULL) {
		end("no TLS session free (or no trust anchors from ca_file)");
		return -1;
	}
	conn_tls_now(&conn, t);
	hc.state = S_EXCHANGE;
	return 0;
}

/* Hands the request to the connection as its buffer takes it, and the
 * connection's output to the socket. */
static int send_more(void)
{
	size_t k;
	int r;

	for (;;) {
		k = hc.req_len - hc.req_off;
		if (k > conn_room(&conn)) {
			k = conn_room(&conn);
		}
		if (k > 0) {
			conn_put(&conn, req + hc.req_off, k);
			hc.req_off += k;
		}
		r = conn_flush(&conn);
		if (r != 0 || hc.req_off == hc.req_len) {
			return r < 0 ? -1 : 0;
		}
	}
}

/* Every decrypted octet goes to the response reader, as it comes. */
static void read_more(void)
{
	size_t n;
	int r;

	for (;;) {
		n = conn.in_len - conn.in_off;
		if (n > 0) {
			(void)http_resp_feed(&resp, conn.in + conn.in_off, n);
			conn.in_off = conn.in_len;   /* anything after the response is dropped */
			if (resp.done || resp.err != NULL) {
				return;
			}
		}
		r = conn_fill(&conn);
		if (r > 0 || (r == 0 && conn_more(&conn))) {
			continue;
		}
		return;
	}
}

static void io(void *ctx, int revents)
{
	(void)ctx;
	if (revents & LOOP_TIMEOUT) {
		end("no %s within %d s", hc.state == S_CONNECT ? "connection" :
		    hc.req_off < hc.req_len ? "TLS handshake" : "complete response",
		    (int)(timeout_ms / 1000));
		return;
	}
	if (hc.state == S_CONNECT && connected() < 0) {
		return;
	}
	/* Out, in, and out again: the end of the handshake, read in, lets
	 * the request go. */
	if (send_more() == 0) {
		read_more();
		(void)send_more();
	}
	if (resp.err != NULL) {
		end("%s", resp.err);
		return;
	}
	if (resp.done) {
		end(NULL);
		return;
	}
	if (conn.tls_error != 0) {
		end("TLS failed: %s", tls_error_text(conn.tls_error));
		return;
	}
	if (conn.err != 0 || conn.eof) {
		if (hc.req_off < hc.req_len || !conn_tls_ready(&conn)) {
			end("connection lost before the request was sent%s%s", conn.err ? ": " : "",
			    conn.err ? strerror(conn.err) : "");
			return;
		}
		/* The server closed its side: the response must be whole. */
		if (http_resp_eof(&resp) == 0) {
			end(NULL);
		} else {
			end("%s", resp.err);
		}
		return;
	}
	loop_events(hc.slot, conn_poll_events(&conn, 1));
}

int https_post(const char *url, const char *body, https_done_fn done, void *ctx, char *err,
               size_t errlen)
{
	char path[HTTP_PATH_MAX], hostport[HTTP_HOST_MAX + 8];
	size_t blen = strlen(body);
	int n;

	if (hc.state != S_IDLE) {
		snprintf(err, errlen, "another request is in flight");
		return -1;
	}
	hc.dns = hc.slot = conn.fd = -1;
	if (http_url_parse(url, hc.host, sizeof hc.host, &hc.port, path, sizeof path) < 0 ||
	    conf_is_address(hc.host)) {
		snprintf(err, errlen, "%s is not an https URL with a host name", url);
		return -1;
	}
	snprintf(hostport, sizeof hostport, hc.port == 443 ? "%s" : "%s:%u", hc.host, hc.port);
	n = snprintf(req, sizeof req, "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: picomail/%s\r\n"
	             "Accept: application/json\r\nContent-Type: application/x-www-form-urlencoded\r\n"
	             "Content-Length: %zu\r\nConnection: close\r\n\r\n", path, hostport,
	             PICOMAIL_VERSION, blen);
	if (n < 0 || (size_t)n + blen >= sizeof req) {
		memset(req, 0, sizeof req);
		snprintf(err, errlen, "the request would be longer than %d octets", HTTPS_REQ_MAX);
		return -1;
	}
	memcpy(req + n, body, blen);
	hc.req_len = (size_t)n + blen;
	hc.req_off = 0;
	hc.done = done;
	hc.ctx = ctx;
	hc.naddr = hc.addr_i = 0;
	hc.deadline = loop_now() + timeout_ms;
	snprintf(hc.last, sizeof hc.last, "no address of %s answered", hc.host);
	http_resp_init(&resp);
	hc.state = S_RESOLVE;
	hc.dns = dns_query_addr(hc.host, resolved, NULL);
	if (hc.dns < 0) {
		reset();
		snprintf(err, errlen, "the resolver is busy");
		return -1;
	}
	return 0;
}
