/* queue.h - the durable spool: files, the index, the scheduler.
 *
 * Layout under the spool directory:
 *   tmp/<id>   a message being written (removed at start-up)
 *   msg/<id>   the message: LF line ends, trace headers first; written once
 *   env/<id>   its envelope, the only file an attempt rewrites (flash)
 *   control    the status socket; submit: SMTP for the sendmail command
 *
 * An envelope is text, one record a line, and must end with "end" (a
 * truncated file is recognised and left alone, never half-read):
 *   picomail-queue 1
 *   arrival <epoch>          sender <address or empty for <>>
 *   attempts <n>             next <epoch>
 *   uid <n>                  the local user who submitted it (sendmail),
 *                            for mailq and queue delete; absent otherwise
 *   rcpt <state><kind> <address>
 *   why <last error of the recipient above>
 *   end
 * state: P pending, S sent (delivered), F failed (bounced).  kind: L a
 * local user (aliases done), R a remote address, U not yet resolved (the
 * sendmail command, bounces: resolved by the daemon at delivery).
 * The message is renamed into msg/ before its envelope into env/: an
 * envelope always has its message.
 */
#ifndef PICOMAIL_QUEUE_H
#define PICOMAIL_QUEUE_H

#include <stddef.h>
#include <stdint.h>
#include "addr.h"
#include "conf.h"
#include "maildir.h"
#include "submitter.h"

#define QUEUE_ID_MAX    40
#define QUEUE_RCPT_MAX  100
#define QUEUE_WHY_MAX   160

struct queue_rcpt {
	char state;                     /* 'P', 'S', 'F' */
	char kind;                      /* 'L', 'R', 'U' */
	char addr[ADDR_MAX + 1];
	char why[QUEUE_WHY_MAX];
};

struct queue_env {
	char id[QUEUE_ID_MAX];
	int64_t arrival;
	int local;                      /* submitted by a local user (sendmail): uid is theirs */
	uint32_t uid;
	char sender[ADDR_MAX + 1];
	unsigned attempts;
	int64_t next;
	unsigned nrcpt;
	struct queue_rcpt rcpt[QUEUE_RCPT_MAX];
};

/* ---- writing a message into the spool (daemon and sendmail command) ---- */

/* Creates the spool directories (start-up, sendmail).  0 or -1 errno. */
int queue_make_dirs(const char *spool);

/* Opens a new message file in <spool>/tmp for m (its name becomes the queue
 * id).  0 or -1 with errno. */
int queue_open(struct maildir_msg *m, const char *spool);

/* Makes the message and its envelope durable: fsync, rename into msg/,
 * envelope written, fsync'd and renamed into env/, both directories
 * fsync'd.  m's file is closed.  0 or an errno (nothing is left in msg/ or
 * env/ then). */
int queue_commit(struct maildir_msg *m, const char *spool, const struct queue_env *env);

/* queue_commit for the daemon's sessions, without blocking the loop: the
 * envelope is written to tmp/<id>.env at once, and m goes to the group
 * commit (maildir_commit), which syncs the message and envelope beside the
 * batch's other files, renames the message into msg/, syncs msg/, renames
 * the envelope into env/ and syncs env/, then calls done(ctx, err).  env's
 * id is m's name.  On err nothing of it is left in msg/, env/ or tmp/. */
void queue_commit_async(struct maildir_msg *m, const char *spool, const struct queue_env *env,
                        maildir_done_fn done, void *ctx);

/* queue_env_write for a queue run's outcome, without blocking the loop:
 * env written to tmp/<id>.env at once, then through the group commit
 * (m, a runner's, not in a commit) synced and renamed over env/<id>, and
 * env/ synced, then done(ctx, err).  On err the envelope before it stays. */
void queue_env_commit(struct maildir_msg *m, const char *spool, const struct queue_env *env,
                      maildir_done_fn done, void *ctx);

/* The group commit's steps for a queued message (maildir.c): the spool's
 * directory sub ("msg" or "env") into out (0, or -1 if it does not fit);
 * the message (sub "msg") or its envelope ("env") renamed from tmp/ into
 * sub/ (0 or errno); and, when a step failed (m's files closed),
 * everything of a new message removed, envelope first, or of a rewritten
 * envelope its tmp/ file. */
int queue_dir(const struct maildir_msg *m, const char *sub, char *out, size_t len);
int queue_publish(struct maildir_msg *m, const char *sub);
void queue_unpublish(struct maildir_msg *m);

/* An envelope as the file holds it, into buf; its length, or -1 if it
 * does not fit. */
int queue_env_format(const struct queue_env *e, char *buf, size_t len);

/* Parses an envelope from fd, read to its end (at most 64 KiB); e->id is
 * left empty.  0, or -1 if it is truncated or bad. */
int queue_env_parse_fd(int fd, struct queue_env *e);

/* Reads an envelope file; 0, or -1 if it is missing, truncated or bad. */
int queue_env_read(const char *spool, const char *id, struct queue_env *env);

/* Rewrites an envelope durably (tmp, fsync, rename, fsync env/).  0 or errno. */
int queue_env_write(const char *spool, const struct queue_env *env);

/* Removes a message and its envelope (envelope first, and the message
 * even when the envelope stays); 0, or -1 if either file is still there. */
int queue_remove(const char *spool, const char *id);

/* ---- the daemon's queue ----------------------------------------------- */

/* Start-up: scans env/, indexes every message, schedules the runs. */
int queue_init(const struct conf *c);

/* A message was just committed by this process: run it now. */
void queue_added(const char *id);

/* Retry everything now ("picomail queue flush"); who asked is logged. */
void queue_flush(const struct submitter *who);

/* Number of messages in the queue, and runs in progress. */
unsigned queue_length(void);
uint64_t queue_bytes(void);
unsigned queue_active(void);

/* Writes one "id size age <sender>" line per message, then its pending
 * recipients with their last error, for mailq; bytes written.  An
 * untrusted local user sees only the messages they submitted. */
size_t queue_list(char *buf, size_t len, const struct submitter *who);

/* The received line of a message that came into the queue other than
 * through SMTP: via "spool" (the sendmail command of root or run_as) or
 * "maildrop" (an ordinary user's, who). */
void queue_log_received(const struct queue_env *e, const char *via, const struct submitter *who);

/* Takes in a message another process (sendmail) committed: 0, or -1 if
 * there is no such envelope. */
int queue_adopt(const char *id);

/* Removes a message that is not being delivered, logging who asked: 0,
 * -1 unknown, -2 busy, -3 not theirs (an untrusted user removes only what
 * they submitted). */
int queue_delete(const char *id, const struct submitter *who);

/* Shutdown: ends the deliveries in progress (4xx: retried later). */
void queue_shutdown(void);

#endif
