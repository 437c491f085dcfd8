#!/bin/bash
# test-cross.sh [BOARD...] - "make test-cross": build every board, then test
# each board's own binaries, the foreign ones under qemu-user (board.mk's
# QEMU, Debian's qemu-user-static, called directly: no binfmt registration).
#
# Boards: the arguments, else $CROSS_BOARDS, else every board/*/board.mk
# with a Debian architecture (aarch64 armv7 mipsel x86_64).
#
# For a foreign board (one with QEMU):
#  - the C unit tests (tests/unit/unit.mk's rules, built with the board's
#    compiler, static, without the sanitizers) run under qemu; test_auth is
#    left out, as it compares with the libc's crypt(3) and Debian's musl
#    has none;
#  - part of the integration suite runs against build/<board>/picomail:
#    build/<board>/qemu/picomail (and picomail-test) is a two-line script
#    that execs `qemu-<arch>-static build/<board>/picomail`, and the suite
#    gets PICOMAIL_BUILD=build/<board>/qemu.  exec keeps the PID, so the
#    tests' signals (SIGHUP, SIGTERM, SIGKILL) reach qemu, which hands them
#    to the guest.
# The integration tests: $CROSS_TESTS (files under tests/integration), minus
# the $CROSS_K deselection (pytest -k), both overridable.  The default is
# the protocol and storage part, where word size, endianness and alignment
# could show: SMTP in and Maildir, smuggling, the error table, POP3,
# injected faults, the daemon's signals and status, the TLS handshakes
# (BearSSL built for the board), and IMAP (UID files and the folder index,
# FETCH, SEARCH, APPEND/COPY/MOVE, IDLE's inotify).  Left out: kill -9 rounds, idle timeouts,
# login throttling and handshake latency (time, emulated time at that, not
# architecture) and the external-client suites.
# A native board (no QEMU: x86_64, the build host's own kind) runs only
# $CROSS_NATIVE_TESTS, since `make test` has just run everything against
# build/host, made by the same compiler.
# Each foreign board's files are dealt out to $CROSS_SHARDS pytest runs
# (default 2), and $CROSS_JOBS runs (default 12: all) go at once: under qemu they
# mostly wait on sockets, and the emulation's CPU time is what bounds them.
# Logs: build/<board>/build.log, test-cross.log (the unit tests and each
# shard's pytest output, one after the other).
# Prints one line per board (build time, stripped size, results) and a
# total; exits 1 if a board did not build or a test failed.
set -eu

me=test-cross.sh
die() { echo "$me: $*" >&2; exit 1; }

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
MAKE=${MAKE:-make}
PYTHON=${PYTHON:-/usr/bin/python3}
JOBS=${CROSS_JOBS:-12}
SHARDS=${CROSS_SHARDS:-2}
NPROC=$(nproc 2>/dev/null || echo 2)
# Longest first, so that dealing them out to the shards in turn evens them.
TESTS=${CROSS_TESTS:-"test_tls.py test_smuggling.py test_pop3.py test_errors.py test_smtp.py test_durability.py test_daemon.py test_imap_search.py test_imap.py test_imap_mail.py test_imap_fetch.py test_imap_idle.py"}
NATIVE_TESTS=${CROSS_NATIVE_TESTS:-"test_smtp.py"}
DESELECT=${CROSS_K-"not kill9 and not idle_timeout and not throttled and not nagle"}
UNIT_SKIP="test_auth"

# A variable of board/<b>/board.mk ("NAME := value"), without running make.
board_var() {   # $1 = board, $2 = name
    [ -f "board/$1/board.mk" ] || die "no board/$1/board.mk"
    awk -v k="$2" '$1 == k && ($2 == ":=" || $2 == "=" || $2 == "?=") {
        $1 = ""; $2 = ""; sub(/^ +/, ""); print; exit }' "board/$1/board.mk"
}

