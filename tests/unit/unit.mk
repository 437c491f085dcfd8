# tests/unit/unit.mk - the C unit tests, as a fragment of the top Makefile.
#
#   make unit                          (from the top Makefile, which includes this)
#   make -f tests/unit/unit.mk unit    (standalone)
#
# Run from the top of the repository.  Each test is built with the host
# compiler $(HOSTCC) (default cc) and the sanitizers, into build/unit/, and
# prints "test_x: N passed, M failed"; the last line adds them up as
# "unit: N passed, M failed".  A test that crashes or exits non-zero
# counts as one more failure.  Only UNIT_ names are defined here.

UNIT_CC      = $(if $(HOSTCC),$(HOSTCC),cc)
UNIT_CFLAGS  = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g \
               -fsanitize=address,undefined -fno-sanitize-recover=all \
               -fno-omit-frame-pointer
# test_auth makes its hashes with the system's crypt(3), to check them
# against src/crypt_sha.c.  crypt is in libcrypt with glibc (libxcrypt) and
# in libc with (most) musl: ask for -lcrypt only when a program calling
# crypt does not link without.
UNIT_LDLIBS  = $(shell printf 'char *crypt(const char *, const char *); int main(void) { return crypt("a", "ab") == 0; }\n' | \
                 $(UNIT_CC) -x c - -o /dev/null >/dev/null 2>&1 || echo -lcrypt)
UNIT_OUT     = build/unit
UNIT_TESTS   = test_conf test_addr test_auth test_pool test_smtp_data test_msgwire test_dns test_log \
               test_fsyncs test_json test_http \
               test_vfprintf test_dirent test_libc_small
UNIT_BINS    = $(addprefix $(UNIT_OUT)/,$(UNIT_TESTS))
UNIT_HDRS    = tests/unit/check.h src/conf.h src/addr.h src/auth.h src/pool.h src/crypt_sha.h \
               src/textfile.h
# crypt_sha.c hashes with BearSSL: a copy built with the host compiler, so
# that it links with the sanitizers (the daemon's is built with musl-gcc).
UNIT_BEARSSL = $(UNIT_OUT)/bearssl
UNIT_BEARSSL_LIB = $(UNIT_BEARSSL)/lib/libbearssl.a

# Included before the top Makefile's first rule, "unit" would become the
# default goal: keep whatever the includer had.
UNIT_DEFAULT_GOAL := $(.DEFAULT_GOAL)

.PHONY: unit

unit: $(UNIT_BINS)
	@UNIT_CRASHED=0; \
	for t in $(UNIT_BINS); do \
		rc=0; $$t > $$t.out 2>&1 || rc=$$?; \
		cat $$t.out; \
		if [ $$rc -ne 0 ] && ! grep -Eq '^test_[a-z0-9_]+: [0-9]+ passed, [1-9][0-9]* failed$$' $$t.out; then \
			echo "$$t: exited with status $$rc"; \
			UNIT_CRASHED=$$((UNIT_CRASHED + 1)); \
		fi; \
	done; \
	cat $(addsuffix .out,$(UNIT_BINS)) | awk -v crashed=$$UNIT_CRASHED ' \
		/^test_[a-z0-9_]+: [0-9]+ passed, [0-9]+ failed$$/ { p += $$2; f += $$4 } \
		END { f += crashed; printf "unit: %d passed, %d failed\n", p, f; exit (f > 0) }'

$(UNIT_OUT)/test_conf: tests/unit/test_conf.c src/conf.c src/textfile.c $(UNIT_HDRS)
	@mkdir -p $(UNIT_OUT)
	$(UNIT_CC) $(UNIT_CFLAGS) -o $@ tests/unit/test_conf.c src/conf.c src/textfile.c $(UNIT_LDLIBS)

$(UNIT_OUT)/test_addr: tests/unit/test_addr.c src/addr.c src/conf.c src/textfile.c $(UNIT_HDRS)
	@mkdir -p $(UNIT_OUT)
	$(UNIT_CC) $(UNIT_CFLAGS) -o $@ tests/unit/test_addr.c src/addr.c src/conf.c src/textfile.c \
		$(UNIT_LDLIBS)

$(UNIT_OUT)/test_auth: tests/unit/test_auth.c src/auth.c src/conf.c src/textfile.c src/crypt_sha.c \
                      src/base64.c $(UNIT_HDRS) $(UNIT_BEARSSL_LIB)
	@mkdir -p $(UNIT_OUT)
	$(UNIT_CC) $(UNIT_CFLAGS) -I$(UNIT_BEARSSL)/inc -o $@ tests/unit/test_auth.c src/auth.c \
		src/conf.c src/textfile.c src/crypt_sha.c src/base64.c $(UNIT_BEARSSL_LIB) $(UNIT_LDLIBS)

$(UNIT_BEARSSL_LIB):
	@bash board/common/bearssl.sh $(UNIT_CC) $(UNIT_BEARSSL)

$(UNIT_OUT)/test_log: tests/unit/test_log.c src/log.c src/log_kv.c src/date.c src/log.h src/date.h \
                     tests/unit/check.h
	@mkdir -p $(UNIT_OUT)
	$(UNIT_CC) $(UNIT_CFLAGS) -o $@ tests/unit/test_log.c src/log.c src/log_kv.c src/date.c $(UNIT_LDLIBS)

