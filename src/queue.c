/* queue.c - the daemon's queue: the index of spooled messages, the
 * scheduler, and the runs that deliver them (locally into Maildirs,
 * remotely through smtp_client), with retries, expiry and bounces. */
#include "queue.h"
#include "inforce.h"
#include "stats.h"
#include "date.h"
#include "io.h"
#include "log.h"
#include "loop.h"
#include "pool.h"
#include "quota.h"
#include "smtp_client.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PATH_LEN 512

struct qitem {
	char id[QUEUE_ID_MAX];
	int64_t next;          /* epoch seconds of the next try; 0: now */
	uint64_t size;         /* of msg/<id>, for the queue quota */
	int used;
	int busy;
};

struct runner {
	int busy;
	struct qitem *item;
	int data_fd;
	struct queue_env env;
	unsigned char failed_now[QUEUE_RCPT_MAX];   /* to report in this run's bounce */
	unsigned char tried[QUEUE_RCPT_MAX];        /* remote: attempted in this run;
	                                               local: deferred (over quota) */
	unsigned group[QUEUE_RCPT_MAX];             /* env indices of the attempt */
	const char *group_addr[QUEUE_RCPT_MAX];
	unsigned ngroup;
	struct smtp_client_result results[QUEUE_RCPT_MAX];
	struct maildir_msg msg;
	struct smtp_client *client;
};

/* items[0..nitems_seen) have held a message at least once; the slots
 * above are pages never touched, and no scan reads them: on a kernel
 * without the shared zero page (some have it off) a read of an untouched
 * page of the mapping makes it resident as surely as a write, and a scan
 * of all queue_max_messages slots kept 64 KiB of an idle daemon's RSS.
 * For the same reason the runners' busy flags are counted in nactive,
 * so that `picomail status` does not read a page of each runner. */
static struct qitem *items;
static unsigned nitems_max;
static unsigned nitems_seen;
static struct runner *runners;
static unsigned nrunners;
static unsigned nactive;
static unsigned char *clients;   /* the runners' outbound clients, one mapping */
static size_t client_size;
static int timer_slot = -1;
static int shutting;

/* Copies src if it fits; -1 (dst untouched) if not. */
static int copy(char *dst, size_t size, const char *src)
{
	size_t n = strlen(src);

	if (n >= size) {
		return -1;
	}
	memcpy(dst, src, n + 1);
	return 0;
}

static const struct conf *cf(void)
{
	return inforce_conf();
}

/* Before this (2020-01-01) the clock is taken as unset, as in tls.c. */
#define CLOCK_SET 1577836800

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

/* ---- the index ------------------------------------------------------------- */

static uint64_t msg_size(const char *id)
{
	char path[PATH_LEN];
	struct stat st;

	if (snprintf(path, sizeof path, "%s/msg/%s", cf()->spool, id) >= (int)sizeof path ||
	    stat(path, &st) < 0) {
		return 0;
	}
	return (uint64_t)st.st_size;
}

static struct qitem *item_add(const char *id, int64_t next)
{
	struct qitem *it;
	unsigned i;

	for (i = 0; i < nitems_seen && items[i].used; i++) {
	}
	if (i == nitems_seen) {
		if (nitems_seen == nitems_max) {
			return NULL;
		}
		nitems_seen++;
	}
	it = &items[i];
	snprintf(it->id, sizeof it->id, "%s", id);
	it->next = next;
	it->size = msg_size(id);
	it->used = 1;
	it->busy = 0;
	return it;
}

uint64_t queue_bytes(void)
{
	uint64_t n = 0;
	unsigned i;

	for (i = 0; i < nitems_seen; i++) {
		if (items[i].used) {
			n += items[i].size;
		}
	}
	return n;
}

unsigned queue_length(void)
{
	unsigned i, n = 0;

	for (i = 0; i < nitems_seen; i++) {
		n += items[i].used;
	}
	return n;
}

unsigned queue_active(void)
{
	return nactive;
}

static void schedule(void);
static void sweep_orphans(int64_t now);
static int64_t sweep_next;   /* when the running daemon next looks for orphans */

static void arm(int64_t when_s)
{
	int64_t ms = loop_now() + (when_s - now_s()) * 1000;

	if (ms < loop_now()) {
		ms = loop_now();
	}
	loop_deadline(timer_slot, ms == 0 ? 1 : ms);
}

void queue_added(const char *id)
{
	if (item_add(id, 0) == NULL) {
		log_msg(LOG_WARNING, "queue index full: %s waits for a restart", id);
		return;
	}
	arm(now_s());
}

void queue_flush(const struct submitter *who)
{
	struct log_kv l;
	unsigned i;

	log_kv_start(&l, "flush");
	log_kv_str(&l, "by", who->name);
	log_kv_u64(&l, "messages", queue_length());
	log_kv_end(&l, LOG_INFO);
	for (i = 0; i < nitems_seen; i++) {
		if (items[i].used) {
			items[i].next = 0;
		}
	}
	arm(now_s());
}

