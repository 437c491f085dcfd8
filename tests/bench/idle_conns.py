"""idle_conns.py HOST PORT N READYFILE [HOLD_SECONDS]

Opens N TCP connections to an SMTP server, reads the greeting on each (so
the server has really taken every one into a session), writes "ready N" to
READYFILE, then holds the connections open doing nothing until SIGTERM
arrives or HOLD_SECONDS (default 60) pass.  Used by
tests/bench/bench.sh to measure the daemon's RSS with N idle sessions.

Exit 0 when all N greetings were 220, 1 otherwise (with a message on stderr).
"""

import os
import signal
import socket
import sys
import time


def read_greeting(sock, deadline):
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no greeting")
        sock.settimeout(left)
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the greeting")
        buf += chunk
        # A complete reply: a last line "NNN <text>\r\n".
        lines = buf.split(b"\r\n")
        for line in lines[:-1]:
            if len(line) == 3 or (len(line) >= 4 and line[3:4] == b" "):
                return line.decode("latin-1")


def main():
    host, port, n, ready = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    hold = float(sys.argv[5]) if len(sys.argv) > 5 else 60.0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    socks = []
    deadline = time.monotonic() + 10.0
    for i in range(n):
        s = socket.create_connection((host, port), timeout=5.0)
        socks.append(s)
        try:
            g = read_greeting(s, deadline)
        except (OSError, TimeoutError) as e:
            print("idle_conns: connection %d: %s" % (i + 1, e), file=sys.stderr)
            return 1
        if not g.startswith("220"):
            print("idle_conns: connection %d greeted with %r" % (i + 1, g), file=sys.stderr)
            return 1
    tmp = ready + ".tmp"
    with open(tmp, "w") as f:
        f.write("ready %d\n" % len(socks))
    os.rename(tmp, ready)
    # Sit until SIGTERM (sys.exit closes the sockets) or the hold time ends.
    end = time.monotonic() + hold
    while time.monotonic() < end:
        time.sleep(min(0.5, max(0.0, end - time.monotonic())))
    for s in socks:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
