"""The sendmail command line: `picomail sendmail` (and the binary called as
`sendmail`), mailq, queue flush/delete, with the daemon running (SMTP over
<spool>/submit) and stopped (a durable drop into the spool, delivered when
the daemon starts).  Every test checks the exit status, the delivered files
and what is left in the spool."""

import email
import email.utils
import hashlib
import os
import re
import shutil
import subprocess
import threading
import time

import pytest

from picotest import BIN, free_port, skip_if_sanitized

MiB = 1024 * 1024

EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_NOUSER = 67
EX_TEMPFAIL = 75


# ---------------------------------------------------------------- helpers


def sendmail(d, *args, data=b"", binary=None, env=None, timeout=30, name=None):
    """Runs `picomail sendmail -C <conf> args...` with data on stdin; with
    name, through a symlink of that name (argv[0] "sendmail", "mailq")."""
    e = dict(os.environ)
    e.pop("PICOMAIL_CONF", None)
    e.pop("PICOMAIL_FAULT", None)
    e.update(env or {})
    exe = binary or BIN
    if name:
        link = os.path.join(d.dir, "bin", name)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if not os.path.lexists(link):
            os.symlink(exe, link)
        argv = [link, "-C", d.conf_path] + list(args)
    else:
        argv = [exe, "sendmail", "-C", d.conf_path] + list(args)
    if isinstance(data, str):
        data = data.encode()
    return subprocess.run(argv, input=data, capture_output=True, timeout=timeout, env=e)


