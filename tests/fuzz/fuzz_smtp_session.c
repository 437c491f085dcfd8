/* fuzz_smtp_session.c - whole SMTP sessions (src/smtp_server.c with the
 * real conn.c, loop.c, smtp_data.c, addr.c, auth.c, base64.c).
 *
 * Input: a flags byte, a chunk byte, a second flags byte, then the
 * client's bytes as sent.
 *   flags bit 0  the submission listener (else port 25)
 *         bit 1  plaintext_auth yes (AUTH offered without TLS)
 *         bit 2  the client is in relay_from
 *         bit 3  the client is IPv6
 *         bit 4  sender_check no
 *         bit 5  opening the message file fails (ENOSPC)
 *         bit 6  writing it fails (EIO)
 *         bit 7  the commit fails (EDQUOT)
 *   chunk: the client writes chunk+1 bytes at a time (at least a 256th
 *          of the input), a loop round after each write.
 *   flags2 bit 0  the client talks before the greeting (else it waits for
 *                 one, except on an implicit TLS port)
 *          bit 1  greet_pause 0 (else the default, 1 s of virtual time)
 *          bit 2  greylisting on, with greylist_delay 0 (bit 3: 5 minutes)
 *          bit 4  a "starttls" listener, bit 5 an implicit TLS one (a real
 *                 key is loaded: a ClientHello gets a real handshake)
 *          bit 6  the client goes away abruptly with its last bytes (bit 7:
 *                 after reading what came, else leaving replies unread:
 *                 a reset), instead of a half close: wherever the input
 *                 ends, after a final dot or in the middle of a handshake
 * Every reply line must be "ddd" then ' ' or '-', at most 512 octets with
 * its CRLF, with no other CR or LF (until TLS starts: then the bytes are
 * records).  The Maildir and queue are stand-ins that check how they are
 * called (support/smtp_stubs.c). */
#include "fuzz.h"
#include "greylist.h"
#include "maildir.h"
#include "smtp_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#define REPLY_MAX 512
#define TLS_GO    "220 2.0.0 Ready to start TLS\r\n"

static char reply_line[REPLY_MAX + 1];
static size_t reply_len;
static int plain;   /* the replies are plain text (no TLS yet) */

static void check_reply(const char *line, size_t len)
{
	size_t i;

	if (len < 5 || line[len - 2] != '\r') {
		fuzz_fail("reply line '%.*s' is too short or lacks its CR", (int)len, line);
	}
	for (i = 0; i < 3; i++) {
		if (line[i] < '0' || line[i] > '9') {
			fuzz_fail("reply line '%.*s' has no code", (int)len, line);
		}
	}
	if (line[0] < '2' || line[0] > '5' || (line[3] != ' ' && line[3] != '-')) {
		fuzz_fail("reply line '%.*s' is malformed", (int)len, line);
	}
	for (i = 0; i < len - 2; i++) {
		if (line[i] == '\r' || line[i] == '\n' || line[i] == '\0') {
			fuzz_fail("reply line '%.*s' holds CR, LF or NUL", (int)len, line);
		}
	}
}

static void output(const unsigned char *buf, size_t n, int end)
{
	size_t i;

	if (!plain) {
		return;
	}
	if (end) {
		if (reply_len != 0) {
			fuzz_fail("the session ended in the middle of a reply line");
		}
		return;
	}
	for (i = 0; i < n; i++) {
		if (reply_len == REPLY_MAX) {
			fuzz_fail("a reply line longer than %d octets", REPLY_MAX);
		}
		reply_line[reply_len++] = (char)buf[i];
		if (buf[i] == '\n') {
			check_reply(reply_line, reply_len);
			if (reply_len == sizeof TLS_GO - 1 && memcmp(reply_line, TLS_GO, reply_len) == 0) {
				plain = 0;   /* what follows is the handshake */
				return;
			}
			reply_len = 0;
		}
	}
}

/* The daemon's after_round: the commit, completed at once. */
static void commit_round(void)
{
	maildir_commit_run(1);
}

static const struct fuzz_session smtp = {
	smtp_session_size, smtp_session_start, smtp_session_shutdown, commit_round, output,
};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_daemon_setup(fuzz_tmpdir());
	fuzz_session_init();
	if (greylist_init(fuzz_tmpdir()) < 0) {
		fuzz_fail("greylist_init");
	}
	return 0;
}

/* The peer: in relay_from or not, IPv4 or IPv6. */
static socklen_t make_peer(unsigned flags, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof *ss);
	if (flags & 8) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(40000);
		inet_pton(AF_INET6, flags & 4 ? "::1" : "2001:db8::7", &s6->sin6_addr);
		return sizeof *s6;
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons(40000);
		inet_pton(AF_INET, flags & 4 ? "10.1.2.3" : "192.0.2.7", &s4->sin_addr);
		return sizeof *s4;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf_listen l;
	struct sockaddr_storage peer;
	socklen_t peerlen;
	unsigned flags, flags2;
	size_t chunk;

	if (size < 3) {
		return 0;
	}
	flags = data[0];
	chunk = (size_t)data[1] + 1;
	flags2 = data[2];
	data += 3;
	size -= 3;
	if (chunk < (size + 255) / 256) {
		chunk = (size + 255) / 256;
	}
	memset(&l, 0, sizeof l);
	l.proto = flags & 1 ? PROTO_SUBMISSION : PROTO_SMTP;
	l.tls = flags2 & 32 ? TLS_IMPLICIT : flags2 & 16 ? TLS_STARTTLS : TLS_NONE;
	fuzz_conf()->plaintext_auth = (flags & 2) != 0;
	fuzz_conf()->sender_check = (flags & 16) == 0;
	fuzz_conf()->greet_pause = flags2 & 2 ? 0 : 1;
	fuzz_conf()->greylist = (flags2 & 4) != 0;
	fuzz_conf()->greylist_delay = flags2 & 8 ? 300 : 0;
	fuzz_fail_begin = flags & 32 ? ENOSPC : 0;
	fuzz_fail_write = flags & 64 ? EIO : 0;
	fuzz_fail_commit = flags & 128 ? EDQUOT : 0;
	peerlen = make_peer(flags, &peer);
	reply_len = 0;
	plain = l.tls != TLS_IMPLICIT;
	fuzz_session_run(&smtp, &l, (const struct sockaddr *)&peer, peerlen, data, size, chunk,
	                  !(flags2 & 1) && l.tls != TLS_IMPLICIT,
	                  !(flags2 & 64) ? FUZZ_CLOSE_HALF :
	                  flags2 & 128 ? FUZZ_CLOSE_GONE : FUZZ_CLOSE_RESET);
	return 0;
}
