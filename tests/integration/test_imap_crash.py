"""Crash consistency of IMAP's changes (issue 16): kill -9 at random moments of
a load of APPEND, STORE, EXPUNGE and MOVE beside SMTP deliveries,
PICOMAIL_IMAP_CRASH_TRIALS times (default 40).

The load: an SMTP client delivering numbered messages to alice; an IMAP
client APPENDing numbered messages to Sent (\\Seen); an IMAP client on
INBOX that learns each message's UID (FETCH), then flags one, or marks one
\\Deleted and EXPUNGEs, or MOVEs one to Trash.  After each kill, on the
files as the crash left them and again after the restart:

  - every message SMTP acknowledged is in INBOX or Trash exactly once,
    unless an EXPUNGE of it was sent; every acknowledged APPEND is in Sent
    once, under the UID its APPENDUID said;
  - an acknowledged flag is on the file, an acknowledged EXPUNGE's message
    is gone, an acknowledged MOVE's message is in Trash only, under the UID
    its COPYUID said;
  - no UID a client was ever told (APPENDUID, COPYUID, FETCH) names
    another message; no UID is in a folder twice, none is at or past the
    folder's picomail-uids; no file is partial, none is left in tmp/ after
    the restart.
PICOMAIL_SEED fixes the timings.
"""

import os
import random
import re
import smtplib
import threading
import time

import pytest

from faultwalk import maildir_files, tmp_files
from imaptest import Imap, imap_daemon, wait_event
from picotest import SANITIZED, ServerClosed, numbered, scaled, seq_of
from pop3test import PASSWORD
from relaytest import wait_for

TRIALS = int(os.environ.get("PICOMAIL_IMAP_CRASH_TRIALS", "15" if SANITIZED else "40"))
FOLDERS = ("INBOX", "Sent", "Trash")
TOTALS = {}


class Load:
    def __init__(self, d, rng):
        self.d = d
        self.rng = rng
        self.lock = threading.Lock()
        self.seq = 0
        self.smtp_acked = set()
        self.appended = {}              # seq -> uid (APPENDUID)
        self.told = {}                  # (folder, uid) -> seq: every UID a client heard
        self.flagged = set()            # seqs whose \Flagged got OK
        self.expunge_sent = set()       # seqs marked \Deleted and an EXPUNGE sent
        self.expunged = set()           # ... and OK
        self.move_sent = set()
        self.moved = {}                 # seq -> Trash uid (COPYUID)
        self.running = threading.Event()
        self.stopping = threading.Event()
        self.active = 0
        self.threads = []
        self.validity = {}

    def next_seq(self):
        with self.lock:
            self.seq += 1
            return self.seq

    def start(self):
        for fn in (self.smtp, self.append, self.worker):
            t = threading.Thread(target=self.loop, args=(fn, random.Random(self.rng.random())),
                                 daemon=True)
            t.start()
            self.threads.append(t)

    def loop(self, fn, rng):
        while not self.stopping.is_set():
            if not self.running.wait(0.02):
                continue
            with self.lock:
                self.active += 1
            try:
                fn(rng)
            except (OSError, smtplib.SMTPException, AssertionError, ServerClosed):
                pass
            finally:
                with self.lock:
                    self.active -= 1
            time.sleep(0.002)

    def idle(self):
        wait_for(lambda: self.active == 0, scaled(10), "the clients to notice the kill")

    def close(self):
        self.running.clear()
        self.stopping.set()
        for t in self.threads:
            t.join(10)
            assert not t.is_alive(), "a client thread hung"

    def tell(self, folder, uid, seq, validity):
        with self.lock:
            # A new UIDVALIDITY would say the UIDs told before mean nothing.
            assert self.validity.setdefault(folder, validity) == validity, \
                "%s changed UIDVALIDITY %s -> %s" % (folder, self.validity[folder], validity)
            old = self.told.setdefault((folder, uid), seq)
            assert old == seq, "%s UID %d named %d, then %d" % (folder, uid, old, seq)

    # the clients -------------------------------------------------------

    def smtp(self, rng):
        with smtplib.SMTP("127.0.0.1", self.d.port, local_hostname="client.lan", timeout=3) as s:
            while self.running.is_set():
                i = self.next_seq()
                s.sendmail("load@example.org", ["alice@lan"], numbered(i, rng.choice([0, 3000])))
                with self.lock:
                    self.smtp_acked.add(i)

    def append(self, rng):
        with Imap(self.d.imap_port, timeout=3) as c:
            c.login()
            while self.running.is_set():
                i = self.next_seq()
                msg = numbered(i, rng.choice([0, 2000]))
                u, r = c.cmd(b"APPEND Sent (\\Seen) {%d+}\r\n" % len(msg) + msg)
                m = re.match(r"OK \[APPENDUID (\d+) (\d+)\]", r)
                assert m, r
                self.tell("Sent", int(m.group(2)), i, int(m.group(1)))
                with self.lock:
                    self.appended[i] = int(m.group(2))

    def worker(self, rng):
        with Imap(self.d.imap_port, timeout=3) as c:
            c.login()
            u = c.ok("SELECT INBOX")
            validity = int(re.search(rb"UIDVALIDITY (\d+)", b"\n".join(u)).group(1))
            while self.running.is_set():
                got = c.fetch("UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (X-Seq)])")
                live = {}
                for v in got.values():
                    seq = seq_of(v[b"BODY[HEADER.FIELDS (X-Seq)]"].replace(b"\r\n", b"\n"))
                    self.tell("INBOX", int(v[b"UID"]), seq, validity)
                    live[int(v[b"UID"])] = seq
                with self.lock:
                    live = {k: s for k, s in live.items()
                            if s not in self.expunge_sent and s not in self.move_sent}
                if not live:
                    time.sleep(0.01)
                    continue
                uid = rng.choice(sorted(live))
                seq = live[uid]
                op = rng.random()
                if op < 0.4:
                    c.ok("UID STORE %d +FLAGS (\\Flagged)" % uid)
                    with self.lock:
                        self.flagged.add(seq)
                elif op < 0.7:
                    c.ok("UID STORE %d +FLAGS (\\Deleted)" % uid)
                    with self.lock:
                        self.expunge_sent.add(seq)
                    c.ok("UID EXPUNGE %d" % uid)
                    with self.lock:
                        self.expunged.add(seq)
                else:
                    with self.lock:
                        self.move_sent.add(seq)
                    u = c.ok("UID MOVE %d Trash" % uid)
                    m = re.search(rb"COPYUID (\d+) (\d+) (\d+)\]", b"\n".join(u))
                    assert m, u
                    self.tell("Trash", int(m.group(3)), seq, int(m.group(1)))
                    with self.lock:
                        self.moved[seq] = int(m.group(3))


