/* fuzz_tls_client.c - the relay's outbound TLS (src/tls.c): the real
 * BearSSL client engine as tls_client_take sets it up (suites, versions,
 * hashes, buffers), fed the records of a server whose bytes and
 * fragmentation come from the input, through both certificate paths:
 * x509_any (delivery to an MX, smarthost_verify no), whose decoder reads
 * whatever certificate the server sends, and x509_minimal against a test
 * trust anchor loaded by tls_load_anchors (smarthost_verify yes).
 *
 * tls.c is included rather than linked, to reach struct tls and the
 * decoder of x509_any without widening its interface for a test.
 *
 * Input: a flags byte, then chunks.
 *   bit 0      verify: x509_minimal with test_ca below as ca_file;
 *              clear: x509_any
 *   bits 1-2   the server name: mx.example.test, a.relay.example.test
 *              (both carried by the seeds' certificates), example.test,
 *              b.a.relay.example.test (carried by none)
 *   bit 3      the client writes an EHLO line as soon as it may send data
 *   chunk      a 2-byte big-endian length, then that many bytes (a length
 *              past the end takes what is left; a last lone byte is
 *              ignored): what one read from the server's socket returns.
 * After each chunk the engine is pumped as conn.c does (tls_fill,
 * tls_flush): application data read, records the client sends drained
 * and dropped, the chunk handed to recvrec in the pieces it asks for,
 * until it wants bytes the chunk no longer has or closes.  At the end of
 * the input the session ends as conn_close ends it (close_notify when
 * still open) and the slot is given back.
 *
 * Repeatable: the engine's generator is re-seeded with fixed bytes after
 * tls_client_take, and the handshake restarted, so the ClientHello and the
 * client's key share are the same in every run.  A recorded server flight
 * therefore stays valid: the seeds hold real ones (OpenSSL's s_server
 * with EC P-256 and RSA certificates issued by test_ca) that complete the
 * handshake and deliver a banner, cut into records and reads of many
 * sizes, and certificates BearSSL's decoder refuses (an 8192-bit RSA key,
 * EC keys of 1200 and 3000 octets) in small records.  The keys behind the seeds
 * were made for them and protect nothing.
 *
 * Memory: the pool holds one slot, allocated afresh for each input, so
 * ASan's redzone lies just past the slot.  Inside it, the bytes after the
 * last field of x509_any's decoder and tls.c's guard are poisoned while the
 * session runs, so a write past the decoder's context is reported where
 * it happens.
 *
 * Checked besides the sanitizers: tls.c never pushes bytes into a
 * certificate decoder that has failed or finished; after an error the
 * engine is closed, and a refused certificate chain closes it with the
 * validator's own reason, an X.509 one; a taken chain has a key, and a
 * verified one names the server; the handshake completes only after a
 * chain was taken, in TLS 1.2 with one of tls.c's suites; the guard still
 * holds tls.c's canary when the slot is given back.  FUZZ_SHOW=1 copies the application
 * data the server sends to stderr, and how each session ended. */
#include <bearssl.h>

/* tls.c's pushes into a certificate decoder come here (decoder_push):
 * one into a decoder that has failed or finished is counted, then made,
 * so that ASan still sees what it does. */
static void decoder_push(br_x509_decoder_context *dc, const void *data, size_t len);
#define br_x509_decoder_push decoder_push
#include "../../src/tls.c"
#undef br_x509_decoder_push

#include "fuzz.h"

#include <sanitizer/asan_interface.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The trust anchor of the verified path, and issuer of every certificate
 * in the seeds (EC P-256, valid 2020 to 2099).  Made for these tests. */
static const char test_ca[] =
	"-----BEGIN CERTIFICATE-----\n"
	"MIIBVDCB+qADAgECAgEBMAoGCCqGSM49BAMCMCAxHjAcBgNVBAMMFXBpY29tYWls\n"
	"IGZ1enogdGVzdCBDQTAgFw0yMDAxMDEwMDAwMDBaGA8yMDk5MTIzMTIzNTk1OVow\n"
	"IDEeMBwGA1UEAwwVcGljb21haWwgZnV6eiB0ZXN0IENBMFkwEwYHKoZIzj0CAQYI\n"
	"KoZIzj0DAQcDQgAEppGVA4aDf59AeOv9NXK8tl1+EVQJz+CPX30UPew7Z/YmLSRG\n"
	"J8EFI4SFkYpkLI7zE3hB9ADoRcLeMc818tgU6qMjMCEwDwYDVR0TAQH/BAUwAwEB\n"
	"/zAOBgNVHQ8BAf8EBAMCAQYwCgYIKoZIzj0EAwIDSQAwRgIhALkzusNLTWAXsSsz\n"
	"yC+UQ7SftSS27wbfcZnJ8MBCymdrAiEAmGgqWQpyTpq8iqbzPo8oZLUQQqKztYPV\n"
	"XJ1zyvHmWBY=\n"
	"-----END CERTIFICATE-----\n";

