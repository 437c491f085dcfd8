/* maildrop.c - ordinary local users' mail while the daemon is down. */
#include "maildrop.h"
#include "io.h"
#include "log.h"
#include "random.h"
#include "submitter.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PATH_LEN      512
#define DROP_MODE     03733   /* setgid, sticky, rwx owner, wx the rest */
#define FILE_MODE     0640    /* the daemon's group reads, other users do not */
#define BATCH         32      /* messages taken per pickup: the loop goes on meanwhile */
#define ORPHAN_AGE    3600    /* a .msg or .part older than this lost its command */
#define HEADROOM      65536   /* the command's own header lines, beyond max_message_size */

static int drop_path(char *out, size_t len, const char *spool, const char *name)
{
	int n = snprintf(out, len, "%s/%s%s%s", spool, MAILDROP_DIR, name ? "/" : "",
	                 name ? name : "");

	if (n < 0 || (size_t)n >= len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

int maildrop_make_dir(const char *spool, uid_t uid, gid_t gid)
{
	char dir[PATH_LEN];

	if (drop_path(dir, sizeof dir, spool, NULL) < 0 ||
	    (io_mkdir(dir, 0700) < 0 && errno != EEXIST)) {
		return -1;
	}
	/* mkdir leaves out setgid: the mode is set whole afterwards. */
	if (chown(dir, uid, gid) < 0 || chmod(dir, DROP_MODE) < 0) {
		return -1;
	}
	return 0;
}

/* ---- the command's side ------------------------------------------------- */

int maildrop_open(struct maildir_msg *m, const char *spool)
{
	unsigned char r[16];
	char dir[PATH_LEN], name[48];
	unsigned i;

	if (random_bytes(r, sizeof r) < 0 || drop_path(dir, sizeof dir, spool, NULL) < 0) {
		return -1;
	}
	for (i = 0; i < sizeof r; i++) {
		snprintf(name + 2 * i, 3, "%02x", r[i]);
	}
	memcpy(name + 32, ".msg", 5);
	if (maildir_begin_named(m, dir, name) < 0) {
		return -1;
	}
	/* The daemon reads it through the directory's group (setgid). */
	if (fchmod(m->fd, FILE_MODE) < 0) {
		maildir_abort(m);
		return -1;
	}
	return 0;
}

/* The maildrop itself cannot be opened by an ordinary user (no read
 * permission, so that names stay hidden): its new entries are made
 * durable by syncing the file system instead, slower but rare (the daemon
 * is down). */
static int sync_drop(const char *dir, int fd)
{
	if (io_fsync_dir(dir) == 0) {
		return 0;
	}
	return syncfs(fd) < 0 ? -1 : 0;
}

int maildrop_commit(struct maildir_msg *m, const char *spool, const struct queue_env *env)
{
	static char buf[65536];
	char dir[PATH_LEN], part[PATH_LEN], dst[PATH_LEN], base[MAILDIR_NAME_MAX];
	int e = maildir_finish_file(m), n, fd = -1;

	snprintf(base, sizeof base, "%.*s", (int)strcspn(m->name, "."), m->name);
	if (e == 0 && (drop_path(dir, sizeof dir, spool, NULL) < 0 ||
	               snprintf(part, sizeof part, "%s/%s.part", dir, base) >= (int)sizeof part ||
	               snprintf(dst, sizeof dst, "%s/%s.env", dir, base) >= (int)sizeof dst)) {
		e = ENAMETOOLONG;
	}
	n = e == 0 ? queue_env_format(env, buf, sizeof buf) : -1;
	if (e == 0 && n < 0) {
		e = E2BIG;
	}
	if (e == 0 && (fd = io_open(part, O_WRONLY | O_CREAT | O_EXCL, FILE_MODE)) < 0) {
		e = errno ? errno : EIO;
	}
	if (e == 0 && (fchmod(fd, FILE_MODE) < 0 || io_write_all(fd, buf, (size_t)n) < 0 ||
	               io_fsync(fd) < 0 || io_rename(part, dst) < 0 || sync_drop(dir, fd) < 0)) {
		e = errno ? errno : EIO;
	}
	if (fd >= 0) {
		(void)io_close(fd);
	}
	if (e != 0) {
		(void)unlink(part);
		(void)unlink(dst);
		(void)io_unlink(m->tmp);
	}
	m->tmp[0] = '\0';
	return e;
}

/* ---- the daemon's side -------------------------------------------------- */

struct pickup {
	const struct conf *c;
	char dir[PATH_LEN];
	unsigned taken, seen;
	int more;
	time_t now;
};

/* Opens name in the maildrop as a file the submitter made: regular, one
 * link, not a symbolic link (a user could point one at anything).  The
 * descriptor, with its status in st, or -1. */
static int open_drop(const struct pickup *p, const char *name, struct stat *st)
{
	char path[PATH_LEN];
	int fd;

	if (snprintf(path, sizeof path, "%s/%s", p->dir, name) >= (int)sizeof path) {
		return -1;
	}
	fd = io_open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0);
	if (fd < 0) {
		return -1;
	}
	if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode) || st->st_nlink != 1) {
		(void)io_close(fd);
		return -1;
	}
	return fd;
}

