/* https.h - one HTTPS POST at a time, on the loop: the OAuth2 token and
 * device authorization endpoints.
 *
 * The host name is resolved by dns.c, each address tried in turn, TLS 1.2
 * through tls.c's client session with the certificate verified against
 * ca_file and the host name (SNI sent), the request streamed out, the
 * response read by http.c (bounded, Content-Length or chunked).  Nothing
 * blocks; the whole exchange has HTTPS_MS.  Memory is fixed: one
 * connection, one request and one response buffer, in .bss.
 */
#ifndef PICOMAIL_HTTPS_H
#define PICOMAIL_HTTPS_H

#include <stddef.h>
#include "http.h"

#define HTTPS_MS      30000   /* resolve, connect, handshake, request, response */
#define HTTPS_REQ_MAX 8192    /* the request with its head */

/* Called once per request, from the loop: r is the complete response
 * (any status) and err NULL, or r NULL and err says what went wrong, in
 * words ("TLS failed: certificate not trusted by ca_file", "a body larger
 * than 16384 octets"...).  Both are valid only during the call. */
typedef void (*https_done_fn)(void *ctx, const struct http_resp *r, const char *err);

/* POSTs the form body (application/x-www-form-urlencoded) to url, an
 * https URL with a host name.  0 (done follows), or -1 with the reason in
 * err (another request in flight, a bad URL, a body too long). */
int https_post(const char *url, const char *body, https_done_fn done, void *ctx, char *err,
               size_t errlen);

/* Forgets the request in flight: done is not called. */
void https_cancel(void);

/* The test build's PICOMAIL_OAUTH_FAST: the exchange gets ms instead. */
void https_set_timeout(int64_t ms);

#endif
