/* maildir.h - durable Maildir delivery with group commit.
 *
 * A message is streamed (LF line ends) into a file without a name in
 * <root>/<user>/tmp/ (O_TMPFILE), or named <root>/<user>/tmp/<unique>
 * where the file system or the caller needs a name, then handed to the
 * commit queue.  The pending files make a batch: each is synced, linked
 * into new/ of all its users, each new/ directory is synced once for the
 * whole batch, then each session hears the result.  The syncs run while
 * the loop goes on (fsyncs.c), and the next batch gathers meanwhile.
 * Nothing is reported delivered before its directory entry is on disk.
 */
#ifndef PICOMAIL_MAILDIR_H
#define PICOMAIL_MAILDIR_H

#include <stddef.h>
#include <stdint.h>
#include "addr.h"

#define MAILDIR_PATH_MAX  512
#define MAILDIR_NAME_MAX  160
#define MAILDIR_WBUF      4096
#define MAILDIR_RCPT_MAX  100

struct maildir_msg;
typedef void (*maildir_done_fn)(void *ctx, int err);

enum maildir_kind {
	MAILDIR_DELIVERY,   /* a message into Maildirs */
	MAILDIR_QUEUED,     /* a message and its envelope into the queue (queue_commit_async) */
	MAILDIR_ENVELOPE    /* a queued message's envelope rewritten (queue_env_commit) */
};

struct maildir_msg {
	int fd;
	int err;                          /* first write error (errno), sticky */
	uint64_t size;                    /* octets in the file */
	uint64_t lines;                   /* LFs, for the CRLF size */
	char tmp[MAILDIR_PATH_MAX];       /* the file under tmp/; "" if it has no name */
	char name[MAILDIR_NAME_MAX];      /* unique name without the size tags */
	char final[MAILDIR_NAME_MAX + 48];/* name in new/, with ",S=...,W=..." */
	unsigned nusers;
	char users[MAILDIR_RCPT_MAX][ADDR_USER_MAX + 1];
	size_t wlen;
	unsigned char wbuf[MAILDIR_WBUF];
	/* What the commit makes durable: the file into new/ of the users, or
	 * for the queue (queue.h) the file as <spool>/msg/<id> with its
	 * envelope, or an envelope alone; the envelope is written to
	 * <spool>/tmp/<id>.env and open in env_fd, and renamed into env/. */
	enum maildir_kind kind;
	int env_fd;
	char spool[MAILDIR_PATH_MAX];
	/* group commit */
	struct maildir_msg *next;
	maildir_done_fn done;
	void *ctx;
};

/* Sets the root and host name used for unique names. */
void maildir_setup(const char *root, const char *hostname);

/* Starts a message for the users (at least one) in m: opens a new file in
 * the first user's tmp/, creating the Maildir on demand.  named: the file
 * must have a path in m->tmp while it is written (the content scanner
 * reads it); otherwise it has none where the kernel allows (O_TMPFILE),
 * which spares the file system a directory entry made and removed.  0, or
 * -1 with errno. */
int maildir_begin(struct maildir_msg *m, int named);

/* Starts a file named name in dir (the queue's tmp/), for the same
 * buffered writes.  0 or -1 with errno. */
int maildir_begin_named(struct maildir_msg *m, const char *dir, const char *name);

/* Flushes, fsyncs and closes m's file (the queue's commit).  0 or errno. */
int maildir_finish_file(struct maildir_msg *m);

/* Buffers bytes of the message; errors are kept in m->err. */
void maildir_write(struct maildir_msg *m, const void *buf, size_t n);

/* Writes out what is buffered, so that another process can read the
 * whole file (the content scanner).  0 or the sticky errno. */
int maildir_flush(struct maildir_msg *m);

/* Closes and removes the temporary file (refused or failed message). */
void maildir_abort(struct maildir_msg *m);

/* Queues m for the next commit; done(ctx, 0 or errno) is called from
 * maildir_commit_run or maildir_commit_drain, after which m is finished
 * (file closed). */
void maildir_commit(struct maildir_msg *m, maildir_done_fn done, void *ctx);

/* 1 when messages wait for a batch that can start now (none in flight). */
int maildir_commit_pending(void);

/* Moves the commit on without waiting for the disk: starts a batch of the
 * pending messages, or finishes the stages whose syncs completed (called
 * after each loop round, and when maildir_commit_fd turns readable).
 * block: nothing else needs the loop (one session, no queue runner), so
 * the batch may complete at once, waiting for the disk; a single file is
 * then synced in the loop's own thread, which costs less than the ring's
 * hand-off. */
void maildir_commit_run(int block);

/* Commits everything pending and in flight, waiting (shutdown). */
void maildir_commit_drain(void);

/* Messages in the batch being committed (0 when none), for status. */
unsigned maildir_commit_in_flight(void);

/* The descriptor that turns readable when syncs in flight complete, or
 * -1 (no ring: each batch then completes within maildir_commit_run). */
int maildir_commit_fd(void);

/* Removes files left in tmp/ by a crash, for each user directory. */
void maildir_clean_tmp(void);

/* A name no other message of this host has (Dovecot's form: seconds,
 * microseconds, pid, a counter, the host name), into out. */
void maildir_unique_name(char *out, size_t len);

/* Makes the Maildir dir with new/, cur/ and tmp/ (those missing), syncing
 * its parent when dir itself was made, then dir.  0 or -1 with errno. */
int maildir_create(const char *dir);

/* The one durable write of a small file: dir/name.tmp (O_EXCL), the whole
 * buffer, fsync, close, rename over dir/name, fsync dir.  0 or an errno;
 * on failure name keeps what it held and the temporary is removed. */
int maildir_write_file(const char *dir, const char *name, const void *buf, size_t n);

/* Final file name: "<name>,S=<size>,W=<crlf size>". */
int maildir_final_name(const struct maildir_msg *m, char *out, size_t len);

#endif
