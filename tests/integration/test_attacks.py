"""Known attacks on mail servers, as tests (issue 8).

SMTP smuggling (CVE-2023-51764 Postfix, CVE-2023-51765 Sendmail,
CVE-2023-51766 Exim) is one class: an end of data other than
<CRLF>.<CRLF> that one hop honours and the next does not.  The sequences
of the advisories (<LF>.<LF>, <LF>.<CRLF>, <CR>.<CRLF>, <CRLF>.<LF>...) and
a NUL before the dot are test_smuggling.NOT_AN_END, sent whole and byte by
byte; here are the remaining shapes (a NUL after the dot, <CR><CR><LF>
after the dot, white space or a second dot before it), the same over TLS,
through the sendmail command, and the absence of BDAT.  The outbound side
(dot-stuffing towards a smarthost) is in test_relay_hostile.py.

STARTTLS/STLS plaintext injection (CVE-2011-0411 class): commands pipelined
with STARTTLS in one write are test_tls.py's
test_plaintext_pipelined_after_starttls_is_discarded and ..._after_stls_...;
the relay client's side is test_relay_tls.py's
test_starttls_reply_injection_is_discarded.  Here: plain text sent after
the 220 in a segment of its own, and more plain text than the input
buffer holds, on submission and POP3.

OpenSMTPD CVE-2020-7247 (a MAIL FROM local part run by a shell): shell
metacharacters in senders; no address reaches a shell, a file name or a
log line unescaped.  Path traversal in recipients, POP3 user names (see
test_pop3_hostile.py), `picomail useradd` and the aliases file.  Header
injection through the sendmail command's -f and -F with the daemon
stopped (with it running: test_sendmail.py).

The open-relay battery of test_open_relay.py (its TRICKS) through every
kind of listener.
"""

import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import time

import pytest

from hostile import Hostile, no_greet_pause, self_signed
from picotest import (BIN, Client, assert_reply, free_port,
                      ipv6_loopback_available, log_value, message, send_transaction, smtp_send,
                      stuff)
from relaytest import Spool, queue_length, relay_daemon, wait_for
from test_open_relay import TRICKS
from test_sendmail import EX_USAGE, assert_spool_empty, delivered, headers_of, sendmail, \
    stopped_daemon
from test_smuggling import FIRST, SECOND, no_smuggled_message, open_data, sync


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return self_signed(str(tmp_path_factory.mktemp("cert")))


def client_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def ports(n):
    out = []
    while len(out) < n:
        p = free_port()
        if p not in out:
            out.append(p)
    return out


def tls_listeners(make_daemon, cert, smarthost=None, **conf):
    """A daemon with d.port (smtp, plain: the first listener), d.smtp_tls
    (smtp starttls), d.sub (submission starttls), d.subs (submission tls),
    d.pop (pop3 starttls) and, with IPv6, d.v6 (smtp on [::1])."""
    smtp_tls, sub, subs, pop = ports(4)
    lines = ["listen smtp 127.0.0.1:%d starttls" % smtp_tls,
             "listen submission 127.0.0.1:%d starttls" % sub,
             "listen submission 127.0.0.1:%d tls" % subs,
             "listen pop3 127.0.0.1:%d starttls" % pop]
    v6 = None
    if ipv6_loopback_available():
        v6 = free_port("::1")
        lines.append("listen smtp [::1]:%d" % v6)
    extra = lines + no_greet_pause() + ["tls_cert %s" % cert[0], "tls_key %s" % cert[1]]
    if smarthost:
        d = relay_daemon(make_daemon, smarthost, extra=extra, start=False, **conf)
    else:
        d = make_daemon(start=False, extra=extra, **conf)
    while d.port in (smtp_tls, sub, subs, pop):
        d.port = free_port()
        d.write_config()
    d.smtp_tls, d.sub, d.subs, d.pop, d.v6 = smtp_tls, sub, subs, pop, v6
    d.start()
    return d


