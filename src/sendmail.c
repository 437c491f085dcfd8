/* sendmail.c - the sendmail command.
 *
 * sendmail in one audited sequence:
 *   options -> configuration -> sender and command-line recipients ->
 *   header block (buffered, bounded) -> recipients from To/Cc/Bcc (-t) ->
 *   spool tmp file: Received, headers without Bcc, added From/Date/
 *   Message-ID, body streamed through a fixed buffer ->
 *   SMTP to <spool>/submit, reading the file back -> 250: remove the file;
 *   daemon down or 4xx: queue_commit the same file; 5xx: report, remove.
 * Writing the file first costs one write of the message, and buys a
 * fallback that never needs to read stdin twice nor hold it in memory.
 *
 * Input: LF or CRLF line ends (scripts write LF), stored with LF; a bare CR
 * and NUL bytes are dropped, since SMTP and the Maildir refuse both.
 * Without -i a line "." alone ends the input.
 */
#include "sendmail.h"
#include "command.h"
#include "ctlcmd.h"
#include "addr.h"
#include "conf.h"
#include "io.h"
#include "log.h"
#include "maildir.h"
#include "maildrop.h"
#include "queue.h"
#include "submitter.h"
#include "date.h"
#include "unixuser.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define SM_HDR_MAX     65536   /* the header block, buffered to add and drop fields */
#define SM_IO_BUF      16384   /* stdin, file and socket chunks */
#define SM_REPLY_MAX   1024    /* one SMTP reply line; longer is a protocol error */
#define SM_REPLY_LINES 64      /* lines of one multi-line reply */
#define SM_NAME_MAX    200     /* -F full name, after sanitizing */
#define SM_FIELD_NAME_MAX 256  /* longer "names" are text: the body has begun */
#define SM_SUBMIT      "submit"

static uint64_t random64(void)
{
	uint64_t r = 0;
	int fd = io_open("/dev/urandom", O_RDONLY, 0);

	if (fd >= 0) {
		if (io_read(fd, &r, sizeof r) != (ssize_t)sizeof r) {
			r = 0;
		}
		(void)io_close(fd);
	}
	if (r == 0) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		r = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40);
	}
	return r;
}

/* ------------------------------------------------------------ sendmail: options */

enum sm_mode { MODE_DELIVER, MODE_SMTP, MODE_LIST, MODE_FLUSH, MODE_ALIASES };

struct sm_opts {
	enum sm_mode mode;
	int extract;            /* -t */
	int ignore_dots;        /* -i, -oi, -O IgnoreDots */
	int verbose;            /* -v */
	int flush;              /* -q */
	const char *from;       /* -f, -r */
	const char *fullname;   /* -F */
	const char *conf;       /* -C */
	char **rcpt;            /* the recipient arguments */
	int nrcpt;
};

/* Letters whose value is the rest of the word or else the next argument,
 * and letters whose value can only be attached (-oi, -bm, -q30m, -d0.1).
 * Any other letter is a switch; unknown ones are ignored as sendmail does
 * (a warning would make cron mail someone on every run). */
static const char sm_with_value[] = "fFrCNBRXVLhOpDQ";
static const char sm_attached[] = "boqdA";

static int sm_false(const char *v)
{
	return v[0] != '\0' && strchr("fFnN0", v[0]) != NULL;
}

static int sm_option(struct sm_opts *o, char flag, const char *v)
{
	switch (flag) {
	case 'f':
	case 'r':
		o->from = v;
		break;
	case 'F':
		o->fullname = v;
		break;
	case 'C':
		o->conf = v;
		break;
	case 'b':
		if (strcmp(v, "m") == 0) {
			o->mode = MODE_DELIVER;
		} else if (strcmp(v, "s") == 0) {
			o->mode = MODE_SMTP;
		} else if (strcmp(v, "p") == 0) {
			o->mode = MODE_LIST;
		} else if (strcmp(v, "i") == 0) {
			o->mode = MODE_ALIASES;
		} else {
			fprintf(stderr, "sendmail: -b%s is not supported (picomail serve runs the daemon)\n",
			        v);
			return -1;
		}
		break;
	case 'o':
		/* -oi (-oiTrue); -oem, -odb, -om... change nothing here. */
		if (v[0] == 'i' && !sm_false(v + 1)) {
			o->ignore_dots = 1;
		}
		break;
	case 'O':
		if (strncasecmp(v, "IgnoreDots", 10) == 0 && (v[10] == '\0' || v[10] == '=')) {
			o->ignore_dots = !(v[10] == '=' && sm_false(v + 11));
		}
		break;
	case 'q':
		o->flush = 1;
		break;
	default:
		break;   /* -N, -B, -R, -X, -V, -L, -h...: accepted, ignored */
	}
	return 0;
}

static void sm_switch(struct sm_opts *o, char flag)
{
	switch (flag) {
	case 't':
		o->extract = 1;
		break;
	case 'i':
		o->ignore_dots = 1;
		break;
	case 'v':
		o->verbose = 1;
		break;
	default:
		break;   /* -U, -G, -n, -m, -e...: accepted, ignored */
	}
}

/* getopt-like, with clustered switches ("-ti"), and options anywhere as
 * GNU getopt allows ("sendmail root -C file"); "--" ends them.  The
 * recipients are compacted into argv[1..]. */
static int sm_options(int argc, char **argv, struct sm_opts *o)
{
	int i, n = 0, rest = 0;
	const char *a, *p, *v;

	memset(o, 0, sizeof *o);
	o->conf = cmd_conf_path();
	o->rcpt = argv + 1;
	for (i = 1; i < argc; i++) {
		a = argv[i];
		if (rest || a[0] != '-' || a[1] == '\0') {
			argv[1 + n++] = argv[i];
			continue;
		}
		if (strcmp(a, "--") == 0) {
			rest = 1;
			continue;
		}
		for (p = a + 1; *p != '\0'; p++) {
			if (strchr(sm_with_value, *p) != NULL) {
				v = p[1] != '\0' ? p + 1 : i + 1 < argc ? argv[++i] : NULL;
				if (v == NULL) {
					fprintf(stderr, "sendmail: option -%c needs a value\n", *p);
					return -1;
				}
				if (sm_option(o, *p, v) < 0) {
					return -1;
				}
				break;
			}
			if (strchr(sm_attached, *p) != NULL) {
				if (sm_option(o, *p, p + 1) < 0) {
					return -1;
				}
				break;
			}
			sm_switch(o, *p);
		}
	}
	o->nrcpt = n;
	if (o->flush && o->mode == MODE_DELIVER) {
		o->mode = MODE_FLUSH;
	}
	return 0;
}

