/* oauth.c - the smarthost's OAuth2 access token: fetched, cached,
 * refreshed, its failures kept apart from the queue. */
#include "oauth.h"
#include "base64.h"
#include "https.h"
#include "io.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "oauth_file.h"
#include "scanner.h"
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define COMMAND_MS   30000       /* the token command's time to answer (ms) */
#define COMMAND_OUT  (OAUTH_TOKEN_MAX + 64)
#define WAITERS_MAX  64          /* queue_runners at most */
#define BACKOFF_MIN  30          /* seconds before a failed fetch is tried again, */
#define BACKOFF_MAX  1800        /* doubling to this */
#define MARGIN_S     60          /* a token is renewed this long before it expires */

enum tok_state { T_NONE, T_EMPTY, T_FETCHING, T_VALID, T_FAILED };
static const char *const state_names[] = { "none", "empty", "fetching", "valid", "failed" };

enum source { SRC_COMMAND, SRC_REFRESH };

static struct {
	enum tok_state state;
	enum source source;
	char command[CONF_PATH_MAX];
	unsigned lifetime;               /* seconds, when the command says none */
	char path[CONF_PATH_MAX];        /* smarthost_oauth */
	char host[CONF_NAME_MAX];        /* the smarthost, for OAUTHBEARER */
	unsigned port;
	unsigned gen;
	size_t len;
	int64_t expires;                 /* loop_now() ms when it expires */
	int64_t fresh_until;             /* and when it is renewed */
	int64_t retry_at;                /* no fetch before (ms) */
	unsigned backoff;                /* seconds */
	int permanent;                   /* wait for the file to change */
	char why[OAUTH_WHY_MAX];
	char logged[OAUTH_WHY_MAX];      /* the failure last logged */
	uint64_t fetches, failures, refused, rotations;
	int unsaved;                     /* a rotated refresh token not yet on disk */
	char save_err[OAUTH_WHY_MAX];
	unsigned nwait;
	struct { oauth_ready_fn fn; void *ctx; } wait[WAITERS_MAX];
} tk;

/* The test build takes PICOMAIL_OAUTH_FAST=1: a failed fetch is tried
 * again after 1 s (doubling to 4 s) and a program or an endpoint gets 3 s,
 * so that tests need not wait half a minute. */
static unsigned backoff_min = BACKOFF_MIN, backoff_max = BACKOFF_MAX;
static int64_t command_ms = COMMAND_MS;

static char token[OAUTH_TOKEN_MAX + 1];
static struct oauth_file file;

/* The SASL response of the token in force, per mechanism, built once a
 * token. */
static char raw[OAUTH_TOKEN_MAX + 3 * OAUTH_USER_MAX + CONF_NAME_MAX + 64];
static char sasl[(sizeof raw + 2) / 3 * 4 + 1];
static unsigned sasl_gen;
static int sasl_mech;
static size_t sasl_len;

/* The token command's run. */
static struct {
	int handle;       /* scanner.c's, or -1 */
	int fd, slot;
	int exited, status, eof;
	size_t n;
	char out[COMMAND_OUT + 1];
} cmd;   /* descriptors -1 from oauth_init: in .bss, not in the binary */

int oauth_enabled(void)
{
	return tk.state != T_NONE;
}

const char *oauth_why(void)
{
	return tk.why;
}

const char *oauth_user(void)
{
	return file.user;
}

unsigned oauth_gen(void)
{
	return tk.gen;
}

/* ---- state changes ----------------------------------------------------- */

static void log_start(struct log_kv *l, const char *state)
{
	log_kv_start(l, "oauth");
	log_kv_str(l, "state", state);
	log_kv_str(l, "user", file.user);
	log_kv_str(l, "source", tk.source == SRC_COMMAND ? "command" : "refresh");
}

