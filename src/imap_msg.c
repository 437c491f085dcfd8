/* imap_msg.c - a message file read as IMAP sees it (imap_msg.h). */
#include "imap_msg.h"
#include "imap_parse.h"

#include <errno.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define LINE_KEEP 1024          /* octets of a line the part scanner looks at */
#define BOUNDARY_MAX 100        /* RFC 2046 says 70; a little slack */
#define UNSET UINT64_MAX

void wr_init(struct wreader *r, int fd, uint64_t pos, uint64_t woff)
{
	r->fd = fd;
	r->pos = pos;
	r->woff = woff;
	r->cr = 0;
	r->bol = 1;
	r->eof = 0;
	r->ilen = r->ipos = 0;
}

/* More input: 1, or 0 at the end (r->eof 1) or on an error (-1). */
static int fill(struct wreader *r)
{
	ssize_t n;

	if (r->eof) {
		return 0;
	}
	r->ilen = r->ipos = 0;
	do {
		n = pread(r->fd, r->in, sizeof r->in, (off_t)r->pos);
	} while (n < 0 && errno == EINTR);
	if (n <= 0) {
		r->eof = n == 0 ? 1 : -1;
		return 0;
	}
	r->ilen = (size_t)n;
	return 1;
}

size_t wr_read(struct wreader *r, unsigned char *out, size_t cap)
{
	size_t o = 0;
	unsigned char ch;

	while (o + 3 <= cap) {
		if (r->ipos == r->ilen && !fill(r)) {
			/* The last line gets its line end. */
			if (r->eof > 0 && (r->cr || !r->bol)) {
				out[o++] = '\r';
				out[o++] = '\n';
				r->cr = 0;
				r->bol = 1;
			}
			break;
		}
		ch = r->in[r->ipos++];
		r->pos++;
		if (ch == '\r') {
			r->cr = 1;
			continue;
		}
		if (ch == '\n' || r->cr) {
			out[o++] = '\r';
			out[o++] = '\n';
			r->cr = 0;
			r->bol = 1;
			if (ch == '\n') {
				continue;
			}
		}
		out[o++] = ch;
		r->bol = 0;
	}
	r->woff += o;
	return o;
}

int wr_line(struct wreader *r, char *line, size_t cap, size_t *len, uint64_t *full)
{
	uint64_t f = 0;
	size_t k = 0;
	unsigned char ch;

	for (;;) {
		if (r->ipos == r->ilen && !fill(r)) {
			if (r->eof <= 0 || (f == 0 && !r->cr)) {
				return 0;
			}
			break;   /* a last line without its line end */
		}
		ch = r->in[r->ipos];
		if (ch == '\r') {
			r->cr = 1;
		} else if (ch == '\n') {
			r->ipos++;
			r->pos++;
			break;
		} else if (r->cr) {
			break;   /* a bare CR ended the line: ch starts the next */
		} else {
			if (k < cap) {
				line[k++] = (char)ch;
			}
			f++;
		}
		r->ipos++;
		r->pos++;
	}
	r->cr = 0;
	r->bol = 1;
	r->woff += f + 2;
	*len = k;
	*full = f;
	return 1;
}

/* ---- the part table ------------------------------------------------------- */

struct scan {
	struct msgparts *mp;
	unsigned cur;
	int in_header;
	char ct[512], cte[32];          /* Content-Type, Content-Transfer-Encoding being read */
	size_t ctlen, ctelen;
	int field;                      /* 1 in Content-Type, 2 in its encoding */
	unsigned sp;                    /* open multiparts */
	struct {
		unsigned part;
		size_t blen;
		char b[BOUNDARY_MAX];
	} stack[MIME_DEPTH_MAX];
	uint64_t nl;                    /* lines read */
	uint64_t body_nl[MIME_PARTS_MAX];
};

static unsigned new_part(struct scan *c, unsigned parent, uint64_t woff, uint64_t fpos)
{
	struct msgparts *mp = c->mp;
	struct part *p = &mp->p[mp->n], *q;
	unsigned i = mp->n++;

	memset(p, 0, sizeof *p);
	p->hdr = woff;
	p->fhdr = fpos;
	p->body = UNSET;
	p->parent = (uint16_t)parent;
	p->depth = (uint8_t)(mp->p[parent].depth + 1);
	/* Appended to its parent's children. */
	if (mp->p[parent].first == 0) {
		mp->p[parent].first = (uint16_t)i;
	} else {
		for (q = &mp->p[mp->p[parent].first]; q->next != 0; q = &mp->p[q->next]) {
		}
		q->next = (uint16_t)i;
	}
	c->cur = i;
	c->in_header = 1;
	c->ctlen = c->ctelen = 0;
	c->field = 0;
	return i;
}

