"""Spam defence (issue 7): greet_pause, the HELO check, greylisting, DNS
blocklists and the content scanner hook.

The client here is 127.0.0.1; to be a stranger to the daemon (the defences
leave relay_from networks alone) the tests set relay_from elsewhere.  DNS
blocklists are served by a dnsmasq on loopback; the scanners are small
shell scripts in the test's directory, one per exit status, and one that
sleeps until it is killed.  Each test asserts on the SMTP replies, the
Maildir, `picomail status` and the daemon's log.
"""

import base64
import os
import socket
import stat
import time

import pytest

from picotest import assert_reply, free_port, message
from relaytest import Dnsmasq, dead_udp_port, wait_for

STRANGER = {"relay_from": "192.0.2.0/24"}   # 127.0.0.1 is then an outsider


def stranger(make_daemon, **conf):
    settings = dict(STRANGER)
    settings.setdefault("greet_pause", "0s")
    settings.update(conf)
    return make_daemon(**settings)


def deliver(d, rcpt="alice@lan", sender="sender@example.org", expect_rcpt="250",
            data=None):
    """One transaction; the RCPT reply, and the DATA end reply if RCPT passed."""
    c = d.session()
    try:
        c.expect("MAIL FROM:<%s>" % sender, "250")
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        assert_reply(r, expect_rcpt, "RCPT")
        if r.code != 250:
            return r, None
        c.expect("DATA", "354")
        c.send((data or message("spam test")) + b".\r\n")
        end = c.reply(timeout=15)
        c.expect("QUIT", "221")
        return r, end
    finally:
        c.close()


def log_has(d, text):
    return text in d.log(tail=200000)


def status_of(d, key):
    return int(d.status()[key])


# --------------------------------------------------------------------------
# greet_pause


def test_greet_pause_holds_the_banner_for_strangers(make_daemon):
    d = stranger(make_daemon, greet_pause="1s")
    t0 = time.monotonic()
    c = d.connect()
    r = c.reply(timeout=5)
    waited = time.monotonic() - t0
    assert_reply(r, "220")
    assert waited >= 0.9, "banner after %.2fs, greet_pause is 1s" % waited
    c.expect("EHLO client.example.org", "250")
    c.expect("MAIL FROM:<sender@example.org>", "250")
    c.expect("RCPT TO:<alice@lan>", "250")
    c.expect("DATA", "354")
    c.send(message("after the pause") + b".\r\n")
    assert_reply(c.reply(), "250")
    c.close()
    assert len(d.maildir("alice").messages()) == 1


def test_talking_before_the_banner_is_refused(make_daemon):
    d = stranger(make_daemon, greet_pause="1s")
    c = d.connect()
    c.send(b"EHLO spam.example\r\nMAIL FROM:<a@example.org>\r\n")
    r = c.reply(timeout=5)
    assert_reply(r, "554 5.5.1")
    assert "before the greeting" in r.text
    c.closed(5)
    assert d.maildir("alice").messages() == []
    assert status_of(d, "pregreet") == 1
    assert d.events("refused", reason="pregreet", client="127.0.0.1")
    # The daemon goes on: a patient client is served.
    r, end = deliver(d)
    assert_reply(end, "250")


@pytest.mark.parametrize("how", ["relay_from", "submission", "zero"])
def test_greet_pause_spares_lan_submission_and_zero(make_daemon, how):
    if how == "relay_from":
        d = make_daemon(greet_pause="5s")          # 127.0.0.1 is in relay_from
        port = d.port
    elif how == "submission":
        # (1s: the daemon's readiness probe goes through the smtp listener)
        sub = free_port()
        d = stranger(make_daemon, greet_pause="1s", plaintext_auth="yes",
                     extra=["listen submission 127.0.0.1:%d" % sub])
        port = sub
    else:
        d = stranger(make_daemon, greet_pause="0s")
        port = d.port
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        banner = s.recv(512)
    finally:
        s.close()
    assert banner.startswith(b"220 "), banner
    assert time.monotonic() - t0 < 0.5


# --------------------------------------------------------------------------
# HELO must be a domain or an address literal

GOOD_HELO = ["mail.example.org", "localhost", "host_1.lan", "[127.0.0.1]",
             "[IPv6:::1]", "[IPv6:2001:db8::25]", "a" * 63 + ".example"]
BAD_HELO = ["-mail.example.org", "mail-.example.org", "mail..example.org", "bad!name",
            "mail.example.org.", "[999.0.0.1]", "[IPv6:zz::1]", "[127.0.0.1",
            "a" * 64 + ".example", "ex\xe9mple.org", "$(reboot)", "../../etc"]