# --------------------------------------------------------------------------
# SMTP smuggling: the shapes test_smuggling.py does not send


# SEQ -> reply to the whole, which runs to the final CRLF.CRLF of SECOND
MORE_NOT_AN_END = [
    (b"\r\n.\x00\r\n", "550 5.6.0", "a NUL after the dot"),
    (b"\r\n.\r\r\n", "550 5.6.0", "CR CR LF after the dot"),
    (b"\r\n\x00\r\n.\r", "550 5.6.0", "a NUL line, then a bare CR after the dot"),
    (b"\r\n .\r\n", "250", "a space before the dot"),
    (b"\r\n\t.\r\n", "250", "a tab before the dot"),
    (b"\r\n..\r\n", "250", "a stuffed dot"),
    (b"\r\n.. \r\n", "250", "a stuffed dot and a space"),
    (b"\r\n\xc2\xa0.\r\n", "250", "a no-break space before the dot"),
]


@pytest.mark.parametrize("seq,want,why", MORE_NOT_AN_END,
                         ids=[m[2] for m in MORE_NOT_AN_END])
def test_more_smuggling_shapes(make_daemon, seq, want, why):
    d = make_daemon(extra=no_greet_pause())
    with d.session() as c:
        open_data(c)
        c.send(FIRST + seq + SECOND)
        assert_reply(c.reply(), want, "one message up to the final CRLF.CRLF, with %s" % why)
        sync(c)
    assert d.maildir("bob").messages() == [], "bob got a smuggled message"
    if want == "250":
        # One message, holding the would-be commands as text.
        [m] = d.maildir("alice").messages()
        assert b"MAIL FROM:<evil@x.org>\nRCPT TO:<bob@lan>\nDATA\n" in m.body, m.body
    else:
        assert d.maildir("alice").messages() == []
        no_smuggled_message(d)


def test_smuggling_inside_tls(make_daemon, cert):
    """The DATA reader is the same under TLS: <LF>.<LF> in one TLS record
    ends nothing."""
    d = tls_listeners(make_daemon, cert)
    with Client(d.host, d.smtp_tls) as c:
        assert_reply(c.reply(), "220", "greeting")
        c.expect("EHLO client.lan", "250")
        c.expect("STARTTLS", "220")
        c.sock = client_ctx().wrap_socket(c.sock)
        c.expect("EHLO client.lan", "250")
        open_data(c)
        c.send(FIRST + b"\n.\n" + SECOND)
        assert_reply(c.reply(), "550 5.6.0", "<LF>.<LF> under TLS")
        sync(c)
    assert d.maildir("alice").messages() == [] and d.maildir("bob").messages() == []
    no_smuggled_message(d)


def test_smuggling_through_the_sendmail_command(make_daemon):
    """sendmail -i takes a lone dot as text; the daemon stores it as one
    message and nothing after it becomes a transaction of its own."""
    d = make_daemon(extra=no_greet_pause())
    text = (b"Subject: sendmail\n\nfirst\n.\nMAIL FROM:<evil@x.org>\nRCPT TO:<bob@lan>\n"
            b"DATA\nsmuggled\n.\n\r\n.\r\nlast\n")
    p = sendmail(d, "-i", "alice@lan", data=text)
    assert p.returncode == 0, p
    [m] = delivered(d, "alice", 1, timeout=5)
    assert m.data.endswith(b"\nfirst\n.\nMAIL FROM:<evil@x.org>\nRCPT TO:<bob@lan>\nDATA\n"
                           b"smuggled\n.\n\n.\nlast\n"), m.data[-200:]
    assert d.maildir("bob").messages(check=False) == []


