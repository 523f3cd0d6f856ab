"""What the ``svd`` experiment measures per teacher (DESIGN.md "Transfer fraction"):

- the predictor: the carry test's clean-peak S of the owl teacher vector against that teacher;
- transfer: the student's behavior delta vs the base control, Δ = mean_p (B_p(student of T) −
  B_p(base control)), with a paired bootstrap CI over eval prompts p and an exact (or sampled)
  sign-flip permutation p-value, and the transfer fraction F = Δ / (B_T − B_base) with a joint
  bootstrap CI over the same prompts;
- alignment: EAS of the student's shift with the teacher vector at the steered layer against
  the random-direction null, and the excess over the base control with its bootstrap CI.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from steerlens.core.results import OMIT, Record
from steerlens.experiments.mlp_records import MlpAuxBootstrap
from steerlens.measures.stats import bootstrap
from steerlens.track import AlignmentTrack, track_checkpoints

__all__ = [
    "SvdAlignment",
    "SvdRow",
    "SvdVerdict",
    "Transfer",
    "aligned_at",
    "alignment_at",
    "sign_flip_p",
    "svd_verdict",
    "transfer",
    "transfer_verdict",
]


def sign_flip_p(d: np.ndarray, *, n_perm: int = 4096, seed: int = 0) -> float:
    """Two-sided paired sign-flip permutation p of mean(d) = 0: exact over all 2^n sign
    patterns for n ≤ 12, else ``n_perm`` random patterns, p = (1 + #{|perm| ≥ |obs|}) /
    (1 + draws) for sampled patterns and #{...} / 2^n (identity included) for the exact test."""
    d = np.asarray(d, dtype=float)
    obs = abs(d.mean())
    n = len(d)
    if n == 0:
        return math.nan
    if n <= 12:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        stats = np.abs((signs * d).mean(axis=1))
        return float((stats >= obs - 1e-12).mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(n_perm, n))
    hits = int((np.abs((signs * d).mean(axis=1)) >= obs - 1e-12).sum())
    return (1 + hits) / (1 + n_perm)


@dataclass(frozen=True)
class Transfer(Record):
    """Behavior transfer of one teacher's student (metric units; F unitless; ``b_teacher`` /
    ``b_base`` None: no gap recorded)."""

    b_student: float = math.nan
    b_control: float = math.nan
    b_teacher: float | None = None
    b_base: float | None = None
    delta: float = math.nan
    delta_lo: float = math.nan
    delta_hi: float = math.nan
    delta_p: float = math.nan
    fraction: float | None = None
    fraction_lo: float | None = None
    fraction_hi: float | None = None
    n_prompts: int = 0

    def summary(self) -> str:
        return f"Δ vs control {self.delta:+.3g} (p={self.delta_p:.3g}), F={self.fraction}"


_EXCESS = ("excess", "excess_lo", "excess_hi", "excess_p")


@dataclass
class SvdAlignment(Record):
    """A student's EAS at ``layer`` at its last checkpoint ``step`` with its corrected null p,
    and (with a control) the excess EAS over the control with its CI and p (keys left out
    without one)."""

    layer: int = 0
    step: int = 0
    eas: float = math.nan
    eas_p_adj: float = math.nan
    excess: float | None = None
    excess_lo: float | None = None
    excess_hi: float | None = None
    excess_p: float | None = None

    json_none: ClassVar[dict[str, Any]] = dict.fromkeys(_EXCESS, OMIT)

    @classmethod
    def _upgrade(cls, d: dict[str, Any]) -> dict[str, Any]:
        """An excess key saved as null (measured, not finite) is read as NaN, so that it is
        written back as null (a None excess is left out: no control)."""
        return {k: math.nan if v is None and k in _EXCESS else v for k, v in d.items()}

    def summary(self) -> str:
        return f"EAS {self.eas:+.3f} at layer {self.layer} (excess {self.excess})"


@dataclass
class SvdRow(Record):
    """One teacher's row: its carry predictor (clean-peak S where the test is defined), the
    transfer of its student and the student's alignment (None for the base control)."""

    teacher: dict[str, Any] = field(default_factory=dict)
    carry_defined: bool | None = None
    carry_level: str | None = None
    S: float | None = None
    S_layer: int | None = None
    S_alpha: float | None = None
    S_beats_null: bool | None = None
    transfer: Transfer = field(default_factory=Transfer)
    alignment: SvdAlignment | None = None

    def summary(self) -> str:
        return f"S={self.S}; {self.transfer.summary()}"


@dataclass
class SvdVerdict(Record):
    """Headline and lines of one loss (``inherited`` per teacher; None in the run's verdict,
    whose lines cover every loss)."""

    headline: str = ""
    lines: list[str] = field(default_factory=list)
    strength: str = "none"
    positive_control: bool = False
    inherited: dict[str, bool] | None = None

    json_none: ClassVar[dict[str, Any]] = {"inherited": OMIT}

    def summary(self) -> str:
        return self.headline


def transfer(
    student: np.ndarray,
    control: np.ndarray,
    teacher: np.ndarray,
    base: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    min_gap: float = 0.05,
) -> Transfer:
    """:class:`Transfer` from per-eval-prompt behaviors of the student, the base control, the
    teacher and the base (same prompts, same order). F is None when |B_T − B_base| < min_gap
    (no trait to transfer)."""
    s, c, t, b = (np.asarray(x, dtype=float) for x in (student, control, teacher, base))
    if not len(s) == len(c) == len(t) == len(b):
        raise ValueError("per-prompt behaviors must cover the same eval prompts")
    d = s - c
    ci = MlpAuxBootstrap.from_json(
        bootstrap(lambda i: float(d[i].mean()), len(d), n_boot=n_boot, seed=seed)
    )
    gap = float((t - b).mean())
    f = f_lo = f_hi = None
    if abs(gap) >= min_gap:
        g = t - b

        def frac(i: np.ndarray) -> float:
            den = float(g[i].mean())
            return float(d[i].mean()) / den if abs(den) > 1e-12 else math.nan

        fci = MlpAuxBootstrap.from_json(bootstrap(frac, len(d), n_boot=n_boot, seed=seed))
        f, f_lo, f_hi = float(d.mean()) / gap, fci.lo, fci.hi
    return Transfer(
        b_student=float(s.mean()),
        b_control=float(c.mean()),
        b_teacher=float(t.mean()),
        b_base=float(b.mean()),
        delta=float(d.mean()),
        delta_lo=ci.lo,
        delta_hi=ci.hi,
        delta_p=sign_flip_p(d, seed=seed),
        fraction=f,
        fraction_lo=f_lo,
        fraction_hi=f_hi,
        n_prompts=len(d),
    )


def alignment_at(track: AlignmentTrack | Mapping[str, Any], layer: int) -> dict[str, Any]:
    """:class:`SvdAlignment` (as JSON) of a track (or its JSON) at ``layer``: the last
    checkpoint's EAS with its corrected null p, and the excess over the control."""
    t = track if isinstance(track, AlignmentTrack) else AlignmentTrack.from_json(track)
    j, ex = t.layers.index(layer), t.excess
    al = SvdAlignment(layer, t.steps()[-1], t.eas()[-1, j], t.metric("p_adj")[-1, j])
    if ex is not None:
        al.excess, al.excess_lo = ex.estimate[-1, j], ex.lo[-1, j]
        al.excess_hi, al.excess_p = ex.hi[-1, j], ex.p[-1, j]
    return al.to_json()


def aligned_at(r: Any, student: Any, control: Any, vec: Any, layer: int) -> dict[str, Any]:
    """:func:`alignment_at` of ``student`` beside ``control`` at ``layer`` (one
    :func:`~steerlens.track.track_checkpoints` over the run's track cache and null sizes)."""
    tr = track_checkpoints(
        r.model,
        student,
        vec,
        r.trait,
        control=control,
        layers=[layer],
        cache_dir=r.out / "cache" / "track",
        n_null=r.cfg.n_null,
        n_boot=r.cfg.n_boot,
        seed=r.cfg.seed,
        progress=r.progress,
    )
    return alignment_at(tr, layer)


def _toward_teacher(tr: Transfer) -> bool:
    """Δ points the way the teacher differs from the base: F > 0 where the teacher's gap is
    defined (a student moving away from its teacher has inherited nothing); with no gap
    recorded (a caller's row without ``b_teacher``/``b_base``), Δ > 0."""
    if tr.b_teacher is not None and tr.b_base is not None:
        f = tr.fraction
        return f is not None and math.isfinite(f) and f > 0
    return bool(tr.delta > 0)


def _inherited(row: SvdRow, alpha: float) -> bool:
    """Significant Δ toward the teacher (:func:`_toward_teacher`, sign-flip p ≤ α) and
    significant positive alignment (excess over the base control, else EAS vs the null)."""
    tr, al = row.transfer, row.alignment or SvdAlignment()
    sig_beh = _toward_teacher(tr) and tr.delta_p <= alpha
    p_al = al.eas_p_adj if al.excess_p is None else al.excess_p
    est = al.eas if al.excess is None else al.excess
    return bool(sig_beh and est > 0 and p_al <= alpha)


def svd_verdict(rows: Mapping[str, SvdRow], alpha: float = 0.05) -> SvdVerdict:
    """Headline and lines for one loss: whether the steered teacher's student inherited the
    trait (the positive control: significant Δ vs the base control toward the teacher, F > 0,
    and significant alignment at the steered layer), and F(steered), F(ablated) against
    F(prompted) (sufficiency and necessity for transfer, Blank et al.)."""
    lines = []
    inherited = {name: _inherited(r, alpha) for name, r in rows.items() if name != "base"}
    for name, ok in inherited.items():
        tr, al = rows[name].transfer, rows[name].alignment or SvdAlignment()
        f = tr.fraction
        fs = "n/a" if f is None else f"{f:.3g} [{tr.fraction_lo:.3g}, {tr.fraction_hi:.3g}]"
        lines.append(
            f"{name}: Δ vs base control {tr.delta:+.3g} [{tr.delta_lo:+.3g}, "
            f"{tr.delta_hi:+.3g}] (p={tr.delta_p:.3g}), F={fs}, excess EAS "
            f"{_fmt(al.excess)} (p={_fmt(al.excess_p)}); "
            f"{'inherited' if ok else 'not detected'}"
        )
    pos = inherited.get("steered", False)
    head = (
        "positive control passed: the steered teacher's student inherited the trait"
        if pos
        else "positive control NOT passed: the steered teacher's student was not detected as "
        "inheriting the trait at this size"
    )
    return SvdVerdict(head, lines, "strong" if pos else "none", pos, inherited)


def transfer_verdict(rows: Mapping[str, Mapping[str, Any]], alpha: float = 0.05) -> dict[str, Any]:
    """:func:`svd_verdict` of rows given as JSON, as JSON."""
    return svd_verdict({n: SvdRow.from_json(r) for n, r in rows.items()}, alpha).to_json()


def _fmt(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3g}"
