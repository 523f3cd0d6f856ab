"""The report section of the ``mitigate`` experiment: one row per arm (transfer Δ vs the base
control with CI and p, reduction vs no mitigation with CI and p, alignment at ℓ* against the
nulls and over the control, held-out loss and its cost), a scatter of cost vs transfer with the
CI of Δ as error bars, and a note when the unmitigated transfer is not significant (then no
reduction can be claimed)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go

from steerlens.report.figures import scatter_with_errors
from steerlens.report.page import Report
from steerlens.report.shape import dots_with_ci, folded, section

__all__ = ["mitigate_answer", "mitigate_headline", "mitigate_table", "section_mitigate"]


def _f(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(float(x)) else None


def _ci(est: Any, lo: Any, hi: Any) -> str:
    e, a, b = _f(est), _f(lo), _f(hi)
    if e is None:
        return "n/a"
    return f"{e:+.3g} [{a:+.3g}, {b:+.3g}]" if a is not None and b is not None else f"{e:+.3g}"


def _rate(rate: Any) -> str:
    if not isinstance(rate, Mapping):
        return "—"
    return (
        f"{rate.get('k')}/{rate.get('n')} = {float(rate.get('rate', 0)):.2f} "
        f"[{float(rate.get('low', 0)):.2f}, {float(rate.get('high', 0)):.2f}]"
    )


def _noise(bn: Any) -> str:
    if not isinstance(bn, Mapping):
        return "—"
    return (
        f"{float(bn['estimate']):+.3g} (t={float(bn['t']):.2f}, df={float(bn['df']):.0f}, "
        f"p={float(bn['p']):.3g})"
    )


def mitigate_table(arms: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per arm: the numbers of the section's table."""
    out = []
    for a in arms:
        tr, al, red = a.get("transfer") or {}, a.get("alignment") or {}, a.get("reduction")
        out.append(
            {
                "arm": a.get("arm"),
                "kind": a.get("arm_kind", a.get("kind")),  # "kind" in files before 2026-12-07
                "param": a.get("param"),
                "train samples": a.get("n_train"),
                "Δ vs base control [95% CI]": _ci(
                    tr.get("delta"), tr.get("delta_lo"), tr.get("delta_hi")
                ),
                "p (Δ)": _f(tr.get("delta_p")),
                "F [95% CI]": _ci(tr.get("fraction"), tr.get("fraction_lo"), tr.get("fraction_hi")),
                "reduction vs none [95% CI]": "—"
                if not red
                else _ci(red.get("estimate"), red.get("lo"), red.get("hi")),
                "p (reduction)": None if not red else _f(red.get("p")),
                "beyond training noise (t, p)": _noise(a.get("beyond_noise")),
                "EAS @ℓ*": _f(al.get("eas")),
                "p_null (EAS)": _f(al.get("eas_p_adj")),
                "excess EAS [95% CI]": _ci(
                    al.get("excess"), al.get("excess_lo"), al.get("excess_hi")
                ),
                "p (excess)": _f(al.get("excess_p")),
                "held-out loss": _f(a.get("heldout_loss")),
                "cost vs none": _f(a.get("cost")),
                "safe tasks completed": _f(a.get("safe_completed")),
                "first-action rate [Wilson 95%]": _rate(a.get("rate")),
            }
        )
    return out


def mitigate_headline(m: Mapping[str, Any]) -> go.Figure:
    """The headline: each arm's transfer Δ vs the base control (95% CI); the unmitigated
    student (arm ``none``) first, then the mitigations."""
    groups: dict[str, list[tuple[str, float | None, float | None, float | None]]] = {}
    for a in m.get("arms") or []:
        tr = a.get("transfer") or {}
        group = "unmitigated student" if a.get("arm") == "none" else "mitigated students"
        groups.setdefault(group, []).append(
            (str(a.get("arm")), _f(tr.get("delta")), _f(tr.get("delta_lo")), _f(tr.get("delta_hi")))
        )
    unit = (m.get("metric") or {}).get("metric") or "trait score"
    return dots_with_ci(
        groups,
        title="Transfer per arm: student − base control",
        xlabel="arm (mitigation)",
        ylabel=f"Δ {unit} vs base control (95% CI)",
        hline=0.0,
    )


