"""TLS (issue 4) with the clients people use, each on its own TLS stack:
openssl s_client (OpenSSL), swaks (Perl IO::Socket::SSL), msmtp and mpop
(GnuTLS), fetchmail (OpenSSL).  Every certificate is verified against the
test CA made at test time (tlstest.Pki); the negotiated protocol and cipher
are checked where the client reports them.

Each client runs in its own process group with a bound; a hung client is
killed by its PID and the test fails.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile

import pytest

from picotest import Stored, message
from pop3test import PASSWORD, deliver, mailbox
from tlstest import SUITE, SUITES, Pki, tls_daemon, wait_pool_used

CLIENT_TIMEOUT = 20


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="pm-pki-", dir="/tmp")
    try:
        yield Pki(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def need(tool):
    if shutil.which(tool) is None:
        pytest.fail("%s is not installed: bash board/common/deps.sh pkg:%s" % (tool, tool),
                    pytrace=False)


def run(argv, stdin=b"", env=None, timeout=CLIENT_TIMEOUT):
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        out, err = p.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail("%s hung for %d s and was killed\nstdout: %s\nstderr: %s" % (
            argv[0], timeout, out.decode("latin-1")[-3000:], err.decode("latin-1")[-3000:]))
    return p.returncode, out.decode("latin-1") + err.decode("latin-1")


def write_private(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def received_with(m):
    r = re.search(rb"\bwith (\S+) id ", m.received)
    return r.group(1).decode() if r else None


def only(d, user):
    msgs = d.maildir(user).messages()
    assert len(msgs) == 1, "%s has %d messages, want 1" % (user, len(msgs))
    return msgs[0]


# --------------------------------------------------------------------------
# openssl s_client


def s_client(pki, port, *args, stdin=b"", ca=None):
    need("openssl")
    return run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-brief", "-crlf",
                "-ign_eof", "-CAfile", ca or pki.ca, "-verify_return_error",
                "-verify_hostname", "test.lan"] + list(args), stdin=stdin)


MODES = {
    # mode: (port attribute, s_client arguments, what to say, what the server must answer)
    "smtp-starttls": ("sub", ["-starttls", "smtp"], b"EHLO client.lan\nQUIT\n",
                      ["250-AUTH PLAIN LOGIN", "221 2.0.0"]),
    "smtps": ("subs", [], b"EHLO client.lan\nQUIT\n",
              ["220 test.lan ESMTP", "250-AUTH PLAIN LOGIN", "221 2.0.0"]),
    "pop3-stls": ("pop", ["-starttls", "pop3"], b"CAPA\nQUIT\n", ["\nUSER", "+OK"]),
    "pop3s": ("pops", [], b"CAPA\nQUIT\n", ["+OK picomail", "\nUSER"]),
}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_s_client_protocol_and_cipher(make_daemon, pki, kind, mode):
    d = tls_daemon(make_daemon, pki, kind=kind)
    attr, args, say, answers = MODES[mode]
    rc, out = s_client(pki, getattr(d, attr), *args, stdin=say)
    assert rc == 0, "s_client exit %d:\n%s" % (rc, out)
    for want in ("Protocol version: TLSv1.2", "Ciphersuite: %s" % SUITE[kind],
                 "Verification: OK", "Server Temp Key: X25519"):
        assert want in out, "s_client %s: no %r in:\n%s" % (mode, want, out)
    for want in answers:
        assert want in out, "s_client %s: the server did not answer %r:\n%s" % (mode, want, out)
    if mode == "smtp-starttls":
        assert "250-STARTTLS" not in out.split("CONNECTION ESTABLISHED", 1)[1], \
            "STARTTLS offered again under TLS:\n" + out
    if mode == "pop3-stls":
        assert "\nSTLS" not in out.split("CONNECTION ESTABLISHED", 1)[1], \
            "STLS listed under TLS:\n" + out


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_s_client_each_suite_and_curve(make_daemon, pki, kind):
    d = tls_daemon(make_daemon, pki, kind=kind)
    for suite in SUITES[kind]:
        rc, out = s_client(pki, d.subs, "-cipher", suite, stdin=b"QUIT\n")
        assert rc == 0 and "Ciphersuite: %s" % suite in out, "-cipher %s:\n%s" % (suite, out)
    # a client without X25519 gets P-256
    rc, out = s_client(pki, d.subs, "-curves", "P-256", stdin=b"QUIT\n")
    assert rc == 0 and "Server Temp Key: ECDH, prime256v1" in out, out


REFUSED = {
    # case: s_client arguments (SECLEVEL=0 so that OpenSSL itself offers them)
    "tls1.0": ["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"],
    "tls1.1": ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
    "tls1.3-only": ["-tls1_3"],
    "cbc-only": ["-tls1_2", "-cipher",
                 "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:ECDHE-RSA-AES128-SHA256:"
                 "ECDHE-RSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:"
                 "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:AES128-SHA:AES256-SHA:"
                 "AES128-SHA256:AES256-SHA256@SECLEVEL=0"],
    "static-rsa-gcm": ["-tls1_2", "-cipher", "AES128-GCM-SHA256:AES256-GCM-SHA384"],
    # (3DES and RC4: this OpenSSL cannot even offer them, "no cipher match")
}


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_s_client_old_protocols_and_ciphers_refused(make_daemon, pki, kind):
    d = tls_daemon(make_daemon, pki, kind=kind)
    failures = []
    for case, args in sorted(REFUSED.items()):
        before = len(d.events("connect"))
        rc, out = s_client(pki, d.subs, *args, stdin=b"QUIT\n")
        reached = len(d.events("connect")) > before
        if rc == 0 or "CONNECTION ESTABLISHED" in out:
            failures.append("%s: handshake succeeded:\n%s" % (case, out))
        elif not reached:
            failures.append("%s: the ClientHello never reached the server:\n%s" % (case, out))
        elif "no ciphers available" in out or "no protocols available" in out:
            failures.append("%s: s_client could not offer it:\n%s" % (case, out))
    assert not failures, "\n".join(failures)
    assert wait_pool_used(d, 0) == 0, "TLS slots not given back after refused handshakes"
    rc, out = s_client(pki, d.subs, stdin=b"QUIT\n")
    assert rc == 0, "a good client after the refused ones:\n" + out


# --------------------------------------------------------------------------
# swaks


@pytest.mark.parametrize("kind,tls,mech", [
    ("rsa", "--tls", "PLAIN"), ("rsa", "--tls", "LOGIN"), ("rsa", "--tlsc", "PLAIN"),
    ("rsa", "--tlsc", "LOGIN"), ("ec", "--tls", "LOGIN"), ("ec", "--tlsc", "PLAIN")])
def test_swaks_tls_auth(make_daemon, pki, kind, tls, mech):
    need("swaks")
    d = tls_daemon(make_daemon, pki, kind=kind)
    port = d.sub if tls == "--tls" else d.subs
    rc, out = run(["swaks", "--server", "127.0.0.1:%d" % port, tls, "--tls-verify",
                   "--tls-ca-path", pki.ca, "--auth", mech, "--auth-user", "alice",
                   "--auth-password", PASSWORD, "--from", "alice@lan", "--to", "bob@lan",
                   "--helo", "client.lan", "--timeout", "10",
                   "--header", "Subject: swaks %s %s" % (tls, mech)])
    assert rc == 0, "swaks exit %d:\n%s" % (rc, out)
    assert "TLS started with cipher TLSv1.2:%s" % SUITE[kind] in out, out
    assert "235 2.7.0" in out, out
    if mech == "LOGIN":
        assert "334 VXNlcm5hbWU6" in out and "334 UGFzc3dvcmQ6" in out, out
    m = only(d, "bob")
    assert m.return_path == b"<alice@lan>"
    assert received_with(m) == "ESMTPSA"
    assert b"(using TLSv1.2 with cipher %s)" % SUITE[kind].encode() in m.received


def test_swaks_auth_needs_tls(make_daemon, pki):
    need("swaks")
    d = tls_daemon(make_daemon, pki)
    rc, out = run(["swaks", "--server", "127.0.0.1:%d" % d.sub, "--auth", "PLAIN",
                   "--auth-user", "alice", "--auth-password", PASSWORD, "--from", "alice@lan",
                   "--to", "bob@lan", "--helo", "client.lan", "--timeout", "10"])
    assert rc != 0, "swaks authenticated in clear:\n" + out
    assert "250-AUTH" not in out, "AUTH offered in clear:\n" + out
    assert d.maildir("bob").messages() == []


# --------------------------------------------------------------------------
# msmtp (GnuTLS)


def msmtp(d, pki, workdir, account, to="bob@lan", subject="msmtp", trust=None):
    need("msmtp")
    home = os.path.join(workdir, "msmtp")
    os.makedirs(home, exist_ok=True)
    rc = os.path.join(home, "msmtprc")
    common = ("    host 127.0.0.1\n    user alice\n    password %s\n    from alice@lan\n"
              "    domain client.lan\n" % PASSWORD)
    write_private(rc, (
        "defaults\n"
        "    tls on\n"
        "    tls_trust_file %s\n"
        "    timeout 10\n"
        "    logfile %s/log\n"
        "account starttls-plain\n    port %d\n    tls_starttls on\n    auth plain\n%s"
        "account starttls-login\n    port %d\n    tls_starttls on\n    auth login\n%s"
        "account tls-plain\n    port %d\n    tls_starttls off\n    auth plain\n%s"
        "account tls-login\n    port %d\n    tls_starttls off\n    auth login\n%s"
    ) % (trust or pki.ca, home, d.sub, common, d.sub, common, d.subs, common, d.subs, common))
    env = dict(os.environ, HOME=home)
    return run(["msmtp", "-C", rc, "-a", account, "-d", to],
               stdin=b"Subject: %s\n\nsent by msmtp\n" % subject.encode(), env=env)


@pytest.mark.parametrize("kind,account", [
    ("rsa", "starttls-plain"), ("rsa", "starttls-login"), ("rsa", "tls-plain"),
    ("rsa", "tls-login"), ("ec", "starttls-login"), ("ec", "tls-plain")])
def test_msmtp_submits_with_tls_and_auth(make_daemon, pki, workdir, kind, account):
    d = tls_daemon(make_daemon, pki, kind=kind)
    rc, out = msmtp(d, pki, workdir, account, subject=account)
    assert rc == 0, "msmtp exit %d:\n%s" % (rc, out)
    assert "235 2.7.0" in out, out
    m = only(d, "bob")
    assert m.return_path == b"<alice@lan>"
    assert received_with(m) == "ESMTPSA"
    assert b"(using TLSv1.2 with cipher %s)" % SUITE[kind].encode() in m.received
    assert m.body.endswith(b"\n\nsent by msmtp\n"), m.body


def test_msmtp_serverinfo_and_untrusted_certificate(make_daemon, pki, workdir):
    d = tls_daemon(make_daemon, pki, kind="ec")
    need("msmtp")
    rc, out = run(["msmtp", "--serverinfo", "--host=127.0.0.1", "--port=%d" % d.sub,
                   "--tls=on", "--tls-starttls=on", "--tls-trust-file=%s" % pki.ca,
                   "--timeout=10"], env=dict(os.environ, HOME=workdir))
    assert rc == 0, out
    assert "(TLS1.2)-(ECDHE-X25519)-(ECDSA-SHA256)-(AES-128-GCM)" in out, out
    # trusting another CA: the client refuses the certificate, nothing is sent
    rc, out = msmtp(d, pki, workdir, "tls-plain", trust=pki.inter)
    assert rc != 0, "msmtp accepted a certificate it cannot verify:\n" + out
    assert d.maildir("bob").messages() == []
    assert wait_pool_used(d, 0) == 0


# --------------------------------------------------------------------------
# fetchmail (OpenSSL) and mpop (GnuTLS): STLS and POP3S


def deliver_two(d, user, tag):
    sent = [message("%s %d" % (tag, i), body="line %d of %s\r\n" % (i, tag)) for i in (1, 2)]
    for data in sent:
        deliver(d, user, data)
    stored = mailbox(d, user)
    assert len(stored) == 2
    return [Stored(m.path).body for m in stored]


def assert_bodies_in(fetched, bodies, what):
    for b in bodies:
        assert sum(1 for f in fetched if b in f) == 1, "%s: a message is missing or twice:\n" \
            "want (LF) %r\nfetched: %r" % (what, b, [f[:300] for f in fetched])


@pytest.mark.parametrize("kind,mode", [("rsa", "stls"), ("rsa", "pop3s"), ("ec", "stls"),
                                       ("ec", "pop3s")])
def test_fetchmail_over_tls(make_daemon, pki, workdir, kind, mode):
    need("fetchmail")
    d = tls_daemon(make_daemon, pki, kind=kind)
    bodies = deliver_two(d, "bob", "fetchmail %s" % mode)
    home = os.path.join(workdir, "fm")
    out = os.path.join(home, "out")
    os.makedirs(out)
    rcfile = os.path.join(home, "fetchmailrc")
    port, tls = (d.pop, "sslproto 'tls1.2+'") if mode == "stls" else (d.pops, "ssl")
    write_private(rcfile, (
        "set no bouncemail\n"
        "poll 127.0.0.1 service %d protocol pop3 auth password timeout 10\n"
        "    user \"bob\" there with password \"%s\" is \"bob\" here\n"
        "    %s sslcertck sslcertfile %s sslcommonname test.lan no rewrite nokeep\n"
        "    mda \"/bin/sh -c 'cat > %s/msg.$$'\"\n") % (port, PASSWORD, tls, pki.ca, out))
    env = dict(os.environ, HOME=home, LC_ALL="C")
    env.pop("FETCHMAILHOME", None)
    rc, log = run(["fetchmail", "--nosyslog", "-v", "-f", rcfile, "--pidfile",
                   os.path.join(home, "pid"), "-i", os.path.join(home, "ids")], env=env)
    assert rc == 0, "fetchmail exit %d:\n%s" % (rc, log[-4000:])
    assert "using protocol TLSv1.2, cipher %s" % SUITE[kind] in log, log[-4000:]
    if mode == "stls":
        assert "POP3> STLS" in log and "POP3> USER" in log.split("POP3> STLS", 1)[1], log[-4000:]
    fetched = []
    for n in sorted(os.listdir(out)):
        with open(os.path.join(out, n), "rb") as f:
            fetched.append(f.read())
    assert len(fetched) == 2, log[-4000:]
    assert_bodies_in(fetched, bodies, "fetchmail %s" % mode)
    assert mailbox(d, "bob") == [], "fetchmail's DELE + QUIT over TLS left messages"


@pytest.mark.parametrize("kind,mode,auth", [("rsa", "stls", "user"), ("rsa", "pop3s", "plain"),
                                            ("ec", "stls", "plain"), ("ec", "pop3s", "user")])
def test_mpop_over_tls(make_daemon, pki, workdir, kind, mode, auth):
    need("mpop")
    d = tls_daemon(make_daemon, pki, kind=kind)
    bodies = deliver_two(d, "alice", "mpop %s" % mode)
    home = os.path.join(workdir, "mpop")
    os.makedirs(home)
    rcfile, mbox = os.path.join(home, "mpoprc"), os.path.join(home, "mbox")
    write_private(rcfile, (
        "defaults\n"
        "tls on\n"
        "tls_trust_file %s\n"
        "timeout 10\n"
        "uidls_file %s/uidls\n"
        "delivery mbox %s\n"
        "keep off\n"
        "account test\n"
        "host 127.0.0.1\n"
        "port %d\n"
        "tls_starttls %s\n"
        "auth %s\n"
        "user alice\n"
        "password %s\n") % (pki.ca, home, mbox, d.pop if mode == "stls" else d.pops,
                            "on" if mode == "stls" else "off", auth, PASSWORD))
    env = dict(os.environ, HOME=home)
    rc, log = run(["mpop", "-C", rcfile, "-d", "test"], env=env)
    assert rc == 0, "mpop exit %d:\n%s" % (rc, log[-4000:])
    if mode == "stls":
        assert "--> STLS" in log, log[-4000:]
    assert ("--> USER alice" if auth == "user" else "--> AUTH PLAIN") in log, log[-4000:]
    with open(mbox, "rb") as f:
        data = f.read()
    fetched = [b"From " + part for part in data.split(b"\nFrom ")]
    assert len(fetched) == 2, data[:2000]
    assert_bodies_in(fetched, bodies, "mpop %s" % mode)
    assert mailbox(d, "alice") == []
    rc, out = run(["mpop", "-C", rcfile, "--serverinfo", "test"], env=env)
    assert rc == 0, out
    assert "(TLS1.2)-(ECDHE-X25519)-(%s-SHA256)-(AES-128-GCM)" % (
        "RSA" if kind == "rsa" else "ECDSA") in out, out
