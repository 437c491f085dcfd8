#!/usr/bin/python3
"""imap_bench.py BINARY WORKDIR - the IMAP rows of "make bench" (issue 16).

The same 1000 messages of 5 KB (files as picomail's delivery writes them)
in new/ of a Maildir read by picomail and by Dovecot's imapd (Debian's
dovecot-imapd, a full daemon with its own login and auth processes, run in
WORKDIR on a loopback port), one client (Python's imaplib) doing the same
to each:

  - SELECT (the first: picomail gives the UIDs, Dovecot builds its index),
  - FETCH 1:* of what a client lists: UID FLAGS RFC822.SIZE and five
    header fields,
  - FETCH 1:* BODY.PEEK[] (the bodies),
  - SEARCH TEXT for a string no message holds (every message read),
  - 20 more sessions each SELECTing the folder and IDLE: the memory they
    take (picomail: the daemon's RSS growth; Dovecot: the RSS of all its
    processes, before and after).

Prints markdown table rows: each figure for both and the ratio; "Dovecot:
not measured (why)" when it cannot run here.  Loopback only; every process
is stopped by its PID; every wait is bounded.
"""

import imaplib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time

N = int(os.environ.get("BENCH_IMAP_MESSAGES", "1000"))
SIZE = 5120
IDLERS = 20
DOVECOT = "/usr/sbin/dovecot"
FIELDS = "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From To Subject Date Message-ID)])"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(pid):
    """pid and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open("/proc/%d/task/%d/children" % (p, p)) as f:
                todo.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


def tree_rss(pid):
    return sum(rss(p) for p in tree(pid))


def wait_port(port, proc, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("exited with %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("not listening on %d" % port)


def messages(new):
    """N files of SIZE octets in new/, named as picomail's delivery names them."""
    os.makedirs(new)
    for d in ("cur", "tmp"):
        os.makedirs(os.path.join(os.path.dirname(new), d))
    body = ("x" * 75 + "\n") * ((SIZE - 200) // 76)
    for i in range(N):
        data = ("Return-Path: <bench@example.org>\nFrom: Bench <bench@example.org>\n"
                "To: alice@lan\nSubject: bench %d\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n"
                "Message-ID: <%d@bench>\n\n%s" % (i, i, body)).encode()
        name = "%d.M%dP1Q%d.bench,S=%d,W=%d" % (1700000000 + i, i, i, len(data),
                                                len(data) + data.count(b"\n"))
        with open(os.path.join(new, name), "wb") as f:
            f.write(data)


def client_run(port, user, password):
    """The measured session: {phase: seconds}, and the octets of the bodies."""
    t = {}
    m = imaplib.IMAP4("127.0.0.1", port, timeout=120)
    m.login(user, password)
    t0 = time.monotonic()
    typ, data = m.select("INBOX")
    assert typ == "OK" and int(data[0]) == N, (typ, data)
    t["select"] = time.monotonic() - t0
    t0 = time.monotonic()
    typ, data = m.fetch("1:*", FIELDS)
    assert typ == "OK" and sum(1 for x in data if isinstance(x, tuple)) == N
    t["headers"] = time.monotonic() - t0
    t0 = time.monotonic()
    typ, data = m.fetch("1:*", "(BODY.PEEK[])")
    octets = sum(len(x[1]) for x in data if isinstance(x, tuple))
    assert typ == "OK" and octets > N * (SIZE - 400), octets
    t["bodies"] = time.monotonic() - t0
    t0 = time.monotonic()
    typ, data = m.search(None, "TEXT", "zzz-in-no-message")
    assert typ == "OK" and data == [b""], data
    t["search"] = time.monotonic() - t0
    m.logout()
    return t, octets


def idlers(port, user, password):
    """IDLERS sessions, each SELECTing INBOX and in IDLE (open sockets)."""
    out = []
    for _ in range(IDLERS):
        m = imaplib.IMAP4("127.0.0.1", port, timeout=30)
        m.login(user, password)
        m.select("INBOX")
        tag = m._new_tag()
        m.send(tag + b" IDLE\r\n")
        assert m.readline().startswith(b"+"), "no IDLE continuation"
        out.append(m)
    time.sleep(0.5)
    return out


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def picomail(binary, work):
    os.makedirs(work)
    port, smtp = free_port(), free_port()
    pw = subprocess.run([binary, "passwd"], input=b"secret\n", capture_output=True, check=True,
                        timeout=10).stdout.decode().strip()
    with open(os.path.join(work, "users"), "w") as f:
        f.write("alice:%s\n" % pw)
    open(os.path.join(work, "aliases"), "w").close()
    conf = os.path.join(work, "picomail.conf")
    with open(conf, "w") as f:
        f.write("hostname bench.lan\ndomains lan\nlisten smtp 127.0.0.1:%d\nlisten imap 127.0.0.1:%d\n"
                "maildir_root %s/mail\nspool %s/spool\nusers %s/users\naliases %s/aliases\n"
                "plaintext_auth yes\nmax_connections 64\nimap_sessions %d\nimap_max_messages %d\n"
                % (smtp, port, work, work, work, work, IDLERS + 2, max(N, 16)))
    messages(os.path.join(work, "mail", "alice", "new"))
    log = open(os.path.join(work, "daemon.log"), "w")
    p = subprocess.Popen([binary, "serve", "-C", conf, "-f"], stderr=log)
    try:
        wait_port(port, p)
        # The first login makes the standard folders; not measured.
        m = imaplib.IMAP4("127.0.0.1", port, timeout=30)
        m.login("alice", "secret")
        m.logout()
        t, octets = client_run(port, "alice", "secret")
        before = rss(p.pid)
        held = idlers(port, "alice", "secret")
        after = rss(p.pid)
        for m in held:
            m.shutdown()
        return t, octets, before, after
    finally:
        stop(p)
        log.close()


def dovecot(work):
    if not os.access(DOVECOT, os.X_OK):
        raise RuntimeError("no %s (apt-get install dovecot-imapd)" % DOVECOT)
    os.makedirs(work)
    port = free_port()
    mail = os.path.join(work, "mail")
    messages(os.path.join(mail, "alice", "new"))
    for sub in ("run", "state", "home"):
        os.makedirs(os.path.join(work, sub))
    nobody = pwd.getpwnam("nobody")
    for root, dirs, files in os.walk(work):
        for n in dirs + files:
            os.chown(os.path.join(root, n), nobody.pw_uid, nobody.pw_gid)
    os.chmod(work, 0o755)
    conf = os.path.join(work, "dovecot.conf")
    with open(conf, "w") as f:
        f.write("base_dir = %(w)s/run\nstate_dir = %(w)s/state\nlog_path = %(w)s/dovecot.log\n"
                "protocols = imap\nlisten = 127.0.0.1\nssl = no\ndisable_plaintext_auth = no\n"
                "auth_mechanisms = plain login\nmail_location = maildir:%(w)s/mail/%%u\n"
                "mail_uid = nobody\nmail_gid = nogroup\nfirst_valid_uid = 0\nfirst_valid_gid = 0\n"
                "passdb {\n  driver = static\n  args = password=secret\n}\n"
                "userdb {\n  driver = static\n  args = uid=nobody gid=nogroup home=%(w)s/home/%%u\n}\n"
                "service imap-login {\n  inet_listener imap {\n    port = %(p)d\n  }\n"
                "  inet_listener imaps {\n    port = 0\n  }\n}\n"
                "service imap {\n  process_limit = 100\n}\n"
                "protocol imap {\n  mail_max_userip_connections = 100\n}\n" % {"w": work, "p": port})
    p = subprocess.Popen([DOVECOT, "-F", "-c", conf], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        wait_port(port, p)
        t, octets = client_run(port, "alice", "secret")
        before = tree_rss(p.pid)
        held = idlers(port, "alice", "secret")
        after = tree_rss(p.pid)
        for m in held:
            m.shutdown()
        return t, octets, before, after
    finally:
        stop(p)


def main():
    binary, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    pt, poct, pb, pa = picomail(binary, os.path.join(work, "picomail"))
    sys.stderr.write("imap_bench: picomail %r, RSS %d -> %d KiB\n" % (pt, pb, pa))
    try:
        dt, doct, db, da = dovecot(os.path.join(work, "dovecot"))
        sys.stderr.write("imap_bench: dovecot %r, RSS %d -> %d KiB\n" % (dt, db, da))
        dv = subprocess.run([DOVECOT, "--version"], capture_output=True, text=True).stdout.split()[0]
    except (RuntimeError, OSError, AssertionError, imaplib.IMAP4.error) as e:
        sys.stderr.write("imap_bench: Dovecot not measured: %s\n" % e)
        dt = dv = None
        why = str(e)

    def row(what, ours, theirs, unit, better_low=True):
        if dt is None:
            ref, ratio = "Dovecot: not measured (%s)" % why, "-"
        else:
            ref = "Dovecot %s: %s" % (dv, theirs)
            ratio = unit
        print("| %s | %s | %s | %s |" % (what, ours, ref, ratio))

    for phase, what, size in (
            ("select", "IMAP SELECT of %d new messages (picomail gives the UIDs, Dovecot indexes)"
             % N, False),
            ("headers", "IMAP FETCH 1:* UID FLAGS RFC822.SIZE and 5 header fields, %d x 5 KB" % N,
             False),
            ("bodies", "IMAP FETCH 1:* BODY.PEEK[], %d x 5 KB" % N, True),
            ("search", "IMAP SEARCH TEXT (no match: every message read), %d x 5 KB" % N, False)):
        ours = "%.0f msg/s (%.3f s)" % (N / pt[phase], pt[phase])
        if size:
            ours += ", %.1f MB/s" % (poct / pt[phase] / 1e6)
        theirs = None if dt is None else "%.0f msg/s (%.3f s)" % (N / dt[phase], dt[phase])
        row(what, ours, theirs, None if dt is None else "%.2fx" % (dt[phase] / pt[phase]))
    per = (pa - pb) / IDLERS
    row("RSS of %d more IMAP sessions, each SELECT INBOX (%d messages) and IDLE" % (IDLERS, N),
        "%d KiB (%.0f KiB a session; the daemon %d KiB before)" % (pa - pb, per, pb),
        None if dt is None else "%d KiB (%.0f KiB a session; %d KiB before, all its processes)"
        % (da - db, (da - db) / IDLERS, db),
        None if dt is None else "%.1fx less" % ((da - db) / max(1, pa - pb)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
