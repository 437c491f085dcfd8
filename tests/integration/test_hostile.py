"""Hostile and heavy SMTP clients (issue 8): each abuse gets a bounded
treatment, and none stalls the loop for anyone else.

While each abuse runs, a Probe (hostile.py) holds an ordinary session and
times a NOOP round trip every 20 ms; the test asserts a bound on the worst
of them.  The daemons run with short timeouts (smtp_timeout 2s) so the
timeouts themselves can be watched, and without the banner delay where the
binary has one (greet_pause 0s), so that fresh sessions start at once.

    1000 connections, 32 slots    excess answered 421 4.3.2 and closed, none left
                                  hanging; the served finish; RSS bounded, no growth
    slow-loris                    a line dribbled a byte at a time: 421 4.4.2 after
                                  smtp_timeout, counted from the line's start
    silent and half-closed        silent: 421 4.4.2 after smtp_timeout, slot freed;
                                  half-closed: every pipelined command answered, then close
    a client that never reads     the server stops reading, times out, closes; no spin
    pipelining flood              20000 commands in one stream: 20000 replies in order
    10 MB lines                   one 500 5.5.2 (command); 552 5.3.4 or stored (DATA)
    NUL, invalid UTF-8            one fixed reply each; 8-bit message text kept as sent
    10000 RCPTs                   max_recipients 250s, then 452 4.5.3, not an error
    AUTH brute force              throttled per address, each failure logged on one line
    commands after QUIT           221, close, nothing after it runs
"""

import socket
import selectors
import threading
import time

import pytest

from hostile import (SANITIZED, Probe, cpu_seconds, log_lines, no_greet_pause, raise_nofile,
                     scaled, vm)
from picotest import (Client, ServerClosed, assert_reply, expect_replies, lf, message,
                      send_transaction, smtp_send, stuff)
from relaytest import Spool, relay_daemon, status
from tlstest import b64

LATENCY = scaled(1.0)   # seconds: the worst NOOP round trip allowed during an abuse
TIMEOUT = 2        # smtp_timeout of these daemons, seconds


@pytest.fixture
def hd(make_daemon):
    return make_daemon(smtp_timeout="%ds" % TIMEOUT, plaintext_auth="yes", extra=no_greet_pause())


def probe(d, **kw):
    p = Probe(d.host, d.port, **kw)
    p.start()
    return p


def delivered_once(d, tag):
    """A fresh session delivers a message: the daemon still serves."""
    assert smtp_send(d.port, ["bob@lan"], message(tag)) == (250, "")
    bodies = [m.body for m in d.maildir("bob").messages()]
    assert bodies.count(lf(message(tag))) == 1, bodies


# --------------------------------------------------------------------------
# 1000 connections against max_connections 32


def burst(host, port, n, seconds=40.0):
    """Opens n connections at once (non-blocking connects) and reads each
    until it shows its first line.  Returns (served, refused, trouble):
    served: sockets that got "220 " and are still open (the caller owns
    them); refused: the bytes each refused connection got before the server
    closed it; trouble: what went wrong with the others."""
    sel = selectors.DefaultSelector()
    socks = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex((host, port))
        assert err in (0, 115), "connect: errno %d" % err      # EINPROGRESS
        sel.register(s, selectors.EVENT_READ, i)
        socks.append(s)
    got = {i: b"" for i in range(n)}
    served, refused, trouble = [], [], []
    deadline = time.monotonic() + seconds
    pending = n
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            s, i = key.fileobj, key.data
            try:
                chunk = s.recv(4096)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                chunk = None
            if chunk:
                got[i] += chunk
                if got[i].startswith(b"220 ") and got[i].endswith(b"\r\n"):
                    sel.unregister(s)
                    s.setblocking(True)
                    served.append(s)
                    pending -= 1
                continue
            sel.unregister(s)
            s.close()
            pending -= 1
            (refused if got[i] else trouble).append(
                got[i] if got[i] else "connection %d closed or reset without a reply" % i)
    for key in list(sel.get_map().values()):
        trouble.append("connection %d: no verdict within %.0f s (got %r)" % (
            key.data, seconds, got[key.data]))
        key.fileobj.close()
    sel.close()
    return served, refused, trouble


