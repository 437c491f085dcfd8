/* http.c - an HTTP/1.1 response read byte by byte, URLs, form bodies. */
#include "http.h"
#include "conf.h"

#include <string.h>
#include <strings.h>

enum {
	H_STATUS,      /* the status line */
	H_HEADER,      /* header lines, up to the empty one */
	H_BODY,        /* Content-Length octets */
	H_CHUNK_SIZE,  /* a chunk's size line */
	H_CHUNK_DATA,
	H_CHUNK_END,   /* the CRLF after a chunk's data */
	H_TRAILER,     /* trailer lines after the last chunk */
	H_DONE,
};

void http_resp_init(struct http_resp *r)
{
	/* The buffers need no clearing. */
	memset(r, 0, offsetof(struct http_resp, line));
	r->state = H_STATUS;
}

static size_t refuse(struct http_resp *r, const char *why)
{
	if (r->err == NULL) {
		r->err = why;
	}
	return 0;
}

static int is_space(char c)
{
	return c == ' ' || c == '\t';
}

/* The status line: "HTTP/1.1 200 OK". */
static int status_line(struct http_resp *r, const char *s)
{
	if (strncmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') || s[8] != ' ' ||
	    s[9] < '1' || s[9] > '5' || s[10] < '0' || s[10] > '9' || s[11] < '0' ||
	    s[11] > '9' || (s[12] != ' ' && s[12] != '\0')) {
		refuse(r, "not an HTTP/1.x status line");
		return -1;
	}
	r->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
	return 0;
}

static int parse_u64(const char *s, int base, uint64_t max, uint64_t *v)
{
	unsigned d;

	if (*s == '\0') {
		return -1;
	}
	for (*v = 0; *s != '\0'; s++) {
		if (*s >= '0' && *s <= '9') {
			d = (unsigned)(*s - '0');
		} else if (base == 16 && (*s | 0x20) >= 'a' && (*s | 0x20) <= 'f') {
			d = (unsigned)((*s | 0x20) - 'a' + 10);
		} else {
			return -1;
		}
		if (*v > (max - d) / (uint64_t)base) {
			return -1;
		}
		*v = *v * (uint64_t)base + d;
	}
	return 0;
}

/* One header line; the framing headers are read, the others passed over. */
static int header_line(struct http_resp *r, char *s)
{
	char *colon, *v, *e;
	uint64_t n;

	if (is_space(s[0])) {
		refuse(r, "a folded header line");   /* RFC 9112 5.2 */
		return -1;
	}
	colon = strchr(s, ':');
	if (colon == NULL || colon == s) {
		refuse(r, "a header line without a name");
		return -1;
	}
	for (e = s; e < colon; e++) {
		if (*e <= ' ' || *e >= 0x7f) {
			refuse(r, "a bad header name");
			return -1;
		}
	}
	*colon = '\0';
	for (v = colon + 1; is_space(*v); v++) {
	}
	for (e = v + strlen(v); e > v && is_space(e[-1]); e--) {
	}
	*e = '\0';
	if (strcasecmp(s, "Content-Length") == 0) {
		if (parse_u64(v, 10, UINT64_MAX, &n) < 0) {
			refuse(r, "a bad Content-Length");
			return -1;
		}
		if (r->have_length && n != r->left) {
			refuse(r, "two different Content-Length headers");
			return -1;
		}
		r->have_length = 1;
		r->left = n;
	} else if (strcasecmp(s, "Transfer-Encoding") == 0) {
		if (strcasecmp(v, "chunked") != 0 || r->chunked) {
			refuse(r, "a Transfer-Encoding other than chunked");
			return -1;
		}
		r->chunked = 1;
	} else if (strcasecmp(s, "Content-Encoding") == 0 && strcasecmp(v, "identity") != 0) {
		refuse(r, "a Content-Encoding (none was asked for)");
		return -1;
	}
	return 0;
}

