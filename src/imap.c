/* imap.c - the IMAP session state machine (RFC 3501 and the extensions
 * imap.h lists).
 *
 * Not authenticated -> authenticated -> selected.  A command is read into
 * s->cmd with its literals inline (APPEND's message streams to a file
 * instead), parsed in place (imap_parse.h), and run from a table.  The
 * answers that can outgrow the output buffer (FETCH, SEARCH, LIST, STORE,
 * the folder's updates) are jobs pumped as the buffer drains
 * (imap_int.h).  Every change to a message is durable before its tagged
 * OK: the folder's directory is synced (folder.h).
 */
#include "imap.h"
#include "imap_int.h"
#include "auth.h"
#include "inforce.h"
#include "io.h"
#include "log.h"
#include "loop.h"
#include "pool.h"
#include "quota.h"
#include "sessions.h"
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define IMAP_ERRORS_MAX  20
#define IMAP_PASS_MAX    256
#define TLS_HANDSHAKE_MS 30000
#define TLS_WAIT_MS      10000   /* implicit TLS: how long a client waits for a free slot */
#define TLS_RETRY_MS     100
#define IMAP_ROUNDS      64      /* output buffers sent per event before others' turn */
#define KEEPALIVE_MS     (2 * 60 * 1000)   /* IDLE: "* OK Still here", for NATs */
#define SYNC_DELAY_MS    50      /* IDLE: a burst of changes is looked at once */
#define POLL_SYNC_MS     2000    /* IDLE without inotify */

#define CAPS "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UIDPLUS MOVE UNSELECT SPECIAL-USE"
#define PERMANENT "\\Answered \\Flagged \\Deleted \\Seen \\Draft"

enum { R_LINE, R_LIT, R_SKIPLINE, R_SKIPLIT, R_APPEND };

static struct pool boxes;
static unsigned box_max;     /* imap_max_messages at start-up: the boxes' size */
static int watch_slot = -1;
static int watching;     /* inotify works */

static void session_process(struct imap_session *s);
static int session_update(struct imap_session *s);
static void tls_wait(struct imap_session *s);
static void arm(struct imap_session *s);

size_t imap_session_size(void)
{
	return sizeof(struct imap_session);
}

size_t imap_box_size(unsigned max)
{
	return offsetof(struct imap_box, f) + folder_objsize(max);
}

int imap_init(const struct conf *c)
{
	box_max = c->imap_max_messages;
	return pool_init(&boxes, "imap", imap_box_size(c->imap_max_messages), c->imap_sessions);
}

static void watch_ready(void *ctx, int revents)
{
	(void)ctx;
	(void)revents;
	folder_watch_ready();
}

int imap_start(void)
{
	int fd = folder_watch_init();

	if (fd < 0) {
		return 0;   /* IDLE looks every POLL_SYNC_MS instead */
	}
	watch_slot = loop_add(fd, POLLIN, watch_ready, NULL);
	watching = watch_slot >= 0;
	return watch_slot < 0 ? -1 : 0;
}

unsigned imap_boxes_used(void)
{
	return boxes.used;
}

unsigned imap_boxes_size(void)
{
	return boxes.size;
}

const struct sockaddr_storage *imap_session_peer(const void *mem)
{
	return &((const struct imap_session *)mem)->conn.peer;
}

static const struct conf *cf(void)
{
	return inforce_conf();
}

/* ---- output -------------------------------------------------------------- */

void imap_line(struct imap_session *s, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf - 2, fmt, ap);
	va_end(ap);
	if (n < 0) {
		return;
	}
	if ((size_t)n > sizeof buf - 3) {
		n = (int)(sizeof buf - 3);
	}
	buf[n++] = '\r';
	buf[n++] = '\n';
	conn_put(&s->conn, buf, (size_t)n);
}

void out_start(struct out *o, struct conn *c, uint64_t skip)
{
	o->c = c;
	o->skip = skip;
	o->pos = 0;
	o->limit = c != NULL ? skip + conn_room(c) : 0;   /* NULL: only counting */
}

void out_put(struct out *o, const void *p, size_t n)
{
	uint64_t from = o->pos > o->skip ? o->pos : o->skip;
	uint64_t to = o->pos + n < o->limit ? o->pos + n : o->limit;

	if (to > from && o->c != NULL) {
		conn_put(o->c, (const char *)p + (from - o->pos), (size_t)(to - from));
	}
	o->pos += n;
}

void out_printf(struct out *o, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n > 0) {
		out_put(o, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
	}
}

void out_string(struct out *o, const char *p, size_t n)
{
	size_t i;

	if (p == NULL) {
		out_str(o, "NIL");
		return;
	}
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)p[i];

		if (ch == '\0' || ch == '\r' || ch == '\n' || ch >= 0x80) {
			break;
		}
	}
	if (i < n || n > 1000) {
		out_printf(o, "{%zu}\r\n", n);
		out_put(o, p, n);
		return;
	}
	out_str(o, "\"");
	for (i = 0; i < n; i++) {
		if (p[i] == '"' || p[i] == '\\') {
			out_str(o, "\\");
		}
		out_put(o, p + i, 1);
	}
	out_str(o, "\"");
}

void out_str(struct out *o, const char *s)
{
	out_put(o, s, strlen(s));
}

int out_done(const struct out *o)
{
	return o->pos <= o->limit;
}

void imap_flags(struct out *o, unsigned flags)
{
	static const char *const names[] = { "\\Seen", "\\Answered", "\\Flagged", "\\Deleted",
	                                     "\\Draft", "\\Recent" };
	unsigned i, n = 0;

	out_str(o, "(");
	for (i = 0; i < 6; i++) {
		if (flags & (1u << i)) {
			if (n++ > 0) {
				out_str(o, " ");
			}
			out_put(o, names[i], strlen(names[i]));
		}
	}
	out_str(o, ")");
}

/* A short piece of output that must fit at once (it always does: the
 * callers ask for IMAP_ROOM first). */
static void put_flags(struct imap_session *s, unsigned flags)
{
	struct out o;

	out_start(&o, &s->conn, 0);
	imap_flags(&o, flags);
}

static void sync_folder(struct imap_session *s);

/* After a command: what changed in the selected folder meanwhile (an
 * APPEND or a COPY into it too) goes out before the tagged answer. */
static void init_finish(struct imap_session *s)
{
	s->mode = IM_FINISH;
	if (s->box == NULL) {
		return;
	}
	if (!s->quiet) {
		sync_folder(s);
	}
	s->box->upd = s->box->f.n;
	s->box->upd_flags = 0;
}

void imap_done(struct imap_session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(s->done, sizeof s->done, fmt, ap);
	va_end(ap);
	init_finish(s);
}

void imap_bad(struct imap_session *s, const char *text)
{
	s->errors++;
	imap_done(s, "BAD %s", text);
}

/* NO for a file-system error: a full disk or quota is OVERQUOTA, the
 * rest a temporary UNAVAILABLE (RFC 5530). */
static void done_errno(struct imap_session *s, int err, const char *what)
{
	log_msg(LOG_ERR, "session=%08" PRIx32 " %s %s: %s", s->id, s->user, what, strerror(err));
	if (err == ENOSPC || err == EDQUOT) {
		imap_done(s, "NO [OVERQUOTA] %s: no room left", what);
	} else {
		imap_done(s, "NO [UNAVAILABLE] %s failed, try again later", what);
	}
}

/* ---- log ----------------------------------------------------------------- */

static void kv_session(struct log_kv *l, const char *event, const struct imap_session *s)
{
	log_kv_start(l, event);
	log_kv_fmt(l, "session", "%08" PRIx32, s->id);
	log_kv_str(l, "client", s->conn.peer_ip);
}

static void log_disconnect(const struct imap_session *s)
{
	struct log_kv l;

	kv_session(&l, "disconnect", s);
	log_kv_str(&l, "proto", "imap");
	if (s->box != NULL) {
		log_kv_str(&l, "user", s->user);
	}
	log_kv_u64(&l, "fetched", s->fetched);
	log_kv_u64(&l, "appended", s->appended);
	log_kv_u64(&l, "expunged", s->expunged);
	log_kv_u64(&l, "bytes", s->bytes_out);
	conn_log_end(&l, &s->conn, s->started, s->end_why);
}

static void append_abort(struct imap_session *s)
{
	if (s->reading == R_APPEND || s->box->msg.fd >= 0) {
		maildir_abort(&s->box->msg);
	}
}

static void session_end(struct imap_session *s)
{
	log_disconnect(s);
	if (s->box != NULL) {
		fetch_stop(s);
		append_abort(s);
		folder_close(&s->box->f);
		pool_give(&boxes, s->box);
		s->box = NULL;
	}
	loop_del(s->slot);
	conn_close(&s->conn);
	sessions_release(s);
}

/* ---- the selected folder's updates --------------------------------------- */

/* Brings the index up to date when something changed.  A folder deleted
 * or made anew under the session ends it (RFC 3501 7.1.5's BYE). */
