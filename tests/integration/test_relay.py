"""The queue and relaying through a smarthost (issue 5), against aiosmtpd.

A relaypeer.py process (Debian's python3-aiosmtpd) on a loopback port is
the smarthost; it records every message it accepts and every command it
sees.  picomail retries every second (retry_min/retry_max 1s) so the
retries happen within the tests' time.  Covered: delivery exactly once
with the trace header and the body intact (dot-stuffing, 8bit, 1.5 MB,
100 recipients in one transaction), local recipients of a queued message,
smarthost down then up, 4xx then 250, one recipient of three refused (one
DSN, RFC 3464, parsed by Python's email package), a refused DATA, a
deferred recipient retried alone, lifetime expiry (5.4.7), no bounce for
the null sender, a bounce to a remote sender relayed, aliases sending mail
away (root, catch-all), the submit socket and AUTH as relay permissions,
mailq/flush/delete on the control socket (and the mailq command line when
it exists), a full queue (452 4.3.1), the retry backoff, the scheduler not
spinning while its runners are busy, and the queue resuming after a
restart.  Kill -9 is in test_queue_crash.py, TLS smarthosts in
test_relay_tls.py, MX delivery in test_relay_mx.py, the open-relay battery
in test_open_relay.py.
"""

import os
import re
import socket
import time

import pytest

from hostile import Hostile
from picotest import Client, assert_reply, free_port, message, send_transaction, stuff
from pop3test import PASSWORD
from relaytest import (Spool, body_of, control, dsn, final_recipients, mailq, proc_cpu_seconds,
                       queue_id_of, queue_length, relay_daemon, status, submit, wait_for,
                       wait_queue_empty)
from tlstest import plain_ir


pytestmark = pytest.mark.usefixtures("need_aiosmtpd")


def smarthost_of(p):
    return "%s:%d" % (p.host, p.port)


def dsns(d, user="alice"):
    """The files in user's Maildir, as bytes (DSNs: Return-Path <>)."""
    md = d.maildir(user)
    return [m for m in md.messages(check=False)]


def check_dsn_file(m):
    """The invariants of a DSN delivered into a Maildir: the name's S=/W=,
    LF line ends, Return-Path: <> first."""
    assert m.name.count(",S=") == 1, m.name
    size = int(m.name.split(",S=")[1].split(",")[0])
    assert size == len(m.data), "%s: S= says %d, file has %d" % (m.name, size, len(m.data))
    assert b"\r" not in m.data, "%s holds a CR" % m.name
    assert m.data.startswith(b"Return-Path: <>\n"), \
        "a DSN has the null sender (RFC 3464 / RFC 5321 4.5.5): %r" % m.data[:80]
    return m.data.split(b"\n", 1)[1]


# --------------------------------------------------------------------------
# Delivery


def test_relayed_exactly_once_with_trace_and_body(make_daemon, peers):
    peer = peers()
    d = relay_daemon(make_daemon, smarthost_of(peer))
    body = (b"first line\r\n.starts with a dot\r\n..two dots\r\n.\r\n"
            b"8bit: \xc3\xa9t\xc3\xa9\r\n\r\nlast\r\n")
    data = message("relay me", body=body)
    r = submit(d, ["bob@remote.test", "alice@lan"], data)
    assert_reply(r, "250 2.0.0", "end of data")
    qid = queue_id_of(r)

    got = peer.wait_messages(1)
    m = got[0]
    assert m["mail_from"] == "alice@lan", m
    assert m["rcpt_tos"] == ["bob@remote.test"], \
        "only the remote recipient goes to the smarthost: %r" % m["rcpt_tos"]
    assert m["bytes"].startswith(b"Received: from client.lan"), m["bytes"][:200]
    assert b"Return-Path:" not in m["bytes"].split(b"\r\n\r\n")[0], \
        "Return-Path is for the final delivery only (RFC 5321 4.4)"
    assert body_of(m["bytes"]) == data, "body changed on the way:\n%r\n%r" % (
        body_of(m["bytes"]), data)

    # The local recipient of the same message, delivered from the queue.
    md = d.maildir("alice")
    wait_for(lambda: md.messages(), 5, "the local copy in alice's Maildir")
    local = md.messages()
    assert len(local) == 1, [x.name for x in local]
    assert local[0].return_path == b"<alice@lan>", local[0].return_path
    assert local[0].body == data.replace(b"\r\n", b"\n"), local[0].body

    wait_queue_empty(d)
    sp = Spool(d)
    assert sp.names("msg") == [] and sp.names("env") == [] and sp.names("tmp") == [], \
        (sp.names("msg"), sp.names("env"), sp.names("tmp"))
    assert qid in d.log(20000), "the queue id %s of the 250 is not in the log" % qid
    time.sleep(1.5)   # past a retry interval: nothing is sent again
    assert len(peer.messages()) == 1, peer.describe()
    assert len(md.messages()) == 1


