/* stats.h - the daemon's counters, for picomail status.  Every module
 * counts what it decides; status_text in daemon.c prints them. */
#ifndef PICOMAIL_STATS_H
#define PICOMAIL_STATS_H

#include <stdint.h>

struct stats {
	int64_t started;          /* loop_now() at start */
	uint64_t connections;     /* accepted, in all */
	uint64_t refused_busy;    /* 421 4.3.2 */
	uint64_t refused_per_address;
	uint64_t messages_in;     /* acknowledged with 250 */
	uint64_t messages_refused;
	uint64_t bytes_written;   /* message octets made durable */
	uint64_t write_errors;
	/* the group commit (maildir.c) */
	uint64_t commit_batches;      /* batches run */
	uint64_t commit_files;        /* message files they made durable or failed */
	uint64_t commit_batch_max;    /* the most files in one batch */
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

extern struct stats stats;

#endif
