"""Crash consistency (issue 8): kill -9 at random moments of a mixed load,
PICOMAIL_CRASH_TRIALS times (default 200, in batches of 50).

The load, all at once: two SMTP clients delivering to alice and bob (some
messages to both), one SMTP client sending to remote recipients (queued,
then relayed to an aiosmtpd sink), and one POP3 client that logs in as
alice or bob, DELEs about half of the messages and QUITs.  Every message
carries X-Seq and a last line "END n".

After each kill, on the files as the crash left them, then once more after
the restart:
  - every message that got 250 is in each of its local recipients'
    Maildirs exactly once (unless POP3 deleted it), and each remote one is
    queued (complete envelope, message file) or at the sink;
  - a message whose POP3 deletion got +OK is gone; one DELE'd without a
    QUIT sent is still there;
  - no file is partial, none is in a Maildir twice, none is a message that
    was never sent; no envelope lacks its message;
  - the daemon starts on what the crash left and its tmp/ are clean.
A message the client saw no 250 for may be there (the kill fell between the
commit and the reply) -- at most one per client in flight.  At the sink, a
message may come once more for each kill that found it still queued after
the sink had taken it (between the sink's 250 and the removal from the
queue, RFC 1047) -- at most queue_runners such a kill.  Both are counted.
PICOMAIL_SEED fixes the timings.
"""

import math
import os
import random
import smtplib
import threading
import time

import pytest

from faultwalk import maildir_files, peer_seqs, queue_state, tmp_files
from picotest import SANITIZED, ServerClosed, free_port, numbered, scaled, seq_of
from pop3test import PASSWORD, Pop
from relaytest import Peer, dead_udp_port, ensure_aiosmtpd, status, wait_for

# Under ASan (picotest.SANITIZED) a quarter, as each restart is slower.
TRIALS = int(os.environ.get("PICOMAIL_CRASH_TRIALS", "50" if SANITIZED else "200"))
BATCH = 50
BATCHES = max(1, math.ceil(TRIALS / BATCH))
USERS = ("alice", "bob")
RUNNERS = 2          # queue_runners: copies a kill can leave twice at the sink
SMTP_CLIENTS = 3
TOTALS = {"trials": 0, "acked": 0, "losses": 0, "unacked_present": 0, "sink_dups": 0,
          "orphans": 0, "pop3_deleted": 0}


@pytest.fixture(scope="module", autouse=True)
def _aiosmtpd():
    if not ensure_aiosmtpd():
        pytest.fail("aiosmtpd is missing: bash board/common/deps.sh pkg:python3-aiosmtpd",
                    pytrace=False)
    yield
    if TOTALS["trials"]:
        print("\nkill -9: %(trials)d trials, %(acked)d messages acknowledged, %(losses)d lost, "
              "%(pop3_deleted)d POP3 deletions confirmed; %(unacked_present)d delivered "
              "without a 250, %(sink_dups)d second copies at the sink, %(orphans)d "
              "message files without an envelope" % TOTALS)


