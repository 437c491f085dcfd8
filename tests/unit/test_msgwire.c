/* test_msgwire.c - a stored message as POP3 sends it (src/msgwire.c), as
 * a table of file bytes and the wire bytes and size that must come of
 * them, whatever line ends the file holds. */
#include "check.h"
#include "../../src/msgwire.h"

#include <stdint.h>

struct row {
	const char *name;
	const char *file;     /* the bytes in the Maildir file */
	size_t len;
	long lines;           /* -1: RETR; else TOP's line count */
	const char *wire;     /* what is sent, before the final ".\r\n" */
	size_t wire_len;
	uint64_t octets;      /* RETR: the size LIST gives */
};

#define B(s) s, sizeof(s) - 1

static const struct row rows[] = {
	{ "empty file", B(""), -1, B(""), 0 },
	{ "LF", B("a\n"), -1, B("a\r\n"), 3 },
	{ "CRLF", B("a\r\n"), -1, B("a\r\n"), 3 },
	{ "no line end at the end", B("a"), -1, B("a\r\n"), 3 },
	{ "CR at the end", B("a\r"), -1, B("a\r\n"), 3 },
	{ "CR CR LF is one line end", B("a\r\r\nb\r\r\n"), -1, B("a\r\nb\r\n"), 6 },
	{ "bare CR ends a line", B("a\rb\n"), -1, B("a\r\nb\r\n"), 6 },
	{ "a run of CRs ends one line", B("a\r\rb"), -1, B("a\r\nb\r\n"), 6 },
	{ "lone LF", B("\n"), -1, B("\r\n"), 2 },
	{ "lone CR", B("\r"), -1, B("\r\n"), 2 },
	{ "CR after the last LF", B("a\n\r"), -1, B("a\r\n\r\n"), 5 },
	{ "empty lines, LF", B("a\n\n\nb\n"), -1, B("a\r\n\r\n\r\nb\r\n"), 10 },
	{ "empty lines, CRLF", B("\r\n\r\n"), -1, B("\r\n\r\n"), 4 },
	{ "dot stuffed, LF", B(".x\n"), -1, B("..x\r\n"), 4 },
	{ "dot stuffed, CRLF", B(".\r\n..\r\n"), -1, B("..\r\n...\r\n"), 7 },
	{ "dot after a bare CR", B("a\r.\r\n"), -1, B("a\r\n..\r\n"), 6 },
	{ "dot at the very end", B("a\n."), -1, B("a\r\n..\r\n"), 6 },
	{ "dot inside a line", B("a.b\n"), -1, B("a.b\r\n"), 5 },
	{ "NUL passes", B("a\0b\n"), -1, B("a\0b\r\n"), 5 },
	{ "mixed", B("H: v\r\nH2: w\n\r\nbody\n.dot\r\nend"), -1,
	  B("H: v\r\nH2: w\r\n\r\nbody\r\n..dot\r\nend\r\n"), 32 },
	/* TOP: the header, the blank line, then that many body lines. */
	{ "TOP 0", B("H: 1\nH: 2\n\nb1\nb2\nb3\n"), 0, B("H: 1\r\nH: 2\r\n\r\n"), 0 },
	{ "TOP 2", B("H: 1\nH: 2\n\nb1\nb2\nb3\n"), 2, B("H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\n"), 0 },
	{ "TOP past the end", B("H: 1\n\nb1\nb2"), 5, B("H: 1\r\n\r\nb1\r\nb2\r\n"), 0 },
	{ "TOP 1, CRLF", B("H: 1\r\n\r\nb1\r\nb2\r\n"), 1, B("H: 1\r\n\r\nb1\r\n"), 0 },
	{ "TOP 1, bare CRs", B("H: 1\r\n\rb1\rb2\r"), 1, B("H: 1\r\n\r\nb1\r\n"), 0 },
	{ "TOP 1, CR CR LF", B("H: 1\r\r\n\r\r\nb1\r\r\nb2\r\r\n"), 1, B("H: 1\r\n\r\nb1\r\n"), 0 },
	{ "TOP, no blank line", B("H: 1\nH: 2"), 3, B("H: 1\r\nH: 2\r\n"), 0 },
	{ "TOP 1, dots", B("H: 1\n\n.b1\n.b2\n"), 1, B("H: 1\r\n\r\n..b1\r\n"), 0 },
	{ "TOP 0, empty header", B("\nb1\n"), 0, B("\r\n"), 0 },
};

/* Feeds f[0..n) in two pieces cut at split; the whole wire into wire. */
static size_t run(const struct row *r, size_t split, unsigned char *wire, struct msgwire *w)
{
	unsigned char out[256];
	size_t used, outlen, total = 0, at = 0;
	size_t piece[2] = { split, r->len - split };
	unsigned k;

	msgwire_init(w, r->lines);
	for (k = 0; k < 2; k++) {
		used = msgwire_feed(w, (const unsigned char *)r->file + at, piece[k], out, &outlen);
		CHECK(outlen <= 2 * piece[k] + 2);
		CHECK(used == piece[k] || w->done);
		memcpy(wire + total, out, outlen);
		total += outlen;
		at += piece[k];
		if (w->done) {
			break;
		}
	}
	outlen = msgwire_end(w, out);
	CHECK(outlen <= 2);
	memcpy(wire + total, out, outlen);
	return total + outlen;
}

static void test_rows(void)
{
	unsigned char wire[512];
	struct msgwire w;
	size_t i, split, got;

	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		const struct row *r = &rows[i];

		check_row = r->name;
		for (split = 0; split <= r->len; split++) {
			got = run(r, split, wire, &w);
			CHECK_INT(got, r->wire_len);
			CHECK(got == r->wire_len && memcmp(wire, r->wire, got) == 0);
			if (r->lines < 0) {
				CHECK_INT(w.octets, r->octets);
			}
		}
	}
	check_row = NULL;
}

/* TOP stops at the end of its last line: the byte after a bare CR that
 * ends it is not consumed, and nothing more comes. */
static void test_top_stops(void)
{
	static const char file[] = "H\n\nb1\rX\nmore\n";
	unsigned char out[64];
	struct msgwire w;
	size_t used, outlen;

	msgwire_init(&w, 1);
	used = msgwire_feed(&w, (const unsigned char *)file, sizeof file - 1, out, &outlen);
	CHECK_INT(used, 6);
	CHECK(w.done);
	CHECK(outlen == 9 && memcmp(out, "H\r\n\r\nb1\r\n", 9) == 0);
	CHECK_INT(msgwire_feed(&w, (const unsigned char *)"x\n", 2, out, &outlen), 0);
	CHECK_INT(outlen, 0);
	CHECK_INT(msgwire_end(&w, out), 0);
}

/* The bound the pump relies on: at most 2 * n + 2 octets for n, even
 * when a CR carried over from the last piece meets a dot. */
static void test_bound(void)
{
	unsigned char out[8];
	struct msgwire w;
	size_t outlen;

	msgwire_init(&w, -1);
	msgwire_feed(&w, (const unsigned char *)"a\r", 2, out, &outlen);
	CHECK_INT(outlen, 1);
	msgwire_feed(&w, (const unsigned char *)".", 1, out, &outlen);
	CHECK_INT(outlen, 4);
	CHECK(memcmp(out, "\r\n..", 4) == 0);
}

int main(void)
{
	test_rows();
	test_top_stops();
	test_bound();
	return check_done("test_msgwire");
}
