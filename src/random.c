/* random.c - random bytes from the kernel: getrandom(2), or /dev/urandom
 * where the kernel has no getrandom. */
#include "random.h"
#include "io.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/random.h>
#include <time.h>

static int urandom_fd = -1;   /* opened once getrandom is known missing */

/* /dev/urandom, for kernels before 3.17; kept open, since after dropping
 * privileges or in a chroot the device may be out of reach. */
static int use_urandom(void)
{
	if (urandom_fd < 0) {
		urandom_fd = io_open("/dev/urandom", O_RDONLY, 0);
	}
	return urandom_fd < 0 ? -1 : 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int random_init(void)
{
	unsigned char probe[16];
	int64_t t0;
	ssize_t r;

	r = io_getrandom(probe, sizeof probe, GRND_NONBLOCK);
	if (r == (ssize_t)sizeof probe) {
		return 0;
	}
	if (r < 0 && errno == EAGAIN) {
		/* Early in the boot of a box without a hardware RNG: keys made
		 * now could be guessed, so wait rather than serve TLS with them. */
		log_msg(LOG_WARNING, "waiting for the kernel's random pool to be initialised");
		t0 = now_ms();
		r = io_getrandom(probe, sizeof probe, 0);
		if (r == (ssize_t)sizeof probe) {
			/* Tenths in integers: the printf of the static build has no
			 * floating point (src/libc/vfprintf.c). */
			int64_t tenths = (now_ms() - t0 + 50) / 100;

			log_msg(LOG_NOTICE, "the kernel's random pool is ready after %lld.%d s",
			        (long long)(tenths / 10), (int)(tenths % 10));
			return 0;
		}
	}
	if (r < 0 && errno == ENOSYS) {
		if (use_urandom() == 0 && io_read(urandom_fd, probe, sizeof probe) ==
		                                  (ssize_t)sizeof probe) {
			log_msg(LOG_NOTICE, "no getrandom(2) in this kernel: random bytes from "
			        "/dev/urandom");
			return 0;
		}
	}
	log_msg(LOG_ERR, "no random source: getrandom and /dev/urandom failed: %m");
	return -1;
}

int random_bytes(void *p, size_t n)
{
	ssize_t r;

	if (urandom_fd < 0) {
		/* Up to 256 bytes come whole once the pool is initialised. */
		r = io_getrandom(p, n, 0);
		if (r == (ssize_t)n) {
			return 0;
		}
		if (r >= 0) {
			errno = EIO;
			return -1;
		}
		if (errno != ENOSYS || use_urandom() < 0) {
			return -1;
		}
	}
	r = io_read(urandom_fd, p, n);
	if (r == (ssize_t)n) {
		return 0;
	}
	if (r >= 0) {
		errno = EIO;
	}
	return -1;
}
