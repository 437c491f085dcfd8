/* test_dns.c - dns.c: known-answer tables for the query builder and the
 * reply parser (hand-made packets, written in a small notation below),
 * every truncation and random mutations of the good packets, resolv.conf
 * lines, and the queries on the loop against a fake resolver in this
 * process (spoofed replies, A/AAAA order, retry, cancel, a full pool). */
#include "check.h"
#include "../../src/dns.h"
#include "../../src/dnsbl.h"
#include "../../src/loop.h"
#include "../../src/log.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Packets in a notation: records separated by ';'
 *
 *   hdr ID FLAGS QD AN [NS AR]     ID and FLAGS in hex
 *   q NAME TYPE [CLASS]            the question
 *   a NAME 192.0.2.1               aaaa NAME 2001:db8::1
 *   mx NAME PREF TARGET            cname NAME TARGET
 *   rr NAME TYPE CLASS HEX         any record; rdlen from the data
 *   rrl NAME TYPE CLASS RDLEN HEX  rdlen as given, whatever follows
 *   raw HEX                        bytes as they are
 *
 * NAME: "a.b.c" (labels and the root), "." (the root), "mx1.@12" (labels
 * then a pointer to offset 12), "@30" (a pointer only); a label "x*63" is
 * 63 x's.  TYPE: A AAAA MX CNAME or a number; CLASS: IN CH or a number.
 * Records take a TTL of 300.
 */

struct pk {
	unsigned char b[4096];
	size_t n;
};

static void pk_byte(struct pk *p, unsigned v)
{
	if (p->n < sizeof p->b) {
		p->b[p->n++] = (unsigned char)v;
	}
}

static void pk_u16(struct pk *p, unsigned v)
{
	pk_byte(p, v >> 8);
	pk_byte(p, v & 0xff);
}

static void pk_hex(struct pk *p, const char *h)
{
	unsigned v;

	while (h[0] != '\0' && h[1] != '\0') {
		(void)sscanf(h, "%2x", &v);
		pk_byte(p, v);
		h += 2;
	}
}

static void pk_name(struct pk *p, const char *text)
{
	char buf[1024], *lab, *save = NULL, *star;
	size_t i, n;

	if (strcmp(text, ".") == 0) {
		pk_byte(p, 0);
		return;
	}
	snprintf(buf, sizeof buf, "%s", text);
	for (lab = strtok_r(buf, ".", &save); lab != NULL; lab = strtok_r(NULL, ".", &save)) {
		if (lab[0] == '@') {
			n = strtoul(lab + 1, NULL, 0);
			pk_byte(p, 0xc0 | (unsigned)(n >> 8));
			pk_byte(p, n & 0xff);
			return;
		}
		star = strchr(lab, '*');
		if (star != NULL) {
			n = strtoul(star + 1, NULL, 10);
			pk_byte(p, (unsigned)n);
			for (i = 0; i < n; i++) {
				pk_byte(p, (unsigned char)lab[0]);
			}
			continue;
		}
		pk_byte(p, (unsigned)strlen(lab));
		for (i = 0; lab[i] != '\0'; i++) {
			pk_byte(p, (unsigned char)lab[i]);
		}
	}
	pk_byte(p, 0);
}

static unsigned pk_type(const char *s)
{
	if (strcmp(s, "A") == 0) {
		return DNS_TYPE_A;
	}
	if (strcmp(s, "AAAA") == 0) {
		return DNS_TYPE_AAAA;
	}
	if (strcmp(s, "MX") == 0) {
		return DNS_TYPE_MX;
	}
	if (strcmp(s, "CNAME") == 0) {
		return DNS_TYPE_CNAME;
	}
	if (strcmp(s, "IN") == 0) {
		return 1;
	}
	if (strcmp(s, "CH") == 0) {
		return 3;
	}
	return (unsigned)strtoul(s, NULL, 0);
}

/* Owner, type, class, TTL; the caller writes rdlen and data. */
static void pk_rr_head(struct pk *p, const char *owner, unsigned type, unsigned class)
{
	pk_name(p, owner);
	pk_u16(p, type);
	pk_u16(p, class);
	pk_u16(p, 0);
	pk_u16(p, 300);
}

/* rdlen goes in front of data written after mark. */
static void pk_rdlen_fix(struct pk *p, size_t mark)
{
	size_t len = p->n - mark - 2;

	p->b[mark] = (unsigned char)(len >> 8);
	p->b[mark + 1] = (unsigned char)len;
}

static void pk_build(struct pk *p, const char *spec)
{
	char buf[2048], *rec, *save = NULL, *t[8], *s2;
	unsigned char a[16];
	unsigned nt;
	size_t mark;

	p->n = 0;
	snprintf(buf, sizeof buf, "%s", spec);
	for (rec = strtok_r(buf, ";", &save); rec != NULL; rec = strtok_r(NULL, ";", &save)) {
		s2 = NULL;
		for (nt = 0; nt < 8 && (t[nt] = strtok_r(nt == 0 ? rec : NULL, " \t", &s2)) != NULL;
		     nt++) {
		}
		if (nt == 0) {
			continue;
		}
		if (strcmp(t[0], "hdr") == 0) {
			pk_u16(p, (unsigned)strtoul(t[1], NULL, 16));
			pk_u16(p, (unsigned)strtoul(t[2], NULL, 16));
			pk_u16(p, (unsigned)strtoul(t[3], NULL, 10));
			pk_u16(p, (unsigned)strtoul(t[4], NULL, 10));
			pk_u16(p, nt > 5 ? (unsigned)strtoul(t[5], NULL, 10) : 0);
			pk_u16(p, nt > 6 ? (unsigned)strtoul(t[6], NULL, 10) : 0);
		} else if (strcmp(t[0], "q") == 0) {
			pk_name(p, t[1]);
			pk_u16(p, pk_type(t[2]));
			pk_u16(p, nt > 3 ? pk_type(t[3]) : 1);
		} else if (strcmp(t[0], "a") == 0 || strcmp(t[0], "aaaa") == 0) {
			int v6 = strcmp(t[0], "aaaa") == 0;

			pk_rr_head(p, t[1], v6 ? DNS_TYPE_AAAA : DNS_TYPE_A, 1);
			(void)inet_pton(v6 ? AF_INET6 : AF_INET, t[2], a);
			pk_u16(p, v6 ? 16 : 4);
			memcpy(p->b + p->n, a, v6 ? 16 : 4);
			p->n += v6 ? 16 : 4;
		} else if (strcmp(t[0], "mx") == 0) {
			pk_rr_head(p, t[1], DNS_TYPE_MX, 1);
			mark = p->n;
			pk_u16(p, 0);
			pk_u16(p, (unsigned)strtoul(t[2], NULL, 10));
			pk_name(p, t[3]);
			pk_rdlen_fix(p, mark);
		} else if (strcmp(t[0], "cname") == 0) {
			pk_rr_head(p, t[1], DNS_TYPE_CNAME, 1);
			mark = p->n;
			pk_u16(p, 0);
			pk_name(p, t[2]);
			pk_rdlen_fix(p, mark);
		} else if (strcmp(t[0], "rr") == 0) {
			pk_rr_head(p, t[1], pk_type(t[2]), pk_type(t[3]));
			mark = p->n;
			pk_u16(p, 0);
			pk_hex(p, t[4]);
			pk_rdlen_fix(p, mark);
		} else if (strcmp(t[0], "rrl") == 0) {
			pk_rr_head(p, t[1], pk_type(t[2]), pk_type(t[3]));
			pk_u16(p, (unsigned)strtoul(t[4], NULL, 10));
			pk_hex(p, nt > 5 ? t[5] : "");
		} else if (strcmp(t[0], "raw") == 0) {
			pk_hex(p, t[1]);
		} else {
			printf("bad packet notation: %s\n", t[0]);
			abort();
		}
	}
}

