#!/usr/bin/env bash
# Builds flowrun, runs a real flow on the embedded SQLite default (./flowrun.db) and shows its recorded run.
set -euo pipefail
cd "$(dirname "$0")"
echo "building the flowrun CLI (the first build takes a few minutes)..." >&2
# Cargo names the binary it built (wherever CARGO_TARGET_DIR or .cargo/config puts it); progress stays on
# stderr.
flowrun=$(cargo build -p flowrun-cli --bin flowrun --message-format=json-render-diagnostics |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
if [ -z "$flowrun" ] || [ ! -x "$flowrun" ]; then
  echo "quickstart: cargo did not report where it built flowrun" >&2
  exit 1
fi
echo "using $flowrun" >&2
if ! "$flowrun" flow show hello >/dev/null 2>&1; then
  "$flowrun" flow create hello --class Sleep --config '{"seconds": 1.5}' --description "quickstart: sleeps 1.5 s"
fi
"$flowrun" run hello
"$flowrun" runs --flow hello --limit 3
"$flowrun" runs show "$("$flowrun" runs --flow hello --limit 1 --json | sed -n 's/^ *"id": \([0-9]*\),*$/\1/p' | head -n 1)"
