#!/usr/bin/env bash
# Builds flowrun, runs a real flow on the embedded SQLite default (./flowrun.db) and shows its recorded run.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --quiet -p flowrun-cli
flowrun=target/debug/flowrun
if ! "$flowrun" flow show hello >/dev/null 2>&1; then
  "$flowrun" flow create hello --class Sleep --config '{"seconds": 1.5}' --description "quickstart: sleeps 1.5 s"
fi
"$flowrun" run hello
"$flowrun" runs --flow hello --limit 3
"$flowrun" runs show "$("$flowrun" runs --flow hello --limit 1 --json | sed -n 's/^ *"id": \([0-9]*\),*$/\1/p' | head -n 1)"