/* ------------------------------------------------------------------ */
/* The result as text, to compare with the table */

static void mx_text(const struct dns_result *r, char *out, size_t len)
{
	size_t o = 0;
	unsigned i;

	out[0] = '\0';
	for (i = 0; i < r->nmx && o < len; i++) {
		o += (size_t)snprintf(out + o, len - o, "%s%u %s", i ? "," : "", r->mx[i].pref,
		                      r->mx[i].host);
	}
}

static void addr_text(const struct dns_result *r, char *out, size_t len)
{
	char a[INET6_ADDRSTRLEN];
	size_t o = 0;
	unsigned i;

	out[0] = '\0';
	for (i = 0; i < r->naddr && o < len; i++) {
		const struct sockaddr_storage *ss = &r->addr[i];

		if (ss->ss_family == AF_INET) {
			inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)ss)->sin_addr, a,
			          sizeof a);
		} else if (ss->ss_family == AF_INET6) {
			inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr,
			          a, sizeof a);
		} else {
			snprintf(a, sizeof a, "family %d", ss->ss_family);
		}
		o += (size_t)snprintf(out + o, len - o, "%s%s", i ? "," : "", a);
	}
}

static const char *status_name(int s)
{
	switch (s) {
	case DNS_OK: return "OK";
	case DNS_NXDOMAIN: return "NXDOMAIN";
	case DNS_NODATA: return "NODATA";
	case DNS_TEMPFAIL: return "TEMPFAIL";
	default: return "?";
	}
}

/* ------------------------------------------------------------------ */
/* dns_build_query */

static void test_build_query(void)
{
	static const unsigned char want[] = {
		0xbe, 0xef, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 4, 't', 'e', 's', 't', 0,
		0x00, 0x0f, 0x00, 0x01,
	};
	static const struct { const char *name; int ok; } names[] = {
		{ "example.test", 1 },
		{ "Example.TEST.", 1 },
		{ "localhost", 1 },
		{ "_mta-sts.example.test", 1 },
		{ "", 0 },
		{ ".", 0 },
		{ "a..b", 0 },
		{ ".a", 0 },
		{ "a.b..", 0 },
		{ "a b.test", 0 },
		{ "a\n.test", 0 },
		{ "[192.0.2.1]", 0 },
		{ "caf\xc3\xa9.test", 0 },   /* U-labels: the caller sends A-labels */
		{ "a\\.b.test", 0 },
	};
	unsigned char buf[512];
	char name[400];
	size_t i;
	int n;

	check_row = "build: known answer";
	n = dns_build_query(buf, sizeof buf, 0xbeef, "Example.TEST.", DNS_TYPE_MX);
	CHECK_INT(n, sizeof want);
	CHECK(n == (int)sizeof want && memcmp(buf, want, sizeof want) == 0);
	n = dns_build_query(buf, sizeof buf, 0xbeef, "example.test", DNS_TYPE_MX);
	CHECK(n == (int)sizeof want && memcmp(buf, want, sizeof want) == 0);
	check_row = "build: the buffer exactly fits";
	CHECK_INT(dns_build_query(buf, sizeof want, 0xbeef, "example.test", DNS_TYPE_MX),
	          sizeof want);
	check_row = "build: one byte short";
	CHECK_INT(dns_build_query(buf, sizeof want - 1, 0xbeef, "example.test", DNS_TYPE_MX), -1);
	CHECK_INT(dns_build_query(buf, 0, 0xbeef, "example.test", DNS_TYPE_MX), -1);
	check_row = "build: qtype 0";
	CHECK_INT(dns_build_query(buf, sizeof buf, 1, "example.test", 0), -1);

	for (i = 0; i < sizeof names / sizeof names[0]; i++) {
		check_row = names[i].name;
		n = dns_build_query(buf, sizeof buf, 1, names[i].name, DNS_TYPE_A);
		CHECK_INT(n > 0, names[i].ok);
	}

	/* Labels of 63 are fine, 64 not; 253 characters are the most a name
	 * has as text (255 octets on the wire). */
	check_row = "build: label of 63";
	memset(name, 'a', 63);
	strcpy(name + 63, ".test");
	CHECK_INT(dns_build_query(buf, sizeof buf, 1, name, DNS_TYPE_A), 12 + 1 + 63 + 5 + 1 + 4);
	check_row = "build: label of 64";
	memset(name, 'a', 64);
	strcpy(name + 64, ".test");
	CHECK_INT(dns_build_query(buf, sizeof buf, 1, name, DNS_TYPE_A), -1);
	/* 4 labels of 62 and one of 1 ... build names of text length L from
	 * labels of 63 "a"s joined by dots. */
	for (n = 250; n <= 256; n++) {
		size_t len = (size_t)n, k;

		for (k = 0; k < len; k++) {
			name[k] = (k % 64 == 63) ? '.' : 'a';
		}
		name[len] = '\0';
		if (name[len - 1] == '.') {
			name[len - 1] = 'b';
		}
		check_row = n == 253 ? "build: 253 characters" : "build: around 253 characters";
		CHECK_INT(dns_build_query(buf, sizeof buf, 1, name, DNS_TYPE_A) > 0, n <= 253);
		/* And with a final dot, one more character is fine. */
		name[len] = '.';
		name[len + 1] = '\0';
		CHECK_INT(dns_build_query(buf, sizeof buf, 1, name, DNS_TYPE_A) > 0, n <= 253);
	}
}

/* ------------------------------------------------------------------ */
/* dns_parse_reply: the table */

#define QX "hdr 1234 8180 1 "
#define QEX(type) "q example.test " type

struct row {
	const char *desc;
	const char *pkt;
	const char *name;      /* asked */
	unsigned qtype;
	int rc;
	int status;
	const char *mx;        /* "pref host,..." */
	const char *addrs;     /* "a,b" */
	int null_mx;
};