class Load:
    """The clients and what each has seen, shared under one lock."""

    def __init__(self, d, rng):
        self.d = d
        self.rng = rng
        self.lock = threading.Lock()
        self.seq = 0
        self.sent = {}                    # seq -> {"local": [...], "remote": [...], "acked"}
        self.deleted_ok = {u: set() for u in USERS}      # QUIT got +OK
        self.deleted_maybe = {u: set() for u in USERS}   # QUIT sent, no +OK seen
        self.running = threading.Event()
        self.stopping = threading.Event()
        self.active = 0
        self.threads = []

    def next_seq(self, local, remote):
        with self.lock:
            self.seq += 1
            self.sent[self.seq] = {"local": local, "remote": remote, "acked": False}
            return self.seq

    def start(self):
        kinds = [self.smtp_local, self.smtp_local, self.smtp_remote, self.pop3]
        for i, fn in enumerate(kinds):
            t = threading.Thread(target=self.loop, args=(fn, random.Random(self.rng.random())),
                                 daemon=True)
            t.start()
            self.threads.append(t)

    def loop(self, fn, rng):
        while not self.stopping.is_set():
            if not self.running.wait(0.02):
                continue
            with self.lock:
                self.active += 1
            try:
                fn(rng)
            except (OSError, smtplib.SMTPException, AssertionError, ServerClosed):
                pass   # the kill; what the client saw is recorded
            finally:
                with self.lock:
                    self.active -= 1
            time.sleep(0.002)

    def idle(self, timeout=10):
        wait_for(lambda: self.active == 0, scaled(timeout), "the clients to notice the kill")

    def close(self):
        self.running.clear()
        self.stopping.set()
        for t in self.threads:
            t.join(10)
            assert not t.is_alive(), "a client thread hung"

    # the clients -------------------------------------------------------

    def smtp_local(self, rng):
        with smtplib.SMTP("127.0.0.1", self.d.port, local_hostname="client.lan", timeout=3) as s:
            while self.running.is_set():
                users = rng.choice([["alice"], ["bob"], ["alice", "bob"]])
                i = self.next_seq(users, [])
                s.sendmail("load@example.org", ["%s@lan" % u for u in users],
                           numbered(i, rng.choice([0, 0, 2000, 20000])))
                with self.lock:
                    self.sent[i]["acked"] = True

    def smtp_remote(self, rng):
        with smtplib.SMTP("127.0.0.1", self.d.port, local_hostname="client.lan", timeout=3) as s:
            while self.running.is_set():
                i = self.next_seq([], None)
                rcpt = "r%d@remote.test" % i
                self.sent[i]["remote"] = [rcpt]
                s.sendmail("load@lan", [rcpt], numbered(i, rng.choice([0, 3000])))
                with self.lock:
                    self.sent[i]["acked"] = True

    def pop3(self, rng):
        user = rng.choice(USERS)
        p = Pop(self.d.pop3_port, timeout=3)
        try:
            p.ok("USER %s" % user)
            if not p.cmd("PASS %s" % PASSWORD).startswith("+OK"):
                time.sleep(0.01)
                return
            cur = os.path.join(self.d.mail_root, user, "cur")
            names = os.listdir(cur) if os.path.isdir(cur) else []
            marked = set()
            for n, uid in sorted(p.uidl().items()):
                if rng.random() < 0.5:
                    continue
                path = [x for x in names if x.split(",")[0] == uid]
                assert len(path) == 1, (uid, path)
                with open(os.path.join(cur, path[0]), "rb") as f:
                    i = seq_of(f.read())
                p.ok("DELE %d" % n)
                marked.add(i)
            p.send(b"QUIT\r\n")
            with self.lock:
                self.deleted_maybe[user] |= marked
            r = p.status()
            if r.startswith("+OK"):
                with self.lock:
                    self.deleted_ok[user] |= marked
        finally:
            p.close()


class Ledger:
    """What the earlier checks saw."""

    def __init__(self):
        self.sink_dups = 0
        self.unacked_present = set()
        self.queued_kills = {}          # seq -> kills that found it queued
        self.kills = 0
        self.losses = []


