/* imap_int.h - the IMAP session, shared by imap.c (the state machine,
 * login, folders, STORE, COPY, MOVE, EXPUNGE, APPEND, IDLE), imap_fetch.c
 * (FETCH and the message structure) and imap_search.c (SEARCH).
 *
 * A command that answers more than the output buffer holds is a job:
 * imap.c calls s->job each time the output has room until it says it is
 * done, then sends the untagged updates of the folder (EXPUNGE, EXISTS,
 * FLAGS) and the tagged completion s->done.  A job's state is in the box,
 * the pool object every logged-in session holds: its folder index and
 * what its commands need across rounds.
 */
#ifndef PICOMAIL_IMAP_INT_H
#define PICOMAIL_IMAP_INT_H

#include <stddef.h>
#include <stdint.h>
#include "addr.h"
#include "conn.h"
#include "conf.h"
#include "folder.h"
#include "imap_parse.h"
#include "maildir.h"
#include "msgwire.h"

#define IMAP_CMD_MAX    16384   /* a command with its literals (not APPEND's message) */
#define IMAP_PREAUTH_MAX 2048   /* the same before login */
#define IMAP_TAG_MAX    64
#define IMAP_DONE_MAX   200
#define IMAP_ROOM       512     /* output room a step of a job needs before it runs */
#define FETCH_ITEMS_MAX 24
#define SECTION_DEPTH   8       /* part numbers in a section, "1.2.3" */
#define SEARCH_NODES    64

enum imap_state { IS_NOAUTH = 1, IS_AUTH = 2, IS_SELECTED = 4 };

enum imap_mode {
	IM_CMD,         /* reading a command */
	IM_SASL,        /* AUTHENTICATE: waiting for the client's response */
	IM_DELAY,       /* a failed login, answered after the throttle */
	IM_JOB,         /* a command answering over several rounds */
	IM_FINISH,      /* the untagged updates, then the tagged completion */
	IM_IDLE,        /* IDLE, until DONE */
	IM_LOGOUT,      /* closing once the output is sent */
	IM_TLSWAIT,     /* implicit TLS: waiting for a free TLS slot */
};

/* A window on a response generated afresh each round: the octets before
 * skip went out already, those past limit wait for the next round. */
struct out {
	struct conn *c;
	uint64_t skip, pos, limit;
};

/* ---- FETCH (imap_fetch.c) ---- */

enum fetch_kind {
	FK_UID, FK_FLAGS, FK_INTERNALDATE, FK_SIZE, FK_ENVELOPE, FK_BODYSTRUCTURE, FK_BODY,
	FK_SECTION,     /* BODY[...] and the RFC822 forms */
};

enum section_kind { SK_ALL, SK_HEADER, SK_TEXT, SK_MIME, SK_FIELDS, SK_FIELDS_NOT };

struct fetch_item {
	uint8_t kind;           /* fetch_kind */
	uint8_t sect;           /* section_kind */
	uint8_t peek;
	uint8_t depth;          /* part numbers */
	uint8_t name;           /* how it is named back: 0 BODY[..], 1 RFC822, 2 RFC822.HEADER,
	                         * 3 RFC822.TEXT */
	uint8_t partial;
	uint16_t part[SECTION_DEPTH];
	uint32_t off, len;      /* <off.len> */
	struct imap_str fields; /* HEADER.FIELDS: the list, as in the command */
};

struct fetch_job {
	unsigned n;
	struct fetch_item items[FETCH_ITEMS_MAX];
	int uid;                /* UID FETCH: UID in every response */
	int gone;               /* a message in the set had vanished */
	int failed;             /* a message's structure was past the limits */
	int seen_set;           /* \Seen was set: cur/ to sync before OK */
	int started;            /* the message at cursor is being answered */
	unsigned cursor;        /* the message */
	unsigned item;          /* its piece: 0 "* n FETCH (", then the items, then ")" */
	int phase;              /* 0 the piece's text, 1 its literal starting, 2 going */
	uint64_t sent;          /* octets of the piece already out */
	int flags_added;        /* FLAGS joins the response (\Seen was just set) */
	/* the literal of a section */
	uint64_t lstart, lend;  /* wire offsets (HEADER.FIELDS: of its own text) */
	uint64_t fpos, fwoff;   /* the file offset of the section's first line, its wire offset */
	uint64_t rpos, rwoff;   /* the reader's place between rounds */
	int rcr, rbol;
};

/* ---- SEARCH (imap_search.c) ---- */

#define SEARCH_TEXT_MAX 16      /* strings looked for in messages, each... */
#define SEARCH_NEEDLE_MAX 255   /* ...at most this long */

struct search_node {
	uint8_t op;
	uint16_t next;          /* the node after this one's subtree */
	uint32_t a;             /* flag mask and value, a size, a day, a matcher */
	struct imap_str s;      /* a set */
	const char *h;          /* HEADER's field name, h_len octets */
	size_t h_len;
};

/* A string looked for as the message streams past (Knuth-Morris-Pratt,
 * ASCII letters in either case): no window of the text is kept. */
struct search_text {
	uint8_t len, state, found;
	uint8_t fail[SEARCH_NEEDLE_MAX];
	char pat[SEARCH_NEEDLE_MAX];
};

