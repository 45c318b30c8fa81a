#!/usr/bin/env python3
"""Table of scripts/bench-vec.sh: medians of the rounds per (device, rw,
shape), and the ratio vec8/vec1 taken round by round (the two shapes ran
alternately), then its median."""
import glob
import json
import os
import statistics
import sys

out = sys.argv[1]
rows = {}
for p in sorted(glob.glob(os.path.join(out, "*.json"))):
    name = os.path.basename(p)[:-5]
    dev, rw, vec, qd, rnd = name.split("-")
    v = json.load(open(p))
    rows.setdefault((dev, rw), {}).setdefault((vec, qd), {})[rnd] = v

print("| device | rw | shape | opcode | blocks/s (median) | CPU µs per block | p50 µs per op | blocks/s ratio vec8/vec1 | CPU/block ratio |")
print("|---|---|---|---|---|---|---|---|---|")
for (dev, rw), shapes in sorted(rows.items()):
    v8, v1 = shapes.get(("vec8", "qd4"), {}), shapes.get(("vec1", "qd32"), {})
    common = sorted(set(v8) & set(v1))
    rb = statistics.median(v8[r]["blocks_per_s"] / v1[r]["blocks_per_s"] for r in common) if common else float("nan")
    rc = statistics.median(v8[r]["cpu_us_per_block"] / v1[r]["cpu_us_per_block"] for r in common) if common else float("nan")
    for label, runs in (("vec 8 x iodepth 4", v8), ("vec 1 x iodepth 32", v1)):
        if not runs:
            continue
        any_run = next(iter(runs.values()))
        bps = statistics.median(r["blocks_per_s"] for r in runs.values())
        cpb = statistics.median(r["cpu_us_per_block"] for r in runs.values())
        p50 = statistics.median(r["lat_us"]["p50"] for r in runs.values())
        ratio = f"{rb:.2f}" if label.startswith("vec 8") else ""
        cratio = f"{rc:.2f}" if label.startswith("vec 8") else ""
        print(f"| {dev} | {rw} | {label} | {any_run['opcode']} | {bps:,.0f} | {cpb:.2f} | {p50:.1f} | {ratio} | {cratio} |")
