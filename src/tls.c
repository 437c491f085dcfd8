/* tls.c - BearSSL glue: key material, the slot pool, the server profile. */
#include "tls.h"
#include "io.h"
#include "log.h"
#include "pool.h"
#include "random.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#define CHAIN_MAX     8
#define CERT_BUF      16384   /* DER of the whole chain */
#define KEY_BUF       4096    /* private key components */
#define PEM_CHUNK     4096
#define CACHE_BYTES   16384   /* session cache: about 160 sessions */
#define CA_FILE_MAX   (16 << 20)   /* Debian's whole bundle is about 200 KB */
#define UNIX_EPOCH_DAYS 719528u   /* days from 0 AD to 1970 (X.509 dates) */

#define X509_GUARD    64      /* octets after the decoder that nothing writes */
#define RSA_BITS_MAX  4096    /* BearSSL's BR_MAX_RSA_SIZE (an internal name) */

/* An X.509 "validator" that takes the server's key without checking
 * anything: opportunistic TLS to an MX (RFC 7435), or smarthost_verify no.
 * Its decoder reads bytes from whichever server we connect to. */
struct x509_any {
	const br_x509_class *vtable;
	int first;
	br_x509_decoder_context dec;
	/* Never written.  An overrun of the decoder (BearSSL 0.6's runs on
	 * after an error if pushed more; any_append no longer pushes) would
	 * land here first: a guard that no longer holds the process's random
	 * canary means memory was corrupted (a server's bytes cannot guess
	 * it), and the daemon stops rather than run on with it (tls_release). */
	unsigned char guard[X509_GUARD];
};

struct tls {
	int client;
	int keyset;                     /* server: the key material in use */
	union {
		br_ssl_server_context sc;
		struct {
			br_ssl_client_context cc;
			br_x509_minimal_context xm;
			struct x509_any any;
		} c;
	} u;
	unsigned char ibuf[TLS_IBUF];
	unsigned char obuf[TLS_OBUF];
};

/* Key material, twice: a reload fills the spare while sessions may still
 * use the one in force. */
struct keyset {
	int loaded;
	int type;                        /* BR_KEYTYPE_RSA or BR_KEYTYPE_EC */
	br_x509_certificate chain[CHAIN_MAX];
	size_t nchain;
	unsigned char cert[CERT_BUF];
	size_t cert_used;
	br_rsa_private_key rsa;
	br_ec_private_key ec;
	unsigned char key[KEY_BUF];
	unsigned refs;                   /* sessions using it */
};

static struct keyset keysets[2];
static int current;
static struct pool slots;
static br_ssl_session_cache_lru cache;
static unsigned char cache_store[CACHE_BYTES];
static unsigned char file_buf[PEM_CHUNK];
static unsigned char canary[X509_GUARD];   /* random, set at the first client session */
static int canary_set;

static int fail(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
	return -1;
}

/* ---- PEM ----------------------------------------------------------------- */

struct pem_sink {
	unsigned char *buf;
	size_t cap, len;
	int overflow;
};

static void pem_append(void *ctx, const void *data, size_t n)
{
	struct pem_sink *s = ctx;

	if (s->len + n > s->cap) {
		s->overflow = 1;
		return;
	}
	memcpy(s->buf + s->len, data, n);
	s->len += n;
}

/* Called for each PEM object (name, DER); 0 or -1 with err. */
typedef int (*pem_fn)(void *ctx, const char *name, const unsigned char *der, size_t len,
                      char *err, size_t errlen);

/* Feeds len bytes to the decoder, handling its events.  -1 with err. */
static int pem_feed(br_pem_decoder_context *pc, struct pem_sink *sink, const unsigned char *buf,
                    size_t len, const char *path, pem_fn fn, void *ctx, int *inside,
                    int *objects, char *err, size_t errlen)
{
	static char name[128];
	size_t off = 0;

	while (off < len) {
		off += br_pem_decoder_push(pc, buf + off, len - off);
		switch (br_pem_decoder_event(pc)) {
		case BR_PEM_BEGIN_OBJ:
			snprintf(name, sizeof name, "%s", br_pem_decoder_name(pc));
			sink->len = 0;
			sink->overflow = 0;
			br_pem_decoder_setdest(pc, pem_append, sink);
			*inside = 1;
			break;
		case BR_PEM_END_OBJ:
			*inside = 0;
			if (sink->overflow) {
				return fail(err, errlen, "%s: a PEM object is too large", path);
			}
			(*objects)++;
			if (fn(ctx, name, sink->buf, sink->len, err, errlen) < 0) {
				return -1;
			}
			break;
		case BR_PEM_ERROR:
			return fail(err, errlen, "%s: malformed PEM (or a key encrypted the old way, "
			            "with Proc-Type headers: picomail needs it in clear, openssl pkey "
			            "-in %s -out KEY)", path, path);
		default:
			break;
		}
	}
	return 0;
}

/* Calls fn for each PEM object of the file, read in chunks: a CA bundle of
 * any size goes through fixed buffers. */
