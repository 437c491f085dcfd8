"""POP3 (RFC 1939, 2449, 5034) against the real daemon: Python's poplib and a
raw connection that checks the bytes on the wire.  Mail goes in over SMTP;
each test checks the POP3 replies *and* the Maildir files (new/ moved into
cur/ at login, removal only at QUIT)."""

import os
import poplib
import socket
import struct
import time

import pytest

from picotest import ReplyTimeout, lf, numbered, seq_of
from pop3test import (PASSWORD, Pop, auth_plain, deliver_numbered, dot_stuff, login_retrying,
                      mailbox, names, pop3_daemon, top_of, unstuff)

CAPA = {"TOP", "UIDL", "USER", "SASL PLAIN", "RESP-CODES", "PIPELINING",
        "AUTH-RESP-CODE", "IMPLEMENTATION picomail"}


@pytest.fixture
def pd(make_daemon):
    """A started daemon with a POP3 listener and plaintext_auth yes."""
    return pop3_daemon(make_daemon)


def pop(d, **kw):
    return Pop(d.pop3_port, **kw)


def poplib_session(d, user="alice"):
    p = poplib.POP3("127.0.0.1", d.pop3_port, timeout=5)
    p.user(user)
    p.pass_(PASSWORD)
    return p


def dotty(i):
    """A message whose body has every line shape dot-stuffing cares about."""
    return (b"Subject: dots %d\r\nX-Seq: %d\r\n\r\n" % (i, i)
            + b".leading dot\r\n..two dots\r\n.\r\n...\r\n . space dot\r\n"
            b"\r\nline after an empty line\r\n.END\r\nEND %d\r\n" % i)


def assert_same_files(before, after):
    assert [(m.name, m.data) for m in before] == [(m.name, m.data) for m in after], \
        "the Maildir changed:\nbefore %r\nafter  %r" % (before, after)


# ---------------------------------------------------------------- greeting, CAPA


def test_greeting_and_capa(pd):
    with pop(pd) as c:
        assert c.greeting == "+OK picomail POP3 ready", c.greeting
        caps = c.lines("CAPA")
        assert set(caps) == CAPA and len(caps) == len(CAPA), \
            "CAPA lists %r, want exactly %r" % (caps, sorted(CAPA))
        c.login()
        # RFC 2449 5: CAPA works in TRANSACTION too (USER/SASL may then go).
        after = set(c.lines("CAPA"))
        for cap in ("TOP", "UIDL", "RESP-CODES", "PIPELINING", "IMPLEMENTATION picomail"):
            assert cap in after, "CAPA after login lacks %s: %r" % (cap, after)
        c.quit()
    # poplib reads it the same way
    p = poplib.POP3("127.0.0.1", pd.pop3_port, timeout=5)
    assert p.getwelcome() == b"+OK picomail POP3 ready"
    caps = p.capa()
    assert caps.get("SASL") == ["PLAIN"] and "USER" in caps and "TOP" in caps, caps
    p.quit()


def test_plaintext_auth_no_refuses_user_pass_and_auth(make_daemon):
    d = pop3_daemon(make_daemon, plaintext=False)
    deliver_numbered(d, "alice", [1])
    with pop(d) as c:
        caps = c.lines("CAPA")
        assert "USER" not in caps and not any(l.startswith("SASL") for l in caps), \
            "plaintext_auth no and no TLS: CAPA must not offer USER or SASL: %r" % caps
        assert set(caps) == CAPA - {"USER", "SASL PLAIN"}, caps
        c.err("USER alice", "-ERR [AUTH]")
        c.err("PASS %s" % PASSWORD, "-ERR [AUTH]")
        c.err("AUTH PLAIN %s" % auth_plain("alice", PASSWORD), "-ERR [AUTH]")
        # no "+ " continuation either: the credentials must not be asked for
        c.err("AUTH PLAIN", "-ERR [AUTH]")
        c.err("STAT")
        c.lines("CAPA")         # the session goes on
        c.quit()
    assert len(names(d, "alice", "new")) == 1 and names(d, "alice", "cur") == [], \
        "a refused login touched the Maildir"


# ---------------------------------------------------------------- a whole session


