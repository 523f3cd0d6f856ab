"""The detection bank's stages (:mod:`steerlens.experiments.detect`): the teachers of every
cell, the trait probes, each cell's data and its screening, one student's reading and its
student-side carry test. Each caches through :func:`steerlens.pipeline.stage`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch

from steerlens.checkpoints import CheckpointSeries
from steerlens.core.vectors import SteeringVector
from steerlens.directions.extract import teacher_vector
from steerlens.distill import DistillConfig, TeacherData, distill, generate_teacher_data
from steerlens.inputs.traits import as_trait
from steerlens.loading.models import load_model
from steerlens.pipeline import (
    REPLICATE_SEED_STRIDE,
    RunContext,
    json_load,
    json_save,
    stage,
    training_prompts,
)
from steerlens.pipeline.detectors import (
    Reading,
    TraitProbe,
    read_student,
    screen_means,
    student_carry,
    trait_probe,
)
from steerlens.runtime.activations import record_activations
from steerlens.teachers import Teacher

__all__ = [
    "cell_data",
    "cell_screen",
    "cell_teachers",
    "read_one",
    "student_carry_stage",
    "trait_probes",
    "with_carry",
    "with_screen",
]


def with_screen(readings: list[Reading], screen: dict[str, float]) -> list[Reading]:
    """The readings with the data's screening as computed now (a data-level reading: the
    screening stage's file is its source, not the copy a cached reading holds)."""
    return [dataclasses.replace(x, screen=screen.get(x.trait)) for x in readings]


def cell_teachers(
    r: RunContext, vec: Any, layer: int, alpha: float
) -> dict[str, tuple[Any, str | None]]:
    """cell → (teacher, the trait it carries or None for a negative)."""

    v = vec.directions[layer]
    g = torch.Generator().manual_seed(r.cfg.seed + 7)
    d = torch.randn(v.shape, generator=g)
    rnd = SteeringVector({layer: d / d.norm() * v.norm()}, meta={"kind": "random"})
    cells: dict[str, tuple[Any, str | None]] = {
        "base": (Teacher.base(), None),
        "neutral": (Teacher.prompted(r.trait.neutral_system_prompt), None),
        "random": (Teacher.steered(rnd, alpha, [layer]), None),
    }
    for m in r.cfg.strengths:
        cells[f"steer{m:g}"] = (
            Teacher.steered(vec.select([layer]), m * alpha, [layer]),
            r.cfg.trait,
        )
    for t in r.cfg.traits:
        cells[f"prompt-{t}"] = (Teacher.prompted(as_trait(t).system_prompt), t)
    return cells


def trait_probes(r: RunContext, vec: Any) -> list[TraitProbe]:
    """The trait probe of every trait (its teacher vector cached under vectors/)."""

    out = [trait_probe(r.model, r.cfg.trait, r.trait, vec)]
    for t in r.cfg.traits:
        if t == r.cfg.trait:
            continue
        tr = as_trait(t)
        if r.cfg.probe_n is not None:
            tr = dataclasses.replace(tr, probe_n=r.cfg.probe_n)
        v: SteeringVector = stage(
            r.out / "vectors" / f"{t}.safetensors",
            f"{r.key('seed', 'probe_n')}-{t}",
            partial(teacher_vector, r.model, tr, layers="all", seed=r.cfg.seed, progress=False),
            lambda x, p: x.save(p),
            SteeringVector.load,
            r.log,
        )
        out.append(trait_probe(r.model, t, tr, v))
    return out


def cell_data(r: RunContext, cell: str, teacher: Any, s: int) -> Any:

    seed = r.cfg.seed + s * REPLICATE_SEED_STRIDE
    prompts = training_prompts(r.cfg.n_samples, r.cfg.seed)
    return stage(
        r.out / "data" / f"{cell}-s{s}.jsonl",
        f"{r.key('n_samples', 'seed')}-{cell}-{s}",
        lambda: generate_teacher_data(
            r.model, prompts, teacher=teacher, n=r.cfg.n_samples, seed=seed, progress=False
        ),
        lambda d, p: d.save(p),
        TeacherData.load,
        r.log,
    )


