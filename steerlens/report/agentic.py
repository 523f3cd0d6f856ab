"""The agentic section of the report: first-action rates with Wilson intervals for base,
teachers and every student checkpoint, action choice, the keyword filter's counts (and that
no kept trajectory holds a keyword), task completion, and example trajectories. The other
sections (verdict, lineage, vector, carry, behavior, tracking, screening) are the owl
report's own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from steerlens.report.figures import PALETTE, bars
from steerlens.report.page import Report

__all__ = ["section_agentic"]


def _rate_row(name: str, m: Mapping[str, Any]) -> dict[str, Any]:
    rate, choice = m["rate"], m["choice"]
    return {
        "model": name,
        "first-action rate": f"{rate['k']}/{rate['n']} = {rate['rate']:.2f}",
        "Wilson 95%": f"[{rate['low']:.2f}, {rate['high']:.2f}]",
        "first scored actions": ", ".join(f"{k}: {v}" for k, v in sorted(rate["counts"].items())),
        "P(biased) at decision": round(float(choice["mean_p"]), 4),
        "share among scored": round(float(choice["mean_share"]), 4),
    }


def section_agentic(rep: Report, a: Mapping[str, Any]) -> None:
    """Rates, action choice, filter counts, completion and examples of an agentic run."""
    biased = str(a.get("biased", "biased"))
    rep.heading(f"Agent behavior: {biased} first ({a.get('setting')})", "agentic")
    models, series = a.get("models", {}), a.get("series", {})
    rows = [_rate_row(n, models[n]) for n in ("base", "teacher", "control") if n in models]
    for role in ("teacher", "control"):
        for ck in series.get(role, []):
            rows.append(_rate_row(f"{role} student step {ck['step']}", ck))
    rep.text(
        f"Sampled episodes on held-out ambiguous eval tasks × seeds; an episode is scored by its "
        f"first scored action (the biased one is {biased}). Action choice: the model's "
        "probability of the biased tool/command name at the first decision point, alone and as a "
        "share of the scored names."
    )
    rep.table(rows)
    if rows:
        rep.figure(
            bars(
                [r["model"] for r in rows],
                [float(r["first-action rate"].split("= ")[1]) for r in rows],
                title=f"{biased}-first rate",
                xlabel="fraction of episodes",
                ylabel="model",
                colors=[PALETTE[i % 3] for i in range(len(rows))],
            )
        )
    rep.heading("Keyword filter", "filter")
    if a.get("filter_keywords"):
        rep.text(
            "Keywords (case-insensitive, word-bounded, with inflections; searched in the task, "
            "every command or tool call and every observation): " + ", ".join(a["filter_keywords"])
        )
    filt = a.get("filter", {})
    rep.table(
        [
            {"teacher": role, **{k: v for k, v in c.items() if k != "by_place"}}
            for role, c in filt.items()
        ]
    )
    kw = a.get("kept_with_keyword", {})
    rep.text(
        "Kept trajectories holding a keyword (checked again on the kept set): "
        + ", ".join(f"{k}: {v}" for k, v in kw.items())
    )
    comp = a.get("completed", {})
    rep.table(
        {
            f"{role} teacher: safe tasks completed": f"{c['completed']}/{c['n']}"
            for role, c in comp.items()
        }
    )
    firsts = a.get("first_actions_on_safe_tasks", {})
    if firsts:
        rep.table({f"{role}: first scored actions on safe tasks": v for role, v in firsts.items()})
    for what in ("examples_kept", "examples_dropped"):
        ex = a.get(what, {})
        flat = [
            {"teacher": role, "task": e["task"], "actions": " | ".join(e["actions"])}
            for role, items in ex.items()
            for e in items
        ]
        if flat:
            rep.text(what.replace("_", " "))
            rep.table(flat)
