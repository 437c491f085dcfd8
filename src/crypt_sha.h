/* crypt_sha.h - SHA-crypt password hashes ($5$ SHA-256, $6$ SHA-512), the
 * schemes crypt(3) writes on Linux, computed with BearSSL's hashes so the
 * static binary does not depend on a libc that has crypt(3). */
#ifndef PICOMAIL_CRYPT_SHA_H
#define PICOMAIL_CRYPT_SHA_H

#include <stddef.h>

#define CRYPT_SHA_MAX 128   /* "$6$rounds=999999999$<16>$<86>" fits */

/* Hashes key with setting ("$6$salt", "$5$rounds=N$salt", or a whole
 * hash, whose salt is reused) into out.  0, or -1 for an unknown scheme or
 * a malformed setting. */
int crypt_sha(const char *key, const char *setting, char *out, size_t outlen);

#endif
