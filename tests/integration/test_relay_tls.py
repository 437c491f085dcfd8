"""Relaying to a TLS smarthost (issue 5): STARTTLS required and verified,
opportunistic STARTTLS, implicit TLS, smarthost_auth, and a STARTTLS
response injection.

The smarthost is relaypeer.py (aiosmtpd) with a certificate of the test
CA (tlstest.Pki: SAN DNS:test.lan).  picomail verifies the host name, so
the smarthost is named test.lan, which a dnsmasq on a loopback port
resolves to 127.0.0.1 (picomail's `resolver`), as it does other.lan (a
name the certificate does not have).  A "wrong CA" is a second,
unrelated self-signed CA.  The injection test uses a scripted raw-socket
server (a thread here) that answers STARTTLS with "220 go" and a second
line, "250 injected", in the same write.
"""

import os
import select
import socket
import ssl
import subprocess
import threading
import time

import pytest

from picotest import message
from relaytest import Dnsmasq, Peer, Spool, mailq, relay_daemon, submit, wait_for, wait_queue_empty
from tlstest import Pki

SECRET_USER, SECRET_PASS = "relayuser", "s3cret-pass"


pytestmark = pytest.mark.usefixtures("need_aiosmtpd")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(str(tmp_path_factory.mktemp("relay-pki")))


@pytest.fixture(scope="module")
def wrong_ca(tmp_path_factory):
    """A CA that signed nothing here."""
    d = str(tmp_path_factory.mktemp("wrong-ca"))
    ca = os.path.join(d, "wrong-ca.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", os.path.join(d, "k.pem"),
                    "-out", ca, "-days", "30", "-subj", "/CN=some other CA",
                    "-addext", "basicConstraints=critical,CA:TRUE"],
                   check=True, capture_output=True, timeout=30)
    return ca


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    d = Dnsmasq(str(tmp_path_factory.mktemp("relay-dns")),
                ["--host-record=test.lan,127.0.0.1", "--host-record=other.lan,127.0.0.1"],
                "test.lan")
    yield d
    d.stop()


@pytest.fixture
def peers(workdir, pki):
    made = []

    def make(start=True, tls=True, **opts):
        if tls:
            opts.setdefault("cert", pki.cert["rsa"])
            opts.setdefault("key", pki.key["rsa"])
        p = Peer(os.path.join(workdir, "peer%d" % len(made)), **opts)
        made.append(p)
        if start:
            p.start()
        return p

    yield make
    for p in made:
        p.stop()


def tls_relay(make_daemon, dns, peer, flag="", ca=None, extra=(), host="test.lan", **conf):
    lines = list(extra)
    if ca:
        lines.append("ca_file %s" % ca)
    return relay_daemon(make_daemon, ("%s:%d %s" % (host, peer.port, flag)).strip(),
                        resolver=dns.resolver, extra=lines, **conf)


def secret_file(d, text="%s %s\n" % (SECRET_USER, SECRET_PASS)):
    p = os.path.join(d, "smarthost.secret")
    with open(p, "w") as f:
        f.write(text)
    os.chmod(p, 0o600)
    return p


def assert_deferred(d, peer, log_words, seconds=1.6):
    """Nothing delivered within seconds; the message still queued with a
    last error; the log names log_words (each a list of alternatives)."""
    time.sleep(seconds)
    assert peer.messages() == [], "delivered although it must not be:\n" + peer.describe()
    # The run ends (retry) once its rewritten envelope is durable.
    wait_for(lambda: d.events("retry"), 5, "the run's end")
    q = mailq(d)
    assert len(q) == 1 and q[0][5], "want the message queued with its last error: %r" % q
    log = d.log(20000)
    for alts in log_words:
        assert any(w in log for w in alts), "the log names none of %r:\n%s" % (alts, log[-2500:])
    return q[0][5][0][1]


