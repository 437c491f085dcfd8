#!/usr/bin/python3
"""fwimage.py [BOARD...] - the firmware lab's boot images, from Debian packages.

For each board (tests/firmware/boards.py; default: all) it writes
build/firmware/<board>/:

    kernel        Debian's kernel (linux-image-<ver>-<flavour>:<arch>)
    initrd.gz     a gzipped newc cpio: BusyBox (busybox-static:<arch>) as
                  /init with BusyBox init, the kernel modules the lab needs
                  (closure from modules.dep, then depmod -b), picomail
                  installed by `make install DESTDIR= BOARD=` with
                  rootfs-overlay/, the lab's additions to its configuration
                  (guest/picomail-lab.conf), users, a TLS key, fwtool
    info.json     kernel version, package names, sizes

Packages are fetched with `apt-get download` into build/cache/debs (kept
between runs, never installed on the host) and unpacked with `dpkg -x`.
The kernel's version is the one Debian's metapackage (linux-image-<flavour>)
depends on; without package lists, the newest deb in the cache.
"""

import glob
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from boards import BOARDS, BOOT_MODULES, FLASH_MODULES, MODULES  # noqa: E402

CACHE = os.path.join(ROOT, "build", "cache", "debs")
OUT = os.path.join(ROOT, "build", "firmware")
GUEST = os.path.join(HERE, "guest")