/* ------------------------------------------------------------ addresses */

/* An address as a user writes it ("root", "a@b", "<a@b>") into the
 * checked "local@domain" form of addr_parse_path in out (ADDR_MAX + 1).
 * 0, or -1 if it is no valid address: no CR, LF or other control byte ever
 * passes, which is what keeps -f out of the headers' way. */
static int addr_normal(const char *s, size_t n, const char *qual, char *out)
{
	char buf[ADDR_MAX + CONF_NAME_MAX + 8];
	const char *rest;
	int r;

	out[0] = '\0';
	if (n >= 2 && s[0] == '<' && s[n - 1] == '>') {
		s++;
		n -= 2;
	}
	if (n == 0 || n > ADDR_MAX || memchr(s, '\0', n) != NULL) {
		return -1;
	}
	if (memchr(s, '@', n) != NULL) {
		r = snprintf(buf, sizeof buf, "<%.*s>", (int)n, s);
	} else {
		r = snprintf(buf, sizeof buf, "<%.*s@%s>", (int)n, s, qual);
	}
	if (r < 0 || (size_t)r >= sizeof buf) {
		return -1;
	}
	if (addr_parse_path(buf, out, &rest, 0, 0) != ADDR_OK || *rest != '\0') {
		out[0] = '\0';
		return -1;
	}
	return 0;
}

/* The sender when there is no -f: the login name of the real uid. */
static void login_address(const char *qual, char *out)
{
	char name[64];

	if (unixuser_name(getuid(), name, sizeof name) < 0 || strchr(name, '@') != NULL) {
		name[0] = '\0';
	}
	if (name[0] == '\0' || addr_normal(name, strlen(name), qual, out) < 0) {
		snprintf(name, sizeof name, "uid%u", (unsigned)getuid());
		(void)addr_normal(name, strlen(name), qual, out);
	}
}

struct rcpt_ctx {
	struct queue_env *env;
	const char *qual;
	const char *where;      /* "command line", "To:"... for messages */
};

/* Adds one recipient, once.  0, or -1 (printed). */
static int rcpt_take(void *ctx, const char *a, size_t n)
{
	struct rcpt_ctx *x = ctx;
	struct queue_rcpt *r;
	char out[ADDR_MAX + 1], show[ADDR_MAX + 1];
	unsigned i;

	if (addr_normal(a, n, x->qual, out) < 0) {
		fprintf(stderr, "sendmail: %s: bad address '%s'\n", x->where,
		        cmd_printable(a, n, show, sizeof show));
		return -1;
	}
	for (i = 0; i < x->env->nrcpt; i++) {
		if (strcmp(x->env->rcpt[i].addr, out) == 0) {
			return 0;
		}
	}
	if (x->env->nrcpt == QUEUE_RCPT_MAX) {
		fprintf(stderr, "sendmail: too many recipients (at most %d)\n", QUEUE_RCPT_MAX);
		return -1;
	}
	r = &x->env->rcpt[x->env->nrcpt++];
	memset(r, 0, sizeof *r);
	r->state = 'P';
	r->kind = 'U';   /* the daemon resolves local, alias or remote */
	memcpy(r->addr, out, strlen(out) + 1);
	return 0;
}

typedef int (*addr_take_fn)(void *ctx, const char *a, size_t n);

struct alist {
	char cur[ADDR_MAX + 3];   /* outside <>: an addr-spec or a display name */
	size_t clen;
	char ang[ADDR_MAX + 3];   /* inside <> */
	size_t alen;
	int in_angle, have_angle;
	int gap;                  /* white space after text in cur */
	int words;                /* cur holds several words: a display name */
	int over;                 /* cur overflowed: only fine as a display name */
};

static int alist_put(char *buf, size_t *len, char ch)
{
	if (*len >= ADDR_MAX + 2) {
		return -1;
	}
	buf[(*len)++] = ch;
	return 0;
}

static void alist_cur(struct alist *l, char ch)
{
	if (l->gap) {
		l->words = 1;
		l->gap = 0;
	}
	if (alist_put(l->cur, &l->clen, ch) < 0) {
		l->over = 1;
	}
}

/* A character of a quoted string, inside <> or out. */
static int alist_char(struct alist *l, char ch)
{
	if (l->in_angle) {
		return alist_put(l->ang, &l->alen, ch);
	}
	alist_cur(l, ch);
	return 0;
}

/* One mailbox ends (',' or ';' or the end): its address is the <...> if
 * there was one, else the single word outside.  -1 syntax, -2 take(). */
static int alist_end(struct alist *l, addr_take_fn take, void *ctx)
{
	int r = 0;

	if (l->in_angle) {
		return -1;
	}
	if (l->have_angle) {
		if (l->alen > 0 && take(ctx, l->ang, l->alen) < 0) {
			r = -2;
		}
	} else if (l->clen > 0) {
		if (l->words || l->over) {
			return -1;   /* "John Smith" without an address */
		}
		if (take(ctx, l->cur, l->clen) < 0) {
			r = -2;
		}
	}
	memset(l, 0, sizeof *l);
	return r;
}

/* Walks an RFC 5322 address-list (3.4): display names, quoted strings,
 * comments, <addresses>, groups ("team: a, b;") and folding.  Calls take()
 * for each address.  0, -1 on a syntax error, -2 when take() failed. */
