"""OAuth2 at the smarthost with smarthost_token_command (issue 17, part 1):
SASL XOAUTH2 and OAUTHBEARER (RFC 7628) with a token a program prints,
cached for the lifetime it says (or smarthost_token_lifetime), a refused
token replaced once within the attempt, failures deferred with their
reason and logged once, never bounced; the password refusal of Exchange
Online (5.7.30) named in the log.

The smarthost is relaypeer.py with STARTTLS (test CA, test.lan) accepting
only the tokens of its --oauth-tokens file; the program is
oauthtest.TokenCommand.  Tests that need short back-offs run the test
build with PICOMAIL_OAUTH_FAST=1 (1 s, then 2 s, 4 s; programs get 3 s).
"""

import os
import subprocess
import time

import pytest

from picotest import message
from relaytest import Peer, mailq, submit, wait_for, wait_queue_empty, Dnsmasq
from oauthtest import (Pki, USER, TokenCommand, auth_events, oauth_daemon, oauth_file, set_tokens)

pytestmark = pytest.mark.usefixtures("need_aiosmtpd")

FAST = {"PICOMAIL_OAUTH_FAST": "1"}


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
def peers(workdir, pki):
    made = []

    def make(start=True, tokens=("tok-1",), **opts):
        d = os.path.join(workdir, "peer%d" % len(made))
        os.makedirs(d, exist_ok=True)
        opts.setdefault("cert", pki.cert["rsa"])
        opts.setdefault("key", pki.key["rsa"])
        opts.setdefault("require_starttls", True)
        if tokens is not None:
            opts.setdefault("oauth_tokens", os.path.join(d, "tokens"))
            opts.setdefault("oauth_user", USER)
        p = Peer(d, **opts)
        if tokens is not None:
            set_tokens(p, *tokens)
        made.append(p)
        if start:
            p.start()
        return p

    yield make
    for p in made:
        p.stop()


@pytest.fixture
def cmd(workdir):
    return TokenCommand(os.path.join(workdir, "cmd"))


def start(make_daemon, dns, pki, peer, workdir, cmd, mech="xoauth2", **kw):
    return oauth_daemon(make_daemon, dns, peer, pki.ca, oauth_file(workdir), mech=mech,
                        command=cmd.path, **kw)


def hint(d, peer):
    return "\n" + peer.describe() + "\n-- picomail --\n" + d.log(4000)


def oauth_events(d, state=None):
    return [e for e in d.events("oauth") if state is None or e.get("state") == state]


# --------------------------------------------------------------------------


@pytest.mark.parametrize("mech", ["xoauth2", "oauthbearer"])
def test_token_from_command_delivers(make_daemon, dns, pki, peers, workdir, cmd, mech):
    peer = peers()
    d = start(make_daemon, dns, pki, peer, workdir, cmd, mech=mech)
    submit(d, ["bob@remote.test"], message("oauth " + mech))
    try:
        got = peer.wait_messages(1, timeout=8)
    except AssertionError as e:
        raise AssertionError(str(e) + hint(d, peer))
    assert got[0]["auth"] == {"mech": mech.upper(), "user": USER, "token": "tok-1"}, got[0]
    assert got[0]["cipher"], "the token went over a connection without TLS"
    ev = auth_events(peer)
    assert ev[0][:3] == (mech.upper(), USER, "ok"), ev
    if mech == "oauthbearer":
        # RFC 7628 3.1: the host and port the client connected to.
        assert ev[0][4:] == ("test.lan", str(peer.port)), ev
    wait_queue_empty(d)
    st = d.status()
    assert st["oauth.state"] == "valid" and st["oauth.source"] == "command", st
    assert 0 < int(st["oauth.expires_in"]) <= 3000, st   # smarthost_token_lifetime 50m
    assert "tok-1" not in d.log(1 << 20), "the token is in the log"


