#!/usr/bin/python3
"""relay_bench.py [options] BINARY [WORKDIR] - the relay benchmark (issue 5).

picomail (BINARY serve -f) with `smarthost` = Postfix's smtp-sink on
loopback; Postfix's smtp-source submits N messages of SIZE bytes (one
remote recipient each) over S sessions; the time runs from smtp-source's
start (its first connection: the first accept) until picomail's
queue_length is 0 again (the last delivery), polled on the control socket
every 20 ms, within a time limit.  Reports messages/s, the accept phase
alone, the daemon's peak VmRSS (sampled every 50 ms) and VmHWM, its CPU
time, and checks that smtp-sink counted exactly N messages and that the
spool is empty afterwards.

Output: progress on stderr; on stdout one markdown table row
"| what | value | target | verdict |" (tests/bench/bench.sh adds it to its
table), or with --json a JSON object.  Exit 0 when every message arrived
exactly once, 1 when not (the row says FAIL), 2 when the bench could not
run (the row says so).

Options: --messages N (2000), --size BYTES (5120), --sessions S (20),
--limit SECONDS (180), --runners N (the daemon's default when absent),
--keep (keep WORKDIR).  WORKDIR defaults to a new directory under
build/bench/ (the disk of build/, never tmpfs).  smtp-source and
smtp-sink come from tests/tools/postfix-tools.sh (build/tools).
Loopback and ephemeral ports only; every process is stopped by its PID.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
TOOLS = os.path.join(ROOT, "build", "tools")


def say(msg):
    print("relay_bench: " + msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc, timeout=5):
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


def proc_status(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_seconds(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def control(spool, cmd, timeout=5):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(os.path.join(spool, "control"))
        s.sendall(cmd.encode() + b"\n")
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out.decode("latin-1")
            out += chunk


def status(spool):
    out = {}
    for line in control(spool, "status").splitlines():
        k, _, v = line.partition(":")
        out[k.strip()] = v.strip()
    return out


class RssSampler(threading.Thread):
    def __init__(self, pid, interval=0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak, self.samples = 0, 0
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            v = proc_status(self.pid, "VmRSS")
            if v is None:
                return
            self.peak = max(self.peak, v)
            self.samples += 1
            self.done.wait(self.interval)


def sink_count(path):
    """The last "mesg=N" (messages received) smtp-sink -c wrote."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return 0
    m = re.findall(rb"mesg=(\d+)", data)
    return int(m[-1]) if m else 0


