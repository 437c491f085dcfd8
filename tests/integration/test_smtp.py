"""SMTP receive and Maildir delivery with real clients: smtplib, swaks and a
raw socket.  Each test checks the replies and the files in new/."""

import os
import stat
import subprocess
import time

import pytest

from picotest import (CRLF, SENDER, assert_reply, expect_replies, lf, message,
                      send_transaction, smtp_send, stuff)


def only_message(d, user):
    msgs = d.maildir(user).messages()
    assert len(msgs) == 1, "%s has %d messages in new/, want 1" % (user, len(msgs))
    d.maildir(user).assert_clean()
    return msgs[0]


# ---------------------------------------------------------------- greeting


def test_greeting_and_ehlo_keywords(daemon):
    with daemon.connect() as c:
        g = c.reply()
        assert g.lines == ["220 test.lan ESMTP picomail"] or \
            g.lines[-1].startswith("220 test.lan ESMTP picomail"), g
        r = c.cmd("EHLO client.lan")
        assert r.code == 250, r
        assert r.lines[0].startswith("250-test.lan") or r.lines[0].startswith("250 test.lan"), r
        keywords = {l[4:].split()[0].upper(): l[4:] for l in r.lines[1:]}
        for kw in ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SIZE"):
            assert kw in keywords, "EHLO does not advertise %s: %r" % (kw, r)
        # max_message_size 1M = 1048576 octets (RFC 1870: SIZE <octets>)
        assert keywords["SIZE"] == "SIZE 1048576", r
        c.expect("QUIT", "221")
        assert c.closed(), "no close after 221"


def test_helo_then_delivery(daemon):
    with daemon.session(helo="HELO client.lan") as c:
        r = send_transaction(c, ["alice@lan"], message("helo"))
        assert_reply(r, "250 2.0.0", "end of data")
    assert only_message(daemon, "alice").body == lf(message("helo"))


# ---------------------------------------------------------------- delivery


def test_smtplib_delivery(daemon):
    msg = (b"From: Sender <sender@example.org>\r\nTo: alice@lan\r\nSubject: plain\r\n\r\n"
           b"Hello Alice.\r\nSecond line.\r\n")
    assert smtp_send(daemon.port, ["alice@lan"], msg) == (250, "")
    m = only_message(daemon, "alice")
    assert m.return_path == b"<sender@example.org>"
    assert m.body == lf(msg)
    # RFC 5321 4.4: FROM clause with the EHLO name and the client's address,
    # BY clause with our host name, and the date after ';'.
    assert b"client.lan" in m.received, m.received
    assert b"127.0.0.1" in m.received, m.received
    assert b"by test.lan" in m.received, m.received
    assert b";" in m.received, m.received
    assert not os.path.exists(os.path.join(daemon.mail_root, "bob")), \
        "bob's Maildir was created though no mail was sent to bob"


def test_maildir_created_on_demand_and_private(daemon):
    root = os.path.join(daemon.mail_root, "alice")
    assert not os.path.exists(root)
    assert smtp_send(daemon.port, ["alice@lan"], message()) == (250, "")
    for sub in ("tmp", "new", "cur"):
        assert os.path.isdir(os.path.join(root, sub)), "%s/ not created" % sub
    m = only_message(daemon, "alice")
    # Mail is private, as Postfix and Dovecot create it.
    assert stat.S_IMODE(m.st.st_mode) & 0o007 == 0, "mail file mode %o" % m.st.st_mode


def test_swaks_delivery(daemon, workdir):
    path = os.path.join(workdir, "swaks-data")
    # swaks turns LF into CRLF, dot-stuffs, and adds CRLF . CRLF.
    with open(path, "wb") as f:
        f.write(b"Subject: via swaks\n\n.leading dot\nbody line\ncaf\xc3\xa9")
    p = subprocess.run(
        ["swaks", "--server", "127.0.0.1:%d" % daemon.port, "--to", "alice@lan",
         "--from", "swaks@example.org", "--helo", "client.lan", "--timeout", "10",
         "--pipeline", "--data", "@" + path],
        capture_output=True, timeout=30)
    out = p.stdout.decode("latin-1")
    assert p.returncode == 0, out + p.stderr.decode("latin-1")
    assert "250 2.0.0" in out, out
    m = only_message(daemon, "alice")
    assert m.return_path == b"<swaks@example.org>"
    assert m.body == b"Subject: via swaks\n\n.leading dot\nbody line\ncaf\xc3\xa9\n"


