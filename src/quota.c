/* quota.c - Maildir usage per user from the file names' ",S=" sizes.
 *
 * A directory's mtime changes whenever a name is added or removed, which
 * is all that changes the usage (Maildir files are never rewritten), so
 * two stat() calls tell whether the cached sum still holds.  Where mtimes
 * are coarse (whole seconds), a change in the same second as the scan
 * would go unseen: a directory modified in the current second is not
 * trusted, and is scanned again at the next check.
 */
#include "quota.h"
#include "addr.h"
#include "auth.h"
#include "io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define QUOTA_PATH_MAX 600

/* getdents64 through a fixed buffer, as mailbox.c: opendir() allocates. */
struct quota_dirent {
	uint64_t ino;
	int64_t off;
	unsigned short reclen;
	unsigned char type;
	char name[];
};

struct quota_entry {
	char user[ADDR_USER_MAX + 1];   /* empty: a free entry */
	int valid;
	struct timespec mtime[2];       /* new/, cur/ at the scan */
	struct quota_usage u;
	unsigned age;                   /* for eviction: higher is more recent */
};

static struct quota_entry cache[USERS_MAX];
static unsigned clock_tick;

/* The size a Maildir name carries (",S=<n>" before any ',' or ':'), or -1. */
static int64_t name_size(const char *name)
{
	const char *p = strstr(name, ",S=");
	uint64_t v = 0;

	if (p == NULL) {
		return -1;
	}
	p += 3;
	if (*p < '0' || *p > '9') {
		return -1;
	}
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - 9) / 10) {
			return -1;
		}
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (*p != '\0' && *p != ',' && *p != ':') {
		return -1;
	}
	return v > INT64_MAX ? -1 : (int64_t)v;
}

