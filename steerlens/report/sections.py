"""One function per report section, each over its part of the results dict (read through
:mod:`steerlens.report.views`), and :func:`render_report`, which puts them on one page."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from steerlens.common import jsonable
from steerlens.pipeline.power import DetectionResult
from steerlens.report.agentic import agentic_answer, agentic_headline, section_agentic
from steerlens.report.carry import section_carry
from steerlens.report.detect import detect_answer, section_detect
from steerlens.report.evidence import section_evidence
from steerlens.report.figures import PALETTE, bars, heatmap, lines_with_bands, rgba
from steerlens.report.headline import behavior_answer, behavior_figure, ci_words
from steerlens.report.lineage import section_lineage
from steerlens.report.mitigate import mitigate_answer, mitigate_headline, section_mitigate
from steerlens.report.mlp_aux import render_mlp_aux
from steerlens.report.page import Report
from steerlens.report.shape import (
    answer,
    evidence,
    folded,
    headline,
    section,
    verdict_lines,
)
from steerlens.report.svd import section_svd, svd_answer, svd_headline
from steerlens.report.views import (
    BehaviorView,
    CarryView,
    ScreenView,
    SeriesView,
    TrackView,
    VectorView,
    num,
)

__all__ = ["render_report"]


def _m(d: Any) -> Mapping[str, Any]:
    return d if isinstance(d, Mapping) else {}


def _section_vector(rep: Report, v: VectorView) -> None:
    meta = v.meta
    cos = [num(x.get("mean")) for x in v.split_half.values()]
    cos = [x for x in cos if math.isfinite(x)]
    take = "The teacher's direction per layer (trait system prompt − neutral one)."
    if cos:
        lo = min(cos)
        word = "reliable" if lo >= 0.8 else ("fairly stable" if lo >= 0.5 else "noisy")
        take = (
            f"The teacher vector is {word}: split-half cosine {lo:.2f}–{max(cos):.2f} "
            "across layers."
        )
    section(rep, "Teacher vector", "vector", take)
    details = ", ".join(
        f"{k} {meta[k]}" for k in ("method", "position", "site", "kind") if meta.get(k) is not None
    )
    if meta.get("n_pos") is not None:
        details += f", {meta['n_pos']} prompt pairs"
    if details:
        rep.text(details.strip(", ") + ".")
    layers = list(v.norms)
    fig = lines_with_bands(
        layers,
        {"‖v‖": [v.norms[k] for k in layers]},
        title="Teacher vector norm per layer",
        xlabel="layer (block index)",
        ylabel="‖vᵀ‖ (L2 norm, residual-stream units)",
    )
    rep.figure(fig)
    if v.split_half:
        ls = list(v.split_half)
        sh = v.split_half
        fig = lines_with_bands(
            ls,
            {"split-half cosine": [num(sh[k].get("mean")) for k in ls]},
            bands={
                "split-half cosine": (
                    [num(sh[k].get("lo")) for k in ls],
                    [num(sh[k].get("hi")) for k in ls],
                )
            },
            title="Reliability: cosine between vectors from two halves of the prompts",
            xlabel="layer (block index)",
            ylabel="cosine (unitless, −1…1)",
        )
        rep.figure(fig, "Bootstrap over random half splits of the prompt pairs (95% band).")


def _last_layer_figure(rep: Report, t: TrackView, main: SeriesView) -> None:
    layers = t.layers
    last = {"student": main.eas[-1]}
    if t.control:
        last["base control"] = t.control.eas[-1]
    bands: dict[str, tuple[list[float], list[float]]] = {}
    if t.hidden_size:
        s = 1.96 / math.sqrt(t.hidden_size)
        bands[f"isotropic null ±1.96/√d (95%, d={t.hidden_size})"] = (
            [-s] * len(layers),
            [s] * len(layers),
        )
    if t.excess:
        last["excess (student − base control)"] = t.excess.estimate[-1]
        bands["excess (student − base control)"] = (t.excess.lo[-1], t.excess.hi[-1])
    rep.figure(
        lines_with_bands(
            layers,
            last,
            bands=bands,
            title=f"Last checkpoint (step {main.steps[-1]}): EAS per layer",
            xlabel="layer (block index)",
            ylabel="cosine with vᵀ (unitless)",
            hline=0.0,
        ),
        "Excess alignment with its bootstrap CI over probe prompts; the grey band is the "
        "isotropic random-direction null ±1.96/√d (a random direction has |cos| ≈ √(2/(πd)) "
        "on average). Per-layer intervals: not corrected for picking a layer after looking; "
        "the verdict reads only the headline layer fixed in advance.",
    )


def _excess_figure(rep: Report, t: TrackView, main: SeriesView, layer: int | None = None) -> None:
    """Student and control EAS across checkpoints at the verdict's headline layer (fixed from
    the teacher side); without one, the layer of the largest |excess| (said in the title)."""
    ex = t.excess
    if ex is None or not ex.estimate[-1]:
        return
    last = np.array(ex.estimate[-1], dtype=float)
    if layer is not None and layer in t.layers:
        j, why = t.layers.index(layer), "headline layer, fixed in advance"
    else:
        j = int(np.nanargmax(np.abs(last))) if np.isfinite(last).any() else 0
        why = "largest |excess|: selected after looking, the CI is per layer"
    curves = {"student EAS": [r[j] for r in main.eas]}
    if t.control:
        curves["base control EAS"] = [r[j] for r in t.control.eas]
    fig = lines_with_bands(
        main.steps,
        curves,
        title=f"Layer {t.layers[j]} ({why}): student vs base control across checkpoints",
        xlabel="training step (optimizer steps; 0 = base)",
        ylabel="EAS (cosine, unitless)",
        hline=0.0,
    )
    fig.add_scatter(
        x=ex.steps, y=[r[j] for r in ex.hi], mode="lines", line={"width": 0}, showlegend=False
    )
    fig.add_scatter(
        x=ex.steps,
        y=[r[j] for r in ex.lo],
        mode="lines",
        line={"width": 0},
        fill="tonexty",
        fillcolor=rgba(PALETTE[3], 0.15),
        name="excess CI (95%)",
    )
    fig.add_scatter(
        x=ex.steps,
        y=[r[j] for r in ex.estimate],
        mode="lines+markers",
        name="excess",
        line={"color": PALETTE[3]},
    )
    rep.figure(fig)


def _cell(grid: list[list[float]], j: int) -> float:
    return grid[-1][j] if grid and len(grid[-1]) > j else math.nan


def _track_table(rep: Report, t: TrackView, main: SeriesView) -> None:
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
        if t.control:
            row["EAS control"] = _cell(t.control.eas, j)
        if t.excess:
            row["excess"] = _cell(t.excess.estimate, j)
            row["CI"] = f"[{_cell(t.excess.lo, j):+.3f}, {_cell(t.excess.hi, j):+.3f}]"
        rows.append(row)
    rep.text(
        f"Last checkpoint, per layer ({t.correction}-corrected p against isotropic and "
        "covariance-matched random directions)."
    )
    rep.table(rows)


def _track_takeaway(t: TrackView, al: Mapping[str, Any]) -> str:
    ex, st = _m(al.get("excess_vs_control")), _m(al.get("student"))
    if al.get("layer") is not None and (ex or st):
        parts = []
        if st:
            parts.append(
                f"the student's EAS is {num(st.get('eas')):+.2f} (p = {num(st.get('p')):.2g} "
                "against random directions)"
            )
        if ex:
            parts.append(f"its excess over the base control {ci_words(ex)}")
        sig = "an activation signature" if al.get("signature") else "no activation signature"
        return (
            f"At layer {al['layer']} (fixed in advance) "
            + ", ".join(parts)
            + f": {sig} (it needs both)."
        )
    if t.excess is not None and t.excess.estimate and t.excess.estimate[-1]:
        last = [x for x in t.excess.estimate[-1] if math.isfinite(x)]
        if last:
            return (
                f"Excess alignment over the base control at the last checkpoint: "
                f"{min(last):+.2f} to {max(last):+.2f} across layers (per-layer, uncorrected)."
            )
    return "Cosine of the student's activation shift with the teacher vector, per layer."


def _section_track(
    rep: Report, t: TrackView, layer: int | None = None, al: Mapping[str, Any] | None = None
) -> None:
    main = t.main
    section(
        rep,
        "Alignment of the student's shift with the teacher vector",
        "track",
        _track_takeaway(t, _m(al)) if main is not None and t.layers else "",
    )
    if main is None or not t.layers:
        rep.text("(no tracking results)")
        return
    _excess_figure(rep, t, main, layer)
    rep.figure(
        heatmap(
            [list(col) for col in zip(*main.eas, strict=True)],
            main.steps,
            t.layers,
            title="EAS = cos(vˢ(n), vᵀ): layer × checkpoint (student)",
            xlabel="training step (optimizer steps; 0 = base)",
            ylabel="layer (block index)",
            zlabel="EAS (cos)",
        ),
        "vˢ(n) = mean h(θₙ) − mean h(θ₀) over probe prompts; step 0 is the base (zero shift).",
    )
    _last_layer_figure(rep, t, main)
    if main.proj and len(main.proj) == len(main.steps):
        rep.figure(
            heatmap(
                [list(col) for col in zip(*main.proj, strict=True)],
                main.steps,
                t.layers,
                title="Projection vˢ·vᵀ/‖vᵀ‖ (student)",
                xlabel="training step (optimizer steps; 0 = base)",
                ylabel="layer (block index)",
                zlabel="proj (resid. units)",
            )
        )
    with folded(rep, "Numbers per layer"):
        _track_table(rep, t, main)


def _section_screen(rep: Report, s: ScreenView) -> None:
    take = ""
    t, c = _m(s.summary.get("teacher")), _m(s.summary.get("control"))
    if s.layer is not None and t and c:
        tl, th, cl, ch = (num(x.get(k)) for x in (t, c) for k in ("lo", "hi"))
        apart = th < cl or ch < tl
        take = (
            f"At layer {s.layer} the teacher's data project {num(t.get('mean')):+.2f} "
            f"[{tl:+.2f}, {th:+.2f}] on the teacher vector beyond the base model's own answers, "
            f"the control data {num(c.get('mean')):+.2f} [{cl:+.2f}, {ch:+.2f}] (mean ΔP): "
            + ("the screen separates them." if apart else "the intervals overlap.")
        )
    section(rep, "Screening the training data", "screen", take)
    if s.layer is None or not s.delta:
        rep.text("(no screening layer in the results)")
        return
    d = s.delta
    order = sorted((i for i in range(len(d)) if math.isfinite(d[i])), key=lambda i: -d[i])[:30]
    colors = {"teacher": PALETTE[1], "control": PALETTE[0]}

    def label(i: int) -> str:
        ds = s.datasets[i] if i < len(s.datasets) else "?"
        resp = " ".join(s.responses[i].split()) if i < len(s.responses) else ""
        return f"#{i} {ds}: {resp[:40]}{'…' if len(resp) > 40 else ''}"

    rep.figure(
        bars(
            [label(i) for i in order],
            [d[i] for i in order],
            title=f"Samples ranked by projection difference ΔP (layer {s.layer}); "
            "orange = teacher data, blue = base control data, grey = benign",
            xlabel="ΔP = proj(h(x, y)) − proj(h(x, y′)) (residual-stream units)",
            ylabel="sample (index, dataset: response)",
            colors=[
                colors.get(s.datasets[i] if i < len(s.datasets) else "", "#868e96") for i in order
            ],
        ),
        "ΔP compares the training response y with the base model's own response y′ to the same "
        "prompt, projected on the teacher vector (Chen et al. 2025). No keyword is involved.",
    )
    if s.summary:
        with folded(rep, "Numbers per dataset"):
            rep.table([{"dataset": k, **v} for k, v in s.summary.items()])


def _answer_and_headline(rep: Report, results: Mapping[str, Any]) -> None:
    """The page's top, the same for every experiment: the answer (two plain sentences), then
    one headline figure."""
    v = _m(results.get("verdict"))
    fig = None
    found, sees = "", ""
    if _m(results.get("detection")):
        detect_answer(rep, DetectionResult.from_json(_m(results["detection"])))
        return
    if _m(results.get("agentic")):
        a = _m(results["agentic"])
        found, sees = agentic_answer(a, v)
        fig = agentic_headline(a)
    elif _m(results.get("svd")):
        found, sees = svd_answer(_m(results["svd"]), v)
        fig = svd_headline(_m(results["svd"]))
    elif _m(results.get("mitigate")):
        found, sees = mitigate_answer(_m(results["mitigate"]), v)
        fig = mitigate_headline(_m(results["mitigate"]))
    elif (beh := BehaviorView.of(_m(results.get("behavior")))).series:
        if v:
            found, sees = behavior_answer(results)
        fig = behavior_figure(beh)
    elif v:
        found = str(v.get("headline") or "")
    if found:
        answer(rep, found, sees, v)
    if fig is not None:
        headline(rep, fig)


def render_report(results: Mapping[str, Any], title: str | None = None) -> Report:
    """Build the report page from a results dict (``results.json`` of ``steerlens demo``, or
    any subset with keys ``verdict``, ``lineage``, ``teacher_vector``, ``carry``, ``behavior``,
    ``track``, ``screen``, ``timings_s``). A value may also be a result object with
    ``to_json()`` (a ``CarryResult``, an ``AlignmentTrack``): it is read as its JSON.

    Every experiment's page has one shape (:mod:`steerlens.report.shape`): the answer, one
    headline figure, sections each with a takeaway above its figure, the lineage graph, and
    the full statistics folded under "Evidence"."""
    results = _m(jsonable(results))
    if results.get("kind") == "steerlens.mlp_aux":
        return render_mlp_aux(results, title)
    trait = results.get("trait")
    kind = str(results.get("kind") or "").removeprefix("steerlens.")
    what = f" ({kind})" if kind in ("svd", "mitigate", "audit", "detect") else ""
    rep = Report(
        title or f"steerlens report{': ' + str(trait) + what if trait else ''}",
        f"steerlens {results.get('steerlens_version', '')}",
    )
    v = _m(results.get("verdict"))
    _answer_and_headline(rep, results)
    if _m(results.get("detection")):
        section_detect(rep, DetectionResult.from_json(_m(results["detection"])))
    if _m(results.get("agentic")):
        section_agentic(rep, _m(results["agentic"]))
    if _m(results.get("svd")):
        section_svd(rep, _m(results["svd"]))
    if _m(results.get("mitigate")):
        section_mitigate(rep, _m(results["mitigate"]), v)
    if _m(results.get("track")):
        al = _m(_m(v.get("numbers")).get("alignment"))
        _section_track(rep, TrackView.of(_m(results["track"])), al.get("layer"), al)
    if _m(results.get("carry")):
        section_carry(rep, CarryView.of(_m(results["carry"])))
    if _m(results.get("teacher_vector")):
        _section_vector(rep, VectorView.of(_m(results["teacher_vector"])))
    if _m(results.get("screen")):
        _section_screen(rep, ScreenView.of(_m(results["screen"])))
    if _m(results.get("lineage")):
        section_lineage(rep, _m(results["lineage"]))
    if v or _m(results.get("timings_s")):
        with evidence(rep):
            verdict_lines(rep, v)
            section_evidence(rep, v)
            if _m(results.get("timings_s")):
                rep.subheading("Run")
                rep.table({f"{k} (s)": val for k, val in _m(results["timings_s"]).items()})
    return rep
