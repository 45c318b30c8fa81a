#!/usr/bin/env bash
# The Python package's tests: builds and installs ringpool-py (with its test
# extras: pytest, safetensors, ml_dtypes) into a virtual environment, then
# runs pytest on ringpool-py/tests. The environment is kept between runs
# (RINGPOOL_VENV, default target/py-venv); pip reinstalls the package each
# time, so the tests always see the current code.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RINGPOOL_VENV:-target/py-venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "./ringpool-py[test]"
cd ringpool-py
"../$VENV/bin/python" -m pytest -q tests "$@"
