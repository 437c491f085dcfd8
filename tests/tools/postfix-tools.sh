#!/bin/bash
# postfix-tools.sh [--verify] OUTDIR - Postfix's load generators for benchmarks,
# without installing Postfix as the system mailer.
#
# Result:  OUTDIR/smtp-source, OUTDIR/smtp-sink   wrapper scripts, run them as-is
#          OUTDIR/postfix/                        the real binaries, lib/ = libpostfix-*.so
# The postfix .deb is fetched with `apt-get download` into PKG_CACHE (default
# <repo>/build/cache/debs) and unpacked with dpkg -x; the shared libraries it
# needs from Debian (libdb5.3, libicu, libnsl2, libssl3, ...) are installed
# through board/common/deps.sh (root on Debian), never postfix itself.
# Cached: when the tools are there and their libraries resolve, does nothing
# unless --verify is given. After a fresh install, and with --verify, runs a
# check: smtp-sink on 127.0.0.1, smtp-source sends it 10 messages.
set -eu

me=postfix-tools.sh
die() { echo "$me: $*" >&2; exit 1; }

verify=0
if [ "${1-}" = --verify ]; then verify=1; shift; fi
[ $# -eq 1 ] || die "usage: $me [--verify] OUTDIR"
OUT=$1
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PKG_CACHE=${PKG_CACHE:-$ROOT/build/cache/debs}
TOOLS="smtp-source smtp-sink"

libs_resolve() {
    local t
    for t in $TOOLS; do
        [ -x "$OUT/postfix/$t" ] && [ -x "$OUT/$t" ] || return 1
        if LD_LIBRARY_PATH="$OUT/postfix/lib" ldd "$OUT/postfix/$t" 2>&1 | grep -q 'not found'; then
            return 1
        fi
    done
}

# ------------------------------------------------------------------ verify
verify_tools() {
    local tmp port pid n sink_user=''
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/postfix-tools.XXXXXX")
    mkdir "$tmp/dump"
    # As root smtp-sink must drop privileges (-u); the dumps are written after that.
    if [ "$(id -u)" = 0 ]; then sink_user="-u nobody"; chmod 755 "$tmp"; chown nobody "$tmp/dump"; fi
    pid=''
    for _ in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 40000))
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi   # taken
        # shellcheck disable=SC2086
        "$OUT/smtp-sink" $sink_user -d "$tmp/dump/%H%M%S." "127.0.0.1:$port" 16 \
            >"$tmp/sink.log" 2>&1 &
        pid=$!
        for n in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break                     # e.g. port in use
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break 2
            sleep 0.1
        done
        kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
        pid=''
    done
    if [ -z "$pid" ]; then
        cat "$tmp/sink.log" >&2; rm -rf "$tmp"; die "check: smtp-sink did not start listening on 127.0.0.1"
    fi
    if ! "$OUT/smtp-source" -m 10 -s 2 -f bench@localhost -t sink@localhost \
            "127.0.0.1:$port" >"$tmp/source.log" 2>&1; then
        kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
        cat "$tmp/source.log" "$tmp/sink.log" >&2; rm -rf "$tmp"
        die "check: smtp-source could not send 10 messages to smtp-sink"
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    n=$(find "$tmp/dump" -type f | wc -l)
    if [ "$n" -ne 10 ]; then
        cat "$tmp/source.log" "$tmp/sink.log" >&2; rm -rf "$tmp"
        die "check: smtp-sink received $n messages, expected 10"
    fi
    rm -rf "$tmp"
}

if [ -f "$OUT/postfix/.verified" ] && libs_resolve; then
    if [ "$verify" = 1 ]; then verify_tools; fi
    exit 0
fi

# ------------------------------------------------------------------ fetch
command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 ||
    die "needs apt-get and dpkg-deb (Debian) to fetch the postfix package"
mkdir -p "$PKG_CACHE"
log=$(mktemp "${TMPDIR:-/tmp}/postfix-tools.log.XXXXXX")
trap 'rm -f "$log"' EXIT
deb=$(ls -t "$PKG_CACHE"/postfix_*.deb 2>/dev/null | head -n 1) || true
if [ -z "$deb" ]; then
    if ! (cd "$PKG_CACHE" && apt-get download -q postfix) >"$log" 2>&1; then
        # Stale package lists give 404s: refresh once (root only) and retry.
        [ "$(id -u)" = 0 ] || { cat "$log" >&2; die "apt-get download postfix failed"; }
        apt-get -o DPkg::Lock::Timeout=600 update -q >>"$log" 2>&1 &&
        (cd "$PKG_CACHE" && apt-get download -q postfix) >>"$log" 2>&1 ||
            { cat "$log" >&2; die "apt-get download postfix failed"; }
    fi
    deb=$(ls -t "$PKG_CACHE"/postfix_*.deb 2>/dev/null | head -n 1)
    [ -n "$deb" ] || die "apt-get download postfix left no postfix_*.deb in $PKG_CACHE"
fi

# The Debian libraries postfix links with (its Depends on lib*, except libc6).
libpkgs=$(dpkg-deb -f "$deb" Depends | tr ',|' '\n\n' | sed 's/(.*//; s/[[:space:]]//g' |
          grep '^lib' | grep -v '^libc6$' | sed 's/^/pkg:/' | tr '\n' ' ')
# shellcheck disable=SC2086
[ -z "$libpkgs" ] || "$ROOT/board/common/deps.sh" $libpkgs

# ------------------------------------------------------------------ unpack
x=$(mktemp -d "${TMPDIR:-/tmp}/postfix-deb.XXXXXX")
trap 'rm -f "$log"; rm -rf "$x"' EXIT
dpkg-deb -x "$deb" "$x"
rm -rf "$OUT/postfix"
mkdir -p "$OUT/postfix/lib"
for t in $TOOLS; do
    src=''
    for d in usr/sbin usr/bin usr/lib/postfix/sbin; do
        [ -x "$x/$d/$t" ] && { src=$x/$d/$t; break; }
    done
    [ -n "$src" ] || die "$t not found in $(basename "$deb")"
    cp "$src" "$OUT/postfix/$t"
done
cp "$x"/usr/lib/postfix/libpostfix-*.so "$OUT/postfix/lib/" ||
    die "no usr/lib/postfix/libpostfix-*.so in $(basename "$deb")"
basename "$deb" >"$OUT/postfix/VERSION"

# Wrappers: the binaries have RUNPATH /usr/lib/postfix; LD_LIBRARY_PATH wins over it.
for t in $TOOLS; do
    cat >"$OUT/$t.tmp" <<EOF
#!/bin/sh
# Postfix's $t from $(basename "$deb"), made by tests/tools/postfix-tools.sh
d=\$(dirname "\$(readlink -f "\$0")")/postfix
LD_LIBRARY_PATH="\$d/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$d/$t" "\$@"
EOF
    chmod +x "$OUT/$t.tmp"
    mv "$OUT/$t.tmp" "$OUT/$t"
done

if ! libs_resolve; then
    for t in $TOOLS; do
        LD_LIBRARY_PATH="$OUT/postfix/lib" ldd "$OUT/postfix/$t" 2>&1 | grep 'not found' >&2 || true
    done
    die "shared libraries missing for smtp-source/smtp-sink (see above)"
fi
rm -f "$OUT/postfix/.verified"
verify_tools
: >"$OUT/postfix/.verified"