def test_poplib_every_command(pd):
    sent = deliver_numbered(pd, "alice", [1, 2, 3], body=lambda i: dotty(i) if i == 2 else numbered(i, 300))
    stored = mailbox(pd, "alice")
    assert [m.sub for m in stored] == ["new"] * 3
    total = sum(m.size for m in stored)

    p = poplib_session(pd)
    # At login new/ is moved into cur/ as <name>:2,
    assert names(pd, "alice", "new") == [], "new/ not emptied at login"
    assert names(pd, "alice", "cur") == sorted(m.name + ":2," for m in stored)

    assert p.stat() == (3, total)
    resp, listing, _ = p.list()
    assert resp.startswith(b"+OK")
    assert listing == [b"%d %d" % (i + 1, m.size) for i, m in enumerate(stored)], listing
    for i, m in enumerate(stored, 1):
        assert p.list(i) == b"+OK %d %d" % (i, m.size)
        # message numbers follow the delivery order
        resp, lines, octets = p.retr(i)
        got = b"\r\n".join(lines) + b"\r\n"
        assert seq_of(lf(got)) == i, "message %d is X-Seq %s" % (i, seq_of(lf(got)))
        assert got == m.wire, "RETR %d differs from the stored file with CRLF" % i
        assert lf(got).endswith(lf(sent[i])), "RETR %d does not end with what was sent" % i
        assert octets == len(m.wire), (octets, len(m.wire))      # poplib counts unstuffed
    resp, lines, _ = p.top(2, 2)
    assert b"\r\n".join(lines) + b"\r\n" == top_of(stored[1].wire, 2)
    resp, uids, _ = p.uidl()
    assert uids == [b"%d %s" % (i + 1, m.unique.encode()) for i, m in enumerate(stored)], uids
    assert p.uidl(3) == b"+OK 3 " + stored[2].unique.encode()
    assert p.noop().startswith(b"+OK")
    assert p.dele(1).startswith(b"+OK")
    with pytest.raises(poplib.error_proto, match=r"^b?'?-ERR"):
        p.retr(1)
    assert p.stat() == (2, total - stored[0].size)
    assert p.rset().startswith(b"+OK")
    assert p.stat() == (3, total)
    assert p.dele(3).startswith(b"+OK")
    with pytest.raises(poplib.error_proto):  # APOP is not offered
        p._shortcmd("APOP alice 0123456789abcdef0123456789abcdef")
    assert p.quit().startswith(b"+OK")

    left = mailbox(pd, "alice")
    assert [m.unique for m in left] == [stored[0].unique, stored[1].unique], left
    assert [m.sub for m in left] == ["cur", "cur"]
    p = poplib_session(pd)
    assert p.stat() == (2, stored[0].size + stored[1].size)
    assert p.uidl()[1] == [b"1 " + stored[0].unique.encode(), b"2 " + stored[1].unique.encode()]
    p.quit()


def test_empty_and_missing_mailbox(pd):
    # bob never received mail: no Maildir at all; the login still works
    with pop(pd) as c:
        c.login("bob")
        assert c.stat() == (0, 0)
        assert c.list() == {} and c.uidl() == {}
        c.err("RETR 1")
        c.quit()


# ---------------------------------------------------------------- the bytes on the wire


WIRE_MESSAGES = {
    1: dotty(1),
    2: b"Subject: 8bit\r\nX-Seq: 2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
       b"gr\xc3\xbc\xc3\x9fe \xe2\x82\xac\r\n\ttab\r\ntrailing space \r\n" + b"x" * 990 + b"\r\nEND 2\r\n",
    3: b"Subject: header only\r\nX-Seq: 3\r\n",
    4: b"Subject: empty body\r\nX-Seq: 4\r\n\r\n",
    5: b"X-Seq: 5\r\n\r\n" + b"".join(b".%05d\r\n" % k for k in range(3000)) + b"END 5\r\n",
}


def test_retr_crlf_and_dot_stuffing_on_the_wire(pd):
    deliver_numbered(pd, "alice", sorted(WIRE_MESSAGES), body=WIRE_MESSAGES.get)
    stored = mailbox(pd, "alice")
    with pop(pd) as c:
        c.login()
        sizes = c.list()
        for i, m in enumerate(stored, 1):
            r, wire = c.multi("RETR %d" % i)
            assert wire == dot_stuff(m.wire), "RETR %d: wire bytes differ from the " \
                "stored file with CRLF line ends, dot-stuffed" % i
            assert len(unstuff(wire)) == sizes[i] == m.size, \
                "LIST says %d, RETR sent %d octets before stuffing" % (sizes[i], len(unstuff(wire)))
            assert lf(unstuff(wire)).endswith(lf(WIRE_MESSAGES[i])), i
        c.quit()


def test_top(pd):
    deliver_numbered(pd, "alice", [1, 3, 4], body=WIRE_MESSAGES.get)
    stored = mailbox(pd, "alice")
    with pop(pd) as c:
        c.login()
        m = stored[0]
        nbody = len(m.wire.split(b"\r\n\r\n", 1)[1].splitlines())
        for k in (0, 1, 2, 3, nbody, nbody + 1, 100000):
            r, wire = c.multi("TOP 1 %d" % k)
            assert wire == dot_stuff(top_of(m.wire, k)), "TOP 1 %d: %r" % (k, wire[-200:])
        assert c.multi("TOP 1 100000")[1] == dot_stuff(m.wire), "TOP n big: the whole message"
        # empty body: the header and the blank line
        assert c.multi("TOP 3 0")[1] == stored[2].wire
        assert c.multi("TOP 3 5")[1] == stored[2].wire
        # a message without a body separator: all of it is header
        r, wire = c.multi("TOP 2 0")
        assert wire in (stored[1].wire, stored[1].wire + b"\r\n"), wire
        # TOP does not mark anything: RETR still sends it all
        assert c.retr(1) == m.wire
        c.quit()
    assert len(mailbox(pd, "alice")) == 3


