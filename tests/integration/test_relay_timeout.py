"""The relay client's reply timeout against a smarthost that dribbles.

The timeout counts from the last whole reply line (and, in the body, from
the last bufferful the server took), never from the last byte: a server
sending one byte every 0.2 s must not hold a queue runner for ever.  The
test build takes PICOMAIL_REPLY_MS (here 1 s instead of 5 minutes).
"""

import socket
import threading
import time

from picotest import TEST_BIN, message
from relaytest import mailq, relay_daemon, submit, wait_for


class Dribbler(threading.Thread):
    """A smarthost on 127.0.0.1 that sends its greeting a byte at a time,
    one every `every` seconds, and never finishes a line."""

    def __init__(self, every=0.2):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.every = every
        self.stopping = threading.Event()
        self.sessions = 0
        self.start()

    def run(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.sessions += 1
            with conn:
                while not self.stopping.wait(self.every):
                    try:
                        conn.send(b"2")
                    except OSError:
                        break

    def stop(self):
        self.stopping.set()
        self.join(5)
        self.sock.close()


def test_dribbling_smarthost_times_out(make_daemon):
    peer = Dribbler()
    try:
        d = relay_daemon(make_daemon, smarthost="127.0.0.1:%d" % peer.port, binary=TEST_BIN,
                         env={"PICOMAIL_REPLY_MS": "1000"})
        t0 = time.monotonic()
        submit(d, ["carol@example.net"], message("dribble"))
        wait_for(lambda: "4.4.2 timeout waiting" in d.log(), 6, "the reply timeout")
        took = time.monotonic() - t0
        assert took < 4, "timed out only after %.1f s" % took
        # The run ends (retry) once its rewritten envelope is durable.
        wait_for(lambda: d.events("retry"), 5, "the run's end")
        q = mailq(d)
        assert len(q) == 1 and q[0][5][0][0] == "carol@example.net"
        assert "timeout" in q[0][5][0][1]
        assert d.alive()
    finally:
        peer.stop()
