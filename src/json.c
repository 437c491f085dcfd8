/* json.c - a bounded reader for the top-level members of a JSON object. */
#include "json.h"

#include <string.h>

struct cur {
	const unsigned char *p, *end;
	const char *why;     /* sticky: the first error */
};

static int fail(struct cur *c, const char *why)
{
	if (c->why == NULL) {
		c->why = why;
	}
	return -1;
}

static void ws(struct cur *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) {
		c->p++;
	}
}

static int hex4(struct cur *c, unsigned *v)
{
	unsigned i, d;

	if (c->end - c->p < 4) {
		return fail(c, "a \\u escape cut short");
	}
	for (*v = 0, i = 0; i < 4; i++) {
		unsigned char ch = *c->p++;

		if (ch >= '0' && ch <= '9') {
			d = ch - '0';
		} else if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f') {
			d = (ch | 0x20) - 'a' + 10;
		} else {
			return fail(c, "a bad \\u escape");
		}
		*v = *v << 4 | d;
	}
	return 0;
}

/* Appends one octet to out (NULL: the string is skipped). */
static int put(struct cur *c, char *out, size_t size, size_t *n, int cut, unsigned char ch)
{
	if (out == NULL) {
		return 0;
	}
	if (*n + 1 >= size) {
		if (cut) {
			return 0;
		}
		return fail(c, "a string longer than its field");
	}
	out[(*n)++] = (char)ch;
	return 0;
}

/* A string at c->p (its opening quote), unescaped into out when out is
 * set.  The cut flag keeps what fits of a long one. */
static int string(struct cur *c, char *out, size_t size, int cut)
{
	unsigned char u8[4];
	size_t n = 0;
	unsigned u, lo, i, k;
	int r = 0;

	c->p++;
	for (;;) {
		unsigned char ch;

		if (c->p >= c->end) {
			return fail(c, "a string without its end");
		}
		ch = *c->p++;
		if (ch == '"') {
			break;
		}
		if (ch < 0x20) {
			return fail(c, "a control character in a string");
		}
		if (ch != '\\') {
			r |= put(c, out, size, &n, cut, ch);
			continue;
		}
		if (c->p >= c->end) {
			return fail(c, "a string without its end");
		}
		ch = *c->p++;
		switch (ch) {
		case '"': case '\\': case '/':
			break;
		case 'b': ch = '\b'; break;
		case 'f': ch = '\f'; break;
		case 'n': ch = '\n'; break;
		case 'r': ch = '\r'; break;
		case 't': ch = '\t'; break;
		case 'u':
			if (hex4(c, &u) < 0) {
				return -1;
			}
			if (u >= 0xdc00 && u <= 0xdfff) {
				return fail(c, "a lone low surrogate");
			}
			if (u >= 0xd800 && u <= 0xdbff) {
				/* RFC 8259 7: a pair of escapes for one character. */
				if (c->end - c->p < 2 || c->p[0] != '\\' || c->p[1] != 'u') {
					return fail(c, "a lone high surrogate");
				}
				c->p += 2;
				if (hex4(c, &lo) < 0) {
					return -1;
				}
				if (lo < 0xdc00 || lo > 0xdfff) {
					return fail(c, "a lone high surrogate");
				}
				u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
			}
			if (u == 0) {
				return fail(c, "\\u0000 in a string");
			}
			/* UTF-8: a lead octet, then 6 bits a continuation octet. */
			k = u < 0x80 ? 1 : u < 0x800 ? 2 : u < 0x10000 ? 3 : 4;
			for (i = k - 1; i > 0; i--) {
				u8[i] = (unsigned char)(0x80 | (u & 0x3f));
				u >>= 6;
			}
			u8[0] = (unsigned char)(k == 1 ? u : ((0xff00u >> k) & 0xff) | u);
			for (i = 0; i < k; i++) {
				r |= put(c, out, size, &n, cut, u8[i]);
			}
			if (r < 0) {
				return -1;
			}
			continue;
		default:
			return fail(c, "a bad escape in a string");
		}
		r |= put(c, out, size, &n, cut, ch);
		if (r < 0) {
			return -1;
		}
	}
	if (r < 0) {
		return -1;
	}
	if (out != NULL) {
		out[n] = '\0';
	}
	return 0;
}

static int digit(const struct cur *c)
{
	return c->p < c->end && *c->p >= '0' && *c->p <= '9';
}

/* A number (RFC 8259 6); *v its whole part when it is not negative and
 * within JSON_NUMBER_MAX, else -1. */
static int number(struct cur *c, int64_t *v)
{
	int neg = 0, big = 0;

	*v = 0;
	if (*c->p == '-') {
		neg = 1;
		c->p++;
	}
	if (!digit(c)) {
		return fail(c, "a bad number");
	}
	if (*c->p == '0') {
		c->p++;
	} else {
		while (digit(c)) {
			if (*v > JSON_NUMBER_MAX / 10) {
				big = 1;
			} else {
				*v = *v * 10 + (*c->p - '0');
			}
			c->p++;
		}
	}
	if (c->p < c->end && *c->p == '.') {
		c->p++;
		if (!digit(c)) {
			return fail(c, "a bad number");
		}
		while (digit(c)) {
			c->p++;
		}
	}
	if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
		c->p++;
		if (c->p < c->end && (*c->p == '+' || *c->p == '-')) {
			c->p++;
		}
		if (!digit(c)) {
			return fail(c, "a bad number");
		}
		while (digit(c)) {
			c->p++;
		}
		big = 1;   /* no exponents in the fields read */
	}
	if (neg || big || *v > JSON_NUMBER_MAX) {
		*v = -1;
	}
	return 0;
}