/* ---- resolving recipients -------------------------------------------------- */

static int is_user(const char *name)
{
	return users_find(inforce_users(), name) >= 0;
}

/* Appends a recipient unless it is there already; -1 when full. */
static int env_add(struct queue_env *e, char kind, const char *addr)
{
	unsigned i;

	for (i = 0; i < e->nrcpt; i++) {
		if (e->rcpt[i].kind == kind && strcmp(e->rcpt[i].addr, addr) == 0) {
			return 0;
		}
	}
	if (e->nrcpt == QUEUE_RCPT_MAX) {
		return -1;
	}
	e->rcpt[e->nrcpt].state = 'P';
	e->rcpt[e->nrcpt].kind = kind;
	snprintf(e->rcpt[e->nrcpt].addr, sizeof e->rcpt[0].addr, "%s", addr);
	e->rcpt[e->nrcpt].why[0] = '\0';
	e->nrcpt++;
	return 0;
}

static void fail_rcpt(struct runner *r, unsigned i, const char *why)
{
	r->env.rcpt[i].state = 'F';
	snprintf(r->env.rcpt[i].why, sizeof r->env.rcpt[i].why, "%s", why);
	r->failed_now[i] = 1;
}

/* Turns each 'U' recipient (from the sendmail command, or a bounce) into
 * local users and remote addresses. */
static void resolve(struct runner *r)
{
	static struct addr_expansion x;
	const struct users_table *u = inforce_users();
	struct queue_env *e = &r->env;
	char local[ADDR_LOCAL_MAX + 1], addr[ADDR_MAX + 1];
	const char *domain;
	unsigned i, k, n = e->nrcpt;
	int got;

	for (i = 0; i < n; i++) {
		if (e->rcpt[i].kind != 'U' || e->rcpt[i].state != 'P') {
			continue;
		}
		snprintf(addr, sizeof addr, "%s", e->rcpt[i].addr);
		domain = strchr(addr, '@') ? addr_split(addr, local) : NULL;
		if (domain != NULL && !conf_is_local_domain(cf(), domain)) {
			e->rcpt[i].kind = 'R';
			continue;
		}
		if (domain == NULL && copy(local, sizeof local, addr) < 0) {
			fail_rcpt(r, i, "550 5.1.3 bad address");
			continue;
		}
		got = addr_expand(inforce_aliases(), local, is_user, u->n > 0 ? u->u[0].name : NULL,
		                  cf(), &x);
		if (got == 0) {
			got = addr_expand(inforce_aliases(), "*", is_user, NULL, cf(), &x);
		}
		if (got <= 0) {
			fail_rcpt(r, i, got < 0 ? "550 5.4.6 alias loop" : "550 5.1.1 unknown user");
			continue;
		}
		/* The first target takes this entry's place; others follow. */
		e->rcpt[i].kind = x.remote[0] ? 'R' : 'L';
		snprintf(e->rcpt[i].addr, sizeof e->rcpt[i].addr, "%s", x.target[0]);
		for (k = 1; k < x.n; k++) {
			if (env_add(e, x.remote[k] ? 'R' : 'L', x.target[k]) < 0) {
				log_msg(LOG_WARNING, "id=%s: too many recipients after aliases", e->id);
			}
		}
	}
}

/* ---- a run ------------------------------------------------------------------- */

static void remote_next(struct runner *r);
static void run_finish(struct runner *r);

static int data_path(char *out, size_t len, const char *id)
{
	return snprintf(out, len, "%s/msg/%s", cf()->spool, id) >= (int)len ? -1 : 0;
}

/* Records what this run has delivered so far, so that a crash before its
 * end does not deliver it again (the envelope is small: flash can take
 * it). */
static void save_progress(struct runner *r)
{
	int e = queue_env_write(cf()->spool, &r->env);

	if (e != 0) {
		log_msg(LOG_ERR, "id=%s cannot rewrite the envelope: %s", r->env.id, strerror(e));
	}
}

/* 1 if a remote recipient still waits for an attempt in this run. */
static int remote_left(const struct runner *r)
{
	unsigned i;

	for (i = 0; i < r->env.nrcpt; i++) {
		if (r->env.rcpt[i].kind == 'R' && r->env.rcpt[i].state == 'P' && !r->tried[i]) {
			return 1;
		}
	}
	return 0;
}

/* The start of an outcome line for recipient i of the run's message. */
static void kv_outcome(struct log_kv *l, const char *event, const struct runner *r)
{
	log_kv_start(l, event);
	log_kv_str(l, "id", r->env.id);
}

/* The end of an outcome line: how long since the message arrived, and
 * which attempt this is. */
static void kv_delay(struct log_kv *l, const struct runner *r)
{
	log_kv_ms(l, "delay", (now_s() - r->env.arrival) * 1000);
	log_kv_u64(l, "attempt", r->env.attempts + 1);
}

