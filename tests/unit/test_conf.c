/* test_conf.c - known answers for conf.c: value parsers, each key's line,
 * whole files with their "file:line: message" errors. */
#include "check.h"
#include "../../src/conf.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* ---------------------------------------------------------------- sizes */

static const struct {
	const char *in;
	int rc;
	uint64_t want;
} sizes[] = {
	{ "10M", 0, 10485760 },
	{ "10m", 0, 10485760 },
	{ "512K", 0, 524288 },
	{ "512k", 0, 524288 },
	{ "1G", 0, 1073741824 },
	{ "1024", 0, 1024 },
	{ "0", 0, 0 },
	{ "18446744073709551615", 0, UINT64_MAX },
	{ "18446744073709551616", -1, 0 },
	{ "17179869184G", -1, 0 },
	{ "17179869183G", 0, 17179869183ULL * 1073741824ULL },
	{ "", -1, 0 },
	{ "10Q", -1, 0 },
	{ "M", -1, 0 },
	{ "-1", -1, 0 },
	{ "+1", -1, 0 },
	{ " 10", -1, 0 },
	{ "10 ", -1, 0 },
	{ "10MB", -1, 0 },
	{ "10MM", -1, 0 },
	{ "1.5M", -1, 0 },
	{ "0x10", -1, 0 },
};

static void test_sizes(void)
{
	unsigned i;
	uint64_t v;

	for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		check_row = sizes[i].in;
		v = 12345;
		CHECK_INT(conf_parse_size(sizes[i].in, &v), sizes[i].rc);
		if (sizes[i].rc == 0) {
			CHECK(v == sizes[i].want);
		}
	}
	check_row = NULL;
	CHECK_INT(conf_parse_size(NULL, &v), -1);
}

/* ---------------------------------------------------------------- times */

static const struct {
	const char *in;
	int rc;
	unsigned want;
} times[] = {
	{ "30s", 0, 30 },
	{ "5m", 0, 300 },
	{ "4h", 0, 14400 },
	{ "5d", 0, 432000 },
	{ "90", 0, 90 },
	{ "0", 0, 0 },
	{ "4294967295", 0, 4294967295U },
	{ "4294967296", -1, 0 },
	{ "49710d", 0, 4294944000U },
	{ "49711d", -1, 0 },
	{ "", -1, 0 },
	{ "5x", -1, 0 },
	{ "5M", -1, 0 },   /* M is a size: minutes are 'm' */
	{ "1h30m", -1, 0 },
	{ "m", -1, 0 },
	{ "-5m", -1, 0 },
	{ "5 m", -1, 0 },
	{ "99999999999999999999999s", -1, 0 },
};

static void test_times(void)
{
	unsigned i, v;

	for (i = 0; i < sizeof times / sizeof times[0]; i++) {
		check_row = times[i].in;
		v = 12345;
		CHECK_INT(conf_parse_time(times[i].in, &v), times[i].rc);
		if (times[i].rc == 0) {
			CHECK_INT(v, times[i].want);
		}
	}
	check_row = NULL;
}

/* ------------------------------------------------------------ host:port */

static const struct {
	const char *in;
	int rc;
	int family;
	const char *addr;
	unsigned port;
} hostports[] = {
	{ "1.2.3.4:25", 0, AF_INET, "1.2.3.4", 25 },
	{ "0.0.0.0:25", 0, AF_INET, "0.0.0.0", 25 },
	{ "127.0.0.1:65535", 0, AF_INET, "127.0.0.1", 65535 },
	{ "[::]:25", 0, AF_INET6, "::", 25 },
	{ "[::1]:2525", 0, AF_INET6, "::1", 2525 },
	{ "[2001:db8::5]:587", 0, AF_INET6, "2001:db8::5", 587 },
	{ "1.2.3.4:00025", 0, AF_INET, "1.2.3.4", 25 },
	{ "x", -1, 0, NULL, 0 },
	{ "", -1, 0, NULL, 0 },
	{ "1.2.3.4", -1, 0, NULL, 0 },
	{ "1.2.3.4:", -1, 0, NULL, 0 },
	{ "1.2.3.4:0", -1, 0, NULL, 0 },
	{ "1.2.3.4:65536", -1, 0, NULL, 0 },
	{ "1.2.3.4:99999999999999999999999", -1, 0, NULL, 0 },
	{ "1.2.3.4:25x", -1, 0, NULL, 0 },
	{ "1.2.3.4:+25", -1, 0, NULL, 0 },
	{ "1.2.3.4:-25", -1, 0, NULL, 0 },
	{ ":25", -1, 0, NULL, 0 },
	{ "::1:25", -1, 0, NULL, 0 },
	{ "[::1]", -1, 0, NULL, 0 },
	{ "[::1]25", -1, 0, NULL, 0 },
	{ "[::1:25", -1, 0, NULL, 0 },
	{ "[]:25", -1, 0, NULL, 0 },
	{ "[1.2.3.4]:25", -1, 0, NULL, 0 },
	{ "[fe80::1%eth0]:25", -1, 0, NULL, 0 },
	{ "mail.lan:25", -1, 0, NULL, 0 },
	{ "1.2.3:25", -1, 0, NULL, 0 },
	{ "256.1.1.1:25", -1, 0, NULL, 0 },
	{ " 1.2.3.4:25", -1, 0, NULL, 0 },
	{ "[0000:0000:0000:0000:0000:0000:0000:0000:0000]:25", -1, 0, NULL, 0 },
};