/* The value of parameter name in a Content-Type value, into out. */
static size_t ct_param(const char *v, size_t len, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name), i = 0, o = 0;
	int q;

	while (i < len) {
		while (i < len && v[i] != ';') {
			i += v[i] == '"' ? 1 + strcspn(v + i + 1, "\"") : 1;
		}
		if (i >= len) {
			break;
		}
		i++;
		while (i < len && (v[i] == ' ' || v[i] == '\t')) {
			i++;
		}
		if (i + nl < len && strncasecmp(v + i, name, nl) == 0 && v[i + nl] == '=') {
			i += nl + 1;
			q = i < len && v[i] == '"';
			for (i += (size_t)q; i < len && (q ? v[i] != '"' : v[i] != ';' && v[i] != ' ');
			     i++) {
				if (q && v[i] == '\\' && i + 1 < len) {
					i++;
				}
				if (o < cap) {
					out[o++] = v[i];
				}
			}
			return o;
		}
	}
	return 0;
}

/* The header of the part being read has ended at a blank line. */
static void header_end(struct scan *c, uint64_t woff, uint64_t fpos)
{
	struct msgparts *mp = c->mp;
	struct part *p = &mp->p[c->cur];
	int digest = p->parent != 0xffff && mp->p[p->parent].digest;
	const char *t = c->ct;
	size_t tl = c->ctlen, blen;
	int room = mp->n < MIME_PARTS_MAX && p->depth + 1 < MIME_DEPTH_MAX;

	c->in_header = 0;
	p->body = woff;
	p->fbody = fpos;
	c->body_nl[c->cur] = c->nl + 1;   /* the blank line is not the body's */
	while (tl > 0 && (*t == ' ' || *t == '\t')) {
		t++;
		tl--;
	}
	if (tl >= 10 && strncasecmp(t, "multipart/", 10) == 0) {
		if (!room || c->sp == MIME_DEPTH_MAX) {
			mp->truncated = 1;
			return;
		}
		blen = ct_param(t, tl, "boundary", c->stack[c->sp].b, BOUNDARY_MAX);
		if (blen == 0) {
			return;   /* no boundary: a leaf */
		}
		p->kind = PK_MULTI;
		p->digest = tl >= 16 && strncasecmp(t + 10, "digest", 6) == 0;
		c->stack[c->sp].part = c->cur;
		c->stack[c->sp++].blen = blen;
		return;
	}
	if ((tl >= 14 && strncasecmp(t, "message/rfc822", 14) == 0) || (tl == 0 && digest)) {
		/* Encoded, it cannot be looked into (RFC 2046 5.2.1 forbids it). */
		if (c->ctelen > 0 && strncasecmp(c->cte, "7bit", 4) != 0 &&
		    strncasecmp(c->cte, "8bit", 4) != 0 && strncasecmp(c->cte, "binary", 6) != 0) {
			return;
		}
		if (!room) {
			mp->truncated = 1;
			return;
		}
		p->kind = PK_MESSAGE;
		(void)new_part(c, c->cur, woff, fpos);
	}
}

/* Closes the part at i: its body ends before the CRLF that precedes the
 * line at woff (RFC 2046 5.1.1), or at the end of the message. */
static void close_part(struct scan *c, unsigned i, uint64_t woff, uint64_t fpos, int at_end)
{
	struct part *p = &c->mp->p[i];
	uint64_t end = at_end || woff < 2 ? woff : woff - 2;

	if (p->body == UNSET) {
		p->body = end > p->hdr ? end : p->hdr;
		p->fbody = fpos;
		c->body_nl[i] = c->nl;
	} else if (!at_end && p->body == woff && end >= p->hdr) {
		/* The header's blank line right before the boundary: its CRLF is
		 * the boundary's, the part has no body (as Dovecot reads it). */
		p->body = end;
	}
	p->end = end > p->body ? end : p->body;
	/* The CRLFs inside the body: at a boundary, the last line's belongs
	 * to the boundary (Dovecot counts the same). */
	p->lines = (uint32_t)(c->nl - c->body_nl[i]);
	if (!at_end && p->lines > 0) {
		p->lines--;
	}
}

