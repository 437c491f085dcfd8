/* folder.c - Maildir++ folders, their UIDs and flags, and the index of a
 * selected folder (folder.h says how UIDs survive power cuts). */
#include "folder.h"
#include "inforce.h"
#include "io.h"
#include "log.h"
#include "mailbox.h"
#include "maildir.h"
#include "quota.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define UIDS_FILE "picomail-uids"
#define SUBS_FILE "subscriptions"
#define SUBS_MAX  8192          /* the subscriptions file, read whole */
#define NAME_LEN  256           /* a file name in cur/ */
#define UID_MAX   0xfffffff0u   /* past it a folder would need a new UIDVALIDITY */

static const char *const standard[] = { "Sent", "Drafts", "Trash", "Junk", "Archive" };
static const char *const special[] = { "\\Sent", "\\Drafts", "\\Trash", "\\Junk", "\\Archive" };

static int ino_fd = -1;
static struct folder *open_list;
static uint32_t last_validity;

static const char *root(void)
{
	return inforce_conf()->maildir_root;
}

static int fit(int n, size_t len)
{
	if (n < 0 || (size_t)n >= len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* ---- names ---------------------------------------------------------------- */

int folder_name_ok(const char *name, size_t len)
{
	size_t i;

	if (len == 0 || len > FOLDER_NAME_MAX || name[0] == '.' || name[len - 1] == '.') {
		return 0;
	}
	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)name[i];

		if (ch < 0x20 || ch > 0x7e || ch == '/' || ch == '\\' || ch == '*' || ch == '%' ||
		    (ch == '.' && name[i + 1] == '.')) {
			return 0;
		}
	}
	return 1;
}

static int is_inbox(const char *name)
{
	return strcasecmp(name, "INBOX") == 0;
}

static int user_dir(char *out, size_t len, const char *user)
{
	return fit(snprintf(out, len, "%s/%s", root(), user), len);
}

int folder_path(char *out, size_t len, const char *user, const char *name)
{
	if (is_inbox(name)) {
		return user_dir(out, len, user);
	}
	if (!folder_name_ok(name, strlen(name))) {
		errno = EINVAL;
		return -1;
	}
	return fit(snprintf(out, len, "%s/%s/.%s", root(), user, name), len);
}

const char *folder_special_use(const char *name)
{
	unsigned i;

	for (i = 0; i < sizeof standard / sizeof standard[0]; i++) {
		if (strcmp(name, standard[i]) == 0) {
			return special[i];
		}
	}
	return NULL;
}

/* The length of a file name's base: up to the ':' of its info. */
static size_t base_len(const char *name)
{
	return strcspn(name, ":");
}

/* The flags of an info part (":2,FS"). */
static unsigned info_flags(const char *info)
{
	static const char letters[] = "SRFTD";
	unsigned flags = 0;
	const char *p;

	if (strncmp(info, ":2,", 3) != 0) {
		return 0;
	}
	for (info += 3; *info != '\0'; info++) {
		p = strchr(letters, *info);
		if (p != NULL && *info != '\0') {
			flags |= 1u << (p - letters);
		}
	}
	return flags;
}

/* The info letters for flags, in the ASCII order Maildir asks for. */
static void info_letters(unsigned flags, char out[8])
{
	size_t n = 0;

	if (flags & FL_DRAFT) {
		out[n++] = 'D';
	}
	if (flags & FL_FLAGGED) {
		out[n++] = 'F';
	}
	if (flags & FL_ANSWERED) {
		out[n++] = 'R';
	}
	if (flags & FL_SEEN) {
		out[n++] = 'S';
	}
	if (flags & FL_DELETED) {
		out[n++] = 'T';
	}
	out[n] = '\0';
}

/* The UID of a base name (",U=<digits>" up to ',' or its end); 0 if none. */
static uint32_t name_uid(const char *base, size_t len)
{
	const char *p = base, *end = base + len;
	uint64_t v;

	while ((p = memchr(p, ',', (size_t)(end - p))) != NULL) {
		p++;
		if (end - p < 3 || p[0] != 'U' || p[1] != '=' || p[2] < '1' || p[2] > '9') {
			continue;
		}
		for (v = 0, p += 2; p < end && *p >= '0' && *p <= '9' && v <= UID_MAX; p++) {
			v = v * 10 + (uint64_t)(*p - '0');
		}
		return (p == end || *p == ',') && v < UID_MAX ? (uint32_t)v : 0;
	}
	return 0;
}

/* base without its ",U=..." tags, into out (len >= base's length + 1). */
static size_t strip_uid(const char *base, size_t len, char *out)
{
	size_t i = 0, n = 0, k;

	while (i < len) {
		if (base[i] == ',' && i + 2 < len && base[i + 1] == 'U' && base[i + 2] == '=') {
			for (k = i + 1; k < len && base[k] != ','; k++) {
			}
			i = k;
			continue;
		}
		out[n++] = base[i++];
	}
	out[n] = '\0';
	return n;
}

/* ---- the UID file ------------------------------------------------------- */

static uint32_t new_validity(void)
{
	uint32_t v = (uint32_t)time(NULL);

	/* Never the same twice in a run: a folder deleted and made again
	 * within a second must not look the same to a client. */
	if (v <= last_validity) {
		v = last_validity + 1;
	}
	last_validity = v;
	return v;
}

static int uids_write(const char *dir, uint32_t validity, uint32_t next)
{
	char buf[64];
	int n = snprintf(buf, sizeof buf, "picomail-uids 1 %u %u\n", validity, next), e;

	e = maildir_write_file(dir, UIDS_FILE, buf, (size_t)n);
	if (e != 0) {
		errno = e;
		return -1;
	}
	return 0;
}

struct maxuid {
	uint32_t max;
};

static void max_one(const char *name, int type, void *ctx)
{
	struct maxuid *m = ctx;
	uint32_t u = name_uid(name, base_len(name));

	(void)type;
	if (u > m->max) {
		m->max = u;
	}
}

/* The folder's validity and next UID, making the file when it is missing
 * or unreadable (a new validity: clients forget what they cached, and
 * next past every UID still in a name).  0, or -1 with errno. */