static void test_hostports(void)
{
	struct sockaddr_storage ss;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	unsigned char want[16];
	socklen_t len;
	unsigned i;

	for (i = 0; i < sizeof hostports / sizeof hostports[0]; i++) {
		check_row = hostports[i].in;
		len = 0;
		if (!CHECK_INT(conf_parse_hostport(hostports[i].in, &ss, &len), hostports[i].rc) ||
		    hostports[i].rc != 0) {
			continue;
		}
		CHECK_INT(ss.ss_family, hostports[i].family);
		CHECK(inet_pton(hostports[i].family, hostports[i].addr, want) == 1);
		if (hostports[i].family == AF_INET) {
			memcpy(&sin, &ss, sizeof sin);
			CHECK_INT(len, sizeof sin);
			CHECK_INT(ntohs(sin.sin_port), hostports[i].port);
			CHECK(memcmp(&sin.sin_addr, want, 4) == 0);
		} else {
			memcpy(&sin6, &ss, sizeof sin6);
			CHECK_INT(len, sizeof sin6);
			CHECK_INT(ntohs(sin6.sin6_port), hostports[i].port);
			CHECK(memcmp(&sin6.sin6_addr, want, 16) == 0);
		}
	}
	check_row = NULL;
}

/* ------------------------------------------------------------ one line */

/* Each line on fresh defaults: the return code and, on error, the whole
 * message. */
static const struct {
	const char *line;
	const char *err;   /* NULL: accepted */
} lines[] = {
	{ "", NULL },
	{ "   \t  ", NULL },
	{ "# just a comment", NULL },
	{ "hostname mail.lan", NULL },
	{ "hostname mail.lan   # trailing comment", NULL },
	{ "\thostname\tmail.lan\r", NULL },
	{ "foo bar", "unknown key 'foo'" },
	{ "Hostname mail.lan", "unknown key 'Hostname'" },
	{ "hostname", "hostname: missing value" },
	{ "hostname a b", "hostname: too many values" },
	{ "hostname bad_name", "hostname: bad name 'bad_name'" },
	{ "hostname host.", "hostname: bad name 'host.'" },
	{ "hostname -host", "hostname: bad name '-host'" },
	{ "hostname host-", "hostname: bad name 'host-'" },
	{ "hostname a..b", "hostname: bad name 'a..b'" },
	{ "hostname a\x01", "control character in line" },
	{ "hostname a\x7f", "control character in line" },
	{ "domains lan localhost", NULL },
	{ "domains", "domains: missing value" },
	{ "domains a..b", "domains: bad domain 'a..b'" },
	{ "domains lan LAN", "domains: duplicate domain 'LAN'" },
	{ "domains a b c d e f g h i j k l m n o p", NULL },
	{ "domains a b c d e f g h i j k l m n o p q", "domains: too many values (max 16)" },
	{ "domains 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 "
	  "28 29 30 31 32 33", "domains: too many values" },
	{ "listen smtp 0.0.0.0:25", NULL },
	{ "listen submission [::]:587 starttls", NULL },
	{ "listen pop3 0.0.0.0:995 tls", NULL },
#ifndef PICOMAIL_NO_IMAP
	{ "listen imap 0.0.0.0:143 starttls", NULL },
	{ "listen imap [::]:993 tls", NULL },
#else
	{ "listen imap 0.0.0.0:143", "listen: this picomail is built without IMAP (make IMAP=no)" },
#endif
	{ "imap_sessions 16", NULL },
	{ "imap_sessions 0", "imap_sessions: 0 is out of range 1..1024" },
	{ "imap_max_messages 15", "imap_max_messages: 15 is out of range 16..1000000" },
	{ "imap_timeout 30m", NULL },
	{ "listen smtp x", "listen: bad address 'x'" },
	{ "listen smtp 0.0.0.0", "listen: bad address '0.0.0.0'" },
	{ "listen ftp 0.0.0.0:21", "listen: bad protocol 'ftp'" },
	{ "listen SMTP 0.0.0.0:25", "listen: bad protocol 'SMTP'" },
	{ "listen smtp 0.0.0.0:25 ssl", "listen: bad flag 'ssl' (starttls or tls)" },
	{ "listen smtp", "listen: expected 'smtp|submission|pop3|imap address:port [starttls|tls]'" },
	{ "listen smtp 0.0.0.0:25 tls x",
	  "listen: expected 'smtp|submission|pop3|imap address:port [starttls|tls]'" },
	{ "maildir_root /srv/mail", NULL },
	{ "spool", "spool: missing value" },
	{ "users /a /b", "users: too many values" },
	{ "relay_from 10.0.0.0/8 192.168.1.7/24 ::1 fe80::/10", NULL },
	{ "relay_from none", NULL },
	{ "relay_from", "relay_from: missing value (use 'none' for no network)" },
	{ "relay_from 10.0.0.0/33", "relay_from: bad network '10.0.0.0/33'" },
	{ "relay_from ::/129", "relay_from: bad network '::/129'" },
	{ "relay_from 10.0.0.0/", "relay_from: bad network '10.0.0.0/'" },
	{ "relay_from 10.0.0.0/-1", "relay_from: bad network '10.0.0.0/-1'" },
	{ "relay_from /8", "relay_from: bad network '/8'" },
	{ "relay_from lan", "relay_from: bad network 'lan'" },
	{ "relay_from 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17",
	  "relay_from: too many values (max 16)" },
	{ "smarthost smtp.example.net:587 starttls", NULL },
	{ "smarthost smtp.example.net", NULL },
	{ "smarthost [2001:db8::1]:25", NULL },
	{ "smarthost smtp.example.net:99999", "smarthost: bad address 'smtp.example.net:99999'" },
	{ "smarthost smtp.example.net:587 ssl", "smarthost: bad flag 'ssl' (starttls or tls)" },
	{ "smarthost bad_host:25", "smarthost: bad address 'bad_host:25'" },
	{ "smarthost [nonsense]:25", "smarthost: bad address '[nonsense]:25'" },
	{ "smarthost 2001:db8::1", "smarthost: bad address '2001:db8::1'" },
	{ "smarthost", "smarthost: expected 'host:port [starttls|tls]' or 'none'" },
	{ "smarthost a b c", "smarthost: expected 'host:port [starttls|tls]' or 'none'" },
	{ "smarthost none", NULL },
	{ "smarthost none tls", "smarthost: 'none' takes no flag" },
	{ "retry_min 1m", NULL },
	{ "retry_min 5x", "bad time '5x'" },
	{ "retry_min 0", "retry_min: 0 is out of range 1s..4294967295s" },
	{ "queue_lifetime 5d", NULL },
	{ "resolver 127.0.0.1:5353", NULL },
	{ "resolver 127.0.0.1", NULL },
	{ "resolver dns.lan:53", "resolver: bad address 'dns.lan:53'" },
	{ "tls_sessions 0", NULL },
	{ "tls_sessions 1024", NULL },
	{ "tls_sessions 1025", "tls_sessions: 1025 is out of range 0..1024" },
	{ "max_connections 0", "max_connections: 0 is out of range 1..4096" },
	{ "max_connections 1", NULL },
	{ "max_connections 4096", NULL },
	{ "max_connections 4097", "max_connections: 4097 is out of range 1..4096" },
	{ "max_connections 99999999999999999999999", "bad number '99999999999999999999999'" },
	{ "max_connections abc", "bad number 'abc'" },
	{ "max_connections -1", "bad number '-1'" },
	{ "max_connections 10k", "bad number '10k'" },
	{ "max_per_address 0", "max_per_address: 0 is out of range 1..4096" },
	{ "max_recipients 100", NULL },
	{ "max_message_size 10M", NULL },
	{ "max_message_size 10Q", "bad size '10Q'" },
	{ "max_message_size 0", "max_message_size: 0 is out of range" },
	{ "smtp_timeout 5m", NULL },
	{ "pop3_timeout 10m", NULL },
	{ "run_as mail", NULL },
	{ "run_as ro/ot", "run_as: bad user name 'ro/ot'" },
	{ "run_as -x", "run_as: bad user name '-x'" },
	{ "plaintext_auth yes", NULL },
	{ "plaintext_auth no", NULL },
	{ "plaintext_auth maybe", "plaintext_auth: expected yes or no, got 'maybe'" },
	{ "control /run/picomail.sock", NULL },
	{ "tls_cert /etc/picomail/cert.pem", NULL },
	{ "smarthost_auth /etc/picomail/smarthost.secret", NULL },
	{ "greet_pause 0s", NULL },
	{ "greet_pause 1s", NULL },
	{ "greet_pause 61", "greet_pause: 61 is out of range 0s..60s" },
	{ "helo_check no", NULL },
	{ "greylist yes", NULL },
	{ "greylist_delay 5m", NULL },
	{ "greylist_delay 0", "greylist_delay: 0 is out of range 1s..86400s" },
	{ "dnsbl zen.spamhaus.org bl.spamcop.net", NULL },
	{ "dnsbl none", NULL },
	{ "dnsbl", "dnsbl: missing value" },
	{ "dnsbl a b c d e", "dnsbl: too many zones (max 4)" },
	{ "dnsbl bad..zone", "dnsbl: bad zone 'bad..zone'" },
	{ "dnsbl_timeout 2s", NULL },
	{ "scanner /usr/bin/clamdscan --no-summary -", NULL },
	{ "scanner none", NULL },
	{ "scanner clamdscan -", "scanner: 'clamdscan' is not an absolute path" },
	{ "spool var/spool/picomail", "spool: 'var/spool/picomail' is not an absolute path" },
	{ "maildir_root ./mail", "maildir_root: './mail' is not an absolute path" },
	{ "tls_key key.pem", "tls_key: 'key.pem' is not an absolute path" },
	{ "scanner /a 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15", "scanner: too many arguments (max 15)" },
	{ "scanner", "scanner: missing value" },
	{ "scanner_timeout 2m", NULL },
	{ "scanner_timeout 0", "scanner_timeout: 0 is out of range 1s..3600s" },
};

