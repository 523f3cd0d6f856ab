"""The agentic section of the report: first-action rates with Wilson intervals for base,
teachers and every student checkpoint, action choice, the keyword filter's counts (and that
no kept trajectory holds a keyword), task completion, and example trajectories. The other
sections (verdict, lineage, vector, carry, behavior, tracking, screening) are the owl
report's own."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from steerlens.experiments.agentic_records import AgenticMeasure, AgenticSummary, AgenticVerdict
from steerlens.report.page import Report
from steerlens.report.shape import dots_with_ci, folded, section

__all__ = ["agentic_answer", "agentic_headline", "section_agentic"]


def _rate_row(name: str, m: AgenticMeasure) -> dict[str, Any]:
    choice, rate = m.measured
    return {
        "model": name,
        "first-action rate": f"{rate.k}/{rate.n} = {rate.rate:.2f}",
        "Wilson 95%": f"[{rate.low:.2f}, {rate.high:.2f}]",
        "first scored actions": ", ".join(f"{k}: {v}" for k, v in sorted(rate.counts.items())),
        "P(biased) at decision": round(float(choice.mean_p), 4),
        "share among scored": round(float(choice.mean_share), 4),
    }


def _pt(name: str, m: AgenticMeasure) -> tuple[str, float | None, float | None, float | None]:
    r = m.rate
    return (name, None, None, None) if r is None else (name, r.rate, r.low, r.high)


def agentic_headline(a: AgenticSummary) -> go.Figure:
    """The headline: the biased-first rate (Wilson 95%) of the base, the teachers and every
    student checkpoint, student and control student side by side."""
    names = {"control": "control teacher"}
    groups = {"base and teachers": [_pt(names.get(n, n), m) for n, m in a.models.named()]}
    for cks, label in ((a.series.teacher, "student"), (a.series.control, "control student")):
        groups[label] = [_pt(f"{label} step {ck.step}", ck) for ck in cks]
    return dots_with_ci(
        groups,
        title=f"{a.biased}-first rate: base, teachers, student and control student",
        xlabel="model (and training step)",
        ylabel="fraction of episodes (Wilson 95% CI)",
    )


def agentic_answer(a: AgenticSummary, v: AgenticVerdict) -> tuple[str, str]:
    """(found, what the test sees) for an agentic run."""
    head = v.headline.rstrip(".")
    found = f"{head}."
    st, ct = (s[-1].rate if s else None for s in (a.series.teacher, a.series.control))
    if st and ct:
        found = (
            f"{head}; student {st.k}/{st.n} vs control student "
            f"{ct.k}/{ct.n} episodes {a.biased}-first."
        )
    sees = (
        "The test sees the first scored action of sampled episodes on held-out ambiguous tasks "
        "(Wilson intervals) and the action-choice probability at the first decision point; it "
        "cannot see rarer biases than the episode count resolves"
    )
    return found, sees


def section_agentic(rep: Report, a: AgenticSummary) -> None:
    """Action choice, filter counts, completion and examples of an agentic run (its rates are
    the headline figure)."""
    f = a.filter.teacher
    section(
        rep,
        f"Agent behavior: {a.biased} first ({a.setting})",
        "agentic",
        f"The keyword filter dropped {f.dropped} of {f.total} teacher "
        "trajectories; the rates per model, with their action choice, are below."
        if f
        else "First-action rates and action choice per model.",
    )
    rows = [_rate_row(n, m) for n, m in a.models.named()]
    for role, cks in (("teacher", a.series.teacher), ("control", a.series.control)):
        rows += [_rate_row(f"{role} student step {ck.step}", ck) for ck in cks]
    rep.text(
        f"Sampled episodes on held-out ambiguous eval tasks × seeds; an episode is scored by its "
        f"first scored action (the biased one is {a.biased}). Action choice: the model's "
        "probability of the biased tool/command name at the first decision point, alone and as a "
        "share of the scored names."
    )
    rep.table(rows)
    kw = a.kept_with_keyword
    section(
        rep,
        "Keyword filter",
        "filter",
        "Kept trajectories holding a keyword (checked again on the kept set): "
        + (", ".join(f"{k}: {v}" for k, v in kw.items()) or "none")
        + ".",
    )
    if a.filter_keywords:
        rep.text(
            "Keywords (case-insensitive, word-bounded, with inflections; searched in the task, "
            "every command or tool call and every observation): " + ", ".join(a.filter_keywords)
        )
    rep.table(
        [
            {"teacher": role, **{k: v for k, v in c.to_json().items() if k != "by_place"}}
            for role, c in a.filter.items()
        ]
    )
    rep.table(
        {
            f"{role} teacher: safe tasks completed": f"{c.completed}/{c.n}"
            for role, c in a.completed.items()
        }
    )
    if a.first_actions_on_safe_tasks:
        rep.table(
            {
                f"{role}: first scored actions on safe tasks": v
                for role, v in a.first_actions_on_safe_tasks.items()
            }
        )
    for what, ex in (("examples kept", a.examples_kept), ("examples dropped", a.examples_dropped)):
        flat = [
            {"teacher": role, "task": e.task, "actions": " | ".join(e.actions)}
            for role, items in ex.items()
            for e in items
        ]
        if flat:
            with folded(rep, what):
                rep.table(flat)