static void sync_folder(struct imap_session *s)
{
	struct folder *f;

	if (!(s->state & IS_SELECTED) || !(f = &s->box->f)->dirty || folder_sync(f) == 0) {
		return;
	}
	if (errno == ENOENT || errno == ESTALE) {
		imap_line(s, "* BYE [UNAVAILABLE] The folder was deleted or made anew");
		s->mode = IM_LOGOUT;
		s->end_why = "folder-gone";
		s->state = IS_AUTH;
		folder_close(f);
		return;
	}
	/* Looked at again at the next command. */
	log_msg(LOG_ERR, "session=%08" PRIx32 " %s folder %s: %m", s->id, s->user, f->name);
}

/* Sends what changed in the folder: EXPUNGE (unless the command forbids
 * it), flags others set, EXISTS, RECENT.  1 when all is out. */
static int updates(struct imap_session *s)
{
	struct imap_box *b = s->box;
	struct folder *f;
	struct fmsg *m;

	if (!(s->state & IS_SELECTED)) {
		return 1;
	}
	f = &b->f;
	if (!s->quiet) {
		/* From the end: each number stays right for the client. */
		while (b->upd > 0) {
			if (conn_room(&s->conn) < 32) {
				return 0;
			}
			if (f->msgs[--b->upd].state & MS_GONE) {
				imap_line(s, "* %u EXPUNGE", b->upd + 1);
				b->exists--;
			}
		}
		folder_purge(f);
	}
	for (; b->upd_flags < f->n; b->upd_flags++) {
		m = &f->msgs[b->upd_flags];
		if (!(m->state & MS_CHANGED) || (m->state & MS_GONE)) {
			continue;
		}
		if (conn_room(&s->conn) < IMAP_ROOM) {
			return 0;
		}
		m->state &= (uint8_t)~MS_CHANGED;
		conn_printf(&s->conn, "* %u FETCH (UID %" PRIu32 " FLAGS ", b->upd_flags + 1, m->uid);
		put_flags(s, m->flags);
		conn_put(&s->conn, ")\r\n", 3);
	}
	if (f->n != b->exists) {
		imap_line(s, "* %u EXISTS", f->n);
		b->exists = f->n;
	}
	if (f->recent != b->recent) {
		imap_line(s, "* %u RECENT", f->recent);
		b->recent = f->recent;
	}
	return 1;
}

unsigned imap_mark(struct imap_session *s, const struct imap_str *set, int uid)
{
	struct folder *f = &s->box->f;
	const char *p = set->p;
	uint32_t a, b, star;
	unsigned count = 0, i;
	int j;

	for (i = 0; i < f->n; i++) {
		f->msgs[i].state &= (uint8_t)~MS_MARK;
	}
	if (f->n == 0) {
		return 0;
	}
	star = uid ? f->msgs[f->n - 1].uid : f->n;
	while (set_next(&p, set->p + set->len, star, &a, &b)) {
		if (uid) {
			/* The first UID at or above a, then on while <= b. */
			for (i = 0, j = f->n; i < (unsigned)j;) {
				unsigned mid = i + (j - i) / 2;

				if (f->msgs[mid].uid < a) {
					i = mid + 1;
				} else {
					j = (int)mid;
				}
			}
			for (; i < f->n && f->msgs[i].uid <= b; i++) {
				count += !(f->msgs[i].state & MS_MARK);
				f->msgs[i].state |= MS_MARK;
			}
			continue;
		}
		if (a > f->n) {
			continue;   /* the caller says BAD for numbers past the end */
		}
		for (i = a - 1; i < b && i < f->n; i++) {
			count += !(f->msgs[i].state & MS_MARK);
			f->msgs[i].state |= MS_MARK;
		}
	}
	return count;
}

int imap_set_bad(struct imap_session *s, const struct imap_str *set, int uid)
{
	const char *p = set->p;
	uint32_t a, b;

	if (uid || s->box->f.n == 0) {
		return 0;   /* UIDs may name nothing; "1:*" of an empty folder is nothing */
	}
	while (set_next(&p, set->p + set->len, s->box->f.n, &a, &b)) {
		if (b > s->box->f.n) {
			return 1;
		}
	}
	return 0;
}

/* ---- login --------------------------------------------------------------- */

static int plaintext_ok(const struct imap_session *s)
{
	return s->conn.tls != NULL || cf()->plaintext_auth;
}

static int starttls_offered(const struct imap_session *s)
{
	return s->listener->tls == TLS_STARTTLS && s->conn.tls == NULL && tls_ready();
}

/* The capabilities as this session stands (RFC 3501 7.2.1). */
static const char *caps(const struct imap_session *s)
{
	static char buf[256];

	snprintf(buf, sizeof buf, CAPS "%s%s", s->state == IS_NOAUTH && starttls_offered(s) ?
	         " STARTTLS" : "", s->state != IS_NOAUTH ? "" : plaintext_ok(s) ? " AUTH=PLAIN" :
	         " LOGINDISABLED");
	return buf;
}

static void login(struct imap_session *s, const char *user, const char *pass)
{
	const struct users_table *u = inforce_users();
	struct log_kv l;
	unsigned delay;
	int i = auth_login(u, &s->conn.peer, user, pass, loop_now(), &delay);

	if (i < 0) {
		kv_session(&l, "refused", s);
		log_kv_str(&l, "reason", "auth");
		log_kv_str(&l, "proto", "imap");
		log_kv_str(&l, "user", user);
		log_kv_str(&l, "reply", "NO [AUTHENTICATIONFAILED]");
		log_kv_end(&l, LOG_NOTICE);
		s->mode = IM_DELAY;
		loop_deadline(s->slot, loop_now() + delay);
		return;
	}
	snprintf(s->user, sizeof s->user, "%s", u->u[i].name);
	s->box = pool_take(&boxes);
	if (s->box == NULL) {
		imap_done(s, "NO [UNAVAILABLE] Too many IMAP sessions, try again later");
		return;
	}
	folder_init(&s->box->f, box_max);
	s->box->msg.fd = -1;
	s->box->msg.tmp[0] = '\0';
	s->box->msgfd = -1;
	s->box->hint_uid = 0;
	if (folder_setup_user(s->user) < 0) {
		int e = errno ? errno : EIO;

		pool_give(&boxes, s->box);
		s->box = NULL;
		done_errno(s, e, "LOGIN");
		return;
	}
	kv_session(&l, "login", s);
	log_kv_str(&l, "proto", "imap");
	log_kv_str(&l, "user", s->user);
	if (s->conn.tls != NULL) {
		log_kv_str(&l, "tls", tls_suite(s->conn.tls));
	}
	log_kv_end(&l, LOG_INFO);
	s->state = IS_AUTH;
	imap_done(s, "OK [CAPABILITY %s] Logged in", caps(s));
}

static void cmd_login(struct imap_session *s, struct imap_tok *t, int arg)
{
	char user[ADDR_USER_MAX + 1], pass[IMAP_PASS_MAX + 1];

	(void)arg;
	tok_sp(t);
	tok_cstring(t, user, sizeof user);
	tok_sp(t);
	tok_cstring(t, pass, sizeof pass);
	if (!plaintext_ok(s)) {
		imap_done(s, "NO [PRIVACYREQUIRED] Use STARTTLS first");
	} else if (!tok_end(t)) {
		imap_bad(s, "Syntax: LOGIN user password");
	} else {
		login(s, user, pass);
	}
	memset(pass, 0, sizeof pass);
}

/* The AUTHENTICATE PLAIN response (initial or continued). */
static void auth_plain(struct imap_session *s, const char *b64, size_t len)
{
	char user[ADDR_USER_MAX + 1], pass[IMAP_PASS_MAX + 1], buf[400];

	if (len == 1 && b64[0] == '*') {
		imap_bad(s, "Authentication cancelled");
		return;
	}
	if (len >= sizeof buf) {
		imap_bad(s, "Invalid base64 or PLAIN response");
		return;
	}
	memcpy(buf, b64, len);
	buf[len] = '\0';
	if (auth_plain_decode(strcmp(buf, "=") == 0 ? "" : buf, user, sizeof user, pass,
	                      sizeof pass) < 0) {
		imap_bad(s, "Invalid base64 or PLAIN response");
		return;
	}
	login(s, user, pass);
	memset(pass, 0, sizeof pass);
}

static void cmd_authenticate(struct imap_session *s, struct imap_tok *t, int arg)
{
	struct imap_str mech, ir;

	(void)arg;
	tok_sp(t);
	tok_atom(t, &mech, 0);
	ir.len = 0;
	if (tok_is(t, ' ')) {
		tok_atom(t, &ir, 0);
	}
	if (!tok_end(t)) {
		imap_bad(s, "Syntax: AUTHENTICATE mechanism [initial-response]");
	} else if (!plaintext_ok(s)) {
		imap_done(s, "NO [PRIVACYREQUIRED] Use STARTTLS first");
	} else if (mech.len != 5 || strncasecmp(mech.p, "PLAIN", 5) != 0) {
		imap_done(s, "NO [CANNOT] Unsupported authentication mechanism");
	} else if (ir.len > 0) {
		auth_plain(s, ir.p, ir.len);   /* SASL-IR (RFC 4959) */
	} else {
		imap_line(s, "+ ");
		s->mode = IM_SASL;
	}
}

