/* daemon.c - start-up, listeners, the session pool, signals, reload and
 * the control socket of "picomail serve". */
#include "daemon.h"
#include "fsyncs.h"
#include "inforce.h"
#include "sessions.h"
#include "stats.h"
#include "control.h"
#include "io.h"
#include "log.h"
#include "loop.h"
#include "maildir.h"
#include "maildrop.h"
#include "oauth.h"
#include "pool.h"
#include "imap.h"
#include "pop3.h"
#include "dns.h"
#include "greylist.h"
#include "queue.h"
#include "quota.h"
#include "random.h"
#include "runas.h"
#include "unixuser.h"
#include "scanner.h"
#include "smtp_client.h"
#include "smtp_server.h"
#include "tls.h"
#include "version.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Deep enough for a burst of a thousand connections to be accepted and
 * answered (421 when the pool is full).  A shallower queue overflows into
 * SYN cookies whose final ACK the kernel drops: the client believes it is
 * connected and waits for a banner that never comes.  The kernel caps it
 * at net.core.somaxconn. */
#define LISTEN_BACKLOG 1024
#ifndef IPV6_FREEBIND
#define IPV6_FREEBIND 78   /* Linux 4.15 */
#endif
#define ACCEPT_BURST   16    /* accepts per listener per round, for fairness */
#define EXTRA_SLOTS    13    /* signal pipe, control socket and its client, submit socket,
                              * queue and users timers, the OAuth2 token's command or
                              * HTTPS request, inotify of the IMAP folders, the group
                              * commit's sync ring, spare */
#define USERS_CHECK_MS  2000 /* how often the users file is stat'd for changes */

static int users_slot = -1;
static int commit_slot = -1, commit_fd = -1;   /* the group commit's ring */
static int listen_fd[CONF_LISTEN_MAX];
static int listen_slot[CONF_LISTEN_MAX];
static unsigned nlisten;
static int control_fd = -1;
static int submit_fd = -1;
/* The sendmail command's socket: SMTP, trusted to relay (local submission). */
static const struct conf_listen submit_listen = { .proto = PROTO_SMTP, .tls = TLS_NONE };
static int stopping;
static uint32_t next_id;

/* Takes what ordinary users left in the maildrop (maildrop.h); what one
 * batch leaves waits for the next users_watch tick. */
static int pickup_more;

static unsigned pickup(void)
{
	return maildrop_pickup(inforce_conf(), &pickup_more);
}

/* Every USERS_CHECK_MS: reloads the users file if it changed, takes what
 * the maildrop holds, and saves the greylist when that is due. */
static void users_watch(void *ctx, int revents)
{
	char err[CONF_ERR_MAX];
	int r;

	(void)ctx;
	(void)revents;
	loop_deadline(users_slot, loop_now() + USERS_CHECK_MS);
	(void)greylist_save(time(NULL), 0);
	if (pickup_more || maildrop_changed(inforce_conf()->spool)) {
		(void)pickup();
	}
	r = inforce_users_check(err, sizeof err);
	if (r < 0) {
		log_msg(LOG_ERR, "users file changed but not reloaded, keeping the running table: %s",
		        err);
	} else if (r > 0) {
		log_msg(LOG_INFO, "users reloaded from %s (%u users)", inforce_conf()->users,
		        inforce_users()->n);
	}
}

/* ---- listeners ---------------------------------------------------------- */

static void addr_text(const struct sockaddr_storage *ss, char *out, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
		snprintf(out, len, "[%s]:%u", ip, ntohs(s6->sin6_port));
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
		snprintf(out, len, "%s:%u", ip, ntohs(s4->sin_port));
	}
}

static int open_listener(const struct conf_listen *l)
{
	char where[80];
	int fd, one = 1;

	addr_text(&l->addr, where, sizeof where);
	fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		log_msg(LOG_ERR, "listen %s: socket: %m", where);
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    (l->addr.ss_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)) {
		log_msg(LOG_ERR, "listen %s: setsockopt: %m", where);
		close(fd);
		return -1;
	}
	/* A router's LAN address often comes up after the daemon starts (a
	 * bridge made by hotplug, DHCP): bind it before the interface has it.
	 * Kernels without IPV6_FREEBIND (before 4.15) refuse the option; the
	 * bind then says whether the address is there. */
	if (l->addr.ss_family == AF_INET) {
		(void)setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
	} else {
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof one);
	}
	if (bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) < 0 ||
	    listen(fd, LISTEN_BACKLOG) < 0) {
		log_msg(LOG_ERR, "listen %s: %m", where);
		close(fd);
		return -1;
	}
	log_msg(LOG_INFO, "listening on %s (%s)", where,
	        l->proto == PROTO_SMTP ? "smtp" : l->proto == PROTO_SUBMISSION ? "submission" :
	        l->proto == PROTO_POP3 ? "pop3" : "imap");
	return fd;
}