# ---------------------------------------------------------------- UIDL


def test_uidl_stable_across_sessions_and_restart(pd):
    deliver_numbered(pd, "alice", [1, 2, 3])
    first = mailbox(pd, "alice")
    uniq = [m.unique for m in first]
    assert len(set(uniq)) == 3
    with pop(pd) as c:
        c.login()
        assert c.uidl() == {1: uniq[0], 2: uniq[1], 3: uniq[2]}
        for i in (1, 2, 3):
            assert c.ok("UIDL %d" % i) == "+OK %d %s" % (i, uniq[i - 1])
        c.ok("DELE 2")
        c.err("UIDL 2")
        assert c.uidl() == {1: uniq[0], 3: uniq[2]}, "UIDL lists a deleted message"
        c.quit()

    # a mail reader marked one as seen (a legal Maildir info); a new one came
    m1 = mailbox(pd, "alice")[0]
    os.rename(m1.path, m1.path[:-len(m1.info)] + ":2,S")
    deliver_numbered(pd, "alice", [4])
    u4 = [m.unique for m in mailbox(pd, "alice") if m.unique not in uniq]
    assert len(u4) == 1

    with pop(pd) as c:
        c.login()
        want = {1: uniq[0], 2: uniq[2], 3: u4[0]}
        assert c.uidl() == want, "UIDL after a session, a flag and a delivery"
        c.quit()
    pd.stop()
    pd.start()
    with pop(pd) as c:
        c.login()
        assert c.uidl() == want, "UIDL changed across a daemon restart"
        assert seq_of(lf(c.retr(3))) == 4
        c.quit()
    p = poplib_session(pd)
    assert p.uidl()[1] == [b"%d %s" % (k, v.encode()) for k, v in sorted(want.items())]
    p.quit()


# ---------------------------------------------------------------- DELE, RSET, QUIT


def test_dele_marks_rset_unmarks_quit_removes(pd):
    deliver_numbered(pd, "alice", [1, 2, 3, 4])
    stored = mailbox(pd, "alice")
    sizes = [m.size for m in stored]
    with pop(pd) as c:
        c.login()
        c.ok("DELE 2")
        for line in ("RETR 2", "LIST 2", "TOP 2 0", "UIDL 2", "DELE 2"):
            c.err(line)
        assert c.stat() == (3, sum(sizes) - sizes[1]), "STAT counts a deleted message"
        assert c.list() == {1: sizes[0], 3: sizes[2], 4: sizes[3]}
        c.ok("RSET")
        assert c.stat() == (4, sum(sizes))
        assert c.retr(2) == stored[1].wire
        c.ok("DELE 1")
        c.ok("DELE 3")
        c.ok("NOOP")
        # nothing is removed before QUIT
        assert len(names(pd, "alice", "cur")) == 4
        c.quit()
    left = mailbox(pd, "alice")
    assert [m.unique for m in left] == [stored[1].unique, stored[3].unique]
    assert [m.data for m in left] == [stored[1].data, stored[3].data]
    with pop(pd) as c:
        c.login()
        assert c.list() == {1: sizes[1], 2: sizes[3]}
        assert seq_of(lf(c.retr(1))) == 2 and seq_of(lf(c.retr(2))) == 4
        assert c.multi("TOP 2 0")[1] == top_of(stored[3].wire, 0)
        # delete all, QUIT: the Maildir is empty and stays usable
        c.ok("DELE 1")
        c.ok("DELE 2")
        c.quit()
    assert names(pd, "alice", "cur") == [] and names(pd, "alice", "new") == []
    deliver_numbered(pd, "alice", [5])
    with pop(pd) as c:
        c.login()
        assert c.stat()[0] == 1
        c.quit()


def test_quit_before_login_touches_nothing(pd):
    deliver_numbered(pd, "alice", [1])
    before = mailbox(pd, "alice")
    with pop(pd) as c:
        c.ok("USER alice")
        c.quit()
    assert_same_files(before, mailbox(pd, "alice"))
    assert [m.sub for m in mailbox(pd, "alice")] == ["new"]


def rst_close(c):
    """Closes with a TCP reset (SO_LINGER 0), as a crashed client would."""
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


@pytest.mark.parametrize("how", ["close", "reset"])
def test_dropped_connection_deletes_nothing(pd, how):
    deliver_numbered(pd, "alice", [1, 2, 3])
    with pop(pd) as c:
        c.login()
        for i in (1, 2, 3):
            c.ok("DELE %d" % i)
        cur = mailbox(pd, "alice")
        (rst_close if how == "reset" else Pop.close)(c)
    c = login_retrying(pd.pop3_port)
    with c:
        assert c.stat()[0] == 3, "DELE without QUIT removed messages"
        c.quit()
    assert_same_files(cur, mailbox(pd, "alice"))


# ---------------------------------------------------------------- snapshot at login


