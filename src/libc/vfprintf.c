/* vfprintf.c - the C library's vfprintf for the static musl build:
 * integers, strings, characters, pointers, %n and %m, with every flag,
 * width, precision and length modifier C11 gives them, and %f in a simple
 * form (see fixed()); no %e, %g, %a, long double, wide characters or
 * numbered arguments (%1$s), which fail the call with EINVAL as musl
 * fails an invalid conversion.
 *
 * Why: musl's vfprintf carries floating-point conversion, 10 KB of code,
 * and on aarch64 the 128-bit long double arithmetic that needs from
 * libgcc (10 KB more), for output picomail never produces.  A definition
 * of vfprintf in the program keeps musl's out of a static link; printf,
 * fprintf, snprintf, dprintf and musl's own callers (syslog's header with
 * its %n, inet_ntop, strftime) all reach this one.  Only the static musl
 * build links src/libc/ (the sanitizer builds take only the files of src/
 * and keep glibc's printf); tests/unit/test_vfprintf.c holds it to the C
 * library's output for every kind of conversion.
 *
 * The output goes through fwrite in pieces of OUT_BUF bytes, so a line to
 * an unbuffered stream is still one write(2) when it fits. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#define OUT_BUF 256

struct out {
	FILE *f;
	size_t n;         /* bytes waiting in buf */
	size_t total;     /* bytes produced by the call so far */
	int failed;       /* a write failed: errno says why */
	int overflow;     /* more than INT_MAX bytes */
	char buf[OUT_BUF];
};

static void flush(struct out *o)
{
	if (o->n > 0 && !o->failed && fwrite(o->buf, 1, o->n, o->f) != o->n) {
		o->failed = 1;
	}
	o->n = 0;
}

static void put(struct out *o, const char *s, size_t len)
{
	size_t k;

	if (len > (size_t)INT_MAX - o->total) {
		o->overflow = 1;
		return;
	}
	o->total += len;
	while (len > 0) {
		k = OUT_BUF - o->n;
		if (k > len) {
			k = len;
		}
		memcpy(o->buf + o->n, s, k);
		o->n += k;
		s += k;
		len -= k;
		if (o->n == OUT_BUF) {
			flush(o);
		}
	}
}

static void pad(struct out *o, char c, size_t n)
{
	char run[32];
	size_t k;

	memset(run, c, sizeof run);
	while (n > 0 && !o->overflow) {
		k = n < sizeof run ? n : sizeof run;
		put(o, run, k);
		n -= k;
	}
}

/* The decimal number at *p (advanced past it), or -1 past INT_MAX. */
static int number(const char **p)
{
	int v = 0;

	while (**p >= '0' && **p <= '9') {
		if (v > (INT_MAX - (**p - '0')) / 10) {
			v = -1;
		}
		if (v >= 0) {
			v = 10 * v + (**p - '0');
		}
		(*p)++;
	}
	return v;
}

enum length { LEN_NONE, LEN_HH, LEN_H, LEN_L, LEN_LL, LEN_J, LEN_Z, LEN_T };

enum {
	F_LEFT = 1,     /* - */
	F_PLUS = 2,     /* + */
	F_SPACE = 4,    /* ' ' */
	F_ALT = 8,      /* # */
	F_ZERO = 16     /* 0 */
};

/* Pads body (prefix, then zeros to the precision, then digits) to width. */
static void field(struct out *o, int flags, int width, const char *prefix, size_t plen,
                  size_t zeros, const char *body, size_t blen)
{
	size_t len = plen + zeros + blen, w = width > 0 ? (size_t)width : 0;

	if (len < w && !(flags & F_LEFT) && !(flags & F_ZERO)) {
		pad(o, ' ', w - len);
	}
	put(o, prefix, plen);
	if (len < w && !(flags & F_LEFT) && (flags & F_ZERO)) {
		pad(o, '0', w - len);
	}
	pad(o, '0', zeros);
	put(o, body, blen);
	if (len < w && (flags & F_LEFT)) {
		pad(o, ' ', w - len);
	}
}

