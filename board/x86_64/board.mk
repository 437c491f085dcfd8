# board/x86_64/board.mk - the build host itself (Debian amd64), included by the
# Makefile for BOARD=x86_64 (the default, output in build/host/).
#
# CC is Debian's musl-gcc wrapper (package musl-tools): it runs the host gcc
# (REALGCC, default x86_64-linux-gnu-gcc) with musl's specs file, so headers
# and libc come from /usr/include/x86_64-linux-musl and /usr/lib/x86_64-linux-musl.
CROSS          :=
CC             := musl-gcc
AR             := ar
STRIP          := strip
BOARD_CFLAGS   :=
# Binaries run natively; no emulator needed.
QEMU           :=
DEB_ARCH       := amd64
# Installed with board/common/deps.sh pkg:NAME (musl-tools is also in its build group).
BOARD_PACKAGES := musl-tools
# Size budgets (the Makefile's "size" says how they are used): over the
# 300 KiB goal since OAuth2 and IMAP, 364 248 bytes with IMAP, 310 104 without;
# the budget is that rounded up to 4 KiB, and 4 KiB more.
SIZE_BUDGET        := 368640
SIZE_BUDGET_NOIMAP := 315392