/* The seeds' certificates carry mx.example.test and *.relay.example.test. */
static const struct {
	const char *name;
	int carried;
} server_names[4] = {
	{ "mx.example.test", 1 },
	{ "a.relay.example.test", 1 },
	{ "example.test", 0 },
	{ "b.a.relay.example.test", 0 },   /* a wildcard stands for one label */
};

#define FLAG_VERIFY 0x01
#define FLAG_EHLO   0x08

static const char ehlo[] = "EHLO client.example.test\r\n";

/* Stands between the engine and tls.c's validator, forwarding every call,
 * to see the chain's outcome and to lift the poison while the decoder is
 * initialised whole. */
struct watch {
	const br_x509_class *vtable;   /* first: this is the engine's x509 context */
	const br_x509_class **inner;   /* tls.c's x509_any or x509_minimal */
	struct tls *t;
	unsigned flags;
	int chain_ended;
	unsigned chain_err;            /* what end_chain returned */
	int handshake_done;
	int closed;
	size_t ehlo_sent;
};

static struct watch w;
static unsigned long pushes_after_error;
static int show;

/* Where the client's records go: nowhere here; a program that records a
 * real server's replies as seeds includes this file and sets it. */
static void (*client_sends)(const unsigned char *buf, size_t len);

static void decoder_push(br_x509_decoder_context *dc, const void *data, size_t len)
{
	if (br_x509_decoder_last_error(dc) != BR_ERR_X509_TRUNCATED) {
		pushes_after_error++;
	}
	br_x509_decoder_push(dc, data, len);
}

/* The bytes nothing may write while the session runs: those after the
 * last field of x509_any's decoder, to the end of its context, and the
 * guard tls.c keeps after it (X509_GUARD; without one, as in a tls.c that
 * predates it, the decoder's own tail is still poisoned). */
static void poison(struct tls *t, int on)
{
	br_x509_decoder_context *dc = &t->u.c.any.dec;
	unsigned char *tail = &dc->signer_hash_id + 1;
	size_t n = (size_t)((unsigned char *)(dc + 1) - tail);

	if (on) {
		ASAN_POISON_MEMORY_REGION(tail, n);
#ifdef X509_GUARD
		ASAN_POISON_MEMORY_REGION(t->u.c.any.guard, sizeof t->u.c.any.guard);
#endif
	} else {
		ASAN_UNPOISON_MEMORY_REGION(tail, n);
#ifdef X509_GUARD
		ASAN_UNPOISON_MEMORY_REGION(t->u.c.any.guard, sizeof t->u.c.any.guard);
#endif
	}
}

static struct watch *watch_of(const br_x509_class **ctx)
{
	return (struct watch *)(void *)ctx;
}

static void watch_start_chain(const br_x509_class **ctx, const char *server_name)
{
	struct watch *x = watch_of(ctx);

	/* x509_any initialises its decoder whole here. */
	poison(x->t, 0);
	(*x->inner)->start_chain(x->inner, server_name);
	poison(x->t, 1);
}

static void watch_start_cert(const br_x509_class **ctx, uint32_t length)
{
	struct watch *x = watch_of(ctx);

	(*x->inner)->start_cert(x->inner, length);
}

static void watch_append(const br_x509_class **ctx, const unsigned char *buf, size_t len)
{
	struct watch *x = watch_of(ctx);

	(*x->inner)->append(x->inner, buf, len);
}

static void watch_end_cert(const br_x509_class **ctx)
{
	struct watch *x = watch_of(ctx);

	(*x->inner)->end_cert(x->inner);
}

