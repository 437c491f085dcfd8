/* fuzz_imap_session.c - whole IMAP sessions (src/imap.c, imap_fetch.c,
 * imap_search.c, imap_msg.c, imap_parse.c, folder.c with the real conn.c,
 * loop.c, auth.c, base64.c, maildir.c and inotify) against a real Maildir
 * with folders in a scratch directory, made afresh for each input.
 *
 * Input: a flags byte, a chunk byte, two bytes (little-endian) giving the
 * length of a message, that message, then the client's bytes as sent.
 *   flags bit 0  plaintext_auth yes (LOGIN and AUTHENTICATE without TLS)
 *         bit 1  the client talks before the greeting
 *         bit 2  the client is IPv6
 *         bit 3  a "starttls" listener, bit 4 an implicit TLS one
 *         bit 5  the client goes away abruptly with its last bytes (bit 6:
 *                after reading what came, else leaving replies unread)
 *         bit 7  alice's first login: no subscriptions file yet, so the
 *                standard folders are made
 *   chunk: as in fuzz_smtp_session.
 * alice (password "secret") has messages with UIDs in cur/ (plain, a MIME
 * tree with a forwarded message, a digest, one nested past the MIME
 * limit, bare CRs, CRLF line ends, one without a final line end, one with
 * keywords in its info), one in new/ without a UID, and the input's
 * message in new/; folders Sent and Trash.  Outside the literals it
 * announces, every LF the server sends must follow a CR and every CR be
 * followed by a LF (until TLS starts).
 * After each input: no file in any tmp/, no UID twice in a folder. */
#include "fuzz.h"
#include "imap.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct { const char *dir, *name, *text; } fixed[] = {
	{ "cur", "1700000001.M1P1.fuzz,U=1:2,S",
	  "From: A <a@b.c>\nSubject: one\nTo: x@y\n\nbody line\n" },
	{ "cur", "1700000002.M2P1.fuzz,U=2:2,F",
	  "From: b@c\nContent-Type: multipart/mixed; boundary=q\n\n--q\nContent-Type: text/plain; "
	  "charset=utf-8\n\nhi\n--q\nContent-Type: message/rfc822\n\nFrom: \"D, E\" <d@e>\nTo: "
	  "g: h@i, j@k;\nSubject: in\nContent-Type: multipart/alternative; boundary=r\n\n--r\n\n"
	  "x\n--r\nContent-Type: text/html\n\n<b>y</b>\n--r--\n--q\nContent-Disposition: attachment;"
	  " filename*0=\"a\"; filename*1*=utf-8''%41\n\nz\n--q--\n" },
	{ "cur", "1700000003.M3P1.fuzz,U=3:2,",
	  "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: d1\n\n1\n--d\n\nSubject: d2"
	  "\n\n2\n--d--\n" },
	{ "cur", "1700000004.M4P1.fuzz,U=4:2,T",
	  "Content-Type: multipart/mixed; boundary=0\n\n--0\nContent-Type: multipart/mixed; boundary=1"
	  "\n\n--1\nContent-Type: multipart/mixed; boundary=2\n\n--2\nContent-Type: multipart/mixed; "
	  "boundary=3\n\n--3\nContent-Type: multipart/mixed; boundary=4\n\n--4\nContent-Type: multipart"
	  "/mixed; boundary=5\n\n--5\nContent-Type: multipart/mixed; boundary=6\n\n--6\nContent-Type: "
	  "multipart/mixed; boundary=7\n\n--7\nContent-Type: multipart/mixed; boundary=8\n\n--8\n"
	  "Content-Type: multipart/mixed; boundary=9\n\n--9\nContent-Type: multipart/mixed; boundary=a"
	  "\n\n--a\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: multipart/mixed; "
	  "boundary=c\n\n--c\nContent-Type: multipart/mixed; boundary=e\n\n--e\nContent-Type: multipart"
	  "/mixed; boundary=f\n\n--f\nContent-Type: multipart/mixed; boundary=g\n\n--g\nContent-Type: "
	  "multipart/mixed; boundary=h\n\n--h\n\ncore\n" },
	{ "cur", "1700000005.M5P1.fuzz,U=5:2,Sa", "Subject: cr\r\n\r\none\rtwo\r\r\n.three" },
	{ "cur", "1700000006.M6P1.fuzz,S=0,W=0,U=6:2,", "" },
	{ "new", "1700000007.M7P1.fuzz", "Subject: new\nDate: 1 Jan 2024 00:00 +0000\n\nfresh\n" },
	{ ".Sent/cur", "1700000008.M8P1.fuzz,U=1:2,S", "Subject: sent\n\ns\n" },
};
static const char *const dirs[] = {
	"", "/cur", "/new", "/tmp", "/.Sent", "/.Sent/cur", "/.Sent/new", "/.Sent/tmp", "/.Trash",
	"/.Trash/cur", "/.Trash/new", "/.Trash/tmp",
};
#define INPUT_MSG "new/1700000009.M9P1.fuzz"

static char home[300];
static unsigned char last;   /* the byte the server sent last */
static int plain;            /* no TLS yet: the bytes are lines */
static char tail[40];
static uint64_t literal;     /* octets of a literal still to come */

#define TLS_GO " OK Begin TLS negotiation now\r\n"

static void write_file(const char *rel, const uint8_t *text, size_t n)
{
	char path[512];
	int fd;

	snprintf(path, sizeof path, "%s/%s", home, rel);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || (n > 0 && write(fd, text, n) != (ssize_t)n) || close(fd) < 0) {
		fuzz_fail("writing %s: %s", path, strerror(errno));
	}
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

