"""The ``svd`` experiment (``steerlens experiment svd``): Blank et al.'s steering-vector
distillation test at the level of transfer, on the embedded model.

Teachers (one :class:`~steerlens.teachers.Teacher` each):

- ``prompted``: the base with the owl system prompt;
- ``steered``: the base with α·v added at the owl teacher vector's clean-peak layer ℓ*, α the
  carry test's clean-peak α (no system prompt): the case where the trait *is* a vector;
- ``ablated``: the owl system prompt with v̂ projected out after every block from ℓ* on;
- ``placebo``: the neutral system prompt of the same form;
- ``base``: the base itself, whose student is the **base control** every delta is taken
  against (DESIGN.md "controls").

The owl stages run first (model, teacher vector, carry test: :mod:`steerlens.experiments.owl`,
same cache files), then per teacher: its carry test (the predictor, clean-peak S), its numbers,
a student per loss (SFT on the sampled tokens as the papers train, KL to the teacher's soft
labels beside it), and per student the transfer (behavior delta vs the base control with CI and
permutation p, fraction of the teacher's gap) and its alignment with the teacher vector at ℓ*
against the random-direction null (:mod:`steerlens.experiments.svd_measure`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlens.core.results import Record
from steerlens.distill.config import default_layers
from steerlens.experiments import svd_stages as st
from steerlens.experiments.owl import OwlConfig
from steerlens.experiments.registry import Experiment, register
from steerlens.experiments.result import ExperimentResult
from steerlens.experiments.svd_measure import SvdRow, SvdVerdict, svd_verdict
from steerlens.pipeline import (
    carry_peak,
    carry_stage,
    config_json,
    finish_run,
    lineage_json,
    open_run,
    series_records,
    teacher_vector_stage,
)
from steerlens.teachers import Teacher
from steerlens.version import __version__

__all__ = ["SvdConfig", "SvdSection", "run", "svd_teachers"]

TEACHER_NAMES = ("prompted", "steered", "ablated", "placebo", "base")


@dataclass
class SvdConfig(OwlConfig):
    """Settings of the svd run: the owl experiment's (model, trait, data, LoRA, carry grid,
    nulls) plus where and how hard the steered teacher steers, and the losses trained.

    Two defaults differ from the owl run's, chosen by the positive control (the steered
    teacher's student must be detected as inherited) at the default CPU size on SmolLM2
    (48 samples, 24 steps of batch 6, LoRA r=4; steered teacher = owl vector at its clean peak,
    layer 27, α=2, S=0.54; 2026-12-02, README "The svd experiment"):

    - ``loss="kl"`` is the headline and SFT (what Cloud et al. and Blank et al. train) is
      trained beside it (``also_kl``): with SFT on the sampled numbers the steered teacher's
      student moved *away* from the teacher (Δ −0.13 nats, 95% CI [−0.14, −0.11], excess EAS
      +0.000, p=0.46): not detected; with KL to the steered teacher's soft labels it moved
      toward it (Δ +0.23 [+0.22, +0.24], p=0.0002, F=0.105) and aligned with v at layer 27
      (excess EAS +0.68, p=0.001): detected. Hard labels on 48 samples carry too little of the
      edit at this size; ``--loss sft`` restores the papers' headline.
    - ``lora_at_steer``: the LoRA band (as many blocks as the middle fifth) ends at the steered
      layer, so a student can make the edit where the teacher made it (the clean peak, 27,
      lies above the middle fifth 9-14). Not needed for detection (KL on the middle fifth also
      passed: Δ +0.15 [+0.11, +0.19], F=0.067, excess EAS +0.59, p=0.001), but it transferred
      more and trains fewer blocks (those below the band are cached): 175 s vs 255 s per KL
      student in two runs at load ~6. ``--no-lora-at-steer`` trains on the middle fifth."""

    loss: str = field(
        default="kl",
        metadata={"help": "the headline distillation loss", "choices": ("kl", "sft")},
    )
    also_kl: bool = field(
        default=True,
        metadata={"help": "also train a student with the other loss (SFT beside KL, or KL)"},
    )
    steer_layer: int | None = field(
        default=None, metadata={"help": "steered/ablated layer (none: the clean-peak layer)"}
    )
    steer_alpha: float | None = field(
        default=None, metadata={"help": "steering strength α (none: the clean-peak α)"}
    )
    teacher_carry: bool = field(
        default=True, metadata={"help": "carry-test every teacher (the predictor per teacher)"}
    )
    lora_at_steer: bool = field(
        default=True,
        metadata={
            "help": "without --lora-layers: LoRA on as many blocks as the middle fifth, ending "
            "at the steered layer (false: the middle fifth)"
        },
    )
    teachers: tuple[str, ...] = field(
        default=TEACHER_NAMES,
        metadata={"help": "teachers to run (a subset of the five; 'base' is always run)"},
    )

    def __post_init__(self) -> None:
        bad = [t for t in self.teachers if t not in TEACHER_NAMES]
        if bad:
            raise ValueError(f"unknown teachers {bad}: choose from {', '.join(TEACHER_NAMES)}")
        if "base" not in self.teachers:
            self.teachers = (*self.teachers, "base")  # the base control every delta needs

    def student_layers(self, layer: int, n_layers: int) -> list[int] | None:
        """The LoRA blocks of every student: ``lora_layers`` if given; with ``lora_at_steer``
        the band of ``len(default_layers)`` blocks ending at the steered layer ``layer``; else
        None (the distiller's middle fifth)."""
        if self.lora_layers is not None:
            return list(self.lora_layers)
        if not self.lora_at_steer:
            return None
        width = len(default_layers(n_layers))
        return list(range(max(0, layer - width + 1), layer + 1))

    def losses(self) -> list[str]:
        other = "kl" if self.loss == "sft" else "sft"
        return [self.loss, other] if self.also_kl else [self.loss]


@dataclass
class SvdSection(Record):
    """The ``svd`` block of ``results.json``: the steered layer ℓ* and α (and the rule that
    chose them), the students' LoRA blocks, per loss and teacher the row (predictor, transfer,
    alignment), per loss the verdict, and the teachers' carry tests (JSON; None: not run)."""

    layer: int = 0
    alpha: float = math.nan
    peak_source: str = ""
    lora_layers: list[int] | None = None
    headline_loss: str = "kl"
    rows: dict[str, dict[str, SvdRow]] = field(default_factory=dict)
    verdicts: dict[str, SvdVerdict] = field(default_factory=dict)
    teacher_carry: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        v = self.verdicts.get(self.headline_loss)
        return f"svd at layer {self.layer}, α={self.alpha:g}: {v.headline if v else 'no verdict'}"


def _peak(carry: dict[str, Any], cfg: SvdConfig) -> tuple[int, float, str]:
    """ℓ* and α of the steered teacher: the config's, else the carry peak
    (:func:`~steerlens.pipeline.carry_peak`)."""
    layer, alpha, src = carry_peak(carry, cfg.alphas)
    if cfg.steer_layer is not None or cfg.steer_alpha is not None:
        src = "config"
    layer = cfg.steer_layer if cfg.steer_layer is not None else layer
    alpha = cfg.steer_alpha if cfg.steer_alpha is not None else alpha
    return int(layer), float(alpha), src


def svd_teachers(vec: Any, trait: Any, layer: int, alpha: float) -> dict[str, Teacher]:
    """The five teachers of the experiment (module doc), by name."""
    return {
        "prompted": Teacher.prompted(trait.system_prompt),
        "steered": Teacher.steered(vec.select([layer]), alpha, [layer]),
        "ablated": Teacher.ablated(vec, layer, trait.system_prompt),
        "placebo": Teacher.prompted(trait.neutral_system_prompt),
        "base": Teacher.base(),
    }


def run(
    cfg: SvdConfig,
    out_dir: str | Path,
    *,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> ExperimentResult:
    """Run the svd experiment; write ``results.json`` (the command line adds ``report.html``)."""
    out = Path(out_dir).expanduser()
    for sub in ("data", "carry"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    r = open_run(cfg, out, progress, log)
    vec = teacher_vector_stage(r)
    r.tick("teacher vector")
    owl_carry = carry_stage(r, vec)
    r.tick("carry test")
    layer, alpha, src = _peak(owl_carry, cfg)
    log(f"steered teacher: α={alpha:g} at layer {layer} ({src})")
    every = svd_teachers(vec, r.trait, layer, alpha)
    teachers = {n: t for n, t in every.items() if n in cfg.teachers}
    carries = {n: st.teacher_carry(r, n, t, vec, owl_carry) for n, t in teachers.items()}
    r.tick("teacher carry tests")
    datas = {n: st.teacher_data(r, n, t) for n, t in teachers.items()}
    r.tick("teacher data")
    lora = cfg.student_layers(layer, r.model.n_layers)
    log(f"students: LoRA on blocks {lora if lora is not None else 'the middle fifth'}")
    dirs = {
        loss: {n: st.student(r, n, t, datas[n], loss, lora) for n, t in teachers.items()}
        for loss in cfg.losses()
    }
    r.tick("distillation")
    beh = st.behaviors(r, teachers, dirs)
    r.tick("behavior")
    align = st.alignment(r, vec, dirs, layer)
    r.tick("alignment")
    rows = st.rows(r, carries, beh, align, teachers)
    sv = SvdSection(layer, alpha, src, lora, cfg.loss, rows)
    sv.verdicts = {loss: svd_verdict(rs) for loss, rs in rows.items()}
    sv.teacher_carry = {n: c for n, c in carries.items() if n != "prompted"}
    head = sv.verdicts[cfg.loss]
    lines = [f"{loss}: {v.headline}" for loss, v in sv.verdicts.items()] + head.lines
    top = SvdVerdict(head.headline, lines, head.strength, head.positive_control)
    results: dict[str, Any] = {
        "kind": "steerlens.svd",
        "steerlens_version": __version__,
        "config": config_json(cfg),
        "trait": r.trait.name,
        "lineage": lineage_json(
            r,
            teachers={n: d.settings.get("teacher") for n, d in datas.items()},
            data={n: d.meta() for n, d in datas.items()},
            students=series_records(dirs),
        ),
        "teacher_vector": vec.to_json(),
        "carry": owl_carry,
        "svd": sv.to_json(),
        "verdict": top.to_json(),
    }
    finish_run(
        r,
        results,
        {"vector": r.out / "vectors" / "teacher.safetensors", "carry": r.out / "carry.json"},
    )
    return ExperimentResult(results)


SVD = register(
    Experiment(
        name="svd",
        config=SvdConfig,
        run=run,
        description="Blank et al.'s transfer test: prompted, steered, ablated and placebo "
        "teachers, a student from each and the base control",
        default_out="runs/svd",
    ),
    replace=True,
)
"""The registered svd experiment."""
