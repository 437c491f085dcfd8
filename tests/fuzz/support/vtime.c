/* vtime.c - virtual time for the loop.
 *
 * The harnesses compile src/loop.c with poll and clock_gettime renamed to
 * these two, so that loop.c itself is unchanged: poll never sleeps, and
 * when nothing is ready the monotonic clock jumps to the deadline the loop
 * was waiting for.  A throttled AUTH or an idle timeout then costs no
 * real time, and runs stay deterministic. */
#include <poll.h>
#include <stdint.h>
#include <time.h>

static int64_t offset_ms;

int fuzz_poll(struct pollfd *fds, nfds_t n, int timeout);
int fuzz_clock_gettime(clockid_t id, struct timespec *ts);

int fuzz_poll(struct pollfd *fds, nfds_t n, int timeout)
{
	int r = poll(fds, n, 0);

	if (r == 0 && timeout > 0) {
		offset_ms += timeout;
	}
	return r;
}

int fuzz_clock_gettime(clockid_t id, struct timespec *ts)
{
	int r = clock_gettime(id, ts);

	if (r == 0 && id == CLOCK_MONOTONIC) {
		int64_t ns = (int64_t)ts->tv_nsec + (offset_ms % 1000) * 1000000;

		ts->tv_sec += (time_t)(offset_ms / 1000 + ns / 1000000000);
		ts->tv_nsec = (long)(ns % 1000000000);
	}
	return r;
}
