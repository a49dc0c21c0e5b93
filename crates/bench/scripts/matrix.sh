#!/usr/bin/env bash
# Runs the benchmark matrix: backend × concurrency × class, flowrun and --raw alternating, REPEAT times each.
# Appends one JSON line per invocation to $OUT. Usage:
#   RUNS=2000 REPEAT=3 OUT=/tmp/bench.jsonl crates/bench/scripts/matrix.sh URL [URL…]
set -euo pipefail
BIN=${BIN:-target/release/flowrun-bench}
RUNS=${RUNS:-2000}
REPEAT=${REPEAT:-3}
OUT=${OUT:-${TMPDIR:-/tmp}/bench.jsonl}
# Raw results are not kept in the repository: they are regenerated here, and the path is printed at the end.
trap 'echo "$0: JSON lines appended to $OUT" >&2' EXIT
CONCURRENCY=${CONCURRENCY:-"1 8"}
CLASSES=${CLASSES:-"Noop Fail"}
EXTRA=${EXTRA:-}
for url in "$@"; do
  for c in $CONCURRENCY; do
    for class in $CLASSES; do
      for _ in $(seq "$REPEAT"); do
        for mode in "" "--raw"; do
          # shellcheck disable=SC2086
          "$BIN" --database-url "$url" --runs "$RUNS" --concurrency "$c" --class "$class" $mode $EXTRA | tee -a "$OUT"
        done
      done
    done
  done
done
