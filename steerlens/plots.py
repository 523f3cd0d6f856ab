"""Plotly figure builders for the report and for every result's ``_repr_html_``: heatmaps on
categorical axes, curves with shaded bands, horizontal bars. Every builder takes axis titles
(with units) and returns a ``go.Figure``; none reads results (the report's sections and each
result's ``main_figure`` do). :func:`figure_html` embeds a figure in notebook HTML.

A leaf module (numpy and plotly only), below :mod:`steerlens.core.results`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

__all__ = [
    "NULL_GREY",
    "PALETTE",
    "bars",
    "figure_html",
    "heatmap",
    "lines_with_bands",
    "rgba",
    "scatter_with_errors",
]

PALETTE = ["#4a6cf7", "#e8590c", "#2b8a3e", "#ae3ec9", "#1098ad", "#f08c00", "#c92a2a"]
#: colour of null / reference bands that belong to no curve
NULL_GREY = "#868e96"


def rgba(hex_color: str, alpha: float) -> str:
    """``#rrggbb`` as an ``rgba(...)`` string with opacity ``alpha``."""
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _int_ticks(fig: go.Figure, axis: str, values: Sequence[Any]) -> None:
    """Integer ticks (layers, steps) at a readable spacing on a numeric axis: no 0.5 layer."""
    nums = [v for v in values if isinstance(v, (int, np.integer)) and not isinstance(v, bool)]
    if not nums or len(nums) != len(values):
        return
    span = max(nums) - min(nums)
    dtick = next(
        (d for d in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000) if d * 12 >= span), 1000
    )
    getattr(fig, f"update_{axis}axes")(dtick=dtick, tick0=0)


def _layout(fig: go.Figure, title: str, x: str, y: str, height: int = 380) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01},
        xaxis_title=x,
        yaxis_title=y,
        height=height,
        template="plotly_white",
        margin={"l": 70, "r": 20, "t": 50, "b": 60},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def _label(v: Any) -> str:
    """A category label: 4.0 → "4", 0.5 → "0.5", 12 → "12"."""
    if isinstance(v, float) and math.isfinite(v):
        return f"{v:g}"
    return str(v)


def heatmap(
    z: Sequence[Sequence[float]],
    x: Sequence[Any],
    y: Sequence[Any],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    zlabel: str,
    symmetric: bool = True,
) -> go.Figure:
    """A (y × x) heatmap, diverging around 0 when ``symmetric``. Both axes are categorical:
    each x value (checkpoint step, α) and each y value (layer) is one equal cell, whatever
    the spacing of the values."""
    vals = [abs(v) for row in z for v in row if v is not None and math.isfinite(v)]
    lim = max(vals) if vals and max(vals) > 0 else 1.0
    kw: dict[str, Any] = (
        {"zmid": 0, "zmin": -lim, "zmax": lim, "colorscale": "RdBu_r"}
        if symmetric
        else {"colorscale": "Viridis"}
    )
    xs, ys = [_label(v) for v in x], [_label(v) for v in y]
    fig = go.Figure(
        go.Heatmap(
            z=[list(row) for row in z],
            x=xs,
            y=ys,
            colorbar={"title": {"text": zlabel}},
            hovertemplate=f"{xlabel} %{{x}}<br>{ylabel} %{{y}}<br>{zlabel} %{{z:.3f}}<extra></extra>",
            xgap=1,
            ygap=1 if len(ys) <= 40 else 0,
            **kw,
        )
    )
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=xs)
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=ys)
    if len(ys) > 24:
        fig.update_yaxes(dtick=2 if len(ys) <= 48 else 5)
    return _layout(fig, title, xlabel, ylabel, height=max(320, 14 * len(ys) + 130))


