/* imap_parse.c - the IMAP tokenizer. */
#include "imap_parse.h"
#include "folder.h"

#include <string.h>
#include <strings.h>

static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";

void tok_init(struct imap_tok *t, char *buf, size_t len)
{
	t->p = buf;
	t->end = buf + len;
	t->err = 0;
}

static void fail(struct imap_tok *t)
{
	t->err = 1;
	t->p = t->end;
}

int tok_is(struct imap_tok *t, char c)
{
	if (!t->err && t->p < t->end && *t->p == c) {
		t->p++;
		return 1;
	}
	return 0;
}

void tok_sp(struct imap_tok *t)
{
	if (!tok_is(t, ' ')) {
		fail(t);
	}
}

int tok_end(struct imap_tok *t)
{
	if (t->p != t->end) {
		fail(t);
	}
	return !t->err;
}

/* ATOM-CHAR (RFC 3501 9), or one of extra. */
static int atom_char(unsigned char c, const char *extra)
{
	if (c <= 0x20 || c >= 0x7f) {
		return 0;
	}
	if (strchr("(){%*\"\\]", c) != NULL) {
		return extra != NULL && strchr(extra, c) != NULL;
	}
	return 1;
}

static void atom(struct imap_tok *t, struct imap_str *s, const char *extra)
{
	s->p = t->p;
	while (t->p < t->end && atom_char((unsigned char)*t->p, extra)) {
		t->p++;
	}
	s->len = (size_t)(t->p - s->p);
	if (s->len == 0) {
		fail(t);
	}
}

void tok_atom(struct imap_tok *t, struct imap_str *s, int brackets)
{
	atom(t, s, brackets ? NULL : "]");
}

uint32_t tok_number(struct imap_tok *t)
{
	uint64_t v = 0;
	int digits = 0;

	while (!t->err && t->p < t->end && *t->p >= '0' && *t->p <= '9') {
		v = v * 10 + (uint64_t)(*t->p++ - '0');
		if (v > 0xffffffffu) {
			fail(t);
		}
		digits++;
	}
	if (digits == 0) {
		fail(t);
	}
	return t->err ? 0 : (uint32_t)v;
}

void tok_string(struct imap_tok *t, struct imap_str *s)
{
	char *w;
	uint32_t n;

	s->p = t->p;
	s->len = 0;
	if (tok_is(t, '"')) {
		/* Unescaped in place: the result is never longer. */
		for (s->p = w = t->p; t->p < t->end && *t->p != '"'; w++) {
			if (*t->p == '\\') {
				t->p++;
				if (t->p == t->end || (*t->p != '"' && *t->p != '\\')) {
					break;
				}
			}
			if (*t->p == '\r' || *t->p == '\n') {
				break;
			}
			*w = *t->p++;
		}
		if (!tok_is(t, '"')) {
			fail(t);
		}
		s->len = (size_t)(w - s->p);
		return;
	}
	if (!tok_is(t, '{')) {
		fail(t);
		return;
	}
	n = tok_number(t);
	(void)tok_is(t, '+');
	if (!tok_is(t, '}') || !tok_is(t, '\r') || !tok_is(t, '\n') ||
	    (size_t)(t->end - t->p) < n) {
		fail(t);
		return;
	}
	s->p = t->p;
	s->len = n;
	t->p += n;
}

void tok_astring(struct imap_tok *t, struct imap_str *s)
{
	if (t->p < t->end && (*t->p == '"' || *t->p == '{')) {
		tok_string(t, s);
	} else {
		atom(t, s, "]");
	}
}

void tok_cstring(struct imap_tok *t, char *out, size_t size)
{
	struct imap_str s;

	tok_astring(t, &s);
	if (t->err || s.len >= size || memchr(s.p, '\0', s.len) != NULL) {
		fail(t);
		out[0] = '\0';
		return;
	}
	memcpy(out, s.p, s.len);
	out[s.len] = '\0';
}

/* One seq-number at *p: '*' or a non-zero number. */
static int seq_number(const char **p, const char *end, uint32_t star, uint32_t *v)
{
	uint64_t n = 0;

	if (*p < end && **p == '*') {
		(*p)++;
		*v = star;
		return 0;
	}
	if (*p == end || **p < '1' || **p > '9') {
		return -1;
	}
	while (*p < end && **p >= '0' && **p <= '9') {
		n = n * 10 + (uint64_t)(*(*p)++ - '0');
		if (n > 0xffffffffu) {
			return -1;
		}
	}
	*v = (uint32_t)n;
	return 0;
}

int set_next(const char **p, const char *end, uint32_t star, uint32_t *low, uint32_t *high)
{
	uint32_t a, b;

	if (*p >= end) {
		return 0;
	}
	if (**p == ',') {
		(*p)++;
	}
	if (seq_number(p, end, star, &a) < 0) {
		return 0;
	}
	b = a;
	if (*p < end && **p == ':') {
		(*p)++;
		if (seq_number(p, end, star, &b) < 0) {
			return 0;
		}
	}
	*low = a < b ? a : b;
	*high = a < b ? b : a;
	return 1;
}