/* The empty line that ends the head: how the body is framed. */
static int head_end(struct http_resp *r)
{
	if (r->status >= 100 && r->status < 200) {
		if (r->status == 101) {
			refuse(r, "a protocol switch");
			return -1;
		}
		/* An interim response (100 Continue): the real one follows. */
		r->state = H_STATUS;
		r->have_length = r->chunked = 0;
		return 0;
	}
	if (r->chunked && r->have_length) {
		refuse(r, "both Content-Length and chunked encoding");
		return -1;
	}
	if (r->status == 204 || r->status == 304) {
		r->state = H_DONE;
		return 0;
	}
	if (r->chunked) {
		r->state = H_CHUNK_SIZE;
		return 0;
	}
	if (!r->have_length) {
		refuse(r, "a body without Content-Length or chunked encoding");
		return -1;
	}
	if (r->left > HTTP_BODY_MAX) {
		refuse(r, "a body larger than " "16384" " octets");
		return -1;
	}
	r->state = r->left == 0 ? H_DONE : H_BODY;
	return 0;
}

/* A chunk's size line: hex digits, perhaps extensions after ';'. */
static int chunk_size(struct http_resp *r, char *s)
{
	char *semi = strchr(s, ';');

	if (semi != NULL) {
		*semi = '\0';
	}
	while (*s != '\0' && is_space(s[strlen(s) - 1])) {
		s[strlen(s) - 1] = '\0';
	}
	if (parse_u64(s, 16, UINT64_MAX, &r->left) < 0) {
		refuse(r, "a bad chunk size");
		return -1;
	}
	if (r->left > HTTP_BODY_MAX - r->body_len) {
		refuse(r, "a body larger than " "16384" " octets");
		return -1;
	}
	r->state = r->left == 0 ? H_TRAILER : H_CHUNK_DATA;
	return 0;
}

/* A whole line (without its CRLF) in r->line, in the current state. */
static int line_done(struct http_resp *r)
{
	char *s = r->line;

	s[r->linelen] = '\0';
	r->linelen = 0;
	switch (r->state) {
	case H_STATUS:
		if (status_line(r, s) < 0) {
			return -1;
		}
		r->state = H_HEADER;
		return 0;
	case H_HEADER:
		return s[0] == '\0' ? head_end(r) : header_line(r, s);
	case H_CHUNK_SIZE:
		return chunk_size(r, s);
	case H_CHUNK_END:
		if (s[0] != '\0') {
			refuse(r, "chunk data longer than its size");
			return -1;
		}
		r->state = H_CHUNK_SIZE;
		return 0;
	case H_TRAILER:
		if (s[0] == '\0') {
			r->state = H_DONE;
		}
		return 0;
	default:
		refuse(r, "a line where none belongs");
		return -1;
	}
}

size_t http_resp_feed(struct http_resp *r, const unsigned char *p, size_t n)
{
	size_t i = 0, k;

	while (i < n && r->err == NULL && r->state != H_DONE) {
		/* Chunk size lines are not the head's, nor the body's: a bound
		 * on the whole keeps a server from talking for ever. */
		if (r->total >= HTTP_TOTAL_MAX) {
			refuse(r, "a response longer than 65536 octets");
			break;
		}
		if (r->state == H_BODY || r->state == H_CHUNK_DATA) {
			k = n - i < r->left ? n - i : (size_t)r->left;
			r->total += k;
			memcpy(r->body + r->body_len, p + i, k);   /* sizes checked at the header */
			r->body_len += k;
			r->left -= k;
			i += k;
			if (r->left == 0) {
				r->state = r->state == H_BODY ? H_DONE : H_CHUNK_END;
			}
			continue;
		}
		/* A line: the head's lines count against the head's bound. */
		if (r->state == H_STATUS || r->state == H_HEADER || r->state == H_TRAILER) {
			if (++r->head > HTTP_HEAD_MAX) {
				refuse(r, "a head longer than " "16384" " octets");
				break;
			}
		}
		r->total++;
		if (p[i] == '\n') {
			i++;
			if (r->linelen > 0 && r->line[r->linelen - 1] == '\r') {
				r->linelen--;
			}
			if (line_done(r) < 0) {
				break;
			}
			continue;
		}
		if (p[i] == '\0' || (r->linelen > 0 && r->line[r->linelen - 1] == '\r')) {
			refuse(r, p[i] == '\0' ? "a NUL in the head" : "a bare CR in the head");
			break;
		}
		if (r->linelen == HTTP_LINE_MAX) {
			refuse(r, "a line longer than 2048 octets");
			break;
		}
		r->line[r->linelen++] = (char)p[i++];
	}
	if (r->state == H_DONE) {
		r->done = 1;
		r->body[r->body_len] = '\0';
	}
	return i;
}

