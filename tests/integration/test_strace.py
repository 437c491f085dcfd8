"""Exact crash points with strace (issue 8), on the static production
binary: no test build, no seam.

Kills: `strace -f -e inject=SYSCALL:signal=SIGKILL:when=N` kills the daemon
on entry to its Nth fsync, fdatasync, rename, link, linkat (an unnamed
file given its name in new/), unlink or write.  For one SMTP delivery (to
alice and bob, the first mail of both), one SMTP message to a remote
recipient (into the queue, whose smarthost is down), one queue run (a
queued message flushed to an aiosmtpd smarthost) and one POP3 session
(login, DELE 1 and 3, QUIT), N walks from 1 until the kill no longer falls
within the scenario.  After each kill, on the files as they are and again
after a restart:
  - acknowledged (250, +OK) => present exactly once (POP3: gone);
  - not acknowledged => no partial file visible, each recipient holds the
    message at most once; POP3 messages not DELE'd are all there, and the
    DELE'd ones only go if the QUIT was sent;
  - the queue: the message is queued (whole envelope and message) or at the
    smarthost; a second copy only when the kill fell after the smarthost
    had it; a message taken into the queue is there once, whole with its
    envelope, if acknowledged, and at most once if not (or a message
    file without its envelope, which no run sends);
and the next try succeeds.

Errors: `strace -e inject=SYSCALL:error=EIO:when=N` walks the same calls
making each fail in turn, as the seam does in test_faults.py: the client
gets a 4xx/-ERR (or nothing is lost, where the call was a log line),
nothing partial is visible, the daemon goes on, the next try succeeds.
"""

import os
import time

import pytest

from faultwalk import (Delivery, Pop3Quit, QueueWrite, RelaySent, TracedDaemon, queue_state,
                       read_env, seqs_in,
                       spool_names, strace_path, tmp_files, world_of)
from picotest import BIN, SANITIZED, Daemon, DaemonExited, ServerClosed
from pop3test import PASSWORD, Pop

SYSCALLS = ("fsync", "fdatasync", "rename", "link", "linkat", "unlink", "write")
LIMIT = 80           # N never gets near this: a walk that does is a bug here
WALKED = {}
ORPHANS = []


@pytest.fixture(scope="module")
def world(password_hash):
    if SANITIZED:
        pytest.skip("strace walks the static production binary, not this one (%s)" % SANITIZED)
    if strace_path() is None:
        pytest.fail("strace is missing: bash board/common/deps.sh test", pytrace=False)
    t0 = time.monotonic()
    with world_of("pm-strace-", password_hash) as w:
        yield w
    print("\nstrace walks (points within each scenario): %s; %d message files left "
          "without an envelope; %.1f s" % (WALKED, len(ORPHANS), time.monotonic() - t0))


def traced(runs, sc, inject):
    d = runs.daemon(binary=BIN, extra=sc.extra(), cls=TracedDaemon)
    sys_name = inject.split(":", 1)[0].split("=", 1)[1]
    d.strace_args = ["-e", "trace=%s" % sys_name, "-e", inject]
    sc.prepare(d)
    return d


def plain(d):
    """The same daemon directory, run without strace."""
    d.__class__ = Daemon
    d.start()
    return d


# --------------------------------------------------------------------------
# What each scenario's client does when the server may die under it


def act_delivery(sc, d):
    return {"acked": sc.act(d).kind == "ok"}


def act_relay(sc, d):
    try:
        sc.flush(d)
    except OSError:
        pass        # killed before the control socket answered
    return {"sent_at_kill": sc.at_peer()}


def act_pop3(sc, d):
    seen = {"stage": "connect", "quit_sent": False, "quit_ok": False}
    try:
        p = Pop(d.pop3_port, timeout=3)
        try:
            p.ok("USER alice")
            r = p.cmd("PASS %s" % PASSWORD)
            seen["stage"] = "login" if r.startswith("+OK") else "login refused"
            if r.startswith("+OK"):
                for n, uid in sorted(p.uidl().items()):
                    if sc.seeds.uid_seq.get(uid) in sc.DELETE:
                        p.ok("DELE %d" % n)
                p.send(b"QUIT\r\n")
                seen["quit_sent"] = True
                seen["quit_ok"] = p.status().startswith("+OK")
        finally:
            p.close()
    except (OSError, ServerClosed, AssertionError):
        pass
    return seen


ACT = {"delivery": act_delivery, "queue_write": act_delivery, "relay_sent": act_relay,
       "pop3_quit": act_pop3}


# --------------------------------------------------------------------------
# The promise after a kill


