#!/usr/bin/python3
"""pop3_bench.py BINARY WORKDIR - the POP3 rows of "make bench" (issue 3).

Delivers 1000 messages of 5 KB into one mailbox over SMTP, then one
Python poplib client logs in, LISTs, RETRs and DELEs every message and
QUITs.  Prints markdown table rows: the whole session's rate (msg/s, MB/s),
the RETR phase alone, and the daemon's RSS idle and at its peak.  The
mailbox must be empty afterwards (else FAIL).  Loopback only; the daemon is
stopped by its PID; every wait is bounded.
"""

import os
import poplib
import signal
import smtplib
import socket
import subprocess
import sys
import time

N = int(os.environ.get("BENCH_POP3_MESSAGES", "1000"))
SIZE = 5120


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def main():
    binary, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    smtp_port, pop_port = free_port(), free_port()
    pw = subprocess.run([binary, "passwd"], input=b"secret\n", capture_output=True,
                        check=True, timeout=10).stdout.decode().strip()
    with open(os.path.join(work, "users"), "w") as f:
        f.write("alice:%s\n" % pw)
    conf = os.path.join(work, "picomail.conf")
    with open(conf, "w") as f:
        f.write("hostname bench.lan\ndomains lan\n"
                "listen smtp 127.0.0.1:%d\nlisten pop3 127.0.0.1:%d\n"
                "maildir_root %s/mail\nspool %s/spool\nusers %s/users\naliases %s/aliases\n"
                "plaintext_auth yes\npop3_max_messages %d\n"
                % (smtp_port, pop_port, work, work, work, work, max(N, 16)))
    log = open(os.path.join(work, "daemon.log"), "w")
    d = subprocess.Popen([binary, "serve", "-C", conf, "-f"], stderr=log)
    try:
        deadline = time.time() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", pop_port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        body = ("x" * 75 + "\r\n") * (SIZE // 77)
        s = smtplib.SMTP("127.0.0.1", smtp_port, timeout=30)
        for i in range(N):
            s.sendmail("bench@example.org", ["alice@lan"],
                       "Subject: bench %d\r\n\r\n%s" % (i, body))
        s.quit()
        rss_idle = rss(d.pid)

        t0 = time.monotonic()
        p = poplib.POP3("127.0.0.1", pop_port, timeout=30)
        p.user("alice")
        p.pass_("secret")
        _, listing, _ = p.list()
        count = len(listing)
        t1 = time.monotonic()
        octets = 0
        for i in range(1, count + 1):
            _, lines, n = p.retr(i)
            octets += n
        t2 = time.monotonic()
        for i in range(1, count + 1):
            p.dele(i)
        p.quit()
        t3 = time.monotonic()
        rss_peak = rss(d.pid, "VmHWM")

        p = poplib.POP3("127.0.0.1", pop_port, timeout=30)
        p.user("alice")
        p.pass_("secret")
        left = p.stat()[0]
        p.quit()
    finally:
        d.send_signal(signal.SIGTERM)
        try:
            d.wait(timeout=10)
        except subprocess.TimeoutExpired:
            d.kill()
            d.wait()
        log.close()

    whole, retr = t3 - t0, t2 - t1
    sys.stderr.write("pop3_bench: login+LIST %.3f s, RETR %.3f s, DELE+QUIT %.3f s\n" % (t1 - t0, t2 - t1, t3 - t2))
    ok = count == N and left == 0
    print("| POP3, poplib: login, LIST, RETR and DELE %d x 5 KB, QUIT (whole session) | "
          "%.0f msg/s, %.1f MB/s (%.2f s) | Dovecot 2.3 on this machine kind: 2005-2874 msg/s "
          "(issue 3's figure, not measured here) | %s |"
          % (count, count / whole, octets / whole / 1e6, whole,
             ("%.2fx the low end" % (count / whole / 2005)) if ok else
             "FAIL: %d listed, %d left" % (count, left)))
    print("| POP3 RETR phase alone | %.0f msg/s, %.1f MB/s | Dovecot: 4180-7128 msg/s | %.2fx the low end |"
          % (count / retr, octets / retr / 1e6, count / retr / 4180))
    print("| POP3 daemon RSS: idle with %d messages waiting / peak (VmHWM) | %d KiB / %d KiB | "
          "Dovecot: 14 MiB idle | - |" % (N, rss_idle, rss_peak))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