$(UNIT_OUT)/test_pool: tests/unit/test_pool.c src/pool.c $(UNIT_HDRS)
	@mkdir -p $(UNIT_OUT)
	$(UNIT_CC) $(UNIT_CFLAGS) -o $@ tests/unit/test_pool.c src/pool.c $(UNIT_LDLIBS)

$(UNIT_OUT)/test_smtp_data: tests/unit/test_smtp_data.c src/smtp_data.c src/smtp_data.h tests/unit/check.h
	@mkdir -p $(UNIT_OUT)
	$(UNIT_CC) $(UNIT_CFLAGS) -o $@ tests/unit/test_smtp_data.c src/smtp_data.c

$(UNIT_OUT)/test_msgwire: tests/unit/test_msgwire.c src/msgwire.c src/msgwire.h tests/unit/check.h
	@mkdir -p $(UNIT_OUT)
	$(UNIT_CC) $(UNIT_CFLAGS) -o $@ tests/unit/test_msgwire.c src/msgwire.c

$(UNIT_OUT)/test_json: tests/unit/test_json.c src/json.c src/json.h tests/unit/check.h
	@mkdir -p $(UNIT_OUT)
	$(UNIT_CC) $(UNIT_CFLAGS) -o $@ tests/unit/test_json.c src/json.c

$(UNIT_OUT)/test_http: tests/unit/test_http.c src/http.c src/http.h src/conf.h tests/unit/check.h
	@mkdir -p $(UNIT_OUT)
	$(UNIT_CC) $(UNIT_CFLAGS) -o $@ tests/unit/test_http.c src/http.c

# test_dns runs queries on the real loop against a fake resolver on loopback.
$(UNIT_OUT)/test_dns: tests/unit/test_dns.c src/dns.c src/dnsbl.c src/loop.c src/io.c src/log.c src/log_kv.c \
                     src/date.c src/pool.c src/random.c src/fsyncs.c src/dns.h src/dnsbl.h src/loop.h \
                     src/io.h src/log.h src/pool.h src/random.h src/fsyncs.h src/conf.h tests/unit/check.h
	@mkdir -p $(UNIT_OUT)
	$(UNIT_CC) $(UNIT_CFLAGS) -o $@ tests/unit/test_dns.c src/dns.c src/dnsbl.c src/loop.c \
		src/io.c src/log.c src/log_kv.c src/date.c src/pool.c src/random.c src/fsyncs.c

# test_fsyncs syncs real files in /tmp, through io_uring where the kernel has it.
$(UNIT_OUT)/test_fsyncs: tests/unit/test_fsyncs.c src/fsyncs.c src/fsyncs.h src/io.c src/io.h \
                        src/log.c src/log_kv.c src/date.c src/log.h tests/unit/check.h
	@mkdir -p $(UNIT_OUT)
	$(UNIT_CC) $(UNIT_CFLAGS) -o $@ tests/unit/test_fsyncs.c src/fsyncs.c src/io.c src/log.c \
		src/log_kv.c src/date.c

# src/libc/vfprintf.c with its vfprintf renamed, so that the test compares
# it with the C library's own in one program.
$(UNIT_OUT)/test_vfprintf: tests/unit/test_vfprintf.c src/libc/vfprintf.c tests/unit/check.h
	@mkdir -p $(UNIT_OUT)
	$(UNIT_CC) $(UNIT_CFLAGS) -Dvfprintf=picomail_vfprintf -c src/libc/vfprintf.c \
		-o $(UNIT_OUT)/libc-vfprintf.o
	$(UNIT_CC) $(UNIT_CFLAGS) -o $@ tests/unit/test_vfprintf.c $(UNIT_OUT)/libc-vfprintf.o -lm

# src/libc/dirent.c the same way.
$(UNIT_OUT)/test_dirent: tests/unit/test_dirent.c src/libc/dirent.c tests/unit/check.h
	@mkdir -p $(UNIT_OUT)
	$(UNIT_CC) $(UNIT_CFLAGS) -Dopendir=pm_opendir -Dfdopendir=pm_fdopendir -Dreaddir=pm_readdir \
		-Dclosedir=pm_closedir -c src/libc/dirent.c -o $(UNIT_OUT)/libc-dirent.o
	$(UNIT_CC) $(UNIT_CFLAGS) -o $@ tests/unit/test_dirent.c $(UNIT_OUT)/libc-dirent.o

# src/libc/qsort.c and strtol.c the same way.
UNIT_STRTOL_NAMES = -Dstrtoul=pm_strtoul -Dstrtoull=pm_strtoull -Dstrtol=pm_strtol -Dstrtoll=pm_strtoll \
                    -Dstrtoimax=pm_strtoimax -Dstrtoumax=pm_strtoumax
$(UNIT_OUT)/test_libc_small: tests/unit/test_libc_small.c src/libc/qsort.c src/libc/strtol.c tests/unit/check.h
	@mkdir -p $(UNIT_OUT)
	$(UNIT_CC) $(UNIT_CFLAGS) -Dqsort=pm_qsort -c src/libc/qsort.c -o $(UNIT_OUT)/libc-qsort.o
	$(UNIT_CC) $(UNIT_CFLAGS) $(UNIT_STRTOL_NAMES) -c src/libc/strtol.c -o $(UNIT_OUT)/libc-strtol.o
	$(UNIT_CC) $(UNIT_CFLAGS) -o $@ tests/unit/test_libc_small.c $(UNIT_OUT)/libc-qsort.o \
		$(UNIT_OUT)/libc-strtol.o

.DEFAULT_GOAL := $(UNIT_DEFAULT_GOAL)
