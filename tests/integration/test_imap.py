"""IMAP (RFC 3501 and the extensions picomail offers) against the real daemon:
Python's imaplib and a raw connection that checks the bytes on the wire.  Mail
goes in over SMTP; each test checks the IMAP responses *and* the Maildir files
(UIDs and flags in the names, picomail-uids, folders as Maildir++)."""

import os
import time

import pytest

from imaptest import (Imap, by_uid, deliver, files, flags_of, folder_dir, imap_daemon,
                      imaplib_session, uid_of, uids_file, wait_event, wire)
from picotest import TEST_BIN, free_port, lf, numbered, seq_of
from pop3test import PASSWORD, Pop, auth_plain

CAPS = ("IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UIDPLUS MOVE UNSELECT "
        "SPECIAL-USE").split()
STANDARD = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk",
            "Archive": "\\Archive"}


@pytest.fixture
def d(make_daemon):
    """A started daemon with an IMAP listener and plaintext_auth yes."""
    return imap_daemon(make_daemon)


def imap(d, **kw):
    return Imap(d.imap_port, **kw)


def caps_of(line):
    return line.split("[CAPABILITY ", 1)[1].split("]", 1)[0].split()


# ---------------------------------------------------------------- greeting, login


def test_greeting_capability_and_login(d):
    with imap(d) as c:
        assert c.greeting.startswith("* OK [CAPABILITY IMAP4rev1 "), c.greeting
        caps = caps_of(c.greeting)
        assert set(CAPS) <= set(caps) and "AUTH=PLAIN" in caps, caps
        assert "STARTTLS" not in caps and "LOGINDISABLED" not in caps, caps
        u = c.ok("CAPABILITY")
        assert u == [b"* CAPABILITY " + " ".join(caps).encode()], u
        c.no("LOGIN alice wrong", "AUTHENTICATIONFAILED")
        r = c.login()
        assert "[CAPABILITY " in r[-1].decode() if r else True
        u, r = c.cmd("CAPABILITY")
        after = u[0].decode().split()[2:]
        assert "AUTH=PLAIN" not in after and set(CAPS) <= set(after), after
        c.bad("LOGIN alice secret")             # not in this state
        u = c.ok("LOGOUT")
        assert u == [b"* BYE Logging out"], u
        assert c.closed(5)
    ev = d.events("login", proto="imap", user="alice")
    assert len(ev) == 1, ev
    assert d.events("refused", reason="auth", proto="imap"), "failed login not logged"
    [end] = d.events("disconnect", proto="imap", user="alice")
    assert end["end"] == "logout", end


def test_plaintext_auth_no_says_logindisabled(make_daemon):
    d = imap_daemon(make_daemon, plaintext=False)
    with imap(d) as c:
        caps = caps_of(c.greeting)
        assert "LOGINDISABLED" in caps and "AUTH=PLAIN" not in caps, caps
        c.no('LOGIN alice "%s"' % PASSWORD, "PRIVACYREQUIRED")
        c.no("AUTHENTICATE PLAIN %s" % auth_plain("alice", PASSWORD), "PRIVACYREQUIRED")
        c.ok("NOOP")
        c.bad("SELECT INBOX")


def test_authenticate_plain_initial_response_continuation_and_cancel(d):
    with imap(d) as c:
        c.ok("AUTHENTICATE PLAIN %s" % auth_plain("alice", PASSWORD))
        c.ok("SELECT INBOX")
    with imap(d) as c:
        t = c.tag()
        c.send("%s AUTHENTICATE PLAIN\r\n" % t)
        assert c.response() == b"+ "
        c.send(auth_plain("bob", PASSWORD) + "\r\n")
        u, r = c.until(t)
        assert r.startswith("OK"), r
    with imap(d) as c:
        t = c.tag()
        c.send("%s AUTHENTICATE PLAIN\r\n" % t)
        assert c.response() == b"+ "
        c.send("*\r\n")
        u, r = c.until(t)
        assert r.startswith("BAD"), r
        c.no("AUTHENTICATE CRAM-MD5")
        c.bad("AUTHENTICATE PLAIN !!!notbase64")
        c.login()


