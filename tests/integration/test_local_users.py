"""sendmail for every local user (issue 13, part 2).

On a NAS, users' cron jobs call sendmail.  Here the commands run as
ordinary users of the test machine (news and games, switched to with
setpriv) against a daemon that runs as nobody, its configuration 0644 and
its spool 0711, as the README says to set them up:

- any local user submits, daemon up (the submit socket) or down (the
  maildrop), and sendmail exits 0 only once the message is on disk;
- an ordinary user's envelope sender is their own address, whatever -f
  says; root, run_as and trusted_users choose it;
- no user reads, removes or lists another's queued mail: mailq shows each
  their own, queue delete refuses another's, and the maildrop's files are
  closed to them.
Run as root (switching users needs it); skipped otherwise.
"""

import grp
import os
import pwd
import subprocess
import time

import pytest

from picotest import BIN, seq_of, numbered
from relaytest import dead_udp_port, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")

RUN_AS = "nobody"
ALICE, BOB = "news", "games"          # ordinary users every Debian system has
QUAL = "test.lan"                     # hostname, not a local domain: domains[0] qualifies
DOMAIN = "lan"
EX_OK, EX_NOPERM = 0, 77


def as_user(user, args, data=None, timeout=30):
    pw = pwd.getpwnam(user)
    cmd = ["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid, "--clear-groups",
           "--"] + args
    env = {"PATH": "/usr/bin:/bin", "HOME": "/", "TMPDIR": "/tmp"}
    return subprocess.run(cmd, input=data, capture_output=True, timeout=timeout, env=env,
                          cwd="/")


@pytest.fixture
def world(make_daemon, workdir):
    """A daemon as nobody, relaying to a dead smarthost (so that remote mail
    stays queued), every file where the README puts it."""
    os.chmod(workdir, 0o755)
    d = make_daemon(start=False, run_as=RUN_AS,
                    extra=["smarthost 127.0.0.1:1", "retry_min 1h", "retry_max 1h",
                           "resolver 127.0.0.1:%d" % dead_udp_port()])
    os.chmod(d.dir, 0o755)
    nogroup = pwd.getpwnam(RUN_AS).pw_gid
    os.chmod(d.conf_path, 0o644)
    for path in (d.users_path, d.aliases_path):
        os.chown(path, 0, nogroup)
        os.chmod(path, 0o640)
    d.start()
    return d


def sendmail(d, user, rcpts, data, *flags):
    return as_user(user, [BIN, "sendmail", "-C", d.conf_path] + list(flags) + rcpts, data)


def delivered_to(d, user):
    """Without the Received-from check: mail from the sendmail command has
    no SMTP client (its Received says "by ... (picomail sendmail, uid N)")."""
    return d.maildir(user).messages(check=False)


def test_ordinary_users_send_as_themselves(world):
    d = world
    p = sendmail(d, ALICE, ["alice@lan"], numbered(1))
    assert p.returncode == EX_OK, p
    p = sendmail(d, BOB, ["alice@lan"], numbered(2), "-f", "root@lan")
    assert p.returncode == EX_OK, p
    assert b"the sender is <games@lan>, not <root@lan>" in p.stderr, p.stderr
    got = {seq_of(m.data): m.return_path for m in delivered_to(d, "alice")}
    assert got == {1: b"<news@lan>", 2: b"<games@lan>"}, got
    # root chooses: -f stands.
    p = subprocess.run([BIN, "sendmail", "-C", d.conf_path, "-f", "backup@example.org",
                        "alice@lan"], input=numbered(3), capture_output=True, timeout=30)
    assert p.returncode == EX_OK, p
    got = {seq_of(m.data): m.return_path for m in delivered_to(d, "alice")}
    assert got[3] == b"<backup@example.org>", got
    received = {e["user"]: e for e in d.events("received") if "user" in e}
    assert received[ALICE]["uid"] == str(pwd.getpwnam(ALICE).pw_uid), received
    assert received[BOB]["from"] == "<games@lan>", received


def test_trusted_users_choose_their_sender(world):
    d = world
    d.extra.append("trusted_users %s" % BOB)
    d.write_config()
    os.chmod(d.conf_path, 0o644)
    d.stop()
    d.start()
    p = sendmail(d, BOB, ["alice@lan"], numbered(4), "-f", "monitor@lan")
    assert p.returncode == EX_OK and b"the sender is" not in p.stderr, p
    p = sendmail(d, ALICE, ["alice@lan"], numbered(5), "-f", "monitor@lan")
    assert p.returncode == EX_OK and b"the sender is <news@lan>" in p.stderr, p
    got = {seq_of(m.data): m.return_path for m in delivered_to(d, "alice")}
    assert got == {4: b"<monitor@lan>", 5: b"<news@lan>"}, got


