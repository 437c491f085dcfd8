#!/bin/bash
# text-order.sh [OUT] - writes board/common/text-order.txt (or OUT) anew:
# the functions the daemon runs, in the order the link should place them
# first in .text (the Makefile turns the list into $(BUILD)/text-order.ld).
#
# Why: the kernel maps a binary's pages into a process 64 KiB at a time
# around each page it touches (fault-around), when they are in the page
# cache, as they are for a binary just run.  Start-up and the idle loop run
# about 40 KB of code spread over every part of .text, so all of .text
# ended up resident; grouped, that code is one or two such blocks.
#
# How: build/host/picomail.elf (the host build before stripping) runs under
# valgrind's callgrind twice, with a configuration like the bench's plus TLS
# (an EC key) and POP3 over TLS: once from start-up to idle (with a
# connection that closes at once and a `picomail status`, as a watched idle
# daemon sees), once more with one SMTP delivery, and once with one
# delivery after STARTTLS.  Each instruction that ran is found in the link map
# (build/host/picomail.map) and its input section listed, those of the
# first run first: a function's own section, .text.<name> (LTO's suffixes,
# .lto_priv.0, .constprop.0..., cut: the linker script matches <name> and
# <name>.*, which other boards' builds name alike), or for code in
# assembly (musl's memcpy, the C runtime's start) the file it is in,
# file(.text).  Two more runs, under lackey and strace, record the loads
# and stores to .bss from start-up to idle, the program's and the kernel's
# (read(2) into a buffer): the variables used are listed too, small ones
# first (the Makefile places them first in .bss, where they share a few
# pages instead of keeping a page of each of the large buffers they sat
# between).  Loads count as well as stores: a kernel without the shared
# zero page (some run with it off) gives a page of its own to the first
# read of a page never written, which then stays resident like any other.
# A stale list costs only resident pages, never correctness:
# run this after changes to the start-up or the loop, and commit the result.
set -eu

me=text-order.sh
die() { echo "$me: $*" >&2; exit 1; }

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/board/common                     # linkmap.py
OUT=${1:-$ROOT/board/common/text-order.txt}
ELF=$ROOT/build/host/picomail.elf
MAP=$ROOT/build/host/picomail.map
PY=/usr/bin/python3
IDLE=${TEXT_ORDER_IDLE:-5}
command -v valgrind >/dev/null 2>&1 || die "needs valgrind (apt-get install valgrind)"
command -v strace >/dev/null 2>&1 || die "needs strace (apt-get install strace)"
command -v openssl >/dev/null 2>&1 || die "needs openssl"
[ -x "$ELF" ] && [ -f "$MAP" ] || die "no $ELF or $MAP: run make first"

W=$(mktemp -d "${TMPDIR:-/tmp}/text-order.XXXXXX")
VPID=''
RPID=''
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
    if [ -n "$VPID" ] && kill -0 "$VPID" 2>/dev/null; then kill -KILL "$VPID" 2>/dev/null || true; fi
    if [ -n "$RPID" ] && kill -0 "$RPID" 2>/dev/null; then kill -KILL "$RPID" 2>/dev/null || true; fi
    rm -rf "$W"
}
trap cleanup EXIT

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

mkdir -p "$W/mail" "$W/spool"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/key.pem" \
    -out "$W/cert.pem" -days 30 -subj /CN=bench.lan >/dev/null 2>&1 || die "openssl could not make a key"
printf 'user:%s\n' "$(printf 'x\n' | "$ELF" passwd)" >"$W/users"
printf 'postmaster: user\n' >"$W/aliases"