def test_login_with_literals_and_quoted_strings(d):
    with imap(d) as c:
        t = c.tag()
        c.send("%s LOGIN {5}\r\n" % t)
        assert c.response().startswith(b"+ ")
        c.send('alice "%s"\r\n' % PASSWORD)
        u, r = c.until(t)
        assert r.startswith("OK"), r
    with imap(d) as c:
        # LITERAL+: no continuation asked for
        u, r = c.cmd("LOGIN {5+}\r\nalice {%d+}\r\n%s" % (len(PASSWORD), PASSWORD))
        assert r.startswith("OK"), (u, r)


# ---------------------------------------------------------------- folders


def test_first_login_makes_the_standard_folders(d):
    with imap(d) as c:
        c.login()
        lines = c.ok('LIST "" "*"')
        got = {}
        for l in lines:
            m = l.decode()
            attrs, name = m.split(") ", 1)[0].split("(", 1)[1], m.rsplit(" ", 1)[1].strip('"')
            got[name] = attrs
        assert got["INBOX"] == "", got
        for name, use in STANDARD.items():
            assert got.get(name) == use, (name, got)
        assert set(got) == {"INBOX"} | set(STANDARD), got
        lsub = c.ok('LSUB "" "*"')
        assert sorted(l.decode().rsplit(" ", 1)[1].strip('"') for l in lsub) == sorted(STANDARD)
        assert c.ok('LIST "" ""') == [b'* LIST (\\Noselect) "." ""']
        assert c.ok('LIST (SPECIAL-USE) "" "*"') and all(
            b"(\\" in l for l in c.ok('LIST (SPECIAL-USE) "" "*"'))
        assert c.ok("NAMESPACE") == [b'* NAMESPACE (("" ".")) NIL NIL']
    for name in STANDARD:
        p = folder_dir(d, folder=name)
        for sub in ("cur", "new", "tmp"):
            assert os.path.isdir(os.path.join(p, sub)), (p, sub)
        assert os.path.exists(os.path.join(p, "maildirfolder"))
        uids_file(d, folder=name)
    # deleting one is remembered: the next login does not make it again
    with imap(d) as c:
        c.login()
        c.ok("DELETE Junk")
    with imap(d) as c:
        c.login()
        assert not any(b'"Junk"' in l for l in c.ok('LIST "" "*"'))


def test_create_delete_rename_subscribe(d):
    with imap(d) as c:
        c.login()
        c.ok("CREATE Projects.2024.Q1")         # the parents too
        names = {l.decode().rsplit(" ", 1)[1].strip('"') for l in c.ok('LIST "" "Projects*"')}
        assert names == {"Projects", "Projects.2024", "Projects.2024.Q1"}, names
        assert {l.decode().rsplit(" ", 1)[1].strip('"') for l in c.ok('LIST "" "Projects.%"')} == \
            {"Projects.2024"}
        assert {l.decode().rsplit(" ", 1)[1].strip('"') for l in c.ok('LIST "Projects." "%"')} == \
            {"Projects.2024"}
        c.no("CREATE Projects", "ALREADYEXISTS")
        c.no("CREATE INBOX", "ALREADYEXISTS")
        c.no("CREATE inbox", "ALREADYEXISTS")
        for bad in ('"a/b"', '"..x"', '".hidden"', '"a..b"', '"x*"', '"a%"'):
            c.no("CREATE %s" % bad, "CANNOT")
        c.no("DELETE Projects", "INUSE")        # has folders inside
        c.ok("RENAME Projects Work")
        names = {l.decode().rsplit(" ", 1)[1].strip('"') for l in c.ok('LIST "" "*"')}
        assert {"Work", "Work.2024", "Work.2024.Q1"} <= names and "Projects" not in names, names
        c.no("RENAME Nope Other", "NONEXISTENT")
        c.no("RENAME Work Sent", "ALREADYEXISTS")
        c.no("RENAME INBOX Old", "CANNOT")
        c.ok("DELETE Work.2024.Q1")
        c.ok("DELETE Work.2024")
        c.ok("DELETE Work")
        c.no("DELETE Work", "NONEXISTENT")
        c.no("DELETE INBOX", "CANNOT")
        c.ok("SUBSCRIBE Archive")
        c.ok("UNSUBSCRIBE Trash")
        c.ok("SUBSCRIBE INBOX")
        lsub = sorted(l.decode().rsplit(" ", 1)[1].strip('"') for l in c.ok('LSUB "" "*"'))
        assert lsub == sorted({"INBOX"} | set(STANDARD) - {"Trash"}), lsub
    root = os.path.join(d.mail_root, "alice")
    assert not any(n.startswith(".Work") or n.startswith(".Projects") or n.startswith("..")
                   for n in os.listdir(root)), os.listdir(root)


