/* conf.c - the configuration file, parsed into one immutable struct.
 *
 * Every line is "key value...".  The key table below says, for each key of
 * DESIGN.md, which parser reads its values and where they go.  A key given
 * twice keeps its last line (as in Postfix), except "listen", where every
 * line adds one listener.  Lists (domains, relay_from) are checked whole
 * before they replace the old value, so a bad line leaves *c as it was.
 *
 * No malloc: the file is read through textfile's fixed buffers, values
 * are bounded copies into the struct, and anything that does not fit is an
 * error.
 */
#include "conf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "textfile.h"

#define CONF_LINE_MAX  1024   /* longest line of the file, without its LF */
#define CONF_WORDS_MAX 32     /* words on one line, the key included */

/* ---------------------------------------------------------------- errors */

/* Formats the message into err (if any) and returns -1, so that every
 * failure is one statement: return conf_fail(err, errlen, ...). */
static int conf_fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int conf_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL && errlen > 0) {
		va_start(ap, fmt);
		(void)vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* ---------------------------------------------------------- value parsers */

/* Reads decimal digits at s into *out; *end points after them.  At least
 * one digit; no sign, no spaces; -1 on overflow. */
static int conf_parse_u64(const char *s, const char **end, uint64_t *out)
{
	uint64_t v = 0;
	const char *p = s;

	if (s == NULL || *p < '0' || *p > '9') {
		return -1;
	}
	while (*p >= '0' && *p <= '9') {
		unsigned d = (unsigned)(*p - '0');

		if (v > (UINT64_MAX - d) / 10) {
			return -1;
		}
		v = v * 10 + d;
		p++;
	}
	*end = p;
	*out = v;
	return 0;
}

int conf_parse_size(const char *s, uint64_t *out)
{
	const char *end;
	uint64_t v, mult = 1;

	if (conf_parse_u64(s, &end, &v) < 0) {
		return -1;
	}
	switch (*end) {
	case '\0':
		break;
	case 'K': case 'k':
		mult = 1024;
		end++;
		break;
	case 'M': case 'm':
		mult = 1024 * 1024;
		end++;
		break;
	case 'G': case 'g':
		mult = 1024 * 1024 * 1024;
		end++;
		break;
	default:
		return -1;
	}
	if (*end != '\0' || v > UINT64_MAX / mult) {
		return -1;
	}
	*out = v * mult;
	return 0;
}

int conf_parse_time(const char *s, unsigned *out)
{
	const char *end;
	uint64_t v, mult = 1;

	if (conf_parse_u64(s, &end, &v) < 0) {
		return -1;
	}
	switch (*end) {
	case '\0':
		break;
	case 's':
		end++;
		break;
	case 'm':
		mult = 60;
		end++;
		break;
	case 'h':
		mult = 3600;
		end++;
		break;
	case 'd':
		mult = 86400;
		end++;
		break;
	default:
		return -1;
	}
	if (*end != '\0' || v > UINT_MAX / mult) {
		return -1;
	}
	*out = (unsigned)(v * mult);
	return 0;
}

/* A port: 1..65535, digits only. */
static int conf_parse_port(const char *s, uint16_t *port)
{
	const char *end;
	uint64_t v;

	if (conf_parse_u64(s, &end, &v) < 0 || *end != '\0' || v < 1 || v > 65535) {
		return -1;
	}
	*port = (uint16_t)v;
	return 0;
}

/* Splits "host:port" or "[v6]:port" into host (hostsize bytes, brackets
 * removed) and port; the port may be left out ("host", "[v6]") when
 * port_optional is set, and *port is then 0.  *v6 is set when the host was
 * bracketed.  A bare IPv6 address without brackets is refused: its last
 * group would read as a port. */
static int conf_split_hostport(const char *s, char *host, size_t hostsize,
                               int port_optional, uint16_t *port, int *v6)
{
	const char *h, *hend, *p;
	size_t hlen;

	if (s == NULL) {
		return -1;
	}
	*v6 = 0;
	*port = 0;
	if (s[0] == '[') {
		h = s + 1;
		hend = strchr(h, ']');
		if (hend == NULL) {
			return -1;
		}
		p = hend + 1;
		*v6 = 1;
	} else {
		h = s;
		hend = strchr(s, ':');
		if (hend == NULL) {
			hend = s + strlen(s);
		} else if (strchr(hend + 1, ':') != NULL) {
			return -1;
		}
		p = hend;
	}
	hlen = (size_t)(hend - h);
	if (hlen == 0 || hlen >= hostsize) {
		return -1;
	}
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	if (*p == '\0') {
		return port_optional ? 0 : -1;
	}
	if (*p != ':') {
		return -1;
	}
	return conf_parse_port(p + 1, port);
}

/* Numeric address and port into *ss; defport 0 means the port is required. */
static int conf_hostport(const char *s, uint16_t defport, struct sockaddr_storage *ss,
                         socklen_t *len)
{
	char host[INET6_ADDRSTRLEN + 1];
	uint16_t port;
	int v6;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;

	if (conf_split_hostport(s, host, sizeof host, defport != 0, &port, &v6) < 0) {
		return -1;
	}
	if (port == 0) {
		port = defport;
	}
	memset(ss, 0, sizeof *ss);
	if (v6) {
		memset(&sin6, 0, sizeof sin6);
		if (inet_pton(AF_INET6, host, &sin6.sin6_addr) != 1) {
			return -1;
		}
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = htons(port);
		memcpy(ss, &sin6, sizeof sin6);
		*len = (socklen_t)sizeof sin6;
		return 0;
	}
	memset(&sin, 0, sizeof sin);
	if (inet_pton(AF_INET, host, &sin.sin_addr) != 1) {
		return -1;
	}
	sin.sin_family = AF_INET;
	sin.sin_port = htons(port);
	memcpy(ss, &sin, sizeof sin);
	*len = (socklen_t)sizeof sin;
	return 0;
}

int conf_parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	return conf_hostport(s, 0, ss, len);
}