def test_the_submit_socket_holds_users_to_their_address(world):
    """Talking SMTP to the socket directly, past the command, changes
    nothing: the daemon knows the user from the kernel."""
    d = world
    script = ("import socket,sys\n"
              "s=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1])\n"
              "f=s.makefile('rwb',0)\n"
              "def rd():\n"
              "  while True:\n"
              "    l=f.readline()\n"
              "    if l[3:4]!=b'-': return l\n"
              "rd()\n"
              "for c in [b'EHLO x',b'MAIL FROM:<ceo@bank.example>',b'RCPT TO:<alice@lan>',"
              "b'DATA']:\n"
              "  f.write(c+b'\\r\\n');sys.stdout.buffer.write(rd())\n"
              "f.write(b'Subject: forged\\r\\n\\r\\nhi\\r\\n.\\r\\n');sys.stdout.buffer.write(rd())\n")
    p = as_user(ALICE, ["/usr/bin/python3", "-c", script, os.path.join(d.spool, "submit")])
    assert p.returncode == 0, p
    lines = p.stdout.decode().splitlines()
    assert lines[1] == "250 2.1.0 Ok: the sender is <news@lan>: only trusted users choose it", \
        lines
    assert lines[-1].startswith("250"), lines
    [m] = delivered_to(d, "alice")
    assert m.return_path == b"<news@lan>", m.return_path
    assert d.events("sender-rewritten", user=ALICE, claimed="<ceo@bank.example>",
                    **{"from": "<news@lan>"})


def test_daemon_down_the_maildrop(world):
    d = world
    assert d.stop() == 0
    p = sendmail(d, ALICE, ["alice@lan"], numbered(10))
    assert p.returncode == EX_OK, p
    p = sendmail(d, BOB, ["alice@lan", "far@remote.test"], numbered(11), "-f", "root@lan")
    assert p.returncode == EX_OK, p
    drop = os.path.join(d.spool, "maildrop")
    st = os.stat(drop)
    assert st.st_mode & 0o7777 == 0o3733, oct(st.st_mode)
    files = sorted(os.listdir(drop))
    assert len(files) == 4 and all(f.endswith((".msg", ".env")) for f in files), files
    for f in files:
        fst = os.stat(os.path.join(drop, f))
        assert fst.st_mode & 0o777 == 0o640 and fst.st_gid == st.st_gid, (f, oct(fst.st_mode))
    news = [f for f in files if os.stat(os.path.join(drop, f)).st_uid == pwd.getpwnam(ALICE).pw_uid]
    # Another user can neither list the maildrop, nor read, nor remove.
    for path, what in ((drop, "list"), (os.path.join(drop, news[0]), "read")):
        p = as_user(BOB, ["/usr/bin/python3", "-c",
                          "import os,sys\n"
                          "p=sys.argv[1]\n"
                          "try:\n"
                          "  (os.listdir(p) if os.path.isdir(p) else open(p,'rb').read())\n"
                          "  print('done')\n"
                          "except PermissionError: print('refused')\n", path])
        assert p.stdout.strip() == b"refused", (what, p)
    p = as_user(BOB, ["/usr/bin/python3", "-c",
                      "import os,sys\ntry:\n  os.unlink(sys.argv[1]);print('done')\n"
                      "except PermissionError: print('refused')\n",
                      os.path.join(drop, news[0])])
    assert p.stdout.strip() == b"refused", p
    d.start()
    wait_for(lambda: len(delivered_to(d, "alice")) == 2, 10, "the maildrop picked up")
    got = {seq_of(m.data): m.return_path for m in delivered_to(d, "alice")}
    assert got == {10: b"<news@lan>", 11: b"<games@lan>"}, got
    assert os.listdir(drop) == [], os.listdir(drop)
    assert len(d.events("received", via="maildrop")) == 2
    # The remote copy waits in the queue, as games's.
    p = as_user(BOB, [BIN, "mailq", "-C", d.conf_path])
    assert b"far@remote.test" in p.stdout and b"<games@lan>" in p.stdout, p
    p = as_user(ALICE, [BIN, "mailq", "-C", d.conf_path])
    assert p.returncode == 0 and b"far@remote.test" not in p.stdout, p


def test_maildrop_while_the_daemon_runs_is_picked_up(world):
    """What lands in the maildrop while the daemon runs (the command puts
    it there when the daemon answers 4xx) is taken within the users_watch
    tick, 2 s, even without the command's notice."""
    d = world
    drop = os.path.join(d.spool, "maildrop")
    env = ("picomail-queue 1\narrival 0\nsender news@lan\nattempts 0\nnext 0\n"
           "rcpt PU alice@lan\nend\n")
    body = numbered(20).replace(b"\r\n", b"\n").decode()
    script = ("import os,sys\n"
              "d,body,env=sys.argv[1:4]\n"
              "open(os.path.join(d,'b7.msg'),'w').write(body)\n"
              "open(os.path.join(d,'b7.part'),'w').write(env)\n"
              "os.rename(os.path.join(d,'b7.part'),os.path.join(d,'b7.env'))\n")
    t0 = time.monotonic()
    p = as_user(ALICE, ["/usr/bin/python3", "-c", script, drop, body, env])
    assert p.returncode == 0, p
    wait_for(lambda: len(delivered_to(d, "alice")) == 1, 10, "delivered")
    assert time.monotonic() - t0 < 4
    [m] = delivered_to(d, "alice")
    assert seq_of(m.data) == 20 and m.return_path == b"<news@lan>"
    assert os.listdir(drop) == []


