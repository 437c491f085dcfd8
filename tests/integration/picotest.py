"""Helpers for the picomail integration tests.

A Daemon is one real picomail process on loopback ephemeral ports, with its
own configuration, users, aliases, spool and Maildir root in a private
temporary directory.  A Client is a raw SMTP connection that reads replies
exactly as RFC 5321 frames them, for the exchanges smtplib will not make
(pipelining, protocol abuse, smuggling).  Maildir reads and checks the
delivered files.

Every wait here is bounded; every process started is stopped by its PID.
"""

import collections
import os
import re
import shlex
import signal
import smtplib
import socket
import subprocess
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("PICOMAIL_BUILD", os.path.join(ROOT, "build", "host"))
BIN = os.path.join(BUILD, "picomail")
TEST_BIN = os.path.join(BUILD, "picomail-test")

# PICOMAIL_WRAP="valgrind ..." runs every daemon (picomail serve) under that
# command (tests/sanitize/sanitize.mk, make test-valgrind).
WRAP = shlex.split(os.environ.get("PICOMAIL_WRAP", ""))


def _sanitized():
    """Why the daemon is not the shipped kind, or "": an AddressSanitizer
    build (build/asan) or a daemon under PICOMAIL_WRAP."""
    if WRAP:
        return "the daemon runs under %s" % os.path.basename(WRAP[0])
    try:
        with open(BIN, "rb") as f:
            if b"__asan_init" in f.read():
                return "AddressSanitizer build (%s)" % BUILD
    except OSError:
        pass
    return ""


# Under a sanitizer or valgrind, memory figures (RSS, peak RSS) measure the
# tool, not picomail: tests of those skip, naming why (skip_if_sanitized).
SANITIZED = _sanitized()
# How much slower the daemon is there: start-up, shutdown and the waits of
# timing-sensitive tests are scaled by it (never what they assert).
SLOWDOWN = 1 if not SANITIZED else (20 if WRAP else 3)


def _emulated():
    """"qemu-user" when the daemon is a foreign board's binary run through
    tests/cross/test-cross.sh's wrapper script (`exec qemu-<arch>-static
    ...`), else "": the process's memory is then the emulator's."""
    try:
        with open(BIN, "rb") as f:
            head = f.read(512)
    except OSError:
        return ""
    return "qemu-user" if head.startswith(b"#!") and b"qemu-" in head else ""


EMULATED = _emulated()


def skip_if_sanitized(what):
    """A mark for a test whose measure means nothing under SANITIZED."""
    import pytest
    return pytest.mark.skipif(bool(SANITIZED), reason="%s: meaningless for %s" % (what, SANITIZED))


def scaled(seconds):
    """A wait bound for the daemon's speed under SANITIZED."""
    return seconds * SLOWDOWN

CRLF = b"\r\n"
SENDER = "sender@example.org"


def lf(data):
    """The message as a Maildir file holds it: CRLF line ends become LF."""
    return data.replace(b"\r\n", b"\n")


