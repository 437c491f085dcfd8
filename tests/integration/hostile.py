"""Helpers for the hostile-client tests (test_hostile.py, test_attacks.py,
test_relay_hostile.py, test_pop3_hostile.py).

Probe        a well-behaved client that holds one session open and times a
             NOOP round trip every few milliseconds while something else
             abuses the server: the loop must keep answering it.
no_greet_pause()  the configuration line that turns the banner delay off
             where the binary has one, so that fresh sessions start at once.
raise_nofile()    lifts this process's descriptor limit for many sockets.
vm()         a field of /proc/PID/status in KiB (VmRSS, VmHWM); memory
             bounds are not checked under a sanitizer (SANITIZED), and
             time bounds on the daemon's speed are scaled().
cpu_seconds()     user+system CPU time of a process.
log_lines()  the daemon's log lines that contain a word.
self_signed()     a throw-away EC certificate and key (openssl).
Hostile      a smarthost scripted byte for byte, in a thread (the relay
             client's tests; a recorder that takes nothing for the others).

Every wait is bounded; every thread started here is joined by stop().
"""

import os
import re
import resource
import socket
import ssl
import subprocess
import tempfile
import threading
import time

from picotest import BIN, Client, assert_reply

try:
    # Set where the daemon runs under ASan or valgrind (tests/sanitize).
    from picotest import SANITIZED, scaled
except ImportError:
    SANITIZED, scaled = "", (lambda seconds: seconds)

_greet_pause = {}


def no_greet_pause(binary=BIN):
    """["greet_pause 0s"] when the binary knows the key (a client on an
    smtp listener is otherwise made to wait for the banner), else []."""
    if binary not in _greet_pause:
        d = tempfile.mkdtemp(prefix="pm-gp-", dir="/tmp")
        try:
            conf = os.path.join(d, "c.conf")
            with open(conf, "w") as f:
                f.write("hostname test.lan\nlisten smtp 127.0.0.1:2525\nmaildir_root %s/m\n"
                        "spool %s/s\nusers %s/u\ngreet_pause 0s\n" % (d, d, d))
            open(os.path.join(d, "u"), "w").close()
            p = subprocess.run([binary, "check", "-C", conf], capture_output=True, timeout=10)
            _greet_pause[binary] = ["greet_pause 0s"] if p.returncode == 0 else []
        finally:
            subprocess.run(["rm", "-rf", d], timeout=10)
    return list(_greet_pause[binary])


