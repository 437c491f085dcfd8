/* mailbox.c - the POP3 view of a Maildir. */
#include "mailbox.h"
#include "io.h"
#include "log.h"
#include "msgwire.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PATH_MAX_MB 512

static struct mailbox *open_list;

/* getdents64 through a fixed buffer: opendir() would allocate. */
struct dirent64_raw {
	uint64_t ino;
	int64_t off;
	unsigned short reclen;
	unsigned char type;
	char name[];
};

typedef int (*entry_fn)(void *ctx, const char *name);

/* Calls fn for every name in dir not starting with '.'; 0 or -1. */
static int each_entry(const char *dir, entry_fn fn, void *ctx)
{
	/* 8-byte alignment for the records; the size is the stack budget. */
	static _Alignas(8) char buf[4096];
	long n, off;
	int fd = io_open(dir, O_RDONLY | O_DIRECTORY, 0), r = 0;

	if (fd < 0) {
		return -1;
	}
	while (r == 0 && (n = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
		for (off = 0; off < n && r == 0;) {
			struct dirent64_raw *d = (struct dirent64_raw *)(buf + off);

			off += d->reclen;
			if (d->name[0] != '.') {
				r = fn(ctx, d->name);
			}
		}
	}
	if (n < 0) {
		r = -1;
	}
	io_close(fd);
	return r;
}

size_t mailbox_objsize(unsigned max)
{
	return sizeof(struct mailbox) + (size_t)max * sizeof(struct mailbox_msg) +
	       (size_t)max * MAILBOX_NAME_AVG;
}

int mailbox_locked(const char *user)
{
	const struct mailbox *mb;

	for (mb = open_list; mb != NULL; mb = mb->next_open) {
		if (strcmp(mb->user, user) == 0) {
			return 1;
		}
	}
	return 0;
}

struct move_ctx {
	const char *root, *user;
	int err;
};

/* new/NAME -> cur/NAME:2, (no flags: POP3 sets none). */
static int move_one(void *ctx, const char *name)
{
	struct move_ctx *m = ctx;
	char from[PATH_MAX_MB], to[PATH_MAX_MB];

	if (snprintf(from, sizeof from, "%s/%s/new/%s", m->root, m->user, name) >= (int)sizeof from ||
	    snprintf(to, sizeof to, "%s/%s/cur/%s%s", m->root, m->user, name,
	             strstr(name, ":2,") ? "" : ":2,") >= (int)sizeof to) {
		return 0;   /* a name too long for us stays in new/ */
	}
	if (io_rename(from, to) < 0 && errno != ENOENT) {
		m->err = errno;
		return -1;
	}
	return 0;
}

/* The size POP3 sends for the file (msgwire.h), counted by streaming it
 * through fixed buffers: for files whose name does not tell it.  They
 * come from other programs (picomail's own name their size), and are read
 * again at each login: nothing is cached, and the file is not renamed,
 * since another program may know it by its name. */
static int wire_size(const char *path, uint64_t *size)
{
	static unsigned char in[4096], out[2 * sizeof in + 2];
	struct msgwire w;
	size_t olen;
	ssize_t n;
	int fd = io_open(path, O_RDONLY, 0);

	if (fd < 0) {
		return -1;
	}
	msgwire_init(&w, -1);
	while ((n = io_read(fd, in, sizeof in)) > 0) {
		if (msgwire_feed(&w, in, (size_t)n, out, &olen) != (size_t)n) {
			n = -1;   /* never for a whole message: only TOP stops early */
			errno = EIO;
			break;
		}
	}
	(void)io_close(fd);
	if (n < 0) {
		return -1;
	}
	(void)msgwire_end(&w, out);   /* counts the line end a last line owes */
	*size = w.octets;
	return 0;
}

/* The number after tag ("W=") in the name's ",key=value" list, before
 * the ":2," info. */
static int name_tag(const char *name, const char *tag, uint64_t *out)
{
	const char *p = name, *info = strchr(name, ':');
	char *end;
	size_t tl = strlen(tag);

	while ((p = strchr(p, ',')) != NULL && (info == NULL || p < info)) {
		p++;
		if (strncmp(p, tag, tl) == 0 && p[tl] >= '0' && p[tl] <= '9') {
			*out = strtoull(p + tl, &end, 10);
			return 0;
		}
	}
	return -1;
}

/* The size from the name, when its tags describe the file as it is now.
 * W= is the size with CRLF line ends (picomail and Dovecot write it), which
 * converting the file's line ends leaves as it was; S= is the file's size
 * when it was named, so a file rewritten since (a migration that changed
 * its line ends, or more) shows by an S= that no longer matches, and is
 * counted instead.  A W= no file of this size could send is not used
 * either (msgwire sends at most two octets per octet, plus a line end). */
static int tag_size(const char *name, const char *path, uint64_t *size)
{
	struct stat st;
	uint64_t w, sz;

	if (name_tag(name, "W=", &w) < 0 || stat(path, &st) < 0) {
		return -1;
	}
	if (name_tag(name, "S=", &sz) == 0 && sz != (uint64_t)st.st_size) {
		return -1;
	}
	if (w > 2 * (uint64_t)st.st_size + 2 || (w == 0) != (st.st_size == 0)) {
		return -1;
	}
	*size = w;
	return 0;
}

struct list_ctx {
	struct mailbox *mb;
	const char *root;
};

static int list_one(void *ctx, const char *name)
{
	struct list_ctx *l = ctx;
	struct mailbox *mb = l->mb;
	size_t len = strlen(name) + 1;
	struct mailbox_msg *m;
	char path[PATH_MAX_MB];

	if (mb->n == mb->max || mb->arena_used + len > mb->arena_size) {
		mb->truncated = 1;
		return 0;
	}
	m = &mb->msgs[mb->n];
	if (snprintf(path, sizeof path, "%s/%s/cur/%s", l->root, mb->user, name) >=
	        (int)sizeof path) {
		return 0;   /* a name too long for us: never sent, so not listed */
	}
	if (tag_size(name, path, &m->size) < 0 && wire_size(path, &m->size) < 0) {
		return 0;   /* vanished or unreadable: not listed */
	}
	memcpy(mb->arena + mb->arena_used, name, len);
	m->name = (uint32_t)mb->arena_used;
	m->deleted = 0;
	mb->arena_used += len;
	mb->n++;
	return 0;
}

/* Delivery order: seconds, then microseconds ("1700000000.M12345P..."),
 * then the whole name. */
static struct mailbox *sort_mb;

static void name_time(const char *s, unsigned long long *sec, unsigned long long *usec)
{
	char *end;

	*sec = strtoull(s, &end, 10);
	*usec = 0;
	if (end[0] == '.' && end[1] == 'M') {
		*usec = strtoull(end + 2, NULL, 10);
	}
}

static int by_time(const void *a, const void *b)
{
	const char *na = sort_mb->arena + ((const struct mailbox_msg *)a)->name;
	const char *nb = sort_mb->arena + ((const struct mailbox_msg *)b)->name;
	unsigned long long sa, ua, sb, ub;

	name_time(na, &sa, &ua);
	name_time(nb, &sb, &ub);
	if (sa != sb) {
		return sa < sb ? -1 : 1;
	}
	if (ua != ub) {
		return ua < ub ? -1 : 1;
	}
	return strcmp(na, nb);
}

int mailbox_open(struct mailbox *mb, unsigned max, const char *root, const char *user)
{
	char dir[PATH_MAX_MB];
	struct move_ctx mv = { root, user, 0 };
	struct list_ctx lc = { mb, root };

	memset(mb, 0, sizeof *mb);
	snprintf(mb->user, sizeof mb->user, "%s", user);
	mb->max = max;
	mb->msgs = (struct mailbox_msg *)(mb + 1);
	mb->arena = (char *)(mb->msgs + max);
	mb->arena_size = (size_t)max * MAILBOX_NAME_AVG;

	if (snprintf(dir, sizeof dir, "%s/%s/new", root, user) >= (int)sizeof dir) {
		errno = ENAMETOOLONG;
		return -1;
	}
	/* A user who never got mail has no Maildir yet: an empty mailbox. */
	if (each_entry(dir, move_one, &mv) < 0 && errno != ENOENT) {
		if (mv.err != 0) {
			errno = mv.err;
		}
		return -1;
	}
	snprintf(dir, sizeof dir, "%s/%s/cur", root, user);
	if (each_entry(dir, list_one, &lc) < 0 && errno != ENOENT) {
		return -1;
	}
	sort_mb = mb;
	qsort(mb->msgs, mb->n, sizeof mb->msgs[0], by_time);
	if (mb->truncated) {
		log_msg(LOG_NOTICE, "mailbox %s: listing the first %u messages only", user, mb->n);
	}
	mb->next_open = open_list;
	open_list = mb;
	return 0;
}

void mailbox_close(struct mailbox *mb)
{
	struct mailbox **p;

	for (p = &open_list; *p != NULL; p = &(*p)->next_open) {
		if (*p == mb) {
			*p = mb->next_open;
			break;
		}
	}
	mb->next_open = NULL;
}

int mailbox_wire_size(const char *name, const char *path, uint64_t *size)
{
	return tag_size(name, path, size) == 0 ? 0 : wire_size(path, size);
}

static int msg_path(const struct mailbox *mb, const char *root, unsigned i, char *out, size_t len)
{
	if (snprintf(out, len, "%s/%s/cur/%s", root, mb->user, mb->arena + mb->msgs[i].name) >=
	    (int)len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

struct find_ctx {
	const char *uidl;
	size_t len;
	char *out;
	size_t outlen;
	int found;
};

static int find_one(void *ctx, const char *name)
{
	struct find_ctx *f = ctx;

	if (strcspn(name, ",:") == f->len && memcmp(name, f->uidl, f->len) == 0 &&
	    snprintf(f->out, f->outlen, "%s", name) < (int)f->outlen) {
		f->found = 1;
		return 1;
	}
	return 0;
}

/* The path of message i where it is now.  IMAP sessions (and other
 * readers) rename a message in cur/ when its flags change or it gets a
 * UID, keeping the part before ',' or ':', its UIDL: when the snapshot's
 * name is gone, cur/ is searched for that part.  0, or -1 with errno. */
static int msg_path_now(const struct mailbox *mb, const char *root, unsigned i, char *out,
                        size_t len)
{
	char dir[PATH_MAX_MB], name[PATH_MAX_MB], uidl[MAILBOX_UIDL_MAX + 1];
	struct find_ctx f = { uidl, 0, name, sizeof name, 0 };

	if (msg_path(mb, root, i, out, len) < 0) {
		return -1;
	}
	if (access(out, F_OK) == 0 || errno != ENOENT) {
		return 0;
	}
	mailbox_uidl(mb, i, uidl);
	f.len = strlen(uidl);
	snprintf(dir, sizeof dir, "%s/%s/cur", root, mb->user);
	if (each_entry(dir, find_one, &f) < 0 && !f.found) {
		return -1;
	}
	if (!f.found) {
		errno = ENOENT;
		return -1;
	}
	if (snprintf(out, len, "%s/%s", dir, name) >= (int)len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

int mailbox_open_msg(const struct mailbox *mb, const char *root, unsigned i)
{
	char path[PATH_MAX_MB];

	if (msg_path_now(mb, root, i, path, sizeof path) < 0) {
		return -1;
	}
	return io_open(path, O_RDONLY, 0);
}

void mailbox_uidl(const struct mailbox *mb, unsigned i, char *out)
{
	const char *name = mb->arena + mb->msgs[i].name;
	size_t n = strcspn(name, ",:");

	/* RFC 1939: 1 to 70 characters 0x21-0x7E.  Our names fit; a longer
	 * foreign one is cut, which keeps it stable if not unique. */
	if (n > MAILBOX_UIDL_MAX) {
		n = MAILBOX_UIDL_MAX;
	}
	memcpy(out, name, n);
	out[n] = '\0';
}

int mailbox_expunge(struct mailbox *mb, const char *root)
{
	char path[PATH_MAX_MB];
	unsigned i;
	int err = 0;

	if (mb->ndeleted == 0) {
		return 0;
	}
	for (i = 0; i < mb->n; i++) {
		if (!mb->msgs[i].deleted) {
			continue;
		}
		if (msg_path_now(mb, root, i, path, sizeof path) < 0 ?
		    errno != ENOENT : (io_unlink(path) < 0 && errno != ENOENT)) {
			if (err == 0) {
				err = errno ? errno : EIO;
			}
		}
	}
	snprintf(path, sizeof path, "%s/%s/cur", root, mb->user);
	if (io_fsync_dir(path) < 0 && err == 0) {
		err = errno ? errno : EIO;
	}
	return err;
}
