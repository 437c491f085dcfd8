/* mailbox.h - a Maildir as POP3 sees it: locked, snapshotted at login,
 * with sizes read from the file names (counted, for files whose names do
 * not tell them: mailbox.c says when), and removal at QUIT.
 *
 * A mailbox object comes from a pool sized at start-up (pop3_sessions)
 * and holds at most pop3_max_messages entries; a larger Maildir shows its
 * oldest messages first, the rest in a later session.
 */
#ifndef PICOMAIL_MAILBOX_H
#define PICOMAIL_MAILBOX_H

#include <stddef.h>
#include <stdint.h>
#include "addr.h"

#define MAILBOX_NAME_AVG 96   /* arena bytes per message, names average less */
#define MAILBOX_UIDL_MAX 70   /* RFC 1939 7 */

struct mailbox_msg {
	uint32_t name;       /* offset of the file name in the arena */
	uint64_t size;       /* octets RETR sends: CRLF line ends, before stuffing (msgwire.h) */
	int deleted;
};

struct mailbox {
	char user[ADDR_USER_MAX + 1];
	struct mailbox *next_open;    /* the open mailboxes: the lock */
	unsigned n, max;
	unsigned ndeleted;
	int truncated;                /* more messages than fit */
	size_t arena_used, arena_size;
	struct mailbox_msg *msgs;
	char *arena;
};

/* Bytes one mailbox object needs for max messages. */
size_t mailbox_objsize(unsigned max);

/* 1 if another session holds user's mailbox. */
int mailbox_locked(const char *user);

/* Locks user's mailbox in mb (memory of mailbox_objsize(max) bytes),
 * moves new/ into cur/ and lists cur/ in delivery order.  0, or -1 with
 * errno (the lock is not kept on failure). */
int mailbox_open(struct mailbox *mb, unsigned max, const char *root, const char *user);

/* Releases the lock; deletions not expunged are forgotten. */
void mailbox_close(struct mailbox *mb);

/* Opens message i (0-based) for reading; fd or -1 with errno.  A message
 * renamed since the snapshot (an IMAP session set a flag) is found by its
 * UIDL. */
int mailbox_open_msg(const struct mailbox *mb, const char *root, unsigned i);

/* The message's unique id for UIDL (the Maildir base name), into out
 * (MAILBOX_UIDL_MAX + 1 bytes). */
void mailbox_uidl(const struct mailbox *mb, unsigned i, char *out);

/* Removes the messages marked deleted (found by UIDL when renamed since)
 * and syncs cur/.  0, or an errno (some messages may then remain). */
int mailbox_expunge(struct mailbox *mb, const char *root);

/* The octets a message file is on the wire, POP3 and IMAP alike (CRLF
 * lines, no stuffing, msgwire.h): ,W= when the name's tags still describe
 * the file (name is its base name, path the whole), else counted by
 * reading it.  0, or -1 with errno. */
int mailbox_wire_size(const char *name, const char *path, uint64_t *size);

#endif
