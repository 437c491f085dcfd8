# picomail - the one entry point: make, make run, make test, make bench.
#
#   make                 build/$(BOARD)/picomail (static, musl, BearSSL, stripped)
#                        and build/$(BOARD)/picomail-test (fault seam, malloc counter)
#   make run             build and run the daemon in the foreground on loopback
#   make test            install what is missing, build, run every test
#   make bench           the benchmark report
#   make BOARD=aarch64   cross-compile with board/aarch64/board.mk
#   make IMAP=no         without the IMAP server (into build/$(BOARD)-noimap)

BOARD ?= host
IMAP ?= yes
BUILD := build/$(BOARD)$(if $(filter no,$(IMAP)),-noimap)

ifneq ($(BOARD),host)
include board/$(BOARD)/board.mk
else
CC := musl-gcc
# As board/x86_64/board.mk (the same compiler).
SIZE_BUDGET := 368640
SIZE_BUDGET_NOIMAP := 315392
endif

# Shared by both builds (IMAP=yes and no), and by BOARD=x86_64 with the
# host's build: the same compiler and flags (bearssl.sh rebuilds it should
# they ever differ).
BEARSSL := build/$(if $(filter x86_64,$(BOARD)),host,$(BOARD))/bearssl
STRIP ?= strip

# ---- size (issue 15) -------------------------------------------------------
# The stripped binary must stay under SIZE_LIMIT bytes: the build fails
# otherwise, naming the excess, and says the margin when it passes.  The
# goal is SIZE_TARGET (300 KiB) on every board; a board whose build is over
# it (OAuth2 and IMAP came after the goal was set) has its own budget in its
# board.mk, SIZE_BUDGET with IMAP and SIZE_BUDGET_NOIMAP without, set a few
# KiB above what it measures so that growth is a decision, not a drift.
# SIZE_LIMIT= (empty) turns the check off; board/buildroot/board.mk does,
# since a packager's own flags decide the size there.
SIZE_TARGET := 307200
SIZE_BUDGET ?= $(SIZE_TARGET)
SIZE_BUDGET_NOIMAP ?= $(SIZE_TARGET)
SIZE_LIMIT ?= $(if $(filter no,$(IMAP)),$(SIZE_BUDGET_NOIMAP),$(SIZE_BUDGET))
# -Oz where the compiler has it (gcc 12, clang), else -Os.  Worked out once
# per make run, not at every use.
ifeq ($(origin OPT),undefined)
OPT := $(shell $(CC) -Oz -x c -c -o /dev/null /dev/null >/dev/null 2>&1 && echo -Oz || echo -Os)
endif
# No unwind tables: C has no exceptions, and they are a tenth of the binary.
# -fno-pie: the binary is linked static and not position-independent (-no-pie
# below), so PIC code would only buy indirections through a GOT (a third of
# the code on MIPS, where it also means -mabicalls).
SIZE_CFLAGS := -ffunction-sections -fdata-sections -fno-asynchronous-unwind-tables -fno-unwind-tables \
	-fno-pie
# Link-time optimisation of picomail and BearSSL together.  LTO=auto (the
# default) uses it when $(CC) links a static program with -flto (a gcc built
# without the LTO plugin, as some Buildroot toolchains are, cannot); LTO=yes
# insists, LTO=no turns it off.  BearSSL's objects are "fat" (machine code
# beside the LTO IR), so its library also links without LTO.
LTO ?= auto
ifeq ($(LTO),auto)
LTO_ON := $(shell printf 'int main(void) { return 0; }\n' | \
	$(CC) -flto -static -x c - -o /dev/null >/dev/null 2>&1 && echo yes || echo no)
else
LTO_ON := $(LTO)
endif
ifeq ($(LTO_ON),yes)
# One partition: the whole program is small, and one is smaller than several.
LTO_CFLAGS := -flto
LTO_LDFLAGS := -flto -flto-partition=one
BEARSSL_LTO := -flto -ffat-lto-objects
endif
CFLAGS_ALL := -std=c11 -D_GNU_SOURCE $(OPT) -Wall -Wextra -Werror \
	$(SIZE_CFLAGS) $(LTO_CFLAGS) -I$(BEARSSL)/inc $(BOARD_CFLAGS) $(BOARD_CODE_CFLAGS) \
	$(if $(filter no,$(IMAP)),-DPICOMAIL_NO_IMAP) $(CFLAGS)