/* "10.0.0.0/8", "fe80::/10", or a bare address (all its bits).  Host bits
 * below the prefix are cleared, so "192.168.1.7/24" means that network. */
static int conf_parse_net(const char *s, struct conf_net *n)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(s, '/');
	size_t hlen = slash != NULL ? (size_t)(slash - s) : strlen(s);
	unsigned maxbits, i;
	uint64_t bits;
	const char *end;

	if (hlen == 0 || hlen >= sizeof host) {
		return -1;
	}
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	memset(n, 0, sizeof *n);
	if (inet_pton(AF_INET, host, n->addr) == 1) {
		n->family = AF_INET;
		maxbits = 32;
	} else if (inet_pton(AF_INET6, host, n->addr) == 1) {
		n->family = AF_INET6;
		maxbits = 128;
	} else {
		return -1;
	}
	bits = maxbits;
	if (slash != NULL) {
		if (conf_parse_u64(slash + 1, &end, &bits) < 0 || *end != '\0' || bits > maxbits) {
			return -1;
		}
	}
	n->bits = (unsigned)bits;
	for (i = 0; i < maxbits / 8; i++) {
		if (i * 8 >= n->bits) {
			n->addr[i] = 0;
		} else if (i * 8 + 8 > n->bits) {
			n->addr[i] &= (unsigned char)(0xff << (8 - (n->bits - i * 8)));
		}
	}
	return 0;
}

/* A host or domain name: dot-separated labels of letters, digits and '-',
 * 1..63 octets each, no '-' at either end of a label, no empty label (so no
 * trailing dot). */
static int conf_name_ok(const char *s)
{
	size_t label = 0;
	const char *p;

	if (s == NULL || *s == '\0') {
		return 0;
	}
	for (p = s; *p != '\0'; p++) {
		if (*p == '.') {
			if (label == 0 || p[-1] == '-') {
				return 0;
			}
			label = 0;
			continue;
		}
		if (!isalnum((unsigned char)*p) && *p != '-') {
			return 0;
		}
		if (*p == '-' && label == 0) {
			return 0;
		}
		if (++label > 63) {
			return 0;
		}
	}
	return label > 0 && p[-1] != '-';
}

/* Copies src lower-cased into dst; the caller has checked the length. */
static void conf_lower_copy(char *dst, const char *src)
{
	while (*src != '\0') {
		*dst++ = (char)tolower((unsigned char)*src++);
	}
	*dst = '\0';
}

/* ------------------------------------------------------------ key setters */

struct conf_key;
typedef int (*conf_set_fn)(struct conf *c, const struct conf_key *k, char **v,
                           unsigned n, char *err, size_t errlen);

struct conf_key {
	const char *name;
	conf_set_fn set;
	size_t off;          /* the field, for the generic setters */
	size_t size;         /* its size, for strings */
	uint64_t min, max;   /* the accepted range, for numbers */
};

/* The field a generic setter writes. */
static void *conf_field(struct conf *c, const struct conf_key *k)
{
	return (char *)c + k->off;
}

/* Most keys take exactly one value. */
static int conf_one(const struct conf_key *k, unsigned n, char *err, size_t errlen)
{
	if (n == 0) {
		return conf_fail(err, errlen, "%s: missing value", k->name);
	}
	if (n > 1) {
		return conf_fail(err, errlen, "%s: too many values", k->name);
	}
	return 0;
}

static int conf_set_path(struct conf *c, const struct conf_key *k, char **v,
                         unsigned n, char *err, size_t errlen)
{
	size_t len;

	if (conf_one(k, n, err, errlen) < 0) {
		return -1;
	}
	len = strlen(v[0]);
	if (len >= k->size) {
		return conf_fail(err, errlen, "%s: value too long (max %zu)", k->name, k->size - 1);
	}
	/* The daemon works from / (and reloads as run_as): a relative path
	 * would name another file then. */
	if (v[0][0] != '/') {
		return conf_fail(err, errlen, "%s: '%s' is not an absolute path", k->name, v[0]);
	}
	memcpy(conf_field(c, k), v[0], len + 1);
	return 0;
}