static void notify(void)
{
	struct { oauth_ready_fn fn; void *ctx; } w[WAITERS_MAX];
	unsigned i, n = tk.nwait;

	/* The callbacks may wait again: they go into a fresh list. */
	memcpy(w, tk.wait, n * sizeof w[0]);
	tk.nwait = 0;
	for (i = 0; i < n; i++) {
		w[i].fn(w[i].ctx);
	}
}

/* A fetch brought a token good for lifetime seconds. */
static void fetch_ok(const char *tok, size_t len, unsigned lifetime)
{
	struct log_kv l;
	unsigned margin = lifetime >= 4 * MARGIN_S ? MARGIN_S : lifetime / 4;
	int was_failing = tk.logged[0] != '\0' || tk.gen == 0;

	memcpy(token, tok, len);
	token[len] = '\0';
	tk.len = len;
	tk.gen++;
	tk.expires = loop_now() + (int64_t)lifetime * 1000;
	tk.fresh_until = tk.expires - (int64_t)margin * 1000;
	tk.state = T_VALID;
	tk.backoff = 0;
	tk.permanent = 0;
	tk.why[0] = '\0';
	tk.logged[0] = '\0';
	tk.fetches++;
	if (was_failing) {
		log_start(&l, "valid");
		log_kv_ms(&l, "expires", (int64_t)lifetime * 1000);
		log_kv_end(&l, LOG_INFO);
	}
	notify();
}

