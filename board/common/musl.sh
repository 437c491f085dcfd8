#!/bin/bash
# musl.sh CC OUTDIR - musl's libc.a rebuilt from Debian's source package, for
# a board whose Debian libc.a is larger than it has to be (board/mipsel:
# Debian's is MIPS32 and position-independent, "abicalls", 53 KB of the
# binary's code).
#
# Result:  OUTDIR/libc.a and its start files OUTDIR/crt1.o, crti.o, crtn.o
#          (use: -nostartfiles OUTDIR/crt1.o OUTDIR/crti.o -L OUTDIR ...
#          OUTDIR/crtn.o: -L comes before the musl-gcc wrapper's own, so the
#          link takes this libc.a instead of Debian's; the headers stay
#          Debian's, of the same version).  The start files have to be this
#          build's: Debian's (the wrapper's Scrt1.o) are PIC, and a static
#          program that links them with a libc that is not crashes before
#          main (seen under qemu-mipsel).
# CC is the board's real compiler (mipsel-linux-gnu-gcc), not the musl-gcc
# wrapper: musl's build brings its own headers.
# The source is Debian's musl at the version of the board's installed
# musl-dev (DEB_ARCH), the one whose headers picomail compiles against:
# apt-get source musl=VERSION, cached unpacked in SRC_CACHE (default
# <repo>/build/src), beside BearSSL's (bearssl.sh).
# Environment:
#   DEB_ARCH      the board's Debian architecture (mipsel): which musl-dev
#                 (default: the build machine's own)
#   LIBC_CFLAGS   flags for every object (-march, -mno-abicalls, -Oz ...)
#   LIBC_COMPRESSED_CFLAGS
#                 flags tried first for each C file (-mips16): a file that
#                 does not compile so keeps LIBC_CFLAGS alone.  Those are
#                 the ones with inline assembly that the compressed set
#                 lacks (system calls, the thread pointer's rdhwr) and the
#                 assembly files.  Empty: one pass, LIBC_CFLAGS alone.
#   LINK_CC       the board's compiler (mipsel-linux-musl-gcc): links a
#                 check program against the result
#   QEMU          runs it (qemu-mipsel-static)
#   JOBS, AR, NM  parallel compiles (default nproc), the archiver, and
#                 nm (default: AR's sibling)
# Cached: does nothing when OUTDIR/libc.a was built from the same source
# with the same CC and flags, by this same script.  Prints one line when it builds.
set -eu