static void cmd_starttls(struct imap_session *s, struct imap_tok *t, int arg)
{
	struct tls *tl;

	(void)arg;
	if (!tok_end(t)) {
		imap_bad(s, "Syntax: STARTTLS");
	} else if (s->conn.tls != NULL || !starttls_offered(s)) {
		imap_bad(s, "STARTTLS is not offered here");
	} else if ((tl = tls_server_take()) == NULL) {
		imap_done(s, "NO [UNAVAILABLE] TLS not available, try again later");
	} else {
		imap_line(s, "%s OK Begin TLS negotiation now", s->tag);
		/* Nothing said before TLS counts after it (RFC 3501 6.2.1): the
		 * input is dropped, the command reader starts afresh. */
		conn_starttls(&s->conn, tl);
		s->reading = R_LINE;
		s->cmd_len = s->line_start = s->tail_len = 0;
		s->timeout_at = loop_now() + TLS_HANDSHAKE_MS;
	}
}

/* ---- commands of any state ----------------------------------------------- */

static void cmd_capability(struct imap_session *s, struct imap_tok *t, int arg)
{
	(void)arg;
	if (!tok_end(t)) {
		imap_bad(s, "Syntax: CAPABILITY");
		return;
	}
	imap_line(s, "* CAPABILITY %s", caps(s));
	imap_done(s, "OK CAPABILITY completed");
}

static void cmd_noop(struct imap_session *s, struct imap_tok *t, int arg)
{
	if (!tok_end(t)) {
		imap_bad(s, "Syntax error");
		return;
	}
	imap_done(s, "OK %s completed", arg ? "CHECK" : "NOOP");
}

static void cmd_logout(struct imap_session *s, struct imap_tok *t, int arg)
{
	(void)arg;
	if (!tok_end(t)) {
		imap_bad(s, "Syntax: LOGOUT");
		return;
	}
	imap_line(s, "* BYE Logging out");
	imap_done(s, "OK LOGOUT completed");
	s->end_why = "logout";
}

static void cmd_id(struct imap_session *s, struct imap_tok *t, int arg)
{
	(void)arg;
	/* RFC 2971: the client's list is read and not kept. */
	t->p = t->end;
	imap_line(s, "* ID (\"name\" \"picomail\")");
	imap_done(s, "OK ID completed");
}

static void cmd_enable(struct imap_session *s, struct imap_tok *t, int arg)
{
	(void)arg;
	t->p = t->end;
	imap_line(s, "* ENABLED");   /* nothing of what RFC 5161 enables is offered */
	imap_done(s, "OK ENABLE completed");
}

static void cmd_namespace(struct imap_session *s, struct imap_tok *t, int arg)
{
	(void)arg;
	if (!tok_end(t)) {
		imap_bad(s, "Syntax: NAMESPACE");
		return;
	}
	imap_line(s, "* NAMESPACE ((\"\" \".\")) NIL NIL");
	imap_done(s, "OK NAMESPACE completed");
}

/* ---- folders ------------------------------------------------------------- */

/* A folder name argument into out; 0, or -1 with BAD answered. */
static int folder_arg(struct imap_session *s, struct imap_tok *t, char *out)
{
	tok_sp(t);
	tok_cstring(t, out, FOLDER_NAME_MAX + 1);
	if (t->err) {
		imap_bad(s, "Syntax error in a folder name");
		return -1;
	}
	return 0;
}

static void unselect(struct imap_session *s)
{
	if (s->state == IS_SELECTED) {
		folder_close(&s->box->f);
		s->state = IS_AUTH;
	}
}

static void folder_wake(void *ctx)
{
	struct imap_session *s = ctx;

	if (s->mode == IM_IDLE && s->sync_at == 0) {
		s->sync_at = loop_now() + SYNC_DELAY_MS;
		arm(s);
	}
}

static void cmd_select(struct imap_session *s, struct imap_tok *t, int readonly)
{
	char name[FOLDER_NAME_MAX + 1];
	struct folder *f = &s->box->f;
	unsigned i;

	if (folder_arg(s, t, name) < 0) {
		return;
	}
	if (!tok_end(t)) {
		imap_bad(s, "Syntax: SELECT folder");
		return;
	}
	unselect(s);
	f->wake = folder_wake;
	f->wake_ctx = s;
	if (folder_open(f, s->user, name, readonly) < 0) {
		if (errno == ENOENT || errno == EINVAL) {
			imap_done(s, "NO [NONEXISTENT] No such folder");
		} else if (errno == EFBIG) {
			imap_done(s, "NO [LIMIT] The folder has more than %u messages (imap_max_messages)",
			          f->max);
		} else {
			done_errno(s, errno, "SELECT");
		}
		folder_close(f);
		return;
	}
	s->state = IS_SELECTED;
	s->box->exists = f->n;
	s->box->recent = f->recent;
	imap_line(s, "* FLAGS (" PERMANENT ")");
	imap_line(s, "* OK [PERMANENTFLAGS (%s)] Keywords are not kept", readonly ? "" : PERMANENT);
	imap_line(s, "* %u EXISTS", f->n);
	imap_line(s, "* %u RECENT", f->recent);
	for (i = 0; i < f->n && (f->msgs[i].flags & FL_SEEN); i++) {
	}
	if (i < f->n) {
		imap_line(s, "* OK [UNSEEN %u] First unseen", i + 1);
	}
	imap_line(s, "* OK [UIDVALIDITY %" PRIu32 "] UIDs valid", f->validity);
	imap_line(s, "* OK [UIDNEXT %" PRIu32 "] Predicted next UID", f->uidnext);
	imap_done(s, "OK [READ-%s] %s completed", readonly ? "ONLY" : "WRITE",
	          readonly ? "EXAMINE" : "SELECT");
}

/* The NO for a failed folder operation. */
static void folder_refused(struct imap_session *s, const char *what)
{
	switch (errno) {
	case EEXIST:
		imap_done(s, "NO [ALREADYEXISTS] The folder exists");
		break;
	case ENOENT:
		imap_done(s, "NO [NONEXISTENT] No such folder");
		break;
	case EINVAL:
		imap_done(s, "NO [CANNOT] Not a name for a folder (no '/', '\\\\', '*', '%%', "
		          "empty parts or parts starting with '.')");
		break;
	case EPERM:
		imap_done(s, "NO [CANNOT] Not for INBOX");
		break;
	case ENOTEMPTY:
		imap_done(s, "NO [INUSE] The folder has folders inside: those first");
		break;
	default:
		done_errno(s, errno, what);
	}
}

/* CREATE, DELETE, SUBSCRIBE, UNSUBSCRIBE (arg says which). */
static void cmd_folder(struct imap_session *s, struct imap_tok *t, int arg)
{
	static const char *const names[] = { "CREATE", "DELETE", "SUBSCRIBE", "UNSUBSCRIBE" };
	char name[FOLDER_NAME_MAX + 1];
	size_t len;
	int r;

	if (folder_arg(s, t, name) < 0) {
		return;
	}
	if (!tok_end(t)) {
		imap_bad(s, "Syntax: one folder name");
		return;
	}
	len = strlen(name);
	switch (arg) {
	case 0:
		/* "Foo." says Foo will hold folders (RFC 3501 6.3.3). */
		if (len > 1 && name[len - 1] == '.') {
			name[len - 1] = '\0';
		}
		r = folder_create(s->user, name);
		break;
	case 1:
		if (s->state == IS_SELECTED && strcasecmp(s->box->f.name, name) == 0) {
			unselect(s);
		}
		r = folder_delete(s->user, name);
		break;
	default:
		if (strcasecmp(name, "INBOX") != 0 && !folder_name_ok(name, len)) {
			errno = EINVAL;
			r = -1;
		} else {
			r = folder_subscribe(s->user, strcasecmp(name, "INBOX") == 0 ? "INBOX" : name,
			                     arg == 2);
		}
	}
	if (r < 0) {
		folder_refused(s, names[arg]);
	} else {
		imap_done(s, "OK %s completed", names[arg]);
	}
}

static void cmd_rename(struct imap_session *s, struct imap_tok *t, int arg)
{
	char from[FOLDER_NAME_MAX + 1], to[FOLDER_NAME_MAX + 1];

	(void)arg;
	if (folder_arg(s, t, from) < 0 || folder_arg(s, t, to) < 0) {
		return;
	}
	if (!tok_end(t)) {
		imap_bad(s, "Syntax: RENAME from to");
	} else if (folder_rename(s->user, from, to) < 0) {
		folder_refused(s, "RENAME");
	} else {
		imap_done(s, "OK RENAME completed");
	}
}

