/* smtp_session.h - the SMTP session, shared by the protocol
 * (smtp_server.c) and the spam-policy steps (smtp_policy.c).  Not for
 * other modules: smtp_server.h is the session's public face.
 */
#ifndef PICOMAIL_SMTP_SESSION_H
#define PICOMAIL_SMTP_SESSION_H

#include <stdint.h>
#include "addr.h"
#include "conf.h"
#include "conn.h"
#include "dnsbl.h"
#include "log.h"
#include "maildir.h"
#include "smtp_data.h"
#include "submitter.h"

#define SMTP_LINE_MAX   1000  /* RFC 5321 4.5.3.1.4 says 512; extensions need more */
#define SMTP_ERRORS_MAX 10    /* then 421 and close */
#define SMTP_REPLY_ROOM 600   /* output kept free before taking a command */
#define TLS_HANDSHAKE_MS 30000 /* a client that never finishes its handshake */
#define TLS_WAIT_MS      10000 /* implicit TLS: how long a client waits for a free slot */
#define TLS_RETRY_MS     100   /* and how often a slot is looked for meanwhile */
#define SMTP_ROUNDS     64    /* output buffers sent per event before others' turn */

enum smtp_state {
	ST_GREETED = 1 << 0,  /* banner sent, no EHLO yet */
	ST_READY   = 1 << 1,  /* EHLO/HELO done, no transaction */
	ST_MAIL    = 1 << 2,  /* MAIL accepted */
	ST_RCPT    = 1 << 3,  /* at least one RCPT accepted */
	ST_DATA    = 1 << 4,  /* reading the message */
	ST_COMMIT  = 1 << 5,  /* waiting for the group commit */
	ST_QUIT    = 1 << 6,  /* closing once the output is sent */
	ST_SASL    = 1 << 7,  /* AUTH: waiting for the client's response line */
	ST_DELAY   = 1 << 8,  /* AUTH failed: answered after the throttle delay */
	ST_PAUSE   = 1 << 9,  /* before the banner: greet_pause, blocklist lookups */
	ST_REFUSED = 1 << 10, /* blocklisted: 554 banner, only QUIT (RFC 5321 3.1) */
	ST_SCAN    = 1 << 11, /* the content scanner has the message */
	ST_TLSWAIT = 1 << 12, /* implicit TLS: waiting for a free TLS slot */
};

/* States in which the session reads no command: it waits for something
 * of its own (the commit, the scanner, the throttle) or is closing. */
#define ST_WAITING (ST_COMMIT | ST_SCAN | ST_QUIT | ST_DELAY | ST_TLSWAIT)

enum sasl_step { SASL_PLAIN, SASL_LOGIN_USER, SASL_LOGIN_PASS };

#define SASL_PASS_MAX 256

struct smtp_tx {
	char from[ADDR_MAX + 1];
	char first_rcpt[ADDR_MAX + 1];
	unsigned nrcpt;                /* RCPT commands accepted */
	unsigned msgno;
	uint64_t size_hint;            /* MAIL SIZE=, 0 if none (RFC 1870) */
	int file_open;                 /* msg has a file in tmp/ */
	int write_err;                 /* errno of the first file error */
	int too_big;
	int queued;                    /* the message goes to the queue */
	int64_t began;                 /* loop_now() at DATA, for the delay */
	int crowd_logged;              /* "too many recipients" logged once */
	unsigned nremote;              /* entries of remote[] in use */
	unsigned nqueued;              /* recipients in the queued envelope */
	struct smtp_data data;
};

struct smtp_session {
	int slot;
	uint32_t id;
	enum smtp_state state;
	unsigned errors;
	int esmtp;
	const struct conf_listen *listener;
	char helo[256];
	unsigned msgs;
	char auth_user[ADDR_USER_MAX + 1];   /* empty: not authenticated */
	enum sasl_step sasl;
	enum smtp_state sasl_return;         /* the state to go back to */
	char sasl_login[ADDR_USER_MAX + 1];  /* AUTH LOGIN: the name given */
	int tls_logged;
	int relay_ok;                        /* relay_from, or the local submit socket */
	int screened;                        /* spam defences apply (smtp listener, outsider) */
	int dnsbl_on;                        /* dnsbl holds lookups */
	int64_t pause_end, dnsbl_end;        /* loop_now() times, in ST_PAUSE */
	int scan;                            /* scanner handle in ST_SCAN; -1 */
	int gone;                            /* closed in ST_COMMIT: committed() gives it back */
	struct submitter sub;                /* the submit socket's local user */
	int64_t started;                     /* loop_now() at connect */
	int64_t tls_wait_end;                /* ST_TLSWAIT: when to give up */
	unsigned acked;                      /* messages answered 250 */
	uint64_t acked_bytes;
	const char *end_why;                 /* how it ended, for the disconnect line */
	struct smtp_tx tx;
	struct conn conn;
	struct maildir_msg msg;
	struct dnsbl_check dnsbl;
	/* Last, and never cleared: only nremote entries count, and pages an
	 * idle session never writes stay out of its RSS. */
	char remote[MAILDIR_RCPT_MAX][ADDR_MAX + 1];   /* relayed recipients */
};

/* ---- smtp_server.c, for smtp_policy.c ---- */

/* One reply line. */
void smtp_reply(struct smtp_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A 5xx for the client's mistake: counted, and too many end the session. */
void smtp_reply_error(struct smtp_session *s, const char *text);

/* A refusal: the reply, and one log line saying why (reason a word;
 * rcpt the recipient it concerns, or NULL). */
void smtp_refuse(struct smtp_session *s, const char *reason, const char *rcpt, const char *fmt,
                 ...) __attribute__((format(printf, 4, 5)));

/* The start of an event line about this session. */
void smtp_kv_session(struct log_kv *l, const char *event, const struct smtp_session *s);

/* The reply for a failed write: 452 for a full disk or quota, else 451. */
void smtp_reply_write_error(struct smtp_session *s, int err);

/* Forgets the transaction, removing any file it started. */
void smtp_tx_reset(struct smtp_session *s);

/* The message passed every check: to the queue or to the commit. */
void smtp_data_accept(struct smtp_session *s);

/* Handles what is buffered, as far as the state allows. */
void smtp_process(struct smtp_session *s);

/* Flushes output and sets what the loop waits for; 0, or -1 if ended. */
int smtp_update(struct smtp_session *s);

/* The banner: "220 <hostname> ESMTP picomail". */
void smtp_banner(struct smtp_session *s);

/* ---- smtp_policy.c: the defences against spam engines ---- */

/* Before the banner, for strangers on port 25: holds it back for
 * greet_pause and the blocklist lookups (RFC 5782). */
void policy_pause_start(struct smtp_session *s);

/* An event in ST_PAUSE: the deadline, or a client talking first (554,
 * closed). */
void policy_pause_event(struct smtp_session *s, int revents);

/* EHLO/HELO: 1 when the name is refused (helo_check: not a domain nor an
 * address literal), with the reply sent. */
int policy_helo_refused(struct smtp_session *s, const char *arg);

/* RCPT: 1 when greylisting defers the recipient, with the reply sent. */
int policy_greylisted(struct smtp_session *s, const char *rcpt);

/* After the dot: hands the message to the content scanner; the reply
 * waits for its verdict. */
void policy_scan_start(struct smtp_session *s);

/* The scanner did not answer within scanner_timeout. */
void policy_scan_timeout(struct smtp_session *s);

#endif
