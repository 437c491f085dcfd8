/* smtp_server.c - the SMTP session state machine (RFC 5321, 1870, 2034,
 * 2920, 3463, 6152).
 *
 * A session reads commands from its bounded line reader and dispatches
 * them through one table of {verb, allowed states, handler}.  In DATA the
 * bytes go through the smtp_data machine straight into a Maildir file;
 * the reply to the final dot waits for the group commit.  The defences
 * against spam engines are smtp_policy.c's steps.
 */
#include "smtp_server.h"
#include "smtp_session.h"
#include "auth.h"
#include "base64.h"
#include "date.h"
#include "inforce.h"
#include "loop.h"
#include "queue.h"
#include "quota.h"
#include "scanner.h"
#include "sessions.h"
#include "stats.h"
#include "tls.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/statvfs.h>
#include <time.h>

struct smtp_command {
	const char *verb;
	unsigned states;                       /* ST_* where it is allowed */
	void (*run)(struct smtp_session *s, char *arg);
};

static void session_io(void *ctx, int revents);
static void tls_wait(struct smtp_session *s);
void smtp_process(struct smtp_session *s);
int smtp_update(struct smtp_session *s);

size_t smtp_session_size(void)
{
	return sizeof(struct smtp_session);
}

const struct sockaddr_storage *smtp_session_peer(const void *mem)
{
	return &((const struct smtp_session *)mem)->conn.peer;
}

void smtp_reply(struct smtp_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void smtp_reply(struct smtp_session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)conn_vline(&s->conn, fmt, ap);
	va_end(ap);
}

/* The start of an event line about this session (log.h). */
void smtp_kv_session(struct log_kv *l, const char *event, const struct smtp_session *s)
{
	log_kv_start(l, event);
	log_kv_fmt(l, "session", "%08" PRIx32, s->id);
	log_kv_str(l, "client", s->conn.peer_ip);
}

/* One line for a refusal: why (a word), whom it concerns, and the reply
 * the client got.  Every refusal of mail or of a client is logged once. */
static void log_refusal(const struct smtp_session *s, const char *reason, const char *rcpt,
                        const char *text)
{
	struct log_kv l;

	smtp_kv_session(&l, "refused", s);
	log_kv_str(&l, "reason", reason);
	if (s->state & (ST_MAIL | ST_RCPT | ST_DATA | ST_SCAN) || s->tx.from[0] != '\0') {
		log_kv_addr(&l, "from", s->tx.from);
	}
	if (rcpt != NULL) {
		log_kv_addr(&l, "to", rcpt);
	}
	if (s->auth_user[0] != '\0') {
		log_kv_str(&l, "auth", s->auth_user);
	}
	if (text != NULL) {
		log_kv_str(&l, "reply", text);
	}
	log_kv_end(&l, LOG_NOTICE);
}

void smtp_refuse(struct smtp_session *s, const char *reason, const char *rcpt, const char *fmt,
                   ...) __attribute__((format(printf, 4, 5)));

/* A refusal: the reply, and its log line. */
void smtp_refuse(struct smtp_session *s, const char *reason, const char *rcpt, const char *fmt,
                   ...)
{
	char text[512];
	va_list ap;

	va_start(ap, fmt);
	if (vsnprintf(text, sizeof text, fmt, ap) < 0) {
		text[0] = '\0';
	}
	va_end(ap);
	log_refusal(s, reason, rcpt, text);
	smtp_reply(s, "%s", text);
}

/* A 5xx for the client's mistake: counted, and too many end the session. */
void smtp_reply_error(struct smtp_session *s, const char *text)
{
	smtp_reply(s, "%s", text);
	if (++s->errors >= SMTP_ERRORS_MAX) {
		smtp_refuse(s, "errors", NULL, "421 4.7.0 %s Error: too many errors",
		       inforce_conf()->hostname);
		s->state = ST_QUIT;
		s->end_why = "errors";
	}
}

/* Forgets the transaction, removing any file it started (RSET, EHLO, end).
 * In ST_COMMIT the message belongs to the commit queue until committed()
 * hands it back: nothing of it may be touched. */
void smtp_tx_reset(struct smtp_session *s)
{
	if (s->state == ST_COMMIT) {
		return;
	}
	if (s->state == ST_SCAN && s->scan >= 0) {
		/* The scanner's verdict is not wanted any more. */
		scanner_cancel(s->scan);
		s->scan = -1;
	}
	if (s->tx.file_open) {
		maildir_abort(&s->msg);
	}
	memset(&s->tx, 0, sizeof s->tx);
	s->msg.nusers = 0;
	if (s->state & (ST_MAIL | ST_RCPT | ST_DATA | ST_SCAN)) {
		s->state = ST_READY;
	}
}

/* The one way a session ends, whatever ended it (QUIT, a reset, a
 * timeout, shutdown).  The work it started elsewhere is cancelled where it
 * can be: the blocklist lookups (the resolver's handles carry a
 * generation), the scanner (reaped without a report); the connection and
 * its TLS slot go at once.  A message in the commit queue cannot be taken
 * back from a batch: the object then stays taken, marked gone, and
 * committed() gives it back when the batch is done.  Either way it goes
 * back to the pool exactly once, and a second call does nothing. */
static void log_disconnect(const struct smtp_session *s)
{
	struct log_kv l;

	smtp_kv_session(&l, "disconnect", s);
	log_kv_str(&l, "proto", s->listener->proto == PROTO_SUBMISSION ? "submission" : "smtp");
	log_kv_u64(&l, "messages", s->acked);
	log_kv_u64(&l, "bytes", s->acked_bytes);
	conn_log_end(&l, &s->conn, s->started, s->end_why);
}

static void session_end(struct smtp_session *s)
{
	if (s->gone) {
		return;
	}
	log_disconnect(s);
	if (s->dnsbl_on) {
		(void)dnsbl_cancel(&s->dnsbl, 0);
		s->dnsbl_on = 0;
	}
	smtp_tx_reset(s);
	loop_del(s->slot);
	s->slot = -1;
	conn_close(&s->conn);
	if (s->state == ST_COMMIT) {
		s->gone = 1;
		return;
	}
	sessions_release(s);
}

/* ---- commands -------------------------------------------------------- */

/* 1 if the HELO/EHLO argument is a plausible name: printable, no spaces. */
static int helo_ok(const char *arg)
{
	size_t i;

	if (arg[0] == '\0' || strlen(arg) >= sizeof ((struct smtp_session *)0)->helo) {
		return 0;
	}
	for (i = 0; arg[i] != '\0'; i++) {
		if (arg[i] <= ' ' || arg[i] > '~') {
			return 0;
		}
	}
	return 1;
}

/* STARTTLS on a "starttls" listener, before TLS, with keys loaded. */
static int starttls_offered(const struct smtp_session *s)
{
	return s->listener->tls == TLS_STARTTLS && s->conn.tls == NULL && tls_ready();
}

/* AUTH under TLS, or in plain text when plaintext_auth allows it. */
static int auth_offered(const struct smtp_session *s)
{
	return s->auth_user[0] == '\0' && (s->conn.tls != NULL || inforce_conf()->plaintext_auth);
}

