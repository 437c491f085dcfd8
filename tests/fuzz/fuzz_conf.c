/* fuzz_conf.c - the configuration file (src/conf.c through
 * src/textfile.c).
 *
 * Input: the file.  conf_load must either succeed with every string
 * terminated and every count within its array, or fail with a
 * "path:line: message" that names the file.  A loaded configuration's
 * addresses are then used as the daemon would (relay_from matching, local
 * domains). */
#include "conf.h"
#include "fuzz.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define TERMINATED(f) (strnlen((f), sizeof(f)) < sizeof(f))

static void check(const struct conf *c)
{
	struct sockaddr_in s4;
	struct sockaddr_in6 s6;
	unsigned i;

	if (!TERMINATED(c->hostname) || !TERMINATED(c->maildir_root) || !TERMINATED(c->spool) ||
	    !TERMINATED(c->users) || !TERMINATED(c->aliases) || !TERMINATED(c->tls_cert) ||
	    !TERMINATED(c->tls_key) || !TERMINATED(c->ca_file) || !TERMINATED(c->run_as) ||
	    !TERMINATED(c->control) || !TERMINATED(c->smarthost.host) ||
	    !TERMINATED(c->smarthost_auth)) {
		fuzz_fail("a string of the configuration is not terminated");
	}
	if (c->ndomains > CONF_DOMAINS_MAX || c->nlisten > CONF_LISTEN_MAX ||
	    c->nrelay_from > CONF_NETS_MAX) {
		fuzz_fail("counts %u %u %u past their arrays", c->ndomains, c->nlisten, c->nrelay_from);
	}
	for (i = 0; i < c->ndomains; i++) {
		if (!TERMINATED(c->domains[i]) || c->domains[i][0] == '\0') {
			fuzz_fail("domain %u is empty or not terminated", i);
		}
		(void)conf_is_local_domain(c, c->domains[i]);
	}
	for (i = 0; i < c->nrelay_from; i++) {
		if (c->relay_from[i].bits > (c->relay_from[i].family == AF_INET ? 32u : 128u)) {
			fuzz_fail("relay_from %u has %u bits", i, c->relay_from[i].bits);
		}
	}
	for (i = 0; i < c->nlisten; i++) {
		if (c->listen[i].addrlen > sizeof c->listen[i].addr) {
			fuzz_fail("listener %u has an address of %u bytes", i, c->listen[i].addrlen);
		}
	}
	memset(&s4, 0, sizeof s4);
	s4.sin_family = AF_INET;
	inet_pton(AF_INET, "10.1.2.3", &s4.sin_addr);
	(void)conf_net_match(c->relay_from, c->nrelay_from, (const struct sockaddr *)&s4);
	memset(&s6, 0, sizeof s6);
	s6.sin6_family = AF_INET6;
	inet_pton(AF_INET6, "::ffff:10.1.2.3", &s6.sin6_addr);
	(void)conf_net_match(c->relay_from, c->nrelay_from, (const struct sockaddr *)&s6);
	(void)conf_is_local_domain(c, "LocalHost");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct conf c;
	char path[64], err[CONF_ERR_MAX];

	fuzz_memfile(data, size, path, sizeof path);
	memset(err, 0, sizeof err);
	if (conf_load(&c, path, err, sizeof err) < 0) {
		if (strncmp(err, path, strlen(path)) != 0 || !TERMINATED(err)) {
			fuzz_fail("error '%s' does not name the file", err);
		}
		return 0;
	}
	check(&c);
	return 0;
}
