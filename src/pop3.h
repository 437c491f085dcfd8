/* pop3.h - the POP3 session (RFC 1939, 2449, 5034). */
#ifndef PICOMAIL_POP3_H
#define PICOMAIL_POP3_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include "conf.h"

/* Bytes a session object needs (the daemon's pool is sized from it). */
size_t pop3_session_size(void);

/* Sets up the pool of mailboxes (start-up only).  0 or -1. */
int pop3_init(const struct conf *c);

/* Starts a session in mem on an accepted, non-blocking socket. */
void pop3_session_start(void *mem, int fd, const struct sockaddr *peer, socklen_t len,
                        const struct conf_listen *l, uint32_t id);

/* Ends the session for a shutdown; nothing is expunged. */
void pop3_session_shutdown(void *mem);

/* The peer address, for the per-address limit. */
const struct sockaddr_storage *pop3_session_peer(const void *mem);

/* Mailboxes in use and their number, for the status. */
unsigned pop3_mailboxes_used(void);
unsigned pop3_mailboxes_size(void);

#endif
