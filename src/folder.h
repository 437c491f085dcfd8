/* folder.h - a user's mail folders as IMAP sees them: Maildir++ on disk,
 * UIDs that outlive restarts and power cuts, flags in the file names, and
 * one session's index of the folder it has selected.
 *
 * INBOX is <maildir_root>/<user>, the Maildir SMTP delivers into and POP3
 * reads; a folder "Sent" is <user>/.Sent, "Archive.2023" (the hierarchy
 * delimiter is '.') is <user>/.Archive.2023, each a Maildir.
 *
 * UIDs.  Each folder has a file, picomail-uids ("picomail-uids 1 <validity>
 * <next>"), that only ever says which UID comes next; a message's UID is
 * in its own name, ",U=<uid>" before the ":2," info.  Giving UIDs to new
 * messages writes the file first (durably: maildir_write_file), with next
 * past them, and only then renames the messages (from new/, or cur/
 * without a UID) to names carrying theirs, then syncs cur/.  A power cut
 * anywhere leaves each message either with its UID or none yet (it gets a
 * higher one later); a UID is never given twice, so none ever names a
 * different message.  The part of a name before the first ',' or ':'
 * never changes: it is POP3's UIDL.
 *
 * Flags are the Maildir info letters D F R S T (Draft, Flagged, Answered,
 * Seen, Deleted), set by renaming within cur/ and syncing cur/; keywords
 * are not kept.  \Recent is the session's own: the messages it gave UIDs
 * to, being the first to see them.
 *
 * An index holds at most max messages (imap_max_messages), sorted by UID:
 * sequence numbers are positions.  folder_sync compares it with the
 * directories: files gone are marked MS_GONE (the session reports the
 * EXPUNGE when it may, then folder_purge), flags changed by others
 * MS_CHANGED, new messages are appended.  Nothing allocates.
 */
#ifndef PICOMAIL_FOLDER_H
#define PICOMAIL_FOLDER_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include "addr.h"

#define FOLDER_NAME_MAX 200     /* an IMAP folder name (modified UTF-7), INBOX excluded */
#define FOLDER_PATH_MAX 512
#define FOLDER_ARENA_AVG 80     /* arena bytes per message for the base names */
#define FOLDER_SIZE_UNKNOWN 0xffffffffu

enum folder_flag {
	FL_SEEN = 1, FL_ANSWERED = 2, FL_FLAGGED = 4, FL_DELETED = 8, FL_DRAFT = 16,
	FL_RECENT = 32,         /* this session's, never on disk */
};
#define FL_DISK 31              /* the flags kept in the names */

enum folder_mstate {
	MS_GONE = 1,            /* the file is gone: EXPUNGE to report */
	MS_CHANGED = 2,         /* flags changed elsewhere: FETCH to report */
	MS_MARK = 4,            /* in the set of the command running */
	MS_SCAN = 8,            /* folder_sync's: seen in this scan */
	MS_NEED = 16,           /* folder_sync's: needs a UID (name in the arena is whole) */
	MS_INNEW = 32,          /* folder_sync's: ... and is in new/ */
	MS_NAMED = 64,          /* folder_sync's: given its UID, its name to follow */
};

struct fmsg {
	uint32_t uid;
	uint32_t name;          /* arena offset of the base name (no ":2," info) */
	uint32_t size;          /* RFC822.SIZE, or FOLDER_SIZE_UNKNOWN until asked */
	uint8_t flags;          /* FL_* */
	uint8_t state;          /* MS_* */
};

struct folder {
	char user[ADDR_USER_MAX + 1];
	char name[FOLDER_NAME_MAX + 1];   /* "INBOX" or the Maildir++ name */
	char dir[FOLDER_PATH_MAX];
	int open;
	int readonly;                     /* EXAMINE */
	int dirty;                        /* the directories changed since the last sync */
	int full;                         /* more messages than max: the rest not indexed */
	uint32_t validity, uidnext;       /* from picomail-uids */
	uint32_t seen_next;               /* UIDs below it were all seen by this index */
	unsigned n, max;
	unsigned recent;
	size_t arena_used, arena_size;
	struct fmsg *msgs;
	char *arena;
	int wd[2];                        /* inotify watches of cur/ and new/, or -1 */
	void (*wake)(void *ctx);          /* told when dirty gets set */
	void *wake_ctx;
	struct folder *next_open;
};

struct folder_status {
	unsigned messages, recent, unseen;
	uint32_t uidnext, validity;
};

/* Bytes a folder object needs for max messages. */
size_t folder_objsize(unsigned max);

/* Prepares an object of folder_objsize(max) bytes (start-up). */
void folder_init(struct folder *f, unsigned max);

/* 1 if name (len octets) may name a folder: printable ASCII, components
 * separated by single dots, none empty or starting with '.', no '/',
 * '\\', '*', '%'; INBOX aside. */
int folder_name_ok(const char *name, size_t len);

/* The directory of folder name (INBOX in any case, or Maildir++) of user;
 * 0, or -1 with errno (EINVAL for a bad name). */
int folder_path(char *out, size_t len, const char *user, const char *name);

