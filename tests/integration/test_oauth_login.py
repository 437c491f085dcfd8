"""picomail oauth login (issue 17, part 3): the device authorization grant
(RFC 8628) from the console, driven end to end against oauthpeer.py: the
code and where to enter it printed (escaped), the token endpoint polled
at the interval, slower after slow_down, until the user decides or the
code expires; the refresh token written into the smarthost_oauth file
(0600, its other lines and its owner kept), and a daemon already waiting
for it delivering without a restart.
"""

import os
import subprocess
import time

import pytest

from picotest import message
from relaytest import Dnsmasq, Peer, mailq, submit, wait_for, wait_queue_empty
from oauthtest import (Pki, CLIENT_ID, USER, Endpoint, mode_of, oauth_daemon, oauth_file,
                       read_oauth_file, set_tokens)

pytestmark = pytest.mark.usefixtures("need_aiosmtpd")

SCOPE = "https://outlook.office.com/SMTP.Send offline_access"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(str(tmp_path_factory.mktemp("oauth-pki")))


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    d = Dnsmasq(str(tmp_path_factory.mktemp("oauth-dns")), ["--host-record=test.lan,127.0.0.1"],
                "test.lan")
    yield d
    d.stop()


@pytest.fixture
def endpoint(workdir, pki):
    made = []

    def make(**state):
        state.setdefault("refresh_tokens", [])
        e = Endpoint(os.path.join(workdir, "ep%d" % len(made)), pki.cert["rsa"], pki.key["rsa"],
                     **state)
        made.append(e)
        return e.start()

    yield make
    for e in made:
        e.stop()


def conf_for(make_daemon, dns, pki, workdir, ep, peer_port=2525, **keys):
    """A daemon's configuration (not started) whose smarthost_oauth file
    points at ep's device and token endpoints."""
    k = {"device_endpoint": ep.url("/devicecode"), "token_endpoint": ep.url(), "client_id": CLIENT_ID,
         "scope": SCOPE}
    k.update(keys)
    path = oauth_file(workdir, **k)

    class P:
        port = peer_port
    d = oauth_daemon(make_daemon, dns, P, pki.ca, path, start=False)
    return d, path


