/* strtol.c - strtol, strtoul, strtoll, strtoull, strtoimax and strtoumax
 * for the static musl build, as C11 7.22.1.4 describes them.  musl's share
 * its scanf number scanner and stream shim (2-3 KB); picomail parses
 * numbers from its own files with strtoul and kin.  All six are here
 * because musl defines them in one object: defining some would collide
 * with it the day another is called.  See vfprintf.c for why only this
 * build links it; tests/unit/test_strtol.c holds them to the C library's. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>

/* The magnitude of the number at s in base (0: by its prefix), at most
 * lim (else *over); *neg for a '-'; *end after the last digit used, or
 * s when there is none. */
static unsigned long long scan(const char *s, char **end, int base, unsigned long long lim,
                               int *neg, int *over)
{
	const char *p = s;
	unsigned long long v = 0;
	int d, any = 0;

	*neg = 0;
	*over = 0;
	if (end != NULL) {
		*end = (char *)s;
	}
	if (base < 0 || base == 1 || base > 36) {
		errno = EINVAL;
		return 0;
	}
	while (isspace((unsigned char)*p)) {
		p++;
	}
	if (*p == '+' || *p == '-') {
		*neg = *p == '-';
		p++;
	}
	if ((base == 0 || base == 16) && p[0] == '0' && (p[1] | 32) == 'x' &&
	    isxdigit((unsigned char)p[2])) {
		p += 2;
		base = 16;
	} else if (base == 0) {
		base = p[0] == '0' ? 8 : 10;
	}
	for (;; p++) {
		if (*p >= '0' && *p <= '9') {
			d = *p - '0';
		} else if ((*p | 32) >= 'a' && (*p | 32) <= 'z') {
			d = (*p | 32) - 'a' + 10;
		} else {
			break;
		}
		if (d >= base) {
			break;
		}
		any = 1;
		if (v > (lim - (unsigned)d) / (unsigned)base) {
			*over = 1;
		} else {
			v = v * (unsigned)base + (unsigned)d;
		}
	}
	if (!any) {
		errno = EINVAL;   /* no digits: POSIX allows it, and musl says so */
		return 0;
	}
	if (end != NULL) {
		*end = (char *)p;
	}
	return v;
}

static unsigned long long to_unsigned(const char *s, char **end, int base, unsigned long long max)
{
	int neg, over;
	unsigned long long v = scan(s, end, base, max, &neg, &over);

	if (over) {
		errno = ERANGE;
		return max;
	}
	return neg ? (max & -v) : v;   /* "-1" is max, as C says */
}

static long long to_signed(const char *s, char **end, int base, long long min, long long max)
{
	int neg, over;
	unsigned long long lim = (unsigned long long)max + 1;   /* |min| */
	unsigned long long v = scan(s, end, base, lim, &neg, &over);

	if (over || (!neg && v > (unsigned long long)max)) {
		errno = ERANGE;
		return neg ? min : max;
	}
	if (neg) {
		return v == lim ? min : -(long long)v;
	}
	return (long long)v;
}

unsigned long long strtoull(const char *restrict s, char **restrict end, int base)
{
	return to_unsigned(s, end, base, ULLONG_MAX);
}

unsigned long strtoul(const char *restrict s, char **restrict end, int base)
{
	return (unsigned long)to_unsigned(s, end, base, ULONG_MAX);
}

uintmax_t strtoumax(const char *restrict s, char **restrict end, int base)
{
	return to_unsigned(s, end, base, UINTMAX_MAX);
}

long long strtoll(const char *restrict s, char **restrict end, int base)
{
	return to_signed(s, end, base, LLONG_MIN, LLONG_MAX);
}

long strtol(const char *restrict s, char **restrict end, int base)
{
	return (long)to_signed(s, end, base, LONG_MIN, LONG_MAX);
}

intmax_t strtoimax(const char *restrict s, char **restrict end, int base)
{
	return to_signed(s, end, base, INTMAX_MIN, INTMAX_MAX);
}
