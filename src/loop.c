/* loop.c - poll() over a fixed table of slots. */
#include "loop.h"
#include "io.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct slot {
	loop_fn fn;            /* NULL: free */
	void *ctx;
	int64_t deadline;
};

static struct pollfd *pfds;
static struct slot *slots;
static unsigned nslots, nused;
static int64_t now_ms;
static int running;
static void (*after_round)(void);
static int (*gather_pending)(void);

#define GATHER_ROUNDS 4
static void (*signal_fn)(int);
static int sigpipe[2] = { -1, -1 };

static int64_t clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int loop_init(unsigned n)
{
	unsigned i;

	/* The only allocation of the loop, at start-up. */
	pfds = calloc(n, sizeof *pfds);
	slots = calloc(n, sizeof *slots);
	if (pfds == NULL || slots == NULL) {
		return -1;
	}
	for (i = 0; i < n; i++) {
		pfds[i].fd = -1;
	}
	nslots = n;
	now_ms = clock_ms();
	return 0;
}

int loop_add(int fd, short events, loop_fn fn, void *ctx)
{
	unsigned i;

	for (i = 0; i < nslots; i++) {
		if (slots[i].fn == NULL) {
			slots[i].fn = fn;
			slots[i].ctx = ctx;
			slots[i].deadline = 0;
			pfds[i].fd = fd;
			pfds[i].events = events;
			pfds[i].revents = 0;
			nused++;
			return (int)i;
		}
	}
	return -1;
}

void loop_events(int slot, short events)
{
	pfds[slot].events = events;
}

void loop_deadline(int slot, int64_t when)
{
	slots[slot].deadline = when;
}

void loop_del(int slot)
{
	if (slot < 0 || slots[slot].fn == NULL) {
		return;
	}
	slots[slot].fn = NULL;
	slots[slot].ctx = NULL;
	slots[slot].deadline = 0;
	pfds[slot].fd = -1;
	pfds[slot].revents = 0;
	nused--;
}

int64_t loop_now(void)
{
	return now_ms;
}

unsigned loop_used(void)
{
	return nused;
}

unsigned loop_size(void)
{
	return nslots;
}

void loop_after_round(void (*fn)(void))
{
	after_round = fn;
}

void loop_gather(int (*pending)(void))
{
	gather_pending = pending;
}

static void dispatch(void);

/* Extra rounds that do not wait, while something pends and events keep
 * coming. */
static void gather(void)
{
	unsigned k;

	for (k = 0; k < GATHER_ROUNDS && gather_pending != NULL && gather_pending(); k++) {
		if (poll(pfds, nslots, 0) <= 0) {
			return;
		}
		now_ms = clock_ms();
		dispatch();
	}
}

static void signal_handler(int sig)
{
	unsigned char b = (unsigned char)sig;
	int saved = errno;

	/* A full pipe already holds a wake-up; losing a duplicate is fine. */
	if (write(sigpipe[1], &b, 1) < 0) {
		errno = saved;
	}
	errno = saved;
}

static void signal_ready(void *ctx, int revents)
{
	unsigned char buf[32];
	ssize_t n, i;

	(void)ctx;
	(void)revents;
	while ((n = io_read(sigpipe[0], buf, sizeof buf)) > 0) {
		for (i = 0; i < n; i++) {
			signal_fn(buf[i]);
		}
	}
}

int loop_signals(const int *sigs, unsigned n, void (*fn)(int sig))
{
	struct sigaction sa;
	unsigned i;

	if (pipe2(sigpipe, O_NONBLOCK | O_CLOEXEC) < 0) {
		return -1;
	}
	signal_fn = fn;
	if (loop_add(sigpipe[0], POLLIN, signal_ready, NULL) < 0) {
		return -1;
	}
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = signal_handler;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < n; i++) {
		if (sigaction(sigs[i], &sa, NULL) < 0) {
			return -1;
		}
	}
	return 0;
}

/* Milliseconds until the nearest deadline, or -1 for none. */
static int next_timeout(void)
{
	int64_t best = 0, d;
	unsigned i;

	for (i = 0; i < nslots; i++) {
		d = slots[i].deadline;
		if (slots[i].fn != NULL && d != 0 && (best == 0 || d < best)) {
			best = d;
		}
	}
	if (best == 0) {
		return -1;
	}
	if (best <= now_ms) {
		return 0;
	}
	d = best - now_ms;
	return d > 60000 ? 60000 : (int)d;
}

static void dispatch(void)
{
	unsigned i;
	int rev;

	for (i = 0; i < nslots && running; i++) {
		if (slots[i].fn == NULL) {
			continue;
		}
		rev = pfds[i].fd >= 0 ? pfds[i].revents : 0;
		pfds[i].revents = 0;
		if (rev == 0 && slots[i].deadline != 0 && slots[i].deadline <= now_ms) {
			slots[i].deadline = 0;
			rev = LOOP_TIMEOUT;
		}
		if (rev != 0) {
			slots[i].fn(slots[i].ctx, rev);
		}
	}
}

int loop_run(void)
{
	int n;

	running = 1;
	while (running) {
		n = poll(pfds, nslots, next_timeout());
		now_ms = clock_ms();
		if (n < 0 && errno != EINTR) {
			log_msg(LOG_ERR, "poll: %m");
			return -1;
		}
		dispatch();
		gather();
		if (after_round != NULL) {
			after_round();
		}
	}
	return 0;
}

void loop_stop(void)
{
	running = 0;
}
