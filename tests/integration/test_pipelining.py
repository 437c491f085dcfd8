"""Pipelined batches answered whole (POP3 PIPELINING, RFC 2449 6.6; SMTP
PIPELINING, RFC 2920), in plain text and under TLS.

A raw client sends a batch of commands in one write and reads: every
answer must come, in order, without the client sending anything more (a
pause of STALL seconds in the middle is a failure, where a stalled server
would only go on at pop3_timeout).  The expected bytes are the answers the
same commands get one at a time, and RETR answers are also checked against
the Maildir files.  The batches: 4 RETRs of messages 70 times the output
buffer, 20 RETRs around the buffer's size, 200 mixed commands with errors,
every message of sizes that end at each offset of the buffer, and a batch
followed by a half-close.  SMTP: EHLO and HELP floods over STARTTLS, whose
decrypted input the engine holds beyond the session's buffer.
"""

import shutil
import socket
import tempfile
import time

import pytest

from picotest import ReplyTimeout, scaled
from pop3test import Pop, crlf, deliver, dot_stuff, mailbox, pop3_daemon
from tlstest import Pki, PopTls, Smtp, tls_daemon

STALL = 3.0          # seconds without a byte in the middle of a batch


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="pm-pki-", dir="/tmp")
    try:
        yield Pki(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def body(i, size):
    """Message i of about size octets (CRLF), with lines that need
    dot-stuffing."""
    head = b"Subject: batch %d\r\nX-Seq: %d\r\n\r\n.first line, stuffed\r\n" % (i, i)
    lines = []
    n = len(head)
    k = 0
    while n < size - 12:
        line = (b"." if k % 7 == 0 else b"") + b"%06d " % k + b"p" * 60 + b"\r\n"
        line = line[:max(3, size - 12 - n)]
        if not line.endswith(b"\r\n"):
            line = line[:-2] + b"\r\n"
        lines.append(line)
        n += len(line)
        k += 1
    return head + b"".join(lines) + b"END %d\r\n" % i


def fill(d, sizes):
    """Delivers one message per size to alice, in order."""
    for i, size in enumerate(sizes, 1):
        deliver(d, "alice", body(i, size))


def multi_line(cmd, status):
    verb = cmd.split(b" ")[0].upper()
    if not status.startswith(b"+OK"):
        return False
    return verb in (b"RETR", b"TOP", b"CAPA") or (verb in (b"LIST", b"UIDL") and b" " not in cmd)


def read_answer(c, cmd):
    """One answer to cmd as the bytes on the wire (status line, and the
    body up to its final dot line when it is multi-line)."""
    status = c.raw_line()
    out = [status]
    if multi_line(cmd, status):
        while True:
            raw = c.raw_line()
            out.append(raw)
            if raw == b".\r\n":
                break
    return b"".join(out)


def one_at_a_time(c, cmds):
    """The answer of each distinct command, asked alone."""
    want = {}
    for cmd in cmds:
        if cmd not in want:
            c.send(cmd + b"\r\n")
            want[cmd] = read_answer(c, cmd)
    return want


def read_exactly(c, n, what):
    """Reads until n bytes came; fails on a pause of STALL seconds."""
    t0 = time.monotonic()
    c.sock.settimeout(scaled(STALL))
    try:
        while len(c.buf) < n:
            try:
                c._fill()
            except ReplyTimeout:
                raise AssertionError("%s: stalled after %d of %d octets (%.1f s)" % (
                    what, len(c.buf), n, time.monotonic() - t0)) from None
    finally:
        c.sock.settimeout(c.timeout)
    got = bytes(c.buf[:n])
    del c.buf[:n]
    return got, time.monotonic() - t0


def batch(c, cmds, what):
    """Sends cmds in one write and checks the answers: all of them, in
    order, each as it is when asked alone, and then nothing more."""
    want = one_at_a_time(c, cmds)
    expected = b"".join(want[cmd] for cmd in cmds)
    c.send(b"".join(cmd + b"\r\n" for cmd in cmds))
    got, took = read_exactly(c, len(expected), what)
    if got != expected:
        i = next(k for k in range(len(got)) if got[k] != expected[k])
        raise AssertionError("%s: answers differ at octet %d of %d:\ngot  %r\nwant %r" % (
            what, i, len(expected), got[max(0, i - 60):i + 60], expected[max(0, i - 60):i + 60]))
    assert c.quiet(0.2), "%s: more than the answers: %r" % (what, bytes(c.buf[:200]))
    return took


def check_retr_matches_files(d, c):
    """RETR's answer is the file with CRLF line ends and dot-stuffing."""
    for i, m in enumerate(mailbox(d, "alice"), 1):
        c.send(b"RETR %d\r\n" % i)
        got = read_answer(c, b"RETR %d" % i)
        assert got == b"+OK %d octets\r\n" % m.size + dot_stuff(crlf(m.data)) + b".\r\n", i


MIXED = [b"LIST", b"UIDL", b"RETR %d", b"TOP %d 3", b"STAT", b"NOOP", b"LIST %d", b"UIDL %d",
         b"TOP %d 0", b"CAPA"]
ERRORS = [b"RETR 99", b"FROB", b"TOP 1", b"LIST 0", b"DELE x"]


def cases():
    """name -> (message sizes, the batch)."""
    big = [300000, 290001, 310003, 280007]
    around = [4096 + k * 97 - 1000 for k in range(20)]
    mixed = []
    for k in range(200):
        if k % 20 == 7:
            mixed.append(ERRORS[(k // 20) % len(ERRORS)])
        else:
            cmd = MIXED[k % len(MIXED)]
            mixed.append(cmd % (k % 6 + 1) if b"%d" in cmd else cmd)
    # Every end offset within the 4 KB output buffer, give or take.
    offsets = [3700 + k * 13 for k in range(60)]
    return {
        "4-big-retr": (big, [b"RETR %d" % i for i in (1, 2, 3, 4)]),
        "20-retr-around-the-buffer": (around, [b"RETR %d" % i for i in range(1, 21)]),
        "200-mixed-with-errors": ([5000, 120000, 3000, 70000, 4000, 40000], mixed),
        "60-retr-every-offset": (offsets, [b"RETR %d" % i for i in range(1, 61)]),
    }


CASES = cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_pop3_batch_plain(make_daemon, name):
    sizes, cmds = CASES[name]
    d = pop3_daemon(make_daemon, max_message_size="4M", timeout="60s")
    fill(d, sizes)
    with Pop(d.pop3_port) as c:
        c.login()
        took = batch(c, cmds, name)
        check_retr_matches_files(d, c)
        c.quit()
    print("%s: %d commands answered in %.2f s" % (name, len(cmds), took))


@pytest.mark.parametrize("name", sorted(CASES))
def test_pop3_batch_tls(make_daemon, pki, name):
    sizes, cmds = CASES[name]
    d = tls_daemon(make_daemon, pki, plaintext=False, max_message_size="4M",
                   extra=["pop3_timeout 60s"])
    fill(d, sizes)
    with PopTls(d.pop) as c:
        c.stls(pki.context())
        c.login()
        took = batch(c, cmds, name + " over STLS")
        c.quit()
    print("%s over TLS: %d commands answered in %.2f s" % (name, len(cmds), took))


def test_pop3_batch_then_half_close(make_daemon):
    """A batch ending in QUIT, then the client's half-close (as `printf ...
    | nc` does): every answer comes, the QUIT's deletion is done."""
    d = pop3_daemon(make_daemon, max_message_size="4M", timeout="60s")
    fill(d, [200000, 5000, 100000])
    msgs = mailbox(d, "alice")
    with Pop(d.pop3_port) as c:
        c.send(b"USER alice\r\nPASS secret\r\nRETR 1\r\nRETR 2\r\nRETR 3\r\nDELE 2\r\n"
               b"STAT\r\nQUIT\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        assert c.status() == "+OK"
        assert c.status().startswith("+OK Logged in, 3 messages")
        for i, m in enumerate(msgs, 1):
            assert read_answer(c, b"RETR %d" % i) == \
                b"+OK %d octets\r\n" % m.size + dot_stuff(crlf(m.data)) + b".\r\n", i
        assert c.status() == "+OK Marked for deletion"
        assert c.status() == "+OK 2 %d" % (msgs[0].size + msgs[2].size)
        assert c.status() == "+OK Bye"
        assert c.closed(5)
    assert [m.name.split(":")[0] for m in mailbox(d, "alice")] == \
        [msgs[0].base, msgs[2].base]


@pytest.mark.parametrize("verb,code", [(b"EHLO client.lan", 250), (b"HELP", 214)])
def test_smtp_flood_over_starttls(make_daemon, pki, verb, code):
    """2000 commands in one write after STARTTLS: the TLS engine holds what
    the session's input buffer cannot; every reply still comes."""
    d = tls_daemon(make_daemon, pki)
    n = 2000
    with Smtp.greeted(d.port) as c:
        c.starttls(pki.context())
        c.ehlo()
        c.send((verb + b"\r\n") * n)
        for i in range(n):
            try:
                r = c.reply(timeout=scaled(STALL))
            except ReplyTimeout:
                raise AssertionError("%s flood: reply %d of %d never came" % (
                    verb.decode(), i + 1, n)) from None
            assert r.code == code, "reply %d: %r" % (i + 1, r)
        assert c.quiet(0.2)
        c.expect("QUIT", "221")
