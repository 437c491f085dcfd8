#!/usr/bin/python3
"""relaypeer.py - a recording SMTP peer (aiosmtpd) for the relay tests.

Run by tests/integration/relaytest.py as its own process (stopped by its
PID) with Debian's /usr/bin/python3 and python3-aiosmtpd:

    relaypeer.py --port P --out DIR [--host 127.0.0.1]
                 [--cert PEM --key PEM]   offer STARTTLS with this certificate
                 [--require-starttls]     530 to MAIL before STARTTLS
                 [--implicit-tls]         TLS from the first byte (465)
                 [--auth USER:PASSWORD]   AUTH required, only these credentials
                 [--auth-mech LOGIN]      offer only this mechanism (repeatable)
                 [--oauth-tokens FILE]    offer XOAUTH2 and OAUTHBEARER, AUTH required:
                                          the access tokens accepted now, one a line,
                                          read at each AUTH (a token endpoint rewrites it)
                 [--oauth-user USER]      the account those tokens are for
                 [--refuse-basic]         PLAIN/LOGIN answered "550 5.7.30 Basic
                                          authentication is not supported ..." 
                 [--fail-data N]          451 4.3.0 to the first N DATA
                 [--reject-rcpt ADDR]     550 5.1.1 to RCPT ADDR (repeatable)
                 [--defer-rcpt ADDR]      450 4.2.0 to RCPT ADDR, the first time only
                 [--reject-data]          554 5.6.0 to every DATA
                 [--sleep-data S]         sleep S seconds before answering DATA ...
                 [--sleep-count K]        ... for the first K messages (default all)

Writes DIR/ready once it listens.  Every message it accepts (the 250 is
about to go out on a live connection) becomes DIR/msg-<pid>-<n>.json:
{"mail_from", "rcpt_tos", "data" (latin-1), "cipher", "auth", "peer"}.
DIR/events.log gets one line per event ("connect", "ehlo", "starttls",
"auth", "mail", "rcpt", "data-end", "aborted", "accepted",
"deferred", "rejected"), so a test can see what happened and when.
A connection that goes away while the handler sleeps is "aborted": the
message is not recorded (a real MTA discards it as well).
"""

import argparse
import asyncio
import base64
import collections
import itertools
import json
import os
import ssl
import sys
import time

from aiosmtpd.smtp import MISSING as MISSING_, SMTP, AuthResult, LoginPassword


class LongAuthSMTP(SMTP):
    """aiosmtpd with room for AUTH lines carrying an access token (RFC 4954
    allows 12288 octets; the stock limits are 512 and 1001)."""
    line_length_limit = 16384

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.command_size_limits = collections.defaultdict(lambda: 512)
        self.command_size_limits["AUTH"] = 16384


class Recorder:
    def __init__(self, out):
        self.out = out
        self.seq = itertools.count(1)
        self.events = open(os.path.join(out, "events.log"), "a", buffering=1)

    def event(self, what, detail=""):
        self.events.write("%.3f %s %s\n" % (time.time(), what, detail))

    def save(self, rec):
        name = "msg-%d-%04d.json" % (os.getpid(), next(self.seq))
        tmp = os.path.join(self.out, "." + name)
        with open(tmp, "w") as f:
            json.dump(rec, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(self.out, name))
        return name


def cipher_of(server):
    t = server.transport
    if t is None:
        return None
    c = t.get_extra_info("cipher")
    return c[0] if c else None