static unsigned watch_end_chain(const br_x509_class **ctx)
{
	struct watch *x = watch_of(ctx);
	unsigned err = (*x->inner)->end_chain(x->inner);

	if (x->chain_ended) {
		fuzz_fail("a second certificate chain");
	}
	x->chain_ended = 1;
	x->chain_err = err;
	if (err != 0 && (err <= BR_ERR_X509_OK || err >= BR_ERR_X509_OK + 64)) {
		fuzz_fail("a certificate chain refused with %u, not an X.509 reason", err);
	}
	if (err == 0 && (*x->inner)->get_pkey(x->inner, NULL) == NULL) {
		fuzz_fail("a certificate chain taken without a key");
	}
	if (err == 0 && (x->flags & FLAG_VERIFY) && !server_names[(x->flags >> 1) & 3].carried) {
		fuzz_fail("a chain verified for %s, which no test certificate carries",
		          server_names[(x->flags >> 1) & 3].name);
	}
	return err;
}

static const br_x509_pkey *watch_get_pkey(const br_x509_class *const *ctx, unsigned *usages)
{
	const struct watch *x = (const struct watch *)(const void *)ctx;

	return (*x->inner)->get_pkey(x->inner, usages);
}

static const br_x509_class watch_vtable = {
	sizeof(struct watch), watch_start_chain, watch_start_cert, watch_append, watch_end_cert,
	watch_end_chain, watch_get_pkey,
};

/* The engine's state, after checking what must hold between any two
 * steps. */
static unsigned engine_state(br_ssl_engine_context *eng)
{
	unsigned st = br_ssl_engine_current_state(eng);
	int err = br_ssl_engine_last_error(eng);
	br_ssl_session_parameters sp;
	size_t i;

	if (err != BR_ERR_OK && st != BR_SSL_CLOSED) {
		fuzz_fail("error %d (%s), yet the engine is not closed (state 0x%x)", err,
		          tls_error_text(err), st);
	}
	if (w.closed && st != BR_SSL_CLOSED) {
		fuzz_fail("the engine came back after closing (state 0x%x)", st);
	}
	if (w.chain_ended && w.chain_err != 0 && (st != BR_SSL_CLOSED || err != (int)w.chain_err)) {
		fuzz_fail("the certificate chain was refused with %u, the engine has %d, state 0x%x",
		          w.chain_err, err, st);
	}
	if (st == BR_SSL_CLOSED) {
		w.closed = 1;
	}
	if ((st & (BR_SSL_SENDAPP | BR_SSL_RECVAPP)) != 0 && !w.handshake_done) {
		w.handshake_done = 1;
		if (!w.chain_ended || w.chain_err != 0) {
			fuzz_fail("the handshake completed without a taken certificate chain");
		}
		br_ssl_engine_get_session_parameters(eng, &sp);
		for (i = 0; i < sizeof suites_client / sizeof suites_client[0]; i++) {
			if (sp.cipher_suite == suites_client[i]) {
				break;
			}
		}
		if (sp.version != BR_TLS12 || i == sizeof suites_client / sizeof suites_client[0]) {
			fuzz_fail("a session in version 0x%04x with suite 0x%04x", sp.version,
			          sp.cipher_suite);
		}
	}
	return st;
}

/* One round of conn.c's tls_fill and tls_flush, with n bytes from the
 * server's socket: until the engine closes or wants bytes there are no
 * more of. */
static void pump(br_ssl_engine_context *eng, const uint8_t *in, size_t n)
{
	unsigned char *buf;
	size_t len;
	unsigned st;

	for (;;) {
		st = engine_state(eng);
		if (st & BR_SSL_CLOSED) {
			return;
		}
		if (st & BR_SSL_RECVAPP) {
			buf = br_ssl_engine_recvapp_buf(eng, &len);
			if (show) {
				fwrite(buf, 1, len, stderr);
			}
			br_ssl_engine_recvapp_ack(eng, len);
			continue;
		}
		if (st & BR_SSL_SENDREC) {
			buf = br_ssl_engine_sendrec_buf(eng, &len);
			if (client_sends != NULL) {
				client_sends(buf, len);
			}
			br_ssl_engine_sendrec_ack(eng, len);
			continue;
		}
		if ((st & BR_SSL_SENDAPP) && (w.flags & FLAG_EHLO) && w.ehlo_sent < sizeof ehlo - 1) {
			buf = br_ssl_engine_sendapp_buf(eng, &len);
			if (len > sizeof ehlo - 1 - w.ehlo_sent) {
				len = sizeof ehlo - 1 - w.ehlo_sent;
			}
			memcpy(buf, ehlo + w.ehlo_sent, len);
			w.ehlo_sent += len;
			br_ssl_engine_sendapp_ack(eng, len);
			br_ssl_engine_flush(eng, 0);
			continue;
		}
		if (!(st & BR_SSL_RECVREC) || n == 0) {
			return;
		}
		buf = br_ssl_engine_recvrec_buf(eng, &len);
		if (len == 0) {
			fuzz_fail("the engine asks for records with no room for them");
		}
		if (len > n) {
			len = n;
		}
		memcpy(buf, in, len);
		br_ssl_engine_recvrec_ack(eng, len);
		in += len;
		n -= len;
	}
}

