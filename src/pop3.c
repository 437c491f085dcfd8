/* pop3.c - the POP3 session state machine (RFC 1939, 2449, 5034).
 *
 * AUTHORIZATION -> TRANSACTION -> UPDATE.  Login locks the mailbox and
 * snapshots it (mailbox.c); multi-line answers (RETR, TOP, LIST, UIDL) are
 * pumped into the output buffer as it drains, so a 50 MB message or a
 * 2000-line listing never needs more than the connection's buffers.
 */
#include "pop3.h"
#include "auth.h"
#include "conn.h"
#include "inforce.h"
#include "sessions.h"
#include "stats.h"
#include "io.h"
#include "log.h"
#include "loop.h"
#include "mailbox.h"
#include "msgwire.h"
#include "pool.h"
#include "tls.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define POP3_LINE_MAX   512   /* RFC 2449 allows 255 for commands; SASL needs more */
#define POP3_ERRORS_MAX 20
#define POP3_PASS_MAX   256
#define PUMP_ROOM       128   /* output kept free for a listing line */
#define TLS_HANDSHAKE_MS 30000
#define TLS_WAIT_MS      10000   /* implicit TLS: how long a client waits for a free slot */
#define TLS_RETRY_MS     100
#define POP3_ROUNDS     64    /* output buffers sent per event before others' turn */

enum pop3_state {
	ST_AUTH     = 1 << 0,   /* AUTHORIZATION, no USER yet */
	ST_USER     = 1 << 1,   /* AUTHORIZATION, USER given */
	ST_SASL     = 1 << 2,   /* waiting for the AUTH PLAIN response */
	ST_DELAY    = 1 << 3,   /* a failed login, answered after the throttle */
	ST_TRANS    = 1 << 4,   /* TRANSACTION */
	ST_SEND     = 1 << 5,   /* pumping a multi-line answer */
	ST_QUIT     = 1 << 6,   /* closing once the output is sent */
	ST_TLSWAIT  = 1 << 7,   /* implicit TLS: waiting for a free TLS slot */
};

enum pump_kind { PUMP_MSG, PUMP_LIST, PUMP_UIDL };

struct pop3_session {
	int slot;
	uint32_t id;
	enum pop3_state state;
	unsigned errors;
	const struct conf_listen *listener;
	char user[ADDR_USER_MAX + 1];
	struct mailbox *mb;
	/* the answer being pumped */
	enum pump_kind kind;
	unsigned cursor;        /* PUMP_LIST / PUMP_UIDL: next message */
	int fd;                 /* PUMP_MSG: the file */
	int tls_seen;           /* the handshake's end was noticed */
	struct msgwire wire;    /* PUMP_MSG: the file's bytes as lines on the wire */
	/* for the disconnect line */
	int64_t started;
	int64_t tls_wait_end;   /* ST_TLSWAIT: when to give up */
	unsigned retrieved;     /* RETR and TOP answered */
	unsigned deleted;       /* removed at QUIT */
	uint64_t bytes_out;     /* message octets sent */
	const char *end_why;
	struct conn conn;
};

struct pop3_command {
	const char *verb;
	unsigned states;
	void (*run)(struct pop3_session *s, char *arg);
};

static struct pool mailboxes;

static int session_update(struct pop3_session *s);
static void tls_wait(struct pop3_session *s);
static void session_process(struct pop3_session *s);
static void idle_deadline(struct pop3_session *s);

size_t pop3_session_size(void)
{
	return sizeof(struct pop3_session);
}

int pop3_init(const struct conf *c)
{
	return pool_init(&mailboxes, "mailboxes", mailbox_objsize(c->pop3_max_messages),
	                 c->pop3_sessions);
}

unsigned pop3_mailboxes_used(void)
{
	return mailboxes.used;
}

unsigned pop3_mailboxes_size(void)
{
	return mailboxes.size;
}

const struct sockaddr_storage *pop3_session_peer(const void *mem)
{
	return &((const struct pop3_session *)mem)->conn.peer;
}

