"""The relay client against a server certificate it cannot take, on the
paths that do not verify it: delivery to the MX, and a smarthost with
`smarthost_verify no` (STARTTLS or implicit TLS).

The server is hostile_tls.py, a TLS 1.2 server written by hand: it answers
picomail's ClientHello with a ServerHello and a Certificate cut into
records of 256 octets (or 1, 7, 16384), the certificate a real EC P-256
one (openssl, at test time) with its subjectPublicKey BIT STRING replaced
by a point of the size a case gives.  BearSSL's X.509 decoder holds a key
of at most 520 octets (BR_X509_BUFSIZE_KEY); pushed more of a certificate
after refusing one, BearSSL 0.6's decoder runs on and copies the rest of
the key past its context.  For keys of 521 octets to 150 KB picomail must:

    stay up (a 150 KB key once killed it; a 30 KB key, with two runners
    busy, damaged the other runner's TLS session, whose message then
    hung after its MX had accepted it),
    keep the message queued with a printable 4xx reason that says the key
    is larger than the decoder takes, the same in mailq, the envelope and
    the log, and send no bounce,
    deliver it exactly once, under TLS, when the server behaves (an
    aiosmtpd peer, relaypeer.py, with a good certificate on the same
    address).

A key the decoder takes (65 octets, the real point; 520) gets the client
past the certificate: it waits for the ServerKeyExchange, and refuses the
one it is then sent, whose signature cannot verify.  Certificates that
are absent, random octets or cut short are refused in words as well.
Every ClientHello is checked: TLS 1.2 only, ECDHE with an AEAD only.

MX delivery has no port setting, so the MX peers listen on port 25 of
loopback addresses 127.A.B.2 and 127.A.B.3, picked at random per module
away from test_relay_mx.py's range; a dnsmasq on a loopback port
(picomail's `resolver`) serves the MX records:

    hx.test  MX 10 mx.hx.test (127.A.B.2: the hostile peer, later a good one)
    gx.test  MX 10 mx.gx.test (127.A.B.3: a good peer, for two runners at once)

If port 25 cannot be bound there, the MX tests skip and say why.  Last,
the server direction: a client offering only a CBC suite is refused, one
offering an AEAD suite as well gets it.
"""

import errno
import os
import random
import re
import socket
import subprocess
import time

import pytest

from hostile import self_signed
from hostile_tls import ECDHE_AEAD, SCSV, TLS13, TlsPeer, ec_point, pem_der, splice_ec_key
from picotest import free_port, message, scaled
from relaytest import (Dnsmasq, Peer, Spool, control, dead_udp_port, mailq, relay_daemon, submit,
                       wait_for, wait_queue_empty)
from tlstest import tls_daemon

pytestmark = pytest.mark.usefixtures("need_aiosmtpd")

RNG = random.Random(os.environ.get("PICOMAIL_SEED"))
NET = "127.%d.%d" % (RNG.randint(20, 99), RNG.randint(1, 250))
MX_HOSTILE, MX_GOOD = NET + ".2", NET + ".3"

LIMIT = 520                 # BR_X509_BUFSIZE_KEY: the decoder's key buffer
REFUSED = "451 4.7.5 TLS failed: certificate refused: a key or field larger than the decoder takes"


