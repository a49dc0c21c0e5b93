#!/usr/bin/env bash
# Compares an empty database with one holding HISTORY past runs. Invocations alternate between the two
# databases (flowrun, then --raw, for each), REPEAT times, so drift on a noisy machine hits both alike; the
# history database is filled (and settled) by its first invocation and kept afterwards. Appends one JSON
# line per invocation to $OUT. Usage:
#   HISTORY=1000000 RUNS=1000 OUT=/tmp/hist.jsonl crates/bench/scripts/history.sh EMPTY_URL HISTORY_URL
set -euo pipefail
BIN=${BIN:-target/release/flowrun-bench}
HISTORY=${HISTORY:-1000000}
RUNS=${RUNS:-1000}
REPEAT=${REPEAT:-3}
OUT=${OUT:-${TMPDIR:-/tmp}/hist.jsonl}
# Raw results are not kept in the repository: they are regenerated here, and the path is printed at the end.
trap 'echo "$0: JSON lines appended to $OUT" >&2' EXIT
CONCURRENCY=${CONCURRENCY:-"1 8"}
CLASSES=${CLASSES:-"Noop"}
empty=$1
full=$2
# Fill the history first, untimed by the comparison.
"$BIN" --database-url "$full" --runs 10 --warmup 0 --class Noop --history "$HISTORY" >/dev/null
for c in $CONCURRENCY; do
  for class in $CLASSES; do
    for _ in $(seq "$REPEAT"); do
      for mode in "" "--raw"; do
        for target in "$empty 0" "$full $HISTORY"; do
          set -- $target
          # shellcheck disable=SC2086
          "$BIN" --database-url "$1" --history "$2" --runs "$RUNS" --concurrency "$c" --class "$class" $mode \
            | tee -a "$OUT"
        done
      done
    done
  done
done