static int conf_set_uint(struct conf *c, const struct conf_key *k, char **v,
                         unsigned n, char *err, size_t errlen)
{
	const char *end;
	uint64_t x;

	if (conf_one(k, n, err, errlen) < 0) {
		return -1;
	}
	if (conf_parse_u64(v[0], &end, &x) < 0 || *end != '\0') {
		return conf_fail(err, errlen, "bad number '%s'", v[0]);
	}
	if (x < k->min || x > k->max) {
		return conf_fail(err, errlen, "%s: %s is out of range %llu..%llu", k->name, v[0],
		                 (unsigned long long)k->min, (unsigned long long)k->max);
	}
	*(unsigned *)conf_field(c, k) = (unsigned)x;
	return 0;
}

static int conf_set_time(struct conf *c, const struct conf_key *k, char **v,
                         unsigned n, char *err, size_t errlen)
{
	unsigned t;

	if (conf_one(k, n, err, errlen) < 0) {
		return -1;
	}
	if (conf_parse_time(v[0], &t) < 0) {
		return conf_fail(err, errlen, "bad time '%s'", v[0]);
	}
	if (t < k->min || t > k->max) {
		return conf_fail(err, errlen, "%s: %s is out of range %llus..%llus", k->name, v[0],
		                 (unsigned long long)k->min, (unsigned long long)k->max);
	}
	*(unsigned *)conf_field(c, k) = t;
	return 0;
}

static int conf_set_size(struct conf *c, const struct conf_key *k, char **v,
                         unsigned n, char *err, size_t errlen)
{
	uint64_t x;

	if (conf_one(k, n, err, errlen) < 0) {
		return -1;
	}
	if (conf_parse_size(v[0], &x) < 0) {
		return conf_fail(err, errlen, "bad size '%s'", v[0]);
	}
	if (x < k->min || x > k->max) {
		return conf_fail(err, errlen, "%s: %s is out of range", k->name, v[0]);
	}
	*(uint64_t *)conf_field(c, k) = x;
	return 0;
}

static int conf_set_yesno(struct conf *c, const struct conf_key *k, char **v,
                          unsigned n, char *err, size_t errlen)
{
	int *field = conf_field(c, k);

	if (conf_one(k, n, err, errlen) < 0) {
		return -1;
	}
	if (strcmp(v[0], "yes") == 0) {
		*field = 1;
	} else if (strcmp(v[0], "no") == 0) {
		*field = 0;
	} else {
		return conf_fail(err, errlen, "%s: expected yes or no, got '%s'", k->name, v[0]);
	}
	return 0;
}

static int conf_set_hostname(struct conf *c, const struct conf_key *k, char **v,
                             unsigned n, char *err, size_t errlen)
{
	if (conf_one(k, n, err, errlen) < 0) {
		return -1;
	}
	if (strlen(v[0]) >= sizeof c->hostname) {
		return conf_fail(err, errlen, "%s: value too long (max %zu)", k->name,
		                 sizeof c->hostname - 1);
	}
	if (!conf_name_ok(v[0])) {
		return conf_fail(err, errlen, "%s: bad name '%s'", k->name, v[0]);
	}
	conf_lower_copy(c->hostname, v[0]);
	return 0;
}

static int conf_set_domains(struct conf *c, const struct conf_key *k, char **v,
                            unsigned n, char *err, size_t errlen)
{
	unsigned i, j;

	if (n == 0) {
		return conf_fail(err, errlen, "%s: missing value", k->name);
	}
	if (n > CONF_DOMAINS_MAX) {
		return conf_fail(err, errlen, "%s: too many values (max %d)", k->name,
		                 CONF_DOMAINS_MAX);
	}
	for (i = 0; i < n; i++) {
		if (strlen(v[i]) >= CONF_NAME_MAX) {
			return conf_fail(err, errlen, "%s: value too long (max %d)", k->name,
			                 CONF_NAME_MAX - 1);
		}
		if (!conf_name_ok(v[i])) {
			return conf_fail(err, errlen, "%s: bad domain '%s'", k->name, v[i]);
		}
		for (j = 0; j < i; j++) {
			if (strcasecmp(v[i], v[j]) == 0) {
				return conf_fail(err, errlen, "%s: duplicate domain '%s'", k->name, v[i]);
			}
		}
	}
	for (i = 0; i < n; i++) {
		conf_lower_copy(c->domains[i], v[i]);
	}
	c->ndomains = n;
	return 0;
}

static int conf_tls_flag(const char *s, enum listen_tls *tls)
{
	if (strcmp(s, "starttls") == 0) {
		*tls = TLS_STARTTLS;
	} else if (strcmp(s, "tls") == 0) {
		*tls = TLS_IMPLICIT;
	} else {
		return -1;
	}
	return 0;
}

/* Two listeners on the same address and port could never both bind. */
static int conf_same_addr(const struct conf_listen *a, const struct conf_listen *b)
{
	return a->addrlen == b->addrlen && memcmp(&a->addr, &b->addr, a->addrlen) == 0;
}