@pytest.fixture(scope="module")
def port25():
    for host in (MX_HOSTILE, MX_GOOD):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, 25))
        except OSError as e:
            pytest.skip("cannot bind %s:25 for an MX peer (%s): MX delivery has no port "
                        "setting" % (host, errno.errorcode.get(e.errno, e.errno)))
        finally:
            s.close()
    return 25


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    d = Dnsmasq(str(tmp_path_factory.mktemp("x509-dns")), [
        "--mx-host=hx.test,mx.hx.test,10",
        "--host-record=mx.hx.test,%s" % MX_HOSTILE,
        "--mx-host=gx.test,mx.gx.test,10",
        "--host-record=mx.gx.test,%s" % MX_GOOD,
    ], "mx.hx.test")
    yield d
    d.stop()


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A plain EC P-256 certificate and key (PEM): the good peers', and the
    one whose key the cases replace."""
    return self_signed(str(tmp_path_factory.mktemp("x509-cert")), "hostile.test")


def with_key(good, size):
    """The good certificate (DER) with an EC point of size octets: the
    real one for 65, else 0x04 and filler from a fixed seed."""
    cert = pem_der(good[0])
    if size == len(ec_point(cert)):
        return cert
    return splice_ec_key(cert, b"\x04" + random.Random(size).randbytes(size - 1))


@pytest.fixture
def tls_peers(workdir):
    made = []

    def make(cert, port, host="127.0.0.1", **opts):
        opts.setdefault("linger", scaled(0.5))
        p = TlsPeer(os.path.join(workdir, "tls%d" % len(made)), cert, port, host, **opts)
        made.append(p)
        return p.start()

    yield make
    for p in made:
        p.stop()


# --------------------------------------------------------------------------
# Checks


def printable(s):
    return re.fullmatch(r"[\x20-\x7e]*", s) is not None


def check_client_hello(hello):
    """TLS 1.2 only; ECDHE with an AEAD only (the SCSV may be there)."""
    assert hello is not None, "no ClientHello"
    assert hello["version"] == 0x0303, "client_version %#06x, want TLS 1.2" % hello["version"]
    sv = hello["supported_versions"]
    assert sv is None or TLS13 not in sv, "TLS 1.3 offered (supported_versions %r)" % sv
    suites = [s for s in hello["suites"] if s != SCSV]
    other = ["%#06x" % s for s in suites if s not in ECDHE_AEAD]
    assert suites and not other, \
        "suites other than ECDHE with AES-GCM or ChaCha20-Poly1305 (CBC, RC4, 3DES, " \
        "static RSA...): %s in %r" % (other, ["%#06x" % s for s in hello["suites"]])
    assert hello["compression"] == [0], "compression offered: %r" % hello["compression"]


def died(d):
    return "picomail died (exit %r) while talking to the peer:\n%s" % (
        d.proc.returncode, d.log(3000))


def wait_deferred(d, peer, timeout=8):
    """Waits until the peer has seen a whole attempt and the message is
    back in the queue, not being delivered, with a reason; fails at once
    if the daemon dies.  Returns the reason."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        assert d.alive(), died(d)
        q = mailq(d) if peer.connections() else []
        if len(q) == 1 and not q[0][4] and q[0][5] and q[0][5][0][1]:
            return q[0][5][0][1]
        if time.monotonic() > deadline:
            raise AssertionError("no deferral within %d s; mailq %r\n%s\n-- picomail --\n%s" % (
                timeout, q, peer.describe(), d.log(3000)))
        time.sleep(0.05)


def check_queued(d, why):
    """The message queued with a printable 4xx reason, the same in mailq and
    in its envelope, and in the log; no bounce."""
    assert d.alive(), died(d)
    assert why.startswith("4") and printable(why), "deferral reason %r" % why
    [qid] = Spool(d).names("env")
    rcpts = Spool(d).envelope(qid)["rcpts"]
    assert [r[3] for r in rcpts] == [why], "envelope: %r, mailq: %r" % (rcpts, why)
    assert why.split(" ", 1)[1] in d.log(1 << 20), "the log does not name %r:\n%s" % (
        why, d.log(3000))
    assert d.maildir("alice").messages(check=False) == [], "a bounce for a temporary failure"


def recovers(d, good, host, port, rcpt, workdir, **opts):
    """The server behaves (a good aiosmtpd peer on the same address): the
    message goes out once, under TLS."""
    peer = Peer(os.path.join(workdir, "good-%s-%d" % (host, port)), port=port, host=host,
                cert=good[0], key=good[1], **opts).start()
    try:
        control(d, "flush")
        got = peer.wait_messages(1, timeout=scaled(8))
        wait_queue_empty(d, timeout=scaled(8))
        time.sleep(0.3)
        got = peer.messages()
        assert len(got) == 1, "delivered %d times: %r" % (len(got), got)
        assert got[0]["rcpt_tos"] == [rcpt] and got[0]["cipher"], got[0]
        assert d.alive(), died(d)
    finally:
        peer.stop()


def check_exchange(peer, size):
    """What the peer saw: every ClientHello right; a key the decoder takes
    gets the client past the certificate (silent, waiting for the
    ServerKeyExchange, then refusing its signature); a larger one is
    refused without waiting."""
    conns = [c for c in peer.connections() if c["hello"] is not None]
    assert conns, "no ClientHello reached the peer:\n" + peer.describe()
    for c in conns:
        check_client_hello(c["hello"])
    c = conns[0]
    assert c["error"] is None, "peer: %s\n%s" % (c["error"], peer.describe())
    if size is not None and size <= LIMIT:
        assert c["after_cert"] == "silent", \
            "a %d-octet key is within the decoder's limit, yet after the certificate the " \
            "client did: %s" % (size, c["after_cert"])
        assert c["after_ske"] and c["after_ske"] != "silent", \
            "a bad ServerKeyExchange signature went unanswered: %r" % c["after_ske"]
    else:
        assert c["after_cert"] != "silent", \
            "the client waits on after a certificate it cannot take (key of %r octets): %r" % (
                size, c)


# --------------------------------------------------------------------------
# One runner: smarthost (STARTTLS, implicit TLS) and MX


SIZES = [65, LIMIT, LIMIT + 1, 3000, 30000, 150000]


