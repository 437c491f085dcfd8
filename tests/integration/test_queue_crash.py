"""The queue across kill -9 and restarts (issue 5): nothing acknowledged is
lost, nothing is left half-written, and a message is delivered at least
once -- exactly once unless the kill falls between the end of the data
and the peer's 250 (the "final 250 window").

The smarthost is relaypeer.py (aiosmtpd).  When the connection drops
while its handler waits before the 250, the handler is cancelled and the
message is not recorded, as a real MTA would drop it; so a copy at the
peer means picomail saw (or could have seen) the 250.
PICOMAIL_SEED fixes the kill timings of the random rounds.
"""

import os
import random
import signal
import time

import pytest

from picotest import lf, message, numbered, seq_of
from relaytest import Spool, queue_id_of, relay_daemon, submit, wait_for, wait_queue_empty


pytestmark = pytest.mark.usefixtures("need_aiosmtpd")


def relayed_ids(d):
    """The messages the log says were sent to the smarthost."""
    return {e["id"] for e in d.events("relayed", status="sent")}


def kill9(d):
    os.kill(d.pid, signal.SIGKILL)
    d.proc.wait(10)
    d.logf.close()


def test_kill9_while_the_smarthost_holds_the_250(make_daemon, peers):
    peer = peers(sleep_data=2.5, sleep_count=1)
    d = relay_daemon(make_daemon, "127.0.0.1:%d" % peer.port)
    data = message("crash in data", headers=b"X-Marker: kill9\r\n")
    qid = queue_id_of(submit(d, ["bob@remote.test", "alice@lan"], data))

    wait_for(lambda: peer.events("data-end"), 5, "the message's data at the smarthost")
    # picomail now waits for the reply to its final dot.
    kill9(d)
    sp = Spool(d)
    left = sp.assert_consistent(allow_tmp=True)
    assert left == [qid], "the queued message must survive the kill: %r" % left
    env = sp.envelope(qid)
    assert [r[2] for r in env["rcpts"] if r[0] == "P"] != [], env
    local_before = len(d.maildir("alice").messages())

    d.start()
    got = peer.wait_messages(1, timeout=6)
    wait_queue_empty(d)
    time.sleep(1.2)
    got = peer.messages()
    assert any(e == "aborted" for _, e, _ in peer.events()), peer.describe()
    assert len(got) == 1, "want exactly one copy at the smarthost:\n" + peer.describe()
    assert got[0]["rcpt_tos"] == ["bob@remote.test"], got[0]
    assert b"X-Marker: kill9" in got[0]["bytes"]
    assert sp.names("msg") == [] and sp.names("env") == [] and sp.names("tmp") == [], \
        (sp.names("msg"), sp.names("env"), sp.names("tmp"))
    local = d.maildir("alice").messages()
    assert local_before == 1, \
        "alice's copy was delivered before the remote attempt (%d)" % local_before
    assert len(local) == 1, (
        "alice@lan got %d copies: the local recipient was delivered before the kill "
        "(outside any 250 window) and again after the restart -- the envelope is not "
        "rewritten after the local delivery, so the restart sees alice still pending" %
        len(local))


def test_kill9_rounds_lose_nothing(make_daemon, peers):
    rng = random.Random(os.environ.get("PICOMAIL_SEED"))
    n = 16
    peer = peers(sleep_data=0.3)
    d = relay_daemon(make_daemon, "127.0.0.1:%d" % peer.port)
    for i in range(n):
        submit(d, ["r%d@remote.test" % i], numbered(i, 3000))
    kills = 0
    for rnd in range(3):
        time.sleep(rng.uniform(0.2, 0.5))
        kill9(d)
        kills += 1
        # Relayed to its one recipient, a message's files go (queue_remove,
        # the envelope first), and the kill may come between the two: its
        # message file is left, which no run sends, and which a start
        # removes once it is an hour old (queue.c, clean_orphan_one).
        Spool(d).assert_consistent(allow_tmp=True, done=relayed_ids(d))
        d.start()
    wait_queue_empty(d, timeout=20)
    Spool(d).assert_consistent(done=relayed_ids(d))
    seqs = [seq_of(lf(m["bytes"])) for m in peer.messages()]
    missing = sorted(set(range(n)) - set(seqs))
    assert not missing, "messages lost across kill -9: %r\n%s" % (missing, peer.describe())
    dups = len(seqs) - len(set(seqs))
    # Each kill can catch at most queue_runners (2) messages in their 250 window.
    assert dups <= 2 * kills, "%d duplicates after %d kills: %r" % (dups, kills, sorted(seqs))
    for m in peer.messages():
        i = seq_of(lf(m["bytes"]))
        assert m["bytes"].endswith(b"END %d\r\n" % i), "message %d truncated" % i


def test_start_cleans_tmp_and_leaves_bad_envelopes_alone(make_daemon, peers):
    peer = peers()
    d = relay_daemon(make_daemon, "127.0.0.1:%d" % peer.port, start=False)
    sp = d.spool
    for sub in ("tmp", "msg", "env"):
        os.makedirs(os.path.join(sp, sub), exist_ok=True)
    with open(os.path.join(sp, "tmp", "HALFWRITTEN"), "wb") as f:
        f.write(b"Subject: half\n\npartial")
    # A truncated envelope (no "end") with its message: never half-read.
    with open(os.path.join(sp, "msg", "TRUNCATED1"), "wb") as f:
        f.write(b"Subject: truncated\n\nbody\n")
    with open(os.path.join(sp, "env", "TRUNCATED1"), "w") as f:
        f.write("picomail-queue 1\narrival %d\nsender alice@lan\nattempts 0\nnext 0\n"
                "rcpt PR trunc@remote.test\n" % int(time.time()))
    d.start()
    time.sleep(1.0)
    assert os.listdir(os.path.join(sp, "tmp")) == [], "tmp/ not cleaned at start"
    assert peer.messages() == [], "a truncated envelope was delivered"
    assert os.path.exists(os.path.join(sp, "env", "TRUNCATED1")), "a bad envelope was removed"
    assert "TRUNCATED1" in d.log(20000), "the bad envelope is not named in the log"
    # The daemon goes on: a new message is relayed.
    submit(d, ["fine@remote.test"], message("after the junk"))
    peer.wait_messages(1)
