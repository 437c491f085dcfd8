"""Helpers for the TLS integration tests (test_tls*.py) and the TLS bench.

Pki makes, at test time with the openssl command, a test CA and server
certificates signed by it: RSA-2048 and EC P-256 (SAN test.lan and
IP:127.0.0.1), the keys in PKCS#8, PKCS#1 and SEC1, a chain through an
intermediate CA, an expired certificate and keys that match nothing.

tls_daemon() starts a picomail with every kind of listener:

    d.port       smtp        starttls   (the first listener: Daemon.wait_ready)
    d.plain      smtp        (no TLS)
    d.sub        submission  starttls   (587)
    d.subs       submission  tls        (465)
    d.pop        pop3        starttls   (110)
    d.pops       pop3        tls        (995)
    d.pop_plain  pop3        (no TLS)

Smtp / PopTls are the raw clients of picotest/pop3test that can switch to
TLS in the middle (STARTTLS, STLS) or start with it (implicit TLS).

Every wait is bounded; every process is started and stopped by its PID.
"""

import base64
import os
import socket
import ssl
import subprocess
import time

from picotest import Client, ServerClosed, ReplyTimeout, assert_reply, free_port
from pop3test import Pop, PASSWORD

HOSTNAME = "test.lan"          # in every server certificate (and IP:127.0.0.1)

# The suites the server must choose, by its own preference, for a client
# that offers everything (OpenSSL's default list).
SUITE = {"rsa": "ECDHE-RSA-AES128-GCM-SHA256", "ec": "ECDHE-ECDSA-AES128-GCM-SHA256"}
# Each AEAD suite the server has, by key type.
SUITES = {
    "rsa": ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305",
            "ECDHE-RSA-AES256-GCM-SHA384"],
    "ec": ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305",
           "ECDHE-ECDSA-AES256-GCM-SHA384"],
}


# --------------------------------------------------------------------------
# Test PKI


def _run(args, cwd, input=None):
    p = subprocess.run(args, cwd=cwd, capture_output=True, timeout=60, input=input)
    if p.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s" % (" ".join(args), p.returncode,
                                                      p.stderr.decode(errors="replace")))
    return p


SERVER_EXT = """\
basicConstraints=critical,CA:FALSE
subjectAltName=DNS:test.lan,IP:127.0.0.1
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
"""

CA_EXT = """\
basicConstraints=critical,CA:TRUE,pathlen:0
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
"""

# openssl ca, for a certificate with dates in the past (openssl x509 in
# OpenSSL 3.0 has no -not_before/-not_after).
CA_CNF = """\
[ ca ]
default_ca = test_ca
[ test_ca ]
dir = {dir}
database = {dir}/ca-db/index.txt
new_certs_dir = {dir}/ca-db
serial = {dir}/ca-db/serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
x509_extensions = server
[ any ]
commonName = supplied
[ server ]
basicConstraints=critical,CA:FALSE
subjectAltName=DNS:test.lan,IP:127.0.0.1
extendedKeyUsage=serverAuth
"""


