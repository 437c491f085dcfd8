/* imap_fetch.c - FETCH (RFC 3501 6.4.5, 7.4.2): the items, ENVELOPE and
 * BODYSTRUCTURE computed from the message file in a stream, sections
 * (HEADER, TEXT, MIME, HEADER.FIELDS[.NOT], part numbers, <partial>)
 * sent as literals straight from the file.
 *
 * A response goes out in pieces: "* n FETCH (", each item, ")".  A piece
 * is generated afresh each round into the output's window (struct out:
 * what went out before is skipped), so an ENVELOPE or a BODYSTRUCTURE of
 * any length needs no buffer of its own; a literal of a contiguous range
 * of the message is streamed from the file, converted on the way, with
 * its position kept between rounds.
 */
#include "imap_int.h"
#include "imap_msg.h"
#include "io.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define ENV_MAX   32768         /* an ENVELOPE's header values, kept at once */
#define PART_MAX  16384         /* a part's Content-* values */

/* The part table of the last message looked at (one at a time). */
static struct msgparts parts;
static struct {
	const void *owner;
	uint32_t uid, validity;
	int valid;
} parts_key;

static struct msgparts *parts_of(struct imap_session *s, unsigned i, int fd)
{
	struct folder *f = &s->box->f;

	if (parts_key.valid && parts_key.owner == s && parts_key.uid == f->msgs[i].uid &&
	    parts_key.validity == f->validity) {
		return &parts;
	}
	parts_key.valid = 0;
	if (msg_parts(fd, &parts) < 0) {
		return NULL;
	}
	parts_key.owner = s;
	parts_key.uid = f->msgs[i].uid;
	parts_key.validity = f->validity;
	parts_key.valid = 1;
	return &parts;
}

void fetch_stop(struct imap_session *s)
{
	if (s->box->msgfd >= 0) {
		(void)io_close(s->box->msgfd);
		s->box->msgfd = -1;
	}
	if (parts_key.owner == s) {
		parts_key.valid = 0;
	}
}

/* ---- header values ------------------------------------------------------- */

enum { E_DATE, E_SUBJECT, E_FROM, E_SENDER, E_REPLY_TO, E_TO, E_CC, E_BCC, E_IN_REPLY_TO,
       E_MESSAGE_ID };

static const char *const env_names[10] = {
	"Date", "Subject", "From", "Sender", "Reply-To", "To", "Cc", "Bcc", "In-Reply-To",
	"Message-ID",
};

struct capture {
	const char *const *names;
	unsigned n;
	int trim;               /* leading white space goes too (Content-* values) */
	char *buf;
	size_t size, used;
	struct {
		size_t off, len;
		int have;
	} v[10];
};

static void capture_one(void *ctx, const char *name, size_t nlen, const char *value, size_t vlen)
{
	struct capture *c = ctx;
	unsigned i;

	for (i = 0; i < c->n; i++) {
		if (!c->v[i].have && strlen(c->names[i]) == nlen &&
		    strncasecmp(c->names[i], name, nlen) == 0) {
			if (vlen > c->size - c->used) {
				vlen = c->size - c->used;
			}
			while (vlen > 0 && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t')) {
				vlen--;
			}
			while (c->trim && vlen > 0 && (*value == ' ' || *value == '\t')) {
				value++;
				vlen--;
			}
			memcpy(c->buf + c->used, value, vlen);
			c->v[i].off = c->used;
			c->v[i].len = vlen;
			c->v[i].have = 1;
			c->used += vlen;
			return;
		}
	}
}

static void capture(struct capture *c, const char *const *names, unsigned n, char *buf,
                    size_t size, int fd, uint64_t fpos)
{
	memset(c, 0, sizeof *c);
	c->names = names;
	c->n = n;
	c->trim = names != env_names;
	c->buf = buf;
	c->size = size;
	(void)msg_fields(fd, fpos, capture_one, c);
}

/* Value i (NULL when absent). */
static const char *val(const struct capture *c, unsigned i, size_t *len)
{
	*len = c->v[i].len;
	return c->v[i].have ? c->buf + c->v[i].off : NULL;
}

/* ---- ENVELOPE -------------------------------------------------------------- */

/* A token of a structured header (RFC 5322 3.2): a word (a quoted string
 * unquoted into word), or one of the specials.  Comments are skipped; the
 * last one's text is kept (an address's name when it has no other). */
struct atok {
	const char *p, *end;
	const char *specials;
	char word[512];
	size_t wlen;
	char comment[128];
	size_t clen;
};

static int addr_next(struct atok *a)
{
	int depth;

	for (;;) {
		while (a->p < a->end && (*a->p == ' ' || *a->p == '\t')) {
			a->p++;
		}
		if (a->p == a->end) {
			return 0;
		}
		if (*a->p != '(') {
			break;
		}
		a->clen = 0;
		for (depth = 0; a->p < a->end; a->p++) {
			if (*a->p == '\\' && a->p + 1 < a->end) {
				a->p++;
			} else if (*a->p == '(' && depth++ == 0) {
				continue;
			} else if (*a->p == ')' && --depth == 0) {
				a->p++;
				break;
			}
			if (a->clen < sizeof a->comment) {
				a->comment[a->clen++] = *a->p;
			}
		}
	}
	a->wlen = 0;
	if (strchr(a->specials, *a->p) != NULL) {
		return *a->p++;
	}
	if (*a->p == '"') {
		for (a->p++; a->p < a->end && *a->p != '"'; a->p++) {
			if (*a->p == '\\' && a->p + 1 < a->end) {
				a->p++;
			}
			if (a->wlen < sizeof a->word) {
				a->word[a->wlen++] = *a->p;
			}
		}
		a->p += a->p < a->end;
		return 'w';
	}
	while (a->p < a->end && strchr(a->specials, *a->p) == NULL &&
	       strchr("\"( \t", *a->p) == NULL) {
		if (a->wlen < sizeof a->word) {
			a->word[a->wlen++] = *a->p;
		}
		a->p++;
	}
	return 'w';
}

