"""Sufficiency of the vector (DESIGN.md "Is the behavior carried by the vector?").

S(ℓ, α) = (B(base + α·v at ℓ) − B_base) / (B_teacher − B_base) over a grid of layers × α, read
per layer as a dose-response curve over α. **α unit**: multiples of the vector as given (the hook
adds α·vˡ, norm α‖vˡ‖; α = 1 adds the vector as extracted). The null: the same grid with random
directions scaled to ‖vˡ‖; each draw gets its own clean and raw peak over the grid.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from steerlens.carry.measure import Measure, offtarget_shift
from steerlens.carry.nulls import NullBand, band
from steerlens.carry.peak import CleanPeak, Peak, clean_peak_of, with_null
from steerlens.core.vectors import zero_layers
from steerlens.loading.models import LoadedModel
from steerlens.runtime.intervene import steer_model

ALPHA_UNIT = "vector"
ALPHA_UNIT_DOC = "the hook adds α·v_ℓ (norm α‖v_ℓ‖); random directions scaled to ‖v_ℓ‖"

__all__ = ["ALPHA_UNIT", "ALPHA_UNIT_DOC", "SufficiencyGrid", "run_sufficiency"]


@dataclass
class SufficiencyGrid:
    """Per grid layer and α: raw B, S, off-target KL (empty without off-target prompts), and
    per random draw r the null S and KL (``null_s[ℓ][r][j]``), with their bands."""

    behavior: dict[int, list[float]] = field(default_factory=dict)
    sufficiency: dict[int, list[float]] = field(default_factory=dict)
    offtarget_kl: dict[int, list[float]] = field(default_factory=dict)
    null_s: dict[int, list[list[float]]] = field(default_factory=dict)
    null_kl: dict[int, list[list[float]]] = field(default_factory=dict)
    null_sufficiency: dict[int, list[NullBand]] = field(default_factory=dict)
    null_offtarget_kl: dict[int, list[NullBand]] = field(default_factory=dict)

    def peaks(
        self, alphas: Sequence[float], tol: float | None, n_random: int, has_kl: bool
    ) -> tuple[CleanPeak, Peak]:
        """(clean peak within ``tol``, raw peak), each against its draws' peaks when
        ``n_random``."""
        kl_grid = self.offtarget_kl if has_kl else None
        clean = clean_peak_of(self.sufficiency, kl_grid, alphas, tol)
        raw = clean_peak_of(self.sufficiency, None, alphas, None)
        if n_random:
            layers = list(self.sufficiency)
            null_clean = [
                clean_peak_of(
                    {la: self.null_s[la][r] for la in layers},
                    {la: self.null_kl[la][r] for la in layers} if kl_grid else None,
                    alphas,
                    tol,
                ).sufficiency
                for r in range(n_random)
            ]
            null_raw = [
                clean_peak_of(
                    {la: self.null_s[la][r] for la in layers}, None, alphas, None
                ).sufficiency
                for r in range(n_random)
            ]
            clean, raw = with_null(clean, null_clean), with_null(raw, null_raw)
        return CleanPeak.of(clean, tol), raw


def run_sufficiency(
    lm: LoadedModel,
    dirs: Mapping[int, torch.Tensor],
    grid_layers: Sequence[int],
    alphas: Sequence[float],
    rand: Mapping[int, torch.Tensor],
    measure: Measure,
    frac: Callable[[float], float],
    ref_off: torch.Tensor | None,
    bar: Any,
) -> SufficiencyGrid:
    """The grid S(ℓ, α) = (B(base + α·vˡ at ℓ) − B_base) / (B_teacher − B_base) (``frac`` maps
    B to S) and its random-direction null (``rand``: per layer, unit rows scaled to ‖vˡ‖), with
    each condition's off-target KL(P_base ‖ P_condition) against ``ref_off``."""
    n_random = next(iter(rand.values())).shape[0] if rand else 0
    g = SufficiencyGrid()
    for layer in grid_layers:
        v = dirs[layer].float()
        g.behavior[layer], g.sufficiency[layer], g.offtarget_kl[layer] = [], [], []
        g.null_s[layer] = [[0.0] * len(alphas) for _ in range(n_random)]
        g.null_kl[layer] = [[0.0] * len(alphas) for _ in range(n_random)]
        for j, (main, nulls) in enumerate(_layer_conditions(lm, measure, layer, v, rand, alphas)):
            b, off = main
            g.behavior[layer].append(b)
            g.sufficiency[layer].append(frac(b))
            k = offtarget_shift(ref_off, off)
            if k is not None:
                g.offtarget_kl[layer].append(k)
            for r, (b_r, off_r) in enumerate(nulls):
                g.null_s[layer][r][j] = frac(b_r)
                g.null_kl[layer][r][j] = offtarget_shift(ref_off, off_r) or 0.0
            bar.update(1 + len(nulls))
        if n_random:
            g.null_sufficiency[layer] = _bands(g.null_s[layer], len(alphas))
            if ref_off is not None:
                g.null_offtarget_kl[layer] = _bands(g.null_kl[layer], len(alphas))
    if ref_off is None:
        g.offtarget_kl = {}
    return g


Outcome = tuple[float, torch.Tensor | None]


def _layer_conditions(
    lm: LoadedModel,
    measure: Measure,
    layer: int,
    v: torch.Tensor,
    rand: Mapping[int, torch.Tensor],
    alphas: Sequence[float],
) -> list[tuple[Outcome, list[Outcome]]]:
    """Per α_j: ((B, off-target rows) of the base steered by α_j·v at ``layer``, the same for
    α_j·‖v‖·r̂ of each random draw r̂). Every condition of the layer in one batched pass (blocks
    0..ℓ run once) where :meth:`~steerlens.carry.measure.Measure.many` applies, else one
    ``steer`` block each."""
    draws = rand.get(layer)
    k = 0 if draws is None else int(draws.shape[0])
    vn = float(v.norm())
    if zero_layers({layer: v}):  # the vector is zero here: no edit to make, every cell is the base
        base = measure(lm)
        return [(base, [base] * k) for _ in alphas]
    if vn > 0:
        rows = [a * v for a in alphas] + [
            a * vn * r for a in alphas for r in (draws if draws is not None else [])
        ]
        fast = measure.many(lm, layer, "add", torch.stack(rows), 1.0)
        if fast is not None:
            n = len(alphas)
            return [(fast[j], fast[n + j * k : n + (j + 1) * k]) for j in range(n)]
    out: list[tuple[Outcome, list[Outcome]]] = []
    for a in alphas:
        with steer_model(lm, {layer: v}, a):
            main = measure(lm)
        nulls = []
        for r in range(k):
            with steer_model(lm, {layer: rand[layer][r] * vn}, a):
                nulls.append(measure(lm))
        out.append((main, nulls))
    return out


def _bands(draws: Sequence[Sequence[float]], n_alpha: int) -> list[NullBand]:
    """Per α, the band over the random draws ``draws[r][j]``."""
    return [band([row[j] for row in draws]) for j in range(n_alpha)]
