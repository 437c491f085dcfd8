/* dns.c - a non-blocking stub resolver on the loop (see dns.h).
 *
 * Two halves: the pure packet code (building a query, parsing a reply with
 * every length checked against the packet) and the query machinery (a
 * pool of queries, one connected UDP socket and one loop slot each).
 *
 * Sockets are made with socket()/connect() directly, as daemon.c does: the
 * io seam has no wrapper for them, and a resolver failure is already a
 * normal, answered condition (DNS_TEMPFAIL).
 */
#include "dns.h"
#include "io.h"
#include "log.h"
#include "loop.h"
#include "pool.h"
#include "random.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define DNS_HDR        12
#define DNS_CLASS_IN   1
#define DNS_WIRE_MAX   255     /* RFC 1035 section 2.3.4, with the root label */
#define DNS_LABEL_MAX  63
/* Compression pointers followed in one name.  A real name needs a few; the
 * bound is what stops a pointer loop. */
#define DNS_JUMPS_MAX  32
#define DNS_RECV_BATCH 16      /* datagrams read per wake-up */
#define RESOLV_CONF    "/etc/resolv.conf"
#define RESOLV_READ_MAX 4096   /* nameserver lines come first in practice */

/* ------------------------------------------------------------------ */
/* Names                                                               */

static unsigned get16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

static void put16(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

static unsigned char lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 'a' - 'A') : c;
}

/* Letters, digits, hyphen (RFC 1123), and underscore, which real names
 * carry.  Anything else cannot be a mail host, and would need escaping in
 * logs. */
static int host_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

/* Text name (optional final dot) to lower-case wire form in out
 * (DNS_WIRE_MAX bytes).  The wire length, or -1. */
static int name_to_wire(const char *name, unsigned char *out)
{
	size_t n = strnlen(name, DNS_NAME_MAX + 1), i, o = 1, lab = 0, llen;
	unsigned char c;

	if (n > DNS_NAME_MAX) {
		return -1;
	}
	if (n > 0 && name[n - 1] == '.') {
		n--;
	}
	if (n == 0) {
		return -1;   /* the root has no MX nor address worth asking */
	}
	for (i = 0; i < n; i++) {
		c = (unsigned char)name[i];
		if (c == '.') {
			llen = o - lab - 1;
			if (llen == 0 || llen > DNS_LABEL_MAX) {
				return -1;
			}
			out[lab] = (unsigned char)llen;
			lab = o++;
			continue;
		}
		if (!host_char(c) || o >= DNS_WIRE_MAX - 1) {
			return -1;
		}
		out[o++] = lower(c);
	}
	llen = o - lab - 1;
	if (llen == 0 || llen > DNS_LABEL_MAX) {
		return -1;
	}
	out[lab] = (unsigned char)llen;
	out[o++] = 0;
	return (int)o;
}

/* Length of a wire name this file built (so well-formed). */
static size_t wire_len(const unsigned char *w)
{
	size_t i = 0;

	while (w[i] != 0) {
		i += (size_t)w[i] + 1;
	}
	return i + 1;
}

static int wire_eq(const unsigned char *a, const unsigned char *b)
{
	size_t n = wire_len(a);

	return n == wire_len(b) && memcmp(a, b, n) == 0;
}

/* Wire name to text without the final dot ("" for the root).  -1 when a
 * label holds a byte that is not a host name's. */
static int wire_to_text(const unsigned char *w, char *out)
{
	size_t i = 0, o = 0, k;

	while (w[i] != 0) {
		if (o > 0) {
			out[o++] = '.';
		}
		for (k = 1; k <= w[i]; k++) {
			if (!host_char(w[i + k])) {
				return -1;
			}
			out[o++] = (char)w[i + k];
		}
		i += (size_t)w[i] + 1;
	}
	out[o] = '\0';
	return 0;
}

/* Reads the (possibly compressed) name at *off into out as lower-case wire
 * form (DNS_WIRE_MAX bytes) and moves *off past the name as it sits in
 * the packet.  0, or -1 if it runs off the packet, loops, uses a reserved
 * label type or grows past 255 octets. */
