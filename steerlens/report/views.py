"""What the report's sections share when they read a run's typed results
(:class:`~steerlens.experiments.owl_records.OwlResults`): the colour class of a carry level
and a lenient number."""

from __future__ import annotations

from typing import Any

__all__ = ["CARRY_LEVEL_CLASS", "carry_level_class", "num"]

#: verdict box colour class of every level :func:`steerlens.carry.carry_test` can give
CARRY_LEVEL_CLASS: dict[str, str] = {
    "strongly carried": "strong",
    "weakly carried": "weak",
    "not carried": "none",
    "undefined": "undefined",
    "": "none",
}


def carry_level_class(level: str) -> str:
    """The colour class of a carry level; "weakly_carried" reads as "weakly carried"."""
    return CARRY_LEVEL_CLASS.get(level.replace("_", " ").strip().lower(), "none")


def num(x: Any) -> float:
    """A float, NaN for anything that is not a finite-able number (None, str)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return float("nan")
    return float(x)
