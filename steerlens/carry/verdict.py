"""The carry verdict: levels of sufficiency and necessity, combined into a sentence with the
numbers it rests on (rules in :mod:`steerlens.carry` and :mod:`steerlens.carry.levels`)."""

from __future__ import annotations

from steerlens.carry.levels import MIN_DRAWS, P_MAX, CarryLevel, EffectLevel, carry_level
from steerlens.carry.nulls import NullComparison
from steerlens.carry.result import CarryResult

__all__ = ["describe_null", "verdict_of"]


def describe_null(vs: NullComparison | None) -> str:
    """ "random directions: mean, max, z, p, n" of a comparison, or that there is no null."""
    nb = vs.null if vs is not None else {}
    if vs is None or not nb.get("n"):
        return "no random-direction null"
    zs = "n/a" if vs.z is None else f"{vs.z:.1f}"
    weak = (
        f" — too few draws to reach p ≤ {P_MAX:g} (needs ≥ {MIN_DRAWS})"
        if nb["n"] < MIN_DRAWS
        else ""
    )
    return (
        f"random directions: mean {nb['mean']:+.2f}, max {nb['max']:+.2f}, z={zs}, "
        f"p={vs.p:.2g}, n={nb['n']}{weak}"
    )


def verdict_of(r: CarryResult) -> tuple[CarryLevel, str]:
    """(level, sentence) of a defined result whose peaks and necessity are filled in."""
    cp, raw = r.clean_peak, r.raw_peak
    assert cp is not None and raw is not None
    s_lvl, n_lvl = r.sufficiency_level, r.necessity_level
    level = carry_level(s_lvl, n_lvl)
    where = (
        f"at layer {cp.layer}, α={cp.alpha:g}"
        if cp.layer is not None
        else "at α=0 (no grid point beat not steering)"
    )
    tol = (
        f", off-target KL ≤ {r.offtarget_tol:.3f} nats"
        if r.offtarget_tol is not None
        else ", no off-target check"
    )
    parts = [
        f"{level.value}: B_base={r.b_base:.3f}, B_teacher={r.b_teacher:.3f}",
        f"clean peak sufficiency S={cp.sufficiency:.2f} {where}{tol} "
        f"({describe_null(cp.vs_null)}; {s_lvl.value})",
        f"raw peak S={raw.sufficiency:.2f}",
    ]
    if n_lvl is None:
        parts.append("necessity not tested")
    else:
        best = r.necessity.best if r.necessity is not None else None
        if best is not None:
            parts.append(
                f"necessity N={best.value:.2f} ({best.where}; {describe_null(best.vs_null)}; "
                f"{n_lvl.value})"
            )
        else:
            parts.append("necessity undefined (zero vector at every grid layer)")
    if level is CarryLevel.WEAK and s_lvl is EffectLevel.STRONG:
        parts.append("sufficient but not necessary")
    return level, "; ".join(parts)
