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
BOARD_CFLAGS   := -march=mips32r2
QEMU           := qemu-mipsel-static
DEB_ARCH       := mipsel
BOARD_PACKAGES := gcc-mipsel-linux-gnu musl-dev:mipsel qemu-user-static
