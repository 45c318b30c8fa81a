#!/usr/bin/env bash
# The I/O comparison of BENCHMARKS.md: `ringpool bench io --vs-fio` on the
# virtio disk (a file on ext4) and on a zram block device that this script
# sets up through /sys/block/zram0 and resets afterwards (also on failure).
#
#   sudo scripts/bench-io.sh            # RUNTIME=5 ROUNDS=3 OUT=bench-results/io
#
# Needs root (zram), fio (apt-get install fio) and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-bench-results/io}
RUNTIME=${RUNTIME:-5}
ROUNDS=${ROUNDS:-3}
FILE=${FILE:-/var/tmp/ringpool-bench.dat}
SIZE=${SIZE:-4G}
# 2 MiB hugetlb pages for ringpool's pool and fio's buffers alike (fio's
# --iomem=mmaphuge), reserved per run and given back.
PAGE=${PAGE:-2m}
ZRAM=/sys/block/zram0
LOCK=/tmp/ringpool-machine-state.lock

[ "$(id -u)" = 0 ] || { echo "run as root: zram is set up through sysfs" >&2; exit 1; }
command -v fio >/dev/null || { echo "fio is missing: apt-get install fio" >&2; exit 1; }
cargo build --release --quiet
BIN=target/release/ringpool
mkdir -p "$OUT"

# zram0: take it only if nobody uses it, under the machine-state lock.
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

run() { # device-label file rw bs iodepth workers
  local label=$1 file=$2 rw=$3 bs=$4 qd=$5 w=$6
  local out="$OUT/$label-$rw-$bs-qd$qd-w$w.json"
  echo ">> $label $rw bs=$bs iodepth=$qd workers=$w" >&2
  "$BIN" bench io --file "$file" --size "$SIZE" --rw "$rw" --bs "$bs" --iodepth "$qd" --workers "$w" \
    --runtime "$RUNTIME" --vs-fio --rounds "$ROUNDS" --page "$PAGE" --reserve --json > "$out"
}

for dev in disk zram; do
  if [ $dev = disk ]; then f=$FILE; else f=/dev/zram0; fi
  for qd in 1 8 32 128; do run $dev "$f" randread 4k $qd 1; done
  run $dev "$f" randread 4k 32 2
  run $dev "$f" randwrite 4k 32 1
  run $dev "$f" randwrite 4k 32 2
  run $dev "$f" read 128k 32 1
  run $dev "$f" read 128k 32 2
done

"$BIN" bench io-chart --out "$OUT/randread-iops-vs-iodepth.svg" --title "randread 4 KiB, 1 worker: IOPS against iodepth" \
  "$OUT"/disk-randread-4k-qd*-w1.json "$OUT"/zram-randread-4k-qd*-w1.json
python3 scripts/io-table.py "$OUT"/*.json > "$OUT/table.md"
cat "$OUT/table.md"