static int literal(struct cur *c, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0) {
		return fail(c, "not JSON");
	}
	c->p += n;
	return 0;
}

/* Any value, checked and skipped; depth counts the containers around it. */
static int skip(struct cur *c, unsigned depth)
{
	int64_t v;
	unsigned char close;

	ws(c);
	if (c->p >= c->end) {
		return fail(c, "a value missing");
	}
	switch (*c->p) {
	case '"':
		return string(c, NULL, 0, 0);
	case 't':
		return literal(c, "true");
	case 'f':
		return literal(c, "false");
	case 'n':
		return literal(c, "null");
	case '{':
	case '[':
		break;
	default:
		return number(c, &v);
	}
	if (depth >= JSON_DEPTH_MAX) {
		return fail(c, "nested too deeply");
	}
	close = *c->p == '{' ? '}' : ']';
	c->p++;
	ws(c);
	if (c->p < c->end && *c->p == close) {
		c->p++;
		return 0;
	}
	for (;;) {
		ws(c);
		if (close == '}') {
			if (c->p >= c->end || *c->p != '"' || string(c, NULL, 0, 0) < 0) {
				return fail(c, "a member without its name");
			}
			ws(c);
			if (c->p >= c->end || *c->p++ != ':') {
				return fail(c, "a member without ':'");
			}
		}
		if (skip(c, depth + 1) < 0) {
			return -1;
		}
		ws(c);
		if (c->p >= c->end) {
			return fail(c, "an object or array without its end");
		}
		if (*c->p == close) {
			c->p++;
			return 0;
		}
		if (*c->p++ != ',') {
			return fail(c, "',' missing between values");
		}
	}
}

/* The value of a member the caller named. */
static int field(struct cur *c, struct json_field *f)
{
	char digits[24];
	size_t i;

	ws(c);
	if (f->found) {
		return fail(c, "a member twice");
	}
	f->found = 1;
	if (c->p >= c->end) {
		return fail(c, "a value missing");
	}
	if (f->type == JSON_STRING) {
		if (*c->p != '"') {
			return fail(c, "a member of another type than expected");
		}
		return string(c, f->out, f->size, f->cut);
	}
	if (*c->p == '"') {
		/* "3599": some endpoints quote their numbers. */
		if (string(c, digits, sizeof digits, 0) < 0 || digits[0] == '\0') {
			return fail(c, "a bad number");
		}
		for (f->num = 0, i = 0; digits[i] != '\0'; i++) {
			if (digits[i] < '0' || digits[i] > '9' || f->num > JSON_NUMBER_MAX / 10) {
				return fail(c, "a bad number");
			}
			f->num = f->num * 10 + (digits[i] - '0');
		}
		return 0;
	}
	if (*c->p != '-' && (*c->p < '0' || *c->p > '9')) {
		return fail(c, "a member of another type than expected");
	}
	if (number(c, &f->num) < 0) {
		return -1;
	}
	return f->num < 0 ? fail(c, "a number out of range") : 0;
}

int json_read(const char *text, size_t len, struct json_field *f, unsigned n, const char **why)
{
	struct cur c = { (const unsigned char *)text, (const unsigned char *)text + len, NULL };
	char name[64];
	unsigned i;

	for (i = 0; i < n; i++) {
		f[i].found = 0;
		f[i].num = 0;
		if (f[i].type == JSON_STRING && f[i].size > 0) {
			f[i].out[0] = '\0';
		}
	}
	ws(&c);
	if (c.p >= c.end || *c.p++ != '{') {
		*why = "not a JSON object";
		return -1;
	}
	ws(&c);
	if (c.p < c.end && *c.p == '}') {
		c.p++;
	} else {
		for (;;) {
			ws(&c);
			/* A name longer than any we look for is skipped like the
			 * others: cut, it matches none of ours. */
			if (c.p >= c.end || *c.p != '"' || string(&c, name, sizeof name, 1) < 0) {
				fail(&c, "a member without its name");
				break;
			}
			ws(&c);
			if (c.p >= c.end || *c.p++ != ':') {
				fail(&c, "a member without ':'");
				break;
			}
			for (i = 0; i < n && strcmp(f[i].name, name) != 0; i++) {
			}
			if ((i < n ? field(&c, &f[i]) : skip(&c, 0)) < 0) {
				break;
			}
			ws(&c);
			if (c.p < c.end && *c.p == '}') {
				c.p++;
				break;
			}
			if (c.p >= c.end || *c.p++ != ',') {
				fail(&c, "',' missing between members");
				break;
			}
		}
	}
	ws(&c);
	if (c.why == NULL && c.p != c.end) {
		c.why = "text after the object";
	}
	if (c.why != NULL) {
		*why = c.why;
		for (i = 0; i < n; i++) {
			f[i].found = 0;
		}
		return -1;
	}
	return 0;
}
