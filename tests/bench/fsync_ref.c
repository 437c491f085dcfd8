/* fsync_ref DIR COUNT SIZE - the durable-write limit of a disk, for the
 * benchmark report (tests/bench/bench.sh).
 *
 * One writer does, COUNT times, exactly the system calls a durable Maildir
 * delivery needs: create a SIZE-byte file in DIR/tmp/, write it, fsync it,
 * close it, rename it into DIR/new/, fsync DIR/new/.  No batching: every
 * message pays its own file sync and its own directory sync, which is what
 * a server without group commit can do at best.
 *
 * DIR and its tmp/ and new/ are created when missing.
 * Prints one line: "<count> <seconds> <msgs/s>".  Exit 1 on any error.
 * Built with the host's cc at bench time; never part of the product.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, const char *path)
{
	fprintf(stderr, "fsync_ref: %s %s: %s\n", what, path, strerror(errno));
	exit(1);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	char tmpdir[4096], newdir[4096], src[4200], dst[4200];
	char *buf;
	long count, size, i, j;
	int dfd, fd;
	double t0, t;

	if (argc != 4) {
		fprintf(stderr, "usage: fsync_ref DIR COUNT SIZE\n");
		return 2;
	}
	count = strtol(argv[2], NULL, 10);
	size = strtol(argv[3], NULL, 10);
	if (count <= 0 || size <= 0 || size > (1L << 24)) {
		fprintf(stderr, "fsync_ref: bad COUNT or SIZE\n");
		return 2;
	}
	if (mkdir(argv[1], 0700) < 0 && errno != EEXIST) {
		die("mkdir", argv[1]);
	}
	snprintf(tmpdir, sizeof tmpdir, "%s/tmp", argv[1]);
	snprintf(newdir, sizeof newdir, "%s/new", argv[1]);
	if (mkdir(tmpdir, 0700) < 0 && errno != EEXIST) {
		die("mkdir", tmpdir);
	}
	if (mkdir(newdir, 0700) < 0 && errno != EEXIST) {
		die("mkdir", newdir);
	}
	buf = malloc((size_t)size);
	if (buf == NULL) {
		die("malloc", "");
	}
	/* Text like a mail body: 79 characters and a LF per line. */
	for (j = 0; j < size; j++) {
		buf[j] = (j % 80 == 79) ? '\n' : (char)('a' + j % 26);
	}
	dfd = open(newdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		die("open", newdir);
	}

	t0 = now();
	for (i = 0; i < count; i++) {
		ssize_t n;
		long off = 0;

		snprintf(src, sizeof src, "%s/%ld.%ld.ref", tmpdir, (long)getpid(), i);
		snprintf(dst, sizeof dst, "%s/%ld.%ld.ref,S=%ld", newdir, (long)getpid(), i, size);
		fd = open(src, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0) {
			die("open", src);
		}
		while (off < size) {
			n = write(fd, buf + off, (size_t)(size - off));
			if (n < 0) {
				if (errno == EINTR) {
					continue;
				}
				die("write", src);
			}
			off += n;
		}
		if (fsync(fd) < 0) {
			die("fsync", src);
		}
		if (close(fd) < 0) {
			die("close", src);
		}
		if (rename(src, dst) < 0) {
			die("rename", src);
		}
		if (fsync(dfd) < 0) {
			die("fsync", newdir);
		}
	}
	t = now() - t0;
	close(dfd);
	free(buf);
	printf("%ld %.3f %.1f\n", count, t, (double)count / t);
	return 0;
}
