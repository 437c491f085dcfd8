"""The stub resolver (src/dns.c) against dnsmasq, through tests/tools/dnsq.

dnsmasq (Debian package) serves the test domains on a loopback ephemeral
port: MX with two preferences, A and AAAA host records, a CNAME chain, an
RFC 7505 null MX, NXDOMAIN and NODATA.  A UDP socket that never answers
stands for a dead resolver: three tries of 2 s, then TEMPFAIL.  dnsq is
built here with the host compiler into build/dnsq; dnsmasq is stopped by
its PID.  Loopback only.
"""

import os
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest

from picotest import ROOT, ipv6_loopback_available

DNSQ = os.path.join(ROOT, "build", "dnsq")
DNSQ_SRCS = ["tests/tools/dnsq.c", "src/dns.c", "src/loop.c", "src/io.c", "src/fsyncs.c", "src/log.c", "src/log_kv.c",
             "src/date.c", "src/conf.c", "src/textfile.c", "src/pool.c", "src/random.c"]
DNSQ_TIMEOUT = 15   # seconds: 3 tries of 2 s, with room to spare

DNSMASQ_RECORDS = [
    "--mx-host=example.test,mx1.example.test,10",
    "--mx-host=example.test,mx2.example.test,20",
    "--host-record=mx1.example.test,127.0.0.1",
    "--host-record=mx2.example.test,127.0.0.2,::2",
    "--host-record=multi.example.test,127.0.0.3",
    "--host-record=multi.example.test,127.0.0.4",
    # alias2 -> alias -> mx2: the chain comes in one answer.
    "--cname=alias.example.test,mx2.example.test",
    "--cname=alias2.example.test,alias.example.test",
    # RFC 7505 null MX: preference 0, the root as exchange.
    "--dns-rr=nullmx.example.test,15,000000",
    # Names dnsmasq does not know under example.test are NXDOMAIN;
    # nx.example.test explicitly so.
    "--local=/example.test/",
    "--address=/nx.example.test/",
]


