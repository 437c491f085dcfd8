"""Delivery to the MX (no smarthost), through dnsmasq (issue 5).

There is no port setting for MX delivery (port 25, as it must be), so the
receiving peer (relaypeer.py, aiosmtpd) listens on port 25 of a loopback
address picked at random in 127.0.0.0/8 for this module (127.A.B.2); the
test domains' MX and A records, served by a dnsmasq on a loopback
ephemeral port (picomail's `resolver`), point there:

    mx.test      MX 10 mx1.mx.test (127.A.B.1: nobody listens)
                 MX 20 mx2.mx.test (127.A.B.2: the peer)
    a.test       no MX, A 127.A.B.2 (RFC 5321 5.1: the address of the domain)
    nullmx.test  null MX (RFC 7505)
    nx.test      NXDOMAIN

If port 25 cannot be bound on that address (taken, or not permitted), the
tests skip and say why.
"""

import errno
import os
import random
import socket
import time

import pytest

from picotest import message
from relaytest import (Dnsmasq, Peer, mailq, relay_daemon, submit, wait_for, wait_queue_empty, dsn,
                       final_recipients)

RNG = random.Random(os.environ.get("PICOMAIL_SEED"))
NET = "127.%d.%d" % (RNG.randint(100, 250), RNG.randint(1, 250))
MX1, MX2 = NET + ".1", NET + ".2"


pytestmark = pytest.mark.usefixtures("need_aiosmtpd")


@pytest.fixture(scope="module")
def port25():
    """Skips unless port 25 on MX2 (and MX1, to be sure it is dead) can be
    bound here."""
    for host in (MX2, MX1):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, 25))
        except OSError as e:
            pytest.skip("cannot bind %s:25 for the MX peer (%s): MX delivery has no port "
                        "setting, so these tests need port 25 on a loopback address" % (
                            host, errno.errorcode.get(e.errno, e.errno)))
        finally:
            s.close()
    return 25


@pytest.fixture(scope="module")
def dns(tmp_path_factory, port25):
    d = Dnsmasq(str(tmp_path_factory.mktemp("mx-dns")), [
        "--mx-host=mx.test,mx1.mx.test,10",
        "--mx-host=mx.test,mx2.mx.test,20",
        "--host-record=mx1.mx.test,%s" % MX1,
        "--host-record=mx2.mx.test,%s" % MX2,
        "--host-record=a.test,%s" % MX2,
        "--dns-rr=nullmx.test,15,000000",
        "--address=/nx.test/",
    ], "mx2.mx.test")
    yield d
    d.stop()


@pytest.fixture
def mx_peer(workdir, port25):
    made = []

    def make(**opts):
        p = Peer(os.path.join(workdir, "mx%d" % len(made)), port=25, host=MX2, **opts)
        made.append(p)
        p.start()
        return p

    yield make
    for p in made:
        p.stop()


def mx_daemon(make_daemon, dns, **kw):
    return relay_daemon(make_daemon, None, resolver=dns.resolver, **kw)


def test_mx_by_preference_with_fallback(make_daemon, dns, mx_peer):
    peer = mx_peer()
    d = mx_daemon(make_daemon, dns)
    submit(d, ["bob@mx.test"], message("to the mx"))
    got = peer.wait_messages(1, timeout=8)
    assert got[0]["rcpt_tos"] == ["bob@mx.test"] and got[0]["mail_from"] == "alice@lan"
    wait_queue_empty(d)
    log = d.log(20000)
    assert "mx1.mx.test[%s]:25" % MX1 in log, \
        "the preferred MX (10, dead) was not tried first:\n" + log[-2000:]


def test_no_mx_uses_the_domain_address(make_daemon, dns, mx_peer):
    peer = mx_peer()
    d = mx_daemon(make_daemon, dns)
    submit(d, ["carol@a.test"], message("to the A record"))
    got = peer.wait_messages(1, timeout=8)
    assert got[0]["rcpt_tos"] == ["carol@a.test"]
    wait_queue_empty(d)


def test_two_domains_two_transactions(make_daemon, dns, mx_peer):
    peer = mx_peer()
    d = mx_daemon(make_daemon, dns)
    submit(d, ["x@mx.test", "y@a.test", "z@mx.test"], message("two domains"))
    got = peer.wait_messages(2, timeout=8)
    wait_queue_empty(d)
    time.sleep(0.5)
    got = peer.messages()
    rc = sorted(sorted(g["rcpt_tos"]) for g in got)
    assert rc == [["x@mx.test", "z@mx.test"], ["y@a.test"]], \
        "one transaction per domain, all of a domain's recipients in it: %r" % rc


def test_mx_opportunistic_starttls(make_daemon, dns, mx_peer, tmp_path):
    """An MX offering STARTTLS (any certificate: no verification for MX)."""
    import subprocess
    key, cert = str(tmp_path / "k.pem"), str(tmp_path / "c.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=mx2.mx.test"], check=True, capture_output=True,
                   timeout=30)
    peer = mx_peer(cert=cert, key=key)
    d = mx_daemon(make_daemon, dns)
    submit(d, ["tls@mx.test"], message("mx starttls"))
    try:
        got = peer.wait_messages(1, timeout=4)
    except AssertionError as e:
        raise AssertionError("%s\n%s\n-- picomail --\n%s" % (e, peer.describe(), d.log(2000)))
    assert got[0]["cipher"], "STARTTLS offered by the MX but not used"
    wait_queue_empty(d)


@pytest.mark.parametrize("domain,status", [("nx.test", "5.1.2"), ("nullmx.test", "5.1.10")])
def test_undeliverable_domain_bounces(make_daemon, dns, domain, status):
    d = mx_daemon(make_daemon, dns)
    submit(d, ["someone@" + domain], message("nowhere"))
    md = d.maildir("alice")
    wait_for(lambda: md.messages(check=False), 6, "the DSN for %s" % domain)
    wait_queue_empty(d)
    files = md.messages(check=False)
    assert len(files) == 1
    _, _, _, per_rcpt, _ = dsn(files[0].data.split(b"\n", 1)[1])
    assert final_recipients(per_rcpt) == ["someone@" + domain]
    assert str(per_rcpt[0]["Status"]) == status, per_rcpt[0].items()


def test_dns_failure_is_retried_not_bounced(make_daemon, dns):
    """A domain the resolver refuses (no upstream: TEMPFAIL) stays queued."""
    d = mx_daemon(make_daemon, dns)
    submit(d, ["someone@elsewhere.invalid"], message("dns down"))
    q = wait_for(lambda: [e for e in mailq(d) if e[5] and e[5][0][1]], 5,
                 "a failed attempt in mailq")
    assert q[0][5][0][1].startswith("4"), q
    time.sleep(1.2)
    assert d.maildir("alice").messages(check=False) == [], "bounced on a temporary DNS failure"
    assert len(mailq(d)) == 1
