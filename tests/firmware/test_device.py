"""A day on the device, from a boot without network or clock to `stop`.

One guest per board, booted as a router without RTC boots: the clock says
1970 (qemu's RTC set to the epoch), eth0 is down (fw.net=0), the ext4
flash partition mounted on /data.  In order:

  offline   S50picomail refuses a bad configuration naming file:line, then
            starts with a listener on the LAN address eth0 does not have
            yet, as run_as; the certificate's dates are not checked while
            the clock says 1970 (README, TLS); `sendmail` from a script (as
            root and as an ordinary user, as cron runs it) queues; the relay
            attempt fails; the clock is set (as NTP would) while the smarthost
            is still out of reach, and the mail stays queued (no bounce for a
            1970 arrival); the network comes up and the queue delivers.
  day       SMTP in from the LAN (the host), submission with STARTTLS and
            AUTH, relaying out to the sink, POP3 retrieval and deletion,
            `reload` taking a changed setting, `picomail status`.
  memory    the daemon's VmRSS and VmHWM idle, with 50 connections open and
            after a load, and the system's MemAvailable, read in the guest.
  stop      S50picomail stop.
"""

import os
import smtplib
import socket
import ssl
import threading
import time

import pytest

from fwcheck import sink_seqs
from fwdisk import make_ext4
from lab import Guest
from picotest import numbered
from pop3test import PASSWORD, Pop


@pytest.fixture(scope="module")
def device(board, tmp_path_factory):
    """The guest and its relay sink, for the whole module."""
    from relaytest import Peer
    base = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "firmware", board, "runs")
    os.makedirs(base, exist_ok=True)
    import tempfile
    d = tempfile.mkdtemp(prefix="device.", dir=base)
    sink = Peer(os.path.join(d, "sink"))
    sink.start()
    img = make_ext4(os.path.join(d, "data.img"))
    g = Guest(board, d, disks={"data": img}, net=False, rtc="1970-01-01T00:00:00", sink_port=sink.port)
    try:
        g.start()
        g.sink = sink
        g.dir = d
        yield g
    finally:
        g.kill()
        sink.stop()


def syslog(g):
    return g.sh("cat /var/log/messages")


def wait_guest(g, script, timeout, what, interval=1.0):
    """Runs script in the guest until it exits 0; its output."""
    deadline = time.monotonic() + timeout
    while True:
        rc, out = g.run(script)
        if rc == 0:
            return out
        if time.monotonic() > deadline:
            raise AssertionError("%s: timed out after %d s waiting for %s\n%s" % (
                g.board, timeout, what, syslog(g)[-3000:]))
        time.sleep(interval)


def daemon_pid(g):
    return int(g.sh("picomail status | sed -n 's/^pid: *//p'").strip())


def mem_of(g, pid):
    """(VmRSS, VmHWM) of pid and the system's MemAvailable, in KiB."""
    out = g.sh("grep -E '^(VmRSS|VmHWM):' /proc/%d/status; grep '^MemAvailable:' /proc/meminfo" % pid)
    v = {line.split(":")[0]: int(line.split()[1]) for line in out.splitlines()}
    return v["VmRSS"], v["VmHWM"], v["MemAvailable"]