/* At login: the user's Maildir, and on the first login (no subscriptions
 * file yet) the standard folders Sent, Drafts, Trash, Junk, Archive,
 * subscribed.  0, or -1 with errno. */
int folder_setup_user(const char *user);

/* The special-use attribute of a folder name (RFC 6154), or NULL. */
const char *folder_special_use(const char *name);

/* Opens and indexes the folder (SELECT, EXAMINE).  0, or -1 with errno:
 * ENOENT no such folder, EFBIG more than max messages, ESTALE a UID file
 * that cannot be trusted, others from the file system. */
int folder_open(struct folder *f, const char *user, const char *name, int readonly);

/* Forgets the folder (CLOSE, UNSELECT, SELECT of another, logout). */
void folder_close(struct folder *f);

/* Brings the index up to date with the directories (see above).  0, or -1
 * with errno: ENOENT the folder was deleted, ESTALE recreated. */
int folder_sync(struct folder *f);

/* Removes the MS_GONE entries (their EXPUNGEs were reported). */
void folder_purge(struct folder *f);

/* The base name of entry i. */
const char *folder_base(const struct folder *f, unsigned i);

/* Index of uid, or -1. */
int folder_find_uid(const struct folder *f, uint32_t uid);

/* Opens message i for reading: fd, or -1 with errno (ENOENT: gone, then
 * marked MS_GONE). */
int folder_open_msg(struct folder *f, unsigned i);

/* Its RFC822.SIZE (cached), or FOLDER_SIZE_UNKNOWN when it cannot be read. */
uint32_t folder_size(struct folder *f, unsigned i);

/* Its internal date (the file's mtime), or 0 when gone. */
time_t folder_date(struct folder *f, unsigned i);

/* Sets message i's disk flags to flags (FL_DISK bits) by a rename.  0, or
 * an errno (ENOENT: gone, marked MS_GONE).  Durable once folder_commit
 * has synced cur/. */
int folder_set_flags(struct folder *f, unsigned i, unsigned flags);

/* Removes message i's file (EXPUNGE); 0 or errno.  Marks it MS_GONE. */
int folder_remove(struct folder *f, unsigned i);

/* Syncs cur/ after renames or removals, and tells the other sessions on
 * the folder; 0 or errno. */
int folder_commit(struct folder *f);

/* COPY, MOVE and APPEND into a folder that need not be selected. */
struct folder_dest {
	char user[ADDR_USER_MAX + 1];
	char dir[FOLDER_PATH_MAX];
	uint32_t validity, first;         /* UIDs first .. first + k - 1 are reserved */
	unsigned k, used;
};

/* Reserves k UIDs in folder name of user (durably).  0, or -1 with errno
 * (ENOENT no such folder). */
int folder_dest_open(struct folder_dest *d, const char *user, const char *name, unsigned k);

/* Puts message i of f into d under the next reserved UID: a hard link
 * (COPY) or a rename (MOVE: f's entry is then MS_GONE).  *uid gets it.
 * 0 or errno (ENOENT: the message is gone). */
int folder_put(struct folder *f, unsigned i, struct folder_dest *d, int move, uint32_t *uid);

/* Moves the synced file tmp (APPEND) into d as its next UID with flags
 * and the ",S=,W=" tags of size octets and lines LF; *uid gets it.  0 or
 * errno; tmp is removed on failure. */
int folder_put_file(struct folder_dest *d, const char *tmp, const char *unique, uint64_t size,
                    uint64_t wire, unsigned flags, uint32_t *uid);

/* Removes what d received (a COPY that failed half way); syncs. */
void folder_dest_undo(struct folder_dest *d);

/* Syncs d's cur/ (and tells sessions on it); 0 or errno. */
int folder_dest_commit(struct folder_dest *d);

/* The folder's tmp/ for an APPEND, into out. */
int folder_tmp_dir(char *out, size_t len, const char *user, const char *name);

/* STATUS of a folder, selected or not, from its directories. */
int folder_status(const char *user, const char *name, struct folder_status *st);

/* Calls fn for each folder of user (not INBOX), in directory order. */
int folder_each(const char *user, void (*fn)(const char *name, void *ctx), void *ctx);

/* CREATE (with the missing parents), DELETE (refused for INBOX and a
 * folder with folders inside), RENAME (with its inner folders).  0, or
 * -1 with errno: EEXIST, ENOENT, ENOTEMPTY, EINVAL, others. */
int folder_create(const char *user, const char *name);
int folder_delete(const char *user, const char *name);
int folder_rename(const char *user, const char *from, const char *to);

/* SUBSCRIBE / UNSUBSCRIBE: the subscriptions file, rewritten durably. */
int folder_subscribe(const char *user, const char *name, int on);

/* Calls fn for each subscribed name; 0 or -1. */
int folder_each_subscribed(const char *user, void (*fn)(const char *name, void *ctx), void *ctx);

/* inotify: the descriptor to poll (-1 without inotify: folders are then
 * synced at each command and every few seconds in IDLE), and its reader,
 * which marks the open folders whose directories changed dirty. */
int folder_watch_init(void);
void folder_watch_ready(void);

#endif