class Handler:
    def __init__(self, args, rec):
        self.args = args
        self.rec = rec
        self.data_count = 0
        self.deferred = set()

    # ---- OAuth2 (XOAUTH2, OAUTHBEARER RFC 7628) -----------------------------

    def _tokens(self):
        try:
            with open(self.args.oauth_tokens) as f:
                return set(l.strip() for l in f if l.strip())
        except OSError:
            return set()

    async def _oauth(self, server, args, mech):
        if len(args) > 1:
            blob = args[1]
        else:
            line = await server.challenge_auth("", encode_to_b64=False)
            if line is MISSING_:
                return AuthResult(success=False, handled=True)
            blob = base64.b64encode(line).decode()
        try:
            raw = base64.b64decode(blob, validate=True)
        except Exception:
            self.rec.event("auth", "%s undecodable" % mech)
            return AuthResult(success=False, handled=False, message="501 5.5.2 bad base64")
        fields = {}
        user = None
        if mech == "XOAUTH2":
            parts = raw.split(b"\x01")
            ok_shape = raw.endswith(b"\x01\x01")
        else:
            gs2, _, rest = raw.partition(b",\x01")
            ok_shape = gs2.startswith(b"n,a=") and raw.endswith(b"\x01\x01")
            user = gs2[4:].decode("latin-1").replace("=2C", ",").replace("=3D", "=")
            parts = rest.split(b"\x01")
        for p in parts:
            k, sep, v = p.partition(b"=")
            if sep:
                fields[k.decode("latin-1")] = v.decode("latin-1")
        if mech == "XOAUTH2":
            user = fields.get("user")
        auth = fields.get("auth", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        good = (ok_shape and token is not None and token in self._tokens()
                and user == self.args.oauth_user)
        self.rec.event("auth", "%s %s %s token=%s host=%s port=%s" % (
            mech, user, "ok" if good else "bad", (token or "-")[:12], fields.get("host", "-"),
            fields.get("port", "-")))
        if good:
            return AuthResult(success=True, auth_data={"mech": mech, "user": user,
                                                       "token": token})
        # RFC 7628 3.2.2: an error challenge, then the client's dummy response.
        status = {"status": "401" if mech == "OAUTHBEARER" else "400", "schemes": "bearer",
                  "scope": "https://mail.example/"}
        await server.push("334 " + base64.b64encode(json.dumps(status).encode()).decode())
        answer = (await server._reader.readline()).rstrip(b"\r\n")
        self.rec.event("auth-end", "%s %r" % (mech, answer))
        want = b"AQ==" if mech == "OAUTHBEARER" else b""
        if answer != want:
            return AuthResult(success=False, handled=False,
                              message="501 5.5.2 bad dummy response %r" % answer)
        return AuthResult(success=False, handled=False,
                          message="535 5.7.8 Username and Password not accepted")

    async def auth_XOAUTH2(self, server, args):
        return await self._oauth(server, args, "XOAUTH2")

    async def auth_OAUTHBEARER(self, server, args):
        return await self._oauth(server, args, "OAUTHBEARER")

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.rec.event("ehlo", "%s tls=%s" % (hostname, cipher_of(server)))
        return responses

    def handle_STARTTLS(self, server, session, envelope):
        # Called (not awaited) by aiosmtpd once the handshake is done.
        self.rec.event("starttls", "tls=%s" % cipher_of(server))
        return True

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.rec.event("mail", "<%s> tls=%s auth=%s" % (address, cipher_of(server),
                                                        session.authenticated))
        envelope.mail_from = address     # "<>" for the null reverse-path
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.args.reject_rcpt:
            self.rec.event("rcpt", "<%s> 550" % address)
            return "550 5.1.1 <%s>: no such user here" % address
        if address in self.args.defer_rcpt and address not in self.deferred:
            self.deferred.add(address)
            self.rec.event("rcpt", "<%s> 450" % address)
            return "450 4.2.0 <%s>: mailbox busy, try later" % address
        self.rec.event("rcpt", "<%s> 250" % address)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.data_count += 1
        n = self.data_count
        self.rec.event("data-end", "#%d %d bytes rcpts=%s" % (
            n, len(envelope.original_content or b""), ",".join(envelope.rcpt_tos)))
        if self.args.sleep_data and (self.args.sleep_count is None or n <= self.args.sleep_count):
            try:
                await asyncio.sleep(self.args.sleep_data)
            except asyncio.CancelledError:
                self.rec.event("aborted", "#%d connection lost while the reply waited" % n)
                raise
            if server.transport is None or server.transport.is_closing():
                self.rec.event("aborted", "#%d connection closed while the reply waited" % n)
                return "421 4.4.2 gone"
        if n <= self.args.fail_data:
            self.rec.event("deferred", "#%d" % n)
            return "451 4.3.0 try later"
        if self.args.reject_data:
            self.rec.event("rejected", "#%d" % n)
            return "554 5.6.0 content rejected"
        data = envelope.original_content or b""
        name = self.rec.save({
            # aiosmtpd keeps the null reverse-path as "<>": recorded as "".
            "mail_from": "" if envelope.mail_from == "<>" else envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "data": data.decode("latin-1"),
            "cipher": cipher_of(server),
            "auth": session.auth_data.login.decode("latin-1")
            if isinstance(session.auth_data, LoginPassword) else session.auth_data,
            "peer": list(session.peer) if session.peer else None,
            "helo": session.host_name,
        })
        self.rec.event("accepted", "#%d %s" % (n, name))
        return "250 2.0.0 OK: accepted as %s" % name


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--require-starttls", action="store_true")
    p.add_argument("--implicit-tls", action="store_true")
    p.add_argument("--auth")
    p.add_argument("--auth-mech", action="append", default=[])
    p.add_argument("--oauth-tokens")
    p.add_argument("--oauth-user")
    p.add_argument("--refuse-basic", action="store_true")
    p.add_argument("--fail-data", type=int, default=0)
    p.add_argument("--reject-rcpt", action="append", default=[])
    p.add_argument("--defer-rcpt", action="append", default=[])
    p.add_argument("--reject-data", action="store_true")
    p.add_argument("--sleep-data", type=float, default=0)
    p.add_argument("--sleep-count", type=int)
    args = p.parse_args()

    os.makedirs(args.out, exist_ok=True)
    rec = Recorder(args.out)
    handler = Handler(args, rec)

    ctx = None
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)

    kw = {"hostname": "peer.test", "data_size_limit": 64 << 20, "timeout": 30}
    oauth_mechs = {"XOAUTH2", "OAUTHBEARER"}
    if not args.oauth_tokens:
        # No OAuth2 unless asked for: those mechanisms are not offered.
        kw["auth_exclude_mechanism"] = list(oauth_mechs)
    if args.refuse_basic:
        def refuse(server, session, envelope, mechanism, auth_data):
            rec.event("auth", "%s refused-basic" % mechanism)
            return AuthResult(success=False, handled=False, message=(
                "550 5.7.30 Basic authentication is not supported for Client Submission"))
        kw.update(authenticator=refuse, auth_required=True, auth_require_tls=False)
    elif args.oauth_tokens:
        kw.update(authenticator=lambda *a: AuthResult(success=False, handled=False),
                  auth_required=True, auth_require_tls=not args.implicit_tls,
                  auth_exclude_mechanism=[m for m in ("PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER")
                                          if args.auth_mech and m not in args.auth_mech]
                  or (["PLAIN", "LOGIN"] if not args.auth_mech else []))
    if args.auth:
        user, _, password = args.auth.partition(":")

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (isinstance(auth_data, LoginPassword) and auth_data.login == user.encode()
                  and auth_data.password == password.encode())
            rec.event("auth", "%s %s %s" % (mechanism, auth_data.login.decode("latin-1")
                                            if isinstance(auth_data, LoginPassword) else "?",
                                            "ok" if ok else "bad"))
            # handled=False: aiosmtpd itself answers 535 to a failure.
            return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

        # With implicit TLS aiosmtpd does not know the session is encrypted
        # (it only counts STARTTLS): there, AUTH needs no further TLS.
        kw.update(authenticator=authenticator, auth_required=True,
                  auth_require_tls=not args.implicit_tls)
        if args.auth_mech:
            kw["auth_exclude_mechanism"] = [m for m in ("PLAIN", "LOGIN")
                                            if m not in args.auth_mech] + list(oauth_mechs)
    if ctx is not None and not args.implicit_tls:
        kw.update(tls_context=ctx, require_starttls=args.require_starttls)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def factory():
        rec.event("connect")
        return LongAuthSMTP(handler, loop=loop, **kw)

    server = loop.run_until_complete(loop.create_server(
        factory, host=args.host, port=args.port, reuse_address=True,
        ssl=ctx if args.implicit_tls else None))
    with open(os.path.join(args.out, "ready.tmp"), "w") as f:
        f.write("%d\n" % os.getpid())
    os.rename(os.path.join(args.out, "ready.tmp"), os.path.join(args.out, "ready"))
    try:
        loop.run_forever()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
