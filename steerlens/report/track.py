"""The alignment-tracking section of a report: student and control EAS across checkpoints at
the verdict's headline layer, the layer × checkpoint heatmaps, EAS per layer at the last
checkpoint against the isotropic null, and the numbers per layer (read from the run's
:class:`~steerlens.track.results.AlignmentTrack` and the verdict's
:class:`~steerlens.experiments.owl_records.OwlAlignment`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from steerlens.experiments.owl_records import OwlAlignment, OwlModel, parse_part
from steerlens.report.figures import PALETTE, heatmap, lines_with_bands, rgba
from steerlens.report.headline import ci_words
from steerlens.report.page import Report
from steerlens.report.shape import folded, section
from steerlens.track.results import AlignmentTrack, ExcessAlignment, SeriesTrack

__all__ = ["section_track"]

_STEP, _LAYER = "training step (optimizer steps; 0 = base)", "layer (block index)"


def _hidden_size(prov: Mapping[str, Any]) -> int | None:
    """d of the base model: ``provenance["base"]["hidden_size"]`` (what tracking writes), else
    a top-level ``provenance["hidden_size"]``."""
    base = parse_part(OwlModel, prov.get("base")) or OwlModel()
    for d in (base.hidden_size, (parse_part(OwlModel, prov) or OwlModel()).hidden_size):
        if isinstance(d, int) and not isinstance(d, bool) and d > 0:
            return d
    return None


def _excess(t: AlignmentTrack) -> ExcessAlignment | None:
    """The track's excess alignment when it has rows."""
    ex = t.excess
    return ex if ex is not None and ex.estimate.ndim == 2 and len(ex.estimate) else None


def _drawable(s: SeriesTrack | None) -> SeriesTrack | None:
    """A series with one row of EAS per step (else nothing to draw)."""
    ok = s is not None and s.steps and s.eas.ndim == 2 and len(s.eas) == len(s.steps)
    return s if ok else None


def _last_layer_figure(
    rep: Report, t: AlignmentTrack, main: SeriesTrack, ctrl: SeriesTrack | None
) -> None:
    layers, ex = t.layers, _excess(t)
    exname, n, d = "excess (student − base control)", len(t.layers), _hidden_size(t.provenance)
    last = {"student": main.eas[-1].tolist()}
    last |= {} if ctrl is None else {"base control": ctrl.eas[-1].tolist()}
    last |= {} if ex is None else {exname: ex.estimate[-1].tolist()}
    s = 1.96 / math.sqrt(d) if d else 0.0
    bands = {f"isotropic null ±1.96/√d (95%, d={d})": ([-s] * n, [s] * n)} if d else {}
    bands |= {} if ex is None else {exname: (ex.lo[-1].tolist(), ex.hi[-1].tolist())}
    rep.figure(
        lines_with_bands(
            layers,
            last,
            bands=bands,
            title=f"Last checkpoint (step {main.steps[-1]}): EAS per layer",
            xlabel=_LAYER,
            ylabel="cosine with vᵀ (unitless)",
            hline=0.0,
        ),
        "Excess alignment with its bootstrap CI over probe prompts; the grey band is the "
        "isotropic random-direction null ±1.96/√d (a random direction has |cos| ≈ √(2/(πd)) "
        "on average). Per-layer intervals: not corrected for picking a layer after looking; "
        "the verdict reads only the headline layer fixed in advance.",
    )


def _excess_figure(
    rep: Report, t: AlignmentTrack, main: SeriesTrack, ctrl: SeriesTrack | None, layer: int | None
) -> None:
    """Student and control EAS across checkpoints at the verdict's headline layer (fixed from
    the teacher side); without one, the layer of the largest |excess| (said in the title)."""
    ex = _excess(t)
    if ex is None or not ex.estimate[-1].size:
        return
    last = np.asarray(ex.estimate[-1], dtype=float)
    if layer is not None and layer in t.layers:
        j, why = t.layers.index(layer), "headline layer, fixed in advance"
    else:
        j = int(np.nanargmax(np.abs(last))) if np.isfinite(last).any() else 0
        why = "largest |excess|: selected after looking, the CI is per layer"
    curves = {"student EAS": main.eas[:, j].tolist()}
    curves |= {} if ctrl is None else {"base control EAS": ctrl.eas[:, j].tolist()}
    fig = lines_with_bands(
        main.steps,
        curves,
        title=f"Layer {t.layers[j]} ({why}): student vs base control across checkpoints",
        xlabel=_STEP,
        ylabel="EAS (cosine, unitless)",
        hline=0.0,
    )
    hi, lo, est = (a[:, j].tolist() for a in (ex.hi, ex.lo, ex.estimate))
    fig.add_scatter(x=ex.steps, y=hi, mode="lines", line={"width": 0}, showlegend=False)
    fig.add_scatter(
        x=ex.steps,
        y=lo,
        mode="lines",
        line={"width": 0},
        fill="tonexty",
        fillcolor=rgba(PALETTE[3], 0.15),
        name="excess CI (95%)",
    )
    fig.add_scatter(
        x=ex.steps, y=est, mode="lines+markers", name="excess", line={"color": PALETTE[3]}
    )
    rep.figure(fig)


