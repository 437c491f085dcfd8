"""APPEND, COPY and MOVE (RFC 3501, 4315 UIDPLUS, 6851 MOVE, 7888 LITERAL+), and
several sessions of one user on one folder: each file's name, content, flags
and UID checked in the Maildir, COPYUID and APPENDUID against the files, the
refusals (no such folder, too big, over quota, NUL) with nothing left in tmp/,
and what one session sees of another's changes."""

import os
import time

import pytest

from imaptest import (Imap, by_uid, deliver, files, flags_of, folder_dir, imap_daemon, uid_of,
                      uids_file, wire)
from picotest import NAME_RE, numbered, seq_of, lf


@pytest.fixture
def d(make_daemon):
    return imap_daemon(make_daemon, max_message_size="64K")


def imap(d, **kw):
    c = Imap(d.imap_port, **kw)
    c.login()
    return c


def code(r, name):
    """The values of response code name ("APPENDUID 7 3" -> ["7", "3"])."""
    i = r.index("[%s " % name)
    return r[i + len(name) + 2:r.index("]", i)].split()


def test_append_stored_with_uid_flags_and_date(d):
    msg = b"From: me@example.org\r\nSubject: draft\r\n\r\nline one\r\nline two\r\n"
    with imap(d) as c:
        t = c.tag()
        c.send('%s APPEND Drafts (\\Draft \\Seen) "05-Mar-2024 14:30:00 +0100" {%d}\r\n' % (t, len(msg)))
        assert c.response().startswith(b"+ ")
        c.send(msg + b"\r\n")
        u, r = c.until(t)
        assert r.startswith("OK [APPENDUID "), r
        validity, uid = map(int, code(r, "APPENDUID"))
        # LITERAL+: no continuation; a message without a final CRLF, bare LF and CR
        odd = b"Subject: odd\r\n\r\nbare\nlf\rcr\r\r\nend"
        u, r = c.cmd(b"APPEND Drafts {%d+}\r\n" % len(odd) + odd)
        assert r.startswith("OK [APPENDUID "), r
        uid2 = int(code(r, "APPENDUID")[1])
        c.ok("SELECT Drafts")
        got = c.fetch("UID FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
    assert (validity, uid2 + 1) == uids_file(d, folder="Drafts") and uid2 == uid + 1
    stored = by_uid(d, folder="Drafts")
    name, data = stored[uid]
    assert data == lf(msg) and flags_of(name) == ["\\Draft", "\\Seen"], (name, data)
    m = NAME_RE.match(name.split(",U=")[0])
    assert m and int(m.group("S")) == len(data) and int(m.group("W")) == len(wire(data)), name
    assert os.stat(os.path.join(folder_dir(d, folder="Drafts"), "cur", name)).st_mtime == \
        time.mktime((2024, 3, 5, 13, 30, 0, 0, 0, 0)) - time.timezone
    assert stored[uid2][1] == b"Subject: odd\n\nbare\nlf\ncr\nend\n"
    v = {int(x[b"UID"]): x for x in got.values()}
    assert v[uid][b"BODY[]"] == msg and int(v[uid][b"RFC822.SIZE"]) == len(msg)
    assert v[uid][b"INTERNALDATE"] == b" 5-Mar-2024 13:30:00 +0000", v[uid]
    assert v[uid2][b"BODY[]"] == b"Subject: odd\r\n\r\nbare\r\nlf\r\ncr\r\nend\r\n"
    assert os.listdir(os.path.join(folder_dir(d, folder="Drafts"), "tmp")) == []


def test_append_refusals_leave_nothing(d):
    with imap(d) as c:
        # no such folder: NO before the literal (the client sends nothing more)
        c.send(b"a1 APPEND Nope {5}\r\n")
        assert c.response().startswith(b"a1 NO [TRYCREATE]")
        # too big, synchronizing: NO instead of "+"
        c.send(b"a2 APPEND INBOX {70000}\r\n")
        assert c.response().startswith(b"a2 NO [TOOBIG]")
        # too big with LITERAL+: the octets are read and dropped, then NO
        c.send(b"a3 APPEND INBOX {70000+}\r\n" + b"x" * 70000 + b"\r\n")
        assert c.response().startswith(b"a3 NO [TOOBIG]")
        c.no("APPEND INBOX {3+}\r\na\0b", "PARSE")
        c.bad("APPEND INBOX {3+}\r\nabc {3+}\r\nxyz")     # MULTIAPPEND is not offered
        c.no("APPEND INBOX {0+}\r\n", "CANNOT")
        c.bad("APPEND INBOX (\\Bogus) {1+}\r\nx")
        c.ok("NOOP")
    for sub in ("new", "cur", "tmp"):
        assert files(d, sub=sub) == [], sub


def test_append_over_quota(make_daemon):
    d = imap_daemon(make_daemon, quota="2K")
    deliver(d, "alice", numbered(1, 1500))
    with imap(d) as c:
        c.no(b"APPEND Sent {1000+}\r\n" + b"x" * 1000, "OVERQUOTA")
        c.ok(b"APPEND Sent {100+}\r\n" + b"y" * 100)
        # the quota counts every folder: now INBOX is full for SMTP too
    assert files(d, folder="Sent") and files(d, folder="Sent", sub="tmp") == []


def test_copy_and_move_with_copyuid(d):
    for i in (1, 2, 3, 4):
        deliver(d, "alice", numbered(i))
    with imap(d) as c:
        c.ok("SELECT INBOX")
        c.ok("STORE 2 +FLAGS (\\Flagged)")
        u, r = c.cmd("COPY 1:2 Archive")
        assert r.startswith("OK [COPYUID "), r
        v, src, dst = code(r, "COPYUID")
        assert src == "1:2" and dst == "1:2" and int(v) == uids_file(d, folder="Archive")[0]
        u, r = c.cmd("UID MOVE 3:4 Trash")
        assert r.startswith("OK"), r
        assert u[0].startswith(b"* OK [COPYUID ") and b" 3:4 1:2]" in u[0], u
        assert u[1:3] == [b"* 4 EXPUNGE", b"* 3 EXPUNGE"] and u[3:] in ([], [b"* 2 RECENT"]), u
        c.no("COPY 1 Nope", "TRYCREATE")
        c.bad("COPY 9 Archive")
        got = c.fetch("FETCH 1:* (UID)")
        assert sorted(int(x[b"UID"]) for x in got.values()) == [1, 2]
    inbox, archive, trash = by_uid(d), by_uid(d, folder="Archive"), by_uid(d, folder="Trash")
    assert sorted(inbox) == [1, 2] and sorted(archive) == [1, 2] and sorted(trash) == [1, 2]
    assert [seq_of(archive[k][1]) for k in (1, 2)] == [1, 2]
    assert [seq_of(trash[k][1]) for k in (1, 2)] == [3, 4]
    assert flags_of(archive[2][0]) == ["\\Flagged"]
    # a copy is a new file (its own POP3 UIDL), a move keeps the message's
    names = {n.split(",")[0] for n, _ in inbox.values()}
    assert not names & {n.split(",")[0] for n, _ in archive.values()}
    assert {n.split(",")[0] for n, _ in trash.values()} - names == \
        {n.split(",")[0] for n, _ in trash.values()}
    assert os.stat(os.path.join(folder_dir(d), "cur", inbox[1][0])).st_ino == \
        os.stat(os.path.join(folder_dir(d, folder="Archive"), "cur", archive[1][0])).st_ino


def test_two_sessions_see_each_others_changes(d):
    for i in (1, 2, 3):
        deliver(d, "alice", numbered(i))
    a, b = imap(d), imap(d)
    try:
        a.ok("SELECT INBOX")
        u = b.ok("SELECT INBOX")
        assert b"* 0 RECENT" in u, u             # a had them first
        a.ok("STORE 1 +FLAGS (\\Seen)")
        u = b.ok("NOOP")
        assert u == [b"* 1 FETCH (UID 1 FLAGS (\\Seen))"], u
        b.ok("STORE 1 +FLAGS (\\Flagged)")       # keeps a's \Seen
        assert flags_of(by_uid(d)[1][0]) == ["\\Flagged", "\\Seen"]
        a.ok("STORE 2 +FLAGS (\\Deleted)")
        a.ok("EXPUNGE")
        deliver(d, "alice", numbered(4))
        u = b.ok("NOOP")
        assert u[:1] == [b"* 2 EXPUNGE"] and b"* 3 EXISTS" in u, u
        # EXPUNGE waits while a FETCH is answered (RFC 3501 7.4.1)
        a.ok("STORE 1 +FLAGS (\\Deleted)")
        a.ok("EXPUNGE")
        got = b.fetch("FETCH 1:* (UID)")          # 1 is expunged, not yet told
        assert sorted(int(x[b"UID"]) for x in got.values()) == [1, 3, 4], got
        u, r = b.cmd("FETCH 1 BODY.PEEK[]")      # its text is gone
        assert r.startswith("NO [EXPUNGEISSUED]") and u == [], (u, r)
        u = b.ok("NOOP")
        assert u[0] == b"* 1 EXPUNGE", u
        got = b.fetch("FETCH 1:* (UID FLAGS)")
        assert sorted(int(x[b"UID"]) for x in got.values()) == [3, 4], got
    finally:
        a.close()
        b.close()


def test_uid_survives_crash_between_reservation_and_rename(d):
    """A UID reserved (the file says next past it) but never put in a name:
    the message gets a higher one later; none is given twice."""
    deliver(d, "alice", numbered(1))
    with imap(d) as c:
        c.ok("SELECT INBOX")
    validity, nxt = uids_file(d)
    d.stop()
    with open(os.path.join(folder_dir(d), "picomail-uids"), "w") as f:
        f.write("picomail-uids 1 %d %d\n" % (validity, nxt + 5))   # reserved, then a crash
    d.start()
    deliver(d, "alice", numbered(2))
    with imap(d) as c:
        u = c.ok("SELECT INBOX")
        got = c.fetch("FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (X-Seq)])")
    uids = {seq_of(lf(x[b"BODY[HEADER.FIELDS (X-Seq)]"])): int(x[b"UID"]) for x in got.values()}
    assert uids == {1: 1, 2: nxt + 5}, uids
    assert b"[UIDVALIDITY %d]" % validity in b"\n".join(u)


def test_uids_file_lost_or_foreign_copies(d):
    for i in (1, 2):
        deliver(d, "alice", numbered(i))
    with imap(d) as c:
        c.ok("SELECT INBOX")
    validity, nxt = uids_file(d)
    cur = os.path.join(folder_dir(d), "cur")
    names = files(d)
    # a copy made by hand (same U=), and the UID file gone
    with open(os.path.join(cur, names[0]), "rb") as f:
        data = f.read()
    with open(os.path.join(cur, "1.M1P1.byhand" + names[0][names[0].index(","):]), "wb") as f:
        f.write(data)
    os.unlink(os.path.join(folder_dir(d), "picomail-uids"))
    with imap(d) as c:
        u = c.ok("SELECT INBOX")
        got = c.fetch("FETCH 1:* (UID)")
    v2, n2 = uids_file(d)
    assert v2 != validity, "a lost UID file must change UIDVALIDITY"
    uids = sorted(int(x[b"UID"]) for x in got.values())
    assert len(uids) == 3 and len(set(uids)) == 3 and uids[-1] < n2, (uids, n2)