/* Appends the word to s (a space between words). */
static void addr_cat(char *s, size_t *n, size_t cap, const struct atok *a, int space)
{
	if (space && *n > 0 && *n < cap) {
		s[(*n)++] = ' ';
	}
	if (a->wlen <= cap - *n) {
		memcpy(s + *n, a->word, a->wlen);
		*n += a->wlen;
	}
}

/* "(" before a list's first element. */
static void list_open(struct out *o, int *any)
{
	if ((*any)++ == 0) {
		out_str(o, "(");
	}
}

static void out_nstr(struct out *o, const char *p, size_t n)
{
	out_string(o, n > 0 ? p : NULL, n);
}

/* An address list as ((name adl mailbox host) ...), groups as RFC 3501
 * 7.4.2 marks them; NIL for none. */
static void envelope_addrs(struct out *o, const char *v, size_t len)
{
	static char phrase[512], local[512], domain[512], adl[512];
	static struct atok a;
	size_t pl = 0, ll = 0, dl = 0, rl = 0;
	int t, any = 0, in_angle = 0, at = 0, group = 0, route = 0;

	a.p = v;
	a.end = v + len;
	a.specials = "<>@,:;";
	a.clen = 0;
	for (;;) {
		t = addr_next(&a);
		if (route && (t == 'w' || t == '@' || t == ',')) {
			/* A source route, "<@a,@b:user@host>": the adl. */
			if (t == 'w') {
				addr_cat(adl, &rl, sizeof adl, &a, 0);
			} else if (rl < sizeof adl) {
				adl[rl++] = (char)t;
			}
			continue;
		}
		if (t == 'w') {
			if (at) {
				addr_cat(domain, &dl, sizeof domain, &a, 0);
			} else if (in_angle) {
				addr_cat(local, &ll, sizeof local, &a, 0);
			} else {
				addr_cat(phrase, &pl, sizeof phrase, &a, 1);
			}
			continue;
		}
		if (t == '<') {
			in_angle = 1;
			at = 0;
			ll = dl = rl = 0;
			continue;
		}
		if (t == '@') {
			if (in_angle && ll == 0) {
				route = 1;
				adl[rl++] = '@';
				continue;
			}
			if (!in_angle && ll == 0) {
				/* addr-spec without angles: the phrase was the local part */
				memcpy(local, phrase, pl);
				ll = pl;
				pl = 0;
			}
			at = 1;
			continue;
		}
		if (t == ':' && in_angle) {
			route = 0;   /* the route ends; the address follows */
			continue;
		}
		if (t == ':') {
			/* group start: (NIL NIL "name" NIL) */
			list_open(o, &any);
			out_str(o, "(NIL NIL ");
			out_nstr(o, phrase, pl);
			out_str(o, " NIL)");
			group = 1;
			pl = 0;
			a.clen = 0;
			continue;
		}
		if (t == '>') {
			in_angle = 0;
			continue;
		}
		/* ',', ';' or the end: an address is complete. */
		if (ll > 0 || dl > 0) {
			list_open(o, &any);
			out_str(o, "(");
			if (pl == 0 && a.clen > 0 && a.clen < sizeof a.comment) {
				out_string(o, a.comment, a.clen);   /* "user@host (Name)" */
			} else {
				out_nstr(o, phrase, pl);
			}
			out_str(o, " ");
			out_nstr(o, adl, rl);
			out_str(o, " ");
			out_string(o, local, ll);
			out_str(o, " ");
			out_string(o, domain, dl);
			out_str(o, ")");
		} else if (pl > 0 && t != ';') {
			/* A bare word: a local name with no domain. */
			list_open(o, &any);
			out_str(o, "(NIL NIL ");
			out_string(o, phrase, pl);
			out_str(o, " \"MISSING_DOMAIN\")");   /* Dovecot's word for it */
		}
		pl = ll = dl = rl = 0;
		at = in_angle = route = 0;
		a.clen = 0;
		if (t == ';' && group) {
			out_str(o, "(NIL NIL NIL NIL)");
			group = 0;
		}
		if (t == 0) {
			break;
		}
	}
	if (group) {
		out_str(o, "(NIL NIL NIL NIL)");
	}
	out_str(o, any ? ")" : "NIL");
}

static void envelope(struct out *o, int fd, uint64_t fpos)
{
	static char buf[ENV_MAX];
	struct capture c;
	const char *v;
	size_t len;
	unsigned i, from;

	capture(&c, env_names, 10, buf, sizeof buf, fd, fpos);
	out_str(o, "(");
	for (i = 0; i < 10; i++) {
		if (i > 0) {
			out_str(o, " ");
		}
		v = val(&c, i, &len);
		/* Sender and Reply-To default to From (RFC 3501 7.4.2). */
		from = (i == E_SENDER || i == E_REPLY_TO) && (v == NULL || len == 0);
		if (from) {
			v = val(&c, E_FROM, &len);
		}
		if (i >= E_FROM && i <= E_BCC) {
			if (v == NULL) {
				out_str(o, "NIL");
			} else {
				envelope_addrs(o, v, len);
			}
		} else {
			out_nstr(o, v, v == NULL ? 0 : len);
		}
	}
	out_str(o, ")");
}

/* ---- BODYSTRUCTURE ---------------------------------------------------------- */

