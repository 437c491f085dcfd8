/* runas.h - what the daemon needs once it is run_as, checked as run_as.
 *
 * After binding, the daemon drops root for run_as.  From then on it works
 * in the spool and the Maildir root (every directory on the way must be
 * searchable), runs the scanner, and a reload (SIGHUP, or the users file
 * changing) reads the configuration, users, aliases, TLS certificate and
 * key, ca_file and smarthost_auth again, as that user.  Each problem is
 * one sentence naming the path, its owner and mode, and the commands that
 * fix it.
 */
#ifndef PICOMAIL_RUNAS_H
#define PICOMAIL_RUNAS_H

#include <pwd.h>
#include "conf.h"

/* How a problem is told: fatal when the daemon cannot work at all (a
 * directory it must enter), not when only a reload or the scanner would
 * fail. */
typedef void (*runas_report_fn)(void *ctx, int fatal, const char *text);

/* Runs the checks in this process, which is already pw's (after
 * runas_become).  Returns the number of problems reported. */
unsigned runas_check(const struct conf *c, const char *conf_path, const struct passwd *pw,
                     runas_report_fn report, void *ctx);

/* Drops root for pw: no supplementary groups, pw's group, pw's uid, and no
 * way back.  0, or -1 with the reason in err. */
int runas_become(const struct passwd *pw, char *err, size_t errlen);

#endif
