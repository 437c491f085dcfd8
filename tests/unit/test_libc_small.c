/* test_libc_small.c - src/libc/qsort.c and src/libc/strtol.c against the
 * C library's own, compiled here with their names changed
 * (tests/unit/unit.mk) so that both live in one program. */
#include "check.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pm_qsort(void *b, size_t n, size_t width, int (*cmp)(const void *, const void *));
unsigned long pm_strtoul(const char *s, char **end, int base);
unsigned long long pm_strtoull(const char *s, char **end, int base);
long pm_strtol(const char *s, char **end, int base);
long long pm_strtoll(const char *s, char **end, int base);
intmax_t pm_strtoimax(const char *s, char **end, int base);
uintmax_t pm_strtoumax(const char *s, char **end, int base);

static uint64_t rnd_state = 0x2545f4914f6cdd1dULL;

static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

struct rec {
	uint32_t key;
	char pad[9];   /* an odd width */
};

static int by_key(const void *a, const void *b)
{
	uint32_t x = ((const struct rec *)a)->key, y = ((const struct rec *)b)->key;

	return x < y ? -1 : x > y;
}

static void test_qsort(void)
{
	static struct rec a[3000], b[3000];
	unsigned round, i, n, same;

	for (round = 0; round < 200; round++) {
		n = (unsigned)(rnd() % 3000);
		for (i = 0; i < n; i++) {
			a[i].key = (uint32_t)(round % 4 == 0 ? rnd() % 7 : round % 4 == 1 ? i : rnd());
			memset(a[i].pad, (int)(i & 0xff), sizeof a[i].pad);
		}
		memcpy(b, a, sizeof a[0] * n);
		pm_qsort(a, n, sizeof a[0], by_key);
		qsort(b, n, sizeof b[0], by_key);
		same = 1;
		for (i = 0; i < n; i++) {
			same &= a[i].key == b[i].key;
			if (i > 0) {
				same &= a[i - 1].key <= a[i].key;
			}
		}
		CHECK(same);
	}
	pm_qsort(NULL, 0, 4, by_key);
	pm_qsort(a, 1, sizeof a[0], by_key);
}

/* Every function on s in base: the same value, end and errno.  For a
 * base C does not allow, glibc leaves *end alone and musl sets it to s,
 * as ours does; when there are no digits, musl and ours say EINVAL, which
 * POSIX allows and glibc does not do. */
static void same_strto(const char *s, int base)
{
	char *e1, *e2;
	int r1, r2, bad = base < 0 || base == 1 || base > 36;

	check_row = s;
#define SAME(ours, theirs, type)                                      \
	do {                                                          \
		type v1, v2;                                          \
		errno = 0;                                            \
		v1 = ours(s, &e1, base);                              \
		r1 = errno;                                           \
		errno = 0;                                            \
		e2 = (char *)s;                                       \
		v2 = theirs(s, bad ? NULL : &e2, base);               \
		r2 = errno;                                           \
		if (e1 == s && !bad && r1 == EINVAL && r2 == 0) {     \
			r2 = EINVAL;                                  \
		}                                                     \
		if (v1 != v2 || e1 != e2 || r1 != r2) {               \
			printf("\t%s(\"%s\", %d)\n", #theirs, s, base); \
			CHECK(v1 == v2);                              \
			CHECK(e1 == e2);                              \
			CHECK_INT(r1, r2);                            \
		} else {                                              \
			CHECK(1);                                     \
		}                                                     \
	} while (0)
	SAME(pm_strtoul, strtoul, unsigned long);
	SAME(pm_strtoull, strtoull, unsigned long long);
	SAME(pm_strtol, strtol, long);
	SAME(pm_strtoll, strtoll, long long);
	SAME(pm_strtoimax, strtoimax, intmax_t);
	SAME(pm_strtoumax, strtoumax, uintmax_t);
#undef SAME
	check_row = NULL;
}

static void test_strtol(void)
{
	static const char *const rows[] = {
		"0", "1", "-1", "+1", "  \t\n42x", "007", "0x", "0x1g", "0X1A", "0xg", "-0x10", "z", "",
		"-", "+", " ", "12345678901234567890", "18446744073709551615", "18446744073709551616",
		"-18446744073709551615", "-18446744073709551616", "9223372036854775807",
		"9223372036854775808", "-9223372036854775808", "-9223372036854775809", "4294967295",
		"4294967296", "-4294967295", "-4294967296", "2147483647", "2147483648", "-2147483648",
		"-2147483649", "0777", "08", "0b101", "zz", "ZZ", "1e5", "99999999999999999999999999",
	};
	static const int bases[] = { 0, 2, 8, 10, 16, 36, 1, 37, -1 };
	unsigned i, j;
	char buf[64];

	for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		for (j = 0; j < sizeof bases / sizeof bases[0]; j++) {
			same_strto(rows[i], bases[j]);
		}
	}
	/* Random digit strings with random signs, prefixes and bases. */
	for (i = 0; i < 20000; i++) {
		int base = (int)(rnd() % 37), n = 0, len = (int)(rnd() % 24);

		if (base == 1) {
			base = 0;
		}
		if (rnd() % 3 == 0) {
			buf[n++] = rnd() % 2 ? '-' : '+';
		}
		if (rnd() % 4 == 0) {
			buf[n++] = '0';
			buf[n++] = rnd() % 2 ? 'x' : 'X';
		}
		while (len-- > 0) {
			buf[n++] = "0123456789abcdefghijklmnopqrstuvwxyzABCXYZ -"[rnd() % 45];
		}
		buf[n] = '\0';
		same_strto(buf, base);
	}
}

int main(void)
{
	test_qsort();
	test_strtol();
	return check_done("test_libc_small");
}
