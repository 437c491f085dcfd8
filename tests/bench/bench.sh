#!/bin/bash
# bench.sh BINARY - "make bench": the benchmark report for picomail.
#
# Prints ONE markdown table on stdout (progress goes to stderr), every figure
# measured in this run, on the disk that holds build/ (temporary directories
# under build/bench/, never tmpfs):
#   - the durable-write limit of that disk: tests/bench/fsync_ref.c, one
#     writer doing write + fsync + rename + fsync(dir) per 5 KB message
#   - picomail accepting 2000 messages of 5 KB from Postfix's smtp-source
#     with 1 and with 20 concurrent sessions (wall clock of smtp-source; one
#     connection per message, and for 1 session also one connection for all
#     its messages, smtp-source -d),
#     checked afterwards: exactly 2000 new files in new/ per run, else FAIL
#     (all in BENCH_ROUNDS rounds, default 3, of reference, 1 session with
#     a connection per message, 1 session with one connection, 20 sessions
#     back to back; the table gives the medians, every run, and
#     each picomail run's ratio to the reference run of its own round)
#   - acknowledgement latency with 20 sessions (tests/bench/ack_latency.py)
#     alone and beside a bulk writer (dd conv=fdatasync) on the same file
#     system, against 20 durable writers paced at picomail's rate
#     (fsync_ref -w 20 -r) alone and beside the same dd, and dd's rate
#     alone and beside picomail
#   - the daemon's RSS idle, and what it is made of mapping by mapping
#     (tests/bench/rss_breakdown.py: code, constants, .data, .bss, heap,
#     stack, the pools' mappings), with 50 idle connections, peak during the
#     20-session loads (sampled every 50 ms) and VmHWM
#   - the size of the stripped binary
#   - bytes written per delivered message (/proc/PID/io, informational)
#   - context: the daemon's CPU time per load, and the load generator's own
#     ceiling (each of the three loads against Postfix's smtp-sink, no disk)
#   - TLS (issue 4, tests/bench/tls_bench.py, its own daemons): full
#     handshakes per second with RSA-2048 and ECDSA P-256 certificates for
#     SMTP STARTTLS and POP3S, 4 concurrent clients, and the RSS per open TLS
#     session (10 open; target <= 40 KiB each)
#   - IMAP (issue 16, tests/bench/imap_bench.py, its own daemons): SELECT,
#     FETCH of headers and of bodies and SEARCH TEXT over 1000 x 5 KB, and the
#     memory of 20 IDLE sessions, beside Dovecot's imapd on the same files
#     (Debian's dovecot-imapd, in the bench group of deps.sh): ratios
#   - relaying (issue 5, tests/bench/relay_bench.py, its own daemon; the
#     last row): the same N x 5 KB from smtp-source -s 20 through picomail's
#     queue to smtp-sink as the smarthost, first accept to last delivered
#     (queue_length 0), msg/s and the daemon's peak RSS; FAIL unless
#     smtp-sink counted exactly N
# Targets (issues 2 and 15): 20 sessions >= 2x the durable-write limit, one
# session >= 0.8x (each way), idle RSS < 300 KiB, 50 idle connections < 1 MiB, binary
# < 300 KiB.
#
# Environment: BENCH_MESSAGES (default 2000), BENCH_ROUNDS (default 3),
# BENCH_KEEP=1 keeps the work directory.  Exit 0 when the report is
# complete, 1 when a run lost or duplicated messages (FAIL in the table) or
# the bench itself could not run.
# Loopback and ephemeral ports only; every process started here is stopped
# by its PID on exit; every wait is bounded.
set -eu -o pipefail

me=bench.sh
die() { echo "$me: $*" >&2; exit 1; }
say() { echo "$me: $*" >&2; }

[ $# -eq 1 ] || die "usage: $me BINARY"
[ -x "$1" ] || die "no executable $1 (run make)"
BIN=$(readlink -f "$1")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/tests/bench
PY=/usr/bin/python3
N=${BENCH_MESSAGES:-2000}
ROUNDS=${BENCH_ROUNDS:-3}
SIZE=5120
IDLE_CONNS=50
TOOLS=$ROOT/build/tools
OUT=$ROOT/build/bench
[ -x "$PY" ] || die "needs Debian's python3 (apt-get install python3)"
command -v cc >/dev/null 2>&1 || die "needs a C compiler as cc (apt-get install gcc)"

# ---------------------------------------------------------------- set-up
mkdir -p "$OUT"
W=$(mktemp -d "$OUT/run.XXXXXX")
DPID=''          # the daemon
PIDS=''          # helpers still running
failed=0

stop_pid() {     # stop_pid PID SECONDS: TERM, bounded wait, then KILL
    local p=$1 t=$2 i
    kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null || true; return 0; }
    kill -TERM "$p" 2>/dev/null || true
    for ((i = 0; i < t * 10; i++)); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$p" 2>/dev/null; then
        say "PID $p did not stop on SIGTERM within ${t}s: SIGKILL"
        kill -KILL "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
}

