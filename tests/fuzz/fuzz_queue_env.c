/* fuzz_queue_env.c - queue envelope files (src/queue_file.c): a spool
 * corrupted by a crash, a full disk or a bad flash block must not crash
 * the daemon that reads it.
 *
 * Input: the envelope file.  queue_env_read either refuses it or gives an
 * envelope whose strings are terminated and whose counts fit; that
 * envelope is written back with queue_env_write and must read back the
 * same (the format has one meaning per file). */
#include "fuzz.h"
#include "queue.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define ID "0000000000000000000001"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char in_spool[300], out_spool[300];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char link_path[400], target[64];

	(void)argc;
	(void)argv;
	snprintf(in_spool, sizeof in_spool, "%s/in", fuzz_tmpdir());
	snprintf(out_spool, sizeof out_spool, "%s/out", fuzz_tmpdir());
	if (queue_make_dirs(in_spool) < 0 || queue_make_dirs(out_spool) < 0) {
		fuzz_fail("queue_make_dirs: %s", strerror(errno));
	}
	/* env/<ID> is the input itself: a link to the in-memory file. */
	fuzz_memfile((const uint8_t *)"", 0, target, sizeof target);
	snprintf(link_path, sizeof link_path, "%s/env/%s", in_spool, ID);
	if (symlink(target, link_path) < 0) {
		fuzz_fail("symlink %s: %s", link_path, strerror(errno));
	}
	return 0;
}

#define TERMINATED(f) (strnlen((f), sizeof(f)) < sizeof(f))

static void check(const struct queue_env *e)
{
	unsigned i;

	if (!TERMINATED(e->id) || !TERMINATED(e->sender) || e->nrcpt > QUEUE_RCPT_MAX) {
		fuzz_fail("envelope id, sender or count out of bounds");
	}
	for (i = 0; i < e->nrcpt; i++) {
		const struct queue_rcpt *r = &e->rcpt[i];
		size_t k;

		if (!TERMINATED(r->addr) || !TERMINATED(r->why) || strchr("PSF", r->state) == NULL ||
		    strchr("LRU", r->kind) == NULL) {
			fuzz_fail("recipient %u is malformed", i);
		}
		for (k = 0; r->why[k] != '\0'; k++) {
			if ((unsigned char)r->why[k] < ' ' || (unsigned char)r->why[k] > '~') {
				fuzz_fail("recipient %u has an unclean why", i);
			}
		}
	}
}

static void same(const struct queue_env *a, const struct queue_env *b)
{
	unsigned i;

	if (strcmp(a->id, b->id) != 0 || strcmp(a->sender, b->sender) != 0 ||
	    a->arrival != b->arrival || a->next != b->next || a->attempts != b->attempts ||
	    a->nrcpt != b->nrcpt) {
		fuzz_fail("the envelope did not read back the same");
	}
	for (i = 0; i < a->nrcpt; i++) {
		if (a->rcpt[i].state != b->rcpt[i].state || a->rcpt[i].kind != b->rcpt[i].kind ||
		    strcmp(a->rcpt[i].addr, b->rcpt[i].addr) != 0 ||
		    strcmp(a->rcpt[i].why, b->rcpt[i].why) != 0) {
			fuzz_fail("recipient %u did not read back the same", i);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct queue_env env, again;
	char path[64];
	int e;

	fuzz_memfile(data, size, path, sizeof path);
	if (queue_env_read(in_spool, ID, &env) < 0) {
		return 0;
	}
	check(&env);
	e = queue_env_write(out_spool, &env);
	if (e != 0) {
		/* Only an envelope too big for the writer's buffer may fail. */
		if (e != E2BIG) {
			fuzz_fail("queue_env_write: %s", strerror(e));
		}
		return 0;
	}
	if (queue_env_read(out_spool, ID, &again) < 0) {
		fuzz_fail("an envelope written by queue_env_write does not read back");
	}
	same(&env, &again);
	return 0;
}