/* LIST's wildcards (RFC 3501 6.3.8): '*' matches anything, '%' anything
 * but the delimiter.  One row of the table of prefixes: time of pattern
 * times name, no recursion however many wildcards a pattern holds. */
static int list_match(const char *pat, const char *name, int ci)
{
	unsigned char row[FOLDER_NAME_MAX + 2];
	size_t n = strlen(name), j;
	const char *p;

	if (n > FOLDER_NAME_MAX) {
		return 0;
	}
	memset(row, 0, n + 1);
	row[0] = 1;
	for (p = pat; *p != '\0'; p++) {
		if (*p == '*' || *p == '%') {
			for (j = 1; j <= n; j++) {
				row[j] = row[j] || (row[j - 1] && (*p == '*' || name[j - 1] != '.'));
			}
			continue;
		}
		for (j = n; j > 0; j--) {
			row[j] = row[j - 1] && (name[j - 1] == *p ||
			                        (ci && (name[j - 1] | 0x20) == (*p | 0x20)));
		}
		row[0] = 0;
	}
	return row[n];
}

struct list_ctx {
	struct imap_session *s;
	unsigned line;           /* lines generated this round */
	int full;
};

static void list_one(const char *name, void *ctx)
{
	struct list_ctx *l = ctx;
	struct imap_session *s = l->s;
	struct imap_box *b = s->box;
	const char *use = folder_special_use(name);
	struct out o;

	if (l->full || !list_match(b->u.list.pat, name, strcmp(name, "INBOX") == 0) ||
	    (b->u.list.special && use == NULL) ||
	    l->line++ < b->u.list.sent) {
		return;
	}
	if (conn_room(&s->conn) < IMAP_ROOM) {
		l->full = 1;
		return;
	}
	conn_printf(&s->conn, "* %s (%s) \".\" ", b->u.list.lsub ? "LSUB" : "LIST",
	            use != NULL && !b->u.list.lsub ? use : "");
	out_start(&o, &s->conn, 0);
	out_string(&o, name, strlen(name));
	conn_put(&s->conn, "\r\n", 2);
	b->u.list.sent++;
}

/* Lines are the unit of progress: a folder made meanwhile may be missed
 * or said twice, never cut. */
static void list_job(struct imap_session *s)
{
	struct imap_box *b = s->box;
	struct list_ctx l = { s, 0, 0 };
	int r;

	if (b->u.list.lsub) {
		r = folder_each_subscribed(s->user, list_one, &l);
	} else {
		list_one("INBOX", &l);   /* INBOX in any case (RFC 3501 5.1) */
		r = folder_each(s->user, list_one, &l);
	}
	if (l.full) {
		return;
	}
	if (r < 0) {
		done_errno(s, errno, b->u.list.lsub ? "LSUB" : "LIST");
	} else {
		imap_done(s, "OK %s completed", b->u.list.lsub ? "LSUB" : "LIST");
	}
}

static int job_list(struct imap_session *s)
{
	list_job(s);
	return 0;
}

static void cmd_list(struct imap_session *s, struct imap_tok *t, int lsub)
{
	struct imap_box *b = s->box;
	struct imap_str opt, pat;
	size_t rl;

	memset(&b->u.list, 0, sizeof b->u.list);
	b->u.list.lsub = lsub;
	tok_sp(t);
	/* LIST (SPECIAL-USE) "" "*" (RFC 6154 5.1): only those folders. */
	if (!lsub && tok_is(t, '(')) {
		while (!t->err && !tok_is(t, ')')) {
			(void)tok_is(t, ' ');
			tok_atom(t, &opt, 0);
			if (opt.len == 11 && strncasecmp(opt.p, "SPECIAL-USE", 11) == 0) {
				b->u.list.special = 1;
			}
		}
		tok_sp(t);
	}
	tok_cstring(t, b->u.list.ref, sizeof b->u.list.ref);
	tok_sp(t);
	if (t->p < t->end && (*t->p == '"' || *t->p == '{')) {
		tok_string(t, &pat);
	} else {
		pat.p = t->p;
		while (t->p < t->end && *t->p != ' ' && (unsigned char)*t->p > 0x20 && *t->p != '(' &&
		       *t->p != ')' && *t->p != '{' && *t->p != '"') {
			t->p++;
		}
		pat.len = (size_t)(t->p - pat.p);
	}
	if (!lsub && tok_is(t, ' ')) {
		t->p = t->end;   /* RETURN (...): nothing of LIST-EXTENDED is offered */
	}
	rl = strlen(b->u.list.ref);
	if (!tok_end(t) || pat.len + rl >= sizeof b->u.list.pat || memchr(pat.p, 0, pat.len)) {
		imap_bad(s, "Syntax: LIST reference pattern");
		return;
	}
	if (pat.len == 0 && !lsub) {
		/* The delimiter and the root (RFC 3501 6.3.8). */
		imap_line(s, "* LIST (\\Noselect) \".\" \"\"");
		imap_done(s, "OK LIST completed");
		return;
	}
	memcpy(b->u.list.pat, b->u.list.ref, rl);
	memcpy(b->u.list.pat + rl, pat.p, pat.len);
	b->u.list.pat[rl + pat.len] = '\0';
	s->job = job_list;
	s->mode = IM_JOB;
}

static void cmd_status(struct imap_session *s, struct imap_tok *t, int arg)
{
	static const char *const items[] = { "MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY",
	                                     "UNSEEN" };
	char name[FOLDER_NAME_MAX + 1];
	struct folder_status st;
	struct imap_str item;
	uint32_t vals[5];
	unsigned i, n = 0, want[8];
	struct out o;

	(void)arg;
	if (folder_arg(s, t, name) < 0) {
		return;
	}
	tok_sp(t);
	if (!tok_is(t, '(')) {
		t->err = 1;
	}
	while (!t->err && !tok_is(t, ')')) {
		if (n > 0) {
			tok_sp(t);
		}
		tok_atom(t, &item, 0);
		for (i = 0; i < 5 && !t->err; i++) {
			if (strlen(items[i]) == item.len && strncasecmp(items[i], item.p, item.len) == 0) {
				break;
			}
		}
		if (i == 5 || n == 8) {
			t->err = 1;
			break;
		}
		want[n++] = i;
	}
	if (!tok_end(t) || n == 0) {
		imap_bad(s, "Syntax: STATUS folder (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)");
		return;
	}
	if (folder_status(s->user, name, &st) < 0) {
		folder_refused(s, "STATUS");
		return;
	}
	vals[0] = st.messages;
	vals[1] = st.recent;
	vals[2] = st.uidnext;
	vals[3] = st.validity;
	vals[4] = st.unseen;
	conn_put(&s->conn, "* STATUS ", 9);
	out_start(&o, &s->conn, 0);
	out_string(&o, strcasecmp(name, "INBOX") == 0 ? "INBOX" : name, strlen(name));
	for (i = 0; i < n; i++) {
		conn_printf(&s->conn, "%s%s %" PRIu32, i == 0 ? " (" : " ", items[want[i]], vals[want[i]]);
	}
	conn_put(&s->conn, ")\r\n", 3);
	imap_done(s, "OK STATUS completed");
}

/* ---- selected state ------------------------------------------------------ */

/* Removes the messages marked \Deleted (and MS_MARK too when marked);
 * the tagged answer unless quietly (CLOSE). */
static int expunge(struct imap_session *s, int marked)
{
	struct folder *f = &s->box->f;
	unsigned i, n = 0;
	int e = 0;

	for (i = 0; i < f->n && e == 0; i++) {
		const struct fmsg *m = &f->msgs[i];

		if ((m->flags & FL_DELETED) && !(m->state & MS_GONE) && (!marked || (m->state & MS_MARK))) {
			e = folder_remove(f, i);
			n += e == 0;
		}
	}
	if (n > 0) {
		int c = folder_commit(f);

		e = e != 0 ? e : c;
	}
	s->expunged += n;
	return e;
}

static void cmd_expunge(struct imap_session *s, struct imap_tok *t, int uid)
{
	struct imap_str set;
	int e;

	if (uid) {
		tok_sp(t);
		tok_seqset(t, &set);
	}
	if (!tok_end(t)) {
		imap_bad(s, uid ? "Syntax: UID EXPUNGE set" : "Syntax: EXPUNGE");
		return;
	}
	if (s->box->f.readonly) {
		imap_done(s, "NO [READ-ONLY] The folder is read-only");
		return;
	}
	if (uid) {
		(void)imap_mark(s, &set, 1);
	}
	e = expunge(s, uid);
	if (e != 0) {
		done_errno(s, e, "EXPUNGE");
	} else {
		imap_done(s, "OK EXPUNGE completed");
	}
}

