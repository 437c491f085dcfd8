/* pool.c - fixed-size object pools carved once at start-up.
 *
 * One mapping per pool holds the objects followed by the free list, a
 * stack of the indices given back.  Objects are handed out in order the
 * first time (fresh), then from the free list, the last given first (warm
 * in the cache and resident already).  Taking and giving are O(1), except
 * for the double-give check (see pool_give).  Nothing is written at
 * pool_init, so the pool costs no RSS until it is used (pool.h).
 */
#include "pool.h"

#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* A programming error, not a run-time condition: carrying on with a
 * corrupt free list would hand one object to two connections. */
_Noreturn static void pool_abort(const struct pool *p, const char *what, const void *obj)
{
	(void)fprintf(stderr, "pool %s: %s %p\n", p->name != NULL ? p->name : "?", what, obj);
	abort();
}

int pool_init(struct pool *p, const char *name, size_t objsize, unsigned n)
{
	const size_t align = alignof(max_align_t);
	size_t stride, objbytes, total;

	memset(p, 0, sizeof *p);
	p->name = name;
	if (objsize == 0 || objsize > SIZE_MAX - align) {
		return -1;
	}
	/* Every object starts on a boundary fit for any type. */
	stride = (objsize + align - 1) / align * align;
	p->objsize = stride;
	if (n == 0) {
		return 0;   /* e.g. tls_sessions 0: every take answers "busy" */
	}
	if (stride > SIZE_MAX / n) {
		return -1;
	}
	objbytes = stride * n;
	if ((size_t)n > (SIZE_MAX - objbytes) / sizeof(unsigned)) {
		return -1;
	}
	total = objbytes + (size_t)n * sizeof(unsigned);
	/* Start-up only, the one allocation of this pool: zero pages, so an
	 * object never holds a previous process's bytes. */
	p->mem = pool_zalloc(total);
	if (p->mem == NULL) {
		return -1;
	}
	p->maplen = total;
	/* objbytes is a multiple of max_align_t, so the list is aligned. */
	p->freelist = (unsigned *)(void *)(p->mem + objbytes);
	p->size = n;
	return 0;
}

void *pool_take(struct pool *p)
{
	unsigned idx;

	if (p->nfree > 0) {
		idx = p->freelist[--p->nfree];
	} else if (p->fresh < p->size) {
		idx = p->fresh++;
	} else {
		return NULL;
	}
	p->used++;
	return p->mem + (size_t)idx * p->objsize;
}

void pool_give(struct pool *p, void *obj)
{
	uintptr_t base = (uintptr_t)p->mem, addr = (uintptr_t)obj;
	size_t off;
	unsigned idx, i;

	/* Like free(NULL): lets one exit path release whatever it holds. */
	if (obj == NULL) {
		return;
	}
	if (p->mem == NULL || addr < base || addr - base >= (uintptr_t)p->size * p->objsize) {
		pool_abort(p, "object not from this pool:", obj);
	}
	off = (size_t)(addr - base);
	if (off % p->objsize != 0) {
		pool_abort(p, "pointer inside an object:", obj);
	}
	idx = (unsigned)(off / p->objsize);
	if (idx >= p->fresh) {
		pool_abort(p, "object never taken:", obj);
	}
	/* A double give would put one object on the list twice.  The scan is
	 * at most max_connections compares, once per closed session. */
	for (i = 0; i < p->nfree; i++) {
		if (p->freelist[i] == idx) {
			pool_abort(p, "object given back twice:", obj);
		}
	}
	if (p->nfree >= p->size) {
		pool_abort(p, "free list overflow:", obj);
	}
	p->freelist[p->nfree++] = idx;
	p->used--;
}

void *pool_zalloc(size_t n)
{
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

void pool_free(struct pool *p)
{
	if (p->mem != NULL) {
		munmap(p->mem, p->maplen);
	}
	memset(p, 0, sizeof *p);
}
