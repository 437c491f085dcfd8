# board/buildroot/board.mk - the board of a build driven by Buildroot:
# package/picomail/picomail.mk runs `make BOARD=buildroot`.
#
# Buildroot passes its toolchain on the command line (TARGET_CONFIGURE_OPTS:
# CC, AR, STRIP, CFLAGS, LDFLAGS), which overrides the values below, and
# BEARSSL_DIR=$(STAGING_DIR)/usr in the environment, so that
# board/common/bearssl.sh links Buildroot's libbearssl.a instead of building
# one.  Outside Buildroot, CC=false makes a missing toolchain obvious.
CROSS          :=
CC             := false
AR             := ar
STRIP          := strip
BOARD_CFLAGS   :=
QEMU           :=
DEB_ARCH       :=
BOARD_PACKAGES :=
# No size check: Buildroot's CFLAGS (its BR2_OPTIMIZE_* choice) decide the
# size, and a package must not fail for it.  LTO=auto tries the toolchain's
# LTO plugin and builds without when there is none.
SIZE_LIMIT     ?=