def mitigate_answer(m: Mapping[str, Any], verdict: Mapping[str, Any]) -> tuple[str, str]:
    """(found, what the test sees) of a mitigate run."""
    found = str(verdict.get("headline") or "No verdict in these results.").rstrip(".") + "."
    sees = (
        "A reduction is claimed only beyond the spread of the unmitigated students' replicates "
        "and only when the unmitigated transfer is itself significant; one teacher, one training "
        "seed per arm"
    )
    return found, sees


def section_mitigate(rep: Report, m: Mapping[str, Any], verdict: Mapping[str, Any]) -> None:
    """Add the mitigation section (cost-vs-transfer scatter, table, verdict) to ``rep``."""
    sig = not verdict or verdict.get("unmitigated_significant", True)
    section(
        rep,
        f"Mitigations of trait transfer ({m.get('setting')})",
        "mitigate",
        "What each mitigation costs against how much transfer it leaves."
        if sig
        else "The unmitigated student did not move toward the trait significantly at this size: "
        "no arm can be said to reduce transfer.",
    )
    rep.text(
        f"Every arm is a student trained like the unmitigated one on the teacher's data; "
        f"mitigations act at layer {m.get('layer')} (regulariser at {m.get('reg_layer')}; "
        f"steering α={m.get('alpha')}; from the {m.get('site_source')}). Δ: the arm's behavior "
        "minus the base control's over the eval prompts (paired bootstrap CI, sign-flip p); F = "
        "Δ / (B_teacher − B_base). Reduction: Δ(none) − Δ(arm), paired over the same prompts; "
        "beyond training noise: the unmitigated students' mean B (the arm none and its "
        "replicates, other training seeds) minus the arm's, a prediction t-test against their "
        "spread (a reduction is claimed only when both hold). "
        "EAS at ℓ* against random directions (Holm) and its excess over the base control. Cost: "
        "the student's loss on held-out clean teacher data minus the unmitigated student's "
        f"(base {_f(m.get('heldout_loss_base'))}, base control "
        f"{_f(m.get('heldout_loss_control'))})."
    )
    arms = list(m.get("arms") or [])
    table = mitigate_table(arms)
    if m.get("setting") == "owl":  # the agent-only columns
        drop = ("safe tasks completed", "first-action rate [Wilson 95%]")
        table = [{k: v for k, v in row.items() if k not in drop} for row in table]
    else:
        rep.text(
            f"Agents: Δ is in {(m.get('metric') or {}).get('metric', 'P(biased action)')}, at the "
            "first decision point of each held-out ambiguous eval task; the first-action rate is "
            "sampled over eval tasks × seeds (Wilson CI); cost also includes the fraction of "
            f"held-out safe tasks completed (base: {_f(m.get('safe_completed_base'))}). Keyword "
            f"filter counts: {m.get('filter')}."
        )
    with folded(rep, "Numbers per arm"):
        rep.table(table)
    pts = []
    for a in arms:
        tr = a.get("transfer") or {}
        x, y = _f(a.get("cost")), _f(tr.get("delta"))
        if x is not None and y is not None:
            pts.append((str(a.get("arm")), x, y, _f(tr.get("delta_lo")), _f(tr.get("delta_hi"))))
    if pts:
        rep.figure(
            scatter_with_errors(
                {"arms": pts},
                title="Cost vs transfer, one point per arm",
                xlabel="cost: held-out loss minus the unmitigated student's",
                ylabel="transfer Δ vs base control (95% CI)",
                hline=0.0,
            ),
            "Lower is less transfer; further right is a larger loss of imitation on held-out "
            "clean teacher data.",
        )
