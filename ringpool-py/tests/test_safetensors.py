"""safetensors checkpoints: every tensor equals the safetensors package's
own load, for every dtype it writes; views lie in the pool."""

import gc
import os
import threading

import numpy as np
import pytest

import ringpool
import ringpool.safetensors as rst

if os.environ.get("RINGPOOL_STRICT") == "1":
    # CI installs the test extras: their absence is a failure, not a skip.
    import ml_dtypes
    import safetensors.numpy as st_numpy
else:
    st_numpy = pytest.importorskip("safetensors.numpy", reason="the safetensors package is a test requirement")
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is a test requirement")

PLAIN = [np.bool_, np.uint8, np.int8, np.int16, np.uint16, np.float16, np.int32, np.uint32, np.float32,
         np.float64, np.int64, np.uint64, np.complex64]
EXTENDED = [ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2]


def _random(rng, dtype, shape):
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) if shape else 1
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    raw = rng.integers(0, 256, size=n * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def _writable_dtypes():
    """The dtypes safetensors.numpy writes and reads back itself (its numpy
    reader has no BF16 or F8: those are tested against what was written)."""
    ok = []
    for dt in PLAIN + EXTENDED:
        try:
            back = st_numpy.load(st_numpy.save({"x": np.zeros(2, dtype=dt)}))
            assert back["x"].dtype == np.dtype(dt)
            ok.append(dt)
        except Exception:  # noqa: BLE001
            pass
    return ok


def _same(a, b):
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    assert a.shape == b.shape
    assert a.tobytes() == b.tobytes(), "bit for bit (NaNs included)"


def _checkpoint(path, rng, n=60, metadata=None):
    dts = _writable_dtypes()
    tensors = {}
    for i in range(n):
        dt = dts[i % len(dts)]
        rank = int(rng.integers(0, 4))
        shape = tuple(int(x) for x in rng.integers(0, 40, size=rank))
        if i % 17 == 3:
            shape = (0, 5)
        tensors[f"layer.{i}.{np.dtype(dt).name}"] = _random(rng, dt, shape)
    st_numpy.save_file(tensors, str(path), metadata=metadata)
    return tensors


def test_every_dtype_round_trips(tmp_path):
    dts = _writable_dtypes()
    assert len(dts) >= len(PLAIN), f"safetensors wrote only {dts}"
    rng = np.random.default_rng(1)
    path = tmp_path / "all.safetensors"
    _checkpoint(path, rng, metadata={"format": "np", "note": "ünïcode"})
    theirs = st_numpy.load_file(str(path))
    with ringpool.Pool("64M", page="4k") as pool:
        ours = rst.load_file(path, pool=pool)
        assert list(ours) == sorted(ours, key=lambda k: rst.read_header(path).by_name[k].begin)
        assert set(ours) == set(theirs)
        for k in theirs:
            _same(ours[k], theirs[k])
            if ours[k].nbytes:
                assert pool.contains(ours[k]), f"{k} is a view of the pool"


def test_bf16_and_f8_written_by_safetensors(tmp_path):
    """BF16, F8_E4M3 and F8_E5M2 written by safetensors.numpy.save_file (its
    reader cannot read them back into numpy): our arrays are ml_dtypes
    arrays, bit for bit what was written."""
    rng = np.random.default_rng(8)
    tensors = {f"{np.dtype(dt).name}.{i}": _random(rng, dt, shape)
               for dt in EXTENDED for i, shape in enumerate([(3, 5), (0,), (1000,), ()])}
    path = tmp_path / "ext.safetensors"
    st_numpy.save_file(tensors, str(path))
    header = rst.read_header(path)
    assert {t.dtype for t in header.tensors} == {"BF16", "F8_E4M3", "F8_E5M2"}
    with ringpool.Pool("16M", page="4k") as pool:
        ours = rst.load_file(path, pool=pool)
        for k, v in tensors.items():
            _same(ours[k], v)


def test_without_ml_dtypes_bf16_and_f8_come_back_as_raw_bits(tmp_path):
    import subprocess
    import sys

    rng = np.random.default_rng(12)
    tensors = {"b": _random(rng, ml_dtypes.bfloat16, (4, 4)), "f": _random(rng, ml_dtypes.float8_e5m2, (9,))}
    path = tmp_path / "raw.safetensors"
    st_numpy.save_file(tensors, str(path))
    code = (
        "import sys; sys.modules['ml_dtypes'] = None\n"
        "import ringpool.safetensors as rst\n"
        f"d = rst.load_file({str(path)!r})\n"
        "print(d['b'].dtype, d['f'].dtype, d['b'].tobytes().hex(), d['f'].tobytes().hex())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["uint16", "uint8"]
    assert out[2] == tensors["b"].tobytes().hex() and out[3] == tensors["f"].tobytes().hex()


def test_random_checkpoints_with_and_without_a_pool(tmp_path):
    rng = np.random.default_rng(2)
    for round in range(5):
        path = tmp_path / f"r{round}.safetensors"
        _checkpoint(path, rng, n=int(rng.integers(1, 80)))
        theirs = st_numpy.load_file(str(path))
        ours = rst.load_file(path)  # a pool of its own
        for k in theirs:
            _same(ours[k], theirs[k])


def test_a_tensor_larger_than_a_segment(tmp_path):
    rng = np.random.default_rng(3)
    big = _random(rng, np.float32, (3 << 20,))  # 12 MiB
    small = _random(rng, np.int8, (5, 7))
    path = tmp_path / "big.safetensors"
    st_numpy.save_file({"big": big, "small": small}, str(path))
    with ringpool.Pool("32M", page="4k", segment_size="4M") as pool:
        ours = rst.load_file(path, pool=pool)
        _same(ours["big"], big)
        _same(ours["small"], small)
        assert pool.contains(ours["big"])


def test_safe_open_reads_by_name(tmp_path):
    rng = np.random.default_rng(4)
    path = tmp_path / "lazy.safetensors"
    tensors = _checkpoint(path, rng, n=20, metadata={"k": "v"})
    with rst.safe_open(path, framework="np") as f:
        assert f.metadata() == {"k": "v"}
        assert set(f.keys()) == set(tensors)
        for k in reversed(f.keys()):
            _same(f.get_tensor(k), tensors[k])
        with pytest.raises(KeyError):
            f.get_tensor("absent")


def test_arrays_outlive_the_dict_and_the_pool(tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / "life.safetensors"
    tensors = _checkpoint(path, rng, n=10)
    pool = ringpool.Pool("16M", page="4k")
    d = rst.load_file(path, pool=pool)
    keep = {k: v for k, v in list(d.items())[:3]}
    del d
    pool.close()
    gc.collect()
    # Churn other memory; the kept arrays' bytes must not move.
    junk = [np.full(1 << 20, 7, dtype=np.uint8) for _ in range(8)]
    for k, v in keep.items():
        _same(v, tensors[k])
    del junk


def test_threads_load_at_once(tmp_path):
    rng = np.random.default_rng(6)
    paths = []
    for i in range(4):
        p = tmp_path / f"t{i}.safetensors"
        _checkpoint(p, rng, n=30)
        paths.append(p)
    errors = []
    with ringpool.Pool("64M", page="4k") as pool:

        def work(p):
            try:
                theirs = st_numpy.load_file(str(p))
                for _ in range(5):
                    ours = rst.load_file(p, pool=pool)
                    for k in theirs:
                        if ours[k].tobytes() != theirs[k].tobytes():
                            errors.append((p, k))
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        ts = [threading.Thread(target=work, args=(p,)) for p in paths]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert not errors
