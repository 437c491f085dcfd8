/* http.h - the HTTP/1.1 a token endpoint needs (RFC 9112): an https URL
 * taken apart, a form body, and a response read as its bytes come.
 *
 * The response reader is a byte state machine with fixed buffers: the
 * status line and header lines of at most HTTP_LINE_MAX octets,
 * HTTP_HEAD_MAX of them in all, a body of at most HTTP_BODY_MAX octets
 * framed by Content-Length or chunked encoding.  Anything else is refused
 * with a fixed reason, and the first reason sticks.
 */
#ifndef PICOMAIL_HTTP_H
#define PICOMAIL_HTTP_H

#include <stddef.h>
#include <stdint.h>

#define HTTP_LINE_MAX 2048
#define HTTP_HEAD_MAX 16384
#define HTTP_BODY_MAX 16384
#define HTTP_TOTAL_MAX 65536     /* every octet of a response, chunk sizes too */
#define HTTP_HOST_MAX 256
#define HTTP_PATH_MAX 256

struct http_resp {
	int state;
	int status;            /* of the final response (1xx are skipped) */
	int chunked;
	int have_length;
	int done;              /* the whole response is in */
	const char *err;       /* sticky: why the response was refused */
	uint64_t left;         /* of the body (Content-Length) or of the chunk */
	size_t head;           /* octets of the head so far */
	size_t total;          /* octets of the response so far */
	size_t linelen;
	size_t body_len;
	char line[HTTP_LINE_MAX + 1];
	unsigned char body[HTTP_BODY_MAX + 1];   /* a NUL follows the body */
};

void http_resp_init(struct http_resp *r);

/* Takes n octets of the response.  Returns how many were taken: all of
 * them, or fewer once the response is complete (r->done: what follows is
 * not part of it) or refused (r->err). */
size_t http_resp_feed(struct http_resp *r, const unsigned char *p, size_t n);

/* The server closed the connection: 0 if the response was complete, -1
 * (r->err set) if not. */
int http_resp_eof(struct http_resp *r);

/* "https://host[:port][/path]" into its parts (port 443 by default, path
 * "/" by default; no user info, query kept in the path, no fragment).
 * 0, or -1 if it is not such a URL. */
int http_url_parse(const char *url, char *host, size_t hostlen, uint16_t *port, char *path,
                   size_t pathlen);

/* Appends "&key=value" ("key=value" at *off 0) to buf, the value
 * form-urlencoded (application/x-www-form-urlencoded).  0, or -1 if it
 * does not fit (buf is then left as it was, NUL-terminated). */
int http_form_add(char *buf, size_t len, size_t *off, const char *key, const char *value);

#endif
