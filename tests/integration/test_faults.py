"""Fault walking (issue 8, Faults): every file-system call of a scenario,
failed in turn with EIO, ENOSPC and EDQUOT through the test build's seam
(PICOMAIL_FAULT=op:N:ERRNO).

For each scenario of faultwalk.py a first run with PICOMAIL_FAULT_TRACE=1
lists the scenario's calls: op, N (counted from the daemon's start) and
file.  Then, for every (op, N) and every errno, a fresh daemon runs the
scenario with that one call failing, and:

  - the seam's log shows the fault landed on that call;
  - the client sees a 4xx (-ERR for POP3), or for a queue run the message
    stays queued (or, if the fault came after the smarthost's 250, was sent
    once); nothing partial is visible in new/, cur/ or the spool;
  - the daemon is still up; the next try succeeds and leaves exactly one
    copy; SIGTERM then stops it with status 0.

The walk ends where the fault no longer fires: op:N+1 after the scenario's
last call of op is not injected within the scenario, which succeeds.
test_durability.py covers faults during start-up and across several
messages; this file covers each call of one operation, exhaustively.
"""

import os

import pytest

from faultwalk import ERRNOS, SCENARIOS, mark, seam_calls, shape, since, world_of
from picotest import TEST_BIN

OPS = ("open", "write", "fsync", "rename", "link", "mkdir", "unlink")
WALKED = {}     # scenario -> {op: calls}, for the summary


@pytest.fixture(scope="module")
def world(password_hash):
    if not os.access(TEST_BIN, os.X_OK):
        pytest.fail("%s is missing: run make" % TEST_BIN, pytrace=False)
    with world_of("pm-faults-", password_hash, reject_rcpt=["gone@remote.test"]) as w:
        yield w
    if WALKED:
        total = sum(sum(v.values()) for v in WALKED.values())
        print("\nfault points walked (x %d errnos): %s; total %d" % (
            len(ERRNOS), WALKED, total))


def start(runs, sc, env):
    d = runs.daemon(binary=TEST_BIN, env=env, extra=sc.extra())
    sc.prepare(d)
    d.start()
    return d


def traced(runs, sc):
    """The scenario's calls: [(op, n, path)], and per op the count before
    it started."""
    d = start(runs, sc, {"PICOMAIL_FAULT_TRACE": "1"})
    pos = mark(d)
    o = sc.act(d)
    text = since(d, pos)
    assert o.kind == "ok", "%s without a fault: %r\n%s" % (sc.name, o, text[-3000:])
    window = [c[:3] for c in seam_calls(text[:sc.window_end(text)])]
    baseline = sc.check_failed(d, o, None)   # what the act alone leaves
    if baseline != "tolerated":              # (relay_deferred: still queued)
        sc.retry(d)
    sc.check_done(d)
    before = {}
    for op, n, _, _ in seam_calls(since(d, 0)[:pos], files_only=False):
        before[op] = max(before.get(op, 0), n)
    assert d.stop() == 0
    runs.drop(d)
    return window, before, baseline


def context(d, pos):
    return "\n-- daemon log since the scenario began --\n" + since(d, pos)[-4000:]


def faulted_run(runs, sc, op, n, path, err):
    fault = "%s:%d:%s" % (op, n, err)
    d = start(runs, sc, {"PICOMAIL_FAULT": fault})
    pos = mark(d)
    o = sc.act(d)
    text = since(d, pos)
    fired = [c for c in seam_calls(text, files_only=False) if c[3]]
    assert fired, "%s: %s did not fire (walk out of step)%s" % (sc.name, fault, context(d, pos))
    assert fired[0][:2] == (op, n) and shape(fired[0][2]) == shape(path), \
        "%s: %s landed on %r, the trace said %s" % (sc.name, fault, fired[0], path)
    try:
        what = sc.check_failed(d, o, err, op)
        assert d.alive(), "daemon died"
        sc.retry(d)
        sc.check_done(d)
    except AssertionError as e:
        raise AssertionError("%s, %s on %s: %s%s" % (sc.name, fault, path, e,
                                                     context(d, pos))) from None
    assert d.stop() == 0, "%s: exit status after SIGTERM%s" % (fault, context(d, pos))
    runs.drop(d)
    return what


def past_the_end(runs, sc, op, n, baseline):
    """op:n is after the scenario's last call of op: nothing fires within
    the scenario, which ends as it does without a fault."""
    fault = "%s:%d:EIO" % (op, n)
    d = start(runs, sc, {"PICOMAIL_FAULT": fault})
    pos = mark(d)
    o = sc.act(d)
    text = since(d, pos)
    text = text[:sc.window_end(text)]
    assert not [c for c in seam_calls(text) if c[3]], \
        "%s: %s fired: the walk missed calls%s" % (sc.name, fault, context(d, pos))
    assert o.kind == "ok", "%s with %s: %r%s" % (sc.name, fault, o, context(d, pos))
    assert sc.check_failed(d, o, None) == baseline
    assert d.stop() == 0
    runs.drop(d)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_fault_walk(world, scenario):
    runs, seeds, peer = world
    sc = scenario(seeds, peer)
    window, before, baseline = traced(runs, sc)
    counts = {}
    for op, _, _ in window:
        counts[op] = counts.get(op, 0) + 1
    assert window, "%s: no file-system call traced" % sc.name
    outcomes = {}
    for op, n, path in window:
        if op not in OPS:
            continue          # getrandom, uring: walked by test_tls.py, test_group_commit.py
        for err in ERRNOS:
            what = faulted_run(runs, sc, op, n, path, err)
            outcomes.setdefault(what, []).append("%s:%d:%s %s" % (op, n, err, path))
    for op in OPS:
        last = max([n for o, n, _ in window if o == op] + [before.get(op, 0)])
        past_the_end(runs, sc, op, last + 1, baseline)
    WALKED[sc.name] = {op: counts.get(op, 0) for op in OPS if counts.get(op)}
    print("%s: %d calls %s; outcomes %s" % (sc.name, len(window), WALKED[sc.name],
                                            {k: len(v) for k, v in outcomes.items()}))
    # A fault the client never hears of is only allowed where it loses
    # nothing: the removal of a file whose work is done.
    tolerated = outcomes.get("tolerated", [])
    assert all(t.startswith("unlink:") for t in tolerated), \
        "%s: faults with no error to the client: %r" % (sc.name, tolerated)