static void reply(struct pop3_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void reply(struct pop3_session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)conn_vline(&s->conn, fmt, ap);
	va_end(ap);
}

static void reply_error(struct pop3_session *s, const char *text)
{
	reply(s, "-ERR %s", text);
	if (++s->errors >= POP3_ERRORS_MAX) {
		reply(s, "-ERR Too many errors, closing");
		s->state = ST_QUIT;
		s->end_why = "errors";
	}
}

static const struct conf *cf(void)
{
	return inforce_conf();
}

/* Passwords only under TLS, unless plaintext_auth allows them in clear. */
static int plaintext_ok(const struct pop3_session *s)
{
	return s->conn.tls != NULL || cf()->plaintext_auth;
}

static int stls_offered(const struct pop3_session *s)
{
	return s->listener->tls == TLS_STARTTLS && s->conn.tls == NULL && tls_ready();
}

static void pump_stop(struct pop3_session *s)
{
	if (s->fd >= 0) {
		(void)io_close(s->fd);
		s->fd = -1;
	}
}

static void kv_session(struct log_kv *l, const char *event, const struct pop3_session *s)
{
	log_kv_start(l, event);
	log_kv_fmt(l, "session", "%08" PRIx32, s->id);
	log_kv_str(l, "client", s->conn.peer_ip);
}

static void log_disconnect(const struct pop3_session *s)
{
	struct log_kv l;

	kv_session(&l, "disconnect", s);
	log_kv_str(&l, "proto", "pop3");
	if (s->user[0] != '\0' && s->mb != NULL) {
		log_kv_str(&l, "user", s->user);
	}
	log_kv_u64(&l, "retrieved", s->retrieved);
	log_kv_u64(&l, "deleted", s->deleted);
	log_kv_u64(&l, "bytes", s->bytes_out);
	conn_log_end(&l, &s->conn, s->started, s->end_why);
}

static void session_end(struct pop3_session *s)
{
	log_disconnect(s);
	pump_stop(s);
	if (s->mb != NULL) {
		/* A dropped connection deletes nothing (RFC 1939 6). */
		mailbox_close(s->mb);
		pool_give(&mailboxes, s->mb);
		s->mb = NULL;
	}
	loop_del(s->slot);
	conn_close(&s->conn);
	sessions_release(s);
}

/* ---- arguments ---------------------------------------------------------- */

/* Parses a decimal number of at most 9 digits, alone or followed by a
 * space; -1 if bad. */
static long parse_num(const char *s, const char **rest)
{
	long v = 0;
	int digits = 0;

	while (*s >= '0' && *s <= '9') {
		if (++digits > 9) {
			return -1;
		}
		v = v * 10 + (*s++ - '0');
	}
	if (digits == 0 || (*s != '\0' && *s != ' ')) {
		return -1;
	}
	while (*s == ' ') {
		s++;
	}
	*rest = s;
	return v;
}

/* The message index (0-based) for a number argument, with the reply sent
 * when it is bad; -1 then. */
static long message_arg(struct pop3_session *s, const char *arg, const char **rest)
{
	long n = parse_num(arg, rest);

	if (n < 0) {
		reply_error(s, "Invalid message number");
		return -1;
	}
	if (n < 1 || (unsigned long)n > s->mb->n) {
		reply_error(s, "No such message");
		return -1;
	}
	if (s->mb->msgs[n - 1].deleted) {
		reply_error(s, "Message is deleted");
		return -1;
	}
	return n - 1;
}

/* One message number and nothing else. */
static long single_message_arg(struct pop3_session *s, const char *arg)
{
	const char *rest;
	long i = message_arg(s, arg, &rest);

	if (i >= 0 && *rest != '\0') {
		reply_error(s, "Syntax error: one message number expected");
		return -1;
	}
	return i;
}

/* ---- AUTHORIZATION ------------------------------------------------------ */

