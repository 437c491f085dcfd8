"""Disk full for real (issue 8): the Maildir root and the spool on a small
file system mounted by the test -- an 8 MB ext4 image on a loop device, else
a 6 MB tmpfs -- filled by concurrent clients until it refuses.

  - the refusals are 452 4.3.1 (never a 5xx, never a dropped connection);
  - every message that got 250 is whole in new/, once; a refused one is
    nowhere; tmp/ is empty; every queued message has a whole envelope;
  - while full, the daemon serves: a new session, NOOP, POP3 login, DELE and
    QUIT (which is how a user makes room);
  - once files are deleted, the next message is delivered.
The file system is unmounted (and the loop device freed) whatever happens.
Mounting needs root: elsewhere the real case is skipped, with the reason,
and test_disk_full_via_the_seam shows the same behaviour with ENOSPC
injected by the test build.
"""

import os
import subprocess
import threading
import time

import pytest

from faultwalk import maildir_files, queue_state, tmp_files, try_send
from picotest import free_port, numbered
from pop3test import PASSWORD, Pop
from relaytest import dead_udp_port, status

MSG = 48 * 1024


def sh(*args, timeout=30):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def small_fs(workdir):
    """(mount point, description); unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root (test_disk_full_via_the_seam "
                    "covers the refusal without it)")
    mnt = os.path.join(workdir, "fs")
    os.makedirs(mnt)
    img = os.path.join(workdir, "fs.img")
    how = None
    errors = []
    try:
        with open(img, "wb") as f:
            f.truncate(8 << 20)
        r = sh("mkfs.ext4", "-q", "-F", "-m", "0", img)
        if r.returncode == 0:
            r = sh("mount", "-o", "loop", img, mnt)
        if r.returncode == 0:
            how = "8 MB ext4 on a loop device"
        else:
            errors.append("ext4 loop: %s" % r.stderr.strip())
    except (OSError, subprocess.SubprocessError) as e:
        errors.append("ext4 loop: %s" % e)
    if how is None:
        r = sh("mount", "-t", "tmpfs", "-o", "size=6m,mode=0755", "tmpfs", mnt)
        if r.returncode == 0:
            how = "6 MB tmpfs"
        else:
            errors.append("tmpfs: %s" % r.stderr.strip())
    if how is None:
        pytest.skip("cannot mount a small file system here (%s); "
                    "test_disk_full_via_the_seam covers the refusal" % "; ".join(errors))
    try:
        yield mnt, how
    finally:
        for _ in range(20):
            if sh("umount", mnt).returncode == 0 or not os.path.ismount(mnt):
                break
            time.sleep(0.1)
        if os.path.ismount(mnt):
            sh("umount", "-l", mnt)
        # mount -o loop sets autoclear: the loop device goes with the umount
        if os.path.exists(img):
            os.unlink(img)


def fill(d, seq0, rcpts_of, clients=3, bound=400):
    """Concurrent clients send until each has seen three refusals in a row.
    Returns ({seq: rcpts} acknowledged, {seq: reply} refused)."""
    lock = threading.Lock()
    counter = iter(range(seq0, seq0 + bound))
    acked, refused, bad = {}, {}, []

    def client():
        streak = 0
        while streak < 3:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            rcpts = rcpts_of(i)
            o = try_send(d.port, rcpts, numbered(i, MSG))
            with lock:
                if o.kind == "ok":
                    acked[i] = rcpts
                    streak = 0
                elif o.kind == "temp" and o.code == 452 and o.text.startswith("4.3.1"):
                    refused[i] = o
                    streak += 1
                else:
                    bad.append((i, o))
                    return

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a client hung on the full disk"
    assert not bad, "refusals other than 452 4.3.1 on a full disk: %r" % bad[:5]
    return acked, refused


def check_files(d, acked, refused):
    local = {"alice": set(), "bob": set()}
    for i, rcpts in acked.items():
        for r in rcpts:
            u = r.split("@")[0]
            if u in local:
                local[u].add(i)
    for u, want in local.items():
        seen = {}
        for sub, name, i, complete in maildir_files(d.mail_root, u):
            assert complete, "partial file on the full disk: %s/%s/%s" % (u, sub, name)
            seen[i] = seen.get(i, 0) + 1
        assert all(c == 1 for c in seen.values()), "%s: twice: %r" % (u, seen)
        missing = want - set(seen)
        assert not missing, "%s: acknowledged but missing: %r" % (u, sorted(missing))
        back = set(seen) & set(refused)
        assert not back, "%s: refused with 452 but delivered: %r" % (u, sorted(back))
        assert tmp_files(d.mail_root, u) == [], "%s/tmp: %r" % (u, tmp_files(d.mail_root, u))
    queue, orphans = queue_state(d.spool)
    assert orphans == [], "message files without an envelope: %r" % orphans
    for qid, (e, seq, complete) in queue.items():
        assert e["complete"] and complete, "partial queue entry %s" % qid
        assert seq not in refused, "refused with 452 but queued: %d" % seq
    queued = {seq for e, seq, _ in queue.values()}
    remote = {i for i, rcpts in acked.items() if any(r.endswith("@remote.test") for r in rcpts)}
    assert remote <= queued, "acknowledged relayed messages missing from the queue: %r" % (
        sorted(remote - queued))


def pop3_delete_all(d, user):
    """Logs in and deletes every message: +OK at QUIT.  Returns the count."""
    with Pop(d.pop3_port) as p:
        p.ok("USER %s" % user)
        r = p.cmd("PASS %s" % PASSWORD)
        assert r.startswith("+OK"), "POP3 login on the full disk: %s" % r
        n, _ = p.stat()
        for k in range(1, n + 1):
            p.ok("DELE %d" % k)
        r = p.cmd("QUIT")
        assert r.startswith("+OK"), "QUIT on the full disk: %s" % r
    return n


def test_disk_full_for_real(make_daemon, small_fs):
    mnt, how = small_fs
    pop3_port = free_port()
    d = make_daemon(start=False, maildir_root=os.path.join(mnt, "mail"),
                    spool=os.path.join(mnt, "spool"), max_message_size="256K",
                    extra=["greet_pause 0s", "smarthost 127.0.0.1:%d" % free_port(),
                           "retry_min 1h", "retry_max 1h",
                           "resolver 127.0.0.1:%d" % dead_udp_port(),
                           "listen pop3 127.0.0.1:%d" % pop3_port, "plaintext_auth yes"])
    d.pop3_port = pop3_port
    d.mail_root, d.spool = os.path.join(mnt, "mail"), os.path.join(mnt, "spool")
    try:
        d.start()

        def rcpts_of(i):
            # mostly local mail, some to both users (one file, two links),
            # some relayed (the spool shares the disk)
            return [["alice@lan"], ["bob@lan"], ["alice@lan", "bob@lan"],
                    ["r%d@remote.test" % i]][i % 4]

        acked, refused = fill(d, 1, rcpts_of)
        st = os.statvfs(mnt)
        print("%s: %d messages of %d KiB taken, %d refused with 452 4.3.1; %d KiB free" % (
            how, len(acked), MSG // 1024, len(refused), st.f_bavail * st.f_frsize // 1024))
        assert len(acked) >= 10, "the disk took only %d messages" % len(acked)
        assert refused, "no 452 from a full disk"
        assert d.alive(), "the daemon died on the full disk"
        check_files(d, acked, refused)

        # Still serving while full: a session, the control socket, POP3.
        with d.session() as c:
            c.expect("NOOP", "250")
            c.expect("MAIL FROM:<x@example.org>", "250")
            c.expect("RCPT TO:<alice@lan>", "250")
            r = c.cmd("DATA")
            if r.code == 354:
                c.send(numbered(9999, MSG) + b".\r\n")
                r = c.reply()
            assert r.matches("452 4.3.1"), "a message on the full disk: %r" % r
            c.expect("QUIT", "221")
        assert int(status(d)["queue_length"]) >= 1

        # Room returns: the users fetch and delete their mail.
        freed = pop3_delete_all(d, "alice") + pop3_delete_all(d, "bob")
        assert freed > 0
        o = try_send(d.port, ["alice@lan"], numbered(10000, MSG))
        assert o.kind == "ok", "after making room: %r" % o
        got = [i for _, _, i, ok in maildir_files(d.mail_root, "alice") if ok]
        assert got == [10000], got
        # and the load goes on until the disk is full again
        acked2, refused2 = fill(d, 20000, lambda i: ["bob@lan"])
        assert acked2 and refused2, (len(acked2), len(refused2))
        assert d.stop() == 0
    finally:
        d.kill()


def test_disk_full_via_the_seam(make_daemon, picomail_test_bin):
    """ENOSPC on eight writes in a row (the disk fills, then room returns):
    each message hit gets 452 4.3.1 and is nowhere; the others are whole."""
    first = 4       # writes 1-3: the first message (three 4 KiB writes)
    fault = ",".join("write:%d:ENOSPC" % n for n in range(first, first + 8))
    d = make_daemon(binary=picomail_test_bin, env={"PICOMAIL_FAULT": fault},
                    extra=["greet_pause 0s"])
    acked, refused = {}, {}
    for i in range(1, 15):
        o = try_send(d.port, ["alice@lan"], numbered(i, 9000))
        if o.kind == "ok":
            acked[i] = ["alice@lan"]
        else:
            assert o.kind == "temp" and o.code == 452 and o.text.startswith("4.3.1"), o
            refused[i] = o
    assert sorted(refused) == list(range(2, 10)), sorted(refused)
    assert sorted(acked) == [1] + list(range(10, 15))
    check_files(d, acked, refused)
    assert d.stop() == 0
