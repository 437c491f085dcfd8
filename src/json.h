/* json.h - the members of a JSON object that a caller names, read from a
 * bounded text (RFC 8259): what an OAuth2 token endpoint answers, and the
 * error challenge of XOAUTH2/OAUTHBEARER.
 *
 * Only the top-level object is read: its members named in the table are
 * copied (strings unescaped into UTF-8), every other member is checked and
 * skipped, nested no deeper than JSON_DEPTH_MAX.  The text must be one
 * object with nothing but white space after it.  No allocation; the text
 * is not modified.
 */
#ifndef PICOMAIL_JSON_H
#define PICOMAIL_JSON_H

#include <stddef.h>
#include <stdint.h>

#define JSON_DEPTH_MAX 4            /* objects and arrays inside a member */
#define JSON_NUMBER_MAX 1000000000000LL

enum json_type {
	JSON_STRING,   /* a string */
	JSON_NUMBER,   /* a whole number 0..JSON_NUMBER_MAX, or a string of digits
	                * (some endpoints quote expires_in); a fraction is dropped */
};

struct json_field {
	const char *name;
	enum json_type type;
	char *out;         /* JSON_STRING: room for size octets, the NUL included */
	size_t size;
	int cut;           /* 1: a longer string is cut to fit (texts for people);
	                    * 0: it is refused (tokens, codes) */
	/* results */
	int found;
	int64_t num;       /* JSON_NUMBER */
};

/* Reads the object in text[0..len) into the fields (found reset first).
 * A string may not hold a control character or \u0000; a member named in
 * the table may not come twice, nor with a value of another type.  0, or
 * -1 with a fixed reason in *why. */
int json_read(const char *text, size_t len, struct json_field *f, unsigned n, const char **why);

#endif