/* The protocol modules behind the pool's objects. */
static const struct sockaddr_storage *session_peer(void *mem, enum listen_proto proto)
{
	return proto == PROTO_POP3 ? pop3_session_peer(mem) :
	       proto == PROTO_IMAP ? imap_session_peer(mem) : smtp_session_peer(mem);
}

static void session_shutdown(void *mem, enum listen_proto proto)
{
	if (proto == PROTO_POP3) {
		pop3_session_shutdown(mem);
	} else if (proto == PROTO_IMAP) {
		imap_session_shutdown(mem);
	} else {
		smtp_session_shutdown(mem);
	}
}

static size_t session_objsize(void)
{
	size_t a = smtp_session_size(), b = pop3_session_size(), c = imap_session_size();

	return a > b ? (a > c ? a : c) : (b > c ? b : c);
}

/* What a connection refused before its session hears, per protocol. */
static const char *refusal(const struct conf_listen *l, int busy)
{
	switch (l->proto) {
	case PROTO_POP3:
		return busy ? "-ERR [SYS/TEMP] Too busy, try again later\r\n" :
		              "-ERR [SYS/TEMP] Too many connections from your address\r\n";
	case PROTO_IMAP:
		return busy ? "* BYE [UNAVAILABLE] Too busy, try again later\r\n" :
		              "* BYE [UNAVAILABLE] Too many connections from your address\r\n";
	default:
		return busy ? "421 4.3.2 Error: too busy, try again later\r\n" :
		              "421 4.7.0 Error: too many connections from your address\r\n";
	}
}

/* Sessions open from the same address as peer. */
static unsigned sessions_from(const struct sockaddr_storage *peer)
{
	const struct sockaddr_storage *p;
	enum listen_proto proto;
	unsigned i, n = 0;
	void *mem;

	for (i = 0; i < sessions_size(); i++) {
		mem = sessions_at(i, &proto);
		if (mem == NULL) {
			continue;
		}
		p = session_peer(mem, proto);
		if (p->ss_family != peer->ss_family) {
			continue;
		}
		if (peer->ss_family == AF_INET &&
		    memcmp(&((const struct sockaddr_in *)p)->sin_addr,
		           &((const struct sockaddr_in *)peer)->sin_addr, 4) == 0) {
			n++;
		} else if (peer->ss_family == AF_INET6 &&
		           memcmp(&((const struct sockaddr_in6 *)p)->sin6_addr,
		                  &((const struct sockaddr_in6 *)peer)->sin6_addr, 16) == 0) {
			n++;
		}
	}
	return n;
}

/* Answers and closes a connection we cannot serve.  The reply fits any
 * socket buffer, so one non-blocking send is enough. */
static void refuse(const struct conf_listen *l, int fd, const char *text)
{
	/* On an implicit-TLS port clear text would only confuse the client. */
	if (l->tls != TLS_IMPLICIT) {
		(void)io_send(fd, text, strlen(text));
	}
	close(fd);
}

/* A connection refused before it has a session: busy, or one address
 * holding too many. */
static void log_refused(const struct sockaddr_storage *peer, const char *reason)
{
	char ip[INET6_ADDRSTRLEN] = "local";
	struct log_kv kv;

	if (peer->ss_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, ip, sizeof ip);
	} else if (peer->ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr, ip, sizeof ip);
	}
	log_kv_start(&kv, "refused");
	log_kv_str(&kv, "client", ip);
	log_kv_str(&kv, "reason", reason);
	if (strcmp(reason, "busy") == 0) {
		log_kv_u64(&kv, "sessions", sessions_size());
	}
	log_kv_end(&kv, LOG_WARNING);
}

