/* fuzz_pem.c - PEM input (src/tls.c): tls_cert, tls_key and ca_file, read
 * in chunks through BearSSL's PEM decoder, then the certificates and keys
 * they hold.
 *
 * tls.c is included rather than linked, to reach its static functions
 * without widening its interface for a test.
 *
 * Input: a selector byte, then the file.
 *   even  the file is both tls_cert and tls_key: load_keyset (chain, key,
 *         and the check that they match) as at start-up and SIGHUP.
 *   odd   the file is ca_file: every certificate becomes a trust anchor,
 *         as tls_load_anchors does, with its arena sized from the file.
 * A file larger than one read (4096 bytes) has objects split across
 * chunks. */
#include "../../src/tls.c"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void keyset(const char *path)
{
	static struct conf c;
	char err[CONF_ERR_MAX];
	struct keyset *ks = &keysets[0];

	snprintf(c.tls_cert, sizeof c.tls_cert, "%s", path);
	snprintf(c.tls_key, sizeof c.tls_key, "%s", path);
	err[0] = '\0';
	if (load_keyset(ks, &c, err, sizeof err) < 0) {
		if (err[0] == '\0' || strnlen(err, sizeof err) == sizeof err) {
			fuzz_fail("load_keyset failed without a message");
		}
		return;
	}
	if (ks->nchain == 0 || ks->nchain > CHAIN_MAX || ks->cert_used > sizeof ks->cert ||
	    (ks->type != BR_KEYTYPE_RSA && ks->type != BR_KEYTYPE_EC)) {
		fuzz_fail("a loaded keyset with %zu certificates, %zu bytes, key type %d", ks->nchain,
		          ks->cert_used, ks->type);
	}
}

static void ca_file(const char *path, size_t size)
{
	struct anchor_ctx a;
	char err[CONF_ERR_MAX];
	size_t i;

	if (size == 0) {
		return;   /* tls_load_anchors refuses an empty file before reading */
	}
	a.cap = size;
	a.max = a.cap / 256 + 1;
	a.arena = malloc(a.cap + 1);
	anchors = calloc(a.max, sizeof *anchors);
	if (a.arena == NULL || anchors == NULL) {
		fuzz_fail("out of memory");
	}
	a.used = a.n = 0;
	a.overflow = 0;
	if (pem_each(path, add_anchor, &a, err, sizeof err) == 0) {
		if (a.n > a.max || a.used > a.cap) {
			fuzz_fail("%zu anchors of %zu, %zu bytes of %zu", a.n, a.max, a.used, a.cap);
		}
		for (i = 0; i < a.n; i++) {
			const br_x509_trust_anchor *ta = &anchors[i];

			if (ta->dn.data < a.arena || ta->dn.data + ta->dn.len > a.arena + a.used) {
				fuzz_fail("anchor %zu's name lies outside the arena", i);
			}
		}
	}
	free(a.arena);
	free(anchors);
	anchors = NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[64];

	if (size < 1) {
		return 0;
	}
	fuzz_memfile(data + 1, size - 1, path, sizeof path);
	if (data[0] % 2 == 0) {
		keyset(path);
	} else {
		ca_file(path, size - 1);
	}
	return 0;
}
