"""The report's evidence section: student, base control and (optional) benign control side by
side, each with its behavior delta (bootstrap CI, sign-flip p), its alignment at the layer fixed
in advance against the random-direction nulls, and the excess alignment over each control
(formulas in :mod:`steerlens.experiments.verdict` and docs/statistics.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from steerlens.report.page import Report

__all__ = ["section_evidence"]

_SERIES = (("main", "student"), ("control", "base control"), ("benign", "benign control"))


def _m(d: Any) -> Mapping[str, Any]:
    return d if isinstance(d, Mapping) else {}


def _ci(d: Mapping[str, Any]) -> str:
    if not d:
        return ""
    return f"{d['estimate']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"


def _p(d: Mapping[str, Any], key: str = "p") -> str:
    v = d.get(key) if d else None
    return "" if v is None else f"{float(v):.2g}"


def _row(name: str, label: str, al: Mapping[str, Any], deltas: Mapping[str, Any]) -> dict[str, Any]:
    key = {"main": "student"}.get(name, name)
    a = _m(al.get(key))
    d = _m(deltas.get(f"{name}_vs_base"))
    ex = _m(al.get({"control": "excess_vs_control", "benign": "excess_vs_benign"}.get(name, "")))
    vs_ctrl = _m(deltas.get(f"main_vs_{name}"))

    def vs(d: Mapping[str, Any]) -> str:
        return "" if name == "main" or not d else f"{_ci(d)}, p={_p(d)}"

    return {
        "series": label,
        "behavior Δ vs base [95% CI]": _ci(d),
        "p (Δ vs base)": _p(d),
        f"EAS at layer {al.get('layer')}": "" if not a else f"{a['eas']:+.3f}",
        "z iso / z cov": "" if not a else f"{a['z_iso']:+.1f} / {a['z_cov']:+.1f}",
        "p one-sided / two-sided": "" if not a else f"{a['p']:.2g} / {a['p_two_sided']:.2g}",
        "student − this: behavior [CI], p": vs(vs_ctrl),
        "student − this: EAS [CI], p": vs(ex),
    }


def section_evidence(rep: Report, verdict: Mapping[str, Any]) -> None:
    """The side-by-side table behind the verdict (nothing when the verdict has no numbers)."""
    nums = _m(verdict.get("numbers"))
    al = _m(nums.get("alignment"))
    if not al:
        return
    deltas = _m(nums.get("behavior"))
    rep.subheading("Evidence: student and controls side by side")
    rep.text(
        f"Claim: {nums.get('claim')} (tests at α={nums.get('alpha')}). Headline layer "
        f"{al.get('layer')}: {al.get('rule')}. Behavior deltas are means over eval prompts of "
        "the per-prompt score difference, with a percentile bootstrap CI over prompts and a "
        "two-sided sign-flip permutation p. EAS is tested against the isotropic and the "
        "covariance-matched random-direction nulls (one-sided p = the larger of the two "
        "empirical p-values; two-sided from the z-scores). Excess alignment has a bootstrap CI "
        "over probe prompts."
    )
    series = list(_SERIES) + [
        (k[: -len("_vs_base")], f"benign control {k[6:-8]}")
        for k in deltas
        if k.startswith("benign") and k.endswith("_vs_base") and k[6:-8].isdigit()
    ]
    rows = [
        _row(name, label, al, deltas)
        for name, label in series
        if al.get({"main": "student"}.get(name, name)) is not None
        or deltas.get(f"{name}_vs_base") is not None
    ]
    rep.table(rows)
    rt = _m(deltas.get("main_vs_benign_replicates"))
    if rt:
        rep.text(
            f"Model-level test (models as the unit, so training noise is in the null): the "
            f"student's mean score is {rt['estimate']:+.3f} beyond the mean of {int(rt['k'])} "
            f"benign replicates (their sd {rt['replicate_sd']:.3f}; 95% prediction interval of "
            f"a replicate [{rt['pi_lo']:.3f}, {rt['pi_hi']:.3f}]); t = {rt['t']:+.2f}, "
            f"df = {int(rt['df'])}, one-sided p = {_p(rt)}. 'Inherited' needs this and the "
            "per-prompt delta against the base control."
        )
    anyl = _m(al.get("any_layer"))
    if anyl:
        rep.text(
            f"Any layer ({anyl.get('correction')} over {anyl.get('n_layers')} layers, reported "
            f"only, not used for the claim): {anyl.get('n_significant')} layers significant; "
            f"smallest adjusted p {float(anyl.get('min_p_adj', 1.0)):.2g} at layer "
            f"{anyl.get('layer')}."
        )
    for flag in verdict.get("flags") or []:
        rep.text(f"Flag: {flag}", "note")