static void accept_one(const struct conf_listen *l, int lfd)
{
	const struct conf *c = inforce_conf();
	struct sockaddr_storage peer;
	socklen_t len = sizeof peer;
	void *mem;
	int fd;

	fd = accept4(lfd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		return;
	}
	stats.connections++;
	if (peer.ss_family != AF_UNIX) {
		int one = 1;

		/* Replies and TLS records go out whole: no Nagle delay on top
		 * of the client's delayed ACK. */
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	}
	if (!conf_net_match(c->relay_from, c->nrelay_from, (struct sockaddr *)&peer) &&
	    sessions_from(&peer) >= c->max_per_address) {
		stats.refused_per_address++;
		log_refused(&peer, "per-address");
		refuse(l, fd, refusal(l, 0));
		return;
	}
	mem = sessions_take(l->proto);
	if (mem == NULL) {
		stats.refused_busy++;
		log_refused(&peer, "busy");
		refuse(l, fd, refusal(l, 1));
		return;
	}
	if (l->proto == PROTO_POP3) {
		pop3_session_start(mem, fd, (struct sockaddr *)&peer, len, l, ++next_id);
	} else if (l->proto == PROTO_IMAP) {
		imap_session_start(mem, fd, (struct sockaddr *)&peer, len, l, ++next_id);
	} else {
		smtp_session_start(mem, fd, (struct sockaddr *)&peer, len, l, ++next_id);
	}
}

static void listener_ready(void *ctx, int revents)
{
	unsigned i = (unsigned)(uintptr_t)ctx, k;
	const struct conf_listen *l = i == CONF_LISTEN_MAX ? &submit_listen : &inforce_conf()->listen[i];
	int fd = i == CONF_LISTEN_MAX ? submit_fd : listen_fd[i];

	(void)revents;
	for (k = 0; k < ACCEPT_BURST && !stopping; k++) {
		int before = (int)stats.connections;

		accept_one(l, fd);
		if ((int)stats.connections == before) {
			break;
		}
	}
}

/* ---- status and the control socket ------------------------------------ */

#ifdef PICOMAIL_TEST
extern uint64_t testalloc_count;
#endif

static int status_text(char *buf, size_t len)
{
	int n = snprintf(buf, len,
	                 "version: %s\n"
	                 "pid: %d\n"
	                 "uptime: %" PRId64 "\n"
	                 "connections: %u\n"
	                 "connections_total: %" PRIu64 "\n"
	                 "pool.conn: %u/%u\n"
	                 "pool.mailboxes: %u/%u\n"
	                 "pool.imap: %u/%u\n"
	                 "pool.tls: %u/%u\n"
	                 "loop.slots: %u/%u\n"
	                 "refused_busy: %" PRIu64 "\n"
	                 "refused_per_address: %" PRIu64 "\n"
	                 "messages_in: %" PRIu64 "\n"
	                 "messages_refused: %" PRIu64 "\n"
	                 "bytes_written: %" PRIu64 "\n"
	                 "write_errors: %" PRIu64 "\n"
	                 "commit_batches: %" PRIu64 "\n"
	                 "commit_files: %" PRIu64 "\n"
	                 "commit_batch_max: %" PRIu64 "\n"
	                 "commit_syncs: %s\n"
	                 "commit_in_flight: %u\n"
	                 "queue_length: %u\n"
	                 "queue_bytes: %" PRIu64 "\n"
	                 "queue_active: %u\n"
	                 "pregreet: %" PRIu64 "\n"
	                 "helo_refused: %" PRIu64 "\n"
	                 "dnsbl_listed: %" PRIu64 "\n"
	                 "dnsbl_unanswered: %" PRIu64 "\n"
	                 "greylist_deferred: %" PRIu64 "\n"
	                 "greylist_passed: %" PRIu64 "\n"
	                 "greylist_triplets: %u\n"
	                 "scanner_accepted: %" PRIu64 "\n"
	                 "scanner_rejected: %" PRIu64 "\n"
	                 "scanner_tempfail: %" PRIu64 "\n"
	                 "scanner_timeouts: %" PRIu64 "\n"
	                 "scanner_running: %u\n",
	                 PICOMAIL_VERSION, (int)getpid(),
	                 (loop_now() - stats.started) / 1000, sessions_used(),
	                 stats.connections, sessions_used(), sessions_size(), pop3_mailboxes_used(),
	                 pop3_mailboxes_size(), imap_boxes_used(), imap_boxes_size(), tls_used(), tls_size(), loop_used(),
	                 loop_size(), stats.refused_busy, stats.refused_per_address,
	                 stats.messages_in, stats.messages_refused,
	                 stats.bytes_written, stats.write_errors, stats.commit_batches,
	                 stats.commit_files, stats.commit_batch_max, fsyncs_method(), maildir_commit_in_flight(),
	                 queue_length(),
	                 queue_bytes(), queue_active(), stats.pregreet,
	                 stats.helo_refused, stats.dnsbl_listed,
	                 stats.dnsbl_unanswered, stats.greylist_deferred,
	                 stats.greylist_passed, greylist_used(), stats.scanner_accepted,
	                 stats.scanner_rejected, stats.scanner_tempfail,
	                 stats.scanner_timeouts, scanner_running());
	if (n > 0 && (size_t)n < len) {
		n += (int)oauth_status(buf + n, len - (size_t)n);
	}
#ifdef PICOMAIL_TEST
	if (n > 0 && (size_t)n < len) {
		n += snprintf(buf + n, len - (size_t)n, "mallocs: %" PRIu64 "\n", testalloc_count);
	}
#endif
	return n < 0 || (size_t)n >= len ? -1 : n;
}

