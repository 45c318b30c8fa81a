"""The pool from Python: reads into it without a copy, their lifetime,
writes, errors, threads."""

import errno
import gc
import os
import threading

import numpy as np
import pytest

import ringpool


def test_read_returns_a_view_of_the_pool_at_any_offset(pool, data_file):
    path, data = data_file
    for offset, length in [(0, 4096), (1, 1), (4095, 2), (12345, 54321), (len(data) - 7, 7), (8192, 1 << 20)]:
        a = pool.read(path, offset, length)
        assert a.dtype == np.uint8 and a.shape == (length,)
        assert a.tobytes() == data[offset : offset + length]
        assert pool.contains(a), "the bytes lie in the registered pool"


def test_views_share_the_memory_without_a_copy(pool, data_file):
    path, data = data_file
    a = pool.read(path, 100, 10000)
    m = memoryview(a)
    b = np.frombuffer(m, dtype=np.uint8)
    addr = a.__array_interface__["data"][0]
    assert b.__array_interface__["data"][0] == addr
    a[0] = np.uint8((int(a[0]) + 1) % 256)
    assert b[0] == a[0] and m[0] == a[0], "one memory"


def test_read_many_keeps_the_order_and_mixes_files(pool, data_file, tmp_path):
    path, data = data_file
    other = tmp_path / "other.bin"
    other_data = os.urandom(300_000)
    other.write_bytes(other_data)
    f = ringpool.open(other)
    reqs = [(path, i * 70001, 5000 + i) for i in range(40)] + [(f, 3, 299_000), (path, 0, 0)]
    out = pool.read_many(reqs)
    for (src, off, n), a in zip(reqs, out):
        want = (other_data if src is f else data)[off : off + n]
        assert a.tobytes() == want
    assert out[-1].shape == (0,)


def test_a_read_larger_than_a_segment_is_contiguous(pool, data_file):
    path, data = data_file
    # 10 MiB over 4 MiB segments: whole segments, read in pieces.
    a = pool.read(path, 4095, 10 << 20)
    assert a.tobytes() == data[4095 : 4095 + (10 << 20)]
    assert pool.contains(a)
    st = pool.stats()
    del a
    gc.collect()
    assert pool.stats()["largest_free"] >= st["largest_free"], "the segments came back"


def test_no_lease_is_freed_while_a_view_lives(data_file):
    path, data = data_file
    with ringpool.Pool("16M", page="4k", segment_size="4M") as pool:
        for round in range(20):
            a = pool.read(path, round * 4096, 1 << 20)
            # Keep only a derived view, two steps removed from the array.
            view = np.frombuffer(memoryview(a[1000:]), dtype=np.uint8)[5:]
            want = data[round * 4096 + 1005 : round * 4096 + (1 << 20)]
            del a
            gc.collect()
            assert pool.stats()["leases"] >= 1, "the view holds its lease"
            # Take and overwrite every free byte of the pool: a freed lease
            # would be handed out here and its bytes changed.
            grabbed = []
            while True:
                try:
                    grabbed.append(pool.empty(1 << 20))
                except ringpool.PoolExhaustedError:
                    break
                grabbed[-1][:] = 0xAB
            assert grabbed, "the pool had free room to grab"
            assert view.tobytes() == want, "the view's bytes were never reused"
            del grabbed, view
            gc.collect()
        assert pool.stats()["leases"] == 0, "every lease came back"


def test_views_outlive_a_closed_pool(data_file):
    path, data = data_file
    pool = ringpool.Pool("16M", page="4k")
    a = pool.read(path, 10, 100_000)
    pool.close()
    assert pool.closed
    gc.collect()
    assert a.tobytes() == data[10:100_010], "the memory stays mapped while a view lives"
    with pytest.raises(ringpool.PoolClosedError):
        pool.read(path, 0, 10)
    del pool
    gc.collect()
    assert a.tobytes() == data[10:100_010], "and after the pool object is gone"


def test_write_then_read_back(pool, tmp_path):
    path = tmp_path / "w.bin"
    f = ringpool.open(path, write=True, create=True)
    block = f.offset_align
    payload = os.urandom(3 * block)
    assert pool.write(f, block, payload) == len(payload)
    assert pool.read(f, block, len(payload)).tobytes() == payload
    assert pool.write(f, 0, np.frombuffer(payload[:block], dtype=np.uint8)) == block