struct search_job {
	unsigned n;
	struct search_node nodes[SEARCH_NODES];
	unsigned ntext;
	struct search_text text[SEARCH_TEXT_MAX];
	int files;              /* a criterion reads the message */
	int uid;
	unsigned cursor;        /* evaluating: the next message; then output */
	int output;             /* 1: the "* SEARCH" line is going out */
};

/* ---- the box: a logged-in session's pool object ---- */

struct imap_box {
	union {
		struct fetch_job fetch;
		struct search_job search;
		struct {
			unsigned cursor;
			unsigned flags;     /* STORE's flags */
			int how;            /* 0 replace, 1 add, -1 remove */
			int silent, uid;
			int err;
		} store;
		struct {
			unsigned sent;      /* lines out */
			int lsub, special;  /* LSUB; LIST (SPECIAL-USE) */
			char ref[FOLDER_NAME_MAX + 1];
			char pat[FOLDER_NAME_MAX * 2 + 2];
		} list;
	} u;
	int msgfd;                  /* FETCH: the message being answered, or -1 */
	/* FETCH: where the last literal of a message ended (imap_fetch.c) */
	uint32_t hint_uid, hint_validity;
	uint64_t hint_pos, hint_woff;
	int hint_cr, hint_bol;
	/* APPEND */
	struct maildir_msg msg;
	char append_to[FOLDER_NAME_MAX + 1];
	unsigned append_flags;
	time_t append_date;
	int append_cr, append_nul, append_last;
	uint32_t append_left;
	/* untagged updates */
	unsigned exists, recent;    /* as last told */
	unsigned upd;               /* EXPUNGE: next entry from the end */
	unsigned upd_flags;         /* FETCH FLAGS: next entry */
	/* Last: the index's array and arena follow it. */
	struct folder f;
};

struct imap_session {
	int slot;
	uint32_t id;
	unsigned state;             /* imap_state */
	enum imap_mode mode;
	unsigned errors;
	const struct conf_listen *listener;
	char user[ADDR_USER_MAX + 1];
	struct imap_box *box;
	int tls_seen;
	int64_t started, tls_wait_end;
	int64_t timeout_at;         /* loop_now() when the idle timeout ends */
	int64_t keepalive_at;       /* IDLE: the next "* OK Still here" */
	int64_t sync_at;            /* IDLE: a change to look at (0: none) */
	/* the command being read */
	int reading;                /* R_* in imap.c */
	size_t cmd_len;
	uint32_t lit_left;
	size_t line_start;          /* where the line after the last literal starts */
	char tail[16];              /* the last octets of a line too long to keep */
	size_t tail_len;
	const char *skip_reply;     /* the tagged answer once a refused command is read */
	/* the command running */
	char tag[IMAP_TAG_MAX + 1];
	int (*job)(struct imap_session *s);
	char done[IMAP_DONE_MAX];
	int quiet;                  /* FETCH, STORE, SEARCH: no EXPUNGE now (RFC 3501 7.4.1) */
	int yield;                  /* a job did its share of this round: the others' turn */
	/* for the disconnect line */
	unsigned fetched, appended, expunged;
	uint64_t bytes_out;
	const char *end_why;
	struct conn conn;
	char cmd[IMAP_CMD_MAX];
};

/* ---- imap.c, for the others ---- */

/* A line of the response (CRLF added); fmt's result at most 1000 octets. */
void imap_line(struct imap_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The command's tagged completion, "OK ...", "NO ..." (after the updates). */
void imap_done(struct imap_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A BAD completion, counted against the error limit. */
void imap_bad(struct imap_session *s, const char *text);

/* Marks (MS_MARK) the messages of set, sequence numbers or UIDs; the
 * number marked. */
unsigned imap_mark(struct imap_session *s, const struct imap_str *set, int uid);

/* 1 if a sequence set names numbers past the folder's end (RFC 3501 9:
 * invalid); UID sets may name anything. */
int imap_set_bad(struct imap_session *s, const struct imap_str *set, int uid);

/* The flag list of a message, "(\Seen \Flagged)", into o. */
void imap_flags(struct out *o, unsigned flags);

/* out: the window's calls. */
void out_start(struct out *o, struct conn *c, uint64_t skip);
void out_put(struct out *o, const void *p, size_t n);
void out_printf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void out_str(struct out *o, const char *s);
/* An IMAP string: quoted when it can be, else a literal; NIL for NULL. */
void out_string(struct out *o, const char *p, size_t n);
/* 1 when everything generated fitted. */
int out_done(const struct out *o);

/* ---- imap_fetch.c ---- */

/* FETCH / UID FETCH: parses, marks, and starts the job (or answers BAD). */
void fetch_start(struct imap_session *s, struct imap_tok *t, int uid);

/* The FETCH job's file, closed (the session ends). */
void fetch_stop(struct imap_session *s);

/* The octets of a message's header (wire form), for SEARCH; -1 if bad. */

/* ---- imap_search.c ---- */

/* SEARCH / UID SEARCH: parses and starts the job (or answers). */
void search_start(struct imap_session *s, struct imap_tok *t, int uid);

#endif