static int addr_list(const char *s, size_t n, addr_take_fn take, void *ctx)
{
	static struct alist l;
	size_t i;
	int depth = 0, r;
	char ch;

	memset(&l, 0, sizeof l);
	for (i = 0; i < n; i++) {
		ch = s[i];
		if (depth > 0) {   /* a comment, nested, with quoted pairs */
			if (ch == '\\') {
				i++;
			} else if (ch == '(') {
				depth++;
			} else if (ch == ')') {
				depth--;
			}
			continue;
		}
		if (ch == '(') {
			depth = 1;
			if (l.clen > 0) {
				l.gap = 1;
			}
			continue;
		}
		if (ch == '"') {   /* a quoted string, kept with its quotes */
			if (!l.in_angle && l.have_angle) {
				return -1;
			}
			do {
				if (s[i] == '\\' && i + 1 < n) {   /* a quoted pair: both go */
					if (alist_char(&l, s[i]) < 0) {
						return -1;
					}
					i++;
				}
				if (alist_char(&l, s[i]) < 0) {
					return -1;
				}
				i++;
			} while (i < n && s[i] != '"');
			if (i == n || alist_char(&l, '"') < 0) {
				return -1;   /* unterminated, or too long */
			}
			continue;
		}
		if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n') {
			if (l.clen > 0) {
				l.gap = 1;
			}
			continue;
		}
		if (l.in_angle) {
			if (ch == '>') {
				l.in_angle = 0;
				l.have_angle = 1;
			} else if (ch == '<' || alist_put(l.ang, &l.alen, ch) < 0) {
				return -1;
			}
			continue;
		}
		switch (ch) {
		case ',':
		case ';':   /* the end of a group ends its last mailbox too */
			r = alist_end(&l, take, ctx);
			if (r < 0) {
				return r;
			}
			break;
		case ':':   /* "group name:" - the name is no address */
			if (l.have_angle || l.clen == 0 || memchr(l.cur, '@', l.clen) != NULL) {
				return -1;   /* not a phrase: "@a:b@c" is a source route */
			}
			memset(&l, 0, sizeof l);
			break;
		case '<':
			if (l.have_angle) {
				return -1;
			}
			l.in_angle = 1;
			l.alen = 0;
			break;
		case '>':
			return -1;
		default:
			if (l.have_angle) {
				return -1;   /* text after <address> */
			}
			alist_cur(&l, ch);
			break;
		}
	}
	if (depth > 0) {
		return -1;
	}
	return alist_end(&l, take, ctx);
}

/* ------------------------------------------------------------ input */

/* stdin through a byte machine: CRLF and LF end lines (stored as LF), a
 * bare CR and NUL are dropped, and without -i a line "." alone ends the
 * input (RFC 5321 4.5.2 is the SMTP side's business: nothing is unstuffed
 * here, ".." stays ".."). */
struct sm_in {
	int fd;
	int eof;                /* read() returned 0 */
	int done;               /* the "." line was seen */
	int finished;           /* in_finish ran */
	int ignore_dots;
	int bol, dot, cr;       /* at a line start; "." held back; CR held back */
	size_t pos, len;
	unsigned char buf[SM_IO_BUF];
};

static int in_fill(struct sm_in *in)
{
	ssize_t r;

	if (in->pos < in->len || in->eof || in->done) {
		return 0;
	}
	r = io_read(in->fd, in->buf, sizeof in->buf);
	if (r < 0) {
		return -1;
	}
	in->pos = 0;
	in->len = (size_t)r;
	in->eof = r == 0;
	return 0;
}

/* Consumes up to max buffered input bytes; writes the normalized bytes to
 * out, which has room for max + 1 (a held-back dot comes out with the byte
 * after it).  Returns the bytes written. */
static size_t in_feed(struct sm_in *in, size_t max, unsigned char *out)
{
	size_t o = 0, end = in->len - in->pos < max ? in->len : in->pos + max;
	unsigned char ch;

	while (in->pos < end && !in->done) {
		ch = in->buf[in->pos++];
		if (ch == '\0') {
			continue;
		}
		if (in->cr) {
			in->cr = 0;   /* unless ch is LF, that CR was bare: dropped */
		}
		if (ch == '\r') {
			in->cr = 1;
			continue;
		}
		if (ch == '\n') {
			if (in->dot) {
				in->dot = 0;
				in->bol = 1;
				in->done = 1;
				break;
			}
			out[o++] = '\n';
			in->bol = 1;
			continue;
		}
		if (in->dot) {
			out[o++] = '.';
			in->dot = 0;
		} else if (in->bol && ch == '.' && !in->ignore_dots) {
			in->dot = 1;
			in->bol = 0;
			continue;
		}
		out[o++] = ch;
		in->bol = 0;
	}
	return o;
}

/* At the end of input: a last line without LF gets one (files end with a
 * line end, and SMTP needs it before the final dot); a last "." without
 * LF is the end mark.  Writes 0 or 1 byte. */
static size_t in_finish(struct sm_in *in, unsigned char *out)
{
	if (in->finished) {
		return 0;
	}
	in->finished = 1;
	if (in->dot) {
		in->dot = 0;
		return 0;
	}
	if (!in->bol) {
		in->bol = 1;
		out[0] = '\n';
		return 1;
	}
	return 0;
}

/* ------------------------------------------------------------ the header block */

struct sm_hdr {
	size_t len;             /* bytes in buf */
	size_t end;             /* the header fields: buf[0..end), whole lines */
	size_t body;            /* the body's first bytes: buf[body..len) */
	unsigned char buf[SM_HDR_MAX];
};

enum { LINE_FIELD, LINE_CONT, LINE_BLANK, LINE_BODY };

/* ftext of RFC 5322 3.6.8: the characters of a field name. */
static int ftext(unsigned char ch)
{
	return ch > 32 && ch < 127 && ch != ':';
}

/* The length of the field name at p, 0 if none; a run of ftext longer
 * than any real name is text ("xxxx...": a body line, not a header). */
static size_t name_run(const unsigned char *p, size_t n)
{
	size_t i = 0;

	while (i < n && ftext(p[i])) {
		if (++i > SM_FIELD_NAME_MAX) {
			return 0;
		}
	}
	return i;
}

/* A whole line (without its LF): a field "Name:" (white space before the
 * colon is obsolete syntax, still read), a continuation, the blank line,
 * or something else, which starts the body. */
static int line_kind(const unsigned char *p, size_t n, int seen_field)
{
	size_t i;

	if (n == 0) {
		return LINE_BLANK;
	}
	if (p[0] == ' ' || p[0] == '\t') {
		return seen_field ? LINE_CONT : LINE_BODY;
	}
	i = name_run(p, n);
	if (i == 0) {
		return LINE_BODY;
	}
	while (i < n && (p[i] == ' ' || p[i] == '\t')) {
		i++;
	}
	return i < n && p[i] == ':' ? LINE_FIELD : LINE_BODY;
}