static void local_done(void *ctx, int err)
{
	struct runner *r = ctx;
	struct log_kv l;
	unsigned i;

	for (i = 0; i < r->env.nrcpt; i++) {
		struct queue_rcpt *q = &r->env.rcpt[i];

		if (q->kind != 'L' || q->state != 'P' || r->tried[i]) {
			continue;
		}
		if (err == 0) {
			q->state = 'S';
			q->why[0] = '\0';
		} else {
			snprintf(q->why, sizeof q->why, "451 4.3.0 local delivery failed: %s",
			         strerror(err));
		}
	}
	for (i = 0; i < r->msg.nusers; i++) {
		kv_outcome(&l, "delivered", r);
		log_kv_str(&l, "mailbox", r->msg.users[i]);
		log_kv_str(&l, "status", err == 0 ? "sent" : "deferred");
		if (err != 0) {
			log_kv_fmt(&l, "reply", "451 4.3.0 local delivery failed: %s", strerror(err));
		}
		kv_delay(&l, r);
		log_kv_end(&l, err == 0 ? LOG_INFO : LOG_NOTICE);
		if (err == 0) {
			quota_delivered(cf()->maildir_root, r->msg.users[i], r->msg.size);
		}
	}
	if (err == 0) {
		save_progress(r);
	}
	remote_next(r);
}

/* Copies the spooled message into the local users' Maildirs (one file,
 * hard-linked), through the group commit. */
static void local_phase(struct runner *r)
{
	char buf[4096];
	unsigned i;
	ssize_t n;
	int len;
	struct stat st;
	uint64_t octets;
	const struct users_table *u = inforce_users();
	struct log_kv l;

	/* The Maildir copy: the spooled data and a Return-Path line. */
	octets = (fstat(r->data_fd, &st) == 0 ? (uint64_t)st.st_size : 0) + 16 +
	         strlen(r->env.sender);
	r->msg.nusers = 0;
	for (i = 0; i < r->env.nrcpt && r->msg.nusers < MAILDIR_RCPT_MAX; i++) {
		struct queue_rcpt *q = &r->env.rcpt[i];

		if (q->kind != 'L' || q->state != 'P') {
			continue;
		}
		if (quota_exceeded(cf()->maildir_root, q->addr,
		                   users_quota(u, users_find(u, q->addr), cf()->quota), octets)) {
			/* Left pending: retried later, bounced at queue_lifetime. */
			r->tried[i] = 1;
			snprintf(q->why, sizeof q->why, "452 4.2.2 mailbox full");
			kv_outcome(&l, "delivered", r);
			log_kv_str(&l, "mailbox", q->addr);
			log_kv_str(&l, "status", "deferred");
			log_kv_str(&l, "reply", q->why);
			kv_delay(&l, r);
			log_kv_end(&l, LOG_NOTICE);
			continue;
		}
		snprintf(r->msg.users[r->msg.nusers++], sizeof r->msg.users[0], "%s", q->addr);
	}
	if (r->msg.nusers == 0) {
		remote_next(r);
		return;
	}
	if (maildir_begin(&r->msg, 0) < 0) {
		local_done(r, errno ? errno : EIO);
		return;
	}
	len = snprintf(buf, sizeof buf, "Return-Path: <%s>\n", r->env.sender);
	maildir_write(&r->msg, buf, (size_t)len);
	if (lseek(r->data_fd, 0, SEEK_SET) < 0) {
		r->msg.err = errno;
	}
	while (r->msg.err == 0 && (n = io_read(r->data_fd, buf, sizeof buf)) > 0) {
		maildir_write(&r->msg, buf, (size_t)n);
	}
	if (r->msg.err != 0) {
		int e = r->msg.err;

		maildir_abort(&r->msg);
		local_done(r, e);
		return;
	}
	maildir_commit(&r->msg, local_done, r);
}

static const char *domain_of(const char *addr)
{
	const char *at = strrchr(addr, '@');

	return at ? at + 1 : "";
}

static void remote_done(void *ctx)
{
	struct runner *r = ctx;
	const char *relay = smtp_client_relay(r->client), *tls = smtp_client_tls(r->client);
	struct log_kv l;
	unsigned k;

	for (k = 0; k < r->ngroup; k++) {
		struct queue_rcpt *q = &r->env.rcpt[r->group[k]];
		int code = r->results[k].code;
		const char *status;

		if (code >= 200 && code < 300) {
			q->state = 'S';
			q->why[0] = '\0';
			status = "sent";
		} else if (code >= 500) {
			char why[QUEUE_WHY_MAX];

			snprintf(why, sizeof why, "%d %s", code, r->results[k].text);
			fail_rcpt(r, r->group[k], why);
			status = "bounced";
		} else {
			snprintf(q->why, sizeof q->why, "%d %s", code ? code : 451, r->results[k].text);
			status = "deferred";
		}
		kv_outcome(&l, "relayed", r);
		log_kv_addr(&l, "to", q->addr);
		log_kv_str(&l, "relay", relay[0] != '\0' ? relay : "none");
		log_kv_str(&l, "tls", tls[0] != '\0' ? tls : "none");
		log_kv_str(&l, "status", status);
		log_kv_fmt(&l, "reply", "%d %s", code ? code : 451, r->results[k].text);
		kv_delay(&l, r);
		log_kv_end(&l, code >= 200 && code < 300 ? LOG_INFO : LOG_NOTICE);
	}
	if (remote_left(r)) {
		save_progress(r);   /* other domains follow: keep this one's outcome */
	}
	remote_next(r);
}