def test_no_chunking(make_daemon):
    """BDAT (RFC 3030) is a second way to frame a message: not offered, and
    refused like any unknown command."""
    d = make_daemon(extra=no_greet_pause())
    with d.session(helo=None) as c:
        r = c.expect("EHLO client.lan", "250")
        assert not any("CHUNKING" in l for l in r.lines), r
        c.expect("MAIL FROM:<a@example.org>", "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("BDAT 5 LAST", "500 5.5.1|502 5.5.1")
        c.expect("RSET", "250")


# --------------------------------------------------------------------------
# STARTTLS / STLS plain-text injection


def read_until_close(sock, seconds=5.0):
    sock.settimeout(seconds)
    got = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        got += chunk
    return got


INJECT = [
    # (listener attribute, greeting, hello, go-ahead, plain command, its answer)
    ("smtp_tls", b"220 ", b"EHLO client.lan\r\n", b"STARTTLS\r\n", b"220 ", b"NOOP\r\n", b"250"),
    ("sub", b"220 ", b"EHLO client.lan\r\n", b"STARTTLS\r\n", b"220 ", b"NOOP\r\n", b"250"),
    ("pop", b"+OK", b"CAPA\r\n", b"STLS\r\n", b"+OK Begin", b"CAPA\r\n", b"+OK"),
]


@pytest.mark.parametrize("how", ["own segment", "beyond the input buffer"])
@pytest.mark.parametrize("attr,greet,hello,cmd,go,plain,answer", INJECT,
                         ids=[i[0] for i in INJECT])
def test_plain_text_after_starttls_is_never_answered(make_daemon, cert, how, attr, greet,
                                                     hello, cmd, go, plain, answer):
    """Plain text where the TLS handshake should be is not a command: it
    is read, if at all, as TLS records, and the handshake fails."""
    d = tls_listeners(make_daemon, cert)
    s = socket.create_connection(("127.0.0.1", getattr(d, attr)), timeout=5)
    buf = bytearray()

    def line():
        while b"\n" not in buf:
            chunk = s.recv(4096)
            assert chunk, "closed early; got %r" % bytes(buf)
            buf.extend(chunk)
        i = buf.index(b"\n") + 1
        out = bytes(buf[:i])
        del buf[:i]
        return out

    with s:
        assert line().startswith(greet)
        s.sendall(hello)
        while True:                              # the EHLO / CAPA answer
            l = line()
            if (l == b".\r\n") if attr == "pop" else (l[3:4] == b" "):
                break
        if how == "own segment":
            s.sendall(cmd)
            assert line().startswith(go)
            s.sendall(plain * 3)
        else:
            s.sendall(cmd + plain * 3000)        # far more than the 4 KiB input buffer
            assert line().startswith(go)
        rest = bytes(buf) + read_until_close(s)
    assert answer not in rest, "plain text after the go-ahead was answered: %r" % rest[:200]
    assert not rest or rest[:1] == b"\x15", "not a TLS alert: %r" % rest[:40]
    # the listener goes on
    if attr == "pop":
        with socket.create_connection(("127.0.0.1", d.pop), timeout=5) as t:
            assert t.recv(100).startswith(b"+OK")
    else:
        assert smtp_send(d.port, ["alice@lan"], message("after an injection")) == (250, "")


# --------------------------------------------------------------------------
# CVE-2020-7247: shell metacharacters in MAIL FROM


def metachar_senders(tag):
    """(MAIL FROM argument, accepted?) -- tag names a file a shell would
    create if one ever ran the address."""
    return [
        ("<;touch %s;>" % tag, False),                      # the advisory's form
        ("<;touch %s;@example.org>" % tag, False),
        ("<x@example.org> ;touch %s" % tag, False),
        ("<$(touch%s)@example.org>" % tag, False),
        ('<"; touch %s;"@example.org>' % tag, True),
        ('<"$(touch %s)"@example.org>' % tag, True),
        ("<`touch${IFS}%s`@example.org>" % tag, True),
        ("<|touch${IFS}%s@example.org>" % tag, True),
        ('<"x\\";touch %s;\\"y"@example.org>' % tag, True),
        ("<../../../..%s@example.org>" % tag, False),
        ('<"../../../..%s"@example.org>' % tag, True),
        ("<a/../../b@example.org>", False),
        ("<a/b@example.org>", True),
    ]


def test_shell_metacharacters_in_mail_from(make_daemon, hostile_peer, workdir):
    tag = os.path.join(workdir, "pwned")
    d = relay_daemon(make_daemon, "127.0.0.1:%d" % hostile_peer.port, extra=no_greet_pause())
    wrong, accepted = [], []
    for arg, ok in metachar_senders(tag):
        with d.session() as c:
            r = c.cmd("MAIL FROM:" + arg)
            if ok != (r.code == 250) or (not ok and r.code // 100 != 5):
                wrong.append("MAIL FROM:%s -> %r" % (arg, r))
                continue
            if not ok:
                continue
            c.expect("RCPT TO:<alice@lan>", "250")
            c.expect("RCPT TO:<bob@remote.test>", "250")
            c.expect("DATA", "354")
            c.send(stuff(message("sender %d" % len(accepted))) + b".\r\n")
            assert_reply(c.reply(), "250", "end of data")
            accepted.append(arg[1:arg.rindex(">")])
    assert not wrong, "\n".join(wrong)
    wait_for(lambda: len(hostile_peer.messages) == len(accepted) and queue_length(d) == 0, 10,
             "the relayed copies")
    # Each sender arrives as it was sent: Return-Path in the Maildir, MAIL
    # FROM at the smarthost; the files are named by the server, never by it.
    stored = d.maildir("alice").messages()       # checks <unique>,S=,W= names
    assert sorted(m.return_path for m in stored) == sorted(
        ("<%s>" % a).encode() for a in accepted)
    assert sorted(m[0] for m in hostile_peer.messages) == sorted(
        ("MAIL FROM:<%s>" % a).encode() for a in accepted)
    for dirpath, dirs, files in os.walk(d.mail_root):
        assert os.path.relpath(dirpath, d.mail_root).split(os.sep)[0] in (".", "alice"), dirpath
    assert not os.path.exists(tag), "a shell ran an address"
    assert not [p for p in os.listdir(workdir) if "pwned" in p]
    assert "pwned" not in " ".join(os.listdir("/tmp"))
    # The log names each sender whole, on its line, in its from= field
    # (quoted and escaped as src/log.h says).
    log = d.log(1 << 22)
    for a in accepted:
        assert ("from=%s" % log_value("<%s>" % a)) in log, a
    assert sorted(e["from"] for e in d.events("received")) == sorted("<%s>" % a for a in accepted)


@pytest.fixture
def hostile_peer():
    s = Hostile()
    yield s
    s.stop()


def test_queued_sender_with_metacharacters_stays_one_envelope_line(make_daemon, workdir):
    """A queued message's envelope keeps such a sender as one field of one
    line, and the spool's file names are queue ids."""
    dead = free_port()                      # nothing listens: the message stays queued
    d = relay_daemon(make_daemon, "127.0.0.1:%d" % dead, extra=no_greet_pause())
    sender = '"a b;`id`|$(x) > /tmp/y"@example.org'
    with d.session() as c:
        r = send_transaction(c, ["bob@remote.test"], message("queued"), sender=sender)
        assert_reply(r, "250", "queued")
    sp = Spool(d)
    [qid] = sp.names("env")
    assert re.fullmatch(r"[0-9A-F]+", qid), qid
    assert sp.names("msg") == [qid]
    assert sp.envelope(qid)["sender"] == sender
    assert [l for l in sp.env_text(qid).splitlines() if l.startswith("sender ")] == \
        ["sender " + sender]


# --------------------------------------------------------------------------
# Path traversal


TRAVERSAL = [
    ("<../alice@lan>", "501 5.1.3"),
    ('<"../alice"@lan>', "550 5.1.1"),
    ("<alice/../bob@lan>", "501 5.1.3"),
    ('<"alice/../bob"@lan>', "550 5.1.1"),
    ("<a/b@lan>", "550 5.1.1"),
    ("<alice/@lan>", "550 5.1.1"),
    ('<"/etc/passwd"@lan>', "550 5.1.1"),
    ('<"."@lan>', "550 5.1.1"),
    ('<".."@lan>', "550 5.1.1"),
    ("<.alice@lan>", "501 5.1.3"),
    ("<alice.@lan>", "501 5.1.3"),
    ("<~alice@lan>", "550 5.1.1"),
    ("<alice@lan/../../etc>", "501 5.1.3"),
    ("<alice@../lan>", "501 5.1.3"),
    ('<"alice\\/x"@lan>', "550 5.1.1"),
]


@pytest.mark.parametrize("catch_all", [False, True], ids=["plain", "catch-all alias"])
def test_path_traversal_in_rcpt(make_daemon, catch_all):
    """No recipient names a directory: unknown names are refused, or with
    a catch-all alias go to its target; only alice's Maildir ever appears."""
    d = make_daemon(start=False, extra=no_greet_pause())
    if catch_all:
        with open(d.aliases_path, "a") as f:
            f.write("*: alice\n")
    d.start()
    wrong = []
    errors = 0
    c = d.session()
    try:
        c.expect("MAIL FROM:<a@example.org>", "250")
        for arg, want in TRAVERSAL:
            if catch_all and want.startswith("550"):
                want = "250"
            if errors >= 7:                     # stay under the error limit
                c.close()
                c = d.session()
                c.expect("MAIL FROM:<a@example.org>", "250")
                errors = 0
            r = c.cmd("RCPT TO:" + arg)
            errors += r.code // 100 == 5 and r.code != 550
            if not r.matches(want):
                wrong.append("RCPT TO:%s -> %r, want %s" % (arg, r, want))
        if catch_all:
            c.expect("DATA", "354")
            c.send(stuff(message("catch-all")) + b".\r\n")
            assert_reply(c.reply(), "250", "end of data")
    finally:
        c.close()
    assert not wrong, "\n".join(wrong)
    assert sorted(os.listdir(d.mail_root)) == (["alice"] if catch_all else [])
    if catch_all:
        assert len(d.maildir("alice").messages()) == 1


BAD_NAMES = ["../x", "/x", "a/b", "..", ".", ".x", "x/", "x\ny", "Alice", "x:y", "x y",
             "a" * 33, "x\x1b[2J", "\xe9t\xe9"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n) for n in BAD_NAMES])