if [ $# -gt 0 ]; then BOARDS=$*
elif [ -n "${CROSS_BOARDS-}" ]; then BOARDS=$CROSS_BOARDS
else
    # board/buildroot/ has no DEB_ARCH: Buildroot's toolchain drives it.
    BOARDS=''
    for f in board/*/board.mk; do
        b=${f#board/}; b=${b%/board.mk}
        [ -z "$(board_var "$b" DEB_ARCH)" ] || BOARDS="$BOARDS $b"
    done
fi

# ---------------------------------------------------------------- packages
# One deps.sh call for every board, so one apt-get update at most.
pkgs=''
for b in $BOARDS; do
    for p in $(board_var "$b" BOARD_PACKAGES); do pkgs="$pkgs pkg:$p"; done
done
# shellcheck disable=SC2086  # a list of pkg:NAME words
bash board/common/deps.sh build test $pkgs

# ---------------------------------------------------------------- build
# One board at a time, each with every core (BearSSL's script does the same).
declare -A build_s size status qemu
for b in $BOARDS; do
    start=$(date +%s)
    log=build/$b/build.log
    mkdir -p "build/$b"
    qemu[$b]=$(board_var "$b" QEMU)
    if ! $MAKE --no-print-directory -j"$NPROC" BOARD="$b" \
            "build/$b/picomail" "build/$b/picomail-test" >"$log" 2>&1; then
        build_s[$b]=$(( $(date +%s) - start ))
        size[$b]=-
        status[$b]="build failed"
        echo "$me: $b: build failed (tail of $log):" >&2
        tail -n 20 "$log" >&2
        continue
    fi
    status[$b]=built
    grep '^bearssl.sh: built' "$log" || true
    # The unit tests, with the board's compiler (unit.mk's rules, its UNIT_
    # variables overridden); the sanitizers need a runtime musl lacks.
    # Not position-independent, as the binaries (-mno-abicalls needs it).
    if [ -n "${qemu[$b]}" ]; then
        units=''
        for f in tests/unit/test_*.c; do
            t=${f##*/}; t=${t%.c}
            case " $UNIT_SKIP " in *" $t "*) continue ;; esac
            units="$units build/$b/unit/$t"
        done
        # A board that links a libc of its own build (the Makefile's
        # LIBC_REBUILD) links the tests with it too, start files and all
        # (compiling with -c, gcc only warns that they are not used).
        libc_ld=''
        if [ "$(board_var "$b" LIBC_REBUILD)" = yes ]; then
            l=build/$b/libc
            libc_ld="-nostartfiles $l/crt1.o $l/crti.o $l/crtn.o -L$l"
        fi
        # shellcheck disable=SC2086  # a list of targets
        if ! $MAKE --no-print-directory -j"$NPROC" -f tests/unit/unit.mk \
                UNIT_CC="$(board_var "$b" CC) -static $libc_ld" UNIT_LDLIBS= \
                UNIT_CFLAGS="-std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g -fno-pie $(board_var "$b" BOARD_CFLAGS)" \
                UNIT_OUT="build/$b/unit" UNIT_BEARSSL="build/$b/bearssl" $units >>"$log" 2>&1; then
            status[$b]="unit tests do not build"
            echo "$me: $b: unit tests do not build (tail of $log):" >&2
            tail -n 20 "$log" >&2
        fi
    fi
    build_s[$b]=$(( $(date +%s) - start ))
    size[$b]=$(stat -c %s "build/$b/picomail")
    # Static, stripped.
    if readelf -l "build/$b/picomail" 2>/dev/null | grep -q 'program interpreter'; then
        status[$b]="not static"
    fi
    if readelf -S "build/$b/picomail" 2>/dev/null | grep -q '\.symtab'; then
        status[$b]="not stripped"
    fi
done

