"""IDLE (RFC 2177): what other sessions do to the folder (an SMTP delivery, another
IMAP session's flags and expunges, a POP3 deletion) pushed to the idling
client within a second, through inotify in the daemon's poll loop; DONE;
anything else while idling; the idle timeout; IDLE before a folder is
selected."""

import time

import pytest

from imaptest import Imap, deliver, imap_daemon, wait_event
from picotest import free_port, numbered
from pop3test import Pop

PUSH = 1.0     # seconds: the promise


@pytest.fixture
def d(make_daemon):
    port = free_port()
    d = imap_daemon(make_daemon, extra=["listen pop3 127.0.0.1:%d" % port])
    d.pop3_port = port
    return d


def imap(d, select=None):
    c = Imap(d.imap_port)
    c.login()
    if select:
        c.ok("SELECT %s" % select)
    return c


def idle(c):
    t = c.tag()
    c.send("%s IDLE\r\n" % t)
    assert c.response() == b"+ idling"
    return t


def pushed(c, want, seconds=PUSH):
    """The untagged responses that arrive within seconds, until want is in
    them; fails when it is not."""
    got = []
    deadline = time.monotonic() + seconds
    while want not in got:
        left = deadline - time.monotonic()
        assert left > 0, "not pushed within %.1f s: %r (got %r)" % (seconds, want, got)
        try:
            got.append(c.response(timeout=left))
        except AssertionError:
            raise AssertionError("not pushed within %.1f s: %r (got %r)" % (seconds, want, got))
    return got


def done(c, t):
    c.send(b"DONE\r\n")
    u, r = c.until(t)
    assert r == "OK IDLE terminated", (u, r)
    return u


def test_new_mail_flags_and_expunges_are_pushed(d):
    deliver(d, "alice", numbered(1))
    c = imap(d, "INBOX")
    other = imap(d, "INBOX")
    try:
        t = idle(c)
        t0 = time.monotonic()
        deliver(d, "alice", numbered(2))
        pushed(c, b"* 2 EXISTS")
        assert time.monotonic() - t0 < PUSH + 0.5
        other.ok("STORE 1 +FLAGS (\\Flagged)")
        pushed(c, b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))")
        other.ok("STORE 2 +FLAGS (\\Deleted)")
        other.ok("EXPUNGE")
        pushed(c, b"* 2 EXPUNGE")
        done(c, t)
        c.ok("NOOP")
        got = c.fetch("FETCH 1:* (UID)")
        assert [int(v[b"UID"]) for v in got.values()] == [1]
    finally:
        c.close()
        other.close()


def test_pop3_deletion_is_pushed(d):
    for i in (1, 2):
        deliver(d, "alice", numbered(i))
    c = imap(d, "INBOX")
    try:
        t = idle(c)
        with Pop(d.pop3_port) as p:
            p.login()
            p.ok("DELE 1")
            p.quit()
        pushed(c, b"* 1 EXPUNGE")
        done(c, t)
    finally:
        c.close()


def test_idle_in_another_folder_and_unselected(d):
    c = imap(d, "Archive")
    try:
        t = idle(c)
        deliver(d, "alice", numbered(1))        # INBOX: nothing to say here
        assert c.quiet(0.5)
        with imap(d, "INBOX") as o:
            o.ok("COPY 1 Archive")
        pushed(c, b"* 1 EXISTS")
        done(c, t)
        c.ok("UNSELECT")
        t = idle(c)                               # allowed: nothing to report
        assert c.quiet(0.3)
        done(c, t)
    finally:
        c.close()


def test_anything_but_done_ends_idle_with_bad(d):
    c = imap(d, "INBOX")
    try:
        t = idle(c)
        c.send(b"a9 NOOP\r\n")
        u, r = c.until(t)
        assert r.startswith("BAD"), r
        c.ok("NOOP")                              # the session goes on
    finally:
        c.close()


def test_idle_times_out(make_daemon):
    d = imap_daemon(make_daemon, timeout="2s")
    c = imap(d, "INBOX")
    try:
        idle(c)
        t0 = time.monotonic()
        assert c.response(timeout=5) == b"* BYE Idle timeout, closing"
        assert 1.5 < time.monotonic() - t0 < 4
        assert c.closed(3)
    finally:
        c.close()
    [end] = wait_event(d, "disconnect", proto="imap")
    assert end["end"] == "timeout", end
