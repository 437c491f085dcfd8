/* imap_search.c - SEARCH (RFC 3501 6.4.4): the keys parsed into a tree
 * (an array in prefix order, bounded in size and depth), evaluated for
 * each message, reading the message only when a key needs its text, with
 * every string looked for in one stream over the file.  A round reads a
 * bounded number of octets, so a search of a big folder lets the other
 * sessions run; the "* SEARCH" line goes out as the output drains.
 */
#include "imap_int.h"
#include "imap_msg.h"
#include "io.h"

#include <inttypes.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define SEARCH_DEPTH   32            /* parentheses, NOT and OR inside each other */
#define SEARCH_BUDGET  (256 * 1024)  /* message octets read per round */

enum {
	N_ALL, N_FLAGS, N_NOT, N_OR, N_AND, N_SET, N_UIDSET, N_LARGER, N_SMALLER,
	N_BEFORE, N_ON, N_SINCE, N_SENTBEFORE, N_SENTON, N_SENTSINCE,
	N_HEADER, N_BODY, N_TEXT, N_NONE,
};

enum { A_NONE, A_STRING, A_DATE, A_NUMBER, A_HEADER, A_FIELD, A_KEY, A_KEYS, A_SET, A_ATOM };

static const struct {
	const char *name;
	uint8_t op, arg;
	uint16_t a;              /* N_FLAGS: mask << 8 | value; N_HEADER: the field */
} keys[] = {
	{ "ALL", N_ALL, A_NONE, 0 },
	{ "ANSWERED", N_FLAGS, A_NONE, FL_ANSWERED << 8 | FL_ANSWERED },
	{ "DELETED", N_FLAGS, A_NONE, FL_DELETED << 8 | FL_DELETED },
	{ "DRAFT", N_FLAGS, A_NONE, FL_DRAFT << 8 | FL_DRAFT },
	{ "FLAGGED", N_FLAGS, A_NONE, FL_FLAGGED << 8 | FL_FLAGGED },
	{ "SEEN", N_FLAGS, A_NONE, FL_SEEN << 8 | FL_SEEN },
	{ "RECENT", N_FLAGS, A_NONE, FL_RECENT << 8 | FL_RECENT },
	{ "NEW", N_FLAGS, A_NONE, (FL_RECENT | FL_SEEN) << 8 | FL_RECENT },
	{ "OLD", N_FLAGS, A_NONE, FL_RECENT << 8 },
	{ "UNANSWERED", N_FLAGS, A_NONE, FL_ANSWERED << 8 },
	{ "UNDELETED", N_FLAGS, A_NONE, FL_DELETED << 8 },
	{ "UNDRAFT", N_FLAGS, A_NONE, FL_DRAFT << 8 },
	{ "UNFLAGGED", N_FLAGS, A_NONE, FL_FLAGGED << 8 },
	{ "UNSEEN", N_FLAGS, A_NONE, FL_SEEN << 8 },
	/* Keywords are not kept: none is set, every one is unset. */
	{ "KEYWORD", N_NONE, A_ATOM, 0 },
	{ "UNKEYWORD", N_ALL, A_ATOM, 0 },
	{ "NOT", N_NOT, A_KEY, 0 },
	{ "OR", N_OR, A_KEYS, 0 },
	{ "UID", N_UIDSET, A_SET, 0 },
	{ "LARGER", N_LARGER, A_NUMBER, 0 },
	{ "SMALLER", N_SMALLER, A_NUMBER, 0 },
	{ "BEFORE", N_BEFORE, A_DATE, 0 },
	{ "ON", N_ON, A_DATE, 0 },
	{ "SINCE", N_SINCE, A_DATE, 0 },
	{ "SENTBEFORE", N_SENTBEFORE, A_DATE, 0 },
	{ "SENTON", N_SENTON, A_DATE, 0 },
	{ "SENTSINCE", N_SENTSINCE, A_DATE, 0 },
	{ "FROM", N_HEADER, A_FIELD, 1 },
	{ "TO", N_HEADER, A_FIELD, 2 },
	{ "CC", N_HEADER, A_FIELD, 3 },
	{ "BCC", N_HEADER, A_FIELD, 4 },
	{ "SUBJECT", N_HEADER, A_FIELD, 5 },
	{ "HEADER", N_HEADER, A_HEADER, 0 },
	{ "BODY", N_BODY, A_STRING, 0 },
	{ "TEXT", N_TEXT, A_STRING, 0 },
};