def row(what, value, target="- (info)", verdict="-"):
    return "| %s | %s | %s | %s |" % (what, value, target, verdict)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary")
    ap.add_argument("workdir", nargs="?")
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--size", type=int, default=5120)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--limit", type=float, default=180)
    ap.add_argument("--runners", type=int)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    n, size, s = a.messages, a.size, a.sessions
    what = ("picomail relaying %d x %d KB through a smarthost (smtp-sink), smtp-source %d "
            "sessions, first accept to last delivered" % (n, size // 1024, s))

    def fail(rc, msg, res=None):
        if a.json:
            print(json.dumps(dict(res or {}, ok=False, error=msg)))
        else:
            print(row(what, "FAIL: " + msg if rc == 1 else "not measured: " + msg,
                      "%d/%d delivered" % (n, n), "FAIL" if rc == 1 else "-"))
        return rc

    binary = os.path.abspath(a.binary)
    if not os.access(binary, os.X_OK):
        return fail(2, "no executable %s" % binary)
    r = subprocess.run(["bash", os.path.join(ROOT, "tests/tools/postfix-tools.sh"), TOOLS],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        say(r.stdout + r.stderr)
        return fail(2, "smtp-source/smtp-sink unavailable (tests/tools/postfix-tools.sh)")
    source, sink = os.path.join(TOOLS, "smtp-source"), os.path.join(TOOLS, "smtp-sink")

    made_workdir = a.workdir is None
    if made_workdir:
        base = os.path.join(ROOT, "build", "bench")
        os.makedirs(base, exist_ok=True)
        w = tempfile.mkdtemp(prefix="relay.", dir=base)
    else:
        w = os.path.abspath(a.workdir)
        os.makedirs(w, exist_ok=True)
    spool, mail = os.path.join(w, "spool"), os.path.join(w, "mail")
    # The control socket's path must fit in sun_path (108 bytes).
    if len(os.path.join(spool, "control")) > 100:
        return fail(2, "work directory path too long for the control socket: %s" % w)
    os.makedirs(spool, exist_ok=True)
    os.makedirs(mail, exist_ok=True)

    sinkp = daemon = None
    result = {"messages": n, "size": size, "sessions": s}
    try:
        # smtp-sink: answers 250 at once, keeps nothing, counts (-c).
        sink_out = os.path.join(w, "sink.out")
        for _ in range(3):
            sport = free_port()
            args = [sink, "-c"] + (["-u", "nobody"] if os.getuid() == 0 else []) + \
                   ["127.0.0.1:%d" % sport, "256"]
            sinkp = subprocess.Popen(args, stdout=open(sink_out, "wb"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
            up = False
            for _ in range(50):
                if sinkp.poll() is not None:
                    break
                try:
                    socket.create_connection(("127.0.0.1", sport), 0.2).close()
                    up = True
                    break
                except OSError:
                    time.sleep(0.1)
            if up:
                break
            stop(sinkp)
            sinkp = None
        if sinkp is None:
            return fail(2, "smtp-sink did not start")
        # smtp-sink's own connection count starts at the probe: count from here.
        time.sleep(0.1)
        sink0 = sink_count(sink_out)

        with open(os.path.join(w, "users"), "w") as f:
            f.write("user:x\n")
        with open(os.path.join(w, "aliases"), "w") as f:
            f.write("postmaster: user\n")
        port = free_port()
        conf = os.path.join(w, "picomail.conf")
        lines = [
            "# written by tests/bench/relay_bench.py",
            "hostname bench.lan",
            "domains lan",
            "listen smtp 127.0.0.1:%d" % port,
            "maildir_root %s" % mail,
            "spool %s" % spool,
            "users %s" % os.path.join(w, "users"),
            "aliases %s" % os.path.join(w, "aliases"),
            "relay_from 127.0.0.0/8",
            "max_connections 64",
            "max_message_size 10M",
            "smarthost 127.0.0.1:%d" % sport,
            "retry_min 1s",
            "retry_max 2s",
            # The quota is not what is measured: room for every message.
            "queue_max_messages %d" % max(1000, 2 * n),
            # No DNS: the smarthost is an address; never the machine's resolver.
            "resolver 127.0.0.1:%d" % free_udp_port(),
        ]
        if a.runners:
            lines.append("queue_runners %d" % a.runners)
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        chk = subprocess.run([binary, "check", "-C", conf], capture_output=True, text=True,
                             timeout=10)
        if chk.returncode != 0:
            return fail(2, "picomail check refused the configuration: %s" % (
                chk.stdout + chk.stderr).strip())
        dlog = open(os.path.join(w, "daemon.log"), "wb")
        daemon = subprocess.Popen([binary, "serve", "-C", conf, "-f"], stdin=subprocess.DEVNULL,
                                  stdout=dlog, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                st = status(spool)
                break
            except OSError:
                if daemon.poll() is not None or time.monotonic() > deadline:
                    return fail(2, "picomail did not start (see %s/daemon.log)" % w)
                time.sleep(0.05)
        runners = a.runners or "2 (default)"
        say("picomail pid %d on 127.0.0.1:%d, smarthost smtp-sink on 127.0.0.1:%d" % (
            daemon.pid, port, sport))

        sampler = RssSampler(daemon.pid)
        sampler.start()
        rss_idle = proc_status(daemon.pid, "VmRSS")
        cpu0 = cpu_seconds(daemon.pid)
        say("smtp-source -s %d -m %d -l %d -> picomail (recipient user@remote.test)" % (
            s, n, size))
        t0 = time.monotonic()
        src = subprocess.Popen([source, "-s", str(s), "-m", str(n), "-l", str(size),
                                "-f", "from@bench.lan", "-t", "user@remote.test",
                                "127.0.0.1:%d" % port],
                               stdout=open(os.path.join(w, "source.log"), "wb"),
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            src_rc = src.wait(a.limit)
        except subprocess.TimeoutExpired:
            stop(src)
            src_rc = "timeout"
        t_accept = time.monotonic() - t0
        # Until the queue is empty (the last delivery), within the limit.
        qlen, drained = None, False
        while time.monotonic() - t0 < a.limit:
            try:
                qlen = int(status(spool)["queue_length"])
            except (OSError, KeyError, ValueError):
                qlen = None
            if qlen == 0:
                drained = True
                break
            time.sleep(0.02)
        t_total = time.monotonic() - t0
        cpu = cpu_seconds(daemon.pid) - cpu0
        sampler.done.set()
        sampler.join(2)
        hwm = proc_status(daemon.pid, "VmHWM")
        st = status(spool)
        time.sleep(0.3)
        got = sink_count(sink_out) - sink0
        with open(os.path.join(w, "source.log"), "rb") as f:
            src_errs = len(re.findall(rb"(?i)warning|fatal|error", f.read()))
        left = [x for sub in ("msg", "env", "tmp")
                for x in os.listdir(os.path.join(spool, sub))] \
            if os.path.isdir(os.path.join(spool, "msg")) else []
        result.update({
            "seconds": round(t_total, 3), "rate": round(n / t_total, 1),
            "accept_seconds": round(t_accept, 3), "accept_rate": round(n / t_accept, 1),
            "delivered": got, "drained": drained, "queue_length": qlen,
            "messages_in": st.get("messages_in"), "smtp_source_exit": src_rc,
            "smtp_source_errors": src_errs, "rss_idle_kib": rss_idle,
            "rss_peak_kib": sampler.peak, "rss_samples": sampler.samples, "vmhwm_kib": hwm,
            "cpu_seconds": round(cpu, 2), "queue_runners": runners, "left_in_spool": len(left),
        })
        say("%d/%d at smtp-sink in %.2f s: %.1f msg/s (accept phase %.2f s: %.1f msg/s); "
            "RSS peak %d KiB (%d samples), VmHWM %s KiB; CPU %.2f s" % (
                got, n, t_total, n / t_total, t_accept, n / t_accept, sampler.peak,
                sampler.samples, hwm, cpu))
        problems = []
        if not drained:
            problems.append("queue not empty after %.0f s (queue_length %s)" % (a.limit, qlen))
        if got != n:
            problems.append("smtp-sink counted %d/%d messages" % (got, n))
        if src_rc != 0 or src_errs:
            problems.append("smtp-source exit %s, %d warning/error lines" % (src_rc, src_errs))
        if left:
            problems.append("%d files left in the spool" % len(left))
        value = ("%.1f msg/s (%.2f s; accept phase alone %.2f s = %.1f msg/s; %d/%d counted by "
                 "smtp-sink; queue_runners %s); daemon RSS peak %d KiB (VmRSS every 50 ms, "
                 "%d samples; idle %s KiB, VmHWM %s KiB); CPU %.2f s (%.0f us/msg)" % (
                     n / t_total, t_total, t_accept, n / t_accept, got, n, runners,
                     sampler.peak, sampler.samples, rss_idle, hwm, cpu, 1e6 * cpu / n))
        if problems:
            say("FAIL: " + "; ".join(problems))
            result["problems"] = problems
            if a.json:
                print(json.dumps(dict(result, ok=False)))
            else:
                print(row(what, "FAIL: %s. %s" % ("; ".join(problems), value),
                          "%d/%d delivered" % (n, n), "FAIL"))
            return 1
        if a.json:
            print(json.dumps(dict(result, ok=True)))
        else:
            print(row(what, value, "- (info); %d/%d delivered" % (n, n), "OK"))
        return 0
    finally:
        stop(daemon)
        stop(sinkp)
        if a.keep:
            say("work directory kept: %s" % w)
        elif made_workdir:
            shutil.rmtree(w, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
