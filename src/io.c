/* io.c - thin wrappers over the system calls, and the fault seam. */
#include "io.h"
#include "fsyncs.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

enum io_op { OP_OPEN, OP_WRITE, OP_FSYNC, OP_RENAME, OP_LINK, OP_UNLINK, OP_MKDIR, OP_GETRANDOM,
             OP_URING, OP_COUNT };

#ifdef PICOMAIL_TEST
static const char *const op_names[OP_COUNT] = {
	"open", "write", "fsync", "rename", "link", "unlink", "mkdir", "getrandom", "uring",
};

static const struct { const char *name; int value; } errno_names[] = {
	{ "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EDQUOT", EDQUOT },
	{ "EACCES", EACCES }, { "EROFS", EROFS }, { "EMFILE", EMFILE },
	{ "ENOMEM", ENOMEM }, { "EPERM", EPERM },
	/* getrandom: a pool not initialised yet, a kernel without the call;
	 * uring: no io_uring in the kernel */
	{ "EAGAIN", EAGAIN }, { "ENOSYS", ENOSYS },
	/* open: a file system without unnamed files (O_TMPFILE: vfat, jffs2) */
	{ "EOPNOTSUPP", EOPNOTSUPP },
};

#define FAULTS_MAX 8
static struct { enum io_op op; unsigned long n; int err; } faults[FAULTS_MAX];
static unsigned nfaults;
static unsigned long op_calls[OP_COUNT];
static int trace;   /* PICOMAIL_FAULT_TRACE=1: log every counted call */

static int fault_parse_one(const char *s, size_t len)
{
	char buf[64], *op, *n, *e, *end;
	unsigned i;

	if (len >= sizeof buf || nfaults == FAULTS_MAX) {
		return -1;
	}
	memcpy(buf, s, len);
	buf[len] = '\0';
	op = buf;
	n = strchr(op, ':');
	if (n == NULL) {
		return -1;
	}
	*n++ = '\0';
	e = strchr(n, ':');
	if (e == NULL) {
		return -1;
	}
	*e++ = '\0';
	for (i = 0; i < OP_COUNT && strcmp(op, op_names[i]) != 0; i++) {
	}
	if (i == OP_COUNT) {
		return -1;
	}
	faults[nfaults].op = i;
	errno = 0;
	faults[nfaults].n = strtoul(n, &end, 10);
	if (errno != 0 || *end != '\0' || faults[nfaults].n == 0) {
		return -1;
	}
	for (i = 0; i < sizeof errno_names / sizeof errno_names[0]; i++) {
		if (strcmp(e, errno_names[i].name) == 0) {
			faults[nfaults++].err = errno_names[i].value;
			return 0;
		}
	}
	return -1;
}

int io_fault_init(void)
{
	const char *s = getenv("PICOMAIL_FAULT"), *comma, *t = getenv("PICOMAIL_FAULT_TRACE");

	trace = t != NULL && strcmp(t, "1") == 0;
	if (s == NULL || *s == '\0') {
		return 0;
	}
	for (;;) {
		comma = strchr(s, ',');
		if (fault_parse_one(s, comma ? (size_t)(comma - s) : strlen(s)) < 0) {
			return -1;
		}
		if (comma == NULL) {
			return 0;
		}
		s = comma + 1;
	}
}

static const char *errno_name(int err)
{
	unsigned i;

	for (i = 0; i < sizeof errno_names / sizeof errno_names[0]; i++) {
		if (errno_names[i].value == err) {
			return errno_names[i].name;
		}
	}
	return "?";
}

/* Counts the call; 1 (with errno set) when this one is to fail.  Every
 * injected failure is logged with the call's number and file, so that a
 * test walking N over a scenario sees where each fault landed and when N
 * has gone past the scenario's last call. */
static int fault(enum io_op op, const char *path, int fd)
{
	char fdpath[64], target[256];
	unsigned i;
	ssize_t n;
	int hit = -1, saved = errno;

	op_calls[op]++;
	for (i = 0; i < nfaults && hit < 0; i++) {
		if (faults[i].op == op && faults[i].n == op_calls[op]) {
			hit = faults[i].err;
		}
	}
	if (hit >= 0 || trace) {
		if (path == NULL) {
			/* A descriptor: name the file it is open on. */
			snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", fd);
			n = readlink(fdpath, target, sizeof target - 1);
			target[n > 0 ? (size_t)n : 0] = '\0';
			path = target;
		}
		log_msg(LOG_NOTICE, "fault seam: %s #%lu %s%s%s", op_names[op], op_calls[op], path,
		        hit >= 0 ? ": injected " : "", hit >= 0 ? errno_name(hit) : "");
	}
	if (hit >= 0) {
		errno = hit;
		return 1;
	}
	errno = saved;
	return 0;
}
#else
int io_fault_init(void)
{
	return 0;
}