# -z norelro: musl does not apply PT_GNU_RELRO in a static binary that is not
# PIE (nothing mprotects it: /proc/PID/maps shows it rw-p), so RELRO only
# adds padding, up to the maximum page size (64 KiB on aarch64).
# -z common-page-size=64: the data segment starts where the read-only data
# ends (64-byte aligned, at the same offset within the next page of
# memory, which the kernel maps from the same file page), not at the next
# page boundary in the file as well: up to 4 KiB of padding less in the
# file, for a page of memory the bss may start on anyway.
# --sort-section=alignment: variables by alignment, so that the small ones
# (written at start-up, the loop's state) share a few pages of .bss instead
# of one page each beside large buffers that stay untouched (issue 15: a
# third of the daemon's .bss pages once running).
LDFLAGS_ALL := -static -no-pie -Wl,--gc-sections -Wl,-z,norelro -Wl,-z,common-page-size=64 \
	-Wl,--sort-section=alignment \
	$(LTO_LDFLAGS) $(LDFLAGS)
LIBS := $(BEARSSL)/lib/libbearssl.a
# A board may link a libc of its own build instead of its compiler's
# (board.mk: LIBC_REBUILD := yes, with LIBC_CFLAGS and LIBC_COMPRESSED_CFLAGS
# for it): board/common/musl.sh rebuilds Debian's musl from its source
# package into build/$(BOARD)/libc, shared by IMAP=yes and no.  The -L
# comes before the musl-gcc wrapper's own library directory; the start
# files are that build's too (musl.sh says why), crtn.o last.
ifeq ($(LIBC_REBUILD),yes)
LIBC_DIR := build/$(BOARD)/libc
LIBC_A := $(LIBC_DIR)/libc.a
LDFLAGS_ALL += -nostartfiles $(LIBC_DIR)/crt1.o $(LIBC_DIR)/crti.o -L$(LIBC_DIR)
LIBC_END := $(LIBC_DIR)/crtn.o
endif

# src/libc/: small stand-ins for parts of musl that are large for what
# picomail asks of them (vfprintf.c says why), linked instead of musl's.
# Only with musl: a glibc or uClibc static library's printf does not go
# through vfprintf, and two definitions could collide.  LIBC_OWN=no leaves
# them out.
ifeq ($(origin LIBC_OWN),undefined)
LIBC_OWN := $(shell printf '\043include <stdio.h>\n\043if defined __GLIBC__ || defined __UCLIBC__\nother\n\043endif\n' | \
	$(CC) -E -P -x c - 2>/dev/null | grep -q other && echo no || echo yes)
