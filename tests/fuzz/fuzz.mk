# tests/fuzz/fuzz.mk - the libFuzzer harnesses, as a fragment of the top Makefile.
#
#   make fuzz                 each harness for FUZZ_TIME seconds (default 60)
#   make fuzz-smoke           each harness for FUZZ_SMOKE_TIME seconds (default 5;
#                             part of make test, which has 13 of them)
#   make fuzz-build           only build them
#   make fuzz FUZZ_HARNESSES="smtp_session dns" FUZZ_TIME=600
#   make -f tests/fuzz/fuzz.mk fuzz    (standalone)
#
# Run from the top of the repository.  Each harness is built with Debian's
# clang and libFuzzer, ASan and UBSan, against the same src/*.c (host
# glibc, dynamically linked) into build/fuzz/.  Every run starts from a
# fresh copy of tests/fuzz/corpus/<harness>/ under build/fuzz/corpus/, so
# nothing is written into the tree; crashes land in build/fuzz/artifacts/.
# tests/fuzz/run.sh prints one line per harness (execs, cov, ft, findings)
# and fails when any harness found something.  Only FUZZ_ names are defined
# here.

FUZZ_CC         = clang
FUZZ_TIME      ?= 60
FUZZ_SMOKE_TIME ?= 5
FUZZ_OUT        = build/fuzz
FUZZ_HARNESSES ?= smtp_session smtp_data pop3_session imap_session sasl addr conf queue_env dns pem \
                  tls_client http
FUZZ_SAN        = -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS     = -std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer $(FUZZ_SAN) \
                  -Isrc -Itests/fuzz/support -I$(FUZZ_BEARSSL)/inc
# The sources are the daemon's, whose -Werror is gcc's: clang's own
# warnings there must not stop the fuzzers.  The harnesses are held to it.
FUZZ_WARN       = -Wall -Wextra
# BearSSL built with the host compiler, shared with the unit tests.
FUZZ_BEARSSL     = build/unit/bearssl
FUZZ_BEARSSL_LIB = $(FUZZ_BEARSSL)/lib/libbearssl.a

# fuzz_tls_client tests what BearSSL's client engine and X.509 decoders do
# with a server's bytes, and libFuzzer is only led through code built with
# its coverage: that harness links a BearSSL of its own, compiled with
# coverage and ASan from the source tree bearssl.sh unpacked for the shared
# build.  Without a source tree (BEARSSL_DIR), the shared build stands in.
FUZZ_BEARSSL_COV        = $(FUZZ_OUT)/bearssl
FUZZ_BEARSSL_COV_LIB    = $(FUZZ_BEARSSL_COV)/libbearssl.a
FUZZ_BEARSSL_COV_CFLAGS = -std=c99 -g -O1 -fno-omit-frame-pointer -fsanitize=address \
                          -fsanitize=fuzzer-no-link
FUZZ_BEARSSL_LIB_tls_client = $(FUZZ_BEARSSL_COV_LIB)

