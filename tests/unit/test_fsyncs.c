/* test_fsyncs.c - src/fsyncs.c: several fdatasyncs at once, each result
 * given back at its own index, through the ring or one by one; started
 * without waiting, and collected when the ring's descriptor turns
 * readable. */
#include "../../src/fsyncs.h"
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#define FILES (2 * FSYNCS_RING + 3)   /* three turns of the ring */

static char dir[] = "/tmp/test_fsyncs.XXXXXX";

static int new_file(unsigned i)
{
	char path[64];
	int fd;

	snprintf(path, sizeof path, "%s/%u", dir, i);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd >= 0 && write(fd, path, strlen(path)) != (ssize_t)strlen(path)) {
		close(fd);
		fd = -1;
	}
	(void)unlink(path);   /* the descriptor keeps the file */
	return fd;
}

/* fd[0..n-1] in groups of the ring's size, each started and then
 * collected after waiting for the ring's descriptor (bounded). */
static void sync_all(const int *fd, int *err, unsigned n, int data)
{
	unsigned i, k, rounds;

	for (i = 0; i < n; i += k) {
		k = n - i < FSYNCS_RING ? n - i : FSYNCS_RING;
		if (fsyncs_start(fd + i, k, data, 0)) {
			struct pollfd p = { fsyncs_fd(), POLLIN, 0 };

			CHECK(p.fd >= 0);
			for (rounds = 0; rounds < 100 && !fsyncs_collect(err + i, 0); rounds++) {
				CHECK(poll(&p, 1, 100) >= 0);
			}
		}
		CHECK(fsyncs_collect(err + i, 1) == 1);
	}
}

int main(void)
{
	int fd[FILES], err[FILES], pipefd[2];
	unsigned i, bad = 0;

	if (mkdtemp(dir) == NULL || pipe(pipefd) < 0) {
		perror("test_fsyncs: set-up");
		return 1;
	}
	CHECK_STR(fsyncs_method(), "untried");

	/* Nothing to sync: done at once, the ring is not set up for it. */
	CHECK(fsyncs_start(fd, 0, 1, 0) == 0);
	CHECK(fsyncs_collect(err, 0) == 1);
	CHECK_STR(fsyncs_method(), "untried");
	CHECK(fsyncs_fd() == -1);

	/* One file; and a directory, by fsync. */
	fd[0] = new_file(0);
	CHECK(fd[0] >= 0);
	err[0] = -7;
	sync_all(fd, err, 1, 1);
	CHECK(err[0] == 0);
	close(fd[0]);
	fd[0] = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK(fd[0] >= 0);
	err[0] = -7;
	sync_all(fd, err, 1, 0);
	CHECK(err[0] == 0);
	/* One, by a caller that waits at once: synced in this thread, not
	 * handed to the ring, even now that it is set up. */
	err[0] = -7;
	CHECK(fsyncs_start(fd, 1, 0, 1) == 0);
	CHECK(fsyncs_collect(err, 1) == 1 && err[0] == 0);
	close(fd[0]);

	/* Many files, in three turns; a pipe among them (fdatasync on a pipe
	 * is EINVAL) and a closed descriptor (EBADF): each result at its
	 * own index, whatever order the completions came in. */
	for (i = 0; i < FILES; i++) {
		fd[i] = new_file(i);
		CHECK(fd[i] >= 0);
		err[i] = -7;
	}
	close(fd[5]);
	fd[5] = -1;   /* EBADF */
	close(fd[FSYNCS_RING + 1]);
	fd[FSYNCS_RING + 1] = pipefd[1];
	sync_all(fd, err, FILES, 1);
	for (i = 0; i < FILES; i++) {
		if (i == 5) {
			CHECK(err[i] == EBADF);
		} else if (i == FSYNCS_RING + 1) {
			CHECK(err[i] == EINVAL);
		} else if (err[i] != 0) {
			bad++;
		}
	}
	CHECK(bad == 0);
	/* A kernel without io_uring (or a filter that refuses it) runs the
	 * same one by one; this one may be either. */
	CHECK(strcmp(fsyncs_method(), "io_uring") == 0 || strcmp(fsyncs_method(), "serial") == 0);
	printf("test_fsyncs: syncs ran %s\n", fsyncs_method());

	/* Again, on the ring already set up. */
	for (i = 0; i < FILES; i++) {
		err[i] = -7;
	}
	fd[5] = fd[0];
	sync_all(fd, err, FILES, 1);
	CHECK(err[5] == 0 && err[FSYNCS_RING + 1] == EINVAL && err[FILES - 1] == 0);

	for (i = 0; i < FILES; i++) {
		if (fd[i] >= 0 && fd[i] != pipefd[1] && i != 5) {
			close(fd[i]);
		}
	}
	close(pipefd[0]);
	close(pipefd[1]);
	rmdir(dir);
	return check_done("test_fsyncs");
}