def test_helo_check(make_daemon):
    d = make_daemon()
    c = d.connect()
    assert_reply(c.reply(), "220")
    for name in GOOD_HELO:
        c.expect("EHLO " + name, "250")
        c.expect("HELO " + name, "250")
    for name in BAD_HELO[:4]:
        r = c.cmd("EHLO " + name)
        assert_reply(r, "501 5.5.2", "EHLO %s" % name)
        # The session goes on, and MAIL still needs a good HELO first.
        c.expect("EHLO mail.example.org", "250")
    c.close()
    for name in BAD_HELO[4:]:
        c = d.connect()
        assert_reply(c.reply(), "220")
        r = c.cmd("HELO " + name)
        assert_reply(r, "501", "HELO %r" % name)
        c.expect("MAIL FROM:<a@example.org>", "503 5.5.1")
        c.close()
    assert status_of(d, "helo_refused") >= len(BAD_HELO) - 1
    assert d.events("refused", reason="helo", helo="bad!name", client="127.0.0.1")


def test_helo_check_can_be_turned_off(make_daemon):
    d = make_daemon(helo_check="no")
    c = d.connect()
    assert_reply(c.reply(), "220")
    c.expect("EHLO bad!name", "250")
    c.close()
    assert status_of(d, "helo_refused") == 0


# --------------------------------------------------------------------------
# greylisting


def test_greylist_defers_then_passes(make_daemon):
    d = stranger(make_daemon, greylist="yes", greylist_delay="2s")
    t0 = time.monotonic()
    r, _ = deliver(d, expect_rcpt="451 4.7.1")
    assert "Greylisted" in r.text
    r, _ = deliver(d, expect_rcpt="451 4.7.1")             # too soon
    assert d.maildir("alice").messages() == []
    wait = 2.2 - (time.monotonic() - t0)
    if wait > 0:
        time.sleep(wait)
    r, end = deliver(d)                                     # the retry passes
    assert_reply(end, "250")
    r, end = deliver(d)                                     # and is remembered
    assert_reply(end, "250")
    assert len(d.maildir("alice").messages()) == 2
    # Another sender, another recipient: unknown triplets.
    deliver(d, sender="other@example.org", expect_rcpt="451 4.7.1")
    deliver(d, rcpt="bob@lan", expect_rcpt="451 4.7.1")
    # An unknown user is refused as such, never greylisted.
    deliver(d, rcpt="nobody@lan", expect_rcpt="550 5.1.1")
    st = d.status()
    assert int(st["greylist_deferred"]) == 4
    assert int(st["greylist_passed"]) == 2
    assert int(st["greylist_triplets"]) == 3
    assert d.events("refused", reason="greylist", to="<alice@lan>", client="127.0.0.1")


def test_greylist_survives_a_restart(make_daemon):
    d = stranger(make_daemon, greylist="yes", greylist_delay="1s")
    deliver(d, expect_rcpt="451 4.7.1")
    time.sleep(1.2)
    _, end = deliver(d)
    assert_reply(end, "250")
    assert d.stop() == 0                       # SIGTERM saves the table
    path = os.path.join(d.spool, "greylist")
    assert os.path.getsize(path) == 16 + 20 * 1
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not os.path.exists(path + ".tmp")
    d.start()
    _, end = deliver(d)                         # known: passes at once
    assert_reply(end, "250")
    deliver(d, sender="new@example.org", expect_rcpt="451 4.7.1")
    assert log_has(d, "greylist: 1 triplets loaded")


def test_greylist_damaged_file_is_ignored(make_daemon):
    d = stranger(make_daemon, greylist="yes", greylist_delay="1s", start=False)
    with open(os.path.join(d.spool, "greylist"), "wb") as f:
        f.write(b"picomail-grey-1\n" + b"\xff" * 37)
    d.start()
    deliver(d, expect_rcpt="451 4.7.1")
    assert log_has(d, "is damaged: starting with an empty table")


def test_greylist_spares_lan_and_authenticated(make_daemon):
    d = make_daemon(greylist="yes", greylist_delay="1h", plaintext_auth="yes")
    _, end = deliver(d)                         # relay_from (127.0.0.0/8)
    assert_reply(end, "250")
    d.stop()
    d.settings.update(STRANGER)
    d.settings["greet_pause"] = "0s"
    d.write_config()
    d.start()
    deliver(d, expect_rcpt="451 4.7.1")         # now a stranger
    c = d.session()
    token = base64.b64encode(b"\0alice\0secret").decode()
    c.expect("AUTH PLAIN " + token, "235")
    c.expect("MAIL FROM:<alice@lan>", "250")
    c.expect("RCPT TO:<bob@lan>", "250")
    c.close()
    assert int(d.status()["greylist_deferred"]) == 1


