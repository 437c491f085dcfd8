/* smtp_client.c - the outbound SMTP session state machine (RFC 5321,
 * 3207, 4954, 2920).
 *
 * Targets: the smarthost, or the MX hosts of the recipients' domain by
 * preference (RFC 5321 5.1), falling back to the domain's own address.
 * Each address is tried in turn until one takes the transaction; a failure
 * before MAIL is accepted moves on, one after it ends the attempt.
 */
#include "smtp_client.h"
#include "base64.h"
#include "conn.h"
#include "inforce.h"
#include "json.h"
#include "oauth.h"
#include "stats.h"
#include "dns.h"
#include "io.h"
#include "log.h"
#include "loop.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REPLY_LINES_MAX 100       /* continuation lines accepted in one reply */
#define CONNECT_MS      30000
#define REPLY_MS        300000    /* RFC 5321 4.5.3.2: minutes for most replies */
#define SECRET_MAX      256

enum client_state {
	C_IDLE,
	C_TOKEN,          /* waiting for the smarthost's OAuth2 token */
	C_RESOLVE_MX,     /* waiting for the MX records */
	C_RESOLVE_ADDR,   /* waiting for a host's addresses */
	C_CONNECT,
	C_GREETING,
	C_EHLO,
	C_STARTTLS,
	C_AUTH_PLAIN,
	C_AUTH_USER,      /* AUTH LOGIN: the first challenge (the name) */
	C_AUTH_WORD,      /* AUTH LOGIN: the second challenge (the password) */
	C_AUTH_PASS,      /* AUTH LOGIN: the verdict */
	C_AUTH_SEND,      /* AUTH XOAUTH2/OAUTHBEARER: sending the response */
	C_AUTH_OAUTH,     /* its verdict, or an error challenge */
	C_AUTH_OAUTH_END, /* the verdict after the challenge was answered */
	C_ENVELOPE,       /* replies to MAIL, RCPT..., DATA */
	C_BODY,           /* sending the message */
	C_DOT,            /* waiting for the reply to the final dot */
	C_QUIT,
	C_DONE,
};

#define EXT_STARTTLS   1u
#define EXT_PIPELINING 2u
#define EXT_AUTH_PLAIN 4u
#define EXT_AUTH_LOGIN 8u
#define EXT_AUTH_XOAUTH2 16u
#define EXT_AUTH_OAUTHBEARER 32u

struct smtp_client {
	enum client_state state;
	unsigned run;                     /* bumped by each start: done() may start the
	                                   * next attempt on this object at once */
	const char *id;                   /* the queue id, for the log */
	int slot;                         /* loop slot of the socket, or of the timer */
	int dns;                          /* query in flight, or -1 */
	const char *sender;
	const char *const *rcpt;
	unsigned n;
	int data_fd;
	struct smtp_client_result *res;
	smtp_client_done_fn done;
	void *ctx;
	/* where to go */
	char domain[DNS_NAME_MAX + 1];
	unsigned nhost, host_i;
	char host[DNS_MX_MAX][DNS_NAME_MAX + 1];
	uint16_t port;
	unsigned naddr, addr_i;
	struct sockaddr_storage addr[DNS_ADDR_MAX];
	char where[DNS_NAME_MAX + 64];    /* "host[addr]:port" for the logs */
	char relay[DNS_NAME_MAX + 64];    /* where the last connection went */
	char relay_tls[48];               /* and its TLS suite, or "" */
	int permanent;                    /* the domain cannot take mail at all */
	/* the session */
	unsigned ext;
	int tls_done;
	unsigned env_i;                   /* which envelope reply comes next */
	unsigned accepted;                /* RCPTs taken */
	int mail_ok;
	int bol;
	/* OAuth2 (smarthost_auth_mech) */
	int mech;                         /* the mechanism chosen */
	unsigned tok_gen;                 /* the generation of the token sent */
	size_t auth_off;                  /* how much of the response is out */
	int challenged;                   /* the server answered with an error challenge */
	int token_retried;                /* one new token per attempt */
	int reconnect;                    /* after the token: this address again */
	char challenge[160];              /* what that challenge said */
	/* the reply being read */
	int code;
	unsigned lines;
	char text[QUEUE_WHY_MAX];
	char last_error[QUEUE_WHY_MAX];
	struct dns_result dr;
	struct conn conn;
};

static char auth_user[SECRET_MAX], auth_pass[SECRET_MAX];

size_t smtp_client_size(void)
{
	return sizeof(struct smtp_client);
}

static const struct conf *cf(void)
{
	return inforce_conf();
}

