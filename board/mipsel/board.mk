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
# musl rebuilt from Debian's source package (board/common/musl.sh), as
# Debian's libc.a is PIC (abicalls) MIPS32: not PIC, and each C file as
# MIPS16e where it compiles so (the system calls and the thread pointer's
# reads made small MIPS32 functions; the files with other MIPS32 assembly,
# the atomics, stay MIPS32, interlinked).  musl's part of the binary: 53 KB
# of code from Debian's, 29 KB from this one.
# Its start files are that build's too (musl.sh says why); the headers
# stay Debian's, of the same version.
LIBC_REBUILD   := yes
LIBC_CFLAGS    := -fno-pic $(if $(filter yes,$(MIPS16)),-minterlink-compressed)
LIBC_COMPRESSED_CFLAGS := $(if $(filter yes,$(MIPS16)),-mips16)
QEMU           := qemu-mipsel-static
DEB_ARCH       := mipsel
BOARD_PACKAGES := gcc-mipsel-linux-gnu musl-dev:mipsel qemu-user-static
# No size budget of its own: the 300 KiB goal holds (304 260 bytes with
# IMAP, 258 420 without; with Debian's libc.a it was 330 448 and 283 840).
