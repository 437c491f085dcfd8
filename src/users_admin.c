/* users_admin.c - picomail passwd USER, useradd, userdel and users.
 *
 * Command-line tools, not the daemon: they may block, and use static
 * buffers sized for a small box's users file.
 */
#include "users_admin.h"
#include "auth.h"
#include "conf.h"
#include "crypt_sha.h"
#include "io.h"
#include "quota.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#define EX_USAGE 64

static int admin_fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int admin_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* ---- passwords ----------------------------------------------------------- */

/* One line into buf, without echo on a terminal.  0, -1 (nothing), -2
 * (too long). */
static int read_line(const char *prompt, char *buf, size_t len, int tty)
{
	struct termios old, noecho;
	int ok, c;
	size_t n;

	if (tty) {
		fprintf(stderr, "%s", prompt);
		if (tcgetattr(STDIN_FILENO, &old) < 0) {
			return -1;
		}
		noecho = old;
		noecho.c_lflag &= ~(tcflag_t)ECHO;
		(void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &noecho);
	}
	ok = fgets(buf, (int)len, stdin) != NULL;
	if (tty) {
		(void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fputc('\n', stderr);
	}
	if (!ok) {
		return -1;
	}
	n = strcspn(buf, "\r\n");
	if (buf[n] == '\0' && n == len - 1) {
		/* No line end in a full buffer: drop the rest, refuse it. */
		while ((c = getchar()) != EOF && c != '\n') {
		}
		memset(buf, 0, len);
		return -2;
	}
	buf[n] = '\0';
	return n > 0 ? 0 : -1;
}

int users_admin_read_password(char *buf, size_t len, int confirm)
{
	static char again[256];
	int tty = isatty(STDIN_FILENO), r;

	r = read_line(confirm && tty ? "New password: " : "Password: ", buf, len, tty);
	if (r == -2) {
		fprintf(stderr, "picomail: password too long (max %zu)\n", len - 2);
		return -1;
	}
	if (r < 0) {
		fprintf(stderr, "picomail: no password given\n");
		return -1;
	}
	if (confirm && tty) {
		r = read_line("Again: ", again, sizeof again, tty);
		if (r < 0 || strcmp(buf, again) != 0) {
			memset(again, 0, sizeof again);
			memset(buf, 0, len);
			fprintf(stderr, "picomail: the passwords do not match\n");
			return -1;
		}
		memset(again, 0, sizeof again);
	}
	return 0;
}

int users_admin_hash(const char *pw, char *out, size_t len)
{
	static const char b64[] =
	    "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	unsigned char rnd[16];
	char salt[3 + 16 + 2];
	int fd, i;

	fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || read(fd, rnd, sizeof rnd) != (ssize_t)sizeof rnd) {
		fprintf(stderr, "picomail: cannot read /dev/urandom\n");
		if (fd >= 0) {
			close(fd);
		}
		return -1;
	}
	close(fd);
	memcpy(salt, "$6$", 3);
	for (i = 0; i < 16; i++) {
		salt[3 + i] = b64[rnd[i] % 64];
	}
	salt[19] = '$';
	salt[20] = '\0';
	if (crypt_sha(pw, salt, out, len) < 0) {
		fprintf(stderr, "picomail: crypt failed\n");
		return -1;
	}
	return 0;
}

/* ---- the atomic rewrite ------------------------------------------------------ */

static char file_in[USERS_ADMIN_FILE_MAX];
static char file_out[USERS_ADMIN_FILE_MAX + 1024];

/* Reads the whole file; a missing one is empty (*exists 0). */
static int read_file(const char *path, size_t *len, struct stat *st, int *exists, char *err,
                     size_t errlen)
{
	ssize_t n;
	int fd = io_open(path, O_RDONLY | O_CLOEXEC, 0);

	*len = 0;
	*exists = 0;
	if (fd < 0) {
		if (errno == ENOENT) {
			return 0;
		}
		return admin_fail(err, errlen, "%s: %s", path, strerror(errno));
	}
	*exists = 1;
	if (fstat(fd, st) < 0) {
		io_close(fd);
		return admin_fail(err, errlen, "%s: %s", path, strerror(errno));
	}
	while ((n = io_read(fd, file_in + *len, sizeof file_in - *len)) > 0) {
		*len += (size_t)n;
		if (*len == sizeof file_in) {
			io_close(fd);
			return admin_fail(err, errlen, "%s: larger than %d bytes", path,
			                  USERS_ADMIN_FILE_MAX - 1);
		}
	}
	io_close(fd);
	if (n < 0) {
		return admin_fail(err, errlen, "%s: %s", path, strerror(errno));
	}
	return 0;
}

/* Appends n bytes to file_out; -1 when it is full. */
static int out_put(size_t *olen, const char *p, size_t n)
{
	if (n > sizeof file_out - *olen) {
		return -1;
	}
	memcpy(file_out + *olen, p, n);
	*olen += n;
	return 0;
}