static int name_read(const unsigned char *pkt, size_t len, size_t *off, unsigned char *out)
{
	size_t pos = *off, o = 0, end = 0, k;
	unsigned jumps = 0;
	unsigned char c;

	for (;;) {
		if (pos >= len) {
			return -1;
		}
		c = pkt[pos];
		if ((c & 0xc0) == 0xc0) {
			if (pos + 1 >= len || ++jumps > DNS_JUMPS_MAX) {
				return -1;
			}
			if (end == 0) {
				end = pos + 2;
			}
			pos = (size_t)(c & 0x3f) << 8 | pkt[pos + 1];
			continue;
		}
		if ((c & 0xc0) != 0) {
			return -1;   /* 0x40 extended, 0x80 reserved: RFC 6891 */
		}
		if (c == 0) {
			out[o] = 0;
			if (end == 0) {
				end = pos + 1;
			}
			*off = end;
			return 0;
		}
		/* The label, and one byte left for the root. */
		if (c > len - pos - 1 || o + 1 + c + 1 > DNS_WIRE_MAX) {
			return -1;
		}
		out[o++] = c;
		for (k = 1; k <= c; k++) {
			out[o++] = lower(pkt[pos + k]);
		}
		pos += 1 + (size_t)c;
	}
}

/* ------------------------------------------------------------------ */
/* Packets                                                             */

int dns_build_query(unsigned char *buf, size_t len, uint16_t id, const char *name,
                    uint16_t qtype)
{
	unsigned char w[DNS_WIRE_MAX];
	int n = name_to_wire(name, w);
	size_t need;

	if (n < 0 || qtype == 0) {
		return -1;
	}
	need = DNS_HDR + (size_t)n + 4;
	if (len < need) {
		return -1;
	}
	memset(buf, 0, DNS_HDR);
	put16(buf, id);
	put16(buf + 2, 0x0100);           /* a standard query, recursion desired */
	put16(buf + 4, 1);                /* one question */
	memcpy(buf + DNS_HDR, w, (size_t)n);
	put16(buf + DNS_HDR + n, qtype);
	put16(buf + DNS_HDR + n + 2, DNS_CLASS_IN);
	return (int)need;
}

struct rr {
	unsigned char owner[DNS_WIRE_MAX];
	unsigned type, class;
	size_t rdoff, rdlen;
};

/* The resource record at *off; *off moves past it.  0, or -1 if it does not
 * fit in the packet. */
static int rr_read(const unsigned char *pkt, size_t len, size_t *off, struct rr *rr)
{
	size_t pos = *off;

	if (name_read(pkt, len, &pos, rr->owner) < 0 || len - pos < 10) {
		return -1;
	}
	rr->type = get16(pkt + pos);
	rr->class = get16(pkt + pos + 2);
	rr->rdlen = get16(pkt + pos + 8);
	rr->rdoff = pos + 10;
	if (rr->rdlen > len - rr->rdoff) {
		return -1;
	}
	*off = rr->rdoff + rr->rdlen;
	return 0;
}

/* A domain name that fills the record's data exactly (from data+skip). */
static int rdata_name(const unsigned char *pkt, const struct rr *rr, size_t skip,
                      unsigned char *out)
{
	size_t pos = rr->rdoff + skip;

	if (rr->rdlen < skip + 1) {
		return -1;
	}
	/* Pointers may reach earlier parts of the packet, but the name as it
	 * sits must end where the data ends. */
	if (name_read(pkt, rr->rdoff + rr->rdlen, &pos, out) < 0 ||
	    pos != rr->rdoff + rr->rdlen) {
		return -1;
	}
	return 0;
}

/* The data of the types we read must be well-formed, whoever owns them. */
static int rr_check(const unsigned char *pkt, const struct rr *rr)
{
	unsigned char w[DNS_WIRE_MAX];

	if (rr->class != DNS_CLASS_IN) {
		return 0;
	}
	switch (rr->type) {
	case DNS_TYPE_A:
		return rr->rdlen == 4 ? 0 : -1;
	case DNS_TYPE_AAAA:
		return rr->rdlen == 16 ? 0 : -1;
	case DNS_TYPE_MX:
		return rdata_name(pkt, rr, 2, w);
	case DNS_TYPE_CNAME:
		return rdata_name(pkt, rr, 0, w);
	default:
		return 0;
	}
}

/* Inserts an MX record, keeping the list sorted by preference and stable
 * among equal ones; when full, a record less preferred than all is dropped. */
static void mx_insert(struct dns_result *r, unsigned pref, const char *host)
{
	unsigned i, n = r->nmx;

	if (n == DNS_MX_MAX) {
		if (pref >= r->mx[n - 1].pref) {
			return;
		}
		n--;
	}
	i = n;
	while (i > 0 && r->mx[i - 1].pref > pref) {
		r->mx[i] = r->mx[i - 1];
		i--;
	}
	r->mx[i].pref = pref;
	memcpy(r->mx[i].host, host, strlen(host) + 1);
	r->nmx = n + 1;
}

