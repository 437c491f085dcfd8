#!/usr/bin/python3
"""hostile_tls.py - a TLS 1.2 server written by hand, for the relay client's
handling of a server's certificate (test_relay_x509.py).

No ssl module here: the server speaks SMTP in clear (a 220 greeting, an
EHLO reply offering STARTTLS, "220 2.0.0 go ahead" to STARTTLS), or TLS
from the first byte (--implicit-tls), then reads the client's ClientHello,
answers with a ServerHello built here and a Certificate message holding
the DER file it was given, both cut into records of --record handshake
octets, and watches what the client does: a client that refuses the
certificate sends an alert or closes; one that took it waits for the
ServerKeyExchange.  With --ske it is then sent one with a signature that
cannot verify, which the client can only refuse by checking it with the
certificate's key.  No handshake ever completes.

As a process (started and stopped by its PID, relaytest-style):

    hostile_tls.py --port P --out DIR --cert FILE.der [--host 127.0.0.1]
                   [--implicit-tls]   TLS from the first byte (465)
                   [--record N]       handshake octets per record (default 256)
                   [--suite 0xC02B]   the suite to choose if the client offers it
                   [--linger S]       how long to watch the client after the
                                      Certificate (default 0.5)
                   [--ske]            then, if the client waits, send the
                                      ServerKeyExchange and watch it (at most
                                      --ske-wait S, default 5) until it answers
                   [--hold FILE]      after the ClientHello, wait (at most 30 s)
                                      until FILE exists before answering

It serves one connection at a time, on loopback only.  DIR/ready appears
once it listens; DIR/events.log gets one line per step; each connection N
ends as DIR/conn-N.json:

    {"n", "commands": [SMTP lines], "hello": parse_client_hello() or null,
     "suite", "cert_octets", "records", "send_error",
     "after_cert": what the client did after the Certificate
                   ("alert 2 42", "closed", "reset", "silent", "data ...",
                   joined by ", "),
     "after_ske": the same after the ServerKeyExchange, or null}

As a module: the DER helpers (der_read, der, pem_der, splice_ec_key), the
ClientHello parser, suite names, and TlsPeer, which runs the process.
Every wait is bounded.
"""

import argparse
import base64
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time

# --------------------------------------------------------------------------
# DER, just enough to take a certificate apart and put it back together


def der_read(buf, off=0):
    """(tag, start of content, end of content) of the TLV at off."""
    tag = buf[off]
    n = buf[off + 1]
    off += 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 4:
            raise ValueError("DER length of %d octets" % k)
        n = int.from_bytes(buf[off:off + k], "big")
        off += k
    if off + n > len(buf):
        raise ValueError("DER element runs past its container")
    return tag, off, off + n


def der_children(buf):
    """[(tag, whole TLV, content)] of a constructed element's content."""
    out, off = [], 0
    while off < len(buf):
        tag, start, end = der_read(buf, off)
        out.append((tag, buf[off:end], buf[start:end]))
        off = end
    return out


def der(tag, content):
    """One TLV with the shortest length form."""
    n = len(content)
    if n < 0x80:
        head = bytes([n])
    else:
        b = n.to_bytes((n.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(b)]) + b
    return bytes([tag]) + head + content


def pem_der(path):
    """The DER of the first PEM object in path."""
    with open(path) as f:
        text = f.read()
    body = text.split("-----BEGIN", 1)[1].split("-----", 1)[1].split("-----END", 1)[0]
    return base64.b64decode("".join(body.split()), validate=True)


OID_EC_PUBLIC_KEY = bytes.fromhex("2a8648ce3d0201")


def splice_ec_key(cert, point):
    """The certificate cert (DER) with its EC subjectPublicKey BIT STRING
    holding point (the unused-bits octet 0, then point), every enclosing
    length fixed.  The signature no longer matches, which the unverified
    path does not check."""
    tag, s, e = der_read(cert)
    assert tag == 0x30 and e == len(cert), "not a certificate"
    top = der_children(cert[s:e])
    tbs_tag, _, tbs = top[0]
    assert tbs_tag == 0x30, "no TBSCertificate"
    parts = []
    found = False
    for tag, tlv, content in der_children(tbs):
        if tag == 0x30 and not found:
            kids = der_children(content)
            if (len(kids) == 2 and kids[0][0] == 0x30 and kids[1][0] == 0x03 and
                    der_children(kids[0][2])[0][2] == OID_EC_PUBLIC_KEY):
                tlv = der(0x30, kids[0][1] + der(0x03, b"\x00" + point))
                found = True
        parts.append(tlv)
    assert found, "no EC SubjectPublicKeyInfo in the certificate"
    return der(0x30, der(0x30, b"".join(parts)) + b"".join(t for _, t, _ in top[1:]))


