"""What ships into firmware, checked without a device and without Buildroot:
`make install`, the manual pages, the device configuration of
rootfs-overlay/, and the BR2_EXTERNAL tree in board/buildroot/ (its package
recipe is run by a stand-in for Buildroot's generic-package: the same
variables, the rsync of the source, BUILD_CMDS, INSTALL_TARGET_CMDS,
INSTALL_INIT_SYSV, with BearSSL in a staging directory as Buildroot's
bearssl package installs it)."""

import os
import re
import shutil
import stat
import subprocess
import tempfile

import pytest

from picotest import ROOT, SANITIZED

HOST_BIN = os.path.join(ROOT, "build", "host", "picomail")
OVERLAY = os.path.join(ROOT, "rootfs-overlay")
DEVICE_CONF = os.path.join(OVERLAY, "etc", "picomail.conf")
INIT = os.path.join(OVERLAY, "etc", "init.d", "S50picomail")
MAN = {"picomail.8": os.path.join(ROOT, "doc", "picomail.8"),
       "picomail.conf.5": os.path.join(ROOT, "doc", "picomail.conf.5")}
BR = os.path.join(ROOT, "board", "buildroot")
PKG_MK = os.path.join(BR, "package", "picomail", "picomail.mk")

# What ships is build/host whatever PICOMAIL_BUILD says: under a sanitizer
# (make test-asan, after the plain run) these would check the same files again.
pytestmark = pytest.mark.skipif(bool(SANITIZED), reason="checks build/host, not the %s" % (SANITIZED or "build"))


def run(argv, timeout=300, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


def read(path):
    with open(path) as f:
        return f.read()


def conf_values(text):
    """key -> last value (words joined) of a picomail.conf text; listen: all."""
    out = {"listen": []}
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "listen":
            out["listen"].append(words[1:])
        else:
            out[words[0]] = " ".join(words[1:])
    return out


@pytest.fixture(scope="module")
def host_bin():
    if not os.access(HOST_BIN, os.X_OK):
        pytest.fail("%s is missing: run `make` first" % HOST_BIN, pytrace=False)
    return HOST_BIN


# ---------------------------------------------------------------- make install


def make_install(dest, *args):
    p = run(["make", "-s", "--no-print-directory", "-C", ROOT, "install", "DESTDIR=" + dest]
            + list(args))
    assert p.returncode == 0, "make install failed:\n%s%s" % (p.stdout, p.stderr)


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_make_install_layout(host_bin, tmp_path):
    dest = str(tmp_path / "root")
    make_install(dest, "PREFIX=/usr")
    sbin = os.path.join(dest, "usr", "sbin", "picomail")
    assert mode(sbin) == 0o755
    with open(sbin, "rb") as a, open(host_bin, "rb") as b:
        assert a.read() == b.read(), "installed binary is not build/host/picomail"
    # The multi-call links, as BusyBox would have them.
    assert os.readlink(os.path.join(dest, "usr", "sbin", "sendmail")) == "picomail"
    assert os.readlink(os.path.join(dest, "usr", "bin", "mailq")) == "../sbin/picomail"
    for link in ("usr/sbin/sendmail", "usr/bin/mailq"):
        assert os.path.samefile(os.path.join(dest, link), sbin), link
    conf = os.path.join(dest, "etc", "picomail.conf")
    # Every user's sendmail reads it (it holds no secret: those have files
    # of their own).
    assert mode(conf) == 0o644
    assert read(conf) == read(DEVICE_CONF)
    init = os.path.join(dest, "etc", "init.d", "S50picomail")
    assert mode(init) == 0o755
    assert read(init) == read(INIT), "with PREFIX=/usr the init script is installed as it is"
    for name, src in MAN.items():
        path = os.path.join(dest, "usr", "share", "man", "man" + name[-1], name)
        assert mode(path) == 0o644
        assert read(path) == read(src)
    p = run([sbin, "version"])
    assert p.returncode == 0 and p.stdout.startswith("picomail ")


def test_make_install_other_prefix_and_no_init(host_bin, tmp_path):
    dest = str(tmp_path / "root")
    make_install(dest, "PREFIX=/usr/local")
    assert os.readlink(os.path.join(dest, "usr", "local", "bin", "mailq")) == "../sbin/picomail"
    init = read(os.path.join(dest, "etc", "init.d", "S50picomail"))
    assert "PICOMAIL_BIN:-/usr/local/sbin/picomail}" in init
    assert os.path.exists(os.path.join(dest, "usr", "local", "share", "man", "man8",
                                       "picomail.8"))
    dest2 = str(tmp_path / "root2")
    make_install(dest2, "PREFIX=/usr", "INSTALL_INIT=no")
    assert not os.path.exists(os.path.join(dest2, "etc", "init.d"))
    assert os.path.exists(os.path.join(dest2, "etc", "picomail.conf"))


# ---------------------------------------------------------------- manual pages


@pytest.mark.parametrize("name", sorted(MAN))
def test_man_page_renders_without_warnings(name):
    path = MAN[name]
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    p = run(["man", "-l", path], env=env)
    assert p.returncode == 0 and not p.stderr.strip(), "man -l %s: %s" % (name, p.stderr)
    assert "NAME" in p.stdout and "DESCRIPTION" in p.stdout, p.stdout[:500]
    p = run(["groff", "-ww", "-mandoc", "-z", "-Tutf8", path])
    assert p.returncode == 0 and not p.stderr.strip(), "groff -ww: %s" % p.stderr
    if shutil.which("mandoc"):
        p = run(["mandoc", "-T", "lint", "-W", "warning", path])
        assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), \
            "mandoc -T lint: %s%s" % (p.stdout, p.stderr)


