"""SEARCH (RFC 3501 6.4.4): every key against a folder whose messages differ in
flags, sizes, dates and text, checked against the answer worked out by hand;
UID SEARCH; CHARSET; the limits (keys, strings, nesting) answered BAD with
the session going on."""

import os
import shutil
import tempfile
import time

import pytest

from imaptest import Imap, deliver, files, folder_dir, uid_of
from picotest import Daemon, free_port


MSGS = [
    b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nCc: carol@example.com\r\n"
    b"Subject: Lunch on Friday\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nPizza?\r\n",
    b"From: Bob <bob@example.net>\r\nTo: alice@example.org\r\nBcc: secret@example.com\r\n"
    b"Subject: Re: Lunch on Friday\r\nDate: Tue, 2 Jan 2024 11:00:00 +0000\r\n"
    b"X-Priority: 1\r\n\r\nYes, PIZZA it is.\r\n" + b"filler line\r\n" * 200,
    b"From: news@example.com\r\nTo: alice@example.org\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Date: 15 Mar 2024 09:30 -0500\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    b"Gr\xc3\xbc\xc3\x9fe aus M\xc3\xbcnchen\r\n",
    b"From: carol@example.com\r\nTo: team@example.org\r\nSubject: report\r\n\r\n"
    b"quarterly numbers attached\r\n",
]


@pytest.fixture(scope="module")
def sd(password_hash):
    """One daemon for the module's searches, which change nothing (the
    flags are set here)."""
    work = tempfile.mkdtemp(prefix="pm-", dir="/tmp")
    port = free_port()
    d = Daemon(work, password_hash, extra=["listen imap 127.0.0.1:%d" % port, "plaintext_auth yes",
                               "greet_pause 0s"])
    d.imap_port = port
    d.start()
    try:
        for m in MSGS:
            deliver(d, "alice", m)
        with Imap(port) as c:
            c.login()
            c.ok("SELECT INBOX")
            c.ok("STORE 1 +FLAGS (\\Seen \\Answered)")
            c.ok("STORE 2 +FLAGS (\\Flagged \\Seen)")
            c.ok("STORE 4 +FLAGS (\\Deleted \\Draft)")
        # internal dates: the files' mtimes
        cur = os.path.join(folder_dir(d), "cur")
        for n in files(d):
            day = {1: "2024-01-01", 2: "2024-01-02", 3: "2024-03-15", 4: "2024-06-30"}[uid_of(n)]
            t = time.mktime(time.strptime(day + " 12:00:00", "%Y-%m-%d %H:%M:%S")) - time.timezone
            os.utime(os.path.join(cur, n), (t, t))
        yield d
    finally:
        d.kill()
        shutil.rmtree(work, ignore_errors=True)


def search(c, criteria, uid=False):
    u, r = c.cmd(("UID SEARCH " if uid else "SEARCH ") + criteria)
    assert r.startswith("OK"), (criteria, r)
    lines = [l for l in u if l.startswith(b"* SEARCH")]
    assert len(lines) == 1, u
    return [int(x) for x in lines[0].split()[2:]]