int http_resp_eof(struct http_resp *r)
{
	if (r->done) {
		return 0;
	}
	refuse(r, r->state == H_STATUS && r->head == 0 ? "closed without a response" :
	          r->state <= H_HEADER ? "closed in the middle of the head" :
	          "closed before the end of the body");
	return -1;
}

int http_url_parse(const char *url, char *host, size_t hostlen, uint16_t *port, char *path,
                   size_t pathlen)
{
	const char *h, *e, *colon;
	size_t n;
	unsigned long p = 443;

	if (strncasecmp(url, "https://", 8) != 0) {
		return -1;
	}
	h = url + 8;
	e = h + strcspn(h, "/?#");
	if (*e == '#' || strchr(h, '#') != NULL || memchr(h, '@', (size_t)(e - h)) != NULL) {
		return -1;
	}
	colon = memchr(h, ':', (size_t)(e - h));
	if (colon != NULL) {
		const char *d;

		if (colon + 1 == e || e - colon > 6) {
			return -1;
		}
		for (p = 0, d = colon + 1; d < e; d++) {
			if (*d < '0' || *d > '9') {
				return -1;
			}
			p = p * 10 + (unsigned long)(*d - '0');
		}
		if (p == 0 || p > 65535) {
			return -1;
		}
	}
	n = (size_t)((colon != NULL ? colon : e) - h);
	if (n == 0 || n >= hostlen || n > CONF_NAME_MAX - 1) {
		return -1;
	}
	memcpy(host, h, n);
	host[n] = '\0';
	for (n = 0; host[n] != '\0'; n++) {
		char c = host[n];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.')) {
			return -1;   /* a name or an IPv4 address; no IPv6 literal */
		}
	}
	if (*e == '\0') {
		e = "/";
	} else if (*e == '?') {
		return -1;
	}
	n = strlen(e);
	if (n >= pathlen) {
		return -1;
	}
	for (h = e; *h != '\0'; h++) {
		if ((unsigned char)*h <= ' ' || (unsigned char)*h >= 0x7f) {
			return -1;
		}
	}
	memcpy(path, e, n + 1);
	*port = (uint16_t)p;
	return 0;
}

/* Appends s form-urlencoded at *o (keeping room for the NUL); -1 if full. */
static int form_put(char *buf, size_t len, size_t *o, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (*o + 3 >= len) {
			return -1;
		}
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '.' || c == '_' || c == '*') {
			buf[(*o)++] = (char)c;
		} else if (c == ' ') {
			buf[(*o)++] = '+';
		} else {
			buf[(*o)++] = '%';
			buf[(*o)++] = hex[c >> 4];
			buf[(*o)++] = hex[c & 15];
		}
	}
	return 0;
}

int http_form_add(char *buf, size_t len, size_t *off, const char *key, const char *value)
{
	size_t o = *off;

	if (len == 0 || o + 2 >= len) {
		return -1;
	}
	if (o > 0) {
		buf[o++] = '&';
	}
	if (form_put(buf, len, &o, key) < 0 || o + 2 >= len) {
		buf[*off] = '\0';
		return -1;
	}
	buf[o++] = '=';
	if (form_put(buf, len, &o, value) < 0) {
		buf[*off] = '\0';
		return -1;
	}
	buf[o] = '\0';
	*off = o;
	return 0;
}
