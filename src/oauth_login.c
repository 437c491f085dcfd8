/* oauth_login.c - picomail oauth login: the one-time consent for the
 * smarthost's OAuth2 account from the device's console, by the device
 * authorization grant (RFC 8628), and the refresh token it yields written
 * into the smarthost_oauth file.
 *
 * It runs the daemon's own machinery on a loop of its own: dns.c for the
 * endpoints' names, https.c for the requests (verified against ca_file),
 * json.c for the answers. */
#include "oauth_login.h"
#include "command.h"
#include "conf.h"
#include "dns.h"
#include "https.h"
#include "io.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "oauth.h"
#include "oauth_file.h"
#include "random.h"
#include "tls.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GRANT_DEVICE   "urn:ietf:params:oauth:grant-type:device_code"
#define POLL_ERRORS    5        /* transport failures in a row while polling, then give up */
#define SLOW_DOWN_S    5        /* RFC 8628 3.5 */

static struct {
	const char *path;            /* smarthost_oauth */
	int64_t expires;             /* loop_now() when the code dies */
	unsigned interval;           /* seconds between polls */
	unsigned errors;
	int slot;                    /* the poll timer */
	int rc;                      /* the exit status, once done */
	char device_code[1024];
	char user_code[64];
	char uri[512];
	char uri_complete[512];
} lg;

static struct oauth_file file;
static struct oauth_reply reply;
static char form[2048];

static void finish(int rc)
{
	lg.rc = rc;
	memset(form, 0, sizeof form);
	memset(&reply, 0, sizeof reply);
	loop_stop();
}

/* Text from the network for the terminal: no control bytes. */
static const char *shown(const char *s, char *buf, size_t len)
{
	return cmd_printable(s, strlen(s), buf, len);
}

static int add(size_t *off, const char *key, const char *value)
{
	return http_form_add(form, sizeof form, off, key, value);
}

/* client_id, and client_secret where the provider needs one. */
static int add_client(size_t *off)
{
	return add(off, "client_id", file.client_id) < 0 ||
	       (file.client_secret[0] != '\0' && add(off, "client_secret", file.client_secret) < 0) ?
	       -1 : 0;
}

static void token_answer(void *ctx, const struct http_resp *r, const char *err);

static void poll_token(void *ctx, int revents)
{
	char err[256];
	size_t off = 0;

	(void)ctx;
	(void)revents;
	if (loop_now() >= lg.expires) {
		fprintf(stderr, "picomail: the code expired before the sign-in was done; run picomail "
		        "oauth login again\n");
		finish(EX_TEMPFAIL);
		return;
	}
	if (add(&off, "grant_type", GRANT_DEVICE) < 0 || add(&off, "device_code", lg.device_code) < 0 ||
	    add_client(&off) < 0) {
		fprintf(stderr, "picomail: the token request would be too long\n");
		finish(EX_SOFTWARE);
		return;
	}
	if (https_post(file.token_endpoint, form, token_answer, NULL, err, sizeof err) < 0) {
		fprintf(stderr, "picomail: %s: %s\n", file.token_endpoint, err);
		finish(EX_TEMPFAIL);
	}
	memset(form, 0, sizeof form);
}

static void again(void)
{
	loop_deadline(lg.slot, loop_now() + (int64_t)lg.interval * 1000);
}

/* RFC 8628 3.5: keep polling while the user has not decided, slower when
 * told to; any other error ends it. */