CASES = [
    ("ALL", [1, 2, 3, 4]),
    ("SEEN", [1, 2]), ("UNSEEN", [3, 4]), ("ANSWERED", [1]), ("UNANSWERED", [2, 3, 4]),
    ("FLAGGED", [2]), ("UNFLAGGED", [1, 3, 4]), ("DELETED", [4]), ("UNDELETED", [1, 2, 3]),
    ("DRAFT", [4]), ("UNDRAFT", [1, 2, 3]), ("KEYWORD $Junk", []), ("UNKEYWORD $Junk", [1, 2, 3, 4]),
    ("1:2", [1, 2]), ("2,4", [2, 4]), ("*", [4]), ("3:*", [3, 4]), ("UID 2:3", [2, 3]),
    ("LARGER 1000", [2]), ("SMALLER 1000", [1, 3, 4]),
    ("BEFORE 2-Jan-2024", [1]), ("ON 2-Jan-2024", [2]), ("SINCE 15-Mar-2024", [3, 4]),
    ('SINCE "1-Feb-2024"', [3, 4]),
    ("SENTBEFORE 2-Jan-2024", [1]), ("SENTON 15-Mar-2024", [3]), ("SENTSINCE 2-Jan-2024", [2, 3]),
    ("FROM alice", [1]), ("FROM BOB", [2]), ("TO alice@example.org", [2, 3]), ("CC carol", [1]),
    ("BCC secret", [2]), ('SUBJECT "lunch on"', [1, 2]), ("SUBJECT report", [4]),
    ("HEADER X-Priority 1", [2]), ('HEADER X-Priority ""', [2]), ("HEADER X-Missing x", []),
    ("BODY pizza", [1, 2]), ("BODY filler", [2]), ("BODY Lunch", []), ("TEXT lunch", [1, 2]),
    ("TEXT quarterly", [4]), ("TEXT example.com", [1, 2, 3, 4]),
    ("NOT SEEN", [3, 4]), ("OR FLAGGED DELETED", [2, 4]), ("(SEEN FROM bob)", [2]),
    ("SEEN NOT FLAGGED", [1]), ("OR (FROM alice SEEN) (FROM carol)", [1, 4]),
    ("NOT (OR 1 2)", [3, 4]), ("NOT NOT SEEN", [1, 2]),
    # \Recent was the fixture's session's, which gave the UIDs
    ("RECENT", []), ("NEW", []), ("OLD", [1, 2, 3, 4]),
]


@pytest.mark.parametrize("criteria,want", CASES, ids=[c for c, _ in CASES])
def test_search_key(sd, criteria, want):
    with Imap(sd.imap_port) as c:
        c.login()
        c.ok("EXAMINE INBOX")
        assert search(c, criteria) == want, criteria
        assert search(c, criteria, uid=True) == want    # UIDs 1..4 here


def test_charset_and_8bit_strings(sd):
    with Imap(sd.imap_port) as c:
        c.login()
        c.ok("EXAMINE INBOX")
        word = "M\u00fcnchen".encode()
        u, r = c.cmd(b"SEARCH CHARSET UTF-8 BODY {%d+}\r\n" % len(word) + word)
        assert r.startswith("OK") and u == [b"* SEARCH 3"], (u, r)
        assert search(c, "CHARSET US-ASCII SUBJECT lunch") == [1, 2]
        c.no("SEARCH CHARSET KOI8-R TEXT x", "BADCHARSET (US-ASCII UTF-8)")


def test_limits_and_errors(sd):
    with Imap(sd.imap_port) as c:
        c.login()
        c.ok("EXAMINE INBOX")
        c.bad("SEARCH " + "NOT " * 40 + "ALL")            # deeper than 32
        c.bad("SEARCH " + " ".join(["SEEN"] * 70))         # more than 64 keys
        c.bad("SEARCH " + " ".join(["BODY x%d" % i for i in range(17)]))
        c.bad('SEARCH BODY "%s"' % ("x" * 256))            # a string over 255
        for bad in ("SEARCH", "SEARCH BOGUS", "SEARCH (SEEN", "SEARCH BEFORE 32-Jan-2024",
                    "SEARCH LARGER x", "SEARCH OR SEEN", "SEARCH UID x"):
            c.bad(bad)
        # a thousand ranges: answered; past the 16 KiB command: BAD, and on
        ranges = ",".join("%d:%d" % (k, k + 1) for k in range(1, 2000, 2))
        assert search(c, "UID " + ranges) == [1, 2, 3, 4]
        assert search(c, ",".join(["1:4"] * 1000) + " SEEN") == [1, 2]
        c.bad("SEARCH 5")                                   # no such message
        u, r = c.cmd("SEARCH UID " + ",".join("%d" % k for k in range(1, 9000, 2)))
        assert r == "BAD Command line too long", r
        c.ok("NOOP")
