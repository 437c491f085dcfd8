/* addr.c - RFC 5321 paths, the local/remote decision, aliases.
 *
 * addr_parse_path reads bytes with a cursor and never writes before it
 * knows the lengths fit.  The alias table keeps every name and target in
 * one fixed arena; expansion walks it recursively with a bounded stack of
 * the names being expanded, which is also the loop detector.
 */
#include "addr.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "textfile.h"

#define ALIAS_PHYS_MAX 1024   /* one line of the aliases file */
#define ALIAS_LINE_MAX 4096   /* one alias with its continuation lines */
#define ALIAS_MSG_MAX  256    /* a line's message, before "path:line: " */
#define ADDR_DOMAIN_MAX 255   /* RFC 5321 4.5.3.1.2 */
#define ADDR_LABEL_MAX 63     /* RFC 1035 2.3.4 */

/* ------------------------------------------------------------------ paths */

/* atext of RFC 5322 3.2.3, the characters of an unquoted local part. */
static int addr_atext(unsigned char ch)
{
	return isalnum(ch) || (ch != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", ch) != NULL);
}

/* A local part as it is written out: at most ADDR_LOCAL_MAX octets are
 * kept, n counts them all, so that a longer one is refused, never cut. */
struct addr_lbuf {
	char b[ADDR_LOCAL_MAX + 1];
	size_t n;
};

static void addr_put(struct addr_lbuf *l, char ch)
{
	if (l->n < ADDR_LOCAL_MAX) {
		l->b[l->n] = ch;
	}
	l->n++;
}

/* Walks the quoted string at p (after its opening quote; RFC 5321 4.1.2:
 * qtextSMTP and quoted-pairSMTP are printable ASCII, space included).
 * Sets *end after the closing quote, *route if the content holds '@', '%'
 * or '!', and *dots if the content is a dot-string: then the quotes are
 * needless and "bob" is the mailbox bob. */
static enum addr_err addr_quoted(const char *p, const char **end, int *route, int *dots)
{
	unsigned char ch, prev = '.';

	*dots = 1;
	for (; *p != '"'; p++) {
		ch = (unsigned char)*p;
		if (ch == '\\') {
			p++;
			ch = (unsigned char)*p;
		}
		if (ch < ' ' || ch >= 0x7f) {
			return ADDR_SYNTAX;
		}
		if (ch == '@' || ch == '%' || ch == '!') {
			*route = 1;
		}
		if (!addr_atext(ch) && !(ch == '.' && prev != '.')) {
			*dots = 0;   /* a special, a space, or an empty atom */
		}
		prev = ch;
	}
	if (prev == '.') {
		*dots = 0;       /* empty, or a dot at the end */
	}
	*end = p + 1;
	return ADDR_OK;
}

/* Writes the content of the quoted string at p (after its opening quote)
 * in its canonical form: bare when it is a dot-string, else quoted with a
 * backslash only where one is needed, before '"' and '\\'.  So every way
 * of writing one mailbox gives the same string, for the users, the
 * aliases and the relay alike. */
static void addr_unquote(const char *p, int dots, struct addr_lbuf *l)
{
	if (!dots) {
		addr_put(l, '"');
	}
	for (; *p != '"'; p++) {
		if (*p == '\\') {
			p++;
		}
		if (!dots && (*p == '"' || *p == '\\')) {
			addr_put(l, '\\');
		}
		addr_put(l, *p);
	}
	if (!dots) {
		addr_put(l, '"');
	}
}

/* The local part at p: a dot-string or a quoted string, written to l in
 * its canonical form (RFC 5321 4.1.2: a quoted string and its unquoted
 * form, where one exists, are the same local part).  Sets *end after it,
 * *route if it holds '%' or '!' (the % hack and bang paths), or '@'
 * inside quotes. */
static enum addr_err addr_local(const char *p, const char **end, int *route,
                                struct addr_lbuf *l)
{
	enum addr_err e;
	const char *start = p;
	int dots;

	*route = 0;
	l->n = 0;
	if (*p == '"') {
		e = addr_quoted(p + 1, end, route, &dots);
		if (e == ADDR_OK) {
			addr_unquote(p + 1, dots, l);
		}
		return e;
	}
	for (;;) {
		if (!addr_atext((unsigned char)*p)) {
			return ADDR_SYNTAX;   /* empty atom: leading or double dot */
		}
		while (addr_atext((unsigned char)*p)) {
			if (*p == '%' || *p == '!') {
				*route = 1;
			}
			p++;
		}
		if (*p != '.') {
			break;
		}
		p++;
	}
	*end = p;
	for (; start < p; start++) {
		addr_put(l, *start);
	}
	return ADDR_OK;
}

/* An address literal "[1.2.3.4]" or "[IPv6:...]" (RFC 5321 4.1.3).  The
 * general "[tag:...]" form is refused: nothing here could deliver to it. */
static enum addr_err addr_literal(const char *p, const char **end)
{
	char buf[INET6_ADDRSTRLEN + 8];
	unsigned char bin[16];
	const char *close = p + 1;
	size_t len;

	while (*close != ']') {
		if (*close == '\0' || *close == '>' || (unsigned char)*close <= ' ') {
			return ADDR_SYNTAX;
		}
		close++;
	}
	len = (size_t)(close - (p + 1));
	if (len == 0 || len >= sizeof buf) {
		return ADDR_SYNTAX;
	}
	memcpy(buf, p + 1, len);
	buf[len] = '\0';
	if (strncasecmp(buf, "IPv6:", 5) == 0) {
		if (inet_pton(AF_INET6, buf + 5, bin) != 1) {
			return ADDR_SYNTAX;
		}
	} else if (inet_pton(AF_INET, buf, bin) != 1) {
		return ADDR_SYNTAX;
	}
	*end = close + 1;
	return ADDR_OK;
}

/* A domain: labels of letters, digits and '-' that begin and end with a
 * letter or digit (RFC 5321 4.1.2 Domain), or an address literal.  An
 * empty label, so a trailing dot, is a syntax error: "user@host." has been
 * used to slip past relay checks. */
static enum addr_err addr_domain(const char *p, const char **end)
{
	size_t label;

	if (*p == '[') {
		return addr_literal(p, end);
	}
	for (;;) {
		label = 0;
		while (isalnum((unsigned char)*p) || *p == '-') {
			if (label == 0 && *p == '-') {
				return ADDR_SYNTAX;
			}
			label++;
			p++;
		}
		if (label == 0 || p[-1] == '-') {
			return ADDR_SYNTAX;
		}
		if (label > ADDR_LABEL_MAX) {
			return ADDR_TOO_LONG;
		}
		if (*p != '.') {
			break;
		}
		p++;
	}
	*end = p;
	return ADDR_OK;
}

/* A source route "@a,@b:" (RFC 5321 4.1.2 A-d-l): well formed or not, it
 * is never followed, but a garbled one is a syntax error. */
static enum addr_err addr_route(const char *p)
{
	enum addr_err e;

	for (;;) {
		if (*p != '@') {
			return ADDR_SYNTAX;
		}
		e = addr_domain(p + 1, &p);
		if (e != ADDR_OK) {
			return e;
		}
		if (*p == ':') {
			return ADDR_ROUTE;
		}
		if (*p != ',') {
			return ADDR_SYNTAX;
		}
		p++;
	}
}

enum addr_err addr_parse_path(const char *s, char *out, const char **rest,
                              int null_ok, int postmaster_ok)
{
	const char *p = s, *local, *lend, *dom, *dend;
	struct addr_lbuf l;
	size_t dlen, i;
	enum addr_err e;
	int route;

	if (s == NULL || out == NULL) {
		return ADDR_SYNTAX;
	}
	while (*p == ' ') {
		p++;
	}
	if (*p++ != '<') {
		return ADDR_SYNTAX;
	}
	if (*p == '>') {
		if (!null_ok) {
			return ADDR_SYNTAX;
		}
		out[0] = '\0';
		if (rest != NULL) {
			*rest = p + 1;
		}
		return ADDR_OK;
	}
	if (*p == '@') {
		return addr_route(p);
	}
	local = p;
	e = addr_local(p, &lend, &route, &l);
	if (e != ADDR_OK) {
		return e;
	}
	p = lend;
	/* RFC 5321 4.1.1.3: "Postmaster" with no domain, RCPT only, written
	 * exactly so (the grammar's literal, not a quoted string). */
	if (*p == '>' && postmaster_ok && lend - local == 10 &&
	    strncasecmp(local, "postmaster", 10) == 0) {
		memcpy(out, "postmaster", sizeof "postmaster");
		if (rest != NULL) {
			*rest = p + 1;
		}
		return ADDR_OK;
	}
	if (*p++ != '@') {
		return ADDR_SYNTAX;
	}
	dom = p;
	e = addr_domain(p, &dend);
	if (e != ADDR_OK) {
		return e;
	}
	if (*dend != '>') {
		return ADDR_SYNTAX;
	}
	dlen = (size_t)(dend - dom);
	/* The limits apply to the canonical form, so that "bob" and bob get
	 * the same answer.  The 256 of RFC 5321 4.5.3.1.3 counts the angle
	 * brackets. */
	if (l.n > ADDR_LOCAL_MAX || dlen > ADDR_DOMAIN_MAX || l.n + dlen + 3 > ADDR_MAX) {
		return ADDR_TOO_LONG;
	}
	if (route) {
		return ADDR_ROUTE;
	}
	memcpy(out, l.b, l.n);
	out[l.n] = '@';
	for (i = 0; i < dlen; i++) {
		out[l.n + 1 + i] = (char)tolower((unsigned char)dom[i]);
	}
	out[l.n + 1 + dlen] = '\0';
	if (rest != NULL) {
		*rest = dend + 1;
	}
	return ADDR_OK;
}

const char *addr_split(const char *a, char *local)
{
	const char *at;
	size_t len;

	if (a == NULL) {
		return NULL;
	}
	/* The last '@': a domain has none, a quoted local part might. */
	at = strrchr(a, '@');
	if (at == NULL) {
		return NULL;
	}
	len = (size_t)(at - a);
	if (len > ADDR_LOCAL_MAX) {
		return NULL;   /* never from addr_parse_path; refused, not cut */
	}
	memcpy(local, a, len);
	local[len] = '\0';
	return at + 1;
}

/* ---------------------------------------------------------------- aliases */

static int alias_fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int alias_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL && errlen > 0) {
		va_start(ap, fmt);
		(void)vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

static int alias_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* An alias name or local target, lower-cased: it may become a Maildir
 * directory name, so no '/', no "..", no leading '.'. */
static int alias_name_ok(const char *s)
{
	const char *p;

	if (strcmp(s, "*") == 0) {
		return 1;   /* the catch-all alias for unknown local names */
	}
	if (*s == '\0' || *s == '.' || strlen(s) > ADDR_LOCAL_MAX || strstr(s, "..") != NULL) {
		return 0;
	}
	for (p = s; *p != '\0'; p++) {
		if (!(*p >= 'a' && *p <= 'z') && !(*p >= '0' && *p <= '9') &&
		    strchr("._+-", *p) == NULL) {
			return 0;
		}
	}
	return 1;
}

/* Copies the n bytes at s lower-cased into dst (size bytes); -1 if they
 * do not fit. */
static int alias_lower(char *dst, size_t size, const char *s, size_t n)
{
	size_t i;

	if (n >= size) {
		return -1;
	}
	for (i = 0; i < n; i++) {
		dst[i] = (char)tolower((unsigned char)s[i]);
	}
	dst[n] = '\0';
	return 0;
}

static int alias_find(const struct alias_table *t, const char *name)
{
	unsigned i;

	if (t == NULL) {
		return -1;
	}
	for (i = 0; i < t->n && i < ALIAS_MAX; i++) {
		if (strcasecmp(t->e[i].name, name) == 0) {
			return (int)i;
		}
	}
	return -1;
}

/* Appends n bytes to the arena at *pos; -1 when it is full. */
static int alias_put(struct alias_table *t, size_t *pos, const char *s, size_t n)
{
	if (n > ALIAS_ARENA - *pos) {
		return -1;
	}
	memcpy(t->arena + *pos, s, n);
	*pos += n;
	return 0;
}

/* Checks one target (n bytes at s, trimmed) and writes its normal form to
 * out: a lower-cased local name, or "local@domain" as addr_parse_path
 * gives it.  Programs, files and includes are refused: this server never
 * runs a command or writes outside the Maildirs. */
static int alias_target(const char *name, const char *s, size_t n, char *out,
                        char *err, size_t errlen)
{
	char path[ADDR_MAX + 3];
	const char *rest;
	size_t i;

	if (n == 0) {
		return alias_fail(err, errlen, "alias '%s': empty target", name);
	}
	if (s[0] == '|') {
		return alias_fail(err, errlen, "alias '%s': program target '%.*s' is not supported",
		                  name, (int)n, s);
	}
	if (s[0] == '/') {
		return alias_fail(err, errlen, "alias '%s': file target '%.*s' is not supported",
		                  name, (int)n, s);
	}
	if (n >= 9 && strncasecmp(s, ":include:", 9) == 0) {
		return alias_fail(err, errlen, "alias '%s': include target '%.*s' is not supported",
		                  name, (int)n, s);
	}
	if (s[0] == '"') {
		return alias_fail(err, errlen, "alias '%s': quoted target %.*s is not supported",
		                  name, (int)n, s);
	}
	if (n > ADDR_MAX) {
		return alias_fail(err, errlen, "alias '%s': target too long", name);
	}
	for (i = 0; i < n; i++) {
		if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f) {
			return alias_fail(err, errlen, "alias '%s': bad target '%.*s'", name, (int)n, s);
		}
	}
	if (memchr(s, '@', n) == NULL) {
		if (alias_lower(out, ADDR_MAX + 1, s, n) < 0 || !alias_name_ok(out)) {
			return alias_fail(err, errlen, "alias '%s': bad target '%.*s'", name, (int)n, s);
		}
		return 0;
	}
	path[0] = '<';
	memcpy(path + 1, s, n);
	path[n + 1] = '>';
	path[n + 2] = '\0';
	switch (addr_parse_path(path, out, &rest, 0, 0)) {
	case ADDR_OK:
		return 0;
	case ADDR_ROUTE:
		return alias_fail(err, errlen, "alias '%s': target '%.*s' is a source route",
		                  name, (int)n, s);
	case ADDR_TOO_LONG:
		return alias_fail(err, errlen, "alias '%s': target too long", name);
	case ADDR_SYNTAX:
		break;
	}
	return alias_fail(err, errlen, "alias '%s': bad target '%.*s'", name, (int)n, s);
}

