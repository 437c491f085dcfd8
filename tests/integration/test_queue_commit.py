"""The queue's commit through the group commit (src/maildir.c,
src/queue_file.c): a message with a relayed recipient is made durable
while the loop goes on, in the same batches as the Maildir deliveries:
its file and its envelope (written to the spool's tmp/) are synced beside
the batch's other files, the message is renamed into msg/, msg/ synced,
the envelope renamed into env/, env/ synced, and only then the 250.

- queued and Maildir messages whose final dots arrive together share one
  batch: every one hears 250; each queued one is in the queue whole, with
  its envelope, and each Maildir one in new/;
- a fault on each sync and each rename of such a batch in turn: the
  messages that heard 250 are exactly those queued (whole, with their
  envelope) and those in new/; the others heard 451 4.3.0; the spool's
  tmp/ is empty and no message is left without its envelope; the daemon
  takes the next message;
- the queue runs' rewritten envelopes (a deferral) go through the same
  commit: several runners deferring at once have their envelopes synced
  together, each envelope complete with its new attempt count, nothing
  left in tmp/; and SIGTERM while the runs wait for a silent smarthost,
  the worst moment: the daemon cuts them short and rewrites what they
  learnt before it exits;
- a big queued message whose syncs are in flight (`picomail status`:
  commit_in_flight), the worst moments for the session: another session
  is served meanwhile; its client drops the connection (the message stays
  queued, whole, and the log says nobody heard 250); SIGTERM (the batch
  finishes first, and the client hears its 250).

The smarthost is a port nobody listens on and retries wait an hour, so
every queued message stays in the spool to be looked at.  Every wait is
bounded; each daemon is stopped by its PID (make_daemon).
"""

import os
import signal
import socket
import time

import pytest

from committest import in_flight, reset_while_in_flight
from faultwalk import mark, queue_state, seam_calls, since, spool_names
from picotest import assert_reply, free_port, is_complete, numbered, scaled, seq_of, stuff
from relaytest import control, dead_udp_port

SESSIONS = 6           # half of them queued, half to alice's Maildir
SIZE = 6000
FAR = "far@remote.test"


def queue_conf():
    return ["smarthost 127.0.0.1:%d" % free_port(), "retry_min 1h", "retry_max 1h",
            "resolver 127.0.0.1:%d" % dead_udp_port()]


def daemon(make_daemon, **kw):
    return make_daemon(extra=queue_conf(), max_message_size="200M", **kw)


def rcpt_of(seq):
    return FAR if seq % 2 == 0 else "alice@lan"


def open_sessions(d, first, n=SESSIONS, size=SIZE):
    """n sessions past DATA, their messages sent but for the final dot:
    [(client, seq)], even seqs to the queue, odd ones to alice."""
    out = []
    for i in range(first, first + n):
        c = d.session()
        c.expect("MAIL FROM:<sender@example.org>", "250")
        c.expect("RCPT TO:<%s>" % rcpt_of(i), "250")
        c.expect("DATA", "354")
        c.send(stuff(numbered(i, size)))
        out.append((c, i))
    return out


def end_together(d, sessions, hold=True):
    """Every final dot sent while the daemon is stopped, so that it finds
    them in one round of its loop; then each reply: {seq: reply}."""
    for c, _ in sessions:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hold:
        os.kill(d.pid, signal.SIGSTOP)
    try:
        for c, _ in sessions:
            c.send(b".\r\n")
    finally:
        if hold:
            os.kill(d.pid, signal.SIGCONT)
    got = {}
    for c, i in sessions:
        got[i] = c.reply(timeout=scaled(20))
        c.close()
    return got


def queued_seqs(d):
    """{seq} of the queue's messages, each whole with its envelope naming
    FAR as pending; fails on a message without its envelope."""
    q, orphans = queue_state(d.spool)
    assert orphans == [], "message files without an envelope: %r" % orphans
    out = set()
    for qid, (e, seq, ok) in q.items():
        assert e["complete"], "%s: truncated envelope:\n%s" % (qid, e["text"])
        assert ok, "%s: the message file is missing or not whole (seq %r)" % (qid, seq)
        assert [(r[0], r[2]) for r in e["rcpts"]] == [("P", FAR)], e["rcpts"]
        assert seq not in out, "message %d queued twice" % seq
        out.add(seq)
    return out