def log(msg):
    print("fwimage: " + msg, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def output(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, universal_newlines=True, **kw).stdout


# ---------------------------------------------------------------- packages
def cached_deb(name, arch):
    """The cached .deb of package NAME for ARCH, newest version first."""
    found = sorted(glob.glob(os.path.join(CACHE, "%s_*_%s.deb" % (name, arch))), key=os.path.getmtime)
    return found[-1] if found else None


def kernel_package(board):
    b = BOARDS[board]
    meta = "linux-image-%s:%s" % (b["flavour"], b["deb_arch"])
    try:
        deps = output(["apt-cache", "depends", meta], stderr=subprocess.DEVNULL)
    except subprocess.CalledProcessError:
        deps = ""
    m = re.search(r"Depends: (linux-image-[0-9][^:\s]*-%s)\b" % re.escape(b["flavour"]), deps)
    if m:
        return m.group(1)
    found = sorted(glob.glob(os.path.join(CACHE, "linux-image-[0-9]*-%s_*_%s.deb" % (b["flavour"], b["deb_arch"]))))
    if not found:
        sys.exit("fwimage: no kernel for %s: apt-cache knows no %s and the cache %s has none "
                 "(dpkg --add-architecture %s && apt-get update)" % (board, meta, CACHE, b["deb_arch"]))
    return os.path.basename(found[-1]).split("_")[0]


def fetch(name, arch):
    deb = cached_deb(name, arch)
    if deb:
        return deb
    os.makedirs(CACHE, exist_ok=True)
    log("apt-get download %s:%s" % (name, arch))
    # As root apt wants to drop to _apt, who cannot write build/: the
    # download then runs unsandboxed, which is what we want here.
    r = subprocess.run(["apt-get", "download", "-q", "%s:%s" % (name, arch)], cwd=CACHE,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    deb = cached_deb(name, arch)
    if r.returncode != 0 or not deb:
        sys.exit("fwimage: apt-get download %s:%s failed:\n%s" % (name, arch, r.stdout))
    return deb


def unpack(deb, dest):
    """dpkg -x DEB into DEST, once (a stamp names the deb)."""
    stamp = os.path.join(dest, ".deb")
    if os.path.exists(stamp) and open(stamp).read() == os.path.basename(deb):
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    run(["dpkg", "-x", deb, dest])
    with open(stamp, "w") as f:
        f.write(os.path.basename(deb))
    return dest


# ---------------------------------------------------------------- modules
def module_closure(moddir, wanted):
    """Paths (relative to moddir) of the wanted modules and what they need."""
    dep = {}
    byname = {}
    with open(os.path.join(moddir, "modules.dep")) as f:
        for line in f:
            path, _, rest = line.partition(":")
            dep[path] = rest.split()
            byname[os.path.basename(path)[:-3].replace("-", "_")] = path
    builtin = set()
    bpath = os.path.join(moddir, "modules.builtin")
    if os.path.exists(bpath):
        for line in open(bpath):
            builtin.add(os.path.basename(line.strip())[:-3].replace("-", "_"))
    out, todo = [], []
    for name in wanted:
        key = name.replace("-", "_")
        if key in byname:
            todo.append(byname[key])
        elif key not in builtin:
            log("note: module %s is neither a module nor built in" % name)
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.append(p)
        todo.extend(dep.get(p, []))
    return out


# ---------------------------------------------------------------- cpio
class Cpio:
    """A newc archive written by hand, so that owners, modes and device
    nodes are what the guest needs without root on the build host."""

    def __init__(self):
        self.parts = []
        self.ino = 1000

    def _add(self, name, mode, data=b"", uid=0, gid=0, rdev=(0, 0), nlink=1):
        self.ino += 1
        hdr = "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X" % (
            self.ino, mode, uid, gid, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
        blob = hdr.encode() + name.encode() + b"\0"
        blob += b"\0" * (-len(blob) % 4)
        blob += data
        blob += b"\0" * (-len(blob) % 4)
        self.parts.append(blob)

    def dir(self, name, mode=0o755, uid=0, gid=0):
        self._add(name, stat.S_IFDIR | mode, uid=uid, gid=gid, nlink=2)

    def file(self, name, data, mode=0o644, uid=0, gid=0):
        self._add(name, stat.S_IFREG | mode, data, uid, gid)

    def link(self, name, target):
        self._add(name, stat.S_IFLNK | 0o777, target.encode())

    def node(self, name, kind, major, minor, mode=0o600):
        self._add(name, kind | mode, rdev=(major, minor))

    def tree(self, src, prefix):
        """Everything under SRC as PREFIX/..., owned by root."""
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            rel = os.path.relpath(dirpath, src)
            base = prefix if rel == "." else prefix + "/" + rel
            if rel != ".":
                self.dir(base, stat.S_IMODE(os.stat(dirpath).st_mode))
            for fn in sorted(filenames) + sorted(d for d in dirnames if os.path.islink(os.path.join(dirpath, d))):
                p = os.path.join(dirpath, fn)
                if os.path.islink(p):
                    self.link(base + "/" + fn, os.readlink(p))
                else:
                    self.file(base + "/" + fn, open(p, "rb").read(), stat.S_IMODE(os.stat(p).st_mode))

    def bytes(self):
        self._add("TRAILER!!!", 0)
        return b"".join(self.parts)


# ---------------------------------------------------------------- board.mk
def board_var(board, name):
    for line in open(os.path.join(ROOT, "board", board, "board.mk")):
        w = line.split(None, 2)
        if len(w) >= 2 and w[0] == name and w[1] in (":=", "=", "?="):
            return w[2].strip() if len(w) == 3 else ""
    return ""


def tls_material(outdir):
    """An EC key and a certificate for mail.lan, valid from now for two
    years, made once per build directory (the guest's clock may be 1970)."""
    key, cert = os.path.join(outdir, "key.pem"), os.path.join(outdir, "cert.pem")
    if not (os.path.exists(key) and os.path.exists(cert)):
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", cert, "-days", "825", "-subj", "/CN=mail.lan",
             "-addext", "subjectAltName=DNS:mail.lan"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return open(key, "rb").read(), open(cert, "rb").read()


USERS = {"alice": "secret", "bob": "secret"}   # pop3test.PASSWORD


def build(board):
    t0 = time.time()
    b = BOARDS[board]
    arch = b["deb_arch"]
    out = os.path.join(OUT, board)
    os.makedirs(out, exist_ok=True)

    kpkg = kernel_package(board)
    kdeb = fetch(kpkg, arch)
    bdeb = fetch("busybox-static", arch)
    kdir = unpack(kdeb, os.path.join(out, "deb-kernel"))
    bbdir = unpack(bdeb, os.path.join(out, "deb-busybox"))
    kver = os.listdir(os.path.join(kdir, "lib", "modules"))[0]
    moddir = os.path.join(kdir, "lib", "modules", kver)
    if not os.path.exists(os.path.join(moddir, "modules.dep")):
        run(["depmod", "-b", kdir, kver])

    # picomail, installed as on a device; fwtool with the board's compiler.
    make = os.environ.get("MAKE", "make")
    run([make, "--no-print-directory", "-s", "BOARD=" + board, "build/%s/picomail" % board], cwd=ROOT)
    stage = os.path.join(out, "stage")
    shutil.rmtree(stage, ignore_errors=True)
    run([make, "--no-print-directory", "-s", "install", "DESTDIR=" + stage, "PREFIX=/usr", "BOARD=" + board],
        cwd=ROOT, stdout=subprocess.DEVNULL)
    fwtool = os.path.join(out, "fwtool")
    cc = board_var(board, "CC").split()
    run(cc + ["-static", "-Os", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-s",
              "-o", fwtool, os.path.join(GUEST, "fwtool.c")])

    # The modules: the closure, copied, then depmod -b over the copy.
    mstage = os.path.join(out, "modules")
    shutil.rmtree(mstage, ignore_errors=True)
    mroot = os.path.join(mstage, "lib", "modules", kver)
    os.makedirs(mroot)
    mods = module_closure(moddir, MODULES + (FLASH_MODULES if b["mtd"] else []))
    for rel in mods:
        os.makedirs(os.path.dirname(os.path.join(mroot, rel)), exist_ok=True)
        shutil.copy(os.path.join(moddir, rel), os.path.join(mroot, rel))
    for f in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if os.path.exists(os.path.join(moddir, f)):
            shutil.copy(os.path.join(moddir, f), os.path.join(mroot, f))
    run(["depmod", "-b", mstage, kver])

    c = Cpio()
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "etc/fw", "etc/init.d", "etc/picomail",
              "proc", "sys", "dev", "run", "var", "var/log", "var/lib", "data", "flash", "root", "lib",
              "lib/modules"):
        c.dir(d)
    c.dir("tmp", 0o1777)
    c.node("dev/console", stat.S_IFCHR, 5, 1)
    c.node("dev/null", stat.S_IFCHR, 1, 3, 0o666)
    c.link("var/run", "/run")
    c.file("bin/busybox", open(os.path.join(bbdir, "bin", "busybox"), "rb").read(), 0o755)
    qemu = board_var(board, "QEMU")
    applets = output(([qemu] if qemu else []) + [os.path.join(bbdir, "bin", "busybox"), "--list-full"]).split()
    for a in applets:
        if a not in ("linuxrc", "bin/busybox"):
            c.link(a, "/bin/busybox")
    c.link("init", "bin/busybox")
    c.tree(stage, ".")   # usr/sbin/picomail, sendmail, mailq, etc/picomail.conf, S50picomail, man
    c.tree(mstage, ".")
    for name in ("rcS", "rcK"):
        c.file("etc/init.d/" + name, open(os.path.join(GUEST, name), "rb").read(), 0o755)
    for name in ("fwagent", "fwnet", "fwdisk"):
        c.file("sbin/" + name, open(os.path.join(GUEST, name), "rb").read(), 0o755)
    c.file("sbin/fwtool", open(fwtool, "rb").read(), 0o755)
    c.file("etc/inittab", open(os.path.join(GUEST, "inittab"), "rb").read())
    c.file("etc/fw/modules.boot", ("\n".join(BOOT_MODULES) + "\n").encode())
    c.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nmail:x:8:8:mail:/var/mail:/bin/false\n"
                         b"user:x:1000:100:user:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    c.file("etc/group", b"root:x:0:\nmail:x:8:\nusers:x:100:\nnogroup:x:65534:\n")
    c.file("etc/hosts", b"127.0.0.1 localhost\n10.0.2.15 mail.lan mail\n")
    c.file("etc/aliases", b"root: alice\npostmaster: alice\n")
    conf = open(os.path.join(stage, "etc", "picomail.conf"), "rb").read()
    conf += open(os.path.join(GUEST, "picomail-lab.conf"), "rb").read()
    c.file("etc/picomail.conf", conf, 0o644)
    users = b""
    for u, pw in sorted(USERS.items()):
        h = output(["openssl", "passwd", "-6", "-salt", "fwlab" + u, pw]).strip()
        users += ("%s:%s\n" % (u, h)).encode()
    c.file("etc/picomail/users", users, 0o640, gid=8)
    key, cert = tls_material(out)
    c.file("etc/picomail/key.pem", key, 0o640, gid=8)
    c.file("etc/picomail/cert.pem", cert, 0o644)

    raw = c.bytes()
    run(["gzip", "-6", "-n", "-c"], input=raw, stdout=open(os.path.join(out, "initrd.gz.tmp"), "wb"))
    os.replace(os.path.join(out, "initrd.gz.tmp"), os.path.join(out, "initrd.gz"))
    kimg = os.path.join(kdir, "boot", "vmlinuz-" + kver)
    shutil.copy(kimg, os.path.join(out, "kernel"))
    info = {
        "board": board, "kernel_package": kpkg, "kernel_version": kver,
        "kernel_deb": os.path.basename(kdeb), "busybox_deb": os.path.basename(bdeb),
        "modules": len(mods), "initrd_bytes": os.path.getsize(os.path.join(out, "initrd.gz")),
        "initrd_raw_bytes": len(raw), "kernel_bytes": os.path.getsize(kimg),
        "picomail_bytes": os.path.getsize(os.path.join(ROOT, "build", board, "picomail")),
        "picomail_sha256": hashlib.sha256(open(os.path.join(ROOT, "build", board, "picomail"), "rb").read()).hexdigest(),
        "users": USERS,
    }
    with open(os.path.join(out, "info.json"), "w") as f:
        json.dump(info, f, indent=1)
    log("%s: %s, %d modules, initrd %d KiB (%d KiB unpacked), %.0f s" % (
        board, kpkg, len(mods), info["initrd_bytes"] // 1024, len(raw) // 1024, time.time() - t0))


def main(argv):
    boards = argv or list(BOARDS)
    for bd in boards:
        if bd not in BOARDS:
            sys.exit("fwimage: unknown board %s (boards: %s)" % (bd, " ".join(BOARDS)))
    for bd in boards:
        build(bd)


if __name__ == "__main__":
    main(sys.argv[1:])
