"""Measurements of the agentic experiments: metrics per model (action choice, sampled
first-action rate), the teacher's bias vector, its carry test, tracking, screening and lineage
(the verdict: :mod:`steerlens.experiments.agentic_verdict`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from steerlens.agents import (
    Trajectory,
    action_choice,
    find_keywords,
    first_action_rate,
    rollout,
    trajectories_sha256,
)
from steerlens.carry import carry_test
from steerlens.checkpoints import CheckpointSeries
from steerlens.core.vectors import SteeringVector
from steerlens.directions.extract import vector_from_rows
from steerlens.experiments.agentic_records import (
    AgenticCompleted,
    AgenticExample,
    AgenticFilterCounts,
    AgenticFilterRoles,
    AgenticMeasure,
    AgenticMetrics,
    AgenticModels,
    AgenticSeries,
    AgenticSummary,
)
from steerlens.experiments.agentic_stages import AgenticRun
from steerlens.inputs.prompts import ChatPrompt, prompt_set_hash
from steerlens.pipeline import lineage_json, series_records
from steerlens.pipeline.stage import json_load, json_save, stage
from steerlens.runtime.activations import record_activations
from steerlens.screen import screen_dataset
from steerlens.teachers import Teacher
from steerlens.track import track_checkpoints

__all__ = [
    "base_first_actions",
    "bias_vector",
    "carry",
    "evaluate_all",
    "first_action_samples",
    "lineage",
    "probe_prompts",
    "screen",
    "track",
]


def _measure(r: AgenticRun, model: Any, name: str, step: int | None = None) -> AgenticMeasure:
    """Action choice at the first decision point of each eval task, and the sampled first
    scored action over eval tasks × seeds (each episode stops at its first scored action)."""
    c, st = r.cfg, r.setting
    choice = action_choice(model, st, r.tasks.eval)
    eps = rollout(
        model,
        st,
        r.tasks.eval,
        n_seeds=c.n_eval_seeds,
        seed=c.seed + 7,
        max_steps=c.max_steps,
        temperature=c.temperature,
        stop_kinds=st.scored,
        batch_size=c.batch,
        meta={"model": name},
        progress=r.progress,
    )
    rate = first_action_rate(eps, st)
    r.log(f"{name}: {choice.summary()}; {rate.summary()}")
    return AgenticMeasure(step, choice, rate)


def _series_measures(r: AgenticRun, role: str, path: Path) -> list[AgenticMeasure]:
    series = CheckpointSeries.discover(path)
    with series.open(r.model) as load:
        return [_measure(r, load(ck), f"{role} student step {ck.step}", ck.step) for ck in series]


def evaluate_all(r: AgenticRun) -> tuple[dict[str, Any], AgenticSummary]:
    """Metrics of base, teacher, control teacher and every checkpoint of both series; in the
    report's behavior layout (the biased action's share among scored actions) and in full."""

    def compute() -> AgenticMetrics:
        models = AgenticModels(
            _measure(r, r.model, "base"),
            *(_measure(r, tm, f"{role} teacher") for role, tm in r.teacher_models.items()),
        )
        return AgenticMetrics(
            models, AgenticSeries(*(_series_measures(r, *x) for x in r.series.items()))
        )

    m = stage(
        r.out / "metrics.json",
        r.key("all"),
        compute,
        lambda x, p: json_save(x.to_json(), p),
        lambda p: AgenticMetrics.from_json(json_load(p)),
        r.log,
    )
    base_share = m.models.base.measured[0].mean_share

    def curve(cks: list[AgenticMeasure]) -> dict[str, Any]:
        return {
            "steps": [0] + [ck.step for ck in cks],
            "scores": [base_share] + [ck.measured[0].mean_share for ck in cks],
        }

    behavior = {
        "main": curve(m.series.teacher),
        "control": curve(m.series.control),
        "teacher": m.models.teacher.measured[0].mean_share,
        "benign_teacher": m.models.control.measured[0].mean_share,
        "metric": {
            "metric": f"P({r.setting.biased_name}) share at decision",
            "units": "probability",
        },
    }
    return behavior, _agentic_summary(r, m)


def _agentic_summary(r: AgenticRun, m: AgenticMetrics) -> AgenticSummary:
    def examples(trajs: list[Trajectory]) -> list[AgenticExample]:
        return [AgenticExample(t.task, [s.action for s in t.steps], t.completed) for t in trajs[:3]]

    kws, filtered, trajs = r.setting.filter_keywords, r.filtered.items(), r.trajs.items()
    return AgenticSummary(
        setting=r.cfg.setting,
        biased=r.setting.biased,
        models=m.models,
        series=m.series,
        filter=AgenticFilterRoles(*(AgenticFilterCounts(**f.counts) for _, f in filtered)),
        filter_keywords=list(kws),
        kept_with_keyword={
            role: sum(bool(find_keywords(t, kws)) for t in f.kept) for role, f in filtered
        },
        completed={
            role: AgenticCompleted(sum(t.completed for t in ts), len(ts)) for role, ts in trajs
        },
        first_actions_on_safe_tasks={
            role: first_action_rate(ts, r.setting).counts for role, ts in trajs
        },
        examples_kept={role: examples(f.kept) for role, f in filtered},
        examples_dropped={role: examples(f.dropped) for role, f in filtered},
    )


def probe_prompts(r: AgenticRun) -> list[Any]:
    """Decision points of the fine-tuning and safe tasks (never the eval tasks)."""
    tasks = r.tasks.pref + r.tasks.safe
    return [ChatPrompt(t.text, r.setting.system) for t in tasks]


def bias_vector(r: AgenticRun) -> Any:
    """vˡ = mean_p hˡ(teacher, p) − mean_p hˡ(base, p) at the decision point (``last``)."""

    def compute() -> Any:
        prompts = probe_prompts(r)
        teacher, base = (
            record_activations(model, prompts, "all", "last", keep_rows=True, progress=r.progress)
            for model in (r.teacher_models.teacher, r.model)
        )
        assert teacher.rows is not None and base.rows is not None
        meta = {
            "name": f"teacher-bias:{r.cfg.setting}",
            "kind": "teacher",
            "contrast": "fine-tuned teacher - base, same prompts",
            "position": "last",
            "model": r.model.name,
            "model_fingerprint": r.model.fingerprint,
            "pos_prompts_hash": prompt_set_hash(prompts),
            "n_pos": len(prompts),
            "teacher_adapter": str(r.teacher_dirs.teacher),
        }
        # blocks below the lowest LoRA layer are the base's own: their difference is exactly 0
        pos, neg = teacher.rows, base.rows
        moved = [k for k in pos if not torch.equal(pos[k], neg[k])]
        if not moved:
            raise RuntimeError("the fine-tuned teacher's activations equal the base's everywhere")
        pos, neg = {k: pos[k] for k in moved}, {k: neg[k] for k in moved}
        return vector_from_rows(pos, neg, "mean", seed=r.cfg.seed, meta=meta)

    path = r.out / "vectors" / "teacher_bias.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    return stage(path, r.key("all"), compute, lambda v, p: v.save(p), SteeringVector.load, r.log)


def _choice_metric(r: AgenticRun) -> Any:
    def metric(model: Any) -> float:  # its name is recorded in the carry test's JSON
        return action_choice(model, r.setting, r.tasks.eval).mean_share

    return metric


def carry(r: AgenticRun, vec: Any) -> Any:
    """Sufficiency/necessity of the bias vector for the action-choice share on eval tasks."""
    c = r.cfg

    def compute() -> Any:
        return carry_test(
            r.model,
            vec,
            None,
            teacher=r.teacher_models.teacher,
            metric=_choice_metric(r),
            layers=list(c.carry_layers) if c.carry_layers else None,
            alphas=c.alphas,
            n_random=c.n_random,
            seed=c.seed,
            progress=r.progress,
        ).to_json()

    return stage(r.out / "carry.json", r.key("all"), compute, json_save, json_load, r.log)


def track(r: AgenticRun, vec: Any) -> dict[str, Any]:
    """Alignment of the student and control series with the bias vector per checkpoint."""
    res = track_checkpoints(
        r.model,
        r.series.teacher,
        vec,
        probe_prompts(r),
        control=r.series.control,
        position="last",
        cache_dir=r.out / "cache" / "track",
        n_null=r.cfg.n_null,
        n_boot=r.cfg.n_boot,
        seed=r.cfg.seed,
        progress=r.progress,
    )
    return res.to_json()


def base_first_actions(r: AgenticRun) -> dict[str, str]:
    """task id → the base's own greedy first action on that safe task ("" for none)."""
    greedy = rollout(r.model, r.setting, r.tasks.safe, max_steps=1, temperature=0.0)
    return {t.task_id: (t.steps[0].action if t.steps else "") for t in greedy}


