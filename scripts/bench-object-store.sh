#!/usr/bin/env bash
# The object_store benchmark of BENCHMARKS.md: RingpoolStore against
# LocalFileSystem (ringpool-object-store's `bench` example) on the ext4
# disk, then on a loop device with direct I/O (an ext4 file system in a
# file on the same disk, set up here and torn down after, also on failure or
# Ctrl-C, under the machine-state lock).
#
#   sudo scripts/bench-object-store.sh     # SIZE=4G ROUNDS=3 OUT=bench-results/object-store
#
# Needs root (drop_caches, losetup, mount). The example is built first:
# nothing else may build or run while it measures.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-bench-results/object-store}
SIZE=${SIZE:-4G}
ROUNDS=${ROUNDS:-3}
DIR=${DIR:-/var/tmp/ringpool-object-store}
IMG=${IMG:-/var/tmp/ringpool-object-store.img}
MNT=/mnt/ringpool-object-store
LOCK=/tmp/ringpool-machine-state.lock

[ "$(id -u)" = 0 ] || { echo "run as root: the page cache is dropped and a loop device set up" >&2; exit 1; }
cargo build --release -q -p ringpool-object-store --example bench
BIN=target/release/examples/bench
mkdir -p "$OUT" "$DIR"

exec 9>"$LOCK"
flock 9
LOOPDEV=""
cleanup() {
  set +e
  mountpoint -q "$MNT" && umount "$MNT"
  [ -n "$LOOPDEV" ] && losetup -d "$LOOPDEV" && echo "$LOOPDEV detached" >&2
  rm -f "$IMG"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo ">> disk" >&2
"$BIN" --dir "$DIR" --size "$SIZE" --rounds "$ROUNDS" --json > "$OUT/disk.json"

echo ">> loop device (direct I/O) with ext4" >&2
used=$(du -sb "$DIR" | cut -f1)
truncate -s $(( used + (1 << 30) )) "$IMG"
mkfs.ext4 -q -F "$IMG"
LOOPDEV=$(losetup --direct-io=on --show -f "$IMG")
mkdir -p "$MNT"
mount "$LOOPDEV" "$MNT"
cp -r "$DIR"/. "$MNT/"
sync
"$BIN" --dir "$MNT" --size "$SIZE" --rounds "$ROUNDS" --json > "$OUT/loop.json"

python3 - "$OUT" <<'PYEOF'
import json, sys
out = sys.argv[1]
for dev in ("disk", "loop"):
    r = json.load(open(f"{out}/{dev}.json"))
    print(f"\n{dev}:")
    for k, v in r.items():
        if k not in ("sides", "runs", "method"):
            print(f"  {k}: {v}")
    for name, s in r.get("sides", {}).items():
        print(f"  {name}: {s}")
PYEOF