def login(d, timeout=30, binary=None):
    return subprocess.run([binary or d.binary, "oauth", "login", "-C", d.conf_path],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def polls(ep):
    return [e["t"] for e in ep.grants("device_code")]


# --------------------------------------------------------------------------


def test_device_flow_end_to_end(make_daemon, dns, pki, workdir, endpoint):
    """A daemon waits for the consent; login gets it; the daemon delivers
    with the refresh token login wrote, without a restart."""
    pd = os.path.join(workdir, "peer")
    os.makedirs(pd)
    tokens = os.path.join(pd, "tokens")
    peer = Peer(pd, cert=pki.cert["rsa"], key=pki.key["rsa"], require_starttls=True,
                oauth_tokens=tokens, oauth_user=USER)
    set_tokens(peer)
    peer.start()
    try:
        ep = endpoint(tokens_file=tokens, device={"pending": 2, "interval": 1})
        d, path = conf_for(make_daemon, dns, pki, workdir, ep, peer_port=peer.port)
        before = read_oauth_file(path)
        d.start()
        submit(d, ["bob@remote.test"], message("waits for the consent"))
        wait_for(lambda: d.events("retry"), 8, "a deferral")
        assert "run picomail oauth login" in mailq(d)[0][5][0][1]

        t0 = time.monotonic()
        p = login(d)
        assert p.returncode == 0, p.stdout + p.stderr
        out = p.stdout
        assert "https://test.lan/device" in out and "WDJB-MJHT" in out, out
        assert "?user_code=WDJB-MJHT" in out and USER in out, out
        assert "Signed in" in out, out
        # Two pending answers, then the tokens: three polls a second apart.
        t = polls(ep)
        assert len(t) == 3, ep.events()
        assert all(b - a >= 0.9 for a, b in zip(t, t[1:])), t
        assert time.monotonic() - t0 < 10
        dc = ep.events("/devicecode")
        assert dc[0]["form"] == {"client_id": CLIENT_ID, "scope": SCOPE}, dc
        assert ep.grants("device_code")[0]["form"] == {
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": "dc-secret", "client_id": CLIENT_ID}
        after = read_oauth_file(path)
        assert after.pop("refresh_token") == "rt-device"
        assert after == before, "other lines changed"
        assert mode_of(path) == 0o600
        assert "rt-device" not in out + p.stderr and "dc-secret" not in out + p.stderr

        got = peer.wait_messages(1, timeout=10)
        assert got[0]["auth"]["token"].startswith("at-")
        wait_queue_empty(d)
        assert ep.grants()[-1]["form"]["refresh_token"] == "rt-device"
        assert d.events("bounce") == []
    finally:
        peer.stop()


def test_slow_down_makes_polls_five_seconds_slower(make_daemon, dns, pki, workdir, endpoint):
    ep = endpoint(device={"slow_down": [1], "interval": 1})
    d, path = conf_for(make_daemon, dns, pki, workdir, ep)
    p = login(d)
    assert p.returncode == 0, p.stdout + p.stderr
    t = polls(ep)
    assert len(t) == 2, ep.events()
    assert t[1] - t[0] >= 5.9, t   # 1 s + 5 s, RFC 8628 3.5


@pytest.mark.parametrize("device,rc,words", [
    ({"deny": True}, 1, "the sign-in was refused"),
    ({"expire": True}, 75, "the code expired"),
    ({"pending": 100, "expires_in": 2}, 75, "the code expired before the sign-in was done"),
    ({"refresh": None}, 1, "no refresh token"),
], ids=["denied", "expired-token", "code-timeout", "no-refresh-token"])
def test_refusals_leave_the_file_alone(make_daemon, dns, pki, workdir, endpoint, device, rc,
                                       words):
    device.setdefault("interval", 1)
    ep = endpoint(device=device)
    d, path = conf_for(make_daemon, dns, pki, workdir, ep)
    with open(path) as f:
        before = f.read()
    p = login(d)
    assert p.returncode == rc and words in p.stderr, (p.returncode, p.stdout, p.stderr)
    with open(path) as f:
        assert f.read() == before
    assert not os.path.exists(path + ".tmp")


def test_google_spelling_and_a_client_secret(make_daemon, dns, pki, workdir, endpoint):
    ep = endpoint(client_secret="GOCSPX-s3cret",
                  device={"uri_key": "verification_url", "interval": 1})
    d, path = conf_for(make_daemon, dns, pki, workdir, ep, client_secret="GOCSPX-s3cret",
                       scope="https://mail.google.com/")
    p = login(d)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "https://test.lan/device" in p.stdout
    assert all(e["form"]["client_secret"] == "GOCSPX-s3cret" for e in ep.events())
    assert read_oauth_file(path)["refresh_token"] == "rt-device"
    assert "GOCSPX" not in p.stdout + p.stderr


def test_what_the_endpoint_says_reaches_the_terminal_escaped(make_daemon, dns, pki, workdir,
                                                             endpoint):
    ep = endpoint(device={"user_code": "AB\x1b[2J\x07CD", "interval": 1})
    d, path = conf_for(make_daemon, dns, pki, workdir, ep)
    p = login(d)
    assert p.returncode == 0, p.stderr
    assert "\x1b" not in p.stdout and "\x07" not in p.stdout
    assert "AB?[2J?CD" in p.stdout, p.stdout


def test_missing_settings(make_daemon, dns, pki, workdir, endpoint):
    ep = endpoint()
    d, path = conf_for(make_daemon, dns, pki, workdir, ep, device_endpoint=None)
    p = login(d)
    assert p.returncode == 78 and "has no device_endpoint" in p.stderr, p.stderr
    assert ep.events() == []
    p = subprocess.run([d.binary, "oauth", "logout", "-C", d.conf_path], capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 64 and "usage" in p.stderr


@pytest.mark.parametrize("mode", ["malformed", "huge", "close"])
def test_hostile_device_endpoint(make_daemon, dns, pki, workdir, endpoint, mode):
    ep = endpoint(mode=mode)
    d, path = conf_for(make_daemon, dns, pki, workdir, ep)
    p = login(d)
    assert p.returncode in (1, 75), (p.returncode, p.stderr)
    assert "picomail: https://test.lan:%d/devicecode: " % ep.port in p.stderr, p.stderr
    assert "refresh_token" not in read_oauth_file(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file away")
def test_login_as_root_keeps_the_owner(make_daemon, dns, pki, workdir, endpoint):
    import pwd
    nobody = pwd.getpwnam("nobody")
    ep = endpoint(device={"interval": 1})
    d, path = conf_for(make_daemon, dns, pki, workdir, ep)
    os.chown(path, nobody.pw_uid, nobody.pw_gid)
    p = login(d)
    assert p.returncode == 0, p.stderr
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert mode_of(path) == 0o600
