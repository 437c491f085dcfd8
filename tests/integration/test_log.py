"""The log tells each message's story (issue 13, part 1).

One line per message and outcome, in the shape src/log.h describes: an
event word, then key=value fields.  These tests follow messages through
their lives and read the lines back with picotest.log_events, as a
person with grep or awk would: a local delivery, a relayed message sent,
deferred then sent, bounced, expired; an administrator's delete and
flush; every refusal once with its reason; the end of each SMTP and POP3
session, with or without QUIT.
"""

import os
import re
import signal
import socket
import struct
import subprocess
import time

import pytest

from picotest import assert_reply, log_events, message, numbered, scaled, send_transaction
from pop3test import Pop, pop3_daemon
from relaytest import control, relay_daemon, submit, queue_id_of, wait_for, wait_queue_empty

ISO_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d picomail\[\d+\]: "
                      r"(info|notice|warning|error|critical): ")


def smarthost_of(peer):
    return "127.0.0.1:%d" % peer.port


def one(d, event, **match):
    got = d.events(event, **match)
    assert len(got) == 1, "want one %s %r, got %r\n%s" % (event, match, got, d.log(6000))
    return got[0]


def wait_event(d, event, timeout=5, **match):
    return wait_for(lambda: d.events(event, **match), scaled(timeout),
                    "a %s line %r" % (event, match))[0]


# --------------------------------------------------------------------------
# the life of a local message


def test_local_message_received_delivered_disconnect(daemon):
    d = daemon
    c = d.session(helo="EHLO client.example.org")
    r = send_transaction(c, ["alice@lan", "team@lan"], message("story"))
    assert_reply(r, "250")
    msgid = r.text.rsplit(" ", 1)[1]
    c.expect("QUIT", "221")
    c.close()
    got = one(d, "received", id=msgid)
    wait_event(d, "disconnect", session=got["session"])
    assert got["client"] == "127.0.0.1" and got["helo"] == "client.example.org", got
    assert got["from"] == "<sender@example.org>" and got["rcpts"] == "2", got
    stored = d.maildir("alice").messages()[0]
    assert got["size"] == str(len(stored.data)), (got, len(stored.data))
    boxes = sorted(e["mailbox"] for e in d.events("delivered", id=msgid, status="sent"))
    assert boxes == ["alice", "bob"], boxes
    assert all(re.fullmatch(r"\d+\.\d{3}s", e["delay"]) for e in d.events("delivered")), \
        d.events("delivered")
    end = one(d, "disconnect", session=got["session"])
    assert end["proto"] == "smtp" and end["messages"] == "1", end
    assert end["bytes"] == got["size"] and end["end"] == "quit", end
    # On stderr (-f) every line starts with an ISO 8601 time.
    lines = [l for l in d.log(1 << 20).splitlines() if l.strip()]
    bad = [l for l in lines if not ISO_LINE.match(l)]
    assert not bad, bad[:3]


def test_sessions_that_end_without_quit(daemon):
    d = daemon
    c = d.session()
    c.expect("NOOP", "250")
    c.close()
    s = d.connect()
    s.reply()
    s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.sock.close()
    wait_for(lambda: len(d.events("disconnect")) >= 3, scaled(5), "three disconnects")
    ends = sorted(e["end"] for e in d.events("disconnect"))
    # the readiness probe quit; the client that closed; the one that reset
    assert ends.count("quit") == 1 and ends.count("closed") + ends.count("lost") == 2, ends
    assert all(e["messages"] == "0" for e in d.events("disconnect"))


def test_timeout_is_a_session_end(make_daemon):
    d = make_daemon(smtp_timeout="1s")
    c = d.session()
    assert_reply(c.reply(timeout=scaled(5)), "421 4.4.2")
    c.close()
    wait_event(d, "disconnect", end="timeout")


# --------------------------------------------------------------------------
# relayed: sent, deferred, bounced, expired


def test_relayed_sent(make_daemon, peers):
    peer = peers()
    d = relay_daemon(make_daemon, smarthost_of(peer))
    qid = queue_id_of(submit(d, ["bob@remote.test"], message("out")))
    peer.wait_messages(1, timeout=6)
    wait_queue_empty(d)
    got = one(d, "received", id=qid)
    assert got["from"] == "<alice@lan>" and got["to"] == "<bob@remote.test>", got
    sent = one(d, "relayed", id=qid)
    assert sent["to"] == "<bob@remote.test>" and sent["status"] == "sent", sent
    assert sent["relay"] == "127.0.0.1[127.0.0.1]:%d" % peer.port, sent
    assert sent["tls"] == "none" and sent["reply"].startswith("250"), sent
    assert sent["attempt"] == "1", sent
    wait_event(d, "removed", id=qid)


