#!/usr/bin/env bash
# A/B of two builds of the ringpool command on the same machine, sides
# alternating, ROUNDS rounds: the no-regression check of a refactoring.
#   sudo scripts/ab-regression.sh OLD_BIN NEW_BIN     # OUT=bench-results/consolidation ROUNDS=5
# Runs bench register (4 GiB, THP), bench churn, bench io (zram filled,
# depth 1 and 32; loop device with direct I/O, depth 1 and 32) and bench
# pool-latency (loop device) with each binary; writes one JSON per run and
# a summary table (scripts/ab-table.py). zram and the loop device are set
# up under the machine-state lock and torn down afterwards, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1; NEW=$2
OUT=${OUT:-bench-results/consolidation}
ROUNDS=${ROUNDS:-5}
RUNTIME=${RUNTIME:-3}
FILE=${FILE:-/var/tmp/ringpool-bench.dat}
LOOPFILE=${LOOPFILE:-/var/tmp/ringpool-loop.img}
ZRAM=/sys/block/zram0
mkdir -p "$OUT"
LOOPDEV=""; ZRAM_UP=0
cleanup() {
  set +e
  [ -n "$LOOPDEV" ] && losetup -d "$LOOPDEV"
  [ "$ZRAM_UP" = 1 ] && echo 1 > $ZRAM/reset
  rm -f "$LOOPFILE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"$NEW" bench io --file "$FILE" --size 4G --rw read --iodepth 32 --runtime 0.2 >/dev/null
exec 9>/tmp/ringpool-machine-state.lock
flock 9
if [ ! -e $ZRAM ] && [ -e /sys/class/zram-control/hot_add ]; then cat /sys/class/zram-control/hot_add >/dev/null; fi
echo 4G > $ZRAM/disksize; ZRAM_UP=1
dd if="$FILE" of=/dev/zram0 bs=1M oflag=direct status=none
cp --sparse=never "$FILE" "$LOOPFILE"
LOOPDEV=$(losetup --find --show --direct-io=on "$LOOPFILE")
for r in $(seq 1 "$ROUNDS"); do
  for side in old new; do
    [ $(( r % 2 )) = 0 ] && side=$([ $side = old ] && echo new || echo old)
    BIN=$([ $side = old ] && echo "$OLD" || echo "$NEW")
    "$BIN" bench register --sizes 4G --page thp --clones 20 --repeat 3 --json > "$OUT/register-$side-$r.json"
    "$BIN" bench churn --pool 1G --page thp --rings 100 --json > "$OUT/churn-$side-$r.json"
    for dev in zram loop; do
      F=$([ $dev = zram ] && echo /dev/zram0 || echo "$LOOPDEV")
      for qd in 1 32; do
        "$BIN" bench io --file "$F" --size 4G --rw randread --iodepth $qd --runtime "$RUNTIME" --page thp --json \
          > "$OUT/io-$dev-qd$qd-$side-$r.json"
      done
    done
    "$BIN" bench pool-latency --file "$LOOPDEV" --ops 20000 --rounds 1 --json > "$OUT/pool-latency-loop-$side-$r.json"
  done
done
python3 scripts/ab-table.py "$OUT" | tee "$OUT/summary.txt"
