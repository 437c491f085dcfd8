/* control.h - the control socket (<spool>/control): picomail status,
 * mailq, queue flush|delete, and the sendmail command's notices.
 *
 * Every local user may connect (mailq shows them their own mail), so no
 * client may hold the loop: one connection is served at a time, without
 * blocking, its command read and its answer written as the socket takes
 * them, each within a deadline; the next waits in the listen queue.
 */
#ifndef PICOMAIL_CONTROL_H
#define PICOMAIL_CONTROL_H

#include <stddef.h>
#include "submitter.h"

#define CONTROL_CMD_MAX    128
#define CONTROL_ANSWER_MAX 65536

/* Answers one command line from who into buf (len bytes); the number of
 * bytes. */
typedef size_t (*control_answer_fn)(const char *cmd, const struct submitter *who, char *buf,
                                    size_t len);

/* Start-up: serves the listening socket fd through the loop (two slots:
 * the listener and the one connection). 0 or -1. */
int control_start(int fd, control_answer_fn answer);

#endif