def test_relayed_deferred_then_sent(make_daemon, peers):
    peer = peers(fail_data=1)
    d = relay_daemon(make_daemon, smarthost_of(peer))
    qid = queue_id_of(submit(d, ["bob@remote.test"], message("again")))
    peer.wait_messages(1, timeout=8)
    wait_queue_empty(d)
    story = [(e["event"], e.get("status"), e.get("attempt"))
             for e in d.events() if e.get("id") == qid and e["event"] in ("relayed", "retry")]
    assert story == [("relayed", "deferred", "1"), ("retry", None, None),
                     ("relayed", "sent", "2")], story
    deferred = one(d, "relayed", id=qid, status="deferred")
    assert deferred["reply"] == "451 4.3.0 try later", deferred
    retry = one(d, "retry", id=qid)
    assert retry["pending"] == "1" and retry["attempts"] == "1", retry


def test_relayed_bounced(make_daemon, peers):
    peer = peers(reject_rcpt=["gone@remote.test"])
    d = relay_daemon(make_daemon, smarthost_of(peer))
    qid = queue_id_of(submit(d, ["gone@remote.test"], message("nobody")))
    b = wait_event(d, "bounce", id=qid)
    assert b["to"] == "<alice@lan>" and b["failed"] == "1", b
    bounced = one(d, "relayed", id=qid, status="bounced")
    assert bounced["reply"].startswith("550"), bounced
    # The DSN's own story: received from the spool, delivered to alice.
    wait_event(d, "delivered", id=b["dsn"], mailbox="alice", status="sent")


def test_expired(make_daemon):
    d = relay_daemon(make_daemon, "127.0.0.1:1", extra=["queue_lifetime 1s"])
    qid = queue_id_of(submit(d, ["far@remote.test"], message("too late")))
    e = wait_event(d, "expired", id=qid, timeout=10)
    assert e["to"] == "<far@remote.test>" and "4.4.1" in e["last"], e
    wait_event(d, "bounce", id=qid, to="<alice@lan>")


# --------------------------------------------------------------------------
# the administrator


def test_delete_and_flush_name_who_asked(make_daemon):
    d = relay_daemon(make_daemon, "127.0.0.1:1", extra=["retry_min 1h", "retry_max 1h"])
    qid = queue_id_of(submit(d, ["far@remote.test"], message("to delete")))
    wait_event(d, "retry", id=qid)
    p = d.run("queue", "flush", "-C", d.conf_path)
    assert p.returncode == 0, p
    f = wait_event(d, "flush")
    assert f["by"] == "root" and f["messages"] == "1", f
    wait_for(lambda: len(d.events("retry", id=qid)) >= 2, scaled(5), "the flushed run")
    p = d.run("queue", "delete", qid, "-C", d.conf_path)
    assert p.returncode == 0, p
    deleted = one(d, "deleted", id=qid)
    assert deleted["by"] == "root", deleted


# --------------------------------------------------------------------------
# refusals: each once, with its reason


def test_every_refusal_logged_once_with_its_reason(make_daemon, workdir):
    users = "alice:%s\nbob:%s\nfull:%s:1\n"   # full: a quota of one octet
    d = make_daemon(start=False, max_message_size="2K", relay_from="192.0.2.0/24",
                    greet_pause="0s")
    with open(d.users_path) as f:
        h = f.read().split("\n")[0].split(":", 1)[1]
    with open(d.users_path, "w") as f:
        f.write(users % (h, h, h))
    d.start()
    c = d.session()
    c.expect("MAIL FROM:<a@example.org> SIZE=999999", "552 5.3.4")
    c.expect("MAIL FROM:<a@example.org>", "250")
    c.expect("RCPT TO:<nobody@lan>", "550 5.1.1")
    c.expect("RCPT TO:<far@remote.test>", "554 5.7.1")
    c.expect("RCPT TO:<alice@lan>", "250")
    c.expect("DATA", "354")
    c.send(b"Subject: big\r\n\r\n" + b"x" * 3000 + b"\r\n.\r\n")
    assert_reply(c.reply(), "552 5.3.4")
    c.expect("MAIL FROM:<a@example.org>", "250")
    c.expect("RCPT TO:<alice@lan>", "250")
    c.expect("DATA", "354")
    c.send(b"Subject: bare\r\n\r\nbare\nLF\r\n.\r\n")
    assert_reply(c.reply(), "550 5.6.0")
    c.expect("MAIL FROM:<a@example.org> SIZE=100", "250")
    c.expect("RCPT TO:<full@lan>", "452 4.2.2")
    c.expect("QUIT", "221")
    c.close()
    wait_for(lambda: len(d.events("disconnect")) == 2, scaled(5), "the session's end")
    reasons = sorted(e["reason"] for e in d.events("refused"))
    assert reasons == sorted(["size", "unknown-user", "relay-denied", "size",
                              "bad-bytes:bare-LF", "quota"]), reasons
    assert one(d, "refused", reason="unknown-user")["to"] == "<nobody@lan>"
    assert one(d, "refused", reason="relay-denied")["to"] == "<far@remote.test>"
    assert one(d, "refused", reason="quota")["to"] == "<full@lan>"
    assert all(e["from"] == "<a@example.org>" for e in d.events("refused")), d.events("refused")
    assert all(e["reply"][:3] in ("552", "550", "554", "452") for e in d.events("refused"))


