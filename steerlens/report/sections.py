"""One function per report section, each over its part of the results dict (read through
:mod:`steerlens.report.views`), and :func:`render_report`, which puts them on one page."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from steerlens.common import jsonable
from steerlens.experiments.owl_records import OwlAlignment, OwlResults, OwlVector
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
from steerlens.report.views import num
from steerlens.screen.result import ScreenResult
from steerlens.track.results import AlignmentTrack, ExcessAlignment, SeriesTrack

__all__ = ["render_report"]


def _m(d: Any) -> Mapping[str, Any]:
    return d if isinstance(d, Mapping) else {}


def _section_vector(rep: Report, v: OwlVector) -> None:
    meta, sh = v.meta, v.diagnostics.split_half
    cos = [x.mean for x in sh.values() if math.isfinite(x.mean)]
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
    if (n_pos := meta.get("n_pos")) is not None:
        details += f", {n_pos} prompt pairs"
    if details:
        rep.text(details.strip(", ") + ".")
    layers = sorted(v.norms)
    fig = lines_with_bands(
        layers,
        {"‖v‖": [v.norms[k] for k in layers]},
        title="Teacher vector norm per layer",
        xlabel="layer (block index)",
        ylabel="‖vᵀ‖ (L2 norm, residual-stream units)",
    )
    rep.figure(fig)
    if sh:
        bands = [sh[k] for k in sorted(sh)]
        fig = lines_with_bands(
            sorted(sh),
            {"split-half cosine": [b.mean for b in bands]},
            bands={"split-half cosine": ([b.lo for b in bands], [b.hi for b in bands])},
            title="Reliability: cosine between vectors from two halves of the prompts",
            xlabel="layer (block index)",
            ylabel="cosine (unitless, −1…1)",
        )
        rep.figure(fig, "Bootstrap over random half splits of the prompt pairs (95% band).")


def _hidden_size(prov: Mapping[str, Any]) -> int | None:
    """d of the base model: ``provenance["base"]["hidden_size"]`` (what tracking writes), else
    a top-level ``provenance["hidden_size"]``."""
    for d in (_m(prov.get("base")).get("hidden_size"), prov.get("hidden_size")):
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


def _last_layer_figure(rep: Report, t: AlignmentTrack, main: SeriesTrack) -> None:
    layers, ctrl, ex = t.layers, _drawable(t.series.get("control")), _excess(t)
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
            xlabel="layer (block index)",
            ylabel="cosine with vᵀ (unitless)",
            hline=0.0,
        ),
        "Excess alignment with its bootstrap CI over probe prompts; the grey band is the "
        "isotropic random-direction null ±1.96/√d (a random direction has |cos| ≈ √(2/(πd)) "
        "on average). Per-layer intervals: not corrected for picking a layer after looking; "
        "the verdict reads only the headline layer fixed in advance.",
    )


def _excess_figure(
    rep: Report, t: AlignmentTrack, main: SeriesTrack, layer: int | None = None
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
    ctrl = _drawable(t.series.get("control"))
    curves = {"student EAS": main.eas[:, j].tolist()}
    curves |= {} if ctrl is None else {"base control EAS": ctrl.eas[:, j].tolist()}
    fig = lines_with_bands(
        main.steps,
        curves,
        title=f"Layer {t.layers[j]} ({why}): student vs base control across checkpoints",
        xlabel="training step (optimizer steps; 0 = base)",
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


def _cell(grid: np.ndarray, j: int) -> float:
    return float(grid[-1][j]) if grid.ndim == 2 and len(grid) and grid.shape[1] > j else math.nan


def _track_table(rep: Report, t: AlignmentTrack, main: SeriesTrack) -> None:
    ctrl, ex = _drawable(t.series.get("control")), _excess(t)
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


def _section_track(rep: Report, t: AlignmentTrack, al: OwlAlignment | None = None) -> None:
    main = _drawable(t.series.get("main"))
    section(
        rep,
        "Alignment of the student's shift with the teacher vector",
        "track",
        _track_takeaway(t, al) if main is not None and t.layers else "",
    )
    if main is None or not t.layers:
        rep.text("(no tracking results)")
        return
    _excess_figure(rep, t, main, None if al is None else al.layer)
    rep.figure(
        heatmap(
            main.eas.T.tolist(),
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
    if main.proj.ndim == 2 and len(main.proj) == len(main.steps):
        rep.figure(
            heatmap(
                main.proj.T.tolist(),
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


def _section_screen(rep: Report, s: ScreenResult) -> None:
    stats = s.summary_stats() if s.layer in s.layers else {}
    t, c = stats.get("teacher"), stats.get("control")
    take = ""
    if t and c:
        tl, th, cl, ch = (num(x.get(k)) for x in (t, c) for k in ("lo", "hi"))
        apart = th < cl or ch < tl
        take = (
            f"At layer {s.layer} the teacher's data project {num(t.get('mean')):+.2f} "
            f"[{tl:+.2f}, {th:+.2f}] on the teacher vector beyond the base model's own answers, "
            f"the control data {num(c.get('mean')):+.2f} [{cl:+.2f}, {ch:+.2f}] (mean ΔP): "
            + ("the screen separates them." if apart else "the intervals overlap.")
        )
    section(rep, "Screening the training data", "screen", take)
    if s.layer not in s.layers or not len(s):
        rep.text("(no screening layer in the results)")
        return
    d = s.scores().tolist()
    order = sorted((i for i in range(len(d)) if math.isfinite(d[i])), key=lambda i: -d[i])[:30]
    colors = {"teacher": PALETTE[1], "control": PALETTE[0]}

    def label(i: int) -> str:
        resp = " ".join(s.responses[i].split())
        return f"#{i} {s.datasets[i]}: {resp[:40]}{'…' if len(resp) > 40 else ''}"

    rep.figure(
        bars(
            [label(i) for i in order],
            [d[i] for i in order],
            title=f"Samples ranked by projection difference ΔP (layer {s.layer}); "
            "orange = teacher data, blue = base control data, grey = benign",
            xlabel="ΔP = proj(h(x, y)) − proj(h(x, y′)) (residual-stream units)",
            ylabel="sample (index, dataset: response)",
            colors=[colors.get(s.datasets[i], "#868e96") for i in order],
        ),
        "ΔP compares the training response y with the base model's own response y′ to the same "
        "prompt, projected on the teacher vector (Chen et al. 2025). No keyword is involved.",
    )
    if stats:
        with folded(rep, "Numbers per dataset"):
            rep.table([{"dataset": k, **v} for k, v in stats.items()])


def _answer_and_headline(rep: Report, results: Mapping[str, Any], r: OwlResults) -> None:
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
    elif r.behavior is not None and r.behavior.series:
        if v:
            found, sees = behavior_answer(r)
        fig = behavior_figure(r.behavior)
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
    the full statistics folded under "Evidence". The owl experiment's parts are read once
    (:class:`~steerlens.experiments.owl_records.OwlResults`); a part that is missing or
    malformed is left out."""
    results = _m(jsonable(results))
    if results.get("kind") == "steerlens.mlp_aux":
        return render_mlp_aux(results, title)
    r = OwlResults.parse(results)
    kind = str(results.get("kind") or "").removeprefix("steerlens.")
    what = f" ({kind})" if kind in ("svd", "mitigate", "audit", "detect") else ""
    rep = Report(
        title or f"steerlens report{': ' + str(r.trait) + what if r.trait else ''}",
        f"steerlens {r.steerlens_version}",
    )
    v = _m(results.get("verdict"))
    _answer_and_headline(rep, results, r)
    if _m(results.get("detection")):
        section_detect(rep, DetectionResult.from_json(_m(results["detection"])))
    if _m(results.get("agentic")):
        section_agentic(rep, _m(results["agentic"]))
    if _m(results.get("svd")):
        section_svd(rep, _m(results["svd"]))
    if _m(results.get("mitigate")):
        section_mitigate(rep, _m(results["mitigate"]), v)
    if r.track is not None:
        _section_track(rep, r.track, None if r.verdict is None else r.verdict.numbers.alignment)
    if r.carry is not None:
        section_carry(rep, r.carry)
    if r.teacher_vector is not None:
        _section_vector(rep, r.teacher_vector)
    if r.screen is not None:
        _section_screen(rep, r.screen)
    if r.lineage:
        section_lineage(rep, r.lineage)
    if v or r.timings_s:
        with evidence(rep):
            verdict_lines(rep, v)
            if r.verdict is not None:
                section_evidence(rep, r.verdict)
            if r.timings_s:
                rep.subheading("Run")
                rep.table({f"{k} (s)": val for k, val in r.timings_s.items()})
    return rep