def folder_state(root, folder):
    """{seq: (uid, info)} of a folder, failing on what must never be."""
    user = "alice" if folder == "INBOX" else "alice/." + folder
    base = os.path.join(root, user)
    out, uids = {}, set()
    for sub, name, seq, ok in maildir_files(root, user):
        assert ok, "partial or foreign file %s/%s/%s" % (folder, sub, name)
        assert seq not in out, "message %s twice in %s" % (seq, folder)
        m = re.search(r",U=(\d+)", name.split(":")[0])
        uid = int(m.group(1)) if m else None
        assert uid is None or uid not in uids, "UID %s twice in %s" % (uid, folder)
        uids.add(uid)
        out[seq] = (uid, name.split(":2,")[1] if ":2," in name else "")
    try:
        with open(os.path.join(base, "picomail-uids")) as f:
            nxt = int(f.read().split()[3])
        assert all(u is None or u < nxt for u in uids), "%s: UIDs %r, next %d" % (folder, uids, nxt)
    except FileNotFoundError:
        assert all(u is None for u in uids), "%s: UIDs without picomail-uids" % folder
    return out


def check(load, d, when):
    with load.lock:
        snap = {k: (set(v) if isinstance(v, set) else dict(v)) for k, v in vars(load).items()
                if k in ("smtp_acked", "appended", "told", "flagged", "expunge_sent", "expunged",
                         "move_sent", "moved")}
    state = {f: folder_state(d.mail_root, f) for f in FOLDERS}
    for (folder, uid), seq in snap["told"].items():
        for s, (u, _) in state[folder].items():
            assert u != uid or s == seq, "%s: %s UID %d names %d, was told %d" % (
                when, folder, uid, s, seq)
    inbox, sent, trash = state["INBOX"], state["Sent"], state["Trash"]
    assert not set(inbox) & set(trash), "%s: in INBOX and Trash: %r" % (when, set(inbox) & set(trash))
    for i in snap["smtp_acked"]:
        if i in snap["expunge_sent"]:
            continue
        assert i in inbox or i in trash, "%s: acknowledged message %d lost" % (when, i)
    for i, uid in snap["appended"].items():
        assert i in sent and sent[i][0] == uid, "%s: APPEND %d (UID %d): %r" % (
            when, i, uid, sent.get(i))
    for i in snap["flagged"]:
        if i in inbox:
            assert "F" in inbox[i][1], "%s: \\Flagged of %d lost: %r" % (when, i, inbox[i])
        elif i in trash:
            assert "F" in trash[i][1], "%s: \\Flagged of %d lost in Trash" % (when, i)
    for i in snap["expunged"]:
        assert i not in inbox, "%s: expunged %d is back" % (when, i)
    for i, uid in snap["moved"].items():
        assert i not in inbox and trash.get(i, (None,))[0] == uid, "%s: MOVE of %d: %r" % (
            when, i, trash.get(i))
    return len(snap["smtp_acked"]) + len(snap["appended"])


def test_kill9_imap_load(make_daemon):
    seed = int(os.environ.get("PICOMAIL_SEED", time.time() * 1000))
    print("PICOMAIL_SEED: %d" % seed)
    rng = random.Random(seed)
    d = imap_daemon(make_daemon, start=False, extra=["greet_pause 0s"])
    load = Load(d, rng)
    d.start()
    with Imap(d.imap_port) as c:            # the folders, before the load
        c.login()
    t0 = time.monotonic()
    try:
        load.start()
        for t in range(TRIALS):
            load.running.set()
            time.sleep(rng.uniform(0.05, 0.3))
            d.kill()
            load.running.clear()
            load.idle()
            check(load, d, "trial %d, after the kill" % t)
            d.start()
            for f in ("alice", "alice/.Sent", "alice/.Trash"):
                assert tmp_files(d.mail_root, f) == [], "%s/tmp not cleaned" % f
            check(load, d, "trial %d, after the restart" % t)
        # One more look through IMAP: every folder opens, every UID as told.
        with Imap(d.imap_port) as c:
            c.login()
            for folder in FOLDERS:
                u = c.ok("SELECT %s" % folder)
        acked = check(load, d, "the end")
        assert d.stop() == 0
    finally:
        load.close()
        d.kill()
    print("imap kill -9: %d trials in %.1f s, %d acknowledged messages, %d APPENDs, %d flags, "
          "%d EXPUNGEs, %d MOVEs, %d UIDs told; 0 lost" % (
              TRIALS, time.monotonic() - t0, acked, len(load.appended), len(load.flagged),
              len(load.expunged), len(load.moved), len(load.told)))
    assert load.appended and load.expunged and load.moved and load.flagged, \
        "the load did too little in %d trials" % TRIALS
