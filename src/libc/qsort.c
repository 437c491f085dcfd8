/* qsort.c - qsort for the static musl build: heapsort, in place, no
 * recursion, O(n log n) however the input comes (a mailbox an attacker
 * filled included).  musl's smoothsort is 2 KB for picomail's one sort, a
 * POP3 mailbox's messages by time.  See vfprintf.c for why only this
 * build links it; tests/unit/test_qsort.c holds it to the C library's. */
#include <stddef.h>
#include <stdlib.h>

static void swap(char *a, char *b, size_t width)
{
	char t;

	while (width-- > 0) {
		t = *a;
		*a++ = *b;
		*b++ = t;
	}
}

/* Moves the element at root down until the heap of the first n holds. */
static void sift(char *base, size_t root, size_t n, size_t width,
                 int (*cmp)(const void *, const void *))
{
	size_t child;

	while ((child = 2 * root + 1) < n) {
		if (child + 1 < n && cmp(base + child * width, base + (child + 1) * width) < 0) {
			child++;
		}
		if (cmp(base + root * width, base + child * width) >= 0) {
			return;
		}
		swap(base + root * width, base + child * width, width);
		root = child;
	}
}

void qsort(void *b, size_t n, size_t width, int (*cmp)(const void *, const void *))
{
	char *base = b;
	size_t i;

	if (n < 2 || width == 0) {
		return;
	}
	for (i = n / 2; i-- > 0;) {
		sift(base, i, n, width, cmp);
	}
	for (i = n - 1; i > 0; i--) {
		swap(base, base + i * width, width);
		sift(base, 0, i, width, cmp);
	}
}