static int fault(enum io_op op, const char *path, int fd)
{
	(void)op;
	(void)path;
	(void)fd;
	return 0;
}
#endif

int io_open(const char *path, int flags, mode_t mode)
{
	int fd;

	if (fault(OP_OPEN, path, -1)) {
		return -1;
	}
	/* The system call itself: musl's open() follows an O_CLOEXEC open with
	 * an fcntl for kernels before 2.6.23, one more call on every delivery. */
	do {
		fd = (int)syscall(SYS_openat, AT_FDCWD, path, flags | O_CLOEXEC | O_LARGEFILE, mode);
	} while (fd < 0 && errno == EINTR);
	return fd;
}

int io_openat(int dirfd, const char *path, int flags, mode_t mode)
{
	int fd;

	if (fault(OP_OPEN, path, -1)) {
		return -1;
	}
	do {
		fd = openat(dirfd, path, flags | O_CLOEXEC, mode);
	} while (fd < 0 && errno == EINTR);
	return fd;
}

int io_close(int fd)
{
	/* Linux closes the descriptor even when close() reports EINTR, so a
	 * retry could close a descriptor another part just opened. */
	if (close(fd) < 0 && errno != EINTR) {
		return -1;
	}
	return 0;
}

int io_write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	ssize_t r;

	if (fault(OP_WRITE, NULL, fd)) {
		return -1;
	}
	while (n > 0) {
		r = write(fd, p, n);
		if (r < 0) {
			if (errno == EINTR) {
				continue;
			}
			return -1;
		}
		if (r == 0) {
			errno = EIO;
			return -1;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

ssize_t io_getrandom(void *buf, size_t n, unsigned flags)
{
	ssize_t r;

	if (fault(OP_GETRANDOM, "(kernel)", -1)) {
		return -1;
	}
	do {
		r = getrandom(buf, n, flags);
	} while (r < 0 && errno == EINTR);
	return r;
}

long io_uring(long call, long a, long b, long c, long d)
{
	if (fault(OP_URING, "(kernel)", -1)) {
		return -1;
	}
	return syscall(call, a, b, c, d, 0L, 0L);
}

ssize_t io_read(int fd, void *buf, size_t n)
{
	ssize_t r;

	do {
		r = read(fd, buf, n);
	} while (r < 0 && errno == EINTR);
	return r;
}

int io_fsync(int fd)
{
	int r;

	if (fault(OP_FSYNC, NULL, fd)) {
		return -1;
	}
	do {
		r = fsync(fd);
	} while (r < 0 && errno == EINTR);
	return r;
}

/* The group of io_syncs_start: which entries the seam failed (err[i]),
 * and where the others went on the ring (at[]). */
static struct {
	unsigned n, k;
	unsigned at[FSYNCS_RING];
	int err[FSYNCS_RING];
} syncs;

int io_syncs_start(const int *fd, unsigned n, int data, int block)
{
	int live[FSYNCS_RING];
	unsigned i;

	if (n > FSYNCS_RING) {
		n = FSYNCS_RING;
	}
	syncs.n = n;
	syncs.k = 0;
	for (i = 0; i < n; i++) {
		syncs.err[i] = -1;
		if (fault(OP_FSYNC, NULL, fd[i])) {
			syncs.err[i] = errno ? errno : EIO;
			continue;
		}
		syncs.at[syncs.k] = i;
		live[syncs.k++] = fd[i];
	}
	return syncs.k > 0 && fsyncs_start(live, syncs.k, data, block);
}

int io_syncs_collect(int *err, int wait)
{
	int res[FSYNCS_RING];
	unsigned i;

	if (syncs.k > 0 && !fsyncs_collect(res, wait)) {
		return 0;
	}
	for (i = 0; i < syncs.n; i++) {
		err[i] = syncs.err[i];
	}
	for (i = 0; i < syncs.k; i++) {
		err[syncs.at[i]] = res[i];
	}
	syncs.k = 0;
	return 1;
}

static int file_range(int fd, unsigned flags)
{
	int r;

	if (fault(OP_FSYNC, NULL, fd)) {
		return -1;
	}
	do {
		r = sync_file_range(fd, 0, 0, flags);
	} while (r < 0 && errno == EINTR);
	return r;
}

int io_start_data(int fd)
{
	return file_range(fd, SYNC_FILE_RANGE_WRITE);
}

int io_rename(const char *from, const char *to)
{
	if (fault(OP_RENAME, to, -1)) {
		return -1;
	}
	return rename(from, to);
}

int io_link(const char *from, const char *to)
{
	if (fault(OP_LINK, to, -1)) {
		return -1;
	}
	return link(from, to);
}

int io_link_fd(int fd, const char *to)
{
	char from[32];
	int r;

	snprintf(from, sizeof from, "/proc/self/fd/%d", fd);
	if (fault(OP_LINK, to, -1)) {
		return -1;
	}
	do {
		r = linkat(AT_FDCWD, from, AT_FDCWD, to, AT_SYMLINK_FOLLOW);
	} while (r < 0 && errno == EINTR);
	return r;
}

int io_unlink(const char *path)
{
	if (fault(OP_UNLINK, path, -1)) {
		return -1;
	}
	return unlink(path);
}

int io_mkdir(const char *path, mode_t mode)
{
	if (fault(OP_MKDIR, path, -1)) {
		return -1;
	}
	return mkdir(path, mode);
}

ssize_t io_recv(int fd, void *buf, size_t n)
{
	ssize_t r;

	for (;;) {
		r = recv(fd, buf, n, 0);
		if (r > 0) {
			return r;
		}
		if (r == 0) {
			return -2;
		}
		if (errno == EINTR) {
			continue;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			return 0;
		}
		return -1;
	}
}

ssize_t io_send(int fd, const void *buf, size_t n)
{
	ssize_t r;

	for (;;) {
		/* MSG_NOSIGNAL: a peer that went away is an error to handle,
		 * not a SIGPIPE that kills every session. */
		r = send(fd, buf, n, MSG_NOSIGNAL);
		if (r >= 0) {
			return r;
		}
		if (errno == EINTR) {
			continue;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			return 0;
		}
		return -1;
	}
}

int io_fsync_dir(const char *path)
{
	int fd, r, saved;

	fd = io_open(path, O_RDONLY | O_DIRECTORY, 0);
	if (fd < 0) {
		return -1;
	}
	r = io_fsync(fd);
	saved = errno;
	(void)io_close(fd);
	errno = saved;
	return r;
}

int io_replace_file(int fd, const char *tmp, const char *dst, const char *dir,
                    const void *buf, size_t n)
{
	int e = 0;

	if (io_write_all(fd, buf, n) < 0 || io_fsync(fd) < 0) {
		e = errno ? errno : EIO;
	}
	if (io_close(fd) < 0 && e == 0) {
		e = errno ? errno : EIO;
	}
	if (e == 0 && io_rename(tmp, dst) < 0) {
		e = errno ? errno : EIO;
	}
	if (e != 0) {
		(void)io_unlink(tmp);
		return e;
	}
	return io_fsync_dir(dir) < 0 ? (errno ? errno : EIO) : 0;
}

void io_dir_of(const char *path, char *dir, size_t len)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL) {
		snprintf(dir, len, ".");
	} else if (slash == path) {
		snprintf(dir, len, "/");
	} else {
		snprintf(dir, len, "%.*s", (int)(slash - path), path);
	}
}

