#!/bin/bash
# What keeping clients apart costs an attachment (`ringpool serve --isolate`,
# BENCHMARKS.md section 17). Run as root (clients switch users).
#
#   scripts/isolation-cost.sh SEGMENT PAGE [ROUNDS]     e.g. 64M 4k 8, 64M 2m 8
#
# For each mode (no --isolate; --isolate with every attachment by another
# user than the one before; --isolate with one user), a daemon with a
# two-segment pool serves ROUNDS probe clients (`ringpool bench
# service-probe`: attach with one lease segment, then enable the ring) one
# after the other; the segment they get is the same one each time. Prints
# the attachment's median and max (µs, the probe's own clock) and, from
# the daemon's log, the time it took to give the segment fresh memory.
# Mode isolated-beside: a client that needs fresh memory (users
# alternating on segment 0) and, 20 ms later, one of the user whose memory
# segment 1 already has: the second one's attachment, while the first
# one's fresh memory is made.
# With PAGE 2m it reserves 2 MiB huge pages for two pools' worth and gives
# them back at exit.
set -euo pipefail
SEG=${1:?segment size, e.g. 64M}
PAGE=${2:?page, e.g. 4k or 2m}
ROUNDS=${3:-8}
B=${RINGPOOL:-$(dirname "$0")/../target/release/ringpool}
[ -x "$B" ] || { echo "build first: cargo build --release" >&2; exit 1; }
D=$(mktemp -d /var/tmp/ringpool-isolation.XXXX)
chmod 777 "$D"
HP=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
exec 9>/tmp/ringpool-machine-state.lock
flock 9
HP_BEFORE=$(cat $HP)
DAEMON=
cleanup() {
  [ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null || true
  echo "$HP_BEFORE" > $HP
  rm -rf "$D"
}
trap cleanup EXIT INT TERM
MIB=${SEG%M}
if [ "$PAGE" = 2m ]; then
  echo $(( HP_BEFORE + 4 * MIB / 2 )) > $HP
fi
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)] " (max " a[NR] ")"}'; }
for mode in shared isolated-two-users isolated-one-user isolated-beside; do
  flags=()
  [ "$mode" != shared ] && flags=(--isolate)
  RINGPOOL_LOG=ringpool=debug "$B" serve --pool $((2 * MIB))M --segment-size "$SEG" --page "$PAGE" \
    --socket "$D/s" --mode 666 --allow-uid 65534,65533 --nice 0 "${flags[@]}" 2>"$D/log" &
  DAEMON=$!
  for _ in $(seq 600); do [ -S "$D/s" ] && break; sleep 0.1; done
  : > "$D/attach"
  probe() {  # user, fill, hold ms
    setpriv --reuid "$1" --regid "$1" --clear-groups "$B" bench service-probe --socket "$D/s" \
      --file "$D/probe-$1-$2" --fill "$2" --hold-ms "$3" | awk '/^A /{print $2}'
  }
  if [ "$mode" = isolated-beside ]; then
    # Both segments get memory of 65534 first.
    probe 65534 1 300 >/dev/null &
    first=$!
    probe 65534 2 300 >/dev/null
    wait $first
    for k in $(seq "$ROUNDS"); do
      probe $((65533 + (k + 1) % 2)) 3 0 >> "$D/first" &
      first=$!
      sleep 0.02
      probe 65534 4 0 >> "$D/attach"
      wait $first
    done
    kill "$DAEMON"; wait "$DAEMON" 2>/dev/null || true; DAEMON=
    rm -f "$D/s"
    echo "$SEG $PAGE $mode: the second client's attach µs median $(median < "$D/attach"); the first's $(median < "$D/first")"
    continue
  fi
  for k in $(seq "$ROUNDS"); do
    u=65534
    [ "$mode" = isolated-two-users ] && u=$((65533 + k % 2))
    setpriv --reuid $u --regid $u --clear-groups "$B" bench service-probe --socket "$D/s" \
      --file "$D/probe-$u" --fill 1 | awk '/^A /{print $2}' >> "$D/attach"
  done
  kill "$DAEMON"; wait "$DAEMON" 2>/dev/null || true; DAEMON=
  rm -f "$D/s"
  fresh=$(sed 's/\x1b\[[0-9;]*m//g' "$D/log" | grep "fresh memory" | grep -o 'took=[0-9.]*[mµn]*s' | sed 's/took=//' | tr '\n' ' ' || true)
  echo "$SEG $PAGE $mode: attach µs median $(median < "$D/attach"); fresh memory: ${fresh:-none}"
done
