/* dirent.c - opendir, fdopendir, readdir and closedir for the static musl
 * build, over getdents64, each stream in an anonymous mapping of its own
 * (mmap at opendir, munmap at closedir) instead of malloc'd memory.
 *
 * Why: closedir's free() was the one call to free left in the binary,
 * and a static musl program that never calls free links musl's simple
 * bump allocator instead of its general one (mallocng, 6-7 KB); picomail
 * allocates only at start-up and never frees.  A mapping also leaves no
 * resident page behind once the listing is closed.  A stream is musl's
 * struct __dirstream, field for field, so that musl's own dirfd, telldir,
 * seekdir, rewinddir and readdir_r work on ours.  See vfprintf.c for why
 * only this build links it; tests/unit/test_dirent.c holds it to the C
 * library's listing. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

/* musl 1.2's struct __dirstream (src/dirent/__dirent.h). */
struct __dirstream {
	off_t tell;
	int fd;
	int buf_pos;
	int buf_end;
	volatile int lock[1];
	char buf[2048];
};

/* A new stream for fd, or NULL (ENOMEM). */
static DIR *take(int fd)
{
	DIR *d = mmap(NULL, sizeof *d, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (d == MAP_FAILED) {
		errno = ENOMEM;
		return NULL;
	}
	d->fd = fd;
	return d;
}

DIR *fdopendir(int fd)
{
	struct stat st;
	DIR *d;

	if (fstat(fd, &st) < 0) {
		return NULL;
	}
	if (fcntl(fd, F_GETFL) & O_PATH) {
		errno = EBADF;
		return NULL;
	}
	if (!S_ISDIR(st.st_mode)) {
		errno = ENOTDIR;
		return NULL;
	}
	d = take(fd);
	if (d != NULL) {
		(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
	}
	return d;
}

DIR *opendir(const char *name)
{
	int fd = open(name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;

	if (fd < 0) {
		return NULL;
	}
	d = take(fd);
	if (d == NULL) {
		close(fd);
		errno = ENOMEM;
	}
	return d;
}

struct dirent *readdir(DIR *d)
{
	struct dirent *de;
	int saved = errno;
	long n;

	if (d->buf_pos >= d->buf_end) {
		n = syscall(SYS_getdents64, d->fd, d->buf, sizeof d->buf);
		if (n <= 0) {
			/* The end, or an error in errno; a directory removed
			 * meanwhile (ENOENT) ends the listing as musl's does. */
			if (n < 0 && errno == ENOENT) {
				errno = saved;
			}
			return NULL;
		}
		d->buf_end = (int)n;
		d->buf_pos = 0;
	}
	de = (struct dirent *)(void *)(d->buf + d->buf_pos);
	d->buf_pos += de->d_reclen;
	d->tell = de->d_off;
	return de;
}

int closedir(DIR *d)
{
	int r = close(d->fd), e = errno;

	munmap(d, sizeof *d);
	errno = e;
	return r;
}
