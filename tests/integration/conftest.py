"""Fixtures: a private temporary directory and real picomail daemons in it.

    daemon         a started daemon with the default test configuration
    need_aiosmtpd  (module) fails the module's tests unless aiosmtpd is there
    peers          peers(start=True, **opts) -> an aiosmtpd Peer in the test's
                   directory; all stopped when the test ends
    make_daemon    make_daemon(binary=..., env=..., start=True, **config)

Every daemon is killed by its PID when the test ends (under ASan or
valgrind, picotest.SANITIZED, stopped by SIGTERM first, so that leaks are
checked at its exit); the daemon's log is printed when the test fails.
PICOMAIL_KEEP=1 keeps the temporary directories; PICOMAIL_BUILD points at
another build directory.
"""

import os
import shutil
import signal
import subprocess
import tempfile

import pytest

from picotest import BIN, SANITIZED, TEST_BIN, Daemon, scaled

# Seconds: a hung test fails instead of hanging `make test` (longer for a
# daemon under ASan or valgrind, picotest.SANITIZED, but still bounded).
TEST_TIMEOUT = min(scaled(90), 360)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(autouse=True)
def _deadline():
    def expired(signum, frame):
        raise TimeoutError("test ran longer than %d s" % TEST_TIMEOUT)
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIMEOUT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def password_hash():
    p = subprocess.run(["openssl", "passwd", "-6", "secret"], capture_output=True,
                       timeout=10, text=True)
    assert p.returncode == 0, "openssl passwd -6 failed: %s" % p.stderr
    return p.stdout.strip()


@pytest.fixture(scope="session")
def picomail_bin():
    if not os.access(BIN, os.X_OK):
        pytest.fail("%s is missing: run `make` first" % BIN, pytrace=False)
    return BIN


@pytest.fixture(scope="session")
def picomail_test_bin():
    if not os.access(TEST_BIN, os.X_OK):
        pytest.fail("%s is missing: `make` builds it (fault seam, malloc counter)"
                    % TEST_BIN, pytrace=False)
    return TEST_BIN


@pytest.fixture
def workdir(request):
    # Short paths: the control socket <spool>/control must fit sun_path.
    d = tempfile.mkdtemp(prefix="pm-", dir="/tmp")
    yield d
    if os.environ.get("PICOMAIL_KEEP"):
        print("kept", d)
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def make_daemon(request, workdir, password_hash, picomail_bin):
    daemons = []

    def make(binary=None, env=None, start=True, **conf):
        sub = os.path.join(workdir, "d%d" % len(daemons))
        d = Daemon(sub, password_hash, binary=binary or picomail_bin, env=env, **conf)
        daemons.append(d)
        if start:
            d.start()
        return d

    yield make
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for d in daemons:
        if SANITIZED:
            d.stop()   # a clean exit, where LeakSanitizer and valgrind check for leaks
        d.kill()
        if failed:
            print("---- %s (pid %s) log tail ----\n%s" % (
                d.conf_path, d.proc.pid if d.proc else "-", d.log()))


@pytest.fixture
def daemon(make_daemon):
    return make_daemon()


@pytest.fixture(scope="module")
def need_aiosmtpd():
    from relaytest import ensure_aiosmtpd
    if not ensure_aiosmtpd():
        pytest.fail("aiosmtpd is missing: bash board/common/deps.sh pkg:python3-aiosmtpd",
                    pytrace=False)


@pytest.fixture
def peers(workdir, need_aiosmtpd):
    """make(start=True, **opts) -> a Peer (relaytest) in workdir; all stopped
    at the end.  A module may override it to add options (test_relay_tls)."""
    from relaytest import Peer
    made = []

    def make(start=True, **opts):
        p = Peer(os.path.join(workdir, "peer%d" % len(made)), **opts)
        made.append(p)
        if start:
            p.start()
        return p

    yield make
    for p in made:
        p.stop()
