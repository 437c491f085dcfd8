/* maildir.c - durable delivery into <root>/<user>/{tmp,new,cur}.
 *
 * The sequence for one batch (DESIGN.md, durability):
 *   write a file in tmp/ -> fdatasync it -> link into new/ of every user
 *   -> fsync every touched new/ once -> report.
 * The file in tmp/ has no name (O_TMPFILE) where the kernel and the file
 * system allow it: it is linked into new/ through /proc/self/fd, and a
 * crash leaves nothing behind in tmp/.  Otherwise it is tmp/<unique>,
 * renamed into the first user's new/ (hard links for the others).
 * A failure at any step removes what the message left in new/ and tmp/,
 * and the session answers 4xx.
 *
 * A message for the queue (queue_commit_async) rides in the same batches:
 *   its file in the spool's tmp/ and its envelope beside it -> fdatasync
 *   both -> rename the file into msg/ -> fsync msg/ -> rename the envelope
 *   into env/ -> fsync env/ -> report.
 * So does an envelope rewritten alone (queue_env_commit): the same steps
 * without the message file.  The steps in the spool are queue_file.c's; a
 * failure removes all of a new message, and of a rewrite its tmp/ file
 * (the envelope before it stays).
 */
#include "maildir.h"
#include "fsyncs.h"
#include "io.h"
#include "log.h"
#include "queue.h"
#include "stats.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* The new/ directories one batch syncs together: one group of syncs. */
#define BATCH_DIRS_MAX FSYNCS_RING

static char root[MAILDIR_PATH_MAX] = "/var/mail";
static char host[128] = "localhost";
static unsigned long counter;
static int pid;   /* for unique names; one getpid() instead of one a message */
static struct maildir_msg *pending_head, **pending_tail = &pending_head;
/* Files without a name: 1 while the kernel and file system take them. */
static int unnamed_ok;

void maildir_setup(const char *r, const char *hostname)
{
	size_t i;

	snprintf(root, sizeof root, "%s", r);
	pid = (int)getpid();
	snprintf(host, sizeof host, "%s", hostname);
	/* Linking an unnamed file needs /proc (linkat with AT_EMPTY_PATH
	 * needs a capability the daemon gives up). */
	unnamed_ok = access("/proc/self/fd", X_OK) == 0;
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

/* The directory holding path's last component: path cut at its last '/'. */
static int parent_of(const char *path, char *out, size_t len)
{
	const char *slash = strrchr(path, '/');
	size_t n = slash != NULL ? (size_t)(slash - path) : 0;

	if (n == 0 || n >= len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(out, path, n);
	out[n] = '\0';
	return 0;
}

int maildir_create(const char *dir)
{
	/* tmp/ last: a tmp/ that exists says new/ and cur/ do too. */
	static const char *const subs[] = { "new", "cur", "tmp" };
	char path[MAILDIR_PATH_MAX];
	unsigned i;

	if (io_mkdir(dir, 0700) == 0) {
		if (parent_of(dir, path, sizeof path) < 0 || io_fsync_dir(path) < 0) {
			return -1;
		}
	} else if (errno != EEXIST) {
		return -1;
	}
	for (i = 0; i < 3; i++) {
		if (snprintf(path, sizeof path, "%s/%s", dir, subs[i]) >= (int)sizeof path) {
			errno = ENAMETOOLONG;
			return -1;
		}
		if (io_mkdir(path, 0700) < 0 && errno != EEXIST) {
			return -1;
		}
	}
	return io_fsync_dir(dir);
}

/* Creates <root>/<user>/{tmp,new,cur}, syncing each parent it changed so
 * that a new mailbox survives a power cut together with its first mail. */
static int make_maildir(const char *user)
{
	char path[MAILDIR_PATH_MAX];

	if (io_mkdirs(root, 0700) < 0 || user_path(path, sizeof path, user, NULL) < 0) {
		return -1;
	}
	return maildir_create(path);
}

int maildir_write_file(const char *dir, const char *name, const void *buf, size_t n)
{
	char tmp[MAILDIR_PATH_MAX], dst[MAILDIR_PATH_MAX];
	int fd, tries;

	if (snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, name) >= (int)sizeof tmp ||
	    snprintf(dst, sizeof dst, "%s/%s", dir, name) >= (int)sizeof dst) {
		return ENAMETOOLONG;
	}
	/* A temporary left by a crash is the only one there can be: the
	 * daemon is one process, and writes one file at a time. */
	for (tries = 0; (fd = io_open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600)) < 0; tries++) {
		if (errno != EEXIST || tries > 0 || io_unlink(tmp) < 0) {
			return errno ? errno : EIO;
		}
	}
	return io_replace_file(fd, tmp, dst, dir, buf, n);
}

