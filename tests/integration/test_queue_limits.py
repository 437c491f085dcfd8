"""Limits around the queue and the daemon's user, as a user meets them:
relayed mail is refused with 452 4.3.1 when the spool's free space is below
the floor (local mail still goes through), and run_as may not be root."""

import subprocess

from picotest import smtp_send


def test_relay_refused_below_the_free_space_floor(make_daemon):
    # No disk here has 200 GiB free: the floor (max_message_size + 1 MiB)
    # is out of reach, so relaying must be refused, temporarily.
    d = make_daemon(max_message_size="200G")
    with d.session() as c:
        c.expect("MAIL FROM:<sender@example.org>", "250")
        c.expect("RCPT TO:<someone@example.com>", "452 4.3.1")
        c.expect("RCPT TO:<alice@lan>", "250 2.1.5")
        c.expect("DATA", "354")
        c.send(b"Subject: local\r\n\r\nstill delivered\r\n.\r\n")
        assert c.reply().matches("250")
    assert len(d.maildir("alice").messages()) == 1
    assert "free space below the floor" in d.log()


def test_run_as_root_is_refused(make_daemon):
    d = make_daemon(start=False, run_as="root")
    d.write_config()
    r = subprocess.run([d.binary, "serve", "-C", d.conf_path, "-f"], capture_output=True,
                       timeout=10)
    assert r.returncode == 1
    assert b"run_as root is root" in r.stderr


def test_queue_quota_refuses_relayed_mail_once_full(make_daemon):
    # The smarthost is a closed port: the first message stays queued, and
    # its 6 KB fill the 4 KB quota, so the next relayed recipient waits.
    from picotest import free_port
    d = make_daemon(smarthost="127.0.0.1:%d" % free_port(), queue_max_size="4K",
                    retry_min="1h", retry_max="1h")
    body = b"Subject: big\r\n\r\n" + b"x" * 6000 + b"\r\n"
    with d.session() as c:
        c.expect("MAIL FROM:<sender@example.org>", "250")
        c.expect("RCPT TO:<someone@example.com>", "250")
        c.expect("DATA", "354")
        c.send(body + b".\r\n")
        assert c.reply().matches("250 2.0.0")
        c.expect("MAIL FROM:<sender@example.org>", "250")
        c.expect("RCPT TO:<other@example.com>", "452 4.3.1")
        c.expect("RCPT TO:<alice@lan>", "250")
    status = d.status()
    assert int(status["queue_length"]) == 1
    assert int(status["queue_bytes"]) > 4096


def test_system_ca_bundle_loads(make_daemon):
    """A device points ca_file at the whole system bundle (~200 KB, ~140
    certificates): the daemon must start with it, reading it in chunks."""
    import os
    import pytest
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    if not os.path.exists(bundle):
        pytest.skip("no %s (Debian package ca-certificates)" % bundle)
    from picotest import free_port
    from relaytest import dead_udp_port
    d = make_daemon(smarthost="smtp.example.test:%d starttls" % free_port(), ca_file=bundle,
                    resolver="127.0.0.1:%d" % dead_udp_port())
    assert d.alive()
    assert "ready" in d.log()