def tool(d, *args, timeout=15):
    """picomail mailq / queue ... -C <conf>."""
    return subprocess.run([BIN] + list(args) + ["-C", d.conf_path], capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def ok(p):
    assert p.returncode == 0, "exit %d\nstdout: %r\nstderr: %r" % (
        p.returncode, p.stdout, p.stderr)
    return p


def spool_ids(d, sub):
    path = os.path.join(d.spool, sub)
    if not os.path.isdir(path):
        return []
    return sorted(n for n in os.listdir(path) if not n.startswith("."))


def assert_spool_empty(d):
    for sub in ("tmp", "msg", "env"):
        assert spool_ids(d, sub) == [], "left in %s/%s: %r" % (d.spool, sub, spool_ids(d, sub))


def assert_spool_empties(d, timeout=5):
    """The daemon delivers what the spool holds, then the spool is empty.
    Both env/ and msg/ are waited for: the daemon removes a delivered
    message's envelope, then its file, and a look between the two unlinks
    sees the file still there."""
    deadline = time.monotonic() + timeout
    while (spool_ids(d, "env") or spool_ids(d, "msg")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert_spool_empty(d)


def delivered(d, user, n=1, timeout=0.0):
    """The files in user's new/ (waiting up to timeout for n of them),
    without the Received-from check: queued mail has no SMTP client."""
    deadline = time.monotonic() + timeout
    while True:
        msgs = d.maildir(user).messages(check=False)
        if len(msgs) >= n or time.monotonic() >= deadline:
            return msgs
        time.sleep(0.05)


def headers_of(data):
    """The header block of a stored file (LF line ends), unfolded."""
    head = data.split(b"\n\n", 1)[0].decode("latin-1")
    return email.message_from_string(head + "\n\n")


def body_of(data):
    return data.split(b"\n\n", 1)[1] if b"\n\n" in data else b""


def one(d, user):
    msgs = d.maildir(user).messages()   # via the daemon's SMTP: the full check
    assert len(msgs) == 1, "%s has %d messages" % (user, len(msgs))
    return msgs[0]


def read_env(d, qid):
    with open(os.path.join(d.spool, "env", qid)) as f:
        return f.read().splitlines()


def stopped_daemon(make_daemon, **conf):
    d = make_daemon(start=False, **conf)
    os.makedirs(d.spool, exist_ok=True)
    return d


SIMPLE = b"Subject: hello\n\nhello alice\n"


# ---------------------------------------------------------------- daemon running


def test_simple_message_adds_date_message_id_and_from(daemon):
    p = ok(sendmail(daemon, "alice@lan", data=SIMPLE))
    assert p.stdout == b"" and p.stderr == b"", "sendmail should be silent: %r %r" % (
        p.stdout, p.stderr)
    m = one(daemon, "alice")
    h = headers_of(m.body)
    assert h["Subject"] == "hello"
    assert len(h.get_all("From")) == 1 and len(h.get_all("Date")) == 1
    assert len(h.get_all("Message-ID")) == 1
    assert re.fullmatch(r"[^@\s<>]+@lan", h["From"]), h["From"]
    assert m.return_path == b"<" + h["From"].encode() + b">"
    assert email.utils.parsedate_to_datetime(h["Date"]) is not None
    assert abs(email.utils.parsedate_to_datetime(h["Date"]).timestamp() - time.time()) < 60
    assert re.fullmatch(r"<\d+\.\d+\.[0-9a-f]+@test\.lan>", h["Message-ID"]), h["Message-ID"]
    # Our trace field comes first in the message, under the daemon's.
    assert m.body.startswith(b"Received: by test.lan (picomail sendmail, uid %d); "
                             % os.getuid()), m.body[:200]
    assert body_of(m.data) == b"hello alice\n"
    assert_spool_empty(daemon)


def test_existing_from_date_message_id_are_kept(daemon):
    msg = (b"From: Someone <someone@example.org>\nDate: Mon, 1 Jan 2024 10:00:00 +0000\n"
           b"Message-Id: <fixed@example.org>\nSubject: kept\n\nbody\n")
    ok(sendmail(daemon, "-F", "Ignored Name", "alice@lan", data=msg))
    h = headers_of(one(daemon, "alice").body)
    assert h.get_all("From") == ["Someone <someone@example.org>"]
    assert h.get_all("Date") == ["Mon, 1 Jan 2024 10:00:00 +0000"]
    assert h.get_all("Message-ID") == ["<fixed@example.org>"]


def test_called_as_sendmail_by_name(daemon):
    ok(sendmail(daemon, "alice@lan", data=SIMPLE, name="sendmail"))
    assert body_of(one(daemon, "alice").data) == b"hello alice\n"


def test_bare_local_name_and_alias(daemon):
    # "alice" alone is local; "team" is an alias for alice and bob.
    ok(sendmail(daemon, "alice", "team", data=SIMPLE))
    assert len(daemon.maildir("alice").messages()) == 1   # once, not twice
    assert len(daemon.maildir("bob").messages()) == 1


def test_recipient_lists_in_one_argument(daemon):
    ok(sendmail(daemon, "alice@lan, Bob <bob@lan>", data=SIMPLE))
    one(daemon, "alice")
    one(daemon, "bob")


def test_t_takes_to_cc_bcc_and_drops_bcc(daemon):
    msg = (b"To: Alice Example <alice@lan>,\n"
           b"  (folded) \n"
           b"Cc: undisclosed-recipients:;\n"
           b"Bcc: bob@lan\n"
           b"Subject: with bcc\n\nsecret list\n")
    ok(sendmail(daemon, "-t", data=msg))
    for user in ("alice", "bob"):
        m = one(daemon, user)
        assert not re.search(rb"(?mi)^bcc:", m.data), "%s's copy shows Bcc:\n%r" % (user, m.data)
        assert b"bob@lan" not in m.data.split(b"\n\n")[0].split(b"Received: by")[1]
        assert body_of(m.data) == b"secret list\n"
    assert_spool_empty(daemon)


def test_t_adds_command_line_recipients(daemon):
    ok(sendmail(daemon, "-t", "bob@lan", data=b"To: alice@lan\nSubject: both\n\nx\n"))
    one(daemon, "alice")
    one(daemon, "bob")


def test_t_group_and_quoted_display_names(daemon):
    msg = (b'To: "Example, Alice" <alice@lan>, friends: Bob <bob@lan>;\n'
           b"Subject: groups\n\nx\n")
    ok(sendmail(daemon, "-t", data=msg))
    one(daemon, "alice")
    one(daemon, "bob")


@pytest.mark.parametrize("args,data", [
    ([], SIMPLE),
    (["-t"], SIMPLE),
    (["-t"], b"To: undisclosed-recipients:;\nSubject: x\n\nx\n"),
])
def test_no_recipients_is_a_usage_error(daemon, args, data):
    p = sendmail(daemon, *args, data=data)
    assert p.returncode == EX_USAGE, p
    assert b"no recipients" in p.stderr
    assert daemon.all_files() == []
    assert_spool_empty(daemon)


@pytest.mark.parametrize("rcpt", ["a@@lan", "alice@lan.", "<alice@lan", "a b@lan",
                                  "user%other@lan@x", "@a:b@lan"])
def test_bad_recipient_address_is_a_usage_error(daemon, rcpt):
    p = sendmail(daemon, rcpt, data=SIMPLE)
    assert p.returncode == EX_USAGE, (rcpt, p)
    assert daemon.all_files() == []
    assert_spool_empty(daemon)


def test_bad_address_in_to_header_with_t(daemon):
    p = sendmail(daemon, "-t", data=b"To: alice@lan, bad@@lan\nSubject: x\n\nx\n")
    assert p.returncode == EX_DATAERR, p
    assert b"To:" in p.stderr
    assert daemon.all_files() == []


@pytest.mark.parametrize("flags", [
    ["-f", "fred@example.org"],
    ["-ffred@example.org"],
    ["-r", "fred@example.org"],
    ["-f", "<fred@example.org>"],
])
def test_f_sets_the_envelope_sender_and_from(daemon, flags):
    ok(sendmail(daemon, *flags, "-F", "Fred Flintstone", "alice@lan", data=SIMPLE))
    m = one(daemon, "alice")
    assert m.return_path == b"<fred@example.org>"
    assert headers_of(m.body).get_all("From") == ["Fred Flintstone <fred@example.org>"]


def test_F_with_specials_is_quoted(daemon):
    ok(sendmail(daemon, "-F", 'Smith, "Jo" \\ Co.', "alice@lan", data=SIMPLE))
    h = headers_of(one(daemon, "alice").body)
    name, addr = email.utils.parseaddr(h["From"])
    assert name == 'Smith, "Jo" \\ Co.', h["From"]
    assert addr.endswith("@lan")


def test_null_sender(daemon):
    ok(sendmail(daemon, "-f", "<>", "alice@lan", data=SIMPLE))
    m = one(daemon, "alice")
    assert m.return_path == b"<>"
    assert re.fullmatch(r"[^@\s<>]+@lan", headers_of(m.body)["From"])


@pytest.mark.parametrize("name", [
    "x\nBcc: bob@lan",
    "x\r\nBcc: bob@lan",
    "x\rBcc: bob@lan",
    "x\n\nbody injected",
    "x\x01y\x1bz\x7f",
])
def test_header_injection_through_F_is_impossible(daemon, name):
    ok(sendmail(daemon, "-F", name, "alice@lan", data=SIMPLE))
    m = one(daemon, "alice")
    head = m.data.split(b"\n\n", 1)[0]
    assert not re.search(rb"(?mi)^bcc:", head), head
    assert body_of(m.data) == b"hello alice\n"
    froms = [l for l in head.split(b"\n") if l.lower().startswith(b"from:")]
    assert len(froms) == 1 and not re.search(rb"[\x00-\x1f\x7f]", froms[0]), froms
    assert daemon.maildir("bob").messages() == []


def test_header_injection_through_F_with_t(daemon):
    ok(sendmail(daemon, "-t", "-F", "x\nTo: bob@lan", data=b"To: alice@lan\n\nx\n"))
    one(daemon, "alice")
    assert daemon.maildir("bob").messages() == []


@pytest.mark.parametrize("sender", [
    "fred@example.org\nBcc: bob@lan",
    "fred@example.org\r\n",
    "fred@exa mple.org",
    "a@@b",
    "fred@example.org>\nX: y",
])
def test_bad_f_is_a_usage_error(daemon, sender):
    p = sendmail(daemon, "-f", sender, "alice@lan", data=SIMPLE)
    assert p.returncode == EX_USAGE, (sender, p)
    assert daemon.all_files() == []
    assert_spool_empty(daemon)


def test_bare_lf_and_crlf_input_store_the_same(daemon):
    text = b"Subject: lines\n\none\ntwo\n\nthree\n"
    ok(sendmail(daemon, "alice@lan", data=text))
    ok(sendmail(daemon, "bob@lan", data=text.replace(b"\n", b"\r\n")))
    a, b = one(daemon, "alice"), one(daemon, "bob")
    assert body_of(a.data) == body_of(b.data) == b"one\ntwo\n\nthree\n"
    assert headers_of(a.body)["Subject"] == headers_of(b.body)["Subject"] == "lines"


def test_bare_cr_and_nul_are_dropped_and_last_line_ended(daemon):
    ok(sendmail(daemon, "alice@lan", data=b"Subject: cr\n\na\rb\x00c\r\nno final newline"))
    m = one(daemon, "alice")
    assert body_of(m.data) == b"abc\nno final newline\n"


def test_no_header_block_is_all_body(daemon):
    ok(sendmail(daemon, "alice@lan", data=b"just a line of text\nand another\n"))
    m = one(daemon, "alice")
    assert body_of(m.data) == b"just a line of text\nand another\n"
    assert headers_of(m.body)["From"]


@pytest.mark.parametrize("rest,subject,body", [
    (b"Subject: mbox\n\nbody\n", "mbox", b"body\n"),
    (b"\nbody only\n", None, b"body only\n"),
])
def test_mbox_from_line_first_is_dropped(daemon, rest, subject, body):
    ok(sendmail(daemon, "alice@lan", data=b"From root  Mon Jan  1 00:00:00 2024\n" + rest))
    m = one(daemon, "alice")
    assert b"From root" not in m.data
    assert headers_of(m.body)["Subject"] == subject
    assert body_of(m.data) == body


def test_dot_line_ends_input_without_i(daemon):
    ok(sendmail(daemon, "alice@lan", data=b"Subject: dots\n\nline1\n..two\n.\nnot sent\n"))
    assert body_of(one(daemon, "alice").data) == b"line1\n..two\n"


def test_dot_line_crlf_ends_input_without_i(daemon):
    ok(sendmail(daemon, "alice@lan", data=b"Subject: dots\r\n\r\nline1\r\n.\r\nnot sent\r\n"))
    assert body_of(one(daemon, "alice").data) == b"line1\n"


@pytest.mark.parametrize("flag", ["-i", "-oi", "-O", "-ti"])
def test_dot_line_kept_with_i(daemon, flag):
    args = [flag] if flag != "-O" else ["-O", "IgnoreDots=true"]
    body = b"line1\n.\n..\n.hidden\n. \nend\n.\n"
    if flag == "-ti":
        ok(sendmail(daemon, *args, data=b"To: alice@lan\nSubject: dots\n\n" + body))
    else:
        ok(sendmail(daemon, *args, "alice@lan", data=b"Subject: dots\n\n" + body))
    # Dot-stuffed on the SMTP socket, unstuffed by the daemon: as given.
    assert body_of(one(daemon, "alice").data) == body


def test_cron_style_invocations(daemon):
    # cronie: sendmail -FCronDaemon -i -odi -oem -oi -t -f root
    cronie = (b'From: "(Cron Daemon)" <root>\n'
              b"To: alice\n"
              b"Subject: Cron <root@router> /usr/sbin/backup\n"
              b"MIME-Version: 1.0\n"
              b"Content-Type: text/plain; charset=UTF-8\n"
              b"Content-Transfer-Encoding: 8bit\n"
              b"X-Cron-Env: <SHELL=/bin/sh>\n"
              b"\n"
              b"backup: done\n.\nr\xc3\xa9sum\xc3\xa9\n")
    ok(sendmail(daemon, "-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root",
                data=cronie))
    m = one(daemon, "alice")
    assert body_of(m.data) == b"backup: done\n.\nr\xc3\xa9sum\xc3\xa9\n"
    assert headers_of(m.body).get_all("From") == ['"(Cron Daemon)" <root>']
    assert m.return_path == b"<root@lan>"
    # Debian's cron: sendmail -i -FCronDaemon -B8BITMIME -oem bob
    ok(sendmail(daemon, "-i", "-FCronDaemon", "-B8BITMIME", "-oem", "bob",
                data=b"Subject: Cron <bob@router> ls\n\nout\n", name="sendmail"))
    assert body_of(one(daemon, "bob").data) == b"out\n"
    # A plain `sendmail -ti` from a script, LF line ends.
    ok(sendmail(daemon, "-ti", data=b"To: bob\nSubject: script\n\nline\n"))
    assert len(daemon.maildir("bob").messages()) == 2


def test_ignored_sendmail_flags(daemon):
    ok(sendmail(daemon, "-U", "-N", "never", "-B", "8BITMIME", "-R", "hdrs", "-V", "envid",
                "-X", "/dev/null", "-odb", "-oem", "-om", "-bm", "-G", "-n", "-m", "--",
                "alice@lan", data=SIMPLE))
    one(daemon, "alice")


def test_unsupported_mode_is_a_usage_error(daemon):
    p = sendmail(daemon, "-bd", data=b"")
    assert p.returncode == EX_USAGE


def test_refused_recipient_reported_others_delivered(daemon):
    p = ok(sendmail(daemon, "alice@lan", "nosuchuser@lan", data=SIMPLE))
    assert b"nosuchuser@lan" in p.stderr and b"550" in p.stderr, p.stderr
    one(daemon, "alice")
    assert_spool_empty(daemon)


def test_all_recipients_refused_is_nouser(daemon):
    p = sendmail(daemon, "nosuchuser@lan", data=SIMPLE)
    assert p.returncode == EX_NOUSER, p
    assert b"nosuchuser@lan" in p.stderr
    assert daemon.all_files() == []
    assert_spool_empty(daemon)


def test_headers_too_large(daemon):
    big = b"".join(b"X-Filler-%05d: %s\n" % (i, b"y" * 60) for i in range(1200))
    p = sendmail(daemon, "alice@lan", data=big + b"\nbody\n")
    assert p.returncode == EX_DATAERR, p
    assert b"headers too large" in p.stderr
    assert daemon.all_files() == []
    assert_spool_empty(daemon)


def test_long_first_body_line_is_not_a_header(daemon):
    line = b"x" * (100 * 1024) + b" no colon here\n"
    ok(sendmail(daemon, "alice@lan", data=line))
    assert body_of(one(daemon, "alice").data) == line


def test_message_over_max_message_size_refused(make_daemon):
    d = make_daemon(max_message_size="1M")
    p = sendmail(d, "alice@lan", data=b"Subject: big\n\n" + (b"y" * 99 + b"\n") * 20000)
    assert p.returncode == EX_DATAERR, p
    assert b"too large" in p.stderr
    assert d.all_files() == []
    assert_spool_empty(d)


def vm_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


@skip_if_sanitized("peak RSS of sendmail and the daemon")
def test_10mb_from_stdin_in_bounded_memory(make_daemon):
    d = make_daemon(max_message_size="20M")
    ok(sendmail(d, "bob@lan", data=b"Subject: warm\n\n" + (b"w" * 78 + b"\n") * 4000))
    base = d.vm("VmHWM")
    line = b"z" * 78 + b"\n"
    chunk = line * 13443                    # about 1 MiB
    head = b"Subject: ten megabytes\n\n"
    e = dict(os.environ)
    e.pop("PICOMAIL_CONF", None)
    argv = [BIN, "sendmail", "-C", d.conf_path, "alice@lan"]
    timef = os.path.join(d.dir, "time.out")
    use_time = os.access("/usr/bin/time", os.X_OK)
    if use_time:
        # GNU time reports the peak RSS over the whole run, SMTP included.
        argv = ["/usr/bin/time", "-o", timef, "-f", "%M"] + argv
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=e)
    peak = 0
    p.stdin.write(head)
    want = hashlib.sha256(head.split(b"\n\n")[1])
    for i in range(10):
        p.stdin.write(chunk)
        want.update(chunk)
        if not use_time:
            peak = max(peak, vm_hwm_kib(p.pid))   # before EOF: the body phase
    p.stdin.close()
    err = p.stderr.read()
    p.wait(60)
    assert p.returncode == 0, err
    if use_time:
        with open(timef) as f:
            peak = max(peak, int(f.read().split()[-1]))
    print("sendmail peak RSS %d KiB; daemon VmHWM %d -> %d KiB" % (peak, base, d.vm("VmHWM")))
    assert 0 < peak < 2048, "sendmail used %d KiB for a 10 MB message" % peak
    assert d.vm("VmHWM") - base < 1024, "the daemon grew from %d to %d KiB" % (
        base, d.vm("VmHWM"))
    m = one(d, "alice")
    assert len(m.data) > 10 * 1000 * 1000
    assert hashlib.sha256(body_of(m.data)).hexdigest() == want.hexdigest()
    assert_spool_empty(d)


def test_4xx_from_the_daemon_queues_and_the_daemon_delivers(make_daemon):
    # The second RCPT gets 452 4.5.3: the whole message goes to the queue
    # (nothing was delivered yet), and the running daemon, told about it
    # on its control socket ("queued ID"), delivers it without a restart.
    d = make_daemon(max_recipients="1")
    p = ok(sendmail(d, "alice@lan", "bob@lan", data=SIMPLE))
    assert p.stderr == b"", p.stderr
    assert len(delivered(d, "alice", 1, timeout=10)) == 1, "not delivered\n" + d.log()
    assert len(delivered(d, "bob", 1, timeout=5)) == 1
    assert body_of(d.maildir("bob").messages(check=False)[0].data) == b"hello alice\n"
    assert_spool_empties(d)


# ---------------------------------------------------------------- -bs


def test_bs_speaks_smtp_through_the_daemon(daemon):
    script = (b"EHLO script.lan\r\nMAIL FROM:<root@lan>\r\nRCPT TO:<alice@lan>\r\nDATA\r\n"
              b"Subject: bs\r\n\r\nvia -bs\r\n.\r\nQUIT\r\n")
    p = ok(sendmail(daemon, "-bs", data=script))
    codes = re.findall(rb"(?m)^(\d{3}) ", p.stdout)
    assert codes == [b"220", b"250", b"250", b"250", b"354", b"250", b"221"], p.stdout
    assert body_of(one(daemon, "alice").data) == b"via -bs\n"


def test_bs_with_the_daemon_down(make_daemon):
    d = stopped_daemon(make_daemon)
    p = sendmail(d, "-bs", data=b"EHLO x\r\nQUIT\r\n")
    assert p.returncode == EX_TEMPFAIL
    assert p.stdout == b"421 4.3.0 mail system not running\r\n"


# ---------------------------------------------------------------- daemon stopped


def test_daemon_stopped_message_goes_to_the_spool_then_delivered(make_daemon):
    d = stopped_daemon(make_daemon)
    p = ok(sendmail(d, "-f", "fred@example.org", "alice@lan", "team", data=SIMPLE))
    assert p.stderr == b"", p.stderr
    ids = spool_ids(d, "env")
    assert len(ids) == 1 and spool_ids(d, "msg") == ids and spool_ids(d, "tmp") == []
    qid = ids[0]
    env = read_env(d, qid)
    assert env[0] == "picomail-queue 1" and env[-1] == "end", env
    fields = dict(l.split(" ", 1) for l in env[1:5])
    assert fields["sender"] == "fred@example.org"
    assert fields["attempts"] == "0" and fields["next"] == "0"
    assert abs(int(fields["arrival"]) - time.time()) < 60
    assert [l for l in env if l.startswith("rcpt ")] == ["rcpt PU alice@lan", "rcpt PU team@lan"]
    with open(os.path.join(d.spool, "msg", qid), "rb") as f:
        data = f.read()
    assert data.startswith(b"Received: by test.lan (picomail sendmail, uid %d); " % os.getuid())
    assert b"\r" not in data and data.endswith(b"\nhello alice\n")
    h = headers_of(data)
    assert h["From"] == "fred@example.org" and h["Date"] and h["Message-ID"]

    # mailq reads the spool itself.
    q = ok(tool(d, "mailq"))
    lines = q.stdout.decode().splitlines()
    assert re.fullmatch(r"%s \d+ \d+ <fred@example\.org>" % qid, lines[0]), lines
    assert lines[1:] == ["    <alice@lan>", "    <team@lan>"], lines

    # The daemon takes it at start.
    d.start()
    got = delivered(d, "alice", 1, timeout=10)
    assert len(got) == 1, "queued message not delivered at start\n" + d.log()
    assert body_of(got[0].data) == b"hello alice\n"
    assert got[0].return_path == b"<fred@example.org>"
    assert len(delivered(d, "bob", 1, timeout=5)) == 1   # team = alice, bob
    assert_spool_empties(d)


def test_daemon_stopped_t_and_bcc(make_daemon):
    d = stopped_daemon(make_daemon)
    ok(sendmail(d, "-t", data=b"To: alice@lan\nBcc: bob@lan\nSubject: q\n\nx\n"))
    qid = spool_ids(d, "env")[0]
    assert [l for l in read_env(d, qid) if l.startswith("rcpt ")] == [
        "rcpt PU alice@lan", "rcpt PU bob@lan"]
    with open(os.path.join(d.spool, "msg", qid), "rb") as f:
        assert not re.search(rb"(?mi)^bcc:", f.read())


def test_daemon_stopped_10mb_streams_to_the_spool(make_daemon):
    d = stopped_daemon(make_daemon, max_message_size="20M")
    body = (b"q" * 99 + b"\n") * (100 * 1024)
    ok(sendmail(d, "alice@lan", data=b"Subject: big\n\n" + body))
    qid = spool_ids(d, "env")[0]
    with open(os.path.join(d.spool, "msg", qid), "rb") as f:
        assert body_of(f.read()) == body


def test_mailq_empty_queue(make_daemon):
    d = stopped_daemon(make_daemon)
    p = ok(tool(d, "mailq"))
    assert p.stdout == b"Mail queue is empty\n"
    p = ok(sendmail(d, "-bp"))
    assert p.stdout == b"Mail queue is empty\n"
    p = ok(sendmail(d, data=b"", name="mailq"))
    assert p.stdout == b"Mail queue is empty\n"


def test_queue_delete_with_the_daemon_stopped(make_daemon):
    d = stopped_daemon(make_daemon)
    ok(sendmail(d, "alice@lan", data=SIMPLE))
    qid = spool_ids(d, "env")[0]
    p = ok(tool(d, "queue", "delete", qid))
    assert p.stdout.decode().strip() == "deleted %s" % qid
    assert_spool_empty(d)
    p = tool(d, "queue", "delete", qid)
    assert p.returncode == EX_NOINPUT and b"no such message" in p.stdout, p
    assert b"Mail queue is empty" in ok(tool(d, "mailq")).stdout


@pytest.mark.parametrize("qid", ["../env/x", "..", ".hidden", "a/b", "", "x" * 64, "id;rm"])
def test_queue_delete_refuses_bad_ids(make_daemon, qid):
    d = stopped_daemon(make_daemon)
    p = tool(d, "queue", "delete", qid)
    assert p.returncode == EX_USAGE, (qid, p)


def test_queue_flush_with_the_daemon_stopped(make_daemon):
    d = stopped_daemon(make_daemon)
    p = tool(d, "queue", "flush")
    assert p.returncode == EX_TEMPFAIL
    assert b"not running" in p.stderr
    assert sendmail(d, "-q").returncode == EX_TEMPFAIL


def test_commit_failure_is_tempfail_and_leaves_nothing(make_daemon, picomail_test_bin):
    d = stopped_daemon(make_daemon)
    p = sendmail(d, "alice@lan", data=SIMPLE, binary=picomail_test_bin,
                 env={"PICOMAIL_FAULT": "fsync:1:EIO"})
    assert p.returncode == EX_TEMPFAIL, p
    assert b"cannot queue" in p.stderr
    assert_spool_empty(d)


def test_write_failure_is_tempfail_and_leaves_nothing(make_daemon, picomail_test_bin):
    d = stopped_daemon(make_daemon)
    p = sendmail(d, "alice@lan", data=b"Subject: w\n\n" + b"a" * 100000 + b"\n",
                 binary=picomail_test_bin, env={"PICOMAIL_FAULT": "write:1:ENOSPC"})
    assert p.returncode == EX_TEMPFAIL, p
    assert_spool_empty(d)


def test_unwritable_spool_with_the_daemon_down_is_tempfail(make_daemon):
    d = stopped_daemon(make_daemon, spool="/proc/picomail-no-spool")
    p = sendmail(d, "alice@lan", data=SIMPLE)
    assert p.returncode == EX_TEMPFAIL, p


# ---------------------------------------------------------------- daemon's queue via control


def test_queue_commands_with_the_daemon_running(make_daemon):
    # A remote recipient with a resolver that never answers stays queued.
    d = make_daemon(resolver="127.0.0.1:%d" % free_port())
    ok(sendmail(d, "someone@example.com", data=SIMPLE))
    deadline = time.monotonic() + 5
    while not spool_ids(d, "env") and time.monotonic() < deadline:
        time.sleep(0.05)
    ids = spool_ids(d, "env")
    assert len(ids) == 1, "the remote message is not queued\n" + d.log()
    qid = ids[0]
    q = ok(tool(d, "mailq"))
    assert qid in q.stdout.decode() and "someone@example.com" in q.stdout.decode(), q.stdout
    # The same listing; its age and attempt notes may move between the two.
    assert normalized_mailq(ok(sendmail(d, "-bp")).stdout) == normalized_mailq(q.stdout)
    ok(tool(d, "queue", "flush"))
    ok(sendmail(d, "-q"))
    deadline = time.monotonic() + 10
    while True:
        p = tool(d, "queue", "delete", qid)
        if p.returncode != EX_TEMPFAIL or time.monotonic() > deadline:
            break
        time.sleep(0.2)   # busy: a delivery attempt is running
    assert p.returncode == 0 and b"deleted" in p.stdout, p
    assert_spool_empty(d)
    p = tool(d, "queue", "delete", qid)
    assert p.returncode == EX_NOINPUT, p


def normalized_mailq(out):
    """mailq output without what changes by the second: age, notes."""
    lines = []
    for line in out.decode().splitlines():
        line = re.sub(r" \([^)]*\)$", "", line)
        lines.append(re.sub(r"^(\S+ -?\d+) \d+ ", r"\1 AGE ", line))
    return lines


def test_mailq_same_format_running_and_stopped(make_daemon):
    d = make_daemon(resolver="127.0.0.1:%d" % free_port())
    ok(sendmail(d, "-f", "fred@example.org", "someone@example.com", "other@example.net",
                data=SIMPLE))
    deadline = time.monotonic() + 5
    while not spool_ids(d, "env") and time.monotonic() < deadline:
        time.sleep(0.05)
    running = normalized_mailq(ok(tool(d, "mailq")).stdout)
    assert d.stop() == 0
    stopped = normalized_mailq(ok(tool(d, "mailq")).stdout)
    qid = spool_ids(d, "env")[0]
    assert stopped == ["%s %d AGE <fred@example.org>" % (
        qid, os.path.getsize(os.path.join(d.spool, "msg", qid))),
        "    <someone@example.com>", "    <other@example.net>"], stopped
    assert running == stopped