static void addr_append(struct dns_result *r, int family, const unsigned char *a)
{
	struct sockaddr_storage *ss;
	struct sockaddr_in *sin;
	struct sockaddr_in6 *sin6;

	if (r->naddr >= DNS_ADDR_MAX) {
		return;
	}
	ss = &r->addr[r->naddr++];
	memset(ss, 0, sizeof *ss);
	if (family == AF_INET) {
		sin = (struct sockaddr_in *)(void *)ss;
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, a, 4);
	} else {
		sin6 = (struct sockaddr_in6 *)(void *)ss;
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, a, 16);
	}
}

int dns_parse_reply(const unsigned char *pkt, size_t len, uint16_t id, const char *name,
                    uint16_t qtype, struct dns_result *r)
{
	unsigned char qwire[DNS_WIRE_MAX], w[DNS_WIRE_MAX], cur[DNS_WIRE_MAX];
	char host[DNS_NAME_MAX + 1];
	unsigned flags, an, i, nok, hops, found, usable, nulls, unusable;
	size_t off, ans, pos;
	struct rr rr;
	int tc;

	if (qtype != DNS_TYPE_A && qtype != DNS_TYPE_AAAA && qtype != DNS_TYPE_MX) {
		return -1;
	}
	if (len < DNS_HDR || name_to_wire(name, qwire) < 0) {
		return -1;
	}
	flags = get16(pkt + 2);
	/* A reply (QR), to a standard query, with our id and one question. */
	if (get16(pkt) != id || (flags & 0x8000) == 0 || (flags & 0x7800) != 0 ||
	    get16(pkt + 4) != 1) {
		return -1;
	}
	tc = (flags & 0x0200) != 0;
	an = get16(pkt + 6);
	off = DNS_HDR;
	if (name_read(pkt, len, &off, w) < 0 || !wire_eq(w, qwire) || len - off < 4 ||
	    get16(pkt + off) != qtype || get16(pkt + off + 2) != DNS_CLASS_IN) {
		return -1;
	}
	off += 4;

	switch (flags & 0x000f) {
	case 0:
		break;
	case 3:
		/* RFC 6604: the rcode speaks of the last name of any chain;
		 * either way there is nothing to deliver to. */
		if (qtype == DNS_TYPE_MX) {
			r->nmx = 0;
			r->null_mx = 0;
		}
		r->status = DNS_NXDOMAIN;
		return 0;
	default:
		/* SERVFAIL, REFUSED, FORMERR, NOTIMP...: not an answer. */
		if (qtype == DNS_TYPE_MX) {
			r->nmx = 0;
			r->null_mx = 0;
		}
		r->status = DNS_TEMPFAIL;
		return 0;
	}

	/* Check every answer record before using any, so that a malformed
	 * packet leaves r untouched.  A truncated reply keeps the records
	 * that arrived whole (no TCP retry: see dns.h). */
	ans = off;
	for (nok = 0; nok < an; nok++) {
		if (rr_read(pkt, len, &off, &rr) < 0) {
			if (tc) {
				break;
			}
			return -1;
		}
		if (rr_check(pkt, &rr) < 0) {
			return -1;
		}
	}

	/* Follow the CNAME chain from the question's name, in any order. */
	memcpy(cur, qwire, wire_len(qwire));
	for (hops = 0;; hops++) {
		found = 0;
		for (i = 0, pos = ans; i < nok; i++) {
			(void)rr_read(pkt, len, &pos, &rr);
			if (rr.class == DNS_CLASS_IN && rr.type == DNS_TYPE_CNAME &&
			    wire_eq(rr.owner, cur)) {
				(void)rdata_name(pkt, &rr, 0, w);
				found = 1;
				break;
			}
		}
		if (!found) {
			break;
		}
		if (hops == DNS_CNAME_MAX) {
			/* A loop or an absurd chain: the resolver should have
			 * said SERVFAIL; no answer to act on. */
			if (qtype == DNS_TYPE_MX) {
				r->nmx = 0;
				r->null_mx = 0;
			}
			r->status = DNS_TEMPFAIL;
			return 0;
		}
		memcpy(cur, w, wire_len(w));
	}

	if (qtype == DNS_TYPE_MX) {
		r->nmx = 0;
		r->null_mx = 0;
	}
	usable = nulls = unusable = 0;
	for (i = 0, pos = ans; i < nok; i++) {
		(void)rr_read(pkt, len, &pos, &rr);
		if (rr.class != DNS_CLASS_IN || rr.type != qtype || !wire_eq(rr.owner, cur)) {
			continue;
		}
		if (qtype == DNS_TYPE_A) {
			addr_append(r, AF_INET, pkt + rr.rdoff);
			usable++;
		} else if (qtype == DNS_TYPE_AAAA) {
			addr_append(r, AF_INET6, pkt + rr.rdoff);
			usable++;
		} else {
			(void)rdata_name(pkt, &rr, 2, w);
			if (w[0] == 0) {
				nulls++;
			} else if (wire_to_text(w, host) < 0) {
				unusable++;
			} else {
				mx_insert(r, get16(pkt + rr.rdoff), host);
				usable++;
			}
		}
	}

	if (usable > 0) {
		r->status = DNS_OK;
	} else if (nulls > 0) {
		r->null_mx = 1;   /* RFC 7505 section 3 */
		r->status = DNS_OK;
	} else if (unusable > 0 || tc) {
		/* MX records that name no host we could reach are not "no MX"
		 * (which would fall back to the domain's address); and a
		 * truncated reply without records says nothing. */
		r->status = DNS_TEMPFAIL;
	} else {
		r->status = DNS_NODATA;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* resolv.conf                                                         */

static int parse_ns_addr(const char *s, struct sockaddr_storage *ss, socklen_t *sslen)
{
	char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 2], *pct, *end;
	struct sockaddr_in *sin = (struct sockaddr_in *)(void *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)(void *)ss;
	unsigned long scope = 0;

	if (strlen(s) >= sizeof buf) {
		return -1;
	}
	memcpy(buf, s, strlen(s) + 1);
	memset(ss, 0, sizeof *ss);
	if (inet_pton(AF_INET, buf, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(53);
		*sslen = sizeof *sin;
		return 0;
	}
	pct = strchr(buf, '%');
	if (pct != NULL) {
		*pct++ = '\0';
		errno = 0;
		scope = strtoul(pct, &end, 10);
		if (*pct == '\0' || *end != '\0' || errno != 0 || scope > UINT32_MAX) {
			scope = if_nametoindex(pct);
			if (scope == 0) {
				return -1;
			}
		}
	}
	if (inet_pton(AF_INET6, buf, &sin6->sin6_addr) != 1) {
		return -1;
	}
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(53);
	sin6->sin6_scope_id = (uint32_t)scope;
	*sslen = sizeof *sin6;
	return 0;
}

int dns_parse_resolv_conf(const char *text, size_t len, struct sockaddr_storage *ss,
                          socklen_t *sslen)
{
	static const char kw[] = "nameserver";
	const size_t kwlen = sizeof kw - 1;
	size_t i = 0, end, a, b;
	char tok[64];

	while (i < len) {
		for (end = i; end < len && text[end] != '\n'; end++) {
		}
		a = i;
		while (a < end && (text[a] == ' ' || text[a] == '\t')) {
			a++;
		}
		if (end - a > kwlen && memcmp(text + a, kw, kwlen) == 0 &&
		    (text[a + kwlen] == ' ' || text[a + kwlen] == '\t')) {
			a += kwlen;
			while (a < end && (text[a] == ' ' || text[a] == '\t')) {
				a++;
			}
			for (b = a; b < end && text[b] != ' ' && text[b] != '\t' && text[b] != '\r' &&
			            text[b] != '#' && text[b] != ';'; b++) {
			}
			if (b > a && b - a < sizeof tok) {
				memcpy(tok, text + a, b - a);
				tok[b - a] = '\0';
				if (parse_ns_addr(tok, ss, sslen) == 0) {
					return 0;
				}
			}
		}
		i = end + 1;
	}
	return -1;
}

/* ------------------------------------------------------------------ */
/* Queries on the loop                                                 */

enum dns_kind { KIND_MX, KIND_ADDR, KIND_A };

/* One question of a query: MX, or A or AAAA. */
struct dns_sub {
	uint16_t id;
	uint16_t qtype;
	int done;
	enum dns_status status;
	unsigned naddr;
	unsigned char addr[DNS_ADDR_MAX][16];
};

struct dns_query {
	dns_done_fn fn;
	void *ctx;
	unsigned idx;              /* in the pool, for the handle */
	enum dns_kind kind;
	int fd;                    /* -1: completes without the network */
	int slot;
	unsigned tries;
	int64_t deadline;          /* of the current try */
	enum dns_status status;    /* when completing without the network */
	struct sockaddr_storage server;   /* for the log */
	char name[DNS_NAME_MAX + 1];
	unsigned nsub;
	struct dns_sub sub[2];     /* the results are kept here, compact */
};

static struct pool qpool;
static int dns_ready;
/* Per pool object: whether a caller holds it, and its generation, so that
 * a handle is gen * DNS_QUERIES + idx and a stale one is recognised. */
static int qbusy[DNS_QUERIES];
static unsigned qgen[DNS_QUERIES];

static struct sockaddr_storage resolver;
static socklen_t resolver_len;
static int resolver_fixed;         /* `resolver` configured: never resolv.conf */
static struct { int valid; dev_t dev; ino_t ino; off_t size; struct timespec mtime; } resolv_seen;

/* Single-threaded: one receive buffer for all queries, and one result,
 * which replies are parsed into and callbacks are given.  A query keeps
 * only its compact addresses, so that the pool stays small; an MX reply
 * completes its query at once, so needs no room of its own. */
static unsigned char rxbuf[4096];
static struct dns_result answer;

static const char *type_name(unsigned qtype)
{
	switch (qtype) {
	case DNS_TYPE_A: return "A";
	case DNS_TYPE_AAAA: return "AAAA";
	case DNS_TYPE_MX: return "MX";
	default: return "?";
	}
}

static const char *sa_text(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)ss;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)ss;
	char a[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET && inet_ntop(AF_INET, &sin->sin_addr, a, sizeof a)) {
		(void)snprintf(buf, len, "%s:%u", a, ntohs(sin->sin_port));
	} else if (ss->ss_family == AF_INET6 &&
	           inet_ntop(AF_INET6, &sin6->sin6_addr, a, sizeof a)) {
		(void)snprintf(buf, len, "[%s]:%u", a, ntohs(sin6->sin6_port));
	} else {
		(void)snprintf(buf, len, "?");
	}
	return buf;
}

