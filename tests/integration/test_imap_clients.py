"""IMAP with the clients people use (Debian packages): curl (imap://, imaps://),
mutt (driven through a pseudo-terminal), mbsync (isync), offlineimap3, s-nail
and fetchmail in IMAP mode.  Each does what its users do (list, headers then
bodies, flag, move to Trash, expunge, append to Sent, IDLE) and the server's
Maildir is checked afterwards: files, flags in the names, UIDs."""

import os
import pty
import select
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from imaptest import by_uid, deliver, files, flags_of, folder_dir, imap_daemon, uid_of
from picotest import free_port, lf, numbered, seq_of
from pop3test import PASSWORD

TIMEOUT = 30


def run(argv, stdin=b"", env=None, timeout=TIMEOUT, cwd=None):
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, start_new_session=True, cwd=cwd)
    try:
        out, err = p.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail("%s hung and was killed\n%s\n%s" % (argv[0], out[-2000:], err[-2000:]))
    return p.returncode, out.decode("latin-1"), err.decode("latin-1")


@pytest.fixture
def d(make_daemon):
    return imap_daemon(make_daemon)


@pytest.fixture
def home(workdir):
    h = os.path.join(workdir, "home")
    os.makedirs(h)
    return h


def seqs(d, folder="INBOX"):
    return sorted(seq_of(data) for _, data in by_uid(d, folder=folder).values())


# ---------------------------------------------------------------- curl


def test_curl(d, home):
    for i in (1, 2, 3):
        deliver(d, "alice", numbered(i))
    base = "imap://127.0.0.1:%d" % d.imap_port
    cred = ["-sS", "-u", "alice:%s" % PASSWORD]
    rc, out, err = run(["curl"] + cred + [base + "/"])
    assert rc == 0 and '"INBOX"' in out and '(\\Trash) "." "Trash"' in out, (out, err)
    rc, out, err = run(["curl"] + cred + [base + "/INBOX;UID=2;SECTION=HEADER.FIELDS%20(X-Seq)"])
    assert rc == 0 and out.replace("\r\n", "\n") == "X-Seq: 2\n\n", (out, err)
    rc, out, err = run(["curl"] + cred + [base + "/INBOX;UID=2"])
    assert rc == 0 and seq_of(lf(out.encode())) == 2
    rc, out, err = run(["curl"] + cred + [base + "/INBOX?UNSEEN"])
    assert rc == 0 and out.strip() == "* SEARCH 1 3", out       # UID 2 is \Seen now
    rc, out, err = run(["curl"] + cred + [base + "/INBOX", "-X", "UID STORE 3 +FLAGS (\\Flagged)"])
    assert rc == 0, err
    rc, out, err = run(["curl"] + cred + [base + "/INBOX", "-X", "UID MOVE 1 Trash"])
    assert rc == 0, err
    msg = os.path.join(home, "m.eml")
    with open(msg, "wb") as f:
        f.write(b"From: alice@lan\r\nSubject: sent by curl\r\n\r\nhello\r\n")
    rc, out, err = run(["curl"] + cred + [base + "/Sent", "-T", msg])
    assert rc == 0, err
    assert {uid_of(n): flags_of(n) for n in files(d)} == {2: ["\\Seen"], 3: ["\\Flagged"]}
    assert seqs(d, "Trash") == [1]
    assert [data for _, data in by_uid(d, folder="Sent").values()] == [
        b"From: alice@lan\nSubject: sent by curl\n\nhello\n"]


def test_curl_imaps(make_daemon, home):
    from tlstest import Pki
    pki = Pki(os.path.join(home, "pki"))
    port = free_port()
    d = make_daemon(start=False, extra=["listen imap 127.0.0.1:%d tls" % port],
                    tls_cert=pki.cert["ec"], tls_key=pki.key["ec"])
    d.start()
    deliver(d, "alice", numbered(1))
    rc, out, err = run(["curl", "-sS", "--cacert", pki.ca, "--resolve", "test.lan:%d:127.0.0.1" % port,
                        "-u", "alice:%s" % PASSWORD, "imaps://test.lan:%d/INBOX;UID=1" % port])
    assert rc == 0 and seq_of(lf(out.encode())) == 1, (rc, err)


# ---------------------------------------------------------------- mutt