def test_misaligned_direct_write_says_what_is_needed(pool, tmp_path):
    f = ringpool.open(tmp_path / "m.bin", write=True, create=True)
    with pytest.raises(ringpool.AlignmentError) as e:
        pool.write(f, 1, b"x" * f.offset_align)
    assert e.value.errno == errno.EINVAL
    assert "align" in str(e.value)


def test_errors_are_os_errors_with_errno(pool, data_file, tmp_path):
    path, data = data_file
    with pytest.raises(ringpool.RingpoolError) as e:
        pool.read(tmp_path / "missing", 0, 10)
    assert e.value.errno == errno.ENOENT and isinstance(e.value, OSError)
    with pytest.raises(ValueError, match="past the end"):
        pool.read(path, len(data) - 10, 11)
    with pytest.raises(ValueError):
        pool.read(path, -1, 10)
    held = pool.read(path, 0, len(data))
    with pytest.raises(ringpool.PoolExhaustedError):
        pool.read_many([(path, 0, len(data))] * 8)
    assert held.tobytes() == data, "a failed read_many leaves other reads alone"


def test_threads_read_concurrently(pool, data_file):
    path, data = data_file
    f = ringpool.open(path)
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(200):
                off = int(rng.integers(0, len(data) - 70000))
                n = int(rng.integers(1, 70000))
                got = pool.read(f, off, n)
                if got.tobytes() != data[off : off + n]:
                    errors.append((off, n))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert pool.stats()["local_rings_made"] >= 8, "each thread read on a ring of its own"


def test_sizes_parse():
    assert ringpool.parse_size("4G") == 4 << 30
    assert ringpool.parse_size("512m") == 512 << 20
    assert ringpool.parse_size("1.5GiB") == 3 << 29
    assert ringpool.parse_size(4096) == 4096
    for bad in ["", "x", "-1", "4Q", 0]:
        with pytest.raises(ValueError):
            ringpool.parse_size(bad)


def _free_1g_pages() -> int:
    try:
        with open("/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages") as f:
            return int(f.read())
    except OSError:
        return 0


def test_too_few_huge_pages_is_a_huge_pages_error():
    # More 1 GiB pages than are free: refused, with what to do.
    with pytest.raises(ringpool.HugePagesError) as e:
        ringpool.Pool((_free_1g_pages() + 1) << 30, page="1g")
    assert "huge" in str(e.value).lower()


def test_memlock_limit_is_a_memlock_error():
    """A process that may pin 1 MiB (and, as root, without CAP_IPC_LOCK)
    asks for a 64 MiB pool: MemlockError, which says what to do."""
    import resource
    import shutil
    import subprocess
    import sys

    code = (
        "import ringpool, sys\n"
        "try:\n"
        "    ringpool.Pool('64M', page='4k')\n"
        "except ringpool.MemlockError as e:\n"
        "    print('MEMLOCK', e.errno, e); sys.exit(0)\n"
        "except Exception as e:\n"
        "    print('OTHER', type(e).__name__, e); sys.exit(2)\n"
        "print('NO ERROR'); sys.exit(3)\n"
    )
    cmd = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) drops CAP_IPC_LOCK for this test"
        cmd = [setpriv, "--bounding-set=-ipc_lock", "--inh-caps=-ipc_lock"] + cmd

    def limit():
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (1 << 20, 1 << 20))

    r = subprocess.run(cmd, preexec_fn=limit, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("MEMLOCK"), r.stdout
    assert "memlock" in r.stdout.lower(), "the message names the limit to raise"


def test_a_read_into_the_pools_shorter_last_segment(data_file):
    path, data = data_file
    # 10 MiB in 4 MiB segments: 4 + 4 + 2; a 9 MiB read takes all three,
    # only what it needs of the last.
    with ringpool.Pool("10M", page="4k", segment_size="4M") as pool:
        a = pool.read(path, 1000, 9 << 20)
        assert a.tobytes() == data[1000 : 1000 + (9 << 20)]
        assert pool.contains(a)
