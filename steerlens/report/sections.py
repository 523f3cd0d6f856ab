"""The report's page: :func:`render_report` reads the results once
(:class:`~steerlens.experiments.owl_records.OwlResults`) and puts every section on one page
(the teacher vector and screening sections here; the others in their own modules: track,
carry, lineage, evidence, and each experiment's own)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, get_type_hints

from steerlens.core.common import jsonable
from steerlens.experiments.agentic_records import AgenticSummary, AgenticVerdict
from steerlens.experiments.mitigate_measure import MitigateSection, MitigateVerdict
from steerlens.experiments.owl_records import OwlBand, OwlResults, OwlVector, parse_part
from steerlens.experiments.result import ExperimentVerdictText
from steerlens.experiments.svd import SvdSection
from steerlens.pipeline.power import DetectionResult
from steerlens.report.agentic import agentic_answer, agentic_headline, section_agentic
from steerlens.report.carry import section_carry
from steerlens.report.detect import detect_answer, section_detect
from steerlens.report.evidence import section_evidence
from steerlens.report.figures import PALETTE, bars, lines_with_bands
from steerlens.report.headline import behavior_answer, behavior_figure
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
from steerlens.report.track import section_track
from steerlens.screen.result import ScreenResult

__all__ = ["render_report"]


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


def _section_screen(rep: Report, s: ScreenResult) -> None:
    stats = s.summary_stats() if s.layer in s.layers else {}
    t, c = parse_part(OwlBand, stats.get("teacher")), parse_part(OwlBand, stats.get("control"))
    take = ""
    if t and c:
        tl, th, cl, ch = t.lo, t.hi, c.lo, c.hi
        apart = th < cl or ch < tl
        take = (
            f"At layer {s.layer} the teacher's data project {t.mean:+.2f} "
            f"[{tl:+.2f}, {th:+.2f}] on the teacher vector beyond the base model's own answers, "
            f"the control data {c.mean:+.2f} [{cl:+.2f}, {ch:+.2f}] (mean ΔP): "
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


@dataclass
class _Parts:
    """What every page reads of the results besides the owl parts, each parsed once by its
    own module's record (None where absent or malformed): the verdict (its JSON, and its
    words), and each other experiment's part with its verdict."""

    verdict: dict[str, Any] | None = None
    detection: DetectionResult | None = None
    agentic: AgenticSummary | None = None
    svd: SvdSection | None = None
    mitigate: MitigateSection | None = None

    @classmethod
    def of(cls, results: Mapping[str, Any]) -> _Parts:
        hints = get_type_hints(cls)
        return cls(**{f.name: parse_part(hints[f.name], results.get(f.name)) for f in fields(cls)})

    @cached_property
    def words(self) -> ExperimentVerdictText:
        return ExperimentVerdictText.from_json(self.verdict or {})


def _answer_and_headline(rep: Report, p: _Parts, r: OwlResults) -> None:
    """The page's top, the same for every experiment: the answer (two plain sentences), then
    one headline figure."""
    v, fig = p.verdict or {}, None
    found, sees = "", ""
    if p.detection is not None:
        detect_answer(rep, p.detection)
        return
    if p.agentic is not None:
        found, sees = agentic_answer(p.agentic, AgenticVerdict.from_json(v))
        fig = agentic_headline(p.agentic)
    elif p.svd is not None:
        found, sees = svd_answer(p.svd, v)
        fig = svd_headline(p.svd)
    elif p.mitigate is not None:
        found, sees = mitigate_answer(p.mitigate, _mitigate_verdict(p))
        fig = mitigate_headline(p.mitigate)
    elif r.behavior is not None and r.behavior.series:
        if v:
            found, sees = behavior_answer(r)
        fig = behavior_figure(r.behavior)
    elif v:
        found = str(p.words.headline or "")
    if found:
        answer(rep, found, sees, p.words)
    if fig is not None:
        headline(rep, fig)


def _mitigate_verdict(p: _Parts) -> MitigateVerdict | dict[str, Any]:
    return MitigateVerdict.from_json(p.verdict) if p.verdict else {}


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
    js = jsonable(results)
    results = js if isinstance(js, Mapping) else {}
    kind = str(results.get("kind") or "").removeprefix("steerlens.")
    if kind == "mlp_aux":
        return render_mlp_aux(results, title)
    r, p = OwlResults.parse(results), _Parts.of(results)
    what = f" ({kind})" if kind in ("svd", "mitigate", "audit", "detect") else ""
    rep = Report(
        title or f"steerlens report{': ' + str(r.trait) + what if r.trait else ''}",
        f"steerlens {r.steerlens_version}",
    )
    _answer_and_headline(rep, p, r)
    if p.detection is not None:
        section_detect(rep, p.detection)
    if p.agentic is not None:
        section_agentic(rep, p.agentic)
    if p.svd is not None:
        section_svd(rep, p.svd)
    if p.mitigate is not None:
        section_mitigate(rep, p.mitigate, _mitigate_verdict(p))
    if r.track is not None:
        section_track(rep, r.track, None if r.verdict is None else r.verdict.numbers.alignment)
    if r.carry is not None:
        section_carry(rep, r.carry)
    if r.teacher_vector is not None:
        _section_vector(rep, r.teacher_vector)
    if r.screen is not None:
        _section_screen(rep, r.screen)
    if r.lineage:
        section_lineage(rep, r.lineage)
    if p.verdict or r.timings_s:
        with evidence(rep):
            verdict_lines(rep, p.verdict or {})
            if r.verdict is not None:
                section_evidence(rep, r.verdict)
            if r.timings_s:
                rep.subheading("Run")
                rep.table({f"{k} (s)": val for k, val in r.timings_s.items()})
    return rep