static void fetch_failed(int permanent, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A fetch failed: the reason is kept for deferrals and status, logged
 * when it is new, and the next fetch waits. */
static void fetch_failed(int permanent, const char *fmt, ...)
{
	char buf[OAUTH_WHY_MAX];
	struct log_kv l;
	va_list ap;
	size_t i;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	/* What an endpoint or a program said reaches envelopes and bounces:
	 * printable ASCII only. */
	for (i = 0; buf[i] != '\0'; i++) {
		if ((unsigned char)buf[i] < 0x20 || (unsigned char)buf[i] > 0x7e) {
			buf[i] = '?';
		}
	}
	memcpy(tk.why, buf, i + 1);
	tk.state = T_FAILED;
	tk.permanent = permanent;
	tk.failures++;
	tk.backoff = tk.backoff == 0 ? backoff_min : tk.backoff * 2 > backoff_max ? backoff_max :
	             tk.backoff * 2;
	tk.retry_at = loop_now() + (int64_t)tk.backoff * 1000;
	if (strcmp(tk.why, tk.logged) != 0) {
		memcpy(tk.logged, tk.why, sizeof tk.logged);
		log_start(&l, "failed");
		log_kv_str(&l, "error", tk.why);
		log_kv_ms(&l, "retry", permanent ? 0 : (int64_t)tk.backoff * 1000);
		log_kv_end(&l, LOG_WARNING);
	}
	notify();
}

/* RFC 6750 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" /
 * "+" / "/" ) *"=".  Nothing else may reach the SMTP line. */
static int token_ok(const char *t, size_t n)
{
	size_t i = 0;

	for (; i < n && (((t[i] | 0x20) >= 'a' && (t[i] | 0x20) <= 'z') ||
	                 (t[i] >= '0' && t[i] <= '9') || strchr("-._~+/", t[i]) != NULL); i++) {
	}
	if (i == 0) {
		return 0;
	}
	while (i < n && t[i] == '=') {
		i++;
	}
	return i == n;
}

/* ---- the token command ----------------------------------------------------- */

static void cmd_close(void)
{
	if (cmd.handle >= 0) {
		scanner_cancel(cmd.handle);
		cmd.handle = -1;
	}
	if (cmd.slot >= 0) {
		loop_del(cmd.slot);
		cmd.slot = -1;
	}
	if (cmd.fd >= 0) {
		io_close(cmd.fd);
		cmd.fd = -1;
	}
}

/* The program's words up to the first space, for the reasons. */
static int prog_len(void)
{
	return (int)strcspn(tk.command, " ");
}

/* Both the output's end and the exit status are in: the token, or why not. */
static void cmd_finish(void)
{
	char *nl, *second;
	size_t len;
	long life = (long)tk.lifetime;

	cmd_close();
	cmd.out[cmd.n] = '\0';
	if (cmd.status != 0) {
		memset(cmd.out, 0, sizeof cmd.out);
		fetch_failed(0, "token command %.*s %s %d", prog_len(), tk.command,
		             cmd.status < 0 ? "could not run or was killed:" : "exited with status",
		             cmd.status);
		return;
	}
	nl = strchr(cmd.out, '\n');
	second = nl != NULL ? nl + 1 : NULL;
	len = nl != NULL ? (size_t)(nl - cmd.out) : cmd.n;
	if (len > 0 && cmd.out[len - 1] == '\r') {
		len--;
	}
	if (second != NULL && *second != '\0' && *second != '\n') {
		char *end;

		errno = 0;
		life = strtol(second, &end, 10);
		if (errno != 0 || end == second || (*end != '\0' && *end != '\n' && *end != '\r') ||
		    life < 1 || life > 86400 * 366) {
			memset(cmd.out, 0, sizeof cmd.out);
			fetch_failed(0, "token command %.*s: its second line is not a lifetime in "
			             "seconds", prog_len(), tk.command);
			return;
		}
	}
	if (len == 0 || len > OAUTH_TOKEN_MAX || !token_ok(cmd.out, len)) {
		memset(cmd.out, 0, sizeof cmd.out);
		fetch_failed(0, "token command %.*s printed %s", prog_len(), tk.command,
		             len == 0 ? "no token" : len > OAUTH_TOKEN_MAX ? "a token that is too long" :
		             "characters a bearer token cannot hold (RFC 6750)");
		return;
	}
	fetch_ok(cmd.out, len, (unsigned)life);
	memset(cmd.out, 0, sizeof cmd.out);
}

static void cmd_exited(void *ctx, int status)
{
	(void)ctx;
	cmd.handle = -1;   /* reaped: nothing to kill */
	cmd.exited = 1;
	cmd.status = status;
	if (cmd.eof) {
		cmd_finish();
	}
}

static void cmd_io(void *ctx, int revents)
{
	ssize_t r;

	(void)ctx;
	if (revents & LOOP_TIMEOUT) {
		cmd_close();
		memset(cmd.out, 0, sizeof cmd.out);
		fetch_failed(0, "token command %.*s did not finish within %d s", prog_len(),
		             tk.command, (int)(command_ms / 1000));
		return;
	}
	for (;;) {
		r = io_read(cmd.fd, cmd.out + cmd.n, sizeof cmd.out - 1 - cmd.n);
		if (r > 0) {
			cmd.n += (size_t)r;
			if (cmd.n == sizeof cmd.out - 1) {
				cmd_close();
				memset(cmd.out, 0, sizeof cmd.out);
				fetch_failed(0, "token command %.*s printed more than %d octets",
				             prog_len(), tk.command, COMMAND_OUT);
				return;
			}
			continue;
		}
		if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
			break;
		}
		return;   /* nothing more yet */
	}
	cmd.eof = 1;
	loop_events(cmd.slot, 0);
	if (cmd.exited) {
		cmd_finish();
	}
}

static void cmd_start(void)
{
	int p[2];

	cmd.n = 0;
	cmd.eof = cmd.exited = 0;
	cmd.status = -1;
	if (pipe2(p, O_CLOEXEC) < 0) {
		fetch_failed(0, "token command %.*s: pipe: %s", prog_len(), tk.command, strerror(errno));
		return;
	}
	(void)fcntl(p[0], F_SETFL, O_NONBLOCK);
	cmd.fd = p[0];
	cmd.handle = scanner_run(tk.command, NULL, p[1], cmd_exited, NULL);
	io_close(p[1]);
	if (cmd.handle < 0) {
		int e = errno;

		cmd_close();
		fetch_failed(0, "token command %.*s: %s", prog_len(), tk.command,
		             e == EAGAIN ? "no process slot free" : strerror(e));
		return;
	}
	cmd.slot = loop_add(cmd.fd, POLLIN, cmd_io, NULL);
	if (cmd.slot < 0) {
		cmd_close();
		fetch_failed(0, "token command %.*s: no loop slot free", prog_len(), tk.command);
		return;
	}
	loop_deadline(cmd.slot, loop_now() + command_ms);
}