/* CLOSE (expunging quietly) and UNSELECT. */
static void cmd_close(struct imap_session *s, struct imap_tok *t, int close)
{
	int e = 0;

	if (!tok_end(t)) {
		imap_bad(s, "Syntax error");
		return;
	}
	if (close && !s->box->f.readonly) {
		e = expunge(s, 0);
	}
	if (e != 0) {
		done_errno(s, e, "CLOSE");
		return;
	}
	unselect(s);
	imap_done(s, "OK %s completed", close ? "CLOSE" : "UNSELECT");
}

static int job_store(struct imap_session *s)
{
	struct imap_box *b = s->box;
	struct folder *f = &b->f;
	struct fmsg *m;
	unsigned flags;
	int e;

	for (; b->u.store.cursor < f->n; b->u.store.cursor++) {
		m = &f->msgs[b->u.store.cursor];
		if (!(m->state & MS_MARK) || (m->state & MS_GONE)) {
			continue;
		}
		if (conn_room(&s->conn) < IMAP_ROOM) {
			return 0;
		}
		flags = b->u.store.how > 0 ? m->flags | b->u.store.flags :
		        b->u.store.how < 0 ? m->flags & ~b->u.store.flags :
		        (m->flags & FL_RECENT) | b->u.store.flags;
		e = folder_set_flags(f, b->u.store.cursor, flags);
		if (e == ENOENT) {
			continue;   /* expunged by another: reported later */
		}
		if (e != 0) {
			b->u.store.err = e;
			break;
		}
		m->state &= (uint8_t)~MS_CHANGED;
		if (!b->u.store.silent) {
			conn_printf(&s->conn, "* %u FETCH (FLAGS ", b->u.store.cursor + 1);
			put_flags(s, m->flags);
			if (b->u.store.uid) {
				conn_printf(&s->conn, " UID %" PRIu32, m->uid);
			}
			conn_put(&s->conn, ")\r\n", 3);
		}
	}
	e = folder_commit(f);
	if (b->u.store.err != 0 || e != 0) {
		done_errno(s, b->u.store.err != 0 ? b->u.store.err : e, "STORE");
	} else {
		imap_done(s, "OK STORE completed");
	}
	return 1;
}

static void cmd_store(struct imap_session *s, struct imap_tok *t, int uid)
{
	struct imap_box *b = s->box;
	struct imap_str set, what;
	int how = 0;

	tok_sp(t);
	tok_seqset(t, &set);
	tok_sp(t);
	how = tok_is(t, '+') ? 1 : tok_is(t, '-') ? -1 : 0;
	tok_atom(t, &what, 0);
	tok_sp(t);
	memset(&b->u.store, 0, sizeof b->u.store);
	b->u.store.flags = tok_flags(t, 1);
	b->u.store.how = how;
	b->u.store.uid = uid;
	if (what.len == 12 && strncasecmp(what.p, "FLAGS.SILENT", 12) == 0) {
		b->u.store.silent = 1;
	} else if (what.len != 5 || strncasecmp(what.p, "FLAGS", 5) != 0) {
		t->err = 1;
	}
	if (!tok_end(t) || imap_set_bad(s, &set, uid)) {
		imap_bad(s, "Syntax: STORE set [+-]FLAGS[.SILENT] (flags)");
		return;
	}
	if (b->f.readonly) {
		imap_done(s, "NO [READ-ONLY] The folder is read-only");
		return;
	}
	(void)imap_mark(s, &set, uid);
	s->quiet = !uid;
	s->job = job_store;
	s->mode = IM_JOB;
}

/* "a:b,c" of n UIDs in ascending order, into out (COPYUID); 0, or -1
 * when it does not fit (the code is then left out: RFC 4315 lets a
 * server). */
static int uid_ranges(char *out, size_t len, const uint32_t *uids, unsigned n)
{
	size_t o = 0;
	unsigned i, j;
	int w;

	for (i = 0; i < n; i = j) {
		for (j = i + 1; j < n && uids[j] == uids[j - 1] + 1; j++) {
		}
		w = snprintf(out + o, len - o, j - i > 1 ? "%s%u:%u" : "%s%u", o ? "," : "", uids[i],
		             uids[j - 1]);
		if (w < 0 || (size_t)w >= len - o) {
			return -1;
		}
		o += (size_t)w;
	}
	return 0;
}

#define COPYUID_MAX 256

static void cmd_copy(struct imap_session *s, struct imap_tok *t, int arg)
{
	static uint32_t srcs[COPYUID_MAX], dsts[COPYUID_MAX];
	char name[FOLDER_NAME_MAX + 1], src[500], dst[500];
	const int uid = arg & 1, move = arg & 2;
	const char *what = move ? "MOVE" : "COPY";
	struct folder *f = &s->box->f;
	const struct users_table *u = inforce_users();
	struct folder_dest d;
	struct imap_str set;
	uint64_t bytes = 0;
	unsigned i, k, n = 0;
	uint32_t got, size;
	int e = 0;

	tok_sp(t);
	tok_seqset(t, &set);
	if (folder_arg(s, t, name) < 0) {
		return;
	}
	if (!tok_end(t) || imap_set_bad(s, &set, uid)) {
		imap_bad(s, move ? "Syntax: MOVE set folder" : "Syntax: COPY set folder");
		return;
	}
	if (move && f->readonly) {
		imap_done(s, "NO [READ-ONLY] The folder is read-only");
		return;
	}
	k = imap_mark(s, &set, uid);
	for (i = 0; i < f->n && !move; i++) {
		if ((f->msgs[i].state & (MS_MARK | MS_GONE)) == MS_MARK &&
		    (size = folder_size(f, i)) != FOLDER_SIZE_UNKNOWN) {
			bytes += size;
		}
	}
	if (!move && quota_exceeded(cf()->maildir_root, s->user,
	                            users_quota(u, users_find(u, s->user), cf()->quota), bytes)) {
		imap_done(s, "NO [OVERQUOTA] The copies would be over the quota");
		return;
	}
	if (folder_dest_open(&d, s->user, name, k) < 0) {
		if (errno == ENOENT || errno == EINVAL) {
			imap_done(s, "NO [TRYCREATE] No such folder");
		} else {
			done_errno(s, errno, what);
		}
		return;
	}
	for (i = 0; i < f->n && e == 0; i++) {
		if ((f->msgs[i].state & (MS_MARK | MS_GONE)) != MS_MARK) {
			continue;
		}
		e = folder_put(f, i, &d, move, &got);
		if (e == ENOENT && (f->msgs[i].state & MS_GONE)) {
			e = 0;   /* expunged meanwhile: reported later */
		} else if (e == 0) {
			if (n < COPYUID_MAX) {
				srcs[n] = f->msgs[i].uid;
				dsts[n] = got;
			}
			n++;
		}
	}
	if (e == 0 && n > 0) {
		e = folder_dest_commit(&d);
	}
	if (e == 0 && move && n > 0) {
		e = folder_commit(f);
	}
	if (e != 0) {
		/* A COPY that fails leaves the destination as it was (RFC 3501
		 * 6.4.7); a MOVE moved what it could, each message once. */
		if (!move) {
			folder_dest_undo(&d);
		}
		done_errno(s, e, what);
		return;
	}
	if (n == 0 || n > COPYUID_MAX || uid_ranges(src, sizeof src, srcs, n) < 0 ||
	    uid_ranges(dst, sizeof dst, dsts, n) < 0) {
		imap_done(s, "OK %s completed", what);
	} else if (move) {
		/* RFC 6851 4.3: COPYUID before the EXPUNGEs. */
		imap_line(s, "* OK [COPYUID %" PRIu32 " %s %s] Moved", d.validity, src, dst);
		imap_done(s, "OK MOVE completed");
	} else {
		imap_done(s, "OK [COPYUID %" PRIu32 " %s %s] COPY completed", d.validity, src, dst);
	}
}

/* ---- APPEND: the message literal streams to a file ---------------------- */

/* APPEND's arguments before its message literal, parsed from the start
 * of the command: 1 when the literal whose header starts at hdr is the
 * message (tag APPEND folder [flags] [date-time] {n}). */
static int append_args(struct imap_session *s, size_t hdr)
{
	struct imap_box *b = s->box;
	struct imap_tok t;
	struct imap_str w;

	tok_init(&t, s->cmd, hdr);
	tok_atom(&t, &w, 0);   /* the tag */
	tok_sp(&t);
	tok_atom(&t, &w, 0);
	if (t.err || w.len != 6 || strncasecmp(w.p, "APPEND", 6) != 0 || b == NULL) {
		return 0;
	}
	tok_sp(&t);
	tok_cstring(&t, b->append_to, sizeof b->append_to);
	tok_sp(&t);
	b->append_flags = 0;
	b->append_date = 0;
	if (t.p < t.end && *t.p == '(') {
		b->append_flags = tok_flags(&t, 0);
		tok_sp(&t);
	}
	if (t.p < t.end && *t.p == '"') {
		b->append_date = tok_datetime(&t);
		tok_sp(&t);
	}
	return !t.err && t.p == t.end;
}