static void cmd_capa(struct pop3_session *s, char *arg)
{
	(void)arg;
	reply(s, "+OK Capability list follows");
	if (stls_offered(s) && s->state & (ST_AUTH | ST_USER)) {
		reply(s, "STLS");
	}
	reply(s, "TOP");
	reply(s, "UIDL");
	if (plaintext_ok(s)) {
		reply(s, "USER");
		reply(s, "SASL PLAIN");
	}
	reply(s, "RESP-CODES");
	reply(s, "PIPELINING");
	reply(s, "AUTH-RESP-CODE");
	reply(s, "IMPLEMENTATION picomail");
	reply(s, ".");
}

static void cmd_user(struct pop3_session *s, char *arg)
{
	if (!plaintext_ok(s)) {
		reply_error(s, "[AUTH] Plaintext authentication is disabled on this connection");
		return;
	}
	if (arg[0] == '\0' || strlen(arg) > ADDR_USER_MAX || strchr(arg, ' ') != NULL) {
		reply_error(s, "Syntax: USER name");
		return;
	}
	snprintf(s->user, sizeof s->user, "%s", arg);
	s->state = ST_USER;
	/* The same answer for every name: it does not tell who exists. */
	reply(s, "+OK");
}

/* Login with a checked name and password: lock, snapshot, answer. */
static void login(struct pop3_session *s, const char *user, const char *pass)
{
	const struct users_table *u = inforce_users();
	unsigned delay;
	int i = auth_login(u, &s->conn.peer, user, pass, loop_now(), &delay);

	if (i < 0) {
		struct log_kv l;

		kv_session(&l, "refused", s);
		log_kv_str(&l, "reason", "auth");
		log_kv_str(&l, "proto", "pop3");
		log_kv_str(&l, "user", user);
		log_kv_str(&l, "reply", "-ERR [AUTH] Authentication failed");
		log_kv_end(&l, LOG_NOTICE);
		s->state = ST_DELAY;
		loop_deadline(s->slot, loop_now() + delay);
		return;
	}
	snprintf(s->user, sizeof s->user, "%s", u->u[i].name);
	if (mailbox_locked(s->user)) {
		s->state = ST_AUTH;
		reply(s, "-ERR [IN-USE] Mailbox is locked by another session");
		return;
	}
	s->mb = pool_take(&mailboxes);
	if (s->mb == NULL) {
		s->state = ST_AUTH;
		reply(s, "-ERR [SYS/TEMP] Too many mailboxes open, try again later");
		return;
	}
	if (mailbox_open(s->mb, cf()->pop3_max_messages, cf()->maildir_root, s->user) < 0) {
		log_msg(LOG_ERR, "session=%08" PRIx32 " mailbox %s: %m", s->id, s->user);
		pool_give(&mailboxes, s->mb);
		s->mb = NULL;
		s->state = ST_AUTH;
		reply(s, "-ERR [SYS/TEMP] Cannot open the mailbox, try again later");
		return;
	}
	{
		struct log_kv l;

		kv_session(&l, "login", s);
		log_kv_str(&l, "proto", "pop3");
		log_kv_str(&l, "user", s->user);
		if (s->conn.tls != NULL) {
			log_kv_str(&l, "tls", tls_suite(s->conn.tls));
		}
		log_kv_u64(&l, "messages", s->mb->n);
		log_kv_end(&l, LOG_INFO);
	}
	s->state = ST_TRANS;
	reply(s, "+OK Logged in, %u messages", s->mb->n);
}

static void cmd_pass(struct pop3_session *s, char *arg)
{
	char user[ADDR_USER_MAX + 1];

	if (!plaintext_ok(s)) {
		reply_error(s, "[AUTH] Plaintext authentication is disabled on this connection");
		return;
	}
	if (s->state != ST_USER) {
		reply_error(s, "Send USER first");
		return;
	}
	if (strlen(arg) > POP3_PASS_MAX) {
		s->state = ST_AUTH;
		reply_error(s, "[AUTH] Authentication failed");
		return;
	}
	snprintf(user, sizeof user, "%s", s->user);
	login(s, user, arg);
}