static int uids_load(const char *dir, uint32_t *validity, uint32_t *next)
{
	char path[FOLDER_PATH_MAX + 32], buf[64], *p, *end;
	unsigned long v, x;
	struct maxuid m = { 0 };
	ssize_t n = -1;
	int fd;

	if (fit(snprintf(path, sizeof path, "%s/" UIDS_FILE, dir), sizeof path) < 0) {
		return -1;
	}
	fd = io_open(path, O_RDONLY, 0);
	if (fd >= 0) {
		n = io_read(fd, buf, sizeof buf - 1);
		(void)io_close(fd);
	} else if (errno != ENOENT) {
		return -1;
	}
	if (n > 0) {
		buf[n] = '\0';
		p = buf + sizeof "picomail-uids 1 " - 1;
		if (strncmp(buf, "picomail-uids 1 ", sizeof "picomail-uids 1 " - 1) == 0 &&
		    (v = strtoul(p, &end, 10)) > 0 && v <= 0xffffffffu && *end == ' ' &&
		    (x = strtoul(end + 1, &end, 10)) > 0 && x <= UID_MAX && *end == '\n') {
			*validity = (uint32_t)v;
			*next = (uint32_t)x;
			return 0;
		}
		log_msg(LOG_WARNING, "%s: unreadable, made anew with a new UIDVALIDITY", path);
	}
	/* No file yet (a new folder, a Maildir from elsewhere) or a bad one. */
	if (fit(snprintf(path, sizeof path, "%s/cur", dir), sizeof path) < 0 ||
	    io_each_entry(path, max_one, &m) < 0) {
		return -1;
	}
	*validity = new_validity();
	*next = m.max + 1;
	return uids_write(dir, *validity, *next);
}

/* Takes k UIDs (and at least up to atleast) in dir: the file says next
 * past them before any name carries one.  *first gets the first. */
static int uids_reserve(const char *dir, unsigned k, uint32_t atleast, uint32_t *validity,
                        uint32_t *first)
{
	uint32_t next;

	if (uids_load(dir, validity, &next) < 0) {
		return -1;
	}
	*first = next < atleast ? atleast : next;
	if (k > UID_MAX - *first) {
		errno = EOVERFLOW;
		return -1;
	}
	return k == 0 && *first == next ? 0 : uids_write(dir, *validity, *first + k);
}

/* ---- finding a file ----------------------------------------------------- */

struct locate {
	const char *base;
	size_t len;
	char *out;
	size_t outlen;
	int found;
};

static void locate_one(const char *name, int type, void *ctx)
{
	struct locate *l = ctx;

	(void)type;
	if (!l->found && strncmp(name, l->base, l->len) == 0 &&
	    (name[l->len] == ':' || name[l->len] == '\0') && strlen(name) < l->outlen) {
		memcpy(l->out, name, strlen(name) + 1);
		l->found = 1;
	}
}

/* dir/sub/<base>:2,<flags>, the name a message has when nothing else
 * renamed it.  -1 (ENAMETOOLONG). */
static int msg_path(char *out, size_t len, const char *dir, const char *sub, const char *base,
                    unsigned flags)
{
	char letters[8];

	info_letters(flags, letters);
	return fit(snprintf(out, len, "%s/%s/%s%s%s", dir, sub, base, sub[0] == 'n' ? "" : ":2,",
	                    sub[0] == 'n' ? "" : letters), len);
}

/* When path (built by msg_path) is gone: the file of that base in
 * dir/sub under whatever info it has now (another program's flags, or
 * none), into path.  0, or -1 with errno ENOENT. */
static int locate(char *path, size_t len, const char *dir, const char *sub, const char *base)
{
	char d[FOLDER_PATH_MAX], name[NAME_LEN];
	struct locate l = { base, strlen(base), name, sizeof name, 0 };

	if (fit(snprintf(d, sizeof d, "%s/%s", dir, sub), sizeof d) < 0) {
		return -1;
	}
	if (io_each_entry(d, locate_one, &l) < 0 || !l.found) {
		errno = ENOENT;
		return -1;
	}
	return fit(snprintf(path, len, "%s/%s", d, name), len);
}

/* ---- the index ----------------------------------------------------------- */

size_t folder_objsize(unsigned max)
{
	return sizeof(struct folder) + (size_t)max * sizeof(struct fmsg) +
	       (size_t)max * FOLDER_ARENA_AVG;
}

void folder_init(struct folder *f, unsigned max)
{
	memset(f, 0, sizeof *f);
	f->max = max;
	f->msgs = (struct fmsg *)(f + 1);
	f->arena = (char *)(f->msgs + max);
	f->arena_size = (size_t)max * FOLDER_ARENA_AVG;
	f->wd[0] = f->wd[1] = -1;
}

const char *folder_base(const struct folder *f, unsigned i)
{
	return f->arena + f->msgs[i].name;
}

static uint32_t sort_key(const struct fmsg *m)
{
	return m->state & MS_NEED ? 0xffffffffu : m->uid;
}

static int by_offset(const void *a, const void *b)
{
	uint32_t x = ((const struct fmsg *)a)->name, y = ((const struct fmsg *)b)->name;

	return x < y ? -1 : x > y;
}

static const struct folder *sorting;

/* Delivery order: seconds, then microseconds ("1700000000.M12345P..."). */
static void name_time(const char *s, unsigned long long t[2])
{
	char *end;

	t[0] = strtoull(s, &end, 10);
	t[1] = end[0] == '.' && end[1] == 'M' ? strtoull(end + 2, NULL, 10) : 0;
}

/* UID order; messages without one last, in delivery order (their names
 * start with the time they came), then by name. */
static int by_key(const void *a, const void *b)
{
	const struct fmsg *x = a, *y = b;
	uint32_t kx = sort_key(x), ky = sort_key(y);
	unsigned long long tx[2], ty[2];

	if (kx != ky) {
		return kx < ky ? -1 : 1;
	}
	if (kx != 0xffffffffu) {
		return 0;
	}
	name_time(sorting->arena + x->name, tx);
	name_time(sorting->arena + y->name, ty);
	if (tx[0] != ty[0] || tx[1] != ty[1]) {
		return tx[0] < ty[0] || (tx[0] == ty[0] && tx[1] < ty[1]) ? -1 : 1;
	}
	return strcmp(sorting->arena + x->name, sorting->arena + y->name);
}

