"""The plain-words verdict of a distillation experiment, from its results dict (formulas in
DESIGN.md "Selection", "Excess alignment", "Nulls", "Behavior deltas"; docs/statistics.md).

Nothing here is tuned to an answer. The verdict rests only on tests that hold as stated:

1. **Headline layer, fixed in advance** (DESIGN.md "Selection"): ℓ* is chosen from the teacher
   side before the students are looked at: the carry test's clean-peak layer; if the clean peak
   is α = 0, the carry grid layer of the raw peak; if there is no carry grid, the middle tracked
   layer. The rule used is recorded. At ℓ* no selection correction is needed.
2. **Any-layer test** (reported, not used for the claim): the smallest Holm-adjusted p over the
   tracked layers (family-wise over layers, so it is selection-aware as well).
3. **Behavior** (DESIGN.md "Behavior deltas"): Δ(main vs control) = mean_i (Bᵢ(main) − Bᵢ(control))
   over eval prompts, with a bootstrap CI and a two-sided sign-flip p.
4. **Activation** at ℓ*: with ≥ 2 clean controls (the base control and the benign replicates)
   the detection bank's chosen activation detector (:mod:`steerlens.pipeline.signature`;
   ``proj_fixed`` without a committed bank: the student's projection on v̂ at ℓ* against the
   controls' spread, prediction t-test) at p < α (training noise is its null; its power is
   measured, ``verdict["power"]``). Without them
   (older results, no benign control): the student's own EAS beats both random-direction nulls,
   p(ℓ*) = max(p_iso, p_cov) < α, *and* the excess alignment EAS(main) − EAS(base control) has
   bootstrap p < α (one-sided); both must hold (an intersection-union test, level α). That rule
   leaves training noise out and its power is unmeasured.

Claim (``numbers["claim"]``):

- **inherited**: Δ(main vs control) > 0 with p < α (its CI excludes 0 at level 1 − α when
  the two agree) **and**, with ≥ 2 benign replicates (the matched control: the same system-prompt
  form without the trait, each run with its own data sample and seed), the student's B̄ beyond
  the replicates' spread: the prediction t-test ``main_vs_benign_replicates`` (t = (B̄_main −
  B̄_rep)/(s_rep·√(1 + 1/k)), df = k − 1) > 0 with p < α. Both must hold (intersection-union,
  level α). The second test is what the placebo calibration (benchmarks/calibration.py) asks
  for: a student of the *neutral* teacher passes the first (a "you love X" system prompt raises
  the owl score by itself, and per-prompt tests hold the two models fixed, so training noise
  alone separates them), not the second. Without benign replicates the claim rests on the first
  test only and is flagged as not separating the trait from a generic system-prompt effect;
- **activation signature without behavior change**: not inherited, but test 4 holds;
- **no evidence**: neither.

A control is **flagged** when its own alignment at ℓ* is significant in either direction
(two-sided normal p from the null z-scores, p = max over the two nulls of 2Φ(−|z|) < α, both z
of the same sign), or its behavior moved from the base (Δ(control vs base), p < α).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from steerlens.carry.result import CarryResult
from steerlens.experiments.owl_records import (
    OwlAlignment,
    OwlAnyLayer,
    OwlBehavior,
    OwlDelta,
    OwlExcessRow,
    OwlNamedDeltas,
    OwlPower,
    OwlResults,
    OwlSeriesRow,
    OwlVerdict,
    OwlVerdictNumbers,
    carry_json,
    parse_part,
)
from steerlens.experiments.verdict_lines import alignment_lines, behavior_lines
from steerlens.measures.stats import normal_two_sided_p
from steerlens.pipeline.power import measured_power
from steerlens.track.results import AlignmentTrack

__all__ = ["CLAIMS", "headline_layer", "verdict"]

CLAIMS = ("inherited", "activation signature without behavior change", "no evidence")


def headline_layer(
    carry: CarryResult | Mapping[str, Any] | None, layers: list[int]
) -> tuple[int, str]:
    """(ℓ*, the rule that chose it), from the teacher side only (see the module doc)."""
    c = carry if isinstance(carry, CarryResult) else parse_part(CarryResult, carry, carry_json)
    cp = None if c is None else c.clean_peak
    if cp is not None and cp.layer is not None and int(cp.layer) in layers:
        return int(cp.layer), "the carry test's clean-peak layer (teacher side, fixed in advance)"
    raw = None if c is None else c.raw_peak
    if raw is not None and raw.layer is not None and int(raw.layer) in layers:
        return int(raw.layer), (
            "the carry test's raw-peak layer (its clean peak is α = 0; teacher side, fixed "
            "in advance)"
        )
    mid = layers[len(layers) // 2]
    return mid, "the middle tracked layer (no carry peak; fixed in advance)"


def _series_at(track: AlignmentTrack, name: str, j: int) -> OwlSeriesRow | None:
    """The last checkpoint's EAS, nulls and p at column ``j`` of series ``name``."""
    s = track.series.get(name)
    if s is None or not s.steps:
        return None
    keys = ("eas", "z_iso", "p_iso", "z_cov", "p_cov", "p_adj")
    row = OwlSeriesRow(**{k: float(getattr(s, k)[-1][j]) for k in keys}, step=int(s.steps[-1]))
    row.p = max(row.p_iso, row.p_cov)
    z = (row.z_iso, row.z_cov)
    same_sign = all(math.isfinite(v) for v in z) and (z[0] > 0) == (z[1] > 0)
    row.p_two_sided = max(normal_two_sided_p(v) for v in z) if same_sign else 1.0
    return row


