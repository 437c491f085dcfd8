#!/usr/bin/python3
"""cpu_bench.py BINARY WORKDIR [--messages N] [--handshakes H] - the daemon's
CPU time per unit of work, for "make bench" (issue 15, part 3).

One daemon (its own configuration, loopback ephemeral ports), and its CPU
time (user + system, /proc/PID/stat) across each of:
  smtp_in    N messages of 5 KB over one SMTP session (smtplib), each
             acknowledged only once durable;
  pop3_out   the same N retrieved and deleted in one POP3 session (poplib);
  relay_out  N messages queued for a smarthost that is down, then a queue
             flush to a smarthost that is up (Postfix's smtp-sink), until
             the queue is empty: the outbound SMTP client alone;
  tls_ecdsa, tls_rsa
             H SMTP STARTTLS handshakes (TLS 1.2, ECDHE, a new full
             handshake each time) with an ECDSA P-256 and an RSA-2048
             certificate.
Prints one JSON object on stdout: microseconds of daemon CPU per message
(per handshake for TLS) for each, and the counts; progress on stderr.

PICOMAIL_WRAP (e.g. qemu-aarch64-static) runs the daemon under an emulator:
the figures then include the emulator's own work, so "make bench" reports
them only as ratios to the host's.  Every process started here is stopped
by its PID; every wait is bounded.  Exit 0 when every figure was measured.
"""

import argparse
import json
import os
import poplib
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from picotest import Daemon, free_port, scaled     # noqa: E402
from relaytest import control                       # noqa: E402
from tlstest import Pki                             # noqa: E402

TOOLS = os.path.join(ROOT, "build", "tools")
SIZE = 5120


def say(msg):
    print("cpu_bench.py: " + msg, file=sys.stderr, flush=True)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def password_hash():
    p = subprocess.run(["openssl", "passwd", "-6", "secret"], capture_output=True, text=True,
                       timeout=10)
    if p.returncode != 0:
        raise RuntimeError("openssl passwd failed: %s" % p.stderr)
    return p.stdout.strip()


def status(d):
    out = {}
    for line in control(d, "status").splitlines():
        k, _, v = line.partition(":")
        out[k.strip()] = v.strip()
    return out


def wait_for(what, pred, seconds):
    deadline = time.monotonic() + scaled(seconds)
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError("timed out waiting for " + what)