def finish_served(socks, tag):
    """Each served connection sends a whole transaction and quits."""
    for k, s in enumerate(socks):
        c = Client.__new__(Client)
        c.sock, c.buf, c.timeout = s, bytearray(), 10.0
        s.settimeout(10.0)
        with c:
            c.expect("EHLO burst.lan", "250")
            r = send_transaction(c, ["alice@lan"], message("%s %d" % (tag, k)))
            assert_reply(r, "250", "a served connection's message")
            c.expect("QUIT", "221")


RSS_CEILING = 8 * 1024      # KiB, for max_connections 32: what a 64 MB board can spare


def test_thousand_connections_against_32_slots(make_daemon):
    """Three bursts of 1000 connections at once.  Each: 31 served (the
    probe holds the 32nd slot), 969 answered 421 4.3.2 and closed, none left
    without a word; the served ones then deliver a message each.  The peak
    RSS stays under the ceiling and does not grow from burst to burst."""
    assert raise_nofile(4096) >= 2200, "cannot raise RLIMIT_NOFILE for 1000 sockets"
    d = make_daemon(max_connections="32", smtp_timeout="20s", extra=no_greet_pause())
    p = probe(d, interval=0.05)
    rss_idle = vm(d.pid, "VmRSS")
    results = []
    try:
        for round_ in range(3):
            t0 = time.monotonic()
            served, refused, trouble = burst(d.host, d.port, 1000)
            took = time.monotonic() - t0
            try:
                assert not trouble, "%d connections without a verdict: %s" % (
                    len(trouble), trouble[:5])
                bad = [r for r in refused if not r.startswith(b"421 4.3.2 ")
                       or not r.endswith(b"\r\n") or r.count(b"\r\n") != 1]
                assert not bad, "refused connections must get exactly one 421 4.3.2 line: " \
                    "%r" % (bad[:3],)
                assert len(served) == 31, "%d served, want 31 (32 slots, one held by the " \
                    "probe)" % len(served)
                assert len(refused) == 1000 - 31
            finally:
                finish_served(served, "round %d" % round_)
            results.append((took, len(refused), vm(d.pid, "VmHWM")))
    finally:
        p.stop()
    p.check(LATENCY, "1000-connection bursts")
    for round_, (took, n421, hwm) in enumerate(results):
        print("burst %d: 1000 connections, 31 served, %d answered 421 within %.2f s; "
              "VmHWM %d KiB (idle RSS %d KiB)" % (round_, n421, took, hwm, rss_idle))
    # The pools are fixed at start-up: once every slot has served, another
    # burst costs no more memory.
    if not SANITIZED:
        assert results[2][2] <= results[1][2] + 64, \
            "peak RSS grew from %d to %d KiB between two identical bursts" % (
                results[1][2], results[2][2])
        assert results[2][2] < RSS_CEILING, "peak RSS %d KiB over the %d KiB ceiling" % (
            results[2][2], RSS_CEILING)
    assert len(d.maildir("alice").messages()) == 3 * 31
    st = status(d)
    assert st["pool.conn"] == "0/32", st["pool.conn"]
    assert int(st["refused_busy"]) == 3 * 969, st
    delivered_once(d, "after the bursts")
    assert d.alive()


# --------------------------------------------------------------------------
# Slow clients


@pytest.mark.parametrize("where", ["command", "data"])
def test_slow_loris_is_cut_after_smtp_timeout(hd, where):
    """A byte every second, never a whole line: the timeout counts from the
    start of the line, not from the last byte."""
    p = probe(hd)
    try:
        with hd.session() as c:
            if where == "data":
                c.expect("MAIL FROM:<loris@example.org>", "250")
                c.expect("RCPT TO:<alice@lan>", "250")
                c.expect("DATA", "354")
            t0 = time.monotonic()
            for b in b"Subject: NOOP NOOP"[:TIMEOUT + 4]:
                try:
                    c.send(bytes([b]))
                except OSError:
                    break
                if not c.quiet(1.0):
                    break           # the server spoke (or closed)
            took = time.monotonic() - t0
            try:
                verdict = c.reply(timeout=2)
            except (ServerClosed, AssertionError) as e:
                raise AssertionError("slow-loris in %s: no 421 after %.1f s (%s)" % (
                    where, took, e)) from None
            assert_reply(verdict, "421 4.4.2", "a line dribbled a byte a second")
            assert TIMEOUT - 0.5 <= took <= TIMEOUT + scaled(1.5), \
                "cut after %.1f s, smtp_timeout is %d s" % (took, TIMEOUT)
            assert c.closed(2)
    finally:
        p.stop()
    p.check(LATENCY, "a slow-loris client")
    assert hd.maildir("alice").messages() == []
    hd.maildir("alice").assert_clean()
    delivered_once(hd, "after slow-loris")


