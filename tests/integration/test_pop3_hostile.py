"""POP3 under hostile input (issue 8): out-of-range numbers, commands in
the wrong state, over-long and odd bytes, floods, slow clients, and what
follows QUIT.

Each refusal is checked for what a client sees: exactly one "-ERR" line (no
continuation, no second reply, nothing of the argument echoed back), and
the session goes on: the next valid command of the same state works.  The
state tables of test_pop3.py already cover most plain syntax errors; these
add the edges and the abuse.
"""

import os
import threading
import time

import pytest

from hostile import log_lines, scaled
from pop3test import PASSWORD, Pop, auth_plain, deliver_numbered, mailbox, pop3_daemon


@pytest.fixture
def pd(make_daemon):
    d = pop3_daemon(make_daemon, timeout="2s")
    deliver_numbered(d, "alice", [1, 2, 3])
    return d


def one_err(c, line, fragment=None):
    """Sends line; the answer is one -ERR line of at most 512 octets, and
    nothing else follows."""
    r = c.cmd(line, timeout=10)
    assert r.startswith("-ERR"), "C: %r\nS: %r\nwant -ERR" % (line[:60], r)
    assert len(r) + 2 <= 512, "a %d-octet -ERR line" % len(r)
    assert c.quiet(0.1), "more than one line after %r: %r" % (line[:60], bytes(c.buf[:200]))
    if fragment:
        assert fragment.lower() in r.lower(), "C: %r\nS: %r\nwant %r" % (line[:60], r, fragment)
    return r


# Numbers in TRANSACTION state (3 messages): each a clean -ERR.
NUMBERS = [
    "RETR 0", "RETR -1", "RETR 4294967297", "RETR 99999999999", "RETR +1", "RETR 1.0",
    "RETR 0x1", "RETR 1e0", "RETR 4", "RETR 999999999",
    "TOP 1 -1", "TOP 1 99999999999", "TOP 1 4294967296", "TOP 1 +1", "TOP 1 1 1", "TOP -1 1",
    "TOP 4294967297 0", "TOP 1", "TOP",
    "LIST 1 2", "LIST 0", "LIST 4294967297", "LIST -0",
    "UIDL 18446744073709551617", "UIDL 1 1",
    "DELE 2147483648", "DELE -2147483648", "DELE 00000000000000000001",
]


@pytest.mark.parametrize("chunk", range(0, len(NUMBERS), 9))
def test_numbers_out_of_range_or_malformed(pd, chunk):
    before = [(m.name, m.data) for m in mailbox(pd, "alice")]
    with Pop(pd.pop3_port) as c:
        c.login()
        for line in NUMBERS[chunk:chunk + 9]:
            one_err(c, line)
            assert c.stat() == (3, sum(m.size for m in mailbox(pd, "alice"))), \
                "STAT after %r" % line
        assert c.retr(2) == mailbox(pd, "alice")[1].wire
        c.quit()
    after = [(m.name.split(":")[0], m.data) for m in mailbox(pd, "alice")]
    assert [n.split(":")[0] for n, _ in before] == [n for n, _ in after], "a message went"


# AUTHORIZATION state: (line, a word the -ERR must hold or None)
AUTHZ = [
    ("RETR 1", "not logged in"), ("TOP 1 0", "not logged in"), ("LIST", "not logged in"),
    ("STAT", "not logged in"), ("DELE 1", "not logged in"), ("UIDL", "not logged in"),
    ("PASS %s" % PASSWORD, "USER first"),
    ("USER " + "a" * 10240, "long"),
    ("USER a b", None),
    ("USER " + "a" * 33, None),
    ("AUTH PLAIN !!!!", None), ("AUTH CRAM-MD5", None), ("AUTH PLAIN " + "A" * 600, "long"),
    ("\x00", None), ("USER alice\x00", None),
]


def test_authorization_state_refusals(pd):
    with Pop(pd.pop3_port) as c:
        for line, word in AUTHZ:
            one_err(c, line, word)
            assert c.lines("CAPA"), "CAPA after %r" % line[:40]
        # after all that, a login still works and sees the mailbox whole
        c.login()
        assert c.stat()[0] == 3
        c.quit()


def test_pass_after_a_failed_pass_needs_user_again(pd):
    with Pop(pd.pop3_port) as c:
        c.ok("USER alice")
        r = c.cmd("PASS wrong", timeout=5)
        assert r.startswith("-ERR [AUTH]"), r
        one_err(c, "PASS %s" % PASSWORD, "USER first")
        c.login()
        c.quit()


def test_sasl_exchange_refusals(pd):
    with Pop(pd.pop3_port) as c:
        c.send(b"AUTH PLAIN\r\n")
        assert c.status() == "+ "
        one_err(c, "*", "cancel")
        c.send(b"AUTH PLAIN\r\n")
        assert c.status() == "+ "
        one_err(c, "not base64 at all")
        c.send(b"AUTH PLAIN\r\n")
        assert c.status() == "+ "
        one_err(c, auth_plain("alice", PASSWORD) + "\x00")
        c.ok("AUTH PLAIN " + auth_plain("alice", PASSWORD))
        assert c.stat()[0] == 3
        c.quit()


def tree(root):
    """The directories under root, and the messages' unique names (a login
    by alice moves new/ to cur/ and adds flags: that is no change here)."""
    dirs, uniques = [], []
    for p, ds, fs in os.walk(root):
        dirs.extend(os.path.relpath(os.path.join(p, x), root) for x in ds)
        uniques.extend(f.split(",")[0] for f in fs)
    return sorted(dirs), sorted(uniques)


