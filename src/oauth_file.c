/* oauth_file.c - reading and atomically rewriting the smarthost_oauth file. */
#include "oauth_file.h"
#include "http.h"
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STALE_TMP_S 60   /* a temporary file this old was left by a crash */

/* One buffer for the file read, one for the file written: start-up, the
 * rare rotation and the login command, never two at once. */
static char in[OAUTH_FILE_MAX + 1];
static char out[OAUTH_FILE_MAX + OAUTH_REFRESH_MAX + 32];

static int fail(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
	return -1;
}

/* The whole file into in[]; its length, or -1 with errno (EFBIG: too
 * large). */
static ssize_t slurp(const char *path, struct stat *st)
{
	size_t n = 0;
	ssize_t r;
	int fd = io_open(path, O_RDONLY, 0), e;

	if (fd < 0) {
		return -1;
	}
	if (fstat(fd, st) < 0) {
		goto fail;
	}
	if (!S_ISREG(st->st_mode)) {
		errno = EINVAL;
		goto fail;
	}
	while ((r = io_read(fd, in + n, sizeof in - 1 - n)) > 0) {
		n += (size_t)r;
		if (n == sizeof in - 1) {
			errno = EFBIG;
			goto fail;
		}
	}
	if (r < 0) {
		goto fail;
	}
	io_close(fd);
	in[n] = '\0';
	return (ssize_t)n;
fail:
	e = errno;
	io_close(fd);
	errno = e;
	return -1;
}

static void identity(struct oauth_file *f, const struct stat *st)
{
	f->dev = st->st_dev;
	f->ino = st->st_ino;
	f->size = st->st_size;
	f->mtime = st->st_mtim;
	f->uid = st->st_uid;
	f->mode = st->st_mode;
}

static const struct {
	const char *key;
	size_t off, size;
	int spaces;   /* the value may hold spaces */
} keys[] = {
#define K(name, sp) { #name, offsetof(struct oauth_file, name), \
                      sizeof(((struct oauth_file *)0)->name), sp }
	K(user, 0), K(token_endpoint, 0), K(device_endpoint, 0), K(client_id, 0),
	K(client_secret, 0), K(scope, 1), K(refresh_token, 0),
#undef K
};

/* The key of a line (its length in *klen) and where its value starts;
 * NULL for an empty or comment line. */
static const char *split(const char *line, size_t len, size_t *klen)
{
	size_t k = 0;

	while (k < len && (line[k] == ' ' || line[k] == '\t')) {
		k++;
	}
	if (k == len || line[k] == '#') {
		return NULL;
	}
	line += k;
	len -= k;
	*klen = strcspn(line, " \t");
	if (*klen > len) {
		*klen = len;
	}
	return line;
}

int oauth_file_read(const char *path, struct oauth_file *f, char *err, size_t errlen)
{
	char host[HTTP_HOST_MAX], hpath[HTTP_PATH_MAX];
	uint16_t port;
	struct stat st;
	ssize_t n = slurp(path, &st);
	unsigned lineno = 0, i, seen = 0;
	const char *p, *end, *key, *v;
	size_t klen, vlen, j;

	memset(f, 0, sizeof *f);
	if (n < 0) {
		return fail(err, errlen, "smarthost_oauth %s: %s", path,
		            errno == EFBIG ? "larger than 12288 octets" : strerror(errno));
	}
	identity(f, &st);
	for (p = in, end = in + n; p < end; p += vlen + 1) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));

		vlen = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
		lineno++;
		key = split(p, vlen, &klen);
		if (key == NULL) {
			continue;
		}
		for (i = 0; i < sizeof keys / sizeof keys[0]; i++) {
			if (strlen(keys[i].key) == klen && memcmp(keys[i].key, key, klen) == 0) {
				break;
			}
		}
		if (i == sizeof keys / sizeof keys[0]) {
			return fail(err, errlen, "%s:%u: unknown key '%.*s'", path, lineno,
			            (int)(klen < 40 ? klen : 40), key);
		}
		if (seen & 1u << i) {
			return fail(err, errlen, "%s:%u: %s twice", path, lineno, keys[i].key);
		}
		seen |= 1u << i;
		v = key + klen;
		j = (size_t)(p + vlen - v);
		while (j > 0 && (*v == ' ' || *v == '\t')) {
			v++;
			j--;
		}
		while (j > 0 && (v[j - 1] == ' ' || v[j - 1] == '\t' || v[j - 1] == '\r')) {
			j--;
		}
		if (j == 0) {
			return fail(err, errlen, "%s:%u: %s: missing value", path, lineno, keys[i].key);
		}
		if (j >= keys[i].size) {
			return fail(err, errlen, "%s:%u: %s: longer than %zu octets", path, lineno,
			            keys[i].key, keys[i].size - 1);
		}
		for (klen = 0; klen < j; klen++) {
			unsigned char c = (unsigned char)v[klen];

			if (c < 0x20 || c > 0x7e || ((c == ' ' || c == '\t') && !keys[i].spaces)) {
				return fail(err, errlen, "%s:%u: %s: %s", path, lineno, keys[i].key,
				            c == ' ' || c == '\t' ? "no spaces in this value" :
				            "a control or 8-bit character");
			}
		}
		memcpy((char *)f + keys[i].off, v, j);
		((char *)f + keys[i].off)[j] = '\0';
		if (strstr(keys[i].key, "endpoint") != NULL &&
		    http_url_parse((char *)f + keys[i].off, host, sizeof host, &port, hpath,
		                   sizeof hpath) < 0) {
			return fail(err, errlen, "%s:%u: %s: not an https:// URL with a host name",
			            path, lineno, keys[i].key);
		}
	}
	return 0;
}