/* The next attempt: all pending remote recipients (smarthost), or those of
 * the next domain (MX). */
static void remote_next(struct runner *r)
{
	const char *domain = NULL;
	unsigned i;

	r->ngroup = 0;
	for (i = 0; i < r->env.nrcpt; i++) {
		struct queue_rcpt *q = &r->env.rcpt[i];

		if (q->kind != 'R' || q->state != 'P' || r->tried[i]) {
			continue;
		}
		if (cf()->smarthost.host[0] == '\0') {
			if (domain == NULL) {
				domain = domain_of(q->addr);
			} else if (strcasecmp(domain, domain_of(q->addr)) != 0) {
				continue;
			}
		}
		r->tried[i] = 1;
		r->group[r->ngroup] = i;
		r->group_addr[r->ngroup] = q->addr;
		r->ngroup++;
	}
	if (r->ngroup == 0 || shutting) {
		run_finish(r);
		return;
	}
	smtp_client_start(r->client, r->env.id, r->env.sender, r->group_addr, r->ngroup, r->data_fd,
	                  r->results, remote_done, r);
}

static unsigned backoff(const struct conf *c, unsigned attempts)
{
	uint64_t d = c->retry_min;

	while (attempts-- > 1 && d < c->retry_max) {
		d *= 2;
	}
	return d > c->retry_max ? c->retry_max : (unsigned)d;
}

static int make_bounce(struct runner *r);

static void runner_free(struct runner *r)
{
	r->busy = 0;
	nactive--;
}

/* A run is over: its item waits for its next time, the runner for work. */
static void run_end(struct runner *r)
{
	io_close(r->data_fd);
	r->data_fd = -1;
	r->item->busy = 0;
	runner_free(r);
	arm(now_s());
}

/* A deferred message's envelope is rewritten (or not, err: the one before
 * stays, and the next run makes this run's attempts again). */
static void retry_saved(void *ctx, int err)
{
	struct runner *r = ctx;
	unsigned i, pending = 0;
	struct log_kv l;

	if (err != 0) {
		log_msg(LOG_ERR, "id=%s cannot rewrite the envelope: %s", r->env.id, strerror(err));
	}
	for (i = 0; i < r->env.nrcpt; i++) {
		pending += r->env.rcpt[i].state == 'P';
	}
	kv_outcome(&l, "retry", r);
	log_kv_u64(&l, "pending", pending);
	log_kv_ms(&l, "next", (r->env.next - now_s()) * 1000);
	log_kv_u64(&l, "attempts", r->env.attempts);
	log_kv_end(&l, LOG_INFO);
	run_end(r);
}

static void run_finish(struct runner *r)
{
	const struct conf *c = cf();
	int64_t now = now_s();
	unsigned i, pending = 0;
	struct log_kv l;

	for (i = 0; i < r->env.nrcpt; i++) {
		pending += r->env.rcpt[i].state == 'P';
	}
	/* A message taken while the clock was unset (a router without RTC
	 * boots in 1970) is not 50 years old once NTP sets it: its age counts
	 * from the first run that sees a set clock (kept in the envelope). */
	if (r->env.arrival < CLOCK_SET && now >= CLOCK_SET) {
		r->env.arrival = now;
	}
	/* Arrival and now are whole seconds: only more than the lifetime
	 * between them is sure to be the whole lifetime (a message taken at
	 * x.9 s is not returned up to a second early). */
	if (pending > 0 && now - r->env.arrival > (int64_t)c->queue_lifetime) {
		for (i = 0; i < r->env.nrcpt; i++) {
			if (r->env.rcpt[i].state == 'P') {
				char why[QUEUE_WHY_MAX];

				snprintf(why, sizeof why, "4.4.7 delivery time expired; last error: %s",
				         r->env.rcpt[i].why[0] ? r->env.rcpt[i].why : "none");
				kv_outcome(&l, "expired", r);
				log_kv_addr(&l, "to", r->env.rcpt[i].addr);
				log_kv_str(&l, "last", r->env.rcpt[i].why);
				kv_delay(&l, r);
				log_kv_end(&l, LOG_NOTICE);
				fail_rcpt(r, i, why);
			}
		}
		pending = 0;
	}
	r->env.attempts++;
	if (make_bounce(r) < 0) {
		/* The sender must hear of the failure: with no bounce written,
		 * those recipients stay pending and fail again at a later run,
		 * when the bounce is tried again. */
		for (i = 0; i < r->env.nrcpt; i++) {
			if (r->failed_now[i]) {
				r->env.rcpt[i].state = 'P';
				pending++;
			}
		}
	}
	if (pending == 0 && queue_remove(c->spool, r->env.id) == 0) {
		r->item->used = 0;
		kv_outcome(&l, "removed", r);
		log_kv_end(&l, LOG_INFO);
	} else if (pending == 0) {
		/* A file could not go: keep the item, and the next run removes
		 * what is left (run_start).  The message file goes even when
		 * the envelope stays, so a restart finds nothing to send. */
		r->item->next = now + c->retry_min;
		log_msg(LOG_NOTICE, "id=%s done; its files are removed at the next run", r->env.id);
	} else {
		r->env.next = now + backoff(c, r->env.attempts);
		r->item->next = r->env.next;
		/* The run ends once the envelope is rewritten (retry_saved),
		 * through the group commit while the loop goes on. */
		queue_env_commit(&r->msg, c->spool, &r->env, retry_saved, r);
		return;
	}
	run_end(r);
}

