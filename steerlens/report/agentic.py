"""The agentic section of the report: first-action rates with Wilson intervals for base,
teachers and every student checkpoint, action choice, the keyword filter's counts (and that
no kept trajectory holds a keyword), task completion, and example trajectories. The other
sections (verdict, lineage, vector, carry, behavior, tracking, screening) are the owl
report's own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go

from steerlens.report.page import Report
from steerlens.report.shape import dots_with_ci, folded, section

__all__ = ["agentic_answer", "agentic_headline", "section_agentic"]


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


def _pt(name: str, m: Mapping[str, Any]) -> tuple[str, float | None, float | None, float | None]:
    r = m.get("rate") or {}
    return (name, r.get("rate"), r.get("low"), r.get("high"))


def agentic_headline(a: Mapping[str, Any]) -> go.Figure:
    """The headline: the biased-first rate (Wilson 95%) of the base, the teachers and every
    student checkpoint, student and control student side by side."""
    biased = str(a.get("biased", "biased"))
    models, series = a.get("models", {}), a.get("series", {})
    names = {"base": "base", "teacher": "teacher", "control": "control teacher"}
    groups: dict[str, list[Any]] = {
        "base and teachers": [_pt(names[n], models[n]) for n in names if n in models]
    }
    for role, label in (("teacher", "student"), ("control", "control student")):
        groups[label] = [_pt(f"{label} step {ck['step']}", ck) for ck in series.get(role, [])]
    return dots_with_ci(
        groups,
        title=f"{biased}-first rate: base, teachers, student and control student",
        xlabel="model (and training step)",
        ylabel="fraction of episodes (Wilson 95% CI)",
    )


def agentic_answer(a: Mapping[str, Any], verdict: Mapping[str, Any]) -> tuple[str, str]:
    """(found, what the test sees) for an agentic run."""
    head = str(verdict.get("headline") or "").rstrip(".")
    st = (a.get("series", {}).get("teacher") or [{}])[-1].get("rate") or {}
    ct = (a.get("series", {}).get("control") or [{}])[-1].get("rate") or {}
    found = f"{head}."
    if st and ct:
        found = (
            f"{head}; student {st.get('k')}/{st.get('n')} vs control student "
            f"{ct.get('k')}/{ct.get('n')} episodes {a.get('biased', 'biased')}-first."
        )
    sees = (
        "The test sees the first scored action of sampled episodes on held-out ambiguous tasks "
        "(Wilson intervals) and the action-choice probability at the first decision point; it "
        "cannot see rarer biases than the episode count resolves"
    )
    return found, sees


def section_agentic(rep: Report, a: Mapping[str, Any]) -> None:
    """Action choice, filter counts, completion and examples of an agentic run (its rates are
    the headline figure)."""
    biased = str(a.get("biased", "biased"))
    f = (a.get("filter") or {}).get("teacher") or {}
    section(
        rep,
        f"Agent behavior: {biased} first ({a.get('setting')})",
        "agentic",
        f"The keyword filter dropped {f.get('dropped')} of {f.get('total')} teacher "
        "trajectories; the rates per model, with their action choice, are below."
        if f
        else "First-action rates and action choice per model.",
    )
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
    kw = a.get("kept_with_keyword", {})
    section(
        rep,
        "Keyword filter",
        "filter",
        "Kept trajectories holding a keyword (checked again on the kept set): "
        + (", ".join(f"{k}: {v}" for k, v in kw.items()) or "none")
        + ".",
    )
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
            with folded(rep, what.replace("_", " ")):
                rep.table(flat)