/* The message literal of n octets is coming: NULL when it is taken, else
 * the refusal for the tagged answer. */
static const char *append_begin(struct imap_session *s, uint32_t n)
{
	struct imap_box *b = s->box;
	const struct users_table *u = inforce_users();
	char dir[FOLDER_PATH_MAX], unique[MAILDIR_NAME_MAX];
	struct stat st;

	if (folder_tmp_dir(dir, sizeof dir, s->user, b->append_to) < 0 || stat(dir, &st) < 0) {
		return "NO [TRYCREATE] No such folder";
	}
	if (n == 0) {
		return "NO [CANNOT] An empty message";
	}
	if (n > cf()->max_message_size) {
		return "NO [TOOBIG] The message is larger than max_message_size";
	}
	if (quota_exceeded(cf()->maildir_root, s->user,
	                   users_quota(u, users_find(u, s->user), cf()->quota), n)) {
		return "NO [OVERQUOTA] The message would be over the quota";
	}
	maildir_unique_name(unique, sizeof unique);
	if (maildir_begin_named(&b->msg, dir, unique) < 0) {
		int e = errno;

		log_msg(LOG_ERR, "session=%08" PRIx32 " %s APPEND: %s", s->id, s->user, strerror(e));
		return e == ENOSPC || e == EDQUOT ? "NO [OVERQUOTA] APPEND: no room left" :
		       "NO [UNAVAILABLE] APPEND failed, try again later";
	}
	b->append_cr = b->append_nul = b->append_last = 0;
	b->append_left = n;
	return NULL;
}

/* Message octets: CR LF, a bare CR and a run of CRs before LF each end a
 * line (msgwire.h's rule) and are stored as LF, as SMTP's messages are. */
static void append_data(struct imap_session *s, const unsigned char *in, size_t n)
{
	struct imap_box *b = s->box;
	unsigned char out[1024];
	size_t i, o = 0;

	for (i = 0; i < n; i++) {
		if (o + 2 > sizeof out) {
			maildir_write(&b->msg, out, o);
			o = 0;
		}
		if (in[i] == '\0') {
			b->append_nul = 1;
		} else if (in[i] == '\r') {
			b->append_cr = 1;
		} else {
			if (b->append_cr && in[i] != '\n') {
				out[o++] = '\n';
			}
			b->append_cr = 0;
			out[o++] = in[i];
		}
	}
	if (b->append_left == n && (b->append_cr || (o > 0 ? out[o - 1] : b->append_last) != '\n')) {
		out[o++] = '\n';   /* the last line's end: a file never stops mid-line */
	}
	if (o > 0) {
		b->append_last = out[o - 1];
	}
	maildir_write(&b->msg, out, o);
	b->append_left -= (uint32_t)n;
}

/* The whole command has been read after the message: make it durable,
 * give it its UID, answer. */
static void append_finish(struct imap_session *s)
{
	struct imap_box *b = s->box;
	struct maildir_msg *m = &b->msg;
	struct folder_dest d;
	struct timespec ts[2];
	uint32_t uid;
	int e;

	if (s->cmd_len != s->line_start) {
		maildir_abort(m);
		imap_bad(s, "One message per APPEND (MULTIAPPEND is not offered)");
		return;
	}
	if (b->append_nul) {
		maildir_abort(m);
		imap_done(s, "NO [PARSE] NUL in the message");
		return;
	}
	if (b->append_date != 0 && maildir_flush(m) == 0) {
		ts[0].tv_sec = ts[1].tv_sec = b->append_date;
		ts[0].tv_nsec = ts[1].tv_nsec = 0;
		(void)futimens(m->fd, ts);   /* INTERNALDATE is the file's mtime */
	}
	e = maildir_finish_file(m);
	if (e == 0 && folder_dest_open(&d, s->user, b->append_to, 1) < 0) {
		e = errno ? errno : EIO;
	}
	if (e == 0) {
		e = folder_put_file(&d, m->tmp, m->name, m->size, m->size + m->lines, b->append_flags,
		                    &uid);
		m->tmp[0] = '\0';
	}
	if (e == 0 && (e = folder_dest_commit(&d)) != 0) {
		/* Not known durable: taken back, so that a retry does not make
		 * two (as SMTP's commit does). */
		folder_dest_undo(&d);
	}
	if (e != 0) {
		maildir_abort(m);
		done_errno(s, e, "APPEND");
		return;
	}
	s->appended++;
	imap_done(s, "OK [APPENDUID %" PRIu32 " %" PRIu32 "] APPEND completed", d.validity, uid);
}

static void cmd_append(struct imap_session *s, struct imap_tok *t, int arg)
{
	(void)t;
	(void)arg;
	if (s->reading == R_APPEND) {
		append_finish(s);
	} else {
		imap_bad(s, "Syntax: APPEND folder [(flags)] [date-time] {size}");
	}
}

/* ---- IDLE (RFC 2177) ----------------------------------------------------- */

static void cmd_idle(struct imap_session *s, struct imap_tok *t, int arg)
{
	(void)arg;
	if (!tok_end(t)) {
		imap_bad(s, "Syntax: IDLE");
		return;
	}
	imap_line(s, "+ idling");
	s->mode = IM_IDLE;
	s->keepalive_at = loop_now() + KEEPALIVE_MS;
	s->sync_at = watching ? 0 : loop_now() + POLL_SYNC_MS;
	if (s->box != NULL) {
		s->box->upd = s->box->f.n;
		s->box->upd_flags = 0;
	}
}

/* A line while idling: DONE ends it. */
static void idle_line(struct imap_session *s)
{
	s->sync_at = 0;
	if (s->cmd_len == 4 && strncasecmp(s->cmd, "DONE", 4) == 0) {
		imap_done(s, "OK IDLE terminated");
	} else {
		imap_bad(s, "Expected DONE");
	}
}

/* ---- dispatch ------------------------------------------------------------ */

struct imap_cmd {
	const char *name;
	unsigned states;
	void (*run)(struct imap_session *s, struct imap_tok *t, int arg);
	int arg;
};

#define ANY (IS_NOAUTH | IS_AUTH | IS_SELECTED)
#define AUTHED (IS_AUTH | IS_SELECTED)

static const struct imap_cmd commands[] = {
	{ "CAPABILITY", ANY, cmd_capability, 0 },
	{ "NOOP", ANY, cmd_noop, 0 },
	{ "LOGOUT", ANY, cmd_logout, 0 },
	{ "ID", ANY, cmd_id, 0 },
	{ "STARTTLS", IS_NOAUTH, cmd_starttls, 0 },
	{ "LOGIN", IS_NOAUTH, cmd_login, 0 },
	{ "AUTHENTICATE", IS_NOAUTH, cmd_authenticate, 0 },
	{ "ENABLE", AUTHED, cmd_enable, 0 },
	{ "NAMESPACE", AUTHED, cmd_namespace, 0 },
	{ "SELECT", AUTHED, cmd_select, 0 },
	{ "EXAMINE", AUTHED, cmd_select, 1 },
	{ "CREATE", AUTHED, cmd_folder, 0 },
	{ "DELETE", AUTHED, cmd_folder, 1 },
	{ "SUBSCRIBE", AUTHED, cmd_folder, 2 },
	{ "UNSUBSCRIBE", AUTHED, cmd_folder, 3 },
	{ "RENAME", AUTHED, cmd_rename, 0 },
	{ "LIST", AUTHED, cmd_list, 0 },
	{ "LSUB", AUTHED, cmd_list, 1 },
	{ "STATUS", AUTHED, cmd_status, 0 },
	{ "APPEND", AUTHED, cmd_append, 0 },
	{ "IDLE", AUTHED, cmd_idle, 0 },
	{ "CHECK", IS_SELECTED, cmd_noop, 1 },
	{ "CLOSE", IS_SELECTED, cmd_close, 1 },
	{ "UNSELECT", IS_SELECTED, cmd_close, 0 },
	{ "EXPUNGE", IS_SELECTED, cmd_expunge, 0 },
	{ "SEARCH", IS_SELECTED, search_start, 0 },
	{ "FETCH", IS_SELECTED, fetch_start, 0 },
	{ "STORE", IS_SELECTED, cmd_store, 0 },
	{ "COPY", IS_SELECTED, cmd_copy, 0 },
	{ "MOVE", IS_SELECTED, cmd_copy, 2 },
};

/* The commands UID takes (RFC 3501 6.4.8, RFC 4315, RFC 6851). */
static const char *const uid_commands[] = { "FETCH", "SEARCH", "STORE", "COPY", "MOVE", "EXPUNGE" };

static const struct imap_cmd *find(const struct imap_str *name)
{
	unsigned i;

	for (i = 0; i < sizeof commands / sizeof commands[0]; i++) {
		if (strlen(commands[i].name) == name->len &&
		    strncasecmp(commands[i].name, name->p, name->len) == 0) {
			return &commands[i];
		}
	}
	return NULL;
}

