"""The activation signature as the detection bank measured it (DESIGN.md "Detection power"):
the bank's best activation detector (:mod:`steerlens.pipeline.detectors`), run on a run's own
students.

The student θ and the run's clean controls c ∈ C (the base control and the benign replicates:
students of clean teachers, each trained with its own data sample and seed) are read at their
last checkpoint (:func:`~steerlens.pipeline.detectors.read_student`). The detector is the one
the committed bank chose among the activation detectors on its rule half
(:func:`activation_rule`; ``proj_fixed`` when no bank is committed), with C as its reference
set. For ``proj_fixed``:

    vˢ = mean_p h^ℓ*(θ, p) − mean_p h^ℓ*(θ₀, p)      (probe prompts; θ₀ the base)
    proj(θ) = vˢ · vᵀ / ‖vᵀ‖                         (vᵀ the teacher vector at ℓ*)
    t = (proj(θ) − mean_C proj(c)) / (s_C · √(1 + 1/k)),  df = k − 1,  p = P(T_df ≥ t)

the prediction t-test of :func:`steerlens.measures.stats.prediction_t_test` (k = |C| ≥ 2). ℓ* is the
carry test's clean peak (:func:`~steerlens.pipeline.stages.carry_peak`), fixed from the teacher
side before any student is read. Its null is training noise (the controls' spread), which the
per-prompt bootstrap of the tracked EAS leaves out, and its held-out FPR/TPR are measured, so
the verdict can quote them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from steerlens.checkpoints import CheckpointSeries
from steerlens.core.common import read_json
from steerlens.core.results import Record
from steerlens.loading.models import load_model
from steerlens.pipeline.context import RunContext
from steerlens.pipeline.detectors import DETECTORS, Reading, read_student, trait_probe
from steerlens.pipeline.power import POWER_FILE, DetectionResult, rule_half_rank
from steerlens.pipeline.stage import json_load, json_save, stage

__all__ = [
    "ACTIVATION_DETECTORS",
    "SignatureTest",
    "activation_rule",
    "signature_readings",
    "signature_test",
]

ACTIVATION_DETECTORS = ("eas_fixed", "eas_max", "proj_fixed", "unembed")
"""The bank's detectors that read activations (or logits) of the student alone, no behavior."""


def activation_rule(loss: str, path: Path = POWER_FILE) -> str:
    """The activation detector the committed bank chose on its rule half for ``loss``: among
    those whose α-level FPR there was ≤ α, the largest rule-half TPR at p < α (then AUC), as
    :func:`steerlens.pipeline.power.classify` chooses; ``proj_fixed`` without a bank."""
    if not path.is_file():
        return "proj_fixed"
    res = DetectionResult.from_json(read_json(path))
    rows = [r for r in res.rows if r.loss == loss and r.detector in ACTIVATION_DETECTORS]
    if not rows:
        return "proj_fixed"
    # ties: the earlier detector, as classify() breaks them
    return str(max(rows, key=lambda r: rule_half_rank(r, res.level)).detector)


@dataclass(frozen=True)
class SignatureTest(Record):
    """The model-level activation test (module doc): ``detector``'s score and p for the
    student against the clean controls; proj and EAS at ℓ* of every series for display.
    ``tested`` is False with fewer than 2 controls (no reference spread: no decision)."""

    detector: str
    layer: int
    score: float
    p: float
    controls: list[str]
    proj: dict[str, float] = field(default_factory=dict)
    eas: dict[str, float] = field(default_factory=dict)

    @property
    def tested(self) -> bool:
        return len(self.controls) >= 2 and bool(np.isfinite(self.score))

    def significant(self, alpha: float) -> bool:
        return self.tested and self.p < alpha

    def summary(self) -> str:
        refs = ", ".join(f"{k} {self.proj[k]:+.2f}" for k in self.controls if k in self.proj)
        head = (
            f"{self.detector} at layer {self.layer}: student proj {self.proj.get('main', 0.0):+.2f}"
            f", EAS {self.eas.get('main', 0.0):+.3f}; controls' proj {refs}"
        )
        if not self.tested:
            return head + " (fewer than 2 varying controls: no model-level test)"
        return head + f"; score {self.score:+.3g}, one-sided p = {self.p:.2g}"


def signature_test(
    readings: Mapping[str, Reading],
    layer: int,
    detector: str = "proj_fixed",
    *,
    student: str = "main",
    control: str = "control",
    seed: int = 0,
) -> SignatureTest:
    """``detector`` on ``readings[student]`` with every other series as the reference set
    (``control``: the matched control the detector may read)."""
    det = next((d for d in DETECTORS if d.name == detector), None)
    if det is None or detector not in ACTIVATION_DETECTORS:
        raise ValueError(
            f"{detector!r} is not an activation detector: choose one of {ACTIVATION_DETECTORS}"
        )
    refs = [k for k in readings if k != student]
    rd = readings[student]
    score, p = det.fn(rd, [readings[k] for k in refs], readings.get(control), layer, seed)
    return SignatureTest(
        detector,
        layer,
        float(score),
        float(p),
        refs,
        {k: x.at("proj", layer) for k, x in readings.items()},
        {k: x.at("eas", layer) for k, x in readings.items()},
    )


def signature_readings(
    r: RunContext, vec: Any, dirs: Mapping[str, Path], layer: int
) -> dict[str, Reading]:
    """Every series in ``dirs`` read at its last checkpoint (cached as
    ``signature_readings.json``)."""

    def compute() -> dict[str, Any]:
        probe = trait_probe(r.model, r.trait.name, r.trait, vec)
        out = {}
        for name, d in dirs.items():
            last = list(CheckpointSeries.discover(d))[-1]
            student = load_model(last.path, base=r.model)
            (rd,) = read_student(r.model, student, [probe])
            out[name] = rd.to_json()
        return out

    key = f"{r.key()}-{layer}-{','.join(sorted(dirs))}"
    raw = stage(r.out / "signature_readings.json", key, compute, json_save, json_load, r.log)
    return {k: Reading.from_json(v) for k, v in raw.items()}