# --------------------------------------------------------------------------
# DNS blocklists

BL_RECORDS = [
    "--address=/1.0.0.127.bl.test/127.0.0.2",
    "--address=/1.0.0.127.err.test/127.255.255.254",   # "you may not ask": no verdict
    "--address=/probe.test/127.0.0.9",
]


@pytest.fixture(scope="module")
def blocklists(tmp_path_factory):
    dns = Dnsmasq(str(tmp_path_factory.mktemp("dnsbl")), BL_RECORDS, "probe.test")
    yield dns
    dns.stop()


def test_dnsbl_listed_client_gets_554(make_daemon, blocklists):
    d = stranger(make_daemon, dnsbl="clean.test bl.test",
                 extra=[blocklists.resolver])
    c = d.connect()
    r = c.reply(timeout=5)
    assert_reply(r, "554 5.7.1")
    assert "blocked using bl.test" in r.text and "[127.0.0.1]" in r.text
    # RFC 5321 3.1: then only QUIT.
    c.expect("EHLO client.example.org", "503 5.7.1")
    c.expect("MAIL FROM:<a@example.org>", "503 5.7.1")
    c.expect("QUIT", "221")
    c.closed(5)
    assert d.maildir("alice").messages() == []
    assert status_of(d, "dnsbl_listed") >= 1
    # (the readiness probe was refused too: one line each)
    refused = d.events("refused", reason="dnsbl", client="127.0.0.1")
    assert refused and all("blocked using bl.test" in e["reply"] for e in refused), refused
    assert "1.0.0.127.bl.test" in blocklists.log()


def test_dnsbl_unlisted_and_error_codes_pass(make_daemon, blocklists):
    d = stranger(make_daemon, dnsbl="clean.test err.test", extra=[blocklists.resolver])
    _, end = deliver(d)
    assert_reply(end, "250")
    assert status_of(d, "dnsbl_listed") == 0
    log = blocklists.log()
    assert "1.0.0.127.clean.test" in log and "1.0.0.127.err.test" in log


def test_dnsbl_spares_relay_from(make_daemon, blocklists):
    d = make_daemon(dnsbl="bl.test", extra=[blocklists.resolver])
    _, end = deliver(d)
    assert_reply(end, "250")


class SilentResolver:
    """A UDP socket on loopback that takes queries and never answers."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


def test_dnsbl_that_does_not_answer_lets_mail_through(make_daemon):
    silent = SilentResolver()
    try:
        d = stranger(make_daemon, dnsbl="bl.test", dnsbl_timeout="1s",
                     extra=["resolver 127.0.0.1:%d" % silent.port])
        t0 = time.monotonic()
        _, end = deliver(d)
        assert_reply(end, "250")
        assert time.monotonic() - t0 >= 0.9
        assert status_of(d, "dnsbl_unanswered") >= 1
        assert log_has(d, "dnsbl bl.test: no answer in time, not listing")
        # The loop was never blocked: another client is answered meanwhile.
        t0 = time.monotonic()
        c = d.connect()
        assert_reply(c.reply(timeout=5), "220")
        c.close()
    finally:
        silent.close()


# --------------------------------------------------------------------------
# the content scanner

SCANNER = """#!/bin/sh
# Records its arguments and what it read, then exits as told.
printf '%s\\n' "$@" > "{dir}/args"
cat > "{dir}/seen"
{tail}
"""


def in_data(d):
    """A session at DATA's 354, for a message to alice."""
    c = d.session()
    c.expect("MAIL FROM:<sender@example.org>", "250")
    c.expect("RCPT TO:<alice@lan>", "250")
    c.expect("DATA", "354")
    return c


def wait_gone(pid):
    """Waits until the process has ended (gone, or a zombie of its parent)."""
    def gone():
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().split()[2] == "Z"
        except FileNotFoundError:
            return True
    wait_for(gone, 5, "process %d to end" % pid)


def scanner(workdir, name, tail):
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write(SCANNER.format(dir=workdir, tail=tail))
    os.chmod(path, 0o755)
    return path


@pytest.mark.parametrize("code,reply", [(0, "250"), (1, "554 5.7.0"), (75, "451 4.3.0"),
                                        (2, "451 4.3.0")])