static int pem_each(const char *path, pem_fn fn, void *ctx, char *err, size_t errlen)
{
	static br_pem_decoder_context pc;
	static unsigned char der[CERT_BUF];
	struct pem_sink sink = { der, sizeof der, 0, 0 };
	int inside = 0, objects = 0, fd;
	ssize_t n;

	fd = io_open(path, O_RDONLY, 0);
	if (fd < 0) {
		return fail(err, errlen, "%s: %s", path, strerror(errno));
	}
	br_pem_decoder_init(&pc);
	while ((n = io_read(fd, file_buf, sizeof file_buf)) > 0) {
		if (pem_feed(&pc, &sink, file_buf, (size_t)n, path, fn, ctx, &inside, &objects, err,
		             errlen) < 0) {
			io_close(fd);
			return -1;
		}
	}
	io_close(fd);
	if (n < 0) {
		return fail(err, errlen, "%s: %s", path, strerror(errno));
	}
	/* The decoder sees an END line at its newline: supply one. */
	if (pem_feed(&pc, &sink, (const unsigned char *)"\n", 1, path, fn, ctx, &inside, &objects,
	             err, errlen) < 0) {
		return -1;
	}
	if (inside) {
		return fail(err, errlen, "%s: unterminated PEM object", path);
	}
	if (objects == 0) {
		return fail(err, errlen, "%s: no PEM object found", path);
	}
	return 0;
}

/* ---- certificates and keys ------------------------------------------------ */

struct cert_ctx {
	struct keyset *ks;
	const char *path;
};

static int add_cert(void *ctx, const char *name, const unsigned char *der, size_t len, char *err,
                    size_t errlen)
{
	struct cert_ctx *c = ctx;
	struct keyset *ks = c->ks;

	if (strcmp(name, "CERTIFICATE") != 0) {
		return 0;   /* other objects (a key in the same file) are skipped */
	}
	if (ks->nchain == CHAIN_MAX || ks->cert_used + len > sizeof ks->cert) {
		return fail(err, errlen, "%s: certificate chain too long", c->path);
	}
	memcpy(ks->cert + ks->cert_used, der, len);
	ks->chain[ks->nchain].data = ks->cert + ks->cert_used;
	ks->chain[ks->nchain].data_len = len;
	ks->cert_used += len;
	ks->nchain++;
	return 0;
}

/* Copies n bytes into the key buffer; NULL if it is full. */
static unsigned char *keep(struct keyset *ks, size_t *used, const unsigned char *p, size_t n)
{
	unsigned char *dst;

	if (*used + n > sizeof ks->key) {
		return NULL;
	}
	dst = ks->key + *used;
	memcpy(dst, p, n);
	*used += n;
	return dst;
}

struct key_ctx {
	struct keyset *ks;
	const char *path;
	int found;
};

/* ---- sizes of an RSA key, before BearSSL's decoder sees it --------------- */

/* One DER element at *p (before end): its tag, and its content in *c and
 * *clen; *p moves past it.  Short-form tags, definite lengths of at most
 * four octets.  0, or -1 when malformed or running past end. */
static int der_next(const unsigned char **p, const unsigned char *end, unsigned *tag,
                    const unsigned char **c, size_t *clen)
{
	const unsigned char *q = *p;
	size_t len, i, nlen;

	if (end - q < 2 || (q[0] & 0x1f) == 0x1f) {
		return -1;
	}
	*tag = q[0];
	len = q[1];
	q += 2;
	if (len & 0x80) {
		nlen = len & 0x7f;
		if (nlen == 0 || nlen > 4 || (size_t)(end - q) < nlen) {
			return -1;
		}
		for (len = 0, i = 0; i < nlen; i++) {
			len = len << 8 | *q++;
		}
	}
	if (len > (size_t)(end - q)) {
		return -1;
	}
	*c = q;
	*clen = len;
	*p = q + len;
	return 0;
}

/* Octets of a DER INTEGER's value without its leading zeros. */
static size_t int_octets(const unsigned char *c, size_t len)
{
	while (len > 0 && *c == 0) {
		c++;
		len--;
	}
	return len;
}

/* BearSSL 0.6's private key decoder copies the five CRT components of an
 * RSA key into a buffer it believes 1560 octets long, while the context
 * has 1536 (fixed upstream after 0.6): a key with larger components would
 * be written past the context.  So an RSA key (PKCS#1, or inside PKCS#8)
 * is measured here first: its modulus within RSA_BITS_MAX bits, its
 * components within the buffer the context really has.  0 (fits, or not
 * an RSA key), or -1 with err. */