static const struct row rows[] = {
	/* Addresses */
	{ "A", QX "1; " QEX("A") "; a @12 192.0.2.1",
	  "example.test", DNS_TYPE_A, 0, DNS_OK, "", "192.0.2.1", 0 },
	{ "A, three", QX "3; " QEX("A") "; a @12 192.0.2.1; a @12 192.0.2.2; a @12 192.0.2.3",
	  "example.test", DNS_TYPE_A, 0, DNS_OK, "", "192.0.2.1,192.0.2.2,192.0.2.3", 0 },
	{ "A, owner uncompressed", QX "1; " QEX("A") "; a example.test 192.0.2.1",
	  "example.test", DNS_TYPE_A, 0, DNS_OK, "", "192.0.2.1", 0 },
	{ "AAAA", QX "2; " QEX("AAAA") "; aaaa @12 2001:db8::1; aaaa @12 ::1",
	  "example.test", DNS_TYPE_AAAA, 0, DNS_OK, "", "2001:db8::1,::1", 0 },
	{ "A asked, AAAA answered", QX "1; " QEX("A") "; aaaa @12 2001:db8::1",
	  "example.test", DNS_TYPE_A, 0, DNS_NODATA, "", "", 0 },
	{ "names are case-insensitive",
	  QX "1; q EXAMPLE.Test A; a eXaMpLe.TeSt 192.0.2.1",
	  "Example.test.", DNS_TYPE_A, 0, DNS_OK, "", "192.0.2.1", 0 },
	{ "records of other names are not ours",
	  QX "2; " QEX("A") "; a other.test 192.0.2.66; a sub.@12 192.0.2.67",
	  "example.test", DNS_TYPE_A, 0, DNS_NODATA, "", "", 0 },
	{ "additional section is not read",
	  "hdr 1234 8180 1 0 0 1; " QEX("A") "; a @12 192.0.2.66",
	  "example.test", DNS_TYPE_A, 0, DNS_NODATA, "", "", 0 },
	{ "class CH ignored", QX "1; " QEX("A") "; rr @12 A CH c0000201",
	  "example.test", DNS_TYPE_A, 0, DNS_NODATA, "", "", 0 },
	{ "unknown type skipped", QX "2; " QEX("A") "; rr @12 16 IN 03616263; a @12 192.0.2.1",
	  "example.test", DNS_TYPE_A, 0, DNS_OK, "", "192.0.2.1", 0 },
	{ "more than DNS_ADDR_MAX addresses",
	  QX "18; " QEX("A") "; a @12 10.0.0.1; a @12 10.0.0.2; a @12 10.0.0.3; a @12 10.0.0.4;"
	  "a @12 10.0.0.5; a @12 10.0.0.6; a @12 10.0.0.7; a @12 10.0.0.8; a @12 10.0.0.9;"
	  "a @12 10.0.0.10; a @12 10.0.0.11; a @12 10.0.0.12; a @12 10.0.0.13; a @12 10.0.0.14;"
	  "a @12 10.0.0.15; a @12 10.0.0.16; a @12 10.0.0.17; a @12 10.0.0.18",
	  "example.test", DNS_TYPE_A, 0, DNS_OK, "",
	  "10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4,10.0.0.5,10.0.0.6,10.0.0.7,10.0.0.8,10.0.0.9,"
	  "10.0.0.10,10.0.0.11,10.0.0.12,10.0.0.13,10.0.0.14,10.0.0.15,10.0.0.16", 0 },

	/* MX */
	{ "MX, sorted by preference, stable among equals",
	  QX "4; " QEX("MX") "; mx @12 20 mx2.example.test; mx @12 10 mx1.example.test;"
	  "mx @12 30 mx3.example.test; mx @12 10 mx1b.example.test",
	  "example.test", DNS_TYPE_MX, 0, DNS_OK,
	  "10 mx1.example.test,10 mx1b.example.test,20 mx2.example.test,30 mx3.example.test", "", 0 },
	{ "MX targets compressed",
	  QX "2; " QEX("MX") "; mx @12 10 mx1.@12; mx @12 20 mx2.@12",
	  "example.test", DNS_TYPE_MX, 0, DNS_OK, "10 mx1.example.test,20 mx2.example.test", "", 0 },
	{ "MX target pointing at an earlier target",
	  /* The first record at 30: owner 2, fixed 10, preference 2, so its
	   * target "mx1.@12" sits at 44; the second's target points there. */
	  QX "2; " QEX("MX") "; mx @12 10 mx1.@12; mx @12 20 @44",
	  "example.test", DNS_TYPE_MX, 0, DNS_OK, "10 mx1.example.test,20 mx1.example.test", "", 0 },
	{ "MX host in capitals comes out lower case",
	  QX "1; " QEX("MX") "; mx @12 5 MX.Example.TEST",
	  "example.test", DNS_TYPE_MX, 0, DNS_OK, "5 mx.example.test", "", 0 },
	{ "MX preference 65535", QX "1; " QEX("MX") "; mx @12 65535 mx.example.test",
	  "example.test", DNS_TYPE_MX, 0, DNS_OK, "65535 mx.example.test", "", 0 },
	{ "MX: the 16 most preferred of 18",
	  QX "18; " QEX("MX") "; mx @12 180 m18.x; mx @12 10 m1.x; mx @12 20 m2.x; mx @12 30 m3.x;"
	  "mx @12 40 m4.x; mx @12 50 m5.x; mx @12 60 m6.x; mx @12 70 m7.x; mx @12 80 m8.x;"
	  "mx @12 90 m9.x; mx @12 100 m10.x; mx @12 110 m11.x; mx @12 120 m12.x; mx @12 130 m13.x;"
	  "mx @12 140 m14.x; mx @12 150 m15.x; mx @12 5 m0.x; mx @12 170 m17.x",
	  "example.test", DNS_TYPE_MX, 0, DNS_OK,
	  "5 m0.x,10 m1.x,20 m2.x,30 m3.x,40 m4.x,50 m5.x,60 m6.x,70 m7.x,80 m8.x,90 m9.x,"
	  "100 m10.x,110 m11.x,120 m12.x,130 m13.x,140 m14.x,150 m15.x", "", 0 },
	{ "null MX (RFC 7505)", QX "1; " QEX("MX") "; mx @12 0 .",
	  "example.test", DNS_TYPE_MX, 0, DNS_OK, "", "", 1 },
	{ "null MX among others is dropped",
	  QX "2; " QEX("MX") "; mx @12 0 .; mx @12 10 mx1.example.test",
	  "example.test", DNS_TYPE_MX, 0, DNS_OK, "10 mx1.example.test", "", 0 },
	{ "MX naming no host name: not NODATA",
	  QX "1; " QEX("MX") "; rr @12 MX IN 000a03612062c00c",
	  "example.test", DNS_TYPE_MX, 0, DNS_TEMPFAIL, "", "", 0 },
	{ "MX asked, only A in the answer",
	  QX "1; " QEX("MX") "; a @12 192.0.2.1",
	  "example.test", DNS_TYPE_MX, 0, DNS_NODATA, "", "", 0 },

	/* CNAME */
	{ "CNAME chain",
	  "hdr 1234 8180 1 3; q www.example.test A; cname @12 alias.example.test;"
	  "cname alias.example.test host.example.test; a host.example.test 192.0.2.7",
	  "www.example.test", DNS_TYPE_A, 0, DNS_OK, "", "192.0.2.7", 0 },
	{ "CNAME chain in reverse order",
	  "hdr 1234 8180 1 3; q www.example.test A; a host.example.test 192.0.2.7;"
	  "cname alias.example.test host.example.test; cname @12 alias.example.test",
	  "www.example.test", DNS_TYPE_A, 0, DNS_OK, "", "192.0.2.7", 0 },
	{ "CNAME: the old name's records do not count",
	  "hdr 1234 8180 1 2; q www.example.test A; a @12 192.0.2.66; cname @12 host.example.test",
	  "www.example.test", DNS_TYPE_A, 0, DNS_NODATA, "", "", 0 },
	{ "CNAME for MX",
	  QX "2; " QEX("MX") "; cname @12 mail.example.net; mx mail.example.net 10 mx.example.net",
	  "example.test", DNS_TYPE_MX, 0, DNS_OK, "10 mx.example.net", "", 0 },
	{ "CNAME without the target's records",
	  QX "1; " QEX("A") "; cname @12 elsewhere.test",
	  "example.test", DNS_TYPE_A, 0, DNS_NODATA, "", "", 0 },
	{ "CNAME loop", QX "3; " QEX("A") "; cname @12 b.test; cname b.test @12; a b.test 192.0.2.1",
	  "example.test", DNS_TYPE_A, 0, DNS_TEMPFAIL, "", "", 0 },
	{ "CNAME to itself", QX "1; " QEX("A") "; cname @12 @12",
	  "example.test", DNS_TYPE_A, 0, DNS_TEMPFAIL, "", "", 0 },
	{ "CNAME chain of 8 hops",
	  "hdr 1234 8180 1 9; q c0.test A; cname c0.test c1.test; cname c1.test c2.test;"
	  "cname c2.test c3.test; cname c3.test c4.test; cname c4.test c5.test;"
	  "cname c5.test c6.test; cname c6.test c7.test; cname c7.test c8.test; a c8.test 192.0.2.8",
	  "c0.test", DNS_TYPE_A, 0, DNS_OK, "", "192.0.2.8", 0 },
	{ "CNAME chain of 9 hops",
	  "hdr 1234 8180 1 10; q c0.test A; cname c0.test c1.test; cname c1.test c2.test;"
	  "cname c2.test c3.test; cname c3.test c4.test; cname c4.test c5.test;"
	  "cname c5.test c6.test; cname c6.test c7.test; cname c7.test c8.test;"
	  "cname c8.test c9.test; a c9.test 192.0.2.9",
	  "c0.test", DNS_TYPE_A, 0, DNS_TEMPFAIL, "", "", 0 },

	/* rcodes */
	{ "NXDOMAIN", "hdr 1234 8183 1 0; " QEX("A"),
	  "example.test", DNS_TYPE_A, 0, DNS_NXDOMAIN, "", "", 0 },
	{ "NXDOMAIN for MX", "hdr 1234 8183 1 0 1 0; " QEX("MX") "; rr test 6 IN 00",
	  "example.test", DNS_TYPE_MX, 0, DNS_NXDOMAIN, "", "", 0 },
	{ "NODATA", "hdr 1234 8180 1 0; " QEX("AAAA"),
	  "example.test", DNS_TYPE_AAAA, 0, DNS_NODATA, "", "", 0 },
	{ "NODATA for MX", "hdr 1234 8180 1 0; " QEX("MX"),
	  "example.test", DNS_TYPE_MX, 0, DNS_NODATA, "", "", 0 },
	{ "SERVFAIL", "hdr 1234 8182 1 0; " QEX("MX"),
	  "example.test", DNS_TYPE_MX, 0, DNS_TEMPFAIL, "", "", 0 },
	{ "REFUSED", "hdr 1234 8105 1 0; " QEX("A"),
	  "example.test", DNS_TYPE_A, 0, DNS_TEMPFAIL, "", "", 0 },
	{ "FORMERR", "hdr 1234 8101 1 0; " QEX("A"),
	  "example.test", DNS_TYPE_A, 0, DNS_TEMPFAIL, "", "", 0 },
	{ "SERVFAIL with records", "hdr 1234 8182 1 1; " QEX("A") "; a @12 192.0.2.66",
	  "example.test", DNS_TYPE_A, 0, DNS_TEMPFAIL, "", "", 0 },

	/* Truncation (TC) */
	{ "TC: the whole records count",
	  "hdr 1234 8380 1 3; " QEX("A") "; a @12 192.0.2.1; a @12 192.0.2.2; raw c00c000100",
	  "example.test", DNS_TYPE_A, 0, DNS_OK, "", "192.0.2.1,192.0.2.2", 0 },
	{ "TC without records",
	  "hdr 1234 8380 1 0; " QEX("MX"),
	  "example.test", DNS_TYPE_MX, 0, DNS_TEMPFAIL, "", "", 0 },
	{ "TC, answer count larger than sent",
	  "hdr 1234 8380 1 5; " QEX("MX") "; mx @12 10 mx1.@12",
	  "example.test", DNS_TYPE_MX, 0, DNS_OK, "10 mx1.example.test", "", 0 },

	/* Not ours, or not a reply: ignored */
	{ "wrong id", "hdr 1235 8180 1 1; " QEX("A") "; a @12 192.0.2.66",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "wrong question name", QX "1; q example.tesu A; a @12 192.0.2.66",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "question a suffix of ours", QX "1; q test A; a @12 192.0.2.66",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "question longer than ours", QX "1; q www.example.test A; a @12 192.0.2.66",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "wrong question type", QX "1; " QEX("AAAA") "; a @12 192.0.2.66",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "wrong question class", QX "1; q example.test A CH; a @12 192.0.2.66",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "no question", "hdr 1234 8180 0 1; a example.test 192.0.2.66",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "two questions", "hdr 1234 8180 2 0; " QEX("A") "; " QEX("A"),
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "a query, not a reply", "hdr 1234 0100 1 1; " QEX("A") "; a @12 192.0.2.66",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "opcode not QUERY", "hdr 1234 a180 1 1; " QEX("A") "; a @12 192.0.2.66",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "qtype not ours to parse", QX "0; q example.test 16",
	  "example.test", 16, -1, 0, NULL, NULL, 0 },
	{ "bad name asked", QX "1; " QEX("A") "; a @12 192.0.2.1",
	  "example..test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },

	/* Malformed */
	{ "empty", "", "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "header only", "hdr 1234 8180 1 0", "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "answer count larger than sent",
	  QX "2; " QEX("A") "; a @12 192.0.2.1", "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "rdlength past the end", QX "1; " QEX("A") "; rrl @12 A IN 4 c000",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "A of 5 bytes", QX "1; " QEX("A") "; rr @12 A IN c000020100",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "AAAA of 4 bytes", QX "1; " QEX("AAAA") "; rr @12 AAAA IN 20010db8",
	  "example.test", DNS_TYPE_AAAA, -1, 0, NULL, NULL, 0 },
	{ "bad A of another name still rejects", QX "2; " QEX("A") "; rr x.test A IN 01; a @12 192.0.2.1",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "MX data shorter than its name", QX "1; " QEX("MX") "; rrl @12 MX IN 4 000a036d7831c00c",
	  "example.test", DNS_TYPE_MX, -1, 0, NULL, NULL, 0 },
	{ "MX data longer than its name", QX "1; " QEX("MX") "; rr @12 MX IN 000ac00c00",
	  "example.test", DNS_TYPE_MX, -1, 0, NULL, NULL, 0 },
	{ "MX of 2 bytes", QX "1; " QEX("MX") "; rr @12 MX IN 000a",
	  "example.test", DNS_TYPE_MX, -1, 0, NULL, NULL, 0 },
	{ "CNAME data past its name", QX "1; " QEX("A") "; rr @12 CNAME IN c00c00",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },

	/* Compression */
	{ "question name points at itself", "hdr 1234 8180 1 0; raw c00c00010001",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "two pointers pointing at each other", "hdr 1234 8180 1 0; raw c00ec00c00010001",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "owner points at itself", QX "1; " QEX("A") "; a @30 192.0.2.1",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "label then a pointer back to it (loop)", QX "1; " QEX("A") "; a x.@30 192.0.2.1",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "MX target points at itself", QX "1; " QEX("MX") "; mx @12 10 mx.@44",
	  "example.test", DNS_TYPE_MX, -1, 0, NULL, NULL, 0 },
	{ "pointer past the end", QX "1; " QEX("A") "; a @999 192.0.2.1",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "pointer cut in half", QX "1; " QEX("A") "; raw c0",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "pointer into the header", QX "1; " QEX("A") "; a @2 192.0.2.1",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "label type 0x40", QX "1; " QEX("A") "; raw 41000001000100000e1000047f000001",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "label type 0x80", QX "1; " QEX("A") "; raw 81000001000100000e1000047f000001",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },

	/* Oversized names */
	{ "owner of 256 octets", QX "1; " QEX("A") "; a a*63.b*63.c*63.d*49.@12 192.0.2.1",
	  "example.test", DNS_TYPE_A, -1, 0, NULL, NULL, 0 },
	{ "owner of 255 octets", QX "1; " QEX("A") "; a a*63.b*63.c*63.d*48.@12 192.0.2.1",
	  "example.test", DNS_TYPE_A, 0, DNS_NODATA, "", "", 0 },
	{ "MX target of 320 octets",
	  QX "1; " QEX("MX") "; mx @12 10 a*63.b*63.c*63.d*63.e*63",
	  "example.test", DNS_TYPE_MX, -1, 0, NULL, NULL, 0 },
	{ "MX target of 255 octets (253 characters)",
	  QX "1; " QEX("MX") "; mx @12 10 a*63.b*63.c*63.d*61",
	  "example.test", DNS_TYPE_MX, 0, DNS_OK, NULL, "", 0 },   /* see test_long_names */
	{ "a label of 64 is a reserved label type",
	  QX "1; " QEX("MX") "; mx @12 10 a*64.test",
	  "example.test", DNS_TYPE_MX, -1, 0, NULL, NULL, 0 },
	{ "many pointers, each a label",
	  /* owners at 30, 48, 66, each a label and a pointer to the one before */
	  QX "3; " QEX("A") "; a b.@12 192.0.2.1; a c.@30 192.0.2.2; a d.@48 192.0.2.3",
	  "example.test", DNS_TYPE_A, 0, DNS_NODATA, "", "", 0 },
};

/* What a result looks like before a parse: set, to see what changed. */
static void result_poison(struct dns_result *r)
{
	memset(r, 0x5a, sizeof *r);
	r->status = (enum dns_status)77;
	r->nmx = 0;
	r->naddr = 0;
	r->null_mx = 0;
}

/* Whatever the packet, a result that parse filled is one a caller can use
 * as it stands. */
static int result_sane(const struct dns_result *r)
{
	unsigned i;

	if (r->status != DNS_OK && r->status != DNS_NXDOMAIN && r->status != DNS_NODATA &&
	    r->status != DNS_TEMPFAIL) {
		return 0;
	}
	if (r->nmx > DNS_MX_MAX || r->naddr > DNS_ADDR_MAX || (r->null_mx != 0 && r->null_mx != 1)) {
		return 0;
	}
	for (i = 0; i < r->nmx; i++) {
		if (memchr(r->mx[i].host, '\0', sizeof r->mx[i].host) == NULL || r->mx[i].host[0] == '\0' ||
		    r->mx[i].pref > 65535 || (i > 0 && r->mx[i - 1].pref > r->mx[i].pref)) {
			return 0;
		}
	}
	for (i = 0; i < r->naddr; i++) {
		if (r->addr[i].ss_family != AF_INET && r->addr[i].ss_family != AF_INET6) {
			return 0;
		}
	}
	return 1;
}

static void run_row(const struct row *w)
{
	static struct pk p;
	static struct dns_result r, before;
	char text[2048];
	size_t cut;
	int rc;

	pk_build(&p, w->pkt);
	result_poison(&r);
	before = r;
	rc = dns_parse_reply(p.b, p.n, 0x1234, w->name, (uint16_t)w->qtype, &r);
	CHECK_INT(rc, w->rc);
	if (rc < 0) {
		/* Ignored packets leave the result alone. */
		CHECK(memcmp(&r, &before, sizeof r) == 0);
	}
	if (rc == 0 && w->rc == 0) {
		CHECK_STR(status_name(r.status), status_name(w->status));
		if (w->mx != NULL) {
			mx_text(&r, text, sizeof text);
			CHECK_STR(text, w->mx);
		}
		if (w->addrs != NULL) {
			addr_text(&r, text, sizeof text);
			CHECK_STR(text, w->addrs);
		}
		CHECK_INT(r.null_mx, w->null_mx);
		CHECK(result_sane(&r));
	}

	/* Every shorter packet: ignored, or a usable result; never a read past
	 * the end (ASan: each cut is copied to a buffer of exactly its size). */
	for (cut = 0; cut < p.n; cut++) {
		unsigned char *b = malloc(cut > 0 ? cut : 1);

		memcpy(b, p.b, cut);
		result_poison(&r);
		before = r;
		rc = dns_parse_reply(b, cut, 0x1234, w->name, (uint16_t)w->qtype, &r);
		free(b);
		if (rc < 0) {
			if (memcmp(&r, &before, sizeof r) != 0) {
				CHECK(!"a cut packet that was ignored changed the result");
				break;
			}
		} else if (rc != 0 || !result_sane(&r)) {
			CHECK(!"a cut packet gave an inconsistent result");
			break;
		}
	}
	CHECK(cut == p.n);
}

/* Random mutations of every good packet: the parser must not crash nor
 * return nonsense (ASan and UBSan watch). */
static void test_mutations(void)
{
	static struct pk p;
	static struct dns_result r;
	unsigned long long seed = 0x9e3779b97f4a7c15ull;
	unsigned i, k, flips, bad = 0, runs = 0;
	size_t j;
	int rc;

	check_row = "mutations";
	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		if (rows[i].rc != 0) {
			continue;
		}
		for (k = 0; k < 2000; k++) {
			unsigned char *b;
			size_t n;

			pk_build(&p, rows[i].pkt);
			seed = seed * 6364136223846793005ull + 1442695040888963407ull;
			flips = 1 + (unsigned)(seed >> 60) % 4;
			for (j = 0; j < flips; j++) {
				seed = seed * 6364136223846793005ull + 1442695040888963407ull;
				p.b[(seed >> 33) % p.n] ^= (unsigned char)(1u << ((seed >> 20) & 7));
			}
			/* Keep the id and question often enough to go deep. */
			if (k % 2 == 0) {
				p.b[0] = 0x12;
				p.b[1] = 0x34;
			}
			seed = seed * 6364136223846793005ull + 1442695040888963407ull;
			n = k % 5 == 0 ? (size_t)((seed >> 33) % (p.n + 1)) : p.n;
			b = malloc(n > 0 ? n : 1);
			memcpy(b, p.b, n);
			result_poison(&r);
			rc = dns_parse_reply(b, n, 0x1234, rows[i].name, (uint16_t)rows[i].qtype, &r);
			free(b);
			runs++;
			if (rc == 0 && !result_sane(&r)) {
				bad++;
			}
		}
	}
	CHECK_INT(bad, 0);
	CHECK(runs > 0);
}

