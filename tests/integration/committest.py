"""The moment a group commit is in flight, for test_group_commit.py and
test_queue_commit.py: a session whose BIG message's syncs are on the disk,
seen in `picomail status` (commit_in_flight), with the loop expected to
serve meanwhile.  Every wait is bounded."""

import os
import select
import socket
import struct
import time

import pytest

from picotest import assert_reply, numbered, scaled, stuff

BIG = 96 << 20       # whose fdatasync takes some 50 ms or more on a real disk
FLIGHT_TRIES = 5


def send_big_then_dot(d, seq, rcpt):
    """A session that sent a BIG message to rcpt and its final dot; returns
    it once `picomail status` shows the batch in flight, or None when the
    sync was over before status could see it (a disk, or tmpfs, faster
    than a status call)."""
    c = d.session()
    c.expect("MAIL FROM:<sender@example.org>", "250")
    c.expect("RCPT TO:<%s>" % rcpt, "250")
    c.expect("DATA", "354")
    c.send(stuff(numbered(seq, BIG)))
    c.send(b".\r\n")
    deadline = time.monotonic() + scaled(30)
    while time.monotonic() < deadline:
        if int(d.status()["commit_in_flight"]) > 0:
            return c
        r, _, _ = select.select([c.sock], [], [], 0)
        if r:
            # Answered already: the batch came and went between two
            # status calls.
            assert_reply(c.reply(), "250 2.0.0", "message %d" % seq)
            c.close()
            return None
        time.sleep(0.005)
    pytest.fail("message %d: no batch in flight and no reply in 30 s" % seq)


def sync_seconds(d):
    """How long this file system takes to fdatasync BIG bytes, measured in
    the daemon's directory."""
    path = os.path.join(d.dir, "sync-probe")
    chunk = b"x" * (1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(BIG >> 20):
            os.write(fd, chunk)
        t = time.monotonic()
        os.fdatasync(fd)
        return time.monotonic() - t
    finally:
        os.close(fd)
        os.unlink(path)


def in_flight(d, first, rcpt="alice@lan"):
    """A daemon's session whose BIG message to rcpt is in flight (bounded
    tries): (client, seq).  Skips where this machine's disk syncs too fast
    for the moment to be caught (tmpfs); where it is slow enough, a daemon
    whose loop waited for the disk fails here."""
    took = sync_seconds(d)
    if took < 0.03:
        pytest.skip("this file system syncs %d MiB in %.0f ms: too fast to catch a batch "
                    "in flight" % (BIG >> 20, took * 1000))
    for seq in range(first, first + FLIGHT_TRIES):
        c = send_big_then_dot(d, seq, rcpt)
        if c is not None:
            return c, seq
    pytest.fail("a %d MiB fdatasync takes %.0f ms here, yet `picomail status` never ran "
                "while one was in flight in %d tries: the loop waited for the disk"
                % (BIG >> 20, took * 1000, FLIGHT_TRIES))


def reset_in_flight(d, c):
    """The client c resets its connection (RST) while its message's batch
    is in flight: the worst moment, the file complete, its batch on the
    disk's way, its session waiting for the result.  Returns once the
    batch has ended (bounded): True, or False when the moment was missed,
    the reply being there already (the batch ended between the status
    call that saw it and now: a test process held up for a while, as
    under a loaded CI, sees that); the reply is then read, a 250."""
    r, _, _ = select.select([c.sock], [], [], 0)
    if r:
        assert_reply(c.reply(), "250 2.0.0", "the message whose reset came too late")
        c.close()
        return False
    # From here to the RST only microseconds pass, against the tens of
    # milliseconds of the batch's syncs.
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    deadline = time.monotonic() + scaled(60)
    left = 1
    while left > 0 and time.monotonic() < deadline:
        # (seen once at 0 is enough: a queued message's first run may put
        # its envelope in the next batch right after)
        left = int(d.status()["commit_in_flight"])
        time.sleep(0.01)
    assert left == 0, "the batch never ended"
    return True


def reset_while_in_flight(d, first, rcpt="alice@lan"):
    """A client that resets while its BIG message's batch is in flight
    (bounded tries): (seq, answered), its message's number and the set of
    those answered 250 on the way, whose moment was missed."""
    answered = set()
    seq = first
    for _ in range(FLIGHT_TRIES):
        c, got = in_flight(d, seq, rcpt)
        answered |= set(range(seq, got))    # in_flight's own misses: answered
        if reset_in_flight(d, c):
            return got, answered
        answered.add(got)
        seq = got + 1
    pytest.fail("in %d tries, the batch of a %d MiB message always ended before its "
                "client could reset" % (FLIGHT_TRIES, BIG >> 20))
