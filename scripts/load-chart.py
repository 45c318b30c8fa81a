#!/usr/bin/env python3
"""The chart of BENCHMARKS.md's loader section: GB/s and CPU seconds per GB
of every side of `python -m ringpool.bench load`, on each device.

    python scripts/load-chart.py bench-results/load   # writes load.svg there

Needs matplotlib (scripts/bench-load.sh installs it in the test venv).
"""

import json
import os
import sys

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402


def main(out: str) -> None:
    devices = [d for d in ("disk", "loop") if os.path.exists(f"{out}/{d}.json")]
    reports = {d: json.load(open(f"{out}/{d}.json")) for d in devices}
    names = [n for n in reports[devices[0]]["sides"]] + ["fio seq 1M QD32"]

    def fig(r, n):
        return r["device_limit"] if n.startswith("fio") else r["sides"].get(n, {"skipped": "?"})

    fig_, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(devices)
    for k, (key, title) in enumerate((("gbps", "GB/s (higher is better)"), ("cpu_s_per_gb", "CPU s per GB (lower is better)"))):
        ax = axes[k]
        for i, d in enumerate(devices):
            vals = [fig(reports[d], n).get(key, 0.0) for n in names]
            xs = [j + i * width for j in range(len(names))]
            ax.bar(xs, vals, width, label=d)
        ax.set_xticks([j + width * (len(devices) - 1) / 2 for j in range(len(names))])
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
        ax.legend()
    size = reports[devices[0]]["size_bytes"] / 1e9
    fig_.suptitle(f"Loading a {size:.1f} GB safetensors checkpoint, cold cache (medians of {reports[devices[0]]['rounds']} rounds)")
    fig_.tight_layout()
    fig_.savefig(f"{out}/load.svg")
    print(f"{out}/load.svg")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench-results/load")
