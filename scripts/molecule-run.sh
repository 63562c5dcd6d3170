#!/usr/bin/env bash
# Runs molecule scenarios, JOBS at a time (default 2: most of a scenario's time is spent waiting
# on systemd, apt and the JVM, so two share the machine's two cores well). Each scenario logs to
# .molecule-logs/<scenario>.log; the summary gives each one's result and minutes, and the log of
# every failed scenario is printed at the end. Exits non-zero when any scenario failed.
# Usage: scripts/molecule-run.sh [-j JOBS] SCENARIO...   (the longest first balances the slots)
set -o pipefail
jobs=2
if [[ ${1:-} == -j ]]; then jobs=$2; shift 2; fi
[[ $# -gt 0 ]] || { echo "usage: $0 [-j JOBS] SCENARIO..." >&2; exit 2; }
logs=.molecule-logs
mkdir -p "$logs"
declare -A started=() pid_of=()
results=()
run_one() {
    local s=$1
    echo "=== molecule scenario $s (log: $logs/$s.log)"
    started[$s]=$SECONDS
    molecule test -s "$s" >"$logs/$s.log" 2>&1 &
    pid_of[$s]=$!
}
reap() {  # wait for any running scenario, record it
    local s rc
    while :; do
        for s in "${!pid_of[@]}"; do
            if ! kill -0 "${pid_of[$s]}" 2>/dev/null; then
                wait "${pid_of[$s]}"; rc=$?
                results+=("$s $rc $(( (SECONDS - started[$s]) ))")
                echo "=== molecule scenario $s: $([[ $rc -eq 0 ]] && echo passed || echo "FAILED (rc $rc)") in $(( (SECONDS - started[$s]) / 60 ))m$(( (SECONDS - started[$s]) % 60 ))s"
                unset "pid_of[$s]"
                return
            fi
        done
        sleep 2
    done
}
for s in "$@"; do
    while [[ ${#pid_of[@]} -ge $jobs ]]; do reap; done
    run_one "$s"
done
while [[ ${#pid_of[@]} -gt 0 ]]; do reap; done
failed=0
echo "=== summary (scenario rc seconds)"
for r in "${results[@]}"; do
    echo "  $r"
    set -- $r
    if [[ $2 -ne 0 ]]; then
        failed=1
        echo "----- $logs/$1.log (last 150 lines)"
        tail -n 150 "$logs/$1.log"
    fi
done
exit $failed
