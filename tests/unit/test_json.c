/* test_json.c - the JSON member reader (src/json.c) as a table: a text,
 * and the fields it must give or the reason it must be refused with. */
#include "check.h"
#include "../../src/json.h"

#include <stdlib.h>

struct row {
	const char *name;
	const char *text;
	const char *why;          /* NULL: read; else the reason of the refusal */
	const char *access;       /* access_token, NULL when absent */
	long long expires;        /* expires_in, -1 when absent */
	const char *desc;         /* error_description (cut to 16) */
};

static const struct row rows[] = {
	{ "token reply", "{\"access_token\":\"ya29.a0Af\",\"expires_in\":3599,\"token_type\":\"Bearer\"}",
	  NULL, "ya29.a0Af", 3599, NULL },
	{ "spaces everywhere", " \r\n\t{ \"expires_in\" : 10 , \"access_token\" : \"t\" } \n", NULL,
	  "t", 10, NULL },
	{ "empty object", "{}", NULL, NULL, -1, NULL },
	{ "quoted number", "{\"expires_in\":\"3600\"}", NULL, NULL, 3600, NULL },
	{ "fraction dropped", "{\"expires_in\":59.9}", NULL, NULL, 59, NULL },
	{ "nested skipped", "{\"error_codes\":[70000,{\"a\":[1,2,{\"b\":null}]}],\"trace\":{\"x\":true},"
	  "\"access_token\":\"t\"}", NULL, "t", -1, NULL },
	{ "escapes", "{\"access_token\":\"a\\/b\\\\c\\\"d\\u0041\\t\"}", NULL, "a/b\\c\"dA\t", -1, NULL },
	{ "two-byte utf-8", "{\"access_token\":\"\\u00e9\"}", NULL, "\xc3\xa9", -1, NULL },
	{ "three-byte utf-8", "{\"access_token\":\"\\u20ac\"}", NULL, "\xe2\x82\xac", -1, NULL },
	{ "surrogate pair", "{\"access_token\":\"\\ud83d\\ude00\"}", NULL, "\xf0\x9f\x98\x80", -1,
	  NULL },
	{ "raw utf-8 kept", "{\"access_token\":\"\xc3\xa9\"}", NULL, "\xc3\xa9", -1, NULL },
	{ "escaped name", "{\"access\\u005ftoken\":\"t\"}", NULL, "t", -1, NULL },
	{ "long description cut", "{\"error_description\":\"AADSTS70000: The provided grant\"}", NULL,
	  NULL, -1, "AADSTS70000: Th" },
	{ "unknown long name", "{\"a_very_long_member_name_that_is_longer_than_sixty_four_octets_"
	  "for_sure\":1,\"expires_in\":5}", NULL, NULL, 5, NULL },
	/* refused */
	{ "not an object", "[1]", "not a JSON object", NULL, -1, NULL },
	{ "empty text", "", "not a JSON object", NULL, -1, NULL },
	{ "text after", "{} x", "text after the object", NULL, -1, NULL },
	{ "two objects", "{}{}", "text after the object", NULL, -1, NULL },
	{ "unterminated", "{\"access_token\":\"abc", "a string without its end", NULL, -1, NULL },
	{ "no end", "{\"expires_in\":1", "',' missing between members", NULL, -1, NULL },
	{ "trailing comma", "{\"expires_in\":1,}", "a member without its name", NULL, -1, NULL },
	{ "no colon", "{\"expires_in\" 1}", "a member without ':'", NULL, -1, NULL },
	{ "control in string", "{\"access_token\":\"a\nb\"}", "a control character in a string", NULL,
	  -1, NULL },
	{ "nul escape", "{\"access_token\":\"a\\u0000b\"}", "\\u0000 in a string", NULL, -1, NULL },
	{ "bad escape", "{\"access_token\":\"a\\qb\"}", "a bad escape in a string", NULL, -1, NULL },
	{ "short u escape", "{\"access_token\":\"\\u12\"}", "a bad \\u escape", NULL, -1, NULL },
	{ "lone high surrogate", "{\"access_token\":\"\\ud83dx\"}", "a lone high surrogate", NULL, -1,
	  NULL },
	{ "lone low surrogate", "{\"access_token\":\"\\ude00\"}", "a lone low surrogate", NULL, -1,
	  NULL },
	{ "duplicate member", "{\"access_token\":\"a\",\"access_token\":\"b\"}", "a member twice", NULL,
	  -1, NULL },
	{ "wrong type", "{\"access_token\":5}", "a member of another type than expected", NULL, -1,
	  NULL },
	{ "number as object", "{\"expires_in\":{}}", "a member of another type than expected", NULL,
	  -1, NULL },
	{ "negative", "{\"expires_in\":-5}", "a number out of range", NULL, -1, NULL },
	{ "exponent", "{\"expires_in\":1e3}", "a number out of range", NULL, -1, NULL },
	{ "huge", "{\"expires_in\":99999999999999999999}", "a number out of range", NULL, -1, NULL },
	{ "quoted non-digits", "{\"expires_in\":\"12a\"}", "a bad number", NULL, -1, NULL },
	{ "too deep", "{\"x\":[[[[[1]]]]]}", "nested too deeply", NULL, -1, NULL },
	{ "bad literal", "{\"x\":tru}", "not JSON", NULL, -1, NULL },
	{ "token too long", "{\"access_token\":\"0123456789012345678901234567890123456789\"}",
	  "a string longer than its field", NULL, -1, NULL },
	{ "leading zero", "{\"expires_in\":01}", "',' missing between members", NULL, -1, NULL },
};

int main(void)
{
	char access[32], desc[16];
	struct json_field f[] = {
		{ "access_token", JSON_STRING, access, sizeof access, 0, 0, 0 },
		{ "expires_in", JSON_NUMBER, NULL, 0, 0, 0, 0 },
		{ "error_description", JSON_STRING, desc, sizeof desc, 1, 0, 0 },
	};
	const char *why;
	size_t i;
	int r;

	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		const struct row *w = &rows[i];

		check_row = w->name;
		why = NULL;
		r = json_read(w->text, strlen(w->text), f, 3, &why);
		if (w->why != NULL) {
			CHECK_INT(r, -1);
			CHECK_STR(why, w->why);
			CHECK(!f[0].found && !f[1].found && !f[2].found);
			continue;
		}
		CHECK_INT(r, 0);
		CHECK_INT(f[0].found, w->access != NULL);
		if (w->access != NULL) {
			CHECK_STR(access, w->access);
		}
		CHECK_INT(f[1].found ? f[1].num : -1, w->expires);
		if (w->desc != NULL) {
			CHECK_STR(desc, w->desc);
		}
	}
	/* The length bounds the read, not a NUL. */
	check_row = "length";
	CHECK_INT(json_read("{\"expires_in\":12}garbage", 17, f, 3, &why), 0);
	CHECK_INT(f[1].num, 12);
	CHECK_INT(json_read("{\"expires_in\":12}", 10, f, 3, &why), -1);
	return check_done("test_json");
}
