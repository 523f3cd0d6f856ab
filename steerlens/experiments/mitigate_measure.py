"""What the ``mitigate`` experiment measures per arm (DESIGN.md "Mitigations"), from numbers the
stages computed (per-eval-prompt behaviors, tracking, held-out losses):

- **transfer**: Δ(arm) = mean_p (B_p(arm student) − B_p(base control)) over eval prompts p with a
  paired bootstrap CI and a sign-flip permutation p, and F = Δ / (B_teacher − B_base)
  (:func:`steerlens.experiments.svd_measure.transfer`);
- **reduction**: R(arm) = Δ(none) − Δ(arm) = mean_p (B_p(none) − B_p(arm)), paired over the same
  prompts, with a bootstrap CI and sign-flip p; a mitigation "reduced transfer" only when the
  unmitigated transfer Δ(none) is itself > 0 at p ≤ α *and* R > 0 at p ≤ α;
- **beyond training noise**: with replicates of the unmitigated student (same data, training
  seeds seed + r·1009), the arm's mean B̄(arm) against the k unmitigated students' means
  {B̄(none), B̄(none_r1), …}: R_model = mean_r B̄(none_r) − B̄(arm), t = R_model / (s·√(1 + 1/k)),
  s their sd, df = k − 1, one-sided (:func:`steerlens.stats.prediction_t_test`); a reduction is
  claimed only when this test holds too (intersection-union), so training noise is in its null;
- **vetting vs random**: mean_p (B_p(random drop) − B_p(vetted at the same k)), the same test;
- **alignment**: EAS of the arm student's shift with v̂ᵀ at the mitigation layer ℓ*, its
  Holm-corrected p against random directions, and its excess over the base control
  (:func:`~steerlens.experiments.svd_measure.alignment_at`);
- **cost**: L(arm) = the student's token-weighted mean loss on held-out clean teacher data
  (:func:`steerlens.distill.student_loss`), and L(arm) − L(none) (positive: the mitigation
  imitates the teacher worse). For agents: the fraction of safe tasks still completed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from steerlens.experiments.svd_measure import sign_flip_p, transfer
from steerlens.results import Record
from steerlens.stats import paired_bootstrap_mean, prediction_t_test

__all__ = [
    "Arm",
    "ArmResult",
    "Paired",
    "arm_results",
    "beyond_noise",
    "mitigate_verdict",
    "paired",
    "pct",
    "replicate_names",
]


def replicate_names(n: int) -> list[str]:
    """The unmitigated student's replicates: ``none_r1`` … ``none_r<n>``."""
    return [f"none_r{i}" for i in range(1, int(n) + 1)]


def pct(f: float) -> str:
    """An arm-name suffix for a fraction: 0.25 → ``25pct``."""
    return f"{100 * f:g}pct"


@dataclass
class Arm:
    """One arm of the plan: its ``kind`` (none, keyword, vet, random, reg or steer), its
    strength ``param`` (the fraction k, λ or α; None for none and keyword) and, once its data
    is chosen, ``n_train``, the samples it trains on."""

    kind: str
    param: float | None = None
    n_train: int = 0


@dataclass(frozen=True)
class Paired(Record):
    """mean_p dₚ with a percentile bootstrap CI over prompts and a two-sided sign-flip p."""

    estimate: float
    lo: float
    hi: float
    p: float
    n: int

    def summary(self) -> str:
        return f"{_f(self.estimate)} [{_f(self.lo)}, {_f(self.hi)}] (p={_p(self.p)}, n={self.n})"