/* The longest name there is: 255 octets on the wire, 253 characters. */
static void test_long_names(void)
{
	static struct pk p;
	static struct dns_result r;
	char want[DNS_NAME_MAX + 1];
	size_t i;

	check_row = "MX target of 253 characters";
	for (i = 0; i < 253; i++) {
		want[i] = i < 63 ? 'a' : i == 63 ? '.' : i < 127 ? 'b' : i == 127 ? '.' :
		          i < 191 ? 'c' : i == 191 ? '.' : 'd';
	}
	want[253] = '\0';
	pk_build(&p, QX "1; " QEX("MX") "; mx @12 10 a*63.b*63.c*63.d*61");
	CHECK_INT(dns_parse_reply(p.b, p.n, 0x1234, "example.test", DNS_TYPE_MX, &r), 0);
	CHECK_INT(r.nmx, 1);
	CHECK_INT(strlen(r.mx[0].host), 253);
	CHECK_STR(r.mx[0].host, want);
	/* And asking for it works too. */
	CHECK(dns_build_query(p.b, sizeof p.b, 1, want, DNS_TYPE_A) > 0);
}

static void test_append(void)
{
	static struct pk p;
	static struct dns_result r;
	char text[256];

	check_row = "A then AAAA into one result";
	memset(&r, 0, sizeof r);
	pk_build(&p, QX "1; " QEX("A") "; a @12 192.0.2.1");
	CHECK_INT(dns_parse_reply(p.b, p.n, 0x1234, "example.test", DNS_TYPE_A, &r), 0);
	pk_build(&p, QX "1; " QEX("AAAA") "; aaaa @12 2001:db8::1");
	CHECK_INT(dns_parse_reply(p.b, p.n, 0x1234, "example.test", DNS_TYPE_AAAA, &r), 0);
	addr_text(&r, text, sizeof text);
	CHECK_STR(text, "192.0.2.1,2001:db8::1");
	CHECK_INT(r.status, DNS_OK);
	/* A NODATA reply appends nothing and says so. */
	pk_build(&p, "hdr 1234 8180 1 0; " QEX("AAAA"));
	CHECK_INT(dns_parse_reply(p.b, p.n, 0x1234, "example.test", DNS_TYPE_AAAA, &r), 0);
	CHECK_INT(r.naddr, 2);
	CHECK_INT(r.status, DNS_NODATA);
}

