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

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlens.common import sha256_bytes
from steerlens.experiments.owl import OwlConfig
from steerlens.experiments.registry import Experiment, register
from steerlens.experiments.result import ExperimentResult
from steerlens.experiments.svd_measure import alignment_at, transfer, transfer_verdict
from steerlens.pipeline import RunContext as Run
from steerlens.pipeline import carry_peak, carry_stage, finish_run, open_run, teacher_vector_stage
from steerlens.pipeline.stage import (
    json_load,
    json_save,
    series_record,
    stage,
    training_prompts,
)
from steerlens.teachers import Teacher

__all__ = ["SvdConfig", "run", "svd_teachers"]

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
        from steerlens.distill.config import default_layers

        if self.lora_layers is not None:
            return list(self.lora_layers)
        if not self.lora_at_steer:
            return None
        width = len(default_layers(n_layers))
        return list(range(max(0, layer - width + 1), layer + 1))

    def losses(self) -> list[str]:
        other = "kl" if self.loss == "sft" else "sft"
        return [self.loss, other] if self.also_kl else [self.loss]


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


def _tag(t: Teacher) -> str:
    """The teacher's lineage, hashed: what a stage of that teacher adds to its cache key."""
    return sha256_bytes(json.dumps(t.lineage(), sort_keys=True))[:12]


def _tkey(r: Run, t: Teacher, *fields_: str) -> str:
    return f"{r.key(*fields_)}-{_tag(t)}"


def _teacher_carry(r: Run, name: str, t: Teacher, vec: Any, owl_carry: Any) -> Any:
    """The carry test of the owl teacher vector against teacher ``t`` on the same first
    ``carry_eval_n`` eval prompts as the owl stage's (the prompted teacher's is that stage's)."""

    cfg = r.cfg
    if name == "prompted":
        return owl_carry
    if name == "base" or not isinstance(cfg, SvdConfig) or not cfg.teacher_carry:
        return None
    return carry_stage(r, vec, teacher=t, name=name, key_suffix=f"-{_tag(t)}")


def _data(r: Run, name: str, t: Teacher) -> Any:
    from steerlens.distill import TeacherData, generate_teacher_data

    prompts = training_prompts(r.cfg.n_samples, r.cfg.seed)
    return stage(
        r.out / "data" / f"{name}.jsonl",
        _tkey(r, t, "trait", "seed", "n_samples"),
        lambda: generate_teacher_data(
            r.model, prompts, teacher=t, n=r.cfg.n_samples, seed=r.cfg.seed, progress=r.progress
        ),
        lambda d, p: d.save(p),
        TeacherData.load,
        r.log,
    )


def _student(r: Run, name: str, t: Teacher, data: Any, loss: str, layers: list[int] | None) -> Path:
    from steerlens.distill import DistillConfig, distill

    cfg = r.cfg
    dcfg = DistillConfig(
        rank=cfg.rank,
        layers=None if layers is None else tuple(layers),
        loss=loss,
        kl_targets=cfg.kl_targets,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        save_every=cfg.save_every,
        seed=cfg.seed,
    )
    out = r.out / "students" / loss / name
    distill(r.model, data, out, teacher=t, config=dcfg, progress=r.progress)
    return out


def _per_prompt(model: Any, behavior: Any) -> list[float]:
    return [float(x) for x in behavior.per_prompt(model).tolist()]