def test_scanner_exit_status_decides(make_daemon, workdir, code, reply):
    prog = scanner(workdir, "scan%d.sh" % code, "exit %d" % code)
    d = make_daemon(scanner=prog + " --no-summary -")
    body = message("scan me", body=b"X5O!P%@AP EICAR-LIKE\r\n")
    _, end = deliver(d, data=body)
    assert_reply(end, reply)
    msgs = d.maildir("alice").messages()
    assert len(msgs) == (1 if code == 0 else 0)
    assert d.maildir("alice").tmp() == []
    with open(os.path.join(workdir, "seen"), "rb") as f:
        seen = f.read()
    assert b"EICAR-LIKE" in seen and seen.startswith(b"Return-Path: <sender@example.org>")
    with open(os.path.join(workdir, "args")) as f:
        assert f.read() == "--no-summary\n-\n"
    st = d.status()
    key = {0: "scanner_accepted", 1: "scanner_rejected"}.get(code, "scanner_tempfail")
    assert int(st[key]) == 1
    assert int(st["scanner_running"]) == 0


def test_scanner_arguments_never_see_a_shell(make_daemon, workdir):
    prog = scanner(workdir, "scan.sh", "exit 0")
    d = make_daemon(scanner=prog + " $(touch%s/owned) ;id |x" % workdir)
    _, end = deliver(d)
    assert_reply(end, "250")
    with open(os.path.join(workdir, "args")) as f:
        assert f.read() == "$(touch%s/owned)\n;id\n|x\n" % workdir
    assert not os.path.exists(os.path.join(workdir, "owned"))


def test_scanner_that_hangs_is_killed(make_daemon, workdir):
    prog = scanner(workdir, "hang.sh", 'echo $$ > "%s/pid"\nexec sleep 600' % workdir)
    d = make_daemon(scanner=prog, scanner_timeout="1s")
    c = in_data(d)
    t0 = time.monotonic()
    c.send(message("hang") + b".\r\nNOOP\r\n")
    # Meanwhile the daemon serves others: the scan is watched, not waited for.
    other = d.session()
    other.expect("NOOP", "250")
    other.close()
    assert time.monotonic() - t0 < 0.9
    r = c.reply(timeout=10)
    assert_reply(r, "451 4.3.0")
    assert 0.9 <= time.monotonic() - t0 < 5
    assert_reply(c.reply(), "250")             # the pipelined NOOP, after
    c.close()
    with open(os.path.join(workdir, "pid")) as f:
        pid = int(f.read())
    wait_gone(pid)
    assert d.maildir("alice").messages() == [] and d.maildir("alice").tmp() == []
    st = d.status()
    assert int(st["scanner_timeouts"]) == 1
    wait_for(lambda: int(d.status()["scanner_running"]) == 0, 5, "scanner reaped")
    assert d.events("refused", reason="scanner-timeout")


def test_scanner_missing_program_is_temporary(make_daemon, workdir):
    d = make_daemon(scanner=os.path.join(workdir, "no-such-scanner"))
    _, end = deliver(d)
    assert_reply(end, "451 4.3.0")
    assert d.maildir("alice").messages() == []


def test_scanner_client_gone_while_scanning(make_daemon, workdir):
    prog = scanner(workdir, "slow.sh", 'echo $$ > "%s/pid"\nexec sleep 600' % workdir)
    d = make_daemon(scanner=prog, scanner_timeout="30s")
    c = in_data(d)
    c.send(message("gone") + b".\r\n")
    wait_for(lambda: os.path.exists(os.path.join(workdir, "pid")), 5, "scanner started")
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    # A shutdown ends the session: its scanner is killed with it, and
    # nothing was acknowledged, so nothing is delivered.
    with open(os.path.join(workdir, "pid")) as f:
        pid = int(f.read())
    assert d.stop() == 0
    wait_gone(pid)
    assert d.maildir("alice").messages() == [] and d.maildir("alice").tmp() == []


def test_scanner_sees_relayed_mail_before_the_queue(make_daemon, workdir):
    """A message leaving the host is scanned too: refused, nothing queued."""
    prog = scanner(workdir, "reject.sh", "exit 1")
    d = make_daemon(scanner=prog, extra=["resolver 127.0.0.1:%d" % dead_udp_port()])
    r, end = deliver(d, rcpt="someone@example.net")
    assert_reply(end, "554 5.7.0")
    with open(os.path.join(workdir, "seen"), "rb") as f:
        assert b"spam test" in f.read()
    for sub in ("tmp", "msg", "env"):
        assert os.listdir(os.path.join(d.spool, sub)) == [], sub
    assert int(d.status()["queue_length"]) == 0