enum { C_TYPE, C_ID, C_DESC, C_ENC, C_DISP, C_LANG, C_LOC, C_MD5 };

static const char *const part_names[8] = {
	"Content-Type", "Content-ID", "Content-Description", "Content-Transfer-Encoding",
	"Content-Disposition", "Content-Language", "Content-Location", "Content-MD5",
};

#define PARAMS_MAX 32

/* "(" before a list's first element, " " before the others. */
static void list_sep(struct out *o, int *any)
{
	out_str(o, (*any)++ == 0 ? "(" : " ");
}

/* The parameters after a value's first ';' (v to end), as ("attr"
 * "value" ...) or NIL.  Comments are skipped.  RFC 2231 continuations
 * (name*0, name*1*, ...) are joined, after the plain ones, into "name",
 * or "name*" when a piece is encoded; a text part without a charset gets
 * charset us-ascii (RFC 2045 5.2).  Dovecot answers the same. */
static void params(struct out *o, const char *v, const char *end, int text)
{
	static char buf[8192], joined[2048];
	static struct atok a;
	struct {
		size_t a, al, v, vl, base;
		unsigned idx;
		int ext;
	} p[PARAMS_MAX];
	unsigned n = 0, i, k, idx;
	size_t used = 0, bl, jl;
	int any = 0, charset = 0, t, enc;
	const char *star;

	a.p = v;
	a.end = end;
	a.specials = ";=";
	t = addr_next(&a);
	while (t != 0) {
		if (t != ';' || n == PARAMS_MAX) {
			t = addr_next(&a);
			continue;
		}
		/* ";" attr "=" value */
		if ((t = addr_next(&a)) != 'w' || used + a.wlen > sizeof buf) {
			continue;
		}
		p[n].a = used;
		p[n].al = a.wlen;
		memcpy(buf + used, a.word, a.wlen);
		used += a.wlen;
		if ((t = addr_next(&a)) != '=' || (t = addr_next(&a)) != 'w' ||
		    used + a.wlen > sizeof buf) {
			continue;
		}
		p[n].v = used;
		p[n].vl = a.wlen;
		memcpy(buf + used, a.word, a.wlen);
		used += a.wlen;
		star = memchr(buf + p[n].a, '*', p[n].al);
		p[n].base = star != NULL ? (size_t)(star - buf - p[n].a) : p[n].al;
		p[n].ext = buf[p[n].a + p[n].al - 1] == '*';
		p[n].idx = star != NULL && star[1] >= '0' && star[1] <= '9' ? (unsigned)atoi(star + 1) :
		           0;
		charset |= p[n].al == 7 && strncasecmp(buf + p[n].a, "charset", 7) == 0;
		n++;
		t = addr_next(&a);
	}
	for (i = 0; i < n; i++) {
		if (p[i].base == p[i].al) {
			list_sep(o, &any);
			out_string(o, buf + p[i].a, p[i].al);
			out_str(o, " ");
			out_string(o, buf + p[i].v, p[i].vl);
		}
	}
	for (i = 0; i < n; i++) {
		bl = p[i].base;
		for (k = 0; k < i && !(p[k].base == bl && strncasecmp(buf + p[k].a, buf + p[i].a, bl) == 0);
		     k++) {
		}
		if (bl == p[i].al || k < i) {
			continue;   /* a plain one, or joined with its first piece */
		}
		for (enc = 0, jl = 0, idx = 0; idx < PARAMS_MAX; idx++) {
			for (k = i; k < n; k++) {
				if (p[k].base == bl && p[k].base != p[k].al && p[k].idx == idx &&
				    strncasecmp(buf + p[k].a, buf + p[i].a, bl) == 0 &&
				    jl + p[k].vl <= sizeof joined) {
					memcpy(joined + jl, buf + p[k].v, p[k].vl);
					jl += p[k].vl;
					enc |= p[k].ext;
				}
			}
		}
		list_sep(o, &any);
		out_printf(o, "\"%.*s%s\" ", (int)bl, buf + p[i].a, enc ? "*" : "");
		out_string(o, joined, jl);
	}
	if (text && !charset) {
		list_sep(o, &any);
		out_str(o, "\"charset\" \"us-ascii\"");
	}
	out_str(o, any ? ")" : "NIL");
}

/* "type" "subtype" of a Content-Type value; *rest after them. */
static void media(struct out *o, const char *v, size_t len, const char **rest, int digest)
{
	const char *end, *slash, *sub, *se;

	if (v == NULL || len == 0) {
		out_str(o, digest ? "\"message\" \"rfc822\"" : "\"text\" \"plain\"");
		*rest = NULL;
		return;
	}
	end = v + len;
	slash = memchr(v, '/', len);
	sub = slash != NULL ? slash + 1 : end;
	for (se = sub; se < end && *se != ';' && *se != ' ' && *se != '\t' && *se != '('; se++) {
	}
	out_string(o, v, (size_t)((slash != NULL ? slash : se) - v));
	out_str(o, " ");
	out_string(o, sub, (size_t)(se - sub));   /* "" when there is none, as Dovecot */
	*rest = se;
}

/* 1 if the Content-Type value v is of type t ("text") and, when sub is
 * not NULL, of that subtype. */
static int is_type(const char *v, size_t len, const char *t, const char *sub)
{
	size_t n = strlen(t), k;

	if (v == NULL || len < n || strncasecmp(v, t, n) != 0 || (n < len && v[n] != '/' &&
	                                                            v[n] != ';' && v[n] != ' ')) {
		return 0;
	}
	if (sub == NULL) {
		return 1;
	}
	k = strlen(sub);
	return len >= n + 1 + k && v[n] == '/' && strncasecmp(v + n + 1, sub, k) == 0 &&
	       (len == n + 1 + k || v[n + 1 + k] == ';' || v[n + 1 + k] == ' ' ||
	        v[n + 1 + k] == '\t');
}