static void token_answer(void *ctx, const struct http_resp *r, const char *err)
{
	char why[OAUTH_WHY_MAX], show[OAUTH_WHY_MAX], e[256];
	int rc;

	(void)ctx;
	if (r == NULL) {
		fprintf(stderr, "picomail: %s: %s%s\n", file.token_endpoint, err,
		        ++lg.errors < POLL_ERRORS ? "; trying again" : "");
		if (lg.errors >= POLL_ERRORS) {
			finish(EX_TEMPFAIL);
			return;
		}
		again();
		return;
	}
	lg.errors = 0;
	if (oauth_reply_read(r, &reply, why, sizeof why) < 0) {
		if (strcmp(reply.error, "authorization_pending") == 0) {
			again();
			return;
		}
		if (strcmp(reply.error, "slow_down") == 0) {
			lg.interval += SLOW_DOWN_S;
			again();
			return;
		}
		fprintf(stderr, "picomail: %s: %s%s\n", file.token_endpoint, shown(why, show, sizeof show),
		        strcmp(reply.error, "access_denied") == 0 ||
		        strcmp(reply.error, "authorization_declined") == 0 ? " (the sign-in was refused)" :
		        strcmp(reply.error, "expired_token") == 0 ?
		        " (the code expired: run picomail oauth login again)" : "");
		finish(reply.error[0] == '\0' || strcmp(reply.error, "expired_token") == 0 ? EX_TEMPFAIL : 1);
		return;
	}
	if (reply.refresh_token[0] == '\0') {
		fprintf(stderr, "picomail: %s gave an access token but no refresh token; the scope "
		        "needs offline_access (Microsoft) or the client must ask for offline access\n",
		        file.token_endpoint);
		finish(1);
		return;
	}
	rc = oauth_file_save(lg.path, &file, reply.refresh_token, e, sizeof e);
	if (rc != 0) {
		fprintf(stderr, "picomail: the refresh token could not be saved: %s\n", e);
		finish(EX_IOERR);
		return;
	}
	printf("Signed in: the refresh token is in %s (mode 0600). The daemon uses it for its next "
	       "delivery through the smarthost.\n", lg.path);
	fflush(stdout);
	finish(EX_OK);
}

static void device_answer(void *ctx, const struct http_resp *r, const char *err)
{
	char a[600], b[600], c[80];
	struct json_field f[] = {
		{ "device_code", JSON_STRING, lg.device_code, sizeof lg.device_code, 0, 0, 0 },
		{ "user_code", JSON_STRING, lg.user_code, sizeof lg.user_code, 0, 0, 0 },
		{ "verification_uri", JSON_STRING, lg.uri, sizeof lg.uri, 0, 0, 0 },
		/* Google's spelling */
		{ "verification_url", JSON_STRING, lg.uri, sizeof lg.uri, 0, 0, 0 },
		{ "verification_uri_complete", JSON_STRING, lg.uri_complete, sizeof lg.uri_complete, 0,
		  0, 0 },
		{ "expires_in", JSON_NUMBER, NULL, 0, 0, 0, 0 },
		{ "interval", JSON_NUMBER, NULL, 0, 0, 0, 0 },
		{ "error", JSON_STRING, reply.error, sizeof reply.error, 1, 0, 0 },
		{ "error_description", JSON_STRING, reply.error_description,
		  sizeof reply.error_description, 1, 0, 0 },
	};
	const char *bad;
	int64_t life;

	(void)ctx;
	if (r == NULL) {
		fprintf(stderr, "picomail: %s: %s\n", file.device_endpoint, err);
		finish(EX_TEMPFAIL);
		return;
	}
	if (json_read((const char *)r->body, r->body_len, f, 9, &bad) < 0) {
		fprintf(stderr, "picomail: %s: HTTP %d, not the JSON of a device authorization "
		        "endpoint (%s)\n", file.device_endpoint, r->status, bad);
		finish(1);
		return;
	}
	if (r->status != 200 || reply.error[0] != '\0' || !f[0].found || !f[1].found ||
	    !(f[2].found || f[3].found) || !f[5].found) {
		fprintf(stderr, "picomail: %s: HTTP %d %s%s%s\n", file.device_endpoint, r->status,
		        reply.error[0] ? shown(reply.error, c, sizeof c) : "without a device code",
		        reply.error_description[0] ? ": " : "",
		        shown(reply.error_description, a, sizeof a));
		finish(1);
		return;
	}
	/* RFC 8628 3.2: 5 seconds when the server says no interval. */
	lg.interval = !f[6].found ? 5 : f[6].num < 1 ? 1 : f[6].num > 60 ? 60 : (unsigned)f[6].num;
	life = f[5].num > 3600 ? 3600 : f[5].num;
	lg.expires = loop_now() + life * 1000;
	printf("To let picomail send mail as %s, open\n\n    %s\n\nand enter the code\n\n    %s\n\n",
	       file.user, shown(lg.uri, a, sizeof a), shown(lg.user_code, c, sizeof c));
	if (lg.uri_complete[0] != '\0') {
		printf("(or open %s)\n", shown(lg.uri_complete, b, sizeof b));
	}
	printf("within %lld minutes. Waiting for the sign-in...\n", (long long)(life + 59) / 60);
	fflush(stdout);
	again();
}