/* A line of a body: a boundary of an open multipart?  The level, or -1;
 * *last for a close delimiter.  A line that starts with the delimiter is
 * one, whatever follows (RFC 2046 5.1.1's note to implementors). */
static int boundary(const struct scan *c, const char *line, size_t len, uint64_t full, int *last)
{
	unsigned i;
	size_t bl;

	if (len < 3 || line[0] != '-' || line[1] != '-' || full > LINE_KEEP) {
		return -1;
	}
	for (i = c->sp; i-- > 0;) {
		bl = c->stack[i].blen;
		if (len >= 2 + bl && memcmp(line + 2, c->stack[i].b, bl) == 0) {
			*last = len >= bl + 4 && line[bl + 2] == '-' && line[bl + 3] == '-';
			return (int)i;
		}
	}
	return -1;
}

int msg_parts(int fd, struct msgparts *mp)
{
	static struct wreader r;
	static char line[LINE_KEEP];
	static struct scan c;
	uint64_t full, woff, fpos;
	size_t len, k;
	int level, last;
	unsigned i;

	memset(mp, 0, sizeof mp->p[0] + offsetof(struct msgparts, p));
	mp->n = 1;
	mp->p[0].parent = 0xffff;
	mp->p[0].body = UNSET;
	c.mp = mp;
	c.cur = 0;
	c.in_header = 1;
	c.ctlen = c.ctelen = 0;
	c.field = 0;
	c.sp = 0;
	c.nl = 0;
	wr_init(&r, fd, 0, 0);
	for (;;) {
		woff = r.woff;
		fpos = r.pos;
		if (!wr_line(&r, line, sizeof line, &len, &full)) {
			break;
		}
		level = boundary(&c, line, len, full, &last);
		if (level >= 0) {
			/* Everything inside the multipart at level closes. */
			for (i = c.cur; i != c.stack[level].part; i = mp->p[i].parent) {
				close_part(&c, i, woff, fpos, 0);
			}
			c.sp = (unsigned)level + 1;
			c.cur = c.stack[level].part;
			c.in_header = 0;
			if (last) {
				c.sp = (unsigned)level;   /* the epilogue: no more parts */
			} else if (mp->n < MIME_PARTS_MAX) {
				(void)new_part(&c, c.cur, r.woff, r.pos);
			} else {
				mp->truncated = 1;
				c.sp = (unsigned)level;
			}
		} else if (c.in_header && full == 0) {
			header_end(&c, r.woff, r.pos);
		} else if (c.in_header && (line[0] == ' ' || line[0] == '\t')) {
			/* A folded line of the field being read. */
			char *dst = c.field == 1 ? c.ct : c.cte;
			size_t *dl = c.field == 1 ? &c.ctlen : &c.ctelen, cap = c.field == 1 ? sizeof c.ct :
			                                                            sizeof c.cte;

			for (k = 0; c.field != 0 && k < len && *dl < cap; k++) {
				dst[(*dl)++] = line[k];
			}
		} else if (c.in_header) {
			c.field = len > 13 && strncasecmp(line, "content-type:", 13) == 0 && c.ctlen == 0 ? 1 :
			          len > 26 && strncasecmp(line, "content-transfer-encoding:", 26) == 0 &&
			          c.ctelen == 0 ? 2 : 0;
			k = c.field == 1 ? 13 : 26;
			while (c.field != 0 && k < len && (line[k] == ' ' || line[k] == '\t')) {
				k++;
			}
			if (c.field == 1) {
				c.ctlen = len - k < sizeof c.ct ? len - k : sizeof c.ct;
				memcpy(c.ct, line + k, c.ctlen);
			} else if (c.field == 2) {
				c.ctelen = len - k < sizeof c.cte ? len - k : sizeof c.cte;
				memcpy(c.cte, line + k, c.ctelen);
			}
		}
		c.nl++;
	}
	if (r.eof < 0) {
		return -1;
	}
	mp->size = r.woff;
	for (i = c.cur; i != 0xffff; i = mp->p[i].parent) {
		close_part(&c, i, r.woff, r.pos, 1);
	}
	return 0;
}

