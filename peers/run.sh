#!/usr/bin/env bash
# Runs the peers benchmark with /dev/zram0 and 2 MiB hugetlb pages set up,
# and gives both back afterwards (also on failure or Ctrl-C). Machine state
# is changed only under the machine-state lock shared with ringpool's own
# scripts and tests, held until everything is restored.
#
#   sudo peers/run.sh --json > peers.json          # any ringpool-peers arguments
#   ZRAM_FILL=half sudo peers/run.sh --json        # zram pages that really decompress
#
# ZRAM_FILL=disk (default): zram gets a copy of the disk file. That file
#   holds random bytes, which zram stores uncompressed ("huge" pages in
#   mm_stat): reads are then a memcpy, not a decompression.
# ZRAM_FILL=half: each 4 KiB page is 2 KiB of random bytes and 2 KiB of
#   zeros, which lzo/lz4 compress to about half: every read decompresses.
# zram is set up only if its disksize is 0 (else used as it is, and left).
# Hugepages: the pool is raised by the shortfall to 2048 free 2 MiB pages.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "run as root: zram and hugepages are set up through sysfs" >&2; exit 1; }
DISK=${DISK:-/var/tmp/ringpool-bench.dat}
ZRAM=/sys/block/zram0
ZRAM_FILL=${ZRAM_FILL:-disk}
HP=/sys/kernel/mm/hugepages/hugepages-2048kB
NEED_PAGES=2048
LOCK=/tmp/ringpool-machine-state.lock

# Build first, without holding any machine state.
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-peers/target} cargo build --release --manifest-path peers/Cargo.toml

exec 9>"$LOCK"
flock 9
PREV_HP=$(cat $HP/nr_hugepages)
ZRAM_UP=0
cleanup() {
  set +e
  echo "$PREV_HP" > $HP/nr_hugepages
  echo "nr_hugepages back to $(cat $HP/nr_hugepages) (was $PREV_HP)" >&2
  if [ "$ZRAM_UP" = 1 ]; then
    echo 1 > $ZRAM/reset && echo "zram0 reset" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ ! -e $ZRAM ] && [ -e /sys/class/zram-control/hot_add ]; then cat /sys/class/zram-control/hot_add >/dev/null; fi
if [ -e $ZRAM ] && [ "$(cat $ZRAM/disksize)" = 0 ]; then
  ZRAM_UP=1
  echo 4G > $ZRAM/disksize
  case $ZRAM_FILL in
    disk) dd if="$DISK" of=/dev/zram0 bs=1M oflag=direct status=none ;;
    half)
      python3 -c '
import os, sys
out = sys.stdout.buffer
z = bytes(2048)
for _ in range(4096):  # 4096 x 1 MiB
    out.write(b"".join(os.urandom(2048) + z for _ in range(256)))
' | dd of=/dev/zram0 bs=1M iflag=fullblock oflag=direct status=none ;;
    *) echo "ZRAM_FILL must be disk or half" >&2; exit 2 ;;
  esac
  echo "zram0 filled ($ZRAM_FILL); mm_stat: $(cat $ZRAM/mm_stat)" >&2
elif [ -e $ZRAM ]; then
  echo "zram0 already set up (disksize $(cat $ZRAM/disksize)): used as it is" >&2
fi

FREE=$(( $(cat $HP/free_hugepages) - $(cat $HP/resv_hugepages) ))
if [ "$FREE" -lt "$NEED_PAGES" ]; then
  echo $(( PREV_HP + NEED_PAGES - FREE )) > $HP/nr_hugepages
fi
echo "hugepages: nr $(cat $HP/nr_hugepages), free $(cat $HP/free_hugepages)" >&2

CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-peers/target} cargo run --release --manifest-path peers/Cargo.toml -- "$@"
