#!/usr/bin/python3
"""oauthpeer.py - a fake OAuth2 token endpoint over HTTPS for the OAuth2
smarthost tests (test_oauth*.py).

Run by oauthtest.Endpoint as its own process (stopped by its PID) with
Debian's /usr/bin/python3, http.server and ssl:

    oauthpeer.py --port P --out DIR --cert PEM --key PEM [--host 127.0.0.1]

It serves, on loopback only:

    POST /token        grant_type=refresh_token (RFC 6749 6) and
                       grant_type=urn:ietf:params:oauth:grant-type:device_code
                       (RFC 8628 3.4)
    POST /devicecode   the device authorization request (RFC 8628 3.1)

What it does is read from DIR/state.json at each request, so a test
changes it while picomail runs (oauthtest.Endpoint.set):

    client_id, client_secret   what a request must carry (secret: null for none)
    refresh_tokens   [valid refresh tokens]
    rotate           a refresh answers a new refresh token, and the old one
                     stops working at once
    expires_in       the access token's lifetime in seconds (null: not said)
    tokens_file      the smarthost's --oauth-tokens file: each new access token
                     replaces its contents (the old one is dead), unless keep_old
    mode             "ok", or a hostile answer: "error" (HTTP 400 with error and
                     error_description from the state), "status" (HTTP 503, no
                     JSON), "slow" (nothing for 60 s), "drip" (a byte a second),
                     "huge" (a 1 MB body), "huge-chunked", "malformed" (JSON cut
                     short), "not-json", "bad-chunk", "no-length" (close-delimited
                     body), "gzip", "close" (closes without a word), "deep"
                     (JSON nested 50 deep), "escape" (an access token with \\u
                     escapes and a control character), "chunked" (a good answer,
                     chunked in pieces of 7)
    device           the device flow: {"pending": N authorization_pending
                     answers first, "slow_down": [poll numbers answered
                     slow_down], "deny": true (access_denied), "expire": true
                     (expired_token), "interval": I, "expires_in": E,
                     "uri_key": "verification_uri" or "verification_url"
                     (Google's spelling), "refresh": the refresh token given
                     (null: none), "user_code": the code shown}

Writes DIR/ready once it listens.  DIR/events.log gets one JSON line per
request: {"t", "path", "form", "mode", "status"}.  Access tokens are
"at-<n>", rotated refresh tokens "rt-<n>", numbered from DIR/counter.
"""

import argparse
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OUT = None
LOCK = threading.Lock()


def state():
    with open(os.path.join(OUT, "state.json")) as f:
        return json.load(f)


def save_state(st):
    p = os.path.join(OUT, "state.json")
    with open(p + ".tmp", "w") as f:
        json.dump(st, f)
    os.rename(p + ".tmp", p)


def next_number():
    p = os.path.join(OUT, "counter")
    try:
        with open(p) as f:
            n = int(f.read().strip() or 0) + 1
    except OSError:
        n = 1
    with open(p, "w") as f:
        f.write("%d\n" % n)
    return n


def event(**kw):
    kw["t"] = time.time()
    with open(os.path.join(OUT, "events.log"), "a") as f:
        f.write(json.dumps(kw) + "\n")