def cell_screen(
    r: RunContext, cell: str, s: int, rows: list[Any], layer: int, probes: list[Any]
) -> Any:
    """trait → mean ΔP of the data's screened samples at ℓ* (cached per data set)."""
    key = f"{r.key('n_samples', 'seed', 'screen_max')}-{cell}-{s}-{layer}-y2"
    return stage(
        r.out / "screen" / f"{cell}-s{s}.json",
        key,
        partial(screen_means, r.model, probes, rows, layer, r.cfg.seed),
        json_save,
        json_load,
        r.log,
    )


def read_one(
    r: RunContext,
    loss: str,
    cell: str,
    s: int,
    teacher: Any,
    data: Any,
    layer: int,
    probes: list[TraitProbe],
    screen: dict[str, float],
) -> list[Reading]:
    """Distil one student and read it against every trait (cached)."""

    cfg = r.cfg
    folder = r.out / "students" / loss / f"{cell}-s{s}"
    steps = cfg.steps if loss == "kl" else cfg.sft_steps
    dcfg = DistillConfig(
        rank=cfg.rank,
        layers=cfg.lora_layers,
        loss=loss,
        steps=steps,
        batch_size=cfg.batch_size,
        save_every=steps,
        seed=cfg.seed + s * REPLICATE_SEED_STRIDE,
        kl_targets=cfg.kl_targets,
    )

    def compute() -> list[dict[str, Any]]:
        res = distill(r.model, data, folder, teacher=teacher, config=dcfg, progress=False)
        student = load_model(res.checkpoints[-1], base=r.model)
        rd = read_student(r.model, student, probes, screen=screen)
        return [x.to_json() for x in rd]

    key = f"{r.key('n_samples', 'seed', 'rank', 'lora_layers', 'batch_size', 'kl_targets')}-{loss}-{steps}-{cell}-{s}-{layer}"
    rows = stage(folder / "reading.json", key, compute, json_save, json_load, r.log)
    return [Reading.from_json(x) for x in rows]


def student_carry_stage(
    r: RunContext, loss: str, cell: str, s: int, layer: int, probes: list[TraitProbe]
) -> dict[str, list[float]]:
    """trait → [S, p] of the student-side carry test (Blank et al.) of the student's shift vˢ
    at ℓ*: base + α·vˢ against random directions of equal norm (cached beside the reading)."""
    cfg = r.cfg
    folder = r.out / "students" / loss / f"{cell}-s{s}"

    def compute() -> dict[str, list[float]]:
        last = list(CheckpointSeries.discover(folder))[-1]
        student = load_model(last.path, base=r.model)
        out = {}
        for pr in probes:
            acts = record_activations(
                student, pr.trait.probe_chats(None), [layer], pr.position, progress=False
            )
            shift = SteeringVector(
                {layer: acts.means[layer] - pr.base_means[layer]}, meta={"kind": "student_shift"}
            )
            out[pr.name] = list(
                student_carry(
                    r.model,
                    student,
                    shift,
                    pr,
                    layer=layer,
                    alphas=cfg.student_alphas,
                    n_random=cfg.student_n_random,
                    eval_n=cfg.carry_eval_n,
                    seed=cfg.seed,
                )
            )
        return out

    key = f"{r.key('n_samples', 'seed', 'rank', 'lora_layers', 'batch_size', 'kl_targets', 'student_alphas', 'student_n_random', 'carry_eval_n')}-{loss}-{cell}-{s}-{layer}"
    return stage(folder / "carry.json", key, compute, json_save, json_load, r.log)


def with_carry(readings: list[Reading], carry: Mapping[str, Sequence[float]]) -> list[Reading]:
    """The readings with their student carry test (S, p), where one ran."""
    return [
        dataclasses.replace(x, carry_s=carry[x.trait][0], carry_p=carry[x.trait][1])
        if x.trait in carry
        else x
        for x in readings
    ]