def conf_keys():
    """The keys of src/conf.c's key table."""
    text = read(os.path.join(ROOT, "src", "conf.c"))
    table = re.search(r"conf_keys\[\] = \{(.*?)\n\};", text, re.S)
    assert table, "no conf_keys[] table in src/conf.c"
    keys = re.findall(r'\{\s*"([a-z0-9_]+)"', table.group(1))
    keys += re.findall(r"CONF_[A-Z]+\(([a-z0-9_]+)", table.group(1))
    assert len(keys) > 20, keys
    return keys


def test_conf_page_documents_every_key():
    page = read(MAN["picomail.conf.5"])
    documented = set(re.findall(r"^\.It Ic ([a-z0-9_]+)", page, re.M))
    missing = [k for k in conf_keys() if k not in documented]
    assert not missing, "keys of src/conf.c missing from doc/picomail.conf.5: %s" % missing


def test_page_documents_every_command():
    usage = read(os.path.join(ROOT, "src", "main.c"))
    commands = set(re.findall(r'"\s*(?:usage: )?picomail ([a-z]+)', usage))
    assert {"serve", "check", "version"} <= commands, commands
    page = read(MAN["picomail.8"])
    documented = set(re.findall(r"^\.It Cm ([a-z]+)", page, re.M))
    assert not commands - documented, "commands missing from doc/picomail.8: %s" % (
        commands - documented)


# ---------------------------------------------------------------- device defaults


