# shellcheck shell=bash
# debsrc.sh - sourced by the scripts that build a dependency from Debian's
# source package (bearssl.sh, tests/tools/busybox.sh): makes "apt-get source
# PKG" possible on a machine whose sources list has only "deb" entries.
#
# debsrc_enable PKG LOG: unless apt already knows PKG's source, writes
# /etc/apt/sources.list.d/picomail-src.sources (Debian's own entries, with
# Types: deb-src) and runs apt-get update, output to LOG.  Returns 1 (LOG
# kept) when the source index still cannot be had.

debsrc_known() {   # debsrc_known PKG
    apt-cache showsrc "$1" 2>/dev/null | grep -q "^Package: $1\$"
}

debsrc_enable() {
    local pkg=$1 log=$2 f=/etc/apt/sources.list.d/picomail-src.sources
    debsrc_known "$pkg" && return 0
    if [ ! -f "$f" ]; then
        if [ -f /etc/apt/sources.list.d/debian.sources ]; then
            sed 's/^Types:.*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$f.tmp"
        else
            # shellcheck disable=SC1091
            . /etc/os-release
            printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
                "${VERSION_CODENAME:-bookworm}" >"$f.tmp"
        fi
        mv "$f.tmp" "$f"
    fi
    # A failing index elsewhere (a foreign architecture's Packages during a
    # mirror sync) makes apt-get update fail; what matters is the source index.
    apt-get -o DPkg::Lock::Timeout=600 update -q >"$log" 2>&1 || debsrc_known "$pkg"
}