me=musl.sh
die() { echo "$me: $*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: $me CC OUTDIR"
CC=$1
OUT=$2
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=board/common/debsrc.sh
. "$ROOT/board/common/debsrc.sh"
SRC_CACHE=${SRC_CACHE:-$ROOT/build/src}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
ar_cmd=${AR:-ar}
nm_cmd=${NM:-${ar_cmd%ar}nm}
DEB_ARCH=${DEB_ARCH:-$(dpkg --print-architecture)}
command -v "${CC%% *}" >/dev/null 2>&1 || die "compiler not found: $CC"

# ---------------------------------------------------------------- source
# Debian's version, "1.2.3-1"; the tree unpacks as musl-1.2.3.
VERSION=$(dpkg-query -W -f '${Version}' "musl-dev:$DEB_ARCH" 2>/dev/null) ||
    die "musl-dev:$DEB_ARCH is not installed (make BOARD=... deps)"
upstream=${VERSION#*:}
upstream=${upstream%-*}
SRC=$SRC_CACHE/musl-$upstream

fetch_debian_source() {
    [ -f "$SRC/configure" ] && [ -f "$SRC/.debian-version" ] &&
        [ "$(cat "$SRC/.debian-version")" = "$VERSION" ] && return 0
    [ "$(id -u)" = 0 ] || die "no musl $VERSION source in $SRC_CACHE; run as root to fetch Debian's"
    command -v dpkg-source >/dev/null 2>&1 ||
        die "apt-get source needs dpkg-source: run board/common/deps.sh build (Debian package dpkg-dev)"
    local log tmp
    log=$(mktemp "${TMPDIR:-/tmp}/musl-src.XXXXXX")
    debsrc_enable musl "$log" || { cat "$log" >&2; die "apt-get update failed"; }
    tmp=$(mktemp -d "$SRC_CACHE/.get.XXXXXX")
    if ! (cd "$tmp" && apt-get source -q "musl=$VERSION") >>"$log" 2>&1; then
        cat "$log" >&2; rm -rf "$tmp"; die "apt-get source musl=$VERSION failed"
    fi
    [ -f "$tmp/musl-$upstream/configure" ] ||
        { cat "$log" >&2; rm -rf "$tmp"; die "apt-get source musl=$VERSION: no musl-$upstream/configure"; }
    printf '%s\n' "$VERSION" >"$tmp/musl-$upstream/.debian-version"
    rm -rf "$SRC"
    mv "$tmp/musl-$upstream" "$SRC"
    mkdir -p "$SRC_CACHE/debian-packages"
    mv "$tmp"/*.dsc "$tmp"/*.tar.* "$SRC_CACHE/debian-packages/" 2>/dev/null || true
    rm -rf "$tmp" "$log"
}

mkdir -p "$SRC_CACHE" "$OUT"
# Two builds of one board (IMAP=yes and no) may start at once: one at a
# time, the second then finds the library built.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$OUT/.lock"
    flock 9
fi
fetch_debian_source

LIB=$OUT/libc.a
# This script's own checksum too: a change to how it builds rebuilds.
stamp="cc=$CC cflags=${LIBC_CFLAGS-} compressed=${LIBC_COMPRESSED_CFLAGS-} src=$SRC $VERSION $(cksum <"$0")"
if [ -f "$LIB" ] && [ -f "$OUT/.stamp" ] && [ "$(cat "$OUT/.stamp")" = "$stamp" ]; then
    exit 0
fi

# ---------------------------------------------------------------- check
# A static program, linked by LINK_CC (the board's musl-gcc wrapper) with
# -L OUTDIR as picomail is, using a little of each part that picomail asks
# of its libc (stdio, strings, numbers, sorting, time, errno, a system
# call); run under QEMU when set.  Without LINK_CC, no check.
check_lib() {
    [ -n "${LINK_CC-}" ] || return 0
    local t rc=0 want
    t=$(mktemp -d "${TMPDIR:-/tmp}/musl-check.XXXXXX")
    cat >"$t/t.c" <<'EOF'
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
static int cmp(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }
int main(void)
{
	int v[5] = { 42, -7, 19, 0, 3 };
	char buf[128], tm_s[64];
	struct tm tm;
	time_t t = 1700000000;
	qsort(v, 5, sizeof v[0], cmp);
	gmtime_r(&t, &tm);
	strftime(tm_s, sizeof tm_s, "%a, %d %b %Y %H:%M:%S", &tm);
	errno = 0;
	snprintf(buf, sizeof buf, "%d %d %d %d %d|%s|%lu|%s|%d|%d", v[0], v[1], v[2], v[3], v[4],
		 tm_s, strtoul("123456789", 0, 10), strstr("mail from:<a@b>", "from:"),
		 (int)strlen("picomail"), getpid() > 0 && close(-1) < 0 && errno == EBADF);
	puts(buf);
	return 0;
}
EOF
    want='-7 0 3 19 42|Tue, 14 Nov 2023 22:13:20|123456789|from:<a@b>|8|1'
    if ! $LINK_CC -static -nostartfiles -o "$t/t" "$OUT/crt1.o" "$OUT/crti.o" "$t/t.c" \
            -L "$OUT" "$OUT/crtn.o" 2>"$t/err"; then
        cat "$t/err" >&2; rm -rf "$t"; die "cannot link a static test program against $LIB with $LINK_CC"
    fi
    if [ -n "${QEMU-}" ]; then $QEMU "$t/t" >"$t/out" 2>&1 || rc=$?
    else "$t/t" >"$t/out" 2>&1 || rc=$?; fi
    if [ "$rc" != 0 ] || [ "$(cat "$t/out")" != "$want" ]; then
        echo "$me: the test program printed (exit $rc):" >&2; cat "$t/out" >&2
        echo "$me: instead of: $want" >&2
        rm -rf "$t"; die "the test program linked against $LIB is wrong"
    fi
    rm -rf "$t"
}

# ---------------------------------------------------------------- build
# musl's own configure and Makefile, in build directories of their own
# (the source tree stays as unpacked).  Its Makefile names every object
# obj/<path>.o, so the two passes' objects pair up by name.
start=$(date +%s)
target=$($CC -dumpmachine) || die "$CC -dumpmachine failed"
log=$OUT/build.log
: >"$log"
# The compressed objects ($comp, in $small) that define a name weakly which
# a full object ($rest, in $full) defines strongly, one a line.
weak_over_full() {
    # shellcheck disable=SC2086  # lists of files
    { (cd "$small" && $nm_cmd -A --defined-only $comp | sed 's/^/C /')
      (cd "$full" && $nm_cmd -A --defined-only $rest | sed 's/^/F /'); } 2>>"$log" |
    awk '{ f = $2; sub(/:.*/, "", f); t = $3; s = $4 }
         $1 == "C" && (t == "W" || t == "V") { weak[s] = weak[s] " " f }
         $1 == "F" && t ~ /^[TDBRG]$/ { strong[s] = 1 }
         END { for (s in weak) if (s in strong) print weak[s] }' | tr ' ' '\n' | sort -u | grep . || true
}
configure() {   # $1 = build directory, $2 = CFLAGS, $3 = source tree
    rm -rf "$1"
    mkdir -p "$1"
    (cd "$1" && "$3/configure" --target="$target" CC="$CC" CFLAGS="$2" \
        --disable-shared --prefix=/nonexistent) >>"$log" 2>&1 ||
        { tail -n 20 "$log" >&2; die "musl's configure failed in $1 (log: $log)"; }
}
full=$OUT/full
configure "$full" "${LIBC_CFLAGS-}" "$SRC"
if [ -n "${LIBC_COMPRESSED_CFLAGS-}" ]; then
    small=$OUT/compressed
    # MIPS16e has no syscall and no rdhwr instruction: in a copy of the
    # source, musl's inline functions for them (arch/mips/syscall_arch.h,
    # pthread_arch.h) are marked nomips16, so that gcc makes each a MIPS32
    # function of its own (it does not inline across the two modes) and
    # the rest of a file that calls them is compressed still (82 of the
    # 1406 files stay MIPS32 instead of 332).  Not the atomics
    # (atomic_arch.h): an LL/SC pair must not be split by calls.
    srcc=$SRC
    case $target in
    mips*)
        srcc=$OUT/src-compressed
        rm -rf "$srcc"
        cp -a "$SRC" "$srcc"
        sed -i 's/^static inline /static inline __attribute__((__nomips16__)) /' \
            "$srcc/arch/mips/syscall_arch.h" "$srcc/arch/mips/pthread_arch.h"
        grep -q nomips16 "$srcc/arch/mips/syscall_arch.h" ||
            die "arch/mips/syscall_arch.h: no \"static inline\" to mark nomips16"
        ;;
    esac
    configure "$small" "${LIBC_CFLAGS-} ${LIBC_COMPRESSED_CFLAGS}" "$srcc"
    # -k: every file that compiles so is compiled; the others fail (expected:
    # their compiler errors go to the log only).
    make -C "$small" -k -j"$JOBS" lib/libc.a >>"$log" 2>&1 || true
    # What is still to be made there: the objects that did not compile so.
    rest=$(make -C "$small" -n lib/libc.a 2>/dev/null | grep -o ' -o obj/[^ ]*\.o' | sed 's/^ -o //' | sort -u)
    # shellcheck disable=SC2086  # a list of targets
    [ -z "$rest" ] || make -C "$full" -j"$JOBS" $rest >>"$log" 2>&1 ||
        { tail -n 20 "$log" >&2; die "compiling musl's $(echo "$rest" | wc -w) other files failed (log: $log)"; }
    comp=$(cd "$small" && find obj -name '*.o' ! -path 'obj/crt/*' | sort)
    # A weak definition in a compressed object that a full object's strong
    # one overrides (musl's "weak_alias(dummy, __malloc_allzerop)" in
    # calloc.c beside mallocng's real one): ld does not turn the compressed
    # object's own calls to that name into mode-switching ones, and fails
    # ("jump to a non-word-aligned address").  Such an object is taken in
    # its full form, until none is left (each one so taken could bring
    # another's weak definition over a full strong one).
    while :; do
        demote=$(weak_over_full)
        [ -n "$demote" ] || break
        # shellcheck disable=SC2086  # a list of targets
        make -C "$full" -j"$JOBS" $demote >>"$log" 2>&1 ||
            { tail -n 20 "$log" >&2; die "compiling musl's $demote in full failed (log: $log)"; }
        # shellcheck disable=SC2086  # lists, one word an object
        rest=$(printf '%s\n' $rest $demote | sort -u)
        # shellcheck disable=SC2086
        comp=$(printf '%s\n' $comp | grep -vxF -f <(printf '%s\n' $demote) || true)
    done
    # Every object of the library: the compressed one where there is one.
    objs=''
    for o in $comp; do objs="$objs $small/$o"; done
    for o in $rest; do objs="$objs $full/$o"; done
    ncomp=$(echo "$comp" | wc -w)