/* One command of the control socket (control.c), answered into buf.
 * Anyone local may ask; what an ordinary user may do is their own mail
 * only (submitter.h). */
static size_t control_answer(const char *cmd, const struct submitter *who, char *buf, size_t len)
{
	int n, r;

	if (cmd[0] == '\0' || strcmp(cmd, "status") == 0) {
		n = status_text(buf, len);
		return n > 0 ? (size_t)n : 0;
	}
	if (strcmp(cmd, "mailq") == 0) {
		size_t got = queue_list(buf, len, who);

		return got > 0 ? got : (size_t)snprintf(buf, len, "Mail queue is empty\n");
	}
	if (strcmp(cmd, "flush") == 0) {
		if (!who->trusted) {
			return (size_t)snprintf(buf, len, "not allowed: only root, run_as and "
			                        "trusted_users flush the queue\n");
		}
		queue_flush(who);
		return (size_t)snprintf(buf, len, "queue flushed\n");
	}
	if (strcmp(cmd, "maildrop") == 0) {
		/* The sendmail command left a message in the maildrop (the
		 * daemon answered 4xx): take it now. */
		return (size_t)snprintf(buf, len, "picked up %u\n", pickup());
	}
	if (strncmp(cmd, "queued ", 7) == 0) {
		/* The sendmail command queued a message itself (the daemon
		 * answered 4xx): run it now rather than at the next start. */
		r = who->trusted ? queue_adopt(cmd + 7) : -1;
		return (size_t)snprintf(buf, len, "%s %s\n", r == 0 ? "queued" : "no such message",
		                        cmd + 7);
	}
	if (strncmp(cmd, "delete ", 7) == 0) {
		r = queue_delete(cmd + 7, who);
		return (size_t)snprintf(buf, len, "%s %s\n",
		                        r == 0 ? "deleted" : r == -2 ? "busy, try again:" :
		                        r == -3 ? "not allowed: not your message:" : "no such message",
		                        cmd + 7);
	}
	return (size_t)snprintf(buf, len, "unknown command\n");
}

static int unix_address(const char *path, struct sockaddr_un *sun)
{
	memset(sun, 0, sizeof *sun);
	sun->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof sun->sun_path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(sun->sun_path, path);
	return 0;
}

/* A listening unix socket at path that every local user may reach
 * (who they are is checked per connection: submitter.h). */
static int open_unix(const char *path)
{
	struct sockaddr_un sun;
	int fd;

	if (unix_address(path, &sun) < 0) {
		log_msg(LOG_ERR, "socket %s: %m", path);
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		return -1;
	}
	(void)unlink(path);   /* left by a daemon that died */
	if (bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0 || chmod(path, 0666) < 0 ||
	    listen(fd, LISTEN_BACKLOG) < 0) {
		log_msg(LOG_ERR, "socket %s: %m", path);
		close(fd);
		return -1;
	}
	return fd;
}

static void submit_path(const struct conf *c, char *out, size_t len)
{
	snprintf(out, len, "%s/submit", c->spool);
}


/* ---- signals, reload, shutdown ----------------------------------------- */

/* A new configuration's TLS keys load before it is put in force; a
 * change of listeners is only noted (they are bound at start). */
