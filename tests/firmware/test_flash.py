"""Mail on raw flash: UBIFS over simulated NAND, on the kernels that have it
(x86_64, armv7, mipsel; Debian's arm64 kernel has no NAND driver).

The guest loads nandsim as a 64 MiB NAND with 2 KiB pages and 128 KiB
erase blocks (ID 20 a2 00 15), attaches UBI to it (which formats the empty
flash), makes one volume of all of it (fwtool ubi-mkvol) and mounts UBIFS on
/data (which formats the empty volume); S50picomail then starts on it.
nandsim keeps the pages in a file on a disk of their own (cache_file), not
in the guest's RAM, which a long load would fill.

wear       NAND page programs and block erases per 5 KB message delivered
           (SMTP to one local user), relayed (SMTP in, queued, sent to the
           sink, removed) and deleted by POP3 (login, DELE, QUIT), each
           phase followed by `sync`; counted by kprobes on the NAND core's
           nand_write_page_raw (every page programmed with software ECC, as
           nandsim is) and nand_erase_op.  (The daemon's /proc/PID/io
           write_bytes would count nandsim's writes to its cache file too:
           test_device.py measures it on ext4.)
recovery   UBIFS's own power-cut emulation (debugfs tst_recovery) while the
           load of fwload.py runs: once UBIFS has cut (it fails the write and
           turns read-only), the daemon is stopped, UBIFS unmounted and
           mounted again (its recovery), and the promise checked on the files
           (fetched as a tar): every acknowledged message once, nothing
           partial, no confirmed deletion back.  FIRMWARE_UBIFS_CUTS times.
"""

import base64
import io
import os
import random
import smtplib
import tarfile
import tempfile
import time

import pytest

from boards import BOARDS
from fwcheck import Books, losses, sink_seqs
from fwload import Load
from lab import Guest
from pop3test import PASSWORD, Pop

CUTS = int(os.environ.get("FIRMWARE_UBIFS_CUTS", "1"))
# The boards whose UBIFS is cut in the default run.  The cut is the lab's
# slowest step (a load until UBIFS decides to fail, then the whole tree
# fetched through the control channel), and on a loaded host the emulated
# ARM and MIPS guests have stalled in that fetch; their cuts run when named
# here (FIRMWARE_UBIFS_BOARDS="x86_64 armv7 mipsel").
UBIFS_BOARDS = os.environ.get("FIRMWARE_UBIFS_BOARDS", "x86_64").split()
# The boards whose NAND wear is counted in the default run.  The count
# puts kprobes on the NAND core; on Debian's 4kc-malta kernel (mipsel) the
# probe on nand_erase_op once oopsed UBI's background thread (a breakpoint
# exception inside nand_erase_nand), which left the guest's next sync hung,
# and the 64 MB armv7 guest with nandsim once had the init script killed
# (SIGKILL, 137) while the daemon started: the other boards' counts run
# when named here (FIRMWARE_WEAR_BOARDS="x86_64 armv7 mipsel"); the
# README's figures were alike on all three.
WEAR_BOARDS = os.environ.get("FIRMWARE_WEAR_BOARDS", "x86_64").split()
NANDSIM = "first_id_byte=0x20 second_id_byte=0xa2 third_id_byte=0x00 fourth_id_byte=0x15"
N = 20