/* The user name a line starts with (after blanks, before ':'), as
 * users_load reads it; *name_len 0 for comments and blank lines. */
static const char *line_user(const char *line, size_t len, size_t *name_len)
{
	size_t i = 0, k;

	while (i < len && (line[i] == ' ' || line[i] == '\t')) {
		i++;
	}
	for (k = i; k < len && line[k] != ':' && line[k] != '#' && line[k] != '\r'; k++) {
	}
	*name_len = k < len && line[k] == ':' ? k - i : 0;
	return line + i;
}

/* Builds the new file in file_out. */
static int edit(size_t inlen, enum users_edit op, const char *user, const char *hash,
                size_t *olen, int *found)
{
	size_t off = 0, end, n, ulen = strlen(user);
	const char *line, *name, *h, *rest;

	*olen = 0;
	*found = 0;
	while (off < inlen) {
		line = file_in + off;
		for (end = off; end < inlen && file_in[end] != '\n'; end++) {
		}
		if (end < inlen) {
			end++;   /* with its LF */
		}
		name = line_user(line, end - off, &n);
		if (n == ulen && strncasecmp(name, user, n) == 0 && op != USERS_EDIT_ADD) {
			*found = 1;
			if (op == USERS_EDIT_PASSWD) {
				/* name ':' hash [':' quota] [comment]: only the hash changes. */
				h = name + n + 1;
				for (rest = h; rest < file_in + end && *rest != ':' && *rest != '#' &&
				               *rest != ' ' && *rest != '\t' && *rest != '\r' && *rest != '\n';
				     rest++) {
				}
				if (out_put(olen, line, (size_t)(h - line)) < 0 ||
				    out_put(olen, hash, strlen(hash)) < 0 ||
				    out_put(olen, rest, (size_t)(file_in + end - rest)) < 0) {
					return -1;
				}
			}
		} else if (out_put(olen, line, end - off) < 0) {
			return -1;
		}
		off = end;
	}
	if (op == USERS_EDIT_ADD) {
		if ((inlen > 0 && file_in[inlen - 1] != '\n' && out_put(olen, "\n", 1) < 0) ||
		    out_put(olen, user, ulen) < 0 || out_put(olen, ":", 1) < 0 ||
		    out_put(olen, hash, strlen(hash)) < 0 || out_put(olen, "\n", 1) < 0) {
			return -1;
		}
	}
	return 0;
}

int users_admin_rewrite(const char *path, enum users_edit op, const char *user,
                        const char *hash, char *err, size_t errlen)
{
	char tmp[CONF_PATH_MAX + 8], dir[CONF_PATH_MAX];
	struct stat st;
	size_t inlen, olen;
	int exists, found, fd, e;

	if (read_file(path, &inlen, &st, &exists, err, errlen) < 0) {
		return -1;
	}
	if (edit(inlen, op, user, hash, &olen, &found) < 0) {
		return admin_fail(err, errlen, "%s: too large to rewrite", path);
	}
	if (op != USERS_EDIT_ADD && !found) {
		return admin_fail(err, errlen, "%s: no user '%s'", path, user);
	}
	if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
		return admin_fail(err, errlen, "%s: path too long", path);
	}
	/* O_EXCL: a second change at the same time fails rather than one of
	 * the two being lost. */
	fd = io_open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		if (errno == EEXIST) {
			return admin_fail(err, errlen, "%s exists: another change is under way (or was "
			                  "interrupted: then remove it)", tmp);
		}
		return admin_fail(err, errlen, "%s: %s", tmp, strerror(errno));
	}
	if (exists && (fchmod(fd, st.st_mode & 07777) < 0 ||
	               ((st.st_uid != geteuid() || st.st_gid != getegid()) &&
	                fchown(fd, st.st_uid, st.st_gid) < 0))) {
		goto fail;
	}
	if (io_write_all(fd, file_out, olen) < 0 || io_fsync(fd) < 0) {
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
	io_dir_of(path, dir, sizeof dir);
	if (io_fsync_dir(dir) < 0) {
		/* Renamed already: the change is made, not yet known durable. */
		return admin_fail(err, errlen, "%s: fsync: %s", dir, strerror(errno));
	}
	return 0;
fail:
	e = errno;
	if (fd >= 0) {
		io_close(fd);
	}
	(void)io_unlink(tmp);
	return admin_fail(err, errlen, "%s: %s", tmp, strerror(e));
}

/* ---- the subcommands ------------------------------------------------------- */

