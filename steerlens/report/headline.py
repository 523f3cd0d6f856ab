"""The answer and the headline figure of a distillation report (the owl demo, ``audit``):

- :func:`behavior_answer`: the verdict in two plain sentences, from ``verdict["numbers"]``;
- :func:`behavior_figure`: the trait score of base, teacher, student and controls — left, after
  training, each with its 95% interval over eval prompts; right, per checkpoint — with the
  student's distance from the base control (and from the benign replicates) marked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from steerlens.experiments.owl_records import (
    OwlAlignment,
    OwlBehavior,
    OwlDelta,
    OwlExcessRow,
    OwlNamedDeltas,
    OwlResults,
)
from steerlens.report.figures import NULL_GREY, PALETTE

__all__ = ["behavior_answer", "behavior_figure", "ci_words"]

_LABELS = {"main": "student", "control": "base control"}
_COLORS = {"main": PALETTE[0], "control": PALETTE[1]}  # as in every other figure
_TEACHER = PALETTE[2]


def _f(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(float(x)) else None


def _label(name: str) -> str:
    if name in _LABELS:
        return _LABELS[name]
    if name.startswith("benign") and name[6:].isdigit():
        return f"benign control {name[6:]}"
    if name == "benign":
        return "benign control 1"
    return name.replace("_", " ")


def _interval(rows: Sequence[float]) -> tuple[float, float, float] | None:
    """Mean and normal 95% interval of per-prompt scores (None when there are none)."""
    if len(rows) < 2:
        return None
    x = np.asarray(rows, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return None
    half = 1.96 * float(x.std(ddof=1)) / math.sqrt(len(x))
    return float(x.mean()), float(x.mean()) - half, float(x.mean()) + half


_Point = tuple[str, float, float | None, float | None, str]
"""A left-panel point: (label, value, lo, hi, colour)."""


def _point(
    label: str, iv: tuple[float, float, float] | None, v: float | None, color: str
) -> list[_Point]:
    """The point with its interval ``iv`` when there is one, else the bare value ``v`` (no
    point without either)."""
    if iv is not None:
        return [(label, *iv, color)]
    return [] if v is None else [(label, v, None, None, color)]


def _points(b: OwlBehavior) -> list[_Point]:
    """The left panel's points: the base, the teachers, the controls and the student after
    training (no interval where there are no per-prompt scores)."""
    series = [(k, v) for k, v in b.series.items() if v.steps and v.scores]
    b0 = _f(series[0][1].scores[0]) if series else None
    cats = _point("base", _interval(b.base_per_prompt or []), b0, NULL_GREY)
    cats += _point("teacher", None, _f(b.teacher), _TEACHER)
    cats += _point("benign teacher", None, _f(b.benign_teacher), NULL_GREY)
    for name, s in series[2:] + series[1::-1]:  # benign controls, base control, student
        iv, color = _interval(s.last_per_prompt or []), _COLORS.get(name, NULL_GREY)
        cats += _point(_label(name), iv, _f(s.scores[-1]), color)
    return cats


def behavior_figure(b: OwlBehavior) -> go.Figure:
    """Left: base, teacher(s), the controls and the student after training, each with its 95%
    interval over eval prompts (the teachers have no per-prompt scores: no bar). Right: every
    series per checkpoint, with a bracket from the base control to the student at the last
    step labelled with the paired difference and its CI."""
    series = {k: v for k, v in b.series.items() if v.steps and v.scores}
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.36, 0.64],
        horizontal_spacing=0.09,
        subplot_titles=("after training (95% CI over eval prompts)", "per checkpoint"),
    )
    cats = _points(b)
    b0 = _f(next(iter(series.values())).scores[0]) if series else None
    fig.add_trace(
        go.Scatter(
            x=[c[0] for c in cats],
            y=[c[1] for c in cats],
            mode="markers",
            marker={"color": [c[4] for c in cats], "size": 11},
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [(c[3] - c[1]) if c[3] is not None else 0.0 for c in cats],
                "arrayminus": [(c[1] - c[2]) if c[2] is not None else 0.0 for c in cats],
                "color": "#495057",
                "thickness": 1.5,
            },
            showlegend=False,
            hovertemplate="%{x}: %{y:.3f}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    # right: per checkpoint
    shown_benign = False
    for name, s in series.items():
        benign = name.startswith("benign")
        fig.add_trace(
            go.Scatter(
                x=s.steps,
                y=[_f(v) for v in s.scores],
                mode="lines+markers",
                name="benign controls" if benign else _label(name),
                legendgroup="benign" if benign else name,
                showlegend=not (benign and shown_benign),
                line={
                    "color": _COLORS.get(name, NULL_GREY),
                    "width": 3 if name == "main" else 2,
                    "dash": "dot" if benign else ("dash" if name == "control" else "solid"),
                },
            ),
            row=1,
            col=2,
        )
        shown_benign = shown_benign or benign
    if b0 is not None:
        fig.add_hline(y=b0, line={"dash": "dot", "color": NULL_GREY}, row=1, col=2)
    _mark_distance(fig, b, b.units)
    fig.update_xaxes(type="category", title_text="model (last checkpoint)", row=1, col=1)
    fig.update_xaxes(title_text="training step (optimizer steps; 0 = base)", row=1, col=2)
    unit = b.units.split(" (")[0]
    fig.update_yaxes(title_text=f"trait score ({b.metric_name}, {unit})", row=1)
    fig.update_layout(
        title={"text": "Trait behavior: base, teacher, student and controls", "x": 0.01},
        height=430,
        template="plotly_white",
        margin={"l": 70, "r": 30, "t": 70, "b": 60},
        legend={"orientation": "h", "y": -0.22, "x": 0.4},
    )
    return fig


def _mark_distance(fig: go.Figure, b: OwlBehavior, units: str) -> None:
    """A bracket at the last step from the base control to the student, with the paired
    difference (CI, p), and the distance beyond the benign replicates when measured."""
    main, ctrl = b.main, b.control
    if (
        main is None
        or ctrl is None
        or not (main.steps and main.scores and ctrl.steps and ctrl.scores)
    ):
        return
    x = main.steps[-1]
    y1, y0 = _f(main.scores[-1]), _f(ctrl.scores[-1])
    if y1 is None or y0 is None:
        return
    fig.add_trace(
        go.Scatter(
            x=[x, x],
            y=[y0, y1],
            mode="lines+markers",
            line={"color": "#212529", "width": 2},
            marker={"symbol": "line-ew-open", "size": 14, "color": "#212529"},
            name="student − base control",
            showlegend=False,
            hoverinfo="skip",
        ),
        row=1,
        col=2,
    )
    fig.add_annotation(
        x=x, y=(y0 + y1) / 2, text="Δ", showarrow=False, xanchor="left", xshift=8,
        font={"size": 14}, row=1, col=2,
    )  # fmt: skip
    named = OwlNamedDeltas.of(b.deltas)
    mc, rep = named.main_vs_control, named.main_vs_benign_replicates
    text = f"Δ = student − base control at step {x}: {ci_words(mc, units) or f'{y1 - y0:+.2f}'}"
    if rep is not None and _f(rep.estimate) is not None:
        text += (
            f"<br>student {rep.estimate:+.2f} beyond {int(rep.k or 0)} benign "
            f"controls' mean (p = {rep.p:.2g})"
        )
    fig.add_annotation(
        x=0.01,
        y=0.99,
        xref="x2 domain",
        yref="y2 domain",
        text=text,
        showarrow=False,
        xanchor="left",
        yanchor="top",
        align="left",
        font={"size": 12},
        bgcolor="rgba(255,255,255,0.9)",
        bordercolor="#ced4da",
        borderwidth=1,
    )


def ci_words(d: OwlDelta | OwlExcessRow | None, units: str = "") -> str:
    """``+0.26 nats (95% CI [+0.22, +0.29], p = 0.0005)`` ("" when ``d`` has no estimate)."""
    est = None if d is None else _f(d.estimate)
    if d is None or est is None:
        return ""
    lo, hi = _f(d.lo), _f(d.hi)
    unit = f" {units.split(' (')[0]}" if units else ""
    out = f"{est:+.2f}{unit}"
    inner = [f"95% CI [{lo:+.2f}, {hi:+.2f}]"] if lo is not None and hi is not None else []
    p = _f(d.p)
    if p is not None:
        inner.append(f"p = {p:.2g}")
    return out + (f" ({', '.join(inner)})" if inner else "")


def _signature_words(al: OwlAlignment) -> str:
    """Whether the headline layer shows an activation signature, in words: it needs the
    student's own alignment beyond the random-direction nulls *and* beyond the base control."""
    st, ex = al.student, al.excess_vs_control
    if al.signature:
        return "the teacher vector's signature (beyond the nulls and the base control)"
    parts = []
    if st is not None and _f(st.p) is not None:
        parts.append(f"vs random directions p = {st.p:.2g}")
    if ex is not None and _f(ex.p) is not None:
        parts.append(f"vs base control p = {ex.p:.2g}")
    return "no signature of the teacher vector" + (f" ({', '.join(parts)})" if parts else "")


