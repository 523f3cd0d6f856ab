"""``steerlens audit`` / :func:`audit`: the owl experiment's analysis on the user's own teacher,
student, data and trait, every stage cached in the output folder (an interrupted audit resumes).

Stages: the teacher vector (trait vs neutral system prompt for the trait's prompted teacher,
else the teacher's activations minus the base's), the carry test of that vector under the
teacher, behavior per checkpoint of the student and the control (and of both teachers),
alignment tracking with random-direction nulls and the control, screening of the training
data; ``results.json`` with the verdict and the lineage the numbers were computed on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from steerlens.auditing.config import AuditConfig
from steerlens.auditing.inputs import (
    base_check,
    input_records,
    make_teacher,
    read_data,
    recorded_base,
)
from steerlens.auditing.verdict import audit_verdict, no_control_headline
from steerlens.carry import carry_test, teacher_score
from steerlens.core.common import sha256_bytes, write_json
from steerlens.core.vectors import SteeringVector
from steerlens.directions.extract import model_teacher_vector, teacher_vector
from steerlens.experiments.owl_records import OwlScores
from steerlens.experiments.result import ExperimentResult
from steerlens.inputs.traits import as_trait
from steerlens.lineage import read_record
from steerlens.loading.models import load_model
from steerlens.measures.behavior import trait_behavior
from steerlens.pipeline import RunContext, config_json, config_key, lineage_json, series_records
from steerlens.pipeline.controls import behavior_deltas, series_scores
from steerlens.pipeline.records import recorder
from steerlens.pipeline.stage import StageClock, json_load, json_save, stage
from steerlens.screen import screen_dataset
from steerlens.track import track_checkpoints

__all__ = ["audit", "no_control_headline"]


@dataclass
class _Audit(RunContext):
    """The audit's run context (:class:`~steerlens.pipeline.RunContext`) with the teacher, the
    inputs' lineage records and the base checks."""

    teacher: Any = None
    records: dict[str, Path] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def default_teacher(self) -> bool:
        """The trait's own prompted teacher (the demo's): the classic teacher vector."""
        t = self.teacher
        return t.kind == "prompt" and t.system == self.trait.system_prompt

    @property
    def students(self) -> dict[str, Path]:
        return _students(self.cfg)

    @property
    def vec_path(self) -> Path:
        return self.out / "vectors" / "teacher.safetensors"

    def key(self, *fields_: str) -> str:
        """Cache key: base fingerprint, the inputs' record digests and the config fields."""
        digests = "".join(read_record(p).digest for _, p in sorted(self.records.items()))
        fp, cfg_key = self.model.fingerprint, config_key(self.cfg, *fields_)
        return f"{fp}-{sha256_bytes(digests)[:12]}-{cfg_key}"

    def rec(self, kind: str, *roles: str) -> Callable[[Path], Path]:
        """The lineage record of a stage's file: its parents are the inputs of ``roles`` (and
        the teacher vector for the role ``vector``)."""
        parents = {"vector": self.vec_path} if "vector" in roles else {}
        parents |= {k: v for k, v in self.records.items() if k in roles}
        return recorder(kind, self.model, parents=parents, config=config_json(self.cfg))

    def json_stage(self, name: str, key: str, fn: Callable[[], Any], *roles: str) -> Any:
        """:func:`~steerlens.pipeline.stage.stage` of ``<name>.json``, recorded as ``name``
        with the parents of ``roles`` (:meth:`rec`)."""
        rec = self.rec(name, *roles)
        return stage(self.out / f"{name}.json", key, fn, json_save, json_load, self.log, rec)


def _students(c: AuditConfig) -> dict[str, Path]:
    """The student (``main``) and the control student when given."""
    return {"main": Path(c.student)} | ({} if c.control is None else {"control": Path(c.control)})