/* ------------------------------------------------------------------ */
/* resolv.conf */

static void test_resolv_conf(void)
{
	static const struct { const char *text; const char *want; } rows_rc[] = {
		{ "nameserver 192.0.2.53\n", "192.0.2.53" },
		{ "nameserver 192.0.2.53", "192.0.2.53" },
		{ "# generated by udhcpc\nsearch lan\nnameserver 10.0.0.1\nnameserver 10.0.0.2\n",
		  "10.0.0.1" },
		{ "\t nameserver\t2001:db8::53  # primary\n", "2001:db8::53" },
		{ "nameserver fe80::1%1\n", "fe80::1" },
		{ "nameserver bogus\nnameserver 10.0.0.9\n", "10.0.0.9" },
		{ "nameserver 10.0.0.7\r\n", "10.0.0.7" },
		{ "nameserver 10.0.0.7;comment\n", "10.0.0.7" },
		{ "# nameserver 10.0.0.1\n", NULL },
		{ "nameservers 10.0.0.1\n", NULL },
		{ "nameserver\n", NULL },
		{ "nameserver 999.1.1.1\n", NULL },
		{ "domain lan\n", NULL },
		{ "", NULL },
	};
	struct sockaddr_storage ss;
	socklen_t len;
	char a[INET6_ADDRSTRLEN];
	size_t i;
	int rc;

	for (i = 0; i < sizeof rows_rc / sizeof rows_rc[0]; i++) {
		check_row = rows_rc[i].text;
		rc = dns_parse_resolv_conf(rows_rc[i].text, strlen(rows_rc[i].text), &ss, &len);
		CHECK_INT(rc, rows_rc[i].want != NULL ? 0 : -1);
		if (rc != 0 || rows_rc[i].want == NULL) {
			continue;
		}
		if (ss.ss_family == AF_INET) {
			const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)&ss;

			inet_ntop(AF_INET, &sin->sin_addr, a, sizeof a);
			CHECK_INT(ntohs(sin->sin_port), 53);
			CHECK_INT(len, sizeof *sin);
		} else {
			const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)&ss;

			inet_ntop(AF_INET6, &sin6->sin6_addr, a, sizeof a);
			CHECK_INT(ntohs(sin6->sin6_port), 53);
			CHECK_INT(len, sizeof *sin6);
		}
		CHECK_STR(a, rows_rc[i].want);
	}
	/* Only len bytes are read: no NUL needed at the end. */
	check_row = "resolv.conf without a NUL";
	CHECK_INT(dns_parse_resolv_conf("nameserver 10.1.1.1XXXX", 21, &ss, &len), -1);
	CHECK_INT(dns_parse_resolv_conf("nameserver 10.1.1.1XXXX", 19, &ss, &len), 0);
}