def promise(sc, d, seen, when):
    """Checks the files; returns what the next try must start from."""
    if sc.name == "delivery":
        held = {}
        for u in sc.USERS:
            got = seqs_in(d.mail_root, u)      # fails on a partial file
            if seen["acked"]:
                assert got == {sc.SEQ: 1}, "%s: acknowledged, but %s holds %r" % (when, u, got)
            else:
                assert got in ({}, {sc.SEQ: 1}), "%s: %s holds %r" % (when, u, got)
            held[u] = got.get(sc.SEQ, 0)
        return held
    if sc.name == "queue_write":
        q, orphans = queue_state(d.spool)
        for qid, (e, seq, ok) in q.items():
            assert e["complete"] and ok and seq == sc.SEQ, "%s: %s queued as %r" % (when, qid, q)
        if seen["acked"]:
            assert len(q) == 1, "%s: acknowledged, but queued %d times" % (when, len(q))
            assert orphans == [], "%s: acknowledged, and a message file lacks its envelope: %r" % (
                when, orphans)
        else:
            # killed between the message's rename into msg/ and its
            # envelope's into env/: a message file no run sends, removed
            # at a start an hour later
            assert len(q) + len(orphans) <= 1, "%s: %r, %r" % (when, q, orphans)
        return {"queued": len(q), "orphans": len(orphans)}
    if sc.name == "relay_sent":
        at = sc.at_peer()
        assert at <= 1, "%s: %d copies at the smarthost after one run" % (when, at)
        e = read_env(d.spool, sc.qid)
        if e is not None:
            assert e["complete"], "%s: truncated envelope:\n%s" % (when, e["text"])
            assert os.path.exists(os.path.join(d.spool, "msg", sc.qid)), \
                "%s: envelope without its message" % when
        queued = e is not None and any(r[0] == "P" for r in e["rcpts"])
        assert at == 1 or queued, "%s: neither at the smarthost nor queued: lost" % when
        return {"at": at, "queued": queued}
    # pop3_quit
    got = seqs_in(d.mail_root, "alice")
    keep = set(sc.seeds.POP_SEQS) - set(sc.DELETE)
    assert all(got.get(i) == 1 for i in keep), "%s: a message never DELE'd is gone: %r" % (
        when, got)
    assert all(c == 1 for c in got.values()), got
    gone = set(sc.DELETE) - set(got)
    if seen["quit_ok"]:
        assert not (set(sc.DELETE) & set(got)), "%s: +OK to QUIT, yet %r remain" % (when, got)
    elif not seen["quit_sent"]:
        assert not gone, "%s: deleted without a QUIT: %r" % (when, gone)
    return {"gone": gone}


def next_try(sc, d, seen, held):
    if sc.name == "delivery":
        if not seen["acked"]:
            assert sc.act(d).kind == "ok", "the next try"
        for u in sc.USERS:
            got = seqs_in(d.mail_root, u)
            # a recipient the crashed attempt had reached gets it again
            want = 1 + (held[u] if not seen["acked"] else 0)
            assert got == {sc.SEQ: want}, "%s after the next try: %r (want %d)" % (u, got, want)
        return
    if sc.name == "queue_write":
        if not seen["acked"]:
            assert sc.act(d).kind == "ok", "the next try"
        q, orphans = queue_state(d.spool)
        # a copy the crashed attempt had queued stays queued (the kill fell
        # between the commit and the 250), as a Maildir keeps its copy
        want = 1 + (held["queued"] if not seen["acked"] else 0)
        assert len(q) == want and all(e["complete"] and ok and seq == sc.SEQ
                                      for e, seq, ok in q.values()), (want, q)
        if orphans:
            ORPHANS.extend(orphans)
        return
    if sc.name == "relay_sent":
        for _ in range(3):
            if read_env(d.spool, sc.qid) is None:
                break
            sc.flush(d)
        copies = sc.at_peer()
        dup_ok = held["at"] == 1 and held["queued"]   # the 250 window
        assert copies == 1 or (copies == 2 and dup_ok), \
            "%d copies at the smarthost (at the kill: %r)" % (copies, held)
        assert sc.qid not in spool_names(d.spool, "env"), "still queued"
        if sc.qid in spool_names(d.spool, "msg"):
            # killed between the two unlinks of queue_remove: a message
            # file no run sends, removed at a start an hour later
            assert held["at"] == 1 and not held["queued"], held
            ORPHANS.append(sc.qid)
        return
    if not seen["quit_ok"]:
        sc.retry(d)
    sc.check_done(d)