/* Trims spaces at both ends of [*s, *e). */
static void alias_trim(const char **s, const char **e)
{
	while (*s < *e && alias_space(**s)) {
		(*s)++;
	}
	while (*e > *s && alias_space((*e)[-1])) {
		(*e)--;
	}
}

int alias_line(struct alias_table *t, const char *line, char *err, size_t errlen)
{
	char name[ADDR_LOCAL_MAX + 1];
	char target[ADDR_MAX + 1];
	const char *p = line, *end, *colon, *ns, *ne, *ts, *te;
	size_t pos, start;
	int first = 1;

	while (alias_space(*p)) {
		p++;
	}
	if (*p == '\0' || *p == '#') {
		return 0;
	}
	/* A '#' after a space starts a comment; "a#b@x" is an address. */
	for (end = p; *end != '\0'; end++) {
		if (*end == '#' && alias_space(end[-1])) {
			break;
		}
	}
	colon = memchr(p, ':', (size_t)(end - p));
	if (colon == NULL) {
		return alias_fail(err, errlen, "missing ':' after the alias name");
	}
	ns = p;
	ne = colon;
	alias_trim(&ns, &ne);
	if (ns == ne) {
		return alias_fail(err, errlen, "missing alias name");
	}
	if (alias_lower(name, sizeof name, ns, (size_t)(ne - ns)) < 0) {
		return alias_fail(err, errlen, "alias name too long (max %d)", ADDR_LOCAL_MAX);
	}
	if (!alias_name_ok(name)) {
		return alias_fail(err, errlen, "bad alias name '%s'", name);
	}
	if (alias_find(t, name) >= 0) {
		return alias_fail(err, errlen, "duplicate alias '%s'", name);
	}
	if (t->n >= ALIAS_MAX) {
		return alias_fail(err, errlen, "too many aliases (max %d)", ALIAS_MAX);
	}
	/* Written after t->used and committed only when the whole line is
	 * good, so that a bad line leaves the table as it was. */
	start = t->used;
	pos = start;
	if (alias_put(t, &pos, name, strlen(name) + 1) < 0) {
		return alias_fail(err, errlen, "aliases file too large (max %d bytes)", ALIAS_ARENA);
	}
	p = colon + 1;
	for (;;) {
		ts = p;
		te = memchr(p, ',', (size_t)(end - p));
		if (te == NULL) {
			te = end;
		}
		p = te;
		alias_trim(&ts, &te);
		if (first && ts == te && p == end) {
			return alias_fail(err, errlen, "alias '%s': no target", name);
		}
		if (alias_target(name, ts, (size_t)(te - ts), target, err, errlen) < 0) {
			return -1;
		}
		if ((!first && alias_put(t, &pos, ",", 1) < 0) ||
		    alias_put(t, &pos, target, strlen(target)) < 0) {
			return alias_fail(err, errlen, "aliases file too large (max %d bytes)",
			                  ALIAS_ARENA);
		}
		first = 0;
		if (p == end) {
			break;
		}
		p++;   /* the comma */
	}
	if (alias_put(t, &pos, "", 1) < 0) {
		return alias_fail(err, errlen, "aliases file too large (max %d bytes)", ALIAS_ARENA);
	}
	t->e[t->n].name = t->arena + start;
	t->e[t->n].targets = t->arena + start + strlen(name) + 1;
	t->n++;
	t->used = pos;
	return 0;
}