static void integer(struct out *o, char conv, enum length len, int flags, int width, int prec,
                   va_list *ap)
{
	char digits[3 * sizeof(uintmax_t) + 1], *end = digits + sizeof digits, *d = end;
	const char *prefix = "";
	uintmax_t v;
	unsigned base = 10;
	int negative = 0, upper = conv == 'X';
	size_t ndig, zeros;

	if (conv == 'd' || conv == 'i') {
		intmax_t s;

		switch (len) {
		case LEN_HH: s = (signed char)va_arg(*ap, int); break;
		case LEN_H:  s = (short)va_arg(*ap, int); break;
		case LEN_L:  s = va_arg(*ap, long); break;
		case LEN_LL: s = va_arg(*ap, long long); break;
		case LEN_J:  s = va_arg(*ap, intmax_t); break;
		case LEN_Z:  s = va_arg(*ap, ssize_t); break;
		case LEN_T:  s = va_arg(*ap, ptrdiff_t); break;
		default:     s = va_arg(*ap, int); break;
		}
		negative = s < 0;
		/* The magnitude, INTMAX_MIN included, in unsigned arithmetic. */
		v = negative ? (uintmax_t)0 - (uintmax_t)s : (uintmax_t)s;
		prefix = negative ? "-" : (flags & F_PLUS) ? "+" : (flags & F_SPACE) ? " " : "";
	} else if (conv == 'p') {
		v = (uintptr_t)va_arg(*ap, void *);
		/* As musl: %#lx, so "0x1234", and "0" for a null pointer. */
		base = 16;
		flags |= F_ALT;
	} else {
		switch (len) {
		case LEN_HH: v = (unsigned char)va_arg(*ap, unsigned); break;
		case LEN_H:  v = (unsigned short)va_arg(*ap, unsigned); break;
		case LEN_L:  v = va_arg(*ap, unsigned long); break;
		case LEN_LL: v = va_arg(*ap, unsigned long long); break;
		case LEN_J:  v = va_arg(*ap, uintmax_t); break;
		case LEN_Z:  v = va_arg(*ap, size_t); break;
		case LEN_T:  v = (size_t)va_arg(*ap, ptrdiff_t); break;
		default:     v = va_arg(*ap, unsigned); break;
		}
		base = conv == 'o' ? 8 : conv == 'u' ? 10 : 16;
	}
	while (v != 0) {
		*--d = "0123456789abcdef"[v % base];
		if (upper && *d >= 'a') {
			*d = (char)(*d - 'a' + 'A');
		}
		v /= base;
	}
	ndig = (size_t)(end - d);
	if (base == 16 && (flags & F_ALT) && ndig > 0) {
		prefix = upper ? "0X" : "0x";
	}
	/* An explicit precision turns the 0 flag off (C11 7.21.6.1); the
	 * default one is a digit, none for a zero with precision 0. */
	if (prec >= 0) {
		flags &= ~F_ZERO;
	} else {
		prec = 1;
	}
	if (base == 8 && (flags & F_ALT) && (size_t)prec <= ndig) {
		prec = (int)ndig + 1;   /* # makes the first digit a 0 */
	}
	zeros = (size_t)prec > ndig ? (size_t)prec - ndig : 0;
	field(o, flags, width, prefix, strlen(prefix), zeros, d, ndig);
}

/* %f, %F from the double's exact value m * 2^e: the integer part in 64
 * bits, the fraction as a 128-bit numerator over 2^k, each decimal the
 * integer part of ten times what is left, the last rounded half to even on
 * the exact remainder, as the C libraries round.  Exact for |x| < 2^64
 * with at most 64 decimals and a fraction of at most 120 bits (so every x
 * above 2^-67); past those (a log line never is) the integer part's digits
 * after the 19th, the decimals after the 64th and those of smaller numbers
 * come from plain double arithmetic. */