def kill_run(runs, sc, sysc, n):
    """'start-up', 'killed' or 'past' (the scenario ran through)."""
    inject = "inject=%s:signal=SIGKILL:when=%d" % (sysc, n)
    d = traced(runs, sc, inject)
    try:
        d.start()
    except DaemonExited as e:
        assert e.returncode == -9, "start-up with %s: exit %r" % (inject, e.returncode)
        plain(d)        # the start-up it killed left nothing that stops the next
        assert d.stop() == 0
        runs.drop(d)
        return "start-up"
    seen = ACT[sc.name](sc, d)
    time.sleep(0.03)
    if not d.killed():
        # past the scenario's last call: it must have gone through
        d.stop()
        held = promise(sc, d, seen, "no kill")
        done = {"delivery": lambda: seen["acked"], "queue_write": lambda: seen["acked"],
                "relay_sent": lambda: held["at"] == 1,
                "pop3_quit": lambda: seen["quit_ok"]}[sc.name]()
        assert done, "%s: no kill, yet the scenario did not go through: %r %r" % (
            inject, seen, held)
        runs.drop(d)
        return "past"
    d.proc.wait(5)
    d.logf.close()
    when = "%s, killed at: %s" % (inject, d.injected())
    try:
        held = promise(sc, d, seen, when + " (as left)")
        plain(d)
        assert all(tmp_files(d.mail_root, u) == [] for u in ("alice", "bob")), "tmp/ at start"
        held2 = promise(sc, d, seen, when + " (after the restart)")
        assert held2 == held or sc.name == "relay_sent", (held, held2)
        next_try(sc, d, seen, held)
    except AssertionError as e:
        raise AssertionError("%s\n%s" % (e, d.log())) from None
    assert d.stop() == 0
    runs.drop(d)
    return "killed"


def injections(d):
    with open(d.strace_out) as f:
        return f.read().count("(INJECTED)")


def error_run(runs, sc, sysc, n):
    """'start-up', 'failed' (injected in the scenario) or 'past'."""
    inject = "inject=%s:error=EIO:when=%d" % (sysc, n)
    d = traced(runs, sc, inject)
    try:
        d.start()
    except DaemonExited as e:
        assert e.returncode > 0, "start-up with %s died of signal %d" % (inject, -e.returncode)
        runs.drop(d)
        return "start-up"
    before = injections(d)
    o = sc.act(d)
    hit = injections(d) > before
    try:
        if not hit:
            # past the scenario, or a start-up call the daemon could do
            # without (a log line, removing a socket that was not there):
            # either way the scenario must go through untouched
            assert sc.check_failed(d, o, None) in ("tolerated", "sent"), (inject, o)
            # (not SIGTERM: past the scenario, N may be the write of the
            # signal handler to its self-pipe, which cannot fail for real)
            d.kill()
            runs.drop(d)
            return "start-up" if before else "past"
        assert d.alive(), "daemon died"
        if sc.check_failed(d, o, "EIO") != "tolerated":
            sc.retry(d)
        sc.check_done(d)
    except AssertionError as e:
        raise AssertionError("%s (at: %s): %s\n%s" % (inject, d.injected(), e, d.log())) from None
    assert d.stop() == 0
    runs.drop(d)
    return "failed"


def walk(fn, runs, sc, sysc):
    out = {}
    for n in range(1, LIMIT):
        r = fn(runs, sc, sysc, n)
        out[r] = out.get(r, 0) + 1
        if r == "past":
            return out
    raise AssertionError("%s %s: still hitting after %d calls" % (sc.name, sysc, LIMIT))


SC = [Delivery, QueueWrite, RelaySent, Pop3Quit]


@pytest.mark.parametrize("scenario", SC, ids=[s.name for s in SC])
def test_kill_on_entry_to_each_call(world, scenario):
    runs, seeds, peer = world
    sc = scenario(seeds, peer)
    walked = {}
    for sysc in SYSCALLS:
        out = walk(kill_run, runs, sc, sysc)
        walked[sysc] = out.get("killed", 0)
    WALKED["kill " + sc.name] = walked
    print("kill %s: %r" % (sc.name, walked))
    assert sum(walked.values()) >= 5 and walked["write"] > 0, walked


@pytest.mark.parametrize("scenario", SC, ids=[s.name for s in SC])
def test_eio_on_each_call(world, scenario):
    runs, seeds, peer = world
    sc = scenario(seeds, peer)
    walked = {}
    for sysc in SYSCALLS:
        out = walk(error_run, runs, sc, sysc)
        walked[sysc] = out.get("failed", 0)
    WALKED["EIO " + sc.name] = walked
    print("EIO %s: %r" % (sc.name, walked))
    assert sum(walked.values()) >= 3, walked