static int rsa_key_fits(const char *name, const unsigned char *der, size_t len,
                        const char *path, char *err, size_t errlen)
{
	const unsigned char *p = der, *end = der + len, *c;
	size_t clen, crt = 0, nbits = 0;
	unsigned tag, i;

	if (der_next(&p, end, &tag, &c, &clen) < 0 || tag != 0x30) {
		return fail(err, errlen, "%s: the private key is not DER", path);
	}
	p = c;
	end = c + clen;
	if (strcmp(name, "PRIVATE KEY") == 0) {
		/* PKCS#8: version, algorithm, then the key in an OCTET STRING. */
		if (der_next(&p, end, &tag, &c, &clen) < 0 || der_next(&p, end, &tag, &c, &clen) < 0 ||
		    der_next(&p, end, &tag, &c, &clen) < 0 || tag != 0x04) {
			return fail(err, errlen, "%s: malformed PKCS#8 private key", path);
		}
		p = c;
		end = c + clen;
		if (der_next(&p, end, &tag, &c, &clen) < 0 || tag != 0x30) {
			return 0;   /* not an RSA key: the decoder judges it */
		}
		p = c;
		end = c + clen;
	}
	/* RSAPrivateKey: version, n, e, d, p, q, dp, dq, iq (RFC 8017 A.1.2). */
	for (i = 0; i < 9; i++) {
		if (der_next(&p, end, &tag, &c, &clen) < 0 || tag != 0x02) {
			return 0;   /* an EC key, or garbage the decoder refuses */
		}
		if (i == 1) {
			nbits = int_octets(c, clen) * 8;
		}
		if (i >= 4) {
			crt += clen;
		}
	}
	if (nbits > RSA_BITS_MAX) {
		return fail(err, errlen, "%s: RSA key of %zu bits or so: at most %d are supported",
		            path, nbits, RSA_BITS_MAX);
	}
	if (crt > sizeof ((br_skey_decoder_context *)0)->key_data) {
		return fail(err, errlen, "%s: RSA key components too large (%zu octets)", path, crt);
	}
	return 0;
}

static int add_key(void *ctx, const char *name, const unsigned char *der, size_t len, char *err,
                   size_t errlen)
{
	static br_skey_decoder_context dc;
	struct key_ctx *k = ctx;
	struct keyset *ks = k->ks;
	const br_rsa_private_key *rsa;
	const br_ec_private_key *ec;
	size_t used = 0;

	if (strcmp(name, "ENCRYPTED PRIVATE KEY") == 0) {
		return fail(err, errlen, "%s: the private key is encrypted (PKCS#8 with a password); "
		            "the daemon starts unattended and needs it in clear: openssl pkey -in %s "
		            "-out KEY, then protect KEY by its mode (0640, group of run_as)", k->path,
		            k->path);
	}
	if (strcmp(name, "RSA PRIVATE KEY") != 0 && strcmp(name, "EC PRIVATE KEY") != 0 &&
	    strcmp(name, "PRIVATE KEY") != 0) {
		return 0;
	}
	if (k->found) {
		return fail(err, errlen, "%s: more than one private key", k->path);
	}
	if (strcmp(name, "EC PRIVATE KEY") != 0 && rsa_key_fits(name, der, len, k->path, err,
	                                                         errlen) < 0) {
		return -1;
	}
	/* One push of the whole key, so never a push after an error. */
	br_skey_decoder_init(&dc);
	br_skey_decoder_push(&dc, der, len);
	if (br_skey_decoder_last_error(&dc) != 0) {
		return fail(err, errlen, "%s: cannot decode the private key (BearSSL error %d)",
		            k->path, br_skey_decoder_last_error(&dc));
	}
	ks->type = br_skey_decoder_key_type(&dc);
	if (ks->type == BR_KEYTYPE_RSA) {
		rsa = br_skey_decoder_get_rsa(&dc);
		ks->rsa.n_bitlen = rsa->n_bitlen;
		if ((ks->rsa.p = keep(ks, &used, rsa->p, rsa->plen)) == NULL ||
		    (ks->rsa.q = keep(ks, &used, rsa->q, rsa->qlen)) == NULL ||
		    (ks->rsa.dp = keep(ks, &used, rsa->dp, rsa->dplen)) == NULL ||
		    (ks->rsa.dq = keep(ks, &used, rsa->dq, rsa->dqlen)) == NULL ||
		    (ks->rsa.iq = keep(ks, &used, rsa->iq, rsa->iqlen)) == NULL) {
			return fail(err, errlen, "%s: RSA key too large", k->path);
		}
		ks->rsa.plen = rsa->plen;
		ks->rsa.qlen = rsa->qlen;
		ks->rsa.dplen = rsa->dplen;
		ks->rsa.dqlen = rsa->dqlen;
		ks->rsa.iqlen = rsa->iqlen;
	} else if (ks->type == BR_KEYTYPE_EC) {
		ec = br_skey_decoder_get_ec(&dc);
		ks->ec.curve = ec->curve;
		if ((ks->ec.x = keep(ks, &used, ec->x, ec->xlen)) == NULL) {
			return fail(err, errlen, "%s: EC key too large", k->path);
		}
		ks->ec.xlen = ec->xlen;
	} else {
		return fail(err, errlen, "%s: unsupported key type", k->path);
	}
	memset(&dc, 0, sizeof dc);   /* no copy of the key left behind */
	k->found = 1;
	return 0;
}

/* 0 if sk signs what pub verifies: the two halves of one key.  (0.6's
 * br_rsa_compute_modulus runs out of room for 4096-bit keys, which it
 * otherwise takes, so the modulus is not compared directly.) */
