"""Every crash point of the disk: dm-log-writes in the guest, replay on the host.

A kill of qemu keeps what qemu already wrote to the host, so it cannot
model a disk that loses what it was not told to flush.  Here the guest's
flash partition is a dm-log-writes device (fwtool), over the first 32 MB of
the guest's one disk, logging to the 256 MB after them: the kernel logs
each write once a flush has made it stable, in that order, with FLUSH and
FUA flags.  While picomail runs on it, the host delivers mail by SMTP, the
guest's `sendmail` queues mail for the sink, the queue relays it, and POP3
deletes; around each acknowledgement the guest puts marks in the log
("begin:n" before the client starts, "ack:n" once it has its 250 or its
exit 0, "quit:user:..." before a POP3 QUIT and "quitok:user:..." after its
+OK).

On the host, dmlog.py replays the log onto the partition's first image,
stopping at every crash point (FIRMWARE_CRASH_POINTS=all, the default:
before every flush, after every FUA write and after every write in between;
=flush: the flush and FUA points only).  At each point: e2fsck -fp must
find a file system it can bring back without help, and the promise must
hold for every mark before the point (fwcheck.losses: each acknowledged
message present once, or queued or at the sink; no deletion confirmed by
+OK back; nothing partial).  The negative control replays the same points
with the acknowledgements claimed at the "begin" marks, before the mail
was sent: the checker must see losses there, or it could not see any.
"""

import os
import shutil
import smtplib
import struct
import time

import pytest

import dmlog
from fwcheck import Books, fs_tree, losses, sink_seqs
from fwdisk import copy_region, make_ext4
from lab import Guest
from picotest import numbered
from pop3test import PASSWORD, Pop

EVERY_WRITE = os.environ.get("FIRMWARE_CRASH_POINTS", "all") != "flush"
LOCAL = int(os.environ.get("FIRMWARE_CRASH_MESSAGES", "6"))


def test_dmlog_reads_what_it_is_given(tmp_path):
    """The reader and the replay against a log written by hand: two writes,
    a flush, a mark, a FUA write (the kernel's layout, sector size 512)."""
    ss = 512
    log = bytearray(struct.pack("<QQQI", dmlog.MAGIC, 1, 5, ss).ljust(ss, b"\0"))

    def entry(sector, nr, flags, data=b"", mark=b""):
        log.extend(struct.pack("<QQQQ", sector, nr, flags, len(mark)).ljust(32, b"\0") + mark)
        log.extend(b"\0" * (-len(log) % ss))
        log.extend(data)
    entry(2, 1, 0, b"A" * ss)
    entry(0, 2, dmlog.METADATA, b"B" * 2 * ss)
    entry(0, 0, dmlog.FLUSH)
    entry(0, 0, dmlog.MARK, mark=b"ack:1")
    entry(3, 1, dmlog.FUA, b"C" * ss)
    (tmp_path / "log").write_bytes(bytes(log))
    (tmp_path / "base").write_bytes(b"." * 4 * ss)
    ss2, entries = dmlog.read_log(str(tmp_path / "log"))
    assert ss2 == ss and [e.kind() for e in entries] == ["write 2+1", "meta 0+2", "flush 0+0", "mark ack:1", "fua 3+1"]
    assert dmlog.crash_points(entries) == [1, 2, 5]
    assert dmlog.crash_points(entries, every_write=False) == [2, 5]
    assert dmlog.main([str(tmp_path / "log"), str(tmp_path / "base"), str(tmp_path / "out"), "--to", "2"]) == 0
    assert (tmp_path / "out").read_bytes() == b"B" * 2 * ss + b"A" * ss + b"." * ss
    dmlog.main([str(tmp_path / "log"), str(tmp_path / "base"), str(tmp_path / "out"), "--to", "5"])
    assert (tmp_path / "out").read_bytes() == b"B" * 2 * ss + b"A" * ss + b"C" * ss


# Seconds an SMTP reply may take: the guest's disk is dm-log-writes over
# a virtio disk under TCG, with another guest beside it.
SMTP_TIMEOUT = 180


def mark(g, text):
    g.sh("fwtool dm-message fw mark %s" % text)


def record_run(g, books):
    """The recorded workload; books gets every message, with no ack (the
    marks say when each one was acknowledged)."""
    port = g.ports["smtp"]
    for k in range(LOCAL):
        users = [["alice"], ["bob"], ["alice", "bob"]][k % 3]
        i = books.new(users)
        mark(g, "begin:%d" % i)
        with smtplib.SMTP("127.0.0.1", port, local_hostname="pc.lan", timeout=SMTP_TIMEOUT) as s:
            s.sendmail("pc@example.org", ["%s@lan" % u for u in users], numbered(i, 5000))
        mark(g, "ack:%d" % i)
    # Relayed: one by SMTP, one by sendmail in the guest (marks around it).
    i = books.new(remote=["r1@remote.test"])
    mark(g, "begin:%d" % i)
    with smtplib.SMTP("127.0.0.1", port, local_hostname="pc.lan", timeout=SMTP_TIMEOUT) as s:
        s.sendmail("pc@lan", ["r1@remote.test"], numbered(i, 5000))
    mark(g, "ack:%d" % i)
    i = books.new(remote=["r2@remote.test"])
    body = numbered(i, 2000).replace(b"\r\n", b"\n").decode()
    g.sh("fwtool dm-message fw mark begin:%d && printf '%%s' '%s' | sendmail r2@remote.test && "
         "fwtool dm-message fw mark ack:%d" % (i, body, i))
    # POP3: alice deletes the first two messages she has.
    p = Pop(g.ports["pop3"], timeout=60)
    p.login("alice", PASSWORD)
    doomed = []
    for n in (1, 2):
        _, head = p.multi("TOP %d 0" % n)
        doomed.append(int(head.split(b"X-Seq: ")[1].split(b"\r\n")[0]))
        p.ok("DELE %d" % n)
    tag = "alice:" + ",".join(map(str, doomed))
    mark(g, "quit:" + tag)
    p.quit()
    mark(g, "quitok:" + tag)
    return doomed


