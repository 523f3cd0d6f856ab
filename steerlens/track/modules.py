"""Tracking on a plain torch module (:func:`steerlens.wrap_module`): the statistics of
:mod:`steerlens.track` (DESIGN.md "Student shift", "Alignment", "Nulls", "Excess alignment")
with input tensors as the probe set and in-memory modules as the checkpoints.

For checkpoint θₙ and site ℓ: per-input shift rows dˡₓ(n) = hˡ(θₙ, x) − hˡ(θ₀, x); the
student shift vˢˡ(n) = mean_x dˡₓ(n); EAS, projection, norm and the isotropic and
covariance-matched nulls from :func:`steerlens.track.nulls.layer_stats` (the covariance null's
span: the base's centred rows hˡ(θ₀, x)), Holm/BH across sites per checkpoint; the excess of
one series over another from :func:`steerlens.track.nulls.excess_bootstrap` (inputs resampled
jointly). ``θ₀`` is each series' own base: a student from another initialisation is measured
against *its* initialisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from steerlens.core.results import Record
from steerlens.core.vectors import SteeringVector
from steerlens.directions.module_vectors import module_rows
from steerlens.loading.models import LoadedModel
from steerlens.loading.torch_module import wrap_module
from steerlens.measures.stats import correct, random_directions
from steerlens.track.nulls import NullConfig, excess_bootstrap, layer_stats
from steerlens.track.results import SERIES_ARRAYS, ExcessAlignment, SeriesTrack

__all__ = ["ModuleTrack", "excess_modules", "track_modules"]

Rows = dict[int, torch.Tensor]


@dataclass
class ModuleTrack(Record):
    """A :class:`~steerlens.track.results.SeriesTrack` of a torch-module series (its JSON is
    the series') and, in memory only, its per-step shift rows {step: {layer: (n, d)}} (for
    :func:`excess_modules`)."""

    series: SeriesTrack
    shifts: dict[int, Rows] = field(default_factory=dict, repr=False, metadata={"json": False})

    json_inline = ("series",)

    def summary(self) -> str:
        return self.series.summary()


def _wrap_like(m: nn.Module | LoadedModel, like: LoadedModel) -> LoadedModel:
    if isinstance(m, LoadedModel):
        return m
    assert like.site_paths is not None
    return wrap_module(m, like.site_paths, name=like.name, d=like.hidden_size)


def track_modules(
    base: LoadedModel,
    checkpoints: Sequence[tuple[int, nn.Module | LoadedModel]],
    vector: SteeringVector,
    inputs: torch.Tensor,
    *,
    name: str = "main",
    layers: Sequence[int] | None = None,
    cfg: NullConfig | None = None,
    correction: str = "holm",
    batch_size: int = 256,
) -> ModuleTrack:
    """Alignment of each checkpoint's shift (against ``base``) with ``vector`` at every site
    of ``vector`` (or ``layers``); row 0 of the arrays is the base itself (step 0)."""
    if base.site_paths is None:
        raise TypeError("track_modules needs a torch module from steerlens.wrap_module")
    cfg = cfg or NullConfig()
    lay = list(layers) if layers is not None else vector.layers
    missing = [k for k in lay if k not in vector]
    if missing:
        raise KeyError(f"the vector has no direction at layers {missing}; it has {vector.layers}")
    base_rows = module_rows(base, inputs, lay, batch_size=batch_size)
    base_means = {k: base_rows[k].double().mean(0) for k in lay}
    iso = random_directions(base.hidden_size, cfg.n_null, cfg.seed)
    steps = [0, *[int(s) for s, _ in checkpoints]]
    arr = {k: np.full((len(steps), len(lay)), np.nan) for k in SERIES_ARRAYS}
    shifts: dict[int, Rows] = {0: {k: torch.zeros_like(base_rows[k]) for k in lay}}
    models: list[LoadedModel | None] = [None, *[_wrap_like(m, base) for _, m in checkpoints]]
    for r, step in enumerate(steps):
        lm = models[r]
        rows = base_rows if lm is None else module_rows(lm, inputs, lay, batch_size=batch_size)
        shifts[step] = {k: rows[k] - base_rows[k] for k in lay}
        pvals = []
        for j, k in enumerate(lay):
            mean_shift = rows[k].double().mean(0) - base_means[k]
            st = layer_stats(mean_shift, vector[k], iso, base_rows[k], cfg)
            for key, v in st.items():
                arr[key][r, j] = v
            pvals.append(max(st["p_iso"], st["p_cov"]))
        arr["p_adj"][r] = correct(pvals, correction)
    paths = ["base", *[f"step-{s}" for s in steps[1:]]]
    return ModuleTrack(SeriesTrack(name, steps, paths, first_block=[0] * len(steps), **arr), shifts)


def excess_modules(
    main: ModuleTrack,
    control: ModuleTrack,
    vector: SteeringVector,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> ExcessAlignment:
    """EAS(main) − EAS(control) at the steps both have (not 0), per site, with the bootstrap
    over inputs of :func:`~steerlens.track.nulls.excess_bootstrap` (both series must have been
    tracked on the same inputs: their shift rows pair by input)."""
    common = [s for s in main.series.steps if s in control.series.steps and s != 0]
    if not common:
        raise ValueError(
            f"main steps {main.series.steps} and control steps {control.series.steps} share no "
            "step: track both series at the same steps"
        )
    lay = sorted(main.shifts[common[0]])
    ex = {k: np.full((len(common), len(lay)), np.nan) for k in ("estimate", "lo", "hi", "p")}
    for r, step in enumerate(common):
        for j, k in enumerate(lay):
            b = excess_bootstrap(
                main.shifts[step][k],
                control.shifts[step][k],
                vector[k],
                n_boot=n_boot,
                seed=seed + r,
                level=level,
            )
            for key, v in b.items():
                ex[key][r, j] = v
    return ExcessAlignment(common, ex["estimate"], ex["lo"], ex["hi"], ex["p"], level, n_boot)


def as_checkpoints(models: Mapping[int, nn.Module]) -> list[tuple[int, nn.Module]]:
    """``{step: module}`` as the sorted ``(step, module)`` list :func:`track_modules` takes."""
    return sorted(models.items())
