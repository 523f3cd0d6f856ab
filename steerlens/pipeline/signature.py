"""The activation signature as the detection bank measured it (DESIGN.md "Detection power"):
the ``proj_fixed`` detector of :mod:`steerlens.pipeline.detectors` run on a run's own students.

For the student θ and the run's clean controls c ∈ C (the base control and the benign
replicates: students of clean teachers, each trained with its own data sample and seed), read at
their last checkpoint:

    vˢ = mean_p h^ℓ*(θ, p) − mean_p h^ℓ*(θ₀, p)      (probe prompts; θ₀ the base)
    proj(θ) = vˢ · vᵀ / ‖vᵀ‖                         (vᵀ the teacher vector at ℓ*)
    t = (proj(θ) − mean_C proj(c)) / (s_C · √(1 + 1/k)),  df = k − 1,  p = P(T_df ≥ t)

the prediction t-test of :func:`steerlens.stats.prediction_t_test` (k = |C| ≥ 2). ℓ* is the
carry test's clean peak (:func:`~steerlens.pipeline.stages.carry_peak`), fixed from the teacher
side before any student is read. Its null is training noise (the controls' spread), which the
per-prompt bootstrap of the tracked EAS leaves out; the bank chose this detector on its rule
half (``benchmarks/results/detection.md``), so the verdict can quote its measured power.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from steerlens.checkpoints import CheckpointSeries
from steerlens.models import load_model
from steerlens.pipeline.context import RunContext
from steerlens.pipeline.detectors import read_student, trait_probe
from steerlens.pipeline.stage import json_load, json_save, stage
from steerlens.results import Record
from steerlens.stats import prediction_t_test

__all__ = ["DETECTOR", "SignatureTest", "signature_stage", "signature_test"]

DETECTOR = "proj_fixed"
"""The bank's detector this test is (its row in ``detection_power.json``)."""


@dataclass(frozen=True)
class SignatureTest(Record):
    """The model-level activation test (module doc): proj at ℓ* of the student against the
    clean controls' spread. ``p`` is NaN when fewer than 2 controls vary (no test)."""

    layer: int
    student: float
    controls: dict[str, float]
    eas_student: float
    eas_controls: dict[str, float]
    estimate: float = float("nan")
    t: float = float("nan")
    df: float = float("nan")
    p: float = float("nan")
    detector: str = DETECTOR
    formula: str = "t = (proj(θ) − mean_C proj(c)) / (s_C·√(1 + 1/k)), df = k − 1, one-sided"

    @property
    def tested(self) -> bool:
        return bool(np.isfinite(self.p))

    def significant(self, alpha: float) -> bool:
        return self.tested and self.p < alpha

    def summary(self) -> str:
        refs = ", ".join(f"{k} {v:+.2f}" for k, v in self.controls.items())
        if not self.tested:
            return (
                f"proj on v̂ at layer {self.layer}: student {self.student:+.2f}; controls {refs} "
                "(fewer than 2 varying controls: no model-level test)"
            )
        return (
            f"proj on v̂ at layer {self.layer}: student {self.student:+.2f} vs controls {refs} "
            f"(excess {self.estimate:+.2f}, t = {self.t:.2f}, df = {self.df:g}, one-sided "
            f"p = {self.p:.2g})"
        )


def signature_test(
    layer: int,
    proj: Mapping[str, float],
    eas: Mapping[str, float],
    student: str = "main",
) -> SignatureTest:
    """The test of the module doc from each series' proj and EAS at ``layer``."""
    refs = {k: float(v) for k, v in proj.items() if k != student}
    out = SignatureTest(
        layer,
        float(proj[student]),
        refs,
        float(eas[student]),
        {k: float(v) for k, v in eas.items() if k != student},
    )
    vals = list(refs.values())
    if len(vals) < 2 or float(np.std(vals)) == 0.0:
        return out
    t = prediction_t_test(out.student, vals)
    return dataclasses.replace(
        out,
        estimate=float(t["estimate"]),
        t=float(t["t"]),
        df=float(t["df"]),
        p=float(t["p"]),
    )


def signature_stage(r: RunContext, vec: Any, dirs: Mapping[str, Path], layer: int) -> Any:
    """Read the last checkpoint of every series in ``dirs`` (``main`` is the student) at
    ``layer`` and test it (cached as ``signature.json``; returns its JSON)."""

    def compute() -> dict[str, Any]:
        probe = trait_probe(r.model, r.trait.name, r.trait, vec)
        proj, eas = {}, {}
        for name, d in dirs.items():
            last = list(CheckpointSeries.discover(d))[-1]
            student = load_model(last.path, base=r.model)
            (rd,) = read_student(r.model, student, [probe])
            proj[name], eas[name] = rd.at("proj", layer), rd.at("eas", layer)
        return signature_test(layer, proj, eas).to_json()

    key = f"{r.key()}-{layer}-{','.join(sorted(dirs))}"
    return stage(r.out / "signature.json", key, compute, json_save, json_load, r.log)