int smtp_client_init(const struct conf *c, char *err, size_t errlen)
{
	char buf[2 * SECRET_MAX + 2], *sp, *end;
	ssize_t n;
	int fd;

	auth_user[0] = auth_pass[0] = '\0';
	if (oauth_init(c, err, errlen) < 0) {
		return -1;
	}
	if (c->smarthost.host[0] != '\0' && c->smarthost_verify && c->ca_file[0] != '\0' &&
	    c->smarthost.tls != TLS_NONE && tls_load_anchors(c->ca_file, err, errlen) < 0) {
		return -1;
	}
	if (c->smarthost_auth[0] == '\0') {
		return 0;
	}
	fd = io_open(c->smarthost_auth, O_RDONLY, 0);
	if (fd < 0) {
		snprintf(err, errlen, "smarthost_auth %s: %s", c->smarthost_auth, strerror(errno));
		return -1;
	}
	n = io_read(fd, buf, sizeof buf - 1);
	io_close(fd);
	if (n < 0) {
		snprintf(err, errlen, "smarthost_auth %s: %s", c->smarthost_auth, strerror(errno));
		return -1;
	}
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	sp = strchr(buf, ' ');
	if (sp == NULL || sp == buf || sp[1] == '\0' || (size_t)(sp - buf) >= SECRET_MAX ||
	    strlen(sp + 1) >= SECRET_MAX) {
		snprintf(err, errlen, "smarthost_auth %s: expected \"user password\" on one line",
		         c->smarthost_auth);
		return -1;
	}
	*sp = '\0';
	end = sp + 1;
	memcpy(auth_user, buf, strlen(buf) + 1);   /* lengths checked above */
	memcpy(auth_pass, end, strlen(end) + 1);
	memset(buf, 0, sizeof buf);
	return 0;
}

/* ---- results ----------------------------------------------------------- */

static void clean_copy(char *out, size_t len, const char *in)
{
	size_t i;

	for (i = 0; i + 1 < len && in[i] != '\0'; i++) {
		unsigned char ch = (unsigned char)in[i];

		/* Server text reaches envelopes and bounces: no controls. */
		out[i] = ch < 0x20 || ch > 0x7e ? '?' : (char)ch;
	}
	out[i] = '\0';
}

static void set_result(struct smtp_client *cl, unsigned i, int code, const char *text)
{
	cl->res[i].code = code;
	clean_copy(cl->res[i].text, sizeof cl->res[i].text, text);
}

/* Every recipient not yet decided gets code and text. */
static void set_rest(struct smtp_client *cl, int code, const char *text)
{
	unsigned i;

	for (i = 0; i < cl->n; i++) {
		if (cl->res[i].code <= 0) {
			set_result(cl, i, code, text);
		}
	}
}

/* Remembers where the connection now closing went, and under which TLS
 * suite, for the outcome lines (smtp_client_relay). */
static void note_relay(struct smtp_client *cl)
{
	snprintf(cl->relay, sizeof cl->relay, "%s", cl->where);
	snprintf(cl->relay_tls, sizeof cl->relay_tls, "%s",
	         cl->conn.tls != NULL && conn_tls_ready(&cl->conn) ? tls_suite(cl->conn.tls) : "");
}

static void finish(struct smtp_client *cl)
{
	unsigned i;

	for (i = 0; i < cl->n; i++) {
		if (cl->res[i].code <= 0) {
			set_result(cl, i, cl->permanent ? 550 : 451,
			           cl->last_error[0] ? cl->last_error : "4.4.1 no answer from any host");
		}
	}
	if (cl->dns >= 0) {
		dns_cancel(cl->dns);
		cl->dns = -1;
	}
	oauth_unwait(cl);
	if (cl->slot >= 0) {
		loop_del(cl->slot);
		cl->slot = -1;
	}
	if (cl->conn.fd >= 0) {
		note_relay(cl);
		conn_close(&cl->conn);
	}
	cl->state = C_DONE;
	cl->done(cl->ctx);
}