endif
# IMAP=no leaves out the IMAP server: its files, and its listener (conf.c
# refuses "listen imap"; imap.h stands in for the rest).
IMAP_SRCS := $(wildcard src/imap*.c) src/folder.c
SRCS := $(filter-out src/testalloc.c $(if $(filter no,$(IMAP)),$(IMAP_SRCS)),$(wildcard src/*.c)) \
	$(if $(filter yes,$(LIBC_OWN)),$(wildcard src/libc/*.c))
OBJS := $(SRCS:src/%.c=$(BUILD)/obj/%.o)
TEST_OBJS := $(SRCS:src/%.c=$(BUILD)/obj-test/%.o) $(BUILD)/obj-test/testalloc.o
HEADERS := $(wildcard src/*.h)

# Objects are rebuilt when the compiler or a flag changes (LTO=no, OPT=...):
# $(BUILD)/.flags holds the last set and is rewritten only when it differs.
FLAGS_NOW := $(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL)
ifneq ($(strip $(FLAGS_NOW)),$(strip $(shell cat $(BUILD)/.flags 2>/dev/null)))
$(shell mkdir -p $(BUILD) && printf '%s\n' "$(subst ",\",$(FLAGS_NOW))" >$(BUILD)/.flags)
endif

PYTHON := /usr/bin/python3
# The integration suite waits on sockets and timers far more than it
# computes: files run in TEST_JOBS processes at once (pytest-xdist), each
# file whole in one of them (its module fixtures are set up once).  On two
# cores, 3 at once kept them busy 38% of the time (185 s); 6 at once, 110 s.
TEST_JOBS ?= 6
NPROC := $(shell nproc 2>/dev/null || echo 2)
PYTEST_JOBS := -n $(TEST_JOBS) --dist loadfile
DEPS := board/common/deps.sh

.PHONY: all deps run test test-tools unit integration bench clean FORCE
all: $(BUILD)/picomail $(BUILD)/picomail-test

deps:
	@bash $(DEPS) build $(addprefix pkg:,$(BOARD_PACKAGES))

# bearssl.sh runs at every make: it does nothing when its library was built
# from the same sources with the same compiler and flags, and rebuilds it
# when they changed (the objects then follow, as they depend on it).
$(LIBS): FORCE
	@QEMU="$(QEMU)" BEARSSL_CFLAGS="$(BOARD_CFLAGS) $(SIZE_CFLAGS) $(OPT) $(BEARSSL_LTO)" \
		$(if $(AR),AR="$(AR)") \
		bash board/common/bearssl.sh $(CC) $(BEARSSL)

ifneq ($(LIBC_A),)
$(LIBC_A): FORCE
	@DEB_ARCH="$(DEB_ARCH)" LIBC_CFLAGS="$(BOARD_CFLAGS) $(OPT) $(LIBC_CFLAGS)" \
		LIBC_COMPRESSED_CFLAGS="$(LIBC_COMPRESSED_CFLAGS)" LINK_CC="$(CC) $(BOARD_CFLAGS) -fno-pie" QEMU="$(QEMU)" \
		$(if $(AR),AR="$(AR)") bash board/common/musl.sh $(CROSS)gcc $(LIBC_DIR)
endif

$(BUILD)/obj/%.o: src/%.c $(HEADERS) $(LIBS) $(BUILD)/.flags
	@mkdir -p $(@D)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/obj-test/%.o: src/%.c $(HEADERS) $(LIBS) $(BUILD)/.flags
	@mkdir -p $(@D)
	@echo "  CC-TEST $<"
	@$(CC) $(CFLAGS_ALL) -DPICOMAIL_TEST -c $< -o $@

# Stripped, and without the compilers' .comment.
# The functions the daemon runs from start-up to idle (and in a plain SMTP
# session) first in .text, together: the kernel maps a binary's pages in
# 64 KiB blocks around each page used (fault-around), so that code spread
# over all of .text made all of it resident.  board/common/text-order.txt
# lists them (board/common/text-order.sh says how it is made): a function's
# own section (gcc's -ffunction-sections names it .text.<name>, also with
# LTO's suffixes), or the .text of a file (musl's functions in assembly,
# the C runtime's start); the linker script below places them before the
# rest of .text.  The same list names the variables written from start-up
# to idle, .bss.<name> (whole: static locals share names), placed first in
# .bss, small ones first: spread among large buffers, a few hundred bytes
# of them kept 16 pages of .bss resident, 11 together.  TEXT_ORDER= (empty)
# links without.
TEXT_ORDER ?= board/common/text-order.txt
ifneq ($(TEXT_ORDER),)
TEXT_ORDER_LD := $(BUILD)/text-order.ld
TEXT_ORDER_LDFLAGS := -Wl,-T,$(TEXT_ORDER_LD)
endif
$(BUILD)/text-order.ld: $(TEXT_ORDER) Makefile
	@mkdir -p $(@D)
	@awk 'function sec(name, lines) { \
			if (lines != "") printf "SECTIONS\n{\n\t%s.daemon :\n\t{\n%s\t}\n}\nINSERT BEFORE %s;\n", \
				name, lines, name } \
		BEGIN { print "/* made by the Makefile from $(TEXT_ORDER) */" } \
		/^\.text\.[A-Za-z0-9_.]+$$/ { t = t sprintf("\t\t*(%s %s.*)\n", $$1, $$1) } \
		/^[A-Za-z0-9_.-]+\(\.text\)$$/ { t = t sprintf("\t\t*:%s\n\t\t*/%s\n", $$1, $$1) } \
		/^\.bss\.[A-Za-z0-9_.]+$$/ { b = b sprintf("\t\t*(%s)\n", $$1) } \
		END { sec(".text", t); sec(".bss", b) }' $< >$@.tmp
	@mv $@.tmp $@

# picomail.elf keeps its symbols (nm --size-sort -S, valgrind), and
# picomail.map says where each input section went; picomail is it stripped,
# without the compilers' .comment either, and held to SIZE_LIMIT (an
# oversized one is not left behind for a later make to accept).
$(BUILD)/picomail.elf: $(OBJS) $(LIBS) $(LIBC_A) $(TEXT_ORDER_LD)
	@echo "  LD      $@"
	@$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) $(TEXT_ORDER_LDFLAGS) -Wl,-Map,$(BUILD)/picomail.map \
		-o $@ $(OBJS) $(LIBS) $(LIBC_END)

# Stripped in place on a copy: Buildroot's STRIP is /bin/true when the
# packager keeps symbols.
$(BUILD)/picomail: $(BUILD)/picomail.elf
	@cp $< $@.tmp
	@$(STRIP) --strip-all -R .comment $@.tmp
	@size=$$(wc -c <$@.tmp); \
	if [ -n "$(SIZE_LIMIT)" ] && [ "$$size" -gt "$(SIZE_LIMIT)" ]; then \
		echo "$@: $$size bytes stripped, over SIZE_LIMIT=$(SIZE_LIMIT) by $$((size - $(SIZE_LIMIT)))" >&2; \
		rm -f $@.tmp; exit 1; \
	fi; \
	echo "  SIZE    $@: $$size bytes$(if $(SIZE_LIMIT), ($$(($(SIZE_LIMIT) - size)) under SIZE_LIMIT=$(SIZE_LIMIT)))"; \
	if [ "$$size" -gt "$(SIZE_TARGET)" ]; then \
		echo "  SIZE    $@: $$((size - $(SIZE_TARGET))) over the $(SIZE_TARGET)-byte goal"; \
	fi
	@mv $@.tmp $@

$(BUILD)/picomail-test: $(TEST_OBJS) $(LIBS) $(LIBC_A) $(TEXT_ORDER_LD)
	@echo "  LD      $@"
	@$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) $(TEXT_ORDER_LDFLAGS) \
		-Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc -o $@ $(TEST_OBJS) $(LIBS) $(LIBC_END)