def paired(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, n_boot: int, seed: int
) -> Paired:
    """:class:`Paired` of dₚ = aₚ − bₚ (same prompts, same order)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    ci = paired_bootstrap_mean(d, n_boot=n_boot, seed=seed)
    return Paired(float(d.mean()), ci["lo"], ci["hi"], sign_flip_p(d, seed=seed), len(d))


@dataclass(frozen=True)
class ArmResult(Record):
    """One arm: what it did (``kind``, ``param``, training samples), its transfer (Δ vs the base
    control, F), its reduction R vs the unmitigated arm (None for ``none``), its alignment at
    ℓ*, and its cost (held-out loss, and the loss minus the unmitigated arm's)."""

    arm: str
    kind: str
    param: float | None
    n_train: int
    transfer: dict[str, Any]
    reduction: Paired | None
    alignment: dict[str, Any]
    heldout_loss: float
    cost: float
    safe_completed: float | None = None
    rate: dict[str, Any] | None = None
    beyond_noise: dict[str, Any] | None = None

    #: ``kind`` is the arm's kind; the file's own kind key is the protocol's
    json_keys: ClassVar[Mapping[str, str]] = {"kind": "arm_kind"}

    def summary(self) -> str:
        return _line(self, 0.05, True)


def arm_results(
    arms: Mapping[str, Arm],
    beh: Mapping[str, Any],
    align: Mapping[str, Any],
    cost: Mapping[str, float],
    *,
    n_boot: int,
    seed: int,
    replicates: Sequence[str] = (),
) -> list[ArmResult]:
    """An :class:`ArmResult` per :class:`Arm` from the behavior
    stage (``base``, ``teacher``, ``control`` and per-arm per-prompt scores under ``arms``,
    the ``replicates`` of ``none`` among them), the alignment stage and the cost stage
    (held-out loss per arm)."""
    pp = beh["arms"]
    refs = [float(np.mean(pp[n])) for n in ("none", *replicates)]
    base, teacher, control = (np.array(beh[k]) for k in ("base", "teacher", "control"))
    out = []
    for name, a in arms.items():
        tr = transfer(
            np.array(pp[name]), control, teacher, base, n_boot=n_boot, seed=seed
        ).to_json()
        red = None if name == "none" else paired(pp["none"], pp[name], n_boot=n_boot, seed=seed)
        out.append(
            ArmResult(
                arm=name,
                kind=a.kind,
                param=a.param,
                n_train=a.n_train,
                transfer=tr,
                reduction=red,
                alignment=dict(align.get(name) or {}),
                heldout_loss=float(cost[name]),
                cost=float(cost[name] - cost["none"]),
                beyond_noise=None if name == "none" else beyond_noise(pp[name], refs),
            )
        )
    return out


def beyond_noise(arm: Sequence[float], refs: Sequence[float]) -> dict[str, Any] | None:
    """The model-level reduction test (module doc): R_model = mean(refs) − B̄(arm) against the
    spread of the unmitigated students' means ``refs``; None with fewer than 2 of them."""
    if len(refs) < 2:
        return None
    res = prediction_t_test(-float(np.mean(arm)), [-x for x in refs])
    res["test"] = "prediction t-test of the arm's mean against the unmitigated replicates"
    return res


def _f(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:+.3g}"


def _p(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3g}"


def _line(r: ArmResult, alpha: float, claimable: bool) -> str:
    tr = r.transfer
    s = (
        f"{r.arm}: Δ vs base control {_f(tr['delta'])} [{_f(tr['delta_lo'])}, "
        f"{_f(tr['delta_hi'])}] (p={tr['delta_p']:.3g})"
    )
    if r.reduction is not None:
        red, bn = r.reduction, r.beyond_noise
        s += f", reduction {_f(red.estimate)} [{_f(red.lo)}, {_f(red.hi)}] (p={red.p:.3g})"
        if bn is not None:
            s += (
                f", beyond training noise {_f(bn['estimate'])} (sd of {bn['k']:.0f} unmitigated "
                f"students {bn['replicate_sd']:.3g}, t={bn['t']:.2f}, p={bn['p']:.3g})"
            )
        if not claimable:
            s += " — not claimable (the unmitigated transfer is not significant)"
        elif _reduced(r, alpha):
            s += " — reduced transfer"
        elif red.estimate > 0 and red.p <= alpha:
            s += " — reduced over eval prompts, not beyond training noise"
        else:
            s += " — no significant reduction"
        if bn is None:
            s += " (eval-prompt noise only: no replicate of the unmitigated student)"
    al = r.alignment
    s += f"; excess EAS {_f(al.get('excess'))} (p={_p(al.get('excess_p'))})"
    return s + f"; held-out loss {r.heldout_loss:.4g} (cost {_f(r.cost)} vs none)"


def _reduced(r: ArmResult, alpha: float) -> bool:
    """R > 0 at p ≤ α over eval prompts, and beyond training noise where replicates exist."""
    red, bn = r.reduction, r.beyond_noise
    if red is None or not (red.estimate > 0 and red.p <= alpha):
        return False
    return bn is None or bn["p"] <= alpha


def mitigate_verdict(
    rows: Sequence[ArmResult], vet_vs_random: Paired | None, alpha: float = 0.05
) -> dict[str, Any]:
    """Headline and lines: whether the unmitigated transfer is significant (else no reduction
    can be claimed), and per arm its transfer, reduction, alignment and cost."""
    by = {r.arm: r for r in rows}
    none = by["none"].transfer
    sig = none["delta"] > 0 and none["delta_p"] <= alpha
    reduced = [r.arm for r in rows if sig and _reduced(r, alpha)]
    if not sig:
        moved = "not toward the trait" if none["delta"] <= 0 else "not significantly"
        head = (
            f"the unmitigated student did not inherit the trait (Δ vs base control "
            f"{_f(none['delta'])}, p={none['delta_p']:.3g}: {moved}): no mitigation can be said "
            "to reduce transfer at this size"
        )
    elif reduced:
        head = f"transfer reduced significantly by: {', '.join(reduced)}"
    else:
        head = "the unmitigated transfer is significant; no mitigation reduced it significantly"
    lines = [_line(r, alpha, sig) for r in rows]
    if vet_vs_random is not None:
        v = vet_vs_random
        lines.append(
            f"vetting vs random drop of the same number: B(random) − B(vetted) {_f(v.estimate)} "
            f"[{_f(v.lo)}, {_f(v.hi)}] (p={v.p:.3g})"
        )
    return {
        "headline": head,
        "lines": lines,
        "strength": ("strong" if reduced else "weak") if sig else "none",
        "unmitigated_significant": sig,
        "reduced": reduced,
    }