static void error_text(struct smtp_client *cl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void error_text(struct smtp_client *cl, const char *fmt, ...)
{
	va_list ap;
	char buf[QUEUE_WHY_MAX];
	struct log_kv l;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	clean_copy(cl->last_error, sizeof cl->last_error, buf);
	log_kv_start(&l, "attempt");
	log_kv_str(&l, "id", cl->id);
	log_kv_str(&l, cl->where[0] ? "relay" : "domain", cl->where[0] ? cl->where : cl->domain);
	log_kv_str(&l, "error", cl->last_error);
	log_kv_end(&l, LOG_NOTICE);
}

/* ---- targets -------------------------------------------------------------- */

static void next_host(struct smtp_client *cl);
static void try_address(struct smtp_client *cl);
static int64_t reply_ms(void);
static void client_io(void *ctx, int revents);
static void want_token(struct smtp_client *cl);

static void token_ready(void *ctx)
{
	struct smtp_client *cl = ctx;

	if (cl->state == C_TOKEN) {
		want_token(cl);
	}
}

/* Before the smarthost is even resolved, the OAuth2 token: a delivery
 * without one is deferred here, with the reason, and nothing is sent.
 * After a refused token, the same address again with a new one. */
static void want_token(struct smtp_client *cl)
{
	int r;

	cl->state = C_TOKEN;
	r = oauth_want(token_ready, cl);
	if (r == 0) {
		return;   /* being fetched: token_ready follows */
	}
	if (r < 0) {
		error_text(cl, "4.7.0 no OAuth2 token for %s: %s", oauth_user(), oauth_why());
		finish(cl);
		return;
	}
	if (cl->reconnect) {
		cl->reconnect = 0;
		try_address(cl);
		return;
	}
	next_host(cl);
}

static void addr_ready(void *ctx, const struct dns_result *r)
{
	struct smtp_client *cl = ctx;
	unsigned i;

	cl->dns = -1;
	if (r->status != DNS_OK || r->naddr == 0) {
		error_text(cl, "4.4.4 cannot find the address of %s%s", cl->host[cl->host_i],
		           r->status == DNS_TEMPFAIL ? " (DNS timeout)" : "");
		cl->host_i++;
		next_host(cl);
		return;
	}
	cl->naddr = r->naddr > DNS_ADDR_MAX ? DNS_ADDR_MAX : r->naddr;
	for (i = 0; i < cl->naddr; i++) {
		cl->addr[i] = r->addr[i];
	}
	cl->addr_i = 0;
	try_address(cl);
}

/* Resolves the next host of the list, or ends the attempt. */
static void next_host(struct smtp_client *cl)
{
	if (cl->host_i >= cl->nhost) {
		finish(cl);
		return;
	}
	cl->state = C_RESOLVE_ADDR;
	cl->dns = dns_query_addr(cl->host[cl->host_i], addr_ready, cl);
	if (cl->dns < 0) {
		error_text(cl, "4.3.0 resolver busy");
		finish(cl);
	}
}

static void mx_ready(void *ctx, const struct dns_result *r)
{
	struct smtp_client *cl = ctx;
	unsigned i;

	cl->dns = -1;
	if (r->status == DNS_NXDOMAIN) {
		cl->permanent = 1;
		error_text(cl, "5.1.2 domain %s does not exist", cl->domain);
		finish(cl);
		return;
	}
	if (r->status == DNS_TEMPFAIL) {
		error_text(cl, "4.4.3 DNS lookup of %s failed", cl->domain);
		finish(cl);
		return;
	}
	if (r->null_mx) {
		cl->permanent = 1;
		error_text(cl, "5.1.10 domain %s accepts no mail (null MX)", cl->domain);
		finish(cl);
		return;
	}
	cl->nhost = 0;
	for (i = 0; i < r->nmx && i < DNS_MX_MAX; i++) {
		snprintf(cl->host[cl->nhost++], sizeof cl->host[0], "%s", r->mx[i].host);
	}
	if (cl->nhost == 0) {
		/* No MX: the domain's own address (RFC 5321 5.1). */
		snprintf(cl->host[cl->nhost++], sizeof cl->host[0], "%s", cl->domain);
	}
	cl->host_i = 0;
	next_host(cl);
}

static socklen_t addr_len(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static void describe(struct smtp_client *cl, const struct sockaddr_storage *ss)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, ip, sizeof ip);
	} else {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, ip, sizeof ip);
	}
	snprintf(cl->where, sizeof cl->where, "%s[%s]:%u", cl->host[cl->host_i], ip, cl->port);
}

/* Drops the connection to this address; goes on with the next one. */
static void next_address(struct smtp_client *cl)
{
	if (cl->slot >= 0) {
		loop_del(cl->slot);
		cl->slot = -1;
	}
	if (cl->conn.fd >= 0) {
		note_relay(cl);
		conn_close(&cl->conn);
	}
	cl->where[0] = '\0';
	cl->addr_i++;
	try_address(cl);
}

static void try_address(struct smtp_client *cl)
{
	struct sockaddr_storage ss;
	int fd;

	if (cl->addr_i >= cl->naddr) {
		cl->host_i++;
		next_host(cl);
		return;
	}
	ss = cl->addr[cl->addr_i];
	if (ss.ss_family == AF_INET6) {
		((struct sockaddr_in6 *)&ss)->sin6_port = htons(cl->port);
	} else {
		((struct sockaddr_in *)&ss)->sin_port = htons(cl->port);
	}
	describe(cl, &ss);
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		error_text(cl, "4.3.0 socket: %s", strerror(errno));
		finish(cl);
		return;
	}
	{
		int one = 1;

		/* Our lines go out whole: no Nagle wait on the peer's delayed
		 * ACK before every reply. */
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	}
	conn_init(&cl->conn, fd, (struct sockaddr *)&ss, addr_len(&ss));
	if (connect(fd, (struct sockaddr *)&ss, addr_len(&ss)) < 0 && errno != EINPROGRESS) {
		error_text(cl, "4.4.1 connect: %s", strerror(errno));
		next_address(cl);
		return;
	}
	cl->slot = loop_add(fd, POLLOUT, client_io, cl);
	if (cl->slot < 0) {
		error_text(cl, "4.3.0 no loop slot");
		conn_close(&cl->conn);
		finish(cl);
		return;
	}
	loop_deadline(cl->slot, loop_now() + CONNECT_MS);
	cl->state = C_CONNECT;
	cl->ext = 0;
	cl->tls_done = 0;
	cl->code = 0;
	cl->lines = 0;
}

void smtp_client_start(struct smtp_client *cl, const char *id, const char *sender,
                       const char *const *rcpt, unsigned n, int data_fd,
                       struct smtp_client_result *results, smtp_client_done_fn done, void *ctx)
{
	const struct conf *c = cf();
	const char *at;
	unsigned i;
	unsigned run = cl->run + 1;

	memset(cl, 0, offsetof(struct smtp_client, conn));
	cl->run = run;
	cl->conn.fd = -1;
	cl->conn.tls = cl->conn.tls_next = NULL;
	cl->slot = -1;
	cl->dns = -1;
	cl->id = id;
	cl->sender = sender;
	cl->rcpt = rcpt;
	cl->n = n;
	cl->data_fd = data_fd;
	cl->res = results;
	cl->done = done;
	cl->ctx = ctx;
	for (i = 0; i < n; i++) {
		results[i].code = 0;
		results[i].text[0] = '\0';
	}
	at = strrchr(rcpt[0], '@');
	snprintf(cl->domain, sizeof cl->domain, "%s", at ? at + 1 : "");
	if (c->smarthost.host[0] != '\0') {
		snprintf(cl->host[0], sizeof cl->host[0], "%s", c->smarthost.host);
		cl->nhost = 1;
		cl->port = c->smarthost.port;
		if (c->nauth_mech > 0) {
			want_token(cl);
			return;
		}
		next_host(cl);
		return;
	}
	cl->port = 25;
	cl->state = C_RESOLVE_MX;
	cl->dns = dns_query_mx(cl->domain, mx_ready, cl);
	if (cl->dns < 0) {
		error_text(cl, "4.3.0 resolver busy");
		finish(cl);
	}
}