# ---------------------------------------------------------------- SELECT, FETCH


def test_select_examine_and_uids_persist_across_restarts(d):
    for i in (1, 2, 3):
        deliver(d, "alice", numbered(i, 500))
    with imap(d) as c:
        c.login()
        u = c.ok("SELECT INBOX")
        text = b"\n".join(u).decode()
        assert "* 3 EXISTS" in text and "* 3 RECENT" in text, text
        assert "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)" in text, text
        assert "[PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)]" in text
        assert "* OK [UNSEEN 1]" in text and "[UIDNEXT 4]" in text, text
        validity = int(text.split("[UIDVALIDITY ")[1].split("]")[0])
        got = c.fetch("FETCH 1:* (UID FLAGS)")
        assert [int(got[i][b"UID"]) for i in (1, 2, 3)] == [1, 2, 3], got
        assert got[1][b"FLAGS"] == b"(\\Recent)", got
    # new/ moved into cur/ with the UIDs in the names, next in the file
    assert files(d, sub="new") == []
    assert sorted(uid_of(n) for n in files(d)) == [1, 2, 3]
    assert uids_file(d) == (validity, 4)
    d.stop()
    deliver_after = numbered(4)
    d.start()
    deliver(d, "alice", deliver_after)
    with imap(d) as c:
        c.login()
        u = c.ok("EXAMINE INBOX")
        text = b"\n".join(u).decode()
        assert "[UIDVALIDITY %d]" % validity in text and "* 4 EXISTS" in text, text
        assert "[PERMANENTFLAGS ()]" in text and "* 1 RECENT" in text, text
        got = c.fetch("UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (X-Seq)])")
        assert {int(v[b"UID"]): seq_of(v[b"BODY[HEADER.FIELDS (X-Seq)]"].replace(b"\r\n", b"\n"))
                for v in got.values()} == {1: 1, 2: 2, 3: 3, 4: 4}, got
        c.no("STORE 1 +FLAGS (\\Seen)", "READ-ONLY")
        c.no("EXPUNGE", "READ-ONLY")


def test_folder_at_imap_max_messages_and_past_it(make_daemon):
    """As many new messages as imap_max_messages get their UIDs in one SELECT
    (the index has room for every renamed name); one more is NO [LIMIT], and
    nothing is renamed or lost by the refusal."""
    d = imap_daemon(make_daemon, imap_max_messages=16)
    for i in range(1, 17):
        deliver(d, "alice", numbered(i))
    with imap(d) as c:
        c.login()
        text = b"\n".join(c.ok("SELECT INBOX")).decode()
        assert "* 16 EXISTS" in text and "[UIDNEXT 17]" in text, text
        got = c.fetch("FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (X-Seq)])")
        assert {int(v[b"UID"]): seq_of(v[b"BODY[HEADER.FIELDS (X-Seq)]"].replace(b"\r\n", b"\n"))
                for v in got.values()} == {i: i for i in range(1, 17)}, got
    assert sorted(uid_of(n) for n in files(d)) == list(range(1, 17))
    deliver(d, "alice", numbered(17))
    before = files(d), files(d, sub="new")
    with imap(d) as c:
        c.login()
        c.no("SELECT INBOX", "LIMIT")
        c.no("EXAMINE INBOX", "LIMIT")
        c.ok("SELECT Sent")
    assert (files(d), files(d, sub="new")) == before
    assert len(before[1]) == 1


