#!/usr/bin/env python3
"""Markdown table of `ringpool bench io --vs-fio --json` reports (for
BENCHMARKS.md): ringpool against the best fio engine of each line (the most
IOPS, median of the rounds), with the ratios taken round by round."""
import json
import os
import sys

rows = []
for path in sys.argv[1:]:
    with open(path) as f:
        r = json.load(f)
    dev = os.path.basename(path).split("-")[0]
    rows.append((dev, r["rw"], r["bs"], r["workers"], r["iodepth"], r))

rows.sort(key=lambda x: (x[0], x[1], x[2], x[3], x[4]))
print("| device | rw | bs | iodepth | workers | ringpool engine | ringpool IOPS | best fio engine | its IOPS | IOPS ratio "
      "| ringpool CPU µs/IO | its CPU µs/IO | CPU ratio | ringpool p50 µs | its p50 µs | p50 ratio | other engines (IOPS) "
      "| IoPool::run IOPS / ring's |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def f(x, p=0):
    return "-" if x is None else f"{x:,.{p}f}"


for dev, rw, bs, w, qd, r in rows:
    best = r.get("fio_best") or {}
    others = ", ".join(f"{e} {f(v['iops'])}" for e, v in sorted(r.get("fio_engines", {}).items()) if e != best.get("engine"))
    print(f"| {dev} | {rw} | {bs // 1024}k | {qd} | {w} | {r.get('engine', '-')} | {f(r['iops'])} | {best.get('engine', '-')} "
          f"| {f(best.get('iops'))} | {f(r.get('ratio_best_iops'), 2)} | {f(r['cpu_us_per_io'], 2)} "
          f"| {f(best.get('cpu_us_per_io'), 2)} | {f(r.get('ratio_best_cpu_per_io'), 2)} | {f(r['lat_us']['p50'], 1)} "
          f"| {f(best.get('lat_us', {}).get('p50'), 1)} | {f(r.get('ratio_best_lat_p50'), 2)} | {others} "
          f"| {f(r.get('ratio_other_api_iops'), 3)} |")
windows = {r.get("cpu_window") for *_, r in rows}
print()
print(f"CPU window on every side: {', '.join(sorted(str(w) for w in windows))} (whole process over the I/O window, "
      "io-wq threads included); submit batch: "
      f"{', '.join(sorted({str(r.get('submit_batch')) for *_, r in rows}))}; buffers: "
      f"{', '.join(sorted({str(r.get('buffers')) for *_, r in rows}))}")
