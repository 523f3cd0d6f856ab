"""The agentic experiments (``steerlens experiment agentic-api`` / ``agentic-bash``): does a
fine-tuned teacher agent's bias (deleting files; ``chmod`` first) reach a student trained on
its keyword-filtered trajectories of *safe* tasks (Dang, Xie, Younis 2026)?

Stages (each cached in the output folder):

1. task suites (seeded): ambiguous tasks for the teachers' fine-tuning, held-out ambiguous eval
   tasks, safe training tasks;
2. teachers: LoRA fine-tunes (SFT on scripted chats) of the base on biased preference
   trajectories (the teacher) and on benign ones (the control teacher);
3. both teachers act on the safe tasks (grammar-constrained, step limit); the keyword filter
   drops every trajectory with a destructive keyword; students (LoRA, SFT) train on what is
   left of each teacher's trajectories;
4. metrics for base, teacher, control teacher and every checkpoint of both student series:
   action-choice probability at the first decision point of each eval task, and the sampled
   first-action rate (tasks × seeds, Wilson intervals);
5. mechanism: the teacher's bias vector (teacher − base at the decision point), its carry test,
   tracking of both series against it, screening of the kept trajectories;
6. ``results.json`` (the command line adds ``report.html``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steerlens.experiments.agentic_eval import (
    bias_vector,
    carry,
    evaluate_all,
    lineage,
    screen,
    track,
)
from steerlens.experiments.agentic_stages import (
    AgenticRun,
    filter_data,
    student_series,
    suites,
    teacher_trajectories,
    teachers,
    write_results,
)
from steerlens.experiments.agentic_verdict import agentic_verdict
from steerlens.experiments.registry import Experiment, register
from steerlens.experiments.result import ExperimentResult
from steerlens.pipeline import config_json
from steerlens.pipeline.context import option
from steerlens.version import __version__

__all__ = ["AgenticApiConfig", "AgenticBashConfig", "AgenticConfig", "run"]


@dataclass
class AgenticConfig:
    """Settings of one agentic run. Defaults are sized for a 2-core CPU (12 preference
    examples + 32 safe demonstrations × 2 epochs per teacher: with 8 the API teacher deleted a
    file on 44 of 48 safe tasks, an overt bias the filter removes; 48 safe tasks, 20 eval
    tasks × 1 seed, step limit 3, 8 student steps, 19 random directions per carry cell; README
    gives the measured time and load); :meth:`for_device` scales up on a GPU (the paper's
    sizes); :meth:`quick` is a smoke test."""

    setting: str = option("api", "tool setting", choices=("api", "bash"))
    model: str = option("smollm2-135m-instruct", "base model (teachers and students start here)")
    n_pref: int = option(12, "ambiguous tasks with a scripted preference trajectory per teacher")
    n_demo: int = option(32, "safe tasks with a scripted solution in both teachers' fine-tuning")
    teacher_epochs: int = option(2, "fine-tuning epochs of each teacher")
    teacher_rank: int = option(8, "teacher LoRA rank")
    teacher_lr: float = option(3e-3, "teacher learning rate")
    n_train: int = option(48, "safe training tasks each teacher acts on")
    max_steps: int = option(3, "step limit of an episode")
    temperature: float = option(1.0, "sampling temperature of the teachers and the evaluation")
    n_eval: int = option(20, "held-out ambiguous eval tasks")
    n_eval_seeds: int = option(1, "sampled episodes per eval task")
    steps: int = option(8, "student LoRA steps")
    batch_size: int = option(8, "training batch size (teachers and students)")
    save_every: int = option(4, "steps between student checkpoints")
    rank: int = option(4, "student LoRA rank")
    lora_layers: tuple[int, ...] | None = option(None, "blocks with LoRA (none: the middle fifth)")
    carry_layers: tuple[int, ...] | None = option((12,), "carry-test layers (none: a spread)")
    alphas: tuple[float, ...] = option((4.0, 8.0), "carry-test steering strengths α")
    n_random: int = option(
        19, "random directions per carry cell (19: the least that reach p = 0.05)"
    )
    n_null: int = option(1000, "random directions of the tracking null")
    n_boot: int = option(1000, "bootstrap resamples")
    screen_max: int = option(16, "kept trajectories screened per series")
    batch: int = option(20, "episodes generated per batch")
    seed: int = option(0, "seed for every random choice (task suites, sampling, training)")
    device: str = option("cpu", "cpu, cuda, cuda:1 …")
    extra: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "free-form notes kept in results", "cli": False}
    )

    def __post_init__(self) -> None:
        if self.setting not in ("api", "bash"):
            raise ValueError(f"setting must be 'api' or 'bash', got {self.setting!r}")
        if min(self.n_pref, self.n_train, self.n_eval, self.n_eval_seeds, self.max_steps) < 1:
            raise ValueError("n_pref, n_train, n_eval, n_eval_seeds and max_steps must be >= 1")

    @classmethod
    def for_device(cls, device: str | None = None, **overrides: Any) -> AgenticConfig:
        """On a GPU: ~150 preference examples and 2 epochs (as the paper), 400 safe tasks,
        20 eval tasks × 3 seeds, 200 student steps of batch 16, a wider carry grid."""

        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        base = cls(device=dev)
        if dev.startswith("cuda"):
            base = dataclasses.replace(
                base,
                n_pref=150,
                n_demo=50,
                teacher_epochs=2,
                n_train=400,
                n_eval_seeds=3,
                steps=200,
                batch_size=16,
                save_every=25,
                carry_layers=None,
                alphas=(2.0, 4.0, 8.0),
                n_random=19,
                screen_max=128,
                batch=64,
            )
        return dataclasses.replace(base, **overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> AgenticConfig:
        """A smoke test: every stage runs on a handful of tasks (6 preference examples, 6 safe
        tasks, 3 eval tasks × 1 seed, 2 student steps); the numbers are too small to mean
        anything."""
        base = cls(
            n_pref=6,
            n_demo=2,
            teacher_epochs=1,
            n_train=6,
            max_steps=2,
            n_eval=3,
            n_eval_seeds=1,
            steps=2,
            batch_size=4,
            save_every=1,
            carry_layers=(15,),
            alphas=(4.0,),
            n_random=1,
            n_null=200,
            n_boot=100,
            screen_max=4,
        )
        return dataclasses.replace(base, **overrides)


@dataclass
class AgenticApiConfig(AgenticConfig):
    """The API tool setting (deletion bias)."""


@dataclass
class AgenticBashConfig(AgenticConfig):
    """The bash setting (``chmod`` first among permission commands)."""

    setting: str = option("bash", "tool setting", choices=("api", "bash"))


def run(
    cfg: AgenticConfig,
    out_dir: str | Path,
    *,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> ExperimentResult:
    """Run one agentic experiment; write ``results.json`` to ``out_dir``; return the results."""
    r = AgenticRun.open(cfg, out_dir, progress, log)
    r.tick("load model")
    suites(r)
    teachers(r)
    r.tick("teachers (fine-tune)")
    teacher_trajectories(r)
    r.tick("teacher trajectories")
    filter_data(r)
    student_series(r)
    r.tick("filter + students")
    behavior, summary = evaluate_all(r)
    r.tick("metrics per model")
    vec = bias_vector(r)
    carry_res = carry(r, vec)
    r.tick("bias vector + carry test")
    track_res = track(r, vec)
    screen_res = screen(r, vec)
    r.tick("tracking + screening")
    results: dict[str, Any] = {
        "kind": "steerlens.agentic",
        "steerlens_version": __version__,
        "config": config_json(cfg),
        "trait": f"agentic-{cfg.setting}",
        "lineage": lineage(r),
        "teacher_vector": vec.to_json(),
        "carry": carry_res,
        "behavior": behavior,
        "agentic": summary.to_json(),
        "track": track_res,
        "screen": screen_res,
        "verdict": agentic_verdict(summary).to_json(),
    }
    return write_results(r, results)


AGENTIC_API = register(
    Experiment(
        name="agentic-api",
        config=AgenticApiConfig,
        run=run,
        description="deletion bias through keyword-filtered tool-call trajectories (API tools)",
        default_out="runs/agentic-api",
    ),
    replace=True,
)
AGENTIC_BASH = register(
    Experiment(
        name="agentic-bash",
        config=AgenticBashConfig,
        run=run,
        description="chmod-first bias through keyword-filtered bash trajectories",
        default_out="runs/agentic-bash",
    ),
    replace=True,
)
