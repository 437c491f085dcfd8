"""rootfs-overlay/etc/init.d/S50picomail under BusyBox, as a device runs it.

The script runs under the static BusyBox of tests/tools/busybox.sh with a
PATH holding only that BusyBox's applets, so it uses nothing a firmware
image lacks.  PICOMAIL_BIN, PICOMAIL_CONF and (through a defaults file, as
/etc/default/picomail would) PICOMAIL_PIDFILE point into a private temporary
root; the daemon listens on a loopback ephemeral port.  As root, run_as is
`nobody`, so the drop of privileges, the owner of the directories and a
reload read as that user are checked too.

Every daemon started is killed by the PID of its pidfile when a test ends.
"""

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from picotest import BIN, ROOT, Client, assert_reply, free_port, message, smtp_send

SCRIPT = os.path.join(ROOT, "rootfs-overlay", "etc", "init.d", "S50picomail")
BUSYBOX = os.environ.get("PICOMAIL_BUSYBOX", os.path.join(ROOT, "build", "busybox", "busybox"))
IS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def busybox():
    """The static BusyBox, built (or found fresh) by tests/tools/busybox.sh."""
    p = subprocess.run(["bash", os.path.join(ROOT, "tests", "tools", "busybox.sh"),
                        os.path.dirname(BUSYBOX)], capture_output=True, text=True, timeout=900)
    if p.returncode != 0 or not os.access(BUSYBOX, os.X_OK):
        if not IS_ROOT:
            pytest.skip("no BusyBox (tests/tools/busybox.sh needs root to fetch the source): %s"
                        % p.stderr.strip()[-300:])
        pytest.fail("tests/tools/busybox.sh failed:\n%s" % p.stderr[-2000:], pytrace=False)
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             timeout=10).stdout.split()
    need = ["sh", "start-stop-daemon", "sed", "tail", "id", "mkdir", "chmod", "chown", "cat",
            "kill", "sleep", "printf", "echo", "rm", "test", "["]
    missing = [a for a in need if a not in applets]
    assert not missing, "BusyBox lacks applets the init script uses: %s" % missing
    return BUSYBOX, applets