static void sort_from(struct folder *f, unsigned from)
{
	sorting = f;
	qsort(f->msgs + from, f->n - from, sizeof f->msgs[0], by_key);
}

/* Packs the live names to the start of the arena.  Entries are ordered
 * by offset for the move (each name then only moves down), then sorted
 * back: with qsort in place, nothing else is needed. */
static void compact(struct folder *f)
{
	size_t used = 0, len;
	unsigned i;

	qsort(f->msgs, f->n, sizeof f->msgs[0], by_offset);
	for (i = 0; i < f->n; i++) {
		len = strlen(f->arena + f->msgs[i].name) + 1;
		memmove(f->arena + used, f->arena + f->msgs[i].name, len);
		f->msgs[i].name = (uint32_t)used;
		used += len;
	}
	f->arena_used = used;
	sort_from(f, 0);
}

/* A copy of s (len octets) in the arena, compacting it when full; its
 * offset, or -1. */
static long arena_add(struct folder *f, const char *s, size_t len)
{
	size_t off;

	if (f->arena_used + len + 1 > f->arena_size) {
		compact(f);
		if (f->arena_used + len + 1 > f->arena_size) {
			return -1;
		}
	}
	off = f->arena_used;
	memcpy(f->arena + off, s, len);
	f->arena[off + len] = '\0';
	f->arena_used += len + 1;
	return (long)off;
}

/* Index of uid among the first n entries (sorted), or -1. */
static int find_in(const struct folder *f, unsigned n, uint32_t uid)
{
	unsigned lo = 0, hi = n, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (sort_key(&f->msgs[mid]) < uid) {
			lo = mid + 1;
		} else {
			hi = mid;
		}
	}
	return lo < n && f->msgs[lo].uid == uid && !(f->msgs[lo].state & MS_NEED) ? (int)lo : -1;
}

int folder_find_uid(const struct folder *f, uint32_t uid)
{
	return find_in(f, f->n, uid);
}

static int add(struct folder *f, const char *base, size_t len, uint32_t uid, unsigned flags,
               unsigned state)
{
	struct fmsg *m;
	long off;

	if (f->n == f->max || (off = arena_add(f, base, len)) < 0) {
		f->full = 1;
		return -1;
	}
	m = &f->msgs[f->n++];
	m->uid = uid;
	m->name = (uint32_t)off;
	m->size = FOLDER_SIZE_UNKNOWN;
	m->flags = (uint8_t)flags;
	m->state = (uint8_t)state;
	return 0;
}

struct scan {
	struct folder *f;
	unsigned old_n;
	int innew;
};

/* One name of cur/ or new/ against the index. */
static void scan_one(const char *name, int type, void *ctx)
{
	struct scan *c = ctx;
	struct folder *f = c->f;
	size_t len = base_len(name);
	unsigned flags = c->innew ? 0 : info_flags(name + len);
	uint32_t uid = c->innew ? 0 : name_uid(name, len);
	struct fmsg *m;
	int i;

	if (name[0] == '.' || type == DT_DIR || len == 0 || len >= NAME_LEN) {
		return;
	}
	if (uid != 0) {
		i = find_in(f, c->old_n, uid);
		if (i >= 0) {
			m = &f->msgs[i];
			if (!(m->state & (MS_SCAN | MS_GONE)) && strncmp(f->arena + m->name, name, len) == 0 &&
			    f->arena[m->name + len] == '\0') {
				m->state |= MS_SCAN;
				if ((m->flags & FL_DISK) != flags) {
					m->flags = (uint8_t)((m->flags & ~FL_DISK) | flags);
					m->state |= MS_CHANGED;
				}
				return;
			}
		} else if (uid >= f->seen_next) {
			/* Given its UID elsewhere since this index last looked. */
			(void)add(f, name, len, uid, flags, 0);
			return;
		}
		/* A UID this index knows under another name, or one below what
		 * it has seen that it never saw: a copy made by hand.  A new one. */
	}
	(void)add(f, name, len, 0, flags, MS_NEED | (c->innew ? MS_INNEW : 0));
}

/* The directories changed: tell the other sessions that have dir open. */
static void touched(const char *dir, const struct folder *self)
{
	struct folder *f;

	for (f = open_list; f != NULL; f = f->next_open) {
		if (f != self && strcmp(f->dir, dir) == 0) {
			f->dirty = 1;
			if (f->wake != NULL) {
				f->wake(f->wake_ctx);
			}
		}
	}
}

/* The octets base will take with ",U=<uid>" (its old U= tags dropped). */
static size_t named_len(const char *base, uint32_t uid)
{
	char tmp[NAME_LEN + 16];
	size_t n = strip_uid(base, strlen(base), tmp);

	return n + (size_t)snprintf(tmp, sizeof tmp, ",U=%u", uid);
}

/* Lays the names out again, packed, the entries marked MS_NAMED taking
 * their ",U=<uid>": first packed down (compact), then, from the last to
 * the first, moved up to where they end: each name only grows, so none
 * is written over before it is read.  The caller made sure it fits. */
static void rename_in_arena(struct folder *f)
{
	char tmp[NAME_LEN + 16];
	size_t end = 0, total, len;
	unsigned i;
	struct fmsg *m;

	compact(f);
	qsort(f->msgs, f->n, sizeof f->msgs[0], by_offset);
	for (i = 0; i < f->n; i++) {
		m = &f->msgs[i];
		end += (m->state & MS_NAMED ? named_len(f->arena + m->name, m->uid) :
		        strlen(f->arena + m->name)) + 1;
	}
	total = end;
	for (i = f->n; i-- > 0;) {
		m = &f->msgs[i];
		if (m->state & MS_NAMED) {
			len = strip_uid(f->arena + m->name, strlen(f->arena + m->name), tmp);
			len += (size_t)snprintf(tmp + len, sizeof tmp - len, ",U=%u", m->uid);
		} else {
			len = strlen(f->arena + m->name);
			memcpy(tmp, f->arena + m->name, len + 1);
		}
		end -= len + 1;
		memcpy(f->arena + end, tmp, len + 1);
		m->name = (uint32_t)end;
		m->state &= (uint8_t)~MS_NAMED;
	}
	f->arena_used = total;
	sort_from(f, 0);
}

