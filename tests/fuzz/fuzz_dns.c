/* fuzz_dns.c - DNS replies (src/dns.c): what a resolver, or anyone who can
 * spoof one, sends back; and resolv.conf, which a router's uplink
 * scripts write.
 *
 * Input: a selector byte, then the bytes.
 *   bits 0-1  0 A, 1 AAAA, 2 MX: the bytes are a reply to a query for one
 *             of four names (bits 2-3), with the reply's own id as the
 *             query's.  3: the bytes are resolv.conf, and also a name for
 *             dns_build_query.
 * A reply dns_parse_reply refuses must leave the result untouched; one it
 * takes must keep its counts within the arrays, MX hosts terminated, lower
 * case, without the final dot and in preference order, and addresses of
 * the family asked. */
#include "dns.h"
#include "fuzz.h"

#include <ctype.h>
#include <netinet/in.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const names[] = {
	"example.com", "mx.fuzz.test", "a", "xn--bcher-kva.example.",
};

static void check_result(const struct dns_result *r, uint16_t qtype, unsigned naddr_before)
{
	unsigned i;
	size_t k, len;

	if (r->status > DNS_TEMPFAIL || r->nmx > DNS_MX_MAX || r->naddr > DNS_ADDR_MAX ||
	    r->naddr < naddr_before) {
		fuzz_fail("status %d, %u MX, %u addresses", (int)r->status, r->nmx, r->naddr);
	}
	for (i = 0; qtype == DNS_TYPE_MX && i < r->nmx; i++) {
		len = strnlen(r->mx[i].host, sizeof r->mx[i].host);
		if (len == 0 || len == sizeof r->mx[i].host || r->mx[i].host[len - 1] == '.') {
			fuzz_fail("MX host %u is empty, unterminated or ends in a dot", i);
		}
		for (k = 0; k < len; k++) {
			unsigned char ch = (unsigned char)r->mx[i].host[k];

			if (isupper(ch) || ch <= ' ' || ch >= 0x7f) {
				fuzz_fail("MX host '%s' holds byte 0x%02x", r->mx[i].host, ch);
			}
		}
		if (i > 0 && r->mx[i].pref < r->mx[i - 1].pref) {
			fuzz_fail("MX records out of preference order");
		}
	}
	for (i = naddr_before; qtype != DNS_TYPE_MX && i < r->naddr; i++) {
		if (r->addr[i].ss_family != (qtype == DNS_TYPE_A ? AF_INET : AF_INET6)) {
			fuzz_fail("address %u of family %d for query type %u", i, r->addr[i].ss_family,
			          qtype);
		}
	}
}

static void reply(const uint8_t *pkt, size_t len, unsigned sel)
{
	static const uint16_t types[] = { DNS_TYPE_A, DNS_TYPE_AAAA, DNS_TYPE_MX };
	static struct dns_result r, before;
	uint16_t qtype = types[sel & 3], id = len >= 2 ? (uint16_t)(pkt[0] << 8 | pkt[1]) : 0;
	unsigned prefill = (sel >> 4) & 3;

	/* Garbage, except for the addresses dns_query_addr's A answer may
	 * already have put there before the AAAA answer appends. */
	memset(&r, 0xa5, sizeof r);
	r.nmx = 0;
	r.naddr = 0;
	while (r.naddr < prefill) {
		r.addr[r.naddr++].ss_family = qtype == DNS_TYPE_AAAA ? AF_INET : AF_INET6;
	}
	memcpy(&before, &r, sizeof r);
	if (dns_parse_reply(pkt, len, id, names[(sel >> 2) & 3], qtype, &r) < 0) {
		if (memcmp(&r, &before, sizeof r) != 0) {
			fuzz_fail("a refused reply changed the result");
		}
		return;
	}
	check_result(&r, qtype, prefill);
}

static void text(const uint8_t *data, size_t size)
{
	static char name[1024];
	unsigned char q[600];
	struct sockaddr_storage ss;
	socklen_t sslen = 0;
	int n;

	if (dns_parse_resolv_conf((const char *)data, size, &ss, &sslen) == 0 &&
	    (sslen == 0 || sslen > sizeof ss ||
	     (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))) {
		fuzz_fail("resolv.conf gave a bad address (length %u)", (unsigned)sslen);
	}
	if (size < sizeof name) {
		memcpy(name, data, size);
		name[size] = '\0';
		n = dns_build_query(q, sizeof q, 0x1234, name, DNS_TYPE_MX);
		if (n > (int)sizeof q || (n >= 0 && n < 17)) {
			fuzz_fail("a query of %d bytes", n);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1) {
		return 0;
	}
	if ((data[0] & 3) == 3) {
		text(data + 1, size - 1);
	} else {
		reply(data + 1, size - 1, data[0]);
	}
	return 0;
}