def test_device_conf_is_valid(host_bin):
    """`picomail check` accepts it (users and aliases pointed at test files).
    check reads them as the configuration's run_as, so they go in a
    directory it can reach (pytest's own are root's alone)."""
    top = tempfile.mkdtemp(prefix="pm-ship-", dir="/tmp")
    try:
        os.chmod(top, 0o755)
        users, aliases = os.path.join(top, "users"), os.path.join(top, "aliases")
        with open(users, "w") as f:
            f.write("")
        with open(aliases, "w") as f:
            f.write("postmaster: root\n")
        text = read(DEVICE_CONF)
        text = re.sub(r"(?m)^users\s.*$", "users %s" % users, text)
        text = re.sub(r"(?m)^aliases\s.*$", "aliases %s" % aliases, text)
        path = os.path.join(top, "picomail.conf")
        with open(path, "w") as f:
            f.write(text)
        for p in (users, aliases, path):
            os.chmod(p, 0o644)
        p = run([host_bin, "check", "-C", path])
        assert p.returncode == 0, p.stderr
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_device_conf_is_safe_out_of_the_box():
    c = conf_values(read(DEVICE_CONF))
    # Listens on loopback only until someone picks the LAN address.
    assert c["listen"], "no listen line"
    for proto, addr, *flags in c["listen"]:
        assert addr.startswith("127.") or addr.startswith("[::1]:"), \
            "listens on %s out of the box" % addr
    # The LAN address is shown, commented out.
    assert re.search(r"(?m)^#listen\s+smtp\s+192\.168\.1\.1:25", read(DEVICE_CONF))
    # Not an open relay; no passwords in clear; not root.
    assert c["relay_from"] == "127.0.0.0/8 ::1/128"
    assert c["plaintext_auth"] == "no"
    assert c.get("run_as"), "run_as not set"
    # Sized for 64 MB: a few sessions, not the desktop defaults; but TLS
    # for a household at once (a phone, a laptop, a desktop client with
    # several connections), each slot 28 KiB only while in use.
    assert int(c["max_connections"]) <= 16
    assert 4 <= int(c["tls_sessions"]) < int(c["max_connections"])
    # Mail on persistent storage: not under Buildroot's tmpfs links.
    for key in ("spool", "maildir_root"):
        for tmpfs in ("/tmp", "/var/spool", "/var/run", "/var/tmp", "/var/log", "/run"):
            assert not (c[key] + "/").startswith(tmpfs + "/"), "%s %s is in RAM" % (key, c[key])


def test_init_script_is_busybox_sh_clean():
    """No bashisms the BusyBox ash of a device might lack: checked by
    parsing with ash's stricter sibling, dash, when it is there."""
    for sh in ("dash", "sh"):
        if shutil.which(sh):
            p = run([sh, "-n", INIT])
            assert p.returncode == 0, p.stderr
    assert read(INIT).startswith("#!/bin/sh\n")
    assert mode(INIT) & 0o111, "S50picomail is not executable in the tree"


# ---------------------------------------------------------------- Buildroot tree


def mk_define(text, name):
    m = re.search(r"(?ms)^define %s\n(.*?)^endef" % name, text)
    assert m, "no define %s" % name
    return m.group(1)


def mk_var(text, name):
    m = re.search(r"(?m)^%s\s*[:+]?=\s*(.*)$" % name, text)
    assert m, "no %s" % name
    return m.group(1).strip()


