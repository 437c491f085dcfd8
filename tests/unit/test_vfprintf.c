/* test_vfprintf.c - src/libc/vfprintf.c against the C library's own printf.
 *
 * The file is compiled here with vfprintf renamed (tests/unit/unit.mk), so
 * both live in one program: every row of the table and a few hundred
 * thousand random conversions (flags, width, precision, length, value) must
 * come out byte for byte as the C library's vsnprintf makes them, with the
 * same return value.  On glibc (make unit) that is glibc's printf, on musl
 * (make test-cross) musl's, which is the one the file replaces.  What the
 * file refuses (floating point, numbered arguments, wide characters) must
 * fail with EINVAL. */
#include "check.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

int picomail_vfprintf(FILE *f, const char *fmt, va_list ap);

/* Ours, through a memory stream; the length it returned in *ret. */
static char *ours(int *ret, const char *fmt, ...)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	va_list ap;

	if (f == NULL) {
		*ret = -2;
		return NULL;
	}
	va_start(ap, fmt);
	*ret = picomail_vfprintf(f, fmt, ap);
	va_end(ap);
	fclose(f);
	return buf;
}

static char *theirs(int *ret, const char *fmt, ...)
{
	static char buf[4096];
	va_list ap;

	va_start(ap, fmt);
	*ret = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	return buf;
}

/* Both on the same arguments: the text and the count agree. */
#define SAME(fmt, ...)                                               \
	do {                                                         \
		int r1, r2;                                          \
		char *a = ours(&r1, fmt, __VA_ARGS__);               \
		const char *b = theirs(&r2, fmt, __VA_ARGS__);       \
		check_row = fmt;                                     \
		CHECK_STR(a, b);                                     \
		CHECK_INT(r1, r2);                                   \
		free(a);                                             \
		check_row = NULL;                                    \
	} while (0)

/* The formats picomail and the parts of musl it links use, and the edges. */
static void test_table(void)
{
	SAME("plain text, no conversion%s", "");
	SAME("%s|%5s|%-5s|%.2s|%.*s|%12s|%-24s|", "abc", "ab", "ab", "abc", 3, "abcdef", "x", "USER");
	SAME("%d %i %u %ld %lld %lu %llu %zu", -1, 42, 4000000000u, -5L, -9000000000LL, 7UL,
	     18446744073709551615ULL, (size_t)12);
	SAME("%02d:%02d:%02d.%03d %04d-%02ld", 1, 2, 3, 4, 2026, 5L);
	SAME("%x %X %02x %03X %05X %05lX %09llX %016llx", 255u, 255u, 10u, 0xabcu, 1u, 0xdeadbeefUL,
	     0x123456789ULL, 0xfeedfacecafebeefULL);
	SAME("%o %04o %#o %#x %#X %#.0o %#.0x", 8u, 0755u, 8u, 255u, 255u, 0u, 0u);
	SAME("%c%c|%3c|%-3c|", 'a', 'b', 'c', 'd');
	SAME("%%|%5d|%-5d|%05d|%+d|% d|%+5d|%-+5d|% 05d", 1, 2, 3, 4, 5, 6, 7, 8);
	SAME("%.0d|%.0u|%.3d|%.3d|%5.3d|%-5.3d|%05.3d|%.0x", 0, 0u, 7, -7, 7, 7, 7, 0u);
	SAME("%d %d %ld %lld %hd %hhd %hu %hhu", INT_MIN, INT_MAX, LONG_MIN, LLONG_MIN, (short)-300,
	     (signed char)-3, (unsigned short)65535, (unsigned char)255);
	SAME("%jd %ju %zd %td %tx", INTMAX_MIN, UINTMAX_MAX, (ssize_t)-3, (ptrdiff_t)-9, (ptrdiff_t)31);
	SAME("%*d|%-*d|%*d|%.*d|%.*d", 5, 1, 5, 2, -5, 3, 4, 4, -1, 5);
	SAME("%hhx %hx %hho", 0x1ffu, 0x1ffffu, 0777u);
	SAME("%p %p", (void *)0x1234, (void *)&test_table);
	SAME("%s", "");
	/* musl's syslog header, its inet_ntop and strftime. */
	{
		int n1 = -1, n2 = -1, r1, r2;
		char *a = ours(&r1, "<%d>%s %n%s%s%.0d%s: ", 22, "Jan  2 03:04:05", &n1, "picomail",
		               "[", 123, "]");
		const char *b = theirs(&r2, "<%d>%s %n%s%s%.0d%s: ", 22, "Jan  2 03:04:05", &n2,
		                       "picomail", "[", 123, "]");

		CHECK_STR(a, b);
		CHECK_INT(n1, n2);
		CHECK_INT(r1, r2);
		free(a);
	}
	SAME("%d.%d.%d.%d %x:%x:%x:%x:%x:%x:%x:%x", 192, 168, 1, 20, 0x2001u, 0xdb8u, 0u, 0u, 0u,
	     0u, 0u, 1u);
	SAME("%+.4ld %0*lld %*lld %lld +%lld", -130L, 4, 7LL, 2, 5LL, 10000LL, 12345LL);
}