# Ports for the daemons the tests start.  A port is picked, then released,
# then bound by the daemon: in between, another pick could take it.  Under
# pytest-xdist each worker takes its ports in turn from a slice of its own
# below the kernel's ephemeral range, so that neither another worker's pick
# nor an outgoing connection's port can be the same, nor this worker's last
# few hundred picks.  Elsewhere (one process, or the shards of test-cross,
# each in its own network namespace) the kernel picks, and the last picks of
# this process are not given out again.
PORT_SLICE = 1000
PORT_SLICES_BASE = 20000
_ports_given = collections.deque(maxlen=256)
_port_next = None          # this worker's next pick in its slice


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(family, host, port):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _worker_slice():
    """This xdist worker's first port and slice size, or None."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not worker[2:].isdigit():
        return None
    slices = (_ephemeral_low() - PORT_SLICES_BASE) // PORT_SLICE
    if slices < 1:
        return None
    return PORT_SLICES_BASE + (int(worker[2:]) % slices) * PORT_SLICE


def free_port(host="127.0.0.1"):
    """A port nobody holds now, and that no other pick of the suite's is
    about to be given (see above)."""
    global _port_next
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    first = _worker_slice()
    if first is not None:
        if _port_next is None:
            _port_next = first + os.getpid() % PORT_SLICE
        for _ in range(PORT_SLICE):
            port = first + (_port_next - first) % PORT_SLICE
            _port_next = port + 1
            if _bindable(family, host, port):
                return port
        raise OSError("no free port in %d-%d" % (first, first + PORT_SLICE - 1))
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            break
    _ports_given.append(port)
    return port


def ipv6_loopback_available():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------
# SMTP wire client


class Reply:
    """One SMTP reply: its lines (without CRLF), its code, its text."""

    def __init__(self, lines):
        self.lines = lines
        self.code = int(lines[-1][:3])

    @property
    def text(self):
        return self.lines[-1][4:]

    def matches(self, expected):
        """expected is "250", "550 5.1.1" or "421 4.3.2": the code, and the
        enhanced status code (RFC 3463) at the start of the text if given;
        "503 5.5.1|554 5.5.1" accepts either."""
        if "|" in expected:
            return any(self.matches(e) for e in expected.split("|"))
        parts = expected.split(None, 1)
        if self.code != int(parts[0]):
            return False
        if len(parts) > 1:
            return all(l[4:].split(" ", 1)[0] == parts[1] for l in self.lines)
        return True

    def __repr__(self):
        return " | ".join(self.lines)


class ServerClosed(Exception):
    pass


class ReplyTimeout(AssertionError):
    pass


class Client:
    """A raw SMTP client: send bytes as they are, read replies one by one."""

    MAX_LINE = 1 << 16

    def __init__(self, host, port, timeout=5.0):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.connect((host, port))
        self.buf = bytearray()
        self.timeout = timeout

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError as e:
            raise ServerClosed("connection reset by server") from e
        except socket.timeout:
            raise ReplyTimeout("no reply from the server within %.1f s (partial: %r)" % (
                self.sock.gettimeout(), bytes(self.buf[:200]))) from None
        if not chunk:
            raise ServerClosed("connection closed by server")
        self.buf += chunk

    def line(self):
        while b"\n" not in self.buf:
            if len(self.buf) > self.MAX_LINE:
                raise AssertionError("reply line longer than %d" % self.MAX_LINE)
            self._fill()
        i = self.buf.index(b"\n")
        raw = bytes(self.buf[:i + 1])
        del self.buf[:i + 1]
        assert raw.endswith(CRLF), "reply line not ended by CRLF: %r" % raw
        return raw[:-2].decode("latin-1")

    def reply(self, timeout=None):
        """Reads one (possibly multi-line) reply."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            lines = []
            while True:
                l = self.line()
                assert re.match(r"^[2-5]\d\d([ -]|$)", l), "not a reply line: %r" % l
                lines.append(l)
                if len(l) < 4 or l[3] == " ":
                    return Reply(lines)
        finally:
            if timeout is not None:
                self.sock.settimeout(self.timeout)

    def replies(self, n):
        return [self.reply() for _ in range(n)]

    def cmd(self, line):
        if isinstance(line, str):
            line = line.encode("latin-1")
        self.send(line + CRLF)
        return self.reply()

    def expect(self, line, expected):
        r = self.cmd(line)
        assert r.matches(expected), "C: %s\nS: %r\nexpected %s" % (
            shorten(line), r, expected)
        return r

    def quiet(self, seconds=0.5):
        """True when the server sends nothing (more) within seconds."""
        if self.buf:
            return False
        self.sock.settimeout(seconds)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return True
        except ConnectionResetError:
            return False
        finally:
            self.sock.settimeout(self.timeout)
        self.buf += chunk
        return False

    def closed(self, seconds=5.0):
        """Reads and drops whatever comes until the server closes; True if it
        does within seconds."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not chunk:
                return True
            self.buf += chunk
        return False


# --------------------------------------------------------------------------
# The daemon's event lines (src/log.h): "<event> key=value ..." after the
# "picomail[pid]: prio: " prefix; a value is bare, or in double quotes
# with \" \\ and \xNN inside.

EVENT_RE = re.compile(r"picomail\[\d+\]: (?:\w+): ([a-z][a-z-]*)((?: [a-z_]+=(?:\"(?:[^\"\\]|\\.)*\"|\S+))*)"
                      r"(?: truncated=yes)?$")
FIELD_RE = re.compile(r' ([a-z_]+)=("(?:[^"\\]|\\.)*"|\S+)')


def log_unquote(v):
    """A field's value as the daemon had it (the inverse of log_value)."""
    if not v.startswith('"'):
        return v
    out, i, body = [], 0, v[1:-1]
    while i < len(body):
        c = body[i]
        if c == "\\" and body[i + 1] == "x":
            out.append(chr(int(body[i + 2:i + 4], 16)))
            i += 4
        elif c == "\\":
            out.append(body[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def log_value(text):
    """How the daemon writes a value (src/log_kv.c log_value), for tests that
    look for one in the raw log."""
    if text and all(0x20 < ord(c) < 0x7f and c not in '"\\' for c in text):
        return text
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif 0x20 <= ord(c) < 0x7f:
            out.append(c)
        else:
            out.append("\\x%02x" % ord(c))
    return '"' + "".join(out) + '"'


def log_events(text, event=None, **match):
    """The event lines of a log text, parsed: a list of dicts with the
    event's name under "event"; only those named event, and whose fields
    equal the keyword arguments, when given."""
    out = []
    for line in text.splitlines():
        m = EVENT_RE.search(line)
        if not m or (event is not None and m.group(1) != event):
            continue
        fields = {"event": m.group(1)}
        for k, v in FIELD_RE.findall(m.group(2)):
            fields[k] = log_unquote(v)
        if all(fields.get(k) == v for k, v in match.items()):
            out.append(fields)
    return out


def shorten(line, n=120):
    s = repr(line)
    return s if len(s) <= n else s[:n] + "...(%d bytes)" % len(line)


def assert_reply(reply, expected, context=""):
    assert reply.matches(expected), "%s\nS: %r\nexpected %s" % (context, reply, expected)


def expect_replies(c, want, what="pipelined replies"):
    """Reads len(want) replies; on a mismatch, a timeout or a close, fails
    showing every reply received so far."""
    got = []
    for w in want:
        try:
            r = c.reply()
        except (ReplyTimeout, ServerClosed) as e:
            raise AssertionError("%s: want %s, got %r, then: %s" % (
                what, " ".join(want), got, e)) from None
        got.append(r)
        assert r.matches(w), "%s: want %s, got %r" % (what, " ".join(want), got)
    return got


# --------------------------------------------------------------------------
# Messages


def message(subject="test", body=b"hello\r\n", headers=b""):
    if isinstance(body, str):
        body = body.encode()
    return (b"From: <sender@example.org>\r\nSubject: " + subject.encode() + b"\r\n"
            + headers + b"\r\n" + body)


def numbered(i, size=0):
    """Message i: an X-Seq header and a last line "END i" to tell a complete
    file from a truncated one; padded with filler lines to about size."""
    head = b"Subject: message %d\r\nX-Seq: %d\r\n\r\n" % (i, i)
    filler = b""
    if size > 0:
        line = b"%08d " % i + b"f" * 69 + CRLF
        filler = line * max(1, size // len(line))
    return head + filler + b"END %d\r\n" % i


SEQ_RE = re.compile(rb"^X-Seq: (\d+)$", re.M)


def seq_of(data):
    m = SEQ_RE.search(data)
    return int(m.group(1)) if m else None


def is_complete(data, i):
    return data.endswith(b"\nEND %d\n" % i)


def stuff(data):
    """Dot-stuffing as a client does it (RFC 5321 4.5.2)."""
    return re.sub(rb"(?m)^\.", b"..", data)


def send_transaction(c, rcpts, data, sender=SENDER):
    """MAIL, RCPT..., DATA and the data, dot-stuffed, with the final dot;
    returns the reply to the end of data."""
    c.expect("MAIL FROM:<%s>" % sender, "250")
    for r in rcpts:
        c.expect("RCPT TO:<%s>" % r, "250")
    c.expect("DATA", "354")
    c.send(stuff(data) + b".\r\n")
    return c.reply()


def smtp_send(port, rcpts, data, sender=SENDER, host="127.0.0.1", timeout=10):
    """Sends one message with smtplib.  Returns (code, text) of the first
    refusal, or (250, "") on success.  Raises on a dropped connection."""
    with smtplib.SMTP(host, port, local_hostname="client.lan", timeout=timeout) as s:
        try:
            refused = s.sendmail(sender, rcpts, data)
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error.decode("latin-1")
        except smtplib.SMTPSenderRefused as e:
            return e.smtp_code, e.smtp_error.decode("latin-1")
        except smtplib.SMTPRecipientsRefused as e:
            code, text = list(e.recipients.values())[0]
            return code, text.decode("latin-1")
        assert refused == {}, "some recipients refused: %r" % refused
        return 250, ""


# --------------------------------------------------------------------------
# Maildir


NAME_RE = re.compile(r"^(?P<unique>[^/:]+),S=(?P<S>\d+),W=(?P<W>\d+)$")


class Stored:
    """A delivered file in new/, parsed: Return-Path, Received, the rest."""

    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)
        self.st = os.stat(path)
        with open(path, "rb") as f:
            self.data = f.read()
        lines = self.data.split(b"\n")
        self.return_path = None
        self.received = None
        self.body = None
        if lines and lines[0].startswith(b"Return-Path: "):
            self.return_path = lines[0][len(b"Return-Path: "):]
            i = 1
            if i < len(lines) and lines[i].startswith(b"Received: "):
                j = i + 1
                while j < len(lines) and lines[j][:1] in (b" ", b"\t"):
                    j += 1
                self.received = b"\n".join(lines[i:j])
                self.body = b"\n".join(lines[j:])

    def check(self):
        """The invariants every delivered file keeps."""
        m = NAME_RE.match(self.name)
        assert m, "bad Maildir name %r (want <unique>,S=<n>,W=<n>)" % self.name
        assert int(m.group("S")) == len(self.data), \
            "%s: S= says %s, file has %d octets" % (self.name, m.group("S"), len(self.data))
        w = len(self.data) + self.data.count(b"\n")
        assert int(m.group("W")) == w, \
            "%s: W= says %s, with CRLF line ends the file has %d octets" % (
                self.name, m.group("W"), w)
        assert b"\r" not in self.data, "%s holds a CR: files use LF line ends" % self.name
        assert self.return_path is not None, "%s does not start with Return-Path:" % self.name
        assert self.received is not None and self.received.startswith(b"Received: from "), \
            "%s: second header is not 'Received: from ...'" % self.name
        assert self.data.endswith(b"\n") or self.body == b"", "%s: no final LF" % self.name
        return self


class Maildir:
    def __init__(self, path):
        self.path = path

    def _list(self, sub):
        d = os.path.join(self.path, sub)
        if not os.path.isdir(d):
            return []
        return sorted(os.path.join(d, n) for n in os.listdir(d) if not n.startswith("."))

    def messages(self, check=True):
        """Files in new/ (and cur/, where a reader would move them)."""
        out = [Stored(p) for p in self._list("new") + self._list("cur")]
        if check:
            for m in out:
                m.check()
        return out

    def tmp(self):
        return self._list("tmp")

    def assert_clean(self):
        left = self.tmp()
        assert not left, "left in tmp/: %r" % left


# --------------------------------------------------------------------------
# The daemon


class DaemonExited(Exception):
    def __init__(self, returncode, log):
        super().__init__("picomail exited with %r during start-up\n%s" % (returncode, log))
        self.returncode = returncode
        self.log = log


class Daemon:
    """One picomail serve -f process.  Configuration keys are kwargs; a value
    of None leaves the key out; `listen` may be a list; `extra` is a list of
    raw lines appended to the file.  init_env: start it with only what an
    init script passes (PATH), not the tests' environment."""

    def __init__(self, workdir, password_hash, binary=BIN, env=None, init_env=False, **conf):
        self.dir = workdir
        os.makedirs(self.dir, exist_ok=True)
        self.binary = binary
        self.env = dict(env or {})
        self.init_env = init_env
        self.conf_path = os.path.join(self.dir, "picomail.conf")
        self.mail_root = os.path.join(self.dir, "mail")
        self.spool = os.path.join(self.dir, "spool")
        self.users_path = os.path.join(self.dir, "users")
        self.aliases_path = os.path.join(self.dir, "aliases")
        self.log_path = os.path.join(self.dir, "daemon.log")
        os.makedirs(self.mail_root, exist_ok=True)
        os.makedirs(self.spool, exist_ok=True)
        with open(self.users_path, "w") as f:
            f.write("alice:%s\nbob:%s\n" % (password_hash, password_hash))
        with open(self.aliases_path, "w") as f:
            f.write("team: alice, bob\npostmaster: alice\nal: alice\n")
        self.host = "127.0.0.1"
        self.port = free_port()
        self.settings = {
            "hostname": "test.lan",
            "domains": "lan localhost",
            "listen": None,             # filled from host/port in render()
            "maildir_root": self.mail_root,
            "spool": self.spool,
            "users": self.users_path,
            "aliases": self.aliases_path,
            "max_message_size": "1M",
            "relay_from": "127.0.0.0/8 ::1/128",
        }
        self.extra = conf.pop("extra", [])
        self.settings.update(conf)
        self.proc = None
        self.write_config()

    # configuration ---------------------------------------------------------

    def render(self):
        lines = ["# written by tests/integration"]
        for key, value in self.settings.items():
            if key == "listen" and value is None:
                value = "smtp %s:%d" % (self.host, self.port)
            if value is None:
                continue
            for v in (value if isinstance(value, list) else [value]):
                lines.append("%s %s" % (key, v))
        lines.extend(self.extra)
        return "\n".join(lines) + "\n"

    def write_config(self, text=None):
        with open(self.conf_path, "w") as f:
            f.write(self.render() if text is None else text)

    # process ---------------------------------------------------------------

    @property
    def pid(self):
        return self.proc.pid

    def start(self, ready_timeout=5.0):
        if self.init_env:
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        else:
            env = dict(os.environ)
        env.pop("PICOMAIL_CONF", None)
        env.pop("PICOMAIL_FAULT", None)
        env.update(self.env)
        assert os.access(self.binary, os.X_OK), "%s not built (run make)" % self.binary
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            WRAP + [self.binary, "serve", "-C", self.conf_path, "-f"],
            stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT,
            env=env, cwd=self.dir)
        self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout=5.0):
        """Polls the first listener until a full session (greeting, QUIT,
        close) has gone through, so the probe no longer holds a slot.  A
        probe waits 4 s for its greeting: a daemon whose DNSBL lookups time
        out (dnsbl_timeout 2s) greets after them."""
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.logf.close()
                raise DaemonExited(rc, self.log())
            try:
                with Client(self.host, self.port, timeout=4) as c:
                    c.line()
                    c.send(b"QUIT\r\n")
                    c.closed(2)
                return
            except (OSError, ServerClosed, AssertionError):
                time.sleep(0.02)
        self.kill()
        raise AssertionError("picomail not ready on %s:%d within %.0fs\n%s" % (
            self.host, self.port, timeout, self.log()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        os.kill(self.proc.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        """Sends sig and waits; returns the exit status (None if it had to
        be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(scaled(timeout))
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return self.proc.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if getattr(self, "logf", None):
            self.logf.close()

    def events(self, event=None, **match):
        """The daemon's event lines so far, parsed (log_events)."""
        return log_events(self.log(1 << 24), event, **match)

    def log(self, tail=4000):
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except OSError:
            return ""
        return data[-tail:].decode("latin-1")

    def vm(self, field="VmRSS"):
        """A field of /proc/PID/status, in KiB."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError("no %s in /proc/%d/status" % (field, self.proc.pid))

    def run(self, *args, timeout=10):
        return subprocess.run([self.binary] + list(args), capture_output=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def status(self):
        p = self.run("status", "-C", self.conf_path)
        assert p.returncode == 0, "picomail status: %d %s" % (p.returncode, p.stderr)
        out = {}
        for line in p.stdout.decode().splitlines():
            k, sep, v = line.partition(":")
            assert sep, "status line is not 'key: value': %r" % line
            out[k.strip()] = v.strip()
        return out

    # clients ---------------------------------------------------------------

    def connect(self, timeout=5.0, host=None):
        return Client(host or self.host, self.port, timeout)

    def session(self, helo="EHLO client.lan", host=None):
        """A connection past the greeting and EHLO."""
        c = self.connect(host=host)
        assert_reply(c.reply(), "220", "greeting")
        if helo:
            c.expect(helo, "250")
        return c

    def maildir(self, user):
        return Maildir(os.path.join(self.mail_root, user))

    def all_files(self):
        """Every file under the Maildir root (any user, any subdirectory)."""
        out = []
        for d, _, names in os.walk(self.mail_root):
            out.extend(os.path.join(d, n) for n in names)
        return out