def test_slow_but_steady_commands_are_not_cut(hd):
    """The other side of the rule: whole commands, each well within the
    timeout, keep a session alive beyond it."""
    with hd.session() as c:
        t0 = time.monotonic()
        while time.monotonic() - t0 < TIMEOUT + 0.5:
            for b in b"NOOP\r\n":
                c.send(bytes([b]))
                time.sleep(0.05)
            assert_reply(c.reply(), "250", "a NOOP sent in pieces within the timeout")
            time.sleep(TIMEOUT / 2)
        r = send_transaction(c, ["alice@lan"], message("steady"))
        assert_reply(r, "250", "after %.1f s of slow NOOPs" % (time.monotonic() - t0))


def test_many_silent_connections_time_out_and_free_their_slots(make_daemon):
    """Connections that never say a word hold a slot only until the
    timeout; then the slots serve others."""
    d = make_daemon(max_connections="8", smtp_timeout="%ds" % TIMEOUT, extra=no_greet_pause())
    p = probe(d)
    silent = []
    try:
        for _ in range(7):
            c = d.connect()
            assert_reply(c.reply(), "220", "a silent client's greeting")
            silent.append(c)
        with d.connect() as extra:
            assert_reply(extra.reply(), "421 4.3.2", "an 8th session with 8 slots, 7 silent")
        t0 = time.monotonic()
        for c in silent:
            assert_reply(c.reply(timeout=TIMEOUT + 3), "421 4.4.2", "a silent client")
            assert c.closed(2)
        took = time.monotonic() - t0
        assert took <= TIMEOUT + scaled(1.5), "silent clients were cut after %.1f s" % took
    finally:
        for c in silent:
            c.close()
        p.stop()
    p.check(LATENCY, "7 silent connections")
    delivered_once(d, "after the silent ones")


