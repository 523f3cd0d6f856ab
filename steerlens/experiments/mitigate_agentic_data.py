"""The agentic mitigate run's data stages (:mod:`steerlens.experiments.mitigate_agentic`): the
vetting scores ΔP of the teacher's trajectories (their first action against the base's greedy
one on the same task) and each arm's trajectories (vetted, randomly thinned, keyword-filtered,
or all of them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from steerlens.core.results import Record
from steerlens.distill import TeacherData, vet_by_scores
from steerlens.experiments.agentic_eval import base_first_actions, first_action_samples
from steerlens.experiments.agentic_stages import AgenticRun
from steerlens.experiments.mitigate_measure import Arm
from steerlens.pipeline.stage import json_load, json_save, stage
from steerlens.screen import screen_dataset

__all__ = ["MitigateAgenticVetScores", "arm_trajectories", "vet_scores"]


@dataclass
class MitigateAgenticVetScores(Record):
    """``mitigate/vet_scores.json``: ΔP at ``layer`` of each teacher trajectory's first
    action (None for one without a step)."""

    layer: int = 0
    scores: list[float | None] = field(default_factory=list)

    def summary(self) -> str:
        return f"{len(self.scores)} vetting scores at layer {self.layer}"


def vet_scores(r: AgenticRun, vec: Any, layer: int) -> list[float]:
    """ΔP at ℓ* of each teacher trajectory's first action (NaN for one without a step)."""
    trajs = r.trajs.teacher

    def compute() -> MitigateAgenticVetScores:
        fa = first_action_samples(r, trajs, base_first_actions(r))
        res = screen_dataset(r.model, vec, fa, layers=[layer], layer=layer, seed=r.cfg.seed)
        s = res.scores().tolist()
        return MitigateAgenticVetScores(
            layer, [x if t.steps else None for x, t in zip(s, trajs, strict=True)]
        )

    got = stage(
        r.out / "mitigate" / "vet_scores.json",
        f"{r.key('all')}-l{layer}",
        compute,
        lambda x, p: json_save(x.to_json(), p),
        lambda p: MitigateAgenticVetScores.from_json(json_load(p)),
        r.log,
    )
    return [float("nan") if x is None else float(x) for x in got.scores]


def _index(trajs: list[Any]) -> Any:
    """A stand-in data set, one sample per trajectory, for :func:`vet_by_scores`' ranking."""
    return TeacherData.from_samples(
        [{"user": str(i), "response": str(len(t.steps))} for i, t in enumerate(trajs)],
        {"mode": "trajectories"},
    )


def arm_trajectories(
    r: AgenticRun, arms: dict[str, Arm], scores: list[float]
) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """Per arm its trajectories; the vetting records."""
    every = r.trajs.teacher
    index = _index(every)
    out, vetting = {}, {}
    for name, a in arms.items():
        if a.kind in ("vet", "random"):
            mode: Literal["top", "random"] = "top" if a.kind == "vet" else "random"
            res = vet_by_scores(index, scores, float(a.param or 0), mode=mode, seed=r.cfg.seed)
            gone = set(res.dropped)
            out[name] = [t for i, t in enumerate(every) if i not in gone]
            vetting[name] = {**res.to_json(), "scores": None}
        elif a.kind == "keyword":
            out[name] = list(r.filtered.teacher.kept)
        else:
            out[name] = list(every)
    return out, vetting
