/* tls.h - BearSSL server sessions from a fixed pool, keys and certificates
 * from PEM files.
 *
 * Each slot holds a BearSSL context and its record buffers; a full pool is
 * a normal condition (STARTTLS answers 454, an implicit-TLS connection is
 * closed).  The connection layer (conn.c) pumps the engine.
 */
#ifndef PICOMAIL_TLS_H
#define PICOMAIL_TLS_H

#include <stddef.h>
#include <bearssl.h>
#include "conf.h"

/* Full duplex (a pipelining client can send while we answer): the input
 * buffer must hold the largest record a peer may send; the output buffer
 * only bounds the records we send, so 4 KiB keeps a slot near 25 KiB. */
#define TLS_IBUF BR_SSL_BUFSIZE_INPUT
#define TLS_OBUF (4096 + 85)

struct tls;

/* Start-up: loads tls_cert/tls_key when set and sizes the pool from
 * tls_sessions (each handshake is seeded from random.c).  0, or -1 with
 * the reason (naming the file) in err. */
int tls_init(const struct conf *c, char *err, size_t errlen);

/* picomail check: loads tls_cert/tls_key exactly as tls_init does (the
 * chain, the key, their match, the dates), keeping nothing else.  0, or
 * -1 with the reason in err. */
int tls_check(const struct conf *c, char *err, size_t errlen);

/* SIGHUP: loads the key and certificate anew; sessions already running keep
 * the ones they started with.  0, or -1 with the reason in err (the old
 * keys stay in force). */
int tls_reload(const struct conf *c, char *err, size_t errlen);

/* 1 when a key and certificate are loaded. */
int tls_ready(void);

/* A server session ready for its handshake, or NULL (pool empty or no
 * key). */
struct tls *tls_server_take(void);

/* Start-up: trust anchors for verifying a smarthost, from ca_file.  0 or
 * -1 with the reason in err. */
int tls_load_anchors(const char *path, char *err, size_t errlen);

/* A client session for the relay: SNI and, with verify, the certificate
 * checked against ca_file for server_name; without, any key is taken
 * (opportunistic TLS).  NULL when the pool is empty. */
struct tls *tls_client_take(const char *server_name, int verify);

/* Returns the slot to the pool. */
void tls_release(struct tls *t);

br_ssl_engine_context *tls_engine(struct tls *t);

/* "TLSv1.2 with cipher ECDHE-RSA-AES128-GCM-SHA256 (128/128 bits)" style
 * text for Received: headers and logs. */
void tls_describe(struct tls *t, char *out, size_t len);

/* The suite in OpenSSL's spelling ("ECDHE-RSA-AES128-GCM-SHA256"). */
const char *tls_suite(struct tls *t);

/* Text of a BearSSL error code, for the log. */
const char *tls_error_text(int err);

unsigned tls_used(void);
unsigned tls_size(void);

#endif