# A demo daemon on loopback ports with its Maildir under ./run/.
run: deps all
	@bash tests/tools/run-demo.sh $(BUILD)/picomail

-include tests/unit/unit.mk
-include tests/sanitize/sanitize.mk
-include tests/fuzz/fuzz.mk

# The real peers the integration tests drive: BusyBox's mail applets (built
# from Debian's source, as firmware does) and Postfix's smtp-sink/smtp-source.
test-tools:
	@bash $(DEPS) test
	@bash tests/tools/busybox.sh build/busybox
	@bash tests/tools/postfix-tools.sh build/tools

integration: all test-tools
	$(PYTHON) -m pytest -q $(PYTEST_JOBS) tests/integration

# The builds with a job per core; the test runs one after the other, as
# each keeps both cores busy on its own.
test: deps test-tools
	$(MAKE) -j$(NPROC) all
	$(MAKE) -j$(NPROC) unit
	$(MAKE) -j$(NPROC) fuzz-smoke
	$(PYTHON) -m pytest -q $(PYTEST_JOBS) tests/integration
	$(MAKE) -j$(NPROC) asan valgrind
	$(MAKE) test-asan test-valgrind
	$(MAKE) test-cross
	$(MAKE) test-firmware

bench: deps all
	@bash $(DEPS) bench
	@bash tests/bench/bench.sh $(BUILD)/picomail

clean:
	rm -rf build/host/obj build/host/obj-test build/host/picomail build/host/picomail.elf build/host/picomail.map \
		build/host/picomail-test build/host/text-order.ld build/unit \
		build/host-noimap build/asan build/valgrind build/fuzz

