"""OAuth2 at the smarthost with the daemon's own refresh grant (issue 17,
part 2): the access token from the token endpoint over HTTPS (verified
against ca_file, on the loop), renewed before it expires, a rotated
refresh token saved atomically before it is used and found again after a
restart and a kill -9, a revoked one deferring mail with the endpoint's
words and waiting for the file to change, hostile endpoints refused with a
reason while the daemon serves on, and the save failing through the fault
seam.

The token endpoint is oauthpeer.py (oauthtest.Endpoint) under a test CA
certificate for test.lan; every access token it makes replaces the one
the smarthost (relaypeer.py) accepts, so an old token is a dead one.
"""

import os
import signal
import subprocess
import time

import pytest

from picotest import message
from relaytest import Dnsmasq, Peer, mailq, submit, wait_for, wait_queue_empty
from oauthtest import (Pki, CLIENT_ID, USER, Endpoint, auth_events, mode_of, oauth_daemon, oauth_file,
                       read_oauth_file, set_tokens)

pytestmark = pytest.mark.usefixtures("need_aiosmtpd")

FAST = {"PICOMAIL_OAUTH_FAST": "1"}
SCOPE = "https://outlook.office.com/SMTP.Send offline_access"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(str(tmp_path_factory.mktemp("oauth-pki")))


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    d = Dnsmasq(str(tmp_path_factory.mktemp("oauth-dns")),
                ["--host-record=test.lan,127.0.0.1", "--host-record=other.lan,127.0.0.1"],
                "test.lan")
    yield d
    d.stop()


class World:
    """A smarthost, a token endpoint feeding it, and the smarthost_oauth
    file pointing at the endpoint."""

    def __init__(self, workdir, pki, endpoint_opts, file_opts):
        self.dir = workdir
        pd = os.path.join(workdir, "peer")
        os.makedirs(pd, exist_ok=True)
        self.tokens = os.path.join(pd, "tokens")
        self.peer = Peer(pd, cert=pki.cert["rsa"], key=pki.key["rsa"], require_starttls=True,
                         oauth_tokens=self.tokens, oauth_user=USER)
        set_tokens(self.peer)
        endpoint_opts.setdefault("tokens_file", self.tokens)
        self.ep = Endpoint(os.path.join(workdir, "endpoint"), endpoint_opts.pop("cert", pki.cert["rsa"]),
                           endpoint_opts.pop("key", pki.key["rsa"]), **endpoint_opts)
        keys = {"token_endpoint": self.ep.url(), "client_id": CLIENT_ID, "scope": SCOPE,
                "refresh_token": "rt-0"}
        keys.update(file_opts)
        self.oauth = oauth_file(workdir, **keys)

    def start(self):
        self.peer.start()
        self.ep.start()
        return self

    def stop(self):
        self.peer.stop()
        self.ep.stop()

    def hint(self, d):
        return "\n%s\n-- endpoint --\n%r\n-- picomail --\n%s" % (
            self.peer.describe(), self.ep.events()[-6:], d.log(4000))


@pytest.fixture
def world(workdir, pki):
    made = []

    def make(start=True, file=None, **endpoint):
        w = World(os.path.join(workdir, "w%d" % len(made)), pki, endpoint, file or {})
        made.append(w)
        return w.start() if start else w

    yield make
    for w in made:
        w.stop()


def daemon(make_daemon, dns, pki, w, **kw):
    return oauth_daemon(make_daemon, dns, w.peer, pki.ca, w.oauth, **kw)


def delivered(w, d, n=1, timeout=8):
    try:
        return w.peer.wait_messages(n, timeout=timeout)
    except AssertionError as e:
        raise AssertionError(str(e) + w.hint(d))


def secrets_absent(d, *secrets):
    log = d.log(1 << 22)
    for s in secrets:
        assert s not in log, "a secret (%s) is in the log" % s


# --------------------------------------------------------------------------


def test_refresh_grant_delivers(make_daemon, dns, pki, world):
    w = world()
    d = daemon(make_daemon, dns, pki, w)
    submit(d, ["bob@remote.test"], message("refresh grant"))
    got = delivered(w, d)
    assert got[0]["auth"] == {"mech": "XOAUTH2", "user": USER, "token": "at-1"}, got[0]
    g = w.ep.grants()
    assert len(g) == 1, g
    assert g[0]["form"] == {"grant_type": "refresh_token", "refresh_token": "rt-0",
                            "client_id": CLIENT_ID, "scope": SCOPE}, g[0]
    assert g[0]["ctype"] == "application/x-www-form-urlencoded"
    assert g[0]["host"] == "test.lan:%d" % w.ep.port
    wait_queue_empty(d)
    st = d.status()
    assert st["oauth.state"] == "valid" and st["oauth.source"] == "refresh", st
    assert 3500 < int(st["oauth.expires_in"]) <= 3600, st
    secrets_absent(d, "at-1", "rt-0")
    # The second message uses the token in memory.
    submit(d, ["bob@remote.test"], message("again"))
    delivered(w, d, 2)
    assert len(w.ep.grants()) == 1