def exchange_hint(peer):
    return "\n" + peer.describe() + "\n-- peer log --\n" + peer.log()[-1500:]


# --------------------------------------------------------------------------
# STARTTLS


def test_starttls_required_and_verified(make_daemon, dns, pki, peers):
    peer = peers(require_starttls=True)
    d = tls_relay(make_daemon, dns, peer, "starttls", ca=pki.ca)
    submit(d, ["bob@remote.test"], message("over starttls"))
    try:
        got = peer.wait_messages(1, timeout=4)
    except AssertionError as e:
        raise AssertionError(str(e) + exchange_hint(peer) + "\n-- picomail --\n" + d.log(2500))
    assert got[0]["cipher"], "the message came in the clear: %r" % got[0]
    assert any(e == "starttls" for _, e, _ in peer.events())
    wait_queue_empty(d)


def test_starttls_wrong_ca_is_deferred(make_daemon, dns, wrong_ca, peers):
    peer = peers(require_starttls=True)
    d = tls_relay(make_daemon, dns, peer, "starttls", ca=wrong_ca)
    submit(d, ["bob@remote.test"], message("wrong ca"))
    why = assert_deferred(d, peer, [["TLS"], ["certificate"]])
    assert why.startswith("4"), "a failed verification is a temporary error: %r" % why
    assert not peer.events("mail"), "MAIL sent to an unverified smarthost:" + exchange_hint(peer)


def test_starttls_required_but_not_offered(make_daemon, dns, peers):
    peer = peers(tls=False)
    d = tls_relay(make_daemon, dns, peer, "starttls", ca=None,
                  extra=["smarthost_verify no"])
    submit(d, ["bob@remote.test"], message("no tls offered"))
    why = assert_deferred(d, peer, [["STARTTLS is required", "STARTTLS"]])
    assert why.startswith("4"), why
    assert not peer.events("mail"), "MAIL sent in the clear:" + exchange_hint(peer)


def test_smarthost_verify_no_accepts_any_certificate(make_daemon, dns, wrong_ca, peers):
    peer = peers(require_starttls=True)
    d = tls_relay(make_daemon, dns, peer, "starttls", ca=wrong_ca,
                  extra=["smarthost_verify no"])
    submit(d, ["bob@remote.test"], message("no verification"))
    try:
        got = peer.wait_messages(1, timeout=4)
    except AssertionError as e:
        raise AssertionError(str(e) + exchange_hint(peer) + "\n-- picomail --\n" + d.log(2500))
    assert got[0]["cipher"]
    wait_queue_empty(d)


def test_opportunistic_starttls_when_offered(make_daemon, dns, wrong_ca, peers):
    """No flag: STARTTLS when offered, without verification."""
    peer = peers()
    d = tls_relay(make_daemon, dns, peer, "", ca=wrong_ca)
    submit(d, ["bob@remote.test"], message("opportunistic"))
    try:
        got = peer.wait_messages(1, timeout=4)
    except AssertionError as e:
        raise AssertionError(str(e) + exchange_hint(peer) + "\n-- picomail --\n" + d.log(2500))
    assert got[0]["cipher"], "STARTTLS was offered but not used"
    wait_queue_empty(d)


def test_plain_smarthost_without_starttls(make_daemon, dns, peers):
    peer = peers(tls=False)
    d = tls_relay(make_daemon, dns, peer, "")
    submit(d, ["bob@remote.test"], message("plain"))
    got = peer.wait_messages(1, timeout=4)
    assert got[0]["cipher"] is None
    wait_queue_empty(d)


# --------------------------------------------------------------------------
# Implicit TLS (465)


def test_implicit_tls_verified(make_daemon, dns, pki, peers):
    peer = peers(implicit_tls=True)
    d = tls_relay(make_daemon, dns, peer, "tls", ca=pki.ca)
    submit(d, ["bob@remote.test"], message("implicit"))
    got = peer.wait_messages(1, timeout=4)
    assert got[0]["cipher"], got[0]
    wait_queue_empty(d)