def ec_point(cert):
    """The subjectPublicKey of an EC certificate (without the unused-bits octet)."""
    _, s, e = der_read(cert)
    tbs = der_children(cert[s:e])[0][2]
    for tag, _, content in der_children(tbs):
        if tag == 0x30:
            kids = der_children(content)
            if (len(kids) == 2 and kids[1][0] == 0x03 and kids[0][0] == 0x30 and
                    der_children(kids[0][2])[0][2] == OID_EC_PUBLIC_KEY):
                return kids[1][2][1:]
    raise ValueError("no EC key")


# --------------------------------------------------------------------------
# TLS messages

HANDSHAKE, ALERT = 22, 21

SCSV = 0x00FF
# ECDHE with an AEAD (AES-GCM, AES-CCM, ChaCha20-Poly1305), TLS 1.2.
ECDHE_AEAD = {
    0xC02B: "ECDHE-ECDSA-AES128-GCM-SHA256", 0xC02C: "ECDHE-ECDSA-AES256-GCM-SHA384",
    0xC02F: "ECDHE-RSA-AES128-GCM-SHA256", 0xC030: "ECDHE-RSA-AES256-GCM-SHA384",
    0xCCA8: "ECDHE-RSA-CHACHA20-POLY1305", 0xCCA9: "ECDHE-ECDSA-CHACHA20-POLY1305",
    0xC0AC: "ECDHE-ECDSA-AES128-CCM", 0xC0AD: "ECDHE-ECDSA-AES256-CCM",
    0xC0AE: "ECDHE-ECDSA-AES128-CCM8", 0xC0AF: "ECDHE-ECDSA-AES256-CCM8",
}
ECDHE_ECDSA = (0xC02B, 0xCCA9, 0xC02C, 0xC0AC, 0xC0AD, 0xC0AE, 0xC0AF)
EXT_SUPPORTED_VERSIONS, EXT_POINT_FORMATS, EXT_RENEGOTIATION = 0x002B, 0x000B, 0xFF01
TLS13 = 0x0304

# The uncompressed base point of P-256: a valid key share for the
# ServerKeyExchange, whose signature is what the client must refuse.
P256_G = bytes.fromhex(
    "04"
    "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
    "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5")


def u16(n):
    return struct.pack(">H", n)


def u24(n):
    return struct.pack(">I", n)[1:]


def handshake(kind, body):
    return bytes([kind]) + u24(len(body)) + body


def records(kind, data, size):
    """data cut into records of at most size octets (TLS 1.2 headers)."""
    out = []
    for i in range(0, len(data), size):
        chunk = data[i:i + size]
        out.append(bytes([kind]) + b"\x03\x03" + u16(len(chunk)) + chunk)
    return out


