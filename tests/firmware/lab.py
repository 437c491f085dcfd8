"""lab.py - an emulated router under qemu-system, driven from the host.

    g = Guest(board, workdir, disks={"data": path})
    g.start()                 # qemu under TCG; returns once the agent answers
    g.sh("picomail status")   # a script in the guest; its output (status 0 required)
    g.kill()                  # kill -9 of qemu: a power cut
    g.stop()                  # poweroff in the guest, then qemu's exit (bounded)

The guest's only link to the host is qemu's user-mode network with
restrict=on: hostfwd rules from 127.0.0.1 ports to the guest's SMTP (25),
submission (587) and POP3 (110), and one guestfwd rule from 10.0.2.25:25 in
the guest to the relay sink on the host's loopback (socat per connection).
Nothing else leaves the guest: no DNS server, no route out.  The control
channel is a virtio serial port (a second serial port, fw.ctl) whose host
end is a Unix socket in the work directory; the console goes to
WORKDIR/console.log.  Every process started here is stopped by its PID.
"""

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from boards import BOARDS  # noqa: E402
from picotest import free_port  # noqa: E402

IMAGES = os.path.join(ROOT, "build", "firmware")
RESULTS = os.path.join(IMAGES, "results")
GUEST_IP = "10.0.2.15"
SINK_IP = "10.0.2.25"

# Under TCG on two shared cores, everything takes longer than on a device.
BOOT_TIMEOUT = float(os.environ.get("FIRMWARE_BOOT_TIMEOUT", "180"))


def free_ports(n):
    """N distinct 127.0.0.1 ports that were free a moment ago.  Under
    pytest-xdist, picotest.free_port takes them from the worker's own slice
    below the kernel's ephemeral range, where no outgoing connection of the
    host (the lab's loads, socat's to the sink) can be given one before
    qemu binds it."""
    return [free_port() for _ in range(n)]


# Every guest started, so that the tests' teardown kills what a failure left
# running (conftest.py).
STARTED = []


def kill_all():
    while STARTED:
        STARTED.pop().kill()


class GuestError(Exception):
    pass


class BootCut(GuestError):
    """The guest's rcS was killed by its kernel's OOM killer before the
    end: Debian's generic kernels leave a 64 MB board 10 to 30 MB free, and
    a boot now and then runs short during rcS's modprobes."""


class PortTaken(GuestError):
    """qemu could not bind a hostfwd port: another process on the host took
    it between free_ports() and qemu's own bind.  qemu exits before the
    machine runs, so nothing of the guest ran and no disk was written."""


# Console lines a timed-out command's error shows: enough for the kernel's
# hung-task reports (rcS sets their delay to 20 s), a stack each.
HUNG_LINES = 150

# A port taken is a race on the host, not the guest's doing: tried with
# fresh ports up to this many times in all.
PORT_TRIES = 3