static int reload_accept(const struct conf *next, char *err, size_t errlen)
{
	const struct conf *c = inforce_conf();

	if (tls_reload(next, err, errlen) < 0) {
		return -1;
	}
	if (next->nlisten != c->nlisten ||
	    memcmp(next->listen, c->listen, sizeof c->listen) != 0) {
		log_msg(LOG_WARNING, "reload: listen lines changed; they take effect on restart");
	}
	return 0;
}

static void reload(void)
{
	char err[CONF_ERR_MAX];
	const struct conf *c;

	if (inforce_reload(reload_accept, err, sizeof err) < 0) {
		log_msg(LOG_ERR, "reload failed, keeping the running configuration: %s", err);
		return;
	}
	c = inforce_conf();
	quota_forget();   /* maildir_root may have changed */
	/* The messages being committed go where they were written. */
	maildir_commit_drain();
	maildir_setup(c->maildir_root, c->hostname);
	dns_reconfigure(c);
	/* Greylisting turned on by the reload takes its table now. */
	if (c->greylist && greylist_init(c->spool) < 0) {
		log_msg(LOG_ERR, "greylist: no memory for the table: greylisting is off");
	}
	log_msg(LOG_INFO, "configuration reloaded from %s", inforce_path());
}

static void on_signal(int sig)
{
	char buf[3072];

	switch (sig) {
	case SIGTERM:
	case SIGINT:
		if (!stopping) {
			log_msg(LOG_INFO, "shutting down");
		}
		stopping = 1;
		break;
	case SIGHUP:
		reload();
		break;
	case SIGCHLD:
		scanner_reap();
		break;
	case SIGUSR1:
		if (status_text(buf, sizeof buf) > 0) {
			char *line, *next;

			/* One log line per counter: log_msg escapes newlines. */
			for (line = buf; *line != '\0'; line = next) {
				next = line + strcspn(line, "\n");
				if (*next == '\n') {
					*next++ = '\0';
				}
				log_msg(LOG_INFO, "status %s", line);
			}
		}
		break;
	default:
		break;
	}
}

static void shutdown_all(void)
{
	unsigned i;

	for (i = 0; i < nlisten; i++) {
		loop_del(listen_slot[i]);
		close(listen_fd[i]);
	}
	nlisten = 0;
	for (i = 0; i < sessions_size(); i++) {
		enum listen_proto proto;
		void *mem = sessions_at(i, &proto);

		if (mem != NULL) {
			session_shutdown(mem, proto);
		}
	}
	queue_shutdown();
	loop_stop();
}

/* 1 when no connection but (at most) the committing session's, and no
 * queue runner, could use the loop while the disk works. */
static int loop_alone(void)
{
	return sessions_used() <= 1 && queue_active() == 0;
}

static void commit_ready(void *ctx, int revents)
{
	(void)ctx;
	(void)revents;
	maildir_commit_run(loop_alone());
}

/* Watches the commit's ring once it exists (it is set up at the first
 * batch), and forgets it if the ring was given up (its descriptor is then
 * closed, and each batch completes within maildir_commit_run).  0, or -1
 * when the ring exists and cannot be watched. */
static int commit_watch(void)
{
	int fd = maildir_commit_fd();

	if (fd != commit_fd) {
		if (commit_slot >= 0) {
			loop_del(commit_slot);
			commit_slot = -1;
		}
		commit_fd = fd;
		if (fd >= 0) {
			commit_slot = loop_add(fd, POLLIN, commit_ready, NULL);
		}
	}
	return fd >= 0 && commit_slot < 0 ? -1 : 0;
}

static void after_round(void)
{
	/* Commits first: a session waiting on one has been promised nothing
	 * yet, but its file is complete; finish it before shutting down. */
	if (stopping) {
		maildir_commit_drain();
		shutdown_all();
		return;
	}
	maildir_commit_run(loop_alone());
	if (commit_watch() < 0) {
		/* No slot for the ring (one is kept for it): nothing would
		 * wake the loop when the syncs complete, so wait for them. */
		maildir_commit_drain();
	}
}

/* ---- start-up ------------------------------------------------------------ */