static int rsa_pair(const br_rsa_private_key *sk, const br_rsa_public_key *pub)
{
	static const unsigned char hash[32] = "picomail: does the key match?..";
	static unsigned char sig[RSA_BITS_MAX / 8], out[sizeof hash];
	size_t len = (sk->n_bitlen + 7) / 8;

	if (len > sizeof sig ||
	    !br_rsa_pkcs1_sign_get_default()(BR_HASH_OID_SHA256, hash, sizeof hash, sk, sig) ||
	    !br_rsa_pkcs1_vrfy_get_default()(sig, len, BR_HASH_OID_SHA256, sizeof out, pub, out)) {
		return -1;
	}
	return memcmp(out, hash, sizeof hash) == 0 ? 0 : -1;
}

/* The leaf certificate's public key must be the private key's. */
static int key_matches(struct keyset *ks, const char *cert_path, const char *key_path, char *err,
                       size_t errlen)
{
	static br_x509_decoder_context xc;
	static unsigned char buf[1024];
	const br_x509_pkey *pk;
	br_ec_public_key pub;
	uint32_t now_days;
	size_t n;

	br_x509_decoder_init(&xc, NULL, NULL);
	br_x509_decoder_push(&xc, ks->chain[0].data, ks->chain[0].data_len);
	pk = br_x509_decoder_get_pkey(&xc);
	if (pk == NULL) {
		return fail(err, errlen, "%s: cannot decode the certificate (BearSSL error %d)",
		            cert_path, br_x509_decoder_last_error(&xc));
	}
	if ((int)pk->key_type != ks->type) {
		return fail(err, errlen, "%s does not match %s: key types differ", key_path, cert_path);
	}
	if (ks->type == BR_KEYTYPE_RSA) {
		if (rsa_pair(&ks->rsa, &pk->key.rsa) < 0) {
			return fail(err, errlen, "%s does not match the certificate in %s (or is not a "
			            "working RSA key)", key_path, cert_path);
		}
	} else {
		n = br_ec_compute_pub(br_ec_get_default(), &pub, buf, &ks->ec);
		if (n == 0 || pub.curve != pk->key.ec.curve || pub.qlen != pk->key.ec.qlen ||
		    memcmp(pub.q, pk->key.ec.q, pub.qlen) != 0) {
			return fail(err, errlen, "%s does not match the certificate in %s", key_path,
			            cert_path);
		}
	}
	/* An expired certificate is a start-up error, unless the clock is
	 * plainly unset (a router without RTC boots in 1970). */
	now_days = (uint32_t)(time(NULL) / 86400) + UNIX_EPOCH_DAYS;
	if (time(NULL) < 1577836800) {   /* 2020-01-01 */
		log_msg(LOG_WARNING, "the clock says %ld: not checking the validity of %s",
		        (long)time(NULL), cert_path);
	} else if (xc.notafter_days < now_days) {
		return fail(err, errlen, "%s: the certificate has expired", cert_path);
	}
	return 0;
}

static int load_keyset(struct keyset *ks, const struct conf *c, char *err, size_t errlen)
{
	struct cert_ctx cc = { ks, c->tls_cert };
	struct key_ctx kc = { ks, c->tls_key, 0 };

	memset(ks, 0, offsetof(struct keyset, refs));
	if (pem_each(c->tls_cert, add_cert, &cc, err, errlen) < 0) {
		return -1;
	}
	if (ks->nchain == 0) {
		return fail(err, errlen, "%s: no CERTIFICATE in the file", c->tls_cert);
	}
	if (pem_each(c->tls_key, add_key, &kc, err, errlen) < 0) {
		return -1;
	}
	if (!kc.found) {
		return fail(err, errlen, "%s: no private key in the file", c->tls_key);
	}
	if (key_matches(ks, c->tls_cert, c->tls_key, err, errlen) < 0) {
		return -1;
	}
	ks->loaded = 1;
	return 0;
}

/* ---- the pool and the server profile -------------------------------------- */

int tls_check(const struct conf *c, char *err, size_t errlen)
{
	if (c->tls_cert[0] == '\0') {
		return 0;
	}
	return load_keyset(&keysets[0], c, err, errlen);
}

int tls_init(const struct conf *c, char *err, size_t errlen)
{
	if (tls_check(c, err, errlen) < 0) {
		return -1;
	}

	current = 0;
	br_ssl_session_cache_lru_init(&cache, cache_store, sizeof cache_store);
	if (c->tls_sessions > 0 && pool_init(&slots, "tls", sizeof(struct tls), c->tls_sessions) < 0) {
		return fail(err, errlen, "TLS: cannot allocate %u sessions", c->tls_sessions);
	}
	return 0;
}

int tls_reload(const struct conf *c, char *err, size_t errlen)
{
	int spare = !current;

	if (c->tls_cert[0] == '\0') {
		return 0;
	}
	if (keysets[spare].refs > 0) {
		return fail(err, errlen, "TLS keys not reloaded: sessions still use the keys of two "
		            "reloads ago; reload again later");
	}
	if (load_keyset(&keysets[spare], c, err, errlen) < 0) {
		return -1;
	}
	current = spare;
	return 0;
}

int tls_ready(void)
{
	return keysets[current].loaded;
}