const char *smtp_client_relay(const struct smtp_client *cl)
{
	return cl->relay;
}

const char *smtp_client_tls(const struct smtp_client *cl)
{
	return cl->relay_tls;
}

void smtp_client_abort(struct smtp_client *cl)
{
	if (cl->state == C_DONE || cl->state == C_IDLE) {
		return;
	}
	error_text(cl, "4.3.2 shutting down");
	set_rest(cl, 451, cl->last_error);
	finish(cl);
}

/* ---- the conversation ------------------------------------------------------ */

static void send_line(struct smtp_client *cl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A command line: never cut (a cut command would say something else), and
 * long enough for AUTH PLAIN with the longest secret (RFC 4954 4 allows
 * 12288 octets). */
static void send_line(struct smtp_client *cl, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof buf - 2) {
		cl->conn.err = E2BIG;
		return;
	}
	buf[n++] = '\r';
	buf[n++] = '\n';
	conn_put(&cl->conn, buf, (size_t)n);
}

static int smarthost(void)
{
	return cf()->smarthost.host[0] != '\0';
}

static void send_ehlo(struct smtp_client *cl)
{
	cl->ext = 0;
	send_line(cl, "EHLO %s", cf()->hostname);
	cl->state = C_EHLO;
}

static void send_envelope(struct smtp_client *cl)
{
	unsigned i;

	cl->accepted = 0;
	cl->mail_ok = 0;
	cl->env_i = 0;
	send_line(cl, "MAIL FROM:<%s>", cl->sender);
	if (cl->ext & EXT_PIPELINING) {
		/* RFC 2920: the whole envelope and DATA in one go. */
		for (i = 0; i < cl->n; i++) {
			send_line(cl, "RCPT TO:<%s>", cl->rcpt[i]);
		}
		send_line(cl, "DATA");
	}
	cl->state = C_ENVELOPE;
}

static void start_auth(struct smtp_client *cl)
{
	unsigned char raw[2 * SECRET_MAX + 2];
	char b64[sizeof raw * 4 / 3 + 8];
	size_t ul = strlen(auth_user), pl = strlen(auth_pass);

	if (cl->ext & EXT_AUTH_PLAIN) {
		raw[0] = '\0';
		memcpy(raw + 1, auth_user, ul);
		raw[1 + ul] = '\0';
		memcpy(raw + 2 + ul, auth_pass, pl);
		base64_encode(raw, ul + pl + 2, b64, sizeof b64);
		send_line(cl, "AUTH PLAIN %s", b64);
		memset(raw, 0, sizeof raw);
		memset(b64, 0, sizeof b64);
		cl->state = C_AUTH_PLAIN;
	} else {
		send_line(cl, "AUTH LOGIN");
		cl->state = C_AUTH_USER;
	}
}

static const char *mech_name(int mech)
{
	return mech == MECH_OAUTHBEARER ? "OAUTHBEARER" : "XOAUTH2";
}

/* The first mechanism of smarthost_auth_mech the server offers, or 0. */
static int pick_mech(const struct smtp_client *cl)
{
	const struct conf *c = cf();
	unsigned i;

	for (i = 0; i < c->nauth_mech; i++) {
		if ((c->auth_mech[i] == MECH_XOAUTH2 && (cl->ext & EXT_AUTH_XOAUTH2)) ||
		    (c->auth_mech[i] == MECH_OAUTHBEARER && (cl->ext & EXT_AUTH_OAUTHBEARER))) {
			return c->auth_mech[i];
		}
	}
	return 0;
}

/* Streams the AUTH line (an access token may be longer than the output
 * buffer) from oauth.c's copy, which must not change meanwhile. */
static void pump_auth(struct smtp_client *cl)
{
	size_t len, room, k;
	unsigned gen;
	const char *line = oauth_sasl(cl->mech, &len, &gen);

	if (line == NULL || gen != cl->tok_gen) {
		error_text(cl, "4.7.0 the OAuth2 token changed while it was being sent");
		cl->conn.err = ECANCELED;   /* ends the session, keeping this reason */
		return;
	}
	while (cl->auth_off < len && (room = conn_room(&cl->conn)) > 2) {
		k = len - cl->auth_off < room - 2 ? len - cl->auth_off : room - 2;
		conn_put(&cl->conn, line + cl->auth_off, k);
		cl->auth_off += k;
		loop_deadline(cl->slot, loop_now() + reply_ms());
	}
	if (cl->auth_off == len && conn_room(&cl->conn) >= 2) {
		conn_put(&cl->conn, "\r\n", 2);
		cl->state = C_AUTH_OAUTH;
	}
}