/* A client session as the relay takes one, made repeatable and watched. */
static struct tls *session_open(unsigned flags)
{
	static const unsigned char fixed[] = "fuzz_tls_client: fixed, not random";
	const char *name = server_names[(flags >> 1) & 3].name;
	br_ssl_client_context *cc;
	struct tls *t;

	memset(&w, 0, sizeof w);
	pushes_after_error = 0;
	if (pool_init(&slots, "tls", sizeof(struct tls), 1) < 0) {
		fuzz_fail("out of memory");
	}
	t = tls_client_take(name, flags & FLAG_VERIFY);
	if (t == NULL) {
		fuzz_fail("tls_client_take refused a client session");
	}
	cc = &t->u.c.cc;
	w.vtable = &watch_vtable;
	w.inner = cc->eng.x509ctx;
	w.t = t;
	w.flags = flags;
	br_ssl_engine_set_x509(&cc->eng, &w.vtable);
	/* The generator restarts from fixed bytes, whatever tls_client_take
	 * seeded it with; BearSSL reads the system's entropy only once per
	 * context, and is told that is done. */
	br_hmac_drbg_init(&cc->eng.rng, &br_sha256_vtable, fixed, sizeof fixed - 1);
	cc->eng.rng_init_done = 2;
	cc->eng.rng_os_rand_done = 1;
	if (!br_ssl_client_reset(cc, name, 0)) {
		fuzz_fail("the client engine does not restart: %d",
		          br_ssl_engine_last_error(&cc->eng));
	}
	poison(t, 1);
	return t;
}

static void session_close(struct tls *t)
{
	br_ssl_engine_context *eng = tls_engine(t);
	int err;

	/* As conn_close: a close_notify when the engine is still open. */
	if (!(engine_state(eng) & BR_SSL_CLOSED)) {
		br_ssl_engine_close(eng);
		pump(eng, NULL, 0);
	}
	err = br_ssl_engine_last_error(eng);
	if (show) {
		fprintf(stderr, "\nfuzz_tls_client: %s, %s, %s; certificate chain %s (%u); %s (%d)\n",
		        w.flags & FLAG_VERIFY ? "verified" : "unverified",
		        server_names[(w.flags >> 1) & 3].name,
		        w.handshake_done ? "handshake done" : "no handshake",
		        !w.chain_ended ? "not seen" : w.chain_err == 0 ? "taken" : "refused",
		        w.chain_err, err == 0 ? "open" : tls_error_text(err), err);
	}
	if (pushes_after_error > 0) {
		fuzz_fail("%lu pushes into a certificate decoder that had failed or finished",
		          pushes_after_error);
	}
	poison(t, 0);
#ifdef X509_GUARD
	if (memcmp(t->u.c.any.guard, canary, sizeof canary) != 0) {
		fuzz_fail("the guard after the certificate decoder was written");
	}
#endif
	tls_release(t);
	pool_free(&slots);
}

/* Hands the input's chunks to the session. */
static void session_feed(struct tls *t, const uint8_t *p, size_t n)
{
	size_t len;

	while (n >= 2) {
		len = (size_t)p[0] << 8 | p[1];
		p += 2;
		n -= 2;
		if (len > n) {
			len = n;
		}
		pump(tls_engine(t), p, len);
		p += len;
		n -= len;
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char path[64], err[CONF_ERR_MAX];

	(void)argc;
	(void)argv;
	err[0] = '\0';
	show = getenv("FUZZ_SHOW") != NULL;
	fuzz_memfile((const uint8_t *)test_ca, sizeof test_ca - 1, path, sizeof path);
	if (tls_load_anchors(path, err, sizeof err) < 0 || nanchors != 1) {
		fuzz_fail("loading the test CA: %s", err);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tls *t;

	if (size < 1) {
		return 0;
	}
	t = session_open(data[0]);
	session_feed(t, data + 1, size - 1);
	session_close(t);
	return 0;
}
