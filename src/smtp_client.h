/* smtp_client.h - one outbound SMTP transaction (the relay), driven by the
 * loop: resolve, connect, EHLO, STARTTLS, AUTH, MAIL/RCPT/DATA (pipelined
 * when offered), the body from the spool file, QUIT. */
#ifndef PICOMAIL_SMTP_CLIENT_H
#define PICOMAIL_SMTP_CLIENT_H

#include <stdint.h>
#include "conf.h"
#include "queue.h"

struct smtp_client;

/* What became of each recipient: code 250 delivered, 4xx retry, 5xx
 * failed; text is the server's reply (or our reason), one line. */
struct smtp_client_result {
	int code;
	char text[QUEUE_WHY_MAX];
};

typedef void (*smtp_client_done_fn)(void *ctx);

/* Start-up: reads smarthost_auth, loads ca_file for a verified smarthost.
 * 0, or -1 with the reason in err. */
int smtp_client_init(const struct conf *c, char *err, size_t errlen);

/* Bytes a client object needs; objects come from the queue's runners. */
size_t smtp_client_size(void);

/* Starts delivering the message in data_fd (LF line ends) from sender to
 * the addresses rcpt[0..n-1], all of one domain (or any, through the
 * smarthost); id is the queue id, named in the log (kept, not copied).
 * done(ctx) is called from the loop once results[] are set; the client
 * then holds no descriptor. */
void smtp_client_start(struct smtp_client *cl, const char *id, const char *sender,
                       const char *const *rcpt, unsigned n, int data_fd,
                       struct smtp_client_result *results, smtp_client_done_fn done, void *ctx);

/* After done(): where the last connection of the attempt went
 * ("host[addr]:port", "" if none was made) and its TLS suite ("" for none).
 * Valid until the next start. */
const char *smtp_client_relay(const struct smtp_client *cl);
const char *smtp_client_tls(const struct smtp_client *cl);

/* Stops at once (shutdown): results say 4xx. */
void smtp_client_abort(struct smtp_client *cl);

#endif
