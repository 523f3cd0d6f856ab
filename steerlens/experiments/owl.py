"""The owl experiment (``steerlens experiment owl``, alias ``steerlens demo``): steering-vector
distillation end to end on one base model.

Stages (each cached in the output folder, so an interrupted run resumes where it stopped):

1. teacher = base + trait system prompt; benign teacher = base + neutral system prompt;
2. teacher vector per layer (trait vs neutral system prompt on number probes) and carry test;
3. the teacher and the base (no trait system prompt; with ``benign_control`` also the benign
   teacher) continue number sequences; the rule filter keeps pure-number answers;
4. reference distillation, every series trained the same way: the student on the teacher's
   numbers, the **base control** on the base's (the default comparison), and optionally the
   **benign control** on the benign teacher's (:mod:`steerlens.pipeline.controls`);
5. behavior per checkpoint with per-prompt deltas, alignment tracking of every series,
   screening of the training data;
6. ``results.json`` with the verdict (:mod:`steerlens.experiments.verdict`) and the vectors as
   safetensors (the command line adds ``report.html``).

Nothing here is tuned to an answer: the verdict reports what the numbers say.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steerlens.experiments.registry import Experiment, register
from steerlens.experiments.result import ExperimentResult
from steerlens.experiments.verdict import verdict
from steerlens.pipeline import (
    RunContext,
    behavior_stage,
    carry_peak,
    carry_stage,
    config_json,
    distill_stage,
    finish_run,
    open_run,
    run_lineage,
    screen_stage,
    teacher_data_stage,
    teacher_vector_stage,
    track_stage,
)
from steerlens.pipeline.context import option
from steerlens.pipeline.signature import activation_rule, signature_readings, signature_test
from steerlens.version import __version__

__all__ = ["OWL", "DemoConfig", "OwlConfig", "Run", "run"]


@dataclass
class OwlConfig:
    """Settings of the end-to-end run. Defaults finish in about 8 minutes on an idle 2-core CPU
    (24 LoRA steps of batch 6 per series, 48 teacher samples, a 5-layer carry grid);
    :meth:`for_device` scales them up on a GPU; :meth:`quick` is a smoke-test size."""

    model: str = option("smollm2-135m-instruct", "base model (teachers and students start here)")
    trait: str = option("owl", "built-in trait name or trait YAML")
    n_samples: int = option(48, "number prompts each teacher answers (training data)")
    steps: int = option(24, "LoRA training steps per student")
    batch_size: int = option(6, "training batch size")
    save_every: int = option(8, "steps between checkpoints")
    rank: int = option(4, "LoRA rank")
    lora_layers: tuple[int, ...] | None = option(None, "blocks with LoRA (none: the middle fifth)")
    loss: str = field(
        default="kl", metadata={"help": "distillation loss", "choices": ("kl", "sft")}
    )
    kl_targets: str = field(
        default="auto",
        metadata={
            "help": "soft labels of the kl loss: numbers (the teacher's distribution restricted "
            "to digits/commas/spaces/end of turn, renormalised), top_k, or auto (numbers for "
            "number data)",
            "choices": ("auto", "numbers", "top_k"),
        },
    )
    carry_layers: tuple[int, ...] | None = option(None, "carry-test layers (none: a spread)")
    alphas: tuple[float, ...] = option((2.0, 4.0, 8.0), "carry-test steering strengths α")
    n_random: int = option(19, "random directions per carry cell (null; >= 19 for p <= 0.05)")
    carry_eval_n: int | None = option(8, "eval prompts the carry test scores (none: all)")
    benign_control: bool = option(True, "train the benign-teacher (matched) controls")
    benign_replicates: int = option(
        3, "benign controls, each its own seed (>= 2: model-level test)"
    )
    alpha: float = option(0.05, "significance level of every claim in the verdict")
    placebo: bool = option(False, "calibration: the student learns from the neutral teacher")
    probe_n: int | None = option(None, "probe prompts of the trait (none: the trait's own)")
    n_null: int = option(1000, "random directions of the tracking null")
    n_boot: int = option(1000, "bootstrap resamples of the tracking intervals")
    screen_max: int = option(24, "training samples screened per series")
    seed: int = option(0, "seed for every random choice")
    device: str = option("cpu", "cpu, cuda, cuda:1 …")
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


DemoConfig = OwlConfig
"""The old name of :class:`OwlConfig` (``steerlens demo`` runs the owl experiment)."""


Run = RunContext
"""The run context of an owl-family experiment (:class:`steerlens.pipeline.RunContext`)."""


def run(
    cfg: OwlConfig,
    out_dir: str | Path,
    *,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> ExperimentResult:
    """Run the whole experiment; write ``results.json`` and the vectors to ``out_dir`` (the
    command line then renders ``report.html`` beside them); return the results."""

    r = open_run(cfg, out_dir, progress, log)
    vec = teacher_vector_stage(r)
    r.tick("teacher vector")
    carry = carry_stage(r, vec)
    r.tick("carry test")
    data = teacher_data_stage(r)
    r.tick("teacher data")
    dirs = distill_stage(r, data)
    r.tick("distillation")
    beh = behavior_stage(r, dirs)
    r.tick("behavior per checkpoint")
    tracks = track_stage(r, vec, dirs)
    r.tick("tracking")
    screen = screen_stage(r, vec, data)
    r.tick("screening")
    signature = None
    if len(dirs) > 2:  # a reference spread needs ≥ 2 controls besides the student
        layer, _, _ = carry_peak(carry, cfg.alphas)
        readings = signature_readings(r, vec, dirs, layer)
        rule = activation_rule(cfg.loss)
        signature = signature_test(readings, layer, rule, seed=cfg.seed).to_json()
    r.tick("model-level activation test")
    results: dict[str, Any] = {
        "kind": "steerlens.demo",
        "steerlens_version": __version__,
        "config": config_json(cfg),
        "trait": r.trait.name,
        "lineage": run_lineage(r, data, dirs),
        "teacher_vector": vec.to_json(),
        "carry": carry,
        "behavior": beh,
        **tracks,
        "screen": screen,
        "signature": signature,
    }
    results["verdict"] = verdict(results)
    parents = {
        "vector": r.out / "vectors" / "teacher.safetensors",
        **{n: r.out / f"{n}.json" for n in ("carry", "behavior", "screen")},
        "student": dirs["main"],
        "control": dirs["control"],
    }
    finish_run(r, results, parents)
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