def raise_nofile(want):
    """Raises the soft RLIMIT_NOFILE to want (at most the hard limit);
    returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return soft


def vm(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s in /proc/%d/status" % (field, pid))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_signed(dir, name="test.lan"):
    """A self-signed EC P-256 certificate and its key in dir: (cert, key)."""
    key, crt = os.path.join(dir, "key.pem"), os.path.join(dir, "cert.pem")
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", crt,
                        "-days", "2", "-subj", "/CN=%s" % name], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return crt, key


def log_lines(d, word):
    return [l for l in d.log(1 << 22).splitlines() if word in l]


class Probe(threading.Thread):
    """One SMTP session (past the banner and EHLO) that sends NOOP every
    interval seconds and records each round trip.  start() it before the
    abuse, stop() after; then max(), median() and the count.  A reply that
    does not come within `patience` seconds is recorded as that long and
    ends the probe (the loop is stalled: the test will say so)."""

    def __init__(self, host, port, interval=0.02, patience=10.0, helo="EHLO probe.lan",
                 connect=None):
        super().__init__(daemon=True)
        self.c = connect() if connect else Client(host, port, timeout=patience)
        self.c.sock.settimeout(patience)
        assert_reply(self.c.reply(), "220", "probe greeting")
        self.c.expect(helo, "250")
        self.interval = interval
        self.patience = patience
        self.times = []
        self.failure = None
        self._halt = threading.Event()

    def run(self):
        try:
            while not self._halt.is_set():
                t = time.monotonic()
                try:
                    self.c.expect("NOOP", "250")
                except Exception as e:          # reported by stop()
                    self.times.append(time.monotonic() - t)
                    self.failure = "%s: %s" % (type(e).__name__, e)
                    return
                self.times.append(time.monotonic() - t)
                self._halt.wait(self.interval)
        finally:
            pass

    def stop(self):
        self._halt.set()
        self.join(self.patience + 2)
        alive = self.is_alive()
        try:
            self.c.cmd("QUIT")
        except Exception:
            pass
        self.c.close()
        assert not alive, "the probe's NOOP got no answer"
        return self

    def max(self):
        return max(self.times) if self.times else float("inf")

    def median(self):
        s = sorted(self.times)
        return s[len(s) // 2] if s else float("inf")

    def describe(self):
        if not self.times:
            return "no round trips"
        s = sorted(self.times)
        return "%d NOOP round trips: median %.1f ms, p99 %.1f ms, max %.1f ms" % (
            len(s), 1000 * s[len(s) // 2], 1000 * s[min(len(s) - 1, int(len(s) * 0.99))],
            1000 * s[-1])

    def check(self, bound, what):
        """The probe was answered throughout, each time within bound s."""
        assert self.failure is None, "the probe failed during %s: %s (%s)" % (
            what, self.failure, self.describe())
        assert len(self.times) >= 1, "the probe made no round trip during %s" % (
            what,)
        assert self.max() <= bound, "during %s another client waited up to %.2f s " \
            "(bound %.1f s): %s" % (what, self.max(), bound, self.describe())
        print("latency during %s: %s" % (what, self.describe()))


# --------------------------------------------------------------------------
# A scripted smarthost


CLOSE = object()          # close the connection instead of answering

GOOD = {
    "greeting": b"220 hostile.test ESMTP\r\n",
    "ehlo": b"250-hostile.test\r\n250 8BITMIME\r\n",
    "starttls": b"220 2.0.0 go\r\n",
    "mail": b"250 2.1.0 ok\r\n",
    "rcpt": b"250 2.1.5 ok\r\n",
    "data": b"354 go on\r\n",
    "dot": b"250 2.0.0 taken\r\n",
    "quit": b"221 bye\r\n",
}


class Hostile(threading.Thread):
    """A scripted smarthost.  script: the replies by stage (GOOD, with some
    replaced), a reply being bytes, CLOSE, or a function f(conn) that does
    what it likes.  One connection at a time; self.sessions counts them,
    self.messages gets (mail, [rcpt], data, tls) for each message answered
    with a 2xx at the dot, self.commands every line received."""

    def __init__(self, script=None, cert=None):
        super().__init__(daemon=True)
        self.script = dict(GOOD, **(script or {}))
        self.ctx = None
        if cert:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(*cert)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.lsock.settimeout(0.1)
        self.port = self.lsock.getsockname()[1]
        self.sessions = 0
        self.messages = []
        self.commands = []
        self.notes = []
        self.halt = threading.Event()
        self.start()

    def behave(self):
        self.script = dict(GOOD)

    def stop(self):
        self.halt.set()
        self.join(10)
        self.lsock.close()

    def run(self):
        while not self.halt.is_set():
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.sessions += 1
            try:
                Conn(self, c).session()
            except (OSError, EOFError, ssl.SSLError) as e:
                self.notes.append("session %d ended: %s" % (self.sessions, e))
            finally:
                try:
                    c.close()
                except OSError:
                    pass


class Conn:
    def __init__(self, server, sock):
        self.server = server
        self.sock = sock
        self.buf = b""
        self.tls = False
        sock.settimeout(5)

    def readline(self, command=True):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("client closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        line = line.rstrip(b"\r")
        if command:
            self.server.commands.append(line)
        return line

    def answer(self, stage):
        """Sends the script's reply for stage; False if it closed instead."""
        r = self.server.script[stage]
        if r is CLOSE:
            self.sock.close()
            return False
        if callable(r):
            return r(self)
        try:
            self.sock.sendall(r)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def session(self):
        if not self.answer("greeting"):
            return
        mail, rcpts = None, []
        while True:
            line = self.readline()
            verb = line.split(b" ", 1)[0].upper()
            if verb in (b"EHLO", b"HELO"):
                ok = self.answer("ehlo")
            elif verb == b"STARTTLS":
                ok = self.answer("starttls")
                if ok and self.server.ctx is not None:
                    self.sock = self.server.ctx.wrap_socket(self.sock, server_side=True)
                    self.buf = b""
                    self.tls = True
            elif verb == b"MAIL":
                mail, rcpts = line, []
                ok = self.answer("mail")
            elif verb == b"RCPT":
                rcpts.append(line)
                ok = self.answer("rcpt")
            elif verb == b"DATA":
                ok = self.answer("data")
                if ok:
                    data = b""
                    while True:
                        l = self.readline(command=False)
                        if l == b".":
                            break
                        data += l + b"\r\n"
                    ok = self.answer("dot")
                    r = self.server.script["dot"]
                    if ok and isinstance(r, bytes) and re.match(rb"2\d\d[ \r]", r):
                        self.server.messages.append((mail, rcpts, data, self.tls))
            elif verb == b"QUIT":
                self.answer("quit")
                return
            else:
                ok = self.sock.sendall(b"502 5.5.1 what\r\n") or True
            if not ok:
                return