static void fixed(struct out *o, int flags, int width, int prec, double x, int upper)
{
	char ibuf[20], *d = ibuf + sizeof ibuf, dec[64];
	const char *prefix;
	uint64_t ip = 0, m, hi = 0, lo = 0, t0, t1;
	size_t nd, tens = 0, plen, len, w = width > 0 ? (size_t)width : 0;
	int i, e, k = 0, neg = signbit(x) != 0, point, up, exact = 1;
	double frac = 0;

	prefix = neg ? "-" : (flags & F_PLUS) ? "+" : (flags & F_SPACE) ? " " : "";
	if (isnan(x) || isinf(x)) {
		field(o, flags & ~F_ZERO, width, prefix, strlen(prefix), 0,
		      isnan(x) ? (upper ? "NAN" : "nan") : (upper ? "INF" : "inf"), 3);
		return;
	}
	x = fabs(x);
	if (prec < 0) {
		prec = 6;
	}
	nd = (size_t)prec < sizeof dec ? (size_t)prec : sizeof dec;
	m = (uint64_t)ldexp(frexp(x, &e), 53);   /* x = m * 2^(e - 53) */
	e -= 53;
	if (x >= 18446744073709551616.0) {
		while (x >= 1e19) {
			x /= 10;
			tens++;
		}
		ip = (uint64_t)x;
	} else if (e >= 0) {
		ip = m << e;
	} else if (-e <= 120) {
		k = -e;
		ip = k < 64 ? m >> k : 0;
		lo = k < 64 ? m & (((uint64_t)1 << k) - 1) : m;   /* the fraction, over 2^k */
	} else {
		exact = 0;
		frac = x;
	}
	for (i = 0; (size_t)i < nd; i++) {
		if (!exact) {
			frac *= 10;
			dec[i] = (char)('0' + (int)frac);
			frac -= (int)frac;
			continue;
		}
		/* (hi, lo) *= 10, then the bits from k up are the digit. */
		t0 = (lo & 0xffffffffu) * 10;
		t1 = (lo >> 32) * 10 + (t0 >> 32);
		lo = (t1 << 32) | (t0 & 0xffffffffu);
		hi = hi * 10 + (t1 >> 32);
		if (k >= 64) {
			dec[i] = (char)('0' + (hi >> (k - 64)));
			hi &= ((uint64_t)1 << (k - 64)) - 1;
		} else if (k > 0) {
			dec[i] = (char)('0' + ((hi << (64 - k)) | (lo >> k)));
			hi = 0;
			lo &= ((uint64_t)1 << k) - 1;
		} else {
			dec[i] = '0';
		}
	}
	/* Round on what is left: above half, or half and an odd last digit. */
	if (exact) {
		uint64_t hh = k > 64 ? (uint64_t)1 << (k - 65) : 0, hl = k == 0 || k > 64 ? 0 : (uint64_t)1 << (k - 1);

		up = hi > hh || (hi == hh && lo > hl) ||
		     (k > 0 && hi == hh && lo == hl &&
		      (nd > 0 ? dec[nd - 1] - '0' : (int)(ip % 2)) % 2 != 0);
	} else {
		frac *= 10;
		up = (int)frac >= 5;
	}
	if (up) {
		for (i = (int)nd - 1; i >= 0 && dec[i] == '9'; i--) {
			dec[i] = '0';
		}
		if (i >= 0) {
			dec[i]++;
		} else {
			ip++;
		}
	}
	do {
		*--d = (char)('0' + ip % 10);
		ip /= 10;
	} while (ip != 0);
	point = prec > 0 || (flags & F_ALT);
	plen = strlen(prefix);
	len = plen + (size_t)(ibuf + sizeof ibuf - d) + tens + (size_t)point + (size_t)prec;
	if (len < w && !(flags & F_LEFT) && !(flags & F_ZERO)) {
		pad(o, ' ', w - len);
	}
	put(o, prefix, plen);
	if (len < w && !(flags & F_LEFT) && (flags & F_ZERO)) {
		pad(o, '0', w - len);
	}
	put(o, d, (size_t)(ibuf + sizeof ibuf - d));
	pad(o, '0', tens);
	put(o, ".", (size_t)point);
	put(o, dec, nd);
	pad(o, '0', (size_t)prec - nd);
	if (len < w && (flags & F_LEFT)) {
		pad(o, ' ', w - len);
	}
}