def test_fetch_items_byte_for_byte(d):
    deliver(d, "alice", numbered(1, 3000))
    deliver(d, "alice", b"Subject: dots\r\n\r\n.leading\r\n..two\r\n.\r\nend\r\n")
    with imap(d) as c:
        c.login()
        c.ok("SELECT INBOX")
        stored = by_uid(d)
        got = c.fetch("FETCH 1:2 (UID RFC822.SIZE INTERNALDATE BODY.PEEK[] BODY.PEEK[HEADER] "
                      "BODY.PEEK[TEXT] BODY.PEEK[]<10.20>)")
        for seq in (1, 2):
            v = got[seq]
            name, data = stored[int(v[b"UID"])]
            w = wire(data)
            assert v[b"BODY[]"] == w, "BODY[] differs from the file with CRLF"
            assert int(v[b"RFC822.SIZE"]) == len(w), (v[b"RFC822.SIZE"], len(w))
            head, _, body = w.partition(b"\r\n\r\n")
            assert v[b"BODY[HEADER]"] == head + b"\r\n\r\n"
            assert v[b"BODY[TEXT]"] == body
            assert v[b"BODY[]<10>"] == w[10:30]
            t = time.strftime("%d-%b-%Y %H:%M:%S +0000",
                              time.gmtime(os.stat(os.path.join(folder_dir(d), "cur", name)).st_mtime))
            assert v[b"INTERNALDATE"].lstrip(b" 0") == t.lstrip("0").encode(), (v[b"INTERNALDATE"], t)
        # PEEK set nothing; BODY[] sets \Seen and says so
        assert all(flags_of(n) == [] for n in files(d))
        got = c.fetch("FETCH 2 BODY[]")
        assert got[2][b"FLAGS"] == b"(\\Seen \\Recent)", got
        assert [flags_of(n) for n in files(d) if uid_of(n) == 2] == [["\\Seen"]]
        got = c.fetch("FETCH 1 (RFC822.HEADER RFC822.TEXT)")
        assert got[1][b"RFC822.HEADER"] + got[1][b"RFC822.TEXT"] == wire(stored[1][1])
        # partial past the end, and the <0.0>-like edges
        got = c.fetch("FETCH 1 BODY.PEEK[]<99999999.10>")
        assert got[1][b"BODY[]<99999999>"] == b""
        c.bad("FETCH 1 BODY[]<0.0>")
        c.bad("FETCH 3 FLAGS")                   # no such message
        c.bad("FETCH 1 (FLAGS")
        c.bad("FETCH 1 NOSUCHITEM")
        c.ok("UID FETCH 99 FLAGS")               # a UID naming nothing


def test_store_flags_are_durable_and_expunge_removes(d):
    for i in (1, 2, 3, 4):
        deliver(d, "alice", numbered(i))
    with imap(d) as c:
        c.login()
        c.ok("SELECT INBOX")
        u = c.ok("STORE 1 +FLAGS (\\Seen \\Flagged)")
        assert u == [b"* 1 FETCH (FLAGS (\\Seen \\Flagged \\Recent))"], u
        assert c.ok("STORE 2 +FLAGS.SILENT (\\Answered $Forwarded)") == []
        u = c.ok("UID STORE 3 FLAGS (\\Deleted \\Draft)")
        assert u == [b"* 3 FETCH (FLAGS (\\Deleted \\Draft \\Recent) UID 3)"], u
        c.ok("STORE 1 -FLAGS (\\Flagged)")
        c.bad("STORE 1 +FLAGS (\\Recent)")
        c.bad("STORE 1 +FLAGS (\\Bogus)")
        c.bad("STORE 1 REPLACE (\\Seen)")
        flags = {uid_of(n): flags_of(n) for n in files(d)}
        assert flags == {1: ["\\Seen"], 2: ["\\Answered"], 3: ["\\Deleted", "\\Draft"], 4: []}, flags
        c.ok("STORE 4 +FLAGS (\\Deleted)")
        u = c.ok("UID EXPUNGE 3")              # only UID 3
        assert u[0] == b"* 3 EXPUNGE" and u[1:] in ([], [b"* 3 RECENT"]), u
        assert sorted(uid_of(n) for n in files(d)) == [1, 2, 4]
        u = c.ok("EXPUNGE")
        assert u[0] == b"* 3 EXPUNGE" and u[1:] in ([], [b"* 2 RECENT"]), u
        assert sorted(uid_of(n) for n in files(d)) == [1, 2]
        got = c.fetch("FETCH 1:* (UID FLAGS)")
        assert {int(v[b"UID"]) for v in got.values()} == {1, 2}
        c.ok("STORE 2 +FLAGS (\\Deleted)")
        c.ok("CLOSE")                            # expunges, without untagged EXPUNGE
    assert sorted(uid_of(n) for n in files(d)) == [1]
    assert wait_event(d, "disconnect", proto="imap")[-1]["expunged"] == "3"