@pytest.mark.parametrize("user", ["../alice", "alice/../bob", "/etc/passwd", "..", ".",
                                  "alice/", "../../../../tmp/x", "ALICE/../alice",
                                  "al\x1bice", "alice\r", "\xff\xfe"])
def test_user_names_never_become_paths(pd, user):
    """USER with path pieces or control bytes: the login fails like any
    unknown name, nothing is created or opened under the Maildir root, and
    the log shows the name escaped."""
    before = tree(pd.mail_root)
    with Pop(pd.pop3_port) as c:
        c.send(b"USER " + user.encode("latin-1") + b"\r\n")
        r = c.status()
        if r.startswith("+OK"):
            r = c.cmd("PASS %s" % PASSWORD, timeout=5)
        assert r.startswith("-ERR"), "USER %r / PASS: %r" % (user, r)
        c.login()                         # and alice still logs in
        assert c.stat()[0] == 3
        c.quit()
    after = tree(pd.mail_root)
    assert after == before, "the Maildir root changed:\n%r\n%r" % (before, after)
    log = pd.log(1 << 20)
    for raw in ("\x1b", "\r", "\xff"):
        assert raw not in log, "raw %r from USER reached the log" % raw


def test_error_limit_closes(pd):
    """Twenty errors in one session: the server says so and closes."""
    with Pop(pd.pop3_port) as c:
        c.send(b"FROB\r\n" * 100)
        lines = []
        while True:
            try:
                lines.append(c.status(timeout=3))
            except Exception:
                break
        assert all(l.startswith("-ERR") for l in lines), lines
        assert 20 <= len(lines) <= 21, "%d replies to 100 bad commands: %r" % (len(lines),
                                                                             lines[-3:])
        assert "closing" in lines[-1].lower(), lines[-1]
        assert c.closed(2)


def test_ten_megabyte_line(pd):
    """One -ERR for a 10 MB line, read through the fixed buffer; the session
    goes on."""
    with Pop(pd.pop3_port) as c:
        c.login()
        th = threading.Thread(target=lambda: c.sock.sendall(b"NOOP " + b"x" * (10 << 20) +
                                                            b"\r\n"), daemon=True)
        th.start()
        r = c.status(timeout=20)
        th.join(10)
        assert r.startswith("-ERR") and "long" in r.lower(), r
        assert c.quiet(0.3), "more than one reply: %r" % bytes(c.buf[:200])
        assert c.stat()[0] == 3
        c.quit()


def test_pipelined_flood_answered_in_order(pd):
    n = 8000
    cycle = [(b"STAT", "+OK 3 "), (b"LIST 2", "+OK 2 "), (b"UIDL 3", "+OK 3 "),
             (b"NOOP", "+OK")]
    with Pop(pd.pop3_port) as c:
        c.login()
        stream = b"".join(cycle[i % 4][0] + b"\r\n" for i in range(n))
        th = threading.Thread(target=lambda: c.sock.sendall(stream), daemon=True)
        th.start()
        for i in range(n):
            r = c.status()
            assert r.startswith(cycle[i % 4][1]), "reply %d: %r, want %s..." % (
                i + 1, r, cycle[i % 4][1])
        th.join(5)
        assert c.quiet(0.3)
        c.quit()


def test_slow_loris_is_cut_and_the_lock_freed(pd):
    """Logged in, then a command dribbled a byte a second: cut after
    pop3_timeout (2 s) from the start of the line, nothing deleted, and the
    mailbox can be opened again."""
    with Pop(pd.pop3_port) as c:
        c.login()
        c.ok("DELE 1")
        t0 = time.monotonic()
        for b in b"STAT STAT STAT":
            try:
                c.send(bytes([b]))
            except OSError:
                break
            if not c.quiet(1.0):
                break
        took = time.monotonic() - t0
        r = c.status(timeout=2)
        assert r.startswith("-ERR") and "timeout" in r.lower(), r
        assert 1.5 <= took <= 2 + scaled(1.5), "cut after %.1f s, pop3_timeout 2 s" % took
        assert c.closed(2)
    with Pop(pd.pop3_port) as c:
        c.login()
        assert c.stat()[0] == 3, "the slow session's DELE was applied"
        c.quit()


def test_nothing_runs_after_quit(pd):
    with Pop(pd.pop3_port) as c:
        c.login()
        c.send(b"DELE 1\r\nQUIT\r\nRSET\r\nDELE 2\r\nQUIT\r\n" + b"NOOP\r\n" * 30000)
        assert c.status().startswith("+OK")
        assert c.status().startswith("+OK"), "QUIT"
        assert c.closed(3), "no close after QUIT"
        assert not c.buf, "replies after QUIT: %r" % bytes(c.buf[:200])
    left = [m.data for m in mailbox(pd, "alice")]
    assert len(left) == 2 and b"X-Seq: 1\n" not in b"".join(left), \
        "want messages 2 and 3 left (DELE 1 then QUIT; nothing after QUIT)"


def test_failed_logins_logged_and_throttled(pd):
    """Three wrong passwords from one address: each logged once, each
    answered later than the one before."""
    with Pop(pd.pop3_port) as c:
        times = []
        for k in range(3):
            c.ok("USER alice")
            t = time.monotonic()
            r = c.cmd("PASS wrong-%d" % k, timeout=10)
            times.append(time.monotonic() - t)
            assert r.startswith("-ERR [AUTH]"), r
        assert times[0] < times[1] < times[2], times
    assert len(pd.events("refused", reason="auth", proto="pop3", user="alice",
                         client="127.0.0.1")) == 3