/* The tag at the start of the command, into s->tag ("*" when there is
 * none to answer with); 0 when it is a valid tag. */
static int take_tag(struct imap_session *s)
{
	size_t n = 0;

	while (n < s->cmd_len && n < IMAP_TAG_MAX && s->cmd[n] != ' ' &&
	       (unsigned char)s->cmd[n] > 0x20 && (unsigned char)s->cmd[n] < 0x7f &&
	       strchr("(){%*\"\\+", s->cmd[n]) == NULL) {
		n++;
	}
	if (n == 0 || (n < s->cmd_len && s->cmd[n] != ' ')) {
		memcpy(s->tag, "*", 2);
		return -1;
	}
	memcpy(s->tag, s->cmd, n);
	s->tag[n] = '\0';
	return 0;
}

static void dispatch(struct imap_session *s)
{
	const struct imap_cmd *c;
	struct imap_str name;
	struct imap_tok t;
	int arg;

	s->quiet = 0;
	if (take_tag(s) < 0) {
		imap_bad(s, "Missing or bad tag");
		return;
	}
	tok_init(&t, s->cmd + strlen(s->tag), s->cmd_len - strlen(s->tag));
	tok_sp(&t);
	tok_atom(&t, &name, 0);
	c = t.err ? NULL : find(&name);
	if (c == NULL && !t.err && name.len == 3 && strncasecmp(name.p, "UID", 3) == 0) {
		unsigned i;

		tok_sp(&t);
		tok_atom(&t, &name, 0);
		for (i = 0; i < sizeof uid_commands / sizeof uid_commands[0] && !t.err; i++) {
			if (strlen(uid_commands[i]) == name.len &&
			    strncasecmp(uid_commands[i], name.p, name.len) == 0) {
				break;
			}
		}
		c = t.err || i == sizeof uid_commands / sizeof uid_commands[0] ? NULL : find(&name);
		if (c == NULL) {
			imap_bad(s, "Unknown UID command");
			return;
		}
		arg = c->arg | 1;
	} else if (c == NULL) {
		imap_bad(s, "Unknown command");
		return;
	} else {
		arg = c->arg;
	}
	if (!(c->states & s->state)) {
		imap_bad(s, s->state == IS_NOAUTH ? "Log in first" : s->state == IS_AUTH ?
		            "Select a folder first" : "Not in this state");
		return;
	}
	sync_folder(s);
	if (s->mode == IM_LOGOUT) {
		return;
	}
	c->run(s, &t, arg);
}

/* ---- reading commands ---------------------------------------------------- */

/* The literal header "{n}" or "{n+}" ending the line segment (in tail):
 * its length, with *n and *sync; 0 if the line ends otherwise. */
