"""The report section of the ``svd`` experiment: per teacher the predictor (carry clean-peak
S), the transfer (Δ vs the base control with CI and p, fraction F of the teacher's gap) and the
alignment at the steered layer (vs null, excess over the base control); and a scatter of
predictor vs transfer, one point per teacher and loss, with the CI of F as error bars."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go

from steerlens.report.figures import scatter_with_errors
from steerlens.report.page import Report
from steerlens.report.shape import dots_with_ci, folded, section

__all__ = ["section_svd", "svd_answer", "svd_headline", "svd_table"]


def _f(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(float(x)) else None


def _ci(est: Any, lo: Any, hi: Any) -> str:
    e, a, b = _f(est), _f(lo), _f(hi)
    if e is None:
        return "n/a"
    return f"{e:+.3g} [{a:+.3g}, {b:+.3g}]" if a is not None and b is not None else f"{e:+.3g}"


def _gap(tr: Mapping[str, Any]) -> float | None:
    t, b = _f(tr.get("b_teacher")), _f(tr.get("b_base"))
    return None if t is None or b is None else t - b


def svd_table(rows: Mapping[str, Mapping[str, Any]], loss: str) -> list[dict[str, Any]]:
    """One row per teacher of one loss: the numbers of the section's table."""
    out = []
    for name, r in rows.items():
        tr, al = r.get("transfer") or {}, r.get("alignment") or {}
        out.append(
            {
                "loss": loss,
                "teacher": name,
                "kind": (r.get("teacher") or {}).get("name"),
                "carry S (clean peak)": _f(r.get("S")),
                "S beats null": r.get("S_beats_null"),
                "B_teacher − B_base": _gap(tr),
                "Δ vs base control [95% CI]": "—"
                if name == "base"
                else _ci(tr.get("delta"), tr.get("delta_lo"), tr.get("delta_hi")),
                "p (Δ)": None if name == "base" else _f(tr.get("delta_p")),
                "F [95% CI]": "—"
                if name == "base"
                else _ci(tr.get("fraction"), tr.get("fraction_lo"), tr.get("fraction_hi")),
                "EAS @ℓ*": _f(al.get("eas")),
                "p_null (EAS)": _f(al.get("eas_p_adj")),
                "excess EAS [95% CI]": _ci(
                    al.get("excess"), al.get("excess_lo"), al.get("excess_hi")
                )
                if al
                else "—",
                "p (excess)": _f(al.get("excess_p")),
            }
        )
    return out


def svd_headline(svd: Mapping[str, Any]) -> go.Figure:
    """The headline: each teacher's student minus the base control (95% CI), one colour per
    distillation loss."""
    groups: dict[str, list[tuple[str, float | None, float | None, float | None]]] = {}
    for loss, rows in (svd.get("rows") or {}).items():
        for name, r in rows.items():
            if name == "base":
                continue
            tr = r.get("transfer") or {}
            groups.setdefault(f"{loss} students", []).append(
                (name, _f(tr.get("delta")), _f(tr.get("delta_lo")), _f(tr.get("delta_hi")))
            )
    return dots_with_ci(
        groups,
        title="Transfer per teacher: student − base control",
        xlabel="teacher (whose data trained the student)",
        ylabel="Δ trait score vs base control (nats, 95% CI)",
        hline=0.0,
    )


def svd_answer(svd: Mapping[str, Any], verdict: Mapping[str, Any]) -> tuple[str, str]:
    """(found, what the test sees) of an svd run."""
    found = str(verdict.get("headline") or "No verdict in these results.").rstrip(".") + "."
    sees = (
        "Each teacher's student is compared with the base control over the eval prompts of one "
        "training run (training noise is not in these intervals); the steered teacher is the "
        "positive control"
    )
    return found, sees


def section_svd(rep: Report, svd: Mapping[str, Any]) -> None:
    """Add the svd section (predictor-vs-transfer scatter, table, per-loss verdicts) to ``rep``."""
    verdicts = svd.get("verdicts") or {}
    take = " ".join(f"{loss}: {v.get('headline', '')}" for loss, v in verdicts.items())
    section(
        rep,
        "Teachers and transfer (steering-vector distillation)",
        "svd",
        take or "Does the carry test's sufficiency predict how much each teacher transfers?",
    )
    rep.text(
        f"Steered and ablated teachers use the owl teacher vector at layer {svd.get('layer')} "
        f"(α={svd.get('alpha')}, from the {svd.get('peak_source')}). Δ is the student's "
        "behavior minus the base control's (a student of the base's own numbers) over the eval "
        "prompts, with a paired bootstrap CI and a sign-flip permutation p; F = Δ / (B_teacher − "
        "B_base). Alignment: EAS of the student's shift with the teacher vector at that layer, "
        "p against random directions (Holm), and its excess over the base control."
    )
    rows_by_loss = svd.get("rows") or {}
    table = [row for loss, rows in rows_by_loss.items() for row in svd_table(rows, loss)]
    points: dict[str, list[tuple[str, float, float, float | None, float | None]]] = {}
    for loss, rows in rows_by_loss.items():
        for name, r in rows.items():
            tr = r.get("transfer") or {}
            s, f = _f(r.get("S")), _f(tr.get("fraction"))
            if name == "base" or s is None or f is None:
                continue
            pts = points.setdefault(loss, [])
            pts.append((name, s, f, _f(tr.get("fraction_lo")), _f(tr.get("fraction_hi"))))
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
        for loss, v in verdicts.items():
            rep.verdict(
                f"{loss}: {v.get('headline', '')}", v.get("lines", []), v.get("strength", "")
            )
