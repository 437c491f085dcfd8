"""Helpers for the IMAP integration tests (test_imap*.py).

imap_daemon() starts a picomail with an SMTP listener first (Daemon.wait_ready
probes it) and an IMAP listener on another loopback port.  Imap is a raw IMAP
connection that keeps what the server sent as bytes: each response is one
item of a list, literals inline, so a test compares octets.  The Maildir
helpers read a user's folders as the server keeps them: `<base>,U=<uid>:2,<flags>`
in cur/, a `picomail-uids` file per folder.

Every wait is bounded; every process is started and stopped by its PID by the
fixtures in conftest.py.
"""

import imaplib
import os
import re
import socket

from picotest import Client, free_port, shorten
from pop3test import PASSWORD, deliver, deliver_numbered  # noqa: F401  (re-exported)

UID_RE = re.compile(r",U=(\d+)")
FLAG_LETTERS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen",
                "T": "\\Deleted"}


def imap_daemon(make_daemon, plaintext=True, timeout=None, extra=(), start=True, tls=None,
                binary=None, env=None, **conf):
    """A daemon with `listen imap 127.0.0.1:<port> [tls]`; d.imap_port is the port."""
    port = free_port()
    lines = ["listen imap 127.0.0.1:%d%s" % (port, " " + tls if tls else "")]
    if plaintext is not None:
        lines.append("plaintext_auth %s" % ("yes" if plaintext else "no"))
    if timeout is not None:
        lines.append("imap_timeout %s" % timeout)
    kw = {}
    if binary is not None:
        kw["binary"] = binary
    d = make_daemon(start=False, env=env, extra=lines + list(extra), **kw, **conf)
    d.imap_port = port
    if start:
        d.start()
    return d


def imaplib_session(d, user="alice", select=None):
    m = imaplib.IMAP4("127.0.0.1", d.imap_port, timeout=10)
    m.login(user, PASSWORD)
    if select is not None:
        typ, data = m.select(select)
        assert typ == "OK", (typ, data)
    return m


# --------------------------------------------------------------------------
# The Maildir as IMAP keeps it


def folder_dir(d, user="alice", folder="INBOX"):
    base = os.path.join(d.mail_root, user)
    return base if folder.upper() == "INBOX" else os.path.join(base, "." + folder)


def files(d, user="alice", folder="INBOX", sub="cur"):
    p = os.path.join(folder_dir(d, user, folder), sub)
    return sorted(n for n in os.listdir(p) if not n.startswith(".")) if os.path.isdir(p) else []


def uid_of(name):
    m = UID_RE.search(name.split(":")[0])
    return int(m.group(1)) if m else None


def flags_of(name):
    """The IMAP flags of a cur/ name's info."""
    info = name.split(":2,", 1)[1] if ":2," in name else ""
    return sorted(FLAG_LETTERS[c] for c in info if c in FLAG_LETTERS)


def by_uid(d, user="alice", folder="INBOX"):
    """{uid: (name, data)} of the folder's cur/."""
    out = {}
    for n in files(d, user, folder):
        u = uid_of(n)
        assert u is not None, "no UID in %r" % n
        assert u not in out, "UID %d twice: %r, %r" % (u, out[u][0], n)
        with open(os.path.join(folder_dir(d, user, folder), "cur", n), "rb") as f:
            out[u] = (n, f.read())
    return out


def uids_file(d, user="alice", folder="INBOX"):
    """(validity, next) of the folder's picomail-uids."""
    with open(os.path.join(folder_dir(d, user, folder), "picomail-uids")) as f:
        text = f.read()
    m = re.fullmatch(r"picomail-uids 1 (\d+) (\d+)\n", text)
    assert m, "picomail-uids: %r" % text
    return int(m.group(1)), int(m.group(2))


def wire(data):
    """A stored file (LF) as IMAP sends it (CRLF)."""
    assert b"\r" not in data
    return data.replace(b"\n", b"\r\n")


# --------------------------------------------------------------------------
# Raw IMAP client


class ImapError(AssertionError):
    pass


