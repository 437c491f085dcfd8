#!/bin/bash
# run.sh SECONDS HARNESS... - runs each libFuzzer harness for SECONDS, one
# core each, FUZZ_JOBS of them at once (default: the number of cores), and
# prints one line each, in the order given:
#   fuzz_dns: 1234567 execs, cov 812, ft 2051, corpus 143, 0 findings (60 s)
# then a total.  Exit 1 if any harness found something (its crash report
# is shown, the input is kept under build/fuzz/artifacts/<harness>/).
#
# Each run starts from a fresh copy of tests/fuzz/corpus/<harness>/ in
# build/fuzz/corpus/<harness>/ (the tree is never written), with
# tests/fuzz/<harness>.dict when there is one, or the protocol's
# dictionary.  FUZZ_ARGS adds libFuzzer options; FUZZ_WORK moves the
# corpora, logs and artifacts (default build/fuzz).  Run from the top of
# the repository, after the harnesses are built (make fuzz-build).
set -u

secs=${1:?usage: run.sh SECONDS HARNESS...}
shift
out=build/fuzz
work=${FUZZ_WORK:-$out}
total_execs=0
failed=0
started=$(date +%s)

# Inputs longer than the default 4096 where the format needs them: whole
# sessions span several buffers, a PEM chain or an envelope is larger.
max_len() {
    case $1 in
    smtp_session|pop3_session|imap_session|pem|queue_env|http) echo 16384 ;;
    conf) echo 8192 ;;
    *) echo 4096 ;;
    esac
}

dict_for() {
    case $1 in
    smtp_*) echo tests/fuzz/smtp.dict ;;
    pop3_*) echo tests/fuzz/pop3.dict ;;
    imap_*) echo tests/fuzz/imap.dict ;;
    *) [ -f "tests/fuzz/$1.dict" ] && echo "tests/fuzz/$1.dict" ;;
    esac
}

# run_one HARNESS: runs it, and writes its line to $work/logs/HARNESS.line
# and its total of executions and its number of findings to
# $work/logs/HARNESS.count.
run_one() {
    local h=$1 bin corpus art log dict rc execs last cov ft corp findings
    bin=$out/fuzz_$h
    corpus=$work/corpus/$h
    art=$work/artifacts/$h/
    log=$work/logs/$h.log
    if [ ! -x "$bin" ]; then
        echo "fuzz_$h: not built ($bin)" >"$work/logs/$h.line"
        echo "0 1" >"$work/logs/$h.count"
        return
    fi
    rm -rf "$corpus" "$art"
    mkdir -p "$corpus" "$art"
    if [ -d "tests/fuzz/corpus/$h" ]; then
        cp -R "tests/fuzz/corpus/$h/." "$corpus/"
    fi
    dict=$(dict_for "$h")
    # A hard bound over libFuzzer's own: no run may hang make test.
    # shellcheck disable=SC2086  # FUZZ_ARGS is a list of options
    timeout -k 10 $((secs + 120)) "$bin" -max_total_time="$secs" -timeout=10 \
        -rss_limit_mb=2048 -max_len="$(max_len "$h")" -print_final_stats=1 \
        -artifact_prefix="$art" ${dict:+-dict="$dict"} ${FUZZ_ARGS-} \
        "$corpus" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    # The last status line ("#N DONE cov: X ft: Y corp: Z/...") has the coverage.
    last=$(grep -E '^#[0-9]+' "$log" | grep ' cov: ' | tail -n 1)
    cov=$(printf '%s\n' "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    ft=$(printf '%s\n' "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
    corp=$(printf '%s\n' "$last" | sed -n 's/.* corp: \([0-9]*\).*/\1/p')
    findings=$(find "$art" -type f | wc -l)
    if [ "$rc" -ne 0 ] && [ "$findings" -eq 0 ]; then
        findings=1   # a crash without an artifact (the harness itself, a timeout of ours)
    fi
    echo "fuzz_$h: ${execs:-0} execs, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}, $findings findings ($secs s)" \
        >"$work/logs/$h.line"
    echo "${execs:-0} $findings" >"$work/logs/$h.count"
}

mkdir -p "$work/logs"
jobs_max=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}
[ "$jobs_max" -ge 1 ] 2>/dev/null || jobs_max=1
running=()
for h in "$@"; do
    rm -f "$work/logs/$h.line" "$work/logs/$h.count"
    while [ "${#running[@]}" -ge "$jobs_max" ]; do
        wait "${running[0]}"
        running=("${running[@]:1}")
    done
    run_one "$h" &
    running+=("$!")
done
for p in "${running[@]}"; do wait "$p"; done

for h in "$@"; do
    if [ ! -f "$work/logs/$h.count" ]; then
        echo "fuzz_$h: no result (the run did not finish)"
        failed=$((failed + 1))
        continue
    fi
    cat "$work/logs/$h.line"
    read -r execs findings <"$work/logs/$h.count"
    total_execs=$((total_execs + execs))
    if [ "$findings" -gt 0 ]; then
        failed=$((failed + 1))
        if [ -f "$work/logs/$h.log" ]; then
            echo "---- fuzz_$h: $work/logs/$h.log (last 60 lines) ----"
            tail -n 60 "$work/logs/$h.log"
            find "$work/artifacts/$h/" -type f 2>/dev/null | sed 's/^/    input: /'
            echo "----"
        fi
    fi
done
echo "fuzz: $# harnesses, $total_execs execs, $failed with findings, $(( $(date +%s) - started )) s"
[ "$failed" -eq 0 ]