static void resolver_default(void)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)(void *)&resolver;

	memset(&resolver, 0, sizeof resolver);
	sin->sin_family = AF_INET;
	sin->sin_port = htons(53);
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	resolver_len = sizeof *sin;
}

/* Reads /etc/resolv.conf again when it changed (a router writes it when
 * its uplink comes up, long after we started). */
static void resolv_refresh(void)
{
	char text[RESOLV_READ_MAX], b[INET6_ADDRSTRLEN + 16];
	struct sockaddr_storage ss;
	socklen_t sslen;
	struct stat st;
	size_t got = 0;
	ssize_t n;
	int fd;

	if (resolver_fixed) {
		return;
	}
	if (stat(RESOLV_CONF, &st) < 0) {
		if (resolv_seen.valid || resolver.ss_family == 0) {
			resolv_seen.valid = 0;
			resolver_default();
			log_msg(LOG_INFO, "dns: resolver %s (no %s)", sa_text(&resolver, b, sizeof b),
			        RESOLV_CONF);
		}
		return;
	}
	if (resolv_seen.valid && resolv_seen.dev == st.st_dev && resolv_seen.ino == st.st_ino &&
	    resolv_seen.size == st.st_size && resolv_seen.mtime.tv_sec == st.st_mtim.tv_sec &&
	    resolv_seen.mtime.tv_nsec == st.st_mtim.tv_nsec) {
		return;
	}
	resolv_seen.valid = 1;
	resolv_seen.dev = st.st_dev;
	resolv_seen.ino = st.st_ino;
	resolv_seen.size = st.st_size;
	resolv_seen.mtime = st.st_mtim;
	fd = io_open(RESOLV_CONF, O_RDONLY, 0);
	if (fd >= 0) {
		while (got < sizeof text && (n = io_read(fd, text + got, sizeof text - got)) > 0) {
			got += (size_t)n;
		}
		(void)io_close(fd);
	}
	if (dns_parse_resolv_conf(text, got, &ss, &sslen) == 0) {
		resolver = ss;
		resolver_len = sslen;
	} else {
		resolver_default();
	}
	log_msg(LOG_INFO, "dns: resolver %s (from %s)", sa_text(&resolver, b, sizeof b),
	        RESOLV_CONF);
}

