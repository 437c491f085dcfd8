"""Durability: streaming without growing memory, injected filesystem faults
become 4xx with nothing half-delivered, and kill -9 at any moment loses no
acknowledged message."""

import hashlib
import os
import random
import smtplib
import threading
import time

import pytest

from picotest import (CRLF, DaemonExited, assert_reply, free_port, is_complete, lf,
                      message, numbered, seq_of, skip_if_sanitized, smtp_send)

MiB = 1024 * 1024


# ---------------------------------------------------------------- streaming


@skip_if_sanitized("the daemon's RSS")
def test_50mb_message_streams_without_growing_memory(make_daemon):
    d = make_daemon(max_message_size="60M")
    # Warm up: one mid-size message touches the session and write buffers.
    assert smtp_send(d.port, ["alice@lan"], message("warm", (b"w" * 78 + CRLF) * 4000)) == (250, "")
    base = d.vm("VmHWM")

    line = b"z" * 78 + CRLF
    chunk = line * 13107                      # 1 MiB - 6 octets
    nchunks = 50
    head = b"Subject: big\r\n\r\n"
    peak = 0
    with d.session() as c:
        c.expect("MAIL FROM:<sender@example.org> SIZE=%d" % (len(chunk) * nchunks + 100), "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        c.send(head)
        for i in range(nchunks):
            c.send(chunk)
            if i % 5 == 0:
                peak = max(peak, d.vm("VmRSS"))
        c.send(b".\r\n")
        assert_reply(c.reply(timeout=60), "250", "end of a 50 MB message")
        peak = max(peak, d.vm("VmRSS"))
    hwm = d.vm("VmHWM")
    print("VmHWM %d KiB before, %d KiB after 50 MB; VmRSS peak sampled %d KiB" % (base, hwm, peak))
    assert hwm - base < 1024, "peak RSS grew by %d KiB (from %d to %d) over 50 MB" % (
        hwm - base, base, hwm)
    assert peak - base < 1024, "RSS %d KiB vs %d before" % (peak, base)

    big = [m for m in d.maildir("alice").messages(check=False) if b"Subject: big" in m.data[:400]]
    assert len(big) == 1
    m = big[0].check()
    want = hashlib.sha256(lf(head))
    for _ in range(nchunks):
        want.update(lf(chunk))
    assert hashlib.sha256(m.body).hexdigest() == want.hexdigest(), "50 MB body differs"
    d.maildir("alice").assert_clean()


# ---------------------------------------------------------------- faults

# op, errno, recipients, expected reply, message size
# The last field: configuration.  Without a scanner a message is written
# to an unnamed file (O_TMPFILE) and linked into each new/; with one it
# has a name in tmp/ (the scanner reads it), renamed into the first new/.
NAMED = {"scanner": "/bin/true"}
FAULTS = [
    ("open", "EIO", 1, "451 4.3.0", 2000, {}),
    ("write", "EIO", 1, "451 4.3.0", 16 * 1024, {}),
    ("fsync", "EIO", 1, "451 4.3.0", 2000, {}),
    ("link", "EIO", 1, "451 4.3.0", 2000, {}),
    ("link", "EIO", 2, "451 4.3.0", 2000, {}),
    ("mkdir", "EIO", 1, "451 4.3.0", 2000, {}),
    ("write", "ENOSPC", 1, "452 4.3.1", 16 * 1024, {}),
    ("fsync", "EDQUOT", 1, "452 4.3.1", 2000, {}),
    ("open", "EIO", 1, "451 4.3.0", 2000, NAMED),
    ("rename", "EIO", 1, "451 4.3.0", 2000, NAMED),
    ("link", "EIO", 2, "451 4.3.0", 2000, NAMED),
]
SWEEP = range(1, 41)
PER_RUN = 6
USERS = {1: ["alice"], 2: ["alice", "bob"]}


def try_numbered(d, i, users, size):
    """('ok'|'temp'|'perm'|'dropped', reply text)"""
    try:
        code, text = smtp_send(d.port, ["%s@lan" % u for u in users], numbered(i, size))
    except (smtplib.SMTPServerDisconnected, OSError) as e:
        return "dropped", repr(e)
    if code == 250:
        return "ok", ""
    return ("temp" if 400 <= code < 500 else "perm"), "%d %s" % (code, text)


def delivered(d, users):
    """{user: [seq...]}, checking every file in new/ is complete."""
    out = {}
    for u in users:
        seqs = []
        for m in d.maildir(u).messages():
            i = seq_of(m.data)
            assert i is not None and is_complete(m.data, i), "incomplete file %s" % m.path
            seqs.append(i)
        out[u] = sorted(seqs)
    return out


@pytest.mark.parametrize("op,err,nrcpt,expected,size,conf", FAULTS,
                         ids=["%s-%s-%d%s" % (f[0], f[1], f[2], "-named" if f[5] else "")
                              for f in FAULTS])
def test_injected_fault_becomes_4xx(make_daemon, picomail_test_bin, op, err, nrcpt,
                                    expected, size, conf):
    """For N = 1, 2, 3..., fail the Nth `op` call: whichever call it lands
    on (start-up, a file, a directory, the first message or a later one), a
    message either gets 250 and is whole in new/, or gets the 4xx and is
    nowhere; tmp/ is empty; the server goes on.  At least one N must hit
    delivery and give the 4xx.  The sweep stops once a fault has hit a
    message after two good ones (steady state), having covered every call
    site of the first message on the way."""
    users = USERS[nrcpt]
    hits = []
    for n in SWEEP:
        fault = "%s:%d:%s" % (op, n, err)
        d = make_daemon(binary=picomail_test_bin, env={"PICOMAIL_FAULT": fault}, start=False,
                        **conf)
        try:
            d.start()
        except DaemonExited as e:
            # The fault hit start-up: refusing to start is fine, crashing is not.
            assert e.returncode > 0, "%s: start-up died of signal %d\n%s" % (
                fault, -e.returncode, e.log)
            continue
        acked, outcome = [], None
        for i in range(PER_RUN):
            kind, text = try_numbered(d, i, users, size)
            if kind == "ok":
                acked.append(i)
                continue
            outcome = (i, kind, text)
            break
        print("%s: acked %r, then %r" % (fault, acked, outcome))
        if outcome is None:
            assert d.stop() == 0
            continue                      # the Nth call was not on a delivery path
        i, kind, text = outcome
        assert d.alive(), "%s: daemon died\n%s" % (fault, d.log())
        assert kind != "perm", "%s: message %d got a permanent error %s" % (fault, i, text)
        if kind == "dropped":
            # Only a failed socket write may drop the connection.
            assert op == "write", "%s: connection dropped instead of a 4xx: %s" % (fault, text)
        for u in users:
            d.maildir(u).assert_clean()
        assert delivered(d, users) == {u: acked for u in users}, \
            "%s: message %d refused (%s) but new/ does not hold exactly %r" % (
                fault, i, text, acked)
        # The server goes on: the next message is delivered.
        assert try_numbered(d, 100, users, size) == ("ok", ""), fault
        assert delivered(d, users) == {u: acked + [100] for u in users}
        for u in users:
            d.maildir(u).assert_clean()
        assert d.stop() == 0, "%s: exit status after SIGTERM" % fault
        if kind == "temp":
            assert text.startswith(expected[:3]) and expected[4:] in text.split(" ")[1:2], \
                "%s: got %s, want %s" % (fault, text, expected)
            hits.append(n)
            if len(acked) >= 2:
                break
    assert hits, "no injected %s:N:%s ever surfaced as %s" % (op, err, expected)


def test_without_unnamed_files_messages_get_names_in_tmp(make_daemon, picomail_test_bin):
    """A file system without O_TMPFILE (vfat, jffs2) refuses the unnamed
    file with EOPNOTSUPP: the daemon says so once and writes every message
    under a name in tmp/ from then on, renamed into new/; nothing is lost."""
    fell_back = 0
    for n in range(1, 12):
        d = make_daemon(binary=picomail_test_bin,
                        env={"PICOMAIL_FAULT": "open:%d:EOPNOTSUPP" % n,
                             "PICOMAIL_FAULT_TRACE": "1"})
        for i in range(3):
            kind, text = try_numbered(d, i, ["alice", "bob"], 2000)
            if kind != "ok":
                # The fault hit another open (a file the daemon reads):
                # an error, never a loss.
                assert kind == "temp", "open:%d: %s %s" % (n, kind, text)
        log = d.log(1 << 20)
        if "no unnamed files here" in log:
            fell_back += 1
            assert log.count("no unnamed files here") == 1, log
            got = delivered(d, ["alice", "bob"])
            assert got == {"alice": [0, 1, 2], "bob": [0, 1, 2]}, got
            # After the first refusal, files are named in tmp/ and renamed.
            assert "fault seam: rename #" in log, log
        for u in ("alice", "bob"):
            d.maildir(u).assert_clean()
        assert d.stop() == 0
    assert fell_back > 0, "no open:N:EOPNOTSUPP landed on a message file"


def test_failed_unlink_of_tmp_after_delivery_still_250(make_daemon, picomail_test_bin):
    """Once the message is linked into every new/ and synced, a failure to
    remove the tmp/ name must not turn into a 4xx (the client would retry
    and deliver twice): 250, and the message is in new/ exactly once."""
    for n in range(1, 4):
        d = make_daemon(binary=picomail_test_bin, env={"PICOMAIL_FAULT": "unlink:%d:EIO" % n})
        for i in range(3):
            assert try_numbered(d, i, ["alice", "bob"], 2000) == ("ok", ""), "unlink:%d" % n
        assert delivered(d, ["alice", "bob"]) == {"alice": [0, 1, 2], "bob": [0, 1, 2]}
        assert d.stop() == 0


# ---------------------------------------------------------------- kill -9


def test_kill9_loses_nothing_acknowledged(make_daemon):
    """Rounds of concurrent clients, a SIGKILL at a random moment, a
    restart: every message that got 250 is in new/ exactly once, every file
    in new/ is complete, and no message is delivered twice."""
    d = make_daemon(start=False)
    seed = int(os.environ.get("PICOMAIL_SEED", time.time()))
    print("PICOMAIL_SEED=%d" % seed)
    rnd = random.Random(seed)
    lock = threading.Lock()
    counter = iter(range(1, 10 ** 9))
    acked = set()
    users_of = {}

    def client(stop, port):
        while not stop.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", port, local_hostname="client.lan",
                                  timeout=5) as s:
                    while not stop.is_set():
                        with lock:
                            i = next(counter)
                        rcpts = ["alice@lan", "bob@lan"] if i % 3 == 0 else ["alice@lan"]
                        users_of[i] = [r.split("@")[0] for r in rcpts]
                        s.sendmail("load@example.org", rcpts, numbered(i, rnd.choice([0, 3000, 30000])))
                        with lock:
                            acked.add(i)
            except (smtplib.SMTPException, OSError):
                time.sleep(0.01)

    for rnd_no in range(10):
        d.port = free_port()
        d.write_config()
        d.start()
        stop = threading.Event()
        threads = [threading.Thread(target=client, args=(stop, d.port)) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(rnd.uniform(0.2, 1.0))
        d.kill()
        stop.set()
        for t in threads:
            t.join(15)
            assert not t.is_alive(), "client thread hung"

    # A last clean start: the daemon comes up on a crashed spool and delivers.
    d.port = free_port()
    d.write_config()
    d.start()
    assert smtp_send(d.port, ["alice@lan"], numbered(0)) == (250, "")
    assert d.stop() == 0

    print("kill -9: %d messages acknowledged over 10 rounds" % len(acked))
    assert len(acked) > 20, "only %d messages acknowledged in 10 rounds" % len(acked)
    for user in ("alice", "bob"):
        seen = {}
        for m in d.maildir(user).messages():
            i = seq_of(m.data)
            assert i is not None and is_complete(m.data, i), "partial file in new/: %s" % m.path
            seen.setdefault(i, []).append(m.name)
        dups = {i: names for i, names in seen.items() if len(names) > 1}
        assert not dups, "%s: delivered more than once: %r" % (user, dups)
        want = {i for i in acked if user in users_of[i]}
        missing = sorted(want - set(seen))
        assert not missing, "%s: acknowledged but missing after kill -9: %r" % (user, missing)
