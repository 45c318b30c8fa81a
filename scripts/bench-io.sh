#!/usr/bin/env bash
# The I/O comparison of BENCHMARKS.md: `ringpool bench io --vs-fio` (fio's
# io_uring, libaio and pvsync2 engines, alternating with ringpool) on three
# devices. Both sides: CPU over the I/O window (io-wq included), the same
# submit batch (1) and buffers (random bytes, filled once):
#   disk  an ext4 file on the virtio disk
#   zram  /dev/zram0, set up through sysfs, filled with incompressible data
#   loop  a loop device with direct I/O over an ext4 file
# The zram and loop devices are set up under the machine-state lock and torn
# down afterwards, also on failure or Ctrl-C.
#
#   sudo scripts/bench-io.sh      # RUNTIME=3 ROUNDS=5 OUT=bench-results/io DEVICES="disk zram loop"
#
# Needs root, fio (apt-get install fio) and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-bench-results/io}
RUNTIME=${RUNTIME:-3}
ROUNDS=${ROUNDS:-5}
FILE=${FILE:-/var/tmp/ringpool-bench.dat}
LOOPFILE=${LOOPFILE:-/var/tmp/ringpool-loop.img}
SIZE=${SIZE:-4G}
DEVICES=${DEVICES:-"disk zram loop"}
# 2 MiB hugetlb pages for ringpool's pool and fio's buffers alike (fio's
# --iomem=mmaphuge), reserved per run and given back.
PAGE=${PAGE:-2m}
ZRAM=/sys/block/zram0
LOCK=/tmp/ringpool-machine-state.lock

[ "$(id -u)" = 0 ] || { echo "run as root: zram and loop devices are set up by this script" >&2; exit 1; }
command -v fio >/dev/null || { echo "fio is missing: apt-get install fio" >&2; exit 1; }
cargo build --release --quiet
BIN=target/release/ringpool
mkdir -p "$OUT"

LOOPDEV=""
ZRAM_UP=0
cleanup() {
  set +e
  [ -n "$LOOPDEV" ] && losetup -d "$LOOPDEV" && echo "$LOOPDEV detached" >&2
  [ "$ZRAM_UP" = 1 ] && echo 1 > $ZRAM/reset && echo "zram0 reset" >&2
  rm -f "$LOOPFILE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The disk file, laid out with real (incompressible) data.
"$BIN" bench io --file "$FILE" --size "$SIZE" --rw read --iodepth 32 --runtime 0.2 >/dev/null

exec 9>"$LOCK"
flock 9
if [[ " $DEVICES " == *" zram "* ]]; then
  if [ ! -e $ZRAM ] && [ -e /sys/class/zram-control/hot_add ]; then cat /sys/class/zram-control/hot_add >/dev/null; fi
  [ -e $ZRAM ] || { echo "no zram device (modprobe zram)" >&2; exit 1; }
  [ "$(cat $ZRAM/disksize)" = 0 ] || { echo "zram0 is in use (disksize $(cat $ZRAM/disksize)); reset it first" >&2; exit 1; }
  echo "$SIZE" > $ZRAM/disksize
  ZRAM_UP=1
  # Real data, so that reads decompress pages instead of finding empty slots.
  dd if="$FILE" of=/dev/zram0 bs=1M oflag=direct status=none
fi
if [[ " $DEVICES " == *" loop "* ]]; then
  cp --sparse=never "$FILE" "$LOOPFILE"
  LOOPDEV=$(losetup --direct-io=on --show -f "$LOOPFILE")
  echo "loop device $LOOPDEV over $LOOPFILE (direct I/O)" >&2
fi
flock -u 9

run() { # device-label file rw bs iodepth workers [extra args]
  local label=$1 file=$2 rw=$3 bs=$4 qd=$5 w=$6
  shift 6
  local out="$OUT/$label-$rw-$bs-qd$qd-w$w.json"
  echo ">> $label $rw bs=$bs iodepth=$qd workers=$w $*" >&2
  "$BIN" bench io --file "$file" --size "$SIZE" --rw "$rw" --bs "$bs" --iodepth "$qd" --workers "$w" \
    --runtime "$RUNTIME" --vs-fio --rounds "$ROUNDS" --page "$PAGE" --reserve --json "$@" > "$out"
}

for dev in $DEVICES; do
  case $dev in
    disk) f=$FILE ;;
    zram) f=/dev/zram0 ;;
    loop) f=$LOOPDEV ;;
  esac
  for w in 1 2; do
    # At depth 1 the pool's blocking API (IoPool::run from the workers)
    # runs in every round too (--compare-api).
    run $dev "$f" randread 4k 1 $w --compare-api
    for qd in 8 32 128; do run $dev "$f" randread 4k $qd $w; done
    run $dev "$f" randwrite 4k 1 $w --compare-api
    run $dev "$f" randwrite 4k 32 $w
    run $dev "$f" read 128k 32 $w
  done
  "$BIN" bench io-chart --out "$OUT/$dev-randread-iops-vs-iodepth.svg" \
    --title "$dev: randread 4 KiB, 1 worker, IOPS against iodepth" "$OUT"/$dev-randread-4k-qd*-w1.json
done
python3 scripts/io-table.py "$OUT"/*-w[12].json > "$OUT/table.md"
cat "$OUT/table.md"

# One caller waiting on each read (IoPool::run on its thread's ring, and
# tokio) against the best it could do on its own thread; and 10,000
# short-lived threads' first reads. SKIP_EXTRAS=1 to leave them out.
if [ "${SKIP_EXTRAS:-0}" != 1 ]; then
  for dev in $DEVICES; do
    case $dev in
      disk) f=$FILE ;;
      zram) f=/dev/zram0 ;;
      loop) f=$LOOPDEV ;;
    esac
    echo ">> $dev pool-latency" >&2
    "$BIN" bench pool-latency --file "$f" --rounds 5 --ops 100000 --json > "$OUT/$dev-pool-latency.json"
    echo ">> $dev thread-churn" >&2
    "$BIN" bench thread-churn --threads 10000 --pool 4G --page "$PAGE" --reserve --file "$f" --json \
      > "$OUT/$dev-thread-churn.json"
  done
fi
