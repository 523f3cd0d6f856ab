"""Fail fast on a broken environment, before any test runs.

Checks that ``pip check`` is clean, that torch is a CPU-or-matching build that imports, that
steerlens and its backends import, and (``--lock FILE``) that every package pinned in the lock
is installed at exactly that version. Exit 1 with one line per problem and the fix.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from importlib import metadata
from pathlib import Path

IMPORTS = (
    *("torch", "transformers", "peft", "safetensors", "sklearn", "gguf", "plotly"),
    *("nnsight", "transformer_lens", "trl", "accelerate", "datasets", "steerlens"),
)


def _canon(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def lock_problems(lock: Path) -> list[str]:
    installed = {_canon(d.metadata["Name"]): d.version for d in metadata.distributions()}
    problems = []
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or "==" not in line:
            continue
        name, want = (s.strip() for s in line.split("==", 1))
        have = installed.get(_canon(name))
        if have is None:
            problems.append(f"{name}: locked at {want} but not installed")
        elif have.split("+", 1)[0] != want.split("+", 1)[0]:
            problems.append(f"{name}: locked at {want} but {have} is installed")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lock", type=Path, help="constraints file whose versions must match")
    args = ap.parse_args()
    problems: list[str] = []
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    if check.returncode != 0:
        problems += [f"pip check: {ln}" for ln in check.stdout.splitlines() if ln.strip()]
    for mod in IMPORTS:
        try:
            importlib.import_module(mod)
        except Exception as exc:  # noqa: BLE001 - any import failure is the report
            problems.append(f"import {mod} failed: {type(exc).__name__}: {exc}")
    if args.lock is not None:
        problems += lock_problems(args.lock)
    if problems:
        fix = "re-run `bash .ci/setup.sh`, or delete .venv and re-run it"
        print(f"broken environment ({fix}):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    import torch
    import transformers

    lock = f", matches {args.lock}" if args.lock else ""
    print(f"environment ok: torch {torch.__version__}, transformers {transformers.__version__}{lock}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