def test_useradd_refuses_path_like_names(make_daemon, name):
    d = make_daemon(start=False)
    with open(d.users_path, "rb") as f:
        before = f.read()
    p = subprocess.run([BIN, "useradd", name.encode("latin-1"), "-C", d.conf_path],
                       input=b"pw\npw\n", capture_output=True, timeout=15)
    assert p.returncode != 0, "useradd %r: exit 0\n%r" % (name, p.stdout)
    assert b"bad user name" in p.stderr, p.stderr
    with open(d.users_path, "rb") as f:
        assert f.read() == before, "the users file changed"
    assert os.listdir(d.mail_root) == []


@pytest.mark.parametrize("cmd", ["passwd", "userdel"])
def test_passwd_and_userdel_refuse_path_like_names(make_daemon, cmd):
    d = make_daemon(start=False)
    with open(d.users_path, "rb") as f:
        before = f.read()
    for name in ("../alice", "alice/../alice", "/etc/passwd", "ALICE/.."):
        p = subprocess.run([BIN, cmd, name, "-C", d.conf_path], input=b"pw\npw\n",
                           capture_output=True, timeout=15)
        assert p.returncode != 0 and b"no user" in p.stderr, (name, p)
    with open(d.users_path, "rb") as f:
        assert f.read() == before


