/* dns.h - a non-blocking stub resolver for MX, A and AAAA on the loop.
 *
 * Queries go over UDP to one recursive resolver: `resolver` of the
 * configuration, else the first "nameserver" of /etc/resolv.conf (re-read
 * when it changes, since a router writes it once its uplink is up), else
 * 127.0.0.1:53.  Each query in flight has its own socket connected to the
 * resolver, random ids, 3 tries of 2 s.  A reply counts only when its id,
 * question name, type and class are those asked; anything else is ignored.
 * Only the answer section is read (never authority or additional records).
 * Queries carry no EDNS0, so replies are at most 512 octets (RFC 1035
 * section 4.2.1), which holds a dozen MX records or some thirty addresses.
 *
 * Memory: DNS_QUERIES queries from one pool taken at dns_init; each query in
 * flight holds one loop slot and one descriptor, so the caller's loop_init
 * must count DNS_QUERIES slots for the resolver.
 */
#ifndef PICOMAIL_DNS_H
#define PICOMAIL_DNS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conf.h"

#define DNS_NAME_MAX 255       /* a host name as text is at most 253 octets */
#define DNS_MX_MAX   16
#define DNS_ADDR_MAX 16
#define DNS_QUERIES  16        /* queries in flight at once (relay and blocklists) */
#define DNS_TRY_MS   2000      /* per try */
#define DNS_TRIES    3
#define DNS_CNAME_MAX 8        /* CNAME hops followed inside one answer */

#define DNS_TYPE_A     1
#define DNS_TYPE_CNAME 5
#define DNS_TYPE_MX    15
#define DNS_TYPE_AAAA  28

enum dns_status { DNS_OK, DNS_NXDOMAIN, DNS_NODATA, DNS_TEMPFAIL };

struct dns_result {
	enum dns_status status;
	/* MX query: by preference, answer order kept among equal preferences
	 * (RFC 5321 section 5.1 lets the client shuffle those; the caller may).
	 * Host names are lower case, without the final dot.  With more than
	 * DNS_MX_MAX records, the DNS_MX_MAX most preferred are kept. */
	unsigned nmx;
	struct { unsigned pref; char host[DNS_NAME_MAX + 1]; } mx[DNS_MX_MAX];
	/* Address query: every A (AF_INET) first, then every AAAA (AF_INET6),
	 * port 0, at most DNS_ADDR_MAX in all. */
	unsigned naddr;
	struct sockaddr_storage addr[DNS_ADDR_MAX];
	/* RFC 7505: the domain's only MX is "." (status DNS_OK, nmx 0): it
	 * accepts no mail.  A "." among other MX records is dropped. */
	int null_mx;
};

/* Called once per query that was not cancelled, from inside the loop and
 * never from within dns_query_*.  r is valid only during the call.  The
 * callback may start or cancel queries. */
typedef void (*dns_done_fn)(void *ctx, const struct dns_result *r);

/* Start-up: takes the query pool and chooses the resolver as
 * dns_reconfigure does (query ids come from random.c, set up before).
 * 0 or -1.  Calling it again only reconfigures. */
int dns_init(const struct conf *c);

/* SIGHUP: the resolver of the new configuration, for queries started from
 * now on (those in flight finish with the resolver they asked).  With no
 * `resolver`, /etc/resolv.conf is read again. */
void dns_reconfigure(const struct conf *c);

/* MX records of domain.  A handle >= 0, or -1 when no query can be started
 * now (pool, loop slots or descriptors exhausted): the caller retries later.
 * A name that cannot exist in the DNS (bad syntax, too long) completes as
 * DNS_NXDOMAIN, through the loop like any answer.  No search list: the name
 * is taken as fully qualified. */
int dns_query_mx(const char *domain, dns_done_fn fn, void *ctx);

/* A and AAAA of host, both queries in flight at once; the result has A
 * first.  Once one family has answered with addresses, the other gets the
 * rest of the current try and no more.  An address literal ("1.2.3.4",
 * "[1.2.3.4]", "[IPv6:2001:db8::1]", "2001:db8::1") completes with that
 * address without the network, through the loop.  Handle or -1 as above. */
int dns_query_addr(const char *host, dns_done_fn fn, void *ctx);

/* Only the A records of name, no address literal: a DNS blocklist's
 * answer.  Handle or -1 as above. */
int dns_query_a(const char *name, dns_done_fn fn, void *ctx);

/* Forgets the query: its callback is never called after this.  A handle
 * that already completed or was cancelled is ignored (handles carry a
 * generation, so a stale one never cancels a newer query). */
void dns_cancel(int handle);

/* Queries in flight, and the pool's size (for `picomail status`). */
unsigned dns_used(void);
unsigned dns_size(void);

/* ---- Pure functions, exposed for the unit tests and the fuzzer. ---- */

/* A query for name (text, an optional final dot) and qtype, class IN, RD
 * set, into buf.  The number of bytes, or -1 for a bad name or a short buf. */
int dns_build_query(unsigned char *buf, size_t len, uint16_t id, const char *name,
                    uint16_t qtype);

/* Parses a reply to the query (id, name, qtype; qtype A, AAAA or MX).
 * Returns -1, leaving r untouched, when the packet is malformed or answers
 * another question: the caller ignores it.  Otherwise 0 and r->status for
 * this reply: rcode 3 is DNS_NXDOMAIN, any other non-zero rcode (SERVFAIL,
 * REFUSED...) DNS_TEMPFAIL, NOERROR without records of qtype DNS_NODATA.
 * CNAMEs are followed inside the answer section, DNS_CNAME_MAX hops at
 * most.  MX: r->nmx, r->mx and r->null_mx are set.  A/AAAA: addresses are
 * appended after r->naddr (up to DNS_ADDR_MAX); nothing else changes.
 * A truncated (TC) reply is not retried over TCP: its complete records are
 * the answer, and DNS_TEMPFAIL when none is of use. */
int dns_parse_reply(const unsigned char *pkt, size_t len, uint16_t id, const char *name,
                    uint16_t qtype, struct dns_result *r);

/* The first usable "nameserver" of a resolv.conf text (len bytes), port 53.
 * 0, or -1 when there is none. */
int dns_parse_resolv_conf(const char *text, size_t len, struct sockaddr_storage *ss,
                          socklen_t *sslen);

#endif
