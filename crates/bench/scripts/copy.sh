#!/usr/bin/env bash
# SqlCopy for every source→sink pair of SQLite, PostgreSQL and MariaDB/MySQL: one `flowrun-bench --copy` line
# per pair, appended to $OUT. Creates its own databases (flowrun_bench_copy_src/_dst on each server, two
# SQLite files in a temporary directory) and drops them at the end. Usage:
#   ROWS=1000000 OUT=/tmp/copy.jsonl crates/bench/scripts/copy.sh
# PG/MY are the servers' admin URLs (default: the local test servers); PAIRS limits the pairs, e.g.
# PAIRS="postgres:postgres sqlite:postgres".
set -euo pipefail
BIN=${BIN:-target/release/flowrun-bench}
ROWS=${ROWS:-1000000}
OUT=${OUT:-${TMPDIR:-/tmp}/copy.jsonl}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
MY=${MY:-mysql://root@127.0.0.1:3306}
EXTRA=${EXTRA:-"--row-by-row-rows 2000"}
PAIRS=${PAIRS:-"sqlite:sqlite sqlite:postgres sqlite:mysql postgres:sqlite postgres:postgres postgres:mysql mysql:sqlite mysql:postgres mysql:mysql"}
DIR=$(mktemp -d)

pg() { psql -qAt "$PG/postgres" -c "$1"; }
my() { mysql -h 127.0.0.1 -P 3306 -u root -e "$1"; }
cleanup() {
  pg "DROP DATABASE IF EXISTS flowrun_bench_copy_src" || true
  pg "DROP DATABASE IF EXISTS flowrun_bench_copy_dst" || true
  my "DROP DATABASE IF EXISTS flowrun_bench_copy_src; DROP DATABASE IF EXISTS flowrun_bench_copy_dst" || true
  rm -rf "$DIR"
  echo "$0: JSON lines appended to $OUT" >&2
}
trap cleanup EXIT
for db in flowrun_bench_copy_src flowrun_bench_copy_dst; do
  pg "DROP DATABASE IF EXISTS $db" && pg "CREATE DATABASE $db"
  my "DROP DATABASE IF EXISTS $db; CREATE DATABASE $db CHARACTER SET utf8mb4"
done

url() { # backend, role (src|dst)
  case $1 in
    sqlite) echo "sqlite://$DIR/$2.db?mode=rwc" ;;
    postgres) echo "$PG/flowrun_bench_copy_$2" ;;
    mysql) echo "$MY/flowrun_bench_copy_$2" ;;
  esac
}
for pair in $PAIRS; do
  from=${pair%%:*} to=${pair##*:}
  # shellcheck disable=SC2086
  "$BIN" --copy --source "$(url "$from" src)" --sink "$(url "$to" dst)" --rows "$ROWS" $EXTRA | tee -a "$OUT"
done
