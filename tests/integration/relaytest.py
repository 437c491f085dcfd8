"""Helpers for the queue and relay tests (test_relay*.py, test_queue*.py).

Peer        one relaypeer.py process (aiosmtpd) on a loopback port: a
            smarthost or an MX that records what it accepts; started and
            stopped by its PID.
Dnsmasq     dnsmasq on a loopback ephemeral port with the test records
            (host names for TLS smarthosts, MX and A records).
relay_daemon  a picomail with a smarthost (or none), short retry times
            and a resolver that is never the machine's own.
control()   one command on <spool>/control ("mailq", "flush", "delete ID",
            "status"), read to EOF.
Spool       the queue's files: msg/, env/, tmp/, parsed envelopes.
dsn()       a delivery status notification parsed with Python's email
            package and checked as RFC 3464 describes it.

Every wait is bounded; every process is stopped by its PID.
"""

import email
import email.policy
import email.utils
import json
import os
import signal
import socket
import subprocess
import time

from picotest import ROOT, free_port

PY = "/usr/bin/python3"
HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "relaypeer.py")

RETRY = ["retry_min 1s", "retry_max 1s"]


def ensure_aiosmtpd():
    """aiosmtpd for Debian's python3 (python3-aiosmtpd), installed through
    deps.sh when missing (root on Debian); False if it is not there."""
    probe = [PY, "-c", "import aiosmtpd"]
    if subprocess.run(probe, capture_output=True).returncode == 0:
        return True
    subprocess.run(["bash", os.path.join(ROOT, "board/common/deps.sh"), "pkg:python3-aiosmtpd"],
                   capture_output=True, timeout=600)
    return subprocess.run(probe, capture_output=True).returncode == 0