static int conf_set_listen(struct conf *c, const struct conf_key *k, char **v,
                           unsigned n, char *err, size_t errlen)
{
	struct conf_listen l;
	unsigned i;

	(void)k;
	if (n < 2 || n > 3) {
		return conf_fail(err, errlen,
		                 "listen: expected 'smtp|submission|pop3|imap address:port [starttls|tls]'");
	}
	memset(&l, 0, sizeof l);
	if (strcmp(v[0], "smtp") == 0) {
		l.proto = PROTO_SMTP;
	} else if (strcmp(v[0], "submission") == 0) {
		l.proto = PROTO_SUBMISSION;
	} else if (strcmp(v[0], "pop3") == 0) {
		l.proto = PROTO_POP3;
	} else if (strcmp(v[0], "imap") == 0) {
#ifdef PICOMAIL_NO_IMAP
		return conf_fail(err, errlen, "listen: this picomail is built without IMAP (make IMAP=no)");
#endif
		l.proto = PROTO_IMAP;
	} else {
		return conf_fail(err, errlen, "listen: bad protocol '%s'", v[0]);
	}
	if (conf_hostport(v[1], 0, &l.addr, &l.addrlen) < 0) {
		return conf_fail(err, errlen, "listen: bad address '%s'", v[1]);
	}
	l.tls = TLS_NONE;
	if (n == 3 && conf_tls_flag(v[2], &l.tls) < 0) {
		return conf_fail(err, errlen, "listen: bad flag '%s' (starttls or tls)", v[2]);
	}
	for (i = 0; i < c->nlisten; i++) {
		if (conf_same_addr(&c->listen[i], &l)) {
			return conf_fail(err, errlen, "listen: duplicate address '%s'", v[1]);
		}
	}
	if (c->nlisten >= CONF_LISTEN_MAX) {
		return conf_fail(err, errlen, "listen: too many listeners (max %d)", CONF_LISTEN_MAX);
	}
	c->listen[c->nlisten++] = l;
	return 0;
}

static int conf_set_relay_from(struct conf *c, const struct conf_key *k, char **v,
                               unsigned n, char *err, size_t errlen)
{
	struct conf_net nets[CONF_NETS_MAX];
	unsigned i;

	if (n == 0) {
		return conf_fail(err, errlen, "%s: missing value (use 'none' for no network)",
		                 k->name);
	}
	/* "none": only authenticated clients may relay. */
	if (n == 1 && strcmp(v[0], "none") == 0) {
		c->nrelay_from = 0;
		return 0;
	}
	if (n > CONF_NETS_MAX) {
		return conf_fail(err, errlen, "%s: too many values (max %d)", k->name, CONF_NETS_MAX);
	}
	for (i = 0; i < n; i++) {
		if (conf_parse_net(v[i], &nets[i]) < 0) {
			return conf_fail(err, errlen, "%s: bad network '%s'", k->name, v[i]);
		}
	}
	memcpy(c->relay_from, nets, n * sizeof nets[0]);
	c->nrelay_from = n;
	return 0;
}

/* "host[:port] [starttls|tls]": a name, an IPv4 address or "[v6]".  With no
 * port, 465 for implicit TLS and 25 otherwise, as an MTA would use.  Or
 * "none". */
static int conf_set_smarthost(struct conf *c, const struct conf_key *k, char **v,
                              unsigned n, char *err, size_t errlen)
{
	struct conf_smarthost sh;
	char host[CONF_NAME_MAX];
	unsigned char a6[16];
	uint16_t port = 0;
	int v6;

	if (n < 1 || n > 2) {
		return conf_fail(err, errlen, "%s: expected 'host:port [starttls|tls]' or 'none'",
		                 k->name);
	}
	memset(&sh, 0, sizeof sh);
	sh.tls = TLS_NONE;
	/* "none": deliver to the MX, as when the key is left out. */
	if (strcmp(v[0], "none") == 0) {
		if (n != 1) {
			return conf_fail(err, errlen, "%s: 'none' takes no flag", k->name);
		}
		c->smarthost = sh;
		return 0;
	}
	if (n == 2 && conf_tls_flag(v[1], &sh.tls) < 0) {
		return conf_fail(err, errlen, "%s: bad flag '%s' (starttls or tls)", k->name, v[1]);
	}
	if (conf_split_hostport(v[0], host, sizeof host, 1, &port, &v6) < 0) {
		return conf_fail(err, errlen, "%s: bad address '%s'", k->name, v[0]);
	}
	if (v6 ? inet_pton(AF_INET6, host, a6) != 1 : !conf_name_ok(host)) {
		return conf_fail(err, errlen, "%s: bad address '%s'", k->name, v[0]);
	}
	if (port == 0) {
		port = sh.tls == TLS_IMPLICIT ? 465 : 25;
	}
	conf_lower_copy(sh.host, host);
	sh.port = port;
	c->smarthost = sh;
	return 0;
}

static int conf_set_resolver(struct conf *c, const struct conf_key *k, char **v,
                             unsigned n, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len;

	if (conf_one(k, n, err, errlen) < 0) {
		return -1;
	}
	if (conf_hostport(v[0], 53, &ss, &len) < 0) {
		return conf_fail(err, errlen, "%s: bad address '%s'", k->name, v[0]);
	}
	c->resolver = ss;
	c->resolver_len = len;
	return 0;
}