/* Ends a run that could not start: retried in seconds. */
static void run_later(struct runner *r, struct qitem *it, unsigned seconds)
{
	it->next = now_s() + seconds;
	it->busy = 0;
	runner_free(r);
}

/* Ends a run whose message is gone, removing what is left of it. */
static void run_drop(struct runner *r, struct qitem *it, const char *why)
{
	if (queue_remove(cf()->spool, it->id) == 0) {
		log_msg(LOG_NOTICE, "id=%s: %s", it->id, why);
		it->used = 0;
		it->busy = 0;
		runner_free(r);
		return;
	}
	run_later(r, it, cf()->retry_min);
}

static void run_start(struct runner *r, struct qitem *it)
{
	char path[PATH_LEN];

	it->busy = 1;
	r->busy = 1;
	nactive++;
	r->item = it;
	/* Set here rather than at start-up, so that an idle runner's pages
	 * stay zero pages, out of the RSS. */
	r->data_fd = -1;
	r->client = (struct smtp_client *)(void *)(clients + (size_t)(r - runners) * client_size);
	memset(r->failed_now, 0, sizeof r->failed_now);
	memset(r->tried, 0, sizeof r->tried);
	if (queue_env_read(cf()->spool, it->id, &r->env) < 0) {
		if (errno == ENOENT) {
			/* Done (or deleted) before: a message file may be left. */
			run_drop(r, it, "removed");
		} else if (errno == EINVAL) {
			log_msg(LOG_ERR, "id=%s: unreadable envelope, left for the administrator", it->id);
			run_later(r, it, cf()->retry_max);
		} else {
			log_msg(LOG_ERR, "id=%s: cannot read the envelope: %m; retried later", it->id);
			run_later(r, it, cf()->retry_min);
		}
		return;
	}
	if (data_path(path, sizeof path, it->id) < 0 ||
	    (r->data_fd = io_open(path, O_RDONLY, 0)) < 0) {
		if (errno == ENOENT) {
			run_drop(r, it, "message file gone; envelope dropped");
		} else {
			/* A read error may pass; the message is still there. */
			log_msg(LOG_ERR, "id=%s: cannot open the message: %m; retried later", it->id);
			run_later(r, it, cf()->retry_min);
		}
		return;
	}
	resolve(r);
	local_phase(r);
}

/* A runner without a run, or NULL; only a free runner's busy flag is read
 * beyond the busy ones (nactive says whether there is one). */
static struct runner *runner_idle(void)
{
	unsigned k;

	if (nactive >= nrunners) {
		return NULL;
	}
	for (k = 0; runners[k].busy; k++) {
	}
	return &runners[k];
}

/* Starts every due message a free runner can take; arms the timer for the
 * next one. */
static void schedule(void)
{
	int64_t now = now_s(), soonest = 0;
	struct runner *r;
	unsigned i;

	if (shutting) {
		return;
	}
	if (now >= sweep_next) {
		sweep_orphans(now);
	}
	for (i = 0; i < nitems_seen; i++) {
		struct qitem *it = &items[i];

		if (!it->used || it->busy) {
			continue;
		}
		if (it->next <= now) {
			r = runner_idle();
			if (r != NULL) {
				run_start(r, it);
				if (it->busy) {
					continue;
				}
				/* It could not start: its retry time counts below. */
			}
		}
		/* Due but no runner free: run_finish re-arms when one frees, so
		 * only future times count here (else the timer fires at once,
		 * over and over). */
		if (it->used && !it->busy && it->next > now && (soonest == 0 || it->next < soonest)) {
			soonest = it->next;
		}
	}
	arm(soonest != 0 && soonest < sweep_next ? soonest : sweep_next);
}

