/* random.h - random bytes from the kernel, for TLS and DNS query ids.
 *
 * getrandom(2), which blocks only until the kernel's pool has been
 * initialised once after boot; on kernels without it (before 3.17),
 * /dev/urandom.  Never RDRAND or any other source alone: BearSSL's engines
 * are seeded from here (tls.c), and its own system seeder is built out.
 */
#ifndef PICOMAIL_RANDOM_H
#define PICOMAIL_RANDOM_H

#include <stddef.h>

/* Start-up, before the loop: waits for the kernel's pool if it is not
 * initialised yet (early in a router's boot), logging once that it had to
 * and how long it took.  0, or -1 when no source works (logged). */
int random_init(void);

/* n random bytes into p (n at most 256).  Does not block once random_init
 * has returned (elsewhere, e.g. the commands, it may wait for the pool).
 * 0, or -1 with errno. */
int random_bytes(void *p, size_t n);

#endif