/* A system user name, as useradd accepts it; -1 with err if not. */
static int user_name_ok(const struct conf_key *k, const char *name, size_t size, char *err,
                        size_t errlen)
{
	const char *p;

	if (strlen(name) >= size) {
		return conf_fail(err, errlen, "%s: value too long (max %zu)", k->name, size - 1);
	}
	for (p = name; *p != '\0'; p++) {
		if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.') {
			return conf_fail(err, errlen, "%s: bad user name '%s'", k->name, name);
		}
	}
	if (name[0] == '-' || name[0] == '.') {
		return conf_fail(err, errlen, "%s: bad user name '%s'", k->name, name);
	}
	return 0;
}

static int conf_set_run_as(struct conf *c, const struct conf_key *k, char **v,
                           unsigned n, char *err, size_t errlen)
{
	if (conf_one(k, n, err, errlen) < 0 ||
	    user_name_ok(k, v[0], sizeof c->run_as, err, errlen) < 0) {
		return -1;
	}
	memcpy(c->run_as, v[0], strlen(v[0]) + 1);
	return 0;
}

/* "trusted_users name..." or "trusted_users none". */
static int conf_set_trusted(struct conf *c, const struct conf_key *k, char **v,
                            unsigned n, char *err, size_t errlen)
{
	unsigned i;

	if (n == 0) {
		return conf_fail(err, errlen, "%s: missing value", k->name);
	}
	if (n == 1 && strcmp(v[0], "none") == 0) {
		c->ntrusted_users = 0;
		return 0;
	}
	if (n > CONF_TRUSTED_MAX) {
		return conf_fail(err, errlen, "%s: too many users (max %d)", k->name, CONF_TRUSTED_MAX);
	}
	for (i = 0; i < n; i++) {
		if (user_name_ok(k, v[i], sizeof c->trusted_users[0], err, errlen) < 0) {
			return -1;
		}
	}
	for (i = 0; i < n; i++) {
		memcpy(c->trusted_users[i], v[i], strlen(v[i]) + 1);
	}
	c->ntrusted_users = n;
	return 0;
}

/* "dnsbl zone..." (the lists asked, in order) or "dnsbl none". */
static int conf_set_dnsbl(struct conf *c, const struct conf_key *k, char **v,
                          unsigned n, char *err, size_t errlen)
{
	unsigned i;

	if (n == 0) {
		return conf_fail(err, errlen, "%s: missing value", k->name);
	}
	if (n == 1 && strcmp(v[0], "none") == 0) {
		c->ndnsbl = 0;
		return 0;
	}
	if (n > CONF_DNSBL_MAX) {
		return conf_fail(err, errlen, "%s: too many zones (max %d)", k->name, CONF_DNSBL_MAX);
	}
	for (i = 0; i < n; i++) {
		/* The zone follows 32 nibbles of an IPv6 address in a name. */
		if (strlen(v[i]) > 253 - 64 || strlen(v[i]) >= CONF_NAME_MAX || !conf_name_ok(v[i])) {
			return conf_fail(err, errlen, "%s: bad zone '%s'", k->name, v[i]);
		}
	}
	for (i = 0; i < n; i++) {
		conf_lower_copy(c->dnsbl[i], v[i]);
	}
	c->ndnsbl = n;
	return 0;
}

/* "scanner /abs/program arg..." or "scanner none" (also the smarthost's
 * token command).  Never a shell: the words are the program's argv as
 * they stand, so the program must be an absolute path. */
static int conf_set_command(struct conf *c, const struct conf_key *k, char **v,
                            unsigned n, char *err, size_t errlen)
{
	char *field = conf_field(c, k);
	size_t len = 0, w;
	unsigned i;

	if (n == 0) {
		return conf_fail(err, errlen, "%s: missing value", k->name);
	}
	if (n == 1 && strcmp(v[0], "none") == 0) {
		field[0] = '\0';
		return 0;
	}
	if (v[0][0] != '/') {
		return conf_fail(err, errlen, "%s: '%s' is not an absolute path", k->name, v[0]);
	}
	if (n >= CONF_SCANNER_ARGS) {
		return conf_fail(err, errlen, "%s: too many arguments (max %d)", k->name,
		                 CONF_SCANNER_ARGS - 1);
	}
	for (i = 0; i < n; i++) {
		len += strlen(v[i]) + 1;
	}
	if (len > k->size) {
		return conf_fail(err, errlen, "%s: value too long (max %zu)", k->name, k->size - 1);
	}
	for (i = 0, len = 0; i < n; i++) {
		w = strlen(v[i]);
		memcpy(field + len, v[i], w);
		len += w;
		field[len++] = i + 1 < n ? ' ' : '\0';
	}
	return 0;
}

/* "smarthost_auth_mech xoauth2 [oauthbearer]": the first the smarthost
 * offers is used; "none" goes back to PLAIN/LOGIN. */
static int conf_set_mech(struct conf *c, const struct conf_key *k, char **v,
                         unsigned n, char *err, size_t errlen)
{
	unsigned i, m;

	if (n == 0 || n > CONF_MECHS_MAX) {
		return conf_fail(err, errlen, "%s: expected xoauth2, oauthbearer or both", k->name);
	}
	c->nauth_mech = 0;
	if (n == 1 && strcmp(v[0], "none") == 0) {
		return 0;
	}
	for (i = 0; i < n; i++) {
		if (strcasecmp(v[i], "xoauth2") == 0) {
			m = MECH_XOAUTH2;
		} else if (strcasecmp(v[i], "oauthbearer") == 0) {
			m = MECH_OAUTHBEARER;
		} else {
			return conf_fail(err, errlen, "%s: unknown mechanism '%s' (xoauth2 or oauthbearer)",
			                 k->name, v[i]);
		}
		if (i > 0 && c->auth_mech[0] == m) {
			return conf_fail(err, errlen, "%s: '%s' twice", k->name, v[i]);
		}
		c->auth_mech[c->nauth_mech++] = (unsigned char)m;
	}
	return 0;
}