def _excess_at(track: AlignmentTrack, j: int) -> OwlExcessRow | None:
    ex = track.excess
    if ex is None or not len(ex.estimate):
        return None
    est, lo, hi, p = (float(a[-1][j]) for a in (ex.estimate, ex.lo, ex.hi, ex.p))
    return OwlExcessRow(est, lo, hi, p, float(ex.level))


def _any_layer(track: AlignmentTrack, name: str, alpha: float) -> OwlAnyLayer | None:
    s = track.series.get(name)
    if s is None or not s.steps:
        return None
    p_adj = np.asarray(s.p_adj[-1], dtype=float)
    if not np.isfinite(p_adj).any():
        return None
    j = int(np.nanargmin(p_adj))
    return OwlAnyLayer(
        min_p_adj=float(p_adj[j]),
        layer=int(track.layers[j]),
        n_significant=int(np.nansum(p_adj < alpha)),
        n_layers=int(p_adj.size),
        correction=str(track.settings.get("correction", "holm")),
    )


def _alignment(r: OwlResults, alpha: float) -> OwlAlignment:
    """Selection, per-series alignment at ℓ*, excess vs each control and the any-layer test."""
    track = r.track
    if track is None:
        raise KeyError("track: the verdict needs the alignment track of the results")
    layers = [int(x) for x in track.layers]
    layer, rule = headline_layer(r.carry, layers)
    j = layers.index(layer)
    out = OwlAlignment(
        layer=layer,
        rule=rule,
        selection="layer fixed in advance from the teacher side",
        student=_series_at(track, "main", j),
        control=_series_at(track, "control", j),
        excess_vs_control=_excess_at(track, j),
        any_layer=_any_layer(track, "main", alpha),
    )
    if r.track_benign is not None:
        out.benign = _series_at(r.track_benign, "control", j)
        out.excess_vs_benign = _excess_at(r.track_benign, j)
    st, ex = out.student, out.excess_vs_control
    out.signature = bool(st is not None and ex is not None and st.p < alpha and ex.p < alpha)
    return out


def _flags(al: OwlAlignment, deltas: Mapping[str, OwlDelta], alpha: float) -> list[str]:
    flags = []
    for name, label, row in (
        ("control", "base control", al.control),
        ("benign", "benign control", al.benign),
    ):
        if row is not None and row.p_two_sided < alpha:
            side = "along" if row.eas > 0 else "against"
            flags.append(
                f"the {label}'s own alignment is significant ({side} the teacher vector: EAS "
                f"{row.eas:+.3f} at layer {al.layer}, two-sided p={row.p_two_sided:.2g})"
            )
        d = deltas.get(f"{name}_vs_base")
        if d is not None and d.p < alpha:
            flags.append(
                f"the {label}'s behavior moved from the base ({d.estimate:+.3f}, "
                f"CI [{d.lo:+.3f}, {d.hi:+.3f}], p={d.p:.2g})"
            )
    return flags


_HEADS = {
    "inherited": (
        "Inherited: the student's trait behavior moved beyond the base control's and beyond "
        "the spread of the matched (benign) controls (both tests significant at the stated "
        "level).",
        "strong",
    ),
    "activation signature without behavior change": (
        "Activation signature without behavior change: at the pre-chosen layer the student's "
        "shift aligns with the teacher vector beyond the nulls and the base control, but its "
        "behavior does not separate from the control.",
        "weak",
    ),
    "no evidence": (
        "No evidence of transfer: neither the behavior nor the alignment at the pre-chosen layer "
        "separates the student from the base control and the nulls.",
        "none",
    ),
}