def _band(
    x: list[Any], lo: list[float], hi: list[float], color: str, name: str, *, strong: bool
) -> go.Scatter:
    """A shaded interval; at a single x (one α, one step) a vertical error bar instead, since a
    one-point polygon draws nothing."""
    if len(x) == 1:
        mid = (hi[0] + lo[0]) / 2
        return go.Scatter(
            x=x,
            y=[mid],
            mode="markers",
            marker={"symbol": "line-ew-open", "size": 14, "color": color},
            error_y={"type": "data", "array": [hi[0] - mid], "color": color, "width": 10},
            name=name,
            hoverinfo="skip",
        )
    return go.Scatter(
        x=x + x[::-1],
        y=hi + lo[::-1],
        mode="lines",
        fill="toself",
        fillcolor=rgba(color, 0.22 if strong else 0.15),
        line={"width": 0},
        name=name,
        hoverinfo="skip",
        showlegend=True,
    )


def lines_with_bands(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    bands: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    title: str,
    xlabel: str,
    ylabel: str,
    hline: float | None = None,
) -> go.Figure:
    """Curves with optional shaded intervals keyed by name. A band named like a curve takes
    that curve's colour (its CI); any other band (a null) is grey."""
    names = list(series)
    fig = go.Figure()
    for name, (lo, hi) in (bands or {}).items():
        color = PALETTE[names.index(name) % len(PALETTE)] if name in series else NULL_GREY
        label = f"{name} band" if name in series else name
        fig.add_trace(_band(list(x), list(lo), list(hi), color, label, strong=name not in series))
    for i, (name, ys) in enumerate(series.items()):
        fig.add_trace(
            go.Scatter(
                x=list(x),
                y=list(ys),
                mode="lines+markers",
                name=name,
                line={"color": PALETTE[i % len(PALETTE)], "width": 2},
            )
        )
    if hline is not None:
        fig.add_hline(y=hline, line={"dash": "dot", "color": NULL_GREY})
    _int_ticks(fig, "x", list(x))
    return _layout(fig, title, xlabel, ylabel)


def bars(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    colors: Sequence[str] | None = None,
) -> go.Figure:
    """Horizontal bars, first label on top."""
    fig = go.Figure(
        go.Bar(
            x=list(values),
            y=list(labels),
            orientation="h",
            marker={"color": list(colors) if colors else PALETTE[0]},
            showlegend=False,
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig = _layout(fig, title, xlabel, ylabel, height=max(300, 22 * len(labels) + 130))
    fig.update_layout(margin={"l": 20})
    fig.update_yaxes(automargin=True)
    return fig


_JS_SENT: list[bool] = []


def scatter_with_errors(
    points: Mapping[str, Sequence[tuple[str, float, float, float | None, float | None]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    hline: float | None = None,
) -> go.Figure:
    """Labelled points with vertical error bars, one trace per group: ``points[group]`` is a
    list of (label, x, y, y_lo, y_hi) (None bounds: no bar)."""
    fig = go.Figure()
    for i, (group, pts) in enumerate(points.items()):
        color = PALETTE[i % len(PALETTE)]
        plus = [(hi - y) if hi is not None else 0.0 for _, _, y, _, hi in pts]
        minus = [(y - lo) if lo is not None else 0.0 for _, _, y, lo, _ in pts]
        fig.add_trace(
            go.Scatter(
                x=[p[1] for p in pts],
                y=[p[2] for p in pts],
                text=[p[0] for p in pts],
                mode="markers+text",
                textposition="top center",
                name=group,
                marker={"color": color, "size": 10},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": plus,
                    "arrayminus": minus,
                    "color": color,
                },
            )
        )
    if hline is not None:
        fig.add_hline(y=hline, line={"dash": "dot", "color": NULL_GREY})
    return _layout(fig, title, xlabel, ylabel, height=420)


def figure_html(fig: go.Figure, *, height: int = 340) -> str:
    """A figure as an HTML fragment for a notebook cell. plotly.js is inlined in the first
    figure of the session (offline, as plotly's own ``notebook`` renderer does) and reused by
    the later ones; every fragment is wrapped in ``<div class="steerlens-figure">``."""
    first = not _JS_SENT
    _JS_SENT.append(True)
    fig.update_layout(height=min(int(fig.layout.height or height), 520))
    body = fig.to_html(full_html=False, include_plotlyjs=first, default_width="100%")
    return f"<div class='steerlens-figure'>{body}</div>"