#define CONF_PATH(name)  { #name, conf_set_path, offsetof(struct conf, name), \
                           sizeof(((struct conf *)0)->name), 0, 0 }
#define CONF_UINT(name, lo, hi) { #name, conf_set_uint, offsetof(struct conf, name), 0, lo, hi }
#define CONF_TIME(name) { #name, conf_set_time, offsetof(struct conf, name), 0, 1, UINT_MAX }

static const struct conf_key conf_keys[] = {
	{ "hostname", conf_set_hostname, 0, 0, 0, 0 },
	{ "domains", conf_set_domains, 0, 0, 0, 0 },
	{ "listen", conf_set_listen, 0, 0, 0, 0 },
	CONF_PATH(maildir_root),
	CONF_PATH(spool),
	CONF_PATH(users),
	CONF_PATH(aliases),
	{ "relay_from", conf_set_relay_from, 0, 0, 0, 0 },
	{ "smarthost", conf_set_smarthost, 0, 0, 0, 0 },
	CONF_PATH(smarthost_auth),
	{ "smarthost_auth_mech", conf_set_mech, 0, 0, 0, 0 },
	{ "smarthost_token_command", conf_set_command, offsetof(struct conf, smarthost_token_command),
	  sizeof(((struct conf *)0)->smarthost_token_command), 0, 0 },
	{ "smarthost_token_lifetime", conf_set_time, offsetof(struct conf, smarthost_token_lifetime), 0,
	  60, 86400 },
	CONF_PATH(smarthost_oauth),
	CONF_PATH(tls_cert),
	CONF_PATH(tls_key),
	CONF_PATH(ca_file),
	CONF_TIME(retry_min),
	CONF_TIME(retry_max),
	CONF_TIME(queue_lifetime),
	{ "resolver", conf_set_resolver, 0, 0, 0, 0 },
	CONF_UINT(tls_sessions, 0, 1024),
	CONF_UINT(max_connections, 1, 4096),
	CONF_UINT(max_per_address, 1, 4096),
	{ "max_message_size", conf_set_size, offsetof(struct conf, max_message_size), 0,
	  1, UINT64_MAX },
	CONF_UINT(max_recipients, 1, 10000),
	CONF_TIME(smtp_timeout),
	CONF_TIME(pop3_timeout),
	CONF_UINT(pop3_sessions, 1, 1024),
	CONF_UINT(pop3_max_messages, 16, 1000000),
	CONF_TIME(imap_timeout),
	CONF_UINT(imap_sessions, 1, 1024),
	CONF_UINT(imap_max_messages, 16, 1000000),
	{ "run_as", conf_set_run_as, 0, 0, 0, 0 },
	{ "trusted_users", conf_set_trusted, 0, 0, 0, 0 },
	{ "plaintext_auth", conf_set_yesno, offsetof(struct conf, plaintext_auth), 0, 0, 0 },
	{ "sender_check", conf_set_yesno, offsetof(struct conf, sender_check), 0, 0, 0 },
	{ "smarthost_verify", conf_set_yesno, offsetof(struct conf, smarthost_verify), 0, 0, 0 },
	CONF_UINT(queue_runners, 1, 64),
	CONF_UINT(queue_max_messages, 16, 1000000),
	{ "queue_max_size", conf_set_size, offsetof(struct conf, queue_max_size), 0, 0, UINT64_MAX },
	{ "quota", conf_set_size, offsetof(struct conf, quota), 0, 0, UINT64_MAX },
	CONF_PATH(control),
	{ "greet_pause", conf_set_time, offsetof(struct conf, greet_pause), 0, 0, 60 },
	{ "helo_check", conf_set_yesno, offsetof(struct conf, helo_check), 0, 0, 0 },
	{ "greylist", conf_set_yesno, offsetof(struct conf, greylist), 0, 0, 0 },
	{ "greylist_delay", conf_set_time, offsetof(struct conf, greylist_delay), 0, 1, 86400 },
	{ "dnsbl", conf_set_dnsbl, 0, 0, 0, 0 },
	{ "dnsbl_timeout", conf_set_time, offsetof(struct conf, dnsbl_timeout), 0, 1, 60 },
	{ "scanner", conf_set_command, offsetof(struct conf, scanner), sizeof(((struct conf *)0)->scanner),
	  0, 0 },
	{ "scanner_timeout", conf_set_time, offsetof(struct conf, scanner_timeout), 0, 1, 3600 },
};

/* ------------------------------------------------------------ public API */