/* AUTH XOAUTH2 or OAUTHBEARER with the initial response (RFC 4954 4). */
static void start_oauth(struct smtp_client *cl)
{
	size_t len;
	char head[32];
	int n;

	if (oauth_sasl(cl->mech, &len, &cl->tok_gen) == NULL) {
		error_text(cl, "4.7.0 the OAuth2 token expired before it could be sent");
		cl->conn.err = ECANCELED;
		return;
	}
	n = snprintf(head, sizeof head, "AUTH %s ", mech_name(cl->mech));
	conn_put(&cl->conn, head, (size_t)n);
	cl->auth_off = 0;
	cl->challenged = 0;
	cl->challenge[0] = '\0';
	cl->state = C_AUTH_SEND;
	pump_auth(cl);
}

/* An error challenge (RFC 7628 3.2.2, and XOAUTH2 likewise): base64 JSON
 * with status, schemes and scope, kept in words for the reason. */
static void read_challenge(struct smtp_client *cl, const char *b64)
{
	unsigned char js[384];
	char status[24], schemes[32], scope[64];
	struct json_field f[] = {
		{ "status", JSON_STRING, status, sizeof status, 1, 0, 0 },
		{ "schemes", JSON_STRING, schemes, sizeof schemes, 1, 0, 0 },
		{ "scope", JSON_STRING, scope, sizeof scope, 1, 0, 0 },
	};
	const char *why;
	long n = base64_decode(b64, strlen(b64), js, sizeof js);

	cl->challenged = 1;
	if (n < 0 || json_read((const char *)js, (size_t)n, f, 3, &why) < 0) {
		snprintf(cl->challenge, sizeof cl->challenge, "; an unreadable challenge");
		return;
	}
	snprintf(cl->challenge, sizeof cl->challenge, "; status %s%s%s%s%s", status,
	         schemes[0] ? " schemes " : "", schemes, scope[0] ? " scope " : "", scope);
}

/* The smarthost said no to the token: once per attempt it is forgotten
 * and a new one fetched, then the same address is tried again. */
static void oauth_failed(struct smtp_client *cl)
{
	int refused = cl->challenged || cl->code == 535;

	error_text(cl, "4.7.8 the smarthost refused the OAuth2 token of %s (%s): %d %s%s",
	           oauth_user(), mech_name(cl->mech), cl->code, cl->text, cl->challenge);
	if (!refused) {
		next_address(cl);
		return;
	}
	oauth_refused(cl->tok_gen, cl->last_error);
	if (cl->token_retried) {
		next_address(cl);
		return;
	}
	cl->token_retried = 1;
	send_line(cl, "QUIT");
	(void)conn_flush(&cl->conn);
	loop_del(cl->slot);
	cl->slot = -1;
	note_relay(cl);
	conn_close(&cl->conn);
	cl->where[0] = '\0';
	cl->reconnect = 1;
	want_token(cl);
}

/* A refusal of the password: Exchange Online answers 5.7.30 (or 5.7.139)
 * once basic authentication is off, and only OAuth2 will do then; that is
 * said in the log once until a password is taken again. */
static int basic_refused;

static void password_refused(struct smtp_client *cl, const char *what)
{
	int basic = strstr(cl->text, "5.7.30") != NULL || strstr(cl->text, "5.7.139") != NULL ||
	            strcasestr(cl->text, "basic auth") != NULL;

	error_text(cl, "%s refused: %d %s%s", what, cl->code, cl->text,
	           basic ? " (this smarthost needs OAuth2)" : "");
	if (basic && !basic_refused) {
		log_msg(LOG_WARNING, "smarthost %s refuses password AUTH (%d %s): it needs OAuth2; "
		        "set smarthost_auth_mech and smarthost_oauth (picomail.conf(5), README: "
		        "\"OAuth2 smarthost\")", cl->where, cl->code, cl->text);
	}
	basic_refused = basic;
	next_address(cl);
}

/* After EHLO: STARTTLS if we must or may, AUTH if configured, then mail. */
static void after_ehlo(struct smtp_client *cl)
{
	const struct conf *c = cf();
	int want_tls = !cl->tls_done && (cl->ext & EXT_STARTTLS) && c->tls_sessions > 0;

	if (!cl->tls_done && smarthost() && c->smarthost.tls == TLS_STARTTLS &&
	    !(cl->ext & EXT_STARTTLS)) {
		error_text(cl, "4.7.4 STARTTLS is required but not offered");
		next_address(cl);
		return;
	}
	if (want_tls) {
		send_line(cl, "STARTTLS");
		cl->state = C_STARTTLS;
		return;
	}
	if (smarthost() && c->nauth_mech > 0) {
		if (!cl->tls_done) {
			error_text(cl, "4.7.0 will not send the OAuth2 token without TLS");
			next_address(cl);
			return;
		}
		cl->mech = pick_mech(cl);
		if (cl->mech == 0) {
			error_text(cl, "4.7.0 the smarthost offers no AUTH %s%s%s", mech_name(c->auth_mech[0]),
			           c->nauth_mech > 1 ? " or " : "",
			           c->nauth_mech > 1 ? mech_name(c->auth_mech[1]) : "");
			next_address(cl);
			return;
		}
		start_oauth(cl);
		return;
	}
	if (smarthost() && auth_user[0] != '\0') {
		if (!cl->tls_done) {
			error_text(cl, "4.7.0 will not send the smarthost password without TLS");
			next_address(cl);
			return;
		}
		if (!(cl->ext & (EXT_AUTH_PLAIN | EXT_AUTH_LOGIN))) {
			error_text(cl, "4.7.0 the smarthost offers no AUTH PLAIN or LOGIN");
			next_address(cl);
			return;
		}
		start_auth(cl);
		return;
	}
	send_envelope(cl);
}

