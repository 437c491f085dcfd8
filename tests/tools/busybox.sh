#!/bin/bash
# busybox.sh OUTDIR - a static BusyBox with the mail applets, for the tests.
#
# Result:  OUTDIR/busybox   static; applets popmaildir, sendmail, nc, sh (ash)
#                           and what an init script needs (test, echo, printf,
#                           cat, kill, sleep, mkdir, chown, chmod, rm,
#                           start-stop-daemon, pidof, grep, sed, cut, tr, head,
#                           tail, env, true, false, ls, id)
#          OUTDIR/build/    the out-of-tree build (.config, objects)
# Debian's busybox package is built without the mail applets, so this builds
# BusyBox from Debian's source package (apt-get source busybox, unpacked once
# into SRC_CACHE, default <repo>/build/src), as a firmware build would:
# allnoconfig, then the applets above switched on in .config.
# Compiler: musl-gcc when it builds, else gcc -static (glibc); BUSYBOX_CC=...
# forces one (not CC: a board's cross compiler must not build the test tool).
# Other environment: JOBS (parallel make jobs, default 2).
# Cached: does nothing when OUTDIR/busybox exists and is newer than this
# script. Prints one line when it builds. Root on Debian installs what is
# missing through board/common/deps.sh.
set -eu

me=busybox.sh
die() { echo "$me: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $me OUTDIR"
OUT=$1
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=board/common/debsrc.sh
. "$ROOT/board/common/debsrc.sh"
SRC_CACHE=${SRC_CACHE:-$ROOT/build/src}
BB=$OUT/busybox

fresh() { [ -x "$BB" ] && [ "$BB" -nt "$SELF" ]; }
fresh && exit 0

# The applets, as .config symbols. Shell functions, `local` and $(...) are
# always in ash; popmaildir deletes what it fetched unless given -k (there is
# no separate "delete" option in BusyBox 1.35).
SYMBOLS='
STATIC
BUSYBOX
SHOW_USAGE
FEATURE_VERBOSE_USAGE
INCLUDE_SUSv2
POPMAILDIR
FEATURE_POPMAILDIR_DELIVERY
SENDMAIL
NC
SH_IS_ASH
BASH_IS_NONE
ASH
ASH_OPTIMIZE_FOR_SIZE
ASH_BASH_COMPAT
ASH_ECHO
ASH_PRINTF
ASH_TEST
ASH_GETOPTS
ASH_CMDCMD
ECHO
FEATURE_FANCY_ECHO
PRINTF
TEST
TEST1
TEST2
FEATURE_TEST_64
CAT
KILL
KILLALL
SLEEP
FEATURE_FANCY_SLEEP
MKDIR
CHOWN
CHMOD
RM
START_STOP_DAEMON
FEATURE_START_STOP_DAEMON_LONG_OPTIONS
FEATURE_START_STOP_DAEMON_FANCY
PIDOF
FEATURE_PIDOF_SINGLE
FEATURE_PIDOF_OMIT
GREP
EGREP
FEATURE_GREP_CONTEXT
SED
CUT
TR
FEATURE_TR_CLASSES
HEAD
FEATURE_FANCY_HEAD
TAIL
FEATURE_FANCY_TAIL
ENV
TRUE
FALSE
LS
FEATURE_LS_FILETYPES
FEATURE_LS_FOLLOWLINKS
FEATURE_LS_RECURSIVE
FEATURE_LS_WIDTH
FEATURE_LS_SORTFILES
FEATURE_LS_TIMESTAMPS
FEATURE_LS_USERNAME
ID
LONG_OPTS
FEATURE_SH_MATH
FEATURE_SH_MATH_64
FEATURE_EDITING
'
# Must be in the result (checked with `busybox --list`).
APPLETS='popmaildir sendmail nc sh ash echo printf test [ [[ cat kill sleep mkdir
chown chmod rm start-stop-daemon pidof grep sed cut tr head tail env true false
ls id'

# ---------------------------------------------------------------- packages
# dpkg-dev gives dpkg-source (and bzip2, xz-utils, patch) for apt-get source;
# libc6-dev is for the host tools of Kconfig (gcc only recommends it).
if [ "$(id -u)" = 0 ]; then
    bash "$ROOT/board/common/deps.sh" build pkg:libc6-dev pkg:bzip2 pkg:xz-utils
else
    bash "$ROOT/board/common/deps.sh" -n build ||
        die "missing build tools (run as root, or install the packages named above)"
    [ -f /usr/include/stdio.h ] || die "missing /usr/include/stdio.h (install the Debian package libc6-dev)"
fi

# ---------------------------------------------------------------- lock
# Two `make test` runs may start at once: one fetch and one build at a time.
mkdir -p "$SRC_CACHE" "$OUT"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$SRC_CACHE/.busybox.lock"
    flock 9
    fresh && exit 0     # built by whoever held the lock
fi

start=$(date +%s)

# ---------------------------------------------------------------- source
fetch_debian_source() {
    local s
    for s in "$SRC_CACHE"/busybox-*/Makefile; do
        [ -f "$s" ] && [ -f "${s%/Makefile}/mailutils/popmaildir.c" ] && { SRC=${s%/Makefile}; return 0; }
    done
    [ "$(id -u)" = 0 ] || die "no BusyBox source in $SRC_CACHE; run as root to fetch Debian's (apt-get source busybox)"
    command -v apt-get >/dev/null 2>&1 || die "no apt-get: unpack a BusyBox source tree as $SRC_CACHE/busybox-<version>"
    local log
    log=$(mktemp "${TMPDIR:-/tmp}/busybox-src.XXXXXX")
    # deb-src entries: Debian's own sources (board/common/debsrc.sh).
    debsrc_enable busybox "$log" || { cat "$log" >&2; die "apt-get update failed"; }
    # Unpack in a temporary directory next to the cache, then move into place.
    local tmp
    tmp=$(mktemp -d "$SRC_CACHE/.get.XXXXXX")
    if ! (cd "$tmp" && apt-get source -q busybox) >>"$log" 2>&1; then
        cat "$log" >&2; rm -rf "$tmp"; die "apt-get source busybox failed"
    fi
    for s in "$tmp"/busybox-*/Makefile; do
        [ -f "$s" ] || { cat "$log" >&2; rm -rf "$tmp"; die "apt-get source busybox: no busybox-*/Makefile unpacked"; }
        s=${s%/Makefile}
        SRC=$SRC_CACHE/${s##*/}
        rm -rf "$SRC"
        mv "$s" "$SRC"
        mkdir -p "$SRC_CACHE/debian-packages"
        mv "$tmp"/busybox_*.dsc "$tmp"/busybox_*.tar.* "$SRC_CACHE/debian-packages/" 2>/dev/null || true
    done
    rm -rf "$tmp" "$log"
}
fetch_debian_source

# ---------------------------------------------------------------- build
# Out of tree (make O=...), so the shared source tree stays clean. Nothing of
# a calling make (make -j8 CC=..., BOARD=...) leaks into BusyBox's own.
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES

build() {   # $1 = CC; output in $OUT/build, log in $OUT/build.log
    local cc=$1 b=$OUT/build sym
    rm -rf "$b"
    mkdir -p "$b"
    {
        make -C "$SRC" O="$b" CC="$cc" allnoconfig >/dev/null &&
        for sym in $SYMBOLS; do
            if grep -q "^# CONFIG_$sym is not set" "$b/.config"; then
                sed -i "s/^# CONFIG_$sym is not set\$/CONFIG_$sym=y/" "$b/.config"
            elif ! grep -q "^CONFIG_$sym=" "$b/.config"; then
                echo "CONFIG_$sym=y" >>"$b/.config"
            fi
        done &&
        # The other choices of the sh/bash choice groups must be off.
        sed -i -e 's/^CONFIG_SH_IS_NONE=y$/# CONFIG_SH_IS_NONE is not set/' \
               -e 's/^CONFIG_SH_IS_HUSH=y$/# CONFIG_SH_IS_HUSH is not set/' \
               -e 's/^CONFIG_BASH_IS_ASH=y$/# CONFIG_BASH_IS_ASH is not set/' \
               -e 's/^CONFIG_BASH_IS_HUSH=y$/# CONFIG_BASH_IS_HUSH is not set/' "$b/.config" &&
        # New questions opened by the symbols above take their defaults.
        yes "" | make -C "$b" CC="$cc" oldconfig >/dev/null &&
        make -C "$b" CC="$cc" -j"${JOBS:-2}" busybox
    } >"$OUT/build.log" 2>&1
}

check_result() {   # $1 = binary
    local a list missing=''
    "$1" true 2>/dev/null || return 1
    list=$("$1" --list) || return 1
    for a in $APPLETS; do
        printf '%s\n' "$list" | grep -qxF -- "$a" || missing="$missing $a"
    done
    [ -z "$missing" ] || { echo "$me: applets missing from the build:$missing" >&2; return 1; }
    # static: no program interpreter
    if command -v readelf >/dev/null 2>&1 && readelf -l "$1" | grep -q 'program interpreter'; then
        echo "$me: $1 is not static" >&2; return 1
    fi
}

if [ -n "${BUSYBOX_CC-}" ]; then compilers=$BUSYBOX_CC
elif command -v musl-gcc >/dev/null 2>&1; then compilers="musl-gcc gcc"
else compilers=gcc; fi
used=''
for cc in $compilers; do
    command -v "${cc%% *}" >/dev/null 2>&1 || continue
    if build "$cc" && check_result "$OUT/build/busybox"; then used=$cc; break; fi
    echo "$me: building with $cc failed (tail of $OUT/build.log):" >&2
    tail -n 15 "$OUT/build.log" >&2
done
[ -n "$used" ] || die "could not build BusyBox from $SRC (log: $OUT/build.log)"
cp "$OUT/build/busybox" "$BB.tmp"
mv "$BB.tmp" "$BB"
end=$(date +%s)
echo "$me: built $BB from ${SRC##*/} ($(( $(stat -c %s "$BB") / 1024 )) KiB static, CC=$used, $((end - start)) s)"