static void test_lines(void)
{
	static struct conf c;
	char line[512], err[CONF_ERR_MAX];
	unsigned i;
	int rc;

	for (i = 0; i < sizeof lines / sizeof lines[0]; i++) {
		check_row = lines[i].line;
		conf_defaults(&c);
		memcpy(line, lines[i].line, strlen(lines[i].line) + 1);
		err[0] = '\0';
		rc = conf_line(&c, line, err, sizeof err);
		if (lines[i].err == NULL) {
			CHECK_INT(rc, 0);
			if (rc != 0) {
				printf("\terr: %s\n", err);
			}
		} else {
			CHECK_INT(rc, -1);
			CHECK_STR(err, lines[i].err);
		}
	}
	check_row = NULL;
}

/* Values too long for their field are errors, never cut. */
static void test_long_values(void)
{
	static struct conf c;
	char line[1024], err[CONF_ERR_MAX];

	conf_defaults(&c);
	memcpy(line, "maildir_root /", 14);
	memset(line + 14, 'a', 255);
	line[14 + 255] = '\0';
	CHECK_INT(conf_line(&c, line, err, sizeof err), -1);
	CHECK_STR(err, "maildir_root: value too long (max 255)");
	CHECK_STR(c.maildir_root, "/var/mail");

	line[12] = ' ';          /* conf_line cut the key off */
	line[14 + 254] = '\0';   /* exactly 255 octets */
	CHECK_INT(conf_line(&c, line, err, sizeof err), 0);
	CHECK_INT(strlen(c.maildir_root), 255);

	memcpy(line, "hostname ", 9);
	memset(line + 9, 'a', 60);
	line[69] = '.';
	memset(line + 70, 'b', 60);
	line[130] = '\0';   /* 121 octets: fits, valid labels */
	CHECK_INT(conf_line(&c, line, err, sizeof err), 0);
	memcpy(line, "hostname ", 9);
	memset(line + 9, 'a', 60);
	line[69] = '.';
	memset(line + 70, 'b', 60);
	line[130] = '.';
	memset(line + 131, 'c', 10);
	line[141] = '\0';   /* 132 octets */
	CHECK_INT(conf_line(&c, line, err, sizeof err), -1);
	CHECK_STR(err, "hostname: value too long (max 127)");

	memcpy(line, "hostname ", 9);
	memset(line + 9, 'a', 64);   /* one label of 64 */
	line[73] = '\0';
	CHECK_INT(conf_line(&c, line, err, sizeof err), -1);
	CHECK(strncmp(err, "hostname: bad name", 18) == 0);

	memcpy(line, "run_as ", 7);
	memset(line + 7, 'u', 64);
	line[71] = '\0';
	CHECK_INT(conf_line(&c, line, err, sizeof err), -1);
	CHECK_STR(err, "run_as: value too long (max 63)");

	/* A tiny error buffer is truncated, not overrun. */
	memcpy(line, "nosuchkey x", 12);
	CHECK_INT(conf_line(&c, line, err, 8), -1);
	CHECK_STR(err, "unknown");
	memcpy(line, "nosuchkey x", 12);
	CHECK_INT(conf_line(&c, line, NULL, 0), -1);
}