static void cmd_auth_plain(struct pop3_session *s, const char *b64)
{
	char user[ADDR_USER_MAX + 1], pass[POP3_PASS_MAX + 1];

	if (strcmp(b64, "*") == 0) {
		s->state = ST_AUTH;
		reply_error(s, "Authentication cancelled");
		return;
	}
	if (auth_plain_decode(b64, user, sizeof user, pass, sizeof pass) < 0) {
		s->state = ST_AUTH;
		reply_error(s, "Invalid base64 or PLAIN response");
		return;
	}
	login(s, user, pass);
	memset(pass, 0, sizeof pass);
}

static void cmd_auth(struct pop3_session *s, char *arg)
{
	char *ir;

	if (!plaintext_ok(s)) {
		reply_error(s, "[AUTH] Plaintext authentication is disabled on this connection");
		return;
	}
	if (arg[0] == '\0') {
		reply(s, "+OK Mechanisms follow");
		reply(s, "PLAIN");
		reply(s, ".");
		return;
	}
	ir = strchr(arg, ' ');
	if (ir != NULL) {
		*ir++ = '\0';
	}
	if (strcasecmp(arg, "PLAIN") != 0) {
		reply_error(s, "Unsupported authentication mechanism");
		return;
	}
	if (ir == NULL) {
		s->state = ST_SASL;
		reply(s, "+ ");
		return;
	}
	cmd_auth_plain(s, ir);
}

static void cmd_stls(struct pop3_session *s, char *arg)
{
	struct tls *t;

	if (s->conn.tls != NULL) {
		reply_error(s, "Command not permitted when TLS active");
		return;
	}
	if (!stls_offered(s) || arg[0] != '\0') {
		reply_error(s, "STLS is not offered here");
		return;
	}
	t = tls_server_take();
	if (t == NULL) {
		reply(s, "-ERR [SYS/TEMP] TLS not available, try again later");
		return;
	}
	reply(s, "+OK Begin TLS negotiation");
	/* Nothing said before TLS counts after it (RFC 2595 4). */
	s->user[0] = '\0';
	s->state = ST_AUTH;
	conn_starttls(&s->conn, t);
	loop_deadline(s->slot, loop_now() + TLS_HANDSHAKE_MS);
}

static void cmd_apop(struct pop3_session *s, char *arg)
{
	(void)arg;
	/* APOP needs the plain password on the server: not offered. */
	reply_error(s, "APOP is not supported");
}

static void cmd_quit(struct pop3_session *s, char *arg)
{
	int err;

	(void)arg;
	if (s->mb == NULL) {
		reply(s, "+OK Bye");
		s->state = ST_QUIT;
		s->end_why = "quit";
		return;
	}
	/* UPDATE (RFC 1939 6): remove, sync the directory, then +OK. */
	err = mailbox_expunge(s->mb, cf()->maildir_root);
	if (err != 0) {
		log_msg(LOG_ERR, "session=%08" PRIx32 " expunge %s: %s", s->id, s->user, strerror(err));
		reply(s, "-ERR [SYS/TEMP] Some deleted messages were not removed");
	} else {
		s->deleted = s->mb->ndeleted;
		reply(s, "+OK Bye");
	}
	s->end_why = "quit";
	s->state = ST_QUIT;
}

/* ---- TRANSACTION -------------------------------------------------------- */

static void totals(const struct mailbox *mb, unsigned *n, uint64_t *size)
{
	unsigned i;

	*n = 0;
	*size = 0;
	for (i = 0; i < mb->n; i++) {
		if (!mb->msgs[i].deleted) {
			(*n)++;
			*size += mb->msgs[i].size;
		}
	}
}

static void cmd_stat(struct pop3_session *s, char *arg)
{
	unsigned n;
	uint64_t size;

	if (arg[0] != '\0') {
		reply_error(s, "Syntax: STAT");
		return;
	}
	totals(s->mb, &n, &size);
	reply(s, "+OK %u %" PRIu64, n, size);
}

static void start_listing(struct pop3_session *s, enum pump_kind kind)
{
	s->kind = kind;
	s->cursor = 0;
	s->state = ST_SEND;
}