/* Gives UIDs to the messages from..n-1 that need one (the last of them,
 * by sort_from), renaming each into cur/ with ",U=<uid>" and syncing. */
static int assign(struct folder *f, unsigned from, uint32_t atleast)
{
	char src[FOLDER_PATH_MAX], dst[FOLDER_PATH_MAX], base[NAME_LEN + 16];
	unsigned i, k = 0, innew = 0, named = 0;
	uint32_t validity, uid;
	struct fmsg *m;
	size_t len, need = 0;
	int err = 0;

	/* Room for every new name first: a rename done must be recorded. */
	for (i = 0; i < f->n; i++) {
		need += strlen(f->arena + f->msgs[i].name) + 1;
		if (i >= from && (f->msgs[i].state & MS_NEED)) {
			k++;
			need += 14;   /* ",U=4294967295" at most; old U= tags only shrink it */
		}
	}
	while (k > 0 && need > f->arena_size) {
		need -= strlen(f->arena + f->msgs[--f->n].name) + 15;
		k--;
		f->full = 1;
	}
	if (uids_reserve(f->dir, k, atleast, &validity, &uid) < 0) {
		return -1;
	}
	if (f->validity != 0 && validity != f->validity) {
		errno = ESTALE;
		return -1;
	}
	f->validity = validity;
	for (i = from; i < f->n; i++) {
		m = &f->msgs[i];
		if (!(m->state & MS_NEED)) {
			continue;
		}
		len = strip_uid(f->arena + m->name, strlen(f->arena + m->name), base);
		snprintf(base + len, sizeof base - len, ",U=%u", uid);
		if (err != 0 ||
		    msg_path(src, sizeof src, f->dir, m->state & MS_INNEW ? "new" : "cur",
		             f->arena + m->name, m->flags) < 0 ||
		    msg_path(dst, sizeof dst, f->dir, "cur", base, m->flags) < 0 ||
		    (io_rename(src, dst) < 0 &&
		     (errno != ENOENT ||
		      locate(src, sizeof src, f->dir, m->state & MS_INNEW ? "new" : "cur",
		             f->arena + m->name) < 0 ||
		      io_rename(src, dst) < 0))) {
			/* Gone meanwhile (POP3 took it): left out.  Any other
			 * failure fails the sync; the rest wait for the next one.
			 * Either way the UID is not used again. */
			if (err == 0 && errno != ENOENT) {
				err = errno ? errno : EIO;
			}
			m->state |= MS_GONE;
			uid++;
			continue;
		}
		innew |= m->state & MS_INNEW;
		m->uid = uid++;
		m->state = MS_NAMED;
		m->flags |= FL_RECENT;
		f->recent++;
		named++;
	}
	/* Those not renamed are dropped; the others take their names. */
	for (i = from; i < f->n;) {
		if (f->msgs[i].state & (MS_NEED | MS_GONE)) {
			f->msgs[i] = f->msgs[--f->n];
		} else {
			i++;
		}
	}
	if (named > 0) {
		rename_in_arena(f);
	} else {
		sort_from(f, from);
	}
	f->uidnext = uid;
	if (k == 0) {
		return 0;
	}
	if (err != 0) {
		/* What was renamed keeps its UID (in its name); still synced. */
		if (fit(snprintf(src, sizeof src, "%s/cur", f->dir), sizeof src) == 0) {
			(void)io_fsync_dir(src);
		}
		touched(f->dir, f);
		errno = err;
		return -1;
	}
	/* New names are durable before any client hears of their UIDs. */
	if (fit(snprintf(src, sizeof src, "%s/cur", f->dir), sizeof src) < 0 ||
	    io_fsync_dir(src) < 0) {
		return -1;
	}
	if (innew && (fit(snprintf(src, sizeof src, "%s/new", f->dir), sizeof src) < 0 ||
	              io_fsync_dir(src) < 0)) {
		return -1;
	}
	touched(f->dir, f);
	return 0;
}

int folder_sync(struct folder *f)
{
	char path[FOLDER_PATH_MAX];
	struct scan c = { f, f->n, 0 };
	uint32_t validity, next, last;
	unsigned i;

	if (uids_load(f->dir, &validity, &next) < 0) {
		return -1;
	}
	if (f->validity != 0 && validity != f->validity) {
		errno = ESTALE;
		return -1;
	}
	f->validity = validity;
	f->dirty = ino_fd < 0;   /* without inotify, every sync looks */
	if (fit(snprintf(path, sizeof path, "%s/cur", f->dir), sizeof path) < 0 ||
	    io_each_entry(path, scan_one, &c) < 0) {
		return -1;
	}
	c.innew = 1;
	if (fit(snprintf(path, sizeof path, "%s/new", f->dir), sizeof path) < 0 ||
	    (io_each_entry(path, scan_one, &c) < 0 && errno != ENOENT)) {
		return -1;
	}
	for (i = 0; i < c.old_n; i++) {
		if (!(f->msgs[i].state & (MS_SCAN | MS_GONE))) {
			f->msgs[i].state |= MS_GONE;
		}
		f->msgs[i].state &= (uint8_t)~MS_SCAN;
	}
	sort_from(f, c.old_n);
	/* Two files claiming one UID: the second is given a new one. */
	last = c.old_n > 0 ? f->msgs[c.old_n - 1].uid : 0;
	for (i = c.old_n; i < f->n && !(f->msgs[i].state & MS_NEED); i++) {
		if (f->msgs[i].uid <= last) {
			f->msgs[i].state |= MS_NEED;
		} else {
			last = f->msgs[i].uid;
		}
	}
	sort_from(f, c.old_n);
	if (assign(f, c.old_n, last >= next ? last + 1 : next) < 0) {
		/* Those still without a UID wait for the next sync. */
		while (f->n > c.old_n && (f->msgs[f->n - 1].state & MS_NEED)) {
			f->n--;
		}
		return -1;
	}
	f->seen_next = f->uidnext;
	return 0;
}