def test_mail_delivered_during_a_session_waits_for_the_next(pd):
    deliver_numbered(pd, "alice", [1, 2])
    with pop(pd) as c:
        c.login()
        n, size = c.stat()
        assert n == 2
        deliver_numbered(pd, "alice", [3])      # SMTP while the session is open
        assert c.stat() == (n, size), "a message delivered during the session is listed"
        c.err("LIST 3")
        c.err("RETR 3")
        assert sorted(c.list()) == [1, 2]
        assert len(names(pd, "alice", "new")) == 1, "the new message is not left in new/"
        c.ok("DELE 1")
        c.quit()
    with pop(pd) as c:
        c.login()
        assert c.stat()[0] == 2
        assert [seq_of(lf(c.retr(i))) for i in (1, 2)] == [2, 3]
        c.quit()
    assert names(pd, "alice", "new") == []


# ---------------------------------------------------------------- locking


def test_second_login_gets_in_use(pd):
    deliver_numbered(pd, "alice", [1, 2])
    a = pop(pd)
    try:
        a.login()
        with pop(pd) as b:
            b.ok("USER alice")
            r = b.err("PASS %s" % PASSWORD, "-ERR [IN-USE]")
            b.err("AUTH PLAIN %s" % auth_plain("alice", PASSWORD), "-ERR [IN-USE]")
            b.err("STAT")                        # still not logged in
            # another mailbox is not locked, and the session went on
            b.login("bob")
            assert b.stat() == (0, 0)
            b.quit()
        assert a.stat()[0] == 2, "the first session was disturbed"
        a.ok("DELE 1")
        a.quit()
    finally:
        a.close()
    with pop(pd) as b:
        b.login()
        assert b.stat()[0] == 1
        b.quit()
    assert "IN-USE" in r


# ---------------------------------------------------------------- AUTH PLAIN


def test_auth_plain(pd):
    deliver_numbered(pd, "alice", [1])
    with pop(pd) as c:
        c.ok("AUTH PLAIN %s" % auth_plain("alice", PASSWORD))      # initial response
        assert c.stat()[0] == 1
        c.quit()
    with pop(pd) as c:
        # RFC 5034 4: "*" cancels; the session goes on in AUTHORIZATION
        assert c.cmd("AUTH PLAIN") in ("+ ", "+"), "no empty challenge"
        c.err("*")
        assert c.cmd("AUTH PLAIN") in ("+ ", "+")
        c.err("!!not base64!!")
        c.err("AUTH PLAIN %s" % "bm90IHBsYWlu")                     # "not plain": no NULs
        c.err("AUTH CRAM-MD5")
        c.err("STAT")
        c.err("AUTH PLAIN %s" % auth_plain("alice", "wrong"), "-ERR [AUTH]")
        # without an initial response
        assert c.cmd("AUTH PLAIN") in ("+ ", "+")
        assert c.cmd(auth_plain("alice", PASSWORD)).startswith("+OK")
        assert c.stat()[0] == 1
        c.quit()
    with pop(pd) as c:
        # alice's password does not open bob's mailbox (authzid)
        c.err("AUTH PLAIN %s" % auth_plain("alice", PASSWORD, authzid="bob"))
        c.ok("AUTH PLAIN %s" % auth_plain("bob", PASSWORD, authzid="bob"))
        assert c.stat() == (0, 0)
        c.quit()


# ---------------------------------------------------------------- failed logins


def test_failed_logins_are_throttled_per_address(pd):
    """-ERR [AUTH] after a delay that doubles with each consecutive failure
    from the address (200, 400, 800 ms ...); a success resets it; other
    sessions are served meanwhile."""
    FAIL = "-ERR [AUTH] Authentication failed"
    with pop(pd) as c:
        c.ok("USER alice")
        r1, t1 = timed_cmd(c, "PASS wrong")
        assert r1 == FAIL, r1
        c.ok("USER nosuchuser")             # an unknown user fails the same way
        r2, t2 = timed_cmd(c, "PASS %s" % PASSWORD)
        assert r2 == FAIL, "unknown user: %r (must not differ from a bad password)" % r2
    with pop(pd) as c:                      # same address, new connection
        c.ok("USER alice")
        c.send(b"PASS wrong\r\n")
        t = time.monotonic()
        # the delay must not block the loop: another session is served now
        with pop(pd, timeout=2) as other:
            other.lines("CAPA")
            t_other = time.monotonic() - t
        r3 = c.status(timeout=12)
        t3 = time.monotonic() - t
        assert r3 == FAIL, r3
        assert t_other < 0.5, "another session waited %.2f s during a login delay" % t_other
        assert 0.15 <= t1 < 1.5, "first failure answered after %.2f s, want ~0.2" % t1
        assert t2 >= t1 + 0.1, "second failure (%.2f s) not slower than the first (%.2f s)" % (t2, t1)
        assert t3 >= t1 + 0.4, "third failure (%.2f s) not noticeably slower than the first " \
            "(%.2f s): want ~0.8 vs ~0.2" % (t3, t1)
        assert t3 < 3, "third failure took %.2f s" % t3
        # per address: another client address starts at the first delay
        with pop(pd, source="127.0.0.2") as o:
            o.ok("USER alice")
            r, t_o = timed_cmd(o, "PASS wrong")
            assert r == FAIL, r
            assert t_o < t3 - 0.3, "127.0.0.2 paid 127.0.0.1's delay: %.2f s" % t_o
        # a success resets the delay
        c.ok("USER alice")
        c.ok("PASS %s" % PASSWORD)
        c.quit()
    with pop(pd) as c:
        c.ok("USER alice")
        r4, t4 = timed_cmd(c, "PASS wrong")
        assert r4 == FAIL
        assert t4 < t3 - 0.3, "after a success the delay is not reset: %.2f s" % t4
        c.quit()