/* What the accepted lines put into the struct. */
static void test_values(void)
{
	static struct conf c;
	char line[256], err[CONF_ERR_MAX];
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	unsigned char want[16];

#define LINE(s) (memcpy(line, s, sizeof s), conf_line(&c, line, err, sizeof err))
	conf_defaults(&c);
	CHECK_INT(LINE("hostname Mail.LAN"), 0);
	CHECK_STR(c.hostname, "mail.lan");

	CHECK_INT(LINE("domains Lan example.ORG"), 0);
	CHECK_INT(c.ndomains, 2);
	CHECK_STR(c.domains[0], "lan");
	CHECK_STR(c.domains[1], "example.org");
	/* A later line replaces the list... */
	CHECK_INT(LINE("domains other"), 0);
	CHECK_INT(c.ndomains, 1);
	CHECK_STR(c.domains[0], "other");
	/* ...and a bad one leaves it alone. */
	CHECK_INT(LINE("domains good bad_"), -1);
	CHECK_INT(c.ndomains, 1);
	CHECK_STR(c.domains[0], "other");

	/* listen lines add up. */
	CHECK_INT(LINE("listen smtp 0.0.0.0:25"), 0);
	CHECK_INT(LINE("listen submission [::1]:2587 starttls"), 0);
	CHECK_INT(LINE("listen pop3 127.0.0.1:995 tls"), 0);
	CHECK_INT(c.nlisten, 3);
	CHECK_INT(c.listen[0].proto, PROTO_SMTP);
	CHECK_INT(c.listen[0].tls, TLS_NONE);
	CHECK_INT(c.listen[0].addr.ss_family, AF_INET);
	CHECK_INT(c.listen[0].addrlen, sizeof(struct sockaddr_in));
	memcpy(&sin, &c.listen[0].addr, sizeof sin);
	CHECK_INT(ntohs(sin.sin_port), 25);
	CHECK_INT(c.listen[1].proto, PROTO_SUBMISSION);
	CHECK_INT(c.listen[1].tls, TLS_STARTTLS);
	CHECK_INT(c.listen[1].addr.ss_family, AF_INET6);
	memcpy(&sin6, &c.listen[1].addr, sizeof sin6);
	CHECK_INT(ntohs(sin6.sin6_port), 2587);
	CHECK(IN6_IS_ADDR_LOOPBACK(&sin6.sin6_addr));
	CHECK_INT(c.listen[2].proto, PROTO_POP3);
	CHECK_INT(c.listen[2].tls, TLS_IMPLICIT);
	CHECK_INT(LINE("listen smtp 0.0.0.0:25"), -1);
	CHECK_STR(err, "listen: duplicate address '0.0.0.0:25'");
	CHECK_INT(LINE("listen smtp 0.0.0.0:26"), 0);
	CHECK_INT(LINE("listen smtp 0.0.0.0:27"), 0);
	CHECK_INT(LINE("listen smtp 0.0.0.0:28"), 0);
	CHECK_INT(LINE("listen smtp 0.0.0.0:29"), 0);
	CHECK_INT(LINE("listen smtp 0.0.0.0:30"), 0);
	CHECK_INT(c.nlisten, 8);
	CHECK_INT(LINE("listen smtp 0.0.0.0:31"), -1);
	CHECK_STR(err, "listen: too many listeners (max 8)");
	CHECK_INT(c.nlisten, 8);

	CHECK_INT(LINE("relay_from 192.168.1.7/24 10.1.2.3 fe80::1/10 ::1"), 0);
	CHECK_INT(c.nrelay_from, 4);
	CHECK_INT(c.relay_from[0].family, AF_INET);
	CHECK_INT(c.relay_from[0].bits, 24);
	CHECK(inet_pton(AF_INET, "192.168.1.0", want) == 1);
	CHECK(memcmp(c.relay_from[0].addr, want, 4) == 0);
	CHECK_INT(c.relay_from[1].bits, 32);
	CHECK_INT(c.relay_from[2].family, AF_INET6);
	CHECK_INT(c.relay_from[2].bits, 10);
	CHECK(inet_pton(AF_INET6, "fe80::", want) == 1);
	CHECK(memcmp(c.relay_from[2].addr, want, 16) == 0);
	CHECK_INT(c.relay_from[3].bits, 128);
	CHECK_INT(LINE("relay_from none"), 0);
	CHECK_INT(c.nrelay_from, 0);

	CHECK_INT(LINE("smarthost smtp.Example.net:587 starttls"), 0);
	CHECK_STR(c.smarthost.host, "smtp.example.net");
	CHECK_INT(c.smarthost.port, 587);
	CHECK_INT(c.smarthost.tls, TLS_STARTTLS);
	CHECK_INT(LINE("smarthost relay.lan"), 0);
	CHECK_STR(c.smarthost.host, "relay.lan");
	CHECK_INT(c.smarthost.port, 25);
	CHECK_INT(c.smarthost.tls, TLS_NONE);
	CHECK_INT(LINE("smarthost relay.lan tls"), 0);
	CHECK_INT(c.smarthost.port, 465);
	CHECK_INT(c.smarthost.tls, TLS_IMPLICIT);
	CHECK_INT(LINE("smarthost [2001:DB8::1]:2525"), 0);
	CHECK_STR(c.smarthost.host, "2001:db8::1");
	CHECK_INT(c.smarthost.port, 2525);
	CHECK_INT(LINE("smarthost 10.0.0.1:26"), 0);
	CHECK_STR(c.smarthost.host, "10.0.0.1");
	CHECK_INT(c.smarthost.port, 26);
	CHECK_INT(LINE("smarthost none"), 0);
	CHECK_STR(c.smarthost.host, "");
	CHECK_INT(c.smarthost.port, 0);
	CHECK_INT(c.smarthost.tls, TLS_NONE);

	CHECK_INT(LINE("resolver 127.0.0.1"), 0);
	memcpy(&sin, &c.resolver, sizeof sin);
	CHECK_INT(c.resolver.ss_family, AF_INET);
	CHECK_INT(ntohs(sin.sin_port), 53);
	CHECK_INT(c.resolver_len, sizeof sin);
	CHECK_INT(LINE("resolver [::1]:5353"), 0);
	memcpy(&sin6, &c.resolver, sizeof sin6);
	CHECK_INT(ntohs(sin6.sin6_port), 5353);
	CHECK_INT(c.resolver_len, sizeof sin6);

	CHECK_INT(LINE("retry_min 1m"), 0);
	CHECK_INT(c.retry_min, 60);
	CHECK_INT(LINE("retry_max 2h"), 0);
	CHECK_INT(c.retry_max, 7200);
	CHECK_INT(LINE("queue_lifetime 3d"), 0);
	CHECK_INT(c.queue_lifetime, 259200);
	CHECK_INT(LINE("smtp_timeout 120"), 0);
	CHECK_INT(c.smtp_timeout, 120);
	CHECK_INT(LINE("pop3_timeout 15m"), 0);
	CHECK_INT(c.pop3_timeout, 900);
	CHECK_INT(LINE("max_message_size 512K"), 0);
	CHECK(c.max_message_size == 524288);
	CHECK_INT(LINE("max_connections 100"), 0);
	CHECK_INT(c.max_connections, 100);
	CHECK_INT(LINE("max_per_address 3"), 0);
	CHECK_INT(c.max_per_address, 3);
	CHECK_INT(LINE("max_recipients 50"), 0);
	CHECK_INT(c.max_recipients, 50);
	CHECK_INT(LINE("tls_sessions 0"), 0);
	CHECK_INT(c.tls_sessions, 0);
	CHECK_INT(LINE("plaintext_auth yes"), 0);
	CHECK_INT(c.plaintext_auth, 1);
	CHECK_INT(LINE("plaintext_auth no"), 0);
	CHECK_INT(c.plaintext_auth, 0);
	CHECK_INT(LINE("run_as mail"), 0);
	CHECK_STR(c.run_as, "mail");
	CHECK_INT(LINE("spool /tmp/q"), 0);
	CHECK_STR(c.spool, "/tmp/q");
	CHECK_INT(LINE("ca_file /etc/ssl/ca.pem"), 0);
	CHECK_STR(c.ca_file, "/etc/ssl/ca.pem");
	CHECK_INT(LINE("tls_key /etc/k.pem"), 0);
	CHECK_STR(c.tls_key, "/etc/k.pem");
	CHECK_INT(LINE("control /run/pm.sock"), 0);
	CHECK_STR(c.control, "/run/pm.sock");

	CHECK_INT(LINE("dnsbl Zen.Spamhaus.ORG bl.test"), 0);
	CHECK_INT(c.ndnsbl, 2);
	CHECK_STR(c.dnsbl[0], "zen.spamhaus.org");
	CHECK_STR(c.dnsbl[1], "bl.test");
	CHECK_INT(LINE("dnsbl none"), 0);
	CHECK_INT(c.ndnsbl, 0);
	CHECK_INT(LINE("scanner /usr/bin/clamdscan  --no-summary\t-"), 0);
	CHECK_STR(c.scanner, "/usr/bin/clamdscan --no-summary -");
	CHECK_INT(LINE("scanner none"), 0);
	CHECK_STR(c.scanner, "");
	CHECK_INT(LINE("greet_pause 0s"), 0);
	CHECK_INT(c.greet_pause, 0);
	CHECK_INT(LINE("greylist_delay 2m"), 0);
	CHECK_INT(c.greylist_delay, 120);
#undef LINE
}