/* The start of a line not complete yet: 1 if it may still be a field. */
static int may_be_field(const unsigned char *p, size_t n, int seen_field)
{
	size_t i;

	if (n == 0) {
		return 1;
	}
	if (p[0] == ' ' || p[0] == '\t') {
		return seen_field;
	}
	i = name_run(p, n);
	if (i == 0) {
		return 0;
	}
	while (i < n && (p[i] == ' ' || p[i] == '\t')) {
		i++;
	}
	return i == n || p[i] == ':';
}

/* Reads the header block into h, to the blank line (dropped: the writer
 * puts its own) or to the first line that is no field (the body's first
 * line: "hello" with no header at all is a body).  The block is bounded;
 * the body is never buffered beyond what shares the block's last read.
 * 0, or an exit code (printed). */
static int read_headers(struct sm_in *in, struct sm_hdr *h)
{
	size_t line = 0, scan = 0;
	int seen = 0, last = 0, mbox = 0, kind;

	h->len = 0;
	for (;;) {
		if (in_fill(in) < 0) {
			fprintf(stderr, "sendmail: cannot read the message: %s\n", strerror(errno));
			return EX_IOERR;
		}
		if (in->pos < in->len && !in->done) {
			if (h->len + 3 > sizeof h->buf) {
				/* Full: a field that long is refused, any other
				 * partial line is the body's start. */
				if (may_be_field(h->buf + line, h->len - line, seen)) {
					fprintf(stderr, "sendmail: headers too large (more than %d bytes)\n",
					        SM_HDR_MAX);
					return EX_DATAERR;
				}
				h->end = h->body = line;
				return 0;
			}
			/* Room for max + 1 from in_feed, and 1 for in_finish. */
			h->len += in_feed(in, sizeof h->buf - h->len - 2, h->buf + h->len);
		} else {
			h->len += in_finish(in, h->buf + h->len);
			last = 1;
		}
		for (; scan < h->len; scan++) {
			if (h->buf[scan] != '\n') {
				continue;
			}
			if (line == 0 && !seen && !mbox && scan >= 5 && memcmp(h->buf, "From ", 5) == 0) {
				/* An mbox "From sender date" line first (formail,
				 * old scripts): neither a field nor the body's
				 * start; dropped, as sendmail does. */
				mbox = 1;
				h->len -= scan + 1;
				memmove(h->buf, h->buf + scan + 1, h->len);
				scan = 0;
				if (h->len == 0 || h->buf[0] != '\n') {
					continue;   /* (scan 0 is no line end) */
				}
			}
			kind = line_kind(h->buf + line, scan - line, seen);
			if (kind == LINE_BLANK) {
				h->end = line;
				h->body = scan + 1;
				return 0;
			}
			if (kind == LINE_BODY) {
				h->end = h->body = line;
				return 0;
			}
			seen = 1;
			line = scan + 1;
		}
		if (last) {
			h->end = h->body = h->len;   /* headers only, no body */
			return 0;
		}
	}
}

/* The end of the field starting at at (after its continuation lines). */
static size_t field_end(const struct sm_hdr *h, size_t at)
{
	const unsigned char *nl;

	for (;;) {
		nl = memchr(h->buf + at, '\n', h->end - at);
		at = nl == NULL ? h->end : (size_t)(nl - h->buf) + 1;
		if (at >= h->end || (h->buf[at] != ' ' && h->buf[at] != '\t')) {
			return at;
		}
	}
}

static int field_is(const unsigned char *p, size_t n, const char *name)
{
	return strlen(name) == n && strncasecmp((const char *)p, name, n) == 0;
}

static size_t field_name(const unsigned char *p)
{
	size_t n = 0;

	while (ftext(p[n])) {
		n++;
	}
	return n;
}

struct sm_fields {
	int from, date, msgid;
};

/* Notes which of From, Date and Message-ID are there and, for -t (rc not
 * NULL), takes the recipients of To, Cc and Bcc.  0, or -1 (printed). */
static int scan_fields(const struct sm_hdr *h, struct rcpt_ctx *rc, struct sm_fields *f)
{
	static const char *const rcpt_fields[] = { "To", "Cc", "Bcc" };
	const unsigned char *p, *colon;
	size_t at, end, n;
	unsigned i;
	int r;

	memset(f, 0, sizeof *f);
	for (at = 0; at < h->end; at = end) {
		end = field_end(h, at);
		p = h->buf + at;
		n = field_name(p);
		colon = memchr(p, ':', end - at);
		if (colon == NULL) {
			continue;   /* cannot be: read_headers saw a colon */
		}
		f->from |= field_is(p, n, "From");
		f->date |= field_is(p, n, "Date");
		f->msgid |= field_is(p, n, "Message-ID");
		for (i = 0; rc != NULL && i < 3; i++) {
			if (!field_is(p, n, rcpt_fields[i])) {
				continue;
			}
			rc->where = rcpt_fields[i];
			r = addr_list((const char *)colon + 1, (size_t)(h->buf + end - 1 - (colon + 1)),
			              rcpt_take, rc);
			if (r == -1) {
				fprintf(stderr, "sendmail: %s: cannot read the address list\n", rc->where);
			}
			if (r < 0) {
				return -1;
			}
		}
	}
	return 0;
}

static int atext(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", ch) != NULL);
}

/* "From: name <addr>" with the -F name made safe: control bytes (CR and
 * LF above all: header injection) become spaces, runs of spaces one, and
 * a name that is not plain words goes in a quoted-string (RFC 5322
 * 3.2.4). */