/* alice's Maildir as the header says, from nothing. */
static void reset(int first_login)
{
	char path[512], rel[512];
	unsigned i;

	if (nftw(home, remove_one, 16, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT) {
		fuzz_fail("removing %s: %s", home, strerror(errno));
	}
	for (i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
		snprintf(path, sizeof path, "%s%s", home, dirs[i]);
		if (mkdir(path, 0700) < 0) {
			fuzz_fail("mkdir %s: %s", path, strerror(errno));
		}
	}
	for (i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
		snprintf(rel, sizeof rel, "%s/%s", fixed[i].dir, fixed[i].name);
		write_file(rel, (const uint8_t *)fixed[i].text, strlen(fixed[i].text));
	}
	write_file("picomail-uids", (const uint8_t *)"picomail-uids 1 1700000000 7\n", 29);
	write_file(".Sent/picomail-uids", (const uint8_t *)"picomail-uids 1 1700000001 2\n", 29);
	if (!first_login) {
		write_file("subscriptions", (const uint8_t *)"Sent\nTrash\n", 11);
	}
}

/* No file left in a tmp/, no UID twice in a folder's cur/. */
static void check_folder(const char *folder)
{
	char path[512];
	unsigned char seen[8192];
	struct dirent *e;
	const char *u;
	unsigned long uid;
	DIR *d;

	snprintf(path, sizeof path, "%s/%s/tmp", home, folder);
	if ((d = opendir(path)) != NULL) {
		while ((e = readdir(d)) != NULL) {
			if (e->d_name[0] != '.') {
				fuzz_fail("%s: left in tmp/", e->d_name);
			}
		}
		closedir(d);
	}
	memset(seen, 0, sizeof seen);
	snprintf(path, sizeof path, "%s/%s/cur", home, folder);
	if ((d = opendir(path)) == NULL) {
		return;
	}
	while ((e = readdir(d)) != NULL) {
		u = strstr(e->d_name, ",U=");
		if (u == NULL || (uid = strtoul(u + 3, NULL, 10)) >= sizeof seen * 8) {
			continue;
		}
		if (seen[uid / 8] & (1u << (uid % 8))) {
			fuzz_fail("UID %lu twice in %s", uid, folder);
		}
		seen[uid / 8] |= (unsigned char)(1u << (uid % 8));
	}
	closedir(d);
}

/* The literal a line ends by announcing ("... {123}\r\n"): its length. */
static uint64_t announced(void)
{
	const char *end = tail + sizeof tail - 3, *p = end;
	uint64_t v = 0, m = 1;

	if (memcmp(end, "}\r\n", 3) != 0) {
		return 0;
	}
	while (p > tail && p[-1] >= '0' && p[-1] <= '9' && m < 10000000000ull) {
		v += (uint64_t)(*--p - '0') * m;
		m *= 10;
	}
	return p > tail && p[-1] == '{' ? v : 0;
}

static void output(const unsigned char *buf, size_t n, int end)
{
	size_t i;

	if (end || !plain) {
		return;
	}
	for (i = 0; i < n && plain; i++) {
		if (literal > 0) {
			/* A literal's octets are its own (a partial fetch may
			 * end inside a CRLF). */
			literal--;
			last = 0;
			continue;
		}
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
		if (buf[i] == '\n') {
			literal = announced();
		}
	}
}

static const struct fuzz_session imap = {
	imap_session_size, imap_session_start, imap_session_shutdown, NULL, output,
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char root[300];

	(void)argc;
	(void)argv;
	snprintf(root, sizeof root, "%s/mail", fuzz_tmpdir());
	if (mkdir(root, 0700) < 0) {
		fuzz_fail("mkdir %s: %s", root, strerror(errno));
	}
	snprintf(home, sizeof home, "%s/alice", root);
	fuzz_daemon_setup(root);
	fuzz_conf()->imap_max_messages = 32;
	fuzz_conf()->imap_sessions = 1;
	fuzz_conf()->quota = 64 * 1024;
	if (imap_init(fuzz_conf()) < 0) {
		fuzz_fail("imap_init");
	}
	fuzz_session_init();
	if (imap_start() < 0) {
		fuzz_fail("imap_start");
	}
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
	reset((flags & 128) != 0);
	write_file(INPUT_MSG, data, msglen);
	data += msglen;
	size -= msglen;
	if (chunk < (size + 255) / 256) {
		chunk = (size + 255) / 256;
	}
	memset(&l, 0, sizeof l);
	l.proto = PROTO_IMAP;
	l.tls = flags & 16 ? TLS_IMPLICIT : flags & 8 ? TLS_STARTTLS : TLS_NONE;
	fuzz_conf()->plaintext_auth = (flags & 1) != 0;
	peerlen = make_peer(flags, &peer);
	last = 0;
	literal = 0;
	memset(tail, 0, sizeof tail);
	plain = l.tls != TLS_IMPLICIT;
	fuzz_session_run(&imap, &l, (const struct sockaddr *)&peer, peerlen, data, size, chunk,
	                 !(flags & 2) && l.tls != TLS_IMPLICIT,
	                 !(flags & 32) ? FUZZ_CLOSE_HALF :
	                 flags & 64 ? FUZZ_CLOSE_GONE : FUZZ_CLOSE_RESET);
	check_folder(".");
	check_folder(".Sent");
	check_folder(".Trash");
	return 0;
}
