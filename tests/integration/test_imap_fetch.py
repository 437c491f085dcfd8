"""FETCH against a reference: the messages of imapcorpus.py, as the same
Maildir files, read by picomail and by Dovecot's imap (dovecot.py), and every
structural item compared value for value: ENVELOPE, BODYSTRUCTURE, BODY, the
sections (HEADER, TEXT, MIME, HEADER.FIELDS[.NOT], part numbers, partial),
RFC822.SIZE.  Then picomail's own rules where the two differ by design (a
bare CR ends a line and a last line gets its CRLF, as POP3 sends them), the
MIME limits, and big messages fetched whole and in pieces."""

import os
import re
import shutil
import tempfile

import pytest

import dovecot
from imapcorpus import CORPUS, deep
from imaptest import Imap, fetch_values, imap_daemon, wire
from picotest import TEST_BIN

# Where picomail differs from Dovecot on purpose (msgwire.h): those files
# are compared here only for what does not depend on it.
BY_DESIGN = {"bare_cr", "no_final_newline", "header_only"}
# Dovecot reads a base64 message/rfc822 part as a message anyway.
DOVECOT_QUIRK = {"encoded_rfc822"}

ITEMS = [
    "ENVELOPE", "BODYSTRUCTURE", "BODY", "RFC822.SIZE",
    "BODY.PEEK[] BODY.PEEK[HEADER] BODY.PEEK[TEXT]",
    "BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[2] BODY.PEEK[2.MIME]",
    "BODY.PEEK[2.HEADER] BODY.PEEK[2.TEXT] BODY.PEEK[2.1] BODY.PEEK[1.2.MIME] BODY.PEEK[1.1]",
    "BODY.PEEK[HEADER.FIELDS (From Subject)] BODY.PEEK[HEADER.FIELDS.NOT (From Subject X-None)]",
    "BODY.PEEK[]<5.20> BODY.PEEK[TEXT]<2.3> BODY.PEEK[1]<0.4>",
]


def put(d, messages, user="alice"):
    """The files in user's new/, named as a delivery agent would."""
    new = os.path.join(d.mail_root, user, "new")
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(d.mail_root, user, sub), exist_ok=True)
    for i, data in enumerate(messages):
        with open(os.path.join(new, "%d.M%dP1.oracle" % (1700000000 + i, i)), "wb") as f:
            f.write(data)