/* Each engine's generator is seeded afresh from the kernel (random.c)
 * before its handshake.  Our BearSSL is built without its own system
 * seeder (0.6's takes RDRAND alone on x86, without the checks later
 * upstream added); one a packager supplies may keep it, and only mixes
 * its bytes in after these.  0, or -1 (logged): no handshake then. */
static int seed(br_ssl_engine_context *eng)
{
	unsigned char b[32];

	if (random_bytes(b, sizeof b) < 0) {
		log_msg(LOG_ERR, "TLS: no random bytes for a handshake: %m");
		return -1;
	}
	br_ssl_engine_inject_entropy(eng, b, sizeof b);
	memset(b, 0, sizeof b);
	return 0;
}

/* TLS 1.2 only, ECDHE with AEAD only (no CBC, RC4, 3DES, static RSA).
 * CBC is left out on both sides for good: besides its padding-oracle
 * history, 0.6's CBC record code misses a length check fixed upstream
 * later. */
static const uint16_t suites_rsa[] = {
	BR_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	BR_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	BR_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
};
static const uint16_t suites_ec[] = {
	BR_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	BR_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	BR_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
};

static void server_profile(struct tls *t, const struct keyset *ks)
{
	br_ssl_server_context *sc = &t->u.sc;

	br_ssl_server_zero(sc);
	br_ssl_engine_set_versions(&sc->eng, BR_TLS12, BR_TLS12);
	if (ks->type == BR_KEYTYPE_RSA) {
		br_ssl_engine_set_suites(&sc->eng, suites_rsa, sizeof suites_rsa / sizeof suites_rsa[0]);
		br_ssl_server_set_single_rsa(sc, ks->chain, ks->nchain, &ks->rsa, BR_KEYTYPE_SIGN,
		                             br_rsa_private_get_default(),
		                             br_rsa_pkcs1_sign_get_default());
	} else {
		br_ssl_engine_set_suites(&sc->eng, suites_ec, sizeof suites_ec / sizeof suites_ec[0]);
		br_ssl_server_set_single_ec(sc, ks->chain, ks->nchain, &ks->ec, BR_KEYTYPE_SIGN,
		                            BR_KEYTYPE_EC, br_ec_get_default(),
		                            br_ecdsa_sign_asn1_get_default());
	}
	/* X25519 is preferred by the server code when the client has it. */
	br_ssl_engine_set_default_ec(&sc->eng);
	br_ssl_engine_set_hash(&sc->eng, br_sha1_ID, &br_sha1_vtable);
	br_ssl_engine_set_hash(&sc->eng, br_sha224_ID, &br_sha224_vtable);
	br_ssl_engine_set_hash(&sc->eng, br_sha256_ID, &br_sha256_vtable);
	br_ssl_engine_set_hash(&sc->eng, br_sha384_ID, &br_sha384_vtable);
	br_ssl_engine_set_hash(&sc->eng, br_sha512_ID, &br_sha512_vtable);
	br_ssl_engine_set_prf_sha256(&sc->eng, &br_tls12_sha256_prf);
	br_ssl_engine_set_prf_sha384(&sc->eng, &br_tls12_sha384_prf);
	br_ssl_engine_set_default_aes_gcm(&sc->eng);
	br_ssl_engine_set_default_chapol(&sc->eng);
	br_ssl_engine_add_flags(&sc->eng, BR_OPT_NO_RENEGOTIATION | BR_OPT_ENFORCE_SERVER_PREFERENCES);
	br_ssl_engine_set_buffers_bidi(&sc->eng, t->ibuf, sizeof t->ibuf, t->obuf, sizeof t->obuf);
	br_ssl_server_set_cache(sc, &cache.vtable);
}

struct tls *tls_server_take(void)
{
	struct keyset *ks = &keysets[current];
	struct tls *t;

	if (!ks->loaded || slots.size == 0) {
		return NULL;
	}
	t = pool_take(&slots);
	if (t == NULL) {
		return NULL;
	}
	t->client = 0;
	server_profile(t, ks);
	if (seed(&t->u.sc.eng) < 0 || !br_ssl_server_reset(&t->u.sc)) {
		log_msg(LOG_ERR, "TLS reset failed: %s", tls_error_text(br_ssl_engine_last_error(&t->u.sc.eng)));
		pool_give(&slots, t);
		return NULL;
	}
	t->keyset = current;
	ks->refs++;
	return t;
}

/* The guard after the certificate decoder of a client session: the
 * canary unless something overran the decoder. */
static void guard_check(const struct tls *t)
{
	if (t->client && memcmp(t->u.c.any.guard, canary, sizeof canary) != 0) {
		log_msg(LOG_CRIT, "TLS: the certificate decoder wrote past its context: memory "
		        "corrupted, stopping");
		abort();
	}
}

void tls_release(struct tls *t)
{
	if (!t->client) {
		keysets[t->keyset].refs--;
	}
	guard_check(t);
	pool_give(&slots, t);
}

/* ---- client sessions (relay) ------------------------------------------------ */

static br_x509_trust_anchor *anchors;
static size_t nanchors;