/* ------------------------------------------------------------------ */
/* On the loop, against a fake resolver in this process */

enum fake_mode {
	FAKE_GOOD,           /* the answer */
	FAKE_SPOOF_FIRST,    /* wrong id, wrong name, wrong type, then the answer */
	FAKE_AAAA_FIRST,     /* replies to A only after the AAAA reply */
	FAKE_DROP_FIRST,     /* ignores each question's first try */
	FAKE_SILENT,         /* never answers */
};

static int fake_fd = -1;
static enum fake_mode fake_mode;
static unsigned fake_queries;     /* datagrams received */
static struct { unsigned char b[512]; size_t n; struct sockaddr_storage from; socklen_t fl; } held;
static unsigned seen_a, seen_aaaa, seen_mx;

/* The reply to the query q (n bytes), with its own question; id_xor and
 * break_name make it one that must be ignored. */
static size_t fake_answer(const unsigned char *q, size_t n, unsigned char *out, unsigned id_xor,
                          int break_name)
{
	unsigned type = (unsigned)q[n - 4] << 8 | q[n - 3];
	static struct pk p;
	size_t mark;

	memcpy(p.b, q, n);
	p.n = n;
	p.b[0] ^= (unsigned char)(id_xor >> 8);
	p.b[1] ^= (unsigned char)id_xor;
	p.b[2] = 0x81;
	p.b[3] = 0x80;
	p.b[6] = 0;
	p.b[7] = type == DNS_TYPE_MX ? 2 : 1;
	if (break_name) {
		p.b[13] ^= 0x01;   /* the first letter of the name */
	}
	if (type == DNS_TYPE_A) {
		pk_rr_head(&p, "@12", DNS_TYPE_A, 1);
		pk_u16(&p, 4);
		pk_hex(&p, "c0000207");
	} else if (type == DNS_TYPE_AAAA) {
		pk_rr_head(&p, "@12", DNS_TYPE_AAAA, 1);
		pk_u16(&p, 16);
		pk_hex(&p, "20010db8000000000000000000000007");
	} else {
		pk_rr_head(&p, "@12", DNS_TYPE_MX, 1);
		mark = p.n;
		pk_u16(&p, 0);
		pk_u16(&p, 20);
		pk_name(&p, "mx2.@12");
		pk_rdlen_fix(&p, mark);
		pk_rr_head(&p, "@12", DNS_TYPE_MX, 1);
		mark = p.n;
		pk_u16(&p, 0);
		pk_u16(&p, 10);
		pk_name(&p, "mx1.@12");
		pk_rdlen_fix(&p, mark);
	}
	memcpy(out, p.b, p.n);
	return p.n;
}

