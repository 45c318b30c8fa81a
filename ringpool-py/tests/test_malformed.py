"""Malformed safetensors files: each raises ValueError naming the problem
(never a crash, never a partial dict)."""

import json
import struct

import pytest

import ringpool
import ringpool.safetensors as rst


def _file(tmp_path, header, data=b"", raw_header=None, length=None):
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    n = len(h) if length is None else length
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", n) + h + data)
    return path


def t(dtype="F32", shape=(2,), offs=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offs)}


CASES = [
    # (name, header, data, raw header, declared length, message)
    ("too short", None, b"", b"", None, "too short"),
    ("absurd header length", {}, b"", None, 1 << 40, "absurd"),
    ("header past the end", {}, b"", b"{}", 1000, "runs past the end"),
    ("not UTF-8", None, b"", b'{"a\xff": 1}', None, "not UTF-8"),
    ("bad JSON", None, b"", b'{"a": ', None, "not valid JSON"),
    ("not an object", None, b"", b"[1, 2]", None, "not an object"),
    ("unknown dtype", {"x": t(dtype="F4")}, b"\0" * 8, None, None, "unknown dtype"),
    ("dtype not a string", {"x": t(dtype=3)}, b"\0" * 8, None, None, "unknown dtype"),
    ("missing offsets", {"x": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, None, None, "data_offsets"),
    ("negative shape", {"x": t(shape=(-2,))}, b"\0" * 8, None, None, "non-negative"),
    ("shape of floats", {"x": t(shape=(2.0,))}, b"\0" * 8, None, None, "non-negative"),
    ("offsets reversed", {"x": t(offs=(8, 0))}, b"\0" * 8, None, None, "ends before it begins"),
    ("size mismatch", {"x": t(shape=(3,))}, b"\0" * 8, None, None, "span"),
    ("offsets past the end", {"x": t(offs=(0, 8))}, b"\0" * 4, None, None, "need 8 bytes"),
    (
        "overlap",
        {"x": t(offs=(0, 8)), "y": t(offs=(4, 12))},
        b"\0" * 12,
        None,
        None,
        "overlap",
    ),
    ("hole", {"x": t(offs=(0, 8)), "y": t(offs=(12, 20))}, b"\0" * 20, None, None, "hole"),
    ("trailing bytes", {"x": t()}, b"\0" * 16, None, None, "cover"),
    ("metadata not strings", {"__metadata__": {"a": 1}, "x": t()}, b"\0" * 8, None, None, "__metadata__"),
    ("entry not an object", {"x": [1, 2]}, b"", None, None, "expected an object"),
    ("truncated data", {"x": t(shape=(4,), offs=(0, 16))}, b"\0" * 15, None, None, "need 16 bytes"),
]


@pytest.mark.parametrize("name,header,data,raw,length,message", CASES, ids=[c[0] for c in CASES])
def test_malformed(tmp_path, name, header, data, raw, length, message):
    if name == "too short":
        path = tmp_path / "short.safetensors"
        path.write_bytes(b"\x01\x02\x03")
    else:
        path = _file(tmp_path, header, data, raw, length)
    with ringpool.Pool("8M", page="4k") as pool:
        with pytest.raises(ValueError, match=message):
            rst.load_file(path, pool=pool)
        with pytest.raises(ValueError, match=message):
            rst.safe_open(path)
        assert pool.stats()["leases"] == 0, "nothing was left leased"


def test_a_truncated_file_names_the_file(tmp_path):
    path = _file(tmp_path, {"x": t(shape=(4,), offs=(0, 16))}, b"\0" * 3)
    with pytest.raises(ValueError, match=str(path.name)):
        rst.load_file(path)


def test_a_file_shorter_than_its_header_after_opening(tmp_path):
    # Empty data section, zero-size tensors only: fine.
    path = _file(tmp_path, {"e": t(shape=(0, 3), offs=(0, 0))}, b"")
    out = rst.load_file(path)
    assert out["e"].shape == (0, 3)
