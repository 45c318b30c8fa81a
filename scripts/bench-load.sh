#!/usr/bin/env bash
# The Python loader benchmark of BENCHMARKS.md: `python -m ringpool.bench
# load` on the ext4 disk, then on a loop device with direct I/O (an ext4
# file system in a file on the same disk, set up here and torn down after,
# also on failure or Ctrl-C, under the machine-state lock).
#
#   sudo scripts/bench-load.sh     # SIZE=4G ROUNDS=3 OUT=bench-results/load PAGE=2m
#
# Needs root (drop_caches, losetup, mount), fio, and the package installed
# in the test environment (scripts/test-python.sh makes it); the peers
# (runai-model-streamer, fastsafetensors) are tried with pip and get a row
# saying why where they cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-bench-results/load}
SIZE=${SIZE:-4G}
ROUNDS=${ROUNDS:-3}
DIR=${DIR:-/var/tmp/ringpool-load}
IMG=${IMG:-/var/tmp/ringpool-load.img}
MNT=/mnt/ringpool-load
VENV=${RINGPOOL_VENV:-target/py-venv}
PAGE=${PAGE:-2m}
HP=/sys/kernel/mm/hugepages/hugepages-2048kB
LOCK=/tmp/ringpool-machine-state.lock

[ "$(id -u)" = 0 ] || { echo "run as root: the page cache is dropped and a loop device set up" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || scripts/test-python.sh -q -x -k sizes >/dev/null
PY="$PWD/$VENV/bin/python"
"$PY" -m pip install --quiet --disable-pip-version-check safetensors ml_dtypes matplotlib || true
for peer in runai-model-streamer fastsafetensors; do
  "$PY" -m pip install --quiet --disable-pip-version-check "$peer" >/dev/null 2>&1 || echo "note: pip could not install $peer" >&2
done
mkdir -p "$OUT" "$DIR"

exec 9>"$LOCK"
flock 9
PREV_HP=$(cat $HP/nr_hugepages)
LOOPDEV=""
cleanup() {
  set +e
  mountpoint -q "$MNT" && umount "$MNT"
  [ -n "$LOOPDEV" ] && losetup -d "$LOOPDEV" && echo "$LOOPDEV detached" >&2
  rm -f "$IMG"
  echo "$PREV_HP" > $HP/nr_hugepages
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 2 MiB pages for ringpool's pool (the checkpoint's size and some room).
if [ "$PAGE" = 2m ]; then
  need=$(( ($("$PY" -c "import ringpool; print(ringpool.parse_size('$SIZE'))") / 1073741824 + 2) * 512 ))
  echo $(( PREV_HP + need )) > $HP/nr_hugepages
  export RINGPOOL_BENCH_PAGE=2m
fi

echo ">> disk" >&2
"$PY" -m ringpool.bench load --dir "$DIR" --size "$SIZE" --rounds "$ROUNDS" --json > "$OUT/disk.json"

echo ">> loop device (direct I/O) with ext4" >&2
ckpt=$(ls "$DIR"/ringpool-bench-*.safetensors | head -1)
bytes=$(stat -c %s "$ckpt")
truncate -s $(( bytes + (1 << 30) )) "$IMG"
mkfs.ext4 -q -F "$IMG"
LOOPDEV=$(losetup --direct-io=on --show -f "$IMG")
mkdir -p "$MNT"
mount "$LOOPDEV" "$MNT"
cp "$ckpt" "$MNT/"
sync
"$PY" -m ringpool.bench load --dir "$MNT" --size "$SIZE" --rounds "$ROUNDS" --json > "$OUT/loop.json"

"$PY" - "$OUT" <<'PYEOF'
import json, sys
out = sys.argv[1]
for dev in ("disk", "loop"):
    r = json.load(open(f"{out}/{dev}.json"))
    print(f"\n{dev}: {r['size_bytes'] / 1e9:.2f} GB, {r['rounds']} rounds")
    for name, f in list(r["sides"].items()) + [("fio seq 1M QD32", r["device_limit"])]:
        if "skipped" in f:
            print(f"  {name:22} skipped: {f['skipped']}")
        else:
            print(f"  {name:22} {f['gbps']:.3f} GB/s  {f['cpu_s_per_gb']:.3f} CPU s/GB  {f.get('peak_rss_mb', 0):.0f} MB")
    print("  ratios:", {k: r[k] for k in ("ratio_to_device_limit", "ratio_vs_safetensors", "ratio_vs_best_peer", "cpu_ratio_vs_safetensors")})
PYEOF
"$PY" scripts/load-chart.py "$OUT" || echo "note: no chart (matplotlib missing)" >&2