static void remove_drop(const struct pickup *p, const char *base, const char *suffix)
{
	char path[PATH_LEN];

	if (snprintf(path, sizeof path, "%s/%s%s", p->dir, base, suffix) < (int)sizeof path &&
	    io_unlink(path) < 0 && errno != ENOENT) {
		log_msg(LOG_WARNING, "cannot remove %s: %m", path);
	}
}

static void refused(const struct submitter *who, const char *base, const char *why)
{
	struct log_kv l;

	log_kv_start(&l, "refused");
	log_kv_str(&l, "via", "maildrop");
	log_kv_str(&l, "user", who->name);
	log_kv_u64(&l, "uid", who->uid);
	log_kv_str(&l, "file", base);
	log_kv_str(&l, "reason", why);
	log_kv_end(&l, LOG_NOTICE);
}

/* Copies the message into a new queue file, as a client's DATA would be
 * held: no NUL, no CR, within the size limit.  NULL, or why not. */
static const char *copy_message(const struct pickup *p, int fd, const struct stat *st,
                                struct maildir_msg *m)
{
	static unsigned char buf[4096];
	ssize_t n;

	if ((uint64_t)st->st_size > p->c->max_message_size + HEADROOM) {
		return "size";
	}
	if (queue_open(m, p->c->spool) < 0) {
		return "queue-write";
	}
	while ((n = io_read(fd, buf, sizeof buf)) > 0) {
		if (memchr(buf, '\0', (size_t)n) != NULL || memchr(buf, '\r', (size_t)n) != NULL) {
			maildir_abort(m);
			return "bad-bytes";
		}
		maildir_write(m, buf, (size_t)n);
	}
	if (n < 0 || m->err != 0) {
		maildir_abort(m);
		return "queue-write";
	}
	return NULL;
}

/* The envelope as the daemon will have it: the submitter's, whatever the
 * file says about who sent it and when. */
static const char *fix_envelope(struct queue_env *e, const struct submitter *who)
{
	char claimed[ADDR_MAX + 1];
	unsigned i;

	if (e->nrcpt == 0) {
		return "no-recipients";
	}
	for (i = 0; i < e->nrcpt; i++) {
		e->rcpt[i].state = 'P';
		e->rcpt[i].kind = 'U';   /* resolved by the daemon, as the command's are */
		e->rcpt[i].why[0] = '\0';
	}
	memcpy(claimed, e->sender, sizeof claimed);
	if (submitter_sender(who, claimed, e->sender, sizeof e->sender)) {
		struct log_kv l;

		log_kv_start(&l, "sender-rewritten");
		log_kv_str(&l, "via", "maildrop");
		log_kv_str(&l, "user", who->name);
		log_kv_addr(&l, "claimed", claimed);
		log_kv_addr(&l, "from", e->sender);
		log_kv_end(&l, LOG_NOTICE);
	}
	e->local = 1;
	e->uid = who->uid;
	e->arrival = (int64_t)time(NULL);
	e->attempts = 0;
	e->next = 0;
	return NULL;
}

