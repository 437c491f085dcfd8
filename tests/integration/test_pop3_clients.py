"""POP3 with the clients people use: fetchmail, mpop (Debian packages) and
BusyBox's popmaildir (built from Debian's source by tests/tools/busybox.sh).

Each message goes in over SMTP and comes out of the client's folder; the
comparison is byte for byte: what the client wrote, minus the one header the
client adds (matched exactly), equals the stored Maildir file, which is the
Return-Path and Received headers picomail adds followed by the message as sent
(LF line ends; popmaildir keeps CRLF).
"""

import os
import re
import shutil
import signal
import subprocess

import pytest

from picotest import ROOT, Stored, lf, seq_of
from pop3test import (PASSWORD, Pop, deliver, deliver_numbered, login_retrying,
                      mailbox, names, pop3_daemon, top_of)

BUSYBOX = os.environ.get("PICOMAIL_BUSYBOX", os.path.join(ROOT, "build", "busybox", "busybox"))
CLIENT_TIMEOUT = 20     # seconds; a hung client is killed and the test fails

# What the clients get: every line shape that a POP3 server or client could
# get wrong.  Each has an X-Seq header to match it after the fetch.
CLIENT_MESSAGES = [
    b"From: <sender@example.org>\r\nTo: alice@lan\r\nSubject: plain\r\nX-Seq: 1\r\n\r\n"
    b"Hello Alice.\r\nSecond line.\r\n",
    b"Subject: dots\r\nX-Seq: 2\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n...\r\n"
    b" . space dot\r\n.END\r\nlast\r\n",
    b"Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\nX-Seq: 3\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\ngr\xc3\xbc\xc3\x9fe \xe2\x82\xac\r\n\ttab\r\n"
    b"trailing space \r\n\r\n\r\nafter two empty lines\r\n",
    b"Subject: long line\r\nX-Seq: 4\r\n\r\n" + b"L" * 998 + b"\r\n",
    b"Subject: empty body\r\nX-Seq: 5\r\n\r\n",
    b"Subject: from line\r\nX-Seq: 6\r\n\r\nFrom the start of a line\r\n>From quoted\r\n",
    b"Subject: folded\r\n header\r\nX-Seq: 7\r\n\r\n" + b"".join(
        b"%06d the quick brown fox jumps over the lazy dog .\r\n" % k for k in range(3000)),
]


def client_messages(d, user, messages=CLIENT_MESSAGES):
    """Delivers the messages over SMTP in order; returns the stored files
    (Maildir data, LF), each checked against what was sent."""
    for data in messages:
        deliver(d, user, data)
    stored = mailbox(d, user)
    assert len(stored) == len(messages)
    for m, sent in zip(stored, messages):
        s = Stored(m.path).check()           # Return-Path, Received: from, W=, no CR
        assert s.body == lf(sent), "stored message %d is not what was sent" % seq_of(m.data)
    return stored


def run(argv, stdin=b"", env=None, timeout=CLIENT_TIMEOUT):
    """Runs a client in its own process group; on a timeout the group is
    killed (by the PID we started) and the test fails."""
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        out, err = p.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail("%s hung for %d s and was killed\nstdout: %s\nstderr: %s" % (
            argv[0], timeout, out.decode("latin-1")[-3000:], err.decode("latin-1")[-3000:]))
    return p.returncode, out.decode("latin-1"), err.decode("latin-1")


def dialogue(log, tail=60):
    """The commands and status lines of a client's debug log, without the
    message lines: what to show when a fetch fails."""
    keep = [l for l in log.splitlines()
            if l.startswith(("-->", "<-- +", "<-- -", "fetchmail: POP3> ", "mpop:", "fetchmail:"))
            or "POP3< +" in l or "POP3< -" in l]
    return "\n".join(keep[-tail:])


def need(tool):
    path = shutil.which(tool)
    if path is None:
        pytest.fail("%s is not installed: bash board/common/deps.sh pkg:%s" % (tool, tool),
                    pytrace=False)
    return path


def read_dir(path):
    out = []
    for n in sorted(os.listdir(path)):
        with open(os.path.join(path, n), "rb") as f:
            out.append(f.read())
    return out


