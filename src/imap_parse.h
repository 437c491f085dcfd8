/* imap_parse.h - the IMAP tokenizer (RFC 3501 9): atoms, quoted strings,
 * literals, numbers, sequence sets, dates, flag lists.
 *
 * A command is parsed where it lies, in the session's buffer, with its
 * literals inline as on the wire ("{5}\r\nhello").  A token is a slice of
 * that buffer; quoted strings are unescaped in place.  The first syntax
 * error is kept (t->err) and every later call fails: a handler parses
 * everything, then looks once.
 */
#ifndef PICOMAIL_IMAP_PARSE_H
#define PICOMAIL_IMAP_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct imap_str {
	char *p;
	size_t len;
};

struct imap_tok {
	char *p, *end;
	int err;
};

void tok_init(struct imap_tok *t, char *buf, size_t len);

/* One space, else the error. */
void tok_sp(struct imap_tok *t);

/* 1 (and consumed) if the next octet is c. */
int tok_is(struct imap_tok *t, char c);

/* 1 when nothing is left; the error if something is. */
int tok_end(struct imap_tok *t);

/* An atom (ATOM-CHAR+; with ']' when brackets is 0). */
void tok_atom(struct imap_tok *t, struct imap_str *s, int brackets);

/* A quoted string or a literal. */
void tok_string(struct imap_tok *t, struct imap_str *s);

/* An astring: an atom (']' allowed) or a string. */
void tok_astring(struct imap_tok *t, struct imap_str *s);

/* An astring copied into out (size octets, NUL-terminated); the error for
 * one that holds NUL or does not fit. */
void tok_cstring(struct imap_tok *t, char *out, size_t size);

/* A number (1*DIGIT, up to 2^32 - 1). */
uint32_t tok_number(struct imap_tok *t);

/* A sequence set ("1:3,5,7:*"), checked, as a slice. */
void tok_seqset(struct imap_tok *t, struct imap_str *s);

/* The next range of a checked set at *p (end of set at end), with '*' as
 * star; low <= high.  1, or 0 past the last. */
int set_next(const char **p, const char *end, uint32_t star, uint32_t *low, uint32_t *high);

/* 1 if n is in the set. */
int set_has(const struct imap_str *set, uint32_t star, uint32_t n);

/* A date ("1-Feb-1994", quoted or not) as days since 1970-01-01. */
long tok_date(struct imap_tok *t);

/* A date-time string ("17-Jul-1996 02:44:25 -0700") as a time. */
time_t tok_datetime(struct imap_tok *t);

/* A flag list "(\Seen \Deleted ...)" (or one flag without parentheses
 * when bare) as folder.h FL_ bits; keywords are ignored, \Recent and
 * unknown system flags are errors. */
unsigned tok_flags(struct imap_tok *t, int bare);

/* Days since 1970-01-01 of a civil date; month 1-12. */
long days_from_civil(long y, unsigned m, unsigned d);

/* The month (1-12) of a three-letter English name, or 0. */
unsigned month_of(const char *s);

/* The three-letter name of month 1-12. */
const char *month_name(unsigned m);

#endif
