/* inforce_stub.c - inforce.h, sessions.h and stats.h for the session
 * harnesses: a fixed configuration, users and aliases in force, and the
 * pool's release going back to the session driver.  daemon.c itself
 * (listeners, signals, the control socket) has no part in parsing a
 * session's bytes. */
#include "fuzz.h"
#include "inforce.h"
#include "sessions.h"
#include "stats.h"
#include "tls.h"

#include <stdio.h>
#include <string.h>

struct stats stats;

static struct conf conf;
static struct users_table users;
static struct alias_table aliases;

/* Hashes in crypt_stub.c's form: "$5$fuzz$" then the password.  bob has a
 * 1K quota and "full" a quota of one octet, to reach the 452 paths. */
static const char users_file[] =
	"alice:$5$fuzz$secret\n"
	"bob:$5$fuzz$hunter2:1K\n"
	"full:$5$fuzz$full:1\n"
	"locked:!\n";

/* A loop, a chain, remote targets and a local-domain target. */
static const char aliases_file[] =
	"postmaster: alice\n"
	"root: alice\n"
	"team: alice, bob, team\n"
	"fwd: carol@remote.test\n"
	"mix: alice, dave@remote.test, bob@fuzz.test\n"
	"loop1: loop2\n"
	"loop2: loop1\n"
	"deep1: deep2\n"
	"deep2: deep3\n"
	"deep3: full\n";

/* A throwaway EC key and its self-signed certificate (mx.fuzz.test,
 * valid for a century), both in one file: STARTTLS, STLS and the
 * implicit TLS ports then really start a handshake. */
static const char tls_file[] =
	"-----BEGIN CERTIFICATE-----\n"
	"MIIBhjCCASugAwIBAgIUD8sRgf3BjcDd444wIad4WG0Y2rcwCgYIKoZIzj0EAwIw\n"
	"FzEVMBMGA1UEAwwMbXguZnV6ei50ZXN0MCAXDTI2MTEyODAxNTk0M1oYDzIxMjYx\n"
	"MTA0MDE1OTQzWjAXMRUwEwYDVQQDDAxteC5mdXp6LnRlc3QwWTATBgcqhkjOPQIB\n"
	"BggqhkjOPQMBBwNCAAQL9cuMbzxOwb0/kBUWDBTEsONzJ7S+mSoZRmC5UowdDEiL\n"
	"I+uM2jhI2gMEyZbrw6jWv18GEulCFeBZJp25WvTYo1MwUTAdBgNVHQ4EFgQU+DDI\n"
	"CZK0hQ8oiOYCQ3pNhDuuvmMwHwYDVR0jBBgwFoAU+DDICZK0hQ8oiOYCQ3pNhDuu\n"
	"vmMwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBGAiEAzdJ0sZDpAiOK\n"
	"GmOVMV9bzR6HSwZ5Z/xyzzfHMdFjVtsCIQC/56gYBNK1XGdL2XkizRylNgj7i6fP\n"
	"jcFZSbIb3AZSJw==\n"
	"-----END CERTIFICATE-----\n"
	"-----BEGIN EC PRIVATE KEY-----\n"
	"MHcCAQEEIHyBvYps7AlI0pFzjM1nqHcj9sFkX0s6wwziEEGjqSZdoAoGCCqGSM49\n"
	"AwEHoUQDQgAEC/XLjG88TsG9P5AVFgwUxLDjcye0vpkqGUZguVKMHQxIiyPrjNo4\n"
	"SNoDBMmW68Oo1r9fBhLpQhXgWSaduVr02A==\n"
	"-----END EC PRIVATE KEY-----\n";

const struct conf *inforce_conf(void)
{
	return &conf;
}

const struct users_table *inforce_users(void)
{
	return &users;
}

const struct alias_table *inforce_aliases(void)
{
	return &aliases;
}

struct conf *fuzz_conf(void)
{
	return &conf;
}

void sessions_release(void *session)
{
	fuzz_session_released(session);
}

static void set(const char *text)
{
	char line[512], err[CONF_ERR_MAX];

	snprintf(line, sizeof line, "%s", text);
	if (conf_line(&conf, line, err, sizeof err) < 0) {
		fuzz_fail("configuration line '%s': %s", text, err);
	}
}

void fuzz_daemon_setup(const char *root)
{
	char path[64], line[512], err[CONF_ERR_MAX];

	conf_defaults(&conf);
	set("hostname mx.fuzz.test");
	set("domains fuzz.test localhost");
	set("relay_from 10.0.0.0/8 ::1/128");
	set("max_message_size 100K");
	set("max_recipients 20");
	set("spool /nonexistent/picomail-fuzz-spool");
	snprintf(line, sizeof line, "maildir_root %s", root);
	set(line);
	fuzz_memfile((const uint8_t *)users_file, sizeof users_file - 1, path, sizeof path);
	if (users_load(&users, path, err, sizeof err) < 0) {
		fuzz_fail("users: %s", err);
	}
	fuzz_memfile((const uint8_t *)aliases_file, sizeof aliases_file - 1, path, sizeof path);
	if (alias_load(&aliases, path, err, sizeof err) < 0) {
		fuzz_fail("aliases: %s", err);
	}
	/* The keys are read here, once: the file is not needed later. */
	fuzz_memfile((const uint8_t *)tls_file, sizeof tls_file - 1, path, sizeof path);
	snprintf(conf.tls_cert, sizeof conf.tls_cert, "%s", path);
	snprintf(conf.tls_key, sizeof conf.tls_key, "%s", path);
	conf.tls_sessions = 2;
	if (tls_init(&conf, err, sizeof err) < 0) {
		fuzz_fail("tls_init: %s", err);
	}
}
