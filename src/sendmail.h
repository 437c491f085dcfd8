/* sendmail.h - the sendmail command.
 *
 * sendmail writes each message into a spool tmp file first (bounded memory
 * whatever its size), then offers it to the daemon in SMTP over
 * <spool>/submit; when the daemon is down or answers 4xx, the same file is
 * committed into the queue, where the daemon finds it when it starts.  It
 * exits 0 only when the daemon said 250 or the message is in the queue.
 *
 * An ordinary user who cannot write the queue leaves it in the maildrop
 * instead (maildrop.h).
 *
 * It takes argv[0] as the command's name and its options from argv[1];
 * -C FILE anywhere, else $PICOMAIL_CONF, else /etc/picomail.conf.  It
 * returns sysexits.h codes.
 */
#ifndef PICOMAIL_SENDMAIL_H
#define PICOMAIL_SENDMAIL_H

/* "picomail sendmail [flags] [recipients]", and the binary called as
 * "sendmail".  -bp runs mailq, -q runs queue flush, -bs speaks SMTP on
 * stdin/stdout through the daemon. */
int sendmail_main(int argc, char **argv);

#endif