def test_client_secret_is_sent_where_the_provider_needs_one(make_daemon, dns, pki, world):
    w = world(client_secret="s3cr3t", file={"client_secret": "s3cr3t", "scope": None})
    d = daemon(make_daemon, dns, pki, w)
    submit(d, ["bob@remote.test"], message("secret"))
    delivered(w, d)
    assert w.ep.grants()[0]["form"]["client_secret"] == "s3cr3t"
    assert "scope" not in w.ep.grants()[0]["form"]
    secrets_absent(d, "s3cr3t")


def test_token_renewed_when_it_expires(make_daemon, dns, pki, world, picomail_test_bin):
    """And no malloc for it: the second refresh, its HTTPS exchange and
    the delivery allocate nothing (the test build counts)."""
    w = world(expires_in=3)
    d = daemon(make_daemon, dns, pki, w, binary=picomail_test_bin)
    submit(d, ["bob@remote.test"], message("one"))
    delivered(w, d)
    wait_queue_empty(d)
    before = int(d.status()["mallocs"])
    time.sleep(3)
    submit(d, ["bob@remote.test"], message("two"))
    got = delivered(w, d, 2)
    assert [m["auth"]["token"] for m in got] == ["at-1", "at-2"], got
    assert len(w.ep.grants()) == 2
    wait_queue_empty(d)
    assert int(d.status()["mallocs"]) == before, "malloc in steady state"


def test_refused_access_token_is_renewed_within_the_attempt(make_daemon, dns, pki, world):
    w = world()
    d = daemon(make_daemon, dns, pki, w)
    submit(d, ["bob@remote.test"], message("one"))
    delivered(w, d)
    set_tokens(w.peer)                  # the smarthost forgets at-1
    submit(d, ["bob@remote.test"], message("two"))
    got = delivered(w, d, 2)
    assert got[1]["auth"]["token"] == "at-2"
    assert [e[2] for e in auth_events(w.peer)] == ["ok", "bad", "ok"]
    assert d.events("bounce") == []


def test_rotation_saved_and_survives_restart_and_kill9(make_daemon, dns, pki, world):
    w = world(rotate=True, expires_in=3)
    d = daemon(make_daemon, dns, pki, w)
    before = read_oauth_file(w.oauth)
    submit(d, ["bob@remote.test"], message("rotate"))
    delivered(w, d)
    wait_for(lambda: read_oauth_file(w.oauth).get("refresh_token") != "rt-0", 5,
             "the rotated refresh token in the file")
    after = read_oauth_file(w.oauth)
    rt1 = after["refresh_token"]
    assert w.ep.state()["refresh_tokens"] == [rt1], (rt1, w.ep.state())
    assert {k: v for k, v in after.items() if k != "refresh_token"} == \
        {k: v for k, v in before.items() if k != "refresh_token"}, "other lines changed"
    assert mode_of(w.oauth) == 0o600
    with open(w.oauth) as f:
        assert f.read().startswith("# written by"), "the comment line was lost"
    assert not os.path.exists(w.oauth + ".tmp")
    assert len(d.events("oauth", state="rotated")) == 1
    assert int(d.status()["oauth.rotations"]) == 1
    secrets_absent(d, rt1)
    # A restart: the daemon finds the rotated token in the file.
    d.stop()
    set_tokens(w.peer)                  # the old access token is dead too
    d.start()
    submit(d, ["bob@remote.test"], message("after restart"))
    got = delivered(w, d, 2)
    rt2 = read_oauth_file(w.oauth)["refresh_token"]
    assert rt2 != rt1 and w.ep.grants()[-1]["form"]["refresh_token"] == rt1
    # kill -9 right after a rotation was saved: nothing is lost either.
    time.sleep(3)                       # the token expires
    submit(d, ["bob@remote.test"], message("before the kill"))
    delivered(w, d, 3)
    wait_for(lambda: read_oauth_file(w.oauth)["refresh_token"] != rt2, 5, "a third rotation")
    rt3 = read_oauth_file(w.oauth)["refresh_token"]
    d.send_signal(signal.SIGKILL)
    d.proc.wait(5)
    set_tokens(w.peer)
    d.start()
    submit(d, ["bob@remote.test"], message("after kill -9"))
    got = delivered(w, d, 4)
    assert w.ep.grants()[-1]["form"]["refresh_token"] == rt3
    assert all(g["form"]["refresh_token"] in ("rt-0", rt1, rt2, rt3) for g in w.ep.grants())
    assert [e for e in w.ep.events() if e["mode"] == "ok"], w.ep.events()
    assert d.events("bounce") == []