static void cmd_list(struct pop3_session *s, char *arg)
{
	unsigned n;
	uint64_t size;
	long i;

	if (arg[0] != '\0') {
		i = single_message_arg(s, arg);
		if (i >= 0) {
			reply(s, "+OK %ld %" PRIu64, i + 1, s->mb->msgs[i].size);
		}
		return;
	}
	totals(s->mb, &n, &size);
	reply(s, "+OK %u messages (%" PRIu64 " octets)", n, size);
	start_listing(s, PUMP_LIST);
}

static void cmd_uidl(struct pop3_session *s, char *arg)
{
	char uidl[MAILBOX_UIDL_MAX + 1];
	long i;

	if (arg[0] != '\0') {
		i = single_message_arg(s, arg);
		if (i >= 0) {
			mailbox_uidl(s->mb, (unsigned)i, uidl);
			reply(s, "+OK %ld %s", i + 1, uidl);
		}
		return;
	}
	reply(s, "+OK Unique-ID listing follows");
	start_listing(s, PUMP_UIDL);
}

static void start_message(struct pop3_session *s, long i, long lines)
{
	s->fd = mailbox_open_msg(s->mb, cf()->maildir_root, (unsigned)i);
	if (s->fd < 0) {
		log_msg(LOG_ERR, "session=%08" PRIx32 " %s message %ld: %m", s->id, s->user, i + 1);
		reply(s, "-ERR [SYS/TEMP] Cannot read the message");
		return;
	}
	s->retrieved++;
	s->kind = PUMP_MSG;
	msgwire_init(&s->wire, lines);
	s->state = ST_SEND;
	if (lines < 0) {
		reply(s, "+OK %" PRIu64 " octets", s->mb->msgs[i].size);
	} else {
		reply(s, "+OK");
	}
}

static void cmd_retr(struct pop3_session *s, char *arg)
{
	long i = single_message_arg(s, arg);

	if (i >= 0) {
		start_message(s, i, -1);
	}
}

static void cmd_top(struct pop3_session *s, char *arg)
{
	const char *rest, *end;
	long i = message_arg(s, arg, &rest), lines;

	if (i < 0) {
		return;
	}
	lines = parse_num(rest, &end);
	if (lines < 0 || *end != '\0') {
		reply_error(s, "Syntax: TOP message lines");
		return;
	}
	start_message(s, i, lines);
}

static void cmd_dele(struct pop3_session *s, char *arg)
{
	long i = single_message_arg(s, arg);

	if (i >= 0) {
		s->mb->msgs[i].deleted = 1;
		s->mb->ndeleted++;
		reply(s, "+OK Marked for deletion");
	}
}

static void cmd_rset(struct pop3_session *s, char *arg)
{
	unsigned i;

	if (arg[0] != '\0') {
		reply_error(s, "Syntax: RSET");
		return;
	}
	for (i = 0; i < s->mb->n; i++) {
		s->mb->msgs[i].deleted = 0;
	}
	s->mb->ndeleted = 0;
	reply(s, "+OK");
}

static void cmd_noop(struct pop3_session *s, char *arg)
{
	if (arg[0] != '\0') {
		reply_error(s, "Syntax: NOOP");
		return;
	}
	reply(s, "+OK");
}

#define ST_AUTHZ (ST_AUTH | ST_USER)

static const struct pop3_command commands[] = {
	{ "CAPA", ST_AUTHZ | ST_TRANS, cmd_capa },
	{ "USER", ST_AUTHZ, cmd_user },
	{ "PASS", ST_AUTHZ, cmd_pass },
	{ "AUTH", ST_AUTHZ, cmd_auth },
	{ "APOP", ST_AUTHZ, cmd_apop },
	{ "STLS", ST_AUTHZ, cmd_stls },
	{ "QUIT", ST_AUTHZ | ST_TRANS, cmd_quit },
	{ "STAT", ST_TRANS, cmd_stat },
	{ "LIST", ST_TRANS, cmd_list },
	{ "UIDL", ST_TRANS, cmd_uidl },
	{ "RETR", ST_TRANS, cmd_retr },
	{ "TOP", ST_TRANS, cmd_top },
	{ "DELE", ST_TRANS, cmd_dele },
	{ "RSET", ST_TRANS, cmd_rset },
	{ "NOOP", ST_TRANS, cmd_noop },
};