def test_too_many_recipients_is_one_line(make_daemon):
    d = make_daemon(max_recipients="3")
    c = d.session()
    c.expect("MAIL FROM:<a@example.org>", "250")
    for i in range(3):
        c.expect("RCPT TO:<alice@lan>", "250")
    for i in range(50):
        c.expect("RCPT TO:<bob@lan>", "452 4.5.3")
    c.expect("QUIT", "221")
    c.close()
    wait_for(lambda: len(d.events("disconnect")) == 2, scaled(5), "the session's end")
    assert len(d.events("refused", reason="too-many-recipients")) == 1


# --------------------------------------------------------------------------
# POP3


def test_pop3_session_lines(make_daemon):
    d = pop3_daemon(make_daemon)
    for i in range(3):
        submit(d, ["alice@lan"], numbered(i, 1000), sender="x@example.org")
    p = Pop(d.pop3_port)
    p.login()
    p.retr(1)
    p.retr(2)
    p.ok("DELE 1")
    p.quit()
    q = Pop(d.pop3_port)
    q.login()
    q.ok("DELE 2")
    q.close()                              # no QUIT: nothing deleted
    wait_for(lambda: len(d.events("disconnect", proto="pop3")) == 2, scaled(5),
             "two POP3 disconnects")
    first, second = d.events("disconnect", proto="pop3")
    assert first["user"] == "alice" and first["end"] == "quit", first
    assert first["retrieved"] == "2" and first["deleted"] == "1", first
    assert int(first["bytes"]) > 2000, first
    assert second["end"] == "closed" and second["deleted"] == "0", second
    logins = d.events("login", proto="pop3", user="alice")
    assert len(logins) == 2 and logins[0]["messages"] == "3", logins


# --------------------------------------------------------------------------
# syslog, in the background

SYSLOG_LINE = re.compile(r"^<(\d+)>(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                         r"([ 1-3]\d) (\d\d):(\d\d):(\d\d) picomail\[(\d+)\]: (.*)\n$", re.S)


def syslog_lines(sock, want, timeout=5):
    """Datagrams from sock until one holds want; each checked against the
    protocol's shape and returned parsed: (priority, pid, text)."""
    got = []
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(4096).decode("latin-1")
        except socket.timeout:
            break
        m = SYSLOG_LINE.match(data)
        assert m, "not a syslog line: %r" % data
        got.append((int(m.group(1)), int(m.group(7)), m.group(8)))
        if want in m.group(8):
            return got
    raise AssertionError("no syslog line with %r; got %r" % (want, got))


def test_syslog_in_the_background(make_daemon, picomail_test_bin, workdir):
    """Without -f the daemon goes to the background and logs to syslog,
    facility mail: one datagram a line, "<pri>Mmm dd hh:mm:ss
    picomail[pid]: text", as syslog(3) writes it; after the log daemon
    restarts, the next line reaches the new one.  The test build reads the
    socket's path from PICOMAIL_SYSLOG."""
    path = os.path.join(workdir, "log")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    d = make_daemon(binary=picomail_test_bin, start=False)
    env = dict(os.environ, PICOMAIL_SYSLOG=path)
    env.pop("PICOMAIL_CONF", None)
    env.pop("PICOMAIL_FAULT", None)
    p = subprocess.run([picomail_test_bin, "serve", "-C", d.conf_path], env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=scaled(10))
    assert p.returncode == 0, p.stderr
    pid = None
    try:
        got = syslog_lines(sock, "ready")
        pri, pid, text = got[-1]
        assert pri == (2 << 3) | 6, got        # LOG_MAIL | LOG_INFO
        assert text.startswith("picomail "), got
        os.kill(pid, 0)                        # the daemon, in the background
        # The log daemon restarts: a new socket at the same path.
        sock.close()
        os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        with socket.create_connection((d.host, d.port), timeout=scaled(5)) as c:
            c.recv(512)
            c.sendall(b"QUIT\r\n")
            c.recv(512)
        got = syslog_lines(sock, "disconnect ")
        assert all(g[1] == pid for g in got), got
        os.kill(pid, signal.SIGTERM)
        got = syslog_lines(sock, "stopped")
        pid = None
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        sock.close()