/* Logical lines: a line that starts with a space or tab continues the one
 * before it (aliases(5)); blank and comment lines are skipped.  textfile
 * reads the physical lines; the joining is the aliases' own. */
struct alias_reader {
	struct alias_table *t;
	char logical[ALIAS_LINE_MAX + 1];
	size_t llen;
	unsigned start;      /* line number of the pending logical line, 0: none */
};

/* Parses the pending logical line; an error is reported at its first line. */
static int alias_flush(struct alias_reader *r, unsigned *lineno, char *msg, size_t msglen)
{
	if (r->start == 0) {
		return 0;
	}
	r->logical[r->llen] = '\0';
	if (alias_line(r->t, r->logical, msg, msglen) < 0) {
		*lineno = r->start;
		return -1;
	}
	r->start = 0;
	r->llen = 0;
	return 0;
}

/* One physical line for textfile_read; NULL at the end of the file, where
 * the last logical line is still pending. */
static int alias_phys(void *ctx, char *line, unsigned *lineno, char *msg, size_t msglen)
{
	struct alias_reader *r = ctx;
	const char *s = line;
	size_t n;

	if (line == NULL) {
		return alias_flush(r, lineno, msg, msglen);
	}
	while (alias_space(*s)) {
		s++;
	}
	if (*s == '\0' || *s == '#') {
		return 0;
	}
	if (!alias_space(line[0])) {
		if (alias_flush(r, lineno, msg, msglen) < 0) {
			return -1;
		}
		r->start = *lineno;
	} else if (r->start == 0) {
		return alias_fail(msg, msglen, "continuation line without an alias");
	} else {
		s--;   /* keep one space between the joined lines */
	}
	n = strlen(s);
	if (n > ALIAS_LINE_MAX - r->llen) {
		*lineno = r->start;
		return alias_fail(msg, msglen, "alias too long (max %d bytes)", ALIAS_LINE_MAX);
	}
	memcpy(r->logical + r->llen, s, n);
	r->llen += n;
	return 0;
}