void folder_purge(struct folder *f)
{
	unsigned i, j;

	for (i = j = 0; i < f->n; i++) {
		if (!(f->msgs[i].state & MS_GONE)) {
			f->msgs[j++] = f->msgs[i];
		} else if (f->msgs[i].flags & FL_RECENT) {
			f->recent--;
		}
	}
	f->n = j;
}

/* ---- watching ------------------------------------------------------------ */

int folder_watch_init(void)
{
	ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (ino_fd < 0) {
		log_msg(LOG_WARNING, "inotify: %m: IMAP sessions look for changes every few seconds");
	}
	return ino_fd;
}

static void watch(struct folder *f)
{
	static const char *const subs[2] = { "cur", "new" };
	char path[FOLDER_PATH_MAX];
	unsigned i;

	for (i = 0; i < 2; i++) {
		f->wd[i] = -1;
		if (ino_fd >= 0 && fit(snprintf(path, sizeof path, "%s/%s", f->dir, subs[i]),
		                       sizeof path) == 0) {
			f->wd[i] = inotify_add_watch(ino_fd, path, IN_CREATE | IN_DELETE | IN_MOVED_FROM |
			                             IN_MOVED_TO | IN_DELETE_SELF | IN_ONLYDIR);
		}
	}
}

static void unwatch(struct folder *f)
{
	const struct folder *o;
	unsigned i;
	int shared;

	for (i = 0; i < 2; i++) {
		if (f->wd[i] < 0) {
			continue;
		}
		/* The kernel gives one watch per directory: keep it while
		 * another session has the folder open. */
		for (shared = 0, o = open_list; o != NULL && !shared; o = o->next_open) {
			shared = o != f && (o->wd[0] == f->wd[i] || o->wd[1] == f->wd[i]);
		}
		if (!shared) {
			(void)inotify_rm_watch(ino_fd, f->wd[i]);
		}
		f->wd[i] = -1;
	}
}

void folder_watch_ready(void)
{
	static _Alignas(struct inotify_event) char buf[4096];
	const struct inotify_event *ev;
	struct folder *f;
	ssize_t n, off;

	while ((n = io_read(ino_fd, buf, sizeof buf)) > 0) {
		for (off = 0; off < n; off += (ssize_t)(sizeof *ev + ev->len)) {
			ev = (const struct inotify_event *)(buf + off);
			for (f = open_list; f != NULL; f = f->next_open) {
				if (ev->wd == -1 || ev->wd == f->wd[0] || ev->wd == f->wd[1]) {
					f->dirty = 1;
					if (f->wake != NULL) {
						f->wake(f->wake_ctx);
					}
				}
			}
		}
	}
}

/* ---- opening ------------------------------------------------------------- */

int folder_open(struct folder *f, const char *user, const char *name, int readonly)
{
	char path[FOLDER_PATH_MAX];
	struct stat st;
	void (*wake)(void *) = f->wake;
	void *wake_ctx = f->wake_ctx;

	folder_init(f, f->max);
	f->wake = wake;
	f->wake_ctx = wake_ctx;
	snprintf(f->user, sizeof f->user, "%s", user);
	snprintf(f->name, sizeof f->name, "%s", is_inbox(name) ? "INBOX" : name);
	f->readonly = readonly;
	if (folder_path(f->dir, sizeof f->dir, user, name) < 0 ||
	    fit(snprintf(path, sizeof path, "%s/cur", f->dir), sizeof path) < 0) {
		return -1;
	}
	if (stat(path, &st) < 0) {
		return -1;
	}
	if (folder_sync(f) < 0) {
		return -1;
	}
	if (f->full) {
		errno = EFBIG;
		return -1;
	}
	f->open = 1;
	f->next_open = open_list;
	open_list = f;
	watch(f);
	return 0;
}

void folder_close(struct folder *f)
{
	struct folder **p;

	if (!f->open) {
		return;
	}
	unwatch(f);
	for (p = &open_list; *p != NULL; p = &(*p)->next_open) {
		if (*p == f) {
			*p = f->next_open;
			break;
		}
	}
	f->open = 0;
	f->n = 0;
}

/* ---- messages ------------------------------------------------------------ */

/* The path of message i as it is now: the expected name, else found by
 * its base.  0, or -1 with errno (ENOENT: gone, marked MS_GONE). */
static int path_now(struct folder *f, unsigned i, char *out, size_t len)
{
	struct fmsg *m = &f->msgs[i];

	if (msg_path(out, len, f->dir, "cur", folder_base(f, i), m->flags) < 0) {
		return -1;
	}
	if (access(out, F_OK) == 0) {
		return 0;
	}
	if (errno == ENOENT && locate(out, len, f->dir, "cur", folder_base(f, i)) == 0) {
		return 0;
	}
	if (errno == ENOENT) {
		m->state |= MS_GONE;
	}
	return -1;
}

int folder_open_msg(struct folder *f, unsigned i)
{
	char path[FOLDER_PATH_MAX];
	int fd;

	if (path_now(f, i, path, sizeof path) < 0) {
		return -1;
	}
	fd = io_open(path, O_RDONLY, 0);
	if (fd < 0 && errno == ENOENT) {
		f->msgs[i].state |= MS_GONE;   /* removed between the two calls */
	}
	return fd;
}

uint32_t folder_size(struct folder *f, unsigned i)
{
	char path[FOLDER_PATH_MAX];
	uint64_t size;

	if (f->msgs[i].size == FOLDER_SIZE_UNKNOWN && path_now(f, i, path, sizeof path) == 0 &&
	    mailbox_wire_size(folder_base(f, i), path, &size) == 0 && size < FOLDER_SIZE_UNKNOWN) {
		f->msgs[i].size = (uint32_t)size;
	}
	return f->msgs[i].size;
}

time_t folder_date(struct folder *f, unsigned i)
{
	char path[FOLDER_PATH_MAX];
	struct stat st;

	if (path_now(f, i, path, sizeof path) < 0 || stat(path, &st) < 0) {
		return 0;
	}
	return st.st_mtime;
}

