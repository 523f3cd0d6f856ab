#!/usr/bin/env bash
# Set up steerlens on a fresh machine: a virtual environment (default .venv; VENV=dir for
# another) with the CPU build of torch pinned (a plain `pip install torch` would pull a
# multi-GB CUDA build), then the package with its test tools, every version exact from
# .ci/constraints.txt (LOCK=none: the newest versions pyproject.toml allows, as .ci/latest.sh
# does). Idempotent: re-running only installs what is missing. Ends by checking the
# environment (.ci/check_env.py), so a broken install fails here, before any test runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
LOCK=${LOCK:-.ci/constraints.txt}
# Fashion-MNIST for `steerlens experiment mlp-aux --dataset fashion-mnist` (optional: the
# default data set, scikit-learn's bundled digits, needs nothing); Debian's package, as root
if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1 && command -v apt-get >/dev/null \
  && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || echo "note: apt-get could not install dataset-fashion-mnist (mlp-aux uses digits)" >&2
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
if [ "$LOCK" = none ]; then
  # newest allowed: torch stays the local CPU wheel (a constraint, so nothing swaps it for CUDA)
  echo "torch==2.13.0" > "$VENV/torch-only.txt"
  "$VENV/bin/python" -m pip install -q --upgrade --upgrade-strategy eager \
    -c "$VENV/torch-only.txt" -e ".[dev,backends,sign,trl]"
  "$VENV/bin/python" .ci/check_env.py
else
  "$VENV/bin/python" -m pip install -q -c "$LOCK" -e ".[dev,backends,sign,trl]"
  "$VENV/bin/python" .ci/check_env.py --lock "$LOCK"
fi
