/* fsync_ref [-w WRITERS] [-r RATE] [-u UNTIL] DIR COUNT SIZE - the durable-write limit
 * of a disk, for the benchmark report (tests/bench/bench.sh).
 *
 * One writer does, COUNT times, exactly the system calls a durable Maildir
 * delivery needs: create a SIZE-byte file in DIR/tmp/, write it, fsync it,
 * close it, rename it into DIR/new/, fsync DIR/new/.  No batching: every
 * message pays its own file sync and its own directory sync, which is what
 * a server without group commit can do at best.
 *
 * -w WRITERS: that many writers at once (processes), into the same DIR, the
 *   COUNT messages shared among them: the reference for a server's
 *   latency with as many sessions, each waiting for its own syncs.
 * -r RATE: no more than RATE messages a second in all: a writer starts a
 *   message no sooner than WRITERS / RATE seconds after it started its
 *   last one (and does not catch up after a slow one, as a session would
 *   not).  The bench paces the writers at picomail's own rate, so that both
 *   have as many messages in flight in each of the disk's stalls.
 * -u UNTIL: stop once the file UNTIL exists (COUNT is then the most
 *   written): the bench runs it beside a bulk writer for as long as that
 *   one writes.
 *
 * DIR and its tmp/ and new/ are created when missing.
 * Prints one line: "<count> <seconds> <msgs/s> <p50 ms> <p99 ms> <max ms>",
 * the last three over every message's time from its open to the fsync of
 * the directory.  Exit 1 on any error.
 * Built with the host's cc at bench time; never part of the product.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WRITERS 64

/* What every writer is told. */
struct job {
	const char *dir;
	const char *until;    /* or NULL */
	int writers;
	long count, size;
	double rate;          /* messages a second in all, or 0: no pacing */
};

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

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The Pth fraction (0..1) of the N sorted values in V, nearest rank. */
static double pick(const double *v, long n, double p)
{
	long k = (long)(p * (double)n + 0.999999) - 1;

	if (k < 0) {
		k = 0;
	}
	if (k >= n) {
		k = n - 1;
	}
	return v[k];
}

static void make_dir(const char *path)
{
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		die("mkdir", path);
	}
}

/* One durable delivery of BUF (SIZE bytes) as message I of writer W. */
static void deliver(const char *dir, int dfd, int w, long i, const char *buf, long size)
{
	char src[4200], dst[4200];
	long off = 0;
	ssize_t n;
	int fd;

	snprintf(src, sizeof src, "%s/tmp/%ld.%d.%ld.ref", dir, (long)getpid(), w, i);
	snprintf(dst, sizeof dst, "%s/new/%ld.%d.%ld.ref,S=%ld", dir, (long)getpid(), w, i, size);
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
		die("fsync", dir);
	}
}

/* Sleeps until a writer whose last message started at LAST may start its
 * next one, when the job is paced. */
static void pace(const struct job *j, double last)
{
	double due, left;
	struct timespec ts;

	if (j->rate <= 0 || last == 0) {
		return;
	}
	due = last + (double)j->writers / j->rate;
	while ((left = due - now()) > 0) {
		ts.tv_sec = (time_t)left;
		ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
		nanosleep(&ts, NULL);
	}
}

/* Writer W: messages W, W + WRITERS, ... below COUNT, each one's latency in
 * LAT[i] (ms), or -1 for one not written because UNTIL appeared. */
static void writer(const struct job *jb, int w, double *lat)
{
	char newdir[4200];
	char *buf;
	long i, j;
	int dfd;
	double t1 = 0;

	buf = malloc((size_t)jb->size);
	if (buf == NULL) {
		die("malloc", "");
	}
	/* Text like a mail body: 79 characters and a LF per line. */
	for (j = 0; j < jb->size; j++) {
		buf[j] = (j % 80 == 79) ? '\n' : (char)('a' + j % 26);
	}
	snprintf(newdir, sizeof newdir, "%s/new", jb->dir);
	dfd = open(newdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		die("open", newdir);
	}
	for (i = w; i < jb->count; i += jb->writers) {
		pace(jb, t1);
		if (jb->until != NULL && access(jb->until, F_OK) == 0) {
			break;
		}
		t1 = now();
		deliver(jb->dir, dfd, w, i, buf, jb->size);
		lat[i] = (now() - t1) * 1000.0;
	}
	close(dfd);
	free(buf);
}

/* Waits for every writer; 0 when all exited 0. */
static int wait_writers(const pid_t *pids, int writers)
{
	int w, st, bad = 0;

	for (w = 0; w < writers; w++) {
		while (waitpid(pids[w], &st, 0) < 0) {
			if (errno != EINTR) {
				die("waitpid", "");
			}
		}
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			bad = 1;
		}
	}
	return bad;
}

static void usage(void)
{
	fprintf(stderr, "usage: fsync_ref [-w WRITERS] [-r RATE] [-u UNTIL] DIR COUNT SIZE\n");
	exit(2);
}

int main(int argc, char **argv)
{
	char path[4200];
	struct job jb = { NULL, NULL, 1, 0, 0, 0 };
	pid_t pids[MAX_WRITERS];
	long count, i, n;
	int w, c;
	double t0, t, *lat;

	while ((c = getopt(argc, argv, "w:r:u:")) != -1) {
		if (c == 'w') {
			jb.writers = atoi(optarg);
		} else if (c == 'r') {
			jb.rate = strtod(optarg, NULL);
		} else if (c == 'u') {
			jb.until = optarg;
		} else {
			usage();
		}
	}
	if (argc - optind != 3) {
		usage();
	}
	jb.dir = argv[optind];
	jb.count = count = strtol(argv[optind + 1], NULL, 10);
	jb.size = strtol(argv[optind + 2], NULL, 10);
	if (count <= 0 || jb.size <= 0 || jb.size > (1L << 24) || jb.writers < 1 || jb.writers > MAX_WRITERS ||
	    jb.rate < 0) {
		fprintf(stderr, "fsync_ref: bad WRITERS, RATE, COUNT or SIZE\n");
		return 2;
	}
	make_dir(jb.dir);
	snprintf(path, sizeof path, "%s/tmp", jb.dir);
	make_dir(path);
	snprintf(path, sizeof path, "%s/new", jb.dir);
	make_dir(path);
	/* Shared with the writers, which fill in their own slots. */
	lat = mmap(NULL, (size_t)count * sizeof *lat, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (lat == MAP_FAILED) {
		die("mmap", "");
	}
	for (i = 0; i < count; i++) {
		lat[i] = -1;
	}

	t0 = now();
	for (w = 0; w < jb.writers; w++) {
		pids[w] = fork();
		if (pids[w] < 0) {
			die("fork", "");
		}
		if (pids[w] == 0) {
			writer(&jb, w, lat);
			_exit(0);
		}
	}
	if (wait_writers(pids, jb.writers) != 0) {
		fprintf(stderr, "fsync_ref: a writer failed\n");
		return 1;
	}
	t = now() - t0;

	qsort(lat, (size_t)count, sizeof *lat, cmp_double);
	for (i = 0; i < count && lat[i] < 0; i++) {
	}
	n = count - i;
	if (n == 0) {
		fprintf(stderr, "fsync_ref: %s existed before the first message\n", jb.until);
		return 1;
	}
	printf("%ld %.3f %.1f %.3f %.3f %.3f\n", n, t, (double)n / t, pick(lat + i, n, 0.5), pick(lat + i, n, 0.99),
	       lat[count - 1]);
	return 0;
}
