"""Necessity of the vector (DESIGN.md "Is the behavior carried by the vector?").

N = (B_teacher − B(teacher with v̂ projected out)) / (B_teacher − B_base), per grid layer and with
all grid layers at once ("joint"); projecting out is h ← h − (h·v̂)v̂ at every position. For a
student's own vector (``mode="replace"``) the student's component along v̂ is *replaced* by the
base's, h ← h − (h·v̂)v̂ + (h_base·v̂)v̂. The null: the same with random unit directions; the best
N (over layers and joint) is compared with each draw's own best N.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from steerlens.carry.measure import Measure
from steerlens.carry.nulls import NullBand, NullComparison, band, compare_to_null
from steerlens.core.results import OMIT, Record
from steerlens.loading.models import LoadedModel
from steerlens.runtime.intervene import steer_model

ZERO_VECTOR = "zero vector at this layer"

__all__ = [
    "Necessity",
    "NecessityAt",
    "NecessityBest",
    "run_necessity",
]


@dataclass(frozen=True)
class NecessityAt(Record):
    """Necessity at one layer (or jointly over ``layers``): ``value`` = N (JSON ``"N"``),
    ``behavior`` = B under the ablation (``"B"``), ``null`` the random-direction band of N;
    ``value`` None with the ``reason`` when it is undefined."""

    value: float | None
    behavior: float | None = None
    null: NullBand = field(default_factory=lambda: NullBand(n=0))
    layers: list[int] | None = None
    reason: str | None = None

    json_keys: ClassVar[dict[str, str]] = {"value": "N", "behavior": "B"}
    json_none: ClassVar[dict[str, Any]] = {"layers": OMIT, "reason": OMIT}

    def summary(self) -> str:
        if self.value is None:
            return f"necessity undefined: {self.reason}"
        return f"necessity N {self.value:+.3f} (B under the ablation {self.behavior})"


@dataclass(frozen=True)
class NecessityBest(Record):
    """The largest N (``value``, JSON ``"N"``), ``where`` it is (a layer as a string, or
    ``"joint"``), and its comparison with each random draw's best N (None: no null; its keys
    sit in this JSON)."""

    value: float
    where: str
    vs_null: NullComparison | None = None

    json_keys: ClassVar[dict[str, str]] = {"value": "N"}
    json_inline = ("vs_null",)

    @property
    def beats_null(self) -> bool | None:
        return None if self.vs_null is None else self.vs_null.beats_null

    def summary(self) -> str:
        return f"best necessity N {self.value:+.3f} at {self.where}; beats the null: " + str(
            self.beats_null
        )


@dataclass(frozen=True)
class Necessity(Record):
    """Necessity per grid layer, jointly over the usable grid layers (None with fewer than
    two; JSON ``{}``), and the best of them (None when N is undefined everywhere)."""

    mode: str
    per_layer: dict[int, NecessityAt]
    joint: NecessityAt | None = None
    best: NecessityBest | None = None

    json_none: ClassVar[dict[str, Any]] = {"joint": {}, "best": OMIT}

    def summary(self) -> str:
        best = "undefined" if self.best is None else self.best.summary()
        return f"necessity ({self.mode}) at layers {list(self.per_layer)}: {best}"


def run_necessity(
    t_model: LoadedModel,
    dirs: Mapping[int, torch.Tensor],
    grid_layers: Sequence[int],
    rand: Mapping[int, torch.Tensor],
    measure_t: Measure,
    frac_nec: Callable[[float], float],
    *,
    mode: str,
    base_lm: LoadedModel | None,
    bar: Any,
) -> Necessity:
    """N = (B_teacher − B(teacher with v̂ projected out)) / (B_teacher − B_base) per grid layer,
    jointly and the best, each against its random-direction null from ``rand`` (per layer,
    unit rows). ``frac_nec(b)`` maps a behavior to N; ``mode="replace"`` swaps the component
    for ``base_lm``'s instead of removing it."""
    n_random = next(iter(rand.values())).shape[0] if rand else 0
    usable = [layer for layer in grid_layers if float(dirs[layer].norm()) > 0]

    def run(vecs: Mapping[int, torch.Tensor]) -> float:
        with steer_model(
            t_model,
            dict(vecs),
            1.0,
            mode=mode,  # type: ignore[arg-type]
            base=base_lm if mode == "replace" else None,
        ):
            b, _ = measure_t(t_model, with_offtarget=False)
        bar.update()
        return b

    def conditions(layers: Sequence[int]) -> tuple[float, list[float]]:
        """B with v̂ ablated at ``layers``, and with each draw's r̂ ablated there: batched
        (blocks below the lowest layer once) where it applies, else one ``steer`` each."""
        first, *rest = sorted(set(layers))
        if mode == "project_out":

            def rows(la: int) -> torch.Tensor:
                v = dirs[la].float()[None]
                return torch.cat([v, rand[la].float()]) if n_random else v

            up = {la: rows(la) for la in rest} or None
            fast = measure_t.many(t_model, first, "project_out", rows(first), 1.0, False, above=up)
            if fast is not None:
                bar.update(1 + n_random)
                return fast[0][0], [b_r for b_r, _ in fast[1:]]
        b = run({la: dirs[la] for la in layers})
        return b, [run({la: rand[la][r] for la in layers}) for r in range(n_random)]

    per_layer: dict[int, NecessityAt] = {}
    null_by_draw: list[list[float]] = [[] for _ in range(n_random)]
    configs: list[tuple[str, float]] = []
    for layer in grid_layers:
        if layer not in usable:
            per_layer[layer] = NecessityAt(None, reason=ZERO_VECTOR)
            bar.update(1 + n_random)
            continue
        b, null_b = conditions([layer])
        nulls = [frac_nec(b_r) for b_r in null_b]
        for r, val in enumerate(nulls):
            null_by_draw[r].append(val)
        per_layer[layer] = NecessityAt(frac_nec(b), b, band(nulls))
        configs.append((str(layer), frac_nec(b)))
    joint = None
    if len(usable) > 1:
        b, null_b = conditions(usable)
        nulls = [frac_nec(b_r) for b_r in null_b]
        for r, val in enumerate(nulls):
            null_by_draw[r].append(val)
        joint = NecessityAt(frac_nec(b), b, band(nulls), layers=list(usable))
        configs.append(("joint", frac_nec(b)))
    else:
        bar.update(1 + n_random)
    best = None
    if configs:
        where, n_best = max(configs, key=lambda c: c[1])
        vs = compare_to_null(n_best, [max(d) for d in null_by_draw]) if n_random else None
        best = NecessityBest(n_best, where, vs)
    return Necessity(mode, per_layer, joint, best)
