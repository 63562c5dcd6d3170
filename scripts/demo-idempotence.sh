#!/usr/bin/env bash
# The demo as a test: provision the example's lab twice; the second run must change nothing.
# Prints the timings of both runs (first converge vs no-op) and removes the lab afterwards.
# The lab reaches its containers over SSH (LAB_CONNECTION=podman: podman exec, for comparison);
# benchmarks/converge.py gives the same two runs timed per host.
set -euo pipefail
cd "$(dirname "$0")/.."
inv=${INVENTORY:-inventory/example}
connection=${LAB_CONNECTION:-ssh}
trap 'xnat-fleet lab down -i "$inv" >/dev/null 2>&1 || true' EXIT
xnat-fleet lab down -i "$inv" >/dev/null 2>&1 || true
xnat-fleet check -i "$inv"
xnat-fleet lab up -i "$inv" --connection "$connection"
for run in first second; do
  start=$(date +%s)
  xnat-fleet provision -i "$inv" --lab --json > ".lab/provision-$run.json"
  echo "demo: $run converge took $(( $(date +%s) - start )) s"
done
python3 - <<'PY'
import json, sys
second = json.load(open(".lab/provision-second.json"))
changed = {h: s["changed"] for h, s in second["hosts"].items()}
print("demo: second run changed per host:", changed)
if len(changed) != 3 or any(changed.values()) or second["rc"] != 0:
    sys.exit("demo: the second provision was not a no-op")
PY