void dns_reconfigure(const struct conf *c)
{
	if (c->resolver.ss_family != 0) {
		resolver = c->resolver;
		resolver_len = c->resolver_len;
		resolver_fixed = 1;
		return;
	}
	resolver_fixed = 0;
	resolv_seen.valid = 0;
	resolv_refresh();
}

int dns_init(const struct conf *c)
{
	if (!dns_ready) {
		if (pool_init(&qpool, "dns", sizeof(struct dns_query), DNS_QUERIES) < 0) {
			return -1;
		}
		dns_ready = 1;
	}
	dns_reconfigure(c);
	return 0;
}

unsigned dns_used(void)
{
	return qpool.used;
}

unsigned dns_size(void)
{
	return qpool.size;
}


static struct dns_query *query_at(unsigned idx)
{
	return (struct dns_query *)(void *)(qpool.mem + (size_t)idx * qpool.objsize);
}

/* Gives everything back; the callback is not called. */
static void query_release(struct dns_query *q)
{
	qbusy[q->idx] = 0;
	if (q->fd >= 0) {
		(void)io_close(q->fd);
		q->fd = -1;
	}
	loop_del(q->slot);
	q->slot = -1;
	pool_give(&qpool, q);
}

/* The result into `answer`, the query released, then the callback. */
static void query_finish(struct dns_query *q)
{
	struct dns_result *r = &answer;
	unsigned i, k, tempfail = 0, nxdomain = 0;
	dns_done_fn fn = q->fn;
	void *ctx = q->ctx;

	if (q->kind == KIND_MX) {
		/* A done sub has its reply parsed into answer just now. */
		if (q->nsub == 0 || !q->sub[0].done) {
			r->status = q->nsub == 0 ? q->status : DNS_TEMPFAIL;
			r->nmx = 0;
			r->null_mx = 0;
		}
		r->naddr = 0;
	} else {
		/* A first, then AAAA, whichever answered first. */
		r->nmx = 0;
		r->null_mx = 0;
		r->naddr = 0;
		for (i = 0; i < q->nsub; i++) {
			for (k = 0; k < q->sub[i].naddr; k++) {
				addr_append(r, q->sub[i].qtype == DNS_TYPE_A ? AF_INET : AF_INET6,
				            q->sub[i].addr[k]);
			}
			if (!q->sub[i].done || q->sub[i].status == DNS_TEMPFAIL) {
				tempfail++;
			} else if (q->sub[i].status == DNS_NXDOMAIN) {
				nxdomain++;
			}
		}
		if (q->nsub == 0) {
			r->status = q->status;
		} else if (r->naddr > 0) {
			r->status = DNS_OK;
		} else if (tempfail > 0) {
			r->status = DNS_TEMPFAIL;
		} else if (nxdomain > 0) {
			r->status = DNS_NXDOMAIN;
		} else {
			r->status = DNS_NODATA;
		}
	}
	/* Released first: the callback may start queries (none of which
	 * touches `answer` before the loop runs again) or cancel others. */
	query_release(q);
	fn(ctx, r);
}

