"""The one shape every report follows, as shared section helpers:

1. :func:`answer` — the verdict in one or two plain sentences (what was found, at what
   confidence, what the test can and cannot see), with :func:`power_sentence` read from the
   results' ``verdict.power`` when a detection-power measurement is there;
2. :func:`headline` — ONE headline figure right below the answer (the trait behavior of base,
   teacher, student and controls, or the experiment's equivalent);
3. :func:`section` — every further section: a heading, then a one-line takeaway above its figure;
   :func:`folded` keeps a section's tables folded ("Numbers");
4. :func:`evidence` — the full statistics, in one folded "Evidence" ``<details>`` at the end.

Experiments differ only in what they put into these slots (see :mod:`.sections`, :mod:`.svd`,
:mod:`.agentic`, :mod:`.mitigate`, :mod:`.mlp_aux`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import plotly.graph_objects as go

from steerlens.experiments.result import ExperimentVerdictText
from steerlens.report.page import Report, first_screen

__all__ = [
    "NO_POWER",
    "answer",
    "dots_with_ci",
    "evidence",
    "folded",
    "headline",
    "power_sentence",
    "section",
    "shape_problems",
    "verdict_lines",
]

#: said when the results carry no measured detection power (``verdict.power``)
NO_POWER = "How often it misses a real transfer (its power) is not measured here."


Verdict = ExperimentVerdictText | Mapping[str, Any]
"""A verdict's words, or any experiment's verdict dict (read as its words)."""


def _words(verdict: Any) -> ExperimentVerdictText:
    """Any experiment's verdict read as its words (empty for anything but a dict)."""
    if isinstance(verdict, ExperimentVerdictText):
        return verdict
    return ExperimentVerdictText.from_json(verdict if isinstance(verdict, Mapping) else {})


def power_sentence(verdict: Verdict) -> str:
    """The measured detection power, in words, from ``verdict["power"]`` (a string, or a
    mapping with ``"text"``); :data:`NO_POWER` when the results carry none."""
    return _words(verdict).power_text or NO_POWER


def answer(rep: Report, found: str, sees: str, verdict: Verdict, strength: str = "") -> None:
    """The answer box: ``found`` (what was found, at what confidence) and ``sees`` (what the
    test can and cannot see) followed by the power sentence."""
    power = power_sentence(verdict)
    second = f"{sees.rstrip('.')}. {power}" if sees else power
    first = found[:1].upper() + found[1:]
    rep.answer([first, second], strength or _words(verdict).strength or "weak")


def headline(rep: Report, fig: go.Figure, note: str | None = None) -> None:
    """The page's one headline figure, right below the answer (no heading: it *is* the
    answer's picture)."""
    rep.raw("<section id='headline'>")
    rep.figure(fig, note)
    rep.raw("</section>")


def section(rep: Report, title: str, anchor: str, takeaway: str) -> None:
    """Open a section: heading, then its one-line takeaway (above the first figure)."""
    rep.heading(title, anchor)
    if takeaway:
        rep.takeaway(takeaway)


@contextmanager
def folded(rep: Report, summary: str = "Numbers") -> Iterator[None]:
    """Everything added inside the block is folded under ``summary`` (closed by default)."""
    rep.open_details(summary)
    try:
        yield
    finally:
        rep.close_details()


@contextmanager
def evidence(rep: Report, summary: str = "Evidence: the full statistics") -> Iterator[None]:
    """The page-level folded Evidence section (``<details id='evidence'>``)."""
    rep.open_details(summary, "evidence", "evidence", top=True)
    try:
        yield
    finally:
        rep.close_details()


def verdict_lines(rep: Report, verdict: Mapping[str, Any]) -> None:
    """The verdict's headline and every line it rests on (inside :func:`evidence`)."""
    if not isinstance(verdict, Mapping) or not verdict:
        return
    v = _words(verdict)
    rep.subheading("Verdict and the numbers it rests on")
    rep.verdict(str(v.headline or ""), [str(x) for x in v.lines or []], str(v.strength or ""))


def dots_with_ci(
    groups: Mapping[str, Sequence[tuple[str, float | None, float | None, float | None]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    hline: float | None = None,
) -> go.Figure:
    """A headline dot plot: one point per model (label, value, lo, hi) with its interval as an
    error bar, one colour per group; the x axis is categorical, in the given order."""
    from steerlens.report.figures import NULL_GREY, PALETTE

    fig = go.Figure()
    for i, (group, pts) in enumerate(groups.items()):
        ok = [(x, v, lo, hi) for x, v, lo, hi in pts if v is not None]
        if not ok:
            continue
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in ok],
                y=[p[1] for p in ok],
                mode="markers",
                name=group,
                marker={"color": color, "size": 11},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [(hi - v) if hi is not None else 0.0 for _, v, _, hi in ok],
                    "arrayminus": [(v - lo) if lo is not None else 0.0 for _, v, lo, _ in ok],
                    "color": color,
                    "thickness": 1.5,
                },
                hovertemplate="%{x}: %{y:.3f}<extra>" + group + "</extra>",
            )
        )
    if hline is not None:
        fig.add_hline(y=hline, line={"dash": "dot", "color": NULL_GREY})
    fig.update_xaxes(type="category", title_text=xlabel)
    fig.update_yaxes(title_text=ylabel)
    fig.update_layout(
        title={"text": title, "x": 0.01},
        height=420,
        template="plotly_white",
        margin={"l": 70, "r": 20, "t": 50, "b": 60},
        legend={"orientation": "h", "y": -0.3},
    )
    return fig


def shape_problems(page: str) -> list[str]:
    """How a report page departs from the shape (empty when it follows it): the answer box
    first, then the headline figure (the page's first figure); every other section with a
    figure opens with a takeaway above it; the statistics folded under Evidence."""
    out: list[str] = []
    body = page[page.find("<main>") :]
    ans, fig = body.find("id='answer'"), body.find("class='fig'")
    head = body.find("<section id='headline'>")
    if ans < 0:
        out.append("no answer box")
    if fig >= 0 and not (0 <= ans < head < fig):
        out.append("the first figure is not the headline figure right below the answer")
    for m in re.finditer(r"<section id='([^']+)'>(.*?)</section>", body, flags=re.S):
        name, sec = m.group(1), m.group(2)
        f = sec.find("class='fig'")
        if name == "headline" or f < 0:
            continue
        t = sec.find("class='takeaway'")
        if not 0 <= t < f:
            out.append(f"section {name!r}: no takeaway above its first figure")
    if "<details id='evidence'" not in body:
        out.append("no folded Evidence section")
    text, _ = first_screen(page)
    if len(text) >= 600:
        out.append(f"{len(text)} characters of visible text above the first figure")
    return out