/* A missing aliases file is an empty table. */
static const struct textfile_opts alias_file = { ALIAS_PHYS_MAX, ALIAS_MSG_MAX, 1 };
_Static_assert(ALIAS_PHYS_MAX <= TEXTFILE_LINE_MAX && ALIAS_MSG_MAX <= TEXTFILE_MSG_MAX,
               "alias_file fits textfile's buffers");

int alias_load(struct alias_table *t, const char *path, char *err, size_t errlen)
{
	struct alias_reader r;

	/* Only the counts: entries past them are never read, and a table
	 * nobody fills stays out of the RSS. */
	t->n = 0;
	t->used = 0;
	r.t = t;
	r.llen = 0;
	r.start = 0;
	if (textfile_read(path, &alias_file, alias_phys, &r, err, errlen) < 0) {
		t->n = 0;   /* no half table */
		t->used = 0;
		return -1;
	}
	return 0;
}

/* -------------------------------------------------------------- expansion */

struct alias_walk {
	const struct alias_table *t;
	addr_user_fn is_user;
	const char *first_user;
	const struct conf *c;
	struct addr_expansion *x;
	const char *stack[ALIAS_DEPTH];   /* aliases being expanded, outermost first */
	unsigned depth;
};

static int alias_is_user(const struct alias_walk *w, const char *name)
{
	return w->is_user != NULL && w->is_user(name);
}