def test_mailq_and_delete_are_per_user(world):
    d = world
    for user, seq in ((ALICE, 30), (BOB, 31)):
        p = sendmail(d, user, ["far@remote.test"], numbered(seq))
        assert p.returncode == EX_OK, p
    wait_for(lambda: len(d.events("retry")) == 2, 10, "both queued and tried")
    ids = {e["user"]: e["id"] for e in d.events("received") if e.get("user") in (ALICE, BOB)}
    mine = as_user(ALICE, [BIN, "mailq", "-C", d.conf_path]).stdout.decode()
    theirs = as_user(BOB, [BIN, "mailq", "-C", d.conf_path]).stdout.decode()
    assert ids[ALICE] in mine and ids[BOB] not in mine, mine
    assert ids[BOB] in theirs and ids[ALICE] not in theirs, theirs
    root = subprocess.run([BIN, "mailq", "-C", d.conf_path], capture_output=True,
                          timeout=10).stdout.decode()
    assert ids[ALICE] in root and ids[BOB] in root, root
    p = as_user(BOB, [BIN, "queue", "delete", ids[ALICE], "-C", d.conf_path])
    assert p.returncode == EX_NOPERM, p
    p = as_user(BOB, [BIN, "queue", "flush", "-C", d.conf_path])
    assert p.returncode == EX_NOPERM, p
    p = as_user(ALICE, [BIN, "queue", "delete", ids[ALICE], "-C", d.conf_path])
    assert p.returncode == EX_OK, p
    assert d.events("deleted", id=ids[ALICE], by=ALICE)
    assert ids[ALICE] not in subprocess.run([BIN, "mailq", "-C", d.conf_path],
                                            capture_output=True, timeout=10).stdout.decode()
    # The queue itself is closed to users.
    p = as_user(BOB, ["/bin/ls", os.path.join(d.spool, "env")])
    assert p.returncode != 0, p


def test_hostile_maildrop_files_are_refused(world):
    """What a user writes into the maildrop by hand is held to the same
    rules as a client's DATA: no bare CR (SMTP smuggling towards the
    smarthost), no symbolic links, no files of someone else."""
    d = world
    assert d.stop() == 0
    drop = os.path.join(d.spool, "maildrop")
    env = ("picomail-queue 1\narrival 0\nsender ceo@bank.example\nattempts 0\nnext 0\n"
           "rcpt PU far@remote.test\nend\n")
    script = ("import os,sys\n"
              "d,name,body,env=sys.argv[1:5]\n"
              "open(os.path.join(d,name+'.msg'),'w').write(body)\n"
              "open(os.path.join(d,name+'.env'),'w').write(env)\n")
    as_user(ALICE, ["/usr/bin/python3", "-c", script, drop, "a1",
                    "Subject: x\n\nline\r.\rMAIL FROM:<x>\n", env])
    as_user(ALICE, ["/usr/bin/python3", "-c",
                    "import os,sys\nos.symlink('/etc/shadow', os.path.join(sys.argv[1],'a2.msg'))\n"
                    "open(os.path.join(sys.argv[1],'a2.env'),'w').write(sys.argv[2])\n",
                    drop, env])
    d.start()
    wait_for(lambda: os.listdir(drop) == [], 10, "the maildrop emptied")
    reasons = sorted(e["reason"] for e in d.events("refused", via="maildrop"))
    assert reasons == ["bad-bytes", "message-file"], reasons
    assert d.all_files() == [] and os.listdir(os.path.join(d.spool, "env")) == []


def test_a_silent_control_client_holds_nothing(world):
    """Every user may connect to the control socket: one who says nothing
    holds neither the mail nor, for more than 2 s, the socket."""
    import socket
    d = world
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.path.join(d.spool, "control"))
    t0 = time.monotonic()
    p = sendmail(d, ALICE, ["alice@lan"], numbered(40))
    assert p.returncode == EX_OK and time.monotonic() - t0 < 1.5, (p, time.monotonic() - t0)
    st = subprocess.run([BIN, "status", "-C", d.conf_path], capture_output=True, timeout=10)
    waited = time.monotonic() - t0
    assert st.returncode == 0 and b"uptime:" in st.stdout, st
    assert waited < 4, "status waited %.1f s behind a silent client" % waited
    s.settimeout(5)
    assert s.recv(100) == b"", "the silent client was not closed"
    s.close()
