"""Fixtures: small pools of 4 KiB pages (no machine state is changed), and
files on a file system with O_DIRECT (pytest's tmp_path)."""

import os

import numpy as np
import pytest

import ringpool


@pytest.fixture
def pool():
    # 4 MiB segments: reads above 2 MiB take whole segments (the span path).
    with ringpool.Pool("64M", page="4k", segment_size="4M") as p:
        yield p


@pytest.fixture
def data_file(tmp_path):
    """A 12 MiB file of random bytes, and its bytes."""
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, size=12 << 20, dtype=np.uint8).tobytes()
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    return path, data


def direct_ok(path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError:
        return False
    os.close(fd)
    return True