def test_pop3_uidl_unchanged_after_imap_names_the_files(make_daemon):
    port = free_port()
    d = imap_daemon(make_daemon, extra=["listen pop3 127.0.0.1:%d" % port])
    d.pop3_port = port
    for i in (1, 2, 3):
        deliver(d, "alice", numbered(i))
    with Pop(d.pop3_port) as p:
        p.login()
        before = p.uidl()
        p.quit()
    with imap(d) as c:
        c.login()
        c.ok("SELECT INBOX")
        c.ok("STORE 1:3 +FLAGS (\\Seen)")
    assert all(uid_of(n) for n in files(d))
    with Pop(d.pop3_port) as p:
        p.login()
        assert p.uidl() == before
        assert seq_of(lf(p.retr(2))) == 2
        p.ok("DELE 1")
        p.quit()
    assert sorted(uid_of(n) for n in files(d)) == [2, 3]


# ---------------------------------------------------------------- errors


def test_bad_commands_and_states(d):
    with imap(d) as c:
        for line in ("FOO", "SELECT INBOX", "FETCH 1 FLAGS", "UID FETCH 1 FLAGS", "CREATE x",
                     "LOGIN", "LOGIN a", "UID BOGUS 1"):
            c.bad(line)
        c.send(b"\r\n")
        assert c.response().startswith(b"* BAD"), "an empty line"
        c.send(b"+tag NOOP\r\n")
        assert c.response().startswith(b"* BAD")
        c.login()
        for line in ("FETCH 1 FLAGS", "EXPUNGE", "CLOSE", "STORE 1 FLAGS ()", "SELECT",
                     "STATUS INBOX", "STATUS INBOX (BOGUS)", "LIST", "APPEND INBOX"):
            c.bad(line)
        c.no("SELECT Nope", "NONEXISTENT")
        c.ok("NOOP")
        c.ok("SELECT INBOX")
        c.ok("UNSELECT")
        c.bad("UNSELECT")


def test_status(d):
    for i in (1, 2):
        deliver(d, "alice", numbered(i))
    with imap(d) as c:
        c.login()
        u = c.ok("STATUS INBOX (MESSAGES RECENT UNSEEN UIDNEXT UIDVALIDITY)")
        assert len(u) == 1 and u[0].startswith(b'* STATUS "INBOX" (MESSAGES 2 RECENT 2 UNSEEN 2 '
                                              b'UIDNEXT 1 UIDVALIDITY '), u
        c.ok("SELECT INBOX")
        c.ok("STORE 1 +FLAGS (\\Seen)")
        u = c.ok("STATUS INBOX (UNSEEN MESSAGES UIDNEXT)")
        assert u == [b'* STATUS "INBOX" (UNSEEN 1 MESSAGES 2 UIDNEXT 3)'], u
        assert c.ok("STATUS Sent (MESSAGES)") == [b'* STATUS "Sent" (MESSAGES 0)']
        c.no("STATUS Nope (MESSAGES)", "NONEXISTENT")


def test_imaplib_session(d):
    for i in (1, 2, 3):
        deliver(d, "alice", numbered(i, 200))
    m = imaplib_session(d, select="INBOX")
    typ, data = m.uid("SEARCH", None, "ALL")
    assert data == [b"1 2 3"], data
    typ, data = m.uid("FETCH", "2", "(RFC822)")
    assert seq_of(lf(data[0][1])) == 2
    assert m.uid("STORE", "2", "+FLAGS", "(\\Deleted)")[0] == "OK"
    assert m.expunge() == ("OK", [b"2"])
    assert m.close()[0] == "OK"
    assert m.logout()[0] == "BYE"
    assert sorted(uid_of(n) for n in files(d)) == [1, 3]


def test_no_malloc_in_steady_state(make_daemon):
    d = imap_daemon(make_daemon, binary=TEST_BIN)
    for i in (1, 2, 3):
        deliver(d, "alice", numbered(i, 2000))

    def session():
        with imap(d) as c:
            c.login()
            c.ok("SELECT INBOX")
            c.fetch("FETCH 1:* (UID FLAGS ENVELOPE BODYSTRUCTURE BODY.PEEK[])")
            c.ok("SEARCH TEXT message")
            c.ok("STORE 1 +FLAGS (\\Seen)")
            c.ok("STORE 1 -FLAGS (\\Seen)")
            c.ok('LIST "" "*"')
            c.ok("STATUS Sent (MESSAGES UIDNEXT)")
            c.ok("LOGOUT")

    for _ in range(3):
        session()
    before = int(d.status()["mallocs"])
    for _ in range(20):
        session()
    after = int(d.status()["mallocs"])
    assert after == before, "%d malloc/calloc/realloc calls in 20 IMAP sessions" % (after - before)
    assert d.status()["pool.imap"] == "0/8"