/* %f: what a log line shows, ties rounded to even, the edges. */
static void test_fixed(void)
{
	SAME("%.1f %.1f %.1f %.3f %f %.0f %.0f %.0f %.0f", 0.0, 1.25, -2.25, 0.003, 123.456, 0.5, 1.5,
	     2.5, 1e6);
	SAME("%8.2f|%-8.2f|%08.2f|%+.2f|% .2f|%#.0f|%.2F|%lf", 3.14159, 3.14159, -3.14159, 2.0, 2.0,
	     7.0, 99.999, 0.1);
	SAME("%.1f s %.3fs %.2f%% %f %F %5.1f", 12.34, 0.0005, 99.5, -0.0, 1e19 * 4, 0.95, 1.0 / 0.0);
	SAME("%f %F %.0f %.2f", -1.0 / 0.0, 0.0 / 0.0 * 0, 9.5, 0.125);
}

static void test_m_and_null(void)
{
	int r1, r2;
	char *a;
	const char *b;

	errno = ENOENT;
	a = ours(&r1, "open: %m|%-30m|%.5m");
	errno = ENOENT;
	b = theirs(&r2, "open: %m|%-30m|%.5m");
	CHECK_STR(a, b);
	CHECK_INT(r1, r2);
	free(a);
	a = ours(&r1, "%s|%.3s", (char *)NULL, (char *)NULL);
	CHECK_STR(a, "(null)|(nu");
	free(a);
	a = ours(&r1, "%p", (void *)NULL);
	CHECK_STR(a, "0");   /* musl's; glibc says "(nil)" */
	free(a);
}

static void test_refused(void)
{
	static const char *const bad[] = { "%e", "%g", "%a", "%Lf", "%1$d", "%ls", "%lc", "%k",
	                                   "trailing %" };
	unsigned i;
	int r;
	char *a;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		check_row = bad[i];
		errno = 0;
		a = ours(&r, bad[i], 1.5, 1);
		CHECK_INT(r, -1);
		CHECK_INT(errno, EINVAL);
		free(a);
	}
	check_row = NULL;
	errno = 0;
	a = ours(&r, "%99999999999d", 1);
	CHECK_INT(r, -1);
	CHECK_INT(errno, EOVERFLOW);
	free(a);
}

/* A small generator, the same on every run. */
static uint64_t rnd_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

/* Random integer conversions: every flag set, widths and precisions up to
 * 40 (literal or through *), every length, values at the edges. */
