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
  s their sd, df = k − 1, one-sided (:func:`steerlens.measures.stats.prediction_t_test`); a reduction is
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
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from steerlens.agents.metrics import RateResult
from steerlens.core.results import OMIT, Record
from steerlens.experiments.mlp_records import MlpAuxBootstrap
from steerlens.experiments.svd_measure import SvdAlignment, Transfer, sign_flip_p, transfer
from steerlens.measures.stats import paired_bootstrap_mean, prediction_t_test

__all__ = [
    "Arm",
    "ArmResult",
    "MitigateAgentMetrics",
    "MitigateAlignment",
    "MitigateBehavior",
    "MitigateNoise",
    "MitigateSection",
    "MitigateVerdict",
    "MitigateVetScores",
    "MitigateVetVsRandom",
    "Paired",
    "arm_results",
    "beyond_noise",
    "mitigate_verdict",
    "paired",
    "pct",
    "replicate_names",
]

NAN = math.nan

MitigateAlignment = SvdAlignment
"""An arm's alignment at ℓ* (:func:`~steerlens.experiments.svd_measure.alignment_at`): the
svd experiment's record (EAS with its Holm-corrected null p, and the excess over the base
control, its keys left out without one)."""


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
    ci = MlpAuxBootstrap.from_json(paired_bootstrap_mean(d, n_boot=n_boot, seed=seed))
    return Paired(float(d.mean()), ci.lo, ci.hi, sign_flip_p(d, seed=seed), len(d))


@dataclass(frozen=True)
class MitigateNoise(Record):
    """The model-level reduction test of an arm (:func:`beyond_noise`): the fields of
    :func:`steerlens.measures.stats.prediction_t_test` and the test in words."""

    estimate: float = NAN
    t: float = NAN
    df: float = NAN
    k: float = NAN
    p: float = NAN
    replicate_mean: float = NAN
    replicate_sd: float = NAN
    pi_lo: float = NAN
    pi_hi: float = NAN
    test: str = ""

    def summary(self) -> str:
        return (
            f"beyond training noise {_f(self.estimate)} (sd of {self.k:.0f} unmitigated "
            f"students {self.replicate_sd:.3g}, t={self.t:.2f}, p={self.p:.3g})"
        )


