"""The typed results of the agentic experiments (:mod:`steerlens.experiments.agentic`): what
``results.json`` holds under ``agentic`` and ``verdict``, and the cached ``metrics.json``. Each
Record mirrors its JSON key for key (older files load; the saved JSON is what it was); the
verdict and the report parse it once and read attributes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from steerlens.agents import ActionChoice, RateResult
from steerlens.core.results import OMIT, Record

__all__ = [
    "AgenticCompleted",
    "AgenticExample",
    "AgenticFilterCounts",
    "AgenticFilterRoles",
    "AgenticMeasure",
    "AgenticMetrics",
    "AgenticModels",
    "AgenticSeries",
    "AgenticSummary",
    "AgenticVerdict",
]


@dataclass
class AgenticMeasure(Record):
    """One model on the held-out eval tasks: its action choice at the first decision point
    (P(biased name) and its share among the scored names, per task) and its sampled
    first-action rate k/n (Wilson 95%); ``step``: a student checkpoint's training step (None,
    and not written, for the base and the teachers)."""

    step: int | None = None
    choice: ActionChoice | None = None
    rate: RateResult | None = None

    json_none: ClassVar[Mapping[str, Any]] = {"step": OMIT}

    @property
    def measured(self) -> tuple[ActionChoice, RateResult]:
        """(choice, rate); a ValueError where either is missing."""
        if self.choice is None or self.rate is None:
            raise ValueError("this agentic measure holds no action choice or no rate")
        return self.choice, self.rate

    def summary(self) -> str:
        parts = [x.summary() for x in (self.choice, self.rate) if x is not None]
        return f"step {self.step}: " * (self.step is not None) + ("; ".join(parts) or "none")


@dataclass
class AgenticModels(Record):
    """The base, the fine-tuned (biased) teacher and the benign control teacher, measured."""

    base: AgenticMeasure = field(default_factory=AgenticMeasure)
    teacher: AgenticMeasure = field(default_factory=AgenticMeasure)
    control: AgenticMeasure = field(default_factory=AgenticMeasure)

    def named(self) -> list[tuple[str, AgenticMeasure]]:
        """(key, measure) of each model that was measured."""
        found = [("base", self.base), ("teacher", self.teacher), ("control", self.control)]
        return [(n, m) for n, m in found if m.rate is not None]

    def summary(self) -> str:
        return "\n".join(f"{n}: {m.summary()}" for n, m in self.named()) or "no model measured"


@dataclass
class AgenticSeries(Record):
    """Every checkpoint of the student (trained on the teacher's kept trajectories) and of the
    control student (on the control teacher's), in step order."""

    teacher: list[AgenticMeasure] = field(default_factory=list)
    control: list[AgenticMeasure] = field(default_factory=list)

    def summary(self) -> str:
        return f"{len(self.teacher)} student and {len(self.control)} control checkpoints"


@dataclass
class AgenticMetrics(Record):
    """``metrics.json``: the models and both series, measured (the stage's cache)."""

    models: AgenticModels = field(default_factory=AgenticModels)
    series: AgenticSeries = field(default_factory=AgenticSeries)

    def summary(self) -> str:
        return f"{self.models.summary()}\n{self.series.summary()}"


@dataclass
class AgenticFilterCounts(Record):
    """The keyword filter on one teacher's trajectories (``FilterResult.counts``)."""

    total: int = 0
    kept: int = 0
    dropped: int = 0
    dropped_fraction: float = 0.0
    by_keyword: dict[str, int] = field(default_factory=dict)
    by_place: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return f"dropped {self.dropped} of {self.total} (by keyword {self.by_keyword})"


@dataclass
class AgenticFilterRoles(Record):
    """The keyword filter per teacher role (``agentic.filter``); a role an older file lacks:
    None, and not written."""

    teacher: AgenticFilterCounts | None = None
    control: AgenticFilterCounts | None = None

    json_none: ClassVar[Mapping[str, Any]] = {"teacher": OMIT, "control": OMIT}

    def items(self) -> list[tuple[str, AgenticFilterCounts]]:
        """(role, counts) of each role filtered, the teacher's first."""
        found = [("teacher", self.teacher), ("control", self.control)]
        return [(n, f) for n, f in found if f is not None]

    def summary(self) -> str:
        return "; ".join(f"{n}: {f.summary()}" for n, f in self.items()) or "no filter"


@dataclass
class AgenticCompleted(Record):
    """Safe training tasks one teacher completed within the step limit, of ``n``."""

    completed: int = 0
    n: int = 0

    def summary(self) -> str:
        return f"{self.completed}/{self.n}"


@dataclass
class AgenticExample(Record):
    """An example trajectory: its task, its actions and whether it completed the task."""

    task: str = ""
    actions: list[str] = field(default_factory=list)
    completed: bool = False

    def summary(self) -> str:
        return f"{self.task}: " + " | ".join(self.actions)


@dataclass
class AgenticSummary(Record):
    """``results.json``'s ``agentic``: the setting and its biased first action, every model
    measured, the keyword filter per teacher (its keywords, the kept trajectories holding one:
    0), safe tasks completed, first actions on the safe tasks and example trajectories kept and
    dropped (per teacher role)."""

    setting: str = ""
    biased: str = "biased"
    models: AgenticModels = field(default_factory=AgenticModels)
    series: AgenticSeries = field(default_factory=AgenticSeries)
    filter: AgenticFilterRoles = field(default_factory=AgenticFilterRoles)
    filter_keywords: list[str] = field(default_factory=list)
    kept_with_keyword: dict[str, int] = field(default_factory=dict)
    completed: dict[str, AgenticCompleted] = field(default_factory=dict)
    first_actions_on_safe_tasks: dict[str, dict[str, int]] = field(default_factory=dict)
    examples_kept: dict[str, list[AgenticExample]] = field(default_factory=dict)
    examples_dropped: dict[str, list[AgenticExample]] = field(default_factory=dict)

    def summary(self) -> str:
        return f"agentic ({self.setting}, {self.biased} first)\n{self.models.summary()}"


@dataclass
class AgenticVerdict(Record):
    """``results.json``'s ``verdict``: the headline, the plain-words lines with their numbers,
    the evidence's strength and whether the bias transferred at this scale."""

    headline: str = ""
    lines: list[str] = field(default_factory=list)
    strength: str = "weak"
    transferred: bool = False

    def summary(self) -> str:
        return "\n".join([self.headline, *(f"  {x}" for x in self.lines)])
