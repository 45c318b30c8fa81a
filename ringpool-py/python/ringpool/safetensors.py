"""safetensors checkpoints loaded into a ringpool pool, without a copy.

:func:`load_file` parses the header (the format: an 8-byte little-endian
header length, a JSON header, then the data section that the tensors' offsets
index), reads the whole data section with large O_DIRECT reads into the
registered pool (the aligned cover; unaligned ends are trimmed), and returns
numpy arrays that are views of the pool's memory. :func:`safe_open` reads
tensors one at a time, by name.

Every dtype of the format is supported (C64 too). BF16, F8_E4M3 and F8_E5M2 come back
as ``ml_dtypes`` arrays (bfloat16, float8_e4m3fn, float8_e5m2) when
``ml_dtypes`` is installed; without it, as their raw bits (``uint16`` for
BF16, ``uint8`` for the F8 types), which ``.view(...)`` turns into the real
type later. A malformed file raises ``ValueError`` naming the problem (an
I/O failure raises ``OSError``); nothing is returned in part.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

import ringpool

__all__ = ["load_file", "safe_open", "read_header", "Header", "TensorInfo", "DTYPES"]

#: The largest header accepted (the safetensors package's own limit).
MAX_HEADER = 100_000_000

_PLAIN = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "I16": np.dtype(np.int16),
    "U16": np.dtype(np.uint16),
    "F16": np.dtype(np.float16),
    "I32": np.dtype(np.int32),
    "U32": np.dtype(np.uint32),
    "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64),
    "I64": np.dtype(np.int64),
    "U64": np.dtype(np.uint64),
    "C64": np.dtype(np.complex64),
}
# ml_dtypes' names, and the raw dtype of the same width without it.
_EXTENDED = {
    "BF16": ("bfloat16", np.dtype(np.uint16)),
    "F8_E4M3": ("float8_e4m3fn", np.dtype(np.uint8)),
    "F8_E5M2": ("float8_e5m2", np.dtype(np.uint8)),
}


def _dtypes() -> Dict[str, np.dtype]:
    out = dict(_PLAIN)
    try:
        import ml_dtypes  # type: ignore[import-not-found]

        for name, (ml, _) in _EXTENDED.items():
            out[name] = np.dtype(getattr(ml_dtypes, ml))
    except ImportError:
        for name, (_, raw) in _EXTENDED.items():
            out[name] = raw
    return out


#: The numpy dtype of each safetensors dtype (see the module's docstring
#: for BF16 and F8 without ``ml_dtypes``).
DTYPES: Dict[str, np.dtype] = _dtypes()


class TensorInfo:
    """One tensor of a header: its dtype name, shape, numpy dtype, and its
    byte range ``[begin, end)`` in the data section."""

    __slots__ = ("name", "dtype", "shape", "np_dtype", "begin", "end")

    def __init__(self, name: str, dtype: str, shape: Tuple[int, ...], np_dtype: np.dtype, begin: int, end: int):
        self.name, self.dtype, self.shape, self.np_dtype, self.begin, self.end = (
            name,
            dtype,
            shape,
            np_dtype,
            begin,
            end,
        )

    def __repr__(self) -> str:
        return f"TensorInfo({self.name!r}, {self.dtype}, {self.shape}, [{self.begin}, {self.end}))"


class Header:
    """A parsed, checked header: the tensors in data order, the
    ``__metadata__`` dict, and where the data section lies in the file."""

    def __init__(self, tensors: List[TensorInfo], metadata: Optional[Dict[str, str]], data_start: int, data_len: int):
        self.tensors = tensors
        self.metadata = metadata
        self.data_start = data_start
        self.data_len = data_len
        self.by_name = {t.name: t for t in tensors}


def _bad(path: str, why: str) -> ValueError:
    return ValueError(f"{path}: not a valid safetensors file: {why}")


def _tensor(path: str, name: str, entry: Any) -> TensorInfo:
    if not isinstance(entry, dict):
        raise _bad(path, f"tensor {name!r}: expected an object, got {type(entry).__name__}")
    for key in ("dtype", "shape", "data_offsets"):
        if key not in entry:
            raise _bad(path, f"tensor {name!r}: no {key!r}")
    dtype = entry["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        known = ", ".join(sorted(DTYPES))
        raise _bad(path, f"tensor {name!r}: unknown dtype {dtype!r} (known: {known})")
    shape = entry["shape"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise _bad(path, f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
    offs = entry["data_offsets"]
    if (
        not isinstance(offs, list)
        or len(offs) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offs)
    ):
        raise _bad(path, f"tensor {name!r}: data_offsets {offs!r} is not two non-negative integers")
    begin, end = offs
    if end < begin:
        raise _bad(path, f"tensor {name!r}: data_offsets [{begin}, {end}) ends before it begins")
    np_dtype = DTYPES[dtype]
    numel = 1
    for d in shape:
        numel *= d
    if numel * np_dtype.itemsize != end - begin:
        raise _bad(
            path,
            f"tensor {name!r}: shape {shape} of {dtype} is {numel * np_dtype.itemsize} bytes, "
            f"but its data_offsets span {end - begin}",
        )
    return TensorInfo(name, dtype, tuple(shape), np_dtype, begin, end)


def _parse(path: str, raw: bytes, data_start: int, data_len: int) -> Header:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad(path, f"the header is not UTF-8 ({e})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise _bad(path, f"the header is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise _bad(path, f"the header is a JSON {type(obj).__name__}, not an object")
    metadata = obj.pop("__metadata__", None)
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise _bad(path, "__metadata__ is not an object of strings")
    tensors = sorted((_tensor(path, n, e) for n, e in obj.items()), key=lambda t: (t.begin, t.end))
    at = 0
    prev: Optional[TensorInfo] = None
    for t in tensors:
        if t.begin < at:
            raise _bad(path, f"tensors {prev.name!r} and {t.name!r} overlap" if prev else "offsets overlap")
        if t.begin > at:
            after = f"after {prev.name!r}" if prev else "at the start of the data"
            raise _bad(path, f"a hole of {t.begin - at} bytes {after} (tensor {t.name!r} starts at {t.begin})")
        at = t.end
        prev = t
    if at != data_len:
        if at > data_len:
            raise _bad(path, f"the tensors need {at} bytes of data but the file holds {data_len} after its header")
        raise _bad(path, f"the data section holds {data_len} bytes but the tensors cover {at}")
    return Header(tensors, metadata, data_start, data_len)


def read_header(path: Union[str, "os.PathLike[str]"]) -> Header:
    """Reads and checks the header of ``path`` (``ValueError`` naming the
    problem for a malformed one)."""
    p = os.fspath(path)
    fd = os.open(p, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size < 8:
            raise _bad(p, f"{size} bytes: too short for the 8-byte header length")
        (n,) = struct.unpack("<Q", os.pread(fd, 8, 0))
        if n > MAX_HEADER:
            raise _bad(p, f"the header length {n} is absurd (more than {MAX_HEADER} bytes)")
        if 8 + n > size:
            raise _bad(p, f"the header of {n} bytes runs past the end of the file ({size} bytes)")
        raw = b""
        while len(raw) < n:
            chunk = os.pread(fd, n - len(raw), 8 + len(raw))
            if not chunk:
                raise _bad(p, "the file shrank while its header was read")
            raw += chunk
    finally:
        os.close(fd)
    return _parse(p, raw, 8 + n, size - 8 - n)


def _open_for_pool(path: str) -> "ringpool.File":
    try:
        return ringpool.open(path, direct=True)
    except ringpool.RingpoolError:
        # A file system without O_DIRECT (tmpfs): buffered reads instead.
        return ringpool.open(path, direct=False)


def _pool_for(data_len: int) -> "ringpool.Pool":
    """A pool that holds ``data_len`` bytes read as one aligned cover: whole
    segments of a power of two (2 MiB to 1 GiB), as few as fit."""
    cover = data_len + (8 << 10)
    seg = 2 << 20
    while seg < cover and seg < (1 << 30):
        seg *= 2
    count = -(-cover // seg)
    return ringpool.Pool(seg * count, segment_size=seg)


def _views(data: np.ndarray, tensors: List[TensorInfo]) -> Dict[str, np.ndarray]:
    out: Dict[str, np.ndarray] = {}
    for t in tensors:
        if t.end == t.begin:
            out[t.name] = np.empty(t.shape, dtype=t.np_dtype)
        else:
            out[t.name] = data[t.begin : t.end].view(t.np_dtype).reshape(t.shape)
    return out


def load_file(path: Union[str, "os.PathLike[str]"], pool: Optional["ringpool.Pool"] = None) -> Dict[str, np.ndarray]:
    """Loads every tensor of the checkpoint at ``path``: a dict of numpy
    arrays that view the pool's memory (no copy), in the order of the data.

    With ``pool=None`` a pool just large enough is made for this file (and
    closed; the arrays keep its memory). Pass a pool you keep to load many
    files without setting memory up each time (that is where the speed is).
    The arrays are writable views; the memory goes back to the pool when
    the last of them is collected.
    """
    p = os.fspath(path)
    header = read_header(p)
    if header.data_len == 0:
        return _views(np.empty(0, dtype=np.uint8), header.tensors)
    own = pool is None
    use = _pool_for(header.data_len) if pool is None else pool
    try:
        f = _open_for_pool(p)
        try:
            data = use.read(f, header.data_start, header.data_len)
        finally:
            f.close()
    finally:
        if own:
            use.close()
    return _views(data, header.tensors)


class safe_open:  # noqa: N801  (the safetensors package's name)
    """Lazy access by name, as ``safetensors.safe_open``: ``keys()``,
    ``metadata()``, ``get_tensor(name)`` (read on demand into the pool, a
    view of it). Only the numpy framework (``framework="np"``/``"numpy"``)."""

    def __init__(
        self, path: Union[str, "os.PathLike[str]"], framework: str = "np", pool: Optional["ringpool.Pool"] = None
    ):
        if framework not in ("np", "numpy"):
            raise ValueError(f"framework {framework!r}: ringpool returns numpy arrays (use 'np')")
        self._path = os.fspath(path)
        self._header = read_header(self._path)
        self._own = pool is None
        # Every tensor may be read and kept: room for all of them.
        self._pool = _pool_for(self._header.data_len) if pool is None else pool
        self._file: Optional[ringpool.File] = _open_for_pool(self._path)

    def keys(self) -> List[str]:
        """The tensors' names, in data order."""
        return [t.name for t in self._header.tensors]

    def metadata(self) -> Optional[Dict[str, str]]:
        """The header's ``__metadata__``, or ``None``."""
        return self._header.metadata

    def get_tensor(self, name: str) -> np.ndarray:
        """Reads tensor ``name`` into the pool (``KeyError`` if absent)."""
        if self._file is None:
            raise ValueError("the file was closed")
        t = self._header.by_name[name]
        if t.end == t.begin:
            return np.empty(t.shape, dtype=t.np_dtype)
        data = self._pool.read(self._file, self._header.data_start + t.begin, t.end - t.begin)
        return data.view(t.np_dtype).reshape(t.shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._own:
            self._pool.close()

    def __enter__(self) -> "safe_open":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
