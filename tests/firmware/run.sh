#!/bin/bash
# run.sh - "make test-firmware": the firmware lab (tests/firmware/README.md).
#
# Installs what the lab needs (board/common/deps.sh firmware, and each
# board's cross toolchain), builds each board's boot image from Debian's
# packages (fwimage.py), then runs the lab's tests, one pytest-xdist worker
# per FIRMWARE_JOBS (default 2), a board's tests always in the same worker,
# and prints the figures (report.py).
# Environment: FIRMWARE_BOARDS (default: x86_64 aarch64 armv7 mipsel),
# FIRMWARE_TRIALS (power cuts per board, default 2), FIRMWARE_CRASH_POINTS
# (all: every write between flushes too, the default; flush: flush and FUA
# points only), FIRMWARE_UBIFS_CUTS (UBIFS recovery trials, default 1),
# FIRMWARE_UBIFS_BOARDS (the boards whose UBIFS is cut, default x86_64),
# FIRMWARE_K (pytest -k), FIRMWARE_KEEP=1 (keep every run's directory).
set -eu
me=run.sh
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-/usr/bin/python3}
BOARDS=${FIRMWARE_BOARDS:-x86_64 aarch64 armv7 mipsel}
JOBS=${FIRMWARE_JOBS:-2}
start=$(date +%s)

pkgs=''
for b in $BOARDS; do
    [ -f "board/$b/board.mk" ] || { echo "$me: no board/$b/board.mk" >&2; exit 1; }
    for p in $(awk '$1 == "BOARD_PACKAGES" { $1 = ""; $2 = ""; print }' "board/$b/board.mk"); do
        pkgs="$pkgs pkg:$p"
    done
done
# shellcheck disable=SC2086  # a list of pkg:NAME words
bash board/common/deps.sh build test firmware $pkgs

rm -rf build/firmware/results
# shellcheck disable=SC2086  # a list of boards
"$PYTHON" tests/firmware/fwimage.py $BOARDS
images=$(( $(date +%s) - start ))

rc=0
FIRMWARE_BOARDS="$BOARDS" "$PYTHON" -m pytest -q -p no:cacheprovider -n "$JOBS" --dist loadgroup \
    ${FIRMWARE_K:+-k "$FIRMWARE_K"} tests/firmware || rc=$?
"$PYTHON" tests/firmware/report.py $BOARDS || true
echo "test-firmware: images ${images} s, all $(( $(date +%s) - start )) s"
exit $rc
