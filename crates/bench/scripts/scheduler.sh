#!/usr/bin/env bash
# The scheduler benchmark (`flowrun-bench --scheduler`) for every URL × server count, through every binary
# in turn (so drift on a noisy machine hits all alike). Appends one JSON line per invocation to OUT, tagged
# with "bin". A run that is not exactly-once exits non-zero and stops the script.
#   OUT=/tmp/sched.jsonl REPEAT=3 FLOWS=10000 SERVERS="1 4" \
#     crates/bench/scripts/scheduler.sh "sqlite:///tmp/sched.db postgres://…" /tmp/bench-before /tmp/bench-after
set -euo pipefail
OUT=${OUT:-${TMPDIR:-/tmp}/sched.jsonl}
trap 'echo "$0: JSON lines appended to $OUT" >&2' EXIT
REPEAT=${REPEAT:-3}
FLOWS=${FLOWS:-10000}
SERVERS=${SERVERS:-1}
EXTRA=${EXTRA:-}
urls=$1
shift
for _ in $(seq "$REPEAT"); do
  for url in $urls; do
    for servers in $SERVERS; do
      for bin in "$@"; do
        # shellcheck disable=SC2086
        "$bin" --database-url "$url" --scheduler --flows "$FLOWS" --servers "$servers" $EXTRA \
          | python3 -c 'import json, sys; r = json.loads(sys.stdin.read()); r["bin"] = sys.argv[1]; print(json.dumps(r))' "$bin" \
          | tee -a "$OUT"
      done
    done
  done
done