static void greet(struct smtp_session *s, char *arg, int esmtp)
{
	const struct conf *c = inforce_conf();

	if (!helo_ok(arg)) {
		smtp_reply_error(s, "501 5.5.4 Syntax: EHLO hostname");
		return;
	}
	if (policy_helo_refused(s, arg)) {
		return;
	}
	smtp_tx_reset(s);
	snprintf(s->helo, sizeof s->helo, "%s", arg);
	s->esmtp = esmtp;
	s->state = ST_READY;
	if (!esmtp) {
		smtp_reply(s, "250 %s", c->hostname);
		return;
	}
	smtp_reply(s, "250-%s", c->hostname);
	smtp_reply(s, "250-PIPELINING");
	smtp_reply(s, "250-SIZE %" PRIu64, c->max_message_size);
	smtp_reply(s, "250-8BITMIME");
	smtp_reply(s, "250-ENHANCEDSTATUSCODES");
	if (starttls_offered(s)) {
		smtp_reply(s, "250-STARTTLS");
	}
	if (auth_offered(s)) {
		smtp_reply(s, "250-AUTH PLAIN LOGIN");
	}
	smtp_reply(s, "250 HELP");
}

static void cmd_ehlo(struct smtp_session *s, char *arg)
{
	greet(s, arg, 1);
}

static void cmd_helo(struct smtp_session *s, char *arg)
{
	greet(s, arg, 0);
}

/* Expects "KEYWORD:" (case-insensitive) at arg; returns what follows. */
static char *after_keyword(char *arg, const char *kw)
{
	size_t n = strlen(kw);

	if (strncasecmp(arg, kw, n) != 0) {
		return NULL;
	}
	return arg + n;
}

/* SIZE=<digits> (RFC 1870): 0 and the size, saturated at UINT64_MAX, or
 * -1 when it is not all digits.  A value too large to hold is still a
 * number, and a size no limit takes: the caller answers 552, not 501. */
static int size_value(const char *v, size_t n, uint64_t *size)
{
	uint64_t x = 0;
	size_t i;

	if (n == 0) {
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9') {
			return -1;
		}
		if (x > (UINT64_MAX - (uint64_t)(v[i] - '0')) / 10) {
			x = UINT64_MAX;
		} else {
			x = x * 10 + (uint64_t)(v[i] - '0');
		}
	}
	*size = x;
	return 0;
}

/* 1 if the n octets at v are word, in any case. */
static int value_is(const char *v, size_t n, const char *word)
{
	return strlen(word) == n && strncasecmp(v, word, n) == 0;
}

/* MAIL parameters (RFC 5321 4.1.2 esmtp-param): SIZE and BODY.  0 or -1
 * with the reply sent.  SIZE= declares the size that DATA counts
 * (smtp_data.h: octets) and is held to the same max_message_size. */
static int mail_params(struct smtp_session *s, const char *p)
{
	const struct conf *c = inforce_conf();
	char kw[32];
	const char *val;
	uint64_t size;
	size_t k, v;

	for (;;) {
		while (*p == ' ') {
			p++;
		}
		if (*p == '\0') {
			return 0;
		}
		for (k = 0; p[k] != '\0' && p[k] != '=' && p[k] != ' '; k++) {
		}
		if (k == 0 || k >= sizeof kw) {
			smtp_reply_error(s, "555 5.5.4 Unsupported MAIL parameter");
			return -1;
		}
		memcpy(kw, p, k);
		kw[k] = '\0';
		p += k;
		val = p;
		v = 0;
		if (*p == '=') {
			val = ++p;
			for (v = 0; p[v] != '\0' && p[v] != ' '; v++) {
			}
			p += v;
		}
		if (strcasecmp(kw, "SIZE") == 0 && v > 0) {
			if (size_value(val, v, &size) < 0) {
				smtp_reply_error(s, "501 5.5.4 Bad SIZE parameter");
				return -1;
			}
			if (size > c->max_message_size) {
				smtp_refuse(s, "size", NULL, "552 5.3.4 Message size exceeds fixed limit");
				return -1;
			}
			s->tx.size_hint = size;
		} else if (strcasecmp(kw, "BODY") == 0 &&
		           (value_is(val, v, "7BIT") || value_is(val, v, "8BITMIME"))) {
			/* Stored as received: nothing to convert. */
		} else {
			smtp_reply_error(s, "555 5.5.4 Unsupported MAIL parameter");
			return -1;
		}
	}
}

static int is_user(const char *name);

/* An authenticated user sends as themself: <>, user@local-domain, or a
 * local name whose alias leads to them. */
static int sender_owned(struct smtp_session *s, const char *from)
{
	static struct addr_expansion x;
	char local[ADDR_LOCAL_MAX + 1];
	const char *domain;
	unsigned i;

	if (from[0] == '\0' || !inforce_conf()->sender_check) {
		return 1;
	}
	domain = addr_split(from, local);
	if (domain == NULL || !conf_is_local_domain(inforce_conf(), domain)) {
		return 0;
	}
	if (strcasecmp(local, s->auth_user) == 0) {
		return 1;
	}
	if (addr_expand(inforce_aliases(), local, is_user, NULL, inforce_conf(), &x) <= 0) {
		return 0;
	}
	for (i = 0; i < x.n; i++) {
		if (!x.remote[i] && strcmp(x.target[i], s->auth_user) == 0) {
			return 1;
		}
	}
	return 0;
}

/* A local user on the submit socket who is not trusted sends as
 * themself (submitter.h): their claim is replaced, and the reply says by
 * what. */
static void local_sender(struct smtp_session *s)
{
	struct log_kv l;

	if (!s->sub.known || s->sub.address[0] == '\0') {
		smtp_refuse(s, "unknown-local-user", NULL, "451 4.7.0 Cannot tell which local user you are");
		s->tx.from[0] = '\0';
		return;
	}
	s->state = ST_MAIL;
	if (strcmp(s->tx.from, s->sub.address) == 0) {
		smtp_reply(s, "250 2.1.0 Ok");
		return;
	}
	smtp_kv_session(&l, "sender-rewritten", s);
	log_kv_str(&l, "user", s->sub.name);
	log_kv_addr(&l, "claimed", s->tx.from);
	log_kv_addr(&l, "from", s->sub.address);
	log_kv_end(&l, LOG_NOTICE);
	snprintf(s->tx.from, sizeof s->tx.from, "%s", s->sub.address);
	smtp_reply(s, "250 2.1.0 Ok: the sender is <%s>: only trusted users choose it", s->tx.from);
}

