/* ctlcmd.h - the commands that ask the running daemon through its control
 * socket: one request line ("status", "mailq", "flush", "delete ID"), then
 * the answer until end of file.  When the daemon is down, mailq and queue
 * delete work on the spool files (root and run_as only).  Each entry point
 * takes argv as main does and returns a sysexits.h code.
 */
#ifndef PICOMAIL_CTLCMD_H
#define PICOMAIL_CTLCMD_H

/* "picomail mailq [-C FILE]", "mailq": lists the queue (an ordinary user
 * sees their own mail). */
int mailq_main(int argc, char **argv);

/* "picomail queue flush|delete ID [-C FILE]". */
int queue_main(int argc, char **argv);

/* "picomail status": the running daemon's counters; exit status. */
int ctlcmd_status(const char *conf_path);

/* mailq, and queue flush, for sendmail -bp and -q. */
int ctlcmd_mailq(const char *conf_path);
int ctlcmd_flush(const char *conf_path);

#endif
