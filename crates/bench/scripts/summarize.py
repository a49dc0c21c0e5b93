#!/usr/bin/env python3
"""Medians per backend × concurrency × class × mode from flowrun-bench JSON lines, as a Markdown table."""
import json
import statistics
import sys
from collections import defaultdict

groups = defaultdict(list)
for path in sys.argv[1:]:
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                groups[(r["backend"], r["concurrency"], r["class"], r.get("history", 0), r["mode"])].append(r)

def med(rows, key):
    return statistics.median(r[key] for r in rows)

print("| backend | C | class | history | flowrun runs/s | raw runs/s | ratio | flowrun p50/p99 ms | raw p50/p99 ms | n |")
print("|---|---|---|---|---|---|---|---|---|---|")
keys = sorted({k[:4] for k in groups})
for k in keys:
    f, r = groups.get(k + ("flowrun",), []), groups.get(k + ("raw",), [])
    if not f or not r:
        continue
    fr, rr = med(f, "runs_per_sec"), med(r, "runs_per_sec")
    print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {fr:.0f} | {rr:.0f} | {fr / rr:.2f} | "
          f"{med(f, 'p50_ms'):.2f} / {med(f, 'p99_ms'):.2f} | {med(r, 'p50_ms'):.2f} / {med(r, 'p99_ms'):.2f} | "
          f"{len(f)}+{len(r)} |")
