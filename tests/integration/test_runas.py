"""picomail check catches what serve would refuse (issue 13, part 3).

check loads everything serve loads and, as root, becomes run_as in a child
to read every file and enter every directory as the daemon will once it
has dropped root: a spool behind a directory run_as cannot enter stops
serve, and check says so first, naming the directory, its owner and mode,
and the commands that fix it; a key only root can read lets serve start
(it loads keys as root) but a reload would fail, so check refuses it and
serve warns.  Run as root (run_as needs it); skipped otherwise.
"""

import os
import pwd
import grp

import pytest

from picotest import DaemonExited

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="run_as needs root")

RUN_AS = "nobody"


def group_of(user):
    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


def open_daemon(make_daemon, workdir, **conf):
    """A daemon whose directories run_as can reach (the test's directory
    is 0700 root by default)."""
    os.chmod(workdir, 0o755)
    d = make_daemon(start=False, run_as=RUN_AS, **conf)
    os.chmod(d.dir, 0o755)
    for path in (d.conf_path, d.users_path, d.aliases_path):
        os.chown(path, 0, pwd.getpwnam(RUN_AS).pw_gid)
        os.chmod(path, 0o640)
    return d


def check(d):
    p = d.run("check", "-C", d.conf_path)
    return p.returncode, (p.stdout + p.stderr).decode("latin-1")


def test_check_passes_what_run_as_can_reach(make_daemon, workdir):
    d = open_daemon(make_daemon, workdir)
    rc, out = check(d)
    assert rc == 0, out
    d.start()
    assert d.alive()


def test_spool_behind_a_closed_directory(make_daemon, workdir):
    """serve would drop root and then find no way into its spool."""
    d = open_daemon(make_daemon, workdir)
    private = os.path.join(workdir, "private")
    os.makedirs(private, mode=0o700)
    d.settings["spool"] = os.path.join(private, "spool")
    d.write_config()
    rc, out = check(d)
    assert rc == 1, out
    assert "run_as %s cannot enter %s (root:root 0700)" % (RUN_AS, private) in out, out
    assert "chgrp %s %s && chmod g+x %s" % (group_of(RUN_AS), private, private) in out, out
    with pytest.raises(DaemonExited) as e:
        d.start()
    assert e.value.returncode == 1
    assert "cannot enter %s" % private in e.value.log, e.value.log


def test_key_only_root_can_read(make_daemon, workdir):
    """Loaded as root at start, read again as run_as on a reload: check
    refuses it, serve starts and warns, and the fix it names works."""
    key = os.path.join(workdir, "key.pem")
    cert = os.path.join(workdir, "cert.pem")
    import subprocess
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "30", "-subj", "/CN=test.lan"], check=True, capture_output=True,
                   timeout=60)
    os.chmod(key, 0o600)
    os.chmod(cert, 0o644)
    d = open_daemon(make_daemon, workdir, tls_cert=cert, tls_key=key)
    rc, out = check(d)
    assert rc == 1, out
    fix = "chgrp %s %s && chmod g+r %s" % (group_of(RUN_AS), key, key)
    assert "cannot read tls_key %s (root:root 0600)" % key in out and fix in out, out
    d.start()
    assert "cannot read tls_key %s" % key in d.log(), d.log()
    d.stop()
    os.chown(key, 0, pwd.getpwnam(RUN_AS).pw_gid)
    os.chmod(key, 0o640)
    rc, out = check(d)
    assert rc == 0, out


def test_configuration_run_as_cannot_read(make_daemon, workdir):
    d = open_daemon(make_daemon, workdir)
    os.chmod(d.conf_path, 0o600)
    rc, out = check(d)
    assert rc == 1 and "cannot read configuration %s" % d.conf_path in out, out


def test_relative_paths_are_refused(make_daemon):
    d = make_daemon(start=False, spool="spool")
    rc, out = check(d)
    assert rc == 1 and "spool: 'spool' is not an absolute path" in out, out


def test_no_such_run_as_user(make_daemon):
    d = make_daemon(start=False, run_as="no-such-user-here")
    rc, out = check(d)
    assert rc == 1 and "run_as user 'no-such-user-here' does not exist" in out, out