def timed_cmd(c, line):
    t = time.monotonic()
    r = c.cmd(line, timeout=12)
    return r, time.monotonic() - t


# ---------------------------------------------------------------- errors


# Each: line -> the reply starts with -ERR, and the session goes on.  Kept
# under 15 errors per session (a server may close after many errors).
AUTHORIZATION_ERRORS = [
    "STAT", "LIST", "LIST 1", "RETR 1", "DELE 1", "TOP 1 0", "UIDL", "RSET", "NOOP",
    "PASS %s" % PASSWORD,                    # PASS without USER
    "FROB", "", "USER", "APOP alice 0123456789abcdef0123456789abcdef",
]
TRANSACTION_ERRORS = [
    ["RETR 0", "RETR -1", "RETR 4294967297", "RETR 18446744073709551617", "RETR 4",
     "RETR", "RETR x", "RETR 1x", "RETR 1 2", "TOP 1 -1", "TOP 1", "TOP", "TOP 1 x",
     "TOP 0 1"],
    ["TOP 4 1", "TOP 1 4294967297x", "LIST 1 2", "LIST 0", "LIST 4", "LIST -1", "UIDL 0",
     "UIDL 4", "UIDL x", "DELE 0", "DELE 4", "DELE", "DELE 1 2"],
    ["USER alice", "PASS %s" % PASSWORD, "AUTH PLAIN %s" % auth_plain("alice", PASSWORD),
     "APOP alice 0123456789abcdef0123456789abcdef", "FROB", "", "STAT 1", "NOOP x",
     "RSET x", "STLS"],
]


def test_errors_in_authorization_state(pd):
    deliver_numbered(pd, "alice", [1])
    with pop(pd) as c:
        wrong = []
        for line in AUTHORIZATION_ERRORS:
            r = c.cmd(line)
            if not r.startswith("-ERR"):
                wrong.append("%s -> %s" % (line, r))
            assert c.lines("CAPA"), "after %r" % line
        assert not wrong, "want -ERR in AUTHORIZATION state:\n" + "\n".join(wrong)
        c.login()
        assert c.stat()[0] == 1
        c.quit()


@pytest.mark.parametrize("table", range(len(TRANSACTION_ERRORS)))
def test_errors_in_transaction_state(pd, table):
    deliver_numbered(pd, "alice", [1, 2, 3])
    with pop(pd) as c:
        c.login()
        before = c.stat()
        files = mailbox(pd, "alice")
        wrong = []
        for line in TRANSACTION_ERRORS[table]:
            r = c.cmd(line)
            if not r.startswith("-ERR"):
                wrong.append("%s -> %s" % (line, r))
            assert c.ok("NOOP"), "after %r" % line
        assert c.stat() == before
        assert not wrong, "want -ERR in TRANSACTION state:\n" + "\n".join(wrong)
        c.quit()
    assert_same_files(files, mailbox(pd, "alice"))


def test_overlong_lines_refused_and_session_goes_on(pd):
    deliver_numbered(pd, "alice", [1])
    with pop(pd) as c:
        r = c.err("USER " + "a" * 10240)
        assert "long" in r.lower(), "10 KB USER line: %r, want a 'line too long' error" % r
        c.lines("CAPA")
        c.login()
        c.err("RETR " + "1" * 100000)
        c.err("TOP 1 " + "9" * 5000)
        assert c.retr(1) == mailbox(pd, "alice")[0].wire
        c.quit()


def test_commands_are_case_insensitive_and_pipelined(pd):
    deliver_numbered(pd, "alice", [1, 2])
    stored = mailbox(pd, "alice")
    with pop(pd) as c:
        c.send(b"user alice\r\npass %s\r\nstat\r\nList 2\r\nuidl 1\r\nretr 2\r\n"
               b"RETR 9\r\ntop 1 0\r\nnoop\r\n" % PASSWORD.encode())
        assert c.status().startswith("+OK")
        assert c.status().startswith("+OK")
        assert c.status() == "+OK 2 %d" % sum(m.size for m in stored)
        assert c.status() == "+OK 2 %d" % stored[1].size
        assert c.status() == "+OK 1 %s" % stored[0].unique
        assert c.status().startswith("+OK") and c.body() == dot_stuff(stored[1].wire)
        assert c.status().startswith("-ERR")
        assert c.status().startswith("+OK") and c.body() == top_of(stored[0].wire, 0)
        assert c.status().startswith("+OK")
        c.quit()