@pytest.fixture(scope="module")
def reference():
    if not dovecot.available():
        pytest.fail("Dovecot's imap is missing: bash board/common/deps.sh test (dovecot-imapd)",
                    pytrace=False)
    # Dovecot runs as nobody: a directory nobody can reach.
    work = tempfile.mkdtemp(prefix="pm-dovecot-", dir="/tmp")
    os.chmod(work, 0o755)
    msgs = [m for _, m in CORPUS]
    cmds = ["f%d_%d FETCH %d (%s)" % (k, i + 1, i + 1, items)
            for k, items in enumerate(ITEMS) for i in range(len(msgs))]
    try:
        out = dovecot.run(work, msgs, cmds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    got = {}
    for part in re.split(rb"\r\n(?=\* |f\d+_\d+ |z |s )", out):
        m = re.match(rb"\* (\d+) FETCH ", part)
        if m:
            got.setdefault(int(m.group(1)), {}).update(fetch_values(part))
    assert len(got) == len(msgs), "Dovecot answered for %d messages: %r" % (len(got), out[-600:])
    return got


def test_fetch_matches_dovecot(make_daemon, reference):
    d = imap_daemon(make_daemon, start=False)
    put(d, [m for _, m in CORPUS])
    d.start()
    mismatches = []
    with Imap(d.imap_port) as c:
        c.login()
        c.ok("SELECT INBOX")
        for i, (name, _) in enumerate(CORPUS, 1):
            ours = {}
            for items in ITEMS:
                u, r = c.cmd("FETCH %d (%s)" % (i, items))
                assert r.startswith("OK"), (name, items, r)
                for resp in u:
                    if b" FETCH " in resp:
                        ours.update(fetch_values(resp))
            for item, want in reference[i].items():
                if name in BY_DESIGN | DOVECOT_QUIRK and item != "ENVELOPE":
                    continue
                if ours.get(item) != want:
                    mismatches.append("%s %s:\n  dovecot  %r\n  picomail %r" % (
                        name, item.decode(), want, ours.get(item)))
    assert not mismatches, "\n".join(mismatches)


def test_line_ends_as_pop3_sends_them(make_daemon):
    """A bare CR ends a line and a last line gets its CRLF: BODY[] is what
    POP3's RETR sends (unstuffed), RFC822.SIZE its length."""
    d = imap_daemon(make_daemon, start=False)
    files = [b"Subject: cr\n\none\rtwo\r\r\nthree", b"Subject: crlf\r\n\r\nx\r\n", b""]
    put(d, files)
    d.start()
    want = [b"Subject: cr\r\n\r\none\r\ntwo\r\nthree\r\n", b"Subject: crlf\r\n\r\nx\r\n", b""]
    with Imap(d.imap_port) as c:
        c.login()
        c.ok("SELECT INBOX")
        for i, w in enumerate(want, 1):
            v = fetch_values(c.ok("FETCH %d (RFC822.SIZE BODY.PEEK[])" % i)[0])
            assert v[b"BODY[]"] == w and v[b"RFC822.SIZE"] == len(w), (i, v)


def test_mime_nesting_limit(make_daemon):
    d = imap_daemon(make_daemon, start=False)
    put(d, [deep(10), deep(20)])
    d.start()
    with Imap(d.imap_port) as c:
        c.login()
        c.ok("SELECT INBOX")
        v = fetch_values(c.ok("FETCH 1 BODYSTRUCTURE")[0])
        s = v[b"BODYSTRUCTURE"]
        for _ in range(11):
            s = s[0]
        assert s[:2] == [b"text", b"plain"], v
        u, r = c.cmd("FETCH 2 (UID BODYSTRUCTURE)")
        assert r.startswith("NO [LIMIT]") and u == [], (u, r)
        u, r = c.cmd("FETCH 1:2 (UID BODY.PEEK[1.1.1])")
        assert r.startswith("NO [LIMIT]") and len(u) == 1, (u, r)
        v = fetch_values(c.ok("FETCH 2 (BODY.PEEK[] BODY.PEEK[HEADER])")[0])
        assert v[b"BODY[]"] == wire(deep(20))
        c.ok("NOOP")


def test_big_message_whole_and_in_pieces(make_daemon):
    d = imap_daemon(make_daemon, binary=TEST_BIN, start=False)
    body = b"".join(b"%06d the quick brown fox jumps over the lazy dog\n" % k for k in range(40000))
    msg = b"From: big@example.com\nSubject: big\n\n" + body
    put(d, [msg])
    d.start()
    w = wire(msg)
    with Imap(d.imap_port, timeout=20) as c:
        c.login()
        c.ok("SELECT INBOX")
        v = fetch_values(c.ok("FETCH 1 (RFC822.SIZE BODY.PEEK[])")[0])
        assert v[b"BODY[]"] == w and v[b"RFC822.SIZE"] == len(w)
        before = int(d.status()["mallocs"])
        got, off, chunk = b"", 0, 65536
        while off < len(w):
            v = fetch_values(c.ok("FETCH 1 BODY.PEEK[]<%d.%d>" % (off, chunk))[0])
            got += v[b"BODY[]<%d>" % off]
            off += chunk
        assert got == w
        # backwards: from the start of the part each time
        v = fetch_values(c.ok("FETCH 1 BODY.PEEK[TEXT]<100.50>")[0])
        assert v[b"BODY[TEXT]<100>"] == wire(body)[100:150]
        assert int(d.status()["mallocs"]) == before
