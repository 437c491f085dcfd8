/* greylist.c - the greylisting table: fixed size, LRU, saved rarely.
 *
 * An entry is a 64-bit hash of the triplet (SHA-256, truncated: a client
 * cannot make its triplet collide with one that passed), the time it was
 * first seen, the time it was last seen, and the time it passed (0: not
 * yet).  Lookups scan the table: 4096 entries are a few microseconds, once
 * per RCPT, and a scan needs no index to keep consistent.
 *
 * Eviction keeps what is worth keeping: an expired entry goes first, then
 * the least recently seen triplet that never passed (a spam run makes
 * many), and only then the least recently seen one that did.
 *
 * The file is a 16-octet magic line and one 20-octet record per entry,
 * little-endian: key (8), first (4), last (4), passed (4).  A file that
 * is not exactly that is ignored with a warning: it is only a cache.
 */
#include "greylist.h"
#include "io.h"
#include "log.h"
#include "pool.h"

#include <bearssl.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define GREYLIST_MAGIC     "picomail-grey-1\n"
#define GREYLIST_MAGIC_LEN 16
#define GREYLIST_REC       20
#define GREYLIST_CHUNK     200   /* records per read or write */

struct grey_entry {
	uint64_t key;
	uint32_t first;    /* 0: the slot is free */
	uint32_t last;
	uint32_t passed;   /* when the retry passed; 0: not yet */
};

static struct grey_entry *table;
static unsigned used;
static int dirty;
static time_t saved_at;
static char path[512], tmppath[512 + 8];
static unsigned char chunk[GREYLIST_CHUNK * GREYLIST_REC];

unsigned greylist_used(void)
{
	return used;
}

/* ---- the file ------------------------------------------------------------ */

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void record_put(unsigned char *r, const struct grey_entry *e)
{
	put32(r, (uint32_t)e->key);
	put32(r + 4, (uint32_t)(e->key >> 32));
	put32(r + 8, e->first);
	put32(r + 12, e->last);
	put32(r + 16, e->passed);
}

/* 0, or -1 if the record cannot be one the table wrote. */
static int record_get(const unsigned char *r, struct grey_entry *e)
{
	e->key = (uint64_t)get32(r) | (uint64_t)get32(r + 4) << 32;
	e->first = get32(r + 8);
	e->last = get32(r + 12);
	e->passed = get32(r + 16);
	return e->first == 0 || e->last < e->first ||
	       (e->passed != 0 && (e->passed < e->first || e->passed > e->last)) ? -1 : 0;
}

/* Reads exactly n octets, or fewer at the end of the file; -1 on error. */
static ssize_t read_full(int fd, unsigned char *buf, size_t n)
{
	size_t got = 0;
	ssize_t r;

	while (got < n) {
		r = io_read(fd, buf + got, n - got);
		if (r < 0) {
			return -1;
		}
		if (r == 0) {
			break;
		}
		got += (size_t)r;
	}
	return (ssize_t)got;
}

/* The records of an open file into the table; -1 if it is not sound. */
static int load_fd(int fd)
{
	unsigned char magic[GREYLIST_MAGIC_LEN];
	ssize_t n;
	size_t i;

	if (read_full(fd, magic, sizeof magic) != (ssize_t)sizeof magic ||
	    memcmp(magic, GREYLIST_MAGIC, sizeof magic) != 0) {
		return -1;
	}
	for (;;) {
		n = read_full(fd, chunk, sizeof chunk);
		if (n < 0 || n % GREYLIST_REC != 0) {
			return -1;
		}
		if (n == 0) {
			return 0;
		}
		for (i = 0; i < (size_t)n; i += GREYLIST_REC) {
			if (used == GREYLIST_ENTRIES || record_get(chunk + i, &table[used]) < 0) {
				return -1;
			}
			used++;
		}
	}
}

static void load(void)
{
	int fd = io_open(path, O_RDONLY | O_CLOEXEC, 0);

	if (fd < 0) {
		if (errno != ENOENT) {
			log_msg(LOG_WARNING, "greylist: %s: %m", path);
		}
		return;
	}
	if (load_fd(fd) < 0) {
		log_msg(LOG_WARNING, "greylist: %s is damaged: starting with an empty table", path);
		memset(table, 0, sizeof *table * GREYLIST_ENTRIES);
		used = 0;
	} else {
		log_msg(LOG_INFO, "greylist: %u triplets loaded from %s", used, path);
	}
	(void)io_close(fd);
}

static int write_table(int fd)
{
	size_t fill;
	unsigned i;

	if (io_write_all(fd, GREYLIST_MAGIC, GREYLIST_MAGIC_LEN) < 0) {
		return -1;
	}
	for (i = 0, fill = 0; i < GREYLIST_ENTRIES; i++) {
		if (table[i].first == 0) {
			continue;
		}
		record_put(chunk + fill, &table[i]);
		fill += GREYLIST_REC;
		if (fill == sizeof chunk) {
			if (io_write_all(fd, chunk, fill) < 0) {
				return -1;
			}
			fill = 0;
		}
	}
	return fill > 0 ? io_write_all(fd, chunk, fill) : 0;
}