def test_mechanism_is_the_first_offered(make_daemon, dns, pki, peers, workdir, cmd):
    peer = peers(auth_mech=["OAUTHBEARER"])
    d = start(make_daemon, dns, pki, peer, workdir, cmd, mech="xoauth2 oauthbearer")
    submit(d, ["bob@remote.test"], message("second choice"))
    got = peer.wait_messages(1, timeout=8)
    assert got[0]["auth"]["mech"] == "OAUTHBEARER", got[0]


def test_token_cached_for_its_lifetime_then_fetched_again(make_daemon, dns, pki, peers, workdir,
                                                          cmd):
    peer = peers(tokens=("tok-1", "tok-2"))
    cmd.set("tok-1\n3\n")               # good for 3 s (renewed 0.75 s before)
    cmd.set("tok-2\n3600\n", run=2)
    d = start(make_daemon, dns, pki, peer, workdir, cmd)
    submit(d, ["bob@remote.test"], message("one"))
    submit(d, ["bob@remote.test"], message("two"))
    peer.wait_messages(2, timeout=8)
    assert cmd.runs() == 1, "the token was not reused: %d runs" % cmd.runs()
    time.sleep(3)
    submit(d, ["bob@remote.test"], message("three"))
    got = peer.wait_messages(3, timeout=8)
    assert cmd.runs() == 2, cmd.runs()
    assert [m["auth"]["token"] for m in got] == ["tok-1", "tok-1", "tok-2"], got
    assert int(d.status()["oauth.expires_in"]) > 3000


def test_refused_token_is_replaced_within_the_attempt(make_daemon, dns, pki, peers, workdir,
                                                      cmd):
    """The smarthost says 334 <error JSON>, the client answers the dummy
    response (empty for XOAUTH2, AQ== for OAUTHBEARER: the peer refuses
    anything else with 501), the final 535 makes a new token, and the same
    attempt delivers."""
    for mech in ("XOAUTH2", "OAUTHBEARER"):
        peer = peers(tokens=("fresh",))
        c = TokenCommand(os.path.join(workdir, "cmd-" + mech))
        c.set("stale\n")
        c.set("fresh\n", run=2)
        d = oauth_daemon(make_daemon, dns, peer, pki.ca, oauth_file(workdir), mech=mech.lower(),
                         command=c.path)
        submit(d, ["bob@remote.test"], message("refresh " + mech))
        try:
            got = peer.wait_messages(1, timeout=8)
        except AssertionError as e:
            raise AssertionError(str(e) + hint(d, peer))
        assert got[0]["auth"]["token"] == "fresh"
        assert [e[2] for e in auth_events(peer)] == ["bad", "ok"], auth_events(peer)
        ends = [x for _, _, x in peer.events("auth-end")]
        assert ends == ["%s %r" % (mech, b"AQ==" if mech == "OAUTHBEARER" else b"")], ends
        wait_queue_empty(d)
        assert len(oauth_events(d, "refused")) == 1, d.log(3000)
        relayed = d.events("relayed")
        assert [r["status"] for r in relayed] == ["sent"], relayed


def test_revoked_token_defers_without_bounces(make_daemon, dns, pki, peers, workdir, cmd,
                                              picomail_test_bin):
    peer = peers(tokens=())             # every token refused
    d = start(make_daemon, dns, pki, peer, workdir, cmd, binary=picomail_test_bin, env=FAST)
    submit(d, ["bob@remote.test"], message("revoked"), sender="alice@lan")
    wait_for(lambda: len(d.events("retry")) >= 3, 15,
             "three deferred attempts")
    q = mailq(d)
    assert len(q) == 1 and "refused the OAuth2 token" in q[0][5][0][1], q
    assert q[0][5][0][1].startswith("4"), q
    assert d.events("bounce") == [], "a bounce for a refused token"
    assert peer.messages() == []
    # Each attempt fetched one new token after the refusal, no more.
    assert cmd.runs() <= 2 * len(d.events("relayed")), cmd.runs()
    # Once the smarthost takes the token again, the message goes, once.
    set_tokens(peer, "tok-1")
    got = peer.wait_messages(1, timeout=10)
    assert len(got) == 1
    wait_queue_empty(d)
    assert d.events("bounce") == []


