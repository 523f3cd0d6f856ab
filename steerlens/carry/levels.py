"""Verdict categories of a carry test and the thresholds behind them.

A statistic (the clean peak S* or the best necessity N) is **strong** when it is ≥ :data:`STRONG`
and beats the random-direction null (exceeds every draw, z ≥ :data:`Z_MIN` and empirical
p ≤ :data:`P_MAX`, which needs ≥ :data:`MIN_DRAWS` draws), **weak** when it is ≥ :data:`WEAK` and beats the null,
else **none** (without a null, ``n_random=0``, on the thresholds alone). The verdict
(:class:`CarryLevel`) combines the two levels (rules in :mod:`steerlens.carry`).
"""

from __future__ import annotations

from enum import Enum

STRONG = 0.5
WEAK = 0.1
Z_MIN = 2.0
P_MAX = 0.05
"""A statistic beats the null only with empirical p ≤ P_MAX: with p = (1 + #{null ≥ obs}) /
(1 + n) this needs n ≥ 19 random draws (DESIGN.md: nulls for "strong" or "beats the null")."""
MIN_DRAWS = 19

__all__ = [
    "MIN_DRAWS",
    "P_MAX",
    "STRONG",
    "WEAK",
    "Z_MIN",
    "CarryLevel",
    "EffectLevel",
    "carry_level",
    "effect_level",
]


class EffectLevel(str, Enum):
    """Level of one statistic (sufficiency or necessity): ``"strong"``, ``"weak"``, ``"none"``."""

    STRONG = "strong"
    WEAK = "weak"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


class CarryLevel(str, Enum):
    """The carry verdict; the JSON holds the string value (e.g. ``"weakly carried"``)."""

    STRONG = "strongly carried"
    WEAK = "weakly carried"
    NOT = "not carried"
    UNDEFINED = "undefined"

    def __str__(self) -> str:
        return self.value

    @property
    def is_strong(self) -> bool:
        return self is CarryLevel.STRONG

    @property
    def is_weak(self) -> bool:
        return self is CarryLevel.WEAK

    @property
    def is_carried(self) -> bool:
        """Strongly or weakly carried."""
        return self in (CarryLevel.STRONG, CarryLevel.WEAK)

    @property
    def is_defined(self) -> bool:
        return self is not CarryLevel.UNDEFINED

    @property
    def strength(self) -> EffectLevel:
        """``strong`` / ``weak`` / ``none`` (not carried or undefined), e.g. for a badge."""
        if self is CarryLevel.STRONG:
            return EffectLevel.STRONG
        if self is CarryLevel.WEAK:
            return EffectLevel.WEAK
        return EffectLevel.NONE


def effect_level(value: float | None, beats_null: bool | None) -> EffectLevel:
    """strong / weak / none of a statistic; ``beats_null=None`` (no null) uses the thresholds
    alone, ``False`` gives none."""
    if value is None or beats_null is False:
        return EffectLevel.NONE
    if value >= STRONG:
        return EffectLevel.STRONG
    if value >= WEAK:
        return EffectLevel.WEAK
    return EffectLevel.NONE


def carry_level(sufficiency: EffectLevel, necessity: EffectLevel | None) -> CarryLevel:
    """Strongly carried = strong sufficiency and strong (or untested) necessity; weakly carried
    = any other case with a weak-or-strong level; else not carried."""
    if sufficiency is EffectLevel.STRONG and necessity in (EffectLevel.STRONG, None):
        return CarryLevel.STRONG
    if sufficiency is not EffectLevel.NONE or necessity not in (None, EffectLevel.NONE):
        return CarryLevel.WEAK
    return CarryLevel.NOT