# Every module but the entry point, the daemon's start-up (stood in for by
# support/inforce_stub.c) and the malloc counter.  They go into an archive,
# so a harness links only the modules it reaches, and a harness's own
# stand-ins (defined before the archive) keep the real module out.
FUZZ_SRCS       = $(filter-out src/main.c src/daemon.c src/testalloc.c,$(wildcard src/*.c))
FUZZ_OBJS       = $(FUZZ_SRCS:src/%.c=$(FUZZ_OUT)/obj/%.o)
FUZZ_LIB        = $(FUZZ_OUT)/libpicomail.a
FUZZ_HDRS       = $(wildcard src/*.h) tests/fuzz/support/fuzz.h

# Support objects: every harness takes the base; the sessions take more.
FUZZ_SUPPORT_BASE         = common vtime log_quiet
FUZZ_SUPPORT_smtp_session = inforce_stub session smtp_stubs crypt_stub
FUZZ_SUPPORT_pop3_session = inforce_stub session crypt_stub
FUZZ_SUPPORT_imap_session = inforce_stub session crypt_stub

FUZZ_BINS = $(addprefix $(FUZZ_OUT)/fuzz_,$(FUZZ_HARNESSES))

FUZZ_DEFAULT_GOAL := $(.DEFAULT_GOAL)

.PHONY: fuzz fuzz-smoke fuzz-build fuzz-deps

fuzz-deps:
	@bash board/common/deps.sh test

fuzz-build: fuzz-deps
	@$(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) $(FUZZ_BINS)

fuzz: fuzz-build
	@bash tests/fuzz/run.sh $(FUZZ_TIME) $(FUZZ_HARNESSES)

fuzz-smoke: fuzz-build
	@bash tests/fuzz/run.sh $(FUZZ_SMOKE_TIME) $(FUZZ_HARNESSES)

# loop.c polls and reads the clock through support/vtime.c: virtual time,
# so that throttles and timeouts cost no real time (loop.c is unchanged).
$(FUZZ_OUT)/obj/loop.o: FUZZ_EXTRA = -Dpoll=fuzz_poll -Dclock_gettime=fuzz_clock_gettime

$(FUZZ_OUT)/obj/%.o: src/%.c $(FUZZ_HDRS) $(FUZZ_BEARSSL_LIB)
	@mkdir -p $(@D)
	@echo "  FUZZ-CC $<"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_WARN) -fsanitize=fuzzer-no-link $(FUZZ_EXTRA) -c $< -o $@

$(FUZZ_OUT)/support/%.o: tests/fuzz/support/%.c $(FUZZ_HDRS) $(FUZZ_BEARSSL_LIB)
	@mkdir -p $(@D)
	@echo "  FUZZ-CC $<"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_WARN) -Werror -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_LIB): $(FUZZ_OBJS)
	@rm -f $@
	@ar rcs $@ $(FUZZ_OBJS)

# A harness links FUZZ_BEARSSL_LIB_<name> when it has one, else the shared build.
define FUZZ_HARNESS_RULE
$(FUZZ_OUT)/fuzz_$(1): tests/fuzz/fuzz_$(1).c $(addprefix $(FUZZ_OUT)/support/,$(addsuffix .o,$(FUZZ_SUPPORT_BASE) $(FUZZ_SUPPORT_$(1)))) $(FUZZ_LIB) $(or $(FUZZ_BEARSSL_LIB_$(1)),$(FUZZ_BEARSSL_LIB)) $(FUZZ_HDRS)
	@echo "  FUZZ-LD $$@"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_WARN) -Werror -fsanitize=fuzzer -o $$@ tests/fuzz/fuzz_$(1).c \
		$(addprefix $(FUZZ_OUT)/support/,$(addsuffix .o,$(FUZZ_SUPPORT_BASE) $(FUZZ_SUPPORT_$(1)))) \
		$(FUZZ_LIB) $(or $(FUZZ_BEARSSL_LIB_$(1)),$(FUZZ_BEARSSL_LIB))
endef
$(foreach h,$(FUZZ_HARNESSES),$(eval $(call FUZZ_HARNESS_RULE,$(h))))

# Where bearssl.sh finds the source: BEARSSL_SRC, else the unpacked Debian
# package in SRC_CACHE (default build/src), which the shared build fetched.
$(FUZZ_BEARSSL_COV_LIB): $(FUZZ_BEARSSL_LIB)
	@rm -rf $(FUZZ_BEARSSL_COV)
	@mkdir -p $(FUZZ_BEARSSL_COV)/obj
	@src=$${BEARSSL_SRC:-$$(ls -d $${SRC_CACHE:-build/src}/bearssl-*/ 2>/dev/null | head -n 1)}; \
	if [ ! -f "$$src/inc/bearssl.h" ] || [ ! -d "$$src/src" ]; then \
		echo "  FUZZ    no BearSSL source tree: $@ is the uninstrumented build"; \
		cp $(FUZZ_BEARSSL_LIB) $@; \
	else \
		echo "  FUZZ-CC BearSSL with coverage and ASan ($$src)"; \
		(cd "$$src/src" && find . -name '*.c' | sed 's|^\./||' | sort) | \
		CC="$(FUZZ_CC)" CFLAGS="$(FUZZ_BEARSSL_COV_CFLAGS)" SRC="$$src" OBJ=$(FUZZ_BEARSSL_COV)/obj \
		xargs -P "$$(nproc 2>/dev/null || echo 2)" -n 16 sh -c 'for f; do \
			o=$$(printf %s "$$f" | tr / _); \
			$$CC $$CFLAGS -I "$$SRC/inc" -I "$$SRC/src" -c "$$SRC/src/$$f" -o "$$OBJ/$${o%.c}.o" || exit 255; \
		done' sh && ar rcs $@ $(FUZZ_BEARSSL_COV)/obj/*.o; \
	fi

# Standalone (without tests/unit/unit.mk), BearSSL is built here the same way.
ifndef UNIT_BEARSSL_LIB
$(FUZZ_BEARSSL_LIB):
	@bash board/common/bearssl.sh cc $(FUZZ_BEARSSL)
endif

.DEFAULT_GOAL := $(FUZZ_DEFAULT_GOAL)