def _behaviors(r: Run, teachers: dict[str, Teacher], dirs: dict[str, dict[str, Path]]) -> Any:
    """Per-eval-prompt B of the base, each teacher and each student's last checkpoint."""
    from steerlens.behavior import trait_behavior
    from steerlens.models import load_model

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
                final = sorted(d.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
                student = load_model(final[-1], base=r.model)
                out["students"][loss][name] = _per_prompt(student, beh)
                del student
        out["metric"] = beh.describe()
        return out

    return stage(r.out / "behavior.json", r.key(), compute, json_save, json_load, r.log)


def _alignment(r: Run, vec: Any, dirs: dict[str, dict[str, Path]], layer: int) -> Any:
    """Per loss and teacher: the student's alignment at ℓ* (vs null, and vs the base control)."""
    from steerlens.track import track_checkpoints

    def compute() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for loss, by_name in dirs.items():
            out[loss] = {}
            for name, d in by_name.items():
                if name == "base":
                    continue
                tr = track_checkpoints(
                    r.model,
                    d,
                    vec,
                    r.trait,
                    control=by_name["base"],
                    layers=[layer],
                    cache_dir=r.out / "cache" / "track",
                    n_null=r.cfg.n_null,
                    n_boot=r.cfg.n_boot,
                    seed=r.cfg.seed,
                    progress=r.progress,
                )
                out[loss][name] = alignment_at(tr.to_json(), layer)
        return out

    return stage(r.out / "alignment.json", r.key(), compute, json_save, json_load, r.log)


def _rows(
    r: Run, carries: dict[str, Any], beh: Any, align: Any, teachers: dict[str, Teacher]
) -> dict[str, Any]:
    """Per loss and teacher: the predictor, the transfer and the alignment, as JSON."""
    import numpy as np

    out: dict[str, Any] = {}
    for loss, studs in beh["students"].items():
        rows: dict[str, Any] = {}
        for name, t in teachers.items():
            c = carries.get(name) or {}
            cp = c.get("clean_peak") or {}
            tr = transfer(
                np.array(studs[name]),
                np.array(studs["base"]),
                np.array(beh["teachers"][name]),
                np.array(beh["base"]),
                n_boot=r.cfg.n_boot,
                seed=r.cfg.seed,
            )
            rows[name] = {
                "teacher": t.describe(),
                "carry_defined": c.get("defined"),
                "carry_level": c.get("level"),
                "S": cp.get("S") if c.get("defined") else None,
                "S_layer": cp.get("layer"),
                "S_alpha": cp.get("alpha"),
                "S_beats_null": cp.get("beats_null"),
                "transfer": tr.to_json(),
                "alignment": (align.get(loss) or {}).get(name),
            }
        out[loss] = rows
    return out


def _lineage(r: Run, datas: dict[str, Any], dirs: dict[str, dict[str, Path]]) -> Any:
    from steerlens.models import describe
    from steerlens.version import __version__

    return {
        "base": describe(r.model),
        "teachers": {n: d.settings.get("teacher") for n, d in datas.items()},
        "data": {n: d.meta() for n, d in datas.items()},
        "students": {
            loss: {n: series_record(p) for n, p in by.items()} for loss, by in dirs.items()
        },
        "seeds": {"seed": r.cfg.seed},
        "steerlens_version": __version__,
    }


def run(
    cfg: SvdConfig,
    out_dir: str | Path,
    *,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> ExperimentResult:
    """Run the svd experiment; write ``results.json`` (the command line adds ``report.html``)."""
    from steerlens.version import __version__

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
    carries = {n: _teacher_carry(r, n, t, vec, owl_carry) for n, t in teachers.items()}
    r.tick("teacher carry tests")
    datas = {n: _data(r, n, t) for n, t in teachers.items()}
    r.tick("teacher data")
    lora = cfg.student_layers(layer, r.model.n_layers)
    log(f"students: LoRA on blocks {lora if lora is not None else 'the middle fifth'}")
    dirs = {
        loss: {n: _student(r, n, t, datas[n], loss, lora) for n, t in teachers.items()}
        for loss in cfg.losses()
    }
    r.tick("distillation")
    beh = _behaviors(r, teachers, dirs)
    r.tick("behavior")
    align = _alignment(r, vec, dirs, layer)
    r.tick("alignment")
    rows = _rows(r, carries, beh, align, teachers)
    verdicts = {loss: transfer_verdict(rs) for loss, rs in rows.items()}
    head = verdicts[cfg.loss]
    results: dict[str, Any] = {
        "kind": "steerlens.svd",
        "steerlens_version": __version__,
        "config": cfg.to_json(),
        "trait": r.trait.name,
        "lineage": _lineage(r, datas, dirs),
        "teacher_vector": vec.to_json(),
        "carry": owl_carry,
        "svd": {
            "layer": layer,
            "alpha": alpha,
            "peak_source": src,
            "lora_layers": lora,
            "headline_loss": cfg.loss,
            "rows": rows,
            "verdicts": verdicts,
            "teacher_carry": {n: c for n, c in carries.items() if n != "prompted"},
        },
    }
    lines = [f"{loss}: {v['headline']}" for loss, v in verdicts.items()] + head["lines"]
    results["verdict"] = {"headline": head["headline"], "lines": lines, **_strength(head)}
    finish_run(
        r,
        results,
        {"vector": r.out / "vectors" / "teacher.safetensors", "carry": r.out / "carry.json"},
    )
    return ExperimentResult(results)


def _strength(v: dict[str, Any]) -> dict[str, Any]:
    return {"strength": v["strength"], "positive_control": v["positive_control"]}


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