static int make_dirs(const struct conf *c, const struct passwd *pw)
{
	const char *dirs[2] = { c->maildir_root, c->spool };
	unsigned i;

	static const char *const subs[] = { "tmp", "msg", "env" };
	char path[CONF_PATH_MAX + 8];

	for (i = 0; i < 2; i++) {
		if (io_mkdirs(dirs[i], 0700) < 0) {
			log_msg(LOG_ERR, "cannot create %s: %m", dirs[i]);
			return -1;
		}
		if (pw != NULL && chown(dirs[i], pw->pw_uid, pw->pw_gid) < 0) {
			log_msg(LOG_ERR, "cannot chown %s: %m", dirs[i]);
			return -1;
		}
	}
	if (queue_make_dirs(c->spool) < 0) {
		log_msg(LOG_ERR, "cannot create the queue in %s: %m", c->spool);
		return -1;
	}
	for (i = 0; i < 3 && pw != NULL; i++) {
		snprintf(path, sizeof path, "%s/%s", c->spool, subs[i]);
		if (chown(path, pw->pw_uid, pw->pw_gid) < 0) {
			log_msg(LOG_ERR, "cannot chown %s: %m", path);
			return -1;
		}
	}
	/* Every local user reaches the submit and control sockets and the
	 * maildrop through the spool, but lists nothing in it; its queue
	 * directories stay the daemon's alone. */
	if (chmod(c->spool, 0711) < 0 ||
	    maildrop_make_dir(c->spool, pw != NULL ? pw->pw_uid : geteuid(),
	                      pw != NULL ? pw->pw_gid : getegid()) < 0) {
		log_msg(LOG_ERR, "cannot set up %s for local users: %m", c->spool);
		return -1;
	}
	return 0;
}

/* What run_as cannot reach is said in the log: the spool and Maildir
 * root stop the start, the files a reload reads only warn. */
static void runas_fatal(void *ctx, int fatal, const char *text)
{
	log_msg(fatal ? LOG_ERR : LOG_WARNING, "%s", text);
	if (fatal) {
		*(int *)ctx = 1;
	}
}

static int drop_privileges(const struct passwd *pw)
{
	char path[CONF_PATH_MAX + 16], err[CONF_ERR_MAX];
	int fatal = 0;

	if (pw == NULL) {
		if (geteuid() == 0) {
			log_msg(LOG_WARNING, "running as root: set run_as to drop privileges");
		}
		return 0;
	}
	submit_path(inforce_conf(), path, sizeof path);
	if (chown(inforce_conf()->control, pw->pw_uid, pw->pw_gid) < 0 ||
	    chown(path, pw->pw_uid, pw->pw_gid) < 0) {
		log_msg(LOG_ERR, "cannot chown the control and submit sockets: %m");
		return -1;
	}
	if (runas_become(pw, err, sizeof err) < 0) {
		log_msg(LOG_ERR, "%s", err);
		return -1;
	}
	log_msg(LOG_INFO, "running as %s", pw->pw_name);
	if (runas_check(inforce_conf(), inforce_path(), pw, runas_fatal, &fatal) > 0 && fatal) {
		return -1;
	}
	return 0;
}

static int open_listeners(const struct conf *c)
{
	unsigned i;

	for (i = 0; i < c->nlisten; i++) {
		listen_fd[i] = open_listener(&c->listen[i]);
		if (listen_fd[i] < 0) {
			return -1;
		}
		nlisten = i + 1;
	}
	char path[CONF_PATH_MAX + 16];

	control_fd = open_unix(c->control);
	submit_path(c, path, sizeof path);
	submit_fd = open_unix(path);
	return control_fd < 0 || submit_fd < 0 ? -1 : 0;
}

static int join_loop(void)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGCHLD };
	unsigned i;

	if (loop_signals(sigs, sizeof sigs / sizeof sigs[0], on_signal) < 0) {
		return -1;
	}
	for (i = 0; i < nlisten; i++) {
		listen_slot[i] = loop_add(listen_fd[i], POLLIN, listener_ready, (void *)(uintptr_t)i);
		if (listen_slot[i] < 0) {
			return -1;
		}
	}
	if (control_start(control_fd, control_answer) < 0 ||
	    loop_add(submit_fd, POLLIN, listener_ready, (void *)(uintptr_t)CONF_LISTEN_MAX) < 0) {
		return -1;
	}
	users_slot = loop_add(-1, 0, users_watch, NULL);
	if (users_slot < 0 || imap_start() < 0) {
		return -1;
	}
	loop_deadline(users_slot, loop_now() + USERS_CHECK_MS);
	loop_after_round(after_round);
	loop_gather(maildir_commit_pending);
	return 0;
}

