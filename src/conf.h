/* conf.h - the configuration file, parsed into one immutable struct.
 *
 * The file is "key value..." a line, '#' starts a comment.  Every key of
 * DESIGN.md is known; an unknown key or a bad value is an error reported as
 * "file:line: what is wrong".  Reload parses into a fresh struct and swaps
 * only when the whole file is good.
 */
#ifndef PICOMAIL_CONF_H
#define PICOMAIL_CONF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>

#define CONF_PATH_MAX     256
#define CONF_NAME_MAX     128   /* host names, domains */
#define CONF_DOMAINS_MAX  16
#define CONF_LISTEN_MAX   8
#define CONF_NETS_MAX     16
#define CONF_ERR_MAX      320
#define CONF_DNSBL_MAX    4     /* blocklist zones */
#define CONF_TRUSTED_MAX   8      /* trusted_users */
#define CONF_SCANNER_ARGS 16    /* the scanner program and its arguments */
#define CONF_DEFAULT_PATH "/etc/picomail.conf"

enum listen_proto { PROTO_SMTP, PROTO_SUBMISSION, PROTO_POP3, PROTO_IMAP };
enum listen_tls { TLS_NONE, TLS_STARTTLS, TLS_IMPLICIT };

struct conf_listen {
	enum listen_proto proto;
	enum listen_tls tls;
	struct sockaddr_storage addr;   /* AF_INET or AF_INET6, port set */
	socklen_t addrlen;
};

/* An address prefix, as in relay_from: family, address bytes, bit count. */
struct conf_net {
	int family;                     /* AF_INET or AF_INET6 */
	unsigned char addr[16];
	unsigned bits;
};

/* SASL mechanisms for an OAuth2 token at the smarthost (smarthost_auth_mech). */
enum conf_auth_mech { MECH_NONE, MECH_XOAUTH2, MECH_OAUTHBEARER };
#define CONF_MECHS_MAX 2

struct conf_smarthost {
	char host[CONF_NAME_MAX];       /* empty: deliver to the MX */
	uint16_t port;
	enum listen_tls tls;            /* NONE: STARTTLS when offered */
};