BAD_ALIASES = [
    "x: ../alice", "x: /etc/passwd", "x: |/bin/sh -c id", "x: :include:/etc/passwd",
    "../x: alice", "x/y: alice", "x: alice/../bob", "x: \"|id\"@lan", "x: alice, ../bob",
    "x: alice\x1b[2J",
]


@pytest.mark.parametrize("line", BAD_ALIASES, ids=[repr(a) for a in BAD_ALIASES])
def test_aliases_that_name_paths_or_programs_are_refused(make_daemon, line):
    """An aliases line that would deliver to a file, a program or a path is
    an error naming file:line; a running daemon keeps its table (SIGHUP)."""
    d = make_daemon(extra=no_greet_pause())
    with open(d.aliases_path, "a") as f:
        f.write(line + "\n")
    p = d.run("check", "-C", d.conf_path)
    assert p.returncode != 0, "check accepted %r" % line
    assert (d.aliases_path + ":4:").encode() in p.stderr + p.stdout, p.stderr
    d.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in d.log(), 5, "the refused reload in the log")
    assert smtp_send(d.port, ["team@lan"], message("team")) == (250, "")
    assert len(d.maildir("alice").messages()) == 1 and len(d.maildir("bob").messages()) == 1
    assert sorted(os.listdir(d.mail_root)) == ["alice", "bob"]