def by_seq(fetched):
    out = {}
    for data in fetched:
        s = seq_of(lf(data))
        assert s is not None, "a fetched message without X-Seq: %r" % data[:300]
        assert s not in out, "message X-Seq %d fetched twice" % s
        out[s] = data
    return out


def assert_fetched(fetched, stored, strip, what):
    """fetched: the client's files; strip(data) removes exactly the header the
    client added; the rest must equal the stored file."""
    got = by_seq(fetched)
    want = {seq_of(m.data): m for m in stored}
    assert sorted(got) == sorted(want), "%s fetched X-Seq %r, want %r" % (
        what, sorted(got), sorted(want))
    for s, data in sorted(got.items()):
        body = strip(data)
        assert body == want[s].data, "%s: message %d differs from the stored file\n" \
            "got:  %r\nwant: %r" % (what, s, body[:400], want[s].data[:400])


def server_left(d, user):
    return len(names(d, user, "new")) + len(names(d, user, "cur"))


# ---------------------------------------------------------------- fetchmail


# fetchmail keeps Return-Path first and inserts its Received after it.
FETCHMAIL_RECEIVED = re.compile(
    rb"Received: from 127\.0\.0\.1 \[127\.0\.0\.1\]\n"
    rb"\tby [^\n]+ with POP3 \(fetchmail-[0-9.]+\)\n"
    rb"\tfor <(?P<user>[^>\n]+)@localhost> \(single-drop\); [^\n]+\n")


def strip_fetchmail(data):
    i = data.index(b"\n") + 1
    assert data.startswith(b"Return-Path: "), "fetchmail's message: %r" % data[:200]
    m = FETCHMAIL_RECEIVED.match(data, i)
    assert m, "no fetchmail Received: header after Return-Path: %r" % data[:400]
    return data[:i] + data[m.end():]


def fetchmail(d, workdir, user, keep=False, name="fm"):
    need("fetchmail")
    home = os.path.join(workdir, name)
    out = os.path.join(home, "out")
    os.makedirs(out, exist_ok=True)
    rc = os.path.join(home, "fetchmailrc")
    with open(rc, "w") as f:
        f.write("set no bouncemail\n"
                "poll 127.0.0.1 service %d protocol pop3 auth password timeout 10 %s\n"
                "    user \"%s\" there with password \"%s\" is \"%s\" here\n"
                "    sslproto '' no rewrite %s\n"
                "    mda \"/bin/sh -c 'cat > %s/msg.$$'\"\n"
                % (d.pop3_port, "uidl" if keep else "", user, PASSWORD, user,
                   "keep" if keep else "nokeep", out))
    os.chmod(rc, 0o600)
    env = dict(os.environ, HOME=home, LC_ALL="C")
    env.pop("FETCHMAILHOME", None)
    code, o, e = run(["fetchmail", "--nosyslog", "-v", "-f", rc,
                      "--pidfile", os.path.join(home, "fetchmail.pid"),
                      "-i", os.path.join(home, "fetchids")], env=env)
    return code, o + e, out


def test_fetchmail_fetches_and_deletes(make_daemon, workdir):
    d = pop3_daemon(make_daemon)
    stored = client_messages(d, "alice")
    code, log, out = fetchmail(d, workdir, "alice")
    assert code == 0, "fetchmail exit %d\n%s" % (code, dialogue(log))
    assert_fetched(read_dir(out), stored, strip_fetchmail, "fetchmail")
    assert server_left(d, "alice") == 0, "fetchmail's DELE+QUIT left messages on the server"
    # nothing more to fetch: exit 1 (RFC: no mail)
    code, log, out2 = fetchmail(d, workdir, "alice", name="fm2")
    assert code == 1, "second fetchmail run: exit %d\n%s" % (code, dialogue(log))
    assert os.listdir(out2) == []


