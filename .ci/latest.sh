#!/usr/bin/env bash
# Test against the newest versions pyproject.toml allows (not part of .ci/run's time budget):
# a separate environment, .venv-latest, installed without the lock, then the full suite.
#   bash .ci/latest.sh               # install the newest allowed versions and run every test
#   bash .ci/latest.sh --write-lock  # the same, then, if every test passed, write those exact
#                                    # versions to .ci/constraints.txt (commit it with the run's
#                                    # versions in the message)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-latest LOCK=none bash .ci/setup.sh
.venv-latest/bin/python -m pip list --format=freeze 2>/dev/null \
  | grep -E '^(torch|transformers|peft|nnsight|transformer-lens|tokenizers|gguf|numpy|scikit-learn)==' \
  | tr '\n' ' '; echo
.venv-latest/bin/python -m pytest -q -p no:cacheprovider tests
if [ "${1:-}" = "--write-lock" ]; then
  {
    echo "# Exact versions CI and .ci/setup.sh install (pip constraints). The full test suite passed on"
    echo "# these. Refresh: bash .ci/latest.sh --write-lock (see README, Development)."
    .venv-latest/bin/python -m pip freeze --exclude-editable 2>/dev/null \
      | grep -v -i '^steerlens' | sed 's/^torch==.*/torch==2.13.0/'
  } > .ci/constraints.txt
  echo "wrote .ci/constraints.txt"
fi
