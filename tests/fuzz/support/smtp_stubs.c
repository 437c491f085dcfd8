/* smtp_stubs.c - the Maildir, queue and quota as the SMTP session
 * harness sees them: no files, but every call checked against the
 * contract a real one relies on (a message is begun once, written only
 * while open, committed once), and every envelope checked for bytes that
 * could break its one-record-a-line format. */
#include "fuzz.h"
#include "maildir.h"
#include "queue.h"
#include "quota.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int fuzz_fail_begin, fuzz_fail_write, fuzz_fail_commit;

#define FAKE_FD 1000000   /* never a real descriptor: nothing may use it */

static struct maildir_msg *pending;

static int open_msg(struct maildir_msg *m, const char *what)
{
	static unsigned counter;

	if (m->fd >= 0) {
		fuzz_fail("%s on a message that is already open", what);
	}
	if (fuzz_fail_begin) {
		errno = fuzz_fail_begin;
		return -1;
	}
	m->fd = FAKE_FD;
	m->err = 0;
	m->size = 0;
	m->lines = 0;
	m->wlen = 0;
	m->next = NULL;
	snprintf(m->name, sizeof m->name, "1700000000.M%uP1.fuzz", ++counter);
	snprintf(m->tmp, sizeof m->tmp, "/nonexistent/tmp/%s", m->name);
	return 0;
}

int maildir_begin(struct maildir_msg *m, int named)
{
	(void)named;
	if (m->nusers == 0 || m->nusers > MAILDIR_RCPT_MAX) {
		fuzz_fail("maildir_begin with %u users", m->nusers);
	}
	return open_msg(m, "maildir_begin");
}

void maildir_write(struct maildir_msg *m, const void *buf, size_t n)
{
	const unsigned char *p = buf;
	size_t i;

	if (m->fd != FAKE_FD) {
		fuzz_fail("maildir_write on a message that is not open");
	}
	if (m->err != 0) {
		return;
	}
	if (fuzz_fail_write && m->size + n > 512) {
		m->err = fuzz_fail_write;
		return;
	}
	m->size += n;
	for (i = 0; i < n; i++) {
		m->lines += p[i] == '\n';
	}
}

int maildir_flush(struct maildir_msg *m)
{
	if (m->fd != FAKE_FD) {
		fuzz_fail("maildir_flush on a message that is not open");
	}
	return m->err;
}

/* 1 if m waits in the commit queue. */
static int is_pending(const struct maildir_msg *m)
{
	const struct maildir_msg *p;

	for (p = pending; p != NULL; p = p->next) {
		if (p == m) {
			return 1;
		}
	}
	return 0;
}

void maildir_abort(struct maildir_msg *m)
{
	if (is_pending(m)) {
		fuzz_fail("maildir_abort of a message in the commit queue: the commit owns it");
	}
	m->fd = -1;
	m->tmp[0] = '\0';
}

void maildir_commit(struct maildir_msg *m, maildir_done_fn done, void *ctx)
{
	if (m->fd != FAKE_FD) {
		fuzz_fail("maildir_commit of a message that is not open");
	}
	if (m->nusers == 0) {
		fuzz_fail("maildir_commit with no users");
	}
	m->done = done;
	m->ctx = ctx;
	m->next = pending;
	pending = m;
}

int maildir_commit_pending(void)
{
	return pending != NULL;
}

/* As the real one with nothing in flight: after the round, each waiting
 * session hears back. */
void maildir_commit_run(int block)
{
	struct maildir_msg *m;

	(void)block;
	while ((m = pending) != NULL) {
		pending = m->next;
		m->fd = -1;
		m->tmp[0] = '\0';
		m->done(m->ctx, fuzz_fail_commit);
	}
}

int queue_open(struct maildir_msg *m, const char *spool)
{
	(void)spool;
	return open_msg(m, "queue_open");
}

/* An address that would break its envelope line (or a later SMTP
 * command) must never reach the queue. */
static void check_addr(const char *what, const char *a, size_t size, int empty_ok)
{
	size_t i, len = strnlen(a, size);

	if (len == size) {
		fuzz_fail("%s is not terminated", what);
	}
	if (len == 0 && !empty_ok) {
		fuzz_fail("%s is empty", what);
	}
	for (i = 0; i < len; i++) {
		/* A quoted local part may hold spaces; nothing else unprintable. */
		if ((unsigned char)a[i] < ' ' || (unsigned char)a[i] >= 0x7f) {
			fuzz_fail("%s '%s' holds byte 0x%02x", what, a, (unsigned char)a[i]);
		}
	}
}

/* The checks of an envelope handed to the queue with m. */
static void check_env(const char *what, const struct maildir_msg *m, const struct queue_env *env)
{
	unsigned i;

	if (m->fd != FAKE_FD) {
		fuzz_fail("%s of a message that is not open", what);
	}
	if (strcmp(env->id, m->name) != 0) {
		fuzz_fail("%s: envelope id '%s' for message '%s'", what, env->id, m->name);
	}
	if (env->nrcpt == 0 || env->nrcpt > QUEUE_RCPT_MAX) {
		fuzz_fail("%s with %u recipients", what, env->nrcpt);
	}
	check_addr("the sender", env->sender, sizeof env->sender, 1);
	check_addr("the queue id", env->id, sizeof env->id, 0);
	for (i = 0; i < env->nrcpt; i++) {
		check_addr("a recipient", env->rcpt[i].addr, sizeof env->rcpt[i].addr, 0);
		if (env->rcpt[i].state != 'P' || strchr("LR", env->rcpt[i].kind) == NULL) {
			fuzz_fail("recipient %u has state %c kind %c", i, env->rcpt[i].state,
			          env->rcpt[i].kind);
		}
	}
}

int queue_commit(struct maildir_msg *m, const char *spool, const struct queue_env *env)
{
	(void)spool;
	check_env("queue_commit", m, env);
	m->fd = -1;
	m->tmp[0] = '\0';
	return fuzz_fail_commit;
}

/* As maildir_commit: the session hears back in maildir_commit_run. */
void queue_commit_async(struct maildir_msg *m, const char *spool, const struct queue_env *env,
                        maildir_done_fn done, void *ctx)
{
	(void)spool;
	check_env("queue_commit_async", m, env);
	if (is_pending(m)) {
		fuzz_fail("queue_commit_async of a message already in the commit queue");
	}
	m->done = done;
	m->ctx = ctx;
	m->next = pending;
	pending = m;
}

void queue_added(const char *id)
{
	(void)id;
}

unsigned queue_length(void)
{
	return 0;
}

uint64_t queue_bytes(void)
{
	return 0;
}

/* No Maildir on disk: a mailbox holds nothing, so only the limit and the
 * new message count. */
int quota_exceeded(const char *root, const char *user, uint64_t limit, uint64_t octets)
{
	(void)root;
	(void)user;
	return limit != 0 && (octets == 0 ? 0 : octets > limit);
}

void quota_delivered(const char *root, const char *user, uint64_t octets)
{
	(void)root;
	(void)user;
	(void)octets;
}