@pytest.fixture(scope="module")
def flash(board):
    """One guest per board for the module: UBIFS on nandsim mounted on
    /data, picomail started on it, a relay sink."""
    if not BOARDS[board]["mtd"]:
        pytest.skip("Debian's %s kernel has no raw NAND driver (nandsim)" % BOARDS[board]["flavour"])
    if board not in WEAR_BOARDS and board not in UBIFS_BOARDS:
        pytest.skip("no flash test on %s: FIRMWARE_WEAR_BOARDS=%s, FIRMWARE_UBIFS_BOARDS=%s"
                    % (board, " ".join(WEAR_BOARDS), " ".join(UBIFS_BOARDS)))
    from relaytest import Peer
    base = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "firmware", board, "runs")
    os.makedirs(base, exist_ok=True)
    d = tempfile.mkdtemp(prefix="flash.", dir=base)
    sink = Peer(os.path.join(d, "sink"))
    sink.start()
    # nandsim keeps the flash's pages in a file (cache_file), here a disk of
    # its own: in the guest's RAM they would not leave a 64 MB board room
    # for a long load (the kernel ends in "System is deadlocked on memory").
    nand = os.path.join(d, "nand.img")
    with open(nand, "wb") as f:
        f.truncate(80 << 20)
    g = Guest(board, d, append="fw.data=0", sink_port=sink.port, disks={"nand": nand})
    try:
        g.start()
        g.sh("modprobe nandsim %s cache_file=$(fwdisk nand) && modprobe ubi mtd=0 && "
             "fwtool ubi-mkvol /dev/ubi0 mail && modprobe ubifs && mount -t ubifs ubi0:mail /data" % NANDSIM,
             timeout=300)
        out = g.sh("/etc/init.d/S50picomail start")
        assert out.rstrip().endswith("OK"), out
        g.sink = sink
        g.dir = d
        yield g
    finally:
        g.kill()
        sink.stop()


def mount_info(g):
    mtd = g.sh("cat /proc/mtd")
    ubi = g.sh("cd /sys/class/ubi/ubi0 && for f in total_eraseblocks eraseblock_size min_io_size; do "
               "echo $f $(cat $f); done")
    return mtd, dict(line.split() for line in ubi.splitlines())


def attachment(i, size=5000):
    """Message i of about SIZE octets whose body is base64 of random bytes,
    as a mailed log file or photo is: it does not compress the way
    picotest.numbered's filler does (UBIFS compresses with LZO)."""
    rnd = random.Random(i)
    lines = []
    while sum(len(x) + 2 for x in lines) < size:
        lines.append(base64.b64encode(bytes(rnd.getrandbits(8) for _ in range(57))))
    return (b"Subject: message %d\r\nX-Seq: %d\r\nContent-Transfer-Encoding: base64\r\n\r\n" % (i, i)
            + b"\r\n".join(lines) + b"\r\nEND %d\r\n" % i)


def counters(g, pid):
    out = g.sh("sync; t=/sys/kernel/debug/tracing; echo prog $(grep -c ' fwprog:' $t/trace); "
               "echo erase $(grep -c ' fwerase:' $t/trace); "
               "echo wbytes $(sed -n 's/^write_bytes: //p' /proc/%d/io)" % pid)
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


def test_wear_per_message(board, flash, record):
    if board not in WEAR_BOARDS:
        pytest.skip("NAND wear on %s: FIRMWARE_WEAR_BOARDS=%s" % (board, " ".join(WEAR_BOARDS)))
    g, sink = flash, flash.sink
    mtd, ubi = mount_info(g)
    g.sh("t=/sys/kernel/debug/tracing; echo 'p:fwprog nand_write_page_raw' >>$t/kprobe_events && "
         "echo 'p:fwerase nand_erase_op' >>$t/kprobe_events && echo 2048 >$t/buffer_size_kb && "
         "echo 1 >$t/events/kprobes/enable")
    pid = int(g.sh("cat /var/run/picomail.pid"))
    c0 = counters(g, pid)
    fig = {"nand": "64 MiB, 2 KiB pages, 128 KiB blocks", "ubi": ubi}

    def phase(name, c_before, n):
        c = counters(g, pid)
        fig[name] = {"messages": n,
                     "pages_per_msg": round((c["prog"] - c_before["prog"]) / n, 1),
                     "erases_per_msg": round((c["erase"] - c_before["erase"]) / n, 2)}
        return c

    with smtplib.SMTP("127.0.0.1", g.ports["smtp"], local_hostname="pc.lan", timeout=60) as s:
        for i in range(1, N + 1):
            s.sendmail("pc@example.org", ["alice@lan"], attachment(i))
    c1 = phase("delivered", c0, N)
    with smtplib.SMTP("127.0.0.1", g.ports["smtp"], local_hostname="pc.lan", timeout=60) as s:
        for i in range(N + 1, N + N // 2 + 1):
            s.sendmail("pc@lan", ["r%d@remote.test" % i], attachment(i))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(sink_seqs(sink.messages())) < N // 2:
        time.sleep(1)
    assert len(sink_seqs(sink.messages())) == N // 2
    g.sh("picomail status | grep -q '^queue_length: 0$'")
    c2 = phase("relayed", c1, N // 2)
    p = Pop(g.ports["pop3"], timeout=60)
    p.login("alice", PASSWORD)
    n, _ = p.stat()
    assert n == N, n
    for k in range(1, n + 1):
        p.ok("DELE %d" % k)
    p.quit()
    phase("deleted", c2, N)
    assert fig["delivered"]["pages_per_msg"] > 0 and fig["delivered"]["erases_per_msg"] >= 0, fig
    assert g.sh("ls /data/mail/alice/cur /data/mail/alice/new | grep -c , || true").strip() == "0"
    # The probes go: the next test loads the flash harder, and a kprobe
    # in the NAND core is not what it measures.
    g.sh("t=/sys/kernel/debug/tracing; echo 0 >$t/events/kprobes/enable && echo >$t/kprobe_events && "
         "echo 16 >$t/buffer_size_kb")
    fig["mtd"] = mtd.splitlines()[1:]
    record("flash", fig)
    print("%s: %r" % (board, fig))


def fetch_tree(g, dest):
    """/data/mail and /data/spool of the guest, as files under dest."""
    b64 = g.sh("tar -c -f - -C /data mail spool 2>/dev/null | gzip -1 | base64", timeout=300)
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(b64)), mode="r:gz") as t:
        # A message for several users is one file hard-linked into each
        # Maildir: tar stores the second name as a link to the first.
        t.extractall(dest, members=[m for m in t.getmembers() if m.isfile() or m.isdir() or m.islnk()])


