/* oauth_file.h - the smarthost_oauth file: who signs in, where, and the
 * refresh token.
 *
 * "key value" lines; a line starting with '#' is a comment; the value is
 * the rest of the line, trimmed (a scope holds spaces).  Keys: user,
 * token_endpoint, device_endpoint, client_id, client_secret, scope,
 * refresh_token.  The file holds secrets: it is written only whole and
 * atomically (a temporary file in the same directory, fsync, rename,
 * fsync of the directory), mode 0600, its owner kept.
 */
#ifndef PICOMAIL_OAUTH_FILE_H
#define PICOMAIL_OAUTH_FILE_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#define OAUTH_USER_MAX    256
#define OAUTH_URL_MAX     256
#define OAUTH_ID_MAX      256
#define OAUTH_SCOPE_MAX   512
#define OAUTH_REFRESH_MAX 4096
#define OAUTH_FILE_MAX    12288

struct oauth_file {
	char user[OAUTH_USER_MAX];
	char token_endpoint[OAUTH_URL_MAX];
	char device_endpoint[OAUTH_URL_MAX];
	char client_id[OAUTH_ID_MAX];
	char client_secret[OAUTH_ID_MAX];
	char scope[OAUTH_SCOPE_MAX];
	char refresh_token[OAUTH_REFRESH_MAX];
	/* The file as it was read or written, to notice another writer. */
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	uid_t uid;
	mode_t mode;
};

/* Reads the file at path into f.  Unknown keys, a key twice, a value too
 * long or with control characters, an endpoint that is not an https URL
 * are errors ("path:line: what").  0, or -1 with the reason in err. */
int oauth_file_read(const char *path, struct oauth_file *f, char *err, size_t errlen);

/* 1 when the file at path is not the one f was read from or written as
 * (another writer: picomail oauth login), 0 when it is, -1 when it cannot
 * be looked at. */
int oauth_file_changed(const char *path, const struct oauth_file *f);

/* Puts refresh into the file (replacing its refresh_token line, or
 * adding one), keeping every other line, atomically; f->refresh_token and
 * the file's identity in f are updated.  0, or an errno (the file is then
 * unchanged) with the reason in err. */
int oauth_file_save(const char *path, struct oauth_file *f, const char *refresh, char *err,
                    size_t errlen);

#endif