def test_buildroot_tree_is_complete_and_consistent():
    for f in ("external.desc", "external.mk", "Config.in", "package/picomail/Config.in",
              "package/picomail/picomail.mk", "configs/picomail_qemu_aarch64_defconfig"):
        assert os.path.isfile(os.path.join(BR, f)), f
    desc = read(os.path.join(BR, "external.desc"))
    assert re.search(r"(?m)^name: PICOMAIL$", desc)
    assert 'source "$BR2_EXTERNAL_PICOMAIL_PATH/package/picomail/Config.in"' in read(
        os.path.join(BR, "Config.in"))
    assert "$(BR2_EXTERNAL_PICOMAIL_PATH)/package/*/*.mk" in read(os.path.join(BR, "external.mk"))
    cfg = read(os.path.join(BR, "package", "picomail", "Config.in"))
    assert re.search(r"(?m)^config BR2_PACKAGE_PICOMAIL$", cfg)
    assert "select BR2_PACKAGE_BEARSSL" in cfg

    mk = read(PKG_MK)
    assert mk_var(mk, "PICOMAIL_SITE") == "$(BR2_EXTERNAL_PICOMAIL_PATH)/../.."
    assert os.path.samefile(os.path.join(BR, "..", ".."), ROOT)
    assert mk_var(mk, "PICOMAIL_SITE_METHOD") == "local"
    assert mk_var(mk, "PICOMAIL_DEPENDENCIES") == "bearssl"
    assert "$(eval $(generic-package))" in mk
    assert "BEARSSL_DIR=$(STAGING_DIR)/usr" in mk
    assert "DESTDIR=$(TARGET_DIR)" in mk_define(mk, "PICOMAIL_INSTALL_TARGET_CMDS")
    assert "/etc/init.d/S50picomail" in mk_define(mk, "PICOMAIL_INSTALL_INIT_SYSV")

    # The user the device configuration runs as is the one the package makes;
    # the configuration is readable by every user, for their sendmail.
    run_as = conf_values(read(DEVICE_CONF))["run_as"]
    users = mk_define(mk, "PICOMAIL_USERS").split()
    assert len(users) >= 9 and users[0] == run_as and users[2] == run_as, users
    perms = mk_define(mk, "PICOMAIL_PERMISSIONS").split()
    assert perms[:5] == ["/etc/picomail.conf", "f", "644", "root", run_as], perms
    assert len(perms) == 10

    defconfig = read(os.path.join(BR, "configs", "picomail_qemu_aarch64_defconfig"))
    assert "BR2_PACKAGE_PICOMAIL=y" in defconfig
    assert "BR2_aarch64=y" in defconfig
    overlay = re.search(r'(?m)^BR2_ROOTFS_OVERLAY="(.*)"$', defconfig).group(1)
    overlay = overlay.replace("$(BR2_EXTERNAL_PICOMAIL_PATH)", BR)
    assert os.path.samefile(overlay, OVERLAY)
    # Static libraries: libbearssl.a exists only then, and the binary is static.
    assert re.search(r"(?m)^BR2_(STATIC_LIBS|SHARED_STATIC_LIBS)=y$", defconfig)


STUB_MK = r"""
# A stand-in for Buildroot's generic-package around package/picomail/picomail.mk.
# BR2_PACKAGE_PICOMAIL_IMAP is left unset (the option off): the IMAP-less
# build, which every other test leaves alone.
BR2_EXTERNAL_PICOMAIL_PATH := {br}
BUILD_DIR   := {top}/output/build
STAGING_DIR := {top}/output/staging
TARGET_DIR  := {top}/output/target
INSTALL     := install
TARGET_MAKE_ENV := PATH=$(PATH)
TARGET_CONFIGURE_OPTS := CC="{cc}" AR="{ar}" STRIP="{strip}" CFLAGS="-Os -pipe" \
	CPPFLAGS="-D_LARGEFILE_SOURCE -D_FILE_OFFSET_BITS=64" LDFLAGS="-static" \
	STAGING_DIR="$(STAGING_DIR)"
RSYNC_VCS_EXCLUSIONS := --exclude .svn --exclude .git --exclude .hg --exclude .bzr --exclude CVS
generic-package :=
include $(BR2_EXTERNAL_PICOMAIL_PATH)/package/picomail/picomail.mk

D := $(BUILD_DIR)/picomail-custom
all: $(D)/.stamp_installed
	$(file >{top}/users.table,$(PICOMAIL_USERS))
	$(file >{top}/permissions.table,$(PICOMAIL_PERMISSIONS))
$(D)/.stamp_rsynced:
	mkdir -p $(@D)
	rsync -au --chmod=u=rwX,go=rX $(PICOMAIL_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS) $(RSYNC_VCS_EXCLUSIONS) $(PICOMAIL_SITE)/ $(@D)
	touch $@
$(D)/.stamp_built: $(D)/.stamp_rsynced
	$(PICOMAIL_BUILD_CMDS)
	touch $@
$(D)/.stamp_installed: $(D)/.stamp_built
	$(PICOMAIL_INSTALL_TARGET_CMDS)
	$(PICOMAIL_INSTALL_INIT_SYSV)
	touch $@
"""


