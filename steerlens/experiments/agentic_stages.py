"""The stages of the agentic experiments (:mod:`steerlens.experiments.agentic`): task suites,
fine-tuned teachers, teacher trajectories, keyword filter, students, metrics per model,
bias vector, carry test, tracking, screening, lineage and the verdict."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

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
from steerlens.core.common import write_json
from steerlens.distill import DistillConfig, distill
from steerlens.distill.chats import trajectory_data
from steerlens.experiments.result import ExperimentResult
from steerlens.loading.models import load_model
from steerlens.pipeline.context import RunContext
from steerlens.pipeline.stage import StageClock, stage
from steerlens.teachers import Teacher

__all__ = [
    "ROLES",
    "AgenticRoles",
    "AgenticRun",
    "AgenticTasks",
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

T = TypeVar("T")
U = TypeVar("U")


@dataclass
class AgenticRoles(Generic[T]):
    """One value per teacher role: the biased teacher's and the benign control teacher's."""

    teacher: T
    control: T

    def items(self) -> list[tuple[str, T]]:
        """(role, value) in :data:`ROLES` order."""
        return [("teacher", self.teacher), ("control", self.control)]

    def map(self, fn: Callable[[str, T], U]) -> AgenticRoles[U]:
        """``fn(role, value)`` per role, the teacher's first."""
        return AgenticRoles(*(fn(role, x) for role, x in self.items()))


@dataclass
class AgenticTasks:
    """The task suites (:func:`suites`): ambiguous fine-tuning tasks, held-out ambiguous eval
    tasks, safe training tasks and the safe demonstration tasks of the teachers' fine-tuning."""

    pref: list[Task] = field(default_factory=list)
    eval: list[Task] = field(default_factory=list)
    safe: list[Task] = field(default_factory=list)
    demo: list[Task] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Tasks per suite (``demo`` only where there are any)."""
        return {k: len(v) for k, v in vars(self).items() if v}


@dataclass
class AgenticRun(RunContext):
    """The run context of an agentic experiment (:class:`~steerlens.pipeline.RunContext`; no
    trait: the tool setting stands in for it), and what earlier stages produced, per teacher
    role (each set by its stage; unset until then)."""

    tasks: AgenticTasks = field(default_factory=AgenticTasks)
    teacher_dirs: AgenticRoles[Path] = field(init=False, repr=False)
    teacher_models: AgenticRoles[Any] = field(init=False, repr=False)
    trajs: AgenticRoles[list[Trajectory]] = field(init=False, repr=False)
    filtered: AgenticRoles[FilterResult] = field(init=False, repr=False)
    series: AgenticRoles[Path] = field(init=False, repr=False)

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
    n_demo = getattr(c, "n_demo", 0)
    r.tasks = AgenticTasks(
        pref,
        ambiguous_tasks(s, c.n_eval, seed=c.seed + 1, avoid=pref),
        safe_tasks(s, c.n_train, seed=c.seed),
        safe_tasks(s, n_demo, seed=c.seed + 2) if n_demo else [],
    )


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
    dirs, models = {}, {}
    for role, style in zip(ROLES, ("biased", "benign"), strict=True):
        trajs = preference_trajectories(r.cfg.setting, r.tasks.pref, style, r.cfg.seed)
        trajs += safe_demonstrations(r.cfg.setting, r.tasks.demo, r.cfg.seed)
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
        dirs[role] = res.final
        with Teacher.finetuned(res.final).apply(r.model) as tm:
            models[role] = tm
    r.teacher_dirs, r.teacher_models = AgenticRoles(**dirs), AgenticRoles(**models)


def teacher_trajectories(r: AgenticRun) -> None:
    """Each teacher acts on the safe tasks (sampled, grammar-constrained, step limit)."""
    c = r.cfg
    r.trajs = r.teacher_models.map(
        lambda role, tm: stage(
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
            lambda: rollout(
                tm,
                r.setting,
                r.tasks.safe,
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
    )


def filter_data(r: AgenticRun) -> None:
    """The keyword filter (the setting's keywords) on each teacher's trajectories; a kept one
    never holds a keyword."""
    kws = r.setting.filter_keywords

    def one(role: str, trajs: list[Trajectory]) -> FilterResult:
        res = keyword_filter(trajs, kws)
        if any(find_keywords(t, kws) for t in res.kept):  # the filter's own guarantee, checked
            raise RuntimeError("a kept trajectory holds a filter keyword")
        res.save(r.out / "data" / f"{role}_filter.json")
        return res

    r.filtered = r.trajs.map(one)


def student_series(r: AgenticRun) -> None:
    """A LoRA student (SFT) on each teacher's kept trajectories."""

    def one(role: str, res: FilterResult) -> Path:
        if not res.kept:
            raise RuntimeError(f"the keyword filter dropped every {role} trajectory: no data")
        data = trajectory_data(res.kept, {"written_by": f"{role} teacher", "filtered": True})
        data.save(r.out / "data" / f"{role}_student_data.jsonl")
        out = r.out / "students" / role
        cfg = student_sft_config(r.cfg)
        distill(r.model, data, out, config=cfg, overwrite=True, progress=r.progress)
        return out

    r.series = r.filtered.map(one)


def write_results(r: AgenticRun, results: dict[str, Any]) -> ExperimentResult:
    """Write ``results.json`` with the run's timings (``total`` included) and log where."""
    total = r.clock.total()
    results = {**results, "timings_s": r.clock.timings}
    path = write_json(r.out / "results.json", results)
    r.log(f"wrote {path} in {total:.0f}s")
    return ExperimentResult(results)
