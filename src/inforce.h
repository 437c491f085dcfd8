/* inforce.h - the configuration, users and aliases in force.
 *
 * Two of each: a reload (SIGHUP) parses into the spare and swaps only when
 * everything parsed, so a session that reads them this round keeps a
 * consistent whole.  The users file has its own swap, since it is also
 * reloaded alone when it changes on disk (picomail passwd, useradd,
 * userdel).  Sessions read what is in force here; daemon.c loads and
 * reloads it.
 */
#ifndef PICOMAIL_INFORCE_H
#define PICOMAIL_INFORCE_H

#include <stddef.h>
#include "addr.h"
#include "auth.h"
#include "conf.h"

const struct conf *inforce_conf(void);
const struct users_table *inforce_users(void);
const struct alias_table *inforce_aliases(void);

/* The configuration file's path, as given at start. */
const char *inforce_path(void);

/* Start-up: loads the configuration at path, the users and the aliases.
 * 0, or -1 with the reason in err. */
int inforce_load(const char *path, char *err, size_t errlen);

/* What else must take a new configuration before it is put in force (the
 * TLS keys): 0, or -1 with the reason in err. */
typedef int (*inforce_accept_fn)(const struct conf *next, char *err, size_t errlen);

/* SIGHUP: parses everything anew into the spares; when accept agrees,
 * swaps.  0, or -1 with the reason in err (what runs stays in force). */
int inforce_reload(inforce_accept_fn accept, char *err, size_t errlen);

/* Reloads the users file alone if it changed on disk since it was last
 * read.  1 when it was reloaded, 0 when unchanged, -1 when it changed but
 * could not be read (the reason in err, once per change: the running
 * table stays). */
int inforce_users_check(char *err, size_t errlen);

#endif