def mutt(d, home, keys, extra=()):
    """mutt in a pseudo-terminal, running the keys pushed at start (ending
    in <quit>); bounded."""
    rc = os.path.join(home, "muttrc")
    with open(rc, "w") as f:
        f.write("set imap_user=alice\nset imap_pass=%s\nset folder=imap://127.0.0.1:%d/\n"
                "set spoolfile=+INBOX\nset record=+Sent\nset trash=+Trash\nset ssl_starttls=no\n"
                "set ssl_force_tls=no\nset mail_check=1\nset timeout=1\nset confirmappend=no\n"
                "set delete=yes\nset move=no\nset copy=yes\nset sendmail=/bin/true\n"
                "set from=alice@lan\nset use_from=yes\nset sort=mailbox-order\nset resolve=no\n" % (PASSWORD, d.imap_port))
        for line in extra:
            f.write(line + "\n")
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(TERM="vt100", HOME=home)
        os.execvp("mutt", ["mutt", "-n", "-F", rc, "-e", "push '%s'" % keys])
    out, deadline = b"", time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                out += chunk
            if os.waitpid(pid, os.WNOHANG)[0]:
                pid = 0
                break
        else:
            pytest.fail("mutt did not finish: %r" % out[-1500:])
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    return out


def test_mutt_reads_flags_deletes_to_trash_and_sends_to_sent(d, home):
    for i in (1, 2, 3):
        deliver(d, "alice", numbered(i, 300))
    mutt(d, home, "<display-message><exit><flag-message><next-entry><delete-message>"
                  "<sync-mailbox><quit>")
    inbox = {seq_of(data): flags_of(n) for n, data in by_uid(d).values()}
    assert inbox == {1: ["\\Flagged", "\\Seen"], 3: []}, inbox
    assert seqs(d, "Trash") == [2]
    rc, out, err = run(["mutt", "-n", "-F", os.path.join(home, "muttrc"), "-s", "sent by mutt",
                        "--", "bob@lan"], stdin=b"hello from mutt\n", env=dict(os.environ, HOME=home))
    assert rc == 0, (out, err)
    [(name, data)] = by_uid(d, folder="Sent").values()
    assert b"Subject: sent by mutt" in data and flags_of(name) == ["\\Seen"]


# ---------------------------------------------------------------- mbsync


def test_mbsync_both_ways(d, home):
    for i in (1, 2, 3):
        deliver(d, "alice", numbered(i))
    local = os.path.join(home, "mail")
    os.makedirs(local)
    rc_path = os.path.join(home, "mbsyncrc")
    with open(rc_path, "w") as f:
        f.write("IMAPAccount pm\nHost 127.0.0.1\nPort %d\nUser alice\nPass %s\nSSLType None\n"
                "AuthMechs LOGIN\n\nIMAPStore remote\nAccount pm\n\nMaildirStore local\n"
                "Path %s/\nInbox %s/INBOX\nSubFolders Verbatim\n\nChannel pm\nFar :remote:\n"
                "Near :local:\nPatterns *\nCreate Both\nExpunge Both\nSyncState *\n"
                % (d.imap_port, PASSWORD, local, local))
    sync = ["mbsync", "-c", rc_path, "-a", "-q"]
    rc, out, err = run(sync)
    assert rc == 0, (out, err)
    cur = os.path.join(local, "INBOX", "cur")
    for n in os.listdir(os.path.join(local, "INBOX", "new")):   # as a reader would
        os.rename(os.path.join(local, "INBOX", "new", n), os.path.join(cur, n + ":2,"))
    got = sorted(os.listdir(cur))
    assert len(got) == 3 and sorted(os.listdir(os.path.join(local, "Trash", "cur"))) == []
    # locally: flag one, delete one, write one to Sent
    def find(seq):
        for n in os.listdir(cur):
            with open(os.path.join(cur, n), "rb") as fh:
                if seq_of(fh.read()) == seq:
                    return n
    n1, n2 = find(1), find(2)
    os.rename(os.path.join(cur, n1), os.path.join(cur, n1.split(":2,")[0] + ":2,FS"))
    os.rename(os.path.join(cur, n2), os.path.join(cur, n2.split(":2,")[0] + ":2,ST"))
    with open(os.path.join(local, "Sent", "cur", "1.1.local:2,S"), "wb") as fh:
        fh.write(b"From: alice@lan\nSubject: from mbsync\nX-Seq: 77\n\nbody\nEND 77\n")
    # on the server: a new one, and a flag
    deliver(d, "alice", numbered(4))
    rc, out, err = run(sync)
    assert rc == 0, (out, err)
    inbox = {seq_of(data): flags_of(n) for n, data in by_uid(d).values()}
    assert inbox == {1: ["\\Flagged", "\\Seen"], 3: [], 4: []}, inbox
    assert seqs(d, "Sent") == [77]
    assert len(os.listdir(cur)) + len(os.listdir(os.path.join(local, "INBOX", "new"))) == 3
    rc, out, err = run(sync)                 # nothing left to do: nothing changes
    assert rc == 0 and {seq_of(data): flags_of(n) for n, data in by_uid(d).values()} == inbox


# ---------------------------------------------------------------- offlineimap