def parse_client_hello(msg):
    """A ClientHello handshake message (type, length, body) as a dict:
    version, suites, compression, extensions (type numbers in order),
    supported_versions (or None), point_formats (or None), groups,
    sig_algs, sni, session_id_len."""
    assert msg[0] == 1, "handshake type %d, not ClientHello" % msg[0]
    body = msg[4:4 + int.from_bytes(msg[1:4], "big")]
    p = 0
    version = int.from_bytes(body[p:p + 2], "big")
    p += 2 + 32
    sid = body[p]
    p += 1 + sid
    n = int.from_bytes(body[p:p + 2], "big")
    p += 2
    suites = [int.from_bytes(body[p + i:p + i + 2], "big") for i in range(0, n, 2)]
    p += n
    n = body[p]
    compression = list(body[p + 1:p + 1 + n])
    p += 1 + n
    out = {"version": version, "suites": suites, "compression": compression,
           "extensions": [], "supported_versions": None, "point_formats": None,
           "groups": [], "sig_algs": [], "sni": None, "session_id_len": sid}
    if p >= len(body):
        return out
    end = p + 2 + int.from_bytes(body[p:p + 2], "big")
    p += 2
    while p + 4 <= end:
        t = int.from_bytes(body[p:p + 2], "big")
        n = int.from_bytes(body[p + 2:p + 4], "big")
        data = body[p + 4:p + 4 + n]
        p += 4 + n
        out["extensions"].append(t)
        if t == EXT_SUPPORTED_VERSIONS:
            out["supported_versions"] = [int.from_bytes(data[1 + i:3 + i], "big")
                                         for i in range(0, data[0], 2)]
        elif t == EXT_POINT_FORMATS:
            out["point_formats"] = list(data[1:1 + data[0]])
        elif t == 0x000A:
            out["groups"] = [int.from_bytes(data[2 + i:4 + i], "big")
                             for i in range(0, int.from_bytes(data[:2], "big"), 2)]
        elif t == 0x000D:
            out["sig_algs"] = [int.from_bytes(data[2 + i:4 + i], "big")
                               for i in range(0, int.from_bytes(data[:2], "big"), 2)]
        elif t == 0x0000 and len(data) > 5:
            out["sni"] = data[5:5 + int.from_bytes(data[3:5], "big")].decode("latin-1")
    return out


def server_hello(hello, suite):
    """A ServerHello for the parsed ClientHello: TLS 1.2, no session id, no
    compression; renegotiation_info (empty) if the client signalled secure
    renegotiation, ec_point_formats (uncompressed) if it sent the
    extension: a client may refuse any other."""
    exts = b""
    if EXT_RENEGOTIATION in hello["extensions"] or SCSV in hello["suites"]:
        exts += u16(EXT_RENEGOTIATION) + u16(1) + b"\x00"
    if hello["point_formats"] is not None:
        exts += u16(EXT_POINT_FORMATS) + u16(2) + b"\x01\x00"
    body = b"\x03\x03" + os.urandom(32) + b"\x00" + u16(suite) + b"\x00"
    if exts:
        body += u16(len(exts)) + exts
    return handshake(2, body)


def certificate(der_cert):
    """The Certificate message with der_cert alone; none at all (an empty
    certificate_list) if der_cert is empty."""
    entry = u24(len(der_cert)) + der_cert if der_cert else b""
    return handshake(11, u24(len(entry)) + entry)


def server_key_exchange():
    """ECDHE on P-256 with the base point, signed (ECDSA, SHA-256) by
    r = s = 1: never a valid signature."""
    params = b"\x03" + u16(23) + bytes([len(P256_G)]) + P256_G
    sig = der(0x30, der(0x02, b"\x01") + der(0x02, b"\x01"))
    return handshake(12, params + b"\x04\x03" + u16(len(sig)) + sig)


# --------------------------------------------------------------------------
# The server


class Closed(Exception):
    pass


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        sock.settimeout(5)

    def fill(self):
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            raise Closed("reset")
        if not chunk:
            raise Closed("closed")
        self.buf += chunk

    def readline(self):
        while b"\n" not in self.buf:
            if len(self.buf) > 4096:
                raise Closed("line too long")
            self.fill()
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def record(self):
        """(type, version, payload) of the next record; at most 2^14 + 2048."""
        while len(self.buf) < 5:
            self.fill()
        kind, version, n = self.buf[0], int.from_bytes(self.buf[1:3], "big"), \
            int.from_bytes(self.buf[3:5], "big")
        if n > 16384 + 2048:
            raise Closed("record of %d octets" % n)
        while len(self.buf) < 5 + n:
            self.fill()
        payload, self.buf = self.buf[5:5 + n], self.buf[5 + n:]
        return kind, version, payload

    def client_hello(self):
        """The ClientHello, from however many records carry it (at most 64 KB)."""
        data = b""
        first_version = None
        while len(data) < 4 or len(data) < 4 + int.from_bytes(data[1:4], "big"):
            kind, version, payload = self.record()
            if kind != HANDSHAKE:
                raise Closed("record type %d before the ClientHello" % kind)
            if first_version is None:
                first_version = version
            data += payload
            if len(data) > 65536:
                raise Closed("ClientHello over 64 KB")
        hello = parse_client_hello(data)
        hello["record_version"] = first_version
        return hello

    def watch(self, seconds):
        """What the client does within seconds, until it closes: alerts,
        other records, a close or a reset, or nothing ("silent")."""
        seen = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            while len(self.buf) >= 5 and len(self.buf) >= 5 + int.from_bytes(self.buf[3:5],
                                                                             "big"):
                kind, _, payload = self.record()
                if kind == ALERT and len(payload) >= 2:
                    seen.append("alert %d %d" % (payload[0], payload[1]))
                else:
                    seen.append("data type %d, %d octets" % (kind, len(payload)))
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                seen.append("reset")
                return ", ".join(seen)
            finally:
                self.sock.settimeout(5)
            if not chunk:
                if self.buf:
                    seen.append("%d stray octets" % len(self.buf))
                seen.append("closed")
                return ", ".join(seen)
            self.buf += chunk
        return ", ".join(seen + ["silent"])

    def send(self, data):
        self.sock.sendall(data)


