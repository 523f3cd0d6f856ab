"""The report's evidence section: student, base control and (optional) benign control side by
side, each with its behavior delta (bootstrap CI, sign-flip p), its alignment at the layer fixed
in advance against the random-direction nulls, and the excess alignment over each control
(formulas in :mod:`steerlens.experiments.verdict` and docs/statistics.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from steerlens.experiments.owl_records import (
    OwlAlignment,
    OwlDelta,
    OwlExcessRow,
    OwlNamedDeltas,
    OwlSeriesRow,
    OwlVerdict,
)
from steerlens.report.page import Report

__all__ = ["section_evidence"]


def _ci(d: OwlDelta | OwlExcessRow | None) -> str:
    return "" if d is None else f"{d.estimate:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}]"


def _p(d: OwlDelta | OwlExcessRow | None) -> str:
    return "" if d is None or d.p is None else f"{float(d.p):.2g}"


def _row(
    name: str,
    label: str,
    a: OwlSeriesRow | None,
    ex: OwlExcessRow | None,
    al: OwlAlignment,
    deltas: Mapping[str, OwlDelta],
) -> dict[str, Any]:
    d = deltas.get(f"{name}_vs_base")

    def vs(d: OwlDelta | OwlExcessRow | None) -> str:
        return "" if name == "main" or d is None else f"{_ci(d)}, p={_p(d)}"

    return {
        "series": label,
        "behavior Δ vs base [95% CI]": _ci(d),
        "p (Δ vs base)": _p(d),
        f"EAS at layer {al.layer}": "" if a is None else f"{a.eas:+.3f}",
        "z iso / z cov": "" if a is None else f"{a.z_iso:+.1f} / {a.z_cov:+.1f}",
        "p one-sided / two-sided": "" if a is None else f"{a.p:.2g} / {a.p_two_sided:.2g}",
        "student − this: behavior [CI], p": vs(deltas.get(f"main_vs_{name}")),
        "student − this: EAS [CI], p": vs(ex),
    }


def section_evidence(rep: Report, verdict: OwlVerdict) -> None:
    """The side-by-side table behind the verdict (nothing when the verdict has no numbers)."""
    nums = verdict.numbers
    al = nums.alignment
    if al is None:
        return
    deltas = nums.behavior
    rep.subheading("Evidence: student and controls side by side")
    rep.text(
        f"Claim: {nums.claim or None} (tests at α={nums.alpha}). Headline layer "
        f"{al.layer}: {al.rule or None}. Behavior deltas are means over eval prompts of "
        "the per-prompt score difference, with a percentile bootstrap CI over prompts and a "
        "two-sided sign-flip permutation p. EAS is tested against the isotropic and the "
        "covariance-matched random-direction nulls (one-sided p = the larger of the two "
        "empirical p-values; two-sided from the z-scores). Excess alignment has a bootstrap CI "
        "over probe prompts."
    )
    series = [
        ("main", "student", al.student, None),
        ("control", "base control", al.control, al.excess_vs_control),
        ("benign", "benign control", al.benign, al.excess_vs_benign),
    ] + [
        (k.removesuffix("_vs_base"), f"benign control {k[6:-8]}", None, None)
        for k in deltas
        if k.startswith("benign") and k.endswith("_vs_base") and k[6:-8].isdigit()
    ]
    rows = [
        _row(name, label, a, ex, al, deltas)
        for name, label, a, ex in series
        if a is not None or deltas.get(f"{name}_vs_base") is not None
    ]
    rep.table(rows)
    rt = OwlNamedDeltas.of(deltas).main_vs_benign_replicates
    if rt is not None:
        rep.text(
            f"Model-level test (models as the unit, so training noise is in the null): the "
            f"student's mean score is {rt.estimate:+.3f} beyond the mean of {int(rt.k or 0)} "
            f"benign replicates (their sd {rt.replicate_sd:.3f}; 95% prediction interval of "
            f"a replicate [{rt.pi_lo:.3f}, {rt.pi_hi:.3f}]); t = {rt.t:+.2f}, "
            f"df = {int(rt.df or 0)}, one-sided p = {_p(rt)}. 'Inherited' needs this and the "
            "per-prompt delta against the base control."
        )
    anyl = al.any_layer
    if anyl is not None:
        rep.text(
            f"Any layer ({anyl.correction} over {anyl.n_layers} layers, reported "
            f"only, not used for the claim): {anyl.n_significant} layers significant; "
            f"smallest adjusted p {anyl.min_p_adj:.2g} at layer {anyl.layer}."
        )
    for flag in verdict.flags:
        rep.text(f"Flag: {flag}", "note")
