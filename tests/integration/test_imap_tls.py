"""IMAP over TLS: STARTTLS on 143 (RFC 3501 6.2.1, 2595), TLS from the first
byte on 993 (RFC 8314), LOGINDISABLED in clear with plaintext_auth no, the
plain-text injection defence at the switch, and Python's imaplib on both."""

import imaplib
import shutil
import socket
import tempfile

import pytest

from imaptest import Imap, deliver, files, uid_of
from picotest import free_port, numbered
from pop3test import PASSWORD
from tlstest import HOSTNAME, Pki


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


def tls_imap(make_daemon, pki, kind="rsa", **conf):
    """imap on d.imap (starttls) and d.imaps (tls), plaintext_auth no."""
    a, b = free_port(), free_port()
    while b == a:
        b = free_port()
    d = make_daemon(start=False, extra=["listen imap 127.0.0.1:%d starttls" % a,
                                        "listen imap 127.0.0.1:%d tls" % b, "plaintext_auth no"],
                    tls_cert=pki.cert[kind], tls_key=pki.key[kind], **conf)
    d.imap, d.imaps = a, b
    d.start()
    return d


def caps(c):
    u = c.ok("CAPABILITY")
    return u[0].decode().split()[2:]


def test_starttls_then_login(make_daemon, pki, ctx):
    d = tls_imap(make_daemon, pki)
    deliver(d, "alice", numbered(1))
    with Imap(d.imap) as c:
        before = caps(c)
        assert "STARTTLS" in before and "LOGINDISABLED" in before and "AUTH=PLAIN" not in before
        c.no('LOGIN alice "%s"' % PASSWORD, "PRIVACYREQUIRED")
        c.ok("STARTTLS")
        c.sock = ctx.wrap_socket(c.sock, server_hostname=HOSTNAME)
        after = caps(c)
        assert "STARTTLS" not in after and "LOGINDISABLED" not in after and "AUTH=PLAIN" in after
        c.bad("STARTTLS")
        c.login()
        c.ok("SELECT INBOX")
        got = c.fetch("FETCH 1 (UID BODY.PEEK[])")
        assert b"END 1" in got[1][b"BODY[]"]
    ev = d.events("login", proto="imap")
    assert ev and ev[0].get("tls", "").startswith("ECDHE-"), ev


def test_plaintext_pipelined_after_starttls_is_discarded(make_daemon, pki, ctx):
    d = tls_imap(make_daemon, pki)
    with Imap(d.imap) as c:
        c.send(b"a1 STARTTLS\r\na2 LOGIN alice secret\r\na3 CAPABILITY\r\n")
        assert c.response() == b"a1 OK Begin TLS negotiation now"
        assert c.quiet(0.3), "a reply in clear after STARTTLS: %r" % bytes(c.buf)
        c.sock = ctx.wrap_socket(c.sock, server_hostname=HOSTNAME)
        assert c.quiet(0.3), "commands sent in clear answered under TLS: %r" % bytes(c.buf)
        c.bad("SELECT INBOX")                  # not logged in: a2 was dropped
        c.login()


def test_implicit_tls_and_imaplib(make_daemon, pki, ctx):
    d = tls_imap(make_daemon, pki, kind="ec")
    for i in (1, 2):
        deliver(d, "alice", numbered(i))
    m = imaplib.IMAP4_SSL("127.0.0.1", d.imaps, ssl_context=ctx, timeout=10)
    assert b"picomail IMAP ready" in m.welcome
    assert "AUTH=PLAIN" in m.capabilities and "LOGINDISABLED" not in m.capabilities
    m.login("alice", PASSWORD)
    m.select("INBOX")
    typ, data = m.uid("SEARCH", None, "ALL")
    assert data == [b"1 2"], data
    m.logout()
    m = imaplib.IMAP4("127.0.0.1", d.imap, timeout=10)
    assert "LOGINDISABLED" in m.capabilities
    m.starttls(ssl_context=ctx)
    m.login("bob", PASSWORD)
    m.logout()
    assert sorted(uid_of(n) for n in files(d)) == [1, 2]


def test_garbage_instead_of_client_hello(make_daemon, pki):
    d = tls_imap(make_daemon, pki)
    for port, starttls in ((d.imaps, False), (d.imap, True)):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            f = s.makefile("rb")
            if starttls:
                f.readline()
                s.sendall(b"x STARTTLS\r\n")
                f.readline()
            s.sendall(b"a1 LOGIN alice secret\r\n")
            s.settimeout(5)
            got = b""
            try:
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            except (ConnectionResetError, socket.timeout):
                pass
            assert got == b"" or got[:1] == b"\x15", got[:100]