void maildir_unique_name(char *out, size_t len)
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
	m->kind = MAILDIR_DELIVERY;
	m->env_fd = -1;
}

/* Opens an unnamed file in dir: the fd, -1 with errno, or -2 when the
 * kernel or the file system has no O_TMPFILE (then never tried again). */
static int open_unnamed(const char *dir)
{
	int fd = io_open(dir, O_TMPFILE | O_WRONLY, 0600);

	if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
		log_msg(LOG_NOTICE, "%s: no unnamed files here (%m): messages are written under "
		        "names in tmp/", dir);
		unnamed_ok = 0;
		return -2;
	}
	return fd;
}

int maildir_begin(struct maildir_msg *m, int named)
{
	char dir[MAILDIR_PATH_MAX];
	int tries;

	msg_reset(m);
	maildir_unique_name(m->name, sizeof m->name);
	m->tmp[0] = '\0';
	if (user_path(dir, sizeof dir, m->users[0], "tmp") < 0) {
		return -1;
	}
	for (tries = 0; tries < 2; tries++) {
		if (!named && unnamed_ok) {
			m->fd = open_unnamed(dir);
			if (m->fd >= 0) {
				return 0;
			}
		}
		if (m->fd == -2 || named || !unnamed_ok) {
			if (snprintf(m->tmp, sizeof m->tmp, "%s/%s", dir, m->name) >= (int)sizeof m->tmp) {
				errno = ENAMETOOLONG;
				return -1;
			}
			m->fd = io_open(m->tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
			if (m->fd >= 0) {
				return 0;
			}
			m->tmp[0] = '\0';
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

/* Links the file into new/<final> of user u: through /proc/self/fd when
 * it has no name, else a hard link of its name, or (last) the rename of
 * its name into place.  Creates the Maildir if it went missing. */
static int place(struct maildir_msg *m, unsigned u, const char *path, int last)
{
	int tries, r = -1;

	for (tries = 0; tries < 2; tries++) {
		if (m->tmp[0] == '\0') {
			r = io_link_fd(m->fd, path);
		} else if (last) {
			r = io_rename(m->tmp, path);
		} else {
			r = io_link(m->tmp, path);
		}
		if (r == 0 || errno != ENOENT || tries > 0 || make_maildir(m->users[u]) < 0) {
			break;
		}
	}
	return r;
}

/* 1 if user u's mailbox comes earlier in publish's order (1..n-1, then
 * 0) under another index. */
static int linked_before(const struct maildir_msg *m, unsigned u)
{
	unsigned j, end = u == 0 ? m->nusers : u;

	for (j = 1; j < end; j++) {
		if (strcmp(m->users[j], m->users[u]) == 0) {
			return 1;
		}
	}
	return 0;
}

/* Puts the synced file into every user's new/: the other users first,
 * the first user last, where a named file is renamed, so that a single
 * recipient costs one directory operation and no tmp/ name is left
 * behind.  0 or errno; on failure nothing of it stays in any new/ (a
 * named tmp/ file does). */
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

		if (linked_before(m, u)) {
			/* Two addresses of one mailbox (alice and an alias of
			 * hers): one copy.  A name in tmp/ still has to go. */
			if (u == 0 && m->tmp[0] != '\0' && io_unlink(m->tmp) < 0 && errno != ENOENT) {
				log_msg(LOG_WARNING, "cannot remove %s: %m", m->tmp);
			}
			continue;
		}
		n = snprintf(path, sizeof path, "%s/%s/new/%s", root, m->users[u], final);
		if (n < 0 || (size_t)n >= sizeof path) {
			e = ENAMETOOLONG;
			goto undo;
		}
		if (place(m, u, path, u == 0) < 0) {
			e = errno ? errno : EIO;
			goto undo;
		}
	}
	m->tmp[0] = '\0';   /* renamed away, or never named */
	return 0;
undo:
	unlink_new(m, m->nusers, final);
	return e;
}

/* The directories one stage of a batch syncs, each once, with the result:
 * new/ of the users, the spool's msg/, or its env/. */
struct dirset {
	unsigned n;
	char path[BATCH_DIRS_MAX][MAILDIR_PATH_MAX];
	int fd[BATCH_DIRS_MAX];    /* open for the sync, or -1 */
	int err[BATCH_DIRS_MAX];
};

/* The batch being committed; one at a time, while the next one gathers
 * in the pending list.  Its stages, each of which waits for the ring
 * (fsyncs.c) while the loop serves the sessions:
 *   STAGE_FILES  the files' fdatasyncs are in flight (a queued message's
 *                envelope beside its message, or alone);
 *   STAGE_DIRS   the files are linked into new/ (a queued message renamed
 *                into msg/), and the fsyncs of those directories are in
 *                flight;
 *   STAGE_ENVS   the queue's envelopes are renamed into env/, now that
 *                their messages are durable, and the fsync of env/ is
 *                in flight.  A batch without envelopes skips it.
 * Without a ring each stage completes at once, blocking. */
enum stage { STAGE_IDLE, STAGE_FILES, STAGE_DIRS, STAGE_ENVS };

/* Apart from the rest: the loop reads it at every turn, and `picomail
 * status` too, while the batch's 17 KB stay untouched, out of an idle
 * daemon's RSS, until a message comes (on a kernel without the shared
 * zero page, a read would bring in their first page). */
static enum stage commit_stage;

static struct {
	struct maildir_msg *batch;               /* FSYNCS_RING files at most */
	struct maildir_msg *file[FSYNCS_RING];   /* whose file each sync is */
	unsigned nfiles;
	struct dirset dirs;
	unsigned open_at[BATCH_DIRS_MAX];        /* dirs whose syncs went out */
	unsigned nopen;
} run;

/* The files a message syncs: its own, or its envelope, or both. */
static unsigned files_of(const struct maildir_msg *m)
{
	if (m->err != 0) {
		return 0;
	}
	return m->kind == MAILDIR_QUEUED ? 2 : 1;
}

/* Takes the oldest pending messages, as many as one group of syncs holds,
 * as the next batch. */
static void take_batch(void)
{
	struct maildir_msg **p = &pending_head;
	unsigned n = 0, k = 0;

	while (*p != NULL && n + files_of(*p) <= FSYNCS_RING) {
		n += files_of(*p);
		k += (*p)->err == 0;
		stats.commit_files++;
		p = &(*p)->next;
	}
	run.batch = pending_head;
	pending_head = *p;
	*p = NULL;
	if (pending_head == NULL) {
		pending_tail = &pending_head;
	}
	stats.commit_batches++;
	if (k > stats.commit_batch_max) {
		stats.commit_batch_max = k;
	}
}

/* Adds fd, m's file or envelope, to the syncs about to start. */
static void file_add(int *fd, struct maildir_msg *m, int f, unsigned n)
{
	if (m->err == 0 && n > 1 && io_start_data(f) < 0) {
		m->err = errno ? errno : EIO;
	}
	if (m->err == 0) {
		run.file[run.nfiles] = m;
		fd[run.nfiles++] = f;
	}
}

/* Starts making the batch's files durable.
 *
 * Each file is synced by itself (fdatasync: its data, its size and its
 * blocks), so that the file system writes picomail's files and nothing
 * else: a syncfs() would also write out, and wait for, every other
 * program's dirty pages on the volume (a backup, a media copy) and force
 * them out early.  With several files every file's write-back is started
 * first, so that the batch's data reaches the disk as one stream of
 * writes; the fdatasyncs, issued together (fsyncs.c), wait for it and
 * persist the inodes, so that the device cache flushes they wait for
 * merge and a journal commits them at once. */
static void files_start(int block)
{
	struct maildir_msg *m;
	int fd[FSYNCS_RING];
	unsigned n = 0;

	for (m = run.batch; m != NULL; m = m->next) {
		n += files_of(m);
	}
	run.nfiles = 0;
	for (m = run.batch; m != NULL; m = m->next) {
		if (m->kind != MAILDIR_ENVELOPE) {
			file_add(fd, m, m->fd, n);
		}
		if (m->kind != MAILDIR_DELIVERY) {
			file_add(fd, m, m->env_fd, n);
		}
	}
	commit_stage = STAGE_FILES;
	(void)io_syncs_start(fd, run.nfiles, 1, block);
}

/* Closes a file the batch synced; a close that fails fails m. */
static void close_file(struct maildir_msg *m, int *fd)
{
	if (*fd >= 0 && io_close(*fd) < 0 && m->err == 0) {
		m->err = errno ? errno : EIO;
	}
	*fd = -1;
}

/* The queue's files are durable (or failed): a message goes into msg/
 * under its queue id. */
static void queued_file_done(struct maildir_msg *m)
{
	close_file(m, &m->fd);
	close_file(m, &m->env_fd);
	if (m->err == 0 && m->kind == MAILDIR_QUEUED) {
		m->err = queue_publish(m, "msg");
	}
	if (m->err != 0) {
		queue_unpublish(m);
	}
}

/* The files are durable (or failed, err[i]): each goes into new/ of its
 * users; the files stay open until then, since an unnamed one is linked
 * through its descriptor.  new/ only ever names data already on disk. */
static void files_done(const int *err)
{
	struct maildir_msg *m;
	unsigned i;

	for (i = 0; i < run.nfiles; i++) {
		if (run.file[i]->err == 0) {
			run.file[i]->err = err[i];
		}
	}
	for (m = run.batch; m != NULL; m = m->next) {
		if (m->kind != MAILDIR_DELIVERY) {
			queued_file_done(m);
			continue;
		}
		if (m->err == 0) {
			m->err = publish(m, m->final, sizeof m->final);
		}
		if (m->err != 0 && m->tmp[0] != '\0') {
			(void)io_unlink(m->tmp);
		}
		/* An unnamed file that was not linked goes with its descriptor. */
		if (io_close(m->fd) < 0 && m->err == 0) {
			m->err = errno ? errno : EIO;
			unlink_new(m, m->nusers, m->final);
		}
		m->fd = -1;
	}
}

/* Index of path in the set, or -1. */
static int dir_index(const struct dirset *d, const char *path)
{
	unsigned j;

	for (j = 0; j < d->n; j++) {
		if (strcmp(d->path[j], path) == 0) {
			return (int)j;
		}
	}
	return -1;
}

/* Adds path to the set, once; a batch that touched more directories than
 * the set holds has the others synced one by one when it ends
 * (dir_result). */
static void dir_add(struct dirset *d, const char *path)
{
	if (d->n < BATCH_DIRS_MAX && dir_index(d, path) < 0) {
		snprintf(d->path[d->n++], sizeof d->path[0], "%s", path);
	}
}

/* Opens the set's directories and starts their fsyncs, as stage. */
static void dirs_sync_start(enum stage stage, int block)
{
	struct dirset *d = &run.dirs;
	int fd[BATCH_DIRS_MAX];
	unsigned i;

	run.nopen = 0;
	for (i = 0; i < d->n; i++) {
		d->err[i] = 0;
		d->fd[i] = io_open(d->path[i], O_RDONLY | O_DIRECTORY, 0);
		if (d->fd[i] < 0) {
			d->err[i] = errno ? errno : EIO;
			continue;
		}
		run.open_at[run.nopen] = i;
		fd[run.nopen++] = d->fd[i];
	}
	commit_stage = stage;
	(void)io_syncs_start(fd, run.nopen, 0, block);
}

/* The set's fsyncs are done (or failed, err[i]): the results kept, the
 * directories closed. */
static void dirs_synced(const int *err)
{
	struct dirset *d = &run.dirs;
	unsigned i;

	for (i = 0; i < run.nopen; i++) {
		d->err[run.open_at[i]] = err[i];
	}
	for (i = 0; i < d->n; i++) {
		if (d->fd[i] >= 0) {
			(void)io_close(d->fd[i]);
			d->fd[i] = -1;
		}
	}
}

/* 0 when the directory path is known synced (synced now if the set had
 * no room for it), else the errno. */
static int dir_result(const char *path)
{
	int j = dir_index(&run.dirs, path);

	if (j >= 0) {
		return run.dirs.err[j];
	}
	return io_fsync_dir(path) < 0 ? (errno ? errno : EIO) : 0;
}

/* Starts the fsync of every new/ the batch linked into and every msg/ it
 * renamed into, each once for the whole batch. */
static void dirs_start(int block)
{
	char path[MAILDIR_PATH_MAX];
	struct maildir_msg *m;
	unsigned i;

	run.dirs.n = 0;
	for (m = run.batch; m != NULL; m = m->next) {
		if (m->err == 0 && m->kind == MAILDIR_QUEUED &&
		    queue_dir(m, "msg", path, sizeof path) == 0) {
			dir_add(&run.dirs, path);
		}
		for (i = 0; m->err == 0 && m->kind == MAILDIR_DELIVERY && i < m->nusers; i++) {
			if (user_path(path, sizeof path, m->users[i], "new") == 0) {
				dir_add(&run.dirs, path);
			}
		}
	}
	dirs_sync_start(STAGE_DIRS, block);
}

/* 0 when the spool's directory sub of the queued message m is known
 * synced, else the errno. */
static int queued_result(const struct maildir_msg *m, const char *sub)
{
	char path[MAILDIR_PATH_MAX];

	return queue_dir(m, sub, path, sizeof path) < 0 ? ENAMETOOLONG : dir_result(path);
}

/* 0 when every new/ of m (a queued message: msg/; an envelope: none) is
 * known synced, else the errno. */
static int dirs_result(const struct maildir_msg *m)
{
	char path[MAILDIR_PATH_MAX];
	unsigned i;
	int e;

	if (m->kind == MAILDIR_QUEUED) {
		return queued_result(m, "msg");
	}
	if (m->kind == MAILDIR_ENVELOPE) {
		return 0;
	}
	for (i = 0; i < m->nusers; i++) {
		if (user_path(path, sizeof path, m->users[i], "new") < 0) {
			return ENAMETOOLONG;
		}
		if ((e = dir_result(path)) != 0) {
			return e;
		}
	}
	return 0;
}

/* The directories are synced (or failed, err[i]); a message not known
 * durable is taken back, so that a retry does not deliver it twice. */
static void dirs_done(const int *err)
{
	struct maildir_msg *m;
	int e;

	dirs_synced(err);
	for (m = run.batch; m != NULL; m = m->next) {
		if (m->err != 0 || (e = dirs_result(m)) == 0) {
			continue;
		}
		m->err = e;
		if (m->kind != MAILDIR_DELIVERY) {
			queue_unpublish(m);
		} else {
			unlink_new(m, m->nusers, m->final);
		}
	}
}

/* The queued messages are in msg/, durably: their envelopes go into env/
 * (an envelope always has its message), beside the envelopes rewritten
 * alone, and the fsync of env/ starts.  0 when the batch has no envelope
 * to sync. */
static int envs_start(int block)
{
	char path[MAILDIR_PATH_MAX];
	struct maildir_msg *m;
	unsigned n = 0;

	run.dirs.n = 0;
	for (m = run.batch; m != NULL; m = m->next) {
		if (m->err != 0 || m->kind == MAILDIR_DELIVERY) {
			continue;
		}
		m->err = queue_publish(m, "env");
		if (m->err == 0 && queue_dir(m, "env", path, sizeof path) < 0) {
			m->err = ENAMETOOLONG;
		}
		if (m->err != 0) {
			queue_unpublish(m);
			continue;
		}
		dir_add(&run.dirs, path);
		n++;
	}
	if (n == 0) {
		return 0;
	}
	dirs_sync_start(STAGE_ENVS, block);
	return 1;
}

/* env/ is synced (or failed, err[i]). */
static void envs_done(const int *err)
{
	struct maildir_msg *m;

	dirs_synced(err);
	for (m = run.batch; m != NULL; m = m->next) {
		if (m->err == 0 && m->kind != MAILDIR_DELIVERY &&
		    (m->err = queued_result(m, "env")) != 0) {
			queue_unpublish(m);
		}
	}
}

/* The batch ends, and each session hears how its message went. */
static void batch_end(void)
{
	struct maildir_msg *m, *next;

	/* The callbacks may queue the sessions' next messages: the batch is
	 * finished before they run. */
	m = run.batch;
	run.batch = NULL;
	commit_stage = STAGE_IDLE;
	for (; m != NULL; m = next) {
		next = m->next;
		m->tmp[0] = '\0';
		m->done(m->ctx, m->err);
	}
}

/* Moves the commit on as far as it goes without waiting for the disk
 * (with block: until nothing is pending nor in flight). */
static void advance(int block)
{
	int err[FSYNCS_RING];

	for (;;) {
		switch (commit_stage) {
		case STAGE_IDLE:
			if (pending_head == NULL) {
				return;
			}
			take_batch();
			files_start(block);
			break;
		case STAGE_FILES:
			if (!io_syncs_collect(err, block)) {
				return;
			}
			files_done(err);
			dirs_start(block);
			break;
		case STAGE_DIRS:
			if (!io_syncs_collect(err, block)) {
				return;
			}
			dirs_done(err);
			if (!envs_start(block)) {
				batch_end();
			}
			break;
		case STAGE_ENVS:
			if (!io_syncs_collect(err, block)) {
				return;
			}
			envs_done(err);
			batch_end();
			break;
		}
	}
}

int maildir_commit_pending(void)
{
	/* Worth gathering for only when a batch can start now. */
	return pending_head != NULL && commit_stage == STAGE_IDLE;
}

void maildir_commit_run(int block)
{
	/* A session told of its commit may go straight on to the next
	 * pipelined message and queue it: advance() starts the next batch
	 * at once, or that message would wait for an unrelated wake-up. */
	advance(block);
}

void maildir_commit_drain(void)
{
	advance(1);
}

unsigned maildir_commit_in_flight(void)
{
	const struct maildir_msg *m;
	unsigned n = 0;

	if (commit_stage == STAGE_IDLE) {
		return 0;   /* no batch; and run stays unread (commit_stage) */
	}
	for (m = run.batch; m != NULL; m = m->next) {
		n++;
	}
	return n;
}

int maildir_commit_fd(void)
{
	return fsyncs_fd();
}

/* Removes every file in dir (a tmp/): called at start-up, before any
 * session, so nothing there belongs to a live delivery or APPEND. */
static void clean_dir(const char *dir)
{
	char path[MAILDIR_PATH_MAX * 2];
	DIR *d = opendir(dir);
	struct dirent *e;

	if (d == NULL) {
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

/* A user's tmp/, and those of the user's IMAP folders (Maildir++ ".Name"). */
static void clean_one(const char *user)
{
	char dir[MAILDIR_PATH_MAX], sub[MAILDIR_PATH_MAX * 2];
	DIR *d;
	struct dirent *e;

	if (user_path(dir, sizeof dir, user, "tmp") == 0) {
		clean_dir(dir);
	}
	if (user_path(dir, sizeof dir, user, NULL) < 0 || (d = opendir(dir)) == NULL) {
		return;
	}
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' && e->d_name[1] != '.' && e->d_name[1] != '\0') {
			snprintf(sub, sizeof sub, "%s/%s/tmp", dir, e->d_name);
			clean_dir(sub);
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