# --------------------------------------------------------------------------
# sendmail -f / -F with the daemon stopped (the spool path)


@pytest.mark.parametrize("name", ["x\nBcc: bob@lan", "x\r\nBcc: bob@lan", "x\n\nbody",
                                  "x\x1b[2Jy"])
def test_F_cannot_inject_headers_into_the_spool(make_daemon, name):
    d = stopped_daemon(make_daemon)
    p = sendmail(d, "-F", name, "alice@lan", data=b"Subject: s\n\nhello\n")
    assert p.returncode in (0, EX_USAGE), p
    if p.returncode == 0:
        d.start()
        [m] = delivered(d, "alice", 1, timeout=10)
        head = m.data.split(b"\n\n", 1)[0]
        assert not re.search(rb"(?mi)^bcc:", head), head
        froms = [l for l in head.split(b"\n") if l.lower().startswith(b"from:")]
        assert len(froms) == 1 and not re.search(rb"[\x00-\x1f\x7f]", froms[0]), froms
        assert m.data.endswith(b"\n\nhello\n"), m.data
        assert delivered(d, "bob", 1, timeout=0.5) == []
    else:
        assert_spool_empty(d)


@pytest.mark.parametrize("sender", ["fred@example.org\nBcc: bob@lan", "fred@example.org\r",
                                    "<fred@example.org>\nX: y"])
def test_bad_f_with_the_daemon_stopped_is_a_usage_error(make_daemon, sender):
    d = stopped_daemon(make_daemon)
    p = sendmail(d, "-f", sender, "alice@lan", data=b"Subject: s\n\nhello\n")
    assert p.returncode == EX_USAGE, (sender, p)
    assert_spool_empty(d)


def test_f_with_metacharacters_is_kept_verbatim(make_daemon):
    d = stopped_daemon(make_daemon)
    sender = '"|touch x;`id`"@example.org'
    p = sendmail(d, "-f", sender, "alice@lan", data=b"Subject: s\n\nhello\n")
    assert p.returncode == 0, p
    d.start()
    [m] = delivered(d, "alice", 1, timeout=10)
    assert m.return_path == ("<%s>" % sender).encode()
    assert headers_of(m.data)["Subject"] == "s"


# --------------------------------------------------------------------------
# The open-relay battery through every listener


def relay_battery(connect, expect_mail):
    """Runs test_open_relay.TRICKS, a fresh session every few tricks
    (refusals count towards the error limit of 10).  expect_mail: the
    reply to MAIL FROM on this listener ("250", or "530 5.7.0" where AUTH
    is required, and then RCPT is out of sequence).  Returns what was
    wrong."""
    bad = []
    c = None
    per_session = 7 if expect_mail == "250" else 4
    for k, (arg, want) in enumerate(TRICKS):
        if k % per_session == 0:
            if c:
                c.close()
            c = connect()
        r = c.cmd("MAIL FROM:<mallory@remote.test>")
        if not r.matches(expect_mail):
            bad.append("MAIL FROM -> %r, want %s" % (r, expect_mail))
        r = c.cmd("RCPT TO:" + arg)
        if r.code // 100 == 2 or not r.matches(want if expect_mail == "250" else "503"):
            bad.append("RCPT TO:%s -> %r, want %s" % (arg, r, want))
        c.expect("RSET", "250")
    c.close()
    return bad


