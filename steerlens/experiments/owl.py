"""The owl experiment (``steerlens experiment owl``, alias ``steerlens demo``): steering-vector
distillation end to end on one base model.

Stages (each cached in the output folder, so an interrupted run resumes where it stopped):

1. teacher = base + trait system prompt; benign teacher = base + neutral system prompt;
2. teacher vector per layer (trait vs neutral system prompt on number probes) and carry test;
3. the teacher and the base (no trait system prompt; with ``benign_control`` also the benign
   teacher) continue number sequences; the rule filter keeps pure-number answers;
4. reference distillation, every series trained the same way: the student on the teacher's
   numbers, the **base control** on the base's (the default comparison), and optionally the
   **benign control** on the benign teacher's (:mod:`steerlens.experiments.controls`);
5. behavior per checkpoint with per-prompt deltas, alignment tracking of every series,
   screening of the training data;
6. ``results.json`` with the verdict (:mod:`steerlens.experiments.verdict`) and the vectors as
   safetensors (the command line adds ``report.html``).

Nothing here is tuned to an answer: the verdict reports what the numbers say.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlens.common import sha256_bytes, write_json
from steerlens.experiments.controls import (
    SeriesPlan,
    behavior_deltas,
    series_plan,
    series_scores,
)
from steerlens.experiments.records import recorder, teacher_record
from steerlens.experiments.registry import Experiment, register
from steerlens.experiments.result import ExperimentResult
from steerlens.experiments.stages import (
    StageClock,
    json_load,
    json_save,
    series_key,
    series_record,
    stage,
    training_prompts,
)
from steerlens.experiments.verdict import verdict

__all__ = ["DemoConfig", "OwlConfig", "Run", "open_run", "run", "teacher_data_stage"]


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class OwlConfig:
    """Settings of the end-to-end run. Defaults finish in about 8 minutes on an idle 2-core CPU
    (24 LoRA steps of batch 6 per series, 48 teacher samples, a 5-layer carry grid);
    :meth:`for_device` scales them up on a GPU; :meth:`quick` is a smoke-test size."""

    model: str = _opt("smollm2-135m-instruct", "base model (teachers and students start here)")
    trait: str = _opt("owl", "built-in trait name or trait YAML")
    n_samples: int = _opt(48, "number prompts each teacher answers (training data)")
    steps: int = _opt(24, "LoRA training steps per student")
    batch_size: int = _opt(6, "training batch size")
    save_every: int = _opt(8, "steps between checkpoints")
    rank: int = _opt(4, "LoRA rank")
    lora_layers: tuple[int, ...] | None = _opt(None, "blocks with LoRA (none: the middle fifth)")
    loss: str = field(
        default="kl", metadata={"help": "distillation loss", "choices": ("kl", "sft")}
    )
    carry_layers: tuple[int, ...] | None = _opt(None, "carry-test layers (none: a spread)")
    alphas: tuple[float, ...] = _opt((2.0, 4.0, 8.0), "carry-test steering strengths α")
    n_random: int = _opt(19, "random directions per carry cell (null; >= 19 for p <= 0.05)")
    carry_eval_n: int | None = _opt(8, "eval prompts the carry test scores (none: all)")
    benign_control: bool = _opt(True, "train the benign-teacher (matched) controls")
    benign_replicates: int = _opt(3, "benign controls, each its own seed (>= 2: model-level test)")
    alpha: float = _opt(0.05, "significance level of every claim in the verdict")
    placebo: bool = _opt(False, "calibration: the student learns from the neutral teacher")
    probe_n: int | None = _opt(None, "probe prompts of the trait (none: the trait's own)")
    n_null: int = _opt(1000, "random directions of the tracking null")
    n_boot: int = _opt(1000, "bootstrap resamples of the tracking intervals")
    screen_max: int = _opt(24, "training samples screened per series")
    seed: int = _opt(0, "seed for every random choice")
    device: str = _opt("cpu", "cpu, cuda, cuda:1 …")
    dtype: str = field(
        default="auto",
        metadata={
            "help": "precision: auto (bfloat16 where the hardware multiplies it natively, "
            "else float32), float32, bfloat16, autocast",
            "choices": ("auto", "float32", "bfloat16", "autocast"),
        },
    )
    extra: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "free-form notes kept in results", "cli": False}
    )

    @classmethod
    def for_device(cls, device: str | None = None, **overrides: Any) -> OwlConfig:
        import torch

        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        base = cls(device=dev)
        if dev.startswith("cuda"):
            base = dataclasses.replace(
                base,
                n_samples=256,
                steps=200,
                batch_size=16,
                save_every=25,
                n_random=19,
                carry_eval_n=None,
                alphas=(0.5, 1.0, 2.0, 4.0, 8.0),
                screen_max=128,
            )
        return dataclasses.replace(base, **overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> OwlConfig:
        """A smoke-test run (about 2 minutes on 2 cores): 16 probe prompts, one carry layer,
        8 samples, 4 training steps, 2 benign replicates. Every stage runs; the numbers are too small to mean much
        (one random direction per carry cell: the carry null cannot reach p ≤ 0.05, so the
        carry test reads "not carried" whatever the vector)."""
        base = cls(
            n_samples=8,
            steps=4,
            save_every=2,
            alphas=(4.0,),
            n_random=1,
            probe_n=16,
            carry_layers=(15,),
            n_null=1000,
            n_boot=200,
            screen_max=6,
            benign_replicates=2,
        )
        return dataclasses.replace(base, **overrides)

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    def key(self, *fields_: str) -> str:
        d = self.to_json()
        sub = {k: d[k] for k in fields_} if fields_ else d
        return sha256_bytes(json.dumps(sub, sort_keys=True))[:12]


DemoConfig = OwlConfig
"""The old name of :class:`OwlConfig` (``steerlens demo`` runs the owl experiment)."""


@dataclass
class Run:
    """What every stage of one run needs (other experiments, e.g. svd, run the owl stages on
    a subclass of OwlConfig, so their cache keys and files are the same)."""

    cfg: OwlConfig
    out: Path
    model: Any
    trait: Any
    progress: bool | None
    log: Callable[[str], None]
    plan: list[SeriesPlan]
    teachers: dict[str, Path] = field(default_factory=dict)  # role → teacher record file

    def key(self, *fields_: str) -> str:
        """Cache key: the model fingerprint and the config fields a stage depends on."""
        return f"{self.model.fingerprint}-{self.cfg.key(*fields_)}"


def open_run(cfg: OwlConfig, out: Path, progress: bool | None, log: Callable[[str], None]) -> Run:
    from steerlens.models import load_model
    from steerlens.traits import as_trait

    model = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    trait = as_trait(cfg.trait)
    if cfg.probe_n is not None:
        trait = dataclasses.replace(trait, probe_n=cfg.probe_n)
    r = Run(
        cfg,
        out,
        model,
        trait,
        progress,
        log,
        series_plan(trait, cfg.benign_control, cfg.placebo, cfg.benign_replicates),
    )
    for role, desc in (
        ("teacher", {"kind": "prompt", "system": trait.system_prompt}),
        ("benign_teacher", {"kind": "prompt", "system": trait.neutral_system_prompt}),
        ("base", {"kind": "base", "system": None}),
    ):
        path = out / "teachers" / f"{role}.json"
        r.teachers[role] = teacher_record(path, desc, model)
    return r


def teacher_vector_stage(r: Run) -> Any:
    from steerlens.extract import teacher_vector
    from steerlens.vectors import SteeringVector

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
        recorder("vector", r.model, parents=r.teachers, config=r.cfg.to_json()),
    )


def carry_stage(r: Run, vec: Any) -> Any:
    """The carry test of the teacher vector on the first ``carry_eval_n`` eval prompts."""
    from steerlens.behavior import trait_behavior
    from steerlens.carry import carry_test

    cfg = r.cfg
    metric: Any = None
    if cfg.carry_eval_n is not None:
        beh = trait_behavior(r.model, r.trait)
        metric = dataclasses.replace(beh, prompts=beh.prompts[: cfg.carry_eval_n])
    return stage(
        r.out / "carry.json",
        r.key("trait", "seed", "probe_n", "carry_layers", "alphas", "n_random", "carry_eval_n"),
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
        ).to_json(),
        json_save,
        json_load,
        r.log,
        recorder("carry", r.model, parents={"vector": r.out / "vectors" / "teacher.safetensors"}),
    )


def teacher_data_stage(r: Run) -> dict[str, Any]:
    """Per series of the plan, the numbers its data source wrote (same prompts, same seed)."""
    from steerlens.distill import TeacherData, generate_teacher_data

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


def _distill(r: Run, data: dict[str, Any]) -> dict[str, Path]:
    """Every series of the plan, trained the same way on its own data."""
    from steerlens.distill import DistillConfig, distill

    cfg = r.cfg
    dcfg = DistillConfig(
        rank=cfg.rank,
        layers=cfg.lora_layers,
        loss=cfg.loss,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        save_every=cfg.save_every,
        seed=cfg.seed,
    )
    dirs = {sp.name: r.out / "students" / sp.name for sp in r.plan}
    for sp in r.plan:
        distill(
            r.model,
            data[sp.name],
            dirs[sp.name],
            teacher_system=sp.system,
            config=dataclasses.replace(dcfg, seed=cfg.seed + sp.seed_offset),
            progress=r.progress,
            parents={"data": r.out / "data" / f"{sp.file}.jsonl", "teacher": r.teachers[sp.source]},
        )
    return dirs


def _behavior(r: Run, dirs: dict[str, Path]) -> Any:
    """B per checkpoint of every series, per-prompt scores, and the deltas with CIs."""
    from steerlens.behavior import trait_behavior

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


def _track(r: Run, vec: Any, dirs: dict[str, Path]) -> dict[str, Any]:
    """The student against the base control; with the benign control, a second track of the
    student against it (the student's rows come from the row cache)."""
    from steerlens.track import track_checkpoints

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


def _screen(r: Run, vec: Any, data: dict[str, Any]) -> Any:
    from steerlens.screen import screen_dataset

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


def _lineage(r: Run, data: dict[str, Any], dirs: dict[str, Path]) -> Any:
    from steerlens.models import describe
    from steerlens.version import __version__

    model, trait = r.model, r.trait
    return {
        "base": describe(model),
        "teacher": {"model": model.name, "system_prompt": trait.system_prompt},
        "benign_teacher": {"model": model.name, "system_prompt": trait.neutral_system_prompt},
        "data": {k: d.meta() for k, d in data.items()},
        "data_source": {sp.name: sp.system for sp in r.plan},
        "students": {k: series_record(d) for k, d in dirs.items()},
        "seeds": {"seed": r.cfg.seed},
        "steerlens_version": __version__,
    }


def _results_record(r: Run, main_dir: Path, ctrl_dir: Path, verdict_: Any) -> None:
    """The record of ``results.json``: made from every stage's artifact."""
    parents = {
        "vector": r.out / "vectors" / "teacher.safetensors",
        **{n: r.out / f"{n}.json" for n in ("carry", "behavior", "screen")},
        "student": main_dir,
        "control": ctrl_dir,
    }
    cfg = {"trait": r.trait.name, "verdict": verdict_.get("strength"), "run": r.cfg.to_json()}
    recorder("results", r.model, parents=parents, config=cfg)(r.out / "results.json")


def run(
    cfg: OwlConfig,
    out_dir: str | Path,
    *,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> ExperimentResult:
    """Run the whole experiment; write ``results.json`` and the vectors to ``out_dir`` (the
    command line then renders ``report.html`` beside them); return the results."""
    from steerlens.version import __version__

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    clock = StageClock(log)
    r = open_run(cfg, out, progress, log)
    clock.tick("load model")
    vec = teacher_vector_stage(r)
    clock.tick("teacher vector")
    carry = carry_stage(r, vec)
    clock.tick("carry test")
    data = teacher_data_stage(r)
    clock.tick("teacher data")
    dirs = _distill(r, data)
    clock.tick("distillation")
    beh = _behavior(r, dirs)
    clock.tick("behavior per checkpoint")
    tracks = _track(r, vec, dirs)
    clock.tick("tracking")
    screen = _screen(r, vec, data)
    clock.tick("screening")
    results: dict[str, Any] = {
        "kind": "steerlens.demo",
        "steerlens_version": __version__,
        "config": cfg.to_json(),
        "trait": r.trait.name,
        "lineage": _lineage(r, data, dirs),
        "teacher_vector": vec.to_json(),
        "carry": carry,
        "behavior": beh,
        **tracks,
        "screen": screen,
        "timings_s": clock.timings,
    }
    results["verdict"] = verdict(results)
    write_json(out / "results.json", results)
    _results_record(r, dirs["main"], dirs["control"], results["verdict"])
    log(f"wrote {out / 'results.json'} in {clock.total():.0f}s")
    return ExperimentResult(results)


OWL = register(
    Experiment(
        name="owl",
        config=OwlConfig,
        run=run,
        description="the whole experiment on the embedded model (owl trait), with a report",
        default_out="runs/owl",
    ),
    replace=True,  # a module reload (notebook autoreload) registers it again
)
"""The registered owl experiment."""