def test_half_closed_client_gets_every_reply(hd):
    """A client that pipelines a transaction and shuts its sending side
    (half-close) is answered in full; then the server closes."""
    with hd.session() as c:
        c.send(b"MAIL FROM:<half@example.org>\r\nRCPT TO:<alice@lan>\r\nDATA\r\n"
               + stuff(message("half-closed")) + b".\r\nNOOP\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        expect_replies(c, ["250", "250", "354", "250 2.0.0", "250"], "after a half-close")
        assert c.closed(TIMEOUT + 1), "the server kept a half-closed session open"
    [m] = hd.maildir("alice").messages()
    assert m.body == lf(message("half-closed"))


def test_client_that_never_reads(hd):
    """Commands pipelined by a client that reads no reply: the server's
    output fills, it stops reading, and after smtp_timeout it closes.  The
    loop does not spin meanwhile, and others are served."""
    p = probe(hd)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect((hd.host, hd.port))
    sent = [0]
    ended = {}

    def flood():
        chunk = b"NOOP\r\n" * 4096
        try:
            while sent[0] < 64 << 20:
                s.sendall(chunk)
                sent[0] += len(chunk)
            ended["how"] = "sent everything"
        except OSError as e:
            ended["how"] = "%s" % type(e).__name__
        ended["at"] = time.monotonic()

    try:
        assert s.recv(100).startswith(b"220 ")
        cpu0 = cpu_seconds(hd.pid)
        t0 = time.monotonic()
        th = threading.Thread(target=flood, daemon=True)
        th.start()
        th.join(TIMEOUT + 8)
        assert not th.is_alive(), "the server never closed on a client that reads nothing " \
            "(%d bytes sent)" % sent[0]
        took = ended["at"] - t0
        cpu = cpu_seconds(hd.pid) - cpu0
    finally:
        s.close()
        p.stop()
    p.check(LATENCY, "a client that never reads")
    print("never-reads: %d bytes taken, closed after %.1f s (%s), daemon CPU %.2f s" % (
        sent[0], took, ended["how"], cpu))
    assert ended["how"] != "sent everything", "64 MiB of NOOPs taken without a reader"
    assert took <= TIMEOUT + scaled(3), "closed after %.1f s, smtp_timeout %d s" % (took, TIMEOUT)
    assert cpu < scaled(0.5 + 0.1 * took), "the daemon used %.2f s of CPU while blocked" % cpu
    delivered_once(hd, "after a client that never reads")


def test_pipelining_flood_answered_in_order(hd):
    cycle = [(b"NOOP", "250"), (b"RSET", "250"), (b"VRFY flood", "252"), (b"HELP", "214")]
    n = 20000
    p = probe(hd)
    try:
        with hd.session() as c:
            stream = b"".join(cycle[i % 4][0] + b"\r\n" for i in range(n))
            th = threading.Thread(target=lambda: c.sock.sendall(stream), daemon=True)
            t0 = time.monotonic()
            th.start()
            for i in range(n):
                r = c.reply()
                assert r.matches(cycle[i % 4][1]), "reply %d of %d: %r, want %s" % (
                    i + 1, n, r, cycle[i % 4][1])
            took = time.monotonic() - t0
            th.join(5)
            assert c.quiet(0.3), "more replies than commands"
            r = send_transaction(c, ["alice@lan"], message("after the flood"))
            assert_reply(r, "250", "a transaction after 20000 pipelined commands")
    finally:
        p.stop()
    p.check(LATENCY, "a 20000-command pipelining flood")
    print("pipelining flood: %d commands answered in %.2f s" % (n, took))


def test_pipelined_bad_commands_end_at_the_error_limit(hd):
    with hd.session() as c:
        c.send(b"FROB\r\n" * 1000)
        got = []
        while True:
            try:
                got.append(c.reply(timeout=3))
            except (ServerClosed, ConnectionResetError):
                break
        codes = [r.code for r in got]
        assert codes == [500] * 10 + [421], "1000 bad commands pipelined: %r" % codes[:20]


# --------------------------------------------------------------------------
# Long lines, NUL, invalid UTF-8


def test_ten_megabyte_command_line(hd):
    p = probe(hd)
    try:
        with hd.session() as c:
            hwm0 = vm(hd.pid, "VmHWM")
            th = threading.Thread(
                target=lambda: c.sock.sendall(b"NOOP " + b"x" * (10 << 20) + b"\r\n"),
                daemon=True)
            th.start()
            assert_reply(c.reply(timeout=20), "500 5.5.2", "a 10 MB command line")
            th.join(10)
            assert c.quiet(0.5), "more than one reply to one long line: %r" % bytes(c.buf[:200])
            c.expect("NOOP", "250")
            r = send_transaction(c, ["alice@lan"], message("after a 10 MB line"))
            assert_reply(r, "250", "after a 10 MB line")
            hwm1 = vm(hd.pid, "VmHWM")
    finally:
        p.stop()
    p.check(LATENCY, "a 10 MB command line")
    if not SANITIZED:
        assert hwm1 - hwm0 < 512, "peak RSS grew by %d KiB reading a 10 MB line" % (hwm1 - hwm0)


@pytest.mark.parametrize("limit,want", [("1M", "552 5.3.4"), ("16M", "250 2.0.0")])
def test_ten_megabyte_line_in_data(make_daemon, limit, want):
    """The DATA reader keeps no line: a 10 MB line is only octets against
    max_message_size, in fixed memory."""
    d = make_daemon(max_message_size=limit, extra=no_greet_pause())
    line = b"y" * (10 << 20)
    data = b"Subject: one long line\r\n\r\n" + line + b"\r\n"
    with d.session() as c:
        hwm0 = vm(d.pid, "VmHWM")
        c.expect("MAIL FROM:<long@example.org>", "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        th = threading.Thread(target=lambda: c.sock.sendall(data + b".\r\n"), daemon=True)
        th.start()
        assert_reply(c.reply(timeout=30), want, "a 10 MB line with max_message_size %s" % limit)
        th.join(10)
        c.expect("NOOP", "250")
        hwm1 = vm(d.pid, "VmHWM")
    msgs = d.maildir("alice").messages()
    if want.startswith("250"):
        assert [m.body for m in msgs] == [lf(data)]
    else:
        assert msgs == []
    d.maildir("alice").assert_clean()
    if not SANITIZED:
        assert hwm1 - hwm0 < 512, "peak RSS grew by %d KiB" % (hwm1 - hwm0)


# (what, setup lines, offending line, expected reply); the session goes on.
ODD_BYTES = [
    ("NUL in EHLO", [], b"EHLO a\x00b.lan", "500 5.5.2"),
    ("NUL alone", [], b"\x00", "500 5.5.2"),
    ("1 MB of NULs", [], b"\x00" * (1 << 20), "500 5.5.2"),
    ("NUL in MAIL", [], b"MAIL FROM:<a\x00b@example.org>", "500 5.5.2"),
    ("NUL after DATA", [("MAIL FROM:<a@example.org>", "250"), ("RCPT TO:<alice@lan>", "250")],
     b"DATA\x00", "500 5.5.2"),
    ("NUL in an AUTH response", [("AUTH PLAIN", "334")], b"AGFsaWNl\x00AHNlY3JldA==",
     "500 5.5.2"),
    ("invalid UTF-8 in EHLO", [], b"EHLO \xc3\x28.lan", "501 5.5.4|501 5.5.2"),
    ("overlong UTF-8 slash in EHLO", [], b"EHLO a\xc0\xafb.lan", "501 5.5.4|501 5.5.2"),
    ("invalid UTF-8 in MAIL", [], b"MAIL FROM:<\xff\xfe@example.org>", "501 5.1.7"),
    ("UTF-8 in MAIL without SMTPUTF8", [], "MAIL FROM:<jos\u00e9@example.org>".encode(),
     "501 5.1.7"),
    ("SMTPUTF8 parameter", [], b"MAIL FROM:<a@example.org> SMTPUTF8", "555 5.5.4"),
    ("invalid UTF-8 in RCPT", [("MAIL FROM:<a@example.org>", "250")],
     b"RCPT TO:<\xed\xa0\x80@lan>", "501 5.1.3"),
    ("invalid UTF-8 after NOOP", [], b"NOOP \xff\xfe\xfd", "250"),
    ("invalid UTF-8 after VRFY", [], b"VRFY \xc0\xaf", "252"),
    ("invalid UTF-8 verb", [], b"\xff\xfeOOP", "500 5.5.1"),
    ("DEL in a command", [], b"NOOP \x7f", "500 5.5.2"),
    ("escape sequence in EHLO", [], b"EHLO \x1b[31m.lan", "500 5.5.2"),
]


@pytest.mark.parametrize("setup,line,want", [x[1:] for x in ODD_BYTES],
                         ids=[x[0] for x in ODD_BYTES])
def test_odd_bytes_in_commands(hd, setup, line, want):
    with hd.session() as c:
        for l, w in setup:
            c.expect(l, w)
        if len(line) > 4096:
            th = threading.Thread(target=lambda: c.sock.sendall(line + b"\r\n"), daemon=True)
            th.start()
            r = c.reply(timeout=10)
            th.join(5)
        else:
            r = c.cmd(line)
        assert_reply(r, want, "C: %r" % line[:60])
        assert c.quiet(0.3), "more than one reply: %r" % bytes(c.buf[:200])
        c.expect("RSET", "250")
        r = send_transaction(c, ["alice@lan"], message("after odd bytes"))
        assert_reply(r, "250", "a transaction after %r" % line[:40])
    assert len(hd.maildir("alice").messages()) == 1


def test_invalid_utf8_message_text_is_kept_as_sent(hd):
    """8BITMIME: message text is octets; invalid UTF-8 is neither refused
    nor rewritten, and the Maildir sizes count it right."""
    data = (b"Subject: \xff\xfe \xc3\x28 \xed\xa0\x80 \xf4\x90\x80\x80\r\n"
            b"X-Bytes: \xc0\xaf\xe0\x80\xaf\r\n\r\n"
            + bytes(range(0x80, 0x100)) + b"\r\n\xef\xbb\xbfbom\r\n")
    with hd.session() as c:
        c.expect("MAIL FROM:<u8@example.org> BODY=8BITMIME", "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        c.send(data + b".\r\n")
        assert_reply(c.reply(), "250", "a message with invalid UTF-8")
    [m] = hd.maildir("alice").messages()
    assert m.body == lf(data)


# --------------------------------------------------------------------------
# 10000 recipients


def sender_thread(sock, data):
    th = threading.Thread(target=lambda: sock.sendall(data), daemon=True)
    th.start()
    return th


def test_ten_thousand_rcpts(hd):
    """max_recipients (100 by default) RCPTs are taken; the rest get 452
    4.5.3, which is not a client error: the session is not dropped and the
    message goes to the ones taken."""
    n = 10000
    p = probe(hd)
    try:
        with hd.session() as c:
            c.expect("MAIL FROM:<many@example.org>", "250")
            th = sender_thread(c.sock, b"".join(b"RCPT TO:<alice@lan>\r\n" if i % 2 else
                                                b"RCPT TO:<bob@lan>\r\n" for i in range(n)))
            codes = [c.reply().code for _ in range(n)]
            th.join(5)
            assert codes[:100] == [250] * 100, codes[:110]
            assert codes[100:] == [452] * (n - 100), sorted(set(codes[100:]))
            c.expect("DATA", "354")
            c.send(stuff(message("ten thousand")) + b".\r\n")
            assert_reply(c.reply(), "250", "the message after 10000 RCPTs")
    finally:
        p.stop()
    p.check(LATENCY, "10000 pipelined RCPTs")
    assert len(hd.maildir("alice").messages()) == 1
    assert len(hd.maildir("bob").messages()) == 1


def test_ten_thousand_distinct_remote_rcpts(make_daemon):
    """max_recipients 10000 (its largest value): the transaction's table
    still holds 100 distinct relayed recipients; the rest get 452 4.5.3 and
    the queued envelope names exactly the 100."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))          # a smarthost port that refuses
    port = dead.getsockname()[1]
    dead.close()
    d = relay_daemon(make_daemon, "127.0.0.1:%d" % port, max_recipients="10000",
                     extra=no_greet_pause())
    n = 10000
    with d.session() as c:
        c.expect("MAIL FROM:<alice@lan>", "250")
        th = sender_thread(c.sock, b"".join(b"RCPT TO:<r%d@remote.test>\r\n" % i
                                            for i in range(n)))
        codes = [c.reply().code for _ in range(n)]
        th.join(5)
        assert codes[:100] == [250] * 100, codes[:110]
        assert set(codes[100:]) == {452}, sorted(set(codes[100:]))
        c.expect("DATA", "354")
        c.send(stuff(message("ten thousand remote")) + b".\r\n")
        r = c.reply()
        assert_reply(r, "250", "the queued message")
    sp = Spool(d)
    [qid] = sp.names("env")
    rcpts = [a for _, _, a, _ in sp.envelope(qid)["rcpts"]]
    assert rcpts == ["r%d@remote.test" % i for i in range(100)], rcpts[:5]


# --------------------------------------------------------------------------
# AUTH brute force


@pytest.fixture
def subd(make_daemon):
    """A plain submission listener with AUTH allowed in clear, loopback
    outside relay_from (so the per-address limits apply)."""
    from picotest import free_port
    port = free_port()
    d = make_daemon(start=False, relay_from="10.0.0.0/8", plaintext_auth="yes",
                    max_per_address="4", extra=no_greet_pause() + [
                        "listen submission 127.0.0.1:%d" % port])
    d.sub = port
    d.start()
    return d


def plain(user, password):
    return b64("\0%s\0%s" % (user, password))


def test_auth_brute_force_is_throttled_and_logged(subd):
    """Four parallel connections (max_per_address 4) guessing as fast as
    they can for 4 s: the delays grow per address (0.2 s doubling), so they
    get a handful of verdicts, not thousands; each failure is logged once; a
    fifth connection is refused; the loop serves everyone else meanwhile."""
    d = subd
    p = probe(d, connect=lambda: _from(d, d.port, "127.0.0.3"))
    verdicts, clients = [], []
    lock = threading.Lock()

    def guesser(k):
        try:
            c = _from(d, d.sub, "127.0.0.1")
            with lock:
                clients.append(c)
            assert_reply(c.reply(), "220", "greeting")
            c.expect("EHLO guess.lan", "250")
            for i in range(100):
                r = c.cmd("AUTH PLAIN " + plain("alice", "guess-%d-%d" % (k, i)))
                with lock:
                    verdicts.append(r.code)
                if r.code == 421:
                    return
        except (ServerClosed, OSError, AssertionError):
            pass            # closed by the test at the end of the window

    threads = [threading.Thread(target=guesser, args=(k,), daemon=True) for k in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.3)
        with _from(d, d.sub, "127.0.0.1") as fifth:
            assert_reply(fifth.reply(), "421 4.7.0", "a fifth connection from the guesser")
        time.sleep(3.7)
        with lock:
            codes = list(verdicts)
            for c in clients:
                c.sock.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(5)
        assert not any(t.is_alive() for t in threads), "a guesser is still waiting"
    finally:
        for c in clients:
            c.close()
        p.stop()
    p.check(LATENCY, "an AUTH brute force")
    print("brute force: %d verdicts in 4 s from 4 connections" % len(codes))
    assert set(codes) <= {535}, codes
    # Failures 1-4 are answered after 0.2, 0.4, 0.8 and 1.6 s, the 5th
    # after 3.2 s more: no more than a handful fit in the window.
    assert 3 <= len(codes) <= 8, "%d verdicts in 4 s from one address" % len(codes)
    deadline = time.monotonic() + 3
    while len(d.events("refused", reason="auth")) < len(codes) and time.monotonic() < deadline:
        time.sleep(0.05)
    failed = d.events("refused", reason="auth")
    # Each verdict's failure was logged (and those cut off at the window's
    # end too: they failed before their delay began).
    assert len(codes) <= len(failed) <= len(codes) + 4, (len(codes), failed)
    assert all(e["client"] == "127.0.0.1" for e in failed), failed[:3]
    # Another address is not slowed by this one's failures, and a right
    # password works at once.
    with _from(d, d.sub, "127.0.0.2") as c:
        assert_reply(c.reply(), "220", "greeting")
        c.expect("EHLO other.lan", "250")
        t = time.monotonic()
        c.expect("AUTH PLAIN " + plain("alice", "secret"), "235 2.7.0")
        assert time.monotonic() - t < 0.5


def _from(d, port, source):
    s = Client.__new__(Client)
    s.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.sock.settimeout(15)
    s.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sock.bind((source, 0))
    s.sock.connect((d.host, port))
    s.buf, s.timeout = bytearray(), 15
    return s


@pytest.mark.parametrize("user", ["evil\nfake: AUTH ok for root", "evil\rX", "evil\x1b[2J",
                                  "\xff\xfe"])
def test_auth_user_name_cannot_forge_log_lines(subd, user):
    """The name in a failed AUTH is the client's: it is logged on one line,
    control characters shown escaped, never as they came."""
    d = subd
    with _from(d, d.sub, "127.0.0.1") as c:
        assert_reply(c.reply(), "220", "greeting")
        c.expect("EHLO client.lan", "250")
        ir = b64(b"\0" + user.encode("latin-1") + b"\0wrong")
        c.expect("AUTH PLAIN " + ir, "535 5.7.8")
    log = d.log(1 << 20)
    [line] = [l for l in log.splitlines() if "reason=auth" in l]
    [event] = d.events("refused", reason="auth")
    assert event["client"] == "127.0.0.1" and event["user"] == user, (event, line)
    for bad in ("\r", "\x1b", "\xff"):
        assert bad not in log, "raw %r from the client reached the log: %r" % (bad, line)
    assert "fake: AUTH ok" not in log.replace(line, ""), "a forged log line"


# --------------------------------------------------------------------------
# After QUIT


@pytest.mark.parametrize("tail", [1, 200 * 1024], ids=["small", "200KB"])
def test_nothing_runs_after_quit(hd, tail):
    """Commands pipelined after QUIT get no answer and do nothing; the 221
    reaches the client even when more input is still unread."""
    after = (b"MAIL FROM:<after@example.org>\r\nRCPT TO:<alice@lan>\r\nDATA\r\n"
             b"Subject: after quit\r\n\r\nafter quit\r\n.\r\n")
    if tail > 1:
        after += b"NOOP\r\n" * (tail // 6)
    with hd.session() as c:
        th = sender_thread(c.sock, b"QUIT\r\n" + after)
        time.sleep(0.3)
        assert_reply(c.reply(), "221", "QUIT with commands after it")
        assert c.closed(3), "no close after 221"
        assert not c.buf, "bytes after the 221: %r" % bytes(c.buf[:200])
        th.join(5)
    assert hd.maildir("alice").messages() == []
    delivered_once(hd, "after quit")