def test_failing_command_defers_logs_once_and_recovers(make_daemon, dns, pki, peers, workdir,
                                                       cmd, picomail_test_bin):
    peer = peers()
    cmd.set("", rc=3)
    d = start(make_daemon, dns, pki, peer, workdir, cmd, binary=picomail_test_bin, env=FAST)
    submit(d, ["bob@remote.test"], message("no token yet"))
    wait_for(lambda: cmd.runs() >= 2 and len(d.events("retry")) >= 2, 15,
             "two runs of the failing command")
    q = mailq(d)
    assert len(q) == 1, q
    why = q[0][5][0][1]
    assert why.startswith("4") and "token command" in why and "status 3" in why, why
    st = d.status()
    assert st["oauth.state"] == "failed" and "status 3" in st["oauth.error"], st
    assert len(oauth_events(d, "failed")) == 1, "logged more than once:\n" + d.log(4000)
    assert peer.events("connect") == [], "the smarthost was bothered without a token"
    assert d.events("bounce") == []
    cmd.set("tok-1\n")
    got = peer.wait_messages(1, timeout=10)
    assert got[0]["auth"]["token"] == "tok-1"
    wait_queue_empty(d)
    assert len(oauth_events(d, "valid")) == 1, d.log(4000)


@pytest.mark.parametrize("out,why", [
    ("tok en\n", "characters a bearer token cannot hold"),
    ("\n", "no token"),
    ("tok\x1b[2J\n", "characters a bearer token cannot hold"),
    ("tok-1\nsoon\n", "not a lifetime"),
    ("x" * 4100 + "\n", "too long"),
    ("y" * 9000, "more than"),
], ids=["space", "empty", "escape", "lifetime", "long-token", "huge-output"])
def test_bad_command_output_is_refused(make_daemon, dns, pki, peers, workdir, cmd, out, why):
    peer = peers()
    cmd.set(out)
    d = start(make_daemon, dns, pki, peer, workdir, cmd)
    submit(d, ["bob@remote.test"], message("bad output"))
    wait_for(lambda: d.events("retry"), 8, "a deferral")
    q = mailq(d)
    assert why in q[0][5][0][1], q
    assert peer.events("connect") == []
    log = d.log(1 << 20)
    assert "\x1b" not in log and "tok en" not in log


def test_command_that_hangs_is_killed(make_daemon, dns, pki, peers, workdir, cmd,
                                      picomail_test_bin):
    peer = peers()
    cmd.sleep(60)
    d = start(make_daemon, dns, pki, peer, workdir, cmd, binary=picomail_test_bin, env=FAST)
    t0 = time.monotonic()
    submit(d, ["bob@remote.test"], message("hanging command"))
    wait_for(lambda: d.events("retry"), 10, "a deferral")
    assert time.monotonic() - t0 < 8
    assert "did not finish within 3 s" in mailq(d)[0][5][0][1]
    # Meanwhile the loop kept answering.
    c = d.session()
    c.cmd("QUIT")
    c.close()


def test_token_never_sent_without_tls(make_daemon, dns, pki, peers, workdir, cmd):
    peer = peers(cert=None, key=None, require_starttls=False)
    d = start(make_daemon, dns, pki, peer, workdir, cmd, flag="")
    submit(d, ["bob@remote.test"], message("no tls"))
    wait_for(lambda: d.events("retry"), 8, "a deferral")
    assert "without TLS" in mailq(d)[0][5][0][1]
    assert peer.events("auth") == []


def test_smarthost_without_the_mechanism(make_daemon, dns, pki, peers, workdir, cmd):
    peer = peers(auth_mech=["XOAUTH2"])
    d = start(make_daemon, dns, pki, peer, workdir, cmd, mech="oauthbearer")
    submit(d, ["bob@remote.test"], message("no such mechanism"))
    wait_for(lambda: d.events("retry"), 8, "a deferral")
    assert "offers no AUTH OAUTHBEARER" in mailq(d)[0][5][0][1]
    assert d.events("bounce") == []


