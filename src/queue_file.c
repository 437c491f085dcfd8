/* queue_file.c - the spool's files: creating a queued message, reading and
 * rewriting its envelope, removing it.  Used by the daemon and by the
 * sendmail command, so it keeps no state of its own. */
#include "queue.h"
#include "io.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define PATH_LEN   512
#define ENV_BYTES  65536   /* QUEUE_RCPT_MAX lines of at most ~430 bytes, and more */

/* An envelope being written (queue_env_write, queue_commit_async). */
static char env_buf[ENV_BYTES];

static int spool_path(char *out, size_t len, const char *spool, const char *sub, const char *id,
                      const char *suffix)
{
	int n = snprintf(out, len, "%s/%s%s%s%s", spool, sub, id ? "/" : "", id ? id : "",
	                 suffix ? suffix : "");

	if (n < 0 || (size_t)n >= len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

int queue_make_dirs(const char *spool)
{
	static const char *const subs[] = { "tmp", "msg", "env" };
	char path[PATH_LEN];
	unsigned i;

	if (io_mkdirs(spool, 0700) < 0) {
		return -1;
	}
	for (i = 0; i < 3; i++) {
		if (spool_path(path, sizeof path, spool, subs[i], NULL, NULL) < 0 ||
		    (io_mkdir(path, 0700) < 0 && errno != EEXIST)) {
			return -1;
		}
	}
	return 0;
}

/* An id that sorts by arrival: seconds, microseconds, pid, a counter. */
static void new_id(char *out, size_t len)
{
	static unsigned counter;
	struct timeval tv;

	gettimeofday(&tv, NULL);
	snprintf(out, len, "%09llX%05lX%05X%03X", (unsigned long long)tv.tv_sec, (long)tv.tv_usec,
	         (unsigned)getpid() & 0xfffff, ++counter & 0xfff);
}

int queue_open(struct maildir_msg *m, const char *spool)
{
	char dir[PATH_LEN], id[QUEUE_ID_MAX];
	int tries;

	if (spool_path(dir, sizeof dir, spool, "tmp", NULL, NULL) < 0) {
		return -1;
	}
	for (tries = 0; tries < 3; tries++) {
		new_id(id, sizeof id);
		if (maildir_begin_named(m, dir, id) == 0) {
			return 0;
		}
		if (errno == ENOENT && tries == 0) {
			if (queue_make_dirs(spool) < 0) {
				return -1;
			}
			continue;
		}
		if (errno != EEXIST) {
			return -1;
		}
	}
	return -1;
}

/* A text safe on one envelope line. */
static void put_clean(char *out, size_t len, const char *in)
{
	size_t i;

	for (i = 0; i + 1 < len && in[i] != '\0'; i++) {
		unsigned char ch = (unsigned char)in[i];

		out[i] = ch < 0x20 || ch > 0x7e ? '?' : (char)ch;
	}
	out[i] = '\0';
}

int queue_env_format(const struct queue_env *e, char *buf, size_t len)
{
	char clean[QUEUE_WHY_MAX];
	size_t o = 0;
	unsigned i;
	int n;

	n = snprintf(buf, len, "picomail-queue 1\narrival %lld\nsender %s\nattempts %u\nnext %lld\n",
	             (long long)e->arrival, e->sender, e->attempts, (long long)e->next);
	if (n < 0 || (size_t)n >= len) {
		return -1;
	}
	o = (size_t)n;
	if (e->local) {
		n = snprintf(buf + o, len - o, "uid %lu\n", (unsigned long)e->uid);
		if (n < 0 || (size_t)n >= len - o) {
			return -1;
		}
		o += (size_t)n;
	}
	for (i = 0; i < e->nrcpt; i++) {
		put_clean(clean, sizeof clean, e->rcpt[i].why);
		n = snprintf(buf + o, len - o, "rcpt %c%c %s\n%s%s%s", e->rcpt[i].state, e->rcpt[i].kind,
		             e->rcpt[i].addr, clean[0] ? "why " : "", clean, clean[0] ? "\n" : "");
		if (n < 0 || (size_t)n >= len - o) {
			return -1;
		}
		o += (size_t)n;
	}
	n = snprintf(buf + o, len - o, "end\n");
	if (n < 0 || (size_t)n >= len - o) {
		return -1;
	}
	return (int)(o + (size_t)n);
}

/* Root (the sendmail command run by cron) writes for a daemon that runs
 * as run_as: files take the owner of the spool directory. */
static void give_to_spool_owner(const char *spool, const char *path)
{
	struct stat st;

	if (geteuid() != 0 || stat(spool, &st) < 0 || st.st_uid == 0) {
		return;
	}
	if (chown(path, st.st_uid, st.st_gid) < 0) {
		log_msg(LOG_WARNING, "cannot chown %s: %m", path);
	}
}

/* Writes the envelope as tmp/<id>.env, fsync'd, then renames it to
 * env/<id> and fsyncs env/.  0 or errno. */
int queue_env_write(const char *spool, const struct queue_env *env)
{
	char *buf = env_buf;
	char tmp[PATH_LEN], dst[PATH_LEN], dir[PATH_LEN];
	int n = queue_env_format(env, buf, sizeof env_buf), fd;

	if (n < 0) {
		return E2BIG;
	}
	if (spool_path(tmp, sizeof tmp, spool, "tmp", env->id, ".env") < 0 ||
	    spool_path(dst, sizeof dst, spool, "env", env->id, NULL) < 0 ||
	    spool_path(dir, sizeof dir, spool, "env", NULL, NULL) < 0) {
		return ENAMETOOLONG;
	}
	fd = io_open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0) {
		return errno ? errno : EIO;
	}
	give_to_spool_owner(spool, tmp);
	return io_replace_file(fd, tmp, dst, dir, buf, (size_t)n);
}

int queue_commit(struct maildir_msg *m, const char *spool, const struct queue_env *env)
{
	char dst[PATH_LEN], dir[PATH_LEN], envpath[PATH_LEN];
	int e = maildir_finish_file(m);

	if (e == 0 && (spool_path(dst, sizeof dst, spool, "msg", m->name, NULL) < 0 ||
	               spool_path(dir, sizeof dir, spool, "msg", NULL, NULL) < 0)) {
		e = ENAMETOOLONG;
	}
	if (e == 0) {
		give_to_spool_owner(spool, m->tmp);
	}
	if (e == 0 && io_rename(m->tmp, dst) < 0) {
		e = errno ? errno : EIO;
	}
	if (e != 0) {
		(void)io_unlink(m->tmp);
		m->tmp[0] = '\0';
		return e;
	}
	m->tmp[0] = '\0';
	/* The message before its envelope: an envelope always has its
	 * message, and msg/ must be durable first. */
	if (io_fsync_dir(dir) < 0) {
		e = errno ? errno : EIO;
	}
	if (e == 0) {
		e = queue_env_write(spool, env);
	}
	if (e != 0) {
		(void)io_unlink(dst);
		if (spool_path(envpath, sizeof envpath, spool, "env", m->name, NULL) == 0) {
			(void)io_unlink(envpath);
		}
	}
	return e;
}

/* Writes m's envelope to tmp/<id>.env, left open in m->env_fd and not
 * yet synced.  0 or errno. */
static int env_stage(struct maildir_msg *m, const struct queue_env *env)
{
	char tmp[PATH_LEN];
	int n = queue_env_format(env, env_buf, sizeof env_buf);

	if (n < 0) {
		return E2BIG;
	}
	if (spool_path(tmp, sizeof tmp, m->spool, "tmp", m->name, ".env") < 0) {
		return ENAMETOOLONG;
	}
	m->env_fd = io_open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (m->env_fd < 0) {
		return errno ? errno : EIO;
	}
	if (io_write_all(m->env_fd, env_buf, (size_t)n) < 0) {
		return errno ? errno : EIO;
	}
	return 0;
}

/* Hands m, of kind, to the group commit with its envelope staged. */
static void commit_with_env(struct maildir_msg *m, enum maildir_kind kind, const char *spool,
                            const struct queue_env *env, maildir_done_fn done, void *ctx)
{
	m->kind = kind;
	m->env_fd = -1;
	if (snprintf(m->spool, sizeof m->spool, "%s", spool) >= (int)sizeof m->spool && m->err == 0) {
		m->err = ENAMETOOLONG;
	}
	if (m->err == 0) {
		m->err = env_stage(m, env);
	}
	maildir_commit(m, done, ctx);
}

void queue_commit_async(struct maildir_msg *m, const char *spool, const struct queue_env *env,
                        maildir_done_fn done, void *ctx)
{
	commit_with_env(m, MAILDIR_QUEUED, spool, env, done, ctx);
}

void queue_env_commit(struct maildir_msg *m, const char *spool, const struct queue_env *env,
                      maildir_done_fn done, void *ctx)
{
	m->fd = -1;
	m->err = 0;
	m->wlen = 0;
	m->tmp[0] = '\0';
	if (snprintf(m->name, sizeof m->name, "%s", env->id) >= (int)sizeof m->name) {
		m->err = ENAMETOOLONG;
	}
	commit_with_env(m, MAILDIR_ENVELOPE, spool, env, done, ctx);
}

int queue_dir(const struct maildir_msg *m, const char *sub, char *out, size_t len)
{
	return spool_path(out, len, m->spool, sub, NULL, NULL);
}

int queue_publish(struct maildir_msg *m, const char *sub)
{
	char tmp[PATH_LEN], dst[PATH_LEN];
	int env = strcmp(sub, "env") == 0;

	if (spool_path(tmp, sizeof tmp, m->spool, "tmp", m->name, env ? ".env" : NULL) < 0 ||
	    spool_path(dst, sizeof dst, m->spool, sub, m->name, NULL) < 0) {
		return ENAMETOOLONG;
	}
	give_to_spool_owner(m->spool, tmp);
	if (io_rename(tmp, dst) < 0) {
		return errno ? errno : EIO;
	}
	if (!env) {
		m->tmp[0] = '\0';
	}
	return 0;
}

/* Unlinks path, where a missing file is no failure. */
static void unlink_quiet(const char *path)
{
	if (io_unlink(path) < 0 && errno != ENOENT) {
		log_msg(LOG_WARNING, "cannot remove %s: %m", path);
	}
}

void queue_unpublish(struct maildir_msg *m)
{
	char path[PATH_LEN];

	if (m->kind == MAILDIR_ENVELOPE) {
		/* A rewrite: the envelope before it stays, with its message. */
		if (spool_path(path, sizeof path, m->spool, "tmp", m->name, ".env") == 0) {
			unlink_quiet(path);
		}
		return;
	}
	/* The envelope first: an envelope always has its message. */
	if (spool_path(path, sizeof path, m->spool, "env", m->name, NULL) == 0) {
		unlink_quiet(path);
	}
	if (spool_path(path, sizeof path, m->spool, "msg", m->name, NULL) == 0) {
		unlink_quiet(path);
	}
	if (spool_path(path, sizeof path, m->spool, "tmp", m->name, ".env") == 0) {
		unlink_quiet(path);
	}
	if (m->tmp[0] != '\0') {
		unlink_quiet(m->tmp);
		m->tmp[0] = '\0';
	}
}

static int parse_i64(const char *s, int64_t *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0') {
		return -1;
	}
	*out = v;
	return 0;
}