/* One message: base.env and base.msg into the queue, then out of the
 * maildrop.  A crash between the two leaves it to be taken again: mail is
 * sent twice rather than lost. */
static void take(struct pickup *p, const char *base)
{
	static struct queue_env env;
	static struct maildir_msg m;
	struct submitter who;
	struct stat est, mst;
	char name[MAILDIR_NAME_MAX + 8];
	const char *why = NULL;
	int efd, mfd = -1, e;

	if (snprintf(name, sizeof name, "%s.env", base) >= (int)sizeof name) {
		return;
	}
	efd = open_drop(p, name, &est);
	if (efd < 0) {
		return;
	}
	submitter_by_uid(est.st_uid, p->c, &who);
	snprintf(name, sizeof name, "%s.msg", base);
	mfd = open_drop(p, name, &mst);
	if (mfd < 0 || mst.st_uid != est.st_uid) {
		why = "message-file";
	} else if (queue_env_parse_fd(efd, &env) < 0) {
		why = "envelope";
	} else {
		why = fix_envelope(&env, &who);
	}
	if (why == NULL) {
		why = copy_message(p, mfd, &mst, &m);
	}
	if (why == NULL) {
		/* queue_open made the name: a queue id, which fits. */
		snprintf(env.id, sizeof env.id, "%.*s", (int)sizeof env.id - 1, m.name);
		e = queue_commit(&m, p->c->spool, &env);
		if (e != 0) {
			/* Left in the maildrop for the next pickup. */
			log_msg(LOG_ERR, "maildrop %s: cannot queue it: %s", base, strerror(e));
			p->more = 1;
			goto out;
		}
		queue_log_received(&env, "maildrop", &who);
		queue_added(env.id);
		p->taken++;
	} else {
		refused(&who, base, why);
	}
	remove_drop(p, base, ".env");
	remove_drop(p, base, ".msg");
out:
	(void)io_close(efd);
	if (mfd >= 0) {
		(void)io_close(mfd);
	}
}

/* Leftovers of a command that died: a message without its envelope, an
 * envelope half written. */
static void clean_old(struct pickup *p, const char *name)
{
	char path[PATH_LEN];
	struct stat st;

	if (snprintf(path, sizeof path, "%s/%s", p->dir, name) < (int)sizeof path &&
	    lstat(path, &st) == 0 && p->now - st.st_mtime > ORPHAN_AGE) {
		(void)io_unlink(path);
	}
}

static void one_name(const char *name, void *ctx)
{
	struct pickup *p = ctx;
	size_t n = strlen(name);
	char base[MAILDIR_NAME_MAX];

	if (n > 4 && strcmp(name + n - 4, ".env") == 0 && n - 4 < sizeof base) {
		if (p->seen++ >= BATCH) {
			p->more = 1;
			return;
		}
		memcpy(base, name, n - 4);
		base[n - 4] = '\0';
		take(p, base);
		return;
	}
	if ((n > 4 && strcmp(name + n - 4, ".msg") == 0) ||
	    (n > 5 && strcmp(name + n - 5, ".part") == 0)) {
		clean_old(p, name);
	}
}

unsigned maildrop_pickup(const struct conf *c, int *more_left)
{
	struct pickup p;

	memset(&p, 0, sizeof p);
	p.c = c;
	p.now = time(NULL);
	if (drop_path(p.dir, sizeof p.dir, c->spool, NULL) < 0) {
		*more_left = 0;
		return 0;
	}
	io_each_name(p.dir, one_name, &p);
	if (p.taken > 0 && io_fsync_dir(p.dir) < 0) {
		log_msg(LOG_WARNING, "maildrop %s: %m", p.dir);
	}
	*more_left = p.more;
	return p.taken;
}

int maildrop_changed(const char *spool)
{
	static struct timespec seen;
	char dir[PATH_LEN];
	struct stat st;

	if (drop_path(dir, sizeof dir, spool, NULL) < 0 || stat(dir, &st) < 0) {
		return 0;
	}
	if (st.st_mtim.tv_sec == seen.tv_sec && st.st_mtim.tv_nsec == seen.tv_nsec) {
		return 0;
	}
	seen = st.st_mtim;
	return 1;
}