def test_ubifs_power_cut_recovery(board, flash, record):
    if board not in UBIFS_BOARDS:
        pytest.skip("UBIFS cut on %s: FIRMWARE_UBIFS_BOARDS=%s" % (board, " ".join(UBIFS_BOARDS)))
    g, sink, workdir = flash, flash.sink, flash.dir
    seed = int(os.environ.get("PICOMAIL_SEED", int(time.time() * 1000)))
    print("PICOMAIL_SEED=%d" % seed)
    rng = random.Random(seed)
    books = Books(first=10000)   # apart from the X-Seq numbers of test_wear_per_message
    stats = {"cuts": 0, "acked": 0, "waited_s": []}
    for t in range(CUTS):
        load = Load(g, books, rng)
        load.start()
        time.sleep(2)
        g.sh("echo 1 >/sys/kernel/debug/ubifs/ubi0_0/tst_recovery")
        t0 = time.monotonic()
        # UBIFS cuts within a minute or 10000 writes (fs/ubifs/debug.c).
        while time.monotonic() - t0 < 150:
            if g.run("dmesg | grep -q 'UBIFS warning.*failing in'", timeout=300)[0] == 0:
                break
            time.sleep(1)
        cut = g.run("dmesg | grep -q 'UBIFS warning.*failing in'")[0] == 0
        stats["waited_s"].append(round(time.monotonic() - t0, 1))
        time.sleep(1)
        load.pause()
        load.close()
        assert cut, "UBIFS did not emulate a power cut in 150 s:\n%s" % g.sh("dmesg | tail -n 20")
        with open(os.path.join(workdir, "cut%d.log" % t), "w") as f:
            f.write(g.sh("dmesg; cat /var/log/messages"))
        g.sh("/etc/init.d/S50picomail stop")
        g.sh("dmesg -c >/dev/null; umount /data && mount -t ubifs ubi0:mail /data", timeout=300)
        with open(os.path.join(workdir, "remount%d.log" % t), "w") as f:
            f.write(g.sh("dmesg -c"))
        tree = os.path.join(workdir, "tree%d" % t)
        fetch_tree(g, tree)
        books.save(os.path.join(workdir, "books%d.json" % t))
        lost = losses(tree, books, "UBIFS cut %d, after recovery" % t, sink=sink_seqs(sink.messages()))
        assert not lost, "acknowledged messages lost: %r" % lost[:20]
        stats["cuts"] += 1
        out = g.sh("/etc/init.d/S50picomail start")
        assert out.rstrip().endswith("OK"), out
    stats["acked"] = books.acked()
    record("ubifs_recovery", stats)
    print("%s: %r" % (board, stats))
    assert stats["acked"] > 0
