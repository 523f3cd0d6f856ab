"""Clean peak of the sufficiency grid (DESIGN.md "Is the behavior carried by the vector?").

Clean peak S* = max S(ℓ, α) over the grid cells whose off-target shift is at most the tolerance
τ, where α = 0 (S = 0, no shift) always counts as a cell, so S* ≥ 0. Default
τ = max(:data:`TOL_FLOOR`, :data:`TOL_FACTOR`·KL_teacher) nats. Without off-target prompts the
clean peak is the raw peak (the best S over every cell).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from steerlens.carry.nulls import NullComparison, compare_to_null
from steerlens.core.results import OMIT, Record

TOL_FLOOR = 0.1
TOL_FACTOR = 1.25
NO_OFFTARGET_NOTE = "no off-target prompts: the clean peak is the raw peak"

__all__ = [
    "NO_OFFTARGET_NOTE",
    "TOL_FACTOR",
    "TOL_FLOOR",
    "CleanPeak",
    "Peak",
    "clean_peak_of",
    "default_tolerance",
    "with_null",
]


@dataclass(frozen=True)
class Peak(Record):
    """The best sufficiency S (JSON ``"S"``) of a grid, where it is (``layer`` and ``alpha``
    None: α = 0 won), its off-target KL, and its comparison with the null (None: no null;
    its keys sit in the peak's own JSON)."""

    sufficiency: float = 0.0
    layer: int | None = None
    alpha: float | None = None
    offtarget_kl: float | None = 0.0
    vs_null: NullComparison | None = None

    json_keys: ClassVar[dict[str, str]] = {"sufficiency": "S"}
    json_inline = ("vs_null",)

    @property
    def beats_null(self) -> bool | None:
        return None if self.vs_null is None else self.vs_null.beats_null

    def summary(self) -> str:
        where = "α = 0" if self.layer is None else f"layer {self.layer}, α {self.alpha}"
        return f"peak S {self.sufficiency:+.3f} at {where}; beats the null: {self.beats_null}"


@dataclass(frozen=True)
class CleanPeak(Peak):
    """A :class:`Peak` over the cells within the off-target ``tolerance`` τ (nats; None: no
    off-target prompts, then ``note`` says it is the raw peak)."""

    tolerance: float | None = None
    note: str | None = None

    json_none: ClassVar[dict[str, Any]] = {"note": OMIT}

    @classmethod
    def of(cls, peak: Peak, tolerance: float | None) -> CleanPeak:
        """``peak`` as the clean peak under ``tolerance`` (a note when there is none)."""
        note = NO_OFFTARGET_NOTE if tolerance is None else None
        return cls(**vars(peak), tolerance=tolerance, note=note)


def default_tolerance(kl_teacher: float | None) -> float:
    """τ = max(TOL_FLOOR, TOL_FACTOR·KL_teacher) nats: a vector may move unrelated answers about
    as much as the trait itself does, not more."""
    return max(TOL_FLOOR, TOL_FACTOR * (kl_teacher or 0.0))


def clean_peak_of(
    s_grid: Mapping[int, Sequence[float]],
    kl_grid: Mapping[int, Sequence[float]] | None,
    alphas: Sequence[float],
    tol: float | None,
) -> Peak:
    """S* = max S(ℓ, α) over cells with off-target KL ≤ tol, α = 0 (S = 0) included; without a
    KL grid (or tolerance) the raw peak, max S(ℓ, α) over every cell."""
    best = Peak()
    for layer, row in s_grid.items():
        for j, s in enumerate(row):
            kl = None if kl_grid is None else kl_grid[layer][j]
            if kl is not None and tol is not None and not kl <= tol:
                continue
            if s > best.sufficiency:
                best = Peak(float(s), int(layer), float(alphas[j]), kl)
    return best


def with_null(peak: Peak, null_peaks: Sequence[float]) -> Peak:
    """``peak`` compared with the same peak of each random draw."""
    return replace(peak, vs_null=compare_to_null(peak.sufficiency, null_peaks))