class Pki:
    """Keys and certificates in dir; the attributes are file paths."""

    def __init__(self, dir):
        self.dir = dir
        os.makedirs(dir, exist_ok=True)
        p = lambda n: os.path.join(dir, n)
        self.ca, self.ca_key = p("ca.pem"), p("ca.key")
        # The root CA (RSA-2048, self-signed).
        _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
              "-keyout", self.ca_key, "-out", self.ca, "-days", "30",
              "-subj", "/CN=picomail test CA",
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], dir)
        with open(p("server.ext"), "w") as f:
            f.write(SERVER_EXT)
        with open(p("ca.ext"), "w") as f:
            f.write(CA_EXT)

        # Server keys: PKCS#8 ("PRIVATE KEY", what openssl 3 writes), and
        # the same keys as PKCS#1 ("RSA PRIVATE KEY") and SEC1 ("EC PRIVATE KEY").
        self.key = {"rsa": p("rsa.key"), "ec": p("ec.key")}
        _run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
              "-out", self.key["rsa"]], dir)
        _run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-pkeyopt", "ec_param_enc:named_curve", "-out", self.key["ec"]], dir)
        self.rsa_pkcs1, self.ec_sec1 = p("rsa-pkcs1.key"), p("ec-sec1.key")
        _run(["openssl", "rsa", "-in", self.key["rsa"], "-traditional", "-out", self.rsa_pkcs1], dir)
        _run(["openssl", "ec", "-in", self.key["ec"], "-out", self.ec_sec1], dir)

        self.cert = {}
        for kind in ("rsa", "ec"):
            self.cert[kind] = p("%s.pem" % kind)
            self._sign(self.key[kind], self.cert[kind], self.ca, self.ca_key, "server.ext")

        # A chain: leaf <- intermediate <- root; the file holds leaf + intermediate.
        self.inter, self.inter_key = p("inter.pem"), p("inter.key")
        _run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-out", self.inter_key], dir)
        self._sign(self.inter_key, self.inter, self.ca, self.ca_key, "ca.ext",
                   subj="/CN=picomail test intermediate CA")
        leaf = p("leaf-inter.pem")
        self._sign(self.key["ec"], leaf, self.inter, self.inter_key, "server.ext")
        self.chain = p("chain.pem")
        with open(self.chain, "w") as out:
            for f in (leaf, self.inter):
                with open(f) as i:
                    out.write(i.read())

        # Expired: valid in 2020 only, for the RSA key.
        self.expired = p("expired.pem")
        os.makedirs(p("ca-db"), exist_ok=True)
        open(p("ca-db/index.txt"), "w").close()
        with open(p("ca-db/serial"), "w") as f:
            f.write("1000\n")
        with open(p("ca.cnf"), "w") as f:
            f.write(CA_CNF.format(dir=dir))
        _run(["openssl", "req", "-new", "-key", self.key["rsa"], "-subj", "/CN=test.lan",
              "-out", p("expired.csr")], dir)
        _run(["openssl", "ca", "-batch", "-config", p("ca.cnf"), "-cert", self.ca,
              "-keyfile", self.ca_key, "-in", p("expired.csr"), "-out", self.expired,
              "-startdate", "20200101000000Z", "-enddate", "20201231000000Z", "-notext"], dir)

        # Keys that match no certificate here.
        self.other_rsa = p("other-rsa.key")
        _run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
              "-out", self.other_rsa], dir)
        self.other_ec = p("other-ec.key")
        _run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-out", self.other_ec], dir)

    def _sign(self, key, out, ca, ca_key, ext, subj="/CN=test.lan"):
        csr = out + ".csr"
        _run(["openssl", "req", "-new", "-key", key, "-subj", subj, "-out", csr], self.dir)
        _run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
              "-set_serial", "0x" + os.urandom(8).hex(),
              "-days", "30", "-sha256", "-extfile", os.path.join(self.dir, ext), "-out", out],
             self.dir)

    def context(self, verify=True, **kw):
        """A client context trusting the test CA (hostname checked)."""
        if verify:
            ctx = ssl.create_default_context(cafile=self.ca)
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        for k, v in kw.items():
            setattr(ctx, k, v)
        return ctx


# --------------------------------------------------------------------------
# The daemon


LISTENERS = [
    # attribute, protocol, flag
    ("plain", "smtp", ""),
    ("sub", "submission", "starttls"),
    ("subs", "submission", "tls"),
    ("pop", "pop3", "starttls"),
    ("pops", "pop3", "tls"),
    ("pop_plain", "pop3", ""),
]


def tls_daemon(make_daemon, pki, kind="rsa", sessions=None, plaintext=None, extra=(),
               start=True, cert=None, key=None, **conf):
    """A daemon with tls_cert/tls_key of pki (kind rsa or ec, or the files
    cert and key) and every kind of listener (see the module's doc)."""
    lines = []
    ports = {}
    for attr, proto, flag in LISTENERS:
        # free_port() may hand out a port twice in a row: keep them distinct.
        port = free_port()
        while port in ports.values():
            port = free_port()
        ports[attr] = port
        lines.append(("listen %s 127.0.0.1:%d %s" % (proto, ports[attr], flag)).rstrip())
    if plaintext is not None:
        lines.append("plaintext_auth %s" % ("yes" if plaintext else "no"))
    if sessions is not None:
        lines.append("tls_sessions %d" % sessions)
    d = make_daemon(start=False, extra=lines + list(extra),
                    tls_cert=cert or pki.cert[kind], tls_key=key or pki.key[kind], **conf)
    # The daemon's own port was picked apart from these: keep it distinct too.
    while d.port in ports.values():
        d.port = free_port()
    d.settings["listen"] = "smtp %s:%d starttls" % (d.host, d.port)
    for attr, port in ports.items():
        setattr(d, attr, port)
    d.pop3_port = d.pop
    d.kind = kind
    d.write_config()
    if start:
        d.start()
    return d