int io_mkdirs(const char *path, mode_t mode)
{
	char buf[512];
	size_t len = strlen(path), i;

	if (len == 0 || len >= sizeof buf) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(buf, path, len + 1);
	for (i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0') {
			continue;
		}
		buf[i] = '\0';
		if (io_mkdir(buf, mode) < 0 && errno != EEXIST) {
			return -1;
		}
		buf[i] = i == len ? '\0' : '/';
	}
	return 0;
}

struct dirent64_raw {
	uint64_t ino;
	int64_t off;
	unsigned short reclen;
	unsigned char type;
	char name[];
};

/* getdents64 itself, not opendir: musl's opendir allocates its buffer,
 * and the daemon allocates nothing once running. */
int io_each_entry(const char *dir, void (*fn)(const char *name, int type, void *ctx), void *ctx)
{
	static _Alignas(8) char buf[4096];
	long n, off;
	int fd = io_open(dir, O_RDONLY | O_DIRECTORY, 0), saved;

	if (fd < 0) {
		return -1;
	}
	while ((n = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
		for (off = 0; off < n;) {
			struct dirent64_raw *d = (struct dirent64_raw *)(buf + off);

			off += d->reclen;
			if (d->name[0] != '.' || (d->name[1] != '\0' &&
			                          (d->name[1] != '.' || d->name[2] != '\0'))) {
				fn(d->name, d->type, ctx);
			}
		}
	}
	saved = errno;
	io_close(fd);
	errno = saved;
	return n < 0 ? -1 : 0;
}

struct each_name {
	void (*fn)(const char *name, void *ctx);
	void *ctx;
};

static void each_name_one(const char *name, int type, void *ctx)
{
	struct each_name *e = ctx;

	(void)type;
	if (name[0] != '.') {
		e->fn(name, e->ctx);
	}
}

void io_each_name(const char *dir, void (*fn)(const char *name, void *ctx), void *ctx)
{
	struct each_name e = { fn, ctx };

	(void)io_each_entry(dir, each_name_one, &e);
}