int msg_part_find(const struct msgparts *mp, const uint16_t *nums, unsigned n)
{
	unsigned cur = 0, i, k;
	int container = 1;   /* cur stands for a message, whose "1" may be itself */

	for (i = 0; i < n; i++) {
		if (!container && mp->p[cur].kind == PK_MESSAGE) {
			cur = mp->p[cur].first;
			container = 1;
		}
		if (mp->p[cur].kind == PK_MULTI) {
			for (cur = mp->p[cur].first, k = 1; cur != 0 && k < nums[i]; k++) {
				cur = mp->p[cur].next;
			}
			if (cur == 0 || nums[i] == 0) {
				return -1;
			}
		} else if (nums[i] != 1 || (!container && cur == 0)) {
			return -1;   /* (a leaf's "1" is the leaf, as Dovecot answers) */
		}
		container = 0;
	}
	return (int)cur;
}

/* ---- header fields -------------------------------------------------------- */

int msg_fields(int fd, uint64_t fpos, field_fn fn, void *ctx)
{
	static struct wreader r;
	static char line[HDR_VALUE_MAX], value[HDR_VALUE_MAX];
	char name[80];
	const char *colon;
	size_t len, nlen = 0, vlen = 0, first = 0, k, take;
	uint64_t full;
	int have = 0, more;

	wr_init(&r, fd, fpos, 0);
	do {
		more = wr_line(&r, line, sizeof line, &len, &full);
		if (more && len > 0 && (line[0] == ' ' || line[0] == '\t')) {
			take = !have ? 0 : len < sizeof value - vlen ? len : sizeof value - vlen;
			memcpy(value + vlen, line, take);
			vlen += take;
			continue;
		}
		if (have) {
			/* White space after the colon goes; a fold's stays. */
			for (k = 0; k < first && (value[k] == ' ' || value[k] == '\t'); k++) {
			}
			fn(ctx, name, nlen, value + k, vlen - k);
			have = 0;
		}
		if (!more || full == 0) {
			break;
		}
		colon = memchr(line, ':', len);
		k = colon != NULL ? (size_t)(colon - line) : 0;
		if (k > 0 && k < sizeof name) {
			nlen = k;
			memcpy(name, line, k);
			while (nlen > 0 && (name[nlen - 1] == ' ' || name[nlen - 1] == '\t')) {
				nlen--;
			}
			vlen = first = len - k - 1;
			memcpy(value, line + k + 1, vlen);
			have = 1;
		}
	} while (more);
	return r.eof < 0 ? -1 : 0;
}

long msg_date_days(const char *v, size_t len)
{
	const char *end = v + len, *p = v;
	unsigned long d = 0, y = 0;
	unsigned m, nd = 0, ny = 0;

	while (p < end && (*p == ' ' || *p == '\t')) {
		p++;
	}
	/* An optional day name and comma. */
	if (p < end && ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z')) {
		while (p < end && *p != ',') {
			p++;
		}
		p += p < end;
	}
	while (p < end && (*p == ' ' || *p == '\t')) {
		p++;
	}
	for (; p < end && *p >= '0' && *p <= '9' && nd < 2; nd++) {
		d = d * 10 + (unsigned long)(*p++ - '0');
	}
	while (p < end && (*p == ' ' || *p == '\t' || *p == '-')) {
		p++;
	}
	if (nd == 0 || end - p < 3 || (m = month_of(p)) == 0) {
		return -1;
	}
	p += 3;
	while (p < end && (*p == ' ' || *p == '\t' || *p == '-')) {
		p++;
	}
	for (; p < end && *p >= '0' && *p <= '9' && ny < 4; ny++) {
		y = y * 10 + (unsigned long)(*p++ - '0');
	}
	if (ny == 2) {
		y += y < 50 ? 2000 : 1900;   /* RFC 5322 4.3 */
	} else if (ny != 4) {
		return -1;
	}
	if (d < 1 || d > 31) {
		return -1;
	}
	return days_from_civil((long)y, m, (unsigned)d);
}

int msg_has(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
	size_t i, j;

	if (nlen == 0) {
		return 1;
	}
	for (i = 0; i + nlen <= hlen; i++) {
		for (j = 0; j < nlen; j++) {
			unsigned char a = (unsigned char)hay[i + j], b = (unsigned char)needle[j];

			if (a != b && !((a | 0x20) == (b | 0x20) && (a | 0x20) >= 'a' && (a | 0x20) <= 'z')) {
				break;
			}
		}
		if (j == nlen) {
			return 1;
		}
	}
	return 0;
}
