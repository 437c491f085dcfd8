/* crypt_stub.c - a cheap stand-in for crypt_sha in the session harnesses.
 *
 * Real SHA-crypt costs thousands of hash rounds per AUTH, which would make
 * a session fuzzer spend its time hashing.  This keeps the contract that
 * users_check relies on (the setting's "$id$salt$" prefix, then something
 * that depends on the key) so that a right password still logs in. */
#include "crypt_sha.h"

#include <string.h>

int crypt_sha(const char *key, const char *setting, char *out, size_t outlen)
{
	const char *p = setting;
	size_t prefix, klen = strlen(key);
	int dollars = 0;

	while (*p != '\0' && dollars < 3) {
		dollars += *p++ == '$';
	}
	if (dollars < 3) {
		return -1;
	}
	prefix = (size_t)(p - setting);
	if (prefix + klen + 1 > outlen) {
		return -1;
	}
	memcpy(out, setting, prefix);
	memcpy(out + prefix, key, klen + 1);
	return 0;
}
