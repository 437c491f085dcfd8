/* testalloc.c - the test build's counting allocator.
 *
 * Linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc so that every
 * allocation, ours or libc's, is counted; "picomail status" reports the
 * count, and the tests check that it does not move in steady state. */
#include <stddef.h>
#include <stdint.h>

uint64_t testalloc_count;

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);

void *__wrap_malloc(size_t n)
{
	testalloc_count++;
	return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t m)
{
	testalloc_count++;
	return __real_calloc(n, m);
}

void *__wrap_realloc(void *p, size_t n)
{
	testalloc_count++;
	return __real_realloc(p, n);
}
