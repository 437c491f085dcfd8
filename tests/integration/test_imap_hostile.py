"""Hostile IMAP clients (issue 16, tests/README.md's hostile table): huge
literals and lines, pipelined floods, slow-loris, the error limit, NUL,
path-like user and folder names, search bombs over a big folder, commands
while idling, clients that never read, full pools.  Each is answered
(BAD, NO, BYE) within bounds, memory stays fixed, and the session, or at
least the daemon and the other clients, go on; while the heavy ones run a
probe times another client's round trips."""

import os
import socket
import threading
import time

import pytest

from hostile import Probe
from imaptest import Imap, deliver, files, imap_daemon, wait_event
from picotest import TEST_BIN, numbered, skip_if_sanitized
from pop3test import PASSWORD


@pytest.fixture
def d(make_daemon):
    return imap_daemon(make_daemon, extra=["greet_pause 0s"])


def imap(d, login=True, **kw):
    c = Imap(d.imap_port, **kw)
    if login:
        c.login()
    return c


def sender(c, data):
    th = threading.Thread(target=lambda: c.sock.sendall(data), daemon=True)
    th.start()
    return th


@skip_if_sanitized("peak RSS")
def test_huge_literals_and_lines_in_fixed_memory(d):
    with imap(d, login=False) as c:
        # a synchronizing literal past the limit: BAD, no "+", nothing read
        c.send(b"a1 LOGIN {4294967295}\r\n")
        assert c.response() == b"a1 BAD Literal too large"
        # LITERAL+ of 20 MB before login: read through and dropped
        before = d.vm("VmHWM")
        th = sender(c, b"a2 LOGIN {20971520+}\r\n" + b"x" * (20 << 20) + b" y\r\n")
        assert c.response(timeout=30) == b"a2 BAD Literal too large"
        th.join(10)
        # a 10 MB line
        th = sender(c, b"a3 NOOP " + b"x" * (10 << 20) + b"\r\n")
        assert c.response(timeout=30) == b"a3 BAD Command line too long"
        th.join(10)
        assert c.quiet(0.3)
        assert d.vm("VmHWM") - before < 512, "peak RSS grew by %d KiB" % (
            d.vm("VmHWM") - before)
        c.login()
        c.ok("SELECT INBOX")


def test_pipelined_flood_answered_in_order(d):
    deliver(d, "alice", numbered(1))
    n = 5000
    cycle = [b"NOOP", b"FETCH 1 (UID FLAGS)", b"STATUS INBOX (MESSAGES)", b"UID SEARCH ALL"]
    with imap(d) as c:
        c.ok("SELECT INBOX")
        stream = b"".join(b"p%d %s\r\n" % (i, cycle[i % 4]) for i in range(n))
        th = sender(c, stream)
        for i in range(n):
            u, r = c.until("p%d" % i, timeout=20)
            assert r.startswith("OK"), (i, r)
        th.join(5)
        assert c.quiet(0.3)


def test_error_limit_nul_and_bad_bytes(d):
    with imap(d) as c:
        for line in (b"a1 NOOP\0", b"a2 SELECT \"IN\0BOX\"", b"a3 \x1b[31mFETCH", b"a4 LOGIN \xff\xfe"):
            c.send(line + b"\r\n")
            assert c.response().split(b" ")[1] == b"BAD", line
        c.ok("NOOP")
        for i in range(15):
            c.bad("BOGUS%d" % i)
        c.send(b"z BOGUS\r\n")                       # the 20th
        assert c.response() == b"z BAD Unknown command"
        assert c.response() == b"* BYE Too many errors, closing"
        assert c.closed(5)
    assert wait_event(d, "disconnect", proto="imap", end="errors")


def test_slow_loris_is_cut_and_slow_but_whole_commands_are_not(make_daemon):
    d = imap_daemon(make_daemon, timeout="2s")
    with imap(d) as c:
        t0 = time.monotonic()
        try:
            for ch in b"a1 NOOP and then some more":
                c.send(bytes([ch]))
                time.sleep(0.25)
        except OSError:
            pass
        assert c.response(timeout=5) == b"* BYE Idle timeout, closing"
        assert time.monotonic() - t0 < 5
    with imap(d) as c:
        for i in range(4):
            time.sleep(1.2)
            c.ok("NOOP")


