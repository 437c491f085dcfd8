#!/bin/bash
# bearssl.sh CC OUTDIR - provide BearSSL's static library built with CC.
#
# Result:  OUTDIR/inc/*.h  and  OUTDIR/lib/libbearssl.a
#          (use: -I OUTDIR/inc  OUTDIR/lib/libbearssl.a  or  -L OUTDIR/lib -lbearssl)
# Where the library comes from, first match wins:
#   BEARSSL_DIR   a ready BearSSL: inc/bearssl.h + build/libbearssl.a (or
#                 lib/libbearssl.a), as BearSSL's own tree has them; or an
#                 installed prefix, include/bearssl.h + lib/libbearssl.a
#                 (Buildroot's $(STAGING_DIR)/usr); OUTDIR just gets symlinks.
#   BEARSSL_SRC   an unpacked BearSSL source tree, compiled here with CC.
#   otherwise     Debian's source package (apt-get source bearssl), cached
#                 unpacked in SRC_CACHE (default <repo>/build/src), compiled here.
# Other environment:
#   BEARSSL_CFLAGS  extra compiler flags (e.g. a board's -march)
#   QEMU            runs the check program for a cross CC (e.g. qemu-aarch64-static);
#                   without it a foreign binary is built but not run
#   JOBS            parallel compiles (default: nproc)
#   AR              archiver (default: ar, or CC's sibling <triplet>-ar)
# Cached: does nothing when OUTDIR's library is newer than every source file
# and was built with the same CC and flags. Prints one line when it builds.
set -eu

