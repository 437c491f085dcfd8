# board/aarch64/board.mk - 64-bit ARM (Cortex-A53/A72 routers, NAS, Raspberry Pi 3/4/5).
#
# Toolchain from Debian, no downloads: the cross gcc for glibc plus musl built
# for arm64 installed multiarch. musl-dev:arm64 ships the wrapper
# /usr/bin/aarch64-linux-musl-gcc (`exec "${REALGCC:-aarch64-linux-gnu-gcc}"
# "$@" -specs /usr/lib/aarch64-linux-musl/musl-gcc.specs`) and depends on
# gcc-aarch64-linux-gnu. (Read from Debian's musl 1.2.3-1 source, debian/rules:
# the wrapper is named $(MUSL_TRIPLE)-gcc; not tried on this machine.)
# Do not export a host REALGCC into this build: it would override the default.
# musl-dev:arm64 needs `dpkg --add-architecture arm64` and an apt-get update;
# board/common/deps.sh does that when it is asked for pkg:musl-dev:arm64 as root.
CROSS          := aarch64-linux-gnu-
CC             := aarch64-linux-musl-gcc
AR             := $(CROSS)ar
STRIP          := $(CROSS)strip
BOARD_CFLAGS   := -march=armv8-a
# Runs the static test binaries on the x86_64 host (binfmt not required).
QEMU           := qemu-aarch64-static
DEB_ARCH       := arm64
BOARD_PACKAGES := gcc-aarch64-linux-gnu musl-dev:arm64 qemu-user-static
# Size budgets (the Makefile's "size" says how they are used): over the
# 300 KiB goal since OAuth2 and IMAP, 379 784 bytes with IMAP, 318 344 without;
# the budget is that rounded up to 4 KiB, and 4 KiB more.
SIZE_BUDGET        := 385024
SIZE_BUDGET_NOIMAP := 323584