/* Adds a final target, once.  1 when it is there, -1 when x is full.
 * Compared without case: local names are lower-case already, and two
 * spellings of one remote mailbox are, in practice, one mailbox. */
static int alias_add(struct alias_walk *w, const char *target, int remote)
{
	struct addr_expansion *x = w->x;
	size_t len = strlen(target);
	unsigned i;

	for (i = 0; i < x->n; i++) {
		if (strcasecmp(x->target[i], target) == 0) {
			return 1;
		}
	}
	if (x->n >= ADDR_EXPAND_MAX || len > ADDR_MAX) {
		return -1;
	}
	memcpy(x->target[x->n], target, len + 1);
	x->remote[x->n] = remote;
	x->n++;
	return 1;
}

static int alias_resolve(struct alias_walk *w, const char *name);

/* One target of the alias on top of the stack. */
static int alias_one(struct alias_walk *w, const char *target)
{
	char local[ADDR_LOCAL_MAX + 1];
	const char *domain;

	domain = addr_split(target, local);
	if (domain != NULL) {
		if (!conf_is_local_domain(w->c, domain)) {
			return alias_add(w, target, 1);
		}
		/* user@<a local domain> is the local user; a local part that
		 * could not be a name is unknown, like any unknown name. */
		if (alias_lower(local, sizeof local, local, strlen(local)) < 0 ||
		    !alias_name_ok(local)) {
			return 0;
		}
		target = local;
	}
	/* "root: root, admin" means the user root as well (aliases(5)). */
	if (strcasecmp(target, w->stack[w->depth - 1]) == 0) {
		return alias_is_user(w, target) ? alias_add(w, target, 0) : 0;
	}
	return alias_resolve(w, target);
}

