/* test_log.c - the shape of event lines (src/log_kv.c): how values are
 * written, bare or quoted and escaped, and what a full line becomes. */
#include "check.h"
#include "../../src/log.h"

#include <stdint.h>
#include <string.h>

static const struct {
	const char *value, *logged;
} values[] = {
	{ "alice", "alice" },
	{ "<a@b.example>", "<a@b.example>" },
	{ "127.0.0.1[127.0.0.1]:25", "127.0.0.1[127.0.0.1]:25" },
	{ "", "\"\"" },
	{ "250 2.0.0 Ok", "\"250 2.0.0 Ok\"" },
	{ "a\"b", "\"a\\\"b\"" },
	{ "back\\slash", "\"back\\\\slash\"" },
	{ "line\nfake: forged", "\"line\\x0afake: forged\"" },
	{ "cr\r", "\"cr\\x0d\"" },
	{ "esc\x1b[2J", "\"esc\\x1b[2J\"" },
	{ "\xff\xfe", "\"\\xff\\xfe\"" },
	{ "tab\there", "\"tab\\x09here\"" },
	{ "del\x7f", "\"del\\x7f\"" },
	{ "k=v", "k=v" },
};

static void test_values(void)
{
	char out[256];
	size_t i;

	for (i = 0; i < sizeof values / sizeof values[0]; i++) {
		check_row = values[i].value;
		log_value(out, sizeof out, values[i].value);
		CHECK_STR(out, values[i].logged);
	}
	check_row = NULL;
	log_value(out, sizeof out, NULL);
	CHECK_STR(out, "\"\"");
}

/* A value cut by a small buffer still ends in its closing quote, and never
 * in the middle of an escape. */
static void test_cut_values(void)
{
	char out[64];
	size_t n, len;

	for (n = 3; n < sizeof out; n++) {
		log_value(out, n, "a \\\\ b \"quoted\" \x01\x02\x03 and more text that does not fit");
		len = strlen(out);
		CHECK(len < n);
		CHECK(out[0] == '"' && out[len - 1] == '"');
		/* no lone backslash just before the closing quote */
		CHECK(len < 3 || out[len - 2] != '\\' || out[len - 3] == '\\');
	}
	log_value(out, 2, "x y");
	CHECK_STR(out, "");
}

static void test_lines(void)
{
	struct log_kv l;
	unsigned i;

	log_kv_start(&l, "relayed");
	log_kv_str(&l, "id", "06B15CE7");
	log_kv_addr(&l, "to", "bob@remote.test");
	log_kv_addr(&l, "from", "");
	log_kv_str(&l, "reply", "250 2.0.0 Ok: queued");
	log_kv_ms(&l, "delay", 1234);
	log_kv_ms(&l, "next", 300000);
	log_kv_u64(&l, "attempt", 2);
	log_kv_fmt(&l, "session", "%08x", 0x15cce505u);
	CHECK(!l.cut);
	CHECK_STR(l.buf, "relayed id=06B15CE7 to=<bob@remote.test> from=<> "
	          "reply=\"250 2.0.0 Ok: queued\" delay=1.234s next=300.000s attempt=2 "
	          "session=15cce505");
	/* Too many fields: the line stays within its buffer and says so. */
	log_kv_start(&l, "received");
	for (i = 0; i < 200; i++) {
		log_kv_str(&l, "field", "some value with spaces");
	}
	CHECK(l.cut);
	CHECK(strlen(l.buf) < sizeof l.buf - 14);
}

int main(void)
{
	test_values();
	test_cut_values();
	test_lines();
	return check_done("test_log");
}