def find_dnsmasq():
    for d in (os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin", "/sbin"]):
        p = os.path.join(d, "dnsmasq")
        if d and os.access(p, os.X_OK):
            return p
    return None


def free_udp_tcp_port(host):
    """A port free for both UDP and TCP on host (dnsmasq binds both)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(20):
        with socket.socket(family, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = u.getsockname()[1]
            try:
                with socket.socket(family, socket.SOCK_STREAM) as t:
                    t.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def dns_probe(host, port, name="example.test", qtype=15):
    """True when a DNS server on host:port answers a query."""
    q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    q += struct.pack(">HH", qtype, 1)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        try:
            s.sendto(q, (host, port))
            data = s.recv(512)
        except OSError:
            return False
    return len(data) >= 12 and data[:2] == q[:2]


@pytest.fixture(scope="module")
def dnsq():
    os.makedirs(os.path.dirname(DNSQ), exist_ok=True)
    cc = os.environ.get("HOSTCC", "cc")
    p = subprocess.run([cc, "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror",
                        "-Isrc", "-o", DNSQ] + DNSQ_SRCS,
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, "building dnsq failed:\n" + p.stderr
    return DNSQ


@pytest.fixture(scope="module")
def dnsmasq(tmp_path_factory):
    """(host, port, host6) of a dnsmasq serving the test records."""
    exe = find_dnsmasq()
    if exe is None:
        subprocess.run(["bash", os.path.join(ROOT, "board/common/deps.sh"), "pkg:dnsmasq"],
                       timeout=600)
        exe = find_dnsmasq()
    if exe is None:
        pytest.fail("dnsmasq is missing: bash board/common/deps.sh pkg:dnsmasq",
                    pytrace=False)
    d = tmp_path_factory.mktemp("dnsmasq")
    v6 = ipv6_loopback_available()
    port = free_udp_tcp_port("127.0.0.1")
    args = [exe, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll",
            "--conf-file=/dev/null", "--pid-file=", "--port=%d" % port,
            "--listen-address=127.0.0.1", "--bind-interfaces", "--log-queries",
            "--log-facility=-"] + DNSMASQ_RECORDS
    if v6:
        args.insert(7, "--listen-address=::1")
    if os.getuid() == 0:
        args.append("--user=root")   # no switch to 'nobody' needed for a test
    log = open(os.path.join(d, "dnsmasq.log"), "w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not dns_probe("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                with open(os.path.join(d, "dnsmasq.log")) as f:
                    pytest.fail("dnsmasq did not start:\n" + f.read(), pytrace=False)
            time.sleep(0.05)
        yield "127.0.0.1", port, ("::1" if v6 else None)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        log.close()


class Answer:
    def __init__(self, p, elapsed):
        self.rc = p.returncode
        self.stderr = p.stderr
        self.elapsed = elapsed
        self.status = None
        self.null_mx = False
        self.mx = []
        self.addrs = []
        for line in p.stdout.splitlines():
            w = line.split()
            if w[0] == "status":
                self.status = w[1]
            elif w[0] == "null_mx":
                self.null_mx = True
            elif w[0] == "mx":
                self.mx.append((int(w[1]), w[2]))
            elif w[0] == "addr":
                self.addrs.append(w[1])

    def __repr__(self):
        return "Answer(rc=%r status=%r mx=%r addrs=%r null_mx=%r stderr=%r)" % (
            self.rc, self.status, self.mx, self.addrs, self.null_mx, self.stderr)


def query(dnsq, server, kind, name):
    t0 = time.monotonic()
    p = subprocess.run([dnsq, server, kind, name], capture_output=True, text=True,
                       timeout=DNSQ_TIMEOUT)
    a = Answer(p, time.monotonic() - t0)
    assert a.rc == 0, a
    return a


def at(server):
    host, port = server[0], server[1]
    return "%s:%d" % (host, port)


def test_mx_sorted_by_preference(dnsq, dnsmasq):
    a = query(dnsq, at(dnsmasq), "mx", "example.test")
    assert a.status == "OK", a
    assert a.mx == [(10, "mx1.example.test"), (20, "mx2.example.test")], a
    assert not a.null_mx and a.addrs == []


def test_mx_name_case_and_final_dot(dnsq, dnsmasq):
    a = query(dnsq, at(dnsmasq), "mx", "EXAMPLE.Test.")
    assert a.status == "OK", a
    assert a.mx == [(10, "mx1.example.test"), (20, "mx2.example.test")], a


def test_addr_a_then_aaaa(dnsq, dnsmasq):
    a = query(dnsq, at(dnsmasq), "addr", "mx2.example.test")
    assert a.status == "OK", a
    assert a.addrs == ["127.0.0.2", "::2"], a


def test_addr_a_only(dnsq, dnsmasq):
    a = query(dnsq, at(dnsmasq), "addr", "mx1.example.test")
    assert a.status == "OK", a
    assert a.addrs == ["127.0.0.1"], a


def test_addr_several(dnsq, dnsmasq):
    a = query(dnsq, at(dnsmasq), "addr", "multi.example.test")
    assert a.status == "OK", a
    assert sorted(a.addrs) == ["127.0.0.3", "127.0.0.4"], a


def test_cname_chain(dnsq, dnsmasq):
    a = query(dnsq, at(dnsmasq), "addr", "alias2.example.test")
    assert a.status == "OK", a
    assert a.addrs == ["127.0.0.2", "::2"], a


def test_null_mx(dnsq, dnsmasq):
    a = query(dnsq, at(dnsmasq), "mx", "nullmx.example.test")
    assert a.status == "OK", a
    assert a.null_mx and a.mx == [], a


@pytest.mark.parametrize("kind,name", [
    ("mx", "nx.example.test"),
    ("addr", "nx.example.test"),
    ("addr", "nothere.example.test"),
])
def test_nxdomain(dnsq, dnsmasq, kind, name):
    a = query(dnsq, at(dnsmasq), kind, name)
    assert a.status == "NXDOMAIN", a
    assert a.mx == [] and a.addrs == []


@pytest.mark.parametrize("kind,name", [
    ("mx", "mx1.example.test"),       # an address, no MX: the caller uses the A
    ("addr", "example.test"),         # MX only
])
def test_nodata(dnsq, dnsmasq, kind, name):
    a = query(dnsq, at(dnsmasq), kind, name)
    assert a.status == "NODATA", a


def test_refused_is_tempfail_at_once(dnsq, dnsmasq):
    # dnsmasq has no upstream for other domains and says so (REFUSED).
    a = query(dnsq, at(dnsmasq), "mx", "elsewhere.invalid")
    assert a.status == "TEMPFAIL", a
    assert a.elapsed < 1.5, a


def test_ipv6_resolver(dnsq, dnsmasq):
    if dnsmasq[2] is None:
        pytest.skip("no IPv6 loopback")
    a = query(dnsq, "[::1]:%d" % dnsmasq[1], "mx", "example.test")
    assert a.status == "OK", a
    assert a.mx == [(10, "mx1.example.test"), (20, "mx2.example.test")], a


@pytest.fixture
def silent():
    """A UDP socket on loopback that receives and never answers."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield s
    s.close()


def received(sock):
    """The datagrams waiting on sock, with their sources."""
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recvfrom(2048))
        except BlockingIOError:
            return out


def test_silent_resolver_is_tempfail_after_three_tries(dnsq, silent):
    a = query(dnsq, "127.0.0.1:%d" % silent.getsockname()[1], "mx", "slow.example.test")
    assert a.status == "TEMPFAIL", a
    assert 5.5 <= a.elapsed < 8, a
    assert "warning" in a.stderr and "slow.example.test" in a.stderr, a
    got = received(silent)
    # Three tries of the one question, from one socket, with one id, and
    # the name as asked.
    assert len(got) == 3, got
    assert len({src for _, src in got}) == 1, got
    assert len({pkt[:2] for pkt, _ in got}) == 1, got
    assert all(b"\x04slow\x07example\x04test\x00\x00\x0f\x00\x01" in pkt for pkt, _ in got)


def test_literals_and_bad_names_need_no_network(dnsq, silent):
    server = "127.0.0.1:%d" % silent.getsockname()[1]
    a = query(dnsq, server, "addr", "[127.0.0.9]")
    assert a.status == "OK" and a.addrs == ["127.0.0.9"], a
    a = query(dnsq, server, "addr", "[IPv6:::1]")
    assert a.status == "OK" and a.addrs == ["::1"], a
    a = query(dnsq, server, "mx", "bad..example.test")
    assert a.status == "NXDOMAIN", a
    assert a.elapsed < 1.5
    assert received(silent) == []