int folder_set_flags(struct folder *f, unsigned i, unsigned flags)
{
	char src[FOLDER_PATH_MAX], dst[FOLDER_PATH_MAX];
	struct fmsg *m = &f->msgs[i];

	flags &= FL_DISK;
	if ((m->flags & FL_DISK) == flags) {
		return 0;
	}
	if (path_now(f, i, src, sizeof src) < 0 ||
	    msg_path(dst, sizeof dst, f->dir, "cur", folder_base(f, i), flags) < 0 ||
	    io_rename(src, dst) < 0) {
		return errno ? errno : EIO;
	}
	m->flags = (uint8_t)((m->flags & ~FL_DISK) | flags);
	return 0;
}

int folder_remove(struct folder *f, unsigned i)
{
	char path[FOLDER_PATH_MAX];

	if (path_now(f, i, path, sizeof path) < 0) {
		return errno == ENOENT ? 0 : errno;
	}
	if (io_unlink(path) < 0 && errno != ENOENT) {
		return errno ? errno : EIO;
	}
	f->msgs[i].state |= MS_GONE;
	return 0;
}

static int commit_dir(const char *dir, const struct folder *self, const char *user)
{
	char path[FOLDER_PATH_MAX];

	if (fit(snprintf(path, sizeof path, "%s/cur", dir), sizeof path) < 0 ||
	    io_fsync_dir(path) < 0) {
		return errno ? errno : EIO;
	}
	touched(dir, self);
	quota_forget_user(user);
	return 0;
}

int folder_commit(struct folder *f)
{
	return commit_dir(f->dir, f, f->user);
}

/* ---- COPY, MOVE, APPEND -------------------------------------------------- */

int folder_dest_open(struct folder_dest *d, const char *user, const char *name, unsigned k)
{
	char path[FOLDER_PATH_MAX];
	struct stat st;

	memset(d, 0, sizeof *d);
	snprintf(d->user, sizeof d->user, "%s", user);
	if (folder_path(d->dir, sizeof d->dir, user, name) < 0 ||
	    fit(snprintf(path, sizeof path, "%s/cur", d->dir), sizeof path) < 0 ||
	    stat(path, &st) < 0 || uids_reserve(d->dir, k, 0, &d->validity, &d->first) < 0) {
		return -1;
	}
	d->k = k;
	return 0;
}

/* dir/cur/<unique><tags>,U=<uid>:2,<flags> for the next reserved UID. */
static int dest_name(struct folder_dest *d, char *out, size_t len, const char *unique,
                     const char *tags, size_t tagslen, unsigned flags, uint32_t *uid)
{
	char letters[8];

	if (d->used == d->k) {
		errno = EOVERFLOW;
		return -1;
	}
	*uid = d->first + d->used;
	info_letters(flags & FL_DISK, letters);
	if (fit(snprintf(out, len, "%s/cur/%s%.*s,U=%u:2,%s", d->dir, unique, (int)tagslen, tags,
	                 *uid, letters), len) < 0) {
		return -1;
	}
	d->used++;
	return 0;
}

int folder_put(struct folder *f, unsigned i, struct folder_dest *d, int move, uint32_t *uid)
{
	char src[FOLDER_PATH_MAX], dst[FOLDER_PATH_MAX], tags[NAME_LEN], unique[MAILDIR_NAME_MAX];
	const char *base = folder_base(f, i);
	size_t ulen = strcspn(base, ",");
	size_t tlen = strip_uid(base + ulen, strlen(base + ulen), tags);

	/* A copy is a new message (a new POP3 UIDL); a move keeps its own. */
	if (move) {
		snprintf(unique, sizeof unique, "%.*s", (int)ulen, base);
	} else {
		maildir_unique_name(unique, sizeof unique);
	}
	if (path_now(f, i, src, sizeof src) < 0 ||
	    dest_name(d, dst, sizeof dst, unique, tags, tlen, f->msgs[i].flags, uid) < 0) {
		return errno ? errno : EIO;
	}
	if ((move ? io_rename(src, dst) : io_link(src, dst)) < 0) {
		return errno ? errno : EIO;
	}
	if (move) {
		f->msgs[i].state |= MS_GONE;
	}
	return 0;
}

int folder_put_file(struct folder_dest *d, const char *tmp, const char *unique, uint64_t size,
                    uint64_t wire, unsigned flags, uint32_t *uid)
{
	char dst[FOLDER_PATH_MAX], tags[64];
	int n = snprintf(tags, sizeof tags, ",S=%llu,W=%llu", (unsigned long long)size,
	                 (unsigned long long)wire);

	if (dest_name(d, dst, sizeof dst, unique, tags, (size_t)n, flags, uid) < 0 ||
	    io_rename(tmp, dst) < 0) {
		n = errno ? errno : EIO;
		(void)io_unlink(tmp);
		return n;
	}
	return 0;
}

int folder_dest_commit(struct folder_dest *d)
{
	return commit_dir(d->dir, NULL, d->user);
}

struct undo {
	const struct folder_dest *d;
	char *dir;
};

static void undo_one(const char *name, int type, void *ctx)
{
	struct undo *u = ctx;
	char path[FOLDER_PATH_MAX];
	uint32_t uid = name_uid(name, base_len(name));

	(void)type;
	if (uid >= u->d->first && uid < u->d->first + u->d->used &&
	    fit(snprintf(path, sizeof path, "%s/%s", u->dir, name), sizeof path) == 0) {
		(void)io_unlink(path);
	}
}

void folder_dest_undo(struct folder_dest *d)
{
	char dir[FOLDER_PATH_MAX];
	struct undo u = { d, dir };

	if (d->used > 0 && fit(snprintf(dir, sizeof dir, "%s/cur", d->dir), sizeof dir) == 0) {
		(void)io_each_entry(dir, undo_one, &u);
		(void)io_fsync_dir(dir);
	}
}

int folder_tmp_dir(char *out, size_t len, const char *user, const char *name)
{
	char dir[FOLDER_PATH_MAX];

	if (folder_path(dir, sizeof dir, user, name) < 0) {
		return -1;
	}
	return fit(snprintf(out, len, "%s/tmp", dir), len);
}

/* ---- STATUS -------------------------------------------------------------- */

struct count {
	struct folder_status *st;
	int innew;
};