/* The file must name everything the grant needs. */
static int settings_ok(const struct conf *c)
{
	const char *missing = file.device_endpoint[0] == '\0' ? "device_endpoint" :
	                      file.token_endpoint[0] == '\0' ? "token_endpoint" :
	                      file.client_id[0] == '\0' ? "client_id" :
	                      file.scope[0] == '\0' ? "scope" :
	                      file.user[0] == '\0' ? "user" : NULL;

	if (missing != NULL) {
		fprintf(stderr, "picomail: %s has no %s (README: \"OAuth2 smarthost\" has the settings of "
		        "Microsoft 365 and Google)\n", lg.path, missing);
		return -1;
	}
	if (c->ca_file[0] == '\0') {
		fprintf(stderr, "picomail: ca_file is not set: the endpoints' certificates cannot be "
		        "checked\n");
		return -1;
	}
	return 0;
}

/* Everything the requests need, as serve would set it up, for a client
 * only: no key of ours, one TLS session. */
static int start_machinery(const struct conf *c)
{
	static struct conf cc;
	char err[CONF_ERR_MAX];

	cc = *c;
	cc.tls_cert[0] = cc.tls_key[0] = '\0';
	cc.tls_sessions = 1;
	if (random_init() < 0 || tls_init(&cc, err, sizeof err) < 0 ||
	    tls_load_anchors(c->ca_file, err, sizeof err) < 0) {
		fprintf(stderr, "picomail: %s\n", err[0] ? err : "no random bytes");
		return -1;
	}
	if (loop_init(2 * DNS_QUERIES + 4) < 0 || dns_init(c) < 0) {
		fprintf(stderr, "picomail: cannot set up the event loop\n");
		return -1;
	}
	lg.slot = loop_add(-1, 0, poll_token, NULL);
	return lg.slot < 0 ? -1 : 0;
}

int oauth_login_main(int argc, char **argv)
{
	static struct conf c;
	char err[CONF_ERR_MAX];
	const char *conf;
	size_t off = 0;
	int n;

	if (cmd_tool_options(argc, argv, &conf, &n) < 0 || n != 1 || strcmp(argv[1], "login") != 0) {
		fprintf(stderr, "usage: picomail oauth login [-C FILE]\n");
		return EX_USAGE;
	}
	signal(SIGPIPE, SIG_IGN);
	log_open("picomail", 1);
	if (io_fault_init() < 0) {
		fprintf(stderr, "picomail: bad PICOMAIL_FAULT\n");
		return EX_USAGE;
	}
#ifdef PICOMAIL_TEST
	if (getenv("PICOMAIL_OAUTH_FAST") != NULL) {
		https_set_timeout(3000);
	}
#endif
	if (conf_load(&c, conf, err, sizeof err) < 0) {
		fprintf(stderr, "picomail: %s\n", err);
		return EX_CONFIG;
	}
	if (c.smarthost_oauth[0] == '\0') {
		fprintf(stderr, "picomail: %s sets no smarthost_oauth: nothing to sign in for\n", conf);
		return EX_CONFIG;
	}
	lg.path = c.smarthost_oauth;
	if (oauth_file_read(lg.path, &file, err, sizeof err) < 0) {
		fprintf(stderr, "picomail: %s\n", err);
		return EX_CONFIG;
	}
	if (settings_ok(&c) < 0) {
		return EX_CONFIG;
	}
	if (start_machinery(&c) < 0) {
		return EX_OSERR;
	}
	if (add(&off, "scope", file.scope) < 0 || add_client(&off) < 0 ||
	    https_post(file.device_endpoint, form, device_answer, NULL, err, sizeof err) < 0) {
		fprintf(stderr, "picomail: %s: %s\n", file.device_endpoint, err);
		return EX_TEMPFAIL;
	}
	memset(form, 0, sizeof form);
	lg.rc = EX_SOFTWARE;
	if (loop_run() < 0) {
		return EX_OSERR;
	}
	return lg.rc;
}