void conf_defaults(struct conf *c)
{
	char host[CONF_NAME_MAX + 1];
	struct conf_net *n;

	memset(c, 0, sizeof *c);
	/* gethostname may truncate without a NUL; a name we would refuse in the
	 * file is no better as a default. */
	memset(host, 0, sizeof host);
	if (gethostname(host, sizeof host - 1) == 0 && strlen(host) < sizeof c->hostname &&
	    conf_name_ok(host)) {
		conf_lower_copy(c->hostname, host);
	} else {
		memcpy(c->hostname, "localhost", sizeof "localhost");
	}
	memcpy(c->domains[0], "localhost", sizeof "localhost");
	c->ndomains = 1;
	memcpy(c->maildir_root, "/var/mail", sizeof "/var/mail");
	memcpy(c->spool, "/var/spool/picomail", sizeof "/var/spool/picomail");
	memcpy(c->users, "/etc/picomail/users", sizeof "/etc/picomail/users");
	memcpy(c->aliases, "/etc/aliases", sizeof "/etc/aliases");

	n = &c->relay_from[0];
	n->family = AF_INET;
	n->addr[0] = 127;
	n->bits = 8;
	n = &c->relay_from[1];
	n->family = AF_INET6;
	n->addr[15] = 1;
	n->bits = 128;
	c->nrelay_from = 2;

	c->smarthost.tls = TLS_NONE;
	c->retry_min = 5 * 60;
	c->retry_max = 4 * 3600;
	c->queue_lifetime = 5 * 86400;
	c->tls_sessions = 8;
	c->max_connections = 32;
	c->max_per_address = 10;
	c->max_message_size = 10 * 1024 * 1024;
	c->max_recipients = 100;
	c->smtp_timeout = 300;
	c->pop3_timeout = 600;
	c->pop3_sessions = 4;
	c->sender_check = 1;
	c->smarthost_verify = 1;
	c->queue_runners = 2;
	c->queue_max_messages = 1000;
	c->pop3_max_messages = 2000;
	c->imap_timeout = 30 * 60;
	c->imap_sessions = 8;
	c->imap_max_messages = 5000;
	c->plaintext_auth = 0;
	c->greet_pause = 1;
	c->helo_check = 1;
	c->greylist_delay = 5 * 60;
	c->dnsbl_timeout = 4;
	c->scanner_timeout = 60;
	c->smarthost_token_lifetime = 50 * 60;
}

/* Tab, CR and LF separate words like spaces; any other control byte is a
 * mistake (or an attack on whoever prints the value later). */
static int conf_is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

int conf_line(struct conf *c, char *line, char *err, size_t errlen)
{
	char *w[CONF_WORDS_MAX];
	unsigned nw = 0, i;
	char *p;

	/* The comment is cut here too, so that the fuzzer and tests may pass
	 * raw lines: '#' never occurs in a value. */
	p = strchr(line, '#');
	if (p != NULL) {
		*p = '\0';
	}
	for (p = line; *p != '\0'; p++) {
		if (((unsigned char)*p < 0x20 && !conf_is_space(*p)) || *p == 0x7f) {
			return conf_fail(err, errlen, "control character in line");
		}
	}
	p = line;
	for (;;) {
		while (conf_is_space(*p)) {
			*p++ = '\0';
		}
		if (*p == '\0') {
			break;
		}
		if (nw == CONF_WORDS_MAX) {
			return conf_fail(err, errlen, "%s: too many values", w[0]);
		}
		w[nw++] = p;
		while (*p != '\0' && !conf_is_space(*p)) {
			p++;
		}
	}
	if (nw == 0) {
		return 0;
	}
	for (i = 0; i < sizeof conf_keys / sizeof conf_keys[0]; i++) {
		if (strcmp(w[0], conf_keys[i].name) == 0) {
			return conf_keys[i].set(c, &conf_keys[i], w + 1, nw - 1, err, errlen);
		}
	}
	return conf_fail(err, errlen, "unknown key '%s'", w[0]);
}

const char *conf_qualify_domain(const struct conf *c)
{
	if (c->ndomains == 0 || conf_is_local_domain(c, c->hostname)) {
		return c->hostname;
	}
	return c->domains[0];
}