static void test_defaults(void)
{
	static struct conf c;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;

	memset(&c, 0xa5, sizeof c);
	conf_defaults(&c);
	CHECK(c.hostname[0] != '\0');
	CHECK(strlen(c.hostname) < sizeof c.hostname);
	CHECK_INT(c.ndomains, 1);
	CHECK_STR(c.domains[0], "localhost");
	CHECK_INT(c.nlisten, 0);
	CHECK_INT(c.greet_pause, 1);
	CHECK_INT(c.helo_check, 1);
	CHECK_INT(c.greylist, 0);
	CHECK_INT(c.greylist_delay, 300);
	CHECK_INT(c.ndnsbl, 0);
	CHECK_INT(c.dnsbl_timeout, 4);
	CHECK_STR(c.scanner, "");
	CHECK_INT(c.scanner_timeout, 60);
	CHECK_STR(c.maildir_root, "/var/mail");
	CHECK_STR(c.spool, "/var/spool/picomail");
	CHECK_STR(c.users, "/etc/picomail/users");
	CHECK_STR(c.aliases, "/etc/aliases");
	CHECK_INT(c.nrelay_from, 2);
	CHECK_STR(c.smarthost.host, "");
	CHECK_STR(c.smarthost_auth, "");
	CHECK_STR(c.tls_cert, "");
	CHECK_INT(c.retry_min, 300);
	CHECK_INT(c.retry_max, 14400);
	CHECK_INT(c.queue_lifetime, 432000);
	CHECK_INT(c.resolver.ss_family, 0);
	CHECK_INT(c.tls_sessions, 8);
	CHECK_INT(c.max_connections, 32);
	CHECK_INT(c.max_per_address, 10);
	CHECK(c.max_message_size == 10485760);
	CHECK_INT(c.max_recipients, 100);
	CHECK_INT(c.smtp_timeout, 300);
	CHECK_INT(c.pop3_timeout, 600);
	CHECK_STR(c.run_as, "");
	CHECK_INT(c.plaintext_auth, 0);
	CHECK_STR(c.control, "");

	/* relay_from 127.0.0.0/8 ::1/128 */
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	CHECK(inet_pton(AF_INET, "127.9.8.7", &sin.sin_addr) == 1);
	CHECK(conf_net_match(c.relay_from, c.nrelay_from, (struct sockaddr *)&sin));
	memset(&sin6, 0, sizeof sin6);
	sin6.sin6_family = AF_INET6;
	CHECK(inet_pton(AF_INET6, "::1", &sin6.sin6_addr) == 1);
	CHECK(conf_net_match(c.relay_from, c.nrelay_from, (struct sockaddr *)&sin6));
}