static void test_random(void)
{
	static const char *const lens[] = { "", "hh", "h", "l", "ll", "j", "z", "t" };
	static const char convs[] = "diuoxX";
	unsigned i, failed = check_failed;

	for (i = 0; i < 200000 && check_failed - failed < 10; i++) {
		char fmt[64];
		size_t n = 0;
		unsigned f = (unsigned)rnd(), li = (unsigned)(rnd() % 8);
		char conv = convs[rnd() % 6];
		int width = (int)(rnd() % 41) - (rnd() % 4 == 0 ? 20 : 0), prec = (int)(rnd() % 41) - 5;
		int star_w = rnd() % 3 == 0, star_p = rnd() % 3 == 0, has_w = rnd() % 2, has_p = rnd() % 2;
		uint64_t v = rnd();

		switch (rnd() % 6) {
		case 0: v = 0; break;
		case 1: v = rnd() % 256; break;
		case 2: v = (uint64_t)INT64_MIN; break;
		case 3: v = (uint64_t)-1; break;
		default: break;
		}
		fmt[n++] = '%';
		if (f & 1) fmt[n++] = '-';
		if (f & 2) fmt[n++] = '+';
		if (f & 4) fmt[n++] = ' ';
		if (f & 8) fmt[n++] = '#';
		if (f & 16) fmt[n++] = '0';
		if (star_w) {
			fmt[n++] = '*';
		} else if (has_w && width > 0) {
			n += (size_t)snprintf(fmt + n, sizeof fmt - n, "%d", width);
		}
		if (star_p) {
			fmt[n++] = '.';
			fmt[n++] = '*';
		} else if (has_p && prec >= 0) {
			n += (size_t)snprintf(fmt + n, sizeof fmt - n, ".%d", prec);
		}
		n += (size_t)snprintf(fmt + n, sizeof fmt - n, "%s%c|", lens[li], conv);
		/* The argument as the length says it is passed. */
#define BOTH(arg)                                                                           \
	do {                                                                                \
		int r1, r2;                                                                 \
		char *a;                                                                    \
		const char *b;                                                              \
		if (star_w && star_p) {                                                     \
			a = ours(&r1, fmt, width, prec, arg);                               \
			b = theirs(&r2, fmt, width, prec, arg);                             \
		} else if (star_w) {                                                        \
			a = ours(&r1, fmt, width, arg);                                     \
			b = theirs(&r2, fmt, width, arg);                                   \
		} else if (star_p) {                                                        \
			a = ours(&r1, fmt, prec, arg);                                      \
			b = theirs(&r2, fmt, prec, arg);                                    \
		} else {                                                                    \
			a = ours(&r1, fmt, arg);                                            \
			b = theirs(&r2, fmt, arg);                                          \
		}                                                                           \
		check_row = fmt;                                                            \
		if (a == NULL || strcmp(a, b) != 0 || r1 != r2) {                           \
			CHECK_STR(a, b);                                                    \
			CHECK_INT(r1, r2);                                                  \
		}                                                                           \
		check_row = NULL;                                                           \
		free(a);                                                                    \
	} while (0)
		switch (li) {
		case 3: BOTH((long)v); break;
		case 4: BOTH((long long)v); break;
		case 5: BOTH((intmax_t)v); break;
		case 6: BOTH((size_t)v); break;
		case 7: BOTH((ptrdiff_t)v); break;
		default: BOTH((int)v); break;
		}
#undef BOTH
	}
	CHECK(check_failed == failed);
}

/* Random %f: doubles from 2^-66 to 2^63, up to 30 decimals, every flag;
 * the range where fixed() is exact. */
static void test_random_fixed(void)
{
	unsigned i, failed = check_failed;

	for (i = 0; i < 100000 && check_failed - failed < 10; i++) {
		char fmt[32];
		unsigned f = (unsigned)rnd();
		double x = ldexp((double)(rnd() >> 11), (int)(rnd() % 130) - 119);
		int prec = (int)(rnd() % 31), width = (int)(rnd() % 30), r1, r2;
		char *a;
		const char *b;

		if (rnd() % 4 == 0) {
			x = (double)(rnd() % 2000) / 8;   /* ties */
			prec = (int)(rnd() % 4);
		}
		if (f & 32) {
			x = -x;
		}
		snprintf(fmt, sizeof fmt, "%%%s%s%s%s%s%d.%d%c|", f & 1 ? "-" : "", f & 2 ? "+" : "",
		         f & 4 ? " " : "", f & 8 ? "#" : "", f & 16 ? "0" : "", width, prec,
		         f & 64 ? 'F' : 'f');
		a = ours(&r1, fmt, x);
		b = theirs(&r2, fmt, x);
		if (a == NULL || strcmp(a, b) != 0 || r1 != r2) {
			check_row = fmt;
			CHECK_STR(a, b);
			CHECK_INT(r1, r2);
			check_row = NULL;
		}
		free(a);
	}
	CHECK(check_failed == failed);
}

int main(void)
{
	test_table();
	test_fixed();
	test_m_and_null();
	test_refused();
	test_random();
	test_random_fixed();
	return check_done("test_vfprintf");
}
