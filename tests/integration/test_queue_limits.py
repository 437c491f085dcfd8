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