static void from_field(char *out, size_t len, const char *name, const char *addr)
{
	char clean[SM_NAME_MAX + 1], phrase[2 * SM_NAME_MAX + 3];
	size_t n = 0, i, q = 0;
	int quote = 0;
	unsigned char ch;

	for (; name != NULL && *name != '\0' && n < SM_NAME_MAX; name++) {
		ch = (unsigned char)*name;
		if (ch < 0x20 || ch == 0x7f) {
			ch = ' ';
		}
		if (ch == ' ' && (n == 0 || clean[n - 1] == ' ')) {
			continue;
		}
		clean[n++] = (char)ch;
	}
	while (n > 0 && clean[n - 1] == ' ') {
		n--;
	}
	clean[n] = '\0';
	if (n == 0) {
		snprintf(out, len, "From: %.*s\n", ADDR_MAX, addr);
		return;
	}
	for (i = 0; i < n; i++) {
		if (clean[i] != ' ' && !atext((unsigned char)clean[i])) {
			quote = 1;
		}
	}
	if (quote) {
		phrase[q++] = '"';
		for (i = 0; i < n; i++) {
			if (clean[i] == '"' || clean[i] == '\\') {
				phrase[q++] = '\\';
			}
			phrase[q++] = clean[i];
		}
		phrase[q++] = '"';
		phrase[q] = '\0';
	} else {
		memcpy(phrase, clean, n + 1);
	}
	snprintf(out, len, "From: %s <%.*s>\n", phrase, ADDR_MAX, addr);
}

/* ------------------------------------------------------------ the message file */

/* Where the message file went: the queue, the maildrop, or neither. */
enum sm_store { STORE_QUEUE, STORE_MAILDROP, STORE_TMP };

/* Opens the message file: in the queue's tmp/ when we may write there
 * (root, run_as), else in the maildrop (every other local user), else an
 * unlinked file in $TMPDIR, so that mail still reaches a running daemon.
 * *queue_err gets why the queue would not do (0 if it did).  0, or -1
 * with errno. */
static int message_open(struct maildir_msg *m, const struct conf *c, int *queue_err,
                        enum sm_store *store)
{
	char path[MAILDIR_PATH_MAX];
	const char *dir;

	*queue_err = 0;
	*store = STORE_QUEUE;
	memset(m, 0, sizeof *m);
	m->fd = -1;
	if (queue_open(m, c->spool) == 0) {   /* it makes the directories if need be */
		return 0;
	}
	*queue_err = errno ? errno : EIO;
	memset(m, 0, sizeof *m);
	m->fd = -1;
	*store = STORE_MAILDROP;
	if (maildrop_open(m, c->spool) == 0) {
		return 0;
	}
	*store = STORE_TMP;
	memset(m, 0, sizeof *m);
	dir = getenv("TMPDIR");
	if (dir == NULL || dir[0] != '/') {
		dir = "/tmp";
	}
	if (snprintf(path, sizeof path, "%s/picomail-sendmail.XXXXXX", dir) >= (int)sizeof path) {
		errno = ENAMETOOLONG;
		m->fd = -1;
		return -1;
	}
	m->fd = mkstemp(path);
	if (m->fd < 0) {
		return -1;
	}
	(void)unlink(path);   /* gone with the process, whatever happens */
	return 0;
}

/* maildir_write buffers, and the file must hold every byte before it is
 * read back for the daemon.  maildir.c keeps its flush private: the same
 * few lines here; queue_commit then finds the buffer empty. */
static void message_flush(struct maildir_msg *m)
{
	if (m->wlen > 0 && m->err == 0 && io_write_all(m->fd, m->wbuf, m->wlen) < 0) {
		m->err = errno ? errno : EIO;
	}
	m->wlen = 0;
}

static void put(struct maildir_msg *m, const char *s)
{
	maildir_write(m, s, strlen(s));
}

static int too_big(const struct maildir_msg *m, const struct conf *c)
{
	if (c->max_message_size > 0 && m->size > c->max_message_size) {
		fprintf(stderr, "sendmail: message too large (the limit is %llu bytes)\n",
		        (unsigned long long)c->max_message_size);
		return 1;
	}
	return 0;
}

/* Writes the message: our Received first (trace fields go on top, RFC
 * 5322 3.6.7), the fields read minus Bcc, the missing From, Date and
 * Message-ID, the blank line, then the body streamed from stdin.  0, or an
 * exit code (printed). */
static int message_write(struct maildir_msg *m, const struct conf *c, const struct sm_opts *o,
                         const struct sm_hdr *h, struct sm_in *in, const struct sm_fields *f,
                         const char *from)
{
	static unsigned char out[SM_IO_BUF + 1];
	char line[1024], date[128];
	size_t at, end;
	time_t now = time(NULL);

	date_rfc5322(date, sizeof date, now);
	snprintf(line, sizeof line, "Received: by %s (picomail sendmail, uid %u); %s\n",
	         c->hostname, (unsigned)getuid(), date);
	put(m, line);
	for (at = 0; at < h->end; at = end) {
		end = field_end(h, at);
		if (!field_is(h->buf + at, field_name(h->buf + at), "Bcc")) {
			maildir_write(m, h->buf + at, end - at);
		}
	}
	if (!f->from) {
		from_field(line, sizeof line, o->fullname, from);
		put(m, line);
	}
	if (!f->date) {
		snprintf(line, sizeof line, "Date: %s\n", date);
		put(m, line);
	}
	if (!f->msgid) {
		snprintf(line, sizeof line, "Message-ID: <%lld.%d.%016llx@%s>\n", (long long)now,
		         (int)getpid(), (unsigned long long)random64(), c->hostname);
		put(m, line);
	}
	put(m, "\n");
	maildir_write(m, h->buf + h->body, h->len - h->body);
	while (m->err == 0) {
		if (too_big(m, c)) {
			return EX_DATAERR;
		}
		if (in_fill(in) < 0) {
			fprintf(stderr, "sendmail: cannot read the message: %s\n", strerror(errno));
			return EX_IOERR;
		}
		if (in->pos < in->len && !in->done) {
			maildir_write(m, out, in_feed(in, SM_IO_BUF, out));
			continue;
		}
		maildir_write(m, out, in_finish(in, out));
		break;
	}
	return too_big(m, c) ? EX_DATAERR : 0;
}

/* ------------------------------------------------------------ SMTP to the daemon */

struct sm_smtp {
	int fd;
	int verbose;
	int connected;             /* the daemon answered on the submit socket */
	size_t len;
	char buf[SM_REPLY_MAX];
	char text[SM_REPLY_MAX];   /* the last line of the last reply, cmd_printable */
};

