# board/mipsel/board.mk - 32-bit little-endian MIPS (MT7621/MT7628, ath79-era routers).
#
# Debian's mipsel: cross gcc mipsel-linux-gnu-gcc and musl-dev:mipsel, whose
# wrapper is /usr/bin/mipsel-linux-musl-gcc (REALGCC default
# mipsel-linux-gnu-gcc, specs /usr/lib/mipsel-linux-musl/musl-gcc.specs). Read
# from Debian's musl 1.2.3-1 debian/rules; not tried on this machine. Needs
# `dpkg --add-architecture mipsel` (deps.sh does it for pkg:musl-dev:mipsel as root).
# Caveat: Debian's mipsel libc is hard-float (o32, FPXX). Most router SoCs have
# no FPU: the binary still runs there when the kernel emulates the FPU
# (CONFIG_MIPS_FP_SUPPORT, usual), and picomail does little floating point.
# A soft-float build needs a soft-float musl (e.g. Buildroot's toolchain, see
# board/buildroot/), not Debian's.
CROSS          := mipsel-linux-gnu-
CC             := mipsel-linux-musl-gcc
AR             := $(CROSS)ar
STRIP          := $(CROSS)strip
# -mno-abicalls: code for a static executable, not the PIC "abicalls" code
# that Debian's gcc makes by default (every global reached through $gp and
# the GOT).  musl's libc.a stays abicalls; ld links the two (with a warning,
# "linking abicalls files with non-abicalls files") and puts a stub that sets
# $t9 before each call into PIC code.  BearSSL is built with it too: the
# pointers in its vtables are called from our code without $t9 set up.
BOARD_CFLAGS   := -march=mips32r2 -mno-abicalls
# MIPS16e for picomail's code, a third smaller; with LTO (the default) for
# BearSSL's too, as GCC's MIPS back end compiles every function of the link
# in the link's mode (LTO=no keeps BearSSL MIPS32; musl is Debian's,
# MIPS32).  The cores of the routers this board is for have MIPS16e
# (MT7621's 1004Kc, MT7628's 24KEc, ath79's 24Kc and 74Kc); MIPS16=no for
# one without it.
MIPS16         ?= yes
BOARD_CODE_CFLAGS := $(if $(filter yes,$(MIPS16)),-mips16 -minterlink-compressed)
QEMU           := qemu-mipsel-static
DEB_ARCH       := mipsel
BOARD_PACKAGES := gcc-mipsel-linux-gnu musl-dev:mipsel qemu-user-static
# Size budgets (the Makefile's "size" says how they are used): over the
# 300 KiB goal since OAuth2 and IMAP, 328 284 bytes with IMAP (281 708 without: the 300 KiB goal holds);
# the budget is that rounded up to 4 KiB, and 4 KiB more.
SIZE_BUDGET        := 335872
