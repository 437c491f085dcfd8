/* fuzz_pop3_session.c - whole POP3 sessions (src/pop3.c with the real
 * conn.c, loop.c, mailbox.c, auth.c, base64.c) against a real Maildir in
 * a scratch directory.
 *
 * Input: a flags byte, a chunk byte, two bytes (little-endian) giving the
 * length of a message, that message, then the client's bytes as sent.
 *   flags bit 0  plaintext_auth yes (USER, PASS and AUTH without TLS)
 *         bit 1  the client talks before the greeting
 *         bit 2  the client is IPv6
 *         bit 3  a "starttls" listener, bit 4 an implicit TLS one (a real
 *                key is loaded: a ClientHello gets a real handshake)
 *         bit 5  the client goes away abruptly with its last bytes (bit 6:
 *                after reading what came, else leaving replies unread:
 *                a reset), instead of a half close: in the middle of a
 *                RETR, after a DELE, wherever the input ends
 *   chunk: as in fuzz_smtp_session.
 * alice (password "secret") has five fixed messages (one with sizes in
 * its name, one without, one empty, one with CRLF line ends named as
 * Dovecot does, one mixing LF, CRLF and bare CRs) and the input's message,
 * so RETR and TOP stuff and end whatever the file holds.  Messages a
 * session deletes are put back after it.  Every LF the server sends must
 * follow a CR, and every CR be followed by a LF (until TLS starts: then
 * the bytes are records). */
#include "fuzz.h"
#include "pop3.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct { const char *name, *text; } fixed[] = {
	{ "1700000001.M1P1.fuzz,S=40,W=45:2,", "Subject: one\n\nbody line\n.dot line\n..two\n" },
	{ "1700000002.M2P1.fuzz:2,", "no blank line\n.\nlast line without LF" },
	{ "1700000004.M4P1.fuzz,S=0,W=0:2,", "" },
	{ "1700000005.M5P1.fuzz,S=21,W=21:2,", "Subject: crlf\r\n\r\n.a\r\n" },
	{ "1700000006.M6P1.fuzz:2,", "H: 1\r\nH: 2\n\r\r\nb\rc\r\r\n.d\r.e" },
};
#define INPUT_MSG "1700000003.M3P1.fuzz:2,"

static char cur[300];
static unsigned char last;   /* the byte the server sent last */
static int plain;            /* no TLS yet: the bytes are lines */
static char tail[32];        /* the last bytes sent, to see STLS's answer */

#define TLS_GO "+OK Begin TLS negotiation\r\n"

static void write_file(const char *name, const uint8_t *text, size_t n)
{
	char path[400];
	int fd;

	snprintf(path, sizeof path, "%s/%s", cur, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || (n > 0 && write(fd, text, n) != (ssize_t)n) || close(fd) < 0) {
		fuzz_fail("writing %s: %s", path, strerror(errno));
	}
}

/* Puts back what a QUIT expunged. */
static void restore(void)
{
	char path[400];
	struct stat st;
	unsigned i;

	for (i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
		snprintf(path, sizeof path, "%s/%s", cur, fixed[i].name);
		if (stat(path, &st) < 0) {
			write_file(fixed[i].name, (const uint8_t *)fixed[i].text, strlen(fixed[i].text));
		}
	}
}

/* Every LF goes out as CRLF, whatever a message file holds (a session
 * may end in the middle of a message, so a last partial line is fine). */
static void output(const unsigned char *buf, size_t n, int end)
{
	size_t i;

	if (end || !plain) {
		return;
	}
	for (i = 0; i < n && plain; i++) {
		if (buf[i] == '\n' && last != '\r') {
			fuzz_fail("a line without CR before its LF");
		}
		if (buf[i] != '\n' && last == '\r') {
			fuzz_fail("a CR not followed by LF");
		}
		last = buf[i];
		memmove(tail, tail + 1, sizeof tail - 1);
		tail[sizeof tail - 1] = (char)buf[i];
		if (buf[i] == '\n' &&
		    memcmp(tail + sizeof tail - (sizeof TLS_GO - 1), TLS_GO, sizeof TLS_GO - 1) == 0) {
			plain = 0;   /* what follows is the handshake */
		}
	}
}

static const struct fuzz_session pop3 = {
	pop3_session_size, pop3_session_start, pop3_session_shutdown, NULL, output,
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char root[300], dir[400];
	static const char *const subs[] = { "", "/alice", "/alice/tmp", "/alice/new", "/alice/cur" };
	unsigned i;

	(void)argc;
	(void)argv;
	snprintf(root, sizeof root, "%s/mail", fuzz_tmpdir());
	for (i = 0; i < sizeof subs / sizeof subs[0]; i++) {
		snprintf(dir, sizeof dir, "%s%s", root, subs[i]);
		if (mkdir(dir, 0700) < 0) {
			fuzz_fail("mkdir %s: %s", dir, strerror(errno));
		}
	}
	snprintf(cur, sizeof cur, "%s/alice/cur", root);
	fuzz_daemon_setup(root);
	if (pop3_init(fuzz_conf()) < 0) {
		fuzz_fail("pop3_init");
	}
	fuzz_session_init();
	restore();
	return 0;
}

static socklen_t make_peer(unsigned flags, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof *ss);
	if (flags & 4) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		s6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, "2001:db8::7", &s6->sin6_addr);
		return sizeof *s6;
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		s4->sin_family = AF_INET;
		inet_pton(AF_INET, "192.0.2.7", &s4->sin_addr);
		return sizeof *s4;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf_listen l;
	struct sockaddr_storage peer;
	socklen_t peerlen;
	unsigned flags;
	size_t chunk, msglen;

	if (size < 4) {
		return 0;
	}
	flags = data[0];
	chunk = (size_t)data[1] + 1;
	msglen = (size_t)data[2] | (size_t)data[3] << 8;
	data += 4;
	size -= 4;
	if (msglen > size) {
		msglen = size;
	}
	write_file(INPUT_MSG, data, msglen);
	data += msglen;
	size -= msglen;
	if (chunk < (size + 255) / 256) {
		chunk = (size + 255) / 256;
	}
	memset(&l, 0, sizeof l);
	l.proto = PROTO_POP3;
	l.tls = flags & 16 ? TLS_IMPLICIT : flags & 8 ? TLS_STARTTLS : TLS_NONE;
	fuzz_conf()->plaintext_auth = (flags & 1) != 0;
	peerlen = make_peer(flags, &peer);
	last = 0;
	memset(tail, 0, sizeof tail);
	plain = l.tls != TLS_IMPLICIT;
	fuzz_session_run(&pop3, &l, (const struct sockaddr *)&peer, peerlen, data, size, chunk,
	                 !(flags & 2) && l.tls != TLS_IMPLICIT,
	                 !(flags & 32) ? FUZZ_CLOSE_HALF :
	                 flags & 64 ? FUZZ_CLOSE_GONE : FUZZ_CLOSE_RESET);
	restore();
	return 0;
}
