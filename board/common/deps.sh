#!/bin/bash
# deps.sh [-n] [GROUP|pkg:NAME ...] - make sure the Debian packages a job needs are there.
#
# As root on Debian: installs whatever is missing (one apt-get update, only
# when something is missing). Otherwise (not root, or not Debian): prints one
# line per missing tool naming the package that provides it, and exits 1.
#   -n          check only, never install (exit 1 if anything is missing)
#   GROUP       build | test | bench | tls | firmware   (default: build)
#   pkg:NAME    any Debian package by name, e.g. pkg:qemu-user-static
#               (lets the Makefile pass a board's BOARD_PACKAGES)
# Quiet when nothing is missing.
set -eu

# ---- the package lists: one line per (group, package, what proves it is there)
# "provides" is a command on PATH, an absolute path, or py:MODULE for
# Debian's /usr/bin/python3 (the one the tests use, not a pyenv shim).
DEPS='
build  make              make
build  gcc               gcc
build  musl-tools        musl-gcc
build  dpkg-dev          dpkg-source
build  ca-certificates   /etc/ssl/certs/ca-certificates.crt
test   python3           /usr/bin/python3
test   python3-pytest    py:pytest
test   python3-pytest-xdist py:xdist
test   swaks             swaks
test   openssl           openssl
test   procps            pkill
test   groff-base        groff
test   man-db            man
test   mandoc            mandoc
test   rsync             rsync
test   iproute2          ip
test   fetchmail         fetchmail
test   curl              curl
test   mutt              mutt
test   isync             mbsync
test   offlineimap3      offlineimap
test   s-nail            s-nail
test   dovecot-imapd     /usr/lib/dovecot/imap
test   mpop              mpop
test   msmtp             msmtp
test   libio-socket-ssl-perl /usr/share/perl5/IO/Socket/SSL.pm
test   dnsmasq           dnsmasq
test   python3-aiosmtpd  py:aiosmtpd
test   bzip2             bzip2
test   xz-utils          xz
test   strace            strace
test   valgrind          valgrind
test   clang             clang
test   libclang-rt-14-dev /usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a
bench  procps            pkill
bench  dovecot-imapd     /usr/lib/dovecot/imap
firmware qemu-system-x86 qemu-system-x86_64
firmware qemu-system-arm qemu-system-aarch64
firmware qemu-system-mips qemu-system-mipsel
firmware kmod            depmod
firmware mtd-utils       ubinize
firmware e2fsprogs       debugfs
firmware socat           socat
firmware openssl         openssl
firmware python3-aiosmtpd py:aiosmtpd
firmware python3-pytest-xdist py:xdist
tls    openssl           openssl
'
# (bench: smtp-source/smtp-sink come from tests/tools/postfix-tools.sh,
#  which installs the shared libraries they need itself.)

me=deps.sh
die() { echo "$me: $*" >&2; exit 1; }

check_only=0
if [ "${1-}" = -n ]; then check_only=1; shift; fi
[ $# -gt 0 ] || set -- build

# Resolve the arguments into "package provides" pairs (deduplicated).
want=''
for arg in "$@"; do
    case $arg in
    pkg:?*)
        want="$want${arg#pkg:} -
" ;;
    *)
        rows=$(printf '%s\n' "$DEPS" | awk -v g="$arg" '$1 == g { print $2, $3 }')
        [ -n "$rows" ] || die "unknown group '$arg' (groups: $(printf '%s\n' "$DEPS" | awk 'NF { print $1 }' | sort -u | tr '\n' ' ')or pkg:NAME)"
        want="$want$rows
" ;;
    esac
done
want=$(printf '%s' "$want" | awk 'NF && !seen[$1]++')

# Is a tool there, judged without dpkg (for non-root / non-Debian users)?
have_tool() {
    case $1 in
    -)     return 1 ;;
    py:*)  [ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import ${1#py:}" 2>/dev/null ;;
    /*)    [ -e "$1" ] ;;
    *)     command -v "$1" >/dev/null 2>&1 ;;
    esac
}

pkg_installed() {
    local st
    st=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || return 1
    case $st in *" ok installed") return 0 ;; esac
    return 1
}

can_install=0
if [ "$(id -u)" = 0 ] && [ -r /etc/debian_version ] &&
   command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
    can_install=1
fi

missing=''
if [ "$can_install" = 1 ]; then
    while read -r pkg tool; do
        pkg_installed "$pkg" || missing="$missing $pkg"
    done <<EOF
$want
EOF
    missing=${missing# }
    [ -n "$missing" ] || exit 0
    if [ "$check_only" = 1 ]; then
        for p in $missing; do echo "$me: missing Debian package $p"; done
        exit 1
    fi
else
    status=0
    while read -r pkg tool; do
        if ! have_tool "$tool"; then
            if [ "$tool" = - ]; then what="package $pkg"
            else what="$tool"; fi
            echo "$me: missing $what (install the Debian package $pkg)"
            status=1
        fi
    done <<EOF
$want
EOF
    exit $status
fi

# Root on Debian: install what is missing. apt-get update once, before the
# install when the lists are absent or older than a day, else only if the
# install fails (stale lists).
log=$(mktemp "${TMPDIR:-/tmp}/picomail-deps.XXXXXX")
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
# An index that fails to download (a mirror mid-sync, typically one foreign
# architecture's) is not fatal: apt keeps the old list or none, and the
# install below decides; the warning names what failed.
apt_update() {
    if ! apt-get -o DPkg::Lock::Timeout=600 update -q >>"$log" 2>&1; then
        echo "$me: warning: apt-get update reported errors, going on with the lists it has:" >&2
        grep '^E: ' "$log" | sed 's/^/    /' >&2 || true
    fi
}
# Packages that are daemons (dnsmasq, dovecot-imapd) are installed for the
# tests to run their programs, never as services on the machine: unless
# the system has its own policy, a temporary policy-rc.d (101: "action
# forbidden") keeps their maintainer scripts from starting them.
policy=/usr/sbin/policy-rc.d
apt_install() {
    local own=0 rc=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# written by picomail deps.sh for the install\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        own=1
    fi
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "$@" >>"$log" 2>&1 || rc=$?
    [ "$own" = 0 ] || rm -f "$policy"
    return "$rc"
}

echo "$me: installing $missing" >&2
updated=0
# A foreign-architecture package (musl-dev:arm64 for a cross board) needs its
# architecture known to dpkg, and then fresh package lists.
for p in $missing; do
    case $p in *:*) ;; *) continue ;; esac
    arch=${p##*:}
    if [ "$arch" != "$(dpkg --print-architecture)" ] &&
       ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
        echo "$me: adding Debian architecture $arch (for $p)" >&2
        dpkg --add-architecture "$arch"
        updated=new-arch
    fi
done
if [ "$updated" = new-arch ] || [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | head -n 1)" ]; then
    apt_update; updated=1
fi
# shellcheck disable=SC2086  # $missing is a list of package names
if ! apt_install $missing; then
    [ "$updated" = 0 ] || { cat "$log" >&2; die "apt-get install $missing failed"; }
    apt_update
    apt_install $missing || { cat "$log" >&2; die "apt-get install $missing failed"; }
fi
for p in $missing; do
    pkg_installed "$p" || die "package $p still not installed after apt-get install"
done
