"""Scenarios and checks for the fault, crash and strace tests
(test_faults.py, test_strace.py, test_crash.py, test_diskfull.py).

A scenario is one thing a user does whose result must be durable:

    delivery        one SMTP message to alice and bob, the first mail of
                    both (their Maildirs are made on the way)
    queue_write     one SMTP message to a remote recipient: into the spool
    relay_sent      one queue run; the smarthost (aiosmtpd) takes the
                    message, which leaves the spool
    relay_deferred  one queue run; the smarthost is down: the envelope is
                    rewritten
    relay_bounce    one queue run; the smarthost refuses the recipient: a
                    bounce is queued and delivered to the sender's Maildir
    pop3_quit       a POP3 session: login (new/ -> cur/), DELE 1 and 3, QUIT

Each one knows its configuration, the files to lay out before the daemon
starts (`prepare`), what the client does and sees (`act`), the checks after
an injected fault or a kill (`check_failed`), the next try (`retry`) and
what must hold once it succeeded (`check_done`).

The seam's log lines ("fault seam: fsync #3 PATH[: injected EIO]") tell
where each call of a kind falls: `seam_calls` parses them.

Every wait is bounded; every process is stopped by its PID.
"""

import os
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
from contextlib import contextmanager

from picotest import BIN, Daemon, DaemonExited, free_port, is_complete, numbered, seq_of
from pop3test import PASSWORD, Pop
from relaytest import Peer, control, dead_udp_port, ensure_aiosmtpd, wait_for

SEAM_RE = re.compile(r"fault seam: (\w+) #(\d+) (.*?)(?:: injected (\w+))?$", re.M)
ERRNOS = ("EIO", "ENOSPC", "EDQUOT")
# What the client hears for each injected errno (README "Faults on demand").
SMTP_REPLY = {"EIO": (451, "4.3.0"), "ENOSPC": (452, "4.3.1"), "EDQUOT": (452, "4.3.1")}
POP3_ERR = "-ERR [SYS/TEMP]"
SIZE = 9000          # three 4 KiB writes, away from a buffer boundary


# --------------------------------------------------------------------------
# The daemon's log


def log_text(d):
    try:
        with open(d.log_path, "rb") as f:
            return f.read().decode("latin-1")
    except OSError:
        return ""


def mark(d):
    """A position in the daemon's log: what follows it happened later."""
    return len(log_text(d))


def since(d, pos):
    return log_text(d)[pos:]


def seam_calls(text, files_only=True):
    """[(op, n, path, injected errno or None)] from the seam's log lines;
    files_only leaves out socket writes (the control socket's replies)."""
    out = []
    for m in SEAM_RE.finditer(text):
        op, n, path, inj = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        if files_only and path.startswith("socket:"):
            continue
        out.append((op, n, path, inj))
    return out


def shape(path):
    """A path with its numbers and queue ids hidden: the same call in
    another run."""
    return re.sub(r"\d+", "#", re.sub(r"[0-9A-F]{10,}", "#", path))


def wait_log(d, pos, pattern, timeout=10, what=None):
    """Waits for a line matching pattern after pos; returns the match."""
    rx = re.compile(pattern, re.M)

    def found():
        if not d.alive():
            raise AssertionError("daemon died waiting for %s\n%s" % (what or pattern,
                                                                     since(d, pos)[-3000:]))
        return rx.search(since(d, pos))
    try:
        return wait_for(found, timeout, what or pattern, interval=0.01)
    except AssertionError as e:
        raise AssertionError("%s\n-- log since mark --\n%s" % (e, since(d, pos)[-3000:])) from None


# --------------------------------------------------------------------------
# Files