def check(load, d, peer, ledger, when, drained=False, kill=False):
    """The promise on the files as they are now (the daemon dead, or
    restarted with the clients paused)."""
    with load.lock:
        sent = {i: dict(v) for i, v in load.sent.items()}
        ok = {u: set(s) for u, s in load.deleted_ok.items()}
        maybe = {u: set(s) for u, s in load.deleted_maybe.items()}
    # The queue first, then the sink: a message moving from one to the
    # other in between is seen at the sink.
    queue, orphans = queue_state(d.spool)
    boxes = {u: maildir_files(d.mail_root, u) for u in USERS}
    sink = peer_seqs(peer)

    where = {}                       # seq -> set of places
    for u, files in boxes.items():
        seen = {}
        for sub, name, i, complete in files:
            assert complete, "%s: partial file %s/%s/%s" % (when, u, sub, name)
            assert i in sent and u in sent[i]["local"], \
                "%s: %s/%s/%s is message %r, never sent to %s" % (when, u, sub, name, i, u)
            seen[i] = seen.get(i, 0) + 1
            where.setdefault(i, set()).add(u)
        dups = {i: c for i, c in seen.items() if c > 1}
        assert not dups, "%s: delivered twice to %s: %r" % (when, u, dups)
        back = set(seen) & ok[u]
        assert not back, "%s: POP3 deletions of %s confirmed by +OK are back: %r" % (
            when, u, sorted(back))
    queued = set()
    for qid, (e, i, complete) in queue.items():
        assert e["complete"], "%s: truncated envelope %s:\n%s" % (when, qid, e["text"])
        assert i is not None, "%s: envelope %s without its message" % (when, qid)
        assert complete, "%s: partial queued message %s" % (when, qid)
        assert i in sent and sent[i]["remote"], "%s: queued %s is message %r, never relayed" % (
            when, qid, i)
        if any(r[0] == "P" for r in e["rcpts"]):
            queued.add(i)
            where.setdefault(i, set()).add("queue")
    for i, copies in sink.items():
        assert i in sent and sent[i]["remote"], "%s: the sink got message %r, never relayed" % (
            when, i)
        where.setdefault(i, set()).add("sink")

    losses = []
    for i, m in sent.items():
        if not m["acked"]:
            continue
        for u in m["local"]:
            if u in where.get(i, ()):
                continue
            if i in ok[u] or i in maybe[u]:
                continue
            losses.append((i, u))
        for r in m["remote"] or ():
            if i in sink or (i in queued and not drained):
                continue
            losses.append((i, r))
    ledger.losses = losses
    assert not losses, "%s: acknowledged messages missing: %r" % (when, losses[:20])

    if kill:
        ledger.kills += 1
        for i in queued:
            ledger.queued_kills[i] = ledger.queued_kills.get(i, 0) + 1
    unacked = {i for i in where if not sent[i]["acked"]}
    new_unacked = unacked - ledger.unacked_present
    assert len(new_unacked) <= SMTP_CLIENTS, \
        "%s: %d messages without a 250 appeared at once: %r" % (when, len(new_unacked),
                                                                sorted(new_unacked))
    ledger.unacked_present |= unacked
    # One more copy at the sink only for each kill that caught the message
    # in the queue (between the sink's 250 and the removal from the
    # queue), and at most queue_runners such windows a kill.
    extra = {i: c - 1 for i, c in sink.items() if c > 1}
    stray = {i: c for i, c in extra.items() if c > ledger.queued_kills.get(i, 0)}
    assert not stray, "%s: copies at the sink beyond the kills that found them queued: %r" % (
        when, {i: (sink[i], ledger.queued_kills.get(i, 0)) for i in stray})
    dups = sum(extra.values())
    assert dups <= RUNNERS * ledger.kills, "%s: %d second copies in %d kills" % (
        when, dups, ledger.kills)
    ledger.sink_dups = dups
    return orphans


@pytest.mark.parametrize("batch", range(BATCHES))
def test_kill9_mixed_load(make_daemon, workdir, batch):
    trials = min(BATCH, TRIALS - batch * BATCH)
    seed = int(os.environ.get("PICOMAIL_SEED", time.time() * 1000)) + batch
    print("PICOMAIL_SEED base, batch %d: %d" % (batch, seed))
    rng = random.Random(seed)
    peer = Peer(os.path.join(workdir, "sink"))
    peer.start()
    pop3_port = free_port()
    d = make_daemon(start=False, extra=[
        "greet_pause 0s", "smarthost 127.0.0.1:%d" % peer.port, "retry_min 1s", "retry_max 1s",
        "resolver 127.0.0.1:%d" % dead_udp_port(), "listen pop3 127.0.0.1:%d" % pop3_port,
        "plaintext_auth yes", "queue_runners %d" % RUNNERS])
    d.pop3_port = pop3_port
    load = Load(d, rng)
    ledger = Ledger()
    t0 = time.monotonic()
    try:
        load.start()
        d.start()
        for t in range(trials):
            load.running.set()
            time.sleep(rng.uniform(0.02, 0.2))
            d.kill()                                     # SIGKILL, by PID
            load.running.clear()
            load.idle()
            check(load, d, peer, ledger, "trial %d, after the kill" % t, kill=True)
            d.start()
            for u in USERS:
                assert tmp_files(d.mail_root, u) == [], "%s/tmp not cleaned at start" % u
            check(load, d, peer, ledger, "trial %d, after the restart" % t)
        # The last restart drains the queue: every relayed message reaches
        # the sink.
        wait_for(lambda: int(status(d)["queue_length"]) == 0, scaled(20), "an empty queue")
        orphans = check(load, d, peer, ledger, "the end", drained=True)
        assert d.stop() == 0
    finally:
        load.close()
        d.kill()
        peer.stop()
    acked = sum(1 for m in load.sent.values() if m["acked"])
    confirmed = sum(len(s) for s in load.deleted_ok.values())
    print("batch %d: %d trials in %.1f s, %d messages (%d acknowledged), %d POP3 deletions "
          "confirmed, %d present without a 250, %d second copies at the sink, orphans %r" % (
              batch, trials, time.monotonic() - t0, len(load.sent), acked, confirmed,
              len(ledger.unacked_present), ledger.sink_dups, orphans))
    TOTALS["trials"] += trials
    TOTALS["acked"] += acked
    TOTALS["losses"] += len(ledger.losses)
    TOTALS["unacked_present"] += len(ledger.unacked_present)
    TOTALS["sink_dups"] += ledger.sink_dups
    TOTALS["orphans"] += len(orphans)
    TOTALS["pop3_deleted"] += confirmed
    assert acked > trials, "only %d messages acknowledged in %d trials" % (acked, trials)
    assert confirmed > 0, "no POP3 deletion confirmed in %d trials" % trials


