#!/usr/bin/env bash
# Creates .venv (once) with the CPU build of torch, then installs this project from the checkout as a regular
# (non-editable) package, as a user would. Re-running refreshes the project install only.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi
stamp="$VENV/.deps-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    # torch first, pinned: an unpinned torch (or one pulled in by a dependency) would be a multi-GB CUDA build.
    "$VENV/bin/python" -m pip install -q "torch==2.13.0"
    "$VENV/bin/python" -m pip install -q ".[dev]"
    touch "$stamp"
fi
"$VENV/bin/python" -m pip install -q --no-deps --force-reinstall .
