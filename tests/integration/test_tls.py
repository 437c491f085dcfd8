"""TLS (issue 4): STARTTLS, implicit TLS, STLS, SMTP AUTH, submission.

Driven with Python's ssl (raw clients from tlstest.py), smtplib and poplib,
every certificate verified against the test CA made at test time (tlstest.Pki).
The clients built on other TLS stacks (openssl s_client, swaks, msmtp,
fetchmail, mpop) are in test_tls_clients.py.
"""

import base64
import os
import poplib
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from picotest import (DaemonExited, assert_reply, expect_replies, free_port, message,
                      smtp_send)
from pop3test import Pop, deliver, mailbox
from tlstest import (HOSTNAME, PASSWORD, SUITE, Pki, PopTls, ReplyTimeout, ServerClosed, Smtp,
                     b64, client_hello, plain_ir, pool_tls, tls_daemon, wait_pool_used)


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="pm-pki-", dir="/tmp")
    try:
        yield Pki(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def ctx(pki):
    return pki.context()


def only(d, user):
    msgs = d.maildir(user).messages()
    assert len(msgs) == 1, "%s has %d messages, want 1" % (user, len(msgs))
    return msgs[0]


def received_with(m):
    """The protocol word of the Received: header (ESMTP, ESMTPS, ...)."""
    r = re.search(rb"\bwith (\S+) id ", m.received)
    assert r, "no 'with PROTO id' in %r" % m.received
    return r.group(1).decode()


def tls_line(kind):
    return b"\t(using TLSv1.2 with cipher " + SUITE[kind].encode() + b")\n"


def assert_tls12(c, kind):
    name, proto, bits = c.cipher()
    assert (proto, name) == ("TLSv1.2", SUITE[kind]), \
        "negotiated %s %s, want TLSv1.2 %s (server preference)" % (proto, name, SUITE[kind])


def closed_without_a_word(port, seconds=3.0, send=b""):
    """Connects; True when the server closes without sending any byte."""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as s:
        if send:
            s.sendall(send)
        got = b""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            except socket.timeout:
                raise AssertionError("port %d neither spoke nor closed within %.0f s "
                                     "(got %r)" % (port, seconds, got))
            if not chunk:
                break
            got += chunk
        return got


# --------------------------------------------------------------------------
# Start-up: keys and certificates


KEY_FILES = {
    # id: (cert attribute, key attribute, suite kind)
    "rsa-pkcs8": (lambda p: p.cert["rsa"], lambda p: p.key["rsa"], "rsa"),
    "rsa-pkcs1": (lambda p: p.cert["rsa"], lambda p: p.rsa_pkcs1, "rsa"),
    "ec-pkcs8": (lambda p: p.cert["ec"], lambda p: p.key["ec"], "ec"),
    "ec-sec1": (lambda p: p.cert["ec"], lambda p: p.ec_sec1, "ec"),
    "ec-chain-via-intermediate": (lambda p: p.chain, lambda p: p.key["ec"], "ec"),
}


@pytest.mark.parametrize("case", sorted(KEY_FILES))
def test_key_and_certificate_formats(make_daemon, pki, ctx, case):
    cert, key, kind = KEY_FILES[case]
    d = tls_daemon(make_daemon, pki, cert=cert(pki), key=key(pki))
    # The client trusts the root only: the chain case needs the server to
    # send the intermediate.
    with Smtp.implicit(d.subs, ctx) as c:
        assert_tls12(c, kind)
        c.expect("EHLO client.lan", "250")
        c.expect("QUIT", "221")


def _der(tag, content):
    n = len(content)
    if n < 0x80:
        head = bytes([n])
    else:
        b = n.to_bytes((n.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(b)]) + b
    return bytes([tag]) + head + content


def _int(octets):
    """A DER INTEGER of that many octets, top bit clear."""
    return _der(0x02, b"\x7f" + b"\x5a" * (octets - 1))


def rsa_key_file(path, nlen, crtlen, pkcs8=False):
    """A PEM RSA private key of the right shape (not a working key) with a
    modulus of nlen octets and each CRT component of crtlen: BearSSL 0.6's
    decoder would copy components of more than 1536 octets in all past its
    context, so picomail must refuse them before it looks."""
    body = _der(0x30, _der(0x02, b"\x00") + _int(nlen) + _int(3) + _int(nlen)
                + b"".join(_int(crtlen) for _ in range(5)))
    name = "RSA PRIVATE KEY"
    if pkcs8:
        algo = _der(0x30, _der(0x06, bytes.fromhex("2a864886f70d010101")) + b"\x05\x00")
        body = _der(0x30, _der(0x02, b"\x00") + algo + _der(0x04, body))
        name = "PRIVATE KEY"
    b64 = base64.encodebytes(body).decode().replace("\n", "")
    with open(path, "w") as f:
        f.write("-----BEGIN %s-----\n" % name)
        for i in range(0, len(b64), 64):
            f.write(b64[i:i + 64] + "\n")
        f.write("-----END %s-----\n" % name)
    return path


def _bad(pki, workdir, case):
    """(tls_cert, tls_key, the file the message must name)."""
    garbage = os.path.join(workdir, "garbage.key")
    with open(garbage, "w") as f:
        f.write("this is not a key\n")
    truncated = os.path.join(workdir, "truncated.key")
    with open(pki.key["rsa"]) as f:
        text = f.read()
    with open(truncated, "w") as f:
        f.write(text[:len(text) // 2])
    return {
        "expired-cert": (pki.expired, pki.key["rsa"], pki.expired),
        "mismatched-rsa-key": (pki.cert["rsa"], pki.other_rsa, pki.other_rsa),
        "mismatched-ec-key": (pki.cert["ec"], pki.other_ec, pki.other_ec),
        "ec-key-for-rsa-cert": (pki.cert["rsa"], pki.key["ec"], pki.key["ec"]),
        "key-not-pem": (pki.cert["rsa"], garbage, garbage),
        "key-truncated": (pki.cert["rsa"], truncated, truncated),
        "key-missing": (pki.cert["rsa"], os.path.join(workdir, "nonexistent.key"),
                        os.path.join(workdir, "nonexistent.key")),
        "cert-is-a-key": (pki.key["rsa"], pki.key["rsa"], pki.key["rsa"]),
    }.get(case) or _oversized(pki, workdir, case)


def _oversized(pki, workdir, case):
    key = os.path.join(workdir, case + ".key")
    if case.startswith("key-encrypted"):
        cmd = (["openssl", "pkey", "-in", pki.key["ec"], "-aes256"] if case.endswith("pkcs8")
               else ["openssl", "ec", "-in", pki.ec_sec1, "-aes256"])
        subprocess.run(cmd + ["-passout", "pass:secret", "-out", key], check=True,
                       capture_output=True, timeout=30)
        return pki.cert["ec"], key, key
    nlen, crtlen, pkcs8 = {
        "rsa-8192-bits": (1024, 300, False),
        "rsa-8192-bits-pkcs8": (1024, 300, True),
        "rsa-components-overflow": (512, 400, False),
        "rsa-components-overflow-pkcs8": (512, 400, True),
    }[case]
    return pki.cert["rsa"], rsa_key_file(key, nlen, crtlen, pkcs8), key


@pytest.mark.parametrize("case", ["expired-cert", "mismatched-rsa-key", "mismatched-ec-key",
                                  "ec-key-for-rsa-cert", "key-not-pem", "key-truncated",
                                  "key-missing", "cert-is-a-key", "rsa-8192-bits",
                                  "rsa-8192-bits-pkcs8", "rsa-components-overflow",
                                  "rsa-components-overflow-pkcs8", "key-encrypted-pkcs8",
                                  "key-encrypted-traditional"])
def test_bad_key_or_certificate_is_a_startup_error(make_daemon, pki, workdir, case):
    cert, key, named = _bad(pki, workdir, case)
    d = tls_daemon(make_daemon, pki, cert=cert, key=key, start=False)
    # picomail check loads the key material as serve does, and says the same.
    p = d.run("check", "-C", d.conf_path)
    out = (p.stdout + p.stderr).decode(errors="replace")
    assert p.returncode == 1, "picomail check passed what serve refuses (%s): %s" % (case, out)
    assert named in out, "picomail check does not name %s: %s" % (named, out)
    with pytest.raises(DaemonExited) as e:
        d.start()
    assert e.value.returncode == 1, "picomail serve exit %r, want 1\n%s" % (
        e.value.returncode, e.value.log)
    assert named in e.value.log, "the start-up error does not name %s:\n%s" % (named, e.value.log)
    if case == "expired-cert":
        assert "expired" in e.value.log, e.value.log
    if case.startswith("rsa-8192"):
        assert "at most 4096" in e.value.log and "at most 4096" in out, e.value.log
    if case.startswith("rsa-components"):
        assert "RSA key components too large" in e.value.log, e.value.log
    if case.startswith("key-encrypted"):
        assert "openssl pkey -in %s -out KEY" % named in out, out


def test_rsa_4096_key_is_taken(make_daemon, pki, workdir, ctx):
    """The size check stops at what BearSSL takes, not before: a real
    4096-bit key and its certificate serve a handshake."""
    key, cert = os.path.join(workdir, "r4096.key"), os.path.join(workdir, "r4096.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:4096", "-out", key], check=True, capture_output=True,
                   timeout=120)
    pki._sign(key, cert, pki.ca, pki.ca_key, "server.ext")
    d = tls_daemon(make_daemon, pki, cert=cert, key=key)
    assert d.run("check", "-C", d.conf_path).returncode == 0
    with Smtp.implicit(d.subs, ctx) as c:
        assert_tls12(c, "rsa")
        c.expect("QUIT", "221")


def test_tls_listener_needs_cert_and_key(make_daemon, workdir, pki):
    for extra, conf in ((["listen submission 127.0.0.1:%d tls"], {}),
                        (["listen pop3 127.0.0.1:%d starttls"], {}),
                        (["listen submission 127.0.0.1:%d starttls"], {"tls_cert": pki.cert["rsa"]})):
        port = free_port()
        d = make_daemon(start=False, extra=[extra[0] % port], **conf)
        p = d.run("check", "-C", d.conf_path)
        assert p.returncode == 1, "picomail check accepted %r without tls_cert/tls_key: %s" % (
            extra, p.stdout + p.stderr)
        assert b"tls_cert" in p.stdout + p.stderr, p.stdout + p.stderr
        with pytest.raises(DaemonExited) as e:
            d.start()
        assert e.value.returncode == 1


def test_sighup_reloads_keys_and_keeps_them_when_bad(make_daemon, pki, workdir, ctx):
    cert, key = os.path.join(workdir, "cert.pem"), os.path.join(workdir, "key.pem")
    shutil.copy(pki.cert["rsa"], cert)
    shutil.copy(pki.key["rsa"], key)
    d = tls_daemon(make_daemon, pki, cert=cert, key=key)
    old = Smtp.implicit(d.subs, ctx)
    assert_tls12(old, "rsa")
    old.expect("EHLO client.lan", "250")

    def replace(src, dst):
        tmp = dst + ".new"
        shutil.copy(src, tmp)
        os.rename(tmp, dst)

    replace(pki.cert["ec"], cert)
    replace(pki.ec_sec1, key)
    d.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while True:
        with Smtp.implicit(d.subs, ctx) as c:
            got = c.cipher()[0]
        if got == SUITE["ec"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got == SUITE["ec"], "after SIGHUP with an EC key, new sessions still get %s" % got
    # the session started before the reload goes on with its keys
    old.expect("NOOP", "250")
    old.login()
    old.expect("QUIT", "221")
    old.close()

    # A bad pair on the next SIGHUP: logged, naming the file; the EC keys stay.
    replace(pki.other_rsa, key)
    before = len(d.log(tail=1 << 20))
    d.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while key not in d.log(tail=1 << 20)[before:] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert key in d.log(tail=1 << 20)[before:], \
        "SIGHUP with a mismatched key: nothing in the log names %s:\n%s" % (key, d.log())
    assert d.alive(), "the daemon died on a SIGHUP with a bad key"
    with Smtp.implicit(d.subs, ctx) as c:
        assert_tls12(c, "ec")
        c.expect("EHLO client.lan", "250")
        c.login()


# --------------------------------------------------------------------------
# SMTP: STARTTLS and implicit TLS


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_starttls_raw_session(make_daemon, pki, ctx, kind):
    d = tls_daemon(make_daemon, pki, kind=kind)
    assert d.status()["pool.tls"] == "0/8", "default tls_sessions is 8"
    with Smtp.greeted(d.port) as c:
        assert "STARTTLS" in c.keywords, "EHLO before TLS on a starttls listener: %r" % c.keywords
        assert "AUTH" not in c.keywords, "AUTH offered in clear with plaintext_auth no"
        c.expect("MAIL FROM:<sender@example.org>", "250")
        c.expect("STARTTLS", "503")          # not inside a transaction
        c.expect("RSET", "250")
        c.starttls(ctx)
        assert_tls12(c, kind)
        assert pool_tls(d) == (1, 8)
        # RFC 3207 4.2: everything before TLS is forgotten, EHLO needed again
        c.expect("MAIL FROM:<sender@example.org>", "503")
        c.ehlo()
        assert "STARTTLS" not in c.keywords, "STARTTLS offered again under TLS"
        assert c.auth_line == ["AUTH PLAIN LOGIN"], "EHLO under TLS: %r" % c.auth_line
        c.expect("STARTTLS", "554 5.5.1")
        # the smtp listener takes local mail without AUTH
        c.expect("MAIL FROM:<sender@example.org>", "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        c.send(message("over starttls") + b".\r\n")
        assert_reply(c.reply(), "250", "end of data")
        c.expect("QUIT", "221")
    m = only(d, "alice")
    assert received_with(m) == "ESMTPS"
    assert tls_line(kind) in m.received, m.received
    assert wait_pool_used(d, 0) == 0, "TLS slot not given back after QUIT"


@pytest.mark.parametrize("kind,mech,initial", [
    ("rsa", "PLAIN", True), ("rsa", "PLAIN", False), ("rsa", "LOGIN", True),
    ("rsa", "LOGIN", False), ("ec", "PLAIN", True), ("ec", "LOGIN", False)])
def test_smtplib_starttls_login_and_send(make_daemon, pki, ctx, kind, mech, initial):
    d = tls_daemon(make_daemon, pki, kind=kind)
    with smtplib.SMTP("127.0.0.1", d.sub, local_hostname="client.lan", timeout=10) as s:
        s.ehlo()
        assert s.has_extn("starttls") and not s.has_extn("auth")
        code, _ = s.starttls(context=ctx)     # verified, hostname 127.0.0.1 (IP SAN)
        assert code == 220
        assert s.sock.version() == "TLSv1.2" and s.sock.cipher()[0] == SUITE[kind]
        s.ehlo()
        assert not s.has_extn("starttls")
        assert s.esmtp_features.get("auth", "").split() == ["PLAIN", "LOGIN"]
        s.user, s.password = "alice", PASSWORD
        auth = s.auth_plain if mech == "PLAIN" else s.auth_login
        code, text = s.auth(mech, auth, initial_response_ok=initial)
        assert (code, text[:5]) == (235, b"2.7.0"), (code, text)
        refused = s.sendmail("alice@lan", ["bob@lan"], message("submitted %s" % mech))
        assert refused == {}
    m = only(d, "bob")
    assert m.return_path == b"<alice@lan>"
    assert received_with(m) == "ESMTPSA", m.received
    assert tls_line(kind) in m.received, m.received


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_smtp_ssl_implicit_tls(make_daemon, pki, ctx, kind):
    d = tls_daemon(make_daemon, pki, kind=kind)
    with smtplib.SMTP_SSL("127.0.0.1", d.subs, local_hostname="client.lan", timeout=10,
                          context=ctx) as s:
        assert s.sock.version() == "TLSv1.2" and s.sock.cipher()[0] == SUITE[kind]
        s.ehlo()
        assert not s.has_extn("starttls"), "STARTTLS offered on an implicit-TLS port"
        assert s.esmtp_features.get("auth", "").split() == ["PLAIN", "LOGIN"]
        s.login("alice", PASSWORD)
        assert s.sendmail("", ["alice@lan"], message("via 465")) == {}
    m = only(d, "alice")
    assert m.return_path == b"<>"
    assert received_with(m) == "ESMTPSA"
    assert tls_line(kind) in m.received


def big_body(lines=9000):
    """About 70 bytes a line: 9000 lines are 600 KB."""
    return b"".join(b"%06d the quick brown fox jumps over the lazy dog ..........\r\n" % i
                    for i in range(lines))


@pytest.mark.parametrize("how", ["smtps", "starttls"])
def test_large_message_submitted_over_tls(make_daemon, pki, ctx, how):
    """600 KB of DATA: many TLS records, each bigger than the 4 KB input
    buffer.  (Any message over about 4 KB exercises this.)"""
    d = tls_daemon(make_daemon, pki)
    body = big_body()
    if how == "smtps":
        s = smtplib.SMTP_SSL("127.0.0.1", d.subs, local_hostname="client.lan", timeout=3,
                             context=ctx)
    else:
        s = smtplib.SMTP("127.0.0.1", d.sub, local_hostname="client.lan", timeout=3)
        s.starttls(context=ctx)
    try:
        s.login("alice", PASSWORD)
        try:
            s.sendmail("alice@lan", ["bob@lan"], message("large", body=body))
        except (socket.timeout, smtplib.SMTPServerDisconnected) as e:
            raise AssertionError("600 KB over %s: no reply to the end of data within 3 s "
                                 "(%s: %s)" % (how, type(e).__name__, e)) from None
    finally:
        s.close()
    m = only(d, "bob")
    assert m.body.endswith(body.replace(b"\r\n", b"\n"))


def test_pipelined_transactions_over_tls(make_daemon, pki, ctx):
    d = tls_daemon(make_daemon, pki)
    small = message("small")
    with Smtp.implicit(d.subs, ctx) as c:
        c.ehlo()
        assert "PIPELINING" in c.keywords
        c.login()
        # two transactions and QUIT in one write (one TLS record)
        c.send(b"MAIL FROM:<alice@lan>\r\nRCPT TO:<bob@lan>\r\nDATA\r\n" + small +
               b".\r\nMAIL FROM:<alice@lan>\r\nRCPT TO:<alice@lan>\r\nDATA\r\n" + small +
               b".\r\nQUIT\r\n")
        expect_replies(c, ["250", "250", "354", "250", "250", "250", "354", "250", "221"])
    assert len(d.maildir("bob").messages()) == 1 and len(d.maildir("alice").messages()) == 1


def test_pipelined_commands_beyond_the_input_buffer_over_tls(make_daemon, pki, ctx):
    """800 commands (4.8 KB) in one write: more than the 4 KB input buffer
    holds, decrypted from one TLS record.  SMTP and POP3."""
    d = tls_daemon(make_daemon, pki)
    deliver(d, "alice", message("one"))
    stalled = []
    with Smtp.implicit(d.subs, ctx, timeout=2) as c:
        c.ehlo()
        c.send(b"NOOP\r\n" * 800 + b"QUIT\r\n")
        got = []
        try:
            while len(got) < 801:
                got.append(c.reply().code)
        except (ReplyTimeout, ServerClosed) as e:
            stalled.append("SMTP: %d of 801 replies, then %s" % (len(got), e))
        else:
            assert got == [250] * 800 + [221]
    with PopTls.implicit(d.pops, ctx, timeout=2) as p:
        p.login()
        p.send(b"NOOP\r\n" * 800 + b"QUIT\r\n")
        got = []
        try:
            while len(got) < 801:
                got.append(p.status())
        except (ReplyTimeout, ServerClosed) as e:
            stalled.append("POP3: %d of 801 replies, then %s" % (len(got), e))
        else:
            assert all(r.startswith("+OK") for r in got), got[:5]
    assert not stalled, "800 NOOPs and QUIT in one write under TLS:\n" + "\n".join(stalled)


def test_large_messages_retrieved_over_tls(make_daemon, pki, ctx):
    """RETR of 600 KB through TLS (POP3S and STLS); delivered in clear."""
    d = tls_daemon(make_daemon, pki)
    for data in (message("large", body=big_body()), message("small"),
                 message("dots", body=b".\r\n..\r\n.x\r\n" * 2000)):
        code, text = smtp_send(d.plain, ["bob@lan"], data)
        assert code == 250, (code, text)
    stored = mailbox(d, "bob")
    assert len(stored) == 3
    for how in ("pop3s", "stls"):
        if how == "pop3s":
            p = poplib.POP3_SSL("127.0.0.1", d.pops, timeout=5, context=ctx)
        else:
            p = poplib.POP3("127.0.0.1", d.pop, timeout=5)
            p.stls(context=ctx)
        try:
            p.user("bob")
            p.pass_(PASSWORD)
            for i, m in enumerate(stored, 1):
                _, lines, _ = p.retr(i)
                got = b"\r\n".join(lines) + b"\r\n"
                assert got == m.wire, "RETR %d over %s differs (%d octets, want %d)" % (
                    i, how, len(got), len(m.wire))
        finally:
            p.quit()


def test_implicit_tls_banner_comes_after_the_handshake(make_daemon, pki, ctx):
    d = tls_daemon(make_daemon, pki)
    # Nothing in clear on a TLS port: the server waits for the ClientHello.
    with socket.create_connection(("127.0.0.1", d.subs), timeout=5) as s:
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            data = s.recv(100)
            raise AssertionError("the server spoke first on an implicit-TLS port: %r" % data)
        s.settimeout(5)   # the handshake gets the usual time (qemu, a loaded machine)
        t = ctx.wrap_socket(s, server_hostname=HOSTNAME)
        t.settimeout(5)
        assert t.recv(200).startswith(b"220 test.lan ")
    with socket.create_connection(("127.0.0.1", d.pops), timeout=5) as s:
        t = ctx.wrap_socket(s, server_hostname=HOSTNAME)
        t.settimeout(5)
        assert t.recv(200).startswith(b"+OK")


def test_received_says_tls_and_auth(make_daemon, pki, ctx):
    d = tls_daemon(make_daemon, pki, plaintext=True)
    # ESMTP: clear, no AUTH
    with Smtp.greeted(d.plain) as c:
        assert "AUTH" in c.keywords, "plaintext_auth yes: AUTH offered in clear"
        assert "STARTTLS" not in c.keywords, "STARTTLS on a listener without the flag"
        c.expect("MAIL FROM:<a@example.org>", "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        c.send(message("clear") + b".\r\n")
        assert_reply(c.reply(), "250")
        # ESMTPA: clear with AUTH (plaintext_auth yes)
        c.login()
        c.expect("MAIL FROM:<alice@lan>", "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        c.send(message("clear auth") + b".\r\n")
        assert_reply(c.reply(), "250")
    # ESMTPS: STARTTLS, no AUTH; ESMTPSA: STARTTLS and AUTH
    with Smtp.greeted(d.port) as c:
        c.starttls(ctx)
        c.ehlo()
        c.expect("MAIL FROM:<b@example.org>", "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        c.send(message("tls") + b".\r\n")
        assert_reply(c.reply(), "250")
        c.login()
        c.expect("MAIL FROM:<alice@lan>", "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        c.send(message("tls auth") + b".\r\n")
        assert_reply(c.reply(), "250")
    got = {}
    for m in d.maildir("alice").messages():
        subj = re.search(rb"\nSubject: (.*)\n", m.data).group(1).decode()
        got[subj] = (received_with(m), b"(using TLSv1.2" in m.received)
    assert got == {"clear": ("ESMTP", False), "clear auth": ("ESMTPA", False),
                   "tls": ("ESMTPS", True), "tls auth": ("ESMTPSA", True)}, got


# --------------------------------------------------------------------------
# SMTP AUTH


def test_auth_refused_in_clear(make_daemon, pki, ctx):
    d = tls_daemon(make_daemon, pki)      # plaintext_auth no (the default)
    for port in (d.port, d.plain, d.sub):
        with Smtp.greeted(port) as c:
            assert "AUTH" not in c.keywords, "port %d offers AUTH in clear" % port
            c.expect("AUTH PLAIN " + plain_ir(), "538 5.7.11")
            c.expect("AUTH LOGIN", "538 5.7.11")
            c.expect("NOOP", "250")
    # submission: no mail without AUTH, in clear or under TLS
    with Smtp.greeted(d.sub) as c:
        c.expect("MAIL FROM:<alice@lan>", "530 5.7.0")
        c.starttls(ctx)
        c.ehlo()
        c.expect("MAIL FROM:<alice@lan>", "530 5.7.0")
        c.expect("MAIL FROM:<>", "530 5.7.0")
        c.login()
        c.expect("MAIL FROM:<alice@lan>", "250")


AUTH_STEPS = [
    # (line, expected reply, exact text of the reply if given); the server
    # ends a session after 10 errors: a few steps per session.
    [
        ("AUTH PLAIN", "334", "334 "),
        ("*", "501 5.0.0", None),
        ("AUTH LOGIN", "334", "334 VXNlcm5hbWU6"),
        ("*", "501 5.0.0", None),
        ("AUTH LOGIN", "334", "334 VXNlcm5hbWU6"),
        (b64("alice"), "334", "334 UGFzc3dvcmQ6"),
        ("*", "501 5.0.0", None),
        ("AUTH LOGIN " + b64("alice"), "334", "334 UGFzc3dvcmQ6"),
        ("*", "501 5.0.0", None),
        ("NOOP", "250", None),
    ], [
        ("AUTH PLAIN !!!!", "501 5.5.2", None),
        ("AUTH PLAIN", "334", "334 "),
        ("not base64 at all", "501 5.5.2", None),
        ("AUTH LOGIN", "334", None),
        ("@@@@", "501 5.5.2", None),
        ("AUTH LOGIN " + b64("alice"), "334", None),
        ("%%%%", "501 5.5.2", None),
        ("AUTH PLAIN " + b64("alice\0" + PASSWORD), "501 5.5.2", None),   # one NUL
        ("AUTH CRAM-MD5", "504 5.5.4", None),
        ("NOOP", "250", None),
        # still not authenticated
        ("MAIL FROM:<alice@lan>", "530 5.7.0", None),
    ],
]


@pytest.mark.parametrize("part", [0, 1])
def test_auth_cancel_and_bad_base64(make_daemon, pki, ctx, part):
    d = tls_daemon(make_daemon, pki)
    with Smtp.implicit(d.subs, ctx) as c:
        c.ehlo()
        for line, want, exact in AUTH_STEPS[part]:
            r = c.expect(line, want)
            if exact is not None:
                assert r.lines[-1] == exact, "C: %s\nS: %r\nwant %r" % (line, r, exact)
        c.login()
        c.expect("QUIT", "221")
    assert "AUTH failed" not in d.log(), "a cancelled or undecodable AUTH counted as a failure"


def test_auth_continuations_and_twice(make_daemon, pki, ctx):
    d = tls_daemon(make_daemon, pki)
    with Smtp.implicit(d.subs, ctx) as c:
        c.ehlo()
        # "=" is an empty response: an empty user name, then a failure
        c.expect("AUTH LOGIN", "334")
        r = c.expect("=", "334")
        assert r.lines[-1] == "334 UGFzc3dvcmQ6", r
        t = time.monotonic()
        c.expect(b64(PASSWORD), "535 5.7.8")
        assert time.monotonic() - t >= 0.15, "a failed AUTH answered without the throttle delay"
        # LOGIN without initial response, all the way
        c.expect("AUTH LOGIN", "334")
        c.expect(b64("alice"), "334")
        c.expect(b64(PASSWORD), "235 2.7.0")
        c.expect("AUTH PLAIN " + plain_ir(), "503 5.5.1")
        c.expect("AUTH LOGIN", "503 5.5.1")
        c.expect("MAIL FROM:<alice@lan>", "250")
        c.expect("QUIT", "221")
    with Smtp.implicit(d.subs, ctx) as c:
        c.ehlo()
        # PLAIN with "334 " then the response, and an authzid equal to the user
        c.expect("AUTH PLAIN", "334")
        c.expect(plain_ir(authzid="alice"), "235 2.7.0")
        c.expect("MAIL FROM:<alice@lan>", "250")
        c.expect("AUTH PLAIN " + plain_ir(), "503 5.5.1")


def test_auth_plain_empty_response_and_wrong_authzid(make_daemon, pki, ctx):
    d = tls_daemon(make_daemon, pki)
    with Smtp.implicit(d.subs, ctx) as c:
        c.ehlo()
        c.expect("AUTH PLAIN", "334")
        # An empty PLAIN message is malformed (or bad credentials).
        c.expect("=", "501 5.5.2|535 5.7.8")
        # authzid bob, authcid alice: not allowed (RFC 4616: may act as bob?)
        c.expect("AUTH PLAIN " + plain_ir(authzid="bob"), "535 5.7.8|501 5.5.2")
        c.expect("AUTH PLAIN " + plain_ir(password="wrong"), "535 5.7.8")
        c.login()


def test_auth_failures_throttled_per_address_and_shared_with_pop3(make_daemon, pki, ctx):
    d = tls_daemon(make_daemon, pki)
    bad = plain_ir(password="wrong")

    def smtp_failure(c):
        t = time.monotonic()
        c.expect("AUTH PLAIN " + bad, "535 5.7.8")
        return time.monotonic() - t

    def pop_failure(p):
        p.ok("USER alice")
        t = time.monotonic()
        r = p.cmd("PASS wrong", timeout=15)
        assert r.startswith("-ERR [AUTH]"), r
        return time.monotonic() - t

    delays = []
    c = Smtp.implicit(d.subs, ctx)
    c.ehlo()
    for _ in range(3):
        delays.append(smtp_failure(c))                 # 0.2, 0.4, 0.8

    # The 4th failure, by POP3 (the same address): 1.6 s.  Meanwhile the
    # server serves everyone else at once, and another address starts at 0.2.
    p = PopTls.implicit(d.pops, ctx)
    result = {}
    th = threading.Thread(target=lambda: result.update(pop=pop_failure(p)))
    th.start()
    time.sleep(0.2)
    t = time.monotonic()
    with Smtp.implicit(d.subs, ctx) as other:
        other.ehlo()
        other.expect("NOOP", "250")
    busy = time.monotonic() - t
    with Smtp.implicit(d.subs, ctx, source="127.0.0.2") as other:
        other.ehlo()
        elsewhere = smtp_failure(other)
    th.join(10)
    assert not th.is_alive(), "POP3 login failure not answered within 10 s"
    delays.append(result["pop"])
    delays.append(smtp_failure(c))                     # 3.2
    want = [0.2, 0.4, 0.8, 1.6, 3.2]
    for i, (got, w) in enumerate(zip(delays, want)):
        assert w * 0.9 <= got <= w + 0.7, \
            "failure %d answered after %.2f s, want %.1f s (all: %s)" % (
                i + 1, got, w, ", ".join("%.2f" % x for x in delays))
    assert busy < 1.0, "another client waited %.2f s during a throttle delay" % busy
    assert 0.15 <= elsewhere <= 0.9, \
        "first failure from 127.0.0.2 answered after %.2f s: the throttle is per address" % elsewhere

    # A success is answered at once and forgets the failures.
    t = time.monotonic()
    c.login()
    assert time.monotonic() - t < 0.5, "a good password waited %.2f s" % (time.monotonic() - t)
    c.close()
    p.close()
    with Smtp.implicit(d.subs, ctx) as c2:
        c2.ehlo()
        again = smtp_failure(c2)
    assert 0.15 <= again <= 0.9, "after a success the next failure waited %.2f s, want 0.2" % again


# --------------------------------------------------------------------------
# Submission: who may send as whom


def test_submission_sender_must_be_the_user(make_daemon, pki, ctx):
    # relay_from: not loopback, so only AUTH lets mail leave
    d = tls_daemon(make_daemon, pki, relay_from="192.0.2.0/24")
    with Smtp.greeted(d.port) as c:
        c.starttls(ctx)
        c.ehlo()
        c.expect("MAIL FROM:<x@example.org>", "250")
        c.expect("RCPT TO:<someone@example.org>", "554 5.7.1")     # TLS is not AUTH
        c.expect("RCPT TO:<alice@lan>", "250")
    with Smtp.implicit(d.subs, ctx) as c:
        c.ehlo()
        c.expect("MAIL FROM:<alice@lan>", "530 5.7.0")
        c.login("alice")
        for sender, want in [("<bob@lan>", "553 5.7.1"), ("<bob@localhost>", "553 5.7.1"),
                             ("<alice@example.org>", "553 5.7.1"), ("<nobody@lan>", "553 5.7.1"),
                             ("<alice@lan>", "250"), ("<ALICE@localhost>", "250"),
                             ("<al@lan>", "250"), ("<postmaster@lan>", "250"), ("<>", "250")]:
            c.expect("MAIL FROM:%s" % sender, want)
            if want == "250":
                c.expect("RSET", "250")
        # Remote recipients: refused until relaying exists, then accepted
        # (queued) for an authenticated user.
        c.expect("MAIL FROM:<al@lan>", "250")
        c.expect("RCPT TO:<someone@example.org>", "554 5.7.1|250")
        c.expect("RSET", "250")
        c.expect("MAIL FROM:<al@lan>", "250")
        c.expect("RCPT TO:<bob@lan>", "250")
        c.expect("DATA", "354")
        c.send(message("from al") + b".\r\n")
        assert_reply(c.reply(), "250")
    m = only(d, "bob")
    assert m.return_path == b"<al@lan>"
    assert received_with(m) == "ESMTPSA"


def test_sender_check_no(make_daemon, pki, ctx):
    d = tls_daemon(make_daemon, pki, sender_check="no")
    with Smtp.greeted(d.sub) as c:
        c.starttls(ctx)
        c.ehlo()
        c.login("bob")
        c.expect("MAIL FROM:<alice@lan>", "250")
        c.expect("RSET", "250")
        c.expect("MAIL FROM:<anyone@example.org>", "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        c.send(message("sender_check no") + b".\r\n")
        assert_reply(c.reply(), "250")
    assert only(d, "alice").return_path == b"<anyone@example.org>"


# --------------------------------------------------------------------------
# STARTTLS / STLS abuse


def test_starttls_not_offered_or_already_active(make_daemon, pki, ctx):
    d = tls_daemon(make_daemon, pki)
    with Smtp.greeted(d.plain) as c:
        assert "STARTTLS" not in c.keywords
        c.expect("STARTTLS", "502 5.5.1")
        c.expect("NOOP", "250")
    with Smtp.greeted(d.port) as c:
        c.expect("STARTTLS now", "501")
        c.expect("NOOP", "250")
    with Smtp.implicit(d.subs, ctx) as c:
        c.ehlo()
        assert "STARTTLS" not in c.keywords
        c.expect("STARTTLS", "554 5.5.1")
        c.expect("NOOP", "250")


@pytest.mark.parametrize("after", [b"HELP\r\n", b"RSET\r\nNOOP\r\n",
                                   b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<alice@lan>\r\n"])
def test_plaintext_pipelined_after_starttls_is_discarded(make_daemon, pki, ctx, after):
    d = tls_daemon(make_daemon, pki)
    with Smtp.greeted(d.port) as c:
        c.send(b"STARTTLS\r\n" + after)
        assert_reply(c.reply(), "220 2.0.0", "STARTTLS")
        assert c.quiet(0.3), "a reply in clear after STARTTLS: %r" % bytes(c.buf)
        c.sock = ctx.wrap_socket(c.sock, server_hostname=HOSTNAME)
        assert c.quiet(0.3), "the commands sent in clear were answered under TLS: %r" % bytes(c.buf)
        c.expect("RCPT TO:<alice@lan>", "503")     # no transaction was carried over
        c.ehlo()
        assert c.quiet(0.3), "more than one reply after EHLO: %r" % bytes(c.buf)
        c.expect("NOOP", "250")
        c.expect("QUIT", "221")
    assert d.maildir("alice").messages() == []


def test_plaintext_pipelined_after_stls_is_discarded(make_daemon, pki, ctx):
    d = tls_daemon(make_daemon, pki)
    deliver(d, "alice", message("for pop"))
    with PopTls(d.pop) as p:
        p.send(b"STLS\r\nUSER alice\r\nCAPA\r\n")
        assert p.status() == "+OK Begin TLS negotiation"
        assert p.quiet(0.3), "a reply in clear after STLS: %r" % bytes(p.buf)
        p.sock = ctx.wrap_socket(p.sock, server_hostname=HOSTNAME)
        assert p.quiet(0.3), "the commands sent in clear were answered under TLS: %r" % bytes(p.buf)
        p.err("PASS %s" % PASSWORD)                 # USER was not carried over
        p.login()
        assert p.stat()[0] == 1


@pytest.mark.parametrize("port_attr", ["subs", "pops", "port", "pop"])
def test_garbage_instead_of_client_hello(make_daemon, pki, ctx, port_attr):
    d = tls_daemon(make_daemon, pki)
    port = getattr(d, port_attr)
    for junk in (b"EHLO client.lan\r\n", b"\x16\x03\x01\x00\x05hello", os.urandom(300),
                 b"\x16\x03\x03\xff\xff" + os.urandom(64), b"\x80\x2e\x01\x03\x01" + b"\0" * 46):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            if port_attr in ("port", "pop"):
                f = s.makefile("rb")
                f.readline()                        # greeting
                s.sendall(b"STARTTLS\r\n" if port_attr == "port" else b"STLS\r\n")
                f.readline()
            s.sendall(junk)
            got = b""
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    chunk = s.recv(4096)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                got += chunk
            else:
                raise AssertionError("no close after %r" % junk[:20])
            # at most a TLS alert, never a protocol reply in clear
            assert got == b"" or got[:1] == b"\x15", "answer to %r: %r" % (junk[:20], got[:100])
    assert wait_pool_used(d, 0) == 0, "TLS slots not given back after failed handshakes"
    assert d.alive()
    # and the server goes on
    with Smtp.implicit(d.subs, ctx) as c:
        c.ehlo()
        c.login()
    with PopTls.implicit(d.pops, ctx) as p:
        p.login()


def test_half_handshake_does_not_block_others(make_daemon, pki, ctx):
    d = tls_daemon(make_daemon, pki, sessions=8)
    hello = client_hello()
    half = socket.create_connection(("127.0.0.1", d.subs), timeout=5)
    half.sendall(hello[:len(hello) // 2])
    # a second one sends the whole ClientHello, reads the server's flight, and stops
    stalled = socket.create_connection(("127.0.0.1", d.pops), timeout=5)
    stalled.sendall(hello)
    stalled.settimeout(5)
    first = stalled.recv(1)
    assert first == b"\x16", "no handshake record from the server: %r" % first
    # a third one in the middle of STARTTLS
    mid = Smtp.greeted(d.port)
    mid.expect("STARTTLS", "220")
    mid.send(hello[:100])
    time.sleep(0.2)
    assert pool_tls(d)[0] == 3
    t = time.monotonic()
    with Smtp.implicit(d.subs, ctx) as c:
        c.ehlo()
        c.login()
        c.expect("MAIL FROM:<alice@lan>", "250")
        c.expect("RCPT TO:<bob@lan>", "250")
        c.expect("DATA", "354")
        c.send(message("while others stall") + b".\r\n")
        assert_reply(c.reply(), "250")
    with PopTls.implicit(d.pops, ctx) as p:
        p.login("bob")
        assert p.stat()[0] == 1
        p.quit()
    took = time.monotonic() - t
    assert took < 3, "sessions took %.1f s while three handshakes stalled" % took
    assert d.alive()
    assert wait_pool_used(d, 3) == 3
    # the STARTTLS one gives its slot back when the client goes
    mid.close()
    assert wait_pool_used(d, 2) == 2, "the slot of an abandoned STARTTLS handshake stays taken"


def cpu_seconds(d):
    """User + system CPU time of the daemon so far."""
    with open("/proc/%d/stat" % d.pid) as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_client_leaving_an_implicit_tls_handshake(make_daemon, pki, ctx):
    """A client that closes its side (FIN) before the handshake is done: the
    server ends the session, gives back the TLS slot and goes idle."""
    hello = client_hello()
    bad = []
    for port_attr in ("subs", "pops"):
        for how in ("connect-close", "half-hello-close", "hello-read-close"):
            d = tls_daemon(make_daemon, pki)
            s = socket.create_connection(("127.0.0.1", getattr(d, port_attr)), timeout=5)
            if how == "half-hello-close":
                s.sendall(hello[:len(hello) // 2])
            elif how == "hello-read-close":
                s.sendall(hello)
                s.settimeout(0.3)
                try:
                    while s.recv(65536):      # the whole server flight: no RST on close
                        pass
                except socket.timeout:
                    pass
            s.shutdown(socket.SHUT_WR)
            time.sleep(0.1)
            s.close()
            used = wait_pool_used(d, 0, seconds=1)
            c0 = cpu_seconds(d)
            time.sleep(0.3)
            spent = cpu_seconds(d) - c0
            if used != 0 or spent > 0.1:
                st = d.status()
                bad.append("%s on the %s port: pool.tls %s, connections %s, %.2f s of CPU "
                           "in 0.3 s" % (how, port_attr, st["pool.tls"], st.get("connections"),
                                         spent))
            d.kill()
    assert not bad, "after a client closed during an implicit-TLS handshake, the session " \
        "stays, holding its TLS slot, and the daemon spins:\n  " + "\n  ".join(bad)


def test_idle_timeout_applies_once_the_handshake_is_done(make_daemon, pki, ctx):
    """The handshake has its own deadline (30 s); once TLS is up, an idle
    session times out after smtp_timeout / pop3_timeout like any other."""
    d = tls_daemon(make_daemon, pki, smtp_timeout="2s", extra=["pop3_timeout 2s"])
    c1 = Smtp.implicit(d.subs, ctx)
    c2 = Smtp.greeted(d.port, ehlo=None)
    c2.starttls(ctx)
    p1 = PopTls.implicit(d.pops, ctx)
    p2 = PopTls(d.pop)
    p2.stls(ctx)
    plain = Smtp.greeted(d.plain, ehlo=None)
    start = time.monotonic()
    late = []
    for name, conn in (("plain SMTP", plain), ("SMTP implicit TLS", c1),
                       ("SMTP after STARTTLS", c2), ("POP3 implicit TLS", p1),
                       ("POP3 after STLS", p2)):
        left = max(0.1, start + 5.0 - time.monotonic())
        if not conn.closed(left):
            late.append(name)
        conn.close()
    assert not late, "with smtp_timeout/pop3_timeout 2s, still open after 5 s: %s " \
        "(the TLS handshake deadline is kept after the handshake)" % ", ".join(late)


def test_handshake_not_held_back_by_nagle(make_daemon, pki, ctx):
    """A full handshake and the greeting on loopback take a few ms of CPU;
    the server's last handshake records and the greeting must not wait for
    the client's delayed ACK (about 40 ms on Linux): TCP_NODELAY, or one write."""
    d = tls_daemon(make_daemon, pki, kind="ec")
    times = {}
    for name, fn in (("POP3S", lambda: PopTls.implicit(d.pops, ctx)),
                     ("SMTPS", lambda: Smtp.implicit(d.subs, ctx))):
        t = []
        for _ in range(7):
            t0 = time.monotonic()
            c = fn()                        # connect, handshake, greeting
            t.append(time.monotonic() - t0)
            c.close()
        times[name] = sorted(t)[len(t) // 2]
    assert max(times.values()) < 0.030, "median connect + handshake + greeting: %s" % ", ".join(
        "%s %.1f ms" % (k, 1000 * v) for k, v in times.items())


# --------------------------------------------------------------------------
# The TLS pool


def test_tls_pool_exhausted(make_daemon, pki, ctx):
    d = tls_daemon(make_daemon, pki, sessions=1)
    a = Smtp.greeted(d.port)
    a.starttls(ctx)
    a.ehlo()
    assert d.status()["pool.tls"] == "1/1"
    # STARTTLS: 454, and the session goes on in clear
    with Smtp.greeted(d.sub) as b:
        b.expect("STARTTLS", "454 4.7.0")
        b.ehlo()
        b.expect("NOOP", "250")
        b.expect("QUIT", "221")
    # STLS: -ERR, and the session goes on
    with Pop(d.pop) as p:
        r = p.cmd("STLS")
        assert r.startswith("-ERR"), "STLS with the TLS pool full: %r" % r
        p.lines("CAPA")
        p.ok("QUIT")
    # implicit TLS: nothing can be said in clear on a TLS port, so the
    # client waits for a slot (TLS_WAIT_MS, 10 s), then is closed without
    # a word; the refusal is logged.
    t0 = time.monotonic()
    got = {}

    def refused(port):
        got[port] = closed_without_a_word(port, seconds=15, send=client_hello())

    waiters = [threading.Thread(target=refused, args=(p,)) for p in (d.subs, d.pops)]
    for w in waiters:
        w.start()
    for w in waiters:
        w.join(20)
    assert 9 <= time.monotonic() - t0 < 14, "closed after %.1f s" % (time.monotonic() - t0)
    for port in (d.subs, d.pops):
        assert got[port] == b"", "implicit TLS with the pool full: got %r" % got[port][:100]
    assert len(d.events("refused", reason="tls-busy")) == 2, d.log()
    # A slot freed while a client waits: it is served, late but whole.
    served = {}

    def waits_then_served(port, kind):
        t = time.monotonic()
        if kind == "smtp":
            with Smtp.implicit(port, ctx, timeout=15) as c:
                c.expect("EHLO client.lan", "250")
                c.expect("QUIT", "221")
        else:
            with PopTls.implicit(port, ctx, timeout=15) as p:
                p.ok("QUIT")
        served[port] = time.monotonic() - t

    waiters = [threading.Thread(target=waits_then_served, args=(d.subs, "smtp")),
               threading.Thread(target=waits_then_served, args=(d.pops, "pop3"))]
    for w in waiters:
        w.start()
    time.sleep(1)
    a.expect("NOOP", "250")
    a.expect("QUIT", "221")
    a.close()
    for w in waiters:
        w.join(20)
    assert sorted(served) == sorted((d.subs, d.pops)), "a waiting client was not served"
    assert all(0.9 < v < 8 for v in served.values()), served
    assert wait_pool_used(d, 0) == 0
    with Smtp.implicit(d.subs, ctx) as c:
        c.ehlo()
        assert d.status()["pool.tls"] == "1/1"
        c.expect("QUIT", "221")
    with Smtp.greeted(d.sub) as c:
        assert wait_pool_used(d, 0) == 0
        c.starttls(ctx)
        c.ehlo()


# --------------------------------------------------------------------------
# POP3


def test_pop3_capa_stls_and_plaintext_rules(make_daemon, pki, ctx):
    d = tls_daemon(make_daemon, pki)
    deliver(d, "alice", message("pop"))
    with PopTls(d.pop) as p:
        capa = p.capa()
        assert "STLS" in capa, capa
        assert "USER" not in capa and not any(l.startswith("SASL") for l in capa), \
            "USER/SASL offered in clear with plaintext_auth no: %r" % capa
        for line in ("USER alice", "PASS %s" % PASSWORD, "AUTH PLAIN " + plain_ir(), "AUTH"):
            r = p.cmd(line)
            assert r.startswith("-ERR [AUTH]"), "C: %s\nS: %s" % (line, r)
        p.stls(ctx)
        assert p.cipher()[1] == "TLSv1.2"
        capa = p.capa()
        assert "STLS" not in capa, "STLS listed under TLS: %r" % capa
        assert "USER" in capa and "SASL PLAIN" in capa, capa
        p.err("STLS")
        p.login()
        assert p.stat()[0] == 1
        p.quit()
    with PopTls(d.pop_plain) as p:
        capa = p.capa()
        assert "STLS" not in capa, capa
        p.err("STLS")
        assert p.cmd("USER alice").startswith("-ERR [AUTH]")
    with PopTls.implicit(d.pops, ctx) as p:
        capa = p.capa()
        assert "STLS" not in capa and "USER" in capa, capa
        p.err("STLS")
        p.ok("AUTH PLAIN " + plain_ir())
        assert p.stat()[0] == 1


def test_pop3_plaintext_auth_yes(make_daemon, pki):
    d = tls_daemon(make_daemon, pki, plaintext=True)
    deliver(d, "alice", message("pop"))
    with PopTls(d.pop) as p:
        capa = p.capa()
        assert "STLS" in capa and "USER" in capa, capa
        p.login()
        p.err("STLS")            # not in the TRANSACTION state
        assert p.stat()[0] == 1


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_poplib_stls_and_pop3_ssl(make_daemon, pki, ctx, kind):
    d = tls_daemon(make_daemon, pki, kind=kind)
    sent = message("poplib %s" % kind)
    deliver(d, "alice", sent)
    stored = mailbox(d, "alice")[0]
    p = poplib.POP3("127.0.0.1", d.pop, timeout=10)
    try:
        assert "STLS" in p.capa()
        p.stls(context=ctx)
        assert p.sock.version() == "TLSv1.2" and p.sock.cipher()[0] == SUITE[kind]
        assert "STLS" not in p.capa()
        p.user("alice")
        p.pass_(PASSWORD)
        _, lines, _ = p.retr(1)
        assert b"\r\n".join(lines) + b"\r\n" == stored.wire
    finally:
        p.quit()
    p = poplib.POP3_SSL("127.0.0.1", d.pops, timeout=10, context=ctx)
    try:
        assert p.sock.version() == "TLSv1.2" and p.sock.cipher()[0] == SUITE[kind]
        p.user("alice")
        p.pass_(PASSWORD)
        assert p.stat()[0] == 1
        p.dele(1)
    finally:
        p.quit()
    assert mailbox(d, "alice") == []


# --------------------------------------------------------------------------
# Randomness: every handshake seeded from getrandom(2)


def _handshake(d, ctx):
    with Smtp.implicit(d.subs, ctx) as c:
        c.expect("QUIT", "221")


def _seam_calls(d, op):
    return d.log(1 << 20).count("fault seam: %s #" % op)


def test_each_handshake_is_seeded_from_getrandom(make_daemon, pki, ctx, picomail_test_bin):
    d = tls_daemon(make_daemon, pki, binary=picomail_test_bin,
                   env={"PICOMAIL_FAULT_TRACE": "1"})
    before = _seam_calls(d, "getrandom")
    assert before >= 1, "no getrandom at start-up:\n%s" % d.log()
    for _ in range(3):
        _handshake(d, ctx)
    # One call per server engine, whatever else asks (none here: no DNS).
    assert _seam_calls(d, "getrandom") == before + 3, d.log()


def test_start_waits_for_the_kernels_random_pool(make_daemon, pki, ctx, picomail_test_bin):
    """Early in a router's boot getrandom says EAGAIN: the daemon says so,
    waits (a blocking getrandom) instead of failing, and then serves."""
    d = tls_daemon(make_daemon, pki, binary=picomail_test_bin,
                   env={"PICOMAIL_FAULT": "getrandom:1:EAGAIN"})
    log = d.log()
    assert "waiting for the kernel's random pool to be initialised" in log, log
    assert "random pool is ready after" in log, log
    assert log.count("waiting for the kernel's random pool") == 1
    _handshake(d, ctx)


def test_kernel_without_getrandom_falls_back_to_urandom(make_daemon, pki, ctx,
                                                        picomail_test_bin):
    d = tls_daemon(make_daemon, pki, binary=picomail_test_bin,
                   env={"PICOMAIL_FAULT": "getrandom:1:ENOSYS", "PICOMAIL_FAULT_TRACE": "1"})
    assert "no getrandom(2) in this kernel: random bytes from /dev/urandom" in d.log(), d.log()
    before = _seam_calls(d, "getrandom")
    _handshake(d, ctx)
    _handshake(d, ctx)
    assert _seam_calls(d, "getrandom") == before, "getrandom asked again after ENOSYS"
