/* fsyncs.h - several fdatasyncs issued together and waited for from the
 * poll loop (io_uring where the kernel offers it, else one after the
 * other, blocking). */
#ifndef PICOMAIL_FSYNCS_H
#define PICOMAIL_FSYNCS_H

/* Ring entries: the most syncs in flight at once; longer lists go in
 * turns of this many. */
#define FSYNCS_RING 32

/* Starts the syncs of fd[0..n-1] together (fdatasync when data, else
 * fsync; n <= FSYNCS_RING, one group at a time) and returns at once: 1
 * when the ring took them (fsyncs_fd() turns readable as they complete),
 * 0 when there is no ring (fsyncs_collect runs them one by one).  block:
 * the caller collects at once, waiting; a single sync then runs in the
 * calling thread, sparing the hand-off to the kernel's workers. */
int fsyncs_start(const int *fd, unsigned n, int data, int block);

/* Takes the group's completions that arrived; with wait, blocks until all
 * have, syncing by hand whatever the ring could not finish.  1 when every
 * one is done, err[i] then 0 or that file's errno; 0 while some are still
 * in flight (only without wait). */
int fsyncs_collect(int *err, int wait);

/* The ring's descriptor, for poll (POLLIN when completions wait); -1 when
 * there is no ring (not set up yet, or unavailable). */
int fsyncs_fd(void);

/* How the syncs run: "io_uring", "serial" (no ring), or "untried" (no
 * batch of several files yet), for picomail status. */
const char *fsyncs_method(void);

#endif
