"""The group commit (src/maildir.c, src/fsyncs.c): messages whose final dots
arrive together are made durable together, each file by its own fdatasync
(all in flight at once through io_uring where the kernel has it), never by
syncing the whole file system.

- a batch: sessions end their DATA at the same moment; every one hears
  250, each file in new/ is whole, and `picomail status` shows a batch of
  several files and how its syncs ran;
- without io_uring (the seam fails io_uring_setup, or the first
  io_uring_enter after the ring took the syncs): the same messages, synced
  one by one, and status says so;
- a fault on each fsync call of a batch in turn (start of write-back, the
  fdatasync, the directory): the messages that heard 250 are
  exactly the ones in new/, whole; the others heard 451 4.3.0; tmp/ is
  empty; the daemon goes on and takes the next message.

The syncs run while the loop goes on (the ring's completions are polled
with the sockets).  A message large enough that its fdatasync takes a
while on a real disk holds a batch in flight, and the tests act at that
moment, seen in `picomail status` (commit_in_flight):

- another session is served meanwhile (NOOP, and a message of its own,
  committed in the next batch);
- the client of the message in flight drops its connection: the message
  is still delivered whole, and its session goes back to the pool once;
- SIGTERM: the daemon finishes the batch before it exits, the client
  hears 250, and the file is whole in new/.

Every wait is bounded; each daemon is stopped by its PID (make_daemon).
"""

import os
import signal
import socket

import pytest

from faultwalk import mark, seam_calls, since
from committest import in_flight, reset_while_in_flight
from picotest import assert_reply, is_complete, numbered, scaled, seq_of, stuff

SESSIONS = 6
SIZE = 6000
TRIES = 6            # attempts at getting the final dots into one batch