def test_offlineimap(d, home):
    for i in (1, 2):
        deliver(d, "alice", numbered(i))
    local = os.path.join(home, "mail")
    rc_path = os.path.join(home, "offlineimaprc")
    with open(rc_path, "w") as f:
        f.write("[general]\naccounts = pm\nmetadata = %s/meta\n\n[Account pm]\n"
                "localrepository = local\nremoterepository = remote\n\n[Repository local]\n"
                "type = Maildir\nlocalfolders = %s\n\n[Repository remote]\ntype = IMAP\n"
                "remotehost = 127.0.0.1\nremoteport = %d\nremoteuser = alice\nremotepass = %s\n"
                "ssl = no\nstarttls = no\n" % (home, local, d.imap_port, PASSWORD))
    sync = ["offlineimap", "-c", rc_path, "-o", "-u", "quiet"]
    rc, out, err = run(sync, env=dict(os.environ, HOME=home))
    assert rc == 0, (out, err)
    cur = os.path.join(local, "INBOX", "cur")
    for n in os.listdir(os.path.join(local, "INBOX", "new")):   # as a reader would
        os.rename(os.path.join(local, "INBOX", "new", n), os.path.join(cur, n + ":2,"))
    assert len(os.listdir(cur)) == 2
    for n in os.listdir(cur):
        with open(os.path.join(cur, n), "rb") as fh:
            seq = seq_of(fh.read())
        os.rename(os.path.join(cur, n), os.path.join(cur, n.split(":2,")[0] + (
            ":2,FS" if seq == 1 else ":2,S")))
        if seq == 2:
            os.unlink(os.path.join(cur, n.split(":2,")[0] + ":2,S"))   # deleted locally
    rc, out, err = run(sync, env=dict(os.environ, HOME=home))
    assert rc == 0, (out, err)
    assert {seq_of(data): flags_of(n) for n, data in by_uid(d).values()} == {
        1: ["\\Flagged", "\\Seen"]}


# ---------------------------------------------------------------- s-nail


def test_s_nail(d, home):
    for i in (1, 2, 3):
        deliver(d, "alice", numbered(i))
    url = "imap://alice@127.0.0.1:%d" % d.imap_port
    cmds = b"headers\nprint 1\nflag 2\nfolders\ncopy 3 +Archive\ndelete 3\nquit\n"
    rc, out, err = run(["s-nail", "-#", "-n", "-S", "v15-compat", "-S", "imap-auth=login",
                        "-S", "password-alice@127.0.0.1:%d=%s" % (d.imap_port, PASSWORD),
                        "-S", "folder=" + url, "-f", url + "/INBOX"], stdin=cmds,
                       env=dict(os.environ, HOME=home))
    assert rc == 0, (out, err)
    assert "Trash" in out and "Archive" in out and "X-Seq: 1" in out, out
    inbox = {seq_of(data): flags_of(n) for n, data in by_uid(d).values()}
    assert inbox == {1: ["\\Seen"], 2: ["\\Flagged"]}, inbox
    assert seqs(d, "Archive") == [3]


# ---------------------------------------------------------------- fetchmail


def fetchmailrc(home, d, extra=""):
    out = os.path.join(home, "out")
    mda = os.path.join(home, "mda.sh")
    with open(mda, "w") as f:
        f.write("#!/bin/sh\ncat >> %s\necho '--END--' >> %s\n" % (out, out))
    os.chmod(mda, 0o755)
    rc = os.path.join(home, "fetchmailrc")
    with open(rc, "w") as f:
        f.write('set no bouncemail\npoll 127.0.0.1 port %d protocol IMAP auth password\n'
                '  user "alice" password "%s" is root here\n  mda "%s"\n  sslproto ""\n  fetchall %s\n'
                % (d.imap_port, PASSWORD, mda, extra))
    os.chmod(rc, 0o600)
    return rc, out


def fetched(out):
    if not os.path.exists(out):
        return []
    with open(out, "rb") as f:
        return sorted(seq_of(m) for m in f.read().split(b"--END--\n") if m.strip())


def test_fetchmail_imap(d, home):
    for i in (1, 2, 3):
        deliver(d, "alice", numbered(i, 2000))
    rc_path, out = fetchmailrc(home, d)
    rc, o, e = run(["fetchmail", "-f", rc_path, "--nosyslog"], env=dict(os.environ, HOME=home))
    assert rc == 0, (o, e)
    assert fetched(out) == [1, 2, 3]
    assert files(d) == [] and files(d, sub="new") == []      # fetched and deleted


def test_fetchmail_idle(d, home):
    rc_path, out = fetchmailrc(home, d, "idle")
    p = subprocess.Popen(["fetchmail", "-f", rc_path, "--nosyslog", "-N"],
                         env=dict(os.environ, HOME=home), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not d.events("login", proto="imap") and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        deliver(d, "alice", numbered(9))
        while fetched(out) != [9] and time.monotonic() < deadline + 5:
            time.sleep(0.1)
        assert fetched(out) == [9], "fetchmail in IDLE did not get the new message"
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