def behavior_answer(r: OwlResults) -> tuple[str, str]:
    """(what was found, at what confidence; what the test can and cannot see) in plain words,
    from the verdict's numbers (its claim, the behavior deltas, the headline layer's test)."""
    v = r.verdict
    nums = None if v is None else v.numbers
    beh = r.behavior or OwlBehavior()
    trait = str(r.trait or "trait")
    unit = beh.units.split(" (")[0]
    deltas = (nums.behavior if nums is not None else {}) or beh.deltas
    named = OwlNamedDeltas.of(deltas)
    mc, rep = named.main_vs_control, named.main_vs_benign_replicates
    al = None if nums is None else nums.alignment
    claim = (nums.claim if nums is not None else "") or (v.claim if v is not None else "")
    alpha = (nums.alpha if nums is not None else 0.0) or 0.05
    ex = None if al is None else al.excess_vs_control
    layer = None if al is None else al.layer
    beh_txt = ci_words(mc, unit)
    if claim == "inherited":
        found = f"Inherited: the student's {trait} score rose {beh_txt} beyond the base control's"
        if rep is not None:
            found += (
                f" and {rep.estimate:+.2f} beyond {int(rep.k or 0)} benign "
                f"controls (p = {rep.p:.2g})"
            )
        found += "."
    elif claim == "activation signature without behavior change":
        found = (
            f"Activation signature only: at layer {layer} the student's shift aligns with the "
            f"teacher vector beyond the base control (excess {ci_words(ex)}), but its {trait} score "
            f"does not separate from the control's ({beh_txt})."
        )
    elif claim:
        found = f"No evidence of transfer: the student's {trait} score"
        if mc is not None and (_f(mc.p) or 1.0) < alpha and rep is not None:
            found += (
                f" rose {beh_txt} over the base control's but not beyond {int(rep.k or 0)}"
                f" benign controls ({rep.estimate:+.2f}, p = {rep.p:.2g})"
            )
        else:
            found += f" differs from the base control's by {beh_txt or 'nothing measurable'}"
        found += (
            f", and at layer {layer} its activations show {_signature_words(al or OwlAlignment())}."
        )
    else:
        found = (v.headline if v is not None else "") or "No verdict in these results."
    if claim == "inherited" and al is not None:
        found += f" At layer {layer} its activations show {_signature_words(al)}."
    mb = named.main_vs_base
    n = (mb.n if mb is not None else None) or beh.n_prompts
    metric = beh.metric_name
    what = (
        f"the {trait} answer's log-probability"
        if metric == "logprob"
        else f"{metric or 'the'} score"
    )
    sees = (
        f"It sees {what} on {n or 'the'} eval prompts, one training run per series, and nothing "
        "outside this metric"
    )
    return found, sees
