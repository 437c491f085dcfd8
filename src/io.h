/* io.h - the one seam for every filesystem and socket call.
 *
 * Each wrapper retries EINTR and keeps errno.  In the test build
 * (PICOMAIL_TEST) the environment variable PICOMAIL_FAULT=op:N:ERRNO[,...]
 * makes the Nth call of that kind fail with that errno, so tests and people
 * inject faults the same way (a static binary cannot be LD_PRELOADed).
 * Each injected failure is logged ("fault seam: fsync #3 PATH: injected
 * EIO"); PICOMAIL_FAULT_TRACE=1 logs every counted call, to find a
 * scenario's calls before walking N over them.
 */
#ifndef PICOMAIL_IO_H
#define PICOMAIL_IO_H

#include <stddef.h>
#include <sys/types.h>

/* Reads PICOMAIL_FAULT (test build); no-op otherwise.  -1 if malformed. */
int io_fault_init(void);

int io_open(const char *path, int flags, mode_t mode);
int io_openat(int dirfd, const char *path, int flags, mode_t mode);
int io_close(int fd);
/* Writes all n bytes (a file); -1 with errno on failure or a short write. */
int io_write_all(int fd, const void *buf, size_t n);
/* One read; -1 with errno. */
ssize_t io_read(int fd, void *buf, size_t n);
/* getrandom(2) with flags (GRND_NONBLOCK or 0); bytes, or -1 with errno. */
ssize_t io_getrandom(void *buf, size_t n, unsigned flags);
/* An io_uring system call (call: SYS_io_uring_setup, _enter or _register)
 * with its first four arguments; counted as "uring" by the fault seam.
 * No EINTR retry: the caller knows which calls may be repeated. */
long io_uring(long call, long a, long b, long c, long d);
int io_fsync(int fd);
/* The syncs of fd[0..n-1] (fdatasync when data, else fsync; n <=
 * FSYNCS_RING), started together and collected later (fsyncs.c says how):
 * io_syncs_start returns 1 when they are in flight on the ring, whose
 * descriptor fsyncs_fd() gives; io_syncs_collect returns 1 with err[i]
 * (0 or file i's errno) once all are done, 0 while some are in flight
 * (only without wait).  block: as for fsyncs_start.  Each counts as one
 * fsync for the fault seam. */
int io_syncs_start(const int *fd, unsigned n, int data, int block);
int io_syncs_collect(int *err, int wait);
/* Starts the write-back of a file's data (sync_file_range) and returns;
 * counted as an fsync by the fault seam. */
int io_start_data(int fd);
int io_rename(const char *from, const char *to);
int io_link(const char *from, const char *to);
/* Gives the open file fd (an unnamed O_TMPFILE one) the name to, through
 * /proc/self/fd; counted as a link by the fault seam. */
int io_link_fd(int fd, const char *to);
int io_unlink(const char *path);
int io_mkdir(const char *path, mode_t mode);

/* Socket reads and writes: >0 bytes, 0 for "nothing yet" (EAGAIN), -1 with
 * errno on error, and for recv -2 on end of file. */
ssize_t io_recv(int fd, void *buf, size_t n);
ssize_t io_send(int fd, const void *buf, size_t n);

/* fsyncs the directory at path; 0 or -1 with errno. */
int io_fsync_dir(const char *path);

/* The durable replacement of a small file: buf written to fd (open on tmp,
 * a new file in dst's file system), fsync'd, fd closed, tmp renamed to dst,
 * then dir (the directory holding dst) fsync'd, so that after a power cut
 * dst is whole, old or new.  0 or an errno; on failure before the rename
 * tmp is removed.  Always closes fd. */
int io_replace_file(int fd, const char *tmp, const char *dst, const char *dir,
                    const void *buf, size_t n);

/* The directory part of path into dir: "." when it has no '/', "/" for a
 * file in the root. */
void io_dir_of(const char *path, char *dir, size_t len);

/* Calls fn for each name in dir that does not start with '.', without
 * allocating; fn must not list a directory itself.  Nothing if dir cannot
 * be opened. */
void io_each_name(const char *dir, void (*fn)(const char *name, void *ctx), void *ctx);

/* Calls fn for each entry of dir but "." and "..", with its d_type
 * (DT_DIR, DT_REG, DT_UNKNOWN...), without allocating; fn must not list a
 * directory itself.  0, or -1 with errno when dir cannot be opened or
 * read. */
int io_each_entry(const char *dir, void (*fn)(const char *name, int type, void *ctx), void *ctx);

/* Creates path and its missing parents, mode for each; 0 or -1. */
int io_mkdirs(const char *path, mode_t mode);

#endif