/* ---- the refresh grant ------------------------------------------------------- */

/* The form body, then the endpoint's answer: both hold secrets, cleared
 * after use. */
static char form[OAUTH_REFRESH_MAX * 3 / 2 + 1536];
static struct oauth_reply reply;

static int printable(const char *s)
{
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f) {
			return 0;
		}
	}
	return 1;
}

int oauth_reply_read(const struct http_resp *r, struct oauth_reply *o, char *why, size_t len)
{
	struct json_field f[] = {
		{ "access_token", JSON_STRING, o->access_token, sizeof o->access_token, 0, 0, 0 },
		{ "refresh_token", JSON_STRING, o->refresh_token, sizeof o->refresh_token, 0, 0, 0 },
		{ "token_type", JSON_STRING, o->token_type, sizeof o->token_type, 1, 0, 0 },
		{ "error", JSON_STRING, o->error, sizeof o->error, 1, 0, 0 },
		{ "error_description", JSON_STRING, o->error_description, sizeof o->error_description, 1,
		  0, 0 },
		{ "expires_in", JSON_NUMBER, NULL, 0, 0, 0, 0 },
	};
	const char *bad;

	o->expires_in = -1;
	if (json_read((const char *)r->body, r->body_len, f, 6, &bad) < 0) {
		snprintf(why, len, "HTTP %d with a body that is not the JSON of a token endpoint (%s)",
		         r->status, bad);
		return -1;
	}
	if (f[5].found) {
		o->expires_in = f[5].num;
	}
	/* The first line of the description: Microsoft adds a trace id and a
	 * time on lines of their own, which would make every failure new. */
	o->error_description[strcspn(o->error_description, "\r\n")] = '\0';
	if (o->error[0] != '\0' || r->status != 200) {
		snprintf(why, len, "HTTP %d %s%s%s", r->status, o->error[0] ? o->error : "without an error",
		         o->error_description[0] ? ": " : "", o->error_description);
		return -1;
	}
	if (o->access_token[0] == '\0' || !token_ok(o->access_token, strlen(o->access_token))) {
		snprintf(why, len, "HTTP 200 without %s", o->access_token[0] ? "a usable access_token "
		         "(RFC 6750 characters)" : "an access_token");
		return -1;
	}
	if (f[2].found && strcasecmp(o->token_type, "Bearer") != 0) {
		snprintf(why, len, "a token of type %s, not Bearer", o->token_type);
		return -1;
	}
	if (!printable(o->refresh_token)) {
		snprintf(why, len, "a refresh_token with spaces or control characters");
		return -1;
	}
	return 0;
}

/* Refused grants that no retry mends: a new consent is needed (RFC 6749
 * 5.2), or the client's settings are wrong. */
static int permanent(const char *error)
{
	static const char *const words[] = { "invalid_grant", "invalid_client",
	                                     "unauthorized_client", "unsupported_grant_type",
	                                     "invalid_scope", "invalid_request" };
	unsigned i;

	for (i = 0; i < sizeof words / sizeof words[0]; i++) {
		if (strcmp(error, words[i]) == 0) {
			return 1;
		}
	}
	return 0;
}

/* A refresh token the provider rotated goes to the file before it is
 * used; if it cannot, it is kept in memory (the old one may be dead
 * already), written again before the next refresh, and said. */