def test_implicit_tls_wrong_ca_is_deferred(make_daemon, dns, wrong_ca, peers):
    peer = peers(implicit_tls=True)
    d = tls_relay(make_daemon, dns, peer, "tls", ca=wrong_ca)
    submit(d, ["bob@remote.test"], message("implicit, wrong ca"))
    why = assert_deferred(d, peer, [["TLS"], ["certificate"]])
    assert why.startswith("4"), why
    assert not peer.events("ehlo"), "EHLO reached an unverified smarthost"


def test_implicit_tls_wrong_name_is_deferred(make_daemon, dns, pki, peers):
    """The certificate (of the right CA) is for test.lan; the smarthost is
    configured as other.lan, which resolves to the same address."""
    peer = peers(implicit_tls=True)
    d = tls_relay(make_daemon, dns, peer, "tls", ca=pki.ca, host="other.lan")
    submit(d, ["bob@remote.test"], message("implicit, address"))
    assert_deferred(d, peer, [["TLS"], ["certificate"]])


# --------------------------------------------------------------------------
# smarthost_auth


def test_smarthost_auth_plain_over_starttls(make_daemon, dns, pki, peers, workdir):
    peer = peers(require_starttls=True, auth="%s:%s" % (SECRET_USER, SECRET_PASS))
    d = tls_relay(make_daemon, dns, peer, "starttls", ca=pki.ca,
                  extra=["smarthost_auth %s" % secret_file(workdir)])
    submit(d, ["bob@remote.test"], message("authenticated"))
    try:
        got = peer.wait_messages(1, timeout=4)
    except AssertionError as e:
        raise AssertionError(str(e) + exchange_hint(peer) + "\n-- picomail --\n" + d.log(2500))
    assert got[0]["auth"] == SECRET_USER, got[0]
    assert [d_ for _, _, d_ in peer.events("auth")] == ["PLAIN %s ok" % SECRET_USER], \
        exchange_hint(peer)
    wait_queue_empty(d)


def test_smarthost_auth_implicit_tls(make_daemon, dns, pki, peers, workdir):
    peer = peers(implicit_tls=True, auth="%s:%s" % (SECRET_USER, SECRET_PASS))
    d = tls_relay(make_daemon, dns, peer, "tls", ca=pki.ca,
                  extra=["smarthost_auth %s" % secret_file(workdir)])
    submit(d, ["bob@remote.test"], message("authenticated, implicit"))
    got = peer.wait_messages(1, timeout=4)
    assert got[0]["auth"] == SECRET_USER, got[0]
    wait_queue_empty(d)


def test_smarthost_auth_login_only(make_daemon, dns, pki, peers, workdir):
    """A smarthost offering only AUTH LOGIN.  aiosmtpd's challenges are
    "User Name" and "Password" (base64), not the customary "Username:":
    a client answers the first 334 with the user name whatever its text."""
    peer = peers(implicit_tls=True, auth="%s:%s" % (SECRET_USER, SECRET_PASS),
                 auth_mech=["LOGIN"])
    d = tls_relay(make_daemon, dns, peer, "tls", ca=pki.ca,
                  extra=["smarthost_auth %s" % secret_file(workdir)])
    submit(d, ["bob@remote.test"], message("auth login"))
    try:
        got = peer.wait_messages(1, timeout=4)
    except AssertionError as e:
        raise AssertionError(str(e) + exchange_hint(peer) + "\n-- picomail --\n" + d.log(2500))
    assert got[0]["auth"] == SECRET_USER
    assert [d_ for _, _, d_ in peer.events("auth")] == ["LOGIN %s ok" % SECRET_USER]
    wait_queue_empty(d)