static size_t literal_header(const struct imap_session *s, uint32_t *n, int *sync)
{
	const char *start = s->tail, *end = s->tail + s->tail_len, *p, *digits, *brace;
	uint64_t v = 0;

	if (end > start && end[-1] == '\r') {
		end--;
	}
	if (end == start || end[-1] != '}') {
		return 0;
	}
	p = end - 1;
	*sync = !(p > start && p[-1] == '+');
	p -= !*sync;
	digits = p;
	while (p > start && p[-1] >= '0' && p[-1] <= '9') {
		p--;
	}
	if (p == digits || digits - p > 10 || p == start || p[-1] != '{') {
		return 0;
	}
	brace = p - 1;
	for (; p < digits; p++) {
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (v > 0xffffffffu) {
		return 0;
	}
	*n = (uint32_t)v;
	return (size_t)(end - brace);
}

/* Answers a command refused while it was read, and forgets it. */
static void refuse_now(struct imap_session *s, const char *reply)
{
	(void)take_tag(s);
	if (reply[0] == 'B') {
		s->errors++;
	}
	imap_line(s, "%s %s", s->tag, reply);
	s->reading = R_LINE;
	s->cmd_len = s->line_start = s->tail_len = s->lit_left = 0;
	s->skip_reply = NULL;
	if (s->errors >= IMAP_ERRORS_MAX) {
		imap_line(s, "* BYE Too many errors, closing");
		s->end_why = "errors";
		s->mode = IM_LOGOUT;
	}
}

static void keep_tail(struct imap_session *s, const unsigned char *p, size_t n)
{
	if (n >= sizeof s->tail) {
		memcpy(s->tail, p + n - sizeof s->tail, sizeof s->tail);
		s->tail_len = sizeof s->tail;
		return;
	}
	if (s->tail_len + n > sizeof s->tail) {
		size_t drop = s->tail_len + n - sizeof s->tail;

		memmove(s->tail, s->tail + drop, s->tail_len - drop);
		s->tail_len -= drop;
	}
	memcpy(s->tail + s->tail_len, p, n);
	s->tail_len += n;
}

/* A line segment ended with a literal header: decides where its octets go. */
static void literal_begin(struct imap_session *s, uint32_t n, int sync, size_t hlen)
{
	size_t cap = s->state == IS_NOAUTH ? IMAP_PREAUTH_MAX : IMAP_CMD_MAX;
	const char *why;

	if (s->reading != R_SKIPLINE && append_args(s, s->cmd_len - hlen)) {
		/* APPEND's message: to a file, not into the command. */
		why = append_begin(s, n);
		if (why != NULL) {
			if (sync) {
				refuse_now(s, why);   /* the client sends nothing more of it */
				return;
			}
			s->skip_reply = why;
			s->reading = R_SKIPLIT;   /* LITERAL+: read and dropped */
			s->lit_left = n;
			return;
		}
		s->reading = R_APPEND;
	} else if (s->reading == R_SKIPLINE || s->cmd_len + 2 + n > cap) {
		why = s->reading == R_SKIPLINE ? s->skip_reply : "BAD Literal too large";
		if (sync) {
			refuse_now(s, why);
			return;
		}
		s->skip_reply = why;
		s->reading = R_SKIPLIT;
		s->lit_left = n;
		return;
	} else {
		s->cmd[s->cmd_len++] = '\r';
		s->cmd[s->cmd_len++] = '\n';
		s->reading = R_LIT;
	}
	s->lit_left = n;
	if (sync) {
		imap_line(s, "+ Ready for literal data");
	}
}

/* Reads what is buffered into the command.  1 when a whole command is in
 * s->cmd, 0 when more input is needed. */
static int assemble(struct imap_session *s)
{
	struct conn *c = &s->conn;
	size_t cap = s->state == IS_NOAUTH ? IMAP_PREAUTH_MAX : IMAP_CMD_MAX;
	unsigned char *in, *lf;
	size_t avail, n, hlen;
	uint32_t lit;
	int sync;

	for (;;) {
		in = c->in + c->in_off;
		avail = c->in_len - c->in_off;
		if (avail == 0) {
			return 0;
		}
		if (s->lit_left > 0) {
			n = avail < s->lit_left ? avail : s->lit_left;
			if (s->reading == R_LIT) {
				memcpy(s->cmd + s->cmd_len, in, n);
				s->cmd_len += n;
			} else if (s->reading == R_APPEND) {
				append_data(s, in, n);
			}
			c->in_off += n;
			s->lit_left -= (uint32_t)n;
			if (s->lit_left == 0) {
				/* The line goes on after the literal (APPEND's too). */
				s->line_start = s->cmd_len;
				s->tail_len = 0;
				s->reading = s->reading == R_LIT ? R_LINE :
				             s->reading == R_SKIPLIT ? R_SKIPLINE : s->reading;
			}
			continue;
		}
		lf = memchr(in, '\n', avail);
		n = lf != NULL ? (size_t)(lf - in) : avail;
		keep_tail(s, in, n);
		if (s->reading != R_SKIPLINE) {
			/* What fits is kept, for the tag of the answer. */
			size_t keep = s->cmd_len + n + 2 > cap ? cap - 2 - s->cmd_len : n;

			memcpy(s->cmd + s->cmd_len, in, keep);
			s->cmd_len += keep;
			if (keep < n) {
				s->skip_reply = "BAD Command line too long";
				if (s->reading == R_APPEND) {
					maildir_abort(&s->box->msg);
				}
				s->reading = R_SKIPLINE;
			}
		}
		c->in_off += n + (lf != NULL);
		if (lf == NULL) {
			return 0;
		}
		if (s->reading != R_SKIPLINE && s->cmd_len > s->line_start &&
		    s->cmd[s->cmd_len - 1] == '\r') {
			s->cmd_len--;
		}
		/* IDLE's DONE and a SASL response never take literals. */
		hlen = s->mode == IM_CMD ? literal_header(s, &lit, &sync) : 0;
		s->tail_len = 0;
		if (hlen == 0) {
			if (s->reading == R_SKIPLINE) {
				refuse_now(s, s->skip_reply);
				continue;
			}
			return 1;
		}
		if (s->reading == R_APPEND) {
			maildir_abort(&s->box->msg);
			s->skip_reply = "BAD One message per APPEND (MULTIAPPEND is not offered)";
			s->reading = R_SKIPLINE;
		}
		literal_begin(s, lit, sync, hlen);
		s->line_start = s->cmd_len;
		if (s->lit_left == 0 && s->reading != R_APPEND) {
			s->reading = s->reading == R_SKIPLIT ? R_SKIPLINE : R_LINE;
		}
	}
}

/* ---- the session's I/O --------------------------------------------------- */

static void timeout_reset(struct imap_session *s)
{
	s->timeout_at = loop_now() + (int64_t)cf()->imap_timeout * 1000;
	arm(s);
}

/* The slot's deadline: the nearest of the idle timeout, IDLE's keepalive
 * and a pending look at the folder. */
static void arm(struct imap_session *s)
{
	int64_t when = s->timeout_at;

	if (s->mode == IM_DELAY || s->mode == IM_TLSWAIT) {
		return;   /* those deadlines are their own */
	}
	if (s->mode == IM_IDLE) {
		if (s->keepalive_at < when) {
			when = s->keepalive_at;
		}
		if (s->sync_at != 0 && s->sync_at < when) {
			when = s->sync_at;
		}
	}
	loop_deadline(s->slot, when);
}

/* A whole command (or IDLE's DONE, or a SASL response) was read. */
static void command(struct imap_session *s)
{
	int append = s->reading == R_APPEND;

	timeout_reset(s);
	if (s->mode == IM_SASL) {
		s->mode = IM_CMD;
		auth_plain(s, s->cmd, s->cmd_len);
	} else if (s->mode == IM_IDLE) {
		idle_line(s);
	} else if (append) {
		(void)take_tag(s);
		s->quiet = 0;
		append_finish(s);
	} else {
		dispatch(s);
	}
	s->reading = R_LINE;
	s->cmd_len = s->line_start = s->tail_len = 0;
	if (s->errors >= IMAP_ERRORS_MAX && s->mode == IM_FINISH) {
		s->end_why = "errors";
	}
}

static int session_pending(const struct imap_session *s)
{
	if (s->conn.err || s->mode == IM_DELAY || s->mode == IM_LOGOUT || s->mode == IM_TLSWAIT) {
		return 0;
	}
	if (s->mode == IM_JOB || s->mode == IM_FINISH) {
		return 1;
	}
	return conn_unread(&s->conn) > 0 || conn_more(&s->conn);
}

static void session_process(struct imap_session *s)
{
	for (;;) {
		if (s->conn.err || s->mode == IM_DELAY || s->mode == IM_LOGOUT ||
		    s->mode == IM_TLSWAIT || conn_room(&s->conn) < IMAP_ROOM) {
			return;
		}
		switch (s->mode) {
		case IM_JOB:
			if (s->job(s) == 0 && s->mode == IM_JOB) {
				return;   /* the output is full, or the job had its share */
			}
			continue;
		case IM_FINISH:
			if (!updates(s)) {
				return;
			}
			imap_line(s, "%s %s", s->tag, s->done);
			s->mode = IM_CMD;
			s->quiet = 0;
			if (s->end_why != NULL) {
				if (strcmp(s->end_why, "errors") == 0) {
					imap_line(s, "* BYE Too many errors, closing");
				}
				s->mode = IM_LOGOUT;
				return;
			}
			continue;
		case IM_IDLE:
			if (s->sync_at != 0 && s->sync_at <= loop_now()) {
				s->sync_at = watching ? 0 : loop_now() + POLL_SYNC_MS;
				sync_folder(s);
				if (s->box != NULL) {
					s->box->upd = s->box->f.n;
					s->box->upd_flags = 0;
				}
			}
			if (s->mode != IM_IDLE || !updates(s)) {
				return;
			}
			break;
		default:
			break;
		}
		if (assemble(s)) {
			command(s);
			continue;
		}
		/* TLS may hold more decrypted input than c->in took. */
		if (conn_more(&s->conn) && conn_fill(&s->conn) > 0) {
			continue;
		}
		return;
	}
}

static int flush_and_continue(struct imap_session *s)
{
	int r, rounds;

	for (rounds = 0;; rounds++) {
		r = conn_flush(&s->conn);
		if (r != 0 || rounds == IMAP_ROUNDS || !session_pending(s) || s->yield) {
			s->yield = 0;
			return r;
		}
		session_process(s);
	}
}

static int session_update(struct imap_session *s)
{
	int r = flush_and_continue(s);
	int pending = session_pending(s);

	if (r < 0) {
		s->end_why = s->conn.tls_error != 0 ? "tls-error" : "lost";
		session_end(s);
		return -1;
	}
	if (r == 0 && (s->mode == IM_LOGOUT || (s->conn.eof && !pending))) {
		if (s->end_why == NULL) {
			s->end_why = "closed";
		}
		session_end(s);
		return -1;
	}
	loop_events(s->slot, conn_poll_events(&s->conn, (s->mode == IM_CMD || s->mode == IM_IDLE ||
	                                                  s->mode == IM_SASL) &&
	                                                 conn_room(&s->conn) >= IMAP_ROOM) |
	                         (pending ? POLLOUT : 0));
	return 0;
}

static void session_io(void *ctx, int revents)
{
	struct imap_session *s = ctx;
	int64_t now = loop_now();
	int n;

	if (s->mode == IM_TLSWAIT) {
		if (revents & (POLLERR | POLLHUP)) {
			s->end_why = "lost";
			session_end(s);
		} else {
			tls_wait(s);
		}
		return;
	}
	if (revents & LOOP_TIMEOUT) {
		if (s->mode == IM_DELAY) {
			/* The throttle delay is over: answer the failed login. */
			s->mode = IM_CMD;
			imap_done(s, "NO [AUTHENTICATIONFAILED] Authentication failed");
			timeout_reset(s);
		} else if (now >= s->timeout_at) {
			s->end_why = "timeout";
			imap_line(s, "* BYE Idle timeout, closing");
			(void)conn_flush(&s->conn);
			session_end(s);
			return;
		} else if (s->mode == IM_IDLE && now >= s->keepalive_at) {
			imap_line(s, "* OK Still here");
			s->keepalive_at = now + KEEPALIVE_MS;
		}
		arm(s);
	}
	if (revents & (POLLIN | POLLERR | POLLHUP)) {
		n = conn_fill(&s->conn);
		if (!s->tls_seen && conn_tls_ready(&s->conn)) {
			s->tls_seen = 1;
			if (s->mode != IM_DELAY) {
				timeout_reset(s);
			}
		}
		if (n < 0 && s->conn.err) {
			s->end_why = s->conn.tls_error != 0 ? "tls-error" : "lost";
			session_end(s);
			return;
		}
	}
	session_process(s);
	if (session_update(s) == 0) {
		arm(s);
	}
}

static void greet(struct imap_session *s)
{
	imap_line(s, "* OK [CAPABILITY %s] picomail IMAP ready", caps(s));
}

/* Implicit TLS (993): a TLS slot, or a short wait for one. */
static void tls_wait(struct imap_session *s)
{
	struct tls *t = tls_server_take();
	struct log_kv l;

	if (t != NULL) {
		s->mode = IM_CMD;
		conn_tls_now(&s->conn, t);
		s->timeout_at = loop_now() + TLS_HANDSHAKE_MS;
		arm(s);
		greet(s);
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

void imap_session_start(void *mem, int fd, const struct sockaddr *peer, socklen_t len,
                        const struct conf_listen *l, uint32_t id)
{
	struct imap_session *s = mem;
	struct log_kv kv;

	memset(s, 0, offsetof(struct imap_session, conn));
	conn_init(&s->conn, fd, peer, len);
	s->id = id;
	s->listener = l;
	s->state = IS_NOAUTH;
	s->mode = IM_CMD;
	s->slot = loop_add(fd, POLLIN, session_io, s);
	if (s->slot < 0) {
		conn_close(&s->conn);
		sessions_release(s);
		return;
	}
	s->started = loop_now();
	kv_session(&kv, "connect", s);
	log_kv_str(&kv, "listener", "imap");
	if (l->tls == TLS_IMPLICIT) {
		log_kv_str(&kv, "tls", "implicit");
	}
	log_kv_end(&kv, LOG_INFO);
	if (l->tls == TLS_IMPLICIT) {
		s->mode = IM_TLSWAIT;
		s->tls_wait_end = loop_now() + TLS_WAIT_MS;
		tls_wait(s);
		return;
	}
	timeout_reset(s);
	greet(s);
	(void)session_update(s);
}

void imap_session_shutdown(void *mem)
{
	struct imap_session *s = mem;

	s->end_why = "shutdown";
	if (s->mode != IM_TLSWAIT && conn_room(&s->conn) >= 64) {
		imap_line(s, "* BYE [UNAVAILABLE] Server shutting down");
		(void)conn_flush(&s->conn);
	}
	session_end(s);
}
