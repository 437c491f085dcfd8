/* maildir.c - durable delivery into <root>/<user>/{tmp,new,cur}.
 *
 * The sequence for one batch (DESIGN.md, durability):
 *   write tmp/<name> -> fsync it -> link into new/ of every user ->
 *   unlink tmp/<name> -> fsync every touched new/ once -> report.
 * A failure at any step removes what the message left in new/ and tmp/,
 * and the session answers 4xx.
 */
#include "maildir.h"
#include "io.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define BATCH_DIRS_MAX 64

static char root[MAILDIR_PATH_MAX] = "/var/mail";
static char host[128] = "localhost";
static unsigned long counter;
static int pid;   /* for unique names; one getpid() instead of one a message */
static struct maildir_msg *pending_head, **pending_tail = &pending_head;

void maildir_setup(const char *r, const char *hostname)
{
	size_t i;

	snprintf(root, sizeof root, "%s", r);
	pid = (int)getpid();
	snprintf(host, sizeof host, "%s", hostname);
	/* '/' and ':' would break the name (path, info separator). */
	for (i = 0; host[i] != '\0'; i++) {
		if (host[i] == '/' || host[i] == ':') {
			host[i] = '_';
		}
	}
}

static int user_path(char *out, size_t len, const char *user, const char *sub)
{
	int n = snprintf(out, len, "%s/%s%s%s", root, user, sub ? "/" : "", sub ? sub : "");

	if (n < 0 || (size_t)n >= len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* Creates <root>/<user>/{tmp,new,cur}, syncing each parent it changed so
 * that a new mailbox survives a power cut together with its first mail. */
static int make_maildir(const char *user)
{
	/* tmp/ last: a tmp/ that exists says new/ and cur/ do too. */
	static const char *const subs[] = { "new", "cur", "tmp" };
	char path[MAILDIR_PATH_MAX];
	unsigned i;

	if (io_mkdirs(root, 0700) < 0) {
		return -1;
	}
	if (user_path(path, sizeof path, user, NULL) < 0) {
		return -1;
	}
	if (io_mkdir(path, 0700) == 0) {
		if (io_fsync_dir(root) < 0) {
			return -1;
		}
	} else if (errno != EEXIST) {
		return -1;
	}
	for (i = 0; i < 3; i++) {
		if (user_path(path, sizeof path, user, subs[i]) < 0) {
			return -1;
		}
		if (io_mkdir(path, 0700) < 0 && errno != EEXIST) {
			return -1;
		}
	}
	if (user_path(path, sizeof path, user, NULL) < 0) {
		return -1;
	}
	return io_fsync_dir(path);
}

static void unique_name(char *out, size_t len)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	/* Dovecot's form: seconds, microseconds, pid, a counter, host. */
	snprintf(out, len, "%lld.M%ldP%dQ%lu.%s", (long long)tv.tv_sec, (long)tv.tv_usec,
	         pid, ++counter, host);
}

static void flush_wbuf(struct maildir_msg *m);

static void msg_reset(struct maildir_msg *m)
{
	m->fd = -1;
	m->err = 0;
	m->size = m->lines = 0;
	m->wlen = 0;
	m->next = NULL;
}

int maildir_begin(struct maildir_msg *m)
{
	char dir[MAILDIR_PATH_MAX];
	int tries;

	msg_reset(m);
	unique_name(m->name, sizeof m->name);
	if (user_path(dir, sizeof dir, m->users[0], "tmp") < 0) {
		return -1;
	}
	if (snprintf(m->tmp, sizeof m->tmp, "%s/%s", dir, m->name) >= (int)sizeof m->tmp) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (tries = 0; tries < 2; tries++) {
		m->fd = io_open(m->tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
		if (m->fd >= 0) {
			return 0;
		}
		if (errno != ENOENT || make_maildir(m->users[0]) < 0) {
			return -1;
		}
	}
	return -1;
}

int maildir_begin_named(struct maildir_msg *m, const char *dir, const char *name)
{
	msg_reset(m);
	snprintf(m->name, sizeof m->name, "%s", name);
	if (snprintf(m->tmp, sizeof m->tmp, "%s/%s", dir, name) >= (int)sizeof m->tmp) {
		errno = ENAMETOOLONG;
		return -1;
	}
	m->fd = io_open(m->tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
	return m->fd < 0 ? -1 : 0;
}

int maildir_finish_file(struct maildir_msg *m)
{
	int e;

	flush_wbuf(m);
	e = m->err;
	if (e == 0 && io_fsync(m->fd) < 0) {
		e = errno ? errno : EIO;
	}
	if (io_close(m->fd) < 0 && e == 0) {
		e = errno ? errno : EIO;
	}
	m->fd = -1;
	return e;
}

static void flush_wbuf(struct maildir_msg *m)
{
	if (m->wlen > 0 && m->err == 0 && io_write_all(m->fd, m->wbuf, m->wlen) < 0) {
		m->err = errno ? errno : EIO;
	}
	m->wlen = 0;
}

int maildir_flush(struct maildir_msg *m)
{
	flush_wbuf(m);
	return m->err;
}

void maildir_write(struct maildir_msg *m, const void *buf, size_t n)
{
	const unsigned char *p = buf;
	size_t i, k;

	for (i = 0; i < n; i++) {
		if (p[i] == '\n') {
			m->lines++;
		}
	}
	m->size += n;
	while (n > 0) {
		if (m->wlen == sizeof m->wbuf) {
			flush_wbuf(m);
		}
		k = sizeof m->wbuf - m->wlen;
		if (k > n) {
			k = n;
		}
		memcpy(m->wbuf + m->wlen, p, k);
		m->wlen += k;
		p += k;
		n -= k;
	}
}

void maildir_abort(struct maildir_msg *m)
{
	if (m->fd >= 0) {
		(void)io_close(m->fd);
		m->fd = -1;
	}
	if (m->tmp[0] != '\0' && io_unlink(m->tmp) < 0 && errno != ENOENT) {
		log_msg(LOG_WARNING, "cannot remove %s: %m", m->tmp);
	}
	m->tmp[0] = '\0';
}

int maildir_final_name(const struct maildir_msg *m, char *out, size_t len)
{
	int n = snprintf(out, len, "%s,S=%llu,W=%llu", m->name, (unsigned long long)m->size,
	                 (unsigned long long)(m->size + m->lines));

	return n < 0 || (size_t)n >= len ? -1 : 0;
}

void maildir_commit(struct maildir_msg *m, maildir_done_fn done, void *ctx)
{
	m->done = done;
	m->ctx = ctx;
	m->next = NULL;
	flush_wbuf(m);
	if (m->err == 0) {
		/* Start the write-back now, so that the batch's fsyncs find
		 * the data already on its way and share journal commits. */
		(void)sync_file_range(m->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	}
	*pending_tail = m;
	pending_tail = &m->next;
}

/* Removes the links made so far into new/ (users 0..n-1). */
static void unlink_new(const struct maildir_msg *m, unsigned n, const char *final)
{
	char path[MAILDIR_PATH_MAX];
	unsigned i;

	for (i = 0; i < n; i++) {
		if (snprintf(path, sizeof path, "%s/%s/new/%s", root, m->users[i], final) <
		    (int)sizeof path) {
			(void)unlink(path);
		}
	}
}

/* Puts the synced file into every user's new/: hard links for the other
 * users first, then a rename for the first, so a single recipient costs
 * one directory operation and no tmp/ name is left behind.  0 or errno;
 * on failure nothing of it stays in any new/ (the tmp/ file does). */
static int publish(struct maildir_msg *m, char *final, size_t finallen)
{
	char path[MAILDIR_PATH_MAX];
	unsigned i;
	int n, e;

	if (maildir_final_name(m, final, finallen) < 0) {
		return ENAMETOOLONG;
	}
	for (i = 1; i <= m->nusers; i++) {
		unsigned u = i % m->nusers;   /* users 1..n-1, then 0 */

		n = snprintf(path, sizeof path, "%s/%s/new/%s", root, m->users[u], final);
		if (n < 0 || (size_t)n >= sizeof path) {
			e = ENAMETOOLONG;
			goto undo;
		}
		if (u == 0) {
			if (io_rename(m->tmp, path) < 0 &&
			    (errno != ENOENT || make_maildir(m->users[0]) < 0 ||
			     io_rename(m->tmp, path) < 0)) {
				e = errno ? errno : EIO;
				goto undo;
			}
			break;
		}
		if (io_link(m->tmp, path) < 0 &&
		    (errno != ENOENT || make_maildir(m->users[u]) < 0 || io_link(m->tmp, path) < 0)) {
			e = errno ? errno : EIO;
			goto undo;
		}
	}
	m->tmp[0] = '\0';   /* renamed away */
	return 0;
undo:
	unlink_new(m, m->nusers, final);
	return e;
}

/* The new/ directories synced in this batch, each once, with the result. */
struct dirset {
	unsigned n;
	char user[BATCH_DIRS_MAX][ADDR_USER_MAX + 1];
	int err[BATCH_DIRS_MAX];
};

/* fsyncs the new/ directory of every user of m, unless this batch already
 * did; 0 or errno. */
static int sync_dirs_of(const struct maildir_msg *m, struct dirset *d)
{
	char path[MAILDIR_PATH_MAX];
	unsigned i, j;
	int e;

	for (i = 0; i < m->nusers; i++) {
		for (j = 0; j < d->n && strcmp(d->user[j], m->users[i]) != 0; j++) {
		}
		if (j < d->n) {
			e = d->err[j];
		} else {
			e = 0;
			if (user_path(path, sizeof path, m->users[i], "new") < 0 ||
			    io_fsync_dir(path) < 0) {
				e = errno ? errno : EIO;
			}
			if (d->n < BATCH_DIRS_MAX) {
				snprintf(d->user[d->n], sizeof d->user[0], "%s", m->users[i]);
				d->err[d->n++] = e;
			}
		}
		if (e != 0) {
			return e;
		}
	}
	return 0;
}

/* Step 1 for one message: sync and close its file; 0 or errno. */
static int sync_file(struct maildir_msg *m)
{
	int e = m->err;

	if (e == 0 && io_fsync(m->fd) < 0) {
		e = errno ? errno : EIO;
	}
	if (io_close(m->fd) < 0 && e == 0) {
		e = errno ? errno : EIO;
	}
	m->fd = -1;
	return e;
}

/* Makes the batch's files durable and closes them, setting m->err.
 *
 * One message: fsync.  Several: each file's data is written and waited
 * for (errors are reported per file), then one syncfs() persists all their
 * inodes with a single device flush instead of one flush per file: the
 * group commit's main saving.  syncfs reports write-back errors since
 * Linux 5.8; the per-file data waits catch data errors before that. */
static void sync_files(struct maildir_msg *batch)
{
	struct maildir_msg *m;
	int first = -1, e = 0, n = 0;

	for (m = batch; m != NULL; m = m->next) {
		n += m->err == 0;
	}
	if (n < 2) {
		for (m = batch; m != NULL; m = m->next) {
			m->err = sync_file(m);
		}
		return;
	}
	for (m = batch; m != NULL; m = m->next) {
		if (m->err == 0 && io_sync_data(m->fd) < 0) {
			m->err = errno ? errno : EIO;
		}
		if (m->err == 0 && first < 0) {
			first = m->fd;
		}
	}
	if (first >= 0 && io_syncfs(first) < 0) {
		e = errno ? errno : EIO;
	}
	for (m = batch; m != NULL; m = m->next) {
		if (m->err == 0 && e != 0) {
			m->err = e;
		}
		if (io_close(m->fd) < 0 && m->err == 0) {
			m->err = errno ? errno : EIO;
		}
		m->fd = -1;
	}
}

/* Runs one batch: everything pending now. */
static void commit_batch(void)
{
	static struct dirset synced;
	struct maildir_msg *batch = pending_head, *m, *next;
	int e;

	pending_head = NULL;
	pending_tail = &pending_head;
	synced.n = 0;

	/* Sync every file first, then publish: new/ only ever names data
	 * that is already on disk. */
	sync_files(batch);
	for (m = batch; m != NULL; m = m->next) {
		if (m->err == 0) {
			m->err = publish(m, m->final, sizeof m->final);
		}
		if (m->err != 0) {
			(void)io_unlink(m->tmp);
		}
	}
	/* One directory sync per mailbox for the whole batch. */
	for (m = batch; m != NULL; m = m->next) {
		if (m->err != 0) {
			continue;
		}
		e = sync_dirs_of(m, &synced);
		if (e != 0) {
			m->err = e;
			/* Not known durable: take it back so a retry does not
			 * deliver twice. */
			unlink_new(m, m->nusers, m->final);
		}
	}
	for (m = batch; m != NULL; m = next) {
		next = m->next;
		m->tmp[0] = '\0';
		m->done(m->ctx, m->err);
	}
}

int maildir_commit_pending(void)
{
	return pending_head != NULL;
}

void maildir_commit_run(void)
{
	/* A session told of its commit may go straight on to the next
	 * pipelined message and queue it: run batches until none is left, or
	 * that message would wait for an unrelated wake-up. */
	while (pending_head != NULL) {
		commit_batch();
	}
}

/* Removes every file in <user>/tmp: called at start-up, before any
 * session, so nothing in tmp/ belongs to a live delivery. */
static void clean_one(const char *user)
{
	char dir[MAILDIR_PATH_MAX], path[MAILDIR_PATH_MAX * 2];
	DIR *d;
	struct dirent *e;

	if (user_path(dir, sizeof dir, user, "tmp") < 0 || (d = opendir(dir)) == NULL) {
		return;
	}
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.') {
			continue;
		}
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		if (unlink(path) == 0) {
			log_msg(LOG_NOTICE, "removed unfinished %s", path);
		}
	}
	closedir(d);
}

void maildir_clean_tmp(void)
{
	DIR *d = opendir(root);
	struct dirent *e;

	if (d == NULL) {
		return;
	}
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] != '.') {
			clean_one(e->d_name);
		}
	}
	closedir(d);
}