static int begin_tls(struct smtp_client *cl, int after_starttls)
{
	const struct conf *c = cf();
	int verify = smarthost() && c->smarthost_verify && c->smarthost.tls != TLS_NONE;
	struct tls *t = tls_client_take(cl->host[cl->host_i], verify);

	if (t == NULL) {
		error_text(cl, "4.3.0 no TLS session free%s", verify ? " (or no trust anchors)" : "");
		return -1;
	}
	if (after_starttls) {
		/* Nothing is waiting to go out (the STARTTLS line was sent before
		 * its reply came): switch now, so that the next line is already
		 * inside TLS. */
		conn_starttls(&cl->conn, t);
		if (conn_flush(&cl->conn) < 0) {
			return -1;
		}
	} else {
		conn_tls_now(&cl->conn, t);
	}
	cl->tls_done = 1;
	return 0;
}

static void parse_ext(struct smtp_client *cl, const char *line)
{
	const char *kw = line + 4;

	if (strncasecmp(kw, "STARTTLS", 8) == 0 && (kw[8] == '\0' || kw[8] == ' ')) {
		cl->ext |= EXT_STARTTLS;
	} else if (strncasecmp(kw, "PIPELINING", 10) == 0 && (kw[10] == '\0' || kw[10] == ' ')) {
		cl->ext |= EXT_PIPELINING;
	} else if (strncasecmp(kw, "AUTH", 4) == 0 && (kw[4] == ' ' || kw[4] == '=')) {
		const char *p = kw + 5;

		while (*p != '\0') {
			size_t n = strcspn(p, " ");

			if (n == 5 && strncasecmp(p, "PLAIN", 5) == 0) {
				cl->ext |= EXT_AUTH_PLAIN;
			} else if (n == 5 && strncasecmp(p, "LOGIN", 5) == 0) {
				cl->ext |= EXT_AUTH_LOGIN;
			} else if (n == 7 && strncasecmp(p, "XOAUTH2", 7) == 0) {
				cl->ext |= EXT_AUTH_XOAUTH2;
			} else if (n == 11 && strncasecmp(p, "OAUTHBEARER", 11) == 0) {
				cl->ext |= EXT_AUTH_OAUTHBEARER;
			}
			p += n;
			while (*p == ' ') {
				p++;
			}
		}
	}
}

/* The reply to one envelope command (MAIL, RCPT i, DATA). */
static void envelope_reply(struct smtp_client *cl)
{
	unsigned i = cl->env_i++;

	if (i == 0) {
		if (cl->code / 100 != 2) {
			set_rest(cl, cl->code, cl->text);
			error_text(cl, "MAIL FROM refused: %d %s", cl->code, cl->text);
		} else {
			cl->mail_ok = 1;
		}
		if (!(cl->ext & EXT_PIPELINING)) {
			if (!cl->mail_ok) {
				send_line(cl, "QUIT");
				cl->state = C_QUIT;
				return;
			}
			send_line(cl, "RCPT TO:<%s>", cl->rcpt[0]);
			return;
		}
	} else if (i <= cl->n) {
		if (cl->mail_ok) {
			if (cl->code / 100 == 2) {
				cl->accepted++;
				cl->res[i - 1].code = -1;   /* taken, pending the dot */
			} else {
				set_result(cl, i - 1, cl->code, cl->text);
			}
		}
		if (!(cl->ext & EXT_PIPELINING)) {
			if (i < cl->n) {
				send_line(cl, "RCPT TO:<%s>", cl->rcpt[i]);
			} else if (cl->accepted > 0) {
				send_line(cl, "DATA");
			} else {
				send_line(cl, "QUIT");
				cl->state = C_QUIT;
			}
			return;
		}
	} else {
		/* DATA */
		if (cl->code == 354 && cl->mail_ok && cl->accepted > 0) {
			if (lseek(cl->data_fd, 0, SEEK_SET) < 0) {
				error_text(cl, "4.3.0 spool: %s", strerror(errno));
				set_rest(cl, 451, cl->last_error);
				finish(cl);
				return;
			}
			cl->bol = 1;
			cl->state = C_BODY;
			return;
		}
		if (cl->code == 354) {
			/* Nobody to send to after all: an empty message aborts
			 * nothing, so end the transaction with RSET-less QUIT. */
			send_line(cl, ".");
		}
		for (i = 0; i < cl->n; i++) {
			if (cl->res[i].code == -1) {
				set_result(cl, i, cl->code, cl->text);
			}
		}
		send_line(cl, "QUIT");
		cl->state = C_QUIT;
	}
}

