/* pool.h - fixed-size object pools carved once at start-up.
 *
 * pool_init takes all the memory a pool will ever use; pool_take and
 * pool_give never allocate.  An empty pool is a normal condition that the
 * caller answers ("421 4.3.2 too busy").
 *
 * The memory is a private anonymous mapping, written only as objects are
 * used: objects never taken are zero pages that cost no RSS, and the free
 * list is written only by pool_give.  What that reserves depends on the
 * kernel's overcommit policy (vm.overcommit_memory): with 2 (strict) the
 * whole mapping is charged to the commit limit at start-up, so a pool that
 * fits is there for good and one that does not stops the start; with 0
 * (the default heuristic) or 1 nothing is set aside, and a page is found
 * when an object is first written, as for any malloc'd memory.  Touching
 * every page at start-up (or MAP_POPULATE) would reserve under every
 * policy, but keep all of it resident from the first second.
 */
#ifndef PICOMAIL_POOL_H
#define PICOMAIL_POOL_H

#include <stddef.h>

struct pool {
	const char *name;
	unsigned char *mem;
	size_t objsize;
	size_t maplen;        /* bytes mapped at mem: the objects, then the free list */
	unsigned size;
	unsigned used;
	unsigned *freelist;   /* indices given back, a stack */
	unsigned nfree;
	unsigned fresh;       /* objects fresh..size-1 were never taken */
};

/* Allocates n objects of objsize bytes (start-up only).  0 or -1. */
int pool_init(struct pool *p, const char *name, size_t objsize, unsigned n);

/* An object (zero the first time it is taken; not zeroed when taken
 * again: a connection's buffers stay untouched, and out of the RSS, until
 * used), or NULL when every object is in use. */
void *pool_take(struct pool *p);

/* Returns obj (taken from p) to the pool. */
void pool_give(struct pool *p, void *obj);

/* Start-up only: n zeroed bytes from anonymous pages, which cost no RSS
 * until written.  NULL on failure.  Never freed. */
void *pool_zalloc(size_t n);

/* Releases the pool's memory (tests and exit only). */
void pool_free(struct pool *p);

#endif