def _power(loss: str, behavior_rule: str, activation_rule: str | None) -> OwlPower:
    """The measured power of the behavior rule that decided (``behavior_model`` with benign
    replicates, else ``behavior_vs_control``) and of the activation rule, when the bank ran it."""
    beh = OwlPower.from_json(measured_power(behavior_rule, loss))
    if activation_rule is None:
        text = "The activation rule used here (EAS with probe-prompt nulls) was not measured."
        act = OwlPower(text, text, "unmeasured")
    else:
        act = OwlPower.from_json(measured_power(activation_rule, loss))
    return OwlPower(
        f"Held-out power: behavior rule {beh.short}; activation rule {act.short}.",
        f"Behavior rule: {beh.detail} Activation rule: {act.detail}",
    )


def verdict(results: OwlResults | Mapping[str, Any]) -> dict[str, Any]:
    """Plain-words answer with the claim, the numbers, intervals and p-values it rests on,
    and the flags on the controls (rules in the module docstring), as the JSON of an
    :class:`~steerlens.experiments.owl_records.OwlVerdict`."""
    r = results if isinstance(results, OwlResults) else OwlResults.parse(results)
    alpha = r.alpha
    beh = r.behavior or OwlBehavior()
    deltas = beh.deltas
    al = _alignment(r, alpha)
    sig = r.signature
    if sig is not None and sig.tested:
        al.signature = sig.significant(alpha)
        al.signature_rule = sig.detector
    named = OwlNamedDeltas.of(deltas)
    mc, rep = named.main_vs_control, named.main_vs_benign_replicates
    inherited = bool(mc is not None and mc.estimate > 0 and mc.p < alpha)
    if rep is not None:
        inherited = inherited and rep.estimate > 0 and rep.p < alpha
    claim = CLAIMS[0] if inherited else (CLAIMS[1] if al.signature else CLAIMS[2])
    head, strength = _HEADS[claim]
    if inherited and rep is None:
        head = (
            "Inherited against the base control only: the student's trait behavior moved beyond "
            "the base control's (no benign replicates: not separated from a generic "
            "system-prompt effect)."
        )
    if inherited and al.signature:
        head += " Its activation shift also aligns with the teacher vector at the pre-chosen layer."
    flags = _flags(al, deltas, alpha)
    if inherited and rep is None:
        flags.append(
            "no benign replicates (benign_control with benign_replicates >= 2): 'inherited' "
            "rests on the per-prompt test against the base control, which a neutral-prompt "
            "teacher's student also passes; the trait is not separated from a generic "
            "system-prompt effect or from training noise"
        )
    carry = r.carry
    lines = behavior_lines(beh) + alignment_lines(al, alpha)
    if sig is not None:
        lines.append(f"Model-level activation test (the rule used when tested): {sig.summary()}.")
    lines.append(f"Carry test of the teacher vector: {None if carry is None else carry.verdict}")
    lines += [f"Flag: {f}." for f in flags]
    power = _power(
        r.loss, "behavior_vs_control" if rep is None else "behavior_model", al.signature_rule
    )
    lines.append(f"Power: {power.detail}")
    act = (
        "the student's projection on v̂ beyond the clean controls' spread (model-level "
        "prediction test)"
        if al.signature_rule
        else "both the student's EAS beyond its nulls and the excess over the base control"
    )
    lines.append(
        f"Claims are tested at α={alpha:g}: 'inherited' needs the student-vs-base-control "
        "behavior delta and, with benign replicates, the student beyond their spread (model-"
        f"level prediction test); an activation signature needs {act}, at the layer fixed in "
        "advance."
    )
    numbers = OwlVerdictNumbers(
        signature=sig,
        alpha=alpha,
        claim=claim,
        behavior=deltas,
        alignment=al,
        carry_level=None if carry is None else carry.level.value,
        # the earlier keys, kept for readers of older results
        excess_alignment=None if al.excess_vs_control is None else al.excess_vs_control.estimate,
        excess_layer=al.layer,
        significant_layers=None if al.any_layer is None else al.any_layer.n_significant,
    )
    return OwlVerdict(head, lines, strength, claim, flags, power, numbers).to_json()
