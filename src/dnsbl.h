/* dnsbl.h - DNS blocklist lookups of a client address (RFC 5782).
 *
 * Each zone is asked for the A record of the reversed address under it
 * (4.3.2.1.zone, or 32 nibbles for IPv6) through the non-blocking
 * resolver.  An answer in 127.0.0.0/8 lists the client, except
 * 127.255.255.0/24, which lists like Spamhaus's use for "you may not ask
 * us" and is not a verdict on the client.  NXDOMAIN, no answer or a
 * failure lists nothing: a list that does not answer lets the mail through.
 */
#ifndef PICOMAIL_DNSBL_H
#define PICOMAIL_DNSBL_H

#include <stddef.h>
#include <sys/socket.h>
#include "conf.h"

struct dnsbl_check;

/* One zone's lookup in flight; ctx of its DNS callback. */
struct dnsbl_query {
	struct dnsbl_check *check;
	int handle;                      /* -1: done, or never started */
};

struct dnsbl_check {
	unsigned nzones;
	char zone[CONF_DNSBL_MAX][CONF_NAME_MAX];
	struct dnsbl_query q[CONF_DNSBL_MAX];
	unsigned pending;                /* lookups still in flight */
	int listed;                      /* the first zone that lists the client; -1: none */
	void (*done)(void *ctx);         /* called once when the last lookup ends */
	void *ctx;
};

/* Starts a lookup in every zone of c for the client at peer.  Returns
 * the number in flight; done(ctx) is called (from the loop) once none is
 * left, unless dnsbl_cancel comes first.  A lookup that cannot start (the
 * resolver's pool is full) is logged and lists nothing. */
unsigned dnsbl_start(struct dnsbl_check *d, const struct conf *c,
                     const struct sockaddr_storage *peer, void (*done)(void *ctx), void *ctx);

/* Forgets the lookups still in flight; with timed_out, logs each zone
 * that did not answer in time.  The number forgotten.  Safe to call at
 * any time, and again. */
unsigned dnsbl_cancel(struct dnsbl_check *d, int timed_out);

/* The query name for peer under zone ("4.3.2.1.zone"); -1 if peer is not
 * an IP address or the name does not fit.  For the unit tests too. */
int dnsbl_name(const struct sockaddr_storage *peer, const char *zone, char *out, size_t len);

#endif