/* The targets of alias i.  >0 if any resolved, 0 if none, -1 on error. */
static int alias_targets(struct alias_walk *w, unsigned i)
{
	char target[ADDR_MAX + 1];
	const char *p = w->t->e[i].targets, *comma;
	size_t len;
	unsigned k;
	int found = 0, r;

	for (k = 0; k < w->depth; k++) {
		if (strcasecmp(w->stack[k], w->t->e[i].name) == 0) {
			return -1;   /* a loop */
		}
	}
	if (w->depth >= ALIAS_DEPTH) {
		return -1;
	}
	w->stack[w->depth++] = w->t->e[i].name;
	for (;;) {
		comma = strchr(p, ',');
		len = comma != NULL ? (size_t)(comma - p) : strlen(p);
		if (len > ADDR_MAX) {
			found = -1;
			break;
		}
		memcpy(target, p, len);
		target[len] = '\0';
		r = alias_one(w, target);
		if (r < 0) {
			found = -1;
			break;
		}
		found += r;
		if (comma == NULL) {
			break;
		}
		p = comma + 1;
	}
	w->depth--;
	return found;
}

/* RFC 5321 4.5.1: postmaster must always reach someone. */
static int alias_postmaster(struct alias_walk *w)
{
	char first[ADDR_LOCAL_MAX + 1];
	int r;

	if (alias_is_user(w, "postmaster")) {
		return alias_add(w, "postmaster", 0);
	}
	r = alias_resolve(w, "root");
	if (r != 0) {
		return r;
	}
	if (w->first_user == NULL || w->first_user[0] == '\0' ||
	    alias_lower(first, sizeof first, w->first_user, strlen(w->first_user)) < 0 ||
	    !alias_name_ok(first)) {
		return 0;
	}
	return alias_add(w, first, 0);
}

