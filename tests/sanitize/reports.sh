#!/bin/bash
# reports.sh NAME DIR START RC - the end of "make test-asan" / "make test-valgrind".
#
# DIR holds the sanitizer or valgrind logs of every process the suite ran;
# an empty log is a clean one (valgrind -q writes only errors, ASan and
# UBSan create theirs only to report).  Prints each non-empty log, the
# elapsed time since START (seconds since the epoch), and exits 1 when
# there is a report or the suite itself failed (RC, pytest's status).
set -u

name=$1 dir=$2 start=$3 rc=$4
n=0
for f in "$dir"/*; do
    [ -s "$f" ] || continue
    n=$((n + 1))
    echo "==== $name: report $f"
    head -c 20000 "$f"
done
echo "$name: $n report(s), pytest status $rc, $(( $(date +%s) - start )) s"
[ "$n" -eq 0 ] && [ "$rc" -eq 0 ]
