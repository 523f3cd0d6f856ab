#!/usr/bin/env bash
# Set up steerlens on a fresh machine: a virtual environment in .venv with the CPU build of
# torch pinned (a plain `pip install torch` would pull a multi-GB CUDA build), then the package
# with its test tools. Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev,backends]"
