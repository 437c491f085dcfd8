"""POP3 over Maildirs written by other programs (migrated mail, other
delivery agents): files with CRLF line ends, a mix of LF and CRLF, a last
line without a line end, bare CRs, names with and without ,S=/,W= tags,
placed in new/ and cur/ by the test.

What the server must send (src/msgwire.h): every line with exactly one
CRLF, dot-stuffed; a line ends at LF with any CRs right before it, or at a
CR (or run of CRs) not followed by LF; a last line without a line end gets
one.  The size LIST, STAT and RETR's +OK give is the octets sent, without
the stuffing dots.  wire_of() below is that rule written again in Python,
and every client is checked against it: a raw connection (bytes on the
wire), poplib (sizes, RETR, TOP, UIDL), fetchmail and mpop (the files
they write, byte for byte).
"""

import os
import poplib
import re

import pytest

from picotest import lf
from pop3test import PASSWORD, Pop, deliver, dot_stuff, pop3_daemon, top_of
from test_pop3_clients import (FETCHMAIL_RECEIVED, by_seq, dialogue, fetchmail, mpop, read_dir,
                               strip_fetchmail, strip_mpop)

LINE_END = re.compile(rb"\r*\n|\r+")


def wire_of(data):
    """The message as POP3 sends it, before dot-stuffing."""
    lines = LINE_END.split(data)
    if lines[-1] == b"":
        lines.pop()
    return b"".join(l + b"\r\n" for l in lines)


def head(seq, crlf=True):
    e = b"\r\n" if crlf else b"\n"
    return (b"Return-Path: <migrated@example.org>" + e + b"From: <migrated@example.org>" + e
            + b"Subject: foreign %d" % seq + e + b"X-Seq: %d" % seq + e + e)


def body_lines(n, e):
    return b"".join((b"." if k % 5 == 0 else b"") + b"line %04d of the body" % k + e
                    for k in range(n))


class Foreign:
    """One file placed by the test: where, its name and bytes."""

    def __init__(self, seq, sub, data, tags=None, info=":2,"):
        self.seq = seq
        self.sub = sub
        self.data = data
        self.unique = "17000%05d.M%dP4242.other.host" % (seq, seq)
        self.name = self.unique + (tags or "") + (info if sub == "cur" else "")
        self.wire = wire_of(data)

    def place(self, d, user="alice"):
        path = os.path.join(d.mail_root, user, self.sub, self.name)
        with open(path, "wb") as f:
            f.write(self.data)
        t = 1700000000 + self.seq          # delivery order = seq
        os.utime(path, (t, t))


def foreign_messages():
    crlf = head(1) + body_lines(40, b"\r\n")
    s_only = head(3) + body_lines(12, b"\r\n")
    edited = head(6) + body_lines(30, b"\r\n")
    return [
        # Dovecot with mail_save_crlf: a CRLF file, W= is its own size.
        Foreign(1, "new", crlf, ",S=%d,W=%d" % (len(crlf), len(crlf))),
        # CRLF, no tags, already seen by another reader (cur/).
        Foreign(2, "cur", head(2) + body_lines(25, b"\r\n"), info=":2,S"),
        # CRLF with S= only (maildrop, Courier): the file's size, not what
        # POP3 sends for every file.
        Foreign(3, "new", s_only, ",S=%d" % len(s_only)),
        # LF then CRLF in one file, no tags.
        Foreign(4, "new", head(4, crlf=False) + body_lines(10, b"\n") + body_lines(10, b"\r\n")),
        # A last line without a line end, a bare CR, CR CR LF, dots.
        Foreign(5, "cur", head(5) + b".dot\r\nbare\rCR\r.after a bare CR\r\r\n"
                b"doubled CR\r\r\n\r\nlast line, no end"),
        # Named by picomail as an LF file 30 octets shorter, then rewritten
        # as CRLF: S= no longer matches the file, so W= is not believed.
        Foreign(6, "new", edited, ",S=%d,W=%d" % (len(lf(edited)) - 30, len(edited) - 30)),
        # A W= no file of this size could send.
        Foreign(7, "cur", head(7) + b"short\r\n", ",W=99999999"),
    ]


