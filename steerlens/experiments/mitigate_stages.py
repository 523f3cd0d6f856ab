"""The owl mitigate run's training and measuring stages (:mod:`steerlens.experiments.mitigate`):
the base control, a student per arm and the unmitigated student's replicates, then per model
its per-prompt behavior, its alignment at ℓ* and its held-out loss (the cost). Each measuring
stage caches under ``mitigate/``, keyed on the config and the checkpoints' contents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerlens.distill import distill, student_loss
from steerlens.distill.config import default_layers
from steerlens.experiments.mitigate_data import arm_mitigation
from steerlens.experiments.mitigate_measure import Arm, MitigateBehavior, replicate_names
from steerlens.experiments.owl_records import OwlScores
from steerlens.experiments.svd_measure import SvdAlignment, aligned_at
from steerlens.loading.models import load_model
from steerlens.measures.behavior import trait_behavior
from steerlens.pipeline import RunContext, student_config
from steerlens.pipeline.controls import REPLICATE_SEED_STRIDE, series_scores
from steerlens.pipeline.stage import json_load, json_save, last_checkpoint, series_key, stage

__all__ = ["alignment", "behavior", "cost", "reg_layer", "replicates", "train"]


def reg_layer(r: RunContext, layer: int) -> int:
    """The regulariser's layer: ℓ*, or the lowest LoRA block when ℓ* is below it (the
    student's residual stream below its lowest LoRA block equals the base's)."""
    lora = r.cfg.lora_layers or default_layers(r.model.n_layers)
    return max(layer, min(lora))


def replicates(r: RunContext) -> list[str]:
    """The unmitigated student's replicates of this run (none for a plain owl config)."""
    return replicate_names(getattr(r.cfg, "none_replicates", 0))


def train(
    r: RunContext,
    arms: dict[str, Arm],
    datas: dict[str, Any],
    control: Any,
    vec: Any,
    site: tuple[int, int, float],
) -> dict[str, Path]:
    """The base control, one student per arm and the unmitigated student's replicates, trained
    the same way (``none`` and the control are the owl experiment's ``students/main`` and
    ``students/control``; replicate r trains with seed + r·1009)."""
    reps = replicates(r)
    dirs = {"control": r.out / "students" / "control"}
    dirs.update({n: r.out / "students" / ("main" if n == "none" else n) for n in [*arms, *reps]})
    todo: dict[str, tuple[Any, str | None, Any, int]] = {"control": (control, None, None, 0)}
    for name, a in arms.items():
        todo[name] = (datas[name], r.trait.system_prompt, arm_mitigation(a, vec, site), 0)
    for i, name in enumerate(reps, 1):
        todo[name] = (datas["none"], r.trait.system_prompt, None, i * REPLICATE_SEED_STRIDE)
    for name, (data, system, mit, offset) in todo.items():
        src = "teacher" if system is not None else "base"
        distill(
            r.model,
            data,
            dirs[name],
            teacher_system=system,
            config=student_config(r.cfg, offset),
            progress=r.progress,
            parents={"data": r.out / "data" / f"{src}.jsonl", "teacher": r.teachers[src]},
            mitigation=mit,
        )
    return dirs


def behavior(r: RunContext, dirs: dict[str, Path]) -> MitigateBehavior:
    """Per-eval-prompt B of the base, the teacher, the control and each arm's last checkpoint,
    and every arm's B per checkpoint."""
    beh: Any = trait_behavior(r.model, r.trait)
    if not hasattr(beh, "per_prompt"):
        raise ValueError("the mitigate experiment needs a per-prompt metric (the trait's logprob)")

    def compute() -> dict[str, Any]:
        series = {n: OwlScores.from_json(series_scores(r.model, d, beh)) for n, d in dirs.items()}
        last = {n: s.last_per_prompt or [] for n, s in series.items()}
        return MitigateBehavior(
            base=[float(x) for x in beh.per_prompt(r.model)],
            teacher=[float(x) for x in beh.with_system(r.trait.system_prompt).per_prompt(r.model)],
            control=last.pop("control"),
            arms=last,
            series={n: {"steps": s.steps, "scores": s.scores} for n, s in series.items()},
            metric=beh.describe(),
        ).to_json()

    got = stage(
        r.out / "mitigate" / "behavior.json",
        f"{r.key()}-{series_key(*dirs.values())}",
        compute,
        json_save,
        json_load,
        r.log,
    )
    return MitigateBehavior.from_json(got)


def alignment(
    r: RunContext, vec: Any, dirs: dict[str, Path], layer: int
) -> dict[str, SvdAlignment]:
    """Per arm (not the replicates): EAS at ℓ* of its last checkpoint against the nulls, and
    the excess over the base control."""
    skip = {"control", *replicates(r)}

    def compute() -> dict[str, Any]:
        out = {}
        for name, d in dirs.items():
            if name in skip:
                continue
            out[name] = aligned_at(r, d, dirs["control"], vec, layer)
        return out

    got = stage(
        r.out / "mitigate" / "alignment.json",
        f"{r.key()}-{series_key(*dirs.values())}-l{layer}",
        compute,
        json_save,
        json_load,
        r.log,
    )
    return {n: SvdAlignment.from_json(a) for n, a in got.items()}


def cost(r: RunContext, dirs: dict[str, Path], held: Any) -> Any:
    """Held-out loss of the base, the control and each arm's last checkpoint (not the
    replicates')."""
    skip = set(replicates(r))
    dcfg = student_config(r.cfg)

    def compute() -> dict[str, float]:
        out = {"base": student_loss(r.model, r.model, held, config=dcfg)}
        for name, d in dirs.items():
            if name in skip:
                continue
            student = load_model(last_checkpoint(d), base=r.model)
            out[name] = student_loss(r.model, student, held, config=dcfg)
            del student
        return out

    return stage(
        r.out / "mitigate" / "cost.json",
        f"{r.key()}-{series_key(*dirs.values())}-h{len(held.samples)}",
        compute,
        json_save,
        json_load,
        r.log,
    )