def check_reason(why, size):
    """A key over the limit is refused in words that say so; one within it
    is not refused as a certificate (the bogus signature fails later).
    Checked last: what matters most, that the daemon stays up and its
    memory whole, is checked first."""
    if size > LIMIT:
        assert why == REFUSED, "deferral reason %r, want %r" % (why, REFUSED)
    else:
        assert "TLS failed" in why and "certificate" not in why, \
            "a %d-octet key, which the decoder takes, refused: %r" % (size, why)


@pytest.mark.parametrize("size", SIZES)
def test_smarthost_unverified_oversized_key(make_daemon, tls_peers, good, workdir, size):
    port = free_port()
    peer = tls_peers(with_key(good, size), port, ske=True)
    d = relay_daemon(make_daemon, "127.0.0.1:%d starttls" % port,
                     extra=["smarthost_verify no"])
    submit(d, ["bob@remote.test"], message("to a smarthost with a %d-octet key" % size))
    why = wait_deferred(d, peer)
    check_queued(d, why)
    check_exchange(peer, size)
    peer.stop()
    recovers(d, good, "127.0.0.1", port, "bob@remote.test", workdir, require_starttls=True)
    check_reason(why, size)


@pytest.mark.parametrize("record", [1, 7, 16384])
def test_smarthost_oversized_key_in_any_record_size(make_daemon, tls_peers, good, workdir,
                                                    record):
    """The engine hands the certificate to the decoder a record's worth at
    a time: one octet, seven, or 16 KB (the 30 KB key then spans two
    records), the key is refused the same way."""
    port = free_port()
    peer = tls_peers(with_key(good, 30000), port, record=record)
    d = relay_daemon(make_daemon, "127.0.0.1:%d starttls" % port,
                     extra=["smarthost_verify no"])
    submit(d, ["bob@remote.test"], message("records of %d octets" % record))
    why = wait_deferred(d, peer)
    check_queued(d, why)
    check_exchange(peer, 30000)
    assert peer.connections()[0]["records"] >= 2, peer.connections()[0]
    peer.stop()
    recovers(d, good, "127.0.0.1", port, "bob@remote.test", workdir, require_starttls=True)
    check_reason(why, 30000)


UNUSABLE = [
    # (id, the certificate_list's only entry, or none; what the reason says)
    ("no certificate", lambda good: b"", "unexpected message"),
    ("random octets", lambda good: random.Random(7).randbytes(300), "certificate malformed"),
    ("cut after 200 octets", lambda good: pem_der(good[0])[:200], "certificate truncated"),
]


@pytest.mark.parametrize("cert,words", [c[1:] for c in UNUSABLE], ids=[c[0] for c in UNUSABLE])
def test_smarthost_unverified_unusable_certificate(make_daemon, tls_peers, good, workdir, cert,
                                                   words):
    port = free_port()
    peer = tls_peers(cert(good), port)
    d = relay_daemon(make_daemon, "127.0.0.1:%d starttls" % port,
                     extra=["smarthost_verify no"])
    submit(d, ["bob@remote.test"], message("an unusable certificate"))
    why = wait_deferred(d, peer)
    check_queued(d, why)
    check_exchange(peer, None)
    peer.stop()
    recovers(d, good, "127.0.0.1", port, "bob@remote.test", workdir, require_starttls=True)
    assert why == "451 4.7.5 TLS failed: " + words, why


@pytest.mark.parametrize("size", [LIMIT + 1, 150000])
def test_smarthost_implicit_tls_oversized_key(make_daemon, tls_peers, good, workdir, size):
    port = free_port()
    peer = tls_peers(with_key(good, size), port, implicit_tls=True)
    d = relay_daemon(make_daemon, "127.0.0.1:%d tls" % port, extra=["smarthost_verify no"])
    submit(d, ["bob@remote.test"], message("implicit TLS, %d-octet key" % size))
    why = wait_deferred(d, peer)
    check_queued(d, why)
    check_exchange(peer, size)
    peer.stop()
    recovers(d, good, "127.0.0.1", port, "bob@remote.test", workdir, implicit_tls=True)
    check_reason(why, size)


@pytest.mark.parametrize("size", [65, LIMIT + 1, 30000, 150000])
def test_mx_oversized_key(make_daemon, dns, port25, tls_peers, good, workdir, size):
    peer = tls_peers(with_key(good, size), 25, MX_HOSTILE, ske=True)
    d = relay_daemon(make_daemon, None, resolver=dns.resolver)
    submit(d, ["bob@hx.test"], message("to an MX with a %d-octet key" % size))
    why = wait_deferred(d, peer)
    check_queued(d, why)
    check_exchange(peer, size)
    hello = peer.connections()[0]["hello"]
    assert hello["sni"] in (None, "mx.hx.test"), "SNI %r for mx.hx.test" % hello["sni"]
    peer.stop()
    recovers(d, good, MX_HOSTILE, 25, "bob@hx.test", workdir)
    check_reason(why, size)