def wait_for(pred, timeout, what, interval=0.05):
    """Polls pred() until it returns something true; returns it, or fails
    naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def stop_pid(proc, sig=signal.SIGTERM, timeout=5):
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


# --------------------------------------------------------------------------
# The recording peer (aiosmtpd)


class Peer:
    """relaypeer.py on host:port.  Options as keyword arguments:
    cert/key (STARTTLS, or implicit_tls=True), require_starttls, auth
    ("user:password"), auth_mech (list), fail_data (N), reject_rcpt /
    defer_rcpt (lists), reject_data, sleep_data (s), sleep_count (K)."""

    def __init__(self, out, port=None, host="127.0.0.1", **opts):
        self.out = out
        self.host = host
        self.port = port or free_port(host)
        self.opts = opts
        self.proc = None
        os.makedirs(out, exist_ok=True)

    def args(self):
        a = [PY, PEER, "--host", self.host, "--port", str(self.port), "--out", self.out]
        for k, v in self.opts.items():
            flag = "--" + k.replace("_", "-")
            if v is True:
                a.append(flag)
            elif v is False or v is None:
                continue
            elif isinstance(v, (list, tuple)):
                for x in v:
                    a += [flag, str(x)]
            else:
                a += [flag, str(v)]
        return a

    def start(self, timeout=10):
        ready = os.path.join(self.out, "ready")
        if os.path.exists(ready):
            os.unlink(ready)
        self.logf = open(os.path.join(self.out, "peer.log"), "ab")
        self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("relaypeer did not start on %s:%d:\n%s" % (
                    self.host, self.port, self.log()))
            time.sleep(0.02)
        return self

    def stop(self):
        stop_pid(self.proc)
        if getattr(self, "logf", None):
            self.logf.close()
            self.logf = None

    def log(self):
        try:
            with open(os.path.join(self.out, "peer.log"), "rb") as f:
                return f.read()[-4000:].decode("latin-1")
        except OSError:
            return ""

    def messages(self):
        """Every message accepted so far, oldest first."""
        out = []
        for name in sorted(os.listdir(self.out)):
            if name.startswith("msg-") and name.endswith(".json"):
                with open(os.path.join(self.out, name)) as f:
                    m = json.load(f)
                m["name"] = name
                m["bytes"] = m["data"].encode("latin-1")
                out.append(m)
        return out

    def events(self, what=None):
        """[(time, event, detail)] from events.log."""
        try:
            with open(os.path.join(self.out, "events.log")) as f:
                lines = f.read().splitlines()
        except OSError:
            return []
        out = []
        for l in lines:
            t, ev, detail = (l.split(" ", 2) + [""])[:3]
            if what is None or ev == what:
                out.append((float(t), ev, detail))
        return out

    def wait_messages(self, n, timeout=10):
        return wait_for(lambda: len(self.messages()) >= n and self.messages(), timeout,
                        "%d message(s) at the peer on port %d (events: %r)" % (
                            n, self.port, self.events()[-12:]))

    def describe(self):
        return "peer %s:%d events:\n  %s" % (self.host, self.port, "\n  ".join(
            "%s %s" % (e, d) for _, e, d in self.events()[-30:]))


# --------------------------------------------------------------------------
# dnsmasq


def find_dnsmasq():
    for d in (os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin", "/sbin"]):
        p = os.path.join(d, "dnsmasq")
        if d and os.access(p, os.X_OK):
            return p
    return None


def free_udp_tcp_port(host="127.0.0.1"):
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = u.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def dns_probe(host, port, name):
    import struct
    q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    q += struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        try:
            s.sendto(q, (host, port))
            data = s.recv(512)
        except OSError:
            return False
    return len(data) >= 12 and data[:2] == q[:2]


class Dnsmasq:
    """dnsmasq on 127.0.0.1:<port> serving records (dnsmasq options such as
    --host-record=..., --mx-host=...); everything else under .test is
    NXDOMAIN, anything else REFUSED (a quick TEMPFAIL for picomail)."""

    def __init__(self, workdir, records, probe_name):
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        exe = find_dnsmasq()
        if exe is None:
            subprocess.run(["bash", os.path.join(ROOT, "board/common/deps.sh"), "pkg:dnsmasq"],
                           capture_output=True, timeout=600)
            exe = find_dnsmasq()
        if exe is None:
            raise RuntimeError("dnsmasq is missing: bash board/common/deps.sh pkg:dnsmasq")
        self.port = free_udp_tcp_port()
        args = [exe, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll",
                "--conf-file=/dev/null", "--pid-file=", "--port=%d" % self.port,
                "--listen-address=127.0.0.1", "--bind-interfaces", "--log-queries",
                "--log-facility=-", "--local=/test/"] + list(records)
        if os.getuid() == 0:
            args.append("--user=root")
        self.logf = open(os.path.join(workdir, "dnsmasq.log"), "w")
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not dns_probe("127.0.0.1", self.port, probe_name):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("dnsmasq did not start:\n" + self.log())
            time.sleep(0.05)

    @property
    def resolver(self):
        return "resolver 127.0.0.1:%d" % self.port

    def log(self):
        self.logf.flush()
        with open(os.path.join(self.dir, "dnsmasq.log")) as f:
            return f.read()[-3000:]

    def stop(self):
        stop_pid(self.proc)
        self.logf.close()


def dead_udp_port():
    """A loopback UDP port nobody listens on: picomail's resolver for tests
    that must make no DNS query at all (never the machine's resolver)."""
    return free_udp_tcp_port()


# --------------------------------------------------------------------------
# The daemon


def relay_daemon(make_daemon, smarthost=None, extra=(), resolver=None, start=True, **conf):
    """A picomail relaying through smarthost ("host:port [flag]", or None:
    deliver to the MX), retrying every second."""
    lines = list(RETRY)
    if smarthost is not None:
        lines.append("smarthost %s" % smarthost)
    lines.append(resolver or "resolver 127.0.0.1:%d" % dead_udp_port())
    lines.extend(extra)
    return make_daemon(start=start, extra=lines, **conf)


def control(d, cmd, timeout=5):
    """One command on the daemon's control socket; the whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(os.path.join(d.spool, "control"))
        s.sendall(cmd.encode() + b"\n")
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out.decode("latin-1")
            out += chunk


def status(d):
    out = {}
    for line in control(d, "status").splitlines():
        k, _, v = line.partition(":")
        out[k.strip()] = v.strip()
    return out


def queue_length(d):
    return int(status(d)["queue_length"])


def wait_queue_empty(d, timeout=10):
    def empty():
        return queue_length(d) == 0
    try:
        wait_for(empty, timeout, "an empty queue")
    except AssertionError:
        raise AssertionError("queue not empty after %.0f s:\n%s\n-- log --\n%s" % (
            timeout, control(d, "mailq"), d.log(3000))) from None


def mailq(d):
    """[(id, size, age, sender, active, [(rcpt, why)])] from "mailq"."""
    out = []
    for line in control(d, "mailq").splitlines():
        if line == "Mail queue is empty":
            continue
        if line.startswith("    "):
            rest = line.strip()
            addr, _, why = rest.partition(" ")
            out[-1][5].append((addr.strip("<>"), why.strip()[1:-1] if why else ""))
            continue
        w = line.split(" ")
        out.append((w[0], int(w[1]), int(w[2]), w[3].strip("<>"), "(active)" in line, []))
    return out


class Spool:
    """The queue's files under d.spool."""

    def __init__(self, d):
        self.dir = d.spool

    def names(self, sub):
        p = os.path.join(self.dir, sub)
        if not os.path.isdir(p):
            return []
        return sorted(n for n in os.listdir(p) if not n.startswith("."))

    def env_text(self, qid):
        with open(os.path.join(self.dir, "env", qid)) as f:
            return f.read()

    def envelope(self, qid):
        """The envelope as a dict: arrival, sender, attempts, next, rcpts
        [(state, kind, addr, why)], complete (ends with "end")."""
        text = self.env_text(qid)
        e = {"rcpts": [], "complete": text.endswith("end\n") or text.endswith("end")}
        for line in text.splitlines():
            w = line.split(" ", 1)
            if w[0] == "rcpt":
                sk, addr = w[1].split(" ", 1)
                e["rcpts"].append([sk[0], sk[1], addr, ""])
            elif w[0] == "why" and e["rcpts"]:
                e["rcpts"][-1][3] = w[1] if len(w) > 1 else ""
            elif w[0] in ("arrival", "attempts", "next"):
                e[w[0]] = int(w[1])
            elif w[0] == "sender":
                e["sender"] = w[1] if len(w) > 1 else ""
        return e

    def assert_consistent(self, allow_tmp=False, done=()):
        """No envelope without its message, no message without its envelope
        but those of DONE, every envelope complete; tmp/ empty unless
        allow_tmp.  DONE: the messages whose delivery had ended when a
        kill -9 came, which may fall between queue_remove's two unlinks
        (the envelope first); the next start removes such a message file."""
        msg, env, tmp = self.names("msg"), self.names("env"), self.names("tmp")
        assert set(env) <= set(msg), "envelopes without a message: %r" % (set(env) - set(msg))
        assert set(msg) - set(done) <= set(env), "messages without an envelope (half-queued): %r" % (
            set(msg) - set(done) - set(env))
        for q in env:
            assert self.envelope(q)["complete"], "envelope %s truncated:\n%s" % (
                q, self.env_text(q))
        if not allow_tmp:
            assert tmp == [], "left in the spool's tmp/: %r" % tmp
        return msg


# --------------------------------------------------------------------------
# Messages


def submit(d, rcpts, data, sender="alice@lan", host=None, expect="250"):
    """MAIL, RCPT..., DATA over a raw connection; returns the final reply."""
    from picotest import send_transaction, assert_reply
    c = d.session(host=host)
    try:
        r = send_transaction(c, rcpts, data, sender=sender)
        assert_reply(r, expect, "end of data")
        c.cmd("QUIT")
        return r
    finally:
        c.close()


def queue_id_of(reply):
    """The id in "250 2.0.0 Ok: queued as ID"."""
    assert "queued as " in reply.text, "not a queued reply: %r" % reply
    return reply.text.rsplit("queued as ", 1)[1].strip()


def body_of(data):
    """The message after picomail's trace header (Received: ... continued)."""
    lines = data.split(b"\r\n")
    assert lines[0].startswith(b"Received: "), "no Received: first: %r" % data[:200]
    i = 1
    while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


def dsn(data):
    """Parses a delivery status notification (RFC 3464) with Python's email
    package; checks its structure; returns (message, text, per-message
    fields, [per-recipient fields], headers part)."""
    if isinstance(data, str):
        data = data.encode("latin-1")
    m = email.message_from_bytes(data, policy=email.policy.default)
    assert m.get_content_type() == "multipart/report", \
        "DSN is %s, not multipart/report:\n%s" % (m.get_content_type(), data[:1500])
    assert m.get_param("report-type") == "delivery-status", \
        "report-type is %r" % m.get_param("report-type")
    parts = m.get_payload()
    assert isinstance(parts, list) and len(parts) >= 2, "DSN parts: %r" % parts
    types = [p.get_content_type() for p in parts]
    assert types[0] == "text/plain", "first part %s, want text/plain" % types[0]
    assert types[1] == "message/delivery-status", \
        "second part %s, want message/delivery-status" % types[1]
    blocks = parts[1].get_payload()
    assert isinstance(blocks, list) and len(blocks) >= 2, \
        "message/delivery-status has %r blocks, want per-message + per-recipient" % blocks
    per_msg, per_rcpt = blocks[0], blocks[1:]
    assert per_msg["Reporting-MTA"], "no Reporting-MTA: %r" % per_msg.items()
    assert per_msg["Reporting-MTA"].startswith("dns;"), per_msg["Reporting-MTA"]
    assert per_msg["Arrival-Date"], "no Arrival-Date"
    email.utils.parsedate_to_datetime(str(per_msg["Arrival-Date"]))
    for r in per_rcpt:
        assert str(r["Final-Recipient"]).startswith("rfc822;"), r.items()
        assert r["Action"] == "failed", r.items()
        assert r["Status"] and str(r["Status"])[0] == "5", r.items()
        assert str(r["Diagnostic-Code"]).startswith("smtp;"), r.items()
    headers = None
    if len(parts) >= 3:
        assert types[2] in ("text/rfc822-headers", "message/rfc822"), types
        headers = parts[2]
    text = parts[0].get_content()
    return m, text, per_msg, per_rcpt, headers


def final_recipients(per_rcpt):
    return sorted(str(r["Final-Recipient"]).split(";", 1)[1].strip() for r in per_rcpt)


def proc_cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