static void timer_fired(void *ctx, int revents)
{
	(void)ctx;
	(void)revents;
	schedule();
}

/* ---- bounces (RFC 3464) ---------------------------------------------------- */

/* The enhanced status code in a reply text ("550 5.1.1 ..."), or def. */
static void status_of(const char *why, const char *def, char *out, size_t len)
{
	const char *p;

	for (p = why; *p != '\0'; p++) {
		if ((p[0] == '2' || p[0] == '4' || p[0] == '5') && p[1] == '.' && p[2] >= '0' &&
		    p[2] <= '9' && (p == why || p[-1] == ' ')) {
			size_t n = strspn(p, "0123456789.");

			if (n >= 5 && n < len) {
				memcpy(out, p, n);
				out[n] = '\0';
				if (out[0] == '4') {
					out[0] = '5';   /* failed for good now */
				}
				return;
			}
		}
	}
	snprintf(out, len, "%s", def);
}

static void put(struct maildir_msg *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct maildir_msg *m, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n > 0) {
		maildir_write(m, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
	}
}

/* Copies the original's header block (to the first empty line). */
static void copy_headers(struct runner *r, struct maildir_msg *m)
{
	char buf[4096];
	ssize_t n, i;
	size_t total = 0;
	int nl = 1;

	if (lseek(r->data_fd, 0, SEEK_SET) < 0) {
		return;
	}
	while ((n = io_read(r->data_fd, buf, sizeof buf)) > 0 && total < 65536) {
		for (i = 0; i < n; i++) {
			if (buf[i] == '\n' && nl) {
				maildir_write(m, buf, (size_t)i);
				return;
			}
			nl = buf[i] == '\n';
		}
		maildir_write(m, buf, (size_t)n);
		total += (size_t)n;
	}
}

/* Queues a bounce for the recipients that failed in this run; 0 when it is
 * queued or none is due, -1 if it could not be written. */
static int make_bounce(struct runner *r)
{
	static struct maildir_msg m;
	static struct queue_env env;
	const struct conf *c = cf();
	char date[64], arrival[64], status[16];
	time_t now = time(NULL), arr = (time_t)r->env.arrival;
	struct log_kv l;
	unsigned i, n = 0;
	int e;

	for (i = 0; i < r->env.nrcpt; i++) {
		n += r->failed_now[i];
	}
	if (n == 0) {
		return 0;
	}
	if (r->env.sender[0] == '\0') {
		/* Never a bounce for a bounce (RFC 5321 6.1). */
		kv_outcome(&l, "bounce", r);
		log_kv_str(&l, "dsn", "none: null sender");
		log_kv_u64(&l, "failed", n);
		log_kv_end(&l, LOG_NOTICE);
		return 0;
	}
	if (queue_open(&m, c->spool) < 0) {
		log_msg(LOG_ERR, "id=%s: cannot write a bounce: %m", r->env.id);
		return -1;
	}
	date_rfc5322(date, sizeof date, now);
	date_rfc5322(arrival, sizeof arrival, arr);
	put(&m, "Received: by %s (picomail); %s\n", c->hostname, date);
	put(&m, "From: Mail Delivery System <MAILER-DAEMON@%s>\n", c->hostname);
	put(&m, "To: <%s>\n", r->env.sender);
	put(&m, "Subject: Undelivered Mail Returned to Sender\n");
	put(&m, "Date: %s\n", date);
	put(&m, "Message-ID: <%s.bounce@%s>\n", m.name, c->hostname);
	put(&m, "Auto-Submitted: auto-replied\n");
	put(&m, "MIME-Version: 1.0\n");
	put(&m, "Content-Type: multipart/report; report-type=delivery-status;\n"
	        "\tboundary=\"%s/%s\"\n\n", m.name, c->hostname);
	put(&m, "This is a MIME-encapsulated message.\n\n--%s/%s\n", m.name, c->hostname);
	put(&m, "Content-Description: Notification\nContent-Type: text/plain; charset=us-ascii\n\n");
	put(&m, "This is the mail system at host %s.\n\n"
	        "Your message could not be delivered to one or more recipients.\n\n", c->hostname);
	for (i = 0; i < r->env.nrcpt; i++) {
		if (r->failed_now[i]) {
			put(&m, "<%s>: %s\n", r->env.rcpt[i].addr, r->env.rcpt[i].why);
		}
	}
	put(&m, "\n--%s/%s\nContent-Description: Delivery report\n"
	        "Content-Type: message/delivery-status\n\n", m.name, c->hostname);
	put(&m, "Reporting-MTA: dns; %s\nX-Picomail-Queue-ID: %s\nArrival-Date: %s\n",
	    c->hostname, r->env.id, arrival);
	for (i = 0; i < r->env.nrcpt; i++) {
		if (!r->failed_now[i]) {
			continue;
		}
		status_of(r->env.rcpt[i].why, "5.0.0", status, sizeof status);
		put(&m, "\nFinal-Recipient: rfc822; %s\nAction: failed\nStatus: %s\n"
		        "Diagnostic-Code: smtp; %s\n", r->env.rcpt[i].addr, status, r->env.rcpt[i].why);
	}
	put(&m, "\n--%s/%s\nContent-Description: Undelivered Message Headers\n"
	        "Content-Type: text/rfc822-headers\n\n", m.name, c->hostname);
	copy_headers(r, &m);
	put(&m, "\n--%s/%s--\n", m.name, c->hostname);

	memset(&env, 0, offsetof(struct queue_env, rcpt));
	if (copy(env.id, sizeof env.id, m.name) < 0) {
		maildir_abort(&m);
		return -1;
	}
	env.arrival = now_s();
	env.sender[0] = '\0';
	env.nrcpt = 0;
	env_add(&env, 'U', r->env.sender);
	e = queue_commit(&m, c->spool, &env);
	if (e != 0) {
		log_msg(LOG_ERR, "id=%s: cannot queue the bounce: %s", r->env.id, strerror(e));
		return -1;
	}
	kv_outcome(&l, "bounce", r);
	log_kv_str(&l, "dsn", env.id);
	log_kv_addr(&l, "to", r->env.sender);
	log_kv_u64(&l, "failed", n);
	log_kv_end(&l, LOG_INFO);
	queue_added(env.id);
	return 0;
}

