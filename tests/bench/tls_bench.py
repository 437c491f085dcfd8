#!/usr/bin/python3
"""tls_bench.py BINARY WORKDIR - the TLS rows of "make bench" (issue 4).

Prints markdown table rows (| what | value | target | verdict |) on stdout,
progress on stderr:
  - full TLS handshakes per second, with an RSA-2048 and with an ECDSA P-256
    certificate, for SMTP STARTTLS (greeting, EHLO, STARTTLS, handshake,
    QUIT) and for POP3S (handshake, greeting, QUIT): BENCH_TLS_CLIENTS
    client processes (default 4) for BENCH_TLS_SECONDS each (default 3), a
    new TCP connection and a full handshake every time (no session
    resumption: no session is ever offered back, no tickets; each
    connection's session_reused is checked), certificates verified against
    the test CA; with the daemon's CPU time per handshake;
  - the daemon's RSS (VmRSS) idle, then with 10 TLS sessions open
    (implicit TLS, handshaken, greeted, idle), for both certificates: the
    cost per session (target: at most 40 KiB each).
Keys and certificates are made here with openssl (tests/integration/tlstest.py).
Loopback and ephemeral ports only; every daemon started here is killed by
its PID on exit; every wait is bounded.  Exit 0 when every figure was
measured, 1 when the bench could not run.
"""

import multiprocessing
import os
import signal
import socket
import ssl
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from picotest import Daemon, free_port     # noqa: E402
from tlstest import Pki, SUITE             # noqa: E402

SECONDS = float(os.environ.get("BENCH_TLS_SECONDS", "3"))
CLIENTS = int(os.environ.get("BENCH_TLS_CLIENTS", "4"))
SESSIONS = 10                  # TLS sessions held open for the RSS figure
TARGET_KIB = 40
HOSTNAME = "test.lan"


def say(msg):
    print("tls_bench.py: " + msg, file=sys.stderr, flush=True)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vmrss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for %d" % pid)


def status(d, key):
    p = d.run("status", "-C", d.conf_path)
    for line in p.stdout.decode().splitlines():
        k, _, v = line.partition(":")
        if k.strip() == key:
            return v.strip()
    return "?"


# --------------------------------------------------------------------------
# One client process


