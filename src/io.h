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
int io_fsync(int fd);
/* Writes a file's data and waits for it (sync_file_range), reporting write
 * errors; it does not flush the device cache nor the inode.  Counted as an
 * fsync by the fault seam. */
int io_sync_data(int fd);
/* syncfs(2): everything on fd's filesystem, one device flush. */
int io_syncfs(int fd);
int io_rename(const char *from, const char *to);
int io_link(const char *from, const char *to);
int io_unlink(const char *path);
int io_mkdir(const char *path, mode_t mode);

/* Socket reads and writes: >0 bytes, 0 for "nothing yet" (EAGAIN), -1 with
 * errno on error, and for recv -2 on end of file. */
ssize_t io_recv(int fd, void *buf, size_t n);
ssize_t io_send(int fd, const void *buf, size_t n);

/* fsyncs the directory at path; 0 or -1 with errno. */
int io_fsync_dir(const char *path);

/* Calls fn for each name in dir that does not start with '.', without
 * allocating; fn must not list a directory itself.  Nothing if dir cannot
 * be opened. */
void io_each_name(const char *dir, void (*fn)(const char *name, void *ctx), void *ctx);

/* Creates path and its missing parents, mode for each; 0 or -1. */
int io_mkdirs(const char *path, mode_t mode);

#endif
