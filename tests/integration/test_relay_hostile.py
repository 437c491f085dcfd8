"""The relay client against a hostile smarthost (issue 8).

hostile.Hostile is a smarthost scripted byte for byte: a socket server on
127.0.0.1 in a thread, answering each stage of the outbound session
(greeting, EHLO, STARTTLS, MAIL, RCPT, DATA, the final dot) with the bytes
a case gives, or closing.  For each case the message must either stay
queued with a 4xx reason (and go out once, exactly, when the smarthost
behaves again) or bounce with an RFC 3464 report to the local sender; the
server's text never reaches an envelope file, the log or a bounce with its
control bytes, and the daemon keeps running.

The STARTTLS case where "220 go" and "250 injected" come in one write is
test_relay_tls.py::test_starttls_reply_injection_is_discarded; here the
injected line comes in its own segment after the 220, before the client's
handshake, and the message must not go out in clear.
"""

import os
import re
import time

import pytest

from hostile import CLOSE, GOOD, Hostile, no_greet_pause, self_signed
from picotest import message, stuff
from relaytest import Spool, control, dsn, mailq, relay_daemon, submit, wait_for, \
    wait_queue_empty

@pytest.fixture
def hostile():
    made = []

    def make(script=None, **kw):
        s = Hostile(script, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def printable(data):
    """Bytes a file may hold: printable ASCII, LF and TAB."""
    bad = re.findall(rb"[^\x20-\x7e\n\t]", data)
    return not bad


def check_spool_clean(d):
    sp = Spool(d)
    for sub in ("env",):
        for name in sp.names(sub):
            with open(os.path.join(d.spool, sub, name), "rb") as f:
                data = f.read()
            assert printable(data), "control or 8-bit bytes from the server in %s/%s:\n%r" % (
                sub, name, data)


def check_log_clean(d):
    log = d.log(1 << 22).encode("latin-1")
    for b in (b"\r", b"\x00", b"\x1b", b"\xff"):
        assert b not in log, "raw %r from the smarthost reached the log" % b


def run(make_daemon, server, extra=()):
    d = relay_daemon(make_daemon, "127.0.0.1:%d" % server.port,
                     extra=list(extra) + no_greet_pause())
    submit(d, ["bob@remote.test"], message("to a hostile smarthost"))
    return d


def deferred(d, server, want=None, timeout=8):
    """Waits for the first attempt to end with the message deferred; returns
    the reason mailq gives."""
    def why():
        q = mailq(d)
        if len(q) == 1 and q[0][5] and q[0][5][0][1] and not q[0][4]:
            return q[0][5][0][1]
        return None
    w = wait_for(lambda: server.sessions and why(), timeout,
                 "the message deferred after talking to the hostile smarthost")
    assert w.startswith("4"), "deferred, so the reason is a 4xx: %r" % w
    assert printable(w.encode("latin-1")), w
    if want:
        assert want in w, "deferral reason %r, want %r" % (w, want)
    return w


def recovers(d, server):
    """The smarthost behaves again: the message goes out exactly once."""
    server.behave()
    control(d, "flush")
    wait_for(lambda: server.messages, 8, "the message delivered once the smarthost behaves")
    wait_queue_empty(d)
    time.sleep(0.3)
    assert len(server.messages) == 1, server.messages
    mail, rcpts, data, _ = server.messages[0]
    assert mail == b"MAIL FROM:<alice@lan>" and rcpts == [b"RCPT TO:<bob@remote.test>"], (
        mail, rcpts)
    assert data.endswith(stuff(message("to a hostile smarthost"))), data[-200:]
    assert d.alive()


def flood(n):
    def send(conn):
        try:
            conn.sock.sendall(b"250-flood\r\n" * n + b"250 ok\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        return False
    return send


def then_close(data):
    def send(conn):
        conn.sock.sendall(data)
        time.sleep(0.05)
        conn.sock.close()
        return False
    return send


# (id, stage -> reply, words the deferral reason holds)
TEMP = [
    ("greeting '25'", {"greeting": b"25\r\n"}, "malformed"),
    ("greeting '999 x'", {"greeting": b"999 x\r\n"}, "malformed"),
    ("greeting '250 NUL'", {"greeting": b"250\x00\r\n"}, "malformed"),
    ("greeting '220-a' then close", {"greeting": then_close(b"220-a\r\n")}, "connection lost"),
    ("greeting 4xx", {"greeting": b"421 4.3.2 busy\r\n"}, "greeting 421"),
    ("EHLO 100000 continuation lines", {"ehlo": flood(100000)}, "too long"),
    ("EHLO '250-a' then close", {"ehlo": then_close(b"250-a\r\n")}, "connection lost"),
    ("EHLO code changes", {"ehlo": b"250-a\r\n550 b\r\n"}, "code changed"),
    ("EHLO 600-octet line", {"ehlo": b"250 " + b"x" * 600 + b"\r\n"}, "too long"),
    ("RCPT NUL in the text", {"rcpt": b"550 5.1.1 a\x00b\r\n"}, "malformed"),
    ("RCPT bare CR line end only", {"rcpt": then_close(b"250 2.1.5 ok\r")}, None),
    ("dot '25'", {"dot": b"25\r\n"}, "malformed"),
    ("dot '250-a' then close", {"dot": then_close(b"250-a\r\n")}, "connection lost"),
    ("dot no answer, close", {"dot": CLOSE}, "connection lost"),
    ("dot 451 with control bytes", {"dot": b"451 4.3.0 \x1b[2J\x07\xff\xfe busy\r\n"}, "busy"),
]


@pytest.mark.parametrize("script,want", [t[1:] for t in TEMP], ids=[t[0] for t in TEMP])
def test_hostile_reply_keeps_the_message_queued(make_daemon, hostile, script, want):
    s = hostile(script)
    d = run(make_daemon, s)
    deferred(d, s, want)
    assert not s.messages
    check_spool_clean(d)
    check_log_clean(d)
    assert d.maildir("alice").messages(check=False) == [], "a bounce for a temporary failure"
    recovers(d, s)


# (id, stage -> reply, what Diagnostic-Code must hold, what the DSN must not)
BOUNCE = [
    ("RCPT 550 with a CR inside", {"rcpt": b"550 5.1.1 bad\rX-Injected: yes\r\n"},
     "550 5.1.1 bad?X-Injected: yes", None),
    ("RCPT 550 with a bare LF", {"rcpt": b"550 5.1.1 bad\nX-Injected: yes\r\n"},
     "550 5.1.1 bad", b"X-Injected"),
    ("dot 554 with ESC and 8-bit", {"dot": b"554 5.6.0 \x1b[31mred\xff\xfe\x7f\r\n"},
     "554 5.6.0 ?[31mred???", None),
    ("dot 550 multi-line with CR", {"dot": b"550-5.7.1 one\r\n550-5.7.1 \rtwo\r\n"
                                           b"550 5.7.1 three\r\n"}, "550 5.7.1 three", None),
    ("RCPT 550 of 600 octets", {"rcpt": b"550 5.1.1 " + b"y" * 490 + b"\r\n"},
     "550 5.1.1 yyy", None),
]


@pytest.mark.parametrize("script,diag,absent", [t[1:] for t in BOUNCE],
                         ids=[t[0] for t in BOUNCE])
def test_hostile_refusal_bounces_cleanly(make_daemon, hostile, script, diag, absent):
    s = hostile(script)
    d = run(make_daemon, s)
    md = d.maildir("alice")
    [m] = wait_for(lambda: md.messages(check=False), 8, "the bounce in alice's Maildir")
    wait_queue_empty(d)
    assert printable(m.data), "control or 8-bit bytes in the bounce:\n%r" % m.data
    assert m.data.startswith(b"Return-Path: <>\n")
    _, text, _, per_rcpt, _ = dsn(m.data.split(b"\n", 1)[1].replace(b"\n", b"\r\n"))
    [r] = per_rcpt
    code = str(r["Diagnostic-Code"])
    assert code.startswith("smtp; ") and diag in code, \
        "Diagnostic-Code %r, want it to hold %r" % (code, diag)
    if absent:
        assert absent not in m.data, "%r reached the bounce" % absent
    head = m.data.split(b"\n\n", 1)[0]
    assert not re.search(rb"(?mi)^x-injected:", head), head
    check_spool_clean(d)
    check_log_clean(d)
    assert d.alive()


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return self_signed(str(tmp_path_factory.mktemp("cert")))


def injected_after(conn):
    """The 220 to STARTTLS, then in a segment of its own, before the
    client's handshake, a plain-text reply for the EHLO to come."""
    conn.sock.sendall(b"220 2.0.0 go\r\n")
    time.sleep(0.02)
    conn.sock.sendall(b"250 injected\r\n")
    conn.server.notes.append("injected")
    return True


def test_starttls_injection_in_its_own_segment(make_daemon, hostile, cert):
    """The injected line is read, if at all, as TLS records: the handshake
    fails, the message stays queued, and nothing of it went in clear."""
    s = hostile({"ehlo": b"250-hostile.test\r\n250 STARTTLS\r\n", "starttls": injected_after},
                cert=cert)
    d = run(make_daemon, s)
    why = deferred(d, s)
    assert "TLS" in why or "connection" in why, why
    assert not any(c.upper().startswith((b"MAIL", b"RCPT", b"DATA")) for c in s.commands), \
        "the envelope went out in clear: %r" % s.commands
    assert s.messages == []
    check_spool_clean(d)
    # A smarthost that behaves (and offers STARTTLS properly) gets it, under TLS.
    s.script = dict(GOOD, ehlo=b"250-hostile.test\r\n250 STARTTLS\r\n")
    control(d, "flush")
    wait_for(lambda: s.messages, 8, "the message once STARTTLS works")
    assert s.messages[0][3], "delivered without TLS"
    wait_queue_empty(d)


def test_body_is_dot_stuffed_towards_a_hostile_smarthost(make_daemon, hostile):
    """A message with lines that are only a dot, or start with one, goes
    out as one transaction: the smarthost sees each stuffed, so no line
    of the message ends the DATA early (smuggling outbound)."""
    s = hostile()
    d = relay_daemon(make_daemon, "127.0.0.1:%d" % s.port, extra=no_greet_pause())
    body = (b"a\r\n..\r\n...x\r\n..\r\nMAIL FROM:<evil@x.org>\r\nRCPT TO:<victim@remote.test>"
            b"\r\nDATA\r\nsmuggled\r\n..\r\nend\r\n")
    data = message("dots", body=body)
    submit(d, ["bob@remote.test"], data)
    wait_for(lambda: s.messages, 8, "the message at the smarthost")
    wait_queue_empty(d)
    time.sleep(0.3)
    assert len(s.messages) == 1 and s.sessions == 1, (s.messages, s.commands)
    assert [c for c in s.commands if c.upper().startswith(b"MAIL")] == \
        [b"MAIL FROM:<alice@lan>"], s.commands
    assert s.messages[0][2].endswith(stuff(data)), s.messages[0][2][-300:]