static void count_one(const char *name, int type, void *ctx)
{
	struct count *c = ctx;

	if (name[0] == '.' || type == DT_DIR) {
		return;
	}
	c->st->messages++;
	if (c->innew) {
		c->st->recent++;
		c->st->unseen++;
	} else if (!(info_flags(name + base_len(name)) & FL_SEEN)) {
		c->st->unseen++;
	}
}

int folder_status(const char *user, const char *name, struct folder_status *st)
{
	char dir[FOLDER_PATH_MAX], path[FOLDER_PATH_MAX];
	struct count c = { st, 0 };

	memset(st, 0, sizeof *st);
	if (folder_path(dir, sizeof dir, user, name) < 0 ||
	    fit(snprintf(path, sizeof path, "%s/cur", dir), sizeof path) < 0 ||
	    io_each_entry(path, count_one, &c) < 0) {
		return -1;
	}
	c.innew = 1;
	if (fit(snprintf(path, sizeof path, "%s/new", dir), sizeof path) == 0) {
		(void)io_each_entry(path, count_one, &c);
	}
	return uids_load(dir, &st->validity, &st->uidnext);
}

/* ---- the folder list ----------------------------------------------------- */

struct each {
	void (*fn)(const char *name, void *ctx);
	void *ctx;
	const char *dir;
};

static void each_one(const char *name, int type, void *ctx)
{
	struct each *e = ctx;
	char path[FOLDER_PATH_MAX];
	struct stat st;

	if (name[0] != '.' || !folder_name_ok(name + 1, strlen(name + 1))) {
		return;
	}
	if (type != DT_DIR) {
		if (type != DT_UNKNOWN ||
		    fit(snprintf(path, sizeof path, "%s/%s", e->dir, name), sizeof path) < 0 ||
		    stat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
			return;
		}
	}
	e->fn(name + 1, e->ctx);
}

int folder_each(const char *user, void (*fn)(const char *name, void *ctx), void *ctx)
{
	char dir[FOLDER_PATH_MAX];
	struct each e = { fn, ctx, dir };

	if (user_dir(dir, sizeof dir, user) < 0) {
		return -1;
	}
	return io_each_entry(dir, each_one, &e);
}

static int exists(const char *user, const char *name)
{
	char dir[FOLDER_PATH_MAX];
	struct stat st;

	return folder_path(dir, sizeof dir, user, name) == 0 && stat(dir, &st) == 0;
}

static int make_folder(const char *user, const char *name)
{
	char dir[FOLDER_PATH_MAX], path[FOLDER_PATH_MAX];
	int fd;

	if (folder_path(dir, sizeof dir, user, name) < 0 || maildir_create(dir) < 0 ||
	    fit(snprintf(path, sizeof path, "%s/maildirfolder", dir), sizeof path) < 0) {
		return -1;
	}
	/* Maildir++'s mark of a folder, for other programs reading it. */
	fd = io_open(path, O_WRONLY | O_CREAT, 0600);
	if (fd < 0) {
		return -1;
	}
	(void)io_close(fd);
	return uids_write(dir, new_validity(), 1);
}

int folder_create(const char *user, const char *name)
{
	char part[FOLDER_NAME_MAX + 1];
	size_t len = strlen(name), i;

	if (is_inbox(name)) {
		errno = EEXIST;
		return -1;
	}
	if (!folder_name_ok(name, len)) {
		errno = EINVAL;
		return -1;
	}
	if (exists(user, name)) {
		errno = EEXIST;
		return -1;
	}
	/* The folders above it too (RFC 3501 6.3.3). */
	for (i = 0; i <= len; i++) {
		if (name[i] != '.' && name[i] != '\0') {
			continue;
		}
		memcpy(part, name, i);
		part[i] = '\0';
		if (!exists(user, part) && make_folder(user, part) < 0) {
			return -1;
		}
	}
	return 0;
}

struct inner {
	const char *name;
	size_t len;
	char *list;             /* names, NUL-separated */
	size_t used, size;
	int any;
};

static void inner_one(const char *name, void *ctx)
{
	struct inner *in = ctx;
	size_t n = strlen(name) + 1;

	if (strncmp(name, in->name, in->len) == 0 && name[in->len] == '.') {
		in->any = 1;
		if (in->list != NULL && in->used + n <= in->size) {
			memcpy(in->list + in->used, name, n);
			in->used += n;
		}
	}
}

static void unlink_one(const char *name, int type, void *ctx)
{
	char path[FOLDER_PATH_MAX];

	(void)type;
	if (fit(snprintf(path, sizeof path, "%s/%s", (const char *)ctx, name), sizeof path) == 0) {
		(void)io_unlink(path);
	}
}

int folder_delete(const char *user, const char *name)
{
	static const char *const subs[] = { "cur", "new", "tmp" };
	char dir[FOLDER_PATH_MAX], gone[FOLDER_PATH_MAX], path[FOLDER_PATH_MAX], unique[96];
	struct inner in = { name, strlen(name), NULL, 0, 0, 0 };
	unsigned i;

	if (is_inbox(name)) {
		errno = EPERM;
		return -1;
	}
	if (folder_path(dir, sizeof dir, user, name) < 0) {
		return -1;
	}
	if (!exists(user, name)) {
		errno = ENOENT;
		return -1;
	}
	if (folder_each(user, inner_one, &in) < 0) {
		return -1;
	}
	if (in.any) {
		errno = ENOTEMPTY;
		return -1;
	}
	/* Out of sight in one rename, then emptied: a crash in between
	 * leaves a name no listing shows, not half a folder. */
	maildir_unique_name(unique, sizeof unique);
	if (user_dir(path, sizeof path, user) < 0 ||
	    fit(snprintf(gone, sizeof gone, "%s/..deleted.%s", path, unique), sizeof gone) < 0 ||
	    io_rename(dir, gone) < 0 || io_fsync_dir(path) < 0) {
		return -1;
	}
	touched(dir, NULL);
	for (i = 0; i < 3; i++) {
		if (fit(snprintf(path, sizeof path, "%s/%s", gone, subs[i]), sizeof path) == 0) {
			(void)io_each_entry(path, unlink_one, path);
			(void)rmdir(path);
		}
	}
	(void)io_each_entry(gone, unlink_one, gone);
	if (rmdir(gone) < 0) {
		log_msg(LOG_WARNING, "cannot remove %s: %m", gone);
	}
	quota_forget_user(user);
	return 0;
}

