"""The stages of the ``svd`` experiment (:mod:`steerlens.experiments.svd`) past the owl ones:
per teacher its carry test, its numbers and a student per loss; the per-prompt behaviors of
the base, the teachers and the students; each student's alignment at ℓ*; and the rows that
put predictor, transfer and alignment side by side (:mod:`steerlens.experiments.svd_measure`).
Each caches in the output folder, keyed on the config and, per teacher, on its lineage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from steerlens.behavior import trait_behavior
from steerlens.common import sha256_bytes
from steerlens.distill import TeacherData, distill, generate_teacher_data
from steerlens.experiments.svd_measure import aligned_at, transfer
from steerlens.models import load_model
from steerlens.pipeline import RunContext, carry_stage, student_config
from steerlens.pipeline.stage import json_load, json_save, last_checkpoint, stage, training_prompts
from steerlens.teachers import Teacher

__all__ = ["alignment", "behaviors", "rows", "student", "teacher_carry", "teacher_data"]


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


def behaviors(r: RunContext, teachers: dict[str, Teacher], dirs: dict[str, dict[str, Path]]) -> Any:
    """Per-eval-prompt B of the base, each teacher and each student's last checkpoint."""
    beh = trait_behavior(r.model, r.trait)
    if not hasattr(beh, "per_prompt"):
        raise ValueError("the svd experiment needs a per-prompt metric (the trait's logprob)")

    def compute() -> dict[str, Any]:
        out: dict[str, Any] = {"base": _per_prompt(r.model, beh), "teachers": {}, "students": {}}
        for name, t in teachers.items():
            with t.apply(r.model) as m:
                out["teachers"][name] = _per_prompt(m, beh.with_system(t.system))
        for loss, by_name in dirs.items():
            out["students"][loss] = {}
            for name, d in by_name.items():
                model = load_model(last_checkpoint(d), base=r.model)
                out["students"][loss][name] = _per_prompt(model, beh)
                del model
        out["metric"] = beh.describe()
        return out

    return stage(r.out / "behavior.json", r.key(), compute, json_save, json_load, r.log)


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


def _row(r: RunContext, t: Teacher, c: dict[str, Any], tr: Any, al: Any) -> dict[str, Any]:
    """One teacher's row: its carry predictor, the transfer and the alignment, as JSON."""
    cp = c.get("clean_peak") or {}
    return {
        "teacher": t.describe(),
        "carry_defined": c.get("defined"),
        "carry_level": c.get("level"),
        "S": cp.get("S") if c.get("defined") else None,
        "S_layer": cp.get("layer"),
        "S_alpha": cp.get("alpha"),
        "S_beats_null": cp.get("beats_null"),
        "transfer": tr.to_json(),
        "alignment": al,
    }


def rows(
    r: RunContext, carries: dict[str, Any], beh: Any, align: Any, teachers: dict[str, Teacher]
) -> dict[str, Any]:
    """Per loss and teacher: the predictor, the transfer and the alignment, as JSON."""
    out: dict[str, Any] = {}
    for loss, studs in beh["students"].items():
        out[loss] = {}
        for name, t in teachers.items():
            tr = transfer(
                np.array(studs[name]),
                np.array(studs["base"]),
                np.array(beh["teachers"][name]),
                np.array(beh["base"]),
                n_boot=r.cfg.n_boot,
                seed=r.cfg.seed,
            )
            al = (align.get(loss) or {}).get(name)
            out[loss][name] = _row(r, t, carries.get(name) or {}, tr, al)
    return out