/* ------------------------------------------------------------- networks */

static const struct {
	const char *addr;
	int match;
} matches[] = {
	{ "127.0.0.1", 1 },
	{ "127.255.255.255", 1 },
	{ "128.0.0.1", 0 },
	{ "126.255.255.255", 0 },
	{ "192.168.1.0", 1 },
	{ "192.168.1.255", 1 },
	{ "192.168.2.1", 0 },
	{ "172.16.0.1", 1 },
	{ "172.31.255.255", 1 },
	{ "172.32.0.0", 0 },
	{ "172.15.255.255", 0 },
	{ "10.9.8.7", 1 },
	{ "10.9.8.6", 0 },
	{ "8.8.8.8", 0 },
	{ "::1", 1 },
	{ "::2", 0 },
	{ "::", 0 },
	{ "fe80::1", 1 },
	{ "febf:ffff::1", 1 },
	{ "fec0::1", 0 },
	{ "2001:db8:0:1::5", 1 },
	{ "2001:db8:0:2::5", 0 },
	{ "::ffff:127.0.0.1", 1 },    /* IPv4 client on a dual-stack listener */
	{ "::ffff:192.168.1.9", 1 },
	{ "::ffff:8.8.8.8", 0 },
	{ "::127.0.0.1", 0 },         /* IPv4-compatible is not IPv4-mapped */
};

static void test_net_match(void)
{
	static struct conf c;
	char line[] = "relay_from 127.0.0.0/8 192.168.1.7/24 172.16.0.0/12 10.9.8.7 "
	              "::1/128 fe80::/10 2001:db8:0:1::/64";
	char err[CONF_ERR_MAX];
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	struct sockaddr_un sun;
	unsigned i;

	conf_defaults(&c);
	CHECK_INT(conf_line(&c, line, err, sizeof err), 0);
	for (i = 0; i < sizeof matches / sizeof matches[0]; i++) {
		check_row = matches[i].addr;
		memset(&sin, 0, sizeof sin);
		memset(&sin6, 0, sizeof sin6);
		if (inet_pton(AF_INET, matches[i].addr, &sin.sin_addr) == 1) {
			sin.sin_family = AF_INET;
			CHECK_INT(conf_net_match(c.relay_from, c.nrelay_from, (struct sockaddr *)&sin),
			          matches[i].match);
		} else {
			CHECK(inet_pton(AF_INET6, matches[i].addr, &sin6.sin6_addr) == 1);
			sin6.sin6_family = AF_INET6;
			CHECK_INT(conf_net_match(c.relay_from, c.nrelay_from, (struct sockaddr *)&sin6),
			          matches[i].match);
		}
	}
	check_row = NULL;

	/* No nets, another family, NULL: never a match. */
	sin.sin_family = AF_INET;
	CHECK(inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr) == 1);
	CHECK_INT(conf_net_match(c.relay_from, 0, (struct sockaddr *)&sin), 0);
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	CHECK_INT(conf_net_match(c.relay_from, c.nrelay_from, (struct sockaddr *)&sun), 0);
	CHECK_INT(conf_net_match(c.relay_from, c.nrelay_from, NULL), 0);

	/* /0 matches everything of its family only. */
	memcpy(line, "relay_from 0.0.0.0/0", 21);
	CHECK_INT(conf_line(&c, line, err, sizeof err), 0);
	CHECK(inet_pton(AF_INET, "203.0.113.9", &sin.sin_addr) == 1);
	CHECK_INT(conf_net_match(c.relay_from, c.nrelay_from, (struct sockaddr *)&sin), 1);
	sin6.sin6_family = AF_INET6;
	CHECK(inet_pton(AF_INET6, "2001:db8::9", &sin6.sin6_addr) == 1);
	CHECK_INT(conf_net_match(c.relay_from, c.nrelay_from, (struct sockaddr *)&sin6), 0);
}