static void fake_send(const unsigned char *b, size_t n, const struct sockaddr_storage *to,
                      socklen_t tl)
{
	(void)!sendto(fake_fd, b, n, 0, (const struct sockaddr *)to, tl);
}

static void fake_ready(void *ctx, int revents)
{
	unsigned char q[512], out[1024];
	struct sockaddr_storage from;
	socklen_t fl = sizeof from;
	ssize_t n;
	unsigned type;
	size_t m;

	(void)ctx;
	(void)revents;
	while ((n = recvfrom(fake_fd, q, sizeof q, 0, (struct sockaddr *)&from, &fl)) > 0) {
		fake_queries++;
		if (n < 17) {
			continue;
		}
		type = (unsigned)q[n - 4] << 8 | q[n - 3];
		switch (fake_mode) {
		case FAKE_SILENT:
			break;
		case FAKE_GOOD:
			m = fake_answer(q, (size_t)n, out, 0, 0);
			fake_send(out, m, &from, fl);
			break;
		case FAKE_SPOOF_FIRST:
			m = fake_answer(q, (size_t)n, out, 0x0101, 0);
			fake_send(out, m, &from, fl);
			m = fake_answer(q, (size_t)n, out, 0, 1);
			fake_send(out, m, &from, fl);
			m = fake_answer(q, (size_t)n, out, 0, 0);
			out[(size_t)n - 3] ^= 0x40;    /* the question's type */
			fake_send(out, m, &from, fl);
			m = fake_answer(q, (size_t)n, out, 0, 0);
			fake_send(out, m, &from, fl);
			break;
		case FAKE_AAAA_FIRST:
			if (type == DNS_TYPE_A) {
				memcpy(held.b, q, (size_t)n);
				held.n = (size_t)n;
				held.from = from;
				held.fl = fl;
			} else {
				m = fake_answer(q, (size_t)n, out, 0, 0);
				fake_send(out, m, &from, fl);
				if (held.n > 0) {
					m = fake_answer(held.b, held.n, out, 0, 0);
					fake_send(out, m, &held.from, held.fl);
					held.n = 0;
				}
			}
			break;
		case FAKE_DROP_FIRST:
			if ((type == DNS_TYPE_A && seen_a++ == 0) ||
			    (type == DNS_TYPE_AAAA && seen_aaaa++ == 0) ||
			    (type == DNS_TYPE_MX && seen_mx++ == 0)) {
				break;
			}
			m = fake_answer(q, (size_t)n, out, 0, 0);
			fake_send(out, m, &from, fl);
			break;
		}
		fl = sizeof from;
	}
}

static struct dns_result got;
static unsigned ncalls;
static int guard_fired;
static int guard_slot = -1;

static void on_done(void *ctx, const struct dns_result *r)
{
	(void)ctx;
	got = *r;
	ncalls++;
	loop_stop();
}

static void on_done_count(void *ctx, const struct dns_result *r)
{
	unsigned *n = ctx;

	(void)r;
	(*n)++;
}

/* The relay's pattern: from the MX answer, ask for the first host's
 * addresses, inside the callback. */
static void on_mx_then_addr(void *ctx, const struct dns_result *r)
{
	int *h = ctx;

	*h = r->nmx > 0 ? dns_query_addr(r->mx[0].host, on_done, NULL) : -2;
}

static void guard(void *ctx, int revents)
{
	(void)ctx;
	(void)revents;
	guard_fired = 1;
	loop_stop();
}

/* Runs the loop until a callback stops it, or ms pass. */
static void run_for(int64_t ms)
{
	guard_fired = 0;
	guard_slot = loop_add(-1, 0, guard, NULL);
	loop_deadline(guard_slot, loop_now() + ms);
	(void)loop_run();
	loop_del(guard_slot);
}