/* body-fld-dsp, body-fld-lang and body-fld-loc, with body-fld-md5 first
 * for a leaf. */
static void extension(struct out *o, const struct capture *c, int leaf)
{
	const char *v, *e;
	size_t len, n;
	int any;

	if (leaf) {
		out_str(o, " ");
		v = val(c, C_MD5, &len);
		out_nstr(o, v, v == NULL ? 0 : len);
	}
	out_str(o, " ");
	v = val(c, C_DISP, &len);
	if (v == NULL || len == 0) {
		out_str(o, "NIL");
	} else {
		for (n = 0; n < len && v[n] != ';'; n++) {
		}
		while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t')) {
			n--;
		}
		out_str(o, "(");
		out_string(o, v, n);
		out_str(o, " ");
		params(o, v, v + len, 0);
		out_str(o, ")");
	}
	out_str(o, " ");
	v = val(c, C_LANG, &len);
	if (v == NULL || len == 0) {
		out_str(o, "NIL");
	} else {
		for (any = 0, e = v + len; v < e; v += n + 1) {
			while (v < e && (*v == ' ' || *v == '\t')) {
				v++;
			}
			for (n = 0; v + n < e && v[n] != ',' && v[n] != ' '; n++) {
			}
			if (n > 0) {
				out_str(o, any++ ? " " : "(");
				out_string(o, v, n);
			}
		}
		out_str(o, any ? ")" : "NIL");
	}
	out_str(o, " ");
	v = val(c, C_LOC, &len);
	out_nstr(o, v, v == NULL ? 0 : len);
}

/* A part standing in for one that cannot be looked into. */
static void empty_body(struct out *o, int ext)
{
	out_str(o, ext ? "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL)" :
	        "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)");
}

/* The BODYSTRUCTURE (ext) or BODY of part i. */
static void structure(struct out *o, const struct msgparts *mp, unsigned i, int fd, int ext)
{
	static char buf[PART_MAX];
	const struct part *p = &mp->p[i];
	int digest = p->parent != 0xffff && mp->p[p->parent].digest;
	struct capture c;
	const char *v, *rest;
	size_t len, elen;
	unsigned k;

	out_str(o, "(");
	if (p->kind == PK_MULTI) {
		for (k = p->first; k != 0; k = mp->p[k].next) {
			structure(o, mp, k, fd, ext);
		}
		if (p->first == 0) {
			empty_body(o, ext);
		}
		/* The multipart's own fields come after its parts: read them now. */
		capture(&c, part_names, 8, buf, sizeof buf, fd, p->fhdr);
		v = val(&c, C_TYPE, &len);
		if (v == NULL) {
			v = "multipart/mixed";
			len = 15;
		}
		rest = memchr(v, '/', len);
		rest = rest != NULL ? rest + 1 : v + len;
		for (elen = 0; rest + elen < v + len && rest[elen] != ';' && rest[elen] != ' ' &&
		               rest[elen] != '\t' && rest[elen] != '('; elen++) {
		}
		out_str(o, " ");
		out_string(o, rest, elen);
		if (ext) {
			out_str(o, " ");
			params(o, rest + elen, v + len, 0);
			extension(o, &c, 0);
		}
		out_str(o, ")");
		return;
	}
	capture(&c, part_names, 8, buf, sizeof buf, fd, p->fhdr);
	v = val(&c, C_TYPE, &len);
	media(o, v, len, &rest, digest);
	out_str(o, " ");
	if (rest != NULL) {
		params(o, rest, v + len, is_type(v, len, "text", NULL));
	} else {
		out_str(o, digest ? "NIL" : "(\"charset\" \"us-ascii\")");
	}
	out_str(o, " ");
	v = val(&c, C_ID, &len);
	out_nstr(o, v, v == NULL ? 0 : len);
	out_str(o, " ");
	v = val(&c, C_DESC, &len);
	out_nstr(o, v, v == NULL ? 0 : len);
	out_str(o, " ");
	v = val(&c, C_ENC, &elen);
	if (v == NULL || elen == 0) {
		out_str(o, "\"7bit\"");
	} else {
		out_string(o, v, elen);
	}
	out_printf(o, " %" PRIu64, p->end - p->body);
	v = val(&c, C_TYPE, &len);
	if (p->kind == PK_MESSAGE || (digest && v == NULL) || is_type(v, len, "message", "rfc822")) {
		out_str(o, " ");
		if (p->kind == PK_MESSAGE) {
			envelope(o, fd, mp->p[p->first].fhdr);
			out_str(o, " ");
			structure(o, mp, p->first, fd, ext);
		} else {
			/* Encoded or past the limits: not looked into. */
			out_str(o, "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ");
			empty_body(o, ext);
		}
		out_printf(o, " %" PRIu32, p->lines);
		/* The message's parts used the buffer: this part's fields again. */
		capture(&c, part_names, 8, buf, sizeof buf, fd, p->fhdr);
	} else if (v == NULL || is_type(v, len, "text", NULL)) {
		out_printf(o, " %" PRIu32, p->lines);
	}
	if (ext) {
		extension(o, &c, 1);
	}
	out_str(o, ")");
}

/* ---- sections ------------------------------------------------------------ */

/* The content of a section: a range of the message, or (HEADER.FIELDS) a
 * header filtered.  -1 when the numbers name no part. */