def test_open_relay_battery_through_every_listener(make_daemon, cert, hostile_peer):
    d = tls_listeners(make_daemon, cert, smarthost="127.0.0.1:%d" % hostile_peer.port,
                      relay_from="10.0.0.0/8", plaintext_auth="no")
    ctx = client_ctx()

    def plain(port, host="127.0.0.1"):
        def connect():
            c = Client(host, port)
            assert_reply(c.reply(), "220", "greeting")
            c.expect("EHLO client.lan", "250")
            return c
        return connect

    def starttls(port):
        def connect():
            c = plain(port)()
            c.expect("STARTTLS", "220")
            c.sock = ctx.wrap_socket(c.sock)
            c.expect("EHLO client.lan", "250")
            return c
        return connect

    def implicit(port):
        def connect():
            c = Client("127.0.0.1", port)
            c.sock = ctx.wrap_socket(c.sock)
            assert_reply(c.reply(), "220", "greeting under TLS")
            c.expect("EHLO client.lan", "250")
            return c
        return connect

    sources = iter("127.0.0.%d" % i for i in range(10, 250))

    def failed_auth(port):
        # Each session from its own address: the throttle's delay, per
        # address, stays at its first step.
        def connect():
            c = Client.__new__(Client)
            c.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.sock.settimeout(5)
            c.sock.bind((next(sources), 0))
            c.sock.connect(("127.0.0.1", port))
            c.buf, c.timeout = bytearray(), 5.0
            assert_reply(c.reply(), "220", "greeting")
            c.expect("EHLO client.lan", "250")
            c.expect("STARTTLS", "220")
            c.sock = ctx.wrap_socket(c.sock)
            c.expect("EHLO client.lan", "250")
            c.expect("AUTH PLAIN AGFsaWNlAHdyb25n", "535 5.7.8")     # alice / wrong
            return c
        return connect

    listeners = [
        ("smtp", plain(d.port), "250"),
        ("smtp after STARTTLS", starttls(d.smtp_tls), "250"),
        ("submission without AUTH", plain(d.sub), "530 5.7.0"),
        ("submission after STARTTLS", starttls(d.sub), "530 5.7.0"),
        ("submission after a failed AUTH", failed_auth(d.sub), "530 5.7.0"),
        ("smtps (465)", implicit(d.subs), "530 5.7.0"),
    ]
    if d.v6:
        listeners.append(("smtp on [::1]", plain(d.v6, "::1"), "250"))
    problems = []
    for name, connect, mail in listeners:
        problems += ["%s: %s" % (name, b) for b in relay_battery(connect, mail)]
    time.sleep(0.5)
    assert not problems, "\n".join(problems)
    sp = Spool(d)
    assert sp.names("msg") == [] and sp.names("env") == [] and queue_length(d) == 0
    assert hostile_peer.sessions == 0, "something reached the smarthost: %r" % (
        hostile_peer.commands,)
    # The sendmail command's socket relays by design, for local users
    # only (every user of the box may send mail, as with any sendmail): a
    # unix socket, out of the network's reach; each user is held to their
    # own sender address (test_local_users.py).  The spool around it lets
    # no one list or read the queue.
    st = os.stat(os.path.join(d.spool, "submit"))
    assert stat.S_ISSOCK(st.st_mode) and st.st_mode & 0o777 == 0o666, oct(st.st_mode)
    assert os.stat(d.spool).st_mode & 0o777 == 0o711
    for sub in ("msg", "env", "tmp"):
        assert os.stat(os.path.join(d.spool, sub)).st_mode & 0o777 == 0o700, sub
