/* session.c - one whole session per input, over a socketpair, through the
 * real loop (loop.c) and connection code (conn.c).
 *
 * The client's bytes go in writes of a chosen size with a loop round
 * after each, so that commands, CRLFs and the final dot are split across
 * reads at many places.  Every reply is read back (a client that reads)
 * and shown to the harness.  Once the client closes, the session must end
 * by itself: a session still alive after that is a hang, reported as a
 * failure. */
#include "fuzz.h"
#include "loop.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SLOTS          8
#define ROUNDS_AFTER   2000   /* after the client's close; each may jump a deadline */
#define ROUNDS_PER_WRITE 8    /* a full socket gets this many rounds to drain */
#define ROUNDS_GREETING 100   /* rounds a polite client waits for the banner */

static const struct fuzz_session *kind;
static void *live;          /* the session object, until released */
static int show;            /* FUZZ_SHOW set: the server's bytes go to stderr */
static size_t heard;        /* bytes the server sent in this session */

static void after_round(void)
{
	if (kind != NULL && kind->after_round != NULL) {
		kind->after_round();
	}
	loop_stop();   /* one round per loop_run: the driver decides what comes next */
}

void fuzz_session_init(void)
{
	static int done;

	if (done) {
		return;
	}
	/* The client side may write after the server closed. */
	signal(SIGPIPE, SIG_IGN);
	if (loop_init(SLOTS) < 0) {
		fuzz_fail("loop_init");
	}
	loop_after_round(after_round);
	show = getenv("FUZZ_SHOW") != NULL;
	done = 1;
}

void fuzz_session_released(void *mem)
{
	if (mem != live) {
		fuzz_fail("sessions_release of an object that is not the live session");
	}
	live = NULL;
}

/* Reads what the server sent, for the harness to check. */
static void drain(int fd)
{
	unsigned char buf[8192];
	ssize_t n;

	while ((n = read(fd, buf, sizeof buf)) > 0) {
		heard += (size_t)n;
		if (show && write(STDERR_FILENO, buf, (size_t)n) < 0) {
			show = 0;
		}
		if (kind->output != NULL) {
			kind->output(buf, (size_t)n, 0);
		}
	}
}

static void round_once(int client)
{
	(void)loop_run();
	drain(client);
}

/* The client's side goes away as how says.  An abrupt close comes right
 * after the last write, with no loop round between: the session meets it
 * in the same round as the last bytes (a final dot, a command), while its
 * own work (the commit) is still pending. */
static int client_close(int client, enum fuzz_close how, int server)
{
	switch (how) {
	case FUZZ_CLOSE_HALF:
		if (shutdown(client, SHUT_WR) < 0 && errno != ENOTCONN) {
			fuzz_fail("shutdown: %s", strerror(errno));
		}
		return client;
	case FUZZ_CLOSE_RESET:
		/* AF_UNIX resets (ECONNRESET on the server's next read) only when
		 * the closing side leaves data unread: one byte in flight from the
		 * server's end stands for a reply the client never read. */
		if (server >= 0 && write(server, "", 1) < 0 && errno != EAGAIN) {
			fuzz_fail("write: %s", strerror(errno));
		}
		close(client);
		return -1;
	case FUZZ_CLOSE_GONE:
		drain(client);
		close(client);
		return -1;
	}
	return client;
}

void fuzz_session_run(const struct fuzz_session *k, const struct conf_listen *l,
                      const struct sockaddr *peer, socklen_t peerlen, const uint8_t *in,
                      size_t n, size_t chunk, int wait_greeting, enum fuzz_close how)
{
	static uint32_t id;
	int sv[2], stalled = 0, client;
	size_t off = 0, want;
	ssize_t w;
	unsigned r;
	void *mem;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
		fuzz_fail("socketpair: %s", strerror(errno));
	}
	/* A fresh object each time: ASan's redzones sit right after it, and its
	 * contents start as garbage, as a pool object's may. */
	mem = malloc(k->size());
	if (mem == NULL) {
		fuzz_fail("out of memory");
	}
	kind = k;
	live = mem;
	heard = 0;
	k->start(mem, sv[0], peer, peerlen, l, ++id);
	drain(sv[1]);
	/* A polite client waits for the banner (greet_pause, virtual time). */
	for (r = 0; wait_greeting && live != NULL && heard == 0 && r < ROUNDS_GREETING; r++) {
		round_once(sv[1]);
	}
	while (live != NULL && off < n) {
		want = n - off < chunk ? n - off : chunk;
		w = send(sv[1], in + off, want, MSG_NOSIGNAL);
		if (w > 0) {
			off += (size_t)w;
			stalled = 0;
		} else if (w < 0 && errno != EAGAIN) {
			break;   /* the server closed: the rest is never read */
		} else if (++stalled > ROUNDS_PER_WRITE) {
			break;   /* a server that reads no more input */
		}
		if (off == n && how != FUZZ_CLOSE_HALF) {
			break;   /* the last bytes and the close in one round */
		}
		round_once(sv[1]);
	}
	/* The server's end stays open in the session (live) or was closed by
	 * it: sv[0] is only written to while the session holds it. */
	client = client_close(sv[1], how, live != NULL ? sv[0] : -1);
	for (r = 0; live != NULL && r < ROUNDS_AFTER; r++) {
		(void)loop_run();
		if (client >= 0) {
			drain(client);
		}
	}
	if (live != NULL) {
		fuzz_fail("the session is still alive %d rounds after the client closed", ROUNDS_AFTER);
	}
	if (client >= 0) {
		drain(client);
		close(client);
	}
	/* Only a client that read to the end can say the last reply was whole. */
	if (k->output != NULL && how == FUZZ_CLOSE_HALF) {
		k->output(NULL, 0, 1);
	}
	kind = NULL;
	free(mem);
}
