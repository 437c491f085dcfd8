/* test_http.c - the HTTP response reader, URLs and form bodies
 * (src/http.c) as tables.  Each response is fed whole, a byte at a time
 * and cut at every offset in two, and must come out the same. */
#include "check.h"
#include "../../src/http.h"

#include <stdlib.h>

struct row {
	const char *name;
	const char *wire;
	int status;             /* 0: refused */
	const char *body;       /* or the reason of the refusal */
	size_t rest;            /* octets after the response, not taken */
};

#define R(h) "HTTP/1.1 " h

static const struct row rows[] = {
	{ "content-length", R("200 OK\r\nContent-Length: 5\r\n\r\nhello"), 200, "hello", 0 },
	{ "json error", R("400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"),
	  400, "{}", 0 },
	{ "http/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", 200, "x", 0 },
	{ "no reason phrase", R("200\r\nContent-Length: 0\r\n\r\n"), 200, "", 0 },
	{ "bare LF lines", R("200 OK\nContent-Length: 2\n\nok"), 200, "ok", 0 },
	{ "chunked", R("200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\n\r\n"),
	  200, "hello!", 0 },
	{ "chunked upper hex, trailer", R("200 OK\r\nTransfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n"
	  "0\r\nX-Trailer: 1\r\n\r\n"), 200, "0123456789", 0 },
	{ "interim 100", R("100 Continue\r\n\r\n") R("200 OK\r\nContent-Length: 1\r\n\r\nz"), 200, "z", 0 },
	{ "204 no body", R("204 No Content\r\n\r\n"), 204, "", 0 },
	{ "same length twice", R("200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na"), 200, "a", 0 },
	{ "more after the body", R("200 OK\r\nContent-Length: 2\r\n\r\nabEXTRA"), 200, "ab", 5 },
	{ "identity encoding", R("200 OK\r\nContent-Encoding: identity\r\nContent-Length: 0\r\n\r\n"),
	  200, "", 0 },
	/* refused */
	{ "not http", "SMTP 220 hello\r\n", 0, "not an HTTP/1.x status line", 0 },
	{ "http/2", "HTTP/2 200\r\n", 0, "not an HTTP/1.x status line", 0 },
	{ "bad code", R("2x0 OK\r\n"), 0, "not an HTTP/1.x status line", 0 },
	{ "no framing", R("200 OK\r\n\r\nbody"), 0, "a body without Content-Length or chunked encoding", 0 },
	{ "gzip", R("200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 1\r\n\r\nx"), 0,
	  "a Content-Encoding (none was asked for)", 0 },
	{ "other transfer coding", R("200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 0,
	  "a Transfer-Encoding other than chunked", 0 },
	{ "both framings", R("200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"), 0,
	  "both Content-Length and chunked encoding", 0 },
	{ "two lengths", R("200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), 0,
	  "two different Content-Length headers", 0 },
	{ "bad length", R("200 OK\r\nContent-Length: 1x\r\n\r\n"), 0, "a bad Content-Length", 0 },
	{ "negative length", R("200 OK\r\nContent-Length: -1\r\n\r\n"), 0, "a bad Content-Length", 0 },
	{ "huge length", R("200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n"), 0,
	  "a bad Content-Length", 0 },
	{ "body too large", R("200 OK\r\nContent-Length: 16385\r\n\r\n"), 0,
	  "a body larger than 16384 octets", 0 },
	{ "folded header", R("200 OK\r\nX-A: 1\r\n continued\r\n\r\n"), 0, "a folded header line", 0 },
	{ "header without colon", R("200 OK\r\nbroken\r\n\r\n"), 0, "a header line without a name", 0 },
	{ "space in name", R("200 OK\r\nContent Length: 1\r\n\r\n"), 0, "a bad header name", 0 },
	{ "NUL in head", R("200 OK\r\nX: a\0b\r\n\r\n"), 0, "a NUL in the head", 0 },
	{ "bare CR", R("200 OK\r\nX: a\rb\r\n\r\n"), 0, "a bare CR in the head", 0 },
	{ "protocol switch", R("101 Switching\r\n\r\n"), 0, "a protocol switch", 0 },
	{ "bad chunk size", R("200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), 0, "a bad chunk size", 0 },
	{ "empty chunk size", R("200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n"), 0, "a bad chunk size", 0 },
	{ "chunk longer than said", R("200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n"), 0,
	  "chunk data longer than its size", 0 },
	{ "chunks too large", R("200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4001\r\n"), 0,
	  "a body larger than 16384 octets", 0 },
	{ "chunk size overflow", R("200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n"), 0,
	  "a bad chunk size", 0 },
};

/* Feeds the row in the pieces [0, cut) and [cut, n) (cut 0: whole), or a
 * byte at a time (cut SIZE_MAX). */
static void run(struct http_resp *r, const struct row *w, size_t n, size_t cut)
{
	size_t taken = 0, i;

	http_resp_init(r);
	if (cut == (size_t)-1) {
		for (i = 0; i < n && !r->done && r->err == NULL; i++) {
			taken += http_resp_feed(r, (const unsigned char *)w->wire + i, 1);
		}
	} else {
		taken = http_resp_feed(r, (const unsigned char *)w->wire, cut);
		if (taken == cut && !r->done && r->err == NULL) {
			taken += http_resp_feed(r, (const unsigned char *)w->wire + cut, n - cut);
		}
	}
	if (w->status == 0) {
		CHECK(r->err != NULL && !r->done);
		CHECK_STR(r->err, w->body);
		return;
	}
	CHECK(r->done && r->err == NULL);
	CHECK_INT(r->status, w->status);
	CHECK_INT(r->body_len, strlen(w->body));
	CHECK_STR((const char *)r->body, w->body);
	CHECK_INT(n - taken, w->rest);
}

static size_t wire_len(const struct row *w)
{
	/* "NUL in head" holds a NUL: its length is that of the literal. */
	if (strcmp(w->name, "NUL in head") == 0) {
		return sizeof R("200 OK\r\nX: a\0b\r\n\r\n") - 1;
	}
	return strlen(w->wire);
}

static void feed(struct http_resp *r, const char *s)
{
	http_resp_feed(r, (const unsigned char *)s, strlen(s));
}

static void urls(void)
{
	static const struct {
		const char *url, *host, *path;
		unsigned port;
	} ok[] = {
		{ "https://login.microsoftonline.com/common/oauth2/v2.0/token", "login.microsoftonline.com",
		  "/common/oauth2/v2.0/token", 443 },
		{ "https://oauth2.googleapis.com/token", "oauth2.googleapis.com", "/token", 443 },
		{ "https://test.lan:8443/token?x=1", "test.lan", "/token?x=1", 8443 },
		{ "HTTPS://Test.Lan", "Test.Lan", "/", 443 },
		{ "https://127.0.0.1:1/", "127.0.0.1", "/", 1 },
	};
	static const char *const bad[] = {
		"http://login.example/token", "https://", "https:///x", "https://a:0/", "https://a:65536/",
		"https://a:/", "https://a:x/", "https://user@a/", "https://a/#frag", "https://[::1]/",
		"https://a b/", "https://a/b c", "https://a?q", "ftp://a/", "https://a/\x7f",
	};
	char host[HTTP_HOST_MAX], path[HTTP_PATH_MAX];
	uint16_t port;
	size_t i;

	for (i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		check_row = ok[i].url;
		CHECK_INT(http_url_parse(ok[i].url, host, sizeof host, &port, path, sizeof path), 0);
		CHECK_STR(host, ok[i].host);
		CHECK_STR(path, ok[i].path);
		CHECK_INT(port, ok[i].port);
	}
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		check_row = bad[i];
		CHECK_INT(http_url_parse(bad[i], host, sizeof host, &port, path, sizeof path), -1);
	}
}

static void forms(void)
{
	char buf[64];
	size_t off = 0;

	check_row = "form";
	CHECK_INT(http_form_add(buf, sizeof buf, &off, "grant_type", "refresh_token"), 0);
	CHECK_INT(http_form_add(buf, sizeof buf, &off, "scope", "a/b c+d&e=f~"), 0);
	CHECK_STR(buf, "grant_type=refresh_token&scope=a%2Fb+c%2Bd%26e%3Df%7E");
	CHECK_INT(off, strlen(buf));
	CHECK_INT(http_form_add(buf, sizeof buf, &off, "x", "0123456789"), -1);
	CHECK_STR(buf, "grant_type=refresh_token&scope=a%2Fb+c%2Bd%26e%3Df%7E");
	CHECK_INT(off, strlen(buf));
}

int main(void)
{
	static struct http_resp r;
	size_t i, cut, n;

	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		check_row = rows[i].name;
		n = wire_len(&rows[i]);
		run(&r, &rows[i], n, n);
		run(&r, &rows[i], n, (size_t)-1);
		for (cut = 1; cut < n; cut++) {
			run(&r, &rows[i], n, cut);
		}
	}
	check_row = "closed early";
	http_resp_init(&r);
	feed(&r, R("200 OK\r\nContent-Length: 5\r\n\r\nhel"));
	CHECK_INT(http_resp_eof(&r), -1);
	CHECK_STR(r.err, "closed before the end of the body");
	http_resp_init(&r);
	CHECK_INT(http_resp_eof(&r), -1);
	CHECK_STR(r.err, "closed without a response");
	check_row = "endless chunks";
	http_resp_init(&r);
	feed(&r, R("200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"));
	for (i = 0; i < 20000 && r.err == NULL; i++) {
		feed(&r, "1;aaaaaaaaaaaaaaaaaaaaaaaa\r\nx\r\n");
	}
	CHECK_STR(r.err, "a response longer than 65536 octets");
	check_row = "long head";
	http_resp_init(&r);
	feed(&r, R("200 OK\r\n"));
	for (i = 0; i < 2000 && r.err == NULL; i++) {
		feed(&r, "X-Padding: aaaaaaaaaaaaaaaa\r\n");
	}
	CHECK_STR(r.err, "a head longer than 16384 octets");
	urls();
	forms();
	return check_done("test_http");
}
