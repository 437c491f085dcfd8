"""fwcheck.py - the promise, checked on a guest's flash partition as a power
cut left it.

    fs_tree(img, dest)     e2fsck -fp on a copy of the ext4 image (the journal
                           replayed as a mount would), then debugfs rdump of
                           /mail and /spool into dest; (status, e2fsck output)
    Books                  what the clients were told: every message sent
                           (X-Seq n, local users, remote recipients, acked or
                           not) and every POP3 deletion (confirmed by +OK, or
                           QUIT sent without an answer)
    losses(tree, books)    the promise on an extracted tree: a list of losses
                           (acknowledged messages missing), raising
                           AssertionError on anything that must never be seen
                           (a partial file, a duplicate, a message never sent,
                           a confirmed deletion come back, a bad envelope)

The messages are those of tests/integration (picotest.numbered: an X-Seq
header and a last line "END n"), and the Maildir and queue readers are
faultwalk's, so the lab judges the guest's files exactly as the host suites
judge a host daemon's.
"""

import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from faultwalk import maildir_files, queue_state  # noqa: E402

USERS = ("alice", "bob")


def fs_tree(img, dest, scratch=None):
    """The file system of IMG as the next mount would see it, copied out to
    DEST (mail/ and spool/).  The image itself is not touched."""
    scratch = scratch or dest + ".img"
    subprocess.run(["cp", "--sparse=always", img, scratch], check=True)
    r = subprocess.run(["e2fsck", "-fp", scratch], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True)
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    if r.returncode & ~1 == 0:
        d = subprocess.run(["debugfs", "-R", "rdump /mail /spool %s" % dest, scratch],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
        if d.returncode != 0:
            raise AssertionError("debugfs rdump failed on %s:\n%s" % (img, d.stdout))
    os.unlink(scratch)
    return r.returncode, r.stdout


class Msg:
    __slots__ = ("local", "remote", "acked", "deleted_ok", "deleted_maybe")

    def __init__(self, local, remote):
        self.local = list(local)
        self.remote = list(remote)
        self.acked = False
        self.deleted_ok = set()      # users whose QUIT got +OK after DELE of it
        self.deleted_maybe = set()   # users who sent QUIT after DELE, no answer seen


class Books:
    def __init__(self, first=1):
        self.msgs = {}
        self.next = first

    def new(self, local=(), remote=()):
        i = self.next
        self.next += 1
        self.msgs[i] = Msg(local, remote)
        return i

    def acked(self):
        return sum(1 for m in self.msgs.values() if m.acked)

    def save(self, path):
        """The books as JSON, for a look after a failure."""
        import json
        with open(path, "w") as f:
            json.dump({i: {"local": m.local, "remote": m.remote, "acked": m.acked,
                           "deleted_ok": sorted(m.deleted_ok), "deleted_maybe": sorted(m.deleted_maybe)}
                       for i, m in self.msgs.items()}, f, indent=0)


def sink_seqs(messages):
    """{seq: copies} of what the relay sink accepted."""
    from picotest import is_complete, seq_of
    out = {}
    for m in messages:
        data = m["bytes"].replace(b"\r\n", b"\n")
        i = seq_of(data)
        assert i is not None and is_complete(data, i), "truncated message at the sink: %r" % (data[-200:],)
        out[i] = out.get(i, 0) + 1
    return out


def losses(tree, books, when, sink=None, drained=False):
    """Checks the tree (fs_tree's dest) against the books; returns the
    acknowledged messages that are missing, [(seq, user or address)]."""
    root = os.path.join(tree, "mail")
    spool = os.path.join(tree, "spool")
    msgs = books.msgs
    sink = sink or {}
    where = {}
    for u in USERS:
        seen = {}
        for sub, name, i, complete in maildir_files(root, u):
            assert complete, "%s: partial file %s/%s/%s" % (when, u, sub, name)
            assert i in msgs and u in msgs[i].local, "%s: %s/%s/%s is message %r, never sent to %s" % (
                when, u, sub, name, i, u)
            assert u not in msgs[i].deleted_ok, "%s: message %d, deleted by %s with +OK, is back" % (when, i, u)
            seen[i] = seen.get(i, 0) + 1
            where.setdefault(i, set()).add(u)
        dups = {i: c for i, c in seen.items() if c > 1}
        assert not dups, "%s: delivered twice to %s: %r" % (when, u, dups)
    queue, _orphans = queue_state(spool)
    queued = set()
    for qid, (e, i, complete) in queue.items():
        assert e["complete"], "%s: truncated envelope %s:\n%s" % (when, qid, e["text"])
        assert i is not None, "%s: envelope %s without its message" % (when, qid)
        assert complete, "%s: partial queued message %s" % (when, qid)
        assert i in msgs and msgs[i].remote, "%s: queued %s is message %r, never relayed" % (when, qid, i)
        if any(r[0] == "P" for r in e["rcpts"]):
            queued.add(i)
    out = []
    for i, m in sorted(msgs.items()):
        if not m.acked:
            continue
        for u in m.local:
            if u in where.get(i, ()) or u in m.deleted_ok or u in m.deleted_maybe:
                continue
            out.append((i, u))
        for r in m.remote:
            if i in sink or (i in queued and not drained):
                continue
            out.append((i, r))
    return out