/* Reads one reply (RFC 5321 4.2.1: "xyz-text" lines, then "xyz text"),
 * bounded in line length, lines and time.  Its code, or -1 on a protocol
 * error, a timeout or a lost connection.  Bytes after the reply are a
 * protocol error: nothing is pipelined, so nothing else may come. */
static int smtp_reply(struct sm_smtp *s)
{
	unsigned lines = 0;
	int code = -1, c, final;
	char *nl;
	size_t n, used;
	ssize_t r;

	s->text[0] = '\0';
	for (;;) {
		nl = memchr(s->buf, '\n', s->len);
		if (nl != NULL) {
			n = (size_t)(nl - s->buf);
			used = n + 1;
			if (n > 0 && s->buf[n - 1] == '\r') {
				n--;
			}
			if (n < 3 || s->buf[0] < '2' || s->buf[0] > '5' || s->buf[1] < '0' ||
			    s->buf[1] > '9' || s->buf[2] < '0' || s->buf[2] > '9' ||
			    (n > 3 && s->buf[3] != ' ' && s->buf[3] != '-')) {
				errno = EPROTO;
				return -1;
			}
			c = (s->buf[0] - '0') * 100 + (s->buf[1] - '0') * 10 + (s->buf[2] - '0');
			if (code >= 0 && c != code) {
				errno = EPROTO;
				return -1;
			}
			code = c;
			final = n == 3 || s->buf[3] == ' ';
			cmd_printable(s->buf, n, s->text, sizeof s->text);
			if (s->verbose) {
				fprintf(stderr, "<<< %s\n", s->text);
			}
			memmove(s->buf, s->buf + used, s->len - used);
			s->len -= used;
			if (final) {
				if (s->len > 0) {
					errno = EPROTO;
					return -1;
				}
				return code;
			}
			if (++lines == SM_REPLY_LINES) {
				errno = EPROTO;
				return -1;
			}
			continue;
		}
		if (s->len == sizeof s->buf) {
			errno = EPROTO;
			return -1;
		}
		r = io_recv(s->fd, s->buf + s->len, sizeof s->buf - s->len);
		if (r == 0) {
			if (cmd_wait_fd(s->fd, POLLIN, CMD_TIMEOUT_MS) < 0) {
				return -1;
			}
			continue;
		}
		if (r == -2) {
			errno = ECONNRESET;
			return -1;
		}
		if (r < 0) {
			return -1;
		}
		s->len += (size_t)r;
	}
}

/* Sends "cmd arg" and reads the reply: its code, or -1. */
static int smtp_cmd(struct sm_smtp *s, const char *cmd, const char *arg)
{
	char line[ADDR_MAX + 32];
	int n = snprintf(line, sizeof line, "%s%s\r\n", cmd, arg);

	if (n < 0 || (size_t)n >= sizeof line) {
		errno = EINVAL;
		return -1;
	}
	if (s->verbose) {
		fprintf(stderr, ">>> %.*s\n", n - 2, line);
	}
	if (cmd_sock_write_all(s->fd, line, (size_t)n) < 0) {
		return -1;
	}
	return smtp_reply(s);
}

/* The file read back, with CRLF line ends and dot-stuffing (RFC 5321
 * 4.5.2), then the final dot.  0 or -1 with errno. */
static int smtp_data(struct sm_smtp *s, int rfd)
{
	static unsigned char in[SM_IO_BUF], out[2 * SM_IO_BUF + 8];
	off_t off = 0;
	ssize_t n, i;
	size_t o;
	int bol = 1;

	for (;;) {
		do {
			n = pread(rfd, in, sizeof in, off);
		} while (n < 0 && errno == EINTR);
		if (n < 0) {
			return -1;
		}
		if (n == 0) {
			break;
		}
		off += n;
		o = 0;
		for (i = 0; i < n; i++) {
			if (bol && in[i] == '.') {
				out[o++] = '.';
			}
			if (in[i] == '\n') {
				out[o++] = '\r';
			}
			out[o++] = in[i];
			bol = in[i] == '\n';
		}
		if (cmd_sock_write_all(s->fd, out, o) < 0) {
			return -1;
		}
	}
	if (!bol && cmd_sock_write_all(s->fd, "\r\n", 2) < 0) {
		return -1;
	}
	return cmd_sock_write_all(s->fd, ".\r\n", 3);
}

enum { HAND_OK, HAND_TEMP, HAND_PERM };

/* Offers the message in the file rfd to the daemon.  HAND_OK after its
 * 250 to the data; HAND_TEMP when it is not running, or answered 4xx, or
 * anything went wrong before that 250 (the caller queues the file);
 * HAND_PERM after a 5xx, with the exit code in *code (printed).  A
 * recipient refused with 5xx is reported and marked 'F' in env. */
