/* imap.h - the IMAP session (RFC 3501 with LITERAL+, SASL-IR, ID, ENABLE,
 * IDLE, NAMESPACE, UIDPLUS, MOVE, UNSELECT, SPECIAL-USE) over the
 * Maildirs SMTP delivers into and POP3 reads (folder.h). */
#ifndef PICOMAIL_IMAP_H
#define PICOMAIL_IMAP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include "conf.h"

#ifndef PICOMAIL_NO_IMAP

/* Bytes a session object needs (the daemon's pool is sized from it). */
size_t imap_session_size(void);

/* Start-up: the pool of boxes (a logged-in session's folder index:
 * imap_sessions of imap_max_messages).  0 or -1. */
int imap_init(const struct conf *c);

/* After loop_init: watches folders with inotify from the loop.  0 or -1. */
int imap_start(void);

/* Starts a session in mem on an accepted, non-blocking socket. */
void imap_session_start(void *mem, int fd, const struct sockaddr *peer, socklen_t len,
                        const struct conf_listen *l, uint32_t id);

/* Ends the session for a shutdown ("* BYE"). */
void imap_session_shutdown(void *mem);

/* The peer address, for the per-address limit. */
const struct sockaddr_storage *imap_session_peer(const void *mem);

/* Boxes in use and their number, for the status. */
unsigned imap_boxes_used(void);
unsigned imap_boxes_size(void);

/* Bytes of one box, for the status and the README's figures. */
size_t imap_box_size(unsigned max_messages);

#else   /* make IMAP=no: no IMAP server, and nothing of it in the binary */

static inline size_t imap_session_size(void) { return 0; }
static inline int imap_init(const struct conf *c) { (void)c; return 0; }
static inline int imap_start(void) { return 0; }
static inline void imap_session_start(void *mem, int fd, const struct sockaddr *peer,
                                      socklen_t len, const struct conf_listen *l, uint32_t id)
{
	(void)mem; (void)fd; (void)peer; (void)len; (void)l; (void)id;
}
static inline void imap_session_shutdown(void *mem) { (void)mem; }
static inline const struct sockaddr_storage *imap_session_peer(const void *mem)
{
	(void)mem;
	return NULL;
}
static inline unsigned imap_boxes_used(void) { return 0; }
static inline unsigned imap_boxes_size(void) { return 0; }

#endif

#endif