def test_revoked_refresh_token_defers_until_a_new_consent(make_daemon, dns, pki, world,
                                                          picomail_test_bin):
    w = world(refresh_tokens=[])       # rt-0 is revoked
    d = daemon(make_daemon, dns, pki, w, binary=picomail_test_bin, env=FAST)
    submit(d, ["bob@remote.test"], message("revoked"))
    wait_for(lambda: len(d.events("retry")) >= 3, 10, "three deferrals")
    why = mailq(d)[0][5][0][1]
    assert why.startswith("451 4.7.0") and "invalid_grant" in why and "test.lan" in why, why
    st = d.status()
    assert st["oauth.state"] == "failed" and "AADSTS700082" in st["oauth.error"], st
    assert w.ep.url() in st["oauth.error"], st
    assert len(w.ep.grants()) == 1, "a refused grant was asked again: %r" % w.ep.grants()
    assert len(d.events("oauth", state="failed")) == 1, d.log(4000)
    assert w.peer.events("connect") == [], "the smarthost was bothered without a token"
    assert d.events("bounce") == []
    # picomail oauth login would write a new token: the daemon takes it.
    w.ep.set(refresh_tokens=["rt-new"])
    oauth_file(w.dir, token_endpoint=w.ep.url(), client_id=CLIENT_ID, scope=SCOPE,
               refresh_token="rt-new")
    got = delivered(w, d, timeout=10)
    assert got[0]["auth"]["token"].startswith("at-")
    wait_queue_empty(d)
    assert d.events("bounce") == []
    assert d.status()["oauth.state"] == "valid"


def test_no_refresh_token_yet(make_daemon, dns, pki, world):
    w = world(file={"refresh_token": None})
    d = daemon(make_daemon, dns, pki, w, start=False)
    p = subprocess.run([d.binary, "check", "-C", d.conf_path], capture_output=True, text=True,
                       timeout=10)
    assert p.returncode == 0 and "picomail oauth login" in p.stderr, p.stderr
    d.start()
    assert "run picomail oauth login" in d.log()
    submit(d, ["bob@remote.test"], message("no consent yet"))
    wait_for(lambda: d.events("retry"), 8, "a deferral")
    assert "run picomail oauth login" in mailq(d)[0][5][0][1]
    assert w.ep.events() == []


def test_check_wants_endpoint_client_and_ca(make_daemon, dns, pki, world):
    w = world(start=False, file={"client_id": None})
    d = daemon(make_daemon, dns, pki, w, start=False)
    p = subprocess.run([d.binary, "check", "-C", d.conf_path], capture_output=True, text=True,
                       timeout=10)
    assert p.returncode == 1 and "token_endpoint and client_id" in p.stderr, p.stderr
    d.extra = [l for l in d.extra if not l.startswith("ca_file")]
    d.write_config()
    p = subprocess.run([d.binary, "check", "-C", d.conf_path], capture_output=True, text=True,
                       timeout=10)
    assert p.returncode == 1 and "needs ca_file" in p.stderr, p.stderr


# --------------------------------------------------------------------------
# Endpoints that misbehave


HOSTILE = [
    ("error", "HTTP 400 invalid_grant: AADSTS70000"),
    ("status", "HTTP 503"),
    ("not-json", "not the JSON of a token endpoint"),
    ("malformed", "not the JSON of a token endpoint"),
    ("huge", "a body larger than 16384 octets"),
    ("huge-chunked", "a body larger than 16384 octets"),
    ("bad-chunk", "chunk data longer than its size"),
    ("no-length", "without Content-Length or chunked"),
    ("gzip", "Content-Encoding"),
    ("close", "closed without a response"),
    ("deep", "nested too deeply"),
    ("escape", "usable access_token"),
    ("slow", "no complete response within 3 s"),
    ("drip", "no complete response within 3 s"),
]


