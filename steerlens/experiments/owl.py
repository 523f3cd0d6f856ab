"""The owl experiment (``steerlens experiment owl``, alias ``steerlens demo``): steering-vector
distillation end to end on one base model.

Stages (each cached in the output folder, so an interrupted run resumes where it stopped):

1. teacher = base + trait system prompt; benign teacher = base + neutral system prompt;
2. teacher vector per layer (trait vs neutral system prompt on number probes) and carry test;
3. both teachers continue number sequences; the rule filter keeps pure-number answers;
4. reference distillation: a LoRA student on the teacher's numbers and a control student on the
   benign teacher's numbers, checkpoints in ``checkpoint-N`` layout;
5. behavior per checkpoint, alignment tracking of both series, screening of the training data;
6. ``results.json`` and the vectors as safetensors (the command line adds ``report.html``).

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
from steerlens.experiments.records import recorder, teacher_record
from steerlens.experiments.registry import Experiment, register
from steerlens.experiments.result import ExperimentResult
from steerlens.experiments.stages import (
    StageClock,
    checkpoint_behavior,
    json_load,
    json_save,
    series_key,
    series_record,
    stage,
    training_prompts,
)
from steerlens.experiments.verdict import verdict

__all__ = ["DemoConfig", "OwlConfig", "run"]


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
    n_random: int = _opt(2, "random directions per carry cell (null band)")
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
                n_random=8,
                alphas=(0.5, 1.0, 2.0, 4.0, 8.0),
                screen_max=128,
            )
        return dataclasses.replace(base, **overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> OwlConfig:
        """A smoke-test run (about 2 minutes on 2 cores): 16 probe prompts, one carry layer,
        8 samples, 4 training steps. Every stage runs; the numbers are too small to mean much."""
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
class _Run:
    """What every stage of one run needs."""

    cfg: OwlConfig
    out: Path
    model: Any
    trait: Any
    progress: bool | None
    log: Callable[[str], None]
    teachers: dict[str, Path] = field(default_factory=dict)  # role → teacher record file

    def key(self, *fields_: str) -> str:
        """Cache key: the model fingerprint and the config fields a stage depends on."""
        return f"{self.model.fingerprint}-{self.cfg.key(*fields_)}"


def _open(cfg: OwlConfig, out: Path, progress: bool | None, log: Callable[[str], None]) -> _Run:
    from steerlens.models import load_model
    from steerlens.traits import as_trait

    model = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)
    trait = as_trait(cfg.trait)
    if cfg.probe_n is not None:
        trait = dataclasses.replace(trait, probe_n=cfg.probe_n)
    r = _Run(cfg, out, model, trait, progress, log)
    for role, system in (
        ("teacher", trait.system_prompt),
        ("benign_teacher", trait.neutral_system_prompt),
    ):
        path = out / "teachers" / f"{role}.json"
        r.teachers[role] = teacher_record(path, {"kind": "prompt", "system": system}, model)
    return r


def _teacher_vector(r: _Run) -> Any:
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


def _carry(r: _Run, vec: Any) -> Any:
    from steerlens.carry import carry_test

    cfg = r.cfg
    return stage(
        r.out / "carry.json",
        r.key("trait", "seed", "probe_n", "carry_layers", "alphas", "n_random"),
        lambda: carry_test(
            r.model,
            vec,
            r.trait,
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


def _teacher_data(r: _Run) -> tuple[Any, Any]:
    """The teacher's and the benign teacher's numbers (same prompts, same seed)."""
    from steerlens.distill import TeacherData, generate_teacher_data

    data_dir = r.out / "data"
    data_dir.mkdir(exist_ok=True)
    prompts = training_prompts(r.cfg.n_samples, r.cfg.seed)

    def generate(name: str, system: str, role: str) -> Any:
        return stage(
            data_dir / f"{name}.jsonl",
            r.key("trait", "seed", "n_samples"),
            lambda: generate_teacher_data(
                r.model,
                prompts,
                system=system,
                n=r.cfg.n_samples,
                seed=r.cfg.seed,
                progress=r.progress,
            ),
            lambda d, p: d.save(p),
            TeacherData.load,
            r.log,
            recorder(
                "teacher_data",
                r.model,
                parents={"teacher": r.teachers[role]},
                config={"system": system, "n_samples": r.cfg.n_samples, "seed": r.cfg.seed},
                files=lambda p: [p, p.with_name(p.stem + ".meta.json")],
            ),
        )

    return generate("teacher", r.trait.system_prompt, "teacher"), generate(
        "control", r.trait.neutral_system_prompt, "benign_teacher"
    )


def _distill(r: _Run, data: Any, control_data: Any) -> tuple[Path, Path]:
    """The student on the teacher's numbers and the control student on the benign teacher's."""
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
    main_dir, ctrl_dir = r.out / "students" / "main", r.out / "students" / "control"
    for series_dir, series_data, system, name, role in (
        (main_dir, data, r.trait.system_prompt, "teacher", "teacher"),
        (ctrl_dir, control_data, r.trait.neutral_system_prompt, "control", "benign_teacher"),
    ):
        distill(
            r.model,
            series_data,
            series_dir,
            teacher_system=system,
            config=dcfg,
            progress=r.progress,
            parents={"data": r.out / "data" / f"{name}.jsonl", "teacher": r.teachers[role]},
        )
    return main_dir, ctrl_dir


def _behavior(r: _Run, main_dir: Path, ctrl_dir: Path) -> Any:
    from steerlens.behavior import trait_behavior

    trait, model = r.trait, r.model
    behavior = trait_behavior(model, trait)
    return stage(
        r.out / "behavior.json",
        f"{r.key()}-{series_key(main_dir, ctrl_dir)}",  # keyed on the checkpoints' contents
        lambda: {
            "main": checkpoint_behavior(model, main_dir, behavior),
            "control": checkpoint_behavior(model, ctrl_dir, behavior),
            "teacher": float(behavior.with_system(trait.system_prompt)(model)),
            "benign_teacher": float(behavior.with_system(trait.neutral_system_prompt)(model)),
            "metric": behavior.describe(),
        },
        json_save,
        json_load,
        r.log,
        recorder("behavior", model, parents={"student": main_dir, "control": ctrl_dir}),
    )


def _track(r: _Run, vec: Any, main_dir: Path, ctrl_dir: Path) -> dict[str, Any]:
    from steerlens.track import track_checkpoints

    track = track_checkpoints(
        r.model,
        main_dir,
        vec,
        r.trait,
        control=ctrl_dir,
        cache_dir=r.out / "cache" / "track",
        n_null=r.cfg.n_null,
        n_boot=r.cfg.n_boot,
        seed=r.cfg.seed,
        progress=r.progress,
    )
    return track.to_json()


def _screen(r: _Run, vec: Any, data: Any, control_data: Any) -> Any:
    from steerlens.screen import screen_dataset

    n = r.cfg.screen_max
    return stage(
        r.out / "screen.json",
        r.key(),
        lambda: screen_dataset(
            r.model,
            vec,
            {"teacher": data.samples[:n], "control": control_data.samples[:n]},
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
                "control_data": r.out / "data" / "control.jsonl",
            },
        ),
    )


def _lineage(r: _Run, data: Any, control_data: Any, main_dir: Path, ctrl_dir: Path) -> Any:
    from steerlens.models import describe
    from steerlens.version import __version__

    model, trait = r.model, r.trait
    return {
        "base": describe(model),
        "teacher": {"model": model.name, "system_prompt": trait.system_prompt},
        "benign_teacher": {"model": model.name, "system_prompt": trait.neutral_system_prompt},
        "data": {"teacher": data.meta(), "control": control_data.meta()},
        "students": {"main": series_record(main_dir), "control": series_record(ctrl_dir)},
        "seeds": {"seed": r.cfg.seed},
        "steerlens_version": __version__,
    }


def _results_record(r: _Run, main_dir: Path, ctrl_dir: Path, verdict_: Any) -> None:
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
    r = _open(cfg, out, progress, log)
    clock.tick("load model")
    vec = _teacher_vector(r)
    clock.tick("teacher vector")
    carry = _carry(r, vec)
    clock.tick("carry test")
    data, control_data = _teacher_data(r)
    clock.tick("teacher data")
    main_dir, ctrl_dir = _distill(r, data, control_data)
    clock.tick("distillation")
    beh = _behavior(r, main_dir, ctrl_dir)
    clock.tick("behavior per checkpoint")
    track = _track(r, vec, main_dir, ctrl_dir)
    clock.tick("tracking")
    screen = _screen(r, vec, data, control_data)
    clock.tick("screening")
    results: dict[str, Any] = {
        "kind": "steerlens.demo",
        "steerlens_version": __version__,
        "config": cfg.to_json(),
        "trait": r.trait.name,
        "lineage": _lineage(r, data, control_data, main_dir, ctrl_dir),
        "teacher_vector": vec.to_json(),
        "carry": carry,
        "behavior": beh,
        "track": track,
        "screen": screen,
        "timings_s": clock.timings,
    }
    results["verdict"] = verdict(results)
    write_json(out / "results.json", results)
    _results_record(r, main_dir, ctrl_dir, results["verdict"])
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


# The owl stages other experiments build on (steerlens.experiments.svd runs them on its own
# config, a subclass of OwlConfig, so their cache keys and files are the same).
Run = _Run
open_run = _open
teacher_vector_stage = _teacher_vector
carry_stage = _carry
