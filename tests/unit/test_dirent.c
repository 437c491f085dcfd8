/* test_dirent.c - src/libc/dirent.c against the C library's own listing.
 *
 * Compiled here with its functions renamed (tests/unit/unit.mk), so both
 * live in one program: the same names from the same directory, streams
 * nested and each on its own, and fdopendir's refusals. */
#include "check.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

DIR *pm_opendir(const char *name);
DIR *pm_fdopendir(int fd);
struct dirent *pm_readdir(DIR *d);
int pm_closedir(DIR *d);

#define NFILES 300   /* more than one getdents64 buffer of names */

static char top[64];

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The sorted names of path, through ours (1) or the C library's (0). */
static unsigned list(const char *path, int ours, char **names, unsigned max)
{
	DIR *d = ours ? pm_opendir(path) : opendir(path);
	struct dirent *e;
	unsigned n = 0;

	if (d == NULL) {
		return 0;
	}
	while ((e = ours ? pm_readdir(d) : readdir(d)) != NULL && n < max) {
		names[n++] = strdup(e->d_name);
	}
	if (ours) {
		pm_closedir(d);
	} else {
		closedir(d);
	}
	qsort(names, n, sizeof names[0], by_name);
	return n;
}

static void test_same_names(void)
{
	static char *a[NFILES + 8], *b[NFILES + 8];
	char path[128];
	unsigned i, na, nb, same = 1;

	for (i = 0; i < NFILES; i++) {
		snprintf(path, sizeof path, "%s/a-file-with-a-longish-name-%04u", top, i);
		close(open(path, O_CREAT | O_WRONLY, 0600));
	}
	na = list(top, 1, a, NFILES + 8);
	nb = list(top, 0, b, NFILES + 8);
	CHECK_INT(na, nb);
	CHECK_INT(na, NFILES + 2);   /* with . and .. */
	for (i = 0; i < na && i < nb; i++) {
		same &= strcmp(a[i], b[i]) == 0;
	}
	CHECK(same);
	for (i = 0; i < na; i++) {
		free(a[i]);
	}
	for (i = 0; i < nb; i++) {
		free(b[i]);
	}
}

static void test_streams(void)
{
	DIR *d[8];
	unsigned i;
	int fd;

	for (i = 0; i < 8; i++) {
		d[i] = pm_opendir(top);
		CHECK(d[i] != NULL);
	}
	for (i = 4; i < 8; i++) {
		CHECK_INT(pm_closedir(d[i]), 0);
	}
	/* Each is its own stream: reading one does not move another. */
	CHECK(pm_readdir(d[0]) != NULL && pm_readdir(d[0]) != NULL);
	CHECK(pm_readdir(d[1]) != NULL);
	CHECK_INT(pm_closedir(d[2]), 0);
	d[2] = pm_opendir(top);
	CHECK(d[2] != NULL);
	for (i = 0; i < 4; i++) {
		CHECK_INT(pm_closedir(d[i]), 0);
	}
	CHECK(pm_opendir("/nonexistent-directory") == NULL && errno == ENOENT);
	fd = open("/dev/null", O_RDONLY);
	CHECK(pm_fdopendir(fd) == NULL && errno == ENOTDIR);
	close(fd);
	fd = open(top, O_RDONLY | O_DIRECTORY);
	d[0] = pm_fdopendir(fd);
	CHECK(d[0] != NULL && (fcntl(fd, F_GETFD) & FD_CLOEXEC));
	CHECK(pm_readdir(d[0]) != NULL);
	CHECK_INT(pm_closedir(d[0]), 0);
	/* At the end: NULL, errno as it was. */
	d[0] = pm_opendir("/");
	errno = 1234;
	while (pm_readdir(d[0]) != NULL) {
	}
	CHECK_INT(errno, 1234);
	pm_closedir(d[0]);
}

int main(void)
{
	char cmd[128];

	snprintf(top, sizeof top, "/tmp/test_dirent.XXXXXX");
	if (mkdtemp(top) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	test_same_names();
	test_streams();
	snprintf(cmd, sizeof cmd, "rm -rf %s", top);
	if (system(cmd) != 0) {
		printf("could not remove %s\n", top);
	}
	return check_done("test_dirent");
}