# ---------------------------------------------------------------- timeouts, pools


def test_idle_timeout_closes_and_deletes_nothing(make_daemon):
    d = pop3_daemon(make_daemon, timeout="1s")
    deliver_numbered(d, "alice", [1, 2])
    idle_auth = pop(d)
    idle_trans = pop(d)
    busy = pop(d)
    try:
        idle_trans.login()
        idle_trans.ok("DELE 1")
        busy.login("bob")
        t = time.monotonic()
        for _ in range(6):                  # 1.8 s of activity, < 1 s apart
            time.sleep(0.3)
            busy.ok("NOOP")
        for c in (idle_auth, idle_trans):
            assert c.closed(4), "idle session not closed within %.1f s" % (time.monotonic() - t)
            for l in bytes(c.buf).split(b"\r\n"):
                assert l == b"" or l.startswith(b"-ERR"), "before the close: %r" % bytes(c.buf)
        busy.quit()                          # an active session is not idle
    finally:
        for c in (idle_auth, idle_trans, busy):
            c.close()
    c = login_retrying(d.pop3_port)
    with c:
        assert c.stat()[0] == 2, "an idle timeout after DELE removed a message"
        c.quit()


def test_connection_pool_full_answers_sys_temp(make_daemon):
    d = pop3_daemon(make_daemon, max_connections="2")
    c1, c2 = pop(d), pop(d)
    try:
        for _ in range(3):
            with pop(d, greet=False) as c3:
                r = c3.status()
                assert r.startswith("-ERR [SYS/TEMP]"), "third connection, max_connections 2: %r" % r
                assert c3.closed(), "not closed after -ERR [SYS/TEMP]"
        c1.quit()
        deadline = time.monotonic() + 3
        while True:
            c4 = pop(d, greet=False)
            r = c4.status()
            if r.startswith("+OK") or time.monotonic() > deadline:
                break
            c4.close()
            time.sleep(0.05)
        with c4:
            assert r == "+OK picomail POP3 ready", "a slot freed: %r" % r
            c4.login()
            c4.quit()
        c2.lines("CAPA")
    finally:
        c1.close()
        c2.close()
    assert d.alive()


def test_mailbox_pool_full_answers_sys_temp(make_daemon):
    d = pop3_daemon(make_daemon, extra=["pop3_sessions 1"])
    a = pop(d)
    try:
        a.login("alice")
        with pop(d) as b:
            b.ok("USER bob")
            b.err("PASS %s" % PASSWORD, "-ERR [SYS/TEMP]")
            a.quit()
            b.login("bob")                     # the session went on; a slot is free
            b.quit()
    finally:
        a.close()


# ---------------------------------------------------------------- durability of QUIT


def test_quit_reports_a_failed_directory_sync(make_daemon, picomail_test_bin):
    """Removal at QUIT syncs cur/ before +OK: a failing fsync (injected as the
    Nth fsync of a fresh daemon) must turn the QUIT into -ERR."""
    d = pop3_daemon(make_daemon)
    deliver_numbered(d, "alice", range(1, 9))
    d.stop()
    d.binary = picomail_test_bin
    seen = []
    for n in range(1, 6):
        d.env["PICOMAIL_FAULT"] = "fsync:%d:EIO" % n
        d.start()
        try:
            with pop(d) as c:
                c.ok("USER alice")
                r = c.cmd("PASS %s" % PASSWORD)
                if not r.startswith("+OK"):
                    seen.append((n, "login", r))      # the fault hit the login
                    continue
                count = c.stat()[0]
                c.ok("DELE 1")
                r = c.cmd("QUIT")
                seen.append((n, "quit", r))
                if r.startswith("-ERR"):
                    assert c.closed(5)
                    break
                assert len(mailbox(d, "alice")) == count - 1
        finally:
            d.stop()
    else:
        pytest.fail("no injected fsync failure (1st..5th) made QUIT answer -ERR: "
                    "the removal is acknowledged without a checked fsync: %r" % seen)
    d.env.pop("PICOMAIL_FAULT")
    d.start()
    c = login_retrying(d.pop3_port)
    with c:
        assert c.stat()[0] >= 1
        c.quit()


# ---------------------------------------------------------------- concurrency, big messages


BIG = 2 * 1024 * 1024