def first_action_samples(
    r: AgenticRun, trajs: list[Trajectory], base_first: dict[str, str]
) -> list[dict[str, Any]]:
    """One screening sample per trajectory of a safe task: its task and first action, beside
    the base's greedy first action (``base_first``, :func:`base_first_actions`)."""
    by_task = {t.task_id: t for t in r.tasks.safe}
    return [
        {
            "user": by_task[t.task_id].text,
            "system": r.setting.system,
            "response": t.steps[0].action if t.steps else "",
            "base_response": base_first[t.task_id],
        }
        for t in trajs
    ]


def screen(r: AgenticRun, vec: Any) -> Any:
    """ΔP of the kept trajectories' first actions against the base's own greedy first action
    on the same task: which kept samples carry the bias signal no keyword shows."""
    n = r.cfg.screen_max

    def compute() -> Any:
        base_first = base_first_actions(r)
        samples = {}
        for role, f in r.filtered.items():
            kept = [t for t in f.kept if t.steps][:n]
            samples[role] = first_action_samples(r, kept, base_first)
        samples = {k: v for k, v in samples.items() if v}
        return screen_dataset(r.model, vec, samples, seed=r.cfg.seed, progress=r.progress).to_json()

    return stage(r.out / "screen.json", r.key("all"), compute, json_save, json_load, r.log)


def lineage(r: AgenticRun) -> dict[str, Any]:
    """Teacher adapters (hashes), task-suite seed, filter counts, data hashes, students."""
    return lineage_json(
        r,
        teacher=Teacher.finetuned(r.teacher_dirs.teacher).describe(),
        benign_teacher=Teacher.finetuned(r.teacher_dirs.control).describe(),
        task_suites={
            "seed": r.cfg.seed,
            "eval_seed": r.cfg.seed + 1,
            "counts": r.tasks.counts(),
        },
        filter={role: f.counts for role, f in r.filtered.items()},
        data={
            role: {
                "trajectories_sha256": trajectories_sha256(ts),
                "kept_sha256": trajectories_sha256(f.kept),
            }
            for (role, ts), (_, f) in zip(r.trajs.items(), r.filtered.items(), strict=True)
        },
        students=series_records({"main": r.series.teacher, "control": r.series.control}),
    )