# ---- shipping: make install, make test-cross (issue 6) -------------------
#
#   make install DESTDIR=/tmp/root PREFIX=/usr
#        $(SBINDIR)/picomail, the links $(SBINDIR)/sendmail -> picomail and
#        $(BINDIR)/mailq -> ../sbin/picomail, $(SYSCONFDIR)/picomail.conf (0644,
#        the device defaults of rootfs-overlay/), $(SYSCONFDIR)/init.d/S50picomail
#        (INSTALL_INIT=no leaves it out, as Buildroot does for systemd), and the
#        manual pages picomail(8) and picomail.conf(5).  BOARD= picks the binary.
#   make test-cross
#        builds every board of CROSS_BOARDS and runs part of the integration
#        suite against each one's binary, the foreign ones under qemu-user
#        (tests/cross/test-cross.sh; CROSS_TESTS, CROSS_K, CROSS_JOBS there).
PREFIX       ?= /usr
SBINDIR      ?= $(PREFIX)/sbin
BINDIR       ?= $(PREFIX)/bin
MANDIR       ?= $(PREFIX)/share/man
SYSCONFDIR   ?= /etc
INSTALL_INIT ?= yes
INSTALL      ?= install
CROSS_BOARDS ?= aarch64 armv7 mipsel x86_64
# mailq -> ../sbin/picomail when bin/ and sbin/ are siblings, else absolute.
MAILQ_LINK   := $(if $(and $(filter $(PREFIX)/sbin,$(SBINDIR)),$(filter $(PREFIX)/bin,$(BINDIR))),../sbin/picomail,$(SBINDIR)/picomail)

.PHONY: install test-cross
install: $(BUILD)/picomail
	$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(SYSCONFDIR) \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5
	$(INSTALL) -m 0755 $(BUILD)/picomail $(DESTDIR)$(SBINDIR)/picomail
	ln -sfn picomail $(DESTDIR)$(SBINDIR)/sendmail
	ln -sfn $(MAILQ_LINK) $(DESTDIR)$(BINDIR)/mailq
	$(INSTALL) -m 0644 rootfs-overlay/etc/picomail.conf $(DESTDIR)$(SYSCONFDIR)/picomail.conf
	$(INSTALL) -m 0644 doc/picomail.8 $(DESTDIR)$(MANDIR)/man8/picomail.8
	$(INSTALL) -m 0644 doc/picomail.conf.5 $(DESTDIR)$(MANDIR)/man5/picomail.conf.5
ifeq ($(INSTALL_INIT),yes)
	$(INSTALL) -d $(DESTDIR)$(SYSCONFDIR)/init.d
	sed -e 's|/usr/sbin/picomail|$(SBINDIR)/picomail|' -e 's|/etc/picomail.conf|$(SYSCONFDIR)/picomail.conf|' \
		rootfs-overlay/etc/init.d/S50picomail >$(DESTDIR)$(SYSCONFDIR)/init.d/S50picomail.tmp
	chmod 0755 $(DESTDIR)$(SYSCONFDIR)/init.d/S50picomail.tmp
	mv $(DESTDIR)$(SYSCONFDIR)/init.d/S50picomail.tmp $(DESTDIR)$(SYSCONFDIR)/init.d/S50picomail
endif

test-cross:
	@MAKE="$(MAKE)" PYTHON="$(PYTHON)" bash tests/cross/test-cross.sh $(CROSS_BOARDS)

# ---- the firmware lab (issue 14) ------------------------------------------
#
#   make test-firmware
#        each board booted under qemu-system (Debian's kernels, BusyBox init,
#        picomail installed by make install with rootfs-overlay/): a day on the
#        device, power cuts, every crash point of the disk replayed, UBIFS on
#        simulated NAND (tests/firmware/README.md; FIRMWARE_BOARDS,
#        FIRMWARE_TRIALS, FIRMWARE_CRASH_POINTS, FIRMWARE_UBIFS_CUTS there).
.PHONY: test-firmware
test-firmware:
	@MAKE="$(MAKE)" PYTHON="$(PYTHON)" bash tests/firmware/run.sh