static void save_refresh(const char *rt)
{
	char err[OAUTH_WHY_MAX];
	struct log_kv l;
	int e = oauth_file_save(tk.path, &file, rt, err, sizeof err);

	if (e != 0 && rt != file.refresh_token) {
		snprintf(file.refresh_token, sizeof file.refresh_token, "%s", rt);
	}
	tk.unsaved = e != 0;
	if (e == 0) {
		tk.save_err[0] = '\0';
		log_start(&l, "rotated");
		log_kv_str(&l, "file", tk.path);
		log_kv_end(&l, LOG_INFO);
		return;
	}
	if (strcmp(err, tk.save_err) != 0) {
		snprintf(tk.save_err, sizeof tk.save_err, "%s", err);
		log_start(&l, "unsaved");
		log_kv_str(&l, "file", tk.path);
		log_kv_str(&l, "error", err);
		log_kv_end(&l, LOG_ERR);
	}
}

static void refresh_done(void *ctx, const struct http_resp *r, const char *err)
{
	char why[OAUTH_WHY_MAX];
	int64_t life;

	(void)ctx;
	memset(form, 0, sizeof form);
	if (r == NULL) {
		fetch_failed(0, "refresh at %s: %s", file.token_endpoint, err);
		return;
	}
	if (oauth_reply_read(r, &reply, why, sizeof why) < 0) {
		fetch_failed(permanent(reply.error), "refresh at %s: %s", file.token_endpoint, why);
		memset(&reply, 0, sizeof reply);
		return;
	}
	if (reply.refresh_token[0] != '\0' && strcmp(reply.refresh_token, file.refresh_token) != 0) {
		tk.rotations++;
		save_refresh(reply.refresh_token);
	}
	/* RFC 6749 5.1: expires_in is recommended; without it, an hour.
	 * Never less than 2 s, or every delivery would fetch anew. */
	life = reply.expires_in < 0 ? 3600 : reply.expires_in < 2 ? 2 : reply.expires_in;
	fetch_ok(reply.access_token, strlen(reply.access_token), (unsigned)life);
	memset(&reply, 0, sizeof reply);
}

static void refresh_start(void)
{
	char err[OAUTH_WHY_MAX];
	size_t off = 0;

	/* picomail oauth login (or an editor) wrote the file: it wins. */
	if (oauth_file_changed(tk.path, &file) == 1) {
		if (oauth_file_read(tk.path, &file, err, sizeof err) < 0) {
			fetch_failed(1, "%s", err);
			return;
		}
		tk.unsaved = 0;
	}
	if (tk.unsaved) {
		save_refresh(file.refresh_token);
	}
	if (file.refresh_token[0] == '\0') {
		fetch_failed(1, "no refresh_token in %s yet: run picomail oauth login", tk.path);
		return;
	}
	if (http_form_add(form, sizeof form, &off, "grant_type", "refresh_token") < 0 ||
	    http_form_add(form, sizeof form, &off, "refresh_token", file.refresh_token) < 0 ||
	    http_form_add(form, sizeof form, &off, "client_id", file.client_id) < 0 ||
	    (file.client_secret[0] != '\0' &&
	     http_form_add(form, sizeof form, &off, "client_secret", file.client_secret) < 0) ||
	    (file.scope[0] != '\0' && http_form_add(form, sizeof form, &off, "scope", file.scope) < 0)) {
		memset(form, 0, sizeof form);
		fetch_failed(1, "refresh at %s: the request is too long", file.token_endpoint);
		return;
	}
	if (https_post(file.token_endpoint, form, refresh_done, NULL, err, sizeof err) < 0) {
		memset(form, 0, sizeof form);
		fetch_failed(0, "refresh at %s: %s", file.token_endpoint, err);
	}
}

/* ---- what the relay client asks ---------------------------------------------- */

static void fetch_start(void)
{
	tk.state = T_FETCHING;
	if (tk.source == SRC_COMMAND) {
		cmd_start();
	} else {
		refresh_start();
	}
}

static int add_waiter(oauth_ready_fn fn, void *ctx)
{
	if (fn == NULL) {
		return 0;
	}
	if (tk.nwait == WAITERS_MAX) {
		snprintf(tk.why, sizeof tk.why, "too many deliveries waiting for the token");
		return -1;
	}
	tk.wait[tk.nwait].fn = fn;
	tk.wait[tk.nwait].ctx = ctx;
	tk.nwait++;
	return 0;
}