static const char *const fields[] = { "", "From", "To", "Cc", "Bcc", "Subject" };

static unsigned char lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c | 0x20) : c;
}

/* A string to look for: its failure table. */
static int text_add(struct search_job *j, const struct imap_str *s)
{
	struct search_text *x;
	unsigned i, k;

	if (j->ntext == SEARCH_TEXT_MAX || s->len > SEARCH_NEEDLE_MAX) {
		return -1;
	}
	x = &j->text[j->ntext];
	x->len = (uint8_t)s->len;
	for (i = 0; i < s->len; i++) {
		x->pat[i] = (char)lower((unsigned char)s->p[i]);
	}
	x->fail[0] = 0;
	for (i = 1, k = 0; i < s->len; i++) {
		while (k > 0 && x->pat[i] != x->pat[k]) {
			k = x->fail[k - 1];
		}
		k += x->pat[i] == x->pat[k];
		x->fail[i] = (uint8_t)k;
	}
	return (int)j->ntext++;
}

static void text_feed(struct search_text *x, const unsigned char *p, size_t n)
{
	unsigned k = x->state;
	size_t i;

	if (x->len == 0) {
		x->found = 1;
	}
	for (i = 0; i < n && !x->found; i++) {
		unsigned char c = lower(p[i]);

		while (k > 0 && (unsigned char)x->pat[k] != c) {
			k = x->fail[k - 1];
		}
		if ((unsigned char)x->pat[k] == c && ++k == x->len) {
			x->found = 1;
		}
	}
	x->state = (uint8_t)k;
}

/* ---- parsing ----------------------------------------------------------------- */

static int parse_key(struct imap_tok *t, struct search_job *j, unsigned depth);

static struct search_node *node(struct imap_tok *t, struct search_job *j, unsigned op)
{
	struct search_node *n;

	if (j->n == SEARCH_NODES) {
		t->err = 2;   /* too complex */
		return NULL;
	}
	n = &j->nodes[j->n++];
	memset(n, 0, sizeof *n);
	n->op = (uint8_t)op;
	return n;
}

static void string_arg(struct imap_tok *t, struct search_job *j, struct search_node *n)
{
	struct imap_str s;
	int k;

	tok_sp(t);
	tok_astring(t, &s);
	if (t->err) {
		return;
	}
	k = text_add(j, &s);
	if (k < 0) {
		t->err = 2;
		return;
	}
	n->a = (uint32_t)k;
	j->files = 1;
}

/* One search key; 0, or -1 with t->err (2: past the limits). */
static int parse_key(struct imap_tok *t, struct search_job *j, unsigned depth)
{
	struct search_node *n;
	struct imap_str w;
	unsigned i, self = j->n;

	if (depth > SEARCH_DEPTH) {
		t->err = 2;
		return -1;
	}
	if (tok_is(t, '(')) {
		if ((n = node(t, j, N_AND)) == NULL) {
			return -1;
		}
		do {
			if (parse_key(t, j, depth + 1) < 0) {
				return -1;
			}
		} while (tok_is(t, ' '));
		if (!tok_is(t, ')')) {
			t->err = 1;
			return -1;
		}
		j->nodes[self].next = (uint16_t)j->n;
		return 0;
	}
	if (t->p < t->end && ((*t->p >= '0' && *t->p <= '9') || *t->p == '*')) {
		if ((n = node(t, j, N_SET)) == NULL) {
			return -1;
		}
		tok_seqset(t, &n->s);
		n->next = (uint16_t)j->n;
		return t->err ? -1 : 0;
	}
	tok_atom(t, &w, 0);
	for (i = 0; !t->err && i < sizeof keys / sizeof keys[0]; i++) {
		if (strlen(keys[i].name) == w.len && strncasecmp(keys[i].name, w.p, w.len) == 0) {
			break;
		}
	}
	if (t->err || i == sizeof keys / sizeof keys[0] || (n = node(t, j, keys[i].op)) == NULL) {
		t->err = t->err ? t->err : 1;
		return -1;
	}
	n->a = keys[i].a;
	switch (keys[i].arg) {
	case A_ATOM:
		tok_sp(t);
		tok_atom(t, &w, 0);
		break;
	case A_SET:
		tok_sp(t);
		tok_seqset(t, &n->s);
		break;
	case A_NUMBER:
		tok_sp(t);
		n->a = tok_number(t);
		break;
	case A_DATE:
		tok_sp(t);
		n->a = (uint32_t)tok_date(t);
		j->files |= n->op >= N_SENTBEFORE;
		break;
	case A_FIELD:
		n->h = fields[keys[i].a];
		n->h_len = strlen(n->h);
		string_arg(t, j, n);
		break;
	case A_HEADER:
		tok_sp(t);
		tok_astring(t, &w);
		n->h = w.p;
		n->h_len = w.len;
		string_arg(t, j, n);
		break;
	case A_STRING:
		string_arg(t, j, n);
		break;
	case A_KEY:
		tok_sp(t);
		(void)parse_key(t, j, depth + 1);
		break;
	case A_KEYS:
		tok_sp(t);
		(void)parse_key(t, j, depth + 1);
		tok_sp(t);
		(void)parse_key(t, j, depth + 1);
		break;
	default:
		break;
	}
	j->nodes[self].next = (uint16_t)j->n;
	return t->err ? -1 : 0;
}

