"""Fixtures of the firmware lab (tests/firmware/README.md).

    board      each board of FIRMWARE_BOARDS (default: all four), its tests
               kept in one pytest-xdist worker (xdist_group), so a board's
               guests run one at a time and two boards run side by side
    workdir    a private directory under build/firmware/<board>/runs/
    sink       the relay sink: tests/integration/relaypeer.py (aiosmtpd) on
               a 127.0.0.1 port, stopped by its PID
    record     record(key, value): a figure for the report
               (build/firmware/results/<board>.json, printed by report.py)

Every test is bounded (FIRMWARE_TEST_TIMEOUT, default 900 s); every qemu is
killed by its PID when its test ends.
"""

import json
import os
import shutil
import signal
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from boards import BOARDS  # noqa: E402
from lab import RESULTS  # noqa: E402

SELECTED = os.environ.get("FIRMWARE_BOARDS", " ".join(BOARDS)).split()
TEST_TIMEOUT = int(os.environ.get("FIRMWARE_TEST_TIMEOUT", "900"))


@pytest.fixture(autouse=True, scope="module")
def _no_guest_left():
    """Whatever a failure left running is killed by its PID."""
    yield
    import lab
    lab.kill_all()


@pytest.fixture(autouse=True)
def _deadline():
    def expired(signum, frame):
        raise TimeoutError("test ran longer than %d s" % TEST_TIMEOUT)
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIMEOUT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module", params=[pytest.param(b, marks=pytest.mark.xdist_group(b)) for b in SELECTED])
def board(request):
    if request.param not in BOARDS:
        pytest.fail("unknown board %s in FIRMWARE_BOARDS" % request.param)
    if not os.path.exists(os.path.join(ROOT, "build", "firmware", request.param, "info.json")):
        pytest.fail("no boot image for %s: make test-firmware builds it (tests/firmware/fwimage.py)" % request.param)
    return request.param


@pytest.fixture
def workdir(board, request):
    base = os.path.join(ROOT, "build", "firmware", board, "runs")
    os.makedirs(base, exist_ok=True)
    d = tempfile.mkdtemp(prefix=request.node.originalname + ".", dir=base)
    yield d
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.passed and not os.environ.get("FIRMWARE_KEEP"):
        shutil.rmtree(d, ignore_errors=True)
    else:
        print("\nfirmware lab: kept %s" % d)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def sink(workdir):
    from relaytest import Peer, ensure_aiosmtpd
    if not ensure_aiosmtpd():
        pytest.fail("aiosmtpd is missing: bash board/common/deps.sh pkg:python3-aiosmtpd", pytrace=False)
    p = Peer(os.path.join(workdir, "sink"))
    p.start()
    yield p
    p.stop()


@pytest.fixture
def record(board):
    def rec(key, value):
        os.makedirs(RESULTS, exist_ok=True)
        path = os.path.join(RESULTS, board + ".json")
        try:
            data = json.load(open(path))
        except (OSError, ValueError):
            data = {}
        data[key] = value
        with open(path + ".tmp", "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(path + ".tmp", path)
    return rec