def test_fetchmail_keep_uses_uidl(make_daemon, workdir):
    d = pop3_daemon(make_daemon)
    stored = client_messages(d, "bob", CLIENT_MESSAGES[:3])
    code, log, out = fetchmail(d, workdir, "bob", keep=True)
    assert code == 0, dialogue(log)
    assert_fetched(read_dir(out), stored, strip_fetchmail, "fetchmail keep")
    assert server_left(d, "bob") == 3
    # the same UIDLs: nothing new
    for n in os.listdir(out):
        os.unlink(os.path.join(out, n))
    code, log, _ = fetchmail(d, workdir, "bob", keep=True)
    assert code == 1, "fetchmail fetched again what it had seen (UIDL): exit %d\n%s" % (
        code, dialogue(log))
    assert os.listdir(out) == []
    # a new message, and a daemon restart in between: only the new one comes
    deliver(d, "bob", CLIENT_MESSAGES[3])
    d.stop()
    d.start()
    code, log, _ = fetchmail(d, workdir, "bob", keep=True)
    assert code == 0, dialogue(log)
    new = [m for m in mailbox(d, "bob") if seq_of(m.data) == 4]
    assert_fetched(read_dir(out), new, strip_fetchmail, "fetchmail keep, after a restart")
    assert server_left(d, "bob") == 4


# ---------------------------------------------------------------- mpop


# mpop puts its Received first, before everything.
MPOP_RECEIVED = re.compile(
    rb"Received: from 127\.0\.0\.1 \(localhost \[127\.0\.0\.1\]\)\n"
    rb"\tby [^\n]+ \(mpop-[0-9.]+\) with POP3\n"
    rb"\tfor <[^>\n]+>; [^\n]+\n")


def strip_mpop(data):
    m = MPOP_RECEIVED.match(data)
    assert m, "no mpop Received: header first: %r" % data[:300]
    return data[m.end():]


def mpop(d, workdir, user, auth="user", keep=False, name="mpop"):
    need("mpop")
    home = os.path.join(workdir, name)
    box = os.path.join(home, "Maildir")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(box, sub), exist_ok=True)
    rc = os.path.join(home, "mpoprc")
    with open(rc, "w") as f:
        f.write("defaults\n"
                "tls off\n"
                "timeout 5\n"
                "account %s\n"
                "host 127.0.0.1\n"
                "port %d\n"
                "user %s\n"
                "password %s\n"
                "auth %s\n"
                "delivery maildir %s\n"
                "uidls_file %s\n"
                "keep %s\n"
                % (user, d.pop3_port, user, PASSWORD, auth, box,
                   os.path.join(home, "uidls"), "on" if keep else "off"))
    os.chmod(rc, 0o600)
    env = dict(os.environ, HOME=home, LC_ALL="C")
    code, o, e = run(["mpop", "-C", rc, "--debug", user], env=env)
    return code, o + e, os.path.join(box, "new")


def test_mpop_user_pass_fetches_and_deletes(make_daemon, workdir):
    d = pop3_daemon(make_daemon)
    stored = client_messages(d, "alice")
    code, log, new = mpop(d, workdir, "alice")
    assert code == 0, "mpop exit %d\n%s" % (code, dialogue(log))
    assert "--> USER alice" in log, "mpop did not use USER/PASS"
    assert_fetched(read_dir(new), stored, strip_mpop, "mpop")
    assert server_left(d, "alice") == 0, "mpop's DELE+QUIT left messages on the server"


def test_mpop_auth_plain_keep_uses_uidl(make_daemon, workdir):
    d = pop3_daemon(make_daemon)
    stored = client_messages(d, "bob", CLIENT_MESSAGES[:4])
    code, log, new = mpop(d, workdir, "bob", auth="plain", keep=True)
    assert code == 0, dialogue(log)
    assert "--> AUTH PLAIN" in log, "mpop did not use AUTH PLAIN:\n" + dialogue(log)
    assert_fetched(read_dir(new), stored, strip_mpop, "mpop AUTH PLAIN")
    assert server_left(d, "bob") == 4
    for n in os.listdir(new):
        os.unlink(os.path.join(new, n))
    deliver(d, "bob", CLIENT_MESSAGES[4])
    code, log, new = mpop(d, workdir, "bob", auth="plain", keep=True)
    assert code == 0, dialogue(log)
    want = [m for m in mailbox(d, "bob") if seq_of(m.data) == 5]
    assert_fetched(read_dir(new), want, strip_mpop, "mpop keep: only the new message")