/* -C FILE anywhere, and at most one USER. */
static int parse_args(int argc, char **argv, const char **conf, const char **user)
{
	int i;

	*conf = getenv("PICOMAIL_CONF");
	if (*conf == NULL || **conf == '\0') {
		*conf = CONF_DEFAULT_PATH;
	}
	*user = NULL;
	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "-C") == 0 && i + 1 < argc) {
			*conf = argv[++i];
		} else if (strncmp(argv[i], "-C", 2) == 0 && argv[i][2] != '\0') {
			*conf = argv[i] + 2;
		} else if (argv[i][0] != '-' && *user == NULL) {
			*user = argv[i];
		} else {
			fprintf(stderr, "picomail: unexpected argument '%s'\n", argv[i]);
			return -1;
		}
	}
	return 0;
}

static int list_users(const struct conf *c, const struct users_table *t)
{
	struct quota_usage u;
	uint64_t q, total = 0;
	unsigned i, msgs = 0;
	char qtext[32], use[16];

	printf("%-24s %8s %12s %12s %5s\n", "USER", "MESSAGES", "BYTES", "QUOTA", "USE");
	for (i = 0; i < t->n; i++) {
		if (quota_scan(c->maildir_root, t->u[i].name, &u) < 0) {
			fprintf(stderr, "picomail: %s/%s: %s\n", c->maildir_root, t->u[i].name,
			        strerror(errno));
			return 1;
		}
		q = users_quota(t, (int)i, c->quota);
		if (q == 0) {
			snprintf(qtext, sizeof qtext, "-");
			snprintf(use, sizeof use, "-");
		} else {
			snprintf(qtext, sizeof qtext, "%" PRIu64, q);
			snprintf(use, sizeof use, "%" PRIu64 "%%", u.bytes >= q ? (u.bytes / q) * 100 +
			         (u.bytes % q) * 100 / q : u.bytes * 100 / q);
		}
		printf("%-24s %8u %12" PRIu64 " %12s %5s\n", t->u[i].name, u.messages, u.bytes, qtext,
		       use);
		total += u.bytes;
		msgs += u.messages;
	}
	printf("-- %u users, %u messages, %" PRIu64 " bytes\n", t->n, msgs, total);
	return 0;
}

int users_admin_main(const char *cmd, int argc, char **argv)
{
	static struct conf c;
	static struct users_table t;
	char err[CONF_ERR_MAX], pw[256], hash[CRYPT_SHA_MAX];
	const char *conf, *user;
	enum users_edit op;
	int r;

	if (parse_args(argc, argv, &conf, &user) < 0) {
		return EX_USAGE;
	}
	if (strcmp(cmd, "users") == 0 ? user != NULL : user == NULL) {
		fprintf(stderr, "usage: picomail %s%s [-C FILE]\n", cmd,
		        strcmp(cmd, "users") == 0 ? "" : " USER");
		return EX_USAGE;
	}
	if (conf_load(&c, conf, err, sizeof err) < 0 || users_load(&t, c.users, err, sizeof err) < 0) {
		fprintf(stderr, "picomail: %s\n", err);
		return 1;
	}
	if (strcmp(cmd, "users") == 0) {
		return list_users(&c, &t);
	}
	if (strcmp(cmd, "useradd") == 0) {
		op = USERS_EDIT_ADD;
		if (!users_name_ok(user)) {
			fprintf(stderr, "picomail: bad user name '%s' (a-z 0-9 . _ -, at most %d, not "
			        "starting with '.')\n", user, ADDR_USER_MAX);
			return 1;
		}
		if (users_find(&t, user) >= 0) {
			fprintf(stderr, "picomail: user '%s' exists already\n", user);
			return 1;
		}
		if (t.n >= USERS_MAX) {
			fprintf(stderr, "picomail: too many users (max %d)\n", USERS_MAX);
			return 1;
		}
	} else {
		op = strcmp(cmd, "userdel") == 0 ? USERS_EDIT_DEL : USERS_EDIT_PASSWD;
		if (users_find(&t, user) < 0) {
			fprintf(stderr, "picomail: no user '%s' in %s\n", user, c.users);
			return 1;
		}
	}
	hash[0] = '\0';
	if (op != USERS_EDIT_DEL) {
		if (users_admin_read_password(pw, sizeof pw, 1) < 0) {
			return 1;
		}
		r = users_admin_hash(pw, hash, sizeof hash);
		memset(pw, 0, sizeof pw);
		if (r < 0) {
			return 1;
		}
	}
	if (users_admin_rewrite(c.users, op, user, hash, err, sizeof err) < 0) {
		fprintf(stderr, "picomail: %s\n", err);
		return 1;
	}
	if (op == USERS_EDIT_DEL) {
		printf("user %s removed from %s (the Maildir %s/%s is left as it is)\n", user, c.users,
		       c.maildir_root, user);
	} else {
		printf("%s %s in %s\n", op == USERS_EDIT_ADD ? "user added:" : "password changed:", user,
		       c.users);
	}
	return 0;
}
