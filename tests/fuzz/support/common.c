/* common.c - failing loudly, inputs as in-memory files, a scratch
 * directory. */
#include "fuzz.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void fuzz_fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("fuzz: invariant broken: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}

void fuzz_memfile(const uint8_t *data, size_t size, char *path, size_t len)
{
	static int fd = -1;

	if (fd < 0) {
		fd = memfd_create("fuzz-input", MFD_CLOEXEC);
		if (fd < 0) {
			fuzz_fail("memfd_create: %s", strerror(errno));
		}
	}
	if (ftruncate(fd, 0) < 0 || (size > 0 && pwrite(fd, data, size, 0) != (ssize_t)size)) {
		fuzz_fail("writing the input file: %s", strerror(errno));
	}
	snprintf(path, len, "/proc/self/fd/%d", fd);
}

static char tmpdir[256];

static void tmpdir_remove(void)
{
	char cmd[300];

	/* Only the directory mkdtemp made, whose name has no quote in it. */
	if (tmpdir[0] != '\0' && snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir) < (int)sizeof cmd &&
	    system(cmd) != 0) {
		fprintf(stderr, "fuzz: could not remove %s\n", tmpdir);
	}
}

const char *fuzz_tmpdir(void)
{
	const char *base = getenv("TMPDIR");
	struct stat st;

	if (tmpdir[0] != '\0') {
		return tmpdir;
	}
	if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0) {
		base = "/dev/shm";
	} else if (base == NULL || base[0] == '\0') {
		base = "/tmp";
	}
	snprintf(tmpdir, sizeof tmpdir, "%s/picomail-fuzz.XXXXXX", base);
	if (mkdtemp(tmpdir) == NULL) {
		fuzz_fail("mkdtemp %s: %s", tmpdir, strerror(errno));
	}
	atexit(tmpdir_remove);
	return tmpdir;
}
