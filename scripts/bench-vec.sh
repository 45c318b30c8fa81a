#!/usr/bin/env bash
# Vectored against single-block operations with the same blocks in flight:
# `bench io --vec 8 --iodepth 4` against `--vec 1 --iodepth 32`, alternating
# the two, ROUNDS times each, on the ext4 file of the disk and on zram (set
# up through /sys/block/zram0 and reset afterwards, also on failure).
#
#   sudo scripts/bench-vec.sh        # RUNTIME=5 ROUNDS=5 OUT=bench-results/vec
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-bench-results/vec}
RUNTIME=${RUNTIME:-5}
ROUNDS=${ROUNDS:-5}
FILE=${FILE:-/var/tmp/ringpool-bench.dat}
SIZE=${SIZE:-4G}
PAGE=${PAGE:-2m}
ZRAM=/sys/block/zram0
LOCK=/tmp/ringpool-machine-state.lock

[ "$(id -u)" = 0 ] || { echo "run as root: zram is set up through sysfs" >&2; exit 1; }
cargo build --release --quiet
BIN=target/release/ringpool
mkdir -p "$OUT"

if [ ! -e $ZRAM ] && [ -e /sys/class/zram-control/hot_add ]; then cat /sys/class/zram-control/hot_add >/dev/null; fi
[ -e $ZRAM ] || { echo "no zram device (modprobe zram)" >&2; exit 1; }
exec 9>"$LOCK"
flock 9
if [ "$(cat $ZRAM/disksize)" != 0 ]; then
  echo "zram0 is in use (disksize $(cat $ZRAM/disksize)); reset it first" >&2
  exit 1
fi
cleanup() { echo 1 > $ZRAM/reset || true; flock -u 9 || true; echo "zram0 reset" >&2; }
trap cleanup EXIT INT TERM
echo "$SIZE" > $ZRAM/disksize
flock -u 9

for dev in disk zram; do
  if [ $dev = disk ]; then f=$FILE; else f=/dev/zram0; fi
  for rw in randread randwrite; do
    for round in $(seq 1 "$ROUNDS"); do
      for shape in "8 4" "1 32"; do
        set -- $shape
        echo ">> $dev $rw vec=$1 iodepth=$2 round $round" >&2
        "$BIN" bench io --file "$f" --size "$SIZE" --rw $rw --bs 4k --vec "$1" --iodepth "$2" \
          --runtime "$RUNTIME" --page "$PAGE" --reserve --json > "$OUT/$dev-$rw-vec$1-qd$2-r$round.json"
      done
    done
  done
done
python3 scripts/vec-table.py "$OUT" > "$OUT/table.md"
cat "$OUT/table.md"