static void query_send(struct dns_query *q)
{
	unsigned char pkt[DNS_HDR + DNS_WIRE_MAX + 4];
	unsigned i;
	int n;

	for (i = 0; i < q->nsub; i++) {
		if (q->sub[i].done) {
			continue;
		}
		n = dns_build_query(pkt, sizeof pkt, q->sub[i].id, q->name, q->sub[i].qtype);
		if (n < 0) {
			continue;   /* checked at the start: cannot happen */
		}
		/* A pending ICMP error (ECONNREFUSED) fails one send; the next
		 * one goes out.  Other errors wait for the next try. */
		if (io_send(q->fd, pkt, (size_t)n) < 0 && errno == ECONNREFUSED) {
			(void)io_send(q->fd, pkt, (size_t)n);
		}
	}
	q->deadline = loop_now() + DNS_TRY_MS;
	loop_deadline(q->slot, q->deadline);
}

/* One datagram: the answer to one of our questions, or ignored. */
static void query_reply(struct dns_query *q, const unsigned char *pkt, size_t len)
{
	const struct sockaddr_in *sin;
	const struct sockaddr_in6 *sin6;
	struct dns_sub *s;
	unsigned i, k;

	for (i = 0; i < q->nsub; i++) {
		s = &q->sub[i];
		if (s->done) {
			continue;
		}
		answer.naddr = 0;
		if (dns_parse_reply(pkt, len, s->id, q->name, s->qtype, &answer) < 0) {
			continue;
		}
		s->done = 1;
		s->status = answer.status;
		for (k = 0; k < answer.naddr; k++) {
			if (s->qtype == DNS_TYPE_A) {
				sin = (const struct sockaddr_in *)(const void *)&answer.addr[k];
				memcpy(s->addr[k], &sin->sin_addr, 4);
			} else {
				sin6 = (const struct sockaddr_in6 *)(const void *)&answer.addr[k];
				memcpy(s->addr[k], &sin6->sin6_addr, 16);
			}
		}
		s->naddr = s->qtype == DNS_TYPE_MX ? 0 : answer.naddr;
		return;
	}
}

