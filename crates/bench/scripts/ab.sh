#!/usr/bin/env bash
# Compares builds of flowrun-bench: for each repetition, flowrun then --raw, each through every binary in
# turn, so drift on a noisy machine hits all alike. Appends one JSON line per invocation to OUT, tagged
# with "bin" (summarize.py shows one row per binary). Keep each build as its own file first, e.g.
#   cp target/release/flowrun-bench /tmp/bench-before   # … change, rebuild …
#   cp target/release/flowrun-bench /tmp/bench-after
#   OUT=/tmp/ab.jsonl REPEAT=5 RUNS=2000 CONCURRENCY=1 CLASS=Noop \
#     crates/bench/scripts/ab.sh sqlite:///tmp/bench.db /tmp/bench-before /tmp/bench-after
set -euo pipefail
OUT=${OUT:-${TMPDIR:-/tmp}/ab.jsonl}
# Raw results are not kept in the repository: they are regenerated here, and the path is printed at the end.
trap 'echo "$0: JSON lines appended to $OUT" >&2' EXIT
REPEAT=${REPEAT:-5}
RUNS=${RUNS:-2000}
CONCURRENCY=${CONCURRENCY:-1}
CLASS=${CLASS:-Noop}
HISTORY=${HISTORY:-0}
url=$1
shift
for _ in $(seq "$REPEAT"); do
  for mode in "" "--raw"; do
    for bin in "$@"; do
      # shellcheck disable=SC2086
      "$bin" --database-url "$url" --history "$HISTORY" --runs "$RUNS" --concurrency "$CONCURRENCY" \
        --class "$CLASS" $mode \
        | python3 -c 'import json, sys; r = json.loads(sys.stdin.read()); r["bin"] = sys.argv[1]; print(json.dumps(r))' "$bin" \
        | tee -a "$OUT"
    done
  done
done