def maildir_files(root, user, subs=("new", "cur")):
    """[(sub, name, seq, complete)] for user's Maildir."""
    out = []
    for sub in subs:
        p = os.path.join(root, user, sub)
        if not os.path.isdir(p):
            continue
        for n in sorted(os.listdir(p)):
            if n.startswith("."):
                continue
            try:
                with open(os.path.join(p, n), "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            i = seq_of(data)
            out.append((sub, n, i, i is not None and is_complete(data, i)))
    return out


def tmp_files(root, user):
    p = os.path.join(root, user, "tmp")
    return sorted(os.listdir(p)) if os.path.isdir(p) else []


def seqs_in(root, user):
    """{seq: copies} in user's new/ and cur/, failing on a partial file."""
    out = {}
    for sub, name, i, ok in maildir_files(root, user):
        assert ok, "partial or foreign file %s/%s/%s (X-Seq %r)" % (user, sub, name, i)
        out[i] = out.get(i, 0) + 1
    return out


def spool_names(spool, sub):
    p = os.path.join(spool, sub)
    return sorted(n for n in os.listdir(p) if not n.startswith(".")) if os.path.isdir(p) else []


def read_env(spool, qid):
    """{"complete", "rcpts": [(state, kind, addr)]} or None if absent."""
    try:
        with open(os.path.join(spool, "env", qid)) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    rcpts = []
    for line in text.splitlines():
        if line.startswith("rcpt "):
            sk, addr = line[5:].split(" ", 1)
            rcpts.append((sk[0], sk[1], addr))
    return {"complete": text.endswith("\nend\n"), "rcpts": rcpts, "text": text}


def queue_state(spool):
    """The queue as a restart would find it: {id: (env, seq of msg, msg
    complete)} for every envelope, and the message files without one."""
    envs = spool_names(spool, "env")
    msgs = set(spool_names(spool, "msg"))
    out = {}
    for q in envs:
        e = read_env(spool, q)
        if e is None:
            continue            # gone since the listing: sent meanwhile
        seq = ok = None
        if q in msgs:
            try:
                with open(os.path.join(spool, "msg", q), "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                if read_env(spool, q) is None:
                    continue    # both went meanwhile (a running daemon)
                data = b""
            seq = seq_of(data)
            ok = seq is not None and is_complete(data, seq)
        out[q] = (e, seq, ok)
    return out, sorted(msgs - set(envs))


def peer_seqs(peer):
    """{seq: copies} accepted by the peer."""
    out = {}
    for m in peer.messages():
        data = m["bytes"].replace(b"\r\n", b"\n")
        i = seq_of(data)
        assert i is not None and is_complete(data, i), "truncated message at the peer: %r" % (
            data[-200:],)
        out[i] = out.get(i, 0) + 1
    return out


# --------------------------------------------------------------------------
# Clients


class Outcome:
    """What the client saw: kind is "ok", "temp", "perm" or "dropped"."""

    def __init__(self, kind, code=0, text="", detail=None):
        self.kind, self.code, self.text, self.detail = kind, code, text, detail

    def __repr__(self):
        return "<%s %s %s %r>" % (self.kind, self.code or "", self.text, self.detail or "")


def try_send(port, rcpts, data, timeout=10):
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.lan", timeout=timeout) as s:
            try:
                s.sendmail("alice@lan", rcpts, data)
            except smtplib.SMTPDataError as e:
                return Outcome("temp" if e.smtp_code < 500 else "perm", e.smtp_code,
                               e.smtp_error.decode("latin-1"))
            except smtplib.SMTPRecipientsRefused as e:
                code, text = list(e.recipients.values())[0]
                return Outcome("temp" if code < 500 else "perm", code, text.decode("latin-1"))
            except smtplib.SMTPSenderRefused as e:
                return Outcome("temp" if e.smtp_code < 500 else "perm", e.smtp_code,
                               e.smtp_error.decode("latin-1"))
            return Outcome("ok", 250)
    except (smtplib.SMTPServerDisconnected, OSError) as e:
        return Outcome("dropped", detail=repr(e))


def reply_matches(o, errno):
    code, enh = SMTP_REPLY[errno]
    return o.kind == "temp" and o.code == code and o.text.split(" ", 1)[0] == enh


# --------------------------------------------------------------------------
# Daemons outside the conftest fixture (hundreds per test)


class Runs:
    """Makes daemons in numbered subdirectories of base and kills every one
    by its PID at the end."""

    def __init__(self, base, password_hash):
        self.base = base
        self.hash = password_hash
        self.made = []

    def daemon(self, binary=BIN, env=None, extra=(), cls=Daemon, **conf):
        sub = os.path.join(self.base, "r%d" % len(self.made))
        d = cls(sub, self.hash, binary=binary, env=env, extra=["greet_pause 0s"] + list(extra),
                **conf)
        self.made.append(d)
        return d

    def close(self):
        for d in self.made:
            try:
                d.kill()
            except Exception:   # noqa: BLE001 - clean up the rest regardless
                pass

    def drop(self, d):
        """Removes a passed run's directory (the daemon must be stopped)."""
        shutil.rmtree(d.dir, ignore_errors=True)


# --------------------------------------------------------------------------
# Seeds: files laid out before a run's daemon starts


class Seeds:
    """Made once per module with the production binary: two queued
    messages (after one failed attempt, next try in an hour) and a Maildir
    with four messages in new/."""

    RELAY_SEQ = 7001      # to far@remote.test
    BOUNCE_SEQ = 7002     # to gone@remote.test, refused by the peer
    POP_SEQS = (1, 2, 3, 4)

    def __init__(self, runs):
        d = runs.daemon(extra=["smarthost 127.0.0.1:%d" % free_port(), "retry_min 1h",
                               "retry_max 1h", "resolver 127.0.0.1:%d" % dead_udp_port(),
                               "listen pop3 127.0.0.1:%d" % free_port(), "plaintext_auth yes"])
        d.start()
        self.queue = {}
        for seq, rcpt in ((self.RELAY_SEQ, "far@remote.test"), (self.BOUNCE_SEQ, "gone@remote.test")):
            pos = mark(d)
            o = try_send(d.port, [rcpt], numbered(seq, SIZE))
            assert o.kind == "ok", o
            qid = wait_log(d, pos, r"received id=(\S+) ").group(1)
            wait_log(d, pos, r"retry id=%s pending=1 " % qid)
            self.queue[seq] = qid
        for i in self.POP_SEQS:
            assert try_send(d.port, ["alice@lan"], numbered(i, 2000)).kind == "ok"
        assert d.stop() == 0
        self.spool = d.spool
        self.mail_root = d.mail_root
        # UIDL (the name before ',') -> X-Seq, for the POP3 runs
        self.uid_seq = {n.split(",")[0]: i for _, n, i, _ in maildir_files(d.mail_root, "alice")}
        assert sorted(self.uid_seq.values()) == list(self.POP_SEQS), self.uid_seq

    def put_queued(self, d, seq):
        qid = self.queue[seq]
        for sub in ("tmp", "msg", "env"):
            os.makedirs(os.path.join(d.spool, sub), exist_ok=True)
        for sub in ("msg", "env"):
            shutil.copy2(os.path.join(self.spool, sub, qid), os.path.join(d.spool, sub, qid))
        return qid

    def put_mailbox(self, d):
        dst = os.path.join(d.mail_root, "alice")
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(os.path.join(self.mail_root, "alice"), dst)


# --------------------------------------------------------------------------
# The scenarios


class Scenario:
    """check_failed(d, outcome, errno) returns what the act left: "refused"
    (the client heard a 4xx/-ERR), "kept" (still queued), "sent",
    "bounced", or "tolerated" (the act went through: only right where the
    failed call lost nothing); errno None: no fault injected."""
    name = "?"

    def __init__(self, seeds, peer):
        self.seeds = seeds
        self.peer = peer

    def extra(self):
        return []

    def prepare(self, d):
        pass

    def window_end(self, text):
        """Where the scenario's calls end in the log after the mark."""
        return len(text)


class Delivery(Scenario):
    name = "delivery"
    SEQ = 101
    USERS = ("alice", "bob")

    def extra(self):
        return ["resolver 127.0.0.1:%d" % dead_udp_port()]

    def act(self, d):
        return try_send(d.port, ["%s@lan" % u for u in self.USERS], numbered(self.SEQ, SIZE))

    def check_failed(self, d, o, errno, op=None):
        assert o.kind != "perm" and o.kind != "dropped", o
        if o.kind == "ok":
            # harmless fault (a clean-up call): delivered, once
            self.check_done(d)
            return "tolerated"
        if errno is not None:
            assert reply_matches(o, errno), "want %s %s, got %r" % (SMTP_REPLY[errno] + (o,))
        for u in self.USERS:
            got = seqs_in(d.mail_root, u)
            assert got == {}, "%s: refused message visible in the Maildir: %r" % (u, got)
            assert tmp_files(d.mail_root, u) == [], "%s: left in tmp/: %r" % (
                u, tmp_files(d.mail_root, u))
        return "refused"

    def retry(self, d):
        o = self.act(d)
        assert o.kind == "ok", "the next try: %r" % o

    def check_done(self, d):
        for u in self.USERS:
            assert seqs_in(d.mail_root, u) == {self.SEQ: 1}, (u, seqs_in(d.mail_root, u))
            assert tmp_files(d.mail_root, u) == [], u


class QueueWrite(Scenario):
    name = "queue_write"
    SEQ = 201
    RCPT = "far@remote.test"

    def extra(self):
        # the first attempt after the 250 fails at once and waits an hour
        return ["smarthost 127.0.0.1:%d" % free_port(), "retry_min 1h", "retry_max 1h",
                "resolver 127.0.0.1:%d" % dead_udp_port()]

    def window_end(self, text):
        m = re.search(r"received id=|reason=write-error", text)
        return m.end() if m else len(text)

    def act(self, d):
        return try_send(d.port, [self.RCPT], numbered(self.SEQ, SIZE))

    def check_failed(self, d, o, errno, op=None):
        assert o.kind not in ("perm", "dropped"), o
        if o.kind == "ok":
            self.check_done(d)
            return "tolerated"
        if errno is not None:
            assert reply_matches(o, errno), "want %s %s, got %r" % (SMTP_REPLY[errno] + (o,))
        for sub in ("msg", "env", "tmp"):
            assert spool_names(d.spool, sub) == [], "refused message left in the spool's %s/: %r" % (
                sub, spool_names(d.spool, sub))
        return "refused"

    def retry(self, d):
        o = self.act(d)
        assert o.kind == "ok", "the next try: %r" % o

    def check_done(self, d):
        q, orphans = queue_state(d.spool)
        assert orphans == [], "message files without an envelope: %r" % orphans
        assert len(q) == 1, "want one queued message: %r" % q
        (e, seq, ok), = q.values()
        assert e["complete"] and seq == self.SEQ and ok, q
        assert [r[0] for r in e["rcpts"]] == ["P"], e


# The ways a queue run ends (src/queue.c run_start, run_drop, run_finish).
RUN_END = (r"(?:removed|retry) id=%s\b|id=%s(?: done;|: (?:unreadable envelope|cannot read the "
           r"envelope|cannot open the message|message file gone|removed))")


def run_ended(text, qid):
    return re.search(RUN_END % (re.escape(qid), re.escape(qid)), text)


class RelaySent(Scenario):
    """The seeded message, flushed to a smarthost that takes it."""
    name = "relay_sent"
    SEQ = Seeds.RELAY_SEQ

    def extra(self):
        return ["smarthost 127.0.0.1:%d" % self.peer.port, "retry_min 1h", "retry_max 1h",
                "resolver 127.0.0.1:%d" % dead_udp_port()]

    def prepare(self, d):
        self.qid = self.seeds.put_queued(d, self.SEQ)
        self.before = peer_seqs(self.peer).get(self.SEQ, 0)

    def flush(self, d):
        pos = mark(d)
        control(d, "flush")
        # the log says when the run ended; where a log line could not be
        # written (strace's write errors), the files do
        wait_for(lambda: run_ended(since(d, pos), self.qid) or not d.alive()
                 or (not self.leftover(d) and self.at_peer() > 0), 10,
                 "the end of the run of %s" % self.qid, interval=0.01)
        return pos

    def act(self, d):
        self.flush(d)
        return Outcome("ok", detail=self.at_peer())

    def at_peer(self):
        return peer_seqs(self.peer).get(self.SEQ, 0) - self.before

    def still_queued(self, d):
        e = read_env(d.spool, self.qid)
        if e is None:
            return False
        assert e["complete"], "truncated envelope:\n%s" % e["text"]
        assert os.path.exists(os.path.join(d.spool, "msg", self.qid)), \
            "envelope without its message"
        return any(r[0] == "P" for r in e["rcpts"])

    def check_failed(self, d, o, errno, op=None):
        assert d.alive(), "daemon died"
        sent = self.at_peer()
        assert sent <= 1, "sent %d times" % sent
        assert spool_names(d.spool, "tmp") == [], spool_names(d.spool, "tmp")
        if sent == 0:
            assert self.still_queued(d), "neither sent nor queued: lost"
            return "kept"
        return "sent"

    def leftover(self, d):
        return [sub for sub in ("env", "msg") if os.path.exists(os.path.join(d.spool, sub, self.qid))]

    def retry(self, d):
        # A run after the fault sends what is still queued and removes
        # what the faulted run could not.
        for _ in range(3):
            if not self.leftover(d):
                break
            self.flush(d)

    def check_done(self, d):
        assert self.at_peer() == 1, "want exactly one copy at the smarthost, got %d" % (
            self.at_peer())
        for sub in ("env", "msg", "tmp"):
            assert spool_names(d.spool, sub) == [], "left in the spool's %s/: %r" % (
                sub, spool_names(d.spool, sub))


class RelayDeferred(RelaySent):
    """The seeded message, flushed while the smarthost is down: the
    envelope is rewritten; the next try goes to a smarthost that is up."""
    name = "relay_deferred"

    def extra(self):
        return ["smarthost 127.0.0.1:%d" % free_port(), "retry_min 1h", "retry_max 1h",
                "resolver 127.0.0.1:%d" % dead_udp_port()]

    def check_failed(self, d, o, errno, op=None):
        assert d.alive(), "daemon died"
        assert self.at_peer() == 0
        assert self.still_queued(d), "the deferred message is not queued any more"
        assert spool_names(d.spool, "tmp") == [], spool_names(d.spool, "tmp")
        return "kept"

    def retry(self, d):
        pos = mark(d)
        d.extra = [l for l in d.extra if not l.startswith("smarthost ")] + [
            "smarthost 127.0.0.1:%d" % self.peer.port]
        d.write_config()
        d.send_signal(signal.SIGHUP)
        wait_log(d, pos, "configuration reloaded")
        RelaySent.retry(self, d)


class RelayBounce(RelaySent):
    """The seeded message to gone@remote.test: the smarthost answers 550,
    a bounce is queued and delivered to alice@lan in the same flush."""
    name = "relay_bounce"
    SEQ = Seeds.BOUNCE_SEQ

    def flush(self, d):
        pos = mark(d)
        control(d, "flush")

        def done():
            text = since(d, pos)
            if not d.alive():
                return True
            if not run_ended(text, self.qid):
                return False
            b = re.search(r"bounce id=%s dsn=(\S+) to=" % re.escape(self.qid), text)
            return b is None or run_ended(text, b.group(1))
        wait_for(done, 10, "the end of the runs of %s and its bounce" % self.qid, interval=0.01)
        return pos

    def bounces(self, d):
        """The bounces in alice's Maildir, each checked whole."""
        out = []
        for sub in ("new", "cur"):
            p = os.path.join(d.mail_root, "alice", sub)
            for n in (sorted(os.listdir(p)) if os.path.isdir(p) else []):
                with open(os.path.join(p, n), "rb") as f:
                    data = f.read()
                assert data.rstrip(b"\n").endswith(b"--"), "partial bounce %s" % n
                assert b"gone@remote.test" in data and b"X-Seq: %d" % self.SEQ in data, n
                out.append(n)
        return out

    def queued_ids(self, d):
        return [q for q in spool_names(d.spool, "env")
                if read_env(d.spool, q) and any(r[0] == "P" for r in read_env(d.spool, q)["rcpts"])]

    def check_failed(self, d, o, errno, op=None):
        assert d.alive(), "daemon died"
        assert self.at_peer() == 0, "a refused message was recorded as sent"
        b = self.bounces(d)
        assert len(b) <= 1, "two bounces: %r" % b
        assert tmp_files(d.mail_root, "alice") == []
        q, _ = queue_state(d.spool)
        for qid, (e, seq, ok) in q.items():
            assert e["complete"], e["text"]
        if not b:
            # the sender is told later: the original or its bounce waits
            assert self.queued_ids(d), "no bounce and nothing queued: the sender is never told"
            return "kept"
        return "bounced"

    def retry(self, d):
        for _ in range(4):
            if not spool_names(d.spool, "env") and not spool_names(d.spool, "msg"):
                break
            self.flush_all(d)

    def flush_all(self, d):
        pos = mark(d)
        ids = sorted(set(spool_names(d.spool, "env")) | set(spool_names(d.spool, "msg")))
        control(d, "flush")
        wait_for(lambda: all(run_ended(since(d, pos), q) for q in ids) or not d.alive(), 10,
                 "the runs of %r" % ids, interval=0.01)
        # a bounce queued by these runs runs at once
        for b in re.findall(r"bounce id=\S+ dsn=(\S+) to=", since(d, pos)):
            wait_for(lambda: run_ended(since(d, pos), b), 10, "the run of bounce %s" % b,
                     interval=0.01)

    def check_done(self, d):
        b = self.bounces(d)
        assert len(b) == 1, "want exactly one bounce in alice's Maildir, got %r" % b
        for sub in ("env", "msg", "tmp"):
            assert spool_names(d.spool, sub) == [], "left in the spool's %s/: %r" % (
                sub, spool_names(d.spool, sub))


class Pop3Quit(Scenario):
    name = "pop3_quit"
    DELETE = (1, 3)   # message numbers, in delivery order = X-Seq 1 and 3

    def extra(self):
        self.port = free_port()
        return ["listen pop3 127.0.0.1:%d" % self.port, "plaintext_auth yes",
                "resolver 127.0.0.1:%d" % dead_udp_port()]

    def prepare(self, d):
        d.pop3_port = self.port
        self.seeds.put_mailbox(d)

    def session(self, d, delete):
        """Logs in, DELEs the messages whose X-Seq is in delete, QUITs.
        Returns (stage, reply, seqs marked)."""
        p = Pop(d.pop3_port)
        try:
            p.ok("USER alice")
            r = p.cmd("PASS %s" % PASSWORD)
            if not r.startswith("+OK"):
                return "login", r, set()
            marked = set()
            for n, uid in sorted(p.uidl().items()):
                i = self.seeds.uid_seq.get(uid)
                if i in delete:
                    p.ok("DELE %d" % n)
                    marked.add(i)
            r = p.cmd("QUIT")
            assert p.closed(5), "no close after QUIT"
            return "quit", r, marked
        finally:
            p.close()

    def act(self, d):
        stage, r, marked = self.session(d, set(self.DELETE))
        kind = "ok" if r.startswith("+OK") else "temp"
        return Outcome(kind, text=r, detail=(stage, marked))

    def check_failed(self, d, o, errno, op=None):
        stage, marked = o.detail
        assert d.alive(), "daemon died"
        got = seqs_in(d.mail_root, "alice")
        assert tmp_files(d.mail_root, "alice") == []
        assert all(c == 1 for c in got.values()), got
        keep = set(self.seeds.POP_SEQS) - set(self.DELETE)
        assert keep <= set(got), "messages never deleted are gone: %r" % got
        if o.kind == "ok":
            assert stage == "quit" and not (set(self.DELETE) & set(got)), \
                "+OK to QUIT but deleted messages remain: %r" % got
            return "tolerated"
        assert o.text.startswith(POP3_ERR), "want %s, got %r" % (POP3_ERR, o.text)
        if stage == "login":
            assert set(got) == set(self.seeds.POP_SEQS), "a refused login changed the mailbox"
        return "refused at " + stage

    def retry(self, d):
        deadline = time.monotonic() + 3
        while True:
            stage, r, _ = self.session(d, set(self.DELETE))
            if r.startswith("+OK") or time.monotonic() > deadline:
                break
            time.sleep(0.05)   # the failed session's lock goes with its close
        assert stage == "quit" and r.startswith("+OK"), "the next try: %s %s" % (stage, r)

    def check_done(self, d):
        got = seqs_in(d.mail_root, "alice")
        keep = set(self.seeds.POP_SEQS) - set(self.DELETE)
        assert got == {i: 1 for i in keep}, got


SCENARIOS = [Delivery, QueueWrite, RelaySent, RelayDeferred, RelayBounce, Pop3Quit]


# --------------------------------------------------------------------------
# IMAP (test_imap_faults.py): each change a client makes, durable before OK


IMAP_CODES = {"EIO": "[UNAVAILABLE]", "ENOSPC": "[OVERQUOTA]", "EDQUOT": "[OVERQUOTA]"}
IMAP_SEQS = (1, 2, 3, 4)


class ImapSeeds:
    """Made once per module with the production binary: alice's Maildir
    after a first IMAP login (the standard folders, subscriptions) with
    four messages still in new/ ("fresh"), and the same after a SELECT
    gave them UIDs 1-4 ("indexed")."""

    def __init__(self, runs):
        from imaptest import Imap
        port = free_port()
        d = runs.daemon(extra=["listen imap 127.0.0.1:%d" % port, "plaintext_auth yes"])
        d.start()
        for i in IMAP_SEQS:
            assert try_send(d.port, ["alice@lan"], numbered(i, 2000)).kind == "ok"
        with Imap(port) as c:
            c.login()
        assert d.stop() == 0
        self.fresh = os.path.join(runs.base, "imap-fresh")
        shutil.copytree(os.path.join(d.mail_root, "alice"), self.fresh)
        d.start()
        with Imap(port) as c:
            c.login()
            c.ok("SELECT INBOX")
        assert d.stop() == 0
        self.indexed = os.path.join(runs.base, "imap-indexed")
        shutil.copytree(os.path.join(d.mail_root, "alice"), self.indexed)

    def put(self, d, which):
        dst = os.path.join(d.mail_root, "alice")
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(getattr(self, which), dst)


def imap_state(root, folders=("INBOX", "Trash", "Sent")):
    """{folder: {seq: (uid, flags letters, where)}} of alice's folders,
    failing on a message twice in a folder, a partial file, a UID twice,
    a file left in tmp/, or a UID at or past the folder's next."""
    import re as _re
    out = {}
    for folder in folders:
        base = os.path.join(root, "alice") if folder == "INBOX" else \
            os.path.join(root, "alice", "." + folder)
        assert tmp_files(root, "alice" if folder == "INBOX" else "alice/." + folder) == [], folder
        got, uids = {}, set()
        for sub, name, seq, ok in maildir_files(root, "alice" if folder == "INBOX" else
                                                "alice/." + folder):
            assert ok, "partial or foreign file %s/%s/%s" % (folder, sub, name)
            assert seq not in got, "X-Seq %s twice in %s" % (seq, folder)
            m = _re.search(r",U=(\d+)", name.split(":")[0])
            uid = int(m.group(1)) if m else None
            assert uid is None or uid not in uids, "UID %s twice in %s" % (uid, folder)
            uids.add(uid)
            got[seq] = (uid, name.split(":2,")[1] if ":2," in name else "", sub)
        try:
            with open(os.path.join(base, "picomail-uids")) as f:
                nxt = int(f.read().split()[3])
            assert all(u is None or u < nxt for u in uids), (folder, uids, nxt)
        except FileNotFoundError:
            pass
        out[folder] = got
    return out


class ImapScenario(Scenario):
    """An IMAP session doing one change; act returns its outcome: "ok",
    "temp" (a NO), or "dropped"."""
    seeds_kind = "indexed"

    def extra(self):
        self.port = free_port()
        return ["listen imap 127.0.0.1:%d" % self.port, "plaintext_auth yes",
                "resolver 127.0.0.1:%d" % dead_udp_port()]

    def prepare(self, d):
        d.imap_port = self.port
        self.seeds.imap.put(d, self.seeds_kind)

    def act(self, d):
        from imaptest import Imap
        try:
            with Imap(d.imap_port) as c:
                for line in ['LOGIN alice "%s"' % PASSWORD] + self.commands:
                    u, r = c.cmd(line)
                    if not r.startswith("OK"):
                        return Outcome("temp", text=r, detail=line)
                c.cmd("LOGOUT")
            return Outcome("ok")
        except (OSError, AssertionError) as e:
            return Outcome("dropped", detail=repr(e))

    def check_failed(self, d, o, errno, op=None):
        assert d.alive(), "daemon died"
        assert o.kind in ("ok", "temp"), o
        state = imap_state(d.mail_root)
        if o.kind == "ok":
            self.check_done(d)
            return "tolerated"
        if errno is not None:
            assert o.text.startswith("NO " + IMAP_CODES[errno]), "want NO %s, got %r" % (
                IMAP_CODES[errno], o.text)
        self.check_partial(state)
        return "refused at " + (o.detail.decode("latin-1") if isinstance(o.detail, bytes)
                                else o.detail).split()[0]

    def retry(self, d):
        o = self.act(d)
        assert o.kind == "ok", "the next try: %r" % o

    def check_partial(self, state):
        """What a refused change may leave: every message once."""
        seen = {}
        for folder, got in state.items():
            for seq in got:
                seen[seq] = seen.get(seq, 0) + 1
        assert seen.get(50, 0) <= 1 and all(seen.get(i) == 1 for i in IMAP_SEQS), seen


class ImapSelect(ImapScenario):
    """SELECT of a folder whose four messages are in new/: the UIDs."""
    name = "imap_select"
    seeds_kind = "fresh"
    commands = ["SELECT INBOX", "FETCH 1:4 (UID)"]

    def check_done(self, d):
        got = imap_state(d.mail_root)["INBOX"]
        assert sorted(got) == list(IMAP_SEQS), got
        assert all(v[0] is not None and v[2] == "cur" for v in got.values()), got


class ImapAppend(ImapScenario):
    name = "imap_append"
    commands = [b"APPEND Sent (\\Seen) {%d+}\r\n" % len(numbered(50, 3000)) + numbered(50, 3000)]

    def check_done(self, d):
        got = imap_state(d.mail_root)["Sent"]
        assert list(got) == [50] and got[50][1] == "S" and got[50][2] == "cur", got


class ImapStore(ImapScenario):
    name = "imap_store"
    commands = ["SELECT INBOX", "UID STORE 1:2 +FLAGS (\\Flagged)"]

    def check_done(self, d):
        got = imap_state(d.mail_root)["INBOX"]
        assert {s: v[1] for s, v in got.items()} == {1: "F", 2: "F", 3: "", 4: ""}, got


class ImapExpunge(ImapScenario):
    name = "imap_expunge"
    commands = ["SELECT INBOX", "UID STORE 1,3 +FLAGS (\\Deleted)", "EXPUNGE"]

    def check_partial(self, state):
        got = state["INBOX"]
        assert {2, 4} <= set(got) and set(got) <= set(IMAP_SEQS), got

    def check_done(self, d):
        assert sorted(imap_state(d.mail_root)["INBOX"]) == [2, 4]


class ImapMove(ImapScenario):
    name = "imap_move"
    commands = ["SELECT INBOX", "UID MOVE 2:3 Trash"]

    def check_done(self, d):
        state = imap_state(d.mail_root)
        assert sorted(state["INBOX"]) == [1, 4] and sorted(state["Trash"]) == [2, 3], state


IMAP_SCENARIOS = [ImapSelect, ImapAppend, ImapStore, ImapExpunge, ImapMove]


# --------------------------------------------------------------------------
# strace


def strace_path():
    return shutil.which("strace")


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


class TracedDaemon(Daemon):
    """picomail serve under strace (args in self.strace_args); the PID the
    tests signal is the daemon's own, not strace's (SIGTERM to strace would
    only detach it)."""

    strace_args = ()

    def start(self, ready_timeout=5.0):
        env = dict(os.environ)
        env.pop("PICOMAIL_CONF", None)
        env.pop("PICOMAIL_FAULT", None)
        env.update(self.env)
        self.logf = open(self.log_path, "ab")
        self.strace_out = os.path.join(self.dir, "strace.out")
        self.proc = subprocess.Popen(
            [strace_path(), "-f", "-o", self.strace_out] + list(self.strace_args)
            + [self.binary, "serve", "-C", self.conf_path, "-f"],
            stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT,
            env=env, cwd=self.dir)
        self.tracee = None
        self.wait_ready(ready_timeout)
        # strace's first children are probes of ptrace; the daemon is the
        # one running the binary
        for pid in children(self.proc.pid):
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    if f.read().split(b"\0")[0] == self.binary.encode():
                        self.tracee = pid
            except OSError:
                pass
        if self.tracee is None:
            # Killed at a start-up call after its first session (the
            # probe's disconnect line is written after the QUIT reply):
            # strace ends with the daemon's signal.
            try:
                rc = self.proc.wait(5)
            except subprocess.TimeoutExpired:
                rc = None
            assert rc is not None, "no traced picomail under strace %d" % self.proc.pid
            self.logf.close()
            raise DaemonExited(rc, self.log())
        return self

    def send_signal(self, sig):
        os.kill(self.tracee, sig)

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        if self.proc is None:
            return None
        if self.proc.poll() is None and self.tracee:
            try:
                os.kill(self.tracee, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return self.proc.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            if self.tracee:
                try:
                    os.kill(self.tracee, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if getattr(self, "logf", None):
            self.logf.close()

    def killed(self):
        """True once the traced daemon died of the injected SIGKILL."""
        return self.proc.poll() is not None

    def injected(self):
        """The traced call the injection hit (strace's line for it)."""
        try:
            with open(self.strace_out) as f:
                lines = f.read().splitlines()
        except OSError:
            return None
        hits = [l for l in lines if "(INJECTED" in l or l.rstrip().endswith("= ?")]
        return hits[-1] if hits else None


@contextmanager
def world_of(prefix, password_hash, **peer_opts):
    """The set-up a walk shares across its scenarios: a private directory,
    the Runs and Seeds in it, and an aiosmtpd smarthost; everything removed
    afterwards (PICOMAIL_KEEP=1 keeps the directory)."""
    if not ensure_aiosmtpd():
        raise RuntimeError("aiosmtpd is missing: bash board/common/deps.sh "
                           "pkg:python3-aiosmtpd")
    base = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    runs = Runs(base, password_hash)
    peer = Peer(os.path.join(base, "peer"), **peer_opts)
    try:
        peer.start()
        yield runs, Seeds(runs), peer
    finally:
        runs.close()
        peer.stop()
        if os.environ.get("PICOMAIL_KEEP"):
            print("kept", base)
        else:
            shutil.rmtree(base, ignore_errors=True)