static void test_local_domain(void)
{
	static struct conf c;
	char line[] = "domains lan localhost";
	char err[CONF_ERR_MAX];

	conf_defaults(&c);
	CHECK_INT(conf_line(&c, line, err, sizeof err), 0);
	CHECK_INT(conf_is_local_domain(&c, "lan"), 1);
	CHECK_INT(conf_is_local_domain(&c, "LAN"), 1);
	CHECK_INT(conf_is_local_domain(&c, "LocalHost"), 1);
	CHECK_INT(conf_is_local_domain(&c, "lan."), 0);
	CHECK_INT(conf_is_local_domain(&c, "x.lan"), 0);
	CHECK_INT(conf_is_local_domain(&c, "la"), 0);
	CHECK_INT(conf_is_local_domain(&c, ""), 0);
	CHECK_INT(conf_is_local_domain(&c, NULL), 0);
	CHECK_INT(conf_is_local_domain(NULL, "lan"), 0);
}

/* ---------------------------------------------------------- whole files */

static void write_file(const char *path, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	if (!CHECK(fd >= 0)) {
		return;
	}
	CHECK(write(fd, data, len) == (ssize_t)len);
	CHECK(close(fd) == 0);
}

static void write_str(const char *path, const char *text)
{
	write_file(path, text, strlen(text));
}

#define GOOD_CONF \
	"# picomail test configuration\n" \
	"hostname         mail.lan\n" \
	"domains          lan localhost               # delivered locally\n" \
	"listen           smtp        0.0.0.0:25\n" \
	"listen           submission  0.0.0.0:587  starttls\n" \
	"listen           submission  0.0.0.0:465  tls\n" \
	"listen           pop3        0.0.0.0:110  starttls\n" \
	"listen           pop3        [::]:995     tls\n" \
	"maildir_root     /var/mail\n" \
	"spool            /var/spool/picomail\n" \
	"users            /etc/picomail/users\n" \
	"aliases          /etc/aliases\n" \
	"relay_from       127.0.0.0/8 ::1/128\n" \
	"smarthost        smtp.example.net:587 starttls\n" \
	"smarthost_auth   /etc/picomail/smarthost.secret\n" \
	"tls_cert         /etc/picomail/cert.pem\n" \
	"tls_key          /etc/picomail/key.pem\n" \
	"ca_file          /etc/ssl/certs/ca-certificates.crt\n" \
	"retry_min        5m\n" \
	"retry_max        4h\n" \
	"queue_lifetime   5d\n" \
	"resolver         127.0.0.1:53\n" \
	"tls_sessions     4\n" \
	"max_connections  32\n" \
	"max_message_size 10M\n" \
	"run_as           mail\n" \
	"plaintext_auth   no\n"

static const struct {
	const char *text;
	const char *err;   /* NULL: loads */
	size_t len;        /* 0: strlen(text); else the file holds a NUL */
} files[] = {
	{ GOOD_CONF, NULL, 0 },
	{ "listen smtp 127.0.0.1:2525", NULL, 0 },                  /* no final LF */
	{ "listen smtp 127.0.0.1:2525\r\nhostname a.b\r\n", NULL, 0 }, /* CRLF */
	{ "\n\n# only\n   \nlisten smtp 127.0.0.1:2525\n\n", NULL, 0 },
	{ "listen smtp 0.0.0.0:25\nhostname a\nfoo bar\n", "t.conf:3: unknown key 'foo'", 0 },
	{ "listen smtp 0.0.0.0:25\n#\n\n\nmax_message_size 10Q\n", "t.conf:5: bad size '10Q'", 0 },
	{ "hostname a\nlisten smtp x\n", "t.conf:2: listen: bad address 'x'", 0 },
	{ "hostname a\n", "t.conf: no listen line", 0 },
	{ "", "t.conf: no listen line", 0 },
	{ "listen smtp 0.0.0.0:25\nretry_min 5h\nretry_max 1h\n",
	  "t.conf: retry_min (18000s) is greater than retry_max (3600s)", 0 },
	{ "listen smtp 0.0.0.0:25\nretry_min 4h\n", NULL, 0 },
	{ "listen smtp 0.0.0.0:25\nretry_min 5h\n",
	  "t.conf: retry_min (18000s) is greater than retry_max (14400s)", 0 },
	{ "listen submission 0.0.0.0:587 starttls\n",
	  "t.conf: a starttls or tls listener needs tls_cert and tls_key", 0 },
	{ "listen smtp 0.0.0.0:25\ntls_cert /c.pem\n", "t.conf: tls_cert and tls_key go together", 0 },
	{ "listen smtp 0.0.0.0:25\ntls_key /k.pem\n", "t.conf: tls_cert and tls_key go together", 0 },
	{ "listen smtp 0.0.0.0:25\nlisten smtp 0.0.0.0:25\n",
	  "t.conf:2: listen: duplicate address '0.0.0.0:25'", 0 },
	{ "listen smtp 0.0.0.0:25\nhostname a\0b\n", "t.conf:2: NUL byte in line", 36 },
	{ "listen smtp 0.0.0.0:25\nhostname \x1b[31m\n", "t.conf:2: control character in line", 0 },
};