int oauth_want(oauth_ready_fn fn, void *ctx)
{
	int64_t now = loop_now();

	switch (tk.state) {
	case T_NONE:
		snprintf(tk.why, sizeof tk.why, "OAuth2 was not set up when the daemon started "
		         "(smarthost_auth_mech takes effect on a restart)");
		return -1;
	case T_VALID:
		if (now < tk.fresh_until) {
			return 1;
		}
		break;
	case T_FETCHING:
		return add_waiter(fn, ctx);
	case T_FAILED:
		if (tk.permanent && oauth_file_changed(tk.path, &file) == 1) {
			char err[OAUTH_WHY_MAX];

			/* picomail oauth login (or an edit) made it anew. */
			if (oauth_file_read(tk.path, &file, err, sizeof err) < 0) {
				fetch_failed(1, "%s", err);
				return -1;
			}
			tk.retry_at = 0;
			tk.backoff = 0;
		} else if (tk.permanent || now < tk.retry_at) {
			return -1;
		}
		break;
	case T_EMPTY:
		break;
	}
	fetch_start();
	if (tk.state == T_FETCHING) {
		return add_waiter(fn, ctx);
	}
	return tk.state == T_VALID ? 1 : -1;
}

void oauth_unwait(void *ctx)
{
	unsigned i, k;

	for (i = k = 0; i < tk.nwait; i++) {
		if (tk.wait[i].ctx != ctx) {
			tk.wait[k++] = tk.wait[i];
		}
	}
	tk.nwait = k;
}

void oauth_refused(unsigned gen, const char *reply)
{
	struct log_kv l;

	if (gen != tk.gen || tk.state != T_VALID) {
		return;   /* an older token, forgotten already */
	}
	tk.state = T_EMPTY;
	tk.refused++;
	memset(token, 0, sizeof token);
	log_start(&l, "refused");
	log_kv_str(&l, "relay", tk.host);
	log_kv_str(&l, "reply", reply);
	log_kv_end(&l, LOG_WARNING);
}

/* Appends s to raw at *o, with ',' and '=' as RFC 5801 5.1 spells them in
 * a saslname when gs2 is set. */
static void raw_put(size_t *o, const char *s, int gs2)
{
	for (; *s != '\0'; s++) {
		const char *rep = gs2 && *s == ',' ? "=2C" : gs2 && *s == '=' ? "=3D" : NULL;

		if (rep != NULL) {
			memcpy(raw + *o, rep, 3);
			*o += 3;
		} else {
			raw[(*o)++] = *s;
		}
	}
}

const char *oauth_sasl(int mech, size_t *len, unsigned *gen)
{
	char port[8];
	size_t o = 0;
	long n;

	if (tk.state != T_VALID) {
		return NULL;
	}
	if (sasl_gen != tk.gen || sasl_mech != mech || sasl_len == 0) {
		/* The sizes of raw and sasl hold the longest user, host and token. */
		if (mech == MECH_OAUTHBEARER) {
			/* RFC 7628 3.1: gs2 header, then key=value pairs. */
			snprintf(port, sizeof port, "%u", tk.port);
			raw_put(&o, "n,a=", 0);
			raw_put(&o, file.user, 1);
			raw_put(&o, ",\001host=", 0);
			raw_put(&o, tk.host, 0);
			raw_put(&o, "\001port=", 0);
			raw_put(&o, port, 0);
			raw_put(&o, "\001auth=Bearer ", 0);
		} else {
			raw_put(&o, "user=", 0);
			raw_put(&o, file.user, 0);
			raw_put(&o, "\001auth=Bearer ", 0);
		}
		memcpy(raw + o, token, tk.len);
		o += tk.len;
		raw[o++] = '\001';
		raw[o++] = '\001';
		n = base64_encode((const unsigned char *)raw, o, sasl, sizeof sasl);
		memset(raw, 0, o);
		if (n < 0) {
			return NULL;
		}
		sasl_len = (size_t)n;
		sasl_gen = tk.gen;
		sasl_mech = mech;
	}
	*len = sasl_len;
	*gen = tk.gen;
	return sasl;
}

