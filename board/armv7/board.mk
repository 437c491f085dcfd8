# board/armv7/board.mk - 32-bit ARMv7-A, hard float (Cortex-A7/A9 routers, i.MX6, Allwinner).
#
# Debian's armhf: cross gcc arm-linux-gnueabihf-gcc and musl-dev:armhf, whose
# triple is arm-linux-musleabihf, so its wrapper is
# /usr/bin/arm-linux-musleabihf-gcc (REALGCC default arm-linux-gnueabihf-gcc,
# specs /usr/lib/arm-linux-musleabihf/musl-gcc.specs). Read from Debian's musl
# 1.2.3-1 debian/rules; not tried on this machine. Needs
# `dpkg --add-architecture armhf` (deps.sh does it for pkg:musl-dev:armhf as root).
# The flags match Debian's armhf ABI (VFPv3-D16, hard float, Thumb-2), which
# the musl:armhf libc.a was built for. Boards without a VFP unit (armel) are
# not covered.
CROSS          := arm-linux-gnueabihf-
CC             := arm-linux-musleabihf-gcc
AR             := $(CROSS)ar
STRIP          := $(CROSS)strip
BOARD_CFLAGS   := -march=armv7-a -mfpu=vfpv3-d16 -mfloat-abi=hard -mthumb
QEMU           := qemu-arm-static
DEB_ARCH       := armhf
BOARD_PACKAGES := gcc-arm-linux-gnueabihf musl-dev:armhf qemu-user-static