class Guest:
    def __init__(self, board, workdir, disks=None, net=True, rc=False, rtc=None, append="",
                 sink_port=None, mem=None):
        self.board = board
        self.b = BOARDS[board]
        self.workdir = workdir
        self.disks = disks or {}
        self.net = net
        self.rc = rc
        self.rtc = rtc
        self.append = append
        self.sink_port = sink_port
        self.mem = mem or self.b["mem"]
        self.proc = None
        self.sock = None
        self.lock = threading.Lock()
        self.buf = b""
        self.tok = 0
        self.ports = {}
        self.boot_s = None
        self.uptime_at_ready = None
        self.info = json.load(open(os.path.join(IMAGES, board, "info.json")))

    # ------------------------------------------------------------ qemu
    def command(self):
        img = os.path.join(IMAGES, self.board)
        self.ctl_path = os.path.join(self.workdir, "ctl.sock")
        self.mon_path = os.path.join(self.workdir, "mon.sock")
        for path in (self.ctl_path, self.mon_path):
            if os.path.exists(path):
                os.unlink(path)
        self.ports = dict(zip(("smtp", "submission", "pop3"), free_ports(3)))
        net = "user,id=n0,restrict=on,ipv6=off,net=10.0.2.0/24,host=10.0.2.2"
        net += ",hostfwd=tcp:127.0.0.1:%d-%s:25" % (self.ports["smtp"], GUEST_IP)
        net += ",hostfwd=tcp:127.0.0.1:%d-%s:587" % (self.ports["submission"], GUEST_IP)
        net += ",hostfwd=tcp:127.0.0.1:%d-%s:110" % (self.ports["pop3"], GUEST_IP)
        if self.sink_port:
            net += ",guestfwd=tcp:%s:25-cmd:socat - TCP:127.0.0.1:%d" % (SINK_IP, self.sink_port)
        append = "console=%s panic=-1 loglevel=4 fw.net=%d fw.rc=%d %s" % (
            self.b["console"], 1 if self.net else 0, 1 if self.rc else 0, self.append)
        cmd = [self.b["qemu"]] + self.b["machine"] + [
            "-m", str(self.mem), "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-kernel", os.path.join(img, "kernel"), "-initrd", os.path.join(img, "initrd.gz"),
            "-append", append.strip(),
            "-chardev", "file,id=con,path=%s" % os.path.join(self.workdir, "console.log"),
            "-serial", "chardev:con",
            "-chardev", "socket,id=ctl,path=%s,server=on,wait=on" % self.ctl_path,
            "-device", "virtio-serial-pci", "-device", "virtserialport,chardev=ctl,name=fw.ctl",
            "-monitor", "unix:%s,server=on,wait=off" % self.mon_path,
            "-netdev", net, "-device", "virtio-net-pci,netdev=n0",
        ]
        if self.rtc:
            cmd += ["-rtc", "base=%s" % self.rtc]
        for i, (serial, path) in enumerate(sorted(self.disks.items())):
            cmd += ["-drive", "if=none,id=d%d,file=%s,format=raw,cache=writeback" % (i, path),
                    "-device", "virtio-blk-pci,drive=d%d,serial=%s" % (i, serial)]
        return cmd

    def start(self, timeout=BOOT_TIMEOUT):
        """Boots the guest; returns once its agent answers after a whole
        rcS.  A boot whose rcS the OOM killer cut is tried once more when
        picomail had no part in it (rcS did not start it, fw.rc=0): the
        kernel's own boot, not what the lab tests.  Each such retry is
        counted in build/firmware/results/<board>.boot-retries, which the
        report prints; a second cut, or one with picomail started, fails."""
        cuts = ports = 0
        while True:
            try:
                return self._start(timeout)
            except BootCut as e:
                self.kill()
                cuts += 1
                if cuts == 2 or self.rc:
                    raise
                self._note_boot_retry(e)
            except PortTaken as e:
                self.kill()
                ports += 1
                if ports == PORT_TRIES:
                    raise
                self._note_port_retry(e)
            except BaseException:
                self.kill()
                raise

    def _note_boot_retry(self, e):
        first = os.path.join(self.workdir, "console.cut.log")
        os.replace(os.path.join(self.workdir, "console.log"), first)
        os.makedirs(RESULTS, exist_ok=True)
        oom = [l for l in str(e).splitlines() if "Out of memory" in l]
        with open(os.path.join(RESULTS, self.board + ".boot-retries"), "a") as f:
            f.write("%s: %s\n" % (first, oom[0].strip()))
        sys.stderr.write("lab: %s: rcS cut at boot, booting again: %s\n" % (self.board, oom[0].strip()))

    def _note_port_retry(self, e):
        os.makedirs(RESULTS, exist_ok=True)
        with open(os.path.join(RESULTS, self.board + ".port-retries"), "a") as f:
            f.write("%s: %s\n" % (self.workdir, e))
        sys.stderr.write("lab: %s: %s; starting qemu again with other ports\n" % (self.board, e))

    def _start(self, timeout):
        try:
            return self._boot(timeout)
        except GuestError:
            if self.proc.poll() is None:
                raise
            said = re.search(r"Could not set up host forwarding rule '[^']*'", self._qemu_said())
            if not said:
                raise
            raise PortTaken("qemu: " + said.group(0))

    def _qemu_said(self):
        """What qemu wrote to qemu.log during this start."""
        with open(os.path.join(self.workdir, "qemu.log"), "rb") as f:
            f.seek(self.qlog_start)
            return f.read().decode("utf-8", "replace")

    def _boot(self, timeout):
        cmd = self.command()
        with open(os.path.join(self.workdir, "qemu.cmd"), "a") as f:
            f.write(" ".join(cmd) + "\n")
        t0 = time.monotonic()
        self.qlog = open(os.path.join(self.workdir, "qemu.log"), "ab")
        self.qlog_start = self.qlog.tell()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.qlog, stderr=subprocess.STDOUT)
        STARTED.append(self)
        # qemu waits for this connection before it starts the machine.
        deadline = t0 + 30
        while True:
            if self.proc.poll() is not None:
                raise GuestError("%s: qemu exited (%s): %s" % (self.board, self.proc.returncode, self.tail("qemu.log")))
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(self.ctl_path)
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    self.kill()
                    raise GuestError("%s: qemu's control socket never appeared" % self.board)
                time.sleep(0.05)
        self.sock = s
        self.buf = b""
        line = self._read_until(b"@@fw-ready ", t0 + timeout, "boot")
        self.boot_s = time.monotonic() - t0
        fields = line.split()
        self.uptime_at_ready = float(fields[1])
        if fields[2:] != ["rcS-done"]:
            console = self.tail("console.log")
            kind = BootCut if "Out of memory" in console else GuestError
            raise kind("%s: /etc/init.d/rcS did not run to its end (%s); console:\n%s" % (
                self.board, " ".join(fields[2:]) or "an agent without the rcS state", console))
        return self

    def _exit_status(self):
        """How qemu ended, once its end closed the control channel: the
        socket may close a moment before the process can be reaped."""
        try:
            return "qemu exited %d" % self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "qemu still running"

    def tail(self, name, n=30):
        try:
            with open(os.path.join(self.workdir, name), "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def _read_until(self, marker, deadline, what):
        """Reads the control channel up to the line that starts with MARKER;
        returns that line, keeps what follows it."""
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                j = self.buf.find(b"\n", i)
                if j >= 0:
                    line = self.buf[i:j].decode()
                    self.pending = self.buf[:i]
                    self.buf = self.buf[j + 1:]
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestError("%s: no answer to %s in time; qemu's interrupt controller:\n%s\nconsole:\n%s" % (
                    self.board, what, self.monitor("info pic"), self.tail("console.log", HUNG_LINES)))
            if self.proc.poll() is not None:
                raise GuestError("%s: qemu exited (%s) during %s; console:\n%s" % (
                    self.board, self.proc.returncode, what, self.tail("console.log")))
            self.sock.settimeout(min(left, 1.0))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise GuestError("%s: control channel closed during %s (%s); qemu.log:\n%s\nconsole:\n%s" % (
                    self.board, what, self._exit_status(), self.tail("qemu.log"), self.tail("console.log")))
            self.buf += data

    def monitor(self, command):
        """What qemu's monitor answers to COMMAND (its last lines), for the
        error of a guest that stopped answering; never raises."""
        out = b""
        try:
            with socket.socket(socket.AF_UNIX) as m:
                m.settimeout(2)
                m.connect(self.mon_path)
                m.sendall(command.encode() + b"\n")
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline and out.count(b"(qemu)") < 2:
                    try:
                        data = m.recv(65536)
                    except socket.timeout:
                        break
                    if not data:
                        break
                    out += data
        except OSError as e:
            return "(no answer from qemu's monitor: %s)" % e
        # The monitor echoes the line as it is typed, with cursor moves.
        lines = re.sub(rb"\x1b\[[0-9]*[A-Za-z]", b"", out).decode("utf-8", "replace").splitlines()
        said = "\n".join(l for l in lines if l.strip() and not l.startswith(("(qemu)", "QEMU ")))
        return said or "(nothing on this machine)"

    # ------------------------------------------------------------ commands
    def run(self, script, timeout=120):
        """Runs SCRIPT with sh in the guest; (status, output).  One command
        at a time: threads take turns."""
        with self.lock:
            return self._run(script, timeout)

    def _run(self, script, timeout):
        if self.sock is None:
            raise GuestError("%s: the guest is down" % self.board)
        self.tok += 1
        tok = "t%d" % self.tok
        self.sock.sendall(("%s %s\n" % (tok, base64.b64encode(script.encode()).decode())).encode())
        line = self._read_until(("@@fw-end %s " % tok).encode(), time.monotonic() + timeout,
                                "command %r" % script[:60])
        out = self.pending
        if out.endswith(b"\n"):
            out = out[:-1]
        return int(line.split()[-1]), out.decode("utf-8", "replace")

    def sh(self, script, timeout=120):
        rc, out = self.run(script, timeout)
        if rc != 0:
            raise GuestError("%s: `%s` exited %d:\n%s" % (self.board, script.strip()[:200], rc, out))
        return out

    # ------------------------------------------------------------ ending
    def kill(self):
        """kill -9 of qemu: the machine stops between two instructions."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._close()

    def stop(self, timeout=60):
        """A clean power-off (BusyBox init runs rcK), bounded; then kill."""
        if self.proc and self.proc.poll() is None:
            try:
                self.sock.sendall(b"halt %s\n" % base64.b64encode(b"poweroff"))
            except OSError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()

    def _close(self):
        if self.sock:
            self.sock.close()
            self.sock = None
        if getattr(self, "qlog", None):
            self.qlog.close()
            self.qlog = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None