me=bearssl.sh
die() { echo "$me: $*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: $me CC OUTDIR"
CC=$1
OUT=$2
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=board/common/debsrc.sh
. "$ROOT/board/common/debsrc.sh"
SRC_CACHE=${SRC_CACHE:-$ROOT/build/src}
# No system seeder in the engines (0.6's uses RDRAND alone on x86, without
# the checks later upstream added): picomail seeds every engine from
# getrandom(2) itself (src/random.c, src/tls.c).
CFLAGS="-std=c99 -Os -ffunction-sections -fdata-sections -DBR_RDRAND=0 -DBR_USE_URANDOM=0 ${BEARSSL_CFLAGS-}"

# ---------------------------------------------------------------- check
elf_machine() { od -An -j18 -N2 -tx1 "$1" | tr -d ' \n'; }   # ELF e_machine

# A static program that hashes "abc" with SHA-256 and references the SSL
# server/client and X.509 engines; run it if we can.
check_lib() {   # $1 = include dir, $2 = library file
    local t rc
    t=$(mktemp -d "${TMPDIR:-/tmp}/bearssl-check.XXXXXX")
    cat >"$t/t.c" <<'EOF'
#include <stdio.h>
#include <string.h>
#include "bearssl.h"
int main(void)
{
	br_sha256_context c;
	unsigned char h[32];
	char hex[65];
	int i;
	/* the TLS and X.509 engines (T0-generated code) must be in the library */
	void (*volatile fn[])(void) = {
		(void (*)(void))br_ssl_server_init_full_rsa,
		(void (*)(void))br_ssl_client_init_full,
		(void (*)(void))br_x509_minimal_init,
	};
	if (!fn[0] || !fn[1] || !fn[2])
		return 2;
	br_sha256_init(&c);
	br_sha256_update(&c, "abc", 3);
	br_sha256_out(&c, h);
	for (i = 0; i < 32; i++)
		sprintf(hex + 2 * i, "%02x", h[i]);
	puts(hex);
	return strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") != 0;
}
EOF
    if ! $CC -static -o "$t/t" -I "$1" "$t/t.c" "$2" 2>"$t/err"; then
        cat "$t/err" >&2; rm -rf "$t"
        die "cannot link a static test program against $2 with $CC"
    fi
    rc=0
    if [ -n "${QEMU-}" ]; then
        $QEMU "$t/t" >"$t/out" 2>&1 || rc=$?
    elif [ "$(elf_machine "$t/t")" != "$(elf_machine /bin/sh)" ]; then
        rm -rf "$t"   # foreign e_machine and no QEMU: linked is all we can say
        return 0
    else
        "$t/t" >"$t/out" 2>&1 || rc=$?
    fi
    if [ "$rc" != 0 ]; then
        cat "$t/out" >&2; rm -rf "$t"
        die "test program linked against $2 gives a wrong SHA-256 (exit $rc)"
    fi
    rm -rf "$t"
}

# ---------------------------------------------------------------- BEARSSL_DIR
if [ -n "${BEARSSL_DIR-}" ]; then
    d=$(cd "$BEARSSL_DIR" 2>/dev/null && pwd) || die "BEARSSL_DIR=$BEARSSL_DIR is not a directory"
    if [ -f "$d/inc/bearssl.h" ]; then inc=$d/inc
    elif [ -f "$d/include/bearssl.h" ]; then inc=$d/include
    else die "BEARSSL_DIR: no $d/inc/bearssl.h or $d/include/bearssl.h"; fi
    if [ -f "$d/build/libbearssl.a" ]; then lib=$d/build/libbearssl.a
    elif [ -f "$d/lib/libbearssl.a" ]; then lib=$d/lib/libbearssl.a
    else die "BEARSSL_DIR: no build/libbearssl.a or lib/libbearssl.a in $d"; fi
    # An installed prefix's include/ holds the whole sysroot's headers: only
    # BearSSL's are linked, so that -I OUTDIR/inc does not demote libc's
    # system headers to ordinary ones (-Werror would then see their warnings).
    if [ "$inc" = "$d/inc" ]; then have=$(readlink "$OUT/inc" 2>/dev/null) || true
    else have=$(readlink "$OUT/inc/bearssl.h" 2>/dev/null) && have=${have%/bearssl.h}; fi
    if [ "$have" = "$inc" ] &&
       [ "$(readlink "$OUT/lib/libbearssl.a" 2>/dev/null)" = "$lib" ]; then
        exit 0
    fi
    mkdir -p "$OUT/lib"
    rm -rf "$OUT/inc"
    if [ "$inc" = "$d/inc" ]; then
        ln -sfn "$inc" "$OUT/inc"
    else
        mkdir "$OUT/inc"
        for h in "$inc"/bearssl*.h; do ln -sfn "$h" "$OUT/inc/${h##*/}"; done
    fi
    ln -sfn "$lib" "$OUT/lib/libbearssl.a"
    rm -f "$OUT/.stamp"
    check_lib "$OUT/inc" "$OUT/lib/libbearssl.a"
    exit 0
fi

# ---------------------------------------------------------------- source tree
fetch_debian_source() {
    local s
    for s in "$SRC_CACHE"/bearssl-*/inc/bearssl.h; do
        [ -f "$s" ] && { SRC=${s%/inc/bearssl.h}; return 0; }
    done
    [ "$(id -u)" = 0 ] || die "no BearSSL source in $SRC_CACHE; set BEARSSL_SRC or BEARSSL_DIR, or run as root to fetch Debian's"
    command -v apt-get >/dev/null 2>&1 || die "no apt-get: set BEARSSL_SRC (BearSSL source tree) or BEARSSL_DIR"
    command -v dpkg-source >/dev/null 2>&1 ||
        die "apt-get source needs dpkg-source: run board/common/deps.sh build (Debian package dpkg-dev)"
    mkdir -p "$SRC_CACHE"
    local log
    log=$(mktemp "${TMPDIR:-/tmp}/bearssl-src.XXXXXX")
    # deb-src entries: Debian's own sources (board/common/debsrc.sh).
    debsrc_enable bearssl "$log" || { cat "$log" >&2; die "apt-get update failed"; }
    # Unpack in a temporary directory next to the cache, then move into place.
    local tmp
    tmp=$(mktemp -d "$SRC_CACHE/.get.XXXXXX")
    if ! (cd "$tmp" && apt-get source -q bearssl) >>"$log" 2>&1; then
        cat "$log" >&2; rm -rf "$tmp"; die "apt-get source bearssl failed"
    fi
    for s in "$tmp"/bearssl-*/inc/bearssl.h; do
        [ -f "$s" ] || { cat "$log" >&2; rm -rf "$tmp"; die "apt-get source bearssl: no bearssl-*/inc/bearssl.h unpacked"; }
        s=${s%/inc/bearssl.h}
        SRC=$SRC_CACHE/${s##*/}
        rm -rf "$SRC"
        mv "$s" "$SRC"
        mkdir -p "$SRC_CACHE/debian-packages"
        mv "$tmp"/*.dsc "$tmp"/*.tar.* "$SRC_CACHE/debian-packages/" 2>/dev/null || true
    done
    rm -rf "$tmp" "$log"
}

if [ -n "${BEARSSL_SRC-}" ]; then
    SRC=$(cd "$BEARSSL_SRC" 2>/dev/null && pwd) || die "BEARSSL_SRC=$BEARSSL_SRC is not a directory"
    [ -f "$SRC/inc/bearssl.h" ] && [ -d "$SRC/src" ] || die "BEARSSL_SRC: $SRC has no inc/bearssl.h and src/"
else
    mkdir -p "$SRC_CACHE"
    # Two builds (two boards) may start at once: one fetch at a time.
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$SRC_CACHE/.bearssl.lock"
        flock 9
    fi
    fetch_debian_source
    if command -v flock >/dev/null 2>&1; then exec 9>&-; fi
fi

# ---------------------------------------------------------------- build
LIB=$OUT/lib/libbearssl.a
stamp="cc=$CC cflags=$CFLAGS src=$SRC"
if [ -f "$LIB" ] && [ ! -L "$LIB" ] && [ -f "$OUT/.stamp" ] &&
   [ "$(cat "$OUT/.stamp")" = "$stamp" ] &&
   [ -z "$(find "$SRC/src" "$SRC/inc" -newer "$LIB" -print -quit)" ]; then
    exit 0
fi

command -v "${CC%% *}" >/dev/null 2>&1 || die "compiler not found: $CC"
start=$(date +%s)
rm -rf "$OUT/obj" "$OUT/inc" "$OUT/.stamp"
mkdir -p "$OUT/obj" "$OUT/inc" "$OUT/lib"
export CC CFLAGS SRC OUT
# One object per source file, named after its path (src/ec/x.c -> ec_x.o).
if ! (cd "$SRC/src" && find . -name '*.c' | sed 's|^\./||' | sort |
      xargs -P "${JOBS:-$(nproc 2>/dev/null || echo 2)}" -n 8 sh -c '
        for f; do
            o=$(printf %s "$f" | tr / _); o=$OUT/obj/${o%.c}.o
            $CC $CFLAGS -I "$SRC/inc" -I "$SRC/src" -c "$SRC/src/$f" -o "$o" || exit 1
        done' sh); then
    die "compiling BearSSL from $SRC with $CC failed"
fi
cp "$SRC"/inc/*.h "$OUT/inc/"
# AR from the environment (a board's $(CROSS)ar), else the ar beside a cross
# CC when there is one (aarch64-linux-gnu-gcc -> aarch64-linux-gnu-ar), else ar.
ar_cmd=${AR:-}
if [ -z "$ar_cmd" ]; then
    ar_cmd="ar"
    case ${CC%% *} in
    *-gcc) p=${CC%% *}; p=${p%gcc}ar; if command -v "$p" >/dev/null 2>&1; then ar_cmd=$p; fi ;;
    esac
fi
rm -f "$LIB.tmp"
"$ar_cmd" rcs "$LIB.tmp" "$OUT"/obj/*.o
mv "$LIB.tmp" "$LIB"
rm -rf "$OUT/obj"
check_lib "$OUT/inc" "$LIB"
printf '%s\n' "$stamp" >"$OUT/.stamp"
end=$(date +%s)
echo "$me: built $LIB ($(( $(stat -c %s "$LIB") / 1024 )) KiB, $((end - start)) s, $(find "$SRC/src" -name '*.c' | wc -l) files, CC=$CC)"
