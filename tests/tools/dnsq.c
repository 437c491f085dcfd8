/* dnsq - one query through picomail's resolver (src/dns.c) on its loop.
 *
 *   dnsq SERVER:PORT mx|addr NAME      e.g. dnsq 127.0.0.1:5353 mx example.test
 *   dnsq system mx|addr NAME           the resolver of /etc/resolv.conf
 *
 * Prints "status OK|NXDOMAIN|NODATA|TEMPFAIL", then "null_mx" when set,
 * "mx PREF HOST" lines in order, "addr ADDRESS" lines in order.  Exit 0
 * when the callback ran, 2 on a usage error, 1 otherwise.  Log lines go to
 * stderr.  Built by tests/integration/test_dns.py:
 *
 *   cc -std=c11 -D_GNU_SOURCE -Isrc -o build/dnsq tests/tools/dnsq.c \
 *      src/dns.c src/loop.c src/io.c src/log.c src/log_kv.c src/date.c src/conf.c src/textfile.c \
 *      src/pool.c src/random.c
 */
#include "dns.h"
#include "conf.h"
#include "log.h"
#include "loop.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static const char *const status_names[] = { "OK", "NXDOMAIN", "NODATA", "TEMPFAIL" };
static int answered;

static void done(void *ctx, const struct dns_result *r)
{
	char a[INET6_ADDRSTRLEN];
	unsigned i;

	(void)ctx;
	printf("status %s\n", status_names[r->status]);
	if (r->null_mx) {
		printf("null_mx\n");
	}
	for (i = 0; i < r->nmx; i++) {
		printf("mx %u %s\n", r->mx[i].pref, r->mx[i].host);
	}
	for (i = 0; i < r->naddr; i++) {
		const struct sockaddr_storage *ss = &r->addr[i];

		if (ss->ss_family == AF_INET) {
			inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)ss)->sin_addr, a,
			          sizeof a);
		} else {
			inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr,
			          a, sizeof a);
		}
		printf("addr %s\n", a);
	}
	fflush(stdout);
	answered = 1;
	loop_stop();
}

int main(int argc, char **argv)
{
	struct conf c;
	int h;

	if (argc != 4 || (strcmp(argv[2], "mx") != 0 && strcmp(argv[2], "addr") != 0)) {
		fprintf(stderr, "usage: dnsq SERVER:PORT|system mx|addr NAME\n");
		return 2;
	}
	log_open("dnsq", 1);
	conf_defaults(&c);
	if (strcmp(argv[1], "system") != 0 &&
	    conf_parse_hostport(argv[1], &c.resolver, &c.resolver_len) < 0) {
		fprintf(stderr, "dnsq: bad server '%s'\n", argv[1]);
		return 2;
	}
	if (loop_init(4) < 0 || dns_init(&c) < 0) {
		fprintf(stderr, "dnsq: cannot start the resolver\n");
		return 1;
	}
	if (strcmp(argv[2], "mx") == 0) {
		h = dns_query_mx(argv[3], done, NULL);
	} else {
		h = dns_query_addr(argv[3], done, NULL);
	}
	if (h < 0) {
		fprintf(stderr, "dnsq: no query started\n");
		return 1;
	}
	if (loop_run() < 0) {
		return 1;
	}
	return answered ? 0 : 1;
}