/* Adds up one directory; a missing one is empty. */
static int scan_dir(const char *dir, struct quota_usage *u)
{
	static _Alignas(8) char buf[4096];
	struct stat st;
	long n, off;
	int64_t sz;
	int fd = io_open(dir, O_RDONLY | O_DIRECTORY, 0);

	if (fd < 0) {
		return errno == ENOENT ? 0 : -1;
	}
	while ((n = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
		for (off = 0; off < n;) {
			struct quota_dirent *d = (struct quota_dirent *)(buf + off);

			off += d->reclen;
			if (d->name[0] == '.') {
				continue;
			}
			sz = name_size(d->name);
			if (sz < 0) {
				/* Put there by someone else: ask the file system. */
				if (fstatat(fd, d->name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
				    !S_ISREG(st.st_mode)) {
					continue;
				}
				sz = st.st_size;
			}
			u->bytes += (uint64_t)sz;
			u->messages++;
		}
	}
	io_close(fd);
	return n < 0 ? -1 : 0;
}

static int sub_path(char *out, size_t len, const char *root, const char *user, const char *sub)
{
	int n = snprintf(out, len, "%s/%s/%s", root, user, sub);

	if (n < 0 || (size_t)n >= len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

struct folders {
	const char *dir;
	struct quota_usage *u;
	int err;
};

/* A Maildir++ folder (".Name") of the user's: its new/ and cur/ too. */
static void folder_one(const char *name, int type, void *ctx)
{
	static const char *const subs[2] = { "new", "cur" };
	struct folders *f = ctx;
	char path[QUOTA_PATH_MAX];
	unsigned i;

	if (name[0] != '.' || name[1] == '.' || (type != DT_DIR && type != DT_UNKNOWN)) {
		return;
	}
	for (i = 0; i < 2; i++) {
		if (snprintf(path, sizeof path, "%s/%s/%s", f->dir, name, subs[i]) < (int)sizeof path &&
		    scan_dir(path, f->u) < 0 && errno != ENOTDIR) {
			f->err = errno;
		}
	}
}

int quota_scan(const char *root, const char *user, struct quota_usage *u)
{
	static const char *const subs[2] = { "new", "cur" };
	char path[QUOTA_PATH_MAX];
	struct folders f = { path, u, 0 };
	unsigned i;

	u->bytes = 0;
	u->messages = 0;
	for (i = 0; i < 2; i++) {
		if (sub_path(path, sizeof path, root, user, subs[i]) < 0 || scan_dir(path, u) < 0) {
			return -1;
		}
	}
	if (snprintf(path, sizeof path, "%s/%s", root, user) >= (int)sizeof path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if (io_each_entry(path, folder_one, &f) < 0 && errno != ENOENT) {
		return -1;
	}
	if (f.err != 0) {
		errno = f.err;
		return -1;
	}
	return 0;
}

/* The mtimes of new/ and cur/ (zero for a missing one); 0 or -1. */
static int dir_times(const char *root, const char *user, struct timespec t[2])
{
	static const char *const subs[2] = { "new", "cur" };
	char path[QUOTA_PATH_MAX];
	struct stat st;
	unsigned i;

	for (i = 0; i < 2; i++) {
		memset(&t[i], 0, sizeof t[i]);
		if (sub_path(path, sizeof path, root, user, subs[i]) < 0) {
			return -1;
		}
		if (stat(path, &st) == 0) {
			t[i] = st.st_mtim;
		} else if (errno != ENOENT) {
			return -1;
		}
	}
	return 0;
}

static struct quota_entry *entry_of(const char *user)
{
	struct quota_entry *e, *victim = &cache[0];
	unsigned i;

	for (i = 0; i < USERS_MAX; i++) {
		e = &cache[i];
		if (strcmp(e->user, user) == 0) {
			return e;
		}
		if (victim->user[0] != '\0' && (e->user[0] == '\0' || e->age < victim->age)) {
			victim = e;
		}
	}
	/* More names than users (aliases never get here): reuse the oldest. */
	memset(victim, 0, sizeof *victim);
	snprintf(victim->user, sizeof victim->user, "%s", user);
	return victim;
}

int quota_usage(const char *root, const char *user, struct quota_usage *u)
{
	struct quota_entry *e;
	struct timespec t[2];
	time_t now = time(NULL);

	if (strlen(user) > ADDR_USER_MAX) {
		errno = ENAMETOOLONG;
		return -1;
	}
	e = entry_of(user);
	e->age = ++clock_tick;
	if (dir_times(root, user, t) < 0) {
		e->valid = 0;
		return -1;
	}
	if (!e->valid || memcmp(t, e->mtime, sizeof t) != 0) {
		if (quota_scan(root, user, &e->u) < 0) {
			e->valid = 0;
			return -1;
		}
		memcpy(e->mtime, t, sizeof t);
		/* Same-second changes are invisible with coarse mtimes. */
		e->valid = t[0].tv_sec < now && t[1].tv_sec < now;
		*u = e->u;
		return 0;
	}
	*u = e->u;
	return 0;
}

int quota_exceeded(const char *root, const char *user, uint64_t limit, uint64_t octets)
{
	struct quota_usage u;

	if (limit == 0 || quota_usage(root, user, &u) < 0) {
		return 0;
	}
	if (octets == 0) {
		return u.bytes >= limit;
	}
	return u.bytes > limit || octets > limit - u.bytes;
}

void quota_delivered(const char *root, const char *user, uint64_t octets)
{
	unsigned i;

	(void)root;
	/* Only the sum: the changed mtime of new/ still makes the next check
	 * scan again, which also catches anything else that changed meanwhile
	 * (a POP3 deletion, a file dropped in by hand).  The bump covers file
	 * systems whose mtimes did not visibly change. */
	for (i = 0; i < USERS_MAX; i++) {
		if (cache[i].valid && strcmp(cache[i].user, user) == 0) {
			cache[i].u.bytes += octets;
			cache[i].u.messages++;
			return;
		}
	}
}

void quota_forget_user(const char *user)
{
	unsigned i;

	for (i = 0; i < USERS_MAX; i++) {
		if (strcmp(cache[i].user, user) == 0) {
			cache[i].valid = 0;
		}
	}
}

void quota_forget(void)
{
	memset(cache, 0, sizeof cache);
}