@dataclass(frozen=True)
class ArmResult(Record):
    """One arm: what it did (``kind``, ``param``, training samples), its transfer (Δ vs the base
    control, F), its reduction R vs the unmitigated arm (None for ``none``), its alignment at
    ℓ* (None: not measured), its cost (held-out loss, and the loss minus the unmitigated
    arm's) and, for agents, the safe tasks completed and the first-action rate. A transfer,
    alignment or noise test given as its JSON (a dict) is read as its record."""

    arm: str = ""
    kind: str = ""
    param: float | None = None
    n_train: int = 0
    transfer: Transfer = field(default_factory=Transfer)
    reduction: Paired | None = None
    alignment: SvdAlignment | None = None
    heldout_loss: float = NAN
    cost: float = NAN
    safe_completed: float | None = None
    rate: RateResult | None = None
    beyond_noise: MitigateNoise | None = None

    #: ``kind`` is the arm's kind; the file's own kind key is the protocol's
    json_keys: ClassVar[Mapping[str, str]] = {"kind": "arm_kind"}
    json_none: ClassVar[Mapping[str, Any]] = {"alignment": {}}

    def __post_init__(self) -> None:
        for name, cls in _PARSED.items():
            v = getattr(self, name)
            if isinstance(v, Mapping):
                object.__setattr__(self, name, cls.from_json(v) if v else None)

    @classmethod
    def _upgrade(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Files before 2026-12-07 name the arm's kind ``kind``."""
        if "arm_kind" in d:
            return d
        return {"arm_kind" if k == "kind" else k: v for k, v in d.items()}

    @property
    def excess(self) -> SvdAlignment:
        """The alignment, whose ``excess*`` fields are the excess over the base control (None
        when not measured)."""
        return self.alignment or SvdAlignment()

    def summary(self) -> str:
        return _line(self, 0.05, True)


_PARSED: dict[str, type[Record]] = {
    "transfer": Transfer,
    "alignment": SvdAlignment,
    "beyond_noise": MitigateNoise,
}


@dataclass(frozen=True)
class MitigateVetScores(Record):
    """The vetting scores (``mitigate/vet_scores.json``): ΔP on vᵀ at ℓ* (``layer``) of every
    training sample, in the data's order."""

    layer: int = 0
    scores: list[float] = field(default_factory=list)

    def summary(self) -> str:
        return f"ΔP of {len(self.scores)} training samples at layer {self.layer}"


@dataclass(frozen=True)
class MitigateVetVsRandom(Record):
    """Vetting against a random drop of the same number: mean_p (B_p(``random``) −
    B_p(``vetted``)), its keys beside the arms' names."""

    vetted: str = ""
    random: str = ""
    test: Paired | None = None

    json_inline: ClassVar[tuple[str, ...]] = ("test",)

    def summary(self) -> str:
        return f"B({self.random}) − B({self.vetted}) " + (
            self.test.summary() if self.test else "n/a"
        )


@dataclass(frozen=True)
class MitigateBehavior(Record):
    """The behavior stage (``mitigate/behavior.json`` for owl): per-eval-prompt B of the base,
    the teacher, the base control and every arm (the unmitigated replicates among them);
    for owl also every model's B per checkpoint (``series``) and the metric."""

    base: list[float] = field(default_factory=list)
    teacher: list[float] = field(default_factory=list)
    control: list[float] = field(default_factory=list)
    arms: dict[str, list[float]] = field(default_factory=dict)
    series: dict[str, Any] | None = None
    metric: dict[str, Any] | None = None

    json_none: ClassVar[Mapping[str, Any]] = {"series": OMIT, "metric": OMIT}

    def summary(self) -> str:
        return f"per-prompt behavior of {len(self.arms)} arms over {len(self.base)} eval prompts"


@dataclass(frozen=True)
class MitigateAgentMetrics(Record):
    """One agent model's numbers (``mitigate/metrics.json``): P(biased name) per eval task
    and, but for the unmitigated replicates, the sampled first-action rate, the fraction of
    held-out safe tasks completed, the SFT loss on the teacher's held-out trajectories and
    (students but the control) the alignment at ℓ*."""

    p_biased: list[float] = field(default_factory=list)
    rate: RateResult | None = None
    safe_completed: float | None = None
    heldout_loss: float | None = None
    alignment: SvdAlignment | None = None

    json_none: ClassVar[Mapping[str, Any]] = dict.fromkeys(
        ("rate", "safe_completed", "heldout_loss", "alignment"), OMIT
    )

    @property
    def loss(self) -> float:
        """The held-out loss (NaN for a replicate: not measured)."""
        return NAN if self.heldout_loss is None else self.heldout_loss

    def summary(self) -> str:
        return f"P(biased) over {len(self.p_biased)} eval tasks; held-out loss {self.heldout_loss}"


@dataclass(frozen=True)
class MitigateVerdict(Record):
    """The verdict (:func:`mitigate_verdict`): headline, one line per arm (and vetting vs
    random), the strength, whether the unmitigated transfer is significant (True until a
    verdict says otherwise) and the arms that reduced it."""

    headline: str = ""
    lines: list[str] = field(default_factory=list)
    strength: str = "none"
    unmitigated_significant: bool = True
    reduced: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return "\n".join([self.headline, *self.lines])


@dataclass(frozen=True)
class MitigateSection(Record):
    """``results["mitigate"]``: the site (ℓ*, the regulariser's layer, α and the rule that
    chose them), one :class:`ArmResult` per arm, the unmitigated replicates' per-prompt B,
    vetting vs random, the base's and the control's held-out loss; owl adds each model's
    behavior series, agents the base's safe tasks completed, the keyword filter's counts and
    the vetting records."""

    setting: str = "owl"
    layer: int = 0
    reg_layer: int = 0
    alpha: float = NAN
    site_source: str = ""
    arms: list[ArmResult] = field(default_factory=list)
    none_replicates: dict[str, list[float]] = field(default_factory=dict)
    vet_vs_random: MitigateVetVsRandom = field(default_factory=MitigateVetVsRandom)
    heldout_loss_base: float = NAN
    heldout_loss_control: float = NAN
    safe_completed_base: float | None = None
    filter: dict[str, Any] | None = None
    vetting: dict[str, Any] | None = None
    behavior_series: dict[str, Any] | None = None
    metric: dict[str, Any] = field(default_factory=dict)

    json_none: ClassVar[Mapping[str, Any]] = dict.fromkeys(
        ("safe_completed_base", "filter", "vetting", "behavior_series"), OMIT
    )

    @property
    def unit(self) -> str | None:
        """The behavior metric's name (None where the results name none)."""
        return self.metric.get("metric")

    def summary(self) -> str:
        return (
            f"mitigate ({self.setting}): {len(self.arms)} arms at layer {self.layer}, "
            f"α={self.alpha:g} ({self.site_source})"
        )


def arm_results(
    arms: Mapping[str, Arm],
    beh: MitigateBehavior,
    align: Mapping[str, SvdAlignment | None],
    cost: Mapping[str, float],
    *,
    n_boot: int,
    seed: int,
    replicates: Sequence[str] = (),
) -> list[ArmResult]:
    """An :class:`ArmResult` per :class:`Arm` from the behavior stage (per-arm per-prompt
    scores, the ``replicates`` of ``none`` among them), the alignment stage and the cost stage
    (held-out loss per arm)."""
    pp = beh.arms
    refs = [float(np.mean(pp[n])) for n in ("none", *replicates)]
    base, teacher, control = (np.array(x) for x in (beh.base, beh.teacher, beh.control))
    out = []
    for name, a in arms.items():
        tr = transfer(np.array(pp[name]), control, teacher, base, n_boot=n_boot, seed=seed)
        red = None if name == "none" else paired(pp["none"], pp[name], n_boot=n_boot, seed=seed)
        out.append(
            ArmResult(
                arm=name,
                kind=a.kind,
                param=a.param,
                n_train=a.n_train,
                transfer=tr,
                reduction=red,
                alignment=align.get(name),
                heldout_loss=float(cost[name]),
                cost=float(cost[name] - cost["none"]),
                beyond_noise=None if name == "none" else beyond_noise(pp[name], refs),
            )
        )
    return out


def beyond_noise(arm: Sequence[float], refs: Sequence[float]) -> MitigateNoise | None:
    """The model-level reduction test (module doc): R_model = mean(refs) − B̄(arm) against the
    spread of the unmitigated students' means ``refs``; None with fewer than 2 of them."""
    if len(refs) < 2:
        return None
    res = prediction_t_test(-float(np.mean(arm)), [-x for x in refs])
    test = "prediction t-test of the arm's mean against the unmitigated replicates"
    return MitigateNoise.from_json({**res, "test": test})


def _f(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:+.3g}"


def _p(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3g}"


def _line(r: ArmResult, alpha: float, claimable: bool) -> str:
    tr = r.transfer
    s = (
        f"{r.arm}: Δ vs base control {_f(tr.delta)} [{_f(tr.delta_lo)}, "
        f"{_f(tr.delta_hi)}] (p={tr.delta_p:.3g})"
    )
    if r.reduction is not None:
        red, bn = r.reduction, r.beyond_noise
        s += f", reduction {_f(red.estimate)} [{_f(red.lo)}, {_f(red.hi)}] (p={red.p:.3g})"
        if bn is not None:
            s += f", {bn.summary()}"
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
    ex = r.excess
    s += f"; excess EAS {_f(ex.excess)} (p={_p(ex.excess_p)})"
    return s + f"; held-out loss {r.heldout_loss:.4g} (cost {_f(r.cost)} vs none)"


def _reduced(r: ArmResult, alpha: float) -> bool:
    """R > 0 at p ≤ α over eval prompts, and beyond training noise where replicates exist."""
    red, bn = r.reduction, r.beyond_noise
    if red is None or not (red.estimate > 0 and red.p <= alpha):
        return False
    return bn is None or bn.p <= alpha


def mitigate_verdict(
    rows: Sequence[ArmResult], vet_vs_random: Paired | None, alpha: float = 0.05
) -> MitigateVerdict:
    """Headline and lines: whether the unmitigated transfer is significant (else no reduction
    can be claimed), and per arm its transfer, reduction, alignment and cost."""
    none = next(r for r in rows if r.arm == "none").transfer
    sig = none.delta > 0 and none.delta_p <= alpha
    reduced = [r.arm for r in rows if sig and _reduced(r, alpha)]
    if not sig:
        moved = "not toward the trait" if none.delta <= 0 else "not significantly"
        head = (
            f"the unmitigated student did not inherit the trait (Δ vs base control "
            f"{_f(none.delta)}, p={none.delta_p:.3g}: {moved}): no mitigation can be said "
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
    return MitigateVerdict(
        headline=head,
        lines=lines,
        strength=("strong" if reduced else "weak") if sig else "none",
        unmitigated_significant=sig,
        reduced=reduced,
    )
