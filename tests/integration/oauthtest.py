"""Helpers for the OAuth2 smarthost tests (test_oauth*.py).

The smarthost is relaypeer.py (aiosmtpd) with STARTTLS under a certificate
of the test CA (tlstest.Pki, SAN test.lan), offering XOAUTH2 and
OAUTHBEARER and accepting only the access tokens listed in a file
(--oauth-tokens): a token endpoint (oauthpeer.py) or the test rewrites it.
A dnsmasq on a loopback port resolves test.lan to 127.0.0.1.

TokenCommand   a /bin/sh program for smarthost_token_command whose output
               and exit status the test sets through files, counting its runs.
Endpoint       oauthpeer.py, the fake token endpoint (HTTPS, test CA), steered
               through its state.json.
Pki            a test CA and one server certificate for test.lan (EC P-256,
               made in a tenth of a second: tlstest.Pki makes every kind).
oauth_file()   writes the smarthost_oauth file (0600 unless told).
oauth_daemon() a picomail relaying through the peer with OAuth2.

Every wait is bounded; every process is stopped by its PID.
"""

import json
import os
import stat
import subprocess
import time

from picotest import free_port
from relaytest import PY, relay_daemon, stop_pid

HERE = os.path.dirname(os.path.abspath(__file__))
ENDPOINT = os.path.join(HERE, "oauthpeer.py")
CLIENT_ID = "picomail-test"

USER = "alice@example.com"

SCRIPT = r"""#!/bin/sh
# The test's token command: prints out.N at its Nth run (else out), after
# sleeping `sleep` seconds if that file exists; exits with the status in rc.
d=$(dirname "$0")
n=$(( $(cat "$d/runs" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$d/runs"
[ -f "$d/sleep" ] && sleep "$(cat "$d/sleep")"
if [ -f "$d/out.$n" ]; then cat "$d/out.$n"; else cat "$d/out"; fi
exit "$(cat "$d/rc" 2>/dev/null || echo 0)"
"""


class Pki:
    """ca: the CA certificate; cert["rsa"] and key["rsa"] (named so for
    tlstest.Pki's users; the key is EC P-256): test.lan's."""

    def __init__(self, dir):
        def run(*args):
            p = subprocess.run(["openssl"] + list(args), cwd=dir, capture_output=True, timeout=60)
            assert p.returncode == 0, p.stderr.decode(errors="replace")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
            "-subj", "/CN=picomail oauth test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=test.lan")
        with open(os.path.join(dir, "server.ext"), "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:test.lan\n"
                    "extendedKeyUsage=serverAuth\n")
        run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "30", "-extfile", "server.ext")
        self.ca = os.path.join(dir, "ca.pem")
        self.cert = {"rsa": os.path.join(dir, "server.pem")}
        self.key = {"rsa": os.path.join(dir, "server.key")}


class TokenCommand:
    """The program and the files that steer it, in dir."""

    def __init__(self, dir):
        self.dir = dir
        os.makedirs(dir, exist_ok=True)
        self.path = os.path.join(dir, "token.sh")
        with open(self.path, "w") as f:
            f.write(SCRIPT)
        os.chmod(self.path, 0o755)
        self.set("tok-1\n")

    def _write(self, name, text):
        p = os.path.join(self.dir, name)
        with open(p + ".tmp", "w" if isinstance(text, str) else "wb") as f:
            f.write(text)
        os.rename(p + ".tmp", p)

    def set(self, out, rc=0, run=None):
        """What the program prints (at every run, or at run number run)."""
        self._write("out" if run is None else "out.%d" % run, out)
        self._write("rc", "%d\n" % rc)

    def sleep(self, seconds):
        self._write("sleep", "%s\n" % seconds)

    def runs(self):
        try:
            with open(os.path.join(self.dir, "runs")) as f:
                return int(f.read().strip() or 0)
        except OSError:
            return 0


