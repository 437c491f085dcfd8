/* daemon.h - the running server: configuration in force, listeners, the
 * session pool, counters, signals and the control socket. */
#ifndef PICOMAIL_DAEMON_H
#define PICOMAIL_DAEMON_H

#include <stdint.h>
#include <sys/socket.h>
#include "auth.h"
#include "conf.h"

struct daemon_stats {
	int64_t started;          /* loop_now() at start */
	uint64_t connections;     /* accepted, in all */
	uint64_t refused_busy;    /* 421 4.3.2 */
	uint64_t refused_per_address;
	uint64_t messages_in;     /* acknowledged with 250 */
	uint64_t messages_refused;
	uint64_t bytes_written;   /* message octets made durable */
	uint64_t write_errors;
};

extern struct daemon_stats daemon_stats;

/* The configuration, users and aliases in force (swapped on SIGHUP). */
const struct conf *daemon_conf(void);
const struct users_table *daemon_users(void);
const struct alias_table *daemon_aliases(void);

/* A session hands its object back to the pool when it ends. */
void daemon_release(void *session);

/* Runs the daemon until SIGTERM; the exit status. */
int daemon_serve(const char *conf_path, int foreground);

/* Prints the running daemon's status (picomail status); exit status. */
int daemon_status(const char *conf_path);

#endif