def test_offline_boot_in_1970(board, device, record):
    g = device
    record("boot", {"wall_s": round(g.boot_s, 1), "uptime_at_ready_s": g.uptime_at_ready,
                    "kernel": g.info["kernel_package"], "mem_mb": g.mem,
                    "initrd_kib": g.info["initrd_bytes"] // 1024, "picomail_bytes": g.info["picomail_bytes"]})
    assert g.sh("date +%Y").strip() == "1970", "the guest's clock is not at the epoch"
    assert "inet addr" not in g.sh("ifconfig eth0"), "eth0 is up"

    # A bad configuration is refused, naming the file and the line.
    g.sh("cp /etc/picomail.conf /tmp/bad.conf && echo 'max_connections lots' >>/tmp/bad.conf")
    n = int(g.sh("wc -l </tmp/bad.conf").strip())
    rc, out = g.run("PICOMAIL_CONF=/tmp/bad.conf /etc/init.d/S50picomail start")
    assert rc != 0 and "FAIL" in out and "/tmp/bad.conf:%d:" % n in out, out
    assert g.run("pidof picomail")[0] != 0, "a daemon runs on a refused configuration"

    # Starts without the LAN address, as run_as.
    out = g.sh("/etc/init.d/S50picomail start")
    assert out.rstrip().endswith("OK"), out
    pid = daemon_pid(g)
    uid = g.sh("sed -n 's/^Uid:[[:space:]]*\\([0-9]*\\).*/\\1/p' /proc/%d/status" % pid).strip()
    assert uid == "8", "the daemon runs as uid %s, not mail (8)" % uid
    assert g.sh("cat /var/run/picomail.pid").strip() == str(pid)
    # Said on the terminal of the start, before the daemon goes to syslog.
    assert "the clock says" in out and "not checking the validity of /etc/picomail/cert.pem" in out, out

    # sendmail from a script, as cron runs it: as root, and as a user.
    g.sh("printf 'Subject: disk report\\nX-Seq: 9001\\n\\nsda: PASSED\\nEND 9001\\n' | sendmail admin@remote.test")
    g.sh("printf 'Subject: backup\\nX-Seq: 9002\\n\\ndone\\nEND 9002\\n' | "
         "su user -c 'sendmail admin@remote.test'")
    mailq = g.sh("mailq")
    assert mailq.count("admin@remote.test") == 2, mailq
    # The first attempts fail: no route to the smarthost yet.
    wait_guest(g, "grep -q 'relayed .*status=deferred' /var/log/messages", 60, "a deferred attempt")

    # The clock is set (NTP on the LAN) while the smarthost is still out of
    # reach: the next attempt fails again, and the 1970 arrival does not
    # make the messages older than queue_lifetime.
    g.sh("date -s @%d >/dev/null" % int(time.time()))
    before = g.sh("grep -c 'relayed .*status=deferred' /var/log/messages").strip()
    wait_guest(g, "[ $(grep -c 'relayed .*status=deferred' /var/log/messages) -gt %s ]" % before, 90,
               "an attempt after the clock was set")
    log = syslog(g)
    assert "expired" not in log and "bounce" not in log, log[-3000:]
    assert g.sh("mailq").count("admin@remote.test") == 2

    # The network appears: the queue delivers.
    t0 = time.monotonic()
    g.sh("fwnet up")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not {9001, 9002} <= set(sink_seqs(g.sink.messages())):
        time.sleep(1)
    got = sink_seqs(g.sink.messages())
    assert {9001, 9002} <= set(got), "not relayed once the network came up: %r\n%s" % (got, syslog(g)[-3000:])
    record("offline", {"delivered_after_network_s": round(time.monotonic() - t0, 1)})
    wait_guest(g, "picomail status | grep -q '^queue_length: 0$'", 30, "an empty queue")
    sent = [m for m in g.sink.messages() if b"X-Seq: 9002" in m["bytes"]]
    assert sent and sent[0]["mail_from"] == "user@lan", sent[0]["mail_from"] if sent else None


def test_a_day(board, device):
    g = device
    port = g.ports["smtp"]
    with smtplib.SMTP("127.0.0.1", port, local_hostname="pc.lan", timeout=60) as s:
        s.sendmail("pc@example.org", ["alice@lan"], numbered(101, 3000))
        s.sendmail("pc@example.org", ["alice@lan", "bob@lan"], numbered(102, 100))
        s.sendmail("pc@lan", ["friend@remote.test"], numbered(103, 500))
    # Submission: STARTTLS, then AUTH as alice.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", g.ports["submission"], local_hostname="laptop.lan", timeout=60) as s:
        s.starttls(context=ctx)
        s.login("alice", PASSWORD)
        s.sendmail("alice@lan", ["bob@lan", "far@remote.test"], numbered(104, 200))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not {103, 104} <= set(sink_seqs(g.sink.messages())):
        time.sleep(1)
    assert {103, 104} <= set(sink_seqs(g.sink.messages())), "not relayed"

    # POP3: alice fetches and deletes.
    p = Pop(g.ports["pop3"], timeout=60)
    p.login("alice", PASSWORD)
    n, _ = p.stat()
    assert n == 2, n
    seen = set()
    for i in range(1, n + 1):
        body = p.retr(i)
        for want in (101, 102):
            if b"X-Seq: %d\r\n" % want in body and body.endswith(b"END %d\r\n" % want):
                seen.add(want)
        p.ok("DELE %d" % i)
    assert seen == {101, 102}, seen
    p.quit()
    p = Pop(g.ports["pop3"], timeout=60)
    p.login("alice", PASSWORD)
    assert p.stat()[0] == 0
    p.quit()
    p = Pop(g.ports["pop3"], timeout=60)
    p.login("bob", PASSWORD)
    assert p.stat()[0] == 2
    p.quit()

    # reload takes a changed setting; the same process goes on.
    pid = daemon_pid(g)
    g.sh("echo 'max_message_size 1M' >>/etc/picomail.conf")
    out = g.sh("/etc/init.d/S50picomail reload")
    assert out.rstrip().endswith("OK"), out
    deadline = time.monotonic() + 30
    while True:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="pc.lan", timeout=60) as s:
            s.ehlo()
            size = s.esmtp_features.get("size")
        if size == "1048576" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert size == "1048576", "SIZE after reload: %r" % size
    assert daemon_pid(g) == pid

    status = g.sh("picomail status")
    for key in ("uptime:", "connections:", "pool.conn:", "queue_length: 0", "messages_in:"):
        assert key in status, status
    assert int(status.split("messages_in:")[1].split()[0]) >= 4, status
    out = g.sh("/etc/init.d/S50picomail status")
    assert "picomail is running (pid %d)" % pid in out, out


def test_memory(board, device, record):
    g = device
    pid = daemon_pid(g)
    fig = {}
    fig["idle_rss_kib"], fig["idle_hwm_kib"], fig["idle_memavailable_kib"] = mem_of(g, pid)
    fig["memtotal_kib"] = int(g.sh("sed -n 's/^MemTotal: *\\([0-9]*\\).*/\\1/p' /proc/meminfo").strip())

    # 50 connections, each greeted.
    socks = []
    try:
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", g.ports["smtp"]), timeout=60)
            socks.append(s)
        for s in socks:
            banner = s.recv(512)
            assert banner.startswith(b"220 "), banner
        conns = g.sh("picomail status | sed -n 's/^connections: *//p'").strip()
        assert conns == "50", conns
        fig["conn50_rss_kib"], fig["conn50_hwm_kib"], fig["conn50_memavailable_kib"] = mem_of(g, pid)
    finally:
        for s in socks:
            s.close()

    # A load: 4 clients, 12 messages of 5 KB each, to alice and bob.
    g.sh("(while :; do sed -n 's/^MemAvailable: *//p' /proc/meminfo; grep VmRSS /proc/%d/status; "
         "sleep 0.5; done) >/run/fw/mem.log 2>&1 & echo $! >/run/fw/mem.pid" % pid)
    errors = []

    def client(k):
        try:
            with smtplib.SMTP("127.0.0.1", g.ports["smtp"], local_hostname="pc.lan", timeout=60) as s:
                for j in range(12):
                    s.sendmail("pc@example.org", ["alice@lan", "bob@lan"], numbered(1000 + 100 * k + j, 5000))
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append(repr(e))
    wb0 = int(g.sh("sed -n 's/^write_bytes: //p' /proc/%d/io" % pid))
    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    elapsed = time.monotonic() - t0
    g.sh("kill $(cat /run/fw/mem.pid)")
    assert not errors, errors
    samples = g.sh("cat /run/fw/mem.log").splitlines()
    avail = [int(x.split()[0]) for x in samples if x and x[0].isdigit()]
    rss = [int(x.split()[1]) for x in samples if x.startswith("VmRSS")]
    fig["load_rss_max_kib"] = max(rss) if rss else None
    fig["load_memavailable_min_kib"] = min(avail) if avail else None
    _, fig["load_hwm_kib"], _ = mem_of(g, pid)
    fig["load_messages"] = 48
    # The measure make bench reports: the daemon's write_bytes per message
    # (here each one for two users, one file hard-linked).
    g.sh("sync")
    fig["write_bytes_per_msg"] = (int(g.sh("sed -n 's/^write_bytes: //p' /proc/%d/io" % pid)) - wb0) // 48
    fig["load_msgs_per_s"] = round(48 / elapsed, 1)
    count = g.sh("ls /data/mail/alice/new | wc -l").strip()
    assert int(count) >= 48, count
    record("memory", fig)
    print("%s: %r" % (board, fig))
    # The fixed pools: the peak stays within a few hundred KiB of idle.
    assert fig["load_hwm_kib"] < fig["idle_hwm_kib"] + 2048, fig


def test_stop(board, device):
    g = device
    pid = daemon_pid(g)
    out = g.sh("/etc/init.d/S50picomail stop")
    assert out.rstrip().endswith("OK"), out
    # Gone, or a zombie that init has not reaped yet.
    state = g.sh("sed 's/.*) //' /proc/%d/stat 2>/dev/null | cut -c1" % pid).strip()
    assert state in ("", "Z"), "still running after stop (state %s)" % state
    rc, out = g.run("/etc/init.d/S50picomail status")
    assert rc == 3 and "not running" in out, out
    g.stop()