int conf_is_address(const char *host)
{
	unsigned char a[16];

	return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

/* Checks what no single line can: relations between keys, and what the
 * file left out. */
static int conf_finish(struct conf *c, const char *path, char *err, size_t errlen)
{
	unsigned i;
	int tls = 0;
	size_t len;

	if (c->nlisten == 0) {
		return conf_fail(err, errlen, "%s: no listen line", path);
	}
	if (c->retry_min > c->retry_max) {
		return conf_fail(err, errlen, "%s: retry_min (%us) is greater than retry_max (%us)",
		                 path, c->retry_min, c->retry_max);
	}
	for (i = 0; i < c->nlisten; i++) {
		if (c->listen[i].tls != TLS_NONE) {
			tls = 1;
		}
	}
	if ((c->tls_cert[0] == '\0') != (c->tls_key[0] == '\0')) {
		return conf_fail(err, errlen, "%s: tls_cert and tls_key go together", path);
	}
	if (tls && c->tls_cert[0] == '\0') {
		return conf_fail(err, errlen, "%s: a starttls or tls listener needs tls_cert and tls_key",
		                 path);
	}
	if (c->smarthost.host[0] != '\0' && c->smarthost.tls != TLS_NONE && c->smarthost_verify &&
	    conf_is_address(c->smarthost.host)) {
		/* BearSSL checks a certificate against host names only (and an
		 * address is no name for SNI either, RFC 6066 3). */
		return conf_fail(err, errlen, "%s: smarthost %s is an address: its certificate cannot "
		                 "be checked against it; name it by host name (an /etc/hosts line will "
		                 "do) or set smarthost_verify no", path, c->smarthost.host);
	}
	if (c->nauth_mech > 0 || c->smarthost_oauth[0] != '\0' ||
	    c->smarthost_token_command[0] != '\0') {
		if (c->nauth_mech == 0 || c->smarthost_oauth[0] == '\0' || c->smarthost.host[0] == '\0') {
			return conf_fail(err, errlen, "%s: OAuth2 at the smarthost takes smarthost, "
			                 "smarthost_auth_mech and smarthost_oauth together (and "
			                 "smarthost_token_command, or the refresh grant of the file)", path);
		}
		if (c->smarthost_auth[0] != '\0') {
			return conf_fail(err, errlen, "%s: smarthost_auth (a password) and "
			                 "smarthost_auth_mech (OAuth2) exclude each other", path);
		}
		if (c->smarthost_token_command[0] == '\0' && c->ca_file[0] == '\0') {
			return conf_fail(err, errlen, "%s: the refresh grant of smarthost_oauth needs "
			                 "ca_file to verify the token endpoint", path);
		}
	}
	if (c->control[0] == '\0') {
		len = strlen(c->spool);
		if (len + sizeof "/control" > sizeof c->control) {
			return conf_fail(err, errlen, "%s: spool path too long for the control socket",
			                 path);
		}
		memcpy(c->control, c->spool, len);
		memcpy(c->control + len, "/control", sizeof "/control");
	}
	return 0;
}

/* One line of the file for textfile_read, which reports its message as
 * "path:line: message"; the file's end needs nothing more. */
static int conf_file_line(void *ctx, char *line, unsigned *lineno, char *msg, size_t msglen)
{
	(void)lineno;
	if (line == NULL) {
		return 0;
	}
	return conf_line(ctx, line, msg, msglen);
}

/* A missing configuration file is an error, unlike the users and aliases. */
static const struct textfile_opts conf_file = { CONF_LINE_MAX, CONF_ERR_MAX, 0 };
_Static_assert(CONF_LINE_MAX <= TEXTFILE_LINE_MAX && CONF_ERR_MAX <= TEXTFILE_MSG_MAX,
               "conf_file fits textfile's buffers");

int conf_load(struct conf *c, const char *path, char *err, size_t errlen)
{
	conf_defaults(c);
	if (textfile_read(path, &conf_file, conf_file_line, c, err, errlen) < 0) {
		return -1;
	}
	return conf_finish(c, path, err, errlen);
}

/* The IPv4 address inside an IPv4-mapped IPv6 one (::ffff:a.b.c.d), which
 * is how a dual-stack "[::]" listener sees IPv4 clients. */
static int conf_v4mapped(const unsigned char a[16])
{
	static const unsigned char prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	return memcmp(a, prefix, sizeof prefix) == 0;
}

static int conf_net_has(const struct conf_net *net, int family, const unsigned char *a)
{
	unsigned full = net->bits / 8, rest = net->bits % 8;
	unsigned char mask;

	if (net->family != family) {
		return 0;
	}
	if (memcmp(net->addr, a, full) != 0) {
		return 0;
	}
	if (rest == 0) {
		return 1;
	}
	mask = (unsigned char)(0xff << (8 - rest));
	return (net->addr[full] & mask) == (a[full] & mask);
}

int conf_net_match(const struct conf_net *nets, unsigned n, const struct sockaddr *sa)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	unsigned char a4[4], a6[16];
	int have4 = 0, have6 = 0;
	unsigned i;

	if (nets == NULL || sa == NULL) {
		return 0;
	}
	/* Copies, since sa may point into a byte buffer of any alignment. */
	if (sa->sa_family == AF_INET) {
		memcpy(&sin, sa, sizeof sin);
		memcpy(a4, &sin.sin_addr, 4);
		have4 = 1;
	} else if (sa->sa_family == AF_INET6) {
		memcpy(&sin6, sa, sizeof sin6);
		memcpy(a6, &sin6.sin6_addr, 16);
		have6 = 1;
		if (conf_v4mapped(a6)) {
			memcpy(a4, a6 + 12, 4);
			have4 = 1;
		}
	} else {
		return 0;
	}
	for (i = 0; i < n; i++) {
		if (have4 && conf_net_has(&nets[i], AF_INET, a4)) {
			return 1;
		}
		if (have6 && conf_net_has(&nets[i], AF_INET6, a6)) {
			return 1;
		}
	}
	return 0;
}

int conf_is_local_domain(const struct conf *c, const char *domain)
{
	unsigned i;

	if (c == NULL || domain == NULL) {
		return 0;
	}
	for (i = 0; i < c->ndomains && i < CONF_DOMAINS_MAX; i++) {
		if (strcasecmp(c->domains[i], domain) == 0) {
			return 1;
		}
	}
	return 0;
}
