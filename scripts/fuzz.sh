#!/usr/bin/env bash
# Fuzzes one target of fuzz/ for SECONDS (default 60) with cargo-fuzz
# (libFuzzer, nightly toolchain). Not in CI.
#   scripts/fuzz.sh alloc 60       # the lease allocator: alloc, free, windows, growth
#   scripts/fuzz.sh handover 60    # the handover message and broker request decoders
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
cargo +nightly fuzz run "${1:-alloc}" -- -max_total_time="${2:-60}" -rss_limit_mb=4096