static void dispatch(struct pop3_session *s, char *line, size_t len)
{
	size_t i, vlen;
	char *arg;

	if (strlen(line) != len) {
		if (s->state == ST_SASL) {
			s->state = ST_AUTH;   /* the exchange is over, as for any bad response */
		}
		reply_error(s, "NUL character in command");
		return;
	}
	if (s->state == ST_SASL) {
		cmd_auth_plain(s, line);
		return;
	}
	for (vlen = 0; line[vlen] != '\0' && line[vlen] != ' '; vlen++) {
	}
	arg = line + vlen;
	while (*arg == ' ') {
		arg++;
	}
	for (i = 0; i < sizeof commands / sizeof commands[0]; i++) {
		if (strlen(commands[i].verb) != vlen || strncasecmp(line, commands[i].verb, vlen) != 0) {
			continue;
		}
		if (!(commands[i].states & s->state)) {
			if (s->state & ST_AUTHZ) {
				reply_error(s, strcmp(commands[i].verb, "PASS") == 0 ?
				               "Send USER first" : "Not logged in");
			} else {
				reply_error(s, "Command not valid in this state");
			}
			return;
		}
		commands[i].run(s, arg);
		return;
	}
	reply_error(s, "Unknown command");
}

/* ---- pumping multi-line answers ----------------------------------------- */

static void pump_listing(struct pop3_session *s)
{
	char uidl[MAILBOX_UIDL_MAX + 1];
	const struct mailbox *mb = s->mb;

	while (conn_room(&s->conn) >= PUMP_ROOM) {
		if (s->cursor == mb->n) {
			reply(s, ".");
			s->state = ST_TRANS;
			return;
		}
		if (!mb->msgs[s->cursor].deleted) {
			if (s->kind == PUMP_LIST) {
				reply(s, "%u %" PRIu64, s->cursor + 1, mb->msgs[s->cursor].size);
			} else {
				mailbox_uidl(mb, s->cursor, uidl);
				reply(s, "%u %s", s->cursor + 1, uidl);
			}
		}
		s->cursor++;
	}
}

/* The line end a last line still owes, then the final dot line. */
static void pump_finish(struct pop3_session *s)
{
	unsigned char out[8];
	size_t o = msgwire_end(&s->wire, out);

	memcpy(out + o, ".\r\n", 3);
	conn_put(&s->conn, out, o + 3);
	s->bytes_out += o + 3;
	pump_stop(s);
	s->state = ST_TRANS;
}

/* Sends the file as lines ending in CRLF, dot-stuffed (RFC 1939 3;
 * msgwire.h says how any line ends the file holds are read); for TOP,
 * stops after the header and the body lines asked for. */
static void pump_message(struct pop3_session *s)
{
	unsigned char in[CONN_OUT_SIZE / 2 - 8], out[CONN_OUT_SIZE];
	size_t room, want, o;
	ssize_t n;

	while ((room = conn_room(&s->conn)) >= PUMP_ROOM) {
		if (s->wire.done) {
			pump_finish(s);
			return;
		}
		/* msgwire writes at most 2 * want + 2 bytes. */
		want = (room - 8) / 2;
		if (want > sizeof in) {
			want = sizeof in;
		}
		n = io_read(s->fd, in, want);
		if (n < 0) {
			/* +OK is already out: the only honest end is to close. */
			log_msg(LOG_ERR, "session=%08" PRIx32 " read error in RETR: %m", s->id);
			s->conn.err = errno ? errno : EIO;
			return;
		}
		if (n == 0) {
			pump_finish(s);
			return;
		}
		(void)msgwire_feed(&s->wire, in, (size_t)n, out, &o);   /* the rest: past TOP's end */
		conn_put(&s->conn, out, o);
		s->bytes_out += o;
	}
}

