/* smtp_server.h - the SMTP and submission session (RFC 5321, ESMTP). */
#ifndef PICOMAIL_SMTP_SERVER_H
#define PICOMAIL_SMTP_SERVER_H

#include <stddef.h>
#include <sys/socket.h>
#include "conf.h"

/* Bytes a session object needs (the daemon's pool is sized from it). */
size_t smtp_session_size(void);

/* Starts a session in mem (from the pool) on an accepted, non-blocking
 * socket: sends the banner and joins the loop.  On failure the socket is
 * closed and mem released. */
void smtp_session_start(void *mem, int fd, const struct sockaddr *peer, socklen_t len,
                        const struct conf_listen *l, uint32_t id);

/* Ends the session for a shutdown: 421 to the client, nothing half done
 * kept. */
void smtp_session_shutdown(void *mem);

/* The peer address of the session, for the per-address limit. */
const struct sockaddr_storage *smtp_session_peer(const void *mem);

#endif
