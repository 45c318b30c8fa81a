"""``python -m ringpool.bench load``: a safetensors checkpoint (at least 4 GiB
by default, 200+ tensors of mixed sizes and dtypes, written by the
safetensors package) loaded cold by each side, rounds alternating, the page
cache dropped before every load, with fio's sequential 1 MiB QD32 O_DIRECT
read of the same file as the device limit.

Method: every side runs in a fresh process (see :mod:`ringpool.bench.sides`
for each side's code); GB/s is the tensor bytes over the load's wall time;
CPU seconds per GB are the side's process CPU (every thread, io-wq
included) over the load, per GB loaded; peak memory is the process's peak
RSS plus the hugetlb pages it holds. Figures are medians over rounds; the
ratios are medians of the per-round ratios. ringpool's pool is made before
its clock starts (a loader keeps its pool; ``setup_s`` reports the time).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np

from ringpool import parse_size
from ringpool.bench.sides import names

GB = 1e9


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_checkpoint(path: str, size: int, seed: int = 11) -> None:
    """Writes a checkpoint of about ``size`` bytes with the safetensors
    package: 16 large tensors (4.5% of the size each, F16/BF16), 64 medium
    ones (0.42% each, F32/F16/I32), and 180 small ones (1 KiB to 1 MiB, ten
    dtypes), random bytes. No F8 tensors: safetensors 0.8's numpy framework
    cannot load them (it looks for ``numpy.float8_e4m3fn``), and its loaders
    are sides of the benchmark (the tests cover F8 against ml_dtypes)."""
    from safetensors.numpy import save_file

    try:
        import ml_dtypes  # type: ignore[import-not-found]

        bf16: Any = ml_dtypes.bfloat16
    except ImportError:
        bf16 = np.float16
    rng = np.random.default_rng(seed)
    tensors: Dict[str, np.ndarray] = {}

    def add(name: str, nbytes: int, dtype: Any) -> None:
        dt = np.dtype(dtype)
        n = max(nbytes // dt.itemsize, 1)
        raw = np.frombuffer(rng.bytes(n * dt.itemsize), dtype=np.uint8)
        if dt == np.bool_:
            raw = raw & 1
        cols = 1024 if n % 1024 == 0 else 1
        tensors[name] = raw.view(dt).reshape(-1, cols)

    for i in range(16):
        add(f"model.layers.{i}.mlp.weight", int(size * 0.045), bf16 if i % 2 else np.float16)
    for i in range(64):
        add(f"model.layers.{i % 16}.attn.{i}.weight", int(size * 0.0042), [np.float32, np.float16, np.int32][i % 3])
    small = [np.float32, np.float16, bf16, np.int64, np.uint8, np.int8, np.int16, np.bool_, np.uint16, np.float64]
    for i in range(180):
        add(f"model.norm.{i}", int(rng.integers(1 << 10, 1 << 20)), small[i % len(small)])
    save_file(tensors, path, metadata={"format": "np", "generator": "ringpool.bench"})


def drop_cache(path: str) -> None:
    """Empties the page cache of ``path`` (and, as root, all of it)."""
    os.sync()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    if os.geteuid() == 0:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")


def run_side(name: str, path: str) -> Dict[str, Any]:
    r = subprocess.run(
        [sys.executable, "-m", "ringpool.bench", "side", name, path], capture_output=True, text=True, timeout=3600
    )
    if r.returncode != 0:
        if name == "ringpool":
            raise RuntimeError(f"the ringpool side failed:\n{r.stderr}")
        return {"skipped": f"exited with {r.returncode}: {r.stderr.strip().splitlines()[-1:]}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_fio(path: str) -> Dict[str, Any]:
    """fio's sequential 1 MiB reads, 32 in flight, O_DIRECT, of the whole
    file (the best of io_uring and libaio in this round)."""
    if not shutil.which("fio"):
        return {"skipped": "fio is not installed (apt-get install fio)"}
    best: Optional[Dict[str, Any]] = None
    for engine in ("io_uring", "libaio"):
        drop_cache(path)
        before = os.times()
        r = subprocess.run(
            ["fio", "--name=seq", f"--filename={path}", "--rw=read", "--bs=1M", "--iodepth=32",
             f"--ioengine={engine}", "--direct=1", "--thread=1", "--output-format=json"],
            capture_output=True, text=True, timeout=3600,
        )
        after = os.times()
        if r.returncode != 0:
            continue
        j = json.loads(r.stdout[r.stdout.index("{"):])["jobs"][0]["read"]
        secs = j["runtime"] / 1e3
        out = {
            "engine": engine,
            "gbps": j["io_bytes"] / GB / max(secs, 1e-9),
            "load_s": secs,
            "cpu_s": (after.children_user - before.children_user) + (after.children_system - before.children_system),
            "bytes": j["io_bytes"],
        }
        if best is None or out["gbps"] > best["gbps"]:
            best = out
    return best or {"skipped": "fio failed with io_uring and libaio"}


def _figures(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    ok = [r for r in runs if "skipped" not in r]
    if not ok:
        return {"skipped": runs[0]["skipped"] if runs else "did not run"}
    med = lambda f: statistics.median(f(r) for r in ok)  # noqa: E731
    out = {
        "gbps": med(lambda r: r["bytes"] / GB / r["load_s"]),
        "cpu_s_per_gb": med(lambda r: r["cpu_s"] / (r["bytes"] / GB)),
        "load_s": med(lambda r: r["load_s"]),
        "rounds": len(ok),
    }
    if all("peak_mb" in r for r in ok):
        out["peak_rss_mb"] = med(lambda r: r["peak_mb"])
    if all("setup_s" in r for r in ok):
        out["setup_s"] = med(lambda r: r["setup_s"])
    return out


def _ratio(a: List[Dict[str, Any]], b: List[Dict[str, Any]], key: str) -> Optional[float]:
    def val(r: Dict[str, Any]) -> Optional[float]:
        if "skipped" in r:
            return None
        if key == "gbps":
            return r["bytes"] / GB / r["load_s"]
        return r["cpu_s"] / (r["bytes"] / GB)

    pairs = [(val(x), val(y)) for x, y in zip(a, b)]
    rs = [x / y for x, y in pairs if x is not None and y]
    return statistics.median(rs) if rs else None


def bench(path: str, rounds: int, sides: List[str]) -> Dict[str, Any]:
    runs: Dict[str, List[Dict[str, Any]]] = {s: [] for s in sides}
    fio: List[Dict[str, Any]] = []
    order = sides + ["fio"]
    for rnd in range(rounds):
        turn = order[rnd % len(order):] + order[: rnd % len(order)]
        for s in turn:
            drop_cache(path)
            r = run_fio(path) if s == "fio" else run_side(s, path)
            (fio if s == "fio" else runs[s]).append(r)
            if "skipped" in r:
                _say(f"round {rnd + 1} {s}: skipped: {r['skipped']}")
            else:
                _say(f"round {rnd + 1} {s}: {r['bytes'] / GB / r['load_s']:.3f} GB/s, {r['cpu_s']:.2f} s CPU")
    sides_out = {s: _figures(r) for s, r in runs.items()}
    mine = runs.get("ringpool", [])
    peers = [s for s in sides if s != "ringpool" and "skipped" not in sides_out[s]]
    best = max(peers, key=lambda s: sides_out[s]["gbps"], default=None)
    limit = _figures(fio)
    return {
        "file": path,
        "size_bytes": os.path.getsize(path),
        "rounds": rounds,
        "sides": sides_out,
        "device_limit": limit,
        "device_limit_gbps": limit.get("gbps"),
        "ratio_to_device_limit": _ratio(mine, fio, "gbps"),
        "ratio_vs_safetensors": _ratio(mine, runs.get("safetensors_mmap", []), "gbps"),
        "best_peer": best,
        "ratio_vs_best_peer": _ratio(mine, runs[best], "gbps") if best else None,
        "cpu_ratio_vs_safetensors": _ratio(mine, runs.get("safetensors_mmap", []), "cpu"),
        "runs": {**runs, "fio": fio},
        "method": (__doc__ or "").split("Method: ", 1)[-1].strip(),
    }


def _print(r: Dict[str, Any]) -> None:
    print(f"{r['file']}: {r['size_bytes'] / GB:.2f} GB, median of {r['rounds']} cold rounds, sides alternating")
    print(f"{'side':>22} {'GB/s':>8} {'CPU s/GB':>9} {'peak MB':>9} {'load s':>8}")
    for name, f in list(r["sides"].items()) + [("fio (device limit)", r["device_limit"])]:
        if "skipped" in f:
            print(f"{name:>22}  skipped: {f['skipped']}")
            continue
        print(f"{name:>22} {f['gbps']:>8.3f} {f['cpu_s_per_gb']:>9.3f} {f.get('peak_rss_mb', float('nan')):>9.0f} "
              f"{f['load_s']:>8.2f}")
    fmt = lambda x: "-" if x is None else f"{x:.2f}x"  # noqa: E731
    print(f"ringpool / device limit {fmt(r['ratio_to_device_limit'])}, / safetensors {fmt(r['ratio_vs_safetensors'])},"
          f" / best peer ({r['best_peer']}) {fmt(r['ratio_vs_best_peer'])}; CPU per GB / safetensors' "
          f"{fmt(r['cpu_ratio_vs_safetensors'])}")


def main(argv: List[str]) -> int:
    if argv[:1] == ["side"] and len(argv) == 3:
        from ringpool.bench.sides import run_side as side

        return side(argv[1], argv[2])
    ap = argparse.ArgumentParser(prog="python -m ringpool.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ld = sub.add_parser("load", help="load a safetensors checkpoint cold, against the other loaders")
    ld.add_argument("--dir", required=True, help="directory of the checkpoint (made there if missing)")
    ld.add_argument("--size", default="4G", help="checkpoint size (default 4G)")
    ld.add_argument("--rounds", type=int, default=3)
    ld.add_argument("--sides", default=",".join(names()), help="comma list (default: all)")
    ld.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args(argv)
    size = parse_size(a.size)
    sides = [s for s in a.sides.split(",") if s]
    unknown = set(sides) - set(names())
    if unknown:
        ap.error(f"unknown sides {sorted(unknown)} (known: {', '.join(names())})")
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    os.makedirs(a.dir, exist_ok=True)
    path = os.path.join(a.dir, f"ringpool-bench-{size}.safetensors")
    if not os.path.exists(path):
        _say(f"writing the checkpoint {path} ({size / GB:.2f} GB) with the safetensors package")
        t = time.perf_counter()
        make_checkpoint(path + ".tmp", size)
        os.replace(path + ".tmp", path)
        _say(f"written in {time.perf_counter() - t:.1f} s")
    r = bench(path, a.rounds, sides)
    if a.json:
        print(json.dumps(r, indent=2))
    else:
        _print(r)
    return 0