def write_tokens(st, token):
    p = st.get("tokens_file")
    if not p:
        return
    old = []
    if st.get("keep_old"):
        try:
            with open(p) as f:
                old = [l.strip() for l in f if l.strip()]
        except OSError:
            pass
    with open(p + ".tmp", "w") as f:
        f.write("".join(t + "\n" for t in old + [token]))
    os.rename(p + ".tmp", p)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "oauthpeer/1"

    def log_message(self, fmt, *args):
        pass

    def raw(self, data, delay=0):
        try:
            if delay:
                for b in data:
                    self.wfile.write(bytes([b]))
                    self.wfile.flush()
                    time.sleep(delay)
            else:
                self.wfile.write(data)
                self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    def reply(self, status, obj, mode="ok"):
        body = json.dumps(obj).encode()
        head = ("HTTP/1.1 %d X\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
                % status)
        if mode == "chunked":
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7])
                              for i in range(0, len(body), 7))
            self.raw(head.encode() + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
        else:
            self.raw(head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def hostile(self, mode, st):
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        good = json.dumps({"access_token": "at-h", "token_type": "Bearer",
                           "expires_in": 3600}).encode()
        if mode == "slow":
            time.sleep(60)
        elif mode == "drip":
            self.raw(head + b"Content-Length: %d\r\n\r\n" % len(good) + good, delay=1)
        elif mode == "huge":
            body = b'{"access_token":"' + b"a" * (1 << 20) + b'"}'
            self.raw(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        elif mode == "huge-chunked":
            self.raw(head + b"Transfer-Encoding: chunked\r\n\r\n" + b"1000\r\n" + b"a" * 4096 + b"\r\n"
                     + b"1000\r\n" + b"a" * 4096 + b"\r\n" + b"1000\r\n" + b"a" * 4096 + b"\r\n"
                     + b"1000\r\n" + b"a" * 4096 + b"\r\n" + b"1000\r\n" + b"a" * 4096 + b"\r\n0\r\n\r\n")
        elif mode == "malformed":
            body = good[:-5]
            self.raw(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        elif mode == "not-json":
            body = b"<html>Service Unavailable</html>"
            self.raw(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        elif mode == "bad-chunk":
            self.raw(head + b"Transfer-Encoding: chunked\r\n\r\n5\r\n" + good[:20] + b"\r\n0\r\n\r\n")
        elif mode == "no-length":
            self.raw(head + b"Connection: close\r\n\r\n" + good)
        elif mode == "gzip":
            self.raw(head + b"Content-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc")
        elif mode == "close":
            self.raw(b"")
        elif mode == "deep":
            body = b'{"x":' + b"[" * 50 + b"]" * 50 + b',"access_token":"at-d"}'
            self.raw(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        elif mode == "escape":
            body = b'{"access_token":"at\\u0041\\u001b[2J","token_type":"Bearer"}'
            self.raw(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        elif mode == "status":
            body = b"try later"
            self.raw(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n" % len(body)
                     + body)
        elif mode == "error":
            self.reply(400, {"error": st.get("error", "invalid_grant"),
                             "error_description": st.get("error_description",
                                                         "AADSTS70000: The grant is expired.")})
        else:
            self.raw(b"HTTP/1.1 500 unknown mode\r\nContent-Length: 0\r\n\r\n")

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode("latin-1") if n else ""
        form = dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
        with LOCK:
            st = state()
            mode = st.get("mode", "ok")
            event(path=self.path, form=form, mode=mode, ctype=self.headers.get("Content-Type"),
                  host=self.headers.get("Host"))
            if mode != "ok" and mode != "chunked":
                out = None
            else:
                out = self.answer(st, form)
        if out is None:
            self.hostile(mode, st)
            return
        status, obj = out
        self.reply(status, obj, mode)

    def client_ok(self, st, form):
        return (form.get("client_id") == st.get("client_id") and
                form.get("client_secret") == st.get("client_secret"))

    def tokens(self, st, refresh=None):
        n = next_number()
        at = "at-%d" % n
        out = {"access_token": at, "token_type": "Bearer"}
        if st.get("expires_in") is not None:
            out["expires_in"] = st["expires_in"]
        write_tokens(st, at)
        if refresh is not None:
            out["refresh_token"] = refresh
        return out

    def answer(self, st, form):
        if not self.client_ok(st, form):
            return 401, {"error": "invalid_client", "error_description": "unknown client"}
        if self.path == "/devicecode":
            d = st.get("device", {})
            d["polls"] = 0
            st["device"] = d
            save_state(st)
            return 200, {"device_code": "dc-secret", "user_code": d.get("user_code", "WDJB-MJHT"),
                         d.get("uri_key", "verification_uri"): "https://test.lan/device",
                         "verification_uri_complete": "https://test.lan/device?user_code=WDJB-MJHT",
                         "expires_in": d.get("expires_in", 900),
                         "interval": d.get("interval", 1)}
        if self.path != "/token":
            return 404, {"error": "not_found"}
        grant = form.get("grant_type")
        if grant == "refresh_token":
            rt = form.get("refresh_token")
            if rt not in st.get("refresh_tokens", []):
                return 400, {"error": "invalid_grant",
                             "error_description": "AADSTS700082: The refresh token has expired."}
            new = None
            if st.get("rotate"):
                new = "rt-%d" % next_number()
                st["refresh_tokens"] = [new]
                save_state(st)
            return 200, self.tokens(st, new)
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            d = st.get("device", {})
            if form.get("device_code") != "dc-secret":
                return 400, {"error": "invalid_grant"}
            d["polls"] = d.get("polls", 0) + 1
            save_state(st)
            if d["polls"] in d.get("slow_down", []):
                return 400, {"error": "slow_down"}
            if d.get("deny"):
                return 400, {"error": "access_denied", "error_description": "the user said no"}
            if d.get("expire"):
                return 400, {"error": "expired_token"}
            if d["polls"] <= d.get("pending", 0):
                return 400, {"error": "authorization_pending"}
            rt = d.get("refresh", "rt-device")
            if rt is not None:
                st["refresh_tokens"] = st.get("refresh_tokens", []) + [rt]
                save_state(st)
            return 200, self.tokens(st, rt)
        return 400, {"error": "unsupported_grant_type"}


def main():
    global OUT
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    args = p.parse_args()
    OUT = args.out
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer((args.host, args.port), Handler)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    with open(os.path.join(OUT, "ready.tmp"), "w") as f:
        f.write("%d\n" % os.getpid())
    os.rename(os.path.join(OUT, "ready.tmp"), os.path.join(OUT, "ready"))
    srv.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