/* ---- evaluation ------------------------------------------------------------- */

struct msgtext {
	struct search_job *j;
	long sent;             /* the Date: header's day, -1 */
};

static void header_field(void *ctx, const char *name, size_t nlen, const char *value, size_t vlen)
{
	struct msgtext *m = ctx;
	struct search_job *j = m->j;
	unsigned k;

	if (nlen == 4 && strncasecmp(name, "Date", 4) == 0 && m->sent < 0) {
		m->sent = msg_date_days(value, vlen);
	}
	for (k = 0; k < j->n; k++) {
		struct search_node *n = &j->nodes[k];

		if (n->op == N_HEADER && n->h_len == nlen && strncasecmp(n->h, name, nlen) == 0 &&
		    !j->text[n->a].found) {
			/* Each field afresh: a match never spans two. */
			j->text[n->a].state = 0;
			text_feed(&j->text[n->a], (const unsigned char *)value, vlen);
		}
	}
}

/* Reads message i for the strings and the sent date; the octets read. */
static uint64_t read_message(struct imap_session *s, unsigned i, struct msgtext *m)
{
	static struct wreader r;
	static unsigned char buf[4096];
	struct search_job *j = &s->box->u.search;
	uint32_t tail = 0;   /* the last four octets: CRLF CRLF ends the header */
	int body = 0, fd;
	size_t n, k, from;
	unsigned t;

	m->sent = -1;
	for (t = 0; t < j->ntext; t++) {
		j->text[t].state = j->text[t].found = 0;
	}
	fd = folder_open_msg(&s->box->f, i);
	if (fd < 0) {
		return 0;
	}
	(void)msg_fields(fd, 0, header_field, m);
	wr_init(&r, fd, 0, 0);
	while ((n = wr_read(&r, buf, sizeof buf)) > 0) {
		from = 0;
		if (!body) {
			for (k = 0; k < n && !body; k++) {
				tail = tail << 8 | buf[k];
				body = tail == 0x0d0a0d0a || (r.woff - n + k == 1 && tail == 0x0d0a);
			}
			from = body ? k : n;
		}
		for (t = 0; t < j->n; t++) {
			const struct search_node *x = &j->nodes[t];

			if (x->op == N_TEXT) {
				text_feed(&j->text[x->a], buf, n);
			} else if (x->op == N_BODY && from < n) {
				text_feed(&j->text[x->a], buf + from, n - from);
			}
		}
	}
	(void)io_close(fd);
	return r.woff;
}

