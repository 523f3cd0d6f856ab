"""The demo's old home, kept so ``from steerlens.experiment import DemoConfig, run_demo`` works.

Deprecated: use :mod:`steerlens.experiments` (``OwlConfig``, ``get("owl")``) and
:func:`steerlens.cli.run_experiment`. This module sits on top of the command line in the
layer order (it runs an experiment *and* renders its report).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from steerlens.cli.handlers import run_experiment
from steerlens.experiments.owl import DemoConfig, OwlConfig
from steerlens.experiments.result import ExperimentResult
from steerlens.experiments.verdict import verdict
from steerlens.pipeline.stage import checkpoint_behavior

__all__ = ["DemoConfig", "OwlConfig", "checkpoint_behavior", "run_demo", "verdict"]


def run_demo(
    cfg: OwlConfig,
    out_dir: str | Path,
    *,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> ExperimentResult:
    """Run the owl experiment; write ``results.json``, ``report.html`` and the vectors to
    ``out_dir``; return the results (a mapping of the results JSON)."""
    return run_experiment("owl", cfg, out_dir, progress=progress, log=log)