static int section_range(const struct msgparts *mp, const struct fetch_item *it, uint64_t *a,
                         uint64_t *b, uint64_t *fpos)
{
	const struct part *p;
	int i;

	if (it->depth == 0 && it->sect == SK_ALL) {
		*a = 0;
		*b = mp->size;
		*fpos = 0;
		return 0;
	}
	i = msg_part_find(mp, it->part, it->depth);
	if (i < 0) {
		return -1;
	}
	p = &mp->p[i];
	if (it->depth > 0 && it->sect != SK_ALL && it->sect != SK_MIME) {
		/* HEADER, TEXT, HEADER.FIELDS of a part: its message's. */
		if (p->kind != PK_MESSAGE) {
			return -1;
		}
		p = &mp->p[p->first];
	}
	if (it->sect == SK_ALL && it->depth > 0) {
		*a = p->body;
		*b = p->end;
		*fpos = p->fbody;
	} else if (it->sect == SK_TEXT) {
		*a = p->body;
		*b = p->end;
		*fpos = p->fbody;
	} else {
		*a = p->hdr;
		*b = p->body;
		*fpos = p->fhdr;
	}
	return 0;
}

/* 1 if name is in the list "A B C" of the item. */
static int field_listed(const struct fetch_item *it, const char *name, size_t nlen)
{
	const char *p = it->fields.p, *end = p + it->fields.len;
	size_t n;

	while (p < end) {
		n = strcspn(p, " ");
		n = (size_t)(end - p) < n ? (size_t)(end - p) : n;
		if (n == nlen && strncasecmp(p, name, n) == 0) {
			return 1;
		}
		p += n + 1;
	}
	return 0;
}

/* HEADER.FIELDS[.NOT]: the header's lines of the fields listed (or not
 * listed), then a blank line; only [from, to) of it into o. */
static void fields(struct out *o, int fd, uint64_t fpos, const struct fetch_item *it,
                   uint64_t from, uint64_t to)
{
	static struct wreader r;
	static char line[HDR_VALUE_MAX + 2];
	uint64_t pos = 0, full, a, b;
	size_t len, n;
	int keep = 0, more;

	wr_init(&r, fd, fpos, 0);
	do {
		more = wr_line(&r, line, sizeof line - 2, &len, &full);
		if (!more || full == 0) {
			len = 0;
			more = 0;
			keep = 1;   /* the blank line that ends it */
		} else if (line[0] != ' ' && line[0] != '\t') {
			n = (size_t)((char *)memchr(line, ':', len) != NULL ?
			             (char *)memchr(line, ':', len) - line : 0);
			while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t')) {
				n--;
			}
			keep = n > 0 && field_listed(it, line, n) == (it->sect == SK_FIELDS);
		}
		if (!keep) {
			continue;
		}
		line[len] = '\r';
		line[len + 1] = '\n';
		a = pos > from ? pos : from;
		b = pos + len + 2 < to ? pos + len + 2 : to;
		if (b > a) {
			out_put(o, line + (a - pos), (size_t)(b - a));
		}
		pos += len + 2;
	} while (more);
}

/* ---- the items ------------------------------------------------------------- */

static void section_name(struct out *o, const struct fetch_item *it)
{
	static const char *const texts[] = { "", "HEADER", "TEXT", "MIME", "HEADER.FIELDS",
	                                     "HEADER.FIELDS.NOT" };
	static const char *const rfc822[] = { "RFC822", "RFC822.HEADER", "RFC822.TEXT" };
	unsigned k;

	if (it->name > 0) {
		out_printf(o, "%s ", rfc822[it->name - 1]);
		return;
	}
	out_str(o, "BODY[");
	for (k = 0; k < it->depth; k++) {
		out_printf(o, "%s%u", k > 0 ? "." : "", it->part[k]);
	}
	if (it->sect != SK_ALL) {
		out_printf(o, "%s%s", it->depth > 0 ? "." : "", texts[it->sect]);
	}
	if (it->sect == SK_FIELDS || it->sect == SK_FIELDS_NOT) {
		out_str(o, " (");
		out_put(o, it->fields.p, it->fields.len);
		out_str(o, ")");
	}
	out_str(o, "]");
	if (it->partial) {
		out_printf(o, "<%" PRIu32 ">", it->off);
	}
	out_str(o, " ");
}

/* Sets up the literal of a section item in j (range or filtered) and
 * returns its length; -1 when the message cannot be read. */
static int64_t literal_setup(struct imap_session *s, const struct fetch_item *it)
{
	struct fetch_job *j = &s->box->u.fetch;
	struct msgparts *mp = parts_of(s, j->cursor, s->box->msgfd);
	uint64_t a = 0, b = 0, fpos = 0, len;
	struct out count;

	if (mp == NULL) {
		return -1;
	}
	if (section_range(mp, it, &a, &b, &fpos) < 0) {
		a = b = fpos = 0;   /* no such part: an empty string */
	}
	if (it->sect == SK_FIELDS || it->sect == SK_FIELDS_NOT) {
		out_start(&count, NULL, 0);
		fields(&count, s->box->msgfd, fpos, it, 0, UINT64_MAX);
		a = 0;
		b = count.pos;
	}
	len = b - a;
	j->fwoff = a;   /* where fpos's line starts on the wire */
	j->fpos = fpos;
	if (it->partial) {
		len = it->off >= len ? 0 : len - it->off < it->len ? len - it->off : it->len;
		a += it->off >= b - a ? b - a : it->off;
	}
	j->lstart = a;
	j->lend = a + len;
	return (int64_t)len;
}

