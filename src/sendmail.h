/* sendmail.h - the command-line front end: sendmail, mailq, queue.
 *
 * sendmail writes each message into a spool tmp file first (bounded memory
 * whatever its size), then offers it to the daemon in SMTP over
 * <spool>/submit; when the daemon is down or answers 4xx, the same file is
 * committed into the queue, where the daemon finds it when it starts.  It
 * exits 0 only when the daemon said 250 or the message is in the queue.
 *
 * mailq and queue talk to the daemon over its control socket: one request
 * line ("mailq", "flush", "delete ID"), then the reply until end of file.
 * When the daemon is down, mailq and queue delete work on the spool files.
 *
 * Each entry point takes argv[0] as the command's name ("sendmail",
 * "mailq", "queue") and its options from argv[1]; -C FILE anywhere, else
 * $PICOMAIL_CONF, else /etc/picomail.conf.  They return sysexits.h codes.
 */
#ifndef PICOMAIL_SENDMAIL_H
#define PICOMAIL_SENDMAIL_H

/* "picomail sendmail [flags] [recipients]", and the binary called as
 * "sendmail".  -bp runs mailq, -q runs queue flush, -bs speaks SMTP on
 * stdin/stdout through the daemon. */
int sendmail_main(int argc, char **argv);

/* "picomail mailq [-C FILE]", "mailq": lists the queue. */
int mailq_main(int argc, char **argv);

/* "picomail queue flush|delete ID [-C FILE]". */
int queue_main(int argc, char **argv);

#endif
