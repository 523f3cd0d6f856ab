"""The README's code runs as written (issue 28: "track your own training run")."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _block(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    part = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    m = re.search(r"```python\n(.*?)```", part, re.S)
    assert m, f"no python block under '{heading}'"
    return m.group(1)


@pytest.mark.integration
def test_track_your_own_training_run_snippet_runs(tmp_path: Path) -> None:
    """The SFTTrainer + SteerlensCallback snippet on the embedded model: it trains, logs the
    steerlens metrics and writes a track with the two saved checkpoints."""
    code = _block("Track your own training run")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    track = json.loads((tmp_path / "run" / "steerlens-track.json").read_text())
    steps = track["series"]["main"]["steps"]
    assert steps[-2:] == [2, 4]
    assert "EAS" in out.stdout or "eas" in out.stdout.lower()
