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
	/* spam defence: every decision, counted */
	uint64_t pregreet;            /* talked before the banner: 554 5.5.1 */
	uint64_t helo_refused;        /* 501 5.5.2 */
	uint64_t dnsbl_listed;        /* 554 5.7.1 banner */
	uint64_t dnsbl_unanswered;    /* lookups that had no answer in time: let through */
	uint64_t greylist_deferred;   /* 451 4.7.1 */
	uint64_t greylist_passed;
	uint64_t scanner_accepted;
	uint64_t scanner_rejected;    /* 554 5.7.0 */
	uint64_t scanner_tempfail;    /* 451: exit status other than 0 and 1, or could not run */
	uint64_t scanner_timeouts;    /* killed after scanner_timeout: 451 */
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