static void test_files(void)
{
	static struct conf c;
	char err[CONF_ERR_MAX];
	unsigned i;
	size_t len;

	for (i = 0; i < sizeof files / sizeof files[0]; i++) {
		check_row = files[i].text;
		len = files[i].len != 0 ? files[i].len : strlen(files[i].text);
		write_file("t.conf", files[i].text, len);
		err[0] = '\0';
		if (files[i].err == NULL) {
			if (!CHECK_INT(conf_load(&c, "t.conf", err, sizeof err), 0)) {
				printf("\terr: %s\n", err);
			}
		} else {
			CHECK_INT(conf_load(&c, "t.conf", err, sizeof err), -1);
			CHECK_STR(err, files[i].err);
		}
	}
	check_row = NULL;
}

static void test_good_file(void)
{
	static struct conf c;
	char err[CONF_ERR_MAX];

	write_str("t.conf", GOOD_CONF);
	if (!CHECK_INT(conf_load(&c, "t.conf", err, sizeof err), 0)) {
		printf("\terr: %s\n", err);
		return;
	}
	CHECK_STR(c.hostname, "mail.lan");
	CHECK_INT(c.ndomains, 2);
	CHECK_INT(c.nlisten, 5);
	CHECK_INT(c.listen[4].addr.ss_family, AF_INET6);
	CHECK_INT(c.listen[4].proto, PROTO_POP3);
	CHECK_INT(c.listen[4].tls, TLS_IMPLICIT);
	CHECK_STR(c.smarthost.host, "smtp.example.net");
	CHECK_INT(c.smarthost.port, 587);
	CHECK_STR(c.tls_key, "/etc/picomail/key.pem");
	CHECK_STR(c.run_as, "mail");
	CHECK_STR(c.control, "/var/spool/picomail/control");
	CHECK_INT(c.resolver.ss_family, AF_INET);

	/* control follows the spool unless set. */
	write_str("t.conf", "spool /q\nlisten smtp 0.0.0.0:25\n");
	CHECK_INT(conf_load(&c, "t.conf", err, sizeof err), 0);
	CHECK_STR(c.control, "/q/control");
	write_str("t.conf", "control /c\nspool /q\nlisten smtp 0.0.0.0:25\n");
	CHECK_INT(conf_load(&c, "t.conf", err, sizeof err), 0);
	CHECK_STR(c.control, "/c");
}

static void test_file_limits(void)
{
	static struct conf c;
	static char text[4096];
	char err[CONF_ERR_MAX];
	size_t n;

	/* A line of 1024 octets is fine, 1025 is an error with its number. */
	n = (size_t)snprintf(text, sizeof text, "listen smtp 0.0.0.0:25\nhostname a");
	memset(text + n, ' ', 1024 - 10);
	n += 1024 - 10;
	text[n++] = '\n';
	CHECK_INT(n, 23 + 1025);
	write_file("t.conf", text, n);
	CHECK_INT(conf_load(&c, "t.conf", err, sizeof err), 0);
	text[n - 1] = ' ';
	text[n++] = '\n';
	text[n++] = 'x';
	write_file("t.conf", text, n);
	CHECK_INT(conf_load(&c, "t.conf", err, sizeof err), -1);
	CHECK_STR(err, "t.conf:2: line too long (max 1024)");
	/* Even on the last line with no LF. */
	write_file("t.conf", text, n - 2);
	CHECK_INT(conf_load(&c, "t.conf", err, sizeof err), -1);
	CHECK_STR(err, "t.conf:2: line too long (max 1024)");

	/* spool so long that "<spool>/control" cannot fit. */
	n = (size_t)snprintf(text, sizeof text, "listen smtp 0.0.0.0:25\nspool /");
	memset(text + n, 's', 250);
	n += 250;
	text[n++] = '\n';
	write_file("t.conf", text, n);
	CHECK_INT(conf_load(&c, "t.conf", err, sizeof err), -1);
	CHECK_STR(err, "t.conf: spool path too long for the control socket");

	CHECK_INT(conf_load(&c, "missing.conf", err, sizeof err), -1);
	CHECK_STR(err, "missing.conf: No such file or directory");
	CHECK_INT(conf_load(&c, ".", err, sizeof err), -1);
	CHECK_STR(err, ".: Is a directory");
	/* An endless file of NULs ends at its first byte. */
	CHECK_INT(conf_load(&c, "/dev/zero", err, sizeof err), -1);
	CHECK_STR(err, "/dev/zero:1: NUL byte in line");
}

int main(void)
{
	char dir[] = "/tmp/picomail-test-conf-XXXXXX";

	if (mkdtemp(dir) == NULL || chdir(dir) < 0) {
		perror("test_conf: temporary directory");
		return 2;
	}
	test_sizes();
	test_times();
	test_hostports();
	test_lines();
	test_long_values();
	test_values();
	test_defaults();
	test_net_match();
	test_local_domain();
	test_files();
	test_good_file();
	test_file_limits();
	(void)unlink("t.conf");
	if (chdir("/") < 0 || rmdir(dir) < 0) {
		perror("test_conf: cleanup");
	}
	return check_done("test_conf");
}
