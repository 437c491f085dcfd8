/* smtp_policy.c - the SMTP session's defences against spam engines, for
 * strangers on port 25 (clients on smtp listeners outside relay_from; the
 * HELO check on every listener): greet_pause and DNS blocklists before
 * the banner, the HELO check, greylisting at RCPT, the content scanner
 * after the final dot.  Each decision is counted and logged once.
 */
#include "smtp_session.h"
#include "greylist.h"
#include "inforce.h"
#include "loop.h"
#include "scanner.h"
#include "stats.h"

#include <poll.h>
#include <stdio.h>
#include <time.h>

/* ---- before the banner ------------------------------------------------- */

/* The banner, once the pause is over: 554 for a listed client (who may
 * only QUIT), else 220. */
static void banner(struct smtp_session *s)
{
	const struct conf *c = inforce_conf();

	loop_deadline(s->slot, loop_now() + (int64_t)c->smtp_timeout * 1000);
	if (s->dnsbl_on) {
		stats.dnsbl_unanswered += dnsbl_cancel(&s->dnsbl, 1);
		s->dnsbl_on = 0;
		if (s->dnsbl.listed >= 0) {
			const char *zone = s->dnsbl.zone[s->dnsbl.listed];

			stats.dnsbl_listed++;
			smtp_refuse(s, "dnsbl", NULL, "554 5.7.1 Service unavailable; client [%s] blocked using "
			       "%s", s->conn.peer_ip, zone);
			s->state = ST_REFUSED;
			return;
		}
	}
	s->state = ST_GREETED;
	smtp_banner(s);
}

/* Greets once greet_pause is over and every list has answered (or had
 * its time); until then, waits for whichever comes next. */
static void pause_check(struct smtp_session *s)
{
	int64_t now = loop_now();

	if (now < s->pause_end) {
		loop_deadline(s->slot, s->pause_end);
	} else if (s->dnsbl_on && s->dnsbl.pending > 0 && s->dnsbl.listed < 0 &&
	           now < s->dnsbl_end) {
		loop_deadline(s->slot, s->dnsbl_end);
	} else {
		banner(s);
	}
}

static void dnsbl_done(void *ctx)
{
	struct smtp_session *s = ctx;

	if (s->state == ST_PAUSE) {
		pause_check(s);
		(void)smtp_update(s);
	}
}

/* In ST_PAUSE: the deadline, or input.  A client that talks before the
 * banner is not waiting for replies: a spam engine.  Refused, and the
 * connection closed. */
void policy_pause_event(struct smtp_session *s, int revents)
{
	if (revents & LOOP_TIMEOUT) {
		pause_check(s);
		(void)smtp_update(s);
		return;
	}
	if (conn_fill(&s->conn) > 0 || conn_unread(&s->conn) > 0) {
		stats.pregreet++;
		if (s->dnsbl_on) {
			(void)dnsbl_cancel(&s->dnsbl, 0);
			s->dnsbl_on = 0;
		}
		smtp_refuse(s, "pregreet", NULL, "554 5.5.1 Error: protocol error, talked before the "
		       "greeting");
		s->state = ST_QUIT;
		s->end_why = "refused";
	}
	(void)smtp_update(s);
}

/* Holds the banner back: greet_pause, and the blocklist lookups. */
void policy_pause_start(struct smtp_session *s)
{
	const struct conf *c = inforce_conf();
	int64_t now = loop_now();

	s->state = ST_PAUSE;
	s->pause_end = now + (int64_t)c->greet_pause * 1000;
	s->dnsbl_end = now + (int64_t)c->dnsbl_timeout * 1000;
	if (c->ndnsbl > 0) {
		s->dnsbl_on = 1;
		(void)dnsbl_start(&s->dnsbl, c, &s->conn.peer, dnsbl_done, s);
	}
	pause_check(s);
}

/* ---- EHLO and RCPT ----------------------------------------------------- */