static int daemonize(void)
{
	pid_t pid = fork();
	int fd;

	if (pid < 0) {
		return -1;
	}
	if (pid > 0) {
		_exit(0);
	}
	if (setsid() < 0 || chdir("/") < 0) {
		return -1;
	}
	fd = open("/dev/null", O_RDWR);
	if (fd < 0) {
		return -1;
	}
	dup2(fd, 0);
	dup2(fd, 1);
	dup2(fd, 2);
	if (fd > 2) {
		close(fd);
	}
	return 0;
}

int daemon_serve(const char *path, int foreground)
{
	char err[CONF_ERR_MAX];
	const struct conf *c;
	struct passwd runas, *pw = NULL;

	log_open("picomail", 1);
	if (inforce_load(path, err, sizeof err) < 0) {
		log_msg(LOG_ERR, "%s", err);
		return 1;
	}
	if (io_fault_init() < 0) {
		log_msg(LOG_ERR, "PICOMAIL_FAULT: expected op:N:ERRNO[,...]");
		return 1;
	}
	c = inforce_conf();
	if (c->run_as[0] != '\0') {
		if (unixuser_passwd(c->run_as, &runas) < 0) {
			log_msg(LOG_ERR, "run_as: no user '%s'", c->run_as);
			return 1;
		}
		pw = &runas;
	}
	signal(SIGPIPE, SIG_IGN);
	if (tls_init(c, err, sizeof err) < 0 || smtp_client_init(c, err, sizeof err) < 0) {
		log_msg(LOG_ERR, "%s", err);
		return 1;
	}
	if (oauth_enabled() && oauth_why()[0] != '\0') {
		log_msg(LOG_WARNING, "oauth: %s; relayed mail waits until then", oauth_why());
	}
	if (make_dirs(c, pw) < 0 || open_listeners(c) < 0) {
		return 1;
	}
	/* Start-up: every pool and table the daemon will ever use, sized
	 * from the configuration; nothing is allocated after this. */
	if (sessions_init(c->max_connections, session_objsize()) < 0 || pop3_init(c) < 0 ||
	    imap_init(c) < 0 ||
	    scanner_init(c->max_connections) < 0 || (c->greylist && greylist_init(c->spool) < 0) ||
	    loop_init(c->max_connections + c->nlisten + c->queue_runners + 2 * DNS_QUERIES +
	              EXTRA_SLOTS) < 0) {
		log_msg(LOG_ERR, "cannot allocate memory for %u connections", c->max_connections);
		return 1;
	}
	if (drop_privileges(pw) < 0) {
		return 1;
	}
	/* Paths are absolute (conf.c): the daemon holds no directory of
	 * whoever started it, which run_as might not even be able to enter. */
	if (chdir("/") < 0) {
		log_msg(LOG_ERR, "cannot enter /: %m");
		return 1;
	}
	if (!foreground) {
		if (daemonize() < 0) {
			log_msg(LOG_ERR, "cannot go to the background: %m");
			return 1;
		}
		log_open("picomail", 0);
	}
	/* In the background already: a wait for the kernel's random pool
	 * early at boot holds up no init script. */
	if (random_init() < 0) {
		return 1;
	}
	maildir_setup(c->maildir_root, c->hostname);
	maildir_clean_tmp();
	if (join_loop() < 0) {
		log_msg(LOG_ERR, "cannot set up the event loop: %m");
		return 1;
	}
	if (dns_init(c) < 0 || queue_init(c) < 0) {
		log_msg(LOG_ERR, "cannot set up the queue: %m");
		return 1;
	}
	(void)maildrop_changed(c->spool);
	(void)pickup();
	stats.started = loop_now();
	next_id = (uint32_t)time(NULL) << 8;
	log_msg(LOG_INFO, "picomail %s ready, %u connections at most", PICOMAIL_VERSION,
	        c->max_connections);
	if (loop_run() < 0) {
		return 1;
	}
	/* What the shutdown itself put in the commit: the envelopes of the
	 * queue runs it cut short. */
	maildir_commit_drain();
	(void)greylist_save(time(NULL), 1);
	(void)unlink(inforce_conf()->control);
	{
		char path[CONF_PATH_MAX + 16];

		submit_path(inforce_conf(), path, sizeof path);
		(void)unlink(path);
	}
	log_msg(LOG_INFO, "stopped");
	return 0;
}
