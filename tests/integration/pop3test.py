"""Helpers for the POP3 integration tests (test_pop3*.py).

pop3_daemon() starts a picomail with an SMTP listener first (Daemon.wait_ready
probes it) and a POP3 listener on another loopback port.  Pop is a raw POP3
connection that keeps the bytes as the server sent them (CRLF, dot-stuffing),
for the checks poplib cannot make.  mailbox() reads a user's Maildir as the
POP3 session should see it: the files of new/ and cur/ in delivery order,
with the size RETR sends and the UIDL taken from the file name.

Every wait is bounded; every process is started and stopped by its PID by the
fixtures in conftest.py.
"""

import base64
import os
import re
import socket
import time

from picotest import Client, free_port, numbered, seq_of, shorten, smtp_send

PASSWORD = "secret"      # conftest's password_hash is the hash of this

# <unique>,S=<n>,W=<n> as the SMTP side names it in new/; in cur/ the same
# name with the Maildir info ":2,<flags>".
NAME_RE = re.compile(r"^(?P<unique>[^/:,]+),S=(?P<S>\d+),W=(?P<W>\d+)(?P<info>:2,[A-Za-z]*)?$")


def pop3_daemon(make_daemon, plaintext=True, timeout=None, extra=(), start=True, **conf):
    """A daemon with `listen pop3 127.0.0.1:<port>`; d.pop3_port is the port."""
    port = free_port()
    lines = ["listen pop3 127.0.0.1:%d" % port]
    if plaintext is not None:
        lines.append("plaintext_auth %s" % ("yes" if plaintext else "no"))
    if timeout is not None:
        lines.append("pop3_timeout %s" % timeout)
    d = make_daemon(start=False, extra=lines + list(extra), **conf)
    d.pop3_port = port
    if start:
        d.start()
    return d


def crlf(data):
    """A Maildir file (LF line ends) as POP3 sends it (CRLF line ends)."""
    assert b"\r" not in data, "a stored file holds a CR"
    return data.replace(b"\n", b"\r\n")


def dot_stuff(data):
    """RFC 1939 3: a line starting with '.' goes out with one more '.'."""
    return re.sub(rb"(?m)^\.", b"..", data)


def top_of(wire, k):
    """What TOP n k sends (before stuffing) for a message sent as wire
    (CRLF): the header, the blank line, then k lines of the body."""
    i = wire.find(b"\r\n\r\n")
    assert i >= 0, "message without a blank line after the header"
    head, body = wire[:i + 4], wire[i + 4:]
    lines = body.splitlines(keepends=True)
    return head + b"".join(lines[:k])


# --------------------------------------------------------------------------
# The Maildir as POP3 sees it


class Msg:
    """One message file of a Maildir (new/ or cur/)."""

    def __init__(self, path):
        self.path = path
        self.sub = os.path.basename(os.path.dirname(path))
        self.name = os.path.basename(path)
        m = NAME_RE.match(self.name)
        assert m, "unexpected file name in %s/: %r" % (self.sub, self.name)
        self.unique = m.group("unique")
        self.info = m.group("info")
        self.base = self.name if self.info is None else self.name[:-len(self.info)]
        with open(path, "rb") as f:
            self.data = f.read()
        self.size = len(self.data) + self.data.count(b"\n")
        assert int(m.group("W")) == self.size, "%s: W=%s, CRLF size %d" % (
            self.name, m.group("W"), self.size)
        self.wire = crlf(self.data)          # what RETR sends, unstuffed
        self.mtime_ns = os.stat(path).st_mtime_ns

    def __repr__(self):
        return "<%s/%s>" % (self.sub, self.name)


def mailbox(d, user, sub=("new", "cur")):
    """The messages of user's Maildir, in delivery order (by X-Seq header
    when every message has one, else by name)."""
    out = []
    for s in sub:
        p = os.path.join(d.mail_root, user, s)
        if os.path.isdir(p):
            out.extend(Msg(os.path.join(p, n)) for n in os.listdir(p) if not n.startswith("."))
    seqs = [seq_of(m.data) for m in out]
    if out and None not in seqs:
        out.sort(key=lambda m: seq_of(m.data))
    else:
        out.sort(key=lambda m: delivery_order(m.name))
    return out


def delivery_order(name):
    """The server's order (src/mailbox.c by_time): seconds, then the
    microseconds after ".M" as numbers (not zero-padded), then the name."""
    m = re.match(r"(\d+)\.M(\d+)", name)
    return (int(m.group(1)), int(m.group(2)), name) if m else (0, 0, name)


def names(d, user, sub):
    p = os.path.join(d.mail_root, user, sub)
    return sorted(os.listdir(p)) if os.path.isdir(p) else []


def deliver(d, user, data):
    code, text = smtp_send(d.port, ["%s@lan" % user], data)
    assert code == 250, "SMTP delivery to %s refused: %d %s" % (user, code, text)