def test_large_message_and_100_recipients(make_daemon, peers):
    """1.5 MB with dots at line starts everywhere (across the client's
    buffer boundaries) and 100 remote recipients: one transaction, the body
    byte for byte."""
    import random
    rng = random.Random(7)
    lines = []
    size = 0
    while size < 1500 * 1024:
        n = rng.randint(0, 200)
        l = (b"." if rng.random() < 0.3 else b"") + bytes(rng.choice(b"abc.xyz ") for _ in range(n))
        lines.append(l)
        size += len(l) + 2
    data = message("big", body=b"\r\n".join(lines) + b"\r\nEND\r\n")
    peer = peers()
    d = relay_daemon(make_daemon, smarthost_of(peer), max_message_size="4M")
    rcpts = ["u%03d@remote.test" % i for i in range(100)]
    submit(d, rcpts, data)
    got = peer.wait_messages(1, timeout=15)
    wait_queue_empty(d, timeout=10)
    assert len(peer.messages()) == 1, "100 recipients of one destination: one transaction"
    assert sorted(got[0]["rcpt_tos"]) == rcpts
    assert body_of(got[0]["bytes"]) == data, "the body changed on the way (%d vs %d bytes)" % (
        len(body_of(got[0]["bytes"])), len(data))


def test_smarthost_down_then_up(make_daemon, peers, workdir):
    peer = peers(start=False)             # the port is chosen, nobody listens yet
    d = relay_daemon(make_daemon, smarthost_of(peer))
    submit(d, ["bob@remote.test"], message("while down"))

    q = wait_for(lambda: [e for e in mailq(d) if e[5] and e[5][0][1]], 5,
                 "a failed attempt in mailq")
    qid, size, age, sender, active, rcpts = q[0]
    assert sender == "alice@lan" and size > 0, q
    assert rcpts[0][0] == "bob@remote.test", rcpts
    assert rcpts[0][1].startswith("451 4.4.1"), \
        "last error of a refused connection: %r" % rcpts[0][1]
    env = Spool(d).envelope(qid)
    assert env["attempts"] >= 1 and env["rcpts"][0][0] == "P", env

    peer.start()
    peer.wait_messages(1, timeout=6)
    wait_queue_empty(d)
    time.sleep(1.5)
    assert len(peer.messages()) == 1, "delivered more than once:\n" + peer.describe()
    assert Spool(d).names("env") == []


def test_4xx_then_250(make_daemon, peers):
    peer = peers(fail_data=1)
    d = relay_daemon(make_daemon, smarthost_of(peer))
    submit(d, ["bob@remote.test"], message("try again"))
    peer.wait_messages(1, timeout=6)
    wait_queue_empty(d)
    ev = [e for _, e, _ in peer.events() if e in ("deferred", "accepted")]
    assert ev == ["deferred", "accepted"], peer.describe()
    assert d.events("relayed", status="deferred", reply="451 4.3.0 try later"), d.log()
    [sent] = d.events("relayed", status="sent")
    assert sent["to"] == "<bob@remote.test>" and sent["attempt"] == "2", sent
    time.sleep(1.2)
    assert len(peer.messages()) == 1, peer.describe()
    assert dsns(d) == [], "a 4xx is no bounce"


