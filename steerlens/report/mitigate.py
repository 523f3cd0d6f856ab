"""The report section of the ``mitigate`` experiment: one row per arm (transfer Δ vs the base
control with CI and p, reduction vs no mitigation with CI and p, alignment at ℓ* against the
nulls and over the control, held-out loss and its cost), a scatter of cost vs transfer with the
CI of Δ as error bars, and a note when the unmitigated transfer is not significant (then no
reduction can be claimed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from steerlens.agents.metrics import RateResult
from steerlens.experiments.mitigate_measure import (
    ArmResult,
    MitigateNoise,
    MitigateSection,
    MitigateVerdict,
)
from steerlens.report.figures import scatter_with_errors
from steerlens.report.page import Report
from steerlens.report.shape import dots_with_ci, folded, section
from steerlens.report.svd import ci_text, finite

__all__ = ["mitigate_answer", "mitigate_headline", "mitigate_table", "section_mitigate"]

Section = MitigateSection | Mapping[str, Any]
Verdict = MitigateVerdict | Mapping[str, Any]


def _section(m: Section) -> MitigateSection:
    return m if isinstance(m, MitigateSection) else MitigateSection.from_json(m)


def _verdict(v: Verdict) -> MitigateVerdict | None:
    """The verdict (None where the results have none)."""
    return v if isinstance(v, MitigateVerdict) else MitigateVerdict.from_json(v) if v else None


def _rate(r: RateResult | None) -> str:
    if r is None:
        return "—"
    return f"{r.k}/{r.n} = {r.rate:.2f} [{r.low:.2f}, {r.high:.2f}]"


def _noise(bn: MitigateNoise | None) -> str:
    if bn is None:
        return "—"
    return f"{bn.estimate:+.3g} (t={bn.t:.2f}, df={bn.df:.0f}, p={bn.p:.3g})"


def mitigate_table(arms: Sequence[ArmResult | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per arm: the numbers of the section's table."""
    out = []
    for a in (x if isinstance(x, ArmResult) else ArmResult.from_json(x) for x in arms):
        tr, al, ex, red = a.transfer, a.alignment, a.excess, a.reduction
        out.append(
            {
                "arm": a.arm,
                "kind": a.kind,
                "param": a.param,
                "train samples": a.n_train,
                "Δ vs base control [95% CI]": ci_text(tr.delta, tr.delta_lo, tr.delta_hi),
                "p (Δ)": finite(tr.delta_p),
                "F [95% CI]": ci_text(tr.fraction, tr.fraction_lo, tr.fraction_hi),
                "reduction vs none [95% CI]": "—"
                if red is None
                else ci_text(red.estimate, red.lo, red.hi),
                "p (reduction)": None if red is None else finite(red.p),
                "beyond training noise (t, p)": _noise(a.beyond_noise),
                "EAS @ℓ*": None if al is None else finite(al.eas),
                "p_null (EAS)": None if al is None else finite(al.eas_p_adj),
                "excess EAS [95% CI]": ci_text(ex.excess, ex.excess_lo, ex.excess_hi),
                "p (excess)": finite(ex.excess_p),
                "held-out loss": finite(a.heldout_loss),
                "cost vs none": finite(a.cost),
                "safe tasks completed": finite(a.safe_completed),
                "first-action rate [Wilson 95%]": _rate(a.rate),
            }
        )
    return out


def mitigate_headline(m: Section) -> go.Figure:
    """The headline: each arm's transfer Δ vs the base control (95% CI); the unmitigated
    student (arm ``none``) first, then the mitigations."""
    sec = _section(m)
    groups: dict[str, list[tuple[str, float | None, float | None, float | None]]] = {}
    for a in sec.arms:
        tr = a.transfer
        group = "unmitigated student" if a.arm == "none" else "mitigated students"
        groups.setdefault(group, []).append(
            (a.arm, finite(tr.delta), finite(tr.delta_lo), finite(tr.delta_hi))
        )
    return dots_with_ci(
        groups,
        title="Transfer per arm: student − base control",
        xlabel="arm (mitigation)",
        ylabel=f"Δ {sec.unit or 'trait score'} vs base control (95% CI)",
        hline=0.0,
    )


def mitigate_answer(m: Section, verdict: Verdict) -> tuple[str, str]:
    """(found, what the test sees) of a mitigate run."""
    v = _verdict(verdict)
    found = ((v.headline if v else "") or "No verdict in these results.").rstrip(".") + "."
    sees = (
        "A reduction is claimed only beyond the spread of the unmitigated students' replicates "
        "and only when the unmitigated transfer is itself significant; one teacher, one training "
        "seed per arm"
    )
    return found, sees


def section_mitigate(rep: Report, m: Section, verdict: Verdict) -> None:
    """Add the mitigation section (cost-vs-transfer scatter, table, verdict) to ``rep``."""
    sec, v = _section(m), _verdict(verdict)
    sig = v is None or v.unmitigated_significant
    section(
        rep,
        f"Mitigations of trait transfer ({sec.setting})",
        "mitigate",
        "What each mitigation costs against how much transfer it leaves."
        if sig
        else "The unmitigated student did not move toward the trait significantly at this size: "
        "no arm can be said to reduce transfer.",
    )
    rep.text(
        f"Every arm is a student trained like the unmitigated one on the teacher's data; "
        f"mitigations act at layer {sec.layer} (regulariser at {sec.reg_layer}; "
        f"steering α={sec.alpha}; from the {sec.site_source}). Δ: the arm's behavior "
        "minus the base control's over the eval prompts (paired bootstrap CI, sign-flip p); F = "
        "Δ / (B_teacher − B_base). Reduction: Δ(none) − Δ(arm), paired over the same prompts; "
        "beyond training noise: the unmitigated students' mean B (the arm none and its "
        "replicates, other training seeds) minus the arm's, a prediction t-test against their "
        "spread (a reduction is claimed only when both hold). "
        "EAS at ℓ* against random directions (Holm) and its excess over the base control. Cost: "
        "the student's loss on held-out clean teacher data minus the unmitigated student's "
        f"(base {finite(sec.heldout_loss_base)}, base control "
        f"{finite(sec.heldout_loss_control)})."
    )
    table = mitigate_table(sec.arms)
    if sec.setting == "owl":  # the agent-only columns
        drop = ("safe tasks completed", "first-action rate [Wilson 95%]")
        table = [{k: v for k, v in row.items() if k not in drop} for row in table]
    else:
        rep.text(
            f"Agents: Δ is in {sec.unit or 'P(biased action)'}, at the "
            "first decision point of each held-out ambiguous eval task; the first-action rate is "
            "sampled over eval tasks × seeds (Wilson CI); cost also includes the fraction of "
            f"held-out safe tasks completed (base: {finite(sec.safe_completed_base)}). Keyword "
            f"filter counts: {sec.filter}."
        )
    with folded(rep, "Numbers per arm"):
        rep.table(table)
    pts = []
    for a in sec.arms:
        tr = a.transfer
        x, y = finite(a.cost), finite(tr.delta)
        if x is not None and y is not None:
            pts.append((a.arm, x, y, finite(tr.delta_lo), finite(tr.delta_hi)))
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
