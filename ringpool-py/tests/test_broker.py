"""A pool served by ``ringpool serve``: this process maps the daemon's pool
and reads into it through rings the daemon cloned its registration into."""

import os
import pathlib
import signal
import subprocess
import time

import ringpool

ROOT = pathlib.Path(__file__).resolve().parents[2]


def ringpool_bin() -> str:
    """The CLI binary: $RINGPOOL_BIN, else the workspace's build (the
    README's test command builds it before the Python tests run)."""
    env = os.environ.get("RINGPOOL_BIN")
    if env:
        return env
    for kind in ("debug", "release"):
        p = ROOT / "target" / kind / "ringpool"
        if p.exists():
            return str(p)
    raise AssertionError("no ringpool binary: build it with `cargo build -p ringpool-cli` (or set RINGPOOL_BIN)")


def test_a_pool_from_the_daemon_reads_into_the_daemons_memory(tmp_path, data_file):
    path, data = data_file
    sock = tmp_path / "pool.sock"
    daemon = subprocess.Popen(
        [ringpool_bin(), "serve", "--pool", "16M", "--segment-size", "4M", "--page", "4k", "--drain", "1",
         "--socket", str(sock)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert daemon.poll() is None, daemon.stderr.read()
            assert time.monotonic() < deadline, "the daemon did not bind its socket"
            time.sleep(0.02)
        with ringpool.Pool.from_broker(sock, leases=2) as pool:
            a = pool.read(path, 12345, 3 << 20)
            assert a.tobytes() == data[12345 : 12345 + (3 << 20)]
            assert pool.contains(a), "the array lies in the daemon's pool, as mapped here"
            many = pool.read_many([(path, 0, 4096), (path, 8 << 20, 65536)])
            assert many[1].tobytes() == data[8 << 20 : (8 << 20) + 65536]
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
        assert not sock.exists()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
