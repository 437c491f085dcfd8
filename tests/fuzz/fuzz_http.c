/* fuzz_http.c - what a token endpoint sends (src/http.c, src/json.c, the
 * reader of src/oauth.c), and the URLs and form bodies of src/http.c.
 *
 * Input: a selector byte, then the text.
 *   0  an HTTP response, fed to http_resp_feed in pieces whose lengths the
 *      input's own bytes choose (a length byte before each piece), and fed
 *      again whole: both must give the same outcome (status, body, or the
 *      same reason), take no octet after the response or after a refusal,
 *      keep the body within its bound and NUL-terminated; a complete
 *      response's body then goes through oauth_reply_read.
 *   1  a JSON text through json_read with fields of several sizes, the
 *      long ones refused and the short ones cut: a string found is
 *      terminated within its field and holds no NUL; the same text read
 *      twice gives the same; with white space around it, the same again.
 *   2  an https URL through http_url_parse, and the text as a form value
 *      through http_form_add, which must decode back to it. */
#include "fuzz.h"
#include "http.h"
#include "json.h"
#include "oauth.h"

#include <stdlib.h>
#include <string.h>

#define TEXT_MAX 65536

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct http_resp whole, cut;
static struct oauth_reply reply;

static void same(const struct http_resp *a, const struct http_resp *b)
{
	if (a->done != b->done || (a->err == NULL) != (b->err == NULL) ||
	    (a->err != NULL && strcmp(a->err, b->err) != 0)) {
		fuzz_fail("whole: done %d err %s; in pieces: done %d err %s", a->done,
		          a->err ? a->err : "-", b->done, b->err ? b->err : "-");
	}
	if (a->done && (a->status != b->status || a->body_len != b->body_len ||
	                memcmp(a->body, b->body, a->body_len) != 0)) {
		fuzz_fail("whole and in pieces differ: status %d/%d, body %zu/%zu", a->status,
		          b->status, a->body_len, b->body_len);
	}
}

static void sound(const struct http_resp *r, size_t taken, size_t n)
{
	if (taken > n || r->body_len > HTTP_BODY_MAX) {
		fuzz_fail("took %zu of %zu, body %zu", taken, n, r->body_len);
	}
	if (r->done && (r->err != NULL || r->status < 200 || r->status > 599 ||
	                r->body[r->body_len] != '\0')) {
		fuzz_fail("a done response with status %d, err %s", r->status, r->err ? r->err : "-");
	}
	if (!r->done && taken < n && r->err == NULL) {
		fuzz_fail("stopped at %zu of %zu without an end or a reason", taken, n);
	}
}

/* Pieces: each a length byte (1..256) then that many octets. */
static void response(const uint8_t *p, size_t n)
{
	static uint8_t text[TEXT_MAX];
	size_t i = 0, len = 0, taken_whole, taken = 0, k, got;
	char why[OAUTH_WHY_MAX];

	http_resp_init(&cut);
	while (i < n) {
		k = (size_t)p[i++] + 1;
		if (k > n - i) {
			k = n - i;
		}
		memcpy(text + len, p + i, k);
		if (!cut.done && cut.err == NULL) {
			got = http_resp_feed(&cut, p + i, k);
			if (got < k && !cut.done && cut.err == NULL) {
				fuzz_fail("a piece of %zu taken only to %zu", k, got);
			}
			taken += got;
			if ((cut.done || cut.err != NULL) && http_resp_feed(&cut, p + i, k) != 0) {
				fuzz_fail("octets taken after the end");
			}
		}
		len += k;
		i += k;
	}
	if (!cut.done && cut.err == NULL) {
		(void)http_resp_eof(&cut);
		if (!cut.done && cut.err == NULL) {
			fuzz_fail("end of file gave neither an end nor a reason");
		}
	}
	http_resp_init(&whole);
	taken_whole = http_resp_feed(&whole, text, len);
	sound(&whole, taken_whole, len);
	if (!whole.done && whole.err == NULL) {
		(void)http_resp_eof(&whole);
	}
	same(&whole, &cut);
	if (whole.done && taken != taken_whole) {
		fuzz_fail("the response ends at %zu whole, at %zu in pieces", taken_whole, taken);
	}
	if (whole.done) {
		if (oauth_reply_read(&whole, &reply, why, sizeof why) == 0 &&
		    (reply.access_token[0] == '\0' || strlen(reply.access_token) > OAUTH_TOKEN_MAX ||
		     strchr(reply.access_token, ' ') != NULL)) {
			fuzz_fail("a usable reply with access token '%.40s'", reply.access_token);
		}
		if (strnlen(why, sizeof why) == sizeof why) {
			fuzz_fail("the reason is not terminated");
		}
	}
}