/* 1 while the decoder waits for more of the certificate: no error yet and
 * not yet complete, which is what last_error's TRUNCATED means (0.6's
 * decoder never fails with TRUNCATED itself).  Once it has failed, it must
 * not be pushed again: 0.6's push runs the decoder on from just after the
 * failed check, and an oversized field is then copied past the context. */
static int x509_wants_more(br_x509_decoder_context *dc)
{
	return br_x509_decoder_last_error(dc) == BR_ERR_X509_TRUNCATED;
}

static void any_start_chain(const br_x509_class **ctx, const char *server_name)
{
	struct x509_any *a = (struct x509_any *)(void *)ctx;

	(void)server_name;
	a->first = 1;
	br_x509_decoder_init(&a->dec, NULL, NULL);
}

static void any_start_cert(const br_x509_class **ctx, uint32_t length)
{
	(void)ctx;
	(void)length;
}

static void any_append(const br_x509_class **ctx, const unsigned char *buf, size_t len)
{
	struct x509_any *a = (struct x509_any *)(void *)ctx;

	if (a->first && x509_wants_more(&a->dec)) {
		br_x509_decoder_push(&a->dec, buf, len);
	}
}

static void any_end_cert(const br_x509_class **ctx)
{
	((struct x509_any *)(void *)ctx)->first = 0;
}

/* No key: the handshake fails with the decoder's own reason (a field too
 * large, a truncated certificate...), which the relay logs. */
static unsigned any_end_chain(const br_x509_class **ctx)
{
	struct x509_any *a = (struct x509_any *)(void *)ctx;
	int err;

	if (br_x509_decoder_get_pkey(&a->dec) != NULL) {
		return 0;
	}
	err = br_x509_decoder_last_error(&a->dec);
	return err != 0 ? (unsigned)err : BR_ERR_X509_INVALID_VALUE;
}

static const br_x509_pkey *any_get_pkey(const br_x509_class *const *ctx, unsigned *usages)
{
	struct x509_any *a = (struct x509_any *)(void *)ctx;

	if (usages != NULL) {
		*usages = BR_KEYTYPE_KEYX | BR_KEYTYPE_SIGN;
	}
	return br_x509_decoder_get_pkey(&a->dec);
}

static const br_x509_class x509_any_vtable = {
	sizeof(struct x509_any), any_start_chain, any_start_cert, any_append, any_end_cert,
	any_end_chain, any_get_pkey,
};

/* Trust anchors from ca_file, decoded once at start-up. */
struct anchor_ctx {
	unsigned char *arena;
	size_t used, cap;
	size_t n, max;
	int overflow;
};

static void dn_append(void *ctx, const void *buf, size_t len)
{
	struct anchor_ctx *a = ctx;

	if (a->used + len > a->cap) {
		a->overflow = 1;
		return;
	}
	memcpy(a->arena + a->used, buf, len);
	a->used += len;
}

static unsigned char *arena_copy(struct anchor_ctx *a, const void *p, size_t n)
{
	unsigned char *dst;

	if (a->used + n > a->cap) {
		a->overflow = 1;
		return NULL;
	}
	dst = a->arena + a->used;
	memcpy(dst, p, n);
	a->used += n;
	return dst;
}

static int add_anchor(void *ctx, const char *name, const unsigned char *der, size_t len,
                      char *err, size_t errlen)
{
	static br_x509_decoder_context dc;
	struct anchor_ctx *a = ctx;
	br_x509_trust_anchor *ta;
	const br_x509_pkey *pk;
	size_t dn_start = a->used;

	(void)err;
	(void)errlen;
	if (strcmp(name, "CERTIFICATE") != 0 && strcmp(name, "TRUSTED CERTIFICATE") != 0) {
		return 0;
	}
	if (a->n == a->max) {
		return 0;
	}
	br_x509_decoder_init(&dc, dn_append, a);
	br_x509_decoder_push(&dc, der, len);
	pk = br_x509_decoder_get_pkey(&dc);
	if (pk == NULL || a->overflow) {
		a->used = dn_start;
		a->overflow = 0;
		return 0;   /* a certificate we cannot use is skipped */
	}
	ta = &anchors[a->n];
	ta->dn.data = a->arena + dn_start;
	ta->dn.len = a->used - dn_start;
	ta->flags = br_x509_decoder_isCA(&dc) ? BR_X509_TA_CA : 0;
	ta->pkey.key_type = pk->key_type;
	if (pk->key_type == BR_KEYTYPE_RSA) {
		ta->pkey.key.rsa.n = arena_copy(a, pk->key.rsa.n, pk->key.rsa.nlen);
		ta->pkey.key.rsa.nlen = pk->key.rsa.nlen;
		ta->pkey.key.rsa.e = arena_copy(a, pk->key.rsa.e, pk->key.rsa.elen);
		ta->pkey.key.rsa.elen = pk->key.rsa.elen;
	} else {
		ta->pkey.key.ec.curve = pk->key.ec.curve;
		ta->pkey.key.ec.q = arena_copy(a, pk->key.ec.q, pk->key.ec.qlen);
		ta->pkey.key.ec.qlen = pk->key.ec.qlen;
	}
	if (a->overflow) {
		a->used = dn_start;
		a->overflow = 0;
		return 0;
	}
	a->n++;
	return 0;
}