static void cmd_mail(struct smtp_session *s, char *arg)
{
	const char *rest;
	char *p = after_keyword(arg, "FROM:");

	/* RFC 6409 4.3: the submission port takes mail from users only. */
	if (s->listener->proto == PROTO_SUBMISSION && s->auth_user[0] == '\0') {
		log_refusal(s, "auth-required", NULL, "530 5.7.0 Authentication required");
		smtp_reply_error(s, "530 5.7.0 Authentication required");
		return;
	}
	if (p == NULL) {
		smtp_reply_error(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
		return;
	}
	switch (addr_parse_path(p, s->tx.from, &rest, 1, 0)) {
	case ADDR_OK:
		break;
	case ADDR_ROUTE:
		log_refusal(s, "source-route", NULL, "553 5.7.1 Source routes and %-hacks are not "
		            "accepted");
		smtp_reply_error(s, "553 5.7.1 Source routes and %-hacks are not accepted");
		return;
	default:
		smtp_reply_error(s, "501 5.1.7 Bad sender address syntax");
		return;
	}
	if (mail_params(s, rest) < 0) {
		s->tx.from[0] = '\0';
		return;
	}
	if (s->auth_user[0] != '\0' && !sender_owned(s, s->tx.from)) {
		smtp_refuse(s, "sender-not-owned", NULL,
		       "553 5.7.1 <%s>: Sender address rejected: not owned by user %s", s->tx.from,
		       s->auth_user);
		s->tx.from[0] = '\0';
		return;
	}
	if (s->conn.peer.ss_family == AF_UNIX && !s->sub.trusted) {
		local_sender(s);
		return;
	}
	s->state = ST_MAIL;
	smtp_reply(s, "250 2.1.0 Ok");
}

/* Adds a local user to the transaction's recipients, once. */
static int add_user(struct smtp_session *s, const char *user)
{
	unsigned i;

	for (i = 0; i < s->msg.nusers; i++) {
		if (strcmp(s->msg.users[i], user) == 0) {
			return 0;
		}
	}
	if (s->msg.nusers == MAILDIR_RCPT_MAX) {
		return -1;
	}
	snprintf(s->msg.users[s->msg.nusers++], sizeof s->msg.users[0], "%s", user);
	return 0;
}

/* Adds a relayed recipient, once; -1 when the transaction is full. */
static int add_remote(struct smtp_session *s, const char *addr)
{
	unsigned i;

	for (i = 0; i < s->tx.nremote; i++) {
		if (strcmp(s->remote[i], addr) == 0) {
			return 0;
		}
	}
	if (s->tx.nremote == MAILDIR_RCPT_MAX) {
		return -1;
	}
	snprintf(s->remote[s->tx.nremote++], sizeof s->remote[0], "%s", addr);
	return 0;
}

/* The queue refuses more when it is full, or when the spool's free space
 * would not hold one more message of the largest size and 1 MiB besides:
 * what is queued already must still be able to have its envelope
 * rewritten. */
static int queue_has_room(void)
{
	const struct conf *c = inforce_conf();
	struct statvfs sv;

	if (queue_length() >= c->queue_max_messages ||
	    (c->queue_max_size != 0 && queue_bytes() >= c->queue_max_size)) {
		return 0;
	}
	if (statvfs(c->spool, &sv) == 0 &&
	    (uint64_t)sv.f_bavail * sv.f_frsize < c->max_message_size + (1u << 20)) {
		log_msg(LOG_WARNING, "spool %s: free space below the floor, refusing relayed mail",
		        c->spool);
		return 0;
	}
	return 1;
}

/* 452 4.5.3: the transaction holds no more recipients.  Not an error
 * (RFC 5321 4.5.3.1.10: the client sends the rest later); logged once per
 * transaction, so that 10000 RCPTs make one line. */
static void too_many(struct smtp_session *s, const char *rcpt)
{
	static const char text[] = "452 4.5.3 Too many recipients";

	if (!s->tx.crowd_logged) {
		log_refusal(s, "too-many-recipients", rcpt, text);
		s->tx.crowd_logged = 1;
	}
	smtp_reply(s, "%s", text);
}

static int is_user(const char *name)
{
	/* (declared above for sender_owned) */
	return users_find(inforce_users(), name) >= 0;
}

/* 1 if the user's Maildir cannot take octets more; with 0, if it is
 * already at or over its quota. */
static int over_quota(const char *user, uint64_t octets)
{
	const struct conf *c = inforce_conf();
	const struct users_table *u = inforce_users();

	return quota_exceeded(c->maildir_root, user, users_quota(u, users_find(u, user), c->quota),
	                      octets);
}

static void rcpt_local(struct smtp_session *s, const char *addr, const char *local)
{
	const struct users_table *u = inforce_users();
	static struct addr_expansion x;
	unsigned i, before = s->msg.nusers, before_remote = s->tx.nremote;
	int n;

	n = addr_expand(inforce_aliases(), local, is_user, u->n > 0 ? u->u[0].name : NULL,
	                inforce_conf(), &x);
	if (n == 0) {
		/* "*: someone" catches the names nobody has. */
		n = addr_expand(inforce_aliases(), "*", is_user, NULL, inforce_conf(), &x);
	}
	if (n < 0) {
		smtp_refuse(s, "alias-loop", addr, "550 5.4.6 Alias loop or too many targets for <%s>", addr);
		return;
	}
	if (n == 0) {
		smtp_refuse(s, "unknown-user", addr, "550 5.1.1 <%s>: Recipient address rejected: User "
		       "unknown", addr);
		return;
	}
	if (policy_greylisted(s, addr)) {
		return;
	}
	for (i = 0; i < x.n; i++) {
		/* Temporary (RFC 3463 4.2.2), so the sender retries once the
		 * owner has made room. */
		if (!x.remote[i] && over_quota(x.target[i], s->tx.size_hint)) {
			s->msg.nusers = before;
			s->tx.nremote = before_remote;
			smtp_refuse(s, "quota", addr, "452 4.2.2 <%s>: Mailbox full", addr);
			return;
		}
		/* An alias may send mail on: that is the box's own doing, not
		 * relaying for the client, so it needs no permission. */
		if (x.remote[i] && !queue_has_room()) {
			s->msg.nusers = before;
			s->tx.nremote = before_remote;
			smtp_refuse(s, "queue-full", addr, "452 4.3.1 Insufficient system storage");
			return;
		}
		if ((x.remote[i] ? add_remote(s, x.target[i]) : add_user(s, x.target[i])) < 0) {
			s->msg.nusers = before;
			s->tx.nremote = before_remote;
			too_many(s, addr);
			return;
		}
	}
	if (s->tx.nrcpt++ == 0) {
		snprintf(s->tx.first_rcpt, sizeof s->tx.first_rcpt, "%s", addr);
	}
	s->state = ST_RCPT;
	smtp_reply(s, "250 2.1.5 Ok");
}

/* Not an open relay: only relay_from clients, authenticated users and
 * the local submit socket may send mail off this host. */
static void rcpt_remote(struct smtp_session *s, const char *addr)
{
	if (!s->relay_ok && s->auth_user[0] == '\0') {
		smtp_refuse(s, "relay-denied", addr, "554 5.7.1 <%s>: Relay access denied", addr);
		return;
	}
	if (!queue_has_room()) {
		smtp_refuse(s, "queue-full", addr, "452 4.3.1 Insufficient system storage: the queue is full");
		return;
	}
	if (add_remote(s, addr) < 0) {
		too_many(s, addr);
		return;
	}
	if (s->tx.nrcpt++ == 0) {
		snprintf(s->tx.first_rcpt, sizeof s->tx.first_rcpt, "%s", addr);
	}
	s->state = ST_RCPT;
	smtp_reply(s, "250 2.1.5 Ok");
}

static void cmd_rcpt(struct smtp_session *s, char *arg)
{
	char addr[ADDR_MAX + 1], local[ADDR_LOCAL_MAX + 1];
	const char *rest, *domain;
	char *p = after_keyword(arg, "TO:");

	if (p == NULL) {
		smtp_reply_error(s, "501 5.5.4 Syntax: RCPT TO:<address>");
		return;
	}
	if (s->tx.nrcpt >= inforce_conf()->max_recipients) {
		too_many(s, NULL);
		return;
	}
	switch (addr_parse_path(p, addr, &rest, 0, 1)) {
	case ADDR_OK:
		break;
	case ADDR_ROUTE:
		log_refusal(s, "source-route", NULL, "553 5.7.1 Source routes and %-hacks are not "
		            "accepted");
		smtp_reply_error(s, "553 5.7.1 Source routes and %-hacks are not accepted");
		return;
	default:
		smtp_reply_error(s, "501 5.1.3 Bad recipient address syntax");
		return;
	}
	while (*rest == ' ') {
		rest++;
	}
	if (*rest != '\0') {
		smtp_reply_error(s, "555 5.5.4 Unsupported RCPT parameter");
		return;
	}
	if (strcmp(addr, "postmaster") == 0) {
		rcpt_local(s, "postmaster", "postmaster");
		return;
	}
	domain = addr_split(addr, local);
	if (domain == NULL) {
		smtp_reply_error(s, "501 5.1.3 Bad recipient address syntax");
		return;
	}
	if (!conf_is_local_domain(inforce_conf(), domain)) {
		rcpt_remote(s, addr);
		return;
	}
	rcpt_local(s, addr, local);
}

/* Writes Return-Path: and Received: at the top of the file (RFC 5321
 * 4.4). */
static void write_trace(struct smtp_session *s)
{
	char buf[1200], date[64], forwho[ADDR_MAX + 16] = "", with[16], tlsdesc[96] = "";
	const struct conf *c = inforce_conf();
	int n;

	date_rfc5322(date, sizeof date, time(NULL));
	/* Naming the recipient only when there is one leaks no Bcc. */
	if (s->tx.nrcpt == 1) {
		snprintf(forwho, sizeof forwho, "\n\tfor <%s>", s->tx.first_rcpt);
	}
	/* RFC 3848: ESMTPS with TLS, ESMTPA with AUTH, ESMTPSA with both. */
	snprintf(with, sizeof with, "%s%s%s", s->esmtp ? "ESMTP" : "SMTP",
	         s->conn.tls != NULL ? "S" : "", s->auth_user[0] != '\0' ? "A" : "");
	if (s->conn.tls != NULL) {
		tls_describe(s->conn.tls, tlsdesc, sizeof tlsdesc);
	}
	/* Return-Path is the final delivery's to add (RFC 5321 4.4): here
	 * for a Maildir, not for a message that goes on to the queue. */
	n = snprintf(buf, sizeof buf,
	             "%s%s%s"
	             "Received: from %s ([%s])\n"
	             "%s%s%s"
	             "\tby %s (picomail) with %s id %08" PRIX32 ".%u%s;\n"
	             "\t%s\n",
	             s->tx.queued ? "" : "Return-Path: <", s->tx.queued ? "" : s->tx.from,
	             s->tx.queued ? "" : ">\n", s->helo, s->conn.peer_ip,
	             s->conn.tls != NULL ? "\t(using " : "", s->conn.tls != NULL ? tlsdesc : "",
	             s->conn.tls != NULL ? ")\n" : "", c->hostname, with, s->id, s->tx.msgno,
	             forwho, date);
	if (n > 0 && (size_t)n < sizeof buf) {
		maildir_write(&s->msg, buf, (size_t)n);
	}
}

/* The reply for a failed write: a full disk or quota is 452, the rest 451. */
void smtp_reply_write_error(struct smtp_session *s, int err)
{
	struct log_kv l;

	stats.write_errors++;
	smtp_kv_session(&l, "refused", s);
	log_kv_str(&l, "reason", "write-error");
	log_kv_fmt(&l, "id", "%08" PRIX32 ".%u", s->id, s->tx.msgno);
	log_kv_addr(&l, "from", s->tx.from);
	log_kv_str(&l, "error", strerror(err));
	if (err == ENOSPC || err == EDQUOT) {
		log_kv_str(&l, "reply", "452 4.3.1 Insufficient system storage");
		smtp_reply(s, "452 4.3.1 Insufficient system storage");
	} else {
		log_kv_str(&l, "reply", "451 4.3.0 Local error in processing, try again later");
		smtp_reply(s, "451 4.3.0 Local error in processing, try again later");
	}
	log_kv_end(&l, LOG_ERR);
}

static void cmd_data(struct smtp_session *s, char *arg)
{
	if (arg[0] != '\0') {
		smtp_reply_error(s, "501 5.5.4 Syntax: DATA");
		return;
	}
	s->tx.msgno = ++s->msgs;
	s->tx.began = loop_now();
	/* Anything leaving the host, and so the whole message, goes through
	 * the queue; purely local mail goes straight to the Maildirs. */
	s->tx.queued = s->tx.nremote > 0;
	/* The content scanner reads the message by its path. */
	if ((s->tx.queued ? queue_open(&s->msg, inforce_conf()->spool) :
	     maildir_begin(&s->msg, inforce_conf()->scanner[0] != '\0' &&
	                   s->conn.peer.ss_family != AF_UNIX)) < 0) {
		smtp_reply_write_error(s, errno);
		return;
	}
	s->tx.file_open = 1;
	smtp_data_init(&s->tx.data);
	write_trace(s);
	s->state = ST_DATA;
	smtp_reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void cmd_rset(struct smtp_session *s, char *arg)
{
	(void)arg;
	smtp_tx_reset(s);
	smtp_reply(s, "250 2.0.0 Ok");
}

static void cmd_noop(struct smtp_session *s, char *arg)
{
	(void)arg;
	smtp_reply(s, "250 2.0.0 Ok");
}

static void cmd_vrfy(struct smtp_session *s, char *arg)
{
	(void)arg;
	/* RFC 5321 3.5.3: 252 neither confirms nor denies a user. */
	smtp_reply(s, "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_help(struct smtp_session *s, char *arg)
{
	(void)arg;
	smtp_reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT");
}

static void cmd_quit(struct smtp_session *s, char *arg)
{
	(void)arg;
	smtp_tx_reset(s);
	smtp_reply(s, "221 2.0.0 Bye");
	s->end_why = "quit";
	s->state = ST_QUIT;
}

/* Forgets everything learnt before TLS (RFC 3207 4.2). */
static void session_reset(struct smtp_session *s)
{
	smtp_tx_reset(s);
	s->state = ST_GREETED;
	s->helo[0] = '\0';
	s->esmtp = 0;
	s->auth_user[0] = '\0';
}

static void cmd_starttls(struct smtp_session *s, char *arg)
{
	struct tls *t;

	if (s->conn.tls != NULL) {
		smtp_reply_error(s, "554 5.5.1 Error: TLS already active");
		return;
	}
	if (!starttls_offered(s)) {
		smtp_reply_error(s, "502 5.5.1 Error: command not implemented");
		return;
	}
	if (arg[0] != '\0') {
		smtp_reply_error(s, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	t = tls_server_take();
	if (t == NULL) {
		smtp_reply(s, "454 4.7.0 TLS not available due to temporary reason");
		return;
	}
	smtp_reply(s, "220 2.0.0 Ready to start TLS");
	session_reset(s);
	s->tls_logged = 0;
	conn_starttls(&s->conn, t);
	loop_deadline(s->slot, loop_now() + TLS_HANDSHAKE_MS);
}

/* Checks the credentials; 235, or 535 after the throttle delay. */
static void auth_check(struct smtp_session *s, const char *user, const char *pass)
{
	const struct users_table *u = inforce_users();
	unsigned delay;
	int i = auth_login(u, &s->conn.peer, user, pass, loop_now(), &delay);

	if (i < 0) {
		struct log_kv l;

		smtp_kv_session(&l, "refused", s);
		log_kv_str(&l, "reason", "auth");
		log_kv_str(&l, "user", user);
		log_kv_str(&l, "reply", "535 5.7.8 Authentication credentials invalid");
		log_kv_end(&l, LOG_NOTICE);
		s->state = ST_DELAY;
		loop_deadline(s->slot, loop_now() + delay);
		return;
	}
	snprintf(s->auth_user, sizeof s->auth_user, "%s", u->u[i].name);
	{
		struct log_kv l;

		smtp_kv_session(&l, "auth", s);
		log_kv_str(&l, "user", s->auth_user);
		log_kv_end(&l, LOG_INFO);
	}
	s->state = s->sasl_return;
	smtp_reply(s, "235 2.7.0 Authentication successful");
}

/* Decodes one base64 SASL line into out (NUL-terminated); -1 with the
 * reply sent if it is bad. */
static int sasl_decode(struct smtp_session *s, const char *line, char *out, size_t outlen)
{
	long n;

	if (strcmp(line, "=") == 0) {
		out[0] = '\0';   /* RFC 4954 4: "=" is an empty response */
		return 0;
	}
	n = base64_decode(line, strlen(line), (unsigned char *)out, outlen - 1);
	if (n < 0 || memchr(out, '\0', (size_t)n) != NULL) {
		s->state = s->sasl_return;
		smtp_reply_error(s, "501 5.5.2 Cannot decode the response");
		return -1;
	}
	out[n] = '\0';
	return 0;
}

/* One line of the SASL exchange (RFC 4954 4). */
static void sasl_response(struct smtp_session *s, const char *line)
{
	char user[ADDR_USER_MAX + 1], pass[SASL_PASS_MAX + 1];

	if (strcmp(line, "*") == 0) {
		s->state = s->sasl_return;
		smtp_reply_error(s, "501 5.0.0 Authentication cancelled");
		return;
	}
	switch (s->sasl) {
	case SASL_PLAIN:
		if (auth_plain_decode(line, user, sizeof user, pass, sizeof pass) < 0) {
			s->state = s->sasl_return;
			smtp_reply_error(s, "501 5.5.2 Cannot decode the PLAIN response");
			return;
		}
		auth_check(s, user, pass);
		break;
	case SASL_LOGIN_USER:
		if (sasl_decode(s, line, s->sasl_login, sizeof s->sasl_login) < 0) {
			return;
		}
		s->sasl = SASL_LOGIN_PASS;
		smtp_reply(s, "334 UGFzc3dvcmQ6");   /* "Password:" */
		return;
	case SASL_LOGIN_PASS:
		if (sasl_decode(s, line, pass, sizeof pass) < 0) {
			return;
		}
		auth_check(s, s->sasl_login, pass);
		break;
	}
	memset(pass, 0, sizeof pass);
}

static void cmd_auth(struct smtp_session *s, char *arg)
{
	char *ir = strchr(arg, ' ');

	if (s->auth_user[0] != '\0') {
		smtp_reply_error(s, "503 5.5.1 Error: already authenticated");
		return;
	}
	if (s->state & (ST_MAIL | ST_RCPT)) {
		smtp_reply_error(s, "503 5.5.1 Error: AUTH not allowed during a mail transaction");
		return;
	}
	if (!auth_offered(s)) {
		smtp_reply_error(s, "538 5.7.11 Encryption required for requested authentication mechanism");
		return;
	}
	if (ir != NULL) {
		*ir++ = '\0';
	}
	s->sasl_return = s->state;
	if (strcasecmp(arg, "PLAIN") == 0) {
		s->sasl = SASL_PLAIN;
		s->state = ST_SASL;
		if (ir == NULL) {
			smtp_reply(s, "334 ");
			return;
		}
		sasl_response(s, ir);
	} else if (strcasecmp(arg, "LOGIN") == 0) {
		s->sasl = SASL_LOGIN_USER;
		s->state = ST_SASL;
		if (ir == NULL) {
			smtp_reply(s, "334 VXNlcm5hbWU6");   /* "Username:" */
			return;
		}
		sasl_response(s, ir);
	} else {
		smtp_reply_error(s, "504 5.5.4 Unrecognized authentication type");
	}
}

static void cmd_not_offered(struct smtp_session *s, char *arg)
{
	(void)arg;
	smtp_reply_error(s, "502 5.5.1 Command not implemented");
}

#define ST_ANY (ST_GREETED | ST_READY | ST_MAIL | ST_RCPT)

static const struct smtp_command commands[] = {
	{ "EHLO", ST_ANY, cmd_ehlo },
	{ "HELO", ST_ANY, cmd_helo },
	{ "MAIL", ST_READY, cmd_mail },
	{ "RCPT", ST_MAIL | ST_RCPT, cmd_rcpt },
	{ "DATA", ST_RCPT, cmd_data },
	{ "RSET", ST_ANY, cmd_rset },
	{ "NOOP", ST_ANY, cmd_noop },
	{ "VRFY", ST_ANY, cmd_vrfy },
	{ "HELP", ST_ANY, cmd_help },
	{ "QUIT", ST_ANY | ST_REFUSED, cmd_quit },
	{ "EXPN", ST_ANY, cmd_not_offered },
	{ "TURN", ST_ANY, cmd_not_offered },
	{ "ETRN", ST_ANY, cmd_not_offered },
	{ "STARTTLS", ST_GREETED | ST_READY, cmd_starttls },
	{ "AUTH", ST_ANY, cmd_auth },
};

/* Why a known command is refused in this state (RFC 5321 4.3.2). */
static void reply_out_of_order(struct smtp_session *s, const struct smtp_command *cmd)
{
	if (s->state == ST_GREETED && strcmp(cmd->verb, "MAIL") == 0) {
		smtp_reply_error(s, "503 5.5.1 Error: send HELO/EHLO first");
	} else if (strcmp(cmd->verb, "MAIL") == 0) {
		smtp_reply_error(s, "503 5.5.1 Error: nested MAIL command");
	} else if (strcmp(cmd->verb, "RCPT") == 0) {
		smtp_reply_error(s, "503 5.5.1 Error: need MAIL command");
	} else if (strcmp(cmd->verb, "DATA") == 0) {
		smtp_reply_error(s, "503 5.5.1 Error: need RCPT command");
	} else {
		smtp_reply_error(s, "503 5.5.1 Error: bad sequence of commands");
	}
}

/* 1 if the line holds only printable ASCII, spaces and tabs. */
static int line_clean(const char *line, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)line[i];

		if ((ch < ' ' && ch != '\t') || ch == 0x7f) {
			return 0;
		}
	}
	return 1;
}

static void dispatch(struct smtp_session *s, char *line, size_t len)
{
	size_t i, vlen;
	char *arg;

	if (!line_clean(line, len)) {
		if (s->state == ST_SASL) {
			s->state = s->sasl_return;
		}
		smtp_reply_error(s, "500 5.5.2 Error: invalid character (NUL, CR or control) in command");
		return;
	}
	if (s->state == ST_SASL) {
		sasl_response(s, line);
		return;
	}
	for (vlen = 0; line[vlen] != '\0' && line[vlen] != ' '; vlen++) {
	}
	arg = line + vlen;
	while (*arg == ' ') {
		arg++;
	}
	if (s->state == ST_REFUSED && !(vlen == 4 && strncasecmp(line, "QUIT", 4) == 0)) {
		smtp_reply_error(s, "503 5.7.1 Error: this client is refused, only QUIT is accepted");
		return;
	}
	for (i = 0; i < sizeof commands / sizeof commands[0]; i++) {
		if (strlen(commands[i].verb) == vlen && strncasecmp(line, commands[i].verb, vlen) == 0) {
			if (!(commands[i].states & s->state)) {
				reply_out_of_order(s, &commands[i]);
				return;
			}
			commands[i].run(s, arg);
			return;
		}
	}
	smtp_reply_error(s, "500 5.5.1 Error: command not recognized");
}

/* ---- DATA -------------------------------------------------------------- */

/* The received line: the message, who sent it and how (log.h). */
static void log_received(const struct smtp_session *s, const char *id, unsigned rcpts)
{
	struct log_kv l;

	log_kv_start(&l, "received");
	log_kv_str(&l, "id", id);
	log_kv_fmt(&l, "session", "%08" PRIx32, s->id);
	log_kv_str(&l, "client", s->conn.peer_ip);
	log_kv_str(&l, "helo", s->helo);
	if (s->auth_user[0] != '\0') {
		log_kv_str(&l, "auth", s->auth_user);
	}
	if (s->sub.known) {
		log_kv_str(&l, "user", s->sub.name);
		log_kv_u64(&l, "uid", s->sub.uid);
	}
	if (s->conn.tls != NULL) {
		log_kv_str(&l, "tls", tls_suite(s->conn.tls));
	}
	log_kv_addr(&l, "from", s->tx.from);
	log_kv_u64(&l, "size", s->msg.size);
	log_kv_u64(&l, "rcpts", rcpts);
	if (s->tx.nrcpt == 1) {
		log_kv_addr(&l, "to", s->tx.first_rcpt);
	}
	if (s->gone) {
		log_kv_str(&l, "ack", "none: the client was gone before the reply");
	}
	log_kv_end(&l, LOG_INFO);
}

/* A commit is over (err 0: the message is durable under id): the session
 * answers, and goes on with what the client pipelined after the dot. */
static void commit_answer(struct smtp_session *s, int err, const char *id)
{
	if (s->gone) {
		/* The connection dropped after the final dot: the message is
		 * stored, but nobody heard 250, so a client that sends it
		 * again delivers it twice (RFC 5321 6.1 prefers that to a
		 * loss).  The session was waiting only for this. */
		smtp_tx_reset(s);
		sessions_release(s);
		return;
	}
	if (err == 0) {
		stats.messages_in++;
		s->acked++;
		s->acked_bytes += s->msg.size;
		smtp_reply(s, "250 2.0.0 Ok: queued as %s", id);
	}
	smtp_tx_reset(s);
	/* Commands pipelined after the dot are waiting in the buffer. */
	smtp_process(s);
	(void)smtp_update(s);
}

static void committed(void *ctx, int err)
{
	struct smtp_session *s = ctx;
	char id[24];
	unsigned i;

	s->tx.file_open = 0;
	s->state = ST_READY;
	snprintf(id, sizeof id, "%08" PRIX32 ".%u", s->id, s->tx.msgno);
	if (err != 0) {
		smtp_reply_write_error(s, err);
	} else {
		log_received(s, id, s->tx.nrcpt);
		for (i = 0; i < s->msg.nusers; i++) {
			struct log_kv l;

			quota_delivered(inforce_conf()->maildir_root, s->msg.users[i], s->msg.size);
			log_kv_start(&l, "delivered");
			log_kv_str(&l, "id", id);
			log_kv_str(&l, "mailbox", s->msg.users[i]);
			log_kv_str(&l, "status", "sent");
			log_kv_ms(&l, "delay", loop_now() - s->tx.began);
			log_kv_end(&l, LOG_INFO);
		}
		stats.bytes_written += s->msg.size;
	}
	commit_answer(s, err, id);
}

/* The queue's commit of the message is done (queue_tx). */
static void queued(void *ctx, int err)
{
	struct smtp_session *s = ctx;

	s->tx.file_open = 0;
	s->state = ST_READY;
	if (err != 0) {
		smtp_reply_write_error(s, err);
	} else {
		stats.bytes_written += s->msg.size;
		log_received(s, s->msg.name, s->tx.nqueued);
		/* Queued whether or not the client is still there to hear it. */
		queue_added(s->msg.name);
	}
	commit_answer(s, err, s->msg.name);
}

/* Commits a message with relayed recipients to the queue, through the
 * group commit (queue_commit_async) while the loop goes on. */
static void queue_tx(struct smtp_session *s)
{
	static struct queue_env env;
	unsigned i;

	memset(&env, 0, offsetof(struct queue_env, rcpt));
	/* queue_open made the name: a queue id, which fits. */
	memcpy(env.id, s->msg.name, strnlen(s->msg.name, sizeof env.id - 1));
	env.id[strnlen(s->msg.name, sizeof env.id - 1)] = '\0';
	snprintf(env.sender, sizeof env.sender, "%s", s->tx.from);
	env.local = s->conn.peer.ss_family == AF_UNIX && s->sub.known;
	env.uid = s->sub.uid;
	env.arrival = (int64_t)time(NULL);
	env.nrcpt = 0;
	for (i = 0; i < s->msg.nusers && env.nrcpt < QUEUE_RCPT_MAX; i++) {
		struct queue_rcpt *q = &env.rcpt[env.nrcpt++];

		q->state = 'P';
		q->kind = 'L';
		snprintf(q->addr, sizeof q->addr, "%s", s->msg.users[i]);
		q->why[0] = '\0';
	}
	for (i = 0; i < s->tx.nremote && env.nrcpt < QUEUE_RCPT_MAX; i++) {
		struct queue_rcpt *q = &env.rcpt[env.nrcpt++];

		q->state = 'P';
		q->kind = 'R';
		snprintf(q->addr, sizeof q->addr, "%s", s->remote[i]);
		q->why[0] = '\0';
	}
	s->tx.nqueued = env.nrcpt;
	s->state = ST_COMMIT;
	queue_commit_async(&s->msg, inforce_conf()->spool, &env, queued, s);
}

/* 1 if the message would take a local recipient over quota (also for a
 * queued message: refusing now tells the sender at once, rather than
 * bouncing days later). */
static int over_quota_any(struct smtp_session *s)
{
	unsigned i;

	for (i = 0; i < s->msg.nusers; i++) {
		if (over_quota(s->msg.users[i], s->msg.size == 0 ? 1 : s->msg.size)) {
			struct log_kv l;

			smtp_kv_session(&l, "refused", s);
			log_kv_str(&l, "reason", "quota");
			log_kv_addr(&l, "from", s->tx.from);
			log_kv_str(&l, "mailbox", s->msg.users[i]);
			log_kv_u64(&l, "size", s->msg.size);
			log_kv_str(&l, "reply", "452 4.2.2 Mailbox full");
			log_kv_end(&l, LOG_NOTICE);
			return 1;
		}
	}
	return 0;
}

/* The message is good: to the queue (answered now) or to the commit. */
void smtp_data_accept(struct smtp_session *s)
{
	if (s->tx.queued) {
		queue_tx(s);
		return;
	}
	s->state = ST_COMMIT;
	maildir_commit(&s->msg, committed, s);
}

/* The final dot arrived: refuse a bad message, or hand it to the commit. */
static void data_end(struct smtp_session *s)
{
	unsigned flags = s->tx.data.flags;

	if (s->tx.write_err == 0 && s->msg.err != 0) {
		s->tx.write_err = s->msg.err;
	}
	if (flags != 0 || s->tx.too_big || s->tx.write_err != 0) {
		stats.messages_refused++;
		if (flags != 0) {
			char what[48];

			snprintf(what, sizeof what, "bad-bytes:%s%s%s", flags & DATA_BARE_LF ? "bare-LF," : "",
			         flags & DATA_BARE_CR ? "bare-CR," : "", flags & DATA_NUL ? "NUL," : "");
			what[strlen(what) - 1] = '\0';
			smtp_refuse(s, what, NULL, "550 5.6.0 Message refused: bare CR, bare LF or NUL in "
			       "message (lines must end with CRLF)");
		} else if (s->tx.too_big) {
			smtp_refuse(s, "size", NULL, "552 5.3.4 Message size exceeds fixed limit");
		} else {
			smtp_reply_write_error(s, s->tx.write_err);
		}
		s->state = ST_READY;
		smtp_tx_reset(s);
		return;
	}
	if (over_quota_any(s)) {
		/* One reply for the whole message: keep none of it. */
		stats.messages_refused++;
		smtp_reply(s, "452 4.2.2 Mailbox full");   /* logged by over_quota_any */
		s->state = ST_READY;
		smtp_tx_reset(s);
		return;
	}
	/* (A scanner that a reload brought in while this message was being
	 * written applies from the next: this one's file has no name.) */
	if (inforce_conf()->scanner[0] != '\0' && s->conn.peer.ss_family != AF_UNIX &&
	    (s->tx.queued || s->msg.tmp[0] != '\0')) {
		policy_scan_start(s);
		return;
	}
	smtp_data_accept(s);
}

/* smtp_timeout is the time allowed for each command line, or each line of
 * the message, however it is cut into packets: a client dribbling a byte
 * at a time (slow-loris) cannot hold its session for ever. */
static void idle_deadline(struct smtp_session *s)
{
	loop_deadline(s->slot, loop_now() + (int64_t)inforce_conf()->smtp_timeout * 1000);
}

/* Feeds buffered input to the DATA machine. */
static void data_consume(struct smtp_session *s)
{
	unsigned char out[CONN_IN_SIZE];
	struct conn *c = &s->conn;
	size_t used, outlen;
	uint64_t max = inforce_conf()->max_message_size;

	used = smtp_data_feed(&s->tx.data, c->in + c->in_off, c->in_len - c->in_off, out, &outlen);
	if (memchr(c->in + c->in_off, '\n', used) != NULL) {
		idle_deadline(s);   /* a line of the message is complete */
	}
	c->in_off += used;
	if (s->tx.file_open && (s->tx.data.flags != 0 || s->tx.data.octets > max)) {
		/* Refused anyway: stop writing and free the space now. */
		s->tx.too_big = s->tx.data.octets > max;
		maildir_abort(&s->msg);
		s->tx.file_open = 0;
	}
	if (s->tx.file_open && outlen > 0) {
		maildir_write(&s->msg, out, outlen);
		if (s->msg.err != 0) {
			s->tx.write_err = s->msg.err;
			maildir_abort(&s->msg);
			s->tx.file_open = 0;
		}
	}
	if (s->tx.data.state == DATA_END) {
		data_end(s);
	}
}

/* ---- the session's I/O ------------------------------------------------- */

/* Handles what is buffered, as far as the state allows. */
void smtp_process(struct smtp_session *s)
{
	char *line;
	size_t len;

	for (;;) {
		if (s->state & (ST_WAITING | ST_PAUSE) || s->conn.err) {
			break;
		}
		if (s->state == ST_DATA) {
			if (conn_unread(&s->conn) == 0) {
				if (conn_more(&s->conn) && conn_fill(&s->conn) > 0) {
					continue;
				}
				break;
			}
			data_consume(s);
			continue;
		}
		if (conn_room(&s->conn) < SMTP_REPLY_ROOM) {
			break;   /* the client is not reading its replies: wait */
		}
		switch (conn_line(&s->conn, &line, &len, SMTP_LINE_MAX)) {
		case CONN_LINE_NONE:
			/* TLS may hold more decrypted input than c->in took. */
			if (conn_more(&s->conn) && conn_fill(&s->conn) > 0) {
				continue;
			}
			return;
		case CONN_LINE_TOO_LONG:
			idle_deadline(s);
			if (s->state == ST_SASL) {
				s->state = s->sasl_return;
			}
			smtp_reply_error(s, "500 5.5.2 Error: line too long");
			break;
		case CONN_LINE_OK:
			idle_deadline(s);
			dispatch(s, line, len);
			break;
		}
	}
}

/* 1 when the session has work it can do without more input: a command
 * line, or message data, already buffered (in c->in, or decrypted and
 * waiting in the TLS engine).  What the loop waits for follows from it,
 * so a pipelined batch is answered whole however long it is. */
static int session_pending(const struct smtp_session *s)
{
	if (s->conn.err || s->state & (ST_WAITING | ST_PAUSE)) {
		return 0;
	}
	if (s->state == ST_DATA && conn_unread(&s->conn) > 0) {
		return 1;
	}
	return conn_line_ready(&s->conn) || conn_more(&s->conn);
}

/* Flushes the output and, while the socket takes all of it, goes on with
 * the work already buffered.  After SMTP_ROUNDS output buffers it returns
 * even with work left, so that one flood does not hold the loop:
 * session_update then asks for POLLOUT to come back to it. */
static int flush_and_continue(struct smtp_session *s)
{
	int r, rounds;

	for (rounds = 0;; rounds++) {
		r = conn_flush(&s->conn);
		if (r != 0 || rounds == SMTP_ROUNDS || !session_pending(s)) {
			return r;
		}
		/* The output is empty: room for the next command's reply. */
		smtp_process(s);
	}
}

/* Flushes output and sets what the loop waits for; 0, or -1 if ended. */
int smtp_update(struct smtp_session *s)
{
	int r = flush_and_continue(s), pending;
	short ev;

	if (r < 0) {
		s->end_why = s->conn.tls_error != 0 ? "tls-error" : "lost";
		session_end(s);
		return -1;
	}
	/* A client that half-closed after its final dot (a pipelined
	 * transaction, then shutdown) still hears how it ended: the commit
	 * is over within this round. */
	pending = session_pending(s);
	if (r == 0 && (s->state == ST_QUIT ||
	               (s->conn.eof && s->state != ST_COMMIT && !pending))) {
		if (s->end_why == NULL && s->state != ST_QUIT) {
			s->end_why = "closed";   /* by the client, without QUIT */
		}
		session_end(s);
		return -1;
	}
	/* Work left over waits for POLLOUT: the socket's room, not more
	 * input, lets it go on. */
	ev = conn_poll_events(&s->conn, !(s->state & ST_WAITING) &&
	                                conn_room(&s->conn) >= SMTP_REPLY_ROOM);
	loop_events(s->slot, ev | (pending ? POLLOUT : 0));
	return 0;
}

static void session_timeout(struct smtp_session *s)
{
	s->end_why = "timeout";
	smtp_tx_reset(s);
	smtp_reply(s, "421 4.4.2 %s Error: timeout exceeded", inforce_conf()->hostname);
	(void)conn_flush(&s->conn);
	session_end(s);
}

static void session_io(void *ctx, int revents)
{
	struct smtp_session *s = ctx;
	struct log_kv l;
	int n;

	if (s->state == ST_TLSWAIT) {
		if (revents & (POLLERR | POLLHUP)) {
			s->end_why = "lost";
			session_end(s);
		} else {
			tls_wait(s);
		}
		return;
	}
	if (s->state == ST_PAUSE) {
		policy_pause_event(s, revents);
		return;
	}
	if (revents & LOOP_TIMEOUT) {
		if (s->state == ST_SCAN) {
			policy_scan_timeout(s);
			return;
		}
		if (s->state == ST_DELAY) {
			/* The throttle delay is over: answer the failed AUTH. */
			s->state = s->sasl_return;
			smtp_reply_error(s, "535 5.7.8 Authentication credentials invalid");
			loop_deadline(s->slot, loop_now() + (int64_t)inforce_conf()->smtp_timeout * 1000);
			smtp_process(s);
			(void)smtp_update(s);
			return;
		}
		session_timeout(s);
		return;
	}
	if (revents & (POLLIN | POLLERR | POLLHUP)) {
		n = conn_fill(&s->conn);
		if (!s->tls_logged && conn_tls_ready(&s->conn)) {
			/* Handshake over: from now on the idle timeout counts. */
			smtp_kv_session(&l, "tls", s);
			log_kv_str(&l, "version", "TLSv1.2");
			log_kv_str(&l, "cipher", tls_suite(s->conn.tls));
			log_kv_end(&l, LOG_INFO);
			s->tls_logged = 1;
			if (s->state != ST_DELAY) {
				loop_deadline(s->slot,
				              loop_now() + (int64_t)inforce_conf()->smtp_timeout * 1000);
			}
		}
		smtp_process(s);
		if (n < 0 && s->conn.err) {
			s->end_why = s->conn.tls_error ? "tls-error" : "lost";
			session_end(s);
			return;
		}
	}
	(void)smtp_update(s);
}

static void log_connect(const struct smtp_session *s)
{
	struct log_kv l;

	smtp_kv_session(&l, "connect", s);
	log_kv_str(&l, "listener", s->conn.peer.ss_family == AF_UNIX ? "sendmail" :
	                           s->listener->proto == PROTO_SUBMISSION ? "submission" : "smtp");
	if (s->listener->tls == TLS_IMPLICIT) {
		log_kv_str(&l, "tls", "implicit");
	}
	log_kv_end(&l, LOG_INFO);
}

/* The banner, or first the pause for strangers on port 25. */
void smtp_banner(struct smtp_session *s)
{
	smtp_reply(s, "220 %s ESMTP picomail", inforce_conf()->hostname);
}

static void greet_or_pause(struct smtp_session *s)
{
	if (s->screened && (inforce_conf()->greet_pause > 0 || inforce_conf()->ndnsbl > 0)) {
		policy_pause_start(s);
	} else {
		smtp_banner(s);
	}
	(void)smtp_update(s);
}

/* Implicit TLS (465): takes a TLS slot, or waits a little for one, since
 * nothing can be said in clear on this port: a full pool makes a client
 * wait rather than be cut off without a word; after TLS_WAIT_MS it is
 * closed (logged). */
static void tls_wait(struct smtp_session *s)
{
	struct tls *t = tls_server_take();

	if (t != NULL) {
		s->state = ST_GREETED;
		conn_tls_now(&s->conn, t);
		loop_deadline(s->slot, loop_now() + TLS_HANDSHAKE_MS);
		greet_or_pause(s);
		return;
	}
	if (loop_now() >= s->tls_wait_end) {
		log_refusal(s, "tls-busy", NULL, NULL);
		s->end_why = "refused";
		session_end(s);
		return;
	}
	loop_events(s->slot, 0);
	loop_deadline(s->slot, loop_now() + TLS_RETRY_MS);
}

void smtp_session_start(void *mem, int fd, const struct sockaddr *peer, socklen_t len,
                        const struct conf_listen *l, uint32_t id)
{
	struct smtp_session *s = mem;

	/* Only the header: the buffers stay untouched until used. */
	memset(s, 0, offsetof(struct smtp_session, conn));
	conn_init(&s->conn, fd, peer, len);
	s->msg.nusers = 0;
	s->msg.fd = -1;
	s->msg.tmp[0] = '\0';
	s->id = id;
	s->listener = l;
	s->state = ST_GREETED;
	s->relay_ok = peer->sa_family == AF_UNIX ||
	              conf_net_match(inforce_conf()->relay_from, inforce_conf()->nrelay_from, peer);
	/* The defences against spam engines are for strangers on port 25:
	 * not the LAN (relay_from), nor submission, nor implicit TLS. */
	s->screened = l->proto == PROTO_SMTP && l->tls != TLS_IMPLICIT && !s->relay_ok;
	if (peer->sa_family == AF_UNIX) {
		submitter_of(fd, inforce_conf(), &s->sub);
	}
	s->scan = -1;
	s->slot = loop_add(fd, POLLIN, session_io, s);
	if (s->slot < 0) {
		conn_close(&s->conn);
		sessions_release(s);
		return;
	}
	s->started = loop_now();
	log_connect(s);
	if (l->tls == TLS_IMPLICIT) {
		/* The ClientHello waits in the socket until a slot is free. */
		s->state = ST_TLSWAIT;
		s->tls_wait_end = loop_now() + TLS_WAIT_MS;
		tls_wait(s);
		return;
	}
	loop_deadline(s->slot, loop_now() + (int64_t)inforce_conf()->smtp_timeout * 1000);
	greet_or_pause(s);
}

void smtp_session_shutdown(void *mem)
{
	struct smtp_session *s = mem;

	smtp_tx_reset(s);
	/* Not on an implicit TLS port before TLS: clear text would only
	 * confuse the client. */
	if (s->state != ST_TLSWAIT) {
		smtp_reply(s, "421 4.3.2 %s Service shutting down", inforce_conf()->hostname);
		(void)conn_flush(&s->conn);
	}
	s->end_why = "shutdown";
	session_end(s);
}