# run NAME SESSION TOOL: one run of the daemon under TOOL (callgrind, lackey,
# strace), its output in $W/NAME.out; SESSION: 0 (none), plain or tls, the
# SMTP delivery it is given after the idle part
run() {
    local name=$1 session=$2 tool=$3 smtp pop3 i starttls=''
    [ "$session" != tls ] || starttls=' starttls'
    smtp=$(free_port)
    pop3=$(free_port)
    cat >"$W/picomail.conf" <<CONF
hostname         bench.lan
domains          lan
listen           smtp 127.0.0.1:$smtp$starttls
listen           pop3 127.0.0.1:$pop3 tls
maildir_root     $W/mail
spool            $W/spool
users            $W/users
aliases          $W/aliases
relay_from       127.0.0.0/8
tls_cert         $W/cert.pem
tls_key          $W/key.pem
max_connections  64
max_message_size 10M
CONF
    if [ "$tool" = lackey ]; then
        # Every load and store, read from a pipe: only the addresses in
        # .bss are kept (the whole trace would be gigabytes).
        rm -f "$W/$name.fifo"
        mkfifo "$W/$name.fifo"
        PYTHONPATH=$HERE "$PY" - "$W/$name.fifo" "$MAP" >"$W/$name.out" <<'PY' &
import sys
from linkmap import output_range
lo, hi = output_range(sys.argv[2], (".bss", ".bss.daemon"))   # .daemon: an earlier list's
seen = set()
for line in open(sys.argv[1], errors="replace"):
    if len(line) < 4 or line[0] != " " or line[1] not in "LSM":
        continue
    a = int(line[3:line.index(",")], 16)
    if lo <= a < hi:
        seen.add(a)
print("\n".join("0x%x" % a for a in sorted(seen)))
PY
        RPID=$!
        valgrind -q --tool=lackey --trace-mem=yes --log-file="$W/$name.fifo" \
            "$ELF" serve -C "$W/picomail.conf" -f 2>"$W/$name.log" &
    elif [ "$tool" = strace ]; then
        strace -f -qq -e raw=all -o "$W/$name.trace" \
            "$ELF" serve -C "$W/picomail.conf" -f 2>"$W/$name.log" &
    else
        valgrind -q --tool=callgrind --dump-instr=yes --callgrind-out-file="$W/$name.out" \
            "$ELF" serve -C "$W/picomail.conf" -f 2>"$W/$name.log" &
    fi
    VPID=$!
    for ((i = 0; i < 300; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$smtp") 2>/dev/null && break
        kill -0 "$VPID" 2>/dev/null || die "the daemon did not start: $(tail -n 5 "$W/$name.log")"
        sleep 0.1
    done
    sleep "$IDLE"
    # What an idle daemon still does when it is watched: a connection that
    # closes at once, and `picomail status` (the bench does both).
    (exec 3<>"/dev/tcp/127.0.0.1/$smtp") 2>/dev/null || true
    "$ELF" status -C "$W/picomail.conf" >/dev/null 2>&1 || true
    sleep 1
    if [ "$session" != 0 ]; then
        "$PY" - "$smtp" "$session" <<'PY' || die "the SMTP session ($session) failed"
import smtplib, ssl, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=60)
if sys.argv[2] == "tls":
    s.starttls(context=ssl._create_unverified_context())
s.sendmail("a@example.org", ["user@lan"], "Subject: x\r\n\r\nhello\r\n")
s.quit()
PY
        sleep 1
    fi
    # callgrind writes its output when the daemon ends; lackey's and
    # strace's are read as they go, and a KILL keeps the shutdown out.
    case $tool in
    lackey) kill -KILL "$VPID" ;;
    strace) pkill -KILL -P "$VPID" || true ;;      # the daemon, strace's child
    *) kill -TERM "$VPID" ;;
    esac
    wait "$VPID" || true
    VPID=''
    if [ "$tool" = strace ]; then
        # Every address in .bss given to a system call: what the kernel
        # may write there (read(2) into a buffer), which lackey does not see.
        PYTHONPATH=$HERE "$PY" - "$W/$name.trace" "$MAP" >"$W/$name.out" <<'PY' || die "no strace of $name"
import re, sys
from linkmap import output_range
lo, hi = output_range(sys.argv[2], (".bss", ".bss.daemon"))
seen = set()
for line in open(sys.argv[1], errors="replace"):
    for a in re.findall(r"0x[0-9a-f]+", line.split(") =")[0]):
        if lo <= int(a, 16) < hi:
            seen.add(int(a, 16))
