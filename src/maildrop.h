/* maildrop.h - where an ordinary local user's sendmail leaves mail while
 * the daemon is down (or answers 4xx).
 *
 * <spool>/maildrop is mode 03733, owned by run_as: every user may create
 * files there, none may list it or remove another's (sticky), and files
 * take run_as's group (setgid) with mode 0640, so that the daemon reads
 * them and no other user does.  A message is two files: <name>.msg, then
 * <name>.env (the queue's envelope format) renamed into place from
 * <name>.part.  The daemon picks them up into the queue, at start, when
 * the directory changes, and when the command says so; the owner of the
 * files is the submitter (submitter.h), whose mail is checked as a
 * client's would be (no NUL, no CR: the spool holds LF lines).
 */
#ifndef PICOMAIL_MAILDROP_H
#define PICOMAIL_MAILDROP_H

#include <sys/types.h>
#include "conf.h"
#include "maildir.h"
#include "queue.h"

#define MAILDROP_DIR "maildrop"

/* Start-up (root, before dropping privileges): makes the directory with
 * its mode, owned by uid:gid.  0, or -1 with errno. */
int maildrop_make_dir(const char *spool, uid_t uid, gid_t gid);

/* The sendmail command: opens a message file in the maildrop for m.  0,
 * or -1 with errno. */
int maildrop_open(struct maildir_msg *m, const char *spool);

/* The sendmail command: makes the message and env (recipients kind 'U')
 * durable in the maildrop; m is closed.  0, or an errno (nothing is left
 * then). */
int maildrop_commit(struct maildir_msg *m, const char *spool, const struct queue_env *env);

/* The daemon: takes what the maildrop holds into the queue (at most a
 * batch at a time; more_left says if some is left).  The number taken. */
unsigned maildrop_pickup(const struct conf *c, int *more_left);

/* The daemon: 1 when the maildrop changed since the last call (its
 * mtime), so that a pickup is due. */
int maildrop_changed(const char *spool);

#endif