def test_path_like_names(d):
    root = os.path.join(d.mail_root)
    with imap(d, login=False) as c:
        for user in ("../alice", "alice/../bob", "/etc", ".alice", "ALICE/x"):
            c.no('LOGIN "%s" "%s"' % (user, PASSWORD), "AUTHENTICATIONFAILED")
    assert sorted(os.listdir(root)) == [], os.listdir(root)
    with imap(d) as c:
        for name in ("../bob", "../../etc", "a/b", "/x", "..", ".", "a..b", ".x", "*", "%"):
            c.no('CREATE "%s"' % name, "CANNOT")
            c.no('SELECT "%s"' % name, "NONEXISTENT")
            c.no('DELETE "%s"' % name)
            c.no('RENAME Sent "%s"' % name)
            u, r = c.cmd('APPEND "%s" {1+}\r\nx' % name)
            assert r.startswith("NO"), r
    assert sorted(os.listdir(root)) == ["alice"]
    assert sorted(n for n in os.listdir(os.path.join(root, "alice")) if n.startswith(".")) == \
        [".Archive", ".Drafts", ".Junk", ".Sent", ".Trash"]


def test_search_bomb_does_not_stall_the_others(make_daemon):
    d = imap_daemon(make_daemon, extra=["greet_pause 0s"], max_message_size="2M")
    big = numbered(1, 200000)
    cur = os.path.join(d.mail_root, "alice", "cur")
    os.makedirs(cur)
    for sub in ("new", "tmp"):
        os.makedirs(os.path.join(d.mail_root, "alice", sub))
    for i in range(150):                            # 30 MB to read per search
        with open(os.path.join(cur, "%d.M%dP1.bomb:2," % (1700000000 + i, i)), "wb") as f:
            f.write(big.replace(b"X-Seq: 1", b"X-Seq: %d" % i))
    with imap(d) as c:
        c.ok("SELECT INBOX")
        probe = Probe("127.0.0.1", d.port)
        probe.start()
        keys = " ".join("OR TEXT zzz%d BODY yyy%d" % (k, k) for k in range(8))
        u, r = c.cmd("SEARCH " + keys, timeout=120)
        probe.stop()
        assert r.startswith("OK") and u == [b"* SEARCH"], (u, r)
    probe.check(1.0, "a search through 30 MB with 16 strings")


def test_commands_while_idle(d):
    with imap(d) as c:
        c.ok("SELECT INBOX")
        t = c.tag()
        c.send("%s IDLE\r\n" % t)
        assert c.response() == b"+ idling"
        c.send(b"x1 FETCH 1:* FLAGS\r\nDONE\r\n")
        u, r = c.until(t)
        assert r.startswith("BAD"), r                  # IDLE is over: the next is a command
        assert c.response() == b"DONE BAD Unknown command"
        c.ok("NOOP")


def test_client_that_never_reads(make_daemon):
    d = imap_daemon(make_daemon, timeout="3s", max_message_size="4M")
    deliver(d, "alice", numbered(1, 3000000))
    with imap(d) as c:
        c.ok("SELECT INBOX")
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.send(b"".join(b"f%d FETCH 1 BODY.PEEK[]\r\n" % i for i in range(20)))
        probe = Probe("127.0.0.1", d.port)
        probe.start()
        time.sleep(1)
        probe.stop()
        probe.check(1.0, "a client not reading 60 MB of answers")
        assert wait_event(d, "disconnect", seconds=15, proto="imap", end="timeout")


def test_full_pools(make_daemon):
    d = imap_daemon(make_daemon, extra=["imap_sessions 1", "greet_pause 0s"], max_connections="3")
    a = imap(d)
    try:
        with imap(d, login=False) as b:
            b.no('LOGIN bob "%s"' % PASSWORD, "UNAVAILABLE")
            b.ok("CAPABILITY")                      # the session goes on
        a.ok("SELECT INBOX")
        held = [socket.create_connection(("127.0.0.1", d.imap_port)) for _ in range(2)]
        try:
            with socket.create_connection(("127.0.0.1", d.imap_port), timeout=5) as s:
                assert s.makefile("rb").readline() == \
                    b"* BYE [UNAVAILABLE] Too busy, try again later\r\n"
        finally:
            for s in held:
                s.close()
        a.ok("NOOP")
    finally:
        a.close()
    assert d.status()["pool.imap"] in ("0/1", "1/1")
