"""Power cuts: kill -9 of qemu while mail flows in and out and POP3 deletes.

Per board, FIRMWARE_TRIALS times (default 2; the long run's figure is in
README.md): the guest boots as a device does (rcS mounts the ext4 flash
partition, which replays its journal, and S50picomail starts the daemon);
the load of fwload.py runs (SMTP in, sendmail in the guest, relaying out to
the sink, POP3 deletions); after a random 1.5-6 s the whole VM is killed.
Then, on the partition as the cut left it (a copy, e2fsck -fp, debugfs
rdump): every acknowledged message is present exactly once (or, relayed,
queued or at the sink), no deletion confirmed by +OK came back, nothing is
partial.  The next boot must start the daemon cleanly.  The last boot lets
the queue drain: every relayed message reaches the sink.

A kill of qemu keeps what qemu already handed to the host's page cache, so
this is a cut of the guest's RAM and page cache, not of a disk's volatile
cache: test_crashpoints.py models that.
"""

import os
import random
import time

from fwcheck import Books, fs_tree, losses, sink_seqs
from fwdisk import make_ext4
from fwload import Load
from lab import Guest

TRIALS = int(os.environ.get("FIRMWARE_TRIALS", "2"))


def boot(board, workdir, img, sink):
    g = Guest(board, workdir, disks={"data": img}, rc=True, sink_port=sink.port)
    try:
        return booted(g, board)
    except BaseException:
        g.kill()
        raise


def booted(g, board):
    g.start()
    rc_log = g.sh("cat /run/fw/rc.log")
    assert rc_log.startswith("Starting picomail:") and rc_log.rstrip().endswith("OK"), "%s: S50picomail at boot:\n%s\n%s" % (
        board, rc_log, g.sh("tail -n 20 /var/log/messages"))
    status = g.sh("picomail status")
    assert "pid:" in status, status
    tmp = g.sh("ls /data/mail/*/tmp 2>/dev/null | grep -v -e '^$' -e ':$' || true")
    assert tmp.strip() == "", "%s: tmp/ not cleaned at start: %r" % (board, tmp)
    return g


def test_power_cut_while_mail_flows(board, workdir, sink, record):
    seed = int(os.environ.get("PICOMAIL_SEED", int(time.time() * 1000)))
    print("PICOMAIL_SEED=%d" % seed)
    rng = random.Random(seed)
    img = make_ext4(os.path.join(workdir, "data.img"))
    books = Books()
    stats = {"trials": 0, "acked": 0, "losses": 0, "deleted_ok": 0, "fsck_fixes": 0}
    g = boot(board, workdir, img, sink)
    try:
        for t in range(TRIALS):
            load = Load(g, books, rng)
            load.start()
            time.sleep(rng.uniform(1.5, 6.0))
            g.kill()                                   # the power cut
            load.pause()
            load.close()
            rc, out = fs_tree(img, os.path.join(workdir, "tree"))
            assert rc & ~1 == 0, "trial %d: e2fsck -fp exit %d:\n%s" % (t, rc, out)
            stats["fsck_fixes"] += rc & 1
            lost = losses(os.path.join(workdir, "tree"), books, "trial %d, after the cut" % t,
                          sink=sink_seqs(sink.messages()))
            assert not lost, "trial %d: acknowledged messages lost: %r" % (t, lost[:20])
            stats["trials"] += 1
            g = boot(board, workdir, img, sink)
        # The last boot drains the queue to the sink.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            q = g.sh("picomail status | sed -n 's/^queue_length: *//p'").strip()
            if q == "0":
                break
            time.sleep(2)
        assert q == "0", "%s: the queue did not drain: %s" % (board, g.sh("mailq"))
        g.sh("/etc/init.d/S50picomail stop")
        g.stop()
        rc, out = fs_tree(img, os.path.join(workdir, "tree"))
        assert rc == 0, "after a clean stop e2fsck -fp exit %d:\n%s" % (rc, out)
        lost = losses(os.path.join(workdir, "tree"), books, "the end", sink=sink_seqs(sink.messages()),
                      drained=True)
        assert not lost, "acknowledged messages lost: %r" % lost[:20]
    finally:
        g.kill()
    stats["acked"] = books.acked()
    stats["deleted_ok"] = sum(len(m.deleted_ok) for m in books.msgs.values())
    print("%s: %d power cuts, %d messages acknowledged, %d POP3 deletions confirmed, 0 lost; "
          "e2fsck fixed something after %d cuts" % (board, stats["trials"], stats["acked"],
                                                   stats["deleted_ok"], stats["fsck_fixes"]))
    record("powercut", stats)
    assert stats["acked"] > TRIALS, "only %d messages acknowledged in %d trials" % (stats["acked"], TRIALS)
    assert stats["deleted_ok"] > 0, "no POP3 deletion confirmed in %d trials" % TRIALS
