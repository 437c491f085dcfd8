/* test_pool.c - pool.c: take until empty, give back, alignment, sizes that
 * overflow, and misuse that must abort (checked in a child process). */
#include "check.h"
#include "../../src/pool.h"

#include <fcntl.h>
#include <signal.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void test_basic(void)
{
	struct pool p;
	unsigned char *a, *b, *c;

	CHECK_INT(pool_init(&p, "basic", 10, 3), 0);
	CHECK_STR(p.name, "basic");
	CHECK_INT(p.size, 3);
	CHECK_INT(p.used, 0);
	CHECK(p.objsize >= 10);
	CHECK_INT(p.objsize % alignof(max_align_t), 0);
	a = pool_take(&p);
	b = pool_take(&p);
	c = pool_take(&p);
	CHECK(a != NULL && b != NULL && c != NULL);
	CHECK(a != b && b != c && a != c);
	CHECK_INT(p.used, 3);
	CHECK(pool_take(&p) == NULL);
	CHECK_INT(p.used, 3);
	/* Every byte of every object is usable (ASan watches the edges). */
	memset(a, 'a', 10);
	memset(b, 'b', 10);
	memset(c, 'c', 10);
	CHECK(a[9] == 'a' && b[0] == 'b' && c[9] == 'c');
	CHECK_INT((uintptr_t)a % alignof(max_align_t), 0);
	CHECK_INT((uintptr_t)b % alignof(max_align_t), 0);

	/* The last given is the next taken: warm in the cache. */
	pool_give(&p, b);
	CHECK_INT(p.used, 2);
	CHECK(pool_take(&p) == b);
	pool_give(&p, a);
	pool_give(&p, b);
	pool_give(&p, c);
	CHECK_INT(p.used, 0);
	CHECK_INT(p.nfree, 3);
	pool_give(&p, NULL);   /* like free(NULL) */
	CHECK_INT(p.used, 0);
	pool_free(&p);
	CHECK(p.mem == NULL);
	CHECK(pool_take(&p) == NULL);
}

static void test_many(void)
{
	enum { N = 1000 };
	static void *objs[N];
	static unsigned char seen[N];
	struct pool p;
	unsigned i, j, tmp;

	CHECK_INT(pool_init(&p, "many", sizeof(unsigned) * 3, N), 0);
	for (i = 0; i < N; i++) {
		objs[i] = pool_take(&p);
		if (objs[i] == NULL) {
			break;
		}
		memcpy(objs[i], &i, sizeof i);
	}
	if (!CHECK_INT(i, N)) {
		return;
	}
	CHECK(pool_take(&p) == NULL);
	CHECK_INT(p.used, N);
	/* No two objects overlap: each still holds its own number. */
	for (j = 0, i = 0; i < N; i++) {
		memcpy(&tmp, objs[i], sizeof tmp);
		j += tmp == i;
	}
	CHECK_INT(j, N);
	/* Give back in a scrambled order, take all again: the same set. */
	srand(7);
	for (i = N - 1; i > 0; i--) {
		void *t;

		j = (unsigned)rand() % (i + 1);
		t = objs[i];
		objs[i] = objs[j];
		objs[j] = t;
	}
	for (i = 0; i < N; i++) {
		pool_give(&p, objs[i]);
	}
	CHECK_INT(p.used, 0);
	for (i = 0; i < N; i++) {
		unsigned char *o = pool_take(&p);
		size_t off;

		if (o == NULL) {
			break;
		}
		off = (size_t)(o - p.mem);
		if (off % p.objsize != 0 || off / p.objsize >= N) {
			break;
		}
		seen[off / p.objsize]++;
	}
	CHECK_INT(i, N);   /* all taken again, each at an object's start */
	for (j = 0, i = 0; i < N; i++) {
		j += seen[i] == 1;
	}
	CHECK_INT(j, N);   /* each object exactly once */
	pool_free(&p);
}

static void test_sizes(void)
{
	struct pool p;

	/* An empty pool (tls_sessions 0) is valid and always busy. */
	CHECK_INT(pool_init(&p, "empty", 64, 0), 0);
	CHECK(pool_take(&p) == NULL);
	CHECK_INT(p.size, 0);
	pool_free(&p);

	CHECK_INT(pool_init(&p, "zero", 0, 4), -1);
	CHECK(p.mem == NULL);
	CHECK_INT(pool_init(&p, "huge", SIZE_MAX / 2, 4), -1);
	CHECK(p.mem == NULL);
	CHECK_INT(pool_init(&p, "huge", SIZE_MAX, 1), -1);
	CHECK(p.mem == NULL);
	CHECK_INT(pool_init(&p, "huge", SIZE_MAX / 4 + 1, 4), -1);
	CHECK(p.mem == NULL);

	CHECK_INT(pool_init(&p, "one", 1, 1), 0);
	CHECK(pool_take(&p) != NULL);
	CHECK(pool_take(&p) == NULL);
	pool_free(&p);
}

/* What each child does to its pool; each must end in abort(). */
enum misuse { OUTSIDE, INSIDE, TWICE, FOREIGN, EMPTY_POOL };

static void misuse(enum misuse m)
{
	static struct pool p, q;
	unsigned char *a, *b, local = 0;

	if (pool_init(&p, "misuse", 32, 4) < 0 || pool_init(&q, "other", 32, 4) < 0) {
		_exit(3);
	}
	a = pool_take(&p);
	b = pool_take(&q);
	switch (m) {
	case OUTSIDE:
		pool_give(&p, &local);
		break;
	case INSIDE:
		pool_give(&p, a + 1);
		break;
	case TWICE:
		/* With another object out, the free list has room for the
		 * second give: only the double-give check can catch it. */
		(void)pool_take(&p);
		pool_give(&p, a);
		pool_give(&p, a);
		break;
	case FOREIGN:
		pool_give(&p, b);
		break;
	case EMPTY_POOL:
		pool_free(&p);
		pool_give(&p, a);
		break;
	}
	_exit(0);   /* not reached when pool.c does its job */
}

static int died_of_abort(enum misuse m)
{
	pid_t pid;
	int status;

	(void)fflush(stdout);
	pid = fork();
	if (pid < 0) {
		return 0;
	}
	if (pid == 0) {
		/* The message is expected: keep it out of the test output. */
		int fd = open("/dev/null", O_WRONLY);

		if (fd >= 0) {
			(void)dup2(fd, 2);
		}
		misuse(m);
	}
	if (waitpid(pid, &status, 0) != pid) {
		return 0;
	}
	return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static void test_misuse(void)
{
	check_row = "pointer outside the pool";
	CHECK(died_of_abort(OUTSIDE));
	check_row = "pointer inside an object";
	CHECK(died_of_abort(INSIDE));
	check_row = "double give";
	CHECK(died_of_abort(TWICE));
	check_row = "object of another pool";
	CHECK(died_of_abort(FOREIGN));
	check_row = "give to a freed pool";
	CHECK(died_of_abort(EMPTY_POOL));
	check_row = NULL;
}

int main(void)
{
	test_basic();
	test_many();
	test_sizes();
	test_misuse();
	return check_done("test_pool");
}