static void item_text(struct imap_session *s, struct out *o, const struct fetch_item *it)
{
	struct fetch_job *j = &s->box->u.fetch;
	struct folder *f = &s->box->f;
	struct msgparts *mp;
	struct tm tm;
	time_t t;
	int64_t len;

	switch (it->kind) {
	case FK_UID:
		out_printf(o, "UID %" PRIu32, f->msgs[j->cursor].uid);
		break;
	case FK_FLAGS:
		out_str(o, "FLAGS ");
		imap_flags(o, f->msgs[j->cursor].flags);
		break;
	case FK_INTERNALDATE:
		t = folder_date(f, j->cursor);
		gmtime_r(&t, &tm);
		out_printf(o, "INTERNALDATE \"%2d-%s-%04d %02d:%02d:%02d +0000\"", tm.tm_mday,
		           month_name((unsigned)tm.tm_mon + 1), tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
		           tm.tm_sec);
		break;
	case FK_SIZE:
		out_printf(o, "RFC822.SIZE %" PRIu32, folder_size(f, j->cursor) == FOLDER_SIZE_UNKNOWN ?
		           0 : folder_size(f, j->cursor));
		break;
	case FK_ENVELOPE:
		out_str(o, "ENVELOPE ");
		envelope(o, s->box->msgfd, 0);
		break;
	case FK_BODYSTRUCTURE:
	case FK_BODY:
		mp = parts_of(s, j->cursor, s->box->msgfd);
		out_str(o, it->kind == FK_BODY ? "BODY " : "BODYSTRUCTURE ");
		if (mp != NULL) {
			structure(o, mp, 0, s->box->msgfd, it->kind == FK_BODYSTRUCTURE);
		}
		break;
	default:
		section_name(o, it);
		len = literal_setup(s, it);
		out_printf(o, "{%" PRId64 "}\r\n", len < 0 ? 0 : len);
		break;
	}
}

/* Streams the literal of a range: 1 when it is all out, 0 for more
 * rounds.  The reader's place is kept in the job between rounds; the
 * box remembers where a literal ended, so that a client fetching a big
 * message in pieces (<0.65536>, <65536.65536>...) is not read from its
 * start each time. */
static int stream(struct imap_session *s)
{
	struct imap_box *b = s->box;
	struct fetch_job *j = &b->u.fetch;
	static struct wreader r;
	unsigned char buf[CONN_OUT_SIZE];
	uint64_t start, from, to;
	size_t room, n;

	if (j->lend <= j->lstart) {
		return 1;
	}
	if (j->phase == 1) {
		/* Where to start: the section's first line, or further on. */
		j->phase = 2;
		j->rpos = j->fpos;
		j->rwoff = j->fwoff;
		j->rcr = 0;
		j->rbol = 1;
		if (b->hint_uid == b->f.msgs[j->cursor].uid && b->hint_validity == b->f.validity &&
		    b->hint_woff <= j->lstart && b->hint_woff >= j->rwoff) {
			j->rpos = b->hint_pos;
			j->rwoff = b->hint_woff;
			j->rcr = b->hint_cr;
			j->rbol = b->hint_bol;
		}
	}
	wr_init(&r, s->box->msgfd, j->rpos, j->rwoff);
	r.cr = j->rcr;
	r.bol = j->rbol;
	for (;;) {
		/* What is before lstart is read and dropped; what is sent must
		 * fit the output. */
		room = conn_room(&s->conn);
		room = (r.woff < j->lstart ? j->lstart - r.woff : 0) + (room >= 64 ? room : 0);
		if (room < 3) {
			break;
		}
		start = r.woff;
		b->hint_uid = b->f.msgs[j->cursor].uid;
		b->hint_validity = b->f.validity;
		b->hint_pos = r.pos;
		b->hint_woff = r.woff;
		b->hint_cr = r.cr;
		b->hint_bol = r.bol;
		n = wr_read(&r, buf, room < sizeof buf ? room : sizeof buf);
		if (n == 0) {
			/* The file is shorter than the literal said: the only
			 * honest end of this response is to close. */
			s->conn.err = EIO;
			return 1;
		}
		from = start > j->lstart ? start : j->lstart;
		to = start + n < j->lend ? start + n : j->lend;
		if (to > from) {
			conn_put(&s->conn, buf + (from - start), (size_t)(to - from));
			s->bytes_out += to - from;
		}
		if (r.woff >= j->lend) {
			return 1;
		}
	}
	j->rpos = r.pos;
	j->rwoff = r.woff;
	j->rcr = r.cr;
	j->rbol = r.bol;
	return 0;
}

/* ---- the job --------------------------------------------------------------- */

static int needs_file(const struct fetch_item *it)
{
	return it->kind >= FK_ENVELOPE;
}

/* Sets up message j->cursor: 0 to leave it out of the responses. */
static int begin_message(struct imap_session *s)
{
	struct fetch_job *j = &s->box->u.fetch;
	struct folder *f = &s->box->f;
	struct fmsg *m = &f->msgs[j->cursor];
	struct msgparts *mp;
	unsigned k;
	int file = 0, seen = 0, deep = 0;

	for (k = 0; k < j->n; k++) {
		file |= needs_file(&j->items[k]);
		seen |= j->items[k].kind == FK_SECTION && !j->items[k].peek;
		deep |= j->items[k].kind == FK_BODY || j->items[k].kind == FK_BODYSTRUCTURE ||
		        (j->items[k].kind == FK_SECTION && j->items[k].depth > 0);
	}
	if (file) {
		/* An expunged message's UID and flags are known still, not its text. */
		s->box->msgfd = m->state & MS_GONE ? -1 : folder_open_msg(f, j->cursor);
		if (s->box->msgfd < 0) {
			j->gone = 1;
			return 0;
		}
		mp = deep ? parts_of(s, j->cursor, s->box->msgfd) : NULL;
		if (deep && (mp == NULL || mp->truncated)) {
			(void)io_close(s->box->msgfd);
			s->box->msgfd = -1;
			j->failed = 1;
			return 0;
		}
	}
	j->flags_added = 0;
	if (seen && !f->readonly && !(m->flags & FL_SEEN) && !(m->state & MS_GONE)) {
		/* RFC 3501 6.4.5: BODY[] sets \Seen; FLAGS joins the response. */
		if (folder_set_flags(f, j->cursor, m->flags | FL_SEEN) == 0) {
			j->seen_set = 1;
			for (k = 0; k < j->n && j->items[k].kind != FK_FLAGS; k++) {
			}
			j->flags_added = k == j->n;
		}
	}
	s->fetched++;
	return 1;
}