/* One line of an envelope into e; 1 at "end", 0 for more, -1 if bad. */
static int env_line(struct queue_env *e, char *line)
{
	char *v = strchr(line, ' ');
	int64_t n;
	struct queue_rcpt *r;

	if (strcmp(line, "end") == 0) {
		return 1;
	}
	if (v == NULL) {
		return -1;
	}
	*v++ = '\0';
	if (strcmp(line, "picomail-queue") == 0) {
		return strcmp(v, "1") == 0 ? 0 : -1;
	}
	if (strcmp(line, "arrival") == 0) {
		return parse_i64(v, &e->arrival);
	}
	if (strcmp(line, "next") == 0) {
		return parse_i64(v, &e->next);
	}
	if (strcmp(line, "attempts") == 0) {
		if (parse_i64(v, &n) < 0 || n < 0 || n > 1000000) {
			return -1;
		}
		e->attempts = (unsigned)n;
		return 0;
	}
	if (strcmp(line, "uid") == 0) {
		if (parse_i64(v, &n) < 0 || n < 0 || n > UINT32_MAX || e->local) {
			return -1;
		}
		e->local = 1;
		e->uid = (uint32_t)n;
		return 0;
	}
	if (strcmp(line, "sender") == 0) {
		if (strlen(v) > ADDR_MAX) {
			return -1;
		}
		strcpy(e->sender, v);
		return 0;
	}
	if (strcmp(line, "rcpt") == 0) {
		if (e->nrcpt == QUEUE_RCPT_MAX || strlen(v) < 4 || v[2] != ' ' ||
		    strchr("PSF", v[0]) == NULL || strchr("LRU", v[1]) == NULL ||
		    strlen(v + 3) > ADDR_MAX) {
			return -1;
		}
		r = &e->rcpt[e->nrcpt++];
		r->state = v[0];
		r->kind = v[1];
		strcpy(r->addr, v + 3);
		r->why[0] = '\0';
		return 0;
	}
	if (strcmp(line, "why") == 0) {
		if (e->nrcpt == 0) {
			return -1;
		}
		put_clean(e->rcpt[e->nrcpt - 1].why, QUEUE_WHY_MAX, v);
		return 0;
	}
	return -1;
}