def test_swaks_unknown_user_refused(daemon):
    p = subprocess.run(
        ["swaks", "--server", "127.0.0.1:%d" % daemon.port, "--to", "nobody@lan",
         "--from", "swaks@example.org", "--helo", "client.lan", "--timeout", "10"],
        capture_output=True, timeout=30)
    out = p.stdout.decode("latin-1")
    assert p.returncode != 0, out
    assert "550 5.1.1" in out, out
    assert daemon.all_files() == []


def test_several_recipients_written_once_and_hard_linked(daemon):
    msg = message("two")
    assert smtp_send(daemon.port, ["alice@lan", "bob@lan"], msg) == (250, "")
    a, b = only_message(daemon, "alice"), only_message(daemon, "bob")
    assert a.body == b.body == lf(msg)
    assert (a.st.st_dev, a.st.st_ino) == (b.st.st_dev, b.st.st_ino), "not one file hard-linked"
    assert a.st.st_nlink == 2, "st_nlink %d" % a.st.st_nlink


@pytest.mark.parametrize("rcpt,users", [
    ("team@lan", ["alice", "bob"]),
    ("al@lan", ["alice"]),
    ("postmaster@lan", ["alice"]),
    ("postmaster@localhost", ["alice"]),
    ("Postmaster@LAN", ["alice"]),      # RFC 5321 4.5.1: postmaster is case-insensitive
    ("postmaster", ["alice"]),          # RFC 5321 4.1.1.3: <Postmaster> with no domain
    ("alice@LAN", ["alice"]),           # domains are case-insensitive
    ("alice@localhost", ["alice"]),
])
def test_aliases_and_local_domains(daemon, rcpt, users):
    with daemon.session() as c:
        c.expect("MAIL FROM:<%s>" % SENDER, "250")
        c.expect("RCPT TO:<%s>" % rcpt, "250")
        c.expect("DATA", "354")
        c.send(message(rcpt) + b".\r\n")
        assert_reply(c.reply(), "250 2.0.0", "end of data")
    stored = [only_message(daemon, u) for u in users]
    for m in stored:
        assert m.body == lf(message(rcpt))
    assert {(m.st.st_ino, m.st.st_nlink) for m in stored} == {(stored[0].st.st_ino, len(users))}
    for other in {"alice", "bob"} - set(users):
        assert daemon.maildir(other).messages() == []


def test_duplicate_recipients_get_one_copy(daemon):
    """alice, her alias al and the list team (alice, bob) in one transaction:
    each user gets the message once, as Postfix does."""
    msg = message("dups")
    assert smtp_send(daemon.port, ["alice@lan", "al@lan", "team@lan", "alice@lan"], msg) == (250, "")
    a, b = only_message(daemon, "alice"), only_message(daemon, "bob")
    assert a.st.st_ino == b.st.st_ino and a.st.st_nlink == 2


