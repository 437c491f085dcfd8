"""Not an open relay (issue 5): every classic trick from a client that may
not relay is refused, and nothing reaches the queue or the smarthost.

The daemon has `relay_from 10.0.0.0/8` and the client connects from
127.0.0.1, without AUTH.  Each line of the table is one RCPT in a fresh
session (after a good MAIL FROM), with the reply it must get: 554 5.7.1
for a remote domain, 553 5.7.1 for source routes, %-hacks and bang paths
(RFC 5321 3.6.1, 3.6.3), 501 for what is not a valid address (a trailing
dot, two @); a quoted local part holding an @ may get 501 or 553 5.7.1.  A smarthost (relaypeer.py) is
configured and listening, so anything that slipped through would arrive.
"""

import os
import time

import pytest

from picotest import assert_reply, message, stuff
from relaytest import Peer, Spool, queue_length, relay_daemon

DENIED = "554 5.7.1"
ROUTE = "553 5.7.1"
SYNTAX = "501"

# (RCPT argument, expected reply) -- "A|B" accepts either.
TRICKS = [
    ("<bob@remote.test>", DENIED),
    ("<bob@REMOTE.TEST>", DENIED),
    ("<bob@Remote.Test>", DENIED),
    ("<BOB@remote.test>", DENIED),
    ("<postmaster@remote.test>", DENIED),
    ("<POSTMASTER@REMOTE.TEST>", DENIED),
    ("<bob@sub.lan.remote.test>", DENIED),            # a local name inside a remote one
    ("<bob@lan.remote.test>", DENIED),
    ("<bob@remotelan>", DENIED),                      # "lan" as a suffix, not a label
    ("<bob@[192.0.2.1]>", DENIED + "|" + SYNTAX + "|550"),
    ("<bob@[IPv6:2001:db8::1]>", DENIED + "|" + SYNTAX + "|550"),
    # %-hacks: through a local domain to a remote one
    ("<bob%remote.test@lan>", ROUTE),
    ("<bob%remote.test@LAN>", ROUTE),
    ("<bob%remote.test@localhost>", ROUTE),
    ("<bob%remote.test%lan@lan>", ROUTE),
    ("<bob%remote.test>", ROUTE + "|" + SYNTAX),
    ("<\"bob%remote.test\"@lan>", ROUTE + "|550 5.1.1|" + SYNTAX),
    # bang paths
    ("<remote.test!bob@lan>", ROUTE),
    ("<remote.test!bob@LAN>", ROUTE),
    ("<remote.test!bob>", ROUTE + "|" + SYNTAX),
    ("<lan!remote.test!bob@lan>", ROUTE),
    # source routes (RFC 5321 4.1.1.3: "MUST NOT" be relied on; refused here)
    ("<@lan:bob@remote.test>", ROUTE),
    ("<@LAN:bob@remote.test>", ROUTE),
    ("<@remote.test:bob@lan>", ROUTE),
    ("<@lan,@remote.test:bob@remote.test>", ROUTE),
    ("<@[127.0.0.1]:bob@remote.test>", ROUTE),
    # Quoted local parts holding an @: valid RFC 5321 syntax, so a 553 5.7.1
    # (a routing attempt, refused) is as right as a 501; either way refused.
    ("<\"bob@remote.test\"@lan>", SYNTAX + "|" + ROUTE),
    ("<\"bob@remote.test\">", SYNTAX + "|" + ROUTE),
    ("<\"bob@remote.test\"@remote.test>", SYNTAX + "|" + ROUTE + "|" + DENIED),
    # other non-addresses
    ("<bob@remote.test@lan>", SYNTAX),
    ("<bob@lan@remote.test>", SYNTAX),
    # trailing dots
    ("<bob@remote.test.>", SYNTAX),
    ("<bob@lan.>", SYNTAX),
    ("<bob@REMOTE.TEST.>", SYNTAX),
    ("<bob.@remote.test>", SYNTAX + "|" + DENIED),
    # framing
    ("bob@remote.test", SYNTAX + "|" + DENIED),
    (" <bob@remote.test>", SYNTAX + "|" + DENIED),
    ("<bob@remote.test> NOTIFY=NEVER", "555|" + DENIED + "|" + SYNTAX),
    ("<bob@remote.test>\tX", "555|" + DENIED + "|" + SYNTAX),
]


