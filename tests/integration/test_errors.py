"""Every error reply of the SMTP state machine, as a table of
    client lines -> expected reply
and, where the server keeps the connection, proof that the session goes on:
a valid transaction in the same session is delivered."""

import time

import pytest

from picotest import assert_reply, lf, message, send_transaction

MAIL = ("MAIL FROM:<sender@example.org>", "250")
RCPT = ("RCPT TO:<alice@lan>", "250")


def session_goes_on(c, d, tag):
    """RSET, then a whole transaction in the same session is delivered."""
    c.expect("RSET", "250")
    r = send_transaction(c, ["alice@lan"], message(tag))
    assert_reply(r, "250 2.0.0", "valid transaction after the error")
    c.expect("QUIT", "221")
    msgs = d.maildir("alice").messages()
    assert [m.body for m in msgs] == [lf(message(tag))], \
        "after the error alice should hold exactly the valid message"
    d.maildir("alice").assert_clean()


# (name, setup [(line, reply)], offending line, expected reply)
BAD_COMMANDS = [
    ("unknown local user", [MAIL], "RCPT TO:<nobody@lan>", "550 5.1.1"),
    ("over-long command line", [], "NOOP " + "x" * 20000, "500 5.5.2"),
    ("over-long MAIL line", [], "MAIL FROM:<" + "a" * 20000 + "@example.org>", "500 5.5.2"),
    ("over-long RCPT line", [MAIL], "RCPT TO:<" + "a" * 20000 + "@lan>", "500 5.5.2"),
    ("NUL in a command", [], b"NO\x00OP", "500 5.5.2"),
    ("NUL in an address", [MAIL], b"RCPT TO:<alice\x00@lan>", "500 5.5.2"),
    # a CR in the EHLO name would reach the Received: header
    ("bare CR in EHLO", [], b"EHLO a\rX-Injected: 1", "500 5.5.2"),
    ("unknown command", [], "FROB nicate", "500 5.5.1"),
    ("RCPT before MAIL", [], "RCPT TO:<alice@lan>", "503 5.5.1"),
    ("DATA before MAIL", [], "DATA", "503 5.5.1"),
    ("DATA before RCPT", [MAIL], "DATA", "503 5.5.1"),
    # RFC 5321 3.3: 503 or "no valid recipients" 554 (what Postfix says)
    ("DATA when every RCPT was refused", [MAIL, ("RCPT TO:<nobody@lan>", "550 5.1.1")],
     "DATA", "503 5.5.1|554 5.5.1"),
    ("MAIL twice", [MAIL], "MAIL FROM:<other@example.org>", "503 5.5.1"),
    ("DATA after RSET", [MAIL, RCPT, ("RSET", "250")], "DATA", "503 5.5.1"),
    ("DATA after a new EHLO", [MAIL, RCPT, ("EHLO again.lan", "250")], "DATA", "503 5.5.1"),
    ("RCPT address without domain", [MAIL], "RCPT TO:<alice@>", "501 5.1.3"),
    ("RCPT address with empty label", [MAIL], "RCPT TO:<alice@lan..>", "501 5.1.3"),
    ("RCPT address unbalanced <", [MAIL], "RCPT TO:<alice@lan", "501 5.1.3"),
    ("RCPT null address", [MAIL], "RCPT TO:<>", "501 5.1.3"),
    ("MAIL address without domain", [], "MAIL FROM:<sender@>", "501 5.1.7"),
    ("MAIL address unbalanced <", [], "MAIL FROM:<sender@example.org", "501 5.1.7"),
    ("source route", [MAIL], "RCPT TO:<@relay.example.org:alice@lan>", "553 5.7.1"),
    ("percent hack", [MAIL], "RCPT TO:<alice%example.com@lan>", "553 5.7.1"),
    ("bang path", [MAIL], "RCPT TO:<example.com!alice@lan>", "553 5.7.1"),
    ("unknown MAIL parameter", [], "MAIL FROM:<sender@example.org> FROB=1", "555 5.5.4"),
    ("SIZE over max_message_size", [], "MAIL FROM:<sender@example.org> SIZE=2000000",
     "552 5.3.4"),
]


@pytest.mark.parametrize("setup,line,expected", [b[1:] for b in BAD_COMMANDS],
                         ids=[b[0] for b in BAD_COMMANDS])
def test_bad_command(daemon, setup, line, expected):
    with daemon.session() as c:
        for l, want in setup:
            c.expect(l, want)
        c.expect(line, expected)
        # exactly one reply: an over-long line is not answered once per buffer
        assert c.quiet(0.3), "more than one reply to %r: %r" % (line[:40], c.buf[:200])
        session_goes_on(c, daemon, "after error")


def test_non_local_recipient_refused_outside_relay_from(make_daemon):
    """Loopback is not in relay_from here: a remote recipient is relaying,
    and relaying is refused (the relay tests cover the permitted side)."""
    d = make_daemon(relay_from="10.0.0.0/8")
    with d.session() as c:
        c.expect("MAIL FROM:<sender@example.org>", "250")
        c.expect("RCPT TO:<someone@example.com>", "554 5.7.1")
        assert c.quiet(0.3)
        session_goes_on(c, d, "after relay denied")


# (line, expected reply): commands that work in any state
SIMPLE = [
    ("NOOP", "250 2.0.0"),
    ("noop", "250"),
    ("NOOP with an argument", "250"),
    ("RSET", "250 2.0.0"),
    ("VRFY alice", "252"),
    ("VRFY <alice@lan>", "252"),
    ("HELP", "214"),
    ("EHLO again.lan", "250"),
    ("HELO again.lan", "250"),
]