def in_maildir(d):
    out = set()
    for m in d.maildir("alice").messages():
        i = seq_of(m.body)
        assert i is not None and is_complete(m.data, i), "%s is not whole" % m.name
        assert i not in out, "message %d stored twice" % i
        out.add(i)
    return out


def tmp_empties(d):
    """True once the spool's tmp/ is empty (bounded): the queue runner's
    first try of a message just acknowledged rewrites its envelope through
    tmp/, for as long as its batch takes (seconds, behind another test's
    96 MiB sync on the same disk); a file left for good stays."""
    deadline = time.monotonic() + scaled(30)
    while spool_names(d.spool, "tmp") and time.monotonic() < deadline:
        time.sleep(0.01)
    return spool_names(d.spool, "tmp") == []


def check_acknowledged_only(d, replies, what=""):
    """250 exactly for the messages queued and in new/; 451 for the rest;
    nothing left in the spool's tmp/ nor alice's."""
    acked = {i for i, r in replies.items() if r.code == 250}
    assert queued_seqs(d) == {i for i in acked if rcpt_of(i) == FAR}, what
    assert in_maildir(d) == {i for i in acked if rcpt_of(i) != FAR}, what
    for i, r in replies.items():
        if r.code != 250:
            assert r.matches("451 4.3.0"), "%s: message %d: %r" % (what, i, r)
    assert tmp_empties(d), "%s: left in the spool's tmp/: %r" % (
        what, spool_names(d.spool, "tmp"))
    d.maildir("alice").assert_clean()


def test_queued_and_maildir_messages_share_one_batch(make_daemon):
    d = daemon(make_daemon)
    replies = end_together(d, open_sessions(d, 1))
    st = d.status()
    for i, r in replies.items():
        assert_reply(r, "250 2.0.0", "message %d" % i)
    # one batch of them all (the queue runs' envelopes come in later ones)
    assert int(st["commit_batch_max"]) == SESSIONS, st
    check_acknowledged_only(d, replies)
    assert int(d.status()["queue_length"]) == SESSIONS // 2
    assert d.stop() == 0


def first_two(d):
    """A first message of each kind, each a batch of its own (so that the
    calls that follow are numbered the same in every run), and the queue
    runner's first try of the queued one (refused: it waits an hour):
    {seq: reply}."""
    replies = end_together(d, open_sessions(d, 1, 1), hold=False)
    replies.update(end_together(d, open_sessions(d, 2, 1), hold=False))
    deadline = time.monotonic() + scaled(10)
    while "retry id=" not in d.log(1 << 20) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "retry id=" in d.log(1 << 20), "the queued message was never tried"
    return replies


def batch_calls(make_daemon, picomail_test_bin):
    """The traced fsync and rename calls of one mixed batch, [(op, n,
    path)], counted from start-up (a first message of each kind makes the
    Maildir and the spool's files before)."""
    for _ in range(3):
        d = daemon(make_daemon, binary=picomail_test_bin, env={"PICOMAIL_FAULT_TRACE": "1"})
        first_two(d)
        pos = mark(d)
        end_together(d, open_sessions(d, 10))
        text = since(d, pos)
        st = d.status()
        d.stop()
        # the batch's calls end before its first 250 is logged
        end = text.find("received id=")
        calls = [c[:3] for c in seam_calls(text[:end]) if c[0] in ("fsync", "rename")]
        if int(st["commit_batch_max"]) == SESSIONS:
            return calls
    pytest.fail("the %d final dots never made one batch in 3 traced runs" % SESSIONS)