static int query_all_done(const struct dns_query *q)
{
	unsigned i;

	for (i = 0; i < q->nsub; i++) {
		if (!q->sub[i].done) {
			return 0;
		}
	}
	return 1;
}

static void query_timeout(struct dns_query *q)
{
	char b[INET6_ADDRSTRLEN + 16];
	unsigned i, answered = 0;

	for (i = 0; i < q->nsub; i++) {
		if (q->sub[i].done && q->sub[i].naddr > 0) {
			answered = 1;
		}
	}
	/* The same ids on every try, so that a late answer to an earlier
	 * try still counts. */
	if (q->tries < DNS_TRIES && !answered) {
		q->tries++;
		query_send(q);
		return;
	}
	for (i = 0; i < q->nsub; i++) {
		if (!q->sub[i].done) {
			log_msg(LOG_WARNING, "dns: %s %s: no answer from %s after %u %s", q->name,
			        type_name(q->sub[i].qtype), sa_text(&q->server, b, sizeof b), q->tries,
			        q->tries == 1 ? "try" : "tries");
		}
	}
	query_finish(q);
}

static void query_ready(void *ctx, int revents)
{
	struct dns_query *q = ctx;
	ssize_t n;
	unsigned i;

	if (q->fd < 0) {
		query_finish(q);   /* a literal or a bad name: the answer is ready */
		return;
	}
	if (revents & LOOP_TIMEOUT) {
		query_timeout(q);
		return;
	}
	for (i = 0; i < DNS_RECV_BATCH; i++) {
		n = io_recv(q->fd, rxbuf, sizeof rxbuf);
		if (n == 0) {
			break;        /* nothing more for now */
		}
		if (n == -2) {
			continue;     /* an empty datagram */
		}
		if (n < 0) {
			/* ICMP unreachable and the like: the resolver may be
			 * restarting; the next try will tell. */
			break;
		}
		query_reply(q, rxbuf, (size_t)n);
		if (query_all_done(q)) {
			/* An MX reply is in `answer` now: finish before any
			 * other reply is parsed. */
			query_finish(q);
			return;
		}
	}
	/* The loop reports a deadline only to a slot without events: a stream
	 * of junk datagrams must not keep a query alive past its tries. */
	if (loop_now() >= q->deadline) {
		query_timeout(q);
	}
}

/* The address literal host, if it is one, as the query's one answer. */
static int addr_literal(const char *host, struct dns_sub *s)
{
	char buf[INET6_ADDRSTRLEN + 8];
	size_t n = strnlen(host, sizeof buf);
	const char *a = buf;

	if (n >= sizeof buf) {
		return 0;
	}
	if (host[0] == '[') {
		/* RFC 5321 section 4.1.3 address literals, and "[::1]", which
		 * is not one but is what people write. */
		if (n < 3 || host[n - 1] != ']') {
			return 0;
		}
		memcpy(buf, host + 1, n - 2);
		buf[n - 2] = '\0';
		if (strncasecmp(buf, "IPv6:", 5) == 0) {
			a = buf + 5;
			if (inet_pton(AF_INET6, a, s->addr[0]) != 1) {
				return 0;
			}
			s->qtype = DNS_TYPE_AAAA;
			s->naddr = 1;
			return 1;
		}
	} else {
		memcpy(buf, host, n + 1);
	}
	if (inet_pton(AF_INET, a, s->addr[0]) == 1) {
		s->qtype = DNS_TYPE_A;
	} else if (strchr(a, ':') != NULL && inet_pton(AF_INET6, a, s->addr[0]) == 1) {
		s->qtype = DNS_TYPE_AAAA;
	} else {
		return 0;
	}
	s->naddr = 1;
	return 1;
}

