"""Fault walking for IMAP (issue 16): every file-system call of a SELECT that
gives UIDs, an APPEND, a STORE, an EXPUNGE and a MOVE, failed in turn with
EIO, ENOSPC and EDQUOT through the test build's seam, with test_faults.py's
machinery (faultwalk.py's IMAP scenarios):

  - the client hears NO [UNAVAILABLE] (EIO) or NO [OVERQUOTA] (a full disk
    or quota), never a dropped connection, and the daemon goes on;
  - nothing is half done: every message is in its folders exactly once,
    complete, nothing is left in tmp/, no UID is given twice, and none is
    at or past the folder's picomail-uids;
  - the next try succeeds, and leaves the change made once.
"""

import os
import shutil
import tempfile
import types

import pytest

from faultwalk import ERRNOS, IMAP_SCENARIOS, ImapSeeds, Runs
from picotest import TEST_BIN
from test_faults import OPS, faulted_run, past_the_end, traced

WALKED = {}


@pytest.fixture(scope="module")
def world(password_hash):
    if not os.access(TEST_BIN, os.X_OK):
        pytest.fail("%s is missing: run make" % TEST_BIN, pytrace=False)
    base = tempfile.mkdtemp(prefix="pm-ifaults-", dir="/tmp")
    runs = Runs(base, password_hash)
    try:
        yield runs, types.SimpleNamespace(imap=ImapSeeds(runs))
    finally:
        runs.close()
        if os.environ.get("PICOMAIL_KEEP"):
            print("kept", base)
        else:
            shutil.rmtree(base, ignore_errors=True)
    if WALKED:
        print("\nIMAP fault points walked (x %d errnos): %s" % (len(ERRNOS), WALKED))


@pytest.mark.parametrize("scenario", IMAP_SCENARIOS, ids=[s.name for s in IMAP_SCENARIOS])
def test_imap_fault_walk(world, scenario):
    runs, seeds = world
    sc = scenario(seeds, None)
    window, before, baseline = traced(runs, sc)
    counts, outcomes = {}, {}
    for op, _, _ in window:
        counts[op] = counts.get(op, 0) + 1
    assert window, "%s: no file-system call traced" % sc.name
    for op, n, path in window:
        if op not in OPS:
            continue
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
    # nothing: the removal of a file whose work is done, or a read (the UID
    # file, a directory listing) of the look at the folder after a command
    # that is done and durable already: that look is made again next time.
    tolerated = outcomes.get("tolerated", [])
    assert all(t.startswith("unlink:") or (t.startswith("open:") and t.endswith(
        ("/picomail-uids", "/cur", "/new"))) for t in tolerated), \
        "%s: faults with no error to the client: %r" % (sc.name, tolerated)