def oauth_file(dir, mode=0o600, **keys):
    """The smarthost_oauth file: user (USER unless given) and the other
    keys given, in that order; its path."""
    keys.setdefault("user", USER)
    p = os.path.join(dir, "oauth")
    with open(p, "w") as f:
        f.write("# written by tests/integration/oauthtest.py\n")
        for k, v in keys.items():
            if v is not None:
                f.write("%s %s\n" % (k, v))
    os.chmod(p, mode)
    return p


def read_oauth_file(path):
    out = {}
    with open(path) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                k, _, v = line.strip().partition(" ")
                out[k] = v.strip()
    return out


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def set_tokens(peer, *tokens):
    """The access tokens the peer accepts from now on."""
    p = peer.opts["oauth_tokens"]
    with open(p + ".tmp", "w") as f:
        f.write("".join(t + "\n" for t in tokens))
    os.rename(p + ".tmp", p)


def oauth_daemon(make_daemon, dns, peer, ca, oauth, mech="xoauth2", command=None,
                 flag="starttls", extra=(), **conf):
    lines = ["ca_file %s" % ca, "smarthost_auth_mech %s" % mech,
             "smarthost_oauth %s" % oauth]
    if command is not None:
        lines.append("smarthost_token_command %s" % command)
    lines.extend(extra)
    return relay_daemon(make_daemon, ("test.lan:%d %s" % (peer.port, flag)).strip(),
                        resolver=dns.resolver, extra=lines, **conf)


def auth_events(peer):
    """[(mech, user, verdict, token prefix, host, port)] of the peer's AUTHs."""
    out = []
    for _, ev, detail in peer.events("auth"):
        w = detail.split()
        if len(w) >= 6:
            out.append((w[0], w[1], w[2], w[3][6:], w[4][5:], w[5][5:]))
        else:
            out.append(tuple(w))
    return out


class Endpoint:
    """oauthpeer.py on 127.0.0.1:port with cert/key; its state in out."""

    def __init__(self, out, cert, key, port=None, **state):
        self.out = out
        os.makedirs(out, exist_ok=True)
        self.port = port or free_port()
        self.cert, self.key = cert, key
        self.proc = None
        st = {"client_id": CLIENT_ID, "client_secret": None, "refresh_tokens": ["rt-0"],
              "rotate": False, "expires_in": 3600, "mode": "ok"}
        st.update(state)
        self.write(st)

    def url(self, path="/token", host="test.lan"):
        return "https://%s:%d%s" % (host, self.port, path)

    def write(self, st):
        p = os.path.join(self.out, "state.json")
        with open(p + ".tmp", "w") as f:
            json.dump(st, f)
        os.rename(p + ".tmp", p)

    def state(self):
        with open(os.path.join(self.out, "state.json")) as f:
            return json.load(f)

    def set(self, **kw):
        st = self.state()
        st.update(kw)
        self.write(st)

    def start(self, timeout=10):
        ready = os.path.join(self.out, "ready")
        if os.path.exists(ready):
            os.unlink(ready)
        self.logf = open(os.path.join(self.out, "endpoint.log"), "ab")
        self.proc = subprocess.Popen([PY, ENDPOINT, "--port", str(self.port), "--out", self.out,
                                      "--cert", self.cert, "--key", self.key],
                                     stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("oauthpeer did not start on port %d" % self.port)
            time.sleep(0.02)
        return self

    def stop(self):
        stop_pid(self.proc)
        if getattr(self, "logf", None):
            self.logf.close()
            self.logf = None

    def events(self, path=None):
        try:
            with open(os.path.join(self.out, "events.log")) as f:
                ev = [json.loads(l) for l in f if l.strip()]
        except OSError:
            return []
        return [e for e in ev if path is None or e["path"] == path]

    def grants(self, grant="refresh_token"):
        return [e for e in self.events("/token") if e["form"].get("grant_type", "").endswith(grant)]