int vfprintf(FILE *restrict f, const char *restrict fmt, va_list ap)
{
	struct out o;
	const char *p = fmt, *s;
	int saved_errno = errno, flags, width, prec, bad = 0;
	enum length len;
	va_list args;

	o.f = f;
	o.n = 0;
	o.total = 0;
	o.failed = 0;
	o.overflow = 0;
	va_copy(args, ap);
	while (!bad && !o.overflow && *p != '\0') {
		for (s = p; *p != '\0' && *p != '%'; p++) {
		}
		put(&o, s, (size_t)(p - s));
		if (*p == '\0') {
			break;
		}
		p++;
		if (*p == '%') {
			put(&o, p++, 1);
			continue;
		}
		for (flags = 0;; p++) {
			if (*p == '-') {
				flags |= F_LEFT;
			} else if (*p == '+') {
				flags |= F_PLUS;
			} else if (*p == ' ') {
				flags |= F_SPACE;
			} else if (*p == '#') {
				flags |= F_ALT;
			} else if (*p == '0') {
				flags |= F_ZERO;
			} else {
				break;
			}
		}
		if (*p == '*') {
			p++;
			width = va_arg(args, int);
			if (width < 0) {
				flags |= F_LEFT;
				width = width == INT_MIN ? -1 : -width;
			}
		} else {
			width = number(&p);
		}
		if (*p == '$') {
			bad = EINVAL;   /* numbered arguments */
			break;
		}
		if (width < 0) {
			o.overflow = 1;
			break;
		}
		prec = -1;
		if (*p == '.') {
			p++;
			if (*p == '*') {
				p++;
				prec = va_arg(args, int);
				if (prec < 0) {
					prec = -1;   /* as if there were none */
				}
			} else if ((prec = number(&p)) < 0) {
				o.overflow = 1;
				break;
			}
		}
		len = LEN_NONE;
		if (*p == 'h') {
			len = p[1] == 'h' ? LEN_HH : LEN_H;
			p += len == LEN_HH ? 2 : 1;
		} else if (*p == 'l') {
			len = p[1] == 'l' ? LEN_LL : LEN_L;
			p += len == LEN_LL ? 2 : 1;
		} else if (*p == 'j' || *p == 'z' || *p == 't') {
			len = *p == 'j' ? LEN_J : *p == 'z' ? LEN_Z : LEN_T;
			p++;
		}
		switch (*p) {
		case 'd': case 'i': case 'u': case 'o': case 'x': case 'X':
			integer(&o, *p, len, flags, width, prec, &args);
			break;
		case 'p':
			if (len != LEN_NONE) {
				bad = EINVAL;
				break;
			}
			integer(&o, *p, len, flags, width, prec, &args);
			break;
		case 'c': {
			char c = (char)va_arg(args, int);

			if (len != LEN_NONE) {
				bad = EINVAL;   /* %lc: a wide character */
				break;
			}
			field(&o, flags & ~F_ZERO, width, "", 0, 0, &c, 1);
			break;
		}
		case 's': case 'm': {
			const char *str;

			if (len != LEN_NONE) {
				bad = EINVAL;   /* %ls: a wide string */
				break;
			}
			if (*p == 'm') {
				str = strerror(saved_errno);
			} else {
				str = va_arg(args, const char *);
				if (str == NULL) {
					str = "(null)";
				}
			}
			field(&o, flags & ~F_ZERO, width, "", 0, 0, str,
			      prec >= 0 ? strnlen(str, (size_t)prec) : strlen(str));
			break;
		}
		case 'f': case 'F':
			if (len != LEN_NONE && len != LEN_L) {
				bad = EINVAL;   /* %Lf: long double */
				break;
			}
			fixed(&o, flags, width, prec, va_arg(args, double), *p == 'F');
			break;
		case 'n':
			/* Not ours (the format strings of picomail are literals the
			 * compiler checks), but musl's syslog takes its header's
			 * length this way. */
			switch (len) {
			case LEN_HH: *va_arg(args, signed char *) = (signed char)o.total; break;
			case LEN_H:  *va_arg(args, short *) = (short)o.total; break;
			case LEN_L:  *va_arg(args, long *) = (long)o.total; break;
			case LEN_LL: *va_arg(args, long long *) = (long long)o.total; break;
			case LEN_J:  *va_arg(args, intmax_t *) = (intmax_t)o.total; break;
			case LEN_Z:  *va_arg(args, ssize_t *) = (ssize_t)o.total; break;
			case LEN_T:  *va_arg(args, ptrdiff_t *) = (ptrdiff_t)o.total; break;
			default:     *va_arg(args, int *) = (int)o.total; break;
			}
			break;
		default:
			bad = EINVAL;   /* %e %g %a, L, an unknown letter, the end */
			break;
		}
		if (!bad) {
			p++;
		}
	}
	va_end(args);
	flush(&o);
	if (bad != 0) {
		errno = bad;
		return -1;
	}
	if (o.overflow) {
		errno = EOVERFLOW;
		return -1;
	}
	if (o.failed) {
		return -1;
	}
	return (int)o.total;
}