def body(i):
    line = "x" * 75 + "\r\n"
    return "Subject: cpu %d\r\n\r\n%s" % (i, line * (SIZE // len(line)))


def smtp_in(d, n, rcpt):
    s = smtplib.SMTP("127.0.0.1", d.port, local_hostname="bench.lan", timeout=scaled(60))
    try:
        c0 = cpu_seconds(d.pid)
        for i in range(n):
            s.sendmail("bench@example.org", [rcpt], body(i))
        c1 = cpu_seconds(d.pid)
    finally:
        s.quit()
    return c1 - c0


def pop3_out(d, pop_port, n):
    p = poplib.POP3("127.0.0.1", pop_port, timeout=scaled(60))
    c0 = cpu_seconds(d.pid)
    p.user("alice")
    p.pass_("secret")
    count = len(p.list()[1])
    for i in range(1, count + 1):
        p.retr(i)
        p.dele(i)
    p.quit()
    c1 = cpu_seconds(d.pid)
    if count != n:
        raise RuntimeError("POP3 listed %d messages, want %d" % (count, n))
    return c1 - c0


def start_sink(port, out):
    args = [os.path.join(TOOLS, "smtp-sink"), "-c"] + \
        (["-u", "nobody"] if os.getuid() == 0 else []) + ["127.0.0.1:%d" % port, "256"]
    p = subprocess.Popen(args, stdout=open(out, "wb"), stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL)
    for _ in range(50):
        if p.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return p
        except OSError:
            time.sleep(0.1)
    stop(p)
    raise RuntimeError("smtp-sink did not start on port %d" % port)


def stop(p):
    if p is None or p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)


def relay_out(d, n, sink_port, w):
    """Queued while the smarthost is down; flushed to smtp-sink."""
    smtp_in(d, n, "someone@example.com")
    wait_for("%d queued messages" % n, lambda: int(status(d)["queue_length"]) == n, 60)
    # Let the first attempts (connection refused) finish before measuring.
    wait_for("the queue runners to rest", lambda: status(d)["queue_active"] == "0", 60)
    sink = start_sink(sink_port, os.path.join(w, "sink.out"))
    try:
        c0 = cpu_seconds(d.pid)
        control(d, "flush")
        wait_for("an empty queue", lambda: int(status(d)["queue_length"]) == 0, 300)
        c1 = cpu_seconds(d.pid)
    finally:
        stop(sink)
    return c1 - c0


def handshakes(d, ca, h):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    c0 = cpu_seconds(d.pid)
    for _ in range(h):
        s = smtplib.SMTP("127.0.0.1", d.port, local_hostname="bench.lan", timeout=scaled(60))
        s.starttls(context=ctx)
        if s.sock.session_reused:
            raise RuntimeError("a TLS session was resumed")
        s.quit()
    return cpu_seconds(d.pid) - c0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary")
    ap.add_argument("workdir", nargs="?")
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--handshakes", type=int, default=200)
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    if not os.access(binary, os.X_OK):
        say("no executable %s" % binary)
        return 2
    base = os.path.join(ROOT, "build", "bench")
    os.makedirs(base, exist_ok=True)
    w = os.path.abspath(a.workdir) if a.workdir else tempfile.mkdtemp(prefix="cpu.", dir=base)
    os.makedirs(w, exist_ok=True)
    n, h = a.messages, a.handshakes
    out = {"messages": n, "handshakes": h, "wrap": os.environ.get("PICOMAIL_WRAP", "")}
    daemons = []
    try:
        pki = Pki(os.path.join(w, "pki"))
        hashed = password_hash()
        pop_port, sink_port = free_port(), free_port()
        d = Daemon(os.path.join(w, "d"), hashed, binary=binary,
                   listen=["smtp 127.0.0.1:%d" % free_port(), "pop3 127.0.0.1:%d" % pop_port],
                   smarthost="127.0.0.1:%d" % sink_port, retry_min="1h", retry_max="2h",
                   queue_max_messages=str(max(1000, 2 * n)), max_message_size="10M",
                   plaintext_auth="yes")
        d.port = int(d.settings["listen"][0].rsplit(":", 1)[1])
        d.write_config()
        daemons.append(d)
        d.start(ready_timeout=60)
        say("SMTP in: %d x 5 KB, one session" % n)
        out["smtp_in_us"] = round(1e6 * smtp_in(d, n, "alice@lan") / n)
        say("POP3 out: RETR and DELE %d" % n)
        out["pop3_out_us"] = round(1e6 * pop3_out(d, pop_port, n) / n)
        say("relay out: %d through smtp-sink" % n)
        out["relay_out_us"] = round(1e6 * relay_out(d, n, sink_port, w) / n)
        d.stop()
        for kind, key in (("ec", "tls_ecdsa_us"), ("rsa", "tls_rsa_us")):
            t = Daemon(os.path.join(w, "tls-" + kind), hashed, binary=binary,
                       tls_cert=pki.cert[kind], tls_key=pki.key[kind])
            t.settings["listen"] = "smtp 127.0.0.1:%d starttls" % t.port
            t.write_config()
            daemons.append(t)
            t.start(ready_timeout=60)
            say("TLS %s: %d STARTTLS handshakes" % (kind, h))
            out[key] = round(1e6 * handshakes(t, pki.ca, h) / h)
            t.stop()
    except Exception as e:          # the report says what failed
        say("failed: %s" % e)
        out["error"] = str(e)
        print(json.dumps(out))
        return 1
    finally:
        for x in daemons:
            if x.alive():
                x.kill()
    print(json.dumps(out))
    if not a.workdir:               # kept only when something failed
        shutil.rmtree(w, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