static void pump(struct pop3_session *s)
{
	if (s->kind == PUMP_MSG) {
		pump_message(s);
	} else {
		pump_listing(s);
	}
}

/* ---- the session's I/O -------------------------------------------------- */

/* 1 when the session has work it can do without more input from the
 * client: the rest of a multi-line answer, or a pipelined command already
 * buffered (in c->in, or decrypted and waiting in the TLS engine).  What
 * the loop waits for follows from it, so a batch of commands in one write
 * is answered whole, however its answers fall across output buffers. */
static int session_pending(const struct pop3_session *s)
{
	if (s->conn.err || s->state & (ST_DELAY | ST_QUIT | ST_TLSWAIT)) {
		return 0;
	}
	if (s->state == ST_SEND) {
		return 1;
	}
	return conn_line_ready(&s->conn) || conn_more(&s->conn);
}

/* Does what is buffered while the output buffer has room: pumps the
 * answer being sent, then takes the next command.  Stops when the output
 * needs draining or no whole command is left. */
static void session_process(struct pop3_session *s)
{
	char *line;
	size_t len;

	for (;;) {
		if (s->conn.err || s->state & (ST_DELAY | ST_QUIT | ST_TLSWAIT)) {
			return;
		}
		if (s->state == ST_SEND) {
			pump(s);
			if (s->state == ST_SEND) {
				return;   /* the output is full: wait for it to drain */
			}
			continue;
		}
		if (conn_room(&s->conn) < PUMP_ROOM * 4) {
			return;   /* room for the next command's first reply lines */
		}
		switch (conn_line(&s->conn, &line, &len, POP3_LINE_MAX)) {
		case CONN_LINE_NONE:
			/* TLS may hold more decrypted input than c->in took. */
			if (conn_more(&s->conn) && conn_fill(&s->conn) > 0) {
				continue;
			}
			return;
		case CONN_LINE_TOO_LONG:
			idle_deadline(s);
			if (s->state == ST_SASL) {
				s->state = ST_AUTH;
			}
			reply_error(s, "Line too long");
			break;
		case CONN_LINE_OK:
			/* The timeout is for a whole command, not for each byte:
			 * a line dribbled a byte at a time cannot hold the
			 * session for ever (slow-loris). */
			idle_deadline(s);
			dispatch(s, line, len);
			break;
		}
	}
}

/* Flushes the output and, while the socket takes all of it, goes on with
 * the work already buffered (session_pending).  After POP3_ROUNDS output
 * buffers it returns even with work left, so that one fast reader of a
 * big RETR does not hold the loop: session_update then asks for POLLOUT,
 * and the loop comes back to it after serving the others. */
static int flush_and_continue(struct pop3_session *s)
{
	int r, rounds;

	for (rounds = 0;; rounds++) {
		r = conn_flush(&s->conn);
		if (r != 0 || rounds == POP3_ROUNDS || !session_pending(s)) {
			return r;
		}
		/* The output is empty: the pump or the next command has room. */
		session_process(s);
	}
}

static int session_update(struct pop3_session *s)
{
	int r = flush_and_continue(s);
	int pending = session_pending(s);

	if (r < 0) {
		s->end_why = s->conn.tls_error != 0 ? "tls-error" : "lost";
		session_end(s);
		return -1;
	}
	/* A client that half-closes after its batch still hears every answer. */
	if (r == 0 && (s->state == ST_QUIT || (s->conn.eof && !pending))) {
		if (s->end_why == NULL && s->state != ST_QUIT) {
			s->end_why = "closed";   /* by the client, without QUIT */
		}
		session_end(s);
		return -1;
	}
	/* Work left over (the round's bound, or the output full) waits for
	 * POLLOUT: the socket's room, not more input, lets it go on. */
	loop_events(s->slot, conn_poll_events(&s->conn, !(s->state & (ST_QUIT | ST_DELAY | ST_SEND |
	                                                               ST_TLSWAIT)) &&
	                                                   conn_room(&s->conn) >= PUMP_ROOM * 4) |
	                         (pending ? POLLOUT : 0));
	return 0;
}