def pool_tls(d):
    """(used, size) of the TLS pool from picomail status."""
    used, size = d.status()["pool.tls"].split("/")
    return int(used), int(size)


def wait_pool_used(d, want, seconds=3.0):
    """Waits (bounded) until the TLS pool has want slots in use."""
    deadline = time.monotonic() + seconds
    while True:
        got = pool_tls(d)[0]
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def plain_ir(user="alice", password=PASSWORD, authzid=""):
    return b64("%s\0%s\0%s" % (authzid, user, password))


# --------------------------------------------------------------------------
# Raw clients


def _wrap(sock, ctx, hostname):
    tls = ctx.wrap_socket(sock, server_hostname=hostname, do_handshake_on_connect=False)
    tls.do_handshake()
    return tls


class Smtp(Client):
    """A raw SMTP client (picotest.Client) that can turn to TLS."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0, source=None):
        if source is None:
            super().__init__(host, port, timeout)
            return
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.buf = bytearray()
        self.timeout = timeout

    @classmethod
    def implicit(cls, port, ctx, hostname=HOSTNAME, greet=True, **kw):
        """Implicit TLS (465): the handshake, then the 220 greeting."""
        c = cls(port, **kw)
        c.sock = _wrap(c.sock, ctx, hostname)
        if greet:
            assert_reply(c.reply(), "220", "greeting after the TLS handshake")
        return c

    @classmethod
    def greeted(cls, port, ehlo="EHLO client.lan", **kw):
        c = cls(port, **kw)
        assert_reply(c.reply(), "220", "greeting")
        if ehlo:
            c.ehlo(ehlo)
        return c

    def ehlo(self, line="EHLO client.lan"):
        r = self.expect(line, "250")
        self.keywords = [l[4:].split(" ")[0].upper() for l in r.lines[1:]]
        self.auth_line = [l[4:] for l in r.lines[1:] if l[4:].upper().startswith("AUTH ")]
        return r

    def starttls(self, ctx, hostname=HOSTNAME):
        r = self.expect("STARTTLS", "220 2.0.0")
        assert not self.buf, "plain text after the STARTTLS reply: %r" % bytes(self.buf)
        self.sock = _wrap(self.sock, ctx, hostname)
        return r

    @property
    def tls(self):
        return isinstance(self.sock, ssl.SSLSocket)

    def cipher(self):
        return self.sock.cipher()      # (name, protocol, bits)

    def login(self, user="alice", password=PASSWORD):
        self.expect("AUTH PLAIN " + plain_ir(user, password), "235 2.7.0")


class PopTls(Pop):
    """A raw POP3 client (pop3test.Pop) that can turn to TLS."""

    @classmethod
    def implicit(cls, port, ctx, hostname=HOSTNAME, greet=True, **kw):
        c = cls(port, greet=False, **kw)
        c.sock = _wrap(c.sock, ctx, hostname)
        if greet:
            c.greeting = c.status()
            assert c.greeting.startswith("+OK"), c.greeting
        return c

    def capa(self):
        return self.lines("CAPA")

    def stls(self, ctx, hostname=HOSTNAME):
        r = self.ok("STLS")
        assert r == "+OK Begin TLS negotiation", r
        assert not self.buf, "plain text after the STLS reply: %r" % bytes(self.buf)
        self.sock = _wrap(self.sock, ctx, hostname)
        return r

    def cipher(self):
        return self.sock.cipher()


def client_hello(hostname=HOSTNAME):
    """The bytes of a real TLS ClientHello (from Python's ssl, in memory)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=hostname)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    data = out.read()
    assert data[:1] == b"\x16" and len(data) > 100, "not a ClientHello: %r" % data[:16]
    return data


__all__ = ["Pki", "tls_daemon", "pool_tls", "wait_pool_used", "Smtp", "PopTls", "b64",
           "plain_ir", "client_hello", "HOSTNAME", "SUITE", "SUITES", "PASSWORD",
           "ServerClosed", "ReplyTimeout", "free_port"]