int tls_load_anchors(const char *path, char *err, size_t errlen)
{
	struct anchor_ctx a;
	struct stat st;

	if (nanchors > 0) {
		return 0;   /* loaded once at start-up, for the smarthost and the token endpoint */
	}
	if (stat(path, &st) < 0) {
		return fail(err, errlen, "ca_file %s: %s", path, strerror(errno));
	}
	/* Start-up only: the anchors take less room than the file, which is
	 * bounded so that its size fits a 32-bit size_t with room to spare. */
	if (st.st_size <= 0 || st.st_size > CA_FILE_MAX) {
		return fail(err, errlen, "ca_file %s: empty, or larger than %d bytes", path, CA_FILE_MAX);
	}
	a.cap = (size_t)st.st_size;
	a.max = a.cap / 256 + 1;
	a.arena = malloc(a.cap + 1);
	anchors = calloc(a.max, sizeof *anchors);
	if (a.arena == NULL || anchors == NULL) {
		return fail(err, errlen, "ca_file %s: out of memory", path);
	}
	a.used = a.n = 0;
	a.overflow = 0;
	if (pem_each(path, add_anchor, &a, err, errlen) < 0) {
		return -1;
	}
	nanchors = a.n;
	if (nanchors == 0) {
		return fail(err, errlen, "ca_file %s: no usable certificate", path);
	}
	return 0;
}

static const uint16_t suites_client[] = {
	BR_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	BR_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	BR_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	BR_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	BR_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	BR_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
};

struct tls *tls_client_take(const char *server_name, int verify)
{
	static const br_hash_class *const hashes[] = {
		&br_sha1_vtable, &br_sha224_vtable, &br_sha256_vtable, &br_sha384_vtable,
		&br_sha512_vtable,
	};
	br_ssl_client_context *cc;
	struct tls *t;
	unsigned i;

	if (slots.size == 0 || (verify && nanchors == 0)) {
		return NULL;
	}
	/* Here, not at start-up: the kernel's pool may not be ready before
	 * the daemon has gone to the background (random.c). */
	if (!canary_set) {
		if (random_bytes(canary, sizeof canary) < 0) {
			log_msg(LOG_ERR, "TLS: no random bytes for the guard: %m");
			return NULL;
		}
		canary_set = 1;
	}
	t = pool_take(&slots);
	if (t == NULL) {
		return NULL;
	}
	t->client = 1;
	cc = &t->u.c.cc;
	br_ssl_client_zero(cc);
	br_ssl_engine_set_versions(&cc->eng, BR_TLS12, BR_TLS12);
	br_ssl_engine_set_suites(&cc->eng, suites_client,
	                         sizeof suites_client / sizeof suites_client[0]);
	br_ssl_client_set_default_rsapub(cc);
	br_ssl_engine_set_default_rsavrfy(&cc->eng);
	br_ssl_engine_set_default_ecdsa(&cc->eng);
	br_ssl_engine_set_default_ec(&cc->eng);
	for (i = 0; i < sizeof hashes / sizeof hashes[0]; i++) {
		br_ssl_engine_set_hash(&cc->eng, br_sha1_ID + (int)i, hashes[i]);
	}
	br_ssl_engine_set_prf_sha256(&cc->eng, &br_tls12_sha256_prf);
	br_ssl_engine_set_prf_sha384(&cc->eng, &br_tls12_sha384_prf);
	br_ssl_engine_set_default_aes_gcm(&cc->eng);
	br_ssl_engine_set_default_chapol(&cc->eng);
	br_ssl_engine_add_flags(&cc->eng, BR_OPT_NO_RENEGOTIATION);
	if (verify) {
		br_x509_minimal_init(&t->u.c.xm, &br_sha256_vtable, anchors, nanchors);
		for (i = 0; i < sizeof hashes / sizeof hashes[0]; i++) {
			br_x509_minimal_set_hash(&t->u.c.xm, br_sha1_ID + (int)i, hashes[i]);
		}
		br_x509_minimal_set_rsa(&t->u.c.xm, br_rsa_pkcs1_vrfy_get_default());
		br_x509_minimal_set_ecdsa(&t->u.c.xm, br_ec_get_default(),
		                          br_ecdsa_vrfy_asn1_get_default());
		br_ssl_engine_set_x509(&cc->eng, &t->u.c.xm.vtable);
	} else {
		t->u.c.any.vtable = &x509_any_vtable;
		br_ssl_engine_set_x509(&cc->eng, &t->u.c.any.vtable);
	}
	memcpy(t->u.c.any.guard, canary, sizeof canary);
	br_ssl_engine_set_buffers_bidi(&cc->eng, t->ibuf, sizeof t->ibuf, t->obuf, sizeof t->obuf);
	/* An address is no name for SNI (RFC 6066 3), nor one BearSSL can
	 * check a certificate against (conf.c refuses that with verify). */
	if (conf_is_address(server_name)) {
		server_name = NULL;
	}
	if (seed(&cc->eng) < 0 || !br_ssl_client_reset(cc, server_name, 0)) {
		pool_give(&slots, t);
		return NULL;
	}
	return t;
}