int greylist_save(time_t now, int force)
{
	char dir[sizeof path];
	char *slash;
	int fd, err;

	if (table == NULL || !dirty || (!force && now - saved_at < GREYLIST_SAVE_S)) {
		return 0;
	}
	fd = io_open(tmppath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		goto fail;
	}
	if (write_table(fd) < 0 || io_fsync(fd) < 0) {
		err = errno;
		(void)io_close(fd);
		(void)io_unlink(tmppath);
		errno = err;
		goto fail;
	}
	if (io_close(fd) < 0 || io_rename(tmppath, path) < 0) {
		err = errno;
		(void)io_unlink(tmppath);
		errno = err;
		goto fail;
	}
	memcpy(dir, path, sizeof dir);
	slash = strrchr(dir, '/');
	if (slash != NULL) {
		*slash = '\0';
	}
	if (io_fsync_dir(slash != NULL ? dir : ".") < 0) {
		goto fail;
	}
	dirty = 0;
	saved_at = now;
	return 0;
fail:
	/* Tried again at the next save: the table in memory is still right. */
	saved_at = now;
	log_msg(LOG_WARNING, "greylist: cannot save %s: %m", path);
	return -1;
}

int greylist_init(const char *spool)
{
	if ((size_t)snprintf(path, sizeof path, "%s/greylist", spool) >= sizeof path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	snprintf(tmppath, sizeof tmppath, "%s.tmp", path);
	if (table != NULL) {
		return 0;
	}
	table = pool_zalloc(sizeof *table * GREYLIST_ENTRIES);
	if (table == NULL) {
		return -1;
	}
	load();
	return 0;
}

/* ---- lookups ------------------------------------------------------------- */

static void hash_lower(br_sha256_context *h, const char *s)
{
	unsigned char c;

	for (; *s != '\0'; s++) {
		c = (unsigned char)tolower((unsigned char)*s);
		br_sha256_update(h, &c, 1);
	}
	br_sha256_update(h, "", 1);
}

/* The triplet's key: the client's /24 or /64, and both addresses in
 * lower case, each ended by a NUL so that no two triplets run together. */
static uint64_t triplet_key(const struct sockaddr_storage *peer, const char *from,
                            const char *rcpt)
{
	unsigned char net[9] = { 0 }, out[32];
	br_sha256_context h;
	uint64_t key = 0;
	unsigned i;

	if (peer->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)peer;

		net[0] = 4;
		memcpy(net + 1, &a->sin_addr, 3);
	} else if (peer->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)peer;

		if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
			net[0] = 4;
			memcpy(net + 1, a->sin6_addr.s6_addr + 12, 3);
		} else {
			net[0] = 6;
			memcpy(net + 1, a->sin6_addr.s6_addr, 8);
		}
	}
	br_sha256_init(&h);
	br_sha256_update(&h, net, sizeof net);
	hash_lower(&h, from);
	hash_lower(&h, rcpt);
	br_sha256_out(&h, out);
	for (i = 0; i < 8; i++) {
		key = key << 8 | out[i];
	}
	return key;
}

static int expired(const struct grey_entry *e, uint32_t now)
{
	return e->passed != 0 ? now - e->last > GREYLIST_KEEP_S : now - e->first > GREYLIST_RETRY_S;
}

/* The slot for a new triplet: a free one, an expired one, else the least
 * recently seen of those that never passed, else of all. */
static struct grey_entry *victim(uint32_t now)
{
	struct grey_entry *pending = NULL, *any = NULL, *e;
	unsigned i;

	for (i = 0; i < GREYLIST_ENTRIES; i++) {
		e = &table[i];
		if (e->first == 0 || expired(e, now)) {
			return e;
		}
		if (e->passed == 0 && (pending == NULL || e->last < pending->last)) {
			pending = e;
		}
		if (any == NULL || e->last < any->last) {
			any = e;
		}
	}
	return pending != NULL ? pending : any;
}

static struct grey_entry *find(uint64_t key)
{
	unsigned i;

	for (i = 0; i < GREYLIST_ENTRIES; i++) {
		if (table[i].first != 0 && table[i].key == key) {
			return &table[i];
		}
	}
	return NULL;
}

int greylist_check(const struct sockaddr_storage *peer, const char *from, const char *rcpt,
                   unsigned delay, time_t when, unsigned *wait)
{
	/* 0 marks a free slot: a clock before 1970 (or unset) counts as 1. */
	uint32_t now = when > 0 && when < (time_t)UINT32_MAX ? (uint32_t)when : 1;
	uint64_t key;
	struct grey_entry *e;

	*wait = 0;
	if (table == NULL) {
		return 1;
	}
	key = triplet_key(peer, from, rcpt);
	e = find(key);
	/* A clock set back (a router before its NTP sync) restarts the wait
	 * rather than making it endless. */
	if (e != NULL && (expired(e, now) || now < e->first)) {
		e->first = 0;
		used--;
		e = NULL;
	}
	if (e == NULL) {
		e = victim(now);
		if (e->first == 0) {
			used++;
		}
		e->key = key;
		e->first = now;
		e->last = now;
		e->passed = 0;
		dirty = 1;
		*wait = delay;
		return 0;
	}
	/* A day's news of a known triplet is worth a save, so that one seen
	 * daily is not forgotten after a restart; an hour's is not. */
	if (now - e->last > 86400) {
		dirty = 1;
	}
	e->last = now;
	if (e->passed == 0) {
		if (now - e->first < delay) {
			*wait = delay - (now - e->first);
			return 0;
		}
		e->passed = now;
		dirty = 1;
	}
	return 1;
}
