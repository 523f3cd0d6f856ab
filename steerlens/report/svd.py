"""The report section of the ``svd`` experiment: per teacher the predictor (carry clean-peak
S), the transfer (Δ vs the base control with CI and p, fraction F of the teacher's gap) and the
alignment at the steered layer (vs null, excess over the base control); and a scatter of
predictor vs transfer, one point per teacher and loss, with the CI of F as error bars."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go

from steerlens.experiments.svd import SvdSection
from steerlens.experiments.svd_measure import SvdRow, SvdVerdict, Transfer
from steerlens.report.figures import scatter_with_errors
from steerlens.report.page import Report
from steerlens.report.shape import dots_with_ci, folded, section

__all__ = ["section_svd", "svd_answer", "svd_headline", "svd_table"]


def finite(x: Any) -> float | None:
    """``x`` as a float where it is a finite number, else None (an empty table cell)."""
    return float(x) if isinstance(x, (int, float)) and math.isfinite(float(x)) else None


def ci_text(est: Any, lo: Any, hi: Any) -> str:
    """An estimate with its interval, ``+0.1 [-0.2, +0.3]`` ("n/a" without an estimate)."""
    e, a, b = finite(est), finite(lo), finite(hi)
    if e is None:
        return "n/a"
    return f"{e:+.3g} [{a:+.3g}, {b:+.3g}]" if a is not None and b is not None else f"{e:+.3g}"


def _gap(tr: Transfer) -> float | None:
    t, b = finite(tr.b_teacher), finite(tr.b_base)
    return None if t is None or b is None else t - b


def _svd(svd: SvdSection | Mapping[str, Any]) -> SvdSection:
    return svd if isinstance(svd, SvdSection) else SvdSection.from_json(svd)


def svd_table(rows: Mapping[str, SvdRow], loss: str) -> list[dict[str, Any]]:
    """One row per teacher of one loss: the numbers of the section's table."""
    out = []
    for name, r in rows.items():
        tr, al, base = r.transfer, r.alignment, name == "base"
        out.append(
            {
                "loss": loss,
                "teacher": name,
                "kind": r.teacher.get("name"),
                "carry S (clean peak)": finite(r.S),
                "S beats null": r.S_beats_null,
                "B_teacher − B_base": _gap(tr),
                "Δ vs base control [95% CI]": "—"
                if base
                else ci_text(tr.delta, tr.delta_lo, tr.delta_hi),
                "p (Δ)": None if base else finite(tr.delta_p),
                "F [95% CI]": "—" if base else ci_text(tr.fraction, tr.fraction_lo, tr.fraction_hi),
                "EAS @ℓ*": None if al is None else finite(al.eas),
                "p_null (EAS)": None if al is None else finite(al.eas_p_adj),
                "excess EAS [95% CI]": "—"
                if al is None
                else ci_text(al.excess, al.excess_lo, al.excess_hi),
                "p (excess)": None if al is None else finite(al.excess_p),
            }
        )
    return out


def svd_headline(svd: SvdSection | Mapping[str, Any]) -> go.Figure:
    """The headline: each teacher's student minus the base control (95% CI), one colour per
    distillation loss."""
    groups: dict[str, list[tuple[str, float | None, float | None, float | None]]] = {}
    for loss, rows in _svd(svd).rows.items():
        for name, r in rows.items():
            if name == "base":
                continue
            tr = r.transfer
            groups.setdefault(f"{loss} students", []).append(
                (name, finite(tr.delta), finite(tr.delta_lo), finite(tr.delta_hi))
            )
    return dots_with_ci(
        groups,
        title="Transfer per teacher: student − base control",
        xlabel="teacher (whose data trained the student)",
        ylabel="Δ trait score vs base control (nats, 95% CI)",
        hline=0.0,
    )


def svd_answer(svd: SvdSection | Mapping[str, Any], verdict: Mapping[str, Any]) -> tuple[str, str]:
    """(found, what the test sees) of an svd run."""
    head = SvdVerdict.from_json(verdict).headline or "No verdict in these results."
    sees = (
        "Each teacher's student is compared with the base control over the eval prompts of one "
        "training run (training noise is not in these intervals); the steered teacher is the "
        "positive control"
    )
    return head.rstrip(".") + ".", sees


def section_svd(rep: Report, svd: SvdSection | Mapping[str, Any]) -> None:
    """Add the svd section (predictor-vs-transfer scatter, table, per-loss verdicts) to ``rep``."""
    sv = _svd(svd)
    take = " ".join(f"{loss}: {v.headline}" for loss, v in sv.verdicts.items())
    section(
        rep,
        "Teachers and transfer (steering-vector distillation)",
        "svd",
        take or "Does the carry test's sufficiency predict how much each teacher transfers?",
    )
    rep.text(
        f"Steered and ablated teachers use the owl teacher vector at layer {sv.layer} "
        f"(α={sv.alpha}, from the {sv.peak_source}). Δ is the student's "
        "behavior minus the base control's (a student of the base's own numbers) over the eval "
        "prompts, with a paired bootstrap CI and a sign-flip permutation p; F = Δ / (B_teacher − "
        "B_base). Alignment: EAS of the student's shift with the teacher vector at that layer, "
        "p against random directions (Holm), and its excess over the base control."
    )
    table = [row for loss, rows in sv.rows.items() for row in svd_table(rows, loss)]
    points: dict[str, list[tuple[str, float, float, float | None, float | None]]] = {}
    for loss, rows in sv.rows.items():
        for name, r in rows.items():
            s, f = finite(r.S), finite(r.transfer.fraction)
            if name == "base" or s is None or f is None:
                continue
            pts = points.setdefault(loss, [])
            pts.append((name, s, f, finite(r.transfer.fraction_lo), finite(r.transfer.fraction_hi)))
    if points:
        rep.figure(
            scatter_with_errors(
                points,
                title="Predictor vs transfer, one point per teacher",
                xlabel="carry test clean-peak S (fraction of the teacher's gap)",
                ylabel="transfer fraction F (student − base control) / gap",
                hline=0.0,
            ),
            "Teachers whose carry test is undefined (no behavior gap, e.g. the placebo) have no "
            "S and are not drawn; their rows are in the table.",
        )
    rep.table(table)
    with folded(rep, "Verdict per loss"):
        for loss, v in sv.verdicts.items():
            rep.verdict(f"{loss}: {v.headline}", v.lines, v.strength)