class Server:
    def __init__(self, args):
        self.args = args
        with open(args.cert, "rb") as f:
            self.cert = f.read()
        self.n = 0
        self.events = open(os.path.join(args.out, "events.log"), "a", buffering=1)

    def event(self, what, detail=""):
        self.events.write("%.3f %s %s\n" % (time.time(), what, detail))

    def save(self, rec):
        name = "conn-%d.json" % rec["n"]
        tmp = os.path.join(self.args.out, "." + name)
        with open(tmp, "w") as f:
            json.dump(rec, f)
        os.rename(tmp, os.path.join(self.args.out, name))

    def smtp(self, c, rec):
        """The clear-text part up to the 220 to STARTTLS; False if the client
        went another way (recorded)."""
        c.send(b"220 hostile.test ESMTP\r\n")
        while True:
            line = c.readline()
            rec["commands"].append(line.decode("latin-1"))
            verb = line.split(b" ", 1)[0].upper()
            if verb == b"EHLO":
                c.send(b"250-hostile.test\r\n250-8BITMIME\r\n250 STARTTLS\r\n")
            elif verb == b"HELO":
                c.send(b"250 hostile.test\r\n")
            elif verb == b"STARTTLS":
                c.send(b"220 2.0.0 go ahead\r\n")
                return True
            elif verb == b"QUIT":
                c.send(b"221 2.0.0 bye\r\n")
                return False
            elif verb in (b"NOOP", b"RSET"):
                c.send(b"250 2.0.0 ok\r\n")
            else:
                c.send(b"530 5.7.0 STARTTLS first\r\n")

    def session(self, c, rec):
        if not self.args.implicit_tls and not self.smtp(c, rec):
            return
        hello = c.client_hello()
        rec["hello"] = hello
        self.event("hello", "suites=%s" % ",".join("%04x" % s for s in hello["suites"]))
        if self.args.hold:
            deadline = time.monotonic() + 30
            while not os.path.exists(self.args.hold) and time.monotonic() < deadline:
                time.sleep(0.01)
            self.event("hold", "released" if os.path.exists(self.args.hold) else "timed out")
        offered = [s for s in ECDHE_ECDSA if s in hello["suites"]]
        suite = self.args.suite if self.args.suite in hello["suites"] else \
            (offered[0] if offered else None)
        rec["suite"] = suite
        if suite is None:
            c.send(bytes([ALERT]) + b"\x03\x03" + u16(2) + b"\x02\x28")
            rec["after_cert"] = "no ECDHE-ECDSA suite offered: handshake_failure sent"
            return
        flight = server_hello(hello, suite) + certificate(self.cert)
        recs = records(HANDSHAKE, flight, self.args.record)
        rec["cert_octets"] = len(self.cert)
        rec["records"] = len(recs)
        self.event("certificate", "%d octets in %d records" % (len(self.cert), len(recs)))
        sent = 0
        try:
            for r in recs:
                c.send(r)
                sent += 1
        except (BrokenPipeError, ConnectionResetError) as e:
            rec["send_error"] = "%s after %d of %d records" % (e.__class__.__name__, sent,
                                                               len(recs))
        rec["after_cert"] = c.watch(self.args.linger)
        self.event("after_cert", rec["after_cert"])
        if self.args.ske and rec["after_cert"] == "silent":
            try:
                for r in records(HANDSHAKE, server_key_exchange(), self.args.record):
                    c.send(r)
            except (BrokenPipeError, ConnectionResetError) as e:
                rec["send_error"] = e.__class__.__name__
            rec["after_ske"] = c.watch(self.args.ske_wait)
            self.event("after_ske", rec["after_ske"])

    def handle(self, sock):
        self.n += 1
        rec = {"n": self.n, "commands": [], "hello": None, "suite": None, "cert_octets": None,
               "records": None, "send_error": None, "after_cert": None, "after_ske": None,
               "error": None}
        self.event("connect", "#%d" % self.n)
        c = Conn(sock)
        try:
            self.session(c, rec)
        except (Closed, OSError, ValueError, AssertionError, IndexError) as e:
            rec["error"] = "%s: %s" % (e.__class__.__name__, e)
        finally:
            try:
                sock.close()
            except OSError:
                pass
            self.event("end", "#%d %s" % (self.n, rec["error"] or rec["after_cert"]))
            self.save(rec)

    def serve(self):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self.args.host, self.args.port))
        ls.listen(8)
        ls.settimeout(0.2)
        ready = os.path.join(self.args.out, "ready")
        with open(ready + ".tmp", "w") as f:
            f.write("%d\n" % os.getpid())
        os.rename(ready + ".tmp", ready)
        while True:
            try:
                sock, _ = ls.accept()
            except socket.timeout:
                continue
            self.handle(sock)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--implicit-tls", action="store_true")
    p.add_argument("--record", type=int, default=256)
    p.add_argument("--suite", type=lambda s: int(s, 0), default=0xC02B)
    p.add_argument("--linger", type=float, default=0.5)
    p.add_argument("--ske", action="store_true")
    p.add_argument("--ske-wait", type=float, default=5.0)
    p.add_argument("--hold")
    args = p.parse_args()
    if not args.host.startswith("127."):
        p.error("loopback addresses only")
    if not 1 <= args.record <= 16384:
        p.error("--record: 1 to 16384")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    os.makedirs(args.out, exist_ok=True)
    Server(args).serve()
    return 0