def test_a_fault_on_any_sync_or_rename_of_a_queued_batch(make_daemon, picomail_test_bin):
    calls = batch_calls(make_daemon, picomail_test_bin)
    q = SESSIONS // 2
    n_sync = len([c for c in calls if c[0] == "fsync"])
    n_rename = len([c for c in calls if c[0] == "rename"])
    # write-back start and fdatasync of each file (a queued message has two),
    # then new/, msg/ and env/ once each; a rename into msg/ and env/ each
    assert n_sync == 2 * (SESSIONS + q) + 3, calls
    assert n_rename == 2 * q, calls
    partial = 0
    for op, n, path in calls:
        for _ in range(3):
            d = daemon(make_daemon, binary=picomail_test_bin,
                       env={"PICOMAIL_FAULT": "%s:%d:EIO" % (op, n)})
            replies = first_two(d)
            batch = end_together(d, open_sessions(d, 10))
            replies.update(batch)
            if int(d.status()["commit_batch_max"]) == SESSIONS:
                break
            d.stop()
        else:
            pytest.fail("%s #%d: the final dots never made one batch in 3 runs" % (op, n))
        log = d.log(1 << 20)
        assert "%s #%d" % (op, n) in log and "injected EIO" in log, \
            "%s #%d (%s in the traced run) was not reached" % (op, n, path)
        codes = [r.code for r in batch.values()]
        assert 451 in codes, "%s #%d (%s) failed and no client heard of it" % (op, n, path)
        partial += 250 in codes
        what = "%s #%d (%s in the traced run)" % (op, n, path)
        check_acknowledged_only(d, replies, what)
        # The daemon goes on: the next queued message is taken.
        after = end_together(d, open_sessions(d, 100, 1))
        assert_reply(after[100], "250 2.0.0", "after %s #%d failed" % (op, n))
        replies.update(after)
        check_acknowledged_only(d, replies, what)
        assert d.stop() == 0
    print("faults walked: %d; runs where the batch's other messages were acknowledged: %d"
          % (len(calls), partial))
    assert partial > 0, "no run had a batch in which one message failed and others succeeded"


# ---- the loop while a queued message's batch is in flight --------------------


def test_the_loop_serves_other_sessions_while_a_queued_message_syncs(make_daemon):
    d = daemon(make_daemon)
    other = d.session()
    c, seq = in_flight(d, 2, FAR)
    # Answered while the queued message's syncs are in flight.
    assert_reply(other.cmd("NOOP"), "250", "NOOP during the queue's commit")
    other.expect("MAIL FROM:<sender@example.org>", "250")
    other.expect("RCPT TO:<%s>" % FAR, "250")
    other.expect("DATA", "354")
    other.send(stuff(numbered(100, 2000)) + b".\r\n")
    assert_reply(c.reply(timeout=scaled(60)), "250 2.0.0", "the big queued message")
    assert_reply(other.reply(timeout=scaled(60)), "250 2.0.0", "the message sent meanwhile")
    assert {seq, 100} <= queued_seqs(d)
    assert tmp_empties(d), spool_names(d.spool, "tmp")
    assert d.stop() == 0


def test_a_client_gone_while_its_queued_message_syncs_still_has_it_queued(make_daemon):
    d = daemon(make_daemon)
    idle = d.session()     # alone, a batch would be synced without the ring
    seq, answered = reset_while_in_flight(d, 2, FAR)
    # Queued, whole, once, and the log says nobody heard the 250.
    assert queued_seqs(d) == {seq} | answered
    assert "ack=\"none: the client was gone before the reply\"" in d.log(1 << 20)
    st = d.status()
    assert st["connections"] == "1" and st["pool.conn"].startswith("1/"), st
    idle.expect("QUIT", "221")
    idle.close()
    after = end_together(d, open_sessions(d, 200, 1), hold=False)
    assert_reply(after[200], "250 2.0.0", "the next message")
    assert queued_seqs(d) == {seq, 200} | answered
    assert d.stop() == 0


def test_sigterm_while_a_queued_message_syncs_finishes_it_first(make_daemon):
    d = daemon(make_daemon)
    idle = d.session()
    c, seq = in_flight(d, 2, FAR)
    d.send_signal(signal.SIGTERM)
    assert_reply(c.reply(timeout=scaled(60)), "250 2.0.0", "the queued message at SIGTERM")
    assert c.closed(scaled(10)), "the session was not closed at shutdown"
    assert idle.closed(scaled(10)), "the idle session was not closed at shutdown"
    assert d.stop(timeout=30) == 0
    assert queued_seqs(d) == {seq}
    assert spool_names(d.spool, "tmp") == []     # stopped: nothing moves