@pytest.mark.parametrize("mode,why", HOSTILE, ids=[m for m, _ in HOSTILE])
def test_hostile_endpoint_defers_and_the_daemon_serves_on(make_daemon, dns, pki, world,
                                                         picomail_test_bin, mode, why):
    w = world(mode=mode)
    d = daemon(make_daemon, dns, pki, w, binary=picomail_test_bin, env=FAST)
    t0 = time.monotonic()
    submit(d, ["bob@remote.test"], message("hostile " + mode))
    # While the request is in flight the loop answers at once.
    c = d.session()
    c.cmd("NOOP")
    c.cmd("QUIT")
    c.close()
    wait_for(lambda: d.events("retry"), 10, "a deferral")
    assert time.monotonic() - t0 < 8
    q = mailq(d)
    assert why in d.status()["oauth.error"], (why, d.status())
    assert q[0][5][0][1].startswith("451 4.7.0 no OAuth2 token"), q
    log = d.log(1 << 22)
    assert "\x1b" not in log
    assert d.events("bounce") == []
    # Once it behaves, the message goes, once.
    if mode != "error":
        w.ep.set(mode="ok")
        delivered(w, d, timeout=12)
        wait_queue_empty(d, timeout=10)
    assert d.alive()


def test_chunked_answer_is_read(make_daemon, dns, pki, world):
    w = world(mode="chunked")
    d = daemon(make_daemon, dns, pki, w)
    submit(d, ["bob@remote.test"], message("chunked"))
    got = delivered(w, d)
    assert got[0]["auth"]["token"] == "at-1"


@pytest.mark.parametrize("case", ["wrong-ca", "wrong-name"])
def test_endpoint_certificate_is_verified(make_daemon, dns, pki, world, workdir, case,
                                          picomail_test_bin):
    if case == "wrong-ca":
        from hostile import self_signed
        crt, key = self_signed(workdir)
        w = world(cert=crt, key=key)
        url = w.ep.url()
        words = "not trusted"
    else:
        w = world()
        url = w.ep.url(host="other.lan")   # the certificate names test.lan
        words = "name"
    oauth_file(w.dir, token_endpoint=url, client_id=CLIENT_ID, refresh_token="rt-0")
    d = daemon(make_daemon, dns, pki, w, binary=picomail_test_bin, env=FAST)
    submit(d, ["bob@remote.test"], message(case))
    wait_for(lambda: d.events("retry"), 10, "a deferral")
    err = d.status()["oauth.error"]
    assert "TLS failed" in err and words in err, err
    assert w.ep.events() == [], "the request went to an unverified endpoint"


def test_rotated_token_that_cannot_be_saved(make_daemon, dns, pki, world, picomail_test_bin):
    """The save of a rotated refresh token fails (EIO on its rename through
    the fault seam): the file keeps the old one, nothing is left beside it,
    the mail still goes with the new access token, the new refresh token
    is kept in memory, and it is saved before the next refresh uses it."""
    w = world(rotate=True, expires_in=3)
    probe = daemon(make_daemon, dns, pki, w, binary=picomail_test_bin,
                   env=dict(FAST, PICOMAIL_FAULT_TRACE="1"))
    submit(probe, ["bob@remote.test"], message("probe"))
    delivered(w, probe)
    def renames():
        return [l for l in probe.log(1 << 20).splitlines()
                if "fault seam: rename #" in l and l.rstrip().endswith(" " + w.oauth)]
    n = wait_for(renames, 5, "the rename of the oauth file in the trace")
    number = int(n[0].split("rename #", 1)[1].split()[0])
    probe.kill()
    w.stop()

    w = world(rotate=True, expires_in=3)
    d = daemon(make_daemon, dns, pki, w, binary=picomail_test_bin,
               env=dict(FAST, PICOMAIL_FAULT="rename:%d:EIO" % number))
    submit(d, ["bob@remote.test"], message("save fails"))
    delivered(w, d)
    wait_for(lambda: d.events("oauth", state="unsaved"), 5, "the failed save in the log")
    assert read_oauth_file(w.oauth)["refresh_token"] == "rt-0"
    assert not os.path.exists(w.oauth + ".tmp")
    assert d.status()["oauth.refresh_saved"] != "yes"
    rt1 = w.ep.state()["refresh_tokens"][0]
    time.sleep(3)
    submit(d, ["bob@remote.test"], message("next refresh"))
    delivered(w, d, 2)
    assert w.ep.grants()[-1]["form"]["refresh_token"] == rt1
    wait_for(lambda: read_oauth_file(w.oauth)["refresh_token"] == w.ep.state()["refresh_tokens"][0],
             5, "the newest refresh token in the file")
    assert d.status()["oauth.refresh_saved"] == "yes"
    assert d.events("bounce") == []
