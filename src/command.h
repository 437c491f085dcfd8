/* command.h - what the command-line tools share (sendmail.c, ctlcmd.c):
 * exit codes, where the configuration is, printing what came from
 * outside, and talking to the daemon's unix sockets without hanging.
 *
 * The tools return sysexits.h codes; not every C library of the boards
 * ships that header, so they are here.
 */
#ifndef PICOMAIL_COMMAND_H
#define PICOMAIL_COMMAND_H

#include <stddef.h>
#include "conf.h"

#define EX_OK          0
#define EX_USAGE       64
#define EX_DATAERR     65
#define EX_NOINPUT     66
#define EX_NOUSER      67
#define EX_UNAVAILABLE 69
#define EX_SOFTWARE    70
#define EX_OSERR       71
#define EX_IOERR       74
#define EX_TEMPFAIL    75
#define EX_NOPERM      77
#define EX_CONFIG      78

#define CMD_TIMEOUT_MS 60000   /* without progress on a socket: give up */

/* $PICOMAIL_CONF, else /etc/picomail.conf. */
const char *cmd_conf_path(void);

/* s (n bytes) for printing into out: control bytes become '?', so that
 * text from a message or from the daemon cannot rewrite the terminal. */
const char *cmd_printable(const char *s, size_t n, char *out, size_t outlen);

/* Copies src into dst (len bytes), cut to fit. */
void cmd_copy_cut(char *dst, size_t len, const char *src);

/* EX_NOPERM for EACCES and EPERM, else EX_OSERR. */
int cmd_errno_exit(int err);

/* A non-blocking stream socket connected to a unix path: a daemon too
 * busy to accept is "not available now", never a hang.  -1 with errno. */
int cmd_unix_connect(const char *path);

/* 1 when a failed connect means "no daemon there" rather than a fault. */
int cmd_daemon_down(int err);

/* Waits for fd to be ready; 0, or -1 with ETIMEDOUT or poll's errno. */
int cmd_wait_fd(int fd, short events, int timeout_ms);

/* Writes all of buf to a non-blocking socket, waiting CMD_TIMEOUT_MS at
 * most for each bit of progress.  0 or -1 with errno. */
int cmd_sock_write_all(int fd, const void *buf, size_t n);

/* Writes all of buf to a blocking descriptor (stdout).  0 or -1. */
int cmd_fd_write_all(int fd, const void *buf, size_t n);

/* Sends one request line to the daemon's control socket and copies the
 * answer to out (-1: nowhere); its first line goes to first (may be NULL).
 * 0, 1 when the daemon is not running, -1 on an error (printed, as cmd). */
int cmd_control_request(const struct conf *c, const char *cmd, const char *request, int out,
                        char *first, size_t firstlen);

/* 1 if id is a plain queue id: letters, digits, '.', '-', '_', not
 * starting with '.', never "..": never a path. */
int cmd_queue_id_ok(const char *id);

/* "<spool>/<sub>[/<id>]" into out; -1 with ENAMETOOLONG. */
int cmd_spool_path(char *out, size_t len, const char *spool, const char *sub, const char *id);

/* Finds -C FILE (or -CFILE) in argv[1..]; other arguments go to argv[1..]
 * (compacted, their number in *nargs) unless they are options.  -1 on an
 * unknown option. */
int cmd_tool_options(int argc, char **argv, const char **conf, int *nargs);

#endif
