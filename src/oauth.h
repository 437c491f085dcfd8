/* oauth.h - the OAuth2 access token the relay client presents to the
 * smarthost (SASL XOAUTH2 and OAUTHBEARER, RFC 7628), kept fresh by the
 * daemon.
 *
 * The token comes from smarthost_token_command (a program run without a
 * shell, like the scanner, that prints it and perhaps its lifetime), or
 * from the refresh grant (RFC 6749 6) at the token endpoint of the
 * smarthost_oauth file, over HTTPS on the loop (https.c).  It lives in
 * memory until shortly before it expires; nothing blocks the loop.  A
 * failure is kept with its reason (which token, which endpoint, what was
 * said), logged once per change, and the next fetch waits (30 s doubling
 * to 30 min; a refused grant waits for the file to change, i.e. for
 * `picomail oauth login`).  A rotated refresh token is written to the file
 * before it is used.
 */
#ifndef PICOMAIL_OAUTH_H
#define PICOMAIL_OAUTH_H

#include <stddef.h>
#include <stdint.h>
#include "conf.h"
#include "http.h"
#include "oauth_file.h"

#define OAUTH_TOKEN_MAX 4096     /* an access token, in octets */
#define OAUTH_WHY_MAX   320      /* the reason of the last failure */

/* Start-up (serve and check): takes the OAuth2 settings of c and reads the
 * smarthost_oauth file (its mode too: 0600).  Nothing to do without
 * smarthost_auth_mech.  0, or -1 with the reason in err. */
int oauth_init(const struct conf *c, char *err, size_t errlen);

/* 1 when OAuth2 was set up at start. */
int oauth_enabled(void);

typedef void (*oauth_ready_fn)(void *ctx);

/* A token for a delivery.  1: one is fresh now; 0: it is being fetched,
 * and fn(ctx) is called from the loop once that ends, either way (call
 * again then); -1: none, oauth_why() says why (printable ASCII). */
int oauth_want(oauth_ready_fn fn, void *ctx);

/* Forgets every wait of ctx (a delivery that ends). */
void oauth_unwait(void *ctx);

/* The SASL initial response for mech (MECH_XOAUTH2, MECH_OAUTHBEARER) with
 * the token in force, base64 and NUL-terminated, its length in *len and
 * the token's generation in *gen; NULL when no token is fresh.  Valid
 * until the token changes (oauth_gen() differs). */
const char *oauth_sasl(int mech, size_t *len, unsigned *gen);

/* The generation of the token in force: it changes with every new token. */
unsigned oauth_gen(void);

/* The smarthost refused the token of generation gen: it is forgotten (the
 * next oauth_want fetches another), and the refusal logged once. */
void oauth_refused(unsigned gen, const char *reply);

/* Why the last fetch failed, or "" (printable ASCII). */
const char *oauth_why(void);

/* The account the token is for (the file's user). */
const char *oauth_user(void);

/* A token endpoint's answer (RFC 6749 5.1, 5.2), read from its JSON. */
struct oauth_reply {
	char access_token[OAUTH_TOKEN_MAX + 1];
	char refresh_token[OAUTH_REFRESH_MAX];
	char token_type[32];
	char error[64];
	char error_description[200];
	int64_t expires_in;              /* -1: not said */
};

/* Reads r (a complete response) into o.  0 when it holds a usable bearer
 * token; -1 with the reason in why (o->error set when the endpoint named
 * one: invalid_grant, authorization_pending...). */
int oauth_reply_read(const struct http_resp *r, struct oauth_reply *o, char *why, size_t len);

/* picomail status: "oauth.state: ..." and the other lines into buf; the
 * length written. */
size_t oauth_status(char *buf, size_t len);

#endif