else
    make -C "$full" -j"$JOBS" lib/libc.a >>"$log" 2>&1 ||
        { tail -n 20 "$log" >&2; die "building musl failed (log: $log)"; }
    objs=$(cd "$full" && find obj -name '*.o' ! -path 'obj/crt/*' | sed "s|^|$full/|")
    ncomp=0
fi
# The start files, MIPS32 (the start-up is assembly) with LIBC_CFLAGS.
make -C "$full" -j"$JOBS" lib/crt1.o lib/crti.o lib/crtn.o >>"$log" 2>&1 ||
    { tail -n 20 "$log" >&2; die "building musl's start files failed (log: $log)"; }
for f in crt1.o crti.o crtn.o; do cp "$full/lib/$f" "$OUT/$f"; done
rm -f "$LIB.tmp"
# shellcheck disable=SC2086  # a list of files
"$ar_cmd" rcs "$LIB.tmp" $objs
mv "$LIB.tmp" "$LIB"
check_lib
nobj=$(echo "$objs" | wc -w)
rm -rf "$full" "${small:-}" "$OUT/src-compressed"
printf '%s\n' "$stamp" >"$OUT/.stamp"
end=$(date +%s)
echo "$me: built $LIB ($((end - start)) s, musl $VERSION, $nobj objects, $ncomp of them compressed, CC=$CC)"