void tok_seqset(struct imap_tok *t, struct imap_str *s)
{
	const char *p;
	uint32_t a, b;

	s->p = t->p;
	while (t->p < t->end && strchr("0123456789*:,", *t->p) != NULL) {
		t->p++;
	}
	s->len = (size_t)(t->p - s->p);
	/* Walk it: every range well formed, commas only between ranges. */
	for (p = s->p; s->len > 0 && p < t->p;) {
		if ((p != s->p && *p != ',') || (p != s->p && p + 1 == t->p) ||
		    !set_next(&p, t->p, 1, &a, &b)) {
			break;
		}
	}
	if (s->len == 0 || p != t->p) {
		fail(t);
	}
}

int set_has(const struct imap_str *set, uint32_t star, uint32_t n)
{
	const char *p = set->p;
	uint32_t a, b;

	while (set_next(&p, set->p + set->len, star, &a, &b)) {
		if (n >= a && n <= b) {
			return 1;
		}
	}
	return 0;
}

long days_from_civil(long y, unsigned m, unsigned d)
{
	/* Howard Hinnant's days_from_civil. */
	long era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (long)(m + (m > 2 ? -3 : 9)) + 2) / 5 + (long)d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

unsigned month_of(const char *s)
{
	unsigned i;

	for (i = 0; i < 12; i++) {
		if (strncasecmp(s, months + 3 * i, 3) == 0) {
			return i + 1;
		}
	}
	return 0;
}

const char *month_name(unsigned m)
{
	static char name[4];

	memcpy(name, months + 3 * (m - 1), 3);
	name[3] = '\0';
	return name;
}

/* n digits (exactly) at the cursor. */
static unsigned digits(struct imap_tok *t, unsigned n)
{
	unsigned v = 0;

	while (n-- > 0) {
		if (t->p == t->end || *t->p < '0' || *t->p > '9') {
			fail(t);
			return 0;
		}
		v = v * 10 + (unsigned)(*t->p++ - '0');
	}
	return v;
}

/* day "-" Mon "-" year; the day is one or two digits, or space and one. */
static long date_text(struct imap_tok *t)
{
	unsigned d, m;
	long y;

	if (tok_is(t, ' ')) {
		d = digits(t, 1);
	} else {
		d = digits(t, 1);
		if (t->p < t->end && *t->p >= '0' && *t->p <= '9') {
			d = d * 10 + digits(t, 1);
		}
	}
	if (!tok_is(t, '-') || t->end - t->p < 3 || (m = month_of(t->p)) == 0) {
		fail(t);
		return 0;
	}
	t->p += 3;
	if (!tok_is(t, '-')) {
		fail(t);
	}
	y = (long)digits(t, 4);
	if (d < 1 || d > 31) {
		fail(t);
	}
	return t->err ? 0 : days_from_civil(y, m, d);
}

long tok_date(struct imap_tok *t)
{
	long v;

	if (tok_is(t, '"')) {
		v = date_text(t);
		if (!tok_is(t, '"')) {
			fail(t);
		}
		return v;
	}
	return date_text(t);
}

time_t tok_datetime(struct imap_tok *t)
{
	long days, secs, zone;
	int sign;

	if (!tok_is(t, '"')) {
		fail(t);
		return 0;
	}
	days = date_text(t);
	tok_sp(t);
	secs = (long)digits(t, 2) * 3600;
	if (!tok_is(t, ':')) {
		fail(t);
	}
	secs += (long)digits(t, 2) * 60;
	if (!tok_is(t, ':')) {
		fail(t);
	}
	secs += (long)digits(t, 2);
	tok_sp(t);
	sign = tok_is(t, '-') ? -1 : (tok_is(t, '+'), 1);
	zone = (long)digits(t, 2) * 3600;
	zone += (long)digits(t, 2) * 60;
	if (!tok_is(t, '"')) {
		fail(t);
	}
	return t->err ? 0 : (time_t)(days * 86400 + secs - sign * zone);
}

unsigned tok_flags(struct imap_tok *t, int bare)
{
	static const char *const names[] = { "Seen", "Answered", "Flagged", "Deleted", "Draft" };
	int list = !bare || (t->p < t->end && *t->p == '('), sys;
	unsigned flags = 0, n = 0, i;
	struct imap_str s;

	if (list && !tok_is(t, '(')) {
		fail(t);
		return 0;
	}
	while (!t->err && !(list && tok_is(t, ')'))) {
		if (n++ > 0) {
			tok_sp(t);
		}
		sys = tok_is(t, '\\');
		atom(t, &s, NULL);
		if (sys && !t->err) {
			for (i = 0; i < 5; i++) {
				if (strlen(names[i]) == s.len && strncasecmp(names[i], s.p, s.len) == 0) {
					flags |= 1u << i;
					break;
				}
			}
			if (i == 5) {
				fail(t);   /* \Recent, or no such flag */
			}
		}
		/* A keyword is taken and forgotten: PERMANENTFLAGS says so. */
		if (!list) {
			break;
		}
	}
	return flags;
}