print("\n".join("0x%x" % a for a in sorted(seen)))
PY
    fi
    if [ -n "$RPID" ]; then
        wait "$RPID" || die "the trace of $name could not be read"
        RPID=''
    fi
    [ -s "$W/$name.out" ] || die "callgrind wrote nothing: $(tail -n 5 "$W/$name.log")"
}

# The input sections (as the list names them) holding the instructions
# that ran, from a callgrind output and the link map.
sections() {
    PYTHONPATH=$HERE "$PY" - "$1" "$MAP" <<'PY'
import bisect, os, re, sys
from linkmap import input_sections
ran, cur = set(), 0
for line in open(sys.argv[1]):
    m = re.match(r"^(0x[0-9a-f]+|[+-]\d+|\*)\s", line)
    if m:
        t = m.group(1)
        cur = int(t, 16) if t.startswith("0x") else cur + int(t) if t != "*" else cur
        ran.add(cur)
spans = input_sections(sys.argv[2], ".text")
starts = [s[0] for s in spans]
out = []
for a in sorted(ran):
    i = bisect.bisect_right(starts, a) - 1
    if i < 0 or a >= spans[i][0] + spans[i][1]:
        continue
    _, _, sec, f = spans[i]
    m = re.match(r"^\.text\.((?:startup|unlikely|hot|exit)\.)?([A-Za-z_][A-Za-z0-9_]*)", sec)
    if m:
        name = ".text." + (m.group(1) or "") + m.group(2)
    else:
        f = re.sub(r"^.*\(([^)]*)\)$", r"\1", f)   # an archive's member
        name = os.path.basename(f) + "(.text)"
    if name not in out:
        out.append(name)
print("\n".join(sorted(out)))
PY
}

# The input sections of .bss the daemon used from start-up to idle (a
# lackey trace's loads and stores, and the addresses given to system calls in an
# strace, for what the kernel writes: read(2) into a buffer), from the link
# map, named whole (static locals share names: .bss.buf.0.lto_priv.3), the
# small ones first so that they share pages.
# On the boards the names differ and few match: .bss as before there.
bss_sections() {
    PYTHONPATH=$HERE "$PY" - "$1" "$MAP" "$2" <<'PY'
import bisect, sys
from linkmap import input_sections
touched = [int(a, 16) for a in (open(sys.argv[1]).read() + open(sys.argv[3]).read()).split()]
spans = [(a, n, sec) for a, n, sec, _ in
         input_sections(sys.argv[2], ".bss.", (".bss", ".bss.daemon"))]
starts = [s[0] for s in spans]
bss = {}
for a in touched:
    i = bisect.bisect_right(starts, a) - 1
    if i >= 0 and a < spans[i][0] + spans[i][1]:
        bss[spans[i][2]] = spans[i][1]
print("\n".join(sorted(bss, key=lambda n: (bss[n], n))))
PY
}

run idle 0 callgrind
run session plain callgrind
run tls tls callgrind
run data 0 lackey
run calls 0 strace
sections "$W/idle.out" >"$W/idle.txt"
sections "$W/session.out" >"$W/session.txt"
sections "$W/tls.out" >"$W/tls.txt"
{
    echo "# The code the daemon runs, placed first in .text in this order"
    echo "# (board/common/text-order.sh made this list; see it for why and how)."
    echo "# From start-up to idle, with TLS and POP3 configured; a connection"
    echo "# closed at once; picomail status:"
    cat "$W/idle.txt"
    echo "# One SMTP delivery besides:"
    grep -vxF -f "$W/idle.txt" "$W/session.txt" || true
    echo "# One delivery after STARTTLS (ECDSA P-256) besides: the first TLS"
    echo "# session pages in this code, grouped rather than spread over .text:"
    cat "$W/idle.txt" "$W/session.txt" >"$W/before-tls.txt"
    grep -vxF -f "$W/before-tls.txt" "$W/tls.txt" || true
    echo "# The variables used from start-up to idle, first in .bss:"
    bss_sections "$W/data.out" "$W/calls.out"
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "$me: $(grep -vc '^#' "$OUT") sections in $OUT"
