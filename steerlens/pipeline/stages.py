"""The stages experiments share, each a function of the :class:`RunContext` (and of the
stages before it): the teacher vector, its carry test, the teachers' data, distillation of every
series of the plan, behavior per checkpoint with deltas, alignment tracking, data screening and
the run's lineage. Each caches through :func:`~steerlens.pipeline.stage.stage` with the config
fields it depends on in its key, so experiments that share a stage share its files.

The config is read by attribute (``ctx.cfg.seed``, ``ctx.cfg.n_samples`` …): any dataclass with
the fields a stage reads works (the owl experiment's ``OwlConfig`` has them all).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from steerlens.carry import carry_test
from steerlens.core.vectors import SteeringVector
from steerlens.directions.extract import teacher_vector
from steerlens.distill import DistillConfig, TeacherData, distill, generate_teacher_data
from steerlens.loading.models import describe
from steerlens.measures.behavior import trait_behavior
from steerlens.pipeline.context import RunContext, config_json, open_context
from steerlens.pipeline.controls import SeriesPlan, behavior_deltas, series_plan, series_scores
from steerlens.pipeline.records import recorder, teacher_record
from steerlens.pipeline.stage import (
    json_load,
    json_save,
    series_key,
    series_record,
    stage,
    training_prompts,
)
from steerlens.screen import screen_dataset
from steerlens.track import track_checkpoints
from steerlens.version import __version__

__all__ = [
    "behavior_stage",
    "carry_peak",
    "carry_stage",
    "distill_stage",
    "lineage_json",
    "open_run",
    "prompt_teacher_records",
    "run_lineage",
    "screen_stage",
    "series_records",
    "student_config",
    "teacher_data_stage",
    "teacher_vector_stage",
    "track_stage",
]


def prompt_teacher_records(r: RunContext) -> dict[str, Path]:
    """Write the records of the trait teacher, the benign teacher and the base (as a data
    source) under ``teachers/``; returns role → record file (also kept in ``r.teachers``)."""
    trait = r.trait
    for role, desc in (
        ("teacher", {"kind": "prompt", "system": trait.system_prompt}),
        ("benign_teacher", {"kind": "prompt", "system": trait.neutral_system_prompt}),
        ("base", {"kind": "base", "system": None}),
    ):
        path = r.out / "teachers" / f"{role}.json"
        r.teachers[role] = teacher_record(path, desc, r.model)
    return r.teachers


def teacher_vector_stage(r: RunContext) -> Any:

    vec_path = r.out / "vectors" / "teacher.safetensors"
    vec_path.parent.mkdir(parents=True, exist_ok=True)
    return stage(
        vec_path,
        r.key("trait", "seed", "probe_n"),
        lambda: teacher_vector(
            r.model, r.trait, layers="all", seed=r.cfg.seed, progress=r.progress
        ),
        lambda v, p: v.save(p),
        SteeringVector.load,
        r.log,
        recorder("vector", r.model, parents=r.teachers, config=config_json(r.cfg)),
    )


CARRY_KEYS = ("trait", "seed", "probe_n", "carry_layers", "alphas", "n_random", "carry_eval_n")
"""The config fields a carry stage depends on (its cache key)."""


def carry_stage(
    r: RunContext,
    vec: Any,
    *,
    teacher: Any = None,
    name: str | None = None,
    key_suffix: str = "",
) -> Any:
    """The carry test of the teacher vector on the first ``carry_eval_n`` eval prompts: against
    the trait's prompted teacher (``carry.json``, with necessity and its lineage record), or,
    given ``teacher`` and ``name``, against that teacher (``carry/<name>.json``, sufficiency
    only; the same eval prompts, so S is comparable)."""

    cfg = r.cfg
    metric: Any = None
    if cfg.carry_eval_n is not None:
        beh = trait_behavior(r.model, r.trait)
        metric = dataclasses.replace(beh, prompts=beh.prompts[: cfg.carry_eval_n])
    kw: dict[str, Any] = {} if teacher is None else {"teacher": teacher, "necessity": False}
    own = teacher is None
    return stage(
        r.out / "carry.json" if own else r.out / "carry" / f"{name}.json",
        r.key(*CARRY_KEYS) + key_suffix,
        lambda: carry_test(
            r.model,
            vec,
            r.trait,
            metric=metric,
            layers=list(cfg.carry_layers) if cfg.carry_layers else None,
            alphas=cfg.alphas,
            n_random=cfg.n_random,
            seed=cfg.seed,
            progress=r.progress,
            **kw,
        ).to_json(),
        json_save,
        json_load,
        r.log,
        recorder("carry", r.model, parents={"vector": r.out / "vectors" / "teacher.safetensors"})
        if own
        else None,
    )


def teacher_data_stage(r: RunContext) -> dict[str, Any]:
    """Per series of the plan, the numbers its data source wrote (same prompts, same seed)."""

    data_dir = r.out / "data"
    data_dir.mkdir(exist_ok=True)
    prompts = training_prompts(r.cfg.n_samples, r.cfg.seed)

    def generate(sp: SeriesPlan) -> Any:
        seed = r.cfg.seed + sp.seed_offset
        return stage(
            data_dir / f"{sp.file}.jsonl",
            f"{r.key('trait', 'seed', 'n_samples')}-{sp.seed_offset}",
            lambda: generate_teacher_data(
                r.model,
                prompts,
                system=sp.system,
                n=r.cfg.n_samples,
                seed=seed,
                progress=r.progress,
            ),
            lambda d, p: d.save(p),
            TeacherData.load,
            r.log,
            recorder(
                "teacher_data",
                r.model,
                parents={"teacher": r.teachers[sp.source]},
                config={"system": sp.system, "n_samples": r.cfg.n_samples, "seed": seed},
                files=lambda p: [p, p.with_name(p.stem + ".meta.json")],
            ),
        )

    return {sp.name: generate(sp) for sp in r.plan}


def student_config(cfg: Any, seed_offset: int = 0, **overrides: Any) -> Any:
    """The ``DistillConfig`` of an owl-family run's students (LoRA rank and blocks, loss, soft
    labels, steps, batch, checkpoint spacing), seeded ``cfg.seed + seed_offset``; ``overrides``
    (``DistillConfig`` fields: svd's per-student ``loss`` and ``layers``) replace those."""

    fields_ = {
        "rank": cfg.rank,
        "layers": cfg.lora_layers,
        "loss": cfg.loss,
        "kl_targets": cfg.kl_targets,
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "save_every": cfg.save_every,
        "seed": cfg.seed + seed_offset,
    }
    return DistillConfig(**{**fields_, **overrides})


def distill_stage(r: RunContext, data: dict[str, Any]) -> dict[str, Path]:
    """Every series of the plan, trained the same way on its own data."""

    dirs = {sp.name: r.out / "students" / sp.name for sp in r.plan}
    for sp in r.plan:
        distill(
            r.model,
            data[sp.name],
            dirs[sp.name],
            teacher_system=sp.system,
            config=student_config(r.cfg, sp.seed_offset),
            progress=r.progress,
            parents={"data": r.out / "data" / f"{sp.file}.jsonl", "teacher": r.teachers[sp.source]},
        )
    return dirs


def behavior_stage(r: RunContext, dirs: dict[str, Path]) -> Any:
    """B per checkpoint of every series, per-prompt scores, and the deltas with CIs."""

    trait, model = r.trait, r.model
    behavior = trait_behavior(model, trait)

    def compute() -> dict[str, Any]:
        per = getattr(behavior, "per_prompt", None)
        base_rows = None if per is None else [float(x) for x in per(model)]
        series = {name: series_scores(model, d, behavior) for name, d in dirs.items()}
        out: dict[str, Any] = dict(series)
        out.update(
            {
                "base_per_prompt": base_rows,
                "teacher": float(behavior.with_system(trait.system_prompt)(model)),
                "benign_teacher": float(behavior.with_system(trait.neutral_system_prompt)(model)),
                "metric": behavior.describe(),
                "deltas": behavior_deltas(base_rows, series, seed=r.cfg.seed, n_boot=r.cfg.n_boot),
                "series_roles": {sp.name: sp.role for sp in r.plan},
            }
        )
        return out

    return stage(
        r.out / "behavior.json",
        f"{r.key()}-{series_key(*dirs.values())}",  # keyed on the checkpoints' contents
        compute,
        json_save,
        json_load,
        r.log,
        recorder("behavior", model, parents={"student": dirs["main"], "control": dirs["control"]}),
    )


def track_stage(r: RunContext, vec: Any, dirs: dict[str, Path]) -> dict[str, Any]:
    """The student against the base control; with the benign control, a second track of the
    student against it (the student's rows come from the row cache)."""

    def track(control: Path) -> dict[str, Any]:
        return track_checkpoints(
            r.model,
            dirs["main"],
            vec,
            r.trait,
            control=control,
            cache_dir=r.out / "cache" / "track",
            n_null=r.cfg.n_null,
            n_boot=r.cfg.n_boot,
            seed=r.cfg.seed,
            progress=r.progress,
        ).to_json()

    out = {"track": track(dirs["control"])}
    if "benign" in dirs:
        out["track_benign"] = track(dirs["benign"])
    return out


def screen_stage(r: RunContext, vec: Any, data: dict[str, Any]) -> Any:

    n = r.cfg.screen_max
    names = {"main": "teacher", "control": "control", "benign": "benign"}
    return stage(
        r.out / "screen.json",
        r.key(),
        lambda: screen_dataset(
            r.model,
            vec,
            {names.get(k, k): d.samples[:n] for k, d in data.items()},
            seed=r.cfg.seed,
            progress=r.progress,
        ).to_json(),
        json_save,
        json_load,
        r.log,
        recorder(
            "screen",
            r.model,
            parents={
                "vector": r.out / "vectors" / "teacher.safetensors",
                "data": r.out / "data" / "teacher.jsonl",
                "control_data": r.out / "data" / "base.jsonl",
            },
        ),
    )


def series_records(dirs: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`series_record` of every series folder in ``dirs`` (nested mappings kept: svd's
    students by loss, then teacher)."""
    return {
        k: series_records(d) if isinstance(d, Mapping) else series_record(d)
        for k, d in dirs.items()
    }


def lineage_json(r: RunContext, **parts: Any) -> dict[str, Any]:
    """The ``lineage`` block of a run's results: the base model, ``parts`` in order (teachers,
    data, students …, each as the experiment records it), the seed and the steerlens version."""

    return {
        "base": describe(r.model),
        **parts,
        "seeds": {"seed": r.cfg.seed},
        "steerlens_version": __version__,
    }


def run_lineage(r: RunContext, data: dict[str, Any], dirs: dict[str, Path]) -> Any:
    """The owl-family lineage: both prompted teachers, every series' data and its source."""
    model, trait = r.model, r.trait
    return lineage_json(
        r,
        teacher={"model": model.name, "system_prompt": trait.system_prompt},
        benign_teacher={"model": model.name, "system_prompt": trait.neutral_system_prompt},
        data={k: d.meta() for k, d in data.items()},
        data_source={sp.name: sp.system for sp in r.plan},
        students=series_records(dirs),
    )


def open_run(
    cfg: Any, out_dir: str | Path, progress: bool | None, log: Any, *, plan: bool = True
) -> RunContext:
    """The run context of a prompted-teacher experiment (owl and the experiments built on its
    stages): :func:`~steerlens.pipeline.context.open_context`, the teachers' records and, with
    ``plan``, the series plan of the config's controls (:func:`series_plan`)."""

    r = open_context(cfg, out_dir, progress, log)
    if plan:
        r.plan = series_plan(r.trait, cfg.benign_control, cfg.placebo, cfg.benign_replicates)
    prompt_teacher_records(r)
    return r


def carry_peak(carry: Mapping[str, Any], alphas: Sequence[float]) -> tuple[int, float, str]:
    """ℓ* and α from a carry test's JSON, chosen on the teacher side before any student: its
    clean peak, else its raw peak, else the middle grid layer (15 without a grid) and the
    largest of ``alphas``; the rule used is returned as text."""
    cp, rp = carry.get("clean_peak") or {}, carry.get("raw_peak") or {}
    for peak, src in ((cp, "clean peak"), (rp, "raw peak")):
        if peak.get("layer") is not None and peak.get("alpha") is not None:
            return int(peak["layer"]), float(peak["alpha"]), src
    layers = carry.get("layers") or [15]
    src = "no carry peak (no grid cell beat α=0): the middle grid layer and the largest α"
    return int(layers[len(layers) // 2]), float(max(alphas)), src