static void read_twice(const char *text, size_t len, unsigned size, int cut_ok)
{
	char *a = malloc(size), *b = malloc(size);
	struct json_field f[] = {
		{ "access_token", JSON_STRING, a, size, cut_ok, 0, 0 },
		{ "expires_in", JSON_NUMBER, NULL, 0, 0, 0, 0 },
	}, g[] = {
		{ "access_token", JSON_STRING, b, size, cut_ok, 0, 0 },
		{ "expires_in", JSON_NUMBER, NULL, 0, 0, 0, 0 },
	};
	const char *why1 = NULL, *why2 = NULL;
	int r1 = json_read(text, len, f, 2, &why1), r2 = json_read(text, len, g, 2, &why2);

	if (r1 != r2 || (r1 < 0 && strcmp(why1, why2) != 0)) {
		fuzz_fail("the same text read twice: %d/%d", r1, r2);
	}
	if (r1 == 0) {
		if (f[0].found && (strnlen(a, size) == size || strcmp(a, b) != 0)) {
			fuzz_fail("a string not terminated in its %u octets, or read otherwise", size);
		}
		if (f[1].found && (f[1].num < 0 || f[1].num > JSON_NUMBER_MAX || f[1].num != g[1].num)) {
			fuzz_fail("a number %lld out of its range", (long long)f[1].num);
		}
	} else if (f[0].found || f[1].found) {
		fuzz_fail("a refused text left a field found");
	}
	free(a);
	free(b);
}

static void json(const uint8_t *p, size_t n)
{
	static char text[TEXT_MAX + 4];
	const char *why;
	char small[8];
	struct json_field f = { "access_token", JSON_STRING, small, sizeof small, 0, 0, 0 };
	int r0;

	memcpy(text, p, n);
	read_twice(text, n, 8, 0);
	read_twice(text, n, 8, 1);
	read_twice(text, n, 4097, 0);
	/* White space around an object changes nothing. */
	r0 = json_read(text, n, &f, 1, &why);
	memmove(text + 2, text, n);
	text[0] = ' ';
	text[1] = '\n';
	text[n + 2] = '\t';
	if (json_read(text, n + 3, &f, 1, &why) != r0) {
		fuzz_fail("white space around the text changed the verdict");
	}
}

static int unhex(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void urls_and_forms(const uint8_t *p, size_t n)
{
	static char text[4096], form[3 * 4096 + 16], back[4096];
	char host[HTTP_HOST_MAX], path[HTTP_PATH_MAX];
	size_t off = 0, i, k = 0;
	uint16_t port;

	if (n >= sizeof text) {
		return;
	}
	memcpy(text, p, n);
	text[n] = '\0';
	if (http_url_parse(text, host, sizeof host, &port, path, sizeof path) == 0) {
		if (port == 0 || path[0] != '/' || host[0] == '\0' || strpbrk(host, "@:/ ") != NULL) {
			fuzz_fail("a URL taken apart into host '%s' port %u path '%s'", host, port, path);
		}
	}
	if (strlen(text) != n) {
		return;   /* a form value is a C string */
	}
	if (http_form_add(form, sizeof form, &off, "k", text) < 0 || off != strlen(form) ||
	    strncmp(form, "k=", 2) != 0) {
		fuzz_fail("form_add of %zu octets into %zu", n, sizeof form);
	}
	for (i = 2; i < off; i++) {
		if (form[i] == '%') {
			if (unhex(form[i + 1]) < 0 || unhex(form[i + 2]) < 0) {
				fuzz_fail("a bad escape in the form");
			}
			back[k++] = (char)(unhex(form[i + 1]) * 16 + unhex(form[i + 2]));
			i += 2;
		} else if (form[i] == '+') {
			back[k++] = ' ';
		} else if (strchr("&=%+", form[i]) != NULL || (unsigned char)form[i] <= ' ') {
			fuzz_fail("'%c' bare in a form value", form[i]);
		} else {
			back[k++] = form[i];
		}
	}
	if (k != n || memcmp(back, text, n) != 0) {
		fuzz_fail("the form value does not decode back");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size - 1 > TEXT_MAX) {
		return 0;
	}
	switch (data[0] % 3) {
	case 0:
		response(data + 1, size - 1);
		break;
	case 1:
		json(data + 1, size - 1);
		break;
	default:
		urls_and_forms(data + 1, size - 1);
		break;
	}
	return 0;
}