/* ---- start-up and listing ----------------------------------------------------- */

void queue_log_received(const struct queue_env *e, const char *via, const struct submitter *who)
{
	struct log_kv l;

	log_kv_start(&l, "received");
	log_kv_str(&l, "id", e->id);
	log_kv_str(&l, "via", via);
	if (who != NULL) {
		log_kv_str(&l, "user", who->name);
		log_kv_u64(&l, "uid", who->uid);
	}
	log_kv_addr(&l, "from", e->sender);
	log_kv_u64(&l, "rcpts", e->nrcpt);
	log_kv_end(&l, LOG_INFO);
}

static void index_one(const char *name, void *ctx)
{
	static struct queue_env e;

	(void)ctx;
	if (queue_env_read(cf()->spool, name, &e) < 0) {
		log_msg(LOG_WARNING, "queue: %s has a bad envelope; left alone", name);
		return;
	}
	if (item_add(name, e.next) == NULL) {
		log_msg(LOG_WARNING, "queue: index full, %s waits", name);
		return;
	}
	if (e.attempts == 0) {
		queue_log_received(&e, "spool", NULL);
	}
}

/* A message file without its envelope is what a crash leaves between the
 * two renames of queue_commit, or between the two unlinks of queue_remove:
 * no run will ever send it.  Only old ones go, since `sendmail` may be
 * between its own two renames right now.  They are looked for at start-up
 * and then every ORPHAN_AGE by the running daemon: after a power cut the
 * daemon starts again within seconds, when the file is young, and a router
 * may then run for months. */
#define ORPHAN_AGE (60 * 60)

static void clean_orphan_one(const char *name, void *ctx)
{
	char env[PATH_LEN], msg[PATH_LEN];
	struct stat st;

	(void)ctx;
	if (snprintf(env, sizeof env, "%s/env/%s", cf()->spool, name) >= (int)sizeof env ||
	    snprintf(msg, sizeof msg, "%s/msg/%s", cf()->spool, name) >= (int)sizeof msg ||
	    stat(env, &st) == 0 || errno != ENOENT || stat(msg, &st) < 0 ||
	    st.st_mtime > time(NULL) - ORPHAN_AGE) {
		return;
	}
	if (io_unlink(msg) == 0) {
		log_msg(LOG_NOTICE, "queue: removed %s, a message file without an envelope", name);
	}
}

static void sweep_orphans(int64_t now)
{
	char dir[PATH_LEN];
	int64_t every = ORPHAN_AGE;

#ifdef PICOMAIL_TEST
	/* The tests' daemon looks every PICOMAIL_ORPHAN_SWEEP_S seconds. */
	const char *e = getenv("PICOMAIL_ORPHAN_SWEEP_S");

	if (e != NULL && atoi(e) > 0) {
		every = atoi(e);
	}
#endif
	if (snprintf(dir, sizeof dir, "%s/msg", cf()->spool) < (int)sizeof dir) {
		io_each_name(dir, clean_orphan_one, NULL);
	}
	sweep_next = now + every;
}

static void clean_tmp_one(const char *name, void *ctx)
{
	char path[PATH_LEN];

	(void)ctx;
	if (snprintf(path, sizeof path, "%s/tmp/%s", cf()->spool, name) < (int)sizeof path) {
		(void)io_unlink(path);
	}
}