class Imap(Client):
    """A raw IMAP connection.  cmd() sends a tagged command and returns
    (untagged, tagged): untagged is the list of responses (bytes, without
    CRLF, literals inline with their {n} headers), tagged the final line as
    str without the tag."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0, greet=True, source=None):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                  socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.buf = bytearray()
        self.timeout = timeout
        self.n = 0
        self.greeting = self.response().decode("latin-1") if greet else None

    def raw_line(self):
        while b"\n" not in self.buf:
            if len(self.buf) > 1 << 20:
                raise AssertionError("line longer than 1 MiB")
            self._fill()
        i = self.buf.index(b"\n")
        raw = bytes(self.buf[:i + 1])
        del self.buf[:i + 1]
        assert raw.endswith(b"\r\n"), "line not ended by CRLF: %r" % shorten(raw)
        return raw

    def take(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def response(self, timeout=None):
        """One whole response: a line and the literals it announces."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            out = b""
            while True:
                line = self.raw_line()[:-2]
                out += line
                m = re.search(rb"\{(\d+)\}$", line)
                if not m:
                    return out
                out += b"\r\n" + self.take(int(m.group(1)))
        finally:
            if timeout is not None:
                self.sock.settimeout(self.timeout)

    def tag(self):
        self.n += 1
        return "a%d" % self.n

    def cmd(self, line, timeout=None):
        if isinstance(line, str):
            line = line.encode("latin-1")
        t = self.tag().encode()
        self.send(t + b" " + line + b"\r\n")
        return self.until(t, timeout)

    def until(self, t, timeout=None):
        if isinstance(t, str):
            t = t.encode()
        untagged = []
        while True:
            r = self.response(timeout)
            if r.startswith(t + b" "):
                return untagged, r[len(t) + 1:].decode("latin-1")
            untagged.append(r)

    def ok(self, line, timeout=None):
        u, r = self.cmd(line, timeout)
        if not r.startswith("OK"):
            raise ImapError("C: %s\nS: %r\n%s\nexpected OK" % (shorten(line), u[-5:], r))
        return u

    def no(self, line, code=None):
        u, r = self.cmd(line)
        if not r.startswith("NO") or (code and not r.startswith("NO [%s]" % code)):
            raise ImapError("C: %s\nS: %s\nexpected NO%s" % (shorten(line), r,
                                                              " [%s]" % code if code else ""))
        return r

    def bad(self, line):
        u, r = self.cmd(line)
        if not r.startswith("BAD"):
            raise ImapError("C: %s\nS: %s\nexpected BAD" % (shorten(line), r))
        return r

    def login(self, user="alice", password=PASSWORD):
        return self.ok('LOGIN %s "%s"' % (user, password))

    def fetch(self, line):
        """{seq: {ITEM: value}} of FETCH responses, values as bytes (literals
        as their content)."""
        out = {}
        for r in self.ok(line):
            m = re.match(rb"\* (\d+) FETCH \((.*)\)$", r, re.S)
            if m:
                out.setdefault(int(m.group(1)), {}).update(parse_items(m.group(2)))
        return out


def parse_items(s):
    """'UID 3 FLAGS (\\Seen) BODY[] {5}\\r\\nhello' -> {b'UID': b'3', ...}:
    a value is an atom, a parenthesised list (as bytes), a quoted string
    (unquoted) or a literal (its content)."""
    out = {}
    i = 0
    while i < len(s):
        while i < len(s) and s[i:i + 1] == b" ":
            i += 1
        m = re.compile(rb"[A-Z0-9.]+(?:\[[^\]]*\])?(?:<\d+>)?").match(s, i)
        assert m, "no item name at %r" % s[i:i + 40]
        name = m.group(0)
        i = m.end() + 1
        v, i = value(s, i)
        out[name] = v
    return out


def value(s, i):
    if s[i:i + 1] == b"(":
        depth, j = 0, i
        while True:
            c = s[j:j + 1]
            if c == b'"':
                j = skip_quoted(s, j)
                continue
            if c == b"{":
                n = int(s[j + 1:s.index(b"}", j)])
                j = s.index(b"}", j) + 3 + n
                continue
            if c == b"(":
                depth += 1
            elif c == b")":
                depth -= 1
                if depth == 0:
                    return s[i:j + 1], j + 1
            j += 1
    if s[i:i + 1] == b'"':
        j = skip_quoted(s, i)
        return re.sub(rb'\\(.)', rb'\1', s[i + 1:j - 1]), j
    if s[i:i + 1] == b"{":
        k = s.index(b"}", i)
        n = int(s[i + 1:k])
        return s[k + 3:k + 3 + n], k + 3 + n
    m = re.compile(rb"[^ )]+").match(s, i)
    return m.group(0), m.end()


def skip_quoted(s, j):
    j += 1
    while s[j:j + 1] != b'"':
        j += 2 if s[j:j + 1] == b"\\" else 1
    return j + 1


def sexp(s, i=0):
    """An IMAP value parsed: NIL -> None, a number -> int, a string (quoted
    or literal, the spelling does not matter) -> bytes, a list -> list.
    Returns (value, next index)."""
    while s[i:i + 1] == b" ":
        i += 1
    c = s[i:i + 1]
    if c == b"(":
        out, i = [], i + 1
        while True:
            while s[i:i + 1] == b" ":
                i += 1
            if s[i:i + 1] == b")":
                return out, i + 1
            v, i = sexp(s, i)
            out.append(v)
    if c == b'"':
        j = skip_quoted(s, i)
        return re.sub(rb'\\(.)', rb'\1', s[i + 1:j - 1]), j
    if c == b"{":
        k = s.index(b"}", i)
        n = int(s[i + 1:k])
        return s[k + 3:k + 3 + n], k + 3 + n
    m = re.compile(rb"[^ ()]+").match(s, i)
    w = m.group(0)
    return (None if w == b"NIL" else int(w) if w.isdigit() else w), m.end()


def fetch_values(resp):
    """{ITEM (upper case): parsed value} of one '* n FETCH (...)' response."""
    m = re.match(rb"\* \d+ FETCH \((.*)\)$", resp, re.S)
    assert m, resp[:200]
    s, i, out = m.group(1), 0, {}
    while i < len(s):
        while s[i:i + 1] == b" ":
            i += 1
        n = re.compile(rb"[A-Za-z0-9.]+(?:\[[^\]]*\])?(?:<\d+>)?").match(s, i)
        name = n.group(0).upper()
        v, i = sexp(s, n.end() + 1)
        out[name] = v
    return out


def wait_event(d, event, seconds=5.0, **match):
    """The daemon's event lines (picotest.log_events) once at least one
    matches; fails after seconds."""
    import time
    deadline = time.monotonic() + seconds
    while True:
        ev = d.events(event, **match)
        if ev or time.monotonic() > deadline:
            assert ev, "no %s %r in the log within %.0f s" % (event, match, seconds)
            return ev
        time.sleep(0.02)