struct conf {
	char hostname[CONF_NAME_MAX];
	char domains[CONF_DOMAINS_MAX][CONF_NAME_MAX];
	unsigned ndomains;
	struct conf_listen listen[CONF_LISTEN_MAX];
	unsigned nlisten;
	char maildir_root[CONF_PATH_MAX];
	char spool[CONF_PATH_MAX];
	char users[CONF_PATH_MAX];
	char aliases[CONF_PATH_MAX];
	struct conf_net relay_from[CONF_NETS_MAX];
	unsigned nrelay_from;
	struct conf_smarthost smarthost;
	char smarthost_auth[CONF_PATH_MAX];
	/* OAuth2 at the smarthost: the mechanisms in order of preference
	 * (none: PLAIN/LOGIN with smarthost_auth), where the token comes
	 * from (a program, or the refresh grant of the smarthost_oauth
	 * file, which also names the user). */
	unsigned char auth_mech[CONF_MECHS_MAX];
	unsigned nauth_mech;
	char smarthost_token_command[CONF_PATH_MAX];   /* program and arguments, one space apart */
	unsigned smarthost_token_lifetime;             /* seconds, when the program says none */
	char smarthost_oauth[CONF_PATH_MAX];
	char tls_cert[CONF_PATH_MAX];
	char tls_key[CONF_PATH_MAX];
	char ca_file[CONF_PATH_MAX];
	unsigned retry_min;             /* seconds */
	unsigned retry_max;             /* seconds */
	unsigned queue_lifetime;        /* seconds */
	struct sockaddr_storage resolver; /* ss_family 0: /etc/resolv.conf */
	socklen_t resolver_len;
	unsigned tls_sessions;
	unsigned max_connections;
	unsigned max_per_address;       /* concurrent sessions from one address */
	uint64_t max_message_size;      /* octets */
	unsigned max_recipients;
	unsigned smtp_timeout;          /* seconds idle in a command or in DATA */
	unsigned pop3_timeout;          /* seconds idle; RFC 1939 asks for >= 600 */
	unsigned pop3_sessions;         /* mailboxes open at once (POP3 logins) */
	unsigned pop3_max_messages;     /* messages one POP3 session lists */
	unsigned imap_timeout;          /* seconds idle, IDLE included; RFC 3501 5.4: >= 30 min */
	unsigned imap_sessions;         /* IMAP logins at once (each with a folder index) */
	unsigned imap_max_messages;     /* messages an IMAP session indexes in one folder */
	char run_as[64];                /* empty: stay as started */
	/* Local users whose sendmail -f is honoured, besides root and run_as. */
	char trusted_users[CONF_TRUSTED_MAX][64];
	unsigned ntrusted_users;
	int plaintext_auth;             /* 0 or 1 */
	int sender_check;               /* 1: an authenticated user sends only as themself */
	int smarthost_verify;           /* 1: the smarthost's certificate is checked */
	unsigned queue_runners;         /* deliveries from the queue at once */
	unsigned queue_max_messages;    /* messages the queue holds; then 452 4.3.1 */
	uint64_t queue_max_size;        /* octets the queue holds (0: no quota); then 452 4.3.1 */
	char control[CONF_PATH_MAX];    /* control socket; default <spool>/control */
	uint64_t quota;                 /* octets per Maildir (0: none); the users file overrides */
	/* Spam defence (smtp_server.c, greylist.c, dnsbl.c, scanner.c). */
	unsigned greet_pause;           /* seconds the banner waits on smtp listeners; 0: none */
	int helo_check;                 /* 1: HELO/EHLO must be a domain or an address literal */
	int greylist;                   /* 1: greylisting of unknown triplets at RCPT */
	unsigned greylist_delay;        /* seconds before a retry passes */
	char dnsbl[CONF_DNSBL_MAX][CONF_NAME_MAX];   /* DNS blocklist zones */
	unsigned ndnsbl;
	unsigned dnsbl_timeout;         /* seconds the banner waits for the lists */
	char scanner[CONF_PATH_MAX];    /* program and arguments, one space apart; empty: none */
	unsigned scanner_timeout;       /* seconds; then the scanner is killed, the mail 451 */
};

/* Fills *c with the defaults of DESIGN.md. */
void conf_defaults(struct conf *c);

/* Parses the file at path into *c (defaults first).  Returns 0, or -1 with
 * "path:line: message" (or "path: strerror") in err. */
int conf_load(struct conf *c, const char *path, char *err, size_t errlen);

/* Parses one "key value..." line (already stripped of its comment) into *c.
 * Returns 0, or -1 with the message (without file:line) in err.  Exposed
 * for the unit tests and the fuzzer. */
int conf_line(struct conf *c, char *line, char *err, size_t errlen);

/* Parses "10M", "512K", "1024" into octets; -1 on a bad value. */
int conf_parse_size(const char *s, uint64_t *out);

/* Parses "30s", "5m", "4h", "5d" (or a bare number of seconds); -1 if bad. */
int conf_parse_time(const char *s, unsigned *out);

/* Parses "1.2.3.4:25", "[::1]:25", "0.0.0.0:25"; -1 if bad. */
int conf_parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len);

/* 1 if host is an IPv4 or IPv6 address literal (no brackets). */
int conf_is_address(const char *host);

/* 1 if the address is inside one of the nets. */
int conf_net_match(const struct conf_net *nets, unsigned n, const struct sockaddr *sa);

/* 1 if domain (case-insensitive) is one of c->domains. */
int conf_is_local_domain(const struct conf *c, const char *domain);

/* The domain given to bare local names ("root"): the host name when it is
 * a local domain, else the first local domain, so that "root" stays local
 * (and a bounce to a local user's mail too). */
const char *conf_qualify_domain(const struct conf *c);

#endif
