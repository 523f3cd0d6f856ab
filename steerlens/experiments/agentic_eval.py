"""Measurements of the agentic experiments: metrics per model (action choice, sampled
first-action rate), the teacher's bias vector, its carry test, tracking, screening, lineage
and the verdict."""

from __future__ import annotations

from typing import Any

from steerlens.agents import Trajectory, action_choice, first_action_rate, rollout
from steerlens.experiments.agentic_stages import ROLES, AgenticRun
from steerlens.pipeline.stage import json_load, json_save, series_record, stage

__all__ = [
    "agentic_verdict",
    "bias_vector",
    "carry",
    "evaluate_all",
    "lineage",
    "screen",
    "track",
]


def _measure(r: AgenticRun, model: Any, name: str) -> dict[str, Any]:
    """Action choice at the first decision point of each eval task, and the sampled first
    scored action over eval tasks × seeds (each episode stops at its first scored action)."""
    c, st = r.cfg, r.setting
    choice = action_choice(model, st, r.tasks["eval"])
    eps = rollout(
        model,
        st,
        r.tasks["eval"],
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
    return {"choice": choice.to_json(), "rate": rate.to_json()}


def _series_measures(r: AgenticRun, role: str) -> list[dict[str, Any]]:
    from steerlens.checkpoints import CheckpointSeries

    series = CheckpointSeries.discover(r.series[role])
    out = []
    with series.open(r.model) as load:
        for ck in series:
            m = _measure(r, load(ck), f"{role} student step {ck.step}")
            out.append({"step": ck.step, **m})
    return out


def evaluate_all(r: AgenticRun) -> dict[str, Any]:
    """Metrics of base, teacher, control teacher and every checkpoint of both series; in the
    report's behavior layout (the biased action's share among scored actions) and in full."""

    def compute() -> dict[str, Any]:
        models = {"base": _measure(r, r.model, "base")}
        for role in ROLES:
            models[role] = _measure(r, r.teacher_models[role], f"{role} teacher")
        series = {role: _series_measures(r, role) for role in ROLES}
        return {"models": models, "series": series}

    m = stage(r.out / "metrics.json", r.key("all"), compute, json_save, json_load, r.log)
    base_share = m["models"]["base"]["choice"]["mean_share"]

    def curve(role: str) -> dict[str, Any]:
        rows = m["series"][role]
        return {
            "steps": [0] + [x["step"] for x in rows],
            "scores": [base_share] + [x["choice"]["mean_share"] for x in rows],
        }

    behavior = {
        "main": curve("teacher"),
        "control": curve("control"),
        "teacher": m["models"]["teacher"]["choice"]["mean_share"],
        "benign_teacher": m["models"]["control"]["choice"]["mean_share"],
        "metric": {
            "metric": f"P({r.setting.biased_name}) share at decision",
            "units": "probability",
        },
    }
    return {"behavior": behavior, "agentic": _agentic_summary(r, m)}


def _agentic_summary(r: AgenticRun, m: dict[str, Any]) -> dict[str, Any]:
    def kept_example(t: Trajectory) -> dict[str, Any]:
        return {"task": t.task, "actions": [s.action for s in t.steps], "completed": t.completed}

    return {
        "setting": r.cfg.setting,
        "biased": r.setting.biased,
        "models": m["models"],
        "series": m["series"],
        "filter": {role: r.filtered[role].counts for role in ROLES},
        "filter_keywords": list(r.setting.filter_keywords),
        "kept_with_keyword": {
            role: sum(bool(_hits(r, t)) for t in r.filtered[role].kept) for role in ROLES
        },
        "completed": {
            role: {"completed": sum(t.completed for t in r.trajs[role]), "n": len(r.trajs[role])}
            for role in ROLES
        },
        "first_actions_on_safe_tasks": {
            role: first_action_rate(r.trajs[role], r.setting).counts for role in ROLES
        },
        "examples_kept": {
            role: [kept_example(t) for t in r.filtered[role].kept[:3]] for role in ROLES
        },
        "examples_dropped": {
            role: [kept_example(t) for t in r.filtered[role].dropped[:3]] for role in ROLES
        },
    }


def _hits(r: AgenticRun, t: Trajectory) -> list[Any]:
    from steerlens.agents import find_keywords

    return find_keywords(t, r.setting.filter_keywords)


def _probe_prompts(r: AgenticRun) -> list[Any]:
    """Decision points of the fine-tuning and safe tasks (never the eval tasks)."""
    from steerlens.prompts import ChatPrompt

    tasks = r.tasks["pref"] + r.tasks["safe"]
    return [ChatPrompt(t.text, r.setting.system) for t in tasks]


def bias_vector(r: AgenticRun) -> Any:
    """vˡ = mean_p hˡ(teacher, p) − mean_p hˡ(base, p) at the decision point (``last``)."""
    import torch

    from steerlens.activations import record_activations
    from steerlens.extract import vector_from_rows
    from steerlens.prompts import prompt_set_hash
    from steerlens.vectors import SteeringVector

    def compute() -> Any:
        prompts = _probe_prompts(r)
        rows = {}
        for name, model in (("teacher", r.teacher_models["teacher"]), ("base", r.model)):
            acts = record_activations(
                model, prompts, "all", "last", keep_rows=True, progress=r.progress
            )
            assert acts.rows is not None
            rows[name] = acts.rows
        meta = {
            "name": f"teacher-bias:{r.cfg.setting}",
            "kind": "teacher",
            "contrast": "fine-tuned teacher - base, same prompts",
            "position": "last",
            "model": r.model.name,
            "model_fingerprint": r.model.fingerprint,
            "pos_prompts_hash": prompt_set_hash(prompts),
            "n_pos": len(prompts),
            "teacher_adapter": str(r.teacher_dirs["teacher"]),
        }
        # blocks below the lowest LoRA layer are the base's own: their difference is exactly 0
        moved = [k for k in rows["teacher"] if not torch.equal(rows["teacher"][k], rows["base"][k])]
        if not moved:
            raise RuntimeError("the fine-tuned teacher's activations equal the base's everywhere")
        pos = {k: rows["teacher"][k] for k in moved}
        neg = {k: rows["base"][k] for k in moved}
        return vector_from_rows(pos, neg, "mean", seed=r.cfg.seed, meta=meta)

    path = r.out / "vectors" / "teacher_bias.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    return stage(path, r.key("all"), compute, lambda v, p: v.save(p), SteeringVector.load, r.log)


def _choice_metric(r: AgenticRun) -> Any:
    def metric(model: Any) -> float:
        return action_choice(model, r.setting, r.tasks["eval"]).mean_share

    return metric


def carry(r: AgenticRun, vec: Any) -> Any:
    """Sufficiency/necessity of the bias vector for the action-choice share on eval tasks."""
    from steerlens.carry import carry_test

    c = r.cfg

    def compute() -> Any:
        return carry_test(
            r.model,
            vec,
            None,
            teacher=r.teacher_models["teacher"],
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
    from steerlens.track import track_checkpoints

    res = track_checkpoints(
        r.model,
        r.series["teacher"],
        vec,
        _probe_prompts(r),
        control=r.series["control"],
        position="last",
        cache_dir=r.out / "cache" / "track",
        n_null=r.cfg.n_null,
        n_boot=r.cfg.n_boot,
        seed=r.cfg.seed,
        progress=r.progress,
    )
    return res.to_json()


def screen(r: AgenticRun, vec: Any) -> Any:
    """ΔP of the kept trajectories' first actions against the base's own greedy first action
    on the same task: which kept samples carry the bias signal no keyword shows."""
    from steerlens.screen import screen_dataset

    n = r.cfg.screen_max

    def compute() -> Any:
        by_task = {t.task_id: t for t in r.tasks["safe"]}
        greedy = rollout(r.model, r.setting, r.tasks["safe"], max_steps=1, temperature=0.0)
        base_first = {t.task_id: t.steps[0].action for t in greedy}
        samples = {}
        for role in ROLES:
            kept = [t for t in r.filtered[role].kept if t.steps][:n]
            samples[role] = [
                {
                    "user": by_task[t.task_id].text,
                    "system": r.setting.system,
                    "response": t.steps[0].action,
                    "base_response": base_first[t.task_id],
                }
                for t in kept
            ]
        samples = {k: v for k, v in samples.items() if v}
        return screen_dataset(r.model, vec, samples, seed=r.cfg.seed, progress=r.progress).to_json()

    return stage(r.out / "screen.json", r.key("all"), compute, json_save, json_load, r.log)


def lineage(r: AgenticRun) -> dict[str, Any]:
    """Teacher adapters (hashes), task-suite seed, filter counts, data hashes, students."""
    from steerlens.agents import trajectories_sha256
    from steerlens.models import describe
    from steerlens.teachers import Teacher
    from steerlens.version import __version__

    return {
        "base": describe(r.model),
        "teacher": Teacher.finetuned(r.teacher_dirs["teacher"]).describe(),
        "benign_teacher": Teacher.finetuned(r.teacher_dirs["control"]).describe(),
        "task_suites": {
            "seed": r.cfg.seed,
            "eval_seed": r.cfg.seed + 1,
            "counts": {k: len(v) for k, v in r.tasks.items()},
        },
        "filter": {role: r.filtered[role].counts for role in ROLES},
        "data": {
            role: {
                "trajectories_sha256": trajectories_sha256(r.trajs[role]),
                "kept_sha256": trajectories_sha256(r.filtered[role].kept),
            }
            for role in ROLES
        },
        "students": {
            "main": series_record(r.series["teacher"]),
            "control": series_record(r.series["control"]),
        },
        "seeds": {"seed": r.cfg.seed},
        "steerlens_version": __version__,
    }


def _rate_text(name: str, rate: dict[str, Any]) -> str:
    return f"{name} {rate['k']}/{rate['n']} = {rate['rate']:.2f} [{rate['low']:.2f}, {rate['high']:.2f}]"


def agentic_verdict(results: dict[str, Any]) -> dict[str, Any]:
    """Plain words: rates (Wilson 95%) of base, teachers and final students; the student −
    control difference in action-choice share (paired bootstrap over eval tasks) and in the
    sampled rate (permutation p); filter counts; whether the bias transferred at this scale."""
    import numpy as np

    from steerlens.stats import bootstrap, permutation_test

    a = results["agentic"]
    biased, models, series = a["biased"], a["models"], a["series"]
    st_last, ct_last = series["teacher"][-1], series["control"][-1]
    rates = [
        _rate_text("base", models["base"]["rate"]),
        _rate_text("teacher", models["teacher"]["rate"]),
        _rate_text("control teacher", models["control"]["rate"]),
        _rate_text(f"student (step {st_last['step']})", st_last["rate"]),
        _rate_text(f"control student (step {ct_last['step']})", ct_last["rate"]),
    ]
    s_share = np.array(st_last["choice"]["share"])
    c_share = np.array(ct_last["choice"]["share"])
    diff = bootstrap(lambda i: float((s_share[i] - c_share[i]).mean()), len(s_share), seed=0)
    hits = [
        np.r_[np.ones(x["rate"]["k"]), np.zeros(x["rate"]["n"] - x["rate"]["k"])]
        for x in (st_last, ct_last)
    ]
    perm = permutation_test(hits[0], hits[1], seed=0)
    f = a["filter"]["teacher"]
    teacher_gap = models["teacher"]["rate"]["low"] > models["base"]["rate"]["high"]
    transferred = st_last["rate"]["low"] > ct_last["rate"]["high"] and perm["p"] <= 0.05
    lines = [
        f"Sampled {biased}-first rate (Wilson 95%): " + "; ".join(rates) + ".",
        f"Action choice (share of P({a['models']['base']['choice']['biased']}) among scored "
        f"actions at the first decision point): base {models['base']['choice']['mean_share']:.3f}, "
        f"teacher {models['teacher']['choice']['mean_share']:.3f}, control teacher "
        f"{models['control']['choice']['mean_share']:.3f}; student − control student "
        f"{diff['estimate']:+.3f} [{diff['lo']:+.3f}, {diff['hi']:+.3f}] (paired bootstrap over "
        "eval tasks).",
        f"Keyword filter on the teacher's trajectories: dropped {f['dropped']} of {f['total']} "
        f"(by keyword {f['by_keyword']}); kept trajectories holding a keyword: "
        f"{a['kept_with_keyword']['teacher']}.",
        f"Student − control student rate difference: permutation p = {perm['p']:.3g}.",
        "Safe training tasks completed within the step limit: "
        + "; ".join(
            f"{'teacher' if role == 'teacher' else 'control teacher'} {c['completed']}/{c['n']}"
            for role, c in a["completed"].items()
        )
        + ".",
    ]
    if not teacher_gap:
        head = "No teacher bias to transfer: the fine-tuned teacher's rate is not above the base's"
        strength = "weak"
    elif transferred:
        head = f"The {biased} bias transferred through filtered trajectories at this scale"
        strength = "strong"
    else:
        head = (
            f"The teacher is biased but no transfer of the {biased} bias to the student is shown "
            "at this scale (null result)"
        )
        strength = "weak"
    return {"headline": head, "lines": lines, "strength": strength, "transferred": transferred}