@pytest.mark.parametrize("line,expected", SIMPLE, ids=[s[0] for s in SIMPLE])
def test_simple_command(daemon, line, expected):
    with daemon.session() as c:
        c.expect(line, expected)
        session_goes_on(c, daemon, "after " + line)


def test_commands_are_case_insensitive(daemon):
    with daemon.session() as c:
        c.expect("mail from:<sender@example.org>", "250")
        c.expect("rcpt to:<alice@lan>", "250")
        c.expect("data", "354")
        c.send(message("lower") + b".\r\n")
        assert_reply(c.reply(), "250", "end of data")
        c.expect("quit", "221")


def test_quit_closes(daemon):
    with daemon.session() as c:
        c.expect("QUIT", "221")
        assert c.closed(), "server did not close after 221"


@pytest.mark.parametrize("name,data", [
    ("bare LF", b"Subject: x\r\n\r\nline one\nline two\r\n"),
    ("bare CR", b"Subject: x\r\n\r\nline one\rline two\r\n"),
    ("NUL", b"Subject: x\r\n\r\nline\x00one\r\n"),
    ("bare LF in a header", b"Subject: x\nX-Evil: y\r\n\r\nbody\r\n"),
    ("CR CR LF", b"Subject: x\r\n\r\nline\r\r\n"),
    ("LF dot LF inside", b"Subject: x\r\n\r\na\n.\nb\r\n"),
    ("bare CR at the last byte before CRLF.CRLF", b"Subject: x\r\n\r\nlast\r\r\n"),
])
def test_bad_bytes_in_data_refused(daemon, name, data):
    with daemon.session() as c:
        c.expect("MAIL FROM:<sender@example.org>", "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        c.send(data + b".\r\n")
        assert_reply(c.reply(), "550 5.6.0", "%s in DATA: %r" % (name, data))
        assert c.quiet(0.3), "more than one reply to the end of data"
        assert daemon.maildir("alice").messages() == [], "refused message was stored"
        daemon.maildir("alice").assert_clean()
        session_goes_on(c, daemon, "after " + name)


def test_too_many_recipients(daemon):
    with daemon.session() as c:
        c.expect("MAIL FROM:<sender@example.org>", "250")
        c.send(b"RCPT TO:<alice@lan>\r\n" * 102)
        got = c.replies(102)
        assert all(r.matches("250") for r in got[:100]), [r for r in got[:100] if r.code != 250]
        for r in got[100:]:
            assert_reply(r, "452 4.5.3", "RCPT number 101 and 102 (max_recipients 100)")
        session_goes_on(c, daemon, "after 102 recipients")


def test_too_many_errors_disconnects(daemon):
    replies = []
    with daemon.session() as c:
        for _ in range(12):
            try:
                c.send(b"FROB\r\n")
                r = c.reply()
            except Exception:
                break
            replies.append(r)
            if r.code == 421:
                break
        codes = [r.code for r in replies]
        assert 421 in codes, "12 bad commands and no 421: %r" % replies
        # the 10th bad command is answered by 421 (or by 500 and then 421)
        assert codes.index(421) in (9, 10), replies
        assert all(code == 500 for code in codes[:codes.index(421)]), replies
        assert c.closed(), "no close after 421"
    with daemon.session() as c:
        c.expect("NOOP", "250")


@pytest.fixture
def timeout_daemon(make_daemon):
    return make_daemon(smtp_timeout="2s")


def test_idle_timeout(timeout_daemon):
    d = timeout_daemon
    with d.session() as c:
        t0 = time.monotonic()
        r = c.reply(timeout=8)
        waited = time.monotonic() - t0
        assert_reply(r, "421 4.4.2", "idle with smtp_timeout 2s")
        assert 1.5 <= waited <= 6, "timeout after %.1f s, smtp_timeout 2s" % waited
        assert c.closed()
    with d.session() as c:
        c.expect("NOOP", "250")


def test_idle_timeout_in_data_keeps_nothing(timeout_daemon):
    d = timeout_daemon
    with d.session() as c:
        c.expect("MAIL FROM:<sender@example.org>", "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        c.send(b"Subject: cut off\r\n\r\nhalf a mess")
        assert_reply(c.reply(timeout=8), "421 4.4.2", "idle in DATA")
        assert c.closed()
    assert d.maildir("alice").messages() == []
    d.maildir("alice").assert_clean()


def test_per_address_limit(make_daemon):
    # max_per_address does not apply to relay_from clients, so 127.0.0.1
    # must be outside relay_from here.
    d = make_daemon(max_per_address="2", relay_from="10.0.0.0/8")
    c1, c2 = d.connect(), d.connect()
    try:
        assert_reply(c1.reply(), "220", "first connection")
        assert_reply(c2.reply(), "220", "second connection")
        with d.connect() as c3:
            assert_reply(c3.reply(), "421 4.7.0", "third connection from 127.0.0.1")
            assert c3.closed()
        c1.expect("QUIT", "221")
        c1.closed()
        # the slot comes back once the server has seen the close
        deadline = time.monotonic() + 3
        while True:
            with d.connect() as c4:
                r = c4.reply()
                if r.code == 220 or time.monotonic() > deadline:
                    break
            time.sleep(0.05)
        assert_reply(r, "220", "after a connection closed")
        c2.expect("EHLO client.lan", "250")
        assert_reply(send_transaction(c2, ["alice@lan"], message("limit")), "250",
                     "delivery from a non-relay client to a local user")
    finally:
        c1.close()
        c2.close()