class Lines:
    """Reads CRLF lines from a socket (plain or TLS)."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.buf += chunk
        i = self.buf.index(b"\n") + 1
        line, self.buf = self.buf[:i], self.buf[i:]
        return line

    def smtp_reply(self):
        while True:
            line = self.line()
            if line[3:4] != b"-":
                return line


def smtp_starttls(ctx, port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        r = Lines(raw)
        if not r.smtp_reply().startswith(b"220"):
            raise RuntimeError("no greeting")
        raw.sendall(b"EHLO bench.lan\r\n")
        if not r.smtp_reply().startswith(b"250"):
            raise RuntimeError("EHLO refused")
        raw.sendall(b"STARTTLS\r\n")
        line = r.smtp_reply()
        if not line.startswith(b"220"):
            raise RuntimeError("STARTTLS: %r" % line)
        with ctx.wrap_socket(raw, server_hostname=HOSTNAME) as s:
            t = Lines(s)
            s.sendall(b"QUIT\r\n")
            if not t.smtp_reply().startswith(b"221"):
                raise RuntimeError("QUIT refused")
            return s.session_reused


def pop3s(ctx, port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with ctx.wrap_socket(raw, server_hostname=HOSTNAME) as s:
            t = Lines(s)
            if not t.line().startswith(b"+OK"):
                raise RuntimeError("no greeting")
            s.sendall(b"QUIT\r\n")
            if not t.line().startswith(b"+OK"):
                raise RuntimeError("QUIT refused")
            return s.session_reused


def client_context(ca):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


def worker(args):
    """Runs handshakes until the common end time: (done, errors, reused, first error)."""
    mode, port, ca, start, end = args
    ctx = client_context(ca)
    fn = smtp_starttls if mode == "smtp" else pop3s
    done = errors = reused = 0
    first = ""
    while time.time() < start:
        time.sleep(0.001)
    while time.time() < end:
        try:
            if fn(ctx, port):
                reused += 1
            done += 1
        except (OSError, RuntimeError, ssl.SSLError) as e:
            errors += 1
            first = first or "%s: %s" % (type(e).__name__, e)
            time.sleep(0.01)
    return done, errors, reused, first


def handshake_rate(pool, d, mode, port, ca):
    start = time.time() + 0.3
    end = start + SECONDS
    c0 = cpu_seconds(d.pid)
    results = pool.map(worker, [(mode, port, ca, start, end)] * CLIENTS)
    elapsed = time.time() - start
    cpu = cpu_seconds(d.pid) - c0
    done = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    reused = sum(r[2] for r in results)
    first = next((r[3] for r in results if r[3]), "")
    return done, errors, reused, first, elapsed, cpu


# --------------------------------------------------------------------------
# The daemon


def start_daemon(binary, workdir, pki, kind, password_hash, sessions):
    d = Daemon(workdir, password_hash, binary=binary, tls_cert=pki.cert[kind],
               tls_key=pki.key[kind], max_connections="64")
    d.pop3s = free_port()
    d.subs = free_port()
    d.settings["listen"] = "smtp %s:%d starttls" % (d.host, d.port)
    d.extra = ["listen pop3 127.0.0.1:%d tls" % d.pop3s,
               "listen submission 127.0.0.1:%d tls" % d.subs,
               "tls_sessions %d" % sessions, "pop3_timeout 60s"]
    d.write_config()
    d.start()
    return d


def wait_status(d, key, want, seconds=5.0):
    deadline = time.monotonic() + seconds
    while True:
        got = status(d, key)
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def rss_sessions(d, ca):
    """VmRSS idle, with one session and with SESSIONS sessions open: TLS
    sessions on the implicit-TLS port, or plain greeted connections on the
    SMTP port when ca is None."""
    wait_status(d, "connections", "0")
    time.sleep(0.3)
    idle = vmrss(d.pid)
    ctx = client_context(ca) if ca else None
    held = []
    try:
        rss = []
        for i in range(SESSIONS):
            s = socket.create_connection(("127.0.0.1", d.subs if ctx else d.port), timeout=10)
            if ctx:
                s = ctx.wrap_socket(s, server_hostname=HOSTNAME)
            held.append(s)
            line = Lines(s).line()
            if not line.startswith(b"220"):
                raise RuntimeError("no greeting under TLS: %r" % line)
            if i == 0:
                time.sleep(0.2)
                rss.append(vmrss(d.pid))
        time.sleep(0.3)
        rss.append(vmrss(d.pid))
        pool = status(d, "pool.tls")
    finally:
        for s in held:
            try:
                s.close()
            except OSError:
                pass
    return idle, rss[0], rss[1], pool


def main():
    if len(sys.argv) != 3:
        print("usage: tls_bench.py BINARY WORKDIR", file=sys.stderr)
        return 1
    # SIGTERM (bench.sh's timeout, ^C upstream): unwind, so that the
    # finally below kills the daemons started here by their PIDs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    binary, workdir = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    os.makedirs(workdir, exist_ok=True)
    say("making the test keys and certificates (RSA-2048, ECDSA P-256)")
    pki = Pki(os.path.join(workdir, "pki"))
    p = subprocess.run(["openssl", "passwd", "-6", "bench"], capture_output=True, text=True,
                       timeout=10)
    if p.returncode != 0:
        say("openssl passwd failed: %s" % p.stderr)
        return 1
    password_hash = p.stdout.strip()
    rows = []
    daemons = []
    names = {"rsa": "RSA-2048", "ec": "ECDSA P-256"}
    try:
        # The workers take SIGTERM's default back: with the handler above,
        # a worker that Pool.terminate() signals while it waits on the task
        # queue's lock unwinds into that wait again, and the run hangs.
        with multiprocessing.Pool(CLIENTS, initializer=signal.signal,
                                  initargs=(signal.SIGTERM, signal.SIG_DFL)) as pool:
            for kind in ("rsa", "ec"):
                d = start_daemon(binary, os.path.join(workdir, "hs-" + kind), pki, kind, password_hash,
                                 CLIENTS + 4)
                daemons.append(d)
                for mode, port, what in (
                        ("smtp", d.port, "SMTP STARTTLS (EHLO, STARTTLS, handshake, QUIT)"),
                        ("pop3", d.pop3s, "POP3S (handshake, greeting, QUIT)")):
                    say("%s, %s: %d clients for %.0f s" % (what, names[kind], CLIENTS, SECONDS))
                    done, errors, reused, first, elapsed, cpu = handshake_rate(
                        pool, d, mode, port, pki.ca)
                    rate = done / elapsed
                    say("  %.0f handshakes/s (%d in %.2f s, %d errors, %d resumed; daemon "
                        "CPU %.2f s)" % (rate, done, elapsed, errors, reused, cpu))
                    value = ("%.0f handshakes/s (%d in %.1f s, %d errors, %d resumed; %s; "
                             "%.1f ms per connection per client; daemon CPU %.0f%% of one "
                             "core, %.2f ms per handshake)" % (
                                 rate, done, elapsed, errors, reused, SUITE[kind],
                                 1000 * CLIENTS * elapsed / max(done, 1), 100 * cpu / elapsed,
                                 1000 * cpu / max(done, 1)))
                    if first:
                        value += "; first error: %s" % first
                    verdict = "-" if errors == 0 and reused == 0 and done > 0 else "FAIL"
                    rows.append(("TLS full handshakes/s, %s, %s certificate, %d concurrent "
                                 "clients" % (what, names[kind], CLIENTS), value, "- (info)",
                                 verdict))
                d.kill()
        say("RSS with %d plain SMTP connections open (the baseline)" % SESSIONS)
        d = start_daemon(binary, os.path.join(workdir, "rss-plain"), pki, "rsa", password_hash,
                         SESSIONS + 2)
        daemons.append(d)
        idle, _, full, _ = rss_sessions(d, None)
        plain = (full - idle) / SESSIONS
        say("  idle %d KiB, %d connections %d KiB: %.1f KiB per connection" % (
            idle, SESSIONS, full, plain))
        d.kill()
        for kind in ("rsa", "ec"):
            say("RSS with %d TLS sessions open, %s" % (SESSIONS, names[kind]))
            d = start_daemon(binary, os.path.join(workdir, "rss-" + kind), pki, kind, password_hash,
                             SESSIONS + 2)
            daemons.append(d)
            idle, one, full, pool_state = rss_sessions(d, pki.ca)
            per = (full - idle) / SESSIONS
            marginal = (full - one) / (SESSIONS - 1)
            say("  idle %d KiB, 1 session %d KiB, %d sessions %d KiB (pool.tls %s): %.1f KiB "
                "per session" % (idle, one, SESSIONS, full, pool_state, per))
            rows.append((
                "RSS with %d TLS sessions open (implicit TLS, %s, handshaken and idle)" % (
                    SESSIONS, names[kind]),
                "%d KiB idle -> %d KiB (pool.tls %s): %.1f KiB per session, connection "
                "included (first session +%d KiB, then %.1f KiB each); a plain greeted "
                "connection costs %.1f KiB, so TLS itself %.1f KiB" % (
                    idle, full, pool_state, per, one - idle, marginal, plain, per - plain),
                "<= %d KiB per session" % TARGET_KIB,
                "OK" if per <= TARGET_KIB else "MISS"))
            d.kill()
    except Exception as e:          # noqa: BLE001 - the bench reports, then fails
        say("failed: %s: %s" % (type(e).__name__, e))
        for d in daemons:
            say("daemon log %s:\n%s" % (d.log_path, d.log(1500)))
        return 1
    finally:
        for d in daemons:
            d.kill()
    for r in rows:
        print("| %s | %s | %s | %s |" % r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
