"""The stages of the ``svd`` experiment (:mod:`steerlens.experiments.svd`) past the owl ones:
per teacher its carry test, its numbers and a student per loss; the per-prompt behaviors of
the base, the teachers and the students; each student's alignment at ℓ*; and the rows that
put predictor, transfer and alignment side by side (:mod:`steerlens.experiments.svd_measure`).
Each caches in the output folder, keyed on the config and, per teacher, on its lineage."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from steerlens.carry.result import CarryResult
from steerlens.core.common import sha256_bytes
from steerlens.core.results import Record
from steerlens.distill import TeacherData, distill, generate_teacher_data
from steerlens.experiments.svd_measure import SvdAlignment, SvdRow, Transfer, aligned_at, transfer
from steerlens.loading.models import load_model
from steerlens.measures.behavior import trait_behavior
from steerlens.pipeline import RunContext, carry_stage, student_config
from steerlens.pipeline.stage import json_load, json_save, last_checkpoint, stage, training_prompts
from steerlens.teachers import Teacher

__all__ = [
    "SvdBehavior",
    "alignment",
    "behaviors",
    "rows",
    "student",
    "teacher_carry",
    "teacher_data",
]


def _tag(t: Teacher) -> str:
    """The teacher's lineage, hashed: what a stage of that teacher adds to its cache key."""
    return sha256_bytes(json.dumps(t.lineage(), sort_keys=True))[:12]


def teacher_carry(r: RunContext, name: str, t: Teacher, vec: Any, owl_carry: Any) -> Any:
    """The carry test of the owl teacher vector against teacher ``t`` on the same first
    ``carry_eval_n`` eval prompts as the owl stage's (the prompted teacher's is that stage's;
    none for the base, or with ``teacher_carry`` off)."""
    if name == "prompted":
        return owl_carry
    if name == "base" or not getattr(r.cfg, "teacher_carry", False):
        return None
    return carry_stage(r, vec, teacher=t, name=name, key_suffix=f"-{_tag(t)}")


def teacher_data(r: RunContext, name: str, t: Teacher) -> Any:
    """The numbers teacher ``t`` writes for the owl run's training prompts."""
    prompts = training_prompts(r.cfg.n_samples, r.cfg.seed)
    return stage(
        r.out / "data" / f"{name}.jsonl",
        f"{r.key('trait', 'seed', 'n_samples')}-{_tag(t)}",
        lambda: generate_teacher_data(
            r.model, prompts, teacher=t, n=r.cfg.n_samples, seed=r.cfg.seed, progress=r.progress
        ),
        lambda d, p: d.save(p),
        TeacherData.load,
        r.log,
    )


def student(
    r: RunContext, name: str, t: Teacher, data: Any, loss: str, layers: list[int] | None
) -> Path:
    """Teacher ``t``'s student with ``loss`` on LoRA blocks ``layers`` (``students/<loss>/<name>``)."""
    dcfg = student_config(r.cfg, loss=loss, layers=None if layers is None else tuple(layers))
    out = r.out / "students" / loss / name
    distill(r.model, data, out, teacher=t, config=dcfg, progress=r.progress)
    return out


def _per_prompt(model: Any, behavior: Any) -> list[float]:
    return [float(x) for x in behavior.per_prompt(model).tolist()]


@dataclass
class SvdBehavior(Record):
    """Per-eval-prompt B of the base, of each teacher (by name) and of each student's last
    checkpoint (by loss, then teacher), and the metric (``behavior.json``)."""

    base: list[float] = field(default_factory=list)
    teachers: dict[str, list[float]] = field(default_factory=dict)
    students: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    metric: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        return f"per-prompt B of the base, {len(self.teachers)} teachers and their students"


def behaviors(
    r: RunContext, teachers: dict[str, Teacher], dirs: dict[str, dict[str, Path]]
) -> SvdBehavior:
    """Per-eval-prompt B of the base, each teacher and each student's last checkpoint."""
    beh = trait_behavior(r.model, r.trait)
    if not hasattr(beh, "per_prompt"):
        raise ValueError("the svd experiment needs a per-prompt metric (the trait's logprob)")

    def compute() -> SvdBehavior:
        out = SvdBehavior(_per_prompt(r.model, beh), metric=beh.describe())
        for name, t in teachers.items():
            with t.apply(r.model) as m:
                out.teachers[name] = _per_prompt(m, beh.with_system(t.system))
        for loss, by_name in dirs.items():
            out.students[loss] = {}
            for name, d in by_name.items():
                model = load_model(last_checkpoint(d), base=r.model)
                out.students[loss][name] = _per_prompt(model, beh)
                del model
        return out

    load = lambda p: SvdBehavior.from_json(json_load(p))
    return stage(r.out / "behavior.json", r.key(), compute, json_save, load, r.log)


def alignment(r: RunContext, vec: Any, dirs: dict[str, dict[str, Path]], layer: int) -> Any:
    """Per loss and teacher: the student's alignment at ℓ* (vs null, and vs the base control)."""

    def compute() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for loss, by_name in dirs.items():
            out[loss] = {}
            for name, d in by_name.items():
                if name == "base":
                    continue
                out[loss][name] = aligned_at(r, d, by_name["base"], vec, layer)
        return out

    return stage(r.out / "alignment.json", r.key(), compute, json_save, json_load, r.log)


def _row(t: Teacher, carry: Any, tr: Transfer, al: Any) -> SvdRow:
    """One teacher's row: its carry predictor (``carry``: the test's JSON, or None), the
    transfer and the alignment (JSON, or None)."""
    row = SvdRow(t.describe(), transfer=tr)
    row.alignment = None if al is None else SvdAlignment.from_json(al)
    c = CarryResult.from_json(carry) if carry else None
    if c is not None:
        row.carry_defined, row.carry_level = c.defined, c.level.value
    if c is not None and c.clean_peak is not None:
        cp = c.clean_peak
        row.S = cp.sufficiency if c.defined else None
        row.S_layer, row.S_alpha, row.S_beats_null = cp.layer, cp.alpha, cp.beats_null
    return row


def rows(
    r: RunContext,
    carries: dict[str, Any],
    beh: SvdBehavior,
    align: Any,
    teachers: dict[str, Teacher],
) -> dict[str, dict[str, SvdRow]]:
    """Per loss and teacher: the predictor, the transfer and the alignment."""
    out: dict[str, dict[str, SvdRow]] = {}
    for loss, studs in beh.students.items():
        out[loss] = {}
        for name, t in teachers.items():
            tr = transfer(
                np.array(studs[name]),
                np.array(studs["base"]),
                np.array(beh.teachers[name]),
                np.array(beh.base),
                n_boot=r.cfg.n_boot,
                seed=r.cfg.seed,
            )
            out[loss][name] = _row(t, carries.get(name), tr, (align.get(loss) or {}).get(name))
    return out