def _open(
    cfg: AuditConfig, progress: bool | None, log: Callable[[str], None], clock: StageClock
) -> _Audit:
    trait = as_trait(cfg.trait)
    if cfg.probe_n is not None:
        trait = replace(trait, probe_n=cfg.probe_n)
    for path, what in ((cfg.data, "training data"), (cfg.control_data, "control data")):
        if path is not None:
            read_data(path, what)
    students = [(p, "student" if k == "main" else k) for k, p in _students(cfg).items()]
    for folder, role in students:  # records that disagree: refused before the model loads
        recorded_base(folder, cfg.force_base, role)
    out = Path(cfg.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(cfg.base, device=cfg.device)
    a = _Audit(cfg, out, model, trait, progress, log, clock, teacher=make_teacher(cfg, trait))
    for folder, role in students:
        a.checks.append(base_check(folder, model, cfg.force_base, role, given=cfg.base))
    a.records = input_records(cfg, out, model, a.teacher, log)
    return a


def _vector(a: _Audit) -> Any:
    def compute() -> Any:
        kw: dict[str, Any] = {"layers": "all", "seed": a.cfg.seed, "progress": a.progress}
        if a.default_teacher:
            return teacher_vector(a.model, a.trait, **kw)
        return model_teacher_vector(a.model, a.teacher, a.trait, **kw)

    a.vec_path.parent.mkdir(parents=True, exist_ok=True)
    save, load = (lambda v, p: v.save(p)), SteeringVector.load
    key = a.key("trait", "seed", "probe_n")
    return stage(a.vec_path, key, compute, save, load, a.log, a.rec("vector", "teacher"))


def _carry(a: _Audit, vec: Any) -> Any:
    """The carry test of the teacher vector on the first ``carry_eval_n`` eval prompts (as the
    owl experiment's carry stage)."""
    c = a.cfg
    metric = None
    if c.carry_eval_n is not None:
        beh = trait_behavior(a.model, a.trait)
        metric = replace(beh, prompts=beh.prompts[: c.carry_eval_n])
    return a.json_stage(
        "carry",
        a.key("trait", "seed", "probe_n", "carry_layers", "alphas", "n_random", "carry_eval_n"),
        lambda: carry_test(
            a.model,
            vec,
            a.trait,
            layers=list(c.carry_layers) if c.carry_layers else None,
            alphas=c.alphas,
            n_random=c.n_random,
            seed=c.seed,
            progress=a.progress,
            teacher=None if a.default_teacher else a.teacher,
            metric=metric,
        ).to_json(),
        "vector",
    )


def _behavior(a: _Audit) -> Any:
    model, trait, c = a.model, a.trait, a.cfg
    beh = trait_behavior(model, trait)

    def compute() -> dict[str, Any]:
        per = getattr(beh, "per_prompt", None)
        base_rows = None if per is None else [float(x) for x in per(model)]
        series = {name: series_scores(model, d, beh) for name, d in a.students.items()}
        b0 = OwlScores.from_json(next(iter(series.values()))).scores[:1]  # the base, step 0
        no_control = {"steps": [0], "scores": b0, "note": "no control: the base"}
        return {
            **series,
            **({"control": no_control} if c.control is None else {}),
            "base_per_prompt": base_rows,
            "teacher": float(teacher_score(model, a.teacher, beh)),
            "benign_teacher": float(beh.with_system(trait.neutral_system_prompt)(model)),
            "metric": beh.describe(),
            "deltas": behavior_deltas(base_rows, series, seed=c.seed, n_boot=c.n_boot),
        }

    return a.json_stage("behavior", a.key(), compute, "teacher", "student", "control")


def _live_layers(vec: Any) -> list[int] | None:
    """The vector's layers with a nonzero direction (None: all of them). A teacher that edits
    from a middle layer on differs from the base only there."""
    live = [layer for layer in vec.layers if float(vec[layer].norm()) > 0]
    return None if len(live) == len(vec.layers) else live


def _track(a: _Audit, vec: Any) -> Any:
    c = a.cfg
    return a.json_stage(
        "track",
        a.key(),
        lambda: track_checkpoints(
            a.model,
            Path(c.student),
            vec,
            a.trait,
            control=None if c.control is None else Path(c.control),
            layers=_live_layers(vec),
            cache_dir=a.out / "cache" / "track",
            n_null=c.n_null,
            n_boot=c.n_boot,
            seed=c.seed,
            progress=a.progress,
        ).to_json(),
        "vector",
        "student",
        "control",
    )


def _screen(a: _Audit, vec: Any) -> Any:
    c, n = a.cfg, a.cfg.screen_max
    sets = {"teacher": read_data(c.data)[:n]}
    if c.control_data is not None:
        sets |= {"control": read_data(c.control_data, "control data")[:n]}
    live = _live_layers(vec)
    return a.json_stage(
        "screen",
        a.key(),
        lambda: screen_dataset(
            a.model, vec, sets, layers=live, seed=c.seed, progress=a.progress
        ).to_json(),
        "vector",
        "data",
        "control_data",
    )


def _lineage(a: _Audit) -> dict[str, Any]:
    c = a.cfg
    return lineage_json(
        a,
        teacher={"model": a.model.name, "system_prompt": a.teacher.system, **a.teacher.describe()},
        data={
            "teacher": {"path": c.data},
            **({"control": {"path": c.control_data}} if c.control_data else {}),
        },
        students=series_records(a.students),
        base_checks=a.checks,
        records={
            k: {"path": str(p), "sha256": read_record(p).digest} for k, p in a.records.items()
        },
    )


def audit(
    config: AuditConfig | None = None,
    *,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
    **fields: Any,
) -> ExperimentResult:
    """Audit a distillation pipeline (see the module doc): ``audit(base=..., student=...,
    data=..., trait=..., out=...)`` or ``audit(AuditConfig(...))``. Writes ``results.json``
    (the verdict, every stage's numbers and the lineage of the inputs), the vector, and a
    lineage record beside each artifact to ``config.out``; returns the results.

    Refuses (:class:`AuditError`) a student whose recorded base fingerprint differs from
    ``base``, unless ``force_base=True``."""
    cfg = replace(config, **fields) if config is not None else AuditConfig(**fields)
    clock = StageClock(log)
    a = _open(cfg, progress, log, clock)
    a.tick("load model, check inputs")
    vec = _vector(a)
    a.tick("teacher vector")
    carry = _carry(a, vec)
    a.tick("carry test")
    beh = _behavior(a)
    a.tick("behavior per checkpoint")
    track = _track(a, vec)
    a.tick("tracking")
    screen = _screen(a, vec)
    a.tick("screening")
    results: dict[str, Any] = {
        "kind": "steerlens.audit",
        "config": config_json(cfg),
        "trait": a.trait.name,
        "lineage": _lineage(a),
        "teacher_vector": vec.to_json(),
        "carry": carry,
        "behavior": beh,
        "track": track,
        "screen": screen,
        "timings_s": clock.timings,
    }
    v = audit_verdict(results, control=cfg.control is not None)
    results |= {"verdict": v.to_json()}
    write_json(a.out / "results.json", results)
    parents = {n: a.out / f"{n}.json" for n in ("carry", "behavior", "track", "screen")}
    meta = {"trait": a.trait.name, "verdict": v.strength}
    recorder("results", a.model, parents=a.records | parents, config=meta)(a.out / "results.json")
    log(f"wrote {a.out / 'results.json'} in {clock.total():.0f}s")
    return ExperimentResult(results)