int queue_env_parse_fd(int fd, struct queue_env *e)
{
	static char buf[ENV_BYTES + 1];
	char *line, *nl;
	ssize_t n, total = 0;
	int r = 0;

	memset(e, 0, offsetof(struct queue_env, rcpt));
	while ((n = io_read(fd, buf + total, ENV_BYTES - (size_t)total)) > 0) {
		total += n;
	}
	if (n < 0) {
		return -1;
	}
	if (total == ENV_BYTES) {
		errno = EINVAL;
		return -1;
	}
	buf[total] = '\0';
	for (line = buf; r == 0 && (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
		*nl = '\0';
		r = env_line(e, line);
	}
	/* Only a complete envelope counts: it must end with "end". */
	if (r != 1) {
		errno = EINVAL;
		return -1;
	}
	return 0;
}

int queue_env_read(const char *spool, const char *id, struct queue_env *e)
{
	char path[PATH_LEN];
	int fd, r, saved;

	if (strlen(id) >= sizeof e->id || spool_path(path, sizeof path, spool, "env", id, NULL) < 0) {
		errno = ENAMETOOLONG;
		return -1;
	}
	fd = io_open(path, O_RDONLY, 0);
	if (fd < 0) {
		return -1;
	}
	r = queue_env_parse_fd(fd, e);
	saved = errno;
	io_close(fd);
	errno = saved;
	snprintf(e->id, sizeof e->id, "%s", id);
	return r;
}

int queue_remove(const char *spool, const char *id)
{
	char path[PATH_LEN];
	int r = 0;

	/* The envelope first: a message without one is only garbage.  The
	 * message goes even when the envelope stays, so that an envelope
	 * left behind finds no message to send again. */
	if (spool_path(path, sizeof path, spool, "env", id, NULL) == 0 && io_unlink(path) < 0 &&
	    errno != ENOENT) {
		log_msg(LOG_WARNING, "cannot remove %s: %m", path);
		r = -1;
	}
	if (spool_path(path, sizeof path, spool, "msg", id, NULL) == 0 && io_unlink(path) < 0 &&
	    errno != ENOENT) {
		log_msg(LOG_WARNING, "cannot remove %s: %m", path);
		r = -1;
	}
	return r;
}