# shellcheck disable=SC2317  # invoked by the traps
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in $PIDS; do stop_pid "$p" 2; done
    [ -z "$DPID" ] || stop_pid "$DPID" 5
    if [ "${BENCH_KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
        say "work directory kept: $W"
    else
        # Remember when and how much was deleted: on ext4 without a journal
        # the inode allocator skips recently freed inodes (for 60 s, 360 s
        # while their inode table block is dirty), which slows file creation
        # in the next run if it comes soon.  The next run reports it.
        p=$(find "$W" -type f | wc -l)
        rm -rf "$W"
        echo "$(date +%s) $p" >"$OUT/.last-cleanup" 2>/dev/null || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

forget_pid() {   # forget_pid PID: drop from the helper list
    local p rest=''
    for p in $PIDS; do [ "$p" = "$1" ] || rest="$rest $p"; done
    PIDS=$rest
}

# Postfix's smtp-source (cached in build/tools after the first time).
if ! bash "$ROOT/tests/tools/postfix-tools.sh" "$TOOLS" >"$W/tools.log" 2>&1; then
    cat "$W/tools.log" >&2
    die "could not set up smtp-source (tests/tools/postfix-tools.sh)"
fi
SOURCE=$TOOLS/smtp-source

# The durable-write reference, built with the host's compiler.
cc -O2 -Wall -Wextra -o "$OUT/fsync_ref" "$HERE/fsync_ref.c" ||
    die "could not compile tests/bench/fsync_ref.c"

# A recent deletion of many files (a previous bench run) skews file creation.
recent_note=''
if [ -f "$OUT/.last-cleanup" ]; then
    read -r last_t last_n _ <"$OUT/.last-cleanup" || true
    ago=$(( $(date +%s) - ${last_t:-0} ))
    if [ "$ago" -lt 360 ] && [ "${last_n:-0}" -gt 0 ]; then
        recent_note="note: the previous bench run deleted $last_n files ${ago} s ago (ext4 without a journal skips recently freed inodes for 60-360 s, slowing file creation for the reference and picomail alike)"
    fi
fi

load0=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- helpers
calc() { awk "BEGIN { printf \"%s\", $* }"; }           # calc 'EXPR' (awk)
fmt1() { awk -v x="$1" 'BEGIN { printf "%.1f", x }'; }
fmt2() { awk -v x="$1" 'BEGIN { printf "%.2f", x }'; }
fmt0() { awk -v x="$1" 'BEGIN { printf "%.0f", x }'; }
# shellcheck disable=SC2317  # called through ok()
ge()   { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
# shellcheck disable=SC2317  # called through ok()
lt()   { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }
now()  { date +%s.%N; }
median() {       # median NUMBERS...
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) printf "%s", v[(NR + 1) / 2]; else printf "%s", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

proc_field() {   # proc_field FILE KEY: the number after "KEY:" in /proc/PID/FILE
    awk -v k="$2:" '$1 == k { print $2; found = 1 } END { if (!found) print "" }' \
        "/proc/$DPID/$1" 2>/dev/null || true
}

status_field() { # status_field KEY: from `picomail status`
    timeout 5 "$BIN" status -C "$W/picomail.conf" 2>/dev/null |
        awk -v k="$1:" '$1 == k { print $2 }' || true
}

count_new() {    # files in the bench user's new/
    local d=$W/mail/user/new
    if [ -d "$d" ]; then find "$d" -maxdepth 1 -type f | wc -l; else echo 0; fi
}

count_tmp() {
    local d=$W/mail/user/tmp
    if [ -d "$d" ]; then find "$d" -maxdepth 1 -type f | wc -l; else echo 0; fi
}

# Sectors written to the block device under build/ (whole device: includes
# metadata, a journal if any, and anything else running on the machine).
DEV=$(df --output=source "$OUT" 2>/dev/null | tail -n 1 || true)
DEV_STAT=''
case $DEV in
/dev/*)
    d=$(basename "$(readlink -f "$DEV")")
    [ -r "/sys/class/block/$d/stat" ] && DEV_STAT=/sys/class/block/$d/stat ;;
esac
# CPU time (user + system) of the daemon so far, in seconds.
TICK=$(getconf CLK_TCK 2>/dev/null || echo 100)
cpu_time() {
    # /proc/PID/stat: the name (field 2) may hold spaces; count from its ")".
    sed 's/.*) //' "/proc/$DPID/stat" 2>/dev/null |
        awk -v hz="$TICK" '{ printf "%.2f", ($12 + $13) / hz }' || echo 0
}

dev_sectors() { if [ -n "$DEV_STAT" ]; then awk '{ print $7 }' "$DEV_STAT"; else echo 0; fi; }

# ---------------------------------------------------------------- the table
ROWS=''
row() {          # row WHAT VALUE TARGET VERDICT
    ROWS="$ROWS| $1 | $2 | $3 | $4 |
"
}

# ---------------------------------------------------------------- 1. reference
run_ref() {      # run_ref DIR -> "count seconds rate p50 p99 max"
    mkdir -p "$1"
    timeout 120 "$OUT/fsync_ref" "$1" "$N" "$SIZE" || die "fsync_ref failed in $1"
}

# ---------------------------------------------------------------- the daemon
mkdir -p "$W/mail" "$W/spool"
hash=$(printf 'bench\n' | timeout 10 "$BIN" passwd 2>/dev/null) ||
    hash=$(openssl passwd -6 bench 2>/dev/null) || die "cannot make a password hash"
printf 'user:%s\n' "$hash" >"$W/users"
printf 'postmaster: user\n' >"$W/aliases"

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

write_conf() {   # write_conf PORT
    cat >"$W/picomail.conf" <<CONF
# written by tests/bench/bench.sh
hostname         bench.lan
domains          lan
listen           smtp 127.0.0.1:$1
maildir_root     $W/mail
spool            $W/spool
users            $W/users
aliases          $W/aliases
relay_from       127.0.0.0/8
max_connections  64
max_message_size 10M
CONF
}

start_daemon() { # start_daemon: sets DPID and PORT, or dies
    local attempt i
    for attempt in 1 2 3; do
        PORT=$(free_port)
        write_conf "$PORT"
        if ! timeout 10 "$BIN" check -C "$W/picomail.conf" >"$W/check.log" 2>&1; then
            cat "$W/check.log" >&2
            die "picomail check refused the bench configuration"
        fi
        "$BIN" serve -C "$W/picomail.conf" -f 2>>"$W/daemon.log" </dev/null &
        DPID=$!
        for ((i = 0; i < 100; i++)); do
            kill -0 "$DPID" 2>/dev/null || break
            if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null &&
               [ -n "$(status_field connections)" ]; then
                return 0
            fi
            sleep 0.1
        done
        say "daemon did not come up on 127.0.0.1:$PORT (attempt $attempt)"
        stop_pid "$DPID" 3
        DPID=''
    done
    tail -n 20 "$W/daemon.log" >&2 || true
    die "could not start the daemon"
}

wait_idle() {    # until the daemon reports 0 connections (bounded)
    local i c
    for ((i = 0; i < 100; i++)); do
        c=$(status_field connections)
        [ "$c" = 0 ] && return 0
        sleep 0.1
    done
    say "daemon still reports ${c:-?} connections"
}

say "starting $BIN"
start_daemon
say "  pid $DPID on 127.0.0.1:$PORT"
wait_idle
sleep 0.5

# ---------------------------------------------------------------- 3a. idle RSS
rss_idle=$(proc_field status VmRSS)
rss_idle_anon=$(proc_field status RssAnon)
rss_idle_file=$(proc_field status RssFile)
# What it is made of, mapping by mapping (tests/bench/rss_breakdown.py):
# "<part> <rss> <anon>" lines, in R[rss_<part>] and R[anon_<part>].
declare -A RSS_PART
if "$PY" "$HERE/rss_breakdown.py" "$DPID" "$BIN" >"$W/rss.parts" 2>"$W/rss.parts.err"; then
    while read -r part rss anon; do
        RSS_PART[rss_$part]=$rss
        RSS_PART[anon_$part]=$anon
    done <"$W/rss.parts"
else
    say "could not read /proc/$DPID/smaps: $(cat "$W/rss.parts.err")"
fi
say "idle RSS: $rss_idle KiB"

# ---------------------------------------------------------------- 3b. 50 idle connections
"$PY" "$HERE/idle_conns.py" 127.0.0.1 "$PORT" "$IDLE_CONNS" "$W/idle.ready" 60 \
    </dev/null 2>"$W/idle.log" &
ipid=$!
PIDS="$PIDS $ipid"
rss_conns=''
conns_seen=''
for ((i = 0; i < 150; i++)); do
    [ -f "$W/idle.ready" ] && break
    kill -0 "$ipid" 2>/dev/null || break
    sleep 0.1
done
if [ -f "$W/idle.ready" ]; then
    sleep 0.3
    rss_conns=$(proc_field status VmRSS)
    conns_seen=$(status_field connections)
    say "RSS with $IDLE_CONNS idle connections: $rss_conns KiB (daemon reports ${conns_seen:-?} connections)"
else
    say "idle connections did not all get a greeting:"
    cat "$W/idle.log" >&2 || true
fi
stop_pid "$ipid" 5
forget_pid "$ipid"
wait_idle

# ---------------------------------------------------------------- 2. the loads
# run_load SESSIONS TAG [SOURCE_OPTION...]: fills R[<field>_TAG] (t rate got
# rc errs in wb wc ds cpu).  smtp-source opens one connection per message;
# with -d each session keeps its connection for all its messages.
declare -A R
run_load() {
    local s=$1 tag=$2 before after t0 t1 rc=0 wb0 wb1 wc0 wc1 ds0 ds1 in0 in1 errs t c0 c1
    before=$(count_new)
    in0=$(status_field messages_in)
    wb0=$(proc_field io write_bytes); wc0=$(proc_field io wchar); ds0=$(dev_sectors)
    c0=$(cpu_time)
    shift 2
    say "smtp-source${*:+ $*} -s $s -m $N -l $SIZE -> 127.0.0.1:$PORT"
    t0=$(now)
    timeout 150 "$SOURCE" "$@" -s "$s" -m "$N" -l "$SIZE" -f from@x -t user@lan \
        "127.0.0.1:$PORT" >"$W/source.$tag.log" 2>&1 || rc=$?
    t1=$(now)
    wb1=$(proc_field io write_bytes); wc1=$(proc_field io wchar); ds1=$(dev_sectors)
    c1=$(cpu_time)
    wait_idle
    after=$(count_new)
    in1=$(status_field messages_in)
    errs=$(grep -c -E 'warning|fatal|error' "$W/source.$tag.log" || true)
    t=$(calc "$t1 - $t0")
    R[t_$tag]=$t
    R[rate_$tag]=$(calc "$N / $t")
    R[got_$tag]=$((after - before))
    R[rc_$tag]=$rc
    R[errs_$tag]=${errs:-0}
    R[in_$tag]=$(( ${in1:-0} - ${in0:-0} ))
    R[wb_$tag]=$(( ${wb1:-0} - ${wb0:-0} ))
    R[wc_$tag]=$(( ${wc1:-0} - ${wc0:-0} ))
    R[ds_$tag]=$(( ${ds1:-0} - ${ds0:-0} ))
    R[cpu_$tag]=$(calc "$c1 - $c0")
    say "  ${R[got_$tag]} new files in $(fmt2 "$t") s: $(fmt1 "${R[rate_$tag]}") msg/s (smtp-source exit $rc, ${errs:-0} warning/error lines)"
    if [ "$rc" -ne 0 ] || [ "${errs:-0}" -ne 0 ]; then
        head -n 5 "$W/source.$tag.log" >&2 || true
    fi
}

# Rounds, back to back: reference, 1 session, 20 sessions.  The machine
# may be shared and its disk is virtual: interleaving pairs each picomail
# run with a reference run taken moments before, and the medians resist a
# burst of outside activity.  Nothing is deleted until the end (see cleanup).
rss_peak=0 rss_samples=0
REFS=()
for ((r = 1; r <= ROUNDS; r++)); do
    say "round $r/$ROUNDS: durable-write reference, $N x $SIZE bytes (write, fsync, rename, fsync dir)"
    ds0=$(dev_sectors)
    out=$(run_ref "$W/ref$r")
    R[ds_ref_$r]=$(( $(dev_sectors) - ds0 ))
    read -r _ "R[t_ref_$r]" "R[rate_ref_$r]" _ <<<"$out"
    REFS+=("${R[rate_ref_$r]}")
    say "  $(fmt1 "${R[rate_ref_$r]}") msg/s ($(fmt2 "${R[t_ref_$r]}") s)"

    run_load 1 "s1_$r"
    run_load 1 "d1_$r" -d

    # 20 sessions, with the RSS sampled every 50 ms.
    rm -f "$W/rss.stop" "$W/rss.out"
    "$PY" "$HERE/rss_sampler.py" "$DPID" 50 "$W/rss.stop" "$W/rss.out" </dev/null &
    spid=$!
    PIDS="$PIDS $spid"
    run_load 20 "s20_$r"
    : >"$W/rss.stop"
    for ((i = 0; i < 50; i++)); do [ -f "$W/rss.out" ] && break; sleep 0.1; done
    stop_pid "$spid" 2
    forget_pid "$spid"
    if [ -f "$W/rss.out" ]; then
        read -r pk ns _ <"$W/rss.out"
        [ "$pk" -le "$rss_peak" ] || rss_peak=$pk
        rss_samples=$((rss_samples + ns))
    fi
done
# ---------------------------------------------------------------- 2b. beside a bulk writer
# A NAS volume is shared: the same 20-session load, timed per message by
# tests/bench/ack_latency.py (final dot -> 250), alone and then while dd
# writes BULK_MB MiB with conv=fdatasync to the same file system; dd's
# throughput alone and beside the load.  Neither may collapse: picomail
# syncs only its own files, so it neither waits for dd's dirty pages nor
# forces them out.  What the disk itself does to a durable write beside dd
# is the reference: 20 writers of fsync_ref (-w 20, each waiting for its
# own syncs, as 20 sessions would without group commit), paced at
# picomail's own rate alone (-r), timed per message alone and beside a
# third dd.  The disk stalls now and then behind dd's data, holding every
# sync in flight, picomail's and the reference's alike; at the same rate
# both have as many messages in each stall.
BULK_MB=${BENCH_BULK_MB:-2048}
lat_json() {     # lat_json FIELD JSON
    "$PY" -c 'import json, sys; v = json.loads(sys.argv[2]).get(sys.argv[1]); print("" if v is None else v)' "$1" "$2"
}
dd_rate() {      # dd_rate: MiB/s of one dd of BULK_MB MiB into $W/bulk, or ''
    local t0 t1
    rm -f "$W/bulk"
    t0=$(now)
    timeout 600 dd if=/dev/zero of="$W/bulk" bs=1M count="$BULK_MB" conv=fdatasync status=none || { rm -f "$W/bulk"; return 0; }
    t1=$(now)
    rm -f "$W/bulk"
    calc "$BULK_MB / ($t1 - $t0)"
}
before_lat=$(count_new)
say "acknowledgement latency, 20 sessions, $N messages, alone"
lat_alone=$(timeout 300 "$PY" "$HERE/ack_latency.py" 127.0.0.1 "$PORT" 20 --messages "$N" </dev/null) || lat_alone=''
say "  $lat_alone"
say "bulk writer alone: dd $BULK_MB MiB conv=fdatasync"
dd_alone=$(dd_rate)
say "  ${dd_alone:-?} MiB/s"
beside_dd() {     # beside_dd OUT CMD...: runs CMD (told to stop by the file $W/bulk.done) with
                 # its output in OUT while one dd_rate runs; sets DD_BESIDE (MiB/s, or '')
    local out=$1 bpid i
    shift
    rm -f "$W/bulk.done"
    "$@" </dev/null >"$out" 2>"$out.err" &
    bpid=$!
    PIDS="$PIDS $bpid"
    sleep 0.5
    DD_BESIDE=$(dd_rate)
    : >"$W/bulk.done"
    for ((i = 0; i < 300; i++)); do kill -0 "$bpid" 2>/dev/null || break; sleep 0.1; done
    stop_pid "$bpid" 2
    forget_pid "$bpid"
}
say "the same two together"
beside_dd "$W/lat.beside" "$PY" "$HERE/ack_latency.py" 127.0.0.1 "$PORT" 20 --until "$W/bulk.done" --limit 600
dd_beside=$DD_BESIDE
lat_beside=$(cat "$W/lat.beside" 2>/dev/null || true)
say "  ${dd_beside:-?} MiB/s; $lat_beside"
wait_idle
pace=()
ref_rate=$(lat_json rate "$lat_alone" 2>/dev/null || true)
[ -z "$ref_rate" ] || pace=(-r "$ref_rate")
say "reference: 20 durable writers (fsync_ref -w 20 ${pace[*]}), $N messages, alone"
ref20_alone=$(timeout 120 "$OUT/fsync_ref" -w 20 "${pace[@]}" "$W/ref20a" "$N" "$SIZE" </dev/null) || ref20_alone=''
say "  $ref20_alone"
say "reference: 20 durable writers (${pace[*]}) beside dd $BULK_MB MiB conv=fdatasync"
beside_dd "$W/ref.beside" timeout 600 "$OUT/fsync_ref" -w 20 "${pace[@]}" -u "$W/bulk.done" "$W/ref20b" 1000000 "$SIZE"
ref20_beside=$(cat "$W/ref.beside" 2>/dev/null || true)
say "  ${DD_BESIDE:-?} MiB/s; $ref20_beside"
got_lat=$(( $(count_new) - before_lat ))
acked_lat=0
for j in "$lat_alone" "$lat_beside"; do
    [ -z "$j" ] || acked_lat=$(( acked_lat + $(lat_json count "$j") ))
done

rss_hwm=$(proc_field status VmHWM)
tmp_left=$(count_tmp)

# The daemon is done: stop it before the last measurement.
stop_pid "$DPID" 5
DPID=''

# The load generator's own ceiling on this machine: smtp-source against
# Postfix's smtp-sink, which answers 250 at once and keeps nothing.  With
# one session every message is a round of replies, each a wake-up of the
# other process: the ceiling bounds what any server could show.
sink_user=''
[ "$(id -u)" != 0 ] || sink_user='-u nobody'
sink_run() {     # sink_run SESSIONS KEY [SOURCE_OPTION...]: sets R[sink_rate_KEY] and R[sink_t_KEY] (empty if not measured)
    local s=$1 k=$2 attempt sport kpid up i rc t0 t1
    shift 2
    R[sink_rate_$k]='' R[sink_t_$k]=''
    say "load generator ceiling: smtp-source${*:+ $*} -s $s -> smtp-sink (no disk)"
    for attempt in 1 2 3; do
        sport=$(free_port)
        # shellcheck disable=SC2086
        "$TOOLS/smtp-sink" $sink_user "127.0.0.1:$sport" 256 </dev/null >"$W/sink.log" 2>&1 &
        kpid=$!
        PIDS="$PIDS $kpid"
        up=0
        for ((i = 0; i < 50; i++)); do
            kill -0 "$kpid" 2>/dev/null || break
            if (exec 3<>"/dev/tcp/127.0.0.1/$sport") 2>/dev/null; then up=1; break; fi
            sleep 0.1
        done
        if [ "$up" = 1 ]; then
            rc=0
            t0=$(now)
            timeout 60 "$SOURCE" "$@" -s "$s" -m "$N" -l "$SIZE" -f from@x -t user@lan \
                "127.0.0.1:$sport" >"$W/source.sink.log" 2>&1 || rc=$?
            t1=$(now)
            if [ "$rc" = 0 ]; then
                R[sink_t_$k]=$(calc "$t1 - $t0")
                R[sink_rate_$k]=$(calc "$N / ${R[sink_t_$k]}")
            fi
        fi
        stop_pid "$kpid" 2
        forget_pid "$kpid"
        [ "$up" = 0 ] || break
    done
    if [ -n "${R[sink_rate_$k]}" ]; then say "  $(fmt1 "${R[sink_rate_$k]}") msg/s"; else say "  (could not measure)"; fi
}
sink_run 1 s1
sink_run 1 d1 -d
sink_run 20 s20

# ---------------------------------------------------------------- 4. binary
size=$(stat -c %s "$BIN")
size_kib=$(calc "$size / 1024")
bininfo=''
if command -v readelf >/dev/null 2>&1; then
    if readelf -S "$BIN" 2>/dev/null | grep -q '\.symtab'; then bininfo='not stripped'; else bininfo='stripped'; fi
    if readelf -l "$BIN" 2>/dev/null | grep -q 'INTERP'; then bininfo="$bininfo, dynamic"; else bininfo="$bininfo, static"; fi
fi

# ---------------------------------------------------------------- the report
ok() { if "$@"; then echo OK; else echo MISS; fi; }

ref=$(median "${REFS[@]}")

sum_of() {       # sum_of FIELD: R[FIELD_1] + ... + R[FIELD_ROUNDS]
    local r t=0
    for ((r = 1; r <= ROUNDS; r++)); do t=$(calc "$t + ${R[$1_$r]}"); done
    echo "$t"
}

runs_list() {    # runs_list RATES...: "a, b, c"
    local x out=''
    for x in "$@"; do out="$out${out:+, }$(fmt1 "$x")"; done
    echo "$out"
}

row "durable-write reference, 1 writer: write+fsync+rename+fsync(dir), $N x 5 KB" \
    "$(fmt1 "$ref") msg/s (median of $ROUNDS runs: $(runs_list "${REFS[@]}"))" "-" "-"

load_what() {    # load_what PREFIX: how the load generator ran for R[*_PREFIX]
    case $1 in
    s1)  echo "smtp-source 1 session, one connection per message" ;;
    d1)  echo "smtp-source -d 1 session, one connection for all messages" ;;
    s20) echo "smtp-source 20 sessions, one connection per message" ;;
    esac
}
load_row() {     # load_row PREFIX TARGET_RATIO: the row of R[*_PREFIX_1..ROUNDS]
    local p=$1 target=$2 r rates=() paired='' fails='' med ratio verdict value tag
    for ((r = 1; r <= ROUNDS; r++)); do
        tag=${p}_$r
        rates+=("${R[rate_$tag]}")
        paired="$paired${paired:+, }$(fmt2 "$(calc "${R[rate_$tag]} / ${R[rate_ref_$r]}")")x"
        if [ "${R[got_$tag]}" -ne "$N" ]; then
            failed=1
            fails="$fails${fails:+; }run $r: ${R[got_$tag]}/$N files in new/ (smtp-source exit ${R[rc_$tag]}, ${R[errs_$tag]} warning/error lines, messages_in +${R[in_$tag]})"
        fi
    done
    med=$(median "${rates[@]}")
    ratio=$(calc "$med / $ref")
    value="$(fmt1 "$med") msg/s (median of $ROUNDS runs: $(runs_list "${rates[@]}"); paired with each round's reference: $paired)"
    if [ -n "$fails" ]; then
        value="FAIL: $fails. $value"
        verdict="FAIL ($(fmt2 "$ratio")x)"
    elif [ -n "$target" ]; then
        verdict="$(fmt2 "$ratio")x $(ok ge "$ratio" "$target")"
    else
        verdict="$(fmt2 "$ratio")x"
    fi
    [ -n "$fails" ] || value="$value; $N/$N in new/ each run"
    if [ -n "$target" ]; then target=">= ${target}x reference"; else target='- (info)'; fi
    row "picomail, $(load_what "$p"), $N x 5 KB, end-to-end" "$value" "$target" "$verdict"
}
# Issue 15: one session at least 0.8x the reference, 20 sessions at least 2x.
# One session is measured both ways: a connection per message (the client
# then pays a TCP handshake, the greeting, HELO and QUIT each time, and its
# own ceiling against smtp-sink has read 0.81x-0.90x the reference), and one
# connection carrying every message, a session in SMTP's sense.
load_row s1 0.8
load_row d1 0.8
load_row s20 2
lat_row() {      # lat_row WHAT JSON
    if [ -n "$2" ] && [ -n "$(lat_json p50_ms "$2")" ]; then
        row "$1" "median $(lat_json p50_ms "$2") ms, p99 $(lat_json p99_ms "$2") ms, max $(lat_json max_ms "$2") ms; $(lat_json rate "$2") msg/s ($(lat_json count "$2") messages, $(lat_json refused "$2") refused)" "- (info)" "-"
    else
        row "$1" "FAIL: not measured (${2:-no output})" "-" "FAIL"
        failed=1
    fi
}
lat_row "acknowledgement latency (final dot -> 250), 20 sessions, alone (ack_latency.py)" "$lat_alone"
lat_row "the same beside a bulk writer (dd $BULK_MB MiB conv=fdatasync, same file system)" "$lat_beside"
ref_row() {      # ref_row WHAT "count seconds rate p50 p99 max"
    local n t rate p50 p99 max
    read -r n t rate p50 p99 max <<<"$2"
    if [ -n "$max" ]; then
        row "$1" "median $p50 ms, p99 $p99 ms, max $max ms; $(fmt1 "$rate") msg/s ($n messages)" "- (reference)" "-"
    else
        row "$1" "FAIL: not measured (${2:-no output})" "-" "FAIL"
        failed=1
    fi
}
ref_p99() { local _n _t _r _p50 p99 _m; read -r _n _t _r _p50 p99 _m <<<"$1"; echo "$p99"; }
paced="not paced: picomail's rate alone not measured"
[ -z "$ref_rate" ] || paced="paced at picomail's rate alone, $(fmt0 "$ref_rate") msg/s"
ref_row "reference: 20 durable writers (fsync_ref -w 20, $paced), alone" "$ref20_alone"
ref_row "reference: 20 durable writers beside the same bulk writer" "$ref20_beside"
# Neither may collapse: picomail's rate beside dd at least a quarter of its
# own alone, and its p99 beside dd within twice the reference's beside the
# same dd (a message that arrives while a batch is on the disk waits for
# that batch's syncs, then its own).  The growth against picomail alone is
# shown beside the reference's own growth.
p99_ref_beside=$(ref_p99 "$ref20_beside")
if [ -n "$lat_alone" ] && [ -n "$lat_beside" ] && [ -n "$(lat_json p99_ms "$lat_beside")" ] && [ -n "$p99_ref_beside" ]; then
    p99r=$(calc "$(lat_json p99_ms "$lat_beside") / $(lat_json p99_ms "$lat_alone")")
    p99rr=$(calc "$p99_ref_beside / $(ref_p99 "$ref20_alone")")
    p99x=$(calc "$(lat_json p99_ms "$lat_beside") / $p99_ref_beside")
    rater=$(calc "$(lat_json rate "$lat_beside") / $(lat_json rate "$lat_alone")")
    row "picomail beside the bulk writer: p99 against the reference's beside it; rate against alone" \
        "p99 $(fmt2 "$p99x")x the reference's (picomail's p99 $(fmt1 "$p99r")x its own alone, the reference's $(fmt1 "$p99rr")x), rate $(fmt2 "$rater")x alone" \
        "p99 <= 2x, rate >= 0.25x" \
        "$(if lt "$p99x" 2.0001 && ge "$rater" 0.25; then echo OK; else echo MISS; fi)"
fi
if [ -n "$dd_alone" ] && [ -n "$dd_beside" ]; then
    ddr=$(calc "$dd_beside / $dd_alone")
    row "bulk writer (dd $BULK_MB MiB conv=fdatasync): alone / beside picomail's load" \
        "$(fmt0 "$dd_alone") MiB/s / $(fmt0 "$dd_beside") MiB/s ($(fmt2 "$ddr")x)" ">= 0.5x" "$(ok ge "$ddr" 0.5)"
else
    row "bulk writer (dd $BULK_MB MiB conv=fdatasync)" "FAIL: dd did not complete" "-" "FAIL"
    failed=1
fi
if [ "$got_lat" -ne "$acked_lat" ]; then
    row "latency runs: acknowledged messages vs files in new/" "FAIL: $acked_lat acknowledged, $got_lat new files" "equal" "FAIL"
    failed=1
fi
for k in s1 d1 s20; do
    if [ -n "${R[sink_rate_$k]}" ]; then
        row "load generator ceiling: $(load_what "$k") -> smtp-sink (no disk, nothing kept)" \
            "$(fmt1 "${R[sink_rate_$k]}") msg/s ($(fmt2 "${R[sink_t_$k]}") s)" "- (info)" \
            "$(fmt2 "$(calc "${R[sink_rate_$k]} / $ref")")x"
    else
        row "load generator ceiling: $(load_what "$k") -> smtp-sink" "not measured" "- (info)" "-"
    fi
done
for k in s1 d1 s20; do
    cpu=$(sum_of "cpu_$k") wall=$(sum_of "t_$k")
    row "daemon CPU (user+sys) during the loads: $(load_what "$k")" \
        "$(fmt2 "$cpu") s in $(fmt2 "$wall") s wall ($(fmt0 "$(calc "100 * $cpu / $wall")")% of one core; $(fmt0 "$(calc "1000000 * $cpu / ($N * $ROUNDS)")") us/msg)" \
        "- (info)" "-"
done

if [ -n "$rss_idle" ]; then
    row "RSS idle (VmRSS after start)" "$rss_idle KiB" "< 300 KiB" "$(ok lt "$rss_idle" 300)"
    # VmRSS counts the binary's own code pages, which are shared and clean;
    # RssAnon is the memory the daemon really takes.
    row "RSS idle, split: RssAnon (private) / RssFile (the binary's pages)" \
        "${rss_idle_anon:-?} KiB / ${rss_idle_file:-?} KiB" "- (info)" "-"
    # /proc/PID/smaps mapping by mapping.  The binary's pages are shared
    # and clean: the kernel maps them 64 KiB at a time around each one the
    # daemon runs (fault-around), hence the code the daemon runs first in
    # .text (board/common/text-order.txt).  The rest is the daemon's own.
    if [ -n "${RSS_PART[rss_total]-}" ]; then
        part_row() {     # part_row PART WHAT
            row "RSS idle: $2" "${RSS_PART[rss_$1]} KiB (${RSS_PART[anon_$1]} KiB anonymous)" "- (info)" "-"
        }
        part_row text "the binary's code (r-x)"
        part_row rodata "the binary's constants and ELF headers (r--)"
        part_row data "the binary's .data (rw-, file pages written once)"
        part_row bss ".bss (static buffers and state; pages never written cost nothing)"
        part_row heap "heap (brk: the few start-up allocations)"
        part_row stack "stack"
        part_row mmap "anonymous mappings (session, mailbox, DNS and queue pools, TLS sessions: written only when used)"
        part_row files "other files mapped (the time zone)"
        part_row kernel "the kernel's [vdso]"
        part_row total "the parts added up (VmRSS, read a moment later)"
    fi
else
    row "RSS idle (VmRSS after start)" "FAIL: not read" "< 300 KiB" "FAIL"
fi
if [ -n "$rss_conns" ]; then
    row "RSS with $IDLE_CONNS idle connections (greeted, silent)" \
        "$rss_conns KiB (status: ${conns_seen:-?} connections)" "< 1024 KiB" "$(ok lt "$rss_conns" 1024)"
else
    row "RSS with $IDLE_CONNS idle connections (greeted, silent)" \
        "FAIL: not all $IDLE_CONNS were greeted" "< 1024 KiB" "FAIL"
fi
row "RSS peak during the 20-session loads (VmRSS every 50 ms)" \
    "$rss_peak KiB ($rss_samples samples)" "- (info)" "-"
row "VmHWM at the end of the run (whole life of the daemon)" "${rss_hwm:-?} KiB" "- (info)" "-"
row "binary size ($(basename "$BIN"): ${bininfo:-?})" "$(fmt1 "$size_kib") KiB ($size bytes)" \
    "< 300 KiB" "$(ok lt "$size_kib" 300)"
nmsg=$((N * ROUNDS))
row "bytes written per message, 1-session loads: /proc/PID/io write_bytes / messages" \
    "$(fmt0 "$(calc "$(sum_of wb_s1) / $nmsg")") B" "- (info)" "-"
row "bytes passed to write(2) per message, 1-session loads: /proc/PID/io wchar / messages (incl. SMTP replies)" \
    "$(fmt0 "$(calc "$(sum_of wc_s1) / $nmsg")") B" "- (info)" "-"
if [ -n "$DEV_STAT" ]; then
    row "device writes per message, 1-session loads: $DEV sectors x 512 / messages (incl. metadata; whole device, so other activity too)" \
        "$(fmt0 "$(calc "$(sum_of ds_s1) * 512 / $nmsg")") B" "- (info)" "-"
    row "device writes per message, durable-write reference (same measure)" \
        "$(fmt0 "$(calc "$(sum_of ds_ref) * 512 / $nmsg")") B" "- (info)" "-"
fi
if [ "$tmp_left" -ne 0 ]; then
    row "files left in tmp/ after the loads" "$tmp_left" "0" "FAIL"
    failed=1
fi

# ---------------------------------------------------------------- 5. TLS (issue 4)
# Handshakes per second (RSA-2048, ECDSA P-256; SMTP STARTTLS, POP3S) and the
# RSS per open TLS session: its own daemons, rows appended to the table.
say "TLS: tests/bench/tls_bench.py"
if tls_rows=$(timeout 300 "$PY" "$HERE/tls_bench.py" "$BIN" "$W/tls" </dev/null); then
    ROWS="$ROWS$tls_rows
"
else
    row "TLS handshakes and RSS per session (tests/bench/tls_bench.py)" \
        "FAIL: the TLS bench could not run (see stderr)" "-" "FAIL"
    failed=1
fi

# ---------------------------------------------------------------- 6. POP3 (issue 3)
say "POP3: tests/bench/pop3_bench.py"
if pop3_rows=$(timeout 300 "$PY" "$HERE/pop3_bench.py" "$BIN" "$W/pop3" </dev/null); then
    ROWS="$ROWS$pop3_rows
"
else
    row "POP3 session (tests/bench/pop3_bench.py)" "FAIL: ${pop3_rows:-the POP3 bench could not run}" "-" "FAIL"
    failed=1
fi

# ---------------------------------------------------------------- 7. IMAP (issue 16)
# 1000 x 5 KB read by picomail and by Dovecot's imapd on the same files:
# SELECT, FETCH of headers, of bodies, SEARCH TEXT, and the memory of 20
# IDLE sessions.  Its own daemons; rows appended to the table.
say "IMAP: tests/bench/imap_bench.py (beside Dovecot's imapd when it runs here)"
mkdir -p "$W/imap"
chmod 755 "$W" "$W/imap"          # Dovecot's mail processes run as nobody
if imap_rows=$(timeout 600 "$PY" "$HERE/imap_bench.py" "$BIN" "$W/imap" </dev/null); then
    ROWS="$ROWS$imap_rows
"
else
    row "IMAP session (tests/bench/imap_bench.py)" "FAIL: the IMAP bench could not run (see stderr)" "-" "FAIL"
    failed=1
fi

# ---------------------------------------------------------------- 8. relay (issue 5)
# The same N x 5 KB from smtp-source -s 20, relayed through picomail's queue
# to smtp-sink as the smarthost: first accept to last delivered, msg/s and
# the daemon's peak RSS.  Its own daemon; one row appended to the table.
say "relay: tests/bench/relay_bench.py ($N x 5 KB to smtp-sink as the smarthost)"
relay_rc=0
relay_row=$(timeout 900 "$PY" "$HERE/relay_bench.py" --messages "$N" "$BIN" "$W/relay" \
    </dev/null) || relay_rc=$?
case $relay_row in
'| '*) ROWS="$ROWS$relay_row
" ;;
*) row "picomail relaying $N x 5 KB through a smarthost (tests/bench/relay_bench.py)" \
       "FAIL: the relay bench could not run (exit $relay_rc, see stderr)" "-" "FAIL" ;;
esac
[ "$relay_rc" -eq 0 ] || failed=1

# ---------------------------------------------------------------- 9. CPU per message
# tests/bench/cpu_bench.py: the daemon's CPU time per message in, out by
# POP3, out by relay, and per TLS handshake; on the host, then for each
# foreign board's binary under qemu-user (built here if missing), as a
# ratio to the host's figure from a run of the same size.
CPU_MSGS=${BENCH_CPU_MESSAGES:-1000}
CPU_HS=${BENCH_CPU_HANDSHAKES:-200}
BOARD_MSGS=${BENCH_BOARD_MESSAGES:-200}
BOARD_HS=${BENCH_BOARD_HANDSHAKES:-20}
CPU_BOARDS=${BENCH_BOARDS-aarch64 armv7 mipsel}
CPU_KEYS='smtp_in_us pop3_out_us relay_out_us tls_ecdsa_us tls_rsa_us'
cpu_run() {      # cpu_run BINARY WRAP MESSAGES HANDSHAKES: the JSON line, or ''
    PICOMAIL_WRAP=$2 timeout 1800 "$PY" "$HERE/cpu_bench.py" "$1" --messages "$3" --handshakes "$4" \
        </dev/null 2>>"$W/cpu.log" | tail -n 1 || true
}
cpu_ok() { [ -n "$1" ] && [ -z "$(lat_json error "$1")" ]; }
say "CPU per message: tests/bench/cpu_bench.py, host, $CPU_MSGS messages, $CPU_HS handshakes"
cpu_host=$(cpu_run "$BIN" '' "$CPU_MSGS" "$CPU_HS")
if cpu_ok "$cpu_host"; then
    row "daemon CPU per message, host (cpu_bench.py, $CPU_MSGS x 5 KB; $CPU_HS handshakes)" \
        "SMTP in $(lat_json smtp_in_us "$cpu_host") us, POP3 out $(lat_json pop3_out_us "$cpu_host") us, relay out $(lat_json relay_out_us "$cpu_host") us; TLS handshake ECDSA P-256 $(lat_json tls_ecdsa_us "$cpu_host") us, RSA-2048 $(lat_json tls_rsa_us "$cpu_host") us" \
        "- (info)" "-"
else
    row "daemon CPU per message, host (cpu_bench.py)" "FAIL: ${cpu_host:-no output} (see $W/cpu.log)" "-" "FAIL"
    failed=1
fi
if [ -n "$CPU_BOARDS" ] && cpu_ok "$cpu_host"; then
    say "CPU per message, host again at the boards' size: $BOARD_MSGS messages, $BOARD_HS handshakes"
    cpu_small=$(cpu_run "$BIN" '' "$BOARD_MSGS" "$BOARD_HS")
fi
for b in $CPU_BOARDS; do
    cpu_ok "${cpu_small:-}" || break
    bq=$(awk '$1 == "QEMU" { print $3 }' "$ROOT/board/$b/board.mk")
    bb=$ROOT/build/$b/picomail
    if [ ! -x "$bb" ]; then
        say "building $b: make BOARD=$b"
        (cd "$ROOT" && make -s BOARD="$b" deps "build/$b/picomail") >>"$W/cpu.log" 2>&1 || true
    fi
    if [ ! -x "$bb" ] || ! command -v "$bq" >/dev/null 2>&1; then
        row "daemon CPU per message, $b under $bq" "not measured: no binary or no emulator (see $W/cpu.log)" "- (info)" "-"
        continue
    fi
    say "CPU per message, $b under $bq: $BOARD_MSGS messages, $BOARD_HS handshakes"
    cpu_b=$(cpu_run "$bb" "$bq" "$BOARD_MSGS" "$BOARD_HS")
    if ! cpu_ok "$cpu_b"; then
        row "daemon CPU per message, $b under $bq" "FAIL: ${cpu_b:-no output} (see $W/cpu.log)" "-" "FAIL"
        failed=1
        continue
    fi
    ratios=''
    for k in $CPU_KEYS; do
        hv=$(lat_json "$k" "$cpu_small") bv=$(lat_json "$k" "$cpu_b")
        ratios="$ratios${ratios:+, }${k%_us} $(if [ "${hv:-0}" -gt 0 ]; then fmt1 "$(calc "$bv / $hv")"; else echo '?'; fi)x"
    done
    row "daemon CPU per message, $b under $bq, as a ratio to the host's ($BOARD_MSGS messages, $BOARD_HS handshakes each)" \
        "$ratios" "- (info)" "-"
done

fstype=$(stat -f -c %T "$OUT")
journal=''
if [ -n "$DEV" ] && [ -r "/sys/fs/ext4/$(basename "$(readlink -f "$DEV")")/journal_task" ]; then
    case $(cat "/sys/fs/ext4/$(basename "$(readlink -f "$DEV")")/journal_task") in
    '<none>'|'') journal=', no journal' ;;
    *)           journal=', journaled' ;;
    esac
fi
mtype=$(findmnt -n -o FSTYPE -T "$OUT" 2>/dev/null || true)
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
pfv=$(sed 's/_amd64.deb$//; s/\.deb$//' "$TOOLS/postfix/VERSION" 2>/dev/null || echo '?')

echo "machine: nproc $(nproc), build/ on $fstype${mtype:+ ($mtype$journal)}${DEV:+ on $DEV}, kernel $(uname -r)${cpu:+, $cpu}; load generator $pfv smtp-source; $ROUNDS rounds of (reference, 1 session with a connection per message, 1 session with one connection, 20 sessions) back to back; ratio = median picomail rate / median reference rate ($(fmt1 "$ref") msg/s); load average at start $load0"
[ -z "$recent_note" ] || echo "$recent_note"
echo
echo "| what | value | target | ratio / OK |"
echo "| --- | --- | --- | --- |"
printf '%s' "$ROWS"

[ "$failed" -eq 0 ] || exit 1
exit 0
