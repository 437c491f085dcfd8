/* quota.h - Maildir usage per user, for the quota (452 4.2.2).
 *
 * Usage is the sum of the ",S=<octets>" sizes of the files in new/ and
 * cur/ of INBOX and of every Maildir++ folder (.Name/), a file without
 * one stat'd; message contents are never read.
 * The daemon keeps one cached entry per user (USERS_MAX), computed on
 * first use and again whenever the mtime of new/ or cur/ changed (both are
 * stat'd at each check), and bumped by its own deliveries.  No malloc.
 */
#ifndef PICOMAIL_QUOTA_H
#define PICOMAIL_QUOTA_H

#include <stdint.h>

struct quota_usage {
	uint64_t bytes;
	unsigned messages;
};

/* Scans <root>/<user>/{new,cur} now, uncached.  A missing Maildir is
 * empty.  0, or -1 with errno. */
int quota_scan(const char *root, const char *user, struct quota_usage *u);

/* The user's usage through the cache.  0, or -1 with errno (then the
 * caller lets the mail through: a quota must not lose mail). */
int quota_usage(const char *root, const char *user, struct quota_usage *u);

/* 1 if adding octets to the user's Maildir would go over limit (0: no
 * limit; octets 0 asks "already at or over it?"). */
int quota_exceeded(const char *root, const char *user, uint64_t limit, uint64_t octets);

/* Counts a message of octets we just delivered to the user, so that the
 * next check sees it even where directory mtimes are coarse. */
void quota_delivered(const char *root, const char *user, uint64_t octets);

/* Forgets the user's entry: IMAP changed a folder, where the mtimes of
 * INBOX's new/ and cur/ do not show it. */
void quota_forget_user(const char *user);

/* Forgets every cached entry (tests; a changed maildir_root). */
void quota_forget(void);

#endif