# --------------------------------------------------------------------------
# The process, for the tests


class TlsPeer:
    """hostile_tls.py on host:port, serving cert (DER bytes, written to
    out/cert.der); the other options as keyword arguments (record, suite,
    linger, ske, ske_wait, hold, implicit_tls)."""

    def __init__(self, out, cert, port, host="127.0.0.1", **opts):
        self.out, self.host, self.port, self.opts = out, host, port, opts
        os.makedirs(out, exist_ok=True)
        self.cert_path = os.path.join(out, "cert.der")
        with open(self.cert_path, "wb") as f:
            f.write(cert)
        self.proc = None
        self.logf = None

    def start(self, timeout=10):
        ready = os.path.join(self.out, "ready")
        if os.path.exists(ready):
            os.unlink(ready)
        args = ["/usr/bin/python3", os.path.abspath(__file__), "--host", self.host,
                "--port", str(self.port), "--out", self.out, "--cert", self.cert_path]
        for k, v in self.opts.items():
            flag = "--" + k.replace("_", "-")
            if v is True:
                args.append(flag)
            elif v not in (False, None):
                args += [flag, str(v)]
        self.logf = open(os.path.join(self.out, "peer.log"), "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("hostile_tls.py did not start on %s:%d:\n%s" % (
                    self.host, self.port, self.log()))
            time.sleep(0.02)
        return self

    def stop(self, timeout=5):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        if self.logf is not None:
            self.logf.close()
            self.logf = None

    def log(self):
        try:
            with open(os.path.join(self.out, "peer.log"), "rb") as f:
                return f.read()[-3000:].decode("latin-1")
        except OSError:
            return ""

    def connections(self):
        """Every finished connection (conn-N.json), in order."""
        out = []
        for name in os.listdir(self.out):
            if name.startswith("conn-") and name.endswith(".json"):
                with open(os.path.join(self.out, name)) as f:
                    out.append(json.load(f))
        return sorted(out, key=lambda r: r["n"])

    def events(self):
        try:
            with open(os.path.join(self.out, "events.log")) as f:
                return f.read().splitlines()
        except OSError:
            return []

    def describe(self):
        return "hostile TLS peer %s:%d events:\n  %s\n%s" % (
            self.host, self.port, "\n  ".join(self.events()[-30:]), self.log())


if __name__ == "__main__":
    sys.exit(main())