/* A complete reply arrived: the state machine's one step. */
static void on_reply(struct smtp_client *cl)
{
	unsigned i;

	switch (cl->state) {
	case C_GREETING:
		if (cl->code / 100 != 2) {
			error_text(cl, "greeting %d %s", cl->code, cl->text);
			next_address(cl);
			return;
		}
		send_ehlo(cl);
		break;
	case C_EHLO:
		if (cl->code / 100 != 2) {
			error_text(cl, "EHLO refused: %d %s", cl->code, cl->text);
			next_address(cl);
			return;
		}
		after_ehlo(cl);
		break;
	case C_STARTTLS:
		if (cl->code != 220) {
			if (smarthost() && cf()->smarthost.tls == TLS_STARTTLS) {
				error_text(cl, "STARTTLS refused: %d %s", cl->code, cl->text);
				next_address(cl);
				return;
			}
			cl->ext &= ~EXT_STARTTLS;   /* opportunistic: go on in clear */
			after_ehlo(cl);
			return;
		}
		/* Anything the server sent after its 220 is dropped: only what
		 * comes under TLS counts (CVE-2011-0411 class). */
		if (begin_tls(cl, 1) < 0) {
			next_address(cl);
			return;
		}
		send_ehlo(cl);
		break;
	case C_AUTH_PLAIN:
	case C_AUTH_PASS:
		if (cl->code != 235) {
			password_refused(cl, "AUTH");
			return;
		}
		basic_refused = 0;
		send_envelope(cl);
		break;
	case C_AUTH_OAUTH:
		if (cl->code == 235) {
			send_envelope(cl);
			break;
		}
		if (cl->code == 334) {
			/* The exchange ends with a dummy response: empty for
			 * XOAUTH2, %x01 for OAUTHBEARER (RFC 7628 3.2.3). */
			send_line(cl, "%s", cl->mech == MECH_OAUTHBEARER ? "AQ==" : "");
			cl->state = C_AUTH_OAUTH_END;
			break;
		}
		oauth_failed(cl);
		break;
	case C_AUTH_OAUTH_END:
		oauth_failed(cl);
		break;
	case C_AUTH_USER:
		/* The challenges' wording varies ("Username:", "User Name"):
		 * their order is what counts (the name, then the password). */
		if (cl->code == 334) {
			char b64[SECRET_MAX * 4 / 3 + 8];

			base64_encode((const unsigned char *)auth_user, strlen(auth_user), b64, sizeof b64);
			send_line(cl, "%s", b64);
			cl->state = C_AUTH_WORD;
			return;
		}
		password_refused(cl, "AUTH LOGIN");
		break;
	case C_AUTH_WORD:
		if (cl->code == 334) {
			char b64[SECRET_MAX * 4 / 3 + 8];

			base64_encode((const unsigned char *)auth_pass, strlen(auth_pass), b64, sizeof b64);
			send_line(cl, "%s", b64);
			memset(b64, 0, sizeof b64);
			cl->state = C_AUTH_PASS;
			return;
		}
		password_refused(cl, "AUTH LOGIN");
		break;
	case C_ENVELOPE:
		envelope_reply(cl);
		break;
	case C_DOT:
		for (i = 0; i < cl->n; i++) {
			if (cl->res[i].code == -1) {
				set_result(cl, i, cl->code, cl->text);
			}
		}
		/* The outcome is known: hand it to the queue now rather than
		 * after QUIT's round trip, which would widen the window in
		 * which a crash sends the message twice (RFC 1047).  QUIT goes
		 * out if the socket takes it at once; its reply is not read. */
		send_line(cl, "QUIT");
		(void)conn_flush(&cl->conn);
		finish(cl);
		break;
	case C_QUIT:
		finish(cl);
		break;
	default:
		break;
	}
}

/* How long the server may take for each line of a reply, and the
 * message body for each bufferful it accepts: counted from the last whole
 * line or the last progress, never from the last byte, so that a server
 * dribbling bytes cannot hold a queue runner for ever.  The test build
 * takes PICOMAIL_REPLY_MS, so tests need not wait five minutes. */
static int64_t reply_ms(void)
{
#ifdef PICOMAIL_TEST
	static int64_t ms;

	if (ms == 0) {
		const char *e = getenv("PICOMAIL_REPLY_MS");

		ms = e != NULL && atol(e) > 0 ? atol(e) : REPLY_MS;
	}
	return ms;
#else
	return REPLY_MS;
#endif
}

/* Reads reply lines: "ddd-text" continues, "ddd text" ends (RFC 5321
 * 4.2).  Anything else is a protocol error. */
static int read_replies(struct smtp_client *cl)
{
	char *line;
	size_t len;
	int code;
	unsigned run = cl->run;

	for (;;) {
		if (cl->state == C_BODY || cl->state == C_AUTH_SEND || cl->state == C_DONE) {
			return 0;   /* a reply waits until what it answers is out */
		}
		switch (conn_line(&cl->conn, &line, &len, 512)) {
		case CONN_LINE_NONE:
			if (conn_more(&cl->conn) && conn_fill(&cl->conn) > 0) {
				continue;
			}
			return 0;
		case CONN_LINE_TOO_LONG:
			error_text(cl, "4.5.0 reply line too long");
			return -1;
		case CONN_LINE_OK:
			loop_deadline(cl->slot, loop_now() + reply_ms());
			break;
		}
		if (len < 3 || strlen(line) != len || line[0] < '2' || line[0] > '5' || line[1] < '0' ||
		    line[1] > '9' || line[2] < '0' || line[2] > '9' ||
		    (len > 3 && line[3] != ' ' && line[3] != '-')) {
			error_text(cl, "4.5.0 malformed reply");
			return -1;
		}
		code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
		if (cl->lines > 0 && code != cl->code) {
			error_text(cl, "4.5.0 reply code changed within a reply");
			return -1;
		}
		if (++cl->lines > REPLY_LINES_MAX) {
			error_text(cl, "4.5.0 reply too long");
			return -1;
		}
		cl->code = code;
		if (cl->state == C_EHLO && cl->lines > 1) {
			parse_ext(cl, line);
		}
		if (cl->state == C_AUTH_OAUTH && code == 334 && len > 4 && line[3] == ' ') {
			read_challenge(cl, line + 4);
		}
		if (len > 3 && line[3] == '-') {
			continue;
		}
		clean_copy(cl->text, sizeof cl->text, len > 4 ? line + 4 : "");
		cl->lines = 0;
		on_reply(cl);
		if (cl->run != run || cl->state == C_DONE || cl->state == C_TOKEN) {
			return 1;   /* done, or the connection given up for a new token */
		}
	}
}