# ---- envelopes rewritten by the queue runs ------------------------------------

RUNNERS = 4


def queue_some(d, n, first=300):
    """n messages queued one by one, each deferred once (its smarthost is
    down): their seqs."""
    seqs = list(range(first, first + 2 * n, 2))      # even: to FAR
    for i in seqs:
        (c, _), = open_sessions(d, i, 1)
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.send(b".\r\n")
        assert_reply(c.reply(timeout=scaled(20)), "250 2.0.0", "message %d" % i)
        c.close()
    deadline = time.monotonic() + scaled(10)
    while d.log(1 << 20).count("retry id=") < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert d.log(1 << 20).count("retry id=") == n, "not every message was tried once"
    return seqs


def attempts(d):
    """{seq: the attempt count in its envelope}, each envelope whole."""
    q, orphans = queue_state(d.spool)
    assert orphans == [], orphans
    out = {}
    for qid, (e, seq, ok) in q.items():
        assert e["complete"] and ok, "%s: %r" % (qid, e["text"])
        line = [x for x in e["text"].splitlines() if x.startswith("attempts ")]
        out[seq] = int(line[0].split()[1])
    return out


def test_deferrals_rewrite_their_envelopes_through_the_commit(make_daemon):
    d = daemon(make_daemon, queue_runners=RUNNERS)
    seqs = queue_some(d, 2 * RUNNERS)
    assert attempts(d) == {i: 1 for i in seqs}
    before = d.status()
    pos = len(d.log(1 << 20))
    control(d, "flush")
    deadline = time.monotonic() + scaled(10)
    while d.log(1 << 20)[pos:].count("retry id=") < len(seqs) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert d.log(1 << 20)[pos:].count("retry id=") == len(seqs), "the flush did not try each"
    after = d.status()
    assert attempts(d) == {i: 2 for i in seqs}
    assert tmp_empties(d), spool_names(d.spool, "tmp")
    # Each rewrite went through the commit, beside the others.
    files = int(after["commit_files"]) - int(before["commit_files"])
    batches = int(after["commit_batches"]) - int(before["commit_batches"])
    assert files == len(seqs), (before, after)
    print("%d envelopes rewritten in %d batches" % (files, batches))
    assert d.stop() == 0


class SilentSmarthost:
    """A smarthost that takes connections and never says a word: the queue
    runs that reach it stay in flight."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.conns = []

    def wait_for(self, n):
        deadline = time.monotonic() + scaled(10)
        while len(self.conns) < n and time.monotonic() < deadline:
            try:
                self.conns.append(self.sock.accept()[0])
            except socket.timeout:
                pass
        return len(self.conns)

    def close(self):
        for c in self.conns:
            c.close()
        self.sock.close()


def test_sigterm_while_queue_runs_wait_rewrites_their_envelopes_first(make_daemon):
    peer = SilentSmarthost()
    try:
        d = make_daemon(extra=["smarthost 127.0.0.1:%d" % peer.port, "retry_min 1h",
                               "retry_max 1h", "resolver 127.0.0.1:%d" % dead_udp_port()],
                        queue_runners=RUNNERS)
        seqs = list(range(400, 400 + 2 * RUNNERS, 2))
        for i in seqs:
            (c, _), = open_sessions(d, i, 1)
            c.send(b".\r\n")
            assert_reply(c.reply(timeout=scaled(20)), "250 2.0.0", "message %d" % i)
            c.close()
        # Every run in flight, waiting for the smarthost's greeting: the
        # worst moment for a shutdown, which cuts them short.
        assert peer.wait_for(RUNNERS) == RUNNERS, "the runs never reached the smarthost"
        assert attempts(d) == {i: 0 for i in seqs}
        d.send_signal(signal.SIGTERM)
        assert d.stop(timeout=30) == 0
    finally:
        peer.close()
    # What each run learnt (one attempt, deferred) is in its envelope,
    # whole; nothing is left half-written in tmp/.
    assert attempts(d) == {i: 1 for i in seqs}
    assert spool_names(d.spool, "tmp") == [], spool_names(d.spool, "tmp")