def test_smarthost_auth_wrong_password_is_deferred(make_daemon, dns, pki, peers, workdir):
    peer = peers(implicit_tls=True, auth="%s:%s" % (SECRET_USER, SECRET_PASS))
    d = tls_relay(make_daemon, dns, peer, "tls", ca=pki.ca,
                  extra=["smarthost_auth %s" % secret_file(workdir, "%s wrong\n" % SECRET_USER)])
    submit(d, ["bob@remote.test"], message("bad password"))
    why = assert_deferred(d, peer, [["AUTH"], ["535"]])
    assert why.startswith("4"), "a refused login is retried, not bounced: %r" % why
    assert Spool(d).names("env"), "the message must stay queued"


# --------------------------------------------------------------------------
# A scripted smarthost: exact bytes, what the client sends and when


class Scripted(threading.Thread):
    """One-connection-at-a-time SMTP server on a raw socket.  ehlo_ext: the
    EHLO keywords; starttls_reply: the exact bytes answering STARTTLS.
    Records (in self.notes) anything the client does out of turn: plain
    text after the STARTTLS reply, a command before the previous reply,
    an AUTH; self.messages gets (mail, rcpts, data)."""

    def __init__(self, ctx=None, ehlo_ext=(), starttls_reply=b"220 2.0.0 go\r\n",
                 post_tls_ext=("8BITMIME",)):
        super().__init__(daemon=True)
        self.ctx = ctx
        self.ehlo_ext = list(ehlo_ext)
        self.post_tls_ext = list(post_tls_ext)
        self.starttls_reply = starttls_reply
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.notes = []
        self.commands = []
        self.messages = []
        self.stopping = False
        self.start()

    def stop(self):
        self.stopping = True
        self.join(5)
        self.lsock.close()

    def run(self):
        while not self.stopping:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                self.session(c)
            except Exception as e:          # recorded, the test asserts on it
                self.notes.append("session error: %r" % e)
            finally:
                c.close()

    def session(self, c):
        c.settimeout(5)
        f = {"sock": c, "buf": b""}

        def readline():
            while b"\n" not in f["buf"]:
                chunk = f["sock"].recv(4096)
                if not chunk:
                    raise EOFError("client closed")
                f["buf"] += chunk
            line, f["buf"] = f["buf"].split(b"\n", 1)
            self.commands.append(line.rstrip(b"\r"))
            return line.rstrip(b"\r")

        def early(what, wait=0.3):
            """Anything the client sent before our reply to what."""
            sock = f["sock"]
            data = f["buf"]
            if not data:
                pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
                if pending or select.select([sock], [], [], wait)[0]:
                    sock.settimeout(0.5)
                    try:
                        data = sock.recv(4096)
                    except (socket.timeout, ssl.SSLWantReadError):
                        data = b""
                    finally:
                        sock.settimeout(5)
                    f["buf"] += data
            if data:
                self.notes.append("client sent %r before the reply to %s" % (data, what))

        def send(b):
            f["sock"].sendall(b)

        send(b"220 scripted ESMTP\r\n")
        tls = False
        while True:
            line = readline()
            verb = line.split(b" ", 1)[0].upper()
            if verb in (b"EHLO", b"HELO"):
                if tls:
                    early("EHLO after TLS")
                ext = self.post_tls_ext if tls else self.ehlo_ext
                lines = [b"scripted"] + [e.encode() for e in ext]
                send(b"".join(b"250-" + l + b"\r\n" for l in lines[:-1]) +
                     b"250 " + lines[-1] + b"\r\n")
            elif verb == b"STARTTLS":
                send(self.starttls_reply)
                # RFC 3207: the client's next bytes are its TLS ClientHello.
                time.sleep(0.2)
                peek = c.recv(4096, socket.MSG_PEEK)
                if peek[:1] != b"\x16":
                    plain = peek.split(b"\x16", 1)[0]
                    self.notes.append("plain text after the STARTTLS reply, before the "
                                      "TLS handshake: %r" % plain)
                    c.recv(len(plain))     # drop it, so the handshake can go on
                    if plain.upper().startswith(b"EHLO"):
                        f["pending_ehlo"] = True
                f["sock"] = self.ctx.wrap_socket(c, server_side=True)
                f["buf"] = b""
                tls = True
                if f.pop("pending_ehlo", False):
                    lines = [b"scripted"] + [e.encode() for e in self.post_tls_ext]
                    send(b"".join(b"250-" + l + b"\r\n" for l in lines[:-1]) +
                         b"250 " + lines[-1] + b"\r\n")
            elif verb == b"AUTH":
                self.notes.append("AUTH sent%s: %r" % ("" if tls else " IN THE CLEAR", line))
                send(b"535 5.7.8 no\r\n")
            elif verb == b"MAIL":
                early("MAIL")
                self.mail, self.rcpts = line, []
                send(b"250 2.1.0 ok\r\n")
            elif verb == b"RCPT":
                early("RCPT")
                self.rcpts.append(line)
                send(b"250 2.1.5 ok\r\n")
            elif verb == b"DATA":
                early("DATA")
                send(b"354 go on\r\n")
                data = b""
                while True:
                    l = readline()
                    if l == b".":
                        break
                    data += l + b"\r\n"
                self.messages.append((self.mail, self.rcpts, data, tls))
                send(b"250 2.0.0 scripted ok\r\n")
            elif verb == b"QUIT":
                send(b"221 bye\r\n")
                return
            else:
                send(b"502 5.5.1 what\r\n")