int queue_init(const struct conf *c)
{
	char dir[PATH_LEN];

	if (queue_make_dirs(c->spool) < 0) {
		log_msg(LOG_ERR, "spool %s: %m", c->spool);
		return -1;
	}
	nitems_max = c->queue_max_messages;
	nrunners = c->queue_runners;
	/* Start-up allocations: the index, the runners and their clients, as
	 * zero pages that stay out of the RSS until a message needs them
	 * (nothing is written to them here; run_start sets a runner up). */
	client_size = (smtp_client_size() + 15) / 16 * 16;
	items = pool_zalloc((size_t)nitems_max * sizeof *items);
	runners = pool_zalloc((size_t)nrunners * sizeof *runners);
	clients = pool_zalloc((size_t)nrunners * client_size);
	if (items == NULL || runners == NULL || clients == NULL) {
		return -1;
	}
	snprintf(dir, sizeof dir, "%s/tmp", c->spool);
	io_each_name(dir, clean_tmp_one, NULL);
	snprintf(dir, sizeof dir, "%s/env", c->spool);
	io_each_name(dir, index_one, NULL);
	sweep_orphans(now_s());
	timer_slot = loop_add(-1, 0, timer_fired, NULL);
	if (timer_slot < 0) {
		return -1;
	}
	if (queue_length() > 0) {
		log_msg(LOG_INFO, "queue: %u message(s) waiting", queue_length());
	}
	arm(now_s());
	return 0;
}

void queue_shutdown(void)
{
	unsigned i;

	shutting = 1;
	for (i = 0; i < nrunners; i++) {
		if (runners[i].busy) {
			smtp_client_abort(runners[i].client);
		}
	}
}

size_t queue_list(char *buf, size_t len, const struct submitter *who)
{
	static struct queue_env e;
	char path[PATH_LEN];
	struct stat st;
	size_t o = 0;
	unsigned i, k;
	int n;

	for (i = 0; i < nitems_seen && o < len; i++) {
		if (!items[i].used || queue_env_read(cf()->spool, items[i].id, &e) < 0) {
			continue;
		}
		if (!who->trusted && !(who->known && e.local && e.uid == who->uid)) {
			continue;   /* an ordinary user sees their own mail only */
		}
		snprintf(path, sizeof path, "%s/msg/%s", cf()->spool, e.id);
		n = snprintf(buf + o, len - o, "%s %lld %lld <%s>%s\n", e.id,
		             stat(path, &st) == 0 ? (long long)st.st_size : -1LL,
		             (long long)(now_s() - e.arrival), e.sender, items[i].busy ? " (active)" : "");
		if (n < 0 || (size_t)n >= len - o) {
			break;
		}
		o += (size_t)n;
		for (k = 0; k < e.nrcpt; k++) {
			if (e.rcpt[k].state != 'P') {
				continue;
			}
			n = snprintf(buf + o, len - o, "    <%s>%s%s%s\n", e.rcpt[k].addr,
			             e.rcpt[k].why[0] ? " (" : "", e.rcpt[k].why, e.rcpt[k].why[0] ? ")" : "");
			if (n < 0 || (size_t)n >= len - o) {
				return o;
			}
			o += (size_t)n;
		}
	}
	return o;
}

/* 1 if id is a plain queue id: letters, digits, '.', '_', '-'. */
static int id_ok(const char *id)
{
	size_t n = strlen(id);

	return n > 0 && n < QUEUE_ID_MAX && id[0] != '.' && strstr(id, "..") == NULL &&
	       strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

int queue_adopt(const char *id)
{
	static struct queue_env e;
	unsigned i;

	if (!id_ok(id) || queue_env_read(cf()->spool, id, &e) < 0) {
		return -1;
	}
	for (i = 0; i < nitems_seen; i++) {
		if (items[i].used && strcmp(items[i].id, id) == 0) {
			items[i].next = 0;
			arm(now_s());
			return 0;
		}
	}
	queue_log_received(&e, "spool", NULL);
	queue_added(id);
	return 0;
}

int queue_delete(const char *id, const struct submitter *who)
{
	static struct queue_env e;
	struct log_kv l;
	unsigned i;

	for (i = 0; i < nitems_seen; i++) {
		if (items[i].used && strcmp(items[i].id, id) == 0) {
			if (!who->trusted && (!who->known || queue_env_read(cf()->spool, id, &e) < 0 ||
			                      !e.local || e.uid != who->uid)) {
				return -3;
			}
			if (items[i].busy) {
				return -2;
			}
			queue_remove(cf()->spool, id);
			items[i].used = 0;
			log_kv_start(&l, "deleted");
			log_kv_str(&l, "id", id);
			log_kv_str(&l, "by", who->name);
			log_kv_end(&l, LOG_NOTICE);
			return 0;
		}
	}
	return -1;
}
