"""The sides of ``python -m ringpool.bench load``: each loads a whole
safetensors checkpoint into memory the way its own documentation shows,
timed from the first byte asked for to the last byte in memory. Every side
runs in a fresh process (``python -m ringpool.bench side NAME FILE``), which
prints one JSON object: ``load_s``, ``cpu_s`` (the process's user + system
time over the load, every thread included: io_uring's io-wq workers are
threads of the process), ``peak_mb`` (the process's peak resident memory
plus the hugetlb pages it holds), ``bytes`` (tensor bytes loaded) and
``setup_s`` (work before the clock starts: ringpool's pool). A side that
cannot run here prints ``{"skipped": reason}``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List

import numpy as np


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _peak_mb() -> float:
    # VmHWM leaves hugetlb pages out; a pool of them holds the data.
    return (_status_kb("VmHWM") + _status_kb("HugetlbPages")) / 1024


def _touch(arrays: Dict[str, Any]) -> int:
    """Reads one byte of every 4 KiB of every array (an mmap's pages come in
    only when touched); the bytes seen."""
    total = 0
    for a in arrays.values():
        raw = np.asarray(a).reshape(-1).view(np.uint8) if a.size else None
        if raw is not None:
            int(raw[::4096].sum())
            total += raw.nbytes
    return total


def side_ringpool(path: str) -> Dict[str, Any]:
    import ringpool
    import ringpool.safetensors as rst

    t = time.perf_counter()
    size = os.path.getsize(path)
    # Whole 1 GiB segments: a read larger than half a segment takes whole
    # ones, the last only as much as it needs.
    gib = 1 << 30
    pool = ringpool.Pool(-(-(size + (64 << 20)) // gib) * gib, page=os.environ.get("RINGPOOL_BENCH_PAGE", "auto"))
    setup = time.perf_counter() - t
    c0, t0 = _cpu(), time.perf_counter()
    tensors = rst.load_file(path, pool=pool)
    t1, c1 = time.perf_counter(), _cpu()
    n = sum(a.nbytes for a in tensors.values())
    inside = all(pool.contains(a) for a in tensors.values() if a.nbytes)
    # Taken while the pool lives: its huge pages are given back with it.
    peak = _peak_mb()
    return {"load_s": t1 - t0, "cpu_s": c1 - c0, "bytes": n, "setup_s": setup, "in_pool": inside,
            "page_kind": pool.page_kind, "peak_mb": peak}


def side_safetensors_mmap(path: str) -> Dict[str, Any]:
    from safetensors.numpy import load_file

    c0, t0 = _cpu(), time.perf_counter()
    tensors = load_file(path)
    n = _touch(tensors)
    return {"load_s": time.perf_counter() - t0, "cpu_s": _cpu() - c0, "bytes": n}


def side_safetensors_pread(path: str) -> Dict[str, Any]:
    import inspect

    from safetensors import safe_open

    try:
        sig = inspect.signature(safe_open)
        has_backend = "backend" in sig.parameters
    except (TypeError, ValueError):
        has_backend = True  # a builtin: try it
    c0, t0 = _cpu(), time.perf_counter()
    try:
        f = safe_open(path, framework="np", backend="pread")
    except TypeError as e:
        return {"skipped": f"safetensors {_version('safetensors')} has no backend='pread' ({e})"}
    if not has_backend:
        return {"skipped": f"safetensors {_version('safetensors')} has no backend='pread'"}
    with f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    n = _touch(tensors)
    return {"load_s": time.perf_counter() - t0, "cpu_s": _cpu() - c0, "bytes": n}


def side_threadpool_preadv(path: str) -> Dict[str, Any]:
    """A ThreadPoolExecutor of os.preadv into numpy arrays, one task per
    tensor, as a Python programmer would write it."""
    import ringpool.safetensors as rst

    c0, t0 = _cpu(), time.perf_counter()
    header = rst.read_header(path)
    fd = os.open(path, os.O_RDONLY)
    try:

        def load(t: "rst.TensorInfo") -> np.ndarray:
            buf = np.empty(t.end - t.begin, dtype=np.uint8)
            done = 0
            while done < buf.nbytes:
                n = os.preadv(fd, [memoryview(buf)[done:]], header.data_start + t.begin + done)
                if n <= 0:
                    raise OSError(f"short read of {t.name}")
                done += n
            return buf.view(t.np_dtype).reshape(t.shape)

        with ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) * 4)) as ex:
            tensors = dict(zip((t.name for t in header.tensors), ex.map(load, header.tensors)))
    finally:
        os.close(fd)
    n = sum(a.nbytes for a in tensors.values())
    return {"load_s": time.perf_counter() - t0, "cpu_s": _cpu() - c0, "bytes": n}


def side_runai_model_streamer(path: str) -> Dict[str, Any]:
    try:
        from runai_model_streamer import SafetensorsStreamer  # type: ignore[import-not-found]
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"runai-model-streamer does not import here: {type(e).__name__}: {e}"}
    c0, t0 = _cpu(), time.perf_counter()
    n = 0
    with SafetensorsStreamer() as streamer:
        streamer.stream_file(path)
        for _name, tensor in streamer.get_tensors():
            n += tensor.numel() * tensor.element_size()
    return {"load_s": time.perf_counter() - t0, "cpu_s": _cpu() - c0, "bytes": n}


def side_fastsafetensors(path: str) -> Dict[str, Any]:
    try:
        from fastsafetensors import SafeTensorsFileLoader, SingleGroup  # type: ignore[import-not-found]
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"fastsafetensors does not import here: {type(e).__name__}: {e}"}
    c0, t0 = _cpu(), time.perf_counter()
    loader = SafeTensorsFileLoader(SingleGroup(), "cpu", nogds=True)
    try:
        loader.add_filenames({0: [path]})
        fb = loader.copy_files_to_device()
        n = 0
        for key in fb.key_to_rank_lidx.keys():
            t = fb.get_tensor(key)
            n += t.numel() * t.element_size()
        fb.close()
    finally:
        loader.close()
    return {"load_s": time.perf_counter() - t0, "cpu_s": _cpu() - c0, "bytes": n}


def _version(pkg: str) -> str:
    try:
        from importlib.metadata import version

        return version(pkg)
    except Exception:  # noqa: BLE001
        return "?"


SIDES: Dict[str, Callable[[str], Dict[str, Any]]] = {
    "ringpool": side_ringpool,
    "safetensors_mmap": side_safetensors_mmap,
    "safetensors_pread": side_safetensors_pread,
    "threadpool_preadv": side_threadpool_preadv,
    "runai_model_streamer": side_runai_model_streamer,
    "fastsafetensors": side_fastsafetensors,
}


def run_side(name: str, path: str) -> int:
    """Runs one side in this process and prints its JSON."""
    try:
        out = SIDES[name](path)
    except ImportError as e:
        out = {"skipped": f"{type(e).__name__}: {e}"}
    except Exception as e:  # noqa: BLE001  (a peer that fails here gets a row saying why)
        if name == "ringpool":
            raise
        out = {"skipped": f"failed here: {type(e).__name__}: {e}"}
    if "skipped" not in out:
        out.setdefault("peak_mb", _peak_mb())
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


def names() -> List[str]:
    return list(SIDES)