# ---------------------------------------------------------------- wrappers
rundir() {   # the PICOMAIL_BUILD directory of a board
    if [ -n "${qemu[$1]}" ]; then echo "$ROOT/build/$1/qemu"; else echo "$ROOT/build/$1"; fi
}
for b in $BOARDS; do
    if [ "${status[$b]}" != built ] || [ -z "${qemu[$b]}" ]; then continue; fi
    q=$(command -v "${qemu[$b]}") || die "${qemu[$b]} not found (Debian package qemu-user-static)"
    d=$(rundir "$b")
    mkdir -p "$d"
    for t in picomail picomail-test; do
        printf '#!/bin/sh\n# %s: build/%s/%s under qemu-user\nexec %s %s "$@"\n' \
            "$me" "$b" "$t" "$q" "$ROOT/build/$b/$t" >"$d/$t.tmp"
        chmod 755 "$d/$t.tmp"
        mv "$d/$t.tmp" "$d/$t"
    done
    # The foreign binary must at least say its version under qemu.
    if ! v=$("$d/picomail" version 2>&1); then
        status[$b]="does not run under ${qemu[$b]}: $v"
    fi
done

# ---------------------------------------------------------------- tests
test_files() {   # $1 = patterns
    local pat f out=''
    for pat in $1; do
        for f in tests/integration/$pat; do
            if [ -f "$f" ]; then out="$out $f"; fi
        done
    done
    [ -n "$out" ] || die "no test file matches '$1'"
    echo "$out"
}

# The unit tests of a foreign board: build/<b>/test-cross.unit.log and
# build/<b>/test-cross.unit.rc ("seconds failures").
run_units() {   # $1 = board
    local b=$1 start rc ufail=0 t log=build/$1/test-cross.unit.log
    start=$(date +%s)
    : >"$log"
    for t in "build/$b"/unit/test_*; do
        case $t in *.out) continue ;; esac
        [ -x "$t" ] || continue
        rc=0
        timeout -k 5 300 "${qemu[$b]}" "$t" >"$t.out" 2>&1 || rc=$?
        # "test_x: N passed, M failed", or a crash counted as a failure.
        if grep -Eq '^test_[a-z0-9_]+: [0-9]+ passed, [0-9]+ failed$' "$t.out"; then
            grep -E '^test_[a-z0-9_]+: [0-9]+ passed, [0-9]+ failed$' "$t.out" | tail -n 1 >>"$log"
        else
            echo "${t##*/}: 0 passed, 1 failed (exit $rc)" >>"$log"
        fi
        [ "$rc" = 0 ] || ufail=$((ufail + 1))
    done
    echo "$(( $(date +%s) - start )) $ufail" >"build/$b/test-cross.unit.rc"
}

# Each shard in a network namespace of its own (root: unshare -n, then lo
# up), so that ten suites picking "free" loopback ports at once cannot take
# each other's between the pick and the daemon's bind.  Elsewhere they share
# the host's loopback.
netns=()
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 &&
   unshare -n sh -c 'ip link set lo up' 2>/dev/null; then
    netns=(unshare -n sh -c 'ip link set lo up && exec "$@"' sh)
fi

# One shard of a board's integration tests: build/<b>/test-cross.<n>.log
# and build/<b>/test-cross.<n>.rc ("seconds pytest-exit").
run_shard() {   # $1 = board, $2 = shard number, $3 = its test files
    local b=$1 n=$2 start rc=0
    start=$(date +%s)
    # shellcheck disable=SC2086  # $3 is a list of paths
    PICOMAIL_BUILD=$(rundir "$b") timeout -k 10 900 "${netns[@]}" \
        "$PYTHON" -m pytest -q -p no:cacheprovider ${DESELECT:+-k "$DESELECT"} $3 \
        >"build/$b/test-cross.$n.log" 2>&1 || rc=$?
    echo "$(( $(date +%s) - start )) $rc" >"build/$b/test-cross.$n.rc"
}

