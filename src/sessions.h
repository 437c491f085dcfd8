/* sessions.h - the pool of session objects, one per client connection
 * (SMTP, submission, the sendmail socket, POP3), sized at start-up from
 * max_connections.  daemon.c takes an object for each accepted connection
 * and starts the protocol's session in it; the session gives it back here
 * when it ends, exactly once. */
#ifndef PICOMAIL_SESSIONS_H
#define PICOMAIL_SESSIONS_H

#include <stddef.h>
#include "conf.h"

/* Start-up: n objects of objsize bytes.  0 or -1. */
int sessions_init(unsigned n, size_t objsize);

/* An object for a session of proto, or NULL when all are in use. */
void *sessions_take(enum listen_proto proto);

/* A session hands its object back when it ends. */
void sessions_release(void *obj);

/* Object i (0 <= i < sessions_size()) when in use, with its protocol in
 * *proto; NULL when free. */
void *sessions_at(unsigned i, enum listen_proto *proto);

unsigned sessions_used(void);
unsigned sessions_size(void);

#endif