def view(books, marks, upto, early=False):
    """The books as the marks before entry `upto` tell them: what was
    acknowledged and deleted by then.  early: the acknowledgements are
    claimed at the begin marks (the negative control)."""
    b = Books()
    for i, m in books.msgs.items():
        b.msgs[i] = type(m)(m.local, m.remote)
    for idx, text in marks:
        if idx >= upto:
            break
        kind, _, arg = text.partition(":")
        if kind == ("begin" if early else "ack"):
            b.msgs[int(arg)].acked = True
        elif kind in ("quit", "quitok"):
            user, _, seqs = arg.partition(":")
            for s in seqs.split(","):
                (b.msgs[int(s)].deleted_ok if kind == "quitok" else b.msgs[int(s)].deleted_maybe).add(user)
    return b


# The guest's one disk: the flash partition, then the log.  One disk, not
# two: on Malta two virtio disks share an i8259 input (README, Malta's
# interrupts); one disk has its input to itself.
DATA_MB, LOG_MB = 32, 256


def test_every_crash_point(board, workdir, sink, record):
    base = make_ext4(os.path.join(workdir, "base.img"), DATA_MB)
    disk = os.path.join(workdir, "disk.img")
    shutil.copyfile(base, disk)
    with open(disk, "r+b") as f:
        f.truncate((DATA_MB + LOG_MB) << 20)
    g = Guest(board, workdir, disks={"disk": disk}, append="fw.data=0", sink_port=sink.port)
    books = Books()
    t0 = time.monotonic()
    try:
        g.start()
        g.sh("modprobe dm-log-writes && d=$(fwdisk disk) && "
             "data=$(fwtool dm-linear fwdata $d 0 %d) && log=$(fwtool dm-linear fwlog $d %d %d) && "
             "dev=$(fwtool dm-logwrites fw $data $log) && mount -t ext4 -o noatime $dev /data" % (
                 DATA_MB << 11, DATA_MB << 11, LOG_MB << 11))
        out = g.sh("/etc/init.d/S50picomail start")
        assert out.rstrip().endswith("OK"), out
        record_run(g, books)
        relayed = {i for i, m in books.msgs.items() if m.remote}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not relayed <= set(sink_seqs(sink.messages())):
            time.sleep(1)
        assert relayed <= set(sink_seqs(sink.messages())), "not relayed: %r" % relayed
        g.sh("picomail status | grep -q '^queue_length: 0$'")
        mark(g, "relayed")
        # One step a command: one that gets no answer is named.
        for step in ("/etc/init.d/S50picomail stop", "umount /data", "fwtool dm-remove fw",
                     "fwtool dm-remove fwlog && fwtool dm-remove fwdata"):
            g.sh(step)
        g.stop()
    finally:
        g.kill()
    record_s = time.monotonic() - t0
    log = copy_region(disk, DATA_MB << 20, LOG_MB << 20, os.path.join(workdir, "log.img"))

    ss, entries = dmlog.read_log(log)
    marks = [(e.index, e.mark) for e in entries if e.flags & dmlog.MARK]
    assert any(m == "relayed" for _, m in marks), "the log lacks its last marks: %r" % marks[-5:]
    points = dmlog.crash_points(entries, every_write=EVERY_WRITE)
    sink_now = sink_seqs(sink.messages())
    t1 = time.monotonic()
    replay = dmlog.Replay(log, ss, base, os.path.join(workdir, "replay.img"))
    done = 0
    bad_fsck = []
    lost_at = {}
    early_lost = 0
    fixes = 0
    try:
        for p in points:
            while done < p:
                replay.apply(entries[done])
                done += 1
            replay.sync()
            tree = os.path.join(workdir, "tree")
            rc, out = fs_tree(os.path.join(workdir, "replay.img"), tree)
            if rc & ~1:
                bad_fsck.append((p, rc, out[-500:]))
                continue
            fixes += rc & 1
            lost = losses(tree, view(books, marks, p), "crash point %d (%s)" % (p, entries[p - 1].kind()),
                          sink=sink_now)
            if lost:
                lost_at[p] = lost
            if losses(tree, view(books, marks, p, early=True), "control", sink=sink_now):
                early_lost += 1
    finally:
        replay.close()
    stats = {
        "entries": len(entries), "writes": sum(1 for e in entries if e.is_write),
        "flushes": sum(1 for e in entries if e.flags & dmlog.FLUSH),
        "fua": sum(1 for e in entries if e.flags & dmlog.FUA), "marks": len(marks),
        "points": len(points), "every_write": EVERY_WRITE, "losses": len(lost_at),
        "fsck_unrecoverable": len(bad_fsck), "fsck_fixed": fixes,
        "control_points_with_losses": early_lost,
        "messages": len(books.msgs), "record_s": round(record_s, 1), "replay_s": round(time.monotonic() - t1, 1),
    }
    record("crashpoints", stats)
    print("%s: %r" % (board, stats))
    assert not bad_fsck, "e2fsck could not repair the file system at %d points: %r" % (len(bad_fsck), bad_fsck[:3])
    assert not lost_at, "acknowledged mail lost at %d crash points: %r" % (
        len(lost_at), sorted(lost_at.items())[:5])
    # The control: acknowledgements claimed before the mail was sent are
    # seen missing, so the check above could have failed.
    assert early_lost > 0, "the negative control found no loss: the checker sees nothing"
