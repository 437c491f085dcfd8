/* pool.h - fixed-size object pools carved once at start-up.
 *
 * pool_init takes all the memory a pool will ever use; pool_take and
 * pool_give never allocate.  An empty pool is a normal condition that the
 * caller answers ("421 4.3.2 too busy").
 */
#ifndef PICOMAIL_POOL_H
#define PICOMAIL_POOL_H

#include <stddef.h>

struct pool {
	const char *name;
	unsigned char *mem;
	size_t objsize;
	unsigned size;
	unsigned used;
	unsigned *freelist;   /* indices of free objects, a stack */
	unsigned nfree;
};

/* Allocates n objects of objsize bytes (start-up only).  0 or -1. */
int pool_init(struct pool *p, const char *name, size_t objsize, unsigned n);

/* An object (not zeroed: a connection's buffers stay untouched, and out
 * of the RSS, until used), or NULL when every object is in use. */
void *pool_take(struct pool *p);

/* Returns obj (taken from p) to the pool. */
void pool_give(struct pool *p, void *obj);

/* Start-up only: n zeroed bytes from anonymous pages, which cost no RSS
 * until written.  NULL on failure.  Never freed. */
void *pool_zalloc(size_t n);

/* Releases the pool's memory (tests and exit only). */
void pool_free(struct pool *p);

#endif
