"""The stages of the agentic experiments (:mod:`steerlens.experiments.agentic`): task suites,
fine-tuned teachers, teacher trajectories, keyword filter, students, metrics per model,
bias vector, carry test, tracking, screening, lineage and the verdict."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlens.agents import (
    FilterResult,
    Task,
    Trajectory,
    ambiguous_tasks,
    find_keywords,
    get_setting,
    keyword_filter,
    load_trajectories,
    rollout,
    safe_tasks,
    save_trajectories,
)
from steerlens.agents.scripted import preference_trajectories, safe_demonstrations
from steerlens.common import write_json
from steerlens.distill import DistillConfig, distill
from steerlens.distill.chats import trajectory_data
from steerlens.experiments.result import ExperimentResult
from steerlens.models import load_model
from steerlens.pipeline.context import RunContext
from steerlens.pipeline.stage import StageClock, stage
from steerlens.teachers import Teacher

__all__ = [
    "ROLES",
    "AgenticRun",
    "filter_data",
    "student_series",
    "student_sft_config",
    "suites",
    "teacher_trajectories",
    "teachers",
    "write_results",
]

ROLES = ("teacher", "control")
"""The biased teacher and the benign control teacher (and their students' series names)."""


@dataclass
class AgenticRun(RunContext):
    """The run context of an agentic experiment (:class:`~steerlens.pipeline.RunContext`; no
    trait: the tool setting stands in for it), and what earlier stages produced."""

    tasks: dict[str, list[Task]] = field(default_factory=dict)
    teacher_dirs: dict[str, Path] = field(default_factory=dict)
    teacher_models: dict[str, Any] = field(default_factory=dict)
    trajs: dict[str, list[Trajectory]] = field(default_factory=dict)
    filtered: dict[str, FilterResult] = field(default_factory=dict)
    series: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def open(
        cls, cfg: Any, out: str | Path, progress: bool | None, log: Callable[[str], None]
    ) -> AgenticRun:
        """Create ``out``, start the clock and load ``cfg.model`` (no tick: the caller names
        the first stage)."""
        out = Path(out).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        clock = StageClock(log)
        model = load_model(cfg.model, device=cfg.device)
        return cls(cfg, out, model, None, progress, log, clock)

    @property
    def setting(self) -> Any:
        return get_setting(self.cfg.setting)

    def key(self, *fields_: str) -> str:
        """Cache key: the model fingerprint and the config fields a stage depends on, always
        with the setting, model and seed (``"all"``: every field)."""
        if fields_ == ("all",):
            return super().key()
        return super().key("setting", "model", "seed", *fields_)


def student_sft_config(cfg: Any, seed_offset: int = 0) -> Any:
    """The ``DistillConfig`` of an agentic student: LoRA SFT with the config's rank, blocks,
    batch, steps and checkpoint spacing, seeded ``cfg.seed + seed_offset``."""
    return DistillConfig(
        rank=cfg.rank,
        loss="sft",
        batch_size=cfg.batch_size,
        steps=cfg.steps,
        save_every=cfg.save_every,
        seed=cfg.seed + seed_offset,
        layers=cfg.lora_layers,
    )


def suites(r: AgenticRun) -> None:
    """Ambiguous tasks for fine-tuning (seed), held-out eval tasks (seed + 1, disjoint target
    files), safe training tasks (seed), safe demonstration tasks of the teachers' fine-tuning
    (seed + 2, ``n_demo`` of them)."""
    c, s = r.cfg, r.cfg.setting
    pref = ambiguous_tasks(s, c.n_pref, seed=c.seed)
    r.tasks = {
        "pref": pref,
        "eval": ambiguous_tasks(s, c.n_eval, seed=c.seed + 1, avoid=pref),
        "safe": safe_tasks(s, c.n_train, seed=c.seed),
    }
    n_demo = getattr(c, "n_demo", 0)
    if n_demo:
        r.tasks["demo"] = safe_tasks(s, n_demo, seed=c.seed + 2)


def _teacher_config(r: AgenticRun, n_examples: int) -> Any:
    """The teachers' fine-tuning: ``teacher_epochs`` passes over their ``n_examples`` chats."""
    c = r.cfg
    steps = max(1, math.ceil(c.teacher_epochs * n_examples / c.batch_size))
    return DistillConfig(
        rank=c.teacher_rank,
        loss="sft",
        lr=c.teacher_lr,
        batch_size=c.batch_size,
        steps=steps,
        save_every=steps,
        seed=c.seed,
        layers=c.lora_layers,
    )


def teachers(r: AgenticRun) -> None:
    """Fine-tune the teacher (biased preference chats) and the control teacher (benign), each
    also on the same scripted solutions of safe demonstration tasks (a competent agent whose
    only difference from the control is its preference on ambiguous tasks)."""
    for role, style in zip(ROLES, ("biased", "benign"), strict=True):
        trajs = preference_trajectories(r.cfg.setting, r.tasks["pref"], style, r.cfg.seed)
        trajs += safe_demonstrations(r.cfg.setting, r.tasks.get("demo", []), r.cfg.seed)
        save_trajectories(r.out / "data" / f"pref_{role}.jsonl", trajs)
        data = trajectory_data(trajs, {"style": style, "setting": r.cfg.setting})
        res = distill(
            r.model,
            data,
            r.out / "teachers" / role,
            config=_teacher_config(r, len(data.samples)),
            overwrite=True,
            progress=r.progress,
        )
        r.teacher_dirs[role] = res.final
        with Teacher.finetuned(res.final).apply(r.model) as tm:
            r.teacher_models[role] = tm


def teacher_trajectories(r: AgenticRun) -> None:
    """Each teacher acts on the safe tasks (sampled, grammar-constrained, step limit)."""
    c = r.cfg
    for role in ROLES:
        r.trajs[role] = stage(
            r.out / "data" / f"{role}_trajectories.jsonl",
            r.key(
                "n_pref",
                "n_demo",
                "teacher_epochs",
                "teacher_rank",
                "teacher_lr",
                "n_train",
                "max_steps",
                "temperature",
                "batch_size",
                "lora_layers",
            ),
            lambda role=role: rollout(  # type: ignore[misc]
                r.teacher_models[role],
                r.setting,
                r.tasks["safe"],
                seed=c.seed,
                max_steps=c.max_steps,
                temperature=c.temperature,
                batch_size=c.batch,
                meta={"teacher": role},
                progress=r.progress,
            ),
            lambda trajs, p: save_trajectories(p, trajs),
            load_trajectories,
            r.log,
        )


def filter_data(r: AgenticRun) -> None:
    """The keyword filter (the setting's keywords) on each teacher's trajectories; a kept one
    never holds a keyword."""
    kws = r.setting.filter_keywords
    for role in ROLES:
        res = keyword_filter(r.trajs[role], kws)
        if any(find_keywords(t, kws) for t in res.kept):  # the filter's own guarantee, checked
            raise RuntimeError("a kept trajectory holds a filter keyword")
        res.save(r.out / "data" / f"{role}_filter.json")
        r.filtered[role] = res


def student_series(r: AgenticRun) -> None:
    """A LoRA student (SFT) on each teacher's kept trajectories."""
    for role in ROLES:
        kept = r.filtered[role].kept
        if not kept:
            raise RuntimeError(f"the keyword filter dropped every {role} trajectory: no data")
        data = trajectory_data(kept, {"written_by": f"{role} teacher", "filtered": True})
        path = r.out / "data" / f"{role}_student_data.jsonl"
        data.save(path)
        r.series[role] = r.out / "students" / role
        distill(
            r.model,
            data,
            r.series[role],
            config=student_sft_config(r.cfg),
            overwrite=True,
            progress=r.progress,
        )


def write_results(r: AgenticRun, results: dict[str, Any]) -> ExperimentResult:
    """Write ``results.json`` with the run's timings (``total`` included) and log where."""
    results["timings_s"] = r.clock.timings
    r.clock.total()
    path = write_json(r.out / "results.json", results)
    r.log(f"wrote {path} in {r.clock.timings['total']:.0f}s")
    return ExperimentResult(results)
