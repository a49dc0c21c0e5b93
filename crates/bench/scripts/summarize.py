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
                # ab.sh tags each line with the binary it ran; different binaries are different rows.
                backend = r["backend"] + (f" ({r['bin']})" if "bin" in r else "")
                groups[(backend, r["concurrency"], r["class"], r.get("history", 0), r["mode"])].append(r)

def med(rows, key):
    return statistics.median(r[key] for r in rows)

# Besides the ratio of the medians, the spread of the ratios of consecutive flowrun/raw pairs (matrix.sh
# alternates the modes), which shows how noisy a cell was.
print("| backend | C | class | history | flowrun runs/s | raw runs/s | ratio | pair ratios min–max | "
      "flowrun p50/p99 ms | raw p50/p99 ms | n |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
keys = sorted({k[:4] for k in groups})
for k in keys:
    f, r = groups.get(k + ("flowrun",), []), groups.get(k + ("raw",), [])
    if not f or not r:
        continue
    fr, rr = med(f, "runs_per_sec"), med(r, "runs_per_sec")
    pairs = [a["runs_per_sec"] / b["runs_per_sec"] for a, b in zip(f, r)]
    print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {fr:.0f} | {rr:.0f} | {fr / rr:.2f} | "
          f"{min(pairs):.2f}–{max(pairs):.2f} | "
          f"{med(f, 'p50_ms'):.2f} / {med(f, 'p99_ms'):.2f} | {med(r, 'p50_ms'):.2f} / {med(r, 'p99_ms'):.2f} | "
          f"{len(f)}+{len(r)} |")

# With runs at several history sizes (history.sh): each mode's median runs/s with the largest history
# against the empty database.
sizes = sorted({k[3] for k in groups})
if len(sizes) > 1 and 0 in sizes:
    big = sizes[-1]
    print()
    print(f"| backend | C | class | mode | runs/s empty | runs/s {big:,} past runs | ratio | p50 ms empty → {big:,} | n |")
    print("|---|---|---|---|---|---|---|---|---|")
    for b, c, cls, mode in sorted({(k[0], k[1], k[2], k[4]) for k in groups}):
        e, h = groups.get((b, c, cls, 0, mode), []), groups.get((b, c, cls, big, mode), [])
        if not e or not h:
            continue
        er, hr = med(e, "runs_per_sec"), med(h, "runs_per_sec")
        print(f"| {b} | {c} | {cls} | {mode} | {er:.0f} | {hr:.0f} | {hr / er:.2f} | "
              f"{med(e, 'p50_ms'):.2f} → {med(h, 'p50_ms'):.2f} | {len(e)}+{len(h)} |")