def deliver_numbered(d, user, seqs, size=0, body=None):
    """Delivers numbered messages (X-Seq i) one after the other: the
    delivery order is the order of seqs.  Returns {seq: data sent}."""
    sent = {}
    for i in seqs:
        data = numbered(i, size) if body is None else body(i)
        deliver(d, user, data)
        sent[i] = data
    return sent


# --------------------------------------------------------------------------
# Raw POP3 client


class PopError(AssertionError):
    pass


class Pop(Client):
    """A raw POP3 connection: status lines as str, multi-line bodies as the
    bytes on the wire (still dot-stuffed, without the final '.')."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0, greet=True, source=None):
        """source: the local address to connect from (127.0.0.2 is another
        client for the server's per-address limits)."""
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                  socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.buf = bytearray()
        self.timeout = timeout
        self.greeting = self.status() if greet else None

    def raw_line(self):
        """One line with its CRLF, as bytes."""
        while b"\n" not in self.buf:
            if len(self.buf) > self.MAX_LINE:
                raise AssertionError("line longer than %d" % self.MAX_LINE)
            self._fill()
        i = self.buf.index(b"\n")
        raw = bytes(self.buf[:i + 1])
        del self.buf[:i + 1]
        assert raw.endswith(b"\r\n"), "line not ended by CRLF: %r" % shorten(raw)
        return raw

    def status(self, timeout=None):
        """A status line: '+OK ...', '-ERR ...' or a '+ ' continuation."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            l = self.line()
        finally:
            if timeout is not None:
                self.sock.settimeout(self.timeout)
        assert l.startswith(("+OK", "-ERR", "+ ")) or l == "+", "not a POP3 status line: %r" % l
        return l

    def cmd(self, line, timeout=None):
        if isinstance(line, str):
            line = line.encode("latin-1")
        self.send(line + b"\r\n")
        return self.status(timeout)

    def ok(self, line):
        r = self.cmd(line)
        if not r.startswith("+OK"):
            raise PopError("C: %s\nS: %s\nexpected +OK" % (shorten(line), r))
        return r

    def err(self, line, prefix="-ERR"):
        r = self.cmd(line)
        if not r.startswith(prefix):
            raise PopError("C: %s\nS: %s\nexpected %s" % (shorten(line), r, prefix))
        return r

    def body(self):
        """The lines after a +OK up to the terminating '.', as wire bytes
        (CRLF, still dot-stuffed)."""
        out = []
        while True:
            raw = self.raw_line()
            if raw == b".\r\n":
                return b"".join(out)
            out.append(raw)

    def multi(self, line):
        """A command with a multi-line answer: (status, wire body)."""
        r = self.ok(line)
        return r, self.body()

    def lines(self, line):
        r, body = self.multi(line)
        return [l.decode("latin-1") for l in body.split(b"\r\n")[:-1]]

    def login(self, user="alice", password=PASSWORD):
        self.ok("USER %s" % user)
        return self.ok("PASS %s" % password)

    def stat(self):
        r = self.ok("STAT")
        m = re.fullmatch(r"\+OK (\d+) (\d+)", r)
        assert m, "STAT reply is not '+OK nn mm' (RFC 1939 5): %r" % r
        return int(m.group(1)), int(m.group(2))

    def list(self):
        out = {}
        for l in self.lines("LIST"):
            m = re.fullmatch(r"(\d+) (\d+)", l)
            assert m, "LIST line is not 'n size': %r" % l
            out[int(m.group(1))] = int(m.group(2))
        return out

    def uidl(self):
        out = {}
        for l in self.lines("UIDL"):
            m = re.fullmatch(r"(\d+) ([\x21-\x7e]{1,70})", l)
            assert m, "UIDL line is not 'n uid' (RFC 1939 7: 1-70 chars 0x21-0x7E): %r" % l
            out[int(m.group(1))] = m.group(2)
        return out

    def retr(self, n):
        """RETR n: the message with dot-stuffing undone (the wire is checked
        to be the stuffed form of it)."""
        r, wire = self.multi("RETR %d" % n)
        return unstuff(wire)

    def quit(self):
        r = self.ok("QUIT")
        assert self.closed(5), "no close after QUIT"
        return r


def unstuff(wire):
    out = re.sub(rb"(?m)^\.", b"", wire)
    assert dot_stuff(out) == wire, "a line starting with '.' was not dot-stuffed"
    return out


def auth_plain(user, password, authzid=""):
    return base64.b64encode(("%s\0%s\0%s" % (authzid, user, password)).encode()).decode()


def login_retrying(port, user="alice", seconds=3.0):
    """Logs in, retrying while the previous session's lock is still held
    (the server may see a dropped connection a moment later)."""
    deadline = time.monotonic() + seconds
    while True:
        p = Pop(port)
        p.ok("USER %s" % user)
        r = p.cmd("PASS %s" % PASSWORD)
        if r.startswith("+OK"):
            return p
        p.close()
        if not r.startswith("-ERR [IN-USE]") or time.monotonic() > deadline:
            raise PopError("login as %s: %s" % (user, r))
        time.sleep(0.05)
