/* sessions.c - the session pool, and which objects are in use by whom. */
#include "sessions.h"
#include "pool.h"

#include <stdlib.h>

static struct pool pool;
static unsigned char *live;       /* 1 for each object in use */
static unsigned char *proto_of;   /* its protocol */

int sessions_init(unsigned n, size_t objsize)
{
	/* Start-up only, like the pool itself. */
	if (pool_init(&pool, "sessions", objsize, n) < 0 || (live = calloc(n, 1)) == NULL ||
	    (proto_of = calloc(n, 1)) == NULL) {
		return -1;
	}
	return 0;
}

static unsigned index_of(const void *obj)
{
	return (unsigned)(((const unsigned char *)obj - pool.mem) / pool.objsize);
}

void *sessions_take(enum listen_proto proto)
{
	void *obj = pool_take(&pool);

	if (obj != NULL) {
		live[index_of(obj)] = 1;
		proto_of[index_of(obj)] = (unsigned char)proto;
	}
	return obj;
}

void sessions_release(void *obj)
{
	live[index_of(obj)] = 0;
	pool_give(&pool, obj);
}

void *sessions_at(unsigned i, enum listen_proto *proto)
{
	if (i >= pool.size || !live[i]) {
		return NULL;
	}
	*proto = (enum listen_proto)proto_of[i];
	return pool.mem + (size_t)i * pool.objsize;
}

unsigned sessions_used(void)
{
	return pool.used;
}

unsigned sessions_size(void)
{
	return pool.size;
}
