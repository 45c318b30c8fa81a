#!/usr/bin/env bash
# Fuzzes the lease allocator (alloc, free, windows, growth) for SECONDS
# (default 60) with cargo-fuzz (libFuzzer, nightly toolchain). Not in CI.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
cargo +nightly fuzz run alloc -- -max_total_time="${SECONDS_TO_RUN:-${1:-60}}" -rss_limit_mb=4096