@pytest.fixture
def fd(make_daemon):
    """A daemon whose alice has the foreign files, then one message of its
    own (delivered now, so numbered last)."""
    d = pop3_daemon(make_daemon)
    deliver(d, "alice", b"Subject: own\r\nX-Seq: 9\r\n\r\n.own message\r\n")
    new = os.path.join(d.mail_root, "alice", "new")
    [own] = os.listdir(new)
    with open(os.path.join(new, own), "rb") as f:
        own_msg = Foreign(9, "new", f.read())
    own_msg.unique = own.split(",")[0]
    d.expected = foreign_messages()
    for m in d.expected:
        m.place(d)
    d.expected.append(own_msg)
    return d


def test_raw_wire_and_sizes(fd):
    want = fd.expected
    with Pop(fd.pop3_port) as c:
        c.login()
        assert c.stat() == (len(want), sum(len(m.wire) for m in want))
        assert c.list() == {i: len(m.wire) for i, m in enumerate(want, 1)}
        assert c.uidl() == {i: m.unique for i, m in enumerate(want, 1)}
        for i, m in enumerate(want, 1):
            r, wire = c.multi("RETR %d" % i)
            assert r == "+OK %d octets" % len(m.wire), (m.seq, r)
            assert wire == dot_stuff(m.wire), "message %d:\ngot  %r\nwant %r" % (
                m.seq, wire[-300:], dot_stuff(m.wire)[-300:])
            assert re.search(rb"\r(?!\n)|(?<!\r)\n", wire) is None, m.seq
        c.quit()


def test_poplib_list_retr_top_uidl(fd):
    want = fd.expected
    p = poplib.POP3("127.0.0.1", fd.pop3_port, timeout=5)
    try:
        p.user("alice")
        p.pass_(PASSWORD)
        assert p.stat() == (len(want), sum(len(m.wire) for m in want))
        resp, listing, _ = p.list()
        assert [l.decode() for l in listing] == \
            ["%d %d" % (i, len(m.wire)) for i, m in enumerate(want, 1)]
        resp, uidls, _ = p.uidl()
        assert [l.decode() for l in uidls] == \
            ["%d %s" % (i, m.unique) for i, m in enumerate(want, 1)]
        for i, m in enumerate(want, 1):
            resp, lines, octets = p.retr(i)
            assert octets == len(m.wire), (m.seq, octets, len(m.wire))
            assert b"".join(l + b"\r\n" for l in lines) == m.wire, m.seq
            for k in (0, 1, 3):
                resp, lines, _ = p.top(i, k)
                assert b"".join(l + b"\r\n" for l in lines) == top_of(m.wire, k), (m.seq, k)
        p.quit()
    finally:
        p.close()


def strip_fetchmail_any(data):
    """fetchmail's Received: goes after a Return-Path: followed by a
    Received: (picomail's own files), else first."""
    m = FETCHMAIL_RECEIVED.match(data)
    if m:
        return data[m.end():]
    return strip_fetchmail(data)


def test_fetchmail(fd, workdir):
    want = fd.expected
    code, log, out = fetchmail(fd, workdir, "alice")
    assert code == 0, "fetchmail exit %d\n%s" % (code, dialogue(log))
    got = by_seq(read_dir(out))
    assert sorted(got) == [m.seq for m in want], sorted(got)
    for m in want:
        assert strip_fetchmail_any(got[m.seq]) == lf(m.wire), "message %d:\n%r" % (
            m.seq, got[m.seq][-300:])
    assert "not the expected length" not in log, dialogue(log)


def test_mpop(fd, workdir):
    want = fd.expected
    code, log, new = mpop(fd, workdir, "alice")
    assert code == 0, "mpop exit %d\n%s" % (code, dialogue(log))
    got = by_seq(read_dir(new))
    assert sorted(got) == [m.seq for m in want], sorted(got)
    for m in want:
        assert strip_mpop(got[m.seq]) == lf(m.wire), "message %d:\n%r" % (m.seq, got[m.seq][-300:])


@pytest.mark.parametrize("data", [b"", b"\r", b"\n", b".", b"\r\r\r", b"x\r\n.\r\n"],
                         ids=["empty", "CR", "LF", "dot", "CRs", "dot line"])
def test_odd_files(make_daemon, data):
    d = pop3_daemon(make_daemon)
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(d.mail_root, "alice", sub), exist_ok=True)
    m = Foreign(1, "cur", data)
    m.place(d)
    with Pop(d.pop3_port) as c:
        c.login()
        assert c.list() == {1: len(m.wire)}
        r, wire = c.multi("RETR 1")
        assert r == "+OK %d octets" % len(m.wire)
        assert wire == dot_stuff(m.wire)
        c.quit()