def test_start_removes_old_message_files_without_an_envelope(make_daemon):
    """What a crash leaves between queue_commit's two renames (or
    queue_remove's two unlinks) is a message file no run will send: the
    next start removes it once it is an hour old; a young one may be a
    `sendmail` between its renames, and a queued message is kept."""
    d = make_daemon(start=False, extra=["smarthost 127.0.0.1:%d" % free_port(), "retry_min 1h",
                                        "retry_max 1h", "resolver 127.0.0.1:%d" % dead_udp_port()])
    old = time.time() - 2 * 3600
    for sub in ("tmp", "msg", "env"):
        os.makedirs(os.path.join(d.spool, sub), exist_ok=True)
    for name, seq in (("OLDORPHAN1", 1), ("YOUNGORPHAN2", 2), ("QUEUED3", 3)):
        p = os.path.join(d.spool, "msg", name)
        with open(p, "wb") as f:
            f.write(numbered(seq).replace(b"\r\n", b"\n"))
        if name != "YOUNGORPHAN2":
            os.utime(p, (old, old))
    with open(os.path.join(d.spool, "env", "QUEUED3"), "w") as f:
        f.write("picomail-queue 1\narrival %d\nsender alice@lan\nattempts 1\nnext %d\n"
                "rcpt PR x@remote.test\nend\n" % (old, time.time() + 3600))
    d.start()
    assert sorted(os.listdir(os.path.join(d.spool, "msg"))) == ["QUEUED3", "YOUNGORPHAN2"]
    assert os.listdir(os.path.join(d.spool, "env")) == ["QUEUED3"]
    assert "removed OLDORPHAN1, a message file without an envelope" in d.log()
    assert d.stop() == 0


def test_running_daemon_removes_old_message_files_without_an_envelope(make_daemon,
                                                                     picomail_test_bin):
    """After a power cut the daemon starts again within seconds, when such a
    file is still young, and a router may then run for months: the running
    daemon looks again every hour (the test build every
    PICOMAIL_ORPHAN_SWEEP_S seconds).  An orphan that has grown old goes
    without a restart; a young one and a queued message stay."""
    d = make_daemon(binary=picomail_test_bin, env={"PICOMAIL_ORPHAN_SWEEP_S": "1"},
                    extra=["smarthost 127.0.0.1:%d" % free_port(), "retry_min 1h",
                           "retry_max 1h", "resolver 127.0.0.1:%d" % dead_udp_port()])
    msg_dir, env_dir = os.path.join(d.spool, "msg"), os.path.join(d.spool, "env")
    wait_for(lambda: os.path.isdir(msg_dir) and os.path.isdir(env_dir), scaled(5), "the spool")
    old = time.time() - 2 * 3600
    # The envelope first, so that no sweep sees QUEUED3's message alone.
    with open(os.path.join(env_dir, "QUEUED3"), "w") as f:
        f.write("picomail-queue 1\narrival %d\nsender alice@lan\nattempts 1\nnext %d\n"
                "rcpt PR x@remote.test\nend\n" % (old, time.time() + 3600))
    # Each message file made beside the spool and renamed in whole, its
    # time set first, as a crash leaves it.
    for name, seq in (("OLDORPHAN1", 1), ("YOUNGORPHAN2", 2), ("QUEUED3", 3)):
        part = os.path.join(os.path.dirname(d.spool), name + ".part")
        with open(part, "wb") as f:
            f.write(numbered(seq).replace(b"\r\n", b"\n"))
        if name != "YOUNGORPHAN2":
            os.utime(part, (old, old))
        os.rename(part, os.path.join(msg_dir, name))
    wait_for(lambda: "OLDORPHAN1" not in os.listdir(msg_dir), scaled(10),
             "the running daemon to remove OLDORPHAN1")
    assert "removed OLDORPHAN1, a message file without an envelope" in d.log()
    time.sleep(scaled(1.5))   # more sweeps: the others stay
    assert sorted(os.listdir(msg_dir)) == ["QUEUED3", "YOUNGORPHAN2"]
    assert os.listdir(env_dir) == ["QUEUED3"]
    assert d.stop() == 0