def test_mpop_many_messages_pipelined(make_daemon, workdir):
    """mpop pipelines its RETR and DELE commands (CAPA PIPELINING)."""
    d = pop3_daemon(make_daemon)
    n = 40
    deliver_numbered(d, "alice", range(1, n + 1), size=2000)
    stored = mailbox(d, "alice")
    code, log, new = mpop(d, workdir, "alice")
    assert code == 0, "mpop exit %d with %d messages\n%s" % (code, n, dialogue(log))
    assert_fetched(read_dir(new), stored, strip_mpop, "mpop, %d messages" % n)
    assert server_left(d, "alice") == 0


def test_mpop_against_a_locked_mailbox(make_daemon, workdir):
    d = pop3_daemon(make_daemon)
    deliver_numbered(d, "alice", [1, 2])
    before = [(m.name, m.data) for m in mailbox(d, "alice")]
    with Pop(d.pop3_port) as holder:
        holder.login()
        code, log, new = mpop(d, workdir, "alice")
        assert code != 0, "mpop succeeded on a mailbox locked by another session\n" + dialogue(log)
        assert "[IN-USE]" in log, dialogue(log)
        assert os.listdir(new) == []
        holder.quit()
    after = [(m.base, m.data) for m in mailbox(d, "alice")]
    assert after == before, "the locked mailbox changed"


# ---------------------------------------------------------------- BusyBox popmaildir


@pytest.fixture(scope="module")
def busybox():
    if not os.access(BUSYBOX, os.X_OK):
        pytest.skip("%s not built (bash tests/tools/busybox.sh build/busybox)" % BUSYBOX)
    return BUSYBOX


def popmaildir(d, workdir, busybox, opts=(), user="alice", password=PASSWORD, name="bb"):
    box = os.path.join(workdir, name)
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(box, sub), exist_ok=True)
    # The form that works: user and password on stdin, DIR -- helper.
    code, o, e = run([busybox, "popmaildir"] + list(opts) + [box, "--", busybox, "nc",
                     "127.0.0.1", str(d.pop3_port)],
                     stdin=("%s\n%s\n" % (user, password)).encode())
    return code, o + e, os.path.join(box, "new")


def test_busybox_popmaildir_fetches_and_deletes(make_daemon, workdir, busybox):
    d = pop3_daemon(make_daemon)
    stored = client_messages(d, "alice")
    code, log, new = popmaildir(d, workdir, busybox)
    assert code == 0, "popmaildir exit %d: %s" % (code, log)
    # popmaildir keeps the CRLF line ends and adds nothing
    got = by_seq(read_dir(new))
    assert sorted(got) == [seq_of(m.data) for m in stored]
    for m in stored:
        assert got[seq_of(m.data)] == m.wire, "popmaildir: message %d differs" % seq_of(m.data)
    # without -k it sends DELE for each and QUIT
    assert server_left(d, "alice") == 0, "popmaildir (no -k) left messages on the server"
    assert d.maildir("alice").tmp() == []


def test_busybox_popmaildir_keep_and_top(make_daemon, workdir, busybox):
    d = pop3_daemon(make_daemon)
    stored = client_messages(d, "bob", CLIENT_MESSAGES[:4])
    code, log, new = popmaildir(d, workdir, busybox, ["-k"], user="bob")
    assert code == 0, log
    got = by_seq(read_dir(new))
    assert {s: got[s] for s in got} == {seq_of(m.data): m.wire for m in stored}
    assert server_left(d, "bob") == 4, "popmaildir -k deleted messages"
    # -T: TOP n lines instead of RETR
    code, log, new = popmaildir(d, workdir, busybox, ["-k", "-T", "-H", "1"], user="bob",
                                name="bb-top")
    assert code == 0, log
    got = by_seq(read_dir(new))
    assert got == {seq_of(m.data): top_of(m.wire, 1) for m in stored}
    assert server_left(d, "bob") == 4


def test_busybox_popmaildir_bad_password(make_daemon, workdir, busybox):
    d = pop3_daemon(make_daemon)
    deliver_numbered(d, "alice", [1])
    code, log, new = popmaildir(d, workdir, busybox, password="wrong")
    assert code != 0, "popmaildir succeeded with a wrong password"
    assert "Authentication failed" in log or "[AUTH]" in log, log
    assert os.listdir(new) == []
    c = login_retrying(d.pop3_port)
    with c:
        assert c.stat()[0] == 1
        c.quit()