def test_one_of_three_refused_one_dsn(make_daemon, peers):
    peer = peers(reject_rcpt=["b@remote.test"])
    d = relay_daemon(make_daemon, smarthost_of(peer))
    data = message("three", headers=b"X-Marker: one-of-three\r\n")
    submit(d, ["a@remote.test", "b@remote.test", "c@remote.test"], data)
    got = peer.wait_messages(1)
    assert sorted(got[0]["rcpt_tos"]) == ["a@remote.test", "c@remote.test"], got[0]

    wait_for(lambda: dsns(d), 5, "a DSN in alice's Maildir")
    wait_queue_empty(d)
    time.sleep(1.2)
    files = dsns(d)
    assert len(files) == 1, "want exactly one DSN: %r" % [f.name for f in files]
    m, text, per_msg, per_rcpt, headers = dsn(check_dsn_file(files[0]))
    assert final_recipients(per_rcpt) == ["b@remote.test"], [r.items() for r in per_rcpt]
    assert str(per_rcpt[0]["Status"]) == "5.1.1", per_rcpt[0].items()
    assert "550 5.1.1" in str(per_rcpt[0]["Diagnostic-Code"]), per_rcpt[0].items()
    assert "b@remote.test" in text and "a@remote.test" not in text, text
    assert headers is not None, "no text/rfc822-headers part"
    orig = headers.get_payload(decode=True) if not headers.is_multipart() else b""
    assert b"X-Marker: one-of-three" in (orig or b"") or \
        "X-Marker: one-of-three" in str(headers), "original headers missing:\n%s" % headers
    assert str(m["To"]).strip("<>") == "alice@lan", m["To"]
    assert len(peer.messages()) == 1, "a and c delivered once:\n" + peer.describe()


def test_deferred_recipient_retried_alone(make_daemon, peers):
    peer = peers(defer_rcpt=["b@remote.test"])
    d = relay_daemon(make_daemon, smarthost_of(peer))
    submit(d, ["a@remote.test", "b@remote.test"], message("partial"))
    got = peer.wait_messages(2, timeout=6)
    wait_queue_empty(d)
    assert [g["rcpt_tos"] for g in got] == [["a@remote.test"], ["b@remote.test"]], \
        "the second attempt is for b only:\n" + peer.describe()
    time.sleep(1.2)
    assert len(peer.messages()) == 2 and dsns(d) == []


def test_data_refused_bounces_every_recipient(make_daemon, peers):
    peer = peers(reject_data=True)
    d = relay_daemon(make_daemon, smarthost_of(peer))
    submit(d, ["a@remote.test", "b@remote.test"], message("refused"))
    wait_for(lambda: dsns(d), 5, "a DSN")
    wait_queue_empty(d)
    files = dsns(d)
    assert len(files) == 1, [f.name for f in files]
    _, _, _, per_rcpt, _ = dsn(check_dsn_file(files[0]))
    assert final_recipients(per_rcpt) == ["a@remote.test", "b@remote.test"]
    assert all(str(r["Status"]) == "5.6.0" for r in per_rcpt), [r.items() for r in per_rcpt]
    assert peer.messages() == []


def test_lifetime_expiry_dsn(make_daemon, peers):
    peer = peers(start=False)             # down for good
    d = relay_daemon(make_daemon, smarthost_of(peer), extra=["queue_lifetime 3s"])
    t0 = time.monotonic()
    data = message("expires", headers=b"X-Marker: lifetime\r\n")
    submit(d, ["gone@remote.test"], data)
    wait_for(lambda: dsns(d), 9, "the expiry DSN")
    elapsed = time.monotonic() - t0
    assert elapsed >= 2.5, "bounced after %.1f s, the lifetime is 3 s" % elapsed
    wait_queue_empty(d)
    files = dsns(d)
    assert len(files) == 1, [f.name for f in files]
    m, text, per_msg, per_rcpt, headers = dsn(check_dsn_file(files[0]))
    assert final_recipients(per_rcpt) == ["gone@remote.test"]
    r = per_rcpt[0]
    assert str(r["Status"]) == "5.4.7", r.items()
    assert r["Action"] == "failed"
    assert "delivery time expired" in str(r["Diagnostic-Code"]) or \
        "delivery time expired" in text, (text, r.items())
    assert "X-Marker: lifetime" in str(headers)
    assert str(m["From"]).lower().find("mailer-daemon") >= 0, m["From"]
    assert m["Auto-Submitted"] == "auto-replied", m["Auto-Submitted"]


