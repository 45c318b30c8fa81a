"""ringpool: one registered io_uring memory pool for O_DIRECT I/O, from Python.

A :class:`Pool` maps its memory once (huge pages where it can), registers it
with io_uring once, and reads files into it with O_DIRECT and fixed-buffer
I/O, many reads in flight at once, the GIL released while they run. A read
comes back as a numpy ``uint8`` array over the pool's memory, without a
copy; the memory returns to the pool when the last array viewing it is
collected, never earlier.

    >>> import ringpool
    >>> with ringpool.Pool("1G") as pool:
    ...     data = pool.read("model.safetensors", 0, 1 << 20)   # numpy uint8, in the pool
    ...     tensors = ringpool.safetensors.load_file("model.safetensors", pool=pool)

Errors are :class:`RingpoolError` (an ``OSError`` with the errno and a
message that says what to do) or one of its subclasses.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _ringpool
from ._ringpool import (
    AlignmentError,
    File,
    HugePagesError,
    Lease,
    MemlockError,
    PoolClosedError,
    PoolExhaustedError,
    RingpoolError,
)

__version__: str = _ringpool.__version__

__all__ = [
    "AlignmentError",
    "File",
    "HugePagesError",
    "Lease",
    "MemlockError",
    "Pool",
    "PoolClosedError",
    "PoolExhaustedError",
    "RingpoolError",
    "open",
    "parse_size",
    "safetensors",
]

PathLike = Union[str, "os.PathLike[str]"]
FileLike = Union[PathLike, File]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(size: Union[int, str]) -> int:
    """Bytes in ``size``: an int, or a string such as ``"4G"``, ``"512M"``,
    ``"1.5GiB"`` (powers of 1024)."""
    if isinstance(size, bool):
        raise TypeError("a size is an int or a string such as '4G'")
    if isinstance(size, int):
        if size <= 0:
            raise ValueError(f"size {size}: must be positive")
        return size
    m = _SIZE.match(str(size))
    if not m:
        raise ValueError(f"size {size!r}: expected bytes or a number with K, M, G or T")
    unit = m.group(2).lower()
    n = float(m.group(1)) * (1024 ** ("kmgt".index(unit) + 1) if unit else 1)
    if n < 1:
        raise ValueError(f"size {size!r}: must be at least one byte")
    return int(n)


def open(path: PathLike, direct: bool = True, write: bool = False, create: bool = False) -> File:  # noqa: A001
    """Opens ``path`` for the pool's I/O.

    ``direct=True`` (the default) opens it with O_DIRECT and fails where the
    file system has none (tmpfs); ``File.offset_align`` is then the multiple
    that offsets and lengths of its writes must be (reads of any range are
    fine: the pool reads the aligned cover)."""
    return _ringpool.open(os.fspath(path), direct, write, create)


def _file(f: FileLike) -> File:
    return f if isinstance(f, File) else open(f)


def _array(lease: Lease) -> np.ndarray:
    # numpy keeps `lease` as the array's base: the memory lives as long as
    # any view of it.
    return np.asarray(lease)


class Pool:
    """A registered pool of ``size`` bytes (an int or a string such as
    ``"8G"``).

    ``page``: "auto" (1 GiB or 2 MiB hugetlb pages where reserved, else
    transparent huge pages), "1g", "2m", "thp" or "4k". ``workers``: at most
    this many worker threads (a thread's reads run on its own ring, cloned
    from the pool's registration in microseconds; workers serve what no
    thread waits for). ``segment_size``: bytes of each registered buffer (at
    most 1 GiB); a read larger than half a segment takes whole segments.

    The pool is mapped, prefaulted and registered when it is made (about a
    second per GiB for fresh huge pages): make one and keep it. Use it as a
    context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        size: Union[int, str],
        page: str = "auto",
        workers: Optional[int] = None,
        segment_size: Optional[Union[int, str]] = None,
    ) -> None:
        seg = None if segment_size is None else parse_size(segment_size)
        self._native = _ringpool.Pool(parse_size(size), page, workers, seg)

    @classmethod
    def from_broker(cls, socket: Union[str, "os.PathLike[str]"], leases: int = 1, workers: Optional[int] = None) -> "Pool":
        """The pool of a ``ringpool serve`` daemon (or any ring broker) at
        ``socket``: mapped here, with ``leases`` segments set aside for this
        process's reads, and rings the daemon cloned its registration into
        (this process registers and pins nothing). The process must run as
        the daemon's user."""
        self = cls.__new__(cls)
        self._native = _ringpool.Pool.from_broker(os.fspath(socket), leases, workers)
        return self

    def read(self, file: FileLike, offset: int, length: int) -> np.ndarray:
        """Reads ``length`` bytes at ``offset`` of ``file`` (a path or a
        :class:`File`) into the pool: a ``uint8`` array over the pool's
        memory (no copy), valid as long as any view of it lives."""
        return self.read_many([(file, offset, length)])[0]

    def read_many(self, requests: Iterable[Tuple[FileLike, int, int]]) -> List[np.ndarray]:
        """Reads every ``(file, offset, length)``, all in flight at once, the
        GIL released while they run; one array per request, in order. All
        or nothing: on an error no array is returned and every lease goes
        back."""
        files: Dict[Any, File] = {}
        reqs = []
        out: List[Optional[np.ndarray]] = []
        for f, offset, length in requests:
            if length < 0 or offset < 0:
                raise ValueError(f"offset {offset}, length {length}: must not be negative")
            if length == 0:
                out.append(np.empty(0, dtype=np.uint8))
                continue
            key = f if isinstance(f, File) else os.fspath(f)
            if key not in files:
                files[key] = _file(f)
            reqs.append((files[key], int(offset), int(length)))
            out.append(None)
        leases = iter(self._native.read_many(reqs)) if reqs else iter(())
        return [a if a is not None else _array(next(leases)) for a in out]

    def write(self, file: FileLike, offset: int, data: Any) -> int:
        """Writes ``data`` (bytes or anything with the buffer protocol) at
        ``offset``; the bytes written. On an O_DIRECT file ``offset`` and the
        length must be multiples of ``File.offset_align``
        (:class:`AlignmentError` otherwise)."""
        f = file if isinstance(file, File) else open(file, write=True)
        raw = data if isinstance(data, bytes) else memoryview(data).cast("B").tobytes()
        return self._native.write(f, int(offset), raw)

    def empty(self, length: int) -> np.ndarray:
        """A writable, zeroed ``uint8`` array of ``length`` bytes in the pool."""
        return _array(self._native.alloc(int(length)))

    def contains(self, array: np.ndarray) -> bool:
        """Whether ``array``'s data lies in the pool's memory (so that a
        device can DMA it, or ``torch.frombuffer`` view it, as it is)."""
        if array.nbytes == 0:
            return False
        start = array.__array_interface__["data"][0]
        return bool(
            self._native.contains_address(start) and self._native.contains_address(start + array.nbytes - 1)
        )

    def stats(self) -> Dict[str, Any]:
        """The pool's figures now (leases, bytes in use, rings, ...)."""
        return dict(self._native.stats())

    def close(self) -> None:
        """Stops the pool's workers and unregisters its memory. Arrays that
        view it stay valid until they are collected; later calls raise
        :class:`PoolClosedError`."""
        self._native.close()

    @property
    def closed(self) -> bool:
        return bool(self._native.closed)

    @property
    def size(self) -> int:
        """Bytes of memory."""
        return int(self._native.size)

    @property
    def address(self) -> int:
        """The address of its first byte."""
        return int(self._native.address)

    @property
    def page_kind(self) -> str:
        """The pages it got: "1g", "2m", "thp" or "4k"."""
        return str(self._native.page_kind)

    @property
    def segment_size(self) -> int:
        return int(self._native.segment_size)

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"ringpool.Pool(size={self.size}, page_kind={self.page_kind!r}, {state})"


from . import safetensors  # noqa: E402  (needs Pool)
