"""make run (tests/tools/run-demo.sh): a demo daemon on loopback that takes
mail by SMTP and gives it back by POP3 to the user demo, whose password it
prints.  The commands it prints are run exactly as printed (swaks, the
smtplib line, curl pop3://, the poplib line, picomail status), as root and
as another user (nobody), each demo in its own directory on free ports.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from picotest import BIN, ROOT, free_port, scaled

SCRIPT = os.path.join(ROOT, "tests", "tools", "run-demo.sh")
NOBODY = 65534
LABEL = re.compile(r"^\s*(send one|or|fetch one|list all|fetch all|status|stop):\s+(.*)$")


def as_nobody():
    return ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups", "--"]


def wait_port(port, proc, log, seconds=5.0):
    deadline = time.monotonic() + scaled(seconds)
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the demo is not listening on %d:\n%s" % (port, log()))
            time.sleep(0.05)


class Demo:
    """run-demo.sh in dir (its ./run/), started by prefix (setpriv) or not."""

    def __init__(self, dir, prefix=()):
        self.dir = dir
        self.smtp, self.pop3 = free_port(), free_port()
        while self.pop3 == self.smtp:
            self.pop3 = free_port()
        env = dict(os.environ, PICOMAIL_DEMO_PORT=str(self.smtp),
                   PICOMAIL_DEMO_POP3_PORT=str(self.pop3))
        self.out = open(os.path.join(dir, "demo.out"), "wb")
        self.err = open(os.path.join(dir, "demo.err"), "wb")
        self.proc = subprocess.Popen(list(prefix) + ["bash", SCRIPT, BIN], cwd=dir, env=env,
                                     stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.err)
        wait_port(self.smtp, self.proc, self.log)
        wait_port(self.pop3, self.proc, self.log)
        self.commands = {}
        with open(os.path.join(dir, "demo.out")) as f:
            self.text = f.read()
        for line in self.text.splitlines():
            m = LABEL.match(line)
            if m:
                self.commands.setdefault(m.group(1), m.group(2))

    def log(self):
        out = ""
        for n in ("demo.out", "demo.err"):
            with open(os.path.join(self.dir, n), errors="replace") as f:
                out += f.read()[-3000:]
        return out

    def run(self, label):
        """Runs the printed command of label, as printed, from the demo's
        directory; its stdout."""
        assert label in self.commands, "the demo prints no %r line:\n%s" % (label, self.text)
        p = subprocess.run(["bash", "-c", self.commands[label]], cwd=self.dir,
                           capture_output=True, timeout=30)
        assert p.returncode == 0, "%s: %s exit %d\n%s\n%s" % (
            label, self.commands[label], p.returncode, p.stderr.decode(errors="replace"),
            self.log())
        return p.stdout.decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)     # the script execs the daemon
            try:
                self.proc.wait(scaled(5))
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.out.close()
        self.err.close()


def mail_in_and_out(demo):
    assert "password demo" in demo.text and "pop3://127.0.0.1:%d" % demo.pop3 in demo.text, \
        demo.text
    demo.run("send one")                    # swaks
    demo.run("or")                          # smtplib: Subject: hi
    new = os.path.join(demo.dir, "run", "mail", "demo", "new")
    deadline = time.monotonic() + scaled(5)
    while len(os.listdir(new)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(os.listdir(new)) == 2, os.listdir(new)
    listing = demo.run("list all").split()
    assert len(listing) == 4 and listing[0::2] == ["1", "2"], listing
    first = demo.run("fetch one")
    assert "X-Mailer: swaks" in first or "Subject: hi" in first, first
    every = demo.run("fetch all")
    assert "This is a test mailing" in every and "Subject: hi\n\nhello" in every, every
    assert "uptime" in demo.run("status")
    # POP3 took the messages into cur/ and deleted nothing.
    cur = os.path.join(demo.dir, "run", "mail", "demo", "cur")
    assert len(os.listdir(cur)) == 2 and os.listdir(new) == []


@pytest.fixture
def private_dir():
    d = tempfile.mkdtemp(prefix="pm-demo-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_demo_as_root(private_dir):
    if os.geteuid() != 0:
        pytest.skip("not root: test_demo_as_another_user runs it as this user")
    demo = Demo(private_dir)
    try:
        mail_in_and_out(demo)
    finally:
        demo.stop()


def test_demo_as_another_user(private_dir):
    prefix = ()
    if os.geteuid() == 0:
        os.chown(private_dir, NOBODY, NOBODY)
        prefix = as_nobody()
        probe = subprocess.run(prefix + ["test", "-x", BIN, "-a", "-r", SCRIPT])
        if probe.returncode != 0:
            pytest.skip("nobody cannot run %s" % BIN)
    demo = Demo(private_dir, prefix)
    try:
        mail_in_and_out(demo)
        if prefix:
            st = os.stat(os.path.join(private_dir, "run", "mail", "demo", "cur"))
            assert st.st_uid == NOBODY, "the Maildir is not the demo user's"
    finally:
        demo.stop()


def test_make_run_runs_the_demo_script():
    p = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    assert "tests/tools/run-demo.sh build/host/picomail" in p.stdout.decode(), \
        p.stdout.decode()[-2000:]