def alive(pid):
    """True while the process exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


class Device:
    """A temporary root: etc/picomail.conf, etc/default/picomail, users,
    aliases, var/ and run/, and a bin/ of BusyBox applets."""

    def __init__(self, top, busybox, password_hash):
        self.top = top
        self.bb, applets = busybox
        os.chmod(top, 0o755)    # the run_as user must reach its directories
        self.bin = os.path.join(top, "bin")
        os.makedirs(self.bin)
        for a in applets:
            os.symlink(self.bb, os.path.join(self.bin, a))
        os.makedirs(os.path.join(top, "etc", "default"))
        self.conf = os.path.join(top, "etc", "picomail.conf")
        self.defaults = os.path.join(top, "etc", "default", "picomail")
        self.pidfile = os.path.join(top, "run", "picomail.pid")
        self.spool = os.path.join(top, "var", "lib", "picomail")
        self.maildir_root = os.path.join(top, "var", "mail")
        self.users = os.path.join(top, "etc", "users")
        self.aliases = os.path.join(top, "etc", "aliases")
        self.port = free_port()
        self.run_as = "nobody" if IS_ROOT else None
        with open(self.users, "w") as f:
            f.write("alice:%s\n" % password_hash)
        with open(self.aliases, "w") as f:
            f.write("postmaster: alice\n")
        # As /etc/default/picomail would: the pidfile is set only here.
        with open(self.defaults, "w") as f:
            f.write("PICOMAIL_PIDFILE=%s\n" % self.pidfile)
        self.write_conf()
        self.pids = set()

    def write_conf(self, size="1M", extra=""):
        lines = ["# written by tests/integration/test_init.py",
                 "hostname init.lan", "domains lan localhost",
                 "listen smtp 127.0.0.1:%d" % self.port,
                 "maildir_root %s" % self.maildir_root, "spool %s" % self.spool,
                 "users %s" % self.users, "aliases %s" % self.aliases,
                 "max_message_size %s" % size]
        if self.run_as:
            lines.append("run_as %s" % self.run_as)
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n" + extra)
        # As on the device: the configuration 0644 (every user's sendmail
        # reads it), the users file root:<run_as group> 0640, readable by
        # the daemon after it dropped root (a reload reads it again).
        for path, m in ((self.conf, 0o644), (self.users, 0o640)):
            os.chmod(path, m)
            if self.run_as:
                os.chown(path, 0, pwd.getpwnam(self.run_as).pw_gid)

    def init(self, action, timeout=30):
        env = {"PATH": self.bin, "PICOMAIL_BIN": BIN, "PICOMAIL_CONF": self.conf,
               "PICOMAIL_DEFAULTS": self.defaults}
        p = subprocess.run([self.bb, "sh", SCRIPT, action], env=env, capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=self.top)
        self.note_pid()
        return p

    def pid(self):
        try:
            with open(self.pidfile) as f:
                return int(f.read().strip())
        except (FileNotFoundError, ValueError):
            return None

    def note_pid(self):
        pid = self.pid()
        if pid:
            self.pids.add(pid)

    def ehlo_size(self):
        with Client("127.0.0.1", self.port) as c:
            assert_reply(c.reply(), "220", "greeting")
            r = c.cmd("EHLO client.lan")
            c.cmd("QUIT")
        sizes = [l[8:] for l in r.lines if l[4:8] == "SIZE"]
        assert sizes, "no SIZE in EHLO: %r" % r
        return int(sizes[0])

    def listening(self):
        try:
            with Client("127.0.0.1", self.port, timeout=2):
                return True
        except OSError:
            return False

    def kill_all(self):
        for pid in self.pids:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def device(busybox, password_hash):
    top = tempfile.mkdtemp(prefix="pm-init-", dir="/tmp")
    dev = Device(top, busybox, password_hash)
    yield dev
    dev.kill_all()
    if os.environ.get("PICOMAIL_KEEP"):
        print("kept", top)
    else:
        shutil.rmtree(top, ignore_errors=True)


def wait_gone(pid, seconds=5.0):
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def out(p):
    return "exit %d\nstdout: %s\nstderr: %s" % (p.returncode, p.stdout, p.stderr)


def test_start_deliver_reload_stop(device):
    p = device.init("start")
    assert p.returncode == 0 and "OK" in p.stdout, out(p)
    pid = device.pid()
    assert pid and alive(pid), "no live pid in %s after start: %s" % (device.pidfile, out(p))

    # The spool and the Maildir root: made, owned by run_as; the Maildir
    # root 0700, the spool 0711 (every local user reaches the submit
    # socket and the maildrop through it, but lists nothing).
    for d, mode in ((device.spool, 0o711), (device.maildir_root, 0o700)):
        st = os.stat(d)
        assert st.st_mode & 0o777 == mode, "%s is %o" % (d, st.st_mode & 0o777)
        if device.run_as:
            assert st.st_uid == pwd.getpwnam(device.run_as).pw_uid, d
    if device.run_as:
        with open("/proc/%d/status" % pid) as f:
            uid = re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1)
        assert int(uid) == pwd.getpwnam(device.run_as).pw_uid, "the daemon did not drop root"

    # It serves: EHLO, then a message into alice's Maildir.
    assert device.ehlo_size() == 1024 * 1024
    assert smtp_send(device.port, ["alice@lan"], message("via init")) == (250, "")
    new = os.path.join(device.maildir_root, "alice", "new")
    assert len(os.listdir(new)) == 1

    p = device.init("status")
    assert p.returncode == 0 and "running (pid %d)" % pid in p.stdout, out(p)
    assert re.search(r"^messages_in: 1$", p.stdout, re.M), out(p)

    # A second start finds it running and starts nothing.
    p = device.init("start")
    assert p.returncode == 0 and "already running" in p.stdout, out(p)
    assert device.pid() == pid

    # reload = SIGHUP: the new max_message_size shows in EHLO, same process.
    device.write_conf(size="2M")
    p = device.init("reload")
    assert p.returncode == 0 and "OK" in p.stdout, out(p)
    deadline = time.monotonic() + 5
    while device.ehlo_size() != 2 * 1024 * 1024 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert device.ehlo_size() == 2 * 1024 * 1024, "reload did not apply max_message_size 2M"
    assert device.pid() == pid and alive(pid)

    p = device.init("stop")
    assert p.returncode == 0 and "OK" in p.stdout, out(p)
    # stop waits for the exit itself: the process is gone when it returns.
    assert not alive(pid), "pid %d still there after stop" % pid
    assert not os.path.exists(device.pidfile)
    assert not device.listening()

    p = device.init("stop")
    assert p.returncode == 0 and "not running" in p.stdout, out(p)
    p = device.init("status")
    assert p.returncode == 3 and "not running" in p.stdout, out(p)


def test_restart_gives_a_new_process(device):
    assert device.init("start").returncode == 0
    first = device.pid()
    p = device.init("restart")
    assert p.returncode == 0, out(p)
    second = device.pid()
    assert second and second != first and alive(second)
    assert not alive(first)
    assert device.ehlo_size() == 1024 * 1024
    assert device.init("stop").returncode == 0
    assert wait_gone(second)


@pytest.mark.parametrize("bad,words", [
    ("frobnicate yes\n", ["not valid", "picomail.conf:", "frobnicate"]),
    ("max_connections 0\n", ["not valid", "picomail.conf:", "max_connections"]),
])
def test_start_refuses_a_bad_configuration(device, bad, words):
    device.write_conf(extra=bad)
    p = device.init("start")
    assert p.returncode == 1 and "FAIL" in p.stdout, out(p)
    for w in words:
        assert w in p.stderr, "%r not in the message: %s" % (w, out(p))
    assert device.pid() is None
    assert not device.listening()


@pytest.mark.skipif(not IS_ROOT, reason="run_as needs root")
def test_start_refuses_an_unknown_run_as_user(device):
    device.run_as = None
    device.write_conf(extra="run_as no-such-user-here\n")
    p = device.init("start")
    assert p.returncode == 1, out(p)
    assert "run_as user 'no-such-user-here' does not exist" in p.stderr, out(p)
    assert not device.listening()


def test_reload_with_a_bad_configuration_keeps_the_running_one(device):
    assert device.init("start").returncode == 0
    pid = device.pid()
    device.write_conf(size="2M", extra="frobnicate yes\n")
    p = device.init("reload")
    assert p.returncode == 1 and "keeps its running configuration" in p.stdout, out(p)
    assert "frobnicate" in p.stderr, out(p)
    assert alive(pid) and device.ehlo_size() == 1024 * 1024
    assert device.init("stop").returncode == 0
    assert wait_gone(pid)


def test_stale_pidfile_is_not_trusted(device):
    """A pidfile left by a crash, naming a process that is not picomail
    (this test's own shell child), neither blocks a start nor gets signalled."""
    other = subprocess.Popen(["sleep", "30"])
    try:
        os.makedirs(os.path.dirname(device.pidfile), exist_ok=True)
        with open(device.pidfile, "w") as f:
            f.write("%d\n" % other.pid)
        p = device.init("start")
        assert p.returncode == 0 and "OK" in p.stdout, out(p)
        pid = device.pid()
        assert pid != other.pid and alive(pid)
        assert device.init("stop").returncode == 0
        assert wait_gone(pid)
        assert other.poll() is None, "stop signalled a process that is not picomail"
    finally:
        other.kill()
        other.wait(10)


def test_usage(device):
    p = device.init("frobnicate")
    assert p.returncode == 1 and "Usage:" in p.stdout, out(p)