/* Sends the spool file as DATA: CRLF line ends, dot-stuffing, the end. */
static void pump_body(struct smtp_client *cl)
{
	unsigned char in[CONN_OUT_SIZE / 2 - 8], out[CONN_OUT_SIZE];
	size_t room, want, o, k;
	ssize_t n;

	while ((room = conn_room(&cl->conn)) >= 64) {
		/* Room means the server took what went before: progress. */
		loop_deadline(cl->slot, loop_now() + reply_ms());
		want = (room - 8) / 2;
		if (want > sizeof in) {
			want = sizeof in;
		}
		n = io_read(cl->data_fd, in, want);
		if (n < 0) {
			error_text(cl, "4.3.0 spool read: %s", strerror(errno));
			cl->conn.err = EIO;
			return;
		}
		o = 0;
		if (n == 0) {
			if (!cl->bol) {
				out[o++] = '\r';
				out[o++] = '\n';
			}
			memcpy(out + o, ".\r\n", 3);
			o += 3;
			conn_put(&cl->conn, out, o);
			cl->state = C_DOT;
			return;
		}
		for (k = 0; k < (size_t)n; k++) {
			if (in[k] == '\n') {
				out[o++] = '\r';
				out[o++] = '\n';
				cl->bol = 1;
				continue;
			}
			if (cl->bol && in[k] == '.') {
				out[o++] = '.';
			}
			out[o++] = in[k];
			cl->bol = 0;
		}
		conn_put(&cl->conn, out, o);
	}
}

static void connected(struct smtp_client *cl)
{
	int err = 0;
	socklen_t len = sizeof err;

	if (getsockopt(cl->conn.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
		error_text(cl, "4.4.1 connect: %s", strerror(err ? err : errno));
		next_address(cl);
		return;
	}
	cl->state = C_GREETING;
	if (smarthost() && cf()->smarthost.tls == TLS_IMPLICIT && begin_tls(cl, 0) < 0) {
		next_address(cl);
		return;
	}
	loop_deadline(cl->slot, loop_now() + reply_ms());
}

/* Something went wrong with this server: before MAIL was taken, the next
 * address may do better; after, the attempt ends here. */
static void session_failed(struct smtp_client *cl)
{
	if (cl->conn.tls_error != 0) {
		error_text(cl, "4.7.5 TLS failed: %s%s", tls_error_text(cl->conn.tls_error),
		           cl->conn.tls_error >= BR_ERR_X509_OK && time(NULL) < 1577836800 ?
		           " (the clock is not set: certificates cannot be checked)" : "");
	} else if (cl->last_error[0] == '\0' || (cl->conn.err != 0 && cl->conn.err != ECANCELED) ||
	           cl->conn.eof) {
		error_text(cl, "4.4.2 connection lost%s%s", cl->conn.err ? ": " : "",
		           cl->conn.err ? strerror(cl->conn.err) : "");
	}
	if (cl->state <= C_AUTH_OAUTH_END || (cl->state == C_ENVELOPE && !cl->mail_ok)) {
		next_address(cl);
		return;
	}
	set_rest(cl, 451, cl->last_error);
	finish(cl);
}

static void client_io(void *ctx, int revents)
{
	struct smtp_client *cl = ctx;
	int r, want;
	unsigned run = cl->run;

	if (revents & LOOP_TIMEOUT) {
		error_text(cl, "4.4.2 timeout %s", cl->state == C_CONNECT ? "connecting" : "waiting");
		session_failed(cl);
		return;
	}
	if (cl->state == C_CONNECT) {
		connected(cl);
		if (cl->state != C_GREETING) {
			return;
		}
	}
	if (revents & (POLLIN | POLLERR | POLLHUP)) {
		(void)conn_fill(&cl->conn);
	}
	r = read_replies(cl);
	if (cl->run != run || cl->state == C_DONE || cl->state == C_TOKEN) {
		return;   /* finished, and perhaps already started anew by done() */
	}
	/* read_replies took every whole line: what is left after the server's
	 * end of file is a line it never finished, and no reply will come. */
	if (r < 0 || ((cl->conn.err || cl->conn.eof) &&
	              (conn_unread(&cl->conn) == 0 || cl->state != C_BODY))) {
		session_failed(cl);
		return;
	}
	if (cl->state == C_BODY) {
		pump_body(cl);
	} else if (cl->state == C_AUTH_SEND) {
		pump_auth(cl);
	}
	if (conn_flush(&cl->conn) < 0) {
		session_failed(cl);
		return;
	}
	want = cl->state != C_BODY && cl->state != C_AUTH_SEND;
	loop_events(cl->slot, conn_poll_events(&cl->conn, want) | (want ? 0 : POLLOUT));
}