int folder_rename(const char *user, const char *from, const char *to)
{
	static char list[8192];
	char src[FOLDER_PATH_MAX], dst[FOLDER_PATH_MAX], child[FOLDER_NAME_MAX * 2 + 2], udir[FOLDER_PATH_MAX];
	struct inner in = { from, strlen(from), list, 0, sizeof list, 0 };
	size_t off, dot;

	if (is_inbox(from)) {
		errno = EPERM;   /* RFC 3501 6.3.5's INBOX move: not offered */
		return -1;
	}
	if (is_inbox(to) || exists(user, to)) {
		errno = EEXIST;
		return -1;
	}
	if (!folder_name_ok(to, strlen(to))) {
		errno = EINVAL;
		return -1;
	}
	if (!exists(user, from)) {
		errno = ENOENT;
		return -1;
	}
	if (strncmp(to, from, in.len) == 0 && to[in.len] == '.') {
		errno = EINVAL;   /* into itself */
		return -1;
	}
	if (folder_each(user, inner_one, &in) < 0 || user_dir(udir, sizeof udir, user) < 0) {
		return -1;
	}
	/* The folders above the new name. */
	dot = strlen(to);
	while (dot > 0 && to[dot] != '.') {
		dot--;
	}
	if (dot > 0) {
		snprintf(child, sizeof child, "%.*s", (int)dot, to);
		if (!exists(user, child) && folder_create(user, child) < 0) {
			return -1;
		}
	}
	if (folder_path(src, sizeof src, user, from) < 0 || folder_path(dst, sizeof dst, user, to) < 0 ||
	    io_rename(src, dst) < 0) {
		return -1;
	}
	touched(src, NULL);
	for (off = 0; off < in.used; off += strlen(list + off) + 1) {
		if (fit(snprintf(child, sizeof child, "%s%s", to, list + off + in.len), sizeof child) < 0 ||
		    !folder_name_ok(child, strlen(child)) ||
		    folder_path(src, sizeof src, user, list + off) < 0 ||
		    folder_path(dst, sizeof dst, user, child) < 0 || io_rename(src, dst) < 0) {
			log_msg(LOG_WARNING, "rename of %s's folder %s: %m", user, list + off);
			continue;
		}
		touched(src, NULL);
	}
	return io_fsync_dir(udir);
}

/* ---- subscriptions ------------------------------------------------------- */

static char subs[SUBS_MAX + 1];

/* The user's subscriptions file into subs; its length, or -1 (ENOENT:
 * none yet). */
static long subs_read(const char *user)
{
	char path[FOLDER_PATH_MAX];
	ssize_t n, got = 0;
	int fd;

	if (fit(snprintf(path, sizeof path, "%s/%s/" SUBS_FILE, root(), user), sizeof path) < 0 ||
	    (fd = io_open(path, O_RDONLY, 0)) < 0) {
		return -1;
	}
	while ((n = io_read(fd, subs + got, SUBS_MAX - (size_t)got)) > 0) {
		got += n;
	}
	(void)io_close(fd);
	subs[got] = '\0';
	return n < 0 ? -1 : (long)got;
}

static int subs_write(const char *user, size_t len)
{
	char dir[FOLDER_PATH_MAX];
	int e;

	if (user_dir(dir, sizeof dir, user) < 0) {
		return -1;
	}
	e = maildir_write_file(dir, SUBS_FILE, subs, len);
	if (e != 0) {
		errno = e;
		return -1;
	}
	return 0;
}

int folder_subscribe(const char *user, const char *name, int on)
{
	long len = subs_read(user);
	size_t nl = strlen(name), off = 0, l;

	if (len < 0) {
		if (errno != ENOENT) {
			return -1;
		}
		len = 0;
		subs[0] = '\0';
	}
	while (off < (size_t)len) {
		l = strcspn(subs + off, "\n");
		if (l == nl && memcmp(subs + off, name, nl) == 0) {
			if (on) {
				return 0;
			}
			l += subs[off + l] == '\n';
			memmove(subs + off, subs + off + l, (size_t)len - off - l);
			len -= (long)l;
			continue;
		}
		off += l + (subs[off + l] == '\n');
	}
	if (on) {
		if ((size_t)len + nl + 2 > SUBS_MAX) {
			errno = EFBIG;
			return -1;
		}
		if (len > 0 && subs[len - 1] != '\n') {
			subs[len++] = '\n';
		}
		memcpy(subs + len, name, nl);
		len += (long)nl;
		subs[len++] = '\n';
	}
	return subs_write(user, (size_t)len);
}

int folder_each_subscribed(const char *user, void (*fn)(const char *name, void *ctx), void *ctx)
{
	static char copy[SUBS_MAX + 1];
	long len = subs_read(user);
	char *p, *nl;

	if (len < 0) {
		return errno == ENOENT ? 0 : -1;
	}
	/* fn may look at folders, which reads subs again. */
	memcpy(copy, subs, (size_t)len + 1);
	for (p = copy; *p != '\0'; p = nl) {
		nl = p + strcspn(p, "\n");
		if (*nl == '\n') {
			*nl++ = '\0';
		}
		if (*p != '\0') {
			fn(p, ctx);
		}
	}
	return 0;
}

int folder_setup_user(const char *user)
{
	char dir[FOLDER_PATH_MAX];
	size_t len = 0;
	unsigned i;

	/* Its subscriptions file says the Maildir and the folders are made. */
	if (subs_read(user) >= 0) {
		return 0;
	}
	if (errno != ENOENT || io_mkdirs(root(), 0700) < 0 || user_dir(dir, sizeof dir, user) < 0 ||
	    maildir_create(dir) < 0) {
		return -1;
	}
	/* The first login: the folders every client looks for (RFC 6154). */
	for (i = 0; i < sizeof standard / sizeof standard[0]; i++) {
		if (folder_create(user, standard[i]) < 0 && errno != EEXIST) {
			return -1;
		}
		len += (size_t)snprintf(subs + len, sizeof subs - len, "%s\n", standard[i]);
	}
	return subs_write(user, len);
}