def test_quoted_local_part_sender(daemon):
    """RFC 5321 4.1.2: Local-part = Dot-string / Quoted-string."""
    with daemon.session() as c:
        c.expect('MAIL FROM:<"john doe"@example.org>', "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        c.send(message("quoted") + b".\r\n")
        assert_reply(c.reply(), "250", "end of data")
    assert only_message(daemon, "alice").return_path == b'<"john doe"@example.org>'


# RFC 5321 4.1.2: a quoted local part that needs no quoting is the same
# local part unquoted; picomail keeps and passes on the canonical form.
@pytest.mark.parametrize("rcpt,users,canonical", [
    ('"bob"@lan', ["bob"], "bob@lan"),
    ('"Bob"@LAN', ["bob"], "Bob@lan"),
    ('"b\\ob"@lan', ["bob"], "bob@lan"),
    ('"team"@lan', ["alice", "bob"], "team@lan"),
    ('"al"@localhost', ["alice"], "al@localhost"),
    ('"postmaster"@lan', ["alice"], "postmaster@lan"),
])
def test_quoted_local_part_that_needs_no_quotes(daemon, rcpt, users, canonical):
    with daemon.session() as c:
        c.expect("MAIL FROM:<%s>" % SENDER, "250")
        c.expect("RCPT TO:<%s>" % rcpt, "250")
        c.expect("DATA", "354")
        c.send(message("quoted") + b".\r\n")
        assert_reply(c.reply(), "250 2.0.0", "end of data")
    stored = [only_message(daemon, u) for u in users]
    assert all(m.body == lf(message("quoted")) for m in stored)
    assert b"for <%s>" % canonical.encode() in stored[0].received, stored[0].received
    for other in {"alice", "bob"} - set(users):
        assert daemon.maildir(other).messages() == []


def test_quoted_local_part_smtplib_and_swaks(daemon):
    """smtplib and swaks send the quotes as written; bob gets both."""
    assert smtp_send(daemon.port, ['"bob"@lan'], message("smtplib")) == (250, "")
    p = subprocess.run(
        ["swaks", "--server", "127.0.0.1:%d" % daemon.port, "--to", '"bob"@lan',
         "--from", '"swaks"@example.org', "--helo", "client.lan", "--timeout", "10"],
        capture_output=True, timeout=30)
    out = p.stdout.decode("latin-1")
    assert p.returncode == 0, out + p.stderr.decode("latin-1")
    assert 'RCPT TO:<"bob"@lan>' in out, out
    msgs = daemon.maildir("bob").messages()
    assert len(msgs) == 2, [m.name for m in msgs]
    assert sorted(m.return_path for m in msgs) == [b"<sender@example.org>",
                                                   b"<swaks@example.org>"]
    assert daemon.maildir("alice").messages() == []


@pytest.mark.parametrize("sender,return_path", [
    ('"sender"@example.org', b"<sender@example.org>"),
    ('"john\\ doe"@example.org', b'<"john doe"@example.org>'),
    ('"a\\"b"@example.org', b'<"a\\"b"@example.org>'),
])
def test_quoted_sender_in_canonical_form(daemon, sender, return_path):
    with daemon.session() as c:
        c.expect("MAIL FROM:<%s>" % sender, "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        c.send(message("quoted") + b".\r\n")
        assert_reply(c.reply(), "250", "end of data")
    assert only_message(daemon, "alice").return_path == return_path


@pytest.mark.parametrize("rcpt", ['"john doe"@lan', '"bob "@lan', '"bob."@lan', '""@lan'])
def test_quoted_local_part_that_needs_quotes_is_no_user(daemon, rcpt):
    with daemon.session() as c:
        c.expect("MAIL FROM:<%s>" % SENDER, "250")
        c.expect("RCPT TO:<%s>" % rcpt, "550 5.1.1")
        c.expect("RCPT TO:<bob@lan>", "250")


def test_null_sender(daemon):
    with daemon.session() as c:
        c.expect("MAIL FROM:<>", "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        c.send(message("bounce") + b".\r\n")
        assert_reply(c.reply(), "250", "end of data")
    assert only_message(daemon, "alice").return_path == b"<>"


def test_empty_message(daemon):
    with daemon.session() as c:
        c.expect("MAIL FROM:<%s>" % SENDER, "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        c.send(b".\r\n")
        assert_reply(c.reply(), "250", "empty message")
    assert only_message(daemon, "alice").body == b""


# ---------------------------------------------------------------- data


def test_dot_unstuffing(daemon):
    sent = (b"Subject: dots\r\n\r\n"
            b"..leading dot\r\n"
            b"...two dots\r\n"
            b"..\r\n"
            b".x not stuffed by the client\r\n"   # RFC 5321 4.5.2: first dot deleted
            b"end\r\n")
    with daemon.session() as c:
        c.expect("MAIL FROM:<%s>" % SENDER, "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        c.send(sent + b".\r\n")
        assert_reply(c.reply(), "250", "end of data")
    assert only_message(daemon, "alice").body == (
        b"Subject: dots\n\n.leading dot\n..two dots\n.\nx not stuffed by the client\nend\n")


def test_8bit_body(daemon):
    body = b"caf\xc3\xa9 \xff\xfe\x80 \xe2\x82\xac\r\n\x1b[0m\x7f\r\n"
    with daemon.session() as c:
        c.expect("MAIL FROM:<%s> BODY=8BITMIME" % SENDER, "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        c.send(message("8bit", body) + b".\r\n")
        assert_reply(c.reply(), "250", "end of data")
    assert only_message(daemon, "alice").body == lf(message("8bit", body))


def test_line_ends_become_lf_and_sizes_match(daemon):
    lines = [b"line %d %s" % (i, b"x" * (i % 50)) for i in range(500)]
    lines.append(b"L" * 998)                     # the longest line RFC 5321 allows
    lines.append(b"M" * 20000)                   # longer: stored intact (RFC 5321 4.5.3.1)
    lines.append(b"")
    msg = message("sizes", CRLF.join(lines) + CRLF)
    assert smtp_send(daemon.port, ["alice@lan"], msg) == (250, "")
    m = only_message(daemon, "alice")          # checks S=, W=, no CR
    assert m.body == lf(msg)


def test_mail_size_parameter_under_limit(daemon):
    with daemon.session() as c:
        c.expect("MAIL FROM:<%s> SIZE=1000" % SENDER, "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        c.send(message("size") + b".\r\n")
        assert_reply(c.reply(), "250", "end of data")
    only_message(daemon, "alice")


def test_message_over_max_size_refused_after_the_dot(daemon):
    big = message("big", (b"y" * 78 + CRLF) * 15000)    # 1.2 MB > 1M
    with daemon.session() as c:
        c.expect("MAIL FROM:<%s>" % SENDER, "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        c.send(big + b".\r\n")
        r = c.reply(timeout=20)
        assert_reply(r, "552 5.3.4", "1.2 MB message, max_message_size 1M")
        assert daemon.maildir("alice").messages() == []
        daemon.maildir("alice").assert_clean()
        # the session goes on
        r = send_transaction(c, ["alice@lan"], message("after big"))
        assert_reply(r, "250", "next message")
    assert only_message(daemon, "alice").body == lf(message("after big"))


# RFC 1870 section 3: the size is the octets sent after the 354, CRLF line
# ends included, without the stuffing dots or the final dot line.  Both
# SIZE= and the DATA count measure that, against max_message_size (1M here).
LIMIT = 1048576


def dotted_message(size):
    """A message of exactly size octets (CRLF line ends, before stuffing),
    every other line starting with a dot: stuffed, it is longer on the wire."""
    head = message("dots", b"")
    lines = []
    n = len(head)
    i = 0
    while n < size:
        left = size - n
        line = (b"." if i % 2 == 0 else b"x") + b"d" * 76 + CRLF
        if left < len(line) + 2 + 3:
            line = b"." * (left - 2) + CRLF if left >= 3 else b"z" * (left - 2) + CRLF
        lines.append(line)
        n += len(line)
        i += 1
    data = head + b"".join(lines)
    assert len(data) == size, (len(data), size)
    return data


@pytest.mark.parametrize("extra,want", [(0, 250), (1, 552)], ids=["at-limit", "one-over"])
def test_size_counts_unstuffed_octets_smtplib(daemon, extra, want):
    """smtplib declares SIZE=len(message) and stuffs the dots itself."""
    data = dotted_message(LIMIT + extra)
    assert len(stuff(data)) > LIMIT + 5000, "the stuffed message is not longer"
    code, text = smtp_send(daemon.port, ["alice@lan"], data, timeout=30)
    assert code == want, (code, text)
    if want == 250:
        assert only_message(daemon, "alice").body == lf(data)
    else:
        assert text.startswith("5.3.4"), text
        assert daemon.maildir("alice").messages() == []


@pytest.mark.parametrize("extra,want", [(0, "250 2.0.0"), (1, "552 5.3.4")],
                         ids=["at-limit", "one-over"])
def test_size_counts_unstuffed_octets_in_data(daemon, extra, want):
    """Without SIZE=, the count after the dot decides, on the same measure."""
    data = dotted_message(LIMIT + extra)
    with daemon.session() as c:
        r = send_transaction(c, ["alice@lan"], data)
        assert_reply(r, want, "a message of %d octets with stuffed lines" % len(data))
        r = send_transaction(c, ["alice@lan"], message("after"))
        assert_reply(r, "250", "the session goes on")
    msgs = daemon.maildir("alice").messages()
    bodies = sorted(m.body for m in msgs)
    want_bodies = [lf(message("after"))] + ([lf(data)] if extra == 0 else [])
    assert bodies == sorted(want_bodies)
    daemon.maildir("alice").assert_clean()


@pytest.mark.parametrize("param,want", [
    ("SIZE=%d" % LIMIT, "250"),
    ("SIZE=%d" % (LIMIT + 1), "552 5.3.4"),
    ("SIZE=0", "250"),
    ("SIZE=000000000000000000000000001", "250"),
    ("SIZE=18446744073709551615", "552 5.3.4"),          # 2^64 - 1
    ("SIZE=18446744073709551616", "552 5.3.4"),          # 2^64: too large to hold
    ("SIZE=99999999999999999999999", "552 5.3.4"),
    ("SIZE=" + "9" * 200, "552 5.3.4"),
    ("SIZE=12a", "501 5.5.4"),
    ("SIZE=-1", "501 5.5.4"),
    ("SIZE=+1", "501 5.5.4"),
    ("SIZE=", "555 5.5.4"),
    ("SIZE", "555 5.5.4"),
])
def test_size_parameter_values(daemon, param, want):
    with daemon.session() as c:
        c.expect("MAIL FROM:<%s> %s" % (SENDER, param), want)
        assert c.quiet(0.2), "more than one reply to %s" % param[:40]
        c.expect("RSET", "250")


# ---------------------------------------------------------------- pipelining


def test_pipelining_command_group(daemon):
    with daemon.session() as c:
        c.send(b"MAIL FROM:<sender@example.org>\r\n"
               b"RCPT TO:<alice@lan>\r\n"
               b"RCPT TO:<nobody@lan>\r\n"
               b"RCPT TO:<bob@lan>\r\n"
               b"DATA\r\n")
        expect_replies(c, ["250", "250", "550 5.1.1", "250", "354"])
        c.send(message("pipelined") + b".\r\nNOOP\r\nQUIT\r\n")
        expect_replies(c, ["250 2.0.0", "250", "221"], "end of data, NOOP, QUIT in one write")
        assert c.closed()
    assert only_message(daemon, "alice").body == lf(message("pipelined"))
    assert only_message(daemon, "bob").body == lf(message("pipelined"))


def test_pipelining_two_transactions_in_one_write(daemon):
    one, two = message("one"), message("two")
    with daemon.session() as c:
        c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<alice@lan>\r\nDATA\r\n" + one + b".\r\n"
               b"MAIL FROM:<b@example.org>\r\nRCPT TO:<alice@lan>\r\nDATA\r\n" + two + b".\r\n"
               b"QUIT\r\n")
        expect_replies(c, ["250", "250", "354", "250", "250", "250", "354", "250", "221"],
                       "two transactions and QUIT in one write")
    bodies = sorted((m.return_path, m.body) for m in daemon.maildir("alice").messages())
    assert bodies == [(b"<a@example.org>", lf(one)), (b"<b@example.org>", lf(two))]


def test_end_of_data_split_across_reads(daemon):
    """The DATA reader keeps its CR/LF/dot state across reads."""
    with daemon.session() as c:
        c.expect("MAIL FROM:<%s>" % SENDER, "250")
        c.expect("RCPT TO:<alice@lan>", "250")
        c.expect("DATA", "354")
        for piece in [b"Subject: split\r", b"\n\r", b"\n", b"..dot\r", b"\nlast\r",
                      b"\n", b".", b"\r", b"\n"]:
            c.send(piece)
            time.sleep(0.05)
        assert_reply(c.reply(), "250", "end of data sent in pieces")
    assert only_message(daemon, "alice").body == b"Subject: split\n\n.dot\nlast\n"


def test_concurrent_sessions_all_delivered(daemon):
    import threading
    results = {}

    def client(k):
        for i in range(8):
            n = k * 100 + i
            rcpts = ["alice@lan", "bob@lan"] if n % 2 else ["alice@lan"]
            results[n] = smtp_send(daemon.port, rcpts, message("m%d" % n, b"n=%d\r\n" % n))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 80 and all(v == (250, "") for v in results.values()), results
    alice = daemon.maildir("alice").messages()
    bob = daemon.maildir("bob").messages()
    assert sorted(m.body for m in alice) == sorted(
        lf(message("m%d" % n, b"n=%d\r\n" % n)) for n in results)
    assert len(bob) == 40
    assert all(m.st.st_nlink == 2 for m in bob)
    daemon.maildir("alice").assert_clean()
    daemon.maildir("bob").assert_clean()
