################################################################################
#
# picomail
#
################################################################################

# The source is this repository: board/buildroot is the BR2_EXTERNAL tree
# inside it, so the package's site is two levels up.  Buildroot copies it
# with rsync; the local build/ and run/ directories stay out of the copy.
PICOMAIL_VERSION = 0.1.0
PICOMAIL_SITE = $(BR2_EXTERNAL_PICOMAIL_PATH)/../..
PICOMAIL_SITE_METHOD = local
PICOMAIL_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = --exclude=/build --exclude=/run
PICOMAIL_DEPENDENCIES = bearssl

# BOARD=buildroot is board/buildroot/board.mk: the toolchain comes from
# TARGET_CONFIGURE_OPTS (CC, AR, STRIP, CFLAGS, LDFLAGS on the command
# line), BearSSL from staging (usr/include/bearssl*.h, usr/lib/libbearssl.a)
# through BEARSSL_DIR instead of the project's own BearSSL build.
PICOMAIL_MAKE_ENV = \
	$(TARGET_MAKE_ENV) \
	BEARSSL_DIR=$(STAGING_DIR)/usr

# BR2_PACKAGE_PICOMAIL_IMAP: the IMAP server, or IMAP=no (a build of its
# own, build/buildroot-noimap/).
PICOMAIL_IMAP = $(if $(BR2_PACKAGE_PICOMAIL_IMAP),yes,no)

PICOMAIL_MAKE_OPTS = \
	$(TARGET_CONFIGURE_OPTS) \
	BOARD=buildroot \
	IMAP=$(PICOMAIL_IMAP)

define PICOMAIL_BUILD_CMDS
	$(PICOMAIL_MAKE_ENV) $(MAKE) $(PICOMAIL_MAKE_OPTS) -C $(@D) \
		build/buildroot$(if $(BR2_PACKAGE_PICOMAIL_IMAP),,-noimap)/picomail
endef

# make install: /usr/sbin/picomail, the links /usr/sbin/sendmail and
# /usr/bin/mailq, /etc/picomail.conf and the manual pages.  The init script
# is PICOMAIL_INSTALL_INIT_SYSV's, so that only a SysV/BusyBox init gets it.
define PICOMAIL_INSTALL_TARGET_CMDS
	$(PICOMAIL_MAKE_ENV) $(MAKE) $(PICOMAIL_MAKE_OPTS) -C $(@D) \
		DESTDIR=$(TARGET_DIR) PREFIX=/usr INSTALL_INIT=no install
endef

define PICOMAIL_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(@D)/rootfs-overlay/etc/init.d/S50picomail \
		$(TARGET_DIR)/etc/init.d/S50picomail
endef

# run_as mail: the skeleton's mail user (8:8) where there is one, else a
# new system user.  S50picomail gives it the spool and the Maildir root.
define PICOMAIL_USERS
	mail -1 mail -1 * - - - picomail mail server
endef

# The daemon reads its configuration again on SIGHUP as the mail user.
define PICOMAIL_PERMISSIONS
	/etc/picomail.conf f 644 root mail - - - - -
endef

$(eval $(generic-package))