pytestmark = pytest.mark.usefixtures("need_aiosmtpd")


def test_open_relay_battery(make_daemon, workdir):
    peer = Peer(os.path.join(workdir, "smarthost")).start()
    try:
        # greet_pause 0s: each trick is a new connection from a stranger,
        # and what is tested here is the relay check, not the pause.
        d = relay_daemon(make_daemon, "127.0.0.1:%d" % peer.port, relay_from="10.0.0.0/8",
                         greet_pause="0s")
        bad = []
        for arg, want in TRICKS:
            c = d.session()
            try:
                c.expect("MAIL FROM:<mallory@remote.test>", "250")
                r = c.cmd("RCPT TO:" + arg)
                if not r.matches(want):
                    bad.append("RCPT TO:%s\n    got  %r\n    want %s" % (arg, r, want))
                if r.code // 100 == 2:
                    # Accepted: see whether it would really go out.
                    c.expect("DATA", "354")
                    c.send(stuff(message("relay test %s" % arg)) + b".\r\n")
                    bad.append("    ... and DATA answered %r" % c.reply())
                else:
                    # The session goes on after the refusal.
                    c.expect("RSET", "250")
                    c.expect("NOOP", "250")
            finally:
                c.close()
        # A sender from a local domain changes nothing.
        c = d.session()
        c.expect("MAIL FROM:<alice@lan>", "250")
        c.expect("RCPT TO:<bob@remote.test>", DENIED)
        # Local addresses are still fine, whatever their case.
        c.expect("RCPT TO:<alice@LAN>", "250")
        c.expect("RCPT TO:<postmaster>", "250")
        c.expect("DATA", "354")
        c.send(stuff(message("local only")) + b".\r\n")
        assert_reply(c.reply(), "250", "a local message from an outside client")
        c.close()

        time.sleep(1.0)        # anything queued would have been tried by now
        assert not bad, "open relay tricks not refused as expected:\n" + "\n".join(bad)
        sp = Spool(d)
        assert sp.names("msg") == [] and sp.names("env") == [], \
            "queued: msg=%r env=%r" % (sp.names("msg"), sp.names("env"))
        assert queue_length(d) == 0
        assert peer.messages() == [] and not peer.events("mail"), peer.describe()
        # alice@LAN and postmaster (an alias of alice): one user, one copy.
        assert len(d.maildir("alice").messages()) == 1
    finally:
        peer.stop()


def test_relay_from_network_may_relay(make_daemon, workdir):
    """The counterpart: the same daemon with 127.0.0.0/8 in relay_from."""
    peer = Peer(os.path.join(workdir, "smarthost")).start()
    try:
        d = relay_daemon(make_daemon, "127.0.0.1:%d" % peer.port, relay_from="10.0.0.0/8 127.0.0.0/8")
        c = d.session()
        c.expect("MAIL FROM:<alice@lan>", "250")
        c.expect("RCPT TO:<bob@REMOTE.TEST>", "250")
        c.expect("RCPT TO:<bob%remote.test@lan>", ROUTE)      # refused even here
        c.expect("RCPT TO:<@lan:bob@remote.test>", ROUTE)
        c.expect("DATA", "354")
        c.send(stuff(message("allowed")) + b".\r\n")
        assert_reply(c.reply(), "250 2.0.0", "relayed message")
        c.close()
        got = peer.wait_messages(1)
        assert [r.lower() for r in got[0]["rcpt_tos"]] == ["bob@remote.test"], got[0]
    finally:
        peer.stop()