@pytest.fixture
def scripted():
    made = []

    def make(**kw):
        s = Scripted(**kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def test_starttls_reply_injection_is_discarded(make_daemon, dns, pki, scripted):
    """The smarthost answers STARTTLS with "220 go\\r\\n250 injected\\r\\n" in
    one write: the second line came before TLS and must not be taken as the
    reply to the EHLO sent after it (CVE-2011-0411 class)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.cert["rsa"], pki.key["rsa"])
    s = scripted(ctx=ctx, ehlo_ext=["STARTTLS", "8BITMIME"],
                 starttls_reply=b"220 go\r\n250 injected\r\n")
    d = relay_daemon(make_daemon, "test.lan:%d starttls" % s.port, resolver=dns.resolver,
                     extra=["ca_file %s" % pki.ca])
    submit(d, ["bob@remote.test"], message("injection"))
    wait_for(lambda: s.messages or s.notes, 8,
             "the scripted smarthost to get the message or see a violation")
    try:
        wait_for(lambda: s.messages, 3, "the message")
    except AssertionError:
        pass
    problems = list(s.notes)
    if not s.messages:
        problems.append("message not delivered; picomail log:\n" + d.log(2000))
    else:
        assert s.messages[0][3], "delivered without TLS"
    assert not problems, "\n".join(problems) + "\ncommands seen: %r" % s.commands


def test_smarthost_password_never_sent_in_clear(make_daemon, dns, scripted, workdir):
    """A smarthost offering AUTH but no STARTTLS: the password stays home."""
    s = scripted(ehlo_ext=["AUTH PLAIN LOGIN", "8BITMIME"])
    d = relay_daemon(make_daemon, "127.0.0.1:%d" % s.port, resolver=dns.resolver,
                     extra=["smarthost_auth %s" % secret_file(workdir)])
    submit(d, ["bob@remote.test"], message("no tls, no password"))
    wait_for(lambda: "without TLS" in d.log(20000), 5,
             "the log line refusing to send the password in the clear")
    time.sleep(0.3)
    assert not [n for n in s.notes if "AUTH" in n], s.notes
    assert not s.messages, "sent without the configured AUTH: %r" % s.messages
    wait_for(lambda: d.events("retry"), 5, "the run's end")
    q = mailq(d)
    assert len(q) == 1 and q[0][5][0][1].startswith("4"), q