def test_null_sender_never_bounced(make_daemon, peers):
    peer = peers(reject_rcpt=["nobody@remote.test"])
    d = relay_daemon(make_daemon, smarthost_of(peer))
    submit(d, ["nobody@remote.test"], message("a bounce"), sender="")
    wait_for(lambda: d.events("bounce", dsn="none: null sender"), 5,
             "the log line for a failed null-sender message")
    wait_queue_empty(d)
    time.sleep(0.5)
    assert d.all_files() == [], "something was delivered: %r" % d.all_files()
    assert Spool(d).names("env") == []
    assert peer.messages() == [], peer.describe()


def test_bounce_to_remote_sender_is_relayed(make_daemon, peers):
    peer = peers(reject_rcpt=["bad@remote.test"])
    d = relay_daemon(make_daemon, smarthost_of(peer))
    submit(d, ["bad@remote.test"], message("from afar"), sender="someone@elsewhere.test")
    got = peer.wait_messages(1)
    wait_queue_empty(d)
    b = got[0]
    assert b["mail_from"] == "", "a DSN goes out with MAIL FROM:<>: %r" % b["mail_from"]
    assert b["rcpt_tos"] == ["someone@elsewhere.test"], b
    _, _, _, per_rcpt, _ = dsn(b["bytes"])
    assert final_recipients(per_rcpt) == ["bad@remote.test"]
    time.sleep(1.2)
    assert len(peer.messages()) == 1, peer.describe()


# --------------------------------------------------------------------------
# Who may relay, and aliases that send mail away


def test_aliases_root_and_catchall_relay(make_daemon, peers):
    peer = peers()
    d = relay_daemon(make_daemon, smarthost_of(peer), start=False, relay_from="10.0.0.0/8")
    with open(d.aliases_path, "w") as f:
        f.write("postmaster: alice\nroot: admin@remote.test\n*: catchall@remote.test\n")
    d.start()
    # 127.0.0.1 is not in relay_from: a plain remote recipient is refused...
    c = d.session()
    c.expect("MAIL FROM:<cron@lan>", "250")
    c.expect("RCPT TO:<bob@remote.test>", "554 5.7.1")
    # ...but local names that the aliases send away are the box's own doing.
    c.expect("RCPT TO:<root@lan>", "250")
    c.expect("RCPT TO:<smartd@lan>", "250")        # no such user: the catch-all
    c.expect("RCPT TO:<bob@lan>", "250")           # a real user stays local
    c.expect("DATA", "354")
    data = message("alert")
    c.send(stuff(data) + b".\r\n")
    assert_reply(c.reply(), "250 2.0.0", "end of data")
    c.close()
    got = peer.wait_messages(1)
    wait_queue_empty(d)
    assert sorted(got[0]["rcpt_tos"]) == ["admin@remote.test", "catchall@remote.test"], got
    assert got[0]["mail_from"] == "cron@lan"
    wait_for(lambda: d.maildir("bob").messages(), 5, "bob's local copy")
    assert len(d.maildir("bob").messages()) == 1
    assert d.maildir("alice").messages(check=False) == []


def test_quoted_local_parts_relayed_in_canonical_form(make_daemon):
    """RFC 5321 4.1.2: the relay sends each path as it was accepted, in its
    canonical form: needless quotes gone, needed ones kept.  The smarthost
    is hostile.Hostile, which records the command lines as they came (aiosmtpd
    would canonicalise them itself)."""
    server = Hostile()
    try:
        d = relay_daemon(make_daemon, "127.0.0.1:%d" % server.port)
        data = message("quoted")
        submit(d, ['"bob"@remote.test', '"john doe"@remote.test', '"a\\"b"@remote.test',
                   '"al"@lan'], data, sender='"cron"@lan')
        wait_for(lambda: server.messages, 10, "the message at the smarthost")
        wait_queue_empty(d)
        mail, rcpts, body, _ = server.messages[0]
        assert mail == b"MAIL FROM:<cron@lan>" or mail.startswith(b"MAIL FROM:<cron@lan> "), mail
        assert sorted(rcpts) == sorted([b"RCPT TO:<bob@remote.test>",
                                        b'RCPT TO:<"john doe"@remote.test>',
                                        b'RCPT TO:<"a\\"b"@remote.test>']), rcpts
        assert body_of(body) == data
        assert len(d.maildir("alice").messages()) == 1, "the alias al stays local"
    finally:
        server.stop()