static int handoff(struct sm_smtp *s, const struct conf *c, struct queue_env *env, int rfd,
                   int *code)
{
	char path[CONF_PATH_MAX + sizeof SM_SUBMIT + 1], arg[ADDR_MAX + 4];
	unsigned i, accepted = 0;
	int r;

	if (cmd_spool_path(path, sizeof path, c->spool, SM_SUBMIT, NULL) < 0) {
		return HAND_TEMP;
	}
	s->len = 0;
	s->connected = 0;
	s->fd = cmd_unix_connect(path);
	if (s->fd < 0) {
		if (s->verbose || !cmd_daemon_down(errno)) {
			fprintf(stderr, "sendmail: %s: %s\n", path, strerror(errno));
		}
		return HAND_TEMP;
	}
	s->connected = 1;
	r = smtp_reply(s);
	if (r / 100 != 2) {
		goto temp;
	}
	r = smtp_cmd(s, "EHLO ", "localhost");
	if (r / 100 != 2) {
		goto temp;
	}
	snprintf(arg, sizeof arg, "<%s>", env->sender);
	r = smtp_cmd(s, "MAIL FROM:", arg);
	if (r / 100 == 5) {
		fprintf(stderr, "sendmail: sender <%s>: %s\n", env->sender, s->text);
		*code = EX_DATAERR;
		goto perm;
	}
	if (r / 100 != 2) {
		goto temp;
	}
	for (i = 0; i < env->nrcpt; i++) {
		snprintf(arg, sizeof arg, "<%s>", env->rcpt[i].addr);
		r = smtp_cmd(s, "RCPT TO:", arg);
		if (r / 100 == 5) {
			fprintf(stderr, "sendmail: %s: %s\n", env->rcpt[i].addr, s->text);
			env->rcpt[i].state = 'F';
			cmd_copy_cut(env->rcpt[i].why, sizeof env->rcpt[i].why, s->text);
			continue;
		}
		if (r / 100 != 2) {
			goto temp;   /* 452 too many recipients, 451...: all queued */
		}
		accepted++;
	}
	if (accepted == 0) {
		*code = EX_NOUSER;
		goto perm;
	}
	r = smtp_cmd(s, "DATA", "");
	if (r / 100 == 5) {
		fprintf(stderr, "sendmail: DATA: %s\n", s->text);
		*code = EX_UNAVAILABLE;
		goto perm;
	}
	if (r != 354) {
		goto temp;
	}
	if (smtp_data(s, rfd) < 0) {
		r = -1;
		goto temp;
	}
	r = smtp_reply(s);
	if (r / 100 == 5) {
		fprintf(stderr, "sendmail: %s\n", s->text);
		*code = r == 552 ? EX_DATAERR : EX_UNAVAILABLE;
		goto perm;
	}
	if (r / 100 != 2) {
		goto temp;
	}
	(void)smtp_cmd(s, "QUIT", "");
	close(s->fd);
	return HAND_OK;
perm:
	(void)smtp_cmd(s, "QUIT", "");
	close(s->fd);
	return HAND_PERM;
temp:
	/* Closing without QUIT drops the transaction on the daemon's side. */
	if (s->verbose) {
		fprintf(stderr, "sendmail: daemon: %s\n", r < 0 ? strerror(errno) : s->text);
	}
	close(s->fd);
	return HAND_TEMP;
}

/* ------------------------------------------------------------ sendmail -bs */

/* SMTP on stdin/stdout: a plain relay to the daemon's submit socket, which
 * does all the talking (and all the checking). */
static int smtp_proxy(const struct conf *c)
{
	static unsigned char buf[SM_IO_BUF];
	static const char down[] = "421 4.3.0 mail system not running\r\n";
	char path[CONF_PATH_MAX + sizeof SM_SUBMIT + 1];
	struct pollfd p[2];
	int fd = -1, in_open = 1, r;
	ssize_t n;

	if (cmd_spool_path(path, sizeof path, c->spool, SM_SUBMIT, NULL) == 0) {
		fd = cmd_unix_connect(path);
	}
	if (fd < 0) {
		(void)cmd_fd_write_all(STDOUT_FILENO, down, sizeof down - 1);
		return EX_TEMPFAIL;
	}
	for (;;) {
		p[0].fd = in_open ? STDIN_FILENO : -1;
		p[0].events = POLLIN;
		p[1].fd = fd;
		p[1].events = POLLIN;
		r = poll(p, 2, -1);
		if (r < 0) {
			if (errno == EINTR) {
				continue;
			}
			break;
		}
		if (p[1].revents != 0) {
			n = io_recv(fd, buf, sizeof buf);
			if (n < 0) {
				break;   /* the daemon closed: after QUIT, or its timeout */
			}
			if (n > 0 && cmd_fd_write_all(STDOUT_FILENO, buf, (size_t)n) < 0) {
				break;
			}
		}
		if (in_open && p[0].revents != 0) {
			n = io_read(STDIN_FILENO, buf, sizeof buf);
			if (n <= 0) {
				in_open = 0;
				(void)shutdown(fd, SHUT_WR);
			} else if (cmd_sock_write_all(fd, buf, (size_t)n) < 0) {
				break;
			}
		}
	}
	close(fd);
	return EX_OK;
}

/* ------------------------------------------------------------ sendmail */

static struct conf sm_conf;
static struct queue_env sm_env;
static struct maildir_msg sm_msg;
static struct sm_hdr sm_hdr;
static struct sm_in sm_in;
static struct sm_smtp sm_smtp;

/* Drops the recipients the daemon refused for good before queueing. */
static void env_keep_pending(struct queue_env *env)
{
	unsigned i, n = 0;

	for (i = 0; i < env->nrcpt; i++) {
		if (env->rcpt[i].state == 'P') {
			if (n != i) {
				env->rcpt[n] = env->rcpt[i];
			}
			n++;
		}
	}
	env->nrcpt = n;
}

/* The daemon is down or answered 4xx, and this user cannot write the
 * queue: the message and its envelope stay in the maildrop, durably, for
 * the daemon to pick up (at once, if it runs). */
static int to_maildrop(struct maildir_msg *m, const struct conf *c, struct queue_env *env,
                       int verbose)
{
	int r = maildrop_commit(m, c->spool, env);

	if (r != 0) {
		fprintf(stderr, "sendmail: cannot leave the message in %s/%s: %s\n", c->spool,
		        MAILDROP_DIR, strerror(r));
		return EX_TEMPFAIL;
	}
	if (sm_smtp.connected) {
		(void)cmd_control_request(c, "sendmail", "maildrop\n", -1, NULL, 0);
	}
	if (verbose) {
		fprintf(stderr, "sendmail: left in %s/%s for the daemon\n", c->spool, MAILDROP_DIR);
	}
	return EX_OK;
}