/* A lower-case local name: its alias, else the user, else nothing; then
 * the postmaster rule.  >0 if it resolved, 0 if not, -1 on error. */
static int alias_resolve(struct alias_walk *w, const char *name)
{
	int i = alias_find(w->t, name);
	int r = 0;

	if (i >= 0) {
		r = alias_targets(w, (unsigned)i);
	} else if (alias_is_user(w, name)) {
		return alias_add(w, name, 0);
	}
	if (r == 0 && strcmp(name, "postmaster") == 0) {
		return alias_postmaster(w);
	}
	return r;
}

int addr_expand(const struct alias_table *t, const char *local, addr_user_fn is_user,
                const char *first_user, const struct conf *c, struct addr_expansion *x)
{
	struct alias_walk w;
	char name[ADDR_LOCAL_MAX + 1];

	x->n = 0;
	if (local == NULL || alias_lower(name, sizeof name, local, strlen(local)) < 0 ||
	    !alias_name_ok(name)) {
		return 0;
	}
	memset(&w, 0, sizeof w);
	w.t = t;
	w.is_user = is_user;
	w.first_user = first_user;
	w.c = c;
	w.x = x;
	if (alias_resolve(&w, name) < 0) {
		return -1;
	}
	return (int)x->n;
}

/* An address literal: "[a.b.c.d]" or "[IPv6:...]", checked by inet_pton. */
static int helo_literal_ok(const char *name)
{
	char buf[INET6_ADDRSTRLEN + 8];
	unsigned char a[16];
	size_t n = strlen(name);

	if (n < 3 || name[n - 1] != ']' || n - 2 >= sizeof buf) {
		return 0;
	}
	memcpy(buf, name + 1, n - 2);
	buf[n - 2] = '\0';
	if (strncasecmp(buf, "IPv6:", 5) == 0) {
		return inet_pton(AF_INET6, buf + 5, a) == 1;
	}
	return inet_pton(AF_INET, buf, a) == 1;
}

int addr_helo_ok(const char *name)
{
	size_t label = 0, total = 0;
	const char *p;

	if (name[0] == '[') {
		return helo_literal_ok(name);
	}
	for (p = name; *p != '\0'; p++, total++) {
		if (*p == '.') {
			if (label == 0 || p[-1] == '-') {
				return 0;
			}
			label = 0;
			continue;
		}
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_') {
			return 0;
		}
		if ((*p == '-' && label == 0) || ++label > 63) {
			return 0;
		}
	}
	return label > 0 && p[-1] != '-' && total <= 253;
}
