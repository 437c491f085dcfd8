/* test_smtp_data.c - the DATA byte state machine, as a table of wire bytes
 * and what must come of them. */
#include "check.h"
#include "../../src/smtp_data.h"

#include <stdlib.h>

struct row {
	const char *name;
	const char *wire;      /* bytes after the 354 */
	size_t len;            /* 0: strlen(wire) */
	const char *stored;    /* the message as stored (LF ends, unstuffed) */
	size_t consumed;       /* where the end of data was: bytes eaten */
	unsigned flags;        /* DATA_BARE_CR | DATA_BARE_LF | DATA_NUL */
	int ended;
};

#define W(s) s, sizeof(s) - 1

static const struct row rows[] = {
	{ "empty message", W(".\r\n"), "", 3, 0, 1 },
	{ "one line", W("a\r\n.\r\n"), "a\n", 6, 0, 1 },
	{ "leaves the next command", W("a\r\n.\r\nQUIT\r\n"), "a\n", 6, 0, 1 },
	{ "dot unstuffed", W("..x\r\n.\r\n"), ".x\n", 8, 0, 1 },
	{ "lone stuffed dot", W("..\r\n.\r\n"), ".\n", 7, 0, 1 },
	{ "no end yet", W("abc\r\n"), "abc\n", 5, 0, 0 },
	{ "dot not at line start", W("a.\r\n.\r\n"), "a.\n", 7, 0, 1 },
	{ "8bit passes", W("\xc3\xa9\r\n.\r\n"), "\xc3\xa9\n", 7, 0, 1 },
	/* The smuggling variants: none of them ends the data. */
	{ "\\n.\\n", W("a\n.\nb\r\n.\r\n"), "a\n.\nb\n", 10, DATA_BARE_LF, 1 },
	{ "\\r.\\r", W("a\r.\rb\r\n.\r\n"), NULL, 10, DATA_BARE_CR, 1 },
	{ "\\r.\\n", W("a\r.\nb\r\n.\r\n"), NULL, 10, DATA_BARE_CR | DATA_BARE_LF, 1 },
	{ "\\n.\\r", W("a\n.\rb\r\n.\r\n"), NULL, 10, DATA_BARE_LF | DATA_BARE_CR, 1 },
	{ "\\n.\\r\\n", W("a\n.\r\nb\r\n.\r\n"), NULL, 11, DATA_BARE_LF, 1 },
	{ "\\r\\n.\\n", W("a\r\n.\nb\r\n.\r\n"), NULL, 11, DATA_BARE_LF, 1 },
	{ "\\r.\\r\\n", W("a\r.\r\nb\r\n.\r\n"), NULL, 11, DATA_BARE_CR, 1 },
	{ "\\r\\n.\\r", W("a\r\n.\rb\r\n.\r\n"), NULL, 11, DATA_BARE_CR, 1 },
	{ "\\r\\n\\0.\\r\\n", W("a\r\n\0.\r\nb\r\n.\r\n"), NULL, 13, DATA_NUL, 1 },
	/* "\r\r\n.\r\n": the first CR is bare, but <CRLF>.<CRLF> follows and is
	 * the real end; the message is refused, not split. */
	{ "\\r\\r\\n.\\r\\n", W("a\r\r\n.\r\nMAIL\r\n"), NULL, 7, DATA_BARE_CR, 1 },
	{ "bare LF at line start", W("\n.\r\n.\r\n"), NULL, 7, DATA_BARE_LF, 1 },
};

/* Feeds the wire bytes split at every position, to prove that where the
 * reads fall changes nothing. */
static void run_row(const struct row *r)
{
	size_t split, consumed, outlen, total_out, a;
	unsigned char out[256];
	unsigned char stored[256];
	struct smtp_data d;

	for (split = 0; split <= r->len; split++) {
		smtp_data_init(&d);
		total_out = 0;
		consumed = smtp_data_feed(&d, (const unsigned char *)r->wire, split, out, &outlen);
		memcpy(stored, out, outlen);
		total_out = outlen;
		if (d.state != DATA_END) {
			a = smtp_data_feed(&d, (const unsigned char *)r->wire + consumed,
			                   r->len - consumed, out, &outlen);
			consumed += a;
			memcpy(stored + total_out, out, outlen);
			total_out += outlen;
		}
		CHECK_INT(d.state == DATA_END, r->ended);
		CHECK_INT(consumed, r->consumed);
		CHECK_INT(d.flags, r->flags);
		if (r->stored != NULL) {
			CHECK_INT(total_out, strlen(r->stored));
			CHECK(memcmp(stored, r->stored, total_out) == 0);
		}
		CHECK(total_out <= consumed);
	}
}

/* The size that max_message_size bounds and SIZE= declares (RFC 1870
 * section 3): CRLF line ends count, the stuffing dots and the final
 * ".\r\n" do not. */
static const struct size_row {
	const char *name;
	const char *wire;
	size_t len;
	uint64_t octets;
} size_rows[] = {
	{ "empty", W(".\r\n"), 0 },
	{ "one line", W("abc\r\n.\r\n"), 5 },
	{ "stuffed dot not counted", W("..x\r\n.\r\n"), 4 },
	{ "lone stuffed dot", W("..\r\n.\r\n"), 3 },
	{ "every line stuffed", W("..a\r\n..\r\n...\r\n.\r\n"), 11 },
	{ "dot inside a line counts", W("a.\r\n.\r\n"), 4 },
	{ "blank lines", W("\r\n\r\n.\r\n"), 4 },
	{ "not ended yet", W("..a\r\n"), 4 },
};

static void test_octets(void)
{
	size_t i, split, a, outlen;
	unsigned char out[64];
	struct smtp_data d;

	for (i = 0; i < sizeof size_rows / sizeof size_rows[0]; i++) {
		const struct size_row *r = &size_rows[i];

		check_row = r->name;
		for (split = 0; split <= r->len; split++) {
			smtp_data_init(&d);
			a = smtp_data_feed(&d, (const unsigned char *)r->wire, split, out, &outlen);
			smtp_data_feed(&d, (const unsigned char *)r->wire + a, r->len - a, out,
			               &outlen);
			CHECK_INT(d.octets, r->octets);
		}
	}
}

int main(void)
{
	size_t i;

	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		check_row = rows[i].name;
		run_row(&rows[i]);
	}
	test_octets();
	return check_done("test_smtp_data");
}