def test_submit_socket_may_relay(make_daemon, peers):
    peer = peers()
    d = relay_daemon(make_daemon, smarthost_of(peer), relay_from="10.0.0.0/8")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(os.path.join(d.spool, "submit"))
    c = Client.__new__(Client)
    c.sock, c.buf, c.timeout = s, bytearray(), 5
    try:
        assert_reply(c.reply(), "220", "greeting on the submit socket")
        c.expect("EHLO localhost", "250")
        r = send_transaction(c, ["ops@remote.test"], message("from sendmail"), sender="root@lan")
        assert_reply(r, "250 2.0.0", "end of data on the submit socket")
    finally:
        c.close()
    got = peer.wait_messages(1)
    assert got[0]["rcpt_tos"] == ["ops@remote.test"]
    wait_queue_empty(d)


def test_authenticated_submission_may_relay(make_daemon, peers):
    peer = peers()
    sub = free_port()
    d = relay_daemon(make_daemon, smarthost_of(peer), relay_from="10.0.0.0/8",
                     extra=["listen submission 127.0.0.1:%d" % sub, "plaintext_auth yes"])
    with Client("127.0.0.1", sub) as c:
        assert_reply(c.reply(), "220", "greeting")
        c.expect("EHLO client.lan", "250")
        c.expect("MAIL FROM:<alice@lan>", "530 5.7.0")
        c.expect("AUTH PLAIN " + plain_ir("alice", PASSWORD), "235")
        r = send_transaction(c, ["friend@remote.test"], message("submitted"), sender="alice@lan")
        assert_reply(r, "250 2.0.0", "end of data")
    got = peer.wait_messages(1)
    assert got[0]["rcpt_tos"] == ["friend@remote.test"]
    assert b"ESMTPA" in got[0]["bytes"].split(b"\r\n\r\n")[0], got[0]["bytes"][:300]
    wait_queue_empty(d)


# --------------------------------------------------------------------------
# The control socket: mailq, flush, delete; status


def test_mailq_flush_delete(make_daemon, peers):
    peer = peers(start=False)
    d = relay_daemon(make_daemon, smarthost_of(peer), extra=["retry_min 1m", "retry_max 1h"])
    assert control(d, "mailq").strip() == "Mail queue is empty"
    ids = [queue_id_of(submit(d, ["r%d@remote.test" % i], message("m%d" % i))) for i in (1, 2)]
    # (the envelope is in place as soon as it is renamed, and the run is
    # over once env/ is synced)
    q = wait_for(lambda: len(mailq(d)) == 2 and all(e[5][0][1] for e in mailq(d)) and
                 status(d)["queue_active"] == "0" and mailq(d),
                 5, "two messages with their last error in mailq, and no run left")
    assert sorted(e[0] for e in q) == sorted(ids), (q, ids)
    for e in q:
        assert e[3] == "alice@lan" and e[1] > 0 and e[2] >= 0, e
        assert e[5][0][1].startswith("451 4.4.1"), e
    st = status(d)
    assert st["queue_length"] == "2", st
    assert st["queue_active"] == "0", st

    assert control(d, "delete %s" % ids[0]).strip() == "deleted %s" % ids[0]
    assert control(d, "delete NOSUCHID").strip().startswith("no such message"), \
        control(d, "delete NOSUCHID")
    sp = Spool(d)
    assert ids[0] not in sp.names("env") and ids[0] not in sp.names("msg")
    assert [e[0] for e in mailq(d)] == [ids[1]]

    peer.start()
    t0 = time.monotonic()
    assert control(d, "flush").strip() == "queue flushed"
    got = peer.wait_messages(1, timeout=5)
    assert time.monotonic() - t0 < 5, "flush did not retry at once (retry_min is 1m)"
    assert got[0]["rcpt_tos"] == ["r2@remote.test"], "the deleted message went out: %r" % got
    wait_queue_empty(d)
    assert control(d, "nonsense").strip() == "unknown command"