def open_sessions(d, first, n=SESSIONS):
    """n sessions, each past DATA with its message sent but for the final
    dot; returns [(client, seq)]."""
    out = []
    for i in range(first, first + n):
        c = d.session()
        c.expect("MAIL FROM:<sender@example.org>", "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        c.send(stuff(numbered(i, SIZE)))
        out.append((c, i))
    return out


def end_together(sessions, hold=None):
    """Sends every final dot back to back, then reads each reply:
    {seq: reply}.  hold: a daemon stopped (SIGSTOP) while the dots are
    sent, so that it finds them all in one round of its loop and they make
    one batch even on a loaded machine, where it could wake between two
    dots; the fault walk needs that, since its call numbers are those of
    one batch."""
    for c, _ in sessions:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hold is not None:
        os.kill(hold.pid, signal.SIGSTOP)
    try:
        for c, _ in sessions:
            c.send(b".\r\n")
    finally:
        if hold is not None:
            os.kill(hold.pid, signal.SIGCONT)
    got = {}
    for c, i in sessions:
        got[i] = c.reply(timeout=20)
        c.close()
    return got


def stored(d):
    """{seq: data} of alice's files, each checked whole."""
    out = {}
    for m in d.maildir("alice").messages():
        i = seq_of(m.body)
        assert i is not None, "%s: no X-Seq" % m.name
        assert i not in out, "message %d stored twice" % i
        assert is_complete(m.data, i), "%s: message %d is not whole" % (m.name, i)
        out[i] = m.data
    return out


def batch_of_several(d, first):
    """Sends batches until one of several files forms (bounded); returns
    the replies of every message sent and the first seq not used."""
    replies = {}
    for _ in range(TRIES):
        replies.update(end_together(open_sessions(d, first)))
        first += SESSIONS
        if int(d.status()["commit_batch_max"]) >= 2:
            break
    return replies, first


def check_acknowledged_only(d, replies):
    """250 exactly for the messages in new/; every other reply a 451."""
    files = stored(d)
    acked = {i for i, r in replies.items() if r.code == 250}
    assert set(files) == acked, \
        "acknowledged %s, in new/ %s" % (sorted(acked), sorted(files))
    for i, r in replies.items():
        if r.code != 250:
            assert r.matches("451 4.3.0"), "message %d: %r" % (i, r)
    d.maildir("alice").assert_clean()


def test_sessions_ending_together_share_one_batch(make_daemon):
    d = make_daemon()
    replies, _ = batch_of_several(d, 1)
    st = d.status()
    assert int(st["commit_batch_max"]) >= 2, \
        "no batch of several files in %d tries of %d sessions: %r" % (TRIES, SESSIONS, st)
    for i, r in replies.items():
        assert_reply(r, "250 2.0.0", "message %d" % i)
    assert set(stored(d)) == set(replies)
    assert int(st["commit_files"]) == len(replies)
    assert int(st["commit_batches"]) < len(replies)
    # This kernel has io_uring (Linux >= 5.10, not disabled): the ring ran.
    assert st["commit_syncs"] in ("io_uring", "serial")
    assert d.stop() == 0


@pytest.mark.parametrize("fault", ["uring:1:ENOSYS", "uring:4:EIO"],
                         ids=["no-io_uring", "io_uring_enter-fails"])
def test_without_io_uring_the_syncs_run_one_by_one(make_daemon, picomail_test_bin, fault):
    """uring:1 is io_uring_setup (a kernel without it, or a seccomp filter
    that refuses it); uring:4 is the first io_uring_enter, after the set-up
    and its two registrations: the ring is given up for good and the
    batch's syncs it did not finish run one by one."""
    d = make_daemon(binary=picomail_test_bin, env={"PICOMAIL_FAULT": fault})
    assert d.status()["commit_syncs"] == "untried"
    replies, first = batch_of_several(d, 1)
    assert int(d.status()["commit_batch_max"]) >= 2, "no batch formed"
    for i, r in replies.items():
        assert_reply(r, "250 2.0.0", "message %d" % i)
    assert d.status()["commit_syncs"] == "serial"
    assert "injected" in d.log() and fault.split(":")[0] in d.log()
    # And on: the next batch is synced the same way.
    more, _ = batch_of_several(d, first)
    replies.update(more)
    assert all(r.code == 250 for r in more.values())
    assert set(stored(d)) == set(replies)
    d.maildir("alice").assert_clean()
    assert d.stop() == 0


def batch_fsyncs(make_daemon, picomail_test_bin):
    """A traced run: the fsync call numbers of a batch of several files,
    counted from start-up (a first message makes the Maildir before)."""
    for _ in range(3):
        d = make_daemon(binary=picomail_test_bin, env={"PICOMAIL_FAULT_TRACE": "1"})
        end_together(open_sessions(d, 1, 1))
        pos = mark(d)
        end_together(open_sessions(d, 2), hold=d)
        st = d.status()
        calls = [n for op, n, _, _ in seam_calls(since(d, pos)) if op == "fsync"]
        d.stop()
        if int(st["commit_batch_max"]) == SESSIONS:
            return calls
    pytest.fail("the %d final dots never made one batch in 3 traced runs" % SESSIONS)


def faulted_batch(make_daemon, picomail_test_bin, n):
    """A daemon whose fsync call n fails, given one message and then a
    batch: (daemon, every reply, the batch's replies). The call numbers
    are those of one batch of SESSIONS files; when the dots of a run made
    two batches instead (a loaded machine), the numbers name other calls,
    so the run is tried again (bounded)."""
    for _ in range(3):
        d = make_daemon(binary=picomail_test_bin,
                        env={"PICOMAIL_FAULT": "fsync:%d:EIO" % n})
        replies = end_together(open_sessions(d, 1, 1))
        batch = end_together(open_sessions(d, 2), hold=d)
        replies.update(batch)
        check_acknowledged_only(d, replies)
        if int(d.status()["commit_batch_max"]) == SESSIONS:
            return d, replies, batch
        assert d.stop() == 0
    pytest.fail("fsync #%d: the %d final dots never made one batch in 3 runs"
                % (n, SESSIONS))


def test_a_fault_on_any_sync_of_a_batch_loses_only_what_it_refuses(make_daemon,
                                                                   picomail_test_bin):
    calls = batch_fsyncs(make_daemon, picomail_test_bin)
    # start of write-back + fdatasync per file, and the new/ directory once
    assert len(calls) == 2 * SESSIONS + 1, calls
    print("batch fsync calls", calls)
    partial = 0
    for n in calls:
        d, replies, batch = faulted_batch(make_daemon, picomail_test_bin, n)
        codes = [r.code for r in batch.values()]
        assert "fsync #%d" % n in d.log() and "injected EIO" in d.log(), \
            "fsync #%d was not reached" % n
        assert 451 in codes, "fsync #%d failed and no client heard of it" % n
        if 250 in codes and 451 in codes:
            partial += 1
        # The daemon goes on: the next message is taken.
        after = end_together(open_sessions(d, 100, 1))
        assert_reply(after[100], "250 2.0.0", "after fsync #%d failed" % n)
        check_acknowledged_only(d, {**replies, **after})
        assert d.stop() == 0
    # A file's own sync failing refuses that message alone (the batches
    # that formed had their other files acknowledged).
    print("runs with a partial batch: %d of %d" % (partial, len(calls)))
    assert partial > 0, "no run had a batch in which one file failed and others succeeded"


# ---- the loop while a batch is in flight -----------------------------------

def whole(d, seq):
    for m in d.maildir("alice").messages():
        if seq_of(m.body) == seq:
            return is_complete(m.data, seq)
    return False


def test_the_loop_serves_other_sessions_while_a_batch_syncs(make_daemon):
    d = make_daemon(max_message_size="200M")
    other = d.session()
    c, seq = in_flight(d, 1)
    # The loop answers while the batch's fdatasync is in flight: a NOOP,
    # and a whole transaction, whose final dot waits for the next batch.
    assert_reply(other.cmd("NOOP"), "250", "NOOP during the commit")
    other.expect("MAIL FROM:<sender@example.org>", "250")
    other.expect("RCPT TO:<alice@lan>", "250")
    other.expect("DATA", "354")
    other.send(stuff(numbered(100, 2000)) + b".\r\n")
    st = d.status()
    held = int(st["commit_in_flight"]) > 0
    assert_reply(c.reply(timeout=scaled(60)), "250 2.0.0", "the big message")
    assert_reply(other.reply(timeout=scaled(60)), "250 2.0.0", "the message sent meanwhile")
    assert whole(d, seq) and whole(d, 100)
    print("commit still in flight after the other transaction: %s" % held)
    d.maildir("alice").assert_clean()
    assert int(d.status()["commit_in_flight"]) == 0
    assert d.stop() == 0


def test_a_client_gone_while_its_batch_syncs_still_gets_its_mail_stored(make_daemon):
    d = make_daemon(max_message_size="200M")
    # Another client connected: alone, a session's batch is synced without
    # the ring (nothing else needs the loop meanwhile).
    idle = d.session()
    seq, answered = reset_while_in_flight(d, 1)
    # Delivered, whole, once; nobody heard 250 (a retry would deliver it
    # twice, which RFC 5321 prefers to a loss), and the log says so.
    assert whole(d, seq)
    assert all(whole(d, k) for k in answered), answered
    assert "ack=\"none: the client was gone before the reply\"" in d.log(1 << 20)
    d.maildir("alice").assert_clean()
    # The session went back to the pool, once: every connection can be
    # used again, and the daemon takes the next message.
    st = d.status()
    assert st["connections"] == "1" and st["pool.conn"].startswith("1/"), st
    idle.expect("QUIT", "221")
    idle.close()
    after = end_together(open_sessions(d, 200, 1))
    assert_reply(after[200], "250 2.0.0", "the next message")
    assert d.stop() == 0


def test_sigterm_while_a_batch_syncs_finishes_it_first(make_daemon):
    d = make_daemon(max_message_size="200M")
    idle = d.session()   # (see above)
    c, seq = in_flight(d, 1)
    d.send_signal(signal.SIGTERM)
    # The batch completes before the daemon exits: the client hears the
    # 250 its message earned, then the shutdown.
    assert_reply(c.reply(timeout=scaled(60)), "250 2.0.0", "the message in flight at SIGTERM")
    assert c.closed(scaled(10)), "the session was not closed at shutdown"
    assert idle.closed(scaled(10)), "the idle session was not closed at shutdown"
    assert d.stop(timeout=30) == 0
    assert whole(d, seq)
    d.maildir("alice").assert_clean()