def test_password_refused_as_basic_auth_names_oauth2(make_daemon, dns, pki, peers, workdir):
    """Exchange Online without basic authentication: the log says this
    smarthost needs OAuth2, once, and the mail waits."""
    peer = peers(tokens=None, refuse_basic=True)
    secret = os.path.join(workdir, "smarthost.secret")
    with open(secret, "w") as f:
        f.write("alice@example.com s3cret\n")
    os.chmod(secret, 0o600)
    from relaytest import relay_daemon
    d = relay_daemon(make_daemon, "test.lan:%d starttls" % peer.port, resolver=dns.resolver,
                     extra=["ca_file %s" % pki.ca, "smarthost_auth %s" % secret])
    submit(d, ["bob@remote.test"], message("basic"))
    wait_for(lambda: len(d.events("retry")) >= 2, 10, "two deferrals")
    why = mailq(d)[0][5][0][1]
    assert "5.7.30" in why and "needs OAuth2" in why, why
    lines = [l for l in d.log(1 << 20).splitlines() if "it needs OAuth2" in l]
    assert len(lines) == 1, lines
    assert "smarthost_auth_mech" in lines[0]
    assert d.events("bounce") == []


# --------------------------------------------------------------------------
# picomail check


def check(d):
    return subprocess.run([d.binary, "check", "-C", d.conf_path], capture_output=True,
                          text=True, timeout=10)


def test_check_validates_the_oauth_settings(make_daemon, dns, pki, peers, workdir, cmd):
    peer = peers(start=False)
    good = oauth_file(workdir)
    d = oauth_daemon(make_daemon, dns, peer, pki.ca, good, command=cmd.path, start=False)
    p = check(d)
    assert p.returncode == 0, p.stderr
    os.chmod(good, 0o640)
    p = check(d)
    assert p.returncode == 1 and "chmod 600" in p.stderr, p.stderr
    os.chmod(good, 0o600)
    for text, words in [
        ("user alice@example.com\nuser bob@example.com\n", "user twice"),
        ("colour blue\n", "unknown key 'colour'"),
        ("token_endpoint http://login.example/token\nuser a@b\n", "not an https:// URL"),
        ("client_id a b\nuser a@b\n", "no spaces"),
        ("client_secret \x01x\nuser a@b\n", "control"),
        ("client_id x\n", "no user"),
    ]:
        with open(good, "w") as f:
            f.write(text)
        p = check(d)
        assert p.returncode == 1 and words in p.stderr, (text, p.stderr)
    with open(good, "w") as f:
        f.write("user alice@example.com\n")
    for lines, words in [
        (["smarthost_auth_mech md5"], "unknown mechanism"),
        (["smarthost_auth_mech xoauth2 xoauth2"], "twice"),
        (["smarthost_token_command token.sh"], "not an absolute path"),
    ]:
        d.extra = d.extra + lines
        d.write_config()
        p = check(d)
        assert p.returncode == 1 and words in p.stderr, (lines, p.stderr)
        d.extra = d.extra[:-len(lines)]
    d.write_config()
    assert check(d).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="run_as needs root")
def test_check_as_run_as_wants_the_file_its_own(make_daemon, workdir, cmd):
    """The daemon reads the file again as run_as (and rewrites it with the
    refresh grant): a file of root's is named with the chown that fixes it."""
    import pwd
    from relaytest import relay_daemon
    nobody = pwd.getpwnam("nobody")
    os.chmod(workdir, 0o755)
    os.chmod(cmd.dir, 0o755)
    path = oauth_file(workdir)
    d = relay_daemon(make_daemon, "smarthost.test:2525", start=False, run_as="nobody",
                     extra=["smarthost_auth_mech xoauth2", "smarthost_oauth %s" % path,
                            "smarthost_token_command %s" % cmd.path])
    os.chmod(d.dir, 0o755)
    for p in (d.conf_path, d.users_path, d.aliases_path):
        os.chmod(p, 0o644)
    p = check(d)
    assert p.returncode == 1 and "chown nobody %s" % path in p.stderr, p.stderr
    os.chown(path, nobody.pw_uid, nobody.pw_gid)
    p = check(d)
    assert p.returncode == 0, p.stderr