def test_buildroot_package_recipe_builds_and_installs(tmp_path):
    """picomail.mk's commands, run as Buildroot runs them, with the host's
    musl-gcc as the target toolchain and BearSSL installed in staging the
    way package/bearssl/bearssl.mk installs it."""
    if not shutil.which("musl-gcc") or not shutil.which("rsync"):
        pytest.skip("needs musl-gcc and rsync (board/common/deps.sh build test)")
    bearssl = os.path.join(ROOT, "build", "host", "bearssl")
    if not os.path.isfile(os.path.join(bearssl, "lib", "libbearssl.a")):
        pytest.fail("build/host/bearssl is missing: run `make` first", pytrace=False)
    top = str(tmp_path)
    # BEARSSL_INSTALL_STAGING_CMDS: inc/*.h -> usr/include, build/lib* -> usr/lib.
    inc = os.path.join(top, "output", "staging", "usr", "include")
    lib = os.path.join(top, "output", "staging", "usr", "lib")
    os.makedirs(inc)
    os.makedirs(lib)
    for h in os.listdir(os.path.join(bearssl, "inc")):
        shutil.copy(os.path.join(bearssl, "inc", h), inc)
    shutil.copy(os.path.join(bearssl, "lib", "libbearssl.a"), lib)
    # A libc header beside them, as in a real staging: it must not become
    # an ordinary -I header of the build (-Werror would see its warnings).
    open(os.path.join(inc, "stdio.h"), "w").write("#error staging's stdio.h was used\n")
    stub = os.path.join(top, "stub.mk")
    with open(stub, "w") as f:
        f.write(STUB_MK.format(br=BR, top=top, cc="musl-gcc", ar="ar", strip="strip"))
    p = run(["make", "-f", stub, "-j2", "all"], timeout=600, cwd=top)
    assert p.returncode == 0, "the recipe failed:\n%s\n%s" % (p.stdout[-3000:], p.stderr[-3000:])

    src = os.path.join(top, "output", "build", "picomail-custom")
    assert not os.path.exists(os.path.join(src, ".git"))
    # build/ of the repository stayed out of the copy; only the recipe's own is there.
    assert sorted(os.listdir(os.path.join(src, "build"))) == ["buildroot", "buildroot-noimap"]
    used = os.readlink(os.path.join(src, "build", "buildroot", "bearssl", "lib", "libbearssl.a"))
    assert used == os.path.join(lib, "libbearssl.a"), "did not link staging's libbearssl.a"

    target = os.path.join(top, "output", "target")
    binary = os.path.join(target, "usr", "sbin", "picomail")
    assert run([binary, "version"]).stdout.startswith("picomail ")
    # Without BR2_PACKAGE_PICOMAIL_IMAP: no IMAP in the binary, said plainly.
    conf = os.path.join(top, "imap.conf")
    with open(conf, "w") as f:
        f.write("listen imap 127.0.0.1:1143\n")
    p = run([binary, "check", "-C", conf])
    assert p.returncode != 0 and "built without IMAP" in p.stdout + p.stderr, p
    cfg = read(os.path.join(BR, "package", "picomail", "Config.in"))
    assert re.search(r"(?m)^config BR2_PACKAGE_PICOMAIL_IMAP$", cfg)
    assert os.readlink(os.path.join(target, "usr", "sbin", "sendmail")) == "picomail"
    assert os.readlink(os.path.join(target, "usr", "bin", "mailq")) == "../sbin/picomail"
    assert read(os.path.join(target, "etc", "picomail.conf")) == read(DEVICE_CONF)
    assert mode(os.path.join(target, "etc", "init.d", "S50picomail")) == 0o755
    assert read(os.path.join(target, "etc", "init.d", "S50picomail")) == read(INIT)
    assert os.path.exists(os.path.join(target, "usr", "share", "man", "man5", "picomail.conf.5"))
    users = read(os.path.join(top, "users.table")).split()
    assert users[0] == conf_values(read(DEVICE_CONF))["run_as"]
