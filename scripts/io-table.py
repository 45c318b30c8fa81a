#!/usr/bin/env python3
"""Markdown table of `ringpool bench io --vs-fio --json` reports (for BENCHMARKS.md)."""
import json
import sys

rows = []
for path in sys.argv[1:]:
    with open(path) as f:
        r = json.load(f)
    dev = "zram" if r["device"].startswith("block") else "disk (file)"
    fio = r.get("fio") or {}
    rows.append((dev, r["rw"], r["bs"], r["iodepth"], r["workers"], r, fio))

rows.sort(key=lambda x: (x[0], x[1], x[2], x[4], x[3]))
print("| device | rw | bs | iodepth | workers | ringpool IOPS | fio IOPS | IOPS ratio | ringpool CPU µs/IO | fio CPU µs/IO | CPU ratio | ringpool p50 µs | fio p50 µs | p50 ratio |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for dev, rw, bs, qd, w, r, fio in rows:
    def f(x, p=0):
        return "-" if x is None else f"{x:,.{p}f}"
    print(f"| {dev} | {rw} | {bs // 1024}k | {qd} | {w} | {f(r['iops'])} | {f(fio.get('iops'))} | {f(r.get('ratio_iops'), 2)} "
          f"| {f(r['cpu_us_per_io'], 2)} | {f(fio.get('cpu_us_per_io'), 2)} | {f(r.get('ratio_cpu_per_io'), 2)} "
          f"| {f(r['lat_us']['p50'], 1)} | {f(fio.get('lat_us', {}).get('p50'), 1)} | {f(r.get('ratio_lat_p50'), 2)} |")
