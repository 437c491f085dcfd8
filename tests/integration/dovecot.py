"""Dovecot's imap binary (Debian's dovecot-imapd) as a reference: the same
Maildir files read by it in PREAUTH mode, so that picomail's FETCH answers
(ENVELOPE, BODYSTRUCTURE, sections) can be compared with a mature server's.

Dovecot will not run as root: its copy of the Maildir belongs to nobody, and
the binary runs as nobody (mail_uid).  Nothing listens: the commands go to its
standard input.  Every run is bounded.
"""

import os
import pwd
import shutil
import subprocess

IMAP = "/usr/lib/dovecot/imap"


def available():
    return os.access(IMAP, os.X_OK)


def run(workdir, messages, commands, timeout=30):
    """Puts messages (bytes, as the files hold them) in new/ of a Maildir
    of Dovecot's, runs commands (strings, tagged by the caller) after SELECT
    INBOX, and returns its output as bytes."""
    base = os.path.join(workdir, "dovecot")
    shutil.rmtree(base, ignore_errors=True)
    mail = os.path.join(base, "mail")
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(mail, sub))
    for i, data in enumerate(messages):
        # Names in delivery order, as a delivery agent would give them.
        with open(os.path.join(mail, "new", "%d.M%dP1.oracle" % (1700000000 + i, i)), "wb") as f:
            f.write(data)
    conf = os.path.join(base, "dovecot.conf")
    with open(conf, "w") as f:
        f.write("mail_location = maildir:%s\nprotocols = imap\nlog_path = %s/log\nssl = no\n"
                "base_dir = %s/run\nstate_dir = %s/state\nmail_uid = nobody\n"
                "mail_gid = nogroup\nfirst_valid_uid = 0\nfirst_valid_gid = 0\n"
                % (mail, base, base, base))
    nobody = pwd.getpwnam("nobody")
    for root, dirs, files in os.walk(base):
        for n in dirs + files:
            os.chown(os.path.join(root, n), nobody.pw_uid, nobody.pw_gid)
    os.chown(base, nobody.pw_uid, nobody.pw_gid)
    script = "s SELECT INBOX\r\n" + "".join(c + "\r\n" for c in commands) + "z LOGOUT\r\n"
    env = {"USER": "alice", "HOME": base, "PATH": "/usr/bin:/bin"}
    p = subprocess.run([IMAP, "-c", conf], input=script.encode(), capture_output=True,
                       env=env, timeout=timeout)
    assert b"* BYE" in p.stdout, "dovecot imap failed: %r %r" % (p.stdout[-500:], p.stderr[-500:])
    return p.stdout