int policy_helo_refused(struct smtp_session *s, const char *arg)
{
	static const char text[] = "501 5.5.2 Helo command rejected: need a domain name or an "
	                           "address literal";
	struct log_kv l;

	if (!inforce_conf()->helo_check || addr_helo_ok(arg)) {
		return 0;
	}
	stats.helo_refused++;
	smtp_kv_session(&l, "refused", s);
	log_kv_str(&l, "reason", "helo");
	log_kv_str(&l, "helo", arg);
	log_kv_str(&l, "reply", text);
	log_kv_end(&l, LOG_NOTICE);
	smtp_reply_error(s, text);
	return 1;
}

/* Greylisting (greylist.h), for clients the spam defences screen and
 * that have not authenticated: 1 if the recipient was deferred, with the
 * reply sent. */
int policy_greylisted(struct smtp_session *s, const char *rcpt)
{
	const struct conf *c = inforce_conf();
	unsigned wait;

	if (!c->greylist || !s->screened || s->auth_user[0] != '\0') {
		return 0;
	}
	if (greylist_check(&s->conn.peer, s->tx.from, rcpt, c->greylist_delay, time(NULL), &wait)) {
		stats.greylist_passed++;
		return 0;
	}
	stats.greylist_deferred++;
	smtp_refuse(s, "greylist", rcpt, "451 4.7.1 <%s>: Recipient address rejected: Greylisted, "
	       "try again later", rcpt);
	(void)wait;
	return 1;
}

/* ---- after the final dot ----------------------------------------------- */

/* The scanner's verdict: 0 accept, 1 reject, anything else try later. */
static void scanned(void *ctx, int status)
{
	struct smtp_session *s = ctx;

	s->scan = -1;
	loop_deadline(s->slot, loop_now() + (int64_t)inforce_conf()->smtp_timeout * 1000);
	if (status == 0) {
		stats.scanner_accepted++;
		smtp_data_accept(s);
	} else if (status == 1) {
		stats.scanner_rejected++;
		stats.messages_refused++;
		smtp_refuse(s, "scanner", NULL, "554 5.7.0 Message rejected by the content scanner");
		smtp_tx_reset(s);
	} else {
		char why[48];

		stats.scanner_tempfail++;
		snprintf(why, sizeof why, status < 0 ? "scanner-killed" : "scanner-exit-%d", status);
		smtp_refuse(s, why, NULL, "451 4.3.0 Content scan failed, try again later");
		smtp_tx_reset(s);
	}
	smtp_process(s);
	(void)smtp_update(s);
}

/* The scanner did not answer within scanner_timeout: killed, and the
 * mail refused for now rather than accepted unscanned. */
void policy_scan_timeout(struct smtp_session *s)
{
	scanner_cancel(s->scan);
	s->scan = -1;
	stats.scanner_timeouts++;
	smtp_refuse(s, "scanner-timeout", NULL, "451 4.3.0 Content scan timed out, try again later");
	smtp_tx_reset(s);
	loop_deadline(s->slot, loop_now() + (int64_t)inforce_conf()->smtp_timeout * 1000);
	smtp_process(s);
	(void)smtp_update(s);
}

/* Hands the complete file to the scanner; the reply waits for it. */
void policy_scan_start(struct smtp_session *s)
{
	const struct conf *c = inforce_conf();
	int e = maildir_flush(&s->msg);

	if (e != 0) {
		smtp_reply_write_error(s, e);
		smtp_tx_reset(s);
		return;
	}
	s->scan = scanner_start(c->scanner, s->msg.tmp, scanned, s);
	if (s->scan < 0) {
		stats.scanner_tempfail++;
		log_msg(LOG_ERR, "scanner %s cannot run: %m", c->scanner);
		smtp_refuse(s, "scanner-unavailable", NULL, "451 4.3.0 Content scanner unavailable, try "
		       "again later");
		smtp_tx_reset(s);
		return;
	}
	s->state = ST_SCAN;
	loop_deadline(s->slot, loop_now() + (int64_t)c->scanner_timeout * 1000);
}