static int fetch_job(struct imap_session *s)
{
	struct fetch_job *j = &s->box->u.fetch;
	struct folder *f = &s->box->f;
	const struct fetch_item *it;
	unsigned last;
	struct out o;
	int e;

	for (;;) {
		if (!j->started) {
			/* The next message of the set. */
			while (j->cursor < f->n && !(f->msgs[j->cursor].state & MS_MARK)) {
				j->cursor++;
			}
			if (j->cursor == f->n) {
				break;
			}
			if (!begin_message(s)) {
				j->cursor++;
				continue;
			}
			j->started = 1;
			j->item = 0;
			j->phase = 0;
			j->sent = 0;
		}
		if (conn_room(&s->conn) < IMAP_ROOM) {
			return 0;
		}
		last = j->n + 1 + (unsigned)j->flags_added;
		it = j->item >= 1 && j->item <= j->n ? &j->items[j->item - 1] : NULL;
		if (j->phase >= 1) {
			if (!(it->sect == SK_FIELDS || it->sect == SK_FIELDS_NOT)) {
				if (!stream(s)) {
					return 0;
				}
			} else {
				out_start(&o, &s->conn, j->sent);
				fields(&o, s->box->msgfd, j->fpos, it, j->lstart, j->lend);
				if (!out_done(&o)) {
					j->sent = o.limit;
					return 0;
				}
				s->bytes_out += j->lend - j->lstart;
			}
			j->phase = 0;
			j->sent = 0;
			j->item++;
			continue;
		}
		out_start(&o, &s->conn, j->sent);
		if (j->item == 0) {
			out_printf(&o, "* %u FETCH (", j->cursor + 1);
		} else if (j->item == last) {
			out_str(&o, ")\r\n");
		} else {
			if (j->item > 1) {
				out_str(&o, " ");
			}
			if (it != NULL) {
				item_text(s, &o, it);
			} else {
				out_str(&o, "FLAGS ");
				imap_flags(&o, f->msgs[j->cursor].flags);
			}
		}
		if (!out_done(&o)) {
			j->sent = o.limit;
			return 0;
		}
		j->sent = 0;
		if (it != NULL && it->kind == FK_SECTION) {
			j->phase = 1;
			continue;
		}
		if (j->item++ == last) {
			j->started = 0;
			fetch_stop(s);
			j->cursor++;
		}
	}
	e = j->seen_set ? folder_commit(f) : 0;
	if (e != 0) {
		imap_done(s, "NO [UNAVAILABLE] Setting \\Seen failed, try again later");
	} else if (j->failed) {
		imap_done(s, "NO [LIMIT] Some messages are nested deeper than %d levels or have more "
		          "than %d parts", MIME_DEPTH_MAX, MIME_PARTS_MAX);
	} else if (j->gone) {
		imap_done(s, "NO [EXPUNGEISSUED] Some messages were expunged meanwhile");
	} else {
		imap_done(s, "OK FETCH completed");
	}
	return 1;
}

/* ---- parsing --------------------------------------------------------------- */

/* A header list "(A B)" normalized in place to "A B" (astrings decoded;
 * a name must be printable, without space or ':'). */
static void header_list(struct imap_tok *t, struct imap_str *out)
{
	struct imap_str name;
	char *w;
	size_t k;

	tok_sp(t);
	if (!tok_is(t, '(')) {
		t->err = 1;
		return;
	}
	out->p = w = t->p;
	while (!t->err && !tok_is(t, ')')) {
		if (w != out->p) {
			tok_sp(t);
		}
		tok_astring(t, &name);
		for (k = 0; k < name.len && !t->err; k++) {
			if ((unsigned char)name.p[k] <= ' ' || (unsigned char)name.p[k] >= 0x7f ||
			    name.p[k] == ':') {
				t->err = 1;
			}
		}
		if (t->err || name.len == 0) {
			t->err = 1;
			break;
		}
		if (w != out->p) {
			*w++ = ' ';
		}
		memmove(w, name.p, name.len);
		w += name.len;
	}
	out->len = (size_t)(w - out->p);
	if (out->len == 0) {
		t->err = 1;
	}
}

