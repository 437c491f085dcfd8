/* dnsbl.c - DNS blocklist lookups of a client address (RFC 5782). */
#include "dnsbl.h"
#include "dns.h"
#include "log.h"

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

int dnsbl_name(const struct sockaddr_storage *peer, const char *zone, char *out, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *a;
	size_t n = 0;
	int i, w;

	if (peer->ss_family == AF_INET ||
	    (peer->ss_family == AF_INET6 &&
	     IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)peer)->sin6_addr))) {
		a = peer->ss_family == AF_INET ?
		    (const unsigned char *)&((const struct sockaddr_in *)peer)->sin_addr :
		    ((const struct sockaddr_in6 *)peer)->sin6_addr.s6_addr + 12;
		w = snprintf(out, len, "%u.%u.%u.%u.%s", a[3], a[2], a[1], a[0], zone);
		return w < 0 || (size_t)w >= len ? -1 : 0;
	}
	if (peer->ss_family != AF_INET6 || len < 64 + strlen(zone) + 1) {
		return -1;
	}
	/* RFC 5782 2.4: nibbles, lowest first. */
	a = ((const struct sockaddr_in6 *)peer)->sin6_addr.s6_addr;
	for (i = 15; i >= 0; i--) {
		out[n++] = hex[a[i] & 0xf];
		out[n++] = '.';
		out[n++] = hex[a[i] >> 4];
		out[n++] = '.';
	}
	memcpy(out + n, zone, strlen(zone) + 1);
	return 0;
}

/* 1 if an answer lists the client. */
static int listing(const struct dns_result *r)
{
	const unsigned char *a;
	unsigned i;

	if (r->status != DNS_OK) {
		return 0;
	}
	for (i = 0; i < r->naddr; i++) {
		if (r->addr[i].ss_family != AF_INET) {
			continue;
		}
		a = (const unsigned char *)&((const struct sockaddr_in *)&r->addr[i])->sin_addr;
		if (a[0] == 127 && !(a[1] == 255 && a[2] == 255)) {
			return 1;
		}
	}
	return 0;
}

static void answered(void *ctx, const struct dns_result *r)
{
	struct dnsbl_query *q = ctx;
	struct dnsbl_check *d = q->check;
	unsigned zone = (unsigned)(q - d->q);

	q->handle = -1;
	d->pending--;
	if (r->status == DNS_TEMPFAIL) {
		log_msg(LOG_INFO, "dnsbl %s: no answer", d->zone[zone]);
	} else if (listing(r) && (d->listed < 0 || (unsigned)d->listed > zone)) {
		d->listed = (int)zone;
	}
	if (d->pending == 0) {
		d->done(d->ctx);
	}
}

unsigned dnsbl_start(struct dnsbl_check *d, const struct conf *c,
                     const struct sockaddr_storage *peer, void (*done)(void *ctx), void *ctx)
{
	char name[DNS_NAME_MAX + 1];
	unsigned i;

	d->nzones = c->ndnsbl;
	d->pending = 0;
	d->listed = -1;
	d->done = done;
	d->ctx = ctx;
	for (i = 0; i < d->nzones; i++) {
		memcpy(d->zone[i], c->dnsbl[i], sizeof d->zone[i]);
		d->q[i].check = d;
		d->q[i].handle = -1;
		if (dnsbl_name(peer, d->zone[i], name, sizeof name) < 0) {
			continue;
		}
		d->q[i].handle = dns_query_a(name, answered, &d->q[i]);
		if (d->q[i].handle < 0) {
			log_msg(LOG_WARNING, "dnsbl %s: resolver busy, not asked", d->zone[i]);
			continue;
		}
		d->pending++;
	}
	return d->pending;
}

unsigned dnsbl_cancel(struct dnsbl_check *d, int timed_out)
{
	unsigned i, n = 0;

	for (i = 0; i < d->nzones; i++) {
		if (d->q[i].handle >= 0) {
			if (timed_out) {
				log_msg(LOG_NOTICE, "dnsbl %s: no answer in time, not listing", d->zone[i]);
			}
			dns_cancel(d->q[i].handle);
			d->q[i].handle = -1;
			n++;
		}
	}
	d->pending = 0;
	return n;
}