size_t oauth_status(char *buf, size_t len)
{
	int64_t left = tk.state == T_VALID ? (tk.expires - loop_now()) / 1000 : 0;
	int n;

	if (tk.state == T_NONE) {
		n = snprintf(buf, len, "oauth.state: none\n");
	} else {
		n = snprintf(buf, len, "oauth.state: %s\noauth.source: %s\noauth.expires_in: %" PRId64
		             "\noauth.fetches: %" PRIu64 "\noauth.failures: %" PRIu64
		             "\noauth.refused: %" PRIu64 "\noauth.rotations: %" PRIu64
		             "\noauth.refresh_saved: %s\noauth.error: %s\n",
		             tk.state == T_VALID && left <= 0 ? "expired" : state_names[tk.state],
		             tk.source == SRC_COMMAND ? "command" : "refresh", left > 0 ? left : 0,
		             tk.fetches, tk.failures, tk.refused, tk.rotations,
		             tk.unsaved ? tk.save_err : "yes", tk.why);
	}
	return n < 0 || (size_t)n >= len ? 0 : (size_t)n;
}

/* ---- start-up ----------------------------------------------------------------- */

int oauth_init(const struct conf *c, char *err, size_t errlen)
{
	memset(&tk, 0, sizeof tk);
	tk.state = T_NONE;
	cmd.handle = cmd.fd = cmd.slot = -1;
#ifdef PICOMAIL_TEST
	if (getenv("PICOMAIL_OAUTH_FAST") != NULL) {
		backoff_min = 1;
		backoff_max = 4;
		command_ms = 3000;
		https_set_timeout(3000);
	}
#endif
	if (c->nauth_mech == 0) {
		return 0;
	}
	if (oauth_file_read(c->smarthost_oauth, &file, err, errlen) < 0) {
		return -1;
	}
	if (file.mode & 077) {
		snprintf(err, errlen, "smarthost_oauth %s is mode %04o, but it holds secrets: chmod 600 %s",
		         c->smarthost_oauth, (unsigned)(file.mode & 07777), c->smarthost_oauth);
		return -1;
	}
	if (file.user[0] == '\0') {
		snprintf(err, errlen, "smarthost_oauth %s: no user (the account the token is for)",
		         c->smarthost_oauth);
		return -1;
	}
	snprintf(tk.path, sizeof tk.path, "%s", c->smarthost_oauth);
	snprintf(tk.command, sizeof tk.command, "%s", c->smarthost_token_command);
	snprintf(tk.host, sizeof tk.host, "%s", c->smarthost.host);
	tk.port = c->smarthost.port;
	tk.lifetime = c->smarthost_token_lifetime;
	tk.source = c->smarthost_token_command[0] != '\0' ? SRC_COMMAND : SRC_REFRESH;
	tk.state = T_EMPTY;
	if (tk.source == SRC_COMMAND) {
		return 0;
	}
	if (file.token_endpoint[0] == '\0' || file.client_id[0] == '\0') {
		snprintf(err, errlen, "smarthost_oauth %s: the refresh grant needs token_endpoint and "
		         "client_id (or set smarthost_token_command)", c->smarthost_oauth);
		return -1;
	}
	if (tls_load_anchors(c->ca_file, err, errlen) < 0) {
		return -1;
	}
	if (file.refresh_token[0] == '\0') {
		/* Not an error: the consent is given once the daemon runs.  Mail
		 * waits (4xx) until the file has one. */
		tk.state = T_FAILED;
		tk.permanent = 1;
		snprintf(tk.why, sizeof tk.why, "no refresh_token in %s yet: run picomail oauth login",
		         tk.path);
	}
	return 0;
}