def _layer_by_step(
    grid: np.ndarray, s: SeriesTrack, t: AlignmentTrack, title: str, zlabel: str
) -> Any:
    """A layer × checkpoint heatmap of one of series ``s``'s grids."""
    return heatmap(
        grid.T.tolist(), s.steps, t.layers, title=title, xlabel=_STEP, ylabel=_LAYER, zlabel=zlabel
    )


def _cell(grid: np.ndarray, j: int) -> float:
    return float(grid[-1][j]) if grid.ndim == 2 and len(grid) and grid.shape[1] > j else math.nan


def _track_table(
    rep: Report, t: AlignmentTrack, main: SeriesTrack, ctrl: SeriesTrack | None
) -> None:
    ex = _excess(t)
    rows = []
    for j, layer in enumerate(t.layers):
        row: dict[str, Any] = {
            "layer": layer,
            "EAS": _cell(main.eas, j),
            "proj": _cell(main.proj, j),
            "norm": _cell(main.norm, j),
            "z (iso)": _cell(main.z_iso, j),
            "z (cov)": _cell(main.z_cov, j),
            "p adj": _cell(main.p_adj, j),
        }
        row |= {} if ctrl is None else {"EAS control": _cell(ctrl.eas, j)}
        if ex is not None:
            ci = f"[{_cell(ex.lo, j):+.3f}, {_cell(ex.hi, j):+.3f}]"
            row |= {"excess": _cell(ex.estimate, j), "CI": ci}
        rows.append(row)
    correction = t.settings.get("correction") or "multiplicity"
    rep.text(
        f"Last checkpoint, per layer ({correction}-corrected p against isotropic and "
        "covariance-matched random directions)."
    )
    rep.table(rows)


def _track_takeaway(t: AlignmentTrack, al: OwlAlignment | None) -> str:
    ex, st = (None, None) if al is None else (al.excess_vs_control, al.student)
    if al is not None and al.layer is not None and (ex or st):
        parts = []
        if st is not None:
            parts.append(
                f"the student's EAS is {st.eas:+.2f} (p = {st.p:.2g} against random directions)"
            )
        if ex is not None:
            parts.append(f"its excess over the base control {ci_words(ex)}")
        sig = "an activation signature" if al.signature else "no activation signature"
        return (
            f"At layer {al.layer} (fixed in advance) "
            + ", ".join(parts)
            + f": {sig} (it needs both)."
        )
    if (tex := _excess(t)) is not None and tex.estimate[-1].size:
        last = [x for x in tex.estimate[-1].tolist() if math.isfinite(x)]
        if last:
            return (
                f"Excess alignment over the base control at the last checkpoint: "
                f"{min(last):+.2f} to {max(last):+.2f} across layers (per-layer, uncorrected)."
            )
    return "Cosine of the student's activation shift with the teacher vector, per layer."


def section_track(rep: Report, t: AlignmentTrack, al: OwlAlignment | None = None) -> None:
    main, ctrl = _drawable(t.series.get("main")), _drawable(t.series.get("control"))
    section(
        rep,
        "Alignment of the student's shift with the teacher vector",
        "track",
        _track_takeaway(t, al) if main is not None and t.layers else "",
    )
    if main is None or not t.layers:
        rep.text("(no tracking results)")
        return
    _excess_figure(rep, t, main, ctrl, None if al is None else al.layer)
    rep.figure(
        _layer_by_step(
            main.eas, main, t, "EAS = cos(vˢ(n), vᵀ): layer × checkpoint (student)", "EAS (cos)"
        ),
        "vˢ(n) = mean h(θₙ) − mean h(θ₀) over probe prompts; step 0 is the base (zero shift).",
    )
    _last_layer_figure(rep, t, main, ctrl)
    if main.proj.ndim == 2 and len(main.proj) == len(main.steps):
        rep.figure(
            _layer_by_step(
                main.proj, main, t, "Projection vˢ·vᵀ/‖vᵀ‖ (student)", "proj (resid. units)"
            )
        )
    with folded(rep, "Numbers per layer"):
        _track_table(rep, t, main, ctrl)
