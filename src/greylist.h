/* greylist.h - greylisting: a first attempt from an unknown (client
 * network, sender, recipient) triplet is deferred; a retry after the delay
 * passes, and the triplet is then known for a month.
 *
 * The table is fixed-size (GREYLIST_ENTRIES), taken once, and holds only
 * a hash of each triplet.  It is saved to <spool>/greylist durably (tmp,
 * fsync, rename, directory fsync) and rarely, since the spool is on flash:
 * at most once per GREYLIST_SAVE_S, and at shutdown.
 */
#ifndef PICOMAIL_GREYLIST_H
#define PICOMAIL_GREYLIST_H

#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#define GREYLIST_ENTRIES  4096
#define GREYLIST_KEEP_S   (31 * 86400)   /* a passed triplet is known this long */
#define GREYLIST_RETRY_S  (2 * 86400)    /* a retry later than this starts over */
#define GREYLIST_SAVE_S   3600           /* the table is written at most this often */

/* Takes the table (once; later calls only change the spool) and loads
 * <spool>/greylist if it is there and sound.  0, or -1 when no memory. */
int greylist_init(const char *spool);

/* 1 if the triplet may pass now; 0 if it is deferred, with *wait the
 * seconds until a retry would pass.  The client network is its /24
 * (IPv4) or /64 (IPv6), so a sender's pool of outgoing servers counts as
 * one.  now is the wall clock, which the table outlives a restart by. */
int greylist_check(const struct sockaddr_storage *peer, const char *from, const char *rcpt,
                   unsigned delay, time_t now, unsigned *wait);

/* Writes the table if it changed and the last save is older than
 * GREYLIST_SAVE_S (force: whenever it changed).  0, or -1 with errno
 * (the table stays dirty, to be tried again). */
int greylist_save(time_t now, int force);

/* Triplets in the table (picomail status). */
unsigned greylist_used(void);

#endif