def test_delivery_during_a_big_retr_and_a_cut_retr(make_daemon):
    d = pop3_daemon(make_daemon, max_message_size="4M")
    deliver_numbered(d, "alice", [1, 2], size=BIG)
    stored = mailbox(d, "alice")
    assert stored[0].size > BIG
    # 1. a RETR cut in the middle, after a DELE, no QUIT: nothing deleted
    with pop(d) as c:
        c.login()
        c.ok("DELE 2")
        c.send(b"RETR 1\r\n")
        got = 0
        while got < 256 * 1024:
            chunk = c.sock.recv(65536)
            assert chunk, "closed during RETR"
            got += len(chunk)
        rst_close(c)
    # 2. while a slow reader holds a big RETR, SMTP delivery and another
    #    POP3 session go through; the message streams through a fixed buffer
    rss = d.vm("VmRSS")
    c = login_retrying(d.pop3_port)
    with c:
        assert c.stat() == (2, sum(m.size for m in stored)), "the cut session deleted something"
        c.send(b"RETR 2\r\n")
        first = c.sock.recv(4096)
        assert first.startswith(b"+OK"), first
        t = time.monotonic()
        deliver_numbered(d, "alice", [3])
        with pop(d) as other:
            other.login("bob")
            other.quit()
        assert time.monotonic() - t < 3, "SMTP and POP3 waited behind a big RETR"
        c.buf[:0] = first
        assert c.status().startswith("+OK")
        wire = c.body()
        assert wire == dot_stuff(stored[1].wire), "2 MB RETR differs from the stored file"
        c.ok("NOOP")
        c.quit()
    assert d.alive()
    assert len(mailbox(d, "alice")) == 3
    grown = d.vm("VmRSS") - rss
    assert grown < 512, "RSS grew by %d KiB over a 2 MB RETR: not streamed" % grown


def test_shutdown_with_an_open_session_deletes_nothing(pd):
    deliver_numbered(pd, "alice", [1, 2])
    c = pop(pd)
    with c:
        c.login()
        c.ok("DELE 1")
        c.ok("DELE 2")
        assert pd.stop() == 0, "SIGTERM with a POP3 session open: exit status"
        assert c.closed(2), "the session outlived the daemon"
        for l in bytes(c.buf).split(b"\r\n"):
            assert l == b"" or l.startswith(b"-ERR"), "sent at shutdown: %r" % bytes(c.buf)
    pd.start()
    with pop(pd) as c:
        c.login()
        assert c.stat()[0] == 2, "a shutdown expunged messages marked by DELE"
        c.quit()


def test_many_messages_in_one_session(pd):
    n = 60
    deliver_numbered(pd, "alice", range(1, n + 1))
    stored = mailbox(pd, "alice")
    with pop(pd) as c:
        c.login()
        assert c.stat() == (n, sum(m.size for m in stored))
        assert c.uidl() == {i: m.unique for i, m in enumerate(stored, 1)}
        # pipelined RETR + DELE of every message in one write (CAPA PIPELINING)
        c.send(b"".join(b"RETR %d\r\nDELE %d\r\n" % (i, i) for i in range(1, n + 1)))
        answered = 0
        try:
            for i, m in enumerate(stored, 1):
                assert c.status().startswith("+OK")
                assert unstuff(c.body()) == m.wire, "message %d" % i
                answered += 1
                assert c.status().startswith("+OK")
                answered += 1
        except ReplyTimeout:
            pytest.fail("%d RETR+DELE pairs pipelined in one write (%d bytes): the server "
                        "answered %d commands, then nothing for 5 s" % (
                            n, len(b"".join(b"RETR %d\r\nDELE %d\r\n" % (i, i)
                                            for i in range(1, n + 1))), answered))
        assert c.stat() == (0, 0)
        c.quit()
    assert names(pd, "alice", "cur") == []


def test_order_is_delivery_time_not_name_order(pd):
    """Numbers follow the time in the unique name (seconds, then
    microseconds), not the byte order of the names: 'M99999' was delivered
    before 'M100000' in the same second."""
    new = os.path.join(pd.mail_root, "alice", "new")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(pd.mail_root, "alice", sub), exist_ok=True)
    uniques = ["1699999999.M999999P10Q3.test.lan",       # delivered 1st
               "1700000000.M99999P10Q1.test.lan",        # 2nd
               "1700000000.M100000P10Q2.test.lan",       # 3rd
               "1700000001.M5P10Q4.test.lan"]            # 4th
    for seq, u in enumerate(uniques, 1):
        data = (b"Return-Path: <sender@example.org>\nReceived: from client.lan ([127.0.0.1])\n"
                b"\tby test.lan (picomail) with ESMTP id X\n\tfor <alice@lan>;\n"
                b"\tTue, 14 Nov 2023 22:13:20 +0000\nX-Seq: %d\n\nEND %d\n" % (seq, seq))
        name = "%s,S=%d,W=%d" % (u, len(data), len(data) + data.count(b"\n"))
        with open(os.path.join(new, name), "wb") as f:
            f.write(data)
        t = 1700000000 + seq
        os.utime(os.path.join(new, name), (t, t))
    with pop(pd) as c:
        c.login()
        assert [seq_of(lf(c.retr(i))) for i in (1, 2, 3, 4)] == [1, 2, 3, 4], \
            "messages not numbered in delivery order"
        assert c.uidl() == {i: u for i, u in enumerate(uniques, 1)}
        c.quit()


# ---------------------------------------------------------------- more edges