def test_mailq_command_line(make_daemon, peers):
    peer = peers(start=False)
    d = relay_daemon(make_daemon, smarthost_of(peer), extra=["retry_min 1m", "retry_max 1h"])
    qid = queue_id_of(submit(d, ["cli@remote.test"], message("cli")))
    p = d.run("mailq", "-C", d.conf_path)
    out = (p.stdout + p.stderr).decode("latin-1")
    if "not available" in out:
        pytest.skip("picomail mailq is not in this build yet: %s" % out.strip())
    assert p.returncode == 0, out
    assert qid in out and "cli@remote.test" in out and "alice@lan" in out, out
    peer.start()
    p = d.run("queue", "flush", "-C", d.conf_path)
    assert p.returncode == 0, p
    peer.wait_messages(1, timeout=5)


def test_queue_full_452(make_daemon, peers):
    peer = peers(start=False)
    d = relay_daemon(make_daemon, smarthost_of(peer), start=False,
                     extra=["retry_min 1m", "retry_max 1h", "queue_max_messages 16"])
    with open(d.aliases_path, "w") as f:
        f.write("postmaster: alice\nroot: admin@remote.test\n")
    d.start()
    c = d.session()
    try:
        for i in range(16):
            r = send_transaction(c, ["n%d@remote.test" % i], message("fill %d" % i))
            assert_reply(r, "250 2.0.0", "message %d of 16" % i)
        assert queue_length(d) == 16
        c.expect("MAIL FROM:<alice@lan>", "250")
        c.expect("RCPT TO:<n16@remote.test>", "452 4.3.1")
        c.expect("RCPT TO:<root@lan>", "452 4.3.1")        # an alias sending mail away
        c.expect("RCPT TO:<bob@lan>", "250")               # local delivery goes on
        c.expect("DATA", "354")
        c.send(stuff(message("local while full")) + b".\r\n")
        assert_reply(c.reply(), "250", "local message while the queue is full")
    finally:
        c.close()
    wait_for(lambda: d.maildir("bob").messages(), 5, "bob's message")
    assert len(Spool(d).names("env")) == 16 and queue_length(d) == 16
    Spool(d).assert_consistent()
    # Room again after a delete.
    victim = mailq(d)[0][0]
    assert control(d, "delete " + victim).startswith("deleted")
    r = submit(d, ["again@remote.test"], message("room again"))
    assert_reply(r, "250 2.0.0", "after a delete")


# --------------------------------------------------------------------------
# The scheduler


def test_no_busy_wait_while_runners_are_busy(make_daemon, peers):
    """Three due messages, one runner, a slow smarthost: the daemon waits
    for the runner without spinning on its timer."""
    peer = peers(start=False, sleep_data=1.6, sleep_count=1)
    d = relay_daemon(make_daemon, smarthost_of(peer), extra=["queue_runners 1"])
    for i in range(3):
        submit(d, ["slow%d@remote.test" % i], message("slow %d" % i))
    wait_for(lambda: len([e for e in d.events("relayed", status="deferred")
                          if e["reply"].startswith("451 4.4.1")]) >= 3, 6,
             "a failed first attempt for each message")
    peer.start()
    # The retries fall due while the only runner talks to the slow peer.
    wait_for(lambda: peer.events("data-end"), 5, "the first DATA at the slow peer")
    c0, t0 = proc_cpu_seconds(d.pid), time.monotonic()
    time.sleep(1.2)
    cpu, wall = proc_cpu_seconds(d.pid) - c0, time.monotonic() - t0
    st = status(d)
    assert cpu < 0.3 * wall, (
        "the daemon used %.2f s of CPU in %.2f s while its one runner waited for the "
        "smarthost (queue_length %s, queue_active %s): the scheduler re-arms its timer "
        "for messages already due and spins" % (cpu, wall, st["queue_length"],
                                                 st["queue_active"]))
    peer.wait_messages(3, timeout=10)
    wait_queue_empty(d)


