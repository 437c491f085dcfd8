"""fwload.py - mail flowing in and out of a guest, and what each client was
told (fwcheck.Books), for the power-cut trials.

The clients, each a thread until stop():
    smtp_local   x2  SMTP from the host to alice, bob or both (hostfwd)
    smtp_remote  x1  SMTP from the host to r<n>@remote.test: queued, then
                     relayed by the guest to the host's sink
    sendmail     x1  `sendmail` inside the guest, as a cron job runs it (to a
                     remote address or to alice), through the control channel;
                     exit status 0 is its acknowledgement
    pop3         x1  POP3 as alice or bob: TOP of each message to learn its
                     X-Seq, DELE of about half, QUIT
A client's error (the power cut) ends its current exchange; what it was told
before stays in the books.
"""

import random
import smtplib
import sys
import threading
import time
import os

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from picotest import ServerClosed, numbered  # noqa: E402
from pop3test import PASSWORD, Pop  # noqa: E402

from fwcheck import USERS  # noqa: E402
from lab import GuestError  # noqa: E402

SIZES = (0, 2000, 5000)


class Load:
    def __init__(self, guest, books, rng):
        self.g = guest
        self.books = books
        self.rng = rng
        self.lock = threading.Lock()
        self.running = threading.Event()
        self.stopping = threading.Event()
        self.active = 0
        self.threads = []
        self.errors = []

    def start(self):
        kinds = [self.smtp_local, self.smtp_local, self.smtp_remote, self.sendmail, self.pop3]
        for fn in kinds:
            t = threading.Thread(target=self.loop, args=(fn, random.Random(self.rng.random())), daemon=True)
            t.start()
            self.threads.append(t)
        self.running.set()

    def loop(self, fn, rng):
        while not self.stopping.is_set():
            if not self.running.wait(0.05):
                continue
            with self.lock:
                self.active += 1
            try:
                fn(rng)
            except (OSError, EOFError, smtplib.SMTPException, AssertionError, GuestError, ServerClosed) as e:
                self.errors.append(repr(e)[:200])
                time.sleep(0.05)
            finally:
                with self.lock:
                    self.active -= 1

    def pause(self, timeout=60):
        """Stops new exchanges; waits for the current ones to end (the
        power cut ends them)."""
        self.running.clear()
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.active == 0, "clients still busy %d s after the cut" % timeout

    def close(self):
        self.running.clear()
        self.stopping.set()
        for t in self.threads:
            t.join(60)

    def new(self, local=(), remote=()):
        with self.lock:
            return self.books.new(local, remote)

    # ---- the clients
    def smtp_local(self, rng):
        with smtplib.SMTP("127.0.0.1", self.g.ports["smtp"], local_hostname="pc.lan", timeout=20) as s:
            while self.running.is_set():
                users = rng.choice([["alice"], ["bob"], ["alice", "bob"]])
                i = self.new(users)
                s.sendmail("pc@example.org", ["%s@lan" % u for u in users], numbered(i, rng.choice(SIZES)))
                with self.lock:
                    self.books.msgs[i].acked = True

    def smtp_remote(self, rng):
        with smtplib.SMTP("127.0.0.1", self.g.ports["smtp"], local_hostname="pc.lan", timeout=20) as s:
            while self.running.is_set():
                i = self.new(remote=["r%d@remote.test" % self.books.next])
                rcpt = self.books.msgs[i].remote[0] = "r%d@remote.test" % i
                s.sendmail("pc@lan", [rcpt], numbered(i, rng.choice(SIZES)))
                with self.lock:
                    self.books.msgs[i].acked = True

    def sendmail(self, rng):
        while self.running.is_set():
            local = rng.random() < 0.3
            i = self.new(["alice"] if local else [], [] if local else ["c%d@remote.test" % self.books.next])
            to = "alice" if local else self.books.msgs[i].remote[0]
            if not local:
                to = self.books.msgs[i].remote[0] = "c%d@remote.test" % i
            body = numbered(i, rng.choice((0, 2000))).replace(b"\r\n", b"\n").decode()
            rc, out = self.g.run("printf '%%s' '%s' | sendmail -f root@mail.lan %s" % (body, to), timeout=60)
            if rc != 0:
                raise AssertionError("sendmail exited %d: %s" % (rc, out))
            with self.lock:
                self.books.msgs[i].acked = True

    def pop3(self, rng):
        user = rng.choice(USERS)
        p = Pop(self.g.ports["pop3"], timeout=20)
        try:
            p.ok("USER %s" % user)
            r = p.cmd("PASS %s" % PASSWORD)
            if not r.startswith("+OK"):
                time.sleep(0.2)
                raise AssertionError("POP3 login of %s: %s" % (user, r))
            marked = set()
            for n in sorted(p.uidl()):
                if rng.random() < 0.5:
                    continue
                _, head = p.multi("TOP %d 0" % n)
                seq = None
                for line in head.split(b"\r\n"):
                    if line.startswith(b"X-Seq: "):
                        seq = int(line[7:])
                assert seq is not None, "message %d of %s has no X-Seq" % (n, user)
                p.ok("DELE %d" % n)
                marked.add(seq)
            with self.lock:
                for i in marked:
                    self.books.msgs[i].deleted_maybe.add(user)
            p.send(b"QUIT\r\n")
            if p.status().startswith("+OK"):
                with self.lock:
                    for i in marked:
                        self.books.msgs[i].deleted_ok.add(user)
        finally:
            p.close()
        time.sleep(rng.uniform(0.2, 1.0))