def test_pipelined_quit_then_half_close_is_honoured(pd):
    """A script writes its commands and closes its sending side (nc, printf
    | ...): the QUIT that arrived before the EOF still removes the messages."""
    deliver_numbered(pd, "alice", [1, 2])
    stored = mailbox(pd, "alice")
    with pop(pd) as c:
        c.send(b"USER alice\r\nPASS %s\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n" % PASSWORD.encode())
        c.sock.shutdown(socket.SHUT_WR)
        assert c.status().startswith("+OK")
        assert c.status().startswith("+OK")
        assert c.status().startswith("+OK") and unstuff(c.body()) == stored[0].wire
        assert c.status().startswith("+OK")
        assert c.status().startswith("+OK"), "QUIT"
        assert c.closed(5)
    assert [m.unique for m in mailbox(pd, "alice")] == [stored[1].unique]


def test_pipelined_big_retrs_come_out_whole_and_in_order(make_daemon):
    d = pop3_daemon(make_daemon, max_message_size="4M")
    deliver_numbered(d, "alice", [1, 2], size=BIG)
    deliver_numbered(d, "alice", [3], body=dotty)
    stored = mailbox(d, "alice")
    with pop(d, timeout=10) as c:
        c.login()
        c.send(b"RETR 1\r\nSTAT\r\nTOP 2 3\r\nRETR 3\r\nRETR 2\r\nLIST 1\r\nNOOP\r\n")
        assert c.status().startswith("+OK") and c.body() == dot_stuff(stored[0].wire)
        assert c.status() == "+OK 3 %d" % sum(m.size for m in stored)
        assert c.status().startswith("+OK") and c.body() == top_of(stored[1].wire, 3)
        assert c.status().startswith("+OK") and c.body() == dot_stuff(stored[2].wire)
        assert c.status().startswith("+OK") and c.body() == dot_stuff(stored[1].wire)
        assert c.status() == "+OK 1 %d" % stored[0].size
        assert c.status().startswith("+OK")
        c.quit()


def test_stalled_reader_times_out_and_frees_the_mailbox(make_daemon):
    """A client that asks for a big message and stops reading must not hold
    the mailbox lock for ever: the idle timeout applies to a blocked
    output too."""
    d = pop3_daemon(make_daemon, timeout="1s", max_message_size="4M")
    deliver_numbered(d, "alice", [1], size=BIG)
    stored_size = mailbox(d, "alice")[0].size
    stalled = pop(d)
    try:
        stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.login()
        stalled.ok("DELE 1")
        stalled.send(b"RETR 1\r\n")          # and read nothing more
        c = login_retrying(d.pop3_port, seconds=5)
        with c:
            assert c.stat()[0] == 1, "the stalled session's DELE was applied"
            c.quit()
        # it was the blocked RETR that timed out: the whole message had not gone out
        got = len(stalled.buf)
        while True:
            try:
                chunk = stalled.sock.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += len(chunk)
        assert got < stored_size, "the server sent all of RETR: the test did not stall it"
    finally:
        stalled.close()
    assert d.alive()


def test_sha_crypt_hashes_log_in(make_daemon):
    import subprocess
    d = pop3_daemon(make_daemon, start=False)
    h5 = subprocess.run(["openssl", "passwd", "-5", "pass five"], capture_output=True,
                        text=True, timeout=10).stdout.strip()
    lines = ["carol:%s" % h5]
    try:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
        h6 = crypt.crypt("rounds six", crypt.mksalt(crypt.METHOD_SHA512, rounds=7000))
        assert h6.startswith("$6$rounds=7000$")
        lines.append("dave:%s" % h6)
    except (ImportError, AssertionError, TypeError):
        pass
    with open(d.users_path, "a") as f:
        f.write("\n".join(lines) + "\n")
    d.start()
    with pop(d) as c:
        c.ok("AUTH PLAIN %s" % auth_plain("carol", "pass five"))
        c.quit()
    if len(lines) > 1:
        with pop(d) as c:
            c.ok("AUTH PLAIN %s" % auth_plain("dave", "rounds six"))
            c.quit()
    with pop(d) as c:
        c.ok("USER carol")
        c.err("PASS pass fivE", "-ERR [AUTH]")


def test_message_removed_behind_the_sessions_back(pd):
    """Another program removed a file after the snapshot: RETR fails, the
    session and the daemon go on, the other messages are intact."""
    deliver_numbered(pd, "alice", [1, 2])
    with pop(pd) as c:
        c.login()
        first, second = mailbox(pd, "alice")
        os.unlink(first.path)
        c.err("RETR 1")
        c.err("TOP 1 0")
        c.ok("NOOP")
        assert c.retr(2) == second.wire
        c.ok("DELE 1")
        c.cmd("QUIT")
        assert c.closed(5)
    assert d_alive_and_has(pd, [second.unique])


def d_alive_and_has(d, uniques):
    assert d.alive()
    with pop(d) as c:
        c.login()
        assert list(c.uidl().values()) == uniques
        c.quit()
    return True
