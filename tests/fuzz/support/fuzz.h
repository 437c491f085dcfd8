/* fuzz.h - what the harnesses share: inputs as files, virtual time, and
 * whole sessions driven over a socketpair through the real loop and
 * connection code.  Test build only. */
#ifndef PICOMAIL_FUZZ_H
#define PICOMAIL_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conf.h"

/* Reports a broken invariant the sanitizers cannot see, and aborts so that
 * libFuzzer keeps the input. */
void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Puts size bytes into an in-memory file and writes its path
 * ("/proc/self/fd/N") to path: the parsers that read files by name read
 * the input without touching a disk.  The same file is reused each call. */
void fuzz_memfile(const uint8_t *data, size_t size, char *path, size_t len);

/* A private directory for files a harness needs (tmpfs when there is one,
 * so that fsync costs nothing); removed at exit. */
const char *fuzz_tmpdir(void);

/* ---- the daemon's side, for the sessions (inforce_stub.c) ---- */

/* Builds the configuration, users and aliases every session sees, with
 * maildir_root under root.  Aborts on failure. */
void fuzz_daemon_setup(const char *root);

/* The configuration in force, for a harness to vary per input. */
struct conf *fuzz_conf(void);

/* ---- the Maildir, queue and quota of the SMTP harness (smtp_stubs.c) ---- */

/* The errno that opening, writing or committing a message fails with in
 * this input; 0: it succeeds. */
extern int fuzz_fail_begin, fuzz_fail_write, fuzz_fail_commit;

/* ---- sessions (session.c) ---- */

struct fuzz_session {
	size_t (*size)(void);
	void (*start)(void *mem, int fd, const struct sockaddr *peer, socklen_t len,
	              const struct conf_listen *l, uint32_t id);
	void (*shutdown)(void *mem);
	void (*after_round)(void);   /* the daemon's work after each round, or NULL */
	/* Sees every byte the server sends, in order; NULL for none. */
	void (*output)(const unsigned char *buf, size_t n, int end);
};

/* How the client's side goes away once it has sent everything. */
enum fuzz_close {
	FUZZ_CLOSE_HALF,    /* shutdown(SHUT_WR), reading every reply to the end */
	FUZZ_CLOSE_RESET,   /* close with replies unread: the server's read fails */
	FUZZ_CLOSE_GONE,    /* close after reading what came: EOF, then EPIPE */
};

/* Prepares the loop (once). */
void fuzz_session_init(void);

/* Runs one session: the client waits for the greeting if wait_greeting
 * is set, sends in (in writes of chunk bytes, a loop round after each),
 * then goes away as how says (an abrupt close comes with the last write,
 * before the round that reads it); the session must then end by itself
 * within a bounded number of rounds and give its object back exactly
 * once, or the run fails. */
void fuzz_session_run(const struct fuzz_session *k, const struct conf_listen *l,
                      const struct sockaddr *peer, socklen_t peerlen, const uint8_t *in,
                      size_t n, size_t chunk, int wait_greeting, enum fuzz_close how);

/* The session gave its object back (sessions_release). */
void fuzz_session_released(void *mem);

#endif