static void idle_deadline(struct pop3_session *s)
{
	loop_deadline(s->slot, loop_now() + (int64_t)cf()->pop3_timeout * 1000);
}

static void session_io(void *ctx, int revents)
{
	struct pop3_session *s = ctx;
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
	if (revents & LOOP_TIMEOUT) {
		if (s->state == ST_DELAY) {
			/* The throttle delay is over: answer the failed login. */
			s->state = ST_AUTH;
			reply_error(s, "[AUTH] Authentication failed");
			idle_deadline(s);
			session_process(s);
			(void)session_update(s);
			return;
		}
		s->end_why = "timeout";
		reply(s, "-ERR Idle timeout, closing");
		(void)conn_flush(&s->conn);
		session_end(s);
		return;
	}
	if (revents & (POLLIN | POLLERR | POLLHUP)) {
		n = conn_fill(&s->conn);
		if (!s->tls_seen && conn_tls_ready(&s->conn)) {
			/* Handshake over: from now on the idle timeout counts. */
			s->tls_seen = 1;
			if (s->state != ST_DELAY) {
				idle_deadline(s);
			}
		}
		if (n < 0 && s->conn.err) {
			s->end_why = s->conn.tls_error != 0 ? "tls-error" : "lost";
			session_end(s);
			return;
		}
	}
	session_process(s);
	(void)session_update(s);
}

/* Implicit TLS (995): takes a TLS slot, or waits a little for one, since
 * nothing can be said in clear on this port; after TLS_WAIT_MS the client
 * is closed (logged). */
static void tls_wait(struct pop3_session *s)
{
	struct tls *t = tls_server_take();
	struct log_kv l;

	if (t != NULL) {
		s->state = ST_AUTH;
		conn_tls_now(&s->conn, t);
		loop_deadline(s->slot, loop_now() + TLS_HANDSHAKE_MS);
		reply(s, "+OK picomail POP3 ready");
		(void)session_update(s);
		return;
	}
	if (loop_now() >= s->tls_wait_end) {
		kv_session(&l, "refused", s);
		log_kv_str(&l, "reason", "tls-busy");
		log_kv_end(&l, LOG_NOTICE);
		s->end_why = "refused";
		session_end(s);
		return;
	}
	loop_events(s->slot, 0);
	loop_deadline(s->slot, loop_now() + TLS_RETRY_MS);
}

void pop3_session_start(void *mem, int fd, const struct sockaddr *peer, socklen_t len,
                        const struct conf_listen *l, uint32_t id)
{
	struct pop3_session *s = mem;
	struct log_kv kv;

	memset(s, 0, offsetof(struct pop3_session, conn));
	conn_init(&s->conn, fd, peer, len);
	s->fd = -1;
	s->id = id;
	s->listener = l;
	s->state = ST_AUTH;
	s->slot = loop_add(fd, POLLIN, session_io, s);
	if (s->slot < 0) {
		conn_close(&s->conn);
		sessions_release(s);
		return;
	}
	s->started = loop_now();
	kv_session(&kv, "connect", s);
	log_kv_str(&kv, "listener", "pop3");
	if (l->tls == TLS_IMPLICIT) {
		log_kv_str(&kv, "tls", "implicit");
	}
	log_kv_end(&kv, LOG_INFO);
	if (l->tls == TLS_IMPLICIT) {
		/* The ClientHello waits in the socket until a slot is free. */
		s->state = ST_TLSWAIT;
		s->tls_wait_end = loop_now() + TLS_WAIT_MS;
		tls_wait(s);
		return;
	}
	idle_deadline(s);
	reply(s, "+OK picomail POP3 ready");
	(void)session_update(s);
}

void pop3_session_shutdown(void *mem)
{
	struct pop3_session *s = mem;

	s->end_why = "shutdown";
	if (s->state != ST_SEND && s->state != ST_TLSWAIT) {
		reply(s, "-ERR [SYS/TEMP] Server shutting down");
		(void)conn_flush(&s->conn);
	}
	session_end(s);
}
