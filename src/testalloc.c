/* testalloc.c - the test build's counting allocator.
 *
 * Linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc so that every
 * allocation, ours or libc's, is counted; "picomail status" reports the
 * count, and the tests check that it does not move in steady state.
 *
 * Under AddressSanitizer (build/asan, dynamically linked with glibc) the
 * count comes from the sanitizer's allocation hook instead: ASan owns
 * malloc there, and a --wrap in a dynamic link would see only our own
 * calls, not those libc makes for itself (opendir, stdio, getpwnam). */
#include <stddef.h>
#include <stdint.h>

uint64_t testalloc_count;

#if defined(__SANITIZE_ADDRESS__)
#define TESTALLOC_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TESTALLOC_ASAN 1
#endif
#endif

#ifdef TESTALLOC_ASAN
/* From <sanitizer/allocator_interface.h>, which gcc does not install. */
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));

static void count_alloc(const volatile void *p, size_t n)
{
	(void)p;
	(void)n;
	testalloc_count++;
}

static void count_free(const volatile void *p)
{
	(void)p;
}

/* Before main: start-up allocations are counted as well, like the wrap's. */
__attribute__((constructor)) static void testalloc_init(void)
{
	__sanitizer_install_malloc_and_free_hooks(count_alloc, count_free);
}
#else
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
#endif
