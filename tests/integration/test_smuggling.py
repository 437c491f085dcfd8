"""SMTP smuggling: the end of DATA is only <CRLF>.<CRLF>.

Each case sends, in ONE write after the 354,

    Subject: a CRLF CRLF first <SEQ> MAIL FROM:<evil@x.org> CRLF
    RCPT TO:<bob@lan> CRLF DATA CRLF Subject: smuggled CRLF CRLF smuggled CRLF . CRLF

A server that takes SEQ for an end of data (Postfix 3.7 with Debian's
defaults does for \\n.\\n) would deliver "first" to alice and then run the
rest as a second transaction: a message to bob that alice's sender never
sent.  A correct server sees one message up to the genuine <CRLF>.<CRLF>;
it holds a bare CR, a bare LF or a NUL, so it is refused with 550 5.6.0 and
nothing is delivered.

The exception is \\r\\r\\n.\\r\\n: "\\r\\n.\\r\\n" in it IS a genuine end of data.
The message before it ("first\\r" + CRLF) holds a bare CR and is refused;
what follows is a new, legitimate, pipelined transaction from the same
client, and the message to bob is delivered as exactly that.  What must
never happen is the first part accepted AND the rest run as a second
message of the same DATA.
"""

import time

import pytest

from picotest import assert_reply, expect_replies, lf

FIRST = b"Subject: a\r\n\r\nfirst"
SECOND = (b"MAIL FROM:<evil@x.org>\r\nRCPT TO:<bob@lan>\r\nDATA\r\n"
          b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n")

# SEQ -> why no genuine end of data occurs before the final "smuggled\r\n.\r\n"
NOT_AN_END = [
    (b"\n.\n", "bare LFs around the dot"),
    (b"\r.\r", "bare CRs around the dot"),
    (b"\r.\n", "bare CR before, bare LF after"),
    (b"\n.\r", "bare LF before, bare CR after"),
    (b"\n.\r\n", "bare LF before the dot"),
    (b"\r\n.\n", "bare LF after the dot"),
    (b"\r.\r\n", "bare CR before the dot"),
    (b"\r\n.\r", "bare CR after the dot"),
    (b"\r\n\x00.\r\n", "a NUL before the dot"),
]


def open_data(c):
    c.expect("MAIL FROM:<good@example.org>", "250")
    c.expect("RCPT TO:<alice@lan>", "250")
    c.expect("DATA", "354")


def no_smuggled_message(d):
    for path in d.all_files():
        with open(path, "rb") as f:
            assert b"smuggled" not in f.read(), "smuggled text stored in %s" % path


def sync(c):
    """Nothing more comes, and the next reply answers our VRFY (a code the
    smuggled commands could not produce), so no reply was left over."""
    assert c.quiet(0.5), "extra replies after the end of data: %r" % bytes(c.buf[:300])
    c.expect("VRFY alice", "252")


@pytest.mark.parametrize("seq,why", NOT_AN_END, ids=[repr(s[0]) for s in NOT_AN_END])
def test_no_smuggling(daemon, seq, why):
    with daemon.session() as c:
        open_data(c)
        c.send(FIRST + seq + SECOND)
        r = c.reply()
        assert_reply(r, "550 5.6.0",
                     "one message up to the final CRLF.CRLF, with %s: it must be refused" % why)
        sync(c)
    assert daemon.maildir("alice").messages() == [], "alice got the first part"
    assert daemon.maildir("bob").messages() == [], "bob got the smuggled message"
    daemon.maildir("alice").assert_clean()
    no_smuggled_message(daemon)


@pytest.mark.parametrize("seq,why", NOT_AN_END, ids=[repr(s[0]) for s in NOT_AN_END])
def test_no_smuggling_byte_by_byte(daemon, seq, why):
    """The same, with each byte of SEQ in its own segment: the DATA reader's
    state must not reset at a read boundary."""
    with daemon.session() as c:
        open_data(c)
        c.send(FIRST)
        for byte in seq:
            time.sleep(0.01)
            c.send(bytes([byte]))
        time.sleep(0.01)
        c.send(SECOND)
        assert_reply(c.reply(), "550 5.6.0", "%s, sent byte by byte" % why)
        sync(c)
    assert daemon.maildir("alice").messages() == []
    assert daemon.maildir("bob").messages() == []
    no_smuggled_message(daemon)


def test_cr_cr_lf_dot_is_a_real_end_of_a_bad_message(daemon):
    with daemon.session() as c:
        open_data(c)
        c.send(FIRST + b"\r\r\n.\r\n" + SECOND)
        # 550: end of data, "first\r" holds a bare CR; then MAIL FROM:<evil@x.org>
        # (a new transaction), RCPT TO:<bob@lan>, DATA, end of the second message
        expect_replies(c, ["550 5.6.0", "250", "250", "354", "250"],
                       "bad message ended by \\r\\n.\\r\\n, then a pipelined transaction")
        sync(c)
    assert daemon.maildir("alice").messages() == [], "the message with a bare CR was kept"
    [m] = daemon.maildir("bob").messages()
    assert m.return_path == b"<evil@x.org>"
    assert m.body == b"Subject: smuggled\n\nsmuggled\n"
    daemon.maildir("alice").assert_clean()


def test_control_genuine_end_then_pipelined_transaction(daemon):
    """With SEQ = CRLF.CRLF there really are two messages: the harness sees
    two 250s, so the refusals above are not an artefact of the test."""
    with daemon.session() as c:
        open_data(c)
        c.send(FIRST + b"\r\n.\r\n" + SECOND)
        expect_replies(c, ["250", "250", "250", "354", "250"],
                       "genuine end of data, then a pipelined transaction")
        sync(c)
    [a] = daemon.maildir("alice").messages()
    assert a.body == lf(FIRST) + b"\n"
    [b] = daemon.maildir("bob").messages()
    assert b.return_path == b"<evil@x.org>"