br_ssl_engine_context *tls_engine(struct tls *t)
{
	return t->client ? &t->u.c.cc.eng : &t->u.sc.eng;
}

static const char *suite_name(uint16_t s)
{
	switch (s) {
	case BR_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: return "ECDHE-RSA-AES128-GCM-SHA256";
	case BR_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: return "ECDHE-RSA-AES256-GCM-SHA384";
	case BR_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: return "ECDHE-RSA-CHACHA20-POLY1305";
	case BR_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: return "ECDHE-ECDSA-AES128-GCM-SHA256";
	case BR_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: return "ECDHE-ECDSA-AES256-GCM-SHA384";
	case BR_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: return "ECDHE-ECDSA-CHACHA20-POLY1305";
	default: return "unknown";
	}
}

const char *tls_suite(struct tls *t)
{
	br_ssl_session_parameters sp;

	br_ssl_engine_get_session_parameters(tls_engine(t), &sp);
	return suite_name(sp.cipher_suite);
}

void tls_describe(struct tls *t, char *out, size_t len)
{
	snprintf(out, len, "TLSv1.2 with cipher %s", tls_suite(t));
}

/* Why a certificate was refused, for the log. */
static const char *x509_error_text(int err)
{
	switch (err) {
	case BR_ERR_X509_TRUNCATED:
	case BR_ERR_X509_INNER_TRUNC: return "certificate truncated";
	case BR_ERR_X509_LIMIT_EXCEEDED: return "certificate refused: a key or field larger "
	                                        "than the decoder takes";
	case BR_ERR_X509_UNSUPPORTED: return "certificate refused: unsupported key or algorithm";
	case BR_ERR_X509_WRONG_KEY_TYPE: return "certificate refused: wrong key type";
	case BR_ERR_X509_BAD_SIGNATURE: return "certificate refused: bad signature";
	case BR_ERR_X509_EXPIRED: return "certificate expired or not yet valid";
	case BR_ERR_X509_TIME_UNKNOWN: return "certificate refused: the clock is not set";
	case BR_ERR_X509_BAD_SERVER_NAME: return "certificate does not name the server";
	case BR_ERR_X509_NOT_TRUSTED: return "certificate not trusted by ca_file";
	case BR_ERR_X509_NOT_CA: return "certificate chain refused: an issuer is not a CA";
	case BR_ERR_X509_WEAK_PUBLIC_KEY: return "certificate refused: weak public key";
	case BR_ERR_X509_CRITICAL_EXTENSION: return "certificate refused: unknown critical "
	                                            "extension";
	case BR_ERR_X509_EMPTY_CHAIN: return "no certificate sent";
	default: return "certificate malformed";
	}
}

/* A TLS alert's name (RFC 5246 7.2), with what it usually means here. */
static const char *alert_name(int alert)
{
	switch (alert) {
	case 10: return "unexpected message";
	case 20: return "bad record MAC";
	case 22: return "record overflow";
	case 40: return "handshake failure (no common cipher suite, curve or signature)";
	case 42: return "bad certificate";
	case 43: return "unsupported certificate";
	case 45: return "certificate expired";
	case 46: return "certificate unknown";
	case 47: return "illegal parameter";
	case 48: return "unknown CA";
	case 50: return "decode error";
	case 51: return "decrypt error";
	case 70: return "protocol version (TLS 1.2 only)";
	case 71: return "insufficient security";
	case 80: return "internal error";
	case 90: return "user canceled";
	case 100: return "no renegotiation";
	case 110: return "unsupported extension";
	case 112: return "unrecognized name";
	default: return "alert";
	}
}

const char *tls_error_text(int err)
{
	static char text[96];   /* alerts: one caller at a time, single-threaded */

	switch (err) {
	case BR_ERR_OK: return "closed";
	case BR_ERR_BAD_VERSION: return "unsupported protocol version";
	case BR_ERR_BAD_CIPHER_SUITE: return "no common cipher suite";
	case BR_ERR_NO_CLIENT_AUTH: return "no client authentication";
	case BR_ERR_UNEXPECTED: return "unexpected message";
	case BR_ERR_BAD_MAC: return "bad record MAC";
	case BR_ERR_IO: return "I/O error";
	case BR_ERR_TOO_LARGE: return "record too large";
	default:
		if (err >= BR_ERR_RECV_FATAL_ALERT && err < BR_ERR_RECV_FATAL_ALERT + 256) {
			snprintf(text, sizeof text, "fatal alert from the peer: %s",
			         alert_name(err - BR_ERR_RECV_FATAL_ALERT));
			return text;
		}
		if (err >= BR_ERR_SEND_FATAL_ALERT && err < BR_ERR_SEND_FATAL_ALERT + 256) {
			snprintf(text, sizeof text, "fatal alert sent: %s",
			         alert_name(err - BR_ERR_SEND_FATAL_ALERT));
			return text;
		}
		if (err > BR_ERR_X509_OK && err < BR_ERR_X509_OK + 64) {
			return x509_error_text(err);
		}
		return "handshake failure";
	}
}

unsigned tls_used(void)
{
	return slots.used;
}

unsigned tls_size(void)
{
	return slots.size;
}