def test_mx_oversized_key_beside_another_runner(make_daemon, dns, port25, tls_peers, good,
                                                workdir):
    """Two runners, two MX: the first takes its TLS session and holds at
    the ClientHello; the second delivers to a good MX under TLS and waits
    for the reply to its data; then the first gets a 30 KB key.  The
    second runner's session, next in the pool, must come through
    untouched: its message delivered once, the first's queued."""
    hold = os.path.join(workdir, "release")
    hostile = tls_peers(with_key(good, 30000), 25, MX_HOSTILE, hold=hold)
    other = Peer(os.path.join(workdir, "other"), port=25, host=MX_GOOD, cert=good[0],
                 key=good[1], sleep_data=1.0, sleep_count=1).start()
    try:
        d = relay_daemon(make_daemon, None, resolver=dns.resolver, extra=["queue_runners 2"])
        submit(d, ["bob@hx.test"], message("to the hostile MX"))
        wait_for(lambda: [e for e in hostile.events() if " hello " in e] or not d.alive(),
                 scaled(8), "the first runner's ClientHello")
        submit(d, ["carol@gx.test"], message("to the good MX"))
        wait_for(lambda: other.events("data-end") or not d.alive(), scaled(8),
                 "the second runner's message sent under TLS")
        assert d.alive(), died(d)
        open(hold, "w").close()
        got = other.wait_messages(1, timeout=scaled(8))
        assert got[0]["cipher"], got[0]
        # The good MX has answered 250: the second runner reads it and the
        # message leaves the queue; the first message is back, deferred.
        deadline = time.monotonic() + scaled(8)
        while True:
            assert d.alive(), died(d)
            q = mailq(d)
            if hostile.connections() and q and not any(e[4] for e in q):
                break
            assert time.monotonic() < deadline, \
                "the runners did not finish within %d s: mailq %r (a message still active " \
                "after its MX accepted it: that runner's TLS session was damaged)\n%s\n" \
                "-- picomail --\n%s" % (scaled(8), q, other.describe(), d.log(3000))
            time.sleep(0.05)
        assert [e[5][0][0] for e in q] == ["bob@hx.test"], \
            "want only the first message queued: %r" % q
        why = q[0][5][0][1]
        check_queued(d, why)
        check_exchange(hostile, 30000)
        time.sleep(0.5)
        assert d.alive(), died(d)
        assert len(other.messages()) == 1, "the second runner's message went out %d times" % (
            len(other.messages()))
        assert not other.events("aborted"), other.describe()
        hostile.stop()
        recovers(d, good, MX_HOSTILE, 25, "bob@hx.test", workdir)
        assert len(other.messages()) == 1, other.describe()
        check_reason(why, 30000)
    finally:
        other.stop()


# --------------------------------------------------------------------------
# The server direction: a CBC suite is never chosen


def s_client(port, *args):
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-brief",
                        "-crlf", "-ign_eof"] + list(args), input=b"QUIT\n",
                       capture_output=True, timeout=20)
    return p.returncode, (p.stdout + p.stderr).decode("latin-1")


@pytest.fixture(scope="module")
def rsa_cert(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("x509-rsa"))
    key, cert = os.path.join(d, "rsa.key"), os.path.join(d, "rsa.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=test.lan"], check=True,
                   capture_output=True, timeout=60)
    return cert, key


@pytest.mark.parametrize("listener", ["smtp-starttls", "smtps"])
def test_server_never_chooses_cbc(make_daemon, rsa_cert, listener):
    """A TLS 1.2 client offering only ECDHE-RSA-AES128-SHA (CBC) is refused
    by the server's alert; offering it first and an AEAD suite second, it
    gets the AEAD suite."""
    d = tls_daemon(make_daemon, None, cert=rsa_cert[0], key=rsa_cert[1],
                   resolver="127.0.0.1:%d" % dead_udp_port())
    port, args = (d.port, ["-starttls", "smtp"]) if listener == "smtp-starttls" else (d.subs, [])
    rc, out = s_client(port, *args, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA")
    assert "no ciphers available" not in out, "s_client could not offer the suite:\n" + out
    assert rc != 0 and "CONNECTION ESTABLISHED" not in out, \
        "a handshake with only ECDHE-RSA-AES128-SHA (CBC) succeeded:\n" + out
    wait_for(lambda: "fatal alert sent" in d.log(1 << 20), scaled(3),
             "the server's refusal in its log (the ClientHello reached it)")
    rc, out = s_client(port, *args, "-tls1_2", "-cipher",
                       "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES128-GCM-SHA256")
    assert rc == 0 and "Ciphersuite: ECDHE-RSA-AES128-GCM-SHA256" in out, \
        "CBC listed first, AEAD second: want the AEAD suite:\n" + out
    assert "Protocol version: TLSv1.2" in out, out
    assert d.alive()