static int query_start(enum dns_kind kind, const char *name, dns_done_fn fn, void *ctx)
{
	char b[INET6_ADDRSTRLEN + 16];
	unsigned char w[DNS_WIRE_MAX];
	struct dns_query *q;
	unsigned idx;
	uint16_t ids[2];
	size_t n, i;
	int immediate = 0;

	if (!dns_ready || fn == NULL || name == NULL) {
		return -1;
	}
	q = pool_take(&qpool);
	if (q == NULL) {
		return -1;
	}
	idx = (unsigned)((size_t)((unsigned char *)q - qpool.mem) / qpool.objsize);
	q->fn = fn;
	q->ctx = ctx;
	q->idx = idx;
	q->kind = kind;
	q->fd = -1;
	q->slot = -1;
	q->tries = 1;
	q->deadline = 0;
	q->status = DNS_TEMPFAIL;
	q->nsub = 0;
	memset(q->sub, 0, sizeof q->sub);
	/* For the log only when the name is bad: a good one is all host
	 * characters and dots, so this copy changes nothing in it. */
	n = strnlen(name, DNS_NAME_MAX);
	for (i = 0; i < n; i++) {
		q->name[i] = name[i] > 0x20 && name[i] < 0x7f ? name[i] : '?';
	}
	q->name[n] = '\0';

	if (kind == KIND_ADDR && addr_literal(name, &q->sub[0])) {
		q->sub[0].done = 1;
		q->sub[0].status = DNS_OK;
		q->nsub = 1;
		immediate = 1;
	} else if (name_to_wire(name, w) < 0) {
		log_msg(LOG_INFO, "dns: '%.64s' is not a domain name", q->name);
		q->status = DNS_NXDOMAIN;
		immediate = 1;
	}
	if (!immediate) {
		resolv_refresh();
		q->server = resolver;
		if (random_bytes(ids, sizeof ids) < 0) {
			log_msg(LOG_ERR, "dns: no random bytes for a query id");
			pool_give(&qpool, q);
			return -1;
		}
		if (ids[1] == ids[0]) {
			ids[1] ^= 1;
		}
		q->sub[0].id = ids[0];
		q->sub[0].qtype = kind == KIND_MX ? DNS_TYPE_MX : DNS_TYPE_A;
		q->nsub = 1;
		if (kind == KIND_ADDR) {
			q->sub[1].id = ids[1];
			q->sub[1].qtype = DNS_TYPE_AAAA;
			q->nsub = 2;
		}
		/* One socket for the query's questions (A and AAAA share it,
		 * told apart by id and type).  Connected, so that the kernel
		 * drops datagrams from anyone but the resolver; its port is
		 * the kernel's random pick. */
		q->fd = socket(resolver.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (q->fd < 0) {
			log_msg(LOG_WARNING, "dns: socket: %m");
			pool_give(&qpool, q);
			return -1;
		}
		if (connect(q->fd, (const struct sockaddr *)&resolver, resolver_len) < 0) {
			/* No route yet (a router before its uplink): an answer
			 * of "try later", through the loop. */
			log_msg(LOG_WARNING, "dns: %s: cannot reach %s: %m", q->name,
			        sa_text(&resolver, b, sizeof b));
			(void)io_close(q->fd);
			q->fd = -1;
			q->nsub = 0;
			q->status = DNS_TEMPFAIL;
			immediate = 1;
		}
	}
	q->slot = loop_add(q->fd, immediate ? 0 : POLLIN, query_ready, q);
	if (q->slot < 0) {
		if (q->fd >= 0) {
			(void)io_close(q->fd);
		}
		pool_give(&qpool, q);
		return -1;
	}
	if (immediate) {
		/* A deadline already passed: the next round completes it. */
		loop_deadline(q->slot, loop_now() > 0 ? loop_now() : 1);
	} else {
		query_send(q);
	}
	/* Handles stay positive ints: gen * DNS_QUERIES + idx <= INT32_MAX. */
	qgen[idx] = qgen[idx] + 1 < (unsigned)(INT32_MAX / DNS_QUERIES) ? qgen[idx] + 1 : 1;
	qbusy[idx] = 1;
	return (int)(qgen[idx] * DNS_QUERIES + idx);
}

int dns_query_mx(const char *domain, dns_done_fn fn, void *ctx)
{
	return query_start(KIND_MX, domain, fn, ctx);
}

int dns_query_addr(const char *host, dns_done_fn fn, void *ctx)
{
	return query_start(KIND_ADDR, host, fn, ctx);
}

int dns_query_a(const char *name, dns_done_fn fn, void *ctx)
{
	return query_start(KIND_A, name, fn, ctx);
}

void dns_cancel(int handle)
{
	unsigned idx, gen;

	if (handle < 0 || !dns_ready) {
		return;
	}
	idx = (unsigned)handle % DNS_QUERIES;
	gen = (unsigned)handle / DNS_QUERIES;
	if (!qbusy[idx] || qgen[idx] != gen) {
		return;
	}
	query_release(query_at(idx));
}