static void test_loop(void)
{
	struct sockaddr_in sin;
	socklen_t sl = sizeof sin;
	struct conf c;
	char text[512];
	unsigned counts[DNS_QUERIES + 1];
	int h, h2, handles[DNS_QUERIES + 1], i;
	int64_t t0;

	check_row = "loop: set-up";
	CHECK_INT(loop_init(32), 0);
	fake_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK_INT(bind(fake_fd, (struct sockaddr *)&sin, sizeof sin), 0);
	CHECK_INT(getsockname(fake_fd, (struct sockaddr *)&sin, &sl), 0);
	CHECK(loop_add(fake_fd, POLLIN, fake_ready, NULL) >= 0);
	memset(&c, 0, sizeof c);
	memcpy(&c.resolver, &sin, sizeof sin);
	c.resolver_len = sizeof sin;
	CHECK_INT(dns_init(&c), 0);
	CHECK_INT(dns_size(), DNS_QUERIES);

	check_row = "loop: MX";
	fake_mode = FAKE_GOOD;
	ncalls = 0;
	h = dns_query_mx("Example.Test", on_done, NULL);
	CHECK(h >= 0);
	CHECK_INT(ncalls, 0);   /* never from within dns_query_* */
	CHECK_INT(dns_used(), 1);
	run_for(3000);
	CHECK_INT(ncalls, 1);
	CHECK_INT(got.status, DNS_OK);
	mx_text(&got, text, sizeof text);
	CHECK_STR(text, "10 mx1.example.test,20 mx2.example.test");
	CHECK_INT(got.naddr, 0);
	CHECK_INT(dns_used(), 0);
	dns_cancel(h);          /* stale: ignored */

	check_row = "loop: a query started from a callback";
	ncalls = 0;
	h2 = -3;
	CHECK(dns_query_mx("example.test", on_mx_then_addr, &h2) >= 0);
	run_for(3000);
	CHECK(h2 >= 0);
	CHECK_INT(ncalls, 1);
	CHECK_INT(got.status, DNS_OK);
	addr_text(&got, text, sizeof text);
	CHECK_STR(text, "192.0.2.7,2001:db8::7");
	CHECK_INT(dns_used(), 0);

	check_row = "loop: spoofed replies first";
	fake_mode = FAKE_SPOOF_FIRST;
	ncalls = 0;
	CHECK(dns_query_addr("spoof.test", on_done, NULL) >= 0);
	run_for(3000);
	CHECK_INT(ncalls, 1);
	CHECK_INT(guard_fired, 0);
	CHECK_INT(got.status, DNS_OK);
	addr_text(&got, text, sizeof text);
	CHECK_STR(text, "192.0.2.7,2001:db8::7");

	check_row = "loop: AAAA answered before A, A still first";
	fake_mode = FAKE_AAAA_FIRST;
	ncalls = 0;
	CHECK(dns_query_addr("order.test", on_done, NULL) >= 0);
	run_for(3000);
	CHECK_INT(ncalls, 1);
	addr_text(&got, text, sizeof text);
	CHECK_STR(text, "192.0.2.7,2001:db8::7");

	check_row = "loop: literals without the network";
	fake_mode = FAKE_SILENT;
	fake_queries = 0;
	ncalls = 0;
	CHECK(dns_query_addr("[192.0.2.99]", on_done, NULL) >= 0);
	CHECK_INT(ncalls, 0);
	run_for(1000);
	CHECK_INT(ncalls, 1);
	CHECK_INT(guard_fired, 0);
	CHECK_INT(got.status, DNS_OK);
	addr_text(&got, text, sizeof text);
	CHECK_STR(text, "192.0.2.99");
	CHECK(dns_query_addr("[IPv6:2001:db8::99]", on_done, NULL) >= 0);
	run_for(1000);
	addr_text(&got, text, sizeof text);
	CHECK_STR(text, "2001:db8::99");
	CHECK(dns_query_addr("192.0.2.98", on_done, NULL) >= 0);
	run_for(1000);
	addr_text(&got, text, sizeof text);
	CHECK_STR(text, "192.0.2.98");
	CHECK_INT(fake_queries, 0);

	check_row = "loop: a bad name is NXDOMAIN, through the loop";
	ncalls = 0;
	CHECK(dns_query_mx("bad..name", on_done, NULL) >= 0);
	CHECK_INT(ncalls, 0);
	run_for(1000);
	CHECK_INT(ncalls, 1);
	CHECK_INT(got.status, DNS_NXDOMAIN);
	CHECK(dns_query_addr("[192.0.2.300]", on_done, NULL) >= 0);
	run_for(1000);
	CHECK_INT(got.status, DNS_NXDOMAIN);
	CHECK_INT(fake_queries, 0);

	check_row = "loop: cancelled, never called";
	fake_mode = FAKE_GOOD;
	ncalls = 0;
	h = dns_query_mx("example.test", on_done, NULL);
	CHECK(h >= 0);
	dns_cancel(h);
	CHECK_INT(dns_used(), 0);
	h = dns_query_addr("[192.0.2.1]", on_done, NULL);
	dns_cancel(h);
	run_for(300);
	CHECK_INT(ncalls, 0);
	CHECK_INT(guard_fired, 1);

	check_row = "loop: a stale handle does not cancel the next query";
	ncalls = 0;
	h = dns_query_mx("example.test", on_done, NULL);
	run_for(3000);
	CHECK_INT(ncalls, 1);
	h2 = dns_query_mx("example.test", on_done, NULL);
	CHECK(h2 >= 0 && h2 != h);
	dns_cancel(h);
	run_for(3000);
	CHECK_INT(ncalls, 2);

	check_row = "loop: a full pool answers -1";
	fake_mode = FAKE_SILENT;
	for (i = 0; i <= DNS_QUERIES; i++) {
		counts[i] = 0;
		handles[i] = dns_query_mx("example.test", on_done_count, &counts[i]);
	}
	for (i = 0; i < DNS_QUERIES; i++) {
		CHECK(handles[i] >= 0);
	}
	CHECK_INT(handles[DNS_QUERIES], -1);
	CHECK_INT(dns_used(), DNS_QUERIES);
	for (i = 0; i < DNS_QUERIES; i++) {
		dns_cancel(handles[i]);
	}
	CHECK_INT(dns_used(), 0);
	run_for(200);
	for (i = 0; i <= DNS_QUERIES; i++) {
		CHECK_INT(counts[i], 0);
	}

	check_row = "loop: first try lost, the second answered";
	fake_mode = FAKE_DROP_FIRST;
	seen_a = seen_aaaa = seen_mx = 0;
	ncalls = 0;
	t0 = loop_now();
	CHECK(dns_query_addr("retry.test", on_done, NULL) >= 0);
	run_for(5000);
	CHECK_INT(ncalls, 1);
	CHECK(loop_now() - t0 >= DNS_TRY_MS - 50 && loop_now() - t0 < 2 * DNS_TRY_MS);
	addr_text(&got, text, sizeof text);
	CHECK_STR(text, "192.0.2.7,2001:db8::7");
	CHECK_INT(seen_a, 2);
	CHECK_INT(seen_aaaa, 2);
	CHECK_INT(dns_used(), 0);
}

/* Blocklist query names (RFC 5782 2.1, 2.4). */
static void test_dnsbl_name(void)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	char name[DNS_NAME_MAX + 1], small[16];

	memset(&ss, 0, sizeof ss);
	s4->sin_family = AF_INET;
	inet_pton(AF_INET, "192.0.2.99", &s4->sin_addr);
	CHECK_INT(dnsbl_name(&ss, "zen.spamhaus.org", name, sizeof name), 0);
	CHECK_STR(name, "99.2.0.192.zen.spamhaus.org");
	CHECK_INT(dnsbl_name(&ss, "zen.spamhaus.org", small, sizeof small), -1);

	memset(&ss, 0, sizeof ss);
	s6->sin6_family = AF_INET6;
	inet_pton(AF_INET6, "2001:db8:1:2:3:4:567:89ab", &s6->sin6_addr);
	CHECK_INT(dnsbl_name(&ss, "bl.test", name, sizeof name), 0);
	CHECK_STR(name, "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test");
	CHECK_INT(dnsbl_name(&ss, "bl.test", small, sizeof small), -1);

	/* A v4 client on a v6 listener is looked up as v4. */
	inet_pton(AF_INET6, "::ffff:127.0.0.2", &s6->sin6_addr);
	CHECK_INT(dnsbl_name(&ss, "bl.test", name, sizeof name), 0);
	CHECK_STR(name, "2.0.0.127.bl.test");

	ss.ss_family = AF_UNIX;
	CHECK_INT(dnsbl_name(&ss, "bl.test", name, sizeof name), -1);
}

int main(void)
{
	size_t i;

	log_open("test_dns", 1);
	test_dnsbl_name();
	test_build_query();
	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		check_row = rows[i].desc;
		run_row(&rows[i]);
	}
	check_row = NULL;
	test_long_names();
	test_append();
	test_mutations();
	test_resolv_conf();
	test_loop();
	return check_done("test_dns");
}