running=()
start_job() {   # a command, run in the background when a slot is free
    while [ "${#running[@]}" -ge "$JOBS" ]; do
        wait "${running[0]}" || true
        running=("${running[@]:1}")
    done
    "$@" &
    running+=("$!")
}
declare -A nshards
for b in $BOARDS; do
    rm -f "build/$b"/test-cross.*
    [ "${status[$b]}" = built ] || continue
    if [ -n "${qemu[$b]}" ]; then
        start_job run_units "$b"
        # Deal the files out to the shards in turn.
        i=0; shard=()
        for f in $(test_files "$TESTS"); do
            shard[i % SHARDS]="${shard[i % SHARDS]-} $f"
            i=$((i + 1))
        done
        nshards[$b]=${#shard[@]}
        for n in "${!shard[@]}"; do start_job run_shard "$b" "$n" "${shard[n]}"; done
    else
        nshards[$b]=1
        start_job run_shard "$b" 0 "$(test_files "$NATIVE_TESTS")"
    fi
done
for p in "${running[@]}"; do wait "$p" || true; done

# ---------------------------------------------------------------- report
failed=0 passed_all=0 failed_all=0
sum() {   # $1 = word (passed|failed): the sum of "N word" over stdin
    awk -v w="$1" '{ for (i = 2; i <= NF; i++) if ($i ~ "^" w) n += $(i - 1) } END { print n + 0 }'
}
printf '%-8s %6s %9s  %s\n' board build stripped results
for b in $BOARDS; do
    if [ "${status[$b]}" != built ]; then
        printf '%-8s %5ss %9s  %s\n' "$b" "${build_s[$b]}" "${size[$b]}" "${status[$b]}"
        failed=1
        failed_all=$((failed_all + 1))
        continue
    fi
    log=build/$b/test-cross.log
    : >"$log"
    bad=0 up=0 uf=0 p=0 f=0 d=0 secs=0
    if [ -n "${qemu[$b]}" ]; then
        ulog=build/$b/test-cross.unit.log
        cat "$ulog" >>"$log"
        read -r s ufail <"build/$b/test-cross.unit.rc" || { s=0; ufail=1; }
        up=$(sum passed <"$ulog")
        uf=$(sum failed <"$ulog")
        [ "$ufail" = 0 ] && [ "$uf" = 0 ] || bad=1
        secs=$s
    fi
    for n in $(seq 0 $((nshards[$b] - 1))); do
        slog=build/$b/test-cross.$n.log
        cat "$slog" >>"$log" 2>/dev/null || true
        read -r s rc <"build/$b/test-cross.$n.rc" || { s=0; rc=1; }
        # pytest's last line: "3 failed, 70 passed, 1 error, 2 deselected in 25.66s"
        last=$(grep -E '(passed|failed|error|deselected).* in [0-9.]+s' "$slog" | tail -n 1)
        sp=$(printf '%s\n' "$last" | sum passed)
        sf=$(printf '%s\n' "$last" | sum '(failed|error)')
        if [ "$rc" != 0 ] && [ "$sf" = 0 ]; then sf=1; fi   # crashed, timed out
        [ "$rc" = 0 ] || bad=1
        p=$((p + sp)); f=$((f + sf))
        d=$((d + $(printf '%s\n' "$last" | sum deselected)))
        [ "$s" -le "$secs" ] || secs=$s
    done
    passed_all=$((passed_all + up + p))
    failed_all=$((failed_all + uf + f))
    if [ -n "${qemu[$b]}" ]; then
        what="unit $up passed, $uf failed; suite $p passed, $f failed, $d deselected (${qemu[$b]}, ${nshards[$b]} shards)"
    else
        what="suite $p passed, $f failed (native)"
    fi
    printf '%-8s %5ss %9s  %s in %ss\n' "$b" "${build_s[$b]}" "${size[$b]}" "$what" "$secs"
    if [ "$bad" = 1 ]; then
        failed=1
        grep -E '^(FAILED|ERROR) |^test_[a-z0-9_]+: [0-9]+ passed, [1-9]' "$log" |
            sed "s/^/  $b: /" | head -n 20
        echo "  $b: logs in $log"
    fi
done
echo "test-cross: $passed_all passed, $failed_all failed"
exit $failed
