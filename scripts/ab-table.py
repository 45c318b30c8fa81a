#!/usr/bin/env python3
"""Summary of scripts/ab-regression.sh: per measure, the median over rounds
of the old and the new build, and new / old."""
import glob, json, os, statistics, sys

out = sys.argv[1]
measures = [
    ("register 4 GiB: register_us", "register", lambda d: d["results"][0]["register_us"], "lower"),
    ("register 4 GiB: clone_us_median", "register", lambda d: d["results"][0]["clone_us_median"], "lower"),
    ("register 4 GiB: spinup_us_median", "register", lambda d: d["results"][0]["spinup_us_median"], "lower"),
    ("churn 1 GiB: clone p50_us", "churn", lambda d: d["clone"]["p50_us"], "lower"),
    ("churn 1 GiB: floor_p50_us", "churn", lambda d: d["floor_p50_us"], "lower"),
    ("io zram qd1: iops", "io-zram-qd1", lambda d: d["iops"], "higher"),
    ("io zram qd32: iops", "io-zram-qd32", lambda d: d["iops"], "higher"),
    ("io loop qd1: iops", "io-loop-qd1", lambda d: d["iops"], "higher"),
    ("io loop qd32: iops", "io-loop-qd32", lambda d: d["iops"], "higher"),
    ("io zram qd1: cpu_us_per_io", "io-zram-qd1", lambda d: d["cpu_us_per_io"], "lower"),
    ("io loop qd32: cpu_us_per_io", "io-loop-qd32", lambda d: d["cpu_us_per_io"], "lower"),
    ("pool-latency loop: pool_p50_us", "pool-latency-loop", lambda d: d["pool_p50_us"], "lower"),
]
print(f"{'measure':<38} {'old (median)':>14} {'new (median)':>14} {'new/old':>8}  better")
for name, prefix, get, better in measures:
    side = {}
    for s in ("old", "new"):
        vals = []
        for p in sorted(glob.glob(os.path.join(out, f"{prefix}-{s}-*.json"))):
            try:
                v = get(json.load(open(p)))
            except (KeyError, IndexError, TypeError, json.JSONDecodeError):
                continue
            if v is not None:
                vals.append(v)
        side[s] = statistics.median(vals) if vals else None
    o, n = side["old"], side["new"]
    ratio = f"{n / o:.3f}" if o and n else "-"
    fmt = lambda x: "-" if x is None else f"{x:,.2f}"
    print(f"{name:<38} {fmt(o):>14} {fmt(n):>14} {ratio:>8}  {better}")