def test_retry_backoff_doubles_up_to_retry_max(make_daemon, peers):
    """retry_min 1s, retry_max 3s: after attempts 1, 2, 3 the envelope's
    next try is 1, 2, then 3 (not 4) seconds after the attempt."""
    peer = peers(start=False)
    d = relay_daemon(make_daemon, smarthost_of(peer), extra=["retry_min 1s", "retry_max 3s"])
    qid = queue_id_of(submit(d, ["backoff@remote.test"], message("backoff")))
    path = os.path.join(d.spool, "env", qid)
    seen = {}

    def observe():
        try:
            e = Spool(d).envelope(qid)
            mtime = os.stat(path).st_mtime
        except (OSError, ValueError, IndexError):
            return False
        if e.get("attempts") and e["attempts"] not in seen and e["complete"]:
            seen[e["attempts"]] = e["next"] - mtime
        return len(seen) >= 3
    wait_for(observe, 8, "three attempts (seen: %r)" % seen, interval=0.02)
    for k, want in ((1, 1), (2, 2), (3, 3)):
        got = seen[k]
        assert want - 1 < got <= want + 0.05, \
            "after attempt %d the next try is %.2f s later, want %d (retry_min 1s doubling, " \
            "retry_max 3s): %r" % (k, got, want, seen)


def test_restart_resumes_the_queue(make_daemon, peers):
    peer = peers(start=False)
    d = relay_daemon(make_daemon, smarthost_of(peer))
    qid = queue_id_of(submit(d, ["later@remote.test"], message("after restart")))
    assert d.stop() == 0, "SIGTERM: exit status"
    sp = Spool(d)
    assert sp.assert_consistent() == [qid]
    peer.start()
    d.start()
    got = peer.wait_messages(1, timeout=5)
    assert got[0]["rcpt_tos"] == ["later@remote.test"]
    wait_queue_empty(d)
    assert sp.names("env") == [] and sp.names("msg") == []


def test_arrival_before_the_clock_was_set_does_not_expire(make_daemon, peers):
    """A router without RTC takes mail in 1970 (sendmail from a boot
    script), then NTP sets the clock while the smarthost is still out of
    reach: the message is not 50 years past queue_lifetime.  Its age counts
    from the first attempt that sees a set clock (the envelope keeps that
    time), and it is relayed once the smarthost answers."""
    down = free_port()
    d = relay_daemon(make_daemon, "127.0.0.1:%d" % down, extra=["retry_min 1h", "retry_max 1h"])
    r = submit(d, ["bob@remote.test"], message("taken in 1970", headers=b"X-Marker: epoch\r\n"))
    assert_reply(r, "250 2.0.0", "end of data")
    qid = queue_id_of(r)
    sp = Spool(d)
    wait_for(lambda: "attempts 1\n" in sp.env_text(qid), 10, "the first attempt")
    d.stop()
    path = os.path.join(d.spool, "env", qid)
    text = sp.env_text(qid)
    with open(path, "w") as f:   # as the daemon wrote it with the clock at the epoch
        f.write(re.sub(r"(?m)^arrival \d+$", "arrival 42", re.sub(r"(?m)^next \d+$", "next 0", text)))
    d.extra += ["retry_min 1s", "retry_max 1s"]
    d.write_config()
    d.start()

    def attempted_twice():
        return not os.path.exists(path) or "attempts 3\n" in sp.env_text(qid)
    wait_for(attempted_twice, 20, "two attempts with the clock set")
    assert os.path.exists(path) and not dsns(d, "alice"), \
        "expired and bounced: the 1970 arrival counted as 50 years in the queue"
    arrival = int(re.search(r"(?m)^arrival (\d+)$", sp.env_text(qid)).group(1))
    assert arrival >= time.time() - 60, "arrival still %d" % arrival
    peer = peers(port=down)
    wait_queue_empty(d, 20)
    assert [m for m in peer.messages() if b"X-Marker: epoch" in m["bytes"]]
