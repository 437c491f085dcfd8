/* fsyncs.h - several fdatasyncs issued together (io_uring where the
 * kernel offers it, else one after the other). */
#ifndef PICOMAIL_FSYNCS_H
#define PICOMAIL_FSYNCS_H

/* Ring entries: the most syncs in flight at once; longer lists go in
 * turns of this many. */
#define FSYNCS_RING 32

/* fdatasync(fd[i]) for i < n, all in flight together; err[i] is set to 0
 * or the errno of that file's sync.  Blocks until every one is done. */
void fsyncs_data(const int *fd, int *err, unsigned n);

/* How the syncs run: "io_uring", "serial" (no ring), or "untried" (no
 * batch of several files yet), for picomail status. */
const char *fsyncs_method(void);

#endif
