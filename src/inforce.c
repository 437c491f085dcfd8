/* inforce.c - the configuration, users and aliases in force, swapped on
 * reload. */
#include "inforce.h"

#include <string.h>
#include <sys/stat.h>

static struct conf confs[2];
static struct users_table users[2];
static struct alias_table aliases[2];
static int cur;
static int ucur;   /* the users table's own index (reloaded alone too) */
static const char *conf_path;

/* The users file as last loaded, to notice a change. */
struct users_stamp {
	int exists;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};

static struct users_stamp users_seen, users_failed;

const struct conf *inforce_conf(void)
{
	return &confs[cur];
}

const struct users_table *inforce_users(void)
{
	return &users[ucur];
}

const struct alias_table *inforce_aliases(void)
{
	return &aliases[cur];
}

const char *inforce_path(void)
{
	return conf_path;
}

/* What stat says of the users file now (exists 0 if it does not). */
static void stamp_of(const char *path, struct users_stamp *st)
{
	struct stat sb;

	memset(st, 0, sizeof *st);
	if (stat(path, &sb) == 0) {
		st->exists = 1;
		st->dev = sb.st_dev;
		st->ino = sb.st_ino;
		st->size = sb.st_size;
		st->mtime = sb.st_mtim;
	}
}

static int stamp_same(const struct users_stamp *a, const struct users_stamp *b)
{
	return a->exists == b->exists && a->dev == b->dev && a->ino == b->ino &&
	       a->size == b->size && a->mtime.tv_sec == b->mtime.tv_sec &&
	       a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* Loads the configuration and aliases into slot i and the users into
 * users slot ui; *st gets the users file's stamp from before it was read,
 * so that a change made meanwhile is seen at the next check rather than
 * missed.  0 or -1 with the message in err. */
static int load_all(int i, int ui, struct users_stamp *st, char *err, size_t errlen)
{
	if (conf_load(&confs[i], conf_path, err, errlen) < 0) {
		return -1;
	}
	stamp_of(confs[i].users, st);
	if (users_load(&users[ui], confs[i].users, err, errlen) < 0) {
		return -1;
	}
	return alias_load(&aliases[i], confs[i].aliases, err, errlen);
}

int inforce_load(const char *path, char *err, size_t errlen)
{
	conf_path = path;
	cur = ucur = 0;
	return load_all(0, 0, &users_seen, err, errlen);
}

int inforce_reload(inforce_accept_fn accept, char *err, size_t errlen)
{
	struct users_stamp st;
	int spare = !cur, uspare = !ucur;

	if (load_all(spare, uspare, &st, err, errlen) < 0 ||
	    (accept != NULL && accept(&confs[spare], err, errlen) < 0)) {
		return -1;
	}
	cur = spare;
	ucur = uspare;
	users_seen = st;
	memset(&users_failed, 0, sizeof users_failed);
	return 0;
}

int inforce_users_check(char *err, size_t errlen)
{
	const char *path = confs[cur].users;
	struct users_stamp st;
	int spare = !ucur;

	stamp_of(path, &st);
	if (stamp_same(&st, &users_seen)) {
		return 0;
	}
	/* Into the spare: sessions may still hold the running table. */
	if (users_load(&users[spare], path, err, errlen) < 0) {
		if (stamp_same(&st, &users_failed)) {
			return 0;   /* this bad file was reported already */
		}
		users_failed = st;
		return -1;
	}
	ucur = spare;
	users_seen = st;
	memset(&users_failed, 0, sizeof users_failed);
	return 1;
}