int oauth_file_changed(const char *path, const struct oauth_file *f)
{
	struct stat st;

	if (stat(path, &st) < 0) {
		return -1;
	}
	return st.st_dev != f->dev || st.st_ino != f->ino || st.st_size != f->size ||
	       st.st_mtim.tv_sec != f->mtime.tv_sec || st.st_mtim.tv_nsec != f->mtime.tv_nsec;
}

/* The file's text with its refresh_token line replaced (or added) into
 * out[]; the new length. */
static size_t compose(size_t n, const char *refresh)
{
	const char *p, *end = in + n, *key;
	size_t o = 0, len, klen;
	int done = 0;

	for (p = in; p < end; p += len + 1) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));

		len = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
		key = split(p, len, &klen);
		if (key != NULL && klen == 13 && memcmp(key, "refresh_token", 13) == 0) {
			if (!done) {
				o += (size_t)snprintf(out + o, sizeof out - o, "refresh_token %s\n", refresh);
				done = 1;
			}
			continue;
		}
		memcpy(out + o, p, len);   /* in[] and refresh fit out[] whole */
		o += len;
		out[o++] = '\n';
	}
	if (!done) {
		o += (size_t)snprintf(out + o, sizeof out - o, "refresh_token %s\n", refresh);
	}
	return o;
}

int oauth_file_save(const char *path, struct oauth_file *f, const char *refresh, char *err,
                    size_t errlen)
{
	char tmp[OAUTH_URL_MAX + 16], dir[OAUTH_URL_MAX];
	struct stat st, ts;
	ssize_t n;
	size_t len;
	int fd = -1, e, tries;

	if (strlen(refresh) >= OAUTH_REFRESH_MAX || strlen(path) >= OAUTH_URL_MAX) {
		fail(err, errlen, "smarthost_oauth %s: the refresh token or the path is too long", path);
		return E2BIG;
	}
	n = slurp(path, &st);
	if (n < 0) {
		e = errno;
		fail(err, errlen, "smarthost_oauth %s: %s", path, strerror(e));
		return e;
	}
	len = compose((size_t)n, refresh);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	io_dir_of(path, dir, sizeof dir);
	/* O_EXCL: two writers (the daemon and picomail oauth login) never
	 * write one temporary file; one left by a crash is taken over. */
	for (tries = 0; tries < 2; tries++) {
		fd = io_open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
		if (fd >= 0 || errno != EEXIST || lstat(tmp, &ts) < 0 ||
		    ts.st_mtime > time(NULL) - STALE_TMP_S || io_unlink(tmp) < 0) {
			break;
		}
	}
	if (fd < 0) {
		e = errno == EEXIST ? EBUSY : errno;
		fail(err, errlen, "%s: %s", tmp, e == EBUSY ? "another writer is at work" : strerror(e));
		return e;
	}
	/* The owner stays (root running picomail oauth login keeps the file
	 * run_as's); the mode is 0600 whatever the umask. */
	if ((geteuid() == 0 && (st.st_uid != 0 || st.st_gid != 0) &&
	     fchown(fd, st.st_uid, st.st_gid) < 0) || fchmod(fd, 0600) < 0 ||
	    io_write_all(fd, out, len) < 0 || io_fsync(fd) < 0) {
		goto fail;
	}
	if (io_close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (io_rename(tmp, path) < 0) {
		goto fail;
	}
	memset(out, 0, len);
	if (io_fsync_dir(dir) < 0) {
		/* Renamed: the new token is what the file holds from now on,
		 * only not yet known to be on the disk. */
		e = errno;
		fail(err, errlen, "%s: fsync: %s", dir, strerror(e));
	} else {
		e = 0;
	}
	if (refresh != f->refresh_token) {
		memcpy(f->refresh_token, refresh, strlen(refresh) + 1);   /* length checked above */
	}
	if (stat(path, &st) == 0) {
		identity(f, &st);
	}
	return e;
fail:
	e = errno;
	memset(out, 0, len);
	if (fd >= 0) {
		io_close(fd);
	}
	(void)io_unlink(tmp);
	fail(err, errlen, "%s: %s", tmp, strerror(e));
	return e;
}
