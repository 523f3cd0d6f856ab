"""The verdict of the agentic experiments (:mod:`steerlens.experiments.agentic`): sampled
first-action rates with Wilson intervals, the student − control student difference in action
choice (paired bootstrap over eval tasks) and in the sampled rate (permutation p), the keyword
filter's counts, and whether the bias transferred at this scale."""

from __future__ import annotations

from typing import Any

import numpy as np

from steerlens.stats import bootstrap, permutation_test

__all__ = ["agentic_verdict"]


def _rate_text(name: str, rate: dict[str, Any]) -> str:
    return f"{name} {rate['k']}/{rate['n']} = {rate['rate']:.2f} [{rate['low']:.2f}, {rate['high']:.2f}]"


def agentic_verdict(results: dict[str, Any]) -> dict[str, Any]:
    """Plain words: rates (Wilson 95%) of base, teachers and final students; the student −
    control difference in action-choice share (paired bootstrap over eval tasks) and in the
    sampled rate (permutation p); filter counts; whether the bias transferred at this scale."""
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