static int eval(const struct search_job *j, unsigned k, struct folder *f, unsigned i,
                const struct msgtext *m)
{
	const struct search_node *n = &j->nodes[k];
	const struct fmsg *msg = &f->msgs[i];
	unsigned c;
	long day;

	switch (n->op) {
	case N_ALL:
		return 1;
	case N_NONE:
		return 0;
	case N_FLAGS:
		return (msg->flags & (n->a >> 8)) == (n->a & 0xff);
	case N_NOT:
		return !eval(j, k + 1, f, i, m);
	case N_OR:
		return eval(j, k + 1, f, i, m) || eval(j, j->nodes[k + 1].next, f, i, m);
	case N_AND:
		for (c = k + 1; c < n->next; c = j->nodes[c].next) {
			if (!eval(j, c, f, i, m)) {
				return 0;
			}
		}
		return 1;
	case N_SET:
		return set_has(&n->s, f->n, i + 1);
	case N_UIDSET:
		return set_has(&n->s, f->msgs[f->n - 1].uid, msg->uid);
	case N_LARGER:
		return folder_size(f, i) != FOLDER_SIZE_UNKNOWN && folder_size(f, i) > n->a;
	case N_SMALLER:
		return folder_size(f, i) < n->a;
	case N_BEFORE:
	case N_ON:
	case N_SINCE:
		day = (long)(folder_date(f, i) / 86400);
		return n->op == N_BEFORE ? day < (long)n->a : n->op == N_ON ? day == (long)n->a :
		       day >= (long)n->a;
	case N_SENTBEFORE:
	case N_SENTON:
	case N_SENTSINCE:
		day = m->sent;
		return day >= 0 && (n->op == N_SENTBEFORE ? day < (long)n->a :
		                    n->op == N_SENTON ? day == (long)n->a : day >= (long)n->a);
	default:   /* N_HEADER, N_BODY, N_TEXT */
		return j->text[n->a].found;
	}
}

static int search_job(struct imap_session *s)
{
	struct search_job *j = &s->box->u.search;
	struct folder *f = &s->box->f;
	struct fmsg *msg;
	struct msgtext m = { j, -1 };
	uint64_t budget = 0;
	unsigned c;

	if (!j->output) {
		for (; j->cursor < f->n; j->cursor++) {
			msg = &f->msgs[j->cursor];
			msg->state &= (uint8_t)~MS_MARK;
			if (msg->state & MS_GONE) {
				continue;
			}
			if (budget >= SEARCH_BUDGET) {
				s->yield = 1;   /* the others' turn; on at the next round */
				return 0;
			}
			if (j->files) {
				budget += read_message(s, j->cursor, &m) + 1024;
			}
			for (c = 0; c < j->n; c = j->nodes[c].next) {
				if (!eval(j, c, f, j->cursor, &m)) {
					break;
				}
			}
			if (c >= j->n) {
				msg->state |= MS_MARK;
			}
		}
		j->output = 1;
		j->cursor = 0;
		conn_put(&s->conn, "* SEARCH", 8);
	}
	for (; j->cursor < f->n; j->cursor++) {
		if (!(f->msgs[j->cursor].state & MS_MARK)) {
			continue;
		}
		if (conn_room(&s->conn) < 16) {
			return 0;
		}
		conn_printf(&s->conn, " %" PRIu32, j->uid ? f->msgs[j->cursor].uid : j->cursor + 1);
	}
	if (conn_room(&s->conn) < 2) {
		return 0;
	}
	conn_put(&s->conn, "\r\n", 2);
	imap_done(s, "OK SEARCH completed");
	return 1;
}

void search_start(struct imap_session *s, struct imap_tok *t, int uid)
{
	struct search_job *j = &s->box->u.search;
	struct imap_str w;
	const char *save;
	unsigned k;

	memset(j, 0, offsetof(struct search_job, text));
	j->files = j->output = 0;
	j->cursor = 0;
	j->uid = uid;
	tok_sp(t);
	save = t->p;
	tok_atom(t, &w, 0);
	if (!t->err && w.len == 7 && strncasecmp(w.p, "CHARSET", 7) == 0) {
		tok_sp(t);
		tok_astring(t, &w);
		if (!t->err && !(w.len == 8 && strncasecmp(w.p, "US-ASCII", 8) == 0) &&
		    !(w.len == 5 && strncasecmp(w.p, "UTF-8", 5) == 0)) {
			imap_done(s, "NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset");
			return;
		}
		tok_sp(t);
	} else {
		t->p = (char *)save;
		t->err = 0;
	}
	do {
		(void)parse_key(t, j, 0);
	} while (!t->err && tok_is(t, ' '));
	if (t->err == 2) {
		imap_bad(s, "Search too complex (64 keys, 16 strings of 255 octets, 32 levels)");
		return;
	}
	if (!tok_end(t)) {
		imap_bad(s, "Syntax error in SEARCH");
		return;
	}
	for (k = 0; k < j->n; k++) {
		if (j->nodes[k].op == N_SET && imap_set_bad(s, &j->nodes[k].s, 0)) {
			imap_bad(s, "No such message");
			return;
		}
	}
	/* The result's numbers stand while the search runs: no EXPUNGE (RFC
	 * 3501 7.4.1), as for FETCH and STORE. */
	s->quiet = !uid;
	s->job = search_job;
	s->mode = IM_JOB;
}
