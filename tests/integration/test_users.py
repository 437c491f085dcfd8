"""Mailbox management: per-user quota (452 4.2.2), `picomail users`, and
`picomail passwd USER` / `useradd` / `userdel` rewriting the users file
atomically while the daemon runs and picks the change up by itself (no
SIGHUP).  Assertions are on the SMTP/POP3 replies and on the Maildirs."""

import os
import poplib
import stat
import subprocess
import time

from picotest import Client, assert_reply, message, send_transaction
from pop3test import PASSWORD, pop3_daemon

PICKUP = 4.0   # the daemon stats the users file every 2 s


def body(size):
    """A message of about size octets (LF form, with the trace headers)."""
    line = b"x" * 70 + b"\r\n"
    return message("quota", line * (size // len(line)))


def tool(d, *args, stdin=None):
    return subprocess.run([d.binary] + list(args) + ["-C", d.conf_path], capture_output=True,
                          timeout=30, input=stdin)


def ask(d, cmd, user, password=None):
    p = tool(d, cmd, user, stdin=(password + "\n").encode() if password is not None else b"")
    return p


def send(d, rcpt, data):
    """One transaction; returns (RCPT reply, end-of-DATA reply or None)."""
    with d.session() as c:
        c.expect("MAIL FROM:<sender@example.org>", "250")
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        if r.code != 250:
            return r, None
        c.expect("DATA", "354")
        c.send(data + b".\r\n")
        return r, c.reply()


def usage(d, user):
    msgs = d.maildir(user).messages()
    return len(msgs), sum(len(m.data) for m in msgs)


def pop_login(d, user, password):
    p = poplib.POP3("127.0.0.1", d.pop3_port, timeout=5)
    try:
        p.user(user)
        p.pass_(password)
        return True
    except poplib.error_proto:
        return False
    finally:
        try:
            p.quit()
        except (poplib.error_proto, OSError):
            pass


def wait_for(pred, timeout=PICKUP):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


# ------------------------------------------------------------------- quota


def test_quota_end_of_data_refuses_whole_message(make_daemon):
    d = make_daemon(quota="8K")
    msg = body(3000)
    for i in range(2):
        r, end = send(d, "alice@lan", msg)
        assert_reply(r, "250", "RCPT %d" % i)
        assert_reply(end, "250", "message %d" % i)
    before = usage(d, "alice")
    assert before[0] == 2 and before[1] < 8192, before
    # The third would go over 8K: refused at the end of DATA, nothing kept.
    r, end = send(d, "alice@lan", msg)
    assert_reply(r, "250", "RCPT while under quota")
    assert_reply(end, "452 4.2.2", "third message over quota")
    assert usage(d, "alice") == before, "a refused message was kept"
    d.maildir("alice").assert_clean()
    # Another user has room; a message for both is refused as a whole.
    r, end = send(d, "bob@lan", msg)
    assert_reply(end, "250", "bob is under quota")
    with d.session() as c:
        c.expect("MAIL FROM:<sender@example.org>", "250")
        c.expect("RCPT TO:<bob@lan>", "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        c.send(msg + b".\r\n")
        assert_reply(c.reply(), "452 4.2.2", "one reply per message")
    assert usage(d, "bob")[0] == 1, "bob got a message that was refused"
    assert usage(d, "alice") == before


def test_quota_rcpt_refused_when_full_and_size_hint(make_daemon):
    d = make_daemon(quota="4K")
    # Fill alice over her quota by hand (a file without ,S=: stat'd).
    new = os.path.join(d.mail_root, "alice", "new")
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(d.mail_root, "alice", sub), exist_ok=True)
    with open(os.path.join(new, "1.handmade.host"), "wb") as f:
        f.write(b"x" * 5000)
    with d.session() as c:
        c.expect("MAIL FROM:<sender@example.org>", "250")
        assert_reply(c.cmd("RCPT TO:<alice@lan>"), "452 4.2.2", "RCPT to a full mailbox")
        # An alias that leads to her is refused the same way.
        assert_reply(c.cmd("RCPT TO:<al@lan>"), "452 4.2.2", "RCPT through an alias")
        c.expect("RCPT TO:<bob@lan>", "250")
    # MAIL SIZE= larger than the room left is refused at RCPT.
    with d.session() as c:
        c.expect("MAIL FROM:<sender@example.org> SIZE=5000", "250")
        assert_reply(c.cmd("RCPT TO:<bob@lan>"), "452 4.2.2", "SIZE= over bob's quota")
        c.expect("RSET", "250")
        c.expect("MAIL FROM:<sender@example.org> SIZE=100", "250")
        c.expect("RCPT TO:<bob@lan>", "250")
    # Room made (the file removed): accepted again, no restart.
    os.unlink(os.path.join(new, "1.handmade.host"))
    r, end = send(d, "alice@lan", body(500))
    assert_reply(end, "250", "after making room")


def test_per_user_quota_overrides(make_daemon):
    d = make_daemon(start=False, quota="4K")
    with open(d.users_path) as f:
        lines = f.read().splitlines()
    # alice: no quota at all; bob: 12K instead of 4K.
    lines = [lines[0] + ":0", lines[1] + ":12K"]
    with open(d.users_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    d.start()
    msg = body(3000)
    for i in range(3):
        assert_reply(send(d, "bob@lan", msg)[1], "250", "bob under 12K (%d)" % i)
    assert_reply(send(d, "bob@lan", msg)[1], "452 4.2.2", "bob's own quota")
    assert usage(d, "bob")[0] == 3
    for i in range(5):
        assert_reply(send(d, "alice@lan", msg)[1], "250", "alice has no quota (%d)" % i)


def test_queue_delivery_over_quota_stays_pending(make_daemon):
    # The sendmail command queues by itself while the daemon is down; the
    # daemon's queue then finds alice over quota and keeps the message.
    d = make_daemon(start=False, quota="4K")
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(d.mail_root, "alice", sub), exist_ok=True)
    hand = os.path.join(d.mail_root, "alice", "cur", "1.handmade.host:2,S")
    with open(hand, "wb") as f:
        f.write(b"x" * 5000)
    p = subprocess.run([d.binary, "sendmail", "-C", d.conf_path, "alice@lan"],
                       input=b"Subject: queued\n\nhello\n", capture_output=True, timeout=30)
    assert p.returncode == 0, p
    d.start()
    assert wait_for(lambda: d.events("delivered", status="deferred",
                                     reply="452 4.2.2 mailbox full"), 5), d.log()
    # the run ends (retry) once its rewritten envelope, which mailq reads,
    # is durable
    assert wait_for(lambda: d.events("retry"), 5), d.log()
    q = tool(d, "mailq")
    assert b"452 4.2.2 mailbox full" in q.stdout, q.stdout
    assert os.listdir(os.path.join(d.mail_root, "alice", "new")) == []
    # Room made: the next run delivers it.
    os.unlink(hand)
    assert tool(d, "queue", "flush").returncode == 0
    assert wait_for(lambda: len(d.maildir("alice").messages(check=False)) == 1, 5), d.log()


# ------------------------------------------------------------- picomail users


def test_users_listing(make_daemon):
    d = make_daemon(quota="1M")
    for _ in range(2):
        assert_reply(send(d, "alice@lan", body(1000))[1], "250")
    n, size = usage(d, "alice")
    p = tool(d, "users")
    assert p.returncode == 0, p.stderr
    rows = {}
    for line in p.stdout.decode().splitlines()[1:]:
        if line.startswith("--"):
            continue
        f = line.split()
        rows[f[0]] = f[1:]
    assert rows["alice"][:3] == [str(n), str(size), str(1024 * 1024)], rows
    assert rows["bob"][:3] == ["0", "0", str(1024 * 1024)], rows
    assert "2 users" in p.stdout.decode()


# ---------------------------------------------------- passwd, useradd, userdel


def test_passwd_changes_password_live(make_daemon):
    d = pop3_daemon(make_daemon)
    # Comments, blank lines and odd spacing are kept byte for byte.
    with open(d.users_path, "rb") as f:
        original = f.read()
    head = b"# users of the box\n\n"
    tail = b"  # trailing comment\r\ncarol:*:2M   # locked\n"
    alice, bob = original.split(b"\n")[:2]
    with open(d.users_path, "wb") as f:
        f.write(head + alice + b":5M # alice's line\n" + bob + b"\n" + tail)
    os.chmod(d.users_path, 0o640)
    assert wait_for(lambda: "users reloaded" in d.log()), d.log()
    assert pop_login(d, "alice", PASSWORD)
    p = ask(d, "passwd", "alice", "n3w-pass")
    assert p.returncode == 0, p.stderr
    with open(d.users_path, "rb") as f:
        after = f.read()
    lines = after.split(b"\n")
    assert after.startswith(head) and after.endswith(b"\n" + bob + b"\n" + tail), after
    assert lines[2].startswith(b"alice:$6$") and lines[2].endswith(b":5M # alice's line"), lines
    assert lines[2] != alice + b":5M # alice's line"
    assert stat.S_IMODE(os.stat(d.users_path).st_mode) == 0o640
    assert not os.path.exists(d.users_path + ".tmp")
    # No SIGHUP: the daemon sees the new file within a few seconds.
    assert wait_for(lambda: pop_login(d, "alice", "n3w-pass")), d.log()
    assert not pop_login(d, "alice", PASSWORD)
    assert pop_login(d, "bob", PASSWORD)


def test_passwd_unknown_user_and_no_password(make_daemon):
    d = make_daemon(start=False)
    with open(d.users_path, "rb") as f:
        original = f.read()
    p = ask(d, "passwd", "nobody", "x")
    assert p.returncode == 1 and b"no user" in p.stderr, p
    p = ask(d, "passwd", "alice", None)
    assert p.returncode == 1, p
    with open(d.users_path, "rb") as f:
        assert f.read() == original
    # Plain `picomail passwd` still prints a hash.
    p = subprocess.run([d.binary, "passwd"], input=b"pw\n", capture_output=True, timeout=10)
    assert p.returncode == 0 and p.stdout.startswith(b"$6$"), p


def test_useradd_then_delivery_without_restart(make_daemon):
    d = make_daemon()
    with d.session() as c:
        c.expect("MAIL FROM:<sender@example.org>", "250")
        assert_reply(c.cmd("RCPT TO:<dave@lan>"), "550 5.1.1", "before useradd")
    p = ask(d, "useradd", "dave", "pw")
    assert p.returncode == 0, p.stderr
    with open(d.users_path) as f:
        assert f.read().splitlines()[-1].startswith("dave:$6$")

    def accepted():
        with d.session() as c:
            c.expect("MAIL FROM:<sender@example.org>", "250")
            return c.cmd("RCPT TO:<dave@lan>").code == 250
    assert wait_for(accepted), d.log()
    assert_reply(send(d, "dave@lan", message("hi"))[1], "250")
    assert usage(d, "dave")[0] == 1
    # Existing and invalid names are refused, the file untouched.
    with open(d.users_path, "rb") as f:
        before = f.read()
    for bad in ("dave", "alice", "Eve", ".hidden", "a/b", "x" * 200, "a:b"):
        p = ask(d, "useradd", bad, "pw")
        assert p.returncode == 1, (bad, p)
    with open(d.users_path, "rb") as f:
        assert f.read() == before


def test_userdel_then_unknown(make_daemon):
    d = make_daemon()
    assert_reply(send(d, "bob@lan", message("keep"))[1], "250")
    p = tool(d, "userdel", "bob")
    assert p.returncode == 0, p.stderr
    with open(d.users_path) as f:
        assert [l.split(":")[0] for l in f.read().splitlines()] == ["alice"]

    def refused():
        with d.session() as c:
            c.expect("MAIL FROM:<sender@example.org>", "250")
            return c.cmd("RCPT TO:<bob@lan>").matches("550 5.1.1")
    assert wait_for(refused), d.log()
    assert usage(d, "bob")[0] == 1, "the Maildir is left alone"
    p = tool(d, "userdel", "bob")
    assert p.returncode == 1 and b"no user" in p.stderr


def test_bad_users_file_keeps_running_table(make_daemon):
    d = make_daemon()
    with open(d.users_path, "a") as f:
        f.write("Bad Line\n")
    assert wait_for(lambda: "not reloaded" in d.log()), d.log()
    with d.session() as c:
        c.expect("MAIL FROM:<sender@example.org>", "250")
        c.expect("RCPT TO:<alice@lan>", "250")