/* "[" section "]" ["<" off "." len ">"] after BODY or BODY.PEEK. */
static void section(struct imap_tok *t, struct fetch_item *it)
{
	static const char *const texts[] = { "HEADER.FIELDS.NOT", "HEADER.FIELDS", "HEADER", "TEXT",
	                                     "MIME" };
	static const uint8_t kinds[] = { SK_FIELDS_NOT, SK_FIELDS, SK_HEADER, SK_TEXT, SK_MIME };
	uint32_t v;
	size_t n;
	unsigned i;

	it->kind = FK_SECTION;
	it->sect = SK_ALL;
	if (!tok_is(t, '[')) {
		t->err = 1;
		return;
	}
	while (!t->err && t->p < t->end && *t->p >= '0' && *t->p <= '9') {
		v = tok_number(t);
		if (v == 0 || v > 0xffff || it->depth == SECTION_DEPTH) {
			t->err = 1;
			return;
		}
		it->part[it->depth++] = (uint16_t)v;
		if (!tok_is(t, '.')) {
			break;
		}
		if (t->p == t->end || *t->p < '0' || *t->p > '9') {
			it->sect = 0xff;   /* a text part follows */
		}
	}
	if (it->sect == 0xff || (it->depth == 0 && t->p < t->end && *t->p != ']')) {
		for (i = 0; i < 5; i++) {
			n = strlen(texts[i]);
			if ((size_t)(t->end - t->p) >= n && strncasecmp(t->p, texts[i], n) == 0 &&
			    (t->p[n] == ']' || t->p[n] == ' ')) {
				break;
			}
		}
		if (i == 5 || (kinds[i] == SK_MIME && it->depth == 0)) {
			t->err = 1;
			return;
		}
		t->p += n;
		it->sect = kinds[i];
		if (it->sect == SK_FIELDS || it->sect == SK_FIELDS_NOT) {
			header_list(t, &it->fields);
		}
	}
	if (!tok_is(t, ']')) {
		t->err = 1;
		return;
	}
	if (tok_is(t, '<')) {
		it->partial = 1;
		it->off = tok_number(t);
		if (!tok_is(t, '.')) {
			t->err = 1;
		}
		it->len = tok_number(t);
		if (!tok_is(t, '>') || it->len == 0) {
			t->err = 1;
		}
	}
}

static void add(struct imap_tok *t, struct fetch_job *j, unsigned kind)
{
	if (j->n == FETCH_ITEMS_MAX - 1) {
		t->err = 1;
		return;
	}
	memset(&j->items[j->n], 0, sizeof j->items[0]);
	j->items[j->n++].kind = (uint8_t)kind;
}

/* One fetch-att (or, at the top, a macro). */
static void att(struct imap_tok *t, struct fetch_job *j, int top)
{
	static const struct { const char *name; int kind; } simple[] = {
		{ "UID", FK_UID }, { "FLAGS", FK_FLAGS }, { "INTERNALDATE", FK_INTERNALDATE },
		{ "RFC822.SIZE", FK_SIZE }, { "ENVELOPE", FK_ENVELOPE },
		{ "BODYSTRUCTURE", FK_BODYSTRUCTURE },
	};
	static const char *const macros[] = { "FAST", "ALL", "FULL" };
	struct fetch_item *it;
	const char *w = t->p;
	size_t n;
	unsigned i;

	while (t->p < t->end && (((*t->p | 0x20) >= 'a' && (*t->p | 0x20) <= 'z') ||
	                         (*t->p >= '0' && *t->p <= '9') || *t->p == '.')) {
		t->p++;
	}
	n = (size_t)(t->p - w);
	for (i = 0; i < 3 && top; i++) {
		if (n == strlen(macros[i]) && strncasecmp(w, macros[i], n) == 0) {
			add(t, j, FK_FLAGS);
			add(t, j, FK_INTERNALDATE);
			add(t, j, FK_SIZE);
			if (i > 0) {
				add(t, j, FK_ENVELOPE);
			}
			if (i > 1) {
				add(t, j, FK_BODY);
			}
			return;
		}
	}
	for (i = 0; i < sizeof simple / sizeof simple[0]; i++) {
		if (n == strlen(simple[i].name) && strncasecmp(w, simple[i].name, n) == 0) {
			add(t, j, (unsigned)simple[i].kind);
			return;
		}
	}
	add(t, j, FK_SECTION);
	if (t->err) {
		return;
	}
	it = &j->items[j->n - 1];
	if (n == 6 && strncasecmp(w, "RFC822", 6) == 0) {
		it->name = 1;
	} else if (n == 13 && strncasecmp(w, "RFC822.HEADER", 13) == 0) {
		it->name = 2;
		it->sect = SK_HEADER;
		it->peek = 1;
	} else if (n == 11 && strncasecmp(w, "RFC822.TEXT", 11) == 0) {
		it->name = 3;
		it->sect = SK_TEXT;
	} else if (n == 4 && strncasecmp(w, "BODY", 4) == 0) {
		if (t->p == t->end || *t->p != '[') {
			it->kind = FK_BODY;
		} else {
			section(t, it);
		}
	} else if (n == 9 && strncasecmp(w, "BODY.PEEK", 9) == 0) {
		it->peek = 1;
		section(t, it);
	} else {
		t->err = 1;
	}
}

void fetch_start(struct imap_session *s, struct imap_tok *t, int uid)
{
	struct fetch_job *j = &s->box->u.fetch;
	struct imap_str set;
	unsigned k;

	fetch_stop(s);
	memset(j, 0, sizeof *j);
	j->uid = uid;
	tok_sp(t);
	tok_seqset(t, &set);
	tok_sp(t);
	if (tok_is(t, '(')) {
		do {
			att(t, j, 0);
		} while (!t->err && tok_is(t, ' '));
		if (!tok_is(t, ')')) {
			t->err = 1;
		}
	} else {
		att(t, j, 1);
	}
	for (k = 0; k < j->n && j->items[k].kind != FK_UID; k++) {
	}
	if (uid && k == j->n) {
		add(t, j, FK_UID);   /* UID FETCH answers with UIDs (RFC 3501 6.4.8) */
	}
	if (!tok_end(t) || j->n == 0) {
		imap_bad(s, "Syntax: FETCH set (items)");
		return;
	}
	if (imap_set_bad(s, &set, uid)) {
		imap_bad(s, "No such message");
		return;
	}
	(void)imap_mark(s, &set, uid);
	s->quiet = !uid;
	s->job = fetch_job;
	s->mode = IM_JOB;
}
