"""Random-direction nulls of the carry test (DESIGN.md "Nulls").

Every test is repeated with ``n_random`` random unit directions
(:func:`steerlens.measures.stats.random_directions`, seeded per layer by :func:`layer_seed`); a null
sample is summarised by :func:`band` and an observed statistic is compared with it by
:func:`compare_to_null`: z = (obs − mean)/sd and the empirical
p = (1 + #{null ≥ obs})/(1 + n); it *beats the null* when it exceeds every draw, z ≥ Z_MIN
and p ≤ P_MAX (= 0.05, so at least 19 draws: with fewer the null cannot be beaten).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import torch

from steerlens.carry.levels import P_MAX, Z_MIN
from steerlens.core.results import Record
from steerlens.measures.stats import random_directions, z_and_p

__all__ = ["NullBand", "NullComparison", "band", "compare_to_null", "layer_seed", "null_draws"]


class NullBand(TypedDict, total=False):
    """Summary of a null sample (only ``n`` when it is empty)."""

    mean: float
    sd: float
    q05: float
    q50: float
    q95: float
    min: float
    max: float
    n: int


def band(values: Sequence[float]) -> NullBand:
    """Summary of a null sample: mean, sd, 5/50/95% quantiles, min, max, n."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {"n": 0}
    return {
        "mean": float(a.mean()),
        "sd": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "q05": float(np.quantile(a, 0.05)),
        "q50": float(np.quantile(a, 0.5)),
        "q95": float(np.quantile(a, 0.95)),
        "min": float(a.min()),
        "max": float(a.max()),
        "n": int(a.size),
    }


@dataclass(frozen=True)
class NullComparison(Record):
    """An observed statistic against its random-direction null: z = (obs − mean)/sd (None when
    the null has no spread), empirical p = (1 + #{null ≥ obs})/(1 + n), and whether it beats
    the null (None: no null)."""

    z: float | None
    p: float | None
    beats_null: bool | None
    null: NullBand

    def summary(self) -> str:
        z = "n/a" if self.z is None else f"{self.z:+.2f}"
        return f"z {z}, p {self.p}, beats the null: {self.beats_null}"

    @staticmethod
    def in_json(d: Mapping[str, Any]) -> bool:
        """Whether a peak's JSON holds a null comparison."""
        return "beats_null" in d


def compare_to_null(
    observed: float, null: Sequence[float], z_min: float = Z_MIN, p_max: float = P_MAX
) -> NullComparison:
    """z, empirical p = (1 + #{null ≥ obs})/(1 + n) (greater) and whether ``observed`` beats
    the null: exceeds every draw, z ≥ z_min (or the null has no spread) and p ≤ p_max."""
    arr = np.asarray(null, dtype=float)
    if arr.size == 0:
        return NullComparison(None, None, None, band([]))
    z, p = z_and_p(observed, arr, "greater")
    sd = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    above_all = bool(observed > float(arr.max()) + 1e-12)
    beats = above_all and (z >= z_min if sd > 0 else True) and float(p) <= p_max + 1e-12
    return NullComparison(
        z=None if math.isnan(z) else float(z),
        p=float(p),
        beats_null=beats,
        null=band(arr.tolist()),
    )


def layer_seed(seed: int, layer: int) -> int:
    """The seed of layer ``layer``'s random directions: one stream per (seed, layer)."""
    return int(np.random.SeedSequence([int(seed), int(layer)]).generate_state(1)[0])


def null_draws(d: int, n_random: int, layers: Sequence[int], seed: int) -> dict[int, torch.Tensor]:
    """Per layer, ``n_random`` (n_random, d) random unit directions (empty without a null)."""
    if not n_random:
        return {}
    return {layer: random_directions(d, n_random, layer_seed(seed, layer)) for layer in layers}