static int sm_deliver(const struct sm_opts *o)
{
	struct conf *c = &sm_conf;
	struct queue_env *env = &sm_env;
	struct maildir_msg *m = &sm_msg;
	struct sm_fields f;
	struct rcpt_ctx rc;
	char err[CONF_ERR_MAX], login[ADDR_MAX + 1];
	const char *qual;
	int i, r, rv = EX_OK, queue_err, rfd, code = EX_UNAVAILABLE;
	enum sm_store store;
	struct submitter me;

	if (conf_load(c, o->conf, err, sizeof err) < 0) {
		fprintf(stderr, "sendmail: %s\n", err);
		return EX_CONFIG;
	}
	qual = conf_qualify_domain(c);
	maildir_setup(c->maildir_root, c->hostname);   /* unique names: our pid */
	memset(env, 0, sizeof *env);
	login_address(qual, login);
	if (o->from == NULL) {
		memcpy(env->sender, login, strlen(login) + 1);
	} else if (strcmp(o->from, "") != 0 && strcmp(o->from, "<>") != 0 &&
	           addr_normal(o->from, strlen(o->from), qual, env->sender) < 0) {
		fprintf(stderr, "sendmail: bad sender address '%s'\n",
		        cmd_printable(o->from, strlen(o->from), err, sizeof err));
		return EX_USAGE;
	}
	/* The daemon holds an ordinary user to their own address (submitter.h):
	 * say so here rather than let a -f go quietly. */
	submitter_by_uid(getuid(), c, &me);
	if (!me.trusted && strcmp(env->sender, me.address) != 0) {
		if (o->from != NULL) {
			fprintf(stderr, "sendmail: the sender is <%s>, not <%s>: only root, run_as and "
			        "trusted_users choose it\n", me.address, env->sender);
		}
		snprintf(env->sender, sizeof env->sender, "%s", me.address);
	}
	rc.env = env;
	rc.qual = qual;
	rc.where = "command line";
	for (i = 0; i < o->nrcpt; i++) {
		r = addr_list(o->rcpt[i], strlen(o->rcpt[i]), rcpt_take, &rc);
		if (r == -1) {
			fprintf(stderr, "sendmail: bad recipient '%s'\n",
			        cmd_printable(o->rcpt[i], strlen(o->rcpt[i]), err, sizeof err));
		}
		if (r < 0) {
			return EX_USAGE;
		}
	}
	if (!o->extract && env->nrcpt == 0) {
		fprintf(stderr, "sendmail: no recipients\n");
		return EX_USAGE;
	}

	memset(&sm_in, 0, sizeof sm_in);
	sm_in.fd = STDIN_FILENO;
	sm_in.bol = 1;
	sm_in.ignore_dots = o->ignore_dots;
	r = read_headers(&sm_in, &sm_hdr);
	if (r != 0) {
		return r;
	}
	if (scan_fields(&sm_hdr, o->extract ? &rc : NULL, &f) < 0) {
		return EX_DATAERR;
	}
	if (env->nrcpt == 0) {
		fprintf(stderr, "sendmail: no recipients\n");
		return EX_USAGE;
	}

	if (message_open(m, c, &queue_err, &store) < 0) {
		fprintf(stderr, "sendmail: cannot create the message file in %s: %s\n", c->spool,
		        strerror(queue_err ? queue_err : errno));
		return EX_TEMPFAIL;
	}
	if (store == STORE_TMP && o->verbose) {
		fprintf(stderr, "sendmail: %s: %s; the daemon must take the message now\n", c->spool,
		        strerror(queue_err));
	}
	rv = message_write(m, c, o, &sm_hdr, &sm_in, &f, env->sender[0] ? env->sender : login);
	if (rv != 0) {
		goto out;
	}
	message_flush(m);
	if (m->err != 0) {
		fprintf(stderr, "sendmail: cannot write the message: %s\n", strerror(m->err));
		rv = EX_TEMPFAIL;
		goto out;
	}
	env->arrival = (int64_t)time(NULL);
	env->attempts = 0;
	env->next = 0;

	rfd = m->tmp[0] != '\0' ? io_open(m->tmp, O_RDONLY, 0) : m->fd;
	sm_smtp.verbose = o->verbose;
	r = rfd < 0 ? HAND_TEMP : handoff(&sm_smtp, c, env, rfd, &code);
	if (rfd >= 0 && rfd != m->fd) {
		(void)io_close(rfd);
	}
	if (r == HAND_OK) {
		rv = EX_OK;   /* the daemon has it: our file goes */
		goto out;
	}
	if (r == HAND_PERM) {
		rv = code;
		goto out;
	}
	env_keep_pending(env);
	if (store == STORE_MAILDROP) {
		return to_maildrop(m, c, env, o->verbose);
	}
	if (queue_err != 0) {
		fprintf(stderr, "sendmail: the daemon did not take the message, and the queue "
		        "in %s cannot: %s; message not sent\n", c->spool, strerror(queue_err));
		rv = EX_TEMPFAIL;
		goto out;
	}
	cmd_copy_cut(env->id, sizeof env->id, m->name);
	r = queue_commit(m, c->spool, env);
	if (r != 0) {
		fprintf(stderr, "sendmail: cannot queue the message in %s: %s\n", c->spool,
		        strerror(r));
		m->fd = -1;   /* queue_commit closed it */
		rv = EX_TEMPFAIL;
		goto out;
	}
	if (sm_smtp.connected) {
		/* The daemon runs but said 4xx: tell it that a message waits,
		 * rather than leave it until the next start. */
		snprintf(err, sizeof err, "queued %.*s\n", QUEUE_ID_MAX, env->id);
		(void)cmd_control_request(c, "sendmail", err, -1, NULL, 0);
	}
	if (o->verbose) {
		fprintf(stderr, "sendmail: queued as %s\n", env->id);
	}
	return EX_OK;
out:
	maildir_abort(m);
	return rv;
}

int sendmail_main(int argc, char **argv)
{
	static struct sm_opts o;
	char err[CONF_ERR_MAX];

	if (sm_options(argc, argv, &o) < 0) {
		fprintf(stderr, "usage: sendmail [-t] [-i] [-f sender] [-F name] [-C FILE] "
		                "[recipient...]\n");
		return EX_USAGE;
	}
	signal(SIGPIPE, SIG_IGN);
	umask(077);
	log_open("sendmail", 1);
	if (io_fault_init() < 0) {
		fprintf(stderr, "sendmail: bad PICOMAIL_FAULT\n");
		return EX_USAGE;
	}
	switch (o.mode) {
	case MODE_LIST:
		return ctlcmd_mailq(o.conf);
	case MODE_FLUSH:
		return ctlcmd_flush(o.conf);
	case MODE_ALIASES:
		printf("sendmail: the daemon reads the aliases file itself (SIGHUP reloads it)\n");
		return EX_OK;
	case MODE_SMTP:
		if (conf_load(&sm_conf, o.conf, err, sizeof err) < 0) {
			fprintf(stderr, "sendmail: %s\n", err);
			return EX_CONFIG;
		}
		return smtp_proxy(&sm_conf);
	case MODE_DELIVER:
	default:
		return sm_deliver(&o);
	}
}
