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
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from steerlens.stats import bootstrap
from steerlens.track import track_checkpoints

__all__ = ["Transfer", "aligned_at", "alignment_at", "sign_flip_p", "transfer", "transfer_verdict"]


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
class Transfer:
    """Behavior transfer of one teacher's student (metric units; F unitless)."""

    b_student: float
    b_control: float
    b_teacher: float
    b_base: float
    delta: float
    delta_lo: float
    delta_hi: float
    delta_p: float
    fraction: float | None
    fraction_lo: float | None
    fraction_hi: float | None
    n_prompts: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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
    ci = bootstrap(lambda i: float(d[i].mean()), len(d), n_boot=n_boot, seed=seed)
    gap = float((t - b).mean())
    f = f_lo = f_hi = None
    if abs(gap) >= min_gap:
        g = t - b

        def frac(i: np.ndarray) -> float:
            den = float(g[i].mean())
            return float(d[i].mean()) / den if abs(den) > 1e-12 else math.nan

        fci = bootstrap(frac, len(d), n_boot=n_boot, seed=seed)
        f, f_lo, f_hi = float(d.mean()) / gap, fci["lo"], fci["hi"]
    return Transfer(
        b_student=float(s.mean()),
        b_control=float(c.mean()),
        b_teacher=float(t.mean()),
        b_base=float(b.mean()),
        delta=float(d.mean()),
        delta_lo=ci["lo"],
        delta_hi=ci["hi"],
        delta_p=sign_flip_p(d, seed=seed),
        fraction=f,
        fraction_lo=f_lo,
        fraction_hi=f_hi,
        n_prompts=len(d),
    )


def alignment_at(track: Mapping[str, Any], layer: int) -> dict[str, Any]:
    """The last checkpoint's EAS at ``layer`` with its corrected null p, and the excess over
    the control with its CI and p, from an ``AlignmentTrack.to_json()``."""
    layers = list(track["layers"])
    j = layers.index(layer)
    main = track["series"]["main"]
    out: dict[str, Any] = {
        "layer": layer,
        "step": main["steps"][-1],
        "eas": main["eas"][-1][j],
        "eas_p_adj": main["p_adj"][-1][j],
    }
    ex = track.get("excess")
    if ex:
        out.update(
            excess=ex["estimate"][-1][j],
            excess_lo=ex["lo"][-1][j],
            excess_hi=ex["hi"][-1][j],
            excess_p=ex["p"][-1][j],
        )
    return out


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
    return alignment_at(tr.to_json(), layer)


def _toward_teacher(tr: Mapping[str, Any]) -> bool:
    """Δ points the way the teacher differs from the base: F > 0 where the teacher's gap is
    defined (a student moving away from its teacher has inherited nothing); with no gap
    recorded (a caller's row without ``b_teacher``/``b_base``), Δ > 0."""
    if tr.get("b_teacher") is not None and tr.get("b_base") is not None:
        f = tr.get("fraction")
        return f is not None and math.isfinite(f) and f > 0
    return bool(tr["delta"] > 0)


def _inherited(row: Mapping[str, Any], alpha: float) -> bool:
    """Significant Δ toward the teacher (:func:`_toward_teacher`, sign-flip p ≤ α) and
    significant positive alignment (excess over the base control, else EAS vs the null)."""
    tr, al = row["transfer"], row.get("alignment") or {}
    sig_beh = _toward_teacher(tr) and tr["delta_p"] <= alpha
    p_al = al.get("excess_p", al.get("eas_p_adj"))
    est = al.get("excess", al.get("eas"))
    sig_al = p_al is not None and est is not None and est > 0 and p_al <= alpha
    return bool(sig_beh and sig_al)


def transfer_verdict(rows: Mapping[str, Mapping[str, Any]], alpha: float = 0.05) -> dict[str, Any]:
    """Headline and lines for one loss: whether the steered teacher's student inherited the
    trait (the positive control: significant Δ vs the base control toward the teacher, F > 0,
    and significant alignment at the steered layer), and F(steered), F(ablated) against F(prompted) (sufficiency and
    necessity for transfer, Blank et al.)."""
    lines = []
    inherited = {name: _inherited(r, alpha) for name, r in rows.items() if name != "base"}
    for name, r in rows.items():
        if name == "base":
            continue
        tr, al = r["transfer"], r.get("alignment") or {}
        f = tr["fraction"]
        fs = "n/a" if f is None else f"{f:.3g} [{tr['fraction_lo']:.3g}, {tr['fraction_hi']:.3g}]"
        lines.append(
            f"{name}: Δ vs base control {tr['delta']:+.3g} [{tr['delta_lo']:+.3g}, "
            f"{tr['delta_hi']:+.3g}] (p={tr['delta_p']:.3g}), F={fs}, excess EAS "
            f"{_fmt(al.get('excess'))} (p={_fmt(al.get('excess_p'))}); "
            f"{'inherited' if inherited[name] else 'not detected'}"
        )
    pos = inherited.get("steered", False)
    head = (
        "positive control passed: the steered teacher's student inherited the trait"
        if pos
        else "positive control NOT passed: the steered teacher's student was not detected as "
        "inheriting the trait at this size"
    )
    return {
        "headline": head,
        "lines": lines,
        "strength": "strong" if pos else "none",
        "positive_control": pos,
        "inherited": inherited,
    }


def _fmt(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3g}"
