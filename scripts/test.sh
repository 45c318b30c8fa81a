#!/usr/bin/env bash
# Every test: the Rust workspace (cargo test --workspace) and the Python
# package (scripts/test-python.sh: pytest in a virtual environment).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace
scripts/test-python.sh
